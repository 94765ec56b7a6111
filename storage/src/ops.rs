//! Disk operations as FusionCompute defines them: create (thin), linked clone, snapshot,
//! revert (also "refresh on logoff"), commit ("delete snapshot": merge an overlay into its
//! base) and flatten (full clone). Every operation that replaces or adds a file builds it under
//! a temporary name and moves it into place with one atomic step, so a crash leaves either the
//! old state or the new one.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use imago::file::File;
use imago::qcow2::Qcow2;
use imago::{FormatCreateBuilder, Storage, StorageCreateOptions};

use crate::datastore::{relative_to, Datastore, Format};
use crate::error::StorageError;
use crate::header;
use crate::image::Disk;

/// Default qcow2 cluster size.
pub const DEFAULT_CLUSTER_SIZE: usize = 64 * 1024;
/// Copy granularity for commit and flatten.
const COPY_CHUNK: u64 = 4 << 20;

/// Whether a new image is synced to disk before the call returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync the image and its directory (the default for single operations).
    Sync,
    /// Leave syncing to the caller (batch creation followed by one `syncfs`).
    Deferred,
}

static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

fn temp_beside(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let seq = TEMP_SEQ.fetch_add(1, Ordering::Relaxed);
    target.with_file_name(format!(".{name}.tmp-{}-{seq}", std::process::id()))
}

fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StorageError::io(dir, e))
}

fn parent(p: &Path) -> &Path {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Moves `temp` to `target`, failing if `target` exists (link, then unlink the temp name).
fn place_new(temp: &Path, target: &Path, durability: Durability) -> Result<(), StorageError> {
    let linked = std::fs::hard_link(temp, target);
    let _ = std::fs::remove_file(temp);
    linked.map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => {
            StorageError::Invalid(format!("{} already exists", target.display()))
        }
        _ => StorageError::io(target, e),
    })?;
    if durability == Durability::Sync {
        sync_dir(parent(target))?;
    }
    Ok(())
}

/// Atomically replaces `target` with `temp`.
fn place_replace(temp: &Path, target: &Path) -> Result<(), StorageError> {
    std::fs::rename(temp, target).map_err(|e| {
        let _ = std::fs::remove_file(temp);
        StorageError::io(target, e)
    })?;
    sync_dir(parent(target))
}

/// Writes a new qcow2 file at `path` (which must not exist yet).
fn write_qcow2(
    path: &Path,
    size: u64,
    cluster_size: usize,
    backing: Option<(&str, Format)>,
    durability: Durability,
) -> Result<(), StorageError> {
    let io = |e| StorageError::io(path, e);
    let file = File::create_open(StorageCreateOptions::new().filename(path)).map_err(io)?;
    let mut b = Qcow2::<File>::create_builder(file)
        .size(size)
        .cluster_size(cluster_size);
    if let Some((name, fmt)) = backing {
        b = b.backing(name.to_string(), fmt.name().to_string());
    }
    b.create().map_err(io)?;
    if durability == Durability::Sync {
        std::fs::File::open(path)
            .and_then(|f| f.sync_all())
            .map_err(io)?;
    }
    Ok(())
}

fn check_cluster_size(cluster_size: usize) -> Result<(), StorageError> {
    if cluster_size.is_power_of_two() && (512..=2 << 20).contains(&cluster_size) {
        Ok(())
    } else {
        Err(StorageError::Invalid(format!(
            "cluster size {cluster_size} must be a power of two from 512 B to 2 MiB"
        )))
    }
}

/// The target must be a new file in an existing directory inside the datastore.
fn new_target(ds: &Datastore, target: &Path) -> Result<PathBuf, StorageError> {
    let dir = ds.confine_dir(parent(target))?;
    let name = target
        .file_name()
        .ok_or_else(|| StorageError::Invalid(format!("{} has no file name", target.display())))?;
    let full = dir.join(name);
    if full.exists() {
        return Err(StorageError::Invalid(format!(
            "{} already exists",
            full.display()
        )));
    }
    Ok(full)
}

/// Creates a thin image of `size` bytes.
pub fn create(
    ds: &Datastore,
    target: &Path,
    size: u64,
    format: Format,
    cluster_size: usize,
) -> Result<PathBuf, StorageError> {
    check_cluster_size(cluster_size)?;
    if size == 0 {
        return Err(StorageError::Invalid("disk size must be above zero".into()));
    }
    let target = new_target(ds, target)?;
    let temp = temp_beside(&target);
    match format {
        Format::Qcow2 => write_qcow2(&temp, size, cluster_size, None, Durability::Sync)?,
        Format::Raw => {
            let f = std::fs::File::create(&temp).map_err(|e| StorageError::io(&temp, e))?;
            f.set_len(size).map_err(|e| StorageError::io(&temp, e))?;
        }
    }
    place_new(&temp, &target, Durability::Sync)?;
    Ok(target)
}

/// Creates a qcow2 overlay at `target` whose backing file is `base`, an image in
/// `base_format`: a linked clone. The overlay records that format.
pub fn linked_clone(
    ds: &Datastore,
    base: &Path,
    base_format: Format,
    target: &Path,
    durability: Durability,
) -> Result<PathBuf, StorageError> {
    let base_chain = ds.chain(base, base_format)?;
    let base = &base_chain[0];
    let size = match base.format {
        Format::Qcow2 => header::read(&base.path)?.size,
        Format::Raw => std::fs::metadata(&base.path)
            .map_err(|e| StorageError::io(&base.path, e))?
            .len(),
    };
    let target = new_target(ds, target)?;
    let name = relative_to(&base.path, parent(&target));
    let temp = temp_beside(&target);
    write_qcow2(
        &temp,
        size,
        DEFAULT_CLUSTER_SIZE,
        Some((&name.to_string_lossy(), base.format)),
        durability,
    )?;
    place_new(&temp, &target, durability)?;
    Ok(target)
}

/// Takes a snapshot of the disk at `active` (an image in `format`): its current content
/// becomes the read-only file `snapshot`, and `active` becomes a new empty overlay on it. The
/// disk must not be in use.
pub fn snapshot(
    ds: &Datastore,
    active: &Path,
    format: Format,
    snapshot: &Path,
) -> Result<PathBuf, StorageError> {
    let active = ds.confine(active, active)?;
    let (size, cluster) = match format {
        Format::Qcow2 => {
            let h = header::read(&active)?;
            (h.size, h.cluster_size() as usize)
        }
        Format::Raw => (
            std::fs::metadata(&active)
                .map_err(|e| StorageError::io(&active, e))?
                .len(),
            DEFAULT_CLUSTER_SIZE,
        ),
    };
    let snap = new_target(ds, snapshot)?;
    // 1. A second name for the current content; a crash here leaves an extra link only.
    std::fs::hard_link(&active, &snap).map_err(|e| StorageError::io(&snap, e))?;
    // 2. The new overlay under a temporary name.
    let name = relative_to(&snap, parent(&active));
    let temp = temp_beside(&active);
    if let Err(e) = write_qcow2(
        &temp,
        size,
        cluster,
        Some((&name.to_string_lossy(), format)),
        Durability::Sync,
    ) {
        let _ = std::fs::remove_file(&snap);
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    // 3. The overlay becomes the active disk in one rename.
    place_replace(&temp, &active)?;
    // 4. Only now is the snapshot's inode no longer the active disk's: make it read-only.
    let mut perms = std::fs::metadata(&snap)
        .map_err(|e| StorageError::io(&snap, e))?
        .permissions();
    perms.set_readonly(true);
    std::fs::set_permissions(&snap, perms).map_err(|e| StorageError::io(&snap, e))?;
    Ok(snap)
}

/// Throws away everything written to the overlay `active` since it was created: a new empty
/// overlay on the same backing file replaces it (FusionAccess's refresh on logoff).
/// An overlay is qcow2 by definition (a raw image has no backing file).
pub fn revert(ds: &Datastore, active: &Path) -> Result<(), StorageError> {
    let chain = ds.chain(active, Format::Qcow2)?;
    let top = &chain[0];
    let base = chain.get(1).ok_or_else(|| {
        StorageError::Invalid(format!(
            "{} has no backing file to revert to",
            top.path.display()
        ))
    })?;
    let h = header::read(&top.path)?;
    let name = h.backing_file.clone().unwrap_or_default();
    let temp = temp_beside(&top.path);
    write_qcow2(
        &temp,
        h.size,
        h.cluster_size() as usize,
        Some((&name, base.format)),
        Durability::Sync,
    )?;
    place_replace(&temp, &top.path)
}

/// Copies everything `src`'s top image itself defines into `dst` at the same offsets.
fn copy_top_layer(src: &Disk, dst: &Disk) -> Result<(), StorageError> {
    let size = src.size();
    let mut buf = Vec::new();
    let mut offset = 0;
    while offset < size {
        let (allocated, zero, len) = src.top_allocation(offset, (size - offset).min(COPY_CHUNK))?;
        if len == 0 {
            break;
        }
        if allocated {
            if zero {
                dst.write_zeroes(offset, len)?;
            } else {
                buf.resize(len as usize, 0);
                src.read(&mut buf, offset)?;
                dst.write(&buf, offset)?;
            }
        }
        offset += len;
    }
    Ok(())
}

/// Merges the overlay into its backing file and removes it; images above it are re-pointed to
/// the backing file ("delete snapshot"). Refuses when another image shares the backing file,
/// since writing into it would change that image too.
///
/// Crash safety: until the overlay is removed, it still shadows every range it defines with
/// the same data the base now holds, so a crash at any point reads the same disk, and running
/// the commit again finishes it.
pub fn commit(ds: &Datastore, overlay: &Path) -> Result<PathBuf, StorageError> {
    let chain = ds.chain(overlay, Format::Qcow2)?;
    let top = chain[0].path.clone();
    let base = chain
        .get(1)
        .ok_or_else(|| StorageError::Invalid(format!("{} has no backing file", top.display())))?
        .clone();
    let others: Vec<PathBuf> = ds
        .users_of(&base.path)?
        .into_iter()
        .filter(|u| u.canonicalize().map(|c| c != top).unwrap_or(true))
        .collect();
    if !others.is_empty() {
        return Err(StorageError::SharedBase {
            image: base.path.clone(),
            users: others.len(),
        });
    }
    let children = ds.users_of(&top)?;
    {
        let src = Disk::open(ds, &top, Format::Qcow2, false)?;
        let dst = Disk::open(ds, &base.path, base.format, true)?;
        if src.size() > dst.size() {
            return Err(StorageError::Unsupported(format!(
                "the overlay ({} bytes) is larger than its base ({} bytes)",
                src.size(),
                dst.size()
            )));
        }
        copy_top_layer(&src, &dst)?;
        dst.flush()?;
    }
    for child in &children {
        let name = relative_to(
            &base.path,
            parent(
                &child
                    .canonicalize()
                    .map_err(|e| StorageError::io(child, e))?,
            ),
        );
        header::set_backing(child, &name.to_string_lossy(), base.format.name())?;
    }
    std::fs::remove_file(&top).map_err(|e| StorageError::io(&top, e))?;
    sync_dir(parent(&top))?;
    Ok(base.path)
}

/// Writes a standalone qcow2 copy of the disk at `src` (an image in `format`, with its whole
/// chain) to `target`: a full clone.
pub fn flatten(
    ds: &Datastore,
    src: &Path,
    format: Format,
    target: &Path,
) -> Result<PathBuf, StorageError> {
    import(ds, src, format, ds, target)
}

/// Writes a standalone qcow2 copy of `src` (an image in `format` whose chain is confined to
/// `from`, e.g. an image library) to `target`, a new file in datastore `to`: how a base image
/// enters a datastore. Whatever `src` was, what lands is qcow2 without a backing file, so
/// every later open of it knows its format without looking at its content.
pub fn import(
    from: &Datastore,
    src: &Path,
    format: Format,
    to: &Datastore,
    target: &Path,
) -> Result<PathBuf, StorageError> {
    let source = Disk::open(from, src, format, false)?;
    let target = new_target(to, target)?;
    let temp = temp_beside(&target);
    write_qcow2(
        &temp,
        source.size(),
        DEFAULT_CLUSTER_SIZE,
        None,
        Durability::Deferred,
    )?;
    let result = (|| {
        let dst = Disk::open(to, &temp, Format::Qcow2, true)?;
        let mut buf = Vec::new();
        for m in source.map()? {
            if m.zero {
                continue;
            }
            let mut off = m.start;
            while off < m.start + m.length {
                let len = (m.start + m.length - off).min(COPY_CHUNK);
                buf.resize(len as usize, 0);
                source.read(&mut buf, off)?;
                dst.write(&buf, off)?;
                off += len;
            }
        }
        dst.flush()
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    place_new(&temp, &target, Durability::Sync)?;
    Ok(target)
}
