//! tessera-broker: the connection broker and management plane.
//!
//! This crate grows in slices (issue 5): the store comes first: hosts, datastores, golden
//! images, pools, entitlements, desktops with their state machine, sessions, one-time tickets,
//! events and local accounts, on SQLite or PostgreSQL ([`store`]); then the pool
//! [`reconcile`]r, which reaches hosts through their agents ([`agent_client`], mutual TLS).
//! The logon API and the all-in-one follow on top of them.

pub mod agent_client;
pub mod reconcile;
pub mod store;
