//! Device models and the buses they sit on.

pub mod acpi;
pub mod ahci;
pub mod bus;
pub mod display;
pub mod fw_cfg;
pub mod legacy;
pub mod pci;
pub mod pflash;
pub mod tpm;
pub mod usb;
pub mod virtio;
pub mod worker_thread;
pub mod xhci;
