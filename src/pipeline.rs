//! The governance pipeline: every `tools/call` passes [`run`], in this order:
//!
//! 1. resolve subject/actor and scope (the principal, or its delegation grant)
//! 2. resolve the tool to a service and action
//! 3. classify the action's risk (catalog/annotations, overrides, then the
//!    arguments: `classify.rs`); the read-only switch
//! 4. authorize against the caller's access (under a grant: its actor)
//! 5. validate arguments against the action's own schema
//! 6. company pre-hooks, then the subject's own (`hooks/`)
//! 7. write-safety: confirmation by the human (elicitation, `input_required`,
//!    or a token bound to this exact call); PII rehydration of arguments
//! 8. write-ahead audit: the decision is durable before anything runs
//! 9. connector hand-off (inside the grant's gate when delegated), then its answer
//! 10. post-hooks; PII pseudonymization of the result
//! 11. audit outcome, then the answer
//!
//! A stage that refuses ends the call with a [`CallError`] and an audit row
//! naming the reason. If the audit store cannot write, nothing runs.

use std::time::Instant;

use actors::audit::{self, AuditDecision, AuditOutcome, AuditWrite, Decision};
use actors::connector::{self, ConnectorError};
use actors::grant::Risk;
use actors::session::{ClientInfo, SessionTicket};
use rmcp::ErrorData as McpError;
use rmcp::model::{CallToolResult, ErrorCode, JsonObject, ResultType};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::catalog::{Surface, parse_tool_name};
use crate::config::glob_match;
use crate::gateway::Gateway;
use crate::principal::Principal;
use crate::write_safety;

/// JSON-RPC error codes of the gateway (in the implementation-defined range).
pub const CODE_REFUSED: i32 = -32001;
pub const CODE_UPSTREAM: i32 = -32002;
pub const CODE_AUDIT: i32 = -32003;
pub const CODE_UNAVAILABLE: i32 = -32004;

pub struct CallRequest<'a> {
    pub principal: &'a Principal,
    pub session: &'a SessionTicket,
    pub tool: &'a str,
    pub arguments: JsonObject,
    /// The client, when it can be asked through MCP elicitation (form mode,
    /// initialize-era protocol). Otherwise confirmation takes two calls.
    pub elicitor: Option<rmcp::Peer<rmcp::RoleServer>>,
    /// For 2026-07-28 clients: the multi-round-trip state of this call.
    pub round_trip: Option<RoundTrip>,
}

/// A 2026-07-28 call's round trip: whether the client can answer an
/// elicitation, and what it sent back from the previous round.
#[derive(Debug, Clone, Default)]
pub struct RoundTrip {
    pub can_ask: bool,
    pub responses: Option<rmcp::model::InputResponses>,
    pub request_state: Option<String>,
}

/// The key of the confirmation question in `inputRequests`.
const CONFIRM_INPUT: &str = "confirm";

/// How long the gateway waits for the human to answer an elicitation.
const ELICITATION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);

/// Why a call did not produce an answer. `code` is stable and machine-readable.
#[derive(Debug, Clone, PartialEq)]
pub struct CallError {
    pub code: &'static str,
    pub message: String,
    pub jsonrpc_code: i32,
}

impl CallError {
    pub(crate) fn invalid(code: &'static str, message: String) -> Self {
        Self {
            code,
            message,
            jsonrpc_code: ErrorCode::INVALID_PARAMS.0,
        }
    }
    fn refused(code: &'static str, message: String) -> Self {
        Self {
            code,
            message,
            jsonrpc_code: CODE_REFUSED,
        }
    }
    pub fn unavailable(code: &'static str, message: String) -> Self {
        Self {
            code,
            message,
            jsonrpc_code: CODE_UNAVAILABLE,
        }
    }
    fn audit(message: String) -> Self {
        Self {
            code: "audit_unavailable",
            message,
            jsonrpc_code: CODE_AUDIT,
        }
    }

    pub fn into_mcp(self) -> McpError {
        McpError::new(
            ErrorCode(self.jsonrpc_code),
            self.message,
            Some(json!({ "reason": self.code })),
        )
    }
}

/// What the earlier stages established about the call.
struct Resolved {
    service: String,
    action: String,
    risk: Risk,
    upstream_arguments: JsonObject,
}

/// The prefix of a gateway confirmation token in a `confirm` argument. Only
/// such a value is taken as ours; an upstream's own `confirm` argument passes.
const CONFIRM_ARG: &str = "confirm";
const CONFIRM_TOKEN_PREFIX: &str = "mgc1.";

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

/// Who did what, before any decision: the start of every audit row.
pub struct RowStart<'a> {
    pub subject: &'a str,
    pub actor: &'a str,
    pub session: Option<String>,
    pub client: &'a ClientInfo,
    pub tool: &'a str,
    pub arguments: &'a JsonObject,
}

/// A fresh audit row (decision `allowed` until a stage says otherwise).
pub fn audit_row(start: RowStart<'_>) -> AuditDecision {
    AuditDecision {
        call_id: new_call_id(),
        at: actors::now_rfc3339(),
        subject: start.subject.to_owned(),
        actor: start.actor.to_owned(),
        session: start.session,
        client_name: start.client.name.clone(),
        client_version: start.client.version.clone(),
        service: None,
        tool: start.tool.to_owned(),
        action: None,
        risk: None,
        decision: Decision::Allowed,
        reason_code: None,
        reason: None,
        args_sha256: canonical_digest(start.arguments),
        grant_id: None,
        job_id: None,
        pii_rehydrated: None,
        pii_types: None,
        completed: false,
    }
}

pub fn new_call_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// Run one tool call through the whole pipeline.
pub async fn run(
    gw: &Gateway,
    mut request: CallRequest<'_>,
) -> Result<rmcp::model::CallToolResponse, CallError> {
    let started = Instant::now();
    let confirmation = match request.arguments.get(CONFIRM_ARG) {
        Some(Value::String(token)) if token.starts_with(CONFIRM_TOKEN_PREFIX) => {
            let token = token.clone();
            request.arguments.remove(CONFIRM_ARG);
            Some(token)
        }
        _ => None,
    };
    let mut row = audit_row(RowStart {
        subject: &request.principal.subject,
        actor: &request.principal.actor,
        session: Some(request.session.key.clone()),
        client: &request.session.client,
        tool: request.tool,
        arguments: &request.arguments,
    });
    if let Some(grant) = &request.principal.grant {
        row.grant_id = Some(grant.scope.grant_id.clone());
        row.job_id = grant.scope.job_id.clone();
    }

    if gw.is_draining() {
        let error = CallError::unavailable("shutting_down", "the gateway is shutting down".into());
        return Err(refuse(gw, row, error).await);
    }
    let mut resolved = match resolve_and_authorize(gw, &request, &mut row) {
        Ok(resolved) => resolved,
        Err(error) => return Err(refuse(gw, row, error).await),
    };
    if let Some(grant) = &request.principal.grant
        && let Err(error) = authorize_under_grant(grant, &resolved).await
    {
        return Err(refuse(gw, row, error).await);
    }
    // Company pre-hooks, then the subject's own: they may refuse, rewrite
    // arguments, or ask for the human's confirmation.
    let hooks = gw.hooks.current();
    let risk_text = resolved.risk.as_str();
    let facts = crate::hooks::CallFacts {
        tool: request.tool,
        service: &resolved.service,
        action: &resolved.action,
        risk: risk_text,
        subject: &request.principal.subject,
        actor: &request.principal.actor,
    };
    let pre = match hooks.run_pre(&facts, &mut resolved.upstream_arguments, gw.hooks.budget) {
        Ok(pre) => pre,
        Err(refusal) => {
            let error = CallError::refused(refusal.code, refusal.message);
            return Err(refuse(gw, row, error).await);
        }
    };
    let hook_confirmation = pre.confirm.as_deref();
    match confirm_if_needed(
        gw,
        &request,
        &resolved,
        confirmation.as_deref(),
        hook_confirmation,
        &row,
    )
    .await
    {
        Ok(Confirmed::Proceed) => {}
        Ok(Confirmed::AskFirst(preview)) => {
            let ask = CallError::refused(
                "confirmation_required",
                "not run: waiting for the human's confirmation".into(),
            );
            return match record_refusal(gw, row, &ask).await {
                Ok(()) => Ok(preview.into()),
                Err(error) => Err(error),
            };
        }
        Ok(Confirmed::InputRequired(question)) => {
            let ask = CallError::refused(
                "confirmation_required",
                "not run: asked the human (input_required)".into(),
            );
            return match record_refusal(gw, row, &ask).await {
                Ok(()) => Ok((*question).into()),
                Err(error) => Err(error),
            };
        }
        Err(error) => return Err(refuse(gw, row, error).await),
    }
    // Pseudonyms in the arguments become the real values again — only this
    // subject's own; anything else is refused.
    match gw
        .pii
        .rehydrate(
            &request.principal.subject,
            &resolved.service,
            &mut resolved.upstream_arguments,
        )
        .await
    {
        Ok(counts) if counts.total() > 0 => {
            row.pii_rehydrated = Some(counts.total() as i64);
            row.pii_types = Some(counts.types());
        }
        Ok(_) => {}
        Err(refusal) => {
            let error = CallError::refused(refusal.code, refusal.message);
            return Err(refuse(gw, row, error).await);
        }
    }

    // Write-ahead: the attempt is on record before the upstream sees it.
    record(gw, AuditWrite::Decision(Box::new(row.clone())))
        .await
        .map_err(CallError::audit)?;

    let outcome = match gw.connector(&resolved.service) {
        Some(connector) => {
            let deadline = gw
                .config
                .services
                .get(&resolved.service)
                .and_then(|s| s.call_timeout)
                .unwrap_or(gw.config.limits.call_timeout)
                // Margin over the connector's own timeout, which answers first.
                + std::time::Duration::from_secs(1);
            // Under a grant, the hand-off happens inside its gate: once a
            // revocation is acknowledged, no call of the grant gets here.
            let admission = match &request.principal.grant {
                Some(grant) => match grant.gate.admit().await {
                    Ok(admission) => Some(admission),
                    Err(reason) => {
                        let error = CallError::refused(
                            crate::delegation::grants::end_reason_code(&reason),
                            format!("grant {} has ended: {reason}", grant.scope.grant_id),
                        );
                        return Err(refuse_after_write_ahead(
                            gw,
                            &row,
                            started,
                            error,
                            "not_called",
                        )
                        .await);
                    }
                },
                None => None,
            };
            // A person in their own client, not a workflow acting for them.
            let interactive =
                request.principal.grant.is_none() && !request.principal.user.service_account;
            let pending = connector::dispatch(
                &connector,
                &resolved.service,
                &request.principal.subject,
                interactive,
                resolved.action.clone(),
                Some(resolved.upstream_arguments.clone()),
                deadline,
            );
            drop(admission);
            match pending {
                Ok(pending) => pending.answer().await,
                Err(error) => Err(error),
            }
        }
        None => Err(ConnectorError::Unavailable(resolved.service.clone())),
    };
    // Post-hooks (caps, withholding, warnings) see what the upstream answered.
    let outcome = match outcome {
        Ok(mut result) => {
            let facts = crate::hooks::CallFacts {
                tool: request.tool,
                service: &resolved.service,
                action: &resolved.action,
                risk: resolved.risk.as_str(),
                subject: &request.principal.subject,
                actor: &request.principal.actor,
            };
            match hooks.run_post(
                &facts,
                &resolved.upstream_arguments,
                &mut result,
                gw.hooks.budget,
            ) {
                Ok(()) => {
                    for warning in &pre.warnings {
                        result.content.push(rmcp::model::ContentBlock::text(format!(
                            "Warning: {warning}"
                        )));
                    }
                    Ok(result)
                }
                Err(refusal) => {
                    // The upstream ran; its answer does not go out.
                    let error = CallError::refused(refusal.code, refusal.message);
                    return Err(
                        refuse_after_write_ahead(gw, &row, started, error, "withheld").await,
                    );
                }
            }
        }
        Err(error) => Err(error),
    };
    // Personal data in the answer is pseudonymized before the model sees it;
    // if that fails, the answer is withheld.
    let outcome = match outcome {
        Ok(mut result) => {
            match gw
                .pii
                .pseudonymize(&request.principal.subject, &resolved.service, &mut result)
                .await
            {
                Ok(_) => Ok(result),
                Err(refusal) => {
                    tracing::error!(service = %resolved.service, reason = refusal.code, "PII scan failed: result withheld");
                    let error = CallError::refused(refusal.code, refusal.message);
                    return Err(
                        refuse_after_write_ahead(gw, &row, started, error, "withheld").await,
                    );
                }
            }
        }
        Err(error) => Err(error),
    };

    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let (completion, answer) = match outcome {
        Ok(mut result) => {
            // A legacy upstream omits `resultType`; 2026-07-28 clients require it.
            result.result_type = Some(ResultType::COMPLETE);
            let status = if result.is_error == Some(true) {
                "tool_error"
            } else {
                "ok"
            };
            (
                AuditOutcome {
                    call_id: row.call_id.clone(),
                    at: actors::now_rfc3339(),
                    decision: Decision::Allowed,
                    reason_code: None,
                    reason: None,
                    upstream_status: status.into(),
                    latency_ms,
                },
                Ok(result),
            )
        }
        Err(error) => {
            let status = match &error {
                ConnectorError::Upstream { code, .. } => format!("error {code}"),
                other => other.code().to_owned(),
            };
            let message = format!("service '{}' failed: {error}", resolved.service);
            (
                AuditOutcome {
                    call_id: row.call_id.clone(),
                    at: actors::now_rfc3339(),
                    decision: Decision::Failed,
                    reason_code: Some(error.code().into()),
                    reason: Some(message.clone()),
                    upstream_status: status,
                    latency_ms,
                },
                Err(CallError {
                    code: error.code(),
                    message,
                    jsonrpc_code: CODE_UPSTREAM,
                }),
            )
        }
    };
    let failed = answer.is_err();
    record(gw, AuditWrite::Outcome(completion))
        .await
        .map_err(|e| {
            CallError::audit(format!(
                "the call ran but its outcome could not be recorded, so its result is withheld: {e}"
            ))
        })?;
    let counter = if failed {
        &gw.stats.failed
    } else {
        &gw.stats.allowed
    };
    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    answer.map(Into::into)
}

fn resolve_and_authorize(
    gw: &Gateway,
    request: &CallRequest<'_>,
    row: &mut AuditDecision,
) -> Result<Resolved, CallError> {
    let (service, surface) = parse_tool_name(request.tool)
        .filter(|(service, _)| gw.config.services.contains_key(*service))
        .ok_or_else(|| {
            CallError::invalid(
                "unknown_tool",
                format!("there is no tool '{}'", request.tool),
            )
        })?;
    row.service = Some(service.to_owned());
    // Under a grant the grant's actor decides (with precise reasons), below.
    let allowed = match &request.principal.grant {
        Some(_) => Some(Risk::HighRisk),
        None => request.principal.access_to(service),
    };
    let Some(allowed) = allowed else {
        // Indistinguishable from a missing service for the caller, but audited precisely.
        return Err(CallError::refused(
            "service_not_allowed",
            format!(
                "{} has no access to service '{service}'",
                request.principal.subject
            ),
        ));
    };
    let catalog = gw.catalog(service).ok_or_else(|| {
        CallError::unavailable(
            "upstream_unavailable",
            format!(
                "service '{service}' is not connected yet (starting or restarting); retry shortly"
            ),
        )
    })?;
    let mut arguments = request.arguments.clone();
    let action_name = match &surface {
        Surface::Direct(tool) => {
            if catalog.expose != crate::config::Expose::Tools {
                return Err(CallError::invalid(
                    "unknown_tool",
                    format!("there is no tool '{}'", request.tool),
                ));
            }
            tool.clone()
        }
        Surface::ReadActions | Surface::WriteActions => {
            if catalog.expose != crate::config::Expose::Actions {
                return Err(CallError::invalid(
                    "unknown_tool",
                    format!("there is no tool '{}'", request.tool),
                ));
            }
            match arguments.remove("action") {
                Some(Value::String(action)) => action,
                Some(_) => {
                    return Err(CallError::invalid(
                        "invalid_arguments",
                        "action: must be a string".into(),
                    ));
                }
                None => {
                    return Err(CallError::invalid(
                        "invalid_arguments",
                        format!(
                            "action: required; one of the actions listed in '{}'",
                            request.tool
                        ),
                    ));
                }
            }
        }
    };
    row.action = Some(action_name.clone());
    let action = catalog.actions.get(&action_name).ok_or_else(|| {
        CallError::invalid(
            "unknown_action",
            format!("action: '{action_name}' is not an action of service '{service}'"),
        )
    })?;
    // What a catalog says an action's arguments make it (SQL statements)
    // counts before the tool check: DML/DDL never runs through
    // `<svc>_read_actions`, and can run through `<svc>_write_actions`.
    let (risk, catalog_raised) = crate::classify::classify(
        &gw.catalog_rules,
        service,
        &action_name,
        &arguments,
        action.risk,
    );
    row.risk = Some(risk.as_str().into());
    match (&surface, risk) {
        (Surface::ReadActions, Risk::Write | Risk::HighRisk) => {
            return Err(CallError::invalid(
                "wrong_tool",
                format!(
                    "action: '{action_name}' is a {risk} action{}; call {service}_write_actions",
                    catalog_raised
                        .as_deref()
                        .map(|why| format!(" ({why})"))
                        .unwrap_or_default()
                ),
            ));
        }
        (Surface::WriteActions, Risk::Read) => {
            return Err(CallError::invalid(
                "wrong_tool",
                format!("action: '{action_name}' is a read action; call {service}_read_actions"),
            ));
        }
        _ => {}
    }
    // Where the endpoint alone lies, the arguments decide (only ever upward).
    let (risk, raised_by) = crate::classify::classify(
        &gw.config.policy.classify,
        service,
        &action_name,
        &arguments,
        risk,
    );
    let raised_by = raised_by.or(catalog_raised);
    row.risk = Some(risk.as_str().into());
    let because = raised_by
        .as_deref()
        .map(|why| format!(" ({why})"))
        .unwrap_or_default();
    if gw.config.policy.read_only && risk != Risk::Read {
        return Err(CallError::refused(
            "read_only_mode",
            format!("the gateway is read-only; '{action_name}' is a {risk} action{because}"),
        ));
    }
    if risk > allowed {
        return Err(CallError::refused(
            "risk_not_allowed",
            format!(
                "{} may use {service} up to {allowed}; '{action_name}' is {risk}{because}",
                request.principal.subject
            ),
        ));
    }
    action.validate(&arguments).map_err(|problem| {
        CallError::invalid("invalid_arguments", format!("{action_name}: {problem}"))
    })?;
    Ok(Resolved {
        service: service.to_owned(),
        action: action_name,
        risk,
        upstream_arguments: arguments,
    })
}

/// The audit row of a tool the gateway answers itself (discovery, a user's
/// own hooks): one complete row, no upstream.
pub fn local_row(
    principal: &Principal,
    session: &SessionTicket,
    tool: &str,
    arguments: &JsonObject,
) -> AuditDecision {
    let mut row = audit_row(RowStart {
        subject: &principal.subject,
        actor: &principal.actor,
        session: Some(session.key.clone()),
        client: &session.client,
        tool,
        arguments,
    });
    row.completed = true;
    row
}

/// Record a gateway-answered call's row and pass its outcome on: allowed if
/// it succeeded (nothing is answered unless that row is durable), refused
/// with its reason otherwise.
pub async fn finish_local(
    gw: &Gateway,
    row: AuditDecision,
    outcome: Result<CallToolResult, CallError>,
) -> Result<CallToolResult, CallError> {
    match outcome {
        Ok(result) => {
            record(gw, AuditWrite::Decision(Box::new(row)))
                .await
                .map_err(|e| CallError::unavailable("audit_unavailable", e))?;
            Ok(result)
        }
        Err(error) => Err(refuse(gw, row, error).await),
    }
}

/// Record a refusal (one complete row) and return the error for the caller.
/// If even the refusal cannot be recorded, the caller learns that too.
pub async fn refuse(gw: &Gateway, row: AuditDecision, error: CallError) -> CallError {
    match record_refusal(gw, row, &error).await {
        Ok(()) => error,
        Err(unrecorded) => unrecorded,
    }
}

/// Write one complete `refused` row naming `error`'s reason.
async fn record_refusal(
    gw: &Gateway,
    mut row: AuditDecision,
    error: &CallError,
) -> Result<(), CallError> {
    row.decision = Decision::Refused;
    row.reason_code = Some(error.code.into());
    row.reason = Some(error.message.clone());
    row.completed = true;
    gw.stats
        .refused
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    record(gw, AuditWrite::Decision(Box::new(row)))
        .await
        .map_err(|e| {
            tracing::error!(reason = error.code, error = %e, "refusal could not be audited");
            CallError::audit(format!(
                "{} (and the refusal could not be recorded: {e})",
                error.message
            ))
        })
}

/// Ask the grant's actor; a grant that is gone refuses with its end reason.
async fn authorize_under_grant(
    grant: &crate::delegation::grants::LiveGrant,
    resolved: &Resolved,
) -> Result<(), CallError> {
    let service = resolved.service.clone();
    let risk = resolved.risk;
    let answer = grant
        .actor
        .call(
            |reply| actors::grant::GrantMsg::Authorize {
                service,
                risk,
                reply,
            },
            Some(std::time::Duration::from_secs(10)),
        )
        .await;
    match answer {
        Ok(ractor::rpc::CallResult::Success(Ok(_))) => Ok(()),
        Ok(ractor::rpc::CallResult::Success(Err(refusal))) => Err(CallError::refused(
            refusal.code(),
            format!("grant {}: {refusal}", grant.scope.grant_id),
        )),
        _ => {
            let reason = grant
                .gate
                .closed_reason()
                .unwrap_or_else(|| "the grant is no longer active".into());
            Err(CallError::refused(
                crate::delegation::grants::end_reason_code(&reason),
                format!("grant {} has ended: {reason}", grant.scope.grant_id),
            ))
        }
    }
}

/// The decision row is already written (allowed): complete it as refused.
async fn refuse_after_write_ahead(
    gw: &Gateway,
    row: &AuditDecision,
    started: Instant,
    error: CallError,
    upstream_status: &str,
) -> CallError {
    let outcome = AuditOutcome {
        call_id: row.call_id.clone(),
        at: actors::now_rfc3339(),
        decision: Decision::Refused,
        reason_code: Some(error.code.into()),
        reason: Some(error.message.clone()),
        upstream_status: upstream_status.into(),
        latency_ms: started.elapsed().as_secs_f64() * 1000.0,
    };
    gw.stats
        .refused
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    match record(gw, AuditWrite::Outcome(outcome)).await {
        Ok(()) => error,
        Err(e) => CallError::audit(format!(
            "{} (and the refusal could not be recorded: {e})",
            error.message
        )),
    }
}

enum Confirmed {
    Proceed,
    /// Not run: this answer tells the human what would happen, with a token.
    AskFirst(CallToolResult),
    /// Not run: a 2026-07-28 client is asked in the answer; its retry carries
    /// the human's answer and the sealed state.
    InputRequired(Box<rmcp::model::InputRequiredResult>),
}

/// Write-safety: high_risk actions, and writes the operator listed, run only
/// with a valid confirmation token bound to exactly this call.
async fn confirm_if_needed(
    gw: &Gateway,
    request: &CallRequest<'_>,
    resolved: &Resolved,
    token: Option<&str>,
    hook_confirmation: Option<&str>,
    row: &AuditDecision,
) -> Result<Confirmed, CallError> {
    let qualified = format!("{}.{}", resolved.service, resolved.action);
    let needed = hook_confirmation.is_some()
        || resolved.risk == Risk::HighRisk
        || (resolved.risk == Risk::Write
            && gw
                .config
                .policy
                .confirm
                .iter()
                .any(|p| glob_match(p, &qualified)));
    if !needed {
        return Ok(Confirmed::Proceed);
    }
    // A grant holds high_risk only where an admin approved it for this
    // delegation: that approval is the confirmation a headless job cannot give.
    if request.principal.grant.is_some()
        && resolved.risk == Risk::HighRisk
        && hook_confirmation.is_none()
    {
        return Ok(Confirmed::Proceed);
    }
    let headless = request.principal.user.service_account || request.principal.grant.is_some();
    if headless
        && gw.config.policy.headless_confirm == crate::config::HeadlessConfirm::Allow
        && resolved.risk == Risk::Write
        && hook_confirmation.is_none()
    {
        // The operator lets unattended callers make the writes it listed.
        return Ok(Confirmed::Proceed);
    }
    if headless {
        return Err(CallError::refused(
            "headless_cannot_confirm",
            format!(
                "'{qualified}' ({}) needs a human's confirmation, which a service account cannot give",
                resolved.risk
            ),
        ));
    }
    let binding = write_safety::Binding {
        subject: &request.principal.subject,
        actor: &request.principal.actor,
        tool: request.tool,
        action: &resolved.action,
        args_sha256: &row.args_sha256,
        policy_version: &gw.config.policy_version,
    };
    if let Some(token) = token {
        return write_safety::redeem(&gw.pool, &gw.confirmation_key, token, &binding)
            .await
            .map(|()| Confirmed::Proceed)
            .map_err(|refusal| CallError::refused(refusal.code(), refusal.to_string()));
    }
    let arguments = serde_json::to_string(&resolved.upstream_arguments).unwrap_or_default();
    let summary = format!(
        "mcpgate will run {qualified} ({risk}) as {subject} with arguments {arguments}.",
        risk = resolved.risk,
        subject = request.principal.subject,
    );
    if let Some(round_trip) = &request.round_trip {
        // The retry: the state is our confirmation token, bound to this exact
        // call and single use; the answer must be the human's approval.
        if let Some(state) = &round_trip.request_state {
            write_safety::redeem(&gw.pool, &gw.confirmation_key, state, &binding)
                .await
                .map_err(|refusal| CallError::refused(refusal.code(), refusal.to_string()))?;
            let answer = round_trip
                .responses
                .as_ref()
                .and_then(|r| r.get(CONFIRM_INPUT))
                .cloned()
                .unwrap_or(Value::Null);
            let approved = answer.get("action").and_then(Value::as_str) == Some("accept")
                && answer.pointer("/content/approve").and_then(Value::as_bool) == Some(true);
            return if approved {
                Ok(Confirmed::Proceed)
            } else {
                Err(CallError::refused(
                    "confirmation_declined",
                    "the user did not approve this call".into(),
                ))
            };
        }
        if round_trip.can_ask {
            let ttl = gw.config.policy.confirmation_ttl.as_secs();
            let (state, _) = write_safety::issue(&gw.confirmation_key, &binding, ttl);
            return confirmation_question(&summary, hook_confirmation, state);
        }
    }
    if let Some(peer) = &request.elicitor {
        return ask_through_elicitation(peer, &summary).await;
    }
    let ttl = gw.config.policy.confirmation_ttl.as_secs();
    let (token, expires) = write_safety::issue(&gw.confirmation_key, &binding, ttl);
    let text = format!(
        "Confirmation required — nothing was done.\n\
         If you run it, {summary}\n\
         Ask the user. If they agree, repeat exactly the same call with \"confirm\": \"{token}\" \
         (valid for {ttl} s, once).",
    );
    let mut preview = CallToolResult::success(vec![rmcp::model::ContentBlock::text(text)]);
    preview.structured_content = Some(json!({
        "confirmation_required": true,
        "service": resolved.service,
        "action": resolved.action,
        "risk": resolved.risk.as_str(),
        "confirm": token,
        "expires_at_unix": expires,
    }));
    Ok(Confirmed::AskFirst(preview))
}

/// The 2026-07-28 form of the question: `input_required` with one form
/// elicitation and the confirmation token as the (sealed) `requestState`.
fn confirmation_question(
    summary: &str,
    hook: Option<&str>,
    state: String,
) -> Result<Confirmed, CallError> {
    use rmcp::model::{
        ElicitRequest, ElicitRequestParams, ElicitationSchema, InputRequest, InputRequiredResult,
    };
    let schema = ElicitationSchema::builder()
        .required_bool("approve")
        .build()
        .map_err(|e| CallError::unavailable("confirmation_unavailable", e.to_string()))?;
    let reason = hook.map(|h| format!(" ({h})")).unwrap_or_default();
    let question = ElicitRequest::new(ElicitRequestParams::FormElicitationParams {
        meta: None,
        message: format!("Confirm{reason}: {summary} Approve?"),
        requested_schema: schema,
    });
    let requests = std::collections::BTreeMap::from([(
        CONFIRM_INPUT.to_owned(),
        InputRequest::Elicitation(question),
    )]);
    Ok(Confirmed::InputRequired(Box::new(
        InputRequiredResult::new(Some(requests), Some(state)),
    )))
}

/// Ask the human through the client (MCP elicitation): accept → run; decline,
/// cancel, no answer or an unchecked box → refused.
async fn ask_through_elicitation(
    peer: &rmcp::Peer<rmcp::RoleServer>,
    summary: &str,
) -> Result<Confirmed, CallError> {
    use rmcp::model::{ElicitRequestParams, ElicitationAction, ElicitationSchema};
    let schema = ElicitationSchema::builder()
        .required_bool("approve")
        .build()
        .map_err(|e| CallError::unavailable("confirmation_unavailable", e.to_string()))?;
    let asked = peer
        .create_elicitation_with_timeout(
            ElicitRequestParams::FormElicitationParams {
                meta: None,
                message: format!("Confirm: {summary} Approve?"),
                requested_schema: schema,
            },
            Some(ELICITATION_TIMEOUT),
        )
        .await;
    match asked {
        Ok(answer) => {
            let approved = answer.action == ElicitationAction::Accept
                && answer
                    .content
                    .as_ref()
                    .and_then(|c| c.get("approve"))
                    .and_then(Value::as_bool)
                    == Some(true);
            if approved {
                Ok(Confirmed::Proceed)
            } else {
                Err(CallError::refused(
                    "confirmation_declined",
                    "the user did not approve this call".into(),
                ))
            }
        }
        Err(e) => Err(CallError::refused(
            "confirmation_unanswered",
            format!("the user could not be asked or did not answer: {e}"),
        )),
    }
}

/// Durably write one audit entry through the audit writer actor.
pub async fn record(gw: &Gateway, entry: AuditWrite) -> Result<(), String> {
    let writer = gw
        .audit_writer()
        .ok_or_else(|| "the audit writer is restarting".to_string())?;
    audit::write(&writer, entry)
        .await
        .map_err(|e| e.to_string())
}
