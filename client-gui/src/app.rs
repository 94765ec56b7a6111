//! The client's screens and their flow: sign in (broker, user, password; an untrusted
//! certificate is shown by fingerprint and asked about), pick a pool when there are several
//! (one is connected at once), then the desktop. Broker calls run on a worker thread; the UI
//! polls for the reply each frame, so the window never freezes on a slow broker.

use std::path::PathBuf;
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;

use crate::broker::{Broker, BrokerError, Granted, MyDesktop, Refusal, SignIn, Ticket};
use crate::remote::{Action, Remote};
use crate::settings::Settings;
use crate::trust::Trust;

/// How many times a dropped session is reconnected before the user is asked.
const RECONNECTS: u32 = 3;

/// Where the user is.
pub enum Screen {
    /// The sign-in form.
    SignIn,
    /// Waiting for the broker.
    Busy(String),
    /// The broker's certificate is not trusted: show it and ask.
    Untrusted {
        /// Its fingerprint.
        fingerprint: String,
    },
    /// Several pools: the user's desktops, to connect to, restart or log off.
    ChoosePool(Vec<MyDesktop>),
    /// The password has expired or is temporary: choose a new one (why, in words).
    ChangePassword(String),
    /// The desktop.
    Session(Box<Remote>),
}

pub(crate) enum Reply {
    SignedIn(Result<SignIn, BrokerError>),
    Ticket(Box<Granted>, Result<Ticket, BrokerError>),
    Done(Result<(), BrokerError>),
    /// The desktop list after an action (the action's failure, or the fresh list).
    Desktops(Result<Vec<MyDesktop>, BrokerError>),
    /// The change-password form's words, and the outcome.
    PasswordChanged(String, Result<(), BrokerError>),
}

/// The application state.
pub struct App {
    /// Remembered settings.
    pub settings: Settings,
    settings_path: Option<PathBuf>,
    /// The broker address being edited.
    pub broker_address: String,
    /// User name.
    pub user: String,
    /// Password (cleared once sent).
    pub password: String,
    /// The change-password form's new password.
    pub new_password: String,
    /// ... and its confirmation.
    pub confirm_password: String,
    /// The domains the broker offers (several: the form shows a picker).
    pub domains: Vec<String>,
    /// The domain picked.
    pub domain: String,
    pub(crate) domains_for: Option<String>,
    pub(crate) domains_rx: Option<Receiver<Vec<String>>>,
    pub(crate) last_desktops: Vec<MyDesktop>,
    /// What went wrong last, in the user's words.
    pub error: Option<String>,
    /// Where the user is.
    pub screen: Screen,
    pub(crate) broker: Option<Arc<Broker>>,
    pending: Option<Receiver<Reply>>,
    /// The password, kept only while the user answers a question that needs a second sign-in
    /// (which pool; whether to trust the certificate); dropped on any failure.
    pub(crate) pool_password: Option<String>,
    reconnects: u32,
    screen_gen: u64,
    /// Where `--latency-trace` writes (see [`crate::remote::LatencyTrace`]).
    pub latency_trace: Option<PathBuf>,
    /// The window's X11 id, where desktops may capture the keyboard.
    pub x11_window: Option<u32>,
    /// The sign-in form puts the cursor in the password field once.
    pub(crate) focus_password: bool,
}

impl App {
    /// A client with `settings`, saved to `settings_path` (none: not saved).
    pub fn new(settings: Settings, settings_path: Option<PathBuf>) -> Self {
        let focus_password = !settings.broker.is_empty() && !settings.user.is_empty();
        Self {
            broker_address: settings.broker.clone(),
            user: settings.user.clone(),
            domain: settings.domain.clone(),
            settings,
            settings_path,
            password: String::new(),
            new_password: String::new(),
            confirm_password: String::new(),
            domains: Vec::new(),
            domains_for: None,
            domains_rx: None,
            last_desktops: Vec::new(),
            error: None,
            screen: Screen::SignIn,
            broker: None,
            pending: None,
            pool_password: None,
            reconnects: 0,
            screen_gen: 0,
            latency_trace: None,
            x11_window: None,
            focus_password,
        }
    }

    /// Whether a broker call is in flight.
    pub fn busy(&self) -> bool {
        self.pending.is_some()
    }

    fn trust(&self, base: &str) -> Result<Trust, String> {
        let ca_pem = match &self.settings.ca_file {
            Some(p) => Some(
                std::fs::read(p)
                    .map_err(|e| format!("cannot read the CA file {}: {e}", p.display()))?,
            ),
            None => None,
        };
        Ok(Trust {
            ca_pem,
            accepted: self.settings.accepted_for(base),
        })
    }

    /// A client for the broker at the form's address, trusting what the settings say.
    pub(crate) fn connect_broker(&self) -> Result<Arc<Broker>, String> {
        let base = crate::broker::base_url(&self.broker_address).map_err(|e| message(&e))?;
        let trust = self.trust(&base)?;
        Broker::new(&base, &trust)
            .map(Arc::new)
            .map_err(|e| message(&e))
    }

    pub(crate) fn run(
        &mut self,
        ctx: &egui::Context,
        what: &str,
        job: impl FnOnce() -> Reply + Send + 'static,
    ) {
        let (tx, rx) = channel();
        let ctx = ctx.clone();
        std::thread::spawn(move || {
            let _ = tx.send(job());
            ctx.request_repaint();
        });
        self.pending = Some(rx);
        self.set_screen(Screen::Busy(what.into()));
    }

    /// Signs in with the form's fields (and `pool`, once chosen).
    pub fn sign_in(&mut self, ctx: &egui::Context, pool: Option<String>) {
        self.error = None;
        let broker = match self.connect_broker() {
            Ok(b) => b,
            Err(e) => return self.fail(e),
        };
        if self.user.trim().is_empty() {
            return self.fail("enter your user name".into());
        }
        self.broker = Some(broker.clone());
        let password = match &pool {
            Some(_) => self.pool_password.clone().unwrap_or_default(),
            None => std::mem::take(&mut self.password),
        };
        self.pool_password = Some(password.clone());
        let user = self.login_name();
        self.run(ctx, "Signing in…", move || {
            Reply::SignedIn(broker.sign_in(&user, &password, pool.as_deref()))
        });
    }

    /// Back to the sign-in form with nothing to explain (sign out).
    pub fn sign_out(&mut self) {
        self.fail(String::new());
        self.error = None;
    }

    /// Back to the sign-in form with `why` shown.
    pub(crate) fn fail(&mut self, why: String) {
        self.error = Some(why);
        self.pool_password = None;
        self.password.clear();
        self.new_password.clear();
        self.confirm_password.clear();
        self.set_screen(Screen::SignIn);
    }

    fn remember(&mut self) {
        self.settings.broker = self.broker_address.trim().to_string();
        self.settings.user = self.user.trim().to_string();
        self.settings.domain = self.domain.clone();
        if let Some(p) = &self.settings_path {
            if let Err(e) = self.settings.save(p) {
                tracing::warn!(error = %e, "settings not saved");
            }
        }
    }

    /// Accepts the certificate shown and signs in again.
    pub fn accept_certificate(&mut self, ctx: &egui::Context, fingerprint: &str) {
        if let Ok(base) = crate::broker::base_url(&self.broker_address) {
            self.settings.accept(&base, fingerprint);
            self.remember();
        }
        self.domains_for = None;
        self.password = self.pool_password.take().unwrap_or_default();
        self.sign_in(ctx, None);
    }

    fn on_reply(&mut self, ctx: &egui::Context, reply: Reply) {
        match reply {
            Reply::SignedIn(Ok(SignIn::Granted(g))) => {
                self.pool_password = None;
                self.remember();
                self.reconnects = 0;
                self.open(ctx, *g);
            }
            Reply::SignedIn(Ok(SignIn::ChoosePool(list))) => {
                self.remember();
                self.show_desktops(list);
            }
            Reply::SignedIn(Err(BrokerError::Untrusted { fingerprint })) => {
                self.set_screen(Screen::Untrusted { fingerprint });
            }
            Reply::SignedIn(Err(BrokerError::Refused { code, message, .. }))
                if code == "password_expired" || code == "password_must_change" =>
            {
                self.ask_new_password(&message)
            }
            Reply::SignedIn(Err(e)) => self.fail(message(&e)),
            Reply::PasswordChanged(why, r) => self.on_password_changed(ctx, why, r),
            Reply::Desktops(r) => self.on_desktops(r),
            Reply::Ticket(mut g, Ok(t)) => {
                g.ticket = t.ticket;
                g.tunnel = t.tunnel;
                if t.display.is_some() {
                    g.display = t.display;
                }
                self.open(ctx, *g);
            }
            Reply::Ticket(_, Err(e)) => self.fail(format!(
                "the desktop could not be reconnected: {}",
                message(&e)
            )),
            Reply::Done(r) => {
                self.set_screen(Screen::SignIn);
                if let Err(e) = r {
                    self.error = Some(message(&e));
                }
            }
        }
    }

    fn open(&mut self, ctx: &egui::Context, g: Granted) {
        let trace = match &self.latency_trace {
            Some(p) => match crate::remote::LatencyTrace::create(p) {
                Ok(t) => Some(t),
                Err(e) => return self.fail(format!("--latency-trace {}: {e}", p.display())),
            },
            None => None,
        };
        let tunnel = match (&self.broker, g.tunnel) {
            (Some(b), true) => match b.tunnel_target(&g) {
                Ok(t) => Some(t),
                Err(e) => return self.fail(message(&e)),
            },
            _ => None,
        };
        match Remote::connect(g, ctx, trace, tunnel) {
            Ok(mut r) => {
                r.restartable = self.broker.is_some();
                if let Some(w) = self.x11_window {
                    r.enable_capture(w, ctx);
                }
                self.set_screen(Screen::Session(Box::new(r)))
            }
            Err(e) => self.fail(e),
        }
    }

    /// Opens a desktop from a connection file (no broker: disconnect and log off just close).
    pub fn open_direct(&mut self, ctx: &egui::Context, g: Granted) {
        self.broker = None;
        self.open(ctx, g);
    }

    fn on_action(&mut self, ctx: &egui::Context, remote: &Remote, action: Action) {
        let (Some(broker), g) = (self.broker.clone(), remote.granted.clone()) else {
            remote.close();
            return match action {
                Action::Reconnect => self.fail("the connection to the desktop dropped".into()),
                _ => self.sign_out(),
            };
        };
        match action {
            Action::Disconnect => {
                remote.close();
                self.run(ctx, "Disconnecting…", move || {
                    Reply::Done(broker.disconnect(&g))
                });
            }
            Action::LogOff => {
                remote.close();
                self.run(ctx, "Logging off…", move || {
                    Reply::Done(broker.log_off(&g))
                });
            }
            Action::Restart => {
                remote.close();
                self.run(ctx, "Restarting your desktop…", move || {
                    let t = broker
                        .restart_session(&g)
                        .and_then(|()| broker.new_ticket(&g));
                    Reply::Ticket(Box::new(g), t)
                });
            }
            Action::Reconnect if self.reconnects < RECONNECTS => {
                self.reconnects += 1;
                let what = format!(
                    "The connection dropped; reconnecting ({}/{RECONNECTS})…",
                    self.reconnects
                );
                tracing::info!(desktop = %g.desktop, "connection dropped; reconnecting ({}/{RECONNECTS})", self.reconnects);
                self.run(ctx, &what, move || {
                    let t = broker.new_ticket(&g);
                    Reply::Ticket(Box::new(g), t)
                });
            }
            Action::Reconnect => {
                self.fail("the connection to the desktop keeps dropping; sign in again".into())
            }
        }
    }

    /// The whole UI (eframe's `ui` and the tests' harness both call this).
    pub fn ui_root(&mut self, ui: &mut egui::Ui) {
        let ctx = ui.ctx().clone();
        self.poll_domains();
        if let Some(rx) = &self.pending {
            match rx.try_recv() {
                Ok(reply) => {
                    self.pending = None;
                    self.on_reply(&ctx, reply);
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => {}
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    self.pending = None;
                    self.fail("the request failed unexpectedly".into());
                }
            }
        }
        let generation = self.screen_gen;
        let mut screen = std::mem::replace(&mut self.screen, Screen::SignIn);
        match &mut screen {
            Screen::SignIn => self.sign_in_ui(ui),
            Screen::Busy(what) => {
                ui.horizontal(|ui| {
                    ui.spinner();
                    ui.label(what.as_str());
                });
            }
            Screen::Untrusted { fingerprint } => self.untrusted_ui(ui, fingerprint),
            Screen::ChoosePool(pools) => self.pools_ui(ui, pools),
            Screen::ChangePassword(why) => self.change_password_ui(ui, why),
            Screen::Session(remote) => {
                if let Some(a) = remote.ui(ui) {
                    self.on_action(&ctx, remote, a);
                }
            }
        }
        // Unless a handler moved on, the screen taken out above goes back.
        if self.screen_gen == generation {
            self.screen = screen;
        }
    }

    pub(crate) fn set_screen(&mut self, s: Screen) {
        self.screen = s;
        self.screen_gen += 1;
    }
}

/// The words shown for `e`.
pub fn message(e: &BrokerError) -> String {
    match e {
        BrokerError::Refused {
            kind: Refusal::SignIn,
            code,
            message,
        } => match code.as_str() {
            "account_locked" | "account_disabled" | "account_expired" => {
                format!("Sign-in refused: {message}. Your help desk can unlock or enable it.")
            }
            _ => format!("Sign-in refused: {message}."),
        },
        BrokerError::Refused {
            kind: Refusal::NotEntitled,
            message,
            ..
        } => {
            format!(
                "{}. Ask your administrator for access.",
                capitalise(message)
            )
        }
        BrokerError::Refused {
            kind: Refusal::Throttled,
            message,
            ..
        } => format!("{}.", capitalise(message)),
        BrokerError::Refused {
            kind: Refusal::Unavailable,
            message,
            ..
        } => {
            format!("{}. Try again in a few minutes.", capitalise(message))
        }
        BrokerError::Refused { message, .. } => format!("The broker refused: {message}."),
        BrokerError::Unreachable { address, why } => {
            format!(
                "Cannot reach the broker at {address} ({why}). Check the address and your network."
            )
        }
        BrokerError::Untrusted { fingerprint } => {
            format!("The broker's certificate is not trusted ({fingerprint}).")
        }
        BrokerError::BadAddress(m) => format!("{}.", capitalise(m)),
        BrokerError::Trust(t) => format!("{}.", capitalise(&t.to_string())),
        BrokerError::Protocol(m) => format!("This does not look like a Tessera broker: {m}."),
    }
}

pub(crate) fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}
