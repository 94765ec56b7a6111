//! The PCI root bus: configuration mechanism #1 (ports 0xCF8/0xCFC) and ECAM over a bus of
//! functions, with the host bridge at 00:00.0. virtio-pci and VFIO devices plug in as [`PciFunction`]s.

pub mod config;
pub mod ecam;
pub mod host_bridge;
pub mod lpc;
pub mod mmio_window;
pub mod msix;
pub mod register_bar;
pub mod root;

pub use ecam::PciEcam;
pub use mmio_window::PciMmioWindow;
pub use root::{PciRoot, PCI_CONFIG_IO_BASE, PCI_CONFIG_IO_LEN};

/// A PCI function's configuration space as the root bus sees it.
pub trait PciFunction: Send {
    /// Reads dword `reg` (0..64 conventional, up to 1024 extended).
    fn config_read(&mut self, reg: usize) -> u32;
    /// Writes `data` at byte `offset` of dword `reg`.
    fn config_write(&mut self, reg: usize, offset: usize, data: &[u8]);
    /// A guest read at guest-physical `addr`: returns false when none of the function's
    /// (enabled) memory BARs holds it.
    fn mmio_read(&mut self, _addr: u64, _data: &mut [u8]) -> bool {
        false
    }
    /// A guest write at guest-physical `addr`; false when no BAR of the function holds it.
    fn mmio_write(&mut self, _addr: u64, _data: &[u8]) -> bool {
        false
    }
    /// The machine's reset: configuration space (BARs included) and device state as built.
    fn reset(&mut self);
}
