//! The ACPI tables for UEFI firmware: fw_cfg's `etc/table-loader` script, which QEMU
//! defines and OVMF executes (OvmfPkg's `QemuLoader.h`): allocate the tables' file in guest
//! memory, add its address to each pointer field, make each checksum again. OVMF then installs
//! every table a pointer reaches (and builds its own RSDP and XSDT). Encoded by hand: no crate
//! writes this format.
//!
//! Each command is 128 bytes: a little-endian u32 type, then its arguments, zero-padded.

use super::Tables;

/// The fw_cfg file holding the tables.
pub const TABLES_FILE: &str = "etc/acpi/tables";
/// The fw_cfg file holding the script.
pub const LOADER_FILE: &str = "etc/table-loader";

const ENTRY: usize = 128;
/// A file name field: 56 bytes, NUL-terminated.
const NAME: usize = 56;
const ALLOCATE: u32 = 1;
const ADD_POINTER: u32 = 2;
const ADD_CHECKSUM: u32 = 3;
/// ALLOCATE's zone: anywhere (below 4 GiB when 32-bit pointers reach it).
const ZONE_HIGH: u8 = 1;
/// The blob's alignment: the FACS's, the strictest of the tables.
const ALIGN: u32 = 64;

struct Entry(Vec<u8>);

impl Entry {
    fn new(kind: u32) -> Self {
        let mut b = Vec::with_capacity(ENTRY);
        b.extend_from_slice(&kind.to_le_bytes());
        Self(b)
    }

    fn name(mut self, name: &str) -> Self {
        let mut n = [0u8; NAME];
        n[..name.len()].copy_from_slice(name.as_bytes());
        self.0.extend_from_slice(&n);
        self
    }

    fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }

    fn finish(mut self, out: &mut Vec<u8>) {
        self.0.resize(ENTRY, 0);
        out.extend_from_slice(&self.0);
    }
}

/// The contents of [`TABLES_FILE`]: the tables with offsets for pointers and every checksum
/// byte zero, because the loader's checksum command sums its range with the byte in it (QEMU
/// leaves them zero too): a byte already set would count twice.
pub fn tables_file(tables: &Tables) -> Vec<u8> {
    let mut b = tables.bytes().to_vec();
    for (at, _) in tables.checksums() {
        b[*at] = 0;
    }
    b
}

/// The script that loads `tables` from [`TABLES_FILE`].
pub fn table_loader(tables: &Tables) -> Vec<u8> {
    let mut out = Vec::new();
    Entry::new(ALLOCATE)
        .name(TABLES_FILE)
        .u32(ALIGN)
        .u8(ZONE_HIGH)
        .finish(&mut out);
    for &(at, width) in tables.pointers() {
        Entry::new(ADD_POINTER)
            .name(TABLES_FILE)
            .name(TABLES_FILE)
            .u32(at as u32)
            .u8(width)
            .finish(&mut out);
    }
    for (at, range) in tables.checksums() {
        Entry::new(ADD_CHECKSUM)
            .name(TABLES_FILE)
            .u32(*at as u32)
            .u32(range.start as u32)
            .u32(range.len() as u32)
            .finish(&mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::{Platform, Tables};
    use super::*;

    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }

    /// Runs the script as OVMF does (`OvmfPkg/AcpiPlatformDxe`: a checksum command stores the
    /// byte that makes its range sum to zero, the byte's old value included), the file placed
    /// at `base`, and compares with the tables relocated there directly.
    #[test]
    fn executing_the_script_relocates_the_tables() {
        let tables = Tables::new(&Platform {
            vcpus: 2,
            ram_end: 1 << 30,
            tpm: true,
        });
        let script = table_loader(&tables);
        assert_eq!(script.len() % ENTRY, 0);
        let base = 0x7fe0_0000u64;
        let mut blob = tables_file(&tables);
        let mut allocated = false;
        for e in script.chunks(ENTRY) {
            let file = |at: usize| {
                let n = &e[at..at + NAME];
                String::from_utf8_lossy(&n[..n.iter().position(|b| *b == 0).unwrap()]).into_owned()
            };
            match u32_at(e, 0) {
                ALLOCATE => {
                    assert_eq!(file(4), TABLES_FILE);
                    assert!(u32_at(e, 60) <= 4096);
                    allocated = true;
                }
                ADD_POINTER => {
                    assert!(allocated);
                    assert_eq!(
                        (file(4), file(60)),
                        (TABLES_FILE.into(), TABLES_FILE.into())
                    );
                    let (at, width) = (u32_at(e, 116) as usize, usize::from(e[120]));
                    assert!([1, 2, 4, 8].contains(&width));
                    let mut v = [0u8; 8];
                    v[..width].copy_from_slice(&blob[at..at + width]);
                    let p = u64::from_le_bytes(v);
                    assert!(p < blob.len() as u64, "pointer inside the blob");
                    blob[at..at + width].copy_from_slice(&(p + base).to_le_bytes()[..width]);
                }
                ADD_CHECKSUM => {
                    let (at, start, len) = (
                        u32_at(e, 60) as usize,
                        u32_at(e, 64) as usize,
                        u32_at(e, 68) as usize,
                    );
                    blob[at] = super::super::checksum(&blob[start..start + len]);
                }
                other => panic!("unexpected command {other}"),
            }
        }
        assert_eq!(blob, tables.relocated(base));
    }
}
