//! Tessera's demo desktop guest: a few KiB of freestanding C (guest/*.c, built by build.rs
//! with the host's gcc) that tessera-vmm boots like a kernel (`--kernel demo-guest.elf`). It
//! needs no operating system and no disk, so it runs at full speed even where KVM is
//! software-assisted (PVM): the all-in-one demo uses it there, and the display tests use it as
//! a guest whose picture is known.
//!
//! It programs the bochs display, paints a title bar with the desktop's name (`name=` on its
//! command line) and a clock (CMOS RTC), a notes window that shows what is typed (i8042), and
//! the pointer (virtio tablet, or the PS/2 mouse). It writes typed characters and
//! `click X Y` lines to the serial console.

pub mod layout;

/// The guest image: an ELF64 file loaded at 1 MiB.
pub const ELF: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/demo-guest.elf"));
