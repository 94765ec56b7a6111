//! Joining a broker with a one-time token, the way kubeadm joins a node: the admin makes a
//! token on the broker (`tessera-broker join-token`), which carries a secret and the SHA-256
//! of the broker's CA certificate. The agent fetches the CA, checks it against that pin (so a
//! man in the middle cannot pose as the broker), generates its key pair locally, and sends a
//! certificate request with the token; the broker signs it and registers the host. The
//! private key never leaves the host.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::TlsConfig;

/// The token's version tag.
const PREFIX: &str = "TSJ1";

/// A join token: `TSJ1.<secret>.<sha256 of the CA's DER, hex>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// The one-time secret (the broker keeps only its hash).
    pub secret: String,
    /// The broker CA's fingerprint.
    pub ca_sha256: String,
}

impl std::fmt::Display for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{PREFIX}.{}.{}", self.secret, self.ca_sha256)
    }
}

impl FromStr for JoinToken {
    type Err = JoinError;

    fn from_str(s: &str) -> Result<Self, JoinError> {
        let bad = || JoinError::Token("expected TSJ1.<secret>.<64 hex digits>".into());
        let mut parts = s.trim().split('.');
        let (Some(PREFIX), Some(secret), Some(pin), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        let secret_ok = (16..=128).contains(&secret.len())
            && secret
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !secret_ok || pin.len() != 64 || !pin.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad());
        }
        Ok(Self {
            secret: secret.to_string(),
            ca_sha256: pin.to_ascii_lowercase(),
        })
    }
}

/// What the agent sends to `POST /api/v1/hosts/join`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    /// The token's secret.
    pub token: String,
    /// The host's name.
    pub name: String,
    /// Where the broker reaches the agent: https://HOST:PORT.
    pub address: String,
    /// A PKCS#10 certificate request (PEM); only its public key is used.
    pub csr: String,
}

/// The broker's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinResponse {
    /// The host's ID at the broker.
    pub host_id: String,
    /// The agent's certificate (PEM), for the name and the address's host.
    pub certificate: String,
    /// The broker's CA (PEM): it signs the broker's client certificate.
    pub ca: String,
}

/// Why a join failed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// A malformed token.
    #[error("join token: {0}")]
    Token(String),
    /// The broker's CA is not the one the token names.
    #[error(
        "the broker's CA has fingerprint {got}, the token expects {want}: the wrong broker, or \
         someone in between; nothing was sent"
    )]
    Pin {
        /// What the broker presented.
        got: String,
        /// What the token says.
        want: String,
    },
    /// The broker refused or could not be reached.
    #[error("broker: {0}")]
    Broker(String),
    /// Key or request generation.
    #[error("key: {0}")]
    Key(String),
    /// Writing the files.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
}

/// SHA-256 of a PEM certificate's DER, hex.
pub fn ca_fingerprint(pem: &str) -> Result<String, JoinError> {
    use rustls::pki_types::pem::PemObject;
    let der = rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| JoinError::Broker(format!("the CA is not a PEM certificate: {e}")))?;
    Ok(Sha256::digest(&der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

fn client(ca: Option<&str>) -> Result<reqwest::Client, JoinError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let b = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30));
    let b = match ca {
        // Only to fetch the CA, which is then checked against the pin before any use.
        None => b.danger_accept_invalid_certs(true),
        Some(pem) => b.add_root_certificate(
            reqwest::Certificate::from_pem(pem.as_bytes())
                .map_err(|e| JoinError::Broker(format!("the CA: {e}")))?,
        ),
    };
    b.build().map_err(|e| JoinError::Broker(e.to_string()))
}

fn write(path: &Path, text: &str, secret: bool) -> Result<(), JoinError> {
    crate::files::write_file(path, text.as_bytes(), secret)
        .map_err(|e| JoinError::Io(path.display().to_string(), e))
}

/// Joins the broker at `broker` (https://HOST:PORT) as `name`, reachable at `address`, and
/// writes the key, certificate and CA to the paths in `tls`.
pub async fn join(
    broker: &str,
    token: &JoinToken,
    name: &str,
    address: &str,
    tls: &TlsConfig,
) -> Result<JoinResponse, JoinError> {
    let broker = broker.trim_end_matches('/');
    let err = |e: reqwest::Error| JoinError::Broker(e.to_string());
    let ca = client(None)?
        .get(format!("{broker}/api/v1/ca.pem"))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(err)?
        .text()
        .await
        .map_err(err)?;
    let got = ca_fingerprint(&ca)?;
    if got != token.ca_sha256 {
        return Err(JoinError::Pin {
            got,
            want: token.ca_sha256.clone(),
        });
    }
    let key = rcgen::KeyPair::generate().map_err(|e| JoinError::Key(e.to_string()))?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
        .map_err(|e| JoinError::Key(e.to_string()))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let csr = params
        .serialize_request(&key)
        .and_then(|c| c.pem())
        .map_err(|e| JoinError::Key(e.to_string()))?;
    let resp = client(Some(&ca))?
        .post(format!("{broker}/api/v1/hosts/join"))
        .json(&JoinRequest {
            token: token.secret.clone(),
            name: name.to_string(),
            address: address.to_string(),
            csr,
        })
        .send()
        .await
        .map_err(err)?;
    if !resp.status().is_success() {
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        return Err(JoinError::Broker(format!(
            "{status}: {}",
            body["error"].as_str().unwrap_or("no reason given")
        )));
    }
    let answer: JoinResponse = resp.json().await.map_err(err)?;
    write(&tls.key, &key.serialize_pem(), true)?;
    write(&tls.cert, &answer.certificate, false)?;
    write(&tls.client_ca, &answer.ca, false)?;
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_and_print() {
        let pin = "ab".repeat(32);
        let t: JoinToken = format!("TSJ1.abcdefghijklmnopqrstuvwxyz012345.{pin}")
            .parse()
            .unwrap();
        assert_eq!(t.ca_sha256, pin);
        assert_eq!(t.to_string().parse::<JoinToken>().unwrap(), t);
        for bad in [
            "",
            "TSJ1",
            "TSJ2.abcdefghijklmnop.".to_string().as_str(),
            &format!("TSJ1.short.{pin}"),
            &format!("TSJ1.abcdefghijklmnopqrstu/wxyz.{pin}"),
            &format!("TSJ1.abcdefghijklmnopqrstuvwxyz.{}", "z".repeat(64)),
            &format!("TSJ1.abcdefghijklmnopqrstuvwxyz.{pin}.extra"),
        ] {
            assert!(bad.parse::<JoinToken>().is_err(), "{bad:?}");
        }
    }
}
