//! tessera-vmm's sandbox: a seccomp filter per kind of thread (the seccompiler crate, as
//! Firecracker does), on unless the configuration says `seccomp = false`.
//!
//! Every thread is started through [`Sandbox::spawn`], which installs its kind's filter as the
//! thread's first act and only then returns its handle (so a filter the kernel refuses fails
//! the VM's start instead of leaving a thread unguarded); the main thread enters its own once
//! the VM is built ([`Sandbox::enter`]). A filter holds for the threads and processes a
//! thread starts later, and a thread's calls must pass every filter it holds, so each
//! thread is created by one with a wider filter or none: device I/O threads are started with
//! the VM and handed work when the guest activates the device (vCPUs never create threads),
//! the API's blocking threads are of its own kind, and the display processes that the
//! display thread starts inherit its filter before they narrow themselves with their own.
//!
//! A call outside a filter ends the process with SIGSYS after naming the call and the kind of
//! thread on stderr (tessera-seccomp's handler).

pub mod filters;

use std::sync::mpsc::sync_channel;
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;

use tessera_seccomp::{BpfProgram, SeccompError};

/// The kinds of threads in tessera-vmm, each with its own filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ThreadKind {
    /// The main thread once the VM is built: waits for the end, stops the vCPUs, flushes the
    /// disks and the console.
    Main,
    /// A vCPU: KVM_RUN and the device emulation its exits reach (the console file included).
    Vcpu,
    /// The control API: its socket, and what its requests reach (pause, display commands).
    Api,
    /// A virtio-blk queue: requests against the disk image's files.
    BlockQueue,
    /// The virtio-tablet's queues.
    Tablet,
    /// A virtio-net queue pair: frames between its tap queue and the guest's rings.
    NetQueue,
    /// Standard input to the serial port.
    ConsoleIn,
    /// The display supervisor: serves the display process's messages and starts it again
    /// when it dies (its filter holds the display process's start-up too).
    Display,
    /// The TPM's: carries commands to swtpm and responses back, and closes it at the end.
    Tpm,
}

impl ThreadKind {
    /// Every kind.
    pub const ALL: [ThreadKind; 9] = [
        Self::Main,
        Self::Vcpu,
        Self::Api,
        Self::BlockQueue,
        Self::Tablet,
        Self::NetQueue,
        Self::ConsoleIn,
        Self::Display,
        Self::Tpm,
    ];

    /// Its place in [`ThreadKind::ALL`] (declared in that order).
    fn index(self) -> usize {
        self as usize
    }

    /// The name reports use.
    pub fn label(self) -> &'static str {
        match self {
            Self::Main => "main",
            Self::Vcpu => "vcpu",
            Self::Api => "api",
            Self::BlockQueue => "virtio-blk queue",
            Self::Tablet => "virtio-tablet",
            Self::NetQueue => "virtio-net queue",
            Self::ConsoleIn => "console input",
            Self::Display => "display",
            Self::Tpm => "tpm",
        }
    }
}

/// Why a thread could not be started in its sandbox.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A filter did not compile (a bug of the VMM's).
    #[error("the {0} thread's {1}")]
    Compile(&'static str, Arc<SeccompError>),
    /// The kernel refused a filter.
    #[error("the {0} thread's {1}")]
    Apply(&'static str, SeccompError),
    /// The thread could not be created.
    #[error("cannot start the {0} thread: {1}")]
    Thread(String, std::io::Error),
}

/// The filters, each compiled once: by a thread started with the sandbox, in the order the
/// VM needs them, while the main thread sets up KVM (compiling is the costliest part of a
/// filter; on the start's critical path it would delay the guest's first instruction), or by
/// the first thread of its kind to need it first.
#[derive(Default)]
struct Filters {
    compiled: [OnceLock<Result<BpfProgram, Arc<SeccompError>>>; ThreadKind::ALL.len()],
    /// The VM resets in place at a guest's reboot (the filters then let the main thread and
    /// the vCPUs put the machine back as built).
    reboots: bool,
}

/// The order the compiling thread takes the kinds a VM runs: the vCPU's (on the way to the
/// first instruction) first.
const COMPILE_ORDER: [ThreadKind; ThreadKind::ALL.len()] = [
    ThreadKind::Vcpu,
    ThreadKind::Main,
    ThreadKind::ConsoleIn,
    ThreadKind::Api,
    ThreadKind::Display,
    ThreadKind::Tablet,
    ThreadKind::BlockQueue,
    ThreadKind::NetQueue,
    ThreadKind::Tpm,
];

impl Filters {
    fn of(&self, kind: ThreadKind) -> Result<&BpfProgram, SandboxError> {
        self.compiled[kind.index()]
            .get_or_init(|| filters::program(kind, self.reboots).map_err(Arc::new))
            .as_ref()
            .map_err(|e| SandboxError::Compile(kind.label(), e.clone()))
    }
}

/// Whether threads get filters, and the filters they get. Cheap to clone.
#[derive(Clone)]
pub struct Sandbox {
    filters: Option<Arc<Filters>>,
}

impl Sandbox {
    /// Filters on every thread; compiling those of `kinds` (the threads this VM will run)
    /// starts now, on a thread of its own that ends when they are done (it holds no filter,
    /// and serves no input: nothing reaches it). Any other kind's is compiled when needed.
    pub fn on(kinds: &[ThreadKind]) -> Self {
        Self::with_reboots(kinds, false)
    }

    /// [`Sandbox::on`] for a VM that restarts in place at a guest's reboot (`reboots`).
    pub fn with_reboots(kinds: &[ThreadKind], reboots: bool) -> Self {
        tessera_seccomp::report_violations("tessera-vmm");
        tessera_seccomp::keep_malloc_off_files();
        let filters = Arc::new(Filters {
            reboots,
            ..Filters::default()
        });
        let compiling = filters.clone();
        let order: Vec<ThreadKind> = COMPILE_ORDER
            .into_iter()
            .filter(|k| kinds.contains(k))
            .collect();
        let started = std::thread::Builder::new()
            .name("seccomp-compile".into())
            .spawn(move || {
                for kind in order {
                    // An error stays in its slot for the thread that needs the filter.
                    let _ = compiling.of(kind);
                }
            });
        if let Err(e) = started {
            // Each thread then compiles its own kind's filter when it needs it.
            tracing::debug!(error = %e, "seccomp: no compiling thread");
        }
        Self {
            filters: Some(filters),
        }
    }

    /// No filters (`seccomp = false`: debugging, or a kernel without seccomp).
    pub fn off() -> Self {
        Self { filters: None }
    }

    /// Whether threads get filters.
    pub fn is_on(&self) -> bool {
        self.filters.is_some()
    }

    /// Installs `kind`'s filter on the calling thread.
    pub fn enter(&self, kind: ThreadKind) -> Result<(), SandboxError> {
        let Some(filters) = &self.filters else {
            return Ok(());
        };
        tessera_seccomp::apply_to_this_thread(kind.label(), filters.of(kind)?)
            .map_err(|e| SandboxError::Apply(kind.label(), e))
    }

    /// Starts thread `name` of `kind` running `f` under its filter; returns once the filter
    /// is on (or with the reason it is not, the thread then having ended without running `f`).
    pub fn spawn<T: Send + 'static>(
        &self,
        kind: ThreadKind,
        name: String,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<JoinHandle<Option<T>>, SandboxError> {
        let (ready_tx, ready_rx) = sync_channel(1);
        let sandbox = self.clone();
        let thread = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                let entered = sandbox.enter(kind);
                let ok = entered.is_ok();
                let _ = ready_tx.send(entered);
                ok.then(f)
            })
            .map_err(|e| SandboxError::Thread(name.clone(), e))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(thread),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => Err(SandboxError::Thread(
                name,
                std::io::Error::other("the thread ended before its filter was installed"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_compiling_thread_compiles_every_kind_once() {
        for kind in ThreadKind::ALL {
            let n = COMPILE_ORDER.iter().filter(|k| **k == kind).count();
            assert_eq!(n, 1, "{kind:?}");
            assert_eq!(ThreadKind::ALL[kind.index()], kind);
        }
    }
}
