//! The host side of a virtio-net device: the queues of a Linux tap interface.
//!
//! Written by hand: rust-vmm has no tap crate (Firecracker and Cloud Hypervisor each keep their
//! own), and the TUN libraries on crates.io are made for applications that route IP packets
//! (they set addresses, split GSO frames themselves, run an async runtime) where a VMM needs
//! the raw queues with the virtio-net header passed through to the guest untouched.
//!
//! Each queue is its own file descriptor on /dev/net/tun, opened with `IFF_MULTI_QUEUE` when
//! the device has more than one queue pair. Frames cross with a 12-byte `virtio_net_hdr_v1`
//! in front (`IFF_VNET_HDR`, size set with TUNSETVNETHDRSZ), the layout a virtio 1.x driver
//! uses, so checksum and segmentation offloads go through both ways without being done here.
//! This module holds the project's tap ioctls (and their `unsafe`).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use vmm_sys_util::ioctl::{ioctl_with_mut_ref, ioctl_with_ref};
use vmm_sys_util::{ioctl_ior_nr, ioctl_iow_nr};

/// Bytes of the virtio-net header on every frame (virtio 1.x: `virtio_net_hdr_v1`, with
/// `num_buffers`).
pub const VNET_HDR_LEN: usize = 12;

const TUNTAP: u32 = b'T' as u32;
ioctl_iow_nr!(TUNSETIFF, TUNTAP, 202, libc::c_int);
ioctl_ior_nr!(TUNGETFEATURES, TUNTAP, 207, libc::c_uint);
ioctl_iow_nr!(TUNSETOFFLOAD, TUNTAP, 208, libc::c_uint);
ioctl_iow_nr!(TUNSETVNETHDRSZ, TUNTAP, 216, libc::c_int);
ioctl_iow_nr!(TUNSETQUEUE, TUNTAP, 217, libc::c_int);

/// The requests a device's queue threads make on their taps (for their seccomp filter).
pub fn queue_thread_ioctls() -> [u64; 2] {
    [TUNSETOFFLOAD(), TUNSETQUEUE()]
}

/// Offloads the tap may hand to the guest (TUNSETOFFLOAD's argument), from the guest's
/// virtio-net receive features.
pub mod offload {
    /// Checksums may be left to the receiver (GUEST_CSUM).
    pub const CSUM: u32 = 0x01;
    /// TCP over IPv4 segmentation (GUEST_TSO4).
    pub const TSO4: u32 = 0x02;
    /// TCP over IPv6 segmentation (GUEST_TSO6).
    pub const TSO6: u32 = 0x04;
    /// TSO with ECN bits (GUEST_ECN).
    pub const TSO_ECN: u32 = 0x08;
}

/// `struct ifreq` with the flags member (the rest of the union is unused here).
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Why a tap could not be opened or set.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// The interface name is empty, too long or has a byte that cannot be in one.
    #[error("invalid tap interface name {0:?}: 1 to 15 characters, no '/', ':' or spaces")]
    Name(String),
    /// /dev/net/tun could not be opened.
    #[error("cannot open /dev/net/tun: {0}")]
    Open(std::io::Error),
    /// The kernel's tun driver lacks virtio-net headers or multiqueue.
    #[error("the kernel's tun driver lacks {0}")]
    Unsupported(&'static str),
    /// TUNSETIFF refused the interface.
    #[error("cannot attach to tap {name}: {source}{hint}")]
    Attach {
        /// The interface.
        name: String,
        /// The error.
        source: std::io::Error,
        /// What usually causes it.
        hint: &'static str,
    },
    /// Another tap ioctl failed.
    #[error("tap {name}: {what} failed: {source}")]
    Ioctl {
        /// The interface.
        name: String,
        /// The request.
        what: &'static str,
        /// The error.
        source: std::io::Error,
    },
}

/// One queue of a tap interface: a non-blocking file descriptor that reads and writes whole
/// frames, each behind a [`VNET_HDR_LEN`]-byte header.
#[derive(Debug)]
pub struct TapQueue {
    file: File,
    name: String,
    /// A real tap queue (not another process's descriptor stand-in): steering and offloads
    /// apply.
    tap: bool,
}

fn check_name(name: &str) -> Result<[u8; libc::IFNAMSIZ], TapError> {
    let ok = !name.is_empty()
        && name.len() < libc::IFNAMSIZ
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':');
    if !ok {
        return Err(TapError::Name(name.to_string()));
    }
    let mut out = [0u8; libc::IFNAMSIZ];
    out[..name.len()].copy_from_slice(name.as_bytes());
    Ok(out)
}

/// Opens `queues` queues of tap interface `name`: an existing tap (what tessera-agent makes
/// on a port group, owned by the VMM's user, `multi_queue` when `queues > 1`), or a new one
/// that lasts while the VMM holds it when the VMM may create interfaces (CAP_NET_ADMIN).
pub fn open_queues(name: &str, queues: u16) -> Result<Vec<TapQueue>, TapError> {
    let ifname = check_name(name)?;
    let mut out = Vec::with_capacity(usize::from(queues));
    for _ in 0..queues.max(1) {
        out.push(TapQueue::open(name, ifname, queues > 1)?);
    }
    for q in &out {
        q.set_vnet_hdr_len()?;
    }
    Ok(out)
}

impl TapQueue {
    fn open(name: &str, ifname: [u8; libc::IFNAMSIZ], multi: bool) -> Result<Self, TapError> {
        let file = File::options()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(TapError::Open)?;
        let mut features: libc::c_uint = 0;
        // SAFETY: TUNGETFEATURES writes one unsigned int into `features`, which outlives the
        // call; the fd is the tun control device just opened.
        let r = unsafe { ioctl_with_mut_ref(&file, TUNGETFEATURES(), &mut features) };
        if r < 0 {
            return Err(TapError::Open(std::io::Error::last_os_error()));
        }
        let features = features as libc::c_int;
        if features & libc::IFF_VNET_HDR == 0 {
            return Err(TapError::Unsupported("virtio-net headers (IFF_VNET_HDR)"));
        }
        if multi && features & libc::IFF_MULTI_QUEUE == 0 {
            return Err(TapError::Unsupported("multiqueue (IFF_MULTI_QUEUE)"));
        }
        let mut flags = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR;
        if multi {
            flags |= libc::IFF_MULTI_QUEUE;
        }
        let req = IfReq {
            name: ifname,
            flags: flags as libc::c_short,
            _pad: [0; 22],
        };
        // SAFETY: TUNSETIFF reads a `struct ifreq`; IfReq has its layout for the name and
        // flags (40 bytes, as the kernel copies) and outlives the call.
        let r = unsafe { ioctl_with_ref(&file, TUNSETIFF(), &req) };
        if r < 0 {
            let source = std::io::Error::last_os_error();
            let hint = match source.raw_os_error() {
                Some(libc::EPERM) => ": the tap must exist and belong to this user (tessera-agent makes it) unless tessera-vmm runs with CAP_NET_ADMIN",
                Some(libc::EINVAL) if multi => ": a tap for several queue pairs must be made multi_queue (ip tuntap add NAME mode tap multi_queue vnet_hdr)",
                Some(libc::EINVAL) => ": a multi_queue tap needs queues > 1 here, or the name is used by another kind of interface",
                Some(libc::EBUSY) => ": another process holds it",
                _ => "",
            };
            return Err(TapError::Attach {
                name: name.to_string(),
                source,
                hint,
            });
        }
        Ok(Self {
            file,
            name: name.to_string(),
            tap: true,
        })
    }

    /// A queue over a descriptor that keeps frame boundaries but is no tap (a datagram socket
    /// in tests and fuzzing): it has one queue and no offloads, so steering and offload
    /// settings change nothing on it.
    pub fn from_fd(fd: OwnedFd, name: &str) -> Self {
        Self {
            file: File::from(fd),
            name: name.to_string(),
            tap: false,
        }
    }

    fn ioctl_int(
        &self,
        request: u64,
        what: &'static str,
        value: libc::c_int,
    ) -> Result<(), TapError> {
        // SAFETY: the request reads one int from `value`, which outlives the call; the fd is
        // this queue's own.
        let r = unsafe { ioctl_with_ref(&self.file, request, &value) };
        if r < 0 {
            return Err(TapError::Ioctl {
                name: self.name.clone(),
                what,
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    fn set_vnet_hdr_len(&self) -> Result<(), TapError> {
        self.ioctl_int(
            TUNSETVNETHDRSZ(),
            "TUNSETVNETHDRSZ",
            VNET_HDR_LEN as libc::c_int,
        )
    }

    /// Which offloads the tap may leave to the guest ([`offload`] bits; device-wide).
    pub fn set_offload(&self, flags: u32) -> Result<(), TapError> {
        if !self.tap {
            return Ok(());
        }
        // TUNSETOFFLOAD takes the flags as the argument itself, not a pointer.
        // SAFETY: the request reads no memory; the fd is this queue's own.
        let r = unsafe {
            vmm_sys_util::ioctl::ioctl_with_val(
                &self.file,
                TUNSETOFFLOAD(),
                libc::c_ulong::from(flags),
            )
        };
        if r < 0 {
            return Err(TapError::Ioctl {
                name: self.name.clone(),
                what: "TUNSETOFFLOAD",
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// Attaches this queue to the interface (frames flow through it) or detaches it (the
    /// kernel steers no frame to it and drops what it held).
    pub fn set_attached(&self, attached: bool) -> Result<(), TapError> {
        if !self.tap {
            return Ok(());
        }
        let flags = if attached {
            libc::IFF_ATTACH_QUEUE
        } else {
            libc::IFF_DETACH_QUEUE
        };
        let req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: flags as libc::c_short,
            _pad: [0; 22],
        };
        // SAFETY: TUNSETQUEUE reads a `struct ifreq` (only its flags); IfReq outlives the call.
        let r = unsafe { ioctl_with_ref(&self.file, TUNSETQUEUE(), &req) };
        if r < 0 {
            let source = std::io::Error::last_os_error();
            // Attaching an attached queue, or detaching a detached one, is EINVAL: no change.
            if source.raw_os_error() == Some(libc::EINVAL) {
                return Ok(());
            }
            return Err(TapError::Ioctl {
                name: self.name.clone(),
                what: "TUNSETQUEUE",
                source,
            });
        }
        Ok(())
    }

    /// Reads one frame (header first) into `buf`; `WouldBlock` when none is waiting.
    pub fn read_frame(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        (&self.file).read(buf)
    }

    /// Writes one frame (header first).
    pub fn write_frame(&self, frame: &[u8]) -> std::io::Result<usize> {
        (&self.file).write(frame)
    }

    /// The queue's file (vhost-net's backend).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The interface's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl AsRawFd for TapQueue {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.file.as_raw_fd()
    }
}

/// A connected pair of datagram sockets: one end stands for a tap queue in tests and fuzzing
/// (frames keep their boundaries), the other is the "host".
pub fn socket_pair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let (a, b) = std::os::unix::net::UnixDatagram::pair()?;
    a.set_nonblocking(true)?;
    b.set_nonblocking(true)?;
    Ok((a.into(), b.into()))
}

/// Moves the calling thread into a network namespace of its own (tests: a tap made there
/// touches no host interface, and processes it starts share the namespace).
#[cfg(test)]
pub fn enter_private_netns() -> std::io::Result<()> {
    // SAFETY: unshare(2) with CLONE_NEWNET changes only the calling thread's network
    // namespace; it takes no pointers.
    let r = unsafe { libc::unshare(libc::CLONE_NEWNET) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

// `struct ifreq` is 40 bytes on Linux x86_64.
const _: () = assert!(std::mem::size_of::<IfReq>() == 40);
