//! tessera-client: the native egui/eframe thin client (sign in, pick a desktop, use it over SPICE).
//!
//! Status: placeholder crate. The capability arrives with issue #7; until then this crate
//! only marks its place in the workspace (design.md §3) and exports nothing.
