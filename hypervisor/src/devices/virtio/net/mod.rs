//! virtio-net on a tap interface: the guest's NIC on the host's virtual switch.
//!
//! One queue pair per vCPU (multiqueue: each pair has its own tap queue and I/O thread), a
//! control queue, mergeable receive buffers, and checksum and TCP segmentation offloads both
//! ways, passed through the tap's virtio-net header rather than done here. The MAC address and
//! MTU come from the VM's configuration. This is the user-space path; which frames the VM may
//! send and receive is the host switch's business (tessera-agent's port and its policies).

pub mod ctrl;
pub mod rx;
pub mod tap;
pub mod tx;
pub mod vhost;
pub mod worker;

use std::sync::atomic::{AtomicU16, AtomicU64};
use std::sync::Arc;

use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_CTRL_GUEST_OFFLOADS, VIRTIO_NET_F_CTRL_RX,
    VIRTIO_NET_F_CTRL_VQ, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_ECN, VIRTIO_NET_F_GUEST_TSO4,
    VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_HOST_ECN, VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6,
    VIRTIO_NET_F_MAC, VIRTIO_NET_F_MQ, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_MTU,
    VIRTIO_NET_F_SPEED_DUPLEX, VIRTIO_NET_F_STATUS, VIRTIO_NET_S_LINK_UP,
};
use vmm_sys_util::eventfd::EventFd;

use self::ctrl::CtrlQueue;
use self::rx::RxQueue;
use self::tap::{offload, TapQueue};
use self::vhost::{VhostNet, VhostRings, VhostWorker};
use self::worker::PairWorker;
use super::queue_threads::QueueThreads;
use super::{features, read_config_bytes, ActivateError, Activation, ActiveQueue, VirtioDevice};
use crate::rate_limit::{RateLimiter, Verdict};
use crate::sandbox::{Sandbox, SandboxError, ThreadKind};

/// virtio device ID of a network card.
pub const VIRTIO_ID_NET: u16 = 1;
/// Descriptors per queue.
pub const QUEUE_SIZE: u16 = 256;
/// Most queue pairs a NIC gets.
pub const MAX_PAIRS: u16 = 16;
/// The link speed the guest is told (Mb/s): what it shows, not a limit (QoS is the switch's).
pub const SPEED_MBPS: u32 = 10_000;

/// The guest's receive offloads among the feature bits (also GUEST_OFFLOADS_SET's mask).
pub const GUEST_OFFLOAD_FEATURES: u64 = 1 << VIRTIO_NET_F_GUEST_CSUM
    | 1 << VIRTIO_NET_F_GUEST_TSO4
    | 1 << VIRTIO_NET_F_GUEST_TSO6
    | 1 << VIRTIO_NET_F_GUEST_ECN;

/// The tap offload flags for the guest receive offloads in `features`: what the tap may hand
/// over unsegmented or without a checksum.
pub fn guest_offloads(features: u64) -> u32 {
    let has = |bit: u32| features & (1 << bit) != 0;
    if !has(VIRTIO_NET_F_GUEST_CSUM) {
        // Segmentation offloads need the checksum one.
        return 0;
    }
    let mut flags = offload::CSUM;
    if has(VIRTIO_NET_F_GUEST_TSO4) {
        flags |= offload::TSO4;
    }
    if has(VIRTIO_NET_F_GUEST_TSO6) {
        flags |= offload::TSO6;
    }
    if flags & (offload::TSO4 | offload::TSO6) != 0 && has(VIRTIO_NET_F_GUEST_ECN) {
        flags |= offload::TSO_ECN;
    }
    flags
}

/// Logs a dropped frame or refused command of queue pair `pair`, at most as often as `log`
/// lets through.
pub(crate) fn warn(log: &mut RateLimiter, pair: u16, what: &str, why: &str) {
    if let Verdict::Log { suppressed } = log.check(std::time::Instant::now()) {
        tracing::warn!(pair, suppressed, reason = why, "virtio-net: {what}");
    }
}

/// A NIC's counters, for `/metrics`.
#[derive(Debug, Default)]
pub struct NetStats {
    /// Frames delivered to the guest.
    pub rx_frames: AtomicU64,
    /// Their bytes (virtio-net header included).
    pub rx_bytes: AtomicU64,
    /// Frames from the tap dropped (no room in a non-mergeable buffer, too long).
    pub rx_dropped: AtomicU64,
    /// Frames the guest sent.
    pub tx_frames: AtomicU64,
    /// Their bytes (header included).
    pub tx_bytes: AtomicU64,
    /// Frames the guest sent that were dropped (malformed chains, refused by the tap).
    pub tx_dropped: AtomicU64,
}

/// What the device's queue threads share.
pub struct Shared {
    /// One tap queue per queue pair.
    pub taps: Arc<[TapQueue]>,
    /// Queue pairs the driver uses (1 until it sets more with VQ_PAIRS_SET); the others'
    /// tap queues are detached so that the kernel steers no frame to them.
    pub active_pairs: AtomicU16,
    /// One per queue pair's thread: wakes it to apply `active_pairs`.
    pub wakes: Vec<EventFd>,
    /// Counters.
    pub stats: Arc<NetStats>,
}

impl Shared {
    /// Attaches the tap queues of the pairs in use and detaches the others, so that the kernel
    /// steers no frame to a queue nobody reads (only pair 0's thread calls it: with one pair
    /// in use, no other thread runs).
    pub fn steer_all(&self) {
        let active = usize::from(self.active_pairs.load(std::sync::atomic::Ordering::SeqCst));
        for (i, tap) in self.taps.iter().enumerate() {
            if let Err(e) = tap.set_attached(i < active) {
                tracing::error!(pair = i, error = %e, "virtio-net: cannot steer the tap queue");
            }
        }
    }

    /// Lets the tap hand over what the guest's receive features take (device-wide), as a
    /// device starts.
    pub fn apply_guest_offloads(&self, features: u64) {
        if let Err(e) = self.taps[0].set_offload(guest_offloads(features)) {
            tracing::warn!(error = %e, "virtio-net: the guest's receive offloads are off");
        }
    }

    /// Wakes every queue pair's thread.
    pub fn wake_all(&self) {
        for w in &self.wakes {
            let _ = w.write(1);
        }
    }
}

/// The network device.
pub struct Net {
    taps: Arc<[TapQueue]>,
    config: Vec<u8>,
    name: String,
    stats: Arc<NetStats>,
    /// The kernel's fast path, when /dev/vhost-net was there.
    vhost: Option<Arc<VhostNet>>,
    /// One I/O thread per queue pair (with vhost-net only pair 0's serves).
    threads: QueueThreads,
}

/// The 24-byte `struct virtio_net_config`.
fn config_space(mac: [u8; 6], pairs: u16, mtu: u16) -> Vec<u8> {
    let mut c = vec![0u8; 24];
    c[0..6].copy_from_slice(&mac);
    c[6..8].copy_from_slice(&(VIRTIO_NET_S_LINK_UP as u16).to_le_bytes());
    c[8..10].copy_from_slice(&pairs.to_le_bytes());
    c[10..12].copy_from_slice(&mtu.to_le_bytes());
    c[12..16].copy_from_slice(&SPEED_MBPS.to_le_bytes());
    c[16] = 1; // full duplex
    c
}

impl Net {
    /// A NIC over `taps` (one queue per pair, 1..=MAX_PAIRS) with address `mac` and `mtu`,
    /// each pair's I/O thread started now under the network threads' seccomp filter; with
    /// `vhost`, the kernel moves the frames and pair 0's thread serves the rest.
    pub fn new(
        taps: Vec<TapQueue>,
        mac: [u8; 6],
        mtu: u16,
        vhost: Option<VhostNet>,
        sandbox: &Sandbox,
    ) -> Result<Self, SandboxError> {
        let pairs = u16::try_from(taps.len())
            .unwrap_or(MAX_PAIRS)
            .clamp(1, MAX_PAIRS);
        let name = taps
            .first()
            .map_or_else(String::new, |t| t.name().to_string());
        let threads = QueueThreads::spawn(
            sandbox,
            ThreadKind::NetQueue,
            (0..pairs).map(|p| format!("net-{name}-q{p}")),
        )?;
        Ok(Self {
            taps: taps.into(),
            config: config_space(mac, pairs, mtu),
            name,
            stats: Arc::default(),
            vhost: vhost.map(Arc::new),
            threads,
        })
    }

    /// The NIC's counters.
    pub fn stats(&self) -> Arc<NetStats> {
        self.stats.clone()
    }

    fn pairs(&self) -> u16 {
        self.taps.len() as u16
    }

    /// The device features offered by a NIC with `pairs` queue pairs.
    pub fn features_for(pairs: u16) -> u64 {
        let mut f = [
            VIRTIO_NET_F_CSUM,
            VIRTIO_NET_F_GUEST_CSUM,
            VIRTIO_NET_F_CTRL_GUEST_OFFLOADS,
            VIRTIO_NET_F_MTU,
            VIRTIO_NET_F_MAC,
            VIRTIO_NET_F_GUEST_TSO4,
            VIRTIO_NET_F_GUEST_TSO6,
            VIRTIO_NET_F_GUEST_ECN,
            VIRTIO_NET_F_HOST_TSO4,
            VIRTIO_NET_F_HOST_TSO6,
            VIRTIO_NET_F_HOST_ECN,
            VIRTIO_NET_F_MRG_RXBUF,
            VIRTIO_NET_F_STATUS,
            VIRTIO_NET_F_CTRL_VQ,
            VIRTIO_NET_F_CTRL_RX,
            VIRTIO_NET_F_SPEED_DUPLEX,
        ]
        .iter()
        .fold(0u64, |f, bit| f | 1 << bit);
        if pairs > 1 {
            f |= 1 << VIRTIO_NET_F_MQ;
        }
        f
    }
}

/// The queues of one pair, found among those the driver enabled.
fn take(queues: &mut Vec<ActiveQueue>, index: u16) -> Option<ActiveQueue> {
    let at = queues.iter().position(|q| q.index == index)?;
    Some(queues.swap_remove(at))
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u16 {
        VIRTIO_ID_NET
    }

    fn features(&self) -> u64 {
        Self::features_for(self.pairs())
    }

    fn num_queues(&self) -> u16 {
        2 * self.pairs() + 1
    }

    fn queue_max_size(&self) -> u16 {
        QUEUE_SIZE
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {
        // The MAC is writable only in legacy devices; nothing else is writable.
    }

    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError> {
        if activation.features & features::VERSION_1 == 0 {
            // The 12-byte header and the queue layout here are virtio 1.x's.
            return Err(ActivateError::Legacy);
        }
        let mq = activation.features & (1 << VIRTIO_NET_F_MQ) != 0;
        let pairs = if mq { self.pairs() } else { 1 };
        let mergeable = activation.features & (1 << VIRTIO_NET_F_MRG_RXBUF) != 0;
        let mut queues = activation.queues;
        // The control queue follows the last pair the driver may use (virtio 1.2 5.1.2).
        let mut ctrl = take(&mut queues, 2 * pairs).map(|q| CtrlQueue {
            index: q.index,
            queue: q.queue,
            kick: q.kick,
        });
        // Pairs whose queues the driver did not enable are not served; pair 0's thread
        // detaches their tap queues.
        let enabled: Vec<(u16, ActiveQueue, ActiveQueue)> = (0..pairs)
            .filter_map(|p| Some((p, take(&mut queues, 2 * p)?, take(&mut queues, 2 * p + 1)?)))
            .collect();
        if enabled.is_empty() {
            return Err(ActivateError::NoQueue);
        }
        let wakes = (0..pairs)
            .map(|_| EventFd::new(libc::EFD_NONBLOCK))
            .collect::<Result<Vec<_>, _>>()
            .map_err(ActivateError::EventFd)?;
        let shared = Arc::new(Shared {
            taps: self.taps.clone(),
            active_pairs: AtomicU16::new(1),
            wakes,
            stats: self.stats.clone(),
        });
        let (memory, features) = (activation.memory, activation.features);
        let interrupt = activation.interrupt;
        if let Some(vhost) = &self.vhost {
            let call = || EventFd::new(libc::EFD_NONBLOCK).map_err(ActivateError::EventFd);
            let rings = enabled
                .into_iter()
                .map(|(pair, rx, tx)| {
                    Ok(VhostRings {
                        pair,
                        rings: [
                            (rx.index, rx.queue, rx.kick, call()?),
                            (tx.index, tx.queue, tx.kick, call()?),
                        ],
                    })
                })
                .collect::<Result<Vec<_>, ActivateError>>()?;
            let worker = VhostWorker {
                vhost: vhost.clone(),
                pairs: rings,
                ctrl,
                memory,
                shared,
                features,
                interrupt,
            };
            self.threads.start(0, move |stop| worker.run(stop))?;
            tracing::info!(tap = %self.name, pairs, mergeable, "virtio-net: driver ready; vhost-net moves the frames");
            return Ok(());
        }
        for (pair, rx, tx) in enabled {
            let worker = PairWorker {
                pair,
                rx_index: rx.index,
                rx: RxQueue::new(rx.queue, mergeable),
                rx_kick: rx.kick,
                tx_index: tx.index,
                tx: tx.queue,
                tx_kick: tx.kick,
                ctrl: if pair == 0 { ctrl.take() } else { None },
                memory: memory.clone(),
                shared: shared.clone(),
                features,
                interrupt: interrupt.clone(),
            };
            if !self
                .threads
                .start(usize::from(pair), move |stop| worker.run(stop))?
            {
                // The transport offers 2 x MAX_PAIRS + 1 queues at most; a VMM bug.
                tracing::error!(tap = %self.name, pair, "virtio-net: no thread for the pair");
            }
        }
        tracing::info!(tap = %self.name, pairs = self.threads.serving(), mergeable, "virtio-net: driver ready");
        Ok(())
    }

    fn reset(&mut self) {
        self.threads.stop();
    }
}

#[cfg(test)]
mod tests;
