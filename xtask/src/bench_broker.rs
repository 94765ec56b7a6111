//! Broker benchmarks: provisioning N linked-clone desktops in a pool (time to ready: clone and
//! VM definition on the agent, no guest boot) against libvirt making the same N (its peer, see
//! peer_libvirt), in rounds with the side that goes first alternating; then a logon storm of N
//! local users over 50 concurrent connections to the client API (each logon: argon2id check,
//! entitlement, assignment in one transaction, power-on of the desktop's VM through the agent,
//! session and ticket), which has no peer. Everything real: an in-process agent with mutual TLS
//! spawning release tessera-vmm processes running a tiny guest on /dev/kvm, SQLite, the
//! broker's own API router.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tessera_agent::config::{AgentConfig, DatastoreConfig, TlsConfig};
use tessera_broker::agent_client::{tls_client, AgentClient};
use tessera_broker::logon::Logon;
use tessera_broker::pki::{Pki, Usage};
use tessera_broker::reconcile::Reconciler;
use tessera_broker::store::desktops::DesktopState;
use tessera_broker::store::hosts::Capacity;
use tessera_broker::store::pools::{Assignment, CloneKind, Pool, PoolSpec, PowerPolicy, Principal};
use tessera_broker::store::Store;

use crate::peer_libvirt::{Job, Libvirt};
use crate::stats::{check_rounds, median, ratio, rotated};

/// Each bench desktop's memory, on both sides of the provisioning comparison.
const DESKTOP_MIB: i64 = 64;

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[(((v.len() - 1) as f64) * p).round() as usize]
}

/// Runs provisioning (`rounds` rounds against libvirt) and the storms with `n` desktops and
/// users; prints the table rows.
pub fn run(repo: &Path, n: usize, connections: usize, rounds: usize) -> Result<()> {
    check_rounds(rounds)?;
    crate::build_release(repo, &["tessera-vmm", "tessera-display"])?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let dir = std::env::temp_dir().join(format!("tessera-bench-broker-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let ldap_dir = dir.join("ldap");
    let script = repo.join("tests/directory/ldap-env.sh");
    let slapd = if Path::new("/usr/sbin/slapd").exists() {
        let st = Command::new("bash")
            .arg(&script)
            .arg("up")
            .arg(&ldap_dir)
            .status()?;
        if !st.success() {
            bail!("ldap-env.sh up failed (another directory environment up? ldap-env.sh down DIR)");
        }
        Some(crate::bench_directory::env_file(&ldap_dir)?)
    } else {
        eprintln!("*** SKIP the slapd storm: slapd is not installed ***");
        None
    };
    let result = rt.block_on(measure(repo, &dir, n, connections, rounds, slapd));
    kill_vms(&dir);
    let _ = Command::new("bash")
        .arg(&script)
        .arg("down")
        .arg(&ldap_dir)
        .status();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Stops every VMM the run started (they outlive the agent by design).
fn kill_vms(dir: &Path) {
    for e in std::fs::read_dir(dir.join("agent/vms"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(pid) = std::fs::read_to_string(e.path().join("pid")) {
            // Most have stopped at their logoff already: no word about those.
            let _ = Command::new("kill")
                .arg("-9")
                .arg(pid.trim())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

async fn measure(
    repo: &Path,
    dir: &Path,
    n: usize,
    connections: usize,
    rounds: usize,
    slapd: Option<HashMap<String, String>>,
) -> Result<()> {
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
    let (base, kernel) = (lib.join("gold.qcow2"), lib.join("tiny.elf"));
    tessera_storage::ops::create(
        &lib_ds,
        &base,
        1 << 30,
        tessera_storage::Format::Qcow2,
        65536,
    )?;
    std::fs::write(
        &kernel,
        tessera_vmm::tiny_guest::milestones_then_idle(&[0x10]),
    )?;

    let agent_cfg = AgentConfig {
        name: Some("bench-host".into()),
        library: lib.clone(),
        console_log_max_mib: 16,
        guest_shutdown_timeout_secs: 60,
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
        // A port per running desktop: the storm runs up to a thousand.
        display: tessera_agent::display::DisplayConfig {
            first_port: 30_000,
            ports: 2_000,
            ..Default::default()
        },
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
    let agent = AgentClient::new(&agent_url, http.clone());
    let cap = agent.host().await?;
    store.heartbeat(&host, &Capacity::from(&cap)).await?;
    store
        .create_image(
            "gold",
            base.to_str().unwrap_or(""),
            1 << 30,
            kernel.to_str(),
            None,
            None,
        )
        .await?;

    // 1. Provisioning: a fresh pool per round for ours, a fresh libvirt pool for the peer.
    let libvirt = tokio::task::block_in_place(|| Libvirt::open(&dir.join("libvirt")));
    let job = Job {
        base: &base,
        capacity: 1 << 30,
        kernel: &kernel,
        memory_mib: DESKTOP_MIB,
        n,
    };
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let mut last = None;
    for round in 0..rounds {
        let mut times = Vec::new();
        for side in rotated(2, round) {
            if side == 0 {
                let r = round + 1;
                let spec = bench_pool(&format!("bench-r{r}"), &format!("b{r}-{{n:05}}"), n);
                let (pool, took) = provision(&store, &http, &spec).await?;
                times.push(format!("ours {:.1} s", took.as_secs_f64()));
                ours.push(took.as_secs_f64());
                // The storms need one provisioned pool: the last round's. Earlier rounds'
                // desktops go, untimed, so every round starts from the same datastore.
                if r == rounds {
                    last = Some(pool);
                } else {
                    discard(&store, &agent, &pool).await?;
                }
            } else if let Some(lv) = &libvirt {
                let took = tokio::task::block_in_place(|| lv.provision(&job, round + 1))?;
                times.push(format!("libvirt {:.1} s", took.as_secs_f64()));
                theirs.push(took.as_secs_f64());
            }
        }
        println!(
            "provisioning round {}/{rounds}: {}",
            round + 1,
            times.join(", ")
        );
    }
    // Stops the libvirtd this run started, if it did, before the storms.
    tokio::task::block_in_place(|| drop(libvirt));
    let peer = if theirs.is_empty() {
        "skipped".to_string()
    } else {
        format!("{:.1} s", median(&theirs))
    };
    println!("| measurement ({rounds} rounds, order alternating, medians) | ours | libvirt | ratio ours / libvirt (lower is better) |");
    println!("|---|---|---|---|");
    println!(
        "| provisioning {n} linked-clone desktops (ours: reconciler to ready; libvirt: vol-create-as + define; clone + VM definition, no guest boot) | {:.1} s | {peer} | {} |",
        median(&ours),
        ratio(median(&ours), median(&theirs))
    );
    println!();
    let pool = last.context("no provisioning round ran")?;

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
    storm(
        &store,
        Logon::new(store.clone(), None, http.clone()),
        ("u", ""),
        password,
        n,
        connections,
        "local users (argon2id, assign, VM start, ticket)",
    )
    .await?;
    if let Some(env) = slapd {
        kill_vms(dir);
        ldap_storm(&store, &http, &env, n, connections).await?;
    }
    Ok(())
}

/// A dedicated pool of `n` tiny desktops (64 MiB), powered off after logoff.
fn bench_pool(name: &str, naming: &str, n: usize) -> PoolSpec {
    PoolSpec {
        name: name.into(),
        display_name: name.into(),
        image: "gold".into(),
        image_version: 1,
        assignment: Assignment::Dedicated,
        clone_kind: CloneKind::Linked,
        naming: naming.into(),
        min_desktops: n as i64,
        max_desktops: n as i64,
        spare_desktops: 0,
        power_policy: PowerPolicy::OffAfterLogoff,
        refresh_on_logoff: false,
        vcpus: 1,
        memory_mib: DESKTOP_MIB,
    }
}

/// Creates the pool `spec` and runs the reconciler on it until all its desktops are ready; the
/// pool and the time from the first pass to ready.
async fn provision(
    store: &Store,
    http: &reqwest::Client,
    spec: &PoolSpec,
) -> Result<(Pool, Duration)> {
    let pool = store.create_pool(spec).await?;
    let mut reconciler = Reconciler::new(store.clone(), http.clone());
    let t = Instant::now();
    loop {
        // This pool alone: emptied pools of earlier rounds must stay empty.
        let r = reconciler.reconcile_pool(&pool).await?;
        if r.failures > 0 {
            bail!("provisioning failures in pool {}: {r:?}", spec.name);
        }
        let ready = store
            .desktops_of(&pool.id)
            .await?
            .iter()
            .filter(|d| d.state == DesktopState::Ready)
            .count();
        if ready as i64 >= spec.min_desktops {
            return Ok((pool, t.elapsed()));
        }
    }
}

/// Removes a round's desktops (VM definition, disk, row), leaving its pool empty.
async fn discard(store: &Store, agent: &AgentClient, pool: &Pool) -> Result<()> {
    for d in store.desktops_of(&pool.id).await? {
        let d = store.transition(&d, DesktopState::Deleting).await?;
        agent.delete_vm(&d.name).await?;
        if let Some((ds, file)) = d.disk.as_deref().and_then(|p| p.split_once('/')) {
            agent.delete_disk(ds, file).await?;
        }
        store.forget_desktop(&d).await?;
    }
    Ok(())
}

/// A storm of `n` logons as `{prefix}00000`.. with `password`, `connections` at a time, through
/// the client API over HTTP; prints the table row and the phase medians.
async fn storm(
    store: &Store,
    logon: Logon,
    (prefix, suffix): (&str, &str),
    password: &'static str,
    n: usize,
    connections: usize,
    label: &str,
) -> Result<()> {
    let state = Arc::new(tessera_broker::api::AppState::new(logon, store.clone()));
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
        let (base, prefix, suffix) = (base.clone(), prefix.to_string(), suffix.to_string());
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
                let outcome = client
                    .post(format!("{base}/api/v1/sessions"))
                    .json(&serde_json::json!({"user": format!("{prefix}{i:05}{suffix}"), "password": password}))
                    .send()
                    .await;
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
                let why = match outcome {
                    Ok(r) if r.status().as_u16() == 201 => None,
                    Ok(r) => Some(format!("{}: {}", r.status(), r.text().await.unwrap_or_default())),
                    Err(e) => Some(e.to_string()),
                };
                if let Some(why) = why {
                    if failures < 2 {
                        eprintln!("logon of {prefix}{i:05} failed: {why}");
                    }
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
    let events: Vec<_> = store
        .events(Some("logon"), 2 * n as i64)
        .await?
        .into_iter()
        .filter(|e| e.actor.starts_with(prefix))
        .collect();
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
        "| logon storm: {n} {label} over {connections} connections | {:.1} s | {:.0} logons/s, p50 {p50:.1} ms, p99 {p99:.1} ms, {failures} failures |",
        wall.as_secs_f64(),
        n as f64 / wall.as_secs_f64()
    );
    Ok(())
}

/// The storm against slapd: `n` directory users in a group entitled to a pool of `n` desktops;
/// they sign in as `s00000@example.org`, so no local-account check runs first.
async fn ldap_storm(
    store: &Store,
    http: &reqwest::Client,
    env: &HashMap<String, String>,
    n: usize,
    connections: usize,
) -> Result<()> {
    let g = |k: &str| env.get(k).cloned().with_context(|| format!("{k} missing"));
    let base = g("OL_BASE")?;
    let mut ldif = String::new();
    for i in 0..n {
        ldif.push_str(&format!(
            "dn: uid=s{i:05},ou=people,{base}\nobjectClass: inetOrgPerson\nuid: s{i:05}\ncn: Storm {i}\nsn: Storm\nuserPassword: Storm!Passw0rd\n\n"
        ));
    }
    ldif.push_str(&format!(
        "dn: cn=vdi-storm,ou=groups,{base}\nobjectClass: groupOfNames\ncn: vdi-storm\n"
    ));
    for i in 0..n {
        ldif.push_str(&format!("member: uid=s{i:05},ou=people,{base}\n"));
    }
    let file = std::env::temp_dir().join(format!("tessera-storm-{}.ldif", std::process::id()));
    std::fs::write(&file, ldif)?;
    let st = Command::new("ldapadd")
        .args([
            "-x",
            "-H",
            &g("OL_URL")?,
            "-D",
            &g("OL_ADMIN_DN")?,
            "-w",
            &g("OL_ADMIN_PW")?,
            "-f",
        ])
        .arg(&file)
        .env("LDAPTLS_CACERT", g("LDAP_TEST_CA")?)
        .stdout(std::process::Stdio::null())
        .status()?;
    let _ = std::fs::remove_file(&file);
    if !st.success() {
        bail!("seeding slapd failed");
    }
    let (pool, _) = provision(store, http, &bench_pool("bench-ldap", "l{n:05}", n)).await?;
    let group = format!("cn=vdi-storm,ou=groups,{base}");
    store
        .entitle(
            &pool.id,
            &Principal::Group {
                directory: "example".into(),
                dn: group,
            },
        )
        .await?;
    let toml = format!(
        "[[directory]]\nname = \"example\"\nkind = \"ldap\"\nurls = [\"{}\"]\nca_file = \"{}\"\n\
         service_dn = \"{}\"\nservice_password = '{}'\nuser_base = \"{base}\"\ndomains = [\"example.org\"]\n",
        g("OL_URL")?,
        g("LDAP_TEST_CA")?,
        g("OL_SVC_DN")?,
        g("OL_SVC_PW")?
    );
    let dirs = Arc::new(tessera_directory::Directories::new(
        tessera_directory::config::parse(&toml)?,
    )?);
    storm(
        store,
        Logon::new(store.clone(), Some(dirs), http.clone()),
        ("s", "@example.org"),
        "Storm!Passw0rd",
        n,
        connections,
        "slapd users (LDAPS bind, nested memberOf, assign, VM start, ticket)",
    )
    .await
}
