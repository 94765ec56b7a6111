//! A datastore: a directory that holds images. Every path an image refers to (its backing
//! file, and theirs) must resolve inside it, so a crafted header cannot make the VMM read
//! /etc/shadow (Cloud Hypervisor's advisory GHSA-jmr4-g2hv-mjj6 is the cautionary tale).

use std::path::{Component, Path, PathBuf};

use crate::error::StorageError;
use crate::header;

/// Deepest backing chain accepted (QEMU has no limit; a VDI chain is base + a few snapshots).
pub const MAX_CHAIN_DEPTH: usize = 64;

/// Image file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// qcow2 (v2 read, v3 read/write).
    Qcow2,
    /// Raw.
    Raw,
}

impl Format {
    /// The name qemu-img uses.
    pub fn name(self) -> &'static str {
        match self {
            Self::Qcow2 => "qcow2",
            Self::Raw => "raw",
        }
    }

    /// Parses a format name.
    pub fn from_name(s: &str) -> Result<Self, StorageError> {
        match s {
            "qcow2" => Ok(Self::Qcow2),
            "raw" => Ok(Self::Raw),
            other => Err(StorageError::Unsupported(format!("image format {other:?}"))),
        }
    }

    /// Detects the format from the file's first bytes: for showing an image to an admin
    /// (`tessera-img info`) and for an admin's own library image as it becomes a base, never
    /// for opening a disk a guest may have written: a guest that writes a qcow2 header into
    /// its raw disk would otherwise have it read as an overlay on any file it names
    /// (CVE-2008-2004). Disks are opened in their recorded format ([`Datastore::chain`]).
    pub fn probe(path: &Path) -> Result<Self, StorageError> {
        use std::io::Read;
        let mut magic = [0u8; 4];
        let mut f = std::fs::File::open(path).map_err(|e| StorageError::io(path, e))?;
        let n = f.read(&mut magic).map_err(|e| StorageError::io(path, e))?;
        Ok(if header::is_qcow2(&magic[..n]) {
            Self::Qcow2
        } else {
            Self::Raw
        })
    }
}

/// One image of a chain, top first.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChainEntry {
    /// Canonical path.
    pub path: PathBuf,
    /// Format.
    pub format: Format,
}

/// A directory of images.
#[derive(Debug, Clone)]
pub struct Datastore {
    root: PathBuf,
}

impl Datastore {
    /// Opens the datastore rooted at `root` (which must exist).
    pub fn new(root: impl AsRef<Path>) -> Result<Self, StorageError> {
        let root = root.as_ref();
        let canon = root.canonicalize().map_err(|e| StorageError::io(root, e))?;
        if !canon.is_dir() {
            return Err(StorageError::Invalid(format!(
                "datastore {} is not a directory",
                root.display()
            )));
        }
        Ok(Self { root: canon })
    }

    /// The canonical root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Canonicalises `path` and checks that it lies inside the datastore.
    pub fn confine(&self, path: &Path, referrer: &Path) -> Result<PathBuf, StorageError> {
        let canon = path.canonicalize().map_err(|e| StorageError::io(path, e))?;
        if canon.starts_with(&self.root) && canon != self.root {
            Ok(canon)
        } else {
            Err(StorageError::OutsideDatastore {
                image: referrer.to_path_buf(),
                backing: canon,
                root: self.root.clone(),
            })
        }
    }

    /// Canonicalises the directory `dir` and checks that it is the datastore or inside it.
    pub fn confine_dir(&self, dir: &Path) -> Result<PathBuf, StorageError> {
        let canon = dir.canonicalize().map_err(|e| StorageError::io(dir, e))?;
        if canon.starts_with(&self.root) {
            Ok(canon)
        } else {
            Err(StorageError::Invalid(format!(
                "{} is outside the datastore {}",
                canon.display(),
                self.root.display()
            )))
        }
    }

    /// Where a backing name stored in `image` points (relative names are relative to the
    /// image's directory), confined to the datastore.
    pub fn resolve_backing(&self, image: &Path, backing: &str) -> Result<PathBuf, StorageError> {
        let b = Path::new(backing);
        let joined = if b.is_absolute() {
            b.to_path_buf()
        } else {
            image.parent().unwrap_or(Path::new("/")).join(b)
        };
        self.confine(&joined, image)
    }

    /// Walks the backing chain of `top` (an image in `format`) through the headers alone,
    /// before anything opens the images: every link confined, no loops, at most
    /// [`MAX_CHAIN_DEPTH`] deep. Each backing file's format is the one its referrer records
    /// (qcow2's backing-format extension), never probed; a link without one is refused.
    pub fn chain(&self, top: &Path, format: Format) -> Result<Vec<ChainEntry>, StorageError> {
        let mut path = self.confine(top, top)?;
        let mut format = format;
        let mut chain: Vec<ChainEntry> = Vec::new();
        loop {
            if chain.iter().any(|e| e.path == path) {
                return Err(StorageError::ChainLoop(path));
            }
            if chain.len() >= MAX_CHAIN_DEPTH {
                return Err(StorageError::ChainTooDeep(MAX_CHAIN_DEPTH));
            }
            chain.push(ChainEntry {
                path: path.clone(),
                format,
            });
            if format == Format::Raw {
                return Ok(chain);
            }
            let h = header::read(&path)?;
            let Some(b) = h.backing_file else {
                return Ok(chain);
            };
            format = match h.backing_format.as_deref() {
                Some("raw" | "file") => Format::Raw,
                Some(f) => Format::from_name(f)?,
                None => {
                    return Err(StorageError::Invalid(format!(
                        "{} does not record its backing file's format; it is never guessed \
                         from the file's content (recreate the overlay with one)",
                        path.display()
                    )))
                }
            };
            path = self.resolve_backing(&path, &b)?;
        }
    }

    /// Images in the datastore (recursively) whose backing file is `image`.
    pub fn users_of(&self, image: &Path) -> Result<Vec<PathBuf>, StorageError> {
        let target = self.confine(image, image)?;
        let mut users = Vec::new();
        let mut dirs = vec![self.root.clone()];
        while let Some(dir) = dirs.pop() {
            let entries = std::fs::read_dir(&dir).map_err(|e| StorageError::io(&dir, e))?;
            for entry in entries.flatten() {
                let p = entry.path();
                let Ok(ft) = entry.file_type() else { continue };
                if ft.is_dir() {
                    dirs.push(p);
                } else if ft.is_file() {
                    // Unreadable or foreign files are not users; skip them.
                    let Ok(h) = header::read(&p) else { continue };
                    let Some(b) = h.backing_file else { continue };
                    if self.resolve_backing(&p, &b).is_ok_and(|r| r == target) {
                        users.push(p);
                    }
                }
            }
        }
        users.sort();
        Ok(users)
    }
}

/// `target` relative to directory `from` (both absolute and canonical), for backing names that
/// survive moving the datastore.
pub fn relative_to(target: &Path, from: &Path) -> PathBuf {
    let t: Vec<Component> = target.components().collect();
    let f: Vec<Component> = from.components().collect();
    let common = t.iter().zip(&f).take_while(|(a, b)| a == b).count();
    let mut rel = PathBuf::new();
    for _ in common..f.len() {
        rel.push("..");
    }
    for c in &t[common..] {
        rel.push(c);
    }
    rel
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        assert_eq!(
            relative_to(Path::new("/d/a/base"), Path::new("/d/a")),
            PathBuf::from("base")
        );
        assert_eq!(
            relative_to(Path::new("/d/golden/base"), Path::new("/d/vms")),
            PathBuf::from("../golden/base")
        );
    }
}
