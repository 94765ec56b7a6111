//! The tables read back the way an OS reads them: RSDP, XSDT, then each table by signature,
//! every checksum checked.

use super::*;

const BASE: u64 = ACPI_TABLES_START;

fn sum(b: &[u8]) -> u8 {
    b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// The table at guest address `addr`, its length and checksum checked.
fn table(image: &[u8], addr: u64) -> &[u8] {
    let at = (addr - BASE) as usize;
    let len = u32_at(image, at + 4) as usize;
    let t = &image[at..at + len];
    assert_eq!(
        sum(t),
        0,
        "checksum of {}",
        String::from_utf8_lossy(&t[..4])
    );
    t
}

/// Every table the XSDT lists, by signature.
fn tables(image: &[u8]) -> Vec<(String, &[u8])> {
    assert_eq!(&image[..8], b"RSD PTR ");
    assert_eq!(sum(&image[..20]), 0, "RSDP checksum");
    assert_eq!(sum(&image[..36]), 0, "RSDP extended checksum");
    assert_eq!(image[15], 2, "ACPI 2.0+ RSDP");
    let xsdt = table(image, u64_at(image, 24));
    assert_eq!(&xsdt[..4], b"XSDT");
    xsdt[36..]
        .chunks(8)
        .map(|e| {
            let t = table(image, u64::from_le_bytes(e.try_into().unwrap()));
            (String::from_utf8_lossy(&t[..4]).into_owned(), t)
        })
        .collect()
}

fn find<'a>(all: &'a [(String, &'a [u8])], sig: &str) -> &'a [u8] {
    all.iter()
        .find(|(s, _)| s == sig)
        .unwrap_or_else(|| panic!("no {sig}"))
        .1
}

fn platform(vcpus: u8) -> Platform {
    Platform {
        vcpus,
        ram_end: 512 << 20,
        tpm: false,
    }
}

#[test]
fn a_tpm_gets_its_table_and_its_device() {
    let image = build(
        &Platform {
            tpm: true,
            ..platform(1)
        },
        BASE,
    );
    let all = tables(&image);
    let tpm2 = find(&all, "TPM2");
    assert_eq!(tpm2.len(), 52, "no log area");
    assert_eq!(u16_at(tpm2, 36), 0, "client platform");
    assert_eq!(u64_at(tpm2, 40), 0xfed4_0040, "the CRB's control area");
    assert_eq!(u32_at(tpm2, 48), 7, "started through the CRB");
    let fadt = find(&all, "FACP");
    let dsdt = table(&image, u64_at(fadt, 140));
    assert!(dsdt.windows(8).any(|w| w == b"MSFT0101"));
    // Without a TPM, neither.
    let image = build(&platform(1), BASE);
    assert!(tables(&image).iter().all(|(s, _)| s != "TPM2"));
    let fadt = find(&tables(&image), "FACP").to_vec();
    let dsdt = table(&image, u64_at(&fadt, 140));
    assert!(!dsdt.windows(8).any(|w| w == b"MSFT0101"));
}

#[test]
fn every_table_is_reachable_from_the_rsdp_with_good_checksums() {
    let image = build(&platform(2), BASE);
    let all = tables(&image);
    let sigs: Vec<&str> = all.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(sigs, ["FACP", "APIC", "MCFG", "SSDT"]);
    // The FADT leads to the DSDT and the FACS (64-byte aligned, as the specification says).
    let fadt = find(&all, "FACP");
    let dsdt = table(&image, u64_at(fadt, 140));
    assert_eq!(&dsdt[..4], b"DSDT");
    let facs = u64_at(fadt, 132);
    assert_eq!(facs % 64, 0);
    let facs_at = (facs - BASE) as usize;
    assert_eq!(&image[facs_at..facs_at + 4], b"FACS");
}

#[test]
fn fadt_names_the_pm_block_the_sci_and_the_reset_register() {
    let image = build(&platform(1), BASE);
    let all = tables(&image);
    let fadt = find(&all, "FACP");
    assert_eq!(u16_at(fadt, 46), 9, "SCI");
    assert_eq!(
        u32_at(fadt, 48),
        0,
        "no SMI command port: always in ACPI mode"
    );
    assert_eq!(u32_at(fadt, 56), 0x600, "PM1a_EVT_BLK");
    assert_eq!(u32_at(fadt, 64), 0x604, "PM1a_CNT_BLK");
    assert_eq!(u32_at(fadt, 76), 0x608, "PM_TMR_BLK");
    assert_eq!(u32_at(fadt, 80), 0x620, "GPE0_BLK");
    assert_eq!((fadt[88], fadt[89], fadt[91], fadt[92]), (4, 2, 4, 16));
    assert_eq!(fadt[108], 0x32, "century");
    let flags = u32_at(fadt, 112);
    assert_eq!(flags & (1 << 4), 0, "a fixed power button");
    assert_ne!(flags & (1 << 10), 0, "the reset register is supported");
    // RESET_REG: system I/O, 8 bits, port 0xCF9; value 6.
    assert_eq!(fadt[116], 1);
    assert_eq!(fadt[117], 8);
    assert_eq!(u64_at(fadt, 120), 0xcf9);
    assert_eq!(fadt[128], 6);
    // X_PM1a_EVT_BLK matches PM1a_EVT_BLK.
    assert_eq!(fadt[148], 1);
    assert_eq!(u64_at(fadt, 152), 0x600);
}

#[test]
fn madt_lists_each_vcpu_the_io_apic_and_the_sci_override() {
    let image = build(&platform(3), BASE);
    let all = tables(&image);
    let madt = find(&all, "APIC");
    assert_eq!(u32_at(madt, 36), 0xfee0_0000);
    let mut at = 44;
    let (mut lapics, mut ioapic, mut iso) = (Vec::new(), None, None);
    while at < madt.len() {
        let (kind, len) = (madt[at], usize::from(madt[at + 1]));
        assert!(len >= 2, "entry length");
        match kind {
            0 => lapics.push((madt[at + 2], madt[at + 3], u32_at(madt, at + 4))),
            1 => ioapic = Some((madt[at + 2], u32_at(madt, at + 4), u32_at(madt, at + 8))),
            2 => iso = Some((madt[at + 3], u32_at(madt, at + 4), u16_at(madt, at + 8))),
            _ => {}
        }
        at += len;
    }
    assert_eq!(at, madt.len());
    assert_eq!(lapics, vec![(0, 0, 1), (1, 1, 1), (2, 2, 1)]);
    assert_eq!(ioapic, Some((3, 0xfec0_0000, 0)));
    assert_eq!(iso, Some((9, 9, 0x000d)));
}

#[test]
fn mcfg_covers_the_ecam_window() {
    let image = build(&platform(1), BASE);
    let all = tables(&image);
    let mcfg = find(&all, "MCFG");
    assert_eq!(mcfg.len(), 44 + 16);
    assert_eq!(u64_at(mcfg, 44), PCIE_ECAM_START);
    assert_eq!(u16_at(mcfg, 52), 0);
    assert_eq!((mcfg[54], mcfg[55]), (0, 255));
}

#[test]
fn dsdt_and_ssdt_declare_the_devices_and_processors() {
    let image = build(&platform(2), BASE);
    let all = tables(&image);
    let fadt = find(&all, "FACP");
    let dsdt = table(&image, u64_at(fadt, 140));
    let has = |t: &[u8], what: &[u8]| t.windows(what.len()).any(|w| w == what);
    for name in [
        &b"PCI0"[..],
        b"COM1",
        b"PS2K",
        b"PS2M",
        b"RTC_",
        b"MRES",
        b"_S5_",
        b"_CRS",
    ] {
        assert!(has(dsdt, name), "{}", String::from_utf8_lossy(name));
    }
    // EISA IDs: PNP0A08 and PNP0C02 encoded.
    assert!(has(dsdt, &[0x41, 0xd0, 0x0a, 0x08]));
    assert!(has(dsdt, &[0x41, 0xd0, 0x0c, 0x02]));
    let ssdt = find(&all, "SSDT");
    assert!(has(ssdt, b"C000") && has(ssdt, b"C001") && !has(ssdt, b"C002"));
    assert!(has(ssdt, b"ACPI0007"));
}

#[test]
fn the_largest_machine_fits_the_area() {
    let image = build(&platform(u8::MAX), BASE);
    assert!((image.len() as u64) <= ACPI_AREA, "{}", image.len());
    assert_eq!(tables(&image).len(), 4);
}

#[test]
fn the_64_bit_window_lies_above_ram_and_4_gib() {
    use super::super::layout::pci_mmio64_window;
    assert_eq!(pci_mmio64_window(512 << 20), (32 << 30, 96 << 30));
    assert_eq!(pci_mmio64_window(40 << 30), (64 << 30, 128 << 30));
    let (start, end) = pci_mmio64_window(u64::MAX);
    assert!(start <= end);
}
