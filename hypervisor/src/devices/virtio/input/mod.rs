//! virtio-input as an absolute pointer (a tablet, like QEMU's virtio-tablet-pci): the display
//! client's pointer position scaled to 0..=32767 on both axes, three buttons and a wheel, so the
//! guest's pointer sits exactly under the client's. Linux drives it with virtio_input.
//!
//! The configuration space is the virtio-input select/subsel window (virtio 1.2, 5.8); events
//! are `struct virtio_input_event` (type, code, value) written into the driver's event-queue
//! buffers by [`worker`]; status-queue messages (LEDs) are taken and ignored.

pub mod worker;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use vmm_sys_util::eventfd::EventFd;

use self::worker::InputWorker;
use super::{read_config_bytes, ActivateError, Activation, VirtioDevice};
use crate::devices::bus::lock;
use crate::devices::worker_thread::WorkerThread;
use crate::sandbox::{Sandbox, SandboxError, ThreadKind};

/// virtio device ID of an input device.
pub const VIRTIO_ID_INPUT: u16 = 18;
/// Descriptors per queue.
pub const QUEUE_SIZE: u16 = 64;
/// Largest axis value.
pub const ABS_MAX: u32 = 0x7fff;
/// Events held while the driver has no buffers (older ones are dropped first).
pub const PENDING_MAX: usize = 256;

const EV_SYN: u16 = 0;
const EV_KEY: u16 = 1;
const EV_REL: u16 = 2;
const EV_ABS: u16 = 3;
const BTN_LEFT: u16 = 0x110;
const BTN_RIGHT: u16 = 0x111;
const BTN_MIDDLE: u16 = 0x112;
const REL_WHEEL: u16 = 8;
const ABS_X: u16 = 0;
const ABS_Y: u16 = 1;

const CFG_ID_NAME: u8 = 0x01;
const CFG_ID_SERIAL: u8 = 0x02;
const CFG_ID_DEVIDS: u8 = 0x03;
const CFG_EV_BITS: u8 = 0x11;
const CFG_ABS_INFO: u8 = 0x12;
const NAME: &[u8] = b"Tessera Virtio Tablet";

/// One `struct virtio_input_event`.
pub type Event = [u8; 8];

fn event(kind: u16, code: u16, value: u32) -> Event {
    let mut e = [0u8; 8];
    e[0..2].copy_from_slice(&kind.to_le_bytes());
    e[2..4].copy_from_slice(&code.to_le_bytes());
    e[4..8].copy_from_slice(&value.to_le_bytes());
    e
}

/// Events waiting for the driver, shared with whoever injects them.
pub struct EventQueue {
    pending: Mutex<VecDeque<Event>>,
    buttons: Mutex<u32>,
    /// The driver has the device running.
    active: AtomicBool,
    /// Signalled when events are added.
    pub ready: EventFd,
}

/// What the display service holds to move the pointer.
#[derive(Clone)]
pub struct TabletHandle(Arc<EventQueue>);

impl TabletHandle {
    /// Whether the guest's driver runs the tablet (its events are read).
    pub fn active(&self) -> bool {
        self.0.active.load(Ordering::Acquire)
    }

    fn push(&self, events: &[Event]) {
        let mut p = lock(&self.0.pending);
        for e in events {
            if p.len() == PENDING_MAX {
                p.pop_front();
            }
            p.push_back(*e);
        }
        drop(p);
        let _ = self.0.ready.write(1);
    }

    /// Button changes as key events (SPICE's mask: bit 0 left, 1 middle, 2 right).
    fn button_events(&self, buttons: u32, out: &mut Vec<Event>) {
        let mut held = lock(&self.0.buttons);
        for (bit, code) in [(1, BTN_LEFT), (2, BTN_MIDDLE), (4, BTN_RIGHT)] {
            if (*held ^ buttons) & bit != 0 {
                out.push(event(EV_KEY, code, u32::from(buttons & bit != 0)));
            }
        }
        *held = buttons;
    }

    /// The pointer is at (`x`, `y`) of a `width` x `height` screen, with `buttons` held.
    pub fn move_to(&self, x: i32, y: i32, width: u32, height: u32, buttons: u32) {
        let scale = |v: i32, size: u32| {
            let v = u64::from(v.max(0) as u32).min(u64::from(size.max(2) - 1));
            (v * u64::from(ABS_MAX) / u64::from(size.max(2) - 1)) as u32
        };
        let mut ev = vec![
            event(EV_ABS, ABS_X, scale(x, width)),
            event(EV_ABS, ABS_Y, scale(y, height)),
        ];
        self.button_events(buttons, &mut ev);
        ev.push(event(EV_SYN, 0, 0));
        self.push(&ev);
    }

    /// Buttons changed without motion.
    pub fn buttons(&self, buttons: u32) {
        let mut ev = Vec::new();
        self.button_events(buttons, &mut ev);
        if !ev.is_empty() {
            ev.push(event(EV_SYN, 0, 0));
            self.push(&ev);
        }
    }

    /// Wheel motion: SPICE's positive is down, Linux's REL_WHEEL positive is up.
    pub fn wheel(&self, delta: i32) {
        if delta != 0 {
            let v = (-delta.signum()) as u32;
            self.push(&[event(EV_REL, REL_WHEEL, v), event(EV_SYN, 0, 0)]);
        }
    }
}

/// Why a tablet could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TabletError {
    /// Its event eventfd.
    #[error("virtio-tablet: cannot create an eventfd: {0}")]
    EventFd(std::io::Error),
    /// Its I/O thread.
    #[error("virtio-tablet: {0}")]
    Thread(#[from] SandboxError),
}

/// The tablet device.
pub struct Tablet {
    select: u8,
    subsel: u8,
    events: Arc<EventQueue>,
    /// The I/O thread, started with the device.
    worker: WorkerThread,
    /// The running job's stop eventfd.
    running: Option<EventFd>,
}

impl Tablet {
    /// A tablet and the handle that moves its pointer; its I/O thread starts now, under the
    /// tablet's seccomp filter.
    pub fn new(sandbox: &Sandbox) -> Result<(Self, TabletHandle), TabletError> {
        let events = Arc::new(EventQueue {
            pending: Mutex::new(VecDeque::new()),
            buttons: Mutex::new(0),
            active: AtomicBool::new(false),
            ready: EventFd::new(libc::EFD_NONBLOCK).map_err(TabletError::EventFd)?,
        });
        let handle = TabletHandle(events.clone());
        let worker = WorkerThread::spawn(sandbox, ThreadKind::Tablet, "virtio-tablet".into())?;
        Ok((
            Self {
                select: 0,
                subsel: 0,
                events,
                worker,
                running: None,
            },
            handle,
        ))
    }

    /// The 136-byte configuration window for the current select/subsel.
    fn config(&self) -> [u8; 136] {
        let mut c = [0u8; 136];
        c[0] = self.select;
        c[1] = self.subsel;
        let mut set = |payload: &[u8]| {
            c[2] = payload.len() as u8;
            c[8..8 + payload.len()].copy_from_slice(payload);
        };
        let bits = |codes: &[u16]| {
            let len = codes
                .iter()
                .map(|c| usize::from(*c) / 8 + 1)
                .max()
                .unwrap_or(0);
            let mut b = vec![0u8; len];
            for code in codes {
                b[usize::from(*code) / 8] |= 1 << (code % 8);
            }
            b
        };
        match (self.select, self.subsel) {
            (CFG_ID_NAME, 0) => set(NAME),
            (CFG_ID_SERIAL, 0) => set(b"tessera-tablet"),
            (CFG_ID_DEVIDS, 0) => {
                // BUS_VIRTUAL, vendor and product of QEMU's tablet, version 1.
                let mut d = [0u8; 8];
                for (i, v) in [0x06u16, 0x0627, 0x0003, 0x0001].iter().enumerate() {
                    d[i * 2..i * 2 + 2].copy_from_slice(&v.to_le_bytes());
                }
                set(&d);
            }
            (CFG_EV_BITS, s) if u16::from(s) == EV_KEY => {
                set(&bits(&[BTN_LEFT, BTN_RIGHT, BTN_MIDDLE]))
            }
            (CFG_EV_BITS, s) if u16::from(s) == EV_REL => set(&bits(&[REL_WHEEL])),
            (CFG_EV_BITS, s) if u16::from(s) == EV_ABS => set(&bits(&[ABS_X, ABS_Y])),
            (CFG_ABS_INFO, s) if u16::from(s) == ABS_X || u16::from(s) == ABS_Y => {
                // min, max, fuzz, flat, res.
                let mut a = [0u8; 20];
                a[4..8].copy_from_slice(&ABS_MAX.to_le_bytes());
                set(&a);
            }
            // Everything else (properties, other event types): size 0.
            _ => {}
        }
        c
    }
}

impl VirtioDevice for Tablet {
    fn device_type(&self) -> u16 {
        VIRTIO_ID_INPUT
    }

    fn features(&self) -> u64 {
        0
    }

    fn num_queues(&self) -> u16 {
        2
    }

    fn queue_max_size(&self) -> u16 {
        QUEUE_SIZE
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config(), offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // Only select (byte 0) and subsel (byte 1) are the driver's to write.
        for (i, b) in data.iter().enumerate() {
            match offset.checked_add(i as u64) {
                Some(0) => self.select = *b,
                Some(1) => self.subsel = *b,
                _ => {}
            }
        }
    }

    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError> {
        let mut queues = activation.queues.into_iter();
        let (Some(eventq), status) = (queues.next(), queues.next()) else {
            return Err(ActivateError::NoQueue);
        };
        let stop = EventFd::new(libc::EFD_NONBLOCK).map_err(ActivateError::EventFd)?;
        let worker = InputWorker {
            eventq,
            statusq: status,
            events: self.events.clone(),
            stop: stop.try_clone().map_err(ActivateError::EventFd)?,
            memory: activation.memory,
            interrupt: activation.interrupt,
        };
        self.worker.start(move || worker.run())?;
        self.running = Some(stop);
        self.events.active.store(true, Ordering::Release);
        tracing::info!("virtio-tablet: driver ready");
        Ok(())
    }

    fn reset(&mut self) {
        self.events.active.store(false, Ordering::Release);
        if let Some(stop) = self.running.take() {
            let _ = stop.write(1);
            self.worker.wait();
        }
        lock(&self.events.pending).clear();
        self.select = 0;
        self.subsel = 0;
    }
}

impl Drop for Tablet {
    fn drop(&mut self) {
        self.reset();
    }
}

#[cfg(test)]
mod tests;
