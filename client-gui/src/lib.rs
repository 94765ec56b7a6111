//! tessera-client: the native thin client. An end user signs in to a Tessera broker, picks a
//! desktop (or is connected to their only one) and uses it over SPICE in an egui window.
//!
//! `broker` speaks the broker's client API, `trust` decides which broker certificates to
//! trust, `tunnel` carries the display through the broker when the broker says so,
//! `settings` remembers the broker and accepted certificates, `app` and `screens` are the UI's
//! flow and forms (`account`: the domain picker and changing a password; `desktops`: the
//! desktop list's actions), `remote` shows the desktop (`gl_picture` draws it), `keymap` turns
//! keys into scancodes, `grab` captures the keyboard on X11, `vv` reads connection files.

mod account;
pub mod app;
pub mod broker;
pub mod desktops;
mod gl_picture;
mod grab;
pub mod keymap;
pub mod remote;
mod screens;
pub mod settings;
pub mod trust;
pub mod tunnel;
pub mod vv;

pub use app::{App, Screen};
