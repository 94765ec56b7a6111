//! A SPICE client (tessera-spice-client, as tessera-client uses it) against a VMM running the
//! demo guest: connecting, waiting for its events, and comparing its frame with the VMM's.

use std::path::Path;
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use tessera_demo_guest::ELF;
use tessera_spice_client::{ConnectOptions, Event, Session};

use super::{wait_for, DisplayVmm, Scratch};

/// Connection options for the VMM's plain-text port with `ticket`.
pub fn options(port: u16, ticket: &str) -> ConnectOptions {
    ConnectOptions {
        host: "127.0.0.1".into(),
        port: Some(port),
        password: Some(ticket.into()),
        ..Default::default()
    }
}

/// Connects a client and returns it with its events.
pub fn connect(port: u16, ticket: &str) -> (Session, Receiver<Event>) {
    let (tx, rx) = mpsc::channel();
    let session = Session::connect(options(port, ticket), move |event, _| {
        let _ = tx.send(event);
    })
    .unwrap();
    (session, rx)
}

/// The first event `pick` accepts, within `limit`.
pub fn expect<T>(
    rx: &Receiver<Event>,
    what: &str,
    limit: Duration,
    mut pick: impl FnMut(&Event) -> Option<T>,
) -> T {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    while let Ok(e) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        if let Some(v) = pick(&e) {
            return v;
        }
        if !matches!(e, Event::Invalidate { .. }) {
            seen.push(e);
        }
    }
    panic!("no {what} within {limit:?}; saw {seen:?}");
}

/// A VMM running the demo guest at 800x600, once its desktop is up.
pub fn demo_vmm(dir: &Scratch, name: &str) -> DisplayVmm {
    demo_vmm_logging(dir, name, None)
}

/// As [`demo_vmm`], with the VMM's warnings in `log`.
pub fn demo_vmm_logging(dir: &Scratch, name: &str, log: Option<&Path>) -> DisplayVmm {
    let kernel = dir.file("demo.elf", ELF);
    let cmdline = format!("name={name} mode=800x600");
    let vmm = DisplayVmm::start_logging(dir, &kernel, Some(&cmdline), "", log);
    wait_for("the desktop", Duration::from_secs(30), || {
        vmm.console_text().contains(&format!("name={name}"))
    });
    vmm
}

/// Waits until `session`'s frame equals the VMM's screenshot pixel for pixel (between two
/// equal screenshots: the demo guest's clock ticks every second).
pub fn client_frame_is_vmm_screen(vmm: &DisplayVmm, session: &Session) {
    let mut last = String::new();
    let matched = (0..80).any(|_| {
        let before = vmm.screenshot();
        let frame = session.frame().lock().unwrap().clone();
        let after = vmm.screenshot();
        let differ = frame
            .pixels
            .iter()
            .zip(&before.pixels)
            .filter(|(a, b)| a != b)
            .count();
        last = format!("{differ} of {} pixels differ", frame.pixels.len());
        let same = before.pixels == after.pixels && frame.pixels.len() == before.pixels.len();
        if same && differ == 0 {
            return true;
        }
        std::thread::sleep(Duration::from_millis(250));
        false
    });
    assert!(
        matched,
        "the client's frame never equalled the VMM's screenshot: {last}"
    );
}
