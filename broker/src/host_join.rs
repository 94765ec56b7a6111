//! Hosts joining with a one-time token (the agent's side is `tessera_agent::join`):
//!
//! | method | path | does |
//! |---|---|---|
//! | GET | /api/v1/ca.pem | the broker's CA (public; the agent checks it against the token's pin) |
//! | POST | /api/v1/hosts/join | `{"token", "name", "address", "csr"}`: the agent's certificate; the host is registered |
//!
//! The certificate is a TLS server certificate for the address's host and the host's name,
//! whatever the request asked for; only its public key is taken.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use tessera_agent::join::{JoinRequest, JoinResponse, JoinToken};

use crate::api::{ApiError, Shared};
use crate::pki::Pki;
use crate::store::events::Event;
use crate::store::Store;

/// Default lifetime of a join token.
pub const JOIN_TOKEN_TTL: Duration = Duration::from_secs(3600);

fn bad(m: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, m.into())
}

/// A new join token (`TSJ1.<secret>.<CA pin>`) and its expiry.
pub async fn new_token(
    store: &Store,
    pki: &Pki,
    created_by: &str,
    ttl: Duration,
) -> Result<(String, i64), crate::store::StoreError> {
    let (secret, expires) = store
        .create_join_token(created_by, ttl.as_millis() as i64)
        .await?;
    let token = JoinToken {
        secret,
        ca_sha256: pki.ca_fingerprint(),
    };
    Ok((token.to_string(), expires))
}

/// The CA that certifies hosts, or 503 when this broker has none.
pub(crate) fn pki(s: &Shared) -> Result<&Pki, ApiError> {
    s.pki.as_deref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "this broker does not issue host certificates".into(),
        )
    })
}

/// The host part of `https://HOST:PORT`, checked.
fn address_host(address: &str) -> Result<String, ApiError> {
    let url = reqwest::Url::parse(address).map_err(|e| bad(format!("address {address:?}: {e}")))?;
    if url.scheme() != "https"
        || !matches!(url.path(), "" | "/")
        || url.query().is_some()
        || !url.username().is_empty()
    {
        return Err(bad(format!(
            "address {address:?}: expected https://HOST:PORT"
        )));
    }
    let host = url
        .host_str()
        .ok_or_else(|| bad(format!("address {address:?} has no host")))?;
    Ok(host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string())
}

async fn ca(State(s): State<Shared>) -> Result<Response, ApiError> {
    Ok((
        [("content-type", "application/x-pem-file")],
        pki(&s)?.ca_pem(),
    )
        .into_response())
}

async fn join(State(s): State<Shared>, Json(r): Json<JoinRequest>) -> Result<Response, ApiError> {
    let pki = pki(&s)?;
    let name_ok = (1..=63).contains(&r.name.len())
        && r.name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !name_ok {
        return Err(bad(format!(
            "host name {:?}: 1 to 63 letters, digits, '-', '_', '.'",
            r.name
        )));
    }
    if r.csr.len() > 16 << 10 || r.token.len() > 256 {
        return Err(bad("request too large"));
    }
    let host = address_host(&r.address)?;
    // Signed before the token is spent, so that a bad request does not burn it.
    let certificate = pki
        .sign_request(&r.csr, &r.name, &[host, r.name.clone()])
        .map_err(|e| bad(format!("certificate request: {e}")))?;
    if !s.store.redeem_join_token(&r.token, &r.name).await? {
        s.logon
            .audit(Event::new(&r.name, "host-join", &r.address, "bad token"))
            .await;
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "the join token is unknown, used or expired; make a new one with `tessera-broker join-token`".into(),
        ));
    }
    let host_id = s.store.register_host(&r.name, &r.address).await?;
    s.logon
        .audit(Event::new(&r.name, "host-join", &r.address, "ok"))
        .await;
    tracing::info!(host = %r.name, address = %r.address, "host joined");
    Ok((
        StatusCode::CREATED,
        Json(JoinResponse {
            host_id,
            certificate,
            ca: pki.ca_pem(),
        }),
    )
        .into_response())
}

/// The routes (merged into [`crate::api::router`]).
pub fn routes() -> axum::Router<Shared> {
    axum::Router::new()
        .route("/api/v1/ca.pem", axum::routing::get(ca))
        .route("/api/v1/hosts/join", axum::routing::post(join))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(address_host("https://host-1:8443").unwrap(), "host-1");
        assert_eq!(address_host("https://10.0.0.2:8443/").unwrap(), "10.0.0.2");
        assert_eq!(address_host("https://[::1]:8443").unwrap(), "::1");
        for bad in [
            "http://host:8443",
            "https://host:8443/x",
            "https://u:p@host:8443",
            "host:8443",
            "https://host:8443?a",
            "",
        ] {
            assert!(address_host(bad).is_err(), "{bad}");
        }
    }
}
