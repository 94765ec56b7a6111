//! The display thread: at most `fps` times a second it reads KVM's dirty log of video memory,
//! turns the written pages into rectangles of the visible mode, copies them out and hands them
//! to the SPICE server; a new mode (size, stride or panning) redraws everything. With no
//! client connected it looks once a second (as QEMU slows its refresh), and a client that
//! connects gets a full frame: a host of idle desktops costs next to nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tessera_spice::{Rect, Server};

use super::dispi::{Dispi, Mode};
use crate::devices::bus::lock;
use crate::vstate::framebuffer::{Framebuffer, PAGE};

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

/// What the thread shares with the VMM.
pub struct Refresh {
    /// The adapter's registers.
    pub dispi: Arc<Mutex<Dispi>>,
    /// Video memory.
    pub fb: Arc<Framebuffer>,
    /// The SPICE server.
    pub server: Arc<Mutex<Server>>,
    /// Frame rate cap.
    pub fps: u32,
    /// Set to end the thread.
    pub stop: Arc<AtomicBool>,
    /// Clients connected now (their main channels), signalled when it changes.
    pub clients: Arc<Clients>,
}

/// The connected clients (by connection), with a signal for the idle display thread.
#[derive(Default)]
pub struct Clients {
    connected: Mutex<std::collections::BTreeSet<i32>>,
    changed: Condvar,
}

impl Clients {
    /// Connection `id`'s main channel authenticated (true) or closed (false); a connection
    /// that never authenticated (a wrong ticket) changes nothing when it closes.
    pub fn update(&self, id: i32, arrived: bool) {
        let mut c = lock(&self.connected);
        if arrived {
            c.insert(id);
        } else {
            c.remove(&id);
        }
        self.changed.notify_all();
    }

    /// How many are connected.
    pub fn count(&self) -> usize {
        lock(&self.connected).len()
    }

    /// Sleeps up to `timeout`, waking early when a client arrives.
    fn wait_for_one(&self, timeout: Duration) {
        let c = lock(&self.connected);
        let _ = self
            .changed
            .wait_timeout_while(c, timeout, |c| c.is_empty())
            .map(drop);
    }
}

/// The refresh interval without clients.
pub const IDLE_PERIOD: Duration = Duration::from_secs(1);

impl Refresh {
    /// Runs until `stop`.
    pub fn run(self) {
        let period = Duration::from_secs(1) / self.fps.max(1);
        let mut shown: Option<Mode> = None;
        let mut pixels: Vec<u8> = Vec::new();
        let mut mapped_at = None;
        let mut had_clients = false;
        while !self.stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            let clients = self.clients.count() > 0;
            if clients && !had_clients {
                // The server's canvas may be a second old: start the client from a full frame.
                shown = None;
            }
            had_clients = clients;
            self.frame(&mut shown, &mut pixels, &mut mapped_at);
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

    fn frame(&self, shown: &mut Option<Mode>, pixels: &mut Vec<u8>, mapped_at: &mut Option<u64>) {
        let mode = lock(&self.dispi).mode();
        let dirty = match self.fb.take_dirty() {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "display: no dirty log this frame");
                None
            }
        };
        let Some(mode) = mode else {
            *shown = None;
            return;
        };
        let moved = self.fb.mapped_at() != *mapped_at;
        *mapped_at = self.fb.mapped_at();
        let rows = match (&dirty, *shown == Some(mode) && !moved) {
            (Some(bitmap), true) => dirty_rows(bitmap, &mode),
            _ => vec![(0, mode.height)],
        };
        let mut server = lock(&self.server);
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
        let mut rects = Vec::with_capacity(rows.len());
        for (y0, y1) in rows {
            for y in y0..y1 {
                let at = y as usize * line;
                self.fb.read(
                    mode.offset + y as usize * mode.stride,
                    &mut pixels[at..at + line],
                );
            }
            rects.push(Rect {
                x: 0,
                y: y0,
                width: mode.width,
                height: y1 - y0,
            });
        }
        server.update(pixels, line, &rects);
    }
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
}
