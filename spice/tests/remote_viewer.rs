//! tessera-spice against a real client: remote-viewer on a private Xvfb display. The picture
//! the client shows is the framebuffer we sent, pixel for pixel; keys typed into the client
//! arrive as PC scancodes; the window's size arrives as a resolution request; a wrong,
//! expired or spent ticket is refused. (TLS: tls.rs; one SPICE server per process, so one
//! test per file.)

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tessera_spice::{Compression, Config, Rect, Server};

#[test]
fn remote_viewer_shows_the_framebuffer_and_types_into_it() {
    if !x_tools() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("tessera-spice-rv-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let x = Xvfb::start();
    let rec = Arc::new(Recorder::default());
    let port = free_port();
    let cfg = Config {
        name: "tessera-test-desktop".into(),
        address: "127.0.0.1".parse().unwrap(),
        port: Some(port),
        tls: None,
        compression: Compression::AutoGlz,
    };
    let mut server = Server::start(&cfg, rec.clone(), W, H).unwrap();
    let (_, fb) = picture(W, H);
    let full = |w, h| Rect {
        x: 0,
        y: 0,
        width: w,
        height: h,
    };
    assert_eq!(server.update(&fb, (W * 4) as usize, &[full(W, H)]), 1);

    // A wrong ticket: no session.
    server
        .set_ticket("right-ticket-1", Duration::from_secs(60))
        .unwrap();
    let wrong = vv_file(
        &dir,
        "wrong",
        &format!("host=127.0.0.1\nport={port}\npassword=wrong\n"),
    );
    let refused = tessera_spice::refused_links();
    let rv = Proc(x.cmd("remote-viewer").arg(&wrong).spawn().unwrap());
    wait_refused(refused, "a wrong ticket");
    assert_eq!(rec.logins(), 0, "a wrong ticket got in");
    drop(rv);

    // The right one: the picture, pixel for pixel, and typed keys.
    let right = vv_file(
        &dir,
        "right",
        &format!("host=127.0.0.1\nport={port}\npassword=right-ticket-1\ntitle=tessera-rv\n"),
    );
    let rv = Proc(x.cmd("remote-viewer").arg(&right).spawn().unwrap());
    assert!(
        rec.wait_logins(1, Duration::from_secs(20)),
        "remote-viewer did not get in"
    );
    let win = x
        .find_window("tessera-rv", Duration::from_secs(10))
        .expect("the remote-viewer window");

    // The client's window asks for a resolution; the "guest" takes it, and the client then
    // shows the framebuffer unscaled.
    x.run("xdotool", &["windowsize", "--sync", &win, "900", "700"]);
    let deadline = Instant::now() + Duration::from_secs(15);
    let (w, h) = loop {
        if let Some(size) = *rec.resize.lock().unwrap() {
            break size;
        }
        assert!(
            Instant::now() < deadline,
            "no resize request from the client"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(w > 600 && h > 400 && w <= 900 && h <= 700, "{w}x{h}");
    server.set_mode(w, h).unwrap();
    assert_eq!(server.mode(), Some((w, h)));
    let (px, fb) = picture(w, h);
    server.update(&fb, (w * 4) as usize, &[full(w, h)]);
    let deadline = Instant::now() + Duration::from_secs(15);
    let (shot, at) = loop {
        let shot = x.screenshot();
        if let Some(at) = shot.find(&px, w as usize, h as usize) {
            break (shot, at);
        }
        if Instant::now() > deadline {
            let evidence = std::env::temp_dir().join("tessera-spice-rv-failed.ppm");
            shot.save_ppm(&evidence);
            panic!(
                "the {w}x{h} framebuffer never appeared in the window; screen in {}",
                evidence.display()
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    let differ = (0..h as usize)
        .flat_map(|y| (0..w as usize).map(move |x| (x, y)))
        .filter(|&(x, y)| shot.at(at.0 + x, at.1 + y) != px[y * w as usize + x])
        .count();
    assert_eq!(differ, 0, "{differ} of {} pixels differ", w * h);

    // A dirty rectangle changes only its pixels.
    let mut fb2 = fb.clone();
    let patch = Rect {
        x: 100,
        y: 200,
        width: 50,
        height: 20,
    };
    for y in patch.y..patch.y + patch.height {
        for x in patch.x..patch.x + patch.width {
            let o = ((y * w + x) * 4) as usize;
            fb2[o..o + 4].copy_from_slice(&0x00ff_00ffu32.to_le_bytes());
        }
    }
    server.update(&fb2, (w * 4) as usize, &[patch]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = x.screenshot();
        let inside = s.at(at.0 + 120, at.1 + 210);
        let outside = s.at(at.0 + 99, at.1 + 210);
        if inside == 0x00ff_00ff {
            assert_eq!(outside, px[(210 * w + 99) as usize]);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the dirty rectangle never arrived"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    x.run(
        "xdotool",
        &["mousemove", "--window", &win, "200", "200", "click", "1"],
    );
    x.focus(&win);
    x.run("xdotool", &["type", "--delay", "100", "hi"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let keys = rec.keys.lock().unwrap().clone();
        // h = 0x23, i = 0x17; releases have bit 7 set.
        let want = [0x23, 0xa3, 0x17, 0x97];
        if keys.windows(4).any(|w| w == want) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "typed keys did not arrive: {keys:02x?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(rv);

    // The ticket was spent: the same file does not get in again.
    std::thread::sleep(Duration::from_millis(500));
    let before = rec.logins();
    let refused = tessera_spice::refused_links();
    let rv = Proc(x.cmd("remote-viewer").arg(&right).spawn().unwrap());
    wait_refused(refused, "a spent ticket");
    assert_eq!(rec.logins(), before, "a spent ticket got in again");
    drop(rv);

    // An expired ticket.
    server
        .set_ticket("short-lived", Duration::from_secs(1))
        .unwrap();
    std::thread::sleep(Duration::from_millis(2100));
    let expired = vv_file(
        &dir,
        "expired",
        &format!("host=127.0.0.1\nport={port}\npassword=short-lived\n"),
    );
    let refused = tessera_spice::refused_links();
    let rv = Proc(x.cmd("remote-viewer").arg(&expired).spawn().unwrap());
    wait_refused(refused, "an expired ticket");
    assert_eq!(rec.logins(), before, "an expired ticket got in");
    drop(rv);

    // A fresh ticket gets in again (so the refusals above were not just slowness).
    server
        .set_ticket("final-ticket", Duration::from_secs(60))
        .unwrap();
    let fresh = vv_file(
        &dir,
        "fresh",
        &format!("host=127.0.0.1\nport={port}\npassword=final-ticket\n"),
    );
    let started = Instant::now();
    let (displays, cursors) = (rec.channels(2), rec.channels(4));
    let rv = Proc(x.cmd("remote-viewer").arg(&fresh).spawn().unwrap());
    assert!(rec.wait_logins(before + 1, Duration::from_secs(20)));
    eprintln!("a good ticket got in after {:?}", started.elapsed());
    assert!(rec.wait_channels(2, displays + 1, Duration::from_secs(20)));
    assert!(rec.wait_channels(4, cursors + 1, Duration::from_secs(20)));
    drop(rv);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
