//! The command ring (xHCI 1.2, 4.6): slots enabled and disabled, devices addressed,
//! endpoints configured, evaluated, stopped, reset and moved. Each command ends with a
//! Command Completion Event; one a guest got wrong ends with the code the specification
//! gives it, and the controller goes on.

use super::context::{self, slot_state, EpState};
use super::controller::{Controller, Endpoint, Slot, MAX_SLOTS, PORTS};
use super::ring::{Ring, RingError};
use super::trb::{flag, kind, Completion, Trb};

/// Commands run per doorbell: the rest wait for the next ring of it.
const COMMANDS_PER_DOORBELL: usize = 256;

/// Why a command failed: its completion code, or a memory access that failed.
enum Failure {
    Code(Completion),
    Memory(RingError),
}

impl From<RingError> for Failure {
    fn from(e: RingError) -> Self {
        Failure::Memory(e)
    }
}

impl From<Completion> for Failure {
    fn from(c: Completion) -> Self {
        Failure::Code(c)
    }
}

type Outcome = Result<u8, Failure>;

impl Controller {
    /// The host controller's doorbell: runs the commands the driver handed over.
    pub(super) fn run_commands(&mut self) {
        self.crr = true;
        for _ in 0..COMMANDS_PER_DOORBELL {
            let (at, trb) = match self.command_ring.next(&self.mem) {
                Ok(Some(t)) => t,
                Ok(None) => return,
                Err(e) => return self.host_error(e),
            };
            let (code, slot) = match self.command(&trb) {
                Ok(slot) => (Completion::Success, slot),
                Err(Failure::Code(c)) => (c, trb.slot()),
                // A context outside guest memory: the command's parameters are wrong.
                Err(Failure::Memory(e)) => {
                    tracing::debug!(error = %e, "xHCI: command on a bad context");
                    (Completion::Parameter, trb.slot())
                }
            };
            tracing::debug!(command = trb.kind(), slot, code = ?code, "xHCI: command");
            self.post(Trb::command_completion(at, code, slot));
        }
    }

    fn command(&mut self, trb: &Trb) -> Outcome {
        match trb.kind() {
            kind::ENABLE_SLOT => self.enable_slot(),
            kind::DISABLE_SLOT => {
                let id = self.slot_id(trb)?;
                self.slots[usize::from(id) - 1] = Slot::default();
                Ok(id)
            }
            kind::ADDRESS_DEVICE => self.address_device(trb),
            kind::CONFIGURE_ENDPOINT => self.configure_endpoint(trb),
            kind::EVALUATE_CONTEXT => self.evaluate_context(trb),
            kind::RESET_ENDPOINT => self.endpoint_command(trb, |ep, _| {
                (ep.state == EpState::Halted).then_some(EpState::Stopped)
            }),
            kind::STOP_ENDPOINT => self.endpoint_command(trb, |ep, _| {
                (ep.state == EpState::Running).then_some(EpState::Stopped)
            }),
            kind::SET_TR_DEQUEUE => self.endpoint_command(trb, |ep, trb| {
                (ep.state == EpState::Stopped).then(|| {
                    ep.ring = Ring::at(trb.parameter & !0xe);
                    EpState::Stopped
                })
            }),
            kind::RESET_DEVICE => self.reset_device(trb),
            kind::GET_PORT_BANDWIDTH => self.port_bandwidth(trb),
            kind::NOOP_COMMAND => Ok(0),
            _ => Err(Completion::TrbError.into()),
        }
    }

    /// The enabled slot a command names.
    fn slot_id(&self, trb: &Trb) -> Result<u8, Failure> {
        let id = trb.slot();
        let ok = (1..=MAX_SLOTS).contains(&usize::from(id)) && self.slot(id).enabled;
        if ok {
            Ok(id)
        } else {
            Err(Completion::SlotNotEnabled.into())
        }
    }

    pub(super) fn slot(&self, id: u8) -> &Slot {
        &self.slots[usize::from(id) - 1]
    }

    fn slot_mut(&mut self, id: u8) -> &mut Slot {
        &mut self.slots[usize::from(id) - 1]
    }

    fn enable_slot(&mut self) -> Outcome {
        let limit = (self.max_slots_enabled()).min(MAX_SLOTS);
        let free = self.slots[..limit].iter().position(|s| !s.enabled);
        let i = free.ok_or(Failure::Code(Completion::NoSlots))?;
        self.slots[i] = Slot {
            enabled: true,
            state: slot_state::ENABLED,
            ..Slot::default()
        };
        Ok(i as u8 + 1)
    }

    /// Writes a slot's output slot context's dword 3 (state and address) and context entries.
    fn write_slot_state(&self, id: u8, entries: Option<u32>) -> Result<(), RingError> {
        let slot = self.slot(id);
        let at = context::output(slot.context, 0);
        let mut c = context::read(&self.mem, at)?;
        let address = match slot.state {
            slot_state::ADDRESSED | slot_state::CONFIGURED => u32::from(id),
            _ => 0,
        };
        c[3] = slot.state << 27 | address;
        if let Some(n) = entries {
            c[0] = (c[0] & 0x07ff_ffff) | n << 27;
        }
        context::write(&self.mem, at, &c)
    }

    /// Writes an endpoint's state (and dequeue pointer) into its output context.
    pub(super) fn write_ep_state(&self, id: u8, dci: u8) -> Result<(), RingError> {
        let slot = self.slot(id);
        let ep = slot.endpoints[usize::from(dci)];
        let at = context::output(slot.context, dci);
        let mut c = context::read(&self.mem, at)?;
        context::set_ep_state(&mut c, ep.state);
        context::set_dequeue(&mut c, ep.ring.pointer());
        context::write(&self.mem, at, &c)
    }

    /// Copies endpoint `dci` from the input context at `input` to the slot's output context,
    /// running, its ring where the context says.
    fn add_endpoint(&mut self, id: u8, input: u64, dci: u8) -> Result<(), RingError> {
        let mut c = context::read(&self.mem, context::input(input, dci))?;
        let ring = Ring::at(context::dequeue(&c));
        context::set_ep_state(&mut c, EpState::Running);
        context::write(&self.mem, context::output(self.slot(id).context, dci), &c)?;
        self.slot_mut(id).endpoints[usize::from(dci)] = Endpoint {
            state: EpState::Running,
            ring,
            polled: false,
        };
        Ok(())
    }

    fn address_device(&mut self, trb: &Trb) -> Outcome {
        let id = self.slot_id(trb)?;
        if !matches!(
            self.slot(id).state,
            slot_state::ENABLED | slot_state::DEFAULT
        ) || (self.slot(id).state == slot_state::DEFAULT && trb.has(flag::BSR))
        {
            return Err(Completion::ContextState.into());
        }
        let input = trb.parameter & !0xf;
        let control = context::read(&self.mem, input)?;
        if control[1] & 0b11 != 0b11 {
            return Err(Completion::Parameter.into());
        }
        let mut slot_ctx = context::read(&self.mem, context::input(input, 0))?;
        let port = ((slot_ctx[1] >> 16) & 0xff) as usize;
        let usable = (1..=PORTS).contains(&port)
            && self.ports[port - 1].enabled
            && port - 1 < self.devices.len();
        if !usable {
            return Err(Completion::Transaction.into());
        }
        let output = self.dcbaa_entry(id)?;
        let state = if trb.has(flag::BSR) {
            slot_state::DEFAULT
        } else {
            slot_state::ADDRESSED
        };
        slot_ctx[3] = state << 27
            | if state == slot_state::ADDRESSED {
                u32::from(id)
            } else {
                0
            };
        context::write(&self.mem, context::output(output, 0), &slot_ctx)?;
        let slot = self.slot_mut(id);
        slot.context = output;
        slot.port = Some(port - 1);
        slot.state = state;
        self.add_endpoint(id, input, 1)?;
        Ok(id)
    }

    /// The slot's output device context, from the DCBAA.
    fn dcbaa_entry(&self, id: u8) -> Result<u64, Failure> {
        use vm_memory::{Bytes, GuestAddress};
        let at = self.dcbaap.wrapping_add(8 * u64::from(id));
        let mut b = [0u8; 8];
        self.mem
            .read_slice(&mut b, GuestAddress(at))
            .map_err(|_| RingError::Memory(at))?;
        let p = u64::from_le_bytes(b) & !0x3f;
        if p == 0 {
            return Err(Completion::Parameter.into());
        }
        Ok(p)
    }

    fn configure_endpoint(&mut self, trb: &Trb) -> Outcome {
        let id = self.slot_id(trb)?;
        if !matches!(
            self.slot(id).state,
            slot_state::ADDRESSED | slot_state::CONFIGURED
        ) {
            return Err(Completion::ContextState.into());
        }
        let (drop, add, entries) = if trb.has(flag::DECONFIGURE) {
            (!0b11, 0, Some(1))
        } else {
            let input = trb.parameter & !0xf;
            let control = context::read(&self.mem, input)?;
            let entries = if control[1] & 1 != 0 {
                Some(context::read(&self.mem, context::input(input, 0))?[0] >> 27)
            } else {
                None
            };
            for dci in 2..32u8 {
                if control[1] & 1 << dci != 0 {
                    self.add_endpoint(id, input, dci)?;
                }
            }
            (control[0] & !0b11, control[1] & !0b11, entries)
        };
        for dci in 2..32u8 {
            if drop & 1 << dci != 0 && add & 1 << dci == 0 {
                self.slot_mut(id).endpoints[usize::from(dci)] = Endpoint::default();
                self.write_ep_state(id, dci)?;
            }
        }
        let any = self.slot(id).endpoints[2..]
            .iter()
            .any(|e| e.state != EpState::Disabled);
        self.slot_mut(id).state = if any {
            slot_state::CONFIGURED
        } else {
            slot_state::ADDRESSED
        };
        self.write_slot_state(id, entries)?;
        Ok(id)
    }

    fn evaluate_context(&mut self, trb: &Trb) -> Outcome {
        let id = self.slot_id(trb)?;
        if self.slot(id).state == slot_state::ENABLED {
            return Err(Completion::ContextState.into());
        }
        let input = trb.parameter & !0xf;
        let control = context::read(&self.mem, input)?;
        let base = self.slot(id).context;
        if control[1] & 1 != 0 {
            // Max exit latency and the interrupter target.
            let from = context::read(&self.mem, context::input(input, 0))?;
            let at = context::output(base, 0);
            let mut c = context::read(&self.mem, at)?;
            c[1] = (c[1] & !0xffff) | (from[1] & 0xffff);
            c[2] = (c[2] & 0x003f_ffff) | (from[2] & !0x003f_ffff);
            context::write(&self.mem, at, &c)?;
        }
        if control[1] & 2 != 0 {
            // Endpoint 0's max packet size.
            let from = context::read(&self.mem, context::input(input, 1))?;
            let at = context::output(base, 1);
            let mut c = context::read(&self.mem, at)?;
            c[1] = (c[1] & 0xffff) | (from[1] & 0xffff_0000);
            context::write(&self.mem, at, &c)?;
        }
        Ok(id)
    }

    /// A command on one endpoint: `change` gives the new state, or `None` when the endpoint
    /// is in a state the command does not apply to (Context State Error).
    fn endpoint_command(
        &mut self,
        trb: &Trb,
        change: impl FnOnce(&mut Endpoint, &Trb) -> Option<EpState>,
    ) -> Outcome {
        let id = self.slot_id(trb)?;
        let dci = trb.endpoint();
        if dci == 0 || self.slot(id).context == 0 {
            return Err(Completion::TrbError.into());
        }
        let ep = &mut self.slot_mut(id).endpoints[usize::from(dci)];
        if ep.state == EpState::Disabled {
            return Err(Completion::EndpointNotEnabled.into());
        }
        let state = change(ep, trb).ok_or(Failure::Code(Completion::ContextState))?;
        ep.state = state;
        self.write_ep_state(id, dci)?;
        Ok(id)
    }

    /// Get Port Bandwidth (4.6.15): a byte per root hub port after a reserved one, the share
    /// of the bus left; nothing here is scheduled in time, so all of it.
    fn port_bandwidth(&mut self, trb: &Trb) -> Outcome {
        use vm_memory::{Bytes, GuestAddress};
        let mut context = [100u8; PORTS + 1];
        context[0] = 0;
        let at = trb.parameter & !0xf;
        self.mem
            .write_slice(&context, GuestAddress(at))
            .map_err(|_| RingError::Memory(at))?;
        Ok(0)
    }

    fn reset_device(&mut self, trb: &Trb) -> Outcome {
        let id = self.slot_id(trb)?;
        if self.slot(id).state == slot_state::ENABLED || self.slot(id).state == slot_state::DEFAULT
        {
            return Err(Completion::ContextState.into());
        }
        let slot = self.slot_mut(id);
        slot.state = slot_state::DEFAULT;
        for ep in &mut slot.endpoints[2..] {
            *ep = Endpoint::default();
        }
        for dci in 2..32 {
            self.write_ep_state(id, dci)?;
        }
        self.write_slot_state(id, Some(1))?;
        Ok(id)
    }
}
