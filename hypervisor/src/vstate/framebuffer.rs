//! The display's video memory: a memfd mapped into the guest as a KVM memory slot at wherever
//! the guest puts the adapter's framebuffer BAR, with KVM's dirty-page log on, so the display
//! learns which pages the guest wrote since it last looked without trapping a single write.
//! The display process maps the same memfd read-only ([`Framebuffer::read_only_file`]); the
//! memfd is sealed against shrinking, so that process cannot truncate it under the guest.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

use kvm_bindings::{kvm_userspace_memory_region, KVM_MEM_LOG_DIRTY_PAGES};
use kvm_ioctls::VmFd;
use vm_memory::mmap::MmapRegion;
use vm_memory::{FileOffset, VolatileMemory};

use super::vm::VmError;
use crate::devices::bus::lock;

/// Bytes per dirty-log bit.
pub const PAGE: usize = 4096;

/// The video memory and its slot.
pub struct Framebuffer {
    region: MmapRegion,
    memfd: File,
    fd: Arc<VmFd>,
    slot: u32,
    /// Guest-physical address of the slot, while mapped.
    at: Mutex<Option<u64>>,
}

impl Framebuffer {
    /// `size` bytes of zeroed video memory for KVM slot `slot` (unused by RAM), not yet mapped.
    pub fn new(fd: Arc<VmFd>, slot: u32, size: usize) -> Result<Self, VmError> {
        let memfd = sealed_memfd(size)?;
        let region = MmapRegion::from_file(
            FileOffset::new(memfd.try_clone().map_err(VmError::VideoMemory)?, 0),
            size,
        )
        .map_err(|e| {
            tracing::error!(error = %e, size, "cannot map video memory");
            VmError::Ioctl("mmap video memory", kvm_ioctls::Error::new(libc::ENOMEM))
        })?;
        Ok(Self {
            region,
            memfd,
            fd,
            slot,
            at: Mutex::new(None),
        })
    }

    /// The memory, opened anew read-only, for the display process: no mapping made from it
    /// can write, and it cannot resize the memfd.
    pub fn read_only_file(&self) -> std::io::Result<File> {
        File::open(format!("/proc/self/fd/{}", self.memfd.as_raw_fd()))
    }

    /// Size in bytes.
    pub fn len(&self) -> usize {
        self.region.size()
    }

    /// Always false: video memory has a size.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn set_slot(&self, gpa: u64, size: u64) -> Result<(), VmError> {
        let desc = kvm_userspace_memory_region {
            slot: self.slot,
            flags: KVM_MEM_LOG_DIRTY_PAGES,
            guest_phys_addr: gpa,
            memory_size: size,
            userspace_addr: self.region.as_ptr() as u64,
        };
        // SAFETY: the mapping is owned by self and outlives the slot (Drop removes the slot
        // first); the slot number is reserved for video memory, and the BAR's address lies in
        // the PCI hole, which no RAM slot covers.
        unsafe { self.fd.set_user_memory_region(desc) }
            .map_err(|e| VmError::Ioctl("SET_USER_MEMORY_REGION (video memory)", e))
    }

    /// Maps the memory at guest-physical `gpa`, or unmaps it (None), as the guest moves the
    /// BAR or turns memory decoding off. Returns whether anything changed (then the dirty log
    /// restarts: the caller redraws everything).
    pub fn map_at(&self, gpa: Option<u64>) -> Result<bool, VmError> {
        let mut at = lock(&self.at);
        if *at == gpa {
            return Ok(false);
        }
        if let Some(old) = *at {
            // A size of zero deletes the slot.
            self.set_slot(old, 0)?;
            *at = None;
        }
        if let Some(new) = gpa {
            self.set_slot(new, self.len() as u64)?;
            *at = Some(new);
        }
        Ok(true)
    }

    /// Where the memory is mapped now.
    pub fn mapped_at(&self) -> Option<u64> {
        *lock(&self.at)
    }

    /// Which pages the guest wrote since the last call (bit i of word w: page 64w + i), or None
    /// while unmapped.
    pub fn take_dirty(&self) -> Result<Option<Vec<u64>>, VmError> {
        let at = lock(&self.at);
        if at.is_none() {
            return Ok(None);
        }
        self.fd
            .get_dirty_log(self.slot, self.len())
            .map(Some)
            .map_err(|e| VmError::Ioctl("GET_DIRTY_LOG", e))
    }

    /// Copies `buf.len()` bytes from `offset` (the guest may be writing meanwhile; a torn pixel
    /// is redrawn on its next dirty round). Returns false if the range is outside the memory.
    pub fn read(&self, offset: usize, buf: &mut [u8]) -> bool {
        match self.region.get_slice(offset, buf.len()) {
            Ok(s) => {
                s.copy_to(buf);
                true
            }
            Err(_) => false,
        }
    }

    /// Writes `data` at `offset` (the VMM's own drawing, and tests); false if out of range.
    pub fn write(&self, offset: usize, data: &[u8]) -> bool {
        match self.region.get_slice(offset, data.len()) {
            Ok(s) => {
                s.copy_from(data);
                true
            }
            Err(_) => false,
        }
    }
}

/// A memfd of `size` zero bytes that can neither shrink nor grow.
fn sealed_memfd(size: usize) -> Result<File, VmError> {
    let file = super::memory::memfd(c"tessera-video-memory", libc::MFD_ALLOW_SEALING)
        .map_err(VmError::VideoMemory)?;
    file.set_len(size as u64).map_err(VmError::VideoMemory)?;
    let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
    // SAFETY: F_ADD_SEALS on a descriptor we own takes an int and changes only the file's seals.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
        return Err(VmError::VideoMemory(std::io::Error::last_os_error()));
    }
    Ok(file)
}

impl Drop for Framebuffer {
    fn drop(&mut self) {
        let at = *lock(&self.at);
        if let Some(gpa) = at {
            let _ = self.set_slot(gpa, 0);
        }
    }
}
