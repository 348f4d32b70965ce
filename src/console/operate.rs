//! The operator's other panels: Services (connectors, actions, risk
//! overrides), Users and access (gateway tokens), Hooks and PII, and the
//! Dashboard (charts drawn as inline SVG on the server: no script needed).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};

use super::actions::{AdminPost, Post, field, invalid};
use super::pages::{admin_only, page, store_error};
use super::{Console, Viewer};
use crate::config::Upstream;
use crate::domain::{Reason, glob_match};
use crate::stats::DURATION_BUCKETS;

/// Where an action's risk class comes from, as its catalog was built.
fn risk_source(
    console: &Console,
    service: &str,
    action: &str,
    overrides: &BTreeMap<String, actors::grant::Risk>,
) -> &'static str {
    let qualified = format!("{service}.{action}");
    if overrides.keys().any(|p| glob_match(p, &qualified)) {
        return "override";
    }
    let config = console.gw.config();
    let Some(service_config) = config.services.get(service) else {
        return "default";
    };
    if crate::catalog::classify(service, action, service_config, &config.policy).is_some() {
        return "config";
    }
    match service_config.upstream {
        Upstream::Native(_) => "catalog",
        _ => "annotation",
    }
}

pub async fn services(
    State(console): State<Arc<Console>>,
    Extension(viewer): Extension<Viewer>,
) -> Response {
    if let Some(refused) = admin_only(&console, &viewer, "/console/services").await {
        return refused;
    }
    let overrides = console.gw.catalogs().overrides();
    let names: Vec<String> = console.gw.config().services.keys().cloned().collect();
    let csrf = &viewer.csrf;
    page(
        "Services",
        &viewer,
        html! {
            table {
                thead { tr {
                    th scope="col" { "Service" } th scope="col" { "State" } th scope="col" { "Starts" }
                    th scope="col" { "Breaker" } th scope="col" { "Last error" } th scope="col" { "Actions" }
                } }
                tbody {
                    @for name in &names {
                        @let status = console.gw.directory().get(name);
                        tr {
                            td { a href={ "#svc-" (name) } { (name) } }
                            td { (status.as_ref().map(|s| format!("{:?}", s.state).to_lowercase()).unwrap_or_else(|| "not started".into())) }
                            td { (status.as_ref().map(|s| s.starts).unwrap_or(0)) }
                            td { (status.as_ref().and_then(|s| s.breaker.clone()).unwrap_or_else(|| "closed".into())) }
                            td { (status.as_ref().and_then(|s| s.last_error.clone()).unwrap_or_default()) }
                            td { (status.as_ref().map(|s| s.tools.len()).unwrap_or(0)) }
                        }
                    }
                }
            }
            h2 { "Risk overrides" }
            @if overrides.is_empty() { p { "None." } } @else {
                table {
                    thead { tr { th scope="col" { "Pattern" } th scope="col" { "Risk" } th scope="col" { "" } } }
                    tbody {
                        @for (pattern, risk) in overrides.iter() {
                            tr {
                                td { code { (pattern) } } td { (risk.as_str()) }
                                td {
                                    form method="post" action="/console/services/overrides/remove" {
                                        input type="hidden" name="csrf" value=(csrf);
                                        input type="hidden" name="pattern" value=(pattern);
                                        button type="submit" aria-label={ "Remove override " (pattern) } { "Remove" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            form method="post" action="/console/services/overrides" class="stack" {
                input type="hidden" name="csrf" value=(csrf);
                label for="ov-pattern" { "Pattern (service.action, globs allowed)" }
                input id="ov-pattern" name="pattern" required placeholder="jira.delete_*";
                label for="ov-risk" { "Risk" }
                select id="ov-risk" name="risk" {
                    option value="read" { "read" } option value="write" { "write" } option value="high_risk" { "high_risk" }
                }
                button type="submit" { "Set override" }
            }
            @for name in &names {
                @if let Some(catalog) = console.gw.catalogs().catalog(name) {
                    h2 id={ "svc-" (name) } { (name) ": actions" }
                    table {
                        thead { tr {
                            th scope="col" { "Action" } th scope="col" { "Risk" } th scope="col" { "From" }
                            th scope="col" { "Confirm" } th scope="col" { "Description" }
                        } }
                        tbody {
                            @for action in catalog.actions.values() {
                                tr {
                                    td { code { (action.name) } }
                                    td { (action.risk.as_str()) }
                                    td { (risk_source(&console, name, &action.name, &overrides)) }
                                    td { @if action.confirm { "asks first" } @else { "—" } }
                                    td { (action.description.chars().take(160).collect::<String>()) }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
    .into_response()
}

pub async fn set_override(
    State(console): State<Arc<Console>>,
    AdminPost(viewer, form): AdminPost,
) -> Response {
    let pattern = field(&form, "pattern");
    let Some(risk) = actors::grant::Risk::parse(field(&form, "risk")) else {
        return invalid(Reason::InvalidBody, "risk: use read, write or high_risk");
    };
    if pattern.is_empty() || !pattern.contains('.') {
        return invalid(
            Reason::InvalidPattern,
            "pattern: service.action (globs allowed), e.g. jira.delete_*",
        );
    }
    if let Err(e) = console
        .gw
        .catalogs()
        .set_override(pattern, Some(risk), &viewer.email)
        .await
    {
        return store_error(e);
    }
    console
        .done(
            &viewer.email,
            "set_override",
            format!("{pattern} = {}", risk.as_str()),
            "/console/services",
        )
        .await
}

pub async fn remove_override(
    State(console): State<Arc<Console>>,
    AdminPost(viewer, form): AdminPost,
) -> Response {
    let pattern = field(&form, "pattern");
    match console
        .gw
        .catalogs()
        .set_override(pattern, None, &viewer.email)
        .await
    {
        Ok(true) => {}
        Ok(false) => return invalid(Reason::NotFound, &format!("no override '{pattern}'")),
        Err(e) => return store_error(e),
    }
    console
        .done(
            &viewer.email,
            "remove_override",
            format!("removed {pattern}"),
            "/console/services",
        )
        .await
}

pub async fn users(
    State(console): State<Arc<Console>>,
    Extension(viewer): Extension<Viewer>,
) -> Response {
    if let Some(refused) = admin_only(&console, &viewer, "/console/users").await {
        return refused;
    }
    let tokens = match crate::tokens::list(console.gw.pool()).await {
        Ok(tokens) => tokens,
        Err(e) => return store_error(e),
    };
    let config = console.gw.config().clone();
    let mut clients = Vec::new();
    for user in config.users.iter().filter(|u| !u.service_account) {
        match crate::authserver::tokens::authorized_clients(console.gw.pool(), &user.email).await {
            Ok(theirs) => clients.extend(theirs.into_iter().map(|c| (user.email.clone(), c))),
            Err(e) => return store_error(e),
        }
    }
    page(
        "Users and access",
        &viewer,
        html! {
            table {
                thead { tr {
                    th scope="col" { "User" } th scope="col" { "Access" } th scope="col" { "Flags" }
                } }
                tbody {
                    @for u in &config.users {
                        tr {
                            td { (u.email) }
                            td { @for (service, risk) in &u.access { (service) ": " (risk.as_str()) br; } }
                            td { @if u.admin { "admin " } @if u.service_account { "service account" } }
                        }
                    }
                }
            }
            p class="hint" { "Users and their access are configured in the gateway's config file." }
            h2 { "Authorized AI clients" }
            @if clients.is_empty() { p { "No AI client holds anyone's sign-in." } } @else {
                table {
                    thead { tr {
                        th scope="col" { "User" } th scope="col" { "Client" } th scope="col" { "Since" }
                        th scope="col" { "Until" } th scope="col" { "" }
                    } }
                    tbody {
                        @for (user, c) in &clients {
                            tr {
                                td { (user) } td { (c.client_name) br; small { (c.client_id) } }
                                td { (c.created_at) } td { (c.expires_at) }
                                td {
                                    form method="post" action="/console/users/clients/revoke" {
                                        input type="hidden" name="csrf" value=(viewer.csrf);
                                        input type="hidden" name="user" value=(user);
                                        input type="hidden" name="client_id" value=(c.client_id);
                                        button type="submit" aria-label={ "Revoke " (c.client_name) " for " (user) } { "Revoke" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            h2 { "Gateway tokens" }
            (tokens_table(&viewer, tokens.iter().filter(|t| t.revoked_at.is_none()).collect()))
            h3 { "Create a token" }
            form method="post" action="/console/tokens" class="stack" {
                input type="hidden" name="csrf" value=(viewer.csrf);
                label for="tk-user" { "User" }
                select id="tk-user" name="user" {
                    @for u in &config.users { option value=(u.email) { (u.email) } }
                }
                label for="tk-name" { "Name" }
                input id="tk-name" name="name";
                button type="submit" { "Create token" }
            }
        },
    )
    .into_response()
}

fn tokens_table(viewer: &Viewer, tokens: Vec<&crate::tokens::TokenRecord>) -> Markup {
    html! {
        @if tokens.is_empty() { p { "No active token." } } @else {
            table {
                thead { tr {
                    th scope="col" { "Id" } th scope="col" { "User" } th scope="col" { "Name" }
                    th scope="col" { "Created" } th scope="col" { "Expires" } th scope="col" { "" }
                } }
                tbody {
                    @for t in tokens {
                        tr {
                            td { code { (t.id) } } td { (t.user_email) } td { (t.name.as_deref().unwrap_or("")) }
                            td { (t.created_at) } td { (t.expires_at.as_deref().unwrap_or("never")) }
                            td {
                                form method="post" action="/console/tokens/revoke" {
                                    input type="hidden" name="csrf" value=(viewer.csrf);
                                    input type="hidden" name="id" value=(t.id);
                                    button type="submit" aria-label={ "Revoke token " (t.id) } { "Revoke" }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// An admin withdraws a person's authorization of an AI client.
pub async fn revoke_users_client(
    State(console): State<Arc<Console>>,
    AdminPost(viewer, form): AdminPost,
) -> Response {
    let (user, client_id) = (field(&form, "user"), field(&form, "client_id"));
    match crate::authserver::tokens::revoke_client(console.gw.pool(), user, client_id).await {
        Ok(0) => {
            let message = format!("{user} has no live authorization for '{client_id}'");
            return invalid(Reason::NotFound, &message);
        }
        Ok(_) => {}
        Err(e) => return store_error(e),
    }
    let what = format!("revoked client {client_id} of {user}");
    console
        .done(&viewer.email, "revoke_client", what, "/console/users")
        .await
}

/// A person's own tokens (on *Done in my name*); admins see everyone's on Users.
pub fn my_tokens(viewer: &Viewer, tokens: &[crate::tokens::TokenRecord]) -> Markup {
    let mine: Vec<_> = tokens
        .iter()
        .filter(|t| t.user_email == viewer.email && t.revoked_at.is_none())
        .collect();
    html! {
        h2 { "My gateway tokens" }
        (tokens_table(viewer, mine))
        form method="post" action="/console/tokens" {
            input type="hidden" name="csrf" value=(viewer.csrf);
            input type="hidden" name="user" value=(viewer.email);
            label for="my-token-name" { "Name " }
            input id="my-token-name" name="name";
            button type="submit" { "Create a token" }
        }
    }
}

/// The AI clients a person authorized through sign-in, each revocable.
pub async fn my_clients(console: &Console, viewer: &Viewer) -> Result<Markup, Response> {
    let clients = crate::authserver::tokens::authorized_clients(console.gw.pool(), &viewer.email)
        .await
        .map_err(store_error)?;
    Ok(html! {
        h2 { "My authorized clients" }
        @if clients.is_empty() { p { "None: no AI client holds a sign-in of yours." } } @else {
            table {
                thead { tr {
                    th scope="col" { "Client" } th scope="col" { "Since" } th scope="col" { "Until" } th scope="col" { "" }
                } }
                tbody {
                    @for c in &clients {
                        tr {
                            td { (c.client_name) br; small { (c.client_id) } }
                            td { (c.created_at) } td { (c.expires_at) }
                            td {
                                form method="post" action="/console/me/clients/revoke" {
                                    input type="hidden" name="csrf" value=(viewer.csrf);
                                    input type="hidden" name="client_id" value=(c.client_id);
                                    button type="submit" aria-label={ "Revoke " (c.client_name) } { "Revoke" }
                                }
                            }
                        }
                    }
                }
            }
        }
    })
}

pub async fn revoke_my_client(
    State(console): State<Arc<Console>>,
    Post(viewer, form): super::actions::Post,
) -> Response {
    let client_id = field(&form, "client_id");
    match crate::authserver::tokens::revoke_client(console.gw.pool(), &viewer.email, client_id)
        .await
    {
        Ok(0) => {
            return invalid(
                Reason::NotFound,
                &format!("no live authorization of yours for '{client_id}'"),
            );
        }
        Ok(_) => {}
        Err(e) => return store_error(e),
    }
    console
        .done(
            &viewer.email,
            "revoke_client",
            format!("revoked client {client_id}"),
            "/console/me",
        )
        .await
}

/// Create a token: for oneself, or (admins) for anyone configured. The
/// secret is shown once, on this answer only.
pub async fn create_token(
    State(console): State<Arc<Console>>,
    Post(viewer, form): super::actions::Post,
) -> Response {
    let path = "/console/tokens";
    let user = field(&form, "user");
    if user != viewer.email && !viewer.admin {
        let message = format!("{} may create tokens for themselves only", viewer.email);
        return console
            .refuse_at(&viewer.email, path, Reason::NotAdmin, &message)
            .await;
    }
    if console.gw.config().user(user).is_none() {
        return invalid(
            Reason::UnknownUser,
            &format!("'{user}' is not a configured user"),
        );
    }
    let name = Some(field(&form, "name")).filter(|n| !n.is_empty());
    let created = match crate::tokens::create(console.gw.pool(), user, name, None).await {
        Ok(created) => created,
        Err(e) => return store_error(e),
    };
    if let Err(response) = console
        .audit_action(
            &viewer.email,
            "create_token",
            format!("token {} for {user}", created.id),
        )
        .await
    {
        return response;
    }
    page(
        "Token created",
        &viewer,
        html! {
            p role="status" { "Token " code { (created.id) } " for " (user) ". Copy it now: it is not shown again." }
            p { code id="new-token" { (created.token) } }
            p { a href="/console/me" { "Back" } }
        },
    )
    .into_response()
}

pub async fn revoke_token(
    State(console): State<Arc<Console>>,
    Post(viewer, form): super::actions::Post,
) -> Response {
    let path = "/console/tokens/revoke";
    let id = field(&form, "id");
    let owner = match crate::tokens::active_user(console.gw.pool(), id).await {
        Ok(owner) => owner,
        Err(e) => return store_error(e),
    };
    match owner {
        None => return invalid(Reason::NotFound, &format!("no active token '{id}'")),
        Some(owner) if owner != viewer.email && !viewer.admin => {
            let message = format!("{} may revoke their own tokens only", viewer.email);
            return console
                .refuse_at(&viewer.email, path, Reason::NotAdmin, &message)
                .await;
        }
        Some(_) => {}
    }
    if let Err(e) = crate::tokens::revoke(console.gw.pool(), id).await {
        return store_error(e);
    }
    if let Err(response) = console
        .audit_action(&viewer.email, "revoke_token", format!("revoked token {id}"))
        .await
    {
        return response;
    }
    Redirect::to(if viewer.admin {
        "/console/users"
    } else {
        "/console/me"
    })
    .into_response()
}

pub async fn hooks_pii(
    State(console): State<Arc<Console>>,
    Extension(viewer): Extension<Viewer>,
) -> Response {
    if let Some(refused) = admin_only(&console, &viewer, "/console/hooks").await {
        return refused;
    }
    let hooks = console.gw.hooks();
    let set = hooks.current();
    let pii = console.gw.pii();
    let mut counters: Vec<(String, String, u64, u64)> = pii
        .stats
        .iter()
        .map(|e| {
            (
                e.key().0.clone(),
                e.key().1.clone(),
                e.value().0,
                e.value().1,
            )
        })
        .collect();
    counters.sort();
    page(
        "Hooks and PII",
        &viewer,
        html! {
            h2 { "Active hooks (" (set.len()) ")" }
            @if let Some(error) = hooks.last_error() {
                p role="alert" { "The last reload failed; the previous set stays active: " (error) }
            }
            @if set.is_empty() { p { "No hook is active." } } @else {
                table {
                    thead { tr {
                        th scope="col" { "Name" } th scope="col" { "Layer" } th scope="col" { "Phase" }
                        th scope="col" { "Order" } th scope="col" { "When" } th scope="col" { "Source" }
                    } }
                    tbody {
                        @for h in set.hooks() {
                            tr {
                                td { (h.spec.name) }
                                td { @match &h.layer { crate::hooks::Layer::Company => "company", crate::hooks::Layer::User(u) => (u) } }
                                td { (format!("{:?}", h.spec.phase).to_lowercase()) }
                                td { (h.spec.order) }
                                td { code { (h.spec.when.as_deref().unwrap_or("")) } }
                                td { (h.source) }
                            }
                        }
                    }
                }
            }
            form method="post" action="/console/hooks/reload" {
                input type="hidden" name="csrf" value=(viewer.csrf);
                button type="submit" { "Reload hooks from " (hooks.dir().display()) }
            }
            h2 { "PII" }
            p { "Pseudonymization is " strong { @if pii.config.enabled { "on" } @else { "off" } } "." }
            table {
                thead { tr { th scope="col" { "Service" } th scope="col" { "Mode" } } }
                tbody {
                    @for name in console.gw.config().services.keys() {
                        tr { td { (name) } td { (format!("{:?}", pii.service_mode(name)).to_lowercase()) } }
                    }
                }
            }
            h3 { "Detections since start" }
            @if counters.is_empty() { p { "None yet." } } @else {
                table {
                    thead { tr {
                        th scope="col" { "Service" } th scope="col" { "Type" }
                        th scope="col" { "Pseudonymized" } th scope="col" { "Re-identified" }
                    } }
                    tbody {
                        @for (service, entity, detected, rehydrated) in &counters {
                            tr { td { (service) } td { (entity) } td { (detected) } td { (rehydrated) } }
                        }
                    }
                }
            }
        },
    )
    .into_response()
}

pub async fn reload_hooks(
    State(console): State<Arc<Console>>,
    AdminPost(viewer, _): AdminPost,
) -> Response {
    let outcome = match console.gw.hooks().reload() {
        Ok(count) => format!("hooks reloaded: {count} active"),
        Err(e) => format!("hooks not reloaded ({e}); the previous set stays active"),
    };
    console
        .done(&viewer.email, "reload_hooks", outcome, "/console/hooks")
        .await
}

/// The upper bound of the bucket holding quantile `q` of a histogram.
fn quantile(cumulative: &[u64], count: u64, q: f64) -> Option<f64> {
    if count == 0 {
        return None;
    }
    let rank = (q * count as f64).ceil() as u64;
    DURATION_BUCKETS
        .iter()
        .zip(cumulative)
        .find(|(_, c)| **c >= rank)
        .map(|(bound, _)| *bound)
        .or(Some(f64::INFINITY))
}

/// A horizontal bar chart: one labelled bar per row, its value written beside it.
fn bars(title: &str, rows: &[(String, f64, String)]) -> Markup {
    let max = rows.iter().map(|r| r.1).fold(0.0, f64::max).max(1.0);
    let height = 24 * rows.len().max(1) + 8;
    html! {
        figure {
            figcaption { (title) }
            svg role="img" aria-label=(title) width="960" height=(height) viewBox={ "0 0 960 " (height) } {
                @for (i, (label, value, shown)) in rows.iter().enumerate() {
                    @let y = 4 + i * 24;
                    @let width = (value / max * 380.0).max(1.0);
                    text x="0" y=(y + 16) font-size="13" { (label) }
                    rect x="200" y=(y + 3) width=(format!("{width:.1}")) height="16" fill="#4a6fa5" {}
                    text x=(format!("{:.1}", 206.0 + width)) y=(y + 16) font-size="13" { (shown) }
                }
            }
        }
    }
}

/// Calls per minute over the last hour, stacked by decision (each bar's
/// numbers in its title, and a legend in words).
fn timeline(per_minute: &[(String, String, i64)]) -> Markup {
    let mut minutes: BTreeMap<&str, [i64; 3]> = BTreeMap::new();
    for (minute, decision, n) in per_minute {
        let slot = match decision.as_str() {
            "allowed" => 0,
            "refused" => 1,
            _ => 2,
        };
        minutes.entry(minute).or_default()[slot] += n;
    }
    let max = minutes
        .values()
        .map(|v| v.iter().sum::<i64>())
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let colours = ["#4a6fa5", "#c0392b", "#e67e22"];
    html! {
        figure {
            figcaption { "Calls per minute, last hour (allowed bottom, refused middle, failed top)" }
            svg role="img" aria-label="Calls per minute over the last hour" width="720" height="180" viewBox="0 0 720 180" {
                @for (i, (minute, counts)) in minutes.iter().enumerate() {
                    @let x = i * 12;
                    @let mut base = 160.0;
                    @for (slot, n) in counts.iter().enumerate() {
                        @let h = *n as f64 / max * 150.0;
                        @let top = { base -= h; base };
                        rect x=(x) y=(format!("{top:.1}")) width="10" height=(format!("{h:.1}")) fill=(colours[slot]) {
                            title { (minute) ": " (counts[0]) " allowed, " (counts[1]) " refused, " (counts[2]) " failed" }
                        }
                    }
                }
                text x="0" y="176" font-size="12" { (minutes.keys().next().copied().unwrap_or("")) }
                text x="600" y="176" font-size="12" { (minutes.keys().last().copied().unwrap_or("")) }
            }
        }
    }
}

pub async fn dashboard(
    State(console): State<Arc<Console>>,
    Extension(viewer): Extension<Viewer>,
) -> Response {
    if let Some(refused) = admin_only(&console, &viewer, "/console/dashboard").await {
        return refused;
    }
    let since = (time::OffsetDateTime::now_utc() - time::Duration::hours(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let per_minute = match crate::audit::per_minute(console.gw.pool(), &since).await {
        Ok(rows) => rows,
        Err(e) => return store_error(e),
    };
    let live_grants = match crate::delegation::store::list_grants(console.gw.pool(), false).await {
        Ok(grants) => grants.len(),
        Err(e) => return store_error(e),
    };
    let calls = console.gw.stats().calls.snapshot();
    let mut per_service: BTreeMap<String, [u64; 3]> = BTreeMap::new();
    let mut refusals: BTreeMap<&str, u64> = BTreeMap::new();
    let mut latency: BTreeMap<String, crate::stats::CallCounts> = BTreeMap::new();
    for (labels, counts) in &calls {
        let slot = match labels.decision {
            "allowed" => 0,
            "refused" => 1,
            _ => 2,
        };
        per_service.entry(labels.service.clone()).or_default()[slot] += counts.count;
        if labels.decision == "refused" {
            *refusals.entry(labels.reason).or_default() += counts.count;
        }
        latency
            .entry(labels.service.clone())
            .and_modify(|sum| sum.add(counts))
            .or_insert_with(|| counts.clone());
    }
    let service_rows: Vec<(String, f64, String)> = per_service
        .iter()
        .map(|(s, [a, r, f])| {
            (
                s.clone(),
                (a + r + f) as f64,
                format!("{a} allowed · {r} refused · {f} failed"),
            )
        })
        .collect();
    let refusal_rows: Vec<(String, f64, String)> = refusals
        .iter()
        .map(|(reason, n)| (reason.to_string(), *n as f64, n.to_string()))
        .collect();
    let show = |q: Option<f64>| match q {
        Some(s) if s.is_finite() => format!("≤ {} ms", s * 1000.0),
        Some(_) => "> 10 s".to_owned(),
        None => "—".to_owned(),
    };
    let latency_rows: Vec<(String, f64, String)> = latency
        .iter()
        .map(|(s, c)| {
            let p50 = quantile(&c.cumulative, c.count, 0.5);
            let p99 = quantile(&c.cumulative, c.count, 0.99);
            (
                s.clone(),
                p99.filter(|v| v.is_finite()).unwrap_or(10.0) * 1000.0,
                format!("p50 {} · p99 {}", show(p50), show(p99)),
            )
        })
        .collect();
    page(
        "Dashboard",
        &viewer,
        html! {
            p {
                "Live MCP sessions: " strong id="live-sessions" { (console.gw.sessions().count()) }
                " · live grants: " strong id="live-grants" { (live_grants) }
                " · calls in flight: " strong { (console.gw.drain().current()) }
            }
            (timeline(&per_minute))
            (bars("Calls per service since start", &service_rows))
            (bars("Refusals by reason since start", &refusal_rows))
            (bars("Latency per service since start (p99 bar; bucket upper bounds)", &latency_rows))
        },
    )
    .into_response()
}

/// A person's connected services (native services with an OAuth connect
/// flow, among those they may use) and their own hooks, on *Done in my name*.
pub async fn my_services_and_hooks(console: &Console, viewer: &Viewer) -> Result<Markup, Response> {
    let config = console.gw.config();
    let Some(user) = config.user(&viewer.email) else {
        return Ok(html! {});
    };
    let credentials = crate::vault::list(console.gw.pool())
        .await
        .map_err(store_error)?;
    let connectable: Vec<&String> = config
        .services
        .iter()
        .filter(|(name, s)| {
            s.native().is_some_and(|n| n.oauth.is_some()) && user.access_to(name).is_some()
        })
        .map(|(name, _)| name)
        .collect();
    let hooks = console.gw.hooks().current();
    let mine: Vec<_> = hooks
        .hooks()
        .iter()
        .filter(|h| matches!(&h.layer, crate::hooks::Layer::User(u) if u.eq_ignore_ascii_case(&viewer.email)))
        .collect();
    Ok(html! {
        h2 { "My connected services" }
        @if connectable.is_empty() { p { "No service here connects with your own account." } } @else {
            table {
                thead { tr { th scope="col" { "Service" } th scope="col" { "Credential" } th scope="col" { "" } } }
                tbody {
                    @for service in &connectable {
                        @let held = credentials.iter().find(|c| c.user.eq_ignore_ascii_case(&viewer.email) && &&c.service == service);
                        tr {
                            td { (service) }
                            td { @match held { Some(c) => { (c.kind) ", updated " (c.updated_at) }, None => "not connected" } }
                            td {
                                a href={ "/connect/" (service) "?ticket=" (crate::native::connect::ticket(console.gw.master_key(), &viewer.email, service)) } {
                                    @if held.is_some() { "Reconnect" } @else { "Connect" }
                                }
                                @if held.is_some() {
                                    form method="post" action="/console/me/disconnect" class="inline" {
                                        input type="hidden" name="csrf" value=(viewer.csrf);
                                        input type="hidden" name="service" value=(service);
                                        button type="submit" aria-label={ "Disconnect " (service) } { "Disconnect" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        h2 { "My hooks" }
        @if mine.is_empty() { p { "None (set them from your AI client with gateway_my_hooks)." } } @else {
            ul { @for h in &mine { li { (h.spec.name) " (" (format!("{:?}", h.spec.phase).to_lowercase()) ")" } } }
        }
    })
}

pub async fn disconnect(
    State(console): State<Arc<Console>>,
    Post(viewer, form): super::actions::Post,
) -> Response {
    let service = field(&form, "service");
    match crate::vault::delete(console.gw.pool(), &viewer.email, service).await {
        Ok(true) => {}
        Ok(false) => {
            return invalid(
                Reason::NotFound,
                &format!("no credential of yours for '{service}'"),
            );
        }
        Err(e) => return store_error(e),
    }
    console
        .done(
            &viewer.email,
            "disconnect",
            format!("removed their {service} credential"),
            "/console/me",
        )
        .await
}

#[cfg(test)]
mod tests {
    #[test]
    fn quantiles_are_bucket_upper_bounds() {
        // 10 calls: 5 within 1 ms, 4 more within 5 ms, 1 more within 10 ms.
        let mut cumulative = [10u64; 12];
        cumulative[0] = 5;
        cumulative[1] = 9;
        assert_eq!(super::quantile(&cumulative, 10, 0.5), Some(0.001));
        assert_eq!(super::quantile(&cumulative, 10, 0.9), Some(0.005));
        assert_eq!(super::quantile(&cumulative, 10, 0.99), Some(0.01));
        assert_eq!(super::quantile(&cumulative, 0, 0.5), None);
    }
}
