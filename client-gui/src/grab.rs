//! Keyboard capture on X11: while the user works in the desktop, the keys the local window
//! manager would take for itself (Alt+Tab, the Windows key, Ctrl+Alt+arrows) go to the desktop.
//!
//! A window manager takes such combinations with passive grabs; an active keyboard grab
//! outranks them. Grabbed keys are reported to the grabbing connection only, so this module
//! holds its own connection (winit's is not reachable through eframe) and reads the keys on a
//! thread: an X keycode less 8 is the evdev code (the X server's evdev and libinput keymaps),
//! which `keymap::evdev_scancode` turns into the set-1 scancode SPICE carries. Ctrl+Alt
//! pressed and released with no other key in between gives the keyboard back, the chord
//! Horizon and VMware users know. Wayland has no such grab (its keyboard-shortcuts-inhibit
//! protocol is not reachable through winit 0.30): there the capture is simply unavailable.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;

use x11rb::connection::Connection;
use x11rb::protocol::xproto::{
    AtomEnum, ConnectionExt as _, CreateWindowAux, EventMask, GrabMode, GrabStatus, PropMode,
    WindowClass,
};
use x11rb::protocol::Event as XEvent;
use x11rb::rust_connection::RustConnection;
use x11rb::wrapper::ConnectionExt as _;

use crate::keymap;

/// What the capture reports to the session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrabEvent {
    /// A key went down or up (set-1 scancode, 0x100 for the 0xE0 prefix).
    Key { code: u32, down: bool },
    /// The user pressed the release chord; the keyboard is the local desktop's again.
    Released,
}

/// Why the keyboard cannot be captured.
#[derive(Debug, thiserror::Error)]
pub enum GrabError {
    /// The X server could not be reached or refused a request.
    #[error("X11: {0}")]
    X(String),
    /// Another client holds the keyboard (a menu, a screen locker), or the window is hidden.
    #[error("the keyboard is busy ({0:?})")]
    Refused(GrabStatus),
}

fn x(e: impl std::fmt::Display) -> GrabError {
    GrabError::X(e.to_string())
}

/// The keyboard capture for one window.
pub struct KeyboardGrab {
    conn: Arc<RustConnection>,
    window: u32,
    /// Unmapped window of ours: a property change on it wakes the reader to stop.
    waker: u32,
    active: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl KeyboardGrab {
    /// Prepares capture for the X11 `window`; keys and the release go to `tx`, and `wake` is
    /// called after each so that the UI passes them on.
    pub fn new(
        window: u32,
        tx: Sender<GrabEvent>,
        wake: impl Fn() + Send + 'static,
    ) -> Result<Self, GrabError> {
        let (conn, screen) = x11rb::connect(None).map_err(x)?;
        let root = conn.setup().roots[screen].root;
        let waker = conn.generate_id().map_err(x)?;
        conn.create_window(
            0,
            waker,
            root,
            0,
            0,
            1,
            1,
            0,
            WindowClass::INPUT_ONLY,
            0,
            &CreateWindowAux::new().event_mask(EventMask::PROPERTY_CHANGE),
        )
        .map_err(x)?
        .check()
        .map_err(x)?;
        let conn = Arc::new(conn);
        let active = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (conn, active, stop) = (conn.clone(), active.clone(), stop.clone());
            std::thread::Builder::new()
                .name("keyboard-grab".into())
                .spawn(move || read(&conn, &active, &stop, &tx, &wake))
                .map_err(x)?
        };
        Ok(Self {
            conn,
            window,
            waker,
            active,
            stop,
            reader: Some(reader),
        })
    }

    /// Captures the keyboard (again, if the server dropped a grab when the window was hidden).
    pub fn grab(&self) -> Result<(), GrabError> {
        let reply = self
            .conn
            .grab_keyboard(
                false,
                self.window,
                x11rb::CURRENT_TIME,
                GrabMode::ASYNC,
                GrabMode::ASYNC,
            )
            .map_err(x)?
            .reply()
            .map_err(x)?;
        if reply.status != GrabStatus::SUCCESS {
            return Err(GrabError::Refused(reply.status));
        }
        self.active.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Gives the keyboard back.
    pub fn release(&self) {
        self.active.store(false, Ordering::SeqCst);
        let _ = self.conn.ungrab_keyboard(x11rb::CURRENT_TIME);
        let _ = self.conn.flush();
    }

    /// Whether keys go to the desktop through this capture now.
    pub fn active(&self) -> bool {
        self.active.load(Ordering::SeqCst)
    }
}

impl Drop for KeyboardGrab {
    fn drop(&mut self) {
        self.release();
        self.stop.store(true, Ordering::SeqCst);
        let woke = self
            .conn
            .change_property8(
                PropMode::REPLACE,
                self.waker,
                AtomEnum::WM_NAME,
                AtomEnum::STRING,
                b"stop",
            )
            .is_ok()
            && self.conn.flush().is_ok();
        if let Some(t) = self.reader.take() {
            // A reader that cannot be woken is left blocked rather than hanging the UI.
            if woke {
                let _ = t.join();
            }
        }
    }
}

/// The reader thread: grabbed keys to scancodes, the release chord to a release.
fn read(
    conn: &RustConnection,
    active: &AtomicBool,
    stop: &AtomicBool,
    tx: &Sender<GrabEvent>,
    wake: &dyn Fn(),
) {
    let mut chord = Chord::default();
    while !stop.load(Ordering::SeqCst) {
        let (keycode, down) = match conn.wait_for_event() {
            Ok(XEvent::KeyPress(e)) => (e.detail, true),
            Ok(XEvent::KeyRelease(e)) => (e.detail, false),
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!("keyboard capture ended: {e}");
                active.store(false, Ordering::SeqCst);
                let _ = tx.send(GrabEvent::Released);
                wake();
                return;
            }
        };
        if !active.load(Ordering::SeqCst) {
            continue;
        }
        let Some(code) = keymap::evdev_scancode(u32::from(keycode).saturating_sub(8)) else {
            continue;
        };
        let _ = tx.send(GrabEvent::Key { code, down });
        if let Some(held) = chord.key(code, down) {
            active.store(false, Ordering::SeqCst);
            let _ = conn.ungrab_keyboard(x11rb::CURRENT_TIME);
            let _ = conn.flush();
            // The guest saw the chord's keys go down: it must see them all come up.
            for code in held {
                let _ = tx.send(GrabEvent::Key { code, down: false });
            }
            let _ = tx.send(GrabEvent::Released);
            chord = Chord::default();
        }
        wake();
    }
}

/// Watches for the release chord: Ctrl and Alt down together, no other key meanwhile, then
/// one of them up.
#[derive(Debug, Default)]
struct Chord {
    /// Ctrl and Alt keys held (either side).
    held: Vec<u32>,
    /// Set when both are down with nothing else pressed since.
    armed: bool,
}

impl Chord {
    /// Feeds a key; `Some(still held)` when the chord completes.
    fn key(&mut self, code: u32, down: bool) -> Option<Vec<u32>> {
        let is_ctrl = |c: u32| c == keymap::CTRL || c == keymap::RIGHT_CTRL;
        let is_alt = |c: u32| c == keymap::ALT || c == keymap::RIGHT_ALT;
        if !is_ctrl(code) && !is_alt(code) {
            if down {
                self.armed = false;
            }
            return None;
        }
        if down {
            if !self.held.contains(&code) {
                self.held.push(code);
            }
            let both =
                self.held.iter().any(|&c| is_ctrl(c)) && self.held.iter().any(|&c| is_alt(c));
            if both && self.held.len() == 2 {
                self.armed = true;
            }
            return None;
        }
        self.held.retain(|&c| c != code);
        if std::mem::take(&mut self.armed) {
            return Some(std::mem::take(&mut self.held));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctrl_alt_alone_releases_and_lifts_what_is_held() {
        let mut c = Chord::default();
        assert_eq!(c.key(keymap::CTRL, true), None);
        assert_eq!(c.key(keymap::ALT, true), None);
        assert_eq!(c.key(keymap::CTRL, false), Some(vec![keymap::ALT]));
        // Right-hand keys, released in the other order.
        let mut c = Chord::default();
        c.key(keymap::RIGHT_ALT, true);
        c.key(keymap::CTRL, true);
        assert_eq!(c.key(keymap::RIGHT_ALT, false), Some(vec![keymap::CTRL]));
    }

    #[test]
    fn a_combination_with_ctrl_alt_goes_to_the_desktop() {
        let mut c = Chord::default();
        c.key(keymap::CTRL, true);
        c.key(keymap::ALT, true);
        // Ctrl+Alt+Delete, Ctrl+Alt+F2: for the guest, not a release.
        assert_eq!(c.key(keymap::DELETE, true), None);
        assert_eq!(c.key(keymap::DELETE, false), None);
        assert_eq!(c.key(keymap::ALT, false), None);
        assert_eq!(c.key(keymap::CTRL, false), None);
        // Nor is Ctrl alone, or Alt+Tab.
        assert_eq!(c.key(keymap::CTRL, true), None);
        assert_eq!(c.key(keymap::CTRL, false), None);
        c.key(keymap::ALT, true);
        c.key(0x0F, true);
        c.key(0x0F, false);
        assert_eq!(c.key(keymap::ALT, false), None);
    }
}
