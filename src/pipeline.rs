//! The governance pipeline: every `tools/call` enters through [`Pipeline::run`].
//!
//! 1. gateway-answered tools (discovery, `gateway_my_hooks`): answered here,
//!    one complete audit row
//! 2. the decision (`policy::decide`, pure): resolve the tool to a service and
//!    action, classify its risk, the read-only switch, the caller's access,
//!    argument validation, whether the human must confirm
//! 3. admission (async): the grant's actor (delegated calls), company then
//!    user pre-hooks, write-safety (`write_safety.rs`), PII rehydration
//! 4. write-ahead audit: the decision is durable before anything runs
//! 5. execution: connector hand-off (inside the grant's gate when delegated),
//!    post-hooks, PII pseudonymization of the result
//! 6. audit outcome, then the answer
//!
//! A stage that refuses returns a [`Refusal`]; [`Pipeline::run`] turns it into
//! the audit row (one complete row before the write-ahead, the outcome of the
//! written row after it). If the audit store cannot write, nothing runs.
//!
//! Every call ends in [`Pipeline::run`], so it is counted there, once, by
//! service, action, decision and reason, with its duration (`stats.rs`,
//! `/metrics`); and it runs inside one `mcp.call` span with a child span per
//! stage (`telemetry.rs`). The upstream's span context travels with the call.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actors::audit::{AuditDecision, AuditOutcome, Decision};
use actors::connector::{self, ConnectorError, ConnectorRef};
use actors::session::SessionTicket;
use rmcp::model::{CallToolResponse, CallToolResult, JsonObject, ResultType};
use serde_json::Value;
use tracing::Instrument;
use tracing::field::Empty;

use crate::audit::{AuditLog, RowStart};
use crate::config::Config;
use crate::delegation::grants::{EndReason, LiveGrant, end_refusal_reason};
use crate::domain::{Reason, Refusal, Risk};
use crate::drain::Drain;
use crate::hooks::{CallFacts, Hooks, PreOutcome};
use crate::pii::Pii;
use crate::policy::Catalogs;
use crate::policy::decide::{self, Confirmation, Decided, Rules};
use crate::principal::Principal;
use crate::stats::CallLabels;
use crate::write_safety::{self, Binding, Channel, Confirmations, Confirmed, Question, RoundTrip};

/// How often a call waiting for its upstream's connection looks again.
const CONNECT_POLL: Duration = Duration::from_millis(20);

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
    /// The span the call's own span is a child of (the HTTP request's), or
    /// `Span::none()`.
    pub parent: tracing::Span,
}

/// The stages' state: exactly what a call needs, nothing else.
pub struct Pipeline {
    pub config: Arc<Config>,
    pub catalogs: Arc<Catalogs>,
    pub hooks: Arc<Hooks>,
    pub pii: Arc<Pii>,
    pub audit: AuditLog,
    pub confirmations: Confirmations,
    pub drain: Arc<Drain>,
}

/// A call that passed the decision and admission: ready to run.
struct Admitted {
    decided: Decided,
    pre: PreOutcome,
}

/// How a call ended before its answer.
enum Stop {
    /// Refused before the write-ahead: one complete refused row.
    Refused(Refusal),
    /// Not run, because the human is asked first: the answer is the question,
    /// the row says why nothing ran.
    Asked(CallToolResponse, &'static str),
}

impl From<Refusal> for Stop {
    fn from(refusal: Refusal) -> Self {
        Stop::Refused(refusal)
    }
}

/// Changing one's own hooks (`add`, `remove`) changes what later calls
/// may do: more than a read-only scope covers. Listing them is a read.
fn hooks_scope_refusal(
    principal: &Principal,
    tool: &str,
    arguments: &JsonObject,
) -> Option<Refusal> {
    let op = arguments.get("op").and_then(Value::as_str).unwrap_or("");
    (tool == crate::hooks::self_service::TOOL && principal.scope_cap.is_some() && op != "list")
        .then(|| {
            Refusal::new(
                Reason::InsufficientScope,
                format!("changing your hooks ('{op}') needs scope mcp; this sign-in has mcp:read"),
            )
        })
}

impl Pipeline {
    /// Run one tool call through the whole pipeline. Every call ends here,
    /// whichever stage ended it: this is where it is counted.
    pub async fn run(&self, mut request: CallRequest<'_>) -> Result<CallToolResponse, Refusal> {
        let started = Instant::now();
        let token = write_safety::take_token(&mut request.arguments);
        let mut row = RowStart {
            subject: &request.principal.subject,
            actor: &request.principal.actor,
            session: Some(request.session.key.clone()),
            client: &request.session.client,
            tool: request.tool,
            arguments: &request.arguments,
        }
        .row();
        if let Some(grant) = &request.principal.grant {
            row.grant_id = Some(grant.scope.grant_id.clone());
            row.job_id = grant.scope.job_id.clone();
        }
        // The call's span: who and what, never argument values.
        let span = tracing::info_span!(
            parent: &request.parent,
            "mcp.call",
            mcp.method.name = "tools/call",
            gen_ai.tool.name = request.tool,
            mcpgate.subject = %request.principal.subject,
            mcpgate.actor = %request.principal.actor,
            mcpgate.grant_id = row.grant_id.as_deref(),
            mcpgate.service = Empty,
            mcpgate.action = Empty,
            mcpgate.risk = Empty,
            mcpgate.decision = Empty,
            mcpgate.reason = Empty,
            otel.status_code = Empty,
        );
        let ended = self
            .stages(&request, token.as_deref(), &mut row, started)
            .instrument(span.clone())
            .await;
        let labels = ended.labels(&row, request.tool);
        if !labels.service.is_empty() {
            span.record("mcpgate.service", labels.service.as_str());
        }
        if !labels.action.is_empty() {
            span.record("mcpgate.action", labels.action.as_str());
        }
        if let Some(risk) = row.risk {
            span.record("mcpgate.risk", risk.as_str());
        }
        span.record("mcpgate.decision", labels.decision);
        if !labels.reason.is_empty() {
            span.record("mcpgate.reason", labels.reason);
        }
        if matches!(ended, Ended::Failed(_)) {
            span.record("otel.status_code", "ERROR");
        }
        self.audit.stats().calls.record(labels, started.elapsed());
        ended.into_answer()
    }

    /// Count a call its session refused before it reached [`Self::run`]
    /// (`session_credential_mismatch`, `session_unavailable`); the refusal is
    /// already audited.
    pub fn count_unadmitted(&self, refusal: &Refusal, took: Duration) {
        let labels = CallLabels {
            service: String::new(),
            action: String::new(),
            decision: Decision::Refused.as_str(),
            reason: refusal.code(),
        };
        self.audit.stats().calls.record(labels, took);
    }

    /// A `tools/call` the caller's access allows but its OAuth scope does
    /// not (`Reason::InsufficientScope`): audited and counted here, so the
    /// HTTP layer can answer it with a 403 scope challenge before MCP sees
    /// it. Any other outcome is the pipeline's to decide: `None`.
    pub async fn beyond_scope(
        &self,
        principal: &Principal,
        session: Option<String>,
        tool: &str,
        arguments: &JsonObject,
    ) -> Option<Refusal> {
        principal.scope_cap?;
        let started = Instant::now();
        let mut row = RowStart {
            subject: &principal.subject,
            actor: &principal.actor,
            session,
            client: &Default::default(),
            tool,
            arguments,
        }
        .row();
        let refusal = match hooks_scope_refusal(principal, tool, arguments) {
            Some(refusal) => {
                row.action = arguments
                    .get("op")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                refusal
            }
            None => {
                let rules = Rules {
                    config: &self.config,
                    catalog_rules: self.catalogs.catalog_rules(),
                };
                let lookup = |service: &str| self.catalogs.catalog(service);
                let refused = decide::decide(&rules, principal, &lookup, tool, arguments).err()?;
                if refused.refusal.reason != Reason::InsufficientScope {
                    return None;
                }
                row.service = refused.service;
                row.action = refused.action;
                row.risk = refused.risk;
                refused.refusal
            }
        };
        let refusal = self.audit.refusal(row, refusal).await;
        self.count_unadmitted(&refusal, started.elapsed());
        Some(refusal)
    }

    /// The stages in order; `row` is filled in as facts become known.
    async fn stages(
        &self,
        request: &CallRequest<'_>,
        token: Option<&str>,
        row: &mut AuditDecision,
        started: Instant,
    ) -> Ended {
        if self.drain.is_draining() {
            let refusal = Refusal::new(Reason::ShuttingDown, "the gateway is shutting down");
            return Ended::Refused(
                self.audit
                    .refusal(row.clone(), refusal)
                    .instrument(audit_span("refusal"))
                    .await,
            );
        }
        if let Some(local) = self.local(request, row).await {
            return self.finish_local(row, local).await;
        }
        let admitted = match self.admit(request, token, row).await {
            Ok(admitted) => admitted,
            Err(Stop::Refused(refusal)) => {
                return Ended::Refused(
                    self.audit
                        .refusal(row.clone(), refusal)
                        .instrument(audit_span("refusal"))
                        .await,
                );
            }
            Err(Stop::Asked(question, why)) => {
                let ask = Refusal::new(Reason::ConfirmationRequired, why);
                let recorded = self
                    .audit
                    .record_refusal(row.clone(), &ask)
                    .instrument(audit_span("refusal"))
                    .await;
                return match recorded {
                    Ok(()) => Ended::Asked(question),
                    Err(unrecorded) => Ended::Refused(unrecorded),
                };
            }
        };
        // Write-ahead: the attempt is on record before the upstream sees it.
        let written = self
            .audit
            .decision(row.clone())
            .instrument(audit_span("decision"))
            .await;
        if let Err(refusal) = written {
            return Ended::Refused(refusal);
        }
        match self.execute(request, &admitted).await {
            Ok(result) => self.complete(row, started, Ok(result)).await,
            Err(Executed::Failed(error)) => self.complete(row, started, Err(error)).await,
            Err(Executed::Refused(refusal, upstream_status)) => Ended::Refused(
                self.audit
                    .refusal_after_write_ahead(row, started, refusal, upstream_status)
                    .instrument(audit_span("outcome"))
                    .await,
            ),
        }
    }

    /// The tools the gateway answers itself.
    async fn local(
        &self,
        request: &CallRequest<'_>,
        row: &mut AuditDecision,
    ) -> Option<Result<CallToolResult, Refusal>> {
        let arguments = &request.arguments;
        if request.tool == crate::discovery::SEARCH || request.tool == crate::discovery::DESCRIBE {
            row.risk = Some(Risk::Read);
            return Some(crate::discovery::run(
                &self.config,
                &self.catalogs,
                request.principal,
                request.tool,
                arguments,
            ));
        }
        if request.tool == crate::activity::TOOL {
            row.risk = Some(Risk::Read);
            return Some(crate::activity::run(&self.audit, request.principal, arguments).await);
        }
        if request.tool == crate::hooks::self_service::TOOL {
            let op = arguments.get("op").and_then(Value::as_str).unwrap_or("");
            row.action = Some(op.to_owned());
            if let Some(refusal) = hooks_scope_refusal(request.principal, request.tool, arguments) {
                return Some(Err(refusal));
            }
            return Some(crate::hooks::self_service::run(
                &self.hooks,
                request.principal,
                op,
                arguments,
            ));
        }
        None
    }

    /// A gateway-answered call: one complete row, allowed (nothing is
    /// answered unless it is durable) or refused with its reason.
    async fn finish_local(
        &self,
        row: &AuditDecision,
        outcome: Result<CallToolResult, Refusal>,
    ) -> Ended {
        let mut row = row.clone();
        match outcome {
            Ok(result) => {
                row.completed = true;
                match self
                    .audit
                    .decision(row)
                    .instrument(audit_span("decision"))
                    .await
                {
                    Ok(()) => Ended::Answered(result.into()),
                    Err(refusal) => Ended::Refused(refusal),
                }
            }
            Err(refusal) => Ended::Refused(
                self.audit
                    .refusal(row, refusal)
                    .instrument(audit_span("refusal"))
                    .await,
            ),
        }
    }

    /// Decision, then admission: the grant's actor, pre-hooks, write-safety
    /// and PII rehydration. Fills in the row as facts become known.
    async fn admit(
        &self,
        request: &CallRequest<'_>,
        token: Option<&str>,
        row: &mut AuditDecision,
    ) -> Result<Admitted, Stop> {
        let connected = self.await_first_connection(request.tool).await;
        let rules = Rules {
            config: &self.config,
            catalog_rules: self.catalogs.catalog_rules(),
        };
        let lookup = |service: &str| match &connected {
            Some((name, catalog)) if name == service => Some(catalog.clone()),
            _ => self.catalogs.catalog(service),
        };
        let decided = tracing::info_span!("mcp.decide").in_scope(|| {
            decide::decide(
                &rules,
                request.principal,
                &lookup,
                request.tool,
                &request.arguments,
            )
        });
        let mut decided = match decided {
            Ok(decided) => decided,
            Err(refused) => {
                row.service = refused.service;
                row.action = refused.action;
                row.risk = refused.risk;
                return Err(refused.refusal.into());
            }
        };
        row.service = Some(decided.service.clone());
        row.action = Some(decided.action.clone());
        row.risk = Some(decided.risk);
        if let Some(grant) = &request.principal.grant {
            authorize_under_grant(grant, &decided)
                .instrument(tracing::info_span!("mcp.grant"))
                .await?;
        }
        // Company pre-hooks, then the subject's own: they may refuse, rewrite
        // arguments, or ask for the human's confirmation.
        let mut arguments = std::mem::take(&mut decided.arguments);
        let pre = tracing::info_span!("mcp.hooks.pre").in_scope(|| {
            self.hooks.current().run_pre(
                &facts(request, &decided),
                &mut arguments,
                self.hooks.budget,
            )
        });
        decided.arguments = arguments;
        let pre = pre?;
        let confirmation = decide::confirmation(
            &decided,
            request.principal.kind(),
            self.config.policy.headless_confirm,
            pre.confirm.is_some(),
        );
        match confirmation {
            Confirmation::NotNeeded => {}
            Confirmation::HeadlessCannotConfirm => {
                return Err(Refusal::new(
                    Reason::HeadlessCannotConfirm,
                    format!(
                        "'{}.{}' ({}) needs a human's confirmation, which a service account cannot give",
                        decided.service, decided.action, decided.risk
                    ),
                )
                .into());
            }
            Confirmation::Ask => {
                let question = Question {
                    binding: Binding {
                        subject: &request.principal.subject,
                        actor: &request.principal.actor,
                        tool: request.tool,
                        action: &decided.action,
                        args_sha256: &row.args_sha256,
                        policy_version: &self.config.policy_version,
                    },
                    service: &decided.service,
                    risk: decided.risk,
                    arguments: &decided.arguments,
                    hook: pre.confirm.as_deref(),
                };
                let channel = Channel {
                    token,
                    elicitor: request.elicitor.as_ref(),
                    round_trip: request.round_trip.as_ref(),
                };
                let confirmed = self
                    .confirmations
                    .confirm(&question, &channel)
                    .instrument(tracing::info_span!("mcp.confirm"))
                    .await?;
                match confirmed {
                    Confirmed::Proceed => {}
                    Confirmed::AskFirst(preview) => {
                        return Err(Stop::Asked(
                            preview.into(),
                            "not run: waiting for the human's confirmation",
                        ));
                    }
                    Confirmed::InputRequired(question) => {
                        return Err(Stop::Asked(
                            (*question).into(),
                            "not run: asked the human (input_required)",
                        ));
                    }
                }
            }
        }
        // Pseudonyms in the arguments become the real values again — only
        // this subject's own; anything else is refused.
        let counts = self
            .pii
            .rehydrate(
                &request.principal.subject,
                &decided.service,
                &mut decided.arguments,
            )
            .instrument(tracing::info_span!("mcp.pii.rehydrate"))
            .await?;
        if counts.total() > 0 {
            row.pii_rehydrated = Some(counts.total() as i64);
            row.pii_types = Some(counts.types());
        }
        Ok(Admitted { decided, pre })
    }

    /// The connector call (inside the grant's gate), post-hooks, PII.
    async fn execute(
        &self,
        request: &CallRequest<'_>,
        admitted: &Admitted,
    ) -> Result<CallToolResult, Executed> {
        let decided = &admitted.decided;
        let Some(connector) = self.connector(&decided.service) else {
            return Err(Executed::Failed(ConnectorError::Unavailable(
                decided.service.clone(),
            )));
        };
        let deadline = self
            .config
            .services
            .get(&decided.service)
            .and_then(|s| s.call_timeout)
            .unwrap_or(self.config.limits.call_timeout)
            // Margin over the connector's own timeout, which answers first.
            + Duration::from_secs(1);
        // Under a grant, the call runs inside its gate until the upstream
        // answered: a revocation waits for the grant's calls already under
        // way (each bounded by its deadline), so once it is acknowledged no
        // call of the grant reaches the upstream. Handing off was not enough:
        // a call queued at the connector arrived after the acknowledgement.
        // The upstream's span: its context goes with the call (`traceparent`).
        let upstream = tracing::info_span!(
            "mcp.upstream",
            otel.kind = "client",
            mcpgate.service = %decided.service,
            mcpgate.action = %decided.action,
            otel.status_code = Empty,
        );
        let trace = crate::telemetry::trace_context(&upstream);
        let called = async {
            let admission = match &request.principal.grant {
                Some(grant) => match grant.gate.admit().await {
                    Ok(admission) => Some(admission),
                    Err(reason) => {
                        let refusal = grant_ended(grant, &reason);
                        return Err(Executed::Refused(refusal, "not_called"));
                    }
                },
                None => None,
            };
            let pending = connector::dispatch(
                &connector,
                self.catalogs.directory().line(&decided.service),
                &decided.service,
                &request.principal.subject,
                request.principal.kind().is_interactive(),
                decided.action.clone(),
                Some(decided.arguments.clone()),
                trace,
                deadline,
            );
            let answer = match pending {
                Ok(pending) => pending.answer().await.map_err(Executed::Failed),
                Err(error) => Err(Executed::Failed(error)),
            };
            drop(admission);
            answer
        }
        .instrument(upstream.clone())
        .await;
        if called.is_err() {
            upstream.record("otel.status_code", "ERROR");
        }
        drop(upstream);
        let mut result = called?;
        // Post-hooks (caps, withholding, warnings) see what the upstream answered.
        let facts = facts(request, decided);
        let post = tracing::info_span!("mcp.hooks.post").in_scope(|| {
            self.hooks.current().run_post(
                &facts,
                &decided.arguments,
                &mut result,
                self.hooks.budget,
            )
        });
        if let Err(refusal) = post {
            // The upstream ran; its answer does not go out.
            return Err(Executed::Refused(refusal, "withheld"));
        }
        for warning in &admitted.pre.warnings {
            result.content.push(rmcp::model::ContentBlock::text(format!(
                "Warning: {warning}"
            )));
        }
        // Personal data in the answer is pseudonymized before the model sees
        // it; if that fails, the answer is withheld. What the gateway wrote
        // itself (a connect instruction naming the caller) is not upstream data.
        let gateway_authored = connector::take_gateway_authored(&mut result);
        if !gateway_authored
            && let Err(refusal) = self
                .pii
                .pseudonymize(&request.principal.subject, &decided.service, &mut result)
                .instrument(tracing::info_span!("mcp.pii.pseudonymize"))
                .await
        {
            tracing::error!(service = %decided.service, reason = refusal.code(), "PII scan failed: result withheld");
            return Err(Executed::Refused(refusal, "withheld"));
        }
        Ok(result)
    }

    /// Record the outcome of a call that ran, then answer.
    async fn complete(
        &self,
        row: &AuditDecision,
        started: Instant,
        outcome: Result<CallToolResult, ConnectorError>,
    ) -> Ended {
        let latency_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
        let service = row.service.as_deref().unwrap_or_default();
        let (completion, answer) = match outcome {
            Ok(mut result) => {
                // A legacy upstream omits `resultType`; 2026-07-28 clients require it.
                result.result_type = Some(ResultType::COMPLETE);
                let status = if result.is_error == Some(true) {
                    "tool_error"
                } else {
                    "ok"
                };
                let completion = AuditOutcome {
                    call_id: row.call_id.clone(),
                    at: actors::now_rfc3339(),
                    decision: Decision::Allowed,
                    reason_code: None,
                    reason: None,
                    upstream_status: status.into(),
                    latency_ms,
                };
                (completion, Ok(result))
            }
            Err(error) => {
                let (completion, reason, message) =
                    failed_outcome(&row.call_id, service, &error, latency_ms);
                (completion, Err(Refusal::new(reason, message)))
            }
        };
        let recorded = self
            .audit
            .outcome(completion)
            .instrument(audit_span("outcome"))
            .await;
        if let Err(unrecorded) = recorded {
            // The call ran; its answer is withheld because its outcome is not on record.
            return Ended::Failed(unrecorded);
        }
        let stats = self.audit.stats();
        let counter = if answer.is_err() {
            &stats.failed
        } else {
            &stats.allowed
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match answer {
            Ok(result) => Ended::Answered(result.into()),
            Err(refusal) => Ended::Failed(refusal),
        }
    }

    /// A call that arrives while its service's upstream is still connecting
    /// (the gateway just started, or the connector is restarting) waits for
    /// it within the call's own budget, instead of being refused at once.
    /// Bounded: past the budget the decision refuses `upstream_unavailable`.
    /// Returns the service's catalog once it has one, so the decision does
    /// not look it up again.
    async fn await_first_connection(
        &self,
        tool: &str,
    ) -> Option<(String, Arc<crate::catalog::ServiceCatalog>)> {
        let (service, _) = crate::catalog::parse_tool_name(tool)?;
        let config = self.config.services.get(service)?;
        let budget = config
            .call_timeout
            .unwrap_or(self.config.limits.call_timeout);
        let deadline = tokio::time::Instant::now() + budget;
        loop {
            if let Some(catalog) = self.catalogs.catalog(service) {
                return Some((service.to_owned(), catalog));
            }
            if tokio::time::Instant::now() >= deadline || self.drain.is_draining() {
                return None;
            }
            tokio::time::sleep(CONNECT_POLL).await;
        }
    }

    fn connector(&self, service: &str) -> Option<ConnectorRef> {
        self.catalogs.directory().connector(service)
    }
}

/// How execution ended when it did not produce a result.
enum Executed {
    /// The connector or upstream failed: the row's outcome is `failed`.
    Failed(ConnectorError),
    /// The gateway stopped it after the write-ahead (grant ended, a
    /// post-hook or the PII scan withheld the answer).
    Refused(Refusal, &'static str),
}

/// How a call ended: its answer, and the decision its audit row records.
enum Ended {
    /// Allowed and answered (a gateway tool, or the upstream's result).
    Answered(CallToolResponse),
    /// Not run: the answer asks the human first (`confirmation_required`).
    Asked(CallToolResponse),
    /// Refused, before or after the write-ahead.
    Refused(Refusal),
    /// Allowed, and the upstream (or recording its outcome) failed.
    Failed(Refusal),
}

impl Ended {
    fn decision(&self) -> (Decision, &'static str) {
        match self {
            Ended::Answered(_) => (Decision::Allowed, ""),
            Ended::Asked(_) => (Decision::Refused, Reason::ConfirmationRequired.code()),
            Ended::Refused(refusal) => (Decision::Refused, refusal.code()),
            Ended::Failed(refusal) => (Decision::Failed, refusal.code()),
        }
    }

    /// The metric labels of this call. The action is named only once the
    /// catalog knows it, so a caller cannot mint series with made-up names;
    /// gateway-answered tools count under the service `gateway`.
    fn labels(&self, row: &AuditDecision, tool: &str) -> CallLabels {
        let (decision, reason) = self.decision();
        let local = is_local(tool);
        let service = match &row.service {
            Some(service) => service.clone(),
            None if local => LOCAL_SERVICE.to_owned(),
            None => String::new(),
        };
        let action = if local {
            tool.to_owned()
        } else if reason == Reason::UnknownAction.code() {
            String::new()
        } else {
            row.action.clone().unwrap_or_default()
        };
        CallLabels {
            service,
            action,
            decision: decision.as_str(),
            reason,
        }
    }

    fn into_answer(self) -> Result<CallToolResponse, Refusal> {
        match self {
            Ended::Answered(answer) | Ended::Asked(answer) => Ok(answer),
            Ended::Refused(refusal) | Ended::Failed(refusal) => Err(refusal),
        }
    }
}

/// The span of one audit write: `entry` is what is written (`decision`, the
/// write-ahead or a complete row; `outcome`; `refusal`).
pub(crate) fn audit_span(entry: &'static str) -> tracing::Span {
    tracing::info_span!("mcp.audit.write", mcpgate.audit.entry = entry)
}

/// The `service` label of the tools the gateway answers itself.
pub const LOCAL_SERVICE: &str = "gateway";

fn is_local(tool: &str) -> bool {
    [
        crate::discovery::SEARCH,
        crate::discovery::DESCRIBE,
        crate::activity::TOOL,
        crate::hooks::self_service::TOOL,
    ]
    .contains(&tool)
}

fn facts<'a>(request: &'a CallRequest<'_>, decided: &'a Decided) -> CallFacts<'a> {
    CallFacts {
        tool: request.tool,
        service: &decided.service,
        action: &decided.action,
        risk: decided.risk.as_str(),
        subject: &request.principal.subject,
        actor: &request.principal.actor,
    }
}

/// The audit outcome of a call to `service` its upstream failed, with the
/// reason and message the caller is told.
pub(crate) fn failed_outcome(
    call_id: &str,
    service: &str,
    error: &ConnectorError,
    latency_ms: Option<f64>,
) -> (AuditOutcome, Reason, String) {
    let reason = connector_reason(error);
    let status = match error {
        ConnectorError::Upstream { code, .. } => format!("error {code}"),
        _ => reason.code().to_owned(),
    };
    let message = format!("service '{service}' failed: {error}");
    let outcome = AuditOutcome {
        call_id: call_id.to_owned(),
        at: actors::now_rfc3339(),
        decision: Decision::Failed,
        reason_code: Some(reason.code().into()),
        reason: Some(message.clone()),
        upstream_status: status,
        latency_ms,
    };
    (outcome, reason, message)
}

/// The reason a connector failure is reported with.
pub fn connector_reason(error: &ConnectorError) -> Reason {
    match error {
        ConnectorError::Unavailable(_) => Reason::UpstreamUnavailable,
        ConnectorError::Timeout(_) => Reason::UpstreamTimeout,
        ConnectorError::Transport(_) => Reason::UpstreamTransport,
        ConnectorError::Upstream { .. } => Reason::UpstreamError,
    }
}

pub(crate) fn grant_ended(grant: &LiveGrant, reason: &EndReason) -> Refusal {
    Refusal::new(
        end_refusal_reason(reason),
        format!("grant {} has ended: {reason}", grant.scope.grant_id),
    )
}

/// Ask the grant's actor; a grant that is gone refuses with its end reason.
async fn authorize_under_grant(grant: &LiveGrant, decided: &Decided) -> Result<(), Refusal> {
    authorize_service(grant, &decided.service, decided.risk).await
}

/// Ask the grant's actor whether `risk` on `service` is in its scope.
pub(crate) async fn authorize_service(
    grant: &LiveGrant,
    service: &str,
    risk: Risk,
) -> Result<(), Refusal> {
    let service = service.to_owned();
    let answer = grant
        .actor
        .call(
            |reply| actors::grant::GrantMsg::Authorize {
                service,
                risk,
                reply,
            },
            Some(Duration::from_secs(10)),
        )
        .await;
    match answer {
        Ok(ractor::rpc::CallResult::Success(Ok(_))) => Ok(()),
        Ok(ractor::rpc::CallResult::Success(Err(refusal))) => Err(Refusal::new(
            crate::delegation::grants::grant_refusal_reason(&refusal),
            format!("grant {}: {refusal}", grant.scope.grant_id),
        )),
        _ => {
            // The actor is gone: its gate is closed or closing.
            let reason = grant
                .gate
                .settled_reason()
                .await
                .unwrap_or_else(|| EndReason::Other("the grant is no longer active".into()));
            Err(grant_ended(grant, &reason))
        }
    }
}
