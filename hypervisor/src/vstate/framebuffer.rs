//! The display's video memory: host memory mapped into the guest as a KVM memory slot at
//! wherever the guest puts the adapter's framebuffer BAR, with KVM's dirty-page log on, so the
//! display thread learns which pages the guest wrote since it last looked without trapping a
//! single write.

use std::sync::{Arc, Mutex};

use kvm_bindings::{kvm_userspace_memory_region, KVM_MEM_LOG_DIRTY_PAGES};
use kvm_ioctls::VmFd;
use vm_memory::mmap::MmapRegion;
use vm_memory::VolatileMemory;

use super::vm::VmError;
use crate::devices::bus::lock;

/// Bytes per dirty-log bit.
pub const PAGE: usize = 4096;

/// The video memory and its slot.
pub struct Framebuffer {
    region: MmapRegion,
    fd: Arc<VmFd>,
    slot: u32,
    /// Guest-physical address of the slot, while mapped.
    at: Mutex<Option<u64>>,
}

impl Framebuffer {
    /// `size` bytes of zeroed video memory for KVM slot `slot` (unused by RAM), not yet mapped.
    pub fn new(fd: Arc<VmFd>, slot: u32, size: usize) -> Result<Self, VmError> {
        let region = MmapRegion::new(size).map_err(|e| {
            tracing::error!(error = %e, size, "cannot map video memory");
            VmError::Ioctl("mmap video memory", kvm_ioctls::Error::new(libc::ENOMEM))
        })?;
        Ok(Self {
            region,
            fd,
            slot,
            at: Mutex::new(None),
        })
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

impl Drop for Framebuffer {
    fn drop(&mut self) {
        let at = *lock(&self.at);
        if let Some(gpa) = at {
            let _ = self.set_slot(gpa, 0);
        }
    }
}
