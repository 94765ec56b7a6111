//! Device and input contexts in guest memory (xHCI 1.2, 6.2), 32 bytes each (HCCPARAMS1.CSZ
//! is 0): the slot context, then one endpoint context per device context index (DCI 1 is
//! endpoint 0; 2n is OUT n, 2n+1 is IN n). An input context has its control context first.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::ring::RingError;

/// Bytes of one context.
pub const CTX_LEN: u64 = 32;

/// One context's eight dwords.
pub type Context = [u32; 8];

/// Slot states (dword 3, bits 31:27).
pub mod slot_state {
    pub const ENABLED: u32 = 0;
    pub const DEFAULT: u32 = 1;
    pub const ADDRESSED: u32 = 2;
    pub const CONFIGURED: u32 = 3;
}

/// Endpoint states (dword 0, bits 2:0).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(u32)]
pub enum EpState {
    #[default]
    Disabled = 0,
    Running = 1,
    Halted = 2,
    Stopped = 3,
}

/// Reads the context at `addr`.
pub fn read(mem: &GuestMemoryMmap, addr: u64) -> Result<Context, RingError> {
    let mut b = [0u8; 32];
    mem.read_slice(&mut b, GuestAddress(addr))
        .map_err(|_| RingError::Memory(addr))?;
    let mut c = [0u32; 8];
    for (i, d) in c.iter_mut().enumerate() {
        *d = u32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]]);
    }
    Ok(c)
}

/// Writes the context at `addr`.
pub fn write(mem: &GuestMemoryMmap, addr: u64, c: &Context) -> Result<(), RingError> {
    let mut b = [0u8; 32];
    for (i, d) in c.iter().enumerate() {
        b[4 * i..4 * i + 4].copy_from_slice(&d.to_le_bytes());
    }
    mem.write_slice(&b, GuestAddress(addr))
        .map_err(|_| RingError::Memory(addr))
}

/// Address of context `index` (0: slot, else a DCI) of the input context at `base`.
pub fn input(base: u64, index: u8) -> u64 {
    base.wrapping_add(CTX_LEN * (u64::from(index) + 1))
}

/// Address of context `index` (0: slot, else a DCI) of the device context at `base`.
pub fn output(base: u64, index: u8) -> u64 {
    base.wrapping_add(CTX_LEN * u64::from(index))
}

/// An endpoint context's TR dequeue pointer with its cycle state in bit 0.
pub fn dequeue(c: &Context) -> u64 {
    u64::from(c[2] & !0xe) | u64::from(c[3]) << 32
}

/// Sets an endpoint context's state.
pub fn set_ep_state(c: &mut Context, state: EpState) {
    c[0] = (c[0] & !7) | state as u32;
}

/// Sets an endpoint context's TR dequeue pointer (bit 0: cycle state).
pub fn set_dequeue(c: &mut Context, pointer: u64) {
    c[2] = pointer as u32 & !0xe;
    c[3] = (pointer >> 32) as u32;
}
