//! The desktop in a window: a tessera-spice-client session drawn as one texture (`gl_picture`),
//! updated rectangle by rectangle as the server reports them, scaled to fit; keys as scancodes, the
//! pointer as absolute positions in the guest's pixels, the window size as a resolution
//! request.

use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use egui::{Color32, Event as UiEvent, Modifiers, PointerButton, Rect, Vec2};
use tessera_spice_client::{Button, ConnectOptions, Event, Failure, Frame, Session};

use crate::broker::{Display, Granted};
use crate::gl_picture::GlPicture;
use crate::grab::{GrabEvent, KeyboardGrab};
use crate::keymap;
use crate::tunnel::{LocalTunnel, TunnelTarget};

/// How long the window must keep a size before the guest is asked for it.
const RESIZE_SETTLE: Duration = Duration::from_millis(500);

/// Where the session is.
#[derive(Clone, Debug, PartialEq)]
pub enum State {
    /// Linking and authenticating.
    Connecting,
    /// Showing the desktop.
    Open,
    /// Over: `None` when the user ended it.
    Ended(Option<Failure>),
}

/// What the user (or the session) asks of the app.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Leave the desktop running (the broker keeps it for the user).
    Disconnect,
    /// End the session: the desktop goes back to its pool.
    LogOff,
    /// The connection dropped: get a new ticket and connect again.
    Reconnect,
    /// Power-cycle the desktop, then connect again.
    Restart,
}

/// A desktop session on screen.
pub struct Remote {
    /// What the broker gave.
    pub granted: Granted,
    /// Whether a broker can restart the desktop (not for a connection file's desktop).
    pub restartable: bool,
    session: Session,
    events: Receiver<Event>,
    picture: GlPicture,
    size: [u32; 2],
    /// Where the session is.
    pub state: State,
    modifiers: Modifiers,
    pointer: Option<(u32, u32)>,
    asked_size: Option<[u32; 2]>,
    window_size: Option<([u32; 2], Instant)>,
    /// Screen updates received so far (for tests and the status line).
    pub updates: u64,
    trace: Option<LatencyTrace>,
    /// Keyboard capture (X11), with the keys it reads.
    capture: Option<(KeyboardGrab, Receiver<GrabEvent>)>,
    /// The broker's display tunnel, when the session goes through it (dropped after the
    /// session, which is declared before it).
    _tunnel: Option<LocalTunnel>,
}

/// `--latency-trace`: for each dirty rectangle, the microseconds from its arrival (the SPICE
/// library's callback) to the start of the UI frame after the one that uploaded it, by which
/// time eframe has drawn and swapped that frame: arrival to presentation.
pub struct LatencyTrace {
    out: std::io::BufWriter<std::fs::File>,
    uploaded: Vec<Instant>,
}

impl LatencyTrace {
    /// Appends to `path`.
    pub fn create(path: &std::path::Path) -> std::io::Result<Self> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Self {
            out: std::io::BufWriter::new(f),
            uploaded: Vec::new(),
        })
    }

    fn presented(&mut self, now: Instant) {
        use std::io::Write;
        for at in self.uploaded.drain(..) {
            let _ = writeln!(self.out, "{}", now.duration_since(at).as_micros());
        }
        let _ = self.out.flush();
    }
}

/// The connection options for `display` with `ticket`.
pub fn options(display: &Display, ticket: &str) -> ConnectOptions {
    ConnectOptions {
        host: display.host.clone(),
        port: display.port,
        tls_port: display.tls_port,
        password: Some(ticket.to_string()),
        ca_pem: display.ca.as_ref().map(|c| c.clone().into_bytes()),
        cert_subject: None,
        proxy: None,
    }
}

impl Remote {
    /// Starts connecting to `granted`'s desktop, through the broker's tunnel when `tunnel` is
    /// given; the UI is repainted as events arrive.
    pub fn connect(
        granted: Granted,
        ctx: &egui::Context,
        trace: Option<LatencyTrace>,
        tunnel: Option<TunnelTarget>,
    ) -> Result<Self, String> {
        let display = granted
            .display
            .as_ref()
            .ok_or_else(|| format!("desktop {} has no display", granted.desktop))?;
        let tunnel = tunnel
            .map(LocalTunnel::start)
            .transpose()
            .map_err(|e| e.to_string())?;
        let mut options = options(display, &granted.ticket);
        options.proxy = tunnel.as_ref().map(LocalTunnel::proxy_url);
        let (tx, events) = channel();
        let repaint = ctx.clone();
        let session = Session::connect(options, move |e, _: &Frame| {
            let _ = tx.send(e);
            repaint.request_repaint();
        })
        .map_err(|e| format!("cannot connect to {}: {e}", granted.desktop))?;
        let picture = GlPicture::new(session.frame().clone());
        Ok(Self {
            granted,
            restartable: false,
            session,
            events,
            picture,
            size: [0, 0],
            state: State::Connecting,
            modifiers: Modifiers::NONE,
            pointer: None,
            asked_size: None,
            window_size: None,
            updates: 0,
            trace,
            capture: None,
            _tunnel: tunnel,
        })
    }

    /// The guest's screen size (0x0 before the first frame).
    pub fn size(&self) -> [u32; 2] {
        self.size
    }

    /// The session's frame (for tests: what the client received).
    pub fn frame(&self) -> &std::sync::Arc<std::sync::Mutex<Frame>> {
        self.session.frame()
    }

    /// Ends the connection (the broker is told by the app).
    pub fn close(&self) {
        if let Some((g, _)) = &self.capture {
            g.release();
        }
        self.session.disconnect();
    }

    /// Lets the user capture the keyboard of the X11 window `window`: a click on the desktop
    /// (or full screen) captures it, Ctrl+Alt gives it back.
    pub fn enable_capture(&mut self, window: u32, ctx: &egui::Context) {
        let (tx, rx) = channel();
        let repaint = ctx.clone();
        match KeyboardGrab::new(window, tx, move || repaint.request_repaint()) {
            Ok(g) => self.capture = Some((g, rx)),
            Err(e) => tracing::warn!("no keyboard capture: {e}"),
        }
    }

    /// Whether the keyboard is captured.
    pub fn captured(&self) -> bool {
        self.capture.as_ref().is_some_and(|(g, _)| g.active())
    }

    fn capture_keyboard(&mut self) {
        let Some((g, _)) = &self.capture else { return };
        if g.active() {
            return;
        }
        match g.grab() {
            Ok(()) => tracing::info!("keyboard captured (Ctrl+Alt releases it)"),
            Err(e) => tracing::warn!("cannot capture the keyboard: {e}"),
        }
    }

    /// Passes captured keys on; `true` when the user released the capture.
    fn pump_capture(&mut self) -> bool {
        let Some((_, rx)) = &self.capture else {
            return false;
        };
        let mut released = false;
        while let Ok(e) = rx.try_recv() {
            match e {
                GrabEvent::Key { code, down } => self.session.key(code, down),
                GrabEvent::Released => released = true,
            }
        }
        if released {
            tracing::info!("keyboard released");
        }
        released
    }

    /// Sends Ctrl+Alt+Del (the local system would act on the real chord).
    pub fn ctrl_alt_del(&self) {
        for (code, down) in [
            (keymap::CTRL, true),
            (keymap::ALT, true),
            (keymap::DELETE, true),
            (keymap::DELETE, false),
            (keymap::ALT, false),
            (keymap::CTRL, false),
        ] {
            self.session.key(code, down);
        }
    }

    /// Applies what the session reported since the last frame; `Some` when it dropped.
    fn pump(&mut self, ctx: &egui::Context) -> Option<Action> {
        while let Ok(e) = self.events.try_recv() {
            match e {
                Event::Opened => self.state = State::Open,
                Event::Primary { width, height } => {
                    self.size = [width, height];
                    self.picture.replaced();
                    self.updates += 1;
                }
                Event::Invalidate { rect, at } => {
                    if let Some(t) = &mut self.trace {
                        t.uploaded.push(at);
                        // The next frame's start marks this one presented: have it come at once.
                        ctx.request_repaint();
                    }
                    self.picture.changed(rect);
                    self.updates += 1;
                }
                Event::MouseMode(_) => {}
                Event::Closed(why) => {
                    let dropped = matches!(why, Some(Failure::Io(_)));
                    self.state = State::Ended(why);
                    if dropped {
                        return Some(Action::Reconnect);
                    }
                }
            }
        }
        None
    }

    /// Draws the session into `ui` and forwards input; returns what the user asked for.
    pub fn ui(&mut self, ui: &mut egui::Ui) -> Option<Action> {
        let ctx = ui.ctx().clone();
        if let Some(t) = &mut self.trace {
            t.presented(Instant::now());
        }
        if let Some(a) = self.pump(&ctx) {
            return Some(a);
        }
        if self.pump_capture() {
            // egui saw none of the captured keys: start again from its idea of the modifiers.
            self.modifiers = ctx.input(|i| i.modifiers);
        }
        let mut action = None;
        ui.horizontal(|ui| {
            ui.label(format!("{} ({})", self.granted.desktop, self.granted.pool));
            if ui.button("Disconnect").clicked() {
                action = Some(Action::Disconnect);
            }
            if ui.button("Log off").clicked() {
                action = Some(Action::LogOff);
            }
            if self.restartable && ui.button("Restart").clicked() {
                action = Some(Action::Restart);
            }
            if ui.button("Ctrl+Alt+Del").clicked() {
                self.ctrl_alt_del();
            }
            let full = ctx.input(|i| i.viewport().fullscreen.unwrap_or(false));
            if ui
                .button(if full {
                    "Leave full screen"
                } else {
                    "Full screen"
                })
                .clicked()
            {
                ctx.send_viewport_cmd(egui::ViewportCommand::Fullscreen(!full));
                if !full {
                    self.capture_keyboard();
                }
            }
            match &self.state {
                State::Connecting => ui.label("connecting…"),
                State::Open => ui.label(format!("{}x{}", self.size[0], self.size[1])),
                State::Ended(None) => ui.label("disconnected"),
                State::Ended(Some(f)) => ui.label(format!("ended: {f}")),
            };
            if self.captured() {
                ui.label("Keyboard captured: Ctrl+Alt releases it");
            }
        });
        let avail = ui.available_rect_before_wrap();
        let (rect, response) = ui.allocate_exact_size(avail.size(), egui::Sense::click_and_drag());
        self.ask_resolution(rect.size() * ctx.pixels_per_point());
        if self.size[0] == 0 || self.size[1] == 0 {
            ui.painter().rect_filled(rect, 0.0, Color32::BLACK);
            return action;
        }
        let screen = fit(rect, self.size, ctx.pixels_per_point());
        // Black only around the picture: under software GL every pixel painted twice is paid
        // for on every frame.
        for bar in margins(rect, screen) {
            ui.painter().rect_filled(bar, 0.0, Color32::BLACK);
        }
        ui.painter().add(self.picture.shape(screen));
        if response.clicked() || response.hovered() && !response.has_focus() {
            response.request_focus();
        }
        if response.clicked() && self.state == State::Open {
            self.capture_keyboard();
        }
        if response.has_focus() {
            // Tab, arrows and Escape belong to the guest while it has the keyboard.
            ui.memory_mut(|m| {
                m.set_focus_lock_filter(
                    response.id,
                    egui::EventFilter {
                        tab: true,
                        horizontal_arrows: true,
                        vertical_arrows: true,
                        escape: true,
                    },
                )
            });
            self.forward(ui, screen);
        }
        action
    }

    fn forward(&mut self, ui: &egui::Ui, screen: Rect) {
        let (events, modifiers) = ui.input(|i| (i.events.clone(), i.modifiers));
        // While captured, keys come from the capture alone.
        let keys = !self.captured();
        if keys {
            for (code, down) in keymap::modifier_changes(self.modifiers, modifiers) {
                self.session.key(code, down);
            }
            self.modifiers = modifiers;
        }
        for e in events {
            match e {
                UiEvent::Key { key, pressed, .. } if keys => {
                    if let Some(code) = keymap::scancode(key) {
                        self.session.key(code, pressed);
                    }
                }
                UiEvent::PointerMoved(p) => {
                    if let Some(at) = to_guest(screen, self.size, p) {
                        if self.pointer != Some(at) {
                            self.pointer = Some(at);
                            self.session.pointer(at.0, at.1);
                        }
                    }
                }
                UiEvent::PointerButton {
                    pos,
                    button,
                    pressed,
                    ..
                } => {
                    if let Some(at) = to_guest(screen, self.size, pos) {
                        if self.pointer != Some(at) {
                            self.pointer = Some(at);
                            self.session.pointer(at.0, at.1);
                        }
                        let b = match button {
                            PointerButton::Primary => Button::Left,
                            PointerButton::Secondary => Button::Right,
                            PointerButton::Middle => Button::Middle,
                            _ => continue,
                        };
                        self.session.button(b, pressed);
                    }
                }
                UiEvent::MouseWheel { delta, .. } if delta.y != 0.0 => {
                    let b = if delta.y > 0.0 {
                        Button::WheelUp
                    } else {
                        Button::WheelDown
                    };
                    self.session.button(b, true);
                    self.session.button(b, false);
                }
                _ => {}
            }
        }
    }

    /// Asks the guest for the window's size once it has settled.
    fn ask_resolution(&mut self, size: Vec2) {
        let want = [size.x.max(0.0) as u32 & !7, size.y.max(0.0) as u32];
        if want[0] < 320 || want[1] < 200 || self.state != State::Open {
            return;
        }
        match self.window_size {
            Some((s, since)) if s == want => {
                if since.elapsed() >= RESIZE_SETTLE
                    && self.asked_size != Some(want)
                    && self.size != want
                {
                    self.asked_size = Some(want);
                    self.session.request_resolution(want[0], want[1]);
                }
            }
            _ => self.window_size = Some((want, Instant::now())),
        }
    }
}

/// The parts of `area` outside `inner` (at most four bars; none when the picture fills it).
fn margins(area: Rect, inner: Rect) -> impl Iterator<Item = Rect> {
    let bars = [
        Rect::from_min_max(area.min, egui::pos2(area.max.x, inner.min.y)),
        Rect::from_min_max(egui::pos2(area.min.x, inner.max.y), area.max),
        Rect::from_min_max(
            egui::pos2(area.min.x, inner.min.y),
            egui::pos2(inner.min.x, inner.max.y),
        ),
        Rect::from_min_max(
            egui::pos2(inner.max.x, inner.min.y),
            egui::pos2(area.max.x, inner.max.y),
        ),
    ];
    bars.into_iter()
        .filter(|r| r.width() > 0.0 && r.height() > 0.0)
}

/// Where the guest's picture goes in `area` (points; `ppp` pixels per point): pixel for pixel
/// when it fits, else the largest rectangle of its aspect; centred, on whole pixels so that
/// nothing is resampled at 1:1.
pub fn fit(area: Rect, size: [u32; 2], ppp: f32) -> Rect {
    if size[0] == 0 || size[1] == 0 {
        return area;
    }
    let (w, h) = (size[0] as f32 / ppp, size[1] as f32 / ppp);
    let scale = (area.width() / w).min(area.height() / h).min(1.0);
    let (w, h) = (w * scale, h * scale);
    let x = ((area.center().x - w / 2.0) * ppp).round() / ppp;
    let y = ((area.center().y - h / 2.0) * ppp).round() / ppp;
    Rect::from_min_size(egui::pos2(x, y), Vec2::new(w, h))
}

/// The guest pixel under `p`, if `p` is on the picture.
pub fn to_guest(screen: Rect, size: [u32; 2], p: egui::Pos2) -> Option<(u32, u32)> {
    if !screen.contains(p) || size[0] == 0 || size[1] == 0 {
        return None;
    }
    let x = ((p.x - screen.min.x) / screen.width() * size[0] as f32) as u32;
    let y = ((p.y - screen.min.y) / screen.height() * size[1] as f32) as u32;
    Some((x.min(size[0] - 1), y.min(size[1] - 1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn margins_cover_the_area_outside_the_picture_only() {
        let area = Rect::from_min_size(egui::pos2(0.0, 40.0), Vec2::new(1000.0, 600.0));
        let inner = fit(area, [800, 600], 1.0);
        let bars: Vec<Rect> = margins(area, inner).collect();
        assert_eq!(bars.len(), 2, "{bars:?}");
        let covered: f32 = bars.iter().map(|r| r.area()).sum();
        assert_eq!(covered, area.area() - inner.area());
        assert!(bars.iter().all(|b| !b.intersects(inner.shrink(0.5))));
        assert_eq!(margins(area, area).count(), 0);
    }

    #[test]
    fn the_picture_keeps_its_aspect_and_maps_the_pointer() {
        let area = Rect::from_min_size(egui::pos2(0.0, 40.0), Vec2::new(1000.0, 600.0));
        let screen = fit(area, [800, 600], 1.0);
        assert_eq!(screen.size(), Vec2::new(800.0, 600.0));
        assert_eq!(screen.min, egui::pos2(100.0, 40.0));
        // Smaller than the area: 1:1, centred on a whole pixel, never enlarged.
        let small = fit(area, [401, 300], 1.0);
        assert_eq!(small.size(), Vec2::new(401.0, 300.0));
        assert_eq!(small.min, egui::pos2(300.0, 190.0));
        let hidpi = fit(area, [800, 600], 2.0);
        assert_eq!(hidpi.size(), Vec2::new(400.0, 300.0));
        assert_eq!(
            to_guest(screen, [800, 600], egui::pos2(100.0, 40.0)),
            Some((0, 0))
        );
        assert_eq!(
            to_guest(screen, [800, 600], egui::pos2(500.0, 340.0)),
            Some((400, 300))
        );
        assert_eq!(to_guest(screen, [800, 600], egui::pos2(50.0, 340.0)), None);
        // Scaled down by half.
        let screen = fit(area, [2000, 1200], 1.0);
        assert_eq!(
            to_guest(screen, [2000, 1200], egui::pos2(500.0, 340.0)),
            Some((1000, 600))
        );
    }
}
