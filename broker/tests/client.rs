//! tessera-client end to end through the broker: a user signs in with the real client window
//! under Xvfb (glow on llvmpipe) to a broker that serves HTTPS and tunnels displays, the agent runs the demo
//! desktop guest, and text typed into the window reaches the guest through the tunnel. Then
//! the network drops (a relay standing for it cuts every connection) and the client reconnects
//! by itself with a new ticket: typed text reaches the guest again. Its toolbar's
//! Ctrl+Alt+Del reaches the guest, and Disconnect leaves the session disconnected.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use tessera_broker::logon::Logon;
use tessera_broker::store::pools::Principal;
use tessera_e2e::x11::{client_binary, start_client, x_tools, Xvfb};

/// The network between the client and the broker: a TCP relay whose connections can all be
/// cut at once, as a dropped Wi-Fi or VPN would.
struct Network {
    addr: SocketAddr,
    live: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Network {
    async fn to(target: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let live = Arc::new(Mutex::new(Vec::new()));
        let conns = live.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let task = tokio::spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
                conns.lock().unwrap().push(task.abort_handle());
            }
        });
        Self { addr, live }
    }

    /// Drops every connection open now (new ones get through).
    fn cut(&self) -> usize {
        let conns = std::mem::take(&mut *self.live.lock().unwrap());
        let open = conns.iter().filter(|c| !c.is_finished()).count();
        conns.iter().for_each(|c| c.abort());
        open
    }
}

async fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The broker's count of display tunnels opened so far.
async fn tunnels_opened(http: &reqwest::Client, base: &str) -> u64 {
    metric(http, base, "tessera_broker_tunnels_total").await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_client_uses_its_desktop_through_the_tunnel_and_survives_a_network_drop() {
    if !kvm() || !x_tools() {
        return;
    }
    tokio::task::spawn_blocking(client_binary).await.unwrap();
    let mut r = rig("client").await;
    let lib = r.dir.join("library");
    std::fs::write(lib.join("demo.elf"), tessera_demo_guest::ELF).unwrap();
    r.store
        .create_image(
            "demo",
            lib.join("gold.qcow2").to_str().unwrap(),
            64 << 20,
            Some(lib.join("demo.elf").to_str().unwrap()),
            None,
            Some("name={desktop} mode=800x600"),
        )
        .await
        .unwrap();
    let mut s = spec();
    (s.image, s.min_desktops, s.max_desktops, s.spare_desktops) = ("demo".into(), 1, 1, 0);
    let pool = r.store.create_pool(&s).await.unwrap();
    r.store
        .create_local_account("demo", "Demo", "Demo!Passw0rd", false)
        .await
        .unwrap();
    let demo = Principal::Local {
        name: "demo".into(),
    };
    r.store.entitle(&pool.id, &demo).await.unwrap();
    r.reconciler.pass().await.unwrap();
    let console: PathBuf = r.dir.join("state/vms/fin-001/console.log");
    let console_text = || std::fs::read_to_string(&console).unwrap_or_default();
    wait_until("the desktop", Duration::from_secs(30), || {
        console_text().contains("name=fin-001")
    })
    .await;
    let logon = Logon::new(r.store.clone(), None, r.http.clone()).with_display_tunnel(true);
    let base = serve_api_tls(logon, r.store.clone(), &r.dir).await;
    let net = Network::to(base.trim_start_matches("https://").parse().unwrap()).await;

    // Sign in: the broker and name are remembered, so the password field has the cursor.
    let x = Xvfb::start();
    let dir = r.dir.join("client");
    std::fs::create_dir_all(&dir).unwrap();
    let broker = format!("https://{}", net.addr);
    let ca = r.dir.join("ca.pem");
    let _client = start_client(
        &x,
        &dir,
        &[
            "--broker".as_ref(),
            broker.as_ref(),
            "--user".as_ref(),
            "demo".as_ref(),
            "--ca".as_ref(),
            ca.as_os_str(),
        ],
    );
    let win = x.find_window("Tessera", Duration::from_secs(20)).unwrap();
    x.focus(&win);
    x.run("xdotool", &["type", "--delay", "60", "Demo!Passw0rd"]);
    x.run("xdotool", &["key", "Return"]);
    // Her only desktop opens by itself, through the tunnel (one per SPICE channel).
    let log = dir.join("client.log");
    let deadline = Instant::now() + Duration::from_secs(30);
    while tunnels_opened(&r.http, &base).await < 2 {
        if Instant::now() > deadline {
            panic!(
                "the session's tunnels never opened; the client's log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let typed = |text: &'static str| {
        // Hovering over the picture gives it the window's keys.
        x.run("xdotool", &["mousemove", "--window", &win, "500", "400"]);
        x.run("xdotool", &["type", "--delay", "100", text]);
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    typed("tunnel1");
    wait_until("text through the tunnel", Duration::from_secs(30), || {
        console_text().contains("tunnel1")
    })
    .await;

    // The network drops: the client gets a new ticket and reconnects through new tunnels.
    let before = tunnels_opened(&r.http, &base).await;
    assert!(
        net.cut() >= 2,
        "the session's connections went through the network"
    );
    wait_until("the reconnect", Duration::from_secs(60), || {
        block_on(tunnels_opened(&r.http, &base)) > before
            && std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("reconnecting")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    typed("again2");
    wait_until("text after the reconnect", Duration::from_secs(30), || {
        console_text().contains("again2")
    })
    .await;

    // The toolbar (of the 1000-pixel window): Disconnect, Log off, Restart, Ctrl+Alt+Del,
    // Full screen.
    let buttons = x.screenshot().toolbar_buttons((0, 0), 1000);
    assert_eq!(buttons.len(), 5, "the toolbar's buttons: {buttons:?}");
    // Ctrl+Alt+Del reaches the guest as the chord (the local system keeps the real one).
    x.click(buttons[3]);
    wait_until("Ctrl+Alt+Del in the guest", Duration::from_secs(15), || {
        console_text().contains("[ctrl-alt-del]")
    })
    .await;
    // Disconnect: the session stays, disconnected (its desktop hers), and its tunnels close.
    let session = || async {
        let mut live = r.store.live_sessions().await.unwrap();
        assert_eq!(live.len(), 1, "{live:?}");
        live.remove(0)
    };
    assert_eq!(session().await.state, "connected");
    x.click(buttons[0]);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let s = session().await;
        let open = metric(&r.http, &base, "tessera_broker_tunnels").await;
        if s.state == "disconnected" && open == 0 {
            assert_eq!((s.user.as_str(), s.desktop.as_str()), ("demo", "fin-001"));
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after Disconnect: the session {}, {open} tunnels open",
            s.state
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs a future to completion from a synchronous closure inside the multi-threaded runtime.
fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}
