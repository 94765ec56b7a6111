//! A TPM 2.0 for the guest (Windows 11 requires one; BitLocker and measured boot use it): the
//! CRB interface ([`crb`]) in the VMM, the TPM itself in swtpm ([`swtpm`]), and between them
//! the TPM thread, which carries each command to swtpm and its response back, so that no vCPU
//! waits on the TPM.

pub mod crb;
pub mod swtpm;

use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

pub use crb::{Crb, Job, BUFFER_SIZE, CRB_BASE, CRB_CONTROL_AREA, CRB_SIZE};
pub use swtpm::{Swtpm, SwtpmError};

use swtpm::be32;

use crate::config::TpmBackend;
use crate::devices::bus::lock;
use crate::sandbox::{Sandbox, SandboxError, ThreadKind};

/// Errors while setting up the TPM.
#[derive(Debug, thiserror::Error)]
pub enum TpmError {
    /// swtpm could not be started or reached, or refused to start its TPM.
    #[error("TPM: {0}")]
    Swtpm(#[from] SwtpmError),
    /// The TPM thread's filter.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
}

/// The running TPM thread.
pub struct TpmThread {
    jobs: Sender<Job>,
    /// The data channel, cut at the end so that a command swtpm is still on does not hold
    /// the VMM's exit for its timeout.
    data: UnixStream,
    handle: Option<JoinHandle<Option<()>>>,
}

impl TpmThread {
    /// Closes the TPM (a swtpm the VMM started ends, its state saved) and waits for the
    /// thread.
    pub fn stop(&mut self) {
        if let Some(handle) = self.handle.take() {
            let _ = self.data.shutdown(Shutdown::Both);
            let _ = self.jobs.send(Job::Stop);
            let _ = handle.join();
        }
    }
}

impl Drop for TpmThread {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Who starts the TPM (TPM2_Startup) after power-on and each reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TpmStartup {
    /// The guest's firmware (OVMF), as on a PC.
    Firmware,
    /// The VMM, which plays the firmware's part for a kernel it boots directly.
    Vmm,
}

/// Starts or reaches swtpm as `backend` says, and returns the CRB device with the thread that
/// serves it.
pub fn start(
    backend: &TpmBackend,
    startup: TpmStartup,
    sandbox: &Sandbox,
) -> Result<(Arc<Mutex<Crb>>, TpmThread), TpmError> {
    let buffer = BUFFER_SIZE as u32;
    let mut tpm = match backend {
        TpmBackend::Spawn { swtpm, state_dir } => Swtpm::spawn(swtpm, state_dir, buffer)?,
        TpmBackend::Socket(socket) => Swtpm::connect(socket, buffer)?,
    };
    if startup == TpmStartup::Vmm {
        tpm.startup()?;
    }
    let data = tpm.data_handle()?;
    let (tx, rx) = channel();
    let device = Arc::new(Mutex::new(Crb::new(tx.clone())));
    let served = device.clone();
    let handle = sandbox.spawn(ThreadKind::Tpm, "tpm".into(), move || {
        serve(tpm, startup, &rx, &served)
    })?;
    tracing::info!(%backend, "TPM 2.0 (CRB) attached");
    Ok((
        device,
        TpmThread {
            jobs: tx,
            data,
            handle: Some(handle),
        },
    ))
}

/// The TPM thread: each job in turn, until told to stop.
fn serve(mut tpm: Swtpm, startup: TpmStartup, jobs: &Receiver<Job>, device: &Mutex<Crb>) {
    while let Ok(job) = jobs.recv() {
        match job {
            Job::Command { generation, bytes } => {
                let response = tpm.execute(&bytes, BUFFER_SIZE);
                if tracing::enabled!(tracing::Level::DEBUG) {
                    // Command and response codes only: the parameters may be secrets.
                    let code = |b: &[u8]| b.get(6..10).map(|c| format!("{:#x}", be32(c)));
                    tracing::debug!(
                        command = code(&bytes).as_deref().unwrap_or("?"),
                        response = response
                            .as_ref()
                            .ok()
                            .and_then(|r| code(r))
                            .as_deref()
                            .unwrap_or("failed"),
                        "TPM command"
                    );
                }
                lock(device).complete(generation, response);
            }
            Job::Reset => {
                let reset = tpm.init().and_then(|()| match startup {
                    TpmStartup::Vmm => tpm.startup(),
                    TpmStartup::Firmware => Ok(()),
                });
                if let Err(e) = reset {
                    lock(device).fail(&e.to_string());
                }
            }
            Job::Stop => break,
        }
    }
    tpm.close();
}
