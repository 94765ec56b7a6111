//! Thin-client drawing cost: tessera-client and remote-viewer showing the same stream from
//! tessera-vmm, under Xvfb with Mesa's llvmpipe (the CPU is the GPU here).
//!
//! The demo desktop guest runs at 1920x1080 (fps cap 60); the bench writes a byte to its
//! serial port `rate` times a second, and the guest repaints a 16-pixel square for each: a
//! stream of small partial updates at the given rate. Per client it reports the CPU seconds of
//! the client process (all threads, llvmpipe's included) and of Xvfb per update, and, for
//! tessera-client, the time from an update's arrival (the SPICE library's callback) to its
//! presentation (`--latency-trace`), median and p99. CPU is measured in a run without the
//! trace, which adds a frame per update.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::bench_display_latency::{free_port, percentiles, set_ticket, TICKET};

const W: u32 = 1920;
const H: u32 = 1080;
const WARMUP: Duration = Duration::from_secs(8);

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

pub fn run(repo: &Path, secs: u64, rate: u32) -> Result<()> {
    crate::build_release(repo, &["tessera-vmm", "tessera-display", "tessera-client"])?;
    let dir = repo.join("target/bench/client");
    std::fs::create_dir_all(&dir)?;
    let kernel = dir.join("demo.elf");
    std::fs::write(&kernel, tessera_demo_guest::ELF)?;
    let (xvfb, n) =
        tessera_e2e::x11::spawn_xvfb("1952x1200x24").context("Xvfb (apt-get install xvfb)")?;
    let xvfb = Killed(xvfb);
    let display = format!(":{n}");
    let mut rows = Vec::new();
    for client in [Client::Tessera, Client::RemoteViewer, Client::TesseraTraced] {
        let name = match client {
            Client::TesseraTraced => "tessera-client (traced)",
            Client::Tessera => "tessera-client",
            Client::RemoteViewer => "remote-viewer",
        };
        eprintln!("[bench-client] {name}: {secs} s of {rate} updates/s at {W}x{H}");
        rows.push((
            client,
            name,
            measure(
                repo,
                &dir,
                &kernel,
                &display,
                xvfb.0.id(),
                client,
                secs,
                rate,
            )?,
        ));
    }
    println!("| client | updates | client CPU ms per update | Xvfb CPU ms per update | arrival to presentation, median / p99 (ms) |");
    println!("|---|---|---|---|---|");
    for (client, name, r) in rows {
        let lat = if client == Client::TesseraTraced {
            let (m, p) = percentiles(r.latency_ms.clone());
            format!("{m:.1} / {p:.1} ({} updates)", r.latency_ms.len())
        } else {
            "-".into()
        };
        let cpu = |s: f64| {
            if client == Client::TesseraTraced {
                "(trace run)".to_string()
            } else {
                format!("{:.2}", s * 1000.0 / r.updates as f64)
            }
        };
        println!(
            "| {name} | {} | {} | {} | {lat} |",
            r.updates,
            cpu(r.client_cpu),
            cpu(r.xvfb_cpu)
        );
    }
    Ok(())
}

struct Measured {
    updates: u64,
    client_cpu: f64,
    xvfb_cpu: f64,
    latency_ms: Vec<f64>,
}

#[allow(clippy::too_many_arguments)]
fn measure(
    repo: &Path,
    dir: &Path,
    kernel: &Path,
    display: &str,
    xvfb: u32,
    client: Client,
    secs: u64,
    rate: u32,
) -> Result<Measured> {
    let port = free_port()?;
    let socket = dir.join("api.sock");
    let _ = std::fs::remove_file(&socket);
    let mut vmm = Killed(
        Command::new(repo.join("target/release/tessera-vmm"))
            .arg("--kernel")
            .arg(kernel)
            .args([
                "--memory",
                "64M",
                "--cmdline",
                "name=client-bench mode=1920x1080",
            ])
            .arg("--api-socket")
            .arg(&socket)
            .arg("--display")
            .arg(format!("spice-port={port},fps=60"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting tessera-vmm")?,
    );
    let mut console = vmm.0.stdout.take().context("no VMM stdout")?;
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while matches!(console.read(&mut buf), Ok(n) if n > 0) {}
    });
    let mut serial = vmm.0.stdin.take().context("no VMM stdin")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        if Instant::now() > deadline {
            bail!("the VMM's control socket did not appear");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    set_ticket(&socket)?;
    let vv = dir.join("bench.vv");
    std::fs::write(
        &vv,
        format!("[virt-viewer]\ntype=spice\nhost=127.0.0.1\nport={port}\npassword={TICKET}\ntitle=client-bench\n"),
    )?;
    let trace = dir.join("latency.txt");
    let _ = std::fs::remove_file(&trace);
    let runtime = dir.join("xdg");
    std::fs::create_dir_all(&runtime)?;
    let mut cmd = match client {
        Client::RemoteViewer => Command::new("remote-viewer"),
        _ => {
            let mut c = Command::new(repo.join("target/release/tessera-client"));
            c.args(["--size", "1940x1150", "--config"])
                .arg(dir.join("client.toml"));
            if client == Client::TesseraTraced {
                c.arg("--latency-trace").arg(&trace);
            }
            c
        }
    };
    let viewer = Killed(
        cmd.arg(&vv)
            .env("DISPLAY", display)
            .env("LIBGL_ALWAYS_SOFTWARE", "1")
            .env("XDG_RUNTIME_DIR", &runtime)
            .env("GDK_BACKEND", "x11")
            .env_remove("WAYLAND_DISPLAY")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the client")?,
    );
    // Connect, draw the first 1080p frame, settle; the stream runs through the warm-up too.
    let gap = Duration::from_secs(1) / rate;
    let mut byte = 0u8;
    let mut send = |serial: &mut std::process::ChildStdin| -> Result<()> {
        byte = byte.wrapping_add(1);
        serial.write_all(&[byte])?;
        serial.flush()?;
        Ok(())
    };
    let start = Instant::now();
    while start.elapsed() < WARMUP {
        send(&mut serial)?;
        std::thread::sleep(gap);
    }
    let traced_before = std::fs::read_to_string(&trace)
        .map(|t| t.lines().count())
        .unwrap_or(0);
    let (c0, x0) = (cpu_seconds(viewer.0.id())?, cpu_seconds(xvfb)?);
    let t0 = Instant::now();
    let mut updates = 0u64;
    while t0.elapsed() < Duration::from_secs(secs) {
        send(&mut serial)?;
        updates += 1;
        let next = t0 + gap * updates as u32;
        if let Some(d) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
    }
    let (c1, x1) = (cpu_seconds(viewer.0.id())?, cpu_seconds(xvfb)?);
    drop(viewer);
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
        updates,
        client_cpu: c1 - c0,
        xvfb_cpu: x1 - x0,
        latency_ms,
    })
}
