//! The libspice-client-glib functions this crate calls, declared by hand: bindgen over its
//! headers would drag in all of GLib/GObject/GIO, which the glib crate already binds, for the
//! dozen plain C functions below (signatures from spice-client-glib 0.42's headers, stable
//! since 0.35). Objects are passed as GObject pointers; the glib crate owns their references.

use std::ffi::{c_int, c_uint};

use glib::ffi::{gboolean, GError, GType};
use glib::gobject_ffi::GObject;

/// `SPICE_SURFACE_FMT_*` (spice-protocol enums.h).
pub const SURFACE_FMT_16_555: c_int = 16;
pub const SURFACE_FMT_16_565: c_int = 80;
pub const SURFACE_FMT_32_XRGB: c_int = 32;
pub const SURFACE_FMT_32_ARGB: c_int = 96;

/// `SpiceDisplayPrimary` (channel-display.h).
#[repr(C)]
pub struct DisplayPrimary {
    pub format: c_int,
    pub width: c_int,
    pub height: c_int,
    pub stride: c_int,
    pub shmid: c_int,
    pub data: *mut u8,
    pub marked: gboolean,
}

impl Default for DisplayPrimary {
    fn default() -> Self {
        DisplayPrimary {
            format: 0,
            width: 0,
            height: 0,
            stride: 0,
            shmid: 0,
            data: std::ptr::null_mut(),
            marked: 0,
        }
    }
}

#[link(name = "spice-client-glib-2.0")]
extern "C" {
    pub fn spice_session_get_type() -> GType;
    pub fn spice_session_connect(session: *mut GObject) -> gboolean;
    pub fn spice_session_disconnect(session: *mut GObject);
    pub fn spice_channel_connect(channel: *mut GObject) -> gboolean;
    pub fn spice_channel_get_error(channel: *mut GObject) -> *const GError;
    pub fn spice_display_channel_get_primary(
        channel: *mut GObject,
        surface_id: u32,
        primary: *mut DisplayPrimary,
    ) -> gboolean;
    pub fn spice_inputs_channel_position(
        channel: *mut GObject,
        x: c_int,
        y: c_int,
        display: c_int,
        button_state: c_int,
    );
    pub fn spice_inputs_channel_motion(channel: *mut GObject, dx: c_int, dy: c_int, state: c_int);
    pub fn spice_inputs_channel_button_press(channel: *mut GObject, button: c_int, state: c_int);
    pub fn spice_inputs_channel_button_release(channel: *mut GObject, button: c_int, state: c_int);
    pub fn spice_inputs_channel_key_press(channel: *mut GObject, scancode: c_uint);
    pub fn spice_inputs_channel_key_release(channel: *mut GObject, scancode: c_uint);
    pub fn spice_main_channel_update_display_enabled(
        channel: *mut GObject,
        id: c_int,
        enabled: gboolean,
        update: gboolean,
    );
    pub fn spice_main_channel_update_display(
        channel: *mut GObject,
        id: c_int,
        x: c_int,
        y: c_int,
        width: c_int,
        height: c_int,
        update: gboolean,
    );
}

// Safe wrappers. Each takes the glib crate's Object, which holds a reference for the call's
// duration; the caller makes sure the object is of the class the function wants (the session
// module checks "channel-type" before it keeps a channel as display, inputs or main).

fn raw(obj: &glib::Object) -> *mut GObject {
    use glib::translate::ToGlibPtr;
    obj.to_glib_none().0
}

/// The `SpiceSession` GType.
pub fn session_type() -> glib::Type {
    use glib::translate::FromGlib;
    // SAFETY: a plain getter that registers the class on first use; no arguments.
    unsafe { glib::Type::from_glib(spice_session_get_type()) }
}

/// Starts connecting the session's main channel; false when it cannot start at all.
pub fn session_connect(session: &glib::Object) -> bool {
    // SAFETY: `session` is a live SpiceSession (made from session_type()).
    unsafe { spice_session_connect(raw(session)) != 0 }
}

/// Closes every channel of the session; "disconnected" follows.
pub fn session_disconnect(session: &glib::Object) {
    // SAFETY: `session` is a live SpiceSession.
    unsafe { spice_session_disconnect(raw(session)) }
}

/// Starts linking a channel the main channel announced.
pub fn channel_connect(channel: &glib::Object) -> bool {
    // SAFETY: `channel` is a live SpiceChannel (from the session's channel-new signal).
    unsafe { spice_channel_connect(raw(channel)) != 0 }
}

/// The message of the channel's last error, if it has one.
pub fn channel_error(channel: &glib::Object) -> Option<String> {
    // SAFETY: `channel` is a live SpiceChannel; the returned GError (or null) belongs to it
    // and is read before anything else can run on this thread.
    unsafe {
        let e = spice_channel_get_error(raw(channel));
        if e.is_null() || (*e).message.is_null() {
            return None;
        }
        Some(
            std::ffi::CStr::from_ptr((*e).message)
                .to_string_lossy()
                .into_owned(),
        )
    }
}

/// Calls `f` with the display channel's primary surface: its bytes, stride, format code,
/// width and height. `None` (and `f` not called) while there is no usable surface.
pub fn with_primary<R>(
    display: &glib::Object,
    f: impl FnOnce(&[u8], usize, c_int, u32, u32) -> R,
) -> Option<R> {
    let mut p = DisplayPrimary::default();
    // SAFETY: `display` is a live SpiceDisplayChannel and `p` a valid out-parameter.
    if unsafe { spice_display_channel_get_primary(raw(display), 0, &mut p) } == 0 {
        return None;
    }
    let (Ok(w), Ok(h), Ok(stride)) = (
        u32::try_from(p.width),
        u32::try_from(p.height),
        usize::try_from(p.stride),
    ) else {
        return None;
    };
    if p.data.is_null() || stride == 0 {
        return None;
    }
    let len = stride.checked_mul(h as usize)?;
    // SAFETY: spice-client-glib allocates the primary as `stride * height` bytes at `data` and
    // frees it only on display-primary-destroy, which runs on this thread, not during `f`.
    let bytes = unsafe { std::slice::from_raw_parts(p.data, len) };
    Some(f(bytes, stride, p.format, w, h))
}

/// Sends the client's absolute pointer position (client mouse mode).
pub fn inputs_position(inputs: &glib::Object, x: i32, y: i32, buttons: i32) {
    // SAFETY: `inputs` is a live SpiceInputsChannel; plain integers.
    unsafe { spice_inputs_channel_position(raw(inputs), x, y, 0, buttons) }
}

/// Sends relative pointer motion (server mouse mode).
pub fn inputs_motion(inputs: &glib::Object, dx: i32, dy: i32, buttons: i32) {
    // SAFETY: `inputs` is a live SpiceInputsChannel; plain integers.
    unsafe { spice_inputs_channel_motion(raw(inputs), dx, dy, buttons) }
}

/// A button went down (`down`) or up; `buttons` is the state after the change.
pub fn inputs_button(inputs: &glib::Object, button: i32, down: bool, buttons: i32) {
    // SAFETY: `inputs` is a live SpiceInputsChannel; plain integers.
    unsafe {
        if down {
            spice_inputs_channel_button_press(raw(inputs), button, buttons);
        } else {
            spice_inputs_channel_button_release(raw(inputs), button, buttons);
        }
    }
}

/// A key (PC XT scancode; 0x100 marks an 0xE0-prefixed one) went down or up.
pub fn inputs_key(inputs: &glib::Object, scancode: u32, down: bool) {
    // SAFETY: `inputs` is a live SpiceInputsChannel; a plain integer.
    unsafe {
        if down {
            spice_inputs_channel_key_press(raw(inputs), scancode);
        } else {
            spice_inputs_channel_key_release(raw(inputs), scancode);
        }
    }
}

/// Asks the guest (through the SPICE agent) for a `width` x `height` single monitor.
pub fn main_request_resolution(main: &glib::Object, width: i32, height: i32) {
    // SAFETY: `main` is a live SpiceMainChannel; plain integers. `update` = TRUE makes the
    // channel send the monitors configuration (after its own short coalescing delay).
    unsafe {
        spice_main_channel_update_display_enabled(raw(main), 0, 1, 0);
        spice_main_channel_update_display(raw(main), 0, 0, 0, width, height, 1);
    }
}
