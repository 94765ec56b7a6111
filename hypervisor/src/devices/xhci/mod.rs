//! An xHCI USB host controller (xHCI 1.2; PCI class 0C 03 30) with a USB tablet and a USB
//! keyboard on its root hub: the input devices Windows drives with its in-box drivers
//! (usbxhci, hidusb, kbdhid, mouhid) from setup on, and OVMF and Linux (xhci_hcd, usbhid)
//! alike. SPICE's absolute pointer reaches the guest through the tablet, its keys through
//! the keyboard, once the guest's driver has configured them; before that (firmware, an OS
//! without USB) they go to the PS/2 devices.
//!
//! - [`controller`]: the registers, ports, event ring and interrupt;
//! - [`commands`]: the command ring;
//! - [`transfer`]: control transfers and reports;
//! - [`ring`], [`trb`], [`context`]: the structures in guest memory.
//!
//! Written by hand: no maintained Rust crate emulates an xHCI controller (crosvm's lives
//! inside crosvm). Everything runs on the thread that touches it (a vCPU for registers and
//! doorbells, the display's for input): each command and transfer is a few guest memory
//! accesses, never I/O, so no I/O thread is needed.
//!
//! The PCI ID is 1b36:000d, the one QEMU registered for its generic xHCI controller: no
//! driver applies a vendor's quirks to it, and drivers bind by class anyway.

pub mod commands;
pub mod context;
pub mod controller;
pub mod ring;
pub mod transfer;
pub mod trb;

use std::sync::{Arc, Mutex};

use vm_memory::GuestMemoryMmap;

use self::controller::Controller;
use crate::devices::bus::lock;
use crate::devices::pci::config::{ClassCode, ConfigSpaceError, PciConfig, PciId};
use crate::devices::pci::msix::{Msix, MSIX_CAP_ID};
use crate::devices::pci::register_bar::{self, BAR_SIZE, MSIX_PBA, MSIX_TABLE};
use crate::devices::pci::PciFunction;
use crate::devices::usb::hid::HidKind;

/// The BAR that holds the registers.
pub const BAR: usize = 0;

/// What moves the USB devices: the display's input goes here once the guest drives them.
#[derive(Clone)]
pub struct UsbInput(Arc<Mutex<Controller>>);

impl UsbInput {
    /// Whether the guest reads the USB keyboard now.
    pub fn keyboard_ready(&self) -> bool {
        lock(&self.0).ready(HidKind::Keyboard)
    }

    /// Whether the guest reads the USB tablet now.
    pub fn tablet_ready(&self) -> bool {
        lock(&self.0).ready(HidKind::Tablet)
    }

    /// A set-1 scancode byte for the keyboard.
    pub fn key(&self, scancode: u8) {
        lock(&self.0).with_device(HidKind::Keyboard, |k| k.key(scancode));
    }

    /// The pointer is at (`x`, `y`) of a `width` x `height` screen with `buttons` held.
    pub fn move_to(&self, x: i32, y: i32, width: u32, height: u32, buttons: u32) {
        lock(&self.0).with_device(HidKind::Tablet, |t| t.pointer(x, y, width, height, buttons));
    }

    /// The pointer's buttons changed.
    pub fn buttons(&self, buttons: u32) {
        lock(&self.0).with_device(HidKind::Tablet, |t| t.buttons(buttons));
    }

    /// Wheel steps (positive: down).
    pub fn wheel(&self, delta: i32) {
        lock(&self.0).with_device(HidKind::Tablet, |t| t.wheel(delta));
    }
}

/// The controller's PCI function.
pub struct Xhci {
    config: PciConfig,
    /// The configuration space as built, which the machine's reset restores.
    initial: PciConfig,
    msix_cap: usize,
    msix: Arc<Mutex<Msix>>,
    controller: Arc<Mutex<Controller>>,
}

impl Xhci {
    /// A controller with the tablet on port 1 and the keyboard on port 2, its registers at
    /// `bar`, its interrupt `msix`'s first vector; and the handle the display moves them by.
    pub fn new(
        msix: Msix,
        bar: u32,
        memory: GuestMemoryMmap,
    ) -> Result<(Self, UsbInput), ConfigSpaceError> {
        let mut config = PciConfig::new(PciId {
            vendor: 0x1b36,
            device: 0x000d,
            revision: 1,
            class: ClassCode {
                class: 0x0c,
                subclass: 0x03,
                prog_if: 0x30,
            },
            subsystem_vendor: 0x1af4,
            subsystem: 0x1100,
        });
        config.set_bar32(BAR, bar, BAR_SIZE)?;
        // SBRN (0x60): USB 3.0; FLADJ (0x61): the default frame length, the driver's to tune.
        config.set_register(0x60 / 4, 0x0000_2030, 0x0000_3f00);
        let (body, writable) = msix.capability(BAR as u8, MSIX_TABLE as u32, MSIX_PBA as u32);
        let msix_cap = config.add_capability(MSIX_CAP_ID, &body, &writable)?;
        let msix = Arc::new(Mutex::new(msix));
        let irq = msix.clone();
        let controller = Arc::new(Mutex::new(Controller::new(
            vec![HidKind::Tablet, HidKind::Keyboard],
            memory,
            Box::new(move || lock(&irq).trigger(0)),
        )));
        Ok((
            Self {
                initial: config.clone(),
                config,
                msix_cap,
                msix,
                controller: controller.clone(),
            },
            UsbInput(controller),
        ))
    }
}

impl PciFunction for Xhci {
    fn config_read(&mut self, reg: usize) -> u32 {
        self.config.read(reg)
    }

    fn config_write(&mut self, reg: usize, offset: usize, data: &[u8]) {
        self.config.write(reg, offset, data);
        lock(&self.msix).sync_control(&self.config, self.msix_cap);
    }

    fn mmio_read(&mut self, addr: u64, data: &mut [u8]) -> bool {
        let Some(off) = register_bar::offset(&self.config, BAR, addr, data.len()) else {
            return false;
        };
        register_bar::read(&self.controller, &self.msix, off, data);
        true
    }

    fn mmio_write(&mut self, addr: u64, data: &[u8]) -> bool {
        let Some(off) = register_bar::offset(&self.config, BAR, addr, data.len()) else {
            return false;
        };
        register_bar::write(&self.controller, &self.msix, off, data);
        true
    }

    fn reset(&mut self) {
        self.config = self.initial.clone();
        lock(&self.msix).reset();
        lock(&self.controller).reset();
    }
}

#[cfg(test)]
mod tests;
