//! The event loop libspice-server's main side runs on: timers and file-descriptor watches
//! (the `SpiceCoreInterface` an embedder implements), on one thread of our own with `poll(2)`
//! and an eventfd to wake it when another thread changes the tables.
//!
//! The interface's callbacks carry no instance pointer, so the loop is per process; that fits
//! tessera-vmm, which serves one VM (one SPICE server) per process. Callbacks into
//! libspice-server run without the tables' lock held, so they may add or remove timers and
//! watches themselves.

use std::collections::HashMap;
use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use spice_server_sys as sys;

/// What a channel did (connected, authenticated, gone), as libspice-server reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelEvent {
    /// CONNECTED (TCP up), INITIALIZED (authenticated, running) or DISCONNECTED.
    pub kind: ChannelEventKind,
    /// Channel type (1 main, 2 display, 3 inputs, 4 cursor, ...).
    pub channel_type: i32,
    /// The client's connection (shared by its channels).
    pub connection_id: i32,
    /// Whether the connection is TLS.
    pub tls: bool,
}

/// The kinds of [`ChannelEvent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelEventKind {
    /// The TCP (or TLS) connection is up; not yet authenticated.
    Connected,
    /// The link and the ticket check succeeded.
    Initialized,
    /// The channel closed.
    Disconnected,
}

struct Timer {
    func: sys::SpiceTimerFunc,
    opaque: usize,
    deadline: Option<Instant>,
}

struct Watch {
    fd: c_int,
    mask: c_int,
    func: sys::SpiceWatchFunc,
    opaque: usize,
}

#[derive(Default)]
struct Tables {
    timers: HashMap<u64, Timer>,
    watches: HashMap<u64, Watch>,
}

type EventHook = Box<dyn Fn(ChannelEvent) + Send + Sync>;

struct Core {
    tables: Mutex<Tables>,
    wake: c_int,
    hook: Mutex<Option<EventHook>>,
}

static CORE: OnceLock<Core> = OnceLock::new();
// Starts at 1: a timer or watch handle is its ID as a pointer, and NULL means failure.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn core() -> &'static Core {
    CORE.get_or_init(|| {
        // SAFETY: eventfd takes no pointers; the result is checked.
        let wake = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        assert!(wake >= 0, "eventfd: {}", std::io::Error::last_os_error());
        std::thread::Builder::new()
            .name("spice-core".into())
            .spawn(run)
            .expect("spawning the SPICE event loop thread");
        Core {
            tables: Mutex::new(Tables::default()),
            wake,
            hook: Mutex::new(None),
        }
    })
}

fn tables() -> MutexGuard<'static, Tables> {
    core().tables.lock().unwrap_or_else(|p| p.into_inner())
}

fn kick() {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live u64 to our own eventfd; a full counter (EAGAIN) is
    // fine, the loop is awake then anyway.
    unsafe { libc::write(core().wake, (&raw const one).cast::<c_void>(), 8) };
}

/// Routes channel events to `hook` (the server that owns this process's SPICE state).
pub(crate) fn set_event_hook(hook: Option<EventHook>) {
    *core().hook.lock().unwrap_or_else(|p| p.into_inner()) = hook;
}

/// Runs `f`, turning a panic into `default` and a log line: nothing unwinds into C.
pub(crate) fn guard<T>(what: &str, default: T, f: impl FnOnce() -> T) -> T {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(_) => {
            tracing::error!(callback = what, "panic in a SPICE callback; ignored");
            default
        }
    }
}

unsafe extern "C" fn timer_add(
    func: sys::SpiceTimerFunc,
    opaque: *mut c_void,
) -> *mut sys::SpiceTimer {
    guard("timer_add", std::ptr::null_mut(), || {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        tables().timers.insert(
            id,
            Timer {
                func,
                opaque: opaque as usize,
                deadline: None,
            },
        );
        id as *mut sys::SpiceTimer
    })
}

unsafe extern "C" fn timer_start(t: *mut sys::SpiceTimer, ms: u32) {
    guard("timer_start", (), || {
        if let Some(t) = tables().timers.get_mut(&(t as u64)) {
            t.deadline = Some(Instant::now() + Duration::from_millis(ms.into()));
        }
        kick();
    })
}

unsafe extern "C" fn timer_cancel(t: *mut sys::SpiceTimer) {
    guard("timer_cancel", (), || {
        if let Some(t) = tables().timers.get_mut(&(t as u64)) {
            t.deadline = None;
        }
    })
}

unsafe extern "C" fn timer_remove(t: *mut sys::SpiceTimer) {
    guard("timer_remove", (), || {
        tables().timers.remove(&(t as u64));
    })
}

unsafe extern "C" fn watch_add(
    fd: c_int,
    mask: c_int,
    func: sys::SpiceWatchFunc,
    opaque: *mut c_void,
) -> *mut sys::SpiceWatch {
    guard("watch_add", std::ptr::null_mut(), || {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        tables().watches.insert(
            id,
            Watch {
                fd,
                mask,
                func,
                opaque: opaque as usize,
            },
        );
        kick();
        id as *mut sys::SpiceWatch
    })
}

unsafe extern "C" fn watch_update_mask(w: *mut sys::SpiceWatch, mask: c_int) {
    guard("watch_update_mask", (), || {
        if let Some(w) = tables().watches.get_mut(&(w as u64)) {
            w.mask = mask;
        }
        kick();
    })
}

unsafe extern "C" fn watch_remove(w: *mut sys::SpiceWatch) {
    guard("watch_remove", (), || {
        tables().watches.remove(&(w as u64));
        kick();
    })
}

/// Drops every timer and watch. Called right after `spice_server_destroy`, which frees the
/// links still being negotiated (a client half-way through its TLS handshake) without removing
/// their watches: calling one afterwards touches the freed server (seen as a SIGSEGV in
/// `MainDispatcher::channel_event` with `this == NULL`). One server per process, so everything
/// left belongs to the destroyed one.
pub(crate) fn forget_all() {
    let mut t = tables();
    t.timers.clear();
    t.watches.clear();
}

unsafe extern "C" fn channel_event(event: c_int, info: *mut sys::SpiceChannelEventInfo) {
    guard("channel_event", (), || {
        if info.is_null() {
            return;
        }
        // SAFETY: libspice-server passes a valid info for the duration of the call.
        let i = unsafe { *info };
        let kind = match event as u32 {
            sys::SPICE_CHANNEL_EVENT_CONNECTED => ChannelEventKind::Connected,
            sys::SPICE_CHANNEL_EVENT_INITIALIZED => ChannelEventKind::Initialized,
            sys::SPICE_CHANNEL_EVENT_DISCONNECTED => ChannelEventKind::Disconnected,
            _ => return,
        };
        let e = ChannelEvent {
            kind,
            channel_type: i.type_,
            connection_id: i.connection_id,
            tls: i.flags & sys::SPICE_CHANNEL_EVENT_FLAG_TLS as c_int != 0,
        };
        tracing::debug!(?e, "SPICE channel");
        if let Some(h) = core()
            .hook
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            h(e);
        }
    })
}

/// The interface table handed to `spice_server_init` (it must outlive the server; one per
/// process, like the loop).
pub(crate) fn interface() -> *mut sys::SpiceCoreInterface {
    struct Table(*mut sys::SpiceCoreInterface);
    // SAFETY: the table is written once below and only read afterwards (by libspice-server).
    unsafe impl Send for Table {}
    // SAFETY: as above.
    unsafe impl Sync for Table {}
    static TABLE: OnceLock<Table> = OnceLock::new();
    core();
    TABLE
        .get_or_init(|| {
            let mut i = sys::SpiceCoreInterface {
                base: sys::SpiceBaseInterface {
                    type_: c"core".as_ptr(),
                    description: c"tessera core".as_ptr(),
                    major_version: sys::SPICE_INTERFACE_CORE_MAJOR,
                    minor_version: sys::SPICE_INTERFACE_CORE_MINOR,
                },
                ..Default::default()
            };
            i.timer_add = Some(timer_add);
            i.timer_start = Some(timer_start);
            i.timer_cancel = Some(timer_cancel);
            i.timer_remove = Some(timer_remove);
            i.watch_add = Some(watch_add);
            i.watch_update_mask = Some(watch_update_mask);
            i.watch_remove = Some(watch_remove);
            i.channel_event = Some(channel_event);
            Table(Box::into_raw(Box::new(i)))
        })
        .0
}

fn run() {
    loop {
        // Wait for CORE to be set (the thread starts inside its initialiser).
        if CORE.get().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let wake = core().wake;
    loop {
        let (mut fds, ids, timeout) = {
            let t = tables();
            let mut fds = vec![libc::pollfd {
                fd: wake,
                events: libc::POLLIN,
                revents: 0,
            }];
            let mut ids = vec![0u64];
            for (id, w) in &t.watches {
                let mut ev = 0;
                if w.mask & sys::SPICE_WATCH_EVENT_READ as c_int != 0 {
                    ev |= libc::POLLIN;
                }
                if w.mask & sys::SPICE_WATCH_EVENT_WRITE as c_int != 0 {
                    ev |= libc::POLLOUT;
                }
                if ev != 0 {
                    fds.push(libc::pollfd {
                        fd: w.fd,
                        events: ev,
                        revents: 0,
                    });
                    ids.push(*id);
                }
            }
            let now = Instant::now();
            let timeout = t
                .timers
                .values()
                .filter_map(|t| t.deadline)
                .map(|d| d.saturating_duration_since(now).as_millis().min(1000) as c_int)
                .min()
                .unwrap_or(1000);
            (fds, ids, timeout)
        };
        // SAFETY: fds is a live, correctly sized array of pollfd.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if fds[0].revents != 0 {
            let mut v = 0u64;
            // SAFETY: reads 8 bytes into a live u64 from our eventfd.
            unsafe { libc::read(wake, (&raw mut v).cast::<c_void>(), 8) };
        }
        run_jobs();
        for (p, id) in fds.iter().zip(&ids).skip(1) {
            if p.revents == 0 {
                continue;
            }
            // Looked up again: an earlier callback in this round may have removed it.
            let cb = tables()
                .watches
                .get(id)
                .map(|w| (w.fd, w.mask, w.func, w.opaque));
            let Some((fd, mask, Some(f), opaque)) = cb else {
                continue;
            };
            let mut ev = 0;
            let readable = p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0;
            if readable && mask & sys::SPICE_WATCH_EVENT_READ as c_int != 0 {
                ev |= sys::SPICE_WATCH_EVENT_READ as c_int;
            }
            if p.revents & libc::POLLOUT != 0 && mask & sys::SPICE_WATCH_EVENT_WRITE as c_int != 0 {
                ev |= sys::SPICE_WATCH_EVENT_WRITE as c_int;
            }
            if ev != 0 {
                // SAFETY: a callback and its opaque pointer as libspice-server registered them;
                // the watch still exists (it was just looked up).
                unsafe { f(fd, ev, opaque as *mut c_void) };
            }
        }
        let now = Instant::now();
        let due: Vec<u64> = tables()
            .timers
            .iter()
            .filter(|(_, t)| t.deadline.is_some_and(|d| d <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let cb = tables().timers.get_mut(&id).map(|t| {
                t.deadline = None;
                (t.func, t.opaque)
            });
            if let Some((Some(f), opaque)) = cb {
                // SAFETY: as registered by libspice-server; one-shot, so the deadline is cleared
                // before the call (the callback may re-arm it).
                unsafe { f(opaque as *mut c_void) };
            }
        }
    }
}

type Job = Box<dyn FnOnce() + Send>;

static JOBS: Mutex<Vec<Job>> = Mutex::new(Vec::new());

/// Runs `f` on the loop's thread (where libspice-server's main side must be driven from)
/// without waiting.
pub(crate) fn post(f: impl FnOnce() + Send + 'static) {
    JOBS.lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Box::new(f));
    kick();
}

/// Runs `f` on the loop's thread and returns its result (None if it panicked).
pub(crate) fn on_loop<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    if std::thread::current().name() == Some("spice-core") {
        return guard("on_loop job", None, || Some(f()));
    }
    let (tx, rx) = std::sync::mpsc::channel();
    post(move || {
        let _ = tx.send(guard("on_loop job", None, || Some(f())));
    });
    rx.recv().ok().flatten()
}

fn run_jobs() {
    let jobs = std::mem::take(&mut *JOBS.lock().unwrap_or_else(|p| p.into_inner()));
    for j in jobs {
        guard("loop job", (), j);
    }
}
