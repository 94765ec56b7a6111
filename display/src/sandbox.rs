//! The display process's seccomp filter (the seccompiler crate, as Firecracker uses it).
//!
//! Installed on every thread once SPICE is up: its ports are bound, its certificates read,
//! its threads started, OpenSSL initialised. What remains is serving: accepting clients on the
//! bound ports, reading and writing sockets, polling, sleeping, memory and threads. Anything
//! else (opening files, making sockets, connecting out, running programs, signalling other
//! processes) ends the process with SIGSYS, after naming the call on stderr, and the VMM
//! restarts it: a client that took over
//! libspice-server holds a process that can do nothing but what it already did.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// Why the filter was not installed.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The filter did not compile.
    #[error("seccomp filter: {0}")]
    Build(#[from] seccompiler::BackendError),
    /// The kernel refused it.
    #[error("seccomp: {0}")]
    Apply(#[from] seccompiler::Error),
}

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
    // Time (system calls where the vDSO cannot serve it, e.g. an unstable TSC in a VM).
    libc::SYS_clock_gettime,
    libc::SYS_clock_getres,
    libc::SYS_gettimeofday,
    libc::SYS_time,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    // Memory.
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

fn equals(arg: u8, value: u64) -> Result<SeccompRule, SandboxError> {
    Ok(SeccompRule::new(vec![SeccompCondition::new(
        arg,
        SeccompCmpArgLen::Qword,
        SeccompCmpOp::Eq,
        value,
    )?])?)
}

/// The filter that answers [`REFUSED`] calls with EACCES and lets the rest through to
/// [`filter`] (the kernel applies both; the stricter answer wins).
pub fn refusals() -> Result<BpfProgram, SandboxError> {
    let rules = REFUSED.iter().map(|&nr| (nr, Vec::new())).collect();
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EACCES as u32),
        TargetArch::x86_64,
    )?;
    Ok(filter.try_into()?)
}

/// The compiled allowlist.
pub fn filter() -> Result<BpfProgram, SandboxError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        ALLOWED.iter().map(|&nr| (nr, Vec::new())).collect();
    // Socket queue sizes and non-blocking mode only.
    rules.insert(
        libc::SYS_ioctl,
        [libc::TIOCOUTQ, libc::FIONREAD, libc::FIONBIO]
            .into_iter()
            .map(|r| equals(1, r))
            .collect::<Result<_, _>>()?,
    );
    // Naming its threads.
    rules.insert(libc::SYS_prctl, vec![equals(0, libc::PR_SET_NAME as u64)?]);
    // Signals to its own threads (abort on a crash), never to another process (the VMM).
    rules.insert(
        libc::SYS_tgkill,
        vec![equals(0, u64::from(std::process::id()))?],
    );
    // Trap, not kill: the handler names the call on stderr, then the process dies of SIGSYS.
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Trap,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )?;
    Ok(filter.try_into()?)
}

/// Offset of `si_syscall` in x86-64 Linux's siginfo_t for SIGSYS (after si_signo, si_errno,
/// si_code and padding comes `void *_call_addr`, then `int _syscall`); the libc crate has no
/// accessor for it.
const SI_SYSCALL_OFFSET: usize = 24;

extern "C" fn on_sigsys(_signal: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo_t for a SIGSYS delivered by seccomp; the
    // field read lies inside it.
    let nr = unsafe {
        info.cast::<u8>()
            .add(SI_SYSCALL_OFFSET)
            .cast::<i32>()
            .read_unaligned()
    };
    // Async-signal-safe: the number formatted on the stack, three write(2)s.
    let mut digits = [0u8; 10];
    let mut n = nr.unsigned_abs();
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 || at == 0 {
            break;
        }
    }
    let parts: [&[u8]; 3] = [
        b"tessera-display: system call ",
        &digits[at..],
        b" is outside the seccomp filter; ending\n",
    ];
    // SAFETY: write(2) of live buffers, then a signal to this thread: SIGSYS's handler was
    // reset to the default on entry (SA_RESETHAND) and is not blocked (SA_NODEFER), so the
    // process dies of it here.
    unsafe {
        for p in parts {
            libc::write(2, p.as_ptr().cast(), p.len());
        }
        libc::raise(libc::SIGSYS);
    }
}

/// Installs the SIGSYS handler that reports a forbidden call.
fn report_violations() {
    // SAFETY: a zeroed sigaction is valid; the handler only makes async-signal-safe calls.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigsys as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_RESETHAND | libc::SA_NODEFER;
        libc::sigaction(libc::SIGSYS, &action, std::ptr::null_mut());
    }
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
    report_violations();
    let (allow, refuse) = (filter()?, refusals()?);
    // The allowlist last: once it is on, installing another filter is itself forbidden.
    seccompiler::apply_filter_all_threads(&refuse)?;
    seccompiler::apply_filter_all_threads(&allow)?;
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
