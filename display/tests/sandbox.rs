//! The display process's seccomp filter, applied for real in a child process (this test
//! binary started again): serving works under it, opening files is refused with EACCES, and
//! a forbidden call (a new socket, a program, a signal to another process) kills the process
//! with SIGSYS.

use std::os::unix::process::ExitStatusExt;
use std::process::Command;

const CHILD_ENV: &str = "TESSERA_TEST_SANDBOX";

/// Not a test of its own: the sandboxed child. It applies the filter, checks what serving
/// needs still works, then makes the call in TESSERA_TEST_SANDBOX.
#[test]
#[ignore = "a helper process, started by the tests below"]
fn sandboxed_child() {
    let Ok(call) = std::env::var(CHILD_ENV) else {
        return;
    };
    // Sockets are made before the filter, as the display process makes its own.
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    tessera_display::sandbox::apply().unwrap();
    // What serving needs: threads, socket I/O, memory, time.
    let t = std::thread::spawn(move || {
        use std::io::Write;
        (&a).write_all(b"ping").unwrap();
    });
    let mut got = [0u8; 4];
    use std::io::Read;
    (&b).read_exact(&mut got).unwrap();
    t.join().unwrap();
    assert_eq!(&got, b"ping");
    let v = vec![1u8; 64 << 20];
    assert_eq!(v[12345], 1);
    std::thread::sleep(std::time::Duration::from_millis(1));
    // Files: refused, not fatal.
    let e = std::fs::File::open("/etc/hostname").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EACCES));
    println!("served");
    match call.as_str() {
        "none" => {}
        "socket" => {
            let _ = std::net::TcpStream::connect("127.0.0.1:9");
        }
        "exec" => {
            use std::os::unix::process::CommandExt;
            let _ = Command::new("/bin/true").exec();
        }
        "kill-parent" => {
            // SAFETY: a plain signal syscall; the filter is expected to stop it.
            unsafe { libc::kill(libc::getppid(), libc::SIGCONT) };
        }
        other => panic!("unknown call {other}"),
    }
    println!("survived");
}

fn child(call: &str) -> (Option<i32>, String, String) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["sandboxed_child", "--exact", "--ignored", "--nocapture"])
        .env(CHILD_ENV, call)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        stdout.contains("served"),
        "the sandboxed child could not serve: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.signal(), stdout, stderr)
}

#[test]
fn serving_works_and_files_are_refused_under_the_filter() {
    let (signal, out, _) = child("none");
    assert_eq!(signal, None);
    assert!(out.contains("survived"), "{out}");
}

#[test]
fn new_sockets_programs_and_signals_to_others_kill_the_process() {
    for (call, nr) in [
        ("socket", libc::SYS_socket),
        ("exec", libc::SYS_execve),
        ("kill-parent", libc::SYS_kill),
    ] {
        let (signal, out, err) = child(call);
        assert_eq!(signal, Some(libc::SIGSYS), "{call}: {out}");
        assert!(!out.contains("survived"), "{call}: {out}");
        // The process names the call it was stopped at.
        assert!(
            err.contains(&format!(
                "system call {nr} (thread kind: display process) is outside"
            )),
            "{call}: {err}"
        );
    }
}
