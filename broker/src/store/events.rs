//! The event log: who did what, when, with the outcome and how long it took (the admin
//! console's audit trail and the logon phases, like Citrix Director's).

use serde::Serialize;
use sqlx::Row;

use super::{new_id, now_ms, Store, StoreError};

/// One event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// When (Unix ms).
    pub at: i64,
    /// Who: a user, an admin, "reconciler", a host.
    pub actor: String,
    /// What: "logon", "provision", "power-on", ...
    pub action: String,
    /// On what (a desktop, a pool).
    pub target: String,
    /// "ok" or the error.
    pub outcome: String,
    /// Duration, when the action took time.
    pub duration_ms: Option<i64>,
    /// Details (never secrets).
    pub detail: String,
}

impl Event {
    /// An event happening now, without duration or detail; the actor is cut to 256 characters
    /// (it may come from a client).
    pub fn new(actor: &str, action: &str, target: &str, outcome: &str) -> Self {
        Self {
            at: 0,
            actor: actor.chars().take(256).collect(),
            action: action.into(),
            target: target.into(),
            outcome: outcome.into(),
            duration_ms: None,
            detail: String::new(),
        }
    }
}

impl Store {
    /// Appends an event.
    pub async fn record(&self, e: &Event) -> Result<(), StoreError> {
        sqlx::query(&self.sql(
            "INSERT INTO events (id, at, actor, action, target, outcome, duration_ms, detail) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        ))
        .bind(new_id())
        .bind(if e.at == 0 { now_ms() } else { e.at })
        .bind(&e.actor)
        .bind(&e.action)
        .bind(&e.target)
        .bind(&e.outcome)
        .bind(e.duration_ms)
        .bind(&e.detail)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The newest `limit` events, newest first, optionally of one action.
    pub async fn events(&self, action: Option<&str>, limit: i64) -> Result<Vec<Event>, StoreError> {
        let rows = sqlx::query(&self.sql(
            "SELECT at, actor, action, target, outcome, duration_ms, detail FROM events \
             WHERE ($1 = '' OR action = $2) ORDER BY at DESC, id DESC LIMIT $3",
        ))
        .bind(action.unwrap_or(""))
        .bind(action.unwrap_or(""))
        .bind(limit)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Event {
                    at: r.try_get(0)?,
                    actor: r.try_get(1)?,
                    action: r.try_get(2)?,
                    target: r.try_get(3)?,
                    outcome: r.try_get(4)?,
                    duration_ms: r.try_get(5)?,
                    detail: r.try_get(6)?,
                })
            })
            .collect()
    }
}
