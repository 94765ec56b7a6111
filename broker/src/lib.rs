//! tessera-broker: the connection broker and management plane (REST API, admin console, pool reconciliation, logon, one-time SPICE tickets).
//!
//! Status: placeholder crate. The capability arrives with issue #5; until then this crate
//! only marks its place in the workspace (design.md §3) and exports nothing.
