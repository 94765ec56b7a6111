//! Benchmarks (a)-(c) and (e) of the VMM against QEMU on this machine's /dev/kvm, alternating
//! peers in each round: (a) process start to the guest's first serial byte, (b) cost per
//! port-I/O exit, (c) VMM memory overhead (peak RSS minus the RSS of guest RAM), (e) memory of
//! a VM with a SPICE display: tessera-vmm and its display process against QEMU q35 with std
//! VGA and SPICE, each counted as the proportional set size (PSS) of all its processes, so
//! video memory shared between the VMM and its display process counts once. The same binary
//! with --no-seccomp runs in the rotation too, for what the seccomp filters cost.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tessera_vmm::tiny_guest as tg;

use crate::stats::{median, ratio};

const GUEST_MEM: &str = "512M";
const GUEST_MEM_BYTES: u64 = 512 << 20;
pub const PIO_COUNT: u32 = 100_000; // a multiple of tiny_guest::PIO_UNROLL

/// One VMM under test and how it loads each tiny guest.
struct Peer {
    name: &'static str,
    argv: fn(&Guests, Kind) -> Vec<String>,
}

#[derive(Clone, Copy)]
enum Kind {
    Hello,
    Pio,
    Idle,
    /// The idle guest with a SPICE display on this port.
    Display(u16),
}

struct Guests {
    vmm: PathBuf,
    dir: PathBuf,
}

impl Guests {
    fn path(&self, kind: Kind, bios: bool) -> String {
        let name = match kind {
            Kind::Hello => "hello",
            Kind::Pio => "pio",
            Kind::Idle | Kind::Display(_) => "idle",
        };
        let ext = if bios { "bin" } else { "elf" };
        self.dir.join(format!("{name}.{ext}")).display().to_string()
    }
}

fn tessera(g: &Guests, k: Kind) -> Vec<String> {
    let mut argv = vec![
        g.vmm.display().to_string(),
        "--kernel".into(),
        g.path(k, false),
        "--memory".into(),
        GUEST_MEM.into(),
        "--log".into(),
        "error".into(),
    ];
    if let Kind::Display(port) = k {
        argv.extend(["--display".into(), format!("spice-port={port}")]);
    }
    argv
}

fn qemu(machine: &str, g: &Guests, k: Kind) -> Vec<String> {
    [
        "qemu-system-x86_64",
        "-M",
        machine,
        "-enable-kvm",
        "-m",
        GUEST_MEM,
        "-nodefaults",
        "-no-user-config",
        "-nographic",
        "-serial",
        "stdio",
        "-no-reboot",
        "-device",
        "isa-debug-exit,iobase=0xf4,iosize=1",
        "-bios",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([g.path(k, true)])
    .chain(match k {
        // The bochs display's counterpart (std VGA is the same DISPI adapter) and SPICE.
        Kind::Display(port) => vec![
            "-vga".into(),
            "std".into(),
            "-spice".into(),
            format!("port={port},addr=127.0.0.1,disable-ticketing=on"),
        ],
        _ => vec![],
    })
    .collect()
}

const PEERS: [Peer; 4] = [
    Peer {
        name: "tessera-vmm",
        argv: tessera,
    },
    Peer {
        name: "qemu -M microvm",
        argv: |g, k| qemu("microvm", g, k),
    },
    Peer {
        name: "qemu -M q35",
        argv: |g, k| qemu("q35", g, k),
    },
    // What the seccomp filters cost: the same binary without them.
    Peer {
        name: "tessera-vmm --no-seccomp",
        argv: |g, k| {
            let mut argv = tessera(g, k);
            argv.push("--no-seccomp".into());
            argv
        },
    },
];

fn spawn(argv: &[String]) -> Result<Child> {
    Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot run {}", argv[0]))
}

fn finish(mut child: Child) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// (a) milliseconds from spawn to the first byte the guest writes to its serial port.
fn first_byte_ms(argv: &[String]) -> Result<f64> {
    let start = Instant::now();
    let mut child = spawn(argv)?;
    let mut out = child.stdout.take().context("no stdout")?;
    let mut b = [0u8; 1];
    out.read_exact(&mut b)
        .context("the guest printed nothing")?;
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    finish(child);
    Ok(ms)
}

/// (b) nanoseconds per OUT exit: the time between the guest's `go` and `done` lines.
fn pio_ns(argv: &[String]) -> Result<f64> {
    let mut child = spawn(argv)?;
    let out = BufReader::new(child.stdout.take().context("no stdout")?);
    let (mut go, mut done) = (None, None);
    for line in out.lines() {
        let line = line?;
        if line.ends_with("go") {
            go = Some(Instant::now());
        } else if line.ends_with("done") {
            done = Some(Instant::now());
            break;
        }
    }
    finish(child);
    match (go, done) {
        (Some(g), Some(d)) => Ok(d.duration_since(g).as_secs_f64() * 1e9 / f64::from(PIO_COUNT)),
        _ => bail!("the PIO guest did not print go/done"),
    }
}

fn status_kib(pid: u32, key: &str) -> Result<u64> {
    status_kib_in(&format!("/proc/{pid}/status"), key)
}

/// RSS (KiB) of the mappings at least as large as guest RAM: the guest's memory.
fn guest_rss_kib(pid: u32) -> Result<u64> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps"))?;
    let mut total = 0;
    let mut in_guest = false;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((a, b)) = first.split_once('-') {
            if let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) {
                in_guest = b - a >= GUEST_MEM_BYTES * 9 / 10;
                continue;
            }
        }
        if in_guest {
            if let Some(v) = line.strip_prefix("Rss:") {
                total += v
                    .split_whitespace()
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    Ok(total)
}

/// Starts the idle guest and waits for its line; the reader keeps its console open.
fn start_idle(argv: &[String]) -> Result<(Child, BufReader<ChildStdout>)> {
    let mut child = spawn(argv)?;
    let mut out = BufReader::new(child.stdout.take().context("no stdout")?);
    let mut line = String::new();
    out.read_line(&mut line)?;
    if !line.contains("idle") {
        finish(child);
        bail!("the idle guest printed {line:?}");
    }
    Ok((child, out))
}

/// (c) (peak RSS, guest RSS) in KiB once the idle guest is up.
fn overhead_kib(argv: &[String]) -> Result<(u64, u64)> {
    let (mut child, _console) = start_idle(argv)?;
    let pid = child.id();
    std::thread::sleep(Duration::from_millis(200));
    let hwm = status_kib(pid, "VmHWM:")?;
    let guest = guest_rss_kib(pid)?;
    let _ = child.kill();
    let _ = child.wait();
    Ok((hwm, guest))
}

/// The processes a VMM runs as: `pid` and its children (tessera-vmm's display process).
fn with_children(pid: u32) -> Vec<u32> {
    let mut pids = vec![pid];
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let children = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            pids.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
    }
    pids
}

/// (e) PSS (KiB) of all the VMM's processes once the idle guest is up and its SPICE display
/// serves (no client).
fn display_pss_kib(argv: &[String], processes: usize) -> Result<u64> {
    let (mut child, _console) = start_idle(argv)?;
    let pid = child.id();
    std::thread::sleep(Duration::from_millis(500));
    let pids = with_children(pid);
    let mut total = 0;
    for p in &pids {
        total += status_kib_in(&format!("/proc/{p}/smaps_rollup"), "Pss:")?;
    }
    let _ = child.kill();
    let _ = child.wait();
    if pids.len() != processes {
        bail!(
            "{} runs as {} processes, not {processes}",
            argv[0],
            pids.len()
        );
    }
    Ok(total)
}

fn status_kib_in(path: &str, key: &str) -> Result<u64> {
    let s = std::fs::read_to_string(path)?;
    s.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no {key} in {path}"))
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn write_guests(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("hello.elf"), tg::hello(b"hello\n"))?;
    std::fs::write(dir.join("hello.bin"), tg::hello_bios(b"hello\n"))?;
    std::fs::write(dir.join("pio.elf"), tg::pio_loop(PIO_COUNT))?;
    std::fs::write(dir.join("pio.bin"), tg::pio_loop_bios(PIO_COUNT))?;
    std::fs::write(dir.join("idle.elf"), tg::milestones_then_idle(&[]))?;
    std::fs::write(dir.join("idle.bin"), tg::idle_bios())?;
    Ok(())
}

#[derive(Default)]
struct Samples {
    start_ms: Vec<f64>,
    pio_ns: Vec<f64>,
    overhead_kib: Vec<f64>,
    hwm_kib: Vec<f64>,
    display_pss_kib: Vec<f64>,
}

/// Runs the benchmark and prints a Markdown table.
pub fn run(repo: &Path, runs: usize) -> Result<()> {
    crate::build_release(repo, &["tessera-vmm", "tessera-display"])?;
    let g = Guests {
        vmm: repo.join("target/release/tessera-vmm"),
        dir: repo.join("target/bench/tiny"),
    };
    write_guests(&g.dir)?;
    let mut samples: Vec<Samples> = PEERS.iter().map(|_| Samples::default()).collect();
    for round in 0..runs {
        eprintln!("[bench-vmm] round {}/{runs}", round + 1);
        for i in 0..PEERS.len() {
            // Rotate the order each round so no peer always runs first.
            let p = (i + round) % PEERS.len();
            let peer = &PEERS[p];
            let s = &mut samples[p];
            s.start_ms
                .push(first_byte_ms(&(peer.argv)(&g, Kind::Hello))?);
            s.pio_ns.push(pio_ns(&(peer.argv)(&g, Kind::Pio))?);
            let (hwm, guest) = overhead_kib(&(peer.argv)(&g, Kind::Idle))?;
            s.hwm_kib.push(hwm as f64);
            s.overhead_kib.push(hwm.saturating_sub(guest) as f64);
            // (e): microvm has no PCI display to compare with.
            if peer.name != "qemu -M microvm" {
                let argv = (peer.argv)(&g, Kind::Display(free_port()?));
                let processes = if PEERS[p].name.starts_with("tessera") {
                    2
                } else {
                    1
                };
                s.display_pss_kib
                    .push(display_pss_kib(&argv, processes)? as f64);
            }
        }
    }
    print_table(&samples, runs);
    Ok(())
}

fn print_table(samples: &[Samples], runs: usize) {
    let ours = &samples[0];
    println!(
        "| metric ({runs} runs, medians) | {} | {} | ratio | {} | ratio |",
        PEERS[0].name, PEERS[1].name, PEERS[2].name
    );
    println!("|---|---|---|---|---|---|");
    let row = |name: &str, unit: &str, f: &dyn Fn(&Samples) -> &Vec<f64>| {
        let t = median(f(ours));
        let m = median(f(&samples[1]));
        let q = median(f(&samples[2]));
        println!(
            "| {name} | {t:.1} {unit} | {m:.1} {unit} | {} | {q:.1} {unit} | {} |",
            ratio(t, m),
            ratio(t, q)
        );
    };
    row("(a) process start to first guest instruction", "ms", &|s| {
        &s.start_ms
    });
    row("(b) port-I/O exit handled in user space", "ns", &|s| {
        &s.pio_ns
    });
    row("(c) VMM overhead: peak RSS minus guest RSS", "KiB", &|s| {
        &s.overhead_kib
    });
    row("peak RSS (for reference)", "KiB", &|s| &s.hwm_kib);
    let (t, q) = (
        median(&ours.display_pss_kib),
        median(&samples[2].display_pss_kib),
    );
    println!(
        "| (e) with a SPICE display (idle, no client): PSS of all its processes | {t:.1} KiB | n/a | | {q:.1} KiB | {} |",
        ratio(t, q)
    );
    println!();
    let plain = &samples[3];
    println!(
        "| what the seccomp filters cost ({runs} runs, medians) | {} | {} | ratio |",
        PEERS[0].name, PEERS[3].name
    );
    println!("|---|---|---|---|");
    let pair = |name: &str, unit: &str, f: &dyn Fn(&Samples) -> &Vec<f64>| {
        let (t, u) = (median(f(ours)), median(f(plain)));
        println!(
            "| {name} | {t:.1} {unit} | {u:.1} {unit} | {} |",
            ratio(t, u)
        );
    };
    pair("(a) process start to first guest instruction", "ms", &|s| {
        &s.start_ms
    });
    pair("(b) port-I/O exit", "ns", &|s| &s.pio_ns);
    pair("(c) VMM overhead", "KiB", &|s| &s.overhead_kib);
    pair("(e) with a SPICE display: PSS", "KiB", &|s| {
        &s.display_pss_kib
    });
}
