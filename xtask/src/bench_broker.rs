//! Broker benchmarks: provisioning N linked-clone desktops in a pool (time to ready: clone and
//! VM definition on the agent, no guest boot), then a logon storm of N local users over 50
//! concurrent connections to the client API (each logon: argon2id check, entitlement,
//! assignment in one transaction, power-on of the desktop's VM through the agent, session and
//! ticket). Everything real: an in-process agent with mutual TLS spawning release tessera-vmm
//! processes running a tiny guest on /dev/kvm, SQLite, the broker's own API router.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use tessera_agent::config::{AgentConfig, DatastoreConfig, TlsConfig};
use tessera_broker::agent_client::{tls_client, AgentClient};
use tessera_broker::logon::Logon;
use tessera_broker::pki::{Pki, Usage};
use tessera_broker::reconcile::Reconciler;
use tessera_broker::store::desktops::DesktopState;
use tessera_broker::store::hosts::Capacity;
use tessera_broker::store::pools::{Assignment, CloneKind, PoolSpec, PowerPolicy, Principal};
use tessera_broker::store::Store;

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[(((v.len() - 1) as f64) * p).round() as usize]
}

/// Runs both measurements with `n` desktops and users; prints the table rows.
pub fn run(repo: &Path, n: usize, connections: usize) -> Result<()> {
    let st = Command::new(env!("CARGO"))
        .args([
            "build",
            "-q",
            "--release",
            "-p",
            "tessera-vmm",
            "--bin",
            "tessera-vmm",
        ])
        .current_dir(repo)
        .status()?;
    if !st.success() {
        bail!("building tessera-vmm failed");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let dir = std::env::temp_dir().join(format!("tessera-bench-broker-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let result = rt.block_on(measure(repo, &dir, n, connections));
    // Stop every VMM the run started (they outlive the agent by design), then clean up.
    for e in std::fs::read_dir(dir.join("agent/vms"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(pid) = std::fs::read_to_string(e.path().join("pid")) {
            let _ = Command::new("kill").arg("-9").arg(pid.trim()).status();
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn measure(repo: &Path, dir: &Path, n: usize, connections: usize) -> Result<()> {
    let (lib, ds) = (dir.join("library"), dir.join("ds1"));
    std::fs::create_dir_all(&lib)?;
    std::fs::create_dir_all(&ds)?;
    let pki = Pki::open(&dir.join("pki"))?;
    let (acert, akey) = pki.issue(
        "agent",
        &["localhost".into(), "127.0.0.1".into()],
        Usage::Server,
    )?;
    let (bcert, bkey) = pki.issue("broker-client", &["tessera-broker".into()], Usage::Client)?;
    let lib_ds = tessera_storage::Datastore::new(&lib)?;
    tessera_storage::ops::create(
        &lib_ds,
        &lib.join("gold.qcow2"),
        1 << 30,
        tessera_storage::Format::Qcow2,
        65536,
    )?;
    std::fs::write(
        lib.join("tiny.elf"),
        tessera_vmm::tiny_guest::milestones_then_idle(&[0x10]),
    )?;

    let agent_cfg = AgentConfig {
        name: Some("bench-host".into()),
        listen: "127.0.0.1:0".into(),
        state_dir: dir.join("agent"),
        vmm: Some(repo.join("target/release/tessera-vmm")),
        datastores: vec![DatastoreConfig {
            name: "ds1".into(),
            path: ds.clone(),
        }],
        tls: Some(TlsConfig {
            cert: acert,
            key: akey,
            client_ca: pki.ca_path(),
        }),
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<SocketAddr>();
    tokio::spawn(async move {
        if let Err(e) = tessera_agent::serve(agent_cfg, Some(tx)).await {
            eprintln!("agent: {e}");
        }
    });
    let agent_url = format!("https://127.0.0.1:{}", rx.await?.port());
    let http = tls_client(&pki.ca_path(), &bcert, &bkey)?;
    let store = Store::open(&format!("sqlite://{}", dir.join("broker.db").display())).await?;
    let host = store.register_host("bench-host", &agent_url).await?;
    let cap = AgentClient::new(&agent_url, http.clone()).host().await?;
    store.heartbeat(&host, &Capacity::from(&cap)).await?;
    store
        .create_image(
            "gold",
            lib.join("gold.qcow2").to_str().unwrap_or(""),
            1 << 30,
            lib.join("tiny.elf").to_str(),
            None,
            None,
        )
        .await?;
    let pool = store
        .create_pool(&PoolSpec {
            name: "bench".into(),
            display_name: "Bench".into(),
            image: "gold".into(),
            image_version: 1,
            assignment: Assignment::Dedicated,
            clone_kind: CloneKind::Linked,
            naming: "b{n:05}".into(),
            min_desktops: n as i64,
            max_desktops: n as i64,
            spare_desktops: 0,
            power_policy: PowerPolicy::OffAfterLogoff,
            refresh_on_logoff: false,
            vcpus: 1,
            memory_mib: 64,
        })
        .await?;

    // 1. Provisioning.
    let mut reconciler = Reconciler::new(store.clone(), http.clone());
    let t = Instant::now();
    loop {
        let r = reconciler.pass().await?;
        if r.failures > 0 {
            bail!("provisioning failures: {r:?}");
        }
        let ready = store
            .desktops_of(&pool.id)
            .await?
            .iter()
            .filter(|d| d.state == DesktopState::Ready)
            .count();
        if ready >= n {
            break;
        }
    }
    let prov = t.elapsed();
    println!("| provisioning {n} linked-clone desktops (clone + VM definition, to ready) | {:.1} s | {:.0} desktops/s |", prov.as_secs_f64(), n as f64 / prov.as_secs_f64());

    // 2. The storm: N local users, each entitled, over `connections` concurrent connections.
    let password = "Storm!Passw0rd";
    let mut creators = Vec::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(n.div_ceil(8).max(1)) {
        let (s, chunk) = (store.clone(), chunk.to_vec());
        creators.push(tokio::spawn(async move {
            for i in chunk {
                s.create_local_account(&format!("u{i:05}"), "", password, false)
                    .await?;
            }
            Ok::<_, tessera_broker::store::StoreError>(())
        }));
    }
    for c in creators {
        c.await??;
    }
    for i in 0..n {
        store
            .entitle(
                &pool.id,
                &Principal::Local {
                    name: format!("u{i:05}"),
                },
            )
            .await?;
    }
    let state = Arc::new(tessera_broker::api::AppState::new(
        Logon::new(store.clone(), None, http.clone()),
        store.clone(),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let app =
        tessera_broker::api::router(state).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let t = Instant::now();
    let mut workers = Vec::new();
    for w in 0..connections {
        let base = base.clone();
        workers.push(tokio::spawn(async move {
            // One client per worker: its own connection, kept alive across its logons.
            let client = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .build()?;
            let mut lat = Vec::new();
            let mut failures = 0usize;
            let mut i = w;
            while i < n {
                let t = Instant::now();
                let ok = client
                    .post(format!("{base}/api/v1/sessions"))
                    .json(&serde_json::json!({"user": format!("u{i:05}"), "password": password}))
                    .send()
                    .await
                    .map(|r| r.status().as_u16() == 201)
                    .unwrap_or(false);
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
                if !ok {
                    failures += 1;
                }
                i += connections;
            }
            Ok::<_, reqwest::Error>((lat, failures))
        }));
    }
    let mut lat = Vec::new();
    let mut failures = 0;
    for w in workers {
        let (l, f) = w.await?.context("client")?;
        lat.extend(l);
        failures += f;
    }
    let wall = t.elapsed();
    let p50 = percentile(&mut lat, 0.5);
    let p99 = percentile(&mut lat, 0.99);
    // Where the time goes: the phases each logon recorded in the event log.
    let events = store.events(Some("logon"), n as i64).await?;
    let mut phases: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    for e in &events {
        for part in e.detail.split_whitespace() {
            if let Some((k, v)) = part.split_once('=') {
                if let Ok(ms) = v.trim_end_matches("ms").parse::<f64>() {
                    phases.entry(k.to_string()).or_default().push(ms);
                }
            }
        }
    }
    let breakdown: Vec<String> = ["authenticate", "entitle", "assign", "power", "ticket"]
        .iter()
        .map(|k| {
            let mut v = phases.remove(*k).unwrap_or_default();
            format!("{k} {:.1}", percentile(&mut v, 0.5))
        })
        .collect();
    println!("phase medians (ms): {}", breakdown.join(", "));
    println!(
        "| logon storm: {n} local users over {connections} connections (argon2id, assign, VM start, ticket) | {:.1} s | {:.0} logons/s, p50 {p50:.1} ms, p99 {p99:.1} ms, {failures} failures |",
        wall.as_secs_f64(),
        n as f64 / wall.as_secs_f64()
    );
    Ok(())
}
