//! The guest's video memory as this process sees it: the VMM's memfd, mapped read-only. The
//! descriptor itself is read-only (the VMM reopens it so), so no mapping of ours can write the
//! guest's pixels, and the memfd is sealed against resizing, so nothing here can shrink it
//! under the VMM.

use std::fs::File;

use vm_memory::mmap::{MmapRegion, MmapRegionBuilder};
use vm_memory::{FileOffset, VolatileMemory};

/// Why video memory could not be mapped.
#[derive(Debug, thiserror::Error)]
pub enum VideoError {
    /// mmap failed, or the file is smaller than announced.
    #[error("cannot map {size} bytes of video memory: {reason}")]
    Map {
        /// Bytes asked for.
        size: usize,
        /// Why.
        reason: String,
    },
}

/// Read-only video memory.
pub struct Video {
    region: MmapRegion<()>,
}

impl Video {
    /// Maps `size` bytes of `file`.
    pub fn map(file: File, size: usize) -> Result<Self, VideoError> {
        let map_err = |reason: String| VideoError::Map { size, reason };
        let len = file.metadata().map_err(|e| map_err(e.to_string()))?.len();
        if len < size as u64 || size == 0 {
            return Err(map_err(format!("the file has {len} bytes")));
        }
        let region = MmapRegionBuilder::new_with_bitmap(size, ())
            .with_file_offset(FileOffset::new(file, 0))
            .with_mmap_prot(libc::PROT_READ)
            .with_mmap_flags(libc::MAP_SHARED)
            .build()
            .map_err(|e| map_err(e.to_string()))?;
        Ok(Self { region })
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.region.size()
    }

    /// Always false: video memory has a size.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies `buf.len()` bytes from `offset` (the guest may be writing meanwhile: a torn pixel
    /// is redrawn on its next dirty round). False if the range is outside the memory.
    pub fn read(&self, offset: usize, buf: &mut [u8]) -> bool {
        match self.region.get_slice(offset, buf.len()) {
            Ok(s) => {
                s.copy_to(buf);
                true
            }
            Err(_) => false,
        }
    }
}
