//! PC scancode set 1 (what SPICE clients send, and what the PS/2 keyboard passes on) to USB
//! HID keyboard usages (HID Usage Tables 1.3, chapter 10), for the USB keyboard.

/// Usages of set-1 codes 0x00..0x5a without a prefix (0: no key).
const PLAIN: [u8; 0x5a] = [
    0x00, 0x29, 0x1e, 0x1f, 0x20, 0x21, 0x22, 0x23, // 00: -, Esc, 1..6
    0x24, 0x25, 0x26, 0x27, 0x2d, 0x2e, 0x2a, 0x2b, // 08: 7..0, -, =, Backspace, Tab
    0x14, 0x1a, 0x08, 0x15, 0x17, 0x1c, 0x18, 0x0c, // 10: q w e r t y u i
    0x12, 0x13, 0x2f, 0x30, 0x28, 0xe0, 0x04, 0x16, // 18: o p [ ] Enter LCtrl a s
    0x07, 0x09, 0x0a, 0x0b, 0x0d, 0x0e, 0x0f, 0x33, // 20: d f g h j k l ;
    0x34, 0x35, 0xe1, 0x31, 0x1d, 0x1b, 0x06, 0x19, // 28: ' ` LShift \ z x c v
    0x05, 0x11, 0x10, 0x36, 0x37, 0x38, 0xe5, 0x55, // 30: b n m , . / RShift KP*
    0xe2, 0x2c, 0x39, 0x3a, 0x3b, 0x3c, 0x3d, 0x3e, // 38: LAlt Space Caps F1..F5
    0x3f, 0x40, 0x41, 0x42, 0x43, 0x53, 0x47, 0x5f, // 40: F6..F10 NumLock ScrollLock KP7
    0x60, 0x61, 0x56, 0x5c, 0x5d, 0x5e, 0x57, 0x59, // 48: KP8 KP9 KP- KP4 KP5 KP6 KP+ KP1
    0x5a, 0x5b, 0x62, 0x63, 0x46, 0x00, 0x64, 0x44, // 50: KP2 KP3 KP0 KP. SysRq - 102nd F11
    0x45, 0x00, // 58: F12
];

/// Usage of a set-1 make code (bit 7 clear); `extended` when it came after 0xE0.
pub fn usage(extended: bool, code: u8) -> Option<u8> {
    let u = if extended {
        match code {
            0x1c => 0x58, // keypad Enter
            0x1d => 0xe4, // right Ctrl
            0x35 => 0x54, // keypad /
            0x37 => 0x46, // Print Screen
            0x38 => 0xe6, // right Alt (AltGr)
            0x46 => 0x48, // Ctrl+Break: Pause
            0x47 => 0x4a, // Home
            0x48 => 0x52, // Up
            0x49 => 0x4b, // Page Up
            0x4b => 0x50, // Left
            0x4d => 0x4f, // Right
            0x4f => 0x4d, // End
            0x50 => 0x51, // Down
            0x51 => 0x4e, // Page Down
            0x52 => 0x49, // Insert
            0x53 => 0x4c, // Delete
            0x5b => 0xe3, // left GUI (Windows key)
            0x5c => 0xe7, // right GUI
            0x5d => 0x65, // Menu (Application)
            // 0x2a/0x36: the fake shifts around some extended keys; no key of their own.
            _ => 0,
        }
    } else {
        match code {
            0x70 => 0x88, // Katakana/Hiragana
            0x73 => 0x87, // Ro
            0x79 => 0x8a, // Henkan
            0x7b => 0x8b, // Muhenkan
            0x7d => 0x89, // Yen
            c => PLAIN.get(usize::from(c)).copied().unwrap_or(0),
        }
    };
    (u != 0).then_some(u)
}

/// Usage of the Pause key, which set 1 sends as E1 1D 45 (then E1 9D C5) with no release.
pub const PAUSE: u8 = 0x48;

/// A modifier usage's bit in the report's first byte.
pub fn modifier_bit(usage: u8) -> Option<u8> {
    (0xe0..=0xe7).contains(&usage).then(|| 1 << (usage - 0xe0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letters_digits_and_modifiers() {
        assert_eq!(usage(false, 0x1e), Some(0x04)); // a
        assert_eq!(usage(false, 0x2c), Some(0x1d)); // z
        assert_eq!(usage(false, 0x0b), Some(0x27)); // 0
        assert_eq!(usage(false, 0x1c), Some(0x28)); // Enter
        assert_eq!(usage(false, 0x58), Some(0x45)); // F12
        assert_eq!(usage(true, 0x38), Some(0xe6)); // AltGr
        assert_eq!(usage(true, 0x48), Some(0x52)); // Up
        assert_eq!(usage(true, 0x2a), None); // fake shift
        assert_eq!(usage(false, 0x55), None);
        assert_eq!(usage(false, 0x7f), None);
        assert_eq!(modifier_bit(0xe1), Some(2));
        assert_eq!(modifier_bit(0x04), None);
    }

    #[test]
    fn every_code_maps_to_a_distinct_key() {
        let mut seen = std::collections::HashSet::new();
        for ext in [false, true] {
            for code in 0..0x80u8 {
                if let Some(u) = usage(ext, code) {
                    // Print Screen and SysRq (Alt+Print Screen) are the same key.
                    assert!(seen.insert(u) || u == 0x46, "usage {u:#x} twice");
                }
            }
        }
        assert!(seen.len() > 100);
    }
}
