//! Directory benchmark: sign-ins per second and p50/p99 latency at 1, 10 and 50 concurrent
//! logins, tessera-directory (a whole sign-in: find the user as the service account, bind as
//! the user on a fresh TLS connection, nested groups) against `ldapwhoami` (a process per
//! operation: connect, TLS, bind, whoami) the same number of times, on the same servers, in
//! the same run: Samba AD and OpenLDAP from tests/directory/ldap-env.sh.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tessera_directory::{config, Directories};

use crate::stats::ratio;

struct Run {
    wall: Duration,
    latencies: Vec<f64>,
}

impl Run {
    fn per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.wall.as_secs_f64()
    }
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

async fn ours(
    dirs: Arc<Directories>,
    login: &str,
    pw: &str,
    total: usize,
    conc: usize,
) -> Result<Run> {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..conc {
        let dirs = dirs.clone();
        let (login, pw) = (login.to_string(), pw.to_string());
        let n = total / conc + usize::from(w < total % conc);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(n);
            for _ in 0..n {
                let t = Instant::now();
                dirs.authenticate(&login, &pw).await?;
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            Ok::<_, tessera_directory::DirectoryError>(lat)
        }));
    }
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    Ok(Run {
        wall: start.elapsed(),
        latencies,
    })
}

/// ldapwhoami as a peer. Samba has no WhoAmI extended operation: there the bind succeeds and
/// the exop fails with "Protocol error", which still counts as a completed bind.
fn peer(url: &str, dn: &str, pw: &str, ca: &str, total: usize, conc: usize) -> Result<Run> {
    let start = Instant::now();
    let results: Vec<Result<Vec<f64>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..conc)
            .map(|w| {
                let n = total / conc + usize::from(w < total % conc);
                s.spawn(move || {
                    let mut lat = Vec::with_capacity(n);
                    for _ in 0..n {
                        let t = Instant::now();
                        let out = Command::new("ldapwhoami")
                            .args(["-x", "-H", url, "-D", dn, "-w", pw])
                            .env("LDAPTLS_CACERT", ca)
                            .output()?;
                        let err = String::from_utf8_lossy(&out.stderr);
                        let bound = out.status.success()
                            || (err.contains("Extended Operation") && !err.contains("ldap_bind"));
                        if !bound {
                            bail!("ldapwhoami failed: {err}");
                        }
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
    let mut latencies = Vec::new();
    for r in results {
        latencies.extend(r?);
    }
    Ok(Run {
        wall: start.elapsed(),
        latencies,
    })
}

fn toml(kind: &str, url: &str, ca: &str, svc: &str, pw: &str, base: &str) -> String {
    format!(
        "[[directory]]\nname = \"bench\"\nkind = \"{kind}\"\nurls = [\"{url}\"]\nca_file = \"{ca}\"\n\
         service_dn = \"{svc}\"\nservice_password = '{pw}'\nuser_base = \"{base}\"\n"
    )
}

/// Brings the servers up, measures, prints the table, takes them down.
pub fn run(repo: &Path, total: usize) -> Result<()> {
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
    let result = measure(&dir, total);
    let _ = Command::new("bash")
        .arg(&script)
        .arg("down")
        .arg(&dir)
        .status();
    result
}

fn measure(dir: &Path, total: usize) -> Result<()> {
    let e = env_file(dir)?;
    let g = |k: &str| e.get(k).cloned().with_context(|| format!("{k} missing"));
    let ca = g("LDAP_TEST_CA")?;
    let pw = "Al1ce!Passw0rd";
    let servers = [
        (
            "Samba AD (LDAPS)",
            toml(
                "ad",
                &g("AD_URL")?,
                &ca,
                &g("AD_SVC_DN")?,
                &g("AD_SVC_PW")?,
                &format!("OU=VDI,{}", g("AD_BASE")?),
            ),
            g("AD_URL")?,
            format!("CN=Alice Liddell,OU=People,OU=VDI,{}", g("AD_BASE")?),
        ),
        (
            "OpenLDAP slapd (LDAPS)",
            toml(
                "ldap",
                &g("OL_URL")?,
                &ca,
                &g("OL_SVC_DN")?,
                &g("OL_SVC_PW")?,
                &g("OL_BASE")?,
            ),
            g("OL_URL")?,
            format!("uid=alice,ou=people,{}", g("OL_BASE")?),
        ),
    ];
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    println!("| server | concurrent | tessera-directory sign-ins/s | p50 ms | p99 ms | ldapwhoami ops/s | p50 ms | p99 ms | p50 ratio (lower is better) |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for (name, cfg, url, dn) in servers {
        let dirs = Arc::new(Directories::new(config::parse(&cfg)?)?);
        // Warm-up: the service connection and the server's caches.
        rt.block_on(dirs.authenticate("alice", pw))?;
        for conc in [1usize, 10, 50] {
            let a = rt.block_on(ours(dirs.clone(), "alice", pw, total, conc))?;
            let b = peer(&url, &dn, pw, &ca, total, conc)?;
            println!(
                "| {name} | {conc} | {:.0} | {:.1} | {:.1} | {:.0} | {:.1} | {:.1} | {} |",
                a.per_second(),
                a.percentile(0.5),
                a.percentile(0.99),
                b.per_second(),
                b.percentile(0.5),
                b.percentile(0.99),
                ratio(a.percentile(0.5), b.percentile(0.5))
            );
        }
    }
    Ok(())
}
