//! The chipset's ACPI hardware, which the tables in `arch::x86_64::acpi` describe.

pub mod pm;
