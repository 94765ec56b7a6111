//! The display process's seccomp filter (the seccompiler crate, as Firecracker uses it).
//!
//! Installed on every thread once SPICE is up: its ports are bound, its certificates read,
//! its threads started, OpenSSL initialised. What remains is serving: accepting clients on the
//! bound ports, reading and writing sockets, polling, sleeping, memory and threads. Anything
//! else (opening files, making sockets, connecting out, running programs, signalling other
//! processes) ends the process with SIGSYS, after naming the call on stderr, and the VMM
//! restarts it: a client that took over
//! libspice-server holds a process that can do nothing but what it already did.

use tessera_seccomp::{allow_any, allow_when, allowlist, equals, BpfProgram, Rules};

pub use tessera_seccomp::SeccompError as SandboxError;

/// System calls a serving display process makes, with any argument.
pub const ALLOWED: &[i64] = &[
    // Sockets it already has, and the VMM links.
    libc::SYS_accept,
    libc::SYS_accept4,
    libc::SYS_read,
    libc::SYS_readv,
    libc::SYS_recvfrom,
    libc::SYS_recvmsg,
    libc::SYS_write,
    libc::SYS_writev,
    libc::SYS_sendto,
    libc::SYS_sendmsg,
    libc::SYS_shutdown,
    libc::SYS_close,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
    libc::SYS_getsockopt,
    libc::SYS_setsockopt,
    libc::SYS_fcntl,
    libc::SYS_poll,
    libc::SYS_ppoll,
    // Memory (time: tessera_seccomp::TIME).
    libc::SYS_brk,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_mprotect,
    libc::SYS_madvise,
    // Threads and their start and end.
    libc::SYS_futex,
    libc::SYS_clone,
    libc::SYS_clone3,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_sigaltstack,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    // A crashing thread's handler restores the default action and re-raises, so the VMM
    // sees the real signal (SIGSEGV), not the filter's SIGSYS.
    libc::SYS_rt_sigaction,
    libc::SYS_sched_getaffinity,
    libc::SYS_sched_yield,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_restart_syscall,
    // Facts about itself, and randomness (SPICE's per-link RSA keys, TLS).
    libc::SYS_getpid,
    libc::SYS_getppid,
    libc::SYS_gettid,
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getegid,
    libc::SYS_getrandom,
    // glib's wake-ups.
    libc::SYS_eventfd2,
    // Refused with EACCES by the second filter ([`REFUSED`]), not killed.
    libc::SYS_open,
    libc::SYS_openat,
    libc::SYS_stat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
];

/// Calls answered with EACCES instead of killing the process: libraries look for files on
/// first use and cope without them (glib seeds its connection IDs from /dev/urandom, or from
/// the time when it cannot open it). Nothing is opened either way.
pub const REFUSED: &[i64] = &[
    libc::SYS_open,
    libc::SYS_openat,
    libc::SYS_stat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
];

/// The filter that answers [`REFUSED`] calls with EACCES and lets the rest through to
/// [`filter`] (the kernel applies both; the stricter answer wins).
pub fn refusals() -> Result<BpfProgram, SandboxError> {
    tessera_seccomp::refusals(REFUSED, libc::EACCES)
}

/// The compiled allowlist.
pub fn filter() -> Result<BpfProgram, SandboxError> {
    let mut rules = Rules::new();
    allow_any(&mut rules, ALLOWED);
    allow_any(&mut rules, tessera_seccomp::TIME);
    // Socket queue sizes and non-blocking mode only.
    allow_when(
        &mut rules,
        libc::SYS_ioctl,
        1,
        [libc::TIOCOUTQ, libc::FIONREAD, libc::FIONBIO],
    )?;
    // Naming its threads.
    rules.insert(libc::SYS_prctl, vec![equals(0, libc::PR_SET_NAME as u64)?]);
    // Signals to its own threads (abort on a crash), never to another process (the VMM).
    rules.insert(
        libc::SYS_tgkill,
        vec![equals(0, u64::from(std::process::id()))?],
    );
    // Trap, not kill: the handler names the call on stderr, then the process dies of SIGSYS.
    allowlist(rules)
}

/// Finishes the lazy start-up work of the libraries that would otherwise do it on the first
/// client, inside the sandbox: OpenSSL reads its configuration file on first use.
fn warm_up() {
    // OPENSSL_init_ssl with its defaults, which include loading the configuration.
    openssl_sys::init();
}

/// Installs the filter on every thread of this process.
pub fn apply() -> Result<(), SandboxError> {
    warm_up();
    tessera_seccomp::report_violations("tessera-display");
    tessera_seccomp::keep_malloc_off_files();
    let (allow, refuse) = (filter()?, refusals()?);
    // The allowlist last: once it is on, installing another filter is itself forbidden.
    tessera_seccomp::apply_to_all_threads("display process", &refuse)?;
    tessera_seccomp::apply_to_all_threads("display process", &allow)?;
    Ok(())
}

/// Closes every descriptor but standard input, output and error: whatever the VMM's process
/// held without close-on-exec must not reach this one.
pub fn close_inherited() {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: nothing in this process owns these descriptors yet (this runs first thing
        // in main); the one read_dir used is closed by now, and closing it twice is harmless.
        unsafe { libc::close(fd) };
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_filter_compiles() {
        let program = super::filter().unwrap();
        assert!(program.len() > 50, "{} instructions", program.len());
        assert!(!super::refusals().unwrap().is_empty());
    }
}
