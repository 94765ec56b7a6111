//! A queue's I/O thread: waits on the queue's kick eventfd (an ioeventfd KVM signals when the
//! driver notifies) and a stop eventfd, serves every available request, and raises the queue's
//! interrupt when the driver asked for one (event index suppression included).

use std::sync::Arc;
use std::time::{Duration, Instant};

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::{Epoll, EpollEvent};
use vmm_sys_util::eventfd::EventFd;

use super::request::{self, BlockBackend};
use crate::devices::virtio::VirtioInterrupt;
use crate::devices::worker_thread::epoll_on;
use crate::rate_limit::{RateLimiter, Verdict};

const TOKEN_KICK: u64 = 0;
const TOKEN_STOP: u64 = 1;

/// Everything a queue thread owns.
pub struct QueueWorker {
    /// Queue index.
    pub index: u16,
    /// The ring.
    pub queue: Queue,
    /// Driver notifications.
    pub kick: EventFd,
    /// Written by the device to end the thread.
    pub stop: EventFd,
    /// Guest memory.
    pub memory: GuestMemoryMmap,
    /// The disk.
    pub backend: Arc<BlockBackend>,
    /// Interrupt delivery.
    pub interrupt: Arc<dyn VirtioInterrupt>,
}

impl QueueWorker {
    /// The thread body: returns when `stop` is signalled or the queue is broken.
    pub fn run(mut self) {
        let epoll = match self.epoll() {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(queue = self.index, error = %e, "virtio-blk: cannot set up epoll");
                return;
            }
        };
        let mut events = [EpollEvent::default(); 2];
        let mut bounce = Vec::new();
        let mut log = RateLimiter::new(10, Duration::from_secs(5));
        // The driver may have queued requests before the thread started.
        let mut pending = true;
        loop {
            if pending && !self.serve(&mut bounce, &mut log) {
                return;
            }
            let n = match epoll.wait(-1, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::error!(queue = self.index, error = %e, "virtio-blk: epoll failed");
                    return;
                }
            };
            pending = false;
            for ev in &events[..n] {
                match ev.data() {
                    TOKEN_STOP => return,
                    _ => {
                        let _ = self.kick.read();
                        pending = true;
                    }
                }
            }
        }
    }

    fn epoll(&self) -> std::io::Result<Epoll> {
        epoll_on(&[(&self.kick, TOKEN_KICK), (&self.stop, TOKEN_STOP)])
    }

    /// Serves every available chain; false if the ring itself is unusable.
    fn serve(&mut self, bounce: &mut Vec<u8>, log: &mut RateLimiter) -> bool {
        let mem = &self.memory;
        loop {
            if let Err(e) = self.queue.disable_notification(mem) {
                return self.broken(e);
            }
            let mut chains = Vec::new();
            match self.queue.iter(mem) {
                Ok(iter) => chains.extend(iter),
                Err(e) => return self.broken(e),
            }
            for chain in chains {
                let head = chain.head_index();
                let used = match request::handle(chain, mem, &self.backend, bounce) {
                    Ok(out) => {
                        if let Some(e) = out.error {
                            warn(log, self.index, &e);
                        }
                        out.used
                    }
                    Err(e) => {
                        warn(log, self.index, &e.to_string());
                        0
                    }
                };
                if let Err(e) = self.queue.add_used(mem, head, used) {
                    return self.broken(e);
                }
            }
            match self.queue.enable_notification(mem) {
                Ok(true) => continue,
                Ok(false) => break,
                Err(e) => return self.broken(e),
            }
        }
        match self.queue.needs_notification(mem) {
            Ok(true) => self.interrupt.queue(self.index),
            Ok(false) => {}
            Err(e) => return self.broken(e),
        }
        true
    }

    fn broken(&self, e: virtio_queue::Error) -> bool {
        tracing::error!(queue = self.index, error = %e, "virtio-blk: the queue's rings are unusable; the queue stops until the driver resets the device");
        self.interrupt.config();
        false
    }
}

fn warn(log: &mut RateLimiter, queue: u16, e: &str) {
    if let Verdict::Log { suppressed } = log.check(Instant::now()) {
        tracing::warn!(queue, suppressed, error = e, "virtio-blk: request failed");
    }
}
