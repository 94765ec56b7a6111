//! USB HID devices (Device Class Definition for HID 1.11): a tablet (an absolute pointer:
//! three buttons, X and Y in 0..=32767, a wheel) and a keyboard in the boot subclass (the
//! 8-byte report firmware and operating systems read alike). Full speed, one configuration,
//! one interface, one interrupt IN endpoint (0x81).
//!
//! Reports are queued as input arrives and taken by the host controller when the driver has a
//! transfer waiting on the endpoint; pointer motion coalesces into the last queued report so
//! that a slow guest sees the newest position, never a backlog, while button changes and
//! keys are kept in order.

use std::collections::VecDeque;

use super::keymap::{self, PAUSE};
use super::{descriptor, request, string_descriptor, Control, Setup};

/// Reports held for a driver that is not reading (older ones dropped first).
pub const QUEUE_MAX: usize = 64;
/// The pointer's largest coordinate.
pub const ABS_MAX: u32 = 0x7fff;

/// QEMU's USB vendor ID, as the virtio tablet's: no guest treats it specially (Windows and
/// Linux bind HID devices by class, not ID).
const VENDOR: u16 = 0x0627;

/// Report descriptor of the tablet: buttons 1-3, X and Y absolute 0..32767, a relative wheel.
const TABLET_REPORT: &[u8] = &[
    0x05, 0x01, // Usage Page (Generic Desktop)
    0x09, 0x02, // Usage (Mouse)
    0xa1, 0x01, // Collection (Application)
    0x09, 0x01, //   Usage (Pointer)
    0xa1, 0x00, //   Collection (Physical)
    0x05, 0x09, //     Usage Page (Button)
    0x19, 0x01, //     Usage Minimum (1)
    0x29, 0x03, //     Usage Maximum (3)
    0x15, 0x00, //     Logical Minimum (0)
    0x25, 0x01, //     Logical Maximum (1)
    0x95, 0x03, //     Report Count (3)
    0x75, 0x01, //     Report Size (1)
    0x81, 0x02, //     Input (Data, Variable, Absolute)
    0x95, 0x01, //     Report Count (1)
    0x75, 0x05, //     Report Size (5)
    0x81, 0x01, //     Input (Constant)
    0x05, 0x01, //     Usage Page (Generic Desktop)
    0x09, 0x30, //     Usage (X)
    0x09, 0x31, //     Usage (Y)
    0x15, 0x00, //     Logical Minimum (0)
    0x26, 0xff, 0x7f, // Logical Maximum (32767)
    0x35, 0x00, //     Physical Minimum (0)
    0x46, 0xff, 0x7f, // Physical Maximum (32767)
    0x75, 0x10, //     Report Size (16)
    0x95, 0x02, //     Report Count (2)
    0x81, 0x02, //     Input (Data, Variable, Absolute)
    0x09, 0x38, //     Usage (Wheel)
    0x15, 0x81, //     Logical Minimum (-127)
    0x25, 0x7f, //     Logical Maximum (127)
    0x35, 0x00, //     Physical Minimum (0)
    0x45, 0x00, //     Physical Maximum (0)
    0x75, 0x08, //     Report Size (8)
    0x95, 0x01, //     Report Count (1)
    0x81, 0x06, //     Input (Data, Variable, Relative)
    0xc0, //       End Collection
    0xc0, //     End Collection
];

/// Report descriptor of the keyboard: the boot keyboard's layout (HID 1.11, appendix B.1):
/// modifiers, a reserved byte, six keys; five LEDs out.
const KEYBOARD_REPORT: &[u8] = &[
    0x05, 0x01, // Usage Page (Generic Desktop)
    0x09, 0x06, // Usage (Keyboard)
    0xa1, 0x01, // Collection (Application)
    0x05, 0x07, //   Usage Page (Keyboard)
    0x19, 0xe0, //   Usage Minimum (Left Control)
    0x29, 0xe7, //   Usage Maximum (Right GUI)
    0x15, 0x00, //   Logical Minimum (0)
    0x25, 0x01, //   Logical Maximum (1)
    0x75, 0x01, //   Report Size (1)
    0x95, 0x08, //   Report Count (8)
    0x81, 0x02, //   Input (Data, Variable, Absolute): modifiers
    0x95, 0x01, //   Report Count (1)
    0x75, 0x08, //   Report Size (8)
    0x81, 0x01, //   Input (Constant): reserved
    0x95, 0x05, //   Report Count (5)
    0x75, 0x01, //   Report Size (1)
    0x05, 0x08, //   Usage Page (LEDs)
    0x19, 0x01, //   Usage Minimum (Num Lock)
    0x29, 0x05, //   Usage Maximum (Kana)
    0x91, 0x02, //   Output (Data, Variable, Absolute): LEDs
    0x95, 0x01, //   Report Count (1)
    0x75, 0x03, //   Report Size (3)
    0x91, 0x01, //   Output (Constant): padding
    0x95, 0x06, //   Report Count (6)
    0x75, 0x08, //   Report Size (8)
    0x15, 0x00, //   Logical Minimum (0)
    0x26, 0xff, 0x00, // Logical Maximum (255)
    0x05, 0x07, //   Usage Page (Keyboard)
    0x19, 0x00, //   Usage Minimum (0)
    0x2a, 0xff, 0x00, // Usage Maximum (255)
    0x81, 0x00, //   Input (Data, Array): keys
    0xc0, //     End Collection
];

/// HID class requests (HID 1.11, 7.2).
mod class {
    pub const GET_REPORT: u8 = 0x01;
    pub const GET_IDLE: u8 = 0x02;
    pub const GET_PROTOCOL: u8 = 0x03;
    pub const SET_REPORT: u8 = 0x09;
    pub const SET_IDLE: u8 = 0x0a;
    pub const SET_PROTOCOL: u8 = 0x0b;
}

/// Which device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HidKind {
    /// The absolute pointer.
    Tablet,
    /// The boot keyboard.
    Keyboard,
}

impl HidKind {
    fn product(self) -> &'static str {
        match self {
            // Hosts name a device "<manufacturer> <product>": "Tessera USB Tablet".
            HidKind::Tablet => "USB Tablet",
            HidKind::Keyboard => "USB Keyboard",
        }
    }

    fn report_descriptor(self) -> &'static [u8] {
        match self {
            HidKind::Tablet => TABLET_REPORT,
            HidKind::Keyboard => KEYBOARD_REPORT,
        }
    }
}

/// Where a set-1 byte stream is between prefixes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Prefix {
    #[default]
    None,
    /// After 0xE0.
    Extended,
    /// Inside Pause's E1 sequence, with this many bytes still to skip.
    Pause(u8),
}

/// One HID device.
#[derive(Debug)]
pub struct Hid {
    kind: HidKind,
    configuration: u8,
    /// 0: boot protocol, 1: report protocol (the default).
    protocol: u8,
    idle: u8,
    remote_wakeup: bool,
    leds: u8,
    queue: VecDeque<Vec<u8>>,
    /// The last queued report carries only motion and may be replaced by newer motion.
    motion_tail: bool,
    // The tablet's state.
    x: u16,
    y: u16,
    buttons: u8,
    // The keyboard's state.
    modifiers: u8,
    keys: Vec<u8>,
    prefix: Prefix,
}

impl Hid {
    /// A device of `kind`, unaddressed and unconfigured.
    pub fn new(kind: HidKind) -> Self {
        Self {
            kind,
            configuration: 0,
            protocol: 1,
            idle: 0,
            remote_wakeup: false,
            leds: 0,
            queue: VecDeque::new(),
            motion_tail: false,
            x: 0,
            y: 0,
            buttons: 0,
            modifiers: 0,
            keys: Vec::new(),
            prefix: Prefix::None,
        }
    }

    /// Which device this is.
    pub fn kind(&self) -> HidKind {
        self.kind
    }

    /// A bus reset: the device forgets its configuration and what it held.
    pub fn reset(&mut self) {
        *self = Self {
            // Keys held and the pointer's place are the user's, not the bus's.
            x: self.x,
            y: self.y,
            ..Self::new(self.kind)
        };
    }

    /// The driver configured it: its reports are read.
    pub fn configured(&self) -> bool {
        self.configuration != 0
    }

    /// The keyboard LEDs the driver last set (bit 0 Num Lock, 1 Caps Lock, 2 Scroll Lock).
    pub fn leds(&self) -> u8 {
        self.leds
    }

    /// Reports waiting.
    pub fn pending(&self) -> usize {
        self.queue.len()
    }

    /// The next report for the interrupt IN endpoint.
    pub fn take_report(&mut self) -> Option<Vec<u8>> {
        let r = self.queue.pop_front();
        if self.queue.is_empty() {
            self.motion_tail = false;
        }
        r
    }

    fn push(&mut self, report: Vec<u8>, motion_only: bool) {
        if !self.configured() {
            return;
        }
        if motion_only && self.motion_tail {
            if let Some(last) = self.queue.back_mut() {
                *last = report;
                return;
            }
        }
        if self.queue.len() == QUEUE_MAX {
            self.queue.pop_front();
        }
        self.queue.push_back(report);
        self.motion_tail = motion_only;
    }

    fn tablet_report(&self, wheel: i8) -> Vec<u8> {
        let mut r = vec![self.buttons];
        r.extend_from_slice(&self.x.to_le_bytes());
        r.extend_from_slice(&self.y.to_le_bytes());
        r.push(wheel as u8);
        r
    }

    fn keyboard_report(&self) -> Vec<u8> {
        let mut r = vec![self.modifiers, 0, 0, 0, 0, 0, 0, 0];
        if self.keys.len() > 6 {
            // Too many keys at once: the phantom state (ErrorRollOver in every slot).
            r[2..].fill(0x01);
        } else {
            r[2..2 + self.keys.len()].copy_from_slice(&self.keys);
        }
        r
    }

    /// The pointer is at (`x`, `y`) of a `width` x `height` screen with `buttons` held
    /// (SPICE's mask: bit 0 left, 1 middle, 2 right). The tablet only.
    pub fn pointer(&mut self, x: i32, y: i32, width: u32, height: u32, buttons: u32) {
        let scale = |v: i32, size: u32| {
            let last = u64::from(size.max(2) - 1);
            let v = u64::from(v.max(0) as u32).min(last);
            (v * u64::from(ABS_MAX) / last) as u16
        };
        let buttons = usb_buttons(buttons);
        let moved_only = buttons == self.buttons;
        self.x = scale(x, width);
        self.y = scale(y, height);
        self.buttons = buttons;
        self.push(self.tablet_report(0), moved_only);
    }

    /// Buttons changed without motion. The tablet only.
    pub fn buttons(&mut self, buttons: u32) {
        let buttons = usb_buttons(buttons);
        if buttons != self.buttons {
            self.buttons = buttons;
            self.push(self.tablet_report(0), false);
        }
    }

    /// Wheel steps (SPICE's positive is down; HID's positive is up). The tablet only.
    pub fn wheel(&mut self, delta: i32) {
        if delta != 0 {
            let step = -delta.clamp(-127, 127) as i8;
            self.push(self.tablet_report(step), false);
        }
    }

    /// A set-1 scancode byte (0xE0 and 0xE1 prefixes their own bytes; bit 7: release). The
    /// keyboard only.
    pub fn key(&mut self, byte: u8) {
        match (self.prefix, byte) {
            (Prefix::Pause(n), _) => {
                self.prefix = if n > 1 {
                    Prefix::Pause(n - 1)
                } else {
                    Prefix::None
                };
                return;
            }
            (_, 0xe0) => {
                self.prefix = Prefix::Extended;
                return;
            }
            (_, 0xe1) => {
                // E1 1D 45 E1 9D C5: Pause pressed and released at once.
                self.prefix = Prefix::Pause(5);
                self.press(PAUSE, true);
                self.press(PAUSE, false);
                return;
            }
            _ => {}
        }
        let extended = self.prefix == Prefix::Extended;
        self.prefix = Prefix::None;
        if let Some(usage) = keymap::usage(extended, byte & 0x7f) {
            self.press(usage, byte & 0x80 == 0);
        }
    }

    fn press(&mut self, usage: u8, down: bool) {
        let before = (self.modifiers, self.keys.clone());
        if let Some(bit) = keymap::modifier_bit(usage) {
            if down {
                self.modifiers |= bit;
            } else {
                self.modifiers &= !bit;
            }
        } else if down {
            if !self.keys.contains(&usage) {
                self.keys.push(usage);
            }
        } else {
            self.keys.retain(|k| *k != usage);
        }
        // A held key's repeats change nothing: the guest repeats on its own.
        if (self.modifiers, &self.keys) != (before.0, &before.1) {
            self.push(self.keyboard_report(), false);
        }
    }

    fn device_descriptor(&self) -> Vec<u8> {
        let product: u16 = match self.kind {
            HidKind::Tablet => 0x0001,
            HidKind::Keyboard => 0x0002,
        };
        let mut d = vec![18, descriptor::DEVICE, 0x00, 0x02, 0, 0, 0, 64];
        d.extend_from_slice(&VENDOR.to_le_bytes());
        d.extend_from_slice(&product.to_le_bytes());
        d.extend_from_slice(&[0x00, 0x01, 1, 2, 3, 1]);
        d
    }

    fn hid_descriptor(&self) -> Vec<u8> {
        let len = self.kind.report_descriptor().len() as u16;
        let mut d = vec![9, descriptor::HID, 0x11, 0x01, 0, 1, descriptor::REPORT];
        d.extend_from_slice(&len.to_le_bytes());
        d
    }

    fn configuration_descriptor(&self) -> Vec<u8> {
        // The keyboard is in the boot subclass (firmware reads it); the tablet is not (a boot
        // mouse reports relative motion, which an absolute pointer has none of).
        let (subclass, protocol) = match self.kind {
            HidKind::Tablet => (0, 0),
            HidKind::Keyboard => (1, 1),
        };
        let mut d = vec![
            9,
            descriptor::CONFIGURATION,
            0,
            0,
            1,    // interfaces
            1,    // bConfigurationValue
            0,    // iConfiguration
            0x80, // bus-powered; no remote wakeup, so no guest suspends the port
            50,   // 100 mA
            9,
            descriptor::INTERFACE,
            0,
            0,
            1, // endpoints
            3, // HID
            subclass,
            protocol,
            0,
        ];
        d.extend_from_slice(&self.hid_descriptor());
        // Endpoint 1 IN, interrupt, 8-byte packets, every 10 ms (full-speed frames): the
        // controller hands reports over as soon as they exist, whatever the interval.
        d.extend_from_slice(&[7, descriptor::ENDPOINT, 0x81, 0x03, 8, 0, 10]);
        let total = d.len() as u16;
        d[2..4].copy_from_slice(&total.to_le_bytes());
        d
    }

    fn string(&self, index: u8) -> Option<Vec<u8>> {
        Some(match index {
            // Language IDs: US English.
            0 => vec![4, descriptor::STRING, 0x09, 0x04],
            1 => string_descriptor("Tessera"),
            2 => string_descriptor(self.kind.product()),
            3 => string_descriptor(match self.kind {
                HidKind::Tablet => "TS-TABLET-0",
                HidKind::Keyboard => "TS-KEYBOARD-0",
            }),
            _ => return None,
        })
    }

    fn current_report(&self) -> Vec<u8> {
        match self.kind {
            HidKind::Tablet => self.tablet_report(0),
            HidKind::Keyboard => self.keyboard_report(),
        }
    }

    /// Answers a control request on endpoint 0; `data` is the OUT data stage (empty for IN).
    pub fn control(&mut self, setup: &Setup, data: &[u8]) -> Control {
        let answer = self.request(setup, data);
        match answer {
            Control::In(mut d) => {
                d.truncate(usize::from(setup.length));
                Control::In(d)
            }
            other => other,
        }
    }

    fn request(&mut self, s: &Setup, data: &[u8]) -> Control {
        let [value_lo, value_hi] = s.value.to_le_bytes();
        match (s.request_type, s.request) {
            (0x80, request::GET_STATUS) => Control::In(vec![u8::from(self.remote_wakeup) << 1, 0]),
            (0x81 | 0x82, request::GET_STATUS) => Control::In(vec![0, 0]),
            (0x00, request::CLEAR_FEATURE | request::SET_FEATURE) if s.value == 1 => {
                self.remote_wakeup = s.request == request::SET_FEATURE;
                Control::Ok
            }
            // ENDPOINT_HALT on the interrupt endpoint: nothing is halted in the device itself.
            (0x02, request::CLEAR_FEATURE | request::SET_FEATURE) if s.value == 0 => Control::Ok,
            // The controller addresses devices itself (Address Device); a guest sending it
            // anyway gets what a device would answer.
            (0x00, request::SET_ADDRESS) if s.value <= 127 => Control::Ok,
            (0x80, request::GET_DESCRIPTOR) => match value_hi {
                descriptor::DEVICE => Control::In(self.device_descriptor()),
                descriptor::CONFIGURATION if value_lo == 0 => {
                    Control::In(self.configuration_descriptor())
                }
                descriptor::STRING => self.string(value_lo).map_or(Control::Stall, Control::In),
                // DEVICE_QUALIFIER and the rest: a full-speed-only device stalls them.
                _ => Control::Stall,
            },
            (0x81, request::GET_DESCRIPTOR) if s.index == 0 => match value_hi {
                descriptor::HID => Control::In(self.hid_descriptor()),
                descriptor::REPORT => Control::In(self.kind.report_descriptor().to_vec()),
                _ => Control::Stall,
            },
            (0x80, request::GET_CONFIGURATION) => Control::In(vec![self.configuration]),
            (0x00, request::SET_CONFIGURATION) if s.value <= 1 => {
                self.configuration = value_lo;
                self.queue.clear();
                self.motion_tail = false;
                Control::Ok
            }
            (0x81, request::GET_INTERFACE) if s.index == 0 => Control::In(vec![0]),
            (0x01, request::SET_INTERFACE) if s.index == 0 && s.value == 0 => Control::Ok,
            (0xa1, class::GET_REPORT) if value_hi == 1 => Control::In(self.current_report()),
            (0xa1, class::GET_IDLE) => Control::In(vec![self.idle]),
            (0xa1, class::GET_PROTOCOL) if self.kind == HidKind::Keyboard => {
                Control::In(vec![self.protocol])
            }
            (0x21, class::SET_REPORT) if value_hi == 2 && self.kind == HidKind::Keyboard => {
                self.leds = data.first().copied().unwrap_or(0) & 0x1f;
                Control::Ok
            }
            (0x21, class::SET_IDLE) => {
                self.idle = value_hi;
                Control::Ok
            }
            (0x21, class::SET_PROTOCOL) if self.kind == HidKind::Keyboard && s.value <= 1 => {
                // The boot keyboard's report is the one it always sends.
                self.protocol = value_lo;
                Control::Ok
            }
            _ => Control::Stall,
        }
    }
}

/// SPICE's button mask (bit 0 left, 1 middle, 2 right) as HID's (buttons 1 left, 2 right, 3
/// middle).
fn usb_buttons(spice: u32) -> u8 {
    let mut b = 0;
    if spice & 1 != 0 {
        b |= 1;
    }
    if spice & 4 != 0 {
        b |= 2;
    }
    if spice & 2 != 0 {
        b |= 4;
    }
    b
}

#[cfg(test)]
mod tests;
