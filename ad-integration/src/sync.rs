//! The provisioning sync: watches the groups entitled to desktop pools and reports what changed
//! (a user added to or removed from an entitled group, directly or through nesting; a user
//! disabled, re-enabled or deleted), for the broker to turn into desktops.
//!
//! Incremental: each poll first asks which objects changed since the last one (AD: uSNChanged
//! above the high-water mark read from the rootDSE's highestCommittedUSN; LDAP: modifyTimestamp
//! since the last poll, with a few seconds' overlap). Nothing changed: one cheap query, no work.
//! Only users changed: those users alone are re-checked. A group changed: the entitled groups'
//! memberships are recomputed. Every `full_resync` the whole state is recomputed anyway, which
//! also catches what an incremental query cannot see. Events come from comparing states, so
//! overlaps and repeated polls never produce duplicates.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime};

use ldap3::controls::RawControl;
use ldap3::Scope;
use serde::Serialize;

use crate::client::{text, texts, DirectoryClient};
use crate::config::Kind;
use crate::error::DirectoryError;
use crate::identity::guid_bytes;
use crate::lookup::{GroupSummary, UserSummary};

/// Most members read per entitled group.
const MAX_MEMBERS: usize = 1_000_000;
/// Changed objects handled one by one before a poll falls back to a full recompute.
const MAX_TARGETED: usize = 200;
/// AD's LDAP_SERVER_SHOW_DELETED_OID.
const SHOW_DELETED: &str = "1.2.840.113556.1.4.417";
/// Overlap of LDAP modifyTimestamp windows (clock skew and one-second granularity).
const LDAP_OVERLAP: Duration = Duration::from_secs(5);

/// What the broker must act on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum SyncEvent {
    /// `user` is now in entitled `group` (directly or nested).
    UserAdded {
        /// Group DN.
        group: String,
        /// The user.
        user: UserSummary,
    },
    /// `user` left entitled `group`.
    UserRemoved {
        /// Group DN.
        group: String,
        /// The user.
        user: UserSummary,
    },
    /// A user of an entitled group was disabled.
    UserDisabled {
        /// The user.
        user: UserSummary,
    },
    /// A user of an entitled group was enabled again.
    UserEnabled {
        /// The user.
        user: UserSummary,
    },
    /// A user of an entitled group no longer exists.
    UserDeleted {
        /// The user as last seen.
        user: UserSummary,
    },
}

/// Where the last poll left off.
#[derive(Debug, Clone)]
enum Mark {
    Usn(u64),
    Time(SystemTime),
}

/// Membership: entitled group DN -> user key (GUID, or DN without one) -> user.
type State = BTreeMap<String, BTreeMap<String, UserSummary>>;

/// The sync engine for one directory.
pub struct SyncEngine<'a> {
    client: &'a DirectoryClient,
    groups: Vec<GroupSummary>,
    state: Option<State>,
    mark: Option<Mark>,
    last_full: Option<Instant>,
    full_resync: Duration,
}

fn key(u: &UserSummary) -> String {
    u.guid.clone().unwrap_or_else(|| u.dn.to_ascii_lowercase())
}

/// LDAP generalized time of `t`.
fn generalized_time(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

impl<'a> SyncEngine<'a> {
    /// An engine watching `groups` (DNs or names), recomputing everything every `full_resync`.
    pub async fn new(
        client: &'a DirectoryClient,
        groups: &[String],
        full_resync: Duration,
    ) -> Result<Self, DirectoryError> {
        let mut resolved = Vec::new();
        for g in groups {
            resolved.push(client.find_group(g).await?);
        }
        Ok(Self {
            client,
            groups: resolved,
            state: None,
            mark: None,
            last_full: None,
            full_resync,
        })
    }

    /// The entitled groups, resolved.
    pub fn groups(&self) -> &[GroupSummary] {
        &self.groups
    }

    /// One poll; the first one reports every current member as added.
    pub async fn poll(&mut self) -> Result<Vec<SyncEvent>, DirectoryError> {
        let now_mark = self.current_mark().await?;
        let due = self
            .last_full
            .is_none_or(|t| t.elapsed() >= self.full_resync);
        let new_state = match (&self.state, &self.mark, due) {
            (Some(old), Some(mark), false) => match self.changes_since(mark).await? {
                Changes::None => old.clone(),
                Changes::Users(dns) => self.recheck_users(old, &dns).await?,
                Changes::Groups => self.full_state().await?,
            },
            _ => {
                self.last_full = Some(Instant::now());
                self.full_state().await?
            }
        };
        let events = self.diff(&new_state).await?;
        self.state = Some(new_state);
        self.mark = Some(now_mark);
        Ok(events)
    }

    async fn current_mark(&self) -> Result<Mark, DirectoryError> {
        match self.client.directory().config.kind {
            Kind::Ad => {
                let root = self
                    .client
                    .search(
                        "",
                        Scope::Base,
                        "(objectClass=*)",
                        &["highestCommittedUSN"],
                        1,
                    )
                    .await?;
                let usn = root
                    .first()
                    .and_then(|e| text(e, "highestCommittedUSN"))
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or(DirectoryError::Malformed("rootDSE highestCommittedUSN"))?;
                Ok(Mark::Usn(usn))
            }
            Kind::Ldap => Ok(Mark::Time(SystemTime::now())),
        }
    }

    async fn changes_since(&self, mark: &Mark) -> Result<Changes, DirectoryError> {
        let d = self.client.directory();
        let a = &d.attributes;
        let since = match mark {
            Mark::Usn(u) => format!("(uSNChanged>={})", u + 1),
            Mark::Time(t) => format!(
                "(modifyTimestamp>={})",
                generalized_time(t.checked_sub(LDAP_OVERLAP).unwrap_or(*t))
            ),
        };
        let mut changed = Vec::new();
        let mut bases = vec![d.config.user_base.clone()];
        if d.group_base != d.config.user_base {
            bases.push(d.group_base.clone());
        }
        for base in bases {
            let filter = format!("(&(|{}{}){since})", a.user_filter, a.group_filter);
            changed.extend(
                self.client
                    .search(
                        &base,
                        Scope::Subtree,
                        &filter,
                        &["objectClass"],
                        MAX_TARGETED + 1,
                    )
                    .await?,
            );
        }
        if let Mark::Usn(u) = mark {
            // A deleted user leaves the groups without their uSNChanged moving (linked values),
            // and its tombstone is visible only with the show-deleted control.
            if self.deleted_since(*u).await? {
                return Ok(Changes::Groups);
            }
        }
        if changed.is_empty() {
            return Ok(Changes::None);
        }
        let group_class = if d.config.kind == Kind::Ad {
            "group"
        } else {
            "groupOfNames"
        };
        let any_group = changed.iter().any(|e| {
            texts(e, "objectClass")
                .iter()
                .any(|c| c.eq_ignore_ascii_case(group_class))
        });
        if any_group || changed.len() > MAX_TARGETED {
            return Ok(Changes::Groups);
        }
        Ok(Changes::Users(changed.into_iter().map(|e| e.dn).collect()))
    }

    /// Whether any user was deleted since USN `usn` (AD tombstones).
    async fn deleted_since(&self, usn: u64) -> Result<bool, DirectoryError> {
        let d = self.client.directory();
        let root: Vec<&str> = d
            .config
            .user_base
            .split(',')
            .map(str::trim)
            .filter(|r| r.to_ascii_uppercase().starts_with("DC="))
            .collect();
        let base = format!("CN=Deleted Objects,{}", root.join(","));
        let filter = format!(
            "(&(isDeleted=TRUE)(objectClass=user)(uSNChanged>={}))",
            usn + 1
        );
        let show_deleted = RawControl {
            ctype: SHOW_DELETED.to_string(),
            crit: true,
            val: None,
        };
        match self
            .client
            .search_with(
                &base,
                Scope::OneLevel,
                &filter,
                &["1.1"],
                1,
                vec![show_deleted],
            )
            .await
        {
            Ok(v) => Ok(!v.is_empty()),
            // Without the right to list tombstones the periodic full resync still catches it.
            Err(DirectoryError::Result { rc, .. }) if rc == 32 || rc == 50 => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn full_state(&self) -> Result<State, DirectoryError> {
        let mut s = State::new();
        for g in &self.groups {
            let members = self.client.group_members(&g.dn, MAX_MEMBERS).await?;
            s.insert(
                g.dn.clone(),
                members.into_iter().map(|u| (key(&u), u)).collect(),
            );
        }
        Ok(s)
    }

    /// Re-checks only `dns`: their status, and which entitled groups they are in now.
    async fn recheck_users(&self, old: &State, dns: &[String]) -> Result<State, DirectoryError> {
        let mut s = old.clone();
        let d = self.client.directory();
        let attrs = self.client.user_attributes();
        let attrs: Vec<&str> = attrs.iter().map(String::as_str).collect();
        let entitled: BTreeSet<String> = self
            .groups
            .iter()
            .map(|g| g.dn.to_ascii_lowercase())
            .collect();
        for dn in dns {
            let found = match self
                .client
                .search(dn, Scope::Base, &d.attributes.user_filter, &attrs, 1)
                .await
            {
                Ok(v) => v,
                Err(DirectoryError::Result { rc: 32, .. }) => Vec::new(),
                Err(e) => return Err(e),
            };
            let Some(entry) = found.first() else { continue };
            let user = self.client.user_summary(entry);
            let k = key(&user);
            let now_in: BTreeSet<String> = self
                .client
                .groups_of(entry)
                .await?
                .into_iter()
                .map(|g| g.dn.to_ascii_lowercase())
                .filter(|g| entitled.contains(g))
                .collect();
            for g in &self.groups {
                let members = s.entry(g.dn.clone()).or_default();
                if now_in.contains(&g.dn.to_ascii_lowercase()) {
                    members.insert(k.clone(), user.clone());
                } else {
                    members.remove(&k);
                }
            }
        }
        Ok(s)
    }

    /// Events between the last state and `new`.
    async fn diff(&self, new: &State) -> Result<Vec<SyncEvent>, DirectoryError> {
        let empty = State::new();
        let old = self.state.as_ref().unwrap_or(&empty);
        let mut events = Vec::new();
        let mut old_users: BTreeMap<&String, &UserSummary> = BTreeMap::new();
        let mut new_users: BTreeMap<&String, &UserSummary> = BTreeMap::new();
        for g in &self.groups {
            let before = old.get(&g.dn);
            let after = new.get(&g.dn);
            for (k, u) in after.into_iter().flatten() {
                new_users.insert(k, u);
                if !before.is_some_and(|b| b.contains_key(k)) {
                    events.push(SyncEvent::UserAdded {
                        group: g.dn.clone(),
                        user: u.clone(),
                    });
                }
            }
            for (k, u) in before.into_iter().flatten() {
                old_users.insert(k, u);
                if !after.is_some_and(|a| a.contains_key(k)) {
                    events.push(SyncEvent::UserRemoved {
                        group: g.dn.clone(),
                        user: u.clone(),
                    });
                }
            }
        }
        for (k, u) in &new_users {
            if let Some(before) = old_users.get(k) {
                match (before.enabled, u.enabled) {
                    (true, false) => events.push(SyncEvent::UserDisabled { user: (*u).clone() }),
                    (false, true) => events.push(SyncEvent::UserEnabled { user: (*u).clone() }),
                    _ => {}
                }
            }
        }
        for (k, u) in &old_users {
            if !new_users.contains_key(k) && !self.exists(u).await? {
                events.push(SyncEvent::UserDeleted { user: (*u).clone() });
            }
        }
        Ok(events)
    }

    /// Whether the user still exists (by GUID on AD, where a rename keeps it; by DN on LDAP).
    async fn exists(&self, u: &UserSummary) -> Result<bool, DirectoryError> {
        let d = self.client.directory();
        let base = match (&d.config.kind, u.guid.as_deref().and_then(guid_bytes)) {
            (Kind::Ad, Some(_)) => format!("<GUID={}>", u.guid.as_deref().unwrap_or_default()),
            _ => u.dn.clone(),
        };
        match self
            .client
            .search(&base, Scope::Base, "(objectClass=*)", &["1.1"], 1)
            .await
        {
            Ok(v) => Ok(!v.is_empty()),
            Err(DirectoryError::Result { rc: 32, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

enum Changes {
    None,
    Users(Vec<String>),
    Groups,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generalized_times() {
        assert_eq!(generalized_time(SystemTime::UNIX_EPOCH), "19700101000000Z");
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_083_199);
        assert_eq!(generalized_time(t), "20261130235959Z");
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(generalized_time(leap), "20000229000000Z");
    }
}
