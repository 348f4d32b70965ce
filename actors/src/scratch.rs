//! Test databases: a fresh SQLite file under the system's temp directory
//! (no tempfile dependency for a few unit tests).

use sqlx::AnyPool;

/// A pool on a new SQLite file named after `test` and `name`.
pub(crate) async fn sqlite(test: &str, name: &str) -> AnyPool {
    sqlx::any::install_default_drivers();
    let path = std::env::temp_dir().join(format!(
        "{test}-{}-{}-{name}",
        std::process::id(),
        rand::random::<u64>()
    ));
    let url = format!("sqlite://{}?mode=rwc", path.display());
    sqlx::any::AnyPoolOptions::new()
        .max_connections(4)
        .connect(&url)
        .await
        .unwrap()
}
