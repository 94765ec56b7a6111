//! A type-0 PCI configuration space: 256 bytes with a per-bit write mask, so guests can only
//! change what the specification lets them change.

/// Dword index of the command/status register.
pub const REG_COMMAND: usize = 1;
/// Dword index of class code and revision.
pub const REG_CLASS: usize = 2;
/// Dword index of BIST, header type, latency timer and cache line size.
pub const REG_HEADER: usize = 3;
/// Dword index of subsystem vendor/device.
pub const REG_SUBSYSTEM: usize = 11;
/// Dword index of interrupt line/pin.
pub const REG_INTERRUPT: usize = 15;
/// Dwords in the conventional configuration space.
pub const CONFIG_DWORDS: usize = 64;

/// PCI class codes used by tessera-vmm's devices.
#[derive(Debug, Clone, Copy)]
pub struct ClassCode {
    /// Base class (0x06: bridge).
    pub class: u8,
    /// Subclass (0x00: host bridge).
    pub subclass: u8,
    /// Programming interface.
    pub prog_if: u8,
}

/// Identity of a function.
#[derive(Debug, Clone, Copy)]
pub struct PciId {
    /// Vendor ID.
    pub vendor: u16,
    /// Device ID.
    pub device: u16,
    /// Revision.
    pub revision: u8,
    /// Class code.
    pub class: ClassCode,
    /// Subsystem vendor ID.
    pub subsystem_vendor: u16,
    /// Subsystem ID.
    pub subsystem: u16,
}

/// The configuration space of one function.
#[derive(Debug, Clone)]
pub struct PciConfig {
    regs: [u32; CONFIG_DWORDS],
    writable: [u32; CONFIG_DWORDS],
}

impl PciConfig {
    /// A header for `id`: memory/IO decode and bus mastering writable, interrupt line writable.
    pub fn new(id: PciId) -> Self {
        let mut regs = [0u32; CONFIG_DWORDS];
        let mut writable = [0u32; CONFIG_DWORDS];
        regs[0] = u32::from(id.device) << 16 | u32::from(id.vendor);
        regs[REG_CLASS] = u32::from(id.class.class) << 24
            | u32::from(id.class.subclass) << 16
            | u32::from(id.class.prog_if) << 8
            | u32::from(id.revision);
        regs[REG_SUBSYSTEM] = u32::from(id.subsystem) << 16 | u32::from(id.subsystem_vendor);
        // Command: I/O, memory, bus master, parity, SERR, INTx disable.
        writable[REG_COMMAND] = 0x0000_0547;
        // Cache line size and latency timer are scratch registers to the guest.
        writable[REG_HEADER] = 0x0000_ffff;
        writable[REG_INTERRUPT] = 0x0000_00ff;
        Self { regs, writable }
    }

    /// Reads dword `reg` (0..64); out-of-range reads return all ones.
    pub fn read(&self, reg: usize) -> u32 {
        self.regs.get(reg).copied().unwrap_or(u32::MAX)
    }

    /// Writes `data` at byte `offset` (0..4) of dword `reg`, through the write mask.
    pub fn write(&mut self, reg: usize, offset: usize, data: &[u8]) {
        if reg >= CONFIG_DWORDS || offset + data.len() > 4 || data.is_empty() {
            return;
        }
        let mut value = [0u8; 4];
        value[offset..offset + data.len()].copy_from_slice(data);
        let mut mask_bytes = [0u8; 4];
        mask_bytes[offset..offset + data.len()].fill(0xff);
        let mask = u32::from_le_bytes(mask_bytes) & self.writable[reg];
        self.regs[reg] = (self.regs[reg] & !mask) | (u32::from_le_bytes(value) & mask);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> PciConfig {
        PciConfig::new(PciId {
            vendor: 0x1b36,
            device: 0x0008,
            revision: 1,
            class: ClassCode {
                class: 6,
                subclass: 0,
                prog_if: 0,
            },
            subsystem_vendor: 0x1af4,
            subsystem: 0x1100,
        })
    }

    #[test]
    fn identity_is_read_only() {
        let mut c = cfg();
        c.write(0, 0, &[0xff; 4]);
        c.write(REG_CLASS, 0, &[0; 4]);
        assert_eq!(c.read(0), 0x0008_1b36);
        assert_eq!(c.read(REG_CLASS), 0x0600_0001);
    }

    #[test]
    fn masked_writes() {
        let mut c = cfg();
        c.write(REG_COMMAND, 0, &[0xff, 0xff, 0xff, 0xff]);
        assert_eq!(c.read(REG_COMMAND), 0x547);
        c.write(REG_INTERRUPT, 0, &[10]);
        c.write(REG_INTERRUPT, 1, &[4]); // interrupt pin is read-only
        assert_eq!(c.read(REG_INTERRUPT), 10);
    }

    #[test]
    fn out_of_range_is_harmless() {
        let mut c = cfg();
        assert_eq!(c.read(64), u32::MAX);
        c.write(64, 0, &[1]);
        c.write(REG_COMMAND, 3, &[1, 2]);
        c.write(REG_COMMAND, 0, &[]);
        assert_eq!(c.read(REG_COMMAND), 0);
    }
}
