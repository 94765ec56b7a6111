//! tessera-vmm's seccomp filters: every thread of a running VMM holds one (and none with
//! --no-seccomp), and each kind's real filter, applied in a child process (this test binary
//! started again), lets that kind's work through and ends the process with SIGSYS, naming
//! the call, at a call outside it.

mod common;

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use tessera_vmm::sandbox::{Sandbox, ThreadKind};

const CHILD_ENV: &str = "TESSERA_TEST_SECCOMP";
/// The child's scratch directory, made and removed by the parent (removing is no work of
/// any kind's).
const DIR_ENV: &str = "TESSERA_TEST_SECCOMP_DIR";

fn kind_named(name: &str) -> ThreadKind {
    *ThreadKind::ALL
        .iter()
        .find(|k| format!("{k:?}") == name)
        .unwrap_or_else(|| panic!("no thread kind {name}"))
}

/// Work a thread of `kind` does, which its filter must let through.
fn allowed_work(kind: ThreadKind, dir: &std::path::Path) {
    use std::os::unix::fs::FileExt;
    // Every kind: memory, time, logging, locks.
    let v = vec![7u8; 16 << 20];
    assert_eq!(v[999], 7);
    std::thread::sleep(Duration::from_millis(1));
    eprintln!("logging works");
    let m = std::sync::Mutex::new(1);
    *m.lock().unwrap() += 1;
    match kind {
        ThreadKind::Vcpu => {
            // The console file rotated: a new one opened to append.
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("console.log"))
                .unwrap();
            f.write_all(b"console\n").unwrap();
            std::fs::rename(dir.join("console.log"), dir.join("console.log.1")).unwrap();
            vmm_sys_util::eventfd::EventFd::new(libc::EFD_NONBLOCK).unwrap();
        }
        ThreadKind::BlockQueue | ThreadKind::Main => {
            // The image was opened before; requests are reads, writes and flushes.
            let f = IMAGE.with(|f| f.borrow_mut().take()).unwrap();
            f.write_all_at(b"sector", 512).unwrap();
            let mut back = [0u8; 6];
            f.read_exact_at(&mut back, 512).unwrap();
            assert_eq!(&back, b"sector");
            f.sync_data().unwrap();
        }
        ThreadKind::Api => {
            // The runtime's blocking threads start from this one.
            std::thread::spawn(|| 1).join().unwrap();
        }
        ThreadKind::Display => {
            // It starts display processes.
            let status = Command::new("/bin/true").status().unwrap();
            assert!(status.success());
        }
        ThreadKind::Tpm => {
            // swtpm's sockets and process were made before; commands go back and forth,
            // then it is waited for and killed.
            use std::io::Read;
            let (mut ours, mut theirs, mut child) = SWTPM.with(|s| s.borrow_mut().take()).unwrap();
            ours.write_all(b"command").unwrap();
            let mut got = [0u8; 7];
            theirs.read_exact(&mut got).unwrap();
            assert!(child.try_wait().unwrap().is_none());
            child.kill().unwrap();
            child.wait().unwrap();
        }
        ThreadKind::NetQueue => {
            // Frames cross a descriptor made before (a tap queue; here a datagram socket).
            let (guest, host) = NET.with(|n| n.borrow_mut().take()).unwrap();
            let tap = tessera_vmm::devices::virtio::net::tap::TapQueue::from_fd(guest, "t0");
            assert_eq!(tap.write_frame(b"frame").unwrap(), 5);
            let mut got = [0u8; 8];
            assert_eq!(rustix::io::read(&host, &mut got).unwrap(), 5);
            rustix::io::write(&host, b"reply").unwrap();
            assert_eq!(tap.read_frame(&mut got).unwrap(), 5);
        }
        ThreadKind::Tablet | ThreadKind::ConsoleIn => {}
    }
}

type SwtpmParts = (
    std::os::unix::net::UnixStream,
    std::os::unix::net::UnixStream,
    std::process::Child,
);

thread_local! {
    static IMAGE: std::cell::RefCell<Option<std::fs::File>> = const { std::cell::RefCell::new(None) };
    static SWTPM: std::cell::RefCell<Option<SwtpmParts>> = const { std::cell::RefCell::new(None) };
    static NET: std::cell::RefCell<Option<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)>> = const { std::cell::RefCell::new(None) };
}

/// Not a test of its own: the filtered child. TESSERA_TEST_SECCOMP is KIND:CALL; it enters
/// KIND's filter, does KIND's work, then makes CALL.
#[test]
#[ignore = "a helper process, started by the tests below"]
fn filtered_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (kind, call) = spec.split_once(':').unwrap();
    let kind = kind_named(kind);
    let dir = std::path::PathBuf::from(std::env::var(DIR_ENV).unwrap());
    let image = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.join("disk.raw"))
        .unwrap();
    IMAGE.with(|f| *f.borrow_mut() = Some(image));
    if kind == ThreadKind::Tpm {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let child = Command::new("sleep").arg("60").spawn().unwrap();
        SWTPM.with(|s| *s.borrow_mut() = Some((a, b, child)));
    }
    if kind == ThreadKind::NetQueue {
        let pair = tessera_vmm::devices::virtio::net::tap::socket_pair().unwrap();
        NET.with(|n| *n.borrow_mut() = Some(pair));
    }
    let sandbox = Sandbox::on(&[kind]);
    sandbox.enter(kind).unwrap();
    allowed_work(kind, &dir);
    println!("worked");
    match call {
        "none" => {}
        "socket" => {
            let _ = std::net::TcpListener::bind("127.0.0.1:0");
        }
        "open" => {
            let _ = std::fs::File::open("/etc/hostname");
        }
        "exec" => {
            // execve itself (the standard library's exec makes other calls first).
            let path = c"/bin/true";
            let argv = [path.as_ptr(), std::ptr::null()];
            let envp = [std::ptr::null()];
            // SAFETY: NUL-terminated strings in NULL-terminated arrays, alive for the call;
            // the filter is expected to stop it.
            unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
        }
        "thread" => {
            let _ = std::thread::spawn(|| ()).join();
        }
        "map-code" => {
            // SAFETY: an anonymous mapping nobody uses; the filter is expected to stop it.
            unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ | libc::PROT_EXEC,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
        }
        "signal-parent" => {
            // SAFETY: a plain signal system call; the filter is expected to stop it.
            unsafe { libc::kill(libc::getppid(), libc::SIGCONT) };
        }
        "ptrace" => {
            // SAFETY: asks to be traced; the filter is expected to stop it.
            unsafe { libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) };
        }
        other => panic!("unknown call {other}"),
    }
    println!("survived");
}

/// Runs the child for `kind` and `call`: its signal, stdout and stderr.
fn child(kind: ThreadKind, call: &str) -> (Option<i32>, String, String) {
    let dir = Scratch::new(&format!("seccomp-{kind:?}-{call}"));
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["filtered_child", "--exact", "--ignored", "--nocapture"])
        .env(CHILD_ENV, format!("{kind:?}:{call}"))
        .env(DIR_ENV, &dir.0)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        stdout.contains("worked"),
        "{kind:?}: the filtered child could not do its work: {stdout}{stderr}"
    );
    (out.status.signal(), stdout, stderr)
}

#[test]
fn every_kind_does_its_work_under_its_filter() {
    for kind in ThreadKind::ALL {
        let (signal, out, err) = child(kind, "none");
        assert_eq!(signal, None, "{kind:?}: {out}{err}");
        assert!(out.contains("survived"), "{kind:?}: {out}{err}");
    }
}

#[test]
fn a_call_outside_a_kinds_filter_ends_the_process_and_is_named() {
    use ThreadKind::*;
    for (kind, call, nr) in [
        (Vcpu, "socket", libc::SYS_socket),
        (Vcpu, "open", libc::SYS_openat),
        (Vcpu, "thread", libc::SYS_clone3),
        (Vcpu, "map-code", libc::SYS_mmap),
        (Api, "exec", libc::SYS_execve),
        (Api, "open", libc::SYS_openat),
        (BlockQueue, "socket", libc::SYS_socket),
        (BlockQueue, "exec", libc::SYS_execve),
        (Tablet, "open", libc::SYS_openat),
        (ConsoleIn, "socket", libc::SYS_socket),
        (Display, "ptrace", libc::SYS_ptrace),
        (Display, "signal-parent", libc::SYS_kill),
        (Main, "socket", libc::SYS_socket),
        (Main, "exec", libc::SYS_execve),
    ] {
        let (signal, out, err) = child(kind, call);
        assert_eq!(signal, Some(libc::SIGSYS), "{kind:?} {call}: {out}{err}");
        assert!(!out.contains("survived"), "{kind:?} {call}: {out}");
        if call == "thread" {
            // glibc blocks every signal around clone3, and the kernel delivers a blocked
            // seccomp SIGSYS with its default action: the process ends unannounced.
            continue;
        }
        let named = format!(
            "tessera-vmm: system call {nr} (thread kind: {}) is outside the thread's seccomp filter",
            kind.label()
        );
        assert!(err.contains(&named), "{kind:?} {call}: {err}");
    }
}

/// Each thread's name and seccomp mode (2: filtered) from /proc.
fn thread_modes(pid: u32) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let status = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
                .unwrap_or_default()
        };
        out.push((field("Name:"), field("Seccomp:")));
    }
    out.sort();
    out
}

/// Starts a VMM with a disk, a display, the API and console input, lets the API start a
/// blocking thread, and returns its threads' modes.
fn running_vmm_threads(extra: &[&str]) -> Vec<(String, String)> {
    let dir = Scratch::new(&format!("seccomp-threads{}", extra.len()));
    let kernel = dir.file("demo.elf", tessera_demo_guest::ELF);
    let disk = dir.file("disk.raw", &vec![0u8; 1 << 20]);
    let socket = dir.0.join("api.sock");
    build_display_program();
    let port = tessera_e2e::x11::free_port();
    let mut cmd = Command::new(VMM);
    cmd.args(["--kernel", kernel.to_str().unwrap(), "--memory", "64M"])
        .args(["--api-socket", socket.to_str().unwrap()])
        .arg("--disk")
        .arg(format!("path={},format=raw", disk.display()))
        .arg("--display")
        .arg(format!("spice-port={port}"))
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::null());
    let mut vmm = tessera_e2e::x11::Proc(cmd.spawn().unwrap());
    wait_for_socket(&socket, Duration::from_secs(10));
    let (status, info) = http(&socket, "GET", "/vm");
    assert_eq!(status, 200, "{info}");
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["seccomp"], extra.is_empty(), "{info}");
    let modes = thread_modes(vmm.0.id());
    let _ = vmm.0.stdin.take();
    modes
}

#[test]
fn every_thread_of_a_running_vmm_holds_a_filter() {
    if !kvm_or_skip("seccomp: a running VMM's threads") {
        return;
    }
    let modes = running_vmm_threads(&[]);
    for name in [
        "tessera-vmm",
        "vcpu0",
        "api",
        "display",
        "console-in",
        "virtio-tablet",
        "blk-q0",
        // The API's blocking thread, which GET /vm started (kept alive for 10 s).
        "tokio-rt-worker",
    ] {
        assert!(
            modes.iter().any(|(n, _)| n == name),
            "no {name} thread: {modes:?}"
        );
    }
    assert!(
        modes.iter().all(|(_, mode)| mode == "2"),
        "a thread without a filter: {modes:?}"
    );
    // And the check can fail: without filters, none holds one.
    let off = running_vmm_threads(&["--no-seccomp"]);
    assert!(off.iter().all(|(_, mode)| mode == "0"), "{off:?}");
}
