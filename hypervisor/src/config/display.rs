//! Display configuration: `--display spice-port=N[,addr=IP][,tls-port=N,x509-dir=DIR][,fps=N]
//! [,compression=MODE][,usb=on|off]` on the command line, a `[display]` table in a config
//! file. With a display the VM gets the bochs adapter, a virtio tablet and (unless usb=off) an
//! xHCI controller with a USB tablet and keyboard, and its screen, keyboard and mouse are
//! served over SPICE; clients need a ticket set through the control API.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tessera_display_proto::Compression;

use super::ConfigError;

fn default_address() -> IpAddr {
    IpAddr::from([127, 0, 0, 1])
}
fn default_fps() -> u32 {
    30
}
fn default_compression() -> Compression {
    Compression::AutoGlz
}
fn default_usb() -> bool {
    true
}

/// The display and its SPICE server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisplayConfig {
    /// Address SPICE listens on [default: 127.0.0.1; a gateway or the host's address for
    /// remote clients].
    #[serde(default = "default_address")]
    pub address: IpAddr,
    /// Plain-text port; leave out for TLS only.
    #[serde(default)]
    pub port: Option<u16>,
    /// TLS port; needs `x509_dir`.
    #[serde(default)]
    pub tls_port: Option<u16>,
    /// Directory with ca-cert.pem, server-cert.pem and server-key.pem (QEMU's layout).
    #[serde(default)]
    pub x509_dir: Option<PathBuf>,
    /// Most screen updates per second [default: 30].
    #[serde(default = "default_fps")]
    pub fps: u32,
    /// Image compression: off, auto_glz, auto_lz, quic, glz, lz, lz4 [default: auto_glz].
    #[serde(default = "default_compression")]
    pub compression: Compression,
    /// A USB tablet and keyboard on an xHCI controller, which Windows drives without added
    /// drivers (the PS/2 keyboard and the virtio tablet stay) [default: true].
    #[serde(default = "default_usb")]
    pub usb: bool,
}

fn bad(s: &str, why: impl Into<String>) -> ConfigError {
    ConfigError::Display(s.to_string(), why.into())
}

impl DisplayConfig {
    /// Checks ports, rate and certificate files.
    pub fn check(&self) -> Result<(), ConfigError> {
        let me = self.to_string();
        if self.port.is_none() && self.tls_port.is_none() {
            return Err(bad(&me, "give spice-port, tls-port or both"));
        }
        if self.port.is_some() && self.port == self.tls_port {
            return Err(bad(&me, "spice-port and tls-port must differ"));
        }
        if !(1..=120).contains(&self.fps) {
            return Err(bad(&me, "fps is 1 to 120"));
        }
        match (&self.tls_port, &self.x509_dir) {
            (Some(_), None) => return Err(bad(&me, "tls-port needs x509-dir")),
            (_, Some(dir)) => {
                for f in ["ca-cert.pem", "server-cert.pem", "server-key.pem"] {
                    if !dir.join(f).is_file() {
                        return Err(bad(&me, format!("{} has no {f}", dir.display())));
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

impl FromStr for DisplayConfig {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut d = DisplayConfig {
            address: default_address(),
            port: None,
            tls_port: None,
            x509_dir: None,
            fps: default_fps(),
            compression: default_compression(),
            usb: default_usb(),
        };
        let port = |v: &str| {
            v.parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| bad(s, format!("{v:?} is not a port")))
        };
        for part in s.split(',').filter(|p| !p.is_empty()) {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| bad(s, format!("{part:?} is not key=value")))?;
            match key {
                "spice-port" => d.port = Some(port(value)?),
                "tls-port" => d.tls_port = Some(port(value)?),
                "addr" => {
                    d.address = value
                        .parse()
                        .map_err(|_| bad(s, format!("{value:?} is not an IP address")))?
                }
                "x509-dir" => d.x509_dir = Some(PathBuf::from(value)),
                "usb" => {
                    d.usb = match value {
                        "on" => true,
                        "off" => false,
                        _ => return Err(bad(s, "usb is on or off")),
                    }
                }
                "fps" => {
                    d.fps = value
                        .parse()
                        .map_err(|_| bad(s, format!("fps {value:?} is not a number")))?
                }
                "compression" => {
                    d.compression =
                        serde_json::from_value(serde_json::Value::String(value.to_string()))
                            .map_err(|_| {
                                bad(
                                    s,
                                    "compression is off, auto_glz, auto_lz, quic, glz, lz or lz4",
                                )
                            })?
                }
                other => return Err(bad(s, format!("unknown key {other:?}"))),
            }
        }
        Ok(d)
    }
}

impl fmt::Display for DisplayConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "addr={}", self.address)?;
        if let Some(p) = self.port {
            write!(f, ",spice-port={p}")?;
        }
        if let Some(p) = self.tls_port {
            write!(f, ",tls-port={p}")?;
        }
        if let Some(d) = &self.x509_dir {
            write!(f, ",x509-dir={}", d.display())?;
        }
        write!(f, ",fps={}", self.fps)?;
        if !self.usb {
            write!(f, ",usb=off")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_checks() {
        let d: DisplayConfig = "spice-port=5930,fps=60,compression=lz4".parse().unwrap();
        assert_eq!(d.port, Some(5930));
        assert_eq!(d.fps, 60);
        assert_eq!(d.compression, Compression::Lz4);
        assert_eq!(d.address, default_address());
        d.check().unwrap();
        for bad in [
            "spice-port=0",
            "spice-port=x",
            "addr=nowhere,spice-port=1",
            "spice-port=1,colour=blue",
            "spice-port",
            "spice-port=1,compression=zip",
        ] {
            assert!(bad.parse::<DisplayConfig>().is_err(), "{bad}");
        }
        for unusable in [
            "fps=30",
            "spice-port=5930,fps=0",
            "spice-port=5930,tls-port=5930,x509-dir=/nonexistent",
            "tls-port=5931",
            "tls-port=5931,x509-dir=/nonexistent",
        ] {
            let d: DisplayConfig = unusable.parse().unwrap();
            assert!(d.check().is_err(), "{unusable}");
        }
    }
}
