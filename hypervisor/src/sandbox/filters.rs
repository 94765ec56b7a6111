//! The system calls each kind of tessera-vmm thread may make.
//!
//! Lists are what the threads were seen to call (strace over the test suites, then every
//! suite run with the filters on), grouped by why. Arguments are pinned where that separates
//! the needed use from a dangerous one: ioctls by request (a vCPU can run itself but not
//! create VMs), mmap and mprotect without PROT_EXEC outside the display thread (nothing loads
//! code once the VM runs), tgkill to this process only, the console's file opened only for
//! appending, kill only with SIGKILL.

use kvm_bindings::{
    kvm_debugregs, kvm_dirty_log, kvm_fpu, kvm_ioeventfd, kvm_irq_level, kvm_irq_routing,
    kvm_irqchip, kvm_lapic_state, kvm_mp_state, kvm_msrs, kvm_pit_state2, kvm_regs, kvm_sregs,
    kvm_userspace_memory_region, kvm_vcpu_events, kvm_xcrs, KVMIO,
};
use seccompiler::{SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompRule};
use tessera_seccomp::{allow_any, allow_when, allowlist, equals, BpfProgram, Rules, SeccompError};
use vmm_sys_util::{ioctl_io_nr, ioctl_ior_nr, ioctl_iow_nr};

use super::ThreadKind;

// The KVM requests the running VM makes; kvm-ioctls keeps its own definitions private.
ioctl_io_nr!(KVM_RUN, KVMIO, 0x80);
ioctl_ior_nr!(KVM_GET_REGS, KVMIO, 0x81, kvm_regs);
ioctl_ior_nr!(KVM_GET_SREGS, KVMIO, 0x83, kvm_sregs);
ioctl_iow_nr!(
    KVM_SET_USER_MEMORY_REGION,
    KVMIO,
    0x46,
    kvm_userspace_memory_region
);
ioctl_iow_nr!(KVM_GET_DIRTY_LOG, KVMIO, 0x42, kvm_dirty_log);
ioctl_iow_nr!(KVM_SET_GSI_ROUTING, KVMIO, 0x6a, kvm_irq_routing);
ioctl_iow_nr!(KVM_IOEVENTFD, KVMIO, 0x79, kvm_ioeventfd);
ioctl_iow_nr!(KVM_IRQ_LINE, KVMIO, 0x61, kvm_irq_level);
// What a reset in place sets again: a vCPU's own state, and the VM's interrupt controllers.
ioctl_iow_nr!(KVM_SET_REGS, KVMIO, 0x82, kvm_regs);
ioctl_iow_nr!(KVM_SET_SREGS, KVMIO, 0x84, kvm_sregs);
ioctl_iow_nr!(KVM_SET_MSRS, KVMIO, 0x89, kvm_msrs);
ioctl_iow_nr!(KVM_SET_FPU, KVMIO, 0x8d, kvm_fpu);
ioctl_iow_nr!(KVM_SET_LAPIC, KVMIO, 0x8f, kvm_lapic_state);
ioctl_iow_nr!(KVM_SET_MP_STATE, KVMIO, 0x99, kvm_mp_state);
ioctl_iow_nr!(KVM_SET_VCPU_EVENTS, KVMIO, 0xa0, kvm_vcpu_events);
ioctl_iow_nr!(KVM_SET_DEBUGREGS, KVMIO, 0xa2, kvm_debugregs);
ioctl_iow_nr!(KVM_SET_XCRS, KVMIO, 0xa7, kvm_xcrs);
ioctl_ior_nr!(KVM_SET_IRQCHIP, KVMIO, 0x63, kvm_irqchip);
ioctl_iow_nr!(KVM_SET_PIT2, KVMIO, 0xa0, kvm_pit_state2);

/// What every thread does (with [`tessera_seccomp::TIME`]): memory, locks, its own signals,
/// logging to stderr, closing what it drops, and ending.
const EVERY_THREAD: &[i64] = &[
    libc::SYS_brk,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_madvise,
    libc::SYS_futex,
    libc::SYS_sched_yield,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_sigaltstack,
    libc::SYS_restart_syscall,
    libc::SYS_getpid,
    libc::SYS_gettid,
    // glibc's malloc counts the CPUs when it makes its ninth arena, on whichever thread
    // allocates first (each queue thread of a many-vCPU VM may).
    libc::SYS_sched_getaffinity,
    libc::SYS_getrandom,
    libc::SYS_write,
    libc::SYS_writev,
    libc::SYS_close,
    libc::SYS_exit,
    libc::SYS_exit_group,
];

/// Creating threads (the new thread's own start-up included: it holds its creator's filter).
const NEW_THREADS: &[i64] = &[
    libc::SYS_clone3,
    libc::SYS_rseq,
    libc::SYS_set_robust_list,
    libc::SYS_sched_getaffinity,
];

/// Waiting on eventfds and sockets.
const WAITING: &[i64] = &[
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_poll,
    libc::SYS_ppoll,
    libc::SYS_read,
];

/// Sockets the thread already has (the API's, the display process's links).
const CONNECTED_SOCKETS: &[i64] = &[
    libc::SYS_recvfrom,
    libc::SYS_recvmsg,
    libc::SYS_sendto,
    libc::SYS_sendmsg,
    libc::SYS_shutdown,
    libc::SYS_getsockopt,
    libc::SYS_setsockopt,
];

/// Disk image I/O (tessera-storage: imago's qcow2 and raw drivers).
const IMAGE_IO: &[i64] = &[
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_preadv2,
    libc::SYS_pwritev2,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_fallocate,
    libc::SYS_ftruncate,
    libc::SYS_lseek,
    libc::SYS_fstat,
];

/// The display thread starts tessera-display processes, which hold its filter until they
/// install their own: their whole start-up (loading shared libraries, reading certificates,
/// binding SPICE's ports, starting libspice-server's threads) must pass it.
const DISPLAY_PROCESS_START: &[i64] = &[
    libc::SYS_clone,
    libc::SYS_vfork,
    libc::SYS_execve,
    libc::SYS_wait4,
    libc::SYS_waitid,
    libc::SYS_socketpair,
    libc::SYS_pipe2,
    libc::SYS_dup2,
    libc::SYS_dup3,
    libc::SYS_fcntl,
    libc::SYS_openat,
    libc::SYS_open,
    libc::SYS_access,
    libc::SYS_readlink,
    libc::SYS_getcwd,
    libc::SYS_newfstatat,
    libc::SYS_fstat,
    libc::SYS_statx,
    libc::SYS_lseek,
    libc::SYS_pread64,
    libc::SYS_getdents64,
    libc::SYS_arch_prctl,
    libc::SYS_set_tid_address,
    libc::SYS_prlimit64,
    libc::SYS_sysinfo,
    libc::SYS_uname,
    libc::SYS_rt_sigaction,
    libc::SYS_eventfd2,
    libc::SYS_socket,
    libc::SYS_bind,
    libc::SYS_listen,
    libc::SYS_connect,
    libc::SYS_accept,
    libc::SYS_accept4,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
    libc::SYS_getppid,
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getegid,
    libc::SYS_seccomp,
];

/// `arg` with `mask`'s bits clear.
fn without(arg: u8, mask: u64) -> Result<SeccompRule, SeccompError> {
    Ok(SeccompRule::new(vec![SeccompCondition::new(
        arg,
        SeccompCmpArgLen::Qword,
        SeccompCmpOp::MaskedEq(mask),
        0,
    )?])?)
}

/// mmap and mprotect, never making memory executable (no thread loads code once the VM is
/// built), unless `exec` (the display thread, whose processes load their libraries).
fn memory(rules: &mut Rules, exec: bool) -> Result<(), SeccompError> {
    for nr in [libc::SYS_mmap, libc::SYS_mprotect] {
        if exec {
            rules.insert(nr, Vec::new());
        } else {
            rules.insert(nr, vec![without(2, libc::PROT_EXEC as u64)?]);
        }
    }
    Ok(())
}

fn ioctls(rules: &mut Rules, requests: &[u64]) -> Result<(), SeccompError> {
    allow_when(rules, libc::SYS_ioctl, 1, requests.iter().copied())
}

/// The rules for `kind`; `reboots`: the VM resets in place at a guest's reboot.
pub fn rules(kind: ThreadKind, reboots: bool) -> Result<Rules, SeccompError> {
    let mut r = Rules::new();
    allow_any(&mut r, EVERY_THREAD);
    allow_any(&mut r, tessera_seccomp::TIME);
    memory(&mut r, kind == ThreadKind::Display)?;
    // Signals only to this process's threads: kicking a vCPU out of KVM_RUN, an abort.
    let own = u64::from(std::process::id());
    r.insert(libc::SYS_tgkill, vec![equals(0, own)?]);
    // Rust's standard library checks a descriptor is open before closing it; any thread may
    // drop the last handle of something holding one.
    r.insert(libc::SYS_fcntl, vec![equals(1, libc::F_GETFD as u64)?]);
    match kind {
        ThreadKind::Main => {
            // Stopping: the API socket's file goes; the disks and the firmware's variable
            // store (a shared mapping) are flushed.
            allow_any(&mut r, IMAGE_IO);
            allow_any(
                &mut r,
                &[libc::SYS_unlink, libc::SYS_shutdown, libc::SYS_msync],
            );
            if reboots {
                // A reset in place: the kernel and initrd read again, the interrupt
                // controllers restored, and the devices' KVM resources (MSI routes, queue
                // ioeventfds, video memory's slot, the SCI) put back as built.
                allow_any(&mut r, &[libc::SYS_read]);
                ioctls(
                    &mut r,
                    &[
                        KVM_SET_IRQCHIP(),
                        KVM_SET_PIT2(),
                        KVM_SET_GSI_ROUTING(),
                        KVM_IOEVENTFD(),
                        KVM_SET_USER_MEMORY_REGION(),
                        KVM_IRQ_LINE(),
                    ],
                )?;
            }
        }
        ThreadKind::Vcpu => {
            let mut requests = vec![
                KVM_RUN(),
                // What a vCPU that failed or triple-faulted was doing, for the log.
                KVM_GET_REGS(),
                KVM_GET_SREGS(),
                // The guest moves the display's BAR, or programs MSI-X and virtio BARs.
                KVM_SET_USER_MEMORY_REGION(),
                KVM_SET_GSI_ROUTING(),
                KVM_IOEVENTFD(),
                // The ACPI SCI follows the events the guest enables and clears.
                KVM_IRQ_LINE(),
            ];
            if reboots {
                // After a reset, each vCPU restores its own first state.
                requests.extend([
                    KVM_SET_SREGS(),
                    KVM_SET_REGS(),
                    KVM_SET_FPU(),
                    KVM_SET_XCRS(),
                    KVM_SET_DEBUGREGS(),
                    KVM_SET_LAPIC(),
                    KVM_SET_MSRS(),
                    KVM_SET_VCPU_EVENTS(),
                    KVM_SET_MP_STATE(),
                ]);
            }
            ioctls(&mut r, &requests)?;
            // A device being activated: its queues' stop eventfds.
            allow_any(&mut r, &[libc::SYS_eventfd2]);
            allow_when(&mut r, libc::SYS_fcntl, 1, [libc::F_DUPFD_CLOEXEC as u64])?;
            // The console file rotated at its limit: renamed, and a new one opened to append.
            let append = libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND | libc::O_CLOEXEC;
            r.insert(libc::SYS_openat, vec![equals(2, append as u64)?]);
            allow_any(
                &mut r,
                &[
                    libc::SYS_rename,
                    libc::SYS_renameat,
                    libc::SYS_renameat2,
                    libc::SYS_statx,
                ],
            );
        }
        ThreadKind::Api => {
            allow_any(&mut r, NEW_THREADS);
            allow_any(&mut r, WAITING);
            allow_any(&mut r, CONNECTED_SOCKETS);
            allow_any(&mut r, &[libc::SYS_accept4]);
            // The blocking threads' names.
            r.insert(libc::SYS_prctl, vec![equals(0, libc::PR_SET_NAME as u64)?]);
            allow_when(
                &mut r,
                libc::SYS_fcntl,
                1,
                [libc::F_GETFL, libc::F_SETFL, libc::F_DUPFD_CLOEXEC].map(|c| c as u64),
            )?;
            // The power button raises the ACPI SCI.
            ioctls(&mut r, &[libc::FIONBIO, KVM_IRQ_LINE()])?;
        }
        ThreadKind::BlockQueue => {
            allow_any(&mut r, WAITING);
            allow_any(&mut r, IMAGE_IO);
        }
        ThreadKind::Tablet => allow_any(&mut r, WAITING),
        ThreadKind::NetQueue => {
            // Frames are read (WAITING has read) and written whole on the tap queue; the
            // control queue attaches and detaches queues and sets the offloads; with
            // vhost-net, pair 0's thread hands the rings to the kernel and takes them back.
            allow_any(&mut r, WAITING);
            let mut requests = crate::devices::virtio::net::tap::queue_thread_ioctls().to_vec();
            requests.extend(crate::devices::virtio::net::vhost::thread_ioctls());
            ioctls(&mut r, &requests)?;
        }
        ThreadKind::ConsoleIn => allow_any(&mut r, &[libc::SYS_read]),
        ThreadKind::Tpm => {
            // swtpm's two sockets, then its end: waited for, killed if it lingers.
            allow_any(&mut r, WAITING);
            allow_any(&mut r, CONNECTED_SOCKETS);
            allow_any(&mut r, &[libc::SYS_wait4]);
            r.insert(libc::SYS_kill, vec![equals(1, libc::SIGKILL as u64)?]);
        }
        ThreadKind::Display => {
            allow_any(&mut r, NEW_THREADS);
            allow_any(&mut r, WAITING);
            allow_any(&mut r, CONNECTED_SOCKETS);
            allow_any(&mut r, DISPLAY_PROCESS_START);
            // A display process that does not end when its links do.
            r.insert(libc::SYS_kill, vec![equals(1, libc::SIGKILL as u64)?]);
            // Its threads' names, and its own filter.
            r.insert(
                libc::SYS_prctl,
                vec![
                    equals(0, libc::PR_SET_NAME as u64)?,
                    equals(0, libc::PR_SET_NO_NEW_PRIVS as u64)?,
                ],
            );
            ioctls(
                &mut r,
                &[
                    KVM_GET_DIRTY_LOG(),
                    // The display process's sockets and terminal checks.
                    libc::FIONBIO,
                    libc::FIONREAD,
                    libc::TIOCOUTQ,
                    libc::TCGETS,
                ],
            )?;
        }
    }
    Ok(r)
}

/// `kind`'s compiled filter (`reboots`: see [`rules`]).
pub fn program(kind: ThreadKind, reboots: bool) -> Result<BpfProgram, SeccompError> {
    allowlist(rules(kind, reboots)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_compiles() {
        for kind in ThreadKind::ALL {
            let program = program(kind, true).unwrap();
            assert!(
                program.len() > 30,
                "{kind:?}: {} instructions",
                program.len()
            );
        }
    }

    #[test]
    fn only_the_display_thread_may_start_programs_or_open_sockets() {
        for kind in ThreadKind::ALL {
            let r = rules(kind, true).unwrap();
            let display = kind == ThreadKind::Display;
            for nr in [libc::SYS_execve, libc::SYS_socket, libc::SYS_connect] {
                assert_eq!(r.contains_key(&nr), display, "{kind:?} and call {nr}");
            }
        }
    }

    #[test]
    fn a_vcpu_may_not_create_a_vm_or_map_code() {
        let r = rules(ThreadKind::Vcpu, false).unwrap();
        // KVM_CREATE_VM is _IO(KVMIO, 0x01): not among the vCPU's requests (KVM_RUN, the register
        // reads for a dying vCPU's log, memory slots, GSI routes, ioeventfds, the SCI line).
        assert_eq!(r[&libc::SYS_ioctl].len(), 7);
        // A VM that restarts in place lets it restore its own state, nothing more.
        let r = rules(ThreadKind::Vcpu, true).unwrap();
        assert_eq!(r[&libc::SYS_ioctl].len(), 16);
        let main = rules(ThreadKind::Main, false).unwrap();
        assert!(!main.contains_key(&libc::SYS_ioctl) && !main.contains_key(&libc::SYS_read));
        assert!(!r[&libc::SYS_mmap].is_empty(), "mmap is conditional");
        assert!(!r.contains_key(&libc::SYS_clone3), "vCPUs start no threads");
    }
}
