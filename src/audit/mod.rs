//! The audit log, as the rest of the gateway uses it: [`AuditLog`] writes
//! (a write-ahead decision, its outcome, or one complete refusal row) through
//! the audit writer actor; [`query`] reads. Every refusal anywhere — a tool
//! call, a 401, an admin API or connect-page refusal, a token exchange — is
//! written through [`AuditLog::refusal`] or [`AuditLog::refuse`]. The log is
//! tamper-evident (a signed hash chain, see `actors::audit_chain`):
//! [`verify`] checks it, [`records`] exports it, [`retention`] prunes it.

pub mod query;
pub mod records;
pub mod retention;
pub mod verify;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use actors::audit::{self, AuditMsg, AuditWrite};
pub use actors::audit::{AuditDecision, AuditOutcome, Decision};
use actors::session::ClientInfo;
use ractor::ActorRef;
use rmcp::model::JsonObject;
use serde_json::Value;
use sha2::{Digest, Sha256};
use supervision::Registry;

pub use query::{AuditFilter, AuditRow, calls_per_grant, per_minute, query};

use actors::audit_chain::CheckpointKey;

use crate::config::audit::AuditConfig;
use crate::domain::{Reason, Refusal};
use crate::keys::MasterKey;
use crate::stats::Stats;

/// The audit writer's key in the supervision registry.
pub const WRITER_KEY: &str = "audit";

/// Who did what, before any decision: the start of every audit row.
pub struct RowStart<'a> {
    pub subject: &'a str,
    pub actor: &'a str,
    pub session: Option<String>,
    pub client: &'a ClientInfo,
    pub tool: &'a str,
    pub arguments: &'a JsonObject,
}

impl RowStart<'_> {
    /// A fresh row (decision `allowed` until a stage says otherwise).
    pub fn row(self) -> AuditDecision {
        AuditDecision {
            call_id: new_call_id(),
            at: actors::now_rfc3339(),
            subject: self.subject.to_owned(),
            actor: self.actor.to_owned(),
            session: self.session,
            client_name: self.client.name.clone(),
            client_version: self.client.version.clone(),
            service: None,
            tool: self.tool.to_owned(),
            action: None,
            risk: None,
            decision: Decision::Allowed,
            reason_code: None,
            reason: None,
            args_sha256: canonical_digest(self.arguments),
            grant_id: None,
            job_id: None,
            pii_rehydrated: None,
            pii_types: None,
            completed: false,
        }
    }
}

pub fn new_call_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// SHA-256 of the arguments in canonical form (keys sorted, no whitespace).
pub fn canonical_digest(arguments: &JsonObject) -> String {
    fn write(value: &Value, out: &mut String) {
        match value {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                out.push('{');
                for (i, key) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(key.clone()).to_string());
                    out.push(':');
                    write(&map[key], out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(item, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut text = String::new();
    write(&Value::Object(arguments.clone()), &mut text);
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The key that signs this gateway's audit checkpoints: derived from the
/// master key, so every gateway sharing a store (and so a key) signs alike,
/// and rotating the master key rotates it.
pub fn checkpoint_key(master: &MasterKey, config: &AuditConfig) -> CheckpointKey {
    CheckpointKey::from_seed(
        &config.key_name(),
        master.derive("audit checkpoint signing v1"),
    )
}

/// The keys that check this log's checkpoints: the current master key's,
/// and the previous one's after a rotation (`MCPGATE_KEY_PREVIOUS`).
pub fn checkpoint_verifiers(
    master: &MasterKey,
    config: &AuditConfig,
) -> Result<Vec<actors::audit_chain::VerifierKey>, String> {
    let mut keys = vec![checkpoint_key(master, config).verifier()];
    if let Ok(previous) = std::env::var("MCPGATE_KEY_PREVIOUS") {
        let previous =
            MasterKey::from_hex(&previous).map_err(|e| format!("MCPGATE_KEY_PREVIOUS: {e}"))?;
        keys.push(checkpoint_key(&previous, config).verifier());
    }
    Ok(keys)
}

/// Complete the rows of calls that can no longer be running: allowed,
/// written ahead, and never completed because the gateway stopped before the
/// answer (a crash, `kill -9`). With `started_before`, only rows older than
/// that (other gateways on a shared store may still be running younger
/// calls); without it, every incomplete row (one gateway, at its start). The
/// writer does it, so each completion is an entry of its chain.
/// Returns how many rows were completed.
pub async fn mark_interrupted(
    writer: &ActorRef<AuditMsg>,
    started_before: Option<String>,
) -> Result<u64, String> {
    match writer
        .call(
            |reply| AuditMsg::CompleteInterrupted(started_before, reply),
            None,
        )
        .await
    {
        Ok(ractor::rpc::CallResult::Success(result)) => result.map_err(|e| e.to_string()),
        _ => Err("the audit writer is not running".into()),
    }
}

/// The gateway's handle on its audit log. Cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    registry: Registry,
    stats: Arc<Stats>,
    pool: crate::storage::Db,
}

impl AuditLog {
    pub fn new(registry: Registry, stats: Arc<Stats>, pool: crate::storage::Db) -> Self {
        Self {
            registry,
            stats,
            pool,
        }
    }

    /// Rows of the log, newest last.
    pub async fn rows(&self, filter: &AuditFilter) -> Result<Vec<AuditRow>, sqlx::Error> {
        query(&self.pool, filter).await
    }

    /// The writer, unless it is restarting.
    pub fn writer(&self) -> Option<ActorRef<AuditMsg>> {
        self.registry.get(WRITER_KEY)
    }

    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Durably write one entry; `Err` says why it could not be.
    async fn write(&self, entry: AuditWrite) -> Result<(), String> {
        let writer = self
            .writer()
            .ok_or_else(|| "the audit writer is restarting".to_string())?;
        audit::write(&writer, entry)
            .await
            .map_err(|e| e.to_string())
    }

    /// Write `row` as it is: the write-ahead decision of an allowed call, or a
    /// complete row. Nothing may run or be answered unless this succeeds.
    pub async fn decision(&self, row: AuditDecision) -> Result<(), Refusal> {
        self.write(AuditWrite::Decision(Box::new(row)))
            .await
            .map_err(|e| Refusal::new(Reason::AuditUnavailable, e))
    }

    /// Complete an allowed call's row with what happened.
    pub async fn outcome(&self, outcome: AuditOutcome) -> Result<(), Refusal> {
        self.write(AuditWrite::Outcome(outcome))
            .await
            .map_err(|e| {
                Refusal::new(
                    Reason::AuditUnavailable,
                    format!(
                        "the call ran but its outcome could not be recorded, so its result is withheld: {e}"
                    ),
                )
            })
    }

    /// Record `refusal` as one complete `refused` row and hand it back for
    /// the caller — or, if even that cannot be recorded, say so instead.
    pub async fn refusal(&self, row: AuditDecision, refusal: Refusal) -> Refusal {
        match self.record_refusal(row, &refusal).await {
            Ok(()) => refusal,
            Err(unrecorded) => unrecorded,
        }
    }

    /// Write one complete `refused` row naming `refusal`'s reason.
    pub async fn record_refusal(
        &self,
        mut row: AuditDecision,
        refusal: &Refusal,
    ) -> Result<(), Refusal> {
        row.decision = Decision::Refused;
        row.reason_code = Some(refusal.code().into());
        row.reason = Some(refusal.message.clone());
        row.completed = true;
        self.stats.refused.fetch_add(1, Ordering::Relaxed);
        self.write(AuditWrite::Decision(Box::new(row)))
            .await
            .map_err(|e| {
                tracing::error!(reason = refusal.code(), error = %e, "refusal could not be audited");
                Refusal::new(
                    Reason::AuditUnavailable,
                    format!(
                        "{} (and the refusal could not be recorded: {e})",
                        refusal.message
                    ),
                )
            })
    }

    /// The decision row is already written (allowed): complete it as refused.
    pub async fn refusal_after_write_ahead(
        &self,
        row: &AuditDecision,
        started: Instant,
        refusal: Refusal,
        upstream_status: &str,
    ) -> Refusal {
        let outcome = AuditOutcome {
            call_id: row.call_id.clone(),
            at: actors::now_rfc3339(),
            decision: Decision::Refused,
            reason_code: Some(refusal.code().into()),
            reason: Some(refusal.message.clone()),
            upstream_status: upstream_status.into(),
            latency_ms: Some(started.elapsed().as_secs_f64() * 1000.0),
        };
        self.stats.refused.fetch_add(1, Ordering::Relaxed);
        match self.write(AuditWrite::Outcome(outcome)).await {
            Ok(()) => refusal,
            Err(e) => Refusal::new(
                Reason::AuditUnavailable,
                format!(
                    "{} (and the refusal could not be recorded: {e})",
                    refusal.message
                ),
            ),
        }
    }

    /// A refusal at an HTTP edge (401s, the admin API, connect pages): one
    /// complete row naming who was refused, on what, and why.
    pub async fn refuse(
        &self,
        subject: &str,
        session: Option<String>,
        tool: &str,
        refusal: Refusal,
    ) -> Refusal {
        let row = RowStart {
            subject,
            actor: subject,
            session,
            client: &ClientInfo::default(),
            tool,
            arguments: &JsonObject::new(),
        }
        .row();
        self.refusal(row, refusal).await
    }
}
