//! The host bridge at 00:00.0: Intel's Q35 memory controller hub (MCH, 8086:29C0), as on
//! QEMU's q35 machine. UEFI firmware built for QEMU (OVMF) identifies the platform by this
//! device ID and hangs on any other; Linux binds nothing to it.
//!
//! Of the MCH's registers, only those OVMF programs are modelled, as plain registers: the PCI
//! Express BAR (PCIEXBAR, 0x60), which OVMF points at 0xB000_0000 with 256 buses, where this
//! machine's ECAM already is (`layout::PCIE_ECAM_START`); and the PAM and SMRAM registers,
//! read back as written (no SMM, no shadowed BIOS: nothing is remapped).

use super::config::{ClassCode, PciConfig, PciId};
use super::PciFunction;

/// Intel's vendor ID and the Q35 MCH's device ID.
pub const VENDOR_INTEL: u16 = 0x8086;
const DEVICE_Q35_MCH: u16 = 0x29c0;
/// QEMU's subsystem IDs, which OVMF and guests see on QEMU too.
pub const SUBSYSTEM_VENDOR_QEMU: u16 = 0x1af4;
/// QEMU's subsystem ID.
pub const SUBSYSTEM_QEMU: u16 = 0x1100;
/// PCIEXBAR, low and high dwords.
const REG_PCIEXBAR: usize = 0x60 / 4;
/// PAM0-PAM6 (0x90-0x96), SMRAM (0x9D) and ESMRAMC (0x9E).
const REG_PAM: usize = 0x90 / 4;

/// The host bridge.
pub struct HostBridge {
    config: PciConfig,
}

impl HostBridge {
    /// The MCH (class 06/00/00) as at power-on.
    pub fn new() -> Self {
        let mut config = PciConfig::new(PciId {
            vendor: VENDOR_INTEL,
            device: DEVICE_Q35_MCH,
            revision: 0,
            class: ClassCode {
                class: 0x06,
                subclass: 0x00,
                prog_if: 0x00,
            },
            subsystem_vendor: SUBSYSTEM_VENDOR_QEMU,
            subsystem: SUBSYSTEM_QEMU,
        });
        // PCIEXBAR: base (bits 35:26 low and high), length (2:1), enable (0).
        config.set_register(REG_PCIEXBAR, 0, 0xfc00_0007);
        config.set_register(REG_PCIEXBAR + 1, 0, 0x0000_000f);
        for reg in REG_PAM..REG_PAM + 4 {
            config.set_register(reg, 0, u32::MAX);
        }
        Self { config }
    }
}

impl Default for HostBridge {
    fn default() -> Self {
        Self::new()
    }
}

impl PciFunction for HostBridge {
    fn config_read(&mut self, reg: usize) -> u32 {
        self.config.read(reg)
    }

    fn config_write(&mut self, reg: usize, offset: usize, data: &[u8]) {
        self.config.write(reg, offset, data);
    }

    fn reset(&mut self) {
        *self = Self::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ovmf_finds_q35_and_programs_pciexbar() {
        let mut b = HostBridge::new();
        assert_eq!(b.config_read(0), 0x29c0_8086);
        assert_eq!(b.config_read(2) >> 8, 0x06_0000);
        // OVMF: base 0xB000_0000, 256 buses (length 00), enabled.
        b.config_write(REG_PCIEXBAR + 1, 0, &0u32.to_le_bytes());
        b.config_write(REG_PCIEXBAR, 0, &0xb000_0001u32.to_le_bytes());
        assert_eq!(b.config_read(REG_PCIEXBAR), 0xb000_0001);
        b.config_write(0, 0, &[0xff; 4]);
        assert_eq!(b.config_read(0), 0x29c0_8086);
        b.reset();
        assert_eq!(b.config_read(REG_PCIEXBAR), 0);
    }
}
