//! The gateway's database: the embedded SQLite file under the data directory,
//! or a PostgreSQL server that several gateways share. Both go through sqlx's
//! `Any` driver, so each query is written once (`$N` placeholders, SQL both
//! understand); each backend has its own migrations, run on open.

use std::path::Path;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};

use crate::config::{AuditSync, Config};

pub const DB_FILE: &str = "mcpgate.db";

/// A pool on whichever backend the config names.
pub type Db = sqlx::AnyPool;

/// Every write takes its turn: `writer(pool)` for statements,
/// `begin_write(pool)` for a transaction (see [`actors::write_turn`]: on
/// SQLite, writers queue in-process instead of sleeping in the busy handler).
pub use actors::write_turn::{WriteTx, Writer, begin as begin_write, writer};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("cannot create data directory {path}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot open database {path}")]
    Open { path: String, source: sqlx::Error },
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

pub use crate::config::is_postgres_url;

/// On PostgreSQL, LISTEN on `channel` and run `on_event` once after every
/// (re)connect — whatever changed while nobody listened — and once per
/// notification. Reconnects on its own; ends when `on_event` answers
/// `Ok(false)` (its owner is gone).
pub fn spawn_notification_listener<F, Fut>(pool: &Db, channel: &'static str, mut on_event: F)
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<bool, sqlx::Error>> + Send,
{
    let url = pool.connect_options().database_url.to_string();
    tokio::spawn(async move {
        loop {
            let session = async {
                let mut listener = sqlx::postgres::PgListener::connect(&url).await?;
                listener.listen(channel).await?;
                if !on_event().await? {
                    return Ok::<(), sqlx::Error>(());
                }
                loop {
                    listener.recv().await?;
                    if !on_event().await? {
                        return Ok(());
                    }
                }
            };
            match session.await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, channel, "store notifications: reconnecting");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        }
    });
}

/// Which backend a pool is on (a few statements differ).
pub fn backend(pool: &Db) -> Backend {
    match pool.connect_options().database_url.scheme() {
        "sqlite" => Backend::Sqlite,
        _ => Backend::Postgres,
    }
}

/// `count` parameters for an `IN (…)` list, bound in order: `$1, $2, …` on
/// PostgreSQL; `?, ?, …` on SQLite, where sqlx binds numbered parameters by
/// looking each name up in a list SQLite scans (O(n²) for a long list).
pub fn parameter_list(pool: &Db, count: usize) -> String {
    match backend(pool) {
        Backend::Sqlite => vec!["?"; count].join(", "),
        Backend::Postgres => (1..=count)
            .map(|n| format!("${n}"))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// The database file of a SQLite store (`None` on PostgreSQL).
pub fn sqlite_file(pool: &Db) -> Option<std::path::PathBuf> {
    if backend(pool) != Backend::Sqlite {
        return None;
    }
    let url = pool.connect_options().database_url.to_string();
    let options: SqliteConnectOptions = url.parse().ok()?;
    Some(options.get_filename().to_owned())
}

/// Open the database the config names: `database` (PostgreSQL) when set,
/// else the SQLite file in `data_dir`.
pub async fn connect(config: &Config) -> Result<Db, StorageError> {
    match &config.database {
        Some(url) => open_postgres(url).await,
        None => open_with(&config.data_dir, config.limits.audit_sync).await,
    }
}

/// Open (creating if needed) the SQLite database in `data_dir`.
pub async fn open(data_dir: &Path) -> Result<Db, StorageError> {
    open_with(data_dir, AuditSync::Full).await
}

/// SQLite with an explicit durability level (see [`AuditSync`]).
pub async fn open_with(data_dir: &Path, sync: AuditSync) -> Result<Db, StorageError> {
    sqlx::any::install_default_drivers();
    std::fs::create_dir_all(data_dir).map_err(|source| StorageError::DataDir {
        path: data_dir.display().to_string(),
        source,
    })?;
    let path = data_dir.join(DB_FILE);
    let shown = path.display().to_string();
    let url = SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true)
        .to_url_lossy();
    let options = AnyConnectOptions::from_url(&url).map_err(|source| StorageError::Open {
        path: shown.clone(),
        source,
    })?;
    // FULL: a committed audit row survives power loss, not only a crash.
    let synchronous = match sync {
        AuditSync::Full => "PRAGMA synchronous = FULL",
        AuditSync::Normal => "PRAGMA synchronous = NORMAL",
    };
    let pool = AnyPoolOptions::new()
        .max_connections(8)
        // A connection to a local file cannot hang up; the test sqlx runs
        // before handing one out is a round trip to its worker thread on
        // every query (it still checks each one as it comes back).
        .test_before_acquire(false)
        .after_connect(move |conn, _| {
            Box::pin(async move {
                for pragma in [
                    "PRAGMA journal_mode = WAL",
                    synchronous,
                    "PRAGMA busy_timeout = 5000",
                    "PRAGMA foreign_keys = ON",
                ] {
                    sqlx::raw_sql(pragma).execute(&mut *conn).await?;
                }
                Ok(())
            })
        })
        .connect_with(options)
        .await
        .map_err(|source| StorageError::Open {
            path: shown,
            source,
        })?;
    sqlx::migrate!("./migrations/sqlite").run(&pool).await?;
    Ok(pool)
}

/// PostgreSQL at `url`, migrated. Migrations take an advisory lock, so
/// replicas starting together do not race.
pub async fn open_postgres(url: &str) -> Result<Db, StorageError> {
    sqlx::any::install_default_drivers();
    let shown = redacted(url);
    let open_error = |source| StorageError::Open {
        path: shown.clone(),
        source,
    };
    let options: AnyConnectOptions = url.parse().map_err(open_error)?;
    // One direct connection first: its error names the cause (refused,
    // authentication, no such database), where the pool's only says it timed out.
    sqlx::AnyConnection::connect_with(&options)
        .await
        .map_err(open_error)?
        .close()
        .await
        .map_err(open_error)?;
    let pool = AnyPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await
        .map_err(open_error)?;
    sqlx::migrate!("./migrations/postgres").run(&pool).await?;
    Ok(pool)
}

/// A database URL as it may be shown: the password replaced.
pub fn redacted(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            parsed.to_string()
        }
        Err(_) => "<unparseable database URL>".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_url_is_shown_without_its_password() {
        assert_eq!(
            redacted("postgres://gw:s3cret@db.internal:5432/mcpgate"),
            "postgres://gw:***@db.internal:5432/mcpgate"
        );
        assert_eq!(
            redacted("postgres://db.internal/mcpgate"),
            "postgres://db.internal/mcpgate"
        );
        assert!(!redacted("postgres://gw:s3cret@[oops/x").contains("s3cret"));
        assert!(is_postgres_url("postgresql://h/d") && !is_postgres_url("sqlite://x.db"));
    }
}
