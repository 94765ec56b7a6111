//! The demo desktop guest on this machine's /dev/kvm, through the VMM's SPICE server to
//! remote-viewer under Xvfb: it paints its title bar with the name from its command line in
//! the mode the command line asks for, its clock ticks, remote-viewer shows the VMM's screen
//! pixel for pixel, typed text reaches the guest (serial echo, and drawn glyph for glyph), and
//! a click lands where the client's pointer is (virtio tablet), the guest drawing its pointer
//! there.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use tessera_demo_guest::layout::*;
use tessera_demo_guest::{render_text, ELF};
use tessera_e2e::x11::{free_port, vv_file, x_tools, Image, Proc, Xvfb};

const W: usize = 800;
const H: usize = 600;
const CELL: usize = 8 * FONT_SCALE as usize;

fn vmm_screenshot(socket: &std::path::Path) -> Image {
    let (status, png) = http_bytes(socket, "GET", "/display/screenshot", b"");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&png));
    decode_png(&png)
}

/// Pixels of `shot` at (x0, y0) that differ from `expected` (w x h).
fn differing(shot: &Image, x0: usize, y0: usize, expected: &(Vec<u32>, usize, usize)) -> usize {
    let (px, w, h) = expected;
    (0..*h)
        .flat_map(|y| (0..*w).map(move |x| (x, y)))
        .filter(|&(x, y)| shot.at(x0 + x, y0 + y) != px[y * w + x])
        .count()
}

fn crop(shot: &Image, x0: usize, y0: usize, w: usize, h: usize) -> (Vec<u32>, usize, usize) {
    let px = (0..h)
        .flat_map(|y| (0..w).map(move |x| (x, y)))
        .map(|(x, y)| shot.at(x0 + x, y0 + y))
        .collect();
    (px, w, h)
}

/// Where remote-viewer shows the VMM's screen, once it shows all of it exactly. The clock
/// changes every second, so a client picture counts only between two equal VMM screenshots.
fn client_shows_vmm_screen(x: &Xvfb, socket: &std::path::Path) -> (usize, usize) {
    let mut last = String::from("the client never showed the screen");
    for _ in 0..120 {
        let before = vmm_screenshot(socket);
        let client = x.screenshot();
        let after = vmm_screenshot(socket);
        if before.pixels == after.pixels {
            if let Some((ox, oy)) = client.find(&before.pixels, W, H) {
                let full = (before.pixels.clone(), W, H);
                let differ = differing(&client, ox, oy, &full);
                if differ == 0 {
                    return (ox, oy);
                }
                last = format!("{differ} of {} pixels differ at ({ox}, {oy})", W * H);
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    panic!("remote-viewer does not show the VMM's screen: {last}");
}

/// The last `click X Y` line on the console.
fn last_click(console: &str) -> Option<(i64, i64)> {
    let line = console.lines().rev().find(|l| l.starts_with("click "))?;
    let mut it = line.split_whitespace().skip(1).map(|v| v.parse().ok());
    Some((it.next()??, it.next()??))
}

#[test]
fn the_demo_desktop_shows_its_name_clock_typing_and_pointer_in_remote_viewer() {
    if !kvm_or_skip("demo guest display") || !x_tools() {
        return;
    }
    let dir = Scratch::new("demo-guest");
    let kernel = dir.file("demo.elf", ELF);
    let socket = dir.0.join("api.sock");
    let console = dir.0.join("console.log");
    let port = free_port();
    let _vmm = Proc(
        Command::new(VMM)
            .args(["--kernel", kernel.to_str().unwrap(), "--memory", "64M"])
            .args(["--cmdline", "name=pixel-check mode=800x600"])
            .args(["--api-socket", socket.to_str().unwrap()])
            .arg("--serial")
            .arg(format!("file:{}", console.display()))
            .arg("--display")
            .arg(format!("spice-port={port}"))
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_socket(&socket, Duration::from_secs(10));
    let console_text = || std::fs::read_to_string(&console).unwrap_or_default();
    wait_for("the desktop", Duration::from_secs(30), || {
        console_text().contains("tessera-demo: 800x600 tablet name=pixel-check")
    });

    // The title bar carries the name, glyph for glyph, in the mode asked for.
    let shot = vmm_screenshot(&socket);
    assert_eq!((shot.width, shot.height), (W, H));
    let title = render_text("Tessera | pixel-check", TITLE_FG, TITLE_BG);
    let differ = differing(&shot, 12, 8, &title);
    assert_eq!(differ, 0, "the title bar differs in {differ} pixels");
    // The clock (19 characters at the right of the title bar) ticks.
    let clock_x = W - 19 * CELL - 12;
    let clock = crop(&shot, clock_x, 8, 19 * CELL, CELL);
    assert!(clock.0.contains(&TITLE_FG), "no clock drawn");
    wait_for("the clock to tick", Duration::from_secs(5), || {
        crop(&vmm_screenshot(&socket), clock_x, 8, 19 * CELL, CELL) != clock
    });

    let (status, _) = http_bytes(
        &socket,
        "PUT",
        "/display/ticket",
        br#"{"ticket": "demo-ticket", "lifetime_secs": 60}"#,
    );
    assert_eq!(status, 204);
    let x = Xvfb::start(1);
    let vv = vv_file(
        &dir.0,
        "demo",
        &format!("host=127.0.0.1\nport={port}\npassword=demo-ticket\ntitle=demo-display\n"),
    );
    let _rv = Proc(x.cmd("remote-viewer").arg(&vv).spawn().unwrap());
    let (ox, oy) = client_shows_vmm_screen(&x, &socket);

    // Typing: echoed on the console, drawn in the notes window, shown by the client.
    let win = x
        .find_window("demo-display", Duration::from_secs(10))
        .unwrap();
    x.run("xdotool", &["windowfocus", "--sync", &win]);
    x.run("xdotool", &["type", "--delay", "120", "Hello Tessera 42"]);
    wait_for(
        "the typed text on the console",
        Duration::from_secs(20),
        || console_text().contains("Hello Tessera 42"),
    );
    let typed = render_text("Hello Tessera 42", TEXT_FG, NOTES_BG);
    wait_for(
        "the typed text on the screen",
        Duration::from_secs(5),
        || {
            differing(
                &vmm_screenshot(&socket),
                TEXT_X as usize,
                TEXT_Y as usize,
                &typed,
            ) == 0
        },
    );
    assert_eq!(client_shows_vmm_screen(&x, &socket), (ox, oy));

    // The pointer: a click at (200, 150) of the guest's screen lands there, and the guest
    // draws its arrow's tip (black) with white inside it there.
    let (px, py) = (ox + 200, oy + 150);
    x.run(
        "xdotool",
        &["mousemove", &px.to_string(), &py.to_string(), "click", "1"],
    );
    let mut click = None;
    wait_for("the click on the console", Duration::from_secs(15), || {
        click = last_click(&console_text())
            .filter(|&(cx, cy)| (cx - 200).abs() <= 1 && (cy - 150).abs() <= 1);
        click.is_some()
    });
    let (cx, cy) = click.unwrap();
    let (cx, cy) = (cx as usize, cy as usize);
    let shot = vmm_screenshot(&socket);
    assert_eq!(shot.at(cx, cy), 0, "no pointer tip at the click");
    assert_eq!(shot.at(cx + 1, cy + 2), 0x00ff_ffff, "no pointer body");
    client_shows_vmm_screen(&x, &socket);
}
