//! The 32-bit PCI memory window on the MMIO bus: accesses are dispatched to whichever
//! function's BAR holds the address now, so guests may move BARs as they do on real hardware.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::PciFunction;
use crate::devices::bus::{lock, BusDevice};
use crate::rate_limit::{RateLimiter, Verdict};

/// The window [base, base + len) and the functions whose BARs live in it.
pub struct PciMmioWindow {
    base: u64,
    functions: Vec<Arc<Mutex<dyn PciFunction>>>,
    unclaimed: RateLimiter,
}

impl PciMmioWindow {
    /// A window starting at guest-physical `base` (the bus passes offsets from it).
    pub fn new(base: u64) -> Self {
        Self {
            base,
            functions: Vec::new(),
            unclaimed: RateLimiter::new(10, Duration::from_secs(5)),
        }
    }

    fn log_unclaimed(&mut self, op: &str, addr: u64, len: usize) {
        if let Verdict::Log { suppressed } = self.unclaimed.check(Instant::now()) {
            tracing::warn!(
                bus = "PCI MMIO",
                op,
                addr = format_args!("{addr:#x}"),
                len,
                suppressed,
                "guest access to an address no device claims; ignored"
            );
        }
    }

    /// Adds a function with memory BARs.
    pub fn add(&mut self, function: Arc<Mutex<dyn PciFunction>>) {
        self.functions.push(function);
    }
}

impl BusDevice for PciMmioWindow {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let addr = self.base.wrapping_add(offset);
        if !self.functions.iter().any(|f| lock(f).mmio_read(addr, data)) {
            data.fill(0xff);
            self.log_unclaimed("read", addr, data.len());
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let addr = self.base.wrapping_add(offset);
        self.functions
            .iter()
            .any(|f| lock(f).mmio_write(addr, data));
    }
}
