//! x86_64 platform code: the memory map, Linux boot, CPUID, MSRs, registers, the MP table and
//! the ACPI tables.

pub mod acpi;
pub mod boot;
pub mod cpuid;
pub mod gdt;
pub mod hyperv;
pub mod layout;
pub mod mptable;
pub mod msr;
pub mod regs;
