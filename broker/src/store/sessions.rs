//! Sessions (a user on a desktop) and one-time display tickets.
//!
//! Tickets and session tokens are random 192-bit secrets handed to the client once; the store
//! keeps only their SHA-256 (they are not passwords: a fast hash of a high-entropy secret is
//! the right tool), so a copy of the database opens no desktop.

use sha2::{Digest, Sha256};
use sqlx::Row;

use super::{new_id, now_ms, Store, StoreError};

/// A live session.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Session {
    /// ID.
    pub id: String,
    /// Desktop ID.
    pub desktop_id: String,
    /// The user (directory DN or local name).
    pub user_key: String,
    /// starting, connected, disconnected, ended.
    pub state: String,
}

/// A fresh secret (URL-safe, 32 characters) and its stored hash.
pub fn new_secret() -> Result<(String, String), StoreError> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut raw = [0u8; 24];
    getrandom::fill(&mut raw).map_err(|e| StoreError::Invalid(format!("no random source: {e}")))?;
    // 24 bytes = 192 bits as 32 base64url characters.
    let mut s = String::with_capacity(32);
    for chunk in raw.chunks(3) {
        let n = u32::from(chunk[0]) << 16 | u32::from(chunk[1]) << 8 | u32::from(chunk[2]);
        for shift in [18, 12, 6, 0] {
            s.push(ALPHABET[((n >> shift) & 63) as usize] as char);
        }
    }
    let h = hash_secret(&s);
    Ok((s, h))
}

/// The stored form of a secret.
pub fn hash_secret(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Store {
    /// Opens a session on `desktop_id`, ending any live one there (a reconnect replaces it).
    /// Returns it with its bearer token (shown once).
    pub async fn open_session(
        &self,
        desktop_id: &str,
        user_key: &str,
        client: &str,
    ) -> Result<(Session, String), StoreError> {
        let (token, token_hash) = new_secret()?;
        let mut tx = self.pool().begin().await?;
        let now = now_ms();
        sqlx::query(&self.sql(
            "UPDATE sessions SET state = 'ended', ended_at = $1 WHERE desktop_id = $2 AND ended_at IS NULL",
        ))
        .bind(now)
        .bind(desktop_id)
        .execute(&mut *tx)
        .await?;
        let id = new_id();
        sqlx::query(&self.sql(
            "INSERT INTO sessions (id, desktop_id, user_key, state, client, started_at, token_hash) \
             VALUES ($1, $2, $3, 'starting', $4, $5, $6)",
        ))
        .bind(&id)
        .bind(desktop_id)
        .bind(user_key)
        .bind(client)
        .bind(now)
        .bind(token_hash)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok((
            Session {
                id,
                desktop_id: desktop_id.to_string(),
                user_key: user_key.to_string(),
                state: "starting".into(),
            },
            token,
        ))
    }

    /// The live session `id` if `token` is its bearer token.
    pub async fn authorize_session(
        &self,
        id: &str,
        token: &str,
    ) -> Result<Option<Session>, StoreError> {
        let r = sqlx::query(&self.sql(
            "SELECT id, desktop_id, user_key, state FROM sessions \
             WHERE id = $1 AND token_hash = $2 AND ended_at IS NULL",
        ))
        .bind(id)
        .bind(hash_secret(token))
        .fetch_optional(self.pool())
        .await?;
        r.map(|r| {
            Ok(Session {
                id: r.try_get(0)?,
                desktop_id: r.try_get(1)?,
                user_key: r.try_get(2)?,
                state: r.try_get(3)?,
            })
        })
        .transpose()
    }

    /// A session by ID (live or ended).
    pub async fn session(&self, id: &str) -> Result<Session, StoreError> {
        let r = sqlx::query(
            &self.sql("SELECT id, desktop_id, user_key, state FROM sessions WHERE id = $1"),
        )
        .bind(id)
        .fetch_optional(self.pool())
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("session {id}")))?;
        Ok(Session {
            id: r.try_get(0)?,
            desktop_id: r.try_get(1)?,
            user_key: r.try_get(2)?,
            state: r.try_get(3)?,
        })
    }

    /// Moves a live session to `state` (connected, disconnected) or ends it.
    pub async fn set_session_state(&self, id: &str, state: &str) -> Result<(), StoreError> {
        if !["connected", "disconnected", "ended"].contains(&state) {
            return Err(StoreError::Invalid(format!("session state {state:?}")));
        }
        let ended = (state == "ended").then(now_ms);
        let n = sqlx::query(&self.sql(
            "UPDATE sessions SET state = $1, ended_at = $2 WHERE id = $3 AND ended_at IS NULL",
        ))
        .bind(state)
        .bind(ended)
        .bind(id)
        .execute(self.pool())
        .await?
        .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound(format!("live session {id}")));
        }
        Ok(())
    }

    /// Issues a one-time ticket for `session_id`, valid `ttl_ms`; returns the secret (shown
    /// once) and its expiry.
    pub async fn issue_ticket(
        &self,
        session_id: &str,
        ttl_ms: i64,
    ) -> Result<(String, i64), StoreError> {
        let (secret, hash) = new_secret()?;
        let expires = now_ms() + ttl_ms;
        sqlx::query(&self.sql(
            "INSERT INTO tickets (id, session_id, secret_hash, expires_at) VALUES ($1, $2, $3, $4)",
        ))
        .bind(new_id())
        .bind(session_id)
        .bind(hash)
        .bind(expires)
        .execute(self.pool())
        .await?;
        Ok((secret, expires))
    }

    /// Redeems a ticket: the session it opens, if the ticket exists, has not expired and was
    /// never used; it cannot be used again.
    pub async fn redeem_ticket(&self, secret: &str) -> Result<Option<String>, StoreError> {
        let now = now_ms();
        let hash = hash_secret(secret);
        let n = sqlx::query(&self.sql(
            "UPDATE tickets SET used_at = $1 WHERE secret_hash = $2 AND used_at IS NULL AND expires_at > $3",
        ))
        .bind(now)
        .bind(&hash)
        .bind(now)
        .execute(self.pool())
        .await?
        .rows_affected();
        if n != 1 {
            return Ok(None);
        }
        let r = sqlx::query(&self.sql("SELECT session_id FROM tickets WHERE secret_hash = $1"))
            .bind(&hash)
            .fetch_one(self.pool())
            .await?;
        Ok(Some(r.try_get(0)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_random_and_hashed() {
        let (a, ha) = new_secret().unwrap();
        let (b, _) = new_secret().unwrap();
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert_eq!(ha, hash_secret(&a));
        assert_eq!(ha.len(), 64);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    }
}
