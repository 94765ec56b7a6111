//! The domain's account lockout policy, so that the broker's own throttle stays below it:
//! nobody may lock a directory account by guessing through the broker.
//!
//! AD keeps it on the domain object (the default naming context): `lockoutThreshold` (bad
//! passwords that lock; 0 = never) and `lockOutObservationWindow` (how long a bad password
//! counts, as a negative count of 100 ns intervals). OpenLDAP's ppolicy keeps it in a policy
//! entry the server's configuration names, which clients cannot discover: LDAP directories
//! report none, and the broker's defaults apply.

use std::time::Duration;

use ldap3::Scope;

use crate::client::{text, DirectoryClient};
use crate::config::Kind;
use crate::error::DirectoryError;

/// A directory's lockout policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lockout {
    /// Bad passwords within [`Lockout::window`] that lock the account.
    pub threshold: u32,
    /// How long a bad password counts toward the threshold.
    pub window: Duration,
}

/// AD's intervals are negative counts of 100 ns ("-600000000" is one minute).
fn ad_interval(v: &str) -> Option<Duration> {
    let n: i64 = v.trim().parse().ok()?;
    Some(Duration::from_micros(n.unsigned_abs() / 10))
}

impl DirectoryClient {
    /// The directory's lockout policy: None when it locks nobody or cannot say (an LDAP
    /// directory). Read once; a failed read is retried the next time.
    pub async fn lockout(&self) -> Result<Option<Lockout>, DirectoryError> {
        self.lockout
            .get_or_try_init(|| self.read_lockout())
            .await
            .copied()
    }

    async fn read_lockout(&self) -> Result<Option<Lockout>, DirectoryError> {
        if self.directory().config.kind != Kind::Ad {
            return Ok(None);
        }
        let root = self
            .search(
                "",
                Scope::Base,
                "(objectClass=*)",
                &["defaultNamingContext"],
                1,
            )
            .await?;
        let Some(base) = root.first().and_then(|e| text(e, "defaultNamingContext")) else {
            return Err(DirectoryError::Malformed(
                "rootDSE without defaultNamingContext",
            ));
        };
        let attrs = ["lockoutThreshold", "lockOutObservationWindow"];
        let found = self
            .search(&base, Scope::Base, "(objectClass=*)", &attrs, 1)
            .await?;
        let Some(domain) = found.first() else {
            return Err(DirectoryError::Malformed("domain object not readable"));
        };
        let threshold: u32 = text(domain, "lockoutThreshold")
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0);
        if threshold == 0 {
            return Ok(None);
        }
        // AD's default observation window is 30 minutes (10 since Windows Server 2022's
        // baseline); assume the longer when the attribute is unreadable.
        let window = text(domain, "lockOutObservationWindow")
            .and_then(|w| ad_interval(&w))
            .unwrap_or(Duration::from_secs(30 * 60));
        tracing::info!(
            directory = %self.directory().config.name,
            threshold,
            window_s = window.as_secs(),
            "directory lockout policy"
        );
        Ok(Some(Lockout { threshold, window }))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ad_intervals() {
        assert_eq!(
            super::ad_interval("-600000000"),
            Some(std::time::Duration::from_secs(60))
        );
        assert_eq!(
            super::ad_interval("-18000000000"),
            Some(std::time::Duration::from_secs(1800))
        );
        assert_eq!(super::ad_interval("x"), None);
    }
}
