//! The Debian test guest (Debian's own kernel, busybox initramfs) booted by tessera-vmm to its
//! userspace marker with 2 vCPUs and the PCI host bridge enumerated: inside the nested TCG+SVM
//! harness always, and directly where the host has hardware virtualisation.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

/// What every full boot must show on the console.
fn assert_guest_output(log: &str) {
    assert!(
        log.contains("TESSERA-GUEST-READY"),
        "no userspace marker:\n{log}"
    );
    assert!(
        log.contains("tg: cpus=2 online=0-1"),
        "2 vCPUs not online:\n{log}"
    );
    assert!(
        log.contains("tg: pci 0000:00:00.0 0x1b36:0x0008 class=0x060000"),
        "host bridge not enumerated:\n{log}"
    );
    assert!(
        log.contains("guest boot milestone code=0x60"),
        "no debug-port milestone:\n{log}"
    );
    // The guest's clock comes from the CMOS RTC: the year must be the host's.
    let host_year = std::fs::read_to_string("/proc/driver/rtc")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("rtc_date"))
                .map(|l| l[11..].trim()[..4].to_string())
        });
    let guest_date = log
        .lines()
        .find_map(|l| l.strip_prefix("tg: date="))
        .unwrap_or_else(|| panic!("no guest date:\n{log}"));
    let now_year = chrono_free_year();
    assert!(
        guest_date.starts_with(&now_year) || host_year.is_some_and(|y| guest_date.starts_with(&y)),
        "guest date {guest_date} is not this year ({now_year})"
    );
}

/// The current UTC year from the system clock, without a date crate.
fn chrono_free_year() -> String {
    let out = Command::new("date").args(["-u", "+%Y"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn debian_guest_boots_in_the_nested_harness() {
    if !nested_or_skip("debian_guest_boots_in_the_nested_harness") {
        return;
    }
    let out = Command::new(repo().join("tests/nested/run.sh"))
        .arg("boot")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "nested boot failed:\n{log}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(log.contains("NEST: /dev/kvm ready"), "{log}");
    assert_guest_output(&log);
    let timer = log
        .lines()
        .find(|l| l.starts_with("BOOT-TIMER"))
        .unwrap_or_else(|| panic!("no BOOT-TIMER line:\n{log}"));
    assert!(
        timer.contains("status=0") && !timer.contains("marker_ms=none"),
        "{timer}"
    );
}

/// Hardware virtualisation: svm or vmx, and not the PVM backend.
fn hardware_kvm() -> Result<(), String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags = cpuinfo
        .lines()
        .find(|l| l.starts_with("flags"))
        .unwrap_or("");
    if !flags.split_whitespace().any(|f| f == "svm" || f == "vmx") {
        return Err("no svm/vmx flag in /proc/cpuinfo".into());
    }
    if Path::new("/sys/module/kvm_pvm").exists() {
        return Err("/dev/kvm is the PVM backend (kvm_pvm)".into());
    }
    if !Path::new("/dev/kvm").exists() {
        return Err("no /dev/kvm".into());
    }
    Ok(())
}

#[test]
fn debian_guest_boots_directly_on_hardware_kvm() {
    if let Err(why) = hardware_kvm() {
        eprintln!(
            "\n*** SKIP debian_guest_boots_directly_on_hardware_kvm: {why}; a stock kernel \
             cannot boot on this /dev/kvm, the nested-harness test covers it. This test did NOT run ***\n"
        );
        return;
    }
    let build = Command::new(repo().join("tests/guest/build-guest.sh"))
        .status()
        .unwrap();
    assert!(build.success());
    let cache = std::env::var("TESSERA_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join(".cache"));
    let guest = cache.join("guest");
    let out = run_vmm(
        &[
            "--kernel",
            guest.join("vmlinuz").to_str().unwrap(),
            "--initrd",
            guest.join("initramfs.cpio.gz").to_str().unwrap(),
            "--cmdline",
            "console=ttyS0 reboot=k panic=-1 io_delay=none quiet",
            "--memory",
            "512M",
            "--vcpus",
            "2",
            "--log",
            "info",
        ],
        Duration::from_secs(120),
    );
    let log =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{log}");
    assert_guest_output(&log);
}
