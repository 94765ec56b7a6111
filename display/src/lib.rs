//! tessera-display: one VM's SPICE display, in a process of its own.
//!
//! tessera-vmm starts one per VM with a display and restarts it if it dies: libspice-server
//! parses whatever clients send, and a crash there (0.15.1's display worker can fault when a
//! client vanishes mid-connect) must not take the guest down. The process maps the guest's
//! video memory read-only, asks the VMM for dirty pages, serves the screen, and sends client
//! input back; after start-up it runs under a seccomp filter ([`sandbox`]) that allows
//! serving its sockets and nothing else: no files, no new sockets, no programs.
//!
//! - [`serve`]: start-up and the control thread;
//! - [`refresh`]: dirty pages to SPICE rectangles;
//! - [`forward`]: client input and channel changes to the VMM;
//! - [`video`]: the read-only view of video memory;
//! - [`sandbox`]: the seccomp filter.

pub mod forward;
pub mod refresh;
pub mod sandbox;
pub mod serve;
pub mod video;
