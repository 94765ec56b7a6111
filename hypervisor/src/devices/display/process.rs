//! The display process (tessera-display) seen from the VMM: starting one, and serving what it
//! sends. This is a trust boundary: the process runs libspice-server, which parses whatever
//! clients send, so everything it says is checked here like a guest's register writes: sizes
//! bounded by the link, pointer positions scaled into the tablet's range, frames answered only
//! with the guest's own mode and dirty log. A malformed message ends the process (the
//! supervisor in [`super::service`] starts another).

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tessera_display_proto::{send_fds, Event, Frame, Link, LinkError, Settings};

use super::dispi::Dispi;
use super::input::InputRoute;
use crate::devices::bus::lock;
use crate::vstate::framebuffer::Framebuffer;

/// The program's name, looked for next to tessera-vmm.
pub const PROGRAM: &str = "tessera-display";
/// How long a new display process may take to start serving.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// A serving process asks for a frame at least once a second; this long without a message
/// means it hangs (generous: a loaded host must not cost a healthy display its clients).
pub const SILENCE: Duration = Duration::from_secs(30);

/// The log filter display processes get: the VMM's own (set once by its main).
pub static LOG_FILTER: OnceLock<String> = OnceLock::new();

/// Why a display process could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The program is not installed.
    #[error("{PROGRAM} was found neither next to tessera-vmm ({0}) nor on PATH; install it there or set TESSERA_DISPLAY to its path")]
    NotFound(PathBuf),
    /// The process or its sockets could not be made.
    #[error("cannot start {PROGRAM}: {0}")]
    Spawn(std::io::Error),
    /// It did not take its settings or did not start serving.
    #[error("{PROGRAM} did not start serving: {0}")]
    Handshake(LinkError),
    /// It exited during start-up (its own error is on stderr).
    #[error("{PROGRAM} exited during start-up ({0}); its error is above")]
    Exited(std::process::ExitStatus),
}

/// Where the program is: TESSERA_DISPLAY, else next to this executable, else on PATH.
pub fn program() -> Result<PathBuf, StartError> {
    if let Some(p) = std::env::var_os("TESSERA_DISPLAY") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().map_err(StartError::Spawn)?;
    let beside = exe.parent().unwrap_or(Path::new("/")).join(PROGRAM);
    if beside.is_file() {
        return Ok(beside);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(PROGRAM))
        .find(|p| p.is_file())
        .ok_or(StartError::NotFound(beside))
}

/// A running display process.
pub struct Running {
    /// The process.
    pub child: Child,
    /// Its event link (we read: input and frame requests).
    pub events: Arc<Link>,
    /// Its control link (we ask: tickets, disconnects).
    pub control: Link,
}

/// Starts `program` for video memory `fb` with `settings`, and waits until it serves.
pub fn start(program: &Path, fb: &Framebuffer, settings: &Settings) -> Result<Running, StartError> {
    let (events, theirs) = UnixStream::pair().map_err(StartError::Spawn)?;
    let (control, their_control) = UnixStream::pair().map_err(StartError::Spawn)?;
    let video = fb.read_only_file().map_err(StartError::Spawn)?;
    let log = LOG_FILTER.get().map_or("warn", String::as_str);
    let mut child = Command::new(program)
        .arg("--log")
        .arg(log)
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .stdout(Stdio::null())
        .spawn()
        .map_err(StartError::Spawn)?;
    let handshake = (|| -> Result<Link, LinkError> {
        send_fds(&events, &video, OwnedFd::from(their_control))?;
        drop(video);
        let events = Link::new(events);
        events.send(settings)?;
        events.set_read_timeout(Some(START_TIMEOUT))?;
        let deadline = Instant::now() + START_TIMEOUT;
        // Only Ready is expected before serving starts; anything else is a broken process.
        loop {
            match events.recv::<Event>()? {
                Event::Ready => break,
                other if Instant::now() < deadline => {
                    tracing::debug!(?other, "display: event before Ready ignored")
                }
                _ => return Err(LinkError::Closed),
            }
        }
        events.set_read_timeout(Some(SILENCE))?;
        Ok(events)
    })();
    match handshake {
        Ok(events) => Ok(Running {
            child,
            events: Arc::new(events),
            control: Link::new(control),
        }),
        Err(e) => {
            let _ = child.kill();
            match child.wait() {
                Ok(status) if !matches!(e, LinkError::Io(_)) => Err(StartError::Exited(status)),
                _ => Err(StartError::Handshake(e)),
            }
        }
    }
}

/// The guest's devices that client input reaches, and what the process reports.
pub struct Guest {
    /// The adapter's registers (the mode frames carry, and the pointer's scale).
    pub dispi: Arc<Mutex<Dispi>>,
    /// Video memory (its dirty log).
    pub fb: Arc<Framebuffer>,
    /// Where keys and the pointer go.
    pub input: InputRoute,
}

/// What the process reported that the VMM keeps.
#[derive(Debug, Default, Clone, Copy)]
pub struct Reported {
    /// Clients whose inputs channel is up.
    pub input_clients: u32,
    /// Links this process refused for their ticket.
    pub refused_links: u64,
    /// The resolution a client last asked for.
    pub requested: Option<(u32, u32)>,
}

impl Guest {
    /// Serves `events` until the link ends: input into the guest, frames out. Returns why it
    /// ended; `report` is called with each change of what the process reports.
    pub fn serve(&self, events: &Link, mut report: impl FnMut(&Event)) -> LinkError {
        let mut mapped_at = None;
        loop {
            let event = match events.recv::<Event>() {
                Ok(e) => e,
                Err(e) => return e,
            };
            match event {
                Event::Key { scancode } => self.input.key(scancode),
                Event::Pointer { x, y, buttons } => {
                    // SPICE's coordinates are the surface's, which is the guest's mode.
                    let (w, h) = lock(&self.dispi)
                        .mode()
                        .map_or((640, 480), |m| (m.width, m.height));
                    self.input.move_to(x, y, w, h, buttons);
                }
                // Server mouse mode (a client without absolute pointing): the PS/2 mouse.
                Event::Motion { dx, dy, buttons } => self.input.motion(dx, dy, buttons),
                Event::Buttons { buttons } => self.input.buttons(buttons),
                // In client mouse mode spice-server hands every button *press* to the
                // tablet's wheel callback (delta 0 unless it is the wheel).
                Event::Wheel { delta, buttons } => self.input.wheel(delta, buttons),
                Event::FrameRequest => {
                    let frame = self.frame(&mut mapped_at);
                    if let Err(e) = events.send(&frame) {
                        return e;
                    }
                }
                Event::Ready | Event::Resize { .. } | Event::TicketUsed | Event::Status { .. } => {
                    report(&event)
                }
            }
        }
    }

    /// The mode and the pages written since the last frame.
    fn frame(&self, mapped_at: &mut Option<u64>) -> Frame {
        let mode = lock(&self.dispi).mode();
        let dirty = match self.fb.take_dirty() {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "display: no dirty log this frame");
                None
            }
        };
        let now = self.fb.mapped_at();
        let moved = now != *mapped_at;
        *mapped_at = now;
        Frame { mode, dirty, moved }
    }
}

impl Reported {
    /// Takes in one reported event.
    pub fn apply(&mut self, event: &Event) {
        match *event {
            Event::Status {
                input_clients,
                refused_links,
            } => {
                self.input_clients = input_clients;
                self.refused_links = refused_links;
            }
            Event::Resize { width, height } => {
                // The bochs adapter has no hot-plug signal: the guest picks its own mode, and
                // a guest agent would act on this. It is kept for the control API.
                tracing::info!(
                    width,
                    height,
                    "display: the client would like another resolution"
                );
                self.requested = Some((width, height));
            }
            _ => {}
        }
    }
}
