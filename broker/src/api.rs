//! The broker's client API (HTTPS, JSON): logon, logoff, disconnect, a new ticket.
//!
//! | method | path | does |
//! |---|---|---|
//! | POST | /api/v1/sessions | `{"user", "password", "pool"?}`: a desktop, or the pools to choose from |
//! | DELETE | /api/v1/sessions/{id} | log off (bearer: the session token) |
//! | POST | /api/v1/sessions/{id}/disconnect | the client went away; the desktop waits |
//! | POST | /api/v1/sessions/{id}/ticket | a new one-time display ticket (set on the desktop's display) |
//! | POST | /api/v1/sessions/{id}/vv | the same as a remote-viewer file (`application/x-virt-viewer`) |
//! | GET | /api/v1/sessions/{id}/tunnel | `Upgrade: tessera-display`: a byte stream to the session's display ([`crate::tunnel`]); the session is then connected |
//! | GET | /api/v1/sessions/{id} | its state, why it ended, and the administrators' messages not yet fetched |
//! | POST | /api/v1/desktops | `{"user", "password"}`: the user's pools with the desktop held in each and its state |
//! | POST | /api/v1/desktops/{pool}/restart | `{"user", "password"}`: power-cycle the desktop held there |
//! | POST | /api/v1/desktops/{pool}/logoff | `{"user", "password"}`: end its session; the desktop goes back to the pool |
//! | POST | /api/v1/sessions/{id}/restart | restart the session's desktop (bearer: the session token) |
//! | POST | /api/v1/password | `{"user", "old_password", "new_password"}`: change it (an expired or temporary one too) |
//! | GET | /api/v1/domains | `{"domains": [...]}`: what the sign-in form offers (empty: no choice) |
//! | GET | /healthz | liveness |
//! | GET | /metrics | Prometheus text |
//!
//! The administrators' calls are in [`crate::admin_api`], hosts joining in
//! [`crate::host_join`].
//!
//! Errors are `{"error": "...", "code": "..."}` with 400 (bad request), 401 (credentials),
//! 403 (not entitled), 404, 429 (throttled: per user, and per client address after repeated
//! failures), 503 (no desktop free, or a directory or host down), 500. The message is written
//! for users; `code` is for clients choosing a flow ([`crate::logon::LogonError::code`]: e.g.
//! `password_expired` leads to the change-password form).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::logon::{Denial, Logon, LogonError, LogonOutcome};
use crate::store::sessions::{EndReason, Session};
use crate::store::{Store, StoreError};
use crate::throttle::{address_key, Limit, Throttle};

/// Failed sign-ins per client address (an IPv6 client's /64) per minute before it is
/// throttled.
pub const ADDRESS_LIMIT: Limit = Limit {
    max: 50,
    window: Duration::from_secs(60),
};

/// The CAs hosts join with: the API's (what join tokens pin and `/api/v1/ca.pem` serves)
/// and the host CA (what signs agents' certificates), with the verifier of agents whose CRL
/// a re-join updates.
#[derive(Clone)]
pub struct HostAuthority {
    /// The API CA.
    pub api_ca: Arc<crate::pki::Pki>,
    /// The host CA.
    pub ca: Arc<crate::pki::Pki>,
    /// How the broker's agent client verifies agents.
    pub trust: Arc<crate::host_trust::HostTrust>,
}

/// What the handlers share.
pub struct AppState {
    /// The logon path.
    pub logon: Logon,
    /// The store.
    pub store: Store,
    /// What /metrics counts.
    pub counters: crate::metrics::Counters,
    /// What hosts join with (none: hosts are added with certificates made beforehand).
    pub hosts: Option<HostAuthority>,
    addresses: Throttle<IpAddr>,
}

impl AppState {
    /// State over a logon service and its store.
    pub fn new(logon: Logon, store: Store) -> Self {
        Self {
            logon,
            store,
            counters: Default::default(),
            hosts: None,
            addresses: Throttle::default(),
        }
    }

    /// Lets hosts join with tokens ([`crate::host_join`]).
    pub fn with_hosts(mut self, hosts: HostAuthority) -> Self {
        self.hosts = Some(hosts);
        self
    }

    /// Runs a password-proved `call` behind the client address's throttle: the attempt is
    /// counted before the call runs and handed back unless the call proved a wrong password
    /// (or hit a throttled or unprivileged account), so that parallel guesses cannot outrun
    /// the count.
    pub(crate) async fn by_address<T>(
        &self,
        ip: IpAddr,
        call: impl std::future::Future<Output = Result<T, LogonError>>,
    ) -> Result<Result<T, LogonError>, ApiError> {
        let attempt = self
            .addresses
            .reserve(address_key(ip), ADDRESS_LIMIT)
            .map_err(|_| {
                ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too many failed sign-ins from this address; wait a minute".into(),
                )
            })?;
        let result = call.await;
        match &result {
            Err(
                LogonError::Denied(Denial::InvalidCredentials, _)
                | LogonError::TooManyAttempts
                | LogonError::NotAdministrator,
            ) => attempt.keep(),
            _ => attempt.hand_back(),
        }
        Ok(result)
    }

    /// Client addresses (networks) the throttle holds now.
    pub fn throttled_addresses(&self) -> usize {
        self.addresses.keys()
    }
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    code: &'static str,
}

impl ApiError {
    /// An error whose code follows from its status.
    pub fn new(status: StatusCode, message: String) -> Self {
        let code = match status {
            StatusCode::BAD_REQUEST => "bad_request",
            StatusCode::UNAUTHORIZED => "unauthorized",
            StatusCode::FORBIDDEN => "forbidden",
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::CONFLICT => "conflict",
            StatusCode::TOO_MANY_REQUESTS => "throttled",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable",
            _ => "internal",
        };
        Self {
            status,
            message,
            code,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": self.message, "code": self.code });
        (self.status, Json(body)).into_response()
    }
}

impl From<LogonError> for ApiError {
    fn from(e: LogonError) -> Self {
        let status = match &e {
            LogonError::Denied(..) => StatusCode::UNAUTHORIZED,
            LogonError::TooManyAttempts => StatusCode::TOO_MANY_REQUESTS,
            LogonError::NotEntitled(_) | LogonError::NotAdministrator => StatusCode::FORBIDDEN,
            LogonError::NoDesktop(_) | LogonError::Unavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            LogonError::NotHeld(_) => StatusCode::NOT_FOUND,
            LogonError::Busy(_) => StatusCode::CONFLICT,
            LogonError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self {
            status,
            message: e.to_string(),
            code: e.code(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let status = match &e {
            StoreError::NotFound(_) => StatusCode::NOT_FOUND,
            StoreError::Invalid(_) => StatusCode::BAD_REQUEST,
            StoreError::Conflict(_) => StatusCode::CONFLICT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, e.to_string())
    }
}

pub(crate) type Shared = Arc<AppState>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogonRequest {
    user: String,
    password: String,
    #[serde(default)]
    pool: Option<String>,
}

async fn create_session(
    State(s): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Json(r): Json<LogonRequest>,
) -> Result<Response, ApiError> {
    check_credentials_size(&r.user, &r.password)?;
    let started = Instant::now();
    let client = peer.ip().to_string();
    let call = s
        .logon
        .logon(&r.user, &r.password, r.pool.as_deref(), &client);
    let result = s.by_address(peer.ip(), call).await?;
    s.counters
        .logon(result.is_ok(), started.elapsed().as_micros() as u64);
    match result {
        Ok(LogonOutcome::Granted(g)) => Ok((
            StatusCode::CREATED,
            Json(json!({ "outcome": "granted", "session": g })),
        )
            .into_response()),
        Ok(choose @ LogonOutcome::ChoosePool { .. }) => {
            Ok((StatusCode::OK, Json(choose)).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordChange {
    user: String,
    old_password: String,
    new_password: String,
}

async fn change_password(
    State(s): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Json(r): Json<PasswordChange>,
) -> Result<StatusCode, ApiError> {
    check_credentials_size(&r.user, &r.new_password)?;
    let c = Credentials {
        user: r.user,
        password: r.old_password,
    };
    let call = s
        .logon
        .change_password(&c.user, &c.password, &r.new_password);
    proved(&s, peer, &c, call).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Credentials {
    user: String,
    password: String,
}

/// Runs a password-proved call, counting wrong passwords against the client's address.
async fn proved<T>(
    s: &AppState,
    peer: SocketAddr,
    c: &Credentials,
    call: impl std::future::Future<Output = Result<T, LogonError>>,
) -> Result<T, ApiError> {
    check_credentials_size(&c.user, &c.password)?;
    Ok(s.by_address(peer.ip(), call).await??)
}

async fn my_desktops(
    State(s): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Json(c): Json<Credentials>,
) -> Result<Response, ApiError> {
    let list = proved(&s, peer, &c, s.logon.my_desktops(&c.user, &c.password)).await?;
    Ok(Json(json!({ "desktops": list })).into_response())
}

async fn restart_desktop(
    State(s): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(pool): Path<String>,
    Json(c): Json<Credentials>,
) -> Result<StatusCode, ApiError> {
    let call = s.logon.restart_desktop(&c.user, &c.password, &pool);
    proved(&s, peer, &c, call).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn log_off_desktop(
    State(s): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(pool): Path<String>,
    Json(c): Json<Credentials>,
) -> Result<StatusCode, ApiError> {
    let call = s.logon.log_off_desktop(&c.user, &c.password, &pool);
    proved(&s, peer, &c, call).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn restart_session_desktop(
    State(s): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let session = authorized(&s, &id, &headers).await?;
    s.logon.restart_session_desktop(&session.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn domains(State(s): State<Shared>) -> Json<serde_json::Value> {
    Json(json!({ "domains": s.logon.domains() }))
}

/// Refuses absurd credentials before any work (they would reach argon2 or a directory).
pub(crate) fn check_credentials_size(user: &str, password: &str) -> Result<(), ApiError> {
    if user.len() > 256 || password.len() > 1024 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "user or password too long".into(),
        ));
    }
    Ok(())
}

/// The request's bearer token.
pub(crate) fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "missing bearer token".into()))
}

/// Session `id`, live or ended, if the request carries its bearer token.
async fn session_for(s: &AppState, id: &str, headers: &HeaderMap) -> Result<Session, ApiError> {
    let token = bearer(headers)?;
    let lifetime = s.logon.token_lifetime();
    s.store
        .authorize_session(id, token, lifetime)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no such session for this token, or the token expired: sign in again".into(),
            )
        })
}

/// The live session `id` if the request carries its bearer token.
pub(crate) async fn authorized(
    s: &AppState,
    id: &str,
    headers: &HeaderMap,
) -> Result<Session, ApiError> {
    let session = session_for(s, id, headers).await?;
    if !session.is_live() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "the session has ended ({})",
                session.end_reason.as_deref().unwrap_or("logoff")
            ),
        ));
    }
    Ok(session)
}

async fn session_status(
    State(s): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let session = session_for(&s, &id, &headers).await?;
    let messages = s.store.take_messages(&session.id).await?;
    Ok(Json(json!({
        "session_id": session.id,
        "state": session.state,
        "end_reason": session.end_reason,
        "messages": messages,
    }))
    .into_response())
}

async fn end_session(
    State(s): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let session = authorized(&s, &id, &headers).await?;
    s.logon.logoff(&session.id, EndReason::Logoff).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn disconnect(
    State(s): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let session = authorized(&s, &id, &headers).await?;
    s.store
        .set_session_state(&session.id, "disconnected")
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn ticket(
    State(s): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let session = authorized(&s, &id, &headers).await?;
    let t = s.logon.new_ticket(&session.id).await?;
    Ok((StatusCode::CREATED, Json(t)).into_response())
}

async fn vv_file(
    State(s): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let session = authorized(&s, &id, &headers).await?;
    let t = s.logon.new_ticket(&session.id).await?;
    let desktop = t.desktop;
    let display = t.display.ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            format!("desktop {desktop} has no display"),
        )
    })?;
    let body = crate::vv::file(&display, &t.ticket, &desktop);
    Ok((
        [
            ("content-type", crate::vv::MIME.to_string()),
            (
                "content-disposition",
                format!("attachment; filename=\"{desktop}.vv\""),
            ),
            ("cache-control", "no-store".to_string()),
        ],
        body,
    )
        .into_response())
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// Every route on one address (the default, and the all-in-one); serve it with
/// `into_make_service_with_connect_info::<SocketAddr>()`.
pub fn router(state: Shared) -> Router {
    client_router(state.clone()).merge(admin_only(state))
}

/// What clients and joining hosts use: sign-in, sessions, displays, password changes.
pub fn client_router(state: Shared) -> Router {
    Router::new()
        .route("/api/v1/sessions", post(create_session))
        .route(
            "/api/v1/sessions/{id}",
            delete(end_session).get(session_status),
        )
        .route("/api/v1/sessions/{id}/disconnect", post(disconnect))
        .route("/api/v1/sessions/{id}/ticket", post(ticket))
        .route("/api/v1/sessions/{id}/vv", post(vv_file))
        .route("/api/v1/sessions/{id}/tunnel", get(crate::tunnel::open))
        .route(
            "/api/v1/sessions/{id}/restart",
            post(restart_session_desktop),
        )
        .route("/api/v1/desktops", post(my_desktops))
        .route("/api/v1/desktops/{pool}/restart", post(restart_desktop))
        .route("/api/v1/desktops/{pool}/logoff", post(log_off_desktop))
        .route("/api/v1/password", post(change_password))
        .route("/api/v1/domains", get(domains))
        .route("/healthz", get(healthz))
        .merge(crate::host_join::routes())
        .with_state(state)
}

/// The administrators' API and /metrics, for `admin_listen` ([`crate::config`]).
pub fn admin_router(state: Shared) -> Router {
    admin_only(state).route("/healthz", get(healthz))
}

fn admin_only(state: Shared) -> Router {
    Router::new()
        .route("/metrics", get(crate::metrics::metrics))
        .merge(crate::admin_api::routes())
        .with_state(state)
}
