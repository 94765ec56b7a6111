//! tessera-broker: the connection broker and management plane.
//!
//! This crate grows in slices (issue 5): the store comes first: hosts, datastores, golden
//! images, pools, entitlements, desktops with their state machine, sessions, one-time tickets,
//! events and local accounts, on SQLite or PostgreSQL ([`store`]); then the pool
//! [`reconcile`]r, which reaches hosts through their agents ([`agent_client`], mutual TLS).
//! The [`logon`] path signs users in (local accounts or the directories), gives them a
//! desktop, powers it and issues a one-time ticket; [`api`] serves it to clients. The broker
//! binary, the admin API and the all-in-one follow.

pub mod agent_client;
pub mod api;
pub mod config;
pub mod logon;
pub mod pki;
pub mod reconcile;
pub mod server;
pub mod store;
