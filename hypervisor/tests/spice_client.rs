//! tessera-vmm's SPICE server with Tessera's own client library (tessera-spice-client, over
//! libspice-client-glib, as tessera-client uses it), on the demo guest and this machine's
//! /dev/kvm: the client's copy of the screen equals the VMM's screenshot pixel for pixel, its
//! keys and clicks reach the guest, and each way a connection can fail is reported as what it
//! is (wrong ticket, expired ticket, nobody listening).

mod common;

use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use common::*;
use tessera_spice_client::{Button, ConnectOptions, Error, Event, Failure, MouseMode, Session};

/// PC XT scancodes of the characters typed below.
fn scancode(c: char) -> u32 {
    match c {
        'h' => 0x23,
        'i' => 0x17,
        '4' => 0x05,
        '2' => 0x03,
        _ => unreachable!("no scancode for {c:?} in this test"),
    }
}

#[test]
fn our_client_shows_the_vmm_screen_and_its_keys_and_clicks_reach_the_guest() {
    if !kvm_or_skip("SPICE client") {
        return;
    }
    let dir = Scratch::new("spice-client");
    let vmm = demo_vmm(&dir, "client-check");
    vmm.set_ticket("client-ticket", 60);
    let (session, rx) = connect(vmm.port, "client-ticket");
    let long = Duration::from_secs(20);
    expect(&rx, "Opened", long, |e| (*e == Event::Opened).then_some(()));
    // The mouse mode may be announced before or after the screen arrives.
    let mut mode = None;
    let size = expect(&rx, "the primary surface", long, |e| match e {
        Event::Primary { width, height } => Some((*width, *height)),
        Event::MouseMode(m) => {
            mode = Some(*m);
            None
        }
        _ => None,
    });
    assert_eq!(size, (800, 600));
    if mode != Some(MouseMode::Client) {
        expect(&rx, "client mouse mode (the tablet)", long, |e| {
            (*e == Event::MouseMode(MouseMode::Client)).then_some(())
        });
    }

    // The client's frame is the VMM's screen, pixel for pixel.
    client_frame_is_vmm_screen(&vmm, &session);

    // Keys: scancode down and up, each character echoed by the guest.
    for c in "hi42".chars() {
        session.key(scancode(c), true);
        session.key(scancode(c), false);
    }
    wait_for(
        "the typed text on the console",
        Duration::from_secs(15),
        || vmm.console_text().contains("hi42"),
    );

    // The absolute pointer and a click where it is.
    session.pointer(200, 150);
    std::thread::sleep(Duration::from_millis(200));
    session.button(Button::Left, true);
    session.button(Button::Left, false);
    wait_for("the click on the console", Duration::from_secs(15), || {
        vmm.console_text().lines().any(|l| {
            let v: Vec<i64> = l.strip_prefix("click ").map_or(vec![], |r| {
                r.split_whitespace()
                    .filter_map(|n| n.parse().ok())
                    .collect()
            });
            v.len() == 2 && (v[0] - 200).abs() <= 1 && (v[1] - 150).abs() <= 1
        })
    });

    session.disconnect();
    let why = expect(&rx, "the end of the session", long, |e| match e {
        Event::Closed(why) => Some(why.clone()),
        _ => None,
    });
    assert_eq!(why, None, "a session we ended reported a failure");
}

#[test]
fn wrong_and_expired_tickets_and_a_closed_port_are_reported_as_such() {
    if !kvm_or_skip("SPICE client failures") {
        return;
    }
    assert!(matches!(
        Session::connect(ConnectOptions::default(), |_, _| {}),
        Err(Error::NoPort)
    ));
    let dir = Scratch::new("spice-client-fail");
    let vmm = demo_vmm(&dir, "refusals");
    let closed = |rx: &Receiver<Event>| {
        expect(
            rx,
            "the end of the session",
            Duration::from_secs(20),
            |e| match e {
                Event::Closed(why) => Some(why.clone()),
                _ => None,
            },
        )
    };

    vmm.set_ticket("right", 60);
    let (_s, rx) = connect(vmm.port, "wrong");
    assert_eq!(closed(&rx), Some(Failure::Auth));

    vmm.set_ticket("short-lived", 1);
    std::thread::sleep(Duration::from_millis(2500));
    let (_s, rx) = connect(vmm.port, "short-lived");
    assert_eq!(closed(&rx), Some(Failure::Auth), "an expired ticket");

    let nobody = tessera_e2e::x11::free_port();
    let (_s, rx) = connect(nobody, "any");
    match closed(&rx) {
        Some(Failure::Connect(why)) => assert!(!why.is_empty()),
        other => panic!("expected a connect failure, got {other:?}"),
    }
}

/// `POST /display/disconnect`, what the broker calls when a session ends, cuts a connected
/// client off at once, and nothing it held (its ticket) lets it back in; a new ticket does.
#[test]
fn a_disconnect_cuts_the_client_off_and_its_ticket_is_dead() {
    if !kvm_or_skip("SPICE disconnect") {
        return;
    }
    let dir = Scratch::new("spice-disconnect");
    let vmm = demo_vmm(&dir, "cut");
    let long = Duration::from_secs(20);
    vmm.set_ticket("session-1", 60);
    let (_session, rx) = connect(vmm.port, "session-1");
    expect(&rx, "Opened", long, |e| (*e == Event::Opened).then_some(()));
    expect(&rx, "the primary surface", long, |e| {
        matches!(e, Event::Primary { .. }).then_some(())
    });
    wait_for("the inputs channel", long, || {
        vmm.display_info()["input_clients"] == 1
    });

    let asked = Instant::now();
    let (status, body) = http(&vmm.socket, "POST", "/display/disconnect");
    assert_eq!(status, 204, "{body}");
    let why = expect(&rx, "the cut", Duration::from_secs(10), |e| match e {
        Event::Closed(why) => Some(why.clone()),
        _ => None,
    });
    eprintln!(
        "the client was cut {:?} after the call ({why:?})",
        asked.elapsed()
    );
    assert!(why.is_some(), "the server ended it, not the client");
    wait_for("no input clients", long, || {
        vmm.display_info()["input_clients"] == 0
    });

    // What the client held: its ticket. Refused.
    let (_again, rx) = connect(vmm.port, "session-1");
    let why = expect(&rx, "the refusal", long, |e| match e {
        Event::Closed(why) => Some(why.clone()),
        _ => None,
    });
    assert_eq!(why, Some(Failure::Auth));
    // A new session's ticket works.
    vmm.set_ticket("session-2", 60);
    let (_next, rx) = connect(vmm.port, "session-2");
    expect(&rx, "Opened", long, |e| (*e == Event::Opened).then_some(()));
}

/// Only the departure of the client that spent the current ticket locks the server: a
/// stranger's refused attempt leaves a live ticket for its user, and a client that leaves
/// after a new ticket was set (a session handed to someone else) does not lock that one out,
/// however late its end is noticed. The leaving spender still locks the server.
#[test]
fn only_the_tickets_own_client_leaving_locks_the_server() {
    if !kvm_or_skip("SPICE ticket ownership") {
        return;
    }
    let dir = Scratch::new("spice-client-owner");
    let vmm = demo_vmm(&dir, "owner");
    let long = Duration::from_secs(20);
    let closed = |rx: &Receiver<Event>| {
        expect(rx, "the end of the session", long, |e| match e {
            Event::Closed(why) => Some(why.clone()),
            _ => None,
        })
    };
    vmm.set_ticket("first", 60);
    for _ in 0..3 {
        let (_s, rx) = connect(vmm.port, "guess");
        assert_eq!(closed(&rx), Some(Failure::Auth));
    }
    let (a, rx) = connect(vmm.port, "first");
    expect(&rx, "Opened", long, |e| (*e == Event::Opened).then_some(()));
    // The server has the client (its inputs channel follows the main channel's start).
    wait_for("the client's inputs channel", long, || {
        vmm.display_info()["input_clients"] == 1
    });
    // The session goes to someone else: a new ticket, then the old client leaves.
    vmm.set_ticket("second", 60);
    a.disconnect();
    wait_for("no input clients", long, || {
        vmm.display_info()["input_clients"] == 0
    });
    std::thread::sleep(Duration::from_millis(500));
    let (b, rx) = connect(vmm.port, "second");
    expect(&rx, "Opened with the new ticket", long, |e| {
        (*e == Event::Opened).then_some(())
    });
    // Its own client leaving locks the server: the grace period's ticket no longer works.
    b.disconnect();
    wait_for("no input clients", long, || {
        vmm.display_info()["input_clients"] == 0
    });
    std::thread::sleep(Duration::from_millis(500));
    let (_c, rx) = connect(vmm.port, "second");
    assert_eq!(closed(&rx), Some(Failure::Auth));
}
