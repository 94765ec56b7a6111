//! Windows setup from the operator's own ISO (`TESSERA_WINDOWS_ISO`; none can ship or be
//! fetched here), the way README's "UEFI and Windows" installs it: Debian's OVMF, the ISO on a
//! DVD-ROM drive and an empty qcow2 SATA disk on the AHCI controller, Hyper-V enlightenments,
//! a TPM when swtpm is installed, the bochs display. The test answers the DVD boot manager's
//! "Press any key to boot from CD or DVD" on the serial console, then waits for setup to load:
//! at least 256 MiB read off the DVD (boot.wim) by the AHCI controller (its `/metrics`), the
//! VMM still running, and a screen that is not one colour. With `TESSERA_VIRTIO_WIN_ISO`,
//! virtio-win's disc goes in a second drive.
//!
//! It needs hardware virtualisation (OVMF does not run on a PVM /dev/kvm) and a Windows ISO:
//! without either it prints a loud SKIP (no REQUIRE switch: CI machines have neither).

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// What setup reads off the DVD before its first screen: most of boot.wim.
const SETUP_READ: u64 = 256 << 20;
const SETUP_BUDGET: Duration = Duration::from_secs(900);

/// Why the test cannot run here, if it cannot.
fn unrunnable() -> Option<String> {
    let Some(iso) = std::env::var_os("TESSERA_WINDOWS_ISO") else {
        return Some("TESSERA_WINDOWS_ISO does not name a Windows 10/11 ISO".into());
    };
    if !Path::new(&iso).is_file() {
        return Some(format!("TESSERA_WINDOWS_ISO={iso:?} is not a file"));
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let hw = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    if !hw || std::fs::metadata("/dev/kvm").is_err() {
        return Some("no hardware virtualisation (vmx/svm and /dev/kvm): OVMF needs it".into());
    }
    if !Path::new(OVMF_CODE).exists() {
        return Some(format!("{OVMF_CODE} is missing (Debian package ovmf)"));
    }
    None
}

/// The DVD's bytes read so far, from the VMM's `/metrics`.
fn dvd_read_bytes(socket: &Path) -> u64 {
    let (_, text) = http(socket, "GET", "/metrics");
    text.lines()
        .filter(|l| l.starts_with("tessera_vmm_sata_read_bytes_total{port=\"1\",kind=\"dvd\"}"))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .next()
        .unwrap_or(0)
}

#[test]
fn windows_setup_starts_from_its_dvd_on_ahci() {
    if let Some(why) = unrunnable() {
        eprintln!("\n*** SKIP windows_setup_starts_from_its_dvd_on_ahci: {why}; this test did NOT run ***\n");
        return;
    }
    let iso = std::env::var("TESSERA_WINDOWS_ISO").unwrap_or_default();
    build_display_program();
    let dir = Scratch::new("windows");
    let disk = dir.0.join("win.qcow2");
    let ds = tessera_storage::Datastore::new(&dir.0).unwrap();
    tessera_storage::ops::create(&ds, &disk, 64 << 30, tessera_storage::Format::Qcow2, 65536)
        .unwrap();
    let vars = dir.0.join("win.vars");
    std::fs::copy(OVMF_VARS, &vars).unwrap();
    let socket = dir.0.join("api.sock");
    let port = tessera_e2e::x11::free_port();
    let mut cmd = Command::new(VMM);
    cmd.args(["--firmware", OVMF_CODE, "--firmware-vars"])
        .arg(&vars)
        .arg("--disk")
        .arg(format!("path={},bus=sata", disk.display()))
        .args(["--cdrom", &iso])
        .args([
            "--memory", "4G", "--vcpus", "2", "--hyperv", "--serial", "stdout",
        ])
        .arg("--display")
        .arg(format!("spice-port={port}"))
        .arg("--api-socket")
        .arg(&socket)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    if let Ok(drivers) = std::env::var("TESSERA_VIRTIO_WIN_ISO") {
        cmd.args(["--cdrom", &drivers]);
    }
    if Command::new("swtpm").arg("--version").output().is_ok() {
        cmd.arg("--tpm")
            .arg(format!("state={}", dir.0.join("tpm").display()));
    }
    let mut vmm = tessera_e2e::x11::Proc(cmd.spawn().unwrap());
    let mut stdin = vmm.0.stdin.take().unwrap();
    let mut stdout = vmm.0.stdout.take().unwrap();
    let console = Arc::new(Mutex::new(String::new()));
    let sink = console.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            sink.lock().unwrap().push_str(&text);
        }
    });
    wait_for_socket(&socket, Duration::from_secs(30));

    // The boot manager's prompt, answered; a disc without the prompt goes on by itself.
    let started = Instant::now();
    let prompt = "Press any key to boot from CD or DVD";
    while started.elapsed() < Duration::from_secs(180) && dvd_read_bytes(&socket) < (16 << 20) {
        if console.lock().unwrap().contains(prompt) {
            for _ in 0..5 {
                let _ = stdin.write_all(b"\r");
                std::thread::sleep(Duration::from_millis(300));
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "[windows] prompt {} after {:.0} s",
        if console.lock().unwrap().contains(prompt) {
            "seen"
        } else {
            "not seen"
        },
        started.elapsed().as_secs_f64()
    );

    let mut read = 0;
    while started.elapsed() < SETUP_BUDGET {
        assert!(
            vmm.0.try_wait().unwrap().is_none(),
            "the VMM ended during Windows setup's start; console:\n{}",
            console.lock().unwrap()
        );
        read = dvd_read_bytes(&socket);
        if read >= SETUP_READ {
            break;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    eprintln!(
        "[windows] {} MiB read off the DVD in {:.0} s",
        read >> 20,
        started.elapsed().as_secs_f64()
    );
    assert!(
        read >= SETUP_READ,
        "only {read} bytes read off the DVD in {SETUP_BUDGET:?}; console:\n{}",
        console.lock().unwrap()
    );
    // Setup's first screen: give it a moment, then it must show something.
    std::thread::sleep(Duration::from_secs(30));
    let (status, png) = http_bytes(&socket, "GET", "/display/screenshot", b"");
    assert_eq!(status, 200);
    let shot = decode_png(&png);
    let first = shot.pixels.first().copied().unwrap_or(0);
    assert!(
        shot.pixels.iter().any(|p| *p != first),
        "the screen is one colour ({first:#08x}) after setup loaded"
    );
    let _ = http(&socket, "PUT", "/vm/kill");
}
