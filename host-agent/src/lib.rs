//! tessera-agent: owns one host; datastores, linked-clone creation, spawning and supervising tessera-vmm processes, capacity and heartbeat reports to the broker.
//!
//! Status: placeholder crate. The capability arrives with issue #5; until then this crate
//! only marks its place in the workspace (design.md §3) and exports nothing.
