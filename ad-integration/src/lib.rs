//! Tessera's directory integration: users sign in with their Active Directory (or LDAP)
//! password, and directory groups decide who gets which desktops.
//!
//! Built on ldap3 with rustls; only LDAPS or StartTLS unless a lab explicitly allows plain
//! LDAP. One [`Directories`] routes each login to its directory (`DOMAIN\user`, `user@realm`,
//! or each directory in order for a bare name); each [`client::DirectoryClient`] tries its
//! servers in order within the connect timeout.
//!
//! - [`config`]: the `[[directory]]` tables, validated at load;
//! - [`login`]: parsing what users type; [`auth`]: find, bind as the user, identity;
//!   [`password`]: users changing their own (expired) password;
//! - [`groups`]: nested groups (AD in-chain rule, server memberOf, or a bounded walk);
//! - [`lookup`]: users, groups and members for admins; [`sync`]: membership events for
//!   provisioning; [`computer`]: computer accounts for linked clones (AD);
//! - [`error`]: AD's bind sub-codes mapped to errors a user can act on.

pub mod auth;
pub mod client;
pub mod computer;
pub mod config;
pub mod error;
pub mod groups;
pub mod identity;
pub mod login;
pub mod lookup;
pub mod password;
pub mod sync;
pub mod tls;

pub use client::DirectoryClient;
pub use config::{Directory, Kind};
pub use error::DirectoryError;
pub use identity::Identity;

/// Every configured directory, in order.
pub struct Directories {
    clients: Vec<DirectoryClient>,
}

impl Directories {
    /// Clients for validated directories.
    pub fn new(dirs: Vec<Directory>) -> Result<Self, DirectoryError> {
        if dirs.is_empty() {
            return Err(DirectoryError::Config("no directory configured".into()));
        }
        Ok(Self {
            clients: dirs
                .into_iter()
                .map(DirectoryClient::new)
                .collect::<Result<_, _>>()?,
        })
    }

    /// The clients, in configuration order.
    pub fn clients(&self) -> &[DirectoryClient] {
        &self.clients
    }

    /// The client for directory `name`.
    pub fn get(&self, name: &str) -> Option<&DirectoryClient> {
        self.clients
            .iter()
            .find(|c| c.directory().config.name == name)
    }

    /// Signs a user in: `alice`, `alice@realm` or `DOMAIN\alice`. The empty password is
    /// refused before anything is sent; a wrong password and an unknown user give the same
    /// error.
    pub async fn authenticate(
        &self,
        login: &str,
        password: &str,
    ) -> Result<Identity, DirectoryError> {
        if password.is_empty() {
            return Err(DirectoryError::EmptyPassword);
        }
        let parsed = login::parse(login)?;
        self.route(&parsed)
            .await?
            .authenticate_login(&parsed, password)
            .await
    }

    /// Changes a user's own password (`login` as in [`Self::authenticate`]), proving `old`.
    pub async fn change_password(
        &self,
        login: &str,
        old: &str,
        new: &str,
    ) -> Result<(), DirectoryError> {
        if old.is_empty() {
            return Err(DirectoryError::EmptyPassword);
        }
        let parsed = login::parse(login)?;
        self.route(&parsed)
            .await?
            .change_password(&parsed, old, new)
            .await
    }

    /// The domain users pick from at sign-in: each directory's first configured domain.
    pub fn domains(&self) -> Vec<String> {
        self.clients
            .iter()
            .filter_map(|c| c.directory().config.domains.first().cloned())
            .collect()
    }

    /// The directory that holds `login`: the one serving its domain, or for a bare name the
    /// first that has the user (none: the same answer as a wrong password).
    async fn route(&self, login: &login::Login) -> Result<&DirectoryClient, DirectoryError> {
        if let Some(domain) = &login.domain {
            return match self.clients.iter().find(|c| c.directory().serves(domain)) {
                Some(c) => Ok(c),
                // A single directory takes any domain (UPN suffixes need not be listed).
                None if self.clients.len() == 1 => Ok(&self.clients[0]),
                None => Err(DirectoryError::UnknownDomain(domain.clone())),
            };
        }
        for c in &self.clients {
            if c.find_user(login).await?.is_some() {
                return Ok(c);
            }
        }
        Err(DirectoryError::InvalidCredentials)
    }
}
