//! Directory configuration: one `[[directory]]` table per domain or LDAP tree, validated when
//! loaded so that a bad file fails at start-up with the line to fix, not at the first sign-in.
//!
//! ```toml
//! [[directory]]
//! name = "corp"
//! kind = "ad"                                   # ad | ldap
//! urls = ["ldaps://dc1.corp.example", "ldaps://dc2.corp.example"]   # tried in order
//! ca_file = "/etc/tessera/corp-ca.pem"          # default: the system's roots
//! service_dn = "svc-vdi@corp.example"
//! service_password_file = "/etc/tessera/svc-vdi.secret"
//! user_base = "OU=People,DC=corp,DC=example"
//! group_base = "OU=Groups,DC=corp,DC=example"   # default: user_base
//! domains = ["CORP", "corp.example"]            # what users may type before \ or after @
//! computer_ou = "OU=Desktops,DC=corp,DC=example" # computer accounts for clones (AD)
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::DirectoryError;

/// Directory flavour: decides attribute defaults, nested-group strategy and error mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Active Directory (or Samba AD).
    Ad,
    /// Any other LDAPv3 server (OpenLDAP, 389-ds, ...).
    Ldap,
}

/// How a user's nested groups are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NestedGroups {
    /// AD's LDAP_MATCHING_RULE_IN_CHAIN (1.2.840.113556.1.4.1941): one query, server-side.
    InChain,
    /// The user's memberOf attribute, nested by the server (OpenLDAP dynlist `memberOf@...*`).
    MemberOf,
    /// A bounded breadth-first walk over groups' member attribute, for servers with neither.
    Walk,
}

/// Attribute names; each defaults per kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributeOverrides {
    /// Login name (sAMAccountName / uid).
    pub login: Option<String>,
    /// UPN (userPrincipalName / none).
    pub upn: Option<String>,
    /// Display name.
    pub display_name: Option<String>,
    /// Mail.
    pub mail: Option<String>,
    /// Stable unique ID (objectGUID / entryUUID).
    pub id: Option<String>,
    /// Filter selecting user entries.
    pub user_filter: Option<String>,
    /// Filter selecting group entries.
    pub group_filter: Option<String>,
    /// Group name attribute (cn).
    pub group_name: Option<String>,
    /// Group attribute listing members (member).
    pub member: Option<String>,
}

/// Attribute names with the defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes {
    /// Login name.
    pub login: String,
    /// UPN, if the directory has one.
    pub upn: Option<String>,
    /// Display name.
    pub display_name: String,
    /// Mail.
    pub mail: String,
    /// Stable unique ID.
    pub id: String,
    /// Filter selecting user entries.
    pub user_filter: String,
    /// Filter selecting group entries.
    pub group_filter: String,
    /// Group name attribute.
    pub group_name: String,
    /// Group member attribute.
    pub member: String,
}

fn default_true() -> bool {
    true
}
fn default_connect_ms() -> u64 {
    5_000
}
fn default_op_ms() -> u64 {
    10_000
}
fn default_page() -> u32 {
    500
}
fn default_depth() -> u32 {
    16
}

/// One directory as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryConfig {
    /// Name used in logs, events and the diagnostics command.
    pub name: String,
    /// AD or generic LDAP.
    pub kind: Kind,
    /// Servers, tried in order: `ldaps://host[:port]` or `ldap://host[:port]` (StartTLS).
    pub urls: Vec<String>,
    /// Use StartTLS on `ldap://` URLs (default true).
    #[serde(default = "default_true")]
    pub starttls: bool,
    /// Allow `ldap://` without StartTLS: passwords cross the network in clear. Labs only.
    #[serde(default)]
    pub allow_plain_ldap: bool,
    /// PEM file with the CA(s) that sign the servers' certificates; default: system roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Service account (DN, or UPN on AD) used to find users and groups.
    pub service_dn: String,
    /// Its password, inline (prefer `service_password_file`).
    #[serde(default)]
    pub service_password: Option<String>,
    /// A file holding the password (first line).
    #[serde(default)]
    pub service_password_file: Option<PathBuf>,
    /// Where users are searched (subtree).
    pub user_base: String,
    /// Where groups are searched (subtree); default: `user_base`.
    #[serde(default)]
    pub group_base: Option<String>,
    /// Domain names that select this directory in `DOMAIN\user` and `user@domain`
    /// (case-insensitive); a login without one tries the directories in order.
    #[serde(default)]
    pub domains: Vec<String>,
    /// OU where computer accounts for clones are created (AD).
    #[serde(default)]
    pub computer_ou: Option<String>,
    /// Nested-group strategy; default: in-chain on AD, member-of on LDAP.
    #[serde(default)]
    pub nested_groups: Option<NestedGroups>,
    /// Deepest group nesting the walk follows.
    #[serde(default = "default_depth")]
    pub max_group_depth: u32,
    /// TCP connect plus TLS handshake, per server, in milliseconds.
    #[serde(default = "default_connect_ms")]
    pub connect_timeout_ms: u64,
    /// Each LDAP operation, in milliseconds.
    #[serde(default = "default_op_ms")]
    pub operation_timeout_ms: u64,
    /// Page size of searches (AD's default server limit is 1,000).
    #[serde(default = "default_page")]
    pub page_size: u32,
    /// Attribute names, when they differ from the defaults of `kind`.
    #[serde(default)]
    pub attributes: AttributeOverrides,
}

/// The configuration file: one or more directories.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoriesFile {
    /// The directories, in the order logins without a domain try them.
    pub directory: Vec<DirectoryConfig>,
}

/// A directory after validation, with its secret read and its defaults applied.
#[derive(Debug, Clone)]
pub struct Directory {
    /// As written.
    pub config: DirectoryConfig,
    /// Service account password.
    pub service_password: String,
    /// Attribute names.
    pub attributes: Attributes,
    /// Group search base.
    pub group_base: String,
    /// Nested-group strategy.
    pub nested_groups: NestedGroups,
}

impl Directory {
    /// Connect timeout.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.config.connect_timeout_ms)
    }
    /// Per-operation timeout.
    pub fn operation_timeout(&self) -> Duration {
        Duration::from_millis(self.config.operation_timeout_ms)
    }
    /// Whether `domain` (as typed by a user) selects this directory.
    pub fn serves(&self, domain: &str) -> bool {
        self.config
            .domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(domain))
    }
}

fn err(dir: &str, msg: impl std::fmt::Display) -> DirectoryError {
    DirectoryError::Config(format!("directory {dir:?}: {msg}"))
}

impl Attributes {
    fn resolve(kind: Kind, o: &AttributeOverrides) -> Self {
        let pick = |v: &Option<String>, ad: &str, ldap: &str| {
            v.clone().unwrap_or_else(|| match kind {
                Kind::Ad => ad.to_string(),
                Kind::Ldap => ldap.to_string(),
            })
        };
        Self {
            login: pick(&o.login, "sAMAccountName", "uid"),
            upn: match kind {
                Kind::Ad => Some(o.upn.clone().unwrap_or_else(|| "userPrincipalName".into())),
                Kind::Ldap => o.upn.clone(),
            },
            display_name: pick(&o.display_name, "displayName", "displayName"),
            mail: pick(&o.mail, "mail", "mail"),
            id: pick(&o.id, "objectGUID", "entryUUID"),
            user_filter: pick(
                &o.user_filter,
                "(&(objectCategory=person)(objectClass=user))",
                "(objectClass=inetOrgPerson)",
            ),
            group_filter: pick(
                &o.group_filter,
                "(objectClass=group)",
                "(objectClass=groupOfNames)",
            ),
            group_name: pick(&o.group_name, "cn", "cn"),
            member: pick(&o.member, "member", "member"),
        }
    }
}

fn is_attribute_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ';')
}

/// Validates one directory.
pub fn validate(c: DirectoryConfig) -> Result<Directory, DirectoryError> {
    let n = c.name.clone();
    if n.is_empty() {
        return Err(DirectoryError::Config(
            "a directory has an empty name".into(),
        ));
    }
    if c.urls.is_empty() {
        return Err(err(&n, "urls is empty"));
    }
    for u in &c.urls {
        let lower = u.to_ascii_lowercase();
        if lower.starts_with("ldaps://") {
            continue;
        }
        if !lower.starts_with("ldap://") {
            return Err(err(&n, format!("{u:?} is not an ldaps:// or ldap:// URL")));
        }
        if !c.starttls && !c.allow_plain_ldap {
            return Err(err(&n, format!(
                "{u:?} would send passwords in clear: use ldaps://, keep starttls = true, or set allow_plain_ldap = true for a lab"
            )));
        }
    }
    if let Some(ca) = &c.ca_file {
        crate::tls::load_roots(ca).map_err(|e| err(&n, e))?;
    }
    let service_password = match (&c.service_password, &c.service_password_file) {
        (Some(p), None) => p.clone(),
        (None, Some(f)) => read_secret(f).map_err(|e| err(&n, e))?,
        _ => {
            return Err(err(
                &n,
                "set exactly one of service_password and service_password_file",
            ))
        }
    };
    if c.service_dn.is_empty() || service_password.is_empty() {
        return Err(err(
            &n,
            "the service account needs a DN and a non-empty password",
        ));
    }
    if c.user_base.is_empty() {
        return Err(err(&n, "user_base is empty"));
    }
    if !(1..=10_000).contains(&c.page_size) {
        return Err(err(&n, "page_size must be 1 to 10000"));
    }
    if c.connect_timeout_ms == 0 || c.operation_timeout_ms == 0 {
        return Err(err(&n, "timeouts must be above 0"));
    }
    if c.max_group_depth == 0 || c.max_group_depth > 64 {
        return Err(err(&n, "max_group_depth must be 1 to 64"));
    }
    let attributes = Attributes::resolve(c.kind, &c.attributes);
    let names = [
        &attributes.login,
        &attributes.display_name,
        &attributes.mail,
        &attributes.id,
        &attributes.group_name,
        &attributes.member,
    ];
    if let Some(bad) = names.iter().find(|a| !is_attribute_name(a)) {
        return Err(err(&n, format!("{bad:?} is not an attribute name")));
    }
    for f in [&attributes.user_filter, &attributes.group_filter] {
        ldap3::parse_filter(f.as_str())
            .map_err(|_| err(&n, format!("filter {f:?} does not parse")))?;
    }
    let nested_groups = c.nested_groups.unwrap_or(match c.kind {
        Kind::Ad => NestedGroups::InChain,
        Kind::Ldap => NestedGroups::MemberOf,
    });
    if nested_groups == NestedGroups::InChain && c.kind != Kind::Ad {
        return Err(err(&n, "nested_groups = \"in-chain\" works only with Active Directory (other servers silently match nothing)"));
    }
    Ok(Directory {
        group_base: c.group_base.clone().unwrap_or_else(|| c.user_base.clone()),
        service_password,
        attributes,
        nested_groups,
        config: c,
    })
}

fn read_secret(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(text.lines().next().unwrap_or("").to_string())
}

/// Reads and validates a TOML file of directories.
pub fn load(path: &Path) -> Result<Vec<Directory>, DirectoryError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| DirectoryError::Config(format!("cannot read {}: {e}", path.display())))?;
    parse(&text).map_err(|e| DirectoryError::Config(format!("{}: {e}", path.display())))
}

/// Parses and validates directories from TOML text.
pub fn parse(text: &str) -> Result<Vec<Directory>, DirectoryError> {
    let file: DirectoriesFile = toml::from_str(text).map_err(|e| {
        let line = e.span().map_or(0, |s| {
            text[..s.start.min(text.len())].lines().count().max(1)
        });
        DirectoryError::Config(format!("line {line}: {}", e.message().trim()))
    })?;
    if file.directory.is_empty() {
        return Err(DirectoryError::Config("no [[directory]] configured".into()));
    }
    let dirs = file
        .directory
        .into_iter()
        .map(validate)
        .collect::<Result<Vec<_>, _>>()?;
    for (i, a) in dirs.iter().enumerate() {
        for b in &dirs[i + 1..] {
            if a.config.name == b.config.name {
                return Err(DirectoryError::Config(format!(
                    "two directories are named {:?}",
                    a.config.name
                )));
            }
            if let Some(d) = a.config.domains.iter().find(|d| b.serves(d)) {
                return Err(DirectoryError::Config(format!(
                    "domain {d:?} is served by both {:?} and {:?}",
                    a.config.name, b.config.name
                )));
            }
        }
    }
    Ok(dirs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[[directory]]
name = "corp"
kind = "ad"
urls = ["ldaps://dc1", "ldap://dc2"]
service_dn = "svc@corp"
service_password = "x"
user_base = "DC=corp"
domains = ["CORP", "corp.example"]

[[directory]]
name = "lab"
kind = "ldap"
urls = ["ldaps://ldap"]
service_dn = "uid=svc"
service_password = "y"
user_base = "dc=lab"
"#;

    #[test]
    fn defaults_per_kind() {
        let d = parse(GOOD).unwrap();
        assert_eq!(d[0].attributes.login, "sAMAccountName");
        assert_eq!(d[0].nested_groups, NestedGroups::InChain);
        assert_eq!(d[0].group_base, "DC=corp");
        assert!(d[0].serves("corp.EXAMPLE"));
        assert_eq!(d[1].attributes.login, "uid");
        assert_eq!(d[1].attributes.id, "entryUUID");
        assert_eq!(d[1].nested_groups, NestedGroups::MemberOf);
        assert_eq!(d[1].operation_timeout(), Duration::from_secs(10));
    }

    #[test]
    fn bad_files_name_the_problem() {
        let cases = [
            (
                GOOD.replace("ldaps://ldap", "http://ldap"),
                "not an ldaps://",
            ),
            (
                GOOD.replace(
                    "urls = [\"ldaps://ldap\"]",
                    "urls = [\"ldap://ldap\"]\nstarttls = false",
                ),
                "in clear",
            ),
            (GOOD.replace("service_password = \"y\"", ""), "exactly one"),
            (
                GOOD.replace("name = \"lab\"", "name = \"corp\""),
                "two directories",
            ),
            (
                GOOD.replace(
                    "user_base = \"dc=lab\"",
                    "user_base = \"dc=lab\"\ndomains = [\"corp\"]",
                ),
                "served by both",
            ),
            (
                GOOD.replace(
                    "kind = \"ldap\"",
                    "kind = \"ldap\"\nnested_groups = \"in-chain\"",
                ),
                "only with Active Directory",
            ),
            (
                GOOD.replace("kind = \"ldap\"", "kind = \"ldap\"\npage_size = 0"),
                "page_size",
            ),
            (
                format!("{GOOD}\n[directory.attributes]\nlogin = \"u id\"\n"),
                "not an attribute",
            ),
            (
                format!("{GOOD}\n[directory.attributes]\nuser_filter = \"(uid=\"\n"),
                "does not parse",
            ),
            (
                GOOD.replace(
                    "kind = \"ldap\"",
                    "kind = \"ldap\"\nca_file = \"/nonexistent.pem\"",
                ),
                "nonexistent",
            ),
            (GOOD.replace("kind = \"ldap\"", "kind = \"novell\""), "line"),
            (
                GOOD.replace("kind = \"ldap\"", "kind = \"ldap\"\ncolour = 1"),
                "unknown field",
            ),
            ("".to_string(), "line"),
        ];
        for (text, want) in cases {
            let e = parse(&text).unwrap_err().to_string();
            assert!(e.contains(want), "{want:?} not in {e:?}");
        }
        let plain = GOOD.replace(
            "urls = [\"ldaps://ldap\"]",
            "urls = [\"ldap://ldap\"]\nstarttls = false\nallow_plain_ldap = true",
        );
        assert!(parse(&plain).is_ok());
    }
}
