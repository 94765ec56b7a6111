//! virtio-net against guest rings built in memory: receive into mergeable and plain buffers,
//! hostile chains both ways, control commands, and a queue pair's thread end to end, over a
//! datagram socket and over a real tap in a network namespace of the test's own.

use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_bindings::virtio_net::*;
use virtio_bindings::virtio_ring::VRING_DESC_F_WRITE;
use virtio_queue::desc::{split::Descriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::ctrl::{self, CtrlError};
use super::rx::{Delivery, RxQueue};
use super::tap::{self, TapQueue, VNET_HDR_LEN};
use super::tx::{self, TxError, MAX_FRAME};
use super::worker::PairWorker;
use super::*;
use crate::devices::virtio::VirtioInterrupt;

const MEM: usize = 16 << 20;
const BUF: u64 = 0x10_0000;

fn memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM)]).unwrap()
}

fn desc(addr: u64, len: u32, writable: bool) -> RawDescriptor {
    let flags = if writable {
        VRING_DESC_F_WRITE as u16
    } else {
        0
    };
    RawDescriptor::from(Descriptor::new(addr, len, flags, 0))
}

/// `n` single-descriptor receive buffers of `len` bytes at BUF, BUF + 64 KiB, ...
fn rx_buffers(n: u16, len: u32) -> Vec<RawDescriptor> {
    (0..n)
        .map(|i| desc(BUF + u64::from(i) * 0x1_0000, len, true))
        .collect()
}

/// A frame: a zero virtio-net header, then `payload` (an Ethernet frame).
fn with_header(payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; VNET_HDR_LEN];
    f.extend_from_slice(payload);
    f
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}

fn used(q: &MockSplitQueue<'_, GuestMemoryMmap>) -> Vec<(u32, u32)> {
    let n = q.used().idx().load();
    (0..n)
        .map(|i| {
            let e = q.used().ring().ref_at(usize::from(i)).unwrap().load();
            (e.id(), e.len())
        })
        .collect()
}

#[test]
fn a_frame_spans_mergeable_buffers_published_together() {
    let mem = memory();
    let q = MockSplitQueue::new(&mem, 16);
    q.add_desc_chains(&rx_buffers(4, 1024), 0).unwrap();
    let mut rx = RxQueue::new(q.create_queue().unwrap(), true);
    let mut frame = with_header(&pattern(2500));
    let sent = frame.clone();
    assert_eq!(rx.deliver(&mem, &mut frame).unwrap(), Delivery::Delivered);
    // 2512 bytes: 1024 + 1024 + 464, in three buffers, one index update.
    assert_eq!(used(&q), vec![(0, 1024), (1, 1024), (2, 464)]);
    let mut got = vec![0u8; 2512];
    for (i, chunk) in got.chunks_mut(1024).enumerate() {
        mem.read_slice(chunk, GuestAddress(BUF + i as u64 * 0x1_0000))
            .unwrap();
    }
    assert_eq!(u16::from_le_bytes([got[10], got[11]]), 3, "num_buffers");
    assert_eq!(&got[VNET_HDR_LEN..], &sent[VNET_HDR_LEN..]);
    assert!(rx.needs_notification(&mem).unwrap());
    assert!(!rx.needs_notification(&mem).unwrap(), "nothing new");
}

#[test]
fn a_frame_waits_for_buffers_and_the_driver_is_asked_to_kick() {
    let mem = memory();
    let q = MockSplitQueue::new(&mem, 16);
    q.add_desc_chains(&rx_buffers(1, 1024), 0).unwrap();
    let mut queue: Queue = q.create_queue().unwrap();
    queue.set_event_idx(true);
    let mut rx = RxQueue::new(queue, true);
    let mut frame = with_header(&pattern(1500));
    assert_eq!(rx.deliver(&mem, &mut frame).unwrap(), Delivery::NoBuffers);
    assert!(used(&q).is_empty());
    assert_eq!(rx.queue.next_avail(), 0, "the buffer taken was given back");
    assert!(!rx.wait_for_buffers(&mem).unwrap());
    // avail_event (after the used ring) asks for a kick at the next buffer added: entry 1.
    let avail_event: u16 = mem
        .read_obj(q.used_addr().unchecked_add(4 + 8 * 16))
        .unwrap();
    assert_eq!(avail_event, 1);
    q.add_desc_chains(&rx_buffers(2, 1024)[1..], 1).unwrap();
    assert_eq!(rx.deliver(&mem, &mut frame).unwrap(), Delivery::Delivered);
    assert_eq!(used(&q), vec![(0, 1024), (1, 488)]);
}

#[test]
fn without_mergeable_buffers_a_frame_too_large_is_dropped_and_the_buffer_returned() {
    let mem = memory();
    let q = MockSplitQueue::new(&mem, 16);
    q.add_desc_chains(&rx_buffers(2, 1024), 0).unwrap();
    let mut rx = RxQueue::new(q.create_queue().unwrap(), false);
    let mut big = with_header(&pattern(1500));
    assert!(matches!(
        rx.deliver(&mem, &mut big).unwrap(),
        Delivery::Dropped(_)
    ));
    let mut small = with_header(&pattern(100));
    assert_eq!(rx.deliver(&mem, &mut small).unwrap(), Delivery::Delivered);
    assert_eq!(used(&q), vec![(0, 0), (1, 112)]);
    let mut hdr = [0u8; 12];
    mem.read_slice(&mut hdr, GuestAddress(BUF + 0x1_0000))
        .unwrap();
    assert_eq!(u16::from_le_bytes([hdr[10], hdr[11]]), 1);
}

#[test]
fn hostile_receive_buffers_go_back_empty_and_the_frame_takes_the_next() {
    let mem = memory();
    let q = MockSplitQueue::new(&mem, 16);
    let descs = [
        desc(BUF, 1024, false),             // device-readable: no room
        desc(MEM as u64 - 100, 4096, true), // runs past guest memory
        desc(BUF + 0x2_0000, 4, true),      // too small for the header
        desc(BUF + 0x3_0000, 2048, true),   // fine
    ];
    q.add_desc_chains(&descs, 0).unwrap();
    let mut rx = RxQueue::new(q.create_queue().unwrap(), true);
    let mut frame = with_header(&pattern(60));
    assert_eq!(rx.deliver(&mem, &mut frame).unwrap(), Delivery::Delivered);
    assert_eq!(used(&q), vec![(0, 0), (1, 0), (2, 0), (3, 72)]);
}

#[test]
fn a_frame_larger_than_the_whole_ring_is_dropped_not_waited_for() {
    let mem = memory();
    let q = MockSplitQueue::new(&mem, 4);
    q.add_desc_chains(&rx_buffers(4, 64), 0).unwrap();
    let mut rx = RxQueue::new(q.create_queue().unwrap(), true);
    let mut frame = with_header(&pattern(1000));
    assert!(matches!(
        rx.deliver(&mem, &mut frame).unwrap(),
        Delivery::Dropped(_)
    ));
    assert_eq!(used(&q), vec![(0, 0), (1, 0), (2, 0), (3, 0)]);
}

#[test]
fn transmitted_chains_are_checked() {
    let mem = memory();
    let (guest, host) = tap::socket_pair().unwrap();
    let tap = TapQueue::from_fd(guest, "t0");
    let host = std::os::unix::net::UnixDatagram::from(host);
    let q = MockSplitQueue::new(&mem, 16);
    let frame = with_header(&pattern(1000));
    mem.write_slice(&frame[..12], GuestAddress(BUF)).unwrap();
    mem.write_slice(&frame[12..], GuestAddress(BUF + 0x1000))
        .unwrap();
    let mut buf = Vec::new();
    // Header and frame in two buffers; a device-writable one at the end is not sent.
    let chain = q
        .build_desc_chain(&[
            desc(BUF, 12, false),
            desc(BUF + 0x1000, 1000, false),
            desc(BUF + 0x9000, 64, true),
        ])
        .unwrap();
    assert_eq!(tx::transmit(chain, &mem, &tap, &mut buf).unwrap(), 1012);
    let mut got = vec![0u8; 2000];
    let n = host.recv(&mut got).unwrap();
    assert_eq!(&got[..n], &frame[..]);

    let short = q.build_desc_chain(&[desc(BUF, 20, false)]).unwrap();
    assert!(matches!(
        tx::transmit(short, &mem, &tap, &mut buf),
        Err(TxError::Short(20))
    ));
    let long = q
        .build_desc_chain(&[desc(BUF, MAX_FRAME as u32 + 1, false)])
        .unwrap();
    assert!(matches!(
        tx::transmit(long, &mem, &tap, &mut buf),
        Err(TxError::Long(_))
    ));
    let outside = q
        .build_desc_chain(&[desc(MEM as u64 - 10, 100, false)])
        .unwrap();
    assert!(matches!(
        tx::transmit(outside, &mem, &tap, &mut buf),
        Err(TxError::Memory(_))
    ));
    assert!(host.recv(&mut got).is_err(), "nothing else was sent");
}

fn shared(pairs: usize) -> (Arc<Shared>, Vec<std::os::unix::net::UnixDatagram>) {
    let mut taps = Vec::new();
    let mut hosts = Vec::new();
    for i in 0..pairs {
        let (g, h) = tap::socket_pair().unwrap();
        taps.push(TapQueue::from_fd(g, &format!("t{i}")));
        hosts.push(std::os::unix::net::UnixDatagram::from(h));
    }
    let shared = Shared {
        taps: taps.into(),
        active_pairs: AtomicU16::new(1),
        wakes: (0..pairs)
            .map(|_| EventFd::new(libc::EFD_NONBLOCK).unwrap())
            .collect(),
        stats: Arc::default(),
    };
    (Arc::new(shared), hosts)
}

/// Runs one control command; returns the answer byte.
fn command(mem: &GuestMemoryMmap, shared: &Shared, features: u64, cmd: &[u8]) -> u8 {
    let q = MockSplitQueue::new(mem, 16);
    mem.write_slice(cmd, GuestAddress(BUF)).unwrap();
    mem.write_obj(0xeeu8, GuestAddress(BUF + 0x1000)).unwrap();
    let chain = q
        .build_desc_chain(&[
            desc(BUF, cmd.len() as u32, false),
            desc(BUF + 0x1000, 1, true),
        ])
        .unwrap();
    let (used, _) = ctrl::handle(chain, mem, features, shared).unwrap();
    assert_eq!(used, 1);
    mem.read_obj(GuestAddress(BUF + 0x1000)).unwrap()
}

#[test]
fn control_commands_answer_ok_only_for_what_was_offered() {
    let mem = memory();
    let (sh, _hosts) = shared(4);
    let all = Net::features_for(4) | crate::devices::virtio::features::VERSION_1;
    let ok = VIRTIO_NET_OK as u8;
    let err = VIRTIO_NET_ERR as u8;
    let mq = VIRTIO_NET_CTRL_MQ as u8;
    assert_eq!(command(&mem, &sh, all, &[mq, 0, 3, 0]), ok);
    assert_eq!(sh.active_pairs.load(Ordering::SeqCst), 3);
    assert_eq!(sh.wakes[2].read().unwrap(), 1, "the threads are woken");
    for bad in [[mq, 0, 0, 0], [mq, 0, 5, 0]] {
        assert_eq!(command(&mem, &sh, all, &bad), err, "{bad:?}");
    }
    assert_eq!(command(&mem, &sh, all, &[mq, 0, 2]), err, "short data");
    assert_eq!(sh.active_pairs.load(Ordering::SeqCst), 3, "unchanged");
    let no_mq = all & !(1 << VIRTIO_NET_F_MQ);
    assert_eq!(command(&mem, &sh, no_mq, &[mq, 0, 2, 0]), err);

    let rx = VIRTIO_NET_CTRL_RX as u8;
    assert_eq!(command(&mem, &sh, all, &[rx, 0, 1]), ok, "promiscuous");
    assert_eq!(
        command(&mem, &sh, all, &[rx, 2, 1]),
        err,
        "ALLUNI not offered"
    );
    let mac = VIRTIO_NET_CTRL_MAC as u8;
    let mut table = vec![mac, 0, 1, 0, 0, 0];
    table.extend_from_slice(&[0x52, 0x54, 0, 1, 2, 3]);
    table.extend_from_slice(&[0, 0, 0, 0]);
    assert_eq!(command(&mem, &sh, all, &table), ok);
    table[2] = 200; // claims 200 addresses
    assert_eq!(command(&mem, &sh, all, &table), err);

    let off = VIRTIO_NET_CTRL_GUEST_OFFLOADS as u8;
    let csum = (1u64 << VIRTIO_NET_F_GUEST_CSUM).to_le_bytes();
    let mut set = vec![off, 0];
    set.extend_from_slice(&csum);
    assert_eq!(command(&mem, &sh, all, &set), ok);
    let mut set = vec![off, 0];
    set.extend_from_slice(&(1u64 << VIRTIO_NET_F_MRG_RXBUF).to_le_bytes());
    assert_eq!(command(&mem, &sh, all, &set), err, "not an offload");
    assert_eq!(command(&mem, &sh, all, &[9, 9]), err, "unknown class");
    assert_eq!(command(&mem, &sh, all, &[]), err, "empty");

    // No device-writable byte: no answer possible.
    let q = MockSplitQueue::new(&mem, 16);
    let chain = q.build_desc_chain(&[desc(BUF, 4, false)]).unwrap();
    assert!(matches!(
        ctrl::handle(chain, &mem, all, &sh),
        Err(CtrlError::NoAck)
    ));
}

#[test]
fn the_control_queue_asks_for_a_kick_at_the_next_command() {
    // Linux spins until a command is answered: with EVENT_IDX, a device that leaves
    // avail_event behind is never kicked for the second command.
    let mem = memory();
    let (sh, _hosts) = shared(1);
    let q = MockSplitQueue::new(&mem, 16);
    let cmd = [VIRTIO_NET_CTRL_RX as u8, 0, 1];
    mem.write_slice(&cmd, GuestAddress(BUF)).unwrap();
    q.add_desc_chains(
        &[
            RawDescriptor::from(Descriptor::new(BUF, 3, 1, 1)),
            desc(BUF + 0x1000, 1, true),
        ],
        0,
    )
    .unwrap();
    let mut queue: Queue = q.create_queue().unwrap();
    queue.set_event_idx(true);
    let mut c = ctrl::CtrlQueue {
        index: 2,
        queue,
        kick: EventFd::new(libc::EFD_NONBLOCK).unwrap(),
    };
    let mut log = crate::rate_limit::RateLimiter::new(10, Duration::from_secs(5));
    let features = Net::features_for(1) | crate::devices::virtio::features::RING_EVENT_IDX;
    assert!(ctrl::serve(&mut c, &mem, features, &sh, &mut log).unwrap());
    assert_eq!(used(&q), vec![(0, 1)]);
    let avail_event: u16 = mem
        .read_obj(q.used_addr().unchecked_add(4 + 8 * 16))
        .unwrap();
    assert_eq!(avail_event, 1, "a kick is wanted when command 1 comes");
}

#[test]
fn offloads_follow_the_guest_features() {
    let f = |bits: &[u32]| bits.iter().fold(0u64, |f, b| f | 1 << b);
    assert_eq!(guest_offloads(f(&[VIRTIO_NET_F_GUEST_TSO4])), 0, "no csum");
    assert_eq!(
        guest_offloads(f(&[
            VIRTIO_NET_F_GUEST_CSUM,
            VIRTIO_NET_F_GUEST_TSO4,
            VIRTIO_NET_F_GUEST_TSO6,
            VIRTIO_NET_F_GUEST_ECN
        ])),
        tap::offload::CSUM | tap::offload::TSO4 | tap::offload::TSO6 | tap::offload::TSO_ECN
    );
    assert_eq!(Net::features_for(1) & (1 << VIRTIO_NET_F_MQ), 0);
    assert_ne!(Net::features_for(2) & (1 << VIRTIO_NET_F_MQ), 0);
}

/// Counts interrupts per queue.
#[derive(Default)]
struct Interrupts(Vec<AtomicUsize>);

impl VirtioInterrupt for Interrupts {
    fn queue(&self, index: u16) {
        self.0[usize::from(index)].fetch_add(1, Ordering::SeqCst);
    }
    fn config(&self) {}
}

/// One queue pair's rings at fixed places, its thread and what the test drives it with.
struct Pair {
    rxq: Ring,
    txq: Ring,
    rx_kick: EventFd,
    tx_kick: EventFd,
    stop: EventFd,
    irq: Arc<Interrupts>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Where a ring's parts are (a MockSplitQueue borrows the memory the thread also uses, and
/// making one again would zero the ring).
struct Ring {
    desc: GuestAddress,
    avail: GuestAddress,
    used: GuestAddress,
}

impl Ring {
    fn of(q: &MockSplitQueue<'_, GuestMemoryMmap>) -> Self {
        Self {
            desc: q.desc_table_addr(),
            avail: q.avail_addr(),
            used: q.used_addr(),
        }
    }

    /// Makes descriptor `slot` (a one-descriptor chain) available, as a driver does.
    fn push(&self, mem: &GuestMemoryMmap, slot: u16, d: RawDescriptor) {
        mem.write_obj(d, self.desc.unchecked_add(16 * u64::from(slot)))
            .unwrap();
        let idx: u16 = mem.read_obj(self.avail.unchecked_add(2)).unwrap();
        mem.write_obj(slot, self.avail.unchecked_add(4 + 2 * u64::from(idx % 16)))
            .unwrap();
        mem.write_obj(idx.wrapping_add(1), self.avail.unchecked_add(2))
            .unwrap();
    }
}

fn start_pair(mem: &GuestMemoryMmap, shared: Arc<Shared>, features: u64) -> Pair {
    let rxm = MockSplitQueue::create(mem, GuestAddress(0), 16);
    let txm = MockSplitQueue::create(mem, GuestAddress(0x8000), 16);
    // Receive buffers of 2 KiB (mergeable); the transmit ring fills later.
    rxm.add_desc_chains(&rx_buffers(8, 2048), 0).unwrap();
    let rx: Queue = rxm.create_queue().unwrap();
    let tx: Queue = txm.create_queue().unwrap();
    let irq = Arc::new(Interrupts((0..3).map(|_| AtomicUsize::new(0)).collect()));
    let (rx_kick, tx_kick, stop) = (
        EventFd::new(libc::EFD_NONBLOCK).unwrap(),
        EventFd::new(libc::EFD_NONBLOCK).unwrap(),
        EventFd::new(libc::EFD_NONBLOCK).unwrap(),
    );
    let worker = PairWorker {
        pair: 0,
        rx_index: 0,
        rx: RxQueue::new(rx, true),
        rx_kick: rx_kick.try_clone().unwrap(),
        tx_index: 1,
        tx,
        tx_kick: tx_kick.try_clone().unwrap(),
        ctrl: None,
        memory: mem.clone(),
        shared,
        features,
        interrupt: irq.clone(),
    };
    let theirs = stop.try_clone().unwrap();
    Pair {
        rxq: Ring::of(&rxm),
        txq: Ring::of(&txm),
        rx_kick,
        tx_kick,
        stop,
        irq,
        thread: Some(std::thread::spawn(move || worker.run(theirs))),
    }
}

impl Pair {
    /// Waits until ring `used`'s index reaches `n`.
    fn wait_used(&self, mem: &GuestMemoryMmap, used: GuestAddress, n: u16) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let idx: u16 = mem.read_obj(used.unchecked_add(2)).unwrap();
            if idx >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "used index {idx}, waiting for {n}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Queues frame `payload` (header added) at buffer slot `slot` on the transmit ring.
    fn send(&self, mem: &GuestMemoryMmap, slot: u16, payload: &[u8]) {
        let addr = 0x80_0000 + u64::from(slot) * 0x1_0000;
        let frame = with_header(payload);
        mem.write_slice(&frame, GuestAddress(addr)).unwrap();
        self.txq
            .push(mem, slot, desc(addr, frame.len() as u32, false));
        self.tx_kick.write(1).unwrap();
    }

    /// The frame in receive buffer `i` (its used length), header included.
    fn received(&self, mem: &GuestMemoryMmap, i: u16) -> Vec<u8> {
        let at = self.rxq.used.unchecked_add(4 + 8 * u64::from(i));
        let len: u32 = mem.read_obj(at.unchecked_add(4)).unwrap();
        let id: u32 = mem.read_obj(at).unwrap();
        let mut out = vec![0u8; len as usize];
        mem.read_slice(&mut out, GuestAddress(BUF + u64::from(id) * 0x1_0000))
            .unwrap();
        out
    }

    fn stop(mut self) {
        self.stop.write(1).unwrap();
        self.thread.take().unwrap().join().unwrap();
    }
}

#[test]
fn a_queue_pair_thread_moves_frames_both_ways() {
    let mem = memory();
    let (sh, hosts) = shared(1);
    let pair = start_pair(&mem, sh.clone(), Net::features_for(1));
    // Host to guest, then one larger than a buffer (two merged buffers).
    hosts[0].send(&with_header(&pattern(600))).unwrap();
    hosts[0].send(&with_header(&pattern(3000))).unwrap();
    pair.wait_used(&mem, pair.rxq.used, 3);
    let first = pair.received(&mem, 0);
    assert_eq!(&first[12..], &pattern(600)[..]);
    assert_eq!(u16::from_le_bytes([first[10], first[11]]), 1);
    let second = pair.received(&mem, 1);
    assert_eq!(u16::from_le_bytes([second[10], second[11]]), 2);
    assert!(pair.irq.0[0].load(Ordering::SeqCst) >= 1);
    // Guest to host.
    pair.send(&mem, 0, &pattern(1400));
    pair.wait_used(&mem, pair.txq.used, 1);
    let mut got = vec![0u8; 4096];
    let n = hosts[0].recv(&mut got).unwrap();
    assert_eq!(&got[12..n], &pattern(1400)[..]);
    // A malformed one is dropped and its buffer still returned.
    pair.send(&mem, 1, &[1, 2, 3]);
    pair.wait_used(&mem, pair.txq.used, 2);
    assert_eq!(sh.stats.tx_frames.load(Ordering::SeqCst), 1);
    assert_eq!(sh.stats.tx_dropped.load(Ordering::SeqCst), 1);
    assert_eq!(sh.stats.rx_frames.load(Ordering::SeqCst), 2);
    // More frames than buffers wait for the driver's next ones (3 of 8 used so far).
    for _ in 0..3 {
        hosts[0].send(&with_header(&pattern(3000))).unwrap();
    }
    pair.wait_used(&mem, pair.rxq.used, 7);
    std::thread::sleep(Duration::from_millis(50));
    let idx: u16 = mem.read_obj(pair.rxq.used.unchecked_add(2)).unwrap();
    assert_eq!(
        idx, 7,
        "the third frame waits: one buffer left for a two-buffer frame"
    );
    for (slot, d) in rx_buffers(10, 2048).into_iter().enumerate().skip(8) {
        pair.rxq.push(&mem, slot as u16, d);
    }
    pair.rx_kick.write(1).unwrap();
    pair.wait_used(&mem, pair.rxq.used, 9);
    assert_eq!(sh.stats.rx_dropped.load(Ordering::SeqCst), 0);
    pair.stop();
}

#[test]
fn an_available_index_a_ring_ahead_breaks_the_queue_instead_of_spinning() {
    // virtio-queue answers "no chain" for such an index while enable_notification answers
    // "entries wait": a thread looping on both never returned to its stop eventfd, so the
    // driver's reset (and the VMM's end) waited forever.
    let mem = memory();
    let (sh, _hosts) = shared(1);
    let pair = start_pair(&mem, sh.clone(), Net::features_for(1));
    mem.write_obj(100u16, pair.txq.avail.unchecked_add(2))
        .unwrap();
    pair.tx_kick.write(1).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let done = Instant::now();
    pair.stop();
    assert!(done.elapsed() < Duration::from_secs(5));
    // The control queue the same way.
    let q = MockSplitQueue::new(&mem, 16);
    let mut c = ctrl::CtrlQueue {
        index: 2,
        queue: q.create_queue().unwrap(),
        kick: EventFd::new(libc::EFD_NONBLOCK).unwrap(),
    };
    mem.write_obj(100u16, q.avail_addr().unchecked_add(2))
        .unwrap();
    let mut log = crate::rate_limit::RateLimiter::new(10, Duration::from_secs(5));
    assert!(ctrl::serve(&mut c, &mem, Net::features_for(1), &sh, &mut log).is_err());
    // And a receive queue.
    let mut rx = RxQueue::new(q.create_queue().unwrap(), true);
    assert!(rx.deliver(&mem, &mut with_header(&pattern(60))).is_err());
}

/// Whether this test may make network namespaces and taps: a loud SKIP when not, a failure
/// when TESSERA_REQUIRE_ROOT=1 (the test command sets it as root).
fn netns_or_skip(test: &str) -> bool {
    let why = match tap::enter_private_netns() {
        Ok(()) if std::path::Path::new("/dev/net/tun").exists() => return true,
        Ok(()) => "no /dev/net/tun".to_string(),
        Err(e) => format!("unshare(CLONE_NEWNET): {e}"),
    };
    assert!(
        std::env::var("TESSERA_REQUIRE_ROOT").as_deref() != Ok("1"),
        "{test}: a network namespace and a tap are required (TESSERA_REQUIRE_ROOT=1): {why}"
    );
    eprintln!("SKIP {test}: {why}");
    false
}

fn ip(args: &str) {
    let st = std::process::Command::new("ip")
        .args(args.split(' '))
        .status()
        .unwrap();
    assert!(st.success(), "ip {args}");
}

/// An ARP request from 10.9.0.2 (`mac`) for 10.9.0.1.
fn arp_request(mac: [u8; 6]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[10, 9, 0, 2]);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&[10, 9, 0, 1]);
    f
}

#[test]
fn a_real_tap_answers_the_guest_through_the_queue_pair_thread() {
    // The thread runs in a namespace of its own: the tap and its address exist only there.
    let t = std::thread::spawn(|| {
        if !netns_or_skip("a_real_tap_answers_the_guest_through_the_queue_pair_thread") {
            return;
        }
        let taps = tap::open_queues("tsnet0", 2).unwrap();
        ip("addr add 10.9.0.1/24 dev tsnet0");
        ip("link set tsnet0 up");
        // Pair 1 is not in use: its queue is detached so every frame comes to queue 0.
        taps[1].set_attached(false).unwrap();
        let mem = memory();
        let shared = Arc::new(Shared {
            taps: taps.into(),
            active_pairs: AtomicU16::new(1),
            wakes: (0..2)
                .map(|_| EventFd::new(libc::EFD_NONBLOCK).unwrap())
                .collect(),
            stats: Arc::default(),
        });
        let features = Net::features_for(2) & !GUEST_OFFLOAD_FEATURES;
        let pair = start_pair(&mem, shared.clone(), features);
        let mac = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
        pair.send(&mem, 0, &arp_request(mac));
        pair.wait_used(&mem, pair.txq.used, 1);
        // The kernel's ARP reply (and perhaps IPv6 chatter): find the reply among them.
        let deadline = Instant::now() + Duration::from_secs(10);
        let reply = 'found: loop {
            let idx: u16 = mem.read_obj(pair.rxq.used.unchecked_add(2)).unwrap();
            for i in 0..idx {
                let f = pair.received(&mem, i);
                if f.len() >= 12 + 42 && f[12 + 12..12 + 14] == [0x08, 0x06] {
                    break 'found f;
                }
            }
            assert!(Instant::now() < deadline, "no ARP reply among {idx} frames");
            std::thread::sleep(Duration::from_millis(10));
        };
        let eth = &reply[12..];
        assert_eq!(&eth[0..6], &mac, "to the guest");
        assert_eq!(&eth[20..22], &[0, 2], "an ARP reply");
        assert_eq!(&eth[28..32], &[10, 9, 0, 1], "from the tap's address");
        pair.stop();
    });
    t.join().unwrap();
}
