//! Resources, resource templates and prompts of upstream MCP servers,
//! federated under the gateway's governance.
//!
//! **Names.** Two upstreams never collide: each name carries its service, and
//! the mapping is reversible without a table.
//! - a resource URI `U` of service `s` is `mcpgate://s/U` (a template's
//!   `uriTemplate` the same, so its expansions map back by the same rule);
//! - a prompt `p` of service `s` is `s.p` (service names have no `.`).
//!
//! **Governance.** Listing, reading a resource, getting a prompt and asking
//! for a completion are **reads** of the service: lists show only services
//! the caller (or their grant) may read; every read, get and completion is
//! one audit row (write-ahead, then its outcome) with subject and actor, a
//! refusal is a row with its reason; the company and user pre-hooks run
//! (`tool` is the MCP method); pseudonyms in prompt and completion
//! arguments are rehydrated like tool arguments, and personal data in
//! resource contents, prompt messages and completion values is pseudonymized
//! by the same JSON-aware walker as tool results (failing closed).

use std::time::{Duration, Instant};

use actors::audit::{AuditDecision, AuditOutcome, Decision};
use actors::connector::{self, ConnectorError, UpstreamAnswer, UpstreamAsk};
use actors::session::SessionTicket;
use rmcp::model::{
    CompleteRequestParams, CompleteResult, GetPromptResult, JsonObject, Prompt, ReadResourceResult,
    Reference, Resource, ResourceTemplate, ResultType,
};
use serde_json::Value;
use tracing::Instrument;

use crate::audit::RowStart;
use crate::domain::{Reason, Refusal, Risk};
use crate::hooks::CallFacts;
use crate::pipeline::{Pipeline, audit_span, authorize_service, failed_outcome, grant_ended};
use crate::principal::Principal;
use crate::stats::CallLabels;

/// The scheme of every federated resource URI.
pub const RESOURCE_PREFIX: &str = "mcpgate://";
/// Between a prompt's service and its upstream name.
pub const PROMPT_SEPARATOR: char = '.';

/// `uri` of `service`, as the gateway's clients see it.
pub fn resource_uri(service: &str, uri: &str) -> String {
    format!("{RESOURCE_PREFIX}{service}/{uri}")
}

/// The service and upstream URI a federated URI names (syntax only).
pub fn parse_resource_uri(uri: &str) -> Option<(&str, &str)> {
    let (service, upstream) = uri.strip_prefix(RESOURCE_PREFIX)?.split_once('/')?;
    (!service.is_empty() && !upstream.is_empty()).then_some((service, upstream))
}

/// `name` of `service`, as the gateway's clients see it.
pub fn prompt_name(service: &str, name: &str) -> String {
    format!("{service}{PROMPT_SEPARATOR}{name}")
}

/// The service and upstream name a federated prompt name names.
pub fn parse_prompt_name(name: &str) -> Option<(&str, &str)> {
    let (service, prompt) = name.split_once(PROMPT_SEPARATOR)?;
    (!service.is_empty() && !prompt.is_empty()).then_some((service, prompt))
}

/// The services whose resources and prompts `principal` may see: MCP
/// upstreams they (or their grant) may read, in name order.
fn readable_services<'a>(pipeline: &'a Pipeline, principal: &Principal) -> Vec<&'a str> {
    pipeline
        .config
        .services
        .keys()
        .filter(|service| principal.access_to(service).is_some())
        .map(String::as_str)
        .collect()
}

/// What every service `principal` may read announces of one kind (picked
/// from its surface), each item renamed into its service's namespace.
fn namespaced<T: Clone>(
    pipeline: &Pipeline,
    principal: &Principal,
    announced: impl Fn(&connector::Surface) -> &[T],
    rename: impl Fn(&str, &mut T),
) -> Vec<T> {
    let directory = pipeline.catalogs.directory();
    let mut out = Vec::new();
    for service in readable_services(pipeline, principal) {
        if let Some(status) = directory.get(service) {
            out.extend(announced(&status.surface).iter().map(|item| {
                let mut item = item.clone();
                rename(service, &mut item);
                item
            }));
        }
    }
    out
}

/// Every resource `principal` may read, namespaced.
pub fn resources(pipeline: &Pipeline, principal: &Principal) -> Vec<Resource> {
    namespaced(
        pipeline,
        principal,
        |s| &s.resources,
        |service, r| {
            r.uri = resource_uri(service, &r.uri);
        },
    )
}

/// Every resource template `principal` may read, namespaced.
pub fn templates(pipeline: &Pipeline, principal: &Principal) -> Vec<ResourceTemplate> {
    namespaced(
        pipeline,
        principal,
        |s| &s.templates,
        |service, t| {
            t.uri_template = resource_uri(service, &t.uri_template);
        },
    )
}

/// Every prompt `principal` may get, namespaced.
pub fn prompts(pipeline: &Pipeline, principal: &Principal) -> Vec<Prompt> {
    namespaced(
        pipeline,
        principal,
        |s| &s.prompts,
        |service, p| {
            p.name = prompt_name(service, &p.name);
        },
    )
}

/// Whether `principal` may see what `service` announces (list changes,
/// updates of a subscribed resource).
pub fn may_read(principal: &Principal, service: &str) -> bool {
    principal.access_to(service).is_some()
}

/// One federated request: who asks, in which session, for what.
pub struct Read<'a> {
    pub principal: &'a Principal,
    pub session: &'a SessionTicket,
    /// The MCP method (`resources/read`, `prompts/get`, `completion/complete`,
    /// `resources/subscribe`): the audit row's tool.
    pub method: &'static str,
    /// The parent of the request's span (the HTTP request's), or none.
    pub parent: tracing::Span,
}

/// A resource read, governed; `uri` is the federated URI.
pub async fn read_resource(
    pipeline: &Pipeline,
    read: Read<'_>,
    uri: &str,
) -> Result<ReadResourceResult, rmcp::ErrorData> {
    let target = parse_resource_uri(uri).map(|(s, u)| (s.to_owned(), u.to_owned()));
    let arguments = object([("uri", Value::String(uri.to_owned()))]);
    let governed = Governed {
        pipeline,
        read: &read,
        arguments: &arguments,
    };
    governed
        .run(
            target,
            Reason::UnknownResource,
            format!("there is no resource '{uri}'"),
            |_| Ok(()),
            // The URI as rehydrated: a pseudonym in it is the real value upstream.
            |service, upstream, rehydrated| UpstreamAsk::ReadResource {
                uri: rehydrated
                    .get("uri")
                    .and_then(Value::as_str)
                    .and_then(parse_resource_uri)
                    .filter(|(named, _)| *named == service)
                    .map_or(upstream, |(_, uri)| uri)
                    .to_owned(),
            },
            |service, subject, answer| async move {
                let UpstreamAnswer::Resource(mut result) = answer else {
                    return Err(unexpected());
                };
                pipeline
                    .pii
                    .pseudonymize_resource(&subject, &service, &mut result)
                    .await?;
                // A legacy upstream omits `resultType`; 2026-07-28 clients require it.
                result.result_type = Some(ResultType::COMPLETE);
                // The contents name the resource the client asked for.
                for contents in result.contents.iter_mut() {
                    map_contents_uri(&service, contents);
                }
                Ok(result)
            },
        )
        .await
}

/// A prompt get, governed; `name` is the federated name.
pub async fn get_prompt(
    pipeline: &Pipeline,
    read: Read<'_>,
    name: &str,
    arguments: Option<JsonObject>,
) -> Result<GetPromptResult, rmcp::ErrorData> {
    let target = parse_prompt_name(name).map(|(s, p)| (s.to_owned(), p.to_owned()));
    let arguments = arguments.unwrap_or_default();
    let governed = Governed {
        pipeline,
        read: &read,
        arguments: &arguments,
    };
    governed
        .run(
            target,
            Reason::UnknownPrompt,
            format!("there is no prompt '{name}'"),
            |(service, prompt)| prompt_exists(pipeline, service, prompt),
            |_, prompt, rehydrated| UpstreamAsk::GetPrompt {
                name: prompt.to_owned(),
                arguments: Some(rehydrated),
            },
            |service, subject, answer| async move {
                let UpstreamAnswer::Prompt(mut result) = answer else {
                    return Err(unexpected());
                };
                pipeline
                    .pii
                    .pseudonymize_prompt(&subject, &service, &mut result)
                    .await?;
                result.result_type = Some(ResultType::COMPLETE);
                Ok(result)
            },
        )
        .await
}

/// A completion, routed by its reference (a prompt, or a resource template)
/// to that service, governed.
pub async fn complete(
    pipeline: &Pipeline,
    read: Read<'_>,
    mut params: CompleteRequestParams,
) -> Result<CompleteResult, rmcp::ErrorData> {
    let (target, unknown, what) = match &params.r#ref {
        Reference::Prompt(prompt) => (
            parse_prompt_name(&prompt.name).map(|(s, p)| (s.to_owned(), p.to_owned())),
            Reason::UnknownPrompt,
            format!("there is no prompt '{}'", prompt.name),
        ),
        Reference::Resource(template) => (
            parse_resource_uri(&template.uri).map(|(s, u)| (s.to_owned(), u.to_owned())),
            Reason::UnknownResource,
            format!("there is no resource template '{}'", template.uri),
        ),
        other => {
            return Err(rmcp::ErrorData::invalid_params(
                format!(
                    "completion/complete: unsupported ref type '{}'",
                    other.reference_type()
                ),
                None,
            ));
        }
    };
    // What the client typed, and the arguments already chosen: rehydrated
    // (under `value` and `context`) like tool arguments.
    let mut arguments = object([
        ("argument", Value::String(params.argument.name.clone())),
        ("value", Value::String(params.argument.value.clone())),
    ]);
    if let Some(context) = params.context.as_ref().and_then(|c| c.arguments.as_ref()) {
        arguments.insert(
            "context".into(),
            serde_json::to_value(context).unwrap_or_default(),
        );
    }
    let prompt_ref = matches!(params.r#ref, Reference::Prompt(_));
    let governed = Governed {
        pipeline,
        read: &read,
        arguments: &arguments,
    };
    governed
        .run(
            target,
            unknown,
            what,
            |(service, name)| {
                if prompt_ref {
                    prompt_exists(pipeline, service, name)
                } else {
                    Ok(())
                }
            },
            move |_, upstream, rehydrated| {
                match &mut params.r#ref {
                    Reference::Prompt(prompt) => prompt.name = upstream.to_owned(),
                    Reference::Resource(template) => template.uri = upstream.to_owned(),
                    _ => {}
                }
                if let Some(Value::String(value)) = rehydrated.get("value") {
                    params.argument.value = value.clone();
                }
                if let (Some(context), Some(Value::Object(chosen))) =
                    (params.context.as_mut(), rehydrated.get("context"))
                {
                    context.arguments = Some(
                        chosen
                            .iter()
                            .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_owned())))
                            .collect(),
                    );
                }
                params.meta = None;
                UpstreamAsk::Complete(Box::new(params))
            },
            |service, subject, answer| async move {
                let UpstreamAnswer::Completion(mut result) = answer else {
                    return Err(unexpected());
                };
                pipeline
                    .pii
                    .pseudonymize_completion(&subject, &service, &mut result)
                    .await?;
                result.result_type = Some(ResultType::COMPLETE);
                Ok(result)
            },
        )
        .await
}

/// A subscription to (or release of) a federated resource's updates,
/// governed like a read; the upstream is subscribed once for all clients.
pub async fn subscribe(
    pipeline: &Pipeline,
    read: Read<'_>,
    uri: &str,
    on: bool,
) -> Result<(), rmcp::ErrorData> {
    let target = parse_resource_uri(uri).map(|(s, u)| (s.to_owned(), u.to_owned()));
    let arguments = object([("uri", Value::String(uri.to_owned()))]);
    let governed = Governed {
        pipeline,
        read: &read,
        arguments: &arguments,
    };
    governed
        .run(
            target,
            Reason::UnknownResource,
            format!("there is no resource '{uri}'"),
            |(service, _)| {
                let subscribable = pipeline
                    .catalogs
                    .directory()
                    .get(service)
                    .is_some_and(|s| s.surface.features.subscribe);
                if subscribable || !on {
                    Ok(())
                } else {
                    Err(Refusal::new(
                        Reason::UnknownResource,
                        format!("service '{service}' offers no resource subscriptions"),
                    ))
                }
            },
            move |_, upstream, _| {
                let uri = upstream.to_owned();
                if on {
                    UpstreamAsk::Subscribe { uri }
                } else {
                    UpstreamAsk::Unsubscribe { uri }
                }
            },
            |_, _, _| async { Ok(()) },
        )
        .await
}

fn prompt_exists(pipeline: &Pipeline, service: &str, prompt: &str) -> Result<(), Refusal> {
    let known = pipeline
        .catalogs
        .directory()
        .get(service)
        .is_some_and(|s| s.surface.prompts.iter().any(|p| p.name == prompt));
    if known {
        Ok(())
    } else {
        Err(Refusal::new(
            Reason::UnknownPrompt,
            format!("service '{service}' has no prompt '{prompt}'"),
        ))
    }
}

/// The contents' own URI, in the gateway's namespace.
fn map_contents_uri(service: &str, contents: &mut rmcp::model::ResourceContents) {
    use rmcp::model::ResourceContents::*;
    if let TextResourceContents { uri, .. } | BlobResourceContents { uri, .. } = contents {
        *uri = resource_uri(service, uri);
    }
}

fn object<const N: usize>(pairs: [(&str, Value); N]) -> JsonObject {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

fn unexpected() -> Refusal {
    Refusal::new(
        Reason::UpstreamError,
        "the upstream answered with another kind of result",
    )
}

/// The stages every federated request passes, in order: drain, name,
/// access (the grant's actor under a grant), pre-hooks, rehydration,
/// write-ahead row, the upstream (inside the grant's gate), the answer's PII
/// pass, outcome.
struct Governed<'a> {
    pipeline: &'a Pipeline,
    read: &'a Read<'a>,
    arguments: &'a JsonObject,
}

/// How a federated request ended.
enum Ended<T> {
    Answered(T),
    /// Refused before anything ran: one complete row.
    Refused(Refusal),
    /// Stopped after the write-ahead (refused: withheld, grant ended) or
    /// failed (the upstream, or recording its outcome).
    After(Decision, rmcp::ErrorData),
}

impl Governed<'_> {
    #[allow(clippy::too_many_arguments)]
    async fn run<T, F, Fut>(
        &self,
        target: Option<(String, String)>,
        unknown: Reason,
        unknown_message: String,
        check: impl FnOnce((&str, &str)) -> Result<(), Refusal>,
        ask: impl FnOnce(&str, &str, JsonObject) -> UpstreamAsk,
        finish: F,
    ) -> Result<T, rmcp::ErrorData>
    where
        F: FnOnce(String, String, UpstreamAnswer) -> Fut,
        Fut: Future<Output = Result<T, Refusal>>,
    {
        let started = Instant::now();
        let principal = self.read.principal;
        let mut row = RowStart {
            subject: &principal.subject,
            actor: &principal.actor,
            session: Some(self.read.session.key.clone()),
            client: &self.read.session.client,
            tool: self.read.method,
            arguments: self.arguments,
        }
        .row();
        if let Some(grant) = &principal.grant {
            row.grant_id = Some(grant.scope.grant_id.clone());
            row.job_id = grant.scope.job_id.clone();
        }
        let span = tracing::info_span!(
            parent: &self.read.parent,
            "mcp.call",
            mcp.method.name = self.read.method,
            mcpgate.subject = %principal.subject,
            mcpgate.actor = %principal.actor,
            mcpgate.service = tracing::field::Empty,
        );
        let ended = self
            .stages(
                target,
                unknown,
                unknown_message,
                check,
                ask,
                finish,
                &mut row,
                started,
            )
            .instrument(span.clone())
            .await;
        if let Some(service) = &row.service {
            span.record("mcpgate.service", service.as_str());
        }
        let (decision, reason, answer) = match ended {
            Ended::Answered(answer) => (Decision::Allowed, "", Ok(answer)),
            Ended::Refused(refusal) => {
                let code = refusal.code();
                let refusal = self
                    .pipeline
                    .audit
                    .refusal(row.clone(), refusal)
                    .instrument(audit_span("refusal"))
                    .await;
                (Decision::Refused, code, Err(refusal.into_mcp()))
            }
            Ended::After(decision, error) => (
                decision,
                error
                    .data
                    .as_ref()
                    .and_then(|d| d.get("reason"))
                    .and_then(Value::as_str)
                    .and_then(Reason::from_code)
                    .map_or("", Reason::code),
                Err(error),
            ),
        };
        // Counted like calls; the action label is the method (URIs and
        // prompt names are the caller's to choose, so never labels).
        let labels = CallLabels {
            service: row.service.clone().unwrap_or_default(),
            action: self.read.method.to_owned(),
            decision: decision.as_str(),
            reason,
        };
        self.pipeline
            .audit
            .stats()
            .calls
            .record(labels, started.elapsed());
        answer
    }

    #[allow(clippy::too_many_arguments)]
    async fn stages<T, F, Fut>(
        &self,
        target: Option<(String, String)>,
        unknown: Reason,
        unknown_message: String,
        check: impl FnOnce((&str, &str)) -> Result<(), Refusal>,
        ask: impl FnOnce(&str, &str, JsonObject) -> UpstreamAsk,
        finish: F,
        row: &mut AuditDecision,
        started: Instant,
    ) -> Ended<T>
    where
        F: FnOnce(String, String, UpstreamAnswer) -> Fut,
        Fut: Future<Output = Result<T, Refusal>>,
    {
        let pipeline = self.pipeline;
        let principal = self.read.principal;
        if pipeline.drain.is_draining() {
            return Ended::Refused(Refusal::new(
                Reason::ShuttingDown,
                "the gateway is shutting down",
            ));
        }
        let Some((service, upstream_name)) =
            target.filter(|(service, _)| pipeline.config.services.contains_key(service))
        else {
            return Ended::Refused(Refusal::new(unknown, unknown_message));
        };
        row.service = Some(service.clone());
        row.action = Some(upstream_name.clone());
        row.risk = Some(Risk::Read);
        // Access: a reader of the service (the grant's actor decides under a grant).
        match &principal.grant {
            Some(grant) => {
                if let Err(refusal) = authorize_service(grant, &service, Risk::Read)
                    .instrument(tracing::info_span!("mcp.grant"))
                    .await
                {
                    return Ended::Refused(refusal);
                }
            }
            None => {
                if principal.access_to(&service).is_none() {
                    // Indistinguishable from a missing one for the caller, audited precisely.
                    return Ended::Refused(Refusal::new(
                        Reason::ServiceNotAllowed,
                        format!("{} has no access to service '{service}'", principal.subject),
                    ));
                }
            }
        }
        let Some(upstream) = pipeline.catalogs.directory().upstream(&service) else {
            return Ended::Refused(Refusal::new(
                unknown,
                format!("service '{service}' is not an MCP server: it has no resources or prompts"),
            ));
        };
        if let Err(refusal) = check((&service, &upstream_name)) {
            return Ended::Refused(refusal);
        }
        // Company then user pre-hooks, as for a call: they may refuse or
        // rewrite the arguments. A read has no way to ask the human, so a
        // hook that wants a confirmation refuses it (fail closed).
        let mut arguments = self.arguments.clone();
        let facts = CallFacts {
            tool: self.read.method,
            service: &service,
            action: &upstream_name,
            risk: Risk::Read.as_str(),
            subject: &principal.subject,
            actor: &principal.actor,
        };
        let pre = tracing::info_span!("mcp.hooks.pre").in_scope(|| {
            pipeline
                .hooks
                .current()
                .run_pre(&facts, &mut arguments, pipeline.hooks.budget)
        });
        match pre {
            Err(refusal) => return Ended::Refused(refusal),
            Ok(pre) => {
                if let Some(hook) = pre.confirm {
                    return Ended::Refused(Refusal::new(
                        Reason::HookDenied,
                        format!(
                            "hook '{hook}' asks for the human's confirmation, which {} cannot carry",
                            self.read.method
                        ),
                    ));
                }
                for warning in pre.warnings {
                    tracing::warn!(service = %service, method = self.read.method, %warning, "hook warning on a read");
                }
            }
        }
        // Pseudonyms in the arguments become the real values again — only
        // this subject's own; anything else is refused.
        match pipeline
            .pii
            .rehydrate(&principal.subject, &service, &mut arguments)
            .instrument(tracing::info_span!("mcp.pii.rehydrate"))
            .await
        {
            Ok(counts) if counts.total() > 0 => {
                row.pii_rehydrated = Some(counts.total() as i64);
                row.pii_types = Some(counts.types());
            }
            Ok(_) => {}
            Err(refusal) => return Ended::Refused(refusal),
        }
        // Write-ahead: the read is on record before the upstream sees it.
        if let Err(refusal) = pipeline
            .audit
            .decision(row.clone())
            .instrument(audit_span("decision"))
            .await
        {
            return Ended::After(Decision::Refused, refusal.into_mcp());
        }
        let deadline = pipeline
            .config
            .services
            .get(&service)
            .and_then(|s| s.call_timeout)
            .unwrap_or(pipeline.config.limits.call_timeout)
            + Duration::from_secs(1);
        let upstream_span = tracing::info_span!(
            "mcp.upstream",
            otel.kind = "client",
            mcpgate.service = %service,
        );
        let trace = crate::telemetry::trace_context(&upstream_span);
        let asked = ask(&service, &upstream_name, arguments);
        let answer = async {
            // Under a grant, the hand-off happens inside its gate.
            let _admission = match &principal.grant {
                Some(grant) => match grant.gate.admit().await {
                    Ok(admission) => Some(admission),
                    Err(reason) => return Err(Err(grant_ended(grant, &reason))),
                },
                None => None,
            };
            connector::ask(&upstream, &service, asked, trace, deadline)
                .await
                .map_err(Ok)
        }
        .instrument(upstream_span)
        .await;
        let answer = match answer {
            Ok(answer) => answer,
            Err(Err(refusal)) => {
                let error = self
                    .refused_after(row, started, refusal, "not_called")
                    .await;
                return Ended::After(Decision::Refused, error);
            }
            Err(Ok(error)) => {
                return Ended::After(Decision::Failed, self.failed(row, started, error).await);
            }
        };
        let result = match finish(service.clone(), principal.subject.clone(), answer).await {
            Ok(result) => result,
            Err(refusal) => {
                tracing::error!(service = %service, reason = refusal.code(), "answer withheld");
                let error = self.refused_after(row, started, refusal, "withheld").await;
                return Ended::After(Decision::Refused, error);
            }
        };
        let outcome = AuditOutcome {
            call_id: row.call_id.clone(),
            at: actors::now_rfc3339(),
            decision: Decision::Allowed,
            reason_code: None,
            reason: None,
            upstream_status: "ok".into(),
            latency_ms: Some(started.elapsed().as_secs_f64() * 1000.0),
        };
        match pipeline
            .audit
            .outcome(outcome)
            .instrument(audit_span("outcome"))
            .await
        {
            Ok(()) => Ended::Answered(result),
            Err(unrecorded) => Ended::After(Decision::Failed, unrecorded.into_mcp()),
        }
    }

    async fn refused_after(
        &self,
        row: &AuditDecision,
        started: Instant,
        refusal: Refusal,
        status: &str,
    ) -> rmcp::ErrorData {
        self.pipeline
            .audit
            .refusal_after_write_ahead(row, started, refusal, status)
            .instrument(audit_span("outcome"))
            .await
            .into_mcp()
    }

    /// The upstream failed: the row's outcome says how; the client gets the
    /// upstream's own JSON-RPC error code (a missing resource stays one).
    async fn failed(
        &self,
        row: &AuditDecision,
        started: Instant,
        error: ConnectorError,
    ) -> rmcp::ErrorData {
        let service = row.service.as_deref().unwrap_or_default();
        let latency_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
        let (outcome, reason, message) = failed_outcome(&row.call_id, service, &error, latency_ms);
        let code = match &error {
            ConnectorError::Upstream { code, .. } => *code,
            _ => reason.jsonrpc_code(),
        };
        if let Err(unrecorded) = self
            .pipeline
            .audit
            .outcome(outcome)
            .instrument(audit_span("outcome"))
            .await
        {
            return unrecorded.into_mcp();
        }
        rmcp::ErrorData::new(
            rmcp::model::ErrorCode(code),
            message,
            Some(serde_json::json!({ "reason": reason.code() })),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_back_to_their_service_and_upstream_name() {
        let uri = resource_uri("everything", "demo://resource/static/document/a.md");
        assert_eq!(
            uri,
            "mcpgate://everything/demo://resource/static/document/a.md"
        );
        assert_eq!(
            parse_resource_uri(&uri),
            Some(("everything", "demo://resource/static/document/a.md"))
        );
        // A template's expansion maps back by the same rule.
        let template = resource_uri("everything", "demo://resource/dynamic/text/{id}");
        let expanded = template.replace("{id}", "7");
        assert_eq!(
            parse_resource_uri(&expanded),
            Some(("everything", "demo://resource/dynamic/text/7"))
        );
        let prompt = prompt_name("my-svc", "args.prompt");
        assert_eq!(parse_prompt_name(&prompt), Some(("my-svc", "args.prompt")));
    }

    #[test]
    fn names_outside_the_scheme_are_not_parsed() {
        for uri in [
            "demo://resource/x",
            "mcpgate://",
            "mcpgate://everything",
            "mcpgate://everything/",
            "mcpgate:///demo://x",
        ] {
            assert_eq!(parse_resource_uri(uri), None, "{uri}");
        }
        for name in ["simple-prompt", ".x", "svc."] {
            assert_eq!(parse_prompt_name(name), None, "{name}");
        }
    }
}
