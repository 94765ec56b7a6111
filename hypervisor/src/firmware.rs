//! Booting UEFI firmware instead of a kernel: OVMF built for QEMU's q35 machine (Debian's
//! `ovmf` package) runs on tessera-vmm unchanged, because the machine offers what that build
//! looks for (see shared/research/ovmf-platform.md): the Q35 host bridge and ICH9 LPC bridge
//! (`devices::pci`), the ACPI block at 0x600, ECAM at 0xB000_0000, and here the flash below
//! 4 GiB and fw_cfg with the memory map and the ACPI tables.
//!
//! Flash: the code file read-only at the top, the variable store (a CFI flash,
//! `devices::pflash`) right below it, as QEMU maps two pflash units. A 4 MiB build's code is
//! 0x37C000 bytes and its store 0x84000: the store is what rounds the code up to a power of
//! two, which is how this module knows the size a store must have. A build whose single file
//! is already a power of two (OVMF.fd) carries its store inside and keeps variables in RAM.

use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use kvm_ioctls::VmFd;
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::arch::x86_64::acpi::{self, loader, Tables};
use crate::arch::x86_64::layout::{FIRMWARE_MAX_SIZE, FIRMWARE_TOP};
use crate::devices::fw_cfg::{FwCfg, FwCfgError};
use crate::devices::pflash::Pflash;
use crate::vstate::flash_memory::{memory_file, FlashMemory};
use crate::vstate::vm::VmError;

/// Smallest firmware taken for UEFI firmware (a 64 KiB block: the reset vector's).
const MIN_CODE: u64 = 64 << 10;
/// Flash granularity.
const PAGE: u64 = 4096;
/// The firmware volume header of a variable store (PI specification, volume 3): its length
/// at 0x20, the signature at 0x28, the header's length at 0x30.
const FV_LENGTH: usize = 0x20;
const FV_SIGNATURE: usize = 0x28;
const FV_HEADER_LENGTH: usize = 0x30;
/// e820 type of RAM.
const E820_RAM: u32 = 1;

/// Errors while loading firmware.
#[derive(Debug, thiserror::Error)]
pub enum FirmwareError {
    /// The code file cannot be read.
    #[error("cannot read the firmware {0}: {1}")]
    Read(PathBuf, std::io::Error),
    /// The code file has a size firmware cannot have.
    #[error("the firmware {path} is {size} bytes: UEFI firmware for tessera-vmm is a multiple of 4 KiB between 64 KiB and {max} MiB (an OVMF_CODE file)", max = FIRMWARE_MAX_SIZE >> 20)]
    CodeSize {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// The variable store does not match the firmware.
    #[error("the variable store {path} is {size} bytes, but this firmware needs a {want}-byte store: start it as a copy of the OVMF_VARS file that comes with the firmware (OVMF_VARS_4M.fd for OVMF_CODE_4M.fd)")]
    VarsSize {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The size the firmware needs (0: it keeps its own).
        want: u64,
    },
    /// The variable store is not one.
    #[error("the variable store {path} is corrupt ({why}): restore it from a backup, or start again from a copy of the firmware's OVMF_VARS file (the desktop's UEFI boot entries are then lost)")]
    VarsCorrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: &'static str,
    },
    /// No store given and no template beside the firmware.
    #[error("no variable store given and no template {0} beside the firmware: pass --firmware-vars PATH (a copy of the firmware's OVMF_VARS file)")]
    NoVarsTemplate(PathBuf),
    /// KVM cannot map read-only memory.
    #[error("this KVM cannot map read-only memory (no KVM_CAP_READONLY_MEM), which UEFI firmware's flash needs")]
    NoReadonlyMemory,
    /// Mapping the flash.
    #[error(transparent)]
    Vm(#[from] VmError),
    /// The anonymous store could not be made.
    #[error("cannot create a variable store in memory: {0}")]
    Memfd(std::io::Error),
    /// fw_cfg items (a VMM bug).
    #[error("fw_cfg: {0}")]
    FwCfg(#[from] FwCfgError),
}

/// Where the firmware's flash sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlashLayout {
    /// Guest-physical start of the code.
    pub code_start: u64,
    /// Code size.
    pub code_len: u64,
    /// Guest-physical start of the variable store (below the code).
    pub vars_start: u64,
    /// Store size; 0 when the firmware keeps its variables in its own image.
    pub vars_len: u64,
}

impl FlashLayout {
    /// The layout for a code file of `code_len` bytes.
    pub fn for_code(path: &std::path::Path, code_len: u64) -> Result<Self, FirmwareError> {
        if !(MIN_CODE..=FIRMWARE_MAX_SIZE).contains(&code_len) || !code_len.is_multiple_of(PAGE) {
            return Err(FirmwareError::CodeSize {
                path: path.to_path_buf(),
                size: code_len,
            });
        }
        let vars_len = code_len.next_power_of_two() - code_len;
        // At most FIRMWARE_MAX_SIZE in all: a power of two no smaller than the code.
        let code_start = FIRMWARE_TOP - code_len;
        Ok(Self {
            code_start,
            code_len,
            vars_start: code_start - vars_len,
            vars_len,
        })
    }
}

/// The firmware's flash, mapped.
pub struct Flash {
    /// Where it is.
    pub layout: FlashLayout,
    /// The code's slot (kept mapped for the VM's life).
    pub code: FlashMemory,
    /// The variable store, when the firmware has one apart from its code.
    pub vars: Option<Pflash<FlashMemory>>,
}

/// Checks that `store` is a firmware volume of its own length holding a variable store, as
/// OVMF needs: given a blank or damaged one, its variable driver erases the volume and then
/// fails to start (no variables, no boot entries, an unbootable firmware).
pub fn check_store(store: &[u8]) -> Result<(), &'static str> {
    let u16_at = |at: usize| {
        store
            .get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    if store.get(FV_SIGNATURE..FV_SIGNATURE + 4) != Some(b"_FVH".as_slice()) {
        return Err("no firmware volume header");
    }
    let length = store
        .get(FV_LENGTH..FV_LENGTH + 8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_le_bytes);
    if length != Some(store.len() as u64) {
        return Err("the firmware volume's length is not the file's");
    }
    let header = usize::from(u16_at(FV_HEADER_LENGTH).unwrap_or(0));
    if header < FV_HEADER_LENGTH + 2 || !header.is_multiple_of(2) || header + 16 > store.len() {
        return Err("the firmware volume header's length is wrong");
    }
    let sum = (0..header)
        .step_by(2)
        .fold(0u16, |a, at| a.wrapping_add(u16_at(at).unwrap_or(0)));
    if sum != 0 {
        return Err("the firmware volume header's checksum is wrong");
    }
    if store[header..header + 16].iter().all(|b| *b == 0xff) {
        return Err("the volume holds no variable store");
    }
    Ok(())
}

/// The template store that comes with `code` (Debian's and edk2's naming: OVMF_CODE_4M.fd
/// and OVMF_VARS_4M.fd side by side).
fn template_for(code: &std::path::Path) -> Option<PathBuf> {
    let name = code.file_name()?.to_str()?;
    name.contains("CODE")
        .then(|| code.with_file_name(name.replacen("CODE", "VARS", 1)))
}

/// Reads the whole store and checks it.
fn read_store(path: &std::path::Path, mut file: &File) -> Result<(), FirmwareError> {
    use std::io::{Read, Seek};
    let mut bytes = Vec::new();
    file.rewind()
        .and_then(|_| file.read_to_end(&mut bytes))
        .map_err(|e| FirmwareError::Read(path.to_path_buf(), e))?;
    check_store(&bytes).map_err(|why| FirmwareError::VarsCorrupt {
        path: path.to_path_buf(),
        why,
    })
}

/// Maps `code` (from `path`) and the store `vars` (or one in memory) into memory slots
/// `slots.0` and `slots.1`.
pub fn map_flash(
    vm: Arc<VmFd>,
    slots: (u32, u32),
    (path, code): (&std::path::Path, File),
    vars: Option<(PathBuf, File)>,
) -> Result<Flash, FirmwareError> {
    if !vm.check_extension(kvm_ioctls::Cap::ReadonlyMem) {
        return Err(FirmwareError::NoReadonlyMemory);
    }
    let size = |p: &std::path::Path, f: &File| {
        f.metadata()
            .map(|m| m.len())
            .map_err(|e| FirmwareError::Read(p.to_path_buf(), e))
    };
    let layout = FlashLayout::for_code(path, size(path, &code)?)?;
    let vars_file = match vars {
        Some((p, f)) => {
            let got = size(&p, &f)?;
            if got != layout.vars_len || got == 0 {
                return Err(FirmwareError::VarsSize {
                    path: p,
                    size: got,
                    want: layout.vars_len,
                });
            }
            read_store(&p, &f)?;
            Some(f)
        }
        None if layout.vars_len > 0 => {
            let template =
                template_for(path).unwrap_or_else(|| path.with_file_name("OVMF_VARS.fd"));
            let bytes = std::fs::read(&template)
                .map_err(|_| FirmwareError::NoVarsTemplate(template.clone()))?;
            if bytes.len() as u64 != layout.vars_len {
                return Err(FirmwareError::VarsSize {
                    path: template,
                    size: bytes.len() as u64,
                    want: layout.vars_len,
                });
            }
            check_store(&bytes).map_err(|why| FirmwareError::VarsCorrupt {
                path: template.clone(),
                why,
            })?;
            tracing::warn!(template = %template.display(), "no firmware variable store given: UEFI variables start from the template and last until the VMM exits");
            Some(memory_file(&bytes).map_err(FirmwareError::Memfd)?)
        }
        None => None,
    };
    let code = FlashMemory::new(
        vm.clone(),
        slots.0,
        layout.code_start,
        code,
        layout.code_len as usize,
        false,
    )?;
    let vars = vars_file
        .map(|f| {
            FlashMemory::new(
                vm,
                slots.1,
                layout.vars_start,
                f,
                layout.vars_len as usize,
                true,
            )
            .map(Pflash::new)
        })
        .transpose()?;
    Ok(Flash { layout, code, vars })
}

/// fw_cfg's `etc/e820`: each RAM region as QEMU lists it (u64 address, u64 length, u32
/// type, packed).
pub fn e820(memory: &GuestMemoryMmap) -> Vec<u8> {
    let mut out = Vec::new();
    for r in memory.iter() {
        out.extend_from_slice(&r.start_addr().0.to_le_bytes());
        out.extend_from_slice(&r.len().to_le_bytes());
        out.extend_from_slice(&E820_RAM.to_le_bytes());
    }
    out
}

/// The fw_cfg device for a firmware boot: the CPU count, the memory map, and the ACPI tables
/// with the loader script that places them.
pub fn fw_cfg(memory: &GuestMemoryMmap, platform: &acpi::Platform) -> Result<FwCfg, FirmwareError> {
    let mut cfg = FwCfg::new(memory.clone(), u16::from(platform.vcpus));
    cfg.add_file("etc/e820", e820(memory))?;
    let tables = Tables::new(platform);
    cfg.add_file(loader::TABLES_FILE, loader::tables_file(&tables))?;
    cfg.add_file(loader::LOADER_FILE, loader::table_loader(&tables))?;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use vm_memory::GuestAddress;

    #[test]
    fn debian_ovmf_sizes_give_qemus_layout() {
        let p = Path::new("OVMF_CODE_4M.fd");
        let l = FlashLayout::for_code(p, 0x37_c000).unwrap();
        assert_eq!(
            (l.code_start, l.vars_start, l.vars_len),
            (0xffc8_4000, 0xffc0_0000, 0x8_4000)
        );
        let l = FlashLayout::for_code(p, 0x1e_0000).unwrap();
        assert_eq!((l.vars_start, l.vars_len), (0xffe0_0000, 0x2_0000));
        // The unified image keeps its variables.
        assert_eq!(FlashLayout::for_code(p, 2 << 20).unwrap().vars_len, 0);
        for bad in [0, 4096, 0x37_c001, 9 << 20, u64::MAX] {
            assert!(FlashLayout::for_code(p, bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn stores_are_checked_before_the_firmware_sees_them() {
        let template = Path::new("/usr/share/OVMF/OVMF_VARS_4M.fd");
        let Ok(good) = std::fs::read(template) else {
            // Built from the header layout alone when Debian's ovmf is not installed.
            return check_synthetic_store();
        };
        assert_eq!(check_store(&good), Ok(()));
        let mut bad = good.clone();
        bad[FV_SIGNATURE] = b'X';
        assert!(check_store(&bad).is_err());
        let mut bad = good.clone();
        bad[0x40] ^= 1;
        assert!(check_store(&bad).unwrap_err().contains("checksum"));
        assert!(check_store(&good[..good.len() - 4096]).is_err());
        assert!(check_store(&vec![0xff; good.len()]).is_err());
        assert!(check_store(&[]).is_err());
        assert_eq!(
            template_for(Path::new("/usr/share/OVMF/OVMF_CODE_4M.fd")),
            Some(template.to_path_buf())
        );
    }

    fn check_synthetic_store() {
        let mut s = vec![0u8; 0x2000];
        s[FV_LENGTH..FV_LENGTH + 8].copy_from_slice(&0x2000u64.to_le_bytes());
        s[FV_SIGNATURE..FV_SIGNATURE + 4].copy_from_slice(b"_FVH");
        s[FV_HEADER_LENGTH..FV_HEADER_LENGTH + 2].copy_from_slice(&0x48u16.to_le_bytes());
        let sum = (0..0x48).step_by(2).fold(0u16, |a, i| {
            a.wrapping_add(u16::from_le_bytes([s[i], s[i + 1]]))
        });
        s[0x32..0x34].copy_from_slice(&0u16.wrapping_sub(sum).to_le_bytes());
        assert_eq!(check_store(&s), Ok(()));
        s[0x48..0x58].fill(0xff);
        assert!(check_store(&s).is_err());
    }

    #[test]
    fn e820_lists_ram_regions() {
        let m = GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0), 1 << 20),
            (GuestAddress(1 << 32), 2 << 20),
        ])
        .unwrap();
        let e = e820(&m);
        assert_eq!(e.len(), 40);
        assert_eq!(u64::from_le_bytes(e[20..28].try_into().unwrap()), 1 << 32);
        assert_eq!(u64::from_le_bytes(e[28..36].try_into().unwrap()), 2 << 20);
        assert_eq!(u32::from_le_bytes(e[36..40].try_into().unwrap()), 1);
    }
}
