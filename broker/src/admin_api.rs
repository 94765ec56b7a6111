//! The administrators' API (HTTPS, JSON, bearer tokens): what the admin console and scripts
//! call. An administrator is a local account with the administrator flag, or a directory user
//! listed in (or a member, through nested groups, of a group listed in) the broker's `admins`.
//!
//! | method | path | does |
//! |---|---|---|
//! | POST | /api/v1/admin/tokens | `{"user", "password"}`: a bearer token for 8 hours |
//! | DELETE | /api/v1/admin/tokens | revokes the request's token (sign-out) |
//! | GET | /api/v1/admin/sessions | the live sessions |
//! | POST | /api/v1/admin/sessions/{id}/messages | `{"body", "severity"?}`: a message to its user |
//! | POST | /api/v1/admin/sessions/{id}/logoff | forces a logoff |
//! | GET | /api/v1/admin/events?action=&limit= | the audit trail, newest first |
//! | POST | /api/v1/admin/join-tokens | `{"host", "rejoin"?, "ttl_minutes"?}`: a one-time token host `host` joins (or re-joins, replacing its certificate) with |
//!
//! Every change is an event with the administrator as its actor.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::api::{bearer, check_credentials_size, ApiError, Shared};
use crate::store::events::Event;
use crate::store::sessions::EndReason;

/// How long an administrator's token lives.
pub const ADMIN_TOKEN_TTL: Duration = Duration::from_secs(8 * 3600);

/// The administrator the request's token belongs to, if they still are one: the account is
/// checked again on every use ([`crate::logon::Logon::still_admin`]); a token whose holder
/// lost the right is revoked.
async fn admin(s: &Shared, headers: &HeaderMap) -> Result<String, ApiError> {
    let token = bearer(headers)?;
    let who = s.store.authorize_admin(token).await?.ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "the administrator token is unknown or expired; sign in again".into(),
        )
    })?;
    if !s.logon.still_admin(&who).await? {
        s.store.revoke_admin_token(token).await?;
        s.logon
            .audit(Event::new(
                &who,
                "admin-token-revoked",
                "",
                "no longer an administrator",
            ))
            .await;
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "this account may no longer administer Tessera".into(),
        ));
    }
    Ok(who)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignIn {
    user: String,
    password: String,
}

async fn sign_in(
    State(s): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Json(r): Json<SignIn>,
) -> Result<Response, ApiError> {
    check_credentials_size(&r.user, &r.password)?;
    let name = s
        .by_address(peer.ip(), s.logon.admin_sign_in(&r.user, &r.password))
        .await??;
    let (token, expires_at) = s
        .store
        .open_admin_token(&name, ADMIN_TOKEN_TTL.as_millis() as i64)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "token": token, "expires_at": expires_at, "admin": name })),
    )
        .into_response())
}

async fn sign_out(State(s): State<Shared>, headers: HeaderMap) -> Result<StatusCode, ApiError> {
    let who = admin(&s, &headers).await?;
    s.store.revoke_admin_token(bearer(&headers)?).await?;
    s.logon
        .audit(Event::new(&who, "admin-sign-out", "", "ok"))
        .await;
    Ok(StatusCode::NO_CONTENT)
}

async fn sessions(State(s): State<Shared>, headers: HeaderMap) -> Result<Response, ApiError> {
    admin(&s, &headers).await?;
    Ok(Json(s.store.live_sessions().await?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewMessage {
    body: String,
    #[serde(default = "info")]
    severity: String,
}

fn info() -> String {
    "info".into()
}

async fn send_message(
    State(s): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(m): Json<NewMessage>,
) -> Result<Response, ApiError> {
    let who = admin(&s, &headers).await?;
    let result = s.store.post_message(&id, &who, &m.severity, &m.body).await;
    let outcome = match &result {
        Ok(_) => "ok".to_string(),
        Err(e) => e.to_string(),
    };
    s.logon
        .audit(Event::new(&who, "send-message", &id, &outcome))
        .await;
    Ok((StatusCode::CREATED, Json(result?)).into_response())
}

async fn force_logoff(
    State(s): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let who = admin(&s, &headers).await?;
    let session = s.store.session(&id).await?;
    if !session.is_live() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("session {id} has already ended"),
        ));
    }
    let result = s.logon.logoff(&id, EndReason::Admin).await;
    let outcome = match &result {
        Ok(()) => "ok".to_string(),
        Err(e) => e.to_string(),
    };
    s.logon
        .audit(Event {
            detail: format!("user {}", session.user_key),
            ..Event::new(&who, "force-logoff", &id, &outcome)
        })
        .await;
    result?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventQuery {
    action: Option<String>,
    limit: Option<i64>,
}

async fn events(
    State(s): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<EventQuery>,
) -> Result<Response, ApiError> {
    admin(&s, &headers).await?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let action = q.action.as_deref().filter(|a| !a.is_empty());
    Ok(Json(s.store.events(action, limit).await?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewJoinToken {
    host: String,
    #[serde(default)]
    rejoin: bool,
    ttl_minutes: Option<u64>,
}

async fn join_token(
    State(s): State<Shared>,
    headers: HeaderMap,
    Json(r): Json<NewJoinToken>,
) -> Result<Response, ApiError> {
    let who = admin(&s, &headers).await?;
    let hosts = crate::host_join::authority(&s)?;
    let ttl = match r.ttl_minutes {
        None => crate::host_join::JOIN_TOKEN_TTL,
        Some(m @ 1..=10080) => Duration::from_secs(m * 60),
        Some(_) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "ttl_minutes: 1 to 10080 (a week)".into(),
            ))
        }
    };
    let (token, expires_at) =
        crate::host_join::new_token(&s.store, &hosts.api_ca, &who, &r.host, r.rejoin, ttl).await?;
    let action = if r.rejoin {
        "rejoin-token"
    } else {
        "join-token"
    };
    s.logon.audit(Event::new(&who, action, &r.host, "ok")).await;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "token": token, "expires_at": expires_at })),
    )
        .into_response())
}

/// The administrators' routes (merged into [`crate::api::router`]).
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/api/v1/admin/tokens", post(sign_in).delete(sign_out))
        .route("/api/v1/admin/sessions", get(sessions))
        .route("/api/v1/admin/sessions/{id}/messages", post(send_message))
        .route("/api/v1/admin/sessions/{id}/logoff", post(force_logoff))
        .route("/api/v1/admin/events", get(events))
        .route("/api/v1/admin/join-tokens", post(join_token))
}
