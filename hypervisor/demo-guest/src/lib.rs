//! Tessera's demo desktop guest: a few KiB of freestanding C (guest/*.c, built by build.rs
//! with the host's gcc) that tessera-vmm boots like a kernel (`--kernel demo-guest.elf`). It
//! needs no operating system and no disk, so it runs at full speed even where KVM is
//! software-assisted (PVM): the all-in-one demo uses it there, and the display tests use it as
//! a guest whose picture is known.
//!
//! It programs the bochs display, paints a title bar with the desktop's name (`name=` on its
//! command line) and a clock (CMOS RTC), a notes window that shows what is typed (i8042), and
//! the pointer (virtio tablet, or the PS/2 mouse). It writes typed characters, `click X Y`
//! lines and `[ctrl-alt-del]` (for that chord, which a desktop OS would act on) to the serial
//! console. A byte it receives on its serial port repaints a probe square in that byte's
//! colour ([`probe_color`]) and is echoed: the stimulus of the display latency benchmark.

pub mod layout;

/// The guest image: an ELF64 file loaded at 1 MiB.
pub const ELF: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/demo-guest.elf"));

/// The colour (0x00RRGGBB) the guest paints its probe square (`layout::PROBE_SIZE` pixels at
/// the bottom-right corner) when it receives `byte` on its serial port; it then echoes the
/// byte. Keep in step with probe_color() in guest/demo.c.
pub fn probe_color(byte: u8) -> u32 {
    u32::from(byte) << 16 | u32::from(255 - byte) << 8 | 0x40
}

/// `text` as the guest draws it, `fg` on `bg` (0x00RRGGBB): row-major pixels, width, height.
/// Tests compare the guest's screen with this.
pub fn render_text(text: &str, fg: u32, bg: u32) -> (Vec<u32>, usize, usize) {
    let scale = layout::FONT_SCALE as usize;
    let cell = 8 * scale;
    let (w, h) = (cell * text.chars().count(), cell);
    let mut pixels = vec![bg; w * h];
    for (i, c) in text.chars().enumerate() {
        let glyph = font8x8::legacy::BASIC_LEGACY[(c as usize) & 0x7f];
        for y in 0..h {
            for x in 0..cell {
                if glyph[y / scale] >> (x / scale) & 1 == 1 {
                    pixels[y * w + i * cell + x] = fg;
                }
            }
        }
    }
    (pixels, w, h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_image_is_an_elf_loaded_at_one_mib() {
        assert_eq!(&ELF[..4], b"\x7fELF");
        assert_eq!(ELF[4], 2, "ELF64");
        let entry = u64::from_le_bytes(ELF[24..32].try_into().unwrap());
        assert_eq!(entry, 0x10_0000);
        assert!(ELF.len() < 64 * 1024, "{} bytes", ELF.len());
    }

    #[test]
    fn text_renders_in_scaled_cells() {
        let (px, w, h) = render_text("A ", 1, 0);
        assert_eq!((w, h), (32, 16));
        assert!(px[..].contains(&1));
        // The space is blank.
        assert!((0..h).all(|y| px[y * w + 16..y * w + 32].iter().all(|&p| p == 0)));
    }
}
