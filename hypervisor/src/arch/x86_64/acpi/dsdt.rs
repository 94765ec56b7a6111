//! The DSDT (the PCI root, the ISA devices, the TPM, motherboard resources, `\_S5`) and the SSDT that
//! declares the processors, in AML built with `acpi_tables::aml`.

use acpi_tables::aml::{
    AddressSpace, AddressSpaceCacheable, Device, EISAName, Memory32Fixed, Name, Package, Path,
    ResourceTemplate, Scope, IO,
};
use acpi_tables::sdt::Sdt;
use acpi_tables::{Aml, AmlSink};

use super::super::layout::{
    pci_mmio64_window, PCIE_ECAM_SIZE, PCIE_ECAM_START, PCI_MMIO32_END, PCI_MMIO32_START,
};
use super::{Platform, OEM_ID, OEM_REVISION, OEM_TABLE_ID};
use crate::devices::acpi::pm::{PM_BASE, PM_LEN, SLP_TYP_S5};
use crate::devices::legacy::cmos::{CMOS_BASE, CMOS_LEN};
use crate::devices::legacy::i8042::{AUX_IRQ, I8042_BASE, KBD_IRQ};
use crate::devices::legacy::serial::{COM1_BASE, COM1_IRQ, COM_LEN};
use crate::devices::tpm::{CRB_BASE, CRB_SIZE};

/// DSDT revision 2: 64-bit integers in AML.
const DSDT_REVISION: u8 = 2;

/// The ISA "IRQ" resource descriptor without flags (edge, active high), which legacy device
/// drivers expect; the crate has only the extended interrupt descriptor.
struct IrqNoFlags(u8);

impl Aml for IrqNoFlags {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        // Small resource item 0x04 (IRQ), length 2: the mask of IRQs.
        sink.byte(0x22);
        sink.word(1u16 << self.0);
    }
}

/// AML already encoded.
struct Raw(Vec<u8>);

impl Aml for Raw {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        sink.vec(&self.0);
    }
}

/// A table of `signature` holding `body`.
fn table(signature: [u8; 4], body: &[&dyn Aml]) -> Sdt {
    let mut aml = Vec::new();
    for b in body {
        b.to_aml_bytes(&mut aml);
    }
    let mut t = Sdt::new(
        signature,
        36,
        DSDT_REVISION,
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
    );
    t.append_slice(&aml);
    t
}

/// `IO(Decode16, port, port, 1, len)`.
fn io(port: u64, len: u64) -> IO {
    IO::new(port as u16, port as u16, 1, len as u8)
}

/// The PCI root: bus numbers, configuration ports, I/O outside them, the legacy video
/// window, the 32-bit BAR window and the 64-bit one above RAM.
fn pci_root(platform: &Platform) -> Raw {
    let (mmio64_start, mmio64_end) = pci_mmio64_window(platform.ram_end);
    let last_bus = ((PCIE_ECAM_SIZE >> 20) - 1) as u16;
    let buses = AddressSpace::new_bus_number(0u16, last_bus);
    let config = io(0xcf8, 8);
    let io_low = AddressSpace::new_io(0u16, 0xcf7u16, None);
    let io_high = AddressSpace::new_io(0xd00u16, 0xffffu16, None);
    let vga = AddressSpace::new_memory(
        AddressSpaceCacheable::Cacheable,
        true,
        0xa_0000u32,
        0xb_ffffu32,
        None,
    );
    let mmio32 = AddressSpace::new_memory(
        AddressSpaceCacheable::NotCacheable,
        true,
        PCI_MMIO32_START as u32,
        (PCI_MMIO32_END - 1) as u32,
        None,
    );
    let mmio64 = AddressSpace::new_memory(
        AddressSpaceCacheable::NotCacheable,
        true,
        mmio64_start,
        mmio64_end - 1,
        None,
    );
    let crs = ResourceTemplate::new(vec![
        &buses, &config, &io_low, &io_high, &vga, &mmio32, &mmio64,
    ]);
    let mut aml = Vec::new();
    Device::new(
        Path::new("PCI0"),
        vec![
            &Name::new(Path::new("_HID"), &EISAName::new("PNP0A08")),
            &Name::new(Path::new("_CID"), &EISAName::new("PNP0A03")),
            &Name::new(Path::new("_ADR"), &0u8),
            &Name::new(Path::new("_SEG"), &0u8),
            &Name::new(Path::new("_UID"), &0u8),
            &Name::new(Path::new("_BBN"), &0u8),
            &Name::new(Path::new("_CRS"), &crs),
        ],
    )
    .to_aml_bytes(&mut aml);
    Raw(aml)
}

/// A device with a hardware ID, a unique ID and fixed resources.
fn isa_device(name: &str, hid: &str, uid: u8, resources: Vec<&dyn Aml>) -> Raw {
    let crs = ResourceTemplate::new(resources);
    let mut aml = Vec::new();
    Device::new(
        Path::new(name),
        vec![
            &Name::new(Path::new("_HID"), &EISAName::new(hid)),
            &Name::new(Path::new("_UID"), &uid),
            &Name::new(Path::new("_CRS"), &crs),
        ],
    )
    .to_aml_bytes(&mut aml);
    Raw(aml)
}

/// The TPM 2.0 on the CRB interface: Microsoft's MSFT0101, which Windows and Linux's
/// tpm_crb bind, with locality 0's page (the TPM2 table's control area lies in it).
fn tpm_device() -> Raw {
    let page = Memory32Fixed::new(true, CRB_BASE as u32, CRB_SIZE as u32);
    let crs = ResourceTemplate::new(vec![&page]);
    let mut aml = Vec::new();
    Device::new(
        Path::new("TPM_"),
        vec![
            &Name::new(Path::new("_HID"), &"MSFT0101"),
            &Name::new(Path::new("_STA"), &0x0fu8),
            &Name::new(Path::new("_CRS"), &crs),
        ],
    )
    .to_aml_bytes(&mut aml);
    Raw(aml)
}

/// The DSDT.
pub(super) fn dsdt(platform: &Platform) -> Sdt {
    let pci = pci_root(platform);
    let com1 = isa_device(
        "COM1",
        "PNP0501",
        1,
        vec![&io(COM1_BASE, COM_LEN), &IrqNoFlags(COM1_IRQ as u8)],
    );
    let kbd = isa_device(
        "PS2K",
        "PNP0303",
        0,
        vec![
            &io(I8042_BASE, 1),
            &io(I8042_BASE + 4, 1),
            &IrqNoFlags(KBD_IRQ as u8),
        ],
    );
    let mouse = isa_device("PS2M", "PNP0F13", 0, vec![&IrqNoFlags(AUX_IRQ as u8)]);
    let rtc = isa_device("RTC_", "PNP0B00", 0, vec![&io(CMOS_BASE, CMOS_LEN)]);
    // Motherboard resources: what no device's _CRS claims but the OS must not hand out.
    // Linux accepts MCFG's area only once it is reserved here (or in e820).
    let ecam = Memory32Fixed::new(false, PCIE_ECAM_START as u32, PCIE_ECAM_SIZE as u32);
    let pm = io(u64::from(PM_BASE), u64::from(PM_LEN));
    let board = isa_device("MRES", "PNP0C02", 0, vec![&ecam, &pm]);
    let mut devices: Vec<&dyn Aml> = vec![&pci, &com1, &kbd, &mouse, &rtc, &board];
    let tpm = tpm_device();
    if platform.tpm {
        devices.push(&tpm);
    }
    let sb = Scope::new(Path::new("\\_SB_"), devices);
    // Soft-off: the SLP_TYP `devices::acpi::pm` powers off on.
    let s5 = SLP_TYP_S5 as u8;
    let s5 = Package::new(vec![&s5, &s5, &0u8, &0u8]);
    table(*b"DSDT", &[&sb, &Name::new(Path::new("\\_S5_"), &s5)])
}

/// The SSDT with a processor device (ACPI0007) per vCPU; `_UID` is the MADT's processor UID.
pub(super) fn cpus_ssdt(vcpus: u8) -> Sdt {
    let cpus: Vec<Raw> = (0..vcpus)
        .map(|id| {
            let mut aml = Vec::new();
            Device::new(
                Path::new(&format!("C{id:03X}")),
                vec![
                    &Name::new(Path::new("_HID"), &"ACPI0007"),
                    &Name::new(Path::new("_UID"), &id),
                ],
            )
            .to_aml_bytes(&mut aml);
            Raw(aml)
        })
        .collect();
    let children: Vec<&dyn Aml> = cpus.iter().map(|c| c as &dyn Aml).collect();
    table(*b"SSDT", &[&Scope::new(Path::new("\\_SB_"), children)])
}
