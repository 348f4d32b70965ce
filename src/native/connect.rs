//! A user connects their own account of a service with OAuth 2.0
//! (authorization code + PKCE, RFC 7636):
//! `GET /connect/<svc>` → the provider's consent page →
//! `GET /connect/<svc>/callback` → the token set, sealed in the vault.
//!
//! The browser proves who it is for with a short-lived ticket the gateway
//! signed into the `auth_required` answer (or a gateway bearer token). The
//! PKCE verifier and the `state` stay in the gateway; nothing secret is put
//! in a URL but the provider's one-time code.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use dashmap::DashMap;
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::token_set::{self, now_unix};
use crate::audit::AuditLog;
use crate::config::Config;
use crate::domain::{Reason, Refusal};
use crate::keys::MasterKey;
use crate::storage::Db;
use crate::tokens;
use crate::vault::{self, CredentialKind};

/// How long a connect link and a started flow stay usable.
const FLOW_TTL: Duration = Duration::from_secs(600);
/// Flows started but not finished, at most (older ones are dropped first).
const MAX_PENDING: usize = 10_000;

struct Pending {
    user: String,
    service: String,
    verifier: String,
    started: Instant,
}

/// `state` → the flow it belongs to.
#[derive(Clone, Default)]
pub struct PendingFlows(Arc<DashMap<String, Pending>>);

impl PendingFlows {
    fn insert(&self, state: String, pending: Pending) {
        self.0.retain(|_, p| p.started.elapsed() < FLOW_TTL);
        if self.0.len() >= MAX_PENDING
            && let Some(oldest) = self
                .0
                .iter()
                .min_by_key(|p| p.started)
                .map(|p| p.key().clone())
        {
            self.0.remove(&oldest);
        }
        self.0.insert(state, pending);
    }

    fn take(&self, state: &str) -> Option<Pending> {
        self.0
            .remove(state)
            .map(|(_, p)| p)
            .filter(|p| p.started.elapsed() < FLOW_TTL)
    }
}

fn ticket_mac(master: &MasterKey, payload: &str) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(&master.derive("connect-ticket"))
        .expect("HMAC takes any key length");
    mac.update(payload.as_bytes());
    mac
}

/// A link ticket: `user|service|expiry`, signed, valid for ten minutes.
pub fn ticket(master: &MasterKey, user: &str, service: &str) -> String {
    let payload = format!(
        "{}|{service}|{}",
        user.to_ascii_lowercase(),
        now_unix() + FLOW_TTL.as_secs() as i64
    );
    let tag = ticket_mac(master, &payload).finalize().into_bytes();
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(payload),
        URL_SAFE_NO_PAD.encode(tag)
    )
}

/// The user a ticket was issued to, if it is genuine, unexpired and for `service`.
pub fn verify_ticket(master: &MasterKey, ticket: &str, service: &str) -> Result<String, String> {
    let (payload, tag) = ticket
        .split_once('.')
        .ok_or("the connect link is malformed")?;
    let payload = URL_SAFE_NO_PAD
        .decode(payload)
        .ok()
        .and_then(|p| String::from_utf8(p).ok())
        .ok_or("the connect link is malformed")?;
    let tag = URL_SAFE_NO_PAD
        .decode(tag)
        .map_err(|_| "the connect link is malformed")?;
    // Constant-time comparison of the tag.
    ticket_mac(master, &payload)
        .verify_slice(&tag)
        .map_err(|_| "the connect link is not genuine")?;
    let mut parts = payload.splitn(3, '|');
    let (Some(user), Some(for_service), Some(expiry)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err("the connect link is malformed".into());
    };
    if for_service != service {
        return Err(format!(
            "the connect link is for {for_service}, not {service}"
        ));
    }
    if expiry
        .parse::<i64>()
        .map_err(|_| "the connect link is malformed")?
        < now_unix()
    {
        return Err("the connect link expired: ask again for a new one".into());
    }
    Ok(user.to_owned())
}

/// What the connect pages need: nothing of the rest of the gateway.
pub struct ConnectState {
    pub config: Arc<Config>,
    pub pool: Db,
    pub master_key: MasterKey,
    /// OAuth connect flows started at `/connect/<svc>` and not yet finished.
    pub flows: PendingFlows,
    pub audit: AuditLog,
}

pub fn routes(gw: Arc<ConnectState>) -> Router {
    Router::new()
        .route("/connect/{service}", get(start))
        .route("/connect/{service}/callback", get(callback))
        .with_state(gw)
}

/// Where the provider sends the browser back.
pub fn redirect_uri(gw: &ConnectState, service: &str) -> String {
    format!("{}/connect/{service}/callback", gw.config.public_url())
}

fn page(status: StatusCode, title: &str, text: &str) -> Response {
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        Html(format!(
            "<!doctype html><meta charset=utf-8><title>{t}</title><h1>{t}</h1><p>{x}</p>",
            t = escape(title),
            x = escape(text)
        )),
    )
        .into_response()
}

async fn refused(
    gw: &ConnectState,
    user: &str,
    service: &str,
    reason: Reason,
    why: &str,
) -> Response {
    let refusal = Refusal::new(reason, why);
    gw.audit
        .refuse(user, None, &format!("connect:{service}"), refusal)
        .await;
    let status = StatusCode::from_u16(reason.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
    page(status, "Not connected", why)
}

#[derive(Deserialize)]
struct StartQuery {
    ticket: Option<String>,
}

async fn start(
    State(gw): State<Arc<ConnectState>>,
    Path(service): Path<String>,
    Query(query): Query<StartQuery>,
    headers: HeaderMap,
) -> Response {
    let oauth = match gw.config.services.get(&service) {
        Some(s) => s.native().and_then(|n| n.oauth.clone()),
        _ => None,
    };
    let Some(oauth) = oauth else {
        return refused(
            &gw,
            "anonymous",
            &service,
            Reason::UnknownService,
            &format!("'{service}' is not a service users connect with OAuth"),
        )
        .await;
    };
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let user = match (&query.ticket, bearer) {
        (Some(ticket), _) => match verify_ticket(&gw.master_key, ticket, &service) {
            Ok(user) => user,
            Err(why) => {
                return refused(&gw, "anonymous", &service, Reason::InvalidToken, &why).await;
            }
        },
        (None, Some(token)) => match tokens::verify(&gw.pool, token).await {
            Ok(record) => record.user_email,
            Err(e) => {
                return refused(
                    &gw,
                    "anonymous",
                    &service,
                    Reason::InvalidToken,
                    &e.to_string(),
                )
                .await;
            }
        },
        (None, None) => {
            return refused(
                &gw,
                "anonymous",
                &service,
                Reason::Unauthenticated,
                "open the link from the auth_required answer (it carries a ticket), or send a gateway token",
            )
            .await;
        }
    };
    if gw.config.user(&user).is_none() {
        return refused(
            &gw,
            &user,
            &service,
            Reason::UnknownUser,
            "you are not a gateway user",
        )
        .await;
    }
    let verifier = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let state = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 24]>());
    let Ok(mut url) = reqwest::Url::parse(&oauth.authorize_url) else {
        return refused(
            &gw,
            &user,
            &service,
            Reason::BadConfig,
            "the service's authorize_url is not a URL",
        )
        .await;
    };
    {
        let mut pairs = url.query_pairs_mut();
        pairs
            .append_pair("response_type", "code")
            .append_pair("client_id", &oauth.client_id)
            .append_pair("redirect_uri", &redirect_uri(&gw, &service))
            .append_pair("state", &state)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        if !oauth.scopes.is_empty() {
            pairs.append_pair("scope", &oauth.scopes.join(" "));
        }
        for (k, v) in &oauth.extra {
            pairs.append_pair(k, v);
        }
    }
    gw.flows.insert(
        state,
        Pending {
            user,
            service,
            verifier,
            started: Instant::now(),
        },
    );
    Redirect::to(url.as_str()).into_response()
}

#[derive(Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

async fn callback(
    State(gw): State<Arc<ConnectState>>,
    Path(service): Path<String>,
    Query(query): Query<CallbackQuery>,
) -> Response {
    let Some(pending) = query.state.as_deref().and_then(|s| gw.flows.take(s)) else {
        return refused(
            &gw,
            "anonymous",
            &service,
            Reason::InvalidState,
            "this sign-in is unknown or expired: start again from the connect link",
        )
        .await;
    };
    if pending.service != service {
        return refused(
            &gw,
            &pending.user,
            &service,
            Reason::InvalidState,
            "the sign-in was for another service",
        )
        .await;
    }
    if let Some(error) = &query.error {
        let why = format!(
            "the provider did not grant access: {error}{}",
            query
                .error_description
                .as_deref()
                .map(|d| format!(" ({d})"))
                .unwrap_or_default()
        );
        return refused(&gw, &pending.user, &service, Reason::ConsentDenied, &why).await;
    }
    let Some(code) = &query.code else {
        return refused(
            &gw,
            &pending.user,
            &service,
            Reason::InvalidRequest,
            "the provider sent no code",
        )
        .await;
    };
    let Some(oauth) = gw
        .config
        .services
        .get(&service)
        .and_then(|s| s.native())
        .and_then(|n| n.oauth.clone())
    else {
        return refused(
            &gw,
            &pending.user,
            &service,
            Reason::UnknownService,
            "the service is no longer configured for OAuth",
        )
        .await;
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .redirect(reqwest::redirect::Policy::none())
        .build();
    let Ok(http) = http else {
        return refused(
            &gw,
            &pending.user,
            &service,
            Reason::ConnectFailed,
            "no HTTP client",
        )
        .await;
    };
    let redirect = redirect_uri(&gw, &service);
    let set = token_set::token_request(
        &http,
        &oauth,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", &redirect),
            ("code_verifier", &pending.verifier),
        ],
        None,
    )
    .await;
    let set = match set {
        Ok(set) => set,
        Err(e) => {
            return refused(
                &gw,
                &pending.user,
                &service,
                Reason::ConnectFailed,
                &e.to_string(),
            )
            .await;
        }
    };
    if let Err(e) = vault::set(
        &gw.pool,
        &gw.master_key,
        &pending.user,
        &service,
        CredentialKind::Oauth,
        &set.to_secret(),
    )
    .await
    {
        return refused(
            &gw,
            &pending.user,
            &service,
            Reason::ConnectFailed,
            &format!("the vault refused: {e}"),
        )
        .await;
    }
    let mut row = crate::audit::RowStart {
        subject: &pending.user,
        actor: &pending.user,
        session: None,
        client: &Default::default(),
        tool: &format!("connect:{service}"),
        arguments: &Default::default(),
    }
    .row();
    row.service = Some(service.clone());
    row.completed = true;
    let _ = gw.audit.decision(row).await;
    tracing::info!(service, "a user connected their account");
    page(
        StatusCode::OK,
        "Connected",
        &format!("Your {service} account is connected to mcpgate. You can close this window."),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_are_bound_to_user_service_and_key() {
        let key = MasterKey::from_bytes([7; 32]);
        let t = ticket(&key, "Alice@Example.com", "google");
        assert_eq!(
            verify_ticket(&key, &t, "google").unwrap(),
            "alice@example.com"
        );
        assert!(
            verify_ticket(&key, &t, "slack")
                .unwrap_err()
                .contains("not slack")
        );
        let other = MasterKey::from_bytes([8; 32]);
        assert!(
            verify_ticket(&other, &t, "google")
                .unwrap_err()
                .contains("genuine")
        );
        let (payload, tag) = t.split_once('.').unwrap();
        let forged = URL_SAFE_NO_PAD.encode(
            String::from_utf8(URL_SAFE_NO_PAD.decode(payload).unwrap())
                .unwrap()
                .replace("alice", "mallory"),
        );
        assert!(verify_ticket(&key, &format!("{forged}.{tag}"), "google").is_err());
        assert!(verify_ticket(&key, "nonsense", "google").is_err());
    }
}
