//! One writer at a time per SQLite file, queued in this process.
//!
//! SQLite lets one connection write at a time. A connection that finds the
//! write lock taken waits in SQLite's busy handler, which sleeps 1, 2, 5 …
//! 100 ms between tries and is not woken when the lock frees: under load the
//! writers sleep far longer than the writes they wait for (a burst of 1,000
//! token exchanges slept ≈ 50 s in total across the pool's connections, and
//! a steady 16-client load slept in 100 ms steps). Writers of this process
//! take turns on a fair async mutex instead, woken the moment the previous
//! write ends, so SQLite never sees two of them at once.
//!
//! A turn is taken *before* a connection: a task holding a turn waits only
//! for a connection, never the other way round, so the pool cannot deadlock
//! on turns. Code that holds a turn must not ask for another (the mutex is
//! not reentrant). PostgreSQL locks rows, not the database: no turns there.
//! Other processes on the same file (the operator CLI) still meet SQLite's
//! own lock; they write rarely.

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, LazyLock, Mutex};

use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, AnyPool, Transaction};
use tokio::sync::OwnedMutexGuard;

type Turns = Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>;

/// One queue per SQLite database URL (several gateways in one process, as in
/// tests, each have their own file).
static TURNS: LazyLock<Turns> = LazyLock::new(Default::default);

/// Wait for this process's turn to write to `pool`'s database (`None` on
/// PostgreSQL, which needs none).
pub async fn take(pool: &AnyPool) -> Option<OwnedMutexGuard<()>> {
    Some(queue(pool)?.lock_owned().await)
}

/// The queue of `pool`'s SQLite file (`None` on PostgreSQL): a thread that
/// is not a task takes its turn with `blocking_lock`.
pub fn queue(pool: &AnyPool) -> Option<Arc<tokio::sync::Mutex<()>>> {
    let options = pool.connect_options();
    let url = &options.database_url;
    if url.scheme() != "sqlite" {
        return None;
    }
    let mut turns = TURNS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    Some(match turns.get(url.as_str()) {
        Some(queue) => queue.clone(),
        None => turns.entry(url.as_str().to_owned()).or_default().clone(),
    })
}

/// A pooled connection held with the turn to write.
pub struct Writer {
    conn: PoolConnection<Any>,
    _turn: Option<OwnedMutexGuard<()>>,
}

/// A connection for one or more write statements outside a transaction.
pub async fn writer(pool: &AnyPool) -> Result<Writer, sqlx::Error> {
    let turn = take(pool).await;
    Ok(Writer {
        conn: pool.acquire().await?,
        _turn: turn,
    })
}

impl Deref for Writer {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        &self.conn
    }
}

impl DerefMut for Writer {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.conn
    }
}

/// A write transaction held with the turn. Dropped uncommitted, it rolls
/// back before the turn passes on (fields drop in order).
pub struct WriteTx {
    tx: Transaction<'static, Any>,
    _turn: Option<OwnedMutexGuard<()>>,
}

/// Begin a write transaction in turn.
pub async fn begin(pool: &AnyPool) -> Result<WriteTx, sqlx::Error> {
    let turn = take(pool).await;
    Ok(WriteTx {
        tx: pool.begin().await?,
        _turn: turn,
    })
}

impl WriteTx {
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }
}

impl Deref for WriteTx {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        &self.tx
    }
}

impl DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn sqlite(name: &str) -> AnyPool {
        crate::scratch::sqlite("write-turn", name).await
    }

    #[tokio::test]
    async fn writers_of_one_file_take_turns_and_other_files_do_not_wait() {
        let (a, b) = (sqlite("a.db").await, sqlite("b.db").await);
        let held = writer(&a).await.unwrap();
        // The same file: the second writer waits for the first.
        let waiting = {
            let a = a.clone();
            tokio::spawn(async move { writer(&a).await.map(|_| ()) })
        };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiting.is_finished());
        // Another file: no wait; and a reader never waits for a turn.
        drop(writer(&b).await.unwrap());
        sqlx::query("SELECT 1").execute(&a).await.unwrap();
        drop(held);
        waiting.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn an_uncommitted_transaction_rolls_back_and_passes_the_turn_on() {
        let pool = sqlite("t.db").await;
        sqlx::query("CREATE TABLE t (v INTEGER)")
            .execute(&mut *writer(&pool).await.unwrap())
            .await
            .unwrap();
        {
            let mut tx = begin(&pool).await.unwrap();
            sqlx::query("INSERT INTO t VALUES (1)")
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        let mut tx = begin(&pool).await.unwrap();
        sqlx::query("INSERT INTO t VALUES (2)")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let rows: Vec<(i64,)> = sqlx::query_as("SELECT v FROM t")
            .fetch_all(&pool)
            .await
            .unwrap();
        assert_eq!(rows, vec![(2,)]);
    }
}
