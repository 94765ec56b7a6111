//! What the SPICE tests share: a recorder of client events and a test picture. The X side
//! (Xvfb, remote-viewer, screenshots) is `tessera_e2e::x11`.

#![allow(dead_code)]

use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use tessera_e2e::x11::*;
use tessera_spice::core::{ChannelEvent, ChannelEventKind};
use tessera_spice::ClientEvents;

pub const W: u32 = 640;
pub const H: u32 = 400;

#[derive(Default)]
pub struct Recorder {
    pub keys: Mutex<Vec<u8>>,
    pub events: Mutex<Vec<ChannelEvent>>,
    pub resize: Mutex<Option<(u32, u32)>>,
}

impl ClientEvents for Recorder {
    fn key(&self, scancode: u8) {
        self.keys.lock().unwrap().push(scancode);
    }
    fn resize_request(&self, w: u32, h: u32) {
        *self.resize.lock().unwrap() = Some((w, h));
    }
    fn channel(&self, e: ChannelEvent) {
        self.events.lock().unwrap().push(e);
    }
}

impl Recorder {
    /// Main channels that authenticated so far.
    pub fn logins(&self) -> usize {
        self.channels(1)
    }

    /// Channels of `channel_type` (1: main, 2: display, 4: cursor) that came up so far.
    pub fn channels(&self, channel_type: i32) -> usize {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.channel_type == channel_type && e.kind == ChannelEventKind::Initialized)
            .count()
    }

    /// Waits until `n` channels of `channel_type` came up. A client that goes while the
    /// display worker is still setting up one of its channels (display or cursor) can crash
    /// libspice-server 0.15.1's worker thread (a NULL dereference handling the connection of a
    /// client already gone: seen about once in 20 runs of the TLS test), so tests that end a
    /// client let those channels come up first.
    pub fn wait_channels(&self, channel_type: i32, n: usize, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if self.channels(channel_type) >= n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    pub fn wait_logins(&self, n: usize, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if self.logins() >= n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }
}

/// A `w` x `h` picture in which every pixel differs from its neighbours, as 0x00RRGGBB and
/// as the framebuffer bytes (B, G, R, X).
pub fn picture(w: u32, h: u32) -> (Vec<u32>, Vec<u8>) {
    let mut px = Vec::with_capacity((w * h) as usize);
    for y in 0..h {
        for x in 0..w {
            let band = if (40..80).contains(&y) { 0xff } else { 0x20 };
            px.push(((x & 0xff) << 16) | ((y & 0xff) << 8) | (band ^ ((x >> 8) << 6)));
        }
    }
    let bytes = px.iter().flat_map(|p| p.to_le_bytes()).collect();
    (px, bytes)
}

/// Waits until the server has refused a client link since `before` (its count of refused
/// tickets grew): the refusal seen happen, not inferred from a client that stayed out.
pub fn wait_refused(before: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while tessera_spice::refused_links() <= before {
        assert!(
            Instant::now() < deadline,
            "{what}: the server never refused the client's link"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
