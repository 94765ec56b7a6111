//! The i8042 keyboard controller: enough of the controller and a keyboard for Linux's driver,
//! and the CPU reset line (command 0xFE) through which `reboot=k` ends the VM.
//!
//! The auxiliary port has a PS/2 mouse ([`super::ps2_mouse`]) on IRQ 12; every command a
//! driver waits on is answered at once, so probing costs no timeouts. Keys and relative motion
//! from the display client arrive through [`I8042::key`] and [`I8042::mouse`].

use std::collections::VecDeque;

use super::ps2_mouse::Ps2Mouse;
use crate::devices::bus::BusDevice;
use crate::devices::legacy::serial::IrqLine;
use crate::exit::{ExitReason, ExitSender};
use vm_superio::Trigger;

/// Data port (0x60) and status/command port (0x64) are at offsets 0 and 4 of this range.
pub const I8042_BASE: u64 = 0x60;
/// Range covering 0x60..=0x64.
pub const I8042_LEN: u64 = 5;
/// ISA IRQ of the keyboard.
pub const KBD_IRQ: u32 = 1;
/// ISA IRQ of the auxiliary (mouse) port.
pub const AUX_IRQ: u32 = 12;

const OFF_DATA: u64 = 0;
const OFF_COMMAND: u64 = 4;

const SB_OUT_FULL: u8 = 0x01;
const SB_SYSTEM: u8 = 0x04;
const SB_LAST_WAS_CMD: u8 = 0x08;
const SB_KBD_ENABLED: u8 = 0x10;
const SB_AUX_DATA: u8 = 0x20;

const CTR_KBD_INT: u8 = 0x01;
const CTR_AUX_INT: u8 = 0x02;
const CTR_SYSTEM: u8 = 0x04;
const CTR_KBD_DISABLE: u8 = 0x10;
const CTR_AUX_DISABLE: u8 = 0x20;
const CTR_XLATE: u8 = 0x40;

const CMD_READ_CTR: u8 = 0x20;
const CMD_WRITE_CTR: u8 = 0x60;
const CMD_AUX_DISABLE: u8 = 0xa7;
const CMD_AUX_ENABLE: u8 = 0xa8;
const CMD_AUX_TEST: u8 = 0xa9;
const CMD_SELF_TEST: u8 = 0xaa;
const CMD_KBD_TEST: u8 = 0xab;
const CMD_KBD_DISABLE: u8 = 0xad;
const CMD_KBD_ENABLE: u8 = 0xae;
const CMD_READ_OUTP: u8 = 0xd0;
const CMD_WRITE_OUTP: u8 = 0xd1;
const CMD_WRITE_KBD_BUF: u8 = 0xd2;
const CMD_WRITE_AUX_BUF: u8 = 0xd3;
const CMD_WRITE_AUX: u8 = 0xd4;
const CMD_RESET_CPU: u8 = 0xfe;

const KBD_ACK: u8 = 0xfa;
const KBD_SELF_TEST_OK: u8 = 0xaa;
/// Output buffer bound: a guest that never reads cannot grow host memory.
const OUT_CAPACITY: usize = 16;

/// The controller.
pub struct I8042 {
    ctr: u8,
    status: u8,
    /// Output bytes, each marked true when it comes from the mouse.
    out: VecDeque<(u8, bool)>,
    /// A controller command waiting for its data byte.
    pending: Option<u8>,
    /// A keyboard command waiting for its argument byte.
    kbd_pending: Option<u8>,
    scancode_set: u8,
    mouse: Ps2Mouse,
    irq: IrqLine,
    aux_irq: IrqLine,
    exit: ExitSender,
}

impl I8042 {
    /// A controller raising `irq` for keyboard data and `aux_irq` for mouse data, reporting
    /// resets on `exit`.
    pub fn new(irq: IrqLine, aux_irq: IrqLine, exit: ExitSender) -> Self {
        let mut me = Self {
            ctr: 0,
            status: 0,
            out: VecDeque::with_capacity(OUT_CAPACITY),
            pending: None,
            kbd_pending: None,
            scancode_set: 0,
            mouse: Ps2Mouse::default(),
            irq,
            aux_irq,
            exit,
        };
        me.reset();
        me
    }

    fn push(&mut self, byte: u8) {
        if self.out.len() < OUT_CAPACITY {
            self.out.push_back((byte, false));
        }
        self.raise(false);
    }

    fn push_aux(&mut self, bytes: &[u8]) {
        if self.out.len() + bytes.len() > OUT_CAPACITY {
            return;
        }
        self.out.extend(bytes.iter().map(|b| (*b, true)));
        self.raise(true);
    }

    /// Signals a byte in the output buffer: IRQ 12 for mouse data, IRQ 1 for the rest, each
    /// when the guest has it enabled.
    fn raise(&self, aux: bool) {
        let (line, on, off, n) = match aux {
            false => (&self.irq, CTR_KBD_INT, CTR_KBD_DISABLE, 1),
            true => (&self.aux_irq, CTR_AUX_INT, CTR_AUX_DISABLE, 12),
        };
        if self.ctr & on != 0 && self.ctr & off == 0 {
            if let Err(e) = line.trigger() {
                tracing::warn!(error = %e, "i8042: cannot raise IRQ {n}");
            }
        }
    }

    /// The guest read the output buffer: the next byte, if any, fills it and interrupts
    /// again, as a real controller's does. Linux reads one byte per interrupt, so without
    /// this a guest slower than the typist falls behind and the queue overflows.
    fn read_data(&mut self) -> u8 {
        let byte = self.out.pop_front().map_or(0, |(b, _)| b);
        if let Some(&(_, aux)) = self.out.front() {
            self.raise(aux);
        }
        byte
    }

    /// Relative motion from the display client (y grows downwards) with `buttons` held
    /// (SPICE's mask); dropped while the guest has the mouse off or has not read the last
    /// packets.
    pub fn mouse(&mut self, dx: i32, dy: i32, buttons: u32) {
        if self.ctr & CTR_AUX_DISABLE != 0 {
            return;
        }
        if let Some(p) = self.mouse.packet(dx, dy, buttons) {
            self.push_aux(&p);
        }
    }

    /// A key from the display client, as a PC scancode-set-1 byte (0xE0 prefixes and
    /// releases, bit 7, as their own bytes). With the controller translating (what Linux and
    /// firmware use) the guest reads set 1 as is; without, it gets the keyboard's set 2.
    pub fn key(&mut self, set1: u8) {
        if self.ctr & CTR_KBD_DISABLE != 0 {
            return;
        }
        if self.ctr & CTR_XLATE != 0 || self.scancode_set == 1 || set1 == 0xe0 {
            self.push(set1);
            return;
        }
        let Some(code) = set1_to_set2(set1 & 0x7f) else {
            return;
        };
        if set1 & 0x80 != 0 {
            self.push(0xf0);
        }
        self.push(code);
    }

    fn status(&self) -> u8 {
        match self.out.front() {
            None => self.status,
            Some((_, false)) => self.status | SB_OUT_FULL,
            Some((_, true)) => self.status | SB_OUT_FULL | SB_AUX_DATA,
        }
    }

    fn command(&mut self, cmd: u8) {
        self.status |= SB_LAST_WAS_CMD;
        match cmd {
            CMD_READ_CTR => self.push(self.ctr),
            CMD_WRITE_CTR | CMD_WRITE_OUTP | CMD_WRITE_KBD_BUF | CMD_WRITE_AUX_BUF
            | CMD_WRITE_AUX => self.pending = Some(cmd),
            CMD_AUX_DISABLE => self.ctr |= CTR_AUX_DISABLE,
            CMD_AUX_ENABLE => self.ctr &= !CTR_AUX_DISABLE,
            CMD_AUX_TEST => self.push(0x00),
            CMD_SELF_TEST => {
                self.status |= SB_SYSTEM;
                self.push(0x55);
            }
            CMD_KBD_TEST => self.push(0x00),
            CMD_KBD_DISABLE => self.ctr |= CTR_KBD_DISABLE,
            CMD_KBD_ENABLE => self.ctr &= !CTR_KBD_DISABLE,
            CMD_READ_OUTP => self.push(0x01), // reset line inactive, A20 on
            CMD_RESET_CPU => {
                tracing::info!("guest pulsed the CPU reset line through the i8042");
                // The receiver may be gone if the VM is already stopping; nothing to add then.
                self.exit.send(ExitReason::GuestReset);
            }
            other => tracing::debug!(cmd = format_args!("{other:#04x}"), "i8042: command ignored"),
        }
    }

    fn data(&mut self, byte: u8) {
        self.status &= !SB_LAST_WAS_CMD;
        match self.pending.take() {
            Some(CMD_WRITE_CTR) => {
                self.ctr = byte;
                self.status = (self.status & !SB_SYSTEM) | (byte & CTR_SYSTEM);
            }
            Some(CMD_WRITE_OUTP) => {
                if byte & 0x01 == 0 {
                    self.exit.send(ExitReason::GuestReset);
                }
            }
            Some(CMD_WRITE_KBD_BUF) => self.push(byte),
            // The loop-back comes back as mouse data, as Linux's aux port probe expects.
            Some(CMD_WRITE_AUX_BUF) => self.push_aux(&[byte]),
            Some(CMD_WRITE_AUX) => {
                let answer = self.mouse.command(byte);
                self.push_aux(&answer);
            }
            Some(_) => {}
            None => self.keyboard(byte),
        }
    }

    fn keyboard(&mut self, byte: u8) {
        if let Some(cmd) = self.kbd_pending.take() {
            self.push(KBD_ACK);
            if cmd == 0xf0 {
                match byte {
                    0 => self.push(self.scancode_set),
                    1..=3 => self.scancode_set = byte,
                    _ => {}
                }
            }
            return;
        }
        match byte {
            0xff => {
                self.push(KBD_ACK);
                self.push(KBD_SELF_TEST_OK);
            }
            0xf2 => {
                self.push(KBD_ACK);
                self.push(0xab);
                self.push(0x83);
            }
            0xed | 0xf0 | 0xf3 => {
                self.kbd_pending = Some(byte);
                self.push(KBD_ACK);
            }
            0xee => self.push(0xee), // echo
            _ => self.push(KBD_ACK),
        }
    }
}

/// Set 1 make code to set 2 (the same base codes serve 0xE0-prefixed keys).
fn set1_to_set2(code: u8) -> Option<u8> {
    const TABLE: [u8; 0x5e] = [
        0x00, 0x76, 0x16, 0x1e, 0x26, 0x25, 0x2e, 0x36, 0x3d, 0x3e, 0x46, 0x45, 0x4e, 0x55, 0x66,
        0x0d, 0x15, 0x1d, 0x24, 0x2d, 0x2c, 0x35, 0x3c, 0x43, 0x44, 0x4d, 0x54, 0x5b, 0x5a, 0x14,
        0x1c, 0x1b, 0x23, 0x2b, 0x34, 0x33, 0x3b, 0x42, 0x4b, 0x4c, 0x52, 0x0e, 0x12, 0x5d, 0x1a,
        0x22, 0x21, 0x2a, 0x32, 0x31, 0x3a, 0x41, 0x49, 0x4a, 0x59, 0x7c, 0x11, 0x29, 0x58, 0x05,
        0x06, 0x04, 0x0c, 0x03, 0x0b, 0x83, 0x0a, 0x01, 0x09, 0x77, 0x7e, 0x6c, 0x75, 0x7d, 0x7b,
        0x6b, 0x73, 0x74, 0x79, 0x69, 0x72, 0x7a, 0x70, 0x71, 0x00, 0x00, 0x61, 0x78, 0x07, 0x00,
        0x00, 0x1f, 0x27, 0x2f,
    ];
    TABLE.get(usize::from(code)).copied().filter(|&c| c != 0)
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value = match offset {
            OFF_DATA => self.read_data(),
            OFF_COMMAND => self.status(),
            _ => 0xff,
        };
        data.fill(0);
        if let Some(first) = data.first_mut() {
            *first = value;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&byte) = data.first() else { return };
        match offset {
            OFF_DATA => self.data(byte),
            OFF_COMMAND => self.command(byte),
            _ => {}
        }
    }

    fn reset(&mut self) {
        self.ctr = CTR_KBD_INT | CTR_SYSTEM | CTR_XLATE | CTR_AUX_DISABLE;
        self.status = SB_SYSTEM | SB_KBD_ENABLED;
        self.out.clear();
        self.pending = None;
        self.kbd_pending = None;
        self.scancode_set = 2;
        self.mouse = Ps2Mouse::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use vmm_sys_util::eventfd::EventFd;

    fn dev() -> (I8042, mpsc::Receiver<ExitReason>) {
        let (tx, rx) = mpsc::channel();
        let irq = IrqLine(EventFd::new(libc::EFD_NONBLOCK).unwrap());
        let aux = IrqLine(EventFd::new(libc::EFD_NONBLOCK).unwrap());
        (I8042::new(irq, aux, ExitSender::new(tx)), rx)
    }

    fn read(d: &mut I8042, off: u64) -> u8 {
        let mut b = [0u8];
        d.read(off, &mut b);
        b[0]
    }

    #[test]
    fn reset_command_stops_the_vm() {
        let (mut d, rx) = dev();
        d.write(OFF_COMMAND, &[CMD_RESET_CPU]);
        assert_eq!(rx.try_recv().unwrap(), ExitReason::GuestReset);
    }

    #[test]
    fn controller_self_test_and_ctr_round_trip() {
        let (mut d, _rx) = dev();
        d.write(OFF_COMMAND, &[CMD_SELF_TEST]);
        assert_ne!(read(&mut d, OFF_COMMAND) & SB_OUT_FULL, 0);
        assert_eq!(read(&mut d, OFF_DATA), 0x55);
        d.write(OFF_COMMAND, &[CMD_WRITE_CTR]);
        d.write(OFF_DATA, &[0x47]);
        d.write(OFF_COMMAND, &[CMD_READ_CTR]);
        assert_eq!(read(&mut d, OFF_DATA), 0x47);
        assert_eq!(read(&mut d, OFF_COMMAND) & SB_OUT_FULL, 0);
    }

    #[test]
    fn keyboard_reset_and_identify() {
        let (mut d, _rx) = dev();
        d.write(OFF_DATA, &[0xff]);
        assert_eq!(read(&mut d, OFF_DATA), KBD_ACK);
        assert_eq!(read(&mut d, OFF_DATA), KBD_SELF_TEST_OK);
        d.write(OFF_DATA, &[0xf0]);
        d.write(OFF_DATA, &[0]);
        assert_eq!(read(&mut d, OFF_DATA), KBD_ACK);
        assert_eq!(read(&mut d, OFF_DATA), KBD_ACK);
        assert_eq!(read(&mut d, OFF_DATA), 2);
    }

    #[test]
    fn the_mouse_answers_its_probe_and_reports_motion() {
        let (mut d, _rx) = dev();
        // Linux's i8042_check_aux: the loop-back comes back as mouse data...
        d.write(OFF_COMMAND, &[CMD_WRITE_AUX_BUF]);
        d.write(OFF_DATA, &[0x5a]);
        assert_eq!(
            read(&mut d, OFF_COMMAND) & (SB_OUT_FULL | SB_AUX_DATA),
            SB_OUT_FULL | SB_AUX_DATA
        );
        assert_eq!(read(&mut d, OFF_DATA), 0x5a);
        // ...the interface test passes...
        d.write(OFF_COMMAND, &[CMD_AUX_TEST]);
        assert_eq!(read(&mut d, OFF_DATA), 0x00);
        d.write(OFF_COMMAND, &[CMD_AUX_DISABLE]);
        d.write(OFF_COMMAND, &[CMD_READ_CTR]);
        assert_ne!(read(&mut d, OFF_DATA) & CTR_AUX_DISABLE, 0);
        d.mouse(5, 5, 0);
        assert_eq!(
            read(&mut d, OFF_COMMAND) & SB_OUT_FULL,
            0,
            "port disabled: no data"
        );
        d.write(OFF_COMMAND, &[CMD_AUX_ENABLE]);
        // ...and psmouse resets, identifies and enables the mouse through 0xD4.
        let send = |d: &mut I8042, b: u8| {
            d.write(OFF_COMMAND, &[CMD_WRITE_AUX]);
            d.write(OFF_DATA, &[b]);
        };
        send(&mut d, 0xff);
        send(&mut d, 0xf2);
        send(&mut d, 0xf4);
        let answers: Vec<u8> = (0..6).map(|_| read(&mut d, OFF_DATA)).collect();
        assert_eq!(answers, [0xfa, 0xaa, 0x00, 0xfa, 0x00, 0xfa]);
        d.mouse(3, -2, 1);
        let packet: Vec<u8> = (0..3)
            .map(|_| {
                assert_ne!(read(&mut d, OFF_COMMAND) & SB_AUX_DATA, 0);
                read(&mut d, OFF_DATA)
            })
            .collect();
        assert_eq!(packet, [0x09, 3, 2]);
        // A guest that never reads: motion is dropped, never split.
        for _ in 0..100 {
            d.mouse(1, 1, 0);
        }
        let mut n = 0;
        while read(&mut d, OFF_COMMAND) & SB_OUT_FULL != 0 {
            read(&mut d, OFF_DATA);
            n += 1;
        }
        assert_eq!(n % 3, 0);
        assert!(n <= OUT_CAPACITY);
    }

    #[test]
    fn hostile_writes_do_not_grow_or_reset() {
        let (mut d, rx) = dev();
        for v in 0..=255u8 {
            if v != CMD_RESET_CPU && v != CMD_WRITE_OUTP {
                d.write(OFF_COMMAND, &[v]);
            }
            for _ in 0..100 {
                d.write(OFF_DATA, &[0xff]);
            }
            d.write(2, &[v]);
            d.write(OFF_DATA, &[]);
        }
        assert!(d.out.len() <= OUT_CAPACITY);
        assert!(rx.try_recv().is_err());
        let mut wide = [0u8; 4];
        d.read(OFF_COMMAND, &mut wide);
        assert_eq!(&wide[1..], &[0, 0, 0]);
    }

    #[test]
    fn each_queued_byte_interrupts_again_when_the_last_is_read() {
        let (mut d, _rx) = dev();
        d.key(0x1e);
        d.key(0x9e);
        assert_eq!(d.irq.0.read().unwrap(), 2);
        assert_eq!(read(&mut d, 0), 0x1e);
        assert_eq!(
            d.irq.0.read().unwrap(),
            1,
            "the second byte interrupts again"
        );
        assert_eq!(read(&mut d, 0), 0x9e);
        assert!(d.irq.0.read().is_err(), "nothing left: no interrupt");
        // Mouse data behind a key byte: IRQ 12 once the key is read.
        d.write(4, &[0xa8]);
        d.write(4, &[0x60]);
        d.write(0, &[CTR_KBD_INT | CTR_AUX_INT | CTR_SYSTEM | CTR_XLATE]);
        d.key(0x1e);
        d.write(4, &[0xd4]);
        d.write(0, &[0xf4]); // enable reporting: the mouse acknowledges (0xFA, aux)
        let _ = d.aux_irq.0.read();
        assert_eq!(read(&mut d, 0), 0x1e);
        assert_eq!(d.aux_irq.0.read().unwrap(), 1);
        assert_eq!(read(&mut d, 0), 0xfa);
    }

    #[test]
    fn client_keys_reach_the_guest_in_its_scancode_set() {
        let (mut d, _rx) = dev();
        // Translation on (the reset state, and Linux's): set 1 as sent.
        for b in [0x1e, 0x9e, 0xe0, 0x48, 0xe0, 0xc8] {
            d.key(b);
        }
        let got: Vec<u8> = (0..6).map(|_| read(&mut d, 0)).collect();
        assert_eq!(got, [0x1e, 0x9e, 0xe0, 0x48, 0xe0, 0xc8]);
        // Translation off, set 2: 'a' is 0x1c, its release F0 1C; Up is E0 75.
        d.write(4, &[0x60]);
        d.write(0, &[CTR_KBD_INT | CTR_SYSTEM]);
        for b in [0x1e, 0x9e, 0xe0, 0x48] {
            d.key(b);
        }
        let got: Vec<u8> = (0..5).map(|_| read(&mut d, 0)).collect();
        assert_eq!(got, [0x1c, 0xf0, 0x1c, 0xe0, 0x75]);
        // A disabled keyboard drops keys; a flood is bounded.
        d.write(4, &[0xad]);
        d.key(0x1e);
        assert_eq!(read(&mut d, 4) & 1, 0);
        d.write(4, &[0xae]);
        for _ in 0..1000 {
            d.key(0x1e);
        }
        let mut queued = 0;
        while read(&mut d, 4) & 1 == 1 {
            read(&mut d, 0);
            queued += 1;
        }
        assert_eq!(queued, OUT_CAPACITY);
    }
}
