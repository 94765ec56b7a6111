//! Hyper-V enlightenments (`hyperv = true`): the CPUID leaves by which Windows, and Linux,
//! recognise a Hyper-V partition and use its paravirtual interfaces, all emulated by KVM:
//! relaxed timing, the virtual APIC assist page and EOI/ICR/TPR MSRs, spinlock notification,
//! VP index, VP runtime, the synthetic interrupt controller and its timers, the reference
//! counter and reference TSC page, TSC/APIC frequency MSRs, the reset MSR, and hypercalls for
//! remote TLB flushes and IPIs.
//!
//! The leaves come from KVM (KVM_GET_SUPPORTED_HV_CPUID), less what this VMM does not serve:
//! synthetic debugging (its MSRs exit to user space), enlightened VMCS and the nested leaf
//! (nested virtualisation inside the desktop), and the crash MSRs (a Windows bug check then
//! reboots the desktop instead of ending the VM with an error). KVM's own signature leaves are
//! left out: a guest then sees one hypervisor, Hyper-V (Linux would otherwise prefer KVM's
//! interfaces, and some GPU drivers refuse to load under KVM's signature).

use kvm_bindings::{kvm_cpuid_entry2, CpuId};

/// The Hyper-V leaves kept: vendor and max, interface, version, features, recommendations,
/// limits, hardware features.
const FIRST: u32 = 0x4000_0000;
const LAST_KEPT: u32 = 0x4000_0006;
/// The whole range hypervisors use (KVM's leaves included).
const HYPERVISOR_RANGE: std::ops::RangeInclusive<u32> = 0x4000_0000..=0x4fff_ffff;

/// "Microsoft Hv" in EBX, ECX, EDX.
const VENDOR: [u32; 3] = [
    u32::from_le_bytes(*b"Micr"),
    u32::from_le_bytes(*b"osof"),
    u32::from_le_bytes(*b"t Hv"),
];
const FEATURES: u32 = 0x4000_0003;
const RECOMMENDATIONS: u32 = 0x4000_0004;
/// 0x40000003 EAX: partition privileges.
const ACCESS_SYNIC_REGS: u32 = 1 << 2;
const ACCESS_SYNTHETIC_TIMER_REGS: u32 = 1 << 3;
/// 0x40000003 EDX: guest debugging, crash MSRs, synthetic debug MSRs, direct-mode stimers.
const GUEST_DEBUGGING: u32 = 1 << 1;
const CRASH_MSRS: u32 = 1 << 10;
const DEBUG_MSRS: u32 = 1 << 11;
const STIMER_DIRECT_MODE: u32 = 1 << 19;
/// 0x40000004 EAX: enlightened VMCS recommended.
const ENLIGHTENED_VMCS: u32 = 1 << 14;

/// `table` (one vCPU's CPUID) with the hypervisor leaves replaced by the Hyper-V leaves of
/// `hv`; `synic`: whether the synthetic interrupt controller (and its timers) can be offered
/// (KVM_CAP_HYPERV_SYNIC2 enabled on the vCPU).
pub fn apply(table: &CpuId, hv: &CpuId, synic: bool) -> CpuId {
    let mut entries: Vec<kvm_cpuid_entry2> = table
        .as_slice()
        .iter()
        .filter(|e| !HYPERVISOR_RANGE.contains(&e.function))
        .copied()
        .collect();
    for e in hv.as_slice() {
        if !(FIRST..=LAST_KEPT).contains(&e.function) {
            continue;
        }
        let mut e = *e;
        match e.function {
            FIRST => {
                e.eax = LAST_KEPT;
                // KVM says "Linux KVM Hv"; guests look for Hyper-V's own vendor (Linux
                // requires it; Windows checks the interface, "Hv#1", in the next leaf).
                [e.ebx, e.ecx, e.edx] = VENDOR;
            }
            FEATURES => {
                e.edx &= !(GUEST_DEBUGGING | CRASH_MSRS | DEBUG_MSRS);
                if !synic {
                    e.eax &= !(ACCESS_SYNIC_REGS | ACCESS_SYNTHETIC_TIMER_REGS);
                    e.edx &= !STIMER_DIRECT_MODE;
                }
            }
            RECOMMENDATIONS => e.eax &= !ENLIGHTENED_VMCS,
            _ => {}
        }
        entries.push(e);
    }
    // At most KVM's own limit of entries went in; a table built from two of KVM's tables
    // fits the FAM struct, and the unfiltered table is the fallback.
    CpuId::from_entries(&entries).unwrap_or_else(|_| table.clone())
}

/// Whether `hv` (KVM's Hyper-V leaves) offers the synthetic interrupt controller.
pub fn offers_synic(hv: &CpuId) -> bool {
    hv.as_slice()
        .iter()
        .any(|e| e.function == FEATURES && e.eax & ACCESS_SYNIC_REGS != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(function: u32, eax: u32, edx: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            eax,
            edx,
            ..Default::default()
        }
    }

    fn kvm_table() -> CpuId {
        CpuId::from_entries(&[
            leaf(0, 0xd, 0),
            leaf(1, 0, 0),
            leaf(0x4000_0000, 0x4000_0001, 0),
            leaf(0x4000_0001, 0xffff, 0),
            leaf(0x8000_0000, 0x8000_0008, 0),
        ])
        .unwrap()
    }

    fn hv_table() -> CpuId {
        CpuId::from_entries(&[
            leaf(0x4000_0000, 0x4000_000a, 0),
            leaf(0x4000_0001, 0x3123_7648, 0),
            leaf(0x4000_0003, 0xffff, !0),
            leaf(0x4000_0004, !0, 0),
            leaf(0x4000_0005, 0, 0),
            leaf(0x4000_0006, 0, 0),
            leaf(0x4000_000a, 1, 0),
            leaf(0x4000_0080, 0, 0),
        ])
        .unwrap()
    }

    fn find(t: &CpuId, function: u32) -> Option<kvm_cpuid_entry2> {
        t.as_slice()
            .iter()
            .find(|e| e.function == function)
            .copied()
    }

    #[test]
    fn hyper_v_replaces_kvms_leaves_and_keeps_the_rest() {
        let t = apply(&kvm_table(), &hv_table(), true);
        let top = find(&t, 0x4000_0000).unwrap();
        assert_eq!(top.eax, LAST_KEPT);
        let vendor: Vec<u8> = [top.ebx, top.ecx, top.edx]
            .iter()
            .flat_map(|r| r.to_le_bytes())
            .collect();
        assert_eq!(vendor, b"Microsoft Hv");
        assert_eq!(find(&t, 0x4000_0001).unwrap().eax, 0x3123_7648, "Hv#1");
        assert!(find(&t, 0x4000_000a).is_none() && find(&t, 0x4000_0080).is_none());
        assert!(t
            .as_slice()
            .iter()
            .all(|e| e.function < 0x4000_0100 || !HYPERVISOR_RANGE.contains(&e.function)));
        assert!(find(&t, 1).is_some() && find(&t, 0x8000_0000).is_some());
        let features = find(&t, FEATURES).unwrap();
        assert_eq!(
            features.edx & (CRASH_MSRS | DEBUG_MSRS | GUEST_DEBUGGING),
            0
        );
        assert_ne!(features.eax & ACCESS_SYNIC_REGS, 0);
        assert_eq!(find(&t, RECOMMENDATIONS).unwrap().eax & ENLIGHTENED_VMCS, 0);
    }

    #[test]
    fn without_synic_neither_it_nor_its_timers_are_offered() {
        let t = apply(&kvm_table(), &hv_table(), false);
        let features = find(&t, FEATURES).unwrap();
        assert_eq!(
            features.eax & (ACCESS_SYNIC_REGS | ACCESS_SYNTHETIC_TIMER_REGS),
            0
        );
        assert_eq!(features.edx & STIMER_DIRECT_MODE, 0);
        assert!(offers_synic(&hv_table()));
    }
}
