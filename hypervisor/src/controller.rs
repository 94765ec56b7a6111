//! The running VM as the control API sees it: state, info, pause, resume and stop requests.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;

use crate::arch::x86_64::boot::KernelFormat;
use crate::devices::acpi::pm::PowerManagement;
use crate::devices::bus::lock;
use crate::devices::display::service::DisplayService;
use crate::devices::legacy::debug_port::{BootTimes, Milestone};
use crate::exit::{ExitReason, ExitSender};
use crate::vstate::vcpu::{RunControl, VcpuHandle};

/// Lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VmState {
    /// vCPUs are running.
    Running,
    /// vCPUs are parked.
    Paused,
    /// A stop was requested; the process is about to exit.
    Stopping,
}

/// What GET /vm returns.
#[derive(Debug, Clone, Serialize)]
pub struct VmInfo {
    /// Lifecycle state.
    pub state: VmState,
    /// Milliseconds since the VMM process started.
    pub uptime_ms: u64,
    /// vCPU count.
    pub vcpus: u8,
    /// Guest memory in MiB.
    pub memory_mib: u64,
    /// Kernel image format; null when UEFI firmware boots the machine.
    pub kernel_format: Option<KernelFormat>,
    /// VMM process ID.
    pub pid: u32,
    /// Boot milestones written to the debug port, in order.
    pub boot_milestones: Vec<Milestone>,
    /// All writes to the debug port.
    pub debug_port_writes: u64,
    /// Whether every thread runs under its seccomp filter.
    pub seccomp: bool,
    /// Times the guest rebooted and the VM restarted in this process (`on_reboot =
    /// "restart"`).
    pub reboots: u32,
}

/// Errors from control requests; each maps to an HTTP status in the API.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ControlError {
    /// Pause while paused.
    #[error("the VM is already paused")]
    AlreadyPaused,
    /// Resume while running.
    #[error("the VM is not paused")]
    NotPaused,
    /// Any request while stopping.
    #[error("the VM is stopping")]
    Stopping,
    /// vCPUs did not park in time.
    #[error("the vCPUs did not pause within 2 s")]
    PauseTimeout,
    /// The machine has no ACPI power button (not built yet).
    #[error("this VM has no ACPI power button")]
    NoPowerButton,
}

/// Static facts about the VM.
#[derive(Debug, Clone, Copy)]
pub struct VmFacts {
    /// vCPU count.
    pub vcpus: u8,
    /// Guest memory in bytes.
    pub memory: u64,
    /// Kernel image format; None when UEFI firmware boots the machine.
    pub kernel_format: Option<KernelFormat>,
    /// Whether threads get seccomp filters.
    pub seccomp: bool,
}

/// Shared by the main thread and the API thread.
pub struct Controller {
    started: Instant,
    facts: VmFacts,
    state: Mutex<VmState>,
    run: Arc<RunControl>,
    vcpus: Mutex<Vec<VcpuHandle>>,
    exit: Mutex<ExitSender>,
    boot_times: Arc<Mutex<BootTimes>>,
    display: std::sync::OnceLock<Arc<DisplayService>>,
    power: std::sync::OnceLock<Arc<Mutex<PowerManagement>>>,
    reboots: std::sync::atomic::AtomicU32,
    sata: std::sync::OnceLock<Vec<crate::devices::ahci::drive::DriveInfo>>,
    nets: std::sync::OnceLock<Vec<(String, Arc<crate::devices::virtio::net::NetStats>)>>,
}

impl Controller {
    /// A controller for a VM whose vCPUs are started later with [`Controller::set_vcpus`].
    pub fn new(
        started: Instant,
        facts: VmFacts,
        run: Arc<RunControl>,
        exit: ExitSender,
        boot_times: Arc<Mutex<BootTimes>>,
    ) -> Self {
        Self {
            started,
            facts,
            state: Mutex::new(VmState::Running),
            run,
            vcpus: Mutex::new(Vec::new()),
            exit: Mutex::new(exit),
            boot_times,
            display: std::sync::OnceLock::new(),
            power: std::sync::OnceLock::new(),
            reboots: std::sync::atomic::AtomicU32::new(0),
            sata: std::sync::OnceLock::new(),
            nets: std::sync::OnceLock::new(),
        }
    }

    /// The AHCI controller's devices, whose counters `/metrics` shows.
    pub fn set_sata(&self, drives: Vec<crate::devices::ahci::drive::DriveInfo>) {
        let _ = self.sata.set(drives);
    }

    /// The AHCI controller's devices (none without the controller).
    pub fn sata(&self) -> &[crate::devices::ahci::drive::DriveInfo] {
        self.sata.get().map_or(&[], Vec::as_slice)
    }

    /// The NICs (tap, counters), whose counters `/metrics` shows.
    pub fn set_nets(&self, nets: Vec<(String, Arc<crate::devices::virtio::net::NetStats>)>) {
        let _ = self.nets.set(nets);
    }

    /// The NICs (none without any).
    pub fn nets(&self) -> &[(String, Arc<crate::devices::virtio::net::NetStats>)] {
        self.nets.get().map_or(&[], Vec::as_slice)
    }

    /// Hands over the running display.
    pub fn set_display(&self, display: Arc<DisplayService>) {
        let _ = self.display.set(display);
    }

    /// The display, if the VM has one.
    pub fn display(&self) -> Option<&Arc<DisplayService>> {
        self.display.get()
    }

    /// Hands over ACPI's fixed hardware, where the power button is.
    pub fn set_power(&self, power: Arc<Mutex<PowerManagement>>) {
        let _ = self.power.set(power);
    }

    /// Presses the ACPI power button: the guest decides what to do (an ACPI-aware OS shuts
    /// down). Returns whether the guest had enabled the button's event, i.e. whether anything
    /// listens; a paused VM sees the press when it resumes.
    pub fn power_button(&self) -> Result<bool, ControlError> {
        if *lock(&self.state) == VmState::Stopping {
            return Err(ControlError::Stopping);
        }
        let power = self.power.get().ok_or(ControlError::NoPowerButton)?;
        let mut power = lock(power);
        power.press_power_button();
        Ok(power.power_button_enabled())
    }

    /// Hands over the running vCPU threads.
    pub fn set_vcpus(&self, vcpus: Vec<VcpuHandle>) {
        *lock(&self.vcpus) = vcpus;
    }

    /// The VM's state and facts.
    pub fn info(&self) -> VmInfo {
        let times = lock(&self.boot_times);
        VmInfo {
            state: *lock(&self.state),
            uptime_ms: self.started.elapsed().as_millis() as u64,
            vcpus: self.facts.vcpus,
            memory_mib: self.facts.memory >> 20,
            kernel_format: self.facts.kernel_format,
            seccomp: self.facts.seccomp,
            reboots: self.reboots.load(std::sync::atomic::Ordering::Relaxed),
            pid: std::process::id(),
            boot_milestones: times.milestones().to_vec(),
            debug_port_writes: times.writes(),
        }
    }

    /// Parks all vCPUs.
    pub fn pause(&self) -> Result<(), ControlError> {
        let mut state = lock(&self.state);
        match *state {
            VmState::Paused => return Err(ControlError::AlreadyPaused),
            VmState::Stopping => return Err(ControlError::Stopping),
            VmState::Running => {}
        }
        if !self.run.pause(&lock(&self.vcpus)) {
            self.run.resume();
            return Err(ControlError::PauseTimeout);
        }
        *state = VmState::Paused;
        Ok(())
    }

    /// Lets the vCPUs run again.
    pub fn resume(&self) -> Result<(), ControlError> {
        let mut state = lock(&self.state);
        match *state {
            VmState::Running => return Err(ControlError::NotPaused),
            VmState::Stopping => return Err(ControlError::Stopping),
            VmState::Paused => {}
        }
        self.run.resume();
        *state = VmState::Running;
        Ok(())
    }

    /// Asks the main thread to end the VM for `reason`.
    pub fn request_exit(&self, reason: ExitReason) -> Result<(), ControlError> {
        let mut state = lock(&self.state);
        if *state == VmState::Stopping {
            return Err(ControlError::Stopping);
        }
        *state = VmState::Stopping;
        // The receiver lives as long as the main thread; if it is gone the VM is ending anyway.
        lock(&self.exit).send(reason);
        Ok(())
    }

    /// Resets the machine after the guest's reboot: parks the vCPUs, runs `reset` (the
    /// devices, interrupt controllers and boot image; false when the VM must end instead),
    /// then lets each vCPU restore its first state and run (or stay parked, if the API had
    /// paused the VM). API requests wait meanwhile.
    pub fn reset_vm<E: From<ControlError>>(
        &self,
        reset: impl FnOnce() -> Result<bool, E>,
    ) -> Result<(), E> {
        let state = lock(&self.state);
        if *state == VmState::Stopping {
            return Err(ControlError::Stopping.into());
        }
        let vcpus = lock(&self.vcpus);
        if !self.run.pause(&vcpus) {
            return Err(ControlError::PauseTimeout.into());
        }
        if !reset()? {
            return Ok(());
        }
        lock(&self.exit).clear_stopping();
        self.reboots
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.run
            .resume_after_reset(&vcpus, *state == VmState::Paused);
        Ok(())
    }

    /// Stops every vCPU thread; called by the main thread once it decided to exit.
    pub fn stop_vcpus(&self) {
        *lock(&self.state) = VmState::Stopping;
        self.run.stop(&lock(&self.vcpus));
    }
}
