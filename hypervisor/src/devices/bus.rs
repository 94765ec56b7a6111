//! Port-I/O and MMIO buses: address ranges mapped to device models, with guarded handling of
//! accesses that hit nothing.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::rate_limit::{RateLimiter, Verdict};

/// A device model reachable through port I/O or MMIO. `offset` is relative to the range base.
pub trait BusDevice: Send {
    /// Guest read of `data.len()` bytes at `offset`.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Guest write of `data` at `offset`.
    fn write(&mut self, offset: u64, data: &[u8]);
    /// The machine's reset: back to the state the device had when the VM was built. Devices
    /// whose state outlives a reset on a real machine (the RTC and its NVRAM, the UART a
    /// guest programs anew) keep it.
    fn reset(&mut self) {}
}

/// A device shared between the buses and the threads that feed it.
pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

/// Locks a device even if a previous holder panicked: device state stays usable, and a guest
/// must not be able to turn one bug into a crash of every vCPU.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Errors while building a bus.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    /// Two devices claim overlapping ranges.
    #[error("{bus} range {base:#x}+{len:#x} overlaps a device already there")]
    Overlap {
        /// Bus name.
        bus: &'static str,
        /// Start of the new range.
        base: u64,
        /// Length of the new range.
        len: u64,
    },
    /// Zero-length or wrapping range.
    #[error("{bus} range {base:#x}+{len:#x} is empty or wraps")]
    BadRange {
        /// Bus name.
        bus: &'static str,
        /// Start.
        base: u64,
        /// Length.
        len: u64,
    },
}

struct Entry {
    len: u64,
    device: SharedDevice,
}

/// One address space (ports or MMIO).
pub struct Bus {
    name: &'static str,
    ranges: BTreeMap<u64, Entry>,
    unknown: Mutex<RateLimiter>,
}

impl Bus {
    /// An empty bus; `name` appears in log lines ("port", "MMIO").
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            ranges: BTreeMap::new(),
            unknown: Mutex::new(RateLimiter::new(10, Duration::from_secs(5))),
        }
    }

    /// Maps `device` at `[base, base + len)`.
    pub fn insert(&mut self, device: SharedDevice, base: u64, len: u64) -> Result<(), BusError> {
        let end = base
            .checked_add(len)
            .filter(|_| len > 0)
            .ok_or(BusError::BadRange {
                bus: self.name,
                base,
                len,
            })?;
        let overlaps_before = self
            .ranges
            .range(..end)
            .next_back()
            .is_some_and(|(b, e)| b + e.len > base);
        if overlaps_before {
            return Err(BusError::Overlap {
                bus: self.name,
                base,
                len,
            });
        }
        self.ranges.insert(base, Entry { len, device });
        Ok(())
    }

    /// Resets every device on the bus once (a device mapped at several ranges included).
    pub fn reset(&self) {
        let mut done: Vec<*const ()> = Vec::new();
        for e in self.ranges.values() {
            let id = Arc::as_ptr(&e.device) as *const ();
            if !done.contains(&id) {
                done.push(id);
                lock(&e.device).reset();
            }
        }
    }

    fn find(&self, addr: u64, size: usize) -> Option<(u64, &SharedDevice)> {
        let (base, entry) = self.ranges.range(..=addr).next_back()?;
        let offset = addr - base;
        (offset.checked_add(size as u64)? <= entry.len).then_some((offset, &entry.device))
    }

    /// Dispatches a guest read. Unclaimed addresses read as all ones, as on real hardware.
    pub fn read(&self, addr: u64, data: &mut [u8]) {
        match self.find(addr, data.len()) {
            Some((offset, dev)) => lock(dev).read(offset, data),
            None => {
                data.fill(0xff);
                self.log_unknown("read", addr, data.len(), None);
            }
        }
    }

    /// Dispatches a guest write. Unclaimed addresses drop the data.
    pub fn write(&self, addr: u64, data: &[u8]) {
        match self.find(addr, data.len()) {
            Some((offset, dev)) => lock(dev).write(offset, data),
            None => self.log_unknown("write", addr, data.len(), Some(data)),
        }
    }

    fn log_unknown(&self, op: &str, addr: u64, len: usize, data: Option<&[u8]>) {
        if let Verdict::Log { suppressed } = lock(&self.unknown).check(Instant::now()) {
            tracing::warn!(
                bus = self.name,
                op,
                addr = format_args!("{addr:#x}"),
                len,
                data = ?data,
                suppressed,
                "guest access to an address no device claims; ignored"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Echo(Vec<(u64, Vec<u8>)>);
    impl BusDevice for Echo {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.0.push((offset, data.to_vec()));
        }
    }

    fn echo() -> Arc<Mutex<Echo>> {
        Arc::new(Mutex::new(Echo(Vec::new())))
    }

    #[test]
    fn dispatches_with_offsets() {
        let mut bus = Bus::new("port");
        let dev = echo();
        bus.insert(dev.clone(), 0x3f8, 8).unwrap();
        let mut b = [0u8; 1];
        bus.read(0x3fa, &mut b);
        assert_eq!(b, [2]);
        bus.write(0x3ff, &[9]);
        assert_eq!(lock(&dev).0, vec![(7, vec![9])]);
    }

    #[test]
    fn reset_reaches_each_device_once() {
        struct Counter(Arc<Mutex<u32>>);
        impl BusDevice for Counter {
            fn read(&mut self, _: u64, _: &mut [u8]) {}
            fn write(&mut self, _: u64, _: &[u8]) {}
            fn reset(&mut self) {
                *lock(&self.0) += 1;
            }
        }
        let resets = Arc::new(Mutex::new(0));
        let dev: SharedDevice = Arc::new(Mutex::new(Counter(resets.clone())));
        let mut bus = Bus::new("test");
        bus.insert(dev.clone(), 0x10, 2).unwrap();
        bus.insert(dev, 0x20, 2).unwrap();
        bus.insert(Arc::new(Mutex::new(Counter(resets.clone()))), 0x30, 2)
            .unwrap();
        bus.reset();
        assert_eq!(*lock(&resets), 2);
    }

    #[test]
    fn unknown_reads_are_all_ones_and_writes_vanish() {
        let bus = Bus::new("port");
        let mut b = [0u8; 4];
        for _ in 0..10_000 {
            bus.read(0x1234, &mut b);
            bus.write(0x1234, &[1, 2]);
        }
        assert_eq!(b, [0xff; 4]);
    }

    #[test]
    fn straddling_access_is_not_dispatched() {
        let mut bus = Bus::new("port");
        let dev = echo();
        bus.insert(dev.clone(), 0x60, 1).unwrap();
        bus.write(0x60, &[1, 2, 3, 4]);
        assert!(lock(&dev).0.is_empty());
        let mut b = [0u8; 2];
        bus.read(0x60, &mut b);
        assert_eq!(b, [0xff, 0xff]);
    }

    #[test]
    fn overlaps_and_bad_ranges_are_refused() {
        let mut bus = Bus::new("MMIO");
        bus.insert(echo(), 0x1000, 0x100).unwrap();
        assert!(bus.insert(echo(), 0x10ff, 1).is_err());
        assert!(bus.insert(echo(), 0xf00, 0x101).is_err());
        assert!(bus.insert(echo(), 0x1100, 1).is_ok());
        assert!(bus.insert(echo(), 0x2000, 0).is_err());
        assert!(bus.insert(echo(), u64::MAX, 2).is_err());
    }

    #[test]
    fn access_near_top_of_address_space_does_not_overflow() {
        let mut bus = Bus::new("MMIO");
        bus.insert(echo(), u64::MAX - 0x1f, 0x10).unwrap();
        let mut b = [0u8; 8];
        bus.read(u64::MAX - 0x13, &mut b);
        assert_eq!(b, [0xff; 8]);
        bus.read(u64::MAX - 3, &mut b);
        assert_eq!(b, [0xff; 8]);
    }
}
