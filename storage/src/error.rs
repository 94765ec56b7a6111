//! Storage errors: each names the file and what is wrong with it.

use std::path::{Path, PathBuf};

/// Errors from the storage crate.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// An I/O error on a file.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error (not a `source`: the message already carries it).
        error: std::io::Error,
    },
    /// Not a qcow2 file.
    #[error("not a qcow2 image (bad magic)")]
    NotQcow2,
    /// The header is damaged or hostile.
    #[error("corrupt qcow2 header: {0}")]
    CorruptHeader(String),
    /// A feature this implementation does not handle.
    #[error("unsupported image: {0}")]
    Unsupported(String),
    /// A backing file outside the datastore.
    #[error(
        "backing file {backing} of {image} is outside the datastore {root}; refusing to open it"
    )]
    OutsideDatastore {
        /// The image that refers to it.
        image: PathBuf,
        /// The backing path as resolved.
        backing: PathBuf,
        /// The datastore root.
        root: PathBuf,
    },
    /// A loop in the backing chain.
    #[error("backing chain loops back to {0}")]
    ChainLoop(PathBuf),
    /// A chain deeper than allowed.
    #[error("backing chain deeper than {0} images")]
    ChainTooDeep(usize),
    /// An invalid request (bad size, existing target...).
    #[error("{0}")]
    Invalid(String),
    /// The image is in use as a base by other images.
    #[error("{image} is the backing file of {users} other image(s) in the datastore; refusing to modify it")]
    SharedBase {
        /// The image.
        image: PathBuf,
        /// How many images use it.
        users: usize,
    },
}

impl StorageError {
    /// Wraps an I/O error with its path.
    pub fn io(path: &Path, error: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            error,
        }
    }
}
