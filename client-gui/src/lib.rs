//! tessera-client: the native thin client. An end user signs in to a Tessera broker, picks a
//! desktop (or is connected to their only one) and uses it over SPICE in an egui window.
//!
//! `broker` speaks the broker's client API, `trust` decides which broker certificates to
//! trust, `settings` remembers the broker and accepted certificates, `app` and `screens` are
//! the UI's flow and forms (`account`: the domain picker and changing a password; `desktops`: the desktop list's
//! actions), `remote` shows the desktop, `keymap` turns keys into scancodes, `vv` reads connection files.

mod account;
pub mod app;
pub mod broker;
pub mod desktops;
pub mod keymap;
pub mod remote;
mod screens;
pub mod settings;
pub mod trust;
pub mod vv;

pub use app::{App, Screen};
