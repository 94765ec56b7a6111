//! tessera-vmm: Tessera's virtual machine monitor, one process per VM.
//!
//! The process has one thread per vCPU running `KVM_RUN` (port and MMIO exits are handled on
//! that thread against the [`devices::bus::Bus`]es), a thread for the control API
//! ([`api`]), a console-input thread, device I/O threads, the display supervisor, and the main
//! thread, which builds the machine ([`builder`]) and waits for the [`exit::ExitReason`] that
//! ends it. Each runs under the seccomp filter of its kind ([`sandbox`]).
//!
//! `unsafe` is confined to the KVM and guest-memory modules ([`vstate`]), each block with a
//! SAFETY comment.

pub mod api;
pub mod arch;
pub mod builder;
pub mod config;
pub mod controller;
pub mod devices;
pub mod exit;
pub mod firmware;
pub mod rate_limit;
pub mod sandbox;
pub mod tiny_guest;
pub mod vstate;
