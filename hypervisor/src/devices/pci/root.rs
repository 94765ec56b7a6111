//! Bus 0 and its configuration access through I/O ports 0xCF8 (address) and 0xCFC (data).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::PciFunction;
use crate::devices::bus::{lock, BusDevice};

/// The configuration address and data ports.
pub const PCI_CONFIG_IO_BASE: u64 = 0xcf8;
/// 0xCF8..=0xCFF.
pub const PCI_CONFIG_IO_LEN: u64 = 8;
/// Device slots on a bus.
pub const SLOTS: u8 = 32;

const ENABLE: u32 = 1 << 31;

/// Errors while populating the bus.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PciError {
    /// The slot is taken or out of range.
    #[error("PCI slot {0} is taken or does not exist")]
    SlotUnavailable(u8),
    /// No free slot left.
    #[error("the PCI bus has no free slot")]
    BusFull,
}

/// Bus 0 with single-function devices.
pub struct PciRoot {
    address: u32,
    slots: BTreeMap<u8, Arc<Mutex<dyn PciFunction>>>,
}

impl PciRoot {
    /// An empty bus.
    pub fn new() -> Self {
        Self {
            address: 0,
            slots: BTreeMap::new(),
        }
    }

    /// Places `function` in `slot` (function 0).
    pub fn add_at(
        &mut self,
        slot: u8,
        function: Arc<Mutex<dyn PciFunction>>,
    ) -> Result<(), PciError> {
        if slot >= SLOTS || self.slots.contains_key(&slot) {
            return Err(PciError::SlotUnavailable(slot));
        }
        self.slots.insert(slot, function);
        Ok(())
    }

    /// Places `function` in the lowest free slot and returns it.
    pub fn add(&mut self, function: Arc<Mutex<dyn PciFunction>>) -> Result<u8, PciError> {
        let slot = (0..SLOTS)
            .find(|s| !self.slots.contains_key(s))
            .ok_or(PciError::BusFull)?;
        self.add_at(slot, function)?;
        Ok(slot)
    }

    /// The function addressed by a configuration address, if any.
    fn target(&self, address: u32) -> Option<(&Arc<Mutex<dyn PciFunction>>, usize)> {
        let bus = (address >> 16) & 0xff;
        let slot = ((address >> 11) & 0x1f) as u8;
        let function = (address >> 8) & 0x7;
        let reg = ((address >> 2) & 0x3f) as usize;
        if address & ENABLE == 0 || bus != 0 || function != 0 {
            return None;
        }
        self.slots.get(&slot).map(|f| (f, reg))
    }

    fn read_data(&self, offset: usize, data: &mut [u8]) {
        let value = match self.target(self.address) {
            Some((f, reg)) => lock(f).config_read(reg),
            None => u32::MAX,
        };
        let bytes = value.to_le_bytes();
        data.copy_from_slice(&bytes[offset..offset + data.len()]);
    }

    fn write_data(&self, offset: usize, data: &[u8]) {
        if let Some((f, reg)) = self.target(self.address) {
            lock(f).config_write(reg, offset, data);
        }
    }
}

impl Default for PciRoot {
    fn default() -> Self {
        Self::new()
    }
}

impl BusDevice for PciRoot {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let offset = offset as usize;
        match offset {
            // The address register reads back whole; partial reads see its bytes.
            0..=3 if offset + data.len() <= 4 => {
                let bytes = self.address.to_le_bytes();
                data.copy_from_slice(&bytes[offset..offset + data.len()]);
            }
            4..=7 if offset + data.len() <= 8 => self.read_data(offset - 4, data),
            _ => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let offset = offset as usize;
        match (offset, data.len()) {
            // Only dword writes set the address; byte writes to 0xCFB are Linux's
            // mechanism-#2 probe and are ignored, as on real chipsets.
            (0, 4) => {
                let v = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
                self.address = v & 0x80ff_fffc;
            }
            (4..=7, n) if n > 0 && offset + n <= 8 => self.write_data(offset - 4, data),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::host_bridge::HostBridge;
    use super::*;

    fn root() -> PciRoot {
        let mut r = PciRoot::new();
        r.add(Arc::new(Mutex::new(HostBridge::new()))).unwrap();
        r
    }

    fn read32(r: &mut PciRoot, slot: u32, reg: u32) -> u32 {
        r.write(0, &(ENABLE | slot << 11 | reg << 2).to_le_bytes());
        let mut b = [0u8; 4];
        r.read(4, &mut b);
        u32::from_le_bytes(b)
    }

    #[test]
    fn host_bridge_at_slot_zero() {
        let mut r = root();
        assert_eq!(read32(&mut r, 0, 0), 0x0008_1b36);
        assert_eq!(read32(&mut r, 0, 2) >> 8, 0x06_0000);
        assert_eq!(read32(&mut r, 1, 0), u32::MAX);
    }

    #[test]
    fn linux_conf1_probe_reads_back_the_address() {
        let mut r = root();
        r.write(3, &[0x01]);
        r.write(0, &ENABLE.to_le_bytes());
        let mut b = [0u8; 4];
        r.read(0, &mut b);
        assert_eq!(u32::from_le_bytes(b), ENABLE);
    }

    #[test]
    fn byte_and_word_data_access() {
        let mut r = root();
        r.write(0, &ENABLE.to_le_bytes());
        let mut w = [0u8; 2];
        r.read(6, &mut w);
        assert_eq!(u16::from_le_bytes(w), 0x0008);
        let mut b = [0u8; 1];
        r.read(4, &mut b);
        assert_eq!(b[0], 0x36);
    }

    #[test]
    fn disabled_other_bus_or_function_reads_ones() {
        let mut r = root();
        r.write(0, &0u32.to_le_bytes());
        let mut b = [0u8; 4];
        r.read(4, &mut b);
        assert_eq!(b, [0xff; 4]);
        assert_eq!(read32(&mut r, 0, 0), 0x0008_1b36);
        r.write(0, &(ENABLE | 1 << 16).to_le_bytes());
        r.read(4, &mut b);
        assert_eq!(b, [0xff; 4]);
        r.write(0, &(ENABLE | 1 << 8).to_le_bytes());
        r.read(4, &mut b);
        assert_eq!(b, [0xff; 4]);
    }

    #[test]
    fn hostile_accesses() {
        let mut r = root();
        for addr in [0u32, u32::MAX, ENABLE | 0xfc, 0x7fff_ffff] {
            r.write(0, &addr.to_le_bytes());
            for off in 0..10u64 {
                let mut b = [0u8; 4];
                r.read(off, &mut b);
                r.write(off, &[0xff, 0xff, 0xff, 0xff]);
                r.write(off, &[0xff; 3]);
            }
        }
        assert_eq!(read32(&mut r, 0, 0), 0x0008_1b36);
    }

    #[test]
    fn slots_are_bounded() {
        let mut r = root();
        assert_eq!(
            r.add_at(0, Arc::new(Mutex::new(HostBridge::new()))),
            Err(PciError::SlotUnavailable(0))
        );
        for _ in 1..SLOTS {
            r.add(Arc::new(Mutex::new(HostBridge::new()))).unwrap();
        }
        assert_eq!(
            r.add(Arc::new(Mutex::new(HostBridge::new()))),
            Err(PciError::BusFull)
        );
    }
}
