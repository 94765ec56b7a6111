//! Firmware flash in guest memory: a file mapped into the guest as a read-only KVM memory
//! slot below 4 GiB. The guest executes and reads it without exits; its writes exit (KVM
//! reports them as MMIO) to the device that owns the range. The firmware's code is mapped
//! privately and never written; the variable store is the desktop's own file, mapped shared,
//! so what the flash device programs lands in that file.

use std::fs::File;
use std::io::Write;
use std::sync::Arc;

use kvm_bindings::{kvm_userspace_memory_region, KVM_MEM_READONLY};
use kvm_ioctls::VmFd;
use vm_memory::mmap::MmapRegion;
use vm_memory::{FileOffset, VolatileMemory};

use super::vm::VmError;
use crate::devices::pflash::FlashStore;

/// An unnamed file holding `bytes`, for a variable store that lives as long as the VMM.
pub fn memory_file(bytes: &[u8]) -> std::io::Result<File> {
    let mut f = super::memory::memfd(c"tessera-uefi-vars", 0)?;
    f.write_all(bytes)?;
    Ok(f)
}

/// A file in a read-only memory slot.
pub struct FlashMemory {
    region: MmapRegion,
    fd: Arc<VmFd>,
    slot: u32,
    gpa: u64,
    mapped: bool,
}

impl FlashMemory {
    /// Maps `len` bytes of `file` (page-aligned, checked by the caller), shared and writable by
    /// the VMM when `writable` (the variable store), private and read-only otherwise (the
    /// code), for slot `slot` at guest-physical `gpa`, and maps the slot.
    pub fn new(
        fd: Arc<VmFd>,
        slot: u32,
        gpa: u64,
        file: File,
        len: usize,
        writable: bool,
    ) -> Result<Self, VmError> {
        let (prot, flags) = match writable {
            true => (libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED),
            false => (libc::PROT_READ, libc::MAP_PRIVATE),
        };
        let region =
            MmapRegion::build(Some(FileOffset::new(file, 0)), len, prot, flags).map_err(|e| {
                tracing::error!(error = %e, len, "cannot map the firmware flash");
                VmError::Ioctl("mmap firmware flash", kvm_ioctls::Error::new(libc::ENOMEM))
            })?;
        let mut me = Self {
            region,
            fd,
            slot,
            gpa,
            mapped: false,
        };
        me.map(true)?;
        Ok(me)
    }

    fn map(&mut self, on: bool) -> Result<(), VmError> {
        if on == self.mapped {
            return Ok(());
        }
        let desc = kvm_userspace_memory_region {
            slot: self.slot,
            flags: KVM_MEM_READONLY,
            guest_phys_addr: self.gpa,
            // A size of zero deletes the slot.
            memory_size: if on { self.region.size() as u64 } else { 0 },
            userspace_addr: self.region.as_ptr() as u64,
        };
        // The machine keeps self until its vCPUs have stopped for good; the slot then goes
        // with the VM's descriptor (no Drop deletes it: the main thread's filter has no
        // memory-slot ioctl).
        // SAFETY: the mapping is owned by self and outlives the slot's use; the slot number
        // is this flash's and its range is kept clear of RAM, BARs and other slots.
        unsafe { self.fd.set_user_memory_region(desc) }
            .map_err(|e| VmError::Ioctl("SET_USER_MEMORY_REGION (firmware flash)", e))?;
        self.mapped = on;
        Ok(())
    }
}

impl FlashStore for FlashMemory {
    fn len(&self) -> usize {
        self.region.size()
    }

    fn read(&self, offset: usize, data: &mut [u8]) {
        match self.region.get_slice(offset, data.len()) {
            Ok(s) => {
                s.copy_to(data);
            }
            Err(_) => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: usize, data: &[u8]) {
        if let Ok(s) = self.region.get_slice(offset, data.len()) {
            s.copy_from(data);
        }
    }

    fn set_direct_reads(&mut self, on: bool) {
        if let Err(e) = self.map(on) {
            // The guest then reads stale status or exits it did not expect; say so, loudly.
            tracing::error!(error = %e, on, "cannot switch the firmware flash's memory slot");
        }
    }

    fn flush(&mut self) {
        // SAFETY: msync on a live mapping owned by self, over exactly its length; it reads
        // nothing from and writes nothing to the process's memory.
        let rc = unsafe {
            libc::msync(
                self.region.as_ptr().cast(),
                self.region.size(),
                libc::MS_SYNC,
            )
        };
        if rc != 0 {
            tracing::warn!(error = %std::io::Error::last_os_error(), "cannot flush the firmware variable store");
        }
    }
}
