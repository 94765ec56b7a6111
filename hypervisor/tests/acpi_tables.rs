//! tessera-vmm's ACPI tables checked by ACPICA, the reference implementation every OS's ACPI
//! code descends from: `iasl -d` disassembles each table (checking its checksum and fields)
//! and the disassembled DSDT and SSDT compile again without errors.

use std::path::Path;
use std::process::Command;

use tessera_vmm::arch::x86_64::acpi::{build, Platform};

mod common;

const BASE: u64 = 0xe_0000;

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn table_at(image: &[u8], addr: u64) -> (String, Vec<u8>) {
    let at = (addr - BASE) as usize;
    let len = u32_at(image, at + 4) as usize;
    let t = image[at..at + len].to_vec();
    (String::from_utf8_lossy(&t[..4]).into_owned(), t)
}

/// Each table as a file named by its signature (the RSDP, which iasl does not take alone,
/// is checked by the unit tests).
fn split(image: &[u8], dir: &Path) -> Vec<String> {
    let mut names = Vec::new();
    let (_, xsdt) = table_at(image, u64_at(image, 24));
    let mut tables = vec![("XSDT".to_string(), xsdt.clone())];
    for e in xsdt[36..].chunks(8) {
        tables.push(table_at(image, u64::from_le_bytes(e.try_into().unwrap())));
    }
    let fadt = tables.iter().find(|(s, _)| s == "FACP").unwrap().1.clone();
    tables.push(table_at(image, u64_at(&fadt, 140)));
    tables.push(table_at(image, u64_at(&fadt, 132)));
    for (sig, bytes) in tables {
        let name = sig.to_lowercase();
        std::fs::write(dir.join(format!("{name}.dat")), bytes).unwrap();
        names.push(name);
    }
    names
}

fn iasl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("iasl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("iasl runs");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "iasl {args:?} failed:\n{text}");
    text
}

#[test]
fn acpica_disassembles_every_table_and_recompiles_the_aml() {
    if Command::new("iasl").arg("-v").output().is_err() {
        let msg = "iasl (Debian package acpica-tools) is not installed";
        assert!(
            !common::required("TESSERA_REQUIRE_ACPICA"),
            "{msg}, and TESSERA_REQUIRE_ACPICA=1"
        );
        eprintln!("*** SKIP: {msg}; the ACPI tables are not checked by ACPICA ***");
        return;
    }
    let scratch = common::Scratch::new("acpi");
    let dir: &Path = &scratch.0;
    let image = build(
        &Platform {
            vcpus: 4,
            ram_end: 2 << 30,
            tpm: true,
        },
        BASE,
    );
    let names = split(&image, dir);
    assert_eq!(
        names,
        ["xsdt", "facp", "apic", "mcfg", "ssdt", "tpm2", "dsdt", "facs"]
    );
    for name in &names {
        let out = iasl(dir, &["-d", &format!("{name}.dat")]);
        let dsl = std::fs::read_to_string(dir.join(format!("{name}.dsl"))).unwrap();
        for bad in ["Invalid", "invalid", "Incorrect", "Error", "Warning"] {
            assert!(!dsl.contains(bad), "{name}: {bad} in\n{dsl}\n{out}");
        }
    }
    let dsdt = std::fs::read_to_string(dir.join("dsdt.dsl")).unwrap();
    for expected in [
        "Device (PCI0)",
        "EisaId (\"PNP0A08\")",
        "Device (COM1)",
        "IO (Decode16,",
        "IRQNoFlags ()",
        "Device (MRES)",
        "Memory32Fixed (ReadOnly,",
        "0xB0000000",
        "QWordMemory (",
        "Name (\\_S5, Package (0x04)",
        "Device (TPM)",
        "\"MSFT0101\"",
        "0xFED40000",
    ] {
        assert!(dsdt.contains(expected), "no {expected} in\n{dsdt}");
    }
    let ssdt = std::fs::read_to_string(dir.join("ssdt.dsl")).unwrap();
    assert_eq!(ssdt.matches("\"ACPI0007\"").count(), 4, "{ssdt}");
    // The disassembled AML compiles again: no errors (remarks are fine).
    for aml in ["dsdt", "ssdt"] {
        let out = iasl(dir, &["-p", &format!("{aml}-again"), &format!("{aml}.dsl")]);
        assert!(out.contains("0 Errors"), "{aml}:\n{out}");
    }
}
