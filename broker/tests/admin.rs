//! The administrators' API over HTTP against a real agent and real VMs: an administrator
//! signs in, lists the live sessions, sends the user a message (which the user's client
//! fetches once), forces a logoff (the client learns why, its ticket requests are refused, and
//! the floating desktop is refreshed), reads the audit trail and signs out. A user without the
//! administrator flag, a wrong password and a forged or revoked token are refused.

mod common;

use std::time::Duration;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tessera_broker::logon::Logon;
use tessera_broker::store::pools::{Pool, PoolSpec, Principal};

async fn post(c: &reqwest::Client, url: String, token: &str, body: Value) -> reqwest::Response {
    c.post(url)
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// A rig with pool `s`, a user "demo" entitled to it and an administrator "boss" (both with
/// the password "Passw0rd!long"), its desktops provisioned.
async fn demo_and_boss(name: &str, s: &PoolSpec) -> (Rig, Pool) {
    let mut h = rig(name).await;
    let pool = h.store.create_pool(s).await.unwrap();
    for (name, admin) in [("demo", false), ("boss", true)] {
        h.store
            .create_local_account(name, name, "Passw0rd!long", admin)
            .await
            .unwrap();
    }
    let demo = Principal::Local {
        name: "demo".into(),
    };
    h.store.entitle(&pool.id, &demo).await.unwrap();
    let report = h.reconciler.pass().await.unwrap();
    if report.failures > 0 {
        let desktops = h.store.desktops_of(&pool.id).await.unwrap();
        panic!("provisioning failed: {desktops:#?}");
    }
    (h, pool)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_administrator_messages_and_logs_off_a_session() {
    if !kvm() {
        return;
    }
    let mut s = spec();
    s.min_desktops = 1;
    let (mut h, _) = demo_and_boss("admin", &s).await;
    let base = serve_api(
        Logon::new(h.store.clone(), None, h.http.clone()),
        h.store.clone(),
    )
    .await;
    let c = reqwest::Client::new();

    // The user logs on.
    let resp = c
        .post(format!("{base}/api/v1/sessions"))
        .json(&json!({"user": "demo", "password": "Passw0rd!long"}))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let id = body["session"]["session_id"].as_str().unwrap().to_string();
    let user_token = body["session"]["session_token"]
        .as_str()
        .unwrap()
        .to_string();
    let desktop = body["session"]["desktop"].as_str().unwrap().to_string();
    // This broker does not tunnel displays: the grant says so and the tunnel is refused.
    assert_eq!(body["session"]["tunnel"], false);
    let tunnel = c
        .get(format!("{base}/api/v1/sessions/{id}/tunnel"))
        .bearer_auth(&user_token)
        .header("upgrade", "tessera-display")
        .send()
        .await
        .unwrap();
    assert_eq!(tunnel.status(), StatusCode::FORBIDDEN);

    // Who may sign in to the admin API.
    let sign_in = |user: &'static str, password: &'static str| {
        let c = c.clone();
        let url = format!("{base}/api/v1/admin/tokens");
        async move {
            c.post(url)
                .json(&json!({"user": user, "password": password}))
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(
        sign_in("demo", "Passw0rd!long").await.status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        sign_in("boss", "wrong-password").await.status(),
        StatusCode::UNAUTHORIZED
    );
    let ok = sign_in("boss", "Passw0rd!long").await;
    assert_eq!(ok.status(), StatusCode::CREATED);
    let t: Value = ok.json().await.unwrap();
    let admin = t["token"].as_str().unwrap().to_string();
    assert_eq!(t["admin"], "boss");

    // Without a valid token, nothing.
    for token in ["", "forged", &user_token] {
        let r = c
            .get(format!("{base}/api/v1/admin/sessions"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "token {token:?}");
    }
    let list: Value = c
        .get(format!("{base}/api/v1/admin/sessions"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"], id.as_str());
    assert_eq!(list[0]["user"], "demo");
    assert_eq!(list[0]["desktop"], desktop.as_str());
    assert_eq!(list[0]["pool"], "fin");

    // A message: refused when empty or of an unknown severity, else queued for the client,
    // which fetches it once.
    let msg_url = format!("{base}/api/v1/admin/sessions/{id}/messages");
    for bad in [
        json!({"body": " "}),
        json!({"body": "x", "severity": "shout"}),
    ] {
        let r = post(&c, msg_url.clone(), &admin, bad).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    }
    let r = post(
        &c,
        format!("{base}/api/v1/admin/sessions/nope/messages"),
        &admin,
        json!({"body": "hello"}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let text = "Maintenance at 18:00: save your work <b>now</b>";
    let r = post(
        &c,
        msg_url.clone(),
        &admin,
        json!({"body": text, "severity": "warning"}),
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let status = |token: String| {
        let c = c.clone();
        let url = format!("{base}/api/v1/sessions/{id}");
        async move {
            let r = c.get(url).bearer_auth(token).send().await.unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        }
    };
    let (code, st) = status(user_token.clone()).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(st["state"], "starting");
    let msgs = st["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0]["body"], text);
    assert_eq!(msgs[0]["severity"], "warning");
    assert_eq!(msgs[0]["sender"], "boss");
    let (_, again) = status(user_token.clone()).await;
    assert!(again["messages"].as_array().unwrap().is_empty(), "{again}");
    let (forged, _) = status("forged".into()).await;
    assert_eq!(forged, StatusCode::NOT_FOUND);

    // Forced logoff: the client sees why; its session no longer yields tickets; the
    // floating desktop is refreshed.
    let r = post(
        &c,
        format!("{base}/api/v1/admin/sessions/{id}/logoff"),
        &admin,
        json!(null),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = post(
        &c,
        format!("{base}/api/v1/admin/sessions/{id}/logoff"),
        &admin,
        json!(null),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "a session ends once");
    let (_, st) = status(user_token.clone()).await;
    assert_eq!(st["state"], "ended");
    assert_eq!(st["end_reason"], "admin");
    let t = c
        .post(format!("{base}/api/v1/sessions/{id}/ticket"))
        .bearer_auth(&user_token)
        .send()
        .await
        .unwrap();
    assert_eq!(t.status(), StatusCode::NOT_FOUND);
    let report = h.reconciler.pass().await.unwrap();
    assert_eq!(report.refreshed, 1, "{report:?}");

    // The audit trail names the administrator.
    let ev: Value = c
        .get(format!("{base}/api/v1/admin/events?action=force-logoff"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ev = ev.as_array().unwrap();
    assert_eq!(ev.len(), 1);
    assert_eq!(ev[0]["actor"], "boss");
    assert_eq!(ev[0]["outcome"], "ok");
    assert_eq!(ev[0]["detail"], "user demo");

    // /metrics counts the logon and shows the pool's desktops.
    let m = metrics(&c, &base).await;
    assert!(
        m.contains("tessera_broker_logons_total{result=\"ok\"} 1\n"),
        "{m}"
    );
    assert!(m.contains("tessera_broker_sessions 0\n"), "{m}");
    assert!(m.contains("tessera_broker_desktops{pool=\"fin\""), "{m}");

    // Sign-out revokes the token.
    let out = c
        .delete(format!("{base}/api/v1/admin/tokens"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), StatusCode::NO_CONTENT);
    let after = c
        .get(format!("{base}/api/v1/admin/sessions"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), StatusCode::UNAUTHORIZED);
}

/// A free TCP port on loopback.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// With `admin_listen`, the administrators' API and /metrics answer only there, and the
/// client API only on `listen`: a management network can be kept apart from users.
#[tokio::test(flavor = "multi_thread")]
async fn the_admin_api_and_metrics_can_listen_apart_from_clients() {
    let dir =
        std::env::temp_dir().join(format!("tessera-split-{}", tessera_broker::store::new_id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (client_port, admin_port) = (free_port(), free_port());
    let path = dir.join("broker.toml");
    std::fs::write(
        &path,
        format!(
            "state_dir = \"{}\"\nlisten = \"127.0.0.1:{client_port}\"\n\
             admin_listen = \"127.0.0.1:{admin_port}\"\n",
            dir.display()
        ),
    )
    .unwrap();
    let cfg = tessera_broker::config::BrokerConfig::load(&path).unwrap();
    tokio::spawn(tessera_broker::server::run(cfg));
    let ca = dir.join("pki/ca.pem");
    let t0 = std::time::Instant::now();
    while !ca.exists() {
        assert!(t0.elapsed().as_secs() < 30, "the broker made no CA");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pem = std::fs::read(&ca).unwrap();
    let c = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap();
    let status = |port: u16, method: reqwest::Method, path: &'static str| {
        let c = c.clone();
        async move {
            let url = format!("https://127.0.0.1:{port}{path}");
            for _ in 0..100 {
                let r = c
                    .request(method.clone(), &url)
                    .json(&json!({"user": "nobody", "password": "x"}))
                    .send()
                    .await;
                if let Ok(r) = r {
                    return r.status();
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            panic!("{url} never answered")
        }
    };
    use reqwest::Method;
    // (port, method, path, answer): administrators and metrics only on the admin address,
    // clients only on the client address, liveness on both.
    let cases = [
        (client_port, Method::GET, "/healthz", StatusCode::OK),
        (admin_port, Method::GET, "/healthz", StatusCode::OK),
        (admin_port, Method::GET, "/metrics", StatusCode::OK),
        (client_port, Method::GET, "/metrics", StatusCode::NOT_FOUND),
        (
            admin_port,
            Method::POST,
            "/api/v1/admin/tokens",
            StatusCode::UNAUTHORIZED,
        ),
        (
            client_port,
            Method::POST,
            "/api/v1/admin/tokens",
            StatusCode::NOT_FOUND,
        ),
        (
            client_port,
            Method::POST,
            "/api/v1/sessions",
            StatusCode::UNAUTHORIZED,
        ),
        (
            admin_port,
            Method::POST,
            "/api/v1/sessions",
            StatusCode::NOT_FOUND,
        ),
    ];
    for (port, method, path, want) in cases {
        let got = status(port, method.clone(), path).await;
        let which = if port == admin_port {
            "admin"
        } else {
            "client"
        };
        assert_eq!(got, want, "{method} {path} on the {which} address");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The first SPICE client event `pick` accepts within `limit`.
fn spice_event<T>(
    rx: &std::sync::mpsc::Receiver<tessera_spice_client::Event>,
    limit: std::time::Duration,
    mut pick: impl FnMut(&tessera_spice_client::Event) -> Option<T>,
) -> Option<T> {
    let deadline = std::time::Instant::now() + limit;
    while let Ok(e) = rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
    {
        if let Some(v) = pick(&e) {
            return Some(v);
        }
    }
    None
}

/// A real SPICE client (libspice-client-glib, as tessera-client) on the desktop's display.
fn spice_client(
    port: u16,
    ticket: &str,
) -> (
    tessera_spice_client::Session,
    std::sync::mpsc::Receiver<tessera_spice_client::Event>,
) {
    let (tx, rx) = std::sync::mpsc::channel();
    let opts = tessera_spice_client::ConnectOptions {
        host: "127.0.0.1".into(),
        port: Some(port),
        password: Some(ticket.into()),
        ..Default::default()
    };
    let s = tessera_spice_client::Session::connect(opts, move |e, _| {
        let _ = tx.send(e);
    })
    .unwrap();
    (s, rx)
}

/// Opens the session's display tunnel as a client does (HTTP Upgrade); the raw stream.
async fn open_tunnel(base: &str, id: &str, token: &str) -> (u16, tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .unwrap();
    let req = format!(
        "GET /api/v1/sessions/{id}/tunnel HTTP/1.1\r\nHost: broker\r\nAuthorization: Bearer \
         {token}\r\nConnection: Upgrade\r\nUpgrade: tessera-display\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).await.unwrap() == 0 {
            break;
        }
        head.push(b[0]);
    }
    let text = String::from_utf8_lossy(&head);
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, s)
}

/// A forced logoff ends what the client held: the SPICE client connected to the desktop is
/// cut off, the session's tunnel closes, and neither the ticket, the tunnel nor the session
/// token lets it back in. An administrator who loses the right loses the token's use at once.
#[tokio::test(flavor = "multi_thread")]
async fn a_forced_logoff_cuts_the_client_off_and_nothing_it_held_works() {
    use tokio::io::AsyncReadExt;
    if !kvm() {
        return;
    }
    let mut s = spec();
    (s.min_desktops, s.max_desktops, s.spare_desktops) = (1, 1, 0);
    let (h, _) = demo_and_boss("cut", &s).await;
    let logon = Logon::new(h.store.clone(), None, h.http.clone()).with_display_tunnel(true);
    let base = serve_api(logon, h.store.clone()).await;
    let c = reqwest::Client::new();
    let body: Value = c
        .post(format!("{base}/api/v1/sessions"))
        .json(&json!({"user": "demo", "password": "Passw0rd!long"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let g = &body["session"];
    let id = g["session_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no session: {body}"))
        .to_string();
    let token = g["session_token"].as_str().unwrap().to_string();
    let ticket = g["ticket"].as_str().unwrap().to_string();
    let port = g["display"]["port"]
        .as_u64()
        .expect("a loopback display port") as u16;

    // The user's client: a tunnel, and a SPICE session linked with the ticket.
    let (code, mut tunnel) = open_tunnel(&base, &id, &token).await;
    assert_eq!(code, 101);
    let (session, rx) = spice_client(port, &ticket);
    let opened = tokio::task::block_in_place(|| {
        spice_event(&rx, Duration::from_secs(20), |e| {
            (*e == tessera_spice_client::Event::Opened).then_some(())
        })
    });
    assert!(opened.is_some(), "the client never opened its session");

    let admin: Value = c
        .post(format!("{base}/api/v1/admin/tokens"))
        .json(&json!({"user": "boss", "password": "Passw0rd!long"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let admin = admin["token"].as_str().unwrap().to_string();
    let forced = std::time::Instant::now();
    let r = post(
        &c,
        format!("{base}/api/v1/admin/sessions/{id}/logoff"),
        &admin,
        json!(null),
    )
    .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    // The tunnel closes...
    let mut buf = [0u8; 4096];
    let eof = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match tunnel.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        eof.is_ok(),
        "the tunnel stayed open after the forced logoff"
    );
    eprintln!(
        "tunnel closed {:?} after the forced logoff",
        forced.elapsed()
    );
    // ...and the SPICE client is cut off by the desktop's VMM.
    let closed = tokio::task::block_in_place(|| {
        spice_event(&rx, Duration::from_secs(10), |e| match e {
            tessera_spice_client::Event::Closed(why) => Some(why.clone()),
            _ => None,
        })
    });
    eprintln!(
        "SPICE client cut {:?} after the forced logoff",
        forced.elapsed()
    );
    assert!(
        matches!(closed, Some(Some(_))),
        "the display did not cut the client: {closed:?}"
    );
    drop(session);

    // Nothing it held opens anything: the ticket, the tunnel, the session token.
    let (_again, rx) = spice_client(port, &ticket);
    let refused = tokio::task::block_in_place(|| {
        spice_event(&rx, Duration::from_secs(20), |e| match e {
            tessera_spice_client::Event::Closed(why) => Some(why.clone()),
            _ => None,
        })
    });
    assert_eq!(refused, Some(Some(tessera_spice_client::Failure::Auth)));
    let (code, _) = open_tunnel(&base, &id, &token).await;
    assert_eq!(code, 404, "a tunnel for the ended session");
    let t = c
        .post(format!("{base}/api/v1/sessions/{id}/ticket"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(t.status(), StatusCode::NOT_FOUND);

    // The administrator's flag is taken away: the token stops working at its next use.
    let sessions = |token: String| {
        let c = c.clone();
        let url = format!("{base}/api/v1/admin/sessions");
        async move { c.get(url).bearer_auth(token).send().await.unwrap().status() }
    };
    assert_eq!(sessions(admin.clone()).await, StatusCode::OK);
    h.store.set_local_disabled("boss", true).await.unwrap();
    assert_eq!(sessions(admin.clone()).await, StatusCode::FORBIDDEN);
    h.store.set_local_disabled("boss", false).await.unwrap();
    assert_eq!(
        sessions(admin.clone()).await,
        StatusCode::UNAUTHORIZED,
        "the token was revoked, not merely refused"
    );
}
