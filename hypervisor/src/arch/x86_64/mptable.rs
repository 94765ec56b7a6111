//! The Intel MultiProcessor Specification 1.4 table, through which Linux finds the
//! application processors and the I/O APIC when the machine has no ACPI tables.
//!
//! Written by hand: the format is a few packed records, and no maintained crate produces it
//! outside of whole-VMM projects.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::layout::{EBDA_START, IOAPIC_START, LAPIC_START};

const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const ISA_IRQS: u8 = 16;
/// Most processors the table describes while it still fits in the 1 KiB EBDA below 640 KiB.
pub const MAX_CPUS: u8 = 32;

const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_INTSRC: u8 = 3;
const ENTRY_LINTSRC: u8 = 4;

const CPU_ENABLED: u8 = 1;
const CPU_BOOTPROCESSOR: u8 = 2;
const INT_TYPE_INT: u8 = 0;
const INT_TYPE_NMI: u8 = 1;
const INT_TYPE_EXTINT: u8 = 3;
/// CPU signature of a family-6 part; Linux only prints it.
const CPU_SIGNATURE: u32 = 0x600;
/// CPUID.1:EDX bits for FPU and APIC.
const CPU_FEATURES: u32 = 0x201;

/// Errors while writing the MP table.
#[derive(Debug, thiserror::Error)]
pub enum MptableError {
    /// The table must fit in the EBDA, which bounds the processor count.
    #[error("the MP table cannot describe {0} vCPUs (1 to {MAX_CPUS})")]
    TooManyCpus(u8),
    /// The table did not fit in guest memory.
    #[error("cannot write the MP table into guest memory")]
    Write,
}

fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |a, b| a.wrapping_add(*b))
        .wrapping_neg()
}

/// Builds the configuration table's entries for `cpus` processors.
fn entries(cpus: u8) -> (Vec<u8>, u16) {
    let mut e = Vec::new();
    let mut count = 0u16;
    for id in 0..cpus {
        let flags = CPU_ENABLED | if id == 0 { CPU_BOOTPROCESSOR } else { 0 };
        e.extend_from_slice(&[ENTRY_PROCESSOR, id, APIC_VERSION, flags]);
        e.extend_from_slice(&CPU_SIGNATURE.to_le_bytes());
        e.extend_from_slice(&CPU_FEATURES.to_le_bytes());
        e.extend_from_slice(&[0; 8]);
        count += 1;
    }
    e.extend_from_slice(&[ENTRY_BUS, 0]);
    e.extend_from_slice(b"ISA   ");
    count += 1;
    // The I/O APIC's ID follows the processors'.
    let ioapic_id = cpus;
    e.extend_from_slice(&[ENTRY_IOAPIC, ioapic_id, IOAPIC_VERSION, 1]);
    e.extend_from_slice(&(IOAPIC_START as u32).to_le_bytes());
    count += 1;
    for irq in 0..ISA_IRQS {
        // KVM's default GSI routing sends ISA IRQ n to I/O APIC pin n (the PIT included), so
        // the table maps them one to one.
        e.extend_from_slice(&[ENTRY_INTSRC, INT_TYPE_INT, 0, 0, 0, irq, ioapic_id, irq]);
        count += 1;
    }
    e.extend_from_slice(&[ENTRY_LINTSRC, INT_TYPE_EXTINT, 0, 0, 0, 0, 0xff, 0]);
    e.extend_from_slice(&[ENTRY_LINTSRC, INT_TYPE_NMI, 0, 0, 0, 0, 0xff, 1]);
    count += 2;
    (e, count)
}

/// Builds the floating pointer and configuration table as they sit at `base`.
pub fn build(cpus: u8, base: u64) -> Result<Vec<u8>, MptableError> {
    if cpus == 0 || cpus > MAX_CPUS {
        return Err(MptableError::TooManyCpus(cpus));
    }
    let table_addr = base + 16;
    let (body, count) = entries(cpus);

    let mut header = Vec::with_capacity(44);
    header.extend_from_slice(b"PCMP");
    header.extend_from_slice(&((44 + body.len()) as u16).to_le_bytes());
    header.push(4); // spec revision 1.4
    header.push(0); // checksum, below
    header.extend_from_slice(b"TESSERA ");
    header.extend_from_slice(b"TESSERA-VMM ");
    header.extend_from_slice(&0u32.to_le_bytes()); // OEM table pointer
    header.extend_from_slice(&0u16.to_le_bytes()); // OEM table size
    header.extend_from_slice(&count.to_le_bytes());
    header.extend_from_slice(&(LAPIC_START as u32).to_le_bytes());
    header.extend_from_slice(&0u32.to_le_bytes()); // extended table length + checksum + reserved
    let mut table = header;
    table.extend_from_slice(&body);
    table[7] = checksum(&table);

    let mut floating = Vec::with_capacity(16);
    floating.extend_from_slice(b"_MP_");
    floating.extend_from_slice(&(table_addr as u32).to_le_bytes());
    floating.push(1); // length in 16-byte units
    floating.push(4); // spec revision 1.4
    floating.push(0); // checksum, below
    floating.extend_from_slice(&[0; 5]); // feature bytes: 0 = a configuration table is present
    floating[10] = checksum(&floating);

    floating.extend_from_slice(&table);
    Ok(floating)
}

/// Writes the MP table at the start of the EBDA.
pub fn write(mem: &GuestMemoryMmap, cpus: u8) -> Result<(), MptableError> {
    let bytes = build(cpus, EBDA_START)?;
    mem.write_slice(&bytes, GuestAddress(EBDA_START))
        .map_err(|_| MptableError::Write)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
    }

    #[test]
    fn checksums_are_zero() {
        let b = build(2, EBDA_START).unwrap();
        assert_eq!(&b[0..4], b"_MP_");
        assert_eq!(sum(&b[0..16]), 0);
        let len = u16::from_le_bytes([b[20], b[21]]) as usize;
        assert_eq!(len, b.len() - 16);
        assert_eq!(sum(&b[16..16 + len]), 0);
    }

    #[test]
    fn one_processor_entry_per_vcpu() {
        let b = build(3, EBDA_START).unwrap();
        let t = &b[16..];
        let count = u16::from_le_bytes([t[34], t[35]]);
        // 3 CPUs + bus + ioapic + 16 intsrc + 2 lintsrc
        assert_eq!(count, 3 + 1 + 1 + 16 + 2);
        assert_eq!(t[44], ENTRY_PROCESSOR);
        assert_eq!(t[44 + 3], CPU_ENABLED | CPU_BOOTPROCESSOR);
        assert_eq!(t[64 + 3], CPU_ENABLED);
    }

    #[test]
    fn bad_cpu_counts_are_refused() {
        assert!(build(0, 0).is_err());
        assert!(build(MAX_CPUS + 1, 0).is_err());
        assert!(build(MAX_CPUS, 0).is_ok());
    }

    #[test]
    fn fits_below_640k() {
        let b = build(MAX_CPUS, EBDA_START).unwrap();
        assert!(EBDA_START + b.len() as u64 <= super::super::layout::LOW_MEMORY_END);
    }
}
