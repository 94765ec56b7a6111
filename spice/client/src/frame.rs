//! The client's copy of the guest's primary surface, updated per dirty rectangle.

/// A rectangle of the guest's screen, in pixels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

impl Rect {
    /// This rectangle cut to a `width` x `height` surface, from signed server values
    /// (spice-client-glib passes them as gint); `None` when nothing is left.
    pub fn clipped(x: i32, y: i32, w: i32, h: i32, width: u32, height: u32) -> Option<Rect> {
        let (x0, y0) = (i64::from(x).max(0), i64::from(y).max(0));
        let x1 = (i64::from(x) + i64::from(w)).min(i64::from(width));
        let y1 = (i64::from(y) + i64::from(h)).min(i64::from(height));
        if x1 <= x0 || y1 <= y0 {
            return None;
        }
        // Every value is within 0..=u32::MAX here: clipped to the surface's u32 size.
        Some(Rect {
            x: x0 as u32,
            y: y0 as u32,
            width: (x1 - x0) as u32,
            height: (y1 - y0) as u32,
        })
    }
}

/// The pixel layouts a SPICE primary surface comes in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PixelFormat {
    /// 32 bits, little-endian B, G, R, unused (also ARGB: alpha is ignored on a desktop).
    Xrgb8888,
    /// 16 bits, 5-6-5.
    Rgb565,
    /// 16 bits, 1-5-5-5.
    Xrgb1555,
}

impl PixelFormat {
    fn bytes(self) -> usize {
        match self {
            PixelFormat::Xrgb8888 => 4,
            PixelFormat::Rgb565 | PixelFormat::Xrgb1555 => 2,
        }
    }

    fn to_rgb(self, p: &[u8]) -> u32 {
        match self {
            PixelFormat::Xrgb8888 => u32::from_le_bytes([p[0], p[1], p[2], 0]),
            PixelFormat::Rgb565 => {
                let v = u32::from(u16::from_le_bytes([p[0], p[1]]));
                expand(v >> 11, 5) << 16 | expand((v >> 5) & 0x3f, 6) << 8 | expand(v & 0x1f, 5)
            }
            PixelFormat::Xrgb1555 => {
                let v = u32::from(u16::from_le_bytes([p[0], p[1]]));
                expand((v >> 10) & 0x1f, 5) << 16
                    | expand((v >> 5) & 0x1f, 5) << 8
                    | expand(v & 0x1f, 5)
            }
        }
    }
}

/// A `bits`-wide channel value scaled to 8 bits, so that full intensity stays full.
fn expand(v: u32, bits: u32) -> u32 {
    (v << (8 - bits)) | (v >> (2 * bits - 8))
}

/// The guest's screen as the client last received it: `0x00RRGGBB` per pixel, row by row.
#[derive(Clone, Debug, Default)]
pub struct Frame {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<u32>,
    /// Counts the updates applied, so a consumer can tell whether anything changed.
    pub updates: u64,
}

impl Frame {
    /// Starts a new surface of this size, black.
    pub fn reset(&mut self, width: u32, height: u32) {
        self.width = width;
        self.height = height;
        self.pixels = vec![0; width as usize * height as usize];
        self.updates += 1;
    }

    /// Copies `rect` from a server surface (`src`, `stride` bytes a row, `format`) of this
    /// frame's size. Rows or pixels `src` is too short for are left as they were.
    pub fn copy_from(&mut self, src: &[u8], stride: usize, format: PixelFormat, rect: Rect) {
        let bpp = format.bytes();
        let width = self.width as usize;
        for row in rect.y as usize..(rect.y + rect.height) as usize {
            let start = row * stride + rect.x as usize * bpp;
            let Some(line) = src.get(start..start + rect.width as usize * bpp) else {
                break;
            };
            let out = &mut self.pixels[row * width + rect.x as usize..][..rect.width as usize];
            for (o, p) in out.iter_mut().zip(line.chunks_exact(bpp)) {
                *o = format.to_rgb(p);
            }
        }
        self.updates += 1;
    }

    /// The pixel at (x, y), or `None` outside the frame.
    pub fn pixel(&self, x: u32, y: u32) -> Option<u32> {
        (x < self.width && y < self.height)
            .then(|| self.pixels[y as usize * self.width as usize + x as usize])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rectangles_are_clipped_to_the_surface() {
        assert_eq!(
            Rect::clipped(-10, 5, 30, 10, 100, 100),
            Some(Rect {
                x: 0,
                y: 5,
                width: 20,
                height: 10
            })
        );
        assert_eq!(
            Rect::clipped(90, 95, 30, 10, 100, 100),
            Some(Rect {
                x: 90,
                y: 95,
                width: 10,
                height: 5
            })
        );
        assert_eq!(Rect::clipped(100, 0, 5, 5, 100, 100), None);
        assert_eq!(Rect::clipped(0, 0, -5, 5, 100, 100), None);
        assert_eq!(
            Rect::clipped(i32::MAX, i32::MAX, i32::MAX, i32::MAX, 100, 100),
            None
        );
    }

    #[test]
    fn a_dirty_rectangle_is_copied_and_nothing_else() {
        let (w, h) = (4u32, 3u32);
        let stride = 20; // wider than 4 pixels: rows are padded
        let mut src = vec![0u8; stride * h as usize];
        for y in 0..h as usize {
            for x in 0..w as usize {
                let v = (y * 16 + x) as u8;
                src[y * stride + x * 4..][..4].copy_from_slice(&[v, v + 1, v + 2, 0xff]);
            }
        }
        let mut f = Frame::default();
        f.reset(w, h);
        f.copy_from(
            &src,
            stride,
            PixelFormat::Xrgb8888,
            Rect {
                x: 1,
                y: 1,
                width: 2,
                height: 2,
            },
        );
        assert_eq!(f.pixel(0, 0), Some(0));
        assert_eq!(f.pixel(1, 1), Some(0x00131211));
        assert_eq!(f.pixel(2, 2), Some(0x00242322));
        assert_eq!(f.pixel(3, 2), Some(0));
        assert_eq!(f.pixel(4, 0), None);
    }

    #[test]
    fn a_short_source_leaves_the_rest_unchanged() {
        let mut f = Frame::default();
        f.reset(2, 2);
        f.copy_from(
            &[1, 2, 3, 0],
            8,
            PixelFormat::Xrgb8888,
            Rect {
                x: 0,
                y: 0,
                width: 2,
                height: 2,
            },
        );
        assert_eq!(f.pixels, vec![0, 0, 0, 0]);
    }

    #[test]
    fn sixteen_bit_pixels_reach_full_intensity() {
        assert_eq!(
            PixelFormat::Rgb565.to_rgb(&0xffffu16.to_le_bytes()),
            0x00ffffff
        );
        assert_eq!(
            PixelFormat::Rgb565.to_rgb(&0xf800u16.to_le_bytes()),
            0x00ff0000
        );
        assert_eq!(
            PixelFormat::Xrgb1555.to_rgb(&0x03e0u16.to_le_bytes()),
            0x0000ff00
        );
    }
}
