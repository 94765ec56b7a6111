//! The broker's configuration (TOML), with documented defaults.
//!
//! ```toml
//! state_dir = "/var/lib/tessera-broker"      # the CA and certificates (pki/), the SQLite file
//! database = "sqlite:///var/lib/tessera-broker/broker.db"   # or postgres://user@host/db
//! listen = "0.0.0.0:8443"                    # the client API, HTTPS
//! # The administrators' API and /metrics on an address of their own (HTTPS, the same
//! # certificate), e.g. a management network; they are then not served on `listen`.
//! # Default: none: everything on `listen` (the all-in-one).
//! admin_listen = "10.0.0.5:9443"
//! server_names = ["broker.corp.example"]     # names in the API's certificate (plus localhost)
//! directories = "/etc/tessera/directories.toml"   # AD/LDAP; none: local accounts only
//! # Directory users or groups (DNs; nested membership counts) who may administer the broker,
//! # besides local accounts made with `add-account --admin`. Default: none.
//! admins = ["CN=vdi-admins,OU=Groups,DC=corp,DC=example"]
//! reconcile_interval_secs = 10
//! # A session's bearer token (new tickets, the tunnel, logoff) dies after this long unused,
//! # and this long after the logon; the user then signs in again. Defaults shown.
//! session_idle_minutes = 60
//! session_max_hours = 10
//! # Clients reach desktops' displays through the broker's HTTPS port (its secure gateway) instead
//! # of connecting to the hosts: for clients outside the hosts' network. Default: false.
//! display_tunnel = false
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

fn default_listen() -> String {
    "0.0.0.0:8443".into()
}
fn default_interval() -> u64 {
    10
}
fn default_idle() -> u64 {
    60
}
fn default_max_hours() -> u64 {
    10
}

/// The configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    /// CA, certificates, and the default SQLite database.
    pub state_dir: PathBuf,
    /// sqlite://PATH or postgres://...; default: SQLite in state_dir.
    #[serde(default)]
    pub database: Option<String>,
    /// Client API address.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// The administrators' API and /metrics, apart from the client API (None: on `listen`).
    #[serde(default)]
    pub admin_listen: Option<String>,
    /// Extra DNS names and addresses for the API's certificate.
    #[serde(default)]
    pub server_names: Vec<String>,
    /// Directory configuration file (tessera-directory's format).
    #[serde(default)]
    pub directories: Option<PathBuf>,
    /// Directory users or groups (DNs) whose members administer the broker.
    #[serde(default)]
    pub admins: Vec<String>,
    /// Seconds between reconcile passes.
    #[serde(default = "default_interval")]
    pub reconcile_interval_secs: u64,
    /// Minutes a session token may go unused.
    #[serde(default = "default_idle")]
    pub session_idle_minutes: u64,
    /// Hours a session token lives from the logon.
    #[serde(default = "default_max_hours")]
    pub session_max_hours: u64,
    /// Clients reach displays through the broker ([`crate::tunnel`]).
    #[serde(default)]
    pub display_tunnel: bool,
}

impl BrokerConfig {
    /// Reads and checks a file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let c: Self =
            toml::from_str(&text).map_err(|e| format!("{}: {}", path.display(), e.message()))?;
        if c.session_idle_minutes == 0 || c.session_max_hours == 0 {
            return Err(format!(
                "{}: session_idle_minutes and session_max_hours must be above 0",
                path.display()
            ));
        }
        if c.reconcile_interval_secs == 0 {
            return Err(format!(
                "{}: reconcile_interval_secs must be above 0",
                path.display()
            ));
        }
        for (key, addr) in std::iter::once(("listen", &c.listen))
            .chain(c.admin_listen.iter().map(|a| ("admin_listen", a)))
        {
            addr.parse::<std::net::SocketAddr>()
                .map_err(|e| format!("{}: {key} {addr:?}: {e}", path.display()))?;
        }
        if c.admin_listen.as_deref() == Some(c.listen.as_str()) {
            return Err(format!(
                "{}: admin_listen is the same address as listen; leave it out to serve both there",
                path.display()
            ));
        }
        Ok(c)
    }

    /// The database URL.
    pub fn database_url(&self) -> String {
        self.database
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.state_dir.join("broker.db").display()))
    }

    /// How long session tokens work.
    pub fn token_lifetime(&self) -> crate::store::sessions::TokenLifetime {
        crate::store::sessions::TokenLifetime {
            idle: std::time::Duration::from_secs(self.session_idle_minutes.saturating_mul(60)),
            absolute: std::time::Duration::from_secs(self.session_max_hours.saturating_mul(3600)),
        }
    }

    /// Where the API CA and the API's certificate live.
    pub fn pki_dir(&self) -> PathBuf {
        self.state_dir.join("pki")
    }

    /// Where the host CA, hosts' certificates and the broker's client certificate live.
    pub fn host_pki_dir(&self) -> PathBuf {
        self.state_dir.join("pki/hosts")
    }
}
