//! vhost-net: the host kernel moves the frames between the tap and the guest's rings.
//!
//! The fast path. Each queue pair gets a /dev/vhost-net instance, opened and given guest
//! memory's table while the VM is built (before the threads' filters); when the driver is
//! ready one thread hands each instance its pair's rings, the driver's kick eventfds (the
//! ioeventfds KVM signals) and the tap queue, and from then on the kernel's vhost worker reads
//! and writes the rings itself. What stays here: the control queue, steering tap queues as
//! the driver sets queue pairs, and relaying the kernel's "used buffers" signals to the
//! queues' MSI-X vectors through the transport (so the guest's masking and the ISR hold).
//! Without /dev/vhost-net (no module, no permission) the NIC runs on the user-space path.

use std::sync::Arc;
use std::time::Duration;

use vhost::vhost_kern::net::Net as KernNet;
use vhost::vhost_kern::vhost_binding::{
    VHOST_GET_VRING_BASE, VHOST_NET_SET_BACKEND, VHOST_SET_FEATURES, VHOST_SET_VRING_ADDR,
    VHOST_SET_VRING_BASE, VHOST_SET_VRING_CALL, VHOST_SET_VRING_KICK, VHOST_SET_VRING_NUM,
};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::epoll::EpollEvent;
use vmm_sys_util::eventfd::EventFd;

use super::ctrl::{self, CtrlQueue};
use super::Shared;
use crate::devices::virtio::{features, VirtioInterrupt};
use crate::devices::worker_thread::epoll_on;
use crate::rate_limit::RateLimiter;

/// virtio-net's mergeable receive buffers, which the tap's 12-byte header needs.
const MRG_RXBUF: u64 = 1 << virtio_bindings::virtio_net::VIRTIO_NET_F_MRG_RXBUF;

/// Why vhost-net cannot serve a NIC.
#[derive(Debug, thiserror::Error)]
pub enum VhostError {
    /// /dev/vhost-net could not be opened or set up.
    #[error("vhost-net: {what}: {source}")]
    Kernel {
        /// The step.
        what: &'static str,
        /// The error.
        source: vhost::Error,
    },
    /// The kernel's vhost-net lacks a feature the device needs.
    #[error("vhost-net lacks {0}")]
    Missing(&'static str),
}

fn kernel(what: &'static str) -> impl FnOnce(vhost::Error) -> VhostError {
    move |source| VhostError::Kernel { what, source }
}

/// The requests the vhost thread makes (for its seccomp filter).
pub fn thread_ioctls() -> [u64; 8] {
    [
        VHOST_SET_FEATURES(),
        VHOST_SET_VRING_NUM(),
        VHOST_SET_VRING_ADDR(),
        VHOST_SET_VRING_BASE(),
        VHOST_GET_VRING_BASE(),
        VHOST_SET_VRING_KICK(),
        VHOST_SET_VRING_CALL(),
        VHOST_NET_SET_BACKEND(),
    ]
}

/// One vhost-net instance per queue pair, owned by this process, with guest memory's table.
pub struct VhostNet {
    instances: Vec<KernNet<Arc<GuestMemoryMmap>>>,
    /// What the kernel's vhost-net supports (virtio feature bits).
    supported: u64,
}

impl VhostNet {
    /// Opens `pairs` instances over `memory`; while the VM is built.
    pub fn open(pairs: u16, memory: &GuestMemoryMmap) -> Result<Self, VhostError> {
        let regions: Vec<VhostUserMemoryRegionInfo> = memory
            .iter()
            .map(|r| VhostUserMemoryRegionInfo {
                guest_phys_addr: r.start_addr().0,
                memory_size: r.len(),
                userspace_addr: r.as_ptr() as u64,
                mmap_offset: 0,
                mmap_handle: -1,
            })
            .collect();
        let mut instances = Vec::with_capacity(usize::from(pairs));
        let mut supported = u64::MAX;
        for _ in 0..pairs.max(1) {
            let net =
                KernNet::new(Arc::new(memory.clone())).map_err(kernel("open /dev/vhost-net"))?;
            net.set_owner().map_err(kernel("VHOST_SET_OWNER"))?;
            supported &= net.get_features().map_err(kernel("VHOST_GET_FEATURES"))?;
            net.set_mem_table(&regions)
                .map_err(kernel("VHOST_SET_MEM_TABLE"))?;
            instances.push(net);
        }
        for (bit, name) in [
            (features::VERSION_1, "VIRTIO_F_VERSION_1"),
            (MRG_RXBUF, "mergeable receive buffers"),
            (features::RING_EVENT_IDX, "VIRTIO_RING_F_EVENT_IDX"),
            (features::RING_INDIRECT_DESC, "VIRTIO_RING_F_INDIRECT_DESC"),
        ] {
            if supported & bit == 0 {
                return Err(VhostError::Missing(name));
            }
        }
        Ok(Self {
            instances,
            supported,
        })
    }
}

/// A pair's two rings as the driver set them up, with their kicks and the eventfds the
/// kernel signals when it used buffers.
pub struct VhostRings {
    /// The pair's number.
    pub pair: u16,
    /// (queue index, ring, driver's kick, kernel's call) for receive, then transmit.
    pub rings: [(u16, Queue, EventFd, EventFd); 2],
}

/// What the vhost thread owns.
pub struct VhostWorker {
    /// The instances.
    pub vhost: Arc<VhostNet>,
    /// The pairs the driver enabled.
    pub pairs: Vec<VhostRings>,
    /// The control queue.
    pub ctrl: Option<CtrlQueue>,
    /// Guest memory.
    pub memory: GuestMemoryMmap,
    /// Taps and steering.
    pub shared: Arc<Shared>,
    /// Features the driver accepted.
    pub features: u64,
    /// Interrupt delivery.
    pub interrupt: Arc<dyn VirtioInterrupt>,
}

const T_STOP: u64 = u64::MAX;
const T_WAKE: u64 = u64::MAX - 1;
const T_CTRL: u64 = u64::MAX - 2;

impl VhostWorker {
    /// The thread body: hands the rings to the kernel, serves the control queue and relays
    /// interrupts until stopped, then takes the rings back (no kernel worker touches guest
    /// memory once it returns).
    pub fn run(mut self, stop: EventFd) {
        if let Err(e) = self.start() {
            tracing::error!(error = %e, "virtio-net: vhost-net refused the rings; the NIC stops until the driver resets it");
            self.stop_rings();
            self.interrupt.config();
            return;
        }
        self.serve(&stop);
        self.stop_rings();
    }

    fn instance(&self, pair: u16) -> &KernNet<Arc<GuestMemoryMmap>> {
        &self.vhost.instances[usize::from(pair)]
    }

    fn start(&self) -> Result<(), VhostError> {
        self.shared.apply_guest_offloads(self.features);
        self.shared.steer_all();
        for p in &self.pairs {
            let net = self.instance(p.pair);
            net.set_features(self.features & self.vhost.supported)
                .map_err(kernel("VHOST_SET_FEATURES"))?;
            for (vring, (_, queue, kick, call)) in p.rings.iter().enumerate() {
                let config = VringConfigData {
                    queue_max_size: queue.max_size(),
                    queue_size: queue.size(),
                    flags: 0,
                    desc_table_addr: queue.desc_table(),
                    used_ring_addr: queue.used_ring(),
                    avail_ring_addr: queue.avail_ring(),
                    log_addr: None,
                };
                net.set_vring_num(vring, queue.size())
                    .map_err(kernel("VHOST_SET_VRING_NUM"))?;
                net.set_vring_addr(vring, &config)
                    .map_err(kernel("VHOST_SET_VRING_ADDR"))?;
                net.set_vring_base(vring, queue.next_avail())
                    .map_err(kernel("VHOST_SET_VRING_BASE"))?;
                net.set_vring_call(vring, call)
                    .map_err(kernel("VHOST_SET_VRING_CALL"))?;
                net.set_vring_kick(vring, kick)
                    .map_err(kernel("VHOST_SET_VRING_KICK"))?;
            }
            let tap = self.shared.taps[usize::from(p.pair)].file();
            for vring in 0..2 {
                vhost::net::VhostNet::set_backend(net, vring, Some(tap))
                    .map_err(kernel("VHOST_NET_SET_BACKEND"))?;
            }
        }
        Ok(())
    }

    /// Takes every ring back from the kernel.
    fn stop_rings(&self) {
        for p in &self.pairs {
            let net = self.instance(p.pair);
            for vring in 0..2 {
                let _ = vhost::net::VhostNet::set_backend(net, vring, None);
                // Stops the ring and returns where it was.
                let _ = net.get_vring_base(vring);
            }
        }
    }

    fn serve(&mut self, stop: &EventFd) {
        let wake = &self.shared.wakes[0];
        let mut fds = vec![(stop, T_STOP), (wake, T_WAKE)];
        if let Some(c) = &self.ctrl {
            fds.push((&c.kick, T_CTRL));
        }
        for p in &self.pairs {
            for (index, _, _, call) in &p.rings {
                fds.push((call, u64::from(*index)));
            }
        }
        let epoll = match epoll_on(&fds) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = %e, "virtio-net: cannot set up epoll");
                return;
            }
        };
        let mut log = RateLimiter::new(10, Duration::from_secs(5));
        let mut events = vec![EpollEvent::default(); fds.len()];
        // Commands may have come before the thread started.
        let mut ctrl_work = true;
        loop {
            if ctrl_work {
                if let Some(c) = self.ctrl.as_mut() {
                    match ctrl::serve(c, &self.memory, self.features, &self.shared, &mut log) {
                        Ok(true) => self.interrupt.queue(c.index),
                        Ok(false) => {}
                        Err(e) => {
                            tracing::error!(error = %e, "virtio-net: the control queue's rings are unusable");
                            self.interrupt.config();
                            return;
                        }
                    }
                }
            }
            ctrl_work = false;
            let n = match epoll.wait(-1, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::error!(error = %e, "virtio-net: epoll failed");
                    return;
                }
            };
            for ev in &events[..n] {
                match ev.data() {
                    T_STOP => return,
                    T_WAKE => {
                        // The control queue (served here) steered the taps already.
                        let _ = self.shared.wakes[0].read();
                    }
                    T_CTRL => {
                        if let Some(c) = &self.ctrl {
                            let _ = c.kick.read();
                        }
                        ctrl_work = true;
                    }
                    index => {
                        let index = index as u16;
                        if let Some((_, _, _, call)) = self
                            .pairs
                            .iter()
                            .flat_map(|p| p.rings.iter())
                            .find(|r| r.0 == index)
                        {
                            let _ = call.read();
                        }
                        self.interrupt.queue(index);
                    }
                }
            }
        }
    }
}
