//! Display latency: the time from the guest writing its framebuffer to the SPICE client's
//! dirty-rectangle callback, through the VMM's display (tessera-vmm: dirty log, frame cap,
//! SPICE server in tessera-display; QEMU: std VGA, its display refresh timer, libspice-server)
//! and libspice-client-glib (tessera-spice-client, as tessera-client uses it).
//!
//! Both VMMs run the same demo guest (tessera-vmm enters its ELF at the 64-bit entry, QEMU at
//! its PVH entry) with the same devices that it drives (bochs display, virtio tablet, COM1,
//! i8042), 64 MiB, on this machine's /dev/kvm. The guest repaints its probe square the moment a
//! byte arrives on its serial port and echoes the byte. Each sample writes one byte to the
//! VMM's standard input at t0 and waits for the invalidate callback whose rectangle shows the
//! probe in that byte's colour (t1). t1 - t0 also contains the serial delivery and the guest's
//! interrupt and paint; the echo's round trip (an upper bound of that delivery, twice over) is
//! reported beside it. Bytes go out at random gaps so that they fall anywhere in the VMM's
//! frame period. QEMU has no frame cap to set: its display refresh timer (30 ms) paces it, so
//! tessera-vmm at a 30 fps cap is its like; tessera-vmm at 60 fps is shown beside. Each round
//! runs every peer once, the order rotated every round; each peer's samples are pooled over
//! the rounds.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tessera_demo_guest::{layout::PROBE_SIZE, probe_color};
use tessera_spice_client::{ConnectOptions, Event, Rect, Session};

use crate::stats::{check_rounds, ratio, rotated};

const W: u32 = 1024;
const H: u32 = 768;
pub(crate) const TICKET: &str = "latency-ticket";
/// The demo guest's command line, the same on both VMMs.
const CMDLINE: &str = "name=latency mode=1024x768";

/// What the client saw: the probe's colour after an update that covered it, and when.
struct Seen(u32, Instant);

/// Median and 99th percentile, in milliseconds.
pub(crate) fn percentiles(mut v: Vec<f64>) -> (f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99))
}

#[derive(Default)]
struct Run {
    latency_ms: Vec<f64>,
    echo_ms: Vec<f64>,
    lost: usize,
}

#[derive(Clone, Copy, PartialEq)]
enum Peer {
    Tessera { fps: u32 },
    Qemu,
}

/// The runs of a round, rotated every round; QEMU last in the table.
const PEERS: [Peer; 3] = [
    Peer::Tessera { fps: 30 },
    Peer::Tessera { fps: 60 },
    Peer::Qemu,
];

/// Where the programs and files are.
struct Paths {
    vmm: PathBuf,
    kernel: PathBuf,
    dir: PathBuf,
}

impl Paths {
    /// tessera-vmm's control socket at frame cap `fps`.
    fn socket(&self, fps: u32) -> PathBuf {
        self.dir.join(format!("api-{fps}.sock"))
    }
}

impl Peer {
    fn name(self) -> String {
        match self {
            Peer::Tessera { fps } => format!("tessera-vmm, {fps} fps cap"),
            Peer::Qemu => "QEMU q35 -vga std (30 ms refresh)".into(),
        }
    }

    /// The VMM with the demo guest, its serial port on standard input and output, serving
    /// SPICE on `port`.
    fn spawn(self, paths: &Paths, port: u16) -> Result<Child> {
        let mut cmd = match self {
            Peer::Tessera { fps } => {
                let mut c = Command::new(&paths.vmm);
                c.arg("--kernel")
                    .arg(&paths.kernel)
                    .args(["--memory", "64M", "--cmdline", CMDLINE])
                    .arg("--api-socket")
                    .arg(paths.socket(fps))
                    .arg("--display")
                    .arg(format!("spice-port={port},fps={fps}"));
                c
            }
            // The devices tessera-vmm gives the guest: std VGA is the same DISPI adapter, and
            // the guest polls a virtio tablet when it finds one. The ticket is set here. No
            // `-cpu host`: a PVM /dev/kvm refuses its MSRs (0x10a), and the guest needs none.
            Peer::Qemu => {
                let mut c = Command::new("qemu-system-x86_64");
                c.args(["-enable-kvm", "-M", "q35", "-m", "64M"])
                    .args(["-nodefaults", "-no-user-config", "-no-reboot"])
                    .args(["-vga", "std", "-device", "virtio-tablet-pci"])
                    .args(["-display", "none", "-monitor", "none", "-serial", "stdio"])
                    .arg("-object")
                    .arg(format!("secret,id=sp0,data={TICKET}"))
                    .arg("-spice")
                    .arg(format!("port={port},addr=127.0.0.1,password-secret=sp0"))
                    .arg("-kernel")
                    .arg(&paths.kernel)
                    .args(["-append", CMDLINE]);
                c
            }
        };
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", self.name()))
    }

    /// Lets the client in: tessera-vmm takes its ticket through the control socket.
    fn arm(self, paths: &Paths) -> Result<()> {
        match self {
            Peer::Tessera { fps } => set_ticket(&paths.socket(fps)),
            Peer::Qemu => Ok(()),
        }
    }
}

/// `samples` per peer, spread over `runs` rounds.
pub fn run(repo: &Path, samples: usize, runs: usize) -> Result<()> {
    check_rounds(runs)?;
    crate::build_release(repo, &["tessera-vmm", "tessera-display"])?;
    let dir = repo.join("target/bench/display-latency");
    std::fs::create_dir_all(&dir)?;
    let kernel = dir.join("demo.elf");
    std::fs::write(&kernel, tessera_demo_guest::ELF)?;
    let paths = Paths {
        vmm: repo.join("target/release/tessera-vmm"),
        kernel,
        dir,
    };
    let per_round = samples.div_ceil(runs);
    let mut runs_of: Vec<Run> = PEERS.iter().map(|_| Run::default()).collect();
    for round in 0..runs {
        for i in rotated(PEERS.len(), round) {
            let peer = PEERS[i];
            eprintln!(
                "[bench-display-latency] round {}/{runs}: {}: {per_round} samples",
                round + 1,
                peer.name()
            );
            let r = measure(peer, &paths, per_round)?;
            let (m, p) = percentiles(r.latency_ms.clone());
            eprintln!("[bench-display-latency]   median {m:.1} ms, p99 {p:.1} ms");
            let all = &mut runs_of[i];
            all.latency_ms.extend(r.latency_ms);
            all.echo_ms.extend(r.echo_ms);
            all.lost += r.lost;
        }
    }
    print_table(&runs_of, runs);
    Ok(())
}

/// One row per peer, with the ratio of each to QEMU's (the last peer).
fn print_table(runs_of: &[Run], runs: usize) {
    let (qm, qp) = percentiles(runs_of[PEERS.len() - 1].latency_ms.clone());
    println!("| VMM ({runs} rounds, samples pooled) | samples (lost) | write to client callback, median / p99 (ms) | ratio to QEMU, median / p99 | serial echo round trip, median / p99 (ms) |");
    println!("|---|---|---|---|---|");
    for (peer, r) in PEERS.iter().zip(runs_of) {
        let (m, p) = percentiles(r.latency_ms.clone());
        let (em, ep) = percentiles(r.echo_ms.clone());
        let vs = match peer {
            Peer::Qemu => "-".to_string(),
            Peer::Tessera { .. } => format!("{} / {}", ratio(m, qm), ratio(p, qp)),
        };
        println!(
            "| {} | {} ({}) | {m:.1} / {p:.1} | {vs} | {em:.2} / {ep:.2} |",
            peer.name(),
            r.latency_ms.len(),
            r.lost
        );
    }
}

fn measure(peer: Peer, paths: &Paths, samples: usize) -> Result<Run> {
    let port = free_port()?;
    if let Peer::Tessera { fps } = peer {
        let _ = std::fs::remove_file(paths.socket(fps));
    }
    let mut child = peer.spawn(paths, port)?;
    let result = drive(&mut child, peer, paths, port, samples);
    let _ = child.kill();
    let _ = child.wait();
    result
}

fn drive(child: &mut Child, peer: Peer, paths: &Paths, port: u16, samples: usize) -> Result<Run> {
    let stdout = child.stdout.take().context("no VMM stdout")?;
    let mut stdin = child.stdin.take().context("no VMM stdin")?;
    let echoes = console_reader(stdout)?;
    peer.arm(paths)?;
    let (tx, seen) = mpsc::channel();
    let probe = Rect {
        x: W - PROBE_SIZE,
        y: H - PROBE_SIZE,
        width: PROBE_SIZE,
        height: PROBE_SIZE,
    };
    let (tx_ready, ready) = mpsc::channel();
    let session = Session::connect(
        ConnectOptions {
            host: "127.0.0.1".into(),
            port: Some(port),
            password: Some(TICKET.into()),
            ..Default::default()
        },
        move |event, frame| match event {
            Event::Primary { width, height } => {
                let _ = tx_ready.send(Surface::Primary(width, height));
            }
            Event::Invalidate { rect, at } if overlaps(rect, probe) => {
                let centre = frame.pixel(probe.x + PROBE_SIZE / 2, probe.y + PROBE_SIZE / 2);
                if let Some(p) = centre {
                    let _ = tx.send(Seen(p, at));
                }
            }
            Event::Closed(why) => {
                let _ = tx_ready.send(Surface::Closed(why));
            }
            _ => {}
        },
    )?;
    wait_primary(&ready)?;
    let mut run = Run::default();
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    for i in 0..samples {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(40 + rng % 60));
        while seen.try_recv().is_ok() {}
        while echoes.try_recv().is_ok() {}
        let byte = b'A' + (i % 26) as u8;
        let t0 = Instant::now();
        stdin.write_all(&[byte])?;
        stdin.flush()?;
        match wait_probe(&seen, probe_color(byte)) {
            Some(t1) => run.latency_ms.push(ms(t1 - t0)),
            None => run.lost += 1,
        }
        if let Some(t) = wait_echo(&echoes, byte) {
            run.echo_ms.push(ms(t - t0));
        }
    }
    drop(session);
    Ok(run)
}

/// What the client's callback reports to [`wait_primary`].
enum Surface {
    /// A primary surface of this size.
    Primary(u32, u32),
    /// The session ended, with the client's reason.
    Closed(Option<tessera_spice_client::Failure>),
}

/// Waits for the guest's screen at W x H. A VMM may show another surface first (QEMU's VGA
/// starts in text mode), so sizes before it are passed over.
fn wait_primary(ready: &Receiver<Surface>) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = None;
    loop {
        match ready.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(Surface::Primary(W, H)) => return Ok(()),
            Ok(Surface::Primary(w, h)) => last = Some((w, h)),
            Ok(Surface::Closed(why)) => bail!("session closed: {why:?}"),
            Err(_) => bail!("no {W}x{H} primary surface within 20 s (last: {last:?})"),
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn overlaps(a: Rect, b: Rect) -> bool {
    a.x < b.x + b.width && b.x < a.x + a.width && a.y < b.y + b.height && b.y < a.y + a.height
}

fn wait_probe(seen: &Receiver<Seen>, color: u32) -> Option<Instant> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match seen.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(Seen(p, at)) if p == color => return Some(at),
            Ok(_) => {}
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return None,
        }
    }
}

fn wait_echo(echoes: &Receiver<(u8, Instant)>, byte: u8) -> Option<Instant> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match echoes.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok((b, at)) if b == byte => return Some(at),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
}

/// Reads the guest's console until its desktop line, then passes on each byte with its
/// arrival time.
fn console_reader(stdout: impl Read + Send + 'static) -> Result<Receiver<(u8, Instant)>> {
    let (tx, rx) = mpsc::channel();
    let (tx_up, up) = mpsc::channel();
    std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut line = String::new();
        while r.read_line(&mut line).unwrap_or(0) > 0 {
            if line.contains("tessera-demo:") {
                let _ = tx_up.send(());
                break;
            }
            line.clear();
        }
        let mut b = [0u8; 1];
        while let Ok(1) = r.read(&mut b) {
            let _ = tx.send((b[0], Instant::now()));
        }
    });
    // QEMU runs its firmware (SeaBIOS and the PVH option ROM) first.
    up.recv_timeout(Duration::from_secs(60))
        .context("the demo guest did not come up within 60 s")?;
    Ok(rx)
}

pub(crate) fn set_ticket(socket: &Path) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let body = serde_json::json!({ "ticket": TICKET, "lifetime_secs": 3600 });
    rt.block_on(tessera_agent::vmm_client::call_with(
        socket,
        axum::http::Method::PUT,
        "/display/ticket",
        Some(&body),
        Duration::from_secs(5),
    ))?;
    Ok(())
}

pub(crate) fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
