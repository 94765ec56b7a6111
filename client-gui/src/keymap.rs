//! egui's keys as PC XT (set 1) scancodes, which SPICE carries (0x100 marks an 0xE0-prefixed
//! key). egui reports keys by meaning on a US layout; the guest applies its own layout to the
//! scancodes, as with a physical keyboard.

use egui::{Key, Modifiers};

/// The scancode of `key`, if the guest has one.
pub fn scancode(key: Key) -> Option<u32> {
    use Key::*;
    let code = match key {
        Escape => 0x01,
        Num1 => 0x02,
        Num2 => 0x03,
        Num3 => 0x04,
        Num4 => 0x05,
        Num5 => 0x06,
        Num6 => 0x07,
        Num7 => 0x08,
        Num8 => 0x09,
        Num9 => 0x0A,
        Num0 => 0x0B,
        Minus => 0x0C,
        Equals | Plus => 0x0D,
        Backspace => 0x0E,
        Tab => 0x0F,
        Q => 0x10,
        W => 0x11,
        E => 0x12,
        R => 0x13,
        T => 0x14,
        Y => 0x15,
        U => 0x16,
        I => 0x17,
        O => 0x18,
        P => 0x19,
        OpenBracket => 0x1A,
        CloseBracket => 0x1B,
        Enter => 0x1C,
        A => 0x1E,
        S => 0x1F,
        D => 0x20,
        F => 0x21,
        G => 0x22,
        H => 0x23,
        J => 0x24,
        K => 0x25,
        L => 0x26,
        Semicolon | Colon => 0x27,
        Quote => 0x28,
        Backtick => 0x29,
        Backslash | Pipe => 0x2B,
        Z => 0x2C,
        X => 0x2D,
        C => 0x2E,
        V => 0x2F,
        B => 0x30,
        N => 0x31,
        M => 0x32,
        Comma => 0x33,
        Period => 0x34,
        Slash | Questionmark => 0x35,
        Space => 0x39,
        F1 => 0x3B,
        F2 => 0x3C,
        F3 => 0x3D,
        F4 => 0x3E,
        F5 => 0x3F,
        F6 => 0x40,
        F7 => 0x41,
        F8 => 0x42,
        F9 => 0x43,
        F10 => 0x44,
        F11 => 0x57,
        F12 => 0x58,
        Home => 0x147,
        ArrowUp => 0x148,
        PageUp => 0x149,
        ArrowLeft => 0x14B,
        ArrowRight => 0x14D,
        End => 0x14F,
        ArrowDown => 0x150,
        PageDown => 0x151,
        Insert => 0x152,
        Delete => 0x153,
        _ => return None,
    };
    Some(code)
}

/// Left Ctrl.
pub const CTRL: u32 = 0x1D;
/// Left Shift.
pub const SHIFT: u32 = 0x2A;
/// Left Alt.
pub const ALT: u32 = 0x38;
/// Left Windows key.
pub const SUPER: u32 = 0x15B;
/// Delete (0xE0-prefixed).
pub const DELETE: u32 = 0x153;
/// Right Ctrl.
pub const RIGHT_CTRL: u32 = 0x11D;
/// Right Alt (AltGr).
pub const RIGHT_ALT: u32 = 0x138;

/// The scancode of the key with Linux evdev code `code` (an X keycode less 8), as the key
/// grab reads them: codes 1 to 88 are the PC keyboard's own set-1 codes; the keys the AT
/// keyboard added carry the 0xE0 prefix.
pub fn evdev_scancode(code: u32) -> Option<u32> {
    let sc = match code {
        1..=83 | 86..=88 => code,
        96 => 0x11C, // keypad Enter
        97 => RIGHT_CTRL,
        98 => 0x135, // keypad /
        99 => 0x137, // Print Screen / SysRq
        100 => RIGHT_ALT,
        102 => 0x147, // Home
        103 => 0x148, // Up
        104 => 0x149, // Page Up
        105 => 0x14B, // Left
        106 => 0x14D, // Right
        107 => 0x14F, // End
        108 => 0x150, // Down
        109 => 0x151, // Page Down
        110 => 0x152, // Insert
        111 => DELETE,
        113 => 0x120, // Mute
        114 => 0x12E, // Volume down
        115 => 0x130, // Volume up
        117 => 0x59,  // keypad =
        125 => SUPER,
        126 => 0x15C, // right Windows key
        127 => 0x15D, // Menu
        _ => return None,
    };
    Some(sc)
}

/// Modifier scancodes whose held state differs between `was` and `now`, with the new state:
/// egui reports modifiers as a state, SPICE wants the key events.
pub fn modifier_changes(was: Modifiers, now: Modifiers) -> Vec<(u32, bool)> {
    [
        (was.ctrl, now.ctrl, CTRL),
        (was.shift, now.shift, SHIFT),
        (was.alt, now.alt, ALT),
        (was.mac_cmd, now.mac_cmd, SUPER),
    ]
    .into_iter()
    .filter(|(a, b, _)| a != b)
    .map(|(_, b, code)| (code, b))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letters_digits_and_extended_keys() {
        assert_eq!(scancode(Key::A), Some(0x1E));
        assert_eq!(scancode(Key::Num0), Some(0x0B));
        assert_eq!(scancode(Key::Enter), Some(0x1C));
        assert_eq!(scancode(Key::ArrowUp), Some(0x148));
        assert_eq!(scancode(Key::Delete), Some(DELETE));
    }

    #[test]
    fn evdev_codes_match_egui_keys() {
        // evdev: KEY_ESC 1, KEY_A 30, KEY_TAB 15, KEY_F12 88, KEY_UP 103, KEY_DELETE 111.
        for (evdev, key) in [
            (1, Key::Escape),
            (30, Key::A),
            (15, Key::Tab),
            (88, Key::F12),
            (103, Key::ArrowUp),
            (111, Key::Delete),
            (102, Key::Home),
        ] {
            assert_eq!(evdev_scancode(evdev), scancode(key), "evdev {evdev}");
        }
        assert_eq!(evdev_scancode(125), Some(SUPER));
        assert_eq!(evdev_scancode(84), None);
        assert_eq!(evdev_scancode(0), None);
    }

    #[test]
    fn modifiers_become_key_events() {
        let none = Modifiers::NONE;
        let ctrl_shift = Modifiers {
            ctrl: true,
            shift: true,
            ..Modifiers::NONE
        };
        assert_eq!(
            modifier_changes(none, ctrl_shift),
            [(CTRL, true), (SHIFT, true)]
        );
        assert_eq!(
            modifier_changes(ctrl_shift, Modifiers::CTRL),
            [(SHIFT, false)]
        );
        assert!(modifier_changes(none, none).is_empty());
    }
}
