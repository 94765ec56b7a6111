//! tessera-img: create and inspect Tessera's disk images, with qemu-img-like output.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use tessera_storage::info::info;
use tessera_storage::ops::{self, Durability, DEFAULT_CLUSTER_SIZE};
use tessera_storage::{Datastore, Disk, Format};

const AFTER_HELP: &str = "\
Every image and every backing file must lie inside the datastore (--datastore, or
TESSERA_DATASTORE, or else the directory of the first image named): a backing path that
leads outside it is refused.

Examples:
  tessera-img create -f qcow2 golden.qcow2 20G         thin 20 GiB disk
  tessera-img clone golden.qcow2 desk-001.qcow2       linked clone (overlay on golden)
  tessera-img snapshot desk-001.qcow2 desk-001.s1     desk-001.s1 freezes, desk-001 takes writes
  tessera-img revert desk-001.qcow2                   drop all writes since the overlay was made
  tessera-img commit desk-001.s1                      delete snapshot: merge into its base
  tessera-img flatten desk-001.qcow2 full.qcow2       standalone full clone
  tessera-img info --output json desk-001.qcow2
  tessera-img check desk-001.qcow2                    refcount audit, as qemu-img check

check exits 0 when the image is clean, 2 when it found corruptions, 3 when it found only
leaked clusters (space wasted, no data at risk), 1 when it could not run: as qemu-img check.";

/// Create, clone, snapshot and inspect qcow2 and raw disk images.
#[derive(Parser)]
#[command(name = "tessera-img", version, about, after_help = AFTER_HELP)]
struct Cli {
    /// Datastore directory that confines every image and backing file.
    #[arg(long, global = true, env = "TESSERA_DATASTORE", value_name = "DIR")]
    datastore: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Human,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    Qcow2,
    Raw,
}

#[derive(Subcommand)]
enum Cmd {
    /// Show an image's format, sizes and backing file.
    Info {
        /// The format of the image (omitted: read from its first bytes, as qemu-img does; name
        /// it for any disk a guest has written, whose content proves nothing).
        #[arg(short = 'f', value_enum)]
        format: Option<FormatArg>,
        /// Output format.
        #[arg(long, value_enum, default_value = "human")]
        output: Output,
        /// Show every image of the backing chain.
        #[arg(long)]
        backing_chain: bool,
        /// The image.
        file: PathBuf,
    },
    /// Create a thin image, or with -b a linked clone of BACKING.
    Create {
        /// Image format.
        #[arg(short = 'f', value_enum, default_value = "qcow2")]
        format: FormatArg,
        /// Make a linked clone of this image instead (the size comes from it).
        #[arg(short = 'b', value_name = "BACKING")]
        backing: Option<PathBuf>,
        /// The format of BACKING (omitted: read from its first bytes, as qemu-img does; name
        /// it for any disk a guest has written, whose content proves nothing).
        #[arg(short = 'F', value_enum)]
        backing_format: Option<FormatArg>,
        /// qcow2 cluster size in bytes (512 B to 2 MiB).
        #[arg(long, default_value_t = DEFAULT_CLUSTER_SIZE)]
        cluster_size: usize,
        /// The new image.
        file: PathBuf,
        /// Size, e.g. 20G, 512M (omit with -b).
        size: Option<String>,
    },
    /// Create a linked clone: a new overlay whose backing file is BASE.
    Clone {
        /// The format of BASE (omitted: read from its first bytes, as qemu-img does; name
        /// it for any disk a guest has written, whose content proves nothing).
        #[arg(short = 'F', value_enum)]
        base_format: Option<FormatArg>,
        /// The base image.
        base: PathBuf,
        /// The new overlay.
        file: PathBuf,
    },
    /// Freeze ACTIVE's current content as SNAPSHOT; ACTIVE becomes an overlay on it.
    Snapshot {
        /// The format of ACTIVE (omitted: read from its first bytes, as qemu-img does; name
        /// it for any disk a guest has written, whose content proves nothing).
        #[arg(short = 'f', value_enum)]
        format: Option<FormatArg>,
        /// The disk.
        active: PathBuf,
        /// The read-only snapshot file to create.
        snapshot: PathBuf,
    },
    /// Drop ACTIVE's overlay and start a fresh one on the same base (refresh on logoff).
    Revert {
        /// The overlay.
        active: PathBuf,
    },
    /// Merge OVERLAY into its backing file and remove it (delete snapshot).
    Commit {
        /// The overlay to merge.
        overlay: PathBuf,
    },
    /// Write a standalone copy of SRC and its whole chain to DST (full clone).
    Flatten {
        /// The format of SRC (omitted: read from its first bytes, as qemu-img does; name
        /// it for any disk a guest has written, whose content proves nothing).
        #[arg(short = 'f', value_enum)]
        format: Option<FormatArg>,
        /// The source disk.
        src: PathBuf,
        /// The new standalone image.
        dst: PathBuf,
    },
    /// Audit a qcow2 image's metadata and refcounts (leaks and corruptions).
    Check {
        /// Output format.
        #[arg(long, value_enum, default_value = "human")]
        output: Output,
        /// The image.
        file: PathBuf,
    },
    /// Show where each range of the disk is stored.
    Map {
        /// The format of the image (omitted: read from its first bytes, as qemu-img does; name
        /// it for any disk a guest has written, whose content proves nothing).
        #[arg(short = 'f', value_enum)]
        format: Option<FormatArg>,
        /// Output format.
        #[arg(long, value_enum, default_value = "human")]
        output: Output,
        /// The image.
        file: PathBuf,
    },
}

fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let (num, shift) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_lowercase() {
                'k' => 10,
                'm' => 20,
                'g' => 30,
                't' => 40,
                'b' => 0,
                _ => bail!("invalid size {s:?}: use a number with K, M, G or T"),
            };
            (&t[..i], shift)
        }
        _ => (t, 0),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .filter(|n| *n > 0)
        .with_context(|| format!("invalid size {s:?}"))
}

fn datastore(cli: &Option<PathBuf>, first: &Path) -> Result<Datastore> {
    let root = match cli {
        Some(d) => d.clone(),
        None => {
            let abs = std::path::absolute(first).unwrap_or_else(|_| first.to_path_buf());
            abs.parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("."))
        }
    };
    Ok(Datastore::new(&root)?)
}

fn main() {
    match run(Cli::parse()) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("tessera-img: {e:#}");
            std::process::exit(1);
        }
    }
}

fn print_check(r: &tessera_storage::check::CheckReport) {
    for m in &r.messages {
        println!("{m}");
    }
    if r.corruptions == 0 && r.leaks == 0 && r.check_errors == 0 {
        println!("No errors were found on the image.");
    }
    if r.corruptions > 0 {
        println!(
            "\n{} errors were found on the image.\nData may be corrupted, or further writes to the image may corrupt it.",
            r.corruptions
        );
    }
    if r.leaks > 0 {
        println!(
            "\n{} leaked clusters were found on the image.\nThis means waste of disk space, but no harm to data.",
            r.leaks
        );
    }
    let pct = |n: u64| {
        if r.total_clusters == 0 {
            0.0
        } else {
            n as f64 * 100.0 / r.total_clusters as f64
        }
    };
    let of_alloc = |n: u64| {
        if r.allocated_clusters == 0 {
            0.0
        } else {
            n as f64 * 100.0 / r.allocated_clusters as f64
        }
    };
    println!(
        "{}/{} = {:.2}% allocated, {:.2}% fragmented, {:.2}% compressed clusters",
        r.allocated_clusters,
        r.total_clusters,
        pct(r.allocated_clusters),
        of_alloc(r.fragmented_clusters),
        of_alloc(r.compressed_clusters)
    );
    println!("Image end offset: {}", r.image_end_offset);
}

/// The format named on the command line, or read from the file's first bytes.
fn format_of(named: Option<FormatArg>, file: &Path) -> Result<Format> {
    Ok(match named {
        Some(FormatArg::Qcow2) => Format::Qcow2,
        Some(FormatArg::Raw) => Format::Raw,
        None => Format::probe(file)?,
    })
}

fn run(cli: Cli) -> Result<i32> {
    match &cli.cmd {
        Cmd::Info {
            format,
            output,
            backing_chain,
            file,
        } => {
            let ds = datastore(&cli.datastore, file)?;
            let paths: Vec<PathBuf> = if *backing_chain {
                ds.chain(file, format_of(*format, file)?)?
                    .into_iter()
                    .map(|e| e.path)
                    .collect()
            } else {
                vec![file.clone()]
            };
            let infos = paths
                .iter()
                .map(|p| info(&ds, p))
                .collect::<Result<Vec<_>, _>>()?;
            match output {
                Output::Json if *backing_chain => {
                    println!("{}", serde_json::to_string_pretty(&infos)?)
                }
                Output::Json => println!("{}", serde_json::to_string_pretty(&infos[0])?),
                Output::Human => {
                    for (i, inf) in infos.iter().enumerate() {
                        if i > 0 {
                            println!();
                        }
                        print!("{inf}");
                    }
                }
            }
        }
        Cmd::Create {
            format,
            backing,
            backing_format,
            cluster_size,
            file,
            size,
        } => {
            let ds = datastore(&cli.datastore, file)?;
            if let Some(b) = backing {
                if size.is_some() {
                    bail!("a linked clone takes its size from the backing file; drop SIZE");
                }
                let fmt = format_of(*backing_format, b)?;
                let p = ops::linked_clone(&ds, b, fmt, file, Durability::Sync)?;
                println!("Formatting '{}', fmt=qcow2 backing_file={} cluster_size={DEFAULT_CLUSTER_SIZE}", p.display(), b.display());
            } else {
                let size = parse_size(size.as_deref().context("SIZE is required without -b")?)?;
                let fmt = match format {
                    FormatArg::Qcow2 => Format::Qcow2,
                    FormatArg::Raw => Format::Raw,
                };
                let p = ops::create(&ds, file, size, fmt, *cluster_size)?;
                println!(
                    "Formatting '{}', fmt={} size={size} cluster_size={cluster_size}",
                    p.display(),
                    fmt.name()
                );
            }
        }
        Cmd::Clone {
            base_format,
            base,
            file,
        } => {
            let ds = datastore(&cli.datastore, file)?;
            let fmt = format_of(*base_format, base)?;
            let p = ops::linked_clone(&ds, base, fmt, file, Durability::Sync)?;
            println!("Linked clone '{}' on '{}'", p.display(), base.display());
        }
        Cmd::Snapshot {
            format,
            active,
            snapshot,
        } => {
            let ds = datastore(&cli.datastore, active)?;
            let s = ops::snapshot(&ds, active, format_of(*format, active)?, snapshot)?;
            println!(
                "Snapshot '{}' taken; '{}' now writes to a new overlay",
                s.display(),
                active.display()
            );
        }
        Cmd::Revert { active } => {
            let ds = datastore(&cli.datastore, active)?;
            ops::revert(&ds, active)?;
            println!("'{}' reverted to its backing file", active.display());
        }
        Cmd::Commit { overlay } => {
            let ds = datastore(&cli.datastore, overlay)?;
            let base = ops::commit(&ds, overlay)?;
            println!(
                "Image committed into '{}'; '{}' removed",
                base.display(),
                overlay.display()
            );
        }
        Cmd::Flatten { format, src, dst } => {
            let ds = datastore(&cli.datastore, src)?;
            let p = ops::flatten(&ds, src, format_of(*format, src)?, dst)?;
            println!("Full clone '{}' written", p.display());
        }
        Cmd::Check { output, file } => {
            let ds = datastore(&cli.datastore, file)?;
            let path = ds.confine(file, file)?;
            let report = tessera_storage::check::check(&path)?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
                Output::Human => print_check(&report),
            }
            return Ok(report.exit_status());
        }
        Cmd::Map {
            format,
            output,
            file,
        } => {
            let ds = datastore(&cli.datastore, file)?;
            let disk = Disk::open(&ds, file, format_of(*format, file)?, false)?;
            let map = disk.map()?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&map)?),
                Output::Human => {
                    println!(
                        "{:<20}{:<20}{:<8}{:<8}{:<8}File",
                        "Offset", "Length", "Depth", "Zero", "Data"
                    );
                    for m in map {
                        let file = if m.data {
                            disk.chain()
                                .get(m.depth)
                                .map(|c| c.path.display().to_string())
                                .unwrap_or_default()
                        } else {
                            String::new()
                        };
                        println!(
                            "{:<#20x}{:<#20x}{:<8}{:<8}{:<8}{}",
                            m.start, m.length, m.depth, m.zero, m.data, file
                        );
                    }
                }
            }
        }
    }
    Ok(0)
}
