//! The VMs' displays on this host: each VM defined with a display gets a SPICE port from the
//! host's range when it starts (TLS only when the host has certificates, which it must unless
//! SPICE listens on loopback), the port is recorded beside the VM so that a restarted agent
//! still knows it, and the broker sets one-time tickets through the agent.

use std::net::{IpAddr, TcpListener};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

fn default_listen() -> IpAddr {
    IpAddr::from([127, 0, 0, 1])
}
fn default_first_port() -> u16 {
    5900
}
fn default_ports() -> u16 {
    100
}

/// `[display]` in the agent's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisplayConfig {
    /// Address the VMs' SPICE servers listen on [default: 127.0.0.1].
    #[serde(default = "default_listen")]
    pub listen: IpAddr,
    /// Name or address clients reach them at [default: `listen`].
    #[serde(default)]
    pub advertise: Option<String>,
    /// First port of the range [default: 5900].
    #[serde(default = "default_first_port")]
    pub first_port: u16,
    /// Ports in the range, one per running VM [default: 100].
    #[serde(default = "default_ports")]
    pub ports: u16,
    /// ca-cert.pem, server-cert.pem, server-key.pem: SPICE over TLS only. Required unless
    /// `listen` is a loopback address.
    #[serde(default)]
    pub x509_dir: Option<PathBuf>,
}

impl Default for DisplayConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            advertise: None,
            first_port: default_first_port(),
            ports: default_ports(),
            x509_dir: None,
        }
    }
}

impl DisplayConfig {
    /// Checks the rules: TLS off loopback, a range that fits, the certificate files.
    pub fn check(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.ports == 0 || u32::from(self.first_port) + u32::from(self.ports) > 65536 {
            return bad("[display] first_port + ports must stay within 1-65535".into());
        }
        if self.first_port == 0 {
            return bad("[display] first_port must be above 0".into());
        }
        match &self.x509_dir {
            Some(dir) => {
                for f in ["ca-cert.pem", "server-cert.pem", "server-key.pem"] {
                    if !dir.join(f).is_file() {
                        return bad(format!("[display] x509_dir {} has no {f}", dir.display()));
                    }
                }
            }
            None if !self.listen.is_loopback() => {
                return bad(format!(
                    "[display] listen = {} carries desktops over the network: set x509_dir \
                     (SPICE over TLS), or listen on loopback",
                    self.listen
                ))
            }
            None => {}
        }
        Ok(())
    }

    /// The host clients connect to.
    pub fn host(&self) -> String {
        self.advertise
            .clone()
            .unwrap_or_else(|| self.listen.to_string())
    }
}

/// Where a VM's display is reached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisplayEndpoint {
    /// Host clients connect to.
    pub host: String,
    /// Plain-text port (loopback hosts without certificates).
    pub port: Option<u16>,
    /// TLS port.
    pub tls_port: Option<u16>,
    /// The CA clients must trust for TLS (PEM).
    pub ca: Option<String>,
}

/// The endpoint recorded for the VM in `dir`, if it has one.
pub fn recorded(dir: &Path) -> Option<DisplayEndpoint> {
    let text = std::fs::read_to_string(dir.join("display.json")).ok()?;
    serde_json::from_str(&text).ok()
}

/// Picks a port of the range that no other VM records and nothing listens on, records the
/// endpoint in `dir` and returns it with the `[display]` table for the VMM's config.
pub fn allocate(
    cfg: &DisplayConfig,
    dir: &Path,
    taken: &[u16],
) -> Result<(DisplayEndpoint, toml::Table), String> {
    let taken: std::collections::HashSet<u16> = taken.iter().copied().collect();
    let port = (cfg.first_port..cfg.first_port.saturating_add(cfg.ports))
        .filter(|p| !taken.contains(p))
        .find(|p| TcpListener::bind((cfg.listen, *p)).is_ok())
        .ok_or_else(|| {
            format!(
                "no free display port in {}-{}",
                cfg.first_port,
                u32::from(cfg.first_port) + u32::from(cfg.ports) - 1
            )
        })?;
    let mut t = toml::Table::new();
    t.insert(
        "address".into(),
        toml::Value::String(cfg.listen.to_string()),
    );
    let endpoint = match &cfg.x509_dir {
        Some(x509) => {
            t.insert("tls_port".into(), toml::Value::Integer(i64::from(port)));
            t.insert(
                "x509_dir".into(),
                toml::Value::String(x509.display().to_string()),
            );
            DisplayEndpoint {
                host: cfg.host(),
                port: None,
                tls_port: Some(port),
                ca: std::fs::read_to_string(x509.join("ca-cert.pem")).ok(),
            }
        }
        None => {
            t.insert("port".into(), toml::Value::Integer(i64::from(port)));
            DisplayEndpoint {
                host: cfg.host(),
                port: Some(port),
                tls_port: None,
                ca: None,
            }
        }
    };
    let json = serde_json::to_vec_pretty(&endpoint).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("display.json"), json).map_err(|e| e.to_string())?;
    Ok((endpoint, t))
}

impl DisplayEndpoint {
    /// The port in use, whichever kind.
    pub fn any_port(&self) -> Option<u16> {
        self.tls_port.or(self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_displays_need_tls_and_ports_are_unique() {
        let mut c = DisplayConfig::default();
        c.check().unwrap();
        c.listen = "0.0.0.0".parse().unwrap();
        assert!(c.check().unwrap_err().to_string().contains("TLS"));
        c.listen = default_listen();
        c.first_port = 65500;
        assert!(c.check().is_err());
        c.first_port = 24_000;
        c.ports = 50;
        let dir = std::env::temp_dir().join(format!("tessera-display-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, t) = allocate(&c, &dir, &[]).unwrap();
        assert_eq!(recorded(&dir), Some(a.clone()));
        assert!(t.contains_key("port"));
        // A port taken by another VM, or bound by anyone, is skipped.
        let busy = TcpListener::bind((c.listen, 24_001)).unwrap();
        let (b, _) = allocate(&c, &dir, &[a.port.unwrap()]).unwrap();
        assert_eq!(b.port, Some(24_002));
        drop(busy);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
