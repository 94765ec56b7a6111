//! Fuzzes what a guest does to the AHCI controller: PCI configuration space, the HBA and port
//! registers in BAR 5 and the MSI-X table, in any order and width, and the command lists,
//! command tables (FISes, ATAPI packets) and descriptor tables it writes into guest memory as
//! it goes. The controller's I/O thread runs the commands issued against a raw disk, a disc
//! image and an empty DVD-ROM drive, as in a VM.
#![no_main]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use tessera_storage::{Datastore, Disk, Format};
use tessera_vmm::devices::ahci::drive::Drive;
use tessera_vmm::devices::ahci::Ahci;
use tessera_vmm::devices::pci::msix::{Msix, MsixVector};
use tessera_vmm::devices::pci::PciFunction;
use tessera_vmm::devices::virtio::block::request::BlockBackend;
use tessera_vmm::sandbox::Sandbox;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

const BAR: u64 = 0xe000_0000;

/// A directory with a 1 MiB disk and a 64-block disc, made once per fuzzing process.
fn images() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("tessera-fuzz-ahci-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let _ = std::fs::write(dir.join("disk.raw"), vec![0u8; 1 << 20]);
        let _ = std::fs::write(dir.join("disc.iso"), vec![0x5au8; 64 * 2048]);
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    // [memory: 256 bytes][ops: 12 bytes each]
    if data.len() < 256 {
        return;
    }
    let (fill, ops) = data.split_at(256);
    let Ok(mem) = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]) else {
        return;
    };
    for (i, chunk) in fill.chunks(32).enumerate() {
        let _ = mem.write_slice(chunk, GuestAddress((i as u64) * 0x1000));
    }
    let dir = images();
    let Ok(ds) = Datastore::new(dir) else { return };
    let (Ok(disk), Ok(disc)) = (
        Disk::open(&ds, &dir.join("disk.raw"), Format::Raw, true),
        Disk::open(&ds, &dir.join("disc.iso"), Format::Raw, false),
    ) else {
        return;
    };
    let backend = Arc::new(BlockBackend::new(disk, false, ""));
    let drives = vec![
        Drive::disk(backend, "fuzz-disk"),
        Drive::cdrom(Some(disc), "fuzz-dvd"),
        Drive::cdrom(None, "fuzz-empty"),
    ];
    let Ok(irqfd) = EventFd::new(libc::EFD_NONBLOCK) else {
        return;
    };
    let msix = Msix::new(vec![MsixVector { gsi: 24, irqfd }], None);
    // No filters: they are for the VMM's threads, not the fuzzer's.
    let Ok(mut dev) = Ahci::new(drives, msix, BAR as u32, mem.clone(), &Sandbox::off()) else {
        return;
    };
    // Memory decoding and bus mastering, as firmware sets them.
    dev.config_write(1, 0, &[0x06]);
    for op in ops.chunks_exact(12) {
        let len = [1usize, 2, 4, 8][usize::from(op[1] % 4)];
        let value = &op[4..12];
        let off = u64::from(u16::from_le_bytes([op[2], op[3]])) % 0x1000;
        match op[0] % 6 {
            0 => {
                let _ = dev.mmio_write(BAR + off, &value[..len]);
            }
            1 => {
                let mut b = [0u8; 8];
                let _ = dev.mmio_read(BAR + off, &mut b[..len]);
            }
            2 => dev.config_write(
                usize::from(op[2] % 64),
                usize::from(op[3] % 4),
                &value[..len.min(4)],
            ),
            3 => {
                // Port registers by name: a dword write to one of the six ports' first 0x48.
                let port = u64::from(op[2] % 6);
                let reg = u64::from(op[3] % 18) * 4;
                let _ = dev.mmio_write(BAR + 0x100 + port * 0x80 + reg, &value[..4]);
            }
            4 => {
                // Command lists, tables, FISes and descriptors: 8 bytes at any dword of the
                // first 256 KiB.
                let at = u64::from(u16::from_le_bytes([op[2], op[3]])) << 2;
                let _ = mem.write_slice(value, GuestAddress(at));
            }
            _ => std::thread::yield_now(),
        }
    }
    // Dropping the controller stops its thread once the command in hand is done.
});
