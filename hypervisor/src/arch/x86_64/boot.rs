//! Linux direct boot: loads a bzImage or an ELF kernel, the initrd and the command line, and
//! fills the zero page (`struct boot_params`) with the e820 map.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::loader::bzimage::BzImage;
use linux_loader::loader::elf::Elf;
use linux_loader::loader::KernelLoader;
use vm_memory::{
    Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
};

use super::layout::{
    CMDLINE_MAX_SIZE, CMDLINE_START, EBDA_START, HIMEM_START, MMIO_HOLE_END, MMIO_HOLE_START,
    PCIE_ECAM_SIZE, PCIE_ECAM_START, ZERO_PAGE_START,
};

const ELF_MAGIC: [u8; 4] = [0x7f, b'E', b'L', b'F'];
const HDRS_MAGIC: u32 = 0x5372_6448;
const HDRS_OFFSET: u64 = 0x202;
const BOOT_FLAG_MAGIC: u16 = 0xaa55;
/// "Undefined" boot loader ID, as every VMM without an assigned one uses.
const LOADER_TYPE_UNDEFINED: u8 = 0xff;
const XLF_KERNEL_64: u16 = 1 << 0;
const E820_RAM: u32 = 1;
/// e820 type of reserved ranges.
const E820_RESERVED: u32 = 2;
/// The bzImage's 64-bit entry point sits 0x200 bytes past its load address.
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;
/// Default 16 MiB alignment Linux expects of an ELF kernel loaded without a setup header.
const ELF_KERNEL_ALIGNMENT: u32 = 0x100_0000;
/// Highest initrd address for boot protocols that do not say.
const DEFAULT_INITRD_ADDR_MAX: u64 = 0x37ff_ffff;

/// Kernel image formats tessera-vmm boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KernelFormat {
    /// A Linux bzImage, entered at its 64-bit entry point.
    BzImage,
    /// An ELF64 image (a vmlinux or a purpose-built test guest), entered at `e_entry`.
    Elf,
}

/// Errors while loading the kernel, initrd and command line.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// Reading the kernel file failed.
    #[error("cannot read the kernel image: {0}")]
    ReadKernel(std::io::Error),
    /// The file is neither a bzImage nor an ELF image.
    #[error("the kernel image is neither a Linux bzImage nor an ELF file")]
    NotAKernel,
    /// The bzImage lacks the 64-bit entry point (pre-3.x or 32-bit kernel).
    #[error("the bzImage has no 64-bit entry point (xloadflags lacks XLF_KERNEL_64); tessera-vmm boots x86_64 kernels only")]
    No64BitEntry,
    /// linux-loader rejected the image.
    #[error("cannot load the {format:?} kernel: {source:?}")]
    Load {
        /// The format detected.
        format: KernelFormat,
        /// linux-loader's error.
        source: linux_loader::loader::Error,
    },
    /// Reading the initrd file failed.
    #[error("cannot read the initrd: {0}")]
    ReadInitrd(std::io::Error),
    /// The initrd does not fit between the kernel and the end of low memory.
    #[error("the initrd ({size} bytes) does not fit in guest memory below {limit:#x}; give the VM more memory")]
    InitrdTooBig {
        /// Initrd size.
        size: u64,
        /// Highest usable address.
        limit: u64,
    },
    /// The command line is too long or holds a NUL byte.
    #[error("invalid kernel command line: {0}")]
    Cmdline(String),
    /// A boot structure could not be written to guest memory.
    #[error("cannot write the {0} into guest memory")]
    WriteGuest(&'static str),
}

/// Where the boot vCPU starts.
#[derive(Debug, Clone, Copy)]
pub struct BootEntry {
    /// Guest-physical address of the first instruction (64-bit mode).
    pub entry: u64,
    /// Guest-physical address of the zero page, passed in RSI.
    pub boot_params: u64,
    /// The image format that was loaded.
    pub format: KernelFormat,
}

/// Looks at the first bytes of the image to tell its format.
pub fn detect_format(kernel: &mut File) -> Result<KernelFormat, BootError> {
    let mut magic = [0u8; 4];
    kernel
        .seek(SeekFrom::Start(0))
        .map_err(BootError::ReadKernel)?;
    if kernel.read_exact(&mut magic).is_ok() && magic == ELF_MAGIC {
        return Ok(KernelFormat::Elf);
    }
    kernel
        .seek(SeekFrom::Start(HDRS_OFFSET))
        .map_err(BootError::ReadKernel)?;
    if kernel.read_exact(&mut magic).is_ok() && u32::from_le_bytes(magic) == HDRS_MAGIC {
        return Ok(KernelFormat::BzImage);
    }
    Err(BootError::NotAKernel)
}

/// The e820 map for `mem`: low RAM below the EBDA, then every region from 1 MiB up, and the
/// ECAM window reserved (Linux uses MCFG's area only once e820 or ACPI reserves it).
pub fn e820_map(mem: &GuestMemoryMmap) -> Vec<boot_e820_entry> {
    let mut map = vec![boot_e820_entry {
        addr: 0,
        size: EBDA_START,
        r#type: E820_RAM,
    }];
    for region in mem.iter() {
        let start = region.start_addr().raw_value().max(HIMEM_START);
        let end = region.start_addr().raw_value() + region.len();
        if end > start {
            map.push(boot_e820_entry {
                addr: start,
                size: end - start,
                r#type: E820_RAM,
            });
        }
    }
    map.push(boot_e820_entry {
        addr: PCIE_ECAM_START,
        size: PCIE_ECAM_SIZE,
        r#type: E820_RESERVED,
    });
    map.sort_by_key(|e| e.addr);
    map
}

/// Highest guest-physical address (exclusive) of RAM below the MMIO hole.
fn low_ram_end(mem: &GuestMemoryMmap) -> u64 {
    mem.iter()
        .map(|r| r.start_addr().raw_value() + r.len())
        .filter(|end| *end <= MMIO_HOLE_START)
        .max()
        .unwrap_or(0)
}

fn load_initrd(
    mem: &GuestMemoryMmap,
    initrd: &mut File,
    kernel_end: u64,
    addr_max: u64,
) -> Result<(u64, u64), BootError> {
    let size = initrd
        .seek(SeekFrom::End(0))
        .map_err(BootError::ReadInitrd)?;
    initrd
        .seek(SeekFrom::Start(0))
        .map_err(BootError::ReadInitrd)?;
    let limit = low_ram_end(mem)
        .min(addr_max.saturating_add(1))
        .min(MMIO_HOLE_END);
    let start = limit
        .checked_sub(size)
        .map(|a| a & !0xfff)
        .filter(|a| *a >= kernel_end && size <= usize::MAX as u64)
        .ok_or(BootError::InitrdTooBig { size, limit })?;
    mem.read_exact_volatile_from(GuestAddress(start), initrd, size as usize)
        .map_err(|e| BootError::ReadInitrd(std::io::Error::other(e.to_string())))?;
    Ok((start, size))
}

fn write_cmdline(mem: &GuestMemoryMmap, cmdline: &str, limit: usize) -> Result<(), BootError> {
    if cmdline.as_bytes().contains(&0) {
        return Err(BootError::Cmdline("it contains a NUL byte".into()));
    }
    if cmdline.len() + 1 > limit {
        return Err(BootError::Cmdline(format!(
            "{} bytes, the kernel accepts at most {}",
            cmdline.len(),
            limit - 1
        )));
    }
    let mut bytes = cmdline.as_bytes().to_vec();
    bytes.push(0);
    mem.write_slice(&bytes, GuestAddress(CMDLINE_START))
        .map_err(|_| BootError::WriteGuest("command line"))
}

/// Loads everything Linux's 64-bit boot protocol needs and returns where to start.
pub fn load(
    mem: &GuestMemoryMmap,
    kernel: &mut File,
    initrd: Option<&mut File>,
    cmdline: &str,
) -> Result<BootEntry, BootError> {
    let format = detect_format(kernel)?;
    let highmem = Some(GuestAddress(HIMEM_START));
    let loaded = match format {
        KernelFormat::BzImage => BzImage::load(mem, None, kernel, highmem),
        KernelFormat::Elf => Elf::load(mem, None, kernel, highmem),
    }
    .map_err(|source| BootError::Load { format, source })?;

    let mut params = boot_params::default();
    let entry = match loaded.setup_header {
        Some(hdr) => {
            if hdr.xloadflags & XLF_KERNEL_64 == 0 {
                return Err(BootError::No64BitEntry);
            }
            params.hdr = hdr;
            loaded.kernel_load.raw_value() + BZIMAGE_64BIT_ENTRY_OFFSET
        }
        None => {
            params.hdr.boot_flag = BOOT_FLAG_MAGIC;
            params.hdr.header = HDRS_MAGIC;
            params.hdr.kernel_alignment = ELF_KERNEL_ALIGNMENT;
            loaded.kernel_load.raw_value()
        }
    };
    params.hdr.type_of_loader = LOADER_TYPE_UNDEFINED;

    let cmdline_limit = match params.hdr.cmdline_size {
        0 => CMDLINE_MAX_SIZE,
        n => (n as usize + 1).min(CMDLINE_MAX_SIZE),
    };
    write_cmdline(mem, cmdline, cmdline_limit)?;
    params.hdr.cmd_line_ptr = CMDLINE_START as u32;
    params.hdr.cmdline_size = cmdline.len() as u32 + 1;

    if let Some(initrd) = initrd {
        let addr_max = match params.hdr.initrd_addr_max {
            0 => DEFAULT_INITRD_ADDR_MAX,
            n => u64::from(n),
        };
        let (start, size) = load_initrd(mem, initrd, loaded.kernel_end, addr_max)?;
        params.hdr.ramdisk_image = start as u32;
        params.hdr.ramdisk_size = size as u32;
    }

    let map = e820_map(mem);
    for (slot, entry) in params.e820_table.iter_mut().zip(map.iter()) {
        *slot = *entry;
    }
    params.e820_entries = map.len().min(params.e820_table.len()) as u8;
    mem.write_obj(params, GuestAddress(ZERO_PAGE_START))
        .map_err(|_| BootError::WriteGuest("zero page"))?;

    Ok(BootEntry {
        entry,
        boot_params: ZERO_PAGE_START,
        format,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn mem(size: usize) -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size)]).unwrap()
    }

    fn file_with(bytes: &[u8]) -> File {
        let mut f = tempfile();
        f.write_all(bytes).unwrap();
        f
    }

    fn tempfile() -> File {
        let path = std::env::temp_dir().join(format!(
            "tessera-boot-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let f = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        f
    }

    #[test]
    fn garbage_is_not_a_kernel() {
        let mut f = file_with(&[0x55; 4096]);
        assert!(matches!(detect_format(&mut f), Err(BootError::NotAKernel)));
        let mut empty = file_with(&[]);
        assert!(matches!(
            detect_format(&mut empty),
            Err(BootError::NotAKernel)
        ));
    }

    #[test]
    fn formats_are_detected() {
        let mut elf = file_with(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
        assert_eq!(detect_format(&mut elf).unwrap(), KernelFormat::Elf);
        let mut bz = vec![0u8; 0x400];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        let mut bz = file_with(&bz);
        assert_eq!(detect_format(&mut bz).unwrap(), KernelFormat::BzImage);
    }

    #[test]
    fn truncated_elf_is_a_load_error_not_a_panic() {
        let mut f = file_with(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
        let m = mem(4 << 20);
        assert!(matches!(
            load(&m, &mut f, None, ""),
            Err(BootError::Load { .. })
        ));
    }

    #[test]
    fn bzimage_header_without_body_is_rejected() {
        let mut bz = vec![0u8; 0x400];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        let mut f = file_with(&bz);
        let m = mem(4 << 20);
        assert!(load(&m, &mut f, None, "").is_err());
    }

    #[test]
    fn e820_skips_the_legacy_hole_and_reserves_ecam() {
        let m = GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0), MMIO_HOLE_START as usize),
            (GuestAddress(MMIO_HOLE_END), 1 << 30),
        ])
        .unwrap();
        let map = e820_map(&m);
        assert_eq!(map.len(), 4);
        assert_eq!({ map[0].size }, EBDA_START);
        assert_eq!({ map[1].addr }, HIMEM_START);
        assert_eq!({ map[1].size }, MMIO_HOLE_START - HIMEM_START);
        assert_eq!(
            ({ map[2].addr }, { map[2].size }, { map[2].r#type }),
            (PCIE_ECAM_START, PCIE_ECAM_SIZE, E820_RESERVED)
        );
        assert_eq!({ map[3].addr }, MMIO_HOLE_END);
    }

    #[test]
    fn cmdline_limits() {
        let m = mem(1 << 20);
        assert!(write_cmdline(&m, "console=ttyS0", 256).is_ok());
        assert!(matches!(
            write_cmdline(&m, "a\0b", 256),
            Err(BootError::Cmdline(_))
        ));
        assert!(matches!(
            write_cmdline(&m, &"x".repeat(256), 256),
            Err(BootError::Cmdline(_))
        ));
    }

    #[test]
    fn initrd_goes_high_and_page_aligned() {
        let m = mem(16 << 20);
        let mut f = file_with(&[7u8; 5000]);
        let (start, size) = load_initrd(&m, &mut f, 2 << 20, DEFAULT_INITRD_ADDR_MAX).unwrap();
        assert_eq!(size, 5000);
        assert_eq!(start & 0xfff, 0);
        assert!(start + size <= 16 << 20);
        let mut b = [0u8; 1];
        m.read_slice(&mut b, GuestAddress(start + 4999)).unwrap();
        assert_eq!(b[0], 7);
    }

    #[test]
    fn initrd_that_overlaps_kernel_is_refused() {
        let m = mem(4 << 20);
        let mut f = file_with(&vec![1u8; 3 << 20]);
        assert!(matches!(
            load_initrd(&m, &mut f, 2 << 20, DEFAULT_INITRD_ADDR_MAX),
            Err(BootError::InitrdTooBig { .. })
        ));
    }
}
