//! The VM configuration: one struct read from a TOML or JSON file and overridden by flags.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::arch::x86_64::mptable::MAX_CPUS;

mod disk;
mod display;
mod net;
mod tpm;
pub use disk::{CdromConfig, DiskBus, DiskConfig};
pub use display::DisplayConfig;
pub use net::{MacAddr, NetConfig, VhostMode};
pub use tpm::{TpmBackend, TpmConfig};

/// Kernel command line used when none is given: serial console, i8042 reset on reboot (there is
/// no ACPI yet), reboot instead of hanging on panic, and no I/O-delay writes to the debug port.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=k panic=-1 io_delay=none";
/// Default guest memory.
pub const DEFAULT_MEMORY: &str = "512M";

/// Errors in the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {0}: {1}")]
    Read(PathBuf, std::io::Error),
    /// The config file does not parse.
    #[error("invalid config file {0}: {1}")]
    Parse(PathBuf, String),
    /// No kernel given.
    #[error("nothing to boot: pass --kernel PATH (a Linux kernel) or --firmware PATH (UEFI firmware such as /usr/share/OVMF/OVMF_CODE_4M.fd), or set `kernel` or `firmware` in the config file")]
    NoKernel,
    /// A kernel and firmware both given.
    #[error(
        "give a kernel or UEFI firmware, not both (the firmware boots the kernel from the disks)"
    )]
    KernelAndFirmware,
    /// A setting that needs another one.
    #[error("`{0}` needs `{1}`")]
    Needs(&'static str, &'static str),
    /// A size does not parse.
    #[error("invalid size {0:?}: use a number with an optional K, M or G suffix (e.g. 512M)")]
    Size(String),
    /// vCPU count out of range.
    #[error("invalid vCPU count {0}: tessera-vmm runs 1 to {MAX_CPUS} vCPUs")]
    Vcpus(u16),
    /// Bad serial setting.
    #[error("invalid serial setting {0:?}: use stdout, off or file:PATH")]
    Serial(String),
    /// A bad --disk value.
    #[error("invalid disk {0:?}: {1} (expected path=IMAGE[,readonly=on][,queues=N][,datastore=DIR][,serial=ID])")]
    Disk(String, String),
    /// A bad --display value.
    #[error("invalid display {0:?}: {1} (expected spice-port=N[,addr=IP][,tls-port=N,x509-dir=DIR][,fps=N][,compression=MODE])")]
    Display(String, String),
    /// A bad --cdrom value.
    #[error("invalid DVD-ROM drive {0:?}: {1} (expected PATH or empty)")]
    Cdrom(String, String),
    /// More SATA devices than the controller has ports.
    #[error("{0} SATA disks and DVD-ROM drives: the AHCI controller has 6 ports")]
    TooManySata(usize),
    /// A bad --net value or `[[nets]]` table.
    #[error(
        "invalid NIC {0:?}: {1} (expected tap=NAME[,mac=52:54:00:xx:xx:xx][,queues=N][,mtu=N][,vhost=auto|on|off])"
    )]
    Net(String, String),
    /// A bad MAC address.
    #[error("invalid MAC address {0:?}: {1}")]
    Mac(String, String),
    /// Two NICs on one tap.
    #[error("two NICs on tap {0}: each NIC needs its own")]
    SameTap(String),
    /// A bad --tpm value or `[tpm]` table.
    #[error("invalid TPM setting {0:?}: {1} (expected state=DIR[,swtpm=PROGRAM] or socket=PATH)")]
    Tpm(String, String),
    /// A file named in the configuration is missing or unreadable.
    #[error("cannot open the {what} {path}: {source}")]
    File {
        /// "kernel", "initrd", "firmware" or "firmware variable store".
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// A memory size in bytes, written as `512M`, `2G`, `1048576`, `64MiB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct MemorySize(pub u64);

impl FromStr for MemorySize {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let lower = t.to_ascii_lowercase();
        let digits_end = lower
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(lower.len());
        let (num, unit) = lower.split_at(digits_end);
        let shift = match unit.trim_end_matches("ib").trim_end_matches('b') {
            "" => 0,
            "k" => 10,
            "m" => 20,
            "g" => 30,
            _ => return Err(ConfigError::Size(s.to_string())),
        };
        num.parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(1u64 << shift))
            .filter(|n| *n > 0)
            .map(MemorySize)
            .ok_or_else(|| ConfigError::Size(s.to_string()))
    }
}

impl TryFrom<String> for MemorySize {
    type Error = ConfigError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<MemorySize> for String {
    fn from(m: MemorySize) -> String {
        m.to_string()
    }
}

impl fmt::Display for MemorySize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        if b.is_multiple_of(1 << 30) {
            write!(f, "{}G", b >> 30)
        } else if b.is_multiple_of(1 << 20) {
            write!(f, "{}M", b >> 20)
        } else {
            write!(f, "{b}")
        }
    }
}

/// Where the serial console goes.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum SerialOutput {
    /// The VMM's standard output (and input from its standard input).
    #[default]
    Stdout,
    /// Discarded.
    Off,
    /// Appended to a file.
    File(PathBuf),
}

impl FromStr for SerialOutput {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "stdout" => Ok(Self::Stdout),
            "off" | "none" => Ok(Self::Off),
            _ => match s.strip_prefix("file:") {
                Some(p) if !p.is_empty() => Ok(Self::File(PathBuf::from(p))),
                _ => Err(ConfigError::Serial(s.to_string())),
            },
        }
    }
}

impl TryFrom<String> for SerialOutput {
    type Error = ConfigError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<SerialOutput> for String {
    fn from(s: SerialOutput) -> String {
        match s {
            SerialOutput::Stdout => "stdout".into(),
            SerialOutput::Off => "off".into(),
            SerialOutput::File(p) => format!("file:{}", p.display()),
        }
    }
}

fn default_memory() -> MemorySize {
    // DEFAULT_MEMORY is a constant that parses.
    DEFAULT_MEMORY.parse().unwrap_or(MemorySize(512 << 20))
}
fn default_serial_log_max() -> MemorySize {
    MemorySize(crate::devices::legacy::console_log::DEFAULT_MAX_BYTES)
}
fn default_vcpus() -> u16 {
    1
}
fn default_seccomp() -> bool {
    true
}
fn default_cmdline() -> String {
    DEFAULT_CMDLINE.to_string()
}

/// A VM's configuration, as in a config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    /// Kernel image: a bzImage or an ELF file.
    pub kernel: Option<PathBuf>,
    /// Initial ramdisk.
    #[serde(default)]
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    #[serde(default = "default_cmdline")]
    pub cmdline: String,
    /// Guest memory.
    #[serde(default = "default_memory")]
    pub memory: MemorySize,
    /// vCPU count.
    #[serde(default = "default_vcpus")]
    pub vcpus: u16,
    /// Serial console destination.
    #[serde(default)]
    pub serial: SerialOutput,
    /// With `serial = "file:PATH"`: the file is rotated to `PATH.1` at this size, so a guest
    /// can fill at most twice it of the host's disk.
    #[serde(default = "default_serial_log_max")]
    pub serial_log_max: MemorySize,
    /// Control API socket; no API when absent.
    #[serde(default)]
    pub api_socket: Option<PathBuf>,
    /// Disks: virtio-blk ones in PCI slot order (the first is /dev/vda in a Linux guest), SATA
    /// ones on the AHCI controller's ports in this order.
    #[serde(default)]
    pub disks: Vec<DiskConfig>,
    /// DVD-ROM drives on the AHCI controller, after its SATA disks.
    #[serde(default)]
    pub cdroms: Vec<CdromConfig>,
    /// NICs: virtio-net devices on tap interfaces, in PCI slot order after the disks.
    #[serde(default)]
    pub nets: Vec<NetConfig>,
    /// A display adapter served over SPICE; none when absent.
    #[serde(default)]
    pub display: Option<DisplayConfig>,
    /// Seccomp filters on every thread (see [`crate::sandbox`]); off only to debug the VMM
    /// or on a kernel without seccomp.
    #[serde(default = "default_seccomp")]
    pub seccomp: bool,
    /// What a guest's reboot does: end the VMM (exit status 0), or restart the VM in this
    /// process, the display's clients staying connected.
    #[serde(default)]
    pub on_reboot: OnReboot,
    /// Hyper-V enlightenments (see [`crate::arch::x86_64::hyperv`]): for Windows guests.
    #[serde(default)]
    pub hyperv: bool,
    /// UEFI firmware to boot instead of a kernel: the code of an OVMF build for QEMU's q35
    /// (Debian's `/usr/share/OVMF/OVMF_CODE_4M.fd`), mapped read-only below 4 GiB.
    #[serde(default)]
    pub firmware: Option<PathBuf>,
    /// The VM's own UEFI variable store (boot entries, Secure Boot keys), written in place as
    /// the firmware changes variables: start it as a copy of the firmware's template
    /// (`OVMF_VARS_4M.fd`). Without it, variables last until the VMM exits.
    #[serde(default)]
    pub firmware_vars: Option<PathBuf>,
    /// A TPM 2.0 (CRB interface, what Windows 11 requires) backed by swtpm; none when absent.
    #[serde(default)]
    pub tpm: Option<TpmConfig>,
}

/// What a guest's reboot (a reset through ACPI's reset register or the i8042) does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum OnReboot {
    /// The VMM exits with status 0 (what scripts and tests that end a VM by a reset expect).
    #[default]
    Exit,
    /// The machine is reset in place and boots again: devices and vCPUs as built, the kernel
    /// loaded afresh; memory, disks and the display's clients stay.
    Restart,
}

impl Default for VmConfig {
    fn default() -> Self {
        Self {
            kernel: None,
            initrd: None,
            cmdline: default_cmdline(),
            memory: default_memory(),
            vcpus: default_vcpus(),
            serial: SerialOutput::default(),
            serial_log_max: default_serial_log_max(),
            api_socket: None,
            disks: Vec::new(),
            cdroms: Vec::new(),
            nets: Vec::new(),
            display: None,
            seccomp: default_seccomp(),
            on_reboot: OnReboot::default(),
            hyperv: false,
            firmware: None,
            firmware_vars: None,
            tpm: None,
        }
    }
}

impl VmConfig {
    /// Reads a config file: JSON if it ends in `.json`, TOML otherwise.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| ConfigError::Read(path.to_path_buf(), e))?;
        let parsed = if path.extension().is_some_and(|e| e == "json") {
            serde_json::from_str(&text).map_err(|e| e.to_string())
        } else {
            // toml's Display spans several lines with a source excerpt; keep the error to one.
            toml::from_str(&text).map_err(|e| {
                let line = e.span().map_or(0, |s| {
                    text[..s.start.min(text.len())].lines().count().max(1)
                });
                format!("line {line}: {}", e.message().trim())
            })
        };
        parsed.map_err(|e| ConfigError::Parse(path.to_path_buf(), e))
    }

    /// SATA disks and DVD-ROM drives: the AHCI controller's devices.
    pub fn sata_devices(&self) -> usize {
        self.disks.iter().filter(|d| d.bus == DiskBus::Sata).count() + self.cdroms.len()
    }

    /// Checks everything that can be checked before touching KVM.
    pub fn validate(&self) -> Result<ValidConfig, ConfigError> {
        let vcpus = u8::try_from(self.vcpus)
            .ok()
            .filter(|n| (1..=MAX_CPUS).contains(n))
            .ok_or(ConfigError::Vcpus(self.vcpus))?;
        if let Some(d) = &self.display {
            d.check()?;
        }
        let boot = match (&self.kernel, &self.firmware) {
            (None, None) => return Err(ConfigError::NoKernel),
            (Some(_), Some(_)) => return Err(ConfigError::KernelAndFirmware),
            (Some(kernel), None) => {
                if self.firmware_vars.is_some() {
                    return Err(ConfigError::Needs("firmware_vars", "firmware"));
                }
                BootFiles::Kernel {
                    kernel: open_file("kernel", kernel, false)?,
                    initrd: self
                        .initrd
                        .as_deref()
                        .map(|p| open_file("initrd", p, false))
                        .transpose()?,
                }
            }
            (None, Some(code)) => {
                if self.initrd.is_some() {
                    return Err(ConfigError::Needs("initrd", "kernel"));
                }
                BootFiles::Firmware {
                    code: open_file("firmware", code, false)?,
                    vars: self
                        .firmware_vars
                        .as_deref()
                        .map(|p| {
                            open_file("firmware variable store", p, true)
                                .map(|f| (p.to_path_buf(), f))
                        })
                        .transpose()?,
                }
            }
        };
        let sata = self.sata_devices();
        if sata > crate::devices::ahci::hba::PORTS {
            return Err(ConfigError::TooManySata(sata));
        }
        for (i, n) in self.nets.iter().enumerate() {
            n.check()?;
            if self.nets[..i].iter().any(|o| o.tap == n.tap) {
                return Err(ConfigError::SameTap(n.tap.clone()));
            }
        }
        let tpm = self.tpm.as_ref().map(TpmConfig::backend).transpose()?;
        Ok(ValidConfig {
            config: self.clone(),
            vcpus,
            boot,
            tpm,
        })
    }
}

/// Opens a file the configuration names (read-write when `write`), refusing directories.
fn open_file(what: &'static str, path: &Path, write: bool) -> Result<std::fs::File, ConfigError> {
    std::fs::File::options()
        .read(true)
        .write(write)
        .open(path)
        .and_then(|f| {
            if f.metadata()?.is_dir() {
                Err(std::io::Error::other("it is a directory"))
            } else {
                Ok(f)
            }
        })
        .map_err(|source| ConfigError::File {
            what,
            path: path.to_path_buf(),
            source,
        })
}

/// What the machine boots, its files open.
#[derive(Debug)]
pub enum BootFiles {
    /// A Linux kernel, loaded by the VMM.
    Kernel {
        /// The kernel image.
        kernel: std::fs::File,
        /// The initrd.
        initrd: Option<std::fs::File>,
    },
    /// UEFI firmware, which boots what the disks hold.
    Firmware {
        /// The firmware's code.
        code: std::fs::File,
        /// The variable store (path, file open for writing), if the VM has its own.
        vars: Option<(PathBuf, std::fs::File)>,
    },
}

/// A checked configuration with its files open.
#[derive(Debug)]
pub struct ValidConfig {
    /// The configuration as given.
    pub config: VmConfig,
    /// vCPU count, in range.
    pub vcpus: u8,
    /// What the machine boots.
    pub boot: BootFiles,
    /// Where its TPM comes from, if it has one.
    pub tpm: Option<TpmBackend>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!("512M".parse::<MemorySize>().unwrap().0, 512 << 20);
        assert_eq!("2g".parse::<MemorySize>().unwrap().0, 2 << 30);
        assert_eq!("64MiB".parse::<MemorySize>().unwrap().0, 64 << 20);
        assert_eq!("4096".parse::<MemorySize>().unwrap().0, 4096);
        for bad in ["", "M", "12X", "-1M", "0", "99999999999999999999G", "1.5G"] {
            assert!(bad.parse::<MemorySize>().is_err(), "{bad}");
        }
        assert_eq!(MemorySize(512 << 20).to_string(), "512M");
    }

    #[test]
    fn toml_and_json_agree() {
        let dir = std::env::temp_dir().join(format!("tessera-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let t = dir.join("vm.toml");
        std::fs::write(
            &t,
            "kernel = \"/k\"\nmemory = \"1G\"\nvcpus = 2\nserial = \"file:/tmp/x\"\n",
        )
        .unwrap();
        let j = dir.join("vm.json");
        std::fs::write(
            &j,
            r#"{"kernel": "/k", "memory": "1G", "vcpus": 2, "serial": "file:/tmp/x"}"#,
        )
        .unwrap();
        let a = VmConfig::from_file(&t).unwrap();
        let b = VmConfig::from_file(&j).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.memory.0, 1 << 30);
        assert_eq!(a.cmdline, DEFAULT_CMDLINE);
        assert_eq!(a.serial, SerialOutput::File("/tmp/x".into()));
        std::fs::write(&t, "kernel = \"/k\"\nmemroy = \"1G\"\n").unwrap();
        assert!(matches!(
            VmConfig::from_file(&t),
            Err(ConfigError::Parse(..))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn validation_names_the_problem() {
        let mut c = VmConfig::default();
        assert!(matches!(c.validate(), Err(ConfigError::NoKernel)));
        c.kernel = Some("/nonexistent/bzImage".into());
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("kernel") && e.contains("/nonexistent/bzImage"),
            "{e}"
        );
        c.kernel = Some("/".into());
        assert!(c.validate().unwrap_err().to_string().contains("directory"));
        c.kernel = Some("/proc/self/exe".into());
        c.vcpus = 0;
        assert!(matches!(c.validate(), Err(ConfigError::Vcpus(0))));
        c.vcpus = 300;
        assert!(matches!(c.validate(), Err(ConfigError::Vcpus(300))));
        c.vcpus = 2;
        assert_eq!(c.validate().unwrap().vcpus, 2);
    }

    #[test]
    fn serial_settings() {
        assert_eq!("off".parse::<SerialOutput>().unwrap(), SerialOutput::Off);
        assert!("file:".parse::<SerialOutput>().is_err());
        assert!("tty".parse::<SerialOutput>().is_err());
    }
}
