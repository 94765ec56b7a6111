//! Disks in the host's datastores: linked clones of base images, base-image copies, deletion,
//! all through tessera-storage so backing chains never leave their datastore.

use std::path::{Path, PathBuf};

use serde::Serialize;
use tessera_storage::ops::{self, Durability};
use tessera_storage::{Datastore, StorageError};

use crate::config::AgentConfig;

/// Errors with disks.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// No such datastore on this host.
    #[error("no datastore named {0:?} on this host")]
    NoDatastore(String),
    /// No such disk in the datastore.
    #[error("no disk {0:?} in datastore {1:?}")]
    NotFound(String, String),
    /// A file name that is not a plain name.
    #[error("invalid disk name {0:?}: letters, digits, '.', '_', '-', not starting with '.'")]
    BadName(String),
    /// The disk is in use.
    #[error("{0}")]
    InUse(String),
    /// Storage failure.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// I/O.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    /// A file the broker named outside the image library (or no library).
    #[error("{0}")]
    Library(String),
}

/// A disk as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiskInfo {
    /// File name.
    pub name: String,
    /// Bytes on disk.
    pub size: u64,
}

/// Checks a file name: no directories, no hidden files, a bounded length.
pub fn check_name(name: &str) -> Result<(), DiskError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(DiskError::BadName(name.to_string()))
    }
}

/// The datastore `name` and its directory.
pub fn datastore(cfg: &AgentConfig, name: &str) -> Result<(Datastore, PathBuf), DiskError> {
    let d = cfg
        .datastore(name)
        .ok_or_else(|| DiskError::NoDatastore(name.to_string()))?;
    Ok((Datastore::new(&d.path)?, d.path.clone()))
}

/// Creates `name`, a linked clone of `base`, both in datastore `ds`.
pub fn clone_disk(
    cfg: &AgentConfig,
    ds: &str,
    base: &str,
    name: &str,
) -> Result<PathBuf, DiskError> {
    check_name(base)?;
    check_name(name)?;
    let (store, dir) = datastore(cfg, ds)?;
    // Bases enter datastores through [`import_base`], as qcow2.
    Ok(ops::linked_clone(
        &store,
        &dir.join(base),
        tessera_storage::Format::Qcow2,
        &dir.join(name),
        Durability::Sync,
    )?)
}

/// `path` (a kernel, an initrd, an image to import; relative: to the library), confined to
/// the host's image library: canonical, symlinks resolved, inside it, a regular file. So a
/// broker cannot have a VMM load /etc/shadow as a kernel (the guest would read it) or import
/// a host file into a datastore.
pub fn library_file(cfg: &AgentConfig, path: &Path) -> Result<PathBuf, DiskError> {
    confine_to_library(cfg, &library(cfg)?, path)
}

/// The host's image library as a confining directory.
fn library(cfg: &AgentConfig) -> Result<Datastore, DiskError> {
    Datastore::new(&cfg.library).map_err(|e| {
        DiskError::Library(format!("the image library {}: {e}", cfg.library.display()))
    })
}

fn confine_to_library(
    cfg: &AgentConfig,
    lib: &Datastore,
    path: &Path,
) -> Result<PathBuf, DiskError> {
    let full = lib.root().join(path);
    let outside = || {
        DiskError::Library(format!(
            "{} is not a file in the image library {}",
            path.display(),
            cfg.library.display()
        ))
    };
    let canon = lib.confine(&full, &full).map_err(|_| outside())?;
    if !canon.is_file() {
        return Err(outside());
    }
    Ok(canon)
}

/// Copies a base image from `source` in the host's image library into datastore `ds` as
/// `name`: a standalone qcow2 image whatever the source's format, so that every later open
/// knows its format without reading its content. The source's format is read from its first
/// bytes: it is the administrators' library image, which no guest writes. An existing disk of
/// that name is never replaced (one in use, or the base of clones, least of all).
pub fn import_base(
    cfg: &AgentConfig,
    ds: &str,
    source: &Path,
    name: &str,
) -> Result<PathBuf, DiskError> {
    check_name(name)?;
    let (store, dir) = datastore(cfg, ds)?;
    let library = library(cfg)?;
    let src = confine_to_library(cfg, &library, source)?;
    let format = tessera_storage::Format::probe(&src)?;
    let target = dir.join(name);
    if target.exists() {
        return Err(DiskError::InUse(format!(
            "{name} already exists in {ds}; delete it first (an import never replaces a disk)"
        )));
    }
    Ok(ops::import(&library, &src, format, &store, &target)?)
}

/// Deletes `name` from `ds` unless a VM uses it (`in_use`) or another image is built on it.
pub fn delete_disk(
    cfg: &AgentConfig,
    ds: &str,
    name: &str,
    in_use: impl Fn(&Path) -> bool,
) -> Result<(), DiskError> {
    check_name(name)?;
    let (store, dir) = datastore(cfg, ds)?;
    let path = dir.join(name);
    if !path.is_file() {
        return Err(DiskError::NotFound(name.to_string(), ds.to_string()));
    }
    if in_use(&path) {
        return Err(DiskError::InUse(format!(
            "{name} is attached to a running VM"
        )));
    }
    let users = store.users_of(&path)?;
    if !users.is_empty() {
        return Err(DiskError::InUse(format!(
            "{name} is the base of {} other image(s)",
            users.len()
        )));
    }
    std::fs::remove_file(&path).map_err(|e| DiskError::Io(path.display().to_string(), e))
}

/// The images in `ds`.
pub fn list_disks(cfg: &AgentConfig, ds: &str) -> Result<Vec<DiskInfo>, DiskError> {
    let (_, dir) = datastore(cfg, ds)?;
    let mut v = Vec::new();
    let entries =
        std::fs::read_dir(&dir).map_err(|e| DiskError::Io(dir.display().to_string(), e))?;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        if let Ok(m) = e.metadata() {
            if m.is_file() {
                v.push(DiskInfo {
                    name,
                    size: m.len(),
                });
            }
        }
    }
    v.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["fin-001.qcow2", "gold_v2.qcow2", "a"] {
            check_name(ok).unwrap();
        }
        for bad in ["", "../x", "a/b", ".hidden", "a b", &"x".repeat(129)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
