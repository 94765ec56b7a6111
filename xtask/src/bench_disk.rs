//! Benchmark storage (c): guest disk I/O through virtio-blk in the nested harness, tessera-vmm
//! against QEMU on the same linked clone, parsed into medians per VMM and phase. The scenario
//! runs both VMMs once per round, the order swapped every round; each run's header names its
//! VMM, so the parser does not depend on the order.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::stats::{check_rounds, median, ratio};

const PHASES: [(&str, &str); 4] = [
    ("randread-4k", "iops="),
    ("randwrite-4k", "iops="),
    ("seqread-1m", "mibps="),
    ("seqwrite-1m", "mibps="),
];

/// (vmm, phase) -> values, from `BENCH run=N vmm=NAME` headers and `tg: io PHASE k=v` lines.
pub fn parse(log: &str) -> BTreeMap<(String, String), Vec<f64>> {
    let mut out: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in log.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("BENCH ") {
            current = rest
                .split_whitespace()
                .find_map(|w| w.strip_prefix("vmm="))
                .map(str::to_string);
        } else if line.starts_with("BENCH-HUNG") {
            // A hung run's finished phases count; the rest never came.
            current = None;
        } else if let (Some(rest), Some(vmm)) = (line.strip_prefix("tg: io "), &current) {
            let mut words = rest.split_whitespace();
            let (Some(phase), Some(kv)) = (words.next(), words.next()) else {
                continue;
            };
            let value = kv.split_once('=').and_then(|(_, v)| v.parse::<f64>().ok());
            if let Some(v) = value {
                out.entry((vmm.clone(), phase.to_string()))
                    .or_default()
                    .push(v);
            }
        }
    }
    out
}

fn sh(cmd: &str, args: &[&str], dir: &Path) -> Result<()> {
    let st = Command::new(cmd)
        .args(args)
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .status()?;
    if !st.success() {
        bail!("{cmd} {args:?}: {st}");
    }
    Ok(())
}

/// Builds the datastore (a 64 MiB base fully written by qemu-io), runs the scenario, prints
/// the table.
pub fn run(repo: &Path, runs: usize, secs: u64) -> Result<()> {
    check_rounds(runs)?;
    let dir = std::env::temp_dir().join(format!("tessera-bench-disk-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    sh(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", "base.qcow2", "64M"],
        &dir,
    )?;
    sh(
        "qemu-io",
        &["-c", "write -P 0x11 0 64M", "base.qcow2"],
        &dir,
    )?;
    let xfer = dir.join("xfer.raw");
    sh("tar", &["-cf", "xfer.raw", "base.qcow2"], &dir)?;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&xfer)?
        .set_len(512 << 20)?;
    let out = Command::new(repo.join("tests/nested/run.sh"))
        .arg("bench-disk")
        .env("NEST_DISK", &xfer)
        .env("NEST_ARGS", format!("nest.runs={runs} nest.iosecs={secs}"))
        .env(
            "NEST_TIMEOUT",
            (300 + runs as u64 * (8 * secs + 120)).to_string(),
        )
        .output()
        .context("tests/nested/run.sh")?;
    let _ = std::fs::remove_dir_all(&dir);
    let log = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("nested bench-disk failed ({}):\n{log}", out.status);
    }
    for hung in log.lines().filter(|l| l.trim().starts_with("BENCH-HUNG")) {
        eprintln!(
            "[bench-disk] {} (killed after 180 s; its phases left out)",
            hung.trim()
        );
    }
    let r = parse(&log);
    let med = |vmm: &str, phase: &str| {
        r.get(&(vmm.to_string(), phase.to_string()))
            .map_or(f64::NAN, |v| median(v))
    };
    let n = |vmm: &str| {
        r.get(&(vmm.to_string(), "randread-4k".to_string()))
            .map_or(0, Vec::len)
    };
    println!(
        "| (c) guest I/O via virtio-blk, nested, medians of {}/{} runs | tessera-vmm | qemu q35 | ratio (higher is better) |",
        n("tessera"),
        n("qemu-q35")
    );
    println!("|---|---|---|---|");
    for (phase, unit) in PHASES {
        let t = med("tessera", phase);
        let q = med("qemu-q35", phase);
        let unit = if unit == "iops=" { "IOPS" } else { "MiB/s" };
        println!("| {phase} ({unit}) | {t:.0} | {q:.0} | {} |", ratio(t, q));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_phases_per_vmm() {
        let log =
            "BENCH run=1 vmm=tessera\ntg: io randread-4k iops=1200\ntg: io seqread-1m mibps=80.5\n\
                   BENCH run=1 vmm=qemu-q35\ntg: io randread-4k iops=1000\ntg: io error: EIO\n";
        let r = parse(log);
        assert_eq!(r[&("tessera".into(), "randread-4k".into())], vec![1200.0]);
        assert_eq!(r[&("tessera".into(), "seqread-1m".into())], vec![80.5]);
        assert_eq!(r[&("qemu-q35".into(), "randread-4k".into())], vec![1000.0]);
        assert_eq!(r.len(), 3);
    }

    #[test]
    fn a_hung_runs_later_lines_are_not_counted() {
        let log = "BENCH run=1 vmm=tessera\ntg: io randread-4k iops=1200\n\
                   BENCH-HUNG run=1 vmm=tessera\ntg: io randwrite-4k iops=9\n";
        let r = parse(log);
        assert_eq!(r[&("tessera".into(), "randread-4k".into())], vec![1200.0]);
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn parses_rotated_order() {
        let log = "BENCH run=2 vmm=qemu-q35\ntg: io randread-4k iops=1000\n\
                   BENCH run=2 vmm=tessera\ntg: io randread-4k iops=2000\n";
        let r = parse(log);
        assert_eq!(r[&("tessera".into(), "randread-4k".into())], vec![2000.0]);
        assert_eq!(r[&("qemu-q35".into(), "randread-4k".into())], vec![1000.0]);
    }
}
