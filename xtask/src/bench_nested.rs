//! Benchmark (d): the nested harness's bench-boot scenario, parsed into medians per VMM. The
//! scenario runs every VMM once per round, the order rotated every round; the log says which
//! VMM each boot belongs to, so the parser does not depend on the order.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Result};

use crate::stats::{check_rounds, median, ratio};

/// Parses `BENCH run=N vmm=NAME` headers and the `BOOT-TIMER` lines after them.
pub fn parse(log: &str) -> BTreeMap<String, (Vec<f64>, Vec<f64>)> {
    let mut out: BTreeMap<String, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    let mut current = None;
    for line in log.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("BENCH ") {
            current = rest
                .split_whitespace()
                .find_map(|w| w.strip_prefix("vmm="))
                .map(str::to_string);
        } else if let Some(rest) = line.strip_prefix("BOOT-TIMER ") {
            let Some(vmm) = current.take() else { continue };
            let field = |k: &str| {
                rest.split_whitespace()
                    .find_map(|w| w.strip_prefix(k))
                    .and_then(|v| v.parse::<f64>().ok())
            };
            let e = out.entry(vmm).or_default();
            if let Some(m) = field("marker_ms=") {
                e.0.push(m);
            }
            if let Some(r) = field("maxrss_kib=") {
                e.1.push(r);
            }
        }
    }
    out
}

/// Runs the scenario and prints the table.
pub fn run(repo: &Path, runs: usize) -> Result<()> {
    check_rounds(runs)?;
    let out = Command::new(repo.join("tests/nested/run.sh"))
        .arg("bench-boot")
        .env("NEST_ARGS", format!("nest.runs={runs}"))
        .env("NEST_TIMEOUT", (300 + runs * 120).to_string())
        .output()?;
    let log = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("nested bench-boot failed ({}):\n{log}", out.status);
    }
    let r = parse(&log);
    let med = |k: &str| r.get(k).map_or(f64::NAN, |v| median(&v.0));
    let n = |k: &str| r.get(k).map_or(0, |v| v.0.len());
    let t = med("tessera");
    let m = med("qemu-microvm");
    let q = med("qemu-q35");
    println!("| (d) Debian guest, process start to userspace marker (nested, medians) | tessera-vmm | qemu microvm | ratio | qemu q35 | ratio |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| runs: {}/{}/{} | {t:.0} ms | {m:.0} ms | {} | {q:.0} ms | {} |",
        n("tessera"),
        n("qemu-microvm"),
        n("qemu-q35"),
        ratio(t, m),
        ratio(t, q)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_runs() {
        let log = "BENCH run=1 vmm=tessera\nnoise\nBOOT-TIMER marker_ms=100.5 exit_ms=120 status=0 maxrss_kib=9000\n\
                   BENCH run=1 vmm=qemu-q35\nBOOT-TIMER marker_ms=none exit_ms=5 status=1 maxrss_kib=1\n";
        let r = parse(log);
        assert_eq!(r["tessera"].0, vec![100.5]);
        assert!(r["qemu-q35"].0.is_empty());
    }

    #[test]
    fn parses_rotated_order() {
        let log = "BENCH run=2 vmm=qemu-microvm\nBOOT-TIMER marker_ms=300 maxrss_kib=1\n\
                   BENCH run=2 vmm=qemu-q35\nBOOT-TIMER marker_ms=200 maxrss_kib=1\n\
                   BENCH run=2 vmm=tessera\nBOOT-TIMER marker_ms=100 maxrss_kib=1\n";
        let r = parse(log);
        assert_eq!(r["tessera"].0, vec![100.0]);
        assert_eq!(r["qemu-microvm"].0, vec![300.0]);
        assert_eq!(r["qemu-q35"].0, vec![200.0]);
    }
}
