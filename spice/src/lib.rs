//! tessera-spice: a VM's display and input over SPICE, through libspice-server
//! (`spice-server-sys`, bindgen bindings checked in) and this safe wrapper. All `unsafe` of
//! the SPICE path lives here, each block with its SAFETY reason; callbacks from C catch
//! panics ([`core`]), so nothing unwinds across the FFI boundary.
//!
//! - [`core`]: the event loop libspice-server's main side runs on (timers, fd watches);
//! - [`display`]: the QXL interface fed from a plain framebuffer: primary surface, one
//!   DRAW_COPY per dirty rectangle, resources released;
//! - [`input`]: keyboard (PC set-1 scancodes), relative mouse and absolute tablet;
//! - [`agent`]: a stand-in vdagent that lets clients send resolution changes;
//! - [`server`]: configuration, start-up, modes, updates, one-time tickets, TLS;
//! - [`log`]: libspice-server's log into `tracing`, refused client links counted.

pub mod agent;
pub mod core;
pub mod display;
pub mod input;
pub mod log;
pub mod server;

pub use display::Rect;
pub use log::refused_links;
pub use server::{Compression, Config, Server, TlsFiles};

/// What a client does, as the VMM receives it. Every method has a do-nothing default.
/// Called from libspice-server's threads: keep them short.
pub trait ClientEvents: Send + Sync + 'static {
    /// A PC scancode-set-1 byte (0xe0 prefixes arrive as their own byte; bit 7: release).
    fn key(&self, _scancode: u8) {}
    /// The keyboard LEDs to show the client (bit 0 scroll, 1 num, 2 caps lock).
    fn keyboard_leds(&self) -> u8 {
        0
    }
    /// Absolute pointer position in surface pixels, with the buttons held (bit 0 left,
    /// 1 middle, 2 right in SPICE's order).
    fn pointer_absolute(&self, _x: i32, _y: i32, _buttons: u32) {}
    /// Relative motion (server mouse mode), and that mouse's button changes (zero motion).
    fn pointer_relative(&self, _dx: i32, _dy: i32, _dz: i32, _buttons: u32) {}
    /// Wheel motion (positive: down).
    fn wheel(&self, _delta: i32, _buttons: u32) {}
    /// The absolute pointer's buttons changed.
    fn buttons(&self, _buttons: u32) {}
    /// The client's window asks for this resolution.
    fn resize_request(&self, _width: u32, _height: u32) {}
    /// A channel connected, authenticated or closed.
    fn channel(&self, _event: core::ChannelEvent) {}
}

/// Errors of the SPICE server.
#[derive(Debug, thiserror::Error)]
pub enum SpiceError {
    /// A bad setting.
    #[error("SPICE configuration: {0}")]
    Config(String),
    /// libspice-server refused.
    #[error("SPICE server: {0}")]
    Server(String),
    /// A display mode out of range.
    #[error("display mode {0}x{1} is out of range (1 to 4096 per side)")]
    Mode(u32, u32),
}
