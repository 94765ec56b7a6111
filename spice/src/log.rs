//! libspice-server's own log (GLib, domain "Spice") into `tracing`, and the refused client
//! links it reports counted.
//!
//! libspice-server tells nobody through its API that a client's ticket was refused: it only
//! logs it ("Invalid password", "Ticket has expired", "Ticketing is enabled, but no password
//! is set"). Without this bridge those lines go to the VMM's stderr unstructured; with it they
//! are `warn` events of target `spice` in the VMM's log, and [`refused_links`] counts them
//! for the control API (an administrator sees failed display sign-ins; tests see a refusal
//! happen instead of waiting to see that nothing did).

use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;

static REFUSED: AtomicU64 = AtomicU64::new(0);

/// Client links refused for their ticket (wrong, expired, or none set) since the process
/// started.
pub fn refused_links() -> u64 {
    REFUSED.load(Ordering::Relaxed)
}

// GLib's classic log handler API (gmessages.h): libspice-server logs with g_log(), whose
// per-domain handler this installs. glib-2.0 is already in the process (libspice-server
// needs it); no maintained crate offers just this without pulling in the whole glib binding.
type GLogFunc = extern "C" fn(*const c_char, c_int, *const c_char, *mut c_void);
#[link(name = "glib-2.0")]
extern "C" {
    fn g_log_set_handler(
        domain: *const c_char,
        levels: c_int,
        func: GLogFunc,
        data: *mut c_void,
    ) -> c_uint;
}
// GLogLevelFlags (gmessages.h).
const G_LOG_FLAG_RECURSION: c_int = 1;
const G_LOG_FLAG_FATAL: c_int = 2;
const G_LOG_LEVEL_ERROR: c_int = 1 << 2;
const G_LOG_LEVEL_CRITICAL: c_int = 1 << 3;
const G_LOG_LEVEL_WARNING: c_int = 1 << 4;
const G_LOG_LEVEL_MASK: c_int = !(G_LOG_FLAG_RECURSION | G_LOG_FLAG_FATAL);

/// Whether a line of libspice-server's log is a refused ticket.
fn is_refusal(message: &str) -> bool {
    [
        "Invalid password",
        "Ticket has expired",
        "no password is set",
    ]
    .iter()
    .any(|m| message.contains(m))
}

extern "C" fn handler(
    _domain: *const c_char,
    level: c_int,
    message: *const c_char,
    _: *mut c_void,
) {
    // Nothing may unwind into C.
    let _ = std::panic::catch_unwind(|| {
        if message.is_null() {
            return;
        }
        // SAFETY: GLib passes a NUL-terminated message that lives for this call.
        let text = unsafe { CStr::from_ptr(message) }.to_string_lossy();
        if is_refusal(&text) {
            REFUSED.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(target: "spice", reason = %text.trim(), "display client refused");
        } else if level & (G_LOG_LEVEL_ERROR | G_LOG_LEVEL_CRITICAL | G_LOG_LEVEL_WARNING) != 0 {
            tracing::warn!(target: "spice", "{}", text.trim());
        } else {
            tracing::debug!(target: "spice", "{}", text.trim());
        }
    });
}

/// Installs the bridge (once per process; later calls do nothing).
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: the domain is a static NUL-terminated string, the handler a plain function
        // that GLib may call from any thread (it only touches an atomic and tracing).
        unsafe {
            g_log_set_handler(
                c"Spice".as_ptr(),
                G_LOG_LEVEL_MASK | G_LOG_FLAG_FATAL | G_LOG_FLAG_RECURSION,
                handler,
                std::ptr::null_mut(),
            );
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knows_a_refusal() {
        assert!(is_refusal(
            "../server/reds.cpp:2020:reds_handle_ticket: Invalid password"
        ));
        assert!(is_refusal("reds_handle_ticket: Ticket has expired"));
        assert!(is_refusal(
            "Ticketing is enabled, but no password is set. please set a ticket first"
        ));
        assert!(!is_refusal(
            "reds_handle_read_link_done: spice channels 1 type 1"
        ));
    }
}
