//! A command slot in guest memory (AHCI 1.3.1, 4.2.2-4.2.3): its header in the port's command
//! list, its command table (the command FIS, the ATAPI packet) and the physical region
//! descriptor table the data moves through.
//!
//! All of it is the guest's and untrusted: every address is checked against guest memory by
//! vm-memory (an access outside fails, it never reaches another mapping), the descriptor
//! table is read only as far as the transfer needs, and a descriptor's byte count is
//! bounded by the 22-bit field.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::fis::FIS_LEN;

/// Bytes of one command header.
pub const HEADER_LEN: u64 = 32;
/// Offset of the ATAPI command in the command table.
const ACMD_OFFSET: u64 = 0x40;
/// Offset of the descriptor table in the command table.
const PRDT_OFFSET: u64 = 0x80;
/// Bytes of one descriptor.
const PRD_LEN: u64 = 16;
/// Bytes of an ATAPI command packet as the table holds it.
pub const PACKET_LEN: usize = 16;

const HEADER_ATAPI: u32 = 1 << 5;
const HEADER_WRITE: u32 = 1 << 6;

/// A guest memory access that failed: the HBA's host bus error.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("guest memory access at {addr:#x} (+{len:#x}) failed")]
pub struct DmaError {
    /// Guest-physical address.
    pub addr: u64,
    /// Bytes.
    pub len: u64,
}

fn read<const N: usize>(mem: &GuestMemoryMmap, addr: u64) -> Result<[u8; N], DmaError> {
    let mut b = [0u8; N];
    mem.read_slice(&mut b, GuestAddress(addr))
        .map_err(|_| DmaError {
            addr,
            len: N as u64,
        })?;
    Ok(b)
}

/// Writes `data` at guest-physical `addr`.
pub fn write(mem: &GuestMemoryMmap, addr: u64, data: &[u8]) -> Result<(), DmaError> {
    mem.write_slice(data, GuestAddress(addr))
        .map_err(|_| DmaError {
            addr,
            len: data.len() as u64,
        })
}

/// A command slot as fetched.
#[derive(Debug, Clone)]
pub struct Command {
    /// The header's ATAPI bit: the table holds a packet.
    pub atapi: bool,
    /// The header's Write bit: data moves host to device.
    pub write: bool,
    /// Descriptors in the table.
    pub prdt_len: u16,
    /// The command table's address.
    pub table: u64,
    /// The command FIS.
    pub fis: [u8; FIS_LEN],
    /// The ATAPI packet.
    pub packet: [u8; PACKET_LEN],
}

impl Command {
    /// Fetches slot `slot`'s header from the command list at `list`, and its table.
    pub fn fetch(mem: &GuestMemoryMmap, list: u64, slot: u8) -> Result<Self, DmaError> {
        let at = list.wrapping_add(u64::from(slot) * HEADER_LEN);
        let h: [u8; 16] = read(mem, at)?;
        let dw0 = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        // The table is 128-byte aligned; its low bits are reserved.
        let table =
            (u64::from_le_bytes([h[8], h[9], h[10], h[11], h[12], h[13], h[14], h[15]])) & !0x7f;
        Ok(Self {
            atapi: dw0 & HEADER_ATAPI != 0,
            write: dw0 & HEADER_WRITE != 0,
            prdt_len: (dw0 >> 16) as u16,
            table,
            fis: read(mem, table)?,
            packet: read(mem, table.wrapping_add(ACMD_OFFSET))?,
        })
    }

    /// Writes the bytes transferred (PRDBC) into slot `slot`'s header.
    pub fn set_transferred(
        mem: &GuestMemoryMmap,
        list: u64,
        slot: u8,
        bytes: u32,
    ) -> Result<(), DmaError> {
        let at = list.wrapping_add(u64::from(slot) * HEADER_LEN + 4);
        write(mem, at, &bytes.to_le_bytes())
    }

    /// The table's descriptors covering up to `need` bytes (fewer if the table is shorter).
    pub fn regions(&self, mem: &GuestMemoryMmap, need: u64) -> Result<Regions, DmaError> {
        let mut regions = Vec::new();
        let mut total = 0u64;
        for i in 0..u64::from(self.prdt_len) {
            if total >= need {
                break;
            }
            let at = self.table.wrapping_add(PRDT_OFFSET + i * PRD_LEN);
            let d: [u8; 16] = read(mem, at)?;
            let addr = u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]);
            // Data Byte Count, 0-based, in bits 21:0 (bit 0 is meant to be set: even counts).
            let len = u64::from(u32::from_le_bytes([d[12], d[13], d[14], d[15]]) & 0x3f_ffff) + 1;
            regions.push((addr & !1, len));
            total += len;
        }
        Ok(Regions { regions, total })
    }
}

/// A scatter-gather list over guest memory.
#[derive(Debug, Default)]
pub struct Regions {
    regions: Vec<(u64, u64)>,
    total: u64,
}

impl Regions {
    /// Bytes the list covers.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// A cursor at its start.
    pub fn cursor(&self) -> Cursor<'_> {
        Cursor {
            regions: &self.regions,
            index: 0,
            offset: 0,
        }
    }
}

/// A position in a scatter-gather list, moving forward as data is copied.
pub struct Cursor<'a> {
    regions: &'a [(u64, u64)],
    index: usize,
    offset: u64,
}

impl Cursor<'_> {
    /// Walks the next `len` bytes, calling `f(guest address, offset in the caller's buffer,
    /// length)` for each piece; stops short at the end of the list and returns the bytes
    /// walked.
    fn walk(
        &mut self,
        len: usize,
        mut f: impl FnMut(u64, usize, usize) -> Result<(), DmaError>,
    ) -> Result<usize, DmaError> {
        let mut done = 0usize;
        while done < len {
            let Some(&(addr, rlen)) = self.regions.get(self.index) else {
                break;
            };
            let n = (rlen - self.offset).min((len - done) as u64) as usize;
            f(addr.wrapping_add(self.offset), done, n)?;
            done += n;
            self.offset += n as u64;
            if self.offset == rlen {
                self.index += 1;
                self.offset = 0;
            }
        }
        Ok(done)
    }

    /// Copies `data` into guest memory at the cursor; returns the bytes copied.
    pub fn write(&mut self, mem: &GuestMemoryMmap, data: &[u8]) -> Result<usize, DmaError> {
        self.walk(data.len(), |addr, at, n| {
            write(mem, addr, &data[at..at + n])
        })
    }

    /// Fills `buf` from guest memory at the cursor; returns the bytes read.
    pub fn read(&mut self, mem: &GuestMemoryMmap, buf: &mut [u8]) -> Result<usize, DmaError> {
        let len = buf.len();
        self.walk(len, |addr, at, n| {
            mem.read_slice(&mut buf[at..at + n], GuestAddress(addr))
                .map_err(|_| DmaError {
                    addr,
                    len: n as u64,
                })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap()
    }

    fn prd(m: &GuestMemoryMmap, table: u64, i: u64, addr: u64, len: u32) {
        let at = table + PRDT_OFFSET + i * PRD_LEN;
        m.write_slice(&addr.to_le_bytes(), GuestAddress(at))
            .unwrap();
        m.write_slice(&(len - 1).to_le_bytes(), GuestAddress(at + 12))
            .unwrap();
    }

    #[test]
    fn a_slot_and_its_descriptors_are_read_and_data_scattered() {
        let m = mem();
        let (list, table) = (0x1000u64, 0x2000u64);
        // Slot 2: CFL 5, ATAPI, 3 descriptors.
        let dw0: u32 = 5 | HEADER_ATAPI | 3 << 16;
        m.write_slice(&dw0.to_le_bytes(), GuestAddress(list + 64))
            .unwrap();
        m.write_slice(&(table | 0x7f).to_le_bytes(), GuestAddress(list + 64 + 8))
            .unwrap();
        m.write_slice(&[0x27, 0x80, 0xa0], GuestAddress(table))
            .unwrap();
        m.write_slice(&[0x28], GuestAddress(table + ACMD_OFFSET))
            .unwrap();
        prd(&m, table, 0, 0x8000, 6);
        prd(&m, table, 1, 0x9000, 4);
        prd(&m, table, 2, 0xa000, 0x1000);
        let c = Command::fetch(&m, list, 2).unwrap();
        assert!(c.atapi && !c.write);
        assert_eq!(
            (c.prdt_len, c.table, c.fis[2], c.packet[0]),
            (3, table, 0xa0, 0x28)
        );
        let r = c.regions(&m, 8).unwrap();
        assert_eq!(
            r.total(),
            10,
            "only as many descriptors as the transfer needs"
        );
        let mut cur = r.cursor();
        assert_eq!(
            cur.write(&m, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]).unwrap(),
            10
        );
        let mut got = [0u8; 6];
        m.read_slice(&mut got, GuestAddress(0x8000)).unwrap();
        assert_eq!(got, [1, 2, 3, 4, 5, 6]);
        m.read_slice(&mut got[..4], GuestAddress(0x9000)).unwrap();
        assert_eq!(got[..4], [7, 8, 9, 10]);
        let mut back = [0u8; 10];
        assert_eq!(r.cursor().read(&m, &mut back).unwrap(), 10);
        assert_eq!(back, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        Command::set_transferred(&m, list, 2, 10).unwrap();
        let mut n = [0u8; 4];
        m.read_slice(&mut n, GuestAddress(list + 64 + 4)).unwrap();
        assert_eq!(u32::from_le_bytes(n), 10);
    }

    #[test]
    fn addresses_outside_guest_memory_fail_cleanly() {
        let m = mem();
        assert!(Command::fetch(&m, 1 << 40, 31).is_err());
        let (list, table) = (0x1000u64, 0x2000u64);
        m.write_slice(&(1u32 << 16).to_le_bytes(), GuestAddress(list))
            .unwrap();
        m.write_slice(&table.to_le_bytes(), GuestAddress(list + 8))
            .unwrap();
        prd(&m, table, 0, 0xffff_0000_0000, 0x40_0000);
        let c = Command::fetch(&m, list, 0).unwrap();
        let r = c.regions(&m, u64::MAX).unwrap();
        assert_eq!(r.total(), 0x40_0000, "the 22-bit count's maximum");
        assert!(r.cursor().write(&m, &[0; 16]).is_err());
        // A table at the very end of memory.
        m.write_slice(&((1u64 << 20) - 0x80).to_le_bytes(), GuestAddress(list + 8))
            .unwrap();
        let c = Command::fetch(&m, list, 0).unwrap();
        assert!(c.regions(&m, 1).is_err());
    }
}
