//! Directory benchmark: sign-ins per second and p50/p99 latency at 1, 10 and 50 concurrent
//! logins on the same servers (Samba AD and OpenLDAP from tests/directory/ldap-env.sh), in the
//! same run, a process per sign-in on both sides, so both pay process start and a fresh TLS
//! set-up each time: `tessera-directory auth` (a whole sign-in as the broker does it: service
//! connection and bind, find the user, bind as the user on a fresh TLS connection, nested
//! groups) against `ldapwhoami` (connect, TLS, bind, whoami). Ours does more per process (two
//! connections and binds and one or two searches against one connection and one bind), so the
//! ratios lean towards the peer. ROUNDS rounds, the side that goes first alternating.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::stats::{median, ratio, rotated};

/// Rounds per row (main has no --runs for this benchmark): the fewest the benchmark rule allows.
const ROUNDS: usize = crate::stats::MIN_ROUNDS;
/// The seeded user both sides sign in as.
const USER: &str = "alice";
const PASSWORD: &str = "Al1ce!Passw0rd";

/// Every round's latencies (ms) and each round's sign-ins per second, for one side and row.
#[derive(Default)]
struct Samples {
    latencies: Vec<f64>,
    rates: Vec<f64>,
}

impl Samples {
    fn add(&mut self, latencies: Vec<f64>, wall_secs: f64) {
        self.rates.push(latencies.len() as f64 / wall_secs);
        self.latencies.extend(latencies);
    }
    /// The median round's rate.
    fn per_second(&self) -> f64 {
        median(&self.rates)
    }
    /// Over the latencies of all rounds.
    fn percentile(&self, p: f64) -> f64 {
        let mut v = self.latencies.clone();
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            return f64::NAN;
        }
        let i = ((v.len() as f64 - 1.0) * p).round() as usize;
        v[i.min(v.len() - 1)]
    }
}

/// The variables of ldap-env.sh's `DIR/env`.
pub fn env_file(dir: &Path) -> Result<HashMap<String, String>> {
    let text = std::fs::read_to_string(dir.join("env"))?;
    let mut m = HashMap::new();
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
    Ok(m)
}

/// One side's sign-in, as a process.
enum Side<'a> {
    /// `tessera-directory -c CONFIG auth --user alice`, the password on stdin.
    Ours { bin: &'a Path, config: &'a Path },
    /// `ldapwhoami -x -H URL -D DN -w PASSWORD`, the CA in LDAPTLS_CACERT.
    Whoami {
        url: &'a str,
        dn: &'a str,
        ca: &'a str,
    },
}

impl Side<'_> {
    /// Spawns the process, hands it the password where it reads one, and waits for its exit.
    fn spawn(&self) -> Result<Output> {
        let mut cmd = match self {
            Side::Ours { bin, config } => {
                let mut c = Command::new(bin);
                c.arg("-c").arg(config).args(["auth", "--user", USER]);
                c
            }
            Side::Whoami { url, dn, ca } => {
                let mut c = Command::new("ldapwhoami");
                c.args(["-x", "-H", url, "-D", dn, "-w", PASSWORD])
                    .env("LDAPTLS_CACERT", ca);
                c
            }
        };
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run {cmd:?}"))?;
        if let (Side::Ours { .. }, Some(mut stdin)) = (self, child.stdin.take()) {
            // A process that failed before reading closes the pipe: its exit status and
            // stderr, checked by the caller, say why, better than this write's EPIPE.
            let _ = stdin.write_all(format!("{PASSWORD}\n").as_bytes());
        }
        Ok(child.wait_with_output()?)
    }

    /// One sign-in, spawn to exit. Samba has no WhoAmI extended operation: there ldapwhoami's
    /// bind succeeds and the exop fails with "Protocol error", which still counts as a bind.
    fn sign_in(&self) -> Result<()> {
        let out = self.spawn()?;
        let err = String::from_utf8_lossy(&out.stderr);
        let ok = match self {
            Side::Ours { .. } => out.status.success(),
            Side::Whoami { .. } => {
                out.status.success()
                    || (err.contains("Extended Operation") && !err.contains("ldap_bind"))
            }
        };
        if !ok {
            bail!("sign-in failed: {err}");
        }
        Ok(())
    }
}

/// `total` sign-ins by `side` over `conc` workers, each running its share one after another.
/// Returns the latencies (ms) and the wall-clock seconds.
fn drive(side: &Side, total: usize, conc: usize) -> Result<(Vec<f64>, f64)> {
    let start = Instant::now();
    let results: Vec<Result<Vec<f64>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..conc)
            .map(|w| {
                let n = total / conc + usize::from(w < total % conc);
                s.spawn(move || {
                    let mut lat = Vec::with_capacity(n);
                    for _ in 0..n {
                        let t = Instant::now();
                        side.sign_in()?;
                        lat.push(t.elapsed().as_secs_f64() * 1000.0);
                    }
                    Ok(lat)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| bail!("worker panicked")))
            .collect()
    });
    let wall = start.elapsed().as_secs_f64();
    let mut latencies = Vec::new();
    for r in results {
        latencies.extend(r?);
    }
    Ok((latencies, wall))
}

fn toml(kind: &str, url: &str, ca: &str, svc: &str, pw: &str, base: &str) -> String {
    format!(
        "[[directory]]\nname = \"bench\"\nkind = \"{kind}\"\nurls = [\"{url}\"]\nca_file = \"{ca}\"\n\
         service_dn = \"{svc}\"\nservice_password = '{pw}'\nuser_base = \"{base}\"\n"
    )
}

/// Builds the release `tessera-directory`, brings the servers up, measures, prints the table,
/// takes them down.
pub fn run(repo: &Path, total: usize) -> Result<()> {
    crate::build_release(repo, &["tessera-directory"])?;
    let bin = repo.join("target/release/tessera-directory");
    let script = repo.join("tests/directory/ldap-env.sh");
    let dir = std::env::temp_dir().join("tessera-ldap-bench");
    let st = Command::new("bash")
        .arg(&script)
        .arg("up")
        .arg(&dir)
        .status()?;
    if !st.success() {
        bail!("ldap-env.sh up failed (is another environment up? ldap-env.sh down DIR)");
    }
    let result = measure(&dir, &bin, total);
    let _ = Command::new("bash")
        .arg(&script)
        .arg("down")
        .arg(&dir)
        .status();
    result
}

/// A server to measure: its name in the table, our configuration file for it, and the URL and
/// user DN ldapwhoami binds with.
struct Server {
    name: &'static str,
    config: PathBuf,
    url: String,
    dn: String,
}

/// The two servers of ldap-env.sh, with our configuration for each written into `dir` (which
/// ldap-env.sh down removes).
fn servers(dir: &Path) -> Result<Vec<Server>> {
    let e = env_file(dir)?;
    let g = |k: &str| e.get(k).cloned().with_context(|| format!("{k} missing"));
    let ca = g("LDAP_TEST_CA")?;
    let ad_users = format!("OU=VDI,{}", g("AD_BASE")?);
    let ad = toml(
        "ad",
        &g("AD_URL")?,
        &ca,
        &g("AD_SVC_DN")?,
        &g("AD_SVC_PW")?,
        &ad_users,
    );
    let ol_base = g("OL_BASE")?;
    let ol = toml(
        "ldap",
        &g("OL_URL")?,
        &ca,
        &g("OL_SVC_DN")?,
        &g("OL_SVC_PW")?,
        &ol_base,
    );
    std::fs::write(dir.join("bench-ad.toml"), ad)?;
    std::fs::write(dir.join("bench-ol.toml"), ol)?;
    Ok(vec![
        Server {
            name: "Samba AD (LDAPS)",
            config: dir.join("bench-ad.toml"),
            url: g("AD_URL")?,
            dn: format!("CN=Alice Liddell,OU=People,{ad_users}"),
        },
        Server {
            name: "OpenLDAP slapd (LDAPS)",
            config: dir.join("bench-ol.toml"),
            url: g("OL_URL")?,
            dn: format!("uid=alice,ou=people,{ol_base}"),
        },
    ])
}

/// ROUNDS rounds of `total` sign-ins per side at `conc` workers, the side that goes first
/// alternating; [ours, ldapwhoami].
fn row(sides: &[Side; 2], total: usize, conc: usize) -> Result<[Samples; 2]> {
    let mut s = [Samples::default(), Samples::default()];
    for r in 0..ROUNDS {
        for i in rotated(2, r) {
            let (lat, wall) = drive(&sides[i], total, conc)?;
            s[i].add(lat, wall);
        }
    }
    Ok(s)
}

fn measure(dir: &Path, bin: &Path, total: usize) -> Result<()> {
    let ca = env_file(dir)?
        .get("LDAP_TEST_CA")
        .cloned()
        .context("LDAP_TEST_CA missing")?;
    println!("| server ({ROUNDS} rounds of {total} sign-ins per side, a process each on both sides) | concurrent | tessera-directory auth sign-ins/s | p50 ms | p99 ms | ldapwhoami ops/s | p50 ms | p99 ms | p50 ratio (lower is better) | throughput ratio (higher is better) |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for srv in servers(dir)? {
        let sides = [
            Side::Ours {
                bin,
                config: &srv.config,
            },
            Side::Whoami {
                url: &srv.url,
                dn: &srv.dn,
                ca: &ca,
            },
        ];
        // Warm-up, untimed: the servers' caches and both binaries in the page cache.
        for s in &sides {
            s.sign_in()?;
        }
        for conc in [1usize, 10, 50] {
            eprintln!("[bench-directory] {}, {conc} concurrent", srv.name);
            let [a, b] = row(&sides, total, conc)?;
            println!(
                "| {} | {conc} | {:.0} | {:.1} | {:.1} | {:.0} | {:.1} | {:.1} | {} | {} |",
                srv.name,
                a.per_second(),
                a.percentile(0.5),
                a.percentile(0.99),
                b.per_second(),
                b.percentile(0.5),
                b.percentile(0.99),
                ratio(a.percentile(0.5), b.percentile(0.5)),
                ratio(a.per_second(), b.per_second())
            );
        }
    }
    Ok(())
}
