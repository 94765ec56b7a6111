//! The register file alone: the I/O thread's part played by the test.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use vm_memory::{GuestAddress, GuestMemoryMmap};

use super::*;

fn hba() -> (Hba, Arc<AtomicU32>, EventFd) {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
    let kick = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let irqs = Arc::new(AtomicU32::new(0));
    let i = irqs.clone();
    let h = Hba::new(
        &[DriveKind::Ata, DriveKind::Atapi],
        mem,
        kick.try_clone().unwrap(),
        Box::new(move || {
            i.fetch_add(1, Ordering::SeqCst);
        }),
    );
    (h, irqs, kick)
}

fn ok() -> Ended {
    Ended {
        regs: Registers {
            status: 0x50,
            ..Registers::default()
        },
        bytes: 0,
        pio: false,
        silent: false,
        fatal: false,
    }
}

const CMD: u64 = PORT_BASE + 0x18;
const CI: u64 = PORT_BASE + 0x38;

#[test]
fn commands_are_issued_only_to_a_started_port_and_in_slot_order() {
    let (mut h, _, kick) = hba();
    h.write(CI, 0b1010);
    assert_eq!(h.read(CI), 0, "CI is ignored while ST is clear");
    assert_eq!(h.take_issued(), None);
    h.write(CMD, pxcmd::FRE | pxcmd::ST);
    h.write(CI, 0b1010);
    assert!(kick.read().unwrap() >= 1, "the I/O thread is woken");
    let a = h.take_issued().unwrap();
    assert_eq!((a.port, a.slot, a.reset_drive), (0, 1, true));
    assert_eq!(h.take_issued(), None, "one command at a time per port");
    h.finish(&a, &ok());
    let b = h.take_issued().unwrap();
    assert_eq!((b.slot, b.reset_drive), (3, false));
    h.finish(&b, &ok());
    assert_eq!(h.read(CI), 0);
    assert_eq!(h.read(PORT_BASE + 0x20), 0x50);
}

#[test]
fn a_stop_while_a_command_runs_drops_its_end_and_holds_cr_until_it_lets_go() {
    let (mut h, irqs, _) = hba();
    h.write(0x04, GHC_IE);
    h.write(PORT_BASE + 0x14, pxis::VALID);
    h.write(CMD, pxcmd::FRE | pxcmd::ST);
    h.write(CI, 1);
    let a = h.take_issued().unwrap();
    h.write(CMD, pxcmd::FRE);
    assert_ne!(
        h.read(CMD) & pxcmd::CR,
        0,
        "the command still holds guest memory"
    );
    h.write(CMD, pxcmd::FRE | pxcmd::ST);
    h.write(CI, 1 << 7);
    h.finish(&a, &ok());
    assert_eq!(h.read(PORT_BASE + 0x10), 0, "the old end was dropped");
    assert_eq!(h.read(CI), 1 << 7, "the new command is untouched");
    assert_eq!(irqs.load(Ordering::SeqCst), 0);
    let b = h.take_issued().unwrap();
    assert_eq!(b.slot, 7);
    h.finish(&b, &ok());
    assert_eq!(irqs.load(Ordering::SeqCst), 1);
    h.write(CMD, pxcmd::FRE);
    assert_eq!(h.read(CMD) & pxcmd::CR, 0);
}

#[test]
fn an_error_halts_the_port_and_a_fatal_error_is_reported_as_such() {
    let (mut h, _, _) = hba();
    h.write(CMD, pxcmd::FRE | pxcmd::ST);
    h.write(CI, 0b11);
    let a = h.take_issued().unwrap();
    let mut e = ok();
    e.regs.status |= 1;
    e.regs.error = 4;
    h.finish(&a, &e);
    assert_eq!(h.read(PORT_BASE + 0x10) & pxis::TFES, pxis::TFES);
    assert_eq!(h.read(PORT_BASE + 0x20), 0x0451);
    assert_eq!(h.take_issued(), None, "halted");
    h.write(CMD, pxcmd::FRE);
    h.write(PORT_BASE + 0x10, u32::MAX);
    h.write(CMD, pxcmd::FRE | pxcmd::ST);
    h.write(CI, 1);
    let b = h.take_issued().unwrap();
    h.finish(
        &b,
        &Ended {
            fatal: true,
            ..ok()
        },
    );
    assert_eq!(h.read(PORT_BASE + 0x10), pxis::HBFS);
    assert_eq!(h.take_issued(), None);
}

#[test]
fn ports_without_a_device_take_no_commands() {
    let (mut h, _, _) = hba();
    let p2 = PORT_BASE + 2 * PORT_LEN;
    h.write(p2 + 0x18, pxcmd::FRE | pxcmd::ST);
    h.write(p2 + 0x38, 1);
    assert_eq!(h.take_issued(), None);
    assert_eq!(h.read(p2 + 0x28), 0);
    // Out-of-range and reserved offsets read zero and ignore writes.
    h.write(0x2000, 1);
    h.write(PORT_BASE + 0x7c, 1);
    assert_eq!(h.read(0x2000), 0);
    assert_eq!(h.read(PORT_BASE + 0x7c), 0);
}

#[test]
fn busy_ports_take_turns() {
    let (mut h, _, _) = hba();
    let p1 = PORT_BASE + PORT_LEN;
    h.write(CMD, pxcmd::FRE | pxcmd::ST);
    h.write(p1 + 0x18, pxcmd::FRE | pxcmd::ST);
    h.write(CI, 0b111);
    h.write(p1 + 0x38, 0b111);
    let mut order = Vec::new();
    while let Some(c) = h.take_issued() {
        order.push(c.port);
        h.finish(&c, &ok());
    }
    assert_eq!(order, [0, 1, 0, 1, 0, 1]);
}
