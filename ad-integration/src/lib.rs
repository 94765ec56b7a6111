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
        if let Some(domain) = &parsed.domain {
            let client = match self.clients.iter().find(|c| c.directory().serves(domain)) {
                Some(c) => c,
                // A single directory takes any domain (UPN suffixes need not be listed).
                None if self.clients.len() == 1 => &self.clients[0],
                None => return Err(DirectoryError::UnknownDomain(domain.clone())),
            };
            return client.authenticate_login(&parsed, password).await;
        }
        for c in &self.clients {
            if c.find_user(&parsed).await?.is_some() {
                return c.authenticate_login(&parsed, password).await;
            }
        }
        Err(DirectoryError::InvalidCredentials)
    }
}
