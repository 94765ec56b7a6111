//! Built-in accounts: the all-in-one's users and the break-glass administrator, with argon2id
//! password hashes (the RustCrypto crate, PHC strings, OWASP's minimum parameters) and a
//! lockout after repeated failures.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use serde::Serialize;
use sqlx::Row;

use super::{now_ms, Store, StoreError};

/// Failed sign-ins that lock an account.
pub const LOCKOUT_THRESHOLD: i64 = 5;
/// How long a lockout lasts.
pub const LOCKOUT_MS: i64 = 15 * 60 * 1000;
/// Shortest password accepted for a local account.
pub const MIN_PASSWORD: usize = 8;

/// A local account as sign-in returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LocalAccount {
    /// Login name.
    pub name: String,
    /// Display name.
    pub display_name: String,
    /// May use the admin console and API.
    pub is_admin: bool,
}

/// Why a local sign-in failed.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    /// Wrong name or password (not told apart).
    #[error("wrong user name or password")]
    InvalidCredentials,
    /// Too many failures; try again after the lockout.
    #[error(
        "the account is locked out after too many failed sign-ins; try again in {minutes} minutes"
    )]
    Locked {
        /// Minutes left, rounded up.
        minutes: i64,
    },
    /// Disabled by an administrator.
    #[error("the account is disabled")]
    Disabled,
    /// The password is right but temporary: change it first.
    #[error("the password must be changed before the first sign-in")]
    MustChangePassword,
    /// A new password that breaks the rules.
    #[error("the new password is refused: {0}")]
    PasswordRejected(String),
    /// Store failure.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Hashes `password` with argon2id and a random salt (a PHC string).
pub fn hash_password(password: &str) -> Result<String, StoreError> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt)
        .map_err(|e| StoreError::Invalid(format!("no random source: {e}")))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| StoreError::Invalid(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| StoreError::Invalid(format!("cannot hash the password: {e}")))
}

/// Checks `password` against a PHC string; a malformed hash never matches.
pub fn check_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A hash nobody's password matches, verified for unknown names so that a wrong name and a
/// wrong password take the same time.
fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password("tessera-decoy-password").unwrap_or_default())
}

/// At most one argon2 check per CPU at a time: a logon storm then queues instead of running
/// dozens of 19 MiB hashes that thrash the same cores.
fn hash_slots() -> &'static tokio::sync::Semaphore {
    static SLOTS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    SLOTS.get_or_init(|| {
        tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get()))
    })
}

async fn check_off_thread(hash: String, password: &str) -> bool {
    let password = password.to_string();
    let Ok(_slot) = hash_slots().acquire().await else {
        return false;
    };
    // argon2 takes tens of milliseconds of CPU: keep it off the async workers.
    tokio::task::spawn_blocking(move || check_password(&hash, &password))
        .await
        .unwrap_or(false)
}

impl Store {
    /// Creates a local account.
    pub async fn create_local_account(
        &self,
        name: &str,
        display_name: &str,
        password: &str,
        is_admin: bool,
    ) -> Result<(), StoreError> {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if !valid {
            return Err(StoreError::Invalid(format!(
                "account name {name:?}: 1-64 letters, digits, '.', '_' or '-'"
            )));
        }
        if password.chars().count() < MIN_PASSWORD {
            return Err(StoreError::Invalid(format!(
                "the password must have at least {MIN_PASSWORD} characters"
            )));
        }
        if let Some(existing) = self.local_account_name(name).await? {
            return Err(StoreError::Conflict(format!(
                "account {existing} exists (names are compared without regard to case)"
            )));
        }
        let pw = password.to_string();
        let hash = tokio::task::spawn_blocking(move || hash_password(&pw))
            .await
            .map_err(|e| StoreError::Invalid(e.to_string()))??;
        sqlx::query(&self.sql(
            "INSERT INTO local_accounts (name, display_name, password_hash, is_admin, disabled, \
             failed_attempts, created_at) VALUES ($1, $2, $3, $4, $5, 0, $6)",
        ))
        .bind(name)
        .bind(display_name)
        .bind(hash)
        .bind(i64::from(is_admin))
        .bind(0i64)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The stored name of the local account `login` names, if any. Names match without
    /// regard to case, as Windows account names do (`Admin` and `admin` are one account);
    /// the exact spelling wins should an old database hold both.
    pub async fn local_account_name(&self, login: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query(&self.sql(
            "SELECT name FROM local_accounts WHERE lower(name) = lower($1) \
             ORDER BY CASE WHEN name = $1 THEN 0 ELSE 1 END, name LIMIT 1",
        ))
        .bind(login)
        .fetch_optional(self.pool())
        .await?;
        Ok(match row {
            Some(r) => Some(r.try_get(0)?),
            None => None,
        })
    }

    /// Whether local account `name` (exactly) may administer now: it exists, has the
    /// administrator flag and is not disabled. None: no such local account.
    pub async fn local_admin_now(&self, name: &str) -> Result<Option<bool>, StoreError> {
        let row =
            sqlx::query(&self.sql("SELECT is_admin, disabled FROM local_accounts WHERE name = $1"))
                .bind(name)
                .fetch_optional(self.pool())
                .await?;
        Ok(match row {
            Some(r) => Some(r.try_get::<i64, _>(0)? != 0 && r.try_get::<i64, _>(1)? == 0),
            None => None,
        })
    }

    /// Signs a local account in, counting failures toward a lockout.
    pub async fn sign_in_local(
        &self,
        name: &str,
        password: &str,
    ) -> Result<LocalAccount, SignInError> {
        let (account, must_change) = self.verify_local(name, password).await?;
        if must_change {
            return Err(SignInError::MustChangePassword);
        }
        Ok(account)
    }

    /// Changes a local account's password, proving the old one (which counts toward the
    /// lockout like a sign-in); a temporary password is then temporary no more.
    pub async fn change_local_password(
        &self,
        name: &str,
        old: &str,
        new: &str,
    ) -> Result<(), SignInError> {
        self.verify_local(name, old).await?;
        if new.chars().count() < MIN_PASSWORD {
            return Err(SignInError::PasswordRejected(format!(
                "it must have at least {MIN_PASSWORD} characters"
            )));
        }
        if new == old {
            return Err(SignInError::PasswordRejected(
                "it must differ from the old one".into(),
            ));
        }
        let pw = new.to_string();
        let hash = tokio::task::spawn_blocking(move || hash_password(&pw))
            .await
            .map_err(|e| StoreError::Invalid(e.to_string()))??;
        sqlx::query(&self.sql(
            "UPDATE local_accounts SET password_hash = $1, must_change_password = 0 WHERE name = $2",
        ))
        .bind(hash)
        .bind(name)
        .execute(self.pool())
        .await
        .map_err(StoreError::from)?;
        Ok(())
    }

    /// Makes the account's password temporary (admin action: a new account or a reset).
    pub async fn set_local_must_change(&self, name: &str, must: bool) -> Result<(), StoreError> {
        self.set_account_flag("must_change_password", name, must)
            .await
    }

    /// Checks a local account's password, counting it toward a lockout *before* checking it:
    /// the account, and whether its password must change.
    ///
    /// One conditional UPDATE reserves the attempt: it counts the attempt, and the
    /// threshold-th attempt in a row locks the account at once, so that concurrent guesses
    /// beyond the threshold find it locked and never reach argon2 (checking first and
    /// counting after gave each of N parallel requests its own check). Only a proved password
    /// resets the count and lifts that lock.
    async fn verify_local(
        &self,
        name: &str,
        password: &str,
    ) -> Result<(LocalAccount, bool), SignInError> {
        if password.is_empty() {
            return Err(SignInError::InvalidCredentials);
        }
        let now = now_ms();
        // Both CASEs read the row as it was: an expired lock starts a new run of failures.
        let row = sqlx::query(&self.sql(
            "UPDATE local_accounts SET \
               failed_attempts = CASE WHEN locked_until IS NULL THEN failed_attempts + 1 ELSE 1 END, \
               locked_until = CASE WHEN \
                 (CASE WHEN locked_until IS NULL THEN failed_attempts + 1 ELSE 1 END) >= $2 \
                 THEN $3 ELSE NULL END \
             WHERE name = $1 AND (locked_until IS NULL OR locked_until <= $4) \
             RETURNING password_hash, display_name, is_admin, disabled, must_change_password",
        ))
        .bind(name)
        .bind(LOCKOUT_THRESHOLD)
        .bind(now + LOCKOUT_MS)
        .bind(now)
        .fetch_optional(self.pool())
        .await
        .map_err(StoreError::from)?;
        let Some(row) = row else {
            return Err(self.refusal(name, password, now).await);
        };
        let hash: String = row.try_get(0).map_err(StoreError::from)?;
        let display_name: String = row.try_get(1).map_err(StoreError::from)?;
        let is_admin = row.try_get::<i64, _>(2).map_err(StoreError::from)? != 0;
        let disabled = row.try_get::<i64, _>(3).map_err(StoreError::from)? != 0;
        let must_change = row.try_get::<i64, _>(4).map_err(StoreError::from)? != 0;
        self.count_password_check();
        if !check_off_thread(hash, password).await {
            // Already counted.
            return Err(SignInError::InvalidCredentials);
        }
        // The password is proved: the run of failures ends (for a disabled account too, so
        // that enabling it again does not find it locked by its own right passwords).
        sqlx::query(&self.sql(
            "UPDATE local_accounts SET failed_attempts = 0, locked_until = NULL WHERE name = $1",
        ))
        .bind(name)
        .execute(self.pool())
        .await
        .map_err(StoreError::from)?;
        if disabled {
            return Err(SignInError::Disabled);
        }
        let account = LocalAccount {
            name: name.to_string(),
            display_name,
            is_admin,
        };
        Ok((account, must_change))
    }

    /// Why no attempt could be reserved: the account is locked (no password check: a locked
    /// account is no oracle), or there is no such account (the decoy check, so that a wrong
    /// name takes as long as a wrong password).
    async fn refusal(&self, name: &str, password: &str, now: i64) -> SignInError {
        let locked =
            sqlx::query(&self.sql("SELECT locked_until FROM local_accounts WHERE name = $1"))
                .bind(name)
                .fetch_optional(self.pool())
                .await;
        match locked {
            Ok(Some(row)) => {
                let until: Option<i64> = row.try_get(0).unwrap_or(None);
                SignInError::Locked {
                    minutes: (until.unwrap_or(now) - now + 59_999).max(60_000) / 60_000,
                }
            }
            Ok(None) => {
                check_off_thread(decoy_hash().to_string(), password).await;
                SignInError::InvalidCredentials
            }
            Err(e) => SignInError::Store(e.into()),
        }
    }

    /// Lifts a lockout (admin action).
    pub async fn unlock_local(&self, name: &str) -> Result<(), StoreError> {
        let n = sqlx::query(&self.sql(
            "UPDATE local_accounts SET failed_attempts = 0, locked_until = NULL WHERE name = $1",
        ))
        .bind(name)
        .execute(self.pool())
        .await?
        .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound(format!("account {name}")));
        }
        Ok(())
    }

    /// Enables or disables an account (admin action).
    pub async fn set_local_disabled(&self, name: &str, disabled: bool) -> Result<(), StoreError> {
        self.set_account_flag("disabled", name, disabled).await
    }

    /// Sets one of an account's 0/1 columns (`column` is one of ours, never input).
    async fn set_account_flag(
        &self,
        column: &'static str,
        name: &str,
        on: bool,
    ) -> Result<(), StoreError> {
        let sql = format!("UPDATE local_accounts SET {column} = $1 WHERE name = $2");
        let n = sqlx::query(&self.sql(&sql))
            .bind(i64::from(on))
            .bind(name)
            .execute(self.pool())
            .await?
            .rows_affected();
        if n == 0 {
            return Err(StoreError::NotFound(format!("account {name}")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_salted_and_checked() {
        let a = hash_password("correct horse").unwrap();
        let b = hash_password("correct horse").unwrap();
        assert!(a.starts_with("$argon2id$"), "{a}");
        assert_ne!(a, b, "salted");
        assert!(check_password(&a, "correct horse"));
        assert!(!check_password(&a, "correct horsE"));
        assert!(!check_password("not a hash", "x"));
        assert!(!check_password("", ""));
    }
}
