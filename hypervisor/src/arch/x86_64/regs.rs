//! Register state for the 64-bit boot entry: identity page tables, GDT/IDT, control registers,
//! general registers, FPU and the local APIC's LINT pins.

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_sregs};
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::gdt::{boot_gdt, segment_from_gdt, BOOT_CS, BOOT_DS, BOOT_TSS};
use super::layout::{
    BOOT_GDT_START, BOOT_IDT_START, BOOT_STACK_POINTER, PDE_COUNT, PDE_START, PDPTE_START,
    PML4_START,
};

const X86_CR0_PE: u64 = 1 << 0;
const X86_CR0_ET: u64 = 1 << 4;
const X86_CR0_PG: u64 = 1 << 31;
const X86_CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const PAGE_PRESENT_RW: u64 = 0x3;
const PAGE_SIZE_2M: u64 = 0x80;

/// Errors while preparing a vCPU's boot registers.
#[derive(Debug, thiserror::Error)]
pub enum RegsError {
    /// A boot structure did not fit in guest memory.
    #[error("cannot write the boot {0} into guest memory (is guest memory at least 1 MiB?)")]
    WriteBootStructure(&'static str),
    /// A KVM register ioctl failed.
    #[error("KVM refused the {0} registers: {1}")]
    Kvm(&'static str, kvm_ioctls::Error),
}

/// Writes page tables that identity-map the low 4 GiB with 2 MiB pages.
pub fn write_page_tables(mem: &GuestMemoryMmap) -> Result<(), RegsError> {
    let err = |_| RegsError::WriteBootStructure("page tables");
    mem.write_obj(PDPTE_START | PAGE_PRESENT_RW, GuestAddress(PML4_START))
        .map_err(err)?;
    for gib in 0..PDE_COUNT {
        let pd = PDE_START + gib * 0x1000;
        mem.write_obj(pd | PAGE_PRESENT_RW, GuestAddress(PDPTE_START + gib * 8))
            .map_err(err)?;
        let entries: Vec<u8> = (0..512u64)
            .flat_map(|i| {
                let phys = (gib << 30) | (i << 21);
                (phys | PAGE_PRESENT_RW | PAGE_SIZE_2M).to_le_bytes()
            })
            .collect();
        mem.write_slice(&entries, GuestAddress(pd)).map_err(err)?;
    }
    Ok(())
}

/// Writes the boot GDT and an empty IDT into guest memory.
pub fn write_descriptor_tables(mem: &GuestMemoryMmap) -> Result<(), RegsError> {
    let gdt: Vec<u8> = boot_gdt().iter().flat_map(|e| e.to_le_bytes()).collect();
    mem.write_slice(&gdt, GuestAddress(BOOT_GDT_START))
        .map_err(|_| RegsError::WriteBootStructure("GDT"))?;
    mem.write_obj(0u64, GuestAddress(BOOT_IDT_START))
        .map_err(|_| RegsError::WriteBootStructure("IDT"))
}

/// Puts the vCPU in 64-bit long mode with paging on the identity map.
pub fn setup_sregs(vcpu: &VcpuFd) -> Result<(), RegsError> {
    let mut sregs: kvm_sregs = vcpu.get_sregs().map_err(|e| RegsError::Kvm("special", e))?;
    let gdt = boot_gdt();
    let code = segment_from_gdt(gdt[usize::from(BOOT_CS / 8)], BOOT_CS);
    let data = segment_from_gdt(gdt[usize::from(BOOT_DS / 8)], BOOT_DS);
    let tss = segment_from_gdt(gdt[usize::from(BOOT_TSS / 8)], BOOT_TSS);

    sregs.gdt.base = BOOT_GDT_START;
    sregs.gdt.limit = (std::mem::size_of_val(&gdt) - 1) as u16;
    sregs.idt.base = BOOT_IDT_START;
    sregs.idt.limit = 7;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;

    sregs.cr3 = PML4_START;
    sregs.cr4 |= X86_CR4_PAE;
    sregs.cr0 |= X86_CR0_PE | X86_CR0_ET | X86_CR0_PG;
    sregs.efer |= EFER_LME | EFER_LMA;
    vcpu.set_sregs(&sregs)
        .map_err(|e| RegsError::Kvm("special", e))
}

/// Sets RIP to the entry point and RSI to the zero page, as the 64-bit boot protocol requires.
pub fn setup_regs(vcpu: &VcpuFd, entry: u64, boot_params: u64) -> Result<(), RegsError> {
    let regs = kvm_regs {
        rflags: 0x2, // bit 1 is reserved and must be set
        rip: entry,
        rsp: BOOT_STACK_POINTER,
        rbp: BOOT_STACK_POINTER,
        rsi: boot_params,
        ..Default::default()
    };
    vcpu.set_regs(&regs)
        .map_err(|e| RegsError::Kvm("general", e))
}

/// Resets the FPU to its power-on control words.
pub fn setup_fpu(vcpu: &VcpuFd) -> Result<(), RegsError> {
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(|e| RegsError::Kvm("FPU", e))
}

const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

fn set_delivery_mode(reg: u32, mode: u32) -> u32 {
    (reg & !0x700) | (mode << 8)
}

/// Wires LINT0 to the PIC (ExtINT) and LINT1 to NMI, as a PC's firmware leaves them.
pub fn setup_lint(vcpu: &VcpuFd) -> Result<(), RegsError> {
    let mut lapic = vcpu.get_lapic().map_err(|e| RegsError::Kvm("LAPIC", e))?;
    for (offset, mode) in [(APIC_LVT0, APIC_MODE_EXTINT), (APIC_LVT1, APIC_MODE_NMI)] {
        let bytes: [u8; 4] = std::array::from_fn(|i| lapic.regs[offset + i] as u8);
        let value = set_delivery_mode(u32::from_le_bytes(bytes), mode);
        for (i, b) in value.to_le_bytes().iter().enumerate() {
            lapic.regs[offset + i] = *b as _;
        }
    }
    vcpu.set_lapic(&lapic)
        .map_err(|e| RegsError::Kvm("LAPIC", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
    }

    #[test]
    fn page_tables_identity_map_low_4g() {
        let m = mem();
        write_page_tables(&m).unwrap();
        let pml4: u64 = m.read_obj(GuestAddress(PML4_START)).unwrap();
        assert_eq!(pml4, PDPTE_START | 3);
        let pdpte3: u64 = m.read_obj(GuestAddress(PDPTE_START + 24)).unwrap();
        assert_eq!(pdpte3, (PDE_START + 0x3000) | 3);
        // The first PDE maps physical 0 as a 2 MiB page.
        let pde0: u64 = m.read_obj(GuestAddress(PDE_START)).unwrap();
        assert_eq!(pde0, 0x83);
        let last: u64 = m.read_obj(GuestAddress(PDE_START + 0x3ff8)).unwrap();
        assert_eq!(last, 0xffe0_0000 | 0x83);
    }

    #[test]
    fn tables_do_not_fit_in_tiny_memory() {
        let m = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x1000)]).unwrap();
        assert!(matches!(
            write_page_tables(&m),
            Err(RegsError::WriteBootStructure(_))
        ));
    }

    #[test]
    fn delivery_mode_keeps_other_bits() {
        assert_eq!(set_delivery_mode(0x0001_0000, APIC_MODE_NMI), 0x0001_0400);
        assert_eq!(set_delivery_mode(0x700, APIC_MODE_EXTINT), 0x700);
    }
}
