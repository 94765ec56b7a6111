//! VFIO GPU passthrough: host discovery and readiness, vfio-pci binding, and the guest-side VFIO PCI device for tessera-vmm.
//!
//! Status: placeholder crate. The capability arrives with a later issue (design.md §6); until then this crate
//! only marks its place in the workspace (design.md §3) and exports nothing.
