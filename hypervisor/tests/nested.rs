//! The whole-system suite in the nested harness (tessera_e2e::nested): one L1 runs the
//! independent scenarios below in turn, each checked on its own and all reported together.
//! When L1 itself fails (it froze, which its silent heartbeat tells, or died) and no scenario
//! had failed before, the whole suite runs again on a fresh L1, up to three runs in all, each
//! retry announced on stderr: the harness's emulated AMD-V loses an interrupt now and then
//! (ARCHITECTURE.md, "Testing"), and CI must not fail for that.
//! - boot: the Debian test guest on tessera-vmm to its userspace marker, 2 vCPUs, the host
//!   bridge, the CMOS date, timed by boot-timer; ACPI as the guest found it (every table, the
//!   DSDT's devices, MCFG's ECAM, the PM timer), and power-off through ACPI's S5.
//! - power: the ACPI power button pressed through the control API reaches the guest, which
//!   powers off.
//! - hyperv: with `--hyperv` the guest detects Hyper-V and keeps time with its reference TSC
//!   page.
//! - disk: virtio-blk on a qcow2 linked clone made by tessera-storage over a base written by
//!   qemu-io; the guest checks the base's data through the clone, writes, discards and
//!   flushes; qemu-img and qemu-io check both images on the host afterwards.
//! - ahci: a SATA disk and two DVD-ROM drives on the AHCI controller: the guest mounts an ISO
//!   9660 disc made by xorriso and reads it, writes the disk, finds the second drive empty,
//!   and opens and closes the first drive's tray; qemu-io checks the disk's image afterwards.
//! - display: the guest's screen (bochs-drm, fbcon on tty1) through tessera-vmm's SPICE
//!   server, forwarded out of L1 to remote-viewer under Xvfb here: a typed line comes back on
//!   the guest's serial console, and the client's picture equals the VMM's screenshot pixel
//!   for pixel.
//! - net, net-vhost: virtio-net with two queue pairs on a tap tessera-vmm made in L1, frames
//!   moved by tessera-vmm's threads, then by the kernel's vhost-net: the guest's eth0 has the
//!   MAC, MTU, speed and queues configured, and 8 MiB go each way between the guest and L1
//!   over TCP (the guest fetches from L1's HTTP server, sends to L1's nc) with the same
//!   checksums at both ends and no receive error in the guest's driver.

mod common;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use common::*;
use tessera_e2e::nested::{tail_lines, NestError, Spec, L1};
use tessera_e2e::x11::{free_port, vv_file, x_tools, Xvfb};
use tessera_storage::ops::{self, Durability};
use tessera_storage::Datastore;

/// Budgets, measured on the 2-core build machine with a whole CI run around it (boot ~1 min,
/// disk ~1 min, display ~3 min), with room for a loaded machine.
const BOOT_BUDGET: Duration = Duration::from_secs(300);
const DISK_BUDGET: Duration = Duration::from_secs(300);
const POWER_BUDGET: Duration = Duration::from_secs(300);
const HYPERV_BUDGET: Duration = Duration::from_secs(300);
const DISPLAY_READY_BUDGET: Duration = Duration::from_secs(480);
const NET_BUDGET: Duration = Duration::from_secs(300);
const RUN_BUDGET: Duration = Duration::from_secs(1500);

/// Runs of the suite: one, and again on a fresh L1 when the harness itself failed (L1 froze
/// or died, or its KVM shut down an L2 vCPU that had not run or left an L2 hung before its
/// userspace) before any scenario failed.
const ATTEMPTS: u32 = 3;

/// Set when the harness itself failed during the current run of the suite: L1 froze or died,
/// or L1's KVM shut down a vCPU of L2's that had not run (below).
static L1_FAILED: AtomicBool = AtomicBool::new(false);

/// A scenario's VMM reporting a triple fault of a vCPU in the architectural INIT state
/// (CS:IP F000:FFF0, CR0 0x10): a vCPU that never executed an instruction of its guest cannot
/// have faulted. L1's KVM on L0's emulated AMD-V does this now and then to an AP between INIT
/// and SIPI (seen 2026-12-05 and -06 in the disk, display benchmark and UEFI runs); on
/// hardware the same VMM's guests boot. The harness's flake, like a frozen L1.
fn l1_kvm_flake(log: &str) -> bool {
    log.lines().any(|l| {
        l.contains("triple fault: the vCPU's state")
            && l.contains("rip=0xfff0 ")
            && l.contains("cs=0xf000/0xffff0000 cr0=0x10 ")
    })
}

/// Fails unless `scenario` ended with status 0, telling the harness's flake from the VMM's.
fn expect_ok(scenario: &str, outcome: &tessera_e2e::nested::Outcome) {
    if outcome.rc != 0 && l1_kvm_flake(&outcome.log) {
        L1_FAILED.store(true, Ordering::SeqCst);
    }
    assert_eq!(
        outcome.rc, 0,
        "the {scenario} scenario failed:\n{}",
        outcome.log
    );
}

/// A harness step's result or a panic with its error, noting L1's own failures.
trait OrFail<T> {
    fn or_fail(self) -> T;
}

impl<T> OrFail<T> for Result<T, NestError> {
    fn or_fail(self) -> T {
        self.unwrap_or_else(|e| {
            if e.is_l1_failure() || e.is_guest_boot_hang() {
                L1_FAILED.store(true, Ordering::SeqCst);
            }
            panic!("{e}")
        })
    }
}

fn sh(cmd: &str, args: &[&str], dir: &Path) -> String {
    let out = Command::new(cmd)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{cmd} {args:?} failed:\n{text}");
    text
}

/// qemu-io reads `pattern` at each (offset, length) and must find it.
fn expect_pattern(dir: &Path, image: &str, checks: &[(&str, &str, &str)]) {
    let mut args = vec!["-r"];
    let cmds: Vec<String> = checks
        .iter()
        .map(|(p, off, len)| format!("read -P {p} {off} {len}"))
        .collect();
    for c in &cmds {
        args.extend(["-c", c.as_str()]);
    }
    args.push(image);
    let out = sh("qemu-io", &args, dir);
    assert!(
        !out.contains("Pattern verification failed") && !out.contains("failed"),
        "{image}: {out}"
    );
}

/// The AHCI scenario's disc's data file: 3 MiB that no two blocks of share.
fn disc_data() -> Vec<u8> {
    (0..3u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect()
}

/// The transfer disk: a tar of a datastore holding a linked clone (made by tessera-storage)
/// over a base written by qemu-io, with room for the clone to grow.
fn make_transfer_disk(scratch: &Scratch) -> std::path::PathBuf {
    let ds_dir = scratch.0.join("ds");
    std::fs::create_dir_all(&ds_dir).unwrap();
    sh(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", "base.qcow2", "64M"],
        &ds_dir,
    );
    sh(
        "qemu-io",
        &[
            "-c",
            "write -P 0x3c 2M 1M",
            "-c",
            "write -P 0x77 8M 1M",
            "base.qcow2",
        ],
        &ds_dir,
    );
    // The AHCI scenario's disk, and its disc: an ISO 9660 image made by xorriso.
    sh(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", "sata.qcow2", "64M"],
        &ds_dir,
    );
    let disc = scratch.0.join("disc");
    std::fs::create_dir_all(&disc).unwrap();
    std::fs::write(disc.join("hello.txt"), "hello-from-the-disc\n").unwrap();
    std::fs::write(disc.join("data.bin"), disc_data()).unwrap();
    sh(
        "xorriso",
        &[
            "-as",
            "mkisofs",
            "-quiet",
            "-V",
            "TESSERA_TEST",
            "-J",
            "-R",
            "-o",
            ds_dir.join("disc.iso").to_str().unwrap(),
            disc.to_str().unwrap(),
        ],
        &ds_dir,
    );
    let ds = Datastore::new(&ds_dir).unwrap();
    ops::linked_clone(
        &ds,
        &ds_dir.join("base.qcow2"),
        tessera_storage::Format::Qcow2,
        &ds_dir.join("clone.qcow2"),
        Durability::Sync,
    )
    .unwrap();
    let xfer = scratch.0.join("xfer.raw");
    sh(
        "tar",
        &[
            "-cf",
            xfer.to_str().unwrap(),
            "base.qcow2",
            "clone.qcow2",
            "sata.qcow2",
            "disc.iso",
        ],
        &ds_dir,
    );
    std::fs::OpenOptions::new()
        .write(true)
        .open(&xfer)
        .unwrap()
        .set_len(256 << 20)
        .unwrap();
    xfer
}

fn check_boot(l1: &mut L1) {
    let boot = l1.scenario("boot", BOOT_BUDGET).or_fail();
    expect_ok("boot", &boot);
    assert_guest_output(&boot.log);
    let timer = boot
        .log
        .lines()
        .find(|l| l.starts_with("BOOT-TIMER"))
        .unwrap_or_else(|| panic!("no BOOT-TIMER line:\n{}", boot.log));
    assert!(
        timer.contains("status=0") && !timer.contains("marker_ms=none"),
        "{timer}"
    );
    let line = |prefix: &str| {
        boot.log
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no '{prefix}' line:\n{}", boot.log))
    };
    let tables = line("tg: acpi tables=");
    for t in ["APIC", "DSDT", "FACP", "FACS", "MCFG", "SSDT"] {
        assert!(
            tables.split_whitespace().any(|x| x == t),
            "no {t}: {tables}"
        );
    }
    let devices = line("tg: acpi devices=");
    for d in [
        "PNP0A08:00",
        "PNP0501:00",
        "PNP0303:00",
        "PNP0F13:00",
        "PNP0B00:00",
        "PNP0C02:00",
        "LNXPWRBN:00",
        "ACPI0007:00",
        "ACPI0007:01",
    ] {
        assert!(
            devices.split_whitespace().any(|x| x == d),
            "no {d}: {devices}"
        );
    }
    let mmconfig = line("tg: mmconfig ");
    assert!(mmconfig.contains("b0000000-bfffffff"), "{mmconfig}");
    let clocks = line("tg: clocksources=");
    assert!(clocks.contains("acpi_pm"), "{clocks}");
    // The quiet kernel still prints errors: ACPICA found nothing wrong with the tables or the
    // hardware they describe.
    assert!(
        !boot.log.contains("ACPI Error") && !boot.log.contains("ACPI BIOS Error"),
        "{}",
        boot.log
    );
    assert!(
        boot.log.contains("the guest powered off (ACPI S5)"),
        "the guest did not power off through ACPI:\n{}",
        boot.log
    );
}

fn check_hyperv(l1: &mut L1) {
    let hv = l1.scenario("hyperv", HYPERV_BUDGET).or_fail();
    let log = &hv.log;
    expect_ok("hyperv", &hv);
    for expected in [
        "tg: cpus=2 online=0-1",
        "tg: hypervisor Microsoft Hyper-V",
        "tg: clocksource current=hyperv_clocksource_tsc_page",
        "the guest powered off (ACPI S5)",
        "NEST: hyperv vmm rc=0",
    ] {
        assert!(log.contains(expected), "no '{expected}':\n{log}");
    }
    // Without it the guest runs on KVM's own interfaces.
    let boot = l1.console();
    assert!(
        boot.contains("tg: hypervisor KVM"),
        "the plain boot did not see KVM"
    );
}

fn check_power(l1: &mut L1) {
    let power = l1.scenario("power", POWER_BUDGET).or_fail();
    expect_ok("power", &power);
    for expected in [
        r#"NEST: power-button reply {"listening":true}"#,
        "tg: power button pressed",
        "the guest powered off (ACPI S5)",
        "NEST: power vmm rc=0",
    ] {
        assert!(
            power.log.contains(expected),
            "no '{expected}':\n{}",
            power.log
        );
    }
}

fn check_disk(l1: &mut L1) {
    let disk = l1.scenario("disk", DISK_BUDGET).or_fail();
    expect_ok("disk", &disk);
    for line in [
        "tg: pci 0000:00:01.0 0x1af4:0x1042 class=0x010000",
        "tg: vda sectors=131072 serial=tessera-disk-0 queues=2 ro=0",
        "tg: vda read-check ok",
        "tg: vda wrote 0xa5 at 4M",
        "tg: vda discarded 8M+1M",
        "tg: vda discard-check ok",
        "TESSERA-GUEST-READY",
    ] {
        assert!(
            disk.log.contains(line),
            "missing {line:?} in:\n{}",
            disk.log
        );
    }
}

fn check_ahci(l1: &mut L1, scratch: &Scratch) {
    let run = l1.scenario("ahci", DISK_BUDGET).or_fail();
    expect_ok("ahci", &run);
    let md5 = sh("md5sum", &["data.bin"], &scratch.0.join("disc"));
    let want = md5
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    for line in [
        "tg: ahci 0x8086:0x2922 driver=ahci ports=6".to_string(),
        "tg: ahci sda sectors=131072 model=Tessera_SATA_SSD rotational=0".to_string(),
        "tg: ahci sr0 model=Tessera_DVD-ROM_ sr1=present".to_string(),
        "tg: ahci iso label=TESSERA_TEST hello=hello-from-the-disc".to_string(),
        format!("tg: ahci iso data md5={want}"),
        "tg: ahci sda write-check ok".to_string(),
        "tg: ahci sr1 empty ok".to_string(),
        "tg: ahci sr0 ejected ok".to_string(),
        "tg: ahci sr0 reloaded ok".to_string(),
        "TESSERA-GUEST-READY".to_string(),
    ] {
        assert!(run.log.contains(&line), "missing {line:?} in:\n{}", run.log);
    }
}

/// The word after `key=` on the line of `log` that starts with `prefix` (empty if none).
fn value_in<'a>(log: &'a str, prefix: &str, key: &str) -> &'a str {
    log.lines()
        .find_map(|l| l.trim().strip_prefix(prefix))
        .and_then(|rest| {
            rest.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{key}=")[..]))
        })
        .unwrap_or_default()
}

fn check_net(l1: &mut L1, scenario: &str) {
    let run = l1.scenario(scenario, NET_BUDGET).or_fail();
    expect_ok(scenario, &run);
    let log = &run.log;
    let path = if scenario == "net-vhost" {
        "vhost-net moves the frames"
    } else {
        "virtio-net: driver ready tap=tnet0 pairs=2"
    };
    assert!(log.contains(path), "missing {path:?} in:\n{log}");
    for line in [
        "NEST: net tap tnet0 up",
        "tg: net eth0 driver=virtio_net mac=52:54:00:12:34:56 mtu=1500 speed=10000 queues=rx-0 rx-1 tx-0 tx-1",
        "tg: net upload sent",
        "tg: net rx_errors=0",
        "tg: net rx_length_errors=0",
        "tg: net tx_errors=0",
        "TESSERA-GUEST-READY",
        "NEST: net vmm rc=0",
    ] {
        assert!(log.contains(line), "missing {line:?} in:\n{log}");
    }
    let served = value_in(log, "NEST: net served", "md5");
    let downloaded = value_in(log, "tg: net download", "md5");
    assert!(
        served.len() == 32 && served == downloaded,
        "L1 served {served:?}, the guest got {downloaded:?}:\n{log}"
    );
    assert_eq!(value_in(log, "tg: net download", "bytes"), "8388608");
    let sent = value_in(log, "tg: net upload", "md5");
    let received = value_in(log, "NEST: net received", "md5");
    assert!(
        sent.len() == 32 && sent == received,
        "the guest sent {sent:?}, L1 got {received:?}:\n{log}"
    );
}

/// The images the disk scenario left, once L1 wrote the datastore back.
fn check_images(scratch: &Scratch, xfer: &Path) {
    let back = scratch.0.join("back");
    std::fs::create_dir_all(&back).unwrap();
    sh("tar", &["-xf", xfer.to_str().unwrap()], &back);
    for image in ["clone.qcow2", "base.qcow2", "sata.qcow2"] {
        let check = sh("qemu-img", &["check", image], &back);
        assert!(check.contains("No errors were found"), "{image}: {check}");
        assert!(!check.contains("leaked"), "{image}: {check}");
    }
    expect_pattern(
        &back,
        "clone.qcow2",
        &[
            ("0x3c", "2M", "1M"),
            ("0xa5", "4M", "1M"),
            ("0", "8M", "1M"),
        ],
    );
    // The AHCI scenario's SATA disk.
    expect_pattern(
        &back,
        "sata.qcow2",
        &[("0", "0", "4M"), ("0xa5", "4M", "1M")],
    );
    // The base is untouched: the guest's writes and discards live in the clone only.
    expect_pattern(
        &back,
        "base.qcow2",
        &[("0", "4M", "1M"), ("0x77", "8M", "1M")],
    );
}

fn check_display(l1: &mut L1, dir: &Path, port: u16) {
    let text = l1
        .wait_for("the nested guest's display", DISPLAY_READY_BUDGET, |t| {
            t.contains("NEST: display ready") || t.contains("NEST-END display")
        })
        .or_fail();
    assert!(
        !text.contains("NEST-END display"),
        "the display scenario ended early:\n{}",
        tail_lines(&text, 60)
    );
    assert!(
        text.contains("tg: display bochs-drmdrmfb 1024,768"),
        "bochs-drm did not take the display:\n{}",
        tail_lines(&text, 60)
    );

    let x = Xvfb::start();
    let vv = vv_file(
        dir,
        "nested",
        &format!("host=127.0.0.1\nport={port}\npassword=nested-ticket\ntitle=nested-guest\n"),
    );
    let _rv = tessera_e2e::x11::Proc(x.cmd("remote-viewer").arg(&vv).spawn().unwrap());
    let win = x
        .find_window("nested-guest", Duration::from_secs(60))
        .expect("remote-viewer's window");
    // The window can appear before SPICE's inputs channel is up, and keys sent then are lost
    // (CI saw "llo from the client"): the scenario says when the VMM has the client's inputs
    // channel. Should a line still come back cut, it is typed again (the scenario reports
    // every line the guest echoes), and the attempts are counted in the log.
    l1.wait_for(
        "the client's inputs channel",
        Duration::from_secs(120),
        |t| t.contains("NEST: client inputs up"),
    )
    .or_fail();
    let echoed = |l1: &L1| l1.console().matches("NEST: tg: typed: ").count();
    let typed = (1..=4).any(|attempt| {
        let before = echoed(l1);
        x.focus(&win);
        x.run(
            "xdotool",
            &["type", "--delay", "200", "hello from the client"],
        );
        x.run("xdotool", &["key", "Return"]);
        let seen = l1
            .poll("the typed line's echo", Duration::from_secs(60), |t| {
                t.matches("NEST: tg: typed: ").count() > before
            })
            .or_fail();
        let ok = seen.is_some_and(|t| t.contains("NEST: tg: typed: hello from the client"));
        if !ok {
            eprintln!("[nested] attempt {attempt}: the guest did not echo the line whole");
        }
        ok
    });
    assert!(
        typed,
        "the guest never echoed the typed line; L1's console ends:\n{}",
        tail_lines(&l1.console(), 40)
    );
    let text = l1
        .wait_for("the VMM's screenshot", Duration::from_secs(120), |t| {
            t.contains("NEST-SCREENSHOT-END")
        })
        .or_fail();
    let b64: String = text
        .split("NEST-SCREENSHOT-BEGIN")
        .nth(1)
        .and_then(|t| t.split("NEST-SCREENSHOT-END").next())
        .unwrap()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let png = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("base64 screenshot");
    let shot = decode_png(&png);
    assert_eq!((shot.width, shot.height), (1024, 768));
    let lit = shot.pixels.iter().filter(|&&p| p != 0).count();
    assert!(lit > 500, "the guest's screen is blank ({lit} lit pixels)");

    // The screen is still (no cursor blink); the client must show exactly the same pixels.
    let mut last = String::from("never found");
    let deadline = Instant::now() + Duration::from_secs(60);
    let matched = loop {
        let client = x.screenshot();
        if let Some((ox, oy)) = client.find(&shot.pixels, 1024, 768) {
            let differ = client.differing(ox, oy, &shot.pixels, 1024, 768);
            if differ == 0 {
                break Some((ox, oy));
            }
            last = format!("{differ} pixels differ at ({ox}, {oy})");
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let Some((ox, oy)) = matched else {
        panic!("remote-viewer does not show the VMM's screenshot: {last}");
    };
    // A click in the middle of the guest's screen: SPICE's absolute pointer, through the
    // USB tablet (the guest has no virtio-input driver), lands at (512, 384) of 1024x768.
    x.click((ox + 512, oy + 384));
    std::thread::sleep(Duration::from_secs(2));
    // Done: the scenario ends when the guest echoes this.
    x.focus(&win);
    x.run("xdotool", &["type", "--delay", "100", "nest-done"]);
    x.run("xdotool", &["key", "Return"]);
    let end = l1.scenario("display", Duration::from_secs(180)).or_fail();
    expect_ok("display", &end);
    check_usb_input(&end.log);
}

/// The display scenario's USB devices: xhci_hcd drove the controller, usbhid the tablet and
/// the keyboard; the typed keys came through the keyboard and the click through the tablet,
/// at the pixel clicked, scaled to the tablet's 0..=32767.
fn check_usb_input(log: &str) {
    let why = || tail_lines(log, 40);
    assert!(
        log.contains("tg: usb xhci 0x1b36:0x000d driver=xhci_hcd"),
        "xhci_hcd did not bind the controller:\n{}",
        why()
    );
    for name in ["Tessera USB Tablet", "Tessera USB Keyboard"] {
        assert!(
            log.lines()
                .any(|l| l.contains("tg: usb input event") && l.trim_end().ends_with(name)),
            "usbhid made no input device of the {name}:\n{}",
            why()
        );
    }
    let count = |dev: &str| -> usize {
        log.lines()
            .find_map(|l| l.split(&format!("{dev}=")).nth(1))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    assert!(
        count("keyboard") >= 20,
        "the typed lines did not come through the USB keyboard:\n{}",
        why()
    );
    for event in [
        "type=3 code=0 value=16399",
        "type=3 code=1 value=16404",
        "type=1 code=272 value=1",
        "type=1 code=272 value=0",
    ] {
        assert!(
            log.contains(&format!("tg: usb event tablet {event}")),
            "the click did not come through the USB tablet as {event}:\n{}",
            why()
        );
    }
}

/// A scenario that failed: its message, and whether the harness itself had failed by then
/// (every scenario after L1's failure fails with it).
struct Failure {
    message: String,
    l1: bool,
}

/// Runs `check`, turning a panic into its failure.
fn checked(name: &str, check: impl FnOnce()) -> Option<Failure> {
    let started = Instant::now();
    let r = catch_unwind(AssertUnwindSafe(check));
    eprintln!(
        "[nested] scenario {name}: {} in {:.0} s",
        if r.is_ok() { "passed" } else { "FAILED" },
        started.elapsed().as_secs_f64()
    );
    r.err().map(|e| {
        let msg = e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "(no message)".into());
        Failure {
            message: format!("scenario {name}: {msg}"),
            l1: L1_FAILED.load(Ordering::SeqCst),
        }
    })
}

#[test]
fn boot_disk_and_display_in_the_nested_harness() {
    if !nested_or_skip("the nested suite") || !x_tools() {
        return;
    }
    for attempt in 1..=ATTEMPTS {
        L1_FAILED.store(false, Ordering::SeqCst);
        let failures = run_suite(attempt);
        if failures.is_empty() {
            return;
        }
        let all = || {
            failures
                .iter()
                .map(|f| f.message.as_str())
                .collect::<Vec<_>>()
                .join("\n\n")
        };
        // A scenario that failed before the harness did fails the test, whatever came after.
        assert!(
            failures.iter().all(|f| f.l1) && attempt < ATTEMPTS,
            "{}",
            all()
        );
        let why = failures[0].message.lines().next().unwrap_or_default();
        eprintln!(
            "*** [nested] attempt {attempt} of {ATTEMPTS}: the harness itself failed (L1 froze \
             or died, or its KVM shut down a vCPU that had not run or left L2 hung before its \
             userspace: {why}); its flake, not tessera-vmm's (ARCHITECTURE.md, Testing): the \
             whole suite runs again on a fresh L1 ***"
        );
    }
}

/// One run of the suite on one L1, with a fresh transfer disk.
fn run_suite(attempt: u32) -> Vec<Failure> {
    let scratch = Scratch::new(&format!("nested-suite-{attempt}"));
    let xfer = make_transfer_disk(&scratch);
    let port = free_port();
    let mut spec = Spec::new(
        "suite",
        &[
            "boot",
            "power",
            "hyperv",
            "disk",
            "ahci",
            "display",
            "net",
            "net-vhost",
        ],
    );
    spec.disk = Some(xfer.clone());
    spec.hostfwd = Some(port);
    spec.budget = RUN_BUDGET;
    let mut failures: Vec<Failure> = Vec::new();
    let mut l1 = None;
    failures.extend(checked("L1's start", || {
        let mut started = spec.start().or_fail();
        started
            .wait_for("L1's /dev/kvm", Duration::from_secs(120), |t| {
                t.contains("NEST: /dev/kvm ready") || t.contains("NEST: no /dev/kvm")
            })
            .or_fail();
        assert!(
            started.console().contains("NEST: /dev/kvm ready"),
            "{}",
            started.console()
        );
        l1 = Some(started);
    }));
    let Some(mut l1) = l1 else {
        return failures;
    };
    failures.extend(checked("boot", || check_boot(&mut l1)));
    failures.extend(checked("power", || check_power(&mut l1)));
    failures.extend(checked("hyperv", || check_hyperv(&mut l1)));
    failures.extend(checked("disk", || check_disk(&mut l1)));
    failures.extend(checked("ahci", || check_ahci(&mut l1, &scratch)));
    failures.extend(checked("display", || {
        check_display(&mut l1, &scratch.0, port)
    }));
    failures.extend(checked("net", || check_net(&mut l1, "net")));
    failures.extend(checked("net-vhost", || check_net(&mut l1, "net-vhost")));
    // The datastore goes back to the host after the last scenario.
    let done = l1.finish(Duration::from_secs(240));
    failures.extend(checked("disk images", || {
        let text = done.or_fail();
        assert!(
            text.contains("NEST: datastore written back"),
            "{}",
            tail_lines(&text, 20)
        );
        check_images(&scratch, &xfer);
    }));
    failures
}
