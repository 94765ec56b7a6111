//! The 32-bit PCI memory window on the MMIO bus: accesses are dispatched to whichever
//! function's BAR holds the address now, so guests may move BARs as they do on real hardware.

use std::sync::{Arc, Mutex};

use super::PciFunction;
use crate::devices::bus::{lock, BusDevice};

/// The window [base, base + len) and the functions whose BARs live in it.
pub struct PciMmioWindow {
    base: u64,
    functions: Vec<Arc<Mutex<dyn PciFunction>>>,
}

impl PciMmioWindow {
    /// A window starting at guest-physical `base` (the bus passes offsets from it).
    pub fn new(base: u64) -> Self {
        Self {
            base,
            functions: Vec::new(),
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
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let addr = self.base.wrapping_add(offset);
        self.functions
            .iter()
            .any(|f| lock(f).mmio_write(addr, data));
    }
}
