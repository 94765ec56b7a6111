//! The controller end to end: the test plays the host's driver through BAR 0 (a DCBAA,
//! command, event and transfer rings and contexts in guest memory, laid out as Linux's
//! xhci_hcd does), enumerating and configuring the tablet and the keyboard and reading their
//! reports, and then misbehaving.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::context::{self, slot_state, EpState};
use super::controller::{portsc, usbcmd, usbsts};
use super::trb::{flag, kind, Completion, Trb};
use super::*;
use crate::devices::pci::config::{COMMAND_MEMORY, REG_COMMAND};
use crate::devices::pci::msix::MsixVector;

const BASE: u64 = 0xe000_0000;
const MEM: usize = 16 << 20;
const OP: u64 = 0x40;
const RT: u64 = 0x600;
const DB: u64 = 0x700;
const DCBAA: u64 = 0x1_0000;
const CMD_RING: u64 = 0x2_0000;
const ERST: u64 = 0x3_0000;
const EVENTS: u64 = 0x3_1000;
const EVENT_TRBS: u64 = 32;
const CMD_TRBS: u64 = 16;
const BUF: u64 = 0x9_0000;

struct Host {
    xhci: Xhci,
    input: UsbInput,
    mem: GuestMemoryMmap,
    irq: EventFd,
    cmd_at: u64,
    cmd_cycle: bool,
    ev_at: u64,
    ev_cycle: bool,
    /// Per slot and DCI: (next TRB, cycle).
    rings: std::collections::HashMap<(u8, u8), (u64, bool)>,
}

fn trb(kind: u8, parameter: u64, status: u32, control: u32) -> Trb {
    Trb {
        parameter,
        status,
        control: control | u32::from(kind) << 10,
    }
}

fn input_ctx(slot: u8) -> u64 {
    0x4_0000 + u64::from(slot) * 0x1000
}
fn output_ctx(slot: u8) -> u64 {
    0x5_0000 + u64::from(slot) * 0x1000
}
fn ring_of(slot: u8, dci: u8) -> u64 {
    0x10_0000 + u64::from(slot) * 0x1_0000 + u64::from(dci) * 0x400
}

fn host() -> Host {
    let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let msix = Msix::new(
        vec![MsixVector {
            gsi: 24,
            irqfd: irq.try_clone().unwrap(),
        }],
        None,
    );
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM)]).unwrap();
    let (mut xhci, input) = Xhci::new(msix, BASE as u32, mem.clone()).unwrap();
    xhci.config_write(REG_COMMAND, 0, &[COMMAND_MEMORY as u8 | 4]);
    // MSI-X on, vector 0 unmasked.
    let cap = xhci.msix_cap;
    xhci.config_write(cap / 4, 2, &[0, 0x80]);
    assert!(xhci.mmio_write(BASE + MSIX_TABLE + 12, &0u32.to_le_bytes()));
    Host {
        xhci,
        input,
        mem,
        irq,
        cmd_at: CMD_RING,
        cmd_cycle: true,
        ev_at: EVENTS,
        ev_cycle: true,
        rings: Default::default(),
    }
}

impl Host {
    fn read(&mut self, off: u64) -> u32 {
        let mut b = [0u8; 4];
        assert!(self.xhci.mmio_read(BASE + off, &mut b));
        u32::from_le_bytes(b)
    }

    fn write(&mut self, off: u64, v: u32) {
        assert!(self.xhci.mmio_write(BASE + off, &v.to_le_bytes()));
    }

    fn write64(&mut self, off: u64, v: u64) {
        assert!(self.xhci.mmio_write(BASE + off, &v.to_le_bytes()));
    }

    fn put(&self, at: u64, t: Trb) {
        self.mem
            .write_slice(&t.to_bytes(), GuestAddress(at))
            .unwrap();
    }

    /// What xhci_hcd does at start: reset, slots, DCBAA, command ring (a Link TRB at its
    /// end), one event ring segment, interrupts, run.
    fn start(&mut self) {
        // Rings from any earlier run are gone.
        let zeros = vec![0u8; 0x20_0000 - DCBAA as usize];
        self.mem.write_slice(&zeros, GuestAddress(DCBAA)).unwrap();
        (self.cmd_at, self.cmd_cycle, self.ev_at, self.ev_cycle) = (CMD_RING, true, EVENTS, true);
        self.rings.clear();
        self.write(OP, usbcmd::HCRST);
        assert_eq!(self.read(OP) & usbcmd::HCRST, 0);
        assert_ne!(self.read(OP + 4) & usbsts::HCH, 0);
        self.write(OP + 0x38, 8);
        self.write64(OP + 0x30, DCBAA);
        for slot in 1..=8u8 {
            self.mem
                .write_obj(output_ctx(slot), GuestAddress(DCBAA + 8 * u64::from(slot)))
                .unwrap();
        }
        self.put(
            CMD_RING + 16 * (CMD_TRBS - 1),
            trb(kind::LINK, CMD_RING, 0, flag::TOGGLE_CYCLE),
        );
        self.write64(OP + 0x18, CMD_RING | 1);
        let mut e = [0u8; 16];
        e[..8].copy_from_slice(&EVENTS.to_le_bytes());
        e[8] = EVENT_TRBS as u8;
        self.mem.write_slice(&e, GuestAddress(ERST)).unwrap();
        self.write(RT + 0x28, 1);
        self.write64(RT + 0x30, ERST);
        self.write64(RT + 0x38, EVENTS);
        self.write(RT + 0x20, 2);
        self.write(OP, usbcmd::RUN | usbcmd::INTE);
        assert_eq!(self.read(OP + 4) & usbsts::HCH, 0);
    }

    /// The next event, if the controller wrote one; ERDP follows.
    fn event(&mut self) -> Option<Trb> {
        let mut b = [0u8; 16];
        self.mem
            .read_slice(&mut b, GuestAddress(self.ev_at))
            .unwrap();
        let t = Trb::from_bytes(b);
        if t.cycle() != self.ev_cycle {
            return None;
        }
        self.ev_at += 16;
        if self.ev_at == EVENTS + 16 * EVENT_TRBS {
            self.ev_at = EVENTS;
            self.ev_cycle = !self.ev_cycle;
        }
        // ERDP with EHB, as xhci_hcd's handler does with MSI-X (IMAN.IP clears itself).
        self.write64(RT + 0x38, self.ev_at | 8);
        Some(t)
    }

    fn events(&mut self) -> Vec<Trb> {
        std::iter::from_fn(|| self.event()).collect()
    }

    fn command(&mut self, mut t: Trb) -> Trb {
        t.control |= u32::from(self.cmd_cycle);
        let at = self.cmd_at;
        self.put(at, t);
        self.cmd_at += 16;
        if self.cmd_at == CMD_RING + 16 * (CMD_TRBS - 1) {
            // The Link TRB hands over with the producer's cycle, then the cycle toggles.
            let link = trb(
                kind::LINK,
                CMD_RING,
                0,
                flag::TOGGLE_CYCLE | u32::from(self.cmd_cycle),
            );
            self.put(self.cmd_at, link);
            self.cmd_at = CMD_RING;
            self.cmd_cycle = !self.cmd_cycle;
        }
        self.write(DB, 0);
        let e = self.event().expect("a command completion");
        assert_eq!(e.kind(), kind::COMMAND_COMPLETION);
        assert_eq!(e.parameter, at);
        e
    }

    fn code(e: &Trb) -> u32 {
        e.status >> 24
    }

    /// Queues `trbs` on a slot's endpoint ring (cycle bits the host's), without a doorbell.
    fn queue(&mut self, slot: u8, dci: u8, trbs: &[Trb]) -> Vec<u64> {
        let (mut at, cycle) = *self
            .rings
            .entry((slot, dci))
            .or_insert((ring_of(slot, dci), true));
        let mut placed = Vec::new();
        for t in trbs {
            let mut t = *t;
            t.control |= u32::from(cycle);
            self.put(at, t);
            placed.push(at);
            at += 16;
        }
        self.rings.insert((slot, dci), (at, cycle));
        placed
    }

    fn reset_port(&mut self, port: u64) {
        let sc = OP + 0x400 + 0x10 * (port - 1);
        self.write(sc, portsc::PR | portsc::PP);
        let e = self.event().expect("a port status change");
        assert_eq!(e.kind(), kind::PORT_STATUS_CHANGE);
        assert_eq!(e.parameter >> 24, port);
        let v = self.read(sc);
        assert_eq!(
            v & (portsc::PED | portsc::PRC | portsc::CCS),
            portsc::PED | portsc::PRC | portsc::CCS
        );
        // Change bits cleared by writing them back (PED written 0 keeps the port enabled).
        self.write(sc, (v & portsc::CHANGES) | portsc::PP);
        assert_eq!(self.read(sc) & portsc::CHANGES, 0);
    }

    /// Port reset, Enable Slot, Address Device: a slot for the device on `port`.
    fn address(&mut self, port: u64) -> u8 {
        self.reset_port(port);
        let e = self.command(trb(kind::ENABLE_SLOT, 0, 0, 0));
        assert_eq!(Host::code(&e), Completion::Success as u32);
        let slot = e.slot();
        let input = input_ctx(slot);
        let mut ctrl = [0u32; 8];
        ctrl[1] = 0b11;
        context::write(&self.mem, input, &ctrl).unwrap();
        let mut sc = [0u32; 8];
        sc[0] = 1 << 27 | 1 << 20;
        sc[1] = (port as u32) << 16;
        context::write(&self.mem, context::input(input, 0), &sc).unwrap();
        let mut ep0 = [0u32; 8];
        ep0[1] = 64 << 16 | 4 << 3 | 3 << 1;
        context::set_dequeue(&mut ep0, ring_of(slot, 1) | 1);
        context::write(&self.mem, context::input(input, 1), &ep0).unwrap();
        let e = self.command(trb(kind::ADDRESS_DEVICE, input, 0, u32::from(slot) << 24));
        assert_eq!(Host::code(&e), Completion::Success as u32);
        let out = context::read(&self.mem, output_ctx(slot)).unwrap();
        assert_eq!(out[3], slot_state::ADDRESSED << 27 | u32::from(slot));
        let ep = context::read(&self.mem, context::output(output_ctx(slot), 1)).unwrap();
        assert_eq!(ep[0] & 7, EpState::Running as u32);
        slot
    }

    /// A control transfer with an IN data stage of `len` bytes into BUF; the events.
    fn control_in(&mut self, slot: u8, setup: [u8; 8], len: u32) -> Vec<Trb> {
        let trbs = [
            trb(
                kind::SETUP,
                u64::from_le_bytes(setup),
                8,
                flag::IMMEDIATE | 3 << 16,
            ),
            trb(kind::DATA, BUF, len, flag::DIR_IN | flag::ISP),
            trb(kind::STATUS, 0, 0, flag::IOC),
        ];
        self.queue(slot, 1, &trbs);
        self.write(DB + 4 * u64::from(slot), 1);
        self.events()
    }

    /// A control transfer without data.
    fn control_none(&mut self, slot: u8, setup: [u8; 8]) -> Vec<Trb> {
        let trbs = [
            trb(kind::SETUP, u64::from_le_bytes(setup), 8, flag::IMMEDIATE),
            trb(kind::STATUS, 0, 0, flag::IOC | flag::DIR_IN),
        ];
        self.queue(slot, 1, &trbs);
        self.write(DB + 4 * u64::from(slot), 1);
        self.events()
    }

    fn buf(&self, len: usize) -> Vec<u8> {
        let mut b = vec![0u8; len];
        self.mem.read_slice(&mut b, GuestAddress(BUF)).unwrap();
        b
    }

    /// Configure Endpoint with endpoint 1 IN (interrupt), then SET_CONFIGURATION(1).
    fn configure(&mut self, slot: u8) {
        let input = input_ctx(slot);
        let mut ctrl = [0u32; 8];
        ctrl[1] = 1 | 1 << 3;
        context::write(&self.mem, input, &ctrl).unwrap();
        let mut sc = context::read(&self.mem, context::input(input, 0)).unwrap();
        sc[0] = (sc[0] & 0x07ff_ffff) | 3 << 27;
        context::write(&self.mem, context::input(input, 0), &sc).unwrap();
        let mut ep = [0u32; 8];
        ep[0] = 7 << 16;
        ep[1] = 8 << 16 | 7 << 3 | 3 << 1;
        context::set_dequeue(&mut ep, ring_of(slot, 3) | 1);
        context::write(&self.mem, context::input(input, 3), &ep).unwrap();
        let e = self.command(trb(
            kind::CONFIGURE_ENDPOINT,
            input,
            0,
            u32::from(slot) << 24,
        ));
        assert_eq!(Host::code(&e), Completion::Success as u32);
        let out = context::read(&self.mem, output_ctx(slot)).unwrap();
        assert_eq!(out[3] >> 27, slot_state::CONFIGURED);
        assert_eq!(out[0] >> 27, 3);
        let ev = self.control_none(slot, [0, 9, 1, 0, 0, 0, 0, 0]);
        assert_eq!(Host::code(&ev[0]), Completion::Success as u32);
    }

    /// Queues one report transfer of 8 bytes at `buf` and rings the endpoint's doorbell.
    fn want_report(&mut self, slot: u8, buf: u64) -> u64 {
        let at = self.queue(slot, 3, &[trb(kind::NORMAL, buf, 8, flag::ISP | flag::IOC)])[0];
        self.write(DB + 4 * u64::from(slot), 3);
        at
    }
}

#[test]
fn registers_read_as_a_driver_expects() {
    let mut h = host();
    let mut b = [0u8; 1];
    assert!(h.xhci.mmio_read(BASE, &mut b));
    assert_eq!(b[0], 0x40, "CAPLENGTH");
    let mut w = [0u8; 2];
    assert!(h.xhci.mmio_read(BASE + 2, &mut w));
    assert_eq!(u16::from_le_bytes(w), 0x100, "HCIVERSION");
    let hcs1 = h.read(4);
    assert_eq!((hcs1 & 0xff, (hcs1 >> 8) & 0x7ff, hcs1 >> 24), (8, 1, 8));
    // The extended capabilities: two Supported Protocol capabilities cover the ports.
    let mut at = u64::from(h.read(0x10) >> 16) * 4;
    let mut protocols = Vec::new();
    loop {
        let head = h.read(at);
        assert_eq!(head & 0xff, 2);
        assert_eq!(h.read(at + 4), u32::from_le_bytes(*b"USB "));
        let ports = h.read(at + 8);
        protocols.push((head >> 24, ports & 0xff, (ports >> 8) & 0xff));
        let next = u64::from((head >> 8) & 0xff);
        if next == 0 {
            break;
        }
        at += 4 * next;
    }
    assert_eq!(protocols, vec![(2, 1, 4), (3, 5, 4)]);
    // The tablet on port 1, the keyboard on port 2: connected, full speed, not enabled.
    for port in 0..8u64 {
        let v = h.read(OP + 0x400 + 0x10 * port);
        assert_ne!(v & portsc::PP, 0);
        if port < 2 {
            assert_eq!(v & 0x3c03, portsc::CCS | 1 << 10, "port {port}: {v:#x}");
            assert_ne!(v & portsc::CSC, 0);
        } else {
            assert_eq!(v & (portsc::CCS | portsc::CSC), 0);
        }
    }
    assert_eq!(h.read(OP + 8), 1, "4 KiB pages");
    assert!(h.read(OP + 4) & usbsts::HCH != 0);
}

#[test]
fn tablet_and_keyboard_enumerate_and_report() {
    let mut h = host();
    h.start();
    assert_eq!(h.irq.read().unwrap_or(0), 0);
    let slot = h.address(1);
    // GET_DESCRIPTOR(device) for 8 bytes, then whole.
    let ev = h.control_in(slot, [0x80, 6, 0, 1, 0, 0, 8, 0], 8);
    assert_eq!(ev.len(), 1);
    assert_eq!(Host::code(&ev[0]), Completion::Success as u32);
    assert_eq!(h.buf(8)[7], 64);
    let ev = h.control_in(slot, [0x80, 6, 0, 1, 0, 0, 18, 0], 18);
    assert_eq!(ev.len(), 1);
    // The configuration, asked for with room to spare: a short packet, then the status.
    let ev = h.control_in(slot, [0x80, 6, 0, 2, 0, 0, 255, 0], 255);
    assert_eq!(ev.len(), 2, "{ev:?}");
    assert_eq!(Host::code(&ev[0]), Completion::ShortPacket as u32);
    assert_eq!(ev[0].status & 0xff_ffff, 255 - 34);
    assert_eq!((ev[0].slot(), ev[0].endpoint()), (slot, 1));
    assert_eq!(Host::code(&ev[1]), Completion::Success as u32);
    assert!(h.irq.read().unwrap() >= 1, "events interrupt");
    // The device qualifier stalls: the endpoint halts until reset and moved past.
    let ev = h.control_in(slot, [0x80, 6, 0, 6, 0, 0, 10, 0], 10);
    assert_eq!(ev.len(), 1);
    assert_eq!(Host::code(&ev[0]), Completion::Stall as u32);
    let ep0 = context::read(&h.mem, context::output(output_ctx(slot), 1)).unwrap();
    assert_eq!(ep0[0] & 7, EpState::Halted as u32);
    let e = h.command(trb(
        kind::RESET_ENDPOINT,
        0,
        0,
        u32::from(slot) << 24 | 1 << 16,
    ));
    assert_eq!(Host::code(&e), Completion::Success as u32);
    let (next, cycle) = h.rings[&(slot, 1)];
    let e = h.command(trb(
        kind::SET_TR_DEQUEUE,
        next | u64::from(cycle),
        0,
        u32::from(slot) << 24 | 1 << 16,
    ));
    assert_eq!(Host::code(&e), Completion::Success as u32);
    let ev = h.control_in(slot, [0x80, 6, 2, 3, 9, 4, 255, 0], 255);
    assert_eq!(Host::code(&ev[0]), Completion::ShortPacket as u32);
    let name = h.buf(22);
    assert_eq!(name[0], 22, "'USB Tablet' in UTF-16");

    // Not ready for input until configured; reports wait for a transfer.
    assert!(!h.input.tablet_ready());
    h.configure(slot);
    assert!(
        !h.input.tablet_ready(),
        "configured, but no driver reads it yet"
    );
    h.input.move_to(512, 384, 1024, 768, 0);
    assert!(h.events().is_empty());
    let td = h.want_report(slot, BUF + 0x100);
    assert!(h.input.tablet_ready());
    assert!(!h.input.keyboard_ready());
    let ev = h.events();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].parameter, td);
    assert_eq!(Host::code(&ev[0]), Completion::ShortPacket as u32);
    assert_eq!(ev[0].status & 0xff_ffff, 2, "6 of 8 bytes");
    let mut r = [0u8; 6];
    h.mem.read_slice(&mut r, GuestAddress(BUF + 0x100)).unwrap();
    // (512 * 32767 / 1023, 384 * 32767 / 767) = (16399, 16404).
    assert_eq!(r, [0, 0x0f, 0x40, 0x14, 0x40, 0]);
    // A transfer waiting: the next input lands at once.
    h.want_report(slot, BUF + 0x200);
    assert!(h.events().is_empty());
    h.input.buttons(1);
    let ev = h.events();
    assert_eq!(ev.len(), 1);
    let mut r = [0u8; 1];
    h.mem.read_slice(&mut r, GuestAddress(BUF + 0x200)).unwrap();
    assert_eq!(r[0], 1);

    // The keyboard on port 2.
    let kb = h.address(2);
    assert_ne!(kb, slot);
    h.configure(kb);
    h.want_report(kb, BUF + 0x300);
    assert!(h.input.keyboard_ready());
    h.input.key(0x1e);
    let ev = h.events();
    assert_eq!(
        (ev.len(), Host::code(&ev[0])),
        (1, Completion::Success as u32)
    );
    let mut r = [0u8; 8];
    h.mem.read_slice(&mut r, GuestAddress(BUF + 0x300)).unwrap();
    assert_eq!(r, [0, 0, 4, 0, 0, 0, 0, 0]);

    // HCRST: nothing is configured any more; input goes elsewhere.
    h.write(OP, usbcmd::HCRST);
    assert!(!h.input.tablet_ready());
    assert!(!h.input.keyboard_ready());
}

#[test]
fn stop_endpoint_keeps_the_waiting_transfer() {
    let mut h = host();
    h.start();
    let slot = h.address(1);
    h.configure(slot);
    let td = h.want_report(slot, BUF);
    assert!(h.input.tablet_ready());
    let e = h.command(trb(
        kind::STOP_ENDPOINT,
        0,
        0,
        u32::from(slot) << 24 | 3 << 16,
    ));
    assert_eq!(Host::code(&e), Completion::Success as u32);
    assert!(
        !h.input.tablet_ready(),
        "a closed device's input goes elsewhere"
    );
    let ep = context::read(&h.mem, context::output(output_ctx(slot), 3)).unwrap();
    assert_eq!(ep[0] & 7, EpState::Stopped as u32);
    assert_eq!(
        context::dequeue(&ep),
        td | 1,
        "the dequeue pointer is the waiting TD"
    );
    // Stopped twice: a context state error.
    let e = h.command(trb(
        kind::STOP_ENDPOINT,
        0,
        0,
        u32::from(slot) << 24 | 3 << 16,
    ));
    assert_eq!(Host::code(&e), Completion::ContextState as u32);
    h.input.move_to(1, 1, 10, 10, 0);
    assert!(h.events().is_empty(), "a stopped endpoint takes nothing");
    // Its doorbell runs it again; the report waiting goes out.
    h.write(DB + 4 * u64::from(slot), 3);
    let ev = h.events();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0].parameter, td);
}

#[test]
fn chained_trbs_and_event_data() {
    let mut h = host();
    h.start();
    let slot = h.address(1);
    h.configure(slot);
    h.input.move_to(0, 0, 10, 10, 0);
    // Two 4-byte buffers chained, then an Event Data TRB: one event, with the TD's total.
    let trbs = [
        trb(kind::NORMAL, BUF, 4, flag::CHAIN),
        trb(kind::NORMAL, BUF + 0x40, 4, flag::CHAIN),
        trb(kind::EVENT_DATA, 0xdead_beef, 0, flag::IOC),
    ];
    h.queue(slot, 3, &trbs);
    h.write(DB + 4 * u64::from(slot), 3);
    let ev = h.events();
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0].parameter, 0xdead_beef);
    assert!(ev[0].has(flag::EVENT_DATA));
    assert_eq!(ev[0].status & 0xff_ffff, 6);
    assert_eq!(Host::code(&ev[0]), Completion::ShortPacket as u32);
}

#[test]
fn bad_commands_fail_with_their_codes() {
    let mut h = host();
    h.start();
    for slot in [0u8, 9, 3] {
        let e = h.command(trb(
            kind::ADDRESS_DEVICE,
            input_ctx(1),
            0,
            u32::from(slot) << 24,
        ));
        assert_eq!(Host::code(&e), Completion::SlotNotEnabled as u32);
    }
    let e = h.command(trb(kind::NOOP_COMMAND, 0, 0, 0));
    assert_eq!(Host::code(&e), Completion::Success as u32);
    let e = h.command(trb(kind::GET_PORT_BANDWIDTH, BUF, 0, 3 << 16));
    assert_eq!(Host::code(&e), Completion::Success as u32);
    assert_eq!(h.buf(9), [0, 100, 100, 100, 100, 100, 100, 100, 100]);
    let e = h.command(trb(kind::GET_PORT_BANDWIDTH, 0xffff_0000, 0, 3 << 16));
    assert_eq!(Host::code(&e), Completion::Parameter as u32);
    let e = h.command(trb(kind::HOST_CONTROLLER, 0, 0, 0));
    assert_eq!(Host::code(&e), Completion::TrbError as u32);
    let slot = h.command(trb(kind::ENABLE_SLOT, 0, 0, 0)).slot();
    // An input context outside guest memory; a port without a device or not reset.
    let e = h.command(trb(
        kind::ADDRESS_DEVICE,
        0xffff_0000,
        0,
        u32::from(slot) << 24,
    ));
    assert_eq!(Host::code(&e), Completion::Parameter as u32);
    let input = input_ctx(slot);
    let mut ctrl = [0u32; 8];
    ctrl[1] = 0b11;
    context::write(&h.mem, input, &ctrl).unwrap();
    for port in [1u32, 3, 200] {
        let mut sc = [0u32; 8];
        sc[1] = port << 16;
        context::write(&h.mem, context::input(input, 0), &sc).unwrap();
        let e = h.command(trb(kind::ADDRESS_DEVICE, input, 0, u32::from(slot) << 24));
        assert_eq!(
            Host::code(&e),
            Completion::Transaction as u32,
            "port {port}"
        );
    }
    let e = h.command(trb(kind::EVALUATE_CONTEXT, input, 0, u32::from(slot) << 24));
    assert_eq!(Host::code(&e), Completion::ContextState as u32);
    let e = h.command(trb(
        kind::CONFIGURE_ENDPOINT,
        input,
        0,
        u32::from(slot) << 24,
    ));
    assert_eq!(Host::code(&e), Completion::ContextState as u32);
    let e = h.command(trb(kind::DISABLE_SLOT, 0, 0, u32::from(slot) << 24));
    assert_eq!(Host::code(&e), Completion::Success as u32);
    // All slots taken: the ninth Enable Slot fails.
    for _ in 0..8 {
        let e = h.command(trb(kind::ENABLE_SLOT, 0, 0, 0));
        assert_eq!(Host::code(&e), Completion::Success as u32);
    }
    let e = h.command(trb(kind::ENABLE_SLOT, 0, 0, 0));
    assert_eq!(Host::code(&e), Completion::NoSlots as u32);
}

#[test]
fn a_full_event_ring_holds_events_until_the_driver_reads() {
    let mut h = host();
    h.start();
    let slot = h.address(1);
    h.configure(slot);
    // Transfers queued without reading events: the ring fills (one slot stays empty).
    let mut tds = Vec::new();
    for i in 0..40u64 {
        tds.push(
            h.queue(
                slot,
                3,
                &[trb(kind::NORMAL, BUF + 8 * i, 8, flag::IOC | flag::ISP)],
            )[0],
        );
    }
    // The driver does not read: no ERDP writes while the reports go out.
    let doorbell = DB + 4 * u64::from(slot);
    h.write(doorbell, 3);
    for i in 0..40 {
        h.input.move_to(i, 0, 100, 100, (i % 2) as u32);
    }
    let mut seen = Vec::new();
    while let Some(e) = h.event() {
        seen.push(e.parameter);
    }
    assert_eq!(seen, tds, "every report's event, in order, none lost");
}

#[test]
fn broken_rings_halt_the_controller_and_the_vm_goes_on() {
    let mut h = host();
    h.start();
    let slot = h.address(1);
    // A transfer ring of Link TRBs that point at each other: host system error.
    h.queue(slot, 1, &[trb(kind::LINK, ring_of(slot, 1), 0, 0)]);
    h.write(DB + 4 * u64::from(slot), 1);
    assert_ne!(h.read(OP + 4) & usbsts::HSE, 0);
    assert_ne!(h.read(OP + 4) & usbsts::HCH, 0);
    // A reset brings it back; a command ring outside guest memory fails the same way.
    h.write(OP, usbcmd::HCRST);
    h.write64(OP + 0x18, 0xffff_0001);
    h.write(OP, usbcmd::RUN);
    h.write(DB, 0);
    assert_ne!(h.read(OP + 4) & usbsts::HSE, 0);
    // Garbage everywhere in the BAR: no panic, and the registers still answer.
    let mut x = 0x1234_5678u32;
    for off in (0..BAR_SIZE as u64).step_by(4) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        h.write(off, x);
        h.read(off);
    }
    h.write(OP, usbcmd::HCRST);
    assert_eq!(h.read(0) & 0xff, 0x40);
    h.start();
    h.address(1);
}

#[test]
fn interrupts_follow_the_event_handler_busy_flag() {
    let mut h = host();
    h.start();
    let irqs = |h: &mut Host| h.irq.read().unwrap_or(0);
    irqs(&mut h);
    // One command: one interrupt; the handler's ERDP write lets the next one through.
    h.command(trb(kind::NOOP_COMMAND, 0, 0, 0));
    assert_eq!(irqs(&mut h), 1);
    h.command(trb(kind::NOOP_COMMAND, 0, 0, 0));
    assert_eq!(irqs(&mut h), 1);
    assert_eq!(
        h.read(RT + 0x20) & 1,
        0,
        "IMAN.IP clears once the message is sent"
    );
    // Two events before the handler runs: one interrupt (EHB is set) ...
    for _ in 0..2 {
        let t = trb(kind::NOOP_COMMAND, 0, 0, u32::from(h.cmd_cycle));
        h.put(h.cmd_at, t);
        h.cmd_at += 16;
    }
    h.write(DB, 0);
    assert_eq!(irqs(&mut h), 1);
    assert_ne!(h.read(RT + 0x38) & 8, 0, "EHB");
    // ... and the handler that read only the first gets another when it clears EHB.
    let mut b = [0u8; 16];
    h.mem.read_slice(&mut b, GuestAddress(h.ev_at)).unwrap();
    h.ev_at += 16;
    h.write64(RT + 0x38, h.ev_at | 8);
    assert_eq!(irqs(&mut h), 1);
    assert!(h.event().is_some());
    assert!(h.event().is_none());
    assert_eq!(h.irq.read().unwrap_or(0), 0);
    // Interrupts off (IMAN.IE): none, until enabled again with one pending.
    h.write(RT + 0x20, 0);
    h.command(trb(kind::NOOP_COMMAND, 0, 0, 0));
    assert_eq!(h.irq.read().unwrap_or(0), 0);
    h.command(trb(kind::NOOP_COMMAND, 0, 0, 0));
    h.write(RT + 0x20, 2);
    assert_eq!(irqs(&mut h), 1);
}
