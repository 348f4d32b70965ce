//! The gateway's database: SQLite under the data directory, migrated on open.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::SqlitePool;

use crate::config::AuditSync;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

pub const DB_FILE: &str = "mcpgate.db";

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot open database {path}: {source}")]
    Open { path: String, source: sqlx::Error },
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Open (creating if needed) the database in `data_dir` and run migrations.
pub async fn open(data_dir: &Path) -> Result<SqlitePool, StorageError> {
    open_with(data_dir, AuditSync::Full).await
}

/// Open with an explicit durability level (see [`AuditSync`]).
pub async fn open_with(data_dir: &Path, sync: AuditSync) -> Result<SqlitePool, StorageError> {
    std::fs::create_dir_all(data_dir).map_err(|source| StorageError::DataDir {
        path: data_dir.display().to_string(),
        source,
    })?;
    let path = data_dir.join(DB_FILE);
    let shown = path.display().to_string();
    let options = SqliteConnectOptions::from_str("sqlite://")
        .map_err(|source| StorageError::Open {
            path: shown.clone(),
            source,
        })?
        .filename(&path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // FULL: a committed audit row survives power loss, not only a crash.
        .synchronous(match sync {
            AuditSync::Full => SqliteSynchronous::Full,
            AuditSync::Normal => SqliteSynchronous::Normal,
        })
        .busy_timeout(Duration::from_secs(5))
        .foreign_keys(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(8)
        .connect_with(options)
        .await
        .map_err(|source| StorageError::Open {
            path: shown,
            source,
        })?;
    sqlx::migrate!("./migrations").run(&pool).await?;
    Ok(pool)
}
