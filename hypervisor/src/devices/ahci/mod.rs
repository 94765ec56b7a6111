//! An AHCI SATA controller as Intel's ICH9 presents it (PCI 8086:2922, class 01 06 01, the
//! registers in BAR 5), with SATA disks and DVD-ROM drives on its six ports: the storage every
//! operating system drives without added drivers, which is how Windows is installed from its
//! ISO before virtio-win's drivers are in.
//!
//! - [`hba`]: the registers, and commands handed to the I/O thread;
//! - [`dma`]: command slots, tables and scatter-gather lists in guest memory;
//! - [`fis`]: the frames a command comes in and ends with;
//! - [`ata`], [`atapi`]: what a disk and a DVD-ROM drive do with a command;
//! - [`drive`]: a port's device and its medium;
//! - [`worker`]: the I/O thread.
//!
//! Interrupts are one MSI-X vector (the table in BAR 5 after the ports): Linux's ahci and
//! Windows' storahci both take message interrupts; the firmware polls.

pub mod ata;
pub mod atapi;
pub mod dma;
pub mod drive;
pub mod fis;
pub mod hba;
pub mod worker;

use std::sync::{Arc, Mutex};

use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use self::drive::{Drive, DriveInfo, DriveStats};
use self::hba::{Hba, PORTS};
use self::worker::Worker;
use crate::devices::bus::lock;
use crate::devices::pci::config::{ClassCode, ConfigSpaceError, PciConfig, PciId};
use crate::devices::pci::msix::{Msix, MSIX_CAP_ID};
use crate::devices::pci::register_bar::{self, BAR_SIZE, MSIX_PBA, MSIX_TABLE};
use crate::devices::pci::PciFunction;
use crate::devices::worker_thread::{WorkerError, WorkerThread};
use crate::sandbox::{Sandbox, SandboxError, ThreadKind};

/// The BAR that holds the registers (ABAR).
pub const ABAR: usize = 5;

/// Errors while building the controller.
#[derive(Debug, thiserror::Error)]
pub enum AhciError {
    /// More drives than ports.
    #[error("{0} SATA devices: the controller has {PORTS} ports")]
    TooManyDrives(usize),
    /// The configuration space's layout (a VMM bug).
    #[error(transparent)]
    Layout(#[from] ConfigSpaceError),
    /// An eventfd could not be created.
    #[error("cannot create an eventfd: {0}")]
    EventFd(std::io::Error),
    /// The I/O thread could not be started.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// The I/O thread would not take its job.
    #[error(transparent)]
    Worker(#[from] WorkerError),
}

/// The controller's PCI function.
pub struct Ahci {
    config: PciConfig,
    /// The configuration space as built, which the machine's reset restores.
    initial: PciConfig,
    msix_cap: usize,
    msix: Arc<Mutex<Msix>>,
    hba: Arc<Mutex<Hba>>,
    thread: WorkerThread,
    stop: EventFd,
    drives: Vec<DriveInfo>,
}

impl Ahci {
    /// A controller with `drives` on its first ports, registers at `bar`, interrupts through
    /// `msix`'s first vector; the I/O thread starts now.
    pub fn new(
        drives: Vec<Drive>,
        msix: Msix,
        bar: u32,
        memory: GuestMemoryMmap,
        sandbox: &Sandbox,
    ) -> Result<Self, AhciError> {
        if drives.len() > PORTS {
            return Err(AhciError::TooManyDrives(drives.len()));
        }
        let mut config = PciConfig::new(PciId {
            vendor: 0x8086,
            device: 0x2922,
            revision: 2,
            class: ClassCode {
                class: 0x01,
                subclass: 0x06,
                prog_if: 0x01,
            },
            subsystem_vendor: 0x1af4,
            subsystem: 0x1100,
        });
        config.set_bar32(ABAR, bar, BAR_SIZE)?;
        let (body, writable) = msix.capability(ABAR as u8, MSIX_TABLE as u32, MSIX_PBA as u32);
        let msix_cap = config.add_capability(MSIX_CAP_ID, &body, &writable)?;
        let msix = Arc::new(Mutex::new(msix));
        let kick = EventFd::new(libc::EFD_NONBLOCK).map_err(AhciError::EventFd)?;
        let stop = EventFd::new(libc::EFD_NONBLOCK).map_err(AhciError::EventFd)?;
        let kinds: Vec<_> = drives.iter().map(Drive::kind).collect();
        let infos: Vec<DriveInfo> = drives
            .iter()
            .enumerate()
            .map(|(port, d)| DriveInfo {
                port,
                kind: d.label(),
                stats: Arc::new(DriveStats::default()),
            })
            .collect();
        let irq = msix.clone();
        let hba = Arc::new(Mutex::new(Hba::new(
            &kinds,
            memory.clone(),
            kick.try_clone().map_err(AhciError::EventFd)?,
            Box::new(move || lock(&irq).trigger(0)),
        )));
        let mut drives: Vec<Option<Drive>> = drives.into_iter().map(Some).collect();
        drives.resize_with(PORTS, || None);
        let worker = Worker {
            hba: hba.clone(),
            drives,
            memory,
            kick,
            stop: stop.try_clone().map_err(AhciError::EventFd)?,
            stats: infos.iter().map(|i| i.stats.clone()).collect(),
        };
        let mut thread = WorkerThread::spawn(sandbox, ThreadKind::BlockQueue, "ahci".into())?;
        thread.start(move || worker.run())?;
        Ok(Self {
            initial: config.clone(),
            config,
            msix_cap,
            msix,
            hba,
            thread,
            stop,
            drives: infos,
        })
    }

    /// Its devices and their counters.
    pub fn drives(&self) -> Vec<DriveInfo> {
        self.drives.clone()
    }
}

impl PciFunction for Ahci {
    fn config_read(&mut self, reg: usize) -> u32 {
        self.config.read(reg)
    }

    fn config_write(&mut self, reg: usize, offset: usize, data: &[u8]) {
        self.config.write(reg, offset, data);
        lock(&self.msix).sync_control(&self.config, self.msix_cap);
    }

    fn mmio_read(&mut self, addr: u64, data: &mut [u8]) -> bool {
        let Some(off) = register_bar::offset(&self.config, ABAR, addr, data.len()) else {
            return false;
        };
        register_bar::read(&self.hba, &self.msix, off, data);
        true
    }

    fn mmio_write(&mut self, addr: u64, data: &[u8]) -> bool {
        let Some(off) = register_bar::offset(&self.config, ABAR, addr, data.len()) else {
            return false;
        };
        register_bar::write(&self.hba, &self.msix, off, data);
        true
    }

    fn reset(&mut self) {
        self.config = self.initial.clone();
        lock(&self.msix).reset();
        lock(&self.hba).reset();
    }
}

impl Drop for Ahci {
    fn drop(&mut self) {
        let _ = self.stop.write(1);
        self.thread.wait();
    }
}

#[cfg(test)]
mod tests;
