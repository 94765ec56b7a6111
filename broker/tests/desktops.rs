//! Desktops end to end: the reconciler and the logon path against a real agent (in-process,
//! mutual TLS) running real tessera-vmm processes with a tiny guest on /dev/kvm. A floating
//! pool is provisioned to its minimum and spare, grows as users take desktops, stops at its
//! maximum, and a desktop released with refresh-on-logoff comes back on a fresh overlay; a
//! local user logs on, gets a running desktop and a one-time ticket, reconnects to the same
//! desktop, and logs off; users list, restart and log off their desktops; power policies keep
//! spares on and shut the other free desktops down through the guest.

mod common;

use common::*;
use tessera_broker::logon::{Logon, LogonError, LogonOutcome};
use tessera_broker::store::desktops::{AssignOutcome, DesktopState};
use tessera_broker::store::pools::{PowerPolicy, Principal};
use tessera_broker::store::sessions::EndReason;

#[tokio::test(flavor = "multi_thread")]
async fn a_floating_pool_grows_stops_at_max_and_refreshes() {
    if !kvm() {
        return;
    }
    let mut r = rig("floating").await;
    let pool = r.store.create_pool(&spec()).await.unwrap();

    let report = r.reconciler.pass().await.unwrap();
    assert_eq!((report.provisioned, report.failures), (2, 0), "{report:?}");
    let ds = r.store.desktops_of(&pool.id).await.unwrap();
    assert_eq!(
        ds.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
        ["fin-001", "fin-002"]
    );
    for d in &ds {
        assert_eq!(d.state, DesktopState::Running);
        let vm = r.agent.vm(&d.name).await.unwrap().unwrap();
        assert_eq!(vm.state, "running", "{vm:?}");
        assert!(r.ds.join(format!("{}.qcow2", d.name)).exists());
    }
    // A second pass has nothing to do.
    assert_eq!(r.reconciler.pass().await.unwrap(), Default::default());

    // One user: one free desktop left, which is the spare; nothing new.
    let AssignOutcome::New(d1) = r.store.assign(&pool, "user1").await.unwrap() else {
        panic!()
    };
    assert_eq!(r.reconciler.pass().await.unwrap().provisioned, 0);
    // A second user takes the spare: a third desktop is made (the maximum).
    let AssignOutcome::New(_) = r.store.assign(&pool, "user2").await.unwrap() else {
        panic!()
    };
    assert_eq!(r.reconciler.pass().await.unwrap().provisioned, 1);
    let AssignOutcome::New(_) = r.store.assign(&pool, "user3").await.unwrap() else {
        panic!()
    };
    assert_eq!(
        r.store.assign(&pool, "user4").await.unwrap(),
        AssignOutcome::NoneFree
    );
    assert_eq!(r.reconciler.pass().await.unwrap().provisioned, 0, "at max");
    assert_eq!(r.store.desktops_of(&pool.id).await.unwrap().len(), 3);

    // user1 logs off: the overlay is replaced by a fresh one and the desktop is free again.
    // The user's session wrote 4 MiB into the overlay.
    let disk = r.ds.join(format!("{}.qcow2", d1.name));
    {
        let ds = tessera_storage::Datastore::new(&r.ds).unwrap();
        let img =
            tessera_storage::Disk::open(&ds, &disk, tessera_storage::Format::Qcow2, true).unwrap();
        img.write(&vec![0x5a; 4 << 20], 0).unwrap();
        img.flush().unwrap();
    }
    let before = std::fs::metadata(&disk).unwrap().len();
    assert!(before > 4 << 20);
    let d1 = r.store.desktop(&d1.id).await.unwrap();
    let released = r.store.release(&pool, &d1).await.unwrap();
    assert_eq!(released.state, DesktopState::Refreshing);
    let report = r.reconciler.pass().await.unwrap();
    assert_eq!((report.refreshed, report.failures), (1, 0), "{report:?}");
    let after = r.store.desktop(&d1.id).await.unwrap();
    assert_eq!(
        (after.state, after.assigned_user.clone()),
        (DesktopState::Running, None)
    );
    let fresh = std::fs::metadata(&disk).unwrap().len();
    assert!(fresh < 1 << 20, "a new overlay: {before} -> {fresh} bytes");
    assert_eq!(
        r.agent.vm(&d1.name).await.unwrap().unwrap().state,
        "running"
    );
    let events = r.store.events(Some("provision"), 10).await.unwrap();
    assert_eq!(events.len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_are_recorded_and_retried() {
    if !kvm() {
        return;
    }
    let mut r = rig("failures").await;
    let mut s = spec();
    s.min_desktops = 1;
    s.spare_desktops = 0;
    let pool = r.store.create_pool(&s).await.unwrap();
    // The base image disappears from the library: provisioning fails, and says why.
    let lib_disk = r.dir.join("library/gold.qcow2");
    let saved = r.dir.join("gold.saved");
    std::fs::rename(&lib_disk, &saved).unwrap();
    let report = r.reconciler.pass().await.unwrap();
    assert_eq!((report.provisioned, report.failures), (0, 1), "{report:?}");
    let d = r.store.desktops_of(&pool.id).await.unwrap().remove(0);
    assert_eq!(d.state, DesktopState::Error);
    assert!(
        d.error.as_deref().unwrap_or("").contains("gold"),
        "{:?}",
        d.error
    );
    // Back-off: the next pass right away leaves it alone.
    assert_eq!(r.reconciler.pass().await.unwrap(), Default::default());
    // The image comes back; after the back-off the desktop is provisioned.
    std::fs::rename(&saved, &lib_disk).unwrap();
    tokio::time::sleep(tessera_broker::reconcile::backoff(1)).await;
    let report = r.reconciler.pass().await.unwrap();
    assert_eq!(report.provisioned, 1, "{report:?}");
    assert_eq!(
        r.store.desktop(&d.id).await.unwrap().state,
        DesktopState::Running
    );
}

/// demo's logon (to `pool`), which must get a desktop.
async fn granted(logon: &Logon, pool: Option<&str>) -> Box<tessera_broker::logon::Granted> {
    match logon
        .logon("demo", "Demo!Passw0rd", pool, "test")
        .await
        .unwrap()
    {
        LogonOutcome::Granted(g) => g,
        other => panic!("expected a desktop, got {other:?}"),
    }
}

/// How many of `pool`'s desktops are in each state, and how many VMs run.
async fn power_states(r: &Rig, pool: &str) -> (usize, usize, usize) {
    let desktops = r.store.desktops_of(pool).await.unwrap();
    let count = |s| desktops.iter().filter(|d| d.state == s).count();
    let mut on = 0;
    for d in &desktops {
        if r.agent.vm(&d.name).await.unwrap().unwrap().state == "running" {
            on += 1;
        }
    }
    (count(DesktopState::Ready), count(DesktopState::Running), on)
}

#[tokio::test(flavor = "multi_thread")]
async fn off_when_idle_keeps_a_spare_on_and_shuts_free_desktops_down_through_the_guest() {
    if !kvm() {
        return;
    }
    let mut r = rig("power").await;
    // The image's guest listens for the ACPI power button and shuts down when it is pressed.
    std::fs::write(
        r.dir.join("library/tiny.elf"),
        tessera_vmm::tiny_guest::acpi_power_button(true),
    )
    .unwrap();
    let mut s = spec();
    s.power_policy = PowerPolicy::OffWhenIdle;
    s.refresh_on_logoff = false;
    s.min_desktops = 2;
    s.spare_desktops = 1;
    let pool = r.store.create_pool(&s).await.unwrap();
    r.store
        .create_local_account("demo", "Demo", "Demo!Passw0rd", false)
        .await
        .unwrap();
    r.store
        .entitle(
            &pool.id,
            &Principal::Local {
                name: "demo".into(),
            },
        )
        .await
        .unwrap();
    // Two desktops made off; the spare is started.
    r.reconciler.pass().await.unwrap();
    assert_eq!(power_states(&r, &pool.id).await, (1, 1, 1));
    // A logon takes the running spare; the next pass starts the other as the new spare.
    let logon = Logon::new(r.store.clone(), None, r.http.clone());
    let g = granted(&logon, None).await;
    r.reconciler.pass().await.unwrap();
    assert_eq!(power_states(&r, &pool.id).await, (0, 1, 2));
    // Logoff: two free desktops run, one is shut down, by its guest.
    logon
        .logoff(&g.session_id, EndReason::Logoff)
        .await
        .unwrap();
    let report = r.reconciler.pass().await.unwrap();
    assert_eq!((report.powered, report.failures), (1, 0), "{report:?}");
    assert_eq!(power_states(&r, &pool.id).await, (1, 1, 1));
    let events = r.store.events(Some("power-off"), 10).await.unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        events[0].outcome,
        "ok (the guest shut down after the power button); policy off-when-idle"
    );
    // The next logon gets the running spare.
    let g = granted(&logon, None).await;
    assert_eq!(
        r.agent.vm(&g.desktop).await.unwrap().unwrap().state,
        "running"
    );
    logon
        .logoff(&g.session_id, EndReason::Logoff)
        .await
        .unwrap();

    // Off after logoff: no spare, and a desktop goes off once its user has logged off.
    let mut s = spec();
    s.name = "acc".into();
    s.naming = "acc-{n:03}".into();
    s.power_policy = PowerPolicy::OffAfterLogoff;
    s.refresh_on_logoff = false;
    s.min_desktops = 1;
    s.spare_desktops = 0;
    let acc = r.store.create_pool(&s).await.unwrap();
    r.store
        .entitle(
            &acc.id,
            &Principal::Local {
                name: "demo".into(),
            },
        )
        .await
        .unwrap();
    r.reconciler.pass().await.unwrap();
    assert_eq!(power_states(&r, &acc.id).await, (1, 0, 0));
    let g = granted(&logon, Some("acc")).await;
    assert_eq!(power_states(&r, &acc.id).await, (0, 0, 1), "assigned, on");
    logon
        .logoff(&g.session_id, EndReason::Logoff)
        .await
        .unwrap();
    r.reconciler.pass().await.unwrap();
    assert_eq!(power_states(&r, &acc.id).await, (1, 0, 0));
    // The first pool kept its spare on meanwhile.
    assert_eq!(power_states(&r, &pool.id).await, (1, 1, 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_local_user_logs_on_reconnects_and_logs_off() {
    if !kvm() {
        return;
    }
    let mut r = rig("logon").await;
    let mut s = spec();
    s.min_desktops = 1;
    let pool = r.store.create_pool(&s).await.unwrap();
    r.store
        .create_local_account("demo", "Demo", "Demo!Passw0rd", false)
        .await
        .unwrap();
    r.store
        .create_local_account("other", "Other", "Other!Passw0rd", false)
        .await
        .unwrap();
    r.store
        .entitle(
            &pool.id,
            &Principal::Local {
                name: "demo".into(),
            },
        )
        .await
        .unwrap();
    r.reconciler.pass().await.unwrap();
    let logon = Logon::new(r.store.clone(), None, r.http.clone());

    let LogonOutcome::Granted(g) = logon
        .logon("demo", "Demo!Passw0rd", None, "test")
        .await
        .unwrap()
    else {
        panic!("expected a desktop")
    };
    assert_eq!(g.pool, "fin");
    assert!(!g.reconnected);
    assert_eq!(g.ticket.len(), 32);
    let phases: Vec<&str> = g.phases_us.iter().map(|p| p.0).collect();
    assert_eq!(
        phases,
        ["authenticate", "entitle", "assign", "power", "ticket"]
    );
    assert_eq!(
        r.agent.vm(&g.desktop).await.unwrap().unwrap().state,
        "running"
    );
    // The ticket opens the session once.
    assert_eq!(
        r.store.redeem_ticket(&g.ticket).await.unwrap(),
        Some(g.session_id.clone())
    );
    assert_eq!(r.store.redeem_ticket(&g.ticket).await.unwrap(), None);
    assert_eq!(r.store.redeem_ticket("forged-ticket").await.unwrap(), None);

    // Logging on again (a reconnect) gives the same desktop, a new session and ticket.
    let LogonOutcome::Granted(g2) = logon
        .logon("demo", "Demo!Passw0rd", None, "test")
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(
        (g2.desktop.as_str(), g2.reconnected),
        (g.desktop.as_str(), true)
    );
    assert_ne!(g2.ticket, g.ticket);
    assert_ne!(g2.session_id, g.session_id);

    // Not entitled, and wrong passwords until the broker stops trying.
    assert!(matches!(
        logon.logon("other", "Other!Passw0rd", None, "t").await,
        Err(LogonError::NotEntitled(_))
    ));
    assert!(matches!(
        logon
            .logon("demo", "Demo!Passw0rd", Some("nope"), "t")
            .await,
        Err(LogonError::NotEntitled(_))
    ));
    for _ in 0..5 {
        assert!(matches!(
            logon.logon("walter", "x", None, "t").await,
            Err(LogonError::Denied(..))
        ));
    }
    assert!(matches!(
        logon.logon("walter", "x", None, "t").await,
        Err(LogonError::TooManyAttempts)
    ));

    // Log off: the floating desktop is refreshed and free again.
    logon
        .logoff(&g2.session_id, EndReason::Logoff)
        .await
        .unwrap();
    let report = r.reconciler.pass().await.unwrap();
    assert_eq!(report.refreshed, 1, "{report:?}");
    let d = r.store.desktops_of(&pool.id).await.unwrap();
    assert!(
        d.iter()
            .all(|d| d.assigned_user.is_none() && d.state == DesktopState::Running),
        "{d:?}"
    );
    let events = r.store.events(Some("logon"), 20).await.unwrap();
    let ok = events.iter().filter(|e| e.outcome == "ok").count();
    assert_eq!(ok, 2);
    assert!(events
        .iter()
        .any(|e| e.detail.contains("authenticate=") && e.detail.contains("ticket=")));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_client_api_logs_on_and_off_over_http() {
    if !kvm() {
        return;
    }
    let mut r = rig("api").await;
    let mut s = spec();
    s.min_desktops = 1;
    let pool = r.store.create_pool(&s).await.unwrap();
    r.store
        .create_local_account("demo", "Demo", "Demo!Passw0rd", false)
        .await
        .unwrap();
    r.store
        .entitle(
            &pool.id,
            &Principal::Local {
                name: "demo".into(),
            },
        )
        .await
        .unwrap();
    r.reconciler.pass().await.unwrap();
    let base = serve_api(
        Logon::new(r.store.clone(), None, r.http.clone()).with_display_tunnel(true),
        r.store.clone(),
    )
    .await;
    let c = reqwest::Client::new();

    let resp = c
        .post(format!("{base}/api/v1/sessions"))
        .json(&serde_json::json!({"user": "demo", "password": "Demo!Passw0rd"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let body: serde_json::Value = resp.json().await.unwrap();
    let session = &body["session"];
    let (id, token) = (
        session["session_id"].as_str().unwrap(),
        session["session_token"].as_str().unwrap(),
    );
    let ticket = session["ticket"].as_str().unwrap();
    assert_eq!(ticket.len(), 32);
    // The desktop's display is served (SPICE on the agent's range) and the answer says where.
    let port = session["display"]["port"].as_u64().expect("a display port") as u16;
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    // The broker's tunnel leads to the same display: SPICE answers a link message sent
    // through it. A forged token opens nothing; a plain GET is told to upgrade.
    assert_eq!(session["tunnel"], true);
    let (status, answer) = tunnel_link(&base, id, token).await;
    assert!(status.starts_with("HTTP/1.1 101"), "{status}");
    assert_eq!(
        &answer[..4],
        b"REDQ",
        "SPICE's link reply through the tunnel"
    );
    let (status, _) = tunnel_link(&base, id, "forged").await;
    assert!(status.starts_with("HTTP/1.1 404"), "{status}");
    let plain = c
        .get(format!("{base}/api/v1/sessions/{id}/tunnel"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 426);

    let t = c
        .post(format!("{base}/api/v1/sessions/{id}/ticket"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(t.status(), 201);
    // A remote-viewer file with a fresh ticket.
    let vv = c
        .post(format!("{base}/api/v1/sessions/{id}/vv"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(vv.status(), 200);
    assert_eq!(vv.headers()["content-type"], tessera_broker::vv::MIME);
    let vv = vv.text().await.unwrap();
    assert!(vv.starts_with("[virt-viewer]\ntype=spice\n"), "{vv}");
    assert!(vv.contains(&format!("\nport={port}\n")), "{vv}");
    let password = vv
        .lines()
        .find_map(|l| l.strip_prefix("password="))
        .unwrap();
    assert_eq!(password.len(), 32);
    assert_ne!(password, ticket, "each call issues a new ticket");
    let no = c
        .post(format!("{base}/api/v1/sessions/{id}/ticket"))
        .send()
        .await
        .unwrap();
    assert_eq!(no.status(), 401);
    let wrong = c
        .post(format!("{base}/api/v1/sessions/{id}/ticket"))
        .bearer_auth("forged")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 404);
    let d = c
        .post(format!("{base}/api/v1/sessions/{id}/disconnect"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(d.status(), 204);
    let off = c
        .delete(format!("{base}/api/v1/sessions/{id}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(off.status(), 204);
    let again = c
        .delete(format!("{base}/api/v1/sessions/{id}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 404, "a session ends once");

    let bad = c
        .post(format!("{base}/api/v1/sessions"))
        .json(&serde_json::json!({"user": "demo", "password": "nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    let e: serde_json::Value = bad.json().await.unwrap();
    assert!(e["error"]
        .as_str()
        .unwrap()
        .contains("wrong user name or password"));
    assert_eq!(e["code"], "invalid_credentials");
    let junk = c
        .post(format!("{base}/api/v1/sessions"))
        .body("{not json")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert!(junk.status().is_client_error());
    let health = c.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn users_list_restart_and_log_off_their_desktops() {
    if !kvm() {
        return;
    }
    let mut r = rig("actions").await;
    let mut fin = spec();
    (fin.min_desktops, fin.spare_desktops) = (1, 0);
    let fin = r.store.create_pool(&fin).await.unwrap();
    let mut dev = spec();
    (dev.name, dev.display_name, dev.naming) =
        ("dev".into(), "Developers".into(), "dev-{n:03}".into());
    (dev.min_desktops, dev.spare_desktops) = (0, 0);
    let dev = r.store.create_pool(&dev).await.unwrap();
    r.store
        .create_local_account("demo", "Demo", "Demo!Passw0rd", false)
        .await
        .unwrap();
    for p in [&fin, &dev] {
        let who = Principal::Local {
            name: "demo".into(),
        };
        r.store.entitle(&p.id, &who).await.unwrap();
    }
    r.reconciler.pass().await.unwrap();
    let logon = Logon::new(r.store.clone(), None, r.http.clone());
    let pw = "Demo!Passw0rd";

    // Two pools: the list, with nothing held yet.
    let LogonOutcome::ChoosePool { pools, desktops } =
        logon.logon("demo", pw, None, "t").await.unwrap()
    else {
        panic!("expected a choice")
    };
    assert_eq!(pools, ["dev", "fin"]);
    assert_eq!(desktops.len(), 2);
    assert!(desktops.iter().all(|d| d.desktop.is_none()), "{desktops:?}");
    assert_eq!(desktops[1].display_name, "Finance");

    let LogonOutcome::Granted(g) = logon.logon("demo", pw, Some("fin"), "t").await.unwrap() else {
        panic!("expected a desktop")
    };
    let mine = logon.my_desktops("demo", pw).await.unwrap();
    assert_eq!(mine[1].desktop.as_deref(), Some(g.desktop.as_str()));
    assert_eq!(mine[1].state, Some(DesktopState::Assigned));
    assert_eq!(mine[0].desktop, None);

    // Restart: the VMM is a new process, the desktop and session stay.
    let pid = |vm: Option<tessera_broker::agent_client::VmStatusLite>| vm.unwrap().pid.unwrap();
    let before = pid(r.agent.vm(&g.desktop).await.unwrap());
    logon.restart_desktop("demo", pw, "fin").await.unwrap();
    let vm = r.agent.vm(&g.desktop).await.unwrap().unwrap();
    assert_eq!(vm.state, "running");
    let after = vm.pid.unwrap();
    assert_ne!(before, after, "the VM was not restarted");
    assert!(r.store.session(&g.session_id).await.unwrap().is_live());
    // From inside the session (its token's call).
    logon.restart_session_desktop(&g.session_id).await.unwrap();
    assert_ne!(pid(r.agent.vm(&g.desktop).await.unwrap()), after);
    // Nothing held there, a wrong password, a pool not entitled: refused, nothing restarted.
    assert!(matches!(
        logon.restart_desktop("demo", pw, "dev").await,
        Err(LogonError::NotHeld(_))
    ));
    assert!(matches!(
        logon.restart_desktop("demo", "wrong", "fin").await,
        Err(LogonError::Denied(..))
    ));
    assert!(matches!(
        logon.log_off_desktop("demo", pw, "nope").await,
        Err(LogonError::NotEntitled(_))
    ));

    // Log off from the list: the session ends, the desktop goes back to the pool.
    logon.log_off_desktop("demo", pw, "fin").await.unwrap();
    let s = r.store.session(&g.session_id).await.unwrap();
    assert_eq!(
        (s.state.as_str(), s.end_reason.as_deref()),
        ("ended", Some("logoff"))
    );
    assert!(logon
        .my_desktops("demo", pw)
        .await
        .unwrap()
        .iter()
        .all(|d| d.desktop.is_none()));
    // Each restart's event says how the VM stopped: the demo guest has no ACPI, so nobody
    // listened for the power button and it was powered off at once.
    let events = r.store.events(Some("restart"), 10).await.unwrap();
    let ok: Vec<&str> = events
        .iter()
        .map(|e| e.outcome.as_str())
        .filter(|o| o.starts_with("ok ("))
        .collect();
    assert_eq!(ok.len(), 2, "{ok:?}");
    assert!(
        ok.iter()
            .all(|o| o.contains("not listening for the power button")),
        "{ok:?}"
    );
}

/// Opens the display tunnel of session `id` on the broker at `base` (plain HTTP) with `token`
/// and, once upgraded, sends a SPICE link message for the main channel: the response's status
/// line and the first bytes that come back through the tunnel.
async fn tunnel_link(base: &str, id: &str, token: &str) -> (String, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET /api/v1/sessions/{id}/tunnel HTTP/1.1\r\nHost: {addr}\r\n\
         Authorization: Bearer {token}\r\nConnection: Upgrade\r\nUpgrade: tessera-display\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).await.unwrap(), 1, "the head ended early");
        head.push(b[0]);
    }
    let status = String::from_utf8_lossy(&head)
        .lines()
        .next()
        .unwrap()
        .to_string();
    if !status.starts_with("HTTP/1.1 101") {
        return (status, Vec::new());
    }
    // SpiceLinkHeader (magic, version 2.2, size) and SpiceLinkMess (main channel, no caps).
    let mut link = b"REDQ".to_vec();
    for v in [2u32, 2, 18, 0] {
        link.extend_from_slice(&v.to_le_bytes());
    }
    link.extend_from_slice(&[1, 0]);
    for v in [0u32, 0, 18] {
        link.extend_from_slice(&v.to_le_bytes());
    }
    s.write_all(&link).await.unwrap();
    let mut answer = vec![0u8; 16];
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        s.read_exact(&mut answer),
    )
    .await
    .expect("SPICE answered in time")
    .unwrap();
    (status, answer)
}
