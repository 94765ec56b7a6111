//! KVM state: the VM, its vCPUs and guest memory.

pub mod flash_memory;
pub mod framebuffer;
pub mod irq_routing;
pub mod memory;
pub mod vcpu;
pub mod vcpu_reset;
pub mod vm;
