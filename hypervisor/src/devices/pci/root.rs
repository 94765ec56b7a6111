//! Bus 0 and its configuration access through I/O ports 0xCF8 (address) and 0xCFC (data),
//! and the chipset's reset control register that shares those ports (0xCF9, byte access), the
//! reset register ACPI's FADT names.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::PciFunction;
use crate::devices::bus::{lock, BusDevice};
use crate::exit::{ExitReason, ExitSender};

/// The configuration address and data ports.
pub const PCI_CONFIG_IO_BASE: u64 = 0xcf8;
/// 0xCF8..=0xCFF.
pub const PCI_CONFIG_IO_LEN: u64 = 8;
/// Device slots on a bus.
pub const SLOTS: u8 = 32;

const ENABLE: u32 = 1 << 31;

/// The reset control register's value that resets the machine (ACPI's FADT writes it):
/// RST_CPU with SYS_RST, as on Intel's ICH9.
pub const RESET_VALUE: u8 = 0x06;
/// RST_CPU: a write with this bit set resets.
const RST_CPU: u8 = 1 << 2;

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
    /// Where a write to the reset control register goes; None: ignored.
    reset: Option<ExitSender>,
    /// The reset control register's SYS_RST and FULL_RST bits, read back as written.
    reset_control: u8,
}

impl PciRoot {
    /// An empty bus.
    pub fn new() -> Self {
        Self {
            address: 0,
            slots: BTreeMap::new(),
            reset: None,
            reset_control: 0,
        }
    }

    /// Resets go to `exit` (the VM ends as for the i8042's reset line).
    pub fn with_reset(mut self, exit: ExitSender) -> Self {
        self.reset = Some(exit);
        self
    }

    fn write_reset_control(&mut self, value: u8) {
        self.reset_control = value & 0x0a;
        if value & RST_CPU != 0 {
            if let Some(exit) = &self.reset {
                exit.send(ExitReason::GuestReset);
            }
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

    /// The function at `bus`:`slot`.`function`, if any (bus 0, function 0 only).
    fn function(&self, bus: u32, slot: u32, function: u32) -> Option<&Arc<Mutex<dyn PciFunction>>> {
        if bus != 0 || function != 0 {
            return None;
        }
        u8::try_from(slot).ok().and_then(|s| self.slots.get(&s))
    }

    /// Reads dword `reg` of a function's configuration space; all ones where no function is.
    pub fn config_read(&self, bus: u32, slot: u32, function: u32, reg: usize) -> u32 {
        match self.function(bus, slot, function) {
            Some(f) => lock(f).config_read(reg),
            None => u32::MAX,
        }
    }

    /// Writes `data` at byte `offset` of dword `reg`; dropped where no function is.
    pub fn config_write(
        &self,
        bus: u32,
        slot: u32,
        function: u32,
        reg: usize,
        offset: usize,
        data: &[u8],
    ) {
        if let Some(f) = self.function(bus, slot, function) {
            lock(f).config_write(reg, offset, data);
        }
    }

    /// The function and dword a mechanism-#1 address selects, unless disabled.
    fn decode(address: u32) -> Option<(u32, u32, u32, usize)> {
        if address & ENABLE == 0 {
            return None;
        }
        Some((
            (address >> 16) & 0xff,
            (address >> 11) & 0x1f,
            (address >> 8) & 0x7,
            ((address >> 2) & 0x3f) as usize,
        ))
    }

    fn read_data(&self, offset: usize, data: &mut [u8]) {
        let value = match Self::decode(self.address) {
            Some((bus, slot, function, reg)) => self.config_read(bus, slot, function, reg),
            None => u32::MAX,
        };
        let bytes = value.to_le_bytes();
        data.copy_from_slice(&bytes[offset..offset + data.len()]);
    }

    fn write_data(&self, offset: usize, data: &[u8]) {
        if let Some((bus, slot, function, reg)) = Self::decode(self.address) {
            self.config_write(bus, slot, function, reg, offset, data);
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
            1 if data.len() == 1 => data[0] = self.reset_control,
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
            (1, 1) => self.write_reset_control(data[0]),
            (4..=7, n) if n > 0 && offset + n <= 8 => self.write_data(offset - 4, data),
            _ => {}
        }
    }

    fn reset(&mut self) {
        self.address = 0;
        self.reset_control = 0;
        for f in self.slots.values() {
            lock(f).reset();
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
        assert_eq!(read32(&mut r, 0, 0), 0x29c0_8086);
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
        assert_eq!(u16::from_le_bytes(w), 0x29c0);
        let mut b = [0u8; 1];
        r.read(4, &mut b);
        assert_eq!(b[0], 0x86);
    }

    #[test]
    fn disabled_other_bus_or_function_reads_ones() {
        let mut r = root();
        r.write(0, &0u32.to_le_bytes());
        let mut b = [0u8; 4];
        r.read(4, &mut b);
        assert_eq!(b, [0xff; 4]);
        assert_eq!(read32(&mut r, 0, 0), 0x29c0_8086);
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
        assert_eq!(read32(&mut r, 0, 0), 0x29c0_8086);
    }

    #[test]
    fn reset_control_register_resets_on_rst_cpu() {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut r = PciRoot::new().with_reset(ExitSender::new(tx));
        r.write(1, &[0x02]);
        let mut b = [0u8; 1];
        r.read(1, &mut b);
        assert_eq!(b[0], 0x02);
        assert!(rx.try_recv().is_err());
        // A word or dword write there is the address register's, not a reset.
        r.write(0, &(ENABLE | (u32::from(RST_CPU) << 8)).to_le_bytes());
        assert!(rx.try_recv().is_err());
        r.write(1, &[RESET_VALUE]);
        assert_eq!(rx.try_recv(), Ok(ExitReason::GuestReset));
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
