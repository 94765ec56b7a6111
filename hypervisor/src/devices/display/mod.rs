//! The display: the bochs adapter the guest programs ([`bochs`], [`dispi`]) and the thread that
//! turns its video memory into SPICE updates ([`refresh`]).

pub mod bochs;
pub mod dispi;
pub mod refresh;
pub mod service;
