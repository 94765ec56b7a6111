//! MSR values a vCPU starts with, limited to the MSRs this KVM supports.

use kvm_bindings::{kvm_msr_entry, Msrs};

const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;

/// KVM's paravirtual MSRs: a guest that enabled them (kvmclock, async page faults, steal
/// time, PV EOI, poll control) has KVM write into its memory until they are switched off.
const MSR_KVM_WALL_CLOCK: u32 = 0x11;
const MSR_KVM_SYSTEM_TIME: u32 = 0x12;
const MSR_KVM_WALL_CLOCK_NEW: u32 = 0x4b56_4d00;
const MSR_KVM_SYSTEM_TIME_NEW: u32 = 0x4b56_4d01;
const MSR_KVM_ASYNC_PF_EN: u32 = 0x4b56_4d02;
const MSR_KVM_STEAL_TIME: u32 = 0x4b56_4d03;
const MSR_KVM_PV_EOI_EN: u32 = 0x4b56_4d04;
const MSR_KVM_POLL_CONTROL: u32 = 0x4b56_4d05;
const MSR_KVM_ASYNC_PF_INT: u32 = 0x4b56_4d06;
/// Hyper-V's MSRs that make KVM write into guest memory or deliver interrupts (hypercall
/// page, reference TSC page, VP assist page, SynIC pages and timers), off at a reset.
const HV_GUEST_OS_ID: u32 = 0x4000_0000;
const HV_HYPERCALL: u32 = 0x4000_0001;
const HV_REFERENCE_TSC: u32 = 0x4000_0021;
const HV_VP_ASSIST_PAGE: u32 = 0x4000_0073;
const HV_SCONTROL: u32 = 0x4000_0080;
const HV_SIEFP: u32 = 0x4000_0082;
const HV_SIMP: u32 = 0x4000_0083;
const HV_STIMER0_CONFIG: u32 = 0x4000_00b0;
const MISC_ENABLE_FAST_STRING: u64 = 1;
const MTRR_ENABLE: u64 = 1 << 11;
const MTRR_TYPE_WRITE_BACK: u64 = 6;

/// The boot MSRs, filtered to `supported` (KVM_GET_MSR_INDEX_LIST).
pub fn boot_msrs(supported: &[u32]) -> Msrs {
    msr_list(supported, &BOOT)
}

/// What a reset writes: the boot MSRs, and KVM's paravirtual ones switched off.
pub fn reset_msrs(supported: &[u32]) -> Msrs {
    let all: Vec<(u32, u64)> = BOOT.iter().chain(PARAVIRT_OFF.iter()).copied().collect();
    msr_list(supported, &all)
}

const BOOT: [(u32, u64); 11] = [
    (MSR_IA32_SYSENTER_CS, 0),
    (MSR_IA32_SYSENTER_ESP, 0),
    (MSR_IA32_SYSENTER_EIP, 0),
    (MSR_STAR, 0),
    (MSR_CSTAR, 0),
    (MSR_KERNEL_GS_BASE, 0),
    (MSR_SYSCALL_MASK, 0),
    (MSR_LSTAR, 0),
    (MSR_IA32_TSC, 0),
    (MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
    (MSR_MTRR_DEF_TYPE, MTRR_ENABLE | MTRR_TYPE_WRITE_BACK),
];

const PARAVIRT_OFF: [(u32, u64); 20] = [
    (HV_GUEST_OS_ID, 0),
    (HV_HYPERCALL, 0),
    (HV_REFERENCE_TSC, 0),
    (HV_VP_ASSIST_PAGE, 0),
    (HV_SCONTROL, 0),
    (HV_SIEFP, 0),
    (HV_SIMP, 0),
    (HV_STIMER0_CONFIG, 0),
    (HV_STIMER0_CONFIG + 2, 0),
    (HV_STIMER0_CONFIG + 4, 0),
    (HV_STIMER0_CONFIG + 6, 0),
    (MSR_KVM_WALL_CLOCK, 0),
    (MSR_KVM_SYSTEM_TIME, 0),
    (MSR_KVM_WALL_CLOCK_NEW, 0),
    (MSR_KVM_SYSTEM_TIME_NEW, 0),
    (MSR_KVM_ASYNC_PF_EN, 0),
    (MSR_KVM_STEAL_TIME, 0),
    (MSR_KVM_PV_EOI_EN, 0),
    (MSR_KVM_POLL_CONTROL, 1),
    (MSR_KVM_ASYNC_PF_INT, 0),
];

fn msr_list(supported: &[u32], wanted: &[(u32, u64)]) -> Msrs {
    let entries: Vec<kvm_msr_entry> = wanted
        .iter()
        .filter(|(index, _)| supported.contains(index))
        .map(|&(index, data)| kvm_msr_entry {
            index,
            data,
            ..Default::default()
        })
        .collect();
    // The list is far below KVM_MAX_MSR_ENTRIES, so building the FAM struct cannot fail;
    // an empty list is the harmless fallback.
    Msrs::from_entries(&entries)
        .or_else(|_| Msrs::new(0))
        .expect("an empty MSR list always fits")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsupported_msrs_are_left_out() {
        let msrs = boot_msrs(&[MSR_IA32_TSC, MSR_IA32_MISC_ENABLE]);
        let idx: Vec<u32> = msrs.as_slice().iter().map(|e| e.index).collect();
        assert_eq!(idx, vec![MSR_IA32_TSC, MSR_IA32_MISC_ENABLE]);
        assert_eq!(msrs.as_slice()[1].data, 1);
    }

    #[test]
    fn a_reset_switches_kvms_paravirtual_msrs_off() {
        let msrs = reset_msrs(&[MSR_IA32_TSC, MSR_KVM_SYSTEM_TIME_NEW, MSR_KVM_POLL_CONTROL]);
        let got: Vec<(u32, u64)> = msrs.as_slice().iter().map(|e| (e.index, e.data)).collect();
        // Poll control's reset value is 1 (host-side polling allowed), as KVM's own reset.
        assert_eq!(
            got,
            vec![
                (MSR_IA32_TSC, 0),
                (MSR_KVM_SYSTEM_TIME_NEW, 0),
                (MSR_KVM_POLL_CONTROL, 1)
            ]
        );
    }

    #[test]
    fn nothing_supported_gives_empty_list() {
        assert!(boot_msrs(&[]).as_slice().is_empty());
    }
}
