//! The user's desktop list (several pools): each pool with the desktop held there and its
//! state, and what the user can do with it: connect, restart, log off. The password typed at
//! sign-in proves each action; it is kept only while the list shows.

use crate::app::{message, App, Reply, Screen};
use crate::broker::{BrokerError, MyDesktop};

/// What the list can do to a held desktop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DesktopAction {
    /// Power-cycle it.
    Restart,
    /// End its session; it goes back to the pool.
    LogOff,
}

/// A desktop's state in the user's words.
pub fn describe(d: &MyDesktop) -> String {
    match (&d.desktop, d.state.as_deref()) {
        (None, _) => "available".into(),
        (Some(name), Some("connected")) => format!("{name}: in use (connected elsewhere)"),
        (Some(name), Some("disconnected")) => format!("{name}: disconnected, still signed in"),
        (Some(name), Some("assigned" | "running")) => format!("{name}: running"),
        (Some(name), Some("refreshing" | "provisioning")) => format!("{name}: being prepared"),
        (Some(name), Some("ready")) => format!("{name}: powered off"),
        (Some(name), Some("error")) => format!("{name}: has a problem; your administrator is told"),
        (Some(name), Some(other)) => format!("{name}: {other}"),
        (Some(name), None) => name.clone(),
    }
}

impl App {
    /// Shows `list` (and keeps it to come back to after a failed action).
    pub(crate) fn show_desktops(&mut self, list: Vec<MyDesktop>) {
        self.last_desktops = list.clone();
        self.set_screen(Screen::ChoosePool(list));
    }

    /// Restarts or logs off the desktop held in `pool`, then shows the list afresh.
    pub fn desktop_action(&mut self, ctx: &egui::Context, pool: &str, action: DesktopAction) {
        let (Some(broker), Some(password)) = (self.broker.clone(), self.pool_password.clone())
        else {
            return self.fail("sign in again".into());
        };
        let (user, pool) = (self.login_name(), pool.to_string());
        let what = match action {
            DesktopAction::Restart => format!("Restarting your {pool} desktop…"),
            DesktopAction::LogOff => format!("Logging off your {pool} desktop…"),
        };
        self.run(ctx, &what, move || {
            let done = match action {
                DesktopAction::Restart => broker.restart_desktop(&user, &password, &pool),
                DesktopAction::LogOff => broker.log_off_desktop(&user, &password, &pool),
            };
            Reply::Desktops(done.and_then(|()| broker.my_desktops(&user, &password)))
        });
    }

    /// Back to the list: fresh, or (the action failed) with why; a refused sign-in or an
    /// unreachable broker ends at the sign-in form.
    pub(crate) fn on_desktops(&mut self, r: Result<Vec<MyDesktop>, BrokerError>) {
        match r {
            Ok(list) => {
                self.error = None;
                self.show_desktops(list);
            }
            Err(e @ BrokerError::Refused { .. }) if !signs_out(&e) => {
                self.error = Some(message(&e));
                self.show_desktops(self.last_desktops.clone());
            }
            Err(e) => self.fail(message(&e)),
        }
    }
}

/// Whether `e` means the user must sign in again (the password no longer works).
fn signs_out(e: &BrokerError) -> bool {
    matches!(
        e,
        BrokerError::Refused {
            kind: crate::broker::Refusal::SignIn | crate::broker::Refusal::Throttled,
            ..
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_in_words() {
        let d = |desktop: Option<&str>, state: Option<&str>| MyDesktop {
            pool: "fin".into(),
            display_name: "Finance".into(),
            desktop: desktop.map(str::to_string),
            state: state.map(str::to_string),
        };
        assert_eq!(describe(&d(None, None)), "available");
        assert_eq!(
            describe(&d(Some("fin-01"), Some("disconnected"))),
            "fin-01: disconnected, still signed in"
        );
        assert_eq!(
            describe(&d(Some("fin-01"), Some("assigned"))),
            "fin-01: running"
        );
        assert_eq!(describe(&d(Some("fin-01"), Some("weird"))), "fin-01: weird");
    }
}
