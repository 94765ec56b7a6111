//! Helpers for tests that run the tessera-vmm binary on this machine's /dev/kvm.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use tessera_e2e::x11::Image;

pub mod boot;
pub mod screen;
pub mod spice;
#[allow(unused_imports)]
pub use boot::*;
#[allow(unused_imports)]
pub use screen::*;
#[allow(unused_imports)]
pub use spice::*;

pub const VMM: &str = env!("CARGO_BIN_EXE_tessera-vmm");

/// Whether /dev/kvm can be used. Prints a loud SKIP when not, unless TESSERA_REQUIRE_KVM=1
/// (set by the project's test command), in which case the test fails instead.
pub fn kvm_or_skip(test: &str) -> bool {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => true,
        Err(e) => {
            if std::env::var("TESSERA_REQUIRE_KVM").as_deref() == Ok("1") {
                panic!("{test}: /dev/kvm is required (TESSERA_REQUIRE_KVM=1) but unusable: {e}");
            }
            eprintln!(
                "\n*** SKIP {test}: /dev/kvm unusable here ({e}); this test did NOT run ***\n"
            );
            false
        }
    }
}

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Whether an environment switch such as TESSERA_REQUIRE_NESTED is set to 1.
pub fn required(var: &str) -> bool {
    std::env::var(var).as_deref() == Ok("1")
}

/// Whether the nested harness can run (QEMU installed). Prints a loud SKIP when not, unless
/// TESSERA_REQUIRE_NESTED=1 (set by the project's test command), which makes the test run and
/// fail instead.
pub fn nested_or_skip(test: &str) -> bool {
    let have_qemu = Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .is_ok();
    if !have_qemu && !required("TESSERA_REQUIRE_NESTED") {
        eprintln!(
            "\n*** SKIP {test}: qemu-system-x86_64 is not installed (the project's test command \
             installs it); this test did NOT run ***\n"
        );
        return false;
    }
    true
}

/// A scratch directory removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("tessera-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Self(p)
    }

    pub fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the VMM to completion with a time limit.
pub fn run_vmm(args: &[&str], timeout: Duration) -> Output {
    let child = Command::new(VMM)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_with_timeout(child, timeout)
}

pub fn wait_with_timeout(mut child: Child, timeout: Duration) -> Output {
    let deadline = Instant::now() + timeout;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "tessera-vmm did not exit within {timeout:?}\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

/// One HTTP/1.1 request over the API socket; returns (status, body).
pub fn http(socket: &Path, method: &str, path: &str) -> (u16, String) {
    let (status, body) = http_bytes(socket, method, path, b"");
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// One HTTP/1.1 request with a body; returns (status, body bytes).
pub fn http_bytes(socket: &Path, method: &str, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(resp.len());
    let head = String::from_utf8_lossy(&resp[..split]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, resp.get(split + 4..).unwrap_or_default().to_vec())
}

/// Waits for the API socket to accept connections.
pub fn wait_for_socket(socket: &Path, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while UnixStream::connect(socket).is_err() {
        assert!(
            Instant::now() < deadline,
            "API socket {socket:?} never came up"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Polls `f` every 100 ms until it holds; fails the test after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// An RGB PNG (the VMM's screenshot) as 0x00RRGGBB pixels.
pub fn decode_png(bytes: &[u8]) -> Image {
    let dec = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = dec.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb);
    let pixels = buf[..info.buffer_size()]
        .chunks_exact(3)
        .map(|p| u32::from(p[0]) << 16 | u32::from(p[1]) << 8 | u32::from(p[2]))
        .collect();
    Image {
        width: info.width as usize,
        height: info.height as usize,
        pixels,
    }
}

/// Builds tessera-display (next to tessera-vmm, where the VMM looks for it) once per test
/// binary: `cargo test -p tessera-vmm` alone does not build other packages' programs.
pub fn build_display_program() {
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        let st = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "-p", "tessera-display"])
            .current_dir(repo())
            .status()
            .unwrap();
        assert!(st.success(), "cargo build -p tessera-display failed");
    });
}

/// A VMM with a SPICE display, running `kernel` (ELF) with its serial console in a file.
pub struct DisplayVmm {
    pub proc: tessera_e2e::x11::Proc,
    pub socket: PathBuf,
    pub console: PathBuf,
    pub port: u16,
}

impl DisplayVmm {
    /// Starts it in `dir` (64 MiB, `--display spice-port=N` plus `display_extra`, e.g.
    /// ",fps=30") and waits for its control socket.
    pub fn start(dir: &Scratch, kernel: &Path, cmdline: Option<&str>, display_extra: &str) -> Self {
        Self::start_logging(dir, kernel, cmdline, display_extra, None)
    }

    /// As `start`, with the VMM's warnings and errors (`--log warn`) written to `log`.
    pub fn start_logging(
        dir: &Scratch,
        kernel: &Path,
        cmdline: Option<&str>,
        display_extra: &str,
        log: Option<&Path>,
    ) -> Self {
        Self::start_with_env(dir, kernel, cmdline, display_extra, log, &[])
    }

    /// As `start_logging`, with extra environment variables for the VMM.
    pub fn start_with_env(
        dir: &Scratch,
        kernel: &Path,
        cmdline: Option<&str>,
        display_extra: &str,
        log: Option<&Path>,
        env: &[(&str, &str)],
    ) -> Self {
        let socket = dir.0.join("api.sock");
        let console = dir.0.join("console.log");
        let port = tessera_e2e::x11::free_port();
        build_display_program();
        let mut cmd = Command::new(VMM);
        cmd.args(["--kernel", kernel.to_str().unwrap(), "--memory", "64M"])
            .args(["--api-socket", socket.to_str().unwrap()])
            .arg("--serial")
            .arg(format!("file:{}", console.display()))
            .arg("--display")
            .arg(format!("spice-port={port}{display_extra}"))
            .envs(env.iter().copied())
            .stdin(Stdio::null());
        if let Some(c) = cmdline {
            cmd.args(["--cmdline", c]);
        }
        if let Some(log) = log {
            cmd.args(["--log", "warn"])
                .stderr(std::fs::File::create(log).unwrap());
        }
        let proc = tessera_e2e::x11::Proc(cmd.spawn().unwrap());
        wait_for_socket(&socket, Duration::from_secs(10));
        DisplayVmm {
            proc,
            socket,
            console,
            port,
        }
    }

    /// The guest's serial output so far.
    pub fn console_text(&self) -> String {
        std::fs::read_to_string(&self.console).unwrap_or_default()
    }

    /// The VMM's own screenshot (control API).
    pub fn screenshot(&self) -> Image {
        let (status, png) = http_bytes(&self.socket, "GET", "/display/screenshot", b"");
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&png));
        decode_png(&png)
    }

    /// What the control API's `GET /display` says.
    pub fn display_info(&self) -> serde_json::Value {
        let (status, body) = http_bytes(&self.socket, "GET", "/display", b"");
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).unwrap()
    }

    /// Sets the SPICE ticket for `lifetime_secs`.
    pub fn set_ticket(&self, ticket: &str, lifetime_secs: u64) {
        let body = format!(r#"{{"ticket": "{ticket}", "lifetime_secs": {lifetime_secs}}}"#);
        let (status, answer) = http_bytes(&self.socket, "PUT", "/display/ticket", body.as_bytes());
        assert_eq!(status, 204, "{}", String::from_utf8_lossy(&answer));
    }
}
