//! The broker's side of the agent API: HTTPS with the broker's client certificate, and the
//! agent's own request and answer types.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tessera_agent::capacity::Capacity;
use tessera_agent::vms::{StopOutcome, StopRequest, VmSpec};

/// How long a guest gets to shut down after the ACPI power button when the broker stops its
/// VM gracefully (a restart) and names no other limit.
pub const GUEST_SHUTDOWN_SECS: u64 = 60;
/// Beyond the guest's time, what a stop request may take: the power-off and the answer.
const STOP_SLACK_SECS: u64 = 30;

use crate::host_trust::HostTrust;

/// Errors calling an agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Transport (connect, TLS, timeout).
    #[error("agent {0}: {1}")]
    Transport(String, String),
    /// The agent answered with an error.
    #[error("agent {url}: {status} {message}")]
    Status {
        /// Agent URL.
        url: String,
        /// HTTP status.
        status: u16,
        /// Its message.
        message: String,
    },
    /// Certificates could not be loaded.
    #[error("TLS set-up: {0}")]
    Tls(String),
}

impl AgentError {
    /// Whether the agent said "not found" (an idempotent delete's success).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Status { status: 404, .. })
    }
}

/// The host CA in `ca` (PEM) as a verifier of agents ([`HostTrust`]).
pub fn host_trust(ca: &Path) -> Result<Arc<HostTrust>, AgentError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let t = |e: &dyn std::fmt::Display| AgentError::Tls(e.to_string());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).map_err(|e| t(&e))? {
        roots.add(c.map_err(|e| t(&e))?).map_err(|e| t(&e))?;
    }
    HostTrust::new(roots).map_err(|e| t(&e))
}

/// The broker's TLS identity toward agents, trusting agents certified by the CA in `ca`.
pub fn tls_client(ca: &Path, cert: &Path, key: &Path) -> Result<reqwest::Client, AgentError> {
    tls_client_with(host_trust(ca)?, cert, key)
}

/// The broker's TLS identity toward agents, trusting what `trust` accepts (its CRL too).
pub fn tls_client_with(
    trust: Arc<HostTrust>,
    cert: &Path,
    key: &Path,
) -> Result<reqwest::Client, AgentError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let t = |e: &dyn std::fmt::Display| AgentError::Tls(e.to_string());
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| t(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| t(&e))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| t(&e))?;
    let mut cfg = rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(trust)
        .with_client_auth_cert(chain, key)
        .map_err(|e| t(&e))?;
    // A resumed session skips the certificate check: full handshakes only, so that each one
    // meets the current CRL.
    cfg.resumption = rustls::client::Resumption::disabled();
    reqwest::Client::builder()
        .use_preconfigured_tls(cfg)
        // No pooled connections: every call's handshake checks the agent against the current
        // CRL, so a revoked host is refused at its next call, not when an idle connection
        // happens to close (a P-256 handshake on the hosts' network costs about a millisecond).
        .pool_max_idle_per_host(0)
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| t(&e))
}

/// An error and its causes in one line: "error sending request: ...: invalid peer
/// certificate: Expired" says what an admin must fix, the first part alone does not.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// One agent.
#[derive(Clone)]
pub struct AgentClient {
    url: String,
    http: reqwest::Client,
}

impl AgentClient {
    /// A client for the agent at `url` (https://host:port).
    pub fn new(url: &str, http: reqwest::Client) -> Self {
        Self {
            url: url.trim_end_matches('/').to_string(),
            http,
        }
    }

    /// The agent's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    async fn send<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T, AgentError> {
        let resp = req
            .send()
            .await
            .map_err(|e| AgentError::Transport(self.url.clone(), with_causes(&e)))?;
        let status = resp.status();
        if !status.is_success() {
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            return Err(AgentError::Status {
                url: self.url.clone(),
                status: status.as_u16(),
                message: body["error"].as_str().unwrap_or("").to_string(),
            });
        }
        if status == StatusCode::NO_CONTENT {
            return serde_json::from_value(Value::Null)
                .map_err(|e| AgentError::Transport(self.url.clone(), e.to_string()));
        }
        resp.json()
            .await
            .map_err(|e| AgentError::Transport(self.url.clone(), format!("bad answer: {e}")))
    }

    /// Capacity.
    pub async fn host(&self) -> Result<Capacity, AgentError> {
        let v: Value = self
            .send(self.http.get(format!("{}/api/v1/host", self.url)))
            .await?;
        serde_json::from_value(v)
            .map_err(|e| AgentError::Transport(self.url.clone(), e.to_string()))
    }

    /// Disk file names in a datastore.
    pub async fn disks(&self, ds: &str) -> Result<Vec<String>, AgentError> {
        let v: Vec<Value> = self
            .send(
                self.http
                    .get(format!("{}/api/v1/datastores/{ds}/disks", self.url)),
            )
            .await?;
        Ok(v.iter()
            .filter_map(|d| d["name"].as_str().map(str::to_string))
            .collect())
    }

    /// Copies a base image into a datastore.
    pub async fn import(&self, ds: &str, source: &str, name: &str) -> Result<(), AgentError> {
        let _: Value = self
            .send(
                self.http
                    .post(format!("{}/api/v1/datastores/{ds}/imports", self.url))
                    .json(&json!({ "name": name, "source": source })),
            )
            .await?;
        Ok(())
    }

    /// Makes `name` a linked clone of `base`.
    pub async fn clone_disk(&self, ds: &str, base: &str, name: &str) -> Result<(), AgentError> {
        let _: Value = self
            .send(
                self.http
                    .post(format!("{}/api/v1/datastores/{ds}/disks", self.url))
                    .json(&json!({ "name": name, "base": base })),
            )
            .await?;
        Ok(())
    }

    /// Deletes a disk; a missing one counts as deleted.
    pub async fn delete_disk(&self, ds: &str, name: &str) -> Result<(), AgentError> {
        match self
            .send::<Value>(
                self.http
                    .delete(format!("{}/api/v1/datastores/{ds}/disks/{name}", self.url)),
            )
            .await
        {
            Err(e) if e.is_not_found() => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Defines (or redefines) a VM.
    pub async fn define(&self, spec: &VmSpec) -> Result<(), AgentError> {
        let _: Value = self
            .send(
                self.http
                    .put(format!("{}/api/v1/vms/{}", self.url, spec.name))
                    .json(spec),
            )
            .await?;
        Ok(())
    }

    /// Starts a VM (a running one stays as it is).
    pub async fn start(&self, name: &str) -> Result<VmStatusLite, AgentError> {
        self.send(
            self.http
                .post(format!("{}/api/v1/vms/{name}/start", self.url)),
        )
        .await
    }

    /// Stops a VM as `how` says and returns how it ended. The request may wait for the
    /// guest's own shutdown: its time limit is that wait plus room for the power-off.
    pub async fn stop(&self, name: &str, how: &StopRequest) -> Result<StopOutcome, AgentError> {
        #[derive(serde::Deserialize)]
        struct Stopped {
            outcome: StopOutcome,
        }
        let wait = if how.force {
            0
        } else {
            how.timeout_secs.unwrap_or(GUEST_SHUTDOWN_SECS)
        };
        let stopped: Stopped = self
            .send(
                self.http
                    .post(format!("{}/api/v1/vms/{name}/stop", self.url))
                    .timeout(Duration::from_secs(wait + STOP_SLACK_SECS))
                    .json(how),
            )
            .await?;
        Ok(stopped.outcome)
    }

    /// Removes a stopped VM's definition; a missing one counts as removed.
    pub async fn delete_vm(&self, name: &str) -> Result<(), AgentError> {
        match self
            .send::<Value>(self.http.delete(format!("{}/api/v1/vms/{name}", self.url)))
            .await
        {
            Err(e) if e.is_not_found() => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Sets the one-time ticket of a running VM's display.
    pub async fn set_display_ticket(
        &self,
        name: &str,
        ticket: &str,
        lifetime: std::time::Duration,
    ) -> Result<(), AgentError> {
        let _: Value = self
            .send(
                self.http
                    .put(format!("{}/api/v1/vms/{name}/display/ticket", self.url))
                    .json(&json!({ "ticket": ticket, "lifetime_secs": lifetime.as_secs() })),
            )
            .await?;
        Ok(())
    }

    /// Ends a VM's display connections: the ticket is cleared and the client cut off.
    pub async fn disconnect_display(&self, name: &str) -> Result<(), AgentError> {
        let _: Value = self
            .send(
                self.http
                    .post(format!("{}/api/v1/vms/{name}/display/disconnect", self.url)),
            )
            .await?;
        Ok(())
    }

    /// A VM's state, or None if the agent does not know it.
    pub async fn vm(&self, name: &str) -> Result<Option<VmStatusLite>, AgentError> {
        match self
            .send(self.http.get(format!("{}/api/v1/vms/{name}", self.url)))
            .await
        {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The part of the agent's VM status the broker reads.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct VmStatusLite {
    /// VM name.
    pub name: String,
    /// "running", "paused", "starting", "stopped".
    pub state: String,
    /// VMM pid.
    pub pid: Option<u32>,
    /// Where its display is reached, while it runs with one.
    #[serde(default)]
    pub display: Option<tessera_agent::display::DisplayEndpoint>,
}
