//! Rust bindings to libspice-server (bindgen -sys layer plus a safe wrapper) that serve a VM's display and input over SPICE.
//!
//! Status: placeholder crate. The capability arrives with issue #6; until then this crate
//! only marks its place in the workspace (design.md §3) and exports nothing.
