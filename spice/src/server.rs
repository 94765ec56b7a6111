//! The SPICE server of one VM: configuration, start-up in the order libspice-server needs
//! (init, display, memslot, inputs, agent, vm_start), the display mode, dirty rectangles, and
//! one-time tickets.

use std::ffi::CString;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use spice_server_sys as sys;

use crate::agent::AgentBox;
use crate::core::{self, ChannelEvent, ChannelEventKind};
use crate::display::{QxlBox, Rect, MAX_SIDE};
use crate::input::InputBox;
use crate::{ClientEvents, SpiceError};
pub use tessera_display_proto::Compression;

/// Set while a server runs: channel events carry no server, so a process serves one.
static RUNNING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

pub use tessera_display_proto::MAX_TICKET;
/// After the client's main channel authenticates, its ticket stays valid this long for the
/// client's other channels, then it is spent.
pub const TICKET_GRACE: Duration = Duration::from_secs(10);

/// libspice-server's value for a compression mode.
fn compression_raw(c: Compression) -> sys::SpiceImageCompression {
    match c {
        Compression::Off => sys::SPICE_IMAGE_COMPRESSION_OFF,
        Compression::AutoGlz => sys::SPICE_IMAGE_COMPRESSION_AUTO_GLZ,
        Compression::AutoLz => sys::SPICE_IMAGE_COMPRESSION_AUTO_LZ,
        Compression::Quic => sys::SPICE_IMAGE_COMPRESSION_QUIC,
        Compression::Glz => sys::SPICE_IMAGE_COMPRESSION_GLZ,
        Compression::Lz => sys::SPICE_IMAGE_COMPRESSION_LZ,
        Compression::Lz4 => sys::SPICE_IMAGE_COMPRESSION_LZ4,
    }
}

/// TLS: a port and PEM files (libspice-server reads them with OpenSSL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The TLS port.
    pub port: u16,
    /// CA certificate the client is told to trust.
    pub ca: PathBuf,
    /// Server certificate chain.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

/// How the server listens and encodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Shown in the client's title bar.
    pub name: String,
    /// Address to listen on.
    pub address: IpAddr,
    /// Plain-text port; None: TLS only.
    pub port: Option<u16>,
    /// TLS port and certificates.
    pub tls: Option<TlsFiles>,
    /// Image compression.
    pub compression: Compression,
}

/// The primary surface: its size and the canvas libspice-server draws into.
struct Primary {
    width: u32,
    height: u32,
    _canvas: Vec<u8>,
}

/// The ticket clients must present.
struct TicketState {
    secret: String,
    /// The one an admin or the broker set (not a random "locked" one).
    live: bool,
    /// The client connection that spent this ticket: its departure locks the server. Another
    /// main channel's end (a client that never got in, or one that spent an earlier ticket
    /// and whose end is noticed only after a new ticket was set) leaves the ticket alone.
    spent_by: Option<i32>,
    /// Counts the tickets set (and locks). A main channel's arrival spends the ticket only if
    /// it is still the one that was current when libspice-server reported the arrival: the
    /// report is handled later, on the loop, and a newer ticket set meanwhile is not the one
    /// that client presented.
    generation: u64,
}

/// What a main channel's event does to the ticket.
#[derive(Debug, PartialEq, Eq)]
enum TicketAction {
    /// Spend it: valid for the grace period only, for the client's other channels.
    Spend,
    /// Lock the server: the client that spent the ticket has left.
    Lock,
    /// Nothing.
    Keep,
}

impl TicketState {
    /// Decides what a main channel's event (`kind`, on `connection`, reported while ticket
    /// `generation` was current) does, and notes the spender.
    fn on_main_channel(
        &mut self,
        kind: ChannelEventKind,
        connection: i32,
        generation: u64,
    ) -> TicketAction {
        match kind {
            // A newer ticket than the one current at the client's arrival is not the one it
            // presented: it stays live for its own user.
            ChannelEventKind::Initialized if self.live && self.generation == generation => {
                self.live = false;
                self.spent_by = Some(connection);
                TicketAction::Spend
            }
            ChannelEventKind::Disconnected if self.spent_by == Some(connection) => {
                self.live = false;
                self.spent_by = None;
                TicketAction::Lock
            }
            _ => TicketAction::Keep,
        }
    }

    /// The state after `secret` took effect in libspice-server.
    fn replace(&mut self, secret: String, live: bool) {
        *self = TicketState {
            secret,
            live,
            spent_by: None,
            generation: self.generation.wrapping_add(1),
        };
    }
}

/// libspice-server's handle, movable to the loop thread.
#[derive(Clone, Copy)]
struct Handle(*mut sys::SpiceServer);
// SAFETY: the handle is only dereferenced by libspice-server, on the loop thread (on_loop).
unsafe impl Send for Handle {}
// SAFETY: as above; sharing the address is harmless.
unsafe impl Sync for Handle {}

impl Handle {
    // A method, so that closures capture the whole (Send) handle, not its raw field.
    fn get(self) -> *mut sys::SpiceServer {
        self.0
    }
}

/// A running SPICE server.
pub struct Server {
    srv: Handle,
    display: Box<QxlBox>,
    _inputs: Box<InputBox>,
    _agent: Box<AgentBox>,
    primary: Option<Primary>,
    unique: u64,
    ticket: Arc<Mutex<TicketState>>,
}

fn cstring(what: &str, s: &str) -> Result<CString, SpiceError> {
    CString::new(s).map_err(|_| SpiceError::Config(format!("{what} contains a NUL byte")))
}

fn path(what: &str, p: &std::path::Path) -> Result<CString, SpiceError> {
    let s = p
        .to_str()
        .ok_or_else(|| SpiceError::Config(format!("{what} path is not UTF-8")))?;
    if !p.is_file() {
        return Err(SpiceError::Config(format!(
            "{what} {s} is not a readable file"
        )));
    }
    cstring(what, s)
}

/// A random ticket nobody knows: the server is locked until a real one is set.
fn lock_secret() -> Result<String, SpiceError> {
    let mut raw = [0u8; 24];
    getrandom::fill(&mut raw)
        .map_err(|e| SpiceError::Server(format!("no random source for the lock ticket: {e}")))?;
    Ok(raw.iter().map(|b| format!("{b:02x}")).collect())
}

/// Sets the ticket; `disconnect`: the connected client, if any, is cut off too.
fn apply_ticket(
    srv: Handle,
    secret: &str,
    lifetime_s: i32,
    disconnect: bool,
) -> Result<(), SpiceError> {
    apply_ticket_then(srv, secret, lifetime_s, disconnect, || {})
}

/// As [`apply_ticket`], running `then` on the loop right after the ticket took effect (in the
/// same job: no other loop job, such as a client's arrival, comes between).
fn apply_ticket_then(
    srv: Handle,
    secret: &str,
    lifetime_s: i32,
    disconnect: bool,
    then: impl FnOnce() + Send + 'static,
) -> Result<(), SpiceError> {
    let c = cstring("ticket", secret)?;
    let cut = i32::from(disconnect);
    let rc = core::on_loop(move || {
        // SAFETY: srv is live (Server owns it); c is a valid C string for the call.
        let rc = unsafe { sys::spice_server_set_ticket(srv.get(), c.as_ptr(), lifetime_s, 0, cut) };
        if rc == 0 {
            then();
        }
        rc
    });
    match rc {
        Some(0) => Ok(()),
        other => Err(SpiceError::Server(format!(
            "spice_server_set_ticket returned {other:?}"
        ))),
    }
}

impl Server {
    /// Starts a server per `cfg`, reporting input and resize requests to `events`. It is
    /// locked (a random ticket) until [`Server::set_ticket`]; the first mode is
    /// `width` x `height`.
    pub fn start(
        cfg: &Config,
        events: Arc<dyn ClientEvents>,
        width: u32,
        height: u32,
    ) -> Result<Self, SpiceError> {
        if cfg.port.is_none() && cfg.tls.is_none() {
            return Err(SpiceError::Config("neither a port nor a TLS port".into()));
        }
        if RUNNING.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return Err(SpiceError::Config(
                "a SPICE server already runs in this process (one VM per process)".into(),
            ));
        }
        crate::log::install();
        let started = Self::start_inner(cfg, events, width, height);
        if started.is_err() {
            RUNNING.store(false, std::sync::atomic::Ordering::SeqCst);
        }
        started
    }

    fn start_inner(
        cfg: &Config,
        events: Arc<dyn ClientEvents>,
        width: u32,
        height: u32,
    ) -> Result<Self, SpiceError> {
        let name = cstring("name", &cfg.name)?;
        let addr = cstring("address", &cfg.address.to_string())?;
        let tls = match &cfg.tls {
            Some(t) => Some((
                t.port,
                path("CA", &t.ca)?,
                path("certificate", &t.cert)?,
                path("key", &t.key)?,
            )),
            None => None,
        };
        let port = cfg.port;
        let comp = compression_raw(cfg.compression);
        let secret = lock_secret()?;
        let first = cstring("ticket", &secret)?;
        let display = QxlBox::new(events.clone());
        let mut inputs = InputBox::new(events.clone());
        let mut agent = AgentBox::new();
        let qxl = Ptr(&raw const display.qxl as *mut sys::QXLInstance);
        let kbd = Ptr(&raw mut inputs.kbd);
        let mouse = Ptr(&raw mut inputs.mouse);
        let tablet = Ptr(&raw mut inputs.tablet);
        let agent_sin = Ptr(&raw mut agent.sin);
        let init = core::on_loop(move || -> Result<Handle, String> {
            // SAFETY: the calls follow spice.h's order (configure, init, add interfaces); every
            // pointer is live: the C strings are moved into this closure, the instances are
            // boxed and owned by the Server that outlives the server handle.
            unsafe {
                let s = sys::spice_server_new();
                if s.is_null() {
                    return Err("spice_server_new failed".into());
                }
                sys::spice_server_set_addr(s, addr.as_ptr(), 0);
                // -1: no plain-text listener.
                sys::spice_server_set_port(s, port.map_or(-1, i32::from));
                if let Some((tls_port, ca, cert, key)) = &tls {
                    let null = std::ptr::null();
                    let rc = sys::spice_server_set_tls(
                        s,
                        i32::from(*tls_port),
                        ca.as_ptr(),
                        cert.as_ptr(),
                        key.as_ptr(),
                        null,
                        null,
                        null,
                    );
                    if rc != 0 {
                        destroy(s);
                        return Err(format!("TLS setup failed ({rc})"));
                    }
                    if port.is_none() {
                        sys::spice_server_set_channel_security(
                            s,
                            std::ptr::null(),
                            sys::SPICE_CHANNEL_SECURITY_SSL as i32,
                        );
                    }
                }
                sys::spice_server_set_ticket(s, first.as_ptr(), 0, 0, 0);
                sys::spice_server_set_image_compression(s, comp);
                sys::spice_server_set_streaming_video(s, sys::SPICE_STREAM_VIDEO_OFF as i32);
                // Pointer events go to our tablet, not to a (stand-in) agent.
                sys::spice_server_set_agent_mouse(s, 0);
                sys::spice_server_set_name(s, name.as_ptr());
                if sys::spice_server_init(s, core::interface()) != 0 {
                    destroy(s);
                    return Err("spice_server_init failed (is the port free?)".into());
                }
                for base in [
                    &raw mut (*qxl.get()).base,
                    &raw mut (*kbd.get()).base,
                    &raw mut (*mouse.get()).base,
                    &raw mut (*tablet.get()).base,
                    &raw mut (*agent_sin.get()).base,
                ] {
                    if sys::spice_server_add_interface(s, base) != 0 {
                        destroy(s);
                        return Err("spice_server_add_interface failed".into());
                    }
                }
                let mut slot = sys::QXLDevMemSlot {
                    slot_group_id: 0,
                    slot_id: 0,
                    generation: 0,
                    virt_start: 0,
                    virt_end: usize::MAX,
                    addr_delta: 0,
                    qxl_ram_size: u32::MAX,
                };
                sys::spice_qxl_add_memslot(qxl.0, &mut slot);
                sys::spice_server_char_device_wakeup(agent_sin.get());
                sys::spice_server_vm_start(s);
                Ok(Handle(s))
            }
        });
        let srv = match init {
            Some(Ok(h)) => h,
            Some(Err(e)) => return Err(SpiceError::Server(e)),
            None => return Err(SpiceError::Server("start-up panicked".into())),
        };
        let ticket = Arc::new(Mutex::new(TicketState {
            secret,
            live: false,
            spent_by: None,
            generation: 0,
        }));
        let agent_ptr = Ptr(&raw mut agent.sin);
        core::set_event_hook(Some(channel_hook(srv, agent_ptr, ticket.clone(), events)));
        let mut server = Self {
            srv,
            display,
            _inputs: inputs,
            _agent: agent,
            primary: None,
            unique: 0,
            ticket,
        };
        server.set_mode(width, height)?;
        Ok(server)
    }

    /// The current mode.
    pub fn mode(&self) -> Option<(u32, u32)> {
        self.primary.as_ref().map(|p| (p.width, p.height))
    }

    /// Switches the surface to `width` x `height` (clients see the new size; queued updates
    /// for the old one are dropped).
    pub fn set_mode(&mut self, width: u32, height: u32) -> Result<(), SpiceError> {
        if !(1..=MAX_SIDE).contains(&width) || !(1..=MAX_SIDE).contains(&height) {
            return Err(SpiceError::Mode(width, height));
        }
        let qxl = &raw const self.display.qxl as *mut sys::QXLInstance;
        if self.primary.is_some() {
            self.display.drop_queued();
            // SAFETY: the instance is registered and has a primary surface 0.
            unsafe { sys::spice_qxl_destroy_primary_surface(qxl, 0) };
            self.primary = None;
        }
        let mut canvas = vec![0u8; width as usize * height as usize * 4];
        let mut surface = sys::QXLDevSurfaceCreate {
            width,
            height,
            stride: -((width * 4) as i32),
            format: sys::SPICE_SURFACE_FMT_32_xRGB,
            position: 0,
            mouse_mode: 1,
            flags: 0,
            type_: 0,
            mem: canvas.as_mut_ptr() as u64,
            group_id: 0,
        };
        // SAFETY: the canvas is w*h*4 bytes and lives in self.primary until the surface is
        // destroyed (above, or when the server is dropped).
        unsafe { sys::spice_qxl_create_primary_surface(qxl, 0, &mut surface) };
        self.primary = Some(Primary {
            width,
            height,
            _canvas: canvas,
        });
        Ok(())
    }

    /// Sends the `rects` of framebuffer `fb` (xRGB, `stride` bytes per line, the current
    /// mode's size) to clients. Rectangles outside the surface or `fb` are skipped; returns
    /// how many were queued.
    pub fn update(&mut self, fb: &[u8], stride: usize, rects: &[Rect]) -> usize {
        let Some(p) = &self.primary else { return 0 };
        let size = (p.width, p.height);
        let mut n = 0;
        for r in rects {
            self.unique += 1;
            if self.display.queue_copy(fb, stride, size, *r, self.unique) {
                n += 1;
            } else {
                tracing::warn!(?r, "dirty rectangle outside the surface; skipped");
            }
        }
        if n > 0 {
            // SAFETY: the instance is registered; wakeup only signals the worker.
            unsafe { sys::spice_qxl_wakeup(&raw const self.display.qxl as *mut _) };
        }
        n
    }

    /// Sets the ticket a client must present, valid for `lifetime` (at most a day). After a
    /// client's main channel authenticates with it, it stays valid [`TICKET_GRACE`] for the
    /// client's other channels and is then spent; when the client leaves, the server locks.
    pub fn set_ticket(&self, secret: &str, lifetime: Duration) -> Result<(), SpiceError> {
        if secret.is_empty() || secret.len() > MAX_TICKET {
            return Err(SpiceError::Config(format!(
                "a ticket has 1 to {MAX_TICKET} bytes"
            )));
        }
        let secs = lifetime.as_secs().clamp(1, 86_400) as i32;
        let (ticket, owned) = (self.ticket.clone(), secret.to_string());
        apply_ticket_then(self.srv, secret, secs, false, move || {
            ticket
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .replace(owned, true);
        })
    }

    /// Locks the server: no ticket works until the next [`Server::set_ticket`].
    pub fn clear_ticket(&self) -> Result<(), SpiceError> {
        self.lock(false)
    }

    /// Locks the server and cuts the connected client off (every channel): how a session's
    /// end reaches a viewer that is still connected.
    pub fn disconnect_clients(&self) -> Result<(), SpiceError> {
        self.lock(true)
    }

    fn lock(&self, disconnect: bool) -> Result<(), SpiceError> {
        let secret = lock_secret()?;
        let (ticket, owned) = (self.ticket.clone(), secret.clone());
        apply_ticket_then(self.srv, &secret, 0, disconnect, move || {
            ticket
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .replace(owned, false);
        })
    }

    /// Draw commands waiting for the server, and released by it so far.
    pub fn queue_stats(&self) -> (usize, u64) {
        (self.display.queued(), self.display.released())
    }
}

/// A pointer moved into a loop job.
struct Ptr<T>(*mut T);
// SAFETY: the pointees are boxed and owned by the Server; jobs run while it exists.
unsafe impl<T> Send for Ptr<T> {}
// SAFETY: as above; only the address is shared.
unsafe impl<T> Sync for Ptr<T> {}

impl<T> Ptr<T> {
    fn get(&self) -> *mut T {
        self.0
    }
}

/// When a client's main channel is in: spends its ticket and lets the stand-in agent greet
/// it; when the client that spent the current ticket leaves, locks the server.
fn channel_hook(
    srv: Handle,
    agent: Ptr<sys::SpiceCharDeviceInstance>,
    ticket: Arc<Mutex<TicketState>>,
    events: Arc<dyn ClientEvents>,
) -> Box<dyn Fn(ChannelEvent) + Send + Sync> {
    Box::new(move |e: ChannelEvent| {
        events.channel(e);
        if e.channel_type != sys::SPICE_CHANNEL_MAIN as i32 {
            return;
        }
        let ticket = ticket.clone();
        // The ticket current now, when libspice-server reports the event (the client's
        // link was checked against it, or an older one), not when the job below runs.
        let current = ticket.lock().unwrap_or_else(|p| p.into_inner()).generation;
        let agent = Ptr(agent.get());
        // Posted: this may run on libspice-server's worker thread. Jobs run in order, so
        // this one runs before the Server's drop destroys what it touches.
        core::post(move || {
            if e.kind == ChannelEventKind::Initialized {
                // SAFETY: the agent instance is the `sin` field of the Server's live
                // AgentBox; wakeup makes the server read the greeting.
                unsafe {
                    (*agent.get().cast::<AgentBox>()).client_arrived();
                    sys::spice_server_char_device_wakeup(agent.get());
                }
            }
            let mut t = ticket.lock().unwrap_or_else(|p| p.into_inner());
            match t.on_main_channel(e.kind, e.connection_id, current) {
                TicketAction::Spend => {
                    let grace = TICKET_GRACE.as_secs() as i32;
                    if let Err(err) = apply_ticket(srv, &t.secret, grace, false) {
                        tracing::warn!(%err, "could not spend the ticket");
                    }
                }
                TicketAction::Lock => {
                    match lock_secret().and_then(|secret| {
                        apply_ticket(srv, &secret, 0, false)?;
                        Ok(secret)
                    }) {
                        Ok(secret) => t.replace(secret, false),
                        // The spent ticket expires within its grace period anyway.
                        Err(err) => tracing::warn!(%err, "could not lock the server"),
                    }
                }
                TicketAction::Keep => {}
            }
        });
    })
}

/// Destroys a server and forgets the timers and watches it leaked ([`core::forget_all`]).
///
/// # Safety
/// `s` is a live server, destroyed once, on the loop's thread.
unsafe fn destroy(s: *mut sys::SpiceServer) {
    // SAFETY: as the caller promises.
    unsafe { sys::spice_server_destroy(s) };
    core::forget_all();
}

impl Drop for Server {
    fn drop(&mut self) {
        core::set_event_hook(None);
        let srv = self.srv;
        let qxl = Ptr(&raw const self.display.qxl as *mut sys::QXLInstance);
        let had_primary = self.primary.is_some();
        core::on_loop(move || {
            // SAFETY: the server and its instances are still alive; after destroy nothing
            // calls back into them.
            unsafe {
                if had_primary {
                    sys::spice_qxl_destroy_primary_surface(qxl.get(), 0);
                }
                destroy(srv.get());
            }
        });
        self.display.drop_queued();
        RUNNING.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(secret: &str) -> TicketState {
        let mut t = TicketState {
            secret: String::new(),
            live: false,
            spent_by: None,
            generation: 0,
        };
        t.replace(secret.into(), true);
        t
    }

    #[test]
    fn a_client_spends_the_ticket_it_arrived_under_and_only_its_leaving_locks() {
        let mut t = live("first");
        let g = t.generation;
        assert_eq!(
            t.on_main_channel(ChannelEventKind::Initialized, 7, g),
            TicketAction::Spend
        );
        assert!(!t.live);
        // A second arrival (another channel set, a stranger) spends nothing.
        assert_eq!(
            t.on_main_channel(ChannelEventKind::Initialized, 8, g),
            TicketAction::Keep
        );
        assert_eq!(
            t.on_main_channel(ChannelEventKind::Disconnected, 8, g),
            TicketAction::Keep
        );
        assert_eq!(
            t.on_main_channel(ChannelEventKind::Disconnected, 7, g),
            TicketAction::Lock
        );
        assert_eq!(t.spent_by, None);
    }

    #[test]
    fn an_arrival_reported_before_a_new_ticket_does_not_spend_it() {
        // Client 7 came in under "first"; its arrival is handled only after "second" was
        // set (the random-kill test's race): "second" stays live for its own user, and
        // client 7 leaving locks nothing.
        let mut t = live("first");
        let at_arrival = t.generation;
        t.replace("second".into(), true);
        assert_eq!(
            t.on_main_channel(ChannelEventKind::Initialized, 7, at_arrival),
            TicketAction::Keep
        );
        assert!(t.live);
        assert_eq!(
            t.on_main_channel(ChannelEventKind::Disconnected, 7, at_arrival),
            TicketAction::Keep
        );
        let now = t.generation;
        assert_eq!(
            t.on_main_channel(ChannelEventKind::Initialized, 9, now),
            TicketAction::Spend
        );
        // Locking bumps the generation too: an arrival reported before it spends nothing.
        t.replace("random".into(), false);
        assert_eq!(
            t.on_main_channel(ChannelEventKind::Initialized, 10, now),
            TicketAction::Keep
        );
    }
}
