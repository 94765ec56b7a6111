//! A DVD-ROM drive on the ATA packet interface: the ATA commands a packet device answers
//! (IDENTIFY PACKET DEVICE, DEVICE RESET, PACKET) and the SCSI multimedia commands (MMC-6) that
//! Windows' cdrom.sys, Linux's sr and firmware send through PACKET, over an ISO 9660 image or
//! an empty drive.
//!
//! The medium is a file the operator chose, read-only. The guest can open the tray (START STOP
//! UNIT with LoEj) unless it locked it (PREVENT ALLOW MEDIUM REMOVAL); closing it puts the same
//! disc back, reported as a new medium (a unit attention and a media event), as a drive does.
//! Every command a drive may refuse gets the sense a drive gives: no medium, an address past
//! its end, an unknown operation code, a field the drive does not support.

use super::ata::{self, cmd, identify_bytes, put_string};
use super::drive::{DriveKind, Step, Transfer};
use super::fis::{error, status, Registers, TaskFile};

/// Bytes per block of a CD or DVD's data track.
pub const BLOCK: u64 = 2048;
/// Blocks above which a disc is a DVD (a CD holds at most about 80 minutes: 360,000 blocks).
const CD_MAX_BLOCKS: u64 = 360_000;

/// SCSI operation codes.
mod op {
    pub const TEST_UNIT_READY: u8 = 0x00;
    pub const REQUEST_SENSE: u8 = 0x03;
    pub const INQUIRY: u8 = 0x12;
    pub const START_STOP_UNIT: u8 = 0x1b;
    pub const PREVENT_ALLOW: u8 = 0x1e;
    pub const READ_CAPACITY: u8 = 0x25;
    pub const READ_10: u8 = 0x28;
    pub const SEEK_10: u8 = 0x2b;
    pub const SYNCHRONIZE_CACHE: u8 = 0x35;
    pub const READ_TOC: u8 = 0x43;
    pub const GET_CONFIGURATION: u8 = 0x46;
    pub const GET_EVENT_STATUS: u8 = 0x4a;
    pub const READ_DISC_INFORMATION: u8 = 0x51;
    pub const READ_TRACK_INFORMATION: u8 = 0x52;
    pub const MODE_SELECT_10: u8 = 0x55;
    pub const MODE_SENSE_10: u8 = 0x5a;
    pub const READ_12: u8 = 0xa8;
    pub const READ_DVD_STRUCTURE: u8 = 0xad;
    pub const SET_CD_SPEED: u8 = 0xbb;
    pub const MECHANISM_STATUS: u8 = 0xbd;
    pub const READ_CD: u8 = 0xbe;
}

/// Sense data: key, additional sense code and qualifier.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sense {
    /// Sense key.
    pub key: u8,
    /// Additional sense code.
    pub asc: u8,
    /// Its qualifier.
    pub ascq: u8,
}

const fn sense(key: u8, asc: u8, ascq: u8) -> Sense {
    Sense { key, asc, ascq }
}

/// The senses this drive reports.
pub mod senses {
    use super::{sense, Sense};
    /// NOT READY, medium not present, tray closed.
    pub const NO_MEDIUM_CLOSED: Sense = sense(0x02, 0x3a, 0x01);
    /// NOT READY, medium not present, tray open.
    pub const NO_MEDIUM_OPEN: Sense = sense(0x02, 0x3a, 0x02);
    /// MEDIUM ERROR, unrecovered read error.
    pub const READ_ERROR: Sense = sense(0x03, 0x11, 0x00);
    /// ILLEGAL REQUEST, invalid command operation code.
    pub const INVALID_OPCODE: Sense = sense(0x05, 0x20, 0x00);
    /// ILLEGAL REQUEST, logical block address out of range.
    pub const LBA_OUT_OF_RANGE: Sense = sense(0x05, 0x21, 0x00);
    /// ILLEGAL REQUEST, invalid field in CDB.
    pub const INVALID_FIELD: Sense = sense(0x05, 0x24, 0x00);
    /// ILLEGAL REQUEST, incompatible medium (a DVD structure of a CD).
    pub const INCOMPATIBLE_MEDIUM: Sense = sense(0x05, 0x30, 0x02);
    /// ILLEGAL REQUEST, saving parameters not supported.
    pub const SAVING_NOT_SUPPORTED: Sense = sense(0x05, 0x39, 0x00);
    /// ILLEGAL REQUEST, medium removal prevented.
    pub const REMOVAL_PREVENTED: Sense = sense(0x05, 0x53, 0x02);
    /// UNIT ATTENTION, not ready to ready change, medium may have changed.
    pub const MEDIUM_CHANGED: Sense = sense(0x06, 0x28, 0x00);
}

/// Media event codes of GET EVENT STATUS NOTIFICATION.
const EVENT_NEW_MEDIA: u8 = 2;
const EVENT_MEDIA_REMOVAL: u8 = 3;

/// The registers of a packet command that ended well (interrupt reason: I/O and C/D).
fn good() -> Registers {
    Registers {
        status: ata::READY,
        count: 3,
        ..Registers::default()
    }
}

/// A packet device's signature in the registers (ATA8-ACS 9.12).
fn signature(status: u8, error: u8) -> Registers {
    Registers {
        status,
        error,
        ..DriveKind::Atapi.signature()
    }
}

fn be16(b: &[u8]) -> u64 {
    u64::from(u16::from_be_bytes([b[0], b[1]]))
}

fn be32(b: &[u8]) -> u64 {
    u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// An address as READ TOC gives it: a logical block, or minutes/seconds/frames with the
/// 2-second lead-in.
fn address(lba: u64, msf: bool) -> [u8; 4] {
    if msf {
        let f = lba + 150;
        [
            0,
            (f / 4500).min(255) as u8,
            (f / 75 % 60) as u8,
            (f % 75) as u8,
        ]
    } else {
        u32_of(lba).to_be_bytes()
    }
}

/// A 32-bit field's value: images past 8 TiB read as 8 TiB there.
fn u32_of(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// A reply of `data`, cut to what the host allocated.
fn data(mut d: Vec<u8>, alloc: u64) -> Result<Transfer, Sense> {
    d.truncate(usize::try_from(alloc).unwrap_or(usize::MAX));
    Ok(if d.is_empty() {
        Transfer::None
    } else {
        Transfer::In(d)
    })
}

/// The drive.
pub struct Cdrom {
    /// The disc's blocks, when there is a disc (whatever the tray).
    disc_blocks: Option<u64>,
    serial: String,
    tray_open: bool,
    locked: bool,
    /// The sense of the last command that failed, for REQUEST SENSE.
    sense: Sense,
    /// A medium came in since the host last heard.
    unit_attention: bool,
    /// A media event not yet reported.
    media_event: u8,
}

impl Cdrom {
    /// A drive holding a disc of `size` bytes (None: empty).
    pub fn new(size: Option<u64>, serial: &str) -> Self {
        Self {
            disc_blocks: size.map(|s| s / BLOCK),
            serial: serial.chars().take(20).collect(),
            tray_open: false,
            locked: false,
            sense: Sense::default(),
            unit_attention: false,
            media_event: 0,
        }
    }

    /// Back to power-on: tray closed and unlocked, nothing pending.
    pub fn reset(&mut self) {
        self.tray_open = false;
        self.locked = false;
        self.sense = Sense::default();
        self.unit_attention = false;
        self.media_event = 0;
    }

    /// Blocks of the disc the drive can read now.
    fn blocks(&self) -> Option<u64> {
        self.disc_blocks.filter(|_| !self.tray_open)
    }

    fn is_dvd(&self) -> bool {
        self.blocks().is_some_and(|b| b > CD_MAX_BLOCKS)
    }

    /// A failed read of the medium (the image could not be read).
    pub fn read_failed(&mut self) -> Registers {
        self.check(senses::READ_ERROR)
    }

    fn check(&mut self, s: Sense) -> Registers {
        self.sense = s;
        Registers {
            status: status::DRDY | status::ERR,
            error: s.key << 4,
            count: 3,
            ..Registers::default()
        }
    }

    /// IDENTIFY PACKET DEVICE.
    pub fn identify(&self) -> Vec<u8> {
        let mut id = [0u16; 256];
        // ATAPI, CD-ROM class device, removable, DRQ within 50 us, 12-byte packets.
        id[0] = 0x85c0;
        put_string(&mut id, 10..20, &self.serial);
        put_string(&mut id, 23..27, env!("CARGO_PKG_VERSION"));
        put_string(&mut id, 27..47, "Tessera DVD-ROM");
        // DMA and LBA; words 64-70 and 88 valid.
        id[49] = 0x0300;
        id[53] = 0x0006;
        id[63] = 0x0007;
        id[64] = 0x0003;
        id[65..69].fill(120);
        id[76] = 0x0006;
        id[80] = 0x00f0;
        // PACKET and DEVICE RESET supported and enabled.
        id[82] = 0x4210;
        id[83] = 0x4000;
        id[84] = 0x4000;
        id[85] = 0x4210;
        id[87] = 0x4000;
        id[88] = 0x203f;
        identify_bytes(id)
    }

    /// Carries out an ATA command; `packet` is the command table's ATAPI command.
    pub fn command(&mut self, tf: &TaskFile, packet: &[u8; 16]) -> Step {
        match tf.command {
            cmd::PACKET => {
                let pio = tf.features & 1 == 0;
                match self.packet(packet) {
                    Ok(t) => {
                        self.sense = Sense::default();
                        Step {
                            pio: pio && matches!(t, Transfer::In(_) | Transfer::Read { .. }),
                            ..Step::new(t, good())
                        }
                    }
                    Err(s) => Step::done(self.check(s)),
                }
            }
            cmd::IDENTIFY_PACKET => Step::data_in(self.identify(), true, good()),
            // What a packet device answers to IDENTIFY DEVICE: abort, with its signature, so
            // the host knows what it found.
            cmd::IDENTIFY => Step::done(signature(status::DRDY | status::ERR, error::ABRT)),
            cmd::DEVICE_RESET | cmd::EXECUTE_DIAGNOSTIC => {
                if tf.command == cmd::DEVICE_RESET {
                    self.sense = Sense::default();
                }
                Step::done(signature(0, 0x01))
            }
            cmd::CHECK_POWER_MODE => Step::done(Registers {
                count: 0xff,
                ..good()
            }),
            cmd::SET_FEATURES
            | cmd::STANDBY_IMMEDIATE
            | cmd::IDLE_IMMEDIATE
            | cmd::SLEEP
            | cmd::FLUSH_CACHE => Step::done(good()),
            _ => Step::done(signature(status::DRDY | status::ERR, error::ABRT)),
        }
    }

    /// One SCSI command.
    fn packet(&mut self, cdb: &[u8; 16]) -> Result<Transfer, Sense> {
        let opcode = cdb[0];
        // These report state without consuming a unit attention (MMC-6, 4.1.6.1).
        let quiet = matches!(
            opcode,
            op::INQUIRY | op::REQUEST_SENSE | op::GET_CONFIGURATION | op::GET_EVENT_STATUS
        );
        if !quiet && std::mem::take(&mut self.unit_attention) {
            return Err(senses::MEDIUM_CHANGED);
        }
        match opcode {
            op::TEST_UNIT_READY => self.medium().map(|_| Transfer::None),
            op::REQUEST_SENSE => data(self.request_sense(), u64::from(cdb[4])),
            op::INQUIRY => self.inquiry(cdb),
            op::START_STOP_UNIT => self.start_stop(cdb[4]),
            op::PREVENT_ALLOW => {
                self.locked = cdb[4] & 1 != 0;
                Ok(Transfer::None)
            }
            op::READ_CAPACITY => {
                let blocks = self.medium()?;
                let mut d = u32_of(blocks.saturating_sub(1)).to_be_bytes().to_vec();
                d.extend_from_slice(&(BLOCK as u32).to_be_bytes());
                data(d, 8)
            }
            op::READ_10 => self.read(be32(&cdb[2..6]), be16(&cdb[7..9])),
            op::READ_12 => self.read(be32(&cdb[2..6]), be32(&cdb[6..10])),
            op::READ_CD => {
                let count = be32(&[0, cdb[6], cdb[7], cdb[8]]);
                // Expected sector type: any, or mode 1; fields: none, or user data only.
                let sector_type = (cdb[1] >> 2) & 7;
                match (sector_type, cdb[9] & 0xf8) {
                    (0 | 2, 0x10) => self.read(be32(&cdb[2..6]), count),
                    (0 | 2, 0x00) => self.medium().map(|_| Transfer::None),
                    _ => Err(senses::INVALID_FIELD),
                }
            }
            op::SEEK_10 => self.medium().map(|_| Transfer::None),
            op::SYNCHRONIZE_CACHE | op::SET_CD_SPEED => Ok(Transfer::None),
            op::READ_TOC => self.read_toc(cdb),
            op::GET_CONFIGURATION => self.get_configuration(cdb),
            op::GET_EVENT_STATUS => self.event_status(cdb),
            op::READ_DISC_INFORMATION => self.disc_information(cdb),
            op::READ_TRACK_INFORMATION => self.track_information(cdb),
            op::MODE_SENSE_10 => self.mode_sense(cdb),
            // Nothing here can be changed; the parameters are taken and dropped.
            op::MODE_SELECT_10 => Ok(Transfer::Out(be16(&cdb[7..9]))),
            op::READ_DVD_STRUCTURE => self.dvd_structure(cdb),
            op::MECHANISM_STATUS => {
                let mut d = vec![0u8; 8];
                d[1] = if self.tray_open { 0x10 } else { 0 };
                data(d, be16(&cdb[8..10]))
            }
            _ => Err(senses::INVALID_OPCODE),
        }
    }

    /// The disc's blocks, or the NOT READY sense of an empty drive.
    fn medium(&self) -> Result<u64, Sense> {
        match (self.blocks(), self.tray_open) {
            (Some(b), _) => Ok(b),
            (None, true) => Err(senses::NO_MEDIUM_OPEN),
            (None, false) => Err(senses::NO_MEDIUM_CLOSED),
        }
    }

    fn read(&self, lba: u64, count: u64) -> Result<Transfer, Sense> {
        let blocks = self.medium()?;
        if lba.saturating_add(count) > blocks {
            return Err(senses::LBA_OUT_OF_RANGE);
        }
        Ok(if count == 0 {
            Transfer::None
        } else {
            Transfer::Read {
                offset: lba * BLOCK,
                len: count * BLOCK,
            }
        })
    }

    fn request_sense(&mut self) -> Vec<u8> {
        let s = match std::mem::take(&mut self.sense) {
            s if s.key != 0 => s,
            _ if std::mem::take(&mut self.unit_attention) => senses::MEDIUM_CHANGED,
            _ => self.medium().err().unwrap_or_default(),
        };
        let mut d = vec![0u8; 18];
        d[0] = 0x70;
        d[2] = s.key;
        d[7] = 10;
        d[12] = s.asc;
        d[13] = s.ascq;
        d
    }

    fn inquiry(&self, cdb: &[u8; 16]) -> Result<Transfer, Sense> {
        let alloc = be16(&cdb[3..5]);
        if cdb[1] & 1 != 0 {
            let d = match cdb[2] {
                0x00 => vec![0x05, 0x00, 0, 2, 0x00, 0x80],
                0x80 => {
                    let mut d = vec![0x05, 0x80, 0, self.serial.len() as u8];
                    d.extend_from_slice(self.serial.as_bytes());
                    d
                }
                _ => return Err(senses::INVALID_FIELD),
            };
            return data(d, alloc);
        }
        if cdb[2] != 0 {
            return Err(senses::INVALID_FIELD);
        }
        // CD/DVD device, removable; response format as ATAPI drives give it.
        let mut d = vec![0x05, 0x80, 0x00, 0x21, 31, 0, 0, 0];
        d.extend_from_slice(b"TESSERA Tessera DVD-ROM ");
        let mut rev = [b' '; 4];
        for (r, c) in rev.iter_mut().zip(env!("CARGO_PKG_VERSION").bytes()) {
            *r = c;
        }
        d.extend_from_slice(&rev);
        data(d, alloc)
    }

    fn start_stop(&mut self, flags: u8) -> Result<Transfer, Sense> {
        let (load_eject, start) = (flags & 2 != 0, flags & 1 != 0);
        match (load_eject, start) {
            (true, false) => {
                if self.locked {
                    return Err(senses::REMOVAL_PREVENTED);
                }
                if !self.tray_open && self.disc_blocks.is_some() {
                    self.media_event = EVENT_MEDIA_REMOVAL;
                }
                self.tray_open = true;
            }
            (true, true) if self.tray_open => {
                self.tray_open = false;
                if self.disc_blocks.is_some() {
                    self.unit_attention = true;
                    self.media_event = EVENT_NEW_MEDIA;
                }
            }
            _ => {}
        }
        Ok(Transfer::None)
    }

    fn read_toc(&self, cdb: &[u8; 16]) -> Result<Transfer, Sense> {
        let blocks = self.medium()?;
        let msf = cdb[1] & 2 != 0;
        let alloc = be16(&cdb[7..9]);
        // The format in byte 2, or in the old place (byte 9's top bits).
        let format = match cdb[2] & 0x0f {
            0 => cdb[9] >> 6,
            f => f,
        };
        let track = cdb[6];
        let mut d = vec![0, 0, 1, 1];
        match format {
            0 => {
                if track > 1 && track != 0xaa {
                    return Err(senses::INVALID_FIELD);
                }
                if track <= 1 {
                    // Track 1: data, recorded uninterrupted.
                    d.extend_from_slice(&[0, 0x14, 1, 0]);
                    d.extend_from_slice(&address(0, msf));
                }
                d.extend_from_slice(&[0, 0x14, 0xaa, 0]);
                d.extend_from_slice(&address(blocks, msf));
            }
            // Multisession information: one session, starting at track 1.
            1 => {
                d.extend_from_slice(&[0, 0x14, 1, 0]);
                d.extend_from_slice(&address(0, msf));
            }
            _ => return Err(senses::INVALID_FIELD),
        }
        let len = (d.len() - 2) as u16;
        d[..2].copy_from_slice(&len.to_be_bytes());
        data(d, alloc)
    }

    /// GET CONFIGURATION: the profiles (DVD-ROM and CD-ROM) and the features a reading drive
    /// has, each marked current when the disc in the drive makes it so.
    fn get_configuration(&self, cdb: &[u8; 16]) -> Result<Transfer, Sense> {
        let rt = cdb[1] & 3;
        let start = be16(&cdb[2..4]) as u16;
        let alloc = be16(&cdb[7..9]);
        let present = self.blocks().is_some();
        let dvd = self.is_dvd();
        let profile: u16 = match (present, dvd) {
            (false, _) => 0,
            (true, true) => 0x0010,
            (true, false) => 0x0008,
        };
        // (feature code, version and flags byte without the current bit, current, body)
        let features: [(u16, u8, bool, Vec<u8>); 6] = [
            (
                0x0000,
                0x02,
                true,
                vec![
                    0x00,
                    0x10,
                    u8::from(dvd),
                    0,
                    0x00,
                    0x08,
                    u8::from(present && !dvd),
                    0,
                ],
            ),
            // Core: the ATAPI interface, device busy events.
            (0x0001, 0x0a, true, vec![0, 0, 0, 2, 1, 0, 0, 0]),
            // Removable medium: a tray that loads and ejects, with a lock.
            (0x0003, 0x02, true, vec![0x39, 0, 0, 0]),
            // Random readable: 2048-byte blocks.
            (0x0010, 0x00, present, vec![0, 0, 0x08, 0, 0, 1, 0, 0]),
            (0x001e, 0x08, present && !dvd, vec![0, 0, 0, 0]),
            (0x001f, 0x00, dvd, vec![]),
        ];
        let mut d = vec![0u8; 8];
        d[6..8].copy_from_slice(&profile.to_be_bytes());
        for (code, flags, current, body) in features {
            let wanted = match rt {
                0 => code >= start,
                1 => code >= start && current,
                2 => code == start,
                _ => return Err(senses::INVALID_FIELD),
            };
            if wanted {
                d.extend_from_slice(&code.to_be_bytes());
                d.push(flags | u8::from(current));
                d.push(body.len() as u8);
                d.extend_from_slice(&body);
            }
        }
        let len = (d.len() - 4) as u32;
        d[..4].copy_from_slice(&len.to_be_bytes());
        data(d, alloc)
    }

    /// GET EVENT STATUS NOTIFICATION, polled: the media class only.
    fn event_status(&mut self, cdb: &[u8; 16]) -> Result<Transfer, Sense> {
        if cdb[1] & 1 == 0 {
            // Asynchronous notification is not offered.
            return Err(senses::INVALID_FIELD);
        }
        let alloc = be16(&cdb[7..9]);
        const MEDIA: u8 = 1 << 4;
        let d = if cdb[4] & MEDIA != 0 {
            let event = std::mem::take(&mut self.media_event);
            let present = self.blocks().is_some();
            let media_status = u8::from(self.tray_open) | u8::from(present) << 1;
            vec![0, 6, 4, MEDIA, event, media_status, 0, 0]
        } else {
            // No event available of a class asked for.
            vec![0, 2, 0x80, MEDIA]
        };
        data(d, alloc)
    }

    fn disc_information(&self, cdb: &[u8; 16]) -> Result<Transfer, Sense> {
        self.medium()?;
        if cdb[1] & 7 != 0 {
            return Err(senses::INVALID_FIELD);
        }
        let mut d = vec![0u8; 34];
        d[1] = 32;
        // Last session complete, disc finalized; one track in one session.
        d[2] = 0x0e;
        d[3..7].fill(1);
        // Unrestricted use; CD-ROM or DVD-ROM.
        d[7] = 0x20;
        data(d, be16(&cdb[7..9]))
    }

    fn track_information(&self, cdb: &[u8; 16]) -> Result<Transfer, Sense> {
        let blocks = self.medium()?;
        let number = be32(&cdb[2..6]);
        let ok = match cdb[1] & 3 {
            0 => number < blocks,
            1 => number == 1,
            _ => false,
        };
        if !ok {
            return Err(senses::INVALID_FIELD);
        }
        let mut d = vec![0u8; 36];
        d[1] = 34;
        d[2] = 1;
        d[3] = 1;
        // Data track recorded uninterrupted; data mode 1.
        d[5] = 0x04;
        d[6] = 0x01;
        d[24..28].copy_from_slice(&u32_of(blocks).to_be_bytes());
        data(d, be16(&cdb[7..9]))
    }

    fn mode_sense(&self, cdb: &[u8; 16]) -> Result<Transfer, Sense> {
        let control = cdb[2] >> 6;
        let page = cdb[2] & 0x3f;
        if control == 3 {
            return Err(senses::SAVING_NOT_SUPPORTED);
        }
        // Read/write error recovery: 5 retries.
        let recovery = vec![0x01, 0x06, 0x00, 5, 0, 0, 0, 0];
        // CD/DVD capabilities: reads CD-R/RW and DVD-ROM; a lockable tray with eject.
        let mut caps = vec![0u8; 20];
        caps[0] = 0x2a;
        caps[1] = 18;
        caps[2] = 0x0b;
        caps[4] = 0x71;
        caps[6] = 0x29 | if self.locked { 0x02 } else { 0 };
        caps[8..10].copy_from_slice(&(8u16 * 176).to_be_bytes());
        caps[10..12].copy_from_slice(&256u16.to_be_bytes());
        caps[12..14].copy_from_slice(&512u16.to_be_bytes());
        caps[14..16].copy_from_slice(&(8u16 * 176).to_be_bytes());
        let mut pages = match page {
            0x01 => recovery,
            0x2a => caps,
            0x3f => [recovery, caps].concat(),
            _ => return Err(senses::INVALID_FIELD),
        };
        if control == 1 {
            // Changeable values: none; the page headers stay.
            let mut i = 0;
            while i + 1 < pages.len() {
                let len = usize::from(pages[i + 1]);
                let end = (i + 2 + len).min(pages.len());
                pages[i + 2..end].fill(0);
                i += 2 + len;
            }
        }
        let mut d = vec![0u8; 8];
        d[2] = if self.blocks().is_some() { 0 } else { 0x70 };
        d.extend_from_slice(&pages);
        let len = (d.len() - 2) as u16;
        d[..2].copy_from_slice(&len.to_be_bytes());
        data(d, be16(&cdb[7..9]))
    }

    fn dvd_structure(&self, cdb: &[u8; 16]) -> Result<Transfer, Sense> {
        let blocks = self.medium()?;
        let alloc = be16(&cdb[8..10]);
        if !self.is_dvd() {
            return Err(senses::INCOMPATIBLE_MEDIUM);
        }
        let d = match cdb[7] {
            // Physical format: DVD-ROM version 1, 120 mm, one embossed layer, data from
            // sector 0x30000.
            0x00 => {
                let mut d = vec![0u8; 4 + 2048];
                d[..2].copy_from_slice(&2050u16.to_be_bytes());
                d[4] = 0x01;
                d[5] = 0x0f;
                d[6] = 0x01;
                d[8..12].copy_from_slice(&0x30000u32.to_be_bytes());
                d[12..16].copy_from_slice(&u32_of(0x30000 + blocks - 1).to_be_bytes());
                d
            }
            // Copyright: no protection, all regions.
            0x01 => vec![0, 6, 0, 0, 0, 0, 0, 0],
            _ => return Err(senses::INVALID_FIELD),
        };
        data(d, alloc)
    }
}

#[cfg(test)]
mod tests;
