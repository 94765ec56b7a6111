//! The VM's interrupt routing table: the legacy PIC and I/O APIC lines, plus one MSI route per
//! device interrupt vector, each fed by an irqfd so that device threads raise interrupts with one
//! eventfd write and no vCPU exit.
//!
//! KVM_SET_GSI_ROUTING replaces the whole table, so the table is rebuilt from scratch on every
//! change, with the legacy entries first exactly as KVM's own default table has them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use kvm_bindings::{
    kvm_irq_routing_entry, kvm_irq_routing_irqchip, kvm_irq_routing_msi, KvmIrqRouting,
    KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, KVM_IRQ_ROUTING_IRQCHIP,
    KVM_IRQ_ROUTING_MSI,
};
use kvm_ioctls::VmFd;

use crate::devices::bus::lock;

/// GSIs 0..24 are the I/O APIC's pins (0..16 also the PICs'); MSI routes start above.
const IOAPIC_PINS: u32 = 24;
/// KVM's default routing table size limit is far above this; a VM with more vectors than this is
/// a VMM bug.
const MAX_GSI: u32 = 1024;

/// Errors from the routing table.
#[derive(Debug, thiserror::Error)]
pub enum RoutingError {
    /// No GSI left.
    #[error("no free interrupt line (GSI) left")]
    Exhausted,
    /// KVM refused the table.
    #[error("KVM_SET_GSI_ROUTING failed: {0}")]
    Ioctl(kvm_ioctls::Error),
    /// The wrapper could not hold the table.
    #[error("interrupt routing table too large")]
    TooLarge,
}

/// One MSI message as the guest programs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MsiMessage {
    /// Address, low 32 bits.
    pub address_lo: u32,
    /// Address, high 32 bits.
    pub address_hi: u32,
    /// Data.
    pub data: u32,
}

#[derive(Default)]
struct Table {
    msi: BTreeMap<u32, MsiMessage>,
    next_gsi: u32,
}

/// The routing table, shared by the devices that own MSI vectors.
pub struct IrqRouting {
    vm: Arc<VmFd>,
    table: Mutex<Table>,
}

fn irqchip_entry(gsi: u32, chip: u32, pin: u32) -> kvm_irq_routing_entry {
    let mut e = kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_IRQCHIP,
        ..Default::default()
    };
    e.u.irqchip = kvm_irq_routing_irqchip { irqchip: chip, pin };
    e
}

fn msi_entry(gsi: u32, m: MsiMessage) -> kvm_irq_routing_entry {
    let mut e = kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_MSI,
        ..Default::default()
    };
    e.u.msi = kvm_irq_routing_msi {
        address_lo: m.address_lo,
        address_hi: m.address_hi,
        data: m.data,
        ..Default::default()
    };
    e
}

/// KVM's default legacy routes: every GSI below 16 to both the I/O APIC and a PIC, 16..24 to the
/// I/O APIC alone.
fn legacy_entries() -> Vec<kvm_irq_routing_entry> {
    let mut v = Vec::new();
    for gsi in 0..IOAPIC_PINS {
        v.push(irqchip_entry(gsi, KVM_IRQCHIP_IOAPIC, gsi));
        if gsi < 16 {
            let chip = if gsi < 8 {
                KVM_IRQCHIP_PIC_MASTER
            } else {
                KVM_IRQCHIP_PIC_SLAVE
            };
            v.push(irqchip_entry(gsi, chip, gsi % 8));
        }
    }
    v
}

impl IrqRouting {
    /// A table with only the legacy routes (what KVM starts with).
    pub fn new(vm: Arc<VmFd>) -> Self {
        Self {
            vm,
            table: Mutex::new(Table {
                msi: BTreeMap::new(),
                next_gsi: IOAPIC_PINS,
            }),
        }
    }

    /// Reserves a GSI for an MSI vector; it has no route (and raises nothing) until
    /// [`IrqRouting::set_msi`].
    pub fn allocate(&self) -> Result<u32, RoutingError> {
        let mut t = lock(&self.table);
        if t.next_gsi >= MAX_GSI {
            return Err(RoutingError::Exhausted);
        }
        t.next_gsi += 1;
        Ok(t.next_gsi - 1)
    }

    /// Routes `gsi` to the MSI `message` (None removes the route) and installs the table.
    pub fn set_msi(&self, gsi: u32, message: Option<MsiMessage>) -> Result<(), RoutingError> {
        let mut t = lock(&self.table);
        let changed = match message {
            Some(m) => t.msi.insert(gsi, m) != Some(m),
            None => t.msi.remove(&gsi).is_some(),
        };
        if !changed {
            return Ok(());
        }
        let mut entries = legacy_entries();
        entries.extend(t.msi.iter().map(|(gsi, m)| msi_entry(*gsi, *m)));
        let routing = KvmIrqRouting::from_entries(&entries).map_err(|_| RoutingError::TooLarge)?;
        self.vm
            .set_gsi_routing(&routing)
            .map_err(RoutingError::Ioctl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_table_matches_kvm_default() {
        let v = legacy_entries();
        assert_eq!(v.len(), 24 + 16);
        let pins: Vec<(u32, u32, u32)> = v
            .iter()
            .map(|e| {
                // SAFETY: every entry here was built as an irqchip route, so the irqchip
                // member of the union is the initialised one.
                let chip = unsafe { e.u.irqchip };
                (e.gsi, chip.irqchip, chip.pin)
            })
            .collect();
        assert!(pins.contains(&(0, KVM_IRQCHIP_IOAPIC, 0)));
        assert!(pins.contains(&(0, KVM_IRQCHIP_PIC_MASTER, 0)));
        assert!(pins.contains(&(12, KVM_IRQCHIP_PIC_SLAVE, 4)));
        assert!(pins.contains(&(23, KVM_IRQCHIP_IOAPIC, 23)));
        assert!(!pins.iter().any(|p| p.0 == 20 && p.1 != KVM_IRQCHIP_IOAPIC));
    }
}
