//! The ISA bridge at 00:1f.0: Intel's ICH9 LPC interface (8086:2918, class 06/01), as on
//! QEMU's q35 machine. UEFI firmware finds the machine's legacy devices (COM1, the i8042)
//! only behind a PCI-to-ISA bridge, and OVMF programs the ACPI fixed hardware's port base
//! through this function's PMBASE register before it reads the ACPI timer for every delay.
//!
//! The registers are plain: the ACPI block of `devices::acpi::pm` is decoded at 0x600 from
//! power-on whatever PMBASE says (the address OVMF writes, and the FADT gives), and the PIRQ
//! routing registers are read back as written (devices here interrupt through MSI-X).

use super::config::{ClassCode, PciConfig, PciId};
use super::host_bridge::{SUBSYSTEM_QEMU, SUBSYSTEM_VENDOR_QEMU, VENDOR_INTEL};
use super::PciFunction;
use crate::devices::acpi::pm::PM_BASE;

const DEVICE_ICH9_LPC: u16 = 0x2918;
/// The slot the ICH9 sits in, function 0.
pub const LPC_SLOT: u8 = 0x1f;
/// PMBASE (0x40): bits 15:7 the base, bit 0 "I/O space".
const REG_PMBASE: usize = 0x40 / 4;
/// ACPI_CNTL (0x44): bit 7 enables the ACPI block, bits 2:0 route the SCI.
const REG_ACPI_CNTL: usize = 0x44 / 4;
/// PIRQA-D routing (0x60-0x63) and PIRQE-H (0x68-0x6B).
const REG_PIRQ_AD: usize = 0x60 / 4;
const REG_PIRQ_EH: usize = 0x68 / 4;
/// Root complex register block base (0xF0): bits 31:14 the base, bit 0 enable.
const REG_RCBA: usize = 0xf0 / 4;
/// PIRQ routing at reset: every line disabled (bit 7).
const PIRQ_DISABLED: u32 = 0x8080_8080;

/// The LPC bridge.
pub struct Lpc {
    config: PciConfig,
}

impl Lpc {
    /// The bridge as at power-on: the ACPI block's base already at [`PM_BASE`], not yet
    /// enabled (OVMF enables it; Linux finds the block through the FADT either way).
    pub fn new() -> Self {
        let mut config = PciConfig::new(PciId {
            vendor: VENDOR_INTEL,
            device: DEVICE_ICH9_LPC,
            revision: 2,
            class: ClassCode {
                class: 0x06,
                subclass: 0x01,
                prog_if: 0x00,
            },
            subsystem_vendor: SUBSYSTEM_VENDOR_QEMU,
            subsystem: SUBSYSTEM_QEMU,
        });
        config.set_register(REG_PMBASE, u32::from(PM_BASE) | 1, 0x0000_ff80);
        config.set_register(REG_ACPI_CNTL, 0, 0x0000_0087);
        config.set_register(REG_PIRQ_AD, PIRQ_DISABLED, 0x8f8f_8f8f);
        config.set_register(REG_PIRQ_EH, PIRQ_DISABLED, 0x8f8f_8f8f);
        config.set_register(REG_RCBA, 0, 0xffff_c001);
        Self { config }
    }
}

impl Default for Lpc {
    fn default() -> Self {
        Self::new()
    }
}

impl PciFunction for Lpc {
    fn config_read(&mut self, reg: usize) -> u32 {
        self.config.read(reg)
    }

    fn config_write(&mut self, reg: usize, offset: usize, data: &[u8]) {
        self.config.write(reg, offset, data);
        if reg == REG_PMBASE {
            let base = self.config.read(REG_PMBASE) & 0xff80;
            if base != u32::from(PM_BASE) {
                tracing::warn!(
                    base = format_args!("{base:#x}"),
                    "the guest moved the ACPI block's base; it stays decoded at {PM_BASE:#x}"
                );
            }
        }
    }

    fn reset(&mut self) {
        *self = Self::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ovmf_enables_acpi_and_routes_pirqs() {
        let mut l = Lpc::new();
        assert_eq!(l.config_read(0), 0x2918_8086);
        assert_eq!(l.config_read(2) >> 8, 0x06_0100, "an ISA bridge");
        // OVMF's MiscInitialization on Q35.
        l.config_write(REG_PMBASE, 0, &0x601u32.to_le_bytes());
        l.config_write(REG_ACPI_CNTL, 0, &[0x80]);
        l.config_write(REG_RCBA, 0, &0xfed1_c001u32.to_le_bytes());
        l.config_write(REG_PIRQ_AD, 0, &[10, 10, 11, 11]);
        assert_eq!(l.config_read(REG_PMBASE), 0x601);
        assert_eq!(l.config_read(REG_ACPI_CNTL) & 0xff, 0x80);
        assert_eq!(l.config_read(REG_RCBA), 0xfed1_c001);
        assert_eq!(l.config_read(REG_PIRQ_AD), 0x0b0b_0a0a);
        assert_eq!(l.config_read(REG_PIRQ_EH), PIRQ_DISABLED);
        // Garbage does not break the identity or the I/O-space bit.
        l.config_write(REG_PMBASE, 0, &[0xff; 4]);
        l.config_write(0, 0, &[0; 4]);
        assert_eq!(l.config_read(REG_PMBASE), 0xff81);
        assert_eq!(l.config_read(0), 0x2918_8086);
        l.reset();
        assert_eq!(l.config_read(REG_PMBASE), 0x601);
    }
}
