//! The audit writer: one actor, durable group commit, write-ahead.
//!
//! A call writes its decision (who, what, allowed or refused, argument digest)
//! before the connector runs and completes the same row with the outcome before
//! the answer leaves. Writes that arrive while a batch is pending join it: the
//! actor sends itself `Flush` when the first write of a batch arrives, so that
//! flush is queued behind every write already in the mailbox — one fsync covers
//! them all. A write is acknowledged only after its transaction commits.

use std::fmt;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::Serialize;
use sqlx::AnyPool;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Allowed,
    Refused,
    Failed,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allowed => "allowed",
            Decision::Refused => "refused",
            Decision::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Decision> {
        match text {
            "allowed" => Some(Decision::Allowed),
            "refused" => Some(Decision::Refused),
            "failed" => Some(Decision::Failed),
            _ => None,
        }
    }
}

impl PartialEq<&str> for Decision {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The write-ahead half of an audit row, or a whole refusal. The one
/// description of a row's columns: reading the log (`AuditRow`) wraps it.
#[derive(Debug, Clone, Serialize)]
pub struct AuditDecision {
    pub call_id: String,
    #[serde(rename = "started_at")]
    pub at: String,
    pub subject: String,
    pub actor: String,
    pub session: Option<String>,
    pub client_name: Option<String>,
    pub client_version: Option<String>,
    pub service: Option<String>,
    pub tool: String,
    pub action: Option<String>,
    pub risk: Option<crate::risk::Risk>,
    pub decision: Decision,
    pub reason_code: Option<String>,
    pub reason: Option<String>,
    pub args_sha256: String,
    pub grant_id: Option<String>,
    /// The workflow job the call was made for (delegated calls).
    pub job_id: Option<String>,
    /// Pseudonyms put back into the arguments (count; entity types, never values).
    pub pii_rehydrated: Option<i64>,
    pub pii_types: Option<String>,
    /// Refusals are complete at once; allowed calls are completed by an [`AuditOutcome`].
    #[serde(skip)]
    pub completed: bool,
}

/// The outcome that completes an allowed call's row.
#[derive(Debug, Clone)]
pub struct AuditOutcome {
    pub call_id: String,
    pub at: String,
    pub decision: Decision,
    pub reason_code: Option<String>,
    pub reason: Option<String>,
    pub upstream_status: String,
    pub latency_ms: f64,
}

#[derive(Debug, Clone)]
pub enum AuditWrite {
    Decision(Box<AuditDecision>),
    Outcome(AuditOutcome),
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    #[error("audit store unavailable: {0}")]
    Store(String),
    #[error("audit row {0} to complete does not exist")]
    MissingRow(String),
    #[error("audit writer unavailable")]
    WriterGone,
}

pub enum AuditMsg {
    /// Durably record one write; the reply comes after commit.
    Write(AuditWrite, RpcReplyPort<Result<(), AuditError>>),
    /// Commit everything pending (sent by the writer to itself).
    Flush,
    /// Reply once everything written before this message is committed.
    Sync(RpcReplyPort<()>),
    #[cfg(feature = "fault-injection")]
    InjectPanic,
}

pub struct AuditWriterArgs {
    pub pool: AnyPool,
    /// Largest number of writes in one transaction.
    pub max_batch: usize,
}

pub struct AuditWriter;

pub struct AuditWriterState {
    pool: AnyPool,
    max_batch: usize,
    pending: Vec<(AuditWrite, RpcReplyPort<Result<(), AuditError>>)>,
    flush_queued: bool,
}

impl Actor for AuditWriter {
    type Msg = AuditMsg;
    type State = AuditWriterState;
    type Arguments = AuditWriterArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<AuditMsg>,
        args: AuditWriterArgs,
    ) -> Result<AuditWriterState, ActorProcessingErr> {
        Ok(AuditWriterState {
            pool: args.pool,
            max_batch: args.max_batch.max(1),
            pending: Vec::new(),
            flush_queued: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<AuditMsg>,
        message: AuditMsg,
        state: &mut AuditWriterState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            AuditMsg::Write(write, reply) => {
                state.pending.push((write, reply));
                if state.pending.len() >= state.max_batch {
                    flush(state).await;
                } else if !state.flush_queued {
                    state.flush_queued = true;
                    myself.send_message(AuditMsg::Flush)?;
                }
            }
            AuditMsg::Flush => {
                state.flush_queued = false;
                flush(state).await;
            }
            AuditMsg::Sync(reply) => {
                flush(state).await;
                let _ = reply.send(());
            }
            #[cfg(feature = "fault-injection")]
            AuditMsg::InjectPanic => panic!("injected audit writer panic"),
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<AuditMsg>,
        state: &mut AuditWriterState,
    ) -> Result<(), ActorProcessingErr> {
        // Graceful stop: nothing pending is dropped.
        flush(state).await;
        Ok(())
    }
}

async fn flush(state: &mut AuditWriterState) {
    if state.pending.is_empty() {
        return;
    }
    let batch = std::mem::take(&mut state.pending);
    match commit(&state.pool, &batch).await {
        Ok(per_write) => {
            for ((_, reply), result) in batch.into_iter().zip(per_write) {
                let _ = reply.send(result);
            }
        }
        Err(err) => {
            tracing::error!(error = %err, writes = batch.len(), "audit commit failed; calls will be refused");
            for (_, reply) in batch {
                let _ = reply.send(Err(err.clone()));
            }
        }
    }
}

/// Commit a batch with as few statements as possible: all decisions in one
/// multi-row INSERT, all outcomes in one UPDATE … FROM (VALUES …), inside one
/// transaction when there are both. Every statement is a hand-off to the
/// database thread, so this keeps the cost per batch nearly flat in its size.
/// Per-write results report outcomes whose row was not there to complete; a
/// store error fails the whole batch.
async fn commit(
    pool: &AnyPool,
    batch: &[(AuditWrite, RpcReplyPort<Result<(), AuditError>>)],
) -> Result<Vec<Result<(), AuditError>>, AuditError> {
    let store = |e: sqlx::Error| AuditError::Store(e.to_string());
    let decisions: Vec<&AuditDecision> = batch
        .iter()
        .filter_map(|(w, _)| match w {
            AuditWrite::Decision(d) => Some(d.as_ref()),
            AuditWrite::Outcome(_) => None,
        })
        .collect();
    let outcomes: Vec<&AuditOutcome> = batch
        .iter()
        .filter_map(|(w, _)| match w {
            AuditWrite::Outcome(o) => Some(o),
            AuditWrite::Decision(_) => None,
        })
        .collect();
    let mut conn = pool.acquire().await.map_err(store)?;
    // One statement is atomic on its own; two need a transaction. A sqlx
    // transaction rolls back if it is dropped uncommitted, so a failure never
    // returns a connection to the pool with a transaction open.
    let missing = if !decisions.is_empty() && !outcomes.is_empty() {
        let mut tx = sqlx::Connection::begin(&mut *conn).await.map_err(store)?;
        let missing = write_batch(&mut tx, &decisions, &outcomes)
            .await
            .map_err(store)?;
        tx.commit().await.map_err(store)?;
        missing
    } else {
        write_batch(&mut conn, &decisions, &outcomes)
            .await
            .map_err(store)?
    };
    Ok(batch
        .iter()
        .map(|(w, _)| match w {
            AuditWrite::Outcome(o) if missing.contains(&o.call_id) => {
                Err(AuditError::MissingRow(o.call_id.clone()))
            }
            _ => Ok(()),
        })
        .collect())
}

/// SQLite's limit on bound parameters is 32766 (PostgreSQL's 65535); stay well below it.
const ROWS_PER_STATEMENT: usize = 500;

/// `($1, $2), ($3, $4)` for `rows` rows of `columns` values: numbered
/// placeholders, which both SQLite and PostgreSQL accept.
fn placeholders(rows: usize, columns: usize) -> String {
    let mut out = String::with_capacity(rows * columns * 5);
    for row in 0..rows {
        if row > 0 {
            out.push_str(", ");
        }
        out.push('(');
        for column in 0..columns {
            if column > 0 {
                out.push_str(", ");
            }
            out.push('$');
            out.push_str(&(row * columns + column + 1).to_string());
        }
        out.push(')');
    }
    out
}

/// Returns the call ids of outcomes that found no open row.
async fn write_batch(
    conn: &mut sqlx::AnyConnection,
    decisions: &[&AuditDecision],
    outcomes: &[&AuditOutcome],
) -> Result<Vec<String>, sqlx::Error> {
    for chunk in decisions.chunks(ROWS_PER_STATEMENT) {
        let mut sql = String::from(
            "INSERT INTO audit_events (call_id, started_at, completed_at, subject, actor, \
             session, client_name, client_version, service, tool, action, risk, decision, \
             reason_code, reason, args_sha256, grant_id, job_id, pii_rehydrated, pii_types) VALUES ",
        );
        sql.push_str(&placeholders(chunk.len(), 20));
        // Only constant text and placeholders: nothing from callers is spliced in.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for d in chunk {
            query = query
                .bind(&d.call_id)
                .bind(&d.at)
                .bind(d.completed.then_some(&d.at))
                .bind(&d.subject)
                .bind(&d.actor)
                .bind(&d.session)
                .bind(&d.client_name)
                .bind(&d.client_version)
                .bind(&d.service)
                .bind(&d.tool)
                .bind(&d.action)
                .bind(d.risk.map(|r| r.as_str()))
                .bind(d.decision.as_str())
                .bind(&d.reason_code)
                .bind(&d.reason)
                .bind(&d.args_sha256)
                .bind(&d.grant_id)
                .bind(&d.job_id)
                .bind(d.pii_rehydrated)
                .bind(&d.pii_types);
        }
        query.execute(&mut *conn).await?;
    }
    let mut missing = Vec::new();
    for chunk in outcomes.chunks(ROWS_PER_STATEMENT) {
        let mut sql = String::from(
            "UPDATE audit_events SET completed_at = o.column2, decision = o.column3, \
             reason_code = COALESCE(o.column4, reason_code), reason = COALESCE(o.column5, reason), \
             upstream_status = o.column6, latency_ms = o.column7 \
             FROM (VALUES ",
        );
        sql.push_str(&placeholders(chunk.len(), 7));
        sql.push_str(
            ") AS o WHERE audit_events.call_id = o.column1 AND audit_events.completed_at IS NULL \
             RETURNING audit_events.call_id",
        );
        let mut query = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql));
        for o in chunk {
            query = query
                .bind(&o.call_id)
                .bind(&o.at)
                .bind(o.decision.as_str())
                .bind(&o.reason_code)
                .bind(&o.reason)
                .bind(&o.upstream_status)
                .bind(o.latency_ms);
        }
        let completed: std::collections::HashSet<String> =
            query.fetch_all(&mut *conn).await?.into_iter().collect();
        missing.extend(
            chunk
                .iter()
                .filter(|o| !completed.contains(&o.call_id))
                .map(|o| o.call_id.clone()),
        );
    }
    Ok(missing)
}

/// Send one write and wait for its commit. Any failure is an error: callers
/// treat it as "not recorded" and refuse to proceed.
pub async fn write(writer: &ActorRef<AuditMsg>, entry: AuditWrite) -> Result<(), AuditError> {
    match writer
        .call(|reply| AuditMsg::Write(entry, reply), None)
        .await
    {
        Ok(ractor::rpc::CallResult::Success(result)) => result,
        _ => Err(AuditError::WriterGone),
    }
}
