//! What the broker's end-to-end tests share: a CA from the broker's own code, an agent
//! in-process with mutual TLS running real tessera-vmm processes (a tiny guest on /dev/kvm),
//! a store, a reconciler, and a golden image.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use tessera_agent::config::{AgentConfig, DatastoreConfig, TlsConfig};
use tessera_broker::agent_client::{tls_client, AgentClient};
use tessera_broker::pki::{Pki, Usage};
use tessera_broker::reconcile::Reconciler;
use tessera_broker::store::hosts::Capacity;
use tessera_broker::store::pools::{Assignment, CloneKind, PoolSpec, PowerPolicy};
use tessera_broker::store::Store;

pub fn kvm() -> bool {
    let ok = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if !ok {
        if std::env::var("TESSERA_REQUIRE_KVM").as_deref() == Ok("1") {
            panic!("/dev/kvm is required (TESSERA_REQUIRE_KVM=1)");
        }
        eprintln!("\n*** SKIP reconciler tests: /dev/kvm unusable; they did NOT run ***\n");
    }
    ok
}

/// A CA, the agent's server certificate and the broker's client certificate, as PEM files,
/// made by the broker's own CA code.
pub fn pki(dir: &Path) {
    let p = Pki::open(dir).unwrap();
    p.issue(
        "agent",
        &["localhost".into(), "127.0.0.1".into()],
        Usage::Server,
    )
    .unwrap();
    p.issue("broker", &["tessera-broker".into()], Usage::Client)
        .unwrap();
}

pub fn vmm_binary() -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let bin = target.join("debug/tessera-vmm");
    if !bin.exists() || !bin.with_file_name("tessera-display").exists() {
        let st = Command::new(env!("CARGO"))
            .args(["build", "-p", "tessera-vmm", "-p", "tessera-display"])
            .status()
            .unwrap();
        assert!(st.success());
    }
    bin
}

pub struct Rig {
    pub dir: PathBuf,
    pub store: Store,
    pub agent: AgentClient,
    pub reconciler: Reconciler,
    pub ds: PathBuf,
    pub http: reqwest::Client,
}

impl Drop for Rig {
    fn drop(&mut self) {
        // Stop any VMM the test left running, then remove the files.
        for e in std::fs::read_dir(self.dir.join("state/vms"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Ok(pid) = std::fs::read_to_string(e.path().join("pid")) {
                let _ = Command::new("kill").arg("-9").arg(pid.trim()).status();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub async fn rig(name: &str) -> Rig {
    let dir = std::env::temp_dir().join(format!("tessera-reconcile-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (lib, ds) = (dir.join("library"), dir.join("ds1"));
    std::fs::create_dir_all(&lib).unwrap();
    std::fs::create_dir_all(&ds).unwrap();
    pki(&dir);
    // The golden image: a base disk and a tiny guest as its "kernel".
    let lib_ds = tessera_storage::Datastore::new(&lib).unwrap();
    tessera_storage::ops::create(
        &lib_ds,
        &lib.join("gold.qcow2"),
        64 << 20,
        tessera_storage::Format::Qcow2,
        65536,
    )
    .unwrap();
    std::fs::write(
        lib.join("tiny.elf"),
        tessera_vmm::tiny_guest::milestones_then_idle(&[0x10]),
    )
    .unwrap();

    let url = start_agent(
        &dir.join("state"),
        &ds,
        (&dir.join("agent.pem"), &dir.join("agent.key")),
        &dir.join("ca.pem"),
    )
    .await;

    let store = Store::open(&format!("sqlite://{}", dir.join("broker.db").display()))
        .await
        .unwrap();
    let http = tls_client(
        &dir.join("ca.pem"),
        &dir.join("broker.pem"),
        &dir.join("broker.key"),
    )
    .unwrap();
    let agent = AgentClient::new(&url, http.clone());
    // The agent registers and reports, as its heartbeat will.
    let host = store.register_host("host-1", &url).await.unwrap();
    let cap = agent.host().await.unwrap();
    store.heartbeat(&host, &Capacity::from(&cap)).await.unwrap();
    store
        .create_image(
            "gold",
            lib.join("gold.qcow2").to_str().unwrap(),
            64 << 20,
            Some(lib.join("tiny.elf").to_str().unwrap()),
            None,
            None,
        )
        .await
        .unwrap();
    Rig {
        reconciler: Reconciler::new(store.clone(), http.clone()),
        http,
        dir,
        store,
        agent,
        ds,
    }
}

pub fn spec() -> PoolSpec {
    PoolSpec {
        name: "fin".into(),
        display_name: "Finance".into(),
        image: "gold".into(),
        image_version: 1,
        assignment: Assignment::Floating,
        clone_kind: CloneKind::Linked,
        naming: "fin-{n:03}".into(),
        min_desktops: 2,
        max_desktops: 3,
        spare_desktops: 1,
        power_policy: PowerPolicy::AlwaysOn,
        refresh_on_logoff: true,
        vcpus: 1,
        memory_mib: 64,
    }
}

/// The Samba AD test domain from tests/directory/ldap-env.sh (started here unless AD_URL and
/// friends are set): its env file as a map, or None with a loud SKIP (a failure when
/// TESSERA_REQUIRE_DIRECTORY=1).
pub fn ldap_env(test: &str) -> Option<std::collections::HashMap<String, String>> {
    let keys = [
        "AD_URL",
        "AD_BASE",
        "LDAP_TEST_CA",
        "AD_SVC_DN",
        "AD_SVC_PW",
    ];
    if keys.iter().all(|k| std::env::var(k).is_ok()) {
        return Some(std::env::vars().collect());
    }
    if !Path::new("/usr/sbin/samba").exists() {
        if std::env::var("TESSERA_REQUIRE_DIRECTORY").as_deref() == Ok("1") {
            panic!("{test}: Samba is required (TESSERA_REQUIRE_DIRECTORY=1)");
        }
        eprintln!("\n*** SKIP {test}: samba is not installed; this test did NOT run ***\n");
        return None;
    }
    let dir = std::env::var("TESSERA_LDAP_DIR").unwrap_or_else(|_| "/tmp/tessera-ldap".into());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/directory/ldap-env.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("up")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ldap-env.sh up: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(Path::new(&dir).join("env")).unwrap();
    let mut m = std::collections::HashMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("export ") else {
            continue;
        };
        for w in rest.split_whitespace() {
            if let Some((k, v)) = w.split_once('=') {
                m.insert(k.to_string(), v.trim_matches('\'').to_string());
            }
        }
    }
    Some(m)
}

/// The Samba test domain (`ldap_env`'s map) as the broker's one directory, "vdi", serving the
/// domains VDI and vdi.test.
pub fn ad_directories(
    env: &std::collections::HashMap<String, String>,
) -> tessera_directory::Directories {
    let g = |k: &str| env.get(k).cloned().unwrap_or_else(|| panic!("{k} missing"));
    let toml = format!(
        "[[directory]]\nname = \"vdi\"\nkind = \"ad\"\nurls = [\"{}\"]\nca_file = \"{}\"\n\
         service_dn = \"{}\"\nservice_password = '{}'\nuser_base = \"OU=VDI,{}\"\n\
         domains = [\"VDI\", \"vdi.test\"]\n",
        g("AD_URL"),
        g("LDAP_TEST_CA"),
        g("AD_SVC_DN"),
        g("AD_SVC_PW"),
        g("AD_BASE")
    );
    tessera_directory::Directories::new(tessera_directory::config::parse(&toml).unwrap()).unwrap()
}

/// A display port range of its own for each agent this process runs: the tests of a binary
/// run at once, and two agents probing the same range can both find a port free and hand it
/// to two displays, one of which then cannot bind it.
fn own_display_ports() -> tessera_agent::display::DisplayConfig {
    static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tessera_agent::display::DisplayConfig {
        first_port: 5900 + 40 * (n % 50),
        ports: 40,
        ..Default::default()
    }
}

/// Runs a tessera-agent in this process as host-1 (state in `state`, one datastore `ds1` at
/// `ds`, its image library the `library` beside it, mutual TLS with `cert_key` and clients
/// signed by `ca`); returns its URL.
pub async fn start_agent(state: &Path, ds: &Path, cert_key: (&Path, &Path), ca: &Path) -> String {
    let cfg = AgentConfig {
        name: Some("host-1".into()),
        library: ds.with_file_name("library"),
        console_log_max_mib: 16,
        guest_shutdown_timeout_secs: 60,
        listen: "127.0.0.1:0".into(),
        state_dir: state.to_path_buf(),
        vmm: Some(vmm_binary()),
        datastores: vec![DatastoreConfig {
            name: "ds1".into(),
            path: ds.to_path_buf(),
        }],
        tls: Some(TlsConfig {
            cert: cert_key.0.to_path_buf(),
            key: cert_key.1.to_path_buf(),
            client_ca: ca.to_path_buf(),
        }),
        display: own_display_ports(),
    };
    let (tx, rx) = tokio::sync::oneshot::channel::<SocketAddr>();
    tokio::spawn(async move { tessera_agent::serve(cfg, Some(tx)).await.unwrap() });
    format!("https://127.0.0.1:{}", rx.await.unwrap().port())
}

/// Serves the broker's API (client and admin routes) over plain HTTP on a free port; its
/// base URL.
pub async fn serve_api(logon: tessera_broker::logon::Logon, store: Store) -> String {
    let state = std::sync::Arc::new(tessera_broker::api::AppState::new(logon, store));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = tessera_broker::api::router(state)
        .into_make_service_with_connect_info::<std::net::SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

/// The text of the broker's /metrics at `base`.
pub async fn metrics(http: &reqwest::Client, base: &str) -> String {
    http.get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// A value of the broker's /metrics at `base`: the series `name` (with its labels, if any).
pub async fn metric(http: &reqwest::Client, base: &str, name: &str) -> u64 {
    metrics(http, base)
        .await
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} in /metrics"))
}

/// Serves the broker's API over HTTPS on a free port, as `tessera-broker serve` does, with a
/// certificate for localhost and 127.0.0.1 from the CA in `dir` (`pki`); its base URL.
pub async fn serve_api_tls(
    logon: tessera_broker::logon::Logon,
    store: Store,
    dir: &Path,
) -> String {
    let (cert, key) = Pki::open(dir)
        .unwrap()
        .issue(
            "api",
            &["localhost".into(), "127.0.0.1".into()],
            Usage::Server,
        )
        .unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
        .await
        .unwrap();
    let state = std::sync::Arc::new(tessera_broker::api::AppState::new(logon, store));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("https://{}", listener.local_addr().unwrap());
    let app = tessera_broker::api::router(state)
        .into_make_service_with_connect_info::<std::net::SocketAddr>();
    tokio::spawn(async move {
        axum_server::from_tcp_rustls(listener, tls)
            .serve(app)
            .await
            .unwrap()
    });
    base
}

/// The PostgreSQL server URL, or None with a loud SKIP (a failure when
/// TESSERA_REQUIRE_POSTGRES=1).
fn postgres() -> Option<String> {
    static URL: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let url = URL
        .get_or_init(|| {
            if let Ok(u) = std::env::var("TESSERA_TEST_POSTGRES") {
                return Some(u);
            }
            if !Path::new("/usr/lib/postgresql").exists() {
                return None;
            }
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/broker/pg-env.sh");
            // The script's default directory: a fresh cluster replaces what a previous run left.
            let out = Command::new("bash").arg(&script).arg("up").output().ok()?;
            if !out.status.success() {
                panic!(
                    "pg-env.sh up failed:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Some("postgres://tessera@127.0.0.1:55432/tessera".to_string())
        })
        .clone();
    if url.is_none() {
        if std::env::var("TESSERA_REQUIRE_POSTGRES").as_deref() == Ok("1") {
            panic!("PostgreSQL is required (TESSERA_REQUIRE_POSTGRES=1) but not available");
        }
        eprintln!("\n*** SKIP the PostgreSQL half of the store tests: postgresql is not installed (tests/broker/pg-env.sh install); it did NOT run ***\n");
    }
    url
}

/// A new, empty PostgreSQL database of its own (its URL), or None with a loud SKIP.
pub async fn postgres_database() -> Option<String> {
    let url = postgres()?;
    let db = format!("t_{}", tessera_broker::store::new_id());
    let admin = Store::open(&url).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(admin.pool())
        .await
        .unwrap();
    Some(format!("{}/{db}", url.rsplit_once('/').unwrap().0))
}
