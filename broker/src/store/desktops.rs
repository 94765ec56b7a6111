//! Desktops: the state machine and the operations that move desktops through it.
//!
//! Every change is a compare-and-swap on the desktop's `generation`, so two brokers (or a
//! broker racing its own reconciler) can never both act on one desktop, and a unique index on
//! (pool, assigned user) means a user never holds two desktops of one pool. A broker killed at
//! any moment leaves each desktop in a state its reconciler knows how to continue from.

use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::pools::{desktop_name, Pool};
use super::{new_id, now_ms, Store, StoreError};

/// Where a desktop is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DesktopState {
    /// Its disk and VM are being created.
    Provisioning,
    /// Created, powered off, free.
    Ready,
    /// Powered on, free.
    Running,
    /// Given to a user, who has not connected yet.
    Assigned,
    /// A user's client is connected.
    Connected,
    /// The user's client went away; the session waits for a reconnect.
    Disconnected,
    /// Its overlay is being replaced (refresh on logoff, or an admin refresh).
    Refreshing,
    /// Something failed; the reconciler retries with backoff.
    Error,
    /// Being removed.
    Deleting,
}

text_enum!(DesktopState {
    Provisioning => "provisioning",
    Ready => "ready",
    Running => "running",
    Assigned => "assigned",
    Connected => "connected",
    Disconnected => "disconnected",
    Refreshing => "refreshing",
    Error => "error",
    Deleting => "deleting"
});

impl DesktopState {
    /// Whether the state machine allows `self -> to`.
    pub fn can_become(self, to: Self) -> bool {
        use DesktopState::*;
        let allowed: &[DesktopState] = match self {
            Provisioning => &[Ready, Running, Error, Deleting],
            Ready => &[Running, Assigned, Refreshing, Deleting, Error],
            Running => &[Ready, Assigned, Refreshing, Deleting, Error],
            Assigned => &[Connected, Running, Ready, Refreshing, Deleting, Error],
            Connected => &[Disconnected, Assigned, Running, Ready, Refreshing, Error],
            Disconnected => &[
                Connected, Assigned, Running, Ready, Refreshing, Deleting, Error,
            ],
            Refreshing => &[Ready, Running, Error, Deleting],
            Error => &[Provisioning, Refreshing, Ready, Deleting],
            Deleting => &[],
        };
        allowed.contains(&to)
    }
}

/// A stored desktop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Desktop {
    /// ID.
    pub id: String,
    /// Pool ID.
    pub pool_id: String,
    /// Computer name.
    pub name: String,
    /// Host it lives on.
    pub host_id: Option<String>,
    /// Its disk (overlay) path on the host.
    pub disk: Option<String>,
    /// State.
    pub state: DesktopState,
    /// The user holding it.
    pub assigned_user: Option<String>,
    /// Bumped by every change (optimistic concurrency).
    pub generation: i64,
    /// Last error.
    pub error: Option<String>,
    /// Failed attempts since the last success.
    pub attempts: i64,
    /// Last change (Unix ms).
    pub updated_at: i64,
}

const COLUMNS: &str =
    "id, pool_id, name, host_id, disk, state, assigned_user, generation, error, attempts, updated_at";

fn desktop(r: &AnyRow) -> Result<Desktop, StoreError> {
    Ok(Desktop {
        id: r.try_get(0)?,
        pool_id: r.try_get(1)?,
        name: r.try_get(2)?,
        host_id: r.try_get(3)?,
        disk: r.try_get(4)?,
        state: DesktopState::parse(&r.try_get::<String, _>(5)?)?,
        assigned_user: r.try_get(6)?,
        generation: r.try_get(7)?,
        error: r.try_get(8)?,
        attempts: r.try_get(9)?,
        updated_at: r.try_get(10)?,
    })
}

/// Why no desktop could be given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AssignOutcome {
    /// The user's desktop (their dedicated one, or the floating one they already hold).
    Existing(Desktop),
    /// A desktop newly assigned to the user.
    New(Desktop),
    /// Every desktop of the pool is taken or not ready.
    NoneFree,
}

impl Store {
    /// A desktop by ID.
    pub async fn desktop(&self, id: &str) -> Result<Desktop, StoreError> {
        let r = sqlx::query(&self.sql(&format!("SELECT {COLUMNS} FROM desktops WHERE id = $1")))
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("desktop {id}")))?;
        desktop(&r)
    }

    /// How many desktops each pool has in each state: (pool name, state, count).
    pub async fn desktop_counts(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT p.name, d.state, COUNT(*) FROM desktops d JOIN pools p ON p.id = d.pool_id \
             GROUP BY p.name, d.state ORDER BY p.name, d.state",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect()
    }

    /// The pool's desktops, by name.
    pub async fn desktops_of(&self, pool_id: &str) -> Result<Vec<Desktop>, StoreError> {
        sqlx::query(&self.sql(&format!(
            "SELECT {COLUMNS} FROM desktops WHERE pool_id = $1 ORDER BY name"
        )))
        .bind(pool_id)
        .fetch_all(self.pool())
        .await?
        .iter()
        .map(desktop)
        .collect()
    }

    /// Adds a desktop in `provisioning`, named from the pool's pattern with the pool's next
    /// index, taken by one atomic increment in the transaction that inserts the desktop: the
    /// pool's row stays locked until it commits (SQLite: the write lock; PostgreSQL: the row
    /// lock), so concurrent callers get distinct names in order and none gives up.
    pub async fn new_desktop(&self, pool: &Pool) -> Result<Desktop, StoreError> {
        let mut tx = self.pool().begin().await?;
        let idx: i64 = sqlx::query(&self.sql(
            "UPDATE pools SET next_index = next_index + 1 WHERE id = $1 RETURNING next_index - 1",
        ))
        .bind(&pool.id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("pool {}", pool.spec.name)))?
        .try_get(0)?;
        let d = Desktop {
            id: new_id(),
            pool_id: pool.id.clone(),
            name: desktop_name(&pool.spec.naming, idx)?,
            host_id: None,
            disk: None,
            state: DesktopState::Provisioning,
            assigned_user: None,
            generation: 0,
            error: None,
            attempts: 0,
            updated_at: now_ms(),
        };
        let now = d.updated_at;
        sqlx::query(&self.sql(
            "INSERT INTO desktops (id, pool_id, name, state, generation, attempts, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, 0, 0, $5, $6)",
        ))
        .bind(&d.id)
        .bind(&d.pool_id)
        .bind(&d.name)
        .bind(d.state.as_str())
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(d)
    }

    /// Moves `d` to `to` if nobody changed it since it was read; returns the new row.
    pub async fn transition(&self, d: &Desktop, to: DesktopState) -> Result<Desktop, StoreError> {
        self.update(d, to, d.assigned_user.as_deref(), None).await
    }

    /// Like [`Store::transition`], also recording an error and counting the attempt.
    pub async fn fail(&self, d: &Desktop, error: &str) -> Result<Desktop, StoreError> {
        self.update(
            d,
            DesktopState::Error,
            d.assigned_user.as_deref(),
            Some(error),
        )
        .await
    }

    /// Records where the desktop's disk lives (during provisioning).
    pub async fn set_placement(
        &self,
        d: &Desktop,
        host_id: &str,
        disk: &str,
    ) -> Result<Desktop, StoreError> {
        let n = sqlx::query(&self.sql(
            "UPDATE desktops SET host_id = $1, disk = $2, generation = generation + 1, updated_at = $3 \
             WHERE id = $4 AND generation = $5",
        ))
        .bind(host_id)
        .bind(disk)
        .bind(now_ms())
        .bind(&d.id)
        .bind(d.generation)
        .execute(self.pool())
        .await?
        .rows_affected();
        if n != 1 {
            return Err(StoreError::Conflict(format!("desktop {}", d.name)));
        }
        self.desktop(&d.id).await
    }

    async fn update(
        &self,
        d: &Desktop,
        to: DesktopState,
        user: Option<&str>,
        error: Option<&str>,
    ) -> Result<Desktop, StoreError> {
        if !d.state.can_become(to) {
            return Err(StoreError::Invalid(format!(
                "desktop {} cannot go from {} to {}",
                d.name,
                d.state.as_str(),
                to.as_str()
            )));
        }
        let attempts = if error.is_some() { d.attempts + 1 } else { 0 };
        let n = sqlx::query(&self.sql(
            "UPDATE desktops SET state = $1, assigned_user = $2, error = $3, attempts = $4, \
             generation = generation + 1, updated_at = $5 WHERE id = $6 AND generation = $7",
        ))
        .bind(to.as_str())
        .bind(user)
        .bind(error)
        .bind(attempts)
        .bind(now_ms())
        .bind(&d.id)
        .bind(d.generation)
        .execute(self.pool())
        .await?
        .rows_affected();
        if n != 1 {
            return Err(StoreError::Conflict(format!("desktop {}", d.name)));
        }
        self.desktop(&d.id).await
    }

    /// The desktops `user` holds, in every pool.
    pub async fn desktops_held_by(&self, user: &str) -> Result<Vec<Desktop>, StoreError> {
        let rows = sqlx::query(&self.sql(&format!(
            "SELECT {COLUMNS} FROM desktops WHERE assigned_user = $1 ORDER BY name"
        )))
        .bind(user)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(desktop).collect()
    }

    /// Gives `user` a desktop of `pool` in one transaction: the one they hold, or a free
    /// ready or running one (running first: it is up already).
    pub async fn assign(&self, pool: &Pool, user: &str) -> Result<AssignOutcome, StoreError> {
        for _ in 0..16 {
            let mut tx = self.pool().begin().await?;
            let mine = sqlx::query(&self.sql(&format!(
                "SELECT {COLUMNS} FROM desktops WHERE pool_id = $1 AND assigned_user = $2"
            )))
            .bind(&pool.id)
            .bind(user)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(r) = mine {
                tx.commit().await?;
                return Ok(AssignOutcome::Existing(desktop(&r)?));
            }
            let free = sqlx::query(&self.sql(&format!(
                "SELECT {COLUMNS} FROM desktops WHERE pool_id = $1 AND assigned_user IS NULL \
                 AND state IN ('running', 'ready') ORDER BY state DESC, name LIMIT 1"
            )))
            .bind(&pool.id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(r) = free else {
                tx.commit().await?;
                return Ok(AssignOutcome::NoneFree);
            };
            let d = desktop(&r)?;
            let n = sqlx::query(&self.sql(
                "UPDATE desktops SET state = $1, assigned_user = $2, generation = generation + 1, \
                 updated_at = $3 WHERE id = $4 AND generation = $5 AND assigned_user IS NULL",
            ))
            .bind(DesktopState::Assigned.as_str())
            .bind(user)
            .bind(now_ms())
            .bind(&d.id)
            .bind(d.generation)
            .execute(&mut *tx)
            .await;
            match n {
                Ok(r) if r.rows_affected() == 1 => {
                    tx.commit().await?;
                    return Ok(AssignOutcome::New(self.desktop(&d.id).await?));
                }
                // Lost the race for this desktop (or the user got one meanwhile): again.
                Ok(_) | Err(sqlx::Error::Database(_)) => {
                    tx.rollback().await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Conflict(format!(
            "assignment in pool {}",
            pool.spec.name
        )))
    }

    /// The user logged off: a floating desktop goes back to the pool (through a refresh if
    /// the pool asks for one); a dedicated one stays theirs.
    pub async fn release(&self, pool: &Pool, d: &Desktop) -> Result<Desktop, StoreError> {
        use super::pools::Assignment;
        match pool.spec.assignment {
            Assignment::Dedicated => {
                self.update(d, DesktopState::Running, d.assigned_user.as_deref(), None)
                    .await
            }
            Assignment::Floating => {
                let to = if pool.spec.refresh_on_logoff {
                    DesktopState::Refreshing
                } else {
                    DesktopState::Running
                };
                self.update(d, to, None, None).await
            }
        }
    }

    /// Removes a desktop that reached `deleting` (after its disk and VM are gone).
    pub async fn forget_desktop(&self, d: &Desktop) -> Result<(), StoreError> {
        if d.state != DesktopState::Deleting {
            return Err(StoreError::Invalid(format!(
                "desktop {} is not being deleted",
                d.name
            )));
        }
        let n = sqlx::query(&self.sql("DELETE FROM desktops WHERE id = $1 AND generation = $2"))
            .bind(&d.id)
            .bind(d.generation)
            .execute(self.pool())
            .await?
            .rows_affected();
        if n != 1 {
            return Err(StoreError::Conflict(format!("desktop {}", d.name)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_machine() {
        use DesktopState::*;
        assert!(Provisioning.can_become(Ready));
        assert!(!Provisioning.can_become(Connected));
        assert!(Ready.can_become(Assigned));
        assert!(!Deleting.can_become(Ready));
        assert!(Error.can_become(Provisioning));
        for s in [
            Provisioning,
            Ready,
            Running,
            Assigned,
            Connected,
            Disconnected,
            Refreshing,
            Error,
            Deleting,
        ] {
            assert_eq!(DesktopState::parse(s.as_str()).unwrap(), s);
        }
    }
}
