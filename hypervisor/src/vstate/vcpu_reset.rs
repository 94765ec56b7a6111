//! A vCPU's state as it was before its first instruction, kept so that a guest reboot can
//! put it back (the machine's reset, done in place: same KVM VM, same threads).
//!
//! The snapshot is taken once the vCPU is configured; restoring it is the vCPU thread's own
//! work, between its runs. MSRs are not snapshotted (KVM lists hundreds, not all readable):
//! the boot MSRs are written again, and the paravirtual ones the old guest enabled (kvmclock,
//! async page faults, steal time, PV EOI, and Hyper-V's hypercall, TSC, assist and SynIC
//! pages and timers) are switched off, or KVM would go on writing into memory the next guest
//! owns.

use kvm_bindings::{
    kvm_debugregs, kvm_fpu, kvm_lapic_state, kvm_mp_state, kvm_msr_entry, kvm_regs, kvm_sregs,
    kvm_vcpu_events, kvm_xcrs, Msrs,
};
use kvm_ioctls::VcpuFd;

use super::vcpu::VcpuError;
use crate::arch::x86_64::msr;

/// Everything KVM keeps for a vCPU that a guest changes and a reset restores.
#[derive(Clone)]
pub struct ResetState {
    regs: kvm_regs,
    sregs: kvm_sregs,
    fpu: kvm_fpu,
    xcrs: Option<kvm_xcrs>,
    debugregs: kvm_debugregs,
    lapic: kvm_lapic_state,
    events: kvm_vcpu_events,
    mp_state: kvm_mp_state,
    /// The MSRs a reset writes, those of [`msr::reset_msrs`] that this KVM supports.
    msrs: Vec<kvm_msr_entry>,
}

impl ResetState {
    /// The state of vCPU `id` now, before it ever ran.
    pub fn capture(fd: &VcpuFd, id: u8, supported_msrs: &[u32]) -> Result<Self, VcpuError> {
        let e = |what| move |err| VcpuError::Ioctl(id, what, err);
        Ok(Self {
            regs: fd.get_regs().map_err(e("GET_REGS"))?,
            sregs: fd.get_sregs().map_err(e("GET_SREGS"))?,
            fpu: fd.get_fpu().map_err(e("GET_FPU"))?,
            // Not every host has XSAVE (KVM_CAP_XCRS).
            xcrs: fd.get_xcrs().ok(),
            debugregs: fd.get_debug_regs().map_err(e("GET_DEBUGREGS"))?,
            lapic: fd.get_lapic().map_err(e("GET_LAPIC"))?,
            events: fd.get_vcpu_events().map_err(e("GET_VCPU_EVENTS"))?,
            mp_state: fd.get_mp_state().map_err(e("GET_MP_STATE"))?,
            msrs: msr::reset_msrs(supported_msrs).as_slice().to_vec(),
        })
    }

    /// Puts vCPU `id` back in the captured state.
    pub fn restore(&self, fd: &VcpuFd, id: u8) -> Result<(), VcpuError> {
        let e = |what| move |err| VcpuError::Ioctl(id, what, err);
        // The APIC base (in the special registers) before the LAPIC's registers.
        fd.set_sregs(&self.sregs).map_err(e("SET_SREGS"))?;
        fd.set_regs(&self.regs).map_err(e("SET_REGS"))?;
        fd.set_fpu(&self.fpu).map_err(e("SET_FPU"))?;
        if let Some(xcrs) = &self.xcrs {
            fd.set_xcrs(xcrs).map_err(e("SET_XCRS"))?;
        }
        fd.set_debug_regs(&self.debugregs)
            .map_err(e("SET_DEBUGREGS"))?;
        fd.set_lapic(&self.lapic).map_err(e("SET_LAPIC"))?;
        // One at a time: KVM stops a batch at the first MSR it refuses, and every later one
        // (kvmclock among them) must still be switched off.
        for entry in &self.msrs {
            let one = Msrs::from_entries(&[*entry]).map_err(|_| VcpuError::Msr(id, entry.index))?;
            if fd.set_msrs(&one).map_err(e("SET_MSRS"))? != 1 {
                tracing::warn!(
                    vcpu = id,
                    msr = format_args!("{:#x}", entry.index),
                    "reset: KVM refused an MSR; left as it was"
                );
            }
        }
        // No exception, interrupt or NMI of the old guest's is left pending.
        fd.set_vcpu_events(&self.events)
            .map_err(e("SET_VCPU_EVENTS"))?;
        fd.set_mp_state(self.mp_state).map_err(e("SET_MP_STATE"))?;
        Ok(())
    }
}
