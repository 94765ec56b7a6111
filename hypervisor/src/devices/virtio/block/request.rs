//! One virtio-blk request: its descriptor chain checked and carried out against the disk.
//!
//! The chain comes from the guest and is untrusted: every buffer must lie inside guest memory
//! (virtio-queue's Reader and Writer refuse the chain otherwise), device-readable buffers must
//! come before device-writable ones, sizes and sector ranges are checked with overflow-safe
//! arithmetic, and data moves through a bounded bounce buffer whatever size the guest claims.

use std::io::{Read, Write};
use std::sync::RwLock;

use tessera_storage::Disk;
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_DISCARD,
    VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
    VIRTIO_BLK_T_WRITE_ZEROES,
};
use virtio_queue::{DescriptorChain, Reader, Writer};
use vm_memory::GuestMemoryMmap;

/// virtio-blk sectors are 512 bytes whatever the disk's block size.
pub const SECTOR_SIZE: u64 = 512;
/// Bytes moved between the disk and guest memory per step.
pub const BOUNCE_SIZE: usize = 1 << 20;
/// Segments accepted in one discard or write-zeroes request.
pub const MAX_DISCARD_SEGMENTS: u32 = 32;
/// Sectors per discard or write-zeroes segment (1 GiB).
pub const MAX_DISCARD_SECTORS: u32 = 1 << 21;
/// Bytes in a device ID string.
pub const ID_BYTES: usize = 20;

const HEADER_SIZE: usize = 16;
const SEGMENT_SIZE: usize = 16;
const WRITE_ZEROES_UNMAP: u32 = 1;

/// Why a chain could not even be answered (no status byte to write).
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// A buffer lies outside guest memory, or the lengths overflow.
    #[error("descriptor outside guest memory or too long: {0}")]
    Memory(virtio_queue::Error),
    /// A device-readable buffer follows a device-writable one.
    #[error("device-readable descriptor after a device-writable one")]
    Order,
    /// No device-writable byte for the status.
    #[error("no device-writable byte for the status")]
    NoStatus,
}

/// The disk and what a queue needs to serve it.
pub struct BlockBackend {
    /// The image; a write lock only for discards, which may free clusters under readers.
    pub disk: RwLock<Disk>,
    /// Writes fail with IOERR.
    pub read_only: bool,
    /// GET_ID answer, NUL-padded.
    pub id: [u8; ID_BYTES],
}

/// What a request did: the status written, and the storage error behind an IOERR.
#[derive(Debug)]
pub struct Outcome {
    /// Status byte.
    pub status: u8,
    /// Bytes written into device-writable buffers (data and status): the used length.
    pub used: u32,
    /// Why the request failed, for the queue's (rate-limited) log.
    pub error: Option<String>,
}

impl BlockBackend {
    /// `disk` with `serial` as its ID (GET_ID: at most [`ID_BYTES`] kept, NUL-padded).
    pub fn new(disk: Disk, read_only: bool, serial: &str) -> Self {
        let mut id = [0u8; ID_BYTES];
        let s = serial.as_bytes();
        let n = s.len().min(ID_BYTES);
        id[..n].copy_from_slice(&s[..n]);
        Self {
            disk: RwLock::new(disk),
            read_only,
            id,
        }
    }

    /// The image, for reads and writes (a discard takes it for itself meanwhile).
    pub fn image(&self) -> std::sync::RwLockReadGuard<'_, Disk> {
        self.disk.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes what the guest wrote to stable storage (at reset and when the VM ends); failures
    /// are logged with the disk's `name`.
    pub fn flush(&self, name: &str) {
        if self.read_only {
            return;
        }
        if let Err(e) = self.image().flush() {
            tracing::warn!(disk = name, error = %e, "virtio-blk: flush failed");
        }
    }
}

/// Checks the order rule and that the chain ends in a device-writable byte.
fn check_layout(chain: DescriptorChain<&GuestMemoryMmap>) -> Result<(), ChainError> {
    let mut seen_writable = false;
    for d in chain {
        if d.is_write_only() {
            seen_writable = true;
        } else if seen_writable {
            return Err(ChainError::Order);
        }
    }
    seen_writable.then_some(()).ok_or(ChainError::NoStatus)
}

/// Carries out one request. `bounce` is the queue's reusable buffer.
pub fn handle(
    chain: DescriptorChain<&GuestMemoryMmap>,
    memory: &GuestMemoryMmap,
    backend: &BlockBackend,
    bounce: &mut Vec<u8>,
) -> Result<Outcome, ChainError> {
    check_layout(chain.clone())?;
    let mut reader = Reader::new(memory, chain.clone()).map_err(ChainError::Memory)?;
    let mut data = Writer::new(memory, chain).map_err(ChainError::Memory)?;
    let avail = data.available_bytes();
    if avail == 0 {
        return Err(ChainError::NoStatus);
    }
    let mut status_w = data.split_at(avail - 1).map_err(ChainError::Memory)?;

    let (status, error) = match execute(&mut reader, &mut data, backend, bounce) {
        Ok(s) => (s, None),
        Err(e) => (VIRTIO_BLK_S_IOERR as u8, Some(e)),
    };
    // The status byte lies in guest memory checked above; this cannot fail short.
    let _ = status_w.write_all(&[status]);
    let used = u32::try_from(data.bytes_written() + 1).unwrap_or(u32::MAX);
    Ok(Outcome {
        status,
        used,
        error,
    })
}

/// Byte range of `len` bytes at `sector`, checked against the disk size.
fn byte_range(sector: u64, len: u64, size: u64) -> Result<u64, String> {
    let offset = sector.checked_mul(SECTOR_SIZE);
    match offset.and_then(|o| o.checked_add(len).map(|end| (o, end))) {
        Some((o, end)) if end <= size && len.is_multiple_of(SECTOR_SIZE) => Ok(o),
        _ => Err(format!(
            "request for {len} bytes at sector {sector} is beyond the {size}-byte disk or not whole sectors"
        )),
    }
}

fn execute(
    reader: &mut Reader<'_>,
    data: &mut Writer<'_>,
    backend: &BlockBackend,
    bounce: &mut Vec<u8>,
) -> Result<u8, String> {
    let mut header = [0u8; HEADER_SIZE];
    reader
        .read_exact(&mut header)
        .map_err(|_| "request header shorter than 16 bytes".to_string())?;
    let kind = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let mut sector_bytes = [0u8; 8];
    sector_bytes.copy_from_slice(&header[8..16]);
    let sector = u64::from_le_bytes(sector_bytes);
    match kind {
        VIRTIO_BLK_T_IN => read_request(sector, data, backend, bounce),
        VIRTIO_BLK_T_OUT => write_request(sector, reader, backend, bounce),
        VIRTIO_BLK_T_FLUSH => {
            if !backend.read_only {
                backend.image().flush().map_err(|e| e.to_string())?;
            }
            Ok(VIRTIO_BLK_S_OK as u8)
        }
        VIRTIO_BLK_T_GET_ID => {
            let n = data.available_bytes().min(ID_BYTES);
            data.write_all(&backend.id[..n])
                .map_err(|e| e.to_string())?;
            Ok(VIRTIO_BLK_S_OK as u8)
        }
        VIRTIO_BLK_T_DISCARD | VIRTIO_BLK_T_WRITE_ZEROES => {
            zero_request(kind == VIRTIO_BLK_T_DISCARD, reader, backend)
        }
        _ => Ok(VIRTIO_BLK_S_UNSUPP as u8),
    }
}

fn read_request(
    sector: u64,
    data: &mut Writer<'_>,
    backend: &BlockBackend,
    bounce: &mut Vec<u8>,
) -> Result<u8, String> {
    let disk = backend.image();
    let len = data.available_bytes() as u64;
    let mut offset = byte_range(sector, len, disk.size())?;
    let mut left = len as usize;
    while left > 0 {
        let n = left.min(BOUNCE_SIZE);
        bounce.resize(n, 0);
        disk.read(&mut bounce[..n], offset)
            .map_err(|e| e.to_string())?;
        data.write_all(&bounce[..n]).map_err(|e| e.to_string())?;
        offset += n as u64;
        left -= n;
    }
    Ok(VIRTIO_BLK_S_OK as u8)
}

fn write_request(
    sector: u64,
    reader: &mut Reader<'_>,
    backend: &BlockBackend,
    bounce: &mut Vec<u8>,
) -> Result<u8, String> {
    if backend.read_only {
        return Err("write to a read-only disk".into());
    }
    let disk = backend.image();
    let len = reader.available_bytes() as u64;
    let mut offset = byte_range(sector, len, disk.size())?;
    let mut left = len as usize;
    while left > 0 {
        let n = left.min(BOUNCE_SIZE);
        bounce.resize(n, 0);
        reader
            .read_exact(&mut bounce[..n])
            .map_err(|e| e.to_string())?;
        disk.write(&bounce[..n], offset)
            .map_err(|e| e.to_string())?;
        offset += n as u64;
        left -= n;
    }
    Ok(VIRTIO_BLK_S_OK as u8)
}

/// DISCARD and WRITE_ZEROES: a list of {sector, sectors, flags} segments.
fn zero_request(
    discard: bool,
    reader: &mut Reader<'_>,
    backend: &BlockBackend,
) -> Result<u8, String> {
    if backend.read_only {
        return Err("discard or write-zeroes on a read-only disk".into());
    }
    let count = reader.available_bytes() / SEGMENT_SIZE;
    if count == 0 || count > MAX_DISCARD_SEGMENTS as usize {
        return Ok(VIRTIO_BLK_S_UNSUPP as u8);
    }
    for _ in 0..count {
        let mut seg = [0u8; SEGMENT_SIZE];
        reader.read_exact(&mut seg).map_err(|e| e.to_string())?;
        let mut s = [0u8; 8];
        s.copy_from_slice(&seg[0..8]);
        let sector = u64::from_le_bytes(s);
        let sectors = u32::from_le_bytes([seg[8], seg[9], seg[10], seg[11]]);
        let flags = u32::from_le_bytes([seg[12], seg[13], seg[14], seg[15]]);
        // Discard takes no flags; write-zeroes knows only "unmap allowed".
        let allowed = if discard { 0 } else { WRITE_ZEROES_UNMAP };
        if flags & !allowed != 0 || sectors > MAX_DISCARD_SECTORS {
            return Ok(VIRTIO_BLK_S_UNSUPP as u8);
        }
        let len = u64::from(sectors) * SECTOR_SIZE;
        if discard || flags & WRITE_ZEROES_UNMAP != 0 {
            let mut disk = backend.disk.write().unwrap_or_else(|p| p.into_inner());
            let offset = byte_range(sector, len, disk.size())?;
            disk.discard(offset, len).map_err(|e| e.to_string())?;
        } else {
            let disk = backend.image();
            let offset = byte_range(sector, len, disk.size())?;
            disk.write_zeroes(offset, len).map_err(|e| e.to_string())?;
        }
    }
    Ok(VIRTIO_BLK_S_OK as u8)
}
