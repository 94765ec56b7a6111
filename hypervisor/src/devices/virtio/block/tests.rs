//! Request handling against a real image, with well-formed and hostile descriptor chains.

use std::sync::RwLock;

use tessera_storage::{ops, Datastore, Disk};
use virtio_bindings::virtio_blk::*;
use virtio_bindings::virtio_ring::VRING_DESC_F_WRITE;
use virtio_queue::desc::{split::Descriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::request::{handle, BlockBackend, ChainError, ID_BYTES};

const MEM: usize = 8 << 20;
const HDR: u64 = 0x10_0000;
const DATA: u64 = 0x20_0000;
const STATUS: u64 = 0x30_0000;

struct Rig {
    mem: GuestMemoryMmap,
    backend: BlockBackend,
    _dir: tempdir::Dir,
}

mod tempdir {
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn rig(name: &str, read_only: bool) -> Rig {
    let dir = std::env::temp_dir().join(format!("tessera-blk-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ds = Datastore::new(&dir).unwrap();
    let img = dir.join("d.qcow2");
    ops::create(&ds, &img, 4 << 20, tessera_storage::Format::Qcow2, 65536).unwrap();
    let disk = Disk::open(&ds, &img, tessera_storage::Format::Qcow2, true).unwrap();
    disk.write(&[0x42; 4096], 8192).unwrap();
    let mut id = [0u8; ID_BYTES];
    id[..4].copy_from_slice(b"ID-1");
    Rig {
        mem: GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM)]).unwrap(),
        backend: BlockBackend {
            disk: RwLock::new(disk),
            read_only,
            id,
        },
        _dir: tempdir::Dir(dir),
    }
}

fn header(mem: &GuestMemoryMmap, kind: u32, sector: u64) {
    let mut h = [0u8; 16];
    h[0..4].copy_from_slice(&kind.to_le_bytes());
    h[8..16].copy_from_slice(&sector.to_le_bytes());
    mem.write_slice(&h, GuestAddress(HDR)).unwrap();
}

fn desc(addr: u64, len: u32, writable: bool) -> RawDescriptor {
    let flags = if writable {
        VRING_DESC_F_WRITE as u16
    } else {
        0
    };
    RawDescriptor::from(Descriptor::new(addr, len, flags, 0))
}

/// Runs one chain; returns the outcome and the status byte in guest memory.
fn run(r: &Rig, descs: &[RawDescriptor]) -> Result<(u8, u32), ChainError> {
    let q = MockSplitQueue::new(&r.mem, 16);
    let chain = q.build_desc_chain(descs).unwrap();
    let mut bounce = Vec::new();
    let out = handle(chain, &r.mem, &r.backend, &mut bounce)?;
    let status: u8 = r.mem.read_obj(GuestAddress(STATUS)).unwrap();
    assert_eq!(status, out.status);
    Ok((out.status, out.used))
}

fn standard(len: u32, writable_data: bool) -> Vec<RawDescriptor> {
    vec![
        desc(HDR, 16, false),
        desc(DATA, len, writable_data),
        desc(STATUS, 1, true),
    ]
}

#[test]
fn read_write_flush_get_id() {
    let r = rig("rw", false);
    header(&r.mem, VIRTIO_BLK_T_IN, 16);
    assert_eq!(run(&r, &standard(4096, true)).unwrap(), (0, 4097));
    let mut got = [0u8; 4096];
    r.mem.read_slice(&mut got, GuestAddress(DATA)).unwrap();
    assert_eq!(got, [0x42; 4096]);

    r.mem
        .write_slice(&[0x99; 1024], GuestAddress(DATA))
        .unwrap();
    header(&r.mem, VIRTIO_BLK_T_OUT, 100);
    assert_eq!(run(&r, &standard(1024, false)).unwrap(), (0, 1));
    let mut back = [0u8; 1024];
    r.backend
        .disk
        .read()
        .unwrap()
        .read(&mut back, 100 * 512)
        .unwrap();
    assert_eq!(back, [0x99; 1024]);

    header(&r.mem, VIRTIO_BLK_T_FLUSH, 0);
    let flush = [desc(HDR, 16, false), desc(STATUS, 1, true)];
    assert_eq!(run(&r, &flush).unwrap().0, VIRTIO_BLK_S_OK as u8);

    header(&r.mem, VIRTIO_BLK_T_GET_ID, 0);
    assert_eq!(run(&r, &standard(20, true)).unwrap(), (0, 21));
    let mut id = [0u8; 4];
    r.mem.read_slice(&mut id, GuestAddress(DATA)).unwrap();
    assert_eq!(&id, b"ID-1");
}

#[test]
fn data_and_status_in_one_descriptor() {
    let r = rig("combined", false);
    header(&r.mem, VIRTIO_BLK_T_IN, 16);
    // 512 bytes of data followed by the status byte, in one writable buffer.
    let descs = [desc(HDR, 16, false), desc(STATUS - 512, 513, true)];
    assert_eq!(run(&r, &descs).unwrap(), (0, 513));
    let mut got = [0u8; 512];
    r.mem
        .read_slice(&mut got, GuestAddress(STATUS - 512))
        .unwrap();
    assert_eq!(got, [0x42; 512]);
}

#[test]
fn out_of_range_requests_fail_with_ioerr() {
    let r = rig("range", false);
    let ioerr = VIRTIO_BLK_S_IOERR as u8;
    for sector in [8191u64, 8192, u64::MAX, u64::MAX / 512] {
        header(&r.mem, VIRTIO_BLK_T_IN, sector);
        assert_eq!(run(&r, &standard(4096, true)).unwrap().0, ioerr, "{sector}");
        header(&r.mem, VIRTIO_BLK_T_OUT, sector);
        assert_eq!(
            run(&r, &standard(4096, false)).unwrap().0,
            ioerr,
            "{sector}"
        );
    }
    // Not whole sectors.
    header(&r.mem, VIRTIO_BLK_T_OUT, 0);
    assert_eq!(run(&r, &standard(100, false)).unwrap().0, ioerr);
    // Header cut short.
    let short = [desc(HDR, 8, false), desc(STATUS, 1, true)];
    assert_eq!(run(&r, &short).unwrap().0, ioerr);
    // Unknown request type.
    header(&r.mem, 0x7777, 0);
    assert_eq!(
        run(&r, &standard(512, true)).unwrap().0,
        VIRTIO_BLK_S_UNSUPP as u8
    );
}

#[test]
fn hostile_chains_are_refused() {
    let r = rig("hostile", false);
    header(&r.mem, VIRTIO_BLK_T_IN, 0);
    let outside = MEM as u64 - 100;
    for descs in [
        // Data runs past the end of guest memory.
        vec![
            desc(HDR, 16, false),
            desc(outside, 4096, true),
            desc(STATUS, 1, true),
        ],
        // Data at an address far beyond guest memory.
        vec![
            desc(HDR, 16, false),
            desc(1 << 40, 512, true),
            desc(STATUS, 1, true),
        ],
        // Header outside guest memory.
        vec![desc(u64::MAX - 8, 16, false), desc(STATUS, 1, true)],
    ] {
        assert!(matches!(run(&r, &descs), Err(ChainError::Memory(_))));
    }
    // Readable after writable.
    let mixed = [
        desc(HDR, 16, false),
        desc(STATUS, 1, true),
        desc(DATA, 512, false),
    ];
    assert!(matches!(run(&r, &mixed), Err(ChainError::Order)));
    // Nothing writable: no status byte.
    let ro = [desc(HDR, 16, false), desc(DATA, 512, false)];
    assert!(matches!(run(&r, &ro), Err(ChainError::NoStatus)));
    let empty_status = [desc(HDR, 16, false), desc(STATUS, 0, true)];
    assert!(matches!(run(&r, &empty_status), Err(ChainError::NoStatus)));
    // The image is unharmed.
    let mut back = [0u8; 4096];
    r.backend
        .disk
        .read()
        .unwrap()
        .read(&mut back, 8192)
        .unwrap();
    assert_eq!(back, [0x42; 4096]);
}

#[test]
fn a_looping_chain_ends() {
    let r = rig("loop", false);
    header(&r.mem, VIRTIO_BLK_T_IN, 0);
    let q = MockSplitQueue::new(&r.mem, 16);
    // Descriptor 0 -> 1 -> 0 -> ...: virtio-queue stops after the queue size.
    let next = virtio_bindings::virtio_ring::VRING_DESC_F_NEXT as u16;
    let descs = [
        RawDescriptor::from(Descriptor::new(HDR, 16, next, 1)),
        RawDescriptor::from(Descriptor::new(
            STATUS,
            1,
            next | VRING_DESC_F_WRITE as u16,
            0,
        )),
    ];
    let chain = q.build_multiple_desc_chains(&descs).unwrap();
    let mut bounce = Vec::new();
    // Either refused or answered; it must return.
    let _ = handle(chain, &r.mem, &r.backend, &mut bounce);
}

fn segment(mem: &GuestMemoryMmap, sector: u64, sectors: u32, flags: u32) {
    let mut s = [0u8; 16];
    s[0..8].copy_from_slice(&sector.to_le_bytes());
    s[8..12].copy_from_slice(&sectors.to_le_bytes());
    s[12..16].copy_from_slice(&flags.to_le_bytes());
    mem.write_slice(&s, GuestAddress(DATA)).unwrap();
}

#[test]
fn discard_and_write_zeroes() {
    let r = rig("discard", false);
    let seg = standard(16, false);
    segment(&r.mem, 16, 8, 0);
    header(&r.mem, VIRTIO_BLK_T_DISCARD, 0);
    assert_eq!(run(&r, &seg).unwrap().0, 0);
    let mut back = [0xffu8; 4096];
    r.backend
        .disk
        .read()
        .unwrap()
        .read(&mut back, 8192)
        .unwrap();
    assert_eq!(back, [0; 4096]);

    r.backend.disk.read().unwrap().write(&[7; 512], 0).unwrap();
    segment(&r.mem, 0, 1, 0);
    header(&r.mem, VIRTIO_BLK_T_WRITE_ZEROES, 0);
    assert_eq!(run(&r, &seg).unwrap().0, 0);
    let mut b = [0xffu8; 512];
    r.backend.disk.read().unwrap().read(&mut b, 0).unwrap();
    assert_eq!(b, [0; 512]);

    // Discard takes no flags; a segment past the end fails; too many segments is unsupported.
    segment(&r.mem, 0, 1, 1);
    header(&r.mem, VIRTIO_BLK_T_DISCARD, 0);
    assert_eq!(run(&r, &seg).unwrap().0, VIRTIO_BLK_S_UNSUPP as u8);
    segment(&r.mem, u64::MAX, 1, 0);
    assert_eq!(run(&r, &seg).unwrap().0, VIRTIO_BLK_S_IOERR as u8);
    assert_eq!(
        run(&r, &standard(16 * 33, false)).unwrap().0,
        VIRTIO_BLK_S_UNSUPP as u8
    );
}

#[test]
fn read_only_disk_refuses_writes() {
    let r = rig("ro", true);
    header(&r.mem, VIRTIO_BLK_T_OUT, 0);
    assert_eq!(
        run(&r, &standard(512, false)).unwrap().0,
        VIRTIO_BLK_S_IOERR as u8
    );
    segment(&r.mem, 0, 1, 0);
    header(&r.mem, VIRTIO_BLK_T_DISCARD, 0);
    assert_eq!(
        run(&r, &standard(16, false)).unwrap().0,
        VIRTIO_BLK_S_IOERR as u8
    );
    header(&r.mem, VIRTIO_BLK_T_IN, 16);
    assert_eq!(run(&r, &standard(512, true)).unwrap().0, 0);
}
