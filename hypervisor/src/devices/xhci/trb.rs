//! Transfer request blocks (xHCI 1.2, 6.4): the 16-byte records of every ring, their types,
//! flags and completion codes, and the events the controller writes.

/// Bytes of one TRB.
pub const TRB_LEN: u64 = 16;

/// One TRB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Trb {
    /// Dwords 0-1: a pointer, immediate data or a command's parameter.
    pub parameter: u64,
    /// Dword 2: lengths, completion code.
    pub status: u32,
    /// Dword 3: cycle bit, flags, type, IDs.
    pub control: u32,
}

/// TRB types (table 6-91).
pub mod kind {
    pub const NORMAL: u8 = 1;
    pub const SETUP: u8 = 2;
    pub const DATA: u8 = 3;
    pub const STATUS: u8 = 4;
    pub const ISOCH: u8 = 5;
    pub const LINK: u8 = 6;
    pub const EVENT_DATA: u8 = 7;
    pub const NOOP: u8 = 8;
    pub const ENABLE_SLOT: u8 = 9;
    pub const DISABLE_SLOT: u8 = 10;
    pub const ADDRESS_DEVICE: u8 = 11;
    pub const CONFIGURE_ENDPOINT: u8 = 12;
    pub const EVALUATE_CONTEXT: u8 = 13;
    pub const RESET_ENDPOINT: u8 = 14;
    pub const STOP_ENDPOINT: u8 = 15;
    pub const SET_TR_DEQUEUE: u8 = 16;
    pub const RESET_DEVICE: u8 = 17;
    pub const GET_PORT_BANDWIDTH: u8 = 21;
    pub const NOOP_COMMAND: u8 = 23;
    pub const TRANSFER_EVENT: u8 = 32;
    pub const COMMAND_COMPLETION: u8 = 33;
    pub const PORT_STATUS_CHANGE: u8 = 34;
    pub const HOST_CONTROLLER: u8 = 37;
}

/// Flags of dword 3.
pub mod flag {
    pub const CYCLE: u32 = 1 << 0;
    /// Link TRB: toggle the consumer's cycle state.
    pub const TOGGLE_CYCLE: u32 = 1 << 1;
    /// Interrupt on short packet.
    pub const ISP: u32 = 1 << 2;
    /// The next TRB is part of this TD.
    pub const CHAIN: u32 = 1 << 4;
    /// Interrupt on completion.
    pub const IOC: u32 = 1 << 5;
    /// The parameter is the data itself.
    pub const IMMEDIATE: u32 = 1 << 6;
    /// Address Device: block SET_ADDRESS.
    pub const BSR: u32 = 1 << 9;
    /// Configure Endpoint: deconfigure.
    pub const DECONFIGURE: u32 = 1 << 9;
    /// Data and Status stages: towards the host.
    pub const DIR_IN: u32 = 1 << 16;
    /// Transfer event: the pointer is an Event Data TRB's parameter.
    pub const EVENT_DATA: u32 = 1 << 2;
}

/// Completion codes (table 6-90).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Completion {
    Success = 1,
    DataBuffer = 2,
    Transaction = 4,
    TrbError = 5,
    Stall = 6,
    NoSlots = 9,
    SlotNotEnabled = 11,
    EndpointNotEnabled = 12,
    ShortPacket = 13,
    Parameter = 17,
    ContextState = 19,
    CommandRingStopped = 24,
}

impl Trb {
    /// From its bytes in guest memory.
    pub fn from_bytes(b: [u8; 16]) -> Self {
        let dword = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Self {
            parameter: u64::from(dword(0)) | u64::from(dword(4)) << 32,
            status: dword(8),
            control: dword(12),
        }
    }

    /// Its bytes.
    pub fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0..8].copy_from_slice(&self.parameter.to_le_bytes());
        b[8..12].copy_from_slice(&self.status.to_le_bytes());
        b[12..16].copy_from_slice(&self.control.to_le_bytes());
        b
    }

    /// Its type.
    pub fn kind(&self) -> u8 {
        ((self.control >> 10) & 0x3f) as u8
    }

    /// Its cycle bit.
    pub fn cycle(&self) -> bool {
        self.control & flag::CYCLE != 0
    }

    /// Whether dword 3 has `flag`.
    pub fn has(&self, flag: u32) -> bool {
        self.control & flag != 0
    }

    /// A transfer TRB's buffer length (17 bits).
    pub fn transfer_len(&self) -> u32 {
        self.status & 0x1_ffff
    }

    /// A command's or an event's slot ID (bits 31:24).
    pub fn slot(&self) -> u8 {
        (self.control >> 24) as u8
    }

    /// A command's endpoint ID (DCI, bits 20:16).
    pub fn endpoint(&self) -> u8 {
        ((self.control >> 16) & 0x1f) as u8
    }

    fn event(kind: u8, parameter: u64, status: u32, control: u32) -> Self {
        Self {
            parameter,
            status,
            control: control | u32::from(kind) << 10,
        }
    }

    /// A Transfer Event for the TRB at `trb` of endpoint `dci` of `slot`, `residual` bytes
    /// not transferred.
    pub fn transfer_event(trb: u64, residual: u32, code: Completion, slot: u8, dci: u8) -> Self {
        Self::event(
            kind::TRANSFER_EVENT,
            trb,
            (code as u32) << 24 | (residual & 0xff_ffff),
            u32::from(slot) << 24 | u32::from(dci) << 16,
        )
    }

    /// A Transfer Event for an Event Data TRB: its `data`, and the TD's `transferred` bytes.
    pub fn event_data_event(
        data: u64,
        transferred: u32,
        code: Completion,
        slot: u8,
        dci: u8,
    ) -> Self {
        let mut e = Self::transfer_event(data, transferred, code, slot, dci);
        e.control |= flag::EVENT_DATA;
        e
    }

    /// A Command Completion Event for the command at `command`.
    pub fn command_completion(command: u64, code: Completion, slot: u8) -> Self {
        Self::event(
            kind::COMMAND_COMPLETION,
            command,
            (code as u32) << 24,
            u32::from(slot) << 24,
        )
    }

    /// A Port Status Change Event for port `port` (1-based).
    pub fn port_status_change(port: u8) -> Self {
        Self::event(
            kind::PORT_STATUS_CHANGE,
            u64::from(port) << 24,
            (Completion::Success as u32) << 24,
            0,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip_and_fields() {
        let t = Trb {
            parameter: 0x1122_3344_5566_7788,
            status: 0x0001_0008,
            control: 0x0305_0c21,
        };
        assert_eq!(Trb::from_bytes(t.to_bytes()), t);
        assert_eq!(t.kind(), 3);
        assert!(t.cycle());
        assert!(t.has(flag::IOC));
        assert_eq!(t.transfer_len(), 0x1_0008);
        assert_eq!(t.slot(), 3);
        assert_eq!(t.endpoint(), 5);
        let e = Trb::transfer_event(0x1000, 3, Completion::ShortPacket, 2, 3);
        assert_eq!(e.kind(), kind::TRANSFER_EVENT);
        assert_eq!(e.status, 13 << 24 | 3);
        assert_eq!((e.slot(), e.endpoint()), (2, 3));
        assert_eq!(Trb::port_status_change(4).parameter, 4 << 24);
    }
}
