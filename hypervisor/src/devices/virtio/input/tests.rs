//! The tablet's configuration window, its events, and delivery into a real ring with good and
//! hostile buffers.

use std::sync::{Arc, Mutex};

use virtio_bindings::virtio_ring::VRING_DESC_F_WRITE;
use virtio_queue::desc::{split::Descriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::Queue;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::worker::InputWorker;
use super::*;
use crate::devices::virtio::{ActiveQueue, VirtioInterrupt};

fn cfg(t: &mut Tablet, select: u8, subsel: u8) -> (u8, Vec<u8>) {
    t.write_config(0, &[select, subsel]);
    let mut size = [0u8];
    t.read_config(2, &mut size);
    let mut data = vec![0u8; usize::from(size[0])];
    t.read_config(8, &mut data);
    (size[0], data)
}

#[test]
fn configuration_window() {
    let (mut t, _) = Tablet::new(&Sandbox::on(&[ThreadKind::Tablet])).unwrap();
    assert_eq!(cfg(&mut t, CFG_ID_NAME, 0).1, NAME);
    let (_, keys) = cfg(&mut t, CFG_EV_BITS, EV_KEY as u8);
    assert_eq!(keys.len(), 35);
    assert_eq!(keys[34], 0b111, "BTN_LEFT, BTN_RIGHT, BTN_MIDDLE");
    assert_eq!(cfg(&mut t, CFG_EV_BITS, EV_ABS as u8).1, [0b11]);
    assert_eq!(
        cfg(&mut t, CFG_EV_BITS, EV_REL as u8).1,
        [0, 1],
        "REL_WHEEL is code 8"
    );
    let (_, abs) = cfg(&mut t, CFG_ABS_INFO, ABS_Y as u8);
    assert_eq!(u32::from_le_bytes(abs[4..8].try_into().unwrap()), ABS_MAX);
    // Anything else is empty; bytes past subsel are read-only; reads past the end are zero.
    assert_eq!(cfg(&mut t, CFG_EV_BITS, 0x15).0, 0);
    assert_eq!(cfg(&mut t, 0xff, 0xff).0, 0);
    t.write_config(2, &[99, 1, 2, 3]);
    t.write_config(u64::MAX, &[1]);
    let mut b = [0xaa; 4];
    t.read_config(2, &mut b[..1]);
    assert_eq!(b[0], 0);
    t.read_config(1000, &mut b);
    assert_eq!(b, [0; 4]);
}

fn decode(e: &Event) -> (u16, u16, u32) {
    (
        u16::from_le_bytes([e[0], e[1]]),
        u16::from_le_bytes([e[2], e[3]]),
        u32::from_le_bytes([e[4], e[5], e[6], e[7]]),
    )
}

#[test]
fn pointer_events_scale_and_stay_bounded() {
    let (t, h) = Tablet::new(&Sandbox::on(&[ThreadKind::Tablet])).unwrap();
    h.move_to(639, 0, 640, 480, 1);
    h.move_to(-5, 10_000, 640, 480, 0);
    h.wheel(3);
    let got: Vec<_> = t
        .events
        .pending
        .lock()
        .unwrap()
        .iter()
        .map(decode)
        .collect();
    assert_eq!(
        got,
        [
            (EV_ABS, ABS_X, ABS_MAX),
            (EV_ABS, ABS_Y, 0),
            (EV_KEY, BTN_LEFT, 1),
            (EV_SYN, 0, 0),
            (EV_ABS, ABS_X, 0),
            (EV_ABS, ABS_Y, ABS_MAX),
            (EV_KEY, BTN_LEFT, 0),
            (EV_SYN, 0, 0),
            (EV_REL, REL_WHEEL, u32::MAX),
            (EV_SYN, 0, 0),
        ]
    );
    for i in 0..10_000 {
        h.move_to(i, i, 0, 0, 0);
    }
    assert_eq!(t.events.pending.lock().unwrap().len(), PENDING_MAX);
}

#[derive(Default)]
struct Irqs(Mutex<Vec<u16>>);
impl VirtioInterrupt for Irqs {
    fn queue(&self, index: u16) {
        self.0.lock().unwrap().push(index);
    }
    fn config(&self) {}
}

#[test]
fn events_fill_buffers_and_wait_for_more() {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
    let mq = MockSplitQueue::new(&mem, 16);
    let w = VRING_DESC_F_WRITE as u16;
    // Two good buffers and one of 4 bytes (too small for an event).
    let descs = [
        RawDescriptor::from(Descriptor::new(0x10_0000, 8, w, 0)),
        RawDescriptor::from(Descriptor::new(0x10_0100, 4, w, 0)),
        RawDescriptor::from(Descriptor::new(0x10_0200, 8, w, 0)),
    ];
    mq.add_desc_chains(&descs, 0).unwrap();
    let queue: Queue = mq.create_queue().unwrap();
    let (tablet, h) = Tablet::new(&Sandbox::on(&[ThreadKind::Tablet])).unwrap();
    h.move_to(320, 240, 640, 480, 0);
    let irqs = Arc::new(Irqs::default());
    let mut worker = InputWorker {
        eventq: ActiveQueue {
            index: 0,
            queue,
            kick: EventFd::new(libc::EFD_NONBLOCK).unwrap(),
        },
        statusq: None,
        events: tablet.events.clone(),
        stop: EventFd::new(libc::EFD_NONBLOCK).unwrap(),
        memory: mem.clone(),
        interrupt: irqs.clone(),
    };
    assert!(worker.deliver());
    let ev = |addr| {
        let mut e = [0u8; 8];
        mem.read_slice(&mut e, GuestAddress(addr)).unwrap();
        decode(&e)
    };
    assert_eq!(ev(0x10_0000), (EV_ABS, ABS_X, 320 * ABS_MAX / 639));
    assert_eq!(ev(0x10_0200), (EV_ABS, ABS_Y, 240 * ABS_MAX / 479));
    // The small buffer came back empty; the third event waits for buffers.
    assert_eq!(tablet.events.pending.lock().unwrap().len(), 1);
    assert_eq!(*irqs.0.lock().unwrap(), [0]);
    let used: u16 = mem.read_obj(mq.used_addr().unchecked_add(2)).unwrap();
    assert_eq!(used, 3);
}
