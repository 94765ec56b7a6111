//! PCI Express enhanced configuration access (ECAM): each function's 4 KiB of configuration
//! space mapped at `base + (bus << 20 | slot << 15 | function << 12)`, described to the guest
//! by ACPI's MCFG table. Linux uses it in place of ports 0xCF8/0xCFC once it finds MCFG, and
//! OVMF's PCI drivers use nothing else on a q35-like machine.

use std::sync::{Arc, Mutex};

use super::PciRoot;
use crate::devices::bus::{lock, BusDevice};

/// The ECAM window over the root bus (the same functions ports 0xCF8/0xCFC reach).
pub struct PciEcam {
    root: Arc<Mutex<PciRoot>>,
}

/// What an access at `offset` into the window selects: bus, slot, function, dword, byte in
/// the dword. None when the access crosses a dword (no chipset splits those) or is wider.
fn decode(offset: u64, len: usize) -> Option<(u32, u32, u32, usize, usize)> {
    let byte = (offset & 0xfff) as usize;
    if !matches!(len, 1 | 2 | 4) || byte % 4 + len > 4 {
        return None;
    }
    Some((
        ((offset >> 20) & 0xff) as u32,
        ((offset >> 15) & 0x1f) as u32,
        ((offset >> 12) & 0x7) as u32,
        byte / 4,
        byte % 4,
    ))
}

impl PciEcam {
    /// The window over `root`.
    pub fn new(root: Arc<Mutex<PciRoot>>) -> Self {
        Self { root }
    }
}

impl BusDevice for PciEcam {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match decode(offset, data.len()) {
            Some((bus, slot, function, reg, byte)) => {
                let value = lock(&self.root).config_read(bus, slot, function, reg);
                data.copy_from_slice(&value.to_le_bytes()[byte..byte + data.len()]);
            }
            None => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let Some((bus, slot, function, reg, byte)) = decode(offset, data.len()) {
            lock(&self.root).config_write(bus, slot, function, reg, byte, data);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::host_bridge::HostBridge;
    use super::*;

    fn ecam() -> (PciEcam, Arc<Mutex<PciRoot>>) {
        let mut root = PciRoot::new();
        root.add(Arc::new(Mutex::new(HostBridge::new()))).unwrap();
        let root = Arc::new(Mutex::new(root));
        (PciEcam::new(root.clone()), root)
    }

    fn read(e: &mut PciEcam, offset: u64, len: usize) -> u32 {
        let mut b = [0u8; 4];
        e.read(offset, &mut b[..len]);
        u32::from_le_bytes(b)
    }

    #[test]
    fn reads_what_the_io_ports_read() {
        let (mut e, root) = ecam();
        assert_eq!(read(&mut e, 0, 4), lock(&root).config_read(0, 0, 0, 0));
        assert_eq!(read(&mut e, 0, 4), 0x29c0_8086);
        assert_eq!(read(&mut e, 2, 2), 0x29c0);
        assert_eq!(read(&mut e, 0xb, 1), 0x06);
        // Slot 1, another function, another bus: nothing there.
        assert_eq!(read(&mut e, 1 << 15, 4), u32::MAX);
        assert_eq!(read(&mut e, 1 << 12, 4), u32::MAX);
        assert_eq!(read(&mut e, 1 << 20, 4), u32::MAX);
    }

    #[test]
    fn writes_reach_the_function() {
        let (mut e, root) = ecam();
        // The interrupt line (byte 0 of dword 15) is a scratch register to the guest.
        e.write(0x3c, &[0x0b]);
        assert_eq!(lock(&root).config_read(0, 0, 0, 15) & 0xff, 0x0b);
        assert_eq!(read(&mut e, 0x3c, 1), 0x0b);
        // Read-only registers stay.
        e.write(0, &0u32.to_le_bytes());
        assert_eq!(read(&mut e, 0, 4), 0x29c0_8086);
    }

    #[test]
    fn odd_accesses_read_ones_and_change_nothing() {
        let (mut e, _root) = ecam();
        for (offset, len) in [(1u64, 4usize), (3, 2), (0, 3)] {
            let mut b = vec![0u8; len];
            e.read(offset, &mut b);
            assert!(b.iter().all(|x| *x == 0xff), "{offset} {len}");
            e.write(offset, &b);
        }
        let mut b = [0u8; 8];
        e.read(0, &mut b);
        assert_eq!(b, [0xff; 8]);
        e.write(0, &[0; 8]);
        assert_eq!(read(&mut e, 0, 4), 0x29c0_8086);
        // The last byte of the window.
        assert_eq!(read(&mut e, 0x0fff_ffff, 1), 0xff);
    }
}
