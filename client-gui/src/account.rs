//! The account side of signing in: the domain picker (a broker with several directories lists
//! their domains) and the change-password flow (an expired or temporary password is changed
//! here, then the sign-in goes on with the new one).

use std::sync::mpsc::channel;

use crate::app::{message, App, Reply, Screen};
use crate::broker::{BrokerError, Refusal};

impl App {
    /// The name sent to the broker: a plain name gets the picked domain when the broker
    /// offers several; `DOMAIN\user` and `user@realm` go as typed.
    pub fn login_name(&self) -> String {
        let user = self.user.trim();
        if self.domains.len() > 1 && !user.contains(['\\', '@']) && !self.domain.is_empty() {
            format!("{}\\{user}", self.domain)
        } else {
            user.to_string()
        }
    }

    /// Asks the broker at the form's address for its domains, in the background and once per
    /// address; a broker that cannot say (unreachable, untrusted, older) offers none.
    pub(crate) fn refresh_domains(&mut self, ctx: &egui::Context) {
        let Ok(base) = crate::broker::base_url(&self.broker_address) else {
            return;
        };
        if self.domains_for.as_deref() == Some(base.as_str()) {
            return;
        }
        self.domains_for = Some(base);
        self.domains.clear();
        let Ok(broker) = self.connect_broker() else {
            return;
        };
        let (tx, rx) = channel();
        let ctx = ctx.clone();
        std::thread::spawn(move || {
            let _ = tx.send(broker.domains().unwrap_or_default());
            ctx.request_repaint();
        });
        self.domains_rx = Some(rx);
    }

    /// Whether the broker has not yet said which domains it offers.
    pub fn domains_pending(&self) -> bool {
        self.domains_rx.is_some()
    }

    /// Takes the broker's domains when they have come; the remembered one stays picked.
    pub(crate) fn poll_domains(&mut self) {
        let Some(domains) = self.domains_rx.as_ref().and_then(|rx| rx.try_recv().ok()) else {
            return;
        };
        self.domains_rx = None;
        if !domains.contains(&self.domain) {
            self.domain = domains.first().cloned().unwrap_or_default();
        }
        self.domains = domains;
    }

    /// The broker says the password must change first: the form for a new one, with the
    /// password just typed as the current one.
    pub(crate) fn ask_new_password(&mut self, why: &str) {
        self.password = self.pool_password.take().unwrap_or_default();
        self.error = None;
        self.set_screen(Screen::ChangePassword(format!(
            "{}. Choose a new password.",
            crate::app::capitalise(why)
        )));
    }

    /// Sends the change-password form (`why`: what the form says, kept for a second try).
    pub fn change_password(&mut self, ctx: &egui::Context, why: &str) {
        let refusal = if self.new_password.is_empty() {
            Some("Enter a new password.")
        } else if self.new_password != self.confirm_password {
            Some("The new passwords do not match.")
        } else if self.new_password == self.password {
            Some("The new password must differ from the current one.")
        } else {
            None
        };
        self.error = refusal.map(str::to_string);
        if refusal.is_some() {
            return;
        }
        let Some(broker) = self.broker.clone() else {
            return self.fail("sign in again".into());
        };
        let (user, old) = (self.login_name(), self.password.clone());
        let new = self.new_password.clone();
        let why = why.to_string();
        self.run(ctx, "Changing your password…", move || {
            Reply::PasswordChanged(why, broker.change_password(&user, &old, &new))
        });
    }

    /// The change went through: sign in with the new password. A wrong current password or a
    /// refused new one is said on the same form.
    pub(crate) fn on_password_changed(
        &mut self,
        ctx: &egui::Context,
        why: String,
        r: Result<(), BrokerError>,
    ) {
        match r {
            Ok(()) => {
                self.password = std::mem::take(&mut self.new_password);
                self.confirm_password.clear();
                self.sign_in(ctx, None);
            }
            Err(BrokerError::Refused {
                kind: Refusal::SignIn,
                code,
                message,
            }) if code == "invalid_credentials" || code == "password_rejected" => {
                self.error = Some(match code.as_str() {
                    "invalid_credentials" => "The current password is wrong.".into(),
                    _ => format!("{}.", crate::app::capitalise(&message)),
                });
                self.new_password.clear();
                self.confirm_password.clear();
                self.set_screen(Screen::ChangePassword(why));
            }
            Err(e) => self.fail(message(&e)),
        }
    }
}
