//! Display latency: the time from the guest writing its framebuffer to the SPICE client's
//! dirty-rectangle callback, through tessera-vmm's display (dirty log, frame cap, SPICE
//! server) and libspice-client-glib (tessera-spice-client, as tessera-client uses it).
//!
//! The demo guest repaints its probe square the moment a byte arrives on its serial port and
//! echoes the byte. Each sample writes one byte to the VMM's standard input at t0 and waits
//! for the invalidate callback whose rectangle shows the probe in that byte's colour (t1).
//! t1 - t0 also contains the serial delivery and the guest's interrupt and paint; the echo's
//! round trip (an upper bound of that delivery, twice over) is reported beside it. Bytes go
//! out at random gaps so that they fall anywhere in the VMM's frame period.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tessera_demo_guest::{layout::PROBE_SIZE, probe_color};
use tessera_spice_client::{ConnectOptions, Event, Rect, Session};

const W: u32 = 1024;
const H: u32 = 768;
pub(crate) const TICKET: &str = "latency-ticket";

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

struct Run {
    latency_ms: Vec<f64>,
    echo_ms: Vec<f64>,
    lost: usize,
}

pub fn run(repo: &Path, samples: usize) -> Result<()> {
    crate::build_release(repo, &["tessera-vmm", "tessera-display"])?;
    let dir = repo.join("target/bench/display-latency");
    std::fs::create_dir_all(&dir)?;
    let kernel = dir.join("demo.elf");
    std::fs::write(&kernel, tessera_demo_guest::ELF)?;
    let vmm = repo.join("target/release/tessera-vmm");
    let mut rows = Vec::new();
    for fps in [30u32, 60] {
        eprintln!("[bench-display-latency] fps cap {fps}: {samples} samples");
        let r = measure(&vmm, &kernel, &dir, fps, samples)?;
        rows.push((fps, r));
    }
    println!("| VMM frame cap | samples (lost) | write to client callback, median / p99 (ms) | serial echo round trip, median / p99 (ms) |");
    println!("|---|---|---|---|");
    for (fps, r) in rows {
        let (m, p) = percentiles(r.latency_ms.clone());
        let (em, ep) = percentiles(r.echo_ms.clone());
        println!(
            "| {fps} fps | {} ({}) | {m:.1} / {p:.1} | {em:.2} / {ep:.2} |",
            r.latency_ms.len(),
            r.lost
        );
    }
    Ok(())
}

fn measure(vmm: &Path, kernel: &Path, dir: &Path, fps: u32, samples: usize) -> Result<Run> {
    let port = free_port()?;
    let socket = dir.join(format!("api-{fps}.sock"));
    let _ = std::fs::remove_file(&socket);
    let mut child = Command::new(vmm)
        .arg("--kernel")
        .arg(kernel)
        .args(["--memory", "64M", "--cmdline", "name=latency mode=1024x768"])
        .arg("--api-socket")
        .arg(&socket)
        .arg("--display")
        .arg(format!("spice-port={port},fps={fps}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting tessera-vmm")?;
    let result = drive(&mut child, &socket, port, samples);
    let _ = child.kill();
    let _ = child.wait();
    result
}

fn drive(child: &mut Child, socket: &Path, port: u16, samples: usize) -> Result<Run> {
    let stdout = child.stdout.take().context("no VMM stdout")?;
    let mut stdin = child.stdin.take().context("no VMM stdin")?;
    let echoes = console_reader(stdout)?;
    set_ticket(socket)?;
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
                let _ = tx_ready.send(Ok((width, height)));
            }
            Event::Invalidate { rect, at } if overlaps(rect, probe) => {
                let centre = frame.pixel(probe.x + PROBE_SIZE / 2, probe.y + PROBE_SIZE / 2);
                if let Some(p) = centre {
                    let _ = tx.send(Seen(p, at));
                }
            }
            Event::Closed(why) => {
                let _ = tx_ready.send(Err(format!("session closed: {why:?}")));
            }
            _ => {}
        },
    )?;
    match ready.recv_timeout(Duration::from_secs(20)) {
        Ok(Ok((W, H))) => {}
        Ok(Ok(size)) => bail!("the guest's screen is {size:?}, not {W}x{H}"),
        Ok(Err(e)) => bail!("{e}"),
        Err(_) => bail!("no primary surface within 20 s"),
    }
    let mut run = Run {
        latency_ms: Vec::new(),
        echo_ms: Vec::new(),
        lost: 0,
    };
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
    up.recv_timeout(Duration::from_secs(30))
        .context("the demo guest did not come up within 30 s")?;
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
