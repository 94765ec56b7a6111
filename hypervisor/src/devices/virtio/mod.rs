//! virtio devices and their PCI transport.
//!
//! A device ([`VirtioDevice`]) knows its features, its configuration space and what to do with
//! its queues once the driver is ready; the transport ([`pci::VirtioPci`]) does the rest of the
//! virtio 1.x protocol (feature negotiation, status, queue set-up, notifications and MSI-X).
//! Queue rings and descriptor chains are read with rust-vmm's virtio-queue, which bounds chain
//! length and checks indirect tables; devices check every buffer against guest memory.

pub mod block;
pub mod input;
pub mod net;
pub mod pci;
pub mod queue_threads;

use std::sync::Arc;

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

/// Device status bits (virtio 1.2, 2.1).
pub mod status {
    /// The guest found the device.
    pub const ACKNOWLEDGE: u8 = 1;
    /// The guest has a driver for it.
    pub const DRIVER: u8 = 2;
    /// The driver is ready: queues may be used.
    pub const DRIVER_OK: u8 = 4;
    /// Feature negotiation is complete.
    pub const FEATURES_OK: u8 = 8;
    /// The device hit an error it cannot recover from without a reset.
    pub const NEEDS_RESET: u8 = 0x40;
    /// The driver gave up on the device.
    pub const FAILED: u8 = 0x80;
}

/// Feature bits every tessera virtio device offers (the transport adds them).
pub mod features {
    /// Indirect descriptor tables.
    pub const RING_INDIRECT_DESC: u64 = 1 << 28;
    /// used_event / avail_event notification suppression.
    pub const RING_EVENT_IDX: u64 = 1 << 29;
    /// virtio 1.x (modern) device.
    pub const VERSION_1: u64 = 1 << 32;
}

/// The interrupts a device raises; the transport maps them to MSI-X vectors.
pub trait VirtioInterrupt: Send + Sync {
    /// The device used buffers of queue `index`.
    fn queue(&self, index: u16);
    /// The device's configuration (or status) changed.
    fn config(&self);
}

/// One queue handed to a device at activation.
pub struct ActiveQueue {
    /// Index of the queue in the device.
    pub index: u16,
    /// Ring addresses and state, checked against guest memory.
    pub queue: Queue,
    /// Signalled when the driver notifies the queue.
    pub kick: EventFd,
}

/// What a device gets when the driver sets DRIVER_OK.
pub struct Activation {
    /// Guest memory.
    pub memory: GuestMemoryMmap,
    /// The queues the driver enabled.
    pub queues: Vec<ActiveQueue>,
    /// Features the driver accepted.
    pub features: u64,
    /// Where to raise interrupts.
    pub interrupt: Arc<dyn VirtioInterrupt>,
}

/// Why a device could not start.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// An eventfd could not be created.
    #[error("cannot create the device's stop eventfd: {0}")]
    EventFd(std::io::Error),
    /// The device's I/O thread is gone.
    #[error(transparent)]
    Worker(#[from] crate::devices::worker_thread::WorkerError),
    /// The driver enabled no queue.
    #[error("the driver enabled no queue")]
    NoQueue,
    /// The driver did not accept VIRTIO_F_VERSION_1 (a legacy driver's layouts differ).
    #[error("the driver did not accept VIRTIO_F_VERSION_1")]
    Legacy,
}

/// Checks that the driver's available index is at most a ring ahead of the device's. For a
/// farther one virtio-queue's `pop_descriptor_chain` answers None ("nothing more") while
/// `enable_notification` answers that entries wait: a loop on both would spin forever (a
/// hostile guest's one write). The caller treats the error as a broken ring.
pub fn check_avail(
    queue: &virtio_queue::Queue,
    mem: &GuestMemoryMmap,
) -> Result<(), virtio_queue::Error> {
    use virtio_queue::QueueT;
    let avail = queue.avail_idx(mem, std::sync::atomic::Ordering::Acquire)?;
    let ahead = avail - std::num::Wrapping(queue.next_avail());
    if ahead.0 > queue.size() {
        return Err(virtio_queue::Error::InvalidAvailRingIndex);
    }
    Ok(())
}

/// A virtio device model, independent of its transport.
pub trait VirtioDevice: Send {
    /// virtio device ID (2: block).
    fn device_type(&self) -> u16;
    /// Device-specific feature bits offered.
    fn features(&self) -> u64;
    /// Number of queues.
    fn num_queues(&self) -> u16;
    /// Largest size of each queue.
    fn queue_max_size(&self) -> u16;
    /// Guest read of the device configuration space.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Guest write of the device configuration space.
    fn write_config(&mut self, offset: u64, data: &[u8]);
    /// Starts serving the queues.
    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError>;
    /// Stops serving the queues (driver reset); returns when no thread touches guest memory.
    fn reset(&mut self);
}

/// Copies `data.len()` bytes of `src` at `offset` out, zero-filling what lies past its end.
pub fn read_config_bytes(src: &[u8], offset: u64, data: &mut [u8]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b = usize::try_from(offset)
            .ok()
            .and_then(|o| o.checked_add(i))
            .and_then(|o| src.get(o))
            .copied()
            .unwrap_or(0);
    }
}
