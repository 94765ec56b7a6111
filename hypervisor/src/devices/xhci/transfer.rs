//! Transfers (xHCI 1.2, 4.11): control transfers on endpoint 0 (a Setup Stage, Data Stage
//! TRBs, a Status Stage) answered by the device at once, and reports on the interrupt IN
//! endpoint, written into the next transfer the driver queued as soon as the device has one.
//! A transfer the driver has not finished writing waits for the next doorbell.

use vm_memory::{Bytes, GuestAddress};

use super::context::EpState;
use super::controller::{Controller, MAX_SLOTS};
use super::ring::RingError;
use super::trb::{flag, kind, Completion, Trb};
use crate::devices::usb::{Control, Setup};

/// The HID devices' interrupt IN endpoint (endpoint 1 IN).
pub const REPORT_DCI: usize = 3;
/// TRBs one TD may have.
const TD_MAX: usize = 64;
/// TDs run per doorbell.
const TDS_PER_DOORBELL: usize = 64;
/// Bytes of a control transfer's OUT data the controller takes.
const CONTROL_OUT_MAX: usize = 4096;

/// The TRBs of one TD (or of a control transfer's stages), with their addresses.
type Td = Vec<(u64, Trb)>;

impl Controller {
    /// A slot's doorbell for endpoint `dci`.
    pub(super) fn run_endpoint(&mut self, id: u8, dci: u8) {
        if !(1..=MAX_SLOTS).contains(&usize::from(id)) || !(1..32).contains(&dci) {
            return;
        }
        let slot = self.slot(id);
        let (Some(port), true) = (slot.port, slot.enabled) else {
            tracing::debug!(slot = id, dci, "xHCI: doorbell of a slot without a device");
            return;
        };
        let ep = slot.endpoints[usize::from(dci)];
        tracing::trace!(slot = id, dci, state = ?ep.state, ring = format_args!("{:#x}", ep.ring.pointer()), "xHCI: doorbell");
        if ep.state == EpState::Stopped {
            // Ringing a stopped endpoint's doorbell runs it again.
            self.slots[usize::from(id) - 1].endpoints[usize::from(dci)].state = EpState::Running;
            if let Err(e) = self.write_ep_state(id, dci) {
                return self.host_error(e);
            }
        } else if ep.state != EpState::Running {
            return;
        }
        if usize::from(dci) == REPORT_DCI {
            self.slots[usize::from(id) - 1].endpoints[REPORT_DCI].polled = true;
        }
        let result = match usize::from(dci) {
            1 => self.run_control(id, port),
            REPORT_DCI => self.run_reports(id, port),
            _ => self.run_absent(id, dci),
        };
        if let Err(e) = result {
            self.host_error(e);
        }
    }

    /// Reads the next TD of endpoint `dci`: its TRBs up to one without the chain bit.
    /// Returns the TD and the ring after it, without taking it; `None` while the driver has
    /// not handed over all of it.
    fn peek_td(&self, id: u8, dci: usize) -> Result<Option<(Td, super::ring::Ring)>, RingError> {
        let mut ring = self.slot(id).endpoints[dci].ring;
        let mut td = Vec::new();
        loop {
            let Some((at, trb)) = ring.next(&self.mem)? else {
                return Ok(None);
            };
            td.push((at, trb));
            if !trb.has(flag::CHAIN) || td.len() == TD_MAX {
                return Ok(Some((td, ring)));
            }
        }
    }

    fn set_ring(&mut self, id: u8, dci: usize, ring: super::ring::Ring) {
        self.slots[usize::from(id) - 1].endpoints[dci].ring = ring;
    }

    /// Halts endpoint `dci` (a stall or an error): it runs no more until the driver resets it.
    fn halt(&mut self, id: u8, dci: u8) -> Result<(), RingError> {
        self.slots[usize::from(id) - 1].endpoints[usize::from(dci)].state = EpState::Halted;
        self.write_ep_state(id, dci)?;
        Ok(())
    }

    /// Control transfers on endpoint 0.
    fn run_control(&mut self, id: u8, port: usize) -> Result<(), RingError> {
        for _ in 0..TDS_PER_DOORBELL {
            let mut ring = self.slot(id).endpoints[1].ring;
            let Some((setup_at, setup)) = ring.next(&self.mem)? else {
                return Ok(());
            };
            if setup.kind() != kind::SETUP
                || !setup.has(flag::IMMEDIATE)
                || setup.transfer_len() != 8
            {
                // Not a control transfer: the TRB is an error, the endpoint goes on.
                self.set_ring(id, 1, ring);
                self.post(Trb::transfer_event(
                    setup_at,
                    0,
                    Completion::TrbError,
                    id,
                    1,
                ));
                continue;
            }
            // The stages: data TRBs up to the Status Stage.
            let mut stages = Td::new();
            let status = loop {
                let Some((at, trb)) = ring.next(&self.mem)? else {
                    return Ok(());
                };
                match trb.kind() {
                    kind::STATUS => break (at, trb),
                    kind::DATA | kind::NORMAL | kind::EVENT_DATA | kind::NOOP
                        if stages.len() < TD_MAX =>
                    {
                        stages.push((at, trb))
                    }
                    _ => {
                        self.set_ring(id, 1, ring);
                        self.post(Trb::transfer_event(at, 0, Completion::TrbError, id, 1));
                        return self.halt(id, 1);
                    }
                }
            };
            self.set_ring(id, 1, ring);
            let request = Setup::from_u64(setup.parameter);
            let out = if request.is_in() {
                Vec::new()
            } else {
                self.gather_out(&stages, usize::from(request.length))
            };
            let answer = match self.devices.get_mut(port) {
                Some(d) => d.control(&request, &out),
                None => Control::Stall,
            };
            if setup.has(flag::IOC) {
                self.post(Trb::transfer_event(setup_at, 0, Completion::Success, id, 1));
            }
            match answer {
                Control::Stall => {
                    let (at, trb) = stages.first().copied().unwrap_or(status);
                    self.post(Trb::transfer_event(
                        at,
                        trb.transfer_len(),
                        Completion::Stall,
                        id,
                        1,
                    ));
                    return self.halt(id, 1);
                }
                Control::In(data) => self.complete(id, 1, &stages, &data, true),
                Control::Ok => self.complete(id, 1, &stages, &out, false),
            }
            if status.1.has(flag::IOC) {
                self.post(Trb::transfer_event(status.0, 0, Completion::Success, id, 1));
            }
        }
        Ok(())
    }

    /// The OUT data of a control transfer's data stage, up to `len` bytes.
    fn gather_out(&self, stages: &Td, len: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let want = len.min(CONTROL_OUT_MAX);
        for (_, t) in stages {
            if !matches!(t.kind(), kind::DATA | kind::NORMAL) || out.len() >= want {
                continue;
            }
            let n = (t.transfer_len() as usize).min(want - out.len());
            if t.has(flag::IMMEDIATE) {
                out.extend_from_slice(&t.parameter.to_le_bytes()[..n.min(8)]);
            } else {
                let mut b = vec![0u8; n];
                // A buffer outside guest memory reads as zeros; the device gets what it asked.
                let _ = self.mem.read_slice(&mut b, GuestAddress(t.parameter));
                out.extend_from_slice(&b);
            }
        }
        out
    }

    /// Moves `data` through a TD's buffers (written to guest memory when `to_guest`; for
    /// OUT the data was taken already and only the lengths count), with the events its TRBs
    /// ask for: Success, or Short Packet with what was left, and Event Data TRBs' totals.
    fn complete(&mut self, id: u8, dci: u8, td: &Td, data: &[u8], to_guest: bool) {
        let mut done = 0usize;
        let mut since_event_data = 0u32;
        let mut short = false;
        for &(at, t) in td {
            match t.kind() {
                kind::NORMAL | kind::DATA => {
                    if short {
                        continue;
                    }
                    let len = t.transfer_len() as usize;
                    let n = len.min(data.len() - done);
                    if to_guest && n > 0 && !t.has(flag::IMMEDIATE) {
                        let written = self
                            .mem
                            .write_slice(&data[done..done + n], GuestAddress(t.parameter));
                        if written.is_err() {
                            self.post(Trb::transfer_event(
                                at,
                                len as u32,
                                Completion::DataBuffer,
                                id,
                                dci,
                            ));
                            return;
                        }
                    }
                    done += n;
                    since_event_data += n as u32;
                    if n < len {
                        short = true;
                        if t.has(flag::ISP) || t.has(flag::IOC) {
                            let residual = (len - n) as u32;
                            self.post(Trb::transfer_event(
                                at,
                                residual,
                                Completion::ShortPacket,
                                id,
                                dci,
                            ));
                        }
                    } else if t.has(flag::IOC) {
                        self.post(Trb::transfer_event(at, 0, Completion::Success, id, dci));
                    }
                }
                kind::EVENT_DATA => {
                    if t.has(flag::IOC) {
                        let code = if short {
                            Completion::ShortPacket
                        } else {
                            Completion::Success
                        };
                        self.post(Trb::event_data_event(
                            t.parameter,
                            since_event_data,
                            code,
                            id,
                            dci,
                        ));
                    }
                    since_event_data = 0;
                }
                kind::NOOP if t.has(flag::IOC) && !short => {
                    self.post(Trb::transfer_event(at, 0, Completion::Success, id, dci));
                }
                kind::NOOP => {}
                _ => self.post(Trb::transfer_event(at, 0, Completion::TrbError, id, dci)),
            }
        }
    }

    /// Reports on the interrupt IN endpoint, one per TD, while both are there.
    fn run_reports(&mut self, id: u8, port: usize) -> Result<(), RingError> {
        if port >= self.devices.len() {
            return self.run_absent(id, REPORT_DCI as u8);
        }
        let d = port;
        while self.devices[d].pending() > 0 {
            let Some((td, ring)) = self.peek_td(id, REPORT_DCI)? else {
                return Ok(());
            };
            self.set_ring(id, REPORT_DCI, ring);
            if let Some(report) = self.devices[d].take_report() {
                self.complete(id, REPORT_DCI as u8, &td, &report, true);
            }
        }
        Ok(())
    }

    /// TDs on an endpoint the device does not have: each fails as a transaction that got no
    /// answer, and the endpoint halts.
    fn run_absent(&mut self, id: u8, dci: u8) -> Result<(), RingError> {
        let Some((td, ring)) = self.peek_td(id, usize::from(dci))? else {
            return Ok(());
        };
        self.set_ring(id, usize::from(dci), ring);
        let (at, trb) = td[0];
        self.post(Trb::transfer_event(
            at,
            trb.transfer_len(),
            Completion::Transaction,
            id,
            dci,
        ));
        self.halt(id, dci)
    }

    /// The slot of the device on `port` whose report endpoint runs.
    pub(super) fn report_slot(&self, port: usize) -> Option<u8> {
        (1..=MAX_SLOTS as u8).find(|&id| {
            let s = self.slot(id);
            s.enabled && s.port == Some(port) && s.endpoints[REPORT_DCI].state == EpState::Running
        })
    }

    /// Hands the device on `port` its waiting reports, if its driver has a transfer queued.
    pub(super) fn deliver(&mut self, port: usize) {
        if !self.running() {
            return;
        }
        if let Some(id) = self.report_slot(port) {
            if let Err(e) = self.run_reports(id, port) {
                self.host_error(e);
            }
        }
    }
}
