//! The controller end to end: the test plays the host's driver through BAR 5 (command lists,
//! tables and FIS areas in guest memory, as Linux's ahci lays them out), against a qcow2 disk
//! and a disc image, with the I/O thread running.

use std::time::{Duration, Instant};

use tessera_storage::{ops, Datastore, Disk, Format};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::atapi::BLOCK;
use super::fis::{status, TYPE_REG_H2D};
use super::hba::pxis;
use super::*;
use crate::devices::pci::config::{COMMAND_MEMORY, REG_BAR0, REG_CLASS, REG_COMMAND};
use crate::devices::pci::msix::MsixVector;
use crate::devices::virtio::block::request::BlockBackend;

const BAR: u64 = 0xe000_0000;
const MEM: usize = 16 << 20;
const DISK_SIZE: u64 = 8 << 20;
const DISC_BLOCKS: u64 = 64;

struct Dir(std::path::PathBuf);
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Rig {
    ahci: Ahci,
    mem: GuestMemoryMmap,
    irq: EventFd,
    backend: Arc<BlockBackend>,
    dir: Dir,
}

/// The disc's content: block b is filled with b's low byte, its first 8 bytes b.
fn disc_block(b: u64) -> Vec<u8> {
    let mut v = vec![b as u8; BLOCK as usize];
    v[..8].copy_from_slice(&b.to_le_bytes());
    v
}

/// A controller with a qcow2 disk on port 0, a DVD-ROM with a disc on port 1 and an empty
/// DVD-ROM on port 2.
fn rig(name: &str) -> Rig {
    let dir = std::env::temp_dir().join(format!("tessera-ahci-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ds = Datastore::new(&dir).unwrap();
    let img = dir.join("d.qcow2");
    ops::create(&ds, &img, DISK_SIZE, Format::Qcow2, 65536).unwrap();
    let disk = Disk::open(&ds, &img, Format::Qcow2, true).unwrap();
    disk.write(&[0x5a; 512], 3 * 512).unwrap();
    let backend = Arc::new(BlockBackend::new(disk, false, ""));
    let iso = dir.join("disc.iso");
    let content: Vec<u8> = (0..DISC_BLOCKS).flat_map(disc_block).collect();
    std::fs::write(&iso, content).unwrap();
    let disc = Disk::open(&ds, &iso, Format::Raw, false).unwrap();
    let drives = vec![
        Drive::disk(backend.clone(), "TS-DISK-0"),
        Drive::cdrom(Some(disc), "TS-CD-1"),
        Drive::cdrom(None, "TS-CD-2"),
    ];
    let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let msix = Msix::new(
        vec![MsixVector {
            gsi: 24,
            irqfd: irq.try_clone().unwrap(),
        }],
        None,
    );
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM)]).unwrap();
    let mut ahci = Ahci::new(drives, msix, BAR as u32, mem.clone(), &Sandbox::off()).unwrap();
    ahci.config_write(REG_COMMAND, 0, &[COMMAND_MEMORY as u8 | 4]);
    Rig {
        ahci,
        mem,
        irq,
        backend,
        dir: Dir(dir),
    }
}

fn list(port: usize) -> u64 {
    0x10_0000 + port as u64 * 0x1000
}
fn fis_area(port: usize) -> u64 {
    0x18_0000 + port as u64 * 0x1000
}
fn table(port: usize, slot: u8) -> u64 {
    0x20_0000 + port as u64 * 0x10000 + u64::from(slot) * 0x1000
}
/// Where a command's data goes: 1 MiB from 4 MiB on, per port.
fn data_at(port: usize) -> u64 {
    0x40_0000 + port as u64 * 0x10_0000
}

/// What the host puts in a command slot.
struct Cmd {
    fis: [u8; 20],
    packet: [u8; 16],
    atapi: bool,
    write: bool,
    /// (address, bytes) per descriptor.
    prdt: Vec<(u64, u32)>,
}

fn ata(command: u8, lba: u64, count: u16) -> [u8; 20] {
    let mut f = [0u8; 20];
    f[0] = TYPE_REG_H2D;
    f[1] = 0x80;
    f[2] = command;
    let l = lba.to_le_bytes();
    f[4..7].copy_from_slice(&l[..3]);
    f[7] = 0x40;
    f[8..11].copy_from_slice(&l[3..6]);
    f[12..14].copy_from_slice(&count.to_le_bytes());
    f
}

fn packet_cmd(cdb: &[u8], alloc: u32, dma: bool, port: usize) -> Cmd {
    let mut fis = ata(0xa0, 0, 0);
    fis[3] = u8::from(dma);
    let mut packet = [0u8; 16];
    packet[..cdb.len()].copy_from_slice(cdb);
    Cmd {
        fis,
        packet,
        atapi: true,
        write: false,
        prdt: if alloc > 0 {
            vec![(data_at(port), alloc)]
        } else {
            vec![]
        },
    }
}

impl Rig {
    fn read(&mut self, off: u64) -> u32 {
        let mut b = [0u8; 4];
        assert!(self.ahci.mmio_read(BAR + off, &mut b));
        u32::from_le_bytes(b)
    }

    fn write(&mut self, off: u64, v: u32) {
        assert!(self.ahci.mmio_write(BAR + off, &v.to_le_bytes()));
    }

    fn port_reg(&mut self, port: usize, reg: u64) -> u32 {
        self.read(0x100 + port as u64 * 0x80 + reg)
    }

    fn set_port_reg(&mut self, port: usize, reg: u64, v: u32) {
        self.write(0x100 + port as u64 * 0x80 + reg, v);
    }

    /// What Linux's ahci does to bring a port up: addresses, FIS receive, start.
    fn start_port(&mut self, port: usize) {
        self.set_port_reg(port, 0x00, list(port) as u32);
        self.set_port_reg(port, 0x04, 0);
        self.set_port_reg(port, 0x08, fis_area(port) as u32);
        self.set_port_reg(port, 0x0c, 0);
        self.set_port_reg(port, 0x18, 1 << 4);
        self.set_port_reg(port, 0x18, 1 << 4 | 1);
    }

    /// Issues `cmd` in `slot` and waits for its end: the slot's CI bit clear, or the port
    /// halted on an error. Returns PxIS (then cleared) and PxTFD.
    fn issue(&mut self, port: usize, slot: u8, cmd: &Cmd) -> (u32, u32) {
        let t = table(port, slot);
        let m = &self.mem;
        let dw0 = 5u32
            | if cmd.atapi { 1 << 5 } else { 0 }
            | if cmd.write { 1 << 6 } else { 0 }
            | (cmd.prdt.len() as u32) << 16;
        let h = list(port) + u64::from(slot) * 32;
        m.write_slice(&dw0.to_le_bytes(), GuestAddress(h)).unwrap();
        m.write_slice(&[0xff; 4], GuestAddress(h + 4)).unwrap();
        m.write_slice(&t.to_le_bytes(), GuestAddress(h + 8))
            .unwrap();
        m.write_slice(&cmd.fis, GuestAddress(t)).unwrap();
        m.write_slice(&cmd.packet, GuestAddress(t + 0x40)).unwrap();
        for (i, (addr, len)) in cmd.prdt.iter().enumerate() {
            let d = t + 0x80 + 16 * i as u64;
            m.write_slice(&addr.to_le_bytes(), GuestAddress(d)).unwrap();
            m.write_slice(&(len - 1).to_le_bytes(), GuestAddress(d + 12))
                .unwrap();
        }
        self.set_port_reg(port, 0x38, 1 << slot);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let is = self.port_reg(port, 0x10);
            let ci = self.port_reg(port, 0x38);
            if ci & (1 << slot) == 0 || is & (pxis::TFES | pxis::HBFS) != 0 {
                self.set_port_reg(port, 0x10, is);
                return (is, self.port_reg(port, 0x20));
            }
            assert!(
                Instant::now() < deadline,
                "command never ended: IS {is:#x} CI {ci:#x}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Clears ST and sets it again: how a host recovers a port halted on an error.
    fn restart(&mut self, port: usize) {
        self.set_port_reg(port, 0x18, 1 << 4);
        assert_eq!(self.port_reg(port, 0x38), 0, "CI is cleared when ST is");
        assert_eq!(self.port_reg(port, 0x18) & (1 << 15), 0, "CR clear");
        self.set_port_reg(port, 0x18, 1 << 4 | 1);
    }

    fn transferred(&self, port: usize, slot: u8) -> u32 {
        self.mem
            .read_obj::<u32>(GuestAddress(list(port) + u64::from(slot) * 32 + 4))
            .unwrap()
    }

    fn data(&self, port: usize, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.mem
            .read_slice(&mut v, GuestAddress(data_at(port)))
            .unwrap();
        v
    }

    fn rx(&self, port: usize, at: u64) -> [u8; 20] {
        let mut f = [0u8; 20];
        self.mem
            .read_slice(&mut f, GuestAddress(fis_area(port) + at))
            .unwrap();
        f
    }

    /// Runs a packet command on `port` that must succeed; returns its data.
    fn scsi(&mut self, port: usize, cdb: &[u8], alloc: u32) -> Vec<u8> {
        let (is, tfd) = self.issue(port, 0, &packet_cmd(cdb, alloc, true, port));
        assert_eq!(is & pxis::TFES, 0, "{cdb:02x?} failed: TFD {tfd:#x}");
        let n = self.transferred(port, 0) as usize;
        self.data(port, n)
    }

    /// Runs a packet command that must fail; returns the sense (key, ASC, ASCQ) that
    /// REQUEST SENSE then reports, after restarting the port as a host does.
    fn scsi_fails(&mut self, port: usize, cdb: &[u8]) -> (u8, u8, u8) {
        let (is, tfd) = self.issue(port, 0, &packet_cmd(cdb, 512, true, port));
        assert_ne!(is & pxis::TFES, 0, "{cdb:02x?} did not fail");
        assert_eq!(tfd & 0xff, u32::from(status::DRDY | status::ERR));
        self.restart(port);
        let s = self.scsi(port, &[0x03, 0, 0, 0, 18, 0], 18);
        assert_eq!((tfd >> 12) as u8, s[2], "the error register's sense key");
        (s[2], s[12], s[13])
    }
}

#[test]
fn the_controller_presents_itself_as_ich9_with_its_devices_signed_in() {
    let mut r = rig("identity");
    assert_eq!(r.ahci.config_read(0), 0x2922_8086);
    assert_eq!(r.ahci.config_read(REG_CLASS) >> 8, 0x01_0601);
    assert_eq!(r.ahci.config_read(REG_BAR0 + ABAR), BAR as u32);
    let cap = r.read(0x00);
    assert_eq!(
        (cap & 0x1f, (cap >> 8) & 0x1f),
        (5, 31),
        "6 ports, 32 slots"
    );
    assert_ne!(cap & (1 << 31), 0, "64-bit");
    assert_eq!(cap & (1 << 30), 0, "no NCQ");
    assert_eq!(r.read(0x0c), 0x3f);
    assert_eq!(r.read(0x10), 0x0001_0301);
    assert_ne!(r.read(0x04) & (1 << 31), 0, "AHCI enabled");
    assert_eq!(r.port_reg(0, 0x24), 0x0000_0101, "disk signature");
    assert_eq!(r.port_reg(1, 0x24), 0xeb14_0101, "ATAPI signature");
    assert_eq!(r.port_reg(2, 0x24), 0xeb14_0101);
    assert_eq!(r.port_reg(3, 0x24), u32::MAX);
    assert_eq!(r.port_reg(0, 0x28), 0x123);
    assert_eq!(r.port_reg(3, 0x28), 0, "no device");
    assert_eq!(r.port_reg(0, 0x20) & 0x80, 0, "not busy");
    // Byte reads take their part of the dword; byte writes are dropped.
    let mut b = [0u8; 1];
    assert!(r.ahci.mmio_read(BAR + 0x10 + 1, &mut b));
    assert_eq!(b[0], 0x03);
    assert!(r.ahci.mmio_write(BAR + 0x100 + 0x18, &[1]));
    assert_eq!(r.port_reg(0, 0x18) & 1, 0);
    // Outside the BAR, or with memory decoding off: not ours.
    assert!(!r.ahci.mmio_read(BAR + 0x1000, &mut [0u8; 4]));
    r.ahci.config_write(REG_COMMAND, 0, &[0]);
    assert!(!r.ahci.mmio_read(BAR, &mut [0u8; 4]));
}

#[test]
fn a_disk_is_identified_written_read_and_flushed() {
    let mut r = rig("disk");
    r.start_port(0);
    // IDENTIFY DEVICE, PIO data-in: the ending status in the PIO Setup FIS.
    let id = Cmd {
        fis: ata(0xec, 0, 0),
        packet: [0; 16],
        atapi: false,
        write: false,
        prdt: vec![(data_at(0), 512)],
    };
    let (is, tfd) = r.issue(0, 3, &id);
    assert_eq!(is & (pxis::PSS | pxis::DHRS), pxis::PSS | pxis::DHRS);
    assert_eq!(tfd, 0x50);
    assert_eq!(r.transferred(0, 3), 512);
    let pio = r.rx(0, 0x20);
    assert_eq!((pio[0], pio[15]), (0x5f, 0x50));
    let ident = r.data(0, 512);
    let words = |w: usize| u16::from_le_bytes([ident[2 * w], ident[2 * w + 1]]);
    assert_eq!(&ident[20..30], b"STD-SI-K 0", "serial, byte-swapped");
    let sectors = (0..4).fold(0u64, |a, i| a | u64::from(words(100 + i)) << (16 * i));
    assert_eq!(sectors, DISK_SIZE / 512);
    // What the host wrote before: sector 3.
    let read3 = Cmd {
        fis: ata(0x25, 3, 1),
        packet: [0; 16],
        atapi: false,
        write: false,
        prdt: vec![(data_at(0), 512)],
    };
    r.issue(0, 0, &read3);
    assert_eq!(r.data(0, 512), vec![0x5a; 512]);
    // WRITE DMA EXT of 40 KiB at sector 100 through three descriptors, then read back
    // through one; the D2H FIS carries the end.
    let pattern: Vec<u8> = (0..40 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    r.mem
        .write_slice(&pattern[..4096], GuestAddress(0x80_0000))
        .unwrap();
    r.mem
        .write_slice(&pattern[4096..8192], GuestAddress(0x90_0000))
        .unwrap();
    r.mem
        .write_slice(&pattern[8192..], GuestAddress(0xa0_0000))
        .unwrap();
    let write = Cmd {
        fis: ata(0x35, 100, 80),
        packet: [0; 16],
        atapi: false,
        write: true,
        prdt: vec![(0x80_0000, 4096), (0x90_0000, 4096), (0xa0_0000, 32 * 1024)],
    };
    let (is, tfd) = r.issue(0, 1, &write);
    assert_eq!((is & pxis::TFES, tfd), (0, 0x50));
    assert_eq!(r.transferred(0, 1), 40 * 1024);
    assert_eq!(r.rx(0, 0x40)[0], 0x34);
    let read = Cmd {
        fis: ata(0x25, 100, 80),
        prdt: vec![(data_at(0), 40 * 1024)],
        write: false,
        ..write
    };
    r.issue(0, 2, &read);
    assert_eq!(r.data(0, 40 * 1024), pattern);
    // FLUSH CACHE EXT, and the image holds the data.
    let flush = Cmd {
        fis: ata(0xea, 0, 0),
        packet: [0; 16],
        atapi: false,
        write: false,
        prdt: vec![],
    };
    assert_eq!(r.issue(0, 4, &flush).1, 0x50);
    let mut back = vec![0u8; 40 * 1024];
    r.backend.image().read(&mut back, 100 * 512).unwrap();
    assert_eq!(back, pattern);
    // The counters /metrics shows: IDENTIFY's 512 bytes, 512 + 40 KiB read, 40 KiB written.
    let stats = &r.ahci.drives()[0].stats;
    let n = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!((n(&stats.commands), n(&stats.errors)), (5, 0));
    assert_eq!(n(&stats.read_bytes), 512 + 512 + 40 * 1024);
    assert_eq!(n(&stats.written_bytes), 40 * 1024);
    assert_eq!(r.ahci.drives()[1].kind, "dvd");
}

#[test]
fn a_failed_command_halts_the_list_until_the_host_restarts_the_port() {
    let mut r = rig("errors");
    r.start_port(0);
    // Past the end: IDNF|ABRT, TFES, the slot left issued.
    let beyond = Cmd {
        fis: ata(0x25, DISK_SIZE / 512, 1),
        packet: [0; 16],
        atapi: false,
        write: false,
        prdt: vec![(data_at(0), 512)],
    };
    let (is, tfd) = r.issue(0, 5, &beyond);
    assert_ne!(is & pxis::TFES, 0);
    assert_eq!(tfd, 0x1451);
    assert_eq!(r.port_reg(0, 0x38), 1 << 5, "halted with its slot issued");
    assert_eq!((r.port_reg(0, 0x18) >> 8) & 0x1f, 5, "CCS names it");
    assert_eq!(r.rx(0, 0x40)[3], 0x14, "the D2H FIS's error");
    r.restart(0);
    // An unknown command: ABRT.
    let unknown = Cmd {
        fis: ata(0xfe, 0, 0),
        ..beyond
    };
    assert_eq!(r.issue(0, 0, &unknown).1, 0x0451);
    r.restart(0);
    // A write that describes less than it moves.
    let short = Cmd {
        fis: ata(0x35, 0, 8),
        packet: [0; 16],
        atapi: false,
        write: true,
        prdt: vec![(data_at(0), 512)],
    };
    assert_eq!(r.issue(0, 0, &short).1, 0x0451);
    r.restart(0);
    // A FIS that is not a register FIS.
    let mut bad = Cmd {
        fis: [0xaa; 20],
        ..unknown
    };
    assert_ne!(r.issue(0, 0, &bad).0 & pxis::TFES, 0);
    r.restart(0);
    // A descriptor outside guest memory: the host bus error.
    bad.fis = ata(0x25, 0, 8);
    bad.prdt = vec![(0x7fff_0000_0000, 4096)];
    assert_ne!(r.issue(0, 0, &bad).0 & pxis::HBFS, 0);
    r.restart(0);
    // A command table outside guest memory.
    let h = list(0);
    r.mem
        .write_slice(&(0x7fff_0000_0000u64).to_le_bytes(), GuestAddress(h + 8))
        .unwrap();
    r.set_port_reg(0, 0x38, 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while r.port_reg(0, 0x10) & pxis::HBFS == 0 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(1));
    }
    r.set_port_reg(0, 0x10, u32::MAX);
    r.restart(0);
    // And the disk still works.
    let ok = Cmd {
        fis: ata(0x25, 3, 1),
        packet: [0; 16],
        atapi: false,
        write: false,
        prdt: vec![(data_at(0), 512)],
    };
    assert_eq!(r.issue(0, 0, &ok).1, 0x50);
    assert_eq!(r.data(0, 512), vec![0x5a; 512]);
}

#[test]
fn the_dvd_drive_reads_its_disc_and_reports_what_a_drive_reports() {
    let mut r = rig("dvd");
    r.start_port(1);
    // IDENTIFY PACKET DEVICE.
    let id = Cmd {
        fis: ata(0xa1, 0, 0),
        packet: [0; 16],
        atapi: false,
        write: false,
        prdt: vec![(data_at(1), 512)],
    };
    r.issue(1, 0, &id);
    let ident = r.data(1, 512);
    assert_eq!(u16::from_le_bytes([ident[0], ident[1]]), 0x85c0);
    // IDENTIFY DEVICE to a packet device: aborted, with the signature.
    let (_, tfd) = r.issue(
        1,
        0,
        &Cmd {
            fis: ata(0xec, 0, 0),
            ..id
        },
    );
    assert_eq!(tfd & 0x0401, 0x0401);
    let d2h = r.rx(1, 0x40);
    assert_eq!((d2h[4], d2h[5], d2h[6]), (0x01, 0x14, 0xeb));
    r.restart(1);
    let inquiry = r.scsi(1, &[0x12, 0, 0, 0, 36, 0], 512);
    assert_eq!((inquiry[0], inquiry[1], inquiry.len()), (0x05, 0x80, 36));
    assert_eq!(&inquiry[8..16], b"TESSERA ");
    r.scsi(1, &[0x00; 6], 0);
    let cap = r.scsi(1, &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], 8);
    assert_eq!(cap, [0, 0, 0, 63, 0, 0, 8, 0]);
    // READ(10) of blocks 5 and 6, by DMA and by PIO.
    for dma in [true, false] {
        let cmd = packet_cmd(&[0x28, 0, 0, 0, 0, 5, 0, 0, 2, 0], 4096, dma, 1);
        let (is, _) = r.issue(1, 0, &cmd);
        assert_eq!(is & pxis::PSS != 0, !dma, "a PIO Setup FIS for PIO only");
        assert_eq!(r.data(1, 4096), [disc_block(5), disc_block(6)].concat());
    }
    // READ(12) of the last block; READ CD of user data.
    r.scsi(1, &[0xa8, 0, 0, 0, 0, 63, 0, 0, 0, 1, 0, 0], 2048);
    assert_eq!(r.data(1, 2048), disc_block(63));
    r.scsi(1, &[0xbe, 0, 0, 0, 0, 7, 0, 0, 1, 0x10, 0, 0], 2048);
    assert_eq!(r.data(1, 2048), disc_block(7));
    // A host that describes less than it reads gets what fits.
    r.scsi(1, &[0x28, 0, 0, 0, 0, 9, 0, 0, 2, 0], 1024);
    assert_eq!(r.transferred(1, 0), 1024);
    // Past the end.
    assert_eq!(
        r.scsi_fails(1, &[0x28, 0, 0, 0, 0, 63, 0, 0, 2, 0]),
        (5, 0x21, 0)
    );
    // The TOC: track 1 at 0, lead-out at 64 (MSF: 00:02:64 after the lead-in).
    let toc = r.scsi(1, &[0x43, 0, 0, 0, 0, 0, 0, 0, 100, 0], 100);
    assert_eq!(toc.len(), 20);
    assert_eq!(&toc[..4], &[0, 18, 1, 1]);
    assert_eq!(&toc[14..20], &[0xaa, 0, 0, 0, 0, 64]);
    let msf = r.scsi(1, &[0x43, 2, 0, 0, 0, 0, 0, 0, 100, 0], 100);
    assert_eq!(&msf[16..20], &[0, 0, 2, 64]);
    // GET CONFIGURATION: the current profile is CD-ROM (a small disc).
    let conf = r.scsi(1, &[0x46, 0, 0, 0, 0, 0, 0, 0x01, 0, 0], 256);
    assert_eq!(&conf[6..8], &[0, 8]);
    // Unknown operation code.
    assert_eq!(r.scsi_fails(1, &[0xee, 0, 0, 0, 0, 0]), (5, 0x20, 0));
    // Locked, the tray stays shut; unlocked, it opens: no medium; closed again, the disc is
    // new to the host (a unit attention, then a media event).
    r.scsi(1, &[0x1e, 0, 0, 0, 1, 0], 0);
    assert_eq!(r.scsi_fails(1, &[0x1b, 0, 0, 0, 2, 0]), (5, 0x53, 2));
    r.scsi(1, &[0x1e, 0, 0, 0, 0, 0], 0);
    r.scsi(1, &[0x1b, 0, 0, 0, 2, 0], 0);
    assert_eq!(r.scsi_fails(1, &[0x00; 6]), (2, 0x3a, 2));
    r.scsi(1, &[0x1b, 0, 0, 0, 3, 0], 0);
    assert_eq!(r.scsi_fails(1, &[0x00; 6]), (6, 0x28, 0));
    r.scsi(1, &[0x00; 6], 0);
    let events = r.scsi(1, &[0x4a, 1, 0, 0, 0x10, 0, 0, 0, 8, 0], 8);
    assert_eq!(
        &events[2..6],
        &[4, 0x10, 2, 2],
        "media class: new media, present"
    );
    let events = r.scsi(1, &[0x4a, 1, 0, 0, 0x10, 0, 0, 0, 8, 0], 8);
    assert_eq!(&events[4..6], &[0, 2], "reported once");
}

#[test]
fn an_empty_drive_answers_not_ready() {
    let mut r = rig("empty");
    r.start_port(2);
    let inquiry = r.scsi(2, &[0x12, 0, 0, 0, 36, 0], 36);
    assert_eq!(inquiry[0], 0x05);
    assert_eq!(r.scsi_fails(2, &[0x00; 6]), (2, 0x3a, 1));
    assert_eq!(
        r.scsi_fails(2, &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        (2, 0x3a, 1)
    );
    assert_eq!(
        r.scsi_fails(2, &[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0]),
        (2, 0x3a, 1)
    );
    let conf = r.scsi(2, &[0x46, 0, 0, 0, 0, 0, 0, 0x01, 0, 0], 256);
    assert_eq!(&conf[6..8], &[0, 0], "no current profile");
    let events = r.scsi(2, &[0x4a, 1, 0, 0, 0x10, 0, 0, 0, 8, 0], 8);
    assert_eq!(events[5], 0, "no medium, tray closed");
}

#[test]
fn completions_interrupt_only_when_the_host_enabled_them() {
    let mut r = rig("irq");
    // MSI-X on, vector 0 unmasked.
    let cap = r.ahci.msix_cap;
    r.ahci.config_write(cap / 4, 2, &[0, 0x80]);
    assert!(r
        .ahci
        .mmio_write(BAR + MSIX_TABLE + 12, &0u32.to_le_bytes()));
    r.start_port(0);
    let flush = Cmd {
        fis: ata(0xe7, 0, 0),
        packet: [0; 16],
        atapi: false,
        write: false,
        prdt: vec![],
    };
    r.issue(0, 0, &flush);
    assert!(
        r.irq.read().is_err(),
        "no interrupt: GHC.IE and PxIE are off"
    );
    r.write(0x04, 1 << 1);
    r.set_port_reg(0, 0x14, pxis::DHRS);
    r.issue(0, 1, &flush);
    assert_eq!(r.irq.read().unwrap(), 1);
    assert_eq!(r.read(0x08), 1, "IS names port 0");
    r.write(0x08, 1);
    assert_eq!(r.read(0x08), 0);
    r.issue(0, 2, &flush);
    assert_eq!(r.irq.read().unwrap(), 1);
}

#[test]
fn comreset_soft_reset_and_hba_reset_bring_devices_back_with_their_signatures() {
    let mut r = rig("resets");
    r.start_port(1);
    r.set_port_reg(1, 0x18, 1 << 4);
    // COMRESET: the link is down while asserted; released, the device signs in again and
    // its signature FIS lands in the receive area.
    r.mem
        .write_slice(&[0u8; 20], GuestAddress(fis_area(1) + 0x40))
        .unwrap();
    r.set_port_reg(1, 0x2c, 1);
    assert_eq!(r.port_reg(1, 0x28), 0);
    assert_eq!(r.port_reg(1, 0x20) & 0x80, 0x80, "busy while in reset");
    r.set_port_reg(1, 0x2c, 0);
    assert_eq!(r.port_reg(1, 0x28), 0x123);
    assert_eq!(r.port_reg(1, 0x24), 0xeb14_0101);
    assert_eq!(r.port_reg(1, 0x20), 0x0100);
    let sig = r.rx(1, 0x40);
    assert_eq!((sig[0], sig[4], sig[5], sig[6]), (0x34, 0x01, 0x14, 0xeb));
    // Soft reset: SRST set, then cleared; the drive's state (the lock) is reset.
    r.set_port_reg(1, 0x18, 1 << 4 | 1);
    r.scsi(1, &[0x1e, 0, 0, 0, 1, 0], 0);
    let mut srst = ata(0, 0, 0);
    srst[1] = 0;
    srst[15] = fis::CONTROL_SRST;
    let control = Cmd {
        fis: srst,
        packet: [0; 16],
        atapi: false,
        write: false,
        prdt: vec![],
    };
    assert_eq!(r.issue(1, 0, &control).1 & 0x80, 0x80);
    let mut release = srst;
    release[15] = 0;
    let (_, tfd) = r.issue(
        1,
        1,
        &Cmd {
            fis: release,
            ..control
        },
    );
    assert_eq!(tfd, 0x0100);
    r.scsi(1, &[0x1b, 0, 0, 0, 2, 0], 0);
    // HBA reset: everything back, addresses kept.
    r.write(0x04, 1 << 1);
    r.write(0x04, 1);
    assert_eq!(r.read(0x04), 1 << 31);
    assert_eq!(r.port_reg(1, 0x18) & 1, 0);
    assert_eq!(r.port_reg(1, 0x00), list(1) as u32);
    // The machine's reset: the tray (opened above) is closed again with the disc in.
    r.ahci.reset();
    r.ahci
        .config_write(REG_COMMAND, 0, &[COMMAND_MEMORY as u8 | 4]);
    r.start_port(1);
    r.scsi(1, &[0x00; 6], 0);
    drop(r.dir);
}

#[test]
fn hostile_register_writes_do_not_break_the_controller() {
    let mut r = rig("hostile");
    for off in (0..0x800u64).step_by(4) {
        r.write(off, 0xffff_ffff);
        r.write(off, 0);
        r.write(off, 0xa5a5_5a5a);
    }
    for len in [1usize, 2, 3, 8] {
        assert!(r.ahci.mmio_write(BAR + 0x118, &vec![0xff; len]));
    }
    // Issue commands on every port with garbage lists, including ports without a device.
    for p in 0..PORTS {
        r.set_port_reg(p, 0x18, 0x11);
        r.set_port_reg(p, 0x38, u32::MAX);
    }
    std::thread::sleep(Duration::from_millis(50));
    r.write(0x04, 1);
    r.start_port(0);
    let ok = Cmd {
        fis: ata(0x25, 3, 1),
        packet: [0; 16],
        atapi: false,
        write: false,
        prdt: vec![(data_at(0), 512)],
    };
    assert_eq!(r.issue(0, 0, &ok).1, 0x50);
    assert_eq!(r.data(0, 512), vec![0x5a; 512]);
}
