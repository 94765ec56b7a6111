//! Fuzzes virtio-net's three paths with rings a hostile guest builds: frames from the host
//! delivered into any receive buffers (mergeable or not), transmit chains of any layout sent
//! to a stand-in tap (a datagram socket), and control commands of any content.
#![no_main]

use std::os::unix::net::UnixDatagram;
use std::sync::atomic::AtomicU16;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use tessera_vmm::devices::virtio::net::rx::RxQueue;
use tessera_vmm::devices::virtio::net::tap::{socket_pair, TapQueue};
use tessera_vmm::devices::virtio::net::{ctrl, tx, Net, Shared};
use virtio_queue::desc::{split::Descriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

/// Guest memory: 1 MiB, so that fuzzed addresses often land inside it and sometimes not.
const MEM: usize = 1 << 20;

struct Rig {
    shared: Arc<Shared>,
    hosts: Vec<UnixDatagram>,
}

fn rig() -> &'static Rig {
    static RIG: OnceLock<Rig> = OnceLock::new();
    RIG.get_or_init(|| {
        let mut taps = Vec::new();
        let mut hosts = Vec::new();
        for i in 0..2 {
            let (g, h) = socket_pair().expect("socket pair");
            taps.push(TapQueue::from_fd(g, &format!("f{i}")));
            hosts.push(UnixDatagram::from(h));
        }
        let shared = Shared {
            taps: taps.into(),
            active_pairs: AtomicU16::new(1),
            wakes: (0..2)
                .map(|_| EventFd::new(libc::EFD_NONBLOCK).expect("eventfd"))
                .collect(),
            stats: Arc::default(),
        };
        Rig {
            shared: Arc::new(shared),
            hosts,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    // [mode][n][frame length u16][n descriptors of 16 bytes: addr u64, len u32, flags u16,
    // next u16][memory contents...]
    let [mode, n, l0, l1, rest @ ..] = data else {
        return;
    };
    let n = usize::from(n % 16) + 1;
    if rest.len() < n * 16 {
        return;
    }
    let (table, fill) = rest.split_at(n * 16);
    let descs: Vec<RawDescriptor> = table
        .chunks_exact(16)
        .map(|d| {
            let addr = u64::from_le_bytes(d[0..8].try_into().expect("8 bytes")) % (2 * MEM as u64);
            let len = u32::from_le_bytes(d[8..12].try_into().expect("4 bytes")) % (80 << 10);
            let flags = u16::from_le_bytes([d[12], d[13]]);
            let next = u16::from_le_bytes([d[14], d[15]]) % 16;
            RawDescriptor::from(Descriptor::new(addr, len, flags, next))
        })
        .collect();
    let Ok(mem) = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM)]) else {
        return;
    };
    // What the guest left in memory: headers and commands at the start of each 64 KiB block.
    for (i, chunk) in fill.chunks(64).take(16).enumerate() {
        let _ = mem.write_slice(chunk, GuestAddress((i as u64) * (64 << 10)));
    }
    let q = MockSplitQueue::new(&mem, 16);
    let r = rig();
    let features = Net::features_for(2) | (1 << 32) | (1 << 29);
    match mode % 4 {
        // Receive: the descriptors as the driver's buffers (each its own chain or linked as
        // their flags say), one frame of the given length, then the notification decisions.
        0 | 1 => {
            if q.add_desc_chains(&descs, 0).is_err() {
                return;
            }
            let Ok(mut queue) = q.create_queue::<Queue>() else {
                return;
            };
            use virtio_queue::QueueT;
            queue.set_event_idx(mode & 4 != 0);
            let mut rx = RxQueue::new(queue, mode % 4 == 0);
            let len = usize::from(u16::from_le_bytes([*l0, *l1]));
            let mut frame: Vec<u8> = fill.iter().copied().cycle().take(len).collect();
            for _ in 0..3 {
                let _ = rx.deliver(&mem, &mut frame);
                let _ = rx.wait_for_buffers(&mem);
                let _ = rx.needs_notification(&mem);
            }
        }
        // Transmit one chain to the stand-in tap, whose host end is drained.
        2 => {
            let Ok(chain) = q.build_desc_chain(&descs) else {
                return;
            };
            let mut buf = Vec::new();
            let _ = tx::transmit(chain, &mem, &r.shared.taps[0], &mut buf);
            let mut sink = [0u8; 256];
            while r.hosts[0].recv(&mut sink).is_ok() {}
        }
        // One control command.
        _ => {
            let Ok(chain) = q.build_desc_chain(&descs) else {
                return;
            };
            let _ = ctrl::handle(chain, &mem, features, &r.shared);
        }
    }
});
