//! The console's pages (GET): read-only views of the store and the gateway.

use std::sync::Arc;

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;

use super::{Console, Viewer};
use crate::audit::{AuditFilter, AuditRow};
use crate::delegation::store;
use crate::domain::Reason;

/// Rows a page shows at most.
const PAGE_ROWS: i64 = 200;

fn layout(title: &str, viewer: Option<&Viewer>, body: Markup) -> Html<String> {
    layout_refreshing(title, viewer, body, None)
}

/// A page that reloads itself every `refresh_secs` (the audit's live tail:
/// a meta refresh, so no script is needed and the CSP still forbids all).
fn layout_refreshing(
    title: &str,
    viewer: Option<&Viewer>,
    body: Markup,
    refresh_secs: Option<u32>,
) -> Html<String> {
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { (title) " · mcpgate" }
                    @if let Some(secs) = refresh_secs {
                        meta http-equiv="refresh" content=(secs);
                    }
                    link rel="stylesheet" href="/console/assets/console.css";
                }
                body {
                    header {
                        nav aria-label="Console" {
                            strong { "mcpgate" }
                            @if let Some(v) = viewer {
                                a href="/console/me" { "Done in my name" }
                                @if v.admin {
                                    a href="/console/callers" { "Workflow Callers" }
                                    a href="/console/clients" { "General → Clients" }
                                    a href="/console/audit" { "Audit" }
                                a href="/console/services" { "Services" }
                                a href="/console/users" { "Users and access" }
                                a href="/console/hooks" { "Hooks and PII" }
                                a href="/console/dashboard" { "Dashboard" }
                                }
                                form method="post" action="/console/logout" class="inline" {
                                    input type="hidden" name="csrf" value=(v.csrf);
                                    span { (v.email) }
                                    button type="submit" { "Sign out" }
                                }
                            }
                        }
                    }
                    main { h1 { (title) } (body) }
                }
            }
        }
        .into_string(),
    )
}

/// A page of a signed-in viewer.
pub fn page(title: &str, viewer: &Viewer, body: Markup) -> Html<String> {
    layout(title, Some(viewer), body)
}

pub fn refusal_page(code: &str, message: &str) -> Html<String> {
    layout(
        "Refused",
        None,
        html! { p role="alert" { strong { (code) } ": " (message) } p { a href="/console/me" { "Back" } } },
    )
}

/// A page only admins see; anyone else is refused (403, audited).
pub(super) async fn admin_only(console: &Console, viewer: &Viewer, path: &str) -> Option<Response> {
    if viewer.admin {
        return None;
    }
    let message = format!("{} is not an admin", viewer.email);
    Some(
        console
            .refuse_at(&viewer.email, path, Reason::NotAdmin, &message)
            .await,
    )
}

pub(super) fn store_error(e: sqlx::Error) -> Response {
    tracing::error!(error = %e, "console: store");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        refusal_page("storage_unavailable", "the gateway's store is unavailable"),
    )
        .into_response()
}

#[derive(Deserialize, Default)]
pub struct LoginQuery {
    error: Option<String>,
}

pub async fn login(
    State(console): State<Arc<Console>>,
    Query(q): Query<LoginQuery>,
) -> Html<String> {
    let oauth = &console.gw.config().oauth;
    layout(
        "Sign in",
        None,
        html! {
            @if let Some(error) = q.error {
                p role="alert" { (error) }
            }
            @if oauth.enabled && oauth.oidc.is_some() {
                p { a href="/oauth/signin/console" { "Sign in with your company account" } }
                p { "Or with a gateway token:" }
            }
            form method="post" action="/console/login" {
                label for="token" { "Gateway token" }
                input id="token" name="token" type="password" autocomplete="off" required;
                button type="submit" { "Sign in" }
            }
            p class="hint" { "The token is checked once and not kept: the browser holds a signed session that ends when the token is revoked." }
        },
    )
}

fn rows_table(rows: &[AuditRow]) -> Markup {
    html! {
        table {
            thead { tr {
                th scope="col" { "#" } th scope="col" { "When" } th scope="col" { "Subject" }
                th scope="col" { "Actor" } th scope="col" { "Service" } th scope="col" { "Action" }
                th scope="col" { "Decision" } th scope="col" { "Reason" } th scope="col" { "Grant / job" }
                th scope="col" { "PII" }
            } }
            tbody {
                @for r in rows.iter().rev() {
                    tr {
                        td { (r.id) }
                        td { (r.at) }
                        td { (r.subject) }
                        td { (r.actor) }
                        td { (r.service.as_deref().unwrap_or("—")) }
                        td { (r.action.as_deref().unwrap_or(&r.tool)) }
                        td { (r.decision.as_str()) }
                        td {
                            @if let Some(code) = &r.reason_code { code { (code) } " " }
                            (r.reason.as_deref().unwrap_or(""))
                        }
                        td { (r.grant_id.as_deref().unwrap_or("")) " " (r.job_id.as_deref().unwrap_or("")) }
                        td {
                            // Counts and types only: never a value.
                            @if let Some(n) = r.pii_rehydrated { (n) " re-identified " }
                            (r.pii_types.as_deref().unwrap_or(""))
                        }
                    }
                }
            }
        }
    }
}

pub async fn me(
    State(console): State<Arc<Console>>,
    Extension(viewer): Extension<Viewer>,
) -> Response {
    let filter = AuditFilter {
        subject: Some(viewer.email.clone()),
        limit: PAGE_ROWS,
        ..Default::default()
    };
    let rows = match console.gw.audit().rows(&filter).await {
        Ok(rows) => rows,
        Err(e) => return store_error(e),
    };
    let tokens = match crate::tokens::list(console.gw.pool()).await {
        Ok(tokens) => tokens,
        Err(e) => return store_error(e),
    };
    let services_and_hooks = match super::operate::my_services_and_hooks(&console, &viewer).await {
        Ok(markup) => markup,
        Err(response) => return response,
    };
    let clients = match super::operate::my_clients(&console, &viewer).await {
        Ok(markup) => markup,
        Err(response) => return response,
    };
    layout(
        "Done in my name",
        Some(&viewer),
        html! {
            p { "What the gateway did with you as the subject: your own calls, and those a workflow made as you (its flow is the actor). Newest first; at most " (PAGE_ROWS) "." }
            @if rows.is_empty() { p { "Nothing yet." } } @else { (rows_table(&rows)) }
            (services_and_hooks)
            (clients)
            (super::operate::my_tokens(&viewer, &tokens))
        },
    )
    .into_response()
}

pub async fn callers(
    State(console): State<Arc<Console>>,
    Extension(viewer): Extension<Viewer>,
) -> Response {
    if let Some(refused) = admin_only(&console, &viewer, "/console/callers").await {
        return refused;
    }
    let pool = console.gw.pool();
    let (grants, approvals, instances) = match tokio::try_join!(
        store::list_grants(pool, false),
        store::list_approvals(pool),
        store::list_instances(pool)
    ) {
        Ok(all) => all,
        Err(e) => return store_error(e),
    };
    let refused = match console
        .gw
        .audit()
        .rows(&AuditFilter {
            reason_code: Some(Reason::HighRiskNotApproved.code().into()),
            limit: 50,
            ..Default::default()
        })
        .await
    {
        Ok(rows) => rows,
        Err(e) => return store_error(e),
    };
    let ids: Vec<String> = grants.iter().take(500).map(|g| g.id.clone()).collect();
    let calls = match crate::audit::calls_per_grant(pool, &ids).await {
        Ok(calls) => calls,
        Err(e) => return store_error(e),
    };
    let csrf = &viewer.csrf;
    layout(
        "Workflow Callers",
        Some(&viewer),
        html! {
            h2 { "Live grants" }
            @if grants.is_empty() { p { "No live grant." } } @else {
                table {
                    thead { tr {
                        th scope="col" { "Grant" } th scope="col" { "Subject" } th scope="col" { "Flow (actor)" }
                        th scope="col" { "Instance / workspace" } th scope="col" { "Services" }
                        th scope="col" { "Since" } th scope="col" { "Expires" } th scope="col" { "Calls" }
                        th scope="col" { "" }
                    } }
                    tbody {
                        @for g in &grants {
                            tr {
                                td { code { (g.id) } }
                                td { (g.subject) }
                                td { (g.flow_path) br; small { (g.actor) } }
                                td { (g.instance) " / " (g.workspace) }
                                td { @for (service, class) in &g.services { (service) ": " (class) br; } }
                                td { (g.created_at) }
                                td { (g.expires_at) }
                                td { (calls.get(&g.id).copied().unwrap_or(0)) }
                                td {
                                    form method="post" action="/console/callers/revoke" {
                                        input type="hidden" name="csrf" value=(csrf);
                                        input type="hidden" name="grant_id" value=(g.id);
                                        button type="submit" aria-label={ "Revoke grant " (g.id) } { "Revoke" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            h2 { "Refused high_risk attempts" }
            @if refused.is_empty() { p { "None." } } @else {
                table {
                    thead { tr {
                        th scope="col" { "When" } th scope="col" { "Owner" } th scope="col" { "Instance" }
                        th scope="col" { "Why" } th scope="col" { "" }
                    } }
                    tbody {
                        @for r in refused.iter().rev() {
                            @let parsed = r.reason.as_deref().and_then(crate::delegation::exchange::parse_high_risk_refusal);
                            // The actor is `windmill:<instance>/<workspace>[/<flow>]`.
                            @let place = r.actor.strip_prefix("windmill:").and_then(|p| {
                                let mut parts = p.splitn(3, '/');
                                Some((parts.next()?, parts.next()?))
                            });
                            tr {
                                td { (r.at) }
                                td { (r.subject) }
                                td { (r.actor) }
                                td { (r.reason.as_deref().unwrap_or("")) }
                                td {
                                    @if let (Some((service, flow)), Some((instance, workspace))) = (&parsed, place) {
                                        form method="post" action="/console/callers/approve" {
                                            input type="hidden" name="csrf" value=(csrf);
                                            input type="hidden" name="instance" value=(instance);
                                            input type="hidden" name="workspace" value=(workspace);
                                            input type="hidden" name="flow_path" value=(flow);
                                            input type="hidden" name="owner" value=(r.subject);
                                            input type="hidden" name="services" value=(service);
                                            button type="submit" { "Approve this delegation" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            h2 { "high_risk approvals" }
            @if approvals.is_empty() { p { "None." } } @else {
                table {
                    thead { tr {
                        th scope="col" { "Flow" } th scope="col" { "Owner" } th scope="col" { "Instance / workspace" }
                        th scope="col" { "Services" } th scope="col" { "Approved by" } th scope="col" { "" }
                    } }
                    tbody {
                        @for a in &approvals {
                            tr {
                                td { (a.flow_path) } td { (a.owner) } td { (a.instance) " / " (a.workspace) }
                                td { (a.services.join(", ")) } td { (a.approved_by) " " small { (a.approved_at) } }
                                td {
                                    form method="post" action="/console/callers/withdraw" {
                                        input type="hidden" name="csrf" value=(csrf);
                                        input type="hidden" name="id" value=(a.id);
                                        button type="submit" aria-label={ "Withdraw approval " (a.id) } { "Withdraw" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            h3 { "Approve a flow's high_risk services" }
            form method="post" action="/console/callers/approve" class="stack" {
                input type="hidden" name="csrf" value=(csrf);
                label for="ap-instance" { "Instance" }
                select id="ap-instance" name="instance" {
                    @for i in &instances { option value=(i.name) { (i.name) } }
                }
                label for="ap-workspace" { "Workspace" }
                input id="ap-workspace" name="workspace" required;
                label for="ap-flow" { "Flow path" }
                input id="ap-flow" name="flow_path" required;
                label for="ap-owner" { "Owner (email)" }
                input id="ap-owner" name="owner" type="email" required;
                label for="ap-services" { "Services (comma-separated)" }
                input id="ap-services" name="services" required;
                button type="submit" { "Approve" }
            }
        },
    )
    .into_response()
}

pub async fn clients(
    State(console): State<Arc<Console>>,
    Extension(viewer): Extension<Viewer>,
) -> Response {
    if let Some(refused) = admin_only(&console, &viewer, "/console/clients").await {
        return refused;
    }
    let pool = console.gw.pool();
    let (enabled, instances) =
        match tokio::try_join!(store::delegation_enabled(pool), store::list_instances(pool)) {
            Ok(both) => both,
            Err(e) => return store_error(e),
        };
    let csrf = &viewer.csrf;
    let service_accounts: Vec<_> = console
        .gw
        .config()
        .users
        .iter()
        .filter(|u| u.service_account)
        .collect();
    layout(
        "General → Clients",
        Some(&viewer),
        html! {
            h2 { "Delegated Access" }
            form method="post" action="/console/clients/delegation" {
                input type="hidden" name="csrf" value=(csrf);
                p { "Delegated Access is " strong id="delegation-state" { @if enabled { "on" } @else { "off" } } "." }
                input type="hidden" name="enabled" value=(if enabled { "false" } else { "true" });
                button type="submit" { @if enabled { "Turn off" } @else { "Turn on" } }
            }
            h2 { "Windmill instances" }
            @if instances.is_empty() { p { "None registered." } } @else {
                table {
                    thead { tr {
                        th scope="col" { "Name" } th scope="col" { "URL" } th scope="col" { "Workspace" }
                        th scope="col" { "Allowed flows" } th scope="col" { "" }
                    } }
                    tbody {
                        @for i in &instances {
                            tr {
                                td { (i.name) } td { (i.base_url) } td { (i.workspace) }
                                td { (i.allowed_flows.as_ref().map(|f| f.join(", ")).unwrap_or_else(|| "any".into())) }
                                td {
                                    form method="post" action="/console/clients/instances/remove" {
                                        input type="hidden" name="csrf" value=(csrf);
                                        input type="hidden" name="name" value=(i.name);
                                        button type="submit" aria-label={ "Remove instance " (i.name) } { "Remove" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            h3 { "Add or edit an instance" }
            form method="post" action="/console/clients/instances" class="stack" {
                input type="hidden" name="csrf" value=(csrf);
                label for="in-name" { "Name" }
                input id="in-name" name="name" required;
                label for="in-url" { "Base URL" }
                input id="in-url" name="base_url" type="url" required;
                label for="in-workspace" { "Workspace" }
                input id="in-workspace" name="workspace" required;
                label for="in-flows" { "Allowed flow paths (globs, comma-separated; empty = any)" }
                input id="in-flows" name="allowed_flows";
                button type="submit" { "Save instance" }
            }
            h2 { "Workflow service accounts" }
            @if service_accounts.is_empty() { p { "None configured (users with service_account: true)." } } @else {
                ul { @for u in &service_accounts { li { (u.email) } } }
            }
        },
    )
    .into_response()
}

#[derive(Deserialize, Default)]
pub struct AuditQuery {
    subject: Option<String>,
    actor: Option<String>,
    service: Option<String>,
    decision: Option<String>,
    reason: Option<String>,
    since: Option<String>,
    format: Option<String>,
    /// `1`: the live tail (the page reloads itself every few seconds).
    live: Option<String>,
}

impl AuditQuery {
    fn filter(&self, limit: i64) -> AuditFilter {
        let given = |v: &Option<String>| {
            v.as_ref()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
        };
        AuditFilter {
            subject: given(&self.subject),
            actor: given(&self.actor),
            service: given(&self.service),
            decision: given(&self.decision),
            reason_code: given(&self.reason),
            since: given(&self.since),
            limit,
        }
    }

    fn query_string(&self) -> String {
        let mut out = form_urlencoded::Serializer::new(String::new());
        for (name, value) in [
            ("subject", &self.subject),
            ("actor", &self.actor),
            ("service", &self.service),
            ("decision", &self.decision),
            ("reason", &self.reason),
            ("since", &self.since),
        ] {
            if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
                out.append_pair(name, v);
            }
        }
        out.finish()
    }
}

pub async fn audit(
    State(console): State<Arc<Console>>,
    Extension(viewer): Extension<Viewer>,
    Query(q): Query<AuditQuery>,
) -> Response {
    if let Some(refused) = admin_only(&console, &viewer, "/console/audit").await {
        return refused;
    }
    let rows = match console.gw.audit().rows(&q.filter(PAGE_ROWS)).await {
        Ok(rows) => rows,
        Err(e) => return store_error(e),
    };
    let field = |id: &str, label: &str, value: &Option<String>| {
        html! {
            label for=(id) { (label) }
            input id=(id) name=(id) value=(value.as_deref().unwrap_or(""));
        }
    };
    let query = q.query_string();
    let live = q.live.as_deref() == Some("1");
    layout_refreshing(
        "Audit",
        Some(&viewer),
        html! {
            form method="get" action="/console/audit" class="filters" {
                (field("subject", "Subject", &q.subject))
                (field("actor", "Actor", &q.actor))
                (field("service", "Service", &q.service))
                (field("decision", "Decision", &q.decision))
                (field("reason", "Reason code", &q.reason))
                (field("since", "Since (RFC 3339)", &q.since))
                button type="submit" { "Filter" }
            }
            p {
                "Export these rows: "
                a href={ "/console/audit/export?format=csv&" (query) } { "CSV" } " · "
                a href={ "/console/audit/export?format=jsonl&" (query) } { "JSONL" }
                " · "
                @if live {
                    strong id="live-tail" { "Live: the newest rows, reloaded every " (LIVE_TAIL_SECS) " s" }
                    " · " a href={ "/console/audit?" (query) } { "Stop" }
                } @else {
                    a href={ "/console/audit?live=1&" (query) } { "Live tail" }
                }
            }
            @if rows.is_empty() { p { "No rows match." } } @else { (rows_table(&rows)) }
        },
        live.then_some(LIVE_TAIL_SECS),
    )
    .into_response()
}

/// How often the audit's live tail reloads.
const LIVE_TAIL_SECS: u32 = 3;

/// Rows an export holds at most.
const EXPORT_ROWS: i64 = 100_000;

pub async fn audit_export(
    State(console): State<Arc<Console>>,
    Extension(viewer): Extension<Viewer>,
    Query(q): Query<AuditQuery>,
) -> Response {
    if let Some(refused) = admin_only(&console, &viewer, "/console/audit/export").await {
        return refused;
    }
    let rows = match console.gw.audit().rows(&q.filter(EXPORT_ROWS)).await {
        Ok(rows) => rows,
        Err(e) => return store_error(e),
    };
    let (body, content_type, extension) = match q.format.as_deref() {
        Some("jsonl") => {
            let mut out = String::new();
            for row in &rows {
                out.push_str(&serde_json::to_string(row).unwrap_or_default());
                out.push('\n');
            }
            (out, "application/x-ndjson", "jsonl")
        }
        Some("csv") | None => match csv_of(&rows) {
            Ok(out) => (out, "text/csv; charset=utf-8", "csv"),
            Err(e) => {
                tracing::error!(error = %e, "console: CSV export");
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the export could not be written",
                )
                    .into_response();
            }
        },
        Some(other) => {
            return (
                StatusCode::BAD_REQUEST,
                refusal_page(
                    "invalid_format",
                    &format!("format '{other}': use csv or jsonl"),
                ),
            )
                .into_response();
        }
    };
    (
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"mcpgate-audit.{extension}\""),
            ),
        ],
        body,
    )
        .into_response()
}

fn csv_of(rows: &[AuditRow]) -> Result<String, csv::Error> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record([
        "id",
        "started_at",
        "completed_at",
        "subject",
        "actor",
        "service",
        "tool",
        "action",
        "risk",
        "decision",
        "reason_code",
        "reason",
        "grant_id",
        "job_id",
        "upstream_status",
        "latency_ms",
    ])?;
    for r in rows {
        let opt = |v: &Option<String>| v.clone().unwrap_or_default();
        writer.write_record([
            r.id.to_string(),
            r.at.clone(),
            opt(&r.completed_at),
            r.subject.clone(),
            r.actor.clone(),
            opt(&r.service),
            r.tool.clone(),
            opt(&r.action),
            r.risk.map(|x| x.as_str().to_owned()).unwrap_or_default(),
            r.decision.as_str().to_owned(),
            opt(&r.reason_code),
            opt(&r.reason),
            opt(&r.grant_id),
            opt(&r.job_id),
            opt(&r.upstream_status),
            r.latency_ms.map(|l| l.to_string()).unwrap_or_default(),
        ])?;
    }
    let bytes = writer.into_inner().map_err(|e| e.into_error())?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}
