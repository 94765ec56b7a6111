//! The host bridge at 00:00.0, which tells the guest there is a PCI root here.

use super::config::{ClassCode, PciConfig, PciId};
use super::PciFunction;

/// Red Hat's vendor ID and its "PCIe host bridge" device ID, which Linux binds no quirks to.
const VENDOR_REDHAT: u16 = 0x1b36;
const DEVICE_HOST_BRIDGE: u16 = 0x0008;

/// The host bridge.
pub struct HostBridge {
    config: PciConfig,
}

impl HostBridge {
    /// A host bridge (class 06/00/00).
    pub fn new() -> Self {
        Self {
            config: PciConfig::new(PciId {
                vendor: VENDOR_REDHAT,
                device: DEVICE_HOST_BRIDGE,
                revision: 0,
                class: ClassCode {
                    class: 0x06,
                    subclass: 0x00,
                    prog_if: 0x00,
                },
                subsystem_vendor: VENDOR_REDHAT,
                subsystem: 0x1100,
            }),
        }
    }
}

impl Default for HostBridge {
    fn default() -> Self {
        Self::new()
    }
}

impl PciFunction for HostBridge {
    fn config_read(&mut self, reg: usize) -> u32 {
        self.config.read(reg)
    }

    fn config_write(&mut self, reg: usize, offset: usize, data: &[u8]) {
        self.config.write(reg, offset, data);
    }

    fn reset(&mut self) {
        *self = Self::new();
    }
}
