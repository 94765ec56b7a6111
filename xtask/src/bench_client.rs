//! Thin-client drawing cost: tessera-client and remote-viewer showing the same stream from
//! tessera-vmm, under Xvfb with Mesa's llvmpipe (the CPU is the GPU here).
//!
//! The demo desktop guest runs at 1920x1080 (fps cap 60); the bench writes a byte to its
//! serial port `rate` times a second, and the guest repaints a 16-pixel square for each: a
//! stream of small partial updates at the given rate. Both clients draw it in an X window of
//! the same size ([`WINDOW`]). Per client it reports the CPU seconds of the client process (all
//! threads, llvmpipe's included) and of Xvfb per update, and, for tessera-client, the time
//! from an update's arrival (the SPICE library's callback) to its presentation
//! (`--latency-trace`), median and p99. CPU is measured in a run without the trace, which adds
//! a frame per update. Each round runs every client once (the traced run included), the order
//! rotated every round; the table gives medians over the rounds and the ratio.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::bench_display_latency::{free_port, percentiles, set_ticket, TICKET};
use crate::stats::{check_rounds, median, ratio, rotated};

const W: u32 = 1920;
const H: u32 = 1080;
const WARMUP: Duration = Duration::from_secs(8);
/// The least time between fitting a window and measuring: the resize redraws it all.
const SETTLE: Duration = Duration::from_secs(2);
/// The X window both clients draw in, so that both present the same pixels: the guest's
/// 1920x1080 with room for a toolbar. remote-viewer sizes its window to the guest's screen
/// itself once connected, so each client's window is set to this after the warm-up, and
/// checked again after the measurement.
const WINDOW: (u32, u32) = (1940, 1150);
/// The runs of a round, rotated every round.
const CLIENTS: [Client; 3] = [Client::Tessera, Client::RemoteViewer, Client::TesseraTraced];

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Client {
    TesseraTraced,
    Tessera,
    RemoteViewer,
}

impl Client {
    fn name(self) -> &'static str {
        match self {
            Client::TesseraTraced => "tessera-client (traced)",
            Client::Tessera => "tessera-client",
            Client::RemoteViewer => "remote-viewer",
        }
    }
}

/// CPU seconds (user + system, all threads) of `pid` so far.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').context("odd /proc stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
    // SAFETY: sysconf takes no pointers.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks / hz)
}

/// What every run shares: the built programs, the guest, the X server.
struct Bench {
    repo: PathBuf,
    dir: PathBuf,
    kernel: PathBuf,
    display: String,
    xvfb: u32,
}

pub fn run(repo: &Path, secs: u64, rate: u32, runs: usize) -> Result<()> {
    check_rounds(runs)?;
    crate::build_release(repo, &["tessera-vmm", "tessera-display", "tessera-client"])?;
    let dir = repo.join("target/bench/client");
    std::fs::create_dir_all(&dir)?;
    let kernel = dir.join("demo.elf");
    std::fs::write(&kernel, tessera_demo_guest::ELF)?;
    let (xvfb, n) =
        tessera_e2e::x11::spawn_xvfb("1952x1200x24").context("Xvfb (apt-get install xvfb)")?;
    let xvfb = Killed(xvfb);
    let bench = Bench {
        repo: repo.to_path_buf(),
        dir,
        kernel,
        display: format!(":{n}"),
        xvfb: xvfb.0.id(),
    };
    let mut results: Vec<Vec<Measured>> = CLIENTS.iter().map(|_| Vec::new()).collect();
    for round in 0..runs {
        for i in rotated(CLIENTS.len(), round) {
            let client = CLIENTS[i];
            eprintln!(
                "[bench-client] round {}/{runs}: {}: {secs} s of {rate} updates/s at {W}x{H}",
                round + 1,
                client.name()
            );
            let m = bench.measure(client, secs, rate)?;
            eprintln!(
                "[bench-client]   {} updates, client {:.2} / Xvfb {:.2} CPU ms per update",
                m.updates,
                m.client_ms_per_update(),
                m.xvfb_ms_per_update()
            );
            results[i].push(m);
        }
    }
    print_table(&results, runs);
    Ok(())
}

/// Medians over the rounds per client, the ratio tessera-client / remote-viewer, and the
/// traced run's latency over all its rounds' updates.
fn print_table(results: &[Vec<Measured>], runs: usize) {
    let of = |c: Client| &results[CLIENTS.iter().position(|&x| x == c).unwrap_or(0)];
    let med = |c: Client, f: fn(&Measured) -> f64| median(&of(c).iter().map(f).collect::<Vec<_>>());
    println!(
        "| client ({runs} rounds, medians; window {}x{}) | updates per round | client CPU ms per update | Xvfb CPU ms per update | client + Xvfb CPU ms per update | arrival to presentation, median / p99 (ms) |",
        WINDOW.0, WINDOW.1
    );
    println!("|---|---|---|---|---|---|");
    for c in [Client::Tessera, Client::RemoteViewer] {
        println!(
            "| {} | {:.0} | {:.2} | {:.2} | {:.2} | - |",
            c.name(),
            med(c, |m| m.updates as f64),
            med(c, Measured::client_ms_per_update),
            med(c, Measured::xvfb_ms_per_update),
            med(c, Measured::both_ms_per_update)
        );
    }
    let r = |f: fn(&Measured) -> f64| ratio(med(Client::Tessera, f), med(Client::RemoteViewer, f));
    println!(
        "| tessera-client / remote-viewer | | {} | {} | {} | |",
        r(Measured::client_ms_per_update),
        r(Measured::xvfb_ms_per_update),
        r(Measured::both_ms_per_update)
    );
    let traced = of(Client::TesseraTraced);
    let latency: Vec<f64> = traced.iter().flat_map(|m| m.latency_ms.clone()).collect();
    let (m, p) = percentiles(latency.clone());
    // remote-viewer has no such trace: this row has no peer.
    println!(
        "| {} | {:.0} | (trace run) | (trace run) | (trace run) | {m:.1} / {p:.1} ({} updates, all rounds; no peer) |",
        Client::TesseraTraced.name(),
        med(Client::TesseraTraced, |m| m.updates as f64),
        latency.len()
    );
}

struct Measured {
    updates: u64,
    client_cpu: f64,
    xvfb_cpu: f64,
    latency_ms: Vec<f64>,
}

impl Measured {
    fn client_ms_per_update(&self) -> f64 {
        self.client_cpu * 1000.0 / self.updates as f64
    }
    fn xvfb_ms_per_update(&self) -> f64 {
        self.xvfb_cpu * 1000.0 / self.updates as f64
    }
    fn both_ms_per_update(&self) -> f64 {
        self.client_ms_per_update() + self.xvfb_ms_per_update()
    }
}

/// The stimulus: a byte to the guest's serial port `rate` times a second, on a thread of its
/// own so that waiting for a window never pauses the stream.
struct Stream {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: JoinHandle<Result<()>>,
}

impl Stream {
    fn start(mut serial: ChildStdin, rate: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let (stop2, sent2) = (stop.clone(), sent.clone());
        let thread = std::thread::spawn(move || -> Result<()> {
            let gap = Duration::from_secs(1) / rate;
            let t0 = Instant::now();
            let mut n = 0u32;
            while !stop2.load(Ordering::Relaxed) {
                n += 1;
                serial.write_all(&[n as u8])?;
                serial.flush()?;
                sent2.store(u64::from(n), Ordering::Relaxed);
                // Paced from the start, so that a late wake-up does not lower the rate.
                if let Some(d) = (t0 + gap * n).checked_duration_since(Instant::now()) {
                    std::thread::sleep(d);
                }
            }
            Ok(())
        });
        Self { stop, sent, thread }
    }

    fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    fn finish(self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("the stream thread panicked"))?
            .context("writing to the guest's serial port")
    }
}

/// Runs `xdotool` on the bench's display; its output.
fn xdotool(display: &str, args: &[&str]) -> Result<String> {
    let out = Command::new("xdotool")
        .args(args)
        .env("DISPLAY", display)
        .output()
        .context("xdotool (apt-get install xdotool)")?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The client's mapped window, found by the process ID that GTK and winit both put on it.
fn client_window(display: &str, pid: u32) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = xdotool(
            display,
            &["search", "--onlyvisible", "--pid", &pid.to_string()],
        )?;
        if let Some(w) = out.lines().next() {
            return Ok(w.trim().to_string());
        }
        if Instant::now() > deadline {
            bail!("the client (pid {pid}) showed no window within 30 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn window_size(display: &str, win: &str) -> Result<(u32, u32)> {
    let out = xdotool(display, &["getwindowgeometry", "--shell", win])?;
    let value = |key: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(key)?.parse::<u32>().ok())
            .with_context(|| format!("no {key} in {out:?}"))
    };
    Ok((value("WIDTH=")?, value("HEIGHT=")?))
}

/// Sets `win` to [`WINDOW`] (no window manager runs, so the request is the resize) and waits
/// until the client has taken it.
fn fit_window(display: &str, win: &str) -> Result<()> {
    let (w, h) = (WINDOW.0.to_string(), WINDOW.1.to_string());
    xdotool(display, &["windowsize", win, &w, &h])?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while window_size(display, win)? != WINDOW {
        if Instant::now() > deadline {
            bail!(
                "window {win} is {:?}, not {WINDOW:?}",
                window_size(display, win)?
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

impl Bench {
    /// One client's run: a fresh VMM and client, the stream through an 8 s warm-up, then
    /// `secs` measured.
    fn measure(&self, client: Client, secs: u64, rate: u32) -> Result<Measured> {
        let socket = self.dir.join("api.sock");
        let (mut vmm, port) = self.start_vmm(&socket)?;
        let mut console = vmm.0.stdout.take().context("no VMM stdout")?;
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while matches!(console.read(&mut buf), Ok(n) if n > 0) {}
        });
        let serial = vmm.0.stdin.take().context("no VMM stdin")?;
        set_ticket(&socket)?;
        let trace = self.dir.join("latency.txt");
        let _ = std::fs::remove_file(&trace);
        let viewer = self.start_client(client, port, &trace)?;
        // Connect, draw the first 1080p frame, settle; the stream runs through the warm-up too.
        let start = Instant::now();
        let stream = Stream::start(serial, rate);
        let win = client_window(&self.display, viewer.0.id())?;
        // remote-viewer sizes its window to the guest's screen once that shows: fit it after.
        std::thread::sleep(WARMUP.saturating_sub(start.elapsed()));
        fit_window(&self.display, &win)?;
        std::thread::sleep(SETTLE);
        let traced_before = std::fs::read_to_string(&trace)
            .map(|t| t.lines().count())
            .unwrap_or(0);
        let (c0, x0, n0) = (
            cpu_seconds(viewer.0.id())?,
            cpu_seconds(self.xvfb)?,
            stream.sent(),
        );
        std::thread::sleep(Duration::from_secs(secs));
        let (c1, x1, n1) = (
            cpu_seconds(viewer.0.id())?,
            cpu_seconds(self.xvfb)?,
            stream.sent(),
        );
        // A client that resized itself mid-run drew other pixels than its peer.
        let size = window_size(&self.display, &win)?;
        ensure!(size == WINDOW, "{}'s window became {size:?}", client.name());
        drop(viewer);
        stream.finish()?;
        let latency_ms = std::fs::read_to_string(&trace)
            .unwrap_or_default()
            .lines()
            .skip(traced_before)
            .filter_map(|l| l.trim().parse::<f64>().ok())
            .map(|us| us / 1000.0)
            .collect::<Vec<_>>();
        if client == Client::TesseraTraced && latency_ms.is_empty() {
            bail!("tessera-client traced no update (did it connect?)");
        }
        Ok(Measured {
            updates: n1 - n0,
            client_cpu: c1 - c0,
            xvfb_cpu: x1 - x0,
            latency_ms,
        })
    }

    /// tessera-vmm with the demo guest at 1920x1080 and a SPICE display; it and its port.
    fn start_vmm(&self, socket: &Path) -> Result<(Killed, u16)> {
        let port = free_port()?;
        let _ = std::fs::remove_file(socket);
        let vmm = Killed(
            Command::new(self.repo.join("target/release/tessera-vmm"))
                .arg("--kernel")
                .arg(&self.kernel)
                .args([
                    "--memory",
                    "64M",
                    "--cmdline",
                    "name=client-bench mode=1920x1080",
                ])
                .arg("--api-socket")
                .arg(socket)
                .arg("--display")
                .arg(format!("spice-port={port},fps=60"))
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .context("starting tessera-vmm")?,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            if Instant::now() > deadline {
                bail!("the VMM's control socket did not appear");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok((vmm, port))
    }

    /// The client on the bench's display, connecting to `port`; the traced run writes its
    /// latencies to `trace`.
    fn start_client(&self, client: Client, port: u16, trace: &Path) -> Result<Killed> {
        let vv = self.dir.join("bench.vv");
        std::fs::write(
            &vv,
            format!("[virt-viewer]\ntype=spice\nhost=127.0.0.1\nport={port}\npassword={TICKET}\ntitle=client-bench\n"),
        )?;
        let runtime = self.dir.join("xdg");
        std::fs::create_dir_all(&runtime)?;
        let mut cmd = match client {
            Client::RemoteViewer => Command::new("remote-viewer"),
            _ => {
                let mut c = Command::new(self.repo.join("target/release/tessera-client"));
                c.arg("--size")
                    .arg(format!("{}x{}", WINDOW.0, WINDOW.1))
                    .arg("--config")
                    .arg(self.dir.join("client.toml"));
                if client == Client::TesseraTraced {
                    c.arg("--latency-trace").arg(trace);
                }
                c
            }
        };
        Ok(Killed(
            cmd.arg(&vv)
                .env("DISPLAY", &self.display)
                .env("LIBGL_ALWAYS_SOFTWARE", "1")
                .env("XDG_RUNTIME_DIR", &runtime)
                .env("GDK_BACKEND", "x11")
                .env_remove("WAYLAND_DISPLAY")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("starting the client")?,
        ))
    }
}
