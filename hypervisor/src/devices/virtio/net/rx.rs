//! Receiving: one frame from the tap into the guest's receive buffers.
//!
//! With mergeable receive buffers (MRG_RXBUF) a frame fills as many buffers as it needs and
//! the header's `num_buffers` says how many; without, one buffer must hold it whole. The
//! buffers of one frame are published in the used ring together (one index update): a driver
//! that sees the first must find the others (Linux counts a frame with missing buffers as an
//! error and drops it), so this queue writes its used ring itself rather than through
//! virtio-queue's `add_used`, which publishes each element on its own.

use std::io::Write;
use std::num::Wrapping;
use std::sync::atomic::{fence, Ordering};

use virtio_queue::{Queue, QueueOwnedT, QueueT, Writer};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

use super::tap::VNET_HDR_LEN;
use crate::devices::virtio::check_avail;

/// Offset of `num_buffers` in the virtio-net header.
const NUM_BUFFERS: usize = 10;

/// What became of a frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Delivery {
    /// It is in the guest's buffers.
    Delivered,
    /// The guest has not given enough buffers yet: keep it and try again when it adds some.
    NoBuffers,
    /// It was dropped (the reason is for the log); the buffers it took went back empty.
    Dropped(&'static str),
}

/// A receive queue.
pub struct RxQueue {
    /// The ring.
    pub queue: Queue,
    /// MRG_RXBUF was negotiated.
    pub mergeable: bool,
    /// Used elements published since the last notification decision.
    added: Wrapping<u16>,
}

impl RxQueue {
    /// `queue`, with or without mergeable buffers.
    pub fn new(queue: Queue, mergeable: bool) -> Self {
        Self {
            queue,
            mergeable,
            added: Wrapping(0),
        }
    }

    /// Puts `frame` (a virtio-net header, then the Ethernet frame) into the guest's buffers;
    /// errors are the ring's own (outside guest memory): the queue is unusable.
    pub fn deliver(
        &mut self,
        mem: &GuestMemoryMmap,
        frame: &mut [u8],
    ) -> Result<Delivery, virtio_queue::Error> {
        if frame.len() < VNET_HDR_LEN {
            return Ok(Delivery::Dropped("a frame shorter than its header"));
        }
        check_avail(&self.queue, mem)?;
        let mut popped = 0u16;
        // Buffers that cannot take data (outside memory, nothing device-writable, too small
        // for the header) go back empty, ahead of the frame's.
        let mut empty: Vec<u16> = Vec::new();
        let mut buffers: Vec<(u16, Writer<'_>)> = Vec::new();
        let mut room = 0usize;
        while room < frame.len() {
            let Some(chain) = self.queue.pop_descriptor_chain(mem) else {
                if popped >= self.queue.size() {
                    // The whole ring cannot hold it: waiting would never end.
                    empty.extend(buffers.iter().map(|(h, _)| *h));
                    self.publish(mem, &empty, &[])?;
                    return Ok(Delivery::Dropped(
                        "a frame larger than every receive buffer together",
                    ));
                }
                for _ in 0..popped {
                    self.queue.go_to_previous_position();
                }
                return Ok(Delivery::NoBuffers);
            };
            popped += 1;
            let head = chain.head_index();
            let min = if buffers.is_empty() { VNET_HDR_LEN } else { 1 };
            match Writer::new(mem, chain) {
                Ok(w) if w.available_bytes() >= min => {
                    room = room.saturating_add(w.available_bytes());
                    buffers.push((head, w));
                }
                _ => empty.push(head),
            }
            if !self.mergeable && !buffers.is_empty() && room < frame.len() {
                empty.extend(buffers.iter().map(|(h, _)| *h));
                self.publish(mem, &empty, &[])?;
                return Ok(Delivery::Dropped(
                    "a frame larger than the receive buffer (no mergeable buffers)",
                ));
            }
        }
        let count = u16::try_from(buffers.len()).unwrap_or(u16::MAX);
        frame[NUM_BUFFERS..NUM_BUFFERS + 2].copy_from_slice(&count.to_le_bytes());
        let mut filled = Vec::with_capacity(buffers.len());
        let mut rest: &[u8] = frame;
        for (head, mut w) in buffers {
            let n = rest.len().min(w.available_bytes());
            // The buffer was checked against guest memory when its Writer was made.
            if w.write_all(&rest[..n]).is_err() {
                return Err(virtio_queue::Error::InvalidChain);
            }
            rest = &rest[n..];
            filled.push((head, n as u32));
        }
        self.publish(mem, &empty, &filled)?;
        Ok(Delivery::Delivered)
    }

    /// Writes used elements (`empty` ones with length 0, then `filled`) and makes them visible
    /// with one index update.
    fn publish(
        &mut self,
        mem: &GuestMemoryMmap,
        empty: &[u16],
        filled: &[(u16, u32)],
    ) -> Result<(), virtio_queue::Error> {
        let size = self.queue.size();
        let used = GuestAddress(self.queue.used_ring());
        let mut next = Wrapping(self.queue.next_used());
        for (head, len) in empty.iter().map(|h| (*h, 0)).chain(filled.iter().copied()) {
            if head >= size {
                return Err(virtio_queue::Error::InvalidDescriptorIndex);
            }
            // `struct virtq_used_elem`: the head's index and the bytes written, little-endian.
            let mut elem = [0u8; 8];
            elem[..4].copy_from_slice(&u32::from(head).to_le_bytes());
            elem[4..].copy_from_slice(&len.to_le_bytes());
            let at = used
                .checked_add(4 + u64::from(next.0 % size) * 8)
                .ok_or(virtio_queue::Error::AddressOverflow)?;
            mem.write_slice(&elem, at)
                .map_err(virtio_queue::Error::GuestMemory)?;
            next += Wrapping(1);
            self.added += Wrapping(1);
        }
        let idx = used
            .checked_add(2)
            .ok_or(virtio_queue::Error::AddressOverflow)?;
        mem.store(next.0.to_le(), idx, Ordering::Release)
            .map_err(virtio_queue::Error::GuestMemory)?;
        self.queue.set_next_used(next.0);
        Ok(())
    }

    /// After [`Delivery::NoBuffers`]: asks the driver to notify when it adds buffers; true
    /// if it added some meanwhile (try again now).
    pub fn wait_for_buffers(&mut self, mem: &GuestMemoryMmap) -> Result<bool, virtio_queue::Error> {
        // Clears the no-notify flag (without EVENT_IDX); its answer compares with the next
        // entry to take, which the buffers given back keep unconsumed, so it says nothing.
        self.queue.enable_notification(mem)?;
        let avail = self.queue.avail_idx(mem, Ordering::Acquire)?;
        if self.queue.event_idx_enabled() {
            // virtio-queue set avail_event to that next entry, which the driver has already
            // passed: it would never kick. Ask for a kick at the next entry it adds instead.
            let at = GuestAddress(self.queue.used_ring())
                .checked_add(4 + 8 * u64::from(self.queue.size()))
                .ok_or(virtio_queue::Error::AddressOverflow)?;
            mem.store(avail.0.to_le(), at, Ordering::Release)
                .map_err(virtio_queue::Error::GuestMemory)?;
        }
        fence(Ordering::SeqCst);
        Ok(self.queue.avail_idx(mem, Ordering::Acquire)? != avail)
    }

    /// Whether the driver wants an interrupt for what was published since the last call
    /// (`used_event` when EVENT_IDX was negotiated, as virtio-queue decides for other queues).
    pub fn needs_notification(
        &mut self,
        mem: &GuestMemoryMmap,
    ) -> Result<bool, virtio_queue::Error> {
        let added = std::mem::replace(&mut self.added, Wrapping(0));
        if added.0 == 0 {
            return Ok(false);
        }
        if !self.queue.event_idx_enabled() {
            return Ok(true);
        }
        // The used elements must be visible before `used_event` is read.
        fence(Ordering::SeqCst);
        let size = u64::from(self.queue.size());
        let at = GuestAddress(self.queue.avail_ring())
            .checked_add(4 + 2 * size)
            .ok_or(virtio_queue::Error::AddressOverflow)?;
        let used_event = Wrapping(u16::from_le(
            mem.load::<u16>(at, Ordering::Acquire)
                .map_err(virtio_queue::Error::GuestMemory)?,
        ));
        let new = Wrapping(self.queue.next_used());
        let old = new - added;
        // Notify when used_event lies in [old, new): virtio 1.2 2.7.10, as Linux computes it.
        Ok(new - used_event - Wrapping(1) < new - old)
    }
}
