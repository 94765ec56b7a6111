//! A 4 KiB memory BAR of dword registers with the function's MSI-X table at 0x800 and its
//! pending bits at 0xC00, as the AHCI and xHCI controllers lay theirs out: the one dispatch
//! of a guest access to the registers or to MSI-X.

use std::sync::Mutex;

use super::config::PciConfig;
use super::msix::Msix;
use crate::devices::bus::lock;

/// Bytes of the BAR.
pub const BAR_SIZE: u32 = 0x1000;
/// Offset of the MSI-X table.
pub const MSIX_TABLE: u64 = 0x800;
/// Offset of the MSI-X pending bits.
pub const MSIX_PBA: u64 = 0xc00;

/// Registers read and written a dword at a time, at offsets below [`MSIX_TABLE`].
pub trait DwordRegisters {
    /// The dword at `offset`.
    fn read(&self, offset: u64) -> u32;
    /// Writes the dword at `offset`.
    fn write(&mut self, offset: u64, value: u32);
}

/// The offset in BAR `index` of `config` of an access of `len` bytes at guest-physical
/// `addr`, if it lies there.
pub fn offset(config: &PciConfig, index: usize, addr: u64, len: usize) -> Option<u64> {
    let off = addr.checked_sub(config.bar32(index)?)?;
    (off + len as u64 <= u64::from(BAR_SIZE)).then_some(off)
}

/// A guest read of `data.len()` bytes at `offset` of the BAR. A narrower read than a dword
/// takes its bytes of the dword (CAPLENGTH, HCIVERSION).
pub fn read<R: DwordRegisters>(regs: &Mutex<R>, msix: &Mutex<Msix>, offset: u64, data: &mut [u8]) {
    data.fill(0);
    if offset >= MSIX_PBA {
        lock(msix).pba_read(offset - MSIX_PBA, data);
    } else if offset >= MSIX_TABLE {
        lock(msix).table_read(offset - MSIX_TABLE, data);
    } else {
        let r = lock(regs);
        for (i, b) in data.iter_mut().enumerate() {
            let at = offset + i as u64;
            *b = (r.read(at & !3) >> ((at % 4) * 8)) as u8;
        }
    }
}

/// A guest write of `data` at `offset` of the BAR: dwords (a qword is two, low first).
/// Narrower register writes are dropped: registers that clear bits written as 1 would lose
/// bits to a read-modify-write the guest did not mean.
pub fn write<R: DwordRegisters>(regs: &Mutex<R>, msix: &Mutex<Msix>, offset: u64, data: &[u8]) {
    if offset >= MSIX_PBA {
        // Read-only.
    } else if offset >= MSIX_TABLE {
        lock(msix).table_write(offset - MSIX_TABLE, data);
    } else if offset.is_multiple_of(4) && data.len().is_multiple_of(4) {
        let mut r = lock(regs);
        for (i, dword) in data.chunks_exact(4).enumerate() {
            let v = u32::from_le_bytes([dword[0], dword[1], dword[2], dword[3]]);
            r.write(offset + 4 * i as u64, v);
        }
    }
}
