//! Fuzzes virtio-blk request handling with descriptor chains a hostile guest builds: any
//! addresses, lengths, flags and links in the table, any header and data in guest memory,
//! against a real qcow2 image.
#![no_main]

use std::sync::{OnceLock, RwLock};

use libfuzzer_sys::fuzz_target;
use tessera_storage::{ops, Datastore, Disk, Format};
use tessera_vmm::devices::virtio::block::request::{handle, BlockBackend, ID_BYTES};
use virtio_queue::desc::{split::Descriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Guest memory: 1 MiB, so that fuzzed addresses often land inside it and sometimes not.
const MEM: usize = 1 << 20;

struct Rig {
    backend: BlockBackend,
    bounce: std::sync::Mutex<Vec<u8>>,
}

fn rig() -> &'static Rig {
    static RIG: OnceLock<Rig> = OnceLock::new();
    RIG.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("tessera-fuzz-blk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let ds = Datastore::new(&dir).expect("datastore");
        let img = dir.join("d.qcow2");
        ops::create(&ds, &img, 1 << 20, Format::Qcow2, 65536).expect("image");
        let disk = Disk::open(&ds, &img, Format::Qcow2, true).expect("open");
        Rig {
            backend: BlockBackend {
                disk: RwLock::new(disk),
                read_only: false,
                id: [b'F'; ID_BYTES],
            },
            bounce: std::sync::Mutex::new(Vec::new()),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    // [n][n descriptors of 14 bytes: addr u64, len u32, flags u16][memory contents...]
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n % 16) + 1;
    if rest.len() < n * 14 {
        return;
    }
    let (table, fill) = rest.split_at(n * 14);
    let descs: Vec<RawDescriptor> = table
        .chunks_exact(14)
        .map(|d| {
            let addr = u64::from_le_bytes(d[0..8].try_into().expect("8 bytes")) % (2 * MEM as u64);
            let len = u32::from_le_bytes(d[8..12].try_into().expect("4 bytes")) % (64 << 10);
            let flags = u16::from_le_bytes([d[12], d[13]]);
            RawDescriptor::from(Descriptor::new(addr, len, flags, 0))
        })
        .collect();
    let Ok(mem) = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM)]) else {
        return;
    };
    // What the guest left in memory: headers and data at the start of each 64 KiB block.
    for (i, chunk) in fill.chunks(64).take(16).enumerate() {
        let _ = mem.write_slice(chunk, GuestAddress((i as u64) * (64 << 10)));
    }
    let q = MockSplitQueue::new(&mem, 16);
    let Ok(chain) = q.build_desc_chain(&descs) else {
        return;
    };
    let r = rig();
    let mut bounce = r.bounce.lock().expect("lock");
    let _ = handle(chain, &mem, &r.backend, &mut bounce);
});
