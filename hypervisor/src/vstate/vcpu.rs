//! A vCPU and its thread: KVM_RUN in a loop, port and MMIO exits dispatched synchronously to
//! the buses, pause, stop and reset through [`RunControl`], and a signal to kick it out of
//! KVM_RUN.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvm_bindings::{
    CpuId, KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN,
};
use kvm_ioctls::{VcpuExit, VcpuFd};
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

use super::vcpu_reset::ResetState;
use crate::arch::x86_64::{msr, regs};
use crate::devices::bus::{lock, Bus};
use crate::exit::{ExitReason, ExitSender};
use crate::sandbox::{Sandbox, ThreadKind};

/// Errors configuring a vCPU.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    /// A KVM vCPU ioctl failed.
    #[error("vCPU {0}: KVM {1} failed: {2}")]
    Ioctl(u8, &'static str, kvm_ioctls::Error),
    /// Register setup failed.
    #[error("vCPU {0}: {1}")]
    Regs(u8, regs::RegsError),
    /// The kick signal handler could not be installed.
    #[error("cannot install the vCPU kick signal handler: {0}")]
    Signal(vmm_sys_util::errno::Error),
    /// The thread could not be started in its sandbox.
    #[error("vCPU {0}: {1}")]
    Spawn(u8, crate::sandbox::SandboxError),
    /// An MSR list could not be built (a VMM bug).
    #[error("vCPU {0}: cannot build the MSR list for {1:#x}")]
    Msr(u8, u32),
    /// A reset reached a vCPU that kept no state to restore (a VMM bug).
    #[error("vCPU {0}: reset without a saved reset state")]
    NoResetState(u8),
}

/// The signal that kicks a vCPU thread out of KVM_RUN.
pub fn kick_signal() -> i32 {
    SIGRTMIN()
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // Nothing to do: delivery alone makes KVM_RUN return EINTR.
}

/// Installs the kick handler once per process.
pub fn install_kick_handler() -> Result<(), VcpuError> {
    register_signal_handler(kick_signal(), on_kick).map_err(VcpuError::Signal)
}

/// Where the boot vCPU starts.
#[derive(Debug, Clone, Copy)]
pub struct BootRegs {
    /// First instruction.
    pub entry: u64,
    /// Zero page, passed in RSI.
    pub boot_params: u64,
}

/// Enables Hyper-V's synthetic interrupt controller on vCPU `id` (before its CPUID offers
/// it).
pub fn enable_hyperv_synic(fd: &VcpuFd, id: u8) -> Result<(), VcpuError> {
    let cap = kvm_bindings::kvm_enable_cap {
        cap: kvm_bindings::KVM_CAP_HYPERV_SYNIC2,
        ..Default::default()
    };
    fd.enable_cap(&cap)
        .map_err(|e| VcpuError::Ioctl(id, "ENABLE_CAP(HYPERV_SYNIC2)", e))
}

/// Sets CPUID, MSRs, FPU and LAPIC for vCPU `id`, and the 64-bit boot registers on the BSP.
pub fn configure(
    fd: &VcpuFd,
    id: u8,
    cpuid: &CpuId,
    supported_msrs: &[u32],
    boot: Option<BootRegs>,
) -> Result<(), VcpuError> {
    fd.set_cpuid2(cpuid)
        .map_err(|e| VcpuError::Ioctl(id, "SET_CPUID2", e))?;
    let msrs = msr::boot_msrs(supported_msrs);
    fd.set_msrs(&msrs)
        .map_err(|e| VcpuError::Ioctl(id, "SET_MSRS", e))?;
    regs::setup_fpu(fd).map_err(|e| VcpuError::Regs(id, e))?;
    regs::setup_lint(fd).map_err(|e| VcpuError::Regs(id, e))?;
    if let Some(b) = boot {
        regs::setup_sregs(fd).map_err(|e| VcpuError::Regs(id, e))?;
        regs::setup_regs(fd, b.entry, b.boot_params).map_err(|e| VcpuError::Regs(id, e))?;
    }
    Ok(())
}

#[derive(Debug, Default)]
struct RunState {
    pause: bool,
    stop: bool,
    parked: usize,
    /// Bumped by each reset of the machine; a vCPU that sees it change restores its state.
    generation: u64,
    /// vCPUs that have not yet restored their state for the current generation.
    resetting: usize,
}

impl RunState {
    /// Whether the exit path must look at the state at all.
    fn attention(&self) -> bool {
        self.pause || self.stop || self.resetting > 0
    }
}

/// What a vCPU thread does at a checkpoint.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Run,
    Reset,
    Stop,
}

/// Shared pause/stop/reset state for all vCPU threads of a VM.
#[derive(Debug, Default)]
pub struct RunControl {
    /// Set while a pause or stop is pending, so the exit path checks one atomic instead of
    /// taking the lock on every exit.
    attention: AtomicBool,
    state: Mutex<RunState>,
    changed: Condvar,
}

/// A running vCPU thread.
pub struct VcpuHandle {
    thread: JoinHandle<Option<()>>,
}

impl VcpuHandle {
    fn kick(&self) {
        // The thread may have exited already; nothing to interrupt then.
        let _ = self.thread.kill(kick_signal());
    }
}

impl RunControl {
    /// Waits at a safe point while paused; says whether to run on, restore the reset state
    /// first (the machine was reset since `seen`), or end.
    fn checkpoint(&self, seen: &mut u64) -> Step {
        if !self.attention.load(Ordering::Acquire) {
            return Step::Run;
        }
        let mut s = lock(&self.state);
        if s.pause && !s.stop {
            s.parked += 1;
            self.changed.notify_all();
            while s.pause && !s.stop {
                s = self
                    .changed
                    .wait(s)
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            s.parked -= 1;
        }
        if s.stop {
            return Step::Stop;
        }
        if s.generation == *seen {
            return Step::Run;
        }
        *seen = s.generation;
        s.resetting = s.resetting.saturating_sub(1);
        self.attention.store(s.attention(), Ordering::Release);
        Step::Reset
    }

    /// Parks a vCPU whose VM is ending or resetting (an exit was reported) until the main
    /// thread stops the vCPUs or resets the machine.
    fn hold(&self, seen: u64) {
        let mut s = lock(&self.state);
        s.parked += 1;
        self.changed.notify_all();
        while !s.stop && s.generation == seen {
            s = self
                .changed
                .wait(s)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        s.parked -= 1;
    }

    fn kick_until(
        &self,
        vcpus: &[VcpuHandle],
        timeout: Duration,
        done: impl Fn(&RunState) -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let s = lock(&self.state);
                if done(&s) {
                    return true;
                }
            }
            if Instant::now() >= deadline {
                return false;
            }
            // A kick can land just before a thread enters KVM_RUN and be lost, so kick again
            // until every thread has acknowledged.
            for v in vcpus {
                if !v.thread.is_finished() {
                    v.kick();
                }
            }
            let s = lock(&self.state);
            let _ = self.changed.wait_timeout(s, Duration::from_millis(2));
        }
    }

    /// Parks every vCPU outside KVM_RUN; returns false if they did not all park in time.
    pub fn pause(&self, vcpus: &[VcpuHandle]) -> bool {
        lock(&self.state).pause = true;
        self.attention.store(true, Ordering::Release);
        let live = vcpus.iter().filter(|v| !v.thread.is_finished()).count();
        self.kick_until(vcpus, Duration::from_secs(2), |s| s.parked >= live)
    }

    /// Lets parked vCPUs run again.
    pub fn resume(&self) {
        let mut s = lock(&self.state);
        s.pause = false;
        self.attention.store(s.attention(), Ordering::Release);
        drop(s);
        self.changed.notify_all();
    }

    /// Lets the vCPUs, parked by [`RunControl::pause`] while the machine was reset, run again,
    /// each restoring its reset state first; or, `paused`, only once [`RunControl::resume`]
    /// is called.
    pub fn resume_after_reset(&self, vcpus: &[VcpuHandle], paused: bool) {
        let mut s = lock(&self.state);
        s.generation += 1;
        s.resetting = vcpus.iter().filter(|v| !v.thread.is_finished()).count();
        s.pause = paused;
        self.attention.store(s.attention(), Ordering::Release);
        drop(s);
        self.changed.notify_all();
    }

    /// Stops every vCPU thread (they end at their next checkpoint).
    pub fn stop(&self, vcpus: &[VcpuHandle]) {
        lock(&self.state).stop = true;
        self.attention.store(true, Ordering::Release);
        self.changed.notify_all();
        let _ = self.kick_until(vcpus, Duration::from_millis(500), |_| {
            vcpus.iter().all(|v| v.thread.is_finished())
        });
    }
}

/// Everything a vCPU thread owns.
pub struct Vcpu {
    /// Index, which is also the APIC ID.
    pub id: u8,
    /// The KVM vCPU.
    pub fd: VcpuFd,
    /// Port I/O bus.
    pub pio: Arc<Bus>,
    /// MMIO bus.
    pub mmio: Arc<Bus>,
    /// Where to report that the VM must stop.
    pub exit: ExitSender,
    /// Pause/stop control.
    pub control: Arc<RunControl>,
    /// The state a reset restores; None when the VM ends at a reset instead.
    pub reset: Option<ResetState>,
}

impl Vcpu {
    /// Starts the thread, under the vCPU seccomp filter.
    pub fn spawn(self, sandbox: &Sandbox) -> Result<VcpuHandle, VcpuError> {
        let id = self.id;
        sandbox
            .spawn(ThreadKind::Vcpu, format!("vcpu{id}"), move || self.run())
            .map(|thread| VcpuHandle { thread })
            .map_err(|e| VcpuError::Spawn(id, e))
    }

    fn run(mut self) {
        let mut seen = 0;
        loop {
            match self.control.checkpoint(&mut seen) {
                Step::Stop => return,
                Step::Reset => {
                    if let Err(e) = self.restore() {
                        self.exit.send(ExitReason::VmmError(e.to_string()));
                    }
                }
                Step::Run => {}
            }
            if !self.exit.stopping() {
                if let Some(reason) = self.run_once() {
                    self.exit.send(reason);
                }
            }
            // Some device (or another vCPU) ended or reset the VM: do not run the guest
            // again until the main thread has decided which.
            if self.exit.stopping() {
                self.control.hold(seen);
            }
        }
    }

    /// Restores the state the vCPU had before it first ran (after a reset of the machine).
    fn restore(&mut self) -> Result<(), VcpuError> {
        self.fd.set_kvm_immediate_exit(0);
        match &self.reset {
            Some(state) => state.restore(&self.fd, self.id),
            None => Err(VcpuError::NoResetState(self.id)),
        }
    }

    /// Logs where the vCPU was when the guest died: what a guest's developer (or a Windows
    /// crash's first responder) needs to tell a firmware, boot-loader or kernel fault apart.
    fn log_state(&self, what: &str) {
        let (Ok(r), Ok(s)) = (self.fd.get_regs(), self.fd.get_sregs()) else {
            tracing::error!(vcpu = self.id, "{what}; its registers cannot be read");
            return;
        };
        tracing::error!(
            vcpu = self.id,
            rip = format_args!("{:#x}", r.rip),
            rsp = format_args!("{:#x}", r.rsp),
            rflags = format_args!("{:#x}", r.rflags),
            rax = format_args!("{:#x}", r.rax),
            cs = format_args!("{:#x}/{:#x}", s.cs.selector, s.cs.base),
            cr0 = format_args!("{:#x}", s.cr0),
            cr2 = format_args!("{:#x}", s.cr2),
            cr3 = format_args!("{:#x}", s.cr3),
            cr4 = format_args!("{:#x}", s.cr4),
            efer = format_args!("{:#x}", s.efer),
            idt = format_args!("{:#x}+{:#x}", s.idt.base, s.idt.limit),
            gdt = format_args!("{:#x}+{:#x}", s.gdt.base, s.gdt.limit),
            "{what}: the vCPU's state"
        );
    }

    /// One KVM_RUN; returns why the VM must stop, if it must.
    fn run_once(&mut self) -> Option<ExitReason> {
        let id = self.id;
        let kvm_error = |detail: String| Some(ExitReason::KvmError { vcpu: id, detail });
        match self.fd.run() {
            Ok(VcpuExit::IoIn(port, data)) => self.pio.read(u64::from(port), data),
            Ok(VcpuExit::IoOut(port, data)) => self.pio.write(u64::from(port), data),
            Ok(VcpuExit::MmioRead(addr, data)) => self.mmio.read(addr, data),
            Ok(VcpuExit::MmioWrite(addr, data)) => self.mmio.write(addr, data),
            // With the in-kernel LAPIC, HLT is handled by KVM; a stray one just resumes.
            Ok(VcpuExit::Hlt | VcpuExit::Intr) => {}
            Ok(VcpuExit::Shutdown) => {
                self.log_state("triple fault");
                return Some(ExitReason::TripleFault { vcpu: id });
            }
            Ok(VcpuExit::SystemEvent(kind, _)) => match kind {
                KVM_SYSTEM_EVENT_SHUTDOWN | KVM_SYSTEM_EVENT_RESET => {
                    return Some(ExitReason::GuestReset)
                }
                KVM_SYSTEM_EVENT_CRASH => return kvm_error("guest crash event".into()),
                other => return kvm_error(format!("unknown system event {other}")),
            },
            Ok(VcpuExit::FailEntry(reason, cpu)) => {
                return kvm_error(format!(
                    "VM entry failed (hardware reason {reason:#x}, host CPU {cpu})"
                ))
            }
            Ok(VcpuExit::InternalError) => {
                self.log_state("KVM internal error");
                let rip = self.fd.get_regs().map(|r| r.rip).unwrap_or(0);
                return kvm_error(format!(
                    "KVM internal error (emulation failure?) at RIP {rip:#x}"
                ));
            }
            Ok(other) => return kvm_error(format!("unexpected exit {other:?}")),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                self.fd.set_kvm_immediate_exit(0);
            }
            Err(e) => return kvm_error(format!("KVM_RUN failed: {e}")),
        }
        None
    }
}
