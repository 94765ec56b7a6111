//! The broker's client API (HTTPS, JSON): logon, logoff, disconnect, a new ticket.
//!
//! | method | path | does |
//! |---|---|---|
//! | POST | /api/v1/sessions | `{"user", "password", "pool"?}`: a desktop, or the pools to choose from |
//! | DELETE | /api/v1/sessions/{id} | log off (bearer: the session token) |
//! | POST | /api/v1/sessions/{id}/disconnect | the client went away; the desktop waits |
//! | POST | /api/v1/sessions/{id}/ticket | a new one-time display ticket (set on the desktop's display) |
//! | POST | /api/v1/sessions/{id}/vv | the same as a remote-viewer file (`application/x-virt-viewer`) |
//! | GET | /api/v1/sessions/{id} | its state, why it ended, and the administrators' messages not yet fetched |
//! | GET | /healthz | liveness |
//! | GET | /metrics | Prometheus text |
//!
//! The administrators' calls are in [`crate::admin_api`], hosts joining in
//! [`crate::host_join`].
//!
//! Errors are `{"error": "..."}` with 400 (bad request), 401 (credentials), 403 (not
//! entitled), 404, 429 (throttled: per user, and per client address after repeated failures),
//! 503 (no desktop free, or a directory or host down), 500.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::logon::{Logon, LogonError, LogonOutcome};
use crate::store::sessions::{EndReason, Session};
use crate::store::{Store, StoreError};

/// Failed logons per client address per minute before it is throttled.
pub const MAX_FAILURES_PER_ADDRESS: u32 = 50;

/// What the handlers share.
pub struct AppState {
    /// The logon path.
    pub logon: Logon,
    /// The store.
    pub store: Store,
    /// What /metrics counts.
    pub counters: crate::metrics::Counters,
    /// The CA that certifies joining hosts (none: hosts are added with certificates made
    /// beforehand).
    pub pki: Option<Arc<crate::pki::Pki>>,
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl AppState {
    /// State over a logon service and its store.
    pub fn new(logon: Logon, store: Store) -> Self {
        Self {
            logon,
            store,
            counters: Default::default(),
            pki: None,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Lets hosts join with tokens, certified by `pki`.
    pub fn with_pki(mut self, pki: Arc<crate::pki::Pki>) -> Self {
        self.pki = Some(pki);
        self
    }

    /// Refuses an address after repeated failed sign-ins.
    pub(crate) fn check_address(&self, ip: IpAddr) -> Result<(), ApiError> {
        if self.address_throttled(ip) {
            return Err(ApiError(
                StatusCode::TOO_MANY_REQUESTS,
                "too many failed sign-ins from this address; wait a minute".into(),
            ));
        }
        Ok(())
    }

    fn address_throttled(&self, ip: IpAddr) -> bool {
        let f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        f.get(&ip).is_some_and(|(since, n)| {
            since.elapsed() < Duration::from_secs(60) && *n >= MAX_FAILURES_PER_ADDRESS
        })
    }

    pub(crate) fn address_failed(&self, ip: IpAddr) {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let e = f.entry(ip).or_insert((Instant::now(), 0));
        if e.0.elapsed() >= Duration::from_secs(60) {
            *e = (Instant::now(), 0);
        }
        e.1 += 1;
    }
}

/// An error answer.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<LogonError> for ApiError {
    fn from(e: LogonError) -> Self {
        let status = match &e {
            LogonError::Denied(_) => StatusCode::UNAUTHORIZED,
            LogonError::TooManyAttempts => StatusCode::TOO_MANY_REQUESTS,
            LogonError::NotEntitled(_) | LogonError::NotAdministrator => StatusCode::FORBIDDEN,
            LogonError::NoDesktop(_) | LogonError::Unavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            LogonError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self(status, e.to_string())
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
        Self(status, e.to_string())
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
    s.check_address(peer.ip())?;
    let started = Instant::now();
    let result = s
        .logon
        .logon(
            &r.user,
            &r.password,
            r.pool.as_deref(),
            &peer.ip().to_string(),
        )
        .await;
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
        Err(e) => {
            if matches!(e, LogonError::Denied(_) | LogonError::TooManyAttempts) {
                s.address_failed(peer.ip());
            }
            Err(e.into())
        }
    }
}

/// Refuses absurd credentials before any work (they would reach argon2 or a directory).
pub(crate) fn check_credentials_size(user: &str, password: &str) -> Result<(), ApiError> {
    if user.len() > 256 || password.len() > 1024 {
        return Err(ApiError(
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
        .ok_or_else(|| ApiError(StatusCode::UNAUTHORIZED, "missing bearer token".into()))
}

/// Session `id`, live or ended, if the request carries its bearer token.
async fn session_for(s: &AppState, id: &str, headers: &HeaderMap) -> Result<Session, ApiError> {
    let token = bearer(headers)?;
    s.store.authorize_session(id, token).await?.ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            "no such session for this token".into(),
        )
    })
}

/// The live session `id` if the request carries its bearer token.
async fn authorized(s: &AppState, id: &str, headers: &HeaderMap) -> Result<Session, ApiError> {
    let session = session_for(s, id, headers).await?;
    if !session.is_live() {
        return Err(ApiError(
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
        ApiError(
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

/// The router; serve it with `into_make_service_with_connect_info::<SocketAddr>()`.
pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/api/v1/sessions", post(create_session))
        .route(
            "/api/v1/sessions/{id}",
            delete(end_session).get(session_status),
        )
        .route("/api/v1/sessions/{id}/disconnect", post(disconnect))
        .route("/api/v1/sessions/{id}/ticket", post(ticket))
        .route("/api/v1/sessions/{id}/vv", post(vv_file))
        .route("/healthz", get(healthz))
        .route("/metrics", get(crate::metrics::metrics))
        .merge(crate::admin_api::routes())
        .merge(crate::host_join::routes())
        .with_state(state)
}
