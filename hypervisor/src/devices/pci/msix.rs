//! MSI-X: the capability, the vector table and pending-bit array a function exposes in a BAR,
//! and delivery through one irqfd per vector (routed by [`IrqRouting`]).
//!
//! Masking follows the specification: a vector raised while it (or the whole function) is
//! masked sets its pending bit, and is delivered when unmasked.

use std::sync::Arc;

use vmm_sys_util::eventfd::EventFd;

use crate::vstate::irq_routing::{IrqRouting, MsiMessage};

/// Capability ID of MSI-X.
pub const MSIX_CAP_ID: u8 = 0x11;
/// Bytes per table entry.
pub const ENTRY_SIZE: u64 = 16;
/// Most vectors a tessera-vmm function has (a limit of ours, well below PCI's 2048).
pub const MAX_VECTORS: u16 = 64;

const CONTROL_ENABLE: u16 = 1 << 15;
const CONTROL_FUNCTION_MASK: u16 = 1 << 14;
const VECTOR_MASKED: u32 = 1;

/// One vector's interrupt line: a GSI and the irqfd that raises it.
pub struct MsixVector {
    /// The GSI routed to this vector's message.
    pub gsi: u32,
    /// Writing 1 raises the interrupt.
    pub irqfd: EventFd,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    message: MsiMessage,
    control: u32,
}

impl Default for Entry {
    fn default() -> Self {
        // Vectors come out of reset masked.
        Self {
            message: MsiMessage::default(),
            control: VECTOR_MASKED,
        }
    }
}

/// The MSI-X state of one function.
pub struct Msix {
    entries: Vec<Entry>,
    pending: Vec<bool>,
    enabled: bool,
    function_masked: bool,
    vectors: Vec<MsixVector>,
    routing: Option<Arc<IrqRouting>>,
}

impl Msix {
    /// MSI-X over `vectors` (at most [`MAX_VECTORS`]); `routing` None leaves routes alone
    /// (device-model tests without KVM).
    pub fn new(vectors: Vec<MsixVector>, routing: Option<Arc<IrqRouting>>) -> Self {
        let mut vectors = vectors;
        vectors.truncate(usize::from(MAX_VECTORS));
        let n = vectors.len();
        Self {
            entries: vec![Entry::default(); n],
            pending: vec![false; n],
            enabled: false,
            function_masked: false,
            vectors,
            routing,
        }
    }

    /// Number of vectors.
    pub fn len(&self) -> u16 {
        self.entries.len() as u16
    }

    /// Whether there are no vectors.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The capability body (after ID and next pointer) and its writable mask: the table and the
    /// PBA both in BAR `bar`, at the given offsets.
    pub fn capability(&self, bar: u8, table_offset: u32, pba_offset: u32) -> (Vec<u8>, Vec<u8>) {
        let control = self.len().saturating_sub(1);
        let mut body = Vec::with_capacity(10);
        body.extend_from_slice(&control.to_le_bytes());
        body.extend_from_slice(&(table_offset | u32::from(bar)).to_le_bytes());
        body.extend_from_slice(&(pba_offset | u32::from(bar)).to_le_bytes());
        // Only Enable and Function Mask are the guest's to change.
        (body, vec![0x00, 0xc0])
    }

    /// Byte size of the table.
    pub fn table_size(&self) -> u64 {
        u64::from(self.len()) * ENTRY_SIZE
    }

    /// Byte size of the pending-bit array (whole qwords).
    pub fn pba_size(&self) -> u64 {
        u64::from(self.len()).div_ceil(64) * 8
    }

    /// Applies the Message Control of the capability at byte `cap` of `config`, after a
    /// configuration write that may have changed it.
    pub fn sync_control(&mut self, config: &super::config::PciConfig, cap: usize) {
        self.set_control(u16::from_le_bytes([
            config.byte(cap + 2),
            config.byte(cap + 3),
        ]));
    }

    /// Applies the capability's Message Control as the guest last wrote it.
    pub fn set_control(&mut self, control: u16) {
        self.enabled = control & CONTROL_ENABLE != 0;
        self.function_masked = control & CONTROL_FUNCTION_MASK != 0;
        for v in 0..self.entries.len() {
            self.deliver_pending(v);
        }
    }

    /// Back to the state after power-on: disabled, every vector masked with no message and
    /// nothing pending, and no MSI route left in KVM.
    pub fn reset(&mut self) {
        self.entries.fill(Entry::default());
        self.pending.fill(false);
        self.enabled = false;
        self.function_masked = false;
        if let Some(r) = &self.routing {
            for (v, vector) in self.vectors.iter().enumerate() {
                if let Err(e) = r.set_msi(vector.gsi, None) {
                    tracing::warn!(vector = v, error = %e, "MSI-X: cannot remove the route");
                }
            }
        }
    }

    /// Whether MSI-X is enabled (the function then uses no INTx).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Guest read in the table.
    pub fn table_read(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let Some((entry, field)) = self.locate(offset, data.len()) else {
            return;
        };
        let e = &self.entries[entry];
        let dwords = [
            e.message.address_lo,
            e.message.address_hi,
            e.message.data,
            e.control,
        ];
        let mut bytes = [0u8; 16];
        for (i, d) in dwords.iter().enumerate() {
            bytes[i * 4..i * 4 + 4].copy_from_slice(&d.to_le_bytes());
        }
        data.copy_from_slice(&bytes[field..field + data.len()]);
    }

    /// Guest write in the table.
    pub fn table_write(&mut self, offset: u64, data: &[u8]) {
        let Some((entry, field)) = self.locate(offset, data.len()) else {
            return;
        };
        for (i, chunk) in data.chunks_exact(4).enumerate() {
            let v = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            let e = &mut self.entries[entry];
            match field / 4 + i {
                0 => e.message.address_lo = v,
                1 => e.message.address_hi = v,
                2 => e.message.data = v,
                _ => e.control = v & VECTOR_MASKED,
            }
        }
        if self.entries[entry].control & VECTOR_MASKED == 0 {
            self.update_route(entry);
            self.deliver_pending(entry);
        }
    }

    /// Guest read of the pending-bit array.
    pub fn pba_read(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            let byte = offset
                .checked_add(i as u64)
                .and_then(|o| usize::try_from(o).ok());
            *b = (0..8)
                .filter(|k| {
                    byte.and_then(|o| o.checked_mul(8))
                        .and_then(|bit| self.pending.get(bit + k))
                        .copied()
                        .unwrap_or(false)
                })
                .fold(0, |acc, k| acc | 1 << k);
        }
    }

    /// Raises `vector`: delivered now, or left pending while masked. Ignored while MSI-X is off
    /// or for a vector that does not exist (the driver chose "no vector").
    pub fn trigger(&mut self, vector: u16) {
        let v = usize::from(vector);
        if !self.enabled || v >= self.entries.len() {
            return;
        }
        if self.function_masked || self.entries[v].control & VECTOR_MASKED != 0 {
            self.pending[v] = true;
            return;
        }
        self.fire(v);
    }

    fn fire(&self, v: usize) {
        if let Err(e) = self.vectors[v].irqfd.write(1) {
            tracing::warn!(vector = v, error = %e, "MSI-X: cannot signal the irqfd");
        }
    }

    fn deliver_pending(&mut self, v: usize) {
        let masked = self.function_masked || self.entries[v].control & VECTOR_MASKED != 0;
        if self.enabled && !masked && self.pending[v] {
            self.pending[v] = false;
            self.fire(v);
        }
    }

    fn update_route(&self, v: usize) {
        if let Some(r) = &self.routing {
            let gsi = self.vectors[v].gsi;
            if let Err(e) = r.set_msi(gsi, Some(self.entries[v].message)) {
                tracing::warn!(vector = v, gsi, error = %e, "MSI-X: cannot route the vector");
            }
        }
    }

    /// (entry, byte in entry) for a dword or qword access inside the table.
    fn locate(&self, offset: u64, len: usize) -> Option<(usize, usize)> {
        let aligned = (len == 4 || len == 8) && offset.is_multiple_of(len as u64);
        let entry = usize::try_from(offset / ENTRY_SIZE).ok()?;
        (aligned && entry < self.entries.len()).then_some((entry, (offset % ENTRY_SIZE) as usize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msix(n: u32) -> Msix {
        let vectors = (0..n)
            .map(|i| MsixVector {
                gsi: 24 + i,
                irqfd: EventFd::new(libc::EFD_NONBLOCK).unwrap(),
            })
            .collect();
        Msix::new(vectors, None)
    }

    fn fired(m: &Msix, v: usize) -> bool {
        m.vectors[v].irqfd.read().is_ok()
    }

    fn unmask(m: &mut Msix, v: u64) {
        m.table_write(v * 16 + 12, &0u32.to_le_bytes());
    }

    #[test]
    fn masked_vectors_stay_pending_until_unmasked() {
        let mut m = msix(2);
        m.set_control(CONTROL_ENABLE);
        m.trigger(1);
        assert!(!fired(&m, 1));
        let mut pba = [0u8; 8];
        m.pba_read(0, &mut pba);
        assert_eq!(pba[0], 0b10);
        unmask(&mut m, 1);
        assert!(fired(&m, 1));
        m.pba_read(0, &mut pba);
        assert_eq!(pba[0], 0);
        m.trigger(1);
        assert!(fired(&m, 1));
    }

    #[test]
    fn function_mask_and_disable() {
        let mut m = msix(1);
        unmask(&mut m, 0);
        m.trigger(0);
        assert!(!fired(&m, 0), "MSI-X disabled: nothing is raised");
        m.set_control(CONTROL_ENABLE | CONTROL_FUNCTION_MASK);
        m.trigger(0);
        assert!(!fired(&m, 0));
        m.set_control(CONTROL_ENABLE);
        assert!(fired(&m, 0));
    }

    #[test]
    fn table_round_trip_and_hostile_accesses() {
        let mut m = msix(2);
        m.table_write(16, &0xfee0_1000u32.to_le_bytes());
        m.table_write(24, &0x4041u32.to_le_bytes());
        let mut d = [0u8; 4];
        m.table_read(16, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0xfee0_1000);
        m.table_read(28, &mut d);
        assert_eq!(u32::from_le_bytes(d), 1, "masked at reset");
        let mut q = [0u8; 8];
        m.table_read(16, &mut q);
        assert_eq!(u64::from_le_bytes(q), 0xfee0_1000);
        // Beyond the table, misaligned, odd sizes: ignored, reads zero.
        for (off, len) in [
            (32u64, 4usize),
            (18, 4),
            (16, 2),
            (16, 1),
            (u64::MAX - 3, 4),
        ] {
            m.table_write(off, &vec![0xff; len]);
            let mut b = vec![0xaa; len];
            m.table_read(off, &mut b);
            assert!(b.iter().all(|x| *x == 0));
        }
        let mut pba = [0xaa; 16];
        m.pba_read(u64::MAX - 20, &mut pba);
        m.trigger(7);
        m.trigger(u16::MAX);
        m.table_read(24, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0x4041);
    }

    #[test]
    fn capability_layout() {
        let m = msix(3);
        let (body, writable) = m.capability(0, 0x4000, 0x5000);
        assert_eq!(body, [2, 0, 0, 0x40, 0, 0, 0, 0x50, 0, 0]);
        assert_eq!(writable, [0, 0xc0]);
        assert_eq!(m.table_size(), 48);
        assert_eq!(m.pba_size(), 8);
    }
}
