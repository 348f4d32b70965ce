//! The admin API under `/admin/api/`: an admin's gateway token only. Every
//! refusal is audited. Delegation: the feature flag, Windmill instances,
//! high_risk approvals, live grants and their revocation.
//!
//! | method + path                              | what                               |
//! |--------------------------------------------|------------------------------------|
//! | GET/PUT `/admin/api/delegation`            | `{"enabled": bool}`                |
//! | GET/POST `/admin/api/windmill/instances`   | list / register (upsert by name)   |
//! | DELETE `/admin/api/windmill/instances/{n}` | unregister                         |
//! | GET/POST `/admin/api/approvals`            | list / approve high_risk           |
//! | DELETE `/admin/api/approvals/{id}`         | withdraw                           |
//! | GET `/admin/api/grants[?all=true]`         | live grants (or all, newest first) |
//! | DELETE `/admin/api/grants/{id}`            | revoke one                         |
//! | POST `/admin/api/grants/revoke`            | `{"subject"}` or `{"flow_path"[, "instance"]}` |
//! | POST `/admin/reload`                       | reload hooks; a bad file keeps the old set (400) |
//! | GET/PUT `/admin/api/policy/risk`           | risk overrides: `{"pattern": "jira.delete_*", "risk": "high_risk"}` |
//! | DELETE `/admin/api/policy/risk?pattern=…`  | remove one                         |
//! | GET `/admin/api/pii`                       | PII settings per service (what is off) and detection statistics |

use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::delegation::store::{self, Approval, Instance, RevokeFilter};
use crate::domain::{Reason, Refusal};
use crate::gateway::Gateway;
use crate::tokens;

/// The admin behind a request (their email).
#[derive(Clone)]
pub struct Admin(pub String);

pub fn routes(gw: Arc<Gateway>) -> Router {
    Router::new()
        .route(
            "/admin/api/delegation",
            get(get_delegation).put(put_delegation),
        )
        .route(
            "/admin/api/windmill/instances",
            get(list_instances).post(put_instance),
        )
        .route(
            "/admin/api/windmill/instances/{name}",
            delete(remove_instance),
        )
        .route(
            "/admin/api/approvals",
            get(list_approvals).post(add_approval),
        )
        .route("/admin/api/approvals/{id}", delete(withdraw_approval))
        .route("/admin/api/grants", get(list_grants))
        .route("/admin/api/grants/{id}", delete(revoke_grant))
        .route("/admin/api/grants/revoke", post(revoke_grants))
        .route("/admin/reload", post(reload))
        .route("/admin/api/pii", get(pii_status))
        .route(
            "/admin/api/policy/risk",
            get(list_overrides)
                .put(put_override)
                .delete(remove_override),
        )
        .layer(middleware::from_fn_with_state(gw.clone(), require_admin))
        .with_state(gw)
}

/// An admin API refusal: the status follows from the reason.
fn problem(reason: Reason, message: impl Into<String>) -> Response {
    let status = StatusCode::from_u16(reason.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    (
        status,
        Json(json!({ "error": reason.code(), "message": message.into() })),
    )
        .into_response()
}

async fn audit_refusal(gw: &Gateway, subject: &str, tool: &str, reason: Reason, message: &str) {
    let refusal = Refusal::new(reason, message);
    gw.audit().refuse(subject, None, tool, refusal).await;
}

async fn require_admin(
    State(gw): State<Arc<Gateway>>,
    mut request: Request,
    next: Next,
) -> Response {
    let tool = format!("http:{} {}", request.method(), request.uri().path());
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .map(str::to_owned);
    let Some(presented) = presented else {
        audit_refusal(
            &gw,
            "anonymous",
            &tool,
            Reason::Unauthenticated,
            "no bearer token",
        )
        .await;
        return problem(
            Reason::Unauthenticated,
            "an admin's gateway token is required",
        );
    };
    // From memory like `/mcp`: a revoked token is still refused at once.
    let record = match tokens::verify_cached(gw.token_cache(), gw.pool(), &presented).await {
        Ok(record) => record,
        Err(rejection) => {
            audit_refusal(
                &gw,
                "anonymous",
                &tool,
                Reason::InvalidToken,
                &rejection.to_string(),
            )
            .await;
            return problem(Reason::InvalidToken, rejection.to_string());
        }
    };
    match gw.config().user(&record.user_email) {
        Some(user) if user.admin => {
            request.extensions_mut().insert(Admin(user.email.clone()));
            next.run(request).await
        }
        _ => {
            let reason = format!("{} is not an admin", record.user_email);
            audit_refusal(&gw, &record.user_email, &tool, Reason::NotAdmin, &reason).await;
            problem(Reason::NotAdmin, reason)
        }
    }
}

fn storage(e: sqlx::Error) -> Response {
    tracing::error!(error = %e, "admin API: store");
    problem(
        Reason::StorageUnavailable,
        "the gateway's store is unavailable",
    )
}

/// A JSON body, or a 400 that says what is wrong with it.
fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("invalid JSON body: {e}"))
}

async fn pii_status(State(gw): State<Arc<Gateway>>) -> Response {
    let pii = &gw.pii();
    let services: serde_json::Map<String, serde_json::Value> = gw
        .config()
        .services
        .keys()
        .map(|name| {
            let fields = pii
                .config
                .services
                .get(name)
                .map(|s| {
                    s.fields
                        .iter()
                        .map(|(k, v)| (k.clone(), json!(format!("{v:?}").to_lowercase())))
                        .collect::<serde_json::Map<_, _>>()
                })
                .unwrap_or_default();
            let mode = format!("{:?}", pii.service_mode(name)).to_lowercase();
            (name.clone(), json!({ "mode": mode, "fields": fields }))
        })
        .collect();
    let mut stats: Vec<serde_json::Value> = pii
        .stats
        .iter()
        .map(|e| json!({ "service": e.key().0, "entity": e.key().1, "detected": e.value().0, "rehydrated": e.value().1 }))
        .collect();
    stats.sort_by_key(|v| v.to_string());
    Json(json!({
        "enabled": pii.config.enabled,
        "scope": format!("{:?}", pii.config.scope).to_lowercase(),
        "ttl_secs": pii.config.ttl.as_secs(),
        "services": services,
        "stats": stats,
    }))
    .into_response()
}

async fn reload(State(gw): State<Arc<Gateway>>, Extension(admin): Extension<Admin>) -> Response {
    match gw.hooks().reload() {
        Ok(count) => {
            tracing::info!(admin = %admin.0, hooks = count, "reload requested");
            Json(json!({ "hooks": count })).into_response()
        }
        Err(e) => problem(
            Reason::InvalidHooks,
            format!("{e} (the previous hooks stay active)"),
        ),
    }
}

async fn list_overrides(State(gw): State<Arc<Gateway>>) -> Response {
    let overrides: serde_json::Map<String, serde_json::Value> = gw
        .catalogs()
        .overrides()
        .iter()
        .map(|(pattern, risk)| (pattern.clone(), json!(risk.as_str())))
        .collect();
    Json(json!({ "overrides": overrides })).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Override {
    pattern: String,
    risk: actors::grant::Risk,
}

async fn put_override(
    State(gw): State<Arc<Gateway>>,
    Extension(admin): Extension<Admin>,
    body: axum::body::Bytes,
) -> Response {
    let wanted: Override = match parse(&body) {
        Ok(o) => o,
        Err(m) => return problem(Reason::InvalidBody, m),
    };
    if !wanted.pattern.contains('.') {
        return problem(
            Reason::InvalidPattern,
            format!(
                "pattern '{}' must have the form service.action (globs allowed)",
                wanted.pattern
            ),
        );
    }
    match gw
        .catalogs()
        .set_override(&wanted.pattern, Some(wanted.risk), &admin.0)
        .await
    {
        Ok(_) => {
            tracing::info!(admin = %admin.0, pattern = %wanted.pattern, risk = %wanted.risk, "risk override set");
            Json(json!({ "pattern": wanted.pattern, "risk": wanted.risk.as_str() })).into_response()
        }
        Err(e) => storage(e),
    }
}

#[derive(Deserialize)]
struct PatternQuery {
    pattern: String,
}

async fn remove_override(
    State(gw): State<Arc<Gateway>>,
    Extension(admin): Extension<Admin>,
    Query(query): Query<PatternQuery>,
) -> Response {
    match gw
        .catalogs()
        .set_override(&query.pattern, None, &admin.0)
        .await
    {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => problem(
            Reason::NotFound,
            format!("no override for '{}'", query.pattern),
        ),
        Err(e) => storage(e),
    }
}

async fn get_delegation(State(gw): State<Arc<Gateway>>) -> Response {
    match store::delegation_enabled(gw.pool()).await {
        Ok(enabled) => Json(json!({ "enabled": enabled })).into_response(),
        Err(e) => storage(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Toggle {
    enabled: bool,
}

async fn put_delegation(
    State(gw): State<Arc<Gateway>>,
    Extension(admin): Extension<Admin>,
    body: axum::body::Bytes,
) -> Response {
    let toggle: Toggle = match parse(&body) {
        Ok(t) => t,
        Err(m) => return problem(Reason::InvalidBody, m),
    };
    match store::set_delegation(gw.pool(), toggle.enabled, &admin.0).await {
        Ok(()) => {
            tracing::info!(admin = %admin.0, enabled = toggle.enabled, "Delegated Access flag changed");
            Json(json!({ "enabled": toggle.enabled })).into_response()
        }
        Err(e) => storage(e),
    }
}

async fn list_instances(State(gw): State<Arc<Gateway>>) -> Response {
    match store::list_instances(gw.pool()).await {
        Ok(list) => Json(json!({ "instances": list })).into_response(),
        Err(e) => storage(e),
    }
}

async fn put_instance(
    State(gw): State<Arc<Gateway>>,
    Extension(admin): Extension<Admin>,
    body: axum::body::Bytes,
) -> Response {
    let instance: Instance = match parse(&body) {
        Ok(i) => i,
        Err(m) => return problem(Reason::InvalidBody, m),
    };
    if let Err(message) = instance.validate() {
        return problem(Reason::InvalidInstance, message);
    }
    match store::put_instance(gw.pool(), &instance, &admin.0).await {
        Ok(()) => (StatusCode::CREATED, Json(json!(instance))).into_response(),
        Err(e) => storage(e),
    }
}

async fn remove_instance(State(gw): State<Arc<Gateway>>, Path(name): Path<String>) -> Response {
    match store::remove_instance(gw.pool(), &name).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => problem(Reason::NotFound, format!("no instance '{name}'")),
        Err(e) => storage(e),
    }
}

async fn list_approvals(State(gw): State<Arc<Gateway>>) -> Response {
    match store::list_approvals(gw.pool()).await {
        Ok(list) => Json(json!({ "approvals": list })).into_response(),
        Err(e) => storage(e),
    }
}

async fn add_approval(
    State(gw): State<Arc<Gateway>>,
    Extension(admin): Extension<Admin>,
    body: axum::body::Bytes,
) -> Response {
    let mut approval: Approval = match parse(&body) {
        Ok(a) => a,
        Err(m) => return problem(Reason::InvalidBody, m),
    };
    if let Err(message) = validate_approval(gw.pool(), gw.config(), &approval).await {
        return problem(Reason::InvalidApproval, message);
    }
    approval.approved_by = admin.0.clone();
    match store::add_approval(gw.pool(), &approval).await {
        Ok(id) => {
            approval.id = id;
            tracing::info!(admin = %admin.0, approval = %approval.id, flow = %approval.flow_path, "high_risk delegation approved");
            (StatusCode::CREATED, Json(json!(approval))).into_response()
        }
        Err(e) => storage(e),
    }
}

/// An approval must name a registered instance/workspace, a configured
/// owner and gateway services.
pub async fn validate_approval(
    pool: &crate::storage::Db,
    config: &crate::config::Config,
    approval: &Approval,
) -> Result<(), String> {
    let instances = store::instances_for(pool, &approval.workspace, Some(&approval.instance))
        .await
        .map_err(|e| format!("store unavailable: {e}"))?;
    if instances.is_empty() {
        return Err(format!(
            "instance '{}' with workspace '{}' is not registered",
            approval.instance, approval.workspace
        ));
    }
    if approval.flow_path.trim().is_empty() {
        return Err("flow_path is required".into());
    }
    if config.user(&approval.owner).is_none() {
        return Err(format!("owner '{}' is not a gateway user", approval.owner));
    }
    if approval.services.is_empty() {
        return Err("services: name at least one service".into());
    }
    for service in &approval.services {
        if !config.services.contains_key(service) {
            return Err(format!("services: unknown service '{service}'"));
        }
    }
    Ok(())
}

async fn withdraw_approval(
    State(gw): State<Arc<Gateway>>,
    Extension(admin): Extension<Admin>,
    Path(id): Path<String>,
) -> Response {
    match store::withdraw_approval(gw.pool(), &id, &admin.0).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => problem(Reason::NotFound, format!("no active approval '{id}'")),
        Err(e) => storage(e),
    }
}

#[derive(Deserialize)]
struct GrantQuery {
    #[serde(default)]
    all: bool,
}

async fn list_grants(State(gw): State<Arc<Gateway>>, Query(query): Query<GrantQuery>) -> Response {
    match store::list_grants(gw.pool(), query.all).await {
        Ok(list) => Json(json!({ "grants": list })).into_response(),
        Err(e) => storage(e),
    }
}

async fn revoke_grant(
    State(gw): State<Arc<Gateway>>,
    Extension(admin): Extension<Admin>,
    Path(id): Path<String>,
) -> Response {
    let filter = RevokeFilter {
        grant_id: Some(id.clone()),
        ..Default::default()
    };
    revoke(&gw, &admin, &filter).await
}

async fn revoke_grants(
    State(gw): State<Arc<Gateway>>,
    Extension(admin): Extension<Admin>,
    body: axum::body::Bytes,
) -> Response {
    let filter: RevokeFilter = match parse(&body) {
        Ok(f) => f,
        Err(m) => return problem(Reason::InvalidBody, m),
    };
    if filter.is_empty() {
        return problem(
            Reason::InvalidBody,
            "name a grant_id, a subject or a flow_path",
        );
    }
    revoke(&gw, &admin, &filter).await
}

/// Answers only once every named grant's actor has stopped, on every
/// gateway sharing the store; `unconfirmed_replicas` names any that did not
/// say so in time (their grants are refused everywhere else already).
async fn revoke(gw: &Gateway, admin: &Admin, filter: &RevokeFilter) -> Response {
    match gw.delegation().revoke(filter, &admin.0).await {
        Ok((ids, _)) if ids.is_empty() => problem(Reason::NotFound, "no live grant matches"),
        Ok((ids, unconfirmed)) => {
            tracing::info!(admin = %admin.0, grants = ?ids, unconfirmed = ?unconfirmed, "grants revoked");
            Json(json!({
                "revoked": ids,
                "confirmed": unconfirmed.is_empty(),
                "unconfirmed_replicas": unconfirmed,
            }))
            .into_response()
        }
        Err(e) => storage(e),
    }
}
