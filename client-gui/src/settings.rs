//! What the client remembers between runs (`$XDG_CONFIG_HOME/tessera/client.toml`, else
//! `~/.config/tessera/client.toml`): the broker, the last user name, an administrator's CA
//! file, and the broker certificates the user accepted by fingerprint. Never a password.
//!
//! ```toml
//! broker = "vdi.example.com"          # host[:port] or https://host[:port]
//! user = "CORP\\alice"
//! domain = "CORP"                     # the last domain picked, when the broker offers several
//! ca_file = "/etc/tessera/broker-ca.pem"   # optional: trusted besides the system's roots
//! [[accepted]]                        # certificates the user accepted when asked
//! broker = "https://vdi.example.com"
//! fingerprint = "SHA256 AB:CD:..."
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A certificate the user accepted for a broker.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    /// The broker's base URL.
    pub broker: String,
    /// The certificate's fingerprint.
    pub fingerprint: String,
}

/// The remembered settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// The broker's address.
    pub broker: String,
    /// The last user name.
    pub user: String,
    /// The last domain picked (brokers with several directories).
    pub domain: String,
    /// An administrator's CA file.
    pub ca_file: Option<PathBuf>,
    /// Accepted certificates.
    pub accepted: Vec<Accepted>,
}

/// Why settings could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The file is unreadable or not valid TOML.
    #[error("{path}: {why}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The file could not be written.
    #[error("cannot save {path}: {why}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}

impl Settings {
    /// The default file.
    pub fn default_path() -> Option<PathBuf> {
        let base = std::env::var_os("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
        Some(base.join("tessera/client.toml"))
    }

    /// Reads `path`; a missing file is the defaults.
    pub fn load(path: &Path) -> Result<Self, SettingsError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => {
                return Err(SettingsError::Read {
                    path: path.into(),
                    why: e.to_string(),
                })
            }
        };
        toml::from_str(&text).map_err(|e| SettingsError::Read {
            path: path.into(),
            why: e.to_string(),
        })
    }

    /// Writes `path` (private to the user: it names their account and brokers).
    pub fn save(&self, path: &Path) -> Result<(), SettingsError> {
        let err = |e: &dyn std::fmt::Display| SettingsError::Write {
            path: path.into(),
            why: e.to_string(),
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| err(&e))?;
        }
        let text = toml::to_string(self).map_err(|e| err(&e))?;
        let tmp = path.with_extension("toml.tmp");
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(|e| err(&e))?;
            f.write_all(text.as_bytes()).map_err(|e| err(&e))?;
        }
        std::fs::rename(&tmp, path).map_err(|e| err(&e))
    }

    /// Fingerprints accepted for the broker at `base`.
    pub fn accepted_for(&self, base: &str) -> Vec<String> {
        self.accepted
            .iter()
            .filter(|a| a.broker == base)
            .map(|a| a.fingerprint.clone())
            .collect()
    }

    /// Remembers that the user accepted `fingerprint` for `base`.
    pub fn accept(&mut self, base: &str, fingerprint: &str) {
        let a = Accepted {
            broker: base.into(),
            fingerprint: fingerprint.into(),
        };
        if !self.accepted.contains(&a) {
            self.accepted.push(a);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bad_files() {
        let dir =
            std::env::temp_dir().join(format!("tessera-client-settings-{}", std::process::id()));
        let path = dir.join("tessera/client.toml");
        assert_eq!(Settings::load(&path).unwrap(), Settings::default());
        let mut s = Settings {
            broker: "vdi.example.com".into(),
            user: "CORP\\alice".into(),
            ..Default::default()
        };
        s.accept("https://vdi.example.com", "SHA256 AA");
        s.accept("https://vdi.example.com", "SHA256 AA");
        s.save(&path).unwrap();
        assert_eq!(Settings::load(&path).unwrap(), s);
        assert_eq!(s.accepted_for("https://vdi.example.com"), ["SHA256 AA"]);
        assert!(s.accepted_for("https://other").is_empty());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(&path, "broker = 3\n").unwrap();
        let e = Settings::load(&path).unwrap_err();
        assert!(e.to_string().contains("client.toml"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
