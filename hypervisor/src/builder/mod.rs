//! Builds a VM from a checked configuration: memory, KVM, devices, buses, the kernel, and the
//! vCPU threads; then waits for the reason it ends.

use std::io::{Read, Write};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use crate::arch::x86_64::layout::{
    MMIO_HOLE_START, PCIE_ECAM_SIZE, PCIE_ECAM_START, PCI_MMIO32_END, PCI_MMIO32_START,
};
use crate::arch::x86_64::{acpi, boot, cpuid, hyperv, mptable, regs};
use crate::config::{BootFiles, OnReboot, SerialOutput, ValidConfig, VmConfig};
use crate::controller::{Controller, VmFacts};
use crate::devices::acpi::pm::{PowerManagement, PM_BASE, PM_LEN, SCI_IRQ};
use crate::devices::bus::{lock, Bus, BusError};
use crate::devices::display::bochs::{DispiPorts, DISPI_PORT, DISPI_PORT_LEN, VRAM_SIZE};
use crate::devices::display::dispi::Dispi;
use crate::devices::display::input::InputRoute;
use crate::devices::display::service::{DisplayError, DisplayParts, DisplayService};
use crate::devices::fw_cfg::{FW_CFG_PORT, FW_CFG_PORT_LEN};
use crate::devices::legacy::cmos::{Cmos, CMOS_BASE, CMOS_LEN};
use crate::devices::legacy::console_log::RotatingLog;
use crate::devices::legacy::debug_port::{BootTimes, DebugPort, DEBUG_PORT};
use crate::devices::legacy::i8042::{AUX_IRQ, I8042, I8042_BASE, I8042_LEN, KBD_IRQ};
use crate::devices::legacy::serial::{
    ConsoleOut, IrqLine, SerialDevice, COM1_BASE, COM1_IRQ, COM_LEN,
};
use crate::devices::pci::root::PciError;
use crate::devices::pci::{PciEcam, PciRoot, PCI_CONFIG_IO_BASE, PCI_CONFIG_IO_LEN};
use crate::devices::pflash::{CodeFlash, Pflash};
use crate::devices::tpm::{self, TpmError, TpmStartup, TpmThread, CRB_BASE, CRB_SIZE};
use crate::devices::virtio::block::request::BlockBackend;
use crate::devices::virtio::input::{Tablet, TabletError, TabletHandle};
use crate::devices::virtio::pci::VirtioPciError;
use crate::exit::{ExitReason, ExitSender};
use crate::firmware::{self, FirmwareError};
use crate::sandbox::{Sandbox, SandboxError, ThreadKind};
use crate::vstate::flash_memory::FlashMemory;
use crate::vstate::framebuffer::Framebuffer;
use crate::vstate::irq_routing::RoutingError;
use crate::vstate::memory::{create_guest_memory, MemoryError};
use crate::vstate::vcpu::{self, BootRegs, RunControl, Vcpu, VcpuError};
use crate::vstate::vcpu_reset::ResetState;
use crate::vstate::vm::{IrqchipState, Vm, VmError};

mod pci;

use self::pci::build_pci;

/// Errors while building the VM.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Guest memory.
    #[error(transparent)]
    Memory(#[from] MemoryError),
    /// KVM.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// Kernel loading.
    #[error(transparent)]
    Boot(#[from] boot::BootError),
    /// Boot structures.
    #[error(transparent)]
    Regs(#[from] regs::RegsError),
    /// MP table.
    #[error(transparent)]
    Mptable(#[from] mptable::MptableError),
    /// ACPI tables.
    #[error(transparent)]
    Acpi(#[from] acpi::AcpiError),
    /// vCPUs.
    #[error(transparent)]
    Vcpu(#[from] VcpuError),
    /// Bus layout (a VMM bug).
    #[error("device layout: {0}")]
    Bus(#[from] BusError),
    /// PCI layout (a VMM bug).
    #[error("PCI layout: {0}")]
    Pci(#[from] PciError),
    /// An eventfd could not be created.
    #[error("cannot create an eventfd: {0}")]
    EventFd(std::io::Error),
    /// A disk image could not be opened.
    #[error("disk {0}: {1}")]
    Disk(std::path::PathBuf, tessera_storage::StorageError),
    /// virtio transport set-up.
    #[error(transparent)]
    VirtioPci(#[from] VirtioPciError),
    /// The AHCI controller.
    #[error("AHCI controller: {0}")]
    Ahci(#[from] crate::devices::ahci::AhciError),
    /// Interrupt routing.
    #[error(transparent)]
    Routing(#[from] RoutingError),
    /// More devices than the PCI window holds (a VMM limit).
    #[error("too many PCI devices for the 32-bit PCI window")]
    PciWindowFull,
    /// The display.
    #[error("display: {0}")]
    Display(#[from] DisplayError),
    /// PCI configuration space layout (a VMM bug).
    #[error("PCI configuration space: {0}")]
    ConfigSpace(#[from] crate::devices::pci::config::ConfigSpaceError),
    /// The serial output file could not be opened.
    #[error("cannot open the serial output file {0}: {1}")]
    SerialFile(std::path::PathBuf, std::io::Error),
    /// A thread's seccomp filter.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// The tablet.
    #[error(transparent)]
    Tablet(#[from] TabletError),
    /// A NIC's tap.
    #[error("NIC: {0}")]
    Tap(#[from] crate::devices::virtio::net::tap::TapError),
    /// A NIC's vhost-net (with `vhost = "on"`).
    #[error("NIC: {0}")]
    Vhost(#[from] crate::devices::virtio::net::vhost::VhostError),
    /// `hyperv = true` on a KVM that cannot say which Hyper-V features it emulates.
    #[error("this KVM cannot report the Hyper-V features it emulates (no KVM_CAP_SYS_HYPERV_CPUID); run without hyperv")]
    NoHyperv,
    /// UEFI firmware.
    #[error(transparent)]
    Firmware(#[from] FirmwareError),
    /// The TPM.
    #[error(transparent)]
    Tpm(#[from] TpmError),
    /// A reset could not park the vCPUs, or the VM was stopping.
    #[error(transparent)]
    Control(#[from] crate::controller::ControlError),
}

/// What the guest boots: loaded when the VM is built, and again at each reset.
struct BootImage {
    kernel: std::fs::File,
    initrd: Option<std::fs::File>,
    cmdline: String,
    /// What the ACPI tables describe.
    platform: acpi::Platform,
}

impl BootImage {
    /// Loads the kernel, initrd and command line, and writes the boot structures the kernel
    /// finds: page tables, GDT, MP table and ACPI tables.
    fn load(&mut self, memory: &GuestMemoryMmap) -> Result<boot::BootEntry, BuildError> {
        let entry = boot::load(
            memory,
            &mut self.kernel,
            self.initrd.as_mut(),
            &self.cmdline,
        )?;
        regs::write_page_tables(memory)?;
        regs::write_descriptor_tables(memory)?;
        mptable::write(memory, self.platform.vcpus)?;
        acpi::write(memory, &self.platform)?;
        Ok(entry)
    }
}

/// What boots: a kernel the VMM loads, or the firmware in flash (which needs nothing done at
/// a reset but the flash's own).
enum Boot {
    Linux(BootImage),
    Firmware,
}

/// What a reset of the machine in place needs (`on_reboot = "restart"`).
struct Resettable {
    boot: Boot,
    irqchip: IrqchipState,
    mmio: Arc<Bus>,
}

/// A built, running VM.
pub struct Machine {
    /// Shared with the control API.
    pub controller: Arc<Controller>,
    /// The threads' filters: the API thread and the main thread enter theirs after build.
    pub sandbox: Sandbox,
    exit_rx: Receiver<ExitReason>,
    // Kept alive for as long as the vCPUs may touch them.
    disks: Vec<(String, Arc<BlockBackend>)>,
    reset: Option<Resettable>,
    /// The firmware's variable store, flushed at each reset and at exit.
    vars: Option<Arc<Mutex<Pflash<FlashMemory>>>>,
    // The firmware's code slot lives as long as the VM.
    _code: Option<FlashMemory>,
    /// The TPM's thread, which closes swtpm at the end.
    tpm: Option<TpmThread>,
    vm: Vm,
    memory: GuestMemoryMmap,
    pio: Arc<Bus>,
}

impl Machine {
    /// Blocks until the VM must end, stops the vCPUs and returns why. With `on_reboot =
    /// "restart"`, a guest's reboot resets the machine in place and the wait goes on.
    pub fn wait(mut self) -> ExitReason {
        let reason = loop {
            let reason = self
                .exit_rx
                .recv()
                .unwrap_or_else(|_| ExitReason::VmmError("every exit reporter is gone".into()));
            if reason != ExitReason::GuestReset || self.reset.is_none() {
                break reason;
            }
            match self.reboot() {
                Ok(None) => continue,
                Ok(Some(other)) => break other,
                Err(e) => break ExitReason::VmmError(format!("cannot restart the VM: {e}")),
            }
        };
        self.controller.stop_vcpus();
        self.flush_disks();
        if let Some(tpm) = &mut self.tpm {
            tpm.stop();
        }
        reason
    }

    /// What the guest wrote and did not flush reaches the images, as QEMU does when it
    /// closes its block devices.
    fn flush_disks(&self) {
        for (name, disk) in &self.disks {
            disk.flush(name);
        }
        if let Some(vars) = &self.vars {
            lock(vars).flush();
        }
    }

    /// Resets the machine in place after the guest's reboot: vCPUs parked, devices, the
    /// interrupt controllers and the PIT back as built, the kernel loaded again, then each
    /// vCPU restores its first state and runs. Returns a reason that ends the VM instead,
    /// if one came in meanwhile.
    fn reboot(&mut self) -> Result<Option<ExitReason>, BuildError> {
        tracing::info!("the guest rebooted; restarting the VM in place");
        let Some(parts) = self.reset.as_mut() else {
            return Ok(Some(ExitReason::GuestReset));
        };
        let (pio, memory, vm, disks) = (&self.pio, &self.memory, &self.vm, &self.disks);
        let vars = &self.vars;
        let rx = &self.exit_rx;
        let mut ended = None;
        self.controller.reset_vm(|| -> Result<bool, BuildError> {
            // The same reset reported twice (two vCPUs, or two reset methods in a row) is one
            // reset; anything else ends the VM.
            while let Ok(r) = rx.try_recv() {
                if r != ExitReason::GuestReset {
                    ended = Some(r);
                    return Ok(false);
                }
            }
            for (name, disk) in disks {
                disk.flush(name);
            }
            if let Some(vars) = vars {
                lock(vars).flush();
            }
            pio.reset();
            parts.mmio.reset();
            vm.restore_irqchip(&parts.irqchip)?;
            if let Boot::Linux(image) = &mut parts.boot {
                image.load(memory)?;
            }
            Ok(true)
        })?;
        Ok(ended)
    }
}

fn irq_line(vm: &Vm, gsi: u32) -> Result<IrqLine, BuildError> {
    let evt = EventFd::new(libc::EFD_NONBLOCK).map_err(BuildError::EventFd)?;
    vm.register_irqfd(&evt, gsi)?;
    Ok(IrqLine(evt))
}

fn console_out(serial: &SerialOutput, max: u64) -> Result<ConsoleOut, BuildError> {
    Ok(match serial {
        SerialOutput::Stdout => Box::new(std::io::stdout()),
        SerialOutput::Off => Box::new(std::io::sink()),
        SerialOutput::File(path) => Box::new(
            RotatingLog::open(path, max).map_err(|e| BuildError::SerialFile(path.clone(), e))?,
        ),
    })
}

/// Feeds the VMM's standard input to the guest's serial port.
fn spawn_console_input(
    serial: Arc<Mutex<SerialDevice>>,
    sandbox: &Sandbox,
) -> Result<(), SandboxError> {
    sandbox.spawn(ThreadKind::ConsoleIn, "console-in".into(), move || {
        let mut stdin = std::io::stdin();
        let mut buf = [0u8; 64];
        while let Ok(n @ 1..) = stdin.read(&mut buf) {
            let mut rest = &buf[..n];
            while !rest.is_empty() {
                let taken = lock(&serial).enqueue_input(rest);
                rest = &rest[taken..];
                if !rest.is_empty() {
                    // The guest has not drained its receive FIFO yet.
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        }
    })?;
    Ok(())
}

/// The port bus, and the devices on it that other parts of the VM reach.
struct PioDevices {
    pio: Bus,
    i8042: Arc<Mutex<I8042>>,
    serial: Arc<Mutex<SerialDevice>>,
    power: Arc<Mutex<PowerManagement>>,
}

/// ACPI's fixed hardware, its SCI a level-triggered line into KVM's interrupt controllers.
fn power_management(vm: &Vm, exit: &ExitSender) -> Arc<Mutex<PowerManagement>> {
    let fd = vm.shared_fd();
    let sci = Box::new(move |level: bool| {
        if let Err(e) = fd.set_irq_line(SCI_IRQ, level) {
            tracing::warn!(error = %e, level, "cannot drive the ACPI SCI");
        }
    });
    Arc::new(Mutex::new(PowerManagement::new(sci, exit.clone())))
}

/// Builds the port bus with the legacy devices and the PCI root.
fn build_pio_bus(
    vm: &Vm,
    cfg: &VmConfig,
    started: Instant,
    boot_times: Arc<Mutex<BootTimes>>,
    exit: &ExitSender,
    memory: &GuestMemoryMmap,
    pci: Arc<Mutex<PciRoot>>,
) -> Result<PioDevices, BuildError> {
    let mut pio = Bus::new("port");
    let serial = Arc::new(Mutex::new(SerialDevice::new(
        irq_line(vm, COM1_IRQ)?,
        console_out(&cfg.serial, cfg.serial_log_max.0)?,
    )));
    pio.insert(serial.clone(), COM1_BASE, COM_LEN)?;
    let i8042 = Arc::new(Mutex::new(I8042::new(
        irq_line(vm, KBD_IRQ)?,
        irq_line(vm, AUX_IRQ)?,
        exit.clone(),
    )));
    pio.insert(i8042.clone(), I8042_BASE, I8042_LEN)?;

    let (below, above) = memory.iter().fold((0, 0), |(b, a), r| {
        let len = r.len();
        if r.start_addr().0 < MMIO_HOLE_START {
            (b + len, a)
        } else {
            (b, a + len)
        }
    });
    pio.insert(
        Arc::new(Mutex::new(Cmos::new(below, above))),
        CMOS_BASE,
        CMOS_LEN,
    )?;
    pio.insert(
        Arc::new(Mutex::new(DebugPort::new(started, boot_times))),
        DEBUG_PORT,
        1,
    )?;

    pio.insert(pci, PCI_CONFIG_IO_BASE, PCI_CONFIG_IO_LEN)?;
    let power = power_management(vm, exit);
    pio.insert(power.clone(), u64::from(PM_BASE), u64::from(PM_LEN))?;
    Ok(PioDevices {
        pio,
        i8042,
        serial,
        power,
    })
}

/// The display adapter's state, shared by its PCI function, its ports and the display thread,
/// and the tablet that carries the client's pointer.
struct DisplayHardware {
    dispi: Arc<Mutex<Dispi>>,
    fb: Arc<Framebuffer>,
    tablet: Mutex<Option<Tablet>>,
    pointer: TabletHandle,
}

/// Video memory and registers, when the configuration has a display.
fn display_hardware(
    cfg: &VmConfig,
    vm: &Vm,
    memory: &GuestMemoryMmap,
    sandbox: &Sandbox,
) -> Result<Option<DisplayHardware>, BuildError> {
    if cfg.display.is_none() {
        return Ok(None);
    }
    // The slot after guest RAM's.
    let slot = memory.num_regions() as u32;
    let fb = Framebuffer::new(vm.shared_fd(), slot, VRAM_SIZE as usize)?;
    let (tablet, pointer) = Tablet::new(sandbox)?;
    Ok(Some(DisplayHardware {
        dispi: Arc::new(Mutex::new(Dispi::new(VRAM_SIZE as usize))),
        fb: Arc::new(fb),
        tablet: Mutex::new(Some(tablet)),
        pointer,
    }))
}

/// The kinds of threads `cfg`'s VM runs, whose filters are compiled ahead.
fn thread_kinds(cfg: &VmConfig) -> Vec<ThreadKind> {
    let c = cfg;
    let mut kinds = vec![ThreadKind::Main, ThreadKind::Vcpu];
    if c.serial == SerialOutput::Stdout {
        kinds.push(ThreadKind::ConsoleIn);
    }
    if c.api_socket.is_some() {
        kinds.push(ThreadKind::Api);
    }
    if !c.disks.is_empty() || !c.cdroms.is_empty() {
        kinds.push(ThreadKind::BlockQueue);
    }
    if c.display.is_some() {
        kinds.extend([ThreadKind::Display, ThreadKind::Tablet]);
    }
    if c.tpm.is_some() {
        kinds.push(ThreadKind::Tpm);
    }
    kinds
}

/// Builds and starts the VM.
pub fn build(cfg: ValidConfig, started: Instant) -> Result<Machine, BuildError> {
    let ValidConfig {
        config: cfg,
        vcpus,
        boot: boot_files,
        tpm: tpm_backend,
    } = cfg;
    let sandbox = if cfg.seccomp {
        Sandbox::with_reboots(&thread_kinds(&cfg), cfg.on_reboot == OnReboot::Restart)
    } else {
        tracing::warn!("seccomp filters are off (seccomp = false)");
        Sandbox::off()
    };
    let memory = create_guest_memory(cfg.memory.0)?;
    let vm = Vm::new()?;
    vm.check_vcpus(vcpus)?;
    vm.register_memory(&memory)?;
    vm.setup_irqchip()?;
    let restart = cfg.on_reboot == OnReboot::Restart;
    // Their power-on state, which a reset restores.
    let irqchip = restart.then(|| vm.irqchip_state()).transpose()?;

    let (tx, exit_rx) = channel();
    let exit_tx = ExitSender::new(tx);
    let boot_times = Arc::new(Mutex::new(BootTimes::default()));
    let display = display_hardware(&cfg, &vm, &memory, &sandbox)?;
    let platform = acpi::Platform {
        vcpus,
        ram_end: memory.last_addr().0 + 1,
        tpm: tpm_backend.is_some(),
    };
    // The firmware's slots come after RAM's and video memory's.
    let (mut boot, flash) = match boot_files {
        BootFiles::Kernel { kernel, initrd } => (
            Boot::Linux(BootImage {
                kernel,
                initrd,
                cmdline: cfg.cmdline.clone(),
                platform,
            }),
            None,
        ),
        BootFiles::Firmware { code, vars } => {
            let slot = memory.num_regions() as u32 + 1;
            let path = cfg.firmware.clone().unwrap_or_default();
            let flash = firmware::map_flash(vm.shared_fd(), (slot, slot + 1), (&path, code), vars)?;
            (Boot::Firmware, Some(flash))
        }
    };
    let pci::PciBus {
        root: pci,
        window,
        disks,
        sata,
        usb,
        nets,
    } = build_pci(&cfg, vcpus, &vm, &memory, display.as_ref(), &sandbox)?;
    let pci = Arc::new(Mutex::new(pci.with_reset(exit_tx.clone())));
    let PioDevices {
        mut pio,
        i8042,
        serial,
        power,
    } = build_pio_bus(
        &vm,
        &cfg,
        started,
        boot_times.clone(),
        &exit_tx,
        &memory,
        pci.clone(),
    )?;
    if flash.is_some() {
        pio.insert(
            Arc::new(Mutex::new(firmware::fw_cfg(&memory, &platform)?)),
            FW_CFG_PORT,
            FW_CFG_PORT_LEN,
        )?;
    }
    if let Some(d) = &display {
        pio.insert(
            Arc::new(Mutex::new(DispiPorts {
                dispi: d.dispi.clone(),
                fb: d.fb.clone(),
            })),
            DISPI_PORT,
            DISPI_PORT_LEN,
        )?;
    }
    let pio = Arc::new(pio);
    let mut mmio = Bus::new("MMIO");
    mmio.insert(
        Arc::new(Mutex::new(PciEcam::new(pci))),
        PCIE_ECAM_START,
        PCIE_ECAM_SIZE,
    )?;
    mmio.insert(
        Arc::new(Mutex::new(window)),
        PCI_MMIO32_START,
        PCI_MMIO32_END - PCI_MMIO32_START,
    )?;
    let (code, vars) = match flash {
        Some(f) => {
            let l = f.layout;
            mmio.insert(
                Arc::new(Mutex::new(CodeFlash::new())),
                l.code_start,
                l.code_len,
            )?;
            let vars = f.vars.map(|v| Arc::new(Mutex::new(v)));
            if let Some(v) = &vars {
                mmio.insert(v.clone(), l.vars_start, l.vars_len)?;
            }
            tracing::info!(
                code = format_args!("{:#x}+{:#x}", l.code_start, l.code_len),
                vars = format_args!("{:#x}+{:#x}", l.vars_start, l.vars_len),
                vcpus,
                memory_mib = cfg.memory.0 >> 20,
                "UEFI firmware mapped"
            );
            (Some(f.code), vars)
        }
        None => (None, None),
    };
    // swtpm is started (or reached) before the guest runs: a TPM that cannot be had fails
    // the VM's start, with swtpm's reason.
    let tpm = match &tpm_backend {
        Some(backend) => {
            // A kernel booted directly finds the TPM started, as firmware leaves it.
            let startup = match boot {
                Boot::Linux(_) => TpmStartup::Vmm,
                Boot::Firmware => TpmStartup::Firmware,
            };
            let (crb, thread) = tpm::start(backend, startup, &sandbox)?;
            mmio.insert(crb, CRB_BASE, CRB_SIZE)?;
            Some(thread)
        }
        None => None,
    };
    let mmio = Arc::new(mmio);

    let entry = match &mut boot {
        Boot::Linux(image) => {
            let entry = image.load(&memory)?;
            tracing::info!(
                format = ?entry.format,
                entry = format_args!("{:#x}", entry.entry),
                vcpus,
                memory_mib = cfg.memory.0 >> 20,
                "kernel loaded"
            );
            Some(entry)
        }
        // The boot vCPU starts where a fresh one does: the reset vector, in the firmware.
        Boot::Firmware => None,
    };

    vcpu::install_kick_handler()?;
    let supported_cpuid = vm.supported_cpuid()?;
    let supported_msrs = vm.supported_msrs()?;
    let hv_cpuid = match cfg.hyperv {
        true => Some(vm.supported_hv_cpuid()?.ok_or(BuildError::NoHyperv)?),
        false => None,
    };
    let run = Arc::new(RunControl::default());
    let controller = Arc::new(Controller::new(
        started,
        VmFacts {
            vcpus,
            memory: cfg.memory.0,
            kernel_format: entry.map(|e| e.format),
            seccomp: sandbox.is_on(),
        },
        run.clone(),
        exit_tx.clone(),
        boot_times,
    ));

    let count = vcpus;
    let mut vcpus = Vec::with_capacity(usize::from(count));
    for id in 0..count {
        let fd = vm
            .fd()
            .create_vcpu(u64::from(id))
            .map_err(|e| VcpuError::Ioctl(id, "CREATE_VCPU", e))?;
        let boot = entry.filter(|_| id == 0).map(|e| BootRegs {
            entry: e.entry,
            boot_params: e.boot_params,
        });
        let mut table = cpuid::vcpu_cpuid(&supported_cpuid, id, count);
        if let Some(hv) = &hv_cpuid {
            let synic = hyperv::offers_synic(hv) && vcpu::enable_hyperv_synic(&fd, id).is_ok();
            table = hyperv::apply(&table, hv, synic);
        }
        vcpu::configure(&fd, id, &table, &supported_msrs, boot)?;
        let reset = restart
            .then(|| ResetState::capture(&fd, id, &supported_msrs))
            .transpose()?;
        vcpus.push(Vcpu {
            id,
            fd,
            pio: pio.clone(),
            mmio: mmio.clone(),
            exit: exit_tx.clone(),
            control: run.clone(),
            reset,
        });
    }
    let handles = vcpus
        .into_iter()
        .map(|v| v.spawn(&sandbox))
        .collect::<Result<Vec<_>, _>>()?;
    controller.set_vcpus(handles);
    controller.set_power(power);
    // After the vCPUs: the guest's first instruction need not wait for this thread.
    if cfg.serial == SerialOutput::Stdout {
        spawn_console_input(serial, &sandbox)?;
    }
    if let (Some(hw), Some(dcfg)) = (display, &cfg.display) {
        let service = DisplayService::start(
            dcfg,
            "tessera desktop",
            DisplayParts {
                dispi: hw.dispi,
                fb: hw.fb,
                input: InputRoute {
                    i8042,
                    tablet: hw.pointer,
                    usb,
                },
            },
            &sandbox,
        )?;
        controller.set_display(service);
    }
    controller.set_sata(sata);
    controller.set_nets(nets);

    let reset = irqchip.map(|irqchip| Resettable {
        boot,
        irqchip,
        mmio,
    });
    Ok(Machine {
        controller,
        sandbox,
        exit_rx,
        disks,
        reset,
        vars,
        _code: code,
        tpm,
        vm,
        memory,
        pio,
    })
}

/// Flushes the console so nothing the guest printed is lost at exit.
pub fn flush_console() {
    let _ = std::io::stdout().flush();
}
