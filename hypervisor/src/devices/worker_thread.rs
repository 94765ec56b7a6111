//! A device's I/O thread, started with the VM and given work whenever the guest's driver
//! activates the device. Started early so that it gets its own seccomp filter from an
//! unfiltered creator: a vCPU (which is where activation happens) holds a filter without the
//! device's file I/O or thread creation, and a thread it created would hold that too.

use std::os::fd::AsRawFd;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::thread::JoinHandle;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use crate::sandbox::{Sandbox, SandboxError, ThreadKind};

/// An epoll set over device eventfds (a queue's kick, a stop), each readable event tagged
/// with its token: what every device thread's loop waits on.
pub fn epoll_on(fds: &[(&EventFd, u64)]) -> std::io::Result<Epoll> {
    let epoll = Epoll::new()?;
    for (fd, token) in fds {
        epoll.ctl(
            ControlOperation::Add,
            fd.as_raw_fd(),
            EpollEvent::new(EventSet::IN, *token),
        )?;
    }
    Ok(epoll)
}

type Job = Box<dyn FnOnce() + Send>;

/// A parked thread that runs one job at a time.
pub struct WorkerThread {
    jobs: Option<Sender<Job>>,
    done: Receiver<()>,
    busy: bool,
    thread: Option<JoinHandle<Option<()>>>,
}

/// Why a job was not started.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The thread is gone (a job panicked): the device cannot be activated again.
    #[error("the device's I/O thread has ended")]
    Gone,
    /// The previous job was not stopped and waited for (a device model's bug; refused
    /// rather than waited on, which would hang the vCPU).
    #[error("the device's I/O thread is still serving")]
    Busy,
}

impl WorkerThread {
    /// Starts thread `name` of `kind`, idle.
    pub fn spawn(sandbox: &Sandbox, kind: ThreadKind, name: String) -> Result<Self, SandboxError> {
        let (jobs, jobs_rx) = channel::<Job>();
        let (done_tx, done) = channel();
        let thread = sandbox.spawn(kind, name, move || {
            for job in jobs_rx {
                job();
                if done_tx.send(()).is_err() {
                    return;
                }
            }
        })?;
        Ok(Self {
            jobs: Some(jobs),
            done,
            busy: false,
            thread: Some(thread),
        })
    }

    /// Runs `job` on the thread; the previous one must have been waited for.
    pub fn start(&mut self, job: impl FnOnce() + Send + 'static) -> Result<(), WorkerError> {
        if self.busy {
            return Err(WorkerError::Busy);
        }
        let jobs = self.jobs.as_ref().ok_or(WorkerError::Gone)?;
        jobs.send(Box::new(job)).map_err(|_| WorkerError::Gone)?;
        self.busy = true;
        Ok(())
    }

    /// Waits until the running job (told to stop by its own means) has returned.
    pub fn wait(&mut self) {
        if std::mem::take(&mut self.busy) {
            // Err: the job panicked and the thread ended; nothing runs either way.
            let _ = self.done.recv();
        }
    }
}

impl Drop for WorkerThread {
    fn drop(&mut self) {
        self.wait();
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    #[test]
    fn jobs_run_one_at_a_time_on_the_same_thread() {
        let mut w = WorkerThread::spawn(&Sandbox::off(), ThreadKind::Tablet, "w".into()).unwrap();
        let ran = Arc::new(AtomicU32::new(0));
        for _ in 0..3 {
            let r = ran.clone();
            w.start(move || {
                assert_eq!(std::thread::current().name(), Some("w"));
                r.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
            w.wait();
        }
        assert_eq!(ran.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn a_second_job_before_the_first_is_waited_for_is_refused() {
        let mut w = WorkerThread::spawn(&Sandbox::off(), ThreadKind::Tablet, "w".into()).unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        w.start(move || {
            let _ = rx.recv();
        })
        .unwrap();
        assert!(matches!(w.start(|| ()), Err(WorkerError::Busy)));
        drop(tx);
        w.wait();
        w.start(|| ()).unwrap();
    }

    #[test]
    fn a_panicking_job_leaves_the_device_unable_to_start_again() {
        let mut w = WorkerThread::spawn(&Sandbox::off(), ThreadKind::Tablet, "w".into()).unwrap();
        w.start(|| panic!("a device bug")).unwrap();
        w.wait();
        // The thread is gone; the send may race its exit, so try until it is seen.
        let gone = (0..100).any(|_| {
            w.wait();
            std::thread::sleep(std::time::Duration::from_millis(5));
            matches!(w.start(|| ()), Err(WorkerError::Gone))
        });
        assert!(gone);
    }
}
