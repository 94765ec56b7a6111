//! Keyboard and pointer: libspice-server's keyboard, mouse (relative) and tablet (absolute)
//! interfaces, forwarded to the embedder's [`ClientEvents`].

use std::ffi::c_int;
use std::sync::Arc;

use spice_server_sys as sys;

use crate::core::guard;
use crate::ClientEvents;

/// The three input instances with their interface tables and the sink; boxed so that the
/// instance addresses stay put while registered.
#[repr(C)]
pub(crate) struct InputBox {
    // Each instance is reached from its callbacks; keyboard first so its pointer is the box's.
    pub(crate) kbd: sys::SpiceKbdInstance,
    pub(crate) mouse: sys::SpiceMouseInstance,
    pub(crate) tablet: sys::SpiceTabletInstance,
    kbd_if: sys::SpiceKbdInterface,
    mouse_if: sys::SpiceMouseInterface,
    tablet_if: sys::SpiceTabletInterface,
    events: Arc<dyn ClientEvents>,
}

// SAFETY: the raw pointers inside are libspice-server's; `events` is Send + Sync.
unsafe impl Send for InputBox {}
// SAFETY: as above.
unsafe impl Sync for InputBox {}

/// The box an instance belongs to.
///
/// # Safety
/// `field` must point at the `kbd`, `mouse` or `tablet` field (as `offset` says) of a live
/// InputBox.
unsafe fn input_box<'a, T>(field: *mut T, offset: usize) -> &'a InputBox {
    // SAFETY: the caller's promise; InputBox is repr(C), so the field sits at `offset`.
    unsafe { &*field.cast::<u8>().sub(offset).cast::<InputBox>() }
}

macro_rules! sink {
    ($ptr:expr, $field:ident) => {
        // SAFETY: libspice-server calls back with the instance we registered, which is the
        // named field of a live InputBox.
        unsafe { input_box($ptr, std::mem::offset_of!(InputBox, $field)) }
            .events
            .as_ref()
    };
}

unsafe extern "C" fn kbd_push(sin: *mut sys::SpiceKbdInstance, frag: u8) {
    guard("kbd_push", (), || sink!(sin, kbd).key(frag))
}

unsafe extern "C" fn kbd_leds(sin: *mut sys::SpiceKbdInstance) -> u8 {
    guard("kbd_leds", 0, || sink!(sin, kbd).keyboard_leds())
}

unsafe extern "C" fn mouse_motion(
    sin: *mut sys::SpiceMouseInstance,
    dx: c_int,
    dy: c_int,
    dz: c_int,
    buttons: u32,
) {
    guard("mouse_motion", (), || {
        sink!(sin, mouse).pointer_relative(dx, dy, dz, buttons)
    })
}

unsafe extern "C" fn mouse_buttons(sin: *mut sys::SpiceMouseInstance, buttons: u32) {
    // The relative mouse's buttons belong to the relative device: a motion of zero.
    guard("mouse_buttons", (), || {
        sink!(sin, mouse).pointer_relative(0, 0, 0, buttons)
    })
}

unsafe extern "C" fn tablet_size(_sin: *mut sys::SpiceTabletInstance, _w: c_int, _h: c_int) {}

unsafe extern "C" fn tablet_position(
    sin: *mut sys::SpiceTabletInstance,
    x: c_int,
    y: c_int,
    buttons: u32,
) {
    guard("tablet_position", (), || {
        sink!(sin, tablet).pointer_absolute(x, y, buttons)
    })
}

unsafe extern "C" fn tablet_wheel(sin: *mut sys::SpiceTabletInstance, motion: c_int, buttons: u32) {
    guard("tablet_wheel", (), || {
        sink!(sin, tablet).wheel(motion, buttons)
    })
}

unsafe extern "C" fn tablet_buttons(sin: *mut sys::SpiceTabletInstance, buttons: u32) {
    guard("tablet_buttons", (), || sink!(sin, tablet).buttons(buttons))
}

fn base(type_: &'static std::ffi::CStr, major: u32, minor: u32) -> sys::SpiceBaseInterface {
    sys::SpiceBaseInterface {
        type_: type_.as_ptr(),
        description: c"tessera input".as_ptr(),
        major_version: major,
        minor_version: minor,
    }
}

impl InputBox {
    /// The input instances, reporting to `events`.
    pub(crate) fn new(events: Arc<dyn ClientEvents>) -> Box<Self> {
        let null = sys::SpiceBaseInstance {
            sif: std::ptr::null(),
        };
        let mut b = Box::new(InputBox {
            kbd: sys::SpiceKbdInstance {
                base: null,
                st: std::ptr::null_mut(),
            },
            mouse: sys::SpiceMouseInstance {
                base: null,
                st: std::ptr::null_mut(),
            },
            tablet: sys::SpiceTabletInstance {
                base: null,
                st: std::ptr::null_mut(),
            },
            kbd_if: sys::SpiceKbdInterface {
                base: base(
                    c"keyboard",
                    sys::SPICE_INTERFACE_KEYBOARD_MAJOR,
                    sys::SPICE_INTERFACE_KEYBOARD_MINOR,
                ),
                push_scan_freg: Some(kbd_push),
                get_leds: Some(kbd_leds),
            },
            mouse_if: sys::SpiceMouseInterface {
                base: base(
                    c"mouse",
                    sys::SPICE_INTERFACE_MOUSE_MAJOR,
                    sys::SPICE_INTERFACE_MOUSE_MINOR,
                ),
                motion: Some(mouse_motion),
                buttons: Some(mouse_buttons),
            },
            tablet_if: sys::SpiceTabletInterface {
                base: base(
                    c"tablet",
                    sys::SPICE_INTERFACE_TABLET_MAJOR,
                    sys::SPICE_INTERFACE_TABLET_MINOR,
                ),
                set_logical_size: Some(tablet_size),
                position: Some(tablet_position),
                wheel: Some(tablet_wheel),
                buttons: Some(tablet_buttons),
            },
            events,
        });
        b.kbd.base.sif = &raw const b.kbd_if.base;
        b.mouse.base.sif = &raw const b.mouse_if.base;
        b.tablet.base.sif = &raw const b.tablet_if.base;
        b
    }
}
