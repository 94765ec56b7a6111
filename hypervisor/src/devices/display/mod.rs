//! The display: the bochs adapter the guest programs ([`bochs`], [`dispi`]), and its SPICE
//! server in a display process of its own ([`process`]), supervised by [`service`].

pub mod bochs;
pub mod dispi;
pub mod input;
pub mod process;
pub mod service;
