//! TPM configuration: `--tpm state=DIR[,swtpm=PROGRAM]` or `--tpm socket=PATH` on the command
//! line, a `[tpm]` table in a config file.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// A TPM 2.0 (CRB interface) backed by swtpm.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TpmConfig {
    /// The TPM's state directory (created 0700 if missing): tessera-vmm starts swtpm on it,
    /// and swtpm ends with the VMM. Keep it with the VM: it is the TPM's identity and the
    /// keys sealed to it (BitLocker's).
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    /// Instead of `state_dir`: the control socket of a swtpm started by someone else
    /// (`swtpm socket --tpm2 --ctrl type=unixio,path=SOCKET --tpmstate dir=DIR`).
    #[serde(default)]
    pub socket: Option<PathBuf>,
    /// The swtpm program started for `state_dir` (a name is searched in PATH).
    #[serde(default = "default_swtpm")]
    pub swtpm: PathBuf,
}

fn default_swtpm() -> PathBuf {
    PathBuf::from("swtpm")
}

/// Where the TPM comes from, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TpmBackend {
    /// tessera-vmm starts `swtpm` on `state_dir`.
    Spawn {
        /// The program.
        swtpm: PathBuf,
        /// Its state directory.
        state_dir: PathBuf,
    },
    /// A running swtpm's control socket.
    Socket(PathBuf),
}

impl fmt::Display for TpmBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Spawn { state_dir, .. } => write!(f, "swtpm on {}", state_dir.display()),
            Self::Socket(s) => write!(f, "swtpm at {}", s.display()),
        }
    }
}

fn bad(s: &str, why: &str) -> ConfigError {
    ConfigError::Tpm(s.to_string(), why.to_string())
}

impl TpmConfig {
    /// The backend this names: a state directory or a socket, not both.
    pub fn backend(&self) -> Result<TpmBackend, ConfigError> {
        match (&self.state_dir, &self.socket) {
            (Some(dir), None) => {
                // swtpm's option syntax has no escape for a comma.
                if dir.to_string_lossy().contains(',') {
                    return Err(bad(
                        &dir.display().to_string(),
                        "a state directory's path cannot contain a comma",
                    ));
                }
                Ok(TpmBackend::Spawn {
                    swtpm: self.swtpm.clone(),
                    state_dir: dir.clone(),
                })
            }
            (None, Some(socket)) => Ok(TpmBackend::Socket(socket.clone())),
            (None, None) => Err(bad("", "give state_dir or socket")),
            (Some(_), Some(_)) => Err(bad("", "give state_dir or socket, not both")),
        }
    }
}

impl FromStr for TpmConfig {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut tpm = TpmConfig {
            state_dir: None,
            socket: None,
            swtpm: default_swtpm(),
        };
        for (i, part) in s.split(',').enumerate() {
            let (key, value) = match part.split_once('=') {
                Some(kv) => kv,
                // A bare first item is the state directory.
                None if i == 0 => ("state", part),
                None => return Err(bad(s, &format!("{part:?} is not key=value"))),
            };
            if value.is_empty() {
                return Err(bad(s, &format!("{key} needs a value")));
            }
            match key {
                "state" | "state_dir" => tpm.state_dir = Some(PathBuf::from(value)),
                "socket" => tpm.socket = Some(PathBuf::from(value)),
                "swtpm" => tpm.swtpm = PathBuf::from(value),
                _ => return Err(bad(s, &format!("unknown key {key:?}"))),
            }
        }
        tpm.backend().map_err(|e| match e {
            ConfigError::Tpm(_, why) => bad(s, &why),
            other => other,
        })?;
        Ok(tpm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_command_line_form() {
        let t: TpmConfig = "/vm/tpm".parse().unwrap();
        assert_eq!(
            t.backend().unwrap(),
            TpmBackend::Spawn {
                swtpm: "swtpm".into(),
                state_dir: "/vm/tpm".into()
            }
        );
        let t: TpmConfig = "state=/vm/tpm,swtpm=/opt/swtpm".parse().unwrap();
        assert_eq!(t.swtpm, PathBuf::from("/opt/swtpm"));
        let t: TpmConfig = "socket=/run/tpm.sock".parse().unwrap();
        assert_eq!(
            t.backend().unwrap(),
            TpmBackend::Socket("/run/tpm.sock".into())
        );
        for bad in [
            "",
            "swtpm=/x",
            "state=/a,socket=/b",
            "/a,colour=red",
            "state=",
            "/a,b",
        ] {
            assert!(bad.parse::<TpmConfig>().is_err(), "{bad}");
        }
    }
}
