//! Sessions (a user on a desktop) and one-time display tickets.
//!
//! Tickets and session tokens are random 192-bit secrets handed to the client once; the store
//! keeps only their SHA-256 (they are not passwords: a fast hash of a high-entropy secret is
//! the right tool), so a copy of the database opens no desktop.

use sha2::{Digest, Sha256};
use sqlx::Row;

use super::{new_id, now_ms, Store, StoreError};

/// A session.
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
    /// Why it ended: logoff, admin, replaced.
    pub end_reason: Option<String>,
}

impl Session {
    /// Not ended.
    pub fn is_live(&self) -> bool {
        self.state != "ended"
    }
}

/// Why a session ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The user logged off.
    Logoff,
    /// An administrator forced the logoff.
    Admin,
    /// A new logon to the same desktop took over.
    Replaced,
}

impl EndReason {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Logoff => "logoff",
            Self::Admin => "admin",
            Self::Replaced => "replaced",
        }
    }
}

/// Ends the live sessions on a desktop: $1 the time, $2 the reason, $3 the desktop; their IDs.
const END_DESKTOP_SESSIONS: &str = "UPDATE sessions SET state = 'ended', ended_at = $1, \
     end_reason = $2 WHERE desktop_id = $3 AND ended_at IS NULL RETURNING id";

/// How long a session's bearer token works: it dies after `idle` without use and `absolute`
/// after the logon, whichever comes first (the user signs in again; the desktop stays theirs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenLifetime {
    /// Without any use of the token.
    pub idle: std::time::Duration,
    /// From the logon.
    pub absolute: std::time::Duration,
}

impl Default for TokenLifetime {
    /// An hour idle, ten hours in all (Horizon's default forced disconnect is 600 minutes).
    fn default() -> Self {
        Self {
            idle: std::time::Duration::from_secs(3600),
            absolute: std::time::Duration::from_secs(10 * 3600),
        }
    }
}

/// A new session: its bearer token (shown once), and the sessions it replaced on the desktop.
#[derive(Debug)]
pub struct Opened {
    /// The session.
    pub session: Session,
    /// Its bearer token.
    pub token: String,
    /// Live sessions of the same desktop that it ended (a reconnect): their connections go.
    pub replaced: Vec<String>,
}

const SESSION_COLUMNS: &str = "id, desktop_id, user_key, state, end_reason";

fn session_from(r: &sqlx::any::AnyRow) -> Result<Session, StoreError> {
    Ok(Session {
        id: r.try_get(0)?,
        desktop_id: r.try_get(1)?,
        user_key: r.try_get(2)?,
        state: r.try_get(3)?,
        end_reason: r.try_get(4)?,
    })
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
    pub async fn open_session(
        &self,
        desktop_id: &str,
        user_key: &str,
        client: &str,
    ) -> Result<Opened, StoreError> {
        let (token, token_hash) = new_secret()?;
        let mut tx = self.pool().begin().await?;
        let now = now_ms();
        let replaced = sqlx::query(&self.sql(END_DESKTOP_SESSIONS))
            .bind(now)
            .bind(EndReason::Replaced.as_str())
            .bind(desktop_id)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<Vec<String>, _>>()?;
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
        Ok(Opened {
            session: Session {
                id,
                desktop_id: desktop_id.to_string(),
                user_key: user_key.to_string(),
                state: "starting".into(),
                end_reason: None,
            },
            token,
            replaced,
        })
    }

    /// Session `id` (live or ended) if `token` is its bearer token: the client may read an
    /// ended session's reason and messages, and change only a live one.
    ///
    /// A token past its [`TokenLifetime`] opens nothing; a valid one counts as used now.
    pub async fn authorize_session(
        &self,
        id: &str,
        token: &str,
        lifetime: TokenLifetime,
    ) -> Result<Option<Session>, StoreError> {
        let now = now_ms();
        let ms = |d: std::time::Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        // Checked and touched in one statement: two requests cannot both see an idle token
        // alive and extend it.
        let r = sqlx::query(&self.sql(&format!(
            "UPDATE sessions SET last_seen_at = $3 WHERE id = $1 AND token_hash = $2 \
             AND started_at > $4 AND COALESCE(last_seen_at, started_at) > $5 \
             RETURNING {SESSION_COLUMNS}"
        )))
        .bind(id)
        .bind(hash_secret(token))
        .bind(now)
        .bind(now.saturating_sub(ms(lifetime.absolute)))
        .bind(now.saturating_sub(ms(lifetime.idle)))
        .fetch_optional(self.pool())
        .await?;
        r.as_ref().map(session_from).transpose()
    }

    /// A session by ID (live or ended).
    pub async fn session(&self, id: &str) -> Result<Session, StoreError> {
        let r = sqlx::query(&self.sql(&format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(self.pool())
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("session {id}")))?;
        session_from(&r)
    }

    /// Moves a live session to `state` (connected or disconnected).
    pub async fn set_session_state(&self, id: &str, state: &str) -> Result<(), StoreError> {
        if !["connected", "disconnected"].contains(&state) {
            return Err(StoreError::Invalid(format!("session state {state:?}")));
        }
        let n = sqlx::query(
            &self.sql("UPDATE sessions SET state = $1 WHERE id = $2 AND ended_at IS NULL"),
        )
        .bind(state)
        .bind(id)
        .execute(self.pool())
        .await?
        .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound(format!("live session {id}")));
        }
        Ok(())
    }

    /// Ends a live session for `reason`.
    pub async fn end_session(&self, id: &str, reason: EndReason) -> Result<(), StoreError> {
        let n = sqlx::query(&self.sql(
            "UPDATE sessions SET state = 'ended', ended_at = $1, end_reason = $2 \
             WHERE id = $3 AND ended_at IS NULL",
        ))
        .bind(now_ms())
        .bind(reason.as_str())
        .bind(id)
        .execute(self.pool())
        .await?
        .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound(format!("live session {id}")));
        }
        Ok(())
    }

    /// Ends every live session on `desktop_id` for `reason`; their IDs.
    pub async fn end_desktop_sessions(
        &self,
        desktop_id: &str,
        reason: EndReason,
    ) -> Result<Vec<String>, StoreError> {
        sqlx::query(&self.sql(END_DESKTOP_SESSIONS))
            .bind(now_ms())
            .bind(reason.as_str())
            .bind(desktop_id)
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(|r| Ok(r.try_get(0)?))
            .collect()
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
