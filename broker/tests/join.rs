//! A host joins with a one-time token: the agent's join code against the broker's API over
//! HTTPS. The token pins the broker's CA (a token for another CA is refused before anything
//! is sent); a bad request does not spend the token; the certificate the broker signs lets
//! the broker reach the real agent over mutual TLS; a used or expired token is refused.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use tessera_agent::config::TlsConfig;
use tessera_agent::join::{join, JoinError, JoinRequest, JoinToken};
use tessera_broker::agent_client::{tls_client, AgentClient};
use tessera_broker::api::{router, AppState};
use tessera_broker::host_join::new_token;
use tessera_broker::logon::Logon;
use tessera_broker::pki::{Pki, Usage};
use tessera_broker::store::Store;

#[tokio::test(flavor = "multi_thread")]
async fn a_host_joins_with_a_one_time_token() {
    let dir = std::env::temp_dir().join(format!("tessera-join-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("ds1")).unwrap();
    let pki = Arc::new(Pki::open(&dir.join("pki")).unwrap());
    let (api_cert, api_key) = pki
        .issue("broker", &["localhost".into()], Usage::Server)
        .unwrap();
    let (client_cert, client_key) = pki
        .issue("broker-client", &["tessera-broker".into()], Usage::Client)
        .unwrap();
    let store = Store::open(&format!("sqlite://{}", dir.join("b.db").display()))
        .await
        .unwrap();
    let http = tls_client(&pki.ca_path(), &client_cert, &client_key).unwrap();

    // The broker's API over HTTPS.
    let state = Arc::new(
        AppState::new(Logon::new(store.clone(), None, http.clone()), store.clone())
            .with_pki(pki.clone()),
    );
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(&api_cert, &api_key)
        .await
        .unwrap();
    let handle = axum_server::Handle::new();
    let server = axum_server::bind_rustls("127.0.0.1:0".parse().unwrap(), tls)
        .handle(handle.clone())
        .serve(router(state).into_make_service_with_connect_info::<std::net::SocketAddr>());
    tokio::spawn(server);
    let port = handle.listening().await.unwrap().port();
    let broker = format!("https://localhost:{port}");

    let files = TlsConfig {
        cert: dir.join("agent/tls/agent.pem"),
        key: dir.join("agent/tls/agent.key"),
        client_ca: dir.join("agent/tls/ca.pem"),
    };
    let (token, _) = new_token(&store, &pki, "test", Duration::from_secs(60))
        .await
        .unwrap();
    let token: JoinToken = token.parse().unwrap();

    // A token pinning another CA: refused before anything is sent; the token stays usable.
    let other = JoinToken {
        ca_sha256: "00".repeat(32),
        ..token.clone()
    };
    let address = "https://127.0.0.1:1";
    match join(&broker, &other, "host-9", address, &files).await {
        Err(JoinError::Pin { got, .. }) => assert_eq!(got, pki.ca_fingerprint()),
        other => panic!("{other:?}"),
    }
    assert!(!files.key.exists(), "nothing written");

    // Bad requests: refused, and the token is not spent.
    let c = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    for (name, address, csr) in [
        ("host-9", address, "not a CSR"),
        ("bad name!", address, "x"),
        ("host-9", "http://127.0.0.1:1", "x"),
    ] {
        let r = c
            .post(format!("{broker}/api/v1/hosts/join"))
            .json(&JoinRequest {
                token: token.secret.clone(),
                name: name.into(),
                address: address.into(),
                csr: csr.into(),
            })
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{name} {address}");
    }

    // The join: key made here, certificate from the broker, host registered.
    let answer = join(&broker, &token, "host-9", address, &files)
        .await
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&files.key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::read_to_string(&files.client_ca).unwrap(),
        pki.ca_pem()
    );
    let hosts = store.hosts().await.unwrap();
    assert_eq!(hosts.len(), 1);
    assert_eq!(
        (hosts[0].id.as_str(), hosts[0].name.as_str()),
        (answer.host_id.as_str(), "host-9")
    );

    // Used once only.
    assert!(matches!(
        join(&broker, &token, "host-10", address, &files).await,
        Err(JoinError::Broker(m)) if m.contains("401")
    ));
    // Expired.
    let (old, _) = new_token(&store, &pki, "test", Duration::ZERO)
        .await
        .unwrap();
    assert!(matches!(
        join(&broker, &old.parse().unwrap(), "host-10", address, &files).await,
        Err(JoinError::Broker(m)) if m.contains("expired")
    ));

    // The agent serves with what the join wrote, and the broker's client gets in.
    let url = start_agent(
        &dir.join("agent/state"),
        &dir.join("ds1"),
        (&files.cert, &files.key),
        &files.client_ca,
    )
    .await;
    let cap = AgentClient::new(&url, http.clone()).host().await.unwrap();
    assert_eq!(cap.datastores.len(), 1);
    let events = store.events(Some("host-join"), 10).await.unwrap();
    assert_eq!(
        events.iter().filter(|e| e.outcome == "ok").count(),
        1,
        "{events:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
