//! Fuzzes what a guest does to the xHCI controller: PCI configuration space, the capability,
//! operational, port, runtime and doorbell registers in BAR 0 and the MSI-X table, in any
//! order and width, and the DCBAA, rings, TRBs and contexts it writes into guest memory as it
//! goes; with display input for the USB tablet and keyboard arriving between accesses, as the
//! display's thread sends it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera_vmm::devices::pci::msix::{Msix, MsixVector};
use tessera_vmm::devices::pci::PciFunction;
use tessera_vmm::devices::xhci::Xhci;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

const BAR: u64 = 0xe000_0000;

/// Registers a driver writes by name: USBCMD, USBSTS, CRCR (both halves), DCBAAP, CONFIG,
/// PORTSC of ports 1-3, IMAN, ERSTSZ, ERSTBA, ERDP (both halves), doorbells 0-3.
const NAMED: [u64; 20] = [
    0x40, 0x44, 0x58, 0x5c, 0x70, 0x78, 0x440, 0x450, 0x460, 0x620, 0x628, 0x630, 0x634, 0x638,
    0x63c, 0x700, 0x704, 0x708, 0x70c, 0x710,
];

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
    let Ok(irqfd) = EventFd::new(libc::EFD_NONBLOCK) else {
        return;
    };
    let msix = Msix::new(vec![MsixVector { gsi: 24, irqfd }], None);
    let Ok((mut dev, input)) = Xhci::new(msix, BAR as u32, mem.clone()) else {
        return;
    };
    // Memory decoding and bus mastering, as firmware sets them.
    dev.config_write(1, 0, &[0x06]);
    for op in ops.chunks_exact(12) {
        let len = [1usize, 2, 4, 8][usize::from(op[1] % 4)];
        let value = &op[4..12];
        let off = u64::from(u16::from_le_bytes([op[2], op[3]])) % 0x1000;
        match op[0] % 7 {
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
                let reg = NAMED[usize::from(op[2]) % NAMED.len()];
                let _ = dev.mmio_write(BAR + reg, &value[..4]);
            }
            4 => {
                // Rings, TRBs, contexts: 8 bytes at any dword of the first 256 KiB.
                let at = u64::from(u16::from_le_bytes([op[2], op[3]])) << 2;
                let _ = mem.write_slice(value, GuestAddress(at));
            }
            5 => {
                let v = i32::from_le_bytes([value[0], value[1], value[2], value[3]]);
                match op[2] % 4 {
                    0 => input.key(op[3]),
                    1 => input.move_to(v, v >> 8, u32::from(op[3]), 768, u32::from(op[1])),
                    2 => input.buttons(u32::from(op[3])),
                    _ => input.wheel(v),
                }
            }
            _ => dev.reset(),
        }
    }
});
