//! The control API: HTTP/1.1 with JSON bodies on a Unix socket (hyper), on its own thread.
//!
//! | request | answer |
//! |---|---|
//! | `GET /vm` | 200, state, uptime, vCPUs, memory, boot milestones |
//! | `PUT /vm/pause` | 204; 409 if already paused |
//! | `PUT /vm/resume` | 204; 409 if not paused |
//! | `PUT /vm/shutdown` | 202; the VMM stops the vCPUs and exits with status 0 |
//! | `PUT /vm/kill` | 202; the VMM exits at once with status 5 |
//! | `GET /display` | 200, mode, SPICE address and ports, TLS certificate fingerprint; 404 without a display |
//! | `PUT /display/ticket` | `{"ticket", "lifetime_secs"}`: 204; one client may sign in with it, once |
//! | `DELETE /display/ticket` | 204; no ticket works until the next |
//! | `POST /display/disconnect` | 204; as DELETE /display/ticket, and the connected client is cut off (its session ended) |
//! | `GET /display/screenshot` | 200 `image/png` of the guest's screen; 409 while the guest shows nothing |
//!
//! Errors are `{"error": "..."}` with a 4xx/5xx status.

pub mod routes;

use std::convert::Infallible;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::CONTENT_TYPE;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::sync::oneshot;

use crate::controller::Controller;
use crate::sandbox::{Sandbox, SandboxError, ThreadKind};

/// Largest request body accepted.
const MAX_BODY: usize = 16 * 1024;

/// Errors starting the API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Another process serves the socket.
    #[error("the API socket {0} is in use by another process")]
    InUse(PathBuf),
    /// The path exists and is not a socket.
    #[error("the API socket path {0} exists and is not a socket; refusing to remove it")]
    NotASocket(PathBuf),
    /// Binding failed.
    #[error("cannot bind the API socket {0}: {1}")]
    Bind(PathBuf, std::io::Error),
    /// The runtime failed to start.
    #[error("cannot start the API's runtime: {0}")]
    Start(std::io::Error),
    /// The thread failed to start under its filter.
    #[error(transparent)]
    Thread(#[from] SandboxError),
}

/// The running API server.
pub struct ApiServer {
    path: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Option<()>>>,
}

impl ApiServer {
    /// Stops accepting, lets in-flight answers finish (up to 1 s) and removes the socket.
    pub fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Removes a stale socket left by a dead VMM; refuses to touch anything else.
fn clear_stale_socket(path: &Path) -> Result<(), ApiError> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Err(ApiError::NotASocket(path.to_path_buf()));
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(ApiError::InUse(path.to_path_buf()));
    }
    std::fs::remove_file(path).map_err(|e| ApiError::Bind(path.to_path_buf(), e))
}

async fn handle(
    req: Request<Incoming>,
    ctl: Arc<Controller>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    // Bodies are small JSON documents; anything larger is refused unread.
    let limited = http_body_util::Limited::new(req.into_body(), MAX_BODY);
    let reply = match limited.collect().await {
        Ok(b) => {
            let body = b.to_bytes();
            tokio::task::spawn_blocking(move || routes::route(&ctl, &method, &path, &body))
                .await
                .unwrap_or_else(|e| {
                    routes::Reply::error_reply(
                        hyper::StatusCode::INTERNAL_SERVER_ERROR,
                        e.to_string(),
                    )
                })
        }
        Err(_) => routes::Reply::error_reply(
            hyper::StatusCode::PAYLOAD_TOO_LARGE,
            format!("request bodies are at most {MAX_BODY} bytes"),
        ),
    };
    let mut resp = Response::builder().status(reply.status);
    let body = match (reply.body, reply.raw) {
        (Some(v), _) => {
            resp = resp.header(CONTENT_TYPE, "application/json");
            Bytes::from(v.to_string() + "\n")
        }
        (None, Some((content_type, bytes))) => {
            resp = resp.header(CONTENT_TYPE, content_type);
            Bytes::from(bytes)
        }
        (None, None) => Bytes::new(),
    };
    Ok(resp
        .body(Full::new(body))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))))
}

async fn serve(
    listener: tokio::net::UnixListener,
    ctl: Arc<Controller>,
    mut stop: oneshot::Receiver<()>,
) {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let ctl = ctl.clone();
                let svc = service_fn(move |req| handle(req, ctl.clone()));
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "API connection ended with an error");
                    }
                });
            }
            _ = &mut stop => break,
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), graceful.shutdown()).await;
}

/// Binds `path` and serves the API on a new thread, under the API's seccomp filter (which
/// the runtime's blocking threads, started from it, hold too).
pub fn spawn(path: &Path, ctl: Arc<Controller>, sandbox: &Sandbox) -> Result<ApiServer, ApiError> {
    clear_stale_socket(path)?;
    let std_listener = std::os::unix::net::UnixListener::bind(path)
        .map_err(|e| ApiError::Bind(path.to_path_buf(), e))?;
    std_listener
        .set_nonblocking(true)
        .map_err(|e| ApiError::Bind(path.to_path_buf(), e))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(2)
        .build()
        .map_err(ApiError::Start)?;
    let (stop_tx, stop_rx) = oneshot::channel();
    let thread = sandbox.spawn(ThreadKind::Api, "api".into(), move || {
        runtime.block_on(async move {
            match tokio::net::UnixListener::from_std(std_listener) {
                Ok(l) => serve(l, ctl, stop_rx).await,
                Err(e) => tracing::error!(error = %e, "API socket unusable"),
            }
        })
    })?;
    Ok(ApiServer {
        path: path.to_path_buf(),
        stop: Some(stop_tx),
        thread: Some(thread),
    })
}
