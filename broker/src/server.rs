//! The running broker: the client API over HTTPS, and the loop that polls hosts and
//! reconciles pools.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::agent_client::{host_trust, tls_client_with, AgentClient};
use crate::api::{admin_router, client_router, router, AppState, HostAuthority};
use crate::config::BrokerConfig;
use crate::host_join::refresh_crl;
use crate::logon::Logon;
use crate::pki::{Pki, Usage};
use crate::reconcile::Reconciler;
use crate::store::hosts::Capacity;
use crate::store::Store;

/// A host is offline after this long without a successful poll.
const HOST_STALE: Duration = Duration::from_secs(60);

/// Polls every registered host's agent and records its capacity.
pub async fn poll_hosts(store: &Store, http: &reqwest::Client) -> Result<(), String> {
    let hosts = store.hosts().await.map_err(|e| e.to_string())?;
    for h in hosts {
        match AgentClient::new(&h.address, http.clone()).host().await {
            Ok(c) => {
                store
                    .heartbeat(&h.id, &Capacity::from(&c))
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Err(e) => tracing::warn!(host = %h.address, error = %e, "host did not answer"),
        }
    }
    store
        .expire_hosts(HOST_STALE.as_millis() as i64)
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Runs the broker until the process ends.
pub async fn run(cfg: BrokerConfig) -> Result<(), String> {
    // Two CAs: the API's (what users' clients trust) and the hosts' (agents and the broker
    // toward them): a host certificate can never pass for the broker's API.
    let pki = Pki::open(&cfg.pki_dir()).map_err(|e| e.to_string())?;
    let host_ca = Pki::open(&cfg.host_pki_dir()).map_err(|e| e.to_string())?;
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    names.extend(cfg.server_names.iter().cloned());
    let (server_cert, server_key) = pki
        .issue("broker", &names, Usage::Server)
        .map_err(|e| e.to_string())?;
    let (client_cert, client_key) = host_ca
        .issue(
            "broker-client",
            &["tessera-broker".to_string()],
            Usage::Client,
        )
        .map_err(|e| e.to_string())?;
    let trust = host_trust(&host_ca.ca_path()).map_err(|e| e.to_string())?;
    let http =
        tls_client_with(trust.clone(), &client_cert, &client_key).map_err(|e| e.to_string())?;
    let store = Store::open(&cfg.database_url())
        .await
        .map_err(|e| e.to_string())?;
    let directories = match &cfg.directories {
        Some(p) => {
            let dirs = tessera_directory::config::load(p).map_err(|e| e.to_string())?;
            Some(Arc::new(
                tessera_directory::Directories::new(dirs).map_err(|e| e.to_string())?,
            ))
        }
        None => None,
    };
    let logon = Logon::new(store.clone(), directories, http.clone())
        .with_admins(cfg.admins.clone())
        .with_display_tunnel(cfg.display_tunnel)
        .with_token_lifetime(cfg.token_lifetime());
    let hosts = HostAuthority {
        api_ca: Arc::new(pki),
        ca: Arc::new(host_ca),
        trust,
    };
    refresh_crl(&store, &hosts)
        .await
        .map_err(|e| e.to_string())?;
    let state = Arc::new(AppState::new(logon, store.clone()).with_hosts(hosts.clone()));

    let (loop_store, loop_http) = (store.clone(), http.clone());
    let interval = Duration::from_secs(cfg.reconcile_interval_secs);
    tokio::spawn(async move {
        let mut reconciler = Reconciler::new(loop_store.clone(), loop_http.clone());
        loop {
            // Revocations made by `tessera-broker revoke-host` (another process) apply here.
            if let Err(e) = refresh_crl(&loop_store, &hosts).await {
                tracing::warn!(error = %e, "host CRL not refreshed");
            }
            if let Err(e) = poll_hosts(&loop_store, &loop_http).await {
                tracing::warn!(error = %e, "host poll failed");
            }
            match reconciler.pass().await {
                Ok(r) if r != Default::default() => tracing::info!(?r, "reconcile pass"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "reconcile pass failed"),
            }
            tokio::time::sleep(interval).await;
        }
    });

    let addr: SocketAddr = cfg.listen.parse().map_err(|e| format!("listen: {e}"))?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(&server_cert, &server_key)
        .await
        .map_err(|e| format!("API certificate: {e}"))?;
    let client = match &cfg.admin_listen {
        None => router(state),
        Some(admin) => {
            let admin: SocketAddr = admin.parse().map_err(|e| format!("admin_listen: {e}"))?;
            let app = admin_router(state.clone());
            // Bound here, so that a taken address fails the start instead of a task later.
            let listener = std::net::TcpListener::bind(admin)
                .map_err(|e| format!("admin_listen {admin}: {e}"))?;
            tracing::info!(%admin, "administrators' API and /metrics listening (HTTPS)");
            let server = axum_server::from_tcp_rustls(listener, tls.clone())
                .serve(app.into_make_service_with_connect_info::<SocketAddr>());
            tokio::spawn(async move {
                if let Err(e) = server.await {
                    // Without it administrators are locked out: end the broker, loudly.
                    tracing::error!(%admin, error = %e, "the administrators' API stopped");
                    std::process::exit(1);
                }
            });
            client_router(state)
        }
    };
    tracing::info!(%addr, "client API listening (HTTPS)");
    axum_server::bind_rustls(addr, tls)
        .serve(client.into_make_service_with_connect_info::<SocketAddr>())
        .await
        .map_err(|e| format!("serving on {addr}: {e}"))
}
