//! Disk configuration: `--disk path=IMAGE[,format=qcow2|raw][,readonly=on][,queues=N]
//! [,datastore=DIR][,serial=ID][,bus=virtio|sata]` on the command line, `[[disks]]` tables in
//! a config file; and DVD-ROM drives, `--cdrom PATH|empty`, `[[cdroms]]` tables.
//!
//! The format is said, never guessed from the image's first bytes: a guest can write a qcow2
//! header into its raw disk, and a VMM that probed would next time read it as an overlay of
//! whatever file the guest named.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use tessera_storage::Format;

use super::ConfigError;
use crate::devices::virtio::block::MAX_QUEUES;

/// Where a disk is attached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskBus {
    /// virtio-blk: the fastest, for guests with virtio drivers (Linux; Windows with
    /// virtio-win's).
    #[default]
    Virtio,
    /// A SATA disk on the AHCI controller: what any guest drives without added drivers
    /// (Windows' installer before virtio-win's drivers are loaded).
    Sata,
}

/// One disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskConfig {
    /// The image: raw or qcow2 (its backing chain is opened too).
    pub path: PathBuf,
    /// Its format (default qcow2, what Tessera's clones are); backing files are opened in the
    /// format each image records.
    #[serde(default = "qcow2")]
    pub format: Format,
    /// Expose the disk read-only (writes fail in the guest).
    #[serde(default)]
    pub readonly: bool,
    /// Queues; default: one per vCPU (at most 16).
    #[serde(default)]
    pub queues: Option<u16>,
    /// Directory every file of the backing chain must be inside; default: the image's own
    /// directory. Backing paths that leave it are refused.
    #[serde(default)]
    pub datastore: Option<PathBuf>,
    /// Serial number the guest reads (GET_ID, /sys/block/vdX/serial; IDENTIFY on SATA); at
    /// most 20 bytes.
    #[serde(default)]
    pub serial: Option<String>,
    /// Where it is attached (default virtio); `queues` is virtio's alone.
    #[serde(default)]
    pub bus: DiskBus,
}

/// A DVD-ROM drive on the AHCI controller, with a disc image (ISO 9660 or UDF, read-only) or
/// empty.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CdromConfig {
    /// The disc's image; none: an empty drive.
    #[serde(default)]
    pub path: Option<PathBuf>,
}

impl FromStr for CdromConfig {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let path = s.strip_prefix("path=").unwrap_or(s);
        match path {
            "" => Err(ConfigError::Cdrom(
                s.to_string(),
                "give the disc's image, or empty".to_string(),
            )),
            "empty" => Ok(Self { path: None }),
            p => Ok(Self {
                path: Some(PathBuf::from(p)),
            }),
        }
    }
}

impl fmt::Display for CdromConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(p) => write!(f, "path={}", p.display()),
            None => write!(f, "empty"),
        }
    }
}

fn qcow2() -> Format {
    Format::Qcow2
}

fn bad(s: &str, why: &str) -> ConfigError {
    ConfigError::Disk(s.to_string(), why.to_string())
}

fn on_off(value: &str, whole: &str) -> Result<bool, ConfigError> {
    match value {
        "on" | "true" | "yes" | "1" => Ok(true),
        "off" | "false" | "no" | "0" => Ok(false),
        _ => Err(bad(whole, "readonly takes on or off")),
    }
}

impl FromStr for DiskConfig {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut disk = DiskConfig {
            path: PathBuf::new(),
            format: Format::Qcow2,
            readonly: false,
            queues: None,
            datastore: None,
            serial: None,
            bus: DiskBus::Virtio,
        };
        for (i, part) in s.split(',').enumerate() {
            let (key, value) = match part.split_once('=') {
                Some(kv) => kv,
                // A bare first item is the path.
                None if i == 0 => ("path", part),
                None => return Err(bad(s, &format!("{part:?} is not key=value"))),
            };
            match key {
                "path" => disk.path = PathBuf::from(value),
                "format" => {
                    disk.format =
                        Format::from_name(value).map_err(|_| bad(s, "format takes qcow2 or raw"))?
                }
                "readonly" => disk.readonly = on_off(value, s)?,
                "queues" => {
                    let n = value
                        .parse::<u16>()
                        .ok()
                        .filter(|n| (1..=MAX_QUEUES).contains(n))
                        .ok_or_else(|| bad(s, &format!("queues takes 1 to {MAX_QUEUES}")))?;
                    disk.queues = Some(n);
                }
                "datastore" => disk.datastore = Some(PathBuf::from(value)),
                "serial" => disk.serial = Some(value.to_string()),
                "bus" => {
                    disk.bus = match value {
                        "virtio" => DiskBus::Virtio,
                        "sata" => DiskBus::Sata,
                        _ => return Err(bad(s, "bus takes virtio or sata")),
                    }
                }
                _ => return Err(bad(s, &format!("unknown key {key:?}"))),
            }
        }
        if disk.path.as_os_str().is_empty() {
            return Err(bad(s, "no path"));
        }
        Ok(disk)
    }
}

impl fmt::Display for DiskConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "path={},format={}",
            self.path.display(),
            self.format.name()
        )?;
        if self.readonly {
            write!(f, ",readonly=on")?;
        }
        if let Some(q) = self.queues {
            write!(f, ",queues={q}")?;
        }
        if let Some(d) = &self.datastore {
            write!(f, ",datastore={}", d.display())?;
        }
        if let Some(s) = &self.serial {
            write!(f, ",serial={s}")?;
        }
        if self.bus == DiskBus::Sata {
            write!(f, ",bus=sata")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_command_line_form() {
        let d: DiskConfig = "/vm/a.qcow2".parse().unwrap();
        assert_eq!(d.path, PathBuf::from("/vm/a.qcow2"));
        assert!(!d.readonly);
        assert_eq!(d.format, Format::Qcow2, "the default");
        let d: DiskConfig =
            "path=/vm/a.img,format=raw,readonly=on,queues=4,datastore=/vm,serial=X1,bus=sata"
                .parse()
                .unwrap();
        assert_eq!(d.format, Format::Raw);
        assert!(d.readonly);
        assert_eq!(d.queues, Some(4));
        assert_eq!(d.datastore, Some(PathBuf::from("/vm")));
        assert_eq!(d.serial.as_deref(), Some("X1"));
        assert_eq!(d.bus, DiskBus::Sata);
        assert_eq!(d.to_string().parse::<DiskConfig>().unwrap(), d);
        for bad in [
            "",
            "readonly=on",
            "/a,queues=0",
            "/a,queues=99",
            "/a,readonly=maybe",
            "/a,colour=red",
            "/a,ro",
            "/a,format=vmdk",
            "/a,bus=ide",
        ] {
            assert!(bad.parse::<DiskConfig>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_cdrom_is_an_image_or_empty() {
        let c: CdromConfig = "/iso/win11.iso".parse().unwrap();
        assert_eq!(c.path, Some(PathBuf::from("/iso/win11.iso")));
        assert_eq!(c.to_string().parse::<CdromConfig>().unwrap(), c);
        let e: CdromConfig = "empty".parse().unwrap();
        assert_eq!(e.path, None);
        assert_eq!(e.to_string().parse::<CdromConfig>().unwrap(), e);
        assert!("".parse::<CdromConfig>().is_err());
        assert!("path=".parse::<CdromConfig>().is_err());
    }
}
