//! Reading the audit log (`mcpgate audit query`).

use serde::Serialize;
use sqlx::Row;

use crate::storage::Db;

#[derive(Debug, Clone, Serialize)]
pub struct AuditRow {
    pub id: i64,
    pub call_id: String,
    pub started_at: String,
    pub completed_at: Option<String>,
    pub subject: String,
    pub actor: String,
    pub session: Option<String>,
    pub client_name: Option<String>,
    pub client_version: Option<String>,
    pub service: Option<String>,
    pub tool: String,
    pub action: Option<String>,
    pub risk: Option<String>,
    pub decision: String,
    pub reason_code: Option<String>,
    pub reason: Option<String>,
    pub upstream_status: Option<String>,
    pub latency_ms: Option<f64>,
    pub args_sha256: String,
    pub grant_id: Option<String>,
    pub job_id: Option<String>,
    pub pii_rehydrated: Option<i64>,
    pub pii_types: Option<String>,
}

#[derive(Debug, Default, Clone)]
pub struct AuditFilter {
    pub subject: Option<String>,
    /// RFC 3339 lower bound on `started_at`.
    pub since: Option<String>,
    pub limit: i64,
}

pub async fn query(pool: &Db, filter: &AuditFilter) -> Result<Vec<AuditRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT * FROM audit_events \
         WHERE ($1 IS NULL OR subject = $1) AND ($2 IS NULL OR started_at >= $2) \
         ORDER BY id DESC LIMIT $3",
    )
    .bind(&filter.subject)
    .bind(&filter.since)
    .bind(filter.limit)
    .fetch_all(pool)
    .await?;
    let mut out: Vec<AuditRow> = rows
        .into_iter()
        .map(|r| AuditRow {
            id: r.get("id"),
            call_id: r.get("call_id"),
            started_at: r.get("started_at"),
            completed_at: r.get("completed_at"),
            subject: r.get("subject"),
            actor: r.get("actor"),
            session: r.get("session"),
            client_name: r.get("client_name"),
            client_version: r.get("client_version"),
            service: r.get("service"),
            tool: r.get("tool"),
            action: r.get("action"),
            risk: r.get("risk"),
            decision: r.get("decision"),
            reason_code: r.get("reason_code"),
            reason: r.get("reason"),
            upstream_status: r.get("upstream_status"),
            latency_ms: r.get("latency_ms"),
            args_sha256: r.get("args_sha256"),
            grant_id: r.get("grant_id"),
            job_id: r.get("job_id"),
            pii_rehydrated: r.get("pii_rehydrated"),
            pii_types: r.get("pii_types"),
        })
        .collect();
    out.reverse();
    Ok(out)
}
