//! tessera-install: one-command host install, all-in-one mode and preflight checks.
//!
//! Status: placeholder crate. The capability arrives with issue #5; until then this crate
//! only marks its place in the workspace (design.md §3) and exports nothing.
