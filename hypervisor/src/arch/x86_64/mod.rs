//! x86_64 platform code: the memory map, Linux boot, CPUID, MSRs, registers and the MP table.

pub mod boot;
pub mod cpuid;
pub mod gdt;
pub mod layout;
pub mod mptable;
pub mod msr;
pub mod regs;
