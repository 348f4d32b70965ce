//! The console's state changes (POST): each checks the session's CSRF token,
//! does what the admin API would do, and is audited under the admin's name.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Form;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;

use super::session::{COOKIE, Claims, LIFETIME_SECS};
use super::{Console, Viewer, pages};
use crate::delegation::store::{self, Approval, Instance, RevokeFilter};
use crate::domain::Reason;

pub(super) type Fields = Form<BTreeMap<String, String>>;

pub(super) fn field<'a>(form: &'a BTreeMap<String, String>, name: &str) -> &'a str {
    form.get(name).map(|v| v.trim()).unwrap_or("")
}

/// Loopback hosts get a cookie without `Secure` (plain HTTP on one machine).
fn is_loopback(host: &str) -> bool {
    let name = host.rsplit_once(':').map_or(host, |(name, port)| {
        if port.chars().all(|c| c.is_ascii_digit()) {
            name
        } else {
            host
        }
    });
    matches!(name, "localhost" | "127.0.0.1" | "[::1]")
}

fn session_cookie(value: &str, max_age: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/console; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("invalid=1"))
}

pub async fn login(State(console): State<Arc<Console>>, request: Request) -> Response {
    if super::cross_site(&request) {
        return console
            .refuse_at(
                "anonymous",
                "/console/login",
                Reason::CsrfMismatch,
                "cross-site sign-in",
            )
            .await;
    }
    let host = super::host_of(request.headers());
    let form: BTreeMap<String, String> =
        match <Fields as axum::extract::FromRequest<()>>::from_request(request, &()).await {
            Ok(Form(form)) => form,
            Err(rejection) => {
                return (StatusCode::BAD_REQUEST, format!("{rejection}")).into_response();
            }
        };
    let presented = field(&form, "token");
    let refused = |message: &str| {
        let target = format!(
            "/console/login?{}",
            form_urlencoded::Serializer::new(String::new())
                .append_pair("error", message)
                .finish()
        );
        Redirect::to(&target).into_response()
    };
    let record = match crate::tokens::verify(console.gw.pool(), presented).await {
        Ok(record) => record,
        Err(rejection) => {
            let message = rejection.to_string();
            console
                .gw
                .audit()
                .refuse(
                    "anonymous",
                    None,
                    "console:/console/login",
                    crate::domain::Refusal::new(Reason::InvalidToken, &message),
                )
                .await;
            return refused(&message);
        }
    };
    let Some(user) = console.gw.config().user(&record.user_email) else {
        let message = "the token's user is no longer configured";
        console
            .gw
            .audit()
            .refuse(
                &record.user_email,
                None,
                "console:/console/login",
                crate::domain::Refusal::new(Reason::UnknownUser, message),
            )
            .await;
        return refused(message);
    };
    let claims = Claims {
        credential: format!("token:{}", record.id),
        email: user.email.clone(),
        expires_unix: time::OffsetDateTime::now_utc().unix_timestamp() + LIFETIME_SECS,
        nonce: hex::encode(rand::random::<[u8; 16]>()),
    };
    if let Err(response) = console
        .audit_action(
            &user.email,
            "sign_in",
            format!("signed in with token {}", record.id),
        )
        .await
    {
        return response;
    }
    signed_in(&console, &claims, &host)
}

fn signed_in(console: &Console, claims: &Claims, host: &str) -> Response {
    let mut response = Redirect::to("/console/me").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        session_cookie(&console.key.seal(claims), LIFETIME_SECS, !is_loopback(host)),
    );
    response
}

/// The company sign-in's browser session (`mcpgate_signin`, set by
/// `/oauth/signin/console` or any sign-in at the authorization server)
/// opens a console session for the same person.
pub async fn sso(State(console): State<Arc<Console>>, request: Request) -> Response {
    let host = super::host_of(request.headers());
    let value = super::cookie_value(request.headers(), "mcpgate_signin");
    let session = match value {
        Some(value) => crate::authserver::signin::session(console.gw.pool(), &value).await,
        None => None,
    };
    let Some(session) = session else {
        return Redirect::to("/console/login?error=the+company+sign-in+did+not+complete")
            .into_response();
    };
    let Some(user) = console.gw.config().user(&session.user) else {
        let message = "the signed-in person is not a user of this gateway";
        return console
            .refuse_at(
                &session.user,
                "/console/sso",
                Reason::SigninRefused,
                message,
            )
            .await;
    };
    let claims = Claims {
        credential: format!("signin:{}", session.id),
        email: user.email.clone(),
        expires_unix: time::OffsetDateTime::now_utc().unix_timestamp() + LIFETIME_SECS,
        nonce: hex::encode(rand::random::<[u8; 16]>()),
    };
    if let Err(response) = console
        .audit_action(
            &user.email,
            "sign_in",
            "signed in with the company sign-in".into(),
        )
        .await
    {
        return response;
    }
    signed_in(&console, &claims, &host)
}

/// A signed-in POST whose CSRF token is this session's; refused (403,
/// audited) otherwise. The form's fields come with it.
pub struct Post(pub Viewer, pub BTreeMap<String, String>);

/// A [`Post`] by an admin; anyone else is refused (403 `not_admin`, audited).
pub struct AdminPost(pub Viewer, pub BTreeMap<String, String>);

impl FromRequest<Arc<Console>> for Post {
    type Rejection = Response;

    async fn from_request(request: Request, console: &Arc<Console>) -> Result<Self, Response> {
        let path = request.uri().path().to_owned();
        let viewer = request
            .extensions()
            .get::<Viewer>()
            .cloned()
            .ok_or_else(|| Redirect::to("/console/login").into_response())?;
        let Form(form) = Fields::from_request(request, &())
            .await
            .map_err(|rejection| {
                (StatusCode::BAD_REQUEST, rejection.to_string()).into_response()
            })?;
        if console
            .key
            .csrf_matches(&viewer.claims, field(&form, "csrf"))
        {
            return Ok(Post(viewer, form));
        }
        let message = "missing or wrong CSRF token";
        Err(console
            .refuse_at(&viewer.email, &path, Reason::CsrfMismatch, message)
            .await)
    }
}

impl FromRequest<Arc<Console>> for AdminPost {
    type Rejection = Response;

    async fn from_request(request: Request, console: &Arc<Console>) -> Result<Self, Response> {
        let path = request.uri().path().to_owned();
        let Post(viewer, form) = Post::from_request(request, console).await?;
        if viewer.admin {
            return Ok(AdminPost(viewer, form));
        }
        let message = format!("{} is not an admin", viewer.email);
        Err(console
            .refuse_at(&viewer.email, &path, Reason::NotAdmin, &message)
            .await)
    }
}

fn store_error(e: sqlx::Error) -> Response {
    tracing::error!(error = %e, "console: store");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        pages::refusal_page("storage_unavailable", "the gateway's store is unavailable"),
    )
        .into_response()
}

pub(super) fn invalid(reason: Reason, message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        pages::refusal_page(reason.code(), message),
    )
        .into_response()
}

/// Sign out: the cookie goes (the CSRF check keeps other sites from doing it).
pub async fn logout(_signed_in: Post) -> Response {
    let mut response = Redirect::to("/console/login").into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session_cookie("", 0, false));
    response
}

pub async fn revoke_grant(
    State(console): State<Arc<Console>>,
    AdminPost(viewer, form): AdminPost,
) -> Response {
    let grant_id = field(&form, "grant_id").to_owned();
    let filter = RevokeFilter {
        grant_id: Some(grant_id.clone()),
        ..Default::default()
    };
    let (ids, unconfirmed) = match console.gw.delegation().revoke(&filter, &viewer.email).await {
        Ok(done) => done,
        Err(e) => return store_error(e),
    };
    if ids.is_empty() {
        return invalid(Reason::NotFound, &format!("no live grant '{grant_id}'"));
    }
    let confirmed = unconfirmed.is_empty();
    if let Err(response) = console
        .audit_action(
            &viewer.email,
            "revoke_grant",
            format!(
                "revoked {}; every replica stopped it: {confirmed}",
                ids.join(", ")
            ),
        )
        .await
    {
        return response;
    }
    pages_result(
        &viewer,
        "Grant revoked",
        html! {
            p role="status" id="revoke-result" {
                "Revoked " code { (ids.join(", ")) } ". "
                @if confirmed {
                    "Every gateway replica has stopped it: no call under it can run any more."
                } @else {
                    "These replicas did not confirm in time (the grant is refused everywhere else already): " (unconfirmed.join(", "))
                }
            }
            p { a href="/console/callers" { "Back to Workflow Callers" } }
        },
    )
}

fn pages_result(viewer: &Viewer, title: &str, body: maud::Markup) -> Response {
    pages::page(title, viewer, body).into_response()
}

pub async fn approve(
    State(console): State<Arc<Console>>,
    AdminPost(viewer, form): AdminPost,
) -> Response {
    let mut approval = Approval {
        id: String::new(),
        instance: field(&form, "instance").to_owned(),
        workspace: field(&form, "workspace").to_owned(),
        flow_path: field(&form, "flow_path").to_owned(),
        owner: field(&form, "owner").to_owned(),
        services: field(&form, "services")
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect(),
        approved_by: viewer.email.clone(),
        approved_at: String::new(),
    };
    if let Err(message) =
        crate::admin::validate_approval(console.gw.pool(), console.gw.config(), &approval).await
    {
        return invalid(Reason::InvalidApproval, &message);
    }
    match store::add_approval(console.gw.pool(), &approval).await {
        Ok(id) => approval.id = id,
        Err(e) => return store_error(e),
    }
    console
        .done(
            &viewer.email,
            "approve",
            format!(
                "approved high_risk {} for flow {} of {} on {}/{} ({})",
                approval.services.join(", "),
                approval.flow_path,
                approval.owner,
                approval.instance,
                approval.workspace,
                approval.id
            ),
            "/console/callers",
        )
        .await
}

pub async fn withdraw(
    State(console): State<Arc<Console>>,
    AdminPost(viewer, form): AdminPost,
) -> Response {
    let id = field(&form, "id");
    match store::withdraw_approval(console.gw.pool(), id, &viewer.email).await {
        Ok(true) => {}
        Ok(false) => return invalid(Reason::NotFound, &format!("no active approval '{id}'")),
        Err(e) => return store_error(e),
    }
    console
        .done(
            &viewer.email,
            "withdraw_approval",
            format!("withdrew {id}"),
            "/console/callers",
        )
        .await
}

pub async fn set_delegation(
    State(console): State<Arc<Console>>,
    AdminPost(viewer, form): AdminPost,
) -> Response {
    let enabled = match field(&form, "enabled") {
        "true" => true,
        "false" => false,
        other => {
            return invalid(
                Reason::InvalidBody,
                &format!("enabled: '{other}' is not true or false"),
            );
        }
    };
    if let Err(e) = store::set_delegation(console.gw.pool(), enabled, &viewer.email).await {
        return store_error(e);
    }
    console
        .done(
            &viewer.email,
            "delegation",
            format!("Delegated Access set to {enabled}"),
            "/console/clients",
        )
        .await
}

pub async fn put_instance(
    State(console): State<Arc<Console>>,
    AdminPost(viewer, form): AdminPost,
) -> Response {
    let flows: Vec<String> = field(&form, "allowed_flows")
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    let instance = Instance {
        name: field(&form, "name").to_owned(),
        base_url: field(&form, "base_url").to_owned(),
        workspace: field(&form, "workspace").to_owned(),
        allowed_flows: (!flows.is_empty()).then_some(flows),
    };
    if let Err(message) = instance.validate() {
        return invalid(Reason::InvalidInstance, &message);
    }
    if let Err(e) = store::put_instance(console.gw.pool(), &instance, &viewer.email).await {
        return store_error(e);
    }
    console
        .done(
            &viewer.email,
            "put_instance",
            format!(
                "Windmill instance {} = {} / {}",
                instance.name, instance.base_url, instance.workspace
            ),
            "/console/clients",
        )
        .await
}

pub async fn remove_instance(
    State(console): State<Arc<Console>>,
    AdminPost(viewer, form): AdminPost,
) -> Response {
    let name = field(&form, "name");
    match store::remove_instance(console.gw.pool(), name).await {
        Ok(true) => {}
        Ok(false) => return invalid(Reason::NotFound, &format!("no instance '{name}'")),
        Err(e) => return store_error(e),
    }
    console
        .done(
            &viewer.email,
            "remove_instance",
            format!("removed Windmill instance {name}"),
            "/console/clients",
        )
        .await
}

#[cfg(test)]
mod tests {
    #[test]
    fn loopback_hosts_are_recognised_with_or_without_a_port() {
        for host in ["localhost", "127.0.0.1:8642", "[::1]:80", "localhost:3000"] {
            assert!(super::is_loopback(host), "{host}");
        }
        for host in ["gw.example.com", "10.0.0.1:443", "localhost.evil.com"] {
            assert!(!super::is_loopback(host), "{host}");
        }
    }
}
