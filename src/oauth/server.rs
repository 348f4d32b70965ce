//! The authorization server's routes (the logic is `authserver/`):
//!
//! | route | what |
//! |---|---|
//! | GET `/.well-known/oauth-protected-resource[/mcp]` | RFC 9728 metadata of `/mcp` |
//! | GET `/.well-known/oauth-authorization-server`, `/.well-known/openid-configuration` | RFC 8414 metadata |
//! | GET `/oauth/authorize` | code + PKCE S256; consent page, or "sign in first" |
//! | POST `/oauth/consent` | the person's answer → redirect with `code`, `state`, `iss` |
//! | GET/POST `/oauth/signin` | one-time sign-in link (GET shows, POST uses it) |
//! | GET `/oauth/callback` | the company's OpenID provider sends the browser back here |
//! | POST `/oauth/register` | Dynamic Client Registration (RFC 7591) |
//! | POST `/oauth/token` | `authorization_code`, `refresh_token` (dispatched from `oauth/mod.rs`) |
//! | POST `/oauth/revoke` | RFC 7009 |
//!
//! `/oauth/authorize`, `/oauth/register` and the code and refresh grants of
//! `/oauth/token` are rate-limited per address (`ratelimit.rs`).
//! | GET/DELETE `/oauth/clients` | the caller's authorized clients; revoke one (`?client_id=`) |

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Query, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use reqwest::Url;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::pages;
use super::ratelimit::{Endpoint, limited};
use crate::authserver::idp::IdpPending;
use crate::authserver::scope::Scope;
use crate::authserver::tokens::{ACCESS_PREFIX, Authorization};
use crate::authserver::{AuthServer, redirect, signin};
use crate::domain::{Reason, Refusal};
use crate::gateway::Gateway;

const SESSION_COOKIE: &str = "mcpgate_signin";
const PENDING_COOKIE: &str = "mcpgate_authorize";
/// How long a consent page (and a pending authorization) stays answerable.
const TICKET_SECS: i64 = 600;

pub fn routes(gw: Arc<Gateway>) -> Router {
    let server = gw.authserver();
    Router::new()
        .route(
            "/.well-known/oauth-protected-resource",
            get(protected_resource),
        )
        .route(
            "/.well-known/oauth-protected-resource/mcp",
            get(protected_resource),
        )
        .route(
            "/.well-known/oauth-authorization-server",
            get(authorization_server),
        )
        .route(
            "/.well-known/openid-configuration",
            get(authorization_server),
        )
        .route(
            "/oauth/authorize",
            limited(get(authorize), server, Endpoint::Authorize),
        )
        .route("/oauth/consent", post(consent))
        .route("/oauth/signin", get(signin_page).post(signin))
        .route("/oauth/signin/console", get(console_signin))
        .route("/oauth/callback", get(idp_callback))
        .route(
            "/oauth/register",
            limited(post(register), server, Endpoint::Register),
        )
        .route("/oauth/revoke", post(revoke))
        .route("/oauth/clients", get(list_clients).delete(revoke_client))
        .with_state(server.clone())
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Form or query fields; a repeated parameter is refused (RFC 6749 §3.1).
fn fields(raw: &[u8]) -> Result<BTreeMap<String, String>, String> {
    std::str::from_utf8(raw).map_err(|_| "the parameters are not UTF-8".to_string())?;
    let mut out = BTreeMap::new();
    for (key, value) in form_urlencoded::parse(raw) {
        if out
            .insert(key.clone().into_owned(), value.into_owned())
            .is_some()
        {
            return Err(format!("parameter '{key}' is repeated"));
        }
    }
    Ok(out)
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// Where the console turns a browser session into its own.
const CONSOLE_SSO: &str = "/console/sso";

fn set_cookie(server: &AuthServer, name: &str, value: &str, max_age: i64) -> HeaderValue {
    // The browser session is read by the console's sign-in too.
    let path = if name == SESSION_COOKIE {
        "/"
    } else {
        "/oauth"
    };
    let secure = if server.issuer().starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path={path}; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}"
    ))
    .expect("cookie values are URL-safe")
}

async fn protected_resource(State(server): State<Arc<AuthServer>>) -> Response {
    if !server.config.oauth.enabled {
        return StatusCode::NOT_FOUND.into_response();
    }
    Json(server.protected_resource_metadata()).into_response()
}

async fn authorization_server(State(server): State<Arc<AuthServer>>) -> Response {
    if !server.config.oauth.enabled {
        return StatusCode::NOT_FOUND.into_response();
    }
    Json(server.authorization_server_metadata()).into_response()
}

/// The OAuth error JSON of the token, registration and revocation endpoints.
pub fn oauth_error(refusal: &Refusal) -> Response {
    let status =
        StatusCode::from_u16(refusal.reason.oauth_status()).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = (
        status,
        Json(json!({
            "error": refusal.reason.oauth_error(),
            "error_description": refusal.message,
            "reason": refusal.code(),
        })),
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(r#"Bearer realm="mcpgate""#),
        );
    }
    super::no_store(response)
}

/// A refusal shown as a page (the request cannot go back to the client).
async fn refused_page(
    server: &AuthServer,
    subject: &str,
    client: Option<&str>,
    tool: &str,
    refusal: Refusal,
) -> Response {
    let refusal = server.refuse(subject, client, tool, refusal).await;
    let status = StatusCode::from_u16(match refusal.reason.http_status() {
        401 => 400,
        other => other,
    })
    .unwrap_or(StatusCode::BAD_REQUEST);
    pages::error(
        status,
        "Cannot continue",
        &refusal.message,
        refusal.reason.code(),
    )
}

/// Send the browser back to the client (RFC 6749 §4.1.2, RFC 9207 `iss`).
fn back_to_client(
    server: &AuthServer,
    redirect_uri: &str,
    state: Option<&str>,
    params: &[(&str, &str)],
) -> Response {
    let mut url = match Url::parse(redirect_uri) {
        Ok(url) => url,
        Err(_) => {
            return pages::error(
                StatusCode::BAD_REQUEST,
                "Cannot continue",
                "the redirect URI is not a URL",
                Reason::InvalidRedirectUri.code(),
            );
        }
    };
    {
        let mut query = url.query_pairs_mut();
        for (k, v) in params {
            query.append_pair(k, v);
        }
        if let Some(state) = state {
            query.append_pair("state", state);
        }
        query.append_pair("iss", &server.issuer());
    }
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(location) = HeaderValue::from_str(url.as_str()) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A refusal after the redirect URI is known good: audited, then sent back
/// to the client as `error`.
async fn refuse_to_client(
    server: &AuthServer,
    tool: &str,
    client_id: &str,
    redirect_uri: &str,
    state: Option<&str>,
    subject: &str,
    refusal: Refusal,
) -> Response {
    let refusal = server.refuse(subject, Some(client_id), tool, refusal).await;
    back_to_client(
        server,
        redirect_uri,
        state,
        &[
            ("error", refusal.reason.oauth_error()),
            ("error_description", &refusal.message),
        ],
    )
}

/// What the consent form carries back, sealed: the checked request, who
/// was asked, in which browser session, until when.
#[derive(Serialize, Deserialize)]
struct ConsentTicket {
    /// Answered once: the family it starts records it.
    id: String,
    auth: Authorization,
    user: String,
    session: String,
    expires: i64,
}

/// An authorization waiting for the browser to sign in (sealed in a
/// cookie); with the OpenID provider, what its answer must match.
#[derive(Serialize, Deserialize)]
struct Pending {
    /// The client authorization to continue; `None` when the person signs
    /// in for the console (`/oauth/signin/console`).
    auth: Option<Authorization>,
    expires: i64,
    idp: Option<IdpPending>,
}

async fn authorize(
    State(server): State<Arc<AuthServer>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    const TOOL: &str = "oauth:authorize";
    if !server.config.oauth.enabled {
        return StatusCode::NOT_FOUND.into_response();
    }
    let query = query.unwrap_or_default();
    let params = match fields(query.as_bytes()) {
        Ok(p) => p,
        Err(e) => {
            return refused_page(
                &server,
                "anonymous",
                None,
                TOOL,
                Refusal::new(Reason::InvalidRequest, e),
            )
            .await;
        }
    };
    let get = |k: &str| params.get(k).map(String::as_str).filter(|v| !v.is_empty());
    // Until the client and its redirect URI check out, nothing is redirected.
    let Some(client_id) = get("client_id") else {
        return refused_page(
            &server,
            "anonymous",
            None,
            TOOL,
            Refusal::new(Reason::InvalidClient, "client_id is required"),
        )
        .await;
    };
    let client = match server.client(client_id).await {
        Ok(c) => c,
        Err(refusal) => {
            return refused_page(&server, "anonymous", Some(client_id), TOOL, refusal).await;
        }
    };
    let redirect_uri = match get("redirect_uri") {
        Some(uri) => uri.to_owned(),
        None if client.redirect_uris.len() == 1 => client.redirect_uris[0].clone(),
        None => {
            return refused_page(
                &server,
                "anonymous",
                Some(client_id),
                TOOL,
                Refusal::new(Reason::InvalidRedirectUri, "redirect_uri is required"),
            )
            .await;
        }
    };
    if !redirect::matches(&client.redirect_uris, &redirect_uri) {
        return refused_page(
            &server,
            "anonymous",
            Some(client_id),
            TOOL,
            Refusal::new(
                Reason::InvalidRedirectUri,
                format!("redirect_uri '{redirect_uri}' is not registered for this client"),
            ),
        )
        .await;
    }
    let state = get("state");
    let to_client = |reason: Reason, message: String| {
        let server = server.clone();
        let redirect_uri = redirect_uri.clone();
        async move {
            refuse_to_client(
                &server,
                TOOL,
                client_id,
                &redirect_uri,
                state,
                "anonymous",
                Refusal::new(reason, message),
            )
            .await
        }
    };
    if get("response_type") != Some("code") {
        return to_client(
            Reason::UnsupportedResponseType,
            "only response_type=code is supported".into(),
        )
        .await;
    }
    let Some(challenge) = get("code_challenge") else {
        return to_client(
            Reason::PkceRequired,
            "code_challenge is required (PKCE, S256)".into(),
        )
        .await;
    };
    match get("code_challenge_method") {
        Some("S256") => {}
        // RFC 7636 §4.3: an absent method means `plain`.
        Some("plain") | None => {
            return to_client(
                Reason::PkcePlainRefused,
                "code_challenge_method must be S256; plain is refused".into(),
            )
            .await;
        }
        Some(other) => {
            return to_client(
                Reason::PkcePlainRefused,
                format!("code_challenge_method '{other}' is not supported; use S256"),
            )
            .await;
        }
    }
    if !crate::authserver::pkce::valid_challenge(challenge) {
        return to_client(
            Reason::InvalidRequest,
            "code_challenge is not an S256 challenge".into(),
        )
        .await;
    }
    let scope = match Scope::parse(get("scope"), server.default_scope()) {
        Ok(scope) => scope,
        Err(message) => return to_client(Reason::InvalidScope, message).await,
    };
    let resource = server.resource();
    if let Some(asked) = get("resource")
        && asked.trim_end_matches('/') != resource
    {
        return to_client(
            Reason::InvalidTarget,
            format!("this server issues tokens for {resource} only"),
        )
        .await;
    }
    let auth = Authorization {
        client_id: client.client_id.clone(),
        client_name: client.name.clone(),
        redirect_uri,
        state: state.map(str::to_owned),
        code_challenge: challenge.to_owned(),
        resource,
        scope: scope.as_str().to_owned(),
    };
    let session = match cookie(&headers, SESSION_COOKIE) {
        Some(value) => signin::session(&server.pool, &value).await,
        None => None,
    };
    match session {
        Some(session) => consent_page(&server, auth, &session).await,
        None => {
            // Not signed in: to the company's OpenID provider if there is
            // one, else the person needs their one-time link.
            let (mut response, idp) = match &server.idp {
                Some(idp) => match idp.start(&server.idp_redirect_uri()).await {
                    Ok((url, pending)) => {
                        let mut response = StatusCode::SEE_OTHER.into_response();
                        if let Ok(location) = HeaderValue::from_str(&url) {
                            response.headers_mut().insert(header::LOCATION, location);
                        }
                        (response, Some(pending))
                    }
                    Err(refusal) => {
                        return refused_page(&server, "anonymous", Some(client_id), TOOL, refusal)
                            .await;
                    }
                },
                None => (pages::not_signed_in(&client.name), None),
            };
            let pending = server.seal(
                "pending",
                &Pending {
                    auth: Some(auth),
                    expires: unix_now() + TICKET_SECS,
                    idp,
                },
            );
            response.headers_mut().insert(
                header::SET_COOKIE,
                set_cookie(&server, PENDING_COOKIE, &pending, TICKET_SECS),
            );
            response
        }
    }
}

/// The consent page for `auth`, asked of the signed-in `session`.
async fn consent_page(
    server: &AuthServer,
    auth: Authorization,
    session: &signin::BrowserSession,
) -> Response {
    let user = match signin::may_sign_in(&server.config, &session.user) {
        Ok(user) => user,
        Err(refusal) => {
            return refused_page(
                server,
                &session.user,
                Some(&auth.client_id),
                "oauth:authorize",
                refusal,
            )
            .await;
        }
    };
    let scope = Scope::stored(&auth.scope);
    let access = server
        .config
        .user(&user)
        .map(|u| {
            u.access
                .iter()
                .map(|(service, risk)| {
                    let risk = scope.risk_cap().map_or(*risk, |cap| cap.min(*risk));
                    let service = if service == "*" {
                        "every service"
                    } else {
                        service
                    };
                    format!("{service}: up to {}", risk.as_str())
                })
                .collect()
        })
        .unwrap_or_default();
    let ticket = server.seal(
        "consent",
        &ConsentTicket {
            id: hex::encode(rand::random::<[u8; 16]>()),
            auth: auth.clone(),
            user: user.clone(),
            session: session.id.clone(),
            expires: unix_now() + TICKET_SECS,
        },
    );
    let oauth = &server.config.oauth;
    pages::consent(&pages::Consent {
        client_name: &auth.client_name,
        client_id: &auth.client_id,
        redirect_host: &redirect::shown_host(&auth.redirect_uri),
        user: &user,
        scope: scope.as_str(),
        scope_means: scope.describe(),
        access,
        access_ttl: humantime::format_duration(oauth.access_token_ttl).to_string(),
        refresh_ttl: humantime::format_duration(oauth.refresh_token_ttl).to_string(),
        ticket: &ticket,
    })
}

async fn consent(
    State(server): State<Arc<AuthServer>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    const TOOL: &str = "oauth:consent";
    let invalid = |m: &str| Refusal::new(Reason::InvalidConsent, m);
    let form = match fields(&body) {
        Ok(f) => f,
        Err(e) => return refused_page(&server, "anonymous", None, TOOL, invalid(&e)).await,
    };
    let Some(ticket) = form
        .get("ticket")
        .and_then(|t| server.open::<ConsentTicket>("consent", t))
    else {
        return refused_page(
            &server,
            "anonymous",
            None,
            TOOL,
            invalid("the consent form is not genuine"),
        )
        .await;
    };
    let client = Some(ticket.auth.client_id.as_str());
    if ticket.expires < unix_now() {
        return refused_page(
            &server,
            &ticket.user,
            client,
            TOOL,
            invalid("the consent form expired: start again from your client"),
        )
        .await;
    }
    // The answer must come from the browser that was asked.
    let session = match cookie(&headers, SESSION_COOKIE) {
        Some(value) => signin::session(&server.pool, &value).await,
        None => None,
    };
    if session.as_ref().map(|s| s.id.as_str()) != Some(ticket.session.as_str()) {
        return refused_page(
            &server,
            &ticket.user,
            client,
            TOOL,
            invalid("the consent form was answered from another browser session"),
        )
        .await;
    }
    let auth = ticket.auth;
    if form.get("decision").map(String::as_str) != Some("approve") {
        return refuse_to_client(
            &server,
            TOOL,
            &auth.client_id,
            &auth.redirect_uri,
            auth.state.as_deref(),
            &ticket.user,
            Refusal::new(Reason::ConsentDenied, "the person denied access"),
        )
        .await;
    }
    let code = match server.issue_code(&auth, &ticket.user, &ticket.id).await {
        Ok(code) => code,
        Err(refusal) if refusal.reason == Reason::InvalidConsent => {
            return refused_page(&server, &ticket.user, Some(&auth.client_id), TOOL, refusal).await;
        }
        Err(refusal) => {
            return refuse_to_client(
                &server,
                TOOL,
                &auth.client_id,
                &auth.redirect_uri,
                auth.state.as_deref(),
                &ticket.user,
                refusal,
            )
            .await;
        }
    };
    if let Err(refusal) = server
        .audit_event(
            &ticket.user,
            Some(&auth.client_id),
            TOOL,
            format!(
                "consented: {} ({}) may use {} as {} with scope {}; code sent to {}",
                auth.client_name,
                auth.client_id,
                auth.resource,
                ticket.user,
                auth.scope,
                redirect::shown_host(&auth.redirect_uri)
            ),
        )
        .await
    {
        // Fail closed: a consent that cannot be audited hands out nothing.
        return pages::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "Cannot continue",
            &refusal.message,
            refusal.code(),
        );
    }
    back_to_client(
        &server,
        &auth.redirect_uri,
        auth.state.as_deref(),
        &[("code", &code)],
    )
}

#[derive(Deserialize)]
struct LinkQuery {
    link: Option<String>,
}

/// Sign in for the console through the company's OpenID provider: the same
/// path as a client's authorization, with nothing to consent to at the end.
async fn console_signin(State(server): State<Arc<AuthServer>>, headers: HeaderMap) -> Response {
    const TOOL: &str = "oauth:signin";
    if cookie(&headers, SESSION_COOKIE).is_some() {
        // Perhaps already signed in: the console checks the session.
        return Redirect::to(CONSOLE_SSO).into_response();
    }
    let Some(idp) = &server.idp else {
        return pages::error(
            StatusCode::NOT_FOUND,
            "Sign in to mcpgate",
            "this gateway has no company sign-in: open the one-time link your administrator gave you",
            Reason::SigninLinkInvalid.code(),
        );
    };
    let (url, idp_pending) = match idp.start(&server.idp_redirect_uri()).await {
        Ok(started) => started,
        Err(refusal) => return refused_page(&server, "anonymous", None, TOOL, refusal).await,
    };
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(location) = HeaderValue::from_str(&url) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    let pending = server.seal(
        "pending",
        &Pending {
            auth: None,
            expires: unix_now() + TICKET_SECS,
            idp: Some(idp_pending),
        },
    );
    response.headers_mut().insert(
        header::SET_COOKIE,
        set_cookie(&server, PENDING_COOKIE, &pending, TICKET_SECS),
    );
    response
}

async fn signin_page(Query(query): Query<LinkQuery>) -> Response {
    match query.link {
        Some(link) => pages::signin_confirm(&link),
        None => pages::error(
            StatusCode::BAD_REQUEST,
            "Sign in to mcpgate",
            "this page needs the one-time link your administrator gave you",
            Reason::SigninLinkInvalid.code(),
        ),
    }
}

async fn signin(
    State(server): State<Arc<AuthServer>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    const TOOL: &str = "oauth:signin";
    let link = fields(&body)
        .ok()
        .and_then(|f| f.get("link").cloned())
        .unwrap_or_default();
    let user = match signin::redeem_link(&server.pool, &link).await {
        Ok(user) => user,
        Err(refusal) => return refused_page(&server, "anonymous", None, TOOL, refusal).await,
    };
    let user = match signin::may_sign_in(&server.config, &user) {
        Ok(user) => user,
        Err(refusal) => return refused_page(&server, &user, None, TOOL, refusal).await,
    };
    signed_in(&server, &headers, &user, "link").await
}

/// `user` proved who they are (`via` a link or the provider): open the
/// browser session, audit it, and continue the pending authorization if any.
async fn signed_in(server: &AuthServer, headers: &HeaderMap, user: &str, via: &str) -> Response {
    const TOOL: &str = "oauth:signin";
    let ttl = server.config.oauth.session_ttl;
    let (session, cookie_value) = match signin::open_session(&server.pool, user, via, ttl).await {
        Ok(v) => v,
        Err(e) => {
            let refusal = crate::authserver::storage_refusal(e);
            return refused_page(server, user, None, TOOL, refusal).await;
        }
    };
    if let Err(refusal) = server
        .audit_event(user, None, TOOL, format!("signed in ({via})"))
        .await
    {
        return pages::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "Cannot sign in",
            &refusal.message,
            refusal.code(),
        );
    }
    // Continue the authorization that sent the person here, if any.
    let pending = cookie(headers, PENDING_COOKIE)
        .and_then(|v| server.open::<Pending>("pending", &v))
        .filter(|p| p.expires >= unix_now());
    let mut response = match pending {
        Some(Pending {
            auth: Some(auth), ..
        }) => consent_page(server, auth, &session).await,
        // Signed in for the console: it opens its own session from this one.
        Some(Pending { auth: None, .. }) => Redirect::to(CONSOLE_SSO).into_response(),
        None => pages::page(
            StatusCode::OK,
            "Signed in",
            &format!(
                "<p>This browser is signed in to mcpgate as <strong>{}</strong>. \
                 Go back to your AI client and connect again, or \
                 <a href=\"/console/sso\">open the console</a>.</p>",
                pages::escape(user)
            ),
        ),
    };
    let max_age = ttl.as_secs() as i64;
    let headers = response.headers_mut();
    headers.append(
        header::SET_COOKIE,
        set_cookie(server, SESSION_COOKIE, &cookie_value, max_age),
    );
    headers.append(
        header::SET_COOKIE,
        set_cookie(server, PENDING_COOKIE, "", 0),
    );
    response
}

/// The company's OpenID provider sends the browser back: the `state` must be
/// the one this browser's pending authorization holds, the code is
/// exchanged, the ID token checked (`idp.rs`), the person must be configured.
async fn idp_callback(
    State(server): State<Arc<AuthServer>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    const TOOL: &str = "oauth:signin";
    let Some(idp) = &server.idp else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let invalid = |m: &str| Refusal::new(Reason::InvalidState, m);
    let params = match fields(query.unwrap_or_default().as_bytes()) {
        Ok(p) => p,
        Err(e) => return refused_page(&server, "anonymous", None, TOOL, invalid(&e)).await,
    };
    let pending = cookie(&headers, PENDING_COOKIE)
        .and_then(|v| server.open::<Pending>("pending", &v))
        .filter(|p| p.expires >= unix_now());
    let Some((pending, expected)) = pending.and_then(|p| p.idp.clone().map(|i| (p, i))) else {
        return refused_page(
            &server,
            "anonymous",
            None,
            TOOL,
            invalid("no sign-in is pending in this browser: start again from your client"),
        )
        .await;
    };
    let client = pending.auth.as_ref().map(|a| a.client_id.as_str());
    let state = params.get("state").map(String::as_str).unwrap_or_default();
    if !bool::from(subtle::ConstantTimeEq::ct_eq(
        state.as_bytes(),
        expected.state.as_bytes(),
    )) {
        return refused_page(
            &server,
            "anonymous",
            client,
            TOOL,
            invalid("the sign-in answer is not for this browser's request (state)"),
        )
        .await;
    }
    if let Some(error) = params.get("error") {
        return refused_page(
            &server,
            "anonymous",
            client,
            TOOL,
            Refusal::new(
                Reason::IdpDenied,
                format!("the sign-in provider answered {error}"),
            ),
        )
        .await;
    }
    let Some(code) = params.get("code") else {
        return refused_page(&server, "anonymous", client, TOOL, invalid("no code")).await;
    };
    let email = match idp
        .finish(code, &server.idp_redirect_uri(), &expected)
        .await
    {
        Ok(email) => email,
        Err(refusal) => return refused_page(&server, "anonymous", client, TOOL, refusal).await,
    };
    let user = match signin::may_sign_in(&server.config, &email) {
        Ok(user) => user,
        Err(refusal) => return refused_page(&server, &email, client, TOOL, refusal).await,
    };
    signed_in(&server, &headers, &user, "oidc").await
}

async fn register(State(server): State<Arc<AuthServer>>, body: axum::body::Bytes) -> Response {
    const TOOL: &str = "oauth:register";
    if !server.config.oauth.enabled || !server.config.oauth.dynamic_registration {
        return StatusCode::NOT_FOUND.into_response();
    }
    let request: crate::authserver::clients::RegistrationRequest =
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => {
                let refusal = server
                    .refuse(
                        "anonymous",
                        None,
                        TOOL,
                        Refusal::new(
                            Reason::InvalidClientMetadata,
                            format!("the registration is not valid JSON: {e}"),
                        ),
                    )
                    .await;
                return oauth_error(&refusal);
            }
        };
    match server.register(request).await {
        Ok(registered) => {
            let client_id = registered["client_id"].as_str().unwrap_or_default();
            let what = format!(
                "registered client {} ({})",
                registered["client_name"].as_str().unwrap_or_default(),
                registered["redirect_uris"]
            );
            if let Err(refusal) = server
                .audit_event("anonymous", Some(client_id), TOOL, what)
                .await
            {
                return oauth_error(&refusal);
            }
            super::no_store((StatusCode::CREATED, Json(registered)).into_response())
        }
        Err(refusal) => oauth_error(&server.refuse("anonymous", None, TOOL, refusal).await),
    }
}

/// The client id of HTTP Basic client authentication (RFC 6749 §2.3.1), as
/// some clients send it even when registered as public: the id only — this
/// server issues no secrets, so the client is bound by PKCE, not a secret.
fn basic_client_id(headers: &HeaderMap) -> Option<String> {
    use base64::Engine;
    let encoded = headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, _) = text.split_once(':')?;
    let id = form_urlencoded::parse(format!("id={id}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())?;
    (!id.is_empty()).then_some(id)
}

/// `POST /oauth/token` with `authorization_code` or `refresh_token`.
pub async fn token(server: &Arc<AuthServer>, headers: &HeaderMap, body: &[u8]) -> Response {
    let form = match fields(body) {
        Ok(f) => f,
        Err(e) => {
            let refusal = server
                .refuse(
                    "anonymous",
                    None,
                    "oauth:token",
                    Refusal::new(Reason::InvalidRequest, e),
                )
                .await;
            return oauth_error(&refusal);
        }
    };
    let get = |k: &str| form.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let grant_type = get("grant_type").unwrap_or_default();
    let tool = if grant_type == "refresh_token" {
        "oauth:refresh"
    } else {
        "oauth:token"
    };
    let basic = basic_client_id(headers);
    let client_id = match (get("client_id"), basic.as_deref()) {
        (Some(form), Some(basic)) if form != basic => {
            let refusal = server
                .refuse(
                    "anonymous",
                    Some(form),
                    tool,
                    Refusal::new(
                        Reason::InvalidClient,
                        "client_id differs from the Basic authentication's",
                    ),
                )
                .await;
            return oauth_error(&refusal);
        }
        (Some(id), _) | (None, Some(id)) => id,
        (None, None) => {
            let refusal = server
                .refuse(
                    "anonymous",
                    None,
                    tool,
                    Refusal::new(Reason::InvalidClient, "client_id is required"),
                )
                .await;
            return oauth_error(&refusal);
        }
    };
    let outcome = if grant_type == "refresh_token" {
        match get("refresh_token") {
            Some(refresh) => {
                server
                    .refresh(refresh, client_id, get("resource"), get("scope"))
                    .await
            }
            None => Err(crate::authserver::tokens::TokenFailure {
                user: None,
                refusal: Refusal::new(Reason::InvalidRequest, "refresh_token is required"),
            }),
        }
    } else {
        match (get("code"), get("redirect_uri")) {
            (Some(code), Some(redirect_uri)) => {
                server
                    .exchange_code(
                        code,
                        client_id,
                        redirect_uri,
                        get("code_verifier"),
                        get("resource"),
                    )
                    .await
            }
            _ => Err(crate::authserver::tokens::TokenFailure {
                user: None,
                refusal: Refusal::new(Reason::InvalidRequest, "code and redirect_uri are required"),
            }),
        }
    };
    match outcome {
        Ok(issued) => {
            let what = format!(
                "{} for {} (family {}): access token for {}, scope {}",
                if tool == "oauth:refresh" {
                    "tokens refreshed"
                } else {
                    "tokens issued"
                },
                issued.client_id,
                issued.family_id,
                server.resource(),
                issued.scope
            );
            if let Err(refusal) = server
                .audit_event(&issued.user, Some(client_id), tool, what)
                .await
            {
                // Fail closed: tokens that cannot be audited are not handed out.
                let _ = server
                    .revoke_family(&issued.family_id, "audit unavailable")
                    .await;
                return oauth_error(&refusal);
            }
            super::no_store(
                Json(json!({
                    "access_token": issued.access_token,
                    "token_type": "Bearer",
                    "expires_in": issued.expires_in,
                    "refresh_token": issued.refresh_token,
                    "scope": issued.scope,
                }))
                .into_response(),
            )
        }
        Err(failure) => {
            let subject = failure.user.as_deref().unwrap_or("anonymous");
            let refusal = server
                .refuse(subject, Some(client_id), tool, failure.refusal)
                .await;
            oauth_error(&refusal)
        }
    }
}

async fn revoke(State(server): State<Arc<AuthServer>>, body: axum::body::Bytes) -> Response {
    const TOOL: &str = "oauth:revoke";
    let form = match fields(&body) {
        Ok(f) => f,
        Err(e) => {
            let refusal = server
                .refuse(
                    "anonymous",
                    None,
                    TOOL,
                    Refusal::new(Reason::InvalidRequest, e),
                )
                .await;
            return oauth_error(&refusal);
        }
    };
    let Some(token) = form.get("token").filter(|t| !t.is_empty()) else {
        let refusal = server
            .refuse(
                "anonymous",
                None,
                TOOL,
                Refusal::new(Reason::InvalidRequest, "token is required"),
            )
            .await;
        return oauth_error(&refusal);
    };
    let client_id = form.get("client_id").map(String::as_str);
    match server.revoke_token(token, client_id).await {
        Ok(Some((user, what))) => {
            let _ = server
                .audit_event(&user, client_id, TOOL, format!("revoked {what}"))
                .await;
            super::no_store(StatusCode::OK.into_response())
        }
        // RFC 7009 §2.2: an unknown or foreign token is answered 200 too.
        Ok(None) => super::no_store(StatusCode::OK.into_response()),
        Err(refusal) => oauth_error(&server.refuse("anonymous", client_id, TOOL, refusal).await),
    }
}

/// The person behind a Bearer token (a gateway token, or an access token
/// of this server) for the self-service routes.
async fn person(server: &AuthServer, headers: &HeaderMap, tool: &str) -> Result<String, Response> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .unwrap_or_default();
    let user = if presented.starts_with(ACCESS_PREFIX) {
        server
            .verify_access(presented)
            .await
            .map(|g| g.user)
            .map_err(|r| r.refusal)
    } else {
        crate::tokens::verify(&server.pool, presented)
            .await
            .map(|r| r.user_email)
            .map_err(|e| Refusal::new(Reason::InvalidToken, e.to_string()))
    };
    match user {
        Ok(user) => Ok(user),
        Err(refusal) => {
            let refusal = server.refuse("anonymous", None, tool, refusal).await;
            Err((
                StatusCode::UNAUTHORIZED,
                Json(json!({"error": refusal.code(), "message": refusal.message})),
            )
                .into_response())
        }
    }
}

async fn list_clients(State(server): State<Arc<AuthServer>>, headers: HeaderMap) -> Response {
    let user = match person(&server, &headers, "oauth:clients").await {
        Ok(user) => user,
        Err(response) => return response,
    };
    match crate::authserver::tokens::authorized_clients(&server.pool, &user).await {
        Ok(clients) => Json(json!({ "user": user, "clients": clients })).into_response(),
        Err(e) => oauth_error(&crate::authserver::storage_refusal(e)),
    }
}

#[derive(Deserialize)]
struct ClientQuery {
    client_id: String,
}

async fn revoke_client(
    State(server): State<Arc<AuthServer>>,
    headers: HeaderMap,
    Query(query): Query<ClientQuery>,
) -> Response {
    const TOOL: &str = "oauth:clients";
    let user = match person(&server, &headers, TOOL).await {
        Ok(user) => user,
        Err(response) => return response,
    };
    match crate::authserver::tokens::revoke_client(&server.pool, &user, &query.client_id).await {
        Ok(0) => (
            StatusCode::NOT_FOUND,
            Json(json!({"error": "not_found", "message": "no live authorization of yours for that client"})),
        )
            .into_response(),
        Ok(n) => {
            let _ = server
                .audit_event(
                    &user,
                    Some(&query.client_id),
                    TOOL,
                    format!("revoked the client's access ({n} authorization(s))"),
                )
                .await;
            Json(json!({"revoked": n})).into_response()
        }
        Err(e) => oauth_error(&crate::authserver::storage_refusal(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_basic_header_names_the_client() {
        let mut headers = HeaderMap::new();
        // base64("mgc_abc:") and base64("https%3A%2F%2Fapp.example%2Fc.json:x")
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic bWdjX2FiYzo="),
        );
        assert_eq!(basic_client_id(&headers).as_deref(), Some("mgc_abc"));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic aHR0cHMlM0ElMkYlMkZhcHAuZXhhbXBsZSUyRmMuanNvbjp4"),
        );
        assert_eq!(
            basic_client_id(&headers).as_deref(),
            Some("https://app.example/c.json")
        );
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert_eq!(basic_client_id(&headers), None);
    }

    #[test]
    fn parameters_decode_and_repeats_are_refused() {
        let f = fields(b"a=1&b=x+y").unwrap();
        assert_eq!(f["b"], "x y");
        assert!(fields(b"a=1&a=2").is_err());
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("x=1; mcpgate_signin=abc"),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE).as_deref(), Some("abc"));
        assert_eq!(cookie(&headers, PENDING_COOKIE), None);
    }
}
