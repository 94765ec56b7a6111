//! The HBA's I/O thread: takes issued commands from the register file, fetches each from
//! guest memory, lets its drive decide what it does, moves the data between the medium and
//! the command's scatter-gather list, and reports the end. No vCPU waits on a medium.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::{Epoll, EpollEvent};
use vmm_sys_util::eventfd::EventFd;

use super::dma::{Command, DmaError, Regions};
use super::drive::{Drive, DriveStats, Transfer};
use super::fis::{self, Registers, TaskFile};
use super::hba::{Ended, Hba, Issued, PORTS};
use crate::devices::bus::lock;
use crate::devices::worker_thread::epoll_on;
use crate::rate_limit::{RateLimiter, Verdict};

/// Bytes moved between a medium and guest memory per step.
const CHUNK: usize = 1 << 20;

const TOKEN_KICK: u64 = 0;
const TOKEN_STOP: u64 = 1;

/// What the thread owns.
pub struct Worker {
    /// The register file.
    pub hba: Arc<Mutex<Hba>>,
    /// The drives, by port.
    pub drives: Vec<Option<Drive>>,
    /// Their counters, by port.
    pub stats: Vec<Arc<DriveStats>>,
    /// Guest memory.
    pub memory: GuestMemoryMmap,
    /// Written when commands are issued.
    pub kick: EventFd,
    /// Written to end the thread.
    pub stop: EventFd,
}

/// Why a transfer stopped.
enum Failure {
    /// Guest memory: the HBA's fatal error.
    Dma(DmaError),
    /// The medium: the device's error.
    Medium(String, bool),
    /// A write with fewer bytes described than the command moves.
    Short,
}

impl Worker {
    /// The thread body: returns when `stop` is written.
    pub fn run(mut self) {
        let epoll = match self.epoll() {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = %e, "ahci: cannot set up epoll; the controller is dead");
                return;
            }
        };
        let mut events = [EpollEvent::default(); 2];
        let mut buf = Vec::new();
        let mut srst = [false; PORTS];
        let mut log = RateLimiter::new(10, Duration::from_secs(5));
        loop {
            loop {
                let next = lock(&self.hba).take_issued();
                let Some(issued) = next else { break };
                let end = self.run_one(&issued, &mut buf, &mut srst, &mut log);
                if let Some(s) = self.stats.get(issued.port) {
                    s.command(end.fatal || end.regs.status & fis::status::ERR != 0);
                }
                lock(&self.hba).finish(&issued, &end);
            }
            match epoll.wait(-1, &mut events) {
                Ok(n) => {
                    if events[..n].iter().any(|e| e.data() == TOKEN_STOP) {
                        return;
                    }
                    let _ = self.kick.read();
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::error!(error = %e, "ahci: epoll failed; the controller stops");
                    return;
                }
            }
        }
    }

    fn epoll(&self) -> std::io::Result<Epoll> {
        epoll_on(&[(&self.kick, TOKEN_KICK), (&self.stop, TOKEN_STOP)])
    }

    /// Runs one command to its end.
    fn run_one(
        &mut self,
        issued: &Issued,
        buf: &mut Vec<u8>,
        srst: &mut [bool; PORTS],
        log: &mut RateLimiter,
    ) -> Ended {
        let ended = |regs: Registers| Ended {
            regs,
            bytes: 0,
            pio: false,
            silent: false,
            fatal: false,
        };
        let fatal = |e: DmaError, log: &mut RateLimiter| {
            warn(log, issued.port, &e.to_string());
            Ended {
                fatal: true,
                ..ended(Registers::default())
            }
        };
        let Some(drive) = self.drives.get_mut(issued.port).and_then(Option::as_mut) else {
            // The register file issues commands only to ports with a device.
            return ended(Registers::default());
        };
        if issued.reset_drive {
            drive.reset();
            srst[issued.port] = false;
        }
        let command = match Command::fetch(&self.memory, issued.list, issued.slot) {
            Ok(c) => c,
            Err(e) => return fatal(e, log),
        };
        let Some(tf) = TaskFile::from_fis(&command.fis) else {
            warn(
                log,
                issued.port,
                &format!("command FIS of type {:#x}", command.fis[0]),
            );
            return ended(super::ata::failed(fis::error::ABRT));
        };
        if !tf.is_command {
            // A device control update: the soft reset's two halves (set, then cleared).
            let asserted = tf.control & fis::CONTROL_SRST != 0;
            let was = std::mem::replace(&mut srst[issued.port], asserted);
            return if asserted {
                Ended {
                    silent: true,
                    ..ended(Registers {
                        status: fis::status::BSY,
                        ..Registers::default()
                    })
                }
            } else if was {
                drive.reset();
                ended(drive.kind().signature())
            } else {
                Ended {
                    silent: true,
                    ..ended(Registers {
                        status: super::ata::READY,
                        ..Registers::default()
                    })
                }
            };
        }
        let step = drive.command(&tf, &command.packet);
        let need = match &step.transfer {
            Transfer::None | Transfer::Flush => 0,
            Transfer::In(d) => d.len() as u64,
            Transfer::Read { len, .. } | Transfer::Write { len, .. } => *len,
            Transfer::Out(len) => *len,
        };
        let regions = match command.regions(&self.memory, need) {
            Ok(r) => r,
            Err(e) => return fatal(e, log),
        };
        match self.transfer(issued.port, &step.transfer, &regions, buf) {
            Ok(bytes) => Ended {
                bytes,
                pio: step.pio,
                ..ended(step.done)
            },
            Err(Failure::Dma(e)) => fatal(e, log),
            Err(Failure::Medium(e, write)) => {
                warn(log, issued.port, &e);
                let regs = self
                    .drive(issued.port)
                    .map_or_else(Registers::default, |d| d.io_failed(write));
                ended(regs)
            }
            Err(Failure::Short) => {
                warn(
                    log,
                    issued.port,
                    "a write with fewer bytes described than it moves",
                );
                ended(super::ata::failed(fis::error::ABRT))
            }
        }
    }

    fn drive(&mut self, port: usize) -> Option<&mut Drive> {
        self.drives.get_mut(port).and_then(Option::as_mut)
    }

    /// Moves a step's data; returns the bytes moved.
    fn transfer(
        &self,
        port: usize,
        transfer: &Transfer,
        regions: &Regions,
        buf: &mut Vec<u8>,
    ) -> Result<u32, Failure> {
        let memory = &self.memory;
        let (Some(drive), Some(stats)) = (
            self.drives.get(port).and_then(Option::as_ref),
            self.stats.get(port),
        ) else {
            return Ok(0);
        };
        let mut cursor = regions.cursor();
        let moved = match transfer {
            Transfer::None => 0,
            Transfer::In(data) => {
                let n = cursor.write(memory, data).map_err(Failure::Dma)? as u64;
                stats.read(n);
                n
            }
            Transfer::Out(len) => (*len).min(regions.total()),
            Transfer::Flush => {
                drive
                    .flush()
                    .map_err(|e| Failure::Medium(e.to_string(), true))?;
                0
            }
            Transfer::Read { offset, len } => {
                // What the table can take: a shorter table gets what fits (an ATAPI host may
                // describe less than the command reads).
                let len = (*len).min(regions.total());
                let mut done = 0u64;
                while done < len {
                    let n = (len - done).min(CHUNK as u64) as usize;
                    buf.resize(n, 0);
                    drive
                        .read(&mut buf[..n], offset + done)
                        .map_err(|e| Failure::Medium(e.to_string(), false))?;
                    cursor.write(memory, &buf[..n]).map_err(Failure::Dma)?;
                    stats.read(n as u64);
                    done += n as u64;
                }
                done
            }
            Transfer::Write { offset, len, flush } => {
                if regions.total() < *len {
                    return Err(Failure::Short);
                }
                let mut done = 0u64;
                while done < *len {
                    let n = (len - done).min(CHUNK as u64) as usize;
                    buf.resize(n, 0);
                    cursor.read(memory, &mut buf[..n]).map_err(Failure::Dma)?;
                    drive
                        .write(&buf[..n], offset + done)
                        .map_err(|e| Failure::Medium(e.to_string(), true))?;
                    stats.wrote(n as u64);
                    done += n as u64;
                }
                if *flush {
                    drive
                        .flush()
                        .map_err(|e| Failure::Medium(e.to_string(), true))?;
                }
                done
            }
        };
        Ok(u32::try_from(moved).unwrap_or(u32::MAX))
    }
}

fn warn(log: &mut RateLimiter, port: usize, e: &str) {
    if let Verdict::Log { suppressed } = log.check(Instant::now()) {
        tracing::warn!(port, suppressed, error = e, "ahci: command failed");
    }
}
