//! One SPICE session: connects with a ticket, keeps a copy of the guest's screen current
//! per dirty rectangle, sends keys, pointer and resolution requests, and reports how it ended.
//!
//! libspice-client-glib is single-threaded and runs on GLib's default main context, so every
//! session lives on one process-wide thread ("spice-glib") that runs that context's loop. A
//! [`Session`] is a handle that posts work to it; events come back through the caller's sink,
//! called on that thread.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use glib::prelude::*;

use crate::ffi;
use crate::frame::{Frame, PixelFormat, Rect};

/// Where and how to connect.
#[derive(Clone, Default)]
pub struct ConnectOptions {
    pub host: String,
    /// Plain-text port.
    pub port: Option<u16>,
    /// TLS port; with no plain port every channel uses it.
    pub tls_port: Option<u16>,
    /// The one-time ticket.
    pub password: Option<String>,
    /// PEM certificates that may sign the server's; the system's otherwise.
    pub ca_pem: Option<Vec<u8>>,
    /// Check the certificate's subject (e.g. "CN=host") instead of its host name.
    pub cert_subject: Option<String>,
    /// An HTTP proxy (`http://127.0.0.1:PORT`) that every channel reaches `host` through with
    /// CONNECT: the client's local end of a broker's display tunnel.
    pub proxy: Option<String>,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls_port", &self.tls_port)
            .field("password", &self.password.as_ref().map(|_| "<ticket>"))
            .field("ca_pem", &self.ca_pem.as_ref().map(Vec::len))
            .field("cert_subject", &self.cert_subject)
            .field("proxy", &self.proxy)
            .finish()
    }
}

/// Why a session could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no SPICE port to connect to: give a plain or a TLS port")]
    NoPort,
    #[error("cannot start the SPICE client's thread: {0}")]
    Thread(String),
}

/// Why a session ended without being asked to.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    #[error("cannot reach the desktop's display: {0}")]
    Connect(String),
    #[error("the display's TLS handshake failed (is its certificate trusted?): {0}")]
    Tls(String),
    #[error("the display refused the connection while linking: {0}")]
    Link(String),
    #[error("the display refused the ticket: it is wrong, expired or already used")]
    Auth,
    #[error("the connection to the display broke: {0}")]
    Io(String),
}

/// How the server wants pointer motion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MouseMode {
    /// Absolute positions (the guest has a tablet): the client's pointer is the guest's.
    Client,
    /// Relative motion only.
    Server,
}

/// What happens to a session, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// The main channel is linked and authenticated.
    Opened,
    /// The guest's screen is (now) this size; the frame holds all of it.
    Primary {
        width: u32,
        height: u32,
    },
    /// This part of the frame changed; `at` is when the client library reported it.
    Invalidate {
        rect: Rect,
        at: Instant,
    },
    MouseMode(MouseMode),
    /// The session is over: `None` when it was asked to end, else why it ended.
    Closed(Option<Failure>),
}

/// A pointer button.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Button {
    Left,
    Middle,
    Right,
    WheelUp,
    WheelDown,
}

impl Button {
    /// `SPICE_MOUSE_BUTTON_*` and `SPICE_MOUSE_BUTTON_MASK_*` (the wheel has no held state).
    fn codes(self) -> (i32, i32) {
        match self {
            Button::Left => (1, 1),
            Button::Middle => (2, 2),
            Button::Right => (3, 4),
            Button::WheelUp => (4, 0),
            Button::WheelDown => (5, 0),
        }
    }
}

type Sink = Box<dyn FnMut(Event, &Frame) + Send>;

/// A connected (or connecting) session. Dropping it disconnects.
pub struct Session {
    id: u64,
    frame: Arc<Mutex<Frame>>,
}

impl Session {
    /// Starts connecting; `sink` receives every [`Event`] with the frame as it is after that
    /// event, on the client library's thread (so it must not block).
    pub fn connect(
        options: ConnectOptions,
        sink: impl FnMut(Event, &Frame) + Send + 'static,
    ) -> Result<Session, Error> {
        if options.port.is_none() && options.tls_port.is_none() {
            return Err(Error::NoPort);
        }
        start_loop()?;
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        let frame = Arc::new(Mutex::new(Frame::default()));
        let shared = frame.clone();
        let sink: Sink = Box::new(sink);
        glib::idle_add_once(move || State::open(id, options, shared, sink));
        Ok(Session { id, frame })
    }

    /// The guest's screen as received so far.
    pub fn frame(&self) -> &Arc<Mutex<Frame>> {
        &self.frame
    }

    /// A key went down or up: a PC XT (set 1) scancode, 0x100 added for 0xE0-prefixed keys.
    pub fn key(&self, scancode: u32, down: bool) {
        self.with(move |s| s.key(scancode, down));
    }

    /// The pointer is at (x, y) of the guest's screen.
    pub fn pointer(&self, x: u32, y: u32) {
        self.with(move |s| s.pointer(x, y));
    }

    /// A pointer button went down or up (a wheel notch: down then up).
    pub fn button(&self, button: Button, down: bool) {
        self.with(move |s| s.button(button, down));
    }

    /// Asks the guest for this screen size (it needs the SPICE agent, or a display that
    /// follows the monitors configuration).
    pub fn request_resolution(&self, width: u32, height: u32) {
        self.with(move |s| s.request_resolution(width, height));
    }

    /// Ends the session; the sink gets `Closed(None)`.
    pub fn disconnect(&self) {
        self.with(|s| s.disconnect());
    }

    fn with(&self, f: impl FnOnce(&Rc<State>) + Send + 'static) {
        let id = self.id;
        glib::idle_add_once(move || {
            if let Some(state) = SESSIONS.with(|m| m.borrow().get(&id).cloned()) {
                f(&state);
            }
        });
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.disconnect();
    }
}

/// Starts the thread that runs GLib's default main context, once per process.
fn start_loop() -> Result<(), Error> {
    static STARTED: OnceLock<Result<(), String>> = OnceLock::new();
    STARTED
        .get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::Builder::new()
                .name("spice-glib".into())
                .spawn(move || {
                    let ctx = glib::MainContext::default();
                    let Ok(_owner) = ctx.acquire() else {
                        let _ =
                            tx.send(Err("another thread owns GLib's default main context".into()));
                        return;
                    };
                    let main_loop = glib::MainLoop::new(Some(&ctx), false);
                    let _ = tx.send(Ok(()));
                    main_loop.run();
                })
                .map_err(|e| e.to_string())?;
            rx.recv().map_err(|e| e.to_string())?
        })
        .clone()
        .map_err(Error::Thread)
}

thread_local! {
    /// The open sessions of the "spice-glib" thread, by id.
    static SESSIONS: RefCell<HashMap<u64, Rc<State>>> = RefCell::new(HashMap::new());
}

/// A session as the "spice-glib" thread sees it.
struct State {
    id: u64,
    session: glib::Object,
    main: RefCell<Option<glib::Object>>,
    display: RefCell<Option<glib::Object>>,
    inputs: RefCell<Option<glib::Object>>,
    buttons: Cell<i32>,
    last_pointer: Cell<(i32, i32)>,
    mouse_mode: Cell<MouseMode>,
    failure: RefCell<Option<Failure>>,
    /// Channels created and not yet destroyed.
    channels: Cell<usize>,
    /// Set once the session is being taken down (asked to, or failed).
    ending: Cell<bool>,
    frame: Arc<Mutex<Frame>>,
    sink: RefCell<Sink>,
}

/// `SPICE_CHANNEL_*` (spice-protocol) and `SpiceChannelEvent` values.
const CHANNEL_MAIN: i32 = 1;
const CHANNEL_DISPLAY: i32 = 2;
const CHANNEL_INPUTS: i32 = 3;
const EVENT_OPENED: i32 = 10;
const EVENT_CLOSED: i32 = 12;
const EVENT_ERROR_CONNECT: i32 = 20;
const EVENT_ERROR_TLS: i32 = 21;
const EVENT_ERROR_LINK: i32 = 22;
const EVENT_ERROR_AUTH: i32 = 23;
const EVENT_ERROR_IO: i32 = 24;
const MOUSE_MODE_CLIENT: i32 = 2;

impl State {
    fn open(id: u64, options: ConnectOptions, frame: Arc<Mutex<Frame>>, sink: Sink) {
        let session = glib::Object::with_type(ffi::session_type());
        session.set_property("host", &options.host);
        if let Some(port) = options.port {
            session.set_property("port", port.to_string());
        }
        if let Some(port) = options.tls_port {
            session.set_property("tls-port", port.to_string());
        }
        if let Some(password) = &options.password {
            session.set_property("password", password);
        }
        if let Some(ca) = &options.ca_pem {
            session.set_property("ca", glib::ByteArray::from(ca.as_slice()));
        }
        if let Some(subject) = &options.cert_subject {
            session.set_property("cert-subject", subject);
        }
        if let Some(proxy) = &options.proxy {
            session.set_property("proxy", proxy);
        }
        let state = Rc::new(State {
            id,
            session: session.clone(),
            main: RefCell::new(None),
            display: RefCell::new(None),
            inputs: RefCell::new(None),
            buttons: Cell::new(0),
            last_pointer: Cell::new((0, 0)),
            mouse_mode: Cell::new(MouseMode::Server),
            failure: RefCell::new(None),
            channels: Cell::new(0),
            ending: Cell::new(false),
            frame,
            sink: RefCell::new(sink),
        });
        let weak = Rc::downgrade(&state);
        session.connect_local("channel-new", false, move |args| {
            let channel = args.get(1)?.get::<glib::Object>().ok()?;
            weak.upgrade()?.add_channel(channel);
            None
        });
        // spice-client-glib 0.42 does not emit "disconnected" after spice_session_disconnect;
        // the session is over when its last channel is destroyed.
        let weak = Rc::downgrade(&state);
        session.connect_local("channel-destroy", false, move |_| {
            let state = weak.upgrade()?;
            state.channels.set(state.channels.get().saturating_sub(1));
            if state.channels.get() == 0 && state.ending.get() {
                state.closed();
            }
            None
        });
        SESSIONS.with(|m| m.borrow_mut().insert(id, state.clone()));
        if !ffi::session_connect(&session) {
            state.fail(Failure::Connect(format!(
                "cannot start connecting to {options:?}"
            )));
            state.ending.set(true);
            state.closed();
        }
    }

    fn emit(&self, event: Event) {
        let frame = lock(&self.frame);
        (self.sink.borrow_mut())(event, &frame);
    }

    fn add_channel(self: &Rc<Self>, channel: glib::Object) {
        self.channels.set(self.channels.get() + 1);
        let kind = channel.property::<i32>("channel-type");
        let weak = Rc::downgrade(self);
        channel.connect_local("channel-event", false, move |args| {
            let event = glib::EnumValue::from_value(args.get(1)?)?.1.value();
            let channel = args.first()?.get::<glib::Object>().ok()?;
            weak.upgrade()?.channel_event(kind, &channel, event);
            None
        });
        match kind {
            CHANNEL_MAIN => {
                let weak = Rc::downgrade(self);
                channel.connect_local("main-mouse-update", false, move |args| {
                    let main = args.first()?.get::<glib::Object>().ok()?;
                    weak.upgrade()?.mouse_update(&main);
                    None
                });
                *self.main.borrow_mut() = Some(channel.clone());
            }
            CHANNEL_DISPLAY => {
                let weak = Rc::downgrade(self);
                channel.connect_local("display-primary-create", false, move |args| {
                    let display = args.first()?.get::<glib::Object>().ok()?;
                    weak.upgrade()?.primary_created(&display);
                    None
                });
                let weak = Rc::downgrade(self);
                channel.connect_local("display-invalidate", false, move |args| {
                    let at = Instant::now();
                    let int = |i: usize| args.get(i).and_then(|v| v.get::<i32>().ok());
                    let (x, y, w, h) = (int(1)?, int(2)?, int(3)?, int(4)?);
                    let display = args.first()?.get::<glib::Object>().ok()?;
                    weak.upgrade()?.invalidated(&display, (x, y, w, h), at);
                    None
                });
                *self.display.borrow_mut() = Some(channel.clone());
            }
            CHANNEL_INPUTS => *self.inputs.borrow_mut() = Some(channel.clone()),
            _ => {}
        }
        // The session links its main channel; the others wait for the application.
        if kind != CHANNEL_MAIN && !ffi::channel_connect(&channel) {
            tracing::warn!(
                session = self.id,
                channel = kind,
                "cannot start a SPICE channel"
            );
        }
    }

    fn channel_event(&self, kind: i32, channel: &glib::Object, event: i32) {
        let why = || ffi::channel_error(channel).unwrap_or_else(|| "no detail".into());
        let failure = match event {
            EVENT_OPENED if kind == CHANNEL_MAIN => return self.emit(Event::Opened),
            EVENT_CLOSED if kind == CHANNEL_MAIN && !self.ending.get() => {
                Failure::Io("the desktop closed the connection".into())
            }
            EVENT_ERROR_CONNECT => Failure::Connect(why()),
            EVENT_ERROR_TLS => Failure::Tls(why()),
            EVENT_ERROR_LINK => Failure::Link(why()),
            EVENT_ERROR_AUTH => Failure::Auth,
            EVENT_ERROR_IO => Failure::Io(why()),
            _ => return,
        };
        tracing::warn!(session = self.id, channel = kind, error = %failure, "SPICE channel failed");
        self.fail(failure);
        self.disconnect();
    }

    /// Keeps the first failure: later ones are its consequences.
    fn fail(&self, failure: Failure) {
        self.failure.borrow_mut().get_or_insert(failure);
    }

    fn mouse_update(&self, main: &glib::Object) {
        let mode = if main.property::<i32>("mouse-mode") == MOUSE_MODE_CLIENT {
            MouseMode::Client
        } else {
            MouseMode::Server
        };
        self.mouse_mode.set(mode);
        self.emit(Event::MouseMode(mode));
    }

    fn primary_created(&self, display: &glib::Object) {
        let size = ffi::with_primary(display, |bytes, stride, format, w, h| {
            let mut frame = lock(&self.frame);
            frame.reset(w, h);
            if let Some(format) = pixel_format(format) {
                frame.copy_from(
                    bytes,
                    stride,
                    format,
                    Rect {
                        x: 0,
                        y: 0,
                        width: w,
                        height: h,
                    },
                );
            }
            (w, h)
        });
        if let Some((width, height)) = size {
            self.emit(Event::Primary { width, height });
        }
    }

    fn invalidated(&self, display: &glib::Object, (x, y, w, h): (i32, i32, i32, i32), at: Instant) {
        let rect = ffi::with_primary(display, |bytes, stride, format, width, height| {
            let mut frame = lock(&self.frame);
            if (frame.width, frame.height) != (width, height) {
                frame.reset(width, height);
            }
            let rect = Rect::clipped(x, y, w, h, width, height)?;
            frame.copy_from(bytes, stride, pixel_format(format)?, rect);
            Some(rect)
        });
        if let Some(Some(rect)) = rect {
            self.emit(Event::Invalidate { rect, at });
        }
    }

    fn key(&self, scancode: u32, down: bool) {
        if let Some(inputs) = &*self.inputs.borrow() {
            ffi::inputs_key(inputs, scancode, down);
        }
    }

    fn pointer(&self, x: u32, y: u32) {
        let (x, y) = (
            i32::try_from(x).unwrap_or(i32::MAX),
            i32::try_from(y).unwrap_or(i32::MAX),
        );
        let Some(inputs) = &*self.inputs.borrow() else {
            return;
        };
        match self.mouse_mode.get() {
            MouseMode::Client => ffi::inputs_position(inputs, x, y, self.buttons.get()),
            MouseMode::Server => {
                // Without a tablet the guest takes relative motion: send the difference.
                let (lx, ly) = self.last_pointer.get();
                ffi::inputs_motion(
                    inputs,
                    x.saturating_sub(lx),
                    y.saturating_sub(ly),
                    self.buttons.get(),
                );
            }
        }
        self.last_pointer.set((x, y));
    }

    fn button(&self, button: Button, down: bool) {
        let (code, mask) = button.codes();
        let buttons = if down {
            self.buttons.get() | mask
        } else {
            self.buttons.get() & !mask
        };
        self.buttons.set(buttons);
        if let Some(inputs) = &*self.inputs.borrow() {
            ffi::inputs_button(inputs, code, down, buttons);
        }
    }

    fn request_resolution(&self, width: u32, height: u32) {
        if let Some(main) = &*self.main.borrow() {
            let w = i32::try_from(width).unwrap_or(i32::MAX);
            let h = i32::try_from(height).unwrap_or(i32::MAX);
            ffi::main_request_resolution(main, w, h);
        }
    }

    fn disconnect(&self) {
        if !self.ending.replace(true) {
            ffi::session_disconnect(&self.session);
        }
    }

    /// The session is over: report it once and forget it (after this signal returns, so that
    /// the session object outlives its own emission).
    fn closed(&self) {
        let id = self.id;
        let Some(state) = SESSIONS.with(|m| m.borrow_mut().remove(&id)) else {
            return;
        };
        let failure = self.failure.borrow_mut().take();
        self.emit(Event::Closed(failure));
        glib::idle_add_local_once(move || drop(state));
    }
}

fn pixel_format(code: i32) -> Option<PixelFormat> {
    match code {
        ffi::SURFACE_FMT_32_XRGB | ffi::SURFACE_FMT_32_ARGB => Some(PixelFormat::Xrgb8888),
        ffi::SURFACE_FMT_16_565 => Some(PixelFormat::Rgb565),
        ffi::SURFACE_FMT_16_555 => Some(PixelFormat::Xrgb1555),
        _ => None,
    }
}

fn lock(frame: &Mutex<Frame>) -> std::sync::MutexGuard<'_, Frame> {
    // A consumer that panicked holding the lock left a frame that is still a frame.
    frame
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
