//! The refresh loop: at most `fps` times a second it asks the VMM for the guest's mode and
//! KVM's dirty log of video memory, turns the written pages into rectangles of the visible
//! mode, copies them out of the shared video memory and hands them to the SPICE server; a new
//! mode (size, stride or panning) redraws everything. With no client connected it looks once
//! a second (as QEMU slows its refresh), and a client that connects gets a full frame: a host
//! of idle desktops costs next to nothing.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tessera_display_proto::{Event, Frame, Link, LinkError, Mode};
use tessera_spice::{Rect, Server};

use crate::forward::{Clients, Forward};
use crate::video::Video;

/// Bytes per dirty-log bit.
pub const PAGE: usize = 4096;

/// Rows `[start, end)` of `mode` that the dirty pages in `bitmap` touch, merged into runs.
pub fn dirty_rows(bitmap: &[u64], mode: &Mode) -> Vec<(u32, u32)> {
    let first = mode.offset;
    let last = first + (mode.height as usize - 1) * mode.stride + mode.width as usize * 4;
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for (w, word) in bitmap.iter().enumerate() {
        let mut bits = *word;
        while bits != 0 {
            let page = w * 64 + bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let (start, end) = (page * PAGE, (page + 1) * PAGE);
            if end <= first || start >= last {
                continue;
            }
            let y0 = ((start.max(first) - first) / mode.stride) as u32;
            let y1 = (((end.min(last) - first - 1) / mode.stride) as u32 + 1).min(mode.height);
            match runs.last_mut() {
                Some(r) if y0 <= r.1 => r.1 = r.1.max(y1),
                _ => runs.push((y0, y1)),
            }
        }
    }
    runs
}

/// What the loop works with.
pub struct Refresh {
    /// The event link: frames are asked for and answered on it.
    pub link: Arc<Link>,
    /// Video memory.
    pub video: Arc<Video>,
    /// The SPICE server.
    pub server: Arc<Mutex<Server>>,
    /// Frame rate cap.
    pub fps: u32,
    /// Clients connected now (their main channels), signalled when it changes.
    pub clients: Arc<Clients>,
    /// Client input, whose counters are reported with each change.
    pub forward: Arc<Forward>,
}

/// The refresh interval without clients.
pub const IDLE_PERIOD: Duration = Duration::from_secs(1);

impl Refresh {
    /// Runs until the VMM closes the link.
    pub fn run(self) -> Result<(), LinkError> {
        let period = Duration::from_secs(1) / self.fps.max(1);
        let mut shown: Option<Mode> = None;
        let mut pixels: Vec<u8> = Vec::new();
        let mut had_clients = false;
        let mut reported = (u32::MAX, u64::MAX);
        loop {
            let started = Instant::now();
            let clients = self.clients.count() > 0;
            if clients && !had_clients {
                // The server's canvas may be a second old: start the client from a full frame.
                shown = None;
            }
            had_clients = clients;
            // Refused links are counted by the server's log hook, not a channel event.
            let now = (self.forward.input_clients(), tessera_spice::refused_links());
            if now != reported {
                self.link.send(&Event::Status {
                    input_clients: now.0,
                    refused_links: now.1,
                })?;
                reported = now;
            }
            self.link.send(&Event::FrameRequest)?;
            let frame: Frame = self.link.recv()?;
            self.frame(frame, &mut shown, &mut pixels);
            if clients {
                if let Some(rest) = period.checked_sub(started.elapsed()) {
                    std::thread::sleep(rest);
                }
            } else {
                // Asleep until a client arrives, looking once a second meanwhile.
                self.clients.wait_for_one(IDLE_PERIOD);
            }
        }
    }

    fn frame(&self, frame: Frame, shown: &mut Option<Mode>, pixels: &mut Vec<u8>) {
        let Frame { mode, dirty, moved } = frame;
        let Some(mode) = mode else {
            *shown = None;
            return;
        };
        if !mode.fits(self.video.len()) {
            tracing::warn!(?mode, "display: a mode outside video memory; not shown");
            *shown = None;
            return;
        }
        // A new mode, moved video memory or a lost dirty log: everything, uncompared.
        let (rows, full) = match (&dirty, *shown == Some(mode) && !moved) {
            (Some(bitmap), true) => (dirty_rows(bitmap, &mode), false),
            _ => (vec![(0, mode.height)], true),
        };
        let mut server = self.server.lock().unwrap_or_else(|p| p.into_inner());
        if shown.is_none_or(|s| (s.width, s.height) != (mode.width, mode.height))
            && server.mode() != Some((mode.width, mode.height))
        {
            if let Err(e) = server.set_mode(mode.width, mode.height) {
                tracing::warn!(error = %e, "display: cannot switch the SPICE surface");
                return;
            }
        }
        *shown = Some(mode);
        if rows.is_empty() {
            return;
        }
        let line = mode.width as usize * 4;
        pixels.resize(line * mode.height as usize, 0);
        let mut changed = Vec::with_capacity(rows.len());
        let mut row = vec![0u8; line];
        for (y0, y1) in rows {
            for y in y0..y1 {
                let at = y as usize * line;
                self.video
                    .read(mode.offset + y as usize * mode.stride, &mut row);
                let old = &mut pixels[at..at + line];
                let blocks = if full {
                    u64::MAX
                } else {
                    changed_blocks(old, &row)
                };
                if blocks != 0 {
                    old.copy_from_slice(&row);
                    changed.push((y, blocks));
                }
            }
        }
        let rects = changed_rects(&changed, mode.width);
        if !rects.is_empty() {
            server.update(pixels, line, &rects);
        }
    }
}

/// Width in pixels of the column blocks a row is compared in: a written page often holds
/// pixels the guest rewrote unchanged (a console repaints whole lines), and sending only the
/// blocks that differ keeps a blinking cursor or a typed letter from costing a full-width strip.
pub const BLOCK: usize = 64;

/// Which `BLOCK`-pixel columns of a row differ between `old` and `new` (bit i: block i; the
/// last bit also stands for any blocks past 63, which no supported width reaches).
pub fn changed_blocks(old: &[u8], new: &[u8]) -> u64 {
    let mut mask = 0u64;
    for (i, (a, b)) in old.chunks(BLOCK * 4).zip(new.chunks(BLOCK * 4)).enumerate() {
        if a != b {
            mask |= 1 << i.min(63);
        }
    }
    mask
}

/// Rectangles covering the changed blocks of `rows` (ascending `(y, mask)`): consecutive rows
/// form a band, and each run of adjacent blocks changed anywhere in the band is one rectangle.
pub fn changed_rects(rows: &[(u32, u64)], width: u32) -> Vec<Rect> {
    let mut rects = Vec::new();
    let mut i = 0;
    while i < rows.len() {
        let (y0, mut mask) = rows[i];
        let mut y1 = y0 + 1;
        i += 1;
        while i < rows.len() && rows[i].0 == y1 {
            mask |= rows[i].1;
            y1 += 1;
            i += 1;
        }
        while mask != 0 {
            let first = mask.trailing_zeros();
            let run = (mask >> first).trailing_ones();
            mask &= !(((1u128 << (first + run)) - 1) as u64);
            let x = first * BLOCK as u32;
            if x >= width {
                break;
            }
            let end = if first + run >= 64 {
                width
            } else {
                ((first + run) * BLOCK as u32).min(width)
            };
            rects.push(Rect {
                x,
                y: y0,
                width: end - x,
                height: y1 - y0,
            });
        }
    }
    rects
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(w: u32, h: u32) -> Mode {
        Mode {
            width: w,
            height: h,
            stride: w as usize * 4,
            offset: 0,
        }
    }

    #[test]
    fn dirty_pages_become_row_runs() {
        // 1024 px lines are exactly one page each.
        let m = mode(1024, 768);
        let mut bitmap = vec![0u64; 64];
        bitmap[0] = 0b1011; // pages 0, 1, 3
        bitmap[1] = 1 << 63; // page 127
        assert_eq!(dirty_rows(&bitmap, &m), [(0, 2), (3, 4), (127, 128)]);
        // 640 px lines (2560 bytes): page 1 covers bytes 4096..8192 = rows 1..=3.
        let m = mode(640, 480);
        let mut bitmap = vec![0u64; 64];
        bitmap[0] = 0b10;
        assert_eq!(dirty_rows(&bitmap, &m), [(1, 4)]);
        // Pages outside the visible window are ignored; a panned window counts from its
        // offset.
        let mut m = mode(1024, 768);
        m.offset = 768 * 4096;
        let mut bitmap = vec![0u64; 64];
        bitmap[0] = 1;
        assert!(dirty_rows(&bitmap, &m).is_empty());
        bitmap[12] = 1; // page 768: the first visible row
        assert_eq!(dirty_rows(&bitmap, &m), [(0, 1)]);
    }

    fn rect(x: u32, y: u32, width: u32, height: u32) -> Rect {
        Rect {
            x,
            y,
            width,
            height,
        }
    }

    #[test]
    fn only_blocks_that_changed_are_sent() {
        let old = vec![0u8; 200 * 4];
        let mut new = old.clone();
        assert_eq!(changed_blocks(&old, &new), 0);
        new[70 * 4] = 1; // block 1
        new[199 * 4 + 3] = 1; // block 3 (the partial last one)
        assert_eq!(changed_blocks(&old, &new), 0b1010);

        // Rows 5-6 change blocks 1 and 3, row 7 block 2: one band, blocks 1-3 joined.
        let rows = [(5, 0b1010), (6, 0b10), (7, 0b100), (20, u64::MAX)];
        assert_eq!(
            changed_rects(&rows, 200),
            [rect(64, 5, 136, 3), rect(0, 20, 200, 1)]
        );
        // A full row of a 2560-pixel mode (40 blocks) and the catch-all bit 63.
        assert_eq!(changed_rects(&[(0, u64::MAX)], 2560), [rect(0, 0, 2560, 1)]);
        assert_eq!(
            changed_rects(&[(0, 1 << 63)], 8192),
            [rect(4032, 0, 4160, 1)]
        );
    }
}
