//! Active Directory and LDAP integration: binds, nested groups, AD error codes, incremental sync and computer accounts for clones.
//!
//! Status: placeholder crate. The capability arrives with issue #4; until then this crate
//! only marks its place in the workspace (design.md §3) and exports nothing.
