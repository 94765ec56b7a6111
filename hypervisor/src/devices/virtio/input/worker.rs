//! The tablet's thread: delivers pending events into the event queue's buffers whenever
//! events arrive or the driver adds buffers, and takes (and ignores) status-queue messages.

use std::io::Write;
use std::sync::Arc;

use virtio_queue::{QueueOwnedT, QueueT, Writer};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::{Epoll, EpollEvent};
use vmm_sys_util::eventfd::EventFd;

use super::EventQueue;
use crate::devices::bus::lock;
use crate::devices::virtio::{ActiveQueue, VirtioInterrupt};
use crate::devices::worker_thread::epoll_on;

const TOKEN_EVENTQ: u64 = 0;
const TOKEN_STATUSQ: u64 = 1;
const TOKEN_READY: u64 = 2;
const TOKEN_STOP: u64 = 3;

/// What the thread owns.
pub struct InputWorker {
    /// Queue 0: buffers the device fills with events.
    pub eventq: ActiveQueue,
    /// Queue 1: LED and other status from the driver (may be absent).
    pub statusq: Option<ActiveQueue>,
    /// Events to deliver.
    pub events: Arc<EventQueue>,
    /// Ends the thread.
    pub stop: EventFd,
    /// Guest memory.
    pub memory: GuestMemoryMmap,
    /// Interrupts.
    pub interrupt: Arc<dyn VirtioInterrupt>,
}

impl InputWorker {
    /// The thread body.
    pub fn run(mut self) {
        let epoll = match self.epoll() {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = %e, "virtio-tablet: cannot set up epoll");
                return;
            }
        };
        let mut ev = [EpollEvent::default(); 4];
        loop {
            if !self.deliver() || !self.drain_status() {
                return;
            }
            let n = match epoll.wait(-1, &mut ev) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::error!(error = %e, "virtio-tablet: epoll failed");
                    return;
                }
            };
            for e in &ev[..n] {
                match e.data() {
                    TOKEN_STOP => return,
                    TOKEN_EVENTQ => drop(self.eventq.kick.read()),
                    TOKEN_READY => drop(self.events.ready.read()),
                    _ => {
                        if let Some(s) = &self.statusq {
                            let _ = s.kick.read();
                        }
                    }
                }
            }
        }
    }

    fn epoll(&self) -> std::io::Result<Epoll> {
        let mut fds = vec![
            (&self.eventq.kick, TOKEN_EVENTQ),
            (&self.events.ready, TOKEN_READY),
            (&self.stop, TOKEN_STOP),
        ];
        if let Some(s) = &self.statusq {
            fds.push((&s.kick, TOKEN_STATUSQ));
        }
        epoll_on(&fds)
    }

    /// Moves pending events into available buffers; false if the ring is unusable.
    pub(super) fn deliver(&mut self) -> bool {
        let mem = &self.memory;
        let q = &mut self.eventq;
        let mut used_any = false;
        loop {
            let mut pending = lock(&self.events.pending);
            if pending.is_empty() {
                break;
            }
            let chain = match q.queue.pop_descriptor_chain(mem) {
                Some(c) => c,
                // No buffer: the events wait for the driver's next kick.
                None => break,
            };
            let head = chain.head_index();
            let used = match Writer::new(mem, chain) {
                Ok(mut w) if w.available_bytes() >= 8 => {
                    let e = pending.pop_front().unwrap_or_default();
                    match w.write_all(&e) {
                        Ok(()) => 8,
                        Err(_) => 0,
                    }
                }
                // A buffer too small or outside memory: returned empty, the event kept.
                _ => {
                    tracing::warn!("virtio-tablet: unusable event buffer; returned empty");
                    0
                }
            };
            drop(pending);
            if let Err(e) = q.queue.add_used(mem, head, used) {
                return self.broken(e);
            }
            used_any = true;
        }
        if used_any {
            match self.eventq.queue.needs_notification(mem) {
                Ok(true) => self.interrupt.queue(self.eventq.index),
                Ok(false) => {}
                Err(e) => return self.broken(e),
            }
        }
        true
    }

    /// Takes every status message (LED state: a tablet has none to show).
    fn drain_status(&mut self) -> bool {
        let mem = &self.memory;
        let Some(s) = &mut self.statusq else {
            return true;
        };
        let mut any = false;
        let heads: Vec<u16> = match s.queue.iter(mem) {
            Ok(iter) => iter.map(|c| c.head_index()).collect(),
            Err(e) => return self.broken(e),
        };
        for head in heads {
            if let Err(e) = s.queue.add_used(mem, head, 0) {
                return self.broken(e);
            }
            any = true;
        }
        if any {
            let index = s.index;
            match s.queue.needs_notification(mem) {
                Ok(true) => self.interrupt.queue(index),
                Ok(false) => {}
                Err(e) => return self.broken(e),
            }
        }
        true
    }

    fn broken(&self, e: virtio_queue::Error) -> bool {
        tracing::error!(error = %e, "virtio-tablet: the queue's rings are unusable until the driver resets the device");
        self.interrupt.config();
        false
    }
}
