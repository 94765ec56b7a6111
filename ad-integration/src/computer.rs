//! Computer accounts for linked clones (AD), in the manner of Horizon's ClonePrep and Citrix
//! MCS's identity pool: the broker creates (or reuses) an account per desktop in a given OU with
//! a random password, hands the password to the clone, resets it when the clone is refreshed,
//! disables it when the desktop is parked and deletes it with the desktop.
//!
//! Every write goes over the directory's TLS connection (AD refuses unicodePwd otherwise) as
//! the service account, which needs only "create/delete computer objects" on the OU and full
//! control of the computers in it.

use std::collections::HashSet;
use std::fmt;

use ldap3::{dn_escape, ldap_escape, Mod, Scope, SearchEntry};

use crate::client::{text, DirectoryClient};
use crate::config::Kind;
use crate::error::DirectoryError;

/// userAccountControl of a workstation trust account.
const UAC_WORKSTATION: u32 = 0x1000;
/// userAccountControl bit of a disabled account.
const UAC_DISABLED: u32 = 0x2;
/// Length of generated machine passwords.
const PASSWORD_LEN: usize = 32;

/// A computer account ready for a clone.
#[derive(Clone)]
pub struct ComputerAccount {
    /// Distinguished name.
    pub dn: String,
    /// `NAME$`.
    pub sam_account_name: String,
    /// `name.realm`.
    pub dns_host_name: String,
    /// The new machine password (hand it to the clone; never log it).
    pub password: String,
    /// False when an existing account was reused.
    pub created: bool,
}

impl fmt::Debug for ComputerAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ComputerAccount")
            .field("dn", &self.dn)
            .field("sam_account_name", &self.sam_account_name)
            .field("dns_host_name", &self.dns_host_name)
            .field("password", &"<redacted>")
            .field("created", &self.created)
            .finish()
    }
}

/// Checks a NetBIOS computer name: 1 to 15 letters, digits and hyphens, not all digits, not
/// starting with a hyphen.
pub fn check_name(name: &str) -> Result<(), DirectoryError> {
    let ok = (1..=15).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !name.starts_with('-')
        && !name.chars().all(|c| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(DirectoryError::Config(format!(
            "{name:?} is not a computer name (1-15 letters, digits or hyphens, not all digits)"
        )))
    }
}

/// A random password with upper- and lower-case letters, digits and symbols, from the OS's
/// random source.
pub fn random_password() -> Result<String, DirectoryError> {
    const SETS: [&[u8]; 4] = [
        b"ABCDEFGHJKLMNPQRSTUVWXYZ",
        b"abcdefghijkmnopqrstuvwxyz",
        b"23456789",
        b"!#%+-=?@^_",
    ];
    let mut raw = [0u8; PASSWORD_LEN];
    getrandom::fill(&mut raw)
        .map_err(|e| DirectoryError::Config(format!("no random source: {e}")))?;
    // Position i draws from set i % 4: every class is present, the rest is uniform enough for
    // a 32-character secret.
    Ok(raw
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let set = SETS[i % SETS.len()];
            set[usize::from(*r) % set.len()] as char
        })
        .collect())
}

/// AD's unicodePwd value: the password in double quotes, UTF-16LE.
pub(crate) fn unicode_pwd(password: &str) -> Vec<u8> {
    format!("\"{password}\"")
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect()
}

/// `DC=vdi,DC=test` anywhere in a DN -> "vdi.test".
fn dns_domain(dn: &str) -> String {
    dn.split(',')
        .filter_map(|rdn| {
            let (k, v) = rdn.trim().split_once('=')?;
            k.eq_ignore_ascii_case("DC").then(|| v.to_string())
        })
        .collect::<Vec<_>>()
        .join(".")
}

pub(crate) fn set(v: &[u8]) -> HashSet<Vec<u8>> {
    HashSet::from([v.to_vec()])
}

impl DirectoryClient {
    fn computer_ou(&self) -> Result<String, DirectoryError> {
        let d = self.directory();
        if d.config.kind != Kind::Ad {
            return Err(DirectoryError::NeedsAd("computer accounts"));
        }
        d.config.computer_ou.clone().ok_or_else(|| {
            DirectoryError::Config(format!("directory {:?} has no computer_ou", d.config.name))
        })
    }

    /// The computer account `name` anywhere in the domain, if it exists.
    pub async fn find_computer(&self, name: &str) -> Result<Option<SearchEntry>, DirectoryError> {
        check_name(name)?;
        let ou = self.computer_ou()?;
        let root = ou
            .split(',')
            .skip_while(|r| !r.trim().to_ascii_uppercase().starts_with("DC="))
            .collect::<Vec<_>>()
            .join(",");
        let filter = format!(
            "(&(objectClass=computer)(sAMAccountName={}$))",
            ldap_escape(name)
        );
        let mut v = self
            .search(
                &root,
                Scope::Subtree,
                &filter,
                &["userAccountControl", "dNSHostName"],
                2,
            )
            .await?;
        match v.len() {
            0 => Ok(None),
            1 => Ok(v.pop()),
            _ => Err(DirectoryError::Ambiguous(name.to_string())),
        }
    }

    /// Creates the account `name` in the computer OU with a random password, or, if it
    /// exists, reuses it: a new password, and enabled.
    pub async fn create_or_reuse_computer(
        &self,
        name: &str,
    ) -> Result<ComputerAccount, DirectoryError> {
        let ou = self.computer_ou()?;
        let domain = dns_domain(&ou);
        let password = random_password()?;
        let sam = format!("{name}$");
        let dns_host_name = format!("{}.{domain}", name.to_ascii_lowercase());
        if let Some(existing) = self.find_computer(name).await? {
            self.set_password_and_state(&existing.dn, &password, Some(true))
                .await?;
            tracing::info!(dn = %existing.dn, "computer account reused with a new password");
            return Ok(ComputerAccount {
                dns_host_name: text(&existing, "dNSHostName").unwrap_or(dns_host_name),
                dn: existing.dn,
                sam_account_name: sam,
                password,
                created: false,
            });
        }
        let dn = format!("CN={},{ou}", dn_escape(name));
        let pwd = unicode_pwd(&password);
        let attrs: Vec<(Vec<u8>, HashSet<Vec<u8>>)> = vec![
            (b"objectClass".to_vec(), set(b"computer")),
            (b"sAMAccountName".to_vec(), set(sam.as_bytes())),
            (
                b"userAccountControl".to_vec(),
                set(UAC_WORKSTATION.to_string().as_bytes()),
            ),
            (b"dNSHostName".to_vec(), set(dns_host_name.as_bytes())),
            (b"unicodePwd".to_vec(), set(&pwd)),
        ];
        let target = dn.clone();
        self.write("add computer", move |mut l| async move {
            l.add(&target, attrs).await
        })
        .await?;
        tracing::info!(dn = %dn, "computer account created");
        Ok(ComputerAccount {
            dn,
            sam_account_name: sam,
            dns_host_name,
            password,
            created: true,
        })
    }

    async fn set_password_and_state(
        &self,
        dn: &str,
        password: &str,
        enabled: Option<bool>,
    ) -> Result<(), DirectoryError> {
        let mut mods = vec![Mod::Replace(
            b"unicodePwd".to_vec(),
            set(&unicode_pwd(password)),
        )];
        if let Some(e) = enabled {
            let uac = if e {
                UAC_WORKSTATION
            } else {
                UAC_WORKSTATION | UAC_DISABLED
            };
            mods.push(Mod::Replace(
                b"userAccountControl".to_vec(),
                set(uac.to_string().as_bytes()),
            ));
        }
        let dn = dn.to_string();
        self.write("reset computer password", move |mut l| async move {
            l.modify(&dn, mods).await
        })
        .await
    }

    async fn existing_computer(&self, name: &str) -> Result<SearchEntry, DirectoryError> {
        self.find_computer(name)
            .await?
            .ok_or_else(|| DirectoryError::NotFound(format!("computer account {name}")))
    }

    /// Gives the account a new random password (a refreshed clone rejoins with it).
    pub async fn reset_computer_password(&self, name: &str) -> Result<String, DirectoryError> {
        let e = self.existing_computer(name).await?;
        let password = random_password()?;
        self.set_password_and_state(&e.dn, &password, None).await?;
        Ok(password)
    }

    /// Enables or disables the account.
    pub async fn set_computer_enabled(
        &self,
        name: &str,
        enabled: bool,
    ) -> Result<(), DirectoryError> {
        let e = self.existing_computer(name).await?;
        let uac = text(&e, "userAccountControl")
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(UAC_WORKSTATION);
        let uac = if enabled {
            uac & !UAC_DISABLED
        } else {
            uac | UAC_DISABLED
        };
        let mods = vec![Mod::Replace(
            b"userAccountControl".to_vec(),
            set(uac.to_string().as_bytes()),
        )];
        let dn = e.dn;
        self.write("set computer state", move |mut l| async move {
            l.modify(&dn, mods).await
        })
        .await
    }

    /// Deletes the account.
    pub async fn delete_computer(&self, name: &str) -> Result<(), DirectoryError> {
        let e = self.existing_computer(name).await?;
        let dn = e.dn;
        self.write("delete computer", move |mut l| async move {
            l.delete(&dn).await
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["vdi-lc-001", "A", "desk15charsxxxx"] {
            check_name(ok).unwrap();
        }
        for bad in ["", "-x", "1234", "desk16charsxxxxx", "a b", "a$", "a*", "é"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn passwords_are_random_and_complex() {
        let a = random_password().unwrap();
        let b = random_password().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), PASSWORD_LEN);
        assert!(a.chars().any(|c| c.is_ascii_uppercase()));
        assert!(a.chars().any(|c| c.is_ascii_lowercase()));
        assert!(a.chars().any(|c| c.is_ascii_digit()));
        assert!(a.chars().any(|c| !c.is_ascii_alphanumeric()));
        let acct = ComputerAccount {
            dn: "CN=x".into(),
            sam_account_name: "x$".into(),
            dns_host_name: "x.y".into(),
            password: a.clone(),
            created: true,
        };
        assert!(!format!("{acct:?}").contains(&a));
    }

    #[test]
    fn helpers() {
        assert_eq!(dns_domain("OU=Desktops,OU=VDI,DC=vdi,DC=test"), "vdi.test");
        assert_eq!(unicode_pwd("ab"), vec![b'"', 0, b'a', 0, b'b', 0, b'"', 0]);
    }
}
