//! `cargo xtask`: developer tasks.
//!
//!   cargo xtask bench-vmm [--runs N]     benchmarks (a)-(c) against QEMU on this /dev/kvm
//!   cargo xtask bench-nested [--runs N]  benchmark (d) inside the nested harness
//!   cargo xtask bench-storage [--runs N] linked clones and I/O vs qemu-img
//!   cargo xtask bench-display-latency    guest framebuffer write to SPICE client callback, vs QEMU
//!   cargo xtask bench-client             tessera-client vs remote-viewer drawing a 1080p stream

mod bench_broker;
mod bench_client;
mod bench_directory;
mod bench_disk;
mod bench_display_latency;
mod bench_nested;
mod bench_storage;
mod bench_vmm;
mod peer_libvirt;
mod stats;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "Tessera developer tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

// The variants are the command names (bench-vmm, bench-nested, ...).
#[allow(clippy::enum_variant_names)]
#[derive(Subcommand)]
enum Task {
    /// tessera-vmm vs QEMU (microvm, q35) with tiny guests on this machine's /dev/kvm:
    /// start-up, port-I/O exit cost, memory overhead.
    BenchVmm {
        /// Rounds; each runs every peer once per metric, in rotating order.
        #[arg(long, default_value_t = 10)]
        runs: usize,
    },
    /// tessera-storage vs qemu-img: linked-clone creation and overlay I/O.
    BenchStorage {
        /// Rounds of each measurement.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Scratch directory (removed afterwards).
        #[arg(long, default_value = "target/bench/storage")]
        dir: PathBuf,
    },
    /// tessera-vmm vs QEMU: the test guest's disk I/O through virtio-blk on a qcow2 linked
    /// clone, inside the nested harness (4 KiB random IOPS, 1 MiB sequential MiB/s).
    BenchDisk {
        /// Rounds of the two VMMs.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Seconds per random-I/O phase.
        #[arg(long, default_value_t = 5)]
        secs: u64,
    },
    /// tessera-broker vs libvirt: provisioning N linked-clone desktops; then logon storms of N
    /// users over concurrent connections (real agent, real VMMs with a tiny guest on /dev/kvm).
    BenchBroker {
        /// Desktops and users.
        #[arg(long, default_value_t = 1000)]
        n: usize,
        /// Concurrent client connections in the storm.
        #[arg(long, default_value_t = 50)]
        connections: usize,
        /// Provisioning rounds; each provisions N with both, the first one alternating.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// tessera-directory sign-ins vs ldapwhoami against Samba AD and OpenLDAP (1, 10 and 50
    /// concurrent logins); brings its own servers up and down.
    BenchDirectory {
        /// Sign-ins per concurrency level and server.
        #[arg(long, default_value_t = 500)]
        total: usize,
    },
    /// Display latency, tessera-vmm (frame caps 30 and 60) vs QEMU (-vga std -spice): a guest
    /// framebuffer write to the SPICE client's dirty-rectangle callback (demo guest +
    /// tessera-spice-client), median and p99; needs /dev/kvm.
    BenchDisplayLatency {
        /// Samples per peer, spread over the rounds.
        #[arg(long, default_value_t = 300)]
        samples: usize,
        /// Rounds; each runs every peer once, in rotating order.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// tessera-client vs remote-viewer drawing the demo desktop's stream of small updates in
    /// windows of the same size under Xvfb: CPU per update, and tessera-client's latency.
    BenchClient {
        /// Rounds; each runs every client once, in rotating order.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Seconds measured per client (after an 8 s warm-up).
        #[arg(long, default_value_t = 20)]
        secs: u64,
        /// Screen updates per second.
        #[arg(long, default_value_t = 60)]
        rate: u32,
    },
    /// tessera-vmm vs QEMU booting the Debian test guest to userspace inside the nested harness.
    BenchNested {
        /// Rounds of the three VMMs.
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
}

/// Builds `packages` in release mode (what every benchmark measures); their binaries land in
/// `target/release/`. tessera-vmm is built as it ships, statically linked, by
/// `scripts/build-vmm.sh`.
pub(crate) fn build_release(repo: &std::path::Path, packages: &[&str]) -> anyhow::Result<()> {
    let others: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| *p != "tessera-vmm")
        .collect();
    if !others.is_empty() {
        let mut cmd = std::process::Command::new(env!("CARGO"));
        cmd.args(["build", "--quiet", "--release"])
            .current_dir(repo);
        for p in &others {
            cmd.args(["-p", p]);
        }
        if !cmd.status()?.success() {
            anyhow::bail!("cargo build --release of {} failed", others.join(", "));
        }
    }
    if packages.contains(&"tessera-vmm")
        && !std::process::Command::new(repo.join("scripts/build-vmm.sh"))
            .current_dir(repo)
            .status()?
            .success()
    {
        anyhow::bail!("scripts/build-vmm.sh failed");
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default();
    match Cli::parse().task {
        Task::BenchVmm { runs } => bench_vmm::run(&repo, runs),
        Task::BenchDisplayLatency { samples, runs } => {
            bench_display_latency::run(&repo, samples, runs)
        }
        Task::BenchClient { secs, rate, runs } => bench_client::run(&repo, secs, rate, runs),
        Task::BenchNested { runs } => bench_nested::run(&repo, runs),
        Task::BenchDisk { runs, secs } => bench_disk::run(&repo, runs, secs),
        Task::BenchDirectory { total } => bench_directory::run(&repo, total),
        Task::BenchBroker {
            n,
            connections,
            rounds,
        } => bench_broker::run(&repo, n, connections, rounds),
        Task::BenchStorage { runs, dir } => bench_storage::run(&repo.join(dir), runs),
    }
}
