//! One thread per SQLite file that owns a write connection: plans
//! ([`crate::write_plan`]) queue to it and the plans waiting together commit
//! in one transaction — one fsync for all of them.
//!
//! Through sqlx, every statement is a hand-off to the connection's worker
//! thread and back (a channel send, a futex wake and a context switch each
//! way), so a batch of BEGIN, INSERT, UPDATE, COMMIT cost four round trips,
//! and every writer paid its own fsync. Here a whole group is one wake of
//! this thread: it takes what is queued, applies each plan inside its own
//! savepoint (a plan that fails rolls back alone and reports its error; the
//! others commit), commits once, and answers each caller.
//!
//! The thread takes the file's write turn ([`crate::write_turn`]) for each
//! group, so it and the pooled writers of this process never meet in
//! SQLite's busy handler. It copies the pool's durability
//! (`PRAGMA synchronous`), and it ends when the last handle is dropped.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, LazyLock, Mutex, Weak};

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags, ToSql};
use sqlx::AnyPool;
use sqlx::sqlite::SqliteConnectOptions;
use tokio::sync::oneshot;

use crate::write_plan::{Applied, Plan, PlanError, Statement, Value};
use crate::write_turn;

/// Plans committed together at most (a group's transaction stays short).
const MAX_GROUP: usize = 256;

/// Prepared statements kept per connection (batch statements differ by
/// their number of rows).
const STATEMENT_CACHE: usize = 64;

struct Job {
    plan: Plan,
    reply: oneshot::Sender<Result<Applied, PlanError>>,
}

/// A handle on a SQLite file's writer thread.
pub struct SqliteWriter {
    jobs: mpsc::Sender<Job>,
}

type Writers = Mutex<HashMap<String, Weak<SqliteWriter>>>;

/// The running writer of each SQLite file. Weak: whoever holds a handle (the
/// gateway, the audit writer) keeps the thread alive.
static WRITERS: LazyLock<Writers> = LazyLock::new(Default::default);

impl SqliteWriter {
    /// The writer thread of `pool`'s SQLite file, started if none runs
    /// (`None` on PostgreSQL).
    pub async fn of(pool: &AnyPool) -> Result<Option<Arc<SqliteWriter>>, PlanError> {
        let options = pool.connect_options();
        let url = &options.database_url;
        if url.scheme() != "sqlite" {
            return Ok(None);
        }
        if let Some(running) = Self::running(url.as_str()) {
            return Ok(Some(running));
        }
        let file: SqliteConnectOptions = url
            .as_str()
            .parse()
            .map_err(|e: sqlx::Error| PlanError::Store(e.to_string()))?;
        let path = file.get_filename().to_owned();
        // The thread writes as durably as the pool's own connections.
        let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(pool)
            .await?;
        let turn = write_turn::queue(pool);
        let mut writers = WRITERS
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(running) = writers.get(url.as_str()).and_then(Weak::upgrade) {
            return Ok(Some(running));
        }
        let conn = open(&path, synchronous).map_err(|e| PlanError::Store(e.to_string()))?;
        let (jobs, queued) = mpsc::channel();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || run(conn, queued, turn))
            .map_err(|e| PlanError::Store(format!("cannot start the SQLite writer: {e}")))?;
        let writer = Arc::new(SqliteWriter { jobs });
        writers.retain(|_, w| w.strong_count() > 0);
        writers.insert(url.as_str().to_owned(), Arc::downgrade(&writer));
        Ok(Some(writer))
    }

    fn running(url: &str) -> Option<Arc<SqliteWriter>> {
        WRITERS
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(url)
            .and_then(Weak::upgrade)
    }

    /// Apply `plan`, committed (with whatever else was queued) before this
    /// returns.
    pub async fn apply(&self, plan: Plan) -> Result<Applied, PlanError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { plan, reply })
            .map_err(|_| PlanError::Store("the SQLite writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| PlanError::Store("the SQLite writer has stopped".into()))?
    }
}

fn open(path: &PathBuf, synchronous: i64) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    // WAL is the file's own mode (set by the pool); these are per connection.
    conn.pragma_update(None, "synchronous", synchronous)?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

fn run(conn: Connection, queued: mpsc::Receiver<Job>, turn: Option<Arc<tokio::sync::Mutex<()>>>) {
    while let Ok(first) = queued.recv() {
        // Plans that arrive while the thread waits for its turn join the group.
        let held = turn.as_ref().map(|t| t.blocking_lock());
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match queued.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let results = commit_group(&conn, &group);
        drop(held);
        for (job, result) in group.into_iter().zip(results) {
            let _ = job.reply.send(result);
        }
    }
}

/// Every plan of `group` in one transaction, each in its own savepoint.
fn commit_group(conn: &Connection, group: &[Job]) -> Vec<Result<Applied, PlanError>> {
    let store = |e: rusqlite::Error| PlanError::Store(e.to_string());
    // A lone single statement commits on its own.
    if let [job] = group
        && job.plan.statements.len() == 1
    {
        return vec![run_statement(conn, &job.plan.statements[0]).map(|rows| vec![rows])];
    }
    let all_fail = |e: rusqlite::Error| {
        // Nothing of the group is durable: every plan fails.
        let _ = conn.execute_batch("ROLLBACK");
        let failed = store(e);
        group.iter().map(|_| Err(failed.clone())).collect()
    };
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        return all_fail(e);
    }
    let mut results = Vec::with_capacity(group.len());
    for job in group {
        if let Err(e) = conn.execute_batch("SAVEPOINT plan") {
            return all_fail(e);
        }
        let applied: Result<Applied, PlanError> = job
            .plan
            .statements
            .iter()
            .map(|statement| run_statement(conn, statement))
            .collect();
        // A savepoint that cannot be undone or closed leaves the plan half
        // applied: then nothing of the group may commit.
        if applied.is_err()
            && let Err(e) = conn.execute_batch("ROLLBACK TO plan")
        {
            return all_fail(e);
        }
        if let Err(e) = conn.execute_batch("RELEASE plan") {
            return all_fail(e);
        }
        results.push(applied);
    }
    if let Err(e) = conn.execute_batch("COMMIT") {
        return all_fail(e);
    }
    results
}

fn run_statement(conn: &Connection, statement: &Statement) -> Result<Vec<String>, PlanError> {
    let store = |e: rusqlite::Error| PlanError::Store(e.to_string());
    let mut prepared = conn.prepare_cached(&statement.sql).map_err(store)?;
    for (i, value) in statement.values.iter().enumerate() {
        prepared.raw_bind_parameter(i + 1, value).map_err(store)?;
    }
    if statement.returns_rows {
        let mut rows = prepared.raw_query();
        let mut firsts = Vec::new();
        while let Some(row) = rows.next().map_err(store)? {
            firsts.push(row.get::<_, String>(0).map_err(store)?);
        }
        Ok(firsts)
    } else {
        prepared.raw_execute().map_err(store)?;
        Ok(Vec::new())
    }
}

impl ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Text(Some(v)) => ValueRef::Text(v.as_bytes()),
            Value::Int(Some(v)) => ValueRef::Integer(*v),
            Value::Real(Some(v)) => ValueRef::Real(*v),
            Value::Bool(Some(v)) => ValueRef::Integer(i64::from(*v)),
            Value::Blob(Some(v)) => ValueRef::Blob(v),
            Value::Text(None)
            | Value::Int(None)
            | Value::Real(None)
            | Value::Bool(None)
            | Value::Blob(None) => ValueRef::Null,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn sqlite(name: &str) -> AnyPool {
        let pool = crate::scratch::sqlite("sqlite-writer", name).await;
        sqlx::raw_sql("PRAGMA journal_mode = WAL; CREATE TABLE t (v INTEGER UNIQUE, note TEXT)")
            .execute(&pool)
            .await
            .unwrap();
        pool
    }

    fn insert(v: i64) -> Statement {
        Statement::new("INSERT INTO t (v, note) VALUES (?, ?)")
            .bind(v)
            .bind(format!("row {v}"))
    }

    async fn values(pool: &AnyPool) -> Vec<i64> {
        sqlx::query_scalar("SELECT v FROM t ORDER BY v")
            .fetch_all(pool)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn plans_queued_behind_the_turn_commit_and_a_failing_one_rolls_back_alone() {
        let pool = sqlite("group.db").await;
        let writer = SqliteWriter::of(&pool).await.unwrap().unwrap();
        // Hold the turn, so every plan below queues and they form one group.
        let turn = write_turn::take(&pool).await;
        let plans = [
            Plan::new().then(insert(1)).then(insert(2)),
            // Its second row breaks the UNIQUE constraint: neither of its rows stays.
            Plan::new().then(insert(3)).then(insert(1)),
            Plan::new().then(insert(4)),
        ];
        let pending: Vec<_> = plans
            .into_iter()
            .map(|plan| {
                let writer = writer.clone();
                tokio::spawn(async move { writer.apply(plan).await })
            })
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(
            pending.iter().all(|p| !p.is_finished()),
            "the thread waits for its turn"
        );
        assert!(values(&pool).await.is_empty());
        drop(turn);
        let mut results = Vec::new();
        for p in pending {
            results.push(p.await.unwrap());
        }
        assert!(results[0].is_ok() && results[2].is_ok());
        let refused = results[1].as_ref().unwrap_err().to_string();
        assert!(refused.contains("UNIQUE"), "{refused}");
        assert_eq!(values(&pool).await, vec![1, 2, 4]);
    }

    #[tokio::test]
    async fn a_plan_returns_the_rows_its_statements_return() {
        let pool = sqlite("returning.db").await;
        let writer = SqliteWriter::of(&pool).await.unwrap().unwrap();
        writer
            .apply(Plan::new().then(insert(1)).then(insert(2)))
            .await
            .unwrap();
        let applied = writer
            .apply(
                Plan::new().then(
                    Statement::new("UPDATE t SET note = ? WHERE v >= ? RETURNING note")
                        .bind("seen")
                        .bind(2i64)
                        .returning(),
                ),
            )
            .await
            .unwrap();
        assert_eq!(applied, vec![vec!["seen".to_owned()]]);
        // Typed values survive the trip: NULL, real, bool and blob.
        sqlx::raw_sql("CREATE TABLE k (a TEXT, b REAL, c INTEGER, d BLOB)")
            .execute(&pool)
            .await
            .unwrap();
        writer
            .apply(
                Plan::new().then(
                    Statement::new("INSERT INTO k VALUES (?, ?, ?, ?)")
                        .bind(None::<String>)
                        .bind(1.5f64)
                        .bind(true)
                        .bind(vec![0u8, 255]),
                ),
            )
            .await
            .unwrap();
        let row: (Option<String>, f64, i64, Vec<u8>) = sqlx::query_as("SELECT a, b, c, d FROM k")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(row, (None, 1.5, 1, vec![0, 255]));
    }

    #[tokio::test]
    async fn one_file_has_one_writer_and_it_ends_with_its_last_handle() {
        let pool = sqlite("one.db").await;
        let a = SqliteWriter::of(&pool).await.unwrap().unwrap();
        let b = SqliteWriter::of(&pool).await.unwrap().unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let url = pool.connect_options().database_url.to_string();
        drop((a, b));
        assert!(SqliteWriter::running(&url).is_none());
    }
}
