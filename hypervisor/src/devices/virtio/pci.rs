//! The virtio-pci (modern, virtio 1.x) transport: a PCI function whose BAR 0 holds the common
//! configuration, the ISR, the device configuration, the queue notification area and the MSI-X
//! table, each announced by a vendor capability as the specification lays out (4.1.4).
//!
//! Queue notifications are ioeventfds: a driver's write to a queue's notify address wakes the
//! device's I/O thread inside KVM, without an exit to this process. Interrupts go out as MSI-X
//! through irqfds. There is no INTx: every driver of a modern device uses MSI-X.

use std::sync::atomic::{AtomicU16, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use kvm_ioctls::{IoEventAddress, NoDatamatch, VmFd};
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::{features, status, Activation, ActiveQueue, VirtioDevice, VirtioInterrupt};
use crate::devices::bus::lock;
use crate::devices::pci::config::{ClassCode, ConfigSpaceError, PciConfig, PciId};
use crate::devices::pci::msix::{Msix, MSIX_CAP_ID};
use crate::devices::pci::PciFunction;

/// Red Hat's virtio vendor ID.
pub const VIRTIO_VENDOR: u16 = 0x1af4;
/// Size of BAR 0.
pub const BAR_SIZE: u32 = 0x8000;
/// "No MSI-X vector" as the driver writes and reads it.
pub const NO_VECTOR: u16 = 0xffff;

const COMMON_OFFSET: u64 = 0x0000;
const COMMON_LEN: u64 = 0x38;
const ISR_OFFSET: u64 = 0x1000;
const ISR_LEN: u64 = 1;
const DEVICE_OFFSET: u64 = 0x2000;
const DEVICE_LEN: u64 = 0x1000;
const NOTIFY_OFFSET: u64 = 0x3000;
const NOTIFY_MULTIPLIER: u32 = 4;
const MSIX_TABLE_OFFSET: u64 = 0x4000;
const MSIX_PBA_OFFSET: u64 = 0x6000;

const CAP_VENDOR: u8 = 0x09;
const CFG_COMMON: u8 = 1;
const CFG_NOTIFY: u8 = 2;
const CFG_ISR: u8 = 3;
const CFG_DEVICE: u8 = 4;

const ISR_QUEUE: u8 = 1;
const ISR_CONFIG: u8 = 2;

/// Interrupt state shared by the transport (vCPU threads) and the device's I/O threads.
struct PciInterrupt {
    msix: Arc<Mutex<Msix>>,
    isr: AtomicU8,
    config_vector: AtomicU16,
    queue_vectors: Vec<AtomicU16>,
}

impl VirtioInterrupt for PciInterrupt {
    fn queue(&self, index: u16) {
        self.isr.fetch_or(ISR_QUEUE, Ordering::SeqCst);
        if let Some(v) = self.queue_vectors.get(usize::from(index)) {
            lock(&self.msix).trigger(v.load(Ordering::Acquire));
        }
    }

    fn config(&self) {
        self.isr.fetch_or(ISR_CONFIG, Ordering::SeqCst);
        lock(&self.msix).trigger(self.config_vector.load(Ordering::Acquire));
    }
}

/// A virtio device on the PCI bus.
pub struct VirtioPci {
    config: PciConfig,
    /// The configuration space as built, which the machine's reset restores.
    initial_config: PciConfig,
    msix_cap: usize,
    device: Box<dyn VirtioDevice>,
    interrupt: Arc<PciInterrupt>,
    memory: GuestMemoryMmap,
    vm: Option<Arc<VmFd>>,
    queues: Vec<Queue>,
    kicks: Vec<EventFd>,
    notify_registered: Option<u64>,
    device_feature_select: u32,
    driver_feature_select: u32,
    driver_features: u64,
    status: u8,
    queue_select: u16,
    active: bool,
}

/// Errors while building the transport.
#[derive(Debug, thiserror::Error)]
pub enum VirtioPciError {
    /// An eventfd could not be created.
    #[error("cannot create an eventfd: {0}")]
    EventFd(std::io::Error),
    /// Configuration space layout (a VMM bug).
    #[error(transparent)]
    Layout(#[from] ConfigSpaceError),
    /// The device's queue size is not a power of two.
    #[error("queue size {0} is not a power of two")]
    QueueSize(u16),
}

fn vendor_cap(cfg_type: u8, offset: u64, length: u64, extra: Option<u32>) -> Vec<u8> {
    let cap_len: u8 = if extra.is_some() { 20 } else { 16 };
    let mut body = vec![cap_len, cfg_type, 0, 0, 0, 0];
    body.extend_from_slice(&(offset as u32).to_le_bytes());
    body.extend_from_slice(&(length as u32).to_le_bytes());
    if let Some(x) = extra {
        body.extend_from_slice(&x.to_le_bytes());
    }
    body
}

impl VirtioPci {
    /// Wraps `device` with BAR 0 at `bar_address` and `msix` (one vector per queue plus one for
    /// configuration changes is what drivers ask for). `vm` None skips ioeventfds (device tests).
    pub fn new(
        device: Box<dyn VirtioDevice>,
        msix: Msix,
        bar_address: u32,
        memory: GuestMemoryMmap,
        vm: Option<Arc<VmFd>>,
    ) -> Result<Self, VirtioPciError> {
        let n = device.num_queues();
        let max = device.queue_max_size();
        let queues = (0..n)
            .map(|_| Queue::new(max).map_err(|_| VirtioPciError::QueueSize(max)))
            .collect::<Result<Vec<_>, _>>()?;
        let kicks = (0..n)
            .map(|_| EventFd::new(libc::EFD_NONBLOCK).map_err(VirtioPciError::EventFd))
            .collect::<Result<Vec<_>, _>>()?;
        let mut config = PciConfig::new(PciId {
            vendor: VIRTIO_VENDOR,
            device: 0x1040 + device.device_type(),
            revision: 1,
            class: ClassCode {
                class: 0x01,
                subclass: 0x00,
                prog_if: 0,
            },
            subsystem_vendor: VIRTIO_VENDOR,
            subsystem: 0x1100,
        });
        config.set_bar32(0, bar_address, BAR_SIZE)?;
        let caps = [
            vendor_cap(CFG_COMMON, COMMON_OFFSET, COMMON_LEN, None),
            vendor_cap(CFG_ISR, ISR_OFFSET, ISR_LEN, None),
            vendor_cap(CFG_DEVICE, DEVICE_OFFSET, DEVICE_LEN, None),
            vendor_cap(
                CFG_NOTIFY,
                NOTIFY_OFFSET,
                u64::from(n) * u64::from(NOTIFY_MULTIPLIER),
                Some(NOTIFY_MULTIPLIER),
            ),
        ];
        for cap in caps {
            config.add_capability(CAP_VENDOR, &cap, &[])?;
        }
        let (body, writable) = msix.capability(0, MSIX_TABLE_OFFSET as u32, MSIX_PBA_OFFSET as u32);
        let msix_cap = config.add_capability(MSIX_CAP_ID, &body, &writable)?;
        let interrupt = Arc::new(PciInterrupt {
            msix: Arc::new(Mutex::new(msix)),
            isr: AtomicU8::new(0),
            config_vector: AtomicU16::new(NO_VECTOR),
            queue_vectors: (0..n).map(|_| AtomicU16::new(NO_VECTOR)).collect(),
        });
        let mut me = Self {
            initial_config: config.clone(),
            config,
            msix_cap,
            device,
            interrupt,
            memory,
            vm,
            queues,
            kicks,
            notify_registered: None,
            device_feature_select: 0,
            driver_feature_select: 0,
            driver_features: 0,
            status: 0,
            queue_select: 0,
            active: false,
        };
        me.sync_notify();
        Ok(me)
    }

    fn device_features(&self) -> u64 {
        self.device.features()
            | features::VERSION_1
            | features::RING_EVENT_IDX
            | features::RING_INDIRECT_DESC
    }

    /// Moves the queue ioeventfds to where BAR 0 is now (or removes them while decoding is off).
    fn sync_notify(&mut self) {
        let want = self.config.bar32(0).map(|b| b + NOTIFY_OFFSET);
        if want == self.notify_registered {
            return;
        }
        let Some(vm) = self.vm.clone() else {
            return;
        };
        for (i, kick) in self.kicks.iter().enumerate() {
            let step = i as u64 * u64::from(NOTIFY_MULTIPLIER);
            if let Some(old) = self.notify_registered {
                let _ = vm.unregister_ioevent(kick, &IoEventAddress::Mmio(old + step), NoDatamatch);
            }
            if let Some(new) = want {
                if let Err(e) =
                    vm.register_ioevent(kick, &IoEventAddress::Mmio(new + step), NoDatamatch)
                {
                    // Notifications still arrive as MMIO exits (see notify_write).
                    tracing::warn!(queue = i, error = %e, "virtio: no ioeventfd for the queue");
                }
            }
        }
        self.notify_registered = want;
    }

    fn selected(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(usize::from(self.queue_select))
    }

    fn common_read(&mut self, offset: u64, data: &mut [u8]) {
        let sel = usize::from(self.queue_select);
        let q = self.queues.get(sel);
        let value: u64 = match (offset, data.len()) {
            (0x00, 4) => u64::from(self.device_feature_select),
            (0x04, 4) => match self.device_feature_select {
                0 => self.device_features() & 0xffff_ffff,
                1 => self.device_features() >> 32,
                _ => 0,
            },
            (0x08, 4) => u64::from(self.driver_feature_select),
            (0x0c, 4) => match self.driver_feature_select {
                0 => self.driver_features & 0xffff_ffff,
                1 => self.driver_features >> 32,
                _ => 0,
            },
            (0x10, 2) => u64::from(self.interrupt.config_vector.load(Ordering::Acquire)),
            (0x12, 2) => self.queues.len() as u64,
            (0x14, 1) => u64::from(self.status),
            (0x15, 1) => 0, // config generation: the block config never changes under the driver
            (0x16, 2) => u64::from(self.queue_select),
            (0x18, 2) => q.map_or(0, |q| u64::from(q.size())),
            (0x1a, 2) => self
                .interrupt
                .queue_vectors
                .get(sel)
                .map_or(u64::from(NO_VECTOR), |v| {
                    u64::from(v.load(Ordering::Acquire))
                }),
            (0x1c, 2) => q.map_or(0, |q| u64::from(q.ready())),
            (0x1e, 2) => sel as u64, // notify offset, in units of the multiplier
            (0x20, 4) => q.map_or(0, |q| q.desc_table() & 0xffff_ffff),
            (0x24, 4) => q.map_or(0, |q| q.desc_table() >> 32),
            (0x28, 4) => q.map_or(0, |q| q.avail_ring() & 0xffff_ffff),
            (0x2c, 4) => q.map_or(0, |q| q.avail_ring() >> 32),
            (0x30, 4) => q.map_or(0, |q| q.used_ring() & 0xffff_ffff),
            (0x34, 4) => q.map_or(0, |q| q.used_ring() >> 32),
            _ => 0,
        };
        let n = data.len().min(8);
        data[..n].copy_from_slice(&value.to_le_bytes()[..n]);
    }

    fn common_write(&mut self, offset: u64, data: &[u8]) {
        if data.len() > 8 {
            return;
        }
        let mut b = [0u8; 8];
        b[..data.len()].copy_from_slice(data);
        let v = u64::from_le_bytes(b);
        let v32 = v as u32;
        let v16 = v as u16;
        // Queue layout may only change before DRIVER_OK (virtio 1.2, 4.1.4.3.2).
        let setup = self.status & status::DRIVER_OK == 0;
        let features_open = self.status & status::FEATURES_OK == 0;
        match (offset, data.len()) {
            (0x00, 4) => self.device_feature_select = v32,
            (0x08, 4) => self.driver_feature_select = v32,
            (0x0c, 4) if features_open => {
                let shift = match self.driver_feature_select {
                    0 => 0,
                    1 => 32,
                    _ => return,
                };
                self.driver_features =
                    (self.driver_features & !(0xffff_ffff << shift)) | (u64::from(v32) << shift);
            }
            (0x10, 2) => {
                let v = self.checked_vector(v16);
                self.interrupt.config_vector.store(v, Ordering::Release);
            }
            (0x14, 1) => self.write_status(v as u8),
            (0x16, 2) => self.queue_select = v16,
            (0x18, 2) if setup => {
                if let Some(q) = self.selected() {
                    // Invalid sizes (not a power of two, above the maximum) are ignored.
                    let _ = q.try_set_size(v16);
                }
            }
            (0x1a, 2) => {
                let vector = self.checked_vector(v16);
                if let Some(slot) = self
                    .interrupt
                    .queue_vectors
                    .get(usize::from(self.queue_select))
                {
                    slot.store(vector, Ordering::Release);
                }
            }
            (0x1c, 2) if setup => {
                if let Some(q) = self.selected() {
                    q.set_ready(v16 == 1);
                }
            }
            (0x20..=0x34, 4) if setup => {
                let high = offset % 8 == 4;
                let (lo, hi) = if high {
                    (None, Some(v32))
                } else {
                    (Some(v32), None)
                };
                if let Some(q) = self.selected() {
                    match offset & !4 {
                        0x20 => q.set_desc_table_address(lo, hi),
                        0x28 => q.set_avail_ring_address(lo, hi),
                        _ => q.set_used_ring_address(lo, hi),
                    }
                }
            }
            _ => {}
        }
    }

    /// A vector the driver may use, or NO_VECTOR (which tells it the choice was refused).
    fn checked_vector(&self, v: u16) -> u16 {
        if v < lock(&self.interrupt.msix).len() {
            v
        } else {
            NO_VECTOR
        }
    }

    fn write_status(&mut self, value: u8) {
        if value == 0 {
            self.reset_device();
            return;
        }
        let newly = value & !self.status;
        let mut value = value;
        if newly & status::FEATURES_OK != 0 && self.driver_features & !self.device_features() != 0 {
            // The driver accepted a feature that was not offered: refuse FEATURES_OK.
            value &= !status::FEATURES_OK;
        }
        self.status = value;
        if newly & status::DRIVER_OK != 0 && !self.active {
            self.activate();
        }
    }

    fn activate(&mut self) {
        let ready = self.status & status::FEATURES_OK != 0;
        let event_idx = self.driver_features & features::RING_EVENT_IDX != 0;
        let mut active = Vec::new();
        for (i, q) in self.queues.iter_mut().enumerate() {
            if !q.ready() {
                continue;
            }
            q.set_event_idx(event_idx);
            let kick = self.kicks[i].try_clone();
            let copy = Queue::try_from(q.state());
            match (kick, copy) {
                (Ok(kick), Ok(queue)) if ready && q.is_valid(&self.memory) => {
                    active.push(ActiveQueue {
                        index: i as u16,
                        queue,
                        kick,
                    })
                }
                _ => {
                    tracing::warn!(
                        queue = i,
                        "virtio: queue rings outside guest memory or features not negotiated"
                    );
                    return self.needs_reset();
                }
            }
        }
        let activation = Activation {
            memory: self.memory.clone(),
            queues: active,
            features: self.driver_features,
            interrupt: self.interrupt.clone(),
        };
        match self.device.activate(activation) {
            Ok(()) => self.active = true,
            Err(e) => {
                tracing::warn!(error = %e, "virtio: device activation failed");
                // Threads started for some queues before the failure stop now: the driver's
                // reset will not reach a device that never became active.
                self.device.reset();
                self.needs_reset();
            }
        }
    }

    fn needs_reset(&mut self) {
        self.status |= status::NEEDS_RESET;
        self.interrupt.config();
    }

    /// The device reset a driver asks for (status 0): queues, features and vectors.
    fn reset_device(&mut self) {
        if self.active {
            self.device.reset();
            self.active = false;
        }
        for q in &mut self.queues {
            q.reset();
        }
        for v in &self.interrupt.queue_vectors {
            v.store(NO_VECTOR, Ordering::Release);
        }
        self.interrupt
            .config_vector
            .store(NO_VECTOR, Ordering::Release);
        self.interrupt.isr.store(0, Ordering::SeqCst);
        self.driver_features = 0;
        self.device_feature_select = 0;
        self.driver_feature_select = 0;
        self.queue_select = 0;
        self.status = 0;
    }

    /// A notification that reached user space (no ioeventfd): forward it to the queue's kick.
    fn notify_write(&self, offset: u64) {
        let q = offset / u64::from(NOTIFY_MULTIPLIER);
        if let Some(kick) = usize::try_from(q).ok().and_then(|q| self.kicks.get(q)) {
            let _ = kick.write(1);
        }
    }

    /// BAR 0 offset of `addr`, when BAR 0 is enabled and holds it.
    fn bar_offset(&self, addr: u64, len: usize) -> Option<u64> {
        let base = self.config.bar32(0)?;
        let off = addr.checked_sub(base)?;
        (off.checked_add(len as u64)? <= u64::from(BAR_SIZE)).then_some(off)
    }
}

/// Which region of BAR 0 an access falls in, with the offset inside it.
enum Region {
    Common(u64),
    Isr,
    Device(u64),
    Notify(u64),
    MsixTable(u64),
    MsixPba(u64),
    None,
}

fn region(off: u64, len: usize) -> Region {
    let within = |start: u64, size: u64| off >= start && off + len as u64 <= start + size;
    if within(COMMON_OFFSET, COMMON_LEN) {
        Region::Common(off - COMMON_OFFSET)
    } else if within(ISR_OFFSET, ISR_LEN) {
        Region::Isr
    } else if within(DEVICE_OFFSET, DEVICE_LEN) {
        Region::Device(off - DEVICE_OFFSET)
    } else if within(NOTIFY_OFFSET, MSIX_TABLE_OFFSET - NOTIFY_OFFSET) {
        Region::Notify(off - NOTIFY_OFFSET)
    } else if within(MSIX_TABLE_OFFSET, MSIX_PBA_OFFSET - MSIX_TABLE_OFFSET) {
        Region::MsixTable(off - MSIX_TABLE_OFFSET)
    } else if within(MSIX_PBA_OFFSET, u64::from(BAR_SIZE) - MSIX_PBA_OFFSET) {
        Region::MsixPba(off - MSIX_PBA_OFFSET)
    } else {
        Region::None
    }
}

impl PciFunction for VirtioPci {
    fn config_read(&mut self, reg: usize) -> u32 {
        self.config.read(reg)
    }

    fn config_write(&mut self, reg: usize, offset: usize, data: &[u8]) {
        self.config.write(reg, offset, data);
        lock(&self.interrupt.msix).sync_control(&self.config, self.msix_cap);
        self.sync_notify();
    }

    fn reset(&mut self) {
        self.reset_device();
        self.config = self.initial_config.clone();
        lock(&self.interrupt.msix).reset();
        self.sync_notify();
    }

    fn mmio_read(&mut self, addr: u64, data: &mut [u8]) -> bool {
        let Some(off) = self.bar_offset(addr, data.len()) else {
            return false;
        };
        data.fill(0);
        match region(off, data.len()) {
            Region::Common(o) => self.common_read(o, data),
            Region::Isr => data[0] = self.interrupt.isr.swap(0, Ordering::SeqCst),
            Region::Device(o) => self.device.read_config(o, data),
            Region::MsixTable(o) => lock(&self.interrupt.msix).table_read(o, data),
            Region::MsixPba(o) => lock(&self.interrupt.msix).pba_read(o, data),
            Region::Notify(_) | Region::None => {}
        }
        true
    }

    fn mmio_write(&mut self, addr: u64, data: &[u8]) -> bool {
        let Some(off) = self.bar_offset(addr, data.len()) else {
            return false;
        };
        match region(off, data.len()) {
            Region::Common(o) => self.common_write(o, data),
            Region::Device(o) => self.device.write_config(o, data),
            Region::Notify(o) => self.notify_write(o),
            Region::MsixTable(o) => lock(&self.interrupt.msix).table_write(o, data),
            Region::Isr | Region::MsixPba(_) | Region::None => {}
        }
        true
    }
}

/// Guest-physical address of queue `index`'s notify register, for tests that drive a device
/// through its BAR.
pub fn notify_address(bar: u64, index: u16) -> GuestAddress {
    GuestAddress(bar + NOTIFY_OFFSET + u64::from(index) * u64::from(NOTIFY_MULTIPLIER))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::pci::config::{COMMAND_MEMORY, REG_COMMAND};
    use crate::devices::pci::msix::MsixVector;
    use crate::devices::virtio::ActivateError;
    use vm_memory::GuestAddress;

    const BAR: u64 = 0xc000_0000;

    #[derive(Default)]
    struct Dummy {
        activated: Arc<Mutex<Vec<u16>>>,
    }

    impl VirtioDevice for Dummy {
        fn device_type(&self) -> u16 {
            2
        }
        fn features(&self) -> u64 {
            1 << 9
        }
        fn num_queues(&self) -> u16 {
            2
        }
        fn queue_max_size(&self) -> u16 {
            64
        }
        fn read_config(&self, offset: u64, data: &mut [u8]) {
            super::super::read_config_bytes(&[1, 2, 3, 4], offset, data);
        }
        fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
        fn activate(&mut self, a: Activation) -> Result<(), ActivateError> {
            *lock(&self.activated) = a.queues.iter().map(|q| q.index).collect();
            Ok(())
        }
        fn reset(&mut self) {
            lock(&self.activated).clear();
        }
    }

    fn device() -> (VirtioPci, Arc<Mutex<Vec<u16>>>) {
        let dummy = Dummy::default();
        let activated = dummy.activated.clone();
        let vectors = (0..3)
            .map(|i| MsixVector {
                gsi: 24 + i,
                irqfd: EventFd::new(libc::EFD_NONBLOCK).unwrap(),
            })
            .collect();
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let mut d = VirtioPci::new(
            Box::new(dummy),
            Msix::new(vectors, None),
            BAR as u32,
            mem,
            None,
        )
        .unwrap();
        d.config_write(REG_COMMAND, 0, &[COMMAND_MEMORY as u8]);
        (d, activated)
    }

    fn w(d: &mut VirtioPci, off: u64, v: u64, len: usize) {
        assert!(d.mmio_write(BAR + off, &v.to_le_bytes()[..len]));
    }

    fn r(d: &mut VirtioPci, off: u64, len: usize) -> u64 {
        let mut b = [0u8; 8];
        assert!(d.mmio_read(BAR + off, &mut b[..len]));
        u64::from_le_bytes(b)
    }

    #[test]
    fn negotiation_and_activation() {
        let (mut d, activated) = device();
        w(&mut d, 0x00, 1, 4);
        assert_eq!(r(&mut d, 0x04, 4), 1, "VERSION_1 in the high word");
        assert_eq!(r(&mut d, 0x12, 2), 2);
        // Accepting a feature that was not offered: FEATURES_OK does not stick.
        w(&mut d, 0x08, 0, 4);
        w(&mut d, 0x0c, 1 << 5, 4);
        w(
            &mut d,
            0x14,
            u64::from(status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK),
            1,
        );
        assert_eq!(r(&mut d, 0x14, 1) as u8 & status::FEATURES_OK, 0);
        w(&mut d, 0x14, 0, 1);
        // A proper negotiation, one queue set up inside guest memory.
        w(&mut d, 0x0c, 1 << 9, 4);
        w(&mut d, 0x08, 1, 4);
        w(&mut d, 0x0c, 1, 4);
        w(
            &mut d,
            0x14,
            u64::from(status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK),
            1,
        );
        assert_ne!(r(&mut d, 0x14, 1) as u8 & status::FEATURES_OK, 0);
        w(&mut d, 0x16, 1, 2);
        w(&mut d, 0x18, 100, 2); // not a power of two: ignored
        assert_eq!(r(&mut d, 0x18, 2), 64);
        w(&mut d, 0x18, 16, 2);
        w(&mut d, 0x1a, 7, 2); // no such vector
        assert_eq!(r(&mut d, 0x1a, 2), u64::from(NO_VECTOR));
        w(&mut d, 0x1a, 2, 2);
        assert_eq!(r(&mut d, 0x1a, 2), 2);
        w(&mut d, 0x20, 0x1000, 4);
        w(&mut d, 0x28, 0x2000, 4);
        w(&mut d, 0x30, 0x3000, 4);
        w(&mut d, 0x1c, 1, 2);
        w(&mut d, 0x14, 0x0f, 1);
        assert_eq!(*lock(&activated), vec![1]);
        // Set-up registers are frozen while running.
        w(&mut d, 0x20, 0x9000, 4);
        assert_eq!(r(&mut d, 0x20, 4), 0x1000);
        w(&mut d, 0x14, 0, 1);
        assert!(lock(&activated).is_empty(), "reset stops the device");
        assert_eq!(r(&mut d, 0x14, 1), 0);
    }

    #[test]
    fn rings_outside_memory_need_reset() {
        let (mut d, activated) = device();
        w(&mut d, 0x08, 1, 4);
        w(&mut d, 0x0c, 1, 4);
        w(&mut d, 0x14, 0x0b, 1);
        w(&mut d, 0x20, 0xffff_0000, 4);
        w(&mut d, 0x24, 0xffff_ffff, 4);
        w(&mut d, 0x1c, 1, 2);
        w(&mut d, 0x14, 0x0f, 1);
        assert!(lock(&activated).is_empty());
        assert_ne!(r(&mut d, 0x14, 1) as u8 & status::NEEDS_RESET, 0);
    }

    #[test]
    fn hostile_bar_accesses() {
        let (mut d, _) = device();
        let mut seed = 0x1234_5678_u64;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let off = seed % u64::from(BAR_SIZE + 16);
            let len = [1usize, 2, 3, 4, 8, 16][(seed >> 40) as usize % 6];
            let buf = seed.to_le_bytes().repeat(2);
            d.mmio_write(BAR + off, &buf[..len]);
            let mut out = vec![0u8; len];
            d.mmio_read(BAR + off, &mut out);
        }
        // Outside the BAR: not claimed.
        let mut b = [0u8; 4];
        assert!(!d.mmio_read(BAR + u64::from(BAR_SIZE), &mut b));
        assert!(!d.mmio_read(BAR - 4, &mut b));
        assert!(!d.mmio_read(u64::MAX - 1, &mut b));
    }

    #[test]
    fn bar_follows_the_guest_and_decode_enable() {
        let (mut d, _) = device();
        d.config_write(REG_COMMAND, 0, &[0]);
        let mut b = [0u8; 1];
        assert!(!d.mmio_read(BAR + 0x2000, &mut b), "decode off");
        d.config_write(4, 0, &0xd000_0000u32.to_le_bytes());
        d.config_write(REG_COMMAND, 0, &[COMMAND_MEMORY as u8]);
        assert!(d.mmio_read(0xd000_2000, &mut b));
        assert_eq!(b, [1]);
        assert!(!d.mmio_read(BAR + 0x2000, &mut b));
    }
}
