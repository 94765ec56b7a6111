//! The guest-physical memory map of a tessera-vmm x86_64 machine.
//!
//! Low memory holds the boot structures the VMM writes before the first instruction; the
//! 2.75-4 GiB hole is left for PCI Express configuration space (ECAM), 32-bit PCI BARs and the
//! interrupt controllers, as on QEMU's q35 machine, whose layout UEFI firmware built for it
//! (OVMF) expects: its ECAM base is fixed at build time to 0xB000_0000 and RAM must end below.

/// GDT used for the 64-bit boot entry.
pub const BOOT_GDT_START: u64 = 0x500;
/// Empty IDT loaded at boot (the guest installs its own).
pub const BOOT_IDT_START: u64 = 0x520;
/// Linux "zero page" (`struct boot_params`).
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack pointer for the boot vCPU.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Page-map level 4 table of the boot identity map.
pub const PML4_START: u64 = 0x9000;
/// Page-directory-pointer table of the boot identity map.
pub const PDPTE_START: u64 = 0xa000;
/// First of four page directories (2 MiB pages) that identity-map the low 4 GiB.
pub const PDE_START: u64 = 0xb000;
/// Number of page directories, one per GiB mapped.
pub const PDE_COUNT: u64 = 4;
/// Kernel command line.
pub const CMDLINE_START: u64 = 0x20000;
/// Largest command line the VMM accepts (Linux's own limit comes from the setup header).
pub const CMDLINE_MAX_SIZE: usize = 0x1_0000;
/// Start of the extended BIOS data area; the MP table lives here.
pub const EBDA_START: u64 = 0x9_fc00;
/// End of conventional memory (640 KiB).
pub const LOW_MEMORY_END: u64 = 0xa_0000;
/// Where "high" memory starts and where kernels are loaded.
pub const HIMEM_START: u64 = 0x10_0000;
/// The ACPI tables for a directly booted kernel: the RSDP first, where Linux looks for it
/// (the BIOS area 0xE0000-0xFFFFF, scanned on 16-byte boundaries), the other tables after it.
pub const ACPI_TABLES_START: u64 = 0xe_0000;
/// End (exclusive) of the ACPI tables' area.
pub const ACPI_TABLES_END: u64 = 0x10_0000;
/// Start of the 32-bit MMIO hole: RAM above this address is relocated above 4 GiB.
pub const MMIO_HOLE_START: u64 = PCIE_ECAM_START;
/// PCI Express enhanced configuration access (ECAM): 4 KiB per function, 256 buses.
pub const PCIE_ECAM_START: u64 = 0xb000_0000;
/// Size of the ECAM window (buses 0-255).
pub const PCIE_ECAM_SIZE: u64 = 0x1000_0000;
/// End of the 32-bit MMIO hole.
pub const MMIO_HOLE_END: u64 = 0x1_0000_0000;
/// Window for 32-bit PCI BARs inside the hole, after ECAM (where OVMF puts it too).
pub const PCI_MMIO32_START: u64 = PCIE_ECAM_START + PCIE_ECAM_SIZE;
/// End (exclusive) of the 32-bit PCI BAR window.
pub const PCI_MMIO32_END: u64 = 0xfec0_0000;
/// IO-APIC registers (emulated in-kernel by KVM).
pub const IOAPIC_START: u64 = 0xfec0_0000;
/// The display's video memory BAR (16 MiB, aligned), at the top of the PCI window, away from
/// the virtio BARs that grow from its bottom.
pub const DISPLAY_VRAM_BAR: u32 = 0xfd00_0000;
/// The display's register BAR.
pub const DISPLAY_MMIO_BAR: u32 = 0xfe00_0000;
/// Local APIC registers (emulated in-kernel by KVM).
pub const LAPIC_START: u64 = 0xfee0_0000;
/// Alignment and size of the 64-bit PCI BAR window above RAM: a BAR is naturally aligned,
/// and GPUs come with BARs of 8-32 GiB.
pub const PCI_MMIO64_ALIGN: u64 = 32 << 30;
/// Size of the 64-bit PCI BAR window.
pub const PCI_MMIO64_SIZE: u64 = 64 << 30;

/// The 64-bit PCI BAR window `[start, end)` for a guest whose RAM ends at `ram_end`: from the
/// first 32 GiB boundary at or above both 4 GiB and the end of RAM.
pub fn pci_mmio64_window(ram_end: u64) -> (u64, u64) {
    let start = ram_end
        .max(MMIO_HOLE_END)
        .div_ceil(PCI_MMIO64_ALIGN)
        .saturating_mul(PCI_MMIO64_ALIGN);
    (start, start.saturating_add(PCI_MMIO64_SIZE))
}

/// Top (exclusive) of the firmware flash: UEFI firmware maps down from 4 GiB, its reset vector
/// at 0xFFFF_FFF0.
pub const FIRMWARE_TOP: u64 = MMIO_HOLE_END;
/// The most flash a machine maps (code and variables together): 8 MiB below 4 GiB, above the
/// local APIC and the KVM pages below.
pub const FIRMWARE_MAX_SIZE: u64 = 8 << 20;

/// Three pages KVM needs for the real-mode TSS on Intel; placed where no RAM, BAR or firmware
/// flash goes (QEMU's choice too).
pub const KVM_TSS_ADDRESS: u64 = 0xfeff_d000;
/// One page KVM needs for the EPT identity map on Intel.
pub const KVM_IDENTITY_MAP_ADDRESS: u64 = 0xfeff_c000;
