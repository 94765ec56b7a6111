//! The bochs display adapter (PCI 1234:1111, class "display, other"), as QEMU's
//! `-device bochs-display` presents it and Linux's bochs-drm and UEFI's QemuVideo drive it:
//! BAR 0 is video memory (a KVM memory slot with dirty logging, see
//! [`crate::vstate::framebuffer`]), BAR 2 holds the DISPI registers at 0x500 and QEMU's
//! extension registers at 0x600; the DISPI registers are also at I/O ports 0x1CE/0x1CF.

use std::sync::{Arc, Mutex};

use super::dispi::Dispi;
use crate::devices::bus::{lock, BusDevice};
use crate::devices::pci::config::{
    ClassCode, ConfigSpaceError, PciConfig, PciId, REG_BAR0, REG_COMMAND,
};
use crate::devices::pci::PciFunction;
use crate::vstate::framebuffer::Framebuffer;

/// Video memory: 16 MiB, enough for 2560x1600 at 32 bpp with room to spare.
pub const VRAM_SIZE: u32 = 16 << 20;
/// BAR 2 (registers).
pub const MMIO_SIZE: u32 = 4096;
/// DISPI I/O ports: index at 0x1CE, data at 0x1CF (and 0x1D0).
pub const DISPI_PORT: u64 = 0x1ce;
/// Ports in the range.
pub const DISPI_PORT_LEN: u64 = 3;

const MMIO_DISPI: u64 = 0x500;
const MMIO_DISPI_END: u64 = 0x500 + 2 * super::dispi::index::COUNT as u64;
const MMIO_QEXT_SIZE: u64 = 0x600;
const MMIO_QEXT_ENDIAN: u64 = 0x604;
/// QEMU's extension registers: their size, and "little endian framebuffer".
const QEXT_SIZE: u32 = 8;
const QEXT_LITTLE_ENDIAN: u32 = 0x1e1e_1e1e;

/// The adapter's PCI function.
pub struct BochsDisplay {
    config: PciConfig,
    /// The configuration space as built, which a reset restores.
    initial: PciConfig,
    dispi: Arc<Mutex<Dispi>>,
    fb: Arc<Framebuffer>,
}

impl BochsDisplay {
    /// The adapter with video memory `fb` at `vram_bar` and registers at `mmio_bar`
    /// (the guest may move both).
    pub fn new(
        dispi: Arc<Mutex<Dispi>>,
        fb: Arc<Framebuffer>,
        vram_bar: u32,
        mmio_bar: u32,
    ) -> Result<Self, ConfigSpaceError> {
        let mut config = PciConfig::new(PciId {
            vendor: 0x1234,
            device: 0x1111,
            // Revision 2: the extension registers exist (bochs-drm reads them from 2 on).
            revision: 2,
            class: ClassCode {
                class: 0x03,
                subclass: 0x80,
                prog_if: 0,
            },
            subsystem_vendor: 0x1af4,
            subsystem: 0x1100,
        });
        config.set_bar32(0, vram_bar, VRAM_SIZE)?;
        config.set_prefetchable(0);
        config.set_bar32(2, mmio_bar, MMIO_SIZE)?;
        Ok(Self {
            initial: config.clone(),
            config,
            dispi,
            fb,
        })
    }

    /// Keeps the video memory slot where BAR 0 is now (or unmapped while decoding is off).
    fn sync_vram(&mut self) {
        let want = self.config.bar32(0);
        match self.fb.map_at(want) {
            Ok(true) => {
                tracing::debug!(at = ?want.map(|a| format!("{a:#x}")), "display: video memory moved")
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "display: cannot map video memory"),
        }
    }

    fn register_offset(&self, addr: u64, len: usize) -> Option<u64> {
        let base = self.config.bar32(2)?;
        let off = addr.checked_sub(base)?;
        (off + len as u64 <= u64::from(MMIO_SIZE)).then_some(off)
    }
}

impl PciFunction for BochsDisplay {
    fn config_read(&mut self, reg: usize) -> u32 {
        self.config.read(reg)
    }

    fn config_write(&mut self, reg: usize, offset: usize, data: &[u8]) {
        self.config.write(reg, offset, data);
        if reg == REG_COMMAND || reg == REG_BAR0 {
            self.sync_vram();
        }
    }

    fn reset(&mut self) {
        self.config = self.initial.clone();
        lock(&self.dispi).reset();
        self.sync_vram();
    }

    fn mmio_read(&mut self, addr: u64, data: &mut [u8]) -> bool {
        let Some(off) = self.register_offset(addr, data.len()) else {
            return false;
        };
        let value: u32 = match off {
            MMIO_DISPI..MMIO_DISPI_END if data.len() == 2 && off % 2 == 0 => {
                u32::from(lock(&self.dispi).read(((off - MMIO_DISPI) / 2) as u16))
            }
            MMIO_QEXT_SIZE if data.len() == 4 => QEXT_SIZE,
            MMIO_QEXT_ENDIAN if data.len() == 4 => QEXT_LITTLE_ENDIAN,
            // No EDID (bochs-drm then offers its default modes), VGA ports read as zero.
            _ => 0,
        };
        let bytes = value.to_le_bytes();
        let n = data.len().min(4);
        data[..n].copy_from_slice(&bytes[..n]);
        data[n..].fill(0);
        true
    }

    fn mmio_write(&mut self, addr: u64, data: &[u8]) -> bool {
        let Some(off) = self.register_offset(addr, data.len()) else {
            return false;
        };
        if (MMIO_DISPI..MMIO_DISPI_END).contains(&off) && data.len() == 2 && off % 2 == 0 {
            let value = u16::from_le_bytes([data[0], data[1]]);
            let clear = lock(&self.dispi).write(((off - MMIO_DISPI) / 2) as u16, value);
            if clear {
                clear_vram(&self.fb);
            }
        }
        // VGA port writes (blanking) and the endianness register: accepted, nothing to do.
        true
    }
}

/// Zeroes video memory (a mode was enabled without NOCLEARMEM).
fn clear_vram(fb: &Framebuffer) {
    fb.write(0, &vec![0u8; fb.len()]);
}

/// The DISPI registers through I/O ports 0x1CE (index) and 0x1CF/0x1D0 (data).
pub struct DispiPorts {
    /// The registers.
    pub dispi: Arc<Mutex<Dispi>>,
    /// Video memory (cleared when a mode is enabled).
    pub fb: Arc<Framebuffer>,
}

impl BusDevice for DispiPorts {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let d = lock(&self.dispi);
        let v = if offset == 0 {
            d.selected()
        } else {
            d.read(d.selected())
        };
        let bytes = v.to_le_bytes();
        for (i, b) in data.iter_mut().enumerate() {
            *b = bytes.get(i).copied().unwrap_or(0);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let v = match data {
            [lo] => u16::from(*lo),
            [lo, hi, ..] => u16::from_le_bytes([*lo, *hi]),
            [] => return,
        };
        let mut d = lock(&self.dispi);
        if offset == 0 {
            d.select(v);
        } else {
            let i = d.selected();
            if d.write(i, v) {
                drop(d);
                clear_vram(&self.fb);
            }
        }
    }
}
