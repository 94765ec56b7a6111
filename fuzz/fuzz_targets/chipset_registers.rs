//! Fuzzes the chipset registers a guest or its firmware programs: ACPI's fixed hardware (PM1
//! status, enable and control with its sleep states, the PM timer, GPE0), PCI configuration
//! through ports 0xCF8-0xCFF (with the reset control register at 0xCF9) and through the ECAM
//! window (the Q35 host bridge and the ICH9 LPC bridge behind them), power-button presses from
//! the API between them, the fw_cfg device (selector, data, and DMA transfers described in
//! guest memory), the firmware's variable store (CFI flash commands and data), and the TPM's
//! CRB registers and buffer (with the TPM thread's answers, of any size, or failures, and
//! machine resets, between them). Nothing may panic; only a write of S5 or a reset may end
//! the VM.
#![no_main]

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use libfuzzer_sys::fuzz_target;
use tessera_vmm::devices::acpi::pm::{PowerManagement, PM_LEN};
use tessera_vmm::devices::bus::BusDevice;
use tessera_vmm::devices::fw_cfg::FwCfg;
use tessera_vmm::devices::pci::host_bridge::HostBridge;
use tessera_vmm::devices::pci::lpc::{Lpc, LPC_SLOT};
use tessera_vmm::devices::pflash::{FlashStore, Pflash};
use tessera_vmm::devices::pci::{PciEcam, PciRoot};
use tessera_vmm::devices::tpm::{Crb, Job, SwtpmError, CRB_SIZE};
use tessera_vmm::exit::{ExitReason, ExitSender};

/// A variable store in memory.
struct Store(Vec<u8>);

impl FlashStore for Store {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn read(&self, offset: usize, data: &mut [u8]) {
        data.copy_from_slice(&self.0[offset..offset + data.len()]);
    }
    fn write(&mut self, offset: usize, data: &[u8]) {
        self.0[offset..offset + data.len()].copy_from_slice(data);
    }
    fn set_direct_reads(&mut self, _on: bool) {}
}

fuzz_target!(|data: &[u8]| {
    let (tx, rx) = mpsc::channel();
    let exit = ExitSender::new(tx);
    let mut pm = PowerManagement::new(Box::new(|_| {}), exit.clone());
    let mut root = PciRoot::new().with_reset(exit);
    if root.add(Arc::new(Mutex::new(HostBridge::new()))).is_err()
        || root
            .add_at(LPC_SLOT, Arc::new(Mutex::new(Lpc::new())))
            .is_err()
    {
        return;
    }
    let mut flash = Pflash::new(Store(vec![0xff; 64 << 10]));
    let root = Arc::new(Mutex::new(root));
    let mut ecam = PciEcam::new(root.clone());
    let Ok(memory) =
        vm_memory::GuestMemoryMmap::<()>::from_ranges(&[(vm_memory::GuestAddress(0), 64 << 10)])
    else {
        return;
    };
    let mut fw_cfg = FwCfg::new(memory, 2);
    if fw_cfg.add_file("etc/e820", vec![0x5a; 40]).is_err() {
        return;
    }
    let (jobs_tx, jobs) = mpsc::channel();
    let mut crb = Crb::new(jobs_tx);
    // Each operation is 8 bytes: [op][len][offset: 2][value: 4].
    for op in data.chunks_exact(8) {
        let len = usize::from(op[1] % 8) + 1;
        let offset = u64::from(u16::from_le_bytes([op[2], op[3]]));
        let value = [op[4], op[5], op[6], op[7], op[4], op[5], op[6], op[7]];
        let mut buf = [0u8; 8];
        match op[0] % 15 {
            11 => crb.write(offset % (CRB_SIZE + 16), &value[..len]),
            12 => crb.read(offset % (CRB_SIZE + 16), &mut buf[..len]),
            // The TPM thread answers the oldest command: `offset` bytes of `value`'s first
            // byte, or (odd first byte) a failure.
            13 => {
                if let Ok(Job::Command { generation, .. }) = jobs.try_recv() {
                    let answer = if op[4] & 1 == 1 {
                        Err(SwtpmError::Malformed("fuzzed".into()))
                    } else {
                        Ok(vec![op[4]; usize::from(u16::from_le_bytes([op[2], op[3]]))])
                    };
                    crb.complete(generation, answer);
                }
            }
            14 => crb.reset(),
            0 => pm.write(offset % (u64::from(PM_LEN) + 8), &value[..len]),
            1 => pm.read(offset % (u64::from(PM_LEN) + 8), &mut buf[..len]),
            2 => pm.press_power_button(),
            3 => root.lock().unwrap().write(offset % 10, &value[..len]),
            4 => root.lock().unwrap().read(offset % 10, &mut buf[..len]),
            // ECAM: the offset's bits spread over bus, device, function and register.
            9 => flash.write(offset, &value[..len]),
            10 => flash.read(offset, &mut buf[..len]),
            7 => fw_cfg.write(offset % 14, &value[..len]),
            8 => fw_cfg.read(offset % 14, &mut buf[..len]),
            5 => ecam.write(
                u64::from(u32::from_le_bytes([op[4], op[5], op[2], op[3]])) % (256 << 20),
                &value[..len],
            ),
            _ => ecam.read(
                u64::from(u32::from_le_bytes([op[4], op[5], op[2], op[3]])) % (256 << 20),
                &mut buf[..len],
            ),
        }
    }
    while let Ok(reason) = rx.try_recv() {
        assert!(
            matches!(reason, ExitReason::GuestPowerOff | ExitReason::GuestReset),
            "{reason:?}"
        );
    }
});
