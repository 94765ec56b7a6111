//! The TPM 2.0: tessera-vmm's swtpm client against the real swtpm (Debian's), and a tiny
//! guest driving the CRB device on this machine's /dev/kvm with swtpm behind it.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use tessera_vmm::devices::tpm::{Swtpm, SwtpmError, BUFFER_SIZE};
use tessera_vmm::tiny_guest as tg;

const LIMIT: Duration = Duration::from_secs(60);

/// Whether swtpm is installed. A loud SKIP when not, unless TESSERA_REQUIRE_SWTPM=1 (set by
/// the project's test command), which fails the test instead.
fn swtpm_or_skip(test: &str) -> bool {
    if Command::new("swtpm").arg("--version").output().is_ok() {
        return true;
    }
    assert!(
        !required("TESSERA_REQUIRE_SWTPM"),
        "{test}: swtpm (Debian package swtpm) is required (TESSERA_REQUIRE_SWTPM=1) but missing"
    );
    eprintln!("\n*** SKIP {test}: swtpm is not installed; this test did NOT run ***\n");
    false
}

const STARTUP_CLEAR: [u8; 12] = [0x80, 1, 0, 0, 0, 12, 0, 0, 1, 0x44, 0, 0];
const GET_RANDOM_16: [u8; 12] = [0x80, 1, 0, 0, 0, 12, 0, 0, 1, 0x7b, 0, 16];
const READ_CLOCK: [u8; 10] = [0x80, 1, 0, 0, 0, 10, 0, 0, 1, 0x81];
/// TPM_RC_INITIALIZE: a TPM not yet started (or started twice).
const RC_INITIALIZE: u32 = 0x100;

fn rc(response: &[u8]) -> u32 {
    u32::from_be_bytes(response[6..10].try_into().unwrap())
}

/// ReadClock's resetCount: how many times the TPM was reset since it was made (kept in its
/// permanent state).
fn reset_count(response: &[u8]) -> u32 {
    assert_eq!(rc(response), 0, "ReadClock: {response:02x?}");
    u32::from_be_bytes(response[26..30].try_into().unwrap())
}

fn run(tpm: &mut Swtpm, cmd: &[u8]) -> Vec<u8> {
    tpm.execute(cmd, BUFFER_SIZE).unwrap()
}

#[test]
fn swtpm_serves_commands_resets_and_keeps_its_state_across_starts() {
    if !swtpm_or_skip("swtpm_serves_commands") {
        return;
    }
    let dir = Scratch::new("tpm-state");
    let state = dir.0.join("desk-01/tpm");
    let mut tpm = Swtpm::spawn(Path::new("swtpm"), &state, BUFFER_SIZE as u32).unwrap();
    assert_eq!(rc(&run(&mut tpm, &STARTUP_CLEAR)), 0);
    let random = run(&mut tpm, &GET_RANDOM_16);
    assert_eq!(rc(&random), 0);
    assert_eq!(random.len(), 10 + 2 + 16, "{random:02x?}");
    assert_eq!(&random[10..12], &[0, 16]);
    let first = reset_count(&run(&mut tpm, &READ_CLOCK));
    // Started twice: refused, as a real TPM does.
    assert_eq!(rc(&run(&mut tpm, &STARTUP_CLEAR)), RC_INITIALIZE);
    // A machine reset resets the TPM: it must be started again, and counts the reset.
    tpm.init().unwrap();
    assert_eq!(rc(&run(&mut tpm, &READ_CLOCK)), RC_INITIALIZE);
    assert_eq!(rc(&run(&mut tpm, &STARTUP_CLEAR)), 0);
    assert_eq!(reset_count(&run(&mut tpm, &READ_CLOCK)), first + 1);
    tpm.close();
    // The state directory is the VM's own: 0700, its files 0600.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&state), 0o700);
    let files: Vec<_> = std::fs::read_dir(&state).unwrap().flatten().collect();
    assert!(!files.is_empty());
    for f in &files {
        // The lock file holds nothing.
        if f.file_type().unwrap().is_file() && f.file_name() != ".lock" {
            assert_eq!(mode(&f.path()), 0o600, "{}", f.path().display());
        }
    }
    // A new swtpm on the same state: the same TPM, reset once more.
    let mut tpm = Swtpm::spawn(Path::new("swtpm"), &state, BUFFER_SIZE as u32).unwrap();
    assert_eq!(rc(&run(&mut tpm, &STARTUP_CLEAR)), 0);
    assert_eq!(reset_count(&run(&mut tpm, &READ_CLOCK)), first + 2);
    tpm.close();
    // A new state directory is a new TPM.
    let mut other = Swtpm::spawn(Path::new("swtpm"), &dir.0.join("other"), 4096).unwrap();
    assert_eq!(rc(&run(&mut other, &STARTUP_CLEAR)), 0);
    assert_eq!(reset_count(&run(&mut other, &READ_CLOCK)), first);
    other.close();
    let _ = std::fs::remove_dir_all(&dir.0);
}

#[test]
fn hostile_commands_get_tpm_errors_and_the_tpm_keeps_working() {
    if !swtpm_or_skip("hostile_commands") {
        return;
    }
    let dir = Scratch::new("tpm-hostile");
    let mut tpm = Swtpm::spawn(Path::new("swtpm"), &dir.0, BUFFER_SIZE as u32).unwrap();
    assert_eq!(rc(&run(&mut tpm, &STARTUP_CLEAR)), 0);
    // A command code that does not exist, a bad tag, a body shorter than its parameters,
    // and a whole buffer of garbage whose header says so.
    let mut garbage = vec![0x5a; BUFFER_SIZE];
    garbage[..6].copy_from_slice(&[0x80, 1, 0, 0, 0x0f, 0x80]);
    for cmd in [
        vec![0x80, 1, 0, 0, 0, 10, 0xde, 0xad, 0xbe, 0xef],
        vec![0x12, 0x34, 0, 0, 0, 10, 0, 0, 1, 0x81],
        vec![0x80, 1, 0, 0, 0, 11, 0, 0, 1, 0x7b, 0],
        garbage,
    ] {
        let r = run(&mut tpm, &cmd);
        assert_ne!(rc(&r), 0, "{cmd:02x?} -> {r:02x?}");
    }
    assert_eq!(rc(&run(&mut tpm, &GET_RANDOM_16)), 0, "still serving");
    tpm.close();
    let _ = std::fs::remove_dir_all(&dir.0);
}

#[test]
fn swtpm_failures_are_named() {
    if !swtpm_or_skip("swtpm_failures_are_named") {
        return;
    }
    let dir = Scratch::new("tpm-failures");
    let e = Swtpm::spawn(Path::new("/nonexistent/swtpm"), &dir.0.join("s"), 4096).unwrap_err();
    assert!(matches!(e, SwtpmError::Spawn(..)), "{e}");
    assert!(e.to_string().contains("/nonexistent/swtpm"), "{e}");
    let file = dir.file("not-a-dir", b"x");
    let e = Swtpm::spawn(Path::new("swtpm"), &file, 4096).unwrap_err();
    assert!(matches!(e, SwtpmError::StateDir(..)), "{e}");
    let e = Swtpm::connect(&dir.0.join("no.sock"), 4096).unwrap_err();
    assert!(e.to_string().contains("no.sock"), "{e}");
    // Two VMs on one TPM state: the second is refused, the first keeps its TPM.
    let state = dir.0.join("shared");
    let mut first = Swtpm::spawn(Path::new("swtpm"), &state, 4096).unwrap();
    let e = Swtpm::spawn(Path::new("swtpm"), &state, 4096).unwrap_err();
    assert!(e.to_string().contains("in use by another swtpm"), "{e}");
    assert_eq!(rc(&run(&mut first, &STARTUP_CLEAR)), 0);
    first.close();
    let _ = std::fs::remove_dir_all(&dir.0);
}

/// The guest's output: `tpm\n` and the three responses, per boot.
fn responses(out: &[u8], boots: usize) -> Vec<Vec<Vec<u8>>> {
    let mut rest = out;
    let mut all = Vec::new();
    for _ in 0..boots {
        assert!(rest.starts_with(b"tpm\n"), "{rest:02x?}");
        rest = &rest[4..];
        let mut boot = Vec::new();
        for len in tg::TPM_RESPONSE_LENS {
            boot.push(rest[..len].to_vec());
            rest = &rest[len..];
        }
        all.push(boot);
    }
    assert!(rest.is_empty(), "left over: {rest:02x?}");
    all
}

#[test]
fn a_guest_drives_the_crb_with_swtpm_behind_it_across_resets_and_runs() {
    if !kvm_or_skip("tpm guest") || !swtpm_or_skip("tpm guest") {
        return;
    }
    let dir = Scratch::new("tpm-guest");
    let kernel = dir.file("tpm.elf", &tg::tpm_exercise(2));
    let state = dir.0.join("tpm");
    let spec = format!("state={}", state.display());
    let args = [
        "--kernel",
        kernel.to_str().unwrap(),
        "--memory",
        "64M",
        "--on-reboot",
        "restart",
        "--tpm",
        &spec,
        "--log",
        "info",
    ];
    let mut counts = Vec::new();
    for run in 0..2 {
        let out = run_vmm(&args, LIMIT);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{err}");
        assert!(err.contains("TPM 2.0 (CRB) attached"), "{err}");
        // Two boots per run; the VMM started the TPM before each, as firmware does, so the
        // guest's own Startup is refused as a second one; the reset between them reset the
        // TPM, and counts.
        for (boot, r) in responses(&out.stdout, 2).iter().enumerate() {
            assert_eq!(
                rc(&r[0]),
                RC_INITIALIZE,
                "run {run} boot {boot}: Startup {:02x?}",
                r[0]
            );
            assert_eq!(
                rc(&r[1]),
                0,
                "run {run} boot {boot}: GetRandom {:02x?}",
                r[1]
            );
            assert_eq!(&r[1][10..12], &[0, 8]);
            counts.push(reset_count(&r[2]));
        }
    }
    // The state outlived the VMM: each boot of each run counted one more reset.
    assert_eq!(
        counts.windows(2).map(|w| w[1] - w[0]).collect::<Vec<_>>(),
        [1, 1, 1],
        "{counts:?}"
    );
    // Without swtpm, the VM does not start, and says why.
    let bad = format!("state={},swtpm=/nonexistent/swtpm", state.display());
    let out = run_vmm(
        &["--kernel", kernel.to_str().unwrap(), "--tpm", &bad],
        LIMIT,
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/swtpm"), "{err}");
    let _ = std::fs::remove_dir_all(&dir.0);
}

/// Drives `crb` as a driver does: locality, ready, the command, START, then polls START
/// (10 s at most) and returns the response's header.
fn crb_command(crb: &std::sync::Mutex<tessera_vmm::devices::tpm::Crb>, cmd: &[u8]) -> [u8; 10] {
    use tessera_vmm::devices::bus::BusDevice;
    let w = |off: u64, v: u32| crb.lock().unwrap().write(off, &v.to_le_bytes());
    w(0x08, 1);
    w(0x40, 1);
    crb.lock().unwrap().write(0x80, cmd);
    w(0x4c, 1);
    let t0 = std::time::Instant::now();
    loop {
        let mut start = [0u8; 4];
        crb.lock().unwrap().read(0x4c, &mut start);
        if start == [0; 4] {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "START never cleared"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut header = [0u8; 10];
    crb.lock().unwrap().read(0x80, &mut header);
    header
}

#[test]
fn a_swtpm_reached_by_socket_serves_the_device_and_its_death_fails_commands_not_the_vmm() {
    if !swtpm_or_skip("swtpm by socket") {
        return;
    }
    use tessera_vmm::config::TpmBackend;
    use tessera_vmm::devices::tpm::TpmStartup;
    use tessera_vmm::sandbox::Sandbox;
    let dir = Scratch::new("tpm-socket");
    let sock = dir.0.join("ctrl.sock");
    let mut swtpm = Command::new("swtpm")
        .args(["socket", "--tpm2", "--tpmstate"])
        .arg(format!("dir={}", dir.0.display()))
        .arg("--ctrl")
        .arg(format!("type=unixio,path={}", sock.display()))
        .spawn()
        .unwrap();
    wait_for("swtpm's socket", Duration::from_secs(10), || sock.exists());
    let (crb, mut thread) = tessera_vmm::devices::tpm::start(
        &TpmBackend::Socket(sock.clone()),
        TpmStartup::Firmware,
        &Sandbox::off(),
    )
    .unwrap();
    assert_eq!(rc(&crb_command(&crb, &STARTUP_CLEAR)), 0);
    assert_eq!(rc(&crb_command(&crb, &GET_RANDOM_16)), 0);
    // swtpm dies: the next command fails (TPM_RC_FAILURE) and the CRB reports a fatal
    // error; the device keeps answering.
    swtpm.kill().unwrap();
    swtpm.wait().unwrap();
    assert_eq!(rc(&crb_command(&crb, &GET_RANDOM_16)), 0x101);
    let mut sts = [0u8; 4];
    {
        use tessera_vmm::devices::bus::BusDevice;
        crb.lock().unwrap().read(0x44, &mut sts);
    }
    assert_eq!(sts[0] & 1, 1, "the CRB's fatal error bit");
    assert_eq!(rc(&crb_command(&crb, &READ_CLOCK)), 0x101);
    let t0 = std::time::Instant::now();
    thread.stop();
    assert!(t0.elapsed() < Duration::from_secs(5));
    let _ = std::fs::remove_dir_all(&dir.0);
}
