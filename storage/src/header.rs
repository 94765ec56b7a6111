//! A bounds-checked reader of the qcow2 header: version, sizes, backing file and format, and
//! the features that tell whether an image is safe to open. Used for `info`, for walking
//! backing chains before anything opens them, and as the fuzz target's entry point.
//!
//! Reading is done by hand because it is small and security-relevant: every offset a file
//! supplies is checked against the bytes actually read, so a hostile header yields an error,
//! never a panic or an out-of-bounds read.

use crate::error::StorageError;

/// "QFI\xfb".
pub const QCOW2_MAGIC: [u8; 4] = [b'Q', b'F', b'I', 0xfb];
/// Bytes of the file this parser looks at: the header, its extensions and the backing name
/// must all live in the first cluster, and clusters are at least 512 bytes; QEMU keeps them in
/// the first cluster too, and 64 KiB covers every cluster size QEMU writes by default.
pub const HEADER_READ: usize = 64 * 1024;
const V2_HEADER_LEN: usize = 72;
const EXT_BACKING_FORMAT: u32 = 0xe279_2aca;
const EXT_END: u32 = 0;
/// The longest backing file name QEMU accepts.
const MAX_BACKING_NAME: usize = 1023;
/// Cluster sizes qcow2 allows: 512 B to 2 MiB.
pub const MIN_CLUSTER_BITS: u32 = 9;
/// See [`MIN_CLUSTER_BITS`].
pub const MAX_CLUSTER_BITS: u32 = 21;
/// Incompatible feature bits: dirty, corrupt, external data file, compression type,
/// extended L2.
const INCOMPAT_DIRTY: u64 = 1 << 0;
const INCOMPAT_CORRUPT: u64 = 1 << 1;
/// Guest data lives in a separate file.
pub const INCOMPAT_DATA_FILE: u64 = 1 << 2;
/// L2 entries carry subcluster bitmaps (16 bytes each).
pub const INCOMPAT_EXTENDED_L2: u64 = 1 << 4;
const INCOMPAT_KNOWN: u64 = 0x1f;

/// What the header says.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Qcow2Header {
    /// 2 or 3.
    pub version: u32,
    /// log2 of the cluster size.
    pub cluster_bits: u32,
    /// Virtual disk size in bytes.
    pub size: u64,
    /// Encryption method (0 = none).
    pub crypt_method: u32,
    /// Entries in the L1 table.
    pub l1_size: u32,
    /// File offset of the L1 table.
    pub l1_table_offset: u64,
    /// File offset of the refcount table.
    pub refcount_table_offset: u64,
    /// Clusters of the refcount table.
    pub refcount_table_clusters: u32,
    /// Internal snapshots.
    pub nb_snapshots: u32,
    /// File offset of the snapshot table.
    pub snapshots_offset: u64,
    /// Incompatible feature bits (v3).
    pub incompatible_features: u64,
    /// Compatible feature bits (v3).
    pub compatible_features: u64,
    /// log2 of the refcount width in bits (v3; 4 for v2).
    pub refcount_order: u32,
    /// Backing file name as stored (relative names are relative to this image).
    pub backing_file: Option<String>,
    /// Backing format from the header extension, if present.
    pub backing_format: Option<String>,
}

impl Qcow2Header {
    /// Cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// Whether the dirty bit is set (lazy refcounts need a repair).
    pub fn is_dirty(&self) -> bool {
        self.incompatible_features & INCOMPAT_DIRTY != 0
    }

    /// Whether QEMU marked the image corrupt.
    pub fn is_corrupt(&self) -> bool {
        self.incompatible_features & INCOMPAT_CORRUPT != 0
    }
}

fn be32(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

fn be64(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(off..off + 8)?.try_into().ok()?))
}

/// Whether `bytes` start like a qcow2 image.
pub fn is_qcow2(bytes: &[u8]) -> bool {
    bytes.starts_with(&QCOW2_MAGIC)
}

/// Parses the header from the first bytes of a file (up to [`HEADER_READ`]).
pub fn parse(b: &[u8]) -> Result<Qcow2Header, StorageError> {
    let bad = |why: String| StorageError::CorruptHeader(why);
    let short = || bad(format!("truncated header ({} bytes)", b.len()));
    if !is_qcow2(b) {
        return Err(StorageError::NotQcow2);
    }
    let version = be32(b, 4).ok_or_else(short)?;
    if version != 2 && version != 3 {
        return Err(StorageError::Unsupported(format!(
            "qcow2 version {version}"
        )));
    }
    let backing_offset = be64(b, 8).ok_or_else(short)?;
    let backing_size = be32(b, 16).ok_or_else(short)?;
    let cluster_bits = be32(b, 20).ok_or_else(short)?;
    if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
        return Err(bad(format!("cluster_bits {cluster_bits} outside 9..=21")));
    }
    let size = be64(b, 24).ok_or_else(short)?;
    let crypt_method = be32(b, 32).ok_or_else(short)?;
    let l1_size = be32(b, 36).ok_or_else(short)?;
    let l1_table_offset = be64(b, 40).ok_or_else(short)?;
    let refcount_table_offset = be64(b, 48).ok_or_else(short)?;
    let refcount_table_clusters = be32(b, 56).ok_or_else(short)?;
    let nb_snapshots = be32(b, 60).ok_or_else(short)?;
    let snapshots_offset = be64(b, 64).ok_or_else(short)?;

    let (incompatible_features, compatible_features, refcount_order, header_len) = if version == 3 {
        let incompat = be64(b, 72).ok_or_else(short)?;
        let compat = be64(b, 80).ok_or_else(short)?;
        let order = be32(b, 96).ok_or_else(short)?;
        let len = be32(b, 100).ok_or_else(short)? as usize;
        if len < 104 || !len.is_multiple_of(8) {
            return Err(bad(format!("header_length {len}")));
        }
        (incompat, compat, order, len)
    } else {
        (0, 0, 4, V2_HEADER_LEN)
    };
    if refcount_order > 6 {
        return Err(bad(format!("refcount_order {refcount_order} > 6")));
    }
    if incompatible_features & !INCOMPAT_KNOWN != 0 {
        return Err(StorageError::Unsupported(format!(
            "incompatible qcow2 features {:#x}",
            incompatible_features & !INCOMPAT_KNOWN
        )));
    }
    let cluster = 1u64 << cluster_bits;
    for (what, off) in [
        ("L1 table", l1_table_offset),
        ("refcount table", refcount_table_offset),
    ] {
        if off == 0 || off % cluster != 0 {
            return Err(bad(format!(
                "{what} offset {off:#x} is not cluster-aligned"
            )));
        }
    }
    // L1 entries needed for `size`: each L1 entry covers cluster * (cluster / 8) bytes.
    let per_l1 = cluster.saturating_mul(cluster / 8);
    let needed = size.div_ceil(per_l1);
    if u64::from(l1_size) < needed || u64::from(l1_size) > (32 << 20) / 8 {
        return Err(bad(format!(
            "L1 size {l1_size} entries does not fit a {size}-byte disk (needs {needed}, max 4 Mi)"
        )));
    }

    let backing_file = if backing_offset == 0 || backing_size == 0 {
        None
    } else {
        let start = usize::try_from(backing_offset).map_err(|_| short())?;
        let len = backing_size as usize;
        if len > MAX_BACKING_NAME {
            return Err(bad(format!("backing file name of {len} bytes")));
        }
        let end = start.checked_add(len).ok_or_else(short)?;
        if start < header_len || end as u64 > cluster {
            return Err(bad("backing file name outside the first cluster".into()));
        }
        let name = b.get(start..end).ok_or_else(short)?;
        let name =
            std::str::from_utf8(name).map_err(|_| bad("backing file name is not UTF-8".into()))?;
        if name.contains('\0') {
            return Err(bad("backing file name contains NUL".into()));
        }
        Some(name.to_string())
    };

    let mut backing_format = None;
    let mut off = header_len;
    // Extensions: type, length, data padded to 8 bytes; at most one cluster's worth.
    let limit = (cluster as usize).min(b.len());
    while off + 8 <= limit {
        let kind = be32(b, off).ok_or_else(short)?;
        let len = be32(b, off + 4).ok_or_else(short)? as usize;
        if kind == EXT_END {
            break;
        }
        let data_start = off + 8;
        let data_end = data_start
            .checked_add(len)
            .filter(|e| *e <= limit)
            .ok_or_else(|| {
                bad(format!(
                    "header extension {kind:#x} of {len} bytes overruns the header"
                ))
            })?;
        if kind == EXT_BACKING_FORMAT {
            let fmt = std::str::from_utf8(&b[data_start..data_end])
                .map_err(|_| bad("backing format is not UTF-8".into()))?;
            backing_format = Some(fmt.trim_end_matches('\0').to_string());
        }
        off = data_start + len.div_ceil(8) * 8;
    }

    Ok(Qcow2Header {
        version,
        cluster_bits,
        size,
        crypt_method,
        l1_size,
        l1_table_offset,
        refcount_table_offset,
        refcount_table_clusters,
        nb_snapshots,
        snapshots_offset,
        incompatible_features,
        compatible_features,
        refcount_order,
        backing_file,
        backing_format,
    })
}

/// Reads and parses the header of the file at `path`.
pub fn read(path: &std::path::Path) -> Result<Qcow2Header, StorageError> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| StorageError::io(path, e))?;
    let mut buf = Vec::with_capacity(HEADER_READ);
    f.take(HEADER_READ as u64)
        .read_to_end(&mut buf)
        .map_err(|e| StorageError::io(path, e))?;
    parse(&buf)
}

/// Points the image at `path` to a new backing file (`name`, `format`), as `qemu-img rebase -u`
/// does: the header extensions are rewritten with the new backing-format extension and the
/// name placed after them, in one write of the header's first bytes followed by a sync.
pub fn set_backing(path: &std::path::Path, name: &str, format: &str) -> Result<(), StorageError> {
    use std::io::{Read, Seek, SeekFrom, Write};
    let io = |e| StorageError::io(path, e);
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io)?;
    let mut buf = Vec::with_capacity(HEADER_READ);
    (&mut f)
        .take(HEADER_READ as u64)
        .read_to_end(&mut buf)
        .map_err(io)?;
    let h = parse(&buf)?;
    if h.version != 3 {
        return Err(StorageError::Unsupported(
            "rebasing a qcow2 v2 image".into(),
        ));
    }
    if name.is_empty() || name.len() > MAX_BACKING_NAME || name.contains('\0') {
        return Err(StorageError::Invalid(format!("bad backing name {name:?}")));
    }
    let header_len = be32(&buf, 100).unwrap_or(104) as usize;
    // Keep every extension but the backing format, then add ours, then the end marker.
    let mut exts = Vec::new();
    let mut off = header_len;
    let limit = (h.cluster_size() as usize).min(buf.len());
    while off + 8 <= limit {
        let kind = be32(&buf, off).unwrap_or(0);
        let len = be32(&buf, off + 4).unwrap_or(0) as usize;
        if kind == EXT_END {
            break;
        }
        let padded = 8 + len.div_ceil(8) * 8;
        if kind != EXT_BACKING_FORMAT {
            exts.extend_from_slice(&buf[off..off + padded]);
        }
        off += padded;
    }
    exts.extend_from_slice(&EXT_BACKING_FORMAT.to_be_bytes());
    exts.extend_from_slice(&(format.len() as u32).to_be_bytes());
    exts.extend_from_slice(format.as_bytes());
    exts.resize(exts.len().div_ceil(8) * 8, 0);
    exts.extend_from_slice(&[0; 8]);
    let name_off = header_len + exts.len();
    let end = name_off + name.len();
    if end as u64 > h.cluster_size() {
        return Err(StorageError::Invalid(
            "backing name does not fit the header cluster".into(),
        ));
    }
    let mut head = buf[..header_len].to_vec();
    head[8..16].copy_from_slice(&(name_off as u64).to_be_bytes());
    head[16..20].copy_from_slice(&(name.len() as u32).to_be_bytes());
    head.extend_from_slice(&exts);
    head.extend_from_slice(name.as_bytes());
    // Clear what the old extensions or name occupied beyond the new end.
    let old_end = match (&h.backing_file, be64(&buf, 8)) {
        (Some(old), Some(o)) => (o as usize + old.len()).max(off + 8),
        _ => off + 8,
    };
    if old_end > head.len() {
        head.resize(old_end.min(limit), 0);
    }
    f.seek(SeekFrom::Start(0)).map_err(io)?;
    f.write_all(&head).map_err(io)?;
    f.sync_data().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal valid v3 header for a 1 GiB disk with 64 KiB clusters.
    pub(crate) fn v3(backing: Option<(&str, &str)>) -> Vec<u8> {
        let mut b = vec![0u8; 65536];
        b[..4].copy_from_slice(&QCOW2_MAGIC);
        b[4..8].copy_from_slice(&3u32.to_be_bytes());
        b[20..24].copy_from_slice(&16u32.to_be_bytes());
        b[24..32].copy_from_slice(&(1u64 << 30).to_be_bytes());
        b[36..40].copy_from_slice(&2u32.to_be_bytes());
        b[40..48].copy_from_slice(&0x30000u64.to_be_bytes());
        b[48..56].copy_from_slice(&0x10000u64.to_be_bytes());
        b[56..60].copy_from_slice(&1u32.to_be_bytes());
        b[96..100].copy_from_slice(&4u32.to_be_bytes());
        b[100..104].copy_from_slice(&112u32.to_be_bytes());
        let mut off = 112;
        if let Some((name, fmt)) = backing {
            b[off..off + 4].copy_from_slice(&EXT_BACKING_FORMAT.to_be_bytes());
            b[off + 4..off + 8].copy_from_slice(&(fmt.len() as u32).to_be_bytes());
            b[off + 8..off + 8 + fmt.len()].copy_from_slice(fmt.as_bytes());
            off += 8 + fmt.len().div_ceil(8) * 8;
            off += 8; // end extension (zeros)
            b[8..16].copy_from_slice(&(off as u64).to_be_bytes());
            b[16..20].copy_from_slice(&(name.len() as u32).to_be_bytes());
            b[off..off + name.len()].copy_from_slice(name.as_bytes());
        }
        b
    }

    #[test]
    fn parses_a_v3_header_with_backing() {
        let h = parse(&v3(Some(("base.qcow2", "qcow2")))).unwrap();
        assert_eq!(h.version, 3);
        assert_eq!(h.cluster_size(), 65536);
        assert_eq!(h.size, 1 << 30);
        assert_eq!(h.backing_file.as_deref(), Some("base.qcow2"));
        assert_eq!(h.backing_format.as_deref(), Some("qcow2"));
    }

    #[test]
    fn rejects_hostile_headers() {
        let good = v3(Some(("base.qcow2", "qcow2")));
        for (off, val) in [
            (20usize, 40u32), // cluster bits
            (4, 7),           // version
            (100, 13),        // header length
            (36, 0),          // L1 too small
            (96, 9),          // refcount order
        ] {
            let mut b = good.clone();
            b[off..off + 4].copy_from_slice(&val.to_be_bytes());
            assert!(parse(&b).is_err(), "offset {off} value {val}");
        }
        // Backing name pointing past the cluster.
        let mut b = good.clone();
        b[8..16].copy_from_slice(&0xfff0u64.to_be_bytes());
        b[16..20].copy_from_slice(&0x100u32.to_be_bytes());
        assert!(parse(&b).is_err());
        // Overflowing backing offset.
        let mut b = good.clone();
        b[8..16].copy_from_slice(&u64::MAX.to_be_bytes());
        assert!(parse(&b).is_err());
        // Huge L1.
        let mut b = good.clone();
        b[36..40].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(parse(&b).is_err());
        // Extension overrunning the buffer.
        let mut b = good;
        b[116..120].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(parse(&b).is_err());
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let good = v3(Some(("base.qcow2", "qcow2")));
        for n in 0..256 {
            let _ = parse(&good[..n]);
        }
        assert!(matches!(parse(b"not qcow2"), Err(StorageError::NotQcow2)));
    }
}
