//! The boot GDT and its translation into KVM segment registers.
//!
//! Linux's 64-bit boot protocol wants `__BOOT_CS` = 0x10 and `__BOOT_DS` = 0x18 as flat 4 GiB
//! segments, so the table keeps two null entries before them.

use kvm_bindings::kvm_segment;

/// Selector of the boot code segment (`__BOOT_CS`).
pub const BOOT_CS: u16 = 0x10;
/// Selector of the boot data segment (`__BOOT_DS`).
pub const BOOT_DS: u16 = 0x18;
/// Selector of the boot TSS.
pub const BOOT_TSS: u16 = 0x20;

/// Builds a GDT entry from flags (the 12 bits of access byte and flags nibble), base and limit.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << (56 - 24))
        | ((flags as u64 & 0x0000_f0ff) << 40)
        | ((limit as u64 & 0x000f_0000) << (48 - 16))
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
}

/// The boot GDT: null, null, 64-bit code, data, TSS.
pub fn boot_gdt() -> [u64; 5] {
    [
        0,
        0,
        gdt_entry(0xa09b, 0, 0xfffff), // code: present, DPL0, exec/read, accessed, L=1, G=1
        gdt_entry(0xc093, 0, 0xfffff), // data: present, DPL0, read/write, accessed, D/B=1, G=1
        gdt_entry(0x808b, 0, 0xfffff), // TSS: present, busy 32-bit TSS
    ]
}

fn field(entry: u64, shift: u32, bits: u32) -> u64 {
    (entry >> shift) & ((1u64 << bits) - 1)
}

/// Decodes a GDT entry into the segment register KVM expects for `selector`.
pub fn segment_from_gdt(entry: u64, selector: u16) -> kvm_segment {
    let base = (field(entry, 56, 8) << 24) | field(entry, 16, 24);
    let limit_raw = (field(entry, 48, 4) << 16) | field(entry, 0, 16);
    let granularity = field(entry, 55, 1) as u8;
    // With 4 KiB granularity the effective limit covers the whole last page.
    let limit = if granularity == 1 {
        (limit_raw << 12) | 0xfff
    } else {
        limit_raw
    };
    let present = field(entry, 47, 1) as u8;
    kvm_segment {
        base,
        limit: limit as u32,
        selector,
        type_: field(entry, 40, 4) as u8,
        present,
        dpl: field(entry, 45, 2) as u8,
        db: field(entry, 54, 1) as u8,
        s: field(entry, 44, 1) as u8,
        l: field(entry, 53, 1) as u8,
        g: granularity,
        avl: field(entry, 52, 1) as u8,
        padding: 0,
        unusable: u8::from(present == 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_segment_is_flat_64_bit() {
        let gdt = boot_gdt();
        let cs = segment_from_gdt(gdt[(BOOT_CS / 8) as usize], BOOT_CS);
        assert_eq!(cs.base, 0);
        assert_eq!(cs.limit, 0xffff_ffff);
        assert_eq!(cs.l, 1);
        assert_eq!(cs.db, 0);
        assert_eq!(cs.type_, 0xb);
        assert_eq!(cs.present, 1);
        assert_eq!(cs.s, 1);
    }

    #[test]
    fn data_segment_is_flat_read_write() {
        let gdt = boot_gdt();
        let ds = segment_from_gdt(gdt[(BOOT_DS / 8) as usize], BOOT_DS);
        assert_eq!(ds.limit, 0xffff_ffff);
        assert_eq!(ds.type_, 0x3);
        assert_eq!(ds.db, 1);
        assert_eq!(ds.unusable, 0);
    }

    #[test]
    fn encoding_round_trips_base_and_limit() {
        let e = gdt_entry(0x0093, 0x1234_5678, 0xabcde);
        let s = segment_from_gdt(e, 0x8);
        assert_eq!(s.base, 0x1234_5678);
        assert_eq!(s.limit, 0xabcde);
        assert_eq!(s.g, 0);
    }

    #[test]
    fn null_entry_is_unusable() {
        assert_eq!(segment_from_gdt(0, 0).unusable, 1);
    }
}
