//! A type-0 PCI configuration space: 256 bytes with a per-bit write mask, so guests can only
//! change what the specification lets them change.

/// Dword index of the command/status register.
pub const REG_COMMAND: usize = 1;
/// Dword index of BAR 0.
pub const REG_BAR0: usize = 4;
/// Dword index of the capabilities pointer.
pub const REG_CAP_POINTER: usize = 13;
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
/// Command register bit: the function decodes its memory BARs.
pub const COMMAND_MEMORY: u32 = 1 << 1;
/// Status register bit (in the command/status dword): a capability list exists.
const STATUS_CAP_LIST: u32 = 1 << 20;
/// First byte after the standard header, where capabilities go.
const CAPS_START: usize = 0x40;
/// Bytes in the conventional configuration space.
const CONFIG_BYTES: usize = CONFIG_DWORDS * 4;

/// Errors while laying out a configuration space (VMM bugs, caught at build time).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigSpaceError {
    /// The capabilities do not fit in 256 bytes.
    #[error("PCI capabilities do not fit in the configuration space")]
    NoRoom,
    /// A BAR index or size that PCI cannot express.
    #[error("BAR {index} of {size:#x} bytes is not a power of two of at least 16 bytes at an aligned address")]
    BadBar {
        /// BAR index.
        index: usize,
        /// Size.
        size: u64,
    },
}

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
    next_cap: usize,
    last_cap: Option<usize>,
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
        Self {
            regs,
            writable,
            next_cap: CAPS_START,
            last_cap: None,
        }
    }

    /// Declares 32-bit memory BAR `index` of `size` bytes at `addr`; the guest may move it.
    pub fn set_bar32(
        &mut self,
        index: usize,
        addr: u32,
        size: u32,
    ) -> Result<(), ConfigSpaceError> {
        let ok = index < 6 && size >= 16 && size.is_power_of_two() && addr.is_multiple_of(size);
        if !ok {
            return Err(ConfigSpaceError::BadBar {
                index,
                size: u64::from(size),
            });
        }
        self.regs[REG_BAR0 + index] = addr;
        // The low bits stay zero (32-bit, non-prefetchable memory); writing all ones reads back
        // the size mask, which is how guests size BARs.
        self.writable[REG_BAR0 + index] = !(size - 1);
        Ok(())
    }

    /// Marks 32-bit memory BAR `index` prefetchable (video memory: the guest may map it
    /// write-combined).
    pub fn set_prefetchable(&mut self, index: usize) {
        if index < 6 {
            self.regs[REG_BAR0 + index] |= 0x8;
        }
    }

    /// Where memory BAR `index` is now, or None while the guest has memory decoding off.
    pub fn bar32(&self, index: usize) -> Option<u64> {
        let enabled = self.regs[REG_COMMAND] & COMMAND_MEMORY != 0;
        let addr = self.regs.get(REG_BAR0 + index)? & !0xf;
        (enabled && index < 6).then_some(u64::from(addr))
    }

    /// Appends a capability (`id`, then `body` after the next pointer) to the list; bits set in
    /// `writable` (same layout as `body`) are guest-writable. Returns its byte offset.
    pub fn add_capability(
        &mut self,
        id: u8,
        body: &[u8],
        writable: &[u8],
    ) -> Result<usize, ConfigSpaceError> {
        let offset = self.next_cap;
        let len = 2 + body.len();
        let end = offset + len.next_multiple_of(4);
        if end > CONFIG_BYTES || writable.len() > body.len() {
            return Err(ConfigSpaceError::NoRoom);
        }
        self.set_byte(offset, id);
        self.set_byte(offset + 1, 0);
        for (i, b) in body.iter().enumerate() {
            self.set_byte(offset + 2 + i, *b);
        }
        for (i, m) in writable.iter().enumerate() {
            let at = offset + 2 + i;
            let shift = (at % 4) * 8;
            self.writable[at / 4] |= u32::from(*m) << shift;
        }
        match self.last_cap {
            Some(prev) => self.set_byte(prev + 1, offset as u8),
            None => {
                self.set_byte(REG_CAP_POINTER * 4, offset as u8);
                self.regs[REG_COMMAND] |= STATUS_CAP_LIST;
            }
        }
        self.last_cap = Some(offset);
        self.next_cap = end;
        Ok(offset)
    }

    /// A chipset register: dword `reg` reads `value` at reset, and the guest may change the
    /// bits of `writable`.
    pub fn set_register(&mut self, reg: usize, value: u32, writable: u32) {
        if let (Some(r), Some(w)) = (self.regs.get_mut(reg), self.writable.get_mut(reg)) {
            *r = value;
            *w = writable;
        }
    }

    /// Reads the byte at `offset` (0..256).
    pub fn byte(&self, offset: usize) -> u8 {
        self.regs
            .get(offset / 4)
            .map_or(0xff, |r| (r >> ((offset % 4) * 8)) as u8)
    }

    fn set_byte(&mut self, offset: usize, value: u8) {
        let shift = (offset % 4) * 8;
        let reg = &mut self.regs[offset / 4];
        *reg = (*reg & !(0xff << shift)) | u32::from(value) << shift;
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
    fn bar_sizing_and_decode() {
        let mut c = cfg();
        c.set_bar32(0, 0xc000_0000, 0x8000).unwrap();
        assert_eq!(c.bar32(0), None, "memory decode is off at reset");
        c.write(REG_COMMAND, 0, &[COMMAND_MEMORY as u8]);
        assert_eq!(c.bar32(0), Some(0xc000_0000));
        c.write(REG_BAR0, 0, &[0xff; 4]);
        assert_eq!(c.read(REG_BAR0), 0xffff_8000);
        c.write(REG_BAR0, 0, &0xd000_0000u32.to_le_bytes());
        assert_eq!(c.bar32(0), Some(0xd000_0000));
        // Unused BARs stay zero whatever the guest writes.
        c.write(REG_BAR0 + 1, 0, &[0xff; 4]);
        assert_eq!(c.read(REG_BAR0 + 1), 0);
        assert!(c.set_bar32(0, 0x1000, 0x3000).is_err());
        assert!(c.set_bar32(6, 0, 0x1000).is_err());
    }

    #[test]
    fn capability_list() {
        let mut c = cfg();
        let a = c.add_capability(0x09, &[1, 2, 3], &[]).unwrap();
        let b = c.add_capability(0x11, &[0, 0], &[0, 0xc0]).unwrap();
        assert_eq!(a, 0x40);
        assert_eq!(b, 0x48);
        assert_ne!(c.read(REG_COMMAND) & STATUS_CAP_LIST, 0);
        assert_eq!(c.byte(0x34), 0x40);
        assert_eq!((c.byte(0x40), c.byte(0x41), c.byte(0x42)), (0x09, 0x48, 1));
        assert_eq!((c.byte(0x48), c.byte(0x49)), (0x11, 0));
        c.write(0x48 / 4, 0, &[0xff; 4]);
        assert_eq!(c.read(0x48 / 4), 0xc000_0011);
        c.write(0x40 / 4, 0, &[0; 4]);
        assert_eq!(c.byte(0x41), 0x48, "the list is read-only");
        let big = [0u8; 200];
        assert_eq!(
            c.add_capability(0x09, &big, &[]),
            Err(ConfigSpaceError::NoRoom)
        );
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
