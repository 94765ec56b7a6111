//! The display tunnel, the broker's secure gateway: clients outside the hosts' network reach
//! their desktop's SPICE ports through the broker's HTTPS port (`display_tunnel = true`).
//!
//! A client asks `GET /api/v1/sessions/{id}/tunnel` with the session's bearer token and
//! `Upgrade: tessera-display`. The broker connects to that session's display, answers
//! `101 Switching Protocols` and copies bytes both ways until either side closes; each SPICE
//! channel is one such tunnel. It connects to the display's TLS port wherever there is one, so
//! SPICE's own TLS runs from the client to the host and the broker carries ciphertext (the
//! plain port only serves loopback displays). It reaches the session's own desktop and
//! nothing else: no open proxy.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::api::{authorized, ApiError, Shared};

/// The open tunnels of each live session, so that its end closes them at once (a logoff, an
/// administrator's forced logoff, a reconnect that replaced it).
#[derive(Default)]
pub struct Tunnels {
    open: Mutex<HashMap<String, tokio::sync::watch::Sender<bool>>>,
}

impl Tunnels {
    /// A signal that turns true when session `id` ends.
    pub fn watch(&self, id: &str) -> tokio::sync::watch::Receiver<bool> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.entry(id.to_string())
            .or_insert_with(|| tokio::sync::watch::channel(false).0)
            .subscribe()
    }

    /// Closes session `id`'s tunnels.
    pub fn close(&self, id: &str) {
        let gone = self
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        if let Some(tx) = gone {
            let _ = tx.send(true);
        }
    }
}

/// The `Upgrade` protocol name.
pub const PROTOCOL: &str = "tessera-display";

/// How long the broker waits for the desktop's display to accept.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// `GET /api/v1/sessions/{id}/tunnel`.
pub(crate) async fn open(
    State(s): State<Shared>,
    Path(id): Path<String>,
    mut req: Request,
) -> Result<Response, ApiError> {
    if !s.logon.display_tunnel() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "this broker does not tunnel displays; connect to the desktop directly".into(),
        ));
    }
    let session = authorized(&s, &id, req.headers()).await?;
    let asked = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(PROTOCOL));
    if !asked {
        return Err(ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            format!("the tunnel needs Upgrade: {PROTOCOL}"),
        ));
    }
    // The session was just read to authorize the request: its desktop is known.
    let display = s.logon.display_of(&session.desktop_id).await?;
    let port = display.tls_port.or(display.port).ok_or_else(|| {
        ApiError::new(
            StatusCode::CONFLICT,
            "the desktop's display has no port".into(),
        )
    })?;
    let unreachable = |why: String| {
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!("the desktop's display ({}:{port}) {why}", display.host),
        )
    };
    let upstream = tokio::time::timeout(
        CONNECT_TIMEOUT,
        TcpStream::connect((display.host.as_str(), port)),
    )
    .await
    .map_err(|_| unreachable("does not answer".into()))?
    .map_err(|e| unreachable(format!("refused the connection: {e}")))?;
    let _ = upstream.set_nodelay(true);
    // Watched before the session is read again below: an end between the two is seen.
    let mut ended = s.logon.tunnels().watch(&session.id);
    let upgrade = hyper::upgrade::on(&mut req);
    let counters = s.clone();
    tokio::spawn(async move {
        let client = match upgrade.await {
            Ok(u) => u,
            Err(e) => return tracing::warn!(session = %session.id, "tunnel upgrade failed: {e}"),
        };
        if !counters
            .store
            .session(&session.id)
            .await
            .is_ok_and(|s| s.is_live())
        {
            // Ended before the watch began: nobody will close this entry but us.
            counters.logon.tunnels().close(&session.id);
            return tracing::info!(session = %session.id, "tunnel refused: the session ended");
        }
        counters.counters.tunnel_opened();
        // The broker sees the client reach its desktop: the session is connected (again,
        // after a disconnect). Written only when the session read above was not.
        if session.state != "connected" {
            if let Err(e) = counters
                .store
                .set_session_state(&session.id, "connected")
                .await
            {
                tracing::warn!(session = %session.id, "session state not recorded: {e}");
            }
        }
        let (mut client, mut upstream) = (TokioIo::new(client), upstream);
        tokio::select! {
            r = tokio::io::copy_bidirectional(&mut client, &mut upstream) => match r {
                Ok((up, down)) => tracing::debug!(session = %session.id, up, down, "tunnel closed"),
                Err(e) => tracing::debug!(session = %session.id, "tunnel ended: {e}"),
            },
            _ = ended.wait_for(|e| *e) => {
                tracing::info!(session = %session.id, "tunnel closed: the session ended");
            }
        }
        counters.counters.tunnel_closed();
    });
    let mut r = StatusCode::SWITCHING_PROTOCOLS.into_response();
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    r.headers_mut()
        .insert(header::UPGRADE, HeaderValue::from_static(PROTOCOL));
    Ok(r)
}
