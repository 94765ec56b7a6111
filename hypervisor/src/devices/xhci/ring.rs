//! Rings in guest memory (xHCI 1.2, 4.9): the command and transfer rings the controller
//! consumes, and the event ring it produces.
//!
//! Everything in them is the guest's: every access is checked by vm-memory, a chain of Link
//! TRBs that never reaches a TRB ends as an error instead of a loop, and the event ring's
//! segment table is bounded by ERST Max.

use std::collections::VecDeque;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::trb::{flag, kind, Trb, TRB_LEN};

/// Link TRBs followed in a row before the ring counts as broken.
const LINK_HOPS: usize = 32;
/// Segments the event ring may have (HCSPARAMS2.ERST Max = 4: 2^4).
pub const ERST_MAX: u32 = 16;
/// Events held while the event ring is full.
const HELD_MAX: usize = 1024;

/// A ring that cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// A guest memory access failed.
    #[error("ring memory at {0:#x} is not guest RAM")]
    Memory(u64),
    /// Link TRBs that lead only to more Link TRBs.
    #[error("ring at {0:#x}: Link TRBs lead nowhere")]
    LinkLoop(u64),
    /// An event ring segment table the guest wrote badly.
    #[error("event ring segment table: {0}")]
    Segments(&'static str),
}

/// Reads a TRB.
pub fn read_trb(mem: &GuestMemoryMmap, addr: u64) -> Result<Trb, RingError> {
    let mut b = [0u8; 16];
    mem.read_slice(&mut b, GuestAddress(addr))
        .map_err(|_| RingError::Memory(addr))?;
    Ok(Trb::from_bytes(b))
}

/// A consumer's place on a ring: the dequeue pointer and the cycle state. Copies serve as
/// look-ahead cursors, committed by assigning them back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ring {
    /// Address of the next TRB.
    pub dequeue: u64,
    /// Consumer cycle state.
    pub cycle: bool,
}

impl Ring {
    /// A ring at `pointer` (bit 0: the cycle state, as contexts and CRCR carry it).
    pub fn at(pointer: u64) -> Self {
        Self {
            dequeue: pointer & !0xf,
            cycle: pointer & 1 != 0,
        }
    }

    /// The pointer with the cycle state in bit 0.
    pub fn pointer(&self) -> u64 {
        self.dequeue | u64::from(self.cycle)
    }

    /// Takes the next TRB the producer handed over (its cycle bit matches), following Link
    /// TRBs; `None` when the producer has not written one yet.
    pub fn next(&mut self, mem: &GuestMemoryMmap) -> Result<Option<(u64, Trb)>, RingError> {
        for _ in 0..LINK_HOPS {
            let trb = read_trb(mem, self.dequeue)?;
            if trb.cycle() != self.cycle {
                return Ok(None);
            }
            if trb.kind() == kind::LINK {
                self.dequeue = trb.parameter & !0xf;
                if trb.has(flag::TOGGLE_CYCLE) {
                    self.cycle = !self.cycle;
                }
                continue;
            }
            let at = self.dequeue;
            self.dequeue = self.dequeue.wrapping_add(TRB_LEN);
            return Ok(Some((at, trb)));
        }
        Err(RingError::LinkLoop(self.dequeue))
    }
}

/// The event ring of an interrupter: the segments the driver gave, the producer's place, and
/// events held while the ring is full.
#[derive(Debug, Default)]
pub struct EventRing {
    segments: Vec<(u64, u32)>,
    segment: usize,
    index: u32,
    cycle: bool,
    /// The driver's dequeue pointer (ERDP).
    dequeue: u64,
    held: VecDeque<Trb>,
}

impl EventRing {
    /// Reads the segment table of `count` entries at `table` (ERSTBA, ERSTSZ) and starts
    /// producing at the first segment's first TRB.
    pub fn setup(mem: &GuestMemoryMmap, table: u64, count: u32) -> Result<Self, RingError> {
        if count == 0 || count > ERST_MAX {
            return Err(RingError::Segments("size is not 1 to 16"));
        }
        let mut segments = Vec::new();
        for i in 0..u64::from(count) {
            let at = table.wrapping_add(16 * i);
            let mut b = [0u8; 16];
            mem.read_slice(&mut b, GuestAddress(at))
                .map_err(|_| RingError::Memory(at))?;
            let base = u64::from_le_bytes(b[0..8].try_into().unwrap_or_default()) & !0x3f;
            let size = u32::from(u16::from_le_bytes([b[8], b[9]]));
            if !(16..=4096).contains(&size) {
                return Err(RingError::Segments("a segment is not 16 to 4096 TRBs"));
            }
            segments.push((base, size));
        }
        Ok(Self {
            dequeue: segments[0].0,
            segments,
            cycle: true,
            ..Self::default()
        })
    }

    /// Whether the driver gave a ring.
    pub fn is_set(&self) -> bool {
        !self.segments.is_empty()
    }

    fn enqueue(&self) -> u64 {
        let (base, _) = self.segments[self.segment];
        base + TRB_LEN * u64::from(self.index)
    }

    /// The producer's place after one more event: segment, index, and whether the cycle
    /// state toggles (the last segment's end wraps to the first).
    fn next_place(&self) -> (usize, u32, bool) {
        if self.index + 1 < self.segments[self.segment].1 {
            (self.segment, self.index + 1, false)
        } else if self.segment + 1 < self.segments.len() {
            (self.segment + 1, 0, false)
        } else {
            (0, 0, true)
        }
    }

    fn advance(&mut self) {
        let (segment, index, wrap) = self.next_place();
        self.segment = segment;
        self.index = index;
        self.cycle ^= wrap;
    }

    /// Full when one more event would reach the driver's dequeue pointer.
    fn full(&self) -> bool {
        let (segment, index, _) = self.next_place();
        self.segments[segment].0 + TRB_LEN * u64::from(index) == self.dequeue
    }

    /// The driver moved its dequeue pointer (ERDP).
    pub fn set_dequeue(&mut self, pointer: u64) {
        self.dequeue = pointer & !0xf;
    }

    /// Whether events are written that the driver has not taken.
    pub fn unread(&self) -> bool {
        self.is_set() && self.enqueue() != self.dequeue
    }

    /// Writes `event` (or holds it while the ring is full). Returns whether anything was
    /// written.
    pub fn push(&mut self, mem: &GuestMemoryMmap, event: Trb) -> Result<bool, RingError> {
        if !self.is_set() {
            return Ok(false);
        }
        if !self.held.is_empty() || self.full() {
            if self.held.len() == HELD_MAX {
                tracing::debug!("xHCI: event dropped: the driver's event ring is full");
            } else {
                self.held.push_back(event);
            }
            return Ok(false);
        }
        self.write(mem, event)?;
        Ok(true)
    }

    /// Writes held events into the room the driver made. Returns whether any was written.
    pub fn flush(&mut self, mem: &GuestMemoryMmap) -> Result<bool, RingError> {
        let mut wrote = false;
        while self.is_set() && !self.full() {
            let Some(e) = self.held.pop_front() else {
                break;
            };
            self.write(mem, e)?;
            wrote = true;
        }
        Ok(wrote)
    }

    fn write(&mut self, mem: &GuestMemoryMmap, mut event: Trb) -> Result<(), RingError> {
        let at = self.enqueue();
        event.control = (event.control & !flag::CYCLE) | u32::from(self.cycle);
        let bytes = event.to_bytes();
        // The cycle bit hands the TRB over: the rest goes first.
        mem.write_slice(&bytes[..12], GuestAddress(at))
            .and_then(|()| mem.write_slice(&bytes[12..], GuestAddress(at + 12)))
            .map_err(|_| RingError::Memory(at))?;
        self.advance();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap()
    }

    fn put(mem: &GuestMemoryMmap, at: u64, t: Trb) {
        mem.write_slice(&t.to_bytes(), GuestAddress(at)).unwrap();
    }

    fn trb(kind: u8, parameter: u64, control: u32) -> Trb {
        Trb {
            parameter,
            status: 0,
            control: control | u32::from(kind) << 10,
        }
    }

    #[test]
    fn follows_links_and_toggles_cycle() {
        let m = mem();
        put(&m, 0x1000, trb(kind::NOOP, 0, 1));
        put(&m, 0x1010, trb(kind::LINK, 0x1000, 1 | flag::TOGGLE_CYCLE));
        let mut r = Ring::at(0x1001);
        assert_eq!(r.next(&m).unwrap().unwrap().0, 0x1000);
        // The link toggles the cycle state: the old NOOP (cycle 1) is not handed over again.
        assert_eq!(r.next(&m).unwrap(), None);
        assert_eq!(r.pointer(), 0x1000);
        put(&m, 0x1000, trb(kind::NOOP, 0, 0));
        assert_eq!(r.next(&m).unwrap().unwrap().0, 0x1000);
    }

    #[test]
    fn link_loops_and_bad_memory_are_errors() {
        let m = mem();
        put(&m, 0x2000, trb(kind::LINK, 0x2000, 1));
        assert_eq!(Ring::at(0x2001).next(&m), Err(RingError::LinkLoop(0x2000)));
        assert_eq!(
            Ring::at(0xffff_0001).next(&m),
            Err(RingError::Memory(0xffff_0000))
        );
    }

    #[test]
    fn event_ring_wraps_holds_when_full_and_flushes() {
        let m = mem();
        // Two segments of 16.
        for (i, base) in [0x3000u64, 0x4000].iter().enumerate() {
            let mut e = [0u8; 16];
            e[..8].copy_from_slice(&base.to_le_bytes());
            e[8] = 16;
            m.write_slice(&e, GuestAddress(0x500 + 16 * i as u64))
                .unwrap();
        }
        let mut ring = EventRing::setup(&m, 0x500, 2).unwrap();
        for i in 0..31 {
            assert!(ring.push(&m, Trb::port_status_change(i)).unwrap());
        }
        // The 32nd would reach the dequeue pointer: held.
        assert!(!ring.push(&m, Trb::port_status_change(99)).unwrap());
        assert_eq!(read_trb(&m, 0x4000).unwrap().parameter, 16 << 24);
        assert!(read_trb(&m, 0x4000).unwrap().cycle());
        ring.set_dequeue(0x3020);
        assert!(ring.flush(&m).unwrap());
        let last = read_trb(&m, 0x40f0).unwrap();
        assert_eq!(last.parameter, 99 << 24);
        assert!(last.cycle());
        assert!(EventRing::setup(&m, 0x500, 0).is_err());
        assert!(EventRing::setup(&m, 0x500, 17).is_err());
        assert!(EventRing::setup(&m, 0xffff_0000, 1).is_err());
    }
}
