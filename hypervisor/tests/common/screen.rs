//! Comparing what a SPICE client shows with the VMM's own screen, and reading the demo
//! guest's console.

use std::time::Duration;

use tessera_e2e::x11::{Image, Xvfb};

use super::DisplayVmm;

/// Pixels of `shot` at (`x0`, `y0`) that differ from `expected` (pixels, width, height).
pub fn differing(shot: &Image, x0: usize, y0: usize, expected: &(Vec<u32>, usize, usize)) -> usize {
    let (px, w, h) = expected;
    (0..*h)
        .flat_map(|y| (0..*w).map(move |x| (x, y)))
        .filter(|&(x, y)| shot.at(x0 + x, y0 + y) != px[y * w + x])
        .count()
}

/// The `w` x `h` pixels of `shot` at (`x0`, `y0`).
pub fn crop(shot: &Image, x0: usize, y0: usize, w: usize, h: usize) -> (Vec<u32>, usize, usize) {
    let px = (0..h)
        .flat_map(|y| (0..w).map(move |x| (x, y)))
        .map(|(x, y)| shot.at(x0 + x, y0 + y))
        .collect();
    (px, w, h)
}

/// Where `client` (a SPICE client on `x`) shows the VMM's screen, once it shows all of it
/// exactly. The demo guest's clock changes every second, so a client picture counts only
/// between two equal VMM screenshots.
pub fn client_shows_vmm_screen(x: &Xvfb, vmm: &DisplayVmm, client: &str) -> (usize, usize) {
    client_shows(x, client, || vmm.screenshot())
}

/// As [`client_shows_vmm_screen`] for any server whose screen `server` returns.
pub fn client_shows(x: &Xvfb, client: &str, server: impl Fn() -> Image) -> (usize, usize) {
    let mut last = String::from("the client never showed the screen");
    for _ in 0..120 {
        let before = server();
        let (w, h) = (before.width, before.height);
        let shot = x.screenshot();
        let after = server();
        if before.pixels == after.pixels {
            if let Some((ox, oy)) = shot.find(&before.pixels, w, h) {
                let full = (before.pixels.clone(), w, h);
                let differ = differing(&shot, ox, oy, &full);
                if differ == 0 {
                    return (ox, oy);
                }
                last = format!("{differ} of {} pixels differ at ({ox}, {oy})", w * h);
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let saved = std::env::temp_dir().join(format!("{client}-screen.ppm"));
    x.screenshot().save_ppm(&saved);
    panic!(
        "{client} does not show the server's screen: {last} (its screen: {})",
        saved.display()
    );
}

/// The last `click X Y` line on the console.
pub fn last_click(console: &str) -> Option<(i64, i64)> {
    let line = console.lines().rev().find(|l| l.starts_with("click "))?;
    let mut it = line.split_whitespace().skip(1).map(|v| v.parse().ok());
    Some((it.next()??, it.next()??))
}
