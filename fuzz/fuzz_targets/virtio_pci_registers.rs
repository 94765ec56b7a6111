//! Fuzzes what a guest programs in a virtio-pci device: PCI configuration space, the common
//! configuration (features, status, queue addresses and sizes, MSI-X vectors), notifications,
//! the device configuration and the MSI-X table, in any order and width, over a virtio
//! tablet. Once the driver activates it, the tablet's worker takes descriptor chains from the
//! event and status rings: the input writes those rings and descriptor tables into guest
//! memory as it goes, and queues pointer events for the worker to deliver into them (the
//! virtio-input chains).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera_vmm::devices::pci::msix::{Msix, MsixVector};
use tessera_vmm::devices::pci::PciFunction;
use tessera_vmm::devices::virtio::input::Tablet;
use tessera_vmm::devices::virtio::pci::VirtioPci;
use tessera_vmm::sandbox::Sandbox;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

const BAR: u64 = 0xe000_0000;

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
    // No filters: they are for the VMM's threads, not the fuzzer's.
    let Ok((tablet, handle)) = Tablet::new(&Sandbox::off()) else {
        return;
    };
    let guest = mem.clone();
    let vectors: Vec<MsixVector> = (0..3)
        .filter_map(|i| {
            Some(MsixVector {
                gsi: 24 + i,
                irqfd: EventFd::new(libc::EFD_NONBLOCK).ok()?,
            })
        })
        .collect();
    let Ok(mut dev) = VirtioPci::new(
        Box::new(tablet),
        Msix::new(vectors, None),
        BAR as u32,
        mem,
        None,
    ) else {
        return;
    };
    // The command register's memory enable, as firmware sets it.
    dev.config_write(1, 0, &[0x06]);
    for op in ops.chunks_exact(12) {
        let len = [1usize, 2, 4, 8][usize::from(op[1] % 4)];
        let value = &op[4..12];
        match op[0] % 6 {
            0 => {
                let off = u64::from(u16::from_le_bytes([op[2], op[3]])) % 0x4000;
                let _ = dev.mmio_write(BAR + off, &value[..len]);
            }
            1 => {
                let off = u64::from(u16::from_le_bytes([op[2], op[3]])) % 0x4000;
                let mut b = [0u8; 8];
                let _ = dev.mmio_read(BAR + off, &mut b[..len]);
            }
            2 => dev.config_write(
                usize::from(op[2] % 64),
                usize::from(op[3] % 4),
                &value[..len.min(4)],
            ),
            3 => {
                let _ = dev.config_read(usize::from(op[2] % 64));
            }
            4 => {
                // Rings and descriptors, anywhere in the first 1 MiB.
                let at = u64::from(u16::from_le_bytes([op[2], op[3]])) << 4;
                let _ = guest.write_slice(value, GuestAddress(at));
            }
            _ => {
                // Pointer events for the worker to put into the event ring's buffers.
                let x = i32::from(i16::from_le_bytes([op[4], op[5]]));
                let y = i32::from(i16::from_le_bytes([op[6], op[7]]));
                handle.move_to(
                    x,
                    y,
                    u32::from(op[2]) * 8,
                    u32::from(op[3]) * 8,
                    u32::from(op[8]),
                );
            }
        }
    }
});
