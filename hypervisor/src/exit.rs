//! Why a VM stopped, and the process exit status each reason maps to.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;

/// Process exit statuses of tessera-vmm; stable, documented in `--help` and the README.
pub mod status {
    /// The guest shut down (ACPI power-off, or the i8042 or chipset reset line) or the API
    /// asked for a clean shutdown.
    pub const GUEST_SHUTDOWN: i32 = 0;
    /// A VMM error: bad configuration, unreadable files, a device or I/O failure.
    pub const VMM_ERROR: i32 = 1;
    /// Command-line usage error (clap's convention).
    pub const USAGE: i32 = 2;
    /// A vCPU triple-faulted (KVM_EXIT_SHUTDOWN).
    pub const TRIPLE_FAULT: i32 = 3;
    /// KVM failed: an ioctl error, an emulation failure or a failed VM entry.
    pub const KVM_ERROR: i32 = 4;
    /// The API killed the VM (PUT /vm/kill).
    pub const KILLED: i32 = 5;
}

/// Why the VM stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// The guest pulsed the reset line through the i8042 (Linux `reboot=k`) or the chipset's
    /// reset register (ACPI's reset).
    GuestReset,
    /// The guest entered ACPI's soft-off state (S5): `poweroff`, a Windows shutdown.
    GuestPowerOff,
    /// The API requested a clean shutdown.
    ApiShutdown,
    /// The API requested an immediate stop.
    ApiKill,
    /// A vCPU triple-faulted.
    TripleFault {
        /// The vCPU index.
        vcpu: u8,
    },
    /// KVM reported an error.
    KvmError {
        /// The vCPU index.
        vcpu: u8,
        /// What KVM said.
        detail: String,
    },
    /// The VMM itself failed.
    VmmError(String),
}

impl ExitReason {
    /// The process exit status for this reason.
    pub fn status(&self) -> i32 {
        match self {
            Self::GuestReset | Self::GuestPowerOff | Self::ApiShutdown => status::GUEST_SHUTDOWN,
            Self::ApiKill => status::KILLED,
            Self::TripleFault { .. } => status::TRIPLE_FAULT,
            Self::KvmError { .. } => status::KVM_ERROR,
            Self::VmmError(_) => status::VMM_ERROR,
        }
    }
}

impl std::fmt::Display for ExitReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::GuestReset => write!(f, "the guest shut down (reset line)"),
            Self::GuestPowerOff => write!(f, "the guest powered off (ACPI S5)"),
            Self::ApiShutdown => write!(f, "shut down through the control API"),
            Self::ApiKill => write!(f, "killed through the control API"),
            Self::TripleFault { vcpu } => write!(f, "vCPU {vcpu} triple-faulted"),
            Self::KvmError { vcpu, detail } => write!(f, "KVM error on vCPU {vcpu}: {detail}"),
            Self::VmmError(e) => write!(f, "VMM error: {e}"),
        }
    }
}

/// Where devices and vCPUs report that the VM must stop. The first report wins.
///
/// A report also raises a flag that every vCPU checks after each exit, so the thread whose I/O
/// ended the VM (the i8042 reset pulse, above all) never re-enters the guest: after the pulse a
/// Linux guest goes on to other reboot methods, down to a jump into a BIOS that is not there,
/// and under nested KVM that code could keep the vCPU inside the host kernel past our kick.
#[derive(Debug, Clone)]
pub struct ExitSender {
    tx: Sender<ExitReason>,
    stopping: Arc<AtomicBool>,
}

impl ExitSender {
    /// Wraps the channel the main thread waits on.
    pub fn new(tx: Sender<ExitReason>) -> Self {
        Self {
            tx,
            stopping: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Reports `reason`; ignored if the receiver is gone (the VM is ending anyway).
    pub fn send(&self, reason: ExitReason) {
        self.stopping.store(true, Ordering::Release);
        let _ = self.tx.send(reason);
    }

    /// Whether some report was made: vCPUs must not enter the guest again.
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// The machine was reset instead of ending: vCPUs may enter the guest again.
    pub fn clear_stopping(&self) {
        self.stopping.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_distinct_for_failures() {
        let reasons = [
            ExitReason::GuestReset,
            ExitReason::ApiKill,
            ExitReason::TripleFault { vcpu: 0 },
            ExitReason::KvmError {
                vcpu: 0,
                detail: String::new(),
            },
            ExitReason::VmmError(String::new()),
        ];
        let mut codes: Vec<i32> = reasons.iter().map(ExitReason::status).collect();
        codes.push(status::USAGE);
        let n = codes.len();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), n);
        assert_eq!(ExitReason::ApiShutdown.status(), 0);
    }
}
