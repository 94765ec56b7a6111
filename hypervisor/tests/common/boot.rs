//! What a full boot of the Debian test guest must show, in the nested harness or directly.

use std::process::Command;

/// What every full boot must show on the console.
pub fn assert_guest_output(log: &str) {
    assert!(
        log.contains("TESSERA-GUEST-READY"),
        "no userspace marker:\n{log}"
    );
    assert!(
        log.contains("tg: cpus=2 online=0-1"),
        "2 vCPUs not online:\n{log}"
    );
    // The q35 chipset: Intel's Q35 host bridge and the ICH9 LPC (ISA) bridge.
    assert!(
        log.contains("tg: pci 0000:00:00.0 0x8086:0x29c0 class=0x060000"),
        "host bridge not enumerated:\n{log}"
    );
    assert!(
        log.contains("tg: pci 0000:00:1f.0 0x8086:0x2918 class=0x060100"),
        "LPC bridge not enumerated:\n{log}"
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
