//! The Bochs VBE "DISPI" registers: how a guest picks a resolution on the bochs display (and
//! QEMU's std VGA): index/data at I/O ports 0x1CE/0x1CF, or 16-bit registers at offset 0x500
//! of the adapter's MMIO BAR. The registers are kept as the guest wrote them; [`Dispi::mode`]
//! says whether they describe something we can show.

use std::time::{Duration, Instant};

use crate::rate_limit::{RateLimiter, Verdict};

/// The ID the adapter reports (the newest Bochs VBE revision).
pub const DISPI_ID: u16 = 0xb0c5;
/// Largest resolution offered (and accepted).
pub const MAX_WIDTH: u16 = 2560;
/// Largest resolution offered (and accepted).
pub const MAX_HEIGHT: u16 = 1600;

/// Register indices.
pub mod index {
    /// Interface ID.
    pub const ID: u16 = 0;
    /// Width.
    pub const XRES: u16 = 1;
    /// Height.
    pub const YRES: u16 = 2;
    /// Bits per pixel.
    pub const BPP: u16 = 3;
    /// Enable bits.
    pub const ENABLE: u16 = 4;
    /// Banked window (unused with a linear framebuffer).
    pub const BANK: u16 = 5;
    /// Line length in pixels.
    pub const VIRT_WIDTH: u16 = 6;
    /// Lines of video memory.
    pub const VIRT_HEIGHT: u16 = 7;
    /// First visible column.
    pub const X_OFFSET: u16 = 8;
    /// First visible line.
    pub const Y_OFFSET: u16 = 9;
    /// Video memory in 64 KiB units (read-only).
    pub const VIDEO_MEMORY_64K: u16 = 10;
    /// Registers.
    pub const COUNT: usize = 11;
}

/// ENABLE: the mode is on.
pub const ENABLED: u16 = 0x01;
/// ENABLE: reads of XRES/YRES/BPP return the maxima.
pub const GETCAPS: u16 = 0x02;
/// ENABLE: linear framebuffer.
pub const LFB_ENABLED: u16 = 0x40;
/// ENABLE: do not clear video memory when enabling.
pub const NOCLEARMEM: u16 = 0x80;

/// A mode we can show (defined with the display process's messages, which carry it).
pub use tessera_display_proto::Mode;

/// The register file.
#[derive(Debug)]
pub struct Dispi {
    regs: [u16; index::COUNT],
    index: u16,
    vram: usize,
    /// Bumped on every register write, so the display notices changes cheaply.
    generation: u64,
    complaints: RateLimiter,
}

impl Dispi {
    /// Back to the state after power-on: display off (the machine's reset). The generation
    /// moves on, so the display notices.
    pub fn reset(&mut self) {
        let generation = self.generation.wrapping_add(1);
        *self = Self::new(self.vram);
        self.generation = generation;
    }

    /// Registers for `vram` bytes of video memory, display off.
    pub fn new(vram: usize) -> Self {
        let mut regs = [0u16; index::COUNT];
        regs[index::ID as usize] = DISPI_ID;
        regs[index::BPP as usize] = 32;
        Self {
            regs,
            index: 0,
            vram,
            generation: 0,
            complaints: RateLimiter::new(5, Duration::from_secs(10)),
        }
    }

    /// Selects a register (the index port).
    pub fn select(&mut self, index: u16) {
        self.index = index;
    }

    /// The selected register.
    pub fn selected(&self) -> u16 {
        self.index
    }

    /// Reads register `i`.
    pub fn read(&self, i: u16) -> u16 {
        let caps = self.regs[index::ENABLE as usize] & GETCAPS != 0;
        match i {
            index::XRES if caps => MAX_WIDTH,
            index::YRES if caps => MAX_HEIGHT,
            index::BPP if caps => 32,
            index::VIDEO_MEMORY_64K => (self.vram / 65536).min(usize::from(u16::MAX)) as u16,
            i if usize::from(i) < index::COUNT => self.regs[usize::from(i)],
            _ => 0,
        }
    }

    /// Writes register `i` (ID and the memory size are read-only; unknown indices ignored).
    /// Returns true when the write enabled a mode that wants video memory cleared (no
    /// NOCLEARMEM): the caller clears it before the guest's next instruction, as hardware
    /// would.
    #[must_use]
    pub fn write(&mut self, i: u16, value: u16) -> bool {
        let mut clear = false;
        match i {
            index::ID | index::VIDEO_MEMORY_64K => return false,
            index::ENABLE => {
                let was = self.regs[index::ENABLE as usize] & ENABLED != 0;
                if value & ENABLED != 0 && !was {
                    // As Bochs and QEMU do: a fresh mode starts unpanned, with lines of its
                    // own width.
                    self.regs[index::VIRT_WIDTH as usize] = self.regs[index::XRES as usize];
                    self.regs[index::X_OFFSET as usize] = 0;
                    self.regs[index::Y_OFFSET as usize] = 0;
                    clear = value & NOCLEARMEM == 0;
                }
            }
            i if usize::from(i) < index::COUNT => {}
            _ => return false,
        }
        self.regs[usize::from(i)] = value;
        self.generation += 1;
        // Checked as the guest writes, so that a bad mode is reported even if it is gone
        // before the display thread looks (mode() logs it).
        let _ = self.mode();
        clear
    }

    /// Changes since creation (compare to notice a new mode or offset).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The mode the registers describe, or None while the display is off or the registers
    /// are absurd (logged, rate-limited; the VM keeps running).
    pub fn mode(&mut self) -> Option<Mode> {
        let r = |i: u16| u32::from(self.regs[usize::from(i)]);
        if r(index::ENABLE) & u32::from(ENABLED) == 0 {
            return None;
        }
        let (w, h, bpp) = (r(index::XRES), r(index::YRES), r(index::BPP));
        let stride = r(index::VIRT_WIDTH).max(w) as usize * 4;
        let offset = r(index::Y_OFFSET) as usize * stride + r(index::X_OFFSET) as usize * 4;
        let fits = offset
            .checked_add((h as usize).saturating_sub(1) * stride + w as usize * 4)
            .is_some_and(|end| end <= self.vram);
        let ok = bpp == 32
            && (1..=u32::from(MAX_WIDTH)).contains(&w)
            && (1..=u32::from(MAX_HEIGHT)).contains(&h)
            && fits;
        if !ok {
            if let Verdict::Log { suppressed } = self.complaints.check(Instant::now()) {
                tracing::warn!(
                    width = w,
                    height = h,
                    bpp,
                    stride,
                    offset,
                    suppressed,
                    "display: the guest set a mode this adapter cannot show (32 bpp, up to \
                     2560x1600, inside video memory); the screen stays dark"
                );
            }
            return None;
        }
        Some(Mode {
            width: w,
            height: h,
            stride,
            offset,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sets a mode as Linux does; whether video memory is to be cleared.
    fn set(d: &mut Dispi, w: u16, h: u16) -> bool {
        let _ = d.write(index::ENABLE, 0);
        let _ = d.write(index::BPP, 32);
        let _ = d.write(index::XRES, w);
        let _ = d.write(index::YRES, h);
        d.write(index::ENABLE, ENABLED | LFB_ENABLED)
    }

    #[test]
    fn linux_style_mode_set() {
        let mut d = Dispi::new(16 << 20);
        assert_eq!(d.read(index::ID), DISPI_ID);
        assert_eq!(d.read(index::VIDEO_MEMORY_64K), 256);
        assert_eq!(d.mode(), None, "off at reset");
        assert!(set(&mut d, 1024, 768), "enabling clears video memory");
        assert_eq!(
            d.mode(),
            Some(Mode {
                width: 1024,
                height: 768,
                stride: 4096,
                offset: 0
            })
        );
        assert!(!d.write(index::ENABLE, ENABLED | LFB_ENABLED | NOCLEARMEM));
        // Page flipping: the second half of video memory.
        let _ = d.write(index::Y_OFFSET, 768);
        assert_eq!(d.mode().unwrap().offset, 768 * 4096);
        let _ = d.write(index::ENABLE, GETCAPS);
        assert_eq!(
            (d.read(index::XRES), d.read(index::YRES)),
            (MAX_WIDTH, MAX_HEIGHT)
        );
    }

    #[test]
    fn absurd_modes_are_refused_not_fatal() {
        let mut d = Dispi::new(16 << 20);
        for (w, h) in [(0, 600), (4096, 600), (800, 0), (2561, 1600), (2560, 1601)] {
            let _ = set(&mut d, w, h);
            assert_eq!(d.mode(), None, "{w}x{h}");
        }
        let _ = set(&mut d, 2560, 1600);
        assert!(d.mode().is_some(), "the largest mode fits 16 MiB");
        let _ = d.write(index::BPP, 16);
        assert_eq!(d.mode(), None, "only 32 bpp");
        let _ = d.write(index::BPP, 32);
        let _ = d.write(index::Y_OFFSET, u16::MAX);
        let _ = d.write(index::X_OFFSET, u16::MAX);
        let _ = d.write(index::VIRT_WIDTH, u16::MAX);
        assert_eq!(d.mode(), None, "outside video memory");
        let g = d.generation();
        let _ = d.write(index::ID, 0);
        let _ = d.write(index::VIDEO_MEMORY_64K, 1);
        let _ = d.write(0x7fff, 1);
        assert_eq!(d.read(index::ID), DISPI_ID);
        assert_eq!(d.read(0x7fff), 0);
        assert_eq!(
            d.generation(),
            g,
            "read-only and unknown registers change nothing"
        );
    }
}
