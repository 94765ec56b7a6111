//! The running display: the SPICE server fed by the refresh thread, client input into the
//! guest's i8042, and what the control API asks of it (tickets, facts, screenshots).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tessera_spice::core::{ChannelEvent, ChannelEventKind};
use tessera_spice::{ClientEvents, Config, Server, SpiceError, TlsFiles};

use super::dispi::Dispi;
use super::refresh::{Clients, Refresh};
use crate::config::DisplayConfig;
use crate::devices::bus::lock;
use crate::devices::legacy::i8042::I8042;
use crate::devices::virtio::input::TabletHandle;
use crate::vstate::framebuffer::Framebuffer;

/// Errors of the display service.
#[derive(Debug, thiserror::Error)]
pub enum DisplayError {
    /// SPICE refused.
    #[error(transparent)]
    Spice(#[from] SpiceError),
    /// The display thread could not start.
    #[error("cannot start the display thread: {0}")]
    Thread(std::io::Error),
    /// The guest shows nothing now.
    #[error("the guest has not turned the display on")]
    Off,
    /// PNG encoding.
    #[error("screenshot: {0}")]
    Png(String),
}

/// Client input, delivered to the guest's devices.
struct GuestInput {
    i8042: Arc<Mutex<I8042>>,
    pointer: TabletHandle,
    dispi: Arc<Mutex<Dispi>>,
    clients: Arc<Clients>,
    requested: Arc<Mutex<Option<(u32, u32)>>>,
    inputs: Arc<Mutex<BTreeSet<i32>>>,
}

/// What the display is made of.
pub struct DisplayParts {
    /// The adapter's registers.
    pub dispi: Arc<Mutex<Dispi>>,
    /// Video memory.
    pub fb: Arc<Framebuffer>,
    /// The PS/2 controller: keys, and relative motion for its mouse.
    pub keys: Arc<Mutex<I8042>>,
    /// The absolute pointer.
    pub pointer: TabletHandle,
}

impl ClientEvents for GuestInput {
    fn key(&self, scancode: u8) {
        lock(&self.i8042).key(scancode);
    }
    fn pointer_absolute(&self, x: i32, y: i32, buttons: u32) {
        // SPICE's coordinates are the surface's, which is the guest's mode.
        let (w, h) = lock(&self.dispi)
            .mode()
            .map_or((640, 480), |m| (m.width, m.height));
        self.pointer.move_to(x, y, w, h, buttons);
    }
    fn pointer_relative(&self, dx: i32, dy: i32, _dz: i32, buttons: u32) {
        // Server mouse mode (a client without absolute pointing): the PS/2 mouse.
        lock(&self.i8042).mouse(dx, dy, buttons);
    }
    fn buttons(&self, buttons: u32) {
        self.pointer.buttons(buttons);
    }
    fn wheel(&self, delta: i32, buttons: u32) {
        // In client mouse mode spice-server hands every button *press* to the tablet's wheel
        // callback (delta 0 unless it is the wheel); only releases come through buttons().
        self.pointer.buttons(buttons);
        self.pointer.wheel(delta);
    }
    fn channel(&self, e: ChannelEvent) {
        match (e.channel_type, e.kind) {
            // Main channels count clients: the refresh thread runs at full rate only for them.
            (1, ChannelEventKind::Initialized) => self.clients.update(e.connection_id, true),
            (1, ChannelEventKind::Disconnected) => self.clients.update(e.connection_id, false),
            // Inputs channels: a client's keys reach the guest only once its own is up.
            (3, ChannelEventKind::Initialized) => {
                lock(&self.inputs).insert(e.connection_id);
            }
            (3, ChannelEventKind::Disconnected) => {
                lock(&self.inputs).remove(&e.connection_id);
            }
            _ => {}
        }
    }
    fn resize_request(&self, width: u32, height: u32) {
        // The bochs adapter has no hot-plug signal: the guest picks its own mode, and a guest
        // agent would act on this. It is kept for the control API.
        tracing::info!(
            width,
            height,
            "display: the client would like another resolution"
        );
        *lock(&self.requested) = Some((width, height));
    }
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
}

/// The display of a running VM.
pub struct DisplayService {
    server: Arc<Mutex<Server>>,
    dispi: Arc<Mutex<Dispi>>,
    fb: Arc<Framebuffer>,
    stop: Arc<AtomicBool>,
    config: DisplayConfig,
    fingerprint: Option<String>,
    requested: Arc<Mutex<Option<(u32, u32)>>>,
    inputs: Arc<Mutex<BTreeSet<i32>>>,
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

impl DisplayService {
    /// Starts SPICE per `cfg` (locked until a ticket is set) and the refresh thread.
    pub fn start(
        cfg: &DisplayConfig,
        name: &str,
        parts: DisplayParts,
    ) -> Result<Arc<Self>, DisplayError> {
        let DisplayParts {
            dispi,
            fb,
            keys,
            pointer,
        } = parts;
        let tls = match (cfg.tls_port, &cfg.x509_dir) {
            (Some(port), Some(dir)) => Some(TlsFiles {
                port,
                ca: dir.join("ca-cert.pem"),
                cert: dir.join("server-cert.pem"),
                key: dir.join("server-key.pem"),
            }),
            _ => None,
        };
        let fingerprint = tls.as_ref().and_then(|t| fingerprint(&t.cert));
        let spice = Config {
            name: name.to_string(),
            address: cfg.address,
            port: cfg.port,
            tls,
            compression: cfg.compression,
        };
        // A small placeholder surface until the guest sets a mode.
        let clients = Arc::new(Clients::default());
        let requested = Arc::new(Mutex::new(None));
        let inputs = Arc::new(Mutex::new(BTreeSet::new()));
        let input = GuestInput {
            i8042: keys,
            pointer,
            dispi: dispi.clone(),
            clients: clients.clone(),
            requested: requested.clone(),
            inputs: inputs.clone(),
        };
        let server = Server::start(&spice, Arc::new(input), 640, 480)?;
        let service = Arc::new(Self {
            server: Arc::new(Mutex::new(server)),
            dispi,
            fb,
            stop: Arc::new(AtomicBool::new(false)),
            config: cfg.clone(),
            fingerprint,
            requested,
            inputs,
        });
        let refresh = Refresh {
            dispi: service.dispi.clone(),
            fb: service.fb.clone(),
            server: service.server.clone(),
            fps: cfg.fps,
            stop: service.stop.clone(),
            clients,
        };
        std::thread::Builder::new()
            .name("display".into())
            .spawn(move || refresh.run())
            .map_err(DisplayError::Thread)?;
        tracing::info!(address = %cfg.address, port = ?cfg.port, tls_port = ?cfg.tls_port, "SPICE display serving");
        Ok(service)
    }

    /// Sets the one-time ticket clients must present, valid `lifetime`.
    pub fn set_ticket(&self, ticket: &str, lifetime: Duration) -> Result<(), DisplayError> {
        Ok(lock(&self.server).set_ticket(ticket, lifetime)?)
    }

    /// Locks the display until the next ticket.
    pub fn clear_ticket(&self) -> Result<(), DisplayError> {
        Ok(lock(&self.server).clear_ticket()?)
    }

    /// Locks the display and disconnects its client: the session it belonged to ended.
    pub fn disconnect(&self) -> Result<(), DisplayError> {
        Ok(lock(&self.server).disconnect_clients()?)
    }

    /// Facts for the control API.
    pub fn info(&self) -> DisplayInfo {
        let mode = lock(&self.dispi).mode();
        let requested = *lock(&self.requested);
        DisplayInfo {
            width: mode.map(|m| m.width),
            height: mode.map(|m| m.height),
            address: self.config.address.to_string(),
            port: self.config.port,
            tls_port: self.config.tls_port,
            tls_fingerprint: self.fingerprint.clone(),
            fps: self.config.fps,
            requested_width: requested.map(|r| r.0),
            requested_height: requested.map(|r| r.1),
            refused_links: tessera_spice::refused_links(),
            input_clients: lock(&self.inputs).len(),
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
        self.stop.store(true, Ordering::Relaxed);
    }
}
