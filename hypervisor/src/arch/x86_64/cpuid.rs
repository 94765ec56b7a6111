//! Per-vCPU CPUID: KVM's supported set, with the topology and APIC IDs of this VM filled in.

use kvm_bindings::{kvm_cpuid_entry2, CpuId};

const LEAF_FEATURES: u32 = 0x1;
const LEAF_CACHE_PARAMS: u32 = 0x4;
const LEAF_EXT_TOPOLOGY: u32 = 0xb;
const LEAF_V2_EXT_TOPOLOGY: u32 = 0x1f;
const LEAF_AMD_SIZE_IDS: u32 = 0x8000_0008;
const LEAF_AMD_EXT_APIC_ID: u32 = 0x8000_001e;

const ECX_HYPERVISOR: u32 = 1 << 31;
const EDX_HTT: u32 = 1 << 28;

/// Returns the CPUID table for vCPU `id` of `count`: one package, `count` cores, one thread each.
pub fn vcpu_cpuid(supported: &CpuId, id: u8, count: u8) -> CpuId {
    let mut cpuid = supported.clone();
    for entry in cpuid.as_mut_slice() {
        patch_entry(entry, id, count);
    }
    cpuid
}

/// Bits needed to number `count` logical processors.
fn id_bits(count: u8) -> u32 {
    u32::from(count.max(1)).next_power_of_two().trailing_zeros()
}

fn patch_entry(entry: &mut kvm_cpuid_entry2, id: u8, count: u8) {
    let id32 = u32::from(id);
    let count32 = u32::from(count.max(1));
    match entry.function {
        LEAF_FEATURES => {
            entry.ebx = (entry.ebx & 0x0000_ffff) | (id32 << 24) | (count32 << 16);
            entry.ecx |= ECX_HYPERVISOR;
            if count > 1 {
                entry.edx |= EDX_HTT;
            } else {
                entry.edx &= !EDX_HTT;
            }
        }
        LEAF_CACHE_PARAMS => {
            // EAX[31:26]: cores per package - 1; EAX[25:14]: threads sharing this cache - 1.
            entry.eax &= 0x3fff;
            entry.eax |= (count32 - 1) << 26;
            if entry.eax & 0x1f != 0 {
                let level = (entry.eax >> 5) & 0x7;
                let sharing = if level >= 3 { count32 - 1 } else { 0 };
                entry.eax |= sharing << 14;
            }
        }
        LEAF_EXT_TOPOLOGY | LEAF_V2_EXT_TOPOLOGY => {
            entry.edx = id32;
            match entry.index {
                0 => {
                    // SMT level: one thread per core.
                    entry.eax = 0;
                    entry.ebx = 1;
                    entry.ecx = 1 << 8;
                }
                1 => {
                    // Core level: `count` cores in the package.
                    entry.eax = id_bits(count);
                    entry.ebx = count32;
                    entry.ecx = (2 << 8) | 1;
                }
                index => {
                    entry.eax = 0;
                    entry.ebx = 0;
                    entry.ecx = index;
                }
            }
        }
        LEAF_AMD_SIZE_IDS => {
            // ECX[7:0]: cores - 1; ECX[15:12]: APIC ID bits for the cores.
            entry.ecx = (id_bits(count) << 12) | (count32 - 1);
        }
        LEAF_AMD_EXT_APIC_ID => {
            entry.eax = id32;
            entry.ebx = id32 & 0xff; // core id, one thread per core
            entry.ecx = 0;
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(entries: &[kvm_cpuid_entry2]) -> CpuId {
        CpuId::from_entries(entries).unwrap()
    }

    fn leaf(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            ebx: 0xdead_0800,
            ..Default::default()
        }
    }

    #[test]
    fn leaf1_carries_apic_id_and_count() {
        let t = vcpu_cpuid(&table(&[leaf(1, 0)]), 1, 2);
        let e = t.as_slice()[0];
        assert_eq!(e.ebx >> 24, 1);
        assert_eq!((e.ebx >> 16) & 0xff, 2);
        assert_eq!(e.ebx & 0xffff, 0x0800);
        assert_ne!(e.ecx & ECX_HYPERVISOR, 0);
        assert_ne!(e.edx & EDX_HTT, 0);
    }

    #[test]
    fn topology_leaf_reports_x2apic_id() {
        let t = vcpu_cpuid(&table(&[leaf(0xb, 0), leaf(0xb, 1), leaf(0xb, 2)]), 3, 4);
        let s = t.as_slice();
        assert!(s.iter().all(|e| e.edx == 3));
        assert_eq!(s[1].ebx, 4);
        assert_eq!(s[1].eax, 2);
        assert_eq!(s[2].ecx, 2);
    }

    #[test]
    fn id_bits_rounds_up() {
        assert_eq!(id_bits(1), 0);
        assert_eq!(id_bits(2), 1);
        assert_eq!(id_bits(3), 2);
        assert_eq!(id_bits(255), 8);
    }
}
