//! The control queue: the driver's receive-mode, MAC filter, queue-pair and offload commands.
//!
//! Each command is `struct virtio_net_ctrl_hdr` (class, command), its data, then one
//! device-writable byte for the answer (OK or ERR). Receive modes and MAC filter tables are
//! acknowledged and change nothing: the tap gets what the host's switch sends to the VM's port,
//! and which addresses a VM may use is the switch's policy, not the guest's. A command the
//! device did not offer, or with data out of range, gets ERR.

use std::io::{Read, Write};
use std::sync::atomic::Ordering;

use virtio_bindings::virtio_net::{
    VIRTIO_NET_CTRL_GUEST_OFFLOADS, VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET, VIRTIO_NET_CTRL_MAC,
    VIRTIO_NET_CTRL_MAC_TABLE_SET, VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET,
    VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_RX_ALLMULTI, VIRTIO_NET_CTRL_RX_PROMISC, VIRTIO_NET_ERR,
    VIRTIO_NET_F_CTRL_GUEST_OFFLOADS, VIRTIO_NET_F_CTRL_RX, VIRTIO_NET_F_MQ, VIRTIO_NET_OK,
};
use virtio_queue::{DescriptorChain, Queue, QueueT, Reader, Writer};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::{guest_offloads, warn, Shared, GUEST_OFFLOAD_FEATURES};
use crate::devices::virtio::check_avail;
use crate::rate_limit::RateLimiter;

/// Longest command accepted (a MAC table set with 2 x 64 addresses is about 800 bytes).
const MAX_COMMAND: usize = 4096;

/// Why a command got no answer at all.
#[derive(Debug, thiserror::Error)]
pub enum CtrlError {
    /// A buffer lies outside guest memory, or the lengths overflow.
    #[error("descriptor outside guest memory or too long: {0}")]
    Memory(virtio_queue::Error),
    /// No device-writable byte for the answer.
    #[error("no device-writable byte for the answer")]
    NoAck,
}

/// The control queue, served by pair 0's thread (or the vhost-net thread).
pub struct CtrlQueue {
    /// Queue index.
    pub index: u16,
    /// The ring.
    pub queue: Queue,
    /// Driver notifications.
    pub kick: EventFd,
}

/// Serves every command waiting; true if the driver wants an interrupt. Errors are the ring's
/// own (outside guest memory).
pub fn serve(
    c: &mut CtrlQueue,
    mem: &GuestMemoryMmap,
    features: u64,
    shared: &Shared,
    log: &mut RateLimiter,
) -> Result<bool, virtio_queue::Error> {
    loop {
        // With EVENT_IDX the driver kicks only past avail_event, which enabling notifications
        // moves to the next command (Linux spins until a command is answered: a missed kick
        // hangs it); without EVENT_IDX only the flag matters.
        c.queue.disable_notification(mem)?;
        check_avail(&c.queue, mem)?;
        while let Some(chain) = c.queue.pop_descriptor_chain(mem) {
            let head = chain.head_index();
            let used = match handle(chain, mem, features, shared) {
                Ok((used, refused)) => {
                    if let Some(why) = refused {
                        warn(log, 0, "control command refused", &why.to_string());
                    }
                    used
                }
                Err(e) => {
                    warn(log, 0, "control command dropped", &e.to_string());
                    0
                }
            };
            c.queue.add_used(mem, head, used)?;
        }
        if !c.queue.enable_notification(mem)? {
            return c.queue.needs_notification(mem);
        }
    }
}

/// Why a command got ERR (for the log; the driver sees only the answer).
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// Fewer bytes than a class and a command, or unreadable.
    #[error("a {0}-byte command")]
    Short(usize),
    /// A class and command the device did not offer (or with data of the wrong shape).
    #[error("command {0}.{1} not offered, or its data malformed")]
    NotOffered(u8, u8),
    /// VQ_PAIRS_SET with a count out of range.
    #[error("{asked} queue pairs asked, 1 to {max} offered")]
    Pairs {
        /// The count asked for.
        asked: u16,
        /// The device's queue pairs.
        max: usize,
    },
    /// GUEST_OFFLOADS_SET with offloads that were not negotiated.
    #[error("offloads {0:#x} not negotiated")]
    Offloads(u64),
    /// The tap refused the offloads.
    #[error(transparent)]
    Tap(#[from] super::tap::TapError),
}

/// Carries out one command; returns the bytes written (the answer's one) and, for the log,
/// why it was refused.
pub fn handle(
    chain: DescriptorChain<&GuestMemoryMmap>,
    mem: &GuestMemoryMmap,
    features: u64,
    shared: &Shared,
) -> Result<(u32, Option<Refused>), CtrlError> {
    let mut reader = Reader::new(mem, chain.clone()).map_err(CtrlError::Memory)?;
    let mut writer = Writer::new(mem, chain).map_err(CtrlError::Memory)?;
    let avail = writer.available_bytes();
    if avail == 0 {
        return Err(CtrlError::NoAck);
    }
    let mut ack = writer.split_at(avail - 1).map_err(CtrlError::Memory)?;
    let len = reader.available_bytes().min(MAX_COMMAND);
    let mut cmd = vec![0u8; len];
    let refused = match reader.read_exact(&mut cmd) {
        Ok(()) => execute(&cmd, features, shared).err(),
        Err(_) => Some(Refused::Short(len)),
    };
    let answer = if refused.is_none() {
        VIRTIO_NET_OK
    } else {
        VIRTIO_NET_ERR
    };
    // The answer byte lies in guest memory checked above.
    let _ = ack.write_all(&[answer as u8]);
    Ok((1, refused))
}

fn offered(features: u64, bit: u32) -> bool {
    features & (1 << bit) != 0
}

fn execute(cmd: &[u8], features: u64, shared: &Shared) -> Result<(), Refused> {
    let (raw_class, raw_code, data) = match cmd {
        [class, code, data @ ..] => (*class, *code, data),
        _ => return Err(Refused::Short(cmd.len())),
    };
    let not_offered = Refused::NotOffered(raw_class, raw_code);
    match (u32::from(raw_class), u32::from(raw_code)) {
        (VIRTIO_NET_CTRL_RX, VIRTIO_NET_CTRL_RX_PROMISC | VIRTIO_NET_CTRL_RX_ALLMULTI)
            if offered(features, VIRTIO_NET_F_CTRL_RX) && data.len() == 1 =>
        {
            Ok(())
        }
        (VIRTIO_NET_CTRL_MAC, VIRTIO_NET_CTRL_MAC_TABLE_SET)
            if offered(features, VIRTIO_NET_F_CTRL_RX) && mac_tables_fit(data) =>
        {
            Ok(())
        }
        (VIRTIO_NET_CTRL_MQ, VIRTIO_NET_CTRL_MQ_VQ_PAIRS_SET)
            if offered(features, VIRTIO_NET_F_MQ) =>
        {
            let pairs = match data {
                [a, b] => u16::from_le_bytes([*a, *b]),
                _ => return Err(not_offered),
            };
            let max = shared.taps.len();
            if pairs == 0 || usize::from(pairs) > max {
                return Err(Refused::Pairs { asked: pairs, max });
            }
            // The kernel steers no frame to a detached queue from here on, before the
            // answer (virtio 1.2 5.1.6.5.5); the pairs' threads follow at their wake-up.
            shared.active_pairs.store(pairs, Ordering::SeqCst);
            shared.steer_all();
            shared.wake_all();
            tracing::debug!(pairs, "virtio-net: queue pairs in use");
            Ok(())
        }
        (VIRTIO_NET_CTRL_GUEST_OFFLOADS, VIRTIO_NET_CTRL_GUEST_OFFLOADS_SET)
            if offered(features, VIRTIO_NET_F_CTRL_GUEST_OFFLOADS) =>
        {
            let wanted = match <[u8; 8]>::try_from(data) {
                Ok(b) => u64::from_le_bytes(b),
                Err(_) => return Err(not_offered),
            };
            if wanted & !(features & GUEST_OFFLOAD_FEATURES) != 0 {
                return Err(Refused::Offloads(wanted));
            }
            Ok(shared.taps[0].set_offload(guest_offloads(wanted))?)
        }
        _ => Err(not_offered),
    }
}

/// A MAC_TABLE_SET's data: two tables, each a 32-bit count then that many 6-byte addresses.
fn mac_tables_fit(data: &[u8]) -> bool {
    let mut rest = data;
    for _ in 0..2 {
        let Some((count, tail)) = rest.split_first_chunk::<4>() else {
            return false;
        };
        let n = u32::from_le_bytes(*count) as usize;
        let Some(bytes) = n.checked_mul(6).filter(|b| *b <= tail.len()) else {
            return false;
        };
        rest = &tail[bytes..];
    }
    rest.is_empty()
}
