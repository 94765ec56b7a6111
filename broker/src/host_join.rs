//! Hosts joining with a one-time token (the agent's side is `tessera_agent::join`):
//!
//! | method | path | does |
//! |---|---|---|
//! | GET | /api/v1/ca.pem | the broker's CA (public; the agent checks it against the token's pin) |
//! | POST | /api/v1/hosts/join | `{"token", "name", "address", "csr"}`: the agent's certificate; the host is registered |
//!
//! A token admits the one host it names; a name already registered is refused unless the
//! administrator made the token for a re-join of that host (which revokes the host's earlier
//! certificates: how a host's key is rotated). The token is checked before any request is
//! signed, and spent only after: a malformed request does not burn it, and no certificate
//! comes out of a bad token. The certificate comes from the host CA, not the API's: a TLS
//! server certificate for the address's host and the host's name, valid
//! [`HOST_CERT_LIFETIME`], whatever the request asked for; only its public key is taken.

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
/// How long a host certificate is valid; a re-join (`tessera-broker rotate-host-cert`)
/// replaces it before then.
pub const HOST_CERT_LIFETIME: Duration = Duration::from_secs(365 * 86_400);

fn bad(m: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, m.into())
}

/// A new join token (`TSJ1.<secret>.<API CA pin>`) admitting host `host` (re-joining it
/// when `rejoin`), and its expiry. The pin is the API CA's: what the agent checks the
/// broker's API against before it sends anything.
pub async fn new_token(
    store: &Store,
    api_ca: &Pki,
    created_by: &str,
    host: &str,
    rejoin: bool,
    ttl: Duration,
) -> Result<(String, i64), crate::store::StoreError> {
    if !valid_host_name(host) {
        return Err(crate::store::StoreError::Invalid(host_name_rule(host)));
    }
    let (secret, expires) = store
        .create_join_token(created_by, host, rejoin, ttl.as_millis() as i64)
        .await?;
    let token = JoinToken {
        secret,
        ca_sha256: api_ca.ca_fingerprint(),
    };
    Ok((token.to_string(), expires))
}

/// The CAs hosts join with, or 503 when this broker has none.
pub(crate) fn authority(s: &Shared) -> Result<&crate::api::HostAuthority, ApiError> {
    s.hosts.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "this broker does not issue host certificates".into(),
        )
    })
}

fn valid_host_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

fn host_name_rule(name: &str) -> String {
    format!("host name {name:?}: 1 to 63 letters, digits, '-', '_', '.'")
}

/// Why the host CRL could not be renewed.
#[derive(Debug, thiserror::Error)]
pub enum CrlError {
    /// Reading the revocations.
    #[error("host CRL: {0}")]
    Store(#[from] crate::store::StoreError),
    /// Signing the CRL.
    #[error("host CRL: {0}")]
    Pki(#[from] crate::pki::PkiError),
    /// The verifier refused it.
    #[error("host CRL: {0}")]
    Verifier(#[from] rustls::client::VerifierBuilderError),
}

/// Makes a new CRL from the store's revocations and gives it to the agents' verifier.
pub async fn refresh_crl(store: &Store, hosts: &crate::api::HostAuthority) -> Result<(), CrlError> {
    let revoked = store.revoked_host_certificates().await?;
    let crl = hosts.ca.crl(&revoked)?;
    Ok(hosts.trust.set_crl(crl)?)
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
        authority(&s)?.api_ca.ca_pem(),
    )
        .into_response())
}

async fn join(State(s): State<Shared>, Json(r): Json<JoinRequest>) -> Result<Response, ApiError> {
    let hosts = authority(&s)?;
    if !valid_host_name(&r.name) {
        return Err(bad(host_name_rule(&r.name)));
    }
    if r.csr.len() > 16 << 10 || r.token.len() > 256 {
        return Err(bad("request too large"));
    }
    let host = address_host(&r.address)?;
    let refused = |outcome: &'static str, status: StatusCode, message: String| {
        let s = s.clone();
        let (name, address) = (r.name.clone(), r.address.clone());
        async move {
            s.logon
                .audit(Event::new(&name, "host-join", &address, outcome))
                .await;
            ApiError::new(status, message)
        }
    };
    // The token first: nothing is signed for a request without a valid one.
    let Some(rejoin) = s.store.check_join_token(&r.token, &r.name).await? else {
        return Err(refused(
            "bad token",
            StatusCode::UNAUTHORIZED,
            format!(
                "the join token is unknown, used, expired or for another host than {}; make \
                 one with `tessera-broker join-token --host {}`",
                r.name, r.name
            ),
        )
        .await);
    };
    if !rejoin && s.store.host_exists(&r.name).await? {
        return Err(refused(
            "host exists",
            StatusCode::CONFLICT,
            format!(
                "a host named {} is registered; replacing it takes a re-join token \
                 (`tessera-broker rotate-host-cert {}`)",
                r.name, r.name
            ),
        )
        .await);
    }
    let signed = hosts
        .ca
        .sign_request(&r.csr, &r.name, &[host, r.name.clone()], HOST_CERT_LIFETIME)
        .map_err(|e| bad(format!("certificate request: {e}")))?;
    // Spent only now (one of two racing requests wins); the loser's certificate is dropped
    // unrecorded and unsent.
    if !s.store.redeem_join_token(&r.token, &r.name).await? {
        return Err(refused(
            "token raced",
            StatusCode::UNAUTHORIZED,
            "the join token was used meanwhile".into(),
        )
        .await);
    }
    let host_id = s.store.register_host(&r.name, &r.address).await?;
    let revoked = s
        .store
        .record_host_certificate(&r.name, &signed.serial, signed.not_after_ms)
        .await?;
    if revoked > 0 {
        refresh_crl(&s.store, hosts)
            .await
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    }
    let outcome = if rejoin { "re-joined" } else { "ok" };
    s.logon
        .audit(Event::new(&r.name, "host-join", &r.address, outcome))
        .await;
    tracing::info!(host = %r.name, address = %r.address, rejoin, revoked, "host joined");
    Ok((
        StatusCode::CREATED,
        Json(JoinResponse {
            host_id,
            certificate: signed.pem,
            ca: hosts.ca.ca_pem(),
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
