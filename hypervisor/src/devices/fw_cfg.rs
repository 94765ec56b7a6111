//! QEMU's firmware configuration device (fw_cfg), the channel through which UEFI firmware
//! built for QEMU (OVMF) learns the machine: the memory map (`etc/e820`), the CPU count, the
//! ACPI tables and the loader script that places them (`etc/table-loader`), the boot order.
//! Implemented by hand from QEMU's specification (docs/specs/fw_cfg.rst): no crate provides
//! the device side.
//!
//! Ports: the 16-bit selector at 0x510, the data byte at 0x511 (each read returns the next
//! byte of the selected item, zeros past its end), and the DMA address at 0x514 (big-endian,
//! high half then low half; writing the low half runs the transfer described by the
//! `FWCfgDmaAccess` structure at that guest address). Every item is read-only: a write
//! through DMA fails with the error bit, a write to the data port is ignored.

use std::collections::BTreeMap;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::devices::bus::BusDevice;

/// First port of the device.
pub const FW_CFG_PORT: u64 = 0x510;
/// Ports: selector (2), data (at +1), pad, DMA address (8 at +4).
pub const FW_CFG_PORT_LEN: u64 = 12;

/// Well-known selectors.
pub mod key {
    /// "QEMU".
    pub const SIGNATURE: u16 = 0x00;
    /// Interface bits: 1 traditional, 2 DMA.
    pub const ID: u16 = 0x01;
    /// Number of CPUs (u16, little-endian).
    pub const NB_CPUS: u16 = 0x05;
    /// Maximum number of CPUs (u16).
    pub const MAX_CPUS: u16 = 0x0f;
    /// The file directory.
    pub const FILE_DIR: u16 = 0x19;
    /// The first file's selector.
    pub const FILE_FIRST: u16 = 0x20;
}

/// Longest file name, its terminating NUL included.
const MAX_NAME: usize = 56;
/// DMA control bits.
const DMA_ERROR: u32 = 0x01;
const DMA_READ: u32 = 0x02;
const DMA_SKIP: u32 = 0x04;
const DMA_SELECT: u32 = 0x08;
const DMA_WRITE: u32 = 0x10;
/// What a read of the DMA address register returns: "QEMU CFG".
const DMA_SIGNATURE: u64 = 0x5145_4d55_2043_4647;
/// The largest transfer handled in one step (longer ones loop over it).
const CHUNK: usize = 64 << 10;

/// Errors while adding items.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FwCfgError {
    /// A file name longer than the directory holds.
    #[error("fw_cfg file name {0:?} is longer than {max} bytes", max = MAX_NAME - 1)]
    NameTooLong(String),
    /// The same file twice.
    #[error("fw_cfg file {0:?} exists already")]
    Duplicate(String),
    /// An item larger than the directory's 32-bit size.
    #[error("fw_cfg item {0:?} is larger than 4 GiB")]
    TooLarge(String),
    /// No selector left for another file.
    #[error("no fw_cfg selector is left for {0:?}")]
    Full(String),
}

/// The device and its items.
pub struct FwCfg {
    items: BTreeMap<u16, Vec<u8>>,
    /// File name and selector, in the order added.
    files: Vec<(String, u16)>,
    selected: u16,
    offset: usize,
    dma_high: u32,
    memory: GuestMemoryMmap,
}

impl FwCfg {
    /// The device for a machine with `cpus` CPUs whose guest memory is `memory` (the DMA
    /// target), with the signature, the interface ID (DMA supported), the CPU counts and an
    /// empty directory.
    pub fn new(memory: GuestMemoryMmap, cpus: u16) -> Self {
        let mut me = Self {
            items: BTreeMap::new(),
            files: Vec::new(),
            selected: 0,
            offset: 0,
            dma_high: 0,
            memory,
        };
        me.items.insert(key::SIGNATURE, b"QEMU".to_vec());
        me.items.insert(key::ID, 3u32.to_le_bytes().to_vec());
        me.items.insert(key::NB_CPUS, cpus.to_le_bytes().to_vec());
        me.items.insert(key::MAX_CPUS, cpus.to_le_bytes().to_vec());
        me.update_directory();
        me
    }

    /// Adds file `name` holding `data`; returns its selector.
    pub fn add_file(&mut self, name: &str, data: Vec<u8>) -> Result<u16, FwCfgError> {
        if name.len() >= MAX_NAME {
            return Err(FwCfgError::NameTooLong(name.into()));
        }
        if self.files.iter().any(|(n, _)| n == name) {
            return Err(FwCfgError::Duplicate(name.into()));
        }
        if u32::try_from(data.len()).is_err() {
            return Err(FwCfgError::TooLarge(name.into()));
        }
        let selector = u16::try_from(self.files.len())
            .ok()
            .and_then(|n| key::FILE_FIRST.checked_add(n))
            .filter(|s| *s < 0x4000)
            .ok_or_else(|| FwCfgError::Full(name.into()))?;
        self.items.insert(selector, data);
        self.files.push((name.into(), selector));
        self.update_directory();
        Ok(selector)
    }

    /// The directory: a big-endian count, then per file its size, selector, a reserved
    /// half-word and its NUL-padded name, sorted by name as QEMU sorts them.
    fn update_directory(&mut self) {
        let mut files = self.files.clone();
        files.sort();
        let mut dir = (files.len() as u32).to_be_bytes().to_vec();
        for (name, selector) in &files {
            let size = self.items.get(selector).map_or(0, Vec::len) as u32;
            dir.extend_from_slice(&size.to_be_bytes());
            dir.extend_from_slice(&selector.to_be_bytes());
            dir.extend_from_slice(&[0, 0]);
            let mut n = [0u8; MAX_NAME];
            n[..name.len()].copy_from_slice(name.as_bytes());
            dir.extend_from_slice(&n);
        }
        self.items.insert(key::FILE_DIR, dir);
    }

    fn select(&mut self, selector: u16) {
        self.selected = selector;
        self.offset = 0;
    }

    /// The selected item's bytes (none for an unknown selector).
    fn item(&self) -> &[u8] {
        self.items.get(&self.selected).map_or(&[], Vec::as_slice)
    }

    fn read_data(&mut self) -> u8 {
        let b = self.item().get(self.offset).copied().unwrap_or(0);
        self.offset = self.offset.saturating_add(1);
        b
    }

    /// Runs the transfer whose `FWCfgDmaAccess` is at `at`, and writes its status back.
    fn dma(&mut self, at: u64) {
        let mut access = [0u8; 16];
        if self
            .memory
            .read_slice(&mut access, GuestAddress(at))
            .is_err()
        {
            // Nowhere to report to: the guest pointed outside its memory.
            return;
        }
        let control = u32::from_be_bytes([access[0], access[1], access[2], access[3]]);
        let length = u32::from_be_bytes([access[4], access[5], access[6], access[7]]);
        let address = u64::from_be_bytes(access[8..16].try_into().unwrap_or([0; 8]));
        if control & DMA_SELECT != 0 {
            self.select((control >> 16) as u16);
        }
        let ok = if control & DMA_READ != 0 {
            self.dma_read(address, length as usize)
        } else if control & DMA_WRITE != 0 {
            // Every item is read-only.
            false
        } else if control & DMA_SKIP != 0 {
            self.offset = self.offset.saturating_add(length as usize);
            true
        } else {
            true
        };
        let status: u32 = if ok { 0 } else { DMA_ERROR };
        let _ = self
            .memory
            .write_slice(&status.to_be_bytes(), GuestAddress(at));
    }

    /// Copies `length` bytes of the item from the current offset to `address` (zeros past
    /// the item's end); false if the target is not all guest memory.
    fn dma_read(&mut self, address: u64, length: usize) -> bool {
        let mut done = 0;
        while done < length {
            let n = (length - done).min(CHUNK);
            let mut chunk = vec![0u8; n];
            let item = self.item();
            if let Some(avail) = item.get(self.offset..) {
                let k = avail.len().min(n);
                chunk[..k].copy_from_slice(&avail[..k]);
            }
            let Some(to) = address.checked_add(done as u64) else {
                return false;
            };
            if self.memory.write_slice(&chunk, GuestAddress(to)).is_err() {
                return false;
            }
            self.offset = self.offset.saturating_add(n);
            done += n;
        }
        true
    }
}

impl BusDevice for FwCfg {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match (offset, data.len()) {
            (1, _) => {
                for b in data.iter_mut() {
                    *b = self.read_data();
                }
            }
            (4..=11, n) if offset as usize - 4 + n <= 8 => {
                let sig = DMA_SIGNATURE.to_be_bytes();
                let at = offset as usize - 4;
                data.copy_from_slice(&sig[at..at + n]);
            }
            _ => data.fill(0),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match (offset, data.len()) {
            (0, 2) => self.select(u16::from_le_bytes([data[0], data[1]])),
            // The address halves arrive as big-endian dwords: the value is the bytes as
            // written, read in network order.
            (4, 4) => self.dma_high = u32::from_be_bytes([data[0], data[1], data[2], data[3]]),
            (8, 4) => {
                let low = u32::from_be_bytes([data[0], data[1], data[2], data[3]]);
                let at = u64::from(self.dma_high) << 32 | u64::from(low);
                self.dma_high = 0;
                self.dma(at);
            }
            // Writes to the data port (deprecated) and anything else: ignored.
            _ => {}
        }
    }

    fn reset(&mut self) {
        self.select(0);
        self.dma_high = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev() -> FwCfg {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        FwCfg::new(mem, 2)
    }

    fn read_item(d: &mut FwCfg, selector: u16, len: usize) -> Vec<u8> {
        d.write(0, &selector.to_le_bytes());
        let mut out = vec![0u8; len];
        for b in out.iter_mut() {
            let mut x = [0u8];
            d.read(1, &mut x);
            *b = x[0];
        }
        out
    }

    /// Writes an `FWCfgDmaAccess` at `at` and triggers it; returns the status written back.
    fn dma(d: &mut FwCfg, at: u64, control: u32, length: u32, address: u64) -> u32 {
        let mut access = control.to_be_bytes().to_vec();
        access.extend_from_slice(&length.to_be_bytes());
        access.extend_from_slice(&address.to_be_bytes());
        d.memory.write_slice(&access, GuestAddress(at)).unwrap();
        d.write(4, &((at >> 32) as u32).to_be_bytes());
        d.write(8, &(at as u32).to_be_bytes());
        let mut status = [0u8; 4];
        d.memory.read_slice(&mut status, GuestAddress(at)).unwrap();
        u32::from_be_bytes(status)
    }

    #[test]
    fn signature_id_and_cpus_through_the_data_port() {
        let mut d = dev();
        assert_eq!(read_item(&mut d, key::SIGNATURE, 4), b"QEMU");
        assert_eq!(read_item(&mut d, key::ID, 4), [3, 0, 0, 0]);
        assert_eq!(read_item(&mut d, key::NB_CPUS, 2), [2, 0]);
        // Past the end, and an unknown item: zeros.
        assert_eq!(read_item(&mut d, key::SIGNATURE, 6), b"QEMU\0\0");
        assert_eq!(read_item(&mut d, 0x3fff, 3), [0, 0, 0]);
        let mut sig = [0u8; 8];
        d.read(4, &mut sig);
        assert_eq!(&sig, b"QEMU CFG");
    }

    #[test]
    fn files_are_listed_sorted_and_read_back() {
        let mut d = dev();
        let b = d.add_file("etc/e820", vec![1, 2, 3]).unwrap();
        let a = d.add_file("bootorder", b"/pci@i0cf8/".to_vec()).unwrap();
        assert_eq!((b, a), (0x20, 0x21));
        let dir = read_item(&mut d, key::FILE_DIR, 4 + 2 * 64);
        assert_eq!(u32::from_be_bytes(dir[..4].try_into().unwrap()), 2);
        // "bootorder" sorts first.
        assert_eq!(u32::from_be_bytes(dir[4..8].try_into().unwrap()), 11);
        assert_eq!(u16::from_be_bytes([dir[8], dir[9]]), a);
        assert_eq!(&dir[12..21], b"bootorder");
        assert_eq!(dir[21], 0);
        assert_eq!(u16::from_be_bytes([dir[72], dir[73]]), b);
        assert_eq!(read_item(&mut d, b, 3), [1, 2, 3]);
        assert_eq!(
            d.add_file("etc/e820", vec![]),
            Err(FwCfgError::Duplicate("etc/e820".into()))
        );
        assert!(matches!(
            d.add_file(&"x".repeat(56), vec![]),
            Err(FwCfgError::NameTooLong(_))
        ));
    }

    #[test]
    fn dma_selects_skips_reads_and_zero_fills() {
        let mut d = dev();
        let sel = d.add_file("etc/acpi/tables", (0u8..200).collect()).unwrap();
        let control = u32::from(sel) << 16 | DMA_SELECT | DMA_SKIP;
        assert_eq!(dma(&mut d, 0x1000, control, 10, 0), 0);
        assert_eq!(dma(&mut d, 0x1000, DMA_READ, 195, 0x2000), 0);
        let mut got = vec![0u8; 195];
        d.memory.read_slice(&mut got, GuestAddress(0x2000)).unwrap();
        let want: Vec<u8> = (10u8..200).chain([0; 5]).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn hostile_dma_fails_cleanly() {
        let mut d = dev();
        // A target outside guest memory, a write, a huge length running off the end.
        assert_eq!(dma(&mut d, 0x1000, DMA_READ, 16, 0x10_0000 - 8), DMA_ERROR);
        assert_eq!(dma(&mut d, 0x1000, DMA_WRITE, 4, 0x2000), DMA_ERROR);
        assert_eq!(dma(&mut d, 0x1000, DMA_READ, u32::MAX, 0x8_0000), DMA_ERROR);
        assert_eq!(dma(&mut d, 0x1000, DMA_READ, 16, u64::MAX - 4), DMA_ERROR);
        // The access structure itself outside memory: nothing happens.
        d.write(4, &0xffff_ffffu32.to_be_bytes());
        d.write(8, &0u32.to_be_bytes());
        // Odd port accesses.
        for off in 0..14u64 {
            for len in [1usize, 2, 3, 4, 8] {
                let mut b = vec![0u8; len];
                d.read(off, &mut b);
                d.write(off, &b);
            }
        }
        assert_eq!(read_item(&mut d, key::SIGNATURE, 4), b"QEMU");
    }
}
