//! tessera-broker: the connection broker and management plane.
//!
//! This crate grows in slices (issue 5): the store comes first: hosts, datastores, golden
//! images, pools, entitlements, desktops with their state machine, sessions, one-time tickets,
//! events and local accounts, on SQLite or PostgreSQL ([`store`]). The reconciler, the host
//! agent protocol, the logon API and the all-in-one follow on top of it.

pub mod store;
