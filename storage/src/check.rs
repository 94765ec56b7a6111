//! `check`: a qcow2 consistency audit in the manner of `qemu-img check`.
//!
//! Every cluster the metadata references (header, L1 and L2 tables of the active image and of
//! internal snapshots, data and compressed clusters, the refcount table and its blocks, the
//! snapshot table) is counted; the counts are compared with the refcounts stored in the image.
//! A stored refcount with no reference is a leak (wasted space, no harm); a reference the
//! refcount does not match, an unaligned or out-of-file pointer, or a wrong COPIED flag is a
//! corruption. imago has no checker, and this audit is what tells an admin a golden image or a
//! clone is sound after a crash, so it lives here; the tests hold it to qemu-img's verdicts.
//!
//! Everything read from the file is bounded by the file's size and the cluster size, so a
//! hostile image cannot make the checker allocate or read without limit.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::datastore::Format;
use crate::error::StorageError;
use crate::header::{self, Qcow2Header, INCOMPAT_DATA_FILE, INCOMPAT_EXTENDED_L2};

const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const COPIED: u64 = 1 << 63;
const COMPRESSED: u64 = 1 << 62;
const ZERO: u64 = 1;
/// Clusters the checker tracks at most (4 GiB of counters would be needed beyond this).
const MAX_TRACKED_CLUSTERS: u64 = 1 << 28;
/// Per-cluster messages printed at most; the counts stay exact.
const MAX_MESSAGES: usize = 1000;

/// What `check` found, with qemu-img's field names in JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct CheckReport {
    /// The image.
    pub filename: String,
    /// "qcow2".
    pub format: String,
    /// Errors that stopped parts of the check.
    pub check_errors: u64,
    /// Clusters with a refcount but no reference.
    #[serde(skip_serializing_if = "is_zero")]
    pub leaks: u64,
    /// Refcount mismatches and bad pointers.
    #[serde(skip_serializing_if = "is_zero")]
    pub corruptions: u64,
    /// Clusters of guest data (normal, preallocated zero, compressed) in the active image.
    pub allocated_clusters: u64,
    /// Clusters of the virtual disk.
    pub total_clusters: u64,
    /// Data clusters not right after the previous one in the file.
    pub fragmented_clusters: u64,
    /// Compressed data clusters.
    pub compressed_clusters: u64,
    /// End of the last cluster in use.
    pub image_end_offset: u64,
    /// One line per problem, as qemu-img prints them (at most 1,000).
    #[serde(skip)]
    pub messages: Vec<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl CheckReport {
    /// qemu-img's exit status: 0 clean, 2 corruptions, 3 leaks only.
    pub fn exit_status(&self) -> i32 {
        if self.corruptions > 0 || self.check_errors > 0 {
            2
        } else if self.leaks > 0 {
            3
        } else {
            0
        }
    }

    fn note(&mut self, line: String) {
        if self.messages.len() < MAX_MESSAGES {
            self.messages.push(line);
        }
    }
}

struct Checker {
    file: File,
    file_size: u64,
    h: Qcow2Header,
    cs: u64,
    refs: Vec<u32>,
    report: CheckReport,
    /// (file offset of an L1/L2 entry's target, whether COPIED was set) for the flag audit.
    copied: Vec<(u64, bool)>,
}

/// Checks the qcow2 image at `path`.
pub fn check(path: &Path) -> Result<CheckReport, StorageError> {
    if Format::probe(path)? != Format::Qcow2 {
        return Err(StorageError::Unsupported(
            "this image format does not support checks".into(),
        ));
    }
    let h = header::read(path)?;
    if h.incompatible_features & INCOMPAT_DATA_FILE != 0 {
        return Err(StorageError::Unsupported(
            "checking images with an external data file".into(),
        ));
    }
    let file = File::open(path).map_err(|e| StorageError::io(path, e))?;
    let file_size = file
        .metadata()
        .map_err(|e| StorageError::io(path, e))?
        .len();
    let cs = h.cluster_size();
    let tracked = file_size.div_ceil(cs);
    if tracked > MAX_TRACKED_CLUSTERS {
        return Err(StorageError::Unsupported(format!(
            "images of more than {MAX_TRACKED_CLUSTERS} clusters"
        )));
    }
    let mut c = Checker {
        file,
        file_size,
        cs,
        refs: vec![0; tracked as usize],
        report: CheckReport {
            filename: path.display().to_string(),
            format: "qcow2".into(),
            total_clusters: h.size.div_ceil(cs),
            ..Default::default()
        },
        h,
        copied: Vec::new(),
    };
    c.run().map_err(|e| StorageError::io(path, e))?;
    Ok(c.report)
}

impl Checker {
    fn run(&mut self) -> std::io::Result<()> {
        self.reference(0, 1, "header");
        let (l1_off, l1_size) = (self.h.l1_table_offset, self.h.l1_size);
        self.walk_l1(l1_off, l1_size, true)?;
        self.walk_snapshots()?;
        let rt = self.h.refcount_table_offset;
        let rt_len = u64::from(self.h.refcount_table_clusters) * self.cs;
        self.reference(rt, rt_len, "refcount table");
        let table = self.read_bounded(rt, rt_len, "refcount table")?;
        for (i, e) in table.chunks_exact(8).enumerate() {
            let block = be64(e) & !0x1ff;
            if block != 0 {
                if !block.is_multiple_of(self.cs) {
                    self.corrupt(format!("ERROR refcount block {i} is not cluster aligned"));
                    continue;
                }
                self.reference(block, self.cs, "refcount block");
            }
        }
        self.compare(&table)
    }

    /// Reads `len` bytes at `off`, or records a corruption and returns nothing when the range
    /// leaves the file.
    fn read_bounded(&mut self, off: u64, len: u64, what: &str) -> std::io::Result<Vec<u8>> {
        match off.checked_add(len) {
            Some(end) if end <= self.file_size => {
                let mut buf = vec![0u8; len as usize];
                self.file.read_exact_at(&mut buf, off)?;
                Ok(buf)
            }
            _ => {
                self.corrupt(format!(
                    "ERROR {what} at {off:#x} ({len} bytes) lies beyond the end of the file"
                ));
                Ok(Vec::new())
            }
        }
    }

    fn corrupt(&mut self, line: String) {
        self.report.corruptions += 1;
        self.report.note(line);
    }

    /// Counts one reference to every cluster of [off, off + len).
    fn reference(&mut self, off: u64, len: u64, what: &str) {
        if len == 0 {
            return;
        }
        let first = off / self.cs;
        let last = (off.saturating_add(len) - 1) / self.cs;
        for c in first..=last {
            match self.refs.get_mut(c as usize) {
                Some(r) => *r = r.saturating_add(1),
                None => {
                    self.corrupt(format!(
                        "ERROR {what} cluster {c} is beyond the end of the file"
                    ));
                    return;
                }
            }
        }
    }

    fn walk_l1(&mut self, off: u64, entries: u32, active: bool) -> std::io::Result<()> {
        let len = u64::from(entries) * 8;
        self.reference(off, len, "L1 table");
        let l1 = self.read_bounded(off, len, "L1 table")?;
        for (i, e) in l1.chunks_exact(8).enumerate() {
            let e = be64(e);
            let l2 = e & OFFSET_MASK;
            if l2 == 0 {
                continue;
            }
            if !l2.is_multiple_of(self.cs) {
                self.corrupt(format!(
                    "ERROR L2 table of L1 entry {i} at {l2:#x} is not cluster aligned"
                ));
                continue;
            }
            self.reference(l2, self.cs, "L2 table");
            if active {
                self.copied.push((l2, e & COPIED != 0));
            }
            let table = self.read_bounded(l2, self.cs, "L2 table")?;
            self.walk_l2(&table, active);
        }
        Ok(())
    }

    /// One L2 table. Fragmentation is counted within a table, and compressed clusters count as
    /// fragmented, as qemu-img does.
    fn walk_l2(&mut self, table: &[u8], active: bool) {
        let mut next_contiguous = 0;
        let step = if self.h.incompatible_features & INCOMPAT_EXTENDED_L2 != 0 {
            16
        } else {
            8
        };
        let bits = self.h.cluster_bits;
        for e in table.chunks_exact(step) {
            let e = be64(&e[..8]);
            if e & COMPRESSED != 0 {
                let shift = 62 - (bits - 8);
                let coffset = e & ((1 << shift) - 1);
                let sectors = ((e >> shift) & ((1 << (bits - 8)) - 1)) + 1;
                let len = (sectors * 512).saturating_sub(coffset & 511);
                self.reference(coffset, len, "compressed cluster");
                if active {
                    self.report.allocated_clusters += 1;
                    self.report.compressed_clusters += 1;
                    self.report.fragmented_clusters += 1;
                }
                if e & COPIED != 0 {
                    self.corrupt(format!(
                        "ERROR compressed cluster at {coffset:#x} has COPIED set"
                    ));
                }
                continue;
            }
            let off = e & OFFSET_MASK;
            if off == 0 {
                continue;
            }
            if !off.is_multiple_of(self.cs) {
                let zero = if e & ZERO != 0 { " (zero)" } else { "" };
                self.corrupt(format!(
                    "ERROR data cluster{zero} at {off:#x} is not cluster aligned"
                ));
                continue;
            }
            self.reference(off, self.cs, "data cluster");
            if active {
                self.report.allocated_clusters += 1;
                if next_contiguous != 0 && off != next_contiguous {
                    self.report.fragmented_clusters += 1;
                }
                next_contiguous = off + self.cs;
                self.copied.push((off, e & COPIED != 0));
            }
        }
    }

    /// Internal snapshots: their table and their L1 tables (whose L2 tables and data are
    /// shared with the active image, hence refcounts above 1).
    fn walk_snapshots(&mut self) -> std::io::Result<()> {
        let n = self.h.nb_snapshots;
        if n == 0 {
            return Ok(());
        }
        let mut off = self.h.snapshots_offset;
        let start = off;
        for i in 0..n {
            let fixed = self.read_bounded(off, 40, "snapshot table")?;
            if fixed.len() < 40 {
                return Ok(());
            }
            let l1_off = be64(&fixed[0..8]);
            let l1_size = u32::from_be_bytes([fixed[8], fixed[9], fixed[10], fixed[11]]);
            let id_len = u64::from(u16::from_be_bytes([fixed[12], fixed[13]]));
            let name_len = u64::from(u16::from_be_bytes([fixed[14], fixed[15]]));
            let extra = u64::from(u32::from_be_bytes([
                fixed[36], fixed[37], fixed[38], fixed[39],
            ]));
            if !l1_off.is_multiple_of(self.cs) || l1_size > (32 << 20) / 8 {
                self.corrupt(format!("ERROR snapshot {i} has a bad L1 table"));
            } else {
                self.walk_l1(l1_off, l1_size, false)?;
            }
            off = (off + 40 + extra + id_len + name_len).next_multiple_of(8);
        }
        self.reference(start, off - start, "snapshot table");
        Ok(())
    }

    /// Refcount of every tracked cluster as stored, reading each refcount block once.
    fn stored_refcounts(&mut self, table: &[u8]) -> std::io::Result<Vec<u64>> {
        let bits = 1u64 << self.h.refcount_order;
        let per_block = self.cs * 8 / bits;
        let mut out = vec![0u64; self.refs.len()];
        for (idx, e) in table.chunks_exact(8).enumerate() {
            let first = idx as u64 * per_block;
            if first >= out.len() as u64 {
                break;
            }
            let block_off = be64(e) & !0x1ff;
            let ok = block_off != 0
                && block_off.is_multiple_of(self.cs)
                && block_off
                    .checked_add(self.cs)
                    .is_some_and(|end| end <= self.file_size);
            if !ok {
                continue;
            }
            let mut block = vec![0u8; self.cs as usize];
            self.file.read_exact_at(&mut block, block_off)?;
            let n = per_block.min(out.len() as u64 - first);
            for i in 0..n {
                out[(first + i) as usize] = refcount_at(&block, i, bits);
            }
        }
        Ok(out)
    }

    /// Stored refcounts against references, then the COPIED flags.
    fn compare(&mut self, table: &[u8]) -> std::io::Result<()> {
        let mut last_used = 0;
        let stored_of = self.stored_refcounts(table)?;
        for c in 0..self.refs.len() as u64 {
            let stored = stored_of[c as usize];
            let reference = u64::from(self.refs[c as usize]);
            if stored > 0 || reference > 0 {
                last_used = c + 1;
            }
            if stored == reference {
                continue;
            }
            if reference == 0 {
                self.report.leaks += 1;
                self.report
                    .note(format!("Leaked cluster {c} refcount={stored} reference=0"));
            } else {
                self.corrupt(format!(
                    "ERROR cluster {c} refcount={stored} reference={reference}"
                ));
            }
        }
        self.report.image_end_offset = last_used * self.cs;
        let copied = std::mem::take(&mut self.copied);
        for (off, flag) in copied {
            let stored = stored_of
                .get((off / self.cs) as usize)
                .copied()
                .unwrap_or(0);
            if flag != (stored == 1) {
                self.corrupt(format!(
                    "ERROR OFLAG_COPIED cluster at {off:#x}: refcount={stored}, flag {}",
                    if flag { "set" } else { "clear" }
                ));
            }
        }
        Ok(())
    }
}

/// Entry `i` of a refcount block of `bits`-wide big-endian entries (sub-byte entries are
/// packed from the least significant bit, as QEMU writes them).
fn refcount_at(block: &[u8], i: u64, bits: u64) -> u64 {
    if bits < 8 {
        let byte = block[(i * bits / 8) as usize];
        return u64::from(byte >> ((i * bits) % 8)) & ((1 << bits) - 1);
    }
    let width = (bits / 8) as usize;
    let start = i as usize * width;
    block[start..start + width]
        .iter()
        .fold(0, |v, b| v << 8 | u64::from(*b))
}

fn be64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_be_bytes(a)
}
