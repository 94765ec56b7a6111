//! Storage benchmarks against qemu-img on the same files, in the same run:
//! (a) linked-clone creation: 1,000 overlays on one base, in-process vs `qemu-img create -b`;
//! (b) 4 KiB scattered reads and writes and 1 MiB sequential throughput on a qcow2 overlay over
//!     a base, through the library vs `qemu-img bench` with the same offsets.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use tessera_storage::ops::{self, Durability};
use tessera_storage::{Datastore, Disk, Format};

use crate::stats::{median, ratio};

const BASE_SIZE: u64 = 1 << 30;
/// A prime number of 4 KiB blocks, so the 4 KiB requests scatter over the disk.
const SCATTER_STEP: u64 = 4096 * 7919;

fn qemu_img(args: &[&str]) -> Result<String> {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .context("qemu-img not found")?;
    if !out.status.success() {
        bail!(
            "qemu-img {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn syncfs(dir: &Path) -> Result<()> {
    let status = Command::new("sync").arg("-f").arg(dir).status()?;
    if !status.success() {
        bail!("sync -f failed");
    }
    Ok(())
}

/// (a) clones per second: ours (deferred sync + one syncfs, and fsync per clone) and qemu-img's.
fn clones(dir: &Path, n: usize) -> Result<(f64, f64, f64)> {
    let ds = Datastore::new(dir)?;
    let base = dir.join("base.qcow2");
    let clean = |prefix: &str| -> Result<()> {
        for e in std::fs::read_dir(dir)? {
            let p = e?.path();
            if p.file_name()
                .is_some_and(|f| f.to_string_lossy().starts_with(prefix))
            {
                std::fs::remove_file(p)?;
            }
        }
        Ok(())
    };
    let t = Instant::now();
    for i in 0..n {
        ops::linked_clone(
            &ds,
            &base,
            tessera_storage::Format::Qcow2,
            &dir.join(format!("ours-{i}.qcow2")),
            Durability::Deferred,
        )?;
    }
    syncfs(dir)?;
    let ours = n as f64 / t.elapsed().as_secs_f64();
    clean("ours-")?;

    let t = Instant::now();
    for i in 0..n {
        ops::linked_clone(
            &ds,
            &base,
            tessera_storage::Format::Qcow2,
            &dir.join(format!("sync-{i}.qcow2")),
            Durability::Sync,
        )?;
    }
    let ours_sync = n as f64 / t.elapsed().as_secs_f64();
    clean("sync-")?;

    let t = Instant::now();
    for i in 0..n {
        let p = dir.join(format!("qemu-{i}.qcow2"));
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "base.qcow2",
            "-F",
            "qcow2",
            p.to_str().unwrap_or_default(),
        ])?;
    }
    syncfs(dir)?;
    let theirs = n as f64 / t.elapsed().as_secs_f64();
    clean("qemu-")?;
    Ok((ours, ours_sync, theirs))
}

/// qemu-img bench's offset sequence: start at 0, add `step`, wrap within the image.
fn offsets(count: u64, size: u64, step: u64, buf: u64) -> impl Iterator<Item = u64> {
    let span = size - buf;
    (0..count).scan(0u64, move |off, _| {
        let cur = *off;
        *off = (*off + step) % span;
        Some(cur)
    })
}

/// Seconds for `count` requests of `bs` bytes through the library, from opening the image to
/// closing it with everything on disk.
fn ours_io(ds: &Datastore, img: &Path, write: bool, count: u64, bs: u64, step: u64) -> Result<f64> {
    let t = Instant::now();
    let disk = Disk::open(ds, img, tessera_storage::Format::Qcow2, write)?;
    let mut buf = vec![0x5au8; bs as usize];
    for off in offsets(count, disk.size(), step, bs) {
        if write {
            disk.write(&buf, off)?;
        } else {
            disk.read(&mut buf, off)?;
        }
    }
    disk.flush()?;
    drop(disk);
    Ok(t.elapsed().as_secs_f64())
}

/// Seconds the `qemu-img bench` process takes for the same requests, start to exit: its own
/// "Run completed" figure leaves out opening, the final flush and closing, which the library
/// side includes.
fn qemu_io(img: &Path, write: bool, count: u64, bs: u64, step: u64) -> Result<f64> {
    let (c, s, st) = (count.to_string(), bs.to_string(), step.to_string());
    // One flush after the last request, as the library side ends with one.
    let flush = format!("--flush-interval={count}");
    let mut args = vec![
        "bench",
        "-f",
        "qcow2",
        "-t",
        "writeback",
        "-d",
        "1",
        "-c",
        &c,
        "-s",
        &s,
        "-S",
        &st,
    ];
    if write {
        args.push("-w");
        args.push(&flush);
    }
    let p = img.to_str().unwrap_or_default();
    args.push(p);
    let t = Instant::now();
    let out = qemu_img(&args)?;
    let secs = t.elapsed().as_secs_f64();
    if !out.contains("Run completed") {
        bail!("qemu-img bench did not complete: {out}");
    }
    Ok(secs)
}

struct Workload {
    name: &'static str,
    write: bool,
    count: u64,
    bs: u64,
    step: u64,
    unit: &'static str,
}

/// Runs the benchmarks and prints Markdown tables.
pub fn run(dir: &Path, runs: usize) -> Result<()> {
    let dir: PathBuf = dir.to_path_buf();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let ds = Datastore::new(&dir)?;
    let base = dir.join("base.qcow2");
    ops::create(
        &ds,
        &base,
        BASE_SIZE,
        Format::Qcow2,
        ops::DEFAULT_CLUSTER_SIZE,
    )?;
    // The base is written once and synced, so no writeback of it runs during the measurements.
    {
        // Fill the base so reads through the overlay find data in the backing file.
        let d = Disk::open(&ds, &base, tessera_storage::Format::Qcow2, true)?;
        let chunk = vec![0xa5u8; 4 << 20];
        let mut off = 0;
        while off < BASE_SIZE {
            d.write(&chunk, off)?;
            off += chunk.len() as u64;
        }
        d.flush()?;
    }

    let (mut a_ours, mut a_sync, mut a_qemu) = (vec![], vec![], vec![]);
    for r in 0..runs {
        eprintln!("[bench-storage] clones, round {}/{runs}", r + 1);
        let (o, s, q) = clones(&dir, 1000)?;
        a_ours.push(o);
        a_sync.push(s);
        a_qemu.push(q);
    }
    println!("| (a) 1,000 linked clones of one base ({runs} runs, medians) | clones/s | ratio vs qemu-img |");
    println!("|---|---|---|");
    println!(
        "| tessera-storage, in-process, one syncfs at the end | {:.0} | {} |",
        median(&a_ours),
        ratio(median(&a_ours), median(&a_qemu))
    );
    println!(
        "| tessera-storage, in-process, fsync per clone | {:.0} | {} |",
        median(&a_sync),
        ratio(median(&a_sync), median(&a_qemu))
    );
    println!(
        "| qemu-img create -b (a process each), one syncfs at the end | {:.0} | 1.00x |",
        median(&a_qemu)
    );
    println!();

    let workloads = [
        Workload {
            name: "4 KiB scattered read",
            write: false,
            count: 20_000,
            bs: 4096,
            step: SCATTER_STEP,
            unit: "IOPS",
        },
        Workload {
            name: "4 KiB scattered write",
            write: true,
            count: 20_000,
            bs: 4096,
            step: SCATTER_STEP,
            unit: "IOPS",
        },
        Workload {
            name: "1 MiB sequential read",
            write: false,
            count: 512,
            bs: 1 << 20,
            step: 1 << 20,
            unit: "MiB/s",
        },
        Workload {
            name: "1 MiB sequential write",
            write: true,
            count: 512,
            bs: 1 << 20,
            step: 1 << 20,
            unit: "MiB/s",
        },
    ];
    println!("| (b) qcow2 overlay over a 1 GiB base ({runs} runs, medians) | tessera-storage | qemu-img bench | ratio (higher is better) |");
    println!("|---|---|---|---|");
    for w in &workloads {
        let (mut ours, mut theirs) = (vec![], vec![]);
        for r in 0..runs {
            eprintln!("[bench-storage] {}, round {}/{runs}", w.name, r + 1);
            // Fresh overlays for each side, so both allocate the same clusters; the side that
            // goes first alternates between rounds.
            let order = if r % 2 == 0 { [0, 1] } else { [1, 0] };
            for (i, side) in order.iter().enumerate() {
                let ov = dir.join(format!("ov-{i}.qcow2"));
                let _ = std::fs::remove_file(&ov);
                ops::linked_clone(
                    &ds,
                    &base,
                    tessera_storage::Format::Qcow2,
                    &ov,
                    Durability::Sync,
                )?;
                let secs = if *side == 0 {
                    ours_io(&ds, &ov, w.write, w.count, w.bs, w.step)?
                } else {
                    qemu_io(&ov, w.write, w.count, w.bs, w.step)?
                };
                let rate = if w.unit == "IOPS" {
                    w.count as f64 / secs
                } else {
                    (w.count * w.bs) as f64 / (1 << 20) as f64 / secs
                };
                if *side == 0 {
                    ours.push(rate)
                } else {
                    theirs.push(rate)
                }
                std::fs::remove_file(&ov)?;
            }
        }
        println!(
            "| {} | {:.0} {} | {:.0} {} | {} |",
            w.name,
            median(&ours),
            w.unit,
            median(&theirs),
            w.unit,
            ratio(median(&ours), median(&theirs))
        );
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_wrap_and_stay_aligned() {
        let v: Vec<u64> = offsets(5, 10 * 4096, 4096 * 3, 4096).collect();
        assert_eq!(v, vec![0, 3 * 4096, 6 * 4096, 0, 3 * 4096]);
    }
}
