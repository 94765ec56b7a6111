//! Storage benchmarks against qemu-img on the same files, in the same run; in every round the
//! side that goes first rotates, and every table prints the ratio.
//! (a) linked-clone creation: 1,000 overlays on one base, a `tessera-img clone` process per
//!     clone against a `qemu-img create -f qcow2 -b` process per clone, each syncing every clone
//!     as it always does, both ending with one syncfs. For reference only, the in-process call
//!     the host agent makes (no peer clones in-process, so that row has no ratio).
//! (b) 4 KiB scattered reads and writes and 1 MiB sequential throughput on a qcow2 overlay over
//!     a base, through the library vs `qemu-img bench` with the same offsets. Both sides time
//!     the requests alone, without process start, image open, final flush or close:
//!     qemu-img bench by its own "Run completed in X seconds." report (its clock stops when the
//!     last request completes, before the flush it then issues), the library by a clock around
//!     the same request loop.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use tessera_storage::ops::{self, Durability};
use tessera_storage::{Datastore, Disk, Format};

use crate::stats::{check_rounds, median, ratio, rotated};

const BASE_SIZE: u64 = 1 << 30;
const CLONES: usize = 1000;
/// A prime number of 4 KiB blocks, so the 4 KiB requests scatter over the disk.
const SCATTER_STEP: u64 = 4096 * 7919;
/// The byte both sides write (qemu-img bench `--pattern`), so neither writes zeros the other
/// does not.
const PATTERN: u8 = 0x5a;

/// Runs `cmd` to completion; its standard output, or an error with its standard error.
fn run_ok(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn syncfs(dir: &Path) -> Result<()> {
    run_ok(Command::new("sync").arg("-f").arg(dir)).map(drop)
}

/// Removes the files in `dir` whose names start with `prefix`.
fn remove_prefixed(dir: &Path, prefix: &str) -> Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.file_name()
            .is_some_and(|f| f.to_string_lossy().starts_with(prefix))
        {
            std::fs::remove_file(p)?;
        }
    }
    Ok(())
}

/// Builds the release `tessera-img` (the binary users run) and returns its path; the workspace
/// root is this crate's parent, as in main.
fn tessera_img() -> Result<PathBuf> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask has no parent directory")?;
    crate::build_release(repo, &["tessera-storage"])?;
    Ok(repo.join("target/release/tessera-img"))
}

/// The ways of making the clones in (a).
#[derive(Clone, Copy)]
enum CloneSide {
    /// `tessera-img clone`, a process per clone: it fsyncs each clone and its directory
    /// (`Durability::Sync`, the tool's only mode).
    TesseraImg,
    /// `qemu-img create -f qcow2 -b`, a process per clone: it fdatasyncs each clone as it
    /// closes it (strace, qemu-img 7.2) but not the directory, which the final syncfs covers.
    QemuImg,
    /// `ops::linked_clone` in this process with `Durability::Sync`, the mode the host agent's
    /// `disks::clone_disk` uses for every desktop it provisions. Nothing in the product clones
    /// with `Durability::Deferred`, so that mode has no row.
    InProcess,
}

const CLONE_SIDES: [CloneSide; 3] = [
    CloneSide::TesseraImg,
    CloneSide::QemuImg,
    CloneSide::InProcess,
];

impl CloneSide {
    fn prefix(self) -> &'static str {
        match self {
            CloneSide::TesseraImg => "timg-",
            CloneSide::QemuImg => "qemu-",
            CloneSide::InProcess => "lib-",
        }
    }
}

struct CloneBench {
    dir: PathBuf,
    ds: Datastore,
    tessera_img: PathBuf,
}

impl CloneBench {
    /// Creates `name`, an overlay on base.qcow2, the way `side` does. Both tools run in the
    /// scratch directory with the same relative names, so both record the same backing name.
    fn clone_one(&self, side: CloneSide, name: &str) -> Result<()> {
        match side {
            CloneSide::TesseraImg => run_ok(
                Command::new(&self.tessera_img)
                    .current_dir(&self.dir)
                    .args(["clone", "-F", "qcow2", "base.qcow2", name]),
            )
            .map(drop),
            CloneSide::QemuImg => run_ok(Command::new("qemu-img").current_dir(&self.dir).args([
                "create",
                "-q",
                "-f",
                "qcow2",
                "-b",
                "base.qcow2",
                "-F",
                "qcow2",
                name,
            ]))
            .map(drop),
            CloneSide::InProcess => ops::linked_clone(
                &self.ds,
                &self.dir.join("base.qcow2"),
                Format::Qcow2,
                &self.dir.join(name),
                Durability::Sync,
            )
            .map(drop)
            .map_err(Into::into),
        }
    }

    /// Clones per second for `side`: CLONES clones, then one syncfs, so every side ends with
    /// its clones and their directory entries on disk. Removing them (and syncing that, so the
    /// next side finds no pending metadata) is untimed.
    fn rate(&self, side: CloneSide) -> Result<f64> {
        let t = Instant::now();
        for i in 0..CLONES {
            self.clone_one(side, &format!("{}{i}.qcow2", side.prefix()))?;
        }
        syncfs(&self.dir)?;
        let rate = CLONES as f64 / t.elapsed().as_secs_f64();
        remove_prefixed(&self.dir, side.prefix())?;
        syncfs(&self.dir)?;
        Ok(rate)
    }
}

/// (a): clones per second of each side, `runs` rounds in rotating order; prints the table.
fn clones(dir: &Path, ds: &Datastore, runs: usize) -> Result<()> {
    let bench = CloneBench {
        dir: dir.to_path_buf(),
        ds: ds.clone(),
        tessera_img: tessera_img()?,
    };
    let mut rates = vec![Vec::new(); CLONE_SIDES.len()];
    for r in 0..runs {
        eprintln!("[bench-storage] clones, round {}/{runs}", r + 1);
        for i in rotated(CLONE_SIDES.len(), r) {
            rates[i].push(bench.rate(CLONE_SIDES[i])?);
        }
    }
    let (timg, qemu, lib) = (median(&rates[0]), median(&rates[1]), median(&rates[2]));
    println!("| (a) {CLONES} linked clones of one base ({runs} rounds, order rotating, medians) | clones/s | ratio vs qemu-img (higher is better) |");
    println!("|---|---|---|");
    println!(
        "| tessera-img clone, a process each (fsync of each clone and its directory), one syncfs at the end | {timg:.0} | {} |",
        ratio(timg, qemu)
    );
    println!("| qemu-img create -f qcow2 -b, a process each (fdatasync of each clone), one syncfs at the end | {qemu:.0} | 1.00x |");
    println!("| for reference: tessera-storage in-process as the host agent clones (fsync of each clone and its directory), one syncfs at the end | {lib:.0} | n/a (no in-process peer) |");
    println!();
    Ok(())
}

/// qemu-img bench's offset sequence (qemu-img 7.2, the peer here): start at 0, add `step`,
/// wrap modulo the image size (later releases wrap modulo the size less one request). With
/// `step` and the size multiples of the request size, every request lies inside the image.
fn offsets(count: u64, size: u64, step: u64) -> impl Iterator<Item = u64> {
    (0..count).scan(0u64, move |off, _| {
        let cur = *off;
        *off = (*off + step) % size;
        Some(cur)
    })
}

/// Seconds for `count` requests of `bs` bytes through the library: the request loop alone, the
/// span of qemu-img bench's "Run completed" figure. Opening, the final flush and closing run
/// outside the clock; the flush still runs, so both sides leave the same state on disk.
fn ours_io(ds: &Datastore, img: &Path, write: bool, count: u64, bs: u64, step: u64) -> Result<f64> {
    let disk = Disk::open(ds, img, Format::Qcow2, write)?;
    let mut buf = vec![PATTERN; bs as usize];
    let t = Instant::now();
    for off in offsets(count, disk.size(), step) {
        if write {
            disk.write(&buf, off)?;
        } else {
            disk.read(&mut buf, off)?;
        }
    }
    let secs = t.elapsed().as_secs_f64();
    disk.flush()?;
    Ok(secs)
}

/// The seconds of qemu-img bench's "Run completed in X seconds." line. It prints milliseconds,
/// so every workload here runs for tens of milliseconds at least.
fn run_completed_secs(out: &str) -> Result<f64> {
    let secs: f64 = out
        .lines()
        .find_map(|l| {
            l.strip_prefix("Run completed in ")?
                .strip_suffix(" seconds.")?
                .trim()
                .parse()
                .ok()
        })
        .with_context(|| format!("qemu-img bench printed no run time: {out}"))?;
    if secs <= 0.0 {
        bail!("qemu-img bench ran too briefly to time ({secs} s): raise the request count");
    }
    Ok(secs)
}

/// Seconds `qemu-img bench` reports for the same requests, by its own clock: the requests
/// alone, not its process start, opening, the flush it issues after the last request (with
/// `--flush-interval=COUNT`, so that it leaves the same state on disk as the library side) or
/// closing.
fn qemu_io(img: &Path, write: bool, count: u64, bs: u64, step: u64) -> Result<f64> {
    let (c, s, st) = (count.to_string(), bs.to_string(), step.to_string());
    let flush = format!("--flush-interval={count}");
    let pattern = format!("--pattern={PATTERN}");
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
        args.extend(["-w", flush.as_str(), pattern.as_str()]);
    }
    let p = img.to_str().unwrap_or_default();
    args.push(p);
    run_completed_secs(&run_ok(Command::new("qemu-img").args(&args))?)
}

struct Workload {
    name: &'static str,
    write: bool,
    count: u64,
    bs: u64,
    step: u64,
    unit: &'static str,
}

impl Workload {
    /// IOPS or MiB/s for a run of `secs`.
    fn rate(&self, secs: f64) -> f64 {
        if self.unit == "IOPS" {
            self.count as f64 / secs
        } else {
            (self.count * self.bs) as f64 / (1 << 20) as f64 / secs
        }
    }
}

const WORKLOADS: [Workload; 4] = [
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

/// One round of `w`: a fresh overlay for each side, so both allocate the same clusters, the
/// side that goes first alternating with `round`. Returns [library, qemu-img bench] rates.
fn io_round(dir: &Path, ds: &Datastore, w: &Workload, round: usize) -> Result<[f64; 2]> {
    let base = dir.join("base.qcow2");
    let mut rates = [0.0; 2];
    for side in rotated(2, round) {
        let ov = dir.join(format!("ov-{side}.qcow2"));
        let _ = std::fs::remove_file(&ov);
        ops::linked_clone(ds, &base, Format::Qcow2, &ov, Durability::Sync)?;
        let secs = if side == 0 {
            ours_io(ds, &ov, w.write, w.count, w.bs, w.step)?
        } else {
            qemu_io(&ov, w.write, w.count, w.bs, w.step)?
        };
        rates[side] = w.rate(secs);
        std::fs::remove_file(&ov)?;
    }
    Ok(rates)
}

/// (b): every workload, `runs` rounds each; prints the table.
fn io(dir: &Path, ds: &Datastore, runs: usize) -> Result<()> {
    println!("| (b) qcow2 overlay over a 1 GiB base ({runs} rounds, order alternating, medians; the requests alone timed on both sides: no process start, open, final flush or close) | tessera-storage | qemu-img bench | ratio (higher is better) |");
    println!("|---|---|---|---|");
    for w in &WORKLOADS {
        let (mut ours, mut theirs) = (vec![], vec![]);
        for r in 0..runs {
            eprintln!("[bench-storage] {}, round {}/{runs}", w.name, r + 1);
            let [o, t] = io_round(dir, ds, w, r)?;
            ours.push(o);
            theirs.push(t);
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
    Ok(())
}

/// The 1 GiB base, filled so reads through an overlay find data in the backing file, and
/// synced, so no writeback of it runs during the measurements.
fn make_base(ds: &Datastore, base: &Path) -> Result<()> {
    ops::create(
        ds,
        base,
        BASE_SIZE,
        Format::Qcow2,
        ops::DEFAULT_CLUSTER_SIZE,
    )?;
    let d = Disk::open(ds, base, Format::Qcow2, true)?;
    let chunk = vec![0xa5u8; 4 << 20];
    let mut off = 0;
    while off < BASE_SIZE {
        d.write(&chunk, off)?;
        off += chunk.len() as u64;
    }
    d.flush()?;
    Ok(())
}

/// Runs the benchmarks and prints Markdown tables.
pub fn run(dir: &Path, runs: usize) -> Result<()> {
    check_rounds(runs)?;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir)?;
    let ds = Datastore::new(dir)?;
    make_base(&ds, &dir.join("base.qcow2"))?;
    clones(dir, &ds, runs)?;
    io(dir, &ds, runs)?;
    std::fs::remove_dir_all(dir)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_wrap_as_qemu_img_bench() {
        // strace of qemu-img 7.2 bench on a 10-block raw file, step 3 blocks: 0, 3, 6, 9, 2.
        let v: Vec<u64> = offsets(5, 10 * 4096, 4096 * 3).collect();
        assert_eq!(v, vec![0, 3 * 4096, 6 * 4096, 9 * 4096, 2 * 4096]);
    }

    #[test]
    fn requests_stay_inside_the_base() {
        for w in &WORKLOADS {
            assert_eq!(w.step % w.bs, 0, "{}", w.name);
            assert_eq!(BASE_SIZE % w.bs, 0, "{}", w.name);
        }
    }

    #[test]
    fn reads_qemu_img_bench_time() {
        let out = "Sending 20 write requests, 4096 bytes each, 1 in parallel (starting at offset 0, step size 4096)\n\
                   Sending flush every 20 requests\nRun completed in 0.023 seconds.\n";
        assert_eq!(run_completed_secs(out).unwrap(), 0.023);
        assert!(run_completed_secs("Run completed in 0.000 seconds.").is_err());
        assert!(run_completed_secs("nothing").is_err());
    }
}
