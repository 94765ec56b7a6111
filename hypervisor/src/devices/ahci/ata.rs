//! A SATA disk's ATA command set (ACS-3): IDENTIFY DEVICE, reads and writes in their 28- and
//! 48-bit, PIO and DMA forms (one data path under AHCI), FLUSH CACHE, SET FEATURES and the
//! power-management commands an operating system sends. NCQ, TRIM, SMART, security and the
//! host protected area are not offered (IDENTIFY says so), and their commands are aborted.
//!
//! This module decides what a command does; [`super::worker`] moves the data.

use super::drive::{Step, Transfer};
use super::fis::{error, status, Registers, TaskFile};

/// Bytes per logical sector.
pub const SECTOR: u64 = 512;
/// Sectors per READ/WRITE MULTIPLE block the disk offers.
const MAX_MULTIPLE: u16 = 16;

/// The ready status every successful command ends with.
pub const READY: u8 = status::DRDY | status::DSC;

/// ATA command codes (the disk's, and those a packet device shares with it).
pub(super) mod cmd {
    pub const DEVICE_RESET: u8 = 0x08;
    pub const PACKET: u8 = 0xa0;
    pub const IDENTIFY_PACKET: u8 = 0xa1;
    pub const READ_SECTORS: u8 = 0x20;
    pub const READ_SECTORS_NR: u8 = 0x21;
    pub const READ_SECTORS_EXT: u8 = 0x24;
    pub const READ_DMA_EXT: u8 = 0x25;
    pub const READ_MULTIPLE_EXT: u8 = 0x29;
    pub const WRITE_SECTORS: u8 = 0x30;
    pub const WRITE_SECTORS_NR: u8 = 0x31;
    pub const WRITE_SECTORS_EXT: u8 = 0x34;
    pub const WRITE_DMA_EXT: u8 = 0x35;
    pub const WRITE_MULTIPLE_EXT: u8 = 0x39;
    pub const WRITE_DMA_FUA_EXT: u8 = 0x3d;
    pub const READ_VERIFY: u8 = 0x40;
    pub const READ_VERIFY_NR: u8 = 0x41;
    pub const READ_VERIFY_EXT: u8 = 0x42;
    pub const SEEK: u8 = 0x70;
    pub const EXECUTE_DIAGNOSTIC: u8 = 0x90;
    pub const INITIALIZE_PARAMETERS: u8 = 0x91;
    pub const READ_MULTIPLE: u8 = 0xc4;
    pub const WRITE_MULTIPLE: u8 = 0xc5;
    pub const SET_MULTIPLE: u8 = 0xc6;
    pub const READ_DMA: u8 = 0xc8;
    pub const READ_DMA_NR: u8 = 0xc9;
    pub const WRITE_DMA: u8 = 0xca;
    pub const WRITE_DMA_NR: u8 = 0xcb;
    pub const WRITE_MULTIPLE_FUA_EXT: u8 = 0xce;
    pub const STANDBY_IMMEDIATE: u8 = 0xe0;
    pub const IDLE_IMMEDIATE: u8 = 0xe1;
    pub const STANDBY: u8 = 0xe2;
    pub const IDLE: u8 = 0xe3;
    pub const CHECK_POWER_MODE: u8 = 0xe5;
    pub const SLEEP: u8 = 0xe6;
    pub const FLUSH_CACHE: u8 = 0xe7;
    pub const FLUSH_CACHE_EXT: u8 = 0xea;
    pub const IDENTIFY: u8 = 0xec;
    pub const SET_FEATURES: u8 = 0xef;
}

/// SET FEATURES subcommands the disk accepts.
mod feature {
    pub const ENABLE_WRITE_CACHE: u8 = 0x02;
    pub const TRANSFER_MODE: u8 = 0x03;
    pub const DISABLE_READ_LOOK_AHEAD: u8 = 0x55;
    pub const DISABLE_WRITE_CACHE: u8 = 0x82;
    pub const ENABLE_READ_LOOK_AHEAD: u8 = 0xaa;
    /// Enable/disable a SATA feature (the count register names it); accepted and ignored:
    /// none of them means anything to a virtual link.
    pub const ENABLE_SATA_FEATURE: u8 = 0x10;
    pub const DISABLE_SATA_FEATURE: u8 = 0x90;
}

/// Places `s` in IDENTIFY words `words` as ATA strings are: space-padded, two characters a
/// word, the first in the high byte.
pub fn put_string(id: &mut [u16; 256], words: std::ops::Range<usize>, s: &str) {
    let mut bytes = s.bytes().filter(|b| b.is_ascii_graphic() || *b == b' ');
    for w in words {
        let hi = bytes.next().unwrap_or(b' ');
        let lo = bytes.next().unwrap_or(b' ');
        id[w] = u16::from(hi) << 8 | u16::from(lo);
    }
}

/// The IDENTIFY data as bytes, with word 255's checksum (signature 0xA5, then the byte that
/// makes all 512 sum to zero).
pub fn identify_bytes(mut id: [u16; 256]) -> Vec<u8> {
    id[255] = 0x00a5;
    let sum = id[..255]
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .fold(0xa5u8, |a, b| a.wrapping_add(b));
    id[255] |= u16::from(sum.wrapping_neg()) << 8;
    id.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// A command's ending registers with ERR and `error`.
pub fn failed(error: u8) -> Registers {
    Registers {
        status: READY | status::ERR,
        error,
        ..Registers::default()
    }
}

fn ok() -> Registers {
    Registers {
        status: READY,
        ..Registers::default()
    }
}

/// A disk's identity and the settings the host may change.
#[derive(Debug, Clone)]
pub struct AtaDisk {
    sectors: u64,
    serial: String,
    model: String,
    read_only: bool,
    write_cache: bool,
    look_ahead: bool,
    multiple: u16,
    /// SET FEATURES' transfer mode: the UDMA mode chosen (as IDENTIFY word 88 reports it).
    udma_mode: u8,
}

impl AtaDisk {
    /// A disk of `size` bytes (whole sectors are offered).
    pub fn new(size: u64, serial: &str, read_only: bool) -> Self {
        Self {
            sectors: size / SECTOR,
            serial: serial.to_string(),
            // 16 characters: what SCSI INQUIRY (Linux's sd) shows of it.
            model: "Tessera SATA SSD".to_string(),
            read_only,
            write_cache: true,
            look_ahead: true,
            multiple: MAX_MULTIPLE,
            udma_mode: 5,
        }
    }

    /// Back to power-on settings (a COMRESET, a soft reset, the machine's reset).
    pub fn reset(&mut self) {
        self.write_cache = true;
        self.look_ahead = true;
        self.multiple = MAX_MULTIPLE;
        self.udma_mode = 5;
    }

    /// IDENTIFY DEVICE.
    pub fn identify(&self) -> Vec<u8> {
        let mut id = [0u16; 256];
        // Fixed, non-removable ATA device.
        id[0] = 0x0040;
        // The legacy geometry: 16 heads, 63 sectors a track, as many cylinders as fit.
        let cyl = (self.sectors / (16 * 63)).clamp(1, 16383) as u16;
        id[1] = cyl;
        id[3] = 16;
        id[6] = 63;
        put_string(&mut id, 10..20, &self.serial);
        put_string(&mut id, 23..27, env!("CARGO_PKG_VERSION"));
        put_string(&mut id, 27..47, &self.model);
        id[47] = 0x8000 | MAX_MULTIPLE;
        // LBA and DMA.
        id[49] = 0x0300;
        id[50] = 0x4000;
        // Words 54-58, 64-70 and 88 are valid.
        id[53] = 0x0007;
        id[54] = cyl;
        id[55] = 16;
        id[56] = 63;
        let chs = u32::from(cyl) * 16 * 63;
        id[57] = chs as u16;
        id[58] = (chs >> 16) as u16;
        id[59] = 0x0100 | self.multiple;
        let lba28 = self.sectors.min(0x0fff_ffff) as u32;
        id[60] = lba28 as u16;
        id[61] = (lba28 >> 16) as u16;
        // Multiword DMA 0-2 supported; PIO 3-4; cycle times.
        id[63] = 0x0007;
        id[64] = 0x0003;
        id[65..69].fill(120);
        // Serial ATA: Gen1 and Gen2 signalling.
        id[76] = 0x0006;
        // ACS-2 and earlier.
        id[80] = 0x03f0;
        // Supported: power management, write cache, look-ahead (82); FLUSH CACHE (EXT),
        // 48-bit addresses (83); 84 valid.
        id[82] = 0x4068;
        id[83] = 0x7400;
        id[84] = 0x4000;
        id[85] = 0x0008
            | if self.write_cache { 0x0020 } else { 0 }
            | if self.look_ahead { 0x0040 } else { 0 };
        id[86] = 0x3400;
        id[87] = 0x4000;
        // UDMA 0-6 supported, the chosen one selected.
        id[88] = 0x007f | (1u16 << (self.udma_mode.min(6) + 8));
        let lba48 = self.sectors.to_le_bytes();
        for i in 0..4 {
            id[100 + i] = u16::from_le_bytes([lba48[2 * i], lba48[2 * i + 1]]);
        }
        // One logical sector per physical sector; word valid.
        id[106] = 0x4000;
        // Not rotating: guests skip what they do for spinning disks (defragmentation).
        id[217] = 0x0001;
        identify_bytes(id)
    }

    /// Carries out `tf`.
    pub fn command(&mut self, tf: &TaskFile) -> Step {
        use cmd::*;
        let c = tf.command;
        match c {
            READ_DMA | READ_DMA_NR | READ_SECTORS | READ_SECTORS_NR | READ_MULTIPLE => {
                self.rw(tf.lba28(), count28(tf), false, false, pio(c))
            }
            READ_DMA_EXT | READ_SECTORS_EXT | READ_MULTIPLE_EXT => {
                self.rw(tf.lba, count48(tf), false, false, pio(c))
            }
            WRITE_DMA | WRITE_DMA_NR | WRITE_SECTORS | WRITE_SECTORS_NR | WRITE_MULTIPLE => {
                self.rw(tf.lba28(), count28(tf), true, false, false)
            }
            WRITE_DMA_EXT | WRITE_SECTORS_EXT | WRITE_MULTIPLE_EXT => {
                self.rw(tf.lba, count48(tf), true, false, false)
            }
            WRITE_DMA_FUA_EXT | WRITE_MULTIPLE_FUA_EXT => {
                self.rw(tf.lba, count48(tf), true, true, false)
            }
            READ_VERIFY | READ_VERIFY_NR => self.verify(tf.lba28(), count28(tf)),
            READ_VERIFY_EXT => self.verify(tf.lba, count48(tf)),
            FLUSH_CACHE | FLUSH_CACHE_EXT => Step::new(Transfer::Flush, ok()),
            IDENTIFY => Step::data_in(self.identify(), true, ok()),
            SET_FEATURES => self.set_features(tf),
            SET_MULTIPLE => {
                let n = tf.count & 0xff;
                if n == 0 || (n <= MAX_MULTIPLE && n.is_power_of_two()) {
                    self.multiple = n;
                    Step::done(ok())
                } else {
                    Step::done(failed(error::ABRT))
                }
            }
            CHECK_POWER_MODE => Step::done(Registers {
                // Active or idle.
                count: 0xff,
                ..ok()
            }),
            SEEK
            | INITIALIZE_PARAMETERS
            | STANDBY_IMMEDIATE
            | IDLE_IMMEDIATE
            | STANDBY
            | IDLE
            | SLEEP => Step::done(ok()),
            EXECUTE_DIAGNOSTIC => Step::done(Registers {
                // "No error detected", and the ATA signature.
                error: 0x01,
                count: 1,
                lba: 1,
                ..ok()
            }),
            _ => Step::done(failed(error::ABRT)),
        }
    }

    fn range(&self, lba: u64, count: u64) -> Option<(u64, u64)> {
        let end = lba.checked_add(count)?;
        (end <= self.sectors).then_some((lba * SECTOR, count * SECTOR))
    }

    fn rw(&self, lba: u64, count: u64, write: bool, fua: bool, pio: bool) -> Step {
        let Some((offset, len)) = self.range(lba, count) else {
            return Step::done(failed(error::IDNF | error::ABRT));
        };
        if write {
            if self.read_only {
                return Step::done(failed(error::ABRT));
            }
            let flush = fua || !self.write_cache;
            Step::new(Transfer::Write { offset, len, flush }, ok())
        } else {
            Step {
                pio,
                ..Step::new(Transfer::Read { offset, len }, ok())
            }
        }
    }

    fn verify(&self, lba: u64, count: u64) -> Step {
        match self.range(lba, count) {
            Some(_) => Step::done(ok()),
            None => Step::done(failed(error::IDNF | error::ABRT)),
        }
    }

    fn set_features(&mut self, tf: &TaskFile) -> Step {
        match tf.features as u8 {
            feature::ENABLE_WRITE_CACHE => self.write_cache = true,
            feature::DISABLE_WRITE_CACHE => self.write_cache = false,
            feature::ENABLE_READ_LOOK_AHEAD => self.look_ahead = true,
            feature::DISABLE_READ_LOOK_AHEAD => self.look_ahead = false,
            feature::TRANSFER_MODE => {
                let mode = tf.count as u8;
                match mode >> 3 {
                    // PIO default/flow control, multiword DMA: accepted, UDMA stays as is.
                    0 | 1 | 4 => {}
                    8 if mode & 7 <= 6 => self.udma_mode = mode & 7,
                    _ => return Step::done(failed(error::ABRT)),
                }
            }
            feature::ENABLE_SATA_FEATURE | feature::DISABLE_SATA_FEATURE => {}
            _ => return Step::done(failed(error::ABRT)),
        }
        Step::done(ok())
    }
}

/// Data-in commands that use PIO (the ending status goes in the PIO Setup FIS).
fn pio(command: u8) -> bool {
    matches!(
        command,
        cmd::READ_SECTORS
            | cmd::READ_SECTORS_NR
            | cmd::READ_SECTORS_EXT
            | cmd::READ_MULTIPLE
            | cmd::READ_MULTIPLE_EXT
    )
}

/// A 28-bit command's sector count: 0 means 256.
fn count28(tf: &TaskFile) -> u64 {
    match tf.count & 0xff {
        0 => 256,
        n => u64::from(n),
    }
}

/// A 48-bit command's sector count: 0 means 65536.
fn count48(tf: &TaskFile) -> u64 {
    match tf.count {
        0 => 65536,
        n => u64::from(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tf(command: u8, lba: u64, count: u16) -> TaskFile {
        TaskFile {
            is_command: true,
            command,
            lba,
            count,
            device: 0x40,
            ..TaskFile::default()
        }
    }

    #[test]
    fn identify_describes_the_disk_and_checks_out() {
        let d = AtaDisk::new(200 << 30, "TS-0001", false);
        let id = d.identify();
        assert_eq!(id.len(), 512);
        assert_eq!(
            id.iter().fold(0u8, |a, b| a.wrapping_add(*b)),
            0,
            "checksum"
        );
        assert_eq!(id[510], 0xa5);
        let word = |w: usize| u16::from_le_bytes([id[2 * w], id[2 * w + 1]]);
        assert_eq!(&id[20..28], b"ST0-00 1", "byte-swapped words");
        assert_eq!(word(83) & (1 << 10), 1 << 10, "48-bit");
        let lba48 = (0..4).fold(0u64, |a, i| a | u64::from(word(100 + i)) << (16 * i));
        assert_eq!(lba48, (200 << 30) / 512);
        assert_eq!(u32::from(word(60)) | u32::from(word(61)) << 16, 0x0fff_ffff);
        assert_eq!(word(76) & (1 << 8), 0, "no NCQ offered");
    }

    #[test]
    fn reads_and_writes_are_bounded_by_the_disk() {
        let mut d = AtaDisk::new(1 << 20, "s", false);
        let s = d.command(&tf(cmd::READ_DMA_EXT, 2040, 8));
        assert_eq!(
            s.transfer,
            Transfer::Read {
                offset: 2040 * 512,
                len: 4096
            }
        );
        assert!(!s.pio);
        let s = d.command(&tf(cmd::READ_DMA_EXT, 2041, 8));
        assert_eq!(
            (s.transfer, s.done.status & status::ERR),
            (Transfer::None, status::ERR)
        );
        let s = d.command(&tf(cmd::READ_DMA_EXT, u64::MAX, 1));
        assert_eq!(s.done.error, error::IDNF | error::ABRT);
        // 28-bit: LBA bits 27:24 in the device register, count 0 is 256 sectors.
        let mut t = tf(cmd::READ_SECTORS, 0, 0);
        t.device = 0x40;
        let s = d.command(&t);
        assert_eq!(
            s.transfer,
            Transfer::Read {
                offset: 0,
                len: 256 * 512
            }
        );
        assert!(s.pio);
        let s = d.command(&tf(cmd::WRITE_DMA_FUA_EXT, 0, 1));
        assert_eq!(
            s.transfer,
            Transfer::Write {
                offset: 0,
                len: 512,
                flush: true
            }
        );
        let s = d.command(&tf(cmd::WRITE_DMA_EXT, 0, 1));
        assert_eq!(
            s.transfer,
            Transfer::Write {
                offset: 0,
                len: 512,
                flush: false
            }
        );
        // Write cache off: every write reaches the medium.
        let mut sf = tf(cmd::SET_FEATURES, 0, 0);
        sf.features = u16::from(feature::DISABLE_WRITE_CACHE);
        assert_eq!(d.command(&sf).done.status, READY);
        let s = d.command(&tf(cmd::WRITE_DMA_EXT, 0, 1));
        assert_eq!(
            s.transfer,
            Transfer::Write {
                offset: 0,
                len: 512,
                flush: true
            }
        );
        d.reset();
        let mut ro = AtaDisk::new(1 << 20, "s", true);
        assert_eq!(
            ro.command(&tf(cmd::WRITE_DMA, 0, 1)).done.error,
            error::ABRT
        );
    }

    #[test]
    fn unknown_and_unoffered_commands_abort() {
        let mut d = AtaDisk::new(1 << 20, "s", false);
        for c in [0x00, 0x06, 0x2f, 0xa0, 0xa1, 0xb0, 0xf5, 0xf8, 0xff] {
            let s = d.command(&tf(c, 0, 0));
            assert_eq!(
                (s.done.status, s.done.error),
                (READY | status::ERR, error::ABRT),
                "{c:#x}"
            );
        }
        let mut sf = tf(cmd::SET_FEATURES, 0, 0x45);
        sf.features = u16::from(feature::TRANSFER_MODE);
        assert_eq!(d.command(&sf).done.error, 0, "UDMA 5");
        for bad in [0x47, 0x4f, 0xff] {
            sf.count = bad;
            assert_eq!(d.command(&sf).done.error, error::ABRT, "mode {bad:#x}");
        }
        assert_eq!(
            d.command(&tf(cmd::SET_MULTIPLE, 0, 3)).done.error,
            error::ABRT
        );
        assert_eq!(d.command(&tf(cmd::CHECK_POWER_MODE, 0, 0)).done.count, 0xff);
    }
}
