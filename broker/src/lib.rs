//! tessera-broker: the connection broker and management plane.
//!
//! The [`store`] keeps the model (hosts, datastores, golden images, pools, entitlements,
//! desktops with their state machine, sessions, one-time tickets, events, local accounts) on
//! SQLite or PostgreSQL. The pool [`reconcile`]r drives pools toward their desired state
//! through the hosts' agents ([`agent_client`], mutual TLS). The [`logon`] path signs users in
//! (local accounts or the directories), gives them a desktop, powers it and issues a one-time
//! ticket (and a remote-viewer file, [`vv`]), and lets them restart or log off their desktops
//! ([`desktop_actions`]); [`api`] serves it to clients and [`admin_api`] to administrators, with
//! [`metrics`], and carries displays for clients outside the hosts' network ([`tunnel`]); hosts join with one-time tokens ([`host_join`]); [`server`] runs it all under
//! the binary's `serve`, with the broker's own CA ([`pki`]).

pub mod admin_api;
pub mod agent_client;
pub mod api;
pub mod config;
pub mod desktop_actions;
pub mod host_join;
pub mod host_trust;
pub mod logon;
pub mod metrics;
pub mod pki;
pub mod reconcile;
pub mod server;
pub mod store;
pub mod throttle;
pub mod tunnel;
pub mod vv;
