//! Child processes that cannot outlive the test that started them.
//!
//! A test that panics runs its guards' `Drop`, but a test process that is killed (a CI
//! timeout, SIGKILL from a harness) runs nothing; without help its QEMU, VMMs and Xvfb then
//! hold CPU, memory and ports for the rest of the run. The kernel's parent-death signal
//! covers that case: the child gets SIGKILL when the thread that spawned it ends.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Makes a [`Command`]'s process die with the thread that spawns it.
pub trait DieWithParent {
    /// The child receives SIGKILL when the spawning *thread* exits (prctl's
    /// PR_SET_PDEATHSIG is tied to the thread, not the process): spawn from the thread that
    /// owns the child for its whole life, as a test's own thread does.
    fn die_with_parent(&mut self) -> &mut Self;
}

impl DieWithParent for Command {
    fn die_with_parent(&mut self) -> &mut Self {
        let parent = std::process::id();
        let hook = move || {
            // SAFETY: prctl(PR_SET_PDEATHSIG) and getppid are async-signal-safe system calls
            // that take no pointers; nothing here allocates or takes a lock.
            let (rc, ppid) = unsafe {
                (
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL),
                    libc::getppid(),
                )
            };
            if rc == -1 {
                return Err(io::Error::last_os_error());
            }
            // The parent died between fork and prctl: the signal will never come.
            if u32::try_from(ppid).ok() != Some(parent) {
                return Err(io::Error::other(
                    "the parent exited before the child started",
                ));
            }
            Ok(())
        };
        // SAFETY: the hook runs between fork and exec and only makes async-signal-safe
        // system calls (see above); it touches no memory shared with the parent.
        unsafe { self.pre_exec(hook) }
    }
}
