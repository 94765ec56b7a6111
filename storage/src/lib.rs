//! Tessera's disk layer: raw and qcow2 images with backing chains, confined to a datastore, and
//! the operations a desktop cloud is built on: linked clones, snapshots, revert (refresh on
//! logoff), commit (delete snapshot) and flatten (full clone).
//!
//! The qcow2 engine is [imago](https://crates.io/crates/imago), written by a maintainer of
//! QEMU's block layer: qcow2 v2/v3, backing chains, zero and compressed clusters, discard, with
//! a native synchronous interface. Building our own qcow2 writer would duplicate years of
//! QEMU-compatible refcount and allocation work; what imago lacks for VDI is here instead:
//! - [`datastore`]: every backing path confined to the datastore (checked when the chain is
//!   walked, and again in the gate imago calls for each file it opens), loops and depth bounded;
//! - [`header`]: a bounds-checked qcow2 header reader for `info`, chain walks and fuzzing, and the
//!   header rewrite that re-points an image to a new backing file;
//! - [`ops`]: the operations, each crash-safe through temporary files and atomic renames;
//! - [`check`]: a refcount and metadata audit with qemu-img check's verdicts.

pub mod check;
pub mod datastore;
pub mod error;
pub mod header;
pub mod image;
pub mod info;
pub mod ops;

pub use datastore::{Datastore, Format};
pub use error::StorageError;
pub use image::Disk;
