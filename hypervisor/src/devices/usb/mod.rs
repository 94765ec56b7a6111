//! USB devices as a host controller reaches them: control requests on endpoint 0 and
//! interrupt reports on endpoint 1 IN. The devices are HID ([`hid`]): an absolute pointer (a
//! tablet, SPICE's pointer exactly under the client's) and a boot keyboard, the two input
//! devices Windows drives with its own in-box drivers (virtio-input needs virtio-win's).
//!
//! Written by hand: no maintained Rust crate emulates USB devices for a VMM (the `usb-device`
//! family is for microcontrollers' device-side stacks, with no host controller to meet).

pub mod hid;
pub mod keymap;

/// An 8-byte SETUP packet (USB 2.0, 9.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setup {
    /// Direction (bit 7: device to host), type (6:5) and recipient (4:0).
    pub request_type: u8,
    /// The request.
    pub request: u8,
    /// Its value.
    pub value: u16,
    /// Its index (an interface or endpoint).
    pub index: u16,
    /// Bytes of the data stage.
    pub length: u16,
}

impl Setup {
    /// The packet as a little-endian u64 (how an xHCI Setup Stage TRB carries it).
    pub fn from_u64(v: u64) -> Self {
        Self {
            request_type: v as u8,
            request: (v >> 8) as u8,
            value: (v >> 16) as u16,
            index: (v >> 32) as u16,
            length: (v >> 48) as u16,
        }
    }

    /// The data stage goes to the host.
    pub fn is_in(&self) -> bool {
        self.request_type & 0x80 != 0
    }
}

/// How a device answers a control request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// The request is done (no data, or the OUT data taken).
    Ok,
    /// Data for the host (cut to the request's length by the device).
    In(Vec<u8>),
    /// The device does not support the request: the endpoint stalls.
    Stall,
}

/// Standard request codes (USB 2.0, table 9-4).
pub mod request {
    /// GET_STATUS.
    pub const GET_STATUS: u8 = 0;
    /// CLEAR_FEATURE.
    pub const CLEAR_FEATURE: u8 = 1;
    /// SET_FEATURE.
    pub const SET_FEATURE: u8 = 3;
    /// SET_ADDRESS.
    pub const SET_ADDRESS: u8 = 5;
    /// GET_DESCRIPTOR.
    pub const GET_DESCRIPTOR: u8 = 6;
    /// GET_CONFIGURATION.
    pub const GET_CONFIGURATION: u8 = 8;
    /// SET_CONFIGURATION.
    pub const SET_CONFIGURATION: u8 = 9;
    /// GET_INTERFACE.
    pub const GET_INTERFACE: u8 = 10;
    /// SET_INTERFACE.
    pub const SET_INTERFACE: u8 = 11;
}

/// Descriptor types (USB 2.0, table 9-5; HID 1.11, 7.1).
pub mod descriptor {
    /// DEVICE.
    pub const DEVICE: u8 = 1;
    /// CONFIGURATION.
    pub const CONFIGURATION: u8 = 2;
    /// STRING.
    pub const STRING: u8 = 3;
    /// INTERFACE.
    pub const INTERFACE: u8 = 4;
    /// ENDPOINT.
    pub const ENDPOINT: u8 = 5;
    /// HID.
    pub const HID: u8 = 0x21;
    /// HID report.
    pub const REPORT: u8 = 0x22;
}

/// A string descriptor of `s` (UTF-16LE).
pub fn string_descriptor(s: &str) -> Vec<u8> {
    let units: Vec<u16> = s.encode_utf16().take(126).collect();
    let mut d = vec![(2 + 2 * units.len()) as u8, descriptor::STRING];
    for u in units {
        d.extend_from_slice(&u.to_le_bytes());
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_packet_fields() {
        // GET_DESCRIPTOR(device), 18 bytes.
        let s = Setup::from_u64(0x0012_0000_0100_0680);
        assert_eq!(s.request_type, 0x80);
        assert_eq!(s.request, request::GET_DESCRIPTOR);
        assert_eq!(s.value, 0x0100);
        assert_eq!(s.index, 0);
        assert_eq!(s.length, 18);
        assert!(s.is_in());
    }

    #[test]
    fn strings_are_utf16_and_bounded() {
        assert_eq!(string_descriptor("Ab"), vec![6, 3, b'A', 0, b'b', 0]);
        let long = "x".repeat(300);
        assert_eq!(string_descriptor(&long).len(), 254);
    }
}
