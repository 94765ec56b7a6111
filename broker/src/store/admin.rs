//! What the admin API reads and writes: administrators' bearer tokens, the live-session
//! overview, and messages to a session's user.

use serde::Serialize;
use sqlx::Row;

use super::sessions::{hash_secret, new_secret};
use super::{new_id, now_ms, Store, StoreError};

/// Longest message an administrator may send.
pub const MAX_MESSAGE: usize = 2000;

/// A session as the console lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionSummary {
    /// Session ID.
    pub id: String,
    /// The user (directory DN or local name).
    pub user: String,
    /// Desktop name.
    pub desktop: String,
    /// Pool name.
    pub pool: String,
    /// starting, connected, disconnected.
    pub state: String,
    /// The client's address.
    pub client: String,
    /// When it started (Unix ms).
    pub started_at: i64,
}

/// A message to a session's user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    /// ID.
    pub id: String,
    /// When it was sent (Unix ms).
    pub at: i64,
    /// The administrator who sent it.
    pub sender: String,
    /// info, warning or critical.
    pub severity: String,
    /// The text.
    pub body: String,
}

/// A message's ID: its millisecond, then a per-process sequence, then randomness. Messages are
/// delivered `ORDER BY at, id`, and two posted in the same millisecond (an administrator's
/// script) must keep their order, which random IDs alone did not.
fn message_id(at: i64) -> String {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{at:012x}{seq:012x}{}", &new_id()[..8])
}

impl Store {
    /// A bearer token for administrator `admin`, valid `ttl_ms` (shown once; stored hashed).
    pub async fn open_admin_token(
        &self,
        admin: &str,
        ttl_ms: i64,
    ) -> Result<(String, i64), StoreError> {
        let (token, hash) = new_secret()?;
        let now = now_ms();
        // Expired tokens go when new ones come, so the table stays small without a sweeper.
        sqlx::query(&self.sql("DELETE FROM admin_tokens WHERE expires_at <= $1"))
            .bind(now)
            .execute(self.pool())
            .await?;
        sqlx::query(&self.sql(
            "INSERT INTO admin_tokens (token_hash, admin, created_at, expires_at) \
             VALUES ($1, $2, $3, $4)",
        ))
        .bind(hash)
        .bind(admin)
        .bind(now)
        .bind(now + ttl_ms)
        .execute(self.pool())
        .await?;
        Ok((token, now + ttl_ms))
    }

    /// The administrator a live token belongs to.
    pub async fn authorize_admin(&self, token: &str) -> Result<Option<String>, StoreError> {
        let r = sqlx::query(
            &self.sql("SELECT admin FROM admin_tokens WHERE token_hash = $1 AND expires_at > $2"),
        )
        .bind(hash_secret(token))
        .bind(now_ms())
        .fetch_optional(self.pool())
        .await?;
        Ok(r.map(|r| r.try_get(0)).transpose()?)
    }

    /// Revokes a token (sign-out).
    pub async fn revoke_admin_token(&self, token: &str) -> Result<(), StoreError> {
        sqlx::query(&self.sql("DELETE FROM admin_tokens WHERE token_hash = $1"))
            .bind(hash_secret(token))
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Every live session, newest first.
    pub async fn live_sessions(&self) -> Result<Vec<SessionSummary>, StoreError> {
        let rows = sqlx::query(
            "SELECT s.id, s.user_key, d.name, p.name, s.state, s.client, s.started_at \
             FROM sessions s JOIN desktops d ON d.id = s.desktop_id \
             JOIN pools p ON p.id = d.pool_id \
             WHERE s.ended_at IS NULL ORDER BY s.started_at DESC, s.id",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(SessionSummary {
                    id: r.try_get(0)?,
                    user: r.try_get(1)?,
                    desktop: r.try_get(2)?,
                    pool: r.try_get(3)?,
                    state: r.try_get(4)?,
                    client: r.try_get(5)?,
                    started_at: r.try_get(6)?,
                })
            })
            .collect()
    }

    /// Queues a message for the user of live session `session_id`.
    pub async fn post_message(
        &self,
        session_id: &str,
        sender: &str,
        severity: &str,
        body: &str,
    ) -> Result<Message, StoreError> {
        if !["info", "warning", "critical"].contains(&severity) {
            return Err(StoreError::Invalid(format!(
                "severity {severity:?}: info, warning or critical"
            )));
        }
        if body.trim().is_empty() || body.chars().count() > MAX_MESSAGE {
            return Err(StoreError::Invalid(format!(
                "a message has 1 to {MAX_MESSAGE} characters"
            )));
        }
        let live =
            sqlx::query(&self.sql("SELECT 1 FROM sessions WHERE id = $1 AND ended_at IS NULL"))
                .bind(session_id)
                .fetch_optional(self.pool())
                .await?;
        if live.is_none() {
            return Err(StoreError::NotFound(format!("live session {session_id}")));
        }
        let at = now_ms();
        let m = Message {
            id: message_id(at),
            at,
            sender: sender.to_string(),
            severity: severity.to_string(),
            body: body.to_string(),
        };
        sqlx::query(&self.sql(
            "INSERT INTO session_messages (id, session_id, at, sender, severity, body) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        ))
        .bind(&m.id)
        .bind(session_id)
        .bind(m.at)
        .bind(&m.sender)
        .bind(&m.severity)
        .bind(&m.body)
        .execute(self.pool())
        .await?;
        Ok(m)
    }

    /// The messages of `session_id` not yet delivered, oldest first; they count as delivered.
    pub async fn take_messages(&self, session_id: &str) -> Result<Vec<Message>, StoreError> {
        let mut tx = self.pool().begin().await?;
        let rows = sqlx::query(&self.sql(
            "SELECT id, at, sender, severity, body FROM session_messages \
             WHERE session_id = $1 AND delivered_at IS NULL ORDER BY at, id",
        ))
        .bind(session_id)
        .fetch_all(&mut *tx)
        .await?;
        let messages = rows
            .iter()
            .map(|r| {
                Ok(Message {
                    id: r.try_get(0)?,
                    at: r.try_get(1)?,
                    sender: r.try_get(2)?,
                    severity: r.try_get(3)?,
                    body: r.try_get(4)?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        // By ID: a message that arrives meanwhile stays pending for the next fetch.
        let now = now_ms();
        for m in &messages {
            sqlx::query(&self.sql("UPDATE session_messages SET delivered_at = $1 WHERE id = $2"))
                .bind(now)
                .bind(&m.id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(messages)
    }
}
