//! tessera-spice-client: a SPICE client session for tessera-client and the display
//! benchmarks, over libspice-client-glib (which decodes every image codec SPICE servers send:
//! QUIC, LZ, GLZ, LZ4, JPEG, video streams). Connect with a ticket, read the guest's screen
//! from a shared [`Frame`] as [`Event::Invalidate`] rectangles arrive, send keys, pointer and
//! resolution requests. All `unsafe` is in `ffi`.

mod ffi;
mod frame;
mod session;

pub use frame::{Frame, PixelFormat, Rect};
pub use session::{Button, ConnectOptions, Error, Event, Failure, MouseMode, Session};
