//! Hosts and their datastores, as their agents register and report them: capacity, free
//! memory and space, and a heartbeat the placement and the reconciler trust; the one-time
//! tokens agents join with.

use serde::Serialize;
use sqlx::Row;

use super::sessions::{hash_secret, new_secret};
use super::{new_id, now_ms, Store, StoreError};

/// A host as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Host {
    /// ID.
    pub id: String,
    /// Name (the agent's host name).
    pub name: String,
    /// The agent's address (https://host:port).
    pub address: String,
    /// joining, online, offline or maintenance.
    pub state: String,
    /// CPU threads.
    pub cpus: i64,
    /// Memory, bytes.
    pub memory_total: i64,
    /// Free memory at the last heartbeat, bytes.
    pub memory_free: i64,
    /// Last heartbeat (Unix ms).
    pub last_heartbeat: Option<i64>,
}

/// A capacity report from an agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capacity {
    /// CPU threads.
    pub cpus: i64,
    /// Memory, bytes.
    pub memory_total: i64,
    /// Free memory, bytes.
    pub memory_free: i64,
    /// Datastores: (name, path, capacity, free).
    pub datastores: Vec<(String, String, i64, i64)>,
}

impl From<&tessera_agent::capacity::Capacity> for Capacity {
    fn from(c: &tessera_agent::capacity::Capacity) -> Self {
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        Self {
            cpus: n(c.cpus),
            memory_total: n(c.memory_total),
            memory_free: n(c.memory_free),
            datastores: c
                .datastores
                .iter()
                .map(|d| (d.name.clone(), d.path.clone(), n(d.capacity), n(d.free)))
                .collect(),
        }
    }
}

fn host(r: &sqlx::any::AnyRow) -> Result<Host, StoreError> {
    Ok(Host {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        address: r.try_get(2)?,
        state: r.try_get(3)?,
        cpus: r.try_get(4)?,
        memory_total: r.try_get(5)?,
        memory_free: r.try_get(6)?,
        last_heartbeat: r.try_get(7)?,
    })
}

const COLUMNS: &str = "id, name, address, state, cpus, memory_total, memory_free, last_heartbeat";

impl Store {
    /// Registers a host (or updates its address), returning its ID.
    pub async fn register_host(&self, name: &str, address: &str) -> Result<String, StoreError> {
        if let Some(r) = sqlx::query(&self.sql("SELECT id FROM hosts WHERE name = $1"))
            .bind(name)
            .fetch_optional(self.pool())
            .await?
        {
            let id: String = r.try_get(0)?;
            sqlx::query(&self.sql("UPDATE hosts SET address = $1 WHERE id = $2"))
                .bind(address)
                .bind(&id)
                .execute(self.pool())
                .await?;
            return Ok(id);
        }
        let id = new_id();
        sqlx::query(&self.sql(
            "INSERT INTO hosts (id, name, address, state, created_at) VALUES ($1, $2, $3, 'joining', $4)",
        ))
        .bind(&id)
        .bind(name)
        .bind(address)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(id)
    }

    /// Records a heartbeat with the host's capacity; the host is online from now on.
    pub async fn heartbeat(&self, host_id: &str, c: &Capacity) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        let n = sqlx::query(&self.sql(
            "UPDATE hosts SET state = CASE WHEN state = 'maintenance' THEN state ELSE 'online' END, \
             cpus = $1, memory_total = $2, memory_free = $3, last_heartbeat = $4 WHERE id = $5",
        ))
        .bind(c.cpus)
        .bind(c.memory_total)
        .bind(c.memory_free)
        .bind(now_ms())
        .bind(host_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound(format!("host {host_id}")));
        }
        for (name, path, capacity, free) in &c.datastores {
            let updated = sqlx::query(&self.sql(
                "UPDATE datastores SET path = $1, capacity = $2, free = $3 WHERE host_id = $4 AND name = $5",
            ))
            .bind(path)
            .bind(capacity)
            .bind(free)
            .bind(host_id)
            .bind(name)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if updated == 0 {
                sqlx::query(&self.sql(
                    "INSERT INTO datastores (id, host_id, name, path, capacity, free) VALUES ($1, $2, $3, $4, $5, $6)",
                ))
                .bind(new_id())
                .bind(host_id)
                .bind(name)
                .bind(path)
                .bind(capacity)
                .bind(free)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Online hosts, the one with the most free memory first (placement's order).
    pub async fn hosts_by_free_memory(&self) -> Result<Vec<Host>, StoreError> {
        sqlx::query(&self.sql(&format!(
            "SELECT {COLUMNS} FROM hosts WHERE state = 'online' ORDER BY memory_free DESC, name"
        )))
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(host)
        .collect()
    }

    /// Every registered host, by name.
    pub async fn hosts(&self) -> Result<Vec<Host>, StoreError> {
        sqlx::query(&self.sql(&format!("SELECT {COLUMNS} FROM hosts ORDER BY name")))
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(host)
            .collect()
    }

    /// A host by ID.
    pub async fn host(&self, id: &str) -> Result<Host, StoreError> {
        let r = sqlx::query(&self.sql(&format!("SELECT {COLUMNS} FROM hosts WHERE id = $1")))
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("host {id}")))?;
        host(&r)
    }

    /// A host's datastores (name, free bytes), the one with the most free space first.
    pub async fn datastores_of(&self, host_id: &str) -> Result<Vec<(String, i64)>, StoreError> {
        let rows =
            sqlx::query(&self.sql(
                "SELECT name, free FROM datastores WHERE host_id = $1 ORDER BY free DESC, name",
            ))
            .bind(host_id)
            .fetch_all(self.pool())
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// Marks hosts whose last heartbeat is older than `stale_ms` offline; returns how many.
    pub async fn expire_hosts(&self, stale_ms: i64) -> Result<u64, StoreError> {
        Ok(sqlx::query(&self.sql(
            "UPDATE hosts SET state = 'offline' WHERE state = 'online' AND (last_heartbeat IS NULL OR last_heartbeat < $1)",
        ))
        .bind(now_ms() - stale_ms)
        .execute(self.pool())
        .await?
        .rows_affected())
    }

    /// A one-time join token admitting host `host` (a re-join of an existing host only with
    /// `rejoin`), valid `ttl_ms`; returns the secret (shown once; stored hashed) and its
    /// expiry.
    pub async fn create_join_token(
        &self,
        created_by: &str,
        host: &str,
        rejoin: bool,
        ttl_ms: i64,
    ) -> Result<(String, i64), StoreError> {
        let (secret, hash) = new_secret()?;
        let now = now_ms();
        sqlx::query(&self.sql(
            "INSERT INTO join_tokens (secret_hash, created_by, created_at, expires_at, \
             host_name, rejoin) VALUES ($1, $2, $3, $4, $5, $6)",
        ))
        .bind(hash)
        .bind(created_by)
        .bind(now)
        .bind(now + ttl_ms)
        .bind(host)
        .bind(i64::from(rejoin))
        .execute(self.pool())
        .await?;
        Ok((secret, now + ttl_ms))
    }

    /// What an unused, unexpired join token allows: None if it is unknown, used or expired,
    /// or names another host than `name`; else whether it is a re-join. Nothing is spent.
    pub async fn check_join_token(
        &self,
        secret: &str,
        name: &str,
    ) -> Result<Option<bool>, StoreError> {
        let r = sqlx::query(&self.sql(
            "SELECT rejoin FROM join_tokens WHERE secret_hash = $1 AND used_at IS NULL \
             AND expires_at > $2 AND host_name = $3",
        ))
        .bind(hash_secret(secret))
        .bind(now_ms())
        .bind(name)
        .fetch_optional(self.pool())
        .await?;
        Ok(match r {
            Some(r) => Some(r.try_get::<i64, _>(0)? != 0),
            None => None,
        })
    }

    /// Spends a join token for host `name`: true if it existed, named that host, had not
    /// expired and was unused (one of two racing requests wins).
    pub async fn redeem_join_token(&self, secret: &str, name: &str) -> Result<bool, StoreError> {
        let now = now_ms();
        let n = sqlx::query(&self.sql(
            "UPDATE join_tokens SET used_at = $1, used_by = $2 \
             WHERE secret_hash = $3 AND used_at IS NULL AND expires_at > $4 AND host_name = $2",
        ))
        .bind(now)
        .bind(name)
        .bind(hash_secret(secret))
        .bind(now)
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Whether a host of that name is registered.
    pub async fn host_exists(&self, name: &str) -> Result<bool, StoreError> {
        Ok(
            sqlx::query(&self.sql("SELECT 1 FROM hosts WHERE name = $1"))
                .bind(name)
                .fetch_optional(self.pool())
                .await?
                .is_some(),
        )
    }

    /// Records host `name`'s new certificate and revokes its earlier ones (a re-join
    /// replaces the host's key); how many were revoked.
    pub async fn record_host_certificate(
        &self,
        name: &str,
        serial: &str,
        not_after_ms: i64,
    ) -> Result<u64, StoreError> {
        let now = now_ms();
        let mut tx = self.pool().begin().await?;
        let revoked = sqlx::query(&self.sql(
            "UPDATE host_certificates SET revoked_at = $1 WHERE host_name = $2 AND revoked_at IS NULL",
        ))
        .bind(now)
        .bind(name)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query(&self.sql(
            "INSERT INTO host_certificates (serial, host_name, issued_at, not_after) \
             VALUES ($1, $2, $3, $4)",
        ))
        .bind(serial)
        .bind(name)
        .bind(now)
        .bind(not_after_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(revoked)
    }

    /// Revokes every certificate of host `name` (it is retired, or its key was exposed); how
    /// many.
    pub async fn revoke_host_certificates(&self, name: &str) -> Result<u64, StoreError> {
        Ok(sqlx::query(&self.sql(
            "UPDATE host_certificates SET revoked_at = $1 WHERE host_name = $2 AND revoked_at IS NULL",
        ))
        .bind(now_ms())
        .bind(name)
        .execute(self.pool())
        .await?
        .rows_affected())
    }

    /// Revoked host certificates not yet expired: (serial, when revoked), for the CRL.
    pub async fn revoked_host_certificates(&self) -> Result<Vec<(String, i64)>, StoreError> {
        sqlx::query(&self.sql(
            "SELECT serial, revoked_at FROM host_certificates \
             WHERE revoked_at IS NOT NULL AND not_after > $1 ORDER BY serial",
        ))
        .bind(now_ms())
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
    }
}
