//! Lookups for admins: users and groups by name prefix (the entitlement UI's search box) and a
//! group's members, nested ones included. Paged; AD's search references are skipped.

use ldap3::{ldap_escape, Scope, SearchEntry};
use serde::Serialize;

use crate::client::{binary, text, texts, DirectoryClient};
use crate::config::{Kind, NestedGroups};
use crate::error::DirectoryError;
use crate::groups::IN_CHAIN;
use crate::identity::{first_rdn_value, guid_text};

/// userAccountControl bit: the account is disabled.
pub const UAC_ACCOUNTDISABLE: u32 = 0x2;

/// A user as lookups return it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct UserSummary {
    /// Distinguished name.
    pub dn: String,
    /// Login name.
    pub login: String,
    /// Display name (or cn).
    pub display_name: Option<String>,
    /// Mail.
    pub mail: Option<String>,
    /// Stable ID (objectGUID text or entryUUID).
    pub guid: Option<String>,
    /// False when AD marks the account disabled.
    pub enabled: bool,
}

/// A group as lookups return it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct GroupSummary {
    /// Distinguished name.
    pub dn: String,
    /// Name.
    pub name: String,
}

impl DirectoryClient {
    pub(crate) fn user_summary(&self, e: &SearchEntry) -> UserSummary {
        let d = self.directory();
        let a = &d.attributes;
        let uac = text(e, "userAccountControl")
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0);
        UserSummary {
            dn: e.dn.clone(),
            login: text(e, &a.login).unwrap_or_default(),
            display_name: text(e, &a.display_name).or_else(|| text(e, "cn")),
            mail: text(e, &a.mail),
            guid: match d.config.kind {
                Kind::Ad => binary(e, &a.id).and_then(|b| guid_text(&b)),
                Kind::Ldap => text(e, &a.id),
            },
            enabled: uac & UAC_ACCOUNTDISABLE == 0,
        }
    }

    /// Users whose login, display name or cn starts with `prefix` (all users for an empty
    /// prefix), at most `limit`, sorted by DN.
    pub async fn search_users(
        &self,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<UserSummary>, DirectoryError> {
        let d = self.directory();
        let a = &d.attributes;
        let p = ldap_escape(prefix);
        let filter = format!(
            "(&{}(|({}={p}*)({}={p}*)(cn={p}*)))",
            a.user_filter, a.login, a.display_name
        );
        let attrs = self.user_attributes();
        let attrs: Vec<&str> = attrs.iter().map(String::as_str).collect();
        let mut v: Vec<UserSummary> = self
            .search(&d.config.user_base, Scope::Subtree, &filter, &attrs, limit)
            .await?
            .iter()
            .map(|e| self.user_summary(e))
            .collect();
        v.sort();
        Ok(v)
    }

    /// Groups whose name starts with `prefix`, at most `limit`, sorted by DN.
    pub async fn search_groups(
        &self,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<GroupSummary>, DirectoryError> {
        let d = self.directory();
        let a = &d.attributes;
        let filter = format!(
            "(&{}({}={}*))",
            a.group_filter,
            a.group_name,
            ldap_escape(prefix)
        );
        let mut v: Vec<GroupSummary> = self
            .search(
                &d.group_base,
                Scope::Subtree,
                &filter,
                &[&a.group_name],
                limit,
            )
            .await?
            .into_iter()
            .map(|g| GroupSummary {
                name: text(&g, &a.group_name).unwrap_or_else(|| first_rdn_value(&g.dn)),
                dn: g.dn,
            })
            .collect();
        v.sort();
        Ok(v)
    }

    /// The group named by `group` (a DN, or a name found with the group filter).
    pub async fn find_group(&self, group: &str) -> Result<GroupSummary, DirectoryError> {
        let d = self.directory();
        let a = &d.attributes;
        let filter = format!(
            "(&{}({}={}))",
            a.group_filter,
            a.group_name,
            ldap_escape(group)
        );
        let (base, scope, filter) = if group.contains('=') {
            (group, Scope::Base, a.group_filter.clone())
        } else {
            (d.group_base.as_str(), Scope::Subtree, filter)
        };
        let mut found = match self.search(base, scope, &filter, &[&a.group_name], 2).await {
            Err(DirectoryError::Result { rc: 32, .. }) => Vec::new(), // noSuchObject
            other => other?,
        };
        match found.len() {
            0 => Err(DirectoryError::NotFound(format!("group {group:?}"))),
            1 => {
                let g = found.remove(0);
                Ok(GroupSummary {
                    name: text(&g, &a.group_name).unwrap_or_else(|| first_rdn_value(&g.dn)),
                    dn: g.dn,
                })
            }
            _ => Err(DirectoryError::Ambiguous(group.to_string())),
        }
    }

    /// Every user in the group `group_dn`, through nested groups too, sorted by DN.
    pub async fn group_members(
        &self,
        group_dn: &str,
        limit: usize,
    ) -> Result<Vec<UserSummary>, DirectoryError> {
        let d = self.directory();
        let a = &d.attributes;
        let attrs = self.user_attributes();
        let attrs: Vec<&str> = attrs.iter().map(String::as_str).collect();
        let g = ldap_escape(group_dn);
        let entries = match d.nested_groups {
            NestedGroups::InChain => {
                let f = format!("(&{}(memberOf:{IN_CHAIN}:={g}))", a.user_filter);
                self.search(&d.config.user_base, Scope::Subtree, &f, &attrs, limit)
                    .await?
            }
            NestedGroups::MemberOf => {
                let f = format!("(&{}(memberOf={g}))", a.user_filter);
                self.search(&d.config.user_base, Scope::Subtree, &f, &attrs, limit)
                    .await?
            }
            NestedGroups::Walk => self.walk_down(group_dn, &attrs, limit).await?,
        };
        let mut v: Vec<UserSummary> = entries.iter().map(|e| self.user_summary(e)).collect();
        v.sort();
        v.dedup();
        Ok(v)
    }

    /// Members by reading member attributes level by level (groups within groups), bounded by
    /// the configured depth.
    async fn walk_down(
        &self,
        group_dn: &str,
        attrs: &[&str],
        limit: usize,
    ) -> Result<Vec<SearchEntry>, DirectoryError> {
        let d = self.directory();
        let a = &d.attributes;
        let mut seen = std::collections::BTreeSet::new();
        let mut users = Vec::new();
        let mut frontier = vec![group_dn.to_string()];
        for _ in 0..d.config.max_group_depth {
            let mut next = Vec::new();
            for g in frontier {
                if !seen.insert(g.clone()) {
                    continue;
                }
                let entry = self
                    .search(&g, Scope::Base, "(objectClass=*)", &[&a.member], 1)
                    .await?;
                for m in entry
                    .first()
                    .map(|e| texts(e, &a.member))
                    .unwrap_or_default()
                {
                    let user_filter = a.user_filter.clone();
                    match self.search(&m, Scope::Base, &user_filter, attrs, 1).await {
                        Ok(mut u) if !u.is_empty() => users.push(u.remove(0)),
                        _ => next.push(m),
                    }
                    if users.len() >= limit {
                        return Ok(users);
                    }
                }
            }
            if next.is_empty() {
                break;
            }
            frontier = next;
        }
        Ok(users)
    }
}
