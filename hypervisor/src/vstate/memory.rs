//! Guest RAM: anonymous mappings laid out around the 32-bit MMIO hole.

use vm_memory::{GuestAddress, GuestMemoryMmap};

use crate::arch::x86_64::layout::{MMIO_HOLE_END, MMIO_HOLE_START};

/// Smallest guest the boot layout fits in.
pub const MIN_MEMORY: u64 = 2 << 20;

/// Errors while creating guest memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// Too little memory for the boot structures and a kernel.
    #[error("guest memory of {0} bytes is too small (at least {MIN_MEMORY} bytes)")]
    TooSmall(u64),
    /// More memory than the host has.
    #[error("guest memory of {requested} MiB is more than this host has ({host} MiB in total)")]
    MoreThanHost {
        /// Requested MiB.
        requested: u64,
        /// Host MiB.
        host: u64,
    },
    /// mmap failed.
    #[error("cannot map {0} MiB of guest memory: {1}")]
    Map(u64, String),
}

/// Splits `size` bytes of RAM into regions below the MMIO hole and above 4 GiB.
pub fn ram_ranges(size: u64) -> Vec<(GuestAddress, usize)> {
    let low = size.min(MMIO_HOLE_START);
    let mut ranges = vec![(GuestAddress(0), low as usize)];
    if size > low {
        ranges.push((GuestAddress(MMIO_HOLE_END), (size - low) as usize));
    }
    ranges
}

/// A new anonymous file (memfd) called `name`, close-on-exec, with `flags` added (e.g.
/// `MFD_ALLOW_SEALING`): video memory and in-memory firmware variable stores live in one.
pub fn memfd(name: &std::ffi::CStr, flags: libc::c_uint) -> std::io::Result<std::fs::File> {
    use std::os::fd::FromRawFd;
    // SAFETY: memfd_create reads the NUL-terminated name and returns a new descriptor or -1;
    // nothing else is touched.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | flags) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just created and is owned by nobody else.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}

/// Total host RAM in bytes, from sysinfo(2).
pub fn host_memory() -> u64 {
    // SAFETY: sysinfo writes only into the struct we pass, which is zero-initialised and sized
    // for it; on failure we fall back to "unknown" (u64::MAX) and let mmap decide.
    unsafe {
        let mut info: libc::sysinfo = std::mem::zeroed();
        if libc::sysinfo(&mut info) != 0 {
            return u64::MAX;
        }
        info.totalram.saturating_mul(u64::from(info.mem_unit))
    }
}

/// Maps `size` bytes of guest RAM after checking it against the host.
pub fn create_guest_memory(size: u64) -> Result<GuestMemoryMmap, MemoryError> {
    if size < MIN_MEMORY {
        return Err(MemoryError::TooSmall(size));
    }
    let host = host_memory();
    if size > host {
        return Err(MemoryError::MoreThanHost {
            requested: size >> 20,
            host: host >> 20,
        });
    }
    GuestMemoryMmap::from_ranges(&ram_ranges(size))
        .map_err(|e| MemoryError::Map(size >> 20, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_guest_is_one_region() {
        let r = ram_ranges(512 << 20);
        assert_eq!(r, vec![(GuestAddress(0), 512 << 20)]);
    }

    #[test]
    fn large_guest_skips_the_hole() {
        let r = ram_ranges(5 << 30);
        assert_eq!(r[0], (GuestAddress(0), MMIO_HOLE_START as usize));
        assert_eq!(r[1].0, GuestAddress(MMIO_HOLE_END));
        assert_eq!(r[1].1 as u64, (5 << 30) - MMIO_HOLE_START);
    }

    #[test]
    fn absurd_sizes_are_refused() {
        assert!(matches!(
            create_guest_memory(4096),
            Err(MemoryError::TooSmall(_))
        ));
        assert!(matches!(
            create_guest_memory(1 << 60),
            Err(MemoryError::MoreThanHost { .. })
        ));
    }
}
