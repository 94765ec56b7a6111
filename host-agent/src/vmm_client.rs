//! The tessera-vmm control API, spoken over the VMM's Unix socket (HTTP/1.1, JSON).

use std::path::Path;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;

/// Errors talking to a VMM.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    /// Nothing listens on the socket (the VMM is gone).
    #[error("no VMM answers on {0}: {1}")]
    Unreachable(String, std::io::Error),
    /// HTTP failed.
    #[error("VMM API: {0}")]
    Http(String),
    /// The VMM answered with an error.
    #[error("VMM API {status}: {body}")]
    Status {
        /// HTTP status.
        status: u16,
        /// The JSON error.
        body: String,
    },
    /// No answer in time.
    #[error("the VMM did not answer within {0:?}")]
    Timeout(Duration),
}

/// One request: method and path; returns the JSON answer (Null for 204).
pub async fn call(
    socket: &Path,
    method: Method,
    path: &str,
    limit: Duration,
) -> Result<serde_json::Value, VmmError> {
    call_with(socket, method, path, None, limit).await
}

/// One request with an optional JSON body.
pub async fn call_with(
    socket: &Path,
    method: Method,
    path: &str,
    body: Option<&serde_json::Value>,
    limit: Duration,
) -> Result<serde_json::Value, VmmError> {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    tokio::time::timeout(limit, call_inner(socket, method, path, body))
        .await
        .map_err(|_| VmmError::Timeout(limit))?
}

async fn call_inner(
    socket: &Path,
    method: Method,
    path: &str,
    body: String,
) -> Result<serde_json::Value, VmmError> {
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|e| VmmError::Unreachable(socket.display().to_string(), e))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| VmmError::Http(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| VmmError::Http(e.to_string()))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| VmmError::Http(e.to_string()))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| VmmError::Http(e.to_string()))?
        .to_bytes();
    if !status.is_success() {
        return Err(VmmError::Status {
            status: status.as_u16(),
            body: String::from_utf8_lossy(&body).into_owned(),
        });
    }
    if body.is_empty() {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_slice(&body).map_err(|e| VmmError::Http(format!("bad JSON: {e}")))
}
