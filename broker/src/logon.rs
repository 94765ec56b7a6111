//! The logon path (design.md §5): authenticate, resolve entitlements through nested groups,
//! give the user a desktop in one transaction, make sure it runs, open a session and issue a
//! one-time ticket. Each phase is timed and the whole logon is one event, like Citrix
//! Director's logon duration breakdown.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tessera_directory::{Directories, DirectoryError, Resolved};

use crate::agent_client::{AgentClient, AgentError};
use crate::store::accounts::SignInError;
use crate::store::desktops::{AssignOutcome, Desktop};
use crate::store::events::Event;
use crate::store::sessions::{EndReason, TokenLifetime};
use crate::store::{Store, StoreError};
use crate::throttle::{Attempt, Limit, Refused, Throttle};
use tessera_agent::display::DisplayEndpoint;

/// Failed attempts per account in [`FAILURE_WINDOW`] after which the broker refuses to try
/// again; for a directory user, also below the directory's own lockout threshold
/// ([`tessera_directory::Lockout`]), so that a password-guessing client cannot lock a
/// directory account through the broker.
pub const MAX_FAILURES: usize = 5;
/// The window of [`MAX_FAILURES`].
pub const FAILURE_WINDOW: Duration = Duration::from_secs(300);
/// Lifetime of a display ticket.
pub const TICKET_TTL: Duration = Duration::from_secs(60);

/// Why a logon failed; the message is what the user sees.
#[derive(Debug, thiserror::Error)]
pub enum LogonError {
    /// Wrong name or password, or the account cannot sign in now (the reason is in the text).
    #[error("{1}")]
    Denied(Denial, String),
    /// Too many failures for this name recently.
    #[error("too many failed sign-ins for this user; wait a few minutes")]
    TooManyAttempts,
    /// Signed in, but entitled to no pool (or not to the one asked for).
    #[error("you are not entitled to any desktop pool{0}")]
    NotEntitled(String),
    /// Signed in, but not an administrator.
    #[error("this account may not administer Tessera")]
    NotAdministrator,
    /// The pool has no free desktop now.
    #[error("no desktop of pool {0} is free right now; try again shortly")]
    NoDesktop(String),
    /// The user holds no desktop in that pool (nothing to restart or log off).
    #[error("you have no desktop in pool {0}")]
    NotHeld(String),
    /// The desktop is being changed (provisioned, refreshed...); try again later.
    #[error("{0}")]
    Busy(String),
    /// A directory or host is unreachable.
    #[error("{0}")]
    Unavailable(String),
    /// Something the admin must fix.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Why an account may not sign in, for clients to pick a flow (the message says it in words).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// Wrong name or password (never told apart).
    InvalidCredentials,
    /// Locked out after failed sign-ins.
    AccountLocked,
    /// Disabled by an administrator.
    AccountDisabled,
    /// The account has expired.
    AccountExpired,
    /// The password has expired: change it.
    PasswordExpired,
    /// A temporary password: change it before the first sign-in.
    PasswordMustChange,
    /// A new password the policy refuses.
    PasswordRejected,
    /// Not at this time, or not from this workstation.
    Restricted,
}

impl Denial {
    fn code(self) -> &'static str {
        match self {
            Self::InvalidCredentials => "invalid_credentials",
            Self::AccountLocked => "account_locked",
            Self::AccountDisabled => "account_disabled",
            Self::AccountExpired => "account_expired",
            Self::PasswordExpired => "password_expired",
            Self::PasswordMustChange => "password_must_change",
            Self::PasswordRejected => "password_rejected",
            Self::Restricted => "restricted",
        }
    }

    fn of_local(e: &SignInError) -> Self {
        match e {
            SignInError::Locked { .. } => Self::AccountLocked,
            SignInError::Disabled => Self::AccountDisabled,
            SignInError::MustChangePassword => Self::PasswordMustChange,
            SignInError::PasswordRejected(_) => Self::PasswordRejected,
            SignInError::InvalidCredentials | SignInError::Store(_) => Self::InvalidCredentials,
        }
    }

    fn of_directory(e: &DirectoryError) -> Self {
        match e {
            DirectoryError::AccountLocked => Self::AccountLocked,
            DirectoryError::AccountDisabled => Self::AccountDisabled,
            DirectoryError::AccountExpired => Self::AccountExpired,
            DirectoryError::PasswordExpired => Self::PasswordExpired,
            DirectoryError::PasswordMustChange => Self::PasswordMustChange,
            DirectoryError::PasswordRejected => Self::PasswordRejected,
            DirectoryError::LogonHours | DirectoryError::Workstation => Self::Restricted,
            _ => Self::InvalidCredentials,
        }
    }
}

impl LogonError {
    /// A stable, machine-readable name for the error (the API's `code`).
    pub fn code(&self) -> &'static str {
        match self {
            Self::Denied(d, _) => d.code(),
            Self::TooManyAttempts => "throttled",
            Self::NotEntitled(_) => "not_entitled",
            Self::NotAdministrator => "not_administrator",
            Self::NoDesktop(_) => "no_desktop",
            Self::NotHeld(_) => "not_held",
            Self::Busy(_) => "busy",
            Self::Unavailable(_) => "unavailable",
            Self::Internal(_) => "internal",
        }
    }

    fn denied(d: Denial, message: impl Into<String>) -> Self {
        Self::Denied(d, message.into())
    }
}

impl From<StoreError> for LogonError {
    fn from(e: StoreError) -> Self {
        Self::Internal(e.to_string())
    }
}

impl From<AgentError> for LogonError {
    fn from(e: AgentError) -> Self {
        Self::Unavailable(format!("the desktop's host is unavailable: {e}"))
    }
}

/// A successful logon.
#[derive(Debug, Clone, Serialize)]
pub struct Granted {
    /// The session.
    pub session_id: String,
    /// The session's bearer token (shown once): logoff, disconnect and new tickets need it.
    pub session_token: String,
    /// The desktop's name.
    pub desktop: String,
    /// The pool.
    pub pool: String,
    /// The desktop's host (its agent address; the display endpoint follows from it).
    pub host: String,
    /// One-time display ticket (shown once).
    pub ticket: String,
    /// When the ticket expires (Unix ms).
    pub ticket_expires_at: i64,
    /// Whether the user got back a desktop they already held (reconnect).
    pub reconnected: bool,
    /// Where the desktop's display is (SPICE host, ports, CA); the ticket opens it once.
    pub display: Option<DisplayEndpoint>,
    /// Connect to the display through the broker's tunnel, not directly.
    pub tunnel: bool,
    /// Phase durations in microseconds: authenticate, entitle, assign, power, ticket.
    pub phases_us: Vec<(&'static str, u64)>,
}

/// A fresh ticket for a live session.
#[derive(Debug, Clone, Serialize)]
pub struct NewTicket {
    /// The secret (shown once).
    pub ticket: String,
    /// When it expires (Unix ms).
    pub expires_at: i64,
    /// Where the desktop's display is.
    pub display: Option<DisplayEndpoint>,
    /// Connect to the display through the broker's tunnel, not directly.
    pub tunnel: bool,
    /// The desktop's name.
    pub desktop: String,
}

/// What a logon returns.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum LogonOutcome {
    /// A desktop.
    Granted(Box<Granted>),
    /// Several pools: the client asks the user which.
    ChoosePool {
        /// Pool names.
        pools: Vec<String>,
        /// The same pools with what the user holds in each, for the client's desktop list.
        desktops: Vec<crate::desktop_actions::MyDesktop>,
    },
}

/// Who signed in, as entitlements see it.
pub(crate) struct Principal {
    pub(crate) directory: Option<String>,
    /// The local account's name or the directory user's DN (what desktops are held by).
    pub(crate) key: String,
    pub(crate) groups: Vec<String>,
    /// A local account with the administrator flag.
    pub(crate) local_admin: bool,
}

/// The logon service.
pub struct Logon {
    store: Store,
    directories: Option<Arc<Directories>>,
    http: reqwest::Client,
    failures: Throttle<String>,
    admins: Vec<String>,
    display_tunnel: bool,
    tunnels: crate::tunnel::Tunnels,
    token_lifetime: TokenLifetime,
}

impl Logon {
    /// A logon service; `directories` None means local accounts only.
    pub fn new(store: Store, directories: Option<Arc<Directories>>, http: reqwest::Client) -> Self {
        Self {
            store,
            directories,
            http,
            failures: Throttle::default(),
            admins: Vec::new(),
            display_tunnel: false,
            tunnels: Default::default(),
            token_lifetime: TokenLifetime::default(),
        }
    }

    /// Clients reach displays through the broker ([`crate::tunnel`]); grants say so.
    pub fn with_display_tunnel(mut self, on: bool) -> Self {
        self.display_tunnel = on;
        self
    }

    /// Whether clients reach displays through the broker.
    pub fn display_tunnel(&self) -> bool {
        self.display_tunnel
    }

    /// How long session tokens work ([`TokenLifetime`]).
    pub fn with_token_lifetime(mut self, lifetime: TokenLifetime) -> Self {
        self.token_lifetime = lifetime;
        self
    }

    /// How long session tokens work.
    pub fn token_lifetime(&self) -> TokenLifetime {
        self.token_lifetime
    }

    /// The sessions' open display tunnels.
    pub fn tunnels(&self) -> &crate::tunnel::Tunnels {
        &self.tunnels
    }

    /// What ends with sessions `ended` of `desktop`: their tunnels close, and the desktop's
    /// display drops its ticket and cuts its client off, so that nothing a client held (a
    /// connection, a ticket) outlives the session. The session has ended whatever happens
    /// here: a host that cannot be reached is logged, and its VMM cuts the client at the
    /// next ticket anyway.
    pub(crate) async fn end_connections(&self, ended: &[String], desktop: &Desktop) {
        if ended.is_empty() {
            return;
        }
        for id in ended {
            self.tunnels.close(id);
        }
        let agent = match self.agent_of(desktop).await {
            Ok(a) => a,
            Err(e) => {
                return tracing::warn!(desktop = %desktop.name, error = %e, "display not disconnected")
            }
        };
        if let Err(e) = agent.disconnect_display(&desktop.name).await {
            tracing::warn!(desktop = %desktop.name, error = %e, "display not disconnected");
        }
    }

    /// Where desktop `desktop_id` shows its display.
    pub async fn display_of(&self, desktop_id: &str) -> Result<DisplayEndpoint, LogonError> {
        let d = self.store.desktop(desktop_id).await?;
        let agent = self.agent_of(&d).await?;
        agent
            .vm(&d.name)
            .await?
            .and_then(|v| v.display)
            .ok_or_else(|| LogonError::Unavailable(format!("desktop {} has no display", d.name)))
    }

    /// Directory users and groups (DNs) whose members administer the broker, besides local
    /// accounts with the administrator flag.
    pub fn with_admins(mut self, dns: Vec<String>) -> Self {
        self.admins = dns;
        self
    }

    /// The domains users pick from at sign-in (empty: local accounts only, or one directory
    /// that needs no choice).
    pub fn domains(&self) -> Vec<String> {
        let domains = self
            .directories
            .as_ref()
            .map(|d| d.domains())
            .unwrap_or_default();
        if domains.len() > 1 {
            domains
        } else {
            Vec::new()
        }
    }

    /// Signs an administrator in: their name for the audit trail.
    pub async fn admin_sign_in(&self, user: &str, password: &str) -> Result<String, LogonError> {
        let who = self.checked_authenticate(user, password).await?;
        let admin = match who.directory {
            None => who.local_admin,
            Some(_) => self.listed_admin(&who.key, &who.groups),
        };
        let outcome = if admin { "ok" } else { "not an administrator" };
        self.audit(Event::new(&who.key, "admin-sign-in", "", outcome))
            .await;
        if admin {
            Ok(who.key)
        } else {
            Err(LogonError::NotAdministrator)
        }
    }

    /// The directories users sign in with, if any.
    pub fn directories(&self) -> Option<&Directories> {
        self.directories.as_deref()
    }

    /// Accounts the per-account throttle holds now.
    pub fn throttled_accounts(&self) -> usize {
        self.failures.keys()
    }

    /// Whether directory user `dn`, a member of `groups`, is listed as an administrator.
    fn listed_admin(&self, dn: &str, groups: &[String]) -> bool {
        let listed = |x: &str| self.admins.iter().any(|a| a.eq_ignore_ascii_case(x));
        listed(dn) || groups.iter().any(|g| listed(g))
    }

    /// Whether `admin` (what [`Self::admin_sign_in`] returned) may still administer: each
    /// use of an administrator's token asks again, so that a disabled account, a lost
    /// administrator flag or a user removed from the admin group loses access at once, not
    /// when the token expires.
    pub async fn still_admin(&self, admin: &str) -> Result<bool, LogonError> {
        if let Some(now) = self.store.local_admin_now(admin).await? {
            return Ok(now);
        }
        let Some(dirs) = &self.directories else {
            return Ok(false);
        };
        Ok(
            match dirs.user_by_dn(admin).await.map_err(directory_error)? {
                None => false,
                Some(id) => {
                    let groups: Vec<String> = id.groups.into_iter().map(|g| g.dn).collect();
                    self.listed_admin(&id.dn, &groups)
                }
            },
        )
    }

    /// The store.
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// The pools `who` is entitled to, by name.
    pub(crate) async fn entitled(&self, who: &Principal) -> Result<Vec<String>, LogonError> {
        Ok(self
            .store
            .entitled_pools(who.directory.as_deref(), &who.key, &who.groups)
            .await?)
    }

    /// Records an event; the log is best effort: an action does not fail because its record did.
    pub async fn audit(&self, e: Event) {
        if let Err(err) = self.store.record(&e).await {
            tracing::warn!(error = %err, action = %e.action, "event not recorded");
        }
    }

    /// Authenticates `user` behind the per-account throttle: the login is resolved to the
    /// account it names first (so that every spelling of one user shares a count), the attempt
    /// is counted, and only then is the password tried ([`crate::throttle`]).
    pub(crate) async fn checked_authenticate(
        &self,
        user: &str,
        password: &str,
    ) -> Result<Principal, LogonError> {
        let account = self.resolve(user).await?;
        let attempt = self.reserve(&account).await?;
        let result = match account {
            Account::Local(name) => match self.store.sign_in_local(&name, password).await {
                Ok(a) => Ok(Principal {
                    directory: None,
                    key: a.name,
                    groups: Vec::new(),
                    local_admin: a.is_admin,
                }),
                Err(e) => Err(local_error(e)),
            },
            Account::Directory(r) => match r.authenticate(password).await {
                Ok(id) => Ok(Principal {
                    directory: Some(id.directory),
                    key: id.dn,
                    groups: id.groups.into_iter().map(|g| g.dn).collect(),
                    local_admin: false,
                }),
                Err(e) => Err(directory_error(e)),
            },
        };
        settle(attempt, &result);
        result
    }

    /// The account `user` names. A bare name that is a local account is that account (the
    /// break-glass admin and the all-in-one's users), whatever the directories hold;
    /// everything else goes to the directories. Without directories every name is local (an
    /// unknown one pays the decoy password check, so names cannot be told apart).
    async fn resolve(&self, user: &str) -> Result<Account<'_>, LogonError> {
        let login = user.trim();
        let bare = !login.contains(['\\', '@']);
        if bare || self.directories.is_none() {
            if let Some(name) = self.store.local_account_name(login).await? {
                return Ok(Account::Local(name));
            }
        }
        match &self.directories {
            None => Ok(Account::Local(login.to_string())),
            Some(d) => d
                .resolve(login)
                .await
                .map(Account::Directory)
                .map_err(directory_error),
        }
    }

    /// Counts an attempt at `account` before its password is tried. A directory user's limit
    /// stays below the directory's own lockout (and counts for at least as long as the
    /// directory does), so that guessing through the broker can never lock an AD account.
    async fn reserve(&self, account: &Account<'_>) -> Result<Attempt<'_, String>, LogonError> {
        let mut limit = Limit {
            max: MAX_FAILURES,
            window: FAILURE_WINDOW,
        };
        if let Account::Directory(r) = account {
            if let Some(c) = r.directory().filter(|_| r.found()) {
                if let Some(l) = c.lockout().await.map_err(directory_error)? {
                    let below = usize::try_from(l.threshold.saturating_sub(1)).unwrap_or(1);
                    limit.max = limit.max.min(below.max(1));
                    limit.window = limit.window.max(l.window);
                }
            }
        }
        self.failures.reserve(account.key(), limit).map_err(|e| {
            if e == Refused::Full {
                tracing::warn!("the sign-in throttle is full; refusing new names for now");
            }
            LogonError::TooManyAttempts
        })
    }

    /// Changes `user`'s password from `old` to `new` (an expired or temporary one included:
    /// this is how such a user gets in). Wrong old passwords count toward the throttle like
    /// failed sign-ins.
    pub async fn change_password(
        &self,
        user: &str,
        old: &str,
        new: &str,
    ) -> Result<(), LogonError> {
        let result = self.change_password_inner(user, old, new).await;
        let outcome = match &result {
            Ok(()) => "ok".to_string(),
            Err(e) => e.to_string(),
        };
        self.audit(Event::new(user, "change-password", user, &outcome))
            .await;
        result
    }

    async fn change_password_inner(
        &self,
        user: &str,
        old: &str,
        new: &str,
    ) -> Result<(), LogonError> {
        let account = self.resolve(user).await?;
        let attempt = self.reserve(&account).await?;
        let result = match account {
            Account::Local(name) => self
                .store
                .change_local_password(&name, old, new)
                .await
                .map_err(local_error),
            Account::Directory(r) => r.change_password(old, new).await.map_err(directory_error),
        };
        settle(attempt, &result);
        result
    }

    /// Signs `user` in and gives them a desktop of `pool` (or of their only pool).
    pub async fn logon(
        &self,
        user: &str,
        password: &str,
        pool: Option<&str>,
        client: &str,
    ) -> Result<LogonOutcome, LogonError> {
        let started = Instant::now();
        let result = self.logon_inner(user, password, pool, client).await;
        let (outcome, detail) = match &result {
            Ok(LogonOutcome::Granted(g)) => (
                "ok".to_string(),
                g.phases_us
                    .iter()
                    .map(|(p, us)| format!("{p}={:.1}ms", *us as f64 / 1000.0))
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            Ok(LogonOutcome::ChoosePool { pools, .. }) => ("choose-pool".into(), pools.join(",")),
            Err(e) => (e.to_string(), String::new()),
        };
        let target = match &result {
            Ok(LogonOutcome::Granted(g)) => g.desktop.clone(),
            _ => pool.unwrap_or("").to_string(),
        };
        self.audit(Event {
            duration_ms: Some(started.elapsed().as_millis() as i64),
            detail,
            ..Event::new(user, "logon", &target, &outcome)
        })
        .await;
        result
    }

    async fn logon_inner(
        &self,
        user: &str,
        password: &str,
        pool: Option<&str>,
        client: &str,
    ) -> Result<LogonOutcome, LogonError> {
        let mut phases = Vec::with_capacity(5);
        let mut t = Instant::now();
        let mut lap = |name: &'static str, t: &mut Instant| {
            phases.push((name, t.elapsed().as_micros() as u64));
            *t = Instant::now();
        };
        let who = self.checked_authenticate(user, password).await?;
        lap("authenticate", &mut t);
        let pools = self.entitled(&who).await?;
        let chosen = match (pool, pools.len()) {
            (Some(p), _) if pools.iter().any(|x| x == p) => p.to_string(),
            (Some(p), _) => return Err(LogonError::NotEntitled(format!(" named {p}"))),
            (None, 0) => return Err(LogonError::NotEntitled(String::new())),
            (None, 1) => pools[0].clone(),
            (None, _) => {
                let desktops = self.desktops_of(&who).await?;
                return Ok(LogonOutcome::ChoosePool { pools, desktops });
            }
        };
        lap("entitle", &mut t);
        let p = self.store.pool_by_name(&chosen).await?;
        let (desktop, reconnected) = match self.store.assign(&p, &who.key).await? {
            AssignOutcome::New(d) => (d, false),
            AssignOutcome::Existing(d) => (d, true),
            AssignOutcome::NoneFree => return Err(LogonError::NoDesktop(chosen)),
        };
        lap("assign", &mut t);
        let agent = self.agent_of(&desktop).await?;
        // Start, even when it runs: the agent answers at once for a running VM, and a VM the
        // power policy is shutting down is booted again once it is down, instead of handed
        // over while it goes.
        let vm = agent.start(&desktop.name).await?;
        lap("power", &mut t);
        let opened = self
            .store
            .open_session(&desktop.id, &who.key, client)
            .await?;
        // A reconnect replaced a live session: its client goes before the new ticket is set.
        self.end_connections(&opened.replaced, &desktop).await;
        let (session, session_token) = (opened.session, opened.token);
        let (ticket, expires) = self
            .display_ticket(&agent, &desktop.name, &session.id, vm.display.is_some())
            .await?;
        lap("ticket", &mut t);
        Ok(LogonOutcome::Granted(Box::new(Granted {
            session_id: session.id,
            session_token,
            desktop: desktop.name,
            pool: chosen,
            host: agent.url().to_string(),
            ticket,
            ticket_expires_at: expires,
            reconnected,
            display: vm.display,
            tunnel: self.display_tunnel,
            phases_us: phases,
        })))
    }

    /// The agent of the host `desktop` is placed on.
    pub(crate) async fn agent_of(&self, desktop: &Desktop) -> Result<AgentClient, LogonError> {
        let host_id = desktop
            .host_id
            .as_deref()
            .ok_or_else(|| LogonError::Internal(format!("desktop {} has no host", desktop.name)))?;
        let host = self.store.host(host_id).await?;
        Ok(AgentClient::new(&host.address, self.http.clone()))
    }

    /// Issues a one-time ticket for `session_id` and, when the desktop has a display, sets it
    /// on the desktop's VMM: the secret and its expiry.
    async fn display_ticket(
        &self,
        agent: &AgentClient,
        desktop: &str,
        session_id: &str,
        has_display: bool,
    ) -> Result<(String, i64), LogonError> {
        let (ticket, expires) = self
            .store
            .issue_ticket(session_id, TICKET_TTL.as_millis() as i64)
            .await?;
        if has_display {
            agent
                .set_display_ticket(desktop, &ticket, TICKET_TTL)
                .await?;
        }
        Ok((ticket, expires))
    }

    /// A new one-time ticket for live session `session_id`, set on its desktop's display.
    pub async fn new_ticket(&self, session_id: &str) -> Result<NewTicket, LogonError> {
        let s = self.store.session(session_id).await?;
        let d = self.store.desktop(&s.desktop_id).await?;
        let agent = self.agent_of(&d).await?;
        let display = agent.vm(&d.name).await?.and_then(|v| v.display);
        let (ticket, expires_at) = self
            .display_ticket(&agent, &d.name, &s.id, display.is_some())
            .await?;
        Ok(NewTicket {
            ticket,
            expires_at,
            display,
            tunnel: self.display_tunnel,
            desktop: d.name,
        })
    }

    /// The session ends (the user logged off, or an administrator forced it) and the desktop
    /// goes back per the pool's rules (a floating one through a refresh, which the reconciler
    /// carries out).
    pub async fn logoff(&self, session_id: &str, reason: EndReason) -> Result<(), LogonError> {
        let s = self.store.session(session_id).await?;
        self.store.end_session(&s.id, reason).await?;
        let d = self.store.desktop(&s.desktop_id).await?;
        self.end_connections(std::slice::from_ref(&s.id), &d).await;
        let pool = self.store.pool_by_id(&d.pool_id).await?;
        self.store.release(&pool, &d).await?;
        Ok(())
    }
}

/// The account a login names, resolved before anything is keyed on it.
enum Account<'a> {
    /// A local account (its stored name), or with no directories any other name.
    Local(String),
    /// A directory user, found or not.
    Directory(Resolved<'a>),
}

impl Account<'_> {
    /// What the per-account throttle counts by.
    fn key(&self) -> String {
        match self {
            Self::Local(name) => format!("local\0{}", name.to_lowercase()),
            Self::Directory(r) => format!("directory\0{}", r.key()),
        }
    }
}

/// A wrong password keeps its attempt counted; anything else (a success, a locked account
/// the password was never tried on, a directory down) hands it back.
fn settle<T>(attempt: Attempt<'_, String>, result: &Result<T, LogonError>) {
    match result {
        Err(LogonError::Denied(Denial::InvalidCredentials, _)) => attempt.keep(),
        _ => attempt.hand_back(),
    }
}

/// A local sign-in's failure as the logon reports it.
fn local_error(e: SignInError) -> LogonError {
    match e {
        SignInError::Store(e) => e.into(),
        e => LogonError::denied(Denial::of_local(&e), e.to_string()),
    }
}

/// A directory's failure as the logon reports it: the user's own problem, an outage, or
/// something the admin must fix.
fn directory_error(e: DirectoryError) -> LogonError {
    match e {
        e if e.is_user_error() => LogonError::denied(Denial::of_directory(&e), e.to_string()),
        e @ (DirectoryError::Unavailable { .. } | DirectoryError::Timeout(..)) => {
            LogonError::Unavailable(e.to_string())
        }
        e => LogonError::Internal(e.to_string()),
    }
}
