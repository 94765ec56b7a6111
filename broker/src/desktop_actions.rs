//! What users do with their desktops besides connecting, as in Horizon's client: list them
//! with their state, restart one, log off one. Every call proves the password again (the
//! client keeps it only while its list shows), so any broker of a cluster can answer without
//! shared sign-in state; a restart from inside a session uses the session's token instead.

use serde::Serialize;
use tessera_agent::vms::{StopOutcome, StopRequest};

use crate::agent_client::GUEST_SHUTDOWN_SECS;
use crate::logon::{Logon, LogonError, Principal};
use crate::store::desktops::{Desktop, DesktopState};
use crate::store::events::Event;
use crate::store::sessions::EndReason;

/// A pool the user is entitled to, and the desktop they hold in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MyDesktop {
    /// The pool's name (what a logon asks for).
    pub pool: String,
    /// Its name for users.
    pub display_name: String,
    /// The desktop the user holds there (none: they get one when they connect).
    pub desktop: Option<String>,
    /// Its state: `assigned`, `connected`, `disconnected`, `running`...
    pub state: Option<DesktopState>,
}

/// States in which a held desktop's VM runs and may be restarted.
const RESTARTABLE: [DesktopState; 4] = [
    DesktopState::Running,
    DesktopState::Assigned,
    DesktopState::Connected,
    DesktopState::Disconnected,
];

impl Logon {
    /// The user's pools and desktops.
    pub async fn my_desktops(
        &self,
        user: &str,
        password: &str,
    ) -> Result<Vec<MyDesktop>, LogonError> {
        let who = self.checked_authenticate(user, password).await?;
        self.desktops_of(&who).await
    }

    /// `who`'s pools, in name order, each with the desktop they hold there.
    pub(crate) async fn desktops_of(&self, who: &Principal) -> Result<Vec<MyDesktop>, LogonError> {
        let store = self.store();
        let held = store.desktops_held_by(&who.key).await?;
        let mut out = Vec::new();
        for name in self.entitled(who).await? {
            let pool = store.pool_by_name(&name).await?;
            let mine = held.iter().find(|d| d.pool_id == pool.id);
            out.push(MyDesktop {
                pool: name,
                display_name: pool.spec.display_name.clone(),
                desktop: mine.map(|d| d.name.clone()),
                state: mine.map(|d| d.state),
            });
        }
        Ok(out)
    }

    /// Restarts the desktop the user holds in `pool` (power off, power on). A client still
    /// connected loses its connection and comes back with a new ticket.
    pub async fn restart_desktop(
        &self,
        user: &str,
        password: &str,
        pool: &str,
    ) -> Result<(), LogonError> {
        let who = self.checked_authenticate(user, password).await?;
        let d = self.held(&who, pool).await?;
        let r = self.restart(&d).await;
        self.record_restart(&who.key, &d.name, r).await
    }

    /// Restarts session `session_id`'s desktop (the session's own toolbar).
    pub async fn restart_session_desktop(&self, session_id: &str) -> Result<(), LogonError> {
        let s = self.store().session(session_id).await?;
        let d = self.store().desktop(&s.desktop_id).await?;
        let r = self.restart(&d).await;
        self.record_restart(&s.user_key, &d.name, r).await
    }

    /// Logs the user off the desktop they hold in `pool`: its session ends and the desktop
    /// goes back per the pool's rules, as a logoff from inside the session would.
    pub async fn log_off_desktop(
        &self,
        user: &str,
        password: &str,
        pool: &str,
    ) -> Result<(), LogonError> {
        let who = self.checked_authenticate(user, password).await?;
        let d = self.held(&who, pool).await?;
        let r = async {
            let ended = self
                .store()
                .end_desktop_sessions(&d.id, EndReason::Logoff)
                .await?;
            self.end_connections(&ended, &d).await;
            let p = self.store().pool_by_id(&d.pool_id).await?;
            self.store().release(&p, &d).await?;
            Ok(())
        }
        .await;
        self.record(&who.key, "logoff", &d.name, &r).await;
        r
    }

    /// The desktop `who` holds in `pool`.
    async fn held(&self, who: &Principal, pool: &str) -> Result<Desktop, LogonError> {
        if !self.entitled(who).await?.iter().any(|p| p == pool) {
            return Err(LogonError::NotEntitled(format!(" named {pool}")));
        }
        let p = self.store().pool_by_name(pool).await?;
        self.store()
            .desktops_held_by(&who.key)
            .await?
            .into_iter()
            .find(|d| d.pool_id == p.id)
            .ok_or_else(|| LogonError::NotHeld(pool.to_string()))
    }

    /// Audits a restart with how its VM stopped.
    async fn record_restart(
        &self,
        who: &str,
        desktop: &str,
        r: Result<StopOutcome, LogonError>,
    ) -> Result<(), LogonError> {
        let outcome = match &r {
            Ok(stopped) => format!("ok ({})", stopped.describe()),
            Err(e) => e.to_string(),
        };
        self.audit(Event::new(who, "restart", desktop, &outcome))
            .await;
        r.map(|_| ())
    }

    /// Restarts the desktop's VM: the guest is asked to shut down (the ACPI power button)
    /// and powered off if it does not within `GUEST_SHUTDOWN_SECS`, then started again.
    async fn restart(&self, d: &Desktop) -> Result<StopOutcome, LogonError> {
        if !RESTARTABLE.contains(&d.state) {
            return Err(LogonError::Busy(format!(
                "desktop {} is {} and cannot be restarted now",
                d.name,
                d.state.as_str()
            )));
        }
        let agent = self.agent_of(d).await?;
        let how = StopRequest {
            force: false,
            timeout_secs: Some(GUEST_SHUTDOWN_SECS),
        };
        let stopped = agent.stop(&d.name, &how).await?;
        agent.start(&d.name).await?;
        Ok(stopped)
    }

    async fn record(&self, who: &str, action: &str, desktop: &str, r: &Result<(), LogonError>) {
        let outcome = match r {
            Ok(()) => "ok".to_string(),
            Err(e) => e.to_string(),
        };
        self.audit(Event::new(who, action, desktop, &outcome)).await;
    }
}
