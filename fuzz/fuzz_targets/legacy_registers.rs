//! Fuzzes the legacy registers a guest programs: the i8042 keyboard controller (data and
//! command ports, its command bytes and their arguments) and the bochs display's DISPI
//! registers (modes, offsets and banks that must stay inside video memory).
#![no_main]

use std::sync::mpsc;

use libfuzzer_sys::fuzz_target;
use tessera_vmm::devices::bus::BusDevice;
use tessera_vmm::devices::display::dispi::Dispi;
use tessera_vmm::devices::legacy::i8042::I8042;
use tessera_vmm::devices::legacy::serial::IrqLine;
use tessera_vmm::exit::ExitSender;
use vmm_sys_util::eventfd::EventFd;

fuzz_target!(|data: &[u8]| {
    let line = || EventFd::new(libc::EFD_NONBLOCK).map(IrqLine);
    let (Ok(irq), Ok(aux)) = (line(), line()) else {
        return;
    };
    let (tx, _rx) = mpsc::channel();
    let mut kbd = I8042::new(irq, aux, ExitSender::new(tx));
    let mut dispi = Dispi::new(16 << 20);
    // Each operation is 4 bytes: [op][a][b][c].
    for op in data.chunks_exact(4) {
        let value = u16::from_le_bytes([op[2], op[3]]);
        match op[0] % 6 {
            0 => kbd.write(u64::from(op[1] % 8), &[op[2]]),
            1 => {
                let mut b = [0u8; 1];
                kbd.read(u64::from(op[1] % 8), &mut b);
            }
            2 => {
                let _ = dispi.write(u16::from(op[1] % 16), value);
            }
            3 => {
                let _ = dispi.read(u16::from(op[1] % 16));
            }
            4 => {
                let _ = dispi.mode();
            }
            _ => {
                // Wider accesses than the ports take.
                let mut b = [0u8; 4];
                kbd.read(u64::from(op[1]), &mut b[..usize::from(op[2] % 4) + 1]);
                kbd.write(u64::from(op[1]), &op[..usize::from(op[3] % 4) + 1]);
            }
        }
    }
});
