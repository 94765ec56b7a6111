//! `qemu-img info`-style facts about an image.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::datastore::{Datastore, Format};
use crate::error::StorageError;
use crate::header;

/// Facts about one image, with the field names `qemu-img info --output json` uses.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ImageInfo {
    /// The image file.
    pub filename: PathBuf,
    /// "qcow2" or "raw".
    pub format: Format,
    /// Disk size seen by the guest.
    pub virtual_size: u64,
    /// Bytes allocated on the host file system.
    pub actual_size: u64,
    /// Cluster size (qcow2).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_size: Option<u64>,
    /// Backing file as stored in the header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backing_filename: Option<String>,
    /// Backing file resolved and confined to the datastore.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub full_backing_filename: Option<PathBuf>,
    /// Backing format from the header.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backing_filename_format: Option<String>,
    /// Dirty flag (qcow2).
    pub dirty_flag: bool,
    /// qcow2 details.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format_specific: Option<Qcow2Specific>,
}

/// qcow2-specific facts.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Qcow2Specific {
    /// "0.10" for v2, "1.1" for v3.
    pub compat: String,
    /// Refcount width in bits.
    pub refcount_bits: u32,
    /// Corrupt flag.
    pub corrupt: bool,
}

/// Reads the facts of `path` (inside `ds`).
pub fn info(ds: &Datastore, path: &Path) -> Result<ImageInfo, StorageError> {
    let path = ds.confine(path, path)?;
    let meta = std::fs::metadata(&path).map_err(|e| StorageError::io(&path, e))?;
    let actual_size = meta.blocks() * 512;
    let format = Format::probe(&path)?;
    if format == Format::Raw {
        return Ok(ImageInfo {
            filename: path,
            format,
            virtual_size: meta.len(),
            actual_size,
            cluster_size: None,
            backing_filename: None,
            full_backing_filename: None,
            backing_filename_format: None,
            dirty_flag: false,
            format_specific: None,
        });
    }
    let h = header::read(&path)?;
    let full = match &h.backing_file {
        Some(b) => Some(ds.resolve_backing(&path, b)?),
        None => None,
    };
    Ok(ImageInfo {
        filename: path,
        format,
        virtual_size: h.size,
        actual_size,
        cluster_size: Some(h.cluster_size()),
        backing_filename: h.backing_file.clone(),
        full_backing_filename: full,
        backing_filename_format: h.backing_format.clone(),
        dirty_flag: h.is_dirty(),
        format_specific: Some(Qcow2Specific {
            compat: if h.version == 2 { "0.10" } else { "1.1" }.into(),
            refcount_bits: 1 << h.refcount_order,
            corrupt: h.is_corrupt(),
        }),
    })
}

/// Human-readable size: "1 GiB", "512 MiB", "1.5 KiB".
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if v.fract() == 0.0 {
        format!("{v} {}", UNITS[u])
    } else {
        format!("{v:.3} {}", UNITS[u])
    }
}

impl std::fmt::Display for ImageInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "image: {}", self.filename.display())?;
        writeln!(f, "file format: {}", self.format.name())?;
        writeln!(
            f,
            "virtual size: {} ({} bytes)",
            human(self.virtual_size),
            self.virtual_size
        )?;
        writeln!(f, "disk size: {}", human(self.actual_size))?;
        if let Some(c) = self.cluster_size {
            writeln!(f, "cluster_size: {c}")?;
        }
        if let Some(b) = &self.backing_filename {
            writeln!(f, "backing file: {b}")?;
            if let Some(full) = &self.full_backing_filename {
                writeln!(f, "backing file (resolved): {}", full.display())?;
            }
        }
        if let Some(b) = &self.backing_filename_format {
            writeln!(f, "backing file format: {b}")?;
        }
        if let Some(q) = &self.format_specific {
            writeln!(f, "Format specific information:")?;
            writeln!(f, "    compat: {}", q.compat)?;
            writeln!(f, "    refcount bits: {}", q.refcount_bits)?;
            writeln!(f, "    corrupt: {}", q.corrupt)?;
        }
        Ok(())
    }
}
