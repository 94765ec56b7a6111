//! A user's groups, nested ones included, by the strategy the directory supports: AD's
//! in-chain matching rule (one server-side query), a server-nested memberOf (OpenLDAP dynlist),
//! or a bounded walk over groups' member attribute.

use std::collections::BTreeSet;

use ldap3::{ldap_escape, Scope, SearchEntry};

use crate::client::{texts, DirectoryClient};
use crate::config::NestedGroups;
use crate::error::DirectoryError;
use crate::identity::{first_rdn_value, GroupRef};

/// AD's LDAP_MATCHING_RULE_IN_CHAIN.
pub const IN_CHAIN: &str = "1.2.840.113556.1.4.1941";
/// Most groups a walk collects (a bound on work for a hostile or looping directory).
const MAX_WALK_GROUPS: usize = 10_000;
/// DNs per OR-filter in one walk query.
const WALK_BATCH: usize = 50;

impl DirectoryClient {
    /// Every group `user` (an entry found by the service account, with memberOf requested)
    /// belongs to, sorted by DN.
    pub async fn groups_of(&self, user: &SearchEntry) -> Result<Vec<GroupRef>, DirectoryError> {
        let d = self.directory();
        let a = &d.attributes;
        let set: BTreeSet<GroupRef> = match d.nested_groups {
            NestedGroups::InChain => {
                let filter = format!(
                    "(&{}({}:{IN_CHAIN}:={}))",
                    a.group_filter,
                    a.member,
                    ldap_escape(&user.dn)
                );
                self.search(
                    &d.group_base,
                    Scope::Subtree,
                    &filter,
                    &[&a.group_name],
                    usize::MAX,
                )
                .await?
                .into_iter()
                .map(|g| GroupRef {
                    name: first_rdn_value(&g.dn),
                    dn: g.dn,
                })
                .collect()
            }
            NestedGroups::MemberOf => texts(user, "memberOf")
                .into_iter()
                .map(|dn| GroupRef {
                    name: first_rdn_value(&dn),
                    dn,
                })
                .collect(),
            NestedGroups::Walk => self.walk_up(&user.dn).await?,
        };
        Ok(set.into_iter().collect())
    }

    /// Breadth-first over "which groups list any of these DNs as a member", level by level.
    async fn walk_up(&self, dn: &str) -> Result<BTreeSet<GroupRef>, DirectoryError> {
        let d = self.directory();
        let a = &d.attributes;
        let mut found = BTreeSet::new();
        let mut frontier = vec![dn.to_string()];
        for _ in 0..d.config.max_group_depth {
            let mut next = Vec::new();
            for chunk in frontier.chunks(WALK_BATCH) {
                let any: String = chunk
                    .iter()
                    .map(|m| format!("({}={})", a.member, ldap_escape(m.as_str())))
                    .collect();
                let filter = format!("(&{}(|{any}))", a.group_filter);
                for g in self
                    .search(
                        &d.group_base,
                        Scope::Subtree,
                        &filter,
                        &[&a.group_name],
                        MAX_WALK_GROUPS,
                    )
                    .await?
                {
                    let r = GroupRef {
                        name: first_rdn_value(&g.dn),
                        dn: g.dn.clone(),
                    };
                    if found.insert(r) {
                        next.push(g.dn);
                    }
                }
            }
            if next.is_empty() || found.len() >= MAX_WALK_GROUPS {
                break;
            }
            frontier = next;
        }
        Ok(found)
    }
}
