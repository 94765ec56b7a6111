//! An open disk: a qcow2 or raw image with its backing chain, opened through imago with a gate
//! that confines every implicitly opened file to the datastore.

use std::io;
use std::path::{Path, PathBuf};

use imago::file::File;
use imago::qcow2::Qcow2;
use imago::raw::Raw;
use imago::{FormatAccess, FormatDriverBuilder, ShallowMapping, Storage, StorageOpenOptions};

// imago flushes a writable image when its FormatAccess is dropped (sync mode), so Disk needs no
// Drop of its own.

use crate::datastore::{ChainEntry, Datastore, Format, MAX_CHAIN_DEPTH};
use crate::error::StorageError;

/// imago's hook for files an image refers to: here, only files inside the datastore, no
/// loops, bounded depth.
#[derive(Clone)]
struct ConfinedGate {
    datastore: Datastore,
    referrer: PathBuf,
    opened: Vec<PathBuf>,
}

fn denied(e: StorageError) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, e.to_string())
}

impl imago::format::gate::ImplicitOpenGate<File> for ConfinedGate {
    fn open_format<F: FormatDriverBuilder<File>>(
        &mut self,
        builder: F,
    ) -> io::Result<FormatAccess<File>> {
        let path = builder
            .get_image_path()
            .ok_or_else(|| io::Error::other("backing image without a path"))?;
        let canon = self
            .datastore
            .confine(&path, &self.referrer)
            .map_err(denied)?;
        if self.opened.contains(&canon) {
            return Err(denied(StorageError::ChainLoop(canon)));
        }
        if self.opened.len() >= MAX_CHAIN_DEPTH {
            return Err(denied(StorageError::ChainTooDeep(MAX_CHAIN_DEPTH)));
        }
        let mut next = self.clone();
        next.referrer = canon.clone();
        next.opened.push(canon);
        Ok(FormatAccess::new(builder.open(next)?))
    }

    fn open_storage(&mut self, opts: StorageOpenOptions) -> io::Result<File> {
        if let Some(p) = opts.get_filename() {
            self.datastore.confine(p, &self.referrer).map_err(denied)?;
        }
        File::open(opts)
    }
}

/// How a range of the disk is stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MapEntry {
    /// Guest offset.
    pub start: u64,
    /// Bytes.
    pub length: u64,
    /// Chain depth holding the data (0 = this image); for unallocated zeros, the chain length.
    pub depth: usize,
    /// Whether some image of the chain defines the range.
    pub present: bool,
    /// Whether it reads as zeros.
    pub zero: bool,
    /// Whether it has data in a file.
    pub data: bool,
    /// File offset of the data, when `data`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
}

/// An open image and its chain.
pub struct Disk {
    access: FormatAccess<File>,
    chain: Vec<ChainEntry>,
    writable: bool,
}

fn io_err(path: &Path) -> impl Fn(io::Error) -> StorageError + '_ {
    move |e| StorageError::io(path, e)
}

impl Disk {
    /// Opens `path`, an image in `format` (what its owner recorded: never guessed from the
    /// content, which a guest may have written), and its whole backing chain, read-only or
    /// writable.
    pub fn open(
        ds: &Datastore,
        path: &Path,
        format: Format,
        writable: bool,
    ) -> Result<Self, StorageError> {
        // Walk the headers first: confinement, loops, depth and recorded formats are checked
        // before imago opens anything, and the gate checks them again for whatever imago opens.
        let chain = ds.chain(path, format)?;
        let top = chain[0].clone();
        let gate = ConfinedGate {
            datastore: ds.clone(),
            referrer: top.path.clone(),
            opened: vec![top.path.clone()],
        };
        let err = io_err(&top.path);
        let access = match top.format {
            Format::Qcow2 => FormatAccess::new(
                Qcow2::<File>::builder_path(&top.path)
                    .write(writable)
                    .open(gate)
                    .map_err(&err)?,
            ),
            Format::Raw => FormatAccess::new(
                Raw::<File>::builder_path(&top.path)
                    .write(writable)
                    .open(gate)
                    .map_err(&err)?,
            ),
        };
        Ok(Self {
            access,
            chain,
            writable,
        })
    }

    /// The image's canonical path.
    pub fn path(&self) -> &Path {
        &self.chain[0].path
    }

    /// The chain, top first.
    pub fn chain(&self) -> &[ChainEntry] {
        &self.chain
    }

    /// Virtual size in bytes.
    pub fn size(&self) -> u64 {
        self.access.size()
    }

    /// Reads `buf.len()` bytes at `offset`.
    pub fn read(&self, buf: &mut [u8], offset: u64) -> Result<(), StorageError> {
        self.check_range(offset, buf.len() as u64)?;
        self.access.read(buf, offset).map_err(io_err(self.path()))
    }

    /// Writes `buf` at `offset`.
    pub fn write(&self, buf: &[u8], offset: u64) -> Result<(), StorageError> {
        self.check_writable()?;
        self.check_range(offset, buf.len() as u64)?;
        self.access.write(buf, offset).map_err(io_err(self.path()))
    }

    /// Makes the range read as zeros.
    pub fn write_zeroes(&self, offset: u64, length: u64) -> Result<(), StorageError> {
        self.check_writable()?;
        self.check_range(offset, length)?;
        self.access
            .write_zeroes(offset, length)
            .map_err(io_err(self.path()))
    }

    /// Releases the range: it reads as zeros afterwards and its clusters are freed.
    pub fn discard(&mut self, offset: u64, length: u64) -> Result<(), StorageError> {
        self.check_writable()?;
        self.check_range(offset, length)?;
        let path = self.chain[0].path.clone();
        self.access
            .discard_to_zero(offset, length)
            .map_err(io_err(&path))
    }

    /// Writes metadata and data to stable storage.
    pub fn flush(&self) -> Result<(), StorageError> {
        self.access.flush().map_err(io_err(self.path()))?;
        self.access.sync().map_err(io_err(self.path()))
    }

    fn check_writable(&self) -> Result<(), StorageError> {
        if self.writable {
            Ok(())
        } else {
            Err(StorageError::Invalid(format!(
                "{} is open read-only",
                self.path().display()
            )))
        }
    }

    fn check_range(&self, offset: u64, length: u64) -> Result<(), StorageError> {
        match offset.checked_add(length) {
            Some(end) if end <= self.size() => Ok(()),
            _ => Err(StorageError::Invalid(format!(
                "range {offset}+{length} is beyond the end of the {}-byte disk",
                self.size()
            ))),
        }
    }

    /// Where each range of the disk lives, coalescing neighbours that look the same.
    pub fn map(&self) -> Result<Vec<MapEntry>, StorageError> {
        let mut out: Vec<MapEntry> = Vec::new();
        let size = self.size();
        let mut offset = 0;
        while offset < size {
            let (entry, len) = self.map_one(offset, size - offset)?;
            if len == 0 {
                break;
            }
            let joins = out.last().is_some_and(|last| {
                last.depth == entry.depth
                    && last.present == entry.present
                    && last.zero == entry.zero
                    && last.data == entry.data
                    && last.start + last.length == entry.start
                    && match (last.offset, entry.offset) {
                        (Some(a), Some(b)) => a + last.length == b,
                        (None, None) => true,
                        _ => false,
                    }
            });
            if joins {
                if let Some(last) = out.last_mut() {
                    last.length += len;
                }
            } else {
                out.push(entry);
            }
            offset += len;
        }
        Ok(out)
    }

    fn map_one(&self, start: u64, max: u64) -> Result<(MapEntry, u64), StorageError> {
        let err = io_err(self.path());
        let mut layer = &self.access;
        let mut off = start;
        let mut max = max;
        let mut depth = 0;
        loop {
            let (m, len) = layer.get_shallow_mapping(off, max).map_err(&err)?;
            let len = len.min(max);
            let entry = |present, zero, data, offset| MapEntry {
                start,
                length: len,
                depth,
                present,
                zero,
                data,
                offset,
            };
            return Ok(match m {
                ShallowMapping::Raw { offset, .. } => (entry(true, false, true, Some(offset)), len),
                ShallowMapping::Zero { explicit, .. } => (entry(explicit, true, false, None), len),
                ShallowMapping::Indirect {
                    layer: next,
                    offset: next_off,
                    ..
                } => {
                    layer = next;
                    off = next_off;
                    max = len;
                    depth += 1;
                    continue;
                }
                ShallowMapping::Eof { .. } => (entry(false, true, false, None), max),
                _ => (entry(true, false, false, None), len),
            });
        }
    }

    /// Whether the top image itself defines `[offset, offset+len)`'s first part; returns
    /// (allocated here, zero, length of the run).
    pub(crate) fn top_allocation(
        &self,
        offset: u64,
        max: u64,
    ) -> Result<(bool, bool, u64), StorageError> {
        let (m, len) = self
            .access
            .get_shallow_mapping(offset, max)
            .map_err(io_err(self.path()))?;
        let len = len.min(max);
        Ok(match m {
            ShallowMapping::Raw { .. } => (true, false, len),
            ShallowMapping::Zero { explicit, .. } => (explicit, true, len),
            ShallowMapping::Eof { .. } => (false, true, max),
            _ => (false, false, len),
        })
    }
}
