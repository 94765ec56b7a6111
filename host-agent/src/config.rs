//! The agent's configuration (TOML), validated at start-up.
//!
//! ```toml
//! name = "host-01"                      # default: the machine's host name
//! listen = "0.0.0.0:8443"               # HTTPS with [tls]; or "unix:/run/tessera-agent/agent.sock"
//!                                       # (no TLS: only the agent's own user can connect)
//! state_dir = "/var/lib/tessera-agent"  # VM definitions, sockets, console logs
//! vmm = "/usr/bin/tessera-vmm"          # default: next to tessera-agent, else on PATH
//! console_log_max_mib = 16             # each VM's console.log, rotated (one old part kept)
//! guest_shutdown_timeout_secs = 60      # a stop presses the ACPI power button, then waits
//!                                       # this long for the guest OS before powering off
//! library = "/var/lib/tessera/library"  # golden images, kernels, initrds: the only place the
//!                                       # broker may name them from (default shown)
//! [[datastore]]
//! name = "ds1"
//! path = "/srv/tessera/ds1"
//! [tls]                                 # mutual TLS: the broker's CA signs both sides
//! cert = "/etc/tessera/agent.pem"
//! key = "/etc/tessera/agent.key"
//! client_ca = "/etc/tessera/ca.pem"
//! [display]                             # the VMs' SPICE servers (see display.rs)
//! listen = "127.0.0.1"                  # anything else needs x509_dir (TLS only)
//! advertise = "host-01.corp.example"    # what clients connect to; default: listen
//! first_port = 5900
//! ports = 100
//! x509_dir = "/etc/tessera/spice"       # ca-cert.pem, server-cert.pem, server-key.pem
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Errors in the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Unreadable or unparsable.
    #[error("{0}")]
    File(String),
    /// A rule broken.
    #[error("{0}")]
    Invalid(String),
}

/// A datastore: a directory of disk images; backing chains stay inside it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatastoreConfig {
    /// Name the broker uses.
    pub name: String,
    /// Directory.
    pub path: PathBuf,
}

/// Certificates for mutual TLS.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The agent's certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// CA that signs the broker's client certificate (PEM).
    pub client_ca: PathBuf,
}

fn default_console_log_max_mib() -> u64 {
    16
}

fn default_guest_shutdown_timeout_secs() -> u64 {
    60
}

fn default_library() -> PathBuf {
    PathBuf::from("/var/lib/tessera/library")
}

fn default_listen() -> String {
    "0.0.0.0:8443".into()
}

/// The configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Host name reported to the broker.
    #[serde(default)]
    pub name: Option<String>,
    /// Address of the HTTPS API.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Where VM definitions, sockets and logs live.
    pub state_dir: PathBuf,
    /// The tessera-vmm binary.
    #[serde(default)]
    pub vmm: Option<PathBuf>,
    /// Datastores.
    #[serde(default, rename = "datastore")]
    pub datastores: Vec<DatastoreConfig>,
    /// Each VM's console log (state_dir/vms/NAME/console.log) is rotated at this size (MiB), the
    /// previous part kept as console.log.1: a guest fills at most twice it of the disk.
    #[serde(default = "default_console_log_max_mib")]
    pub console_log_max_mib: u64,
    /// A stop presses the VM's ACPI power button and gives the guest OS this long (seconds) to
    /// shut down before the VM is powered off; a stop request may name another timeout.
    #[serde(default = "default_guest_shutdown_timeout_secs")]
    pub guest_shutdown_timeout_secs: u64,
    /// The image library: the only place kernels, initrds and images to import are taken
    /// from (paths are canonicalised, symlinks resolved, and must stay inside it).
    #[serde(default = "default_library")]
    pub library: PathBuf,
    /// Mutual TLS; required unless the agent serves only a Unix socket (`listen = "unix:PATH"`).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// The VMs' displays.
    #[serde(default)]
    pub display: crate::display::DisplayConfig,
}

impl AgentConfig {
    /// Reads and checks a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::File(format!("cannot read {}: {e}", path.display())))?;
        let c: Self = toml::from_str(&text)
            .map_err(|e| ConfigError::File(format!("{}: {}", path.display(), e.message())))?;
        c.check()?;
        Ok(c)
    }

    /// Checks the rules.
    pub fn check(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.datastores.is_empty() {
            return bad("at least one [[datastore]] is needed".into());
        }
        for (i, d) in self.datastores.iter().enumerate() {
            if d.name.is_empty()
                || !d
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return bad(format!(
                    "datastore name {:?}: letters, digits, '-', '_'",
                    d.name
                ));
            }
            if self.datastores[..i].iter().any(|o| o.name == d.name) {
                return bad(format!("two datastores are named {:?}", d.name));
            }
            if !d.path.is_dir() {
                return bad(format!(
                    "datastore {} path {} is not a directory",
                    d.name,
                    d.path.display()
                ));
            }
        }
        self.display.check()?;
        match (self.unix_socket(), &self.tls) {
            (Some(_), Some(_)) => {
                return bad(format!(
                    "listen = {:?} is a Unix socket, which takes no [tls]",
                    self.listen
                ))
            }
            (None, None) => {
                return bad(format!(
                    "listening on {} needs [tls] (mutual TLS with the broker); without it the \
                     agent serves only a Unix socket its own user can reach (listen = \
                     \"unix:/run/tessera-agent/agent.sock\"): any local user could drive a \
                     TCP port, loopback or not",
                    self.listen
                ))
            }
            (Some(p), None) if !p.is_absolute() => {
                return bad(format!(
                    "the Unix socket {} must be an absolute path",
                    p.display()
                ))
            }
            _ => {}
        }
        Ok(())
    }

    /// The Unix socket `listen` names (`unix:PATH`), if it names one.
    pub fn unix_socket(&self) -> Option<&Path> {
        self.listen.strip_prefix("unix:").map(Path::new)
    }

    /// The host name to report.
    pub fn host_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "localhost".into())
        })
    }

    /// The tessera-vmm binary: configured, next to this executable, or on PATH.
    pub fn vmm_binary(&self) -> PathBuf {
        if let Some(p) = &self.vmm {
            return p.clone();
        }
        std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(|d| d.join("tessera-vmm")))
            .filter(|p| p.exists())
            .unwrap_or_else(|| PathBuf::from("tessera-vmm"))
    }

    /// A datastore by name.
    pub fn datastore(&self, name: &str) -> Option<&DatastoreConfig> {
        self.datastores.iter().find(|d| d.name == name)
    }
}
