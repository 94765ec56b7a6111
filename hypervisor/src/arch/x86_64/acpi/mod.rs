//! The ACPI tables of a tessera-vmm machine, built with rust-vmm's `acpi_tables` crate: RSDP,
//! XSDT, FADT and FACS, the DSDT and an SSDT for the CPUs (`dsdt.rs`), MADT and MCFG.
//!
//! They describe the machine as built: the CPUs and the I/O APIC (MADT), PCI Express
//! configuration space (MCFG), the ACPI fixed hardware of `devices::acpi::pm` with the SCI
//! (FADT), the chipset's reset register (0xCF9), the PCI root with its windows, COM1, the
//! i8042, the RTC and the TPM if there is one (DSDT), and the TPM's interface (TPM2). A directly booted kernel finds the RSDP in the BIOS area
//! (0xE0000), where [`write`] puts the whole set; the MP table stays for `acpi=off`.

mod dsdt;
pub mod loader;

use acpi_tables::facs::FACS;
use acpi_tables::fadt::{FADTBuilder, Flags, PmProfile};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::madt::{EnabledStatus, IoApic, ProcessorLocalApic};
use acpi_tables::mcfg::MCFG;
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::tpm2::{PlatformClass, StartMethod, Tpm2};
use acpi_tables::xsdt::XSDT;
use acpi_tables::Aml;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::layout::{
    ACPI_TABLES_END, ACPI_TABLES_START, IOAPIC_START, LAPIC_START, PCIE_ECAM_SIZE, PCIE_ECAM_START,
};
use crate::devices::acpi::pm::{GPE0_BLK, GPE0_LEN, PM1_CNT, PM1_EVT, PM_TMR, SCI_IRQ};
use crate::devices::pci::root::RESET_VALUE;
use crate::devices::tpm::CRB_CONTROL_AREA;

/// OEM ID and table ID in every header.
const OEM_ID: [u8; 6] = *b"TSSERA";
const OEM_TABLE_ID: [u8; 8] = *b"TESSVMM ";
const OEM_REVISION: u32 = 1;
/// The chipset's reset control register (`devices::pci::root`).
const RESET_PORT: u64 = 0xcf9;
/// The RTC's century register in CMOS (`devices::legacy::cmos`).
const CMOS_CENTURY: u8 = 0x32;
/// IA-PC boot architecture flags: legacy (ISA) devices, and an i8042.
const IAPC_LEGACY_DEVICES: u16 = 1 << 0;
const IAPC_8042: u16 = 1 << 1;
/// MADT flags: the machine has 8259 PICs too (KVM's).
const MADT_PCAT_COMPAT: u32 = 1;
/// MADT interrupt source override flags: active high, level-triggered.
const ISO_ACTIVE_HIGH_LEVEL: u16 = 0b01 | 0b11 << 2;

/// What the tables describe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Platform {
    /// vCPUs, APIC IDs 0 to n-1.
    pub vcpus: u8,
    /// End (exclusive) of guest RAM, for the 64-bit PCI window above it.
    pub ram_end: u64,
    /// A TPM 2.0 on the CRB interface (`devices::tpm`): the TPM2 table and a device.
    pub tpm: bool,
}

/// Errors while placing the tables.
#[derive(Debug, thiserror::Error)]
pub enum AcpiError {
    /// More tables than their area holds (a VMM limit, reached with hundreds of vCPUs).
    #[error("the ACPI tables need {0} bytes, more than the {ACPI_AREA} bytes reserved for them")]
    TooLarge(usize),
    /// Guest memory refused the write.
    #[error("cannot write the ACPI tables to guest memory: {0}")]
    Write(#[from] vm_memory::GuestMemoryError),
}

const ACPI_AREA: u64 = ACPI_TABLES_END - ACPI_TABLES_START;

/// The tables as one blob laid out from offset 0, with where its pointers and checksums sit:
/// relocated to the BIOS area for a directly booted kernel ([`Tables::relocated`]), handed to
/// UEFI firmware through fw_cfg with a script that places and patches it (`loader.rs`).
#[derive(Debug, Clone)]
pub struct Tables {
    bytes: Vec<u8>,
    /// Fields (offset, width) that hold an offset into the blob, to which the blob's address
    /// is added.
    pointers: Vec<(usize, u8)>,
    /// Checksums: the byte's offset, and the range it covers.
    checksums: Vec<(usize, std::ops::Range<usize>)>,
}

/// Offsets of the fields that point to other tables.
const RSDP_XSDT: usize = 24;
const FADT_X_FACS: usize = 132;
const FADT_X_DSDT: usize = 140;
const XSDT_ENTRIES: usize = 36;
/// An SDT's checksum byte.
const SDT_CHECKSUM: usize = 9;

impl Tables {
    /// Appends `table` at the next multiple of `align` and returns its offset.
    fn place(&mut self, table: &dyn Aml, align: usize) -> usize {
        self.bytes
            .resize(self.bytes.len().next_multiple_of(align), 0);
        let at = self.bytes.len();
        table.to_aml_bytes(&mut self.bytes);
        at
    }

    /// Appends a table with a standard header, whose checksum is then recorded.
    fn place_sdt(&mut self, table: &dyn Aml) -> usize {
        let at = self.place(table, 16);
        self.checksums
            .push((at + SDT_CHECKSUM, at..self.bytes.len()));
        at
    }

    /// The tables for `platform`.
    pub fn new(platform: &Platform) -> Self {
        let mut t = Self {
            bytes: Vec::new(),
            pointers: Vec::new(),
            checksums: Vec::new(),
        };
        // The RSDP first, written last when the XSDT's offset is known.
        t.bytes.resize(Rsdp::len(), 0);
        let facs = t.place(&FACS::new(), 64);
        let dsdt = t.place_sdt(&dsdt::dsdt(platform));
        let fadt = t.place_sdt(&fadt(facs as u64, dsdt as u64));
        t.pointers
            .extend([(fadt + FADT_X_FACS, 8), (fadt + FADT_X_DSDT, 8)]);
        let mut entries = vec![
            fadt,
            t.place_sdt(&madt(platform.vcpus)),
            t.place_sdt(&mcfg()),
            t.place_sdt(&dsdt::cpus_ssdt(platform.vcpus)),
        ];
        if platform.tpm {
            entries.push(t.place_sdt(&tpm2()));
        }
        let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
        for &e in &entries {
            xsdt.add_entry(e as u64);
        }
        let at = t.place_sdt(&xsdt);
        t.pointers
            .extend((0..entries.len()).map(|i| (at + XSDT_ENTRIES + 8 * i, 8)));
        let mut rsdp = Vec::new();
        Rsdp::new(OEM_ID, at as u64).to_aml_bytes(&mut rsdp);
        t.bytes[..rsdp.len()].copy_from_slice(&rsdp);
        t.pointers.push((RSDP_XSDT, 8));
        // ACPI 1.0's checksum over the first 20 bytes, the extended one over all 36.
        t.checksums.extend([(8, 0..20), (32, 0..rsdp.len())]);
        t
    }

    /// The blob with offsets as the loader leaves them: relative to its start.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The pointer fields (offset, width).
    pub fn pointers(&self) -> &[(usize, u8)] {
        &self.pointers
    }

    /// The checksums (byte, range covered).
    pub fn checksums(&self) -> &[(usize, std::ops::Range<usize>)] {
        &self.checksums
    }

    /// The tables as they read at guest address `base`: every pointer moved, every checksum
    /// made again (the ones over pointers after them: the RSDP's last).
    pub fn relocated(&self, base: u64) -> Vec<u8> {
        let mut b = self.bytes.clone();
        for &(at, width) in &self.pointers {
            let w = usize::from(width);
            let mut v = [0u8; 8];
            v[..w].copy_from_slice(&b[at..at + w]);
            let moved = u64::from_le_bytes(v).wrapping_add(base).to_le_bytes();
            b[at..at + w].copy_from_slice(&moved[..w]);
        }
        for (at, range) in &self.checksums {
            b[*at] = 0;
            b[*at] = checksum(&b[range.clone()]);
        }
        b
    }
}

/// The byte that makes `bytes` sum to zero.
pub fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |a, x| a.wrapping_add(*x)))
}

fn io_register(port: u16, bits: u8, access: AccessSize) -> GAS {
    GAS::new(AddressSpace::SystemIo, bits, 0, access, u64::from(port))
}

/// The FADT: ACPI fixed hardware at the ports of `devices::acpi::pm`, the SCI, the reset
/// register, the power button as a fixed feature (no sleep button), no C2/C3 states.
fn fadt(facs: u64, dsdt: u64) -> impl Aml {
    let mut f = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION)
        .firmware_ctrl_64(facs)
        .dsdt_64(dsdt)
        .preferred_pm_profile(PmProfile::Unspecified)
        .flag(Flags::Wbinvd)
        .flag(Flags::ProcC1)
        .flag(Flags::SlpButton)
        .flag(Flags::FixRtc)
        .flag(Flags::ResetRegSup)
        .gpe_info(u32::from(GPE0_BLK), 0, GPE0_LEN, 0, 0);
    f.sci_int = (SCI_IRQ as u16).into();
    f.pm1a_evt_blk = u32::from(PM1_EVT).into();
    f.pm1a_cnt_blk = u32::from(PM1_CNT).into();
    f.pm_tmr_blk = u32::from(PM_TMR).into();
    f.pm1_evt_len = 4;
    f.pm1_cnt_len = 2;
    f.pm_tmr_len = 4;
    // Latencies past the limits mean "no C2 or C3".
    f.p_lvl2_lat = 101.into();
    f.p_lvl3_lat = 1001.into();
    f.century = CMOS_CENTURY;
    f.iapc_boot_arch = (IAPC_LEGACY_DEVICES | IAPC_8042).into();
    f.reset_reg = io_register(RESET_PORT as u16, 8, AccessSize::ByteAccess);
    f.reset_value = RESET_VALUE;
    f.x_pm1a_evt_blk = io_register(PM1_EVT, 32, AccessSize::WordAccess);
    f.x_pm1a_cnt_blk = io_register(PM1_CNT, 16, AccessSize::WordAccess);
    f.x_pm_tmr_blk = io_register(PM_TMR, 32, AccessSize::DwordAccess);
    f.x_gpe0_blk = io_register(GPE0_BLK, GPE0_LEN * 8, AccessSize::ByteAccess);
    f.finalize()
}

/// The MADT: a local APIC per vCPU, the I/O APIC after them (the MP table's numbering),
/// LINT1 as NMI everywhere, and the SCI level-triggered, active high. ISA IRQs are otherwise
/// identity-mapped to I/O APIC pins, as KVM's default routing delivers them.
fn madt(vcpus: u8) -> Sdt {
    let mut t = Sdt::new(*b"APIC", 44, 5, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    t.write_u32(36, LAPIC_START as u32);
    t.write_u32(40, MADT_PCAT_COMPAT);
    let mut entries = Vec::new();
    for id in 0..vcpus {
        ProcessorLocalApic::new(id, id, EnabledStatus::Enabled).to_aml_bytes(&mut entries);
    }
    IoApic::new(vcpus, IOAPIC_START as u32, 0).to_aml_bytes(&mut entries);
    // Interrupt source override: ISA bus, IRQ, GSI, flags.
    entries.extend_from_slice(&[2, 10, 0, SCI_IRQ as u8]);
    entries.extend_from_slice(&SCI_IRQ.to_le_bytes());
    entries.extend_from_slice(&ISO_ACTIVE_HIGH_LEVEL.to_le_bytes());
    // Local APIC NMI: every processor (0xFF), default flags, LINT1.
    entries.extend_from_slice(&[4, 6, 0xff, 0, 0, 1]);
    t.append_slice(&entries);
    t
}

/// The TPM2 table: a client platform's TPM 2.0 whose CRB control area is at
/// [`CRB_CONTROL_AREA`], started by writing the CRB's START register (start method 7). No log
/// area: UEFI firmware hands its event log to the OS through its own tables.
fn tpm2() -> Tpm2 {
    Tpm2::new(
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
        PlatformClass::Client,
        CRB_CONTROL_AREA,
        StartMethod::Crb,
    )
}

fn mcfg() -> MCFG {
    let mut t = MCFG::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    let last_bus = (PCIE_ECAM_SIZE >> 20) - 1;
    t.add_ecam(PCIE_ECAM_START, 0, 0, last_bus as u8);
    t
}

/// The tables for `platform` as they read at guest address `base` (where the RSDP goes).
pub fn build(platform: &Platform, base: u64) -> Vec<u8> {
    Tables::new(platform).relocated(base)
}

/// Writes the tables to the BIOS area of `mem`, where a directly booted kernel finds them.
pub fn write(mem: &GuestMemoryMmap, platform: &Platform) -> Result<(), AcpiError> {
    let bytes = build(platform, ACPI_TABLES_START);
    if bytes.len() as u64 > ACPI_AREA {
        return Err(AcpiError::TooLarge(bytes.len()));
    }
    mem.write_slice(&bytes, GuestAddress(ACPI_TABLES_START))?;
    Ok(())
}

#[cfg(test)]
mod tests;
