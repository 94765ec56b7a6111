//! The display process (tessera-display) against clients that vanish and a process that
//! dies: the guest runs on whatever happens to the display side, a restart is logged and
//! counted, a spent ticket is not armed again, and a client connecting afterwards sees the
//! screen pixel for pixel. On the demo guest and this machine's /dev/kvm.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use tessera_spice_client::{Event, Failure};

const CLIENT_ENV: &str = "TESSERA_TEST_SPICE_CLIENT";

/// Not a test of its own: the SPICE client process the random-kill test starts (and kills).
/// It connects to the port and ticket in TESSERA_TEST_SPICE_CLIENT and waits to be killed.
#[test]
#[ignore = "a helper process, started by clients_killed_at_random_moments_never_stop_the_guest"]
fn spice_client_process() {
    let Ok(spec) = std::env::var(CLIENT_ENV) else {
        return;
    };
    let (port, ticket) = spec.split_once(' ').expect("PORT TICKET");
    let (_session, rx) = connect(port.parse().unwrap(), ticket);
    loop {
        if let Ok(Event::Opened) = rx.recv() {
            println!("opened");
        }
    }
}

/// The process serving the display now.
fn display_pid(vmm: &DisplayVmm) -> Option<u32> {
    vmm.display_info()["process_id"].as_u64().map(|p| p as u32)
}

fn restarts(vmm: &DisplayVmm) -> u64 {
    vmm.display_info()["restarts"].as_u64().unwrap()
}

/// Waits until the guest's screen changes (the demo guest's clock ticks every second): the
/// guest is running.
fn guest_runs(vmm: &DisplayVmm, what: &str) {
    let before = vmm.screenshot();
    wait_for(what, Duration::from_secs(5), || {
        vmm.screenshot().pixels != before.pixels
    });
}

#[test]
fn a_dead_display_process_is_restarted_and_the_guest_runs_on() {
    if !kvm_or_skip("display process restart") {
        return;
    }
    let dir = Scratch::new("display-restart");
    let log = dir.0.join("vmm.log");
    let vmm = demo_vmm_logging(&dir, "restart", Some(&log));
    let long = Duration::from_secs(20);
    vmm.set_ticket("before", 60);
    let (_session, rx) = connect(vmm.port, "before");
    expect(&rx, "the primary surface", long, |e| {
        matches!(e, Event::Primary { .. }).then_some(())
    });
    wait_for("the inputs channel", long, || {
        vmm.display_info()["input_clients"] == 1
    });
    let first = display_pid(&vmm).expect("a display process serves");
    assert_eq!(restarts(&vmm), 0);

    // The display process dies (as libspice-server's worker does on a bad client).
    let killed = Command::new("kill")
        .args(["-KILL", &first.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let why = expect(&rx, "the cut", long, |e| match e {
        Event::Closed(why) => Some(why.clone()),
        _ => None,
    });
    eprintln!("the client saw its display process die: {why:?}");
    guest_runs(
        &vmm,
        "the guest's clock to tick after the display process died",
    );
    wait_for("a new display process", long, || {
        display_pid(&vmm).is_some_and(|p| p != first) && restarts(&vmm) == 1
    });
    let (status, metrics) = http(&vmm.socket, "GET", "/metrics");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("\ntessera_vmm_display_restarts_total 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains("\ntessera_vmm_display_process_up 1\n"));
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("display process died"), "{logged}");

    // The ticket the first client used is spent: the new process does not take it.
    let (_again, rx) = connect(vmm.port, "before");
    let why = expect(&rx, "the refusal", long, |e| match e {
        Event::Closed(why) => Some(why.clone()),
        _ => None,
    });
    assert_eq!(why, Some(Failure::Auth));
    // A new ticket shows the screen, pixel for pixel, and its keys reach the guest.
    vmm.set_ticket("after", 60);
    let (session, rx) = connect(vmm.port, "after");
    expect(&rx, "the primary surface", long, |e| {
        matches!(e, Event::Primary { .. }).then_some(())
    });
    client_frame_is_vmm_screen(&vmm, &session);
    wait_for("the inputs channel", long, || {
        vmm.display_info()["input_clients"] == 1
    });
    session.key(0x23, true); // h
    session.key(0x23, false);
    wait_for("the key on the console", long, || {
        vmm.console_text().contains('h')
    });
}

/// A display process that says Ready and then sends garbage (a length past the limit): the VMM
/// cuts each one off and starts another, backing off, and the guest runs on throughout.
#[test]
fn a_hostile_display_process_is_cut_off_and_the_guest_runs_on() {
    if !kvm_or_skip("hostile display process") {
        return;
    }
    let dir = Scratch::new("display-hostile");
    let hostile = dir.0.join("hostile-display");
    // Its standard input is the VMM's event socket: Ready (17 bytes of JSON after their
    // length), then a length of 4 GiB.
    std::fs::write(
        &hostile,
        "#!/bin/sh\nprintf '\\021\\000\\000\\000{\"event\":\"ready\"}\\377\\377\\377\\377' >&0\nsleep 30\n",
    )
    .unwrap();
    let chmod = Command::new("chmod")
        .arg("+x")
        .arg(&hostile)
        .status()
        .unwrap();
    assert!(chmod.success());
    let log = dir.0.join("vmm.log");
    let kernel = dir.file("demo.elf", tessera_demo_guest::ELF);
    let vmm = DisplayVmm::start_with_env(
        &dir,
        &kernel,
        Some("name=hostile mode=800x600"),
        "",
        Some(&log),
        &[("TESSERA_DISPLAY", hostile.to_str().unwrap())],
    );
    wait_for("the desktop", Duration::from_secs(30), || {
        vmm.console_text().contains("name=hostile")
    });
    wait_for("two restarts", Duration::from_secs(20), || {
        restarts(&vmm) >= 2
    });
    guest_runs(
        &vmm,
        "the guest's clock to tick beside a hostile display process",
    );
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("a message of 4294967295 bytes"), "{logged}");
}

/// A small random number generator (xorshift), seeded from the clock: the moments differ
/// from run to run, and the seed is printed to replay a failure.
struct Moments(u64);

impl Moments {
    fn next_below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn clients_killed_at_random_moments_never_stop_the_guest() {
    if !kvm_or_skip("clients killed at random moments") {
        return;
    }
    const ROUNDS: u32 = 200;
    let dir = Scratch::new("display-kill");
    let log = dir.0.join("vmm.log");
    let mut vmm = demo_vmm_logging(&dir, "chaos", Some(&log));
    let seed = std::env::var("TESSERA_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("seed {seed} (TESSERA_TEST_SEED replays it)");
    let mut moments = Moments(seed);
    let me = std::env::current_exe().unwrap();
    let started = Instant::now();
    let mut last_look = (Instant::now(), vmm.screenshot());
    let mut opened = 0;
    for round in 0..ROUNDS {
        let ticket = format!("round-{round}");
        vmm.set_ticket(&ticket, 30);
        let mut client = Command::new(&me)
            .args([
                "spice_client_process",
                "--exact",
                "--ignored",
                "--nocapture",
            ])
            .env(CLIENT_ENV, format!("{} {ticket}", vmm.port))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Killed anywhere from before its first byte to well after all its channels are up
        // (connecting takes this client ~100-300 ms here).
        std::thread::sleep(Duration::from_millis(moments.next_below(500)));
        client.kill().unwrap();
        client.wait().unwrap();
        let mut out = String::new();
        client
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        opened += usize::from(out.contains("opened"));
        assert!(
            vmm.proc.0.try_wait().unwrap().is_none(),
            "the VMM exited in round {round}"
        );
        // The guest's clock keeps advancing throughout.
        if last_look.0.elapsed() >= Duration::from_secs(2) {
            let now = vmm.screenshot();
            assert_ne!(
                now.pixels,
                last_look.1.pixels,
                "the guest's screen stood still for {:?} (round {round})",
                last_look.0.elapsed()
            );
            last_look = (Instant::now(), now);
        }
    }
    let info = vmm.display_info();
    eprintln!(
        "{ROUNDS} clients killed in {:?}: {opened} had opened their session; {} display \
         process restarts; {} refused links",
        started.elapsed(),
        info["restarts"],
        info["refused_links"]
    );
    for line in std::fs::read_to_string(&log).unwrap().lines() {
        if line.contains("display process died") {
            eprintln!("  {line}");
        }
    }
    // Afterwards a client sees the screen pixel for pixel.
    wait_for("a display process", Duration::from_secs(20), || {
        display_pid(&vmm).is_some()
    });
    vmm.set_ticket("afterwards", 60);
    let (session, rx) = connect(vmm.port, "afterwards");
    expect(&rx, "the primary surface", Duration::from_secs(20), |e| {
        matches!(e, Event::Primary { .. }).then_some(())
    });
    client_frame_is_vmm_screen(&vmm, &session);
    guest_runs(&vmm, "the guest's clock to tick at the end");
}
