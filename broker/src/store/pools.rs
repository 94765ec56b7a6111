//! Golden images, their versions, and desktop pools with their sizing, power and refresh
//! policies and their entitlements.

use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::{new_id, now_ms, Store, StoreError};

/// How desktops are handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Assignment {
    /// A user keeps the same desktop.
    Dedicated,
    /// Any ready desktop; it returns to the pool at logoff.
    Floating,
}

/// How a desktop's disk is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CloneKind {
    /// An overlay on the golden image's base disk.
    Linked,
    /// A standalone copy.
    Full,
}

/// When desktops are powered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PowerPolicy {
    /// Always running.
    AlwaysOn,
    /// Powered off when nobody uses them (spares stay on).
    OffWhenIdle,
    /// Powered off after a user logs off.
    OffAfterLogoff,
}

text_enum!(Assignment { Dedicated => "dedicated", Floating => "floating" });
text_enum!(CloneKind { Linked => "linked", Full => "full" });
text_enum!(PowerPolicy { AlwaysOn => "always-on", OffWhenIdle => "off-when-idle", OffAfterLogoff => "off-after-logoff" });

/// A desktop pool's definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolSpec {
    /// Unique name.
    pub name: String,
    /// Name shown to users.
    pub display_name: String,
    /// Golden image name.
    pub image: String,
    /// Image version the pool's desktops use.
    pub image_version: i64,
    /// Dedicated or floating.
    pub assignment: Assignment,
    /// Linked or full clones.
    pub clone_kind: CloneKind,
    /// Desktop names, e.g. `fin-{n:03}` (fin-001, fin-002, ...).
    pub naming: String,
    /// Desktops kept provisioned at least.
    pub min_desktops: i64,
    /// Desktops never exceeded.
    pub max_desktops: i64,
    /// Ready, unassigned desktops kept waiting for the next user.
    pub spare_desktops: i64,
    /// Power policy.
    pub power_policy: PowerPolicy,
    /// Floating pools: replace the overlay when the user logs off.
    pub refresh_on_logoff: bool,
    /// vCPUs per desktop.
    pub vcpus: i64,
    /// Memory per desktop, MiB.
    pub memory_mib: i64,
}

/// The files of a golden image version, as hosts see them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageVersion {
    /// Base disk.
    pub disk: String,
    /// Kernel (Linux direct boot).
    pub kernel: Option<String>,
    /// Initrd.
    pub initrd: Option<String>,
    /// Kernel command line.
    pub cmdline: Option<String>,
    /// UEFI firmware that boots the disk instead of a kernel.
    pub firmware: Option<String>,
    /// Hyper-V enlightenments (Windows).
    pub hyperv: bool,
    /// A TPM 2.0 for each desktop (Windows 11).
    pub tpm: bool,
}

/// A stored pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pool {
    /// ID.
    pub id: String,
    /// Definition.
    pub spec: PoolSpec,
    /// Image ID.
    pub image_id: String,
    /// Accepting new users.
    pub enabled: bool,
}

/// An entitlement: who may use a pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Principal {
    /// A directory user, by DN.
    User {
        /// Directory name.
        directory: String,
        /// DN.
        dn: String,
    },
    /// A directory group (nested members included), by DN.
    Group {
        /// Directory name.
        directory: String,
        /// DN.
        dn: String,
    },
    /// A local account.
    Local {
        /// Account name.
        name: String,
    },
}

/// Expands a naming pattern: `{n}` or `{n:0W}` (zero-padded to W digits) is the index.
pub fn desktop_name(pattern: &str, n: i64) -> Result<String, StoreError> {
    let bad = || {
        StoreError::Invalid(format!(
            "naming pattern {pattern:?} needs one {{n}} or {{n:0W}}, e.g. fin-{{n:03}}"
        ))
    };
    let start = pattern.find("{n").ok_or_else(bad)?;
    let end = start + pattern[start..].find('}').ok_or_else(bad)?;
    let spec = &pattern[start + 2..end];
    let width = match spec {
        "" => 0,
        s => s
            .strip_prefix(":0")
            .and_then(|w| w.parse::<usize>().ok())
            .filter(|w| *w <= 9)
            .ok_or_else(bad)?,
    };
    let rest = &pattern[end + 1..];
    if rest.contains('{') || pattern[..start].contains('{') {
        return Err(bad());
    }
    let name = format!("{}{n:0width$}{rest}", &pattern[..start]);
    // Desktop names become computer names: NetBIOS rules.
    let ok = (1..=15).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !name.starts_with('-');
    if ok {
        Ok(name)
    } else {
        Err(StoreError::Invalid(format!(
            "desktop name {name:?} from {pattern:?} is not a computer name (1-15 letters, digits, hyphens)"
        )))
    }
}

impl PoolSpec {
    /// Checks the sizing and the naming pattern.
    pub fn validate(&self) -> Result<(), StoreError> {
        let bad = |m: &str| Err(StoreError::Invalid(format!("pool {:?}: {m}", self.name)));
        if self.name.is_empty() || self.name.len() > 64 {
            return bad("name must be 1 to 64 characters");
        }
        if self.min_desktops < 0 || self.spare_desktops < 0 || self.max_desktops < self.min_desktops
        {
            return bad("need 0 <= min <= max and spare >= 0");
        }
        if self.max_desktops > 100_000 || self.max_desktops < 1 {
            return bad("max must be 1 to 100000");
        }
        if !(1..=64).contains(&self.vcpus) || !(64..=1 << 20).contains(&self.memory_mib) {
            return bad("vcpus 1-64, memory 64 MiB-1 TiB");
        }
        if self.refresh_on_logoff && self.assignment == Assignment::Dedicated {
            return bad("refresh on logoff is for floating pools");
        }
        desktop_name(&self.naming, self.max_desktops)?;
        Ok(())
    }
}

impl Store {
    /// Adds a golden image and its first version (version 1).
    pub async fn create_image(
        &self,
        name: &str,
        disk: &str,
        size: i64,
        kernel: Option<&str>,
        initrd: Option<&str>,
        cmdline: Option<&str>,
    ) -> Result<String, StoreError> {
        let id = new_id();
        let now = now_ms();
        let mut tx = self.pool().begin().await?;
        sqlx::query(&self.sql("INSERT INTO images (id, name, created_at) VALUES ($1, $2, $3)"))
            .bind(&id)
            .bind(name)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(&self.sql(
            "INSERT INTO image_versions (id, image_id, version, disk, size, kernel, initrd, cmdline, created_at) \
             VALUES ($1, $2, 1, $3, $4, $5, $6, $7, $8)",
        ))
        .bind(new_id())
        .bind(&id)
        .bind(disk)
        .bind(size)
        .bind(kernel)
        .bind(initrd)
        .bind(cmdline)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Makes version `version` of image `image_id` boot through UEFI firmware `firmware` (a
    /// file in the hosts' image library) instead of a kernel.
    pub async fn set_image_firmware(
        &self,
        image_id: &str,
        version: i64,
        firmware: &str,
    ) -> Result<(), StoreError> {
        let done = sqlx::query(&self.sql(
            "UPDATE image_versions SET firmware = $1, kernel = NULL, initrd = NULL, cmdline = NULL \
             WHERE image_id = $2 AND version = $3",
        ))
        .bind(firmware)
        .bind(image_id)
        .bind(version)
        .execute(self.pool())
        .await?;
        version_found(done.rows_affected(), image_id, version)
    }

    /// Gives the desktops of version `version` of image `image_id` Hyper-V enlightenments
    /// and a TPM 2.0, or takes them away (what a Windows image needs).
    pub async fn set_image_devices(
        &self,
        image_id: &str,
        version: i64,
        hyperv: bool,
        tpm: bool,
    ) -> Result<(), StoreError> {
        let done = sqlx::query(&self.sql(
            "UPDATE image_versions SET hyperv = $1, tpm = $2 WHERE image_id = $3 AND version = $4",
        ))
        .bind(i64::from(hyperv))
        .bind(i64::from(tpm))
        .bind(image_id)
        .bind(version)
        .execute(self.pool())
        .await?;
        version_found(done.rows_affected(), image_id, version)
    }

    /// The files and devices of an image version.
    pub async fn image_version(
        &self,
        image_id: &str,
        version: i64,
    ) -> Result<ImageVersion, StoreError> {
        let r = sqlx::query(&self.sql(
            "SELECT disk, kernel, initrd, cmdline, firmware, hyperv, tpm FROM image_versions \
             WHERE image_id = $1 AND version = $2",
        ))
        .bind(image_id)
        .bind(version)
        .fetch_optional(self.pool())
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("image {image_id} version {version}")))?;
        Ok(ImageVersion {
            disk: r.try_get(0)?,
            kernel: r.try_get(1)?,
            initrd: r.try_get(2)?,
            cmdline: r.try_get(3)?,
            firmware: r.try_get(4)?,
            hyperv: r.try_get::<i64, _>(5)? == 1,
            tpm: r.try_get::<i64, _>(6)? == 1,
        })
    }

    /// Every enabled pool's name.
    pub async fn pool_names(&self) -> Result<Vec<String>, StoreError> {
        let rows =
            sqlx::query(&self.sql("SELECT name FROM pools WHERE enabled = $1 ORDER BY name"))
                .bind(1i64)
                .fetch_all(self.pool())
                .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    /// Creates a pool from a checked spec.
    pub async fn create_pool(&self, spec: &PoolSpec) -> Result<Pool, StoreError> {
        spec.validate()?;
        let image_id: String = sqlx::query(&self.sql(
            "SELECT i.id FROM images i JOIN image_versions v ON v.image_id = i.id \
             WHERE i.name = $1 AND v.version = $2",
        ))
        .bind(&spec.image)
        .bind(spec.image_version)
        .fetch_optional(self.pool())
        .await?
        .ok_or_else(|| {
            StoreError::NotFound(format!(
                "image {} version {}",
                spec.image, spec.image_version
            ))
        })?
        .try_get(0)?;
        let id = new_id();
        sqlx::query(&self.sql(
            "INSERT INTO pools (id, name, display_name, image_id, image_version, assignment, clone_kind, \
             naming, min_desktops, max_desktops, spare_desktops, power_policy, refresh_on_logoff, vcpus, \
             memory_mib, enabled, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
        ))
        .bind(&id)
        .bind(&spec.name)
        .bind(&spec.display_name)
        .bind(&image_id)
        .bind(spec.image_version)
        .bind(spec.assignment.as_str())
        .bind(spec.clone_kind.as_str())
        .bind(&spec.naming)
        .bind(spec.min_desktops)
        .bind(spec.max_desktops)
        .bind(spec.spare_desktops)
        .bind(spec.power_policy.as_str())
        .bind(i64::from(spec.refresh_on_logoff))
        .bind(spec.vcpus)
        .bind(spec.memory_mib)
        .bind(1i64)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(Pool {
            id,
            spec: spec.clone(),
            image_id,
            enabled: true,
        })
    }

    /// A pool by name.
    pub async fn pool_by_name(&self, name: &str) -> Result<Pool, StoreError> {
        self.pool_where("p.name", name).await
    }

    /// A pool by ID.
    pub async fn pool_by_id(&self, id: &str) -> Result<Pool, StoreError> {
        self.pool_where("p.id", id).await
    }

    async fn pool_where(&self, column: &'static str, value: &str) -> Result<Pool, StoreError> {
        let row = sqlx::query(&self.sql(&format!(
            "SELECT p.id, p.name, p.display_name, i.name, p.image_version, p.assignment, p.clone_kind, \
             p.naming, p.min_desktops, p.max_desktops, p.spare_desktops, p.power_policy, \
             p.refresh_on_logoff, p.vcpus, p.memory_mib, p.image_id, p.enabled \
             FROM pools p JOIN images i ON i.id = p.image_id WHERE {column} = $1"
        )))
        .bind(value)
        .fetch_optional(self.pool())
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("pool {value}")))?;
        Ok(Pool {
            id: row.try_get(0)?,
            spec: PoolSpec {
                name: row.try_get(1)?,
                display_name: row.try_get(2)?,
                image: row.try_get(3)?,
                image_version: row.try_get(4)?,
                assignment: Assignment::parse(&row.try_get::<String, _>(5)?)?,
                clone_kind: CloneKind::parse(&row.try_get::<String, _>(6)?)?,
                naming: row.try_get(7)?,
                min_desktops: row.try_get(8)?,
                max_desktops: row.try_get(9)?,
                spare_desktops: row.try_get(10)?,
                power_policy: PowerPolicy::parse(&row.try_get::<String, _>(11)?)?,
                refresh_on_logoff: row.try_get::<i64, _>(12)? != 0,
                vcpus: row.try_get(13)?,
                memory_mib: row.try_get(14)?,
            },
            image_id: row.try_get(15)?,
            enabled: row.try_get::<i64, _>(16)? != 0,
        })
    }

    /// Entitles `who` to pool `pool_id` (idempotent).
    pub async fn entitle(&self, pool_id: &str, who: &Principal) -> Result<(), StoreError> {
        let (kind, directory, principal) = match who {
            Principal::User { directory, dn } => ("user", directory.as_str(), dn.as_str()),
            Principal::Group { directory, dn } => ("group", directory.as_str(), dn.as_str()),
            Principal::Local { name } => ("local", "", name.as_str()),
        };
        let exists = sqlx::query(&self.sql(
            "SELECT 1 FROM entitlements WHERE pool_id = $1 AND kind = $2 AND directory = $3 AND principal = $4",
        ))
        .bind(pool_id)
        .bind(kind)
        .bind(directory)
        .bind(principal)
        .fetch_optional(self.pool())
        .await?;
        if exists.is_some() {
            return Ok(());
        }
        sqlx::query(&self.sql(
            "INSERT INTO entitlements (id, pool_id, kind, principal, directory) VALUES ($1, $2, $3, $4, $5)",
        ))
        .bind(new_id())
        .bind(pool_id)
        .bind(kind)
        .bind(principal)
        .bind(directory)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Pools (names) a user may use: entitled directly, through any of `group_dns` (nested
    /// groups already resolved by the directory), or as a local account. DNs compare
    /// case-insensitively, as directories do.
    pub async fn entitled_pools(
        &self,
        directory: Option<&str>,
        user_dn_or_local: &str,
        group_dns: &[String],
    ) -> Result<Vec<String>, StoreError> {
        let rows = match directory {
            None => {
                sqlx::query(&self.sql(
                    "SELECT DISTINCT p.name FROM entitlements e JOIN pools p ON p.id = e.pool_id \
                     WHERE p.enabled = $1 AND e.kind = 'local' AND e.principal = $2 ORDER BY p.name",
                ))
                .bind(1i64)
                .bind(user_dn_or_local)
                .fetch_all(self.pool())
                .await?
            }
            Some(dir) => {
                let groups: Vec<String> = group_dns.iter().map(|g| g.to_lowercase()).collect();
                let list: Vec<String> = (0..groups.len()).map(|i| format!("${}", i + 4)).collect();
                let in_groups = if list.is_empty() {
                    String::new()
                } else {
                    format!(" OR (e.kind = 'group' AND lower(e.principal) IN ({}))", list.join(", "))
                };
                let sql = format!(
                    "SELECT DISTINCT p.name FROM entitlements e JOIN pools p ON p.id = e.pool_id \
                     WHERE p.enabled = $1 AND e.directory = $2 AND \
                     ((e.kind = 'user' AND lower(e.principal) = $3){in_groups}) ORDER BY p.name"
                );
                let sql = self.sql(&sql);
                let mut q = sqlx::query(&sql)
                    .bind(1i64)
                    .bind(dir.to_string())
                    .bind(user_dn_or_local.to_lowercase());
                for g in groups {
                    q = q.bind(g);
                }
                q.fetch_all(self.pool()).await?
            }
        };
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }
}

/// An update of image version `version` of `image_id` that touched `rows` rows: none means
/// there is no such version.
fn version_found(rows: u64, image_id: &str, version: i64) -> Result<(), StoreError> {
    if rows == 0 {
        return Err(StoreError::NotFound(format!(
            "image {image_id} version {version}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn naming_patterns() {
        assert_eq!(desktop_name("fin-{n:03}", 7).unwrap(), "fin-007");
        assert_eq!(desktop_name("fin-{n:03}", 1234).unwrap(), "fin-1234");
        assert_eq!(desktop_name("d{n}x", 42).unwrap(), "d42x");
        for bad in [
            "fin",
            "fin-{n",
            "fin-{m}",
            "{n}{n}",
            "fin-{n:3}",
            "fin_{n}",
            "-{n}",
            "averyveryverylongname-{n:03}",
        ] {
            assert!(desktop_name(bad, 1).is_err(), "{bad}");
        }
    }

    pub(crate) fn spec() -> PoolSpec {
        PoolSpec {
            name: "finance".into(),
            display_name: "Finance desktops".into(),
            image: "win-gold".into(),
            image_version: 1,
            assignment: Assignment::Floating,
            clone_kind: CloneKind::Linked,
            naming: "fin-{n:03}".into(),
            min_desktops: 2,
            max_desktops: 10,
            spare_desktops: 1,
            power_policy: PowerPolicy::AlwaysOn,
            refresh_on_logoff: true,
            vcpus: 2,
            memory_mib: 2048,
        }
    }

    #[test]
    fn specs_are_checked() {
        spec().validate().unwrap();
        let mut s = spec();
        s.max_desktops = 1;
        assert!(s.validate().is_err());
        let mut s = spec();
        s.assignment = Assignment::Dedicated;
        assert!(s.validate().is_err(), "refresh on a dedicated pool");
        let mut s = spec();
        s.naming = "finance-desktop-{n:03}".into();
        assert!(s.validate().is_err());
    }
}
