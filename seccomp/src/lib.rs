//! What Tessera's seccomp filters share (tessera-vmm's per-thread filters and the display
//! process's): building rules, installing a compiled filter, and reporting a violation.
//!
//! Filters trap instead of killing outright: the SIGSYS handler here writes which system call
//! which kind of thread made ("tessera-vmm: system call 41 (thread kind: vcpu) is outside the
//! thread's seccomp filter; ending") and then lets SIGSYS end the process, so an operator sees both the
//! cause in the log and the signal in the exit status. seccompiler compiles and installs the
//! filters; it has no violation reporting, hence this crate.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::OnceLock;

pub use seccompiler::{BpfProgram, SeccompAction, TargetArch};
use seccompiler::{SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule};

/// Why a filter was not built or installed.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The rules did not compile.
    #[error("seccomp filter: {0}")]
    Build(#[from] seccompiler::BackendError),
    /// The kernel refused the filter.
    #[error("seccomp: {0}")]
    Apply(#[from] seccompiler::Error),
}

/// A filter's rules: each system call allowed with any argument (an empty list) or only when
/// one of its rules matches.
pub type Rules = BTreeMap<i64, Vec<SeccompRule>>;

/// Reading clocks and sleeping: system calls where the vDSO cannot serve the time (an unstable
/// TSC in a VM makes glibc fall back to them), and every sleep.
pub const TIME: &[i64] = &[
    libc::SYS_clock_gettime,
    libc::SYS_clock_getres,
    libc::SYS_gettimeofday,
    libc::SYS_time,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
];

/// Adds `calls` to `rules`, each with any argument.
pub fn allow_any(rules: &mut Rules, calls: &[i64]) {
    for &nr in calls {
        rules.insert(nr, Vec::new());
    }
}

/// A rule: argument `arg` (0-based) equals `value`.
pub fn equals(arg: u8, value: u64) -> Result<SeccompRule, SeccompError> {
    Ok(SeccompRule::new(vec![SeccompCondition::new(
        arg,
        SeccompCmpArgLen::Qword,
        SeccompCmpOp::Eq,
        value,
    )?])?)
}

/// Allows `nr` only when argument `arg` is one of `values` (e.g. ioctl requests).
pub fn allow_when(
    rules: &mut Rules,
    nr: i64,
    arg: u8,
    values: impl IntoIterator<Item = u64>,
) -> Result<(), SeccompError> {
    let mut list = values
        .into_iter()
        .map(|v| equals(arg, v))
        .collect::<Result<Vec<_>, _>>()?;
    rules.entry(nr).or_default().append(&mut list);
    Ok(())
}

/// An allowlist: what `rules` names passes, anything else traps (see [`report_violations`]).
pub fn allowlist(rules: Rules) -> Result<BpfProgram, SeccompError> {
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Trap,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )?;
    Ok(filter.try_into()?)
}

/// A filter that answers `calls` with `errno` and lets everything else through (to the
/// allowlist installed with it: the kernel applies both, and the stricter answer wins).
pub fn refusals(calls: &[i64], errno: i32) -> Result<BpfProgram, SeccompError> {
    let mut rules = Rules::new();
    allow_any(&mut rules, calls);
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(errno as u32),
        TargetArch::x86_64,
    )?;
    Ok(filter.try_into()?)
}

/// Installs `filter` on the calling thread (and what it starts later), labelled `label` in
/// violation reports.
pub fn apply_to_this_thread(label: &'static str, filter: &BpfProgram) -> Result<(), SeccompError> {
    LABEL.with(|l| l.set(label));
    seccompiler::apply_filter(filter)?;
    Ok(())
}

/// Installs `filter` on every thread of this process, labelled `label` in violation reports.
pub fn apply_to_all_threads(label: &'static str, filter: &BpfProgram) -> Result<(), SeccompError> {
    LABEL.with(|l| l.set(label));
    seccompiler::apply_filter_all_threads(filter)?;
    Ok(())
}

thread_local! {
    /// The kind of thread, for the report (const-initialised: readable in a signal handler).
    static LABEL: Cell<&'static str> = const { Cell::new("") };
}

/// The program named in reports.
static PROGRAM: OnceLock<&'static str> = OnceLock::new();

/// Offset of `si_syscall` in x86-64 Linux's siginfo_t for SIGSYS (after si_signo, si_errno,
/// si_code and padding comes `void *_call_addr`, then `int _syscall`); the libc crate has no
/// accessor for it.
const SI_SYSCALL_OFFSET: usize = 24;

/// Writes `n` in decimal into `buf`, returning the digits.
fn decimal(n: u32, buf: &mut [u8; 10]) -> &[u8] {
    let mut n = n;
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 || at == 0 {
            break;
        }
    }
    &buf[at..]
}

extern "C" fn on_sigsys(_signal: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo_t for a SIGSYS delivered by seccomp; the
    // field read lies inside it.
    let nr = unsafe {
        info.cast::<u8>()
            .add(SI_SYSCALL_OFFSET)
            .cast::<i32>()
            .read_unaligned()
    };
    // Async-signal-safe: no allocation, no locks; the label is a const-initialised
    // thread-local and the program name was set before any filter.
    let program = PROGRAM.get().copied().unwrap_or("tessera");
    let label = LABEL.with(Cell::get);
    let mut digits = [0u8; 10];
    let parts: [&[u8]; 6] = [
        program.as_bytes(),
        b": system call ",
        decimal(nr.unsigned_abs(), &mut digits),
        b" (thread kind: ",
        if label.is_empty() {
            b"any"
        } else {
            label.as_bytes()
        },
        b") is outside the thread's seccomp filter; ending\n",
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

/// Keeps glibc's malloc from opening a file once filters are on. The first time a thread's
/// own arena shrinks its heap (a large block freed at its top), glibc reads
/// /proc/sys/vm/overcommit_memory to decide how: an openat no thread's filter allows, seen
/// ending tessera-vmm when its virtio-net threads returned their frame buffers (2026-12-06).
/// A heap is shrunk only when the free space at its top reaches M_TRIM_THRESHOLD; above any
/// heap's size, none is (freed memory stays for reuse; large blocks are still mapped and
/// unmapped on their own, and a set threshold stops glibc from raising the mapping threshold
/// as they are freed). Call once, before the first filter.
pub fn keep_malloc_off_files() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt(3) takes two integers and changes only the allocator's tunables.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
    }
}

/// Installs the SIGSYS handler that names a forbidden call before the process dies of it;
/// `program` starts each report. Call once, before the first filter.
pub fn report_violations(program: &'static str) {
    let _ = PROGRAM.set(program);
    // SAFETY: a zeroed sigaction is valid; the handler only makes async-signal-safe calls.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigsys as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_RESETHAND | libc::SA_NODEFER;
        libc::sigaction(libc::SIGSYS, &action, std::ptr::null_mut());
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn numbers_are_written_in_decimal() {
        let mut b = [0u8; 10];
        assert_eq!(super::decimal(0, &mut b), b"0");
        assert_eq!(super::decimal(41, &mut b), b"41");
        assert_eq!(super::decimal(u32::MAX, &mut b), b"4294967295");
    }
}
