//! tessera-client: sign in to a Tessera broker and use your desktop.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use raw_window_handle::{HasWindowHandle, RawWindowHandle};
use tessera_client::settings::Settings;
use tessera_client::App;

/// Tessera's thin client: sign in to your organisation's Tessera broker, pick a desktop and
/// use it in this window.
///
/// The broker's address and your user name are remembered in the settings file (never your
/// password). The broker's certificate must be signed by an authority this computer trusts,
/// or by the CA file your administrator gives you (--ca); otherwise the client shows the
/// certificate's fingerprint and asks before trusting it.
///
/// In a desktop: the toolbar disconnects (the desktop keeps running for you), logs off (it
/// goes back to its pool), sends Ctrl+Alt+Del and switches full screen. Resizing the window
/// asks the desktop for that resolution. A dropped connection reconnects by itself.
///
/// Clicking into the desktop (or going full screen) captures the keyboard on X11, so that
/// Alt+Tab, the Windows key and the like reach the desktop instead of your own window
/// manager; press and release Ctrl+Alt together to give the keyboard back.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// A connection file (.vv, as the broker's web page or remote-viewer uses) to open
    /// directly instead of signing in.
    file: Option<PathBuf>,
    /// The broker (host[:port] or https://host[:port]); remembered.
    #[arg(long)]
    broker: Option<String>,
    /// Your user name (DOMAIN\user, user@domain or a local account); remembered.
    #[arg(long)]
    user: Option<String>,
    /// A PEM file of the CA that signs the broker's certificate; remembered.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// The settings file [default: $XDG_CONFIG_HOME/tessera/client.toml].
    #[arg(long)]
    config: Option<PathBuf>,
    /// Append, for each screen update, the microseconds from its arrival to its presentation
    /// to this file (for `cargo xtask bench-client`).
    #[arg(long, value_name = "FILE")]
    latency_trace: Option<PathBuf>,
    /// Window size, WIDTHxHEIGHT.
    #[arg(long, default_value = "1280x800", value_parser = parse_size)]
    size: (f32, f32),
}

fn parse_size(s: &str) -> Result<(f32, f32), String> {
    let (w, h) = s
        .split_once('x')
        .ok_or("expected WIDTHxHEIGHT, e.g. 1280x800")?;
    let w: u32 = w.parse().map_err(|_| format!("bad width {w:?}"))?;
    let h: u32 = h.parse().map_err(|_| format!("bad height {h:?}"))?;
    if !(320..=8192).contains(&w) || !(200..=8192).contains(&h) {
        return Err("the window must be 320x200 to 8192x8192".into());
    }
    Ok((w as f32, h as f32))
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "tessera_client=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let path = args.config.or_else(Settings::default_path);
    let mut settings = match &path {
        Some(p) => Settings::load(p)?,
        None => Settings::default(),
    };
    if let Some(b) = args.broker {
        settings.broker = b;
    }
    if let Some(u) = args.user {
        settings.user = u;
    }
    if let Some(ca) = args.ca {
        let ca = std::fs::canonicalize(&ca).with_context(|| format!("--ca {}", ca.display()))?;
        settings.ca_file = Some(ca);
    }
    let direct = match &args.file {
        Some(f) => Some(tessera_client::vv::open(f)?),
        None => None,
    };
    let mut app = App::new(settings, path);
    app.latency_trace = args.latency_trace;
    let options = eframe::NativeOptions {
        renderer: eframe::Renderer::Glow,
        viewport: egui::ViewportBuilder::default()
            .with_title("Tessera")
            .with_inner_size(args.size),
        ..Default::default()
    };
    eframe::run_native(
        "Tessera",
        options,
        Box::new(move |cc| {
            let mut app = app;
            app.x11_window = x11_window(cc);
            if let Some(g) = direct {
                app.open_direct(&cc.egui_ctx, g);
            }
            Ok(Box::new(Window(app)))
        }),
    )
    .map_err(|e| anyhow::anyhow!("cannot open the window: {e}"))
}

/// The X11 id of the window, for keyboard capture (none under Wayland).
fn x11_window(w: &impl HasWindowHandle) -> Option<u32> {
    match w.window_handle().ok()?.as_raw() {
        RawWindowHandle::Xlib(h) => u32::try_from(h.window).ok(),
        RawWindowHandle::Xcb(h) => Some(h.window.get()),
        _ => None,
    }
}

struct Window(App);

// The window is cleared to the panel's colour and the panel paints no background of its own:
// under software GL a full-window fill is one more pass over every pixel on every frame.
impl eframe::App for Window {
    fn clear_color(&self, visuals: &egui::Visuals) -> [f32; 4] {
        visuals.panel_fill.to_normalized_gamma_f32()
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        let frame = egui::Frame::central_panel(ui.style()).fill(egui::Color32::TRANSPARENT);
        egui::CentralPanel::default()
            .frame(frame)
            .show(ui, |ui| self.0.ui_root(ui));
    }
}
