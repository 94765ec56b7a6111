//! The broker killed with SIGKILL at random moments while it provisions a pool, again and
//! again; then one last broker converges. Afterwards: exactly the pool's minimum of desktops,
//! each running on the agent, names unique, and no disk or VM on the host that no desktop owns.
//! Run on SQLite and on PostgreSQL.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{postgres_database, start_agent};
use tessera_broker::agent_client::{tls_client, AgentClient};
use tessera_broker::store::desktops::DesktopState;
use tessera_broker::store::Store;

const BROKER: &str = env!("CARGO_BIN_EXE_tessera-broker");
const DESKTOPS: usize = 30;
/// Kills that must land while the pool is still incomplete.
const KILLS: usize = 8;

fn broker(cfg: &Path, args: &[&str]) -> String {
    let out = Command::new(BROKER)
        .arg("-c")
        .arg(cfg)
        .args(args)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "tessera-broker {args:?}: {text}");
    text
}

/// A broker process, killed when dropped (so a failing assertion leaves none behind).
struct Broker(Child);

impl Broker {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

fn serve(cfg: &Path, log: &Path) -> Broker {
    Broker(
        Command::new(BROKER)
            .arg("-c")
            .arg(cfg)
            .arg("serve")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
    )
}

/// A cheap random number from the clock (the kill moments need spread, not quality).
fn jitter(max_ms: u64) -> Duration {
    let n = Instant::now().elapsed().subsec_nanos() as u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() as u64);
    Duration::from_millis(n.wrapping_mul(2_654_435_761) % max_ms)
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_during_provisioning_leaves_no_orphan_and_no_duplicate() {
    sigkill_during_provisioning(None).await;
}

/// The same with the broker binary on PostgreSQL (`database = "postgres://..."`).
#[tokio::test(flavor = "multi_thread")]
async fn sigkill_during_provisioning_on_postgresql() {
    if let Some(url) = postgres_database().await {
        sigkill_during_provisioning(Some(url)).await;
    }
}

async fn sigkill_during_provisioning(database: Option<String>) {
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        if std::env::var("TESSERA_REQUIRE_KVM").as_deref() == Ok("1") {
            panic!("/dev/kvm is required (TESSERA_REQUIRE_KVM=1)");
        }
        eprintln!("\n*** SKIP sigkill_during_provisioning: /dev/kvm unusable; this test did NOT run ***\n");
        return;
    }
    let engine = if database.is_some() { "pg" } else { "sqlite" };
    let dir = std::env::temp_dir().join(format!("tessera-crash-{engine}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (lib, ds) = (dir.join("library"), dir.join("ds1"));
    std::fs::create_dir_all(&lib).unwrap();
    std::fs::create_dir_all(&ds).unwrap();
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

    let cfg = dir.join("broker.toml");
    let database_url =
        database.unwrap_or_else(|| format!("sqlite://{}", dir.join("broker/broker.db").display()));
    std::fs::write(
        &cfg,
        format!(
            "state_dir = \"{}\"\ndatabase = \"{database_url}\"\nlisten = \"127.0.0.1:0\"\n\
             reconcile_interval_secs = 1\n",
            dir.join("broker").display()
        ),
    )
    .unwrap();
    broker(&cfg, &["agent-cert", "host-1", "localhost", "127.0.0.1"]);
    let pki = dir.join("broker/pki/hosts");
    let url = start_agent(
        &dir.join("agent"),
        &ds,
        (&pki.join("host-1.pem"), &pki.join("host-1.key")),
        &pki.join("ca.pem"),
    )
    .await;
    broker(&cfg, &["add-host", "host-1", &url]);
    broker(
        &cfg,
        &[
            "add-image",
            "gold",
            "--disk",
            lib.join("gold.qcow2").to_str().unwrap(),
            "--kernel",
            lib.join("tiny.elf").to_str().unwrap(),
        ],
    );
    let pool = dir.join("pool.toml");
    std::fs::write(
        &pool,
        format!(
            "name = \"crash\"\ndisplay_name = \"Crash\"\nimage = \"gold\"\nimage_version = 1\n\
             assignment = \"floating\"\nclone_kind = \"linked\"\nnaming = \"cr-{{n:02}}\"\n\
             min_desktops = {DESKTOPS}\nmax_desktops = {DESKTOPS}\nspare_desktops = 0\n\
             power_policy = \"always-on\"\nrefresh_on_logoff = true\nvcpus = 1\nmemory_mib = 64\n"
        ),
    )
    .unwrap();
    broker(&cfg, &["add-pool", pool.to_str().unwrap()]);

    let log = dir.join("broker.log");
    let store = Store::open(&database_url).await.unwrap();
    let pool_id = store.pool_by_name("crash").await.unwrap().id;
    // Kill it again and again while the pool is still being built.
    let mut interrupted = 0;
    while interrupted < KILLS {
        let mut b = serve(&cfg, &log);
        tokio::time::sleep(Duration::from_millis(20) + jitter(150)).await;
        b.kill();
        let d = store.desktops_of(&pool_id).await.unwrap();
        let running = d
            .iter()
            .filter(|d| d.state == DesktopState::Running)
            .count();
        eprintln!("kill: {} desktops, {running} running", d.len());
        if running == DESKTOPS {
            break;
        }
        interrupted += 1;
    }
    assert!(
        interrupted >= 4,
        "only {interrupted} kills hit provisioning"
    );
    // One last broker converges.
    let mut b = serve(&cfg, &log);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let d = store.desktops_of(&pool_id).await.unwrap();
        if d.len() == DESKTOPS && d.iter().all(|d| d.state == DesktopState::Running) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "did not converge: {d:?}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    b.kill();

    let desktops = store.desktops_of(&pool_id).await.unwrap();
    let names: std::collections::BTreeSet<String> =
        desktops.iter().map(|d| d.name.clone()).collect();
    assert_eq!(names.len(), DESKTOPS, "names are unique");
    // Every disk in the datastore belongs to a desktop (or is the imported base).
    let disks: Vec<String> = std::fs::read_dir(&ds)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    for disk in &disks {
        let owned = disk.starts_with("base-") || names.contains(disk.trim_end_matches(".qcow2"));
        assert!(owned, "orphan disk {disk} (desktops: {names:?})");
    }
    assert_eq!(disks.len(), DESKTOPS + 1, "{disks:?}");
    // Every VM on the host belongs to a desktop, and runs.
    let http = tls_client(
        &pki.join("ca.pem"),
        &pki.join("broker-client.pem"),
        &pki.join("broker-client.key"),
    )
    .unwrap();
    let agent = AgentClient::new(&url, http);
    let vm_dirs: Vec<String> = std::fs::read_dir(dir.join("agent/vms"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(vm_dirs.len(), DESKTOPS, "{vm_dirs:?}");
    for n in &names {
        assert_eq!(
            agent.vm(n).await.unwrap().map(|v| v.state),
            Some("running".into()),
            "{n}"
        );
    }
    // Stop the VMs (they outlive the agent by design) and clean up.
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
}
