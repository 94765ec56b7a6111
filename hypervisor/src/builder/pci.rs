//! The PCI bus as built: the host bridge and LPC bridge, virtio-blk disks, virtio-net NICs,
//! the AHCI controller with SATA disks and DVD-ROM drives, the display adapter, its tablet and
//! the xHCI controller with the USB tablet and keyboard, each function's BARs placed in the
//! 32-bit window and its MSI-X vectors routed.

use std::path::Path;
use std::sync::{Arc, Mutex};

use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::{BuildError, DisplayHardware};
use crate::arch::x86_64::layout::{
    DISPLAY_MMIO_BAR, DISPLAY_VRAM_BAR, PCI_MMIO32_END, PCI_MMIO32_START,
};
use crate::config::{DiskBus, DiskConfig, NetConfig, VhostMode, VmConfig};
use crate::devices::ahci::drive::{Drive, DriveInfo};
use crate::devices::ahci::Ahci;
use crate::devices::bus::lock;
use crate::devices::display::bochs::BochsDisplay;
use crate::devices::pci::host_bridge::HostBridge;
use crate::devices::pci::lpc::{Lpc, LPC_SLOT};
use crate::devices::pci::msix::{Msix, MsixVector};
use crate::devices::pci::{PciMmioWindow, PciRoot};
use crate::devices::virtio::block::request::BlockBackend;
use crate::devices::virtio::block::Block;
use crate::devices::virtio::net::vhost::VhostNet;
use crate::devices::virtio::net::{tap, Net, NetStats, MAX_PAIRS};
use crate::devices::virtio::pci::{VirtioPci, BAR_SIZE};
use crate::devices::virtio::VirtioDevice;
use crate::devices::xhci::{UsbInput, Xhci};
use crate::sandbox::Sandbox;
use crate::vstate::irq_routing::IrqRouting;
use crate::vstate::vm::Vm;

/// The disks the VMM flushes when the VM ends, by name.
pub type Disks = Vec<(String, Arc<BlockBackend>)>;

/// The PCI bus as built.
pub(super) struct PciBus {
    /// Bus 0 and its functions.
    pub root: PciRoot,
    /// The 32-bit BAR window on the MMIO bus.
    pub window: PciMmioWindow,
    /// The disks to flush at the end.
    pub disks: Disks,
    /// The AHCI controller's devices, for `/metrics`.
    pub sata: Vec<DriveInfo>,
    /// The USB tablet and keyboard, for the display.
    pub usb: Option<UsbInput>,
    /// Each NIC's tap and counters, for `/metrics`.
    pub nets: Vec<(String, Arc<NetStats>)>,
}

/// What attaching a function needs of the VM.
struct Ctx<'a> {
    vm: &'a Vm,
    routing: &'a Arc<IrqRouting>,
    memory: &'a GuestMemoryMmap,
}

/// Hands out BAR addresses in the 32-bit window, one `BAR_SIZE` step each.
struct Bars(u64);

impl Bars {
    fn next(&mut self) -> Result<u32, BuildError> {
        let bar = self.0;
        if bar + u64::from(BAR_SIZE) > PCI_MMIO32_END {
            return Err(BuildError::PciWindowFull);
        }
        self.0 += u64::from(BAR_SIZE);
        Ok(bar as u32)
    }
}

/// Opens a disk's image, its backing chain confined to its datastore.
fn open_image(disk: &DiskConfig) -> Result<tessera_storage::Disk, BuildError> {
    let err = |e| BuildError::Disk(disk.path.clone(), e);
    let root = match &disk.datastore {
        Some(d) => d.clone(),
        None => parent_of(&disk.path),
    };
    let ds = tessera_storage::Datastore::new(&root).map_err(err)?;
    tessera_storage::Disk::open(&ds, &disk.path, disk.format, !disk.readonly).map_err(err)
}

fn parent_of(path: &Path) -> std::path::PathBuf {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| ".".into(), |p| p.to_path_buf())
}

/// `n` MSI-X vectors, each with a GSI and an irqfd.
fn vectors(n: u16, ctx: &Ctx<'_>) -> Result<Msix, BuildError> {
    let vectors = (0..n)
        .map(|_| -> Result<MsixVector, BuildError> {
            let gsi = ctx.routing.allocate()?;
            let irqfd = EventFd::new(libc::EFD_NONBLOCK).map_err(BuildError::EventFd)?;
            ctx.vm.register_irqfd(&irqfd, gsi)?;
            Ok(MsixVector { gsi, irqfd })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Msix::new(vectors, Some((*ctx.routing).clone())))
}

/// Opens a disk and makes it a virtio-blk device.
fn attach_disk(
    disk: &DiskConfig,
    vcpus: u8,
    bar: u32,
    ctx: &Ctx<'_>,
    sandbox: &Sandbox,
) -> Result<(Arc<Mutex<VirtioPci>>, Arc<BlockBackend>), BuildError> {
    let image = open_image(disk)?;
    let queues = disk.queues.unwrap_or(u16::from(vcpus));
    let serial = disk.serial.clone().unwrap_or_default();
    let block = Block::new(image, disk.readonly, queues, &serial, sandbox)?;
    let backend = block.backend();
    Ok((attach_virtio(Box::new(block), bar, ctx)?, backend))
}

/// Opens a NIC's tap queues (one per queue pair: one per vCPU unless set) and makes it a
/// virtio-net device.
fn attach_net(
    net: &NetConfig,
    vcpus: u8,
    bar: u32,
    ctx: &Ctx<'_>,
    sandbox: &Sandbox,
) -> Result<(Arc<Mutex<VirtioPci>>, Arc<NetStats>), BuildError> {
    let pairs = net.queues.unwrap_or(u16::from(vcpus)).clamp(1, MAX_PAIRS);
    let taps = tap::open_queues(&net.tap, pairs)?;
    let vhost = match net.vhost {
        VhostMode::Off => None,
        mode => match VhostNet::open(pairs, ctx.memory) {
            Ok(v) => Some(v),
            Err(e) if mode == VhostMode::On => return Err(e.into()),
            Err(e) => {
                tracing::info!(tap = %net.tap, reason = %e, "virtio-net: no vhost-net; frames move in user space");
                None
            }
        },
    };
    let dev = Net::new(taps, net.mac().0, net.mtu, vhost, sandbox)?;
    let stats = dev.stats();
    Ok((attach_virtio(Box::new(dev), bar, ctx)?, stats))
}

/// Wraps a virtio device in the PCI transport with BAR 0 at `bar` and one MSI-X vector per
/// queue plus one for configuration changes, as Linux asks for.
fn attach_virtio(
    device: Box<dyn VirtioDevice>,
    bar: u32,
    ctx: &Ctx<'_>,
) -> Result<Arc<Mutex<VirtioPci>>, BuildError> {
    let msix = vectors(device.num_queues() + 1, ctx)?;
    let dev = VirtioPci::new(
        device,
        msix,
        bar,
        ctx.memory.clone(),
        Some(ctx.vm.shared_fd()),
    )?;
    Ok(Arc::new(Mutex::new(dev)))
}

/// The AHCI controller with the SATA disks (in configuration order) then the DVD-ROM drives
/// on its ports.
fn attach_ahci(
    cfg: &VmConfig,
    bar: u32,
    ctx: &Ctx<'_>,
    sandbox: &Sandbox,
    disks: &mut Disks,
) -> Result<Arc<Mutex<Ahci>>, BuildError> {
    let mut drives = Vec::new();
    for (i, disk) in cfg
        .disks
        .iter()
        .filter(|d| d.bus == DiskBus::Sata)
        .enumerate()
    {
        let serial = disk
            .serial
            .clone()
            .unwrap_or_else(|| format!("TS-SATA-{i}"));
        let backend = Arc::new(BlockBackend::new(open_image(disk)?, disk.readonly, &serial));
        drives.push(Drive::disk(backend.clone(), &serial));
        disks.push((disk.path.display().to_string(), backend));
    }
    for (i, cdrom) in cfg.cdroms.iter().enumerate() {
        let disc = match &cdrom.path {
            Some(path) => {
                let err = |e| BuildError::Disk(path.clone(), e);
                let ds = tessera_storage::Datastore::new(parent_of(path)).map_err(err)?;
                let image =
                    tessera_storage::Disk::open(&ds, path, tessera_storage::Format::Raw, false)
                        .map_err(err)?;
                Some(image)
            }
            None => None,
        };
        drives.push(Drive::cdrom(disc, &format!("TS-DVD-{i}")));
    }
    let msix = vectors(1, ctx)?;
    let ahci = Ahci::new(drives, msix, bar, ctx.memory.clone(), sandbox)?;
    Ok(Arc::new(Mutex::new(ahci)))
}

/// The PCI bus: host bridge, LPC bridge, one virtio-blk function per virtio disk, the AHCI
/// controller, the display and its tablet; BARs in the 32-bit window.
pub(super) fn build_pci(
    cfg: &VmConfig,
    vcpus: u8,
    vm: &Vm,
    memory: &GuestMemoryMmap,
    display: Option<&DisplayHardware>,
    sandbox: &Sandbox,
) -> Result<PciBus, BuildError> {
    let routing = Arc::new(IrqRouting::new(vm.shared_fd()));
    let ctx = Ctx {
        vm,
        routing: &routing,
        memory,
    };
    let mut pci = PciRoot::new();
    pci.add_at(0, Arc::new(Mutex::new(HostBridge::new())))?;
    pci.add_at(LPC_SLOT, Arc::new(Mutex::new(Lpc::new())))?;
    let mut window = PciMmioWindow::new(PCI_MMIO32_START);
    let mut bars = Bars(PCI_MMIO32_START);
    let mut disks = Vec::new();
    let mut sata = Vec::new();
    let mut usb = None;
    for disk in cfg.disks.iter().filter(|d| d.bus == DiskBus::Virtio) {
        let bar = bars.next()?;
        let (dev, backend) = attach_disk(disk, vcpus, bar, &ctx, sandbox)?;
        pci.add(dev.clone())?;
        window.add(dev);
        tracing::info!(disk = %disk.path.display(), bar = format_args!("{bar:#x}"), "virtio-blk attached");
        disks.push((disk.path.display().to_string(), backend));
    }
    let mut nets = Vec::new();
    for net in &cfg.nets {
        let bar = bars.next()?;
        let (dev, stats) = attach_net(net, vcpus, bar, &ctx, sandbox)?;
        let slot = pci.add(dev.clone())?;
        window.add(dev);
        tracing::info!(tap = %net.tap, mac = %net.mac(), slot, "virtio-net attached");
        nets.push((net.tap.clone(), stats));
    }
    if cfg.sata_devices() > 0 {
        let ahci = attach_ahci(cfg, bars.next()?, &ctx, sandbox, &mut disks)?;
        sata = lock(&ahci).drives();
        let slot = pci.add(ahci.clone())?;
        window.add(ahci);
        tracing::info!(
            slot,
            devices = cfg.sata_devices(),
            "AHCI controller attached"
        );
    }
    if let Some(d) = display {
        let dev = Arc::new(Mutex::new(BochsDisplay::new(
            d.dispi.clone(),
            d.fb.clone(),
            DISPLAY_VRAM_BAR,
            DISPLAY_MMIO_BAR,
        )?));
        let slot = pci.add(dev.clone())?;
        window.add(dev);
        tracing::info!(slot, "bochs display attached");
        if let Some(tablet) = lock(&d.tablet).take() {
            let dev = attach_virtio(Box::new(tablet), bars.next()?, &ctx)?;
            let slot = pci.add(dev.clone())?;
            window.add(dev);
            tracing::info!(slot, "virtio tablet attached");
        }
        if cfg.display.as_ref().is_some_and(|d| d.usb) {
            let (xhci, input) = Xhci::new(vectors(1, &ctx)?, bars.next()?, memory.clone())?;
            let dev = Arc::new(Mutex::new(xhci));
            let slot = pci.add(dev.clone())?;
            window.add(dev);
            tracing::info!(slot, "xHCI controller attached: USB tablet and keyboard");
            usb = Some(input);
        }
    }
    Ok(PciBus {
        root: pci,
        window,
        disks,
        sata,
        usb,
        nets,
    })
}
