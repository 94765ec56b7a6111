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
pub mod lockout;
pub mod login;
pub mod lookup;
pub mod password;
pub mod sync;
pub mod tls;

pub use client::DirectoryClient;
pub use config::{Directory, Kind};
pub use error::DirectoryError;
pub use identity::Identity;
pub use lockout::Lockout;

use ldap3::SearchEntry;

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
        self.resolve(login).await?.authenticate(password).await
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
        self.resolve(login).await?.change_password(old, new).await
    }

    /// Finds the account `login` names, without trying any password: the directory that
    /// holds it and its entry (none: an unknown user, refused later like a wrong password).
    /// What throttles key on ([`Resolved::key`]), so that `VDI\alice`, `alice@vdi.test` and
    /// ` Alice` count as one user.
    pub async fn resolve(&self, login: &str) -> Result<Resolved<'_>, DirectoryError> {
        let login = login::parse(login)?;
        if let Some(domain) = &login.domain {
            let client = match self.clients.iter().find(|c| c.directory().serves(domain)) {
                Some(c) => c,
                // A single directory takes any domain (UPN suffixes need not be listed).
                None if self.clients.len() == 1 => &self.clients[0],
                None => return Err(DirectoryError::UnknownDomain(domain.clone())),
            };
            let user = client.find_user(&login).await?;
            return Ok(Resolved {
                client: Some(client),
                login,
                user,
            });
        }
        for c in &self.clients {
            if let Some(user) = c.find_user(&login).await? {
                return Ok(Resolved {
                    client: Some(c),
                    login,
                    user: Some(user),
                });
            }
        }
        Ok(Resolved {
            client: None,
            login,
            user: None,
        })
    }

    /// The enabled user whose entry is `dn`, with its nested groups, from whichever directory
    /// holds it (None: no directory has such an enabled user). How a token issued to a user
    /// is checked again later: the account may have been disabled or left a group since.
    pub async fn user_by_dn(&self, dn: &str) -> Result<Option<Identity>, DirectoryError> {
        for c in &self.clients {
            let d = c.directory();
            let enabled = match d.config.kind {
                // LDAP_MATCHING_RULE_BIT_AND on ACCOUNTDISABLE (0x2).
                Kind::Ad => "(!(userAccountControl:1.2.840.113556.1.4.803:=2))",
                Kind::Ldap => "",
            };
            let filter = format!("(&{}{enabled})", d.attributes.user_filter);
            let attrs = c.user_attributes();
            let attrs: Vec<&str> = attrs.iter().map(String::as_str).collect();
            match c.search(dn, ldap3::Scope::Base, &filter, &attrs, 1).await {
                Ok(mut found) => {
                    if let Some(user) = found.pop() {
                        let groups = c.groups_of(&user).await?;
                        return Ok(Some(c.identity(user, groups)));
                    }
                }
                // noSuchObject, or a referral: not this directory's entry.
                Err(DirectoryError::Result { rc: 32 | 10, .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// The domain users pick from at sign-in: each directory's first configured domain.
    pub fn domains(&self) -> Vec<String> {
        self.clients
            .iter()
            .filter_map(|c| c.directory().config.domains.first().cloned())
            .collect()
    }
}

/// A login resolved to the account it names ([`Directories::resolve`]).
pub struct Resolved<'a> {
    client: Option<&'a DirectoryClient>,
    login: login::Login,
    user: Option<SearchEntry>,
}

impl Resolved<'_> {
    /// The directory that holds the user (None: no directory knows the name).
    pub fn directory(&self) -> Option<&DirectoryClient> {
        self.client
    }

    /// Whether a user was found.
    pub fn found(&self) -> bool {
        self.user.is_some()
    }

    /// One key per account: the directory's name and the entry's DN, case-folded (DNs
    /// compare without regard to case); for a user no directory has, the directory (if the
    /// login named one) and the account name, case-folded.
    pub fn key(&self) -> String {
        let dir = self
            .client
            .map_or("", |c| c.directory().config.name.as_str());
        match &self.user {
            Some(u) => format!("{dir}\0dn\0{}", u.dn.to_lowercase()),
            None => format!("{dir}\0name\0{}", self.login.user.to_lowercase()),
        }
    }

    /// Verifies `password` by binding as the user; their identity and nested groups.
    pub async fn authenticate(self, password: &str) -> Result<Identity, DirectoryError> {
        if password.is_empty() {
            return Err(DirectoryError::EmptyPassword);
        }
        match (self.client, self.user) {
            (Some(c), Some(user)) => c.authenticate_entry(user, password).await,
            (c, _) => {
                let dir = c.map_or("-", |c| c.directory().config.name.as_str());
                tracing::info!(directory = %dir, user = %self.login.user, "sign-in: no such user");
                Err(DirectoryError::InvalidCredentials)
            }
        }
    }

    /// Changes the user's own password from `old` to `new`.
    pub async fn change_password(self, old: &str, new: &str) -> Result<(), DirectoryError> {
        match (self.client, &self.user) {
            (Some(c), Some(user)) => c.change_password_entry(user, old, new).await,
            _ => Err(DirectoryError::InvalidCredentials),
        }
    }
}
