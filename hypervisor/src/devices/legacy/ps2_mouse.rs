//! A PS/2 mouse behind the i8042's auxiliary port: the command set Linux's psmouse and
//! firmware drivers use (reset, identify, rate, resolution, scaling, status, reporting on/off)
//! and 3-byte movement packets built from the display client's relative motion (SPICE's
//! server mouse mode; with the virtio tablet, client mode is used instead).

/// A command acknowledged.
pub const ACK: u8 = 0xfa;
/// A command not understood: the driver resends or gives up.
pub const RESEND: u8 = 0xfe;

/// The mouse's state.
#[derive(Debug)]
pub struct Ps2Mouse {
    reporting: bool,
    rate: u8,
    resolution: u8,
    scaling_2to1: bool,
    /// A command waiting for its argument byte (set rate, set resolution).
    pending: Option<u8>,
}

impl Default for Ps2Mouse {
    fn default() -> Self {
        Self {
            reporting: false,
            rate: 100,
            resolution: 2,
            scaling_2to1: false,
            pending: None,
        }
    }
}

impl Ps2Mouse {
    /// A byte the driver sent to the mouse; the bytes the mouse answers.
    pub fn command(&mut self, byte: u8) -> Vec<u8> {
        if let Some(cmd) = self.pending.take() {
            match cmd {
                0xf3 => self.rate = byte,
                _ => self.resolution = byte.min(3),
            }
            return vec![ACK];
        }
        match byte {
            0xff => {
                *self = Self::default();
                vec![ACK, 0xaa, 0x00]
            }
            0xf6 => {
                *self = Self::default();
                vec![ACK]
            }
            0xf5 => {
                self.reporting = false;
                vec![ACK]
            }
            0xf4 => {
                self.reporting = true;
                vec![ACK]
            }
            0xf3 | 0xe8 => {
                self.pending = Some(byte);
                vec![ACK]
            }
            // Device ID: a standard mouse (no wheel extension).
            0xf2 => vec![ACK, 0x00],
            0xe9 => {
                let status = u8::from(self.reporting) << 5 | u8::from(self.scaling_2to1) << 4;
                vec![ACK, status, self.resolution, self.rate]
            }
            0xe6 | 0xe7 => {
                self.scaling_2to1 = byte == 0xe7;
                vec![ACK]
            }
            // Stream and remote mode: only stream mode is reported, both are accepted.
            0xea | 0xf0 => vec![ACK],
            0xeb => {
                let mut v = vec![ACK];
                v.extend_from_slice(&Self::encode(0, 0, 0));
                v
            }
            _ => vec![RESEND],
        }
    }

    fn encode(dx: i32, dy: i32, buttons: u32) -> [u8; 3] {
        let (dx, dy) = (dx.clamp(-255, 255), dy.clamp(-255, 255));
        // SPICE's button mask: 1 left, 2 middle, 4 right; PS/2's: 1 left, 2 right, 4 middle.
        let b = (buttons & 1) | (buttons & 4) >> 1 | (buttons & 2) << 1;
        let flags = 0x08 | b as u8 | u8::from(dx < 0) << 4 | u8::from(dy < 0) << 5;
        [flags, dx as u8, dy as u8]
    }

    /// The packet for a motion of (`dx`, `dy`) screen pixels (y grows downwards, as SPICE
    /// sends it) with `buttons` held, or None while reporting is off.
    pub fn packet(&self, dx: i32, dy: i32, buttons: u32) -> Option<[u8; 3]> {
        // PS/2's y axis points up.
        self.reporting
            .then(|| Self::encode(dx, dy.saturating_neg(), buttons))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psmouse_probe_and_packets() {
        let mut m = Ps2Mouse::default();
        assert_eq!(m.command(0xff), [ACK, 0xaa, 0x00]);
        assert_eq!(m.command(0xf2), [ACK, 0x00]);
        // IntelliMouse knock (200, 100, 80 then ID): still a plain mouse.
        for r in [200, 100, 80] {
            assert_eq!(m.command(0xf3), [ACK]);
            assert_eq!(m.command(r), [ACK]);
        }
        assert_eq!(m.command(0xf2), [ACK, 0x00]);
        assert_eq!(m.command(0xe8), [ACK]);
        assert_eq!(m.command(0x33), [ACK]);
        assert_eq!(m.command(0xe9), [ACK, 0x00, 3, 80]);
        assert_eq!(m.packet(5, 5, 0), None, "reporting is off");
        assert_eq!(m.command(0xf4), [ACK]);
        // Right, 10 px to the right and 3 px down: dy is -3 in PS/2 terms.
        assert_eq!(m.packet(10, 3, 4), Some([0x08 | 0x02 | 0x20, 10, 0xfd]));
        assert_eq!(
            m.packet(-1000, -1000, 1),
            Some([0x08 | 0x01 | 0x10, 1, 255])
        );
        assert_eq!(m.command(0x12), [RESEND]);
    }
}
