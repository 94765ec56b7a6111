//! tessera-agent: owns one host for the broker. It keeps the host's datastores (linked clones
//! and base-image copies through tessera-storage), runs one tessera-vmm process per VM and
//! supervises it through the VMM's control socket, reports capacity, and serves all of it on
//! an HTTPS API with mutual TLS.
//!
//! - [`config`]: the agent's TOML; [`capacity`]: CPUs, memory, datastore space;
//! - [`disks`]: clone, import, delete, list in a datastore;
//! - [`vms`]: define, start, stop, delete, status; VMs outlive an agent restart and are found
//!   again through their pid files and sockets; [`vmm_client`]: the VMM's API;
//! - [`display`]: SPICE ports and tickets for the VMs' displays;
//! - [`api`]: the HTTPS routes; [`tls`]: mutual TLS; [`join`]: joining a broker with a
//!   one-time token (the agent's key stays on the host).

pub mod api;
pub mod capacity;
pub mod config;
pub mod disks;
pub mod display;
pub mod files;
pub mod join;
pub mod local_socket;
pub mod tls;
pub mod vmm_client;
pub mod vms;

use std::net::SocketAddr;
use std::sync::Arc;

/// Serves the API on `cfg.listen` until the process ends: HTTPS with mutual TLS, or without
/// TLS a Unix socket only the agent's user can connect to. `bound` receives the TCP address
/// once listening (useful with port 0); a Unix socket exists once it is bound.
pub async fn serve(
    cfg: config::AgentConfig,
    bound: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
) -> Result<(), String> {
    let tls = cfg.tls.clone();
    let unix = cfg.unix_socket().map(std::path::Path::to_path_buf);
    let listen = cfg.listen.clone();
    let sup = Arc::new(vms::Supervisor::open(cfg).map_err(|e| e.to_string())?);
    let app = api::router(sup);
    if let Some(path) = unix {
        let listener = local_socket::bind_private(&path)
            .map_err(|e| format!("the API socket {}: {e}", path.display()))?;
        tracing::info!(socket = %path.display(), "agent API listening (Unix socket, this user only)");
        return axum::serve(listener, app.into_make_service())
            .await
            .map_err(|e| format!("serving on {}: {e}", path.display()));
    }
    let addr: SocketAddr = listen
        .parse()
        .map_err(|e| format!("listen address {listen:?}: {e}"))?;
    // Checked at load too; a config built in code must not get around it.
    let Some(t) = tls else {
        return Err(format!(
            "listening on {addr} needs [tls]; without it, listen on a Unix socket (unix:PATH)"
        ));
    };
    let handle = axum_server::Handle::new();
    let h = handle.clone();
    tokio::spawn(async move {
        if let (Some(a), Some(tx)) = (h.listening().await, bound) {
            let _ = tx.send(a);
        }
    });
    let rustls = axum_server::tls_rustls::RustlsConfig::from_config(tls::server_config(&t)?);
    axum_server::bind_rustls(addr, rustls)
        .handle(handle)
        .serve(app.into_make_service())
        .await
        .map_err(|e| format!("serving on {addr}: {e}"))
}
