//! Real X clients for the display tests: a private Xvfb display, remote-viewer and other
//! clients on it, screenshots with xwd (parsed here), input with xdotool, a window manager's
//! key binding.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use x11rb::connection::Connection;
pub use x11rb::protocol::xproto::ModMask;
use x11rb::protocol::xproto::{AtomEnum, ConnectionExt as _, GrabMode};

/// The tessera-client binary beside the running test's. Brought up to date with the build
/// scripts/test.sh runs before the tests (a no-op there; in a developer's run it rebuilds a
/// stale client): another package's binary is not rebuilt for a test by cargo, and
/// `cargo build -p tessera-client` alone would resolve features differently and rebuild the
/// GUI stack for minutes. Call it before starting a server: tickets have timeouts.
pub fn client_binary() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let ok = Command::new(env!("CARGO"))
            .args(["build", "-q", "--workspace", "--all-targets"])
            .current_dir(&root)
            .status()
            .expect("run cargo")
            .success();
        assert!(ok, "building tessera-client failed");
        let exe = std::env::current_exe().expect("the test's path");
        let deps = exe.parent().expect("target/debug/deps");
        deps.parent().expect("target/debug").join("tessera-client")
    })
    .clone()
}

/// tessera-client on this display with `args`, in a 1000x720 window drawn by llvmpipe, its
/// settings in `dir`/client.toml and its log in `dir`/client.log.
pub fn start_client(x: &Xvfb, dir: &Path, args: &[&std::ffi::OsStr]) -> Proc {
    let runtime = dir.join("xdg");
    std::fs::create_dir_all(&runtime).expect("client runtime dir");
    let log = std::fs::File::create(dir.join("client.log")).expect("client log");
    Proc(
        x.cmd(client_binary().to_str().expect("UTF-8 path"))
            .args(args)
            .args(["--size", "1000x720", "--config"])
            .arg(dir.join("client.toml"))
            .env("LIBGL_ALWAYS_SOFTWARE", "1")
            .env("XDG_RUNTIME_DIR", &runtime)
            .env_remove("WAYLAND_DISPLAY")
            .stderr(log)
            .spawn()
            .expect("start tessera-client"),
    )
}

/// Whether the X tools are here; if not, a loud SKIP (a failure when TESSERA_REQUIRE_X=1).
pub fn x_tools() -> bool {
    let missing: Vec<&str> = ["Xvfb", "remote-viewer", "xwd", "xdotool", "openbox"]
        .into_iter()
        .filter(|t| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var("TESSERA_REQUIRE_X").as_deref() == Ok("1") {
        panic!("{missing:?} required (TESSERA_REQUIRE_X=1)");
    }
    eprintln!(
        "\n*** SKIP remote-viewer tests: {missing:?} not installed (apt-get install virt-viewer xvfb x11-apps xdotool openbox); they did NOT run ***\n"
    );
    false
}

/// A child killed on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A window manager's key binding (see [`Xvfb::bind_like_a_wm`]); dropped, it is gone.
pub struct WmBinding(#[allow(dead_code)] x11rb::rust_connection::RustConnection);

/// Starts Xvfb with one screen of `geometry` ("WIDTHxHEIGHTxDEPTH") on the first free
/// display: the server picks the number itself (`-displayfd`), under its own lock file, and
/// writes it once it accepts clients, so two processes never share a display and no client
/// starts before the server listens. The process and its display number.
pub fn spawn_xvfb(geometry: &str) -> std::io::Result<(Child, u32)> {
    use std::io::BufRead;
    let mut child = Command::new("Xvfb")
        .args([
            "-displayfd",
            "1",
            "-screen",
            "0",
            geometry,
            "-nolisten",
            "tcp",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut line = String::new();
    // A server that fails to start closes its stdout: read_line then returns 0 bytes.
    let read = match child.stdout.take() {
        Some(out) => std::io::BufReader::new(out).read_line(&mut line),
        None => Ok(0),
    };
    let number = read.map(|_| line.trim().parse::<u32>().ok());
    if let Ok(Some(n)) = number {
        return Ok((child, n));
    }
    let _ = child.kill();
    let _ = child.wait();
    Err(std::io::Error::other(match number {
        Err(e) => format!("Xvfb did not start: {e}"),
        _ => format!("Xvfb did not start (it wrote {line:?})"),
    }))
}

/// An Xvfb server on a display of its own.
pub struct Xvfb {
    pub display: String,
    _proc: Proc,
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        // SIGTERM first: Xvfb then removes its socket and lock file, which SIGKILL (Proc's)
        // leaves behind for a later test on the same display number.
        let _ = Command::new("kill")
            .args(["-TERM", &self._proc.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if matches!(self._proc.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Xvfb {
    /// A new 1280x1024 server on the first free display ([`spawn_xvfb`]).
    pub fn start() -> Self {
        let (child, n) = spawn_xvfb("1280x1024x24").expect("start Xvfb");
        Self {
            display: format!(":{n}"),
            _proc: Proc(child),
        }
    }

    pub fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("DISPLAY", &self.display)
            .env("GDK_BACKEND", "x11")
            .env("NO_AT_BRIDGE", "1");
        c
    }

    /// Runs an X client to completion; its stdout.
    pub fn run(&self, program: &str, args: &[&str]) -> String {
        let out = self.cmd(program).args(args).output().expect(program);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The first mapped window whose name contains `name`. A window that exists but is not
    /// mapped yet (a loaded machine shows that gap for seconds) cannot take the focus.
    pub fn find_window(&self, name: &str, wait: Duration) -> Option<String> {
        let deadline = Instant::now() + wait;
        loop {
            let out = self.run("xdotool", &["search", "--onlyvisible", "--name", name]);
            if let Some(w) = out.lines().next() {
                return Some(w.trim().to_string());
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Moves the pointer to `(x, y)` of the screen and clicks the left button there.
    pub fn click(&self, (x, y): (usize, usize)) {
        let (x, y) = (x.to_string(), y.to_string());
        self.run("xdotool", &["mousemove", &x, &y, "click", "1"]);
    }

    /// Gives `win` the keyboard focus and checks that it has it (a panic after 10 s if not).
    pub fn focus(&self, win: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            self.run("xdotool", &["windowfocus", "--sync", win]);
            if self.run("xdotool", &["getwindowfocus"]).trim() == win {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "window {win} never took the focus"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Binds `modifiers`+`keysym` the way a window manager binds Alt+Tab: a passive grab on
    /// the root window, so that while the binding lives the combination reaches no window
    /// unless a client holds the keyboard actively.
    pub fn bind_like_a_wm(&self, modifiers: ModMask, keysym: u32) -> WmBinding {
        let (conn, screen) = x11rb::connect(Some(&self.display)).expect("connect to Xvfb");
        let setup = conn.setup();
        let root = setup.roots[screen].root;
        let (min, max) = (setup.min_keycode, setup.max_keycode);
        let map = conn
            .get_keyboard_mapping(min, max - min + 1)
            .unwrap()
            .reply()
            .unwrap();
        let per = usize::from(map.keysyms_per_keycode);
        let index = map
            .keysyms
            .iter()
            .position(|&k| k == keysym)
            .unwrap_or_else(|| panic!("keysym {keysym:#x} is not on the keyboard"));
        let keycode = min + (index / per) as u8;
        conn.grab_key(
            true,
            root,
            modifiers,
            keycode,
            GrabMode::ASYNC,
            GrabMode::ASYNC,
        )
        .unwrap()
        .check()
        .expect("grab the key on the root window");
        WmBinding(conn)
    }

    /// Openbox managing this display (a real EWMH window manager: decorations, full-screen
    /// requests), once it has announced itself on the root window; it ends when dropped.
    pub fn window_manager(&self) -> Proc {
        let wm = Proc(
            self.cmd("openbox")
                .arg("--sm-disable")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start openbox (apt-get install openbox)"),
        );
        let (conn, screen) = x11rb::connect(Some(&self.display)).expect("connect to Xvfb");
        let root = conn.setup().roots[screen].root;
        let check = conn
            .intern_atom(false, b"_NET_SUPPORTING_WM_CHECK")
            .unwrap()
            .reply()
            .unwrap()
            .atom;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let prop = conn
                .get_property(false, root, check, AtomEnum::WINDOW, 0, 1)
                .unwrap()
                .reply()
                .unwrap();
            if prop.value_len > 0 {
                return wm;
            }
            assert!(Instant::now() < deadline, "openbox did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Where `win`'s contents are on the screen, and their size: (x, y, width, height).
    pub fn geometry(&self, win: &str) -> (usize, usize, usize, usize) {
        let out = self.run("xdotool", &["getwindowgeometry", "--shell", win]);
        let value = |key: &str| -> usize {
            out.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
                .unwrap_or_else(|| panic!("no {key} in {out:?}"))
        };
        (value("X"), value("Y"), value("WIDTH"), value("HEIGHT"))
    }

    /// A screenshot of the whole screen (xwd is retried a few times: a dump taken while a
    /// client maps a window can come back short).
    pub fn screenshot(&self) -> Image {
        let mut last = String::new();
        for _ in 0..5 {
            let out = self
                .cmd("xwd")
                .args(["-root", "-silent"])
                .output()
                .expect("xwd");
            if let Some(image) = Image::from_xwd(&out.stdout) {
                return image;
            }
            last = format!(
                "{} bytes, status {}, xwd said: {}",
                out.stdout.len(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("no screenshot from xwd: {last}");
    }
}

/// Pixels as 0x00RRGGBB.
pub struct Image {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u32>,
}

impl Image {
    /// Parses X's window dump format (ZPixmap, 24-bit colour in 3 or 4 bytes per pixel, as
    /// xwd writes a 24-bit screen).
    pub fn from_xwd(b: &[u8]) -> Option<Self> {
        let f = |i: usize| -> Option<u32> {
            Some(u32::from_be_bytes(
                b.get(i * 4..i * 4 + 4)?.try_into().ok()?,
            ))
        };
        let header = f(0)? as usize;
        let (format, width, height) = (f(2)?, f(4)? as usize, f(5)? as usize);
        let (byte_order, bpp, line) = (f(7)?, f(11)?, f(12)? as usize);
        let ncolors = f(19)? as usize;
        // Xvfb's 24-bit visuals come as 3 or 4 bytes per pixel (lines may be padded further).
        let bytes = bpp as usize / 8;
        if format != 2 || !(bpp == 24 || bpp == 32) || line < width * bytes {
            return None;
        }
        let start = header + ncolors * 12;
        let mut pixels = Vec::with_capacity(width * height);
        for y in 0..height {
            for x in 0..width {
                let o = start + y * line + x * bytes;
                let mut p = [0u8; 4];
                p[..bytes].copy_from_slice(b.get(o..o + bytes)?);
                let v = if byte_order == 0 {
                    u32::from_le_bytes(p)
                } else {
                    u32::from_be_bytes(p)
                };
                pixels.push(v & 0x00ff_ffff);
            }
        }
        Some(Self {
            width,
            height,
            pixels,
        })
    }

    /// Writes the image as a PPM (for a failing test's evidence).
    pub fn save_ppm(&self, path: &Path) {
        let mut out = format!("P6 {} {} 255\n", self.width, self.height).into_bytes();
        for p in &self.pixels {
            out.extend_from_slice(&[(p >> 16) as u8, (p >> 8) as u8, *p as u8]);
        }
        let _ = std::fs::write(path, out);
    }

    pub fn at(&self, x: usize, y: usize) -> u32 {
        self.pixels[y * self.width + x]
    }

    /// The centres of the buttons in an egui toolbar along the top of a window `width` wide
    /// whose contents start at `(left, top)`, left to right: on the first row (of the top 80) that crosses
    /// three or more stretches of 40 pixels or more unlike the panel (the row's first pixel),
    /// the middle of each stretch, 8 pixels down (egui's buttons are about 20 high). Found by
    /// their shape, not by coordinates, so that a font or theme change does not move them.
    pub fn toolbar_buttons(
        &self,
        (left, top): (usize, usize),
        width: usize,
    ) -> Vec<(usize, usize)> {
        let end = (left + width).min(self.width);
        for y in top..(top + 80).min(self.height) {
            let panel = self.at(left, y);
            let mut found = Vec::new();
            let mut start = None;
            for x in left..=end {
                let differs = x < end && self.at(x, y) != panel;
                match (differs, start) {
                    (true, None) => start = Some(x),
                    (false, Some(s)) => {
                        if x - s >= 40 {
                            found.push(((s + x) / 2, y + 8));
                        }
                        start = None;
                    }
                    _ => {}
                }
            }
            if found.len() >= 3 {
                return found;
            }
        }
        Vec::new()
    }

    /// Where `fb` (w x h, 0x00RRGGBB) sits in this image, if anywhere: the first place where
    /// a few probe pixels match (the corners, the centre, and pixels unlike the first, so
    /// that a mostly uniform picture is not found in any uniform area).
    pub fn find(&self, fb: &[u32], w: usize, h: usize) -> Option<(usize, usize)> {
        let mut probes = vec![
            (0, 0),
            (1, 0),
            (0, 1),
            (w / 2, h / 2),
            (w - 1, h - 1),
            (w - 1, 0),
        ];
        let unlike: Vec<usize> = (0..fb.len()).filter(|&i| fb[i] != fb[0]).collect();
        let step = (unlike.len() / 12).max(1);
        probes.extend(
            unlike
                .iter()
                .step_by(step)
                .take(12)
                .map(|&i| (i % w, i / w)),
        );
        for oy in 0..self.height.saturating_sub(h - 1) {
            for ox in 0..self.width.saturating_sub(w - 1) {
                if probes
                    .iter()
                    .all(|&(x, y)| self.at(ox + x, oy + y) == fb[y * w + x])
                {
                    return Some((ox, oy));
                }
            }
        }
        None
    }

    /// Pixels of the w x h area at (ox, oy) that differ from `fb`.
    pub fn differing(&self, ox: usize, oy: usize, fb: &[u32], w: usize, h: usize) -> usize {
        (0..h)
            .flat_map(|y| (0..w).map(move |x| (x, y)))
            .filter(|&(x, y)| self.at(ox + x, oy + y) != fb[y * w + x])
            .count()
    }
}

/// A remote-viewer connection file.
pub fn vv_file(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(format!("{name}.vv"));
    std::fs::write(&p, format!("[virt-viewer]\ntype=spice\n{body}")).unwrap();
    p
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
