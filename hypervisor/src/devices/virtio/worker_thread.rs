//! A device's I/O thread, started with the VM and given work whenever the guest's driver
//! activates the device. Started early so that it gets its own seccomp filter from an
//! unfiltered creator: a vCPU (which is where activation happens) holds a filter without the
//! device's file I/O or thread creation, and a thread it created would hold that too.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::thread::JoinHandle;

use crate::sandbox::{Sandbox, SandboxError, ThreadKind};

type Job = Box<dyn FnOnce() + Send>;

/// A parked thread that runs one job at a time.
pub struct WorkerThread {
    jobs: Option<Sender<Job>>,
    done: Receiver<()>,
    busy: bool,
    thread: Option<JoinHandle<Option<()>>>,
}

/// The thread is gone (a job panicked): the device cannot be activated again.
#[derive(Debug, thiserror::Error)]
#[error("the device's I/O thread has ended")]
pub struct WorkerGone;

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
    pub fn start(&mut self, job: impl FnOnce() + Send + 'static) -> Result<(), WorkerGone> {
        self.wait();
        let jobs = self.jobs.as_ref().ok_or(WorkerGone)?;
        jobs.send(Box::new(job)).map_err(|_| WorkerGone)?;
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
