//! A multiqueue device's I/O threads: one per queue (virtio-blk) or queue pair (virtio-net),
//! spawned with the VM, given work at the driver's DRIVER_OK, and each handed a stop eventfd
//! that the device's reset writes before waiting for the thread to let go of guest memory.

use vmm_sys_util::eventfd::EventFd;

use super::ActivateError;
use crate::devices::worker_thread::WorkerThread;
use crate::sandbox::{Sandbox, SandboxError, ThreadKind};

/// The threads and the stop eventfds of those serving.
pub struct QueueThreads {
    threads: Vec<WorkerThread>,
    running: Vec<(usize, EventFd)>,
}

impl QueueThreads {
    /// Starts one idle thread of `kind` per name.
    pub fn spawn(
        sandbox: &Sandbox,
        kind: ThreadKind,
        names: impl IntoIterator<Item = String>,
    ) -> Result<Self, SandboxError> {
        Ok(Self {
            threads: names
                .into_iter()
                .map(|name| WorkerThread::spawn(sandbox, kind, name))
                .collect::<Result<_, _>>()?,
            running: Vec::new(),
        })
    }

    /// Runs `job` on thread `index` with the stop eventfd it must watch; false when there is
    /// no such thread (the transport offered fewer queues: a VMM bug, for the caller to log).
    pub fn start(
        &mut self,
        index: usize,
        job: impl FnOnce(EventFd) + Send + 'static,
    ) -> Result<bool, ActivateError> {
        let Some(thread) = self.threads.get_mut(index) else {
            return Ok(false);
        };
        let stop = EventFd::new(libc::EFD_NONBLOCK).map_err(ActivateError::EventFd)?;
        let theirs = stop.try_clone().map_err(ActivateError::EventFd)?;
        thread.start(move || job(theirs))?;
        self.running.push((index, stop));
        Ok(true)
    }

    /// How many threads serve now.
    pub fn serving(&self) -> usize {
        self.running.len()
    }

    /// Tells every serving thread to stop and waits until each has.
    pub fn stop(&mut self) {
        for (index, stop) in self.running.drain(..) {
            let _ = stop.write(1);
            if let Some(t) = self.threads.get_mut(index) {
                t.wait();
            }
        }
    }
}

impl Drop for QueueThreads {
    fn drop(&mut self) {
        self.stop();
    }
}
