//! The firmware's variable store as a parallel NOR flash speaking Intel's command set (CFI
//! "Intel/Sharp", QEMU's `pflash_cfi01`), the device that UEFI firmware built for QEMU (OVMF)
//! detects and writes its non-volatile variables to. Written by hand: no crate models the
//! device side, and OVMF needs only the handful of commands below.
//!
//! In read-array mode the guest reads the store straight from memory (a read-only KVM slot,
//! no exit); every write exits here. A command that leaves read-array mode (program, erase,
//! read status) unmaps the slot, so the guest's reads exit too and see the status register,
//! until "read array" (0xFF) maps it again. That is what OVMF's flash probe relies on: it
//! writes "clear status" (0x50), then "read status" (0x70), and takes the store for flash
//! only if the read then returns the cleared status (0x00) instead of the stored byte.

use std::time::{Duration, Instant};

use crate::devices::bus::BusDevice;
use crate::rate_limit::{RateLimiter, Verdict};

/// Erase block size: 4 KiB sectors, as QEMU builds OVMF's flash.
pub const SECTOR: usize = 4096;

/// Commands (the first write cycle's low byte).
const CMD_PROGRAM: u8 = 0x10;
const CMD_PROGRAM_ALT: u8 = 0x40;
const CMD_ERASE: u8 = 0x20;
const CMD_CONFIRM: u8 = 0xd0;
const CMD_CLEAR_STATUS: u8 = 0x50;
const CMD_READ_STATUS: u8 = 0x70;
const CMD_READ_ID: u8 = 0x90;
const CMD_READ_ARRAY: u8 = 0xff;
/// Status register: write state machine ready.
const STATUS_READY: u8 = 0x80;
/// Status register: erase failed (a bad command sequence), with "program failed" for a bad
/// confirm: bits 5 and 4, as Intel's parts report a command sequence error.
const STATUS_SEQUENCE_ERROR: u8 = 0x30;

/// What the flash keeps its bytes in, and how the guest's reads reach them.
pub trait FlashStore: Send {
    /// Size in bytes.
    fn len(&self) -> usize;
    /// Whether the store is empty (never, for a real one).
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Copies the bytes at `offset` into `data` (within bounds: the device checks).
    fn read(&self, offset: usize, data: &mut [u8]);
    /// Stores `data` at `offset` (within bounds).
    fn write(&mut self, offset: usize, data: &[u8]);
    /// Guest reads go straight to memory (`true`, read-array mode) or exit to the device.
    fn set_direct_reads(&mut self, on: bool);
    /// What was written reaches stable storage.
    fn flush(&mut self) {}
}

/// The device's mode: what a read returns and what the next write means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Reads return the array.
    ReadArray,
    /// Reads return the status register.
    Status,
    /// The next write is the byte(s) to program.
    ProgramData,
    /// The next write must confirm (0xD0) the erase of the sector it addresses.
    EraseConfirm,
    /// Reads return the identifier codes (manufacturer, device): zeros here.
    Identify,
}

/// The flash and its state.
pub struct Pflash<S: FlashStore> {
    store: S,
    mode: Mode,
    status: u8,
    /// Direct reads as last told to the store.
    direct: bool,
    bad: RateLimiter,
    writes: u64,
}

impl<S: FlashStore> Pflash<S> {
    /// The flash over `store`, in read-array mode.
    pub fn new(mut store: S) -> Self {
        store.set_direct_reads(true);
        Self {
            store,
            mode: Mode::ReadArray,
            status: STATUS_READY,
            direct: true,
            bad: RateLimiter::new(10, Duration::from_secs(5)),
            writes: 0,
        }
    }

    /// What was programmed reaches stable storage (at each reset and at exit).
    pub fn flush(&mut self) {
        self.store.flush();
    }

    /// Bytes programmed since the VM was built.
    pub fn writes(&self) -> u64 {
        self.writes
    }

    fn enter(&mut self, mode: Mode) {
        self.mode = mode;
        let direct = mode == Mode::ReadArray;
        if direct != self.direct {
            self.direct = direct;
            self.store.set_direct_reads(direct);
        }
    }

    fn complain(&mut self, what: &str, offset: u64, value: u8) {
        if let Verdict::Log { suppressed } = self.bad.check(Instant::now()) {
            tracing::warn!(
                device = "firmware flash",
                offset = format_args!("{offset:#x}"),
                value = format_args!("{value:#04x}"),
                suppressed,
                "{what}; ignored"
            );
        }
    }

    /// `[offset, offset + len)` inside the store, as a usize range start.
    fn inside(&self, offset: u64, len: usize) -> Option<usize> {
        let start = usize::try_from(offset).ok()?;
        (start.checked_add(len)? <= self.store.len()).then_some(start)
    }

    fn command(&mut self, offset: u64, cmd: u8) {
        match cmd {
            CMD_PROGRAM | CMD_PROGRAM_ALT => self.enter(Mode::ProgramData),
            CMD_ERASE => self.enter(Mode::EraseConfirm),
            CMD_CLEAR_STATUS => {
                // Clears the error bits and stays in (or returns to) read-array mode, as
                // QEMU's device does; OVMF's probe depends on it.
                self.status = 0;
                self.enter(Mode::ReadArray);
            }
            CMD_READ_STATUS => self.enter(Mode::Status),
            CMD_READ_ID => self.enter(Mode::Identify),
            CMD_READ_ARRAY => self.enter(Mode::ReadArray),
            other => {
                self.complain("unknown flash command", offset, other);
                self.enter(Mode::ReadArray);
            }
        }
    }
}

impl<S: FlashStore> BusDevice for Pflash<S> {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match self.mode {
            Mode::ReadArray => match self.inside(offset, data.len()) {
                Some(at) => self.store.read(at, data),
                None => data.fill(0xff),
            },
            // Every byte lane reads the status, as on a flash array of byte-wide parts.
            Mode::Status | Mode::ProgramData | Mode::EraseConfirm => data.fill(self.status),
            Mode::Identify => data.fill(0),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&value) = data.first() else {
            return;
        };
        match self.mode {
            Mode::ProgramData => {
                match self.inside(offset, data.len()) {
                    Some(at) => {
                        self.store.write(at, data);
                        self.writes += data.len() as u64;
                        self.status |= STATUS_READY;
                    }
                    None => {
                        self.complain("program past the end of the flash", offset, value);
                        self.status |= STATUS_SEQUENCE_ERROR;
                    }
                }
                self.enter(Mode::Status);
            }
            Mode::EraseConfirm => {
                if value == CMD_CONFIRM {
                    let sector = (offset as usize / SECTOR) * SECTOR;
                    match self.inside(sector as u64, SECTOR) {
                        Some(at) => {
                            self.store.write(at, &[0xff; SECTOR]);
                            self.status |= STATUS_READY;
                        }
                        None => self.status |= STATUS_SEQUENCE_ERROR,
                    }
                } else {
                    self.complain("erase without confirmation", offset, value);
                    self.status |= STATUS_SEQUENCE_ERROR;
                }
                self.enter(Mode::Status);
            }
            Mode::ReadArray | Mode::Status | Mode::Identify => self.command(offset, value),
        }
    }

    fn reset(&mut self) {
        self.status = STATUS_READY;
        self.enter(Mode::ReadArray);
    }
}

/// The firmware's code: the guest reads and executes it from a read-only memory slot, and
/// its writes (a buggy or hostile firmware's) exit here and are dropped.
pub struct CodeFlash {
    bad: RateLimiter,
}

impl CodeFlash {
    /// The device.
    pub fn new() -> Self {
        Self {
            bad: RateLimiter::new(10, Duration::from_secs(5)),
        }
    }
}

impl Default for CodeFlash {
    fn default() -> Self {
        Self::new()
    }
}

impl BusDevice for CodeFlash {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        // Reads come from the memory slot; one that exits found it gone.
        data.fill(0xff);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let Verdict::Log { suppressed } = self.bad.check(Instant::now()) {
            tracing::warn!(
                offset = format_args!("{offset:#x}"),
                len = data.len(),
                suppressed,
                "guest write to the firmware's code flash; ignored"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store in a vector that records whether reads are direct.
    struct VecStore {
        bytes: Vec<u8>,
        direct: bool,
    }

    impl FlashStore for VecStore {
        fn len(&self) -> usize {
            self.bytes.len()
        }
        fn read(&self, offset: usize, data: &mut [u8]) {
            data.copy_from_slice(&self.bytes[offset..offset + data.len()]);
        }
        fn write(&mut self, offset: usize, data: &[u8]) {
            self.bytes[offset..offset + data.len()].copy_from_slice(data);
        }
        fn set_direct_reads(&mut self, on: bool) {
            self.direct = on;
        }
    }

    fn flash() -> Pflash<VecStore> {
        Pflash::new(VecStore {
            bytes: vec![0x5a; 4 * SECTOR],
            direct: false,
        })
    }

    fn read1(f: &mut Pflash<VecStore>, at: u64) -> u8 {
        let mut b = [0u8];
        f.read(at, &mut b);
        b[0]
    }

    /// OVMF's `QemuFlashDetected`, step for step: it must conclude "flash".
    #[test]
    fn ovmf_probe_sees_flash() {
        let mut f = flash();
        assert!(f.store.direct);
        let original = read1(&mut f, 0);
        f.write(0, &[CMD_CLEAR_STATUS]);
        // Still read-array: the probe reads back the stored byte, not the command (not RAM).
        assert_eq!(read1(&mut f, 0), original);
        f.write(0, &[CMD_READ_STATUS]);
        assert!(!f.store.direct, "status reads must exit to the device");
        assert_eq!(read1(&mut f, 0), 0x00, "cleared status means flash");
        f.write(0, &[CMD_READ_ARRAY]);
        assert!(f.store.direct);
        assert_eq!(read1(&mut f, 0), original);
    }

    #[test]
    fn program_and_erase_as_ovmf_does() {
        let mut f = flash();
        for (i, b) in b"VARS".iter().enumerate() {
            f.write(100 + i as u64, &[CMD_PROGRAM]);
            assert!(!f.store.direct);
            f.write(100 + i as u64, &[*b]);
        }
        assert_eq!(read1(&mut f, 100), STATUS_READY);
        f.write(0, &[CMD_READ_ARRAY]);
        assert_eq!(&f.store.bytes[100..104], b"VARS");
        assert_eq!(f.writes(), 4);
        f.write(SECTOR as u64 + 7, &[CMD_ERASE]);
        f.write(SECTOR as u64 + 7, &[CMD_CONFIRM]);
        f.write(0, &[CMD_READ_ARRAY]);
        assert!(f.store.bytes[SECTOR..2 * SECTOR].iter().all(|b| *b == 0xff));
        assert_eq!(f.store.bytes[SECTOR - 1], 0x5a);
        assert_eq!(f.store.bytes[2 * SECTOR], 0x5a);
    }

    #[test]
    fn bad_sequences_are_errors_not_damage() {
        let mut f = flash();
        // An erase that is not confirmed erases nothing and sets the error bits.
        f.write(0, &[CMD_ERASE]);
        f.write(0, &[0x00]);
        assert_eq!(
            read1(&mut f, 0) & STATUS_SEQUENCE_ERROR,
            STATUS_SEQUENCE_ERROR
        );
        f.write(0, &[CMD_READ_ARRAY]);
        assert!(f.store.bytes.iter().all(|b| *b == 0x5a));
        // Unknown commands, writes and reads past the end, empty accesses.
        f.write(3, &[0xe8]);
        f.write(u64::MAX, &[CMD_PROGRAM]);
        f.write(u64::MAX, &[1, 2, 3, 4]);
        f.write((4 * SECTOR - 2) as u64, &[CMD_PROGRAM]);
        f.write((4 * SECTOR - 2) as u64, &[1, 2, 3, 4]);
        f.write(0, &[]);
        f.write(0, &[CMD_READ_ARRAY]);
        assert_eq!(read1(&mut f, u64::MAX), 0xff);
        assert!(f.store.bytes.iter().all(|b| *b == 0x5a));
        // A reset returns to read-array mode with direct reads.
        f.write(0, &[CMD_READ_STATUS]);
        f.reset();
        assert!(f.store.direct);
        assert_eq!(read1(&mut f, 0), 0x5a);
    }
}
