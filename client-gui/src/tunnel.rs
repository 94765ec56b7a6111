//! The client's end of the broker's display tunnel (broker `display_tunnel = true`): a
//! loopback HTTP proxy that the SPICE library connects every channel through (its `proxy`
//! setting, HTTP CONNECT). Each CONNECT becomes one `GET /api/v1/sessions/{id}/tunnel` upgrade
//! on a new TLS connection to the broker, verified as every other broker call is (system roots,
//! the administrator's CA, or the fingerprint the user accepted), with the session's bearer
//! token; then bytes are copied both ways. The SPICE library still runs its own TLS to the host
//! inside the tunnel and checks the host's certificate under the host's own name.
//!
//! The proxy is this client's own, on 127.0.0.1, and leads only to this session's display (the
//! broker decides where a tunnel goes; the CONNECT's target is not used).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Where and how to open tunnels for one session.
#[derive(Clone)]
pub struct TunnelTarget {
    /// The broker's host name (the TLS server name too) and port.
    pub host: String,
    pub port: u16,
    /// TLS to the broker (none: plain HTTP, loopback brokers only).
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// The session.
    pub session_id: String,
    /// Its bearer token.
    pub token: String,
}

impl std::fmt::Debug for TunnelTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunnelTarget")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("session_id", &self.session_id)
            .finish_non_exhaustive()
    }
}

/// Why the tunnel could not start.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    /// No loopback port or no runtime.
    #[error("cannot open the local end of the display tunnel: {0}")]
    Local(std::io::Error),
}

/// A running tunnel proxy; dropped, it stops (open channels close).
pub struct LocalTunnel {
    addr: SocketAddr,
    runtime: Option<tokio::runtime::Runtime>,
}

/// The most a request or response head may take.
const MAX_HEAD: usize = 16 * 1024;
/// How long the broker may take to connect a tunnel.
const BROKER_TIMEOUT: Duration = Duration::from_secs(20);

impl LocalTunnel {
    /// Listens on a free loopback port and serves tunnels to `target`.
    pub fn start(target: TunnelTarget) -> Result<Self, TunnelError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("display-tunnel")
            .enable_all()
            .build()
            .map_err(TunnelError::Local)?;
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .map_err(TunnelError::Local)?;
        let addr = listener.local_addr().map_err(TunnelError::Local)?;
        let target = Arc::new(target);
        runtime.spawn(async move {
            loop {
                let local = match listener.accept().await {
                    Ok((local, _)) => local,
                    Err(e) => {
                        // Out of descriptors, say: wait rather than spin.
                        tracing::warn!("display tunnel: accept: {e}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                };
                let target = target.clone();
                tokio::spawn(async move {
                    if let Err(e) = channel(local, &target).await {
                        tracing::warn!("display tunnel: {e}");
                    }
                });
            }
        });
        Ok(Self {
            addr,
            runtime: Some(runtime),
        })
    }

    /// The proxy's URL, for the SPICE library.
    pub fn proxy_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for LocalTunnel {
    fn drop(&mut self) {
        if let Some(r) = self.runtime.take() {
            r.shutdown_background();
        }
    }
}

/// Carries one SPICE channel: the local CONNECT, the broker's upgrade, then bytes.
async fn channel(mut local: TcpStream, target: &TunnelTarget) -> Result<(), String> {
    let _ = local.set_nodelay(true);
    let (head, early) = read_head(&mut local).await?;
    if !head.starts_with(b"CONNECT ") {
        let _ = local
            .write_all(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
            .await;
        return Err("the SPICE library sent something other than CONNECT".into());
    }
    let tcp = tokio::time::timeout(
        BROKER_TIMEOUT,
        TcpStream::connect((target.host.as_str(), target.port)),
    )
    .await
    .map_err(|_| format!("the broker {} does not answer", target.host))?
    .map_err(|e| format!("cannot reach the broker {}: {e}", target.host))?;
    let _ = tcp.set_nodelay(true);
    match &target.tls {
        Some(tls) => {
            let name = ServerName::try_from(target.host.clone())
                .map_err(|e| format!("broker name {:?}: {e}", target.host))?;
            let tls = tokio_rustls::TlsConnector::from(tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS to the broker: {e}"))?;
            splice(local, tls, target, early).await
        }
        None => splice(local, tcp, target, early).await,
    }
}

/// Asks the broker for the upgrade over `broker`, answers the CONNECT and copies both ways.
async fn splice<S: AsyncRead + AsyncWrite + Unpin>(
    mut local: TcpStream,
    mut broker: S,
    target: &TunnelTarget,
    early: Vec<u8>,
) -> Result<(), String> {
    let request = format!(
        "GET /api/v1/sessions/{}/tunnel HTTP/1.1\r\nHost: {}:{}\r\nAuthorization: Bearer {}\r\n\
         Connection: Upgrade\r\nUpgrade: tessera-display\r\n\r\n",
        target.session_id, target.host, target.port, target.token
    );
    broker
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("broker: {e}"))?;
    let (head, from_broker) = tokio::time::timeout(BROKER_TIMEOUT, read_head(&mut broker))
        .await
        .map_err(|_| "the broker did not open the tunnel in time".to_string())??;
    let status = String::from_utf8_lossy(head.split(|&b| b == b'\n').next().unwrap_or(&[]))
        .trim()
        .to_string();
    if !status.starts_with("HTTP/1.1 101") {
        let _ = local.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
        return Err(format!("the broker refused the tunnel: {status}"));
    }
    local
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await
        .map_err(|e| format!("local: {e}"))?;
    local
        .write_all(&from_broker)
        .await
        .map_err(|e| format!("local: {e}"))?;
    broker
        .write_all(&early)
        .await
        .map_err(|e| format!("broker: {e}"))?;
    // Either side closing ends the channel; the SPICE library notices and reports it.
    let _ = tokio::io::copy_bidirectional(&mut local, &mut broker).await;
    Ok(())
}

/// Reads an HTTP head (to the blank line); returns it and whatever came after it.
async fn read_head<S: AsyncRead + Unpin>(s: &mut S) -> Result<(Vec<u8>, Vec<u8>), String> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Ok((buf, rest));
        }
        if buf.len() > MAX_HEAD {
            return Err("an HTTP head too long".into());
        }
        let n = s.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the connection closed before an HTTP head".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_end_at_the_blank_line_and_keep_what_follows() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (head, rest) = rt
            .block_on(read_head(
                &mut &b"CONNECT h:1 HTTP/1.0\r\nHost: h\r\n\r\nREDQ"[..],
            ))
            .unwrap();
        assert_eq!(head, b"CONNECT h:1 HTTP/1.0\r\nHost: h\r\n\r\n");
        assert_eq!(rest, b"REDQ");
        assert!(rt.block_on(read_head(&mut &b"CONNECT h:1"[..])).is_err());
        let long = vec![b'a'; MAX_HEAD + 4096];
        assert!(rt.block_on(read_head(&mut &long[..])).is_err());
    }
}
