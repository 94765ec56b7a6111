//! A host joins with a one-time token: the agent's join code against the broker's API over
//! HTTPS. The token pins the broker's API CA (a token for another CA is refused before
//! anything is sent) and names the one host it admits; it is checked before anything is
//! signed and a bad request does not spend it; an existing host cannot be taken over without
//! a re-join token; the certificate comes from a host CA apart from the API's, lets the broker
//! reach the real agent over mutual TLS, and is refused once revoked (a re-join, or
//! revoke-host) or expired.

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::*;
use tessera_agent::config::TlsConfig;
use tessera_agent::join::{join, JoinError, JoinRequest, JoinToken};
use tessera_broker::agent_client::{host_trust, tls_client_with, AgentClient};
use tessera_broker::api::{router, AppState, HostAuthority};
use tessera_broker::host_join::{new_token, refresh_crl};
use tessera_broker::logon::Logon;
use tessera_broker::pki::{Pki, Usage};
use tessera_broker::store::Store;

fn tls_files(dir: &std::path::Path, name: &str) -> TlsConfig {
    TlsConfig {
        cert: dir.join(format!("{name}/tls/agent.pem")),
        key: dir.join(format!("{name}/tls/agent.key")),
        client_ca: dir.join(format!("{name}/tls/ca.pem")),
    }
}

async fn certificates_signed(store: &Store) -> i64 {
    let row = sqlx::query("SELECT COUNT(*) FROM host_certificates")
        .fetch_one(store.pool())
        .await
        .unwrap();
    sqlx::Row::try_get(&row, 0).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_joins_with_a_one_time_token_that_names_it() {
    let dir = std::env::temp_dir().join(format!("tessera-join-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("ds1")).unwrap();
    let api_ca = Arc::new(Pki::open(&dir.join("pki")).unwrap());
    let host_ca = Arc::new(Pki::open(&dir.join("pki/hosts")).unwrap());
    assert_ne!(api_ca.ca_fingerprint(), host_ca.ca_fingerprint());
    let (api_cert, api_key) = api_ca
        .issue("broker", &["localhost".into()], Usage::Server)
        .unwrap();
    let (client_cert, client_key) = host_ca
        .issue("broker-client", &["tessera-broker".into()], Usage::Client)
        .unwrap();
    let store = Store::open(&format!("sqlite://{}", dir.join("b.db").display()))
        .await
        .unwrap();
    let trust = host_trust(&host_ca.ca_path()).unwrap();
    let http = tls_client_with(trust.clone(), &client_cert, &client_key).unwrap();
    let hosts = HostAuthority {
        api_ca: api_ca.clone(),
        ca: host_ca.clone(),
        trust,
    };

    // The broker's API over HTTPS.
    let state = Arc::new(
        AppState::new(Logon::new(store.clone(), None, http.clone()), store.clone())
            .with_hosts(hosts.clone()),
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

    let files = tls_files(&dir, "agent");
    let ttl = Duration::from_secs(60);
    let (token, _) = new_token(&store, &api_ca, "test", "host-9", false, ttl)
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
        Err(JoinError::Pin { got, .. }) => assert_eq!(got, api_ca.ca_fingerprint()),
        other => panic!("{other:?}"),
    }
    assert!(!files.key.exists(), "nothing written");

    // Bad requests: refused, and the token is not spent.
    let c = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(api_ca.ca_pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let post = |name: &str, address: &str, csr: &str, token: &str| {
        c.post(format!("{broker}/api/v1/hosts/join"))
            .json(&JoinRequest {
                token: token.into(),
                name: name.into(),
                address: address.into(),
                csr: csr.into(),
            })
            .send()
    };
    for (name, address, csr) in [
        ("host-9", address, "not a CSR"),
        ("bad name!", address, "x"),
        ("host-9", "http://127.0.0.1:1", "x"),
    ] {
        let r = post(name, address, csr, &token.secret).await.unwrap();
        assert_eq!(r.status(), 400, "{name} {address}");
    }
    // The token is checked before anything is signed: another host's name, or a made-up
    // token, with a well-formed request get nothing.
    let csr = rcgen::CertificateParams::new(vec!["x".to_string()])
        .unwrap()
        .serialize_request(&rcgen::KeyPair::generate().unwrap())
        .unwrap()
        .pem()
        .unwrap();
    let r = post("host-10", address, &csr, &token.secret).await.unwrap();
    assert_eq!(r.status(), 401, "a token for host-9 used by host-10");
    let r = post("host-9", address, &csr, "made-up").await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(certificates_signed(&store).await, 0, "nothing signed");
    assert!(store.hosts().await.unwrap().is_empty());

    // The join: key made here, certificate from the host CA, host registered.
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
        host_ca.ca_pem(),
        "the agent trusts the host CA, not the API's"
    );
    let registered = store.hosts().await.unwrap();
    assert_eq!(registered.len(), 1);
    assert_eq!(
        (registered[0].id.as_str(), registered[0].name.as_str()),
        (answer.host_id.as_str(), "host-9")
    );
    assert_eq!(certificates_signed(&store).await, 1);

    // Used once only.
    assert!(matches!(
        join(&broker, &token, "host-9", address, &files).await,
        Err(JoinError::Broker(m)) if m.contains("401")
    ));
    // Expired.
    let (old, _) = new_token(&store, &api_ca, "test", "host-10", false, Duration::ZERO)
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

    // Somebody with an ordinary token for the same name cannot take the host over.
    let (again, _) = new_token(&store, &api_ca, "test", "host-9", false, ttl)
        .await
        .unwrap();
    let thief = tls_files(&dir, "thief");
    match join(
        &broker,
        &again.parse().unwrap(),
        "host-9",
        "https://10.9.9.9:1",
        &thief,
    )
    .await
    {
        Err(JoinError::Broker(m)) => assert!(m.contains("409"), "{m}"),
        other => panic!("a second host-9: {other:?}"),
    }
    assert_eq!(store.hosts().await.unwrap()[0].address, address);

    // A re-join the administrator asked for: a new key; the old certificate is revoked and
    // the agent still serving it is refused, the new one accepted.
    let (rejoin, _) = new_token(&store, &api_ca, "test", "host-9", true, ttl)
        .await
        .unwrap();
    let renewed = tls_files(&dir, "renewed");
    join(
        &broker,
        &rejoin.parse().unwrap(),
        "host-9",
        address,
        &renewed,
    )
    .await
    .unwrap();
    assert!(
        AgentClient::new(&url, http.clone()).host().await.is_err(),
        "the replaced certificate still accepted"
    );
    let url2 = start_agent(
        &dir.join("renewed/state"),
        &dir.join("ds1"),
        (&renewed.cert, &renewed.key),
        &renewed.client_ca,
    )
    .await;
    AgentClient::new(&url2, http.clone()).host().await.unwrap();

    // Revoked by an administrator (another process): refused once the CRL is refreshed.
    assert_eq!(store.revoke_host_certificates("host-9").await.unwrap(), 1);
    refresh_crl(&store, &hosts).await.unwrap();
    assert!(AgentClient::new(&url2, http.clone()).host().await.is_err());

    // An expired host certificate is refused however it was made.
    let expired = tls_files(&dir, "expired");
    std::fs::create_dir_all(expired.cert.parent().unwrap()).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    let signed = host_ca
        .sign_request_until(
            &csr,
            "host-11",
            &["127.0.0.1".into()],
            SystemTime::now() - Duration::from_secs(3600),
        )
        .unwrap();
    std::fs::write(&expired.cert, signed.pem).unwrap();
    std::fs::write(&expired.key, key.serialize_pem()).unwrap();
    std::fs::write(&expired.client_ca, host_ca.ca_pem()).unwrap();
    let url3 = start_agent(
        &dir.join("expired/state"),
        &dir.join("ds1"),
        (&expired.cert, &expired.key),
        &expired.client_ca,
    )
    .await;
    let err = AgentClient::new(&url3, http.clone())
        .host()
        .await
        .unwrap_err();
    assert!(err.to_string().to_lowercase().contains("expired"), "{err}");

    let events = store.events(Some("host-join"), 20).await.unwrap();
    let outcomes: Vec<&str> = events.iter().map(|e| e.outcome.as_str()).collect();
    for want in ["ok", "re-joined", "host exists", "bad token"] {
        assert!(outcomes.contains(&want), "{want} in {outcomes:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
