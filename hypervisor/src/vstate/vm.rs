//! The KVM VM: opening /dev/kvm, checking what the VMM needs, guest memory slots, the in-kernel
//! interrupt controllers and PIT, and irqfds.

use std::path::Path;
use std::sync::Arc;

use kvm_bindings::{kvm_cpuid2, KVMIO, KVM_CAP_SYS_HYPERV_CPUID};
use kvm_bindings::{
    kvm_irqchip, kvm_pit_config, kvm_pit_state2, kvm_userspace_memory_region, CpuId,
    KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, KVM_MAX_CPUID_ENTRIES,
    KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{Cap, Kvm, VmFd};
use vm_memory::{Address, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::ioctl::ioctl_with_mut_ptr;
use vmm_sys_util::ioctl_iowr_nr;

use crate::arch::x86_64::layout::{KVM_IDENTITY_MAP_ADDRESS, KVM_TSS_ADDRESS};

/// The in-kernel interrupt controllers' and PIT's state, for a reset.
pub struct IrqchipState {
    chips: [kvm_irqchip; 3],
    pit: kvm_pit_state2,
}

/// The device node.
pub const KVM_PATH: &str = "/dev/kvm";

// kvm-ioctls has no wrapper for the system form of this ioctl.
ioctl_iowr_nr!(KVM_GET_SUPPORTED_HV_CPUID, KVMIO, 0xc1, kvm_cpuid2);
/// Room for KVM's Hyper-V leaves (it reports about a dozen).
const HV_CPUID_ENTRIES: usize = 64;

/// Capabilities tessera-vmm cannot run without.
const REQUIRED_CAPS: [(Cap, &str); 8] = [
    (Cap::Irqchip, "in-kernel IRQ chip"),
    (Cap::UserMemory, "user memory slots"),
    (Cap::SetTssAddr, "TSS address"),
    (Cap::Pit2, "in-kernel PIT"),
    (Cap::Irqfd, "irqfd"),
    (Cap::ImmediateExit, "immediate exit"),
    (Cap::IrqRouting, "IRQ routing"),
    (Cap::Ioeventfd, "ioeventfd"),
];

/// Errors from KVM at the VM level.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// /dev/kvm is missing.
    #[error("{KVM_PATH} does not exist: this host has no KVM (enable virtualization in the firmware and load kvm_intel or kvm_amd)")]
    NoKvm,
    /// No permission to open /dev/kvm.
    #[error("permission denied opening {KVM_PATH}: run as a member of the 'kvm' group or as root")]
    KvmPermission,
    /// Another open error.
    #[error("cannot open {KVM_PATH}: {0}")]
    OpenKvm(kvm_ioctls::Error),
    /// The KVM API version is not 12.
    #[error("unsupported KVM API version {0} (expected 12)")]
    ApiVersion(i32),
    /// A capability is missing.
    #[error("KVM lacks a capability tessera-vmm needs: {0}")]
    MissingCap(&'static str),
    /// More vCPUs than KVM allows.
    #[error("{requested} vCPUs requested but this KVM allows at most {max}")]
    TooManyVcpus {
        /// Requested.
        requested: u8,
        /// KVM's limit.
        max: usize,
    },
    /// A KVM ioctl failed.
    #[error("KVM {0} failed: {1}")]
    Ioctl(&'static str, kvm_ioctls::Error),
    /// The video memory's memfd could not be made.
    #[error("video memory: {0}")]
    VideoMemory(std::io::Error),
}

/// An open VM with its system-level facts.
pub struct Vm {
    kvm: Kvm,
    fd: Arc<VmFd>,
}

impl Vm {
    /// Opens KVM, checks its API, and creates an empty VM.
    pub fn new() -> Result<Self, VmError> {
        if !Path::new(KVM_PATH).exists() {
            return Err(VmError::NoKvm);
        }
        let kvm = Kvm::new().map_err(|e| match e.errno() {
            libc::EACCES | libc::EPERM => VmError::KvmPermission,
            libc::ENOENT | libc::ENXIO | libc::ENODEV => VmError::NoKvm,
            _ => VmError::OpenKvm(e),
        })?;
        let version = kvm.get_api_version();
        if version != 12 {
            return Err(VmError::ApiVersion(version));
        }
        for (cap, name) in REQUIRED_CAPS {
            if !kvm.check_extension(cap) {
                return Err(VmError::MissingCap(name));
            }
        }
        let fd = kvm
            .create_vm()
            .map_err(|e| VmError::Ioctl("CREATE_VM", e))?;
        Ok(Self {
            kvm,
            fd: Arc::new(fd),
        })
    }

    /// The VM file descriptor.
    pub fn fd(&self) -> &VmFd {
        &self.fd
    }

    /// The VM file descriptor, shared with devices that register eventfds or routes.
    pub fn shared_fd(&self) -> Arc<VmFd> {
        self.fd.clone()
    }

    /// Checks the vCPU count against KVM's limit.
    pub fn check_vcpus(&self, count: u8) -> Result<(), VmError> {
        let max = self.kvm.get_max_vcpus();
        if usize::from(count) > max {
            return Err(VmError::TooManyVcpus {
                requested: count,
                max,
            });
        }
        Ok(())
    }

    /// KVM's supported CPUID table.
    pub fn supported_cpuid(&self) -> Result<CpuId, VmError> {
        self.kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(|e| VmError::Ioctl("GET_SUPPORTED_CPUID", e))
    }

    /// The Hyper-V CPUID leaves KVM can emulate (KVM_GET_SUPPORTED_HV_CPUID on /dev/kvm);
    /// None where this KVM cannot report them.
    pub fn supported_hv_cpuid(&self) -> Result<Option<CpuId>, VmError> {
        if self
            .kvm
            .check_extension_raw(u64::from(KVM_CAP_SYS_HYPERV_CPUID) as _)
            <= 0
        {
            return Ok(None);
        }
        let mut cpuid = CpuId::new(HV_CPUID_ENTRIES).map_err(|_| {
            VmError::Ioctl(
                "GET_SUPPORTED_HV_CPUID",
                kvm_ioctls::Error::new(libc::ENOMEM),
            )
        })?;
        // SAFETY: the ioctl fills at most `nent` entries of the kvm_cpuid2 we own (CpuId
        // sized it for HV_CPUID_ENTRIES and set `nent`), and lowers `nent` to what it wrote;
        // the return value is checked.
        let ret = unsafe {
            ioctl_with_mut_ptr(
                &self.kvm,
                KVM_GET_SUPPORTED_HV_CPUID(),
                cpuid.as_mut_fam_struct_ptr(),
            )
        };
        if ret < 0 {
            return Err(VmError::Ioctl(
                "GET_SUPPORTED_HV_CPUID",
                kvm_ioctls::Error::last(),
            ));
        }
        Ok(Some(cpuid))
    }

    /// MSR indices KVM saves and restores.
    pub fn supported_msrs(&self) -> Result<Vec<u32>, VmError> {
        self.kvm
            .get_msr_index_list()
            .map(|l| l.as_slice().to_vec())
            .map_err(|e| VmError::Ioctl("GET_MSR_INDEX_LIST", e))
    }

    /// Registers every guest memory region as a KVM memory slot.
    pub fn register_memory(&self, mem: &GuestMemoryMmap) -> Result<(), VmError> {
        for (slot, region) in mem.iter().enumerate() {
            let host = region
                .get_host_address(vm_memory::MemoryRegionAddress(0))
                .map_err(|_| {
                    VmError::Ioctl(
                        "SET_USER_MEMORY_REGION",
                        kvm_ioctls::Error::new(libc::EFAULT),
                    )
                })?;
            let desc = kvm_userspace_memory_region {
                slot: slot as u32,
                flags: 0,
                guest_phys_addr: region.start_addr().raw_value(),
                memory_size: region.len(),
                userspace_addr: host as u64,
            };
            // SAFETY: the region is a live mmap owned by `mem`, which outlives the VM (the
            // builder keeps both until the process exits), and the slots do not overlap
            // because vm-memory refuses overlapping regions.
            unsafe { self.fd.set_user_memory_region(desc) }
                .map_err(|e| VmError::Ioctl("SET_USER_MEMORY_REGION", e))?;
        }
        Ok(())
    }

    /// Creates the in-kernel PIC, I/O APIC and PIT, and the Intel-only TSS and identity pages.
    pub fn setup_irqchip(&self) -> Result<(), VmError> {
        self.fd
            .set_tss_address(KVM_TSS_ADDRESS as usize)
            .map_err(|e| VmError::Ioctl("SET_TSS_ADDR", e))?;
        if self.kvm.check_extension(Cap::SetIdentityMapAddr) {
            self.fd
                .set_identity_map_address(KVM_IDENTITY_MAP_ADDRESS)
                .map_err(|e| VmError::Ioctl("SET_IDENTITY_MAP_ADDR", e))?;
        }
        self.fd
            .create_irq_chip()
            .map_err(|e| VmError::Ioctl("CREATE_IRQCHIP", e))?;
        // The dummy speaker port lets guests calibrate the TSC against PIT channel 2.
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        self.fd
            .create_pit2(pit)
            .map_err(|e| VmError::Ioctl("CREATE_PIT2", e))
    }

    /// The in-kernel PICs', I/O APIC's and PIT's state now (taken right after
    /// [`Vm::setup_irqchip`]: their state at power-on, which a reset restores).
    pub fn irqchip_state(&self) -> Result<IrqchipState, VmError> {
        let mut chips = [
            KVM_IRQCHIP_PIC_MASTER,
            KVM_IRQCHIP_PIC_SLAVE,
            KVM_IRQCHIP_IOAPIC,
        ]
        .map(|chip_id| kvm_irqchip {
            chip_id,
            ..Default::default()
        });
        for chip in &mut chips {
            self.fd
                .get_irqchip(chip)
                .map_err(|e| VmError::Ioctl("GET_IRQCHIP", e))?;
        }
        let pit = self
            .fd
            .get_pit2()
            .map_err(|e| VmError::Ioctl("GET_PIT2", e))?;
        Ok(IrqchipState { chips, pit })
    }

    /// Puts the in-kernel interrupt controllers and PIT back in `state`.
    pub fn restore_irqchip(&self, state: &IrqchipState) -> Result<(), VmError> {
        for chip in &state.chips {
            self.fd
                .set_irqchip(chip)
                .map_err(|e| VmError::Ioctl("SET_IRQCHIP", e))?;
        }
        self.fd
            .set_pit2(&state.pit)
            .map_err(|e| VmError::Ioctl("SET_PIT2", e))
    }

    /// Routes writes to `evt` to interrupt line `gsi`.
    pub fn register_irqfd(&self, evt: &EventFd, gsi: u32) -> Result<(), VmError> {
        self.fd
            .register_irqfd(evt, gsi)
            .map_err(|e| VmError::Ioctl("IRQFD", e))
    }
}
