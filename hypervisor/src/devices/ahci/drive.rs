//! What sits on a port: a SATA disk or a DVD-ROM drive, with its medium, and the step a
//! command comes to (the data to move, the registers to end with) that the worker carries out.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tessera_storage::{Disk, StorageError};

use super::ata::{self, AtaDisk};
use super::atapi::Cdrom;
use super::fis::{error, Registers, TaskFile};
use crate::devices::virtio::block::request::BlockBackend;

/// The data a command moves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transfer {
    /// None.
    None,
    /// These bytes to the host.
    In(Vec<u8>),
    /// `len` bytes of the medium at `offset` to the host.
    Read {
        /// Byte offset in the medium.
        offset: u64,
        /// Bytes.
        len: u64,
    },
    /// `len` bytes from the host to the medium at `offset`, then to stable storage if `flush`.
    Write {
        /// Byte offset in the medium.
        offset: u64,
        /// Bytes.
        len: u64,
        /// Forced unit access, or the write cache is off.
        flush: bool,
    },
    /// Up to `len` bytes from the host, taken and dropped (MODE SELECT).
    Out(u64),
    /// The medium's cache to stable storage.
    Flush,
}

/// What a command comes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The data to move.
    pub transfer: Transfer,
    /// The registers it ends with when the data moved (or at once, without data).
    pub done: Registers,
    /// A PIO data-in command: its ending status goes in a PIO Setup FIS.
    pub pio: bool,
}

impl Step {
    /// `transfer`, then `done`.
    pub fn new(transfer: Transfer, done: Registers) -> Self {
        Self {
            transfer,
            done,
            pio: false,
        }
    }

    /// No data; `done` at once.
    pub fn done(done: Registers) -> Self {
        Self::new(Transfer::None, done)
    }

    /// `data` to the host.
    pub fn data_in(data: Vec<u8>, pio: bool, done: Registers) -> Self {
        Self {
            pio,
            ..Self::new(Transfer::In(data), done)
        }
    }
}

/// What a drive has done, for `/metrics`: counted by the I/O thread, read by the API.
#[derive(Debug, Default)]
pub struct DriveStats {
    /// Commands run.
    pub commands: AtomicU64,
    /// Commands that ended in an error (the device's, or a host bus error).
    pub errors: AtomicU64,
    /// Bytes moved to the host (medium reads and command replies).
    pub read_bytes: AtomicU64,
    /// Bytes written to the medium.
    pub written_bytes: AtomicU64,
}

impl DriveStats {
    /// Counts a command that ended (in an error if `failed`).
    pub fn command(&self, failed: bool) {
        self.commands.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts bytes moved to the host.
    pub fn read(&self, bytes: u64) {
        self.read_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts bytes written to the medium.
    pub fn wrote(&self, bytes: u64) {
        self.written_bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// A port's device as `/metrics` names it.
#[derive(Debug, Clone)]
pub struct DriveInfo {
    /// AHCI port.
    pub port: usize,
    /// `disk` or `dvd`.
    pub kind: &'static str,
    /// Its counters.
    pub stats: Arc<DriveStats>,
}

/// A port's device.
pub enum Drive {
    /// A SATA disk on an image, shared with the VMM (which flushes it at the end).
    Disk {
        /// Identity and settings.
        ata: AtaDisk,
        /// The image.
        backend: Arc<BlockBackend>,
    },
    /// A DVD-ROM drive, with its disc's image when there is one.
    Cdrom {
        /// The drive.
        drive: Cdrom,
        /// The disc.
        disc: Option<Disk>,
    },
}

/// Whether a port's device is a packet device: what the HBA puts in its signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriveKind {
    /// An ATA disk.
    Ata,
    /// An ATAPI device.
    Atapi,
}

impl DriveKind {
    /// The registers a device reports after a reset: its signature (ATA8-ACS 9.12), which is
    /// how the host tells a disk from a packet device.
    pub fn signature(self) -> Registers {
        match self {
            Self::Ata => Registers {
                status: ata::READY,
                error: 1,
                count: 1,
                lba: 1,
                device: 0,
            },
            Self::Atapi => Registers {
                status: 0,
                error: 1,
                count: 1,
                // The LBA registers' 0x01, 0x14, 0xEB.
                lba: 0xeb_1401,
                device: 0,
            },
        }
    }
}

impl Drive {
    /// A disk over `backend`; `serial` is what IDENTIFY reports.
    pub fn disk(backend: Arc<BlockBackend>, serial: &str) -> Self {
        let size = backend.image().size();
        Self::Disk {
            ata: AtaDisk::new(size, serial, backend.read_only),
            backend,
        }
    }

    /// A DVD-ROM drive holding `disc` (None: empty).
    pub fn cdrom(disc: Option<Disk>, serial: &str) -> Self {
        Self::Cdrom {
            drive: Cdrom::new(disc.as_ref().map(Disk::size), serial),
            disc,
        }
    }

    /// `/metrics`' name for its kind.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Disk { .. } => "disk",
            Self::Cdrom { .. } => "dvd",
        }
    }

    /// Its kind.
    pub fn kind(&self) -> DriveKind {
        match self {
            Self::Disk { .. } => DriveKind::Ata,
            Self::Cdrom { .. } => DriveKind::Atapi,
        }
    }

    /// Back to power-on settings.
    pub fn reset(&mut self) {
        match self {
            Self::Disk { ata, .. } => ata.reset(),
            Self::Cdrom { drive, .. } => drive.reset(),
        }
    }

    /// Decides what `tf` (and, for a packet device, `packet`) does.
    pub fn command(&mut self, tf: &TaskFile, packet: &[u8; 16]) -> Step {
        match self {
            Self::Disk { ata, .. } => ata.command(tf),
            Self::Cdrom { drive, .. } => drive.command(tf, packet),
        }
    }

    /// The registers of a command whose medium access failed.
    pub fn io_failed(&mut self, write: bool) -> Registers {
        match self {
            Self::Disk { .. } => ata::failed(if write { error::ABRT } else { error::UNC }),
            Self::Cdrom { drive, .. } => drive.read_failed(),
        }
    }

    /// Reads `buf.len()` bytes of the medium at `offset`.
    pub fn read(&self, buf: &mut [u8], offset: u64) -> Result<(), StorageError> {
        match self {
            Self::Disk { backend, .. } => backend.image().read(buf, offset),
            Self::Cdrom { disc: Some(d), .. } => d.read(buf, offset),
            // The drive refuses reads without a disc before they get here.
            Self::Cdrom { disc: None, .. } => {
                Err(StorageError::Invalid("no disc in the drive".into()))
            }
        }
    }

    /// Writes `buf` to the medium at `offset`.
    pub fn write(&self, buf: &[u8], offset: u64) -> Result<(), StorageError> {
        match self {
            Self::Disk { backend, .. } => backend.image().write(buf, offset),
            Self::Cdrom { .. } => Err(StorageError::Invalid("a DVD-ROM is read-only".into())),
        }
    }

    /// The medium's writes to stable storage.
    pub fn flush(&self) -> Result<(), StorageError> {
        match self {
            Self::Disk { backend, .. } if !backend.read_only => backend.image().flush(),
            _ => Ok(()),
        }
    }
}
