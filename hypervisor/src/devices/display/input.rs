//! Where a SPICE client's keys and pointer go. Keys: the USB keyboard once the guest's
//! driver reads it, else the PS/2 keyboard (firmware, a boot loader, an OS without USB).
//! The absolute pointer: the virtio tablet when its driver is up (the paravirtual path),
//! else the USB tablet once its driver reads it (Windows out of the box), else the virtio
//! tablet's queue. Relative motion (a client without absolute pointing) goes to the PS/2
//! mouse. One device at a time, so a guest that drives two never sees a click twice.

use std::sync::{Arc, Mutex};

use crate::devices::bus::lock;
use crate::devices::legacy::i8042::I8042;
use crate::devices::virtio::input::TabletHandle;
use crate::devices::xhci::UsbInput;

/// The guest's input devices the display feeds.
#[derive(Clone)]
pub struct InputRoute {
    /// The PS/2 controller: keys, and relative motion for its mouse.
    pub i8042: Arc<Mutex<I8042>>,
    /// The virtio tablet.
    pub tablet: TabletHandle,
    /// The USB keyboard and tablet, when the VM has them.
    pub usb: Option<UsbInput>,
}

/// An absolute pointer: the virtio tablet and the USB tablet alike.
pub trait AbsolutePointer {
    /// The pointer is at (`x`, `y`) of a `width` x `height` screen with `buttons` held.
    fn move_to(&self, x: i32, y: i32, width: u32, height: u32, buttons: u32);
    /// The buttons changed.
    fn buttons(&self, buttons: u32);
    /// Wheel steps (positive: down).
    fn wheel(&self, delta: i32);
}

impl AbsolutePointer for TabletHandle {
    fn move_to(&self, x: i32, y: i32, width: u32, height: u32, buttons: u32) {
        TabletHandle::move_to(self, x, y, width, height, buttons)
    }
    fn buttons(&self, buttons: u32) {
        TabletHandle::buttons(self, buttons)
    }
    fn wheel(&self, delta: i32) {
        TabletHandle::wheel(self, delta)
    }
}

impl AbsolutePointer for UsbInput {
    fn move_to(&self, x: i32, y: i32, width: u32, height: u32, buttons: u32) {
        UsbInput::move_to(self, x, y, width, height, buttons)
    }
    fn buttons(&self, buttons: u32) {
        UsbInput::buttons(self, buttons)
    }
    fn wheel(&self, delta: i32) {
        UsbInput::wheel(self, delta)
    }
}

impl InputRoute {
    /// The absolute pointer an event goes to now.
    fn pointer(&self) -> &dyn AbsolutePointer {
        match &self.usb {
            Some(usb) if !self.tablet.active() && usb.tablet_ready() => usb,
            _ => &self.tablet,
        }
    }

    /// A set-1 scancode byte.
    pub fn key(&self, scancode: u8) {
        match &self.usb {
            Some(usb) if usb.keyboard_ready() => usb.key(scancode),
            _ => lock(&self.i8042).key(scancode),
        }
    }

    /// The absolute pointer is at (`x`, `y`) of a `width` x `height` screen.
    pub fn move_to(&self, x: i32, y: i32, width: u32, height: u32, buttons: u32) {
        self.pointer().move_to(x, y, width, height, buttons);
    }

    /// The absolute pointer's buttons changed.
    pub fn buttons(&self, buttons: u32) {
        self.pointer().buttons(buttons);
    }

    /// Wheel steps (positive: down) with `buttons` held.
    pub fn wheel(&self, delta: i32, buttons: u32) {
        let p = self.pointer();
        p.buttons(buttons);
        p.wheel(delta);
    }

    /// Relative motion: the PS/2 mouse.
    pub fn motion(&self, dx: i32, dy: i32, buttons: u32) {
        lock(&self.i8042).mouse(dx, dy, buttons);
    }
}
