//! The controller's registers (xHCI 1.2, chapter 5) and state: capabilities, operational
//! registers with the root hub's ports, the runtime registers of its one interrupter, the
//! doorbells; and the event ring with its interrupt. Commands and transfers are in
//! [`super::commands`] and [`super::transfer`].
//!
//! The layout of BAR 0 (4 KiB, the MSI-X table after it in [`super`]):
//! 0x000 capabilities, 0x020 extended capabilities (two Supported Protocol: USB 2.0 ports
//! 1-4, USB 3.0 ports 5-8), 0x040 operational registers, 0x440 port registers, 0x600
//! runtime registers, 0x700 doorbells.

use std::time::Instant;

use vm_memory::GuestMemoryMmap;

use super::context::EpState;
use super::ring::{EventRing, Ring, RingError};
use super::trb::Trb;
use crate::devices::pci::register_bar::DwordRegisters;
use crate::devices::usb::hid::{Hid, HidKind};

/// Device slots.
pub const MAX_SLOTS: usize = 8;
/// Root hub ports: USB 2.0 ports 1-4, USB 3.0 ports 5-8.
pub const PORTS: usize = 8;
/// USB 2.0 ports (the first ones).
const USB2_PORTS: usize = 4;

const CAPLENGTH: u64 = 0x40;
const EXT_CAPS: u64 = 0x20;
const OP: u64 = CAPLENGTH;
const PORT_REGS: u64 = OP + 0x400;
const RUNTIME: u64 = 0x600;
const INTERRUPTER: u64 = RUNTIME + 0x20;
const DOORBELLS: u64 = 0x700;
/// End of the registers in BAR 0.
pub const REGS_END: u64 = DOORBELLS + 4 * (MAX_SLOTS as u64 + 1);

/// Capability registers, by dword.
const CAPS: [u32; 16] = [
    // CAPLENGTH, HCIVERSION 1.0.
    0x0100_0000 | CAPLENGTH as u32,
    // HCSPARAMS1: slots, one interrupter, ports.
    MAX_SLOTS as u32 | 1 << 8 | (PORTS as u32) << 24,
    // HCSPARAMS2: ERST Max 4 (16 segments), no scratchpad.
    4 << 4,
    // HCSPARAMS3: no U1/U2 exit latencies.
    0,
    // HCCPARAMS1: 64-bit addressing, 32-byte contexts, no streams, no secondary stream IDs,
    // extended capabilities at dword 8.
    1 | 1 << 7 | ((EXT_CAPS / 4) as u32) << 16,
    DOORBELLS as u32,
    RUNTIME as u32,
    // HCCPARAMS2.
    0,
    // Supported Protocol: USB 2.0 on ports 1-4, next capability 4 dwords on.
    0x0200_0402,
    u32::from_le_bytes(*b"USB "),
    1 | (USB2_PORTS as u32) << 8,
    0,
    // Supported Protocol: USB 3.0 on ports 5-8, the last capability.
    0x0300_0002,
    u32::from_le_bytes(*b"USB "),
    (USB2_PORTS as u32 + 1) | ((PORTS - USB2_PORTS) as u32) << 8,
    0,
];

/// USBCMD bits.
pub mod usbcmd {
    pub const RUN: u32 = 1 << 0;
    pub const HCRST: u32 = 1 << 1;
    pub const INTE: u32 = 1 << 2;
    pub const HSEE: u32 = 1 << 3;
    /// Bits kept as written: R/S, INTE, HSEE, and EWE, EU3S, CME, ETE (bits 10-13).
    pub const KEPT: u32 = RUN | INTE | HSEE | 0x3c00;
}

/// USBSTS bits.
pub mod usbsts {
    pub const HCH: u32 = 1 << 0;
    pub const HSE: u32 = 1 << 2;
    pub const EINT: u32 = 1 << 3;
    pub const PCD: u32 = 1 << 4;
    pub const SRE: u32 = 1 << 10;
    /// Cleared by writing 1.
    pub const RW1C: u32 = HSE | EINT | PCD | SRE;
}

/// PORTSC bits.
pub mod portsc {
    pub const CCS: u32 = 1 << 0;
    pub const PED: u32 = 1 << 1;
    pub const PR: u32 = 1 << 4;
    pub const PLS_SHIFT: u32 = 5;
    pub const PLS: u32 = 0xf << PLS_SHIFT;
    pub const PP: u32 = 1 << 9;
    pub const SPEED_SHIFT: u32 = 10;
    pub const LWS: u32 = 1 << 16;
    pub const CSC: u32 = 1 << 17;
    pub const PEC: u32 = 1 << 18;
    pub const WRC: u32 = 1 << 19;
    pub const OCC: u32 = 1 << 20;
    pub const PRC: u32 = 1 << 21;
    pub const PLC: u32 = 1 << 22;
    pub const CEC: u32 = 1 << 23;
    /// Change bits, cleared by writing 1.
    pub const CHANGES: u32 = CSC | PEC | WRC | OCC | PRC | PLC | CEC;
    /// Wake enables, kept as written.
    pub const WAKE: u32 = 0x7 << 25;
}

/// Port link states.
mod pls {
    pub const U0: u32 = 0;
    pub const U3: u32 = 3;
    pub const RX_DETECT: u32 = 5;
    pub const POLLING: u32 = 7;
    pub const RESUME: u32 = 15;
}

const IMAN_IP: u32 = 1 << 0;
const IMAN_IE: u32 = 1 << 1;
const ERDP_EHB: u64 = 1 << 3;

/// One root hub port.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Port {
    pub enabled: bool,
    pub link: u32,
    pub changes: u32,
    pub wake: u32,
    pub pmsc: u32,
}

/// One device slot.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Slot {
    pub enabled: bool,
    /// The port (0-based) its device is on, once addressed.
    pub port: Option<usize>,
    /// The output device context (from the DCBAA).
    pub context: u64,
    pub state: u32,
    /// Endpoints by DCI (0 unused).
    pub endpoints: [Endpoint; 32],
}

/// One endpoint of a slot.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Endpoint {
    pub state: EpState,
    pub ring: Ring,
    /// The driver rang this endpoint's doorbell since it was configured: it reads it.
    pub polled: bool,
}

/// The controller's state, shared by the vCPUs (registers) and the display (input).
pub struct Controller {
    pub(super) mem: GuestMemoryMmap,
    irq: Box<dyn Fn() + Send>,
    started: Instant,
    usbcmd: u32,
    usbsts: u32,
    dnctrl: u32,
    config: u32,
    pub(super) dcbaap: u64,
    pub(super) command_ring: Ring,
    /// Command Ring Running.
    pub(super) crr: bool,
    iman: u32,
    imod: u32,
    erstsz: u32,
    erstba: u64,
    erdp: u64,
    events: EventRing,
    pub(super) ports: [Port; PORTS],
    pub(super) slots: [Slot; MAX_SLOTS],
    /// The devices: `devices[i]` is on port i + 1 (the first USB 2.0 ports).
    pub(super) devices: Vec<Hid>,
}

impl Controller {
    /// A halted controller with `devices` on its first USB 2.0 ports, raising its interrupt
    /// through `irq`.
    pub fn new(devices: Vec<HidKind>, mem: GuestMemoryMmap, irq: Box<dyn Fn() + Send>) -> Self {
        let mut c = Self {
            mem,
            irq,
            started: Instant::now(),
            usbcmd: 0,
            usbsts: 0,
            dnctrl: 0,
            config: 0,
            dcbaap: 0,
            command_ring: Ring::default(),
            crr: false,
            iman: 0,
            imod: 0,
            erstsz: 0,
            erstba: 0,
            erdp: 0,
            events: EventRing::default(),
            ports: [Port::default(); PORTS],
            slots: [Slot::default(); MAX_SLOTS],
            devices: devices.into_iter().take(USB2_PORTS).map(Hid::new).collect(),
        };
        c.reset();
        c
    }

    /// The controller's reset (HCRST, and the machine's): registers, slots and ports as at
    /// power-on, the devices reset on their ports.
    pub fn reset(&mut self) {
        self.usbcmd = 0;
        self.usbsts = usbsts::HCH;
        self.dnctrl = 0;
        self.config = 0;
        self.dcbaap = 0;
        self.command_ring = Ring::default();
        self.crr = false;
        self.iman = 0;
        self.imod = 4000;
        self.erstsz = 0;
        self.erstba = 0;
        self.erdp = 0;
        self.events = EventRing::default();
        self.slots = [Slot::default(); MAX_SLOTS];
        for d in &mut self.devices {
            d.reset();
        }
        let devices = self.devices.len();
        for (i, p) in self.ports.iter_mut().enumerate() {
            let connected = i < devices;
            *p = Port {
                enabled: false,
                // A USB 2.0 device waits in Polling for the port reset that enables it.
                link: if connected {
                    pls::POLLING
                } else {
                    pls::RX_DETECT
                },
                changes: if connected { portsc::CSC } else { 0 },
                wake: 0,
                pmsc: 0,
            };
        }
    }

    /// CONFIG.MaxSlotsEn: the slots the driver uses.
    pub(super) fn max_slots_enabled(&self) -> usize {
        (self.config & 0xff) as usize
    }

    pub(super) fn running(&self) -> bool {
        self.usbcmd & usbcmd::RUN != 0 && self.usbsts & usbsts::HSE == 0
    }

    /// Reads the dword at `off` of BAR 0.
    pub fn read(&self, off: u64) -> u32 {
        match off {
            0..CAPLENGTH => CAPS[(off / 4) as usize],
            _ if off == OP => self.usbcmd,
            _ if off == OP + 0x04 => self.usbsts,
            // PAGESIZE: 4 KiB.
            _ if off == OP + 0x08 => 1,
            _ if off == OP + 0x14 => self.dnctrl,
            // CRCR reads 0 but for Command Ring Running.
            _ if off == OP + 0x18 => u32::from(self.crr) << 3,
            _ if off == OP + 0x30 => self.dcbaap as u32,
            _ if off == OP + 0x34 => (self.dcbaap >> 32) as u32,
            _ if off == OP + 0x38 => self.config,
            _ if (PORT_REGS..PORT_REGS + 0x10 * PORTS as u64).contains(&off) => {
                let i = ((off - PORT_REGS) / 0x10) as usize;
                match off % 0x10 {
                    0 => self.portsc(i),
                    4 => self.ports[i].pmsc,
                    _ => 0,
                }
            }
            // MFINDEX: 125-us microframes while running.
            _ if off == RUNTIME && self.running() => {
                (self.started.elapsed().as_micros() / 125) as u32 & 0x3fff
            }
            _ if off == INTERRUPTER => self.iman,
            _ if off == INTERRUPTER + 0x04 => self.imod,
            _ if off == INTERRUPTER + 0x08 => self.erstsz,
            _ if off == INTERRUPTER + 0x10 => self.erstba as u32,
            _ if off == INTERRUPTER + 0x14 => (self.erstba >> 32) as u32,
            _ if off == INTERRUPTER + 0x18 => self.erdp as u32,
            _ if off == INTERRUPTER + 0x1c => (self.erdp >> 32) as u32,
            _ => 0,
        }
    }

    fn portsc(&self, i: usize) -> u32 {
        let p = &self.ports[i];
        let mut v = portsc::PP | p.changes | p.wake | p.link << portsc::PLS_SHIFT;
        if i < self.devices.len() {
            // Connected, full speed (speed ID 1): the HID devices are USB 1.1 devices.
            v |= portsc::CCS | 1 << portsc::SPEED_SHIFT;
        }
        if p.enabled {
            v |= portsc::PED;
        }
        v
    }

    /// Writes the dword at `off` of BAR 0.
    pub fn write(&mut self, off: u64, v: u32) {
        match off {
            _ if off == OP => self.write_usbcmd(v),
            _ if off == OP + 0x04 => self.usbsts &= !(v & usbsts::RW1C),
            _ if off == OP + 0x14 => self.dnctrl = v & 0xffff,
            _ if off == OP + 0x18 => self.write_crcr(u64::from(v), 0xffff_ffff),
            _ if off == OP + 0x1c => self.write_crcr(u64::from(v) << 32, !0xffff_ffff),
            _ if off == OP + 0x30 => {
                self.dcbaap = (self.dcbaap & !0xffff_ffff) | u64::from(v & !0x3f)
            }
            _ if off == OP + 0x34 => self.dcbaap = (self.dcbaap & 0xffff_ffff) | u64::from(v) << 32,
            _ if off == OP + 0x38 => self.config = (v & 0xff).min(MAX_SLOTS as u32) | v & 0x300,
            _ if (PORT_REGS..PORT_REGS + 0x10 * PORTS as u64).contains(&off) => {
                let i = ((off - PORT_REGS) / 0x10) as usize;
                match off % 0x10 {
                    0 => self.write_portsc(i, v),
                    4 => self.ports[i].pmsc = v,
                    _ => {}
                }
            }
            _ if off == INTERRUPTER => {
                let enabling = self.iman & IMAN_IE == 0 && v & IMAN_IE != 0;
                self.iman = (self.iman & !(v & IMAN_IP) & !IMAN_IE) | (v & IMAN_IE);
                if enabling {
                    self.fire_if_pending();
                }
            }
            _ if off == INTERRUPTER + 0x04 => self.imod = v,
            _ if off == INTERRUPTER + 0x08 => self.erstsz = v & 0xffff,
            _ if off == INTERRUPTER + 0x10 => {
                self.erstba = (self.erstba & !0xffff_ffff) | u64::from(v & !0x3f);
                self.setup_event_ring();
            }
            _ if off == INTERRUPTER + 0x14 => {
                self.erstba = (self.erstba & 0xffff_ffff) | u64::from(v) << 32;
                self.setup_event_ring();
            }
            _ if off == INTERRUPTER + 0x18 => {
                // EHB is cleared by writing 1; the pointer's low bits are the segment index.
                let ehb = if u64::from(v) & ERDP_EHB != 0 {
                    0
                } else {
                    self.erdp & ERDP_EHB
                };
                self.erdp = (self.erdp & !0xffff_ffff) | u64::from(v) & !0xf | ehb;
                self.dequeued();
            }
            _ if off == INTERRUPTER + 0x1c => {
                self.erdp = (self.erdp & 0xffff_ffff) | u64::from(v) << 32;
                self.dequeued();
            }
            _ if (DOORBELLS..REGS_END).contains(&off) => {
                let target = (off - DOORBELLS) / 4;
                if self.running() {
                    if target == 0 {
                        if v & 0xff == 0 {
                            self.run_commands();
                        }
                    } else {
                        self.run_endpoint(target as u8, (v & 0xff) as u8);
                    }
                }
            }
            _ => {}
        }
    }

    fn write_usbcmd(&mut self, v: u32) {
        if v & usbcmd::HCRST != 0 {
            self.reset();
            return;
        }
        let was_running = self.usbcmd & usbcmd::RUN != 0;
        let enabling = self.usbcmd & usbcmd::INTE == 0 && v & usbcmd::INTE != 0;
        self.usbcmd = v & usbcmd::KEPT;
        if self.usbcmd & usbcmd::RUN != 0 {
            self.usbsts &= !usbsts::HCH;
            if !was_running {
                self.started = Instant::now();
            }
        } else {
            self.usbsts |= usbsts::HCH;
            self.crr = false;
        }
        if enabling {
            self.fire_if_pending();
        }
    }

    fn write_crcr(&mut self, v: u64, mask: u64) {
        if self.crr {
            // Command Stop or Abort: commands run at once, so none is ever in flight; the
            // ring stops where it is and says so.
            if v & 0b110 != 0 && mask & 0b110 != 0 {
                self.crr = false;
                let at = self.command_ring.dequeue;
                self.post(Trb::command_completion(
                    at,
                    super::trb::Completion::CommandRingStopped,
                    0,
                ));
            }
            return;
        }
        let p = (self.command_ring.pointer() & !mask) | (v & mask);
        self.command_ring = Ring::at(p & !0x3e);
    }

    fn write_portsc(&mut self, i: usize, v: u32) {
        let p = &mut self.ports[i];
        let before = p.changes;
        p.changes &= !(v & portsc::CHANGES);
        p.wake = v & portsc::WAKE;
        let connected = i < self.devices.len();
        if v & portsc::PED != 0 {
            // Written 1: the port is disabled (software's disable sets no change bit).
            p.enabled = false;
        }
        if v & portsc::PR != 0 && connected {
            // The reset completes at once: the device is reset and the port enabled, U0.
            self.devices[i].reset();
            let p = &mut self.ports[i];
            p.enabled = true;
            p.link = pls::U0;
            p.changes |= portsc::PRC;
        } else if v & portsc::LWS != 0 && connected {
            let target = (v & portsc::PLS) >> portsc::PLS_SHIFT;
            let p = &mut self.ports[i];
            match target {
                pls::U0 => {
                    if matches!(p.link, pls::U3 | pls::RESUME) {
                        p.changes |= portsc::PLC;
                    }
                    p.link = pls::U0;
                }
                pls::U3 | pls::RESUME => p.link = target,
                _ => {}
            }
        }
        if self.ports[i].changes & !before != 0 {
            self.port_event(i);
        }
    }

    /// A port's change bits rose: a Port Status Change Event, while running.
    fn port_event(&mut self, i: usize) {
        self.usbsts |= usbsts::PCD;
        if self.running() {
            self.post(Trb::port_status_change(i as u8 + 1));
        }
    }

    fn setup_event_ring(&mut self) {
        match EventRing::setup(&self.mem, self.erstba, self.erstsz) {
            Ok(r) => self.events = r,
            // The low half of a 64-bit address is written first: wait for the rest.
            Err(_) => self.events = EventRing::default(),
        }
    }

    fn dequeued(&mut self) {
        self.events.set_dequeue(self.erdp & !0xf);
        match self.events.flush(&self.mem) {
            Ok(true) => self.signal(),
            Ok(false) => self.raise_if_unread(),
            Err(e) => self.host_error(e),
        }
    }

    /// Writes `event` to the event ring and interrupts.
    pub(super) fn post(&mut self, event: Trb) {
        tracing::trace!(
            kind = event.kind(),
            parameter = format_args!("{:#x}", event.parameter),
            status = format_args!("{:#x}", event.status),
            control = format_args!("{:#x}", event.control),
            "xHCI: event"
        );
        match self.events.push(&self.mem, event) {
            Ok(true) => self.signal(),
            Ok(false) => {}
            Err(e) => self.host_error(e),
        }
    }

    /// An event was written. Unless the driver's handler is busy (ERDP.EHB), EHB and IMAN.IP
    /// rise and the interrupt fires (xHCI 1.2, 4.17.2); events written while it is busy are
    /// the handler's to find, and those it missed interrupt again when it clears EHB.
    fn signal(&mut self) {
        self.usbsts |= usbsts::EINT;
        if self.erdp & ERDP_EHB == 0 {
            self.erdp |= ERDP_EHB;
            self.iman |= IMAN_IP;
            self.fire();
        }
    }

    /// The driver cleared EHB with events still unread (written after it last looked): they
    /// interrupt again.
    fn raise_if_unread(&mut self) {
        if self.erdp & ERDP_EHB == 0 && self.events.unread() {
            self.signal();
        }
    }

    /// Interrupts were enabled while one was pending: it fires now.
    fn fire_if_pending(&mut self) {
        if self.iman & IMAN_IP != 0 {
            self.fire();
        }
    }

    /// Sends the interrupt if enabled. It is a message (MSI-X), so IMAN.IP clears once it is
    /// sent (5.5.2.1): drivers do not clear it themselves then (Linux's xhci_hcd does not).
    fn fire(&mut self) {
        if self.iman & IMAN_IE != 0 && self.usbcmd & usbcmd::INTE != 0 {
            (self.irq)();
            self.iman &= !IMAN_IP;
        }
    }

    /// A guest memory access the controller needed failed (a ring or context outside RAM):
    /// Host System Error, the controller halts (xHCI 1.2, 4.24.1). The VM goes on.
    pub(super) fn host_error(&mut self, e: RingError) {
        tracing::warn!(error = %e, "xHCI: host system error, controller halted");
        self.usbsts |= usbsts::HSE | usbsts::HCH;
        self.usbcmd &= !usbcmd::RUN;
        self.crr = false;
    }

    /// Whether the driver runs the controller, has configured `kind` and reads its reports
    /// (it queued a transfer on the running endpoint): input for it goes there. A device
    /// configured by a bus driver with no HID driver behind it, or one whose driver closed
    /// it (the endpoint stopped), is not read, and its input goes elsewhere.
    pub fn ready(&self, kind: HidKind) -> bool {
        let Some(port) = self.device_port(kind) else {
            return false;
        };
        self.running()
            && self.devices[port].configured()
            && self
                .report_slot(port)
                .is_some_and(|id| self.slot(id).endpoints[super::transfer::REPORT_DCI].polled)
    }

    /// The device of `kind`, with its port.
    pub(super) fn device_port(&self, kind: HidKind) -> Option<usize> {
        self.devices.iter().position(|d| d.kind() == kind)
    }

    /// Gives `f` the device of `kind`, then hands its reports to a waiting transfer.
    pub fn with_device(&mut self, kind: HidKind, f: impl FnOnce(&mut Hid)) {
        let Some(port) = self.device_port(kind) else {
            return;
        };
        f(&mut self.devices[port]);
        self.deliver(port);
    }
}

impl DwordRegisters for Controller {
    fn read(&self, offset: u64) -> u32 {
        Controller::read(self, offset)
    }

    fn write(&mut self, offset: u64, value: u32) {
        Controller::write(self, offset, value)
    }
}
