//! The display path end to end on this machine's /dev/kvm: a tiny guest programs the bochs
//! adapter and paints a known picture; the VMM's screenshot (control API) is that picture;
//! remote-viewer under Xvfb, with a ticket set through the API, shows the same pixels; keys
//! typed into remote-viewer reach the guest (it echoes the scancodes to its serial console
//! and paints them), and the change reaches the client. Without a ticket nobody gets in.

mod common;

use std::time::Duration;

use common::*;
use tessera_e2e::x11::{vv_file, x_tools, Proc, Xvfb};
use tessera_vmm::tiny_guest::{display_painter, painter_pixel, PAINTER_KEY_LINES};

const W: u16 = 640;
const H: u16 = 480;

#[test]
fn the_guest_screen_reaches_remote_viewer_and_keys_reach_the_guest() {
    if !kvm_or_skip("display") || !x_tools() {
        return;
    }
    let dir = Scratch::new("display");
    // No disks: the adapter is the first function after the host bridge.
    let kernel = dir.file("painter.elf", &display_painter(1, W, H));
    let vmm = DisplayVmm::start(&dir, &kernel, None, ",fps=30");
    let (socket, port) = (vmm.socket.clone(), vmm.port);
    let console_text = || vmm.console_text();
    wait_for("the guest to paint", Duration::from_secs(30), || {
        console_text().contains("PAINTED")
    });

    // The VMM's own screenshot is the guest's picture.
    let (status, info) = http(&socket, "GET", "/display");
    assert_eq!(status, 200, "{info}");
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(
        (info["width"].as_u64(), info["height"].as_u64()),
        (Some(640), Some(480))
    );
    assert_eq!(info["port"].as_u64(), Some(u64::from(port)));
    let (status, png) = http_bytes(&socket, "GET", "/display/screenshot", b"");
    assert_eq!(status, 200);
    let shot = decode_png(&png);
    assert_eq!((shot.width, shot.height), (640, 480));
    let expected: Vec<u32> = (0..u32::from(W) * u32::from(H))
        .map(painter_pixel)
        .collect();
    let wrong = shot
        .pixels
        .iter()
        .zip(&expected)
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!(
        wrong, 0,
        "{wrong} screenshot pixels differ from the painted picture"
    );

    // Bad ticket requests.
    for body in [&b"{}"[..], b"not json", br#"{"ticket": ""}"#] {
        let (status, _) = http_bytes(&socket, "PUT", "/display/ticket", body);
        assert_eq!(status, 400, "{}", String::from_utf8_lossy(body));
    }

    // No ticket yet: remote-viewer does not get in (the server is locked).
    let x = Xvfb::start();
    let plain = vv_file(
        &dir.0,
        "noticket",
        &format!("host=127.0.0.1\nport={port}\ntitle=vm-locked\n"),
    );
    let refused = |socket: &std::path::Path| {
        let (status, body) = http(socket, "GET", "/display");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["refused_links"]
            .as_u64()
            .expect("refused_links in GET /display")
    };
    let before = refused(&socket);
    let rv = Proc(x.cmd("remote-viewer").arg(&plain).spawn().unwrap());
    // The VMM reports the refusal itself; only then is an empty window meaningful.
    wait_for(
        "the VMM to refuse the link",
        Duration::from_secs(60),
        || refused(&socket) > before,
    );
    assert!(
        x.screenshot().find(&expected, 640, 480).is_none(),
        "the screen was shown without a ticket"
    );
    drop(rv);

    // With the ticket: the same pixels in the client's window.
    let (status, _) = http_bytes(
        &socket,
        "PUT",
        "/display/ticket",
        br#"{"ticket": "vm-ticket-1", "lifetime_secs": 60}"#,
    );
    assert_eq!(status, 204);
    let vv = vv_file(
        &dir.0,
        "ticket",
        &format!("host=127.0.0.1\nport={port}\npassword=vm-ticket-1\ntitle=vm-display\n"),
    );
    let _rv = Proc(x.cmd("remote-viewer").arg(&vv).spawn().unwrap());
    let mut at = None;
    wait_for(
        "the guest's picture in remote-viewer",
        Duration::from_secs(30),
        || {
            at = x.screenshot().find(&expected, 640, 480);
            at.is_some()
        },
    );
    let (ox, oy) = at.unwrap();
    let screen = x.screenshot();
    let differ = (0..480usize)
        .flat_map(|y| (0..640usize).map(move |x| (x, y)))
        .filter(|&(x, y)| screen.at(ox + x, oy + y) != expected[y * 640 + x])
        .count();
    assert_eq!(differ, 0);

    // Typing: the guest echoes the scancodes and paints the last one into its top lines.
    let win = x
        .find_window("vm-display", Duration::from_secs(10))
        .unwrap();
    x.run(
        "xdotool",
        &["mousemove", "--window", &win, "300", "300", "click", "1"],
    );
    x.focus(&win);
    x.run("xdotool", &["type", "--delay", "150", "hi"]);
    wait_for(
        "the scancodes on the guest's console",
        Duration::from_secs(15),
        || {
            let bytes = std::fs::read(&vmm.console).unwrap_or_default();
            bytes.windows(4).any(|w| w == [0x23, 0xa3, 0x17, 0x97])
        },
    );
    // The last byte was i's release, 0x97: the band is 0x979797, and remote-viewer shows it.
    wait_for(
        "the key band in remote-viewer",
        Duration::from_secs(15),
        || {
            let s = x.screenshot();
            (0..PAINTER_KEY_LINES as usize).all(|y| s.at(ox + 5, oy + y) == 0x0097_9797)
                && s.at(ox + 5, oy + PAINTER_KEY_LINES as usize)
                    == expected[PAINTER_KEY_LINES as usize * 640 + 5]
        },
    );
}

#[test]
fn a_hostile_guest_and_a_garbage_client_leave_the_vm_running() {
    if !kvm_or_skip("display bad input") {
        return;
    }
    let dir = Scratch::new("display-abuse");
    let kernel = dir.file("abuse.elf", &tessera_vmm::tiny_guest::display_abuse(1));
    let log = dir.0.join("vmm.log");
    let vmm = DisplayVmm::start_logging(&dir, &kernel, None, "", Some(&log));
    let (socket, port) = (vmm.socket.clone(), vmm.port);
    wait_for("the guest to survive", Duration::from_secs(60), || {
        vmm.console_text().contains("SURVIVED")
    });
    // Garbage at the SPICE port, twice, as a client would send it; the server must hang up
    // on it (seen, not waited for), and the VM lives on.
    for _ in 0..2 {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let junk: Vec<u8> = (0..65536u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        // The server may hang up before it has read it all: a failed write is fine.
        let _ = s.write_all(&junk);
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut answer = Vec::new();
        match s.read_to_end(&mut answer) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("the SPICE server neither refused nor closed a garbage link: {e}"),
        }
    }
    let (status, png) = http_bytes(&socket, "GET", "/display/screenshot", b"");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&png));
    let shot = decode_png(&png);
    assert_eq!((shot.width, shot.height), (320, 200));
    let wrong = (0..320 * 200u32)
        .filter(|&i| shot.pixels[i as usize] != painter_pixel(i))
        .count();
    assert_eq!(wrong, 0);
    let (status, _) = http(&socket, "GET", "/vm");
    assert_eq!(status, 200, "the VM still answers");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("cannot show"),
        "no line about the absurd modes:\n{text}"
    );
    assert!(
        text.contains("cannot map video memory"),
        "no line about the refused BAR:\n{text}"
    );
}
