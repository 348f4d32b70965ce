//! `gateway_my_activity`: a person asks, from their AI client, what was done
//! in their name — their own audit rows (subject = them), delegated calls
//! with the flow that drove them — and never anyone else's. Answered by the
//! gateway itself, through the pipeline's front door, and audited like any
//! call. The rows hold no argument values (only their digest).

use std::sync::Arc;

use rmcp::model::{CallToolResult, ContentBlock, JsonObject, Tool, ToolAnnotations};
use serde_json::{Value, json};

use crate::audit::{AuditFilter, AuditLog};
use crate::domain::{Reason, Refusal};
use crate::principal::Principal;

pub const TOOL: &str = "gateway_my_activity";

const DEFAULT_LIMIT: i64 = 50;
const MAX_LIMIT: i64 = 200;

pub fn tool() -> Tool {
    let Value::Object(schema) = json!({
        "type": "object",
        "properties": {
            "since": {"type": "string", "description": "only calls since then: RFC 3339 (2026-12-01T00:00:00Z) or a duration ago (24h, 7d)"},
            "service": {"type": "string", "description": "only calls to this service"},
            "actor": {"type": "string", "description": "only calls driven by this client or flow (e.g. windmill:prod/finance/f/finance/nightly)"},
            "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "description": "most recent rows (default 50)"}
        }
    }) else {
        unreachable!("a JSON object literal")
    };
    Tool::new(
        TOOL,
        "What was done in your name: your own calls, and those workflows made for you (with the flow that drove them), newest last.",
        Arc::new(schema),
    )
    .with_annotations(ToolAnnotations::new().read_only(true))
}

/// One `gateway_my_activity` call (the pipeline audits it).
pub async fn run(
    audit: &AuditLog,
    principal: &Principal,
    arguments: &JsonObject,
) -> Result<CallToolResult, Refusal> {
    if !principal.kind().is_interactive() {
        return Err(Refusal::new(
            Reason::ActivityNotForWorkflows,
            "only a person reads what was done in their name",
        ));
    }
    let text = |key: &str| -> Result<Option<String>, Refusal> {
        match arguments.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.trim().to_owned())),
            Some(_) => Err(Refusal::new(
                Reason::InvalidArguments,
                format!("{key}: a non-empty string"),
            )),
        }
    };
    let limit = match arguments.get("limit") {
        None | Some(Value::Null) => DEFAULT_LIMIT,
        Some(v) => v
            .as_i64()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                Refusal::new(
                    Reason::InvalidArguments,
                    format!("limit: an integer from 1 to {MAX_LIMIT}"),
                )
            })?,
    };
    let since = text("since")?.map(|s| since_of(&s)).transpose()?;
    let filter = AuditFilter {
        subject: Some(principal.subject.clone()),
        since,
        service: text("service")?,
        actor: text("actor")?,
        limit,
        ..Default::default()
    };
    let rows = audit.rows(&filter).await.map_err(|e| {
        tracing::error!(error = %e, "activity: store");
        Refusal::new(Reason::AuditUnavailable, "the audit log cannot be read now")
    })?;
    let calls: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "at": r.at,
                "actor": r.actor,
                "delegated": r.grant_id.is_some(),
                "service": r.service,
                "tool": r.tool,
                "action": r.action,
                "risk": r.risk.map(|risk| risk.as_str()),
                "decision": r.decision,
                "reason_code": r.reason_code,
                "upstream_status": r.upstream_status,
                "grant_id": r.grant_id,
                "job_id": r.job_id,
            })
        })
        .collect();
    let answer = json!({ "subject": principal.subject, "calls": calls });
    let mut result = CallToolResult::success(vec![ContentBlock::text(answer.to_string())]);
    result.structured_content = Some(answer);
    Ok(result)
}

/// `since` as an RFC 3339 instant: given as one, or as a duration ago.
fn since_of(text: &str) -> Result<String, Refusal> {
    if time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).is_ok() {
        return Ok(text.to_owned());
    }
    let ago = humantime::parse_duration(text).map_err(|_| {
        Refusal::new(
            Reason::InvalidArguments,
            format!("since: '{text}' is neither RFC 3339 nor a duration (24h, 7d)"),
        )
    })?;
    let at = time::OffsetDateTime::now_utc() - ago;
    Ok(actors::format_rfc3339(at))
}
