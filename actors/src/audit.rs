//! The audit writer: one actor, durable group commit, write-ahead.
//!
//! A call writes its decision (who, what, allowed or refused, argument digest)
//! before the connector runs and completes the same row with the outcome before
//! the answer leaves. Writes that arrive while a batch is pending join it: the
//! actor sends itself `Flush` when the first write of a batch arrives, so that
//! flush is queued behind every write already in the mailbox — one fsync covers
//! them all. A write is acknowledged only after its transaction commits, and
//! every write is an entry of the writer's hash chain, kept in the same
//! statement as the write itself (see [`crate::audit_chain`]).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::sqlite_writer::SqliteWriter;
use crate::write_plan::{self, Plan, PlanError, Statement};
use crate::write_turn;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::Serialize;
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyPool};

use crate::audit_chain::{
    self, AdoptedEntry, CheckpointKey, DecisionEntry, GenesisEntry, Head, OutcomeEntry, PruneEntry,
};

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
    /// Unknown for calls a crash interrupted.
    pub latency_ms: Option<f64>,
}

#[derive(Debug, Clone)]
pub enum AuditWrite {
    Decision(Box<AuditDecision>),
    Outcome(AuditOutcome),
    /// Retention removed a chain's prefix (see [`crate::audit_chain`]).
    Prune(PruneEntry),
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
    /// Sign the chain's head if entries are unsigned (sent by the writer to
    /// itself, `checkpoint_interval` after the first unsigned entry).
    Checkpoint,
    /// Reply once everything written before this message is committed.
    Sync(RpcReplyPort<()>),
    /// Commit everything pending and sign the head now; replies whether
    /// every entry is signed (retention signs its prune marks before it
    /// removes anything).
    Sign(RpcReplyPort<bool>),
    /// Complete, as interrupted, the rows of calls that can no longer be
    /// running (allowed, written ahead, never completed; with a time, only
    /// those started before it). Replies with how many.
    CompleteInterrupted(Option<String>, RpcReplyPort<Result<u64, AuditError>>),
    #[cfg(feature = "fault-injection")]
    InjectPanic,
}

/// How the writer keeps its chain (see [`crate::audit_chain`]).
#[derive(Clone, Debug)]
pub struct ChainSettings {
    pub key: CheckpointKey,
    /// Checkpoint origins are `<origin>/<chain id>`.
    pub origin: String,
    /// Sign at least every this many entries…
    pub checkpoint_every: i64,
    /// …and within this long of the first unsigned entry.
    pub checkpoint_interval: Duration,
}

pub struct AuditWriterArgs {
    pub pool: AnyPool,
    /// Largest number of writes in one transaction.
    pub max_batch: usize,
    pub chain: ChainSettings,
}

pub struct AuditWriter;

/// The writer's own chain: where its head stands and what is signed.
struct Chain {
    settings: ChainSettings,
    id: String,
    /// Entries so far (the next entry's sequence number).
    size: i64,
    head: [u8; 32],
    signed: i64,
    signed_at: Instant,
    timer_queued: bool,
    /// Marks whose insert failed after their entries were placed: written
    /// before anything else at the next flush, so the chain has no hole.
    owed_marks: Vec<Mark>,
}

/// An entry kept outside the rows: a genesis, a prune, or an outcome that
/// found no open row (`void`).
#[derive(Debug, Clone)]
struct Mark {
    seq: i64,
    kind: &'static str,
    entry: String,
    hash: [u8; 32],
}

/// An entry placed in the chain: its sequence number, text and hash.
struct Placed {
    seq: i64,
    entry: String,
    hash: [u8; 32],
}

impl Chain {
    fn place(&mut self, entry: String) -> Placed {
        let hash = audit_chain::next_hash(&self.head, &entry);
        let placed = Placed {
            seq: self.size,
            entry,
            hash,
        };
        self.size += 1;
        self.head = hash;
        placed
    }

    fn origin(&self) -> String {
        format!("{}/{}", self.settings.origin, self.id)
    }
}

pub struct AuditWriterState {
    pool: AnyPool,
    store: Store,
    max_batch: usize,
    pending: Vec<(AuditWrite, RpcReplyPort<Result<(), AuditError>>)>,
    flush_queued: bool,
    chain: Chain,
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
        let chain = open_chain(&args.pool, args.chain).await?;
        let store = match SqliteWriter::of(&args.pool).await? {
            Some(thread) => Store::Thread(thread),
            None => Store::Held(Held {
                pool: args.pool.clone(),
                conn: None,
            }),
        };
        Ok(AuditWriterState {
            store,
            pool: args.pool,
            max_batch: args.max_batch.max(1),
            pending: Vec::new(),
            flush_queued: false,
            chain,
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
                    flush(state, &myself).await;
                } else if !state.flush_queued {
                    state.flush_queued = true;
                    myself.send_message(AuditMsg::Flush)?;
                }
            }
            AuditMsg::Flush => {
                state.flush_queued = false;
                flush(state, &myself).await;
            }
            AuditMsg::Checkpoint => {
                state.chain.timer_queued = false;
                checkpoint(&state.pool, &mut state.chain).await;
                schedule_checkpoint(&mut state.chain, &myself);
            }
            AuditMsg::Sync(reply) => {
                flush(state, &myself).await;
                let _ = reply.send(());
            }
            AuditMsg::Sign(reply) => {
                flush(state, &myself).await;
                checkpoint(&state.pool, &mut state.chain).await;
                let _ = reply.send(state.chain.signed == state.chain.size);
            }
            AuditMsg::CompleteInterrupted(started_before, reply) => {
                flush(state, &myself).await;
                let _ = reply.send(complete_interrupted(state, started_before, &myself).await);
            }
            #[cfg(feature = "fault-injection")]
            AuditMsg::InjectPanic => panic!("injected audit writer panic"),
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<AuditMsg>,
        state: &mut AuditWriterState,
    ) -> Result<(), ActorProcessingErr> {
        // Graceful stop: nothing pending is dropped, and the head is signed.
        flush(state, &myself).await;
        checkpoint(&state.pool, &mut state.chain).await;
        Ok(())
    }
}

/// Start a chain: a fresh id, a genesis naming the heads of the most recent
/// chains, and — the first time a log gets a chain at all — the rows written
/// before chains existed, adopted as they stand. Signed at once.
async fn open_chain(pool: &AnyPool, settings: ChainSettings) -> Result<Chain, ActorProcessingErr> {
    let id = hex::encode(rand::random::<[u8; 8]>());
    let mut chain = Chain {
        settings,
        id: id.clone(),
        size: 0,
        head: audit_chain::ZERO,
        signed: 0,
        signed_at: Instant::now(),
        timer_queued: false,
        owed_marks: Vec::new(),
    };
    let mut conn = write_turn::writer(pool).await?;
    // Read before the transaction: one that reads first and writes later can
    // be refused at once on SQLite (WAL) when another connection committed in
    // between. A head read a moment early is still a prefix its chain keeps.
    let earlier: Vec<String> = sqlx::query_scalar(
        "SELECT chain_id FROM audit_chain_marks WHERE kind = 'genesis' \
         ORDER BY written_at DESC, chain_id LIMIT 64",
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut witness = Vec::new();
    for other in &earlier {
        if let Some(head) = chain_head(&mut conn, other).await? {
            witness.push(head);
        }
    }
    // The genesis insert comes first, so the transaction holds the write lock
    // before it reads the rows it adopts.
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    let genesis = audit_chain::encode(&GenesisEntry {
        kind: "genesis".into(),
        chain: id.clone(),
        started_at: crate::now_rfc3339(),
        witness,
    });
    let placed = chain.place(genesis);
    insert_mark(&mut tx, &chain.id, "genesis", &placed).await?;
    if earlier.is_empty() {
        adopt_unchained_rows(&mut tx, &mut chain).await?;
    }
    tx.commit().await?;
    drop(conn);
    checkpoint(pool, &mut chain).await;
    if chain.signed < chain.size {
        return Err("the audit chain's first checkpoint could not be written".into());
    }
    Ok(chain)
}

/// Where `chain` ends now. Triggers keep `audit_chain_heads` in step with
/// every entry (migrations 0015 / postgres 0006); the scan below is only for
/// a head row that went missing, and costs a pass over the log.
async fn chain_head(
    conn: &mut sqlx::AnyConnection,
    chain: &str,
) -> Result<Option<Head>, sqlx::Error> {
    let kept: Option<(i64, String)> =
        sqlx::query_as("SELECT size, hash FROM audit_chain_heads WHERE chain_id = $1")
            .bind(chain)
            .fetch_optional(&mut *conn)
            .await?;
    if let Some((size, hash)) = kept {
        return Ok(Some(Head {
            chain: chain.to_owned(),
            size,
            hash,
        }));
    }
    let last: Option<(i64, String)> = sqlx::query_as(
        "SELECT seq, hash FROM ( \
           SELECT chain_seq AS seq, chain_hash AS hash FROM audit_events WHERE chain_id = $1 \
           UNION ALL SELECT outcome_seq, outcome_hash FROM audit_events WHERE outcome_chain = $1 \
           UNION ALL SELECT seq, hash FROM audit_chain_marks WHERE chain_id = $1) AS entries \
         ORDER BY seq DESC LIMIT 1",
    )
    .bind(chain)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(last.map(|(last, hash)| Head {
        chain: chain.to_owned(),
        size: last + 1,
        hash,
    }))
}

/// Rows written before the log had chains: each becomes an `adopted` entry
/// holding the row as it stands (so the chain covers them from now on).
async fn adopt_unchained_rows(
    conn: &mut sqlx::AnyConnection,
    chain: &mut Chain,
) -> Result<(), sqlx::Error> {
    use sqlx::Row;
    let rows = sqlx::query(
        "SELECT call_id, started_at, completed_at, subject, actor, session, client_name, \
         client_version, service, tool, action, risk, decision, reason_code, reason, \
         args_sha256, grant_id, job_id, pii_rehydrated, pii_types, upstream_status, latency_ms \
         FROM audit_events WHERE chain_id IS NULL ORDER BY id",
    )
    .fetch_all(&mut *conn)
    .await?;
    for row in rows {
        let entry = AdoptedEntry {
            kind: "adopted".into(),
            call_id: row.try_get("call_id")?,
            started_at: row.try_get("started_at")?,
            completed_at: row.try_get("completed_at")?,
            subject: row.try_get("subject")?,
            actor: row.try_get("actor")?,
            session: row.try_get("session")?,
            client_name: row.try_get("client_name")?,
            client_version: row.try_get("client_version")?,
            service: row.try_get("service")?,
            tool: row.try_get("tool")?,
            action: row.try_get("action")?,
            risk: row.try_get("risk")?,
            decision: row.try_get("decision")?,
            reason_code: row.try_get("reason_code")?,
            reason: row.try_get("reason")?,
            args_sha256: row.try_get("args_sha256")?,
            grant_id: row.try_get("grant_id")?,
            job_id: row.try_get("job_id")?,
            pii_rehydrated: row.try_get("pii_rehydrated")?,
            pii_types: row.try_get("pii_types")?,
            upstream_status: row.try_get("upstream_status")?,
            latency_ms: row.try_get("latency_ms")?,
        };
        let call_id = entry.call_id.clone();
        let placed = chain.place(audit_chain::encode(&entry));
        sqlx::query(
            "UPDATE audit_events SET chain_id = $1, chain_seq = $2, chain_hash = $3, chain_entry = $4 \
             WHERE call_id = $5",
        )
        .bind(&chain.id)
        .bind(placed.seq)
        .bind(hex::encode(placed.hash))
        .bind(&placed.entry)
        .bind(&call_id)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

async fn insert_mark(
    conn: &mut sqlx::AnyConnection,
    chain: &str,
    kind: &str,
    placed: &Placed,
) -> Result<(), sqlx::Error> {
    sqlx::query(INSERT_MARK)
        .bind(chain)
        .bind(placed.seq)
        .bind(kind)
        .bind(&placed.entry)
        .bind(hex::encode(placed.hash))
        .bind(crate::now_rfc3339())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Sign the head if anything is unsigned. A failure leaves it unsigned, to
/// be tried again at the next flush or timer.
async fn checkpoint(pool: &AnyPool, chain: &mut Chain) {
    if chain.signed >= chain.size || !chain.owed_marks.is_empty() {
        return;
    }
    let note = chain
        .settings
        .key
        .sign(&chain.origin(), chain.size, &chain.head);
    let written = async {
        sqlx::query(
            "INSERT INTO audit_checkpoints (chain_id, size, hash, signed_at, note) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&chain.id)
        .bind(chain.size)
        .bind(hex::encode(chain.head))
        .bind(crate::now_rfc3339())
        .bind(&note)
        .execute(&mut *write_turn::writer(pool).await?)
        .await
    }
    .await;
    match written {
        Ok(_) => {
            chain.signed = chain.size;
            chain.signed_at = Instant::now();
            tracing::debug!(chain = %chain.id, size = chain.size, "audit checkpoint signed");
        }
        Err(e) => {
            tracing::error!(error = %e, chain = %chain.id, "audit checkpoint could not be written")
        }
    }
}

fn schedule_checkpoint(chain: &mut Chain, myself: &ActorRef<AuditMsg>) {
    if chain.signed < chain.size && !chain.timer_queued {
        chain.timer_queued = true;
        let interval = chain
            .settings
            .checkpoint_interval
            .saturating_sub(chain.signed_at.elapsed());
        myself.send_after(interval, || AuditMsg::Checkpoint);
    }
}

async fn flush(state: &mut AuditWriterState, myself: &ActorRef<AuditMsg>) {
    if state.pending.is_empty() && state.chain.owed_marks.is_empty() {
        return;
    }
    let batch = std::mem::take(&mut state.pending);
    let writes: Vec<&AuditWrite> = batch.iter().map(|(w, _)| w).collect();
    match commit(&mut state.store, &mut state.chain, &writes).await {
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
    let chain = &mut state.chain;
    if chain.size - chain.signed >= chain.settings.checkpoint_every
        || (chain.signed < chain.size
            && chain.signed_at.elapsed() >= chain.settings.checkpoint_interval)
    {
        checkpoint(&state.pool, chain).await;
    }
    schedule_checkpoint(chain, myself);
}

async fn complete_interrupted(
    state: &mut AuditWriterState,
    started_before: Option<String>,
    myself: &ActorRef<AuditMsg>,
) -> Result<u64, AuditError> {
    let store = |e: sqlx::Error| AuditError::Store(e.to_string());
    let open: Vec<String> = sqlx::query_scalar(
        "SELECT call_id FROM audit_events WHERE completed_at IS NULL \
         AND ($1 IS NULL OR started_at < $1) ORDER BY id",
    )
    .bind(started_before)
    .fetch_all(&state.pool)
    .await
    .map_err(store)?;
    let mut completed = 0;
    for chunk in open.chunks(ROWS_PER_STATEMENT) {
        let writes: Vec<AuditWrite> = chunk
            .iter()
            .map(|call_id| {
                AuditWrite::Outcome(AuditOutcome {
                    call_id: call_id.clone(),
                    at: crate::now_rfc3339(),
                    decision: Decision::Failed,
                    reason_code: Some("gateway_interrupted".into()),
                    reason: Some(
                        "the gateway stopped before the call's answer: whether the upstream ran is unknown"
                            .into(),
                    ),
                    upstream_status: "interrupted".into(),
                    latency_ms: None,
                })
            })
            .collect();
        let refs: Vec<&AuditWrite> = writes.iter().collect();
        let results = commit(&mut state.store, &mut state.chain, &refs).await?;
        // Another gateway on the same store may have completed some first.
        completed += results.iter().filter(|r| r.is_ok()).count() as u64;
    }
    schedule_checkpoint(&mut state.chain, myself);
    Ok(completed)
}

/// Where the writer's batches go.
enum Store {
    /// SQLite: the file's writer thread, which commits a batch with the
    /// other plans queued beside it, in one hand-off (see [`SqliteWriter`]).
    Thread(Arc<SqliteWriter>),
    /// PostgreSQL: the writer's own pooled connection.
    Held(Held),
}

impl Store {
    /// How this store's statements write their parameters.
    fn params(&self) -> Params {
        match self {
            Store::Thread(_) => Params::Anonymous,
            Store::Held(_) => Params::Numbered,
        }
    }

    async fn apply(&mut self, plan: Plan) -> Result<write_plan::Applied, PlanError> {
        match self {
            Store::Thread(thread) => thread.apply(plan).await,
            Store::Held(held) => {
                let applied = match held.conn().await {
                    Ok(conn) => write_plan::apply_on(conn, plan).await,
                    Err(e) => Err(e.into()),
                };
                if applied.is_err() {
                    held.discard();
                }
                applied
            }
        }
    }
}

/// The writer's own connection, kept between batches: taking one from the
/// pool and giving it back costs sqlx a test of the connection on its return
/// and a spawned task, as much as a small batch itself.
struct Held {
    pool: AnyPool,
    conn: Option<PoolConnection<Any>>,
}

impl Held {
    /// The connection; a fresh one from the pool after a failure.
    async fn conn(&mut self) -> Result<&mut sqlx::AnyConnection, sqlx::Error> {
        Ok(match &mut self.conn {
            Some(conn) => conn,
            empty => empty.insert(self.pool.acquire().await?),
        })
    }

    /// Give the connection back after a failure: the pool tests it and
    /// closes it if it is broken (or rolls back what a failure left open).
    fn discard(&mut self) {
        self.conn = None;
    }
}

/// Commit a batch with as few statements as possible: all decisions in one
/// multi-row INSERT, all outcomes in one UPDATE … FROM (VALUES …), inside one
/// transaction when there are both. Each write becomes the chain's next
/// entry, kept in its row (decision, outcome) or as a mark; the chain's head
/// advances only once it is committed. Per-write results report outcomes
/// whose row was not there to complete (their entries stay in the chain as
/// `void` marks); a store error fails the whole batch.
async fn commit(
    store: &mut Store,
    chain: &mut Chain,
    batch: &[&AuditWrite],
) -> Result<Vec<Result<(), AuditError>>, AuditError> {
    let (size, head) = (chain.size, chain.head);
    let decisions: Vec<&AuditDecision> = batch
        .iter()
        .filter_map(|w| match w {
            AuditWrite::Decision(d) => Some(d.as_ref()),
            _ => None,
        })
        .collect();
    let outcomes: Vec<&AuditOutcome> = batch
        .iter()
        .filter_map(|w| match w {
            AuditWrite::Outcome(o) => Some(o),
            _ => None,
        })
        .collect();
    let prunes: Vec<&PruneEntry> = batch
        .iter()
        .filter_map(|w| match w {
            AuditWrite::Prune(p) => Some(p),
            _ => None,
        })
        .collect();
    // Entries in the order the statements apply them.
    let decision_entries: Vec<Placed> = decisions
        .iter()
        .map(|d| chain.place(audit_chain::encode(&DecisionEntry::of(d))))
        .collect();
    let outcome_entries: Vec<Placed> = outcomes
        .iter()
        .map(|o| chain.place(audit_chain::encode(&OutcomeEntry::of(o))))
        .collect();
    let mut marks: Vec<Mark> = std::mem::take(&mut chain.owed_marks);
    marks.extend(prunes.iter().map(|p| {
        let placed = chain.place(audit_chain::encode(p));
        Mark {
            seq: placed.seq,
            kind: "prune",
            entry: placed.entry,
            hash: placed.hash,
        }
    }));
    let params = store.params();
    let mut plan = Plan::new();
    for mark in &marks {
        plan.push(mark_statement(&chain.id, mark));
    }
    push_decisions(&mut plan, &chain.id, &decisions, &decision_entries, params);
    push_outcomes(&mut plan, &chain.id, &outcomes, &outcome_entries, params);
    let completed: std::collections::HashSet<String> = match store.apply(plan).await {
        Ok(applied) => applied.into_iter().flatten().collect(),
        Err(e) => {
            // Nothing was committed: the chain stands where it stood.
            chain.size = size;
            chain.head = head;
            chain.owed_marks = marks.into_iter().filter(|m| m.seq < size).collect();
            return Err(AuditError::Store(e.to_string()));
        }
    };
    let missing: Vec<&str> = outcomes
        .iter()
        .filter(|o| !completed.contains(&o.call_id))
        .map(|o| o.call_id.as_str())
        .collect();
    if !missing.is_empty() {
        // Their entries are placed: keep them in the chain as void marks.
        let voids: Vec<Mark> = outcomes
            .iter()
            .zip(&outcome_entries)
            .filter(|(o, _)| missing.contains(&o.call_id.as_str()))
            .map(|(_, placed)| Mark {
                seq: placed.seq,
                kind: "void",
                entry: placed.entry.clone(),
                hash: placed.hash,
            })
            .collect();
        let mut plan = Plan::new();
        for mark in &voids {
            plan.push(mark_statement(&chain.id, mark));
        }
        if let Err(e) = store.apply(plan).await {
            tracing::error!(error = %e, "audit chain: void entries owed to the next flush");
            chain.owed_marks = voids;
        }
    }
    Ok(batch
        .iter()
        .map(|w| match w {
            AuditWrite::Outcome(o) if missing.contains(&o.call_id.as_str()) => {
                Err(AuditError::MissingRow(o.call_id.clone()))
            }
            _ => Ok(()),
        })
        .collect())
}

const INSERT_MARK: &str = "INSERT INTO audit_chain_marks (chain_id, seq, kind, entry, hash, written_at) \
     VALUES ($1, $2, $3, $4, $5, $6)";

/// A mark's row. Six parameters: numbered ones cost SQLite nothing to look up.
fn mark_statement(chain: &str, mark: &Mark) -> Statement {
    Statement::new(INSERT_MARK)
        .bind(chain)
        .bind(mark.seq)
        .bind(mark.kind)
        .bind(&mark.entry)
        .bind(hex::encode(mark.hash))
        .bind(crate::now_rfc3339())
}

/// SQLite's limit on bound parameters is 32766 (PostgreSQL's 65535); stay well below it.
const ROWS_PER_STATEMENT: usize = 500;

/// How a statement's parameters are written. PostgreSQL needs `$1, $2…`.
/// SQLite takes those too, but sqlx then looks each one up by name, and
/// SQLite finds a name by scanning the list, so a statement with n numbered
/// parameters costs O(n²) to bind (12,000 parameters in a full batch);
/// anonymous `?` parameters bind in order at O(1) each.
#[derive(Clone, Copy)]
enum Params {
    Numbered,
    Anonymous,
}

impl Params {
    /// Parameter `n` (1-based), in the order they are bound.
    fn push(self, out: &mut String, n: usize) {
        match self {
            Params::Numbered => {
                out.push('$');
                out.push_str(&n.to_string());
            }
            Params::Anonymous => out.push('?'),
        }
    }
}

/// `($1, $2), ($3, $4)` (or `(?, ?), (?, ?)`) for `rows` rows of `columns`
/// values.
fn placeholders(rows: usize, columns: usize, params: Params) -> String {
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
            params.push(&mut out, row * columns + column + 1);
        }
        out.push(')');
    }
    out
}

/// The `VALUES` rows of an outcome batch (11 columns each). An unknown
/// latency (an interrupted call) is the literal `NULL`, never a bound NULL:
/// PostgreSQL types a cached statement's parameters when it is first
/// prepared, and a NULL bound first would make the latency column text and
/// the next real number be refused. Numbers are cast so the column types
/// never depend on which row comes first.
fn outcome_values(has_latency: impl Iterator<Item = bool>, params: Params) -> String {
    let mut out = String::new();
    let mut n = 0;
    let mut next = || {
        n += 1;
        let mut one = String::new();
        params.push(&mut one, n);
        one
    };
    for (row, has_latency) in has_latency.enumerate() {
        if row > 0 {
            out.push_str(", ");
        }
        let mut columns: Vec<String> = (0..6).map(|_| next()).collect();
        columns.push(if has_latency {
            format!("CAST({} AS DOUBLE PRECISION)", next())
        } else {
            "CAST(NULL AS DOUBLE PRECISION)".into()
        });
        columns.push(next());
        columns.push(format!("CAST({} AS BIGINT)", next()));
        columns.extend((0..2).map(|_| next()));
        out.push('(');
        out.push_str(&columns.join(", "));
        out.push(')');
    }
    out
}

/// The decisions' rows: multi-row INSERTs of up to [`ROWS_PER_STATEMENT`].
fn push_decisions(
    plan: &mut Plan,
    chain: &str,
    decisions: &[&AuditDecision],
    entries: &[Placed],
    params: Params,
) {
    let decisions: Vec<(&&AuditDecision, &Placed)> = decisions.iter().zip(entries).collect();
    for chunk in decisions.chunks(ROWS_PER_STATEMENT) {
        let mut sql = String::from(
            "INSERT INTO audit_events (call_id, started_at, completed_at, subject, actor, \
             session, client_name, client_version, service, tool, action, risk, decision, \
             reason_code, reason, args_sha256, grant_id, job_id, pii_rehydrated, pii_types, \
             chain_id, chain_seq, chain_hash, chain_entry) VALUES ",
        );
        sql.push_str(&placeholders(chunk.len(), 24, params));
        let mut statement = Statement::new(sql);
        for (d, placed) in chunk {
            statement = statement
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
                .bind(&d.pii_types)
                .bind(chain)
                .bind(placed.seq)
                .bind(hex::encode(placed.hash))
                .bind(&placed.entry);
        }
        plan.push(statement);
    }
}

/// The outcomes: `UPDATE … FROM (VALUES …)` of up to [`ROWS_PER_STATEMENT`],
/// each returning the call ids whose open row it completed.
fn push_outcomes(
    plan: &mut Plan,
    chain: &str,
    outcomes: &[&AuditOutcome],
    entries: &[Placed],
    params: Params,
) {
    let outcomes: Vec<(&&AuditOutcome, &Placed)> = outcomes.iter().zip(entries).collect();
    for chunk in outcomes.chunks(ROWS_PER_STATEMENT) {
        let mut sql = String::from(
            "UPDATE audit_events SET completed_at = o.column2, decision = o.column3, \
             reason_code = COALESCE(o.column4, reason_code), reason = COALESCE(o.column5, reason), \
             upstream_status = o.column6, latency_ms = o.column7, outcome_chain = o.column8, \
             outcome_seq = o.column9, outcome_hash = o.column10, outcome_entry = o.column11 \
             FROM (VALUES ",
        );
        sql.push_str(&outcome_values(
            chunk.iter().map(|(o, _)| o.latency_ms.is_some()),
            params,
        ));
        sql.push_str(
            ") AS o WHERE audit_events.call_id = o.column1 AND audit_events.completed_at IS NULL \
             RETURNING audit_events.call_id",
        );
        let mut statement = Statement::new(sql).returning();
        for (o, placed) in chunk {
            statement = statement
                .bind(&o.call_id)
                .bind(&o.at)
                .bind(o.decision.as_str())
                .bind(&o.reason_code)
                .bind(&o.reason)
                .bind(&o.upstream_status);
            if let Some(latency_ms) = o.latency_ms {
                statement = statement.bind(latency_ms);
            }
            statement = statement
                .bind(chain)
                .bind(placed.seq)
                .bind(hex::encode(placed.hash))
                .bind(&placed.entry);
        }
        plan.push(statement);
    }
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
