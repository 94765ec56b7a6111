//! tessera-client, the thin client's real window under Xvfb (glow on llvmpipe), against two
//! SPICE servers: tessera-vmm running the demo desktop guest (the window's pixels equal the
//! VMM's screenshot, text typed with xdotool reaches the guest, a click lands where the
//! window's pointer is and captures the keyboard, so that Alt+Tab, which a window manager's
//! binding takes otherwise, reaches the guest until Ctrl+Alt releases it, and the window's
//! size reaches the VMM as a resolution request; under a window manager, the toolbar's Full
//! screen takes the whole screen and asks the guest for it, and gives it back) and QEMU
//! (`-accel tcg -vga std -spice`; its screendump is the server's framebuffer, and Esc typed
//! into the window opens SeaBIOS's boot menu). The client opens the desktop from a connection
//! file (the broker's .vv), as `tessera-client FILE.vv` does.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use tessera_demo_guest::ELF;
use tessera_e2e::x11::{client_binary, vv_file, x_tools, ModMask, Proc, Xvfb};

/// The Tab key's keysym.
const XK_TAB: u32 = 0xff09;

/// tessera-client on `x`, opening `vv`, its log in `dir`.
fn start_client(x: &Xvfb, dir: &Scratch, vv: &std::path::Path) -> Proc {
    tessera_e2e::x11::start_client(x, &dir.0, &[vv.as_os_str()])
}

/// The demo guest (800x600) on a VMM with a display, and a one-time connection file for it.
fn demo_desktop(dir: &Scratch) -> (DisplayVmm, std::path::PathBuf) {
    let kernel = dir.file("demo.elf", ELF);
    let vmm = DisplayVmm::start(dir, &kernel, Some("name=thin-client mode=800x600"), "");
    wait_for("the desktop", Duration::from_secs(30), || {
        vmm.console_text().contains("name=thin-client")
    });
    vmm.set_ticket("client-ticket", 60);
    let vv = vv_file(
        &dir.0,
        "desktop",
        &format!(
            "host=127.0.0.1\nport={}\npassword=client-ticket\ntitle=thin-client\ndelete-this-file=1\n",
            vmm.port
        ),
    );
    (vmm, vv)
}

/// The resolution the VMM was last asked for by a client.
fn requested(vmm: &DisplayVmm) -> Option<(u64, u64)> {
    let info = vmm.display_info();
    let dim = |k: &str| info[k].as_u64();
    dim("requested_width").zip(dim("requested_height"))
}

/// The first resolution a client's window asks for, once it has (within 10 s).
fn first_request(vmm: &DisplayVmm) -> (u64, u64) {
    let mut asked = None;
    wait_for(
        "the window's size asked of the guest",
        Duration::from_secs(10),
        || {
            asked = requested(vmm);
            asked.is_some()
        },
    );
    asked.unwrap()
}

#[test]
fn the_thin_clients_window_shows_the_desktop_and_sends_it_keys_and_clicks() {
    if !kvm_or_skip("thin client window") || !x_tools() {
        return;
    }
    client_binary();
    let dir = Scratch::new("client-window");
    let (vmm, vv) = demo_desktop(&dir);
    let x = Xvfb::start();
    let _client = start_client(&x, &dir, &vv);
    let (ox, oy) = client_shows_vmm_screen(&x, &vmm, "tessera-client");
    assert!(!vv.exists(), "the one-time connection file was left behind");

    let win = x.find_window("Tessera", Duration::from_secs(10)).unwrap();
    x.focus(&win);
    // A window manager's Alt+Tab takes the combination from every window...
    let _wm = x.bind_like_a_wm(ModMask::M1, XK_TAB);
    let (px, py) = (ox + 200, oy + 150);
    // (hovering gives the picture the window's keys)
    x.run("xdotool", &["mousemove", &px.to_string(), &py.to_string()]);
    x.run("xdotool", &["key", "alt+Tab", "q"]);
    wait_for("q on the console", Duration::from_secs(15), || {
        vmm.console_text().contains('q')
    });
    assert!(
        !vmm.console_text().contains("\tq"),
        "the window manager's Alt+Tab reached the guest"
    );
    // ... until a click on the picture captures the keyboard; the click lands on the guest.
    x.run("xdotool", &["click", "1"]);
    wait_for("the click on the console", Duration::from_secs(15), || {
        last_click(&vmm.console_text())
            .is_some_and(|(cx, cy)| (cx - 200).abs() <= 1 && (cy - 150).abs() <= 1)
    });
    let log = dir.0.join("client.log");
    let logged = |what: &str| {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains(what)
    };
    wait_for("the capture", Duration::from_secs(10), || {
        logged("keyboard captured")
    });
    x.run("xdotool", &["key", "alt+Tab", "w"]);
    wait_for("Alt+Tab in the guest", Duration::from_secs(15), || {
        vmm.console_text().contains("\tw")
    });
    x.run("xdotool", &["type", "--delay", "120", "Hello 42"]);
    wait_for(
        "the typed text on the console",
        Duration::from_secs(20),
        || vmm.console_text().contains("Hello 42"),
    );
    // The guest drew the text and the pointer: the window shows the new screen too.
    assert_eq!(
        client_shows_vmm_screen(&x, &vmm, "tessera-client"),
        (ox, oy)
    );
    // Ctrl+Alt gives the keyboard back: Alt+Tab is the window manager's again.
    x.run("xdotool", &["key", "ctrl+alt"]);
    wait_for("the release", Duration::from_secs(10), || {
        logged("keyboard released")
    });
    x.run("xdotool", &["key", "alt+Tab", "z"]);
    wait_for("z on the console", Duration::from_secs(15), || {
        vmm.console_text().contains('z')
    });
    assert!(
        !vmm.console_text().contains("\tz"),
        "Alt+Tab reached the guest after the release"
    );

    // The window's picture area, once settled, is asked of the guest as its resolution; a
    // resized window asks again (80 pixels less each way: the toolbar stays as high).
    let (w, h) = first_request(&vmm);
    // (less the panel's margins)
    assert!(
        (900..=1000).contains(&w) && (600..720).contains(&h),
        "a 1000x720 window asked for {w}x{h}"
    );
    x.run("xdotool", &["windowsize", "--sync", &win, "920", "640"]);
    wait_for(
        "the new size asked of the guest",
        Duration::from_secs(10),
        || requested(&vmm) == Some((w - 80, h - 80)),
    );
}

#[test]
fn the_thin_client_goes_full_screen_and_back_under_a_window_manager() {
    if !kvm_or_skip("thin client full screen") || !x_tools() {
        return;
    }
    client_binary();
    let dir = Scratch::new("client-full-screen");
    let (vmm, vv) = demo_desktop(&dir);
    let x = Xvfb::start();
    let _wm = x.window_manager();
    let _client = start_client(&x, &dir, &vv);
    client_shows_vmm_screen(&x, &vmm, "tessera-client");
    let win = x.find_window("Tessera", Duration::from_secs(10)).unwrap();
    let (left, top, width, height) = x.geometry(&win);
    assert_eq!((width, height), (1000, 720), "the window as asked for");
    let (w, h) = first_request(&vmm);
    let (margin_w, margin_h) = (1000 - w, 720 - h);
    // The toolbar: Disconnect, Log off, Ctrl+Alt+Del, Full screen.
    let toolbar = |origin, width| {
        let buttons = x.screenshot().toolbar_buttons(origin, width);
        assert_eq!(buttons.len(), 4, "the toolbar's buttons: {buttons:?}");
        x.click(buttons[3]);
    };
    toolbar((left, top), width);
    // The window manager gives it the screen (1280x1024), and the guest is asked for all of it.
    wait_for("the full screen", Duration::from_secs(10), || {
        x.geometry(&win) == (0, 0, 1280, 1024)
    });
    wait_for(
        "the screen's size asked of the guest",
        Duration::from_secs(10),
        || requested(&vmm) == Some(((1280 - margin_w) & !7, 1024 - margin_h)),
    );
    // Leave full screen: the window and the request are as before.
    toolbar((0, 0), 1280);
    wait_for("the window back", Duration::from_secs(10), || {
        x.geometry(&win) == (left, top, width, height)
    });
    wait_for(
        "the window's size asked again",
        Duration::from_secs(10),
        || requested(&vmm) == Some((w, h)),
    );
}

/// QEMU's screen through QMP's screendump (a PPM of its display surface).
fn qemu_screen(qmp: &std::path::Path, dir: &Scratch) -> tessera_e2e::x11::Image {
    use std::io::{BufRead, BufReader, Write};
    let out = dir.0.join("screendump.ppm");
    let mut s = std::os::unix::net::UnixStream::connect(qmp).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap(); // the greeting
    let dump = format!(
        r#"{{"execute":"qmp_capabilities"}}{{"execute":"screendump","arguments":{{"filename":"{}"}}}}"#,
        out.display()
    );
    s.write_all(dump.as_bytes()).unwrap();
    for _ in 0..2 {
        line.clear();
        r.read_line(&mut line).unwrap();
        assert!(line.contains("return"), "QMP: {line}");
    }
    let ppm = std::fs::read(&out).unwrap();
    // "P6\n<w> <h>\n255\n" then RGB.
    let mut fields = Vec::new();
    let mut at = 0;
    while fields.len() < 4 {
        while ppm[at].is_ascii_whitespace() {
            at += 1;
        }
        let start = at;
        while !ppm[at].is_ascii_whitespace() {
            at += 1;
        }
        fields.push(String::from_utf8_lossy(&ppm[start..at]).into_owned());
    }
    let (w, h): (usize, usize) = (fields[1].parse().unwrap(), fields[2].parse().unwrap());
    let pixels = ppm[at + 1..]
        .chunks_exact(3)
        .take(w * h)
        .map(|p| u32::from(p[0]) << 16 | u32::from(p[1]) << 8 | u32::from(p[2]))
        .collect();
    tessera_e2e::x11::Image {
        width: w,
        height: h,
        pixels,
    }
}

#[test]
fn the_thin_clients_window_shows_qemus_display_and_types_into_it() {
    if !x_tools() {
        return;
    }
    if Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!("qemu-system-x86_64 is missing (scripts/test.sh installs qemu-system-x86)");
    }
    client_binary();
    let dir = Scratch::new("client-qemu");
    let port = tessera_e2e::x11::free_port();
    let qmp = dir.0.join("qmp.sock");
    // No disk: SeaBIOS waits 60 s at "Press ESC for boot menu"; Esc opens the menu.
    let _qemu = Proc(
        Command::new("qemu-system-x86_64")
            .args([
                "-accel", "tcg", "-m", "64", "-vga", "std", "-display", "none",
            ])
            .args([
                "-nodefaults",
                "-no-user-config",
                "-boot",
                "menu=on,splash-time=60000",
            ])
            .args(["-object", "secret,id=spicepw,data=qemu-ticket"])
            .arg("-spice")
            .arg(format!(
                "port={port},addr=127.0.0.1,password-secret=spicepw"
            ))
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", qmp.display()))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.0.join("qemu.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_for_socket(&qmp, Duration::from_secs(20));
    let vv = vv_file(
        &dir.0,
        "qemu",
        &format!("host=127.0.0.1\nport={port}\npassword=qemu-ticket\ntitle=qemu\n"),
    );
    let x = Xvfb::start();
    let _client = start_client(&x, &dir, &vv);
    let screen = || qemu_screen(&qmp, &dir);
    let differ = |a: &tessera_e2e::x11::Image, b: &tessera_e2e::x11::Image| {
        a.pixels
            .iter()
            .zip(&b.pixels)
            .filter(|(p, q)| p != q)
            .count()
    };
    // SeaBIOS has printed its prompt when its screen stops changing (but for the cursor), so
    // that what changes later is the key's doing.
    let mut last = screen();
    wait_for("SeaBIOS's prompt", Duration::from_secs(60), || {
        std::thread::sleep(Duration::from_secs(2));
        let now = screen();
        let settled = (now.width, now.height) == (last.width, last.height)
            && differ(&now, &last) < 100
            && now.pixels.iter().any(|p| *p != now.pixels[0]);
        last = now;
        settled
    });
    let before = screen();
    let (ox, oy) = client_shows(&x, "tessera-client (QEMU)", screen);

    let win = x.find_window("Tessera", Duration::from_secs(10)).unwrap();
    x.focus(&win);
    x.click((ox + 100, oy + 100));
    // The boot menu replaces the prompt: far more than a blinking cursor's pixels change.
    wait_for("SeaBIOS's boot menu", Duration::from_secs(30), || {
        x.run("xdotool", &["key", "Escape"]);
        std::thread::sleep(Duration::from_millis(500));
        differ(&screen(), &before) > 500
    });
    assert_eq!(client_shows(&x, "tessera-client (QEMU)", screen), (ox, oy));
}
