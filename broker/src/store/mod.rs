//! The broker's store: sqlx over SQLite (the embedded default) or PostgreSQL (several brokers
//! sharing one database), through sqlx's Any driver, with one set of migrations written in the
//! SQL both engines share.
//!
//! Queries are written with PostgreSQL's `$1` placeholders; for SQLite they become `?1`, which
//! SQLite binds by the same positions.

/// `as_str` and `parse` for an enum stored as text.
macro_rules! text_enum {
    ($t:ty { $($v:ident => $s:literal),+ }) => {
        impl $t {
            /// The value stored in the database.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$v => $s),+ }
            }
            /// Parses a stored value.
            pub fn parse(s: &str) -> Result<Self, StoreError> {
                match s {
                    $($s => Ok(Self::$v),)+
                    _ => Err(StoreError::Invalid(format!("unknown {} {s:?}", stringify!($t)))),
                }
            }
        }
    };
}

pub mod accounts;
pub mod admin;
pub mod desktops;
pub mod events;
pub mod hosts;
pub mod pools;
pub mod sessions;

use std::borrow::Cow;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::AnyPool;

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database URL is not one we support.
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://...")]
    Url(String),
    /// The database refused or failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// Migrations failed.
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Not found.
    #[error("{0} not found")]
    NotFound(String),
    /// A value breaks a rule of the model.
    #[error("{0}")]
    Invalid(String),
    /// Someone else changed the row first (optimistic concurrency); retry.
    #[error("{0} changed concurrently; retry")]
    Conflict(String),
}

/// Which engine is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite file.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

/// The store.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// Local password hashes verified (not the decoy's): /metrics, and how tests prove a
    /// storm of guesses reached argon2 at most the lockout's worth of times.
    password_checks: Arc<AtomicU64>,
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A random identifier: 128 bits from the OS, as 32 hex digits.
pub fn new_id() -> String {
    let mut b = [0u8; 16];
    // getrandom fails only without any OS random source, where nothing else works either.
    if getrandom::fill(&mut b).is_err() {
        let t = now_ms().to_le_bytes();
        b[..8].copy_from_slice(&t);
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

impl Store {
    /// Connects (creating a SQLite file if needed) and brings the schema up to date.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(StoreError::Url(url.to_string()));
        };
        let url = match backend {
            Backend::Sqlite if !url.contains("mode=") => {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}mode=rwc")
            }
            _ => url.to_string(),
        };
        let opts = AnyConnectOptions::from_str(&url)?;
        let max = match backend {
            // One writer at a time is all SQLite allows; more connections only wait on locks.
            Backend::Sqlite => 1,
            Backend::Postgres => 16,
        };
        let mut options = AnyPoolOptions::new().max_connections(max);
        if backend == Backend::Sqlite {
            // Per connection, not once: the pool replaces idle connections, and a fresh one
            // without foreign_keys would silently stop enforcing the schema's references.
            options = options.after_connect(|conn, _| {
                Box::pin(async move {
                    for pragma in [
                        "PRAGMA foreign_keys = ON",
                        "PRAGMA journal_mode = WAL",
                        "PRAGMA synchronous = NORMAL",
                    ] {
                        sqlx::query(pragma).execute(&mut *conn).await?;
                    }
                    Ok(())
                })
            });
        }
        let pool = options.connect_with(opts).await?;
        MIGRATOR.run(&pool).await?;
        Ok(Self {
            pool,
            backend,
            password_checks: Arc::default(),
        })
    }

    /// Local account passwords verified since start.
    pub fn password_checks(&self) -> u64 {
        self.password_checks.load(Ordering::Relaxed)
    }

    pub(crate) fn count_password_check(&self) {
        self.password_checks.fetch_add(1, Ordering::Relaxed);
    }

    /// The engine.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The connection pool.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// `sql` with placeholders for this engine.
    pub fn sql<'a>(&self, sql: &'a str) -> Cow<'a, str> {
        match self.backend {
            Backend::Postgres => Cow::Borrowed(sql),
            Backend::Sqlite => Cow::Owned(sql.replace('$', "?")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn opens_and_migrates_sqlite_twice() {
        let path = std::env::temp_dir().join(format!("tessera-store-{}.db", new_id()));
        let url = format!("sqlite://{}", path.display());
        let s = Store::open(&url).await.unwrap();
        assert_eq!(s.backend(), Backend::Sqlite);
        let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
            .fetch_one(s.pool())
            .await
            .unwrap();
        assert_eq!(fk, 1);
        drop(s);
        // Reopening finds the schema current.
        Store::open(&url).await.unwrap();
        let _ = std::fs::remove_file(&path);
        assert!(matches!(
            Store::open("mysql://x").await,
            Err(StoreError::Url(_))
        ));
    }

    #[test]
    fn ids_and_placeholders() {
        let a = new_id();
        assert_eq!(a.len(), 32);
        assert_ne!(a, new_id());
    }
}
