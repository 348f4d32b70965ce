//! Reading the audit log (`mcpgate audit query`).

use std::ops::Deref;

use actors::audit::{AuditDecision, Decision};
use actors::risk::Risk;
use serde::Serialize;
use sqlx::Row;

use crate::storage::Db;

/// A stored row: the decision as it was written (its one definition is
/// [`AuditDecision`]; the fields read through), and how the call completed.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRow {
    pub id: i64,
    #[serde(flatten)]
    pub entry: AuditDecision,
    pub completed_at: Option<String>,
    pub upstream_status: Option<String>,
    pub latency_ms: Option<f64>,
}

impl Deref for AuditRow {
    type Target = AuditDecision;

    fn deref(&self) -> &AuditDecision {
        &self.entry
    }
}

#[derive(Debug, Default, Clone)]
pub struct AuditFilter {
    pub subject: Option<String>,
    /// RFC 3339 lower bound on `started_at`.
    pub since: Option<String>,
    pub service: Option<String>,
    pub actor: Option<String>,
    pub decision: Option<String>,
    pub reason_code: Option<String>,
    pub limit: i64,
}

pub async fn query(pool: &Db, filter: &AuditFilter) -> Result<Vec<AuditRow>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT * FROM audit_events \
         WHERE ($1 IS NULL OR subject = $1) AND ($2 IS NULL OR started_at >= $2) \
         AND ($3 IS NULL OR service = $3) AND ($4 IS NULL OR actor = $4) \
         AND ($5 IS NULL OR decision = $5) AND ($6 IS NULL OR reason_code = $6) \
         ORDER BY id DESC LIMIT $7",
    )
    .bind(&filter.subject)
    .bind(&filter.since)
    .bind(&filter.service)
    .bind(&filter.actor)
    .bind(&filter.decision)
    .bind(&filter.reason_code)
    .bind(filter.limit)
    .fetch_all(pool)
    .await?;
    let mut out = rows
        .into_iter()
        .map(|r| read(&r))
        .collect::<Result<Vec<_>, _>>()?;
    out.reverse();
    Ok(out)
}

fn read(r: &sqlx::any::AnyRow) -> Result<AuditRow, sqlx::Error> {
    let decision: String = r.try_get("decision")?;
    let risk: Option<String> = r.try_get("risk")?;
    let completed_at: Option<String> = r.try_get("completed_at")?;
    Ok(AuditRow {
        id: r.try_get("id")?,
        entry: AuditDecision {
            call_id: r.try_get("call_id")?,
            at: r.try_get("started_at")?,
            subject: r.try_get("subject")?,
            actor: r.try_get("actor")?,
            session: r.try_get("session")?,
            client_name: r.try_get("client_name")?,
            client_version: r.try_get("client_version")?,
            service: r.try_get("service")?,
            tool: r.try_get("tool")?,
            action: r.try_get("action")?,
            risk: risk.as_deref().and_then(Risk::parse),
            decision: Decision::parse(&decision).ok_or_else(|| sqlx::Error::ColumnDecode {
                index: "decision".into(),
                source: format!("unknown decision '{decision}'").into(),
            })?,
            reason_code: r.try_get("reason_code")?,
            reason: r.try_get("reason")?,
            args_sha256: r.try_get("args_sha256")?,
            grant_id: r.try_get("grant_id")?,
            job_id: r.try_get("job_id")?,
            pii_rehydrated: r.try_get("pii_rehydrated")?,
            pii_types: r.try_get("pii_types")?,
            completed: completed_at.is_some(),
        },
        completed_at,
        upstream_status: r.try_get("upstream_status")?,
        latency_ms: r.try_get("latency_ms")?,
    })
}

/// Calls per minute and decision since `since` (RFC 3339): the console's
/// dashboard. Minutes are the first 16 characters of `started_at`.
pub async fn per_minute(pool: &Db, since: &str) -> Result<Vec<(String, String, i64)>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT substr(started_at, 1, 16) AS minute, decision, COUNT(*) AS n FROM audit_events \
         WHERE started_at >= $1 GROUP BY substr(started_at, 1, 16), decision ORDER BY minute",
    )
    .bind(since)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get("minute")?,
                r.try_get("decision")?,
                r.try_get("n")?,
            ))
        })
        .collect()
}

/// Calls made so far under each of `grants` (their exchange not counted).
pub async fn calls_per_grant(
    pool: &Db,
    grants: &[String],
) -> Result<std::collections::BTreeMap<String, i64>, sqlx::Error> {
    if grants.is_empty() {
        return Ok(Default::default());
    }
    let placeholders = crate::storage::parameter_list(pool, grants.len());
    // Only placeholders are spliced in; the ids are bound.
    let sql = format!(
        "SELECT grant_id, COUNT(*) AS n FROM audit_events WHERE grant_id IN ({}) \
         AND tool <> 'oauth/token-exchange' GROUP BY grant_id",
        placeholders
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for id in grants {
        query = query.bind(id);
    }
    query
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| Ok((r.try_get("grant_id")?, r.try_get("n")?)))
        .collect()
}
