//! virtio-blk: a disk image from tessera-storage (raw or a qcow2 chain confined to its
//! datastore) as a virtio block device with one I/O thread per queue.
//!
//! Supported requests: read, write, flush, get-id, discard and write-zeroes. The write cache is
//! write-back: data reaches stable storage when the guest flushes (FLUSH feature), as on a disk
//! with a volatile cache.

pub mod request;
pub mod worker;

use std::sync::Arc;

use tessera_storage::Disk;
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_MQ,
    VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_WRITE_ZEROES,
};

use self::request::{BlockBackend, MAX_DISCARD_SECTORS, MAX_DISCARD_SEGMENTS, SECTOR_SIZE};
use self::worker::QueueWorker;
use super::queue_threads::QueueThreads;
use super::{read_config_bytes, ActivateError, Activation, VirtioDevice};
use crate::sandbox::{Sandbox, SandboxError, ThreadKind};

/// virtio device ID of a block device.
pub const VIRTIO_ID_BLOCK: u16 = 2;
/// Descriptors per queue.
pub const QUEUE_SIZE: u16 = 256;
/// Most queues a disk gets.
pub const MAX_QUEUES: u16 = 16;

/// The block device.
pub struct Block {
    backend: Arc<BlockBackend>,
    num_queues: u16,
    config: Vec<u8>,
    name: String,
    /// One I/O thread per queue, started with the device.
    threads: QueueThreads,
}

/// The 60-byte `struct virtio_blk_config` for a disk of `capacity` sectors.
fn config_space(capacity: u64, num_queues: u16) -> Vec<u8> {
    let mut c = vec![0u8; 60];
    c[0..8].copy_from_slice(&capacity.to_le_bytes());
    // seg_max: what fits in a queue beside the header and status descriptors.
    c[12..16].copy_from_slice(&u32::from(QUEUE_SIZE - 2).to_le_bytes());
    c[20..24].copy_from_slice(&(SECTOR_SIZE as u32).to_le_bytes());
    c[34..36].copy_from_slice(&num_queues.to_le_bytes());
    c[36..40].copy_from_slice(&MAX_DISCARD_SECTORS.to_le_bytes());
    c[40..44].copy_from_slice(&MAX_DISCARD_SEGMENTS.to_le_bytes());
    // Discard granularity: one sector; the image format rounds to its clusters itself.
    c[44..48].copy_from_slice(&1u32.to_le_bytes());
    c[48..52].copy_from_slice(&MAX_DISCARD_SECTORS.to_le_bytes());
    c[52..56].copy_from_slice(&MAX_DISCARD_SEGMENTS.to_le_bytes());
    c[56] = 1; // write_zeroes_may_unmap
    c
}

impl Block {
    /// A device over `disk` with `num_queues` queues (1..=MAX_QUEUES), each with an I/O
    /// thread started now under the queue threads' seccomp filter; `serial` is the ID string
    /// the guest reads (at most 20 bytes are kept).
    pub fn new(
        disk: Disk,
        read_only: bool,
        num_queues: u16,
        serial: &str,
        sandbox: &Sandbox,
    ) -> Result<Self, SandboxError> {
        let num_queues = num_queues.clamp(1, MAX_QUEUES);
        let capacity = disk.size() / SECTOR_SIZE;
        let name = disk.path().display().to_string();
        let threads = QueueThreads::spawn(
            sandbox,
            ThreadKind::BlockQueue,
            (0..num_queues).map(|q| format!("blk-q{q}")),
        )?;
        Ok(Self {
            backend: Arc::new(BlockBackend::new(disk, read_only, serial)),
            num_queues,
            config: config_space(capacity, num_queues),
            name,
            threads,
        })
    }
}

impl Block {
    /// The disk, shared so that the VMM can flush it when the VM ends.
    pub fn backend(&self) -> Arc<BlockBackend> {
        self.backend.clone()
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u16 {
        VIRTIO_ID_BLOCK
    }

    fn features(&self) -> u64 {
        let mut f =
            1 << VIRTIO_BLK_F_SEG_MAX | 1 << VIRTIO_BLK_F_BLK_SIZE | 1 << VIRTIO_BLK_F_FLUSH;
        if self.num_queues > 1 {
            f |= 1 << VIRTIO_BLK_F_MQ;
        }
        if self.backend.read_only {
            f |= 1 << VIRTIO_BLK_F_RO;
        } else {
            f |= 1 << VIRTIO_BLK_F_DISCARD | 1 << VIRTIO_BLK_F_WRITE_ZEROES;
        }
        f
    }

    fn num_queues(&self) -> u16 {
        self.num_queues
    }

    fn queue_max_size(&self) -> u16 {
        QUEUE_SIZE
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {
        // Nothing in the block configuration is writable without CONFIG_WCE, not offered.
    }

    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError> {
        if activation.queues.is_empty() {
            return Err(ActivateError::NoQueue);
        }
        for q in activation.queues {
            let index = q.index;
            let (memory, backend) = (activation.memory.clone(), self.backend.clone());
            let (interrupt, name) = (activation.interrupt.clone(), self.name.clone());
            let started = self.threads.start(usize::from(index), move |stop| {
                let worker = QueueWorker {
                    index: q.index,
                    queue: q.queue,
                    kick: q.kick,
                    stop,
                    memory,
                    backend: backend.clone(),
                    interrupt,
                };
                worker.run();
                // Data the guest wrote without flushing reaches the image's file when the
                // queue stops (a reset), as on a disk that empties its cache when reset; done
                // here, so the vCPU that resets the device needs no file I/O.
                backend.flush(&name);
            })?;
            if !started {
                // The transport offers num_queues queues; another index is a VMM bug.
                tracing::error!(disk = %self.name, queue = index, "virtio-blk: no such queue");
            }
        }
        tracing::info!(disk = %self.name, queues = self.threads.serving(), "virtio-blk: driver ready");
        Ok(())
    }

    fn reset(&mut self) {
        self.threads.stop();
    }
}

#[cfg(test)]
mod tests;
