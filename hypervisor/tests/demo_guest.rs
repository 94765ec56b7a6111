//! The demo desktop guest on this machine's /dev/kvm, through the VMM's SPICE server to
//! remote-viewer under Xvfb: it paints its title bar with the name from its command line in
//! the mode the command line asks for, its clock ticks, remote-viewer shows the VMM's screen
//! pixel for pixel, typed text reaches the guest (serial echo, and drawn glyph for glyph), and
//! a click lands where the client's pointer is (virtio tablet), the guest drawing its pointer
//! there.

mod common;

use std::time::Duration;

use common::*;
use tessera_demo_guest::layout::*;
use tessera_demo_guest::{render_text, ELF};
use tessera_e2e::x11::{vv_file, x_tools, Proc, Xvfb};

const W: usize = 800;
const H: usize = 600;
const CELL: usize = 8 * FONT_SCALE as usize;

/// Pixels of `shot` at (x0, y0) that differ from `expected` (w x h).
#[test]
fn the_demo_desktop_shows_its_name_clock_typing_and_pointer_in_remote_viewer() {
    if !kvm_or_skip("demo guest display") || !x_tools() {
        return;
    }
    let dir = Scratch::new("demo-guest");
    let kernel = dir.file("demo.elf", ELF);
    let vmm = DisplayVmm::start(&dir, &kernel, Some("name=pixel-check mode=800x600"), "");
    let port = vmm.port;
    let console_text = || vmm.console_text();
    wait_for("the desktop", Duration::from_secs(30), || {
        console_text().contains("tessera-demo: 800x600 tablet name=pixel-check")
    });

    // The title bar carries the name, glyph for glyph, in the mode asked for.
    let shot = vmm.screenshot();
    assert_eq!((shot.width, shot.height), (W, H));
    let title = render_text("Tessera | pixel-check", TITLE_FG, TITLE_BG);
    let differ = differing(&shot, 12, 8, &title);
    assert_eq!(differ, 0, "the title bar differs in {differ} pixels");
    // The clock (19 characters at the right of the title bar) ticks.
    let clock_x = W - 19 * CELL - 12;
    let clock = crop(&shot, clock_x, 8, 19 * CELL, CELL);
    assert!(clock.0.contains(&TITLE_FG), "no clock drawn");
    wait_for("the clock to tick", Duration::from_secs(5), || {
        crop(&vmm.screenshot(), clock_x, 8, 19 * CELL, CELL) != clock
    });

    vmm.set_ticket("demo-ticket", 60);
    let x = Xvfb::start();
    let vv = vv_file(
        &dir.0,
        "demo",
        &format!("host=127.0.0.1\nport={port}\npassword=demo-ticket\ntitle=demo-display\n"),
    );
    let _rv = Proc(x.cmd("remote-viewer").arg(&vv).spawn().unwrap());
    let (ox, oy) = client_shows_vmm_screen(&x, &vmm, "remote-viewer");

    // Typing: echoed on the console, drawn in the notes window, shown by the client.
    let win = x
        .find_window("demo-display", Duration::from_secs(10))
        .unwrap();
    x.focus(&win);
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
        || differing(&vmm.screenshot(), TEXT_X as usize, TEXT_Y as usize, &typed) == 0,
    );
    assert_eq!(client_shows_vmm_screen(&x, &vmm, "remote-viewer"), (ox, oy));

    // The pointer: a click at (200, 150) of the guest's screen lands there, and the guest
    // draws its arrow's tip (black) with white inside it there.
    x.click((ox + 200, oy + 150));
    let mut click = None;
    wait_for("the click on the console", Duration::from_secs(15), || {
        click = last_click(&console_text())
            .filter(|&(cx, cy)| (cx - 200).abs() <= 1 && (cy - 150).abs() <= 1);
        click.is_some()
    });
    let (cx, cy) = click.unwrap();
    let (cx, cy) = (cx as usize, cy as usize);
    // (The guest lifts the pointer while it repaints, e.g. its clock every second: a
    // screenshot can fall in that moment.)
    wait_for(
        "the pointer drawn at the click",
        Duration::from_secs(5),
        || {
            let shot = vmm.screenshot();
            shot.at(cx, cy) == 0 && shot.at(cx + 1, cy + 2) == 0x00ff_ffff
        },
    );
    client_shows_vmm_screen(&x, &vmm, "remote-viewer");
}
