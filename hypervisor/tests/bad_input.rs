//! Bad input to the tessera-vmm binary: every case gets a one-line error that names the
//! problem, a non-zero status, and no panic.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

const LIMIT: Duration = Duration::from_secs(30);

/// Asserts a clean failure: status `code`, one error line naming `needle`, no panic.
fn assert_clean_failure(out: &std::process::Output, code: i32, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {err}");
    assert!(!err.contains("panicked"), "panic: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {err}");
    assert!(
        lines[0].contains(needle),
        "{needle:?} not in {:?}",
        lines[0]
    );
}

#[test]
fn missing_kernel_file() {
    let out = run_vmm(&["--kernel", "/nonexistent/bzImage"], LIMIT);
    assert_clean_failure(&out, 1, "/nonexistent/bzImage");
}

#[test]
fn no_kernel_at_all() {
    let out = run_vmm(&["--memory", "64M"], LIMIT);
    assert_clean_failure(&out, 1, "nothing to boot");
}

/// Firmware that cannot be UEFI firmware, and variable stores that do not fit it or are
/// damaged, are refused before the guest runs, each with its reason; the store is left as it
/// was.
#[test]
fn bad_firmware_and_variable_stores() {
    if !kvm_or_skip("bad_firmware") {
        return;
    }
    let dir = Scratch::new("firmware");
    let odd = dir.file("odd.fd", &[0; 5000]);
    let out = run_vmm(&["--firmware", odd.to_str().unwrap()], LIMIT);
    assert_clean_failure(&out, 1, "is 5000 bytes");
    // A 4 MiB build's code size: its store must be 0x84000 bytes.
    let code = dir.file("OVMF_CODE_4M.fd", &vec![0; 0x37_c000]);
    let code = code.to_str().unwrap();
    let small = dir.file("small.vars", &[0; 4096]);
    let out = run_vmm(
        &[
            "--firmware",
            code,
            "--firmware-vars",
            small.to_str().unwrap(),
        ],
        LIMIT,
    );
    assert_clean_failure(&out, 1, "needs a 540672-byte store");
    let garbage = vec![0x42; 0x8_4000];
    let corrupt = dir.file("corrupt.vars", &garbage);
    let out = run_vmm(
        &[
            "--firmware",
            code,
            "--firmware-vars",
            corrupt.to_str().unwrap(),
        ],
        LIMIT,
    );
    assert_clean_failure(&out, 1, "is corrupt (no firmware volume header)");
    assert_eq!(std::fs::read(&corrupt).unwrap(), garbage);
    // No store, and no template beside the firmware.
    let out = run_vmm(&["--firmware", code], LIMIT);
    assert_clean_failure(&out, 1, "OVMF_VARS_4M.fd");
}

#[test]
fn kernel_and_firmware_together() {
    let out = run_vmm(&["--kernel", VMM, "--firmware", VMM], LIMIT);
    assert_eq!(out.status.code(), Some(2));
    let out = run_vmm(&["--firmware-vars", VMM, "--kernel", VMM], LIMIT);
    assert_clean_failure(&out, 1, "`firmware_vars` needs `firmware`");
}

#[test]
fn unreadable_initrd() {
    let out = run_vmm(&["--kernel", VMM, "--initrd", "/nonexistent/initrd"], LIMIT);
    assert_clean_failure(&out, 1, "initrd /nonexistent/initrd");
}

#[test]
fn kernel_that_is_not_a_bzimage_or_elf() {
    if !kvm_or_skip("not_a_kernel") {
        return;
    }
    let dir = Scratch::new("notkernel");
    let k = dir.file("garbage", &[0x42; 65536]);
    let out = run_vmm(&["--kernel", k.to_str().unwrap(), "--memory", "64M"], LIMIT);
    assert_clean_failure(&out, 1, "neither a Linux bzImage nor an ELF");
}

#[test]
fn truncated_bzimage() {
    if !kvm_or_skip("truncated_bzimage") {
        return;
    }
    let dir = Scratch::new("truncbz");
    let mut img = vec![0u8; 0x1000];
    img[0x202..0x206].copy_from_slice(b"HdrS");
    img[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes()); // protocol 2.15
    img[0x211] = 0x01; // loadflags: LOADED_HIGH
    img[0x1f1] = 200; // setup_sects far beyond the file
    let k = dir.file("bz", &img);
    let out = run_vmm(&["--kernel", k.to_str().unwrap(), "--memory", "64M"], LIMIT);
    assert_clean_failure(&out, 1, "cannot load the BzImage kernel");
}

#[test]
fn memory_larger_than_the_host() {
    let out = run_vmm(&["--kernel", VMM, "--memory", "64T"], LIMIT);
    // 64T does not parse as a size at all (K/M/G only); 60000G does.
    assert_eq!(out.status.code(), Some(2));
    let out = run_vmm(&["--kernel", VMM, "--memory", "60000G"], LIMIT);
    assert_clean_failure(&out, 1, "more than this host has");
}

#[test]
fn vcpu_count_out_of_range() {
    let out = run_vmm(&["--kernel", VMM, "--vcpus", "0"], LIMIT);
    assert_clean_failure(&out, 1, "invalid vCPU count 0");
    let out = run_vmm(&["--kernel", VMM, "--vcpus", "4000"], LIMIT);
    assert_clean_failure(&out, 1, "invalid vCPU count 4000");
}

#[test]
fn bad_config_file() {
    let dir = Scratch::new("badcfg");
    let cfg = dir.file("vm.toml", b"kernel = 42\nmemroy = \"1G\"\n");
    let out = run_vmm(&["--config", cfg.to_str().unwrap()], LIMIT);
    assert_clean_failure(&out, 1, "invalid config file");
}

#[test]
fn unknown_flag_is_a_usage_error() {
    let out = run_vmm(&["--kernal", "x"], LIMIT);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn api_socket_path_that_is_a_regular_file_is_not_removed() {
    if !kvm_or_skip("api_socket_file") {
        return;
    }
    let dir = Scratch::new("sockfile");
    let k = dir.file(
        "hello.elf",
        &tessera_vmm::tiny_guest::milestones_then_idle(&[]),
    );
    let precious = dir.file("precious", b"data");
    let out = run_vmm(
        &[
            "--kernel",
            k.to_str().unwrap(),
            "--memory",
            "64M",
            "--api-socket",
            precious.to_str().unwrap(),
        ],
        LIMIT,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("is not a socket"), "{err}");
    assert_eq!(std::fs::read(&precious).unwrap(), b"data");
}

/// Whether this process may make mount namespaces (root, with unshare and setpriv): a loud
/// SKIP when not, a failure when TESSERA_REQUIRE_ROOT=1 (set by the test command as root).
fn mount_namespaces_or_skip(test: &str) -> bool {
    let unshare = Command::new("unshare").args(["-m", "true"]).status();
    let setpriv = Command::new("setpriv").arg("--version").output();
    let why = match (unshare, setpriv) {
        (Ok(s), Ok(p)) if s.success() && p.status.success() => return true,
        (u, p) => format!("unshare -m: {u:?}, setpriv: {:?}", p.map(|p| p.status)),
    };
    assert!(
        !required("TESSERA_REQUIRE_ROOT"),
        "{test}: mount namespaces are required (TESSERA_REQUIRE_ROOT=1) but unavailable: {why}"
    );
    eprintln!("\n*** SKIP {test}: cannot make a mount namespace here ({why}); this test did NOT run ***\n");
    false
}

/// Runs the VMM in a mount namespace whose /dev is an empty tmpfs: no /dev/kvm.
#[test]
fn no_dev_kvm() {
    if !mount_namespaces_or_skip("no_dev_kvm") {
        return;
    }
    let script = format!("mount -t tmpfs tmpfs /dev && exec {VMM} --kernel {VMM} --memory 64M");
    let out = Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .output()
        .unwrap();
    assert_clean_failure(&out, 1, "/dev/kvm does not exist");
}

/// Runs the VMM as an unprivileged user against a root-only /dev/kvm: a mount namespace
/// gives it a /dev of its own holding a 0600 /dev/kvm node, whatever the host's mode is, and
/// the binary is copied where that user may run it.
#[test]
fn no_permission_on_dev_kvm() {
    if !mount_namespaces_or_skip("no_permission_on_dev_kvm") {
        return;
    }
    let dir = Scratch::new("perm");
    let k = dir.file("k", &[0u8; 16]);
    let vmm = dir.0.join("tessera-vmm");
    std::fs::copy(VMM, &vmm).unwrap();
    let chmod = Command::new("chmod")
        .args(["-R", "a+rX", dir.0.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(chmod.success());
    let script = format!(
        "mount -t tmpfs tmpfs /dev && mknod -m 600 /dev/kvm c 10 232 && \
         exec setpriv --reuid=65534 --regid=65534 --clear-groups {} --kernel {} --memory 64M",
        vmm.display(),
        k.display()
    );
    let out = Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .output()
        .unwrap();
    assert_clean_failure(&out, 1, "permission denied opening /dev/kvm");
}
