//! The running display as the VMM keeps it: a display process (tessera-display, see
//! [`super::process`]) serving SPICE, restarted by a supervisor thread whenever it dies, and
//! what the control API asks of it (tickets, disconnects, facts, screenshots). Screenshots
//! are taken here, from video memory, so they work whatever the display process does.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tessera_display_proto::{Command, Event, Link, Outcome, Settings, TlsSettings, MAX_TICKET};

use super::dispi::Dispi;
use super::input::InputRoute;
use super::process::{self, Guest, Reported, Running, StartError};
use crate::config::DisplayConfig;
use crate::devices::bus::lock;
use crate::sandbox::{Sandbox, SandboxError, ThreadKind};
use crate::vstate::framebuffer::Framebuffer;

/// Errors of the display service.
#[derive(Debug, thiserror::Error)]
pub enum DisplayError {
    /// The display process did not start.
    #[error(transparent)]
    Start(#[from] StartError),
    /// A request the display refuses (e.g. a ticket of the wrong length).
    #[error("{0}")]
    Refused(String),
    /// The display process failed the request.
    #[error("the display process failed: {0}")]
    Failed(String),
    /// The supervisor thread could not start.
    #[error(transparent)]
    Thread(#[from] SandboxError),
    /// The guest shows nothing now.
    #[error("the guest has not turned the display on")]
    Off,
    /// PNG encoding.
    #[error("screenshot: {0}")]
    Png(String),
}

/// What the display is made of.
pub struct DisplayParts {
    /// The adapter's registers.
    pub dispi: Arc<Mutex<Dispi>>,
    /// Video memory.
    pub fb: Arc<Framebuffer>,
    /// Where keys and the pointer go.
    pub input: InputRoute,
}

/// How long a command to the display process may take before it counts as hung.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// Restart delays: doubling from the first to the last while the process keeps dying young.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));
/// A process that served this long resets the backoff.
const HEALTHY: Duration = Duration::from_secs(10);

/// The ticket clients must present, kept to arm a restarted process until a client used it.
struct Armed {
    secret: String,
    until: Instant,
}

/// What the API thread and the supervisor share.
#[derive(Default)]
struct Shared {
    /// The running process's control link; None while it is being restarted.
    control: Mutex<Option<Link>>,
    /// The running process's event link, kept to cut a hung process off.
    events: Mutex<Option<Arc<Link>>>,
    /// The ticket to arm a restarted process with.
    ticket: Mutex<Option<Armed>>,
    /// What the running process reported.
    reported: Mutex<Reported>,
    /// Links refused by processes that have since died.
    refused_before: AtomicU64,
    /// Processes that died and were started again.
    restarts: AtomicU64,
    /// The running process's ID (0: none).
    pid: AtomicU32,
    /// Set when the VM ends: no more restarts.
    stop: AtomicBool,
}

/// What GET /display answers.
#[derive(Debug, Clone, Serialize)]
pub struct DisplayInfo {
    /// Current mode, if the guest shows anything.
    pub width: Option<u32>,
    /// Current mode.
    pub height: Option<u32>,
    /// SPICE address.
    pub address: String,
    /// Plain-text port.
    pub port: Option<u16>,
    /// TLS port.
    pub tls_port: Option<u16>,
    /// SHA-256 of the server certificate (DER, hex), for clients that pin it.
    pub tls_fingerprint: Option<String>,
    /// Frame rate cap.
    pub fps: u32,
    /// The resolution a client last asked for (its window's size), if any.
    pub requested_width: Option<u32>,
    /// The height of that request.
    pub requested_height: Option<u32>,
    /// Client links refused for their ticket (wrong, expired, none set) since the VMM started.
    pub refused_links: u64,
    /// Clients whose inputs channel is up: their keys and pointer reach the guest.
    pub input_clients: usize,
    /// The display process serving now (None while it is being restarted).
    pub process_id: Option<u32>,
    /// Display processes that died and were started again since the VMM started.
    pub restarts: u64,
}

/// The display of a running VM: its SPICE server runs in a display process of its own, which
/// a supervisor thread restarts whenever it dies.
pub struct DisplayService {
    dispi: Arc<Mutex<Dispi>>,
    fb: Arc<Framebuffer>,
    config: DisplayConfig,
    fingerprint: Option<String>,
    shared: Arc<Shared>,
}

/// SHA-256 of the first certificate in a PEM file, hex.
fn fingerprint(path: &std::path::Path) -> Option<String> {
    use rustls_pki_types::pem::PemObject;
    use sha2::{Digest, Sha256};
    let der = rustls_pki_types::CertificateDer::from_pem_file(path).ok()?;
    Some(
        Sha256::digest(&der)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    )
}

/// The supervisor's view: how to start a process and what it serves.
struct Supervisor {
    program: PathBuf,
    settings: Settings,
    guest: Guest,
    shared: Arc<Shared>,
}

impl Supervisor {
    /// Starts a process and hands its control link to the API side, arming the ticket a
    /// client has not used yet.
    fn start(&self) -> Result<(Arc<Link>, std::process::Child), StartError> {
        let Running {
            child,
            events,
            control,
        } = process::start(&self.program, &self.guest.fb, &self.settings)?;
        // Held until the new link is in place: a ticket set meanwhile either is armed here or
        // waits for this lock and then goes to the new process; none falls in between.
        let mut slot = lock(&self.shared.control);
        let armed = lock(&self.shared.ticket).as_ref().and_then(|t| {
            let left = t.until.saturating_duration_since(Instant::now());
            (!left.is_zero()).then(|| Command::SetTicket {
                ticket: t.secret.clone(),
                lifetime_secs: left.as_secs().max(1),
            })
        });
        if let Some(command) = armed {
            if let Err(e) = ask(&self.shared, &control, &command) {
                tracing::warn!(error = %e, "display: the new process did not take the ticket");
            }
        }
        self.shared.pid.store(child.id(), Ordering::Relaxed);
        *lock(&self.shared.events) = Some(events.clone());
        *slot = Some(control);
        Ok((events, child))
    }

    /// Serves the running process until it ends, then starts the next, until the VM ends.
    fn run(self, mut events: Arc<Link>, mut child: std::process::Child) {
        let mut backoff = BACKOFF.0;
        loop {
            let since = Instant::now();
            let shared = &self.shared;
            let why = self.guest.serve(&events, |e| match e {
                // Spent: a restarted process must not take it again.
                Event::TicketUsed => *lock(&shared.ticket) = None,
                _ => lock(&shared.reported).apply(e),
            });
            if let Some(c) = lock(&self.shared.control).take() {
                c.shutdown();
            }
            self.shared.cut();
            let _ = child.kill();
            let status = child.wait();
            self.shared.pid.store(0, Ordering::Relaxed);
            if self.shared.stop.load(Ordering::Relaxed) {
                return;
            }
            {
                let mut r = lock(&self.shared.reported);
                self.shared
                    .refused_before
                    .fetch_add(r.refused_links, Ordering::Relaxed);
                *r = Reported {
                    requested: r.requested,
                    ..Reported::default()
                };
            }
            let restarts = self.shared.restarts.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(
                status = %status.map_or_else(|e| e.to_string(), describe),
                link = %why,
                restarts,
                "display process died: its clients were cut off; starting another (the guest runs on)"
            );
            if since.elapsed() >= HEALTHY {
                backoff = BACKOFF.0;
            }
            loop {
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(BACKOFF.1);
                if self.shared.stop.load(Ordering::Relaxed) {
                    return;
                }
                match self.start() {
                    Ok((e, c)) => {
                        (events, child) = (e, c);
                        tracing::info!(pid = child.id(), "display process restarted");
                        break;
                    }
                    Err(e) => tracing::error!(error = %e, "display process did not restart"),
                }
            }
        }
    }
}

impl Shared {
    /// Ends the links to the running process: the supervisor sees its event link end, kills
    /// the process and starts another.
    fn cut(&self) {
        if let Some(e) = lock(&self.events).take() {
            e.shutdown();
        }
    }
}

/// How a display process ended, for the log.
fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (_, Some(libc::SIGSEGV)) => "killed by SIGSEGV (a crash in libspice-server)".into(),
        (_, Some(libc::SIGSYS)) => {
            "killed by SIGSYS (a system call outside its seccomp filter)".into()
        }
        (_, Some(libc::SIGKILL)) => "killed by SIGKILL".into(),
        (_, Some(libc::SIGABRT)) => "killed by SIGABRT (it aborted)".into(),
        (_, Some(sig)) => format!("killed by signal {sig}"),
        _ => format!("{status}"),
    }
}

/// Sends `command` and waits for its outcome. A process that does not answer is dead or
/// hung: it is cut off, and that is no error of the request's: the supervisor starts another,
/// which has no clients and takes the armed ticket, if any.
fn ask(shared: &Shared, control: &Link, command: &Command) -> Result<(), DisplayError> {
    let answer = control
        .send(command)
        .and_then(|()| control.set_read_timeout(Some(COMMAND_TIMEOUT)))
        .and_then(|()| control.recv::<Outcome>());
    match answer {
        Ok(Outcome::Done) => Ok(()),
        Ok(Outcome::Refused { message }) => Err(DisplayError::Refused(message)),
        Ok(Outcome::Failed { message }) => Err(DisplayError::Failed(message)),
        Err(e) => {
            tracing::warn!(error = %e, "display: the process did not answer; cutting it off");
            control.shutdown();
            shared.cut();
            Ok(())
        }
    }
}

impl DisplayService {
    /// Starts the display process per `cfg` (locked until a ticket is set) and its supervisor.
    pub fn start(
        cfg: &DisplayConfig,
        name: &str,
        parts: DisplayParts,
        sandbox: &Sandbox,
    ) -> Result<Arc<Self>, DisplayError> {
        let DisplayParts { dispi, fb, input } = parts;
        let tls = match (cfg.tls_port, &cfg.x509_dir) {
            (Some(port), Some(dir)) => Some(TlsSettings {
                port,
                ca: dir.join("ca-cert.pem"),
                cert: dir.join("server-cert.pem"),
                key: dir.join("server-key.pem"),
            }),
            _ => None,
        };
        let fingerprint = tls.as_ref().and_then(|t| fingerprint(&t.cert));
        let settings = Settings {
            name: name.to_string(),
            address: cfg.address,
            port: cfg.port,
            tls,
            compression: cfg.compression,
            fps: cfg.fps,
            video_memory: fb.len(),
        };
        let shared = Arc::new(Shared::default());
        let supervisor = Supervisor {
            program: process::program()?,
            settings,
            guest: Guest {
                dispi: dispi.clone(),
                fb: fb.clone(),
                input,
            },
            shared: shared.clone(),
        };
        // The first process starts here, so a port in use or a bad certificate fails the VM's
        // start as it would with SPICE in the VMM.
        let (events, child) = supervisor.start()?;
        tracing::info!(address = %cfg.address, port = ?cfg.port, tls_port = ?cfg.tls_port,
            pid = child.id(), "SPICE display serving (display process)");
        sandbox.spawn(ThreadKind::Display, "display".into(), move || {
            supervisor.run(events, child)
        })?;
        Ok(Arc::new(Self {
            dispi,
            fb,
            config: cfg.clone(),
            fingerprint,
            shared,
        }))
    }

    /// Sends `command` to the running process; while it is being restarted there is nothing
    /// to send it to (the restarted one gets the armed ticket, and has no clients).
    fn command(&self, command: &Command) -> Result<(), DisplayError> {
        let control = lock(&self.shared.control);
        match control.as_ref() {
            Some(c) => ask(&self.shared, c, command),
            None => Ok(()),
        }
    }

    /// Sets the one-time ticket clients must present, valid `lifetime`.
    pub fn set_ticket(&self, ticket: &str, lifetime: Duration) -> Result<(), DisplayError> {
        if ticket.is_empty() || ticket.len() > MAX_TICKET {
            return Err(DisplayError::Refused(format!(
                "a ticket has 1 to {MAX_TICKET} bytes"
            )));
        }
        *lock(&self.shared.ticket) = Some(Armed {
            secret: ticket.to_string(),
            until: Instant::now() + lifetime,
        });
        self.command(&Command::SetTicket {
            ticket: ticket.to_string(),
            lifetime_secs: lifetime.as_secs(),
        })
    }

    /// Locks the display until the next ticket.
    pub fn clear_ticket(&self) -> Result<(), DisplayError> {
        *lock(&self.shared.ticket) = None;
        self.command(&Command::ClearTicket)
    }

    /// Locks the display and disconnects its client: the session it belonged to ended.
    pub fn disconnect(&self) -> Result<(), DisplayError> {
        *lock(&self.shared.ticket) = None;
        self.command(&Command::Disconnect)
    }

    /// Display processes restarted so far.
    pub fn restarts(&self) -> u64 {
        self.shared.restarts.load(Ordering::Relaxed)
    }

    /// Facts for the control API.
    pub fn info(&self) -> DisplayInfo {
        let mode = lock(&self.dispi).mode();
        let reported = *lock(&self.shared.reported);
        let pid = self.shared.pid.load(Ordering::Relaxed);
        DisplayInfo {
            width: mode.map(|m| m.width),
            height: mode.map(|m| m.height),
            address: self.config.address.to_string(),
            port: self.config.port,
            tls_port: self.config.tls_port,
            tls_fingerprint: self.fingerprint.clone(),
            fps: self.config.fps,
            requested_width: reported.requested.map(|r| r.0),
            requested_height: reported.requested.map(|r| r.1),
            refused_links: self.shared.refused_before.load(Ordering::Relaxed)
                + reported.refused_links,
            input_clients: reported.input_clients as usize,
            process_id: (pid != 0).then_some(pid),
            restarts: self.restarts(),
        }
    }

    /// The guest's screen as a PNG (RGB, the current mode's size).
    pub fn screenshot_png(&self) -> Result<Vec<u8>, DisplayError> {
        let mode = lock(&self.dispi).mode().ok_or(DisplayError::Off)?;
        let (w, h) = (mode.width as usize, mode.height as usize);
        let mut line = vec![0u8; w * 4];
        let mut rgb = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            self.fb.read(mode.offset + y * mode.stride, &mut line);
            for px in line.chunks_exact(4) {
                // Video memory holds little-endian xRGB: B, G, R, X.
                rgb.extend_from_slice(&[px[2], px[1], px[0]]);
            }
        }
        let mut out = Vec::new();
        let mut enc = png::Encoder::new(&mut out, mode.width, mode.height);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let png_err = |e: png::EncodingError| DisplayError::Png(e.to_string());
        let mut writer = enc.write_header().map_err(png_err)?;
        writer.write_image_data(&rgb).map_err(png_err)?;
        writer.finish().map_err(png_err)?;
        Ok(out)
    }
}

impl Drop for DisplayService {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(c) = lock(&self.shared.control).take() {
            c.shutdown();
        }
        self.shared.cut();
    }
}
