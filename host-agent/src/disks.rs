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
    Ok(ops::linked_clone(
        &store,
        &dir.join(base),
        &dir.join(name),
        Durability::Sync,
    )?)
}

/// Copies a base image from `source` (a file anywhere the agent may read, e.g. the broker's
/// image library mounted on the host) into datastore `ds` as `name`, as a standalone image.
pub fn import_base(
    cfg: &AgentConfig,
    ds: &str,
    source: &Path,
    name: &str,
) -> Result<PathBuf, DiskError> {
    check_name(name)?;
    let (_, dir) = datastore(cfg, ds)?;
    let target = dir.join(name);
    let temp = dir.join(format!(".{name}.importing"));
    std::fs::copy(source, &temp).map_err(|e| DiskError::Io(source.display().to_string(), e))?;
    let f = std::fs::File::open(&temp).map_err(|e| DiskError::Io(temp.display().to_string(), e))?;
    f.sync_all()
        .map_err(|e| DiskError::Io(temp.display().to_string(), e))?;
    std::fs::rename(&temp, &target).map_err(|e| DiskError::Io(target.display().to_string(), e))?;
    Ok(target)
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
