//! Tiny purpose-built guests on this machine's /dev/kvm: vCPU setup, port I/O, MMIO, PCI
//! configuration cycles, interrupts and every way a VM ends.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use tessera_e2e::proc::DieWithParent;
use tessera_vmm::tiny_guest as tg;

const LIMIT: Duration = Duration::from_secs(60);

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn hello_guest_prints_and_exits_zero_with_one_and_two_vcpus() {
    if !kvm_or_skip("hello_guest") {
        return;
    }
    let dir = Scratch::new("hello");
    let k = dir.file("hello.elf", &tg::hello(b"Hello from a tiny guest\n"));
    for vcpus in ["1", "2"] {
        let out = run_vmm(
            &[
                "--kernel",
                k.to_str().unwrap(),
                "--memory",
                "64M",
                "--vcpus",
                vcpus,
            ],
            LIMIT,
        );
        assert_eq!(
            stdout(&out),
            "Hello from a tiny guest\n",
            "stderr: {}",
            stderr(&out)
        );
        assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    }
}

#[test]
fn guest_reads_the_host_bridge_through_config_mechanism_1() {
    if !kvm_or_skip("pci_probe") {
        return;
    }
    let dir = Scratch::new("pci");
    let k = dir.file("pci.elf", &tg::pci_probe());
    let out = run_vmm(&["--kernel", k.to_str().unwrap(), "--memory", "64M"], LIMIT);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    // Vendor 8086, device 29c0 (the Q35 MCH); class 06/00/00, revision 0 (little-endian
    // dwords).
    assert_eq!(out.stdout, [0x86, 0x80, 0xc0, 0x29, 0x00, 0x00, 0x00, 0x06]);
}

#[test]
fn serial_interrupt_reaches_the_guest_through_ioapic_and_lapic() {
    if !kvm_or_skip("serial_irq") {
        return;
    }
    let dir = Scratch::new("irq");
    let k = dir.file("irq.elf", &tg::serial_irq());
    let mut child = Command::new(VMM)
        .die_with_parent()
        .args(["--kernel", k.to_str().unwrap(), "--memory", "64M"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    child.stdin.as_mut().unwrap().write_all(b"Z").unwrap();
    let mut rest = String::new();
    out.read_line(&mut rest).unwrap();
    assert_eq!(rest, "IRQ:Z\n");
    let status = wait_with_timeout(child, LIMIT).status;
    assert_eq!(status.code(), Some(0));
}

#[test]
fn unknown_ports_and_mmio_are_logged_rate_limited_and_the_guest_continues() {
    if !kvm_or_skip("poke_unknown") {
        return;
    }
    let dir = Scratch::new("poke");
    let k = dir.file("poke.elf", &tg::poke_unknown(500));
    let out = run_vmm(&["--kernel", k.to_str().unwrap(), "--memory", "64M"], LIMIT);
    assert_eq!(stdout(&out), "still alive\n");
    assert_eq!(out.status.code(), Some(0));
    let err = stderr(&out);
    assert!(err.contains("0x1234"), "port access not logged: {err}");
    assert!(err.contains("0xd0000000"), "MMIO access not logged: {err}");
    // 2,000 unknown accesses; the limiter lets through 10 per 5 s per bus.
    let lines = err
        .lines()
        .filter(|l| l.contains("no device claims"))
        .count();
    assert!(lines <= 40, "{lines} log lines: not rate-limited");
}

#[test]
fn triple_fault_has_its_own_exit_status() {
    if !kvm_or_skip("triple_fault") {
        return;
    }
    let dir = Scratch::new("triple");
    let k = dir.file("triple.elf", &tg::triple_fault());
    let out = run_vmm(&["--kernel", k.to_str().unwrap(), "--memory", "64M"], LIMIT);
    assert_eq!(stdout(&out), "faulting\n");
    assert_eq!(out.status.code(), Some(3), "stderr: {}", stderr(&out));
    assert!(stderr(&out).contains("triple-faulted"));
}

#[test]
fn control_api_reports_pauses_resumes_and_shuts_down() {
    if !kvm_or_skip("control_api") {
        return;
    }
    let dir = Scratch::new("api");
    let k = dir.file("idle.elf", &tg::milestones_then_idle(&[0x10, 0x20, 0x10]));
    let sock = dir.0.join("vm.sock");
    let child = Command::new(VMM)
        .die_with_parent()
        .args([
            "--kernel",
            k.to_str().unwrap(),
            "--memory",
            "64M",
            "--vcpus",
            "2",
        ])
        .args(["--api-socket", sock.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_socket(&sock, LIMIT);

    // The guest writes its milestones right after boot; poll until both are recorded.
    let mut info = serde_json::Value::Null;
    for _ in 0..500 {
        let (code, body) = http(&sock, "GET", "/vm");
        assert_eq!(code, 200);
        info = serde_json::from_str(&body).unwrap();
        if info["boot_milestones"]
            .as_array()
            .is_some_and(|m| m.len() == 2)
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(info["state"], "running");
    assert_eq!(info["vcpus"], 2);
    assert_eq!(info["memory_mib"], 64);
    assert_eq!(info["kernel_format"], "elf");
    let codes: Vec<u64> = info["boot_milestones"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["code"].as_u64().unwrap())
        .collect();
    assert_eq!(codes, vec![0x10, 0x20]);
    assert_eq!(info["debug_port_writes"], 3);

    assert_eq!(http(&sock, "PUT", "/vm/pause").0, 204);
    let (_, body) = http(&sock, "GET", "/vm");
    assert!(body.contains("\"state\":\"paused\""), "{body}");
    let (code, body) = http(&sock, "PUT", "/vm/pause");
    assert_eq!(code, 409);
    assert!(body.contains("already paused"), "{body}");
    assert_eq!(http(&sock, "PUT", "/vm/resume").0, 204);
    let (code, body) = http(&sock, "GET", "/no/such/thing");
    assert_eq!(code, 404);
    assert!(body.contains("\"error\""));
    assert_eq!(http(&sock, "DELETE", "/vm").0, 405);
    assert_eq!(http(&sock, "PUT", "/vm/shutdown").0, 202);

    let out = wait_with_timeout(child, LIMIT);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), "idle\n");
    assert!(!sock.exists(), "the API socket must be removed at exit");
}

#[test]
fn kill_through_the_api_has_its_own_exit_status() {
    if !kvm_or_skip("api_kill") {
        return;
    }
    let dir = Scratch::new("kill");
    let k = dir.file("idle.elf", &tg::milestones_then_idle(&[]));
    let (child, sock, _out) = start_with_api(&dir, &k);
    assert_eq!(http(&sock, "PUT", "/vm/kill").0, 202);
    let out = wait_with_timeout(child, LIMIT);
    assert_eq!(out.status.code(), Some(5));
}

#[test]
fn config_file_boots_the_same_guest() {
    if !kvm_or_skip("config_file") {
        return;
    }
    let dir = Scratch::new("cfgfile");
    let k = dir.file("hello.elf", &tg::hello(b"from a config file\n"));
    let toml = dir.file(
        "vm.toml",
        format!(
            "kernel = \"{}\"\nmemory = \"64M\"\nvcpus = 2\n",
            k.display()
        )
        .as_bytes(),
    );
    let json = dir.file(
        "vm.json",
        format!(
            "{{\"kernel\": \"{}\", \"memory\": \"64M\", \"vcpus\": 2}}",
            k.display()
        )
        .as_bytes(),
    );
    for cfg in [toml, json] {
        let out = run_vmm(&["--config", cfg.to_str().unwrap()], LIMIT);
        assert_eq!(
            stdout(&out),
            "from a config file\n",
            "stderr: {}",
            stderr(&out)
        );
        assert_eq!(out.status.code(), Some(0));
    }
}

/// A guest that prints without end fills at most twice `serial_log_max` of the host's disk:
/// the console file is rotated, and the newest output is kept.
#[test]
fn a_flooding_guest_fills_at_most_two_console_files() {
    if !kvm_or_skip("serial_flood") {
        return;
    }
    let dir = Scratch::new("serialflood");
    // 16,384 lines of 16 bytes: 256 KiB against a 64 KiB limit.
    let k = dir.file("flood.elf", &tg::serial_flood(16_384));
    let log = dir.0.join("console.log");
    let spec = format!("file:{}", log.display());
    let out = run_vmm(
        &[
            "--kernel",
            k.to_str().unwrap(),
            "--memory",
            "64M",
            "--serial",
            &spec,
            "--serial-log-max",
            "64K",
        ],
        LIMIT,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let size = |p: &std::path::Path| std::fs::metadata(p).unwrap().len();
    let previous = dir.0.join("console.log.1");
    assert!(size(&log) <= 64 << 10, "console.log: {} bytes", size(&log));
    assert!(
        size(&previous) <= 64 << 10,
        "console.log.1: {} bytes",
        size(&previous)
    );
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .ends_with("flood done\n"),
        "the newest output is in console.log"
    );
    let files = std::fs::read_dir(&dir.0).unwrap().count();
    assert_eq!(files, 3, "flood.elf, console.log and console.log.1 only");
}

#[test]
fn serial_console_to_a_file_or_off() {
    if !kvm_or_skip("serial_file") {
        return;
    }
    let dir = Scratch::new("serialfile");
    let k = dir.file("hello.elf", &tg::hello(b"into the file\n"));
    let log = dir.0.join("console.log");
    let spec = format!("file:{}", log.display());
    let out = run_vmm(
        &[
            "--kernel",
            k.to_str().unwrap(),
            "--memory",
            "64M",
            "--serial",
            &spec,
        ],
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), "");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "into the file\n");
    let out = run_vmm(
        &[
            "--kernel",
            k.to_str().unwrap(),
            "--memory",
            "64M",
            "--serial",
            "off",
        ],
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out), "");
}

/// Starts `kernel` with a control API and `--log info`; returns the child, its socket, and
/// its standard output as lines.
fn start_with_api(
    dir: &Scratch,
    kernel: &std::path::Path,
) -> (
    std::process::Child,
    std::path::PathBuf,
    std::io::Lines<BufReader<std::process::ChildStdout>>,
) {
    let sock = dir.0.join("vm.sock");
    let mut child = Command::new(VMM)
        .die_with_parent()
        .args(["--kernel", kernel.to_str().unwrap(), "--memory", "64M"])
        .args(["--api-socket", sock.to_str().unwrap(), "--log", "info"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for_socket(&sock, LIMIT);
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    (child, sock, lines)
}

#[test]
fn the_acpi_power_button_reaches_a_listening_guest_which_decides() {
    if !kvm_or_skip("acpi_power_button") {
        return;
    }
    let dir = Scratch::new("button");
    // A guest that never enabled the button: the press is answered, nobody listens.
    let idle = dir.file("idle.elf", &tg::milestones_then_idle(&[]));
    let (child, sock, _out) = start_with_api(&dir, &idle);
    let (code, body) = http(&sock, "PUT", "/vm/power-button");
    assert_eq!(code, 202, "{body}");
    assert!(body.contains("\"listening\":false"), "{body}");
    assert_eq!(http(&sock, "PUT", "/vm/kill").0, 202);
    wait_with_timeout(child, LIMIT);

    // A guest that obeys: it sees the press and powers off through S5; the VMM exits 0.
    let obey = dir.file("obey.elf", &tg::acpi_power_button(true));
    let (child, sock, mut out) = start_with_api(&dir, &obey);
    assert_eq!(out.next().unwrap().unwrap(), "button armed");
    let (code, body) = http(&sock, "PUT", "/vm/power-button");
    assert_eq!(code, 202, "{body}");
    assert!(body.contains("\"listening\":true"), "{body}");
    let out = wait_with_timeout(child, LIMIT);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert!(
        stderr(&out).contains("the guest powered off (ACPI S5)"),
        "{}",
        stderr(&out)
    );

    // A guest that ignores it keeps running until told otherwise.
    let ignore = dir.file("ignore.elf", &tg::acpi_power_button(false));
    let (child, sock, mut out) = start_with_api(&dir, &ignore);
    assert_eq!(out.next().unwrap().unwrap(), "button armed");
    let (_, body) = http(&sock, "PUT", "/vm/power-button");
    assert!(body.contains("\"listening\":true"), "{body}");
    assert_eq!(out.next().unwrap().unwrap(), "button ignored");
    std::thread::sleep(Duration::from_millis(300));
    let (code, body) = http(&sock, "GET", "/vm");
    assert_eq!(code, 200);
    assert!(body.contains("\"state\":\"running\""), "{body}");
    assert_eq!(http(&sock, "PUT", "/vm/shutdown").0, 202);
    let out = wait_with_timeout(child, LIMIT);
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn a_guest_reboot_restarts_the_vm_in_place_or_ends_it() {
    if !kvm_or_skip("reboot") {
        return;
    }
    let dir = Scratch::new("reboot");
    let k = dir.file("reboot.elf", &tg::reboot_counter(3));
    for vcpus in ["1", "2"] {
        let out = run_vmm(
            &[
                "--kernel",
                k.to_str().unwrap(),
                "--memory",
                "64M",
                "--vcpus",
                vcpus,
                "--on-reboot",
                "restart",
                "--log",
                "info",
            ],
            LIMIT,
        );
        // Three boots: the count in CMOS outlives each reset; the third powers off.
        assert_eq!(stdout(&out), "boot 1\nboot 2\nboot 3\n", "{}", stderr(&out));
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let err = stderr(&out);
        assert_eq!(err.matches("the guest rebooted").count(), 2, "{err}");
        assert!(err.contains("the guest powered off (ACPI S5)"), "{err}");
    }
    // By default a reboot ends the VMM, as it always did.
    let out = run_vmm(&["--kernel", k.to_str().unwrap(), "--memory", "64M"], LIMIT);
    assert_eq!(stdout(&out), "boot 1\n");
    assert_eq!(out.status.code(), Some(0));
}
