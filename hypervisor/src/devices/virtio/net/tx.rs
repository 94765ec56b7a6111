//! Transmitting: one descriptor chain from the guest, header and frame, out through the tap.
//!
//! The chain is untrusted: its device-readable buffers must lie in guest memory (virtio-queue's
//! Reader refuses it otherwise), and their total must hold at least a header and an Ethernet
//! header and at most [`MAX_FRAME`] bytes; anything else is dropped with a logged reason. The
//! header goes to the tap as the guest wrote it: the kernel checks its checksum and
//! segmentation fields (a bad one is its own error on the tap's write, counted as a drop).

use std::io::Read;

use virtio_queue::{DescriptorChain, Reader};
use vm_memory::GuestMemoryMmap;

use super::tap::{TapQueue, VNET_HDR_LEN};

/// Largest frame taken from the guest or the tap, header included: a 64 KiB GSO packet, its
/// Ethernet header and a VLAN tag.
pub const MAX_FRAME: usize = VNET_HDR_LEN + 65_535 + 14 + 4;
/// Shortest: the header and an Ethernet header.
pub const MIN_FRAME: usize = VNET_HDR_LEN + 14;

/// Why a transmitted chain was dropped.
#[derive(Debug, thiserror::Error)]
pub enum TxError {
    /// A buffer lies outside guest memory, or the lengths overflow.
    #[error("descriptor outside guest memory or too long: {0}")]
    Memory(virtio_queue::Error),
    /// Shorter than a header and an Ethernet header.
    #[error("a {0}-byte frame: shorter than the virtio-net and Ethernet headers")]
    Short(usize),
    /// Longer than [`MAX_FRAME`].
    #[error("a {0}-byte frame: longer than {MAX_FRAME} bytes")]
    Long(usize),
    /// The tap refused it (a malformed offload header, or the interface is down).
    #[error("the tap refused the frame: {0}")]
    Tap(std::io::Error),
}

/// Sends one chain's frame; `buf` is the queue's reusable buffer. Returns the bytes sent.
pub fn transmit(
    chain: DescriptorChain<&GuestMemoryMmap>,
    mem: &GuestMemoryMmap,
    tap: &TapQueue,
    buf: &mut Vec<u8>,
) -> Result<usize, TxError> {
    let mut reader = Reader::new(mem, chain).map_err(TxError::Memory)?;
    let len = reader.available_bytes();
    if len < MIN_FRAME {
        return Err(TxError::Short(len));
    }
    if len > MAX_FRAME {
        return Err(TxError::Long(len));
    }
    buf.resize(len, 0);
    // Checked against guest memory when the Reader was made: a short read is not possible.
    reader
        .read_exact(&mut buf[..len])
        .map_err(|_| TxError::Memory(virtio_queue::Error::InvalidChain))?;
    // The header's num_buffers is the receive side's; the tap ignores it.
    tap.write_frame(&buf[..len]).map_err(TxError::Tap)
}
