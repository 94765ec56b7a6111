//! `boot-timer`: runs a VMM command, copies its output through, and reports when a marker
//! appeared, when the process exited, its exit status and its peak RSS. Used inside the nested
//! harness, where busybox has no clock with sub-second resolution, to time tessera-vmm and QEMU
//! the same way.
//!
//! Usage: boot-timer [--kill-at-marker] MARKER -- COMMAND [ARGS...]
//! Prints: BOOT-TIMER marker_ms=<ms|none> exit_ms=<ms> status=<code> maxrss_kib=<kib>
//! and exits with the command's status.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Instant;

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let kill_at_marker = args.first().is_some_and(|a| a == "--kill-at-marker");
    if kill_at_marker {
        args.remove(0);
    }
    let usage = "usage: boot-timer [--kill-at-marker] MARKER -- COMMAND [ARGS...]";
    let Some(sep) = args.iter().position(|a| a == "--") else {
        eprintln!("{usage}");
        std::process::exit(2);
    };
    if sep != 1 || args.len() < 3 {
        eprintln!("{usage}");
        std::process::exit(2);
    }
    let marker = &args[0];
    let start = Instant::now();
    let mut child = match Command::new(&args[2])
        .args(&args[3..])
        .stdout(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("boot-timer: cannot run {}: {e}", args[2]);
            std::process::exit(1);
        }
    };
    let mut marker_ms = None;
    if let Some(mut out) = child.stdout.take() {
        // Read as the bytes come, not by lines: a marker such as a firmware shell's prompt
        // ends no line. The tail of the last chunk is kept to match across chunks.
        let needle = marker.as_bytes();
        let mut buf = [0u8; 4096];
        let mut window: Vec<u8> = Vec::new();
        let stdout = std::io::stdout();
        let mut last = b'\n';
        loop {
            let n = match out.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let mut lock = stdout.lock();
            let _ = lock.write_all(&buf[..n]);
            let _ = lock.flush();
            last = buf[n - 1];
            if marker_ms.is_none() {
                window.extend_from_slice(&buf[..n]);
                if window.windows(needle.len()).any(|w| w == needle) {
                    marker_ms = Some(start.elapsed().as_secs_f64() * 1000.0);
                } else {
                    let keep = needle.len().saturating_sub(1).min(window.len());
                    window.drain(..window.len() - keep);
                }
            }
            if kill_at_marker && marker_ms.is_some() {
                let _ = child.kill();
                break;
            }
        }
        // The report starts a line of its own, after output that ended mid-line.
        if last != b'\n' {
            println!();
        }
    }
    let status = child.wait().map(|s| s.code().unwrap_or(-1)).unwrap_or(-1);
    let exit_ms = start.elapsed().as_secs_f64() * 1000.0;
    let maxrss = max_rss_children_kib();
    let marker = marker_ms.map_or("none".to_string(), |m| format!("{m:.1}"));
    println!(
        "BOOT-TIMER marker_ms={marker} exit_ms={exit_ms:.1} status={status} maxrss_kib={maxrss}"
    );
    std::process::exit(status.clamp(0, 255));
}

fn max_rss_children_kib() -> i64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a rusage into the pointer we pass, which is valid and sized for
    // it; the struct is only read after a zero return.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, usage.as_mut_ptr()) };
    if rc != 0 {
        return -1;
    }
    // SAFETY: getrusage returned 0, so it initialised the struct.
    unsafe { usage.assume_init() }.ru_maxrss
}
