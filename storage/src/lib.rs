//! Disk formats (raw, qcow2 v3) with backing chains; linked clones, snapshots, revert, merge and flatten as FusionCompute defines them.
//!
//! Status: placeholder crate. The capability arrives with issue #3; until then this crate
//! only marks its place in the workspace (design.md §3) and exports nothing.
