//! The HBA's registers (AHCI 1.3.1, chapter 3): the generic host control block and six ports,
//! as the guest reads and writes them, and the hand-over of issued commands to the I/O thread.
//!
//! Commands are taken one at a time per HBA, in slot order from where the port last was; a
//! port's command list stops at a command that ends in error (PxIS.TFES) until the host clears
//! PxCMD.ST, as the specification has it (5.3.2.10). Native command queuing is not offered.
//!
//! A stop or reset while a command runs bumps the port's generation: the I/O thread's result
//! for the older command is dropped rather than written over the host's new state, and
//! PxCMD.CR reads 1 until that command has let go of guest memory.

use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::dma;
use super::drive::DriveKind;
use super::fis::{self, Registers};
use crate::devices::pci::register_bar::DwordRegisters;

/// Ports the HBA has (ICH9's six).
pub const PORTS: usize = 6;
/// Offset of port 0's registers.
pub const PORT_BASE: u64 = 0x100;
/// Bytes of one port's registers.
pub const PORT_LEN: u64 = 0x80;
/// End of the port registers.
pub const PORTS_END: u64 = PORT_BASE + PORTS as u64 * PORT_LEN;

/// CAP: 64-bit addressing, command list override, Gen2 speed, AHCI only, 32 slots, six ports.
const CAP: u32 = 1 << 31 | 1 << 24 | 2 << 20 | 1 << 18 | 31 << 8 | (PORTS as u32 - 1);
/// AHCI 1.3.1.
const VERSION: u32 = 0x0001_0301;

const GHC_HR: u32 = 1 << 0;
const GHC_IE: u32 = 1 << 1;
const GHC_AE: u32 = 1 << 31;

/// PxCMD bits.
mod pxcmd {
    pub const ST: u32 = 1 << 0;
    pub const SUD: u32 = 1 << 1;
    pub const POD: u32 = 1 << 2;
    pub const CLO: u32 = 1 << 3;
    pub const FRE: u32 = 1 << 4;
    pub const FR: u32 = 1 << 14;
    pub const CR: u32 = 1 << 15;
    /// Bits the host may set and read back: ST, FRE, ATAPI, DLAE, ALPE, ASP.
    pub const WRITABLE: u32 = ST | FRE | 0x0f00_0000;
}

/// PxIS bits.
pub mod pxis {
    /// A Register D2H FIS came in.
    pub const DHRS: u32 = 1 << 0;
    /// A PIO Setup FIS came in.
    pub const PSS: u32 = 1 << 1;
    /// Host bus fatal error: a guest memory access failed.
    pub const HBFS: u32 = 1 << 29;
    /// Task file error: the device ended a command with ERR.
    pub const TFES: u32 = 1 << 30;
    /// Bits that exist (the rest read 0).
    pub const VALID: u32 = 0xfdc0_00ff;
}

/// PxSSTS of a device that is present and talking: Gen2, active.
const SSTS_ACTIVE: u32 = 0x123;
/// PxSSTS of a disabled interface.
const SSTS_OFFLINE: u32 = 0x4;

/// One port.
#[derive(Debug, Default)]
struct Port {
    kind: Option<DriveKind>,
    clb: u64,
    fb: u64,
    is: u32,
    ie: u32,
    /// The host's bits of PxCMD (ST, FRE and the writable rest).
    cmd: u32,
    tfd: u32,
    sig: u32,
    ssts: u32,
    sctl: u32,
    serr: u32,
    sact: u32,
    ci: u32,
    /// PxCMD.CCS: the slot last taken.
    ccs: u8,
    /// The slot the I/O thread is running.
    running: Option<u8>,
    /// Stopped at a command that failed, until ST is cleared.
    halted: bool,
    /// The drive must be reset before its next command.
    reset_pending: bool,
    generation: u64,
}

impl Port {
    fn signature(&self) -> Registers {
        self.kind.map_or(
            Registers {
                status: 0x7f,
                ..Registers::default()
            },
            DriveKind::signature,
        )
    }

    /// The device's reset (power-on, COMRESET, HBA reset): the link comes up and the device
    /// reports its signature.
    fn reset_device(&mut self) {
        let sig = self.signature();
        self.tfd = sig.tfd();
        self.sig = match self.kind {
            Some(_) => (sig.lba as u32) << 8 | u32::from(sig.count),
            None => u32::MAX,
        };
        self.ssts = if self.kind.is_some() { SSTS_ACTIVE } else { 0 };
        self.stop();
        self.reset_pending = true;
    }

    /// ST cleared (or a reset): the command list is dropped.
    fn stop(&mut self) {
        self.ci = 0;
        self.sact = 0;
        self.ccs = 0;
        self.halted = false;
        self.generation += 1;
    }

    fn read_cmd(&self) -> u32 {
        let mut v = self.cmd | pxcmd::SUD | pxcmd::POD | u32::from(self.ccs) << 8;
        if self.cmd & pxcmd::ST != 0 || self.running.is_some() {
            v |= pxcmd::CR;
        }
        if self.cmd & pxcmd::FRE != 0 {
            v |= pxcmd::FR;
        }
        v
    }

    fn pending(&self) -> bool {
        self.is & self.ie != 0
    }

    fn runnable(&self) -> bool {
        self.kind.is_some()
            && self.cmd & pxcmd::ST != 0
            && !self.halted
            && self.running.is_none()
            && self.ci != 0
    }
}

/// A command handed to the I/O thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    /// Port.
    pub port: usize,
    /// Slot.
    pub slot: u8,
    /// The port's command list.
    pub list: u64,
    /// The port's generation when the command was taken.
    generation: u64,
    /// Reset the drive before running it.
    pub reset_drive: bool,
}

/// How a command ended, as the I/O thread reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    /// The device's registers.
    pub regs: Registers,
    /// Bytes moved (PxPRDBC).
    pub bytes: u32,
    /// A PIO data-in command: a PIO Setup FIS goes first.
    pub pio: bool,
    /// The command needs no FIS in return (a soft reset's first half).
    pub silent: bool,
    /// A guest memory access failed.
    pub fatal: bool,
}

/// The register file.
pub struct Hba {
    ghc: u32,
    is: u32,
    ports: [Port; PORTS],
    memory: GuestMemoryMmap,
    /// Wakes the I/O thread.
    kick: EventFd,
    /// Sends the HBA's interrupt.
    interrupt: Box<dyn Fn() + Send>,
    /// The interrupt condition held at the last update.
    asserted: bool,
    /// The port whose command was taken last: the next search starts after it, so that a
    /// busy port cannot starve the others.
    last_port: usize,
}

fn lo(v: u64) -> u32 {
    v as u32
}

fn hi(v: u64) -> u32 {
    (v >> 32) as u32
}

fn set_lo(v: &mut u64, x: u32) {
    *v = (*v & !0xffff_ffff) | u64::from(x);
}

fn set_hi(v: &mut u64, x: u32) {
    *v = (*v & 0xffff_ffff) | u64::from(x) << 32;
}

impl Hba {
    /// An HBA with devices of `kinds` on its first ports.
    pub fn new(
        kinds: &[DriveKind],
        memory: GuestMemoryMmap,
        kick: EventFd,
        interrupt: Box<dyn Fn() + Send>,
    ) -> Self {
        let mut ports: [Port; PORTS] = Default::default();
        for (p, k) in ports.iter_mut().zip(kinds) {
            p.kind = Some(*k);
        }
        let mut hba = Self {
            ghc: GHC_AE,
            is: 0,
            ports,
            memory,
            kick,
            interrupt,
            asserted: false,
            last_port: PORTS - 1,
        };
        hba.reset();
        hba
    }

    /// The HBA's reset (GHC.HR, the machine's reset): registers as at power-on, each device
    /// reset. Command list and FIS addresses are kept, as the specification allows.
    pub fn reset(&mut self) {
        self.ghc = GHC_AE;
        self.is = 0;
        self.asserted = false;
        for p in &mut self.ports {
            p.is = 0;
            p.ie = 0;
            p.cmd = 0;
            p.sctl = 0;
            p.serr = 0;
            p.reset_device();
        }
    }

    /// A 32-bit read at `offset` in the HBA's registers.
    pub fn read(&self, offset: u64) -> u32 {
        match offset {
            0x00 => CAP,
            0x04 => self.ghc,
            0x08 => self.is,
            0x0c => (1 << PORTS) - 1,
            0x10 => VERSION,
            PORT_BASE..PORTS_END => {
                let p = &self.ports[((offset - PORT_BASE) / PORT_LEN) as usize];
                match (offset - PORT_BASE) % PORT_LEN {
                    0x00 => lo(p.clb),
                    0x04 => hi(p.clb),
                    0x08 => lo(p.fb),
                    0x0c => hi(p.fb),
                    0x10 => p.is,
                    0x14 => p.ie,
                    0x18 => p.read_cmd(),
                    0x20 => p.tfd,
                    0x24 => p.sig,
                    0x28 => p.ssts,
                    0x2c => p.sctl,
                    0x30 => p.serr,
                    0x34 => p.sact,
                    0x38 => p.ci,
                    _ => 0,
                }
            }
            _ => 0,
        }
    }

    /// A 32-bit write of `v` at `offset`.
    pub fn write(&mut self, offset: u64, v: u32) {
        match offset {
            0x04 => {
                if v & GHC_HR != 0 {
                    self.reset();
                } else {
                    self.ghc = GHC_AE | (v & GHC_IE);
                }
                self.update_interrupt(false);
            }
            0x08 => {
                self.is &= !v;
                self.update_interrupt(false);
            }
            PORT_BASE..PORTS_END => {
                let index = ((offset - PORT_BASE) / PORT_LEN) as usize;
                self.write_port(index, (offset - PORT_BASE) % PORT_LEN, v);
            }
            _ => {}
        }
    }

    fn write_port(&mut self, index: usize, reg: u64, v: u32) {
        let before = self.enabled_bits();
        let p = &mut self.ports[index];
        match reg {
            // The list is 1 KiB aligned, the FIS area 256 bytes.
            0x00 => set_lo(&mut p.clb, v & !0x3ff),
            0x04 => set_hi(&mut p.clb, v),
            0x08 => set_lo(&mut p.fb, v & !0xff),
            0x0c => set_hi(&mut p.fb, v),
            0x10 => p.is &= !v,
            0x14 => p.ie = v & pxis::VALID,
            0x18 => {
                let was_running = p.cmd & pxcmd::ST != 0;
                p.cmd = v & pxcmd::WRITABLE;
                let start = p.cmd & pxcmd::ST != 0;
                if was_running && !start {
                    p.stop();
                }
                if v & pxcmd::CLO != 0 {
                    // Command list override: BSY and DRQ no longer hold the list back.
                    p.tfd &= !u32::from(fis::status::BSY | fis::status::DRQ);
                }
                if start && !was_running {
                    p.ccs = 0;
                    self.wake();
                }
            }
            0x2c => {
                let old = p.sctl & 0xf;
                p.sctl = v & 0xfff;
                match (old, v & 0xf) {
                    // COMRESET asserted: the link goes down until it is released.
                    (_, 1) => {
                        p.ssts = 0;
                        p.tfd = u32::from(fis::status::BSY);
                        p.stop();
                    }
                    (1, 0) => {
                        p.reset_device();
                        self.post_signature(index);
                    }
                    (_, 4) => p.ssts = SSTS_OFFLINE,
                    (4, 0) => p.reset_device(),
                    _ => {}
                }
            }
            0x30 => p.serr &= !v,
            0x34 if p.cmd & pxcmd::ST != 0 => p.sact |= v,
            0x38 if p.cmd & pxcmd::ST != 0 => {
                p.ci |= v;
                self.wake();
            }
            _ => {}
        }
        if matches!(reg, 0x10 | 0x14) {
            let new = self.new_events(before);
            self.update_interrupt(new);
        }
    }

    /// The signature FIS a device sends once its link is up again.
    fn post_signature(&mut self, index: usize) {
        let p = &self.ports[index];
        if p.kind.is_some() && p.cmd & pxcmd::FRE != 0 {
            let fis = p.signature().d2h_fis();
            // A FIS area outside guest memory: the FIS is lost, as it would be on hardware
            // writing to nowhere.
            let _ = dma::write(&self.memory, p.fb.wrapping_add(fis::RX_D2H), &fis);
        }
    }

    fn wake(&self) {
        // An eventfd write fails only at its counter's maximum, when the thread is awake.
        let _ = self.kick.write(1);
    }

    /// Each port's enabled pending interrupts (for edge detection).
    fn enabled_bits(&self) -> [u32; PORTS] {
        self.ports.each_ref().map(|p| p.is & p.ie)
    }

    /// Whether a port has an enabled interrupt now that it did not have `before`.
    fn new_events(&self, before: [u32; PORTS]) -> bool {
        self.enabled_bits()
            .iter()
            .zip(before)
            .any(|(a, b)| a & !b != 0)
    }

    /// Recomputes IS and sends the interrupt when the condition newly holds, or holds with
    /// `new` events (an MSI is an edge: one message per new event).
    fn update_interrupt(&mut self, new: bool) {
        for (i, p) in self.ports.iter().enumerate() {
            if p.pending() {
                self.is |= 1 << i;
            }
        }
        let assert = self.is != 0 && self.ghc & GHC_IE != 0;
        if assert && (!self.asserted || new) {
            (self.interrupt)();
        }
        self.asserted = assert;
    }

    /// Takes the next command to run, if any port has one: ports in turn, from the one after
    /// the last served.
    pub fn take_issued(&mut self) -> Option<Issued> {
        let index = (1..=PORTS)
            .map(|i| (self.last_port + i) % PORTS)
            .find(|&i| self.ports[i].runnable())?;
        self.last_port = index;
        let p = &mut self.ports[index];
        // Slot order, starting after the last one taken.
        let from = (u32::from(p.ccs) + 1) % 32;
        let slot = (0..32)
            .map(|i| (from + i) % 32)
            .find(|s| p.ci & (1 << s) != 0)? as u8;
        p.running = Some(slot);
        p.ccs = slot;
        Some(Issued {
            port: index,
            slot,
            list: p.clb,
            generation: p.generation,
            reset_drive: std::mem::take(&mut p.reset_pending),
        })
    }

    /// Reports how `issued` ended: the FISes into the port's receive area, the registers,
    /// the slot freed (or the list halted on an error) and the interrupt.
    pub fn finish(&mut self, issued: &Issued, end: &Ended) {
        let before = self.enabled_bits();
        let memory = self.memory.clone();
        let p = &mut self.ports[issued.port];
        p.running = None;
        if p.generation != issued.generation {
            // Stopped or reset meanwhile: the host has moved on.
            return;
        }
        let fre = p.cmd & pxcmd::FRE != 0;
        let bit = 1u32 << issued.slot;
        if end.fatal {
            p.is |= pxis::HBFS;
            p.halted = true;
        } else {
            // A header outside guest memory would have failed the fetch already.
            let _ = dma::Command::set_transferred(&memory, issued.list, issued.slot, end.bytes);
            if fre && !end.silent {
                let fb = p.fb;
                if end.pio {
                    let count = u16::try_from(end.bytes).unwrap_or(u16::MAX);
                    let _ = dma::write(
                        &memory,
                        fb.wrapping_add(fis::RX_PIO_SETUP),
                        &end.regs.pio_setup_fis(count),
                    );
                    p.is |= pxis::PSS;
                }
                let _ = dma::write(&memory, fb.wrapping_add(fis::RX_D2H), &end.regs.d2h_fis());
                p.is |= pxis::DHRS;
            }
            p.tfd = end.regs.tfd();
            if end.regs.status & fis::status::ERR != 0 {
                p.is |= pxis::TFES;
                p.halted = true;
            } else {
                p.ci &= !bit;
            }
        }
        let new = self.new_events(before);
        self.update_interrupt(new);
    }
}

impl DwordRegisters for Hba {
    fn read(&self, offset: u64) -> u32 {
        Hba::read(self, offset)
    }

    fn write(&mut self, offset: u64, value: u32) {
        Hba::write(self, offset, value)
    }
}

#[cfg(test)]
mod tests;
