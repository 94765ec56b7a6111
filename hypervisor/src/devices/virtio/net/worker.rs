//! A queue pair's I/O thread: moves frames between the pair's tap queue and its receive and
//! transmit rings, and (pair 0) serves the control queue.
//!
//! It waits on the rings' kicks, the tap queue's readability, a wake-up from the control
//! queue (queue pairs or offloads changed) and a stop. The tap is watched only while its queue
//! is attached and the guest has receive buffers: a frame that finds no room is kept, the
//! driver is asked to kick when it adds buffers, and the tap waits (the kernel queues, then
//! drops, what comes meanwhile, as a full NIC ring does). Each direction moves at most
//! [`BATCH`] frames before the other gets its turn.

use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::ctrl::{self, CtrlQueue};
use super::rx::{Delivery, RxQueue};
use super::tap::TapQueue;
use super::tx::{transmit, MAX_FRAME};
use super::{warn, Shared};
use crate::devices::virtio::{check_avail, VirtioInterrupt};
use crate::devices::worker_thread::epoll_on;
use crate::rate_limit::RateLimiter;

const T_RX_KICK: u64 = 0;
const T_TX_KICK: u64 = 1;
const T_TAP: u64 = 2;
const T_STOP: u64 = 3;
const T_WAKE: u64 = 4;
const T_CTRL: u64 = 5;

/// Frames moved in one direction before the thread looks at its other events.
pub const BATCH: usize = 128;

/// Everything a queue pair's thread owns.
pub struct PairWorker {
    /// The pair's number (its tap queue's index).
    pub pair: u16,
    /// Receive queue index.
    pub rx_index: u16,
    /// The receive ring.
    pub rx: RxQueue,
    /// Its notifications (the driver added buffers).
    pub rx_kick: EventFd,
    /// Transmit queue index.
    pub tx_index: u16,
    /// The transmit ring.
    pub tx: Queue,
    /// Its notifications.
    pub tx_kick: EventFd,
    /// The control queue (pair 0 only).
    pub ctrl: Option<CtrlQueue>,
    /// Guest memory.
    pub memory: GuestMemoryMmap,
    /// Taps and steering shared by the device's threads.
    pub shared: Arc<Shared>,
    /// Features the driver accepted.
    pub features: u64,
    /// Interrupt delivery.
    pub interrupt: Arc<dyn VirtioInterrupt>,
}

/// The thread's own state between events.
struct Loop {
    epoll: Epoll,
    /// The tap queue is attached (the driver uses this pair).
    attached: bool,
    /// The tap's fd is in the epoll set.
    watching_tap: bool,
    /// The receive ring ran out of buffers; the driver was asked to kick.
    rx_waiting: bool,
    /// Length of a frame read from the tap and not yet delivered (it is in `rx_buf`).
    pending: Option<usize>,
    rx_buf: Vec<u8>,
    tx_buf: Vec<u8>,
    log: RateLimiter,
}

/// Why the thread ended early.
struct Broken;

impl PairWorker {
    fn tap(&self) -> &TapQueue {
        &self.shared.taps[usize::from(self.pair)]
    }

    /// The thread body: returns when `stop` is signalled or a ring is unusable.
    pub fn run(mut self, stop: EventFd) {
        let wake = &self.shared.wakes[usize::from(self.pair)];
        let mut fds = vec![
            (&self.rx_kick, T_RX_KICK),
            (&self.tx_kick, T_TX_KICK),
            (&stop, T_STOP),
            (wake, T_WAKE),
        ];
        if let Some(c) = &self.ctrl {
            fds.push((&c.kick, T_CTRL));
        }
        let epoll = match epoll_on(&fds) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(pair = self.pair, error = %e, "virtio-net: cannot set up epoll");
                return;
            }
        };
        let mut st = Loop {
            epoll,
            attached: false,
            watching_tap: false,
            rx_waiting: false,
            pending: None,
            rx_buf: vec![0; MAX_FRAME + 1],
            tx_buf: Vec::with_capacity(MAX_FRAME),
            log: RateLimiter::new(10, Duration::from_secs(5)),
        };
        if self.pair == 0 {
            // Pair 0's thread runs whenever the device does: it sets the device-wide state.
            self.shared.apply_guest_offloads(self.features);
            self.shared.steer_all();
        }
        self.steer(&mut st);
        // The driver may have queued frames and buffers before the thread started.
        let (mut rx_work, mut tx_work, mut ctrl_work) = (true, true, self.ctrl.is_some());
        let mut events = [EpollEvent::default(); 6];
        loop {
            let step = (|| -> Result<bool, Broken> {
                let mut more = false;
                if tx_work {
                    more |= self.transmit(&mut st)?;
                }
                if ctrl_work {
                    self.control(&mut st)?;
                }
                if rx_work && st.attached && !st.rx_waiting {
                    more |= self.receive(&mut st)?;
                }
                Ok(more)
            })();
            let more = match step {
                Ok(m) => m,
                Err(Broken) => return,
            };
            if let Err(e) = self.watch_tap(&mut st) {
                tracing::error!(pair = self.pair, error = %e, "virtio-net: cannot watch the tap");
                return;
            }
            let n = match st.epoll.wait(if more { 0 } else { -1 }, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::error!(pair = self.pair, error = %e, "virtio-net: epoll failed");
                    return;
                }
            };
            // Work not finished in a batch stays to do.
            rx_work = more && rx_work;
            tx_work = more && tx_work;
            ctrl_work = false;
            for ev in &events[..n] {
                match ev.data() {
                    T_STOP => return,
                    T_WAKE => {
                        let _ = self.shared.wakes[usize::from(self.pair)].read();
                        self.steer(&mut st);
                        rx_work = true;
                    }
                    T_RX_KICK => {
                        let _ = self.rx_kick.read();
                        st.rx_waiting = false;
                        rx_work = true;
                    }
                    T_TX_KICK => {
                        let _ = self.tx_kick.read();
                        tx_work = true;
                    }
                    T_CTRL => {
                        if let Some(c) = &self.ctrl {
                            let _ = c.kick.read();
                        }
                        ctrl_work = true;
                    }
                    _ => rx_work = true,
                }
            }
        }
    }

    /// Follows the driver's queue-pair count: a pair beyond it neither reads its tap queue
    /// (pair 0's thread detached it) nor keeps a frame it had read.
    fn steer(&self, st: &mut Loop) {
        let active = self
            .shared
            .active_pairs
            .load(std::sync::atomic::Ordering::SeqCst);
        st.attached = self.pair < active;
        if !st.attached {
            st.pending = None;
        }
    }

    /// Adds or removes the tap's fd from the epoll set: watched while attached with buffers.
    fn watch_tap(&self, st: &mut Loop) -> std::io::Result<()> {
        let want = st.attached && !st.rx_waiting;
        if want == st.watching_tap {
            return Ok(());
        }
        let fd = self.tap().as_raw_fd();
        if want {
            st.epoll.ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(EventSet::IN, T_TAP),
            )?;
        } else {
            st.epoll
                .ctl(ControlOperation::Delete, fd, EpollEvent::default())?;
        }
        st.watching_tap = want;
        Ok(())
    }

    /// Moves frames from the tap to the guest; true if a batch ended with more to read.
    fn receive(&mut self, st: &mut Loop) -> Result<bool, Broken> {
        let mem = &self.memory;
        let mut moved = 0;
        let mut more = false;
        loop {
            if moved == BATCH {
                more = true;
                break;
            }
            let len = match st.pending.take() {
                Some(len) => len,
                None => match self.shared.taps[usize::from(self.pair)].read_frame(&mut st.rx_buf) {
                    Ok(len) => len,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        // EBADFD: the queue was detached under the read.
                        if e.raw_os_error() != Some(libc::EBADFD) {
                            warn(&mut st.log, self.pair, "tap read failed", &e.to_string());
                        }
                        break;
                    }
                },
            };
            moved += 1;
            if len > MAX_FRAME {
                self.shared.stats.rx_dropped.fetch_add(1, Relaxed);
                warn(
                    &mut st.log,
                    self.pair,
                    "frame dropped",
                    "longer than 64 KiB",
                );
                continue;
            }
            match self.rx.deliver(mem, &mut st.rx_buf[..len]) {
                Ok(Delivery::Delivered) => {
                    self.shared.stats.rx_frames.fetch_add(1, Relaxed);
                    self.shared.stats.rx_bytes.fetch_add(len as u64, Relaxed);
                }
                Ok(Delivery::NoBuffers) => {
                    st.pending = Some(len);
                    match self.rx.wait_for_buffers(mem) {
                        Ok(true) => continue,
                        Ok(false) => {
                            st.rx_waiting = true;
                            break;
                        }
                        Err(e) => return Err(self.broken(self.rx_index, e)),
                    }
                }
                Ok(Delivery::Dropped(why)) => {
                    self.shared.stats.rx_dropped.fetch_add(1, Relaxed);
                    warn(&mut st.log, self.pair, "frame dropped", why);
                }
                Err(e) => return Err(self.broken(self.rx_index, e)),
            }
        }
        match self.rx.needs_notification(mem) {
            Ok(true) => self.interrupt.queue(self.rx_index),
            Ok(false) => {}
            Err(e) => return Err(self.broken(self.rx_index, e)),
        }
        Ok(more)
    }

    /// Sends the guest's frames; true if a batch ended with more to send.
    fn transmit(&mut self, st: &mut Loop) -> Result<bool, Broken> {
        let mem = &self.memory;
        let tap = &self.shared.taps[usize::from(self.pair)];
        let mut sent = 0;
        let more = loop {
            if let Err(e) = self
                .tx
                .disable_notification(mem)
                .and_then(|()| check_avail(&self.tx, mem))
            {
                return Err(self.broken(self.tx_index, e));
            }
            while sent < BATCH {
                let Some(chain) = self.tx.pop_descriptor_chain(mem) else {
                    break;
                };
                let head = chain.head_index();
                match transmit(chain, mem, tap, &mut st.tx_buf) {
                    Ok(n) => {
                        self.shared.stats.tx_frames.fetch_add(1, Relaxed);
                        self.shared.stats.tx_bytes.fetch_add(n as u64, Relaxed);
                    }
                    Err(e) => {
                        self.shared.stats.tx_dropped.fetch_add(1, Relaxed);
                        warn(&mut st.log, self.pair, "frame not sent", &e.to_string());
                    }
                }
                sent += 1;
                if let Err(e) = self.tx.add_used(mem, head, 0) {
                    return Err(self.broken(self.tx_index, e));
                }
            }
            if sent == BATCH {
                break true;
            }
            match self.tx.enable_notification(mem) {
                Ok(true) => continue,
                Ok(false) => break false,
                Err(e) => return Err(self.broken(self.tx_index, e)),
            }
        };
        match self.tx.needs_notification(mem) {
            Ok(true) => self.interrupt.queue(self.tx_index),
            Ok(false) => {}
            Err(e) => return Err(self.broken(self.tx_index, e)),
        }
        Ok(more)
    }

    /// Serves every command on the control queue.
    fn control(&mut self, st: &mut Loop) -> Result<(), Broken> {
        let Some(c) = self.ctrl.as_mut() else {
            return Ok(());
        };
        match ctrl::serve(c, &self.memory, self.features, &self.shared, &mut st.log) {
            Ok(true) => self.interrupt.queue(c.index),
            Ok(false) => {}
            Err(e) => {
                let index = c.index;
                return Err(self.broken(index, e));
            }
        }
        Ok(())
    }

    fn broken(&self, queue: u16, e: virtio_queue::Error) -> Broken {
        tracing::error!(queue, error = %e, "virtio-net: the queue's rings are unusable; the pair stops until the driver resets the device");
        self.interrupt.config();
        Broken
    }
}
