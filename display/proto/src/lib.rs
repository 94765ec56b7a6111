//! What tessera-vmm and its display process (tessera-display) say to each other.
//!
//! The display process serves one VM's screen, keyboard and mouse over SPICE. It runs apart
//! from the VMM so that nothing a client does to libspice-server (a C library parsing network
//! input) can take the guest down: when it dies, the VMM starts another.
//!
//! Two stream sockets join them, made by the VMM before it spawns the process:
//! - the **event** socket (the process's stdin): the process sends [`Event`]s (client input,
//!   status) and asks for frames ([`Event::FrameRequest`]), which the VMM answers with a
//!   [`Frame`] on the same socket;
//! - the **control** socket: the VMM sends [`Command`]s (tickets, disconnects) and the process
//!   answers each with an [`Outcome`].
//!
//! Before any message the VMM passes two descriptors over the event socket ([`send_fds`]):
//! video memory (a sealed memfd, opened read-only) and the control socket. Then it sends
//! [`Settings`]. Messages are JSON, each prefixed by its length ([`Link`]), at most
//! [`MAX_MESSAGE`] bytes: the VMM treats everything the process sends as hostile input.

pub mod link;

pub use link::{recv_fds, send_fds, Link, LinkError, MAX_MESSAGE};

use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Longest ticket (one-time password) libspice-server accepts.
pub const MAX_TICKET: usize = 60;

/// Image compression toward clients (they may ask for another per connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// Raw bitmaps.
    Off,
    /// GLZ or QUIC, by image (QEMU's default).
    AutoGlz,
    /// LZ or QUIC, by image.
    AutoLz,
    /// QUIC.
    Quic,
    /// GLZ.
    Glz,
    /// LZ.
    Lz,
    /// LZ4.
    Lz4,
}

/// A mode the guest shows: 32 bits per pixel (xRGB), the visible window inside video memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mode {
    /// Visible width.
    pub width: u32,
    /// Visible height.
    pub height: u32,
    /// Bytes per line of video memory.
    pub stride: usize,
    /// Byte offset of the visible window's first pixel.
    pub offset: usize,
}

impl Mode {
    /// Whether the whole visible window lies inside `len` bytes of video memory and has a
    /// size SPICE can show. The VMM's registers only produce such modes; the display process
    /// checks anyway before it reads.
    pub fn fits(&self, len: usize) -> bool {
        let (w, h) = (self.width as usize, self.height as usize);
        if w == 0 || h == 0 || w > 4096 || h > 4096 || self.stride < w * 4 {
            return false;
        }
        (h - 1)
            .checked_mul(self.stride)
            .and_then(|v| v.checked_add(self.offset))
            .and_then(|v| v.checked_add(w * 4))
            .is_some_and(|end| end <= len)
    }
}

/// The TLS files of the SPICE server (QEMU's x509 directory layout).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsSettings {
    /// TLS port.
    pub port: u16,
    /// CA certificate (PEM).
    pub ca: PathBuf,
    /// Server certificate (PEM).
    pub cert: PathBuf,
    /// Server key (PEM).
    pub key: PathBuf,
}

/// The first message: what the display process serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// The name clients see.
    pub name: String,
    /// Address SPICE listens on.
    pub address: IpAddr,
    /// Plain-text port.
    pub port: Option<u16>,
    /// TLS.
    pub tls: Option<TlsSettings>,
    /// Image compression.
    pub compression: Compression,
    /// Most frames per second while a client is connected.
    pub fps: u32,
    /// Bytes of video memory.
    pub video_memory: usize,
}

/// What the display process tells the VMM (event socket).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// SPICE is serving: ports bound, sandbox on.
    Ready,
    /// A PC scancode-set-1 byte (0xe0 prefixes are their own byte; bit 7: release).
    Key {
        /// The byte.
        scancode: u8,
    },
    /// Absolute pointer position in surface pixels, with the buttons held.
    Pointer {
        /// Column.
        x: i32,
        /// Row.
        y: i32,
        /// Bit 0 left, 1 middle, 2 right.
        buttons: u32,
    },
    /// Relative motion (a client without absolute pointing), with the buttons held.
    Motion {
        /// Right.
        dx: i32,
        /// Down.
        dy: i32,
        /// Bit 0 left, 1 middle, 2 right.
        buttons: u32,
    },
    /// The absolute pointer's buttons changed.
    Buttons {
        /// Bit 0 left, 1 middle, 2 right.
        buttons: u32,
    },
    /// Wheel motion (positive: down), with the buttons held.
    Wheel {
        /// Steps.
        delta: i32,
        /// Bit 0 left, 1 middle, 2 right.
        buttons: u32,
    },
    /// A client's window would like this resolution.
    Resize {
        /// Width.
        width: u32,
        /// Height.
        height: u32,
    },
    /// A client authenticated with the current ticket: it is spent (the VMM does not arm it
    /// again after a restart of the display process).
    TicketUsed,
    /// Counters changed.
    Status {
        /// Clients whose inputs channel is up.
        input_clients: u32,
        /// Client links refused for their ticket by this process so far.
        refused_links: u64,
    },
    /// Asks for the next [`Frame`].
    FrameRequest,
}

/// The VMM's answer to [`Event::FrameRequest`]: the mode and what the guest wrote since the
/// last frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    /// The mode, or None while the guest shows nothing.
    pub mode: Option<Mode>,
    /// KVM's dirty log of video memory since the last frame (bit i of word w: page 64w + i);
    /// None when there is none (memory unmapped, or the log failed): redraw everything.
    pub dirty: Option<Vec<u64>>,
    /// Video memory moved (or was mapped anew) since the last frame: redraw everything.
    pub moved: bool,
}

/// What the VMM asks of the display process (control socket).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// Clients must present `ticket` within `lifetime_secs`.
    SetTicket {
        /// The one-time password.
        ticket: String,
        /// Seconds it is valid.
        lifetime_secs: u64,
    },
    /// Lock: no ticket works.
    ClearTicket,
    /// Lock and cut every connected client off.
    Disconnect,
}

/// The display process's answer to a [`Command`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// Done.
    Done,
    /// The request was wrong (e.g. a ticket too long).
    Refused {
        /// Why.
        message: String,
    },
    /// The SPICE server failed.
    Failed {
        /// Why.
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_outside_video_memory_do_not_fit() {
        let m = Mode {
            width: 1024,
            height: 768,
            stride: 4096,
            offset: 0,
        };
        assert!(m.fits(4096 * 768));
        assert!(!m.fits(4096 * 768 - 1));
        assert!(!Mode { offset: 1, ..m }.fits(4096 * 768));
        assert!(!Mode { stride: 100, ..m }.fits(usize::MAX));
        assert!(!Mode { width: 0, ..m }.fits(usize::MAX));
        assert!(!Mode {
            offset: usize::MAX,
            ..m
        }
        .fits(usize::MAX));
    }

    #[test]
    fn messages_are_tagged_json() {
        let e = Event::Key { scancode: 0x1e };
        let text = serde_json::to_string(&e).unwrap();
        assert_eq!(text, r#"{"event":"key","scancode":30}"#);
        assert_eq!(serde_json::from_str::<Event>(&text).unwrap(), e);
        assert!(serde_json::from_str::<Event>(r#"{"event":"key","scancode":300}"#).is_err());
        let c = Command::SetTicket {
            ticket: "t".into(),
            lifetime_secs: 5,
        };
        let text = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<Command>(&text).unwrap(), c);
    }
}
