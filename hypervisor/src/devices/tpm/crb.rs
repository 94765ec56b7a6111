//! The TPM 2.0 Command Response Buffer interface (TCG PC Client Platform TPM Profile, CRB),
//! locality 0, at the address a PC's TPM has (0xFED4_0000): the registers Windows' and
//! Linux's `tpm_crb` drivers and OVMF's Tcg2 modules drive, and one 3968-byte buffer for the
//! command and its response. Written by hand: no crate models the device side.
//!
//! A command starts when the guest writes 1 to START; the device hands it to the TPM thread
//! (`super::Job`) and returns at once, and the guest polls START until the thread has put the
//! response in the buffer and cleared it. A vCPU never waits on swtpm. Interrupts are not
//! offered (the ACPI TPM2 table says "polled"), nor localities 1 to 4, nor idle bypass.

use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use super::swtpm::{be32, SwtpmError, HEADER_LEN};
use crate::devices::bus::BusDevice;
use crate::rate_limit::{RateLimiter, Verdict};

/// Guest-physical base of locality 0's registers.
pub const CRB_BASE: u64 = 0xfed4_0000;
/// Locality 0's page: the registers and the buffer.
pub const CRB_SIZE: u64 = 0x1000;
/// The control area (CTRL_REQ onwards), whose address the ACPI TPM2 table gives.
pub const CRB_CONTROL_AREA: u64 = CRB_BASE + CTRL_REQ;
/// Where the buffer starts in the page, and its size (the page's rest).
const BUFFER_OFFSET: u64 = 0x80;
/// The command and response buffer's size: what the TPM is told its commands may take.
pub const BUFFER_SIZE: usize = (CRB_SIZE - BUFFER_OFFSET) as usize;

// Register offsets.
const LOC_STATE: u64 = 0x00;
const LOC_CTRL: u64 = 0x08;
const LOC_STS: u64 = 0x0c;
const INTF_ID: u64 = 0x30;
const INTF_ID_HIGH: u64 = 0x34;
const CTRL_REQ: u64 = 0x40;
const CTRL_STS: u64 = 0x44;
const CTRL_CANCEL: u64 = 0x48;
const CTRL_START: u64 = 0x4c;
const INT_ENABLE: u64 = 0x50;
const CMD_SIZE: u64 = 0x58;
const CMD_LADDR: u64 = 0x5c;
const RSP_SIZE: u64 = 0x64;
const RSP_ADDR: u64 = 0x68;

// LOC_STATE: tpmEstablished (1: no dynamic root of trust was launched, which is never here),
// locAssigned, and tpmRegValidSts (the registers can be read).
const LOC_STATE_ESTABLISHED: u32 = 1 << 0;
const LOC_STATE_ASSIGNED: u32 = 1 << 1;
const LOC_STATE_VALID: u32 = 1 << 7;
// LOC_CTRL's requests, and LOC_STS's Granted.
const LOC_CTRL_REQUEST: u32 = 1 << 0;
const LOC_CTRL_RELINQUISH: u32 = 1 << 1;
const LOC_STS_GRANTED: u32 = 1 << 0;
// CTRL_REQ's requests, and CTRL_STS's bits.
const REQ_CMD_READY: u32 = 1 << 0;
const REQ_GO_IDLE: u32 = 1 << 1;
const STS_FATAL: u32 = 1 << 0;
const STS_IDLE: u32 = 1 << 1;
/// INTF_ID: a CRB interface (type 1, version 1), 64-byte transfers (3 << 11), CRB supported
/// (bit 14) and selected (1 << 17), locality 0 only, no idle bypass.
const INTF_ID_LOW: u32 = 1 | 1 << 4 | 3 << 11 | 1 << 14 | 1 << 17;
/// Vendor and device IDs: IBM's 0x1014, device 1, what QEMU's CRB reports with the same
/// swtpm behind it; drivers match on nothing else here.
const INTF_ID_VENDOR: u32 = 0x1014 | 1 << 16;

/// TPM response codes the device answers with itself: a command whose header's size does not
/// fit the buffer, and a TPM that is gone.
const TPM_RC_COMMAND_SIZE: u32 = 0x142;
const TPM_RC_FAILURE: u32 = 0x101;
/// The tag of a response without sessions.
const TPM_ST_NO_SESSIONS: u16 = 0x8001;

/// Work for the TPM thread, in the order the guest caused it.
#[derive(Debug)]
pub enum Job {
    /// A command from the buffer; `generation` tells a response that outlived a reset.
    Command {
        /// The device's generation when the command started.
        generation: u64,
        /// The command's bytes.
        bytes: Vec<u8>,
    },
    /// The machine was reset: the TPM too.
    Reset,
    /// The VM ends: close the TPM.
    Stop,
}

/// The CRB device.
pub struct Crb {
    buffer: Box<[u8; BUFFER_SIZE]>,
    jobs: Sender<Job>,
    /// Bumped at each reset, so that a command in flight across it is dropped.
    generation: u64,
    assigned: bool,
    idle: bool,
    /// A command is with the TPM.
    started: bool,
    /// The TPM failed (swtpm ended or stopped answering); every command fails from then on,
    /// until the VM is started again.
    failed: bool,
    int_enable: u32,
    ignored: RateLimiter,
}

impl Crb {
    /// A device handing its commands to `jobs`.
    pub fn new(jobs: Sender<Job>) -> Self {
        Self {
            buffer: Box::new([0; BUFFER_SIZE]),
            jobs,
            generation: 0,
            assigned: false,
            idle: true,
            started: false,
            failed: false,
            int_enable: 0,
            ignored: RateLimiter::new(10, Duration::from_secs(5)),
        }
    }

    /// Locality 0's register `offset` (4-byte aligned, below the buffer).
    fn register(&self, offset: u64) -> u32 {
        match offset {
            LOC_STATE => {
                LOC_STATE_ESTABLISHED
                    | LOC_STATE_VALID
                    | (u32::from(self.assigned) * LOC_STATE_ASSIGNED)
            }
            LOC_STS => u32::from(self.assigned) * LOC_STS_GRANTED,
            INTF_ID => INTF_ID_LOW,
            INTF_ID_HIGH => INTF_ID_VENDOR,
            CTRL_STS => (u32::from(self.failed) * STS_FATAL) | (u32::from(self.idle) * STS_IDLE),
            CTRL_START => u32::from(self.started),
            INT_ENABLE => self.int_enable,
            CMD_SIZE | RSP_SIZE => BUFFER_SIZE as u32,
            CMD_LADDR | RSP_ADDR => (CRB_BASE + BUFFER_OFFSET) as u32,
            // CTRL_REQ and CTRL_CANCEL read 0 once acted on (at once, here); the high halves
            // of the buffer addresses, CTRL_EXT, INT_STS and the reserved words are 0.
            _ => 0,
        }
    }

    fn write_register(&mut self, offset: u64, value: u32) {
        match offset {
            LOC_CTRL if value & LOC_CTRL_REQUEST != 0 => self.assigned = true,
            LOC_CTRL if value & LOC_CTRL_RELINQUISH != 0 => self.assigned = false,
            CTRL_REQ if value & REQ_CMD_READY != 0 => self.idle = false,
            CTRL_REQ if value & REQ_GO_IDLE != 0 => self.idle = true,
            // Not passed on: swtpm's cancel goes over its control channel, which belongs to
            // the TPM thread, busy with the command itself; the command completes normally.
            CTRL_CANCEL if value & 1 != 0 => tracing::debug!("TPM: cancel requested, ignored"),
            CTRL_START if value & 1 != 0 && !self.started => self.start(),
            INT_ENABLE => self.int_enable = value,
            _ => {}
        }
    }

    /// The guest's command goes to the TPM, unless it cannot be one (its header's size
    /// below a header or past the buffer) or the TPM has failed: then the device answers.
    fn start(&mut self) {
        if !self.assigned {
            return self.note_ignored("START without the locality assigned");
        }
        let size = be32(&self.buffer[2..6]) as usize;
        if self.failed {
            return self.answer(TPM_RC_FAILURE);
        }
        if !(HEADER_LEN..=BUFFER_SIZE).contains(&size) {
            return self.answer(TPM_RC_COMMAND_SIZE);
        }
        self.started = true;
        let job = Job::Command {
            generation: self.generation,
            bytes: self.buffer[..size].to_vec(),
        };
        if self.jobs.send(job).is_err() {
            self.started = false;
            self.fail("the TPM thread is gone");
        }
    }

    /// The TPM thread's answer to the command of `generation`.
    pub fn complete(&mut self, generation: u64, response: Result<Vec<u8>, SwtpmError>) {
        if generation != self.generation || !self.started {
            return;
        }
        self.started = false;
        match response {
            Ok(r) if r.len() <= BUFFER_SIZE => self.buffer[..r.len()].copy_from_slice(&r),
            Ok(r) => self.fail(&format!("a {}-byte response", r.len())),
            Err(e) => self.fail(&e.to_string()),
        }
    }

    /// The TPM failed: logged once, and every command answered with a failure from now on.
    pub fn fail(&mut self, why: &str) {
        if !self.failed {
            tracing::error!(
                error = why,
                "the TPM failed; its commands fail until the VM starts again"
            );
        }
        self.failed = true;
        self.answer(TPM_RC_FAILURE);
    }

    /// A response with no body and `code`, written by the device itself.
    fn answer(&mut self, code: u32) {
        self.started = false;
        self.buffer[..2].copy_from_slice(&TPM_ST_NO_SESSIONS.to_be_bytes());
        self.buffer[2..6].copy_from_slice(&(HEADER_LEN as u32).to_be_bytes());
        self.buffer[6..10].copy_from_slice(&code.to_be_bytes());
    }

    fn note_ignored(&mut self, what: &str) {
        if let Verdict::Log { suppressed } = self.ignored.check(Instant::now()) {
            tracing::debug!(what, suppressed, "TPM: guest access ignored");
        }
    }
}

impl BusDevice for Crb {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let end = offset.saturating_add(data.len() as u64);
        if offset >= BUFFER_OFFSET && end <= CRB_SIZE {
            let at = (offset - BUFFER_OFFSET) as usize;
            data.copy_from_slice(&self.buffer[at..at + data.len()]);
            return;
        }
        // Registers: byte by byte from the words they sit in (8-byte reads of RSP_ADDR, and
        // reads straddling the buffer's start, included).
        for (i, byte) in data.iter_mut().enumerate() {
            let at = offset.saturating_add(i as u64);
            *byte = if at < BUFFER_OFFSET {
                self.register(at & !3).to_le_bytes()[(at & 3) as usize]
            } else if at < CRB_SIZE {
                self.buffer[(at - BUFFER_OFFSET) as usize]
            } else {
                0xff
            };
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let end = offset.saturating_add(data.len() as u64);
        if offset >= BUFFER_OFFSET && end <= CRB_SIZE {
            // The buffer belongs to the TPM while a command runs.
            if self.started {
                return self.note_ignored("buffer written during a command");
            }
            let at = (offset - BUFFER_OFFSET) as usize;
            self.buffer[at..at + data.len()].copy_from_slice(data);
            return;
        }
        if offset & 3 != 0 || data.len() > 4 || end > BUFFER_OFFSET {
            return self.note_ignored("unaligned or wide register write");
        }
        let mut v = [0u8; 4];
        v[..data.len()].copy_from_slice(data);
        self.write_register(offset, u32::from_le_bytes(v));
    }

    fn reset(&mut self) {
        self.generation += 1;
        self.assigned = false;
        self.idle = true;
        self.started = false;
        self.int_enable = 0;
        self.buffer.fill(0);
        if !self.failed && self.jobs.send(Job::Reset).is_err() {
            self.fail("the TPM thread is gone");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc::{channel, Receiver};

    use super::*;

    fn rd(d: &mut Crb, offset: u64) -> u32 {
        let mut b = [0u8; 4];
        d.read(offset, &mut b);
        u32::from_le_bytes(b)
    }

    fn wr(d: &mut Crb, offset: u64, v: u32) {
        d.write(offset, &v.to_le_bytes());
    }

    fn device() -> (Crb, Receiver<Job>) {
        let (tx, rx) = channel();
        (Crb::new(tx), rx)
    }

    /// TPM2_GetRandom(8).
    const GET_RANDOM: [u8; 12] = [0x80, 1, 0, 0, 0, 12, 0, 0, 1, 0x7b, 0, 8];

    #[test]
    fn a_driver_sequence_reaches_the_tpm_and_reads_the_answer() {
        let (mut d, jobs) = device();
        assert_eq!(rd(&mut d, INTF_ID) & 0xf, 1, "a CRB interface");
        assert_eq!(
            rd(&mut d, LOC_STATE),
            LOC_STATE_ESTABLISHED | LOC_STATE_VALID
        );
        wr(&mut d, LOC_CTRL, LOC_CTRL_REQUEST);
        assert_ne!(rd(&mut d, LOC_STATE) & LOC_STATE_ASSIGNED, 0);
        assert_eq!(rd(&mut d, LOC_STS), LOC_STS_GRANTED);
        assert_eq!(rd(&mut d, CTRL_STS), STS_IDLE);
        wr(&mut d, CTRL_REQ, REQ_CMD_READY);
        assert_eq!(rd(&mut d, CTRL_REQ), 0, "the request is taken at once");
        assert_eq!(rd(&mut d, CTRL_STS), 0, "ready, not idle");
        // Linux reads the buffer's address with one 8-byte read.
        let mut addr = [0u8; 8];
        d.read(RSP_ADDR, &mut addr);
        assert_eq!(u64::from_le_bytes(addr), CRB_BASE + BUFFER_OFFSET);
        assert_eq!(rd(&mut d, CMD_SIZE), BUFFER_SIZE as u32);
        d.write(BUFFER_OFFSET, &GET_RANDOM);
        wr(&mut d, CTRL_START, 1);
        assert_eq!(rd(&mut d, CTRL_START), 1);
        let Ok(Job::Command { generation, bytes }) = jobs.try_recv() else {
            panic!("no command sent")
        };
        assert_eq!(bytes, GET_RANDOM);
        // While it runs, the buffer is the TPM's and START stays set.
        d.write(BUFFER_OFFSET, &[0xee; 4]);
        wr(&mut d, CTRL_START, 1);
        assert!(jobs.try_recv().is_err(), "one command at a time");
        let response = vec![0x80, 1, 0, 0, 0, 12, 0, 0, 0, 0, 0xab, 0xcd];
        d.complete(generation, Ok(response.clone()));
        assert_eq!(rd(&mut d, CTRL_START), 0);
        let mut got = [0u8; 12];
        d.read(BUFFER_OFFSET, &mut got);
        assert_eq!(got.to_vec(), response);
        wr(&mut d, CTRL_REQ, REQ_GO_IDLE);
        wr(&mut d, LOC_CTRL, LOC_CTRL_RELINQUISH);
        assert_eq!(rd(&mut d, CTRL_STS), STS_IDLE);
        assert_eq!(rd(&mut d, LOC_STS), 0);
    }

    fn response_code(d: &mut Crb) -> u32 {
        let mut h = [0u8; HEADER_LEN];
        d.read(BUFFER_OFFSET, &mut h);
        u32::from_be_bytes([h[6], h[7], h[8], h[9]])
    }

    #[test]
    fn a_command_that_cannot_be_one_is_answered_by_the_device() {
        let (mut d, jobs) = device();
        wr(&mut d, LOC_CTRL, LOC_CTRL_REQUEST);
        for size in [0u32, 9, BUFFER_SIZE as u32 + 1, u32::MAX] {
            d.write(BUFFER_OFFSET + 2, &size.to_be_bytes());
            wr(&mut d, CTRL_START, 1);
            assert_eq!(rd(&mut d, CTRL_START), 0, "size {size}");
            assert_eq!(response_code(&mut d), TPM_RC_COMMAND_SIZE, "size {size}");
        }
        assert!(jobs.try_recv().is_err(), "nothing reached the TPM");
        // Without the locality, START does nothing.
        wr(&mut d, LOC_CTRL, LOC_CTRL_RELINQUISH);
        d.write(BUFFER_OFFSET, &GET_RANDOM);
        wr(&mut d, CTRL_START, 1);
        assert_eq!(rd(&mut d, CTRL_START), 0);
        assert!(jobs.try_recv().is_err());
    }

    #[test]
    fn a_failed_tpm_fails_every_command_after() {
        let (mut d, jobs) = device();
        wr(&mut d, LOC_CTRL, LOC_CTRL_REQUEST);
        d.write(BUFFER_OFFSET, &GET_RANDOM);
        wr(&mut d, CTRL_START, 1);
        let Ok(Job::Command { generation, .. }) = jobs.try_recv() else {
            panic!("no command sent")
        };
        let gone = std::io::Error::from(std::io::ErrorKind::BrokenPipe);
        d.complete(generation, Err(SwtpmError::Io("data", gone)));
        assert_eq!(rd(&mut d, CTRL_START), 0);
        assert_eq!(rd(&mut d, CTRL_STS) & STS_FATAL, STS_FATAL);
        assert_eq!(response_code(&mut d), TPM_RC_FAILURE);
        d.write(BUFFER_OFFSET, &GET_RANDOM);
        wr(&mut d, CTRL_START, 1);
        assert_eq!(response_code(&mut d), TPM_RC_FAILURE);
        assert!(jobs.try_recv().is_err(), "a failed TPM gets no more work");
    }

    #[test]
    fn a_reset_drops_the_command_in_flight_and_resets_the_tpm() {
        let (mut d, jobs) = device();
        wr(&mut d, LOC_CTRL, LOC_CTRL_REQUEST);
        wr(&mut d, CTRL_REQ, REQ_CMD_READY);
        d.write(BUFFER_OFFSET, &GET_RANDOM);
        wr(&mut d, CTRL_START, 1);
        let Ok(Job::Command { generation, .. }) = jobs.try_recv() else {
            panic!("no command sent")
        };
        d.reset();
        assert!(matches!(jobs.try_recv(), Ok(Job::Reset)));
        assert_eq!(rd(&mut d, LOC_STATE) & LOC_STATE_ASSIGNED, 0);
        assert_eq!(rd(&mut d, CTRL_STS), STS_IDLE);
        // The old command's answer comes back after the reset: dropped.
        d.complete(generation, Ok(vec![0x80, 1, 0, 0, 0, 10, 0, 0, 0, 0]));
        let mut b = [0u8; HEADER_LEN];
        d.read(BUFFER_OFFSET, &mut b);
        assert_eq!(b, [0; HEADER_LEN]);
    }

    #[test]
    fn odd_accesses_neither_panic_nor_change_state() {
        let (mut d, jobs) = device();
        for offset in [
            0u64,
            1,
            3,
            0x3f,
            0x7c,
            0x7f,
            0xffc,
            0xfff,
            0x1000,
            u64::MAX - 2,
        ] {
            for len in [1usize, 2, 4, 8] {
                let mut b = vec![0u8; len];
                d.read(offset, &mut b);
                d.write(offset, &[0xff; 8][..len]);
            }
        }
        // Unaligned or wide writes to registers were ignored: no locality, nothing started.
        assert_eq!(rd(&mut d, LOC_STATE) & LOC_STATE_ASSIGNED, 0);
        assert!(jobs.try_recv().is_err());
    }
}
