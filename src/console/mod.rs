//! The web console under `/console`: server-rendered HTML (maud escapes
//! every value by construction), plain forms, no JavaScript and no asset
//! from outside the binary, so the Content-Security-Policy can forbid every
//! script. Sign-in is an admin's or a person's gateway token, exchanged for a
//! signed session cookie (session.rs); the OIDC sign-in replaces that form
//! once the gateway is an authorization server.
//!
//! | page                 | who      | what                                          |
//! |----------------------|----------|-----------------------------------------------|
//! | `/console/me`        | everyone | *Done in my name*: rows where they are the subject |
//! | `/console/callers`   | admins   | live grants (revoke), approvals, refused high_risk attempts |
//! | `/console/clients`   | admins   | the Delegated Access flag, Windmill instances |
//! | `/console/audit`     | admins   | the audit log, filtered; CSV/JSONL export; live tail (a meta refresh) |
//! | `/console/services`  | admins   | connectors, actions with risk and its source, overrides |
//! | `/console/users`     | admins   | users, access, flags; authorized AI clients and gateway tokens (create, revoke) |
//! | `/console/hooks`     | admins   | active hooks, last reload error, reload; PII modes and counters |
//! | `/console/dashboard` | admins   | calls over time, per service, refusals, latency, live sessions and grants |
//!
//! Every state change is a POST with the session's CSRF token, refused (and
//! audited) without it; every admin action is audited under the admin's name.

mod actions;
mod operate;
mod pages;
pub mod session;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use crate::domain::{Reason, Refusal};
use crate::gateway::Gateway;
use session::{COOKIE, Claims, SessionKey};

/// Who is looking at the console.
#[derive(Clone)]
pub struct Viewer {
    pub email: String,
    pub admin: bool,
    pub csrf: String,
    claims: Claims,
}

pub struct Console {
    gw: Arc<Gateway>,
    key: SessionKey,
}

pub fn routes(gw: Arc<Gateway>) -> Router {
    let console = Arc::new(Console {
        key: SessionKey::new(gw.master_key()),
        gw,
    });
    let signed_in = Router::new()
        .route("/console", get(|| async { Redirect::to("/console/me") }))
        .route("/console/me", get(pages::me))
        .route("/console/callers", get(pages::callers))
        .route("/console/clients", get(pages::clients))
        .route("/console/audit", get(pages::audit))
        .route("/console/audit/export", get(pages::audit_export))
        .route("/console/services", get(operate::services))
        .route("/console/services/overrides", post(operate::set_override))
        .route(
            "/console/services/overrides/remove",
            post(operate::remove_override),
        )
        .route("/console/users", get(operate::users))
        .route("/console/tokens", post(operate::create_token))
        .route(
            "/console/users/clients/revoke",
            post(operate::revoke_users_client),
        )
        .route("/console/tokens/revoke", post(operate::revoke_token))
        .route("/console/hooks", get(operate::hooks_pii))
        .route("/console/hooks/reload", post(operate::reload_hooks))
        .route("/console/dashboard", get(operate::dashboard))
        .route("/console/me/disconnect", post(operate::disconnect))
        .route(
            "/console/me/clients/revoke",
            post(operate::revoke_my_client),
        )
        .route("/console/logout", post(actions::logout))
        .route("/console/callers/revoke", post(actions::revoke_grant))
        .route("/console/callers/approve", post(actions::approve))
        .route("/console/callers/withdraw", post(actions::withdraw))
        .route("/console/clients/delegation", post(actions::set_delegation))
        .route("/console/clients/instances", post(actions::put_instance))
        .route(
            "/console/clients/instances/remove",
            post(actions::remove_instance),
        )
        .layer(middleware::from_fn_with_state(
            console.clone(),
            require_session,
        ));
    Router::new()
        .route("/console/login", get(pages::login).post(actions::login))
        .route("/console/sso", get(actions::sso))
        .route("/console/assets/console.css", get(stylesheet))
        .merge(signed_in)
        .layer(middleware::from_fn(security_headers))
        .with_state(console)
}

async fn stylesheet() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("console.css"),
    )
        .into_response()
}

/// Every console answer: no script, no framing, no sniffing, not cached.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// The value of cookie `name` in `headers`.
fn cookie_value(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(found, _)| *found == name)
        .map(|(_, value)| value.to_owned())
}

/// The request's `Host` (for the cookie's `Secure` flag).
fn host_of(headers: &axum::http::HeaderMap) -> String {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// A request from another site: its Origin names another host. Browsers send
/// Origin on every POST, so this guards sign-in too (login CSRF), where no
/// session exists yet to bind a token to.
fn cross_site(request: &Request) -> bool {
    let Some(origin) = request.headers().get(header::ORIGIN) else {
        return false;
    };
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let origin = origin.to_str().unwrap_or("");
    let origin_host = origin.split_once("://").map(|(_, rest)| rest).unwrap_or("");
    origin_host != host
}

async fn require_session(
    State(console): State<Arc<Console>>,
    mut request: Request,
    next: Next,
) -> Response {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let claims = cookie_value(request.headers(), COOKIE).and_then(|v| console.key.open(&v, now));
    let Some(claims) = claims else {
        return Redirect::to("/console/login").into_response();
    };
    // What it was opened with must still be active (revocation reaches
    // every replica through the store).
    let pool = console.gw.pool();
    let active = match claims.credential.split_once(':') {
        Some(("token", id)) => crate::tokens::active_user(pool, id).await,
        Some(("signin", id)) => crate::authserver::signin::session_user(pool, id).await,
        _ => Ok(None),
    };
    let user = match active {
        Ok(Some(email)) if email == claims.email => console.gw.config().user(&email).cloned(),
        Ok(_) => None,
        Err(e) => {
            tracing::error!(error = %e, "console: store");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "the gateway's store is unavailable",
            )
                .into_response();
        }
    };
    let Some(user) = user else {
        return Redirect::to("/console/login").into_response();
    };
    let viewer = Viewer {
        email: user.email.clone(),
        admin: user.admin,
        csrf: console.key.csrf(&claims),
        claims,
    };
    if request.method() == Method::POST && cross_site(&request) {
        let path = request.uri().path().to_owned();
        return console
            .refuse_at(
                &viewer.email,
                &path,
                Reason::CsrfMismatch,
                "cross-site request",
            )
            .await;
    }
    request.extensions_mut().insert(viewer);
    next.run(request).await
}

impl Console {
    /// Refuse, audited, with an HTML page that says why.
    async fn refuse_at(
        &self,
        subject: &str,
        path: &str,
        reason: Reason,
        message: &str,
    ) -> Response {
        let tool = format!("console:{path}");
        self.gw
            .audit()
            .refuse(subject, None, &tool, Refusal::new(reason, message))
            .await;
        let status = StatusCode::from_u16(reason.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
        (status, pages::refusal_page(reason.code(), message)).into_response()
    }

    /// A state change done: audited under `admin`'s name, then back to `page`.
    async fn done(&self, admin: &str, action: &str, what: String, page: &str) -> Response {
        match self.audit_action(admin, action, what).await {
            Ok(()) => Redirect::to(page).into_response(),
            Err(response) => response,
        }
    }

    /// An admin's action, audited under their name before it is answered.
    async fn audit_action(&self, admin: &str, action: &str, what: String) -> Result<(), Response> {
        let mut row = crate::audit::RowStart {
            subject: admin,
            actor: admin,
            session: None,
            client: &Default::default(),
            tool: &format!("console:{action}"),
            arguments: &Default::default(),
        }
        .row();
        row.completed = true;
        row.reason = Some(what);
        self.gw.audit().decision(row).await.map_err(|refusal| {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                pages::refusal_page(refusal.code(), &refusal.message),
            )
                .into_response()
        })
    }
}
