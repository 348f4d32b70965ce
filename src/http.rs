//! The HTTP surface, assembled in one place:
//!
//! | route        | auth          | what                                   |
//! |--------------|---------------|----------------------------------------|
//! | `/mcp`       | Bearer token  | MCP Streamable HTTP (both protocol eras)|
//! | `/health`    | none          | liveness and each connector's state    |
//! | `/metrics`   | none          | Prometheus text: calls, actors, connectors |
//! | `/oauth/token` | actor token in the form | RFC 8693 token exchange (delegation); code and refresh grants |
//! | `/.well-known/…`, `/oauth/…` | public / sign-in | the authorization server of `/mcp` (`oauth/server.rs`) |
//! | `/admin/api/…` | an admin's Bearer token | operator API (see `admin.rs`)     |

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::authserver::tokens::ACCESS_PREFIX as OAUTH_ACCESS_PREFIX;
use crate::delegation::grants::ACCESS_TOKEN_PREFIX;
use crate::domain::{Reason, Refusal};
use crate::gateway::Gateway;
use crate::mcp::McpHandler;
use crate::principal::Principal;
use crate::tokens::{self, TokenRejection};

const SESSION_HEADER: &str = "mcp-session-id";

pub fn router(gw: Arc<Gateway>, mcp_shutdown: CancellationToken) -> Router {
    // Plain JSON answers for stateless (2026-07-28) requests whose answer is a
    // single message: the client can reuse its connection. rmcp falls back to
    // SSE by itself when a handler sends anything before the answer.
    let mut config = StreamableHttpServerConfig::default()
        .with_cancellation_token(mcp_shutdown)
        .with_json_response(true);
    if !gw.config().allowed_hosts.is_empty() {
        let mut hosts = vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ];
        hosts.extend(gw.config().allowed_hosts.iter().cloned());
        config = config.with_allowed_hosts(hosts);
    }
    let (pipeline, sessions) = (gw.pipeline().clone(), gw.sessions().clone());
    let mcp = StreamableHttpService::new(
        move || Ok(McpHandler::new(pipeline.clone(), sessions.clone())),
        gw.sessions().manager(),
        config,
    );
    let mcp = tower::ServiceBuilder::new()
        .layer(middleware::from_fn_with_state(gw.clone(), authenticate))
        .service(SharedMcp(Arc::new(mcp)));
    Router::new()
        .route("/health", get(health))
        .route("/health/ready", get(ready))
        .route("/metrics", get(metrics))
        .route_service("/mcp", mcp)
        .with_state(gw.clone())
        .route(
            "/oauth/token",
            crate::oauth::ratelimit::limited(
                axum::routing::post(crate::oauth::token),
                gw.authserver(),
                crate::oauth::ratelimit::Endpoint::Token,
            ),
        )
        .with_state(gw.clone())
        .merge(crate::oauth::server::routes(gw.clone()))
        .merge(crate::native::connect::routes(gw.connect().clone()))
        .merge(crate::console::routes(gw.clone()))
        .merge(crate::admin::routes(gw))
}

/// rmcp's MCP service behind an `Arc`. Tower clones a service for every
/// request, and rmcp's clone copies its whole config (the allowed hosts
/// among it), then clones itself again to answer: this clones a pointer.
#[derive(Clone)]
struct SharedMcp(Arc<StreamableHttpService<McpHandler, LocalSessionManager>>);

impl tower::Service<Request> for SharedMcp {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = futures::future::BoxFuture<'static, Result<Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let mcp = self.0.clone();
        Box::pin(async move { Ok(mcp.handle(request).await.map(axum::body::Body::new)) })
    }
}

/// Serve until `shutdown` resolves, then drain in-flight calls, close MCP
/// streams and stop the supervision tree in order (the audit writer last).
pub async fn serve(
    gw: Arc<Gateway>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mcp_shutdown = CancellationToken::new();
    let app = router(gw.clone(), mcp_shutdown.clone());
    let drain_gw = gw.clone();
    // Answers leave at once: without TCP_NODELAY an SSE answer (a priming
    // event, then the message) waits for the client's delayed ACK — 40 ms
    // per call for keep-alive clients such as aiohttp or Node's fetch.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
    });
    // The peer's address reaches handlers (the OAuth endpoints' rate limits).
    let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: draining in-flight calls");
            drain_gw.begin_drain();
            drain_gw
                .drain()
                .drained(drain_gw.config().limits.drain_timeout)
                .await;
            mcp_shutdown.cancel();
        })
        .await;
    gw.shutdown().await;
    tracing::info!("stopped");
    result
}

/// Authenticate every `/mcp` request once; refuse with 401 otherwise. Also keeps
/// an MCP session bound to the credential that opened it. Each POST (one
/// JSON-RPC message) is a server span that continues the caller's trace
/// (W3C `traceparent`); the call's own span is its child (telemetry.rs).
async fn authenticate(State(gw): State<Arc<Gateway>>, request: Request, next: Next) -> Response {
    let span = if request.method() == Method::POST {
        let span = tracing::info_span!(
            "POST /mcp",
            otel.kind = "server",
            http.request.method = "POST",
            url.path = "/mcp",
            http.response.status_code = tracing::field::Empty,
        );
        crate::telemetry::continue_trace(&span, request.headers());
        span
    } else {
        tracing::Span::none()
    };
    let response = admit(gw, request, next, span.clone())
        .instrument(span.clone())
        .await;
    span.record(
        "http.response.status_code",
        i64::from(response.status().as_u16()),
    );
    response
}

async fn admit(
    gw: Arc<Gateway>,
    mut request: Request,
    next: Next,
    span: tracing::Span,
) -> Response {
    let session_id = request
        .headers()
        .get(SESSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let principal = match principal_of(&gw, request.headers(), &session_id)
        .instrument(tracing::info_span!("mcp.authenticate"))
        .await
    {
        Ok(principal) => principal,
        Err(refused) => {
            // Read the refused request's body (bounded) before answering: a
            // connection left with an unread body is closed after the answer,
            // and a keep-alive client that sends its next request (say, with
            // the token it just obtained) on it meets a dead socket.
            let _ = axum::body::to_bytes(request.into_body(), REFUSED_BODY_LIMIT).await;
            return refused;
        }
    };
    // A token whose scope narrows its person's access: a call beyond the
    // scope is answered here with a 403 challenge (MCP "Scope Challenge
    // Handling"), which a JSON-RPC error inside a 200 could not carry.
    if principal.scope_cap.is_some() && request.method() == Method::POST {
        let (parts, body) = request.into_parts();
        let Ok(bytes) = axum::body::to_bytes(body, SCOPED_BODY_LIMIT).await else {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                Json(json!({
                    "error": "payload_too_large",
                    "message": format!("a request with a scoped OAuth token may be at most {SCOPED_BODY_LIMIT} bytes"),
                })),
            )
                .into_response();
        };
        if let Some(refusal) = beyond_scope(&gw, &principal, &session_id, &bytes).await {
            return insufficient_scope(&gw, &refusal);
        }
        request = Request::from_parts(parts, axum::body::Body::from(bytes));
    }
    let credential_id = principal.credential_id.clone();
    request.extensions_mut().insert(principal);
    request
        .extensions_mut()
        .insert(crate::telemetry::RequestSpan(span.clone()));
    let is_delete = request.method() == Method::DELETE;
    // A POST is in flight until its response body (often an SSE stream that
    // ends with the JSON-RPC answer) has been sent: shutdown waits for that,
    // and the request's span ends then.
    let in_flight = (request.method() == Method::POST).then(|| gw.drain().enter());
    let response = next.run(request).await;
    let response = match in_flight {
        Some(guard) => {
            let (parts, body) = response.into_parts();
            let body = body.into_data_stream().map(move |chunk| {
                let _held = (&guard, &span);
                chunk
            });
            Response::from_parts(parts, axum::body::Body::from_stream(body))
        }
        None => response,
    };
    match &session_id {
        None => {
            // A new initialize-era session: bind it to this credential.
            if let Some(new_id) = response
                .headers()
                .get(SESSION_HEADER)
                .and_then(|v| v.to_str().ok())
            {
                gw.sessions().bind(new_id, credential_id);
            }
        }
        Some(id) if is_delete && response.status().is_success() => gw.sessions().end(id).await,
        Some(_) => {}
    }
    response
}

/// The caller of a `/mcp` request, or the refusal (audited) to answer with.
async fn principal_of(
    gw: &Gateway,
    headers: &http::HeaderMap,
    session_id: &Option<String>,
) -> Result<Principal, Response> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let Some(presented) = presented else {
        audit_http_refusal(
            gw,
            "anonymous",
            session_id,
            Reason::Unauthenticated,
            "no bearer token",
        )
        .await;
        return Err(unauthorized(gw, None));
    };
    let principal = if presented.starts_with(OAUTH_ACCESS_PREFIX) && gw.config().oauth.enabled {
        // An access token of the gateway's own authorization server: one
        // store read, like a gateway token; the family id is the credential,
        // so a refreshed token keeps its MCP session.
        let grant = match gw.authserver().verify_access(presented).await {
            Ok(grant) => grant,
            Err(rejection) => {
                if let Some(family) = &rejection.ended_family {
                    // The family is the sessions' credential: they end with it.
                    gw.sessions().retire_credential(&oauth_credential(family));
                }
                let subject = rejection.user.as_deref().unwrap_or("anonymous");
                audit_http_refusal(
                    gw,
                    subject,
                    session_id,
                    rejection.refusal.reason,
                    &rejection.refusal.message,
                )
                .await;
                return Err(unauthorized(gw, Some(&rejection.refusal.message)));
            }
        };
        let user = match gw.config().user(&grant.user) {
            Some(user) if !user.service_account => user,
            _ => {
                let reason = "the token's user is no longer configured for sign-in";
                audit_http_refusal(gw, &grant.user, session_id, Reason::UnknownUser, reason).await;
                return Err(unauthorized(gw, Some(reason)));
            }
        };
        Principal {
            credential_id: oauth_credential(&grant.family_id),
            subject: user.email.clone(),
            actor: user.email.clone(),
            user: Arc::new(user.clone()),
            grant: None,
            scope_cap: grant.scope.risk_cap(),
        }
    } else if presented.starts_with(ACCESS_TOKEN_PREFIX) {
        match gw.delegation().authenticate(presented).await {
            Ok(grant) => Principal {
                credential_id: grant.scope.grant_id.clone(),
                subject: grant.scope.subject.clone(),
                actor: grant.scope.actor.clone(),
                user: grant.owner.clone(),
                grant: Some(grant),
                scope_cap: None,
            },
            Err(rejection) => {
                let subject = rejection.subject.as_deref().unwrap_or("anonymous");
                audit_http_refusal(
                    gw,
                    subject,
                    session_id,
                    rejection.reason,
                    &rejection.message,
                )
                .await;
                return Err(unauthorized(gw, Some(&rejection.message)));
            }
        }
    } else {
        let record = match tokens::verify_cached(gw.token_cache(), gw.pool(), presented).await {
            Ok(record) => record,
            Err(rejection) => {
                let subject = match &rejection {
                    TokenRejection::Revoked { id, user } | TokenRejection::Expired { id, user } => {
                        // The presenter proved they hold this dead token:
                        // its sessions end now, not at the idle timeout.
                        gw.sessions().retire_credential(id);
                        user.clone()
                    }
                    _ => "anonymous".to_owned(),
                };
                audit_http_refusal(
                    gw,
                    &subject,
                    session_id,
                    Reason::InvalidToken,
                    &rejection.to_string(),
                )
                .await;
                return Err(unauthorized(gw, Some(&rejection.to_string())));
            }
        };
        let Some(user) = gw.config().user(&record.user_email) else {
            let reason = "the token's user is no longer configured";
            audit_http_refusal(
                gw,
                &record.user_email,
                session_id,
                Reason::UnknownUser,
                reason,
            )
            .await;
            return Err(unauthorized(gw, Some(reason)));
        };
        Principal {
            credential_id: record.id,
            subject: user.email.clone(),
            actor: user.email.clone(),
            user: Arc::new(user.clone()),
            grant: None,
            scope_cap: None,
        }
    };
    if let Some(id) = session_id
        && let Some(owner) = gw.sessions().owner(id)
        && owner != principal.credential_id
    {
        // A client that stepped up its scope (or signed in again) holds a
        // new token family: its session follows it, if both sign-ins are
        // the same person's in the same client.
        if let (Some(old), Some(new)) = (
            owner.strip_prefix(OAUTH_CREDENTIAL),
            principal.credential_id.strip_prefix(OAUTH_CREDENTIAL),
        ) && gw.authserver().same_holder(old, new).await
        {
            gw.sessions().bind(id, principal.credential_id.clone());
            return Ok(principal);
        }
        let reason = "this MCP session was opened with another credential";
        audit_http_refusal(
            gw,
            &principal.subject,
            session_id,
            Reason::SessionCredentialMismatch,
            reason,
        )
        .await;
        return Err((
            StatusCode::FORBIDDEN,
            Json(json!({ "error": "forbidden", "reason": "session_credential_mismatch", "message": reason })),
        )
            .into_response());
    }
    Ok(principal)
}

/// The most of a `/mcp` request's body read to check a scoped token's call.
const SCOPED_BODY_LIMIT: usize = 4 << 20;

/// The first `tools/call` in `body` (one JSON-RPC message, or a batch of the
/// older era) that the principal's scope does not cover, audited. A body
/// that does not parse is left to MCP to answer.
async fn beyond_scope(
    gw: &Gateway,
    principal: &Principal,
    session_id: &Option<String>,
    body: &[u8],
) -> Option<Refusal> {
    let parsed: serde_json::Value = serde_json::from_slice(body).ok()?;
    let messages = match parsed {
        serde_json::Value::Array(batch) => batch,
        single => vec![single],
    };
    for message in messages {
        if message["method"] != "tools/call" {
            continue;
        }
        let Some(tool) = message["params"]["name"].as_str() else {
            continue;
        };
        let arguments = match &message["params"]["arguments"] {
            serde_json::Value::Object(arguments) => arguments.clone(),
            _ => Default::default(),
        };
        let session = session_id.as_ref().map(|id| format!("mcp:{id}"));
        if let Some(refusal) = gw
            .pipeline()
            .beyond_scope(principal, session, tool, &arguments)
            .await
        {
            return Some(refusal);
        }
    }
    None
}

/// A 403 scope challenge (RFC 6750 §3.1, MCP "Scope Challenge Handling"):
/// the scope that covers the call, and where the client starts again.
fn insufficient_scope(gw: &Gateway, refusal: &Refusal) -> Response {
    let challenge = format!(
        r#"Bearer error="insufficient_scope", scope="{}", resource_metadata="{}", error_description="{}""#,
        crate::authserver::SCOPE,
        gw.authserver().resource_metadata_url(),
        refusal.message.replace(['"', '\\'], "'")
    );
    let response = (
        StatusCode::FORBIDDEN,
        Json(json!({
            "error": "insufficient_scope",
            "reason": refusal.code(),
            "message": refusal.message,
            "scope": crate::authserver::SCOPE,
        })),
    )
        .into_response();
    with_challenge(response, &challenge)
}

/// `response` with a `WWW-Authenticate` challenge (left out if the text could
/// not be a header value; quotes and backslashes are replaced before).
fn with_challenge(mut response: Response, challenge: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(challenge) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

/// The most of a refused `/mcp` request's body that is read (and dropped) so
/// its connection stays usable; a larger one closes the connection.
const REFUSED_BODY_LIMIT: usize = 1 << 20;

/// The credential of a signed-in client's sessions: its token family (a
/// refreshed token keeps the session).
fn oauth_credential(family_id: &str) -> String {
    format!("{OAUTH_CREDENTIAL}{family_id}")
}

const OAUTH_CREDENTIAL: &str = "oauth:";

/// A 401 from `/mcp`. With the authorization server on, the challenge names
/// its protected resource metadata (RFC 9728 §5.1), where a client starts.
fn unauthorized(gw: &Gateway, error: Option<&str>) -> Response {
    let mut challenge = r#"Bearer realm="mcpgate""#.to_owned();
    if gw.config().oauth.enabled {
        challenge.push_str(&format!(
            r#", resource_metadata="{}", scope="{}""#,
            gw.authserver().resource_metadata_url(),
            gw.authserver().default_scope().as_str()
        ));
    }
    if let Some(description) = error {
        challenge.push_str(&format!(
            r#", error="invalid_token", error_description="{}""#,
            description.replace(['"', '\\'], "'")
        ));
    }
    let response = (
        StatusCode::UNAUTHORIZED,
        Json(json!({
            "error": if error.is_some() { "invalid_token" } else { "unauthenticated" },
            "message": error.unwrap_or(if gw.config().oauth.enabled {
                "sign in (OAuth: see WWW-Authenticate) or present a gateway token: Authorization: Bearer <token>"
            } else {
                "a gateway token is required: Authorization: Bearer <token>"
            }),
        })),
    )
        .into_response();
    with_challenge(response, &challenge)
}

async fn audit_http_refusal(
    gw: &Gateway,
    subject: &str,
    session: &Option<String>,
    reason: Reason,
    message: &str,
) {
    let session = session.as_ref().map(|id| format!("mcp:{id}"));
    let refusal = Refusal::new(reason, message);
    gw.audit()
        .refuse(subject, session, "http:/mcp", refusal)
        .await;
}

/// The gateway as a whole: `starting` until every connector has connected
/// once, `degraded` when one that had connected is down or its breaker is
/// open, `draining` while it stops, `ok` otherwise.
fn health_status(gw: &Gateway) -> &'static str {
    if gw.is_draining() {
        return "draining";
    }
    let mut starting = false;
    let mut degraded = false;
    for name in gw.config().services.keys() {
        match gw.directory().get(name) {
            None => starting = true,
            Some(status) if status.generation == 0 => starting = true,
            Some(status) => {
                degraded |= status.state != actors::connector::ConnectorState::Running
                    || status.breaker.is_some();
            }
        }
    }
    if starting {
        "starting"
    } else if degraded {
        "degraded"
    } else {
        "ok"
    }
}

/// Readiness for an orchestrator: 503 while starting or draining, 200 once
/// every connector has connected (a degraded service still lets the others
/// be served).
async fn ready(State(gw): State<Arc<Gateway>>) -> Response {
    let status = health_status(&gw);
    let code = match status {
        "starting" | "draining" => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::OK,
    };
    (code, Json(json!({ "status": status }))).into_response()
}

async fn health(State(gw): State<Arc<Gateway>>) -> impl IntoResponse {
    let mut connectors = serde_json::Map::new();
    for name in gw.config().services.keys() {
        let entry = match gw.directory().get(name) {
            Some(status) => {
                let catalog = gw.catalogs().catalog(name);
                json!({
                    "state": status.state.as_str(),
                    "generation": status.generation,
                    "starts": status.starts,
                    "tools": status.tools.len(),
                    "last_error": status.last_error,
                    "breaker": status.breaker.as_deref().unwrap_or("closed"),
                    "unknown_risk_overrides": catalog.map(|c| c.unknown_overrides.clone()).unwrap_or_default(),
                })
            }
            None => json!({ "state": "starting" }),
        };
        connectors.insert(name.clone(), entry);
    }
    let stats = gw.stats();
    Json(json!({
        "status": health_status(&gw),
        "version": env!("CARGO_PKG_VERSION"),
        "audit_writer": if gw.audit().writer().is_some() { "running" } else { "restarting" },
        "connectors": connectors,
        "sessions": gw.sessions().count(),
        "in_flight": gw.drain().current(),
        "calls": {
            "allowed": stats.allowed.load(Ordering::Relaxed),
            "refused": stats.refused.load(Ordering::Relaxed),
            "failed": stats.failed.load(Ordering::Relaxed),
        },
        "actors": {
            "failures": stats.actor_failures.load(Ordering::Relaxed),
            "restarts": stats.actor_restarts.load(Ordering::Relaxed),
        },
    }))
}

/// Prometheus text exposition (see `metrics.rs` for the families).
async fn metrics(State(gw): State<Arc<Gateway>>) -> impl IntoResponse {
    let connectors = gw
        .config()
        .services
        .keys()
        .map(|name| {
            let status = gw.directory().get(name);
            crate::metrics::Connector {
                service: name.clone(),
                up: status
                    .as_ref()
                    .is_some_and(|s| s.state == actors::connector::ConnectorState::Running),
                starts: status.map(|s| s.starts).unwrap_or(0),
            }
        })
        .collect();
    let gauges = crate::metrics::Gauges {
        sessions: gw.sessions().count(),
        in_flight: gw.drain().current(),
        connectors,
    };
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        crate::metrics::render(gw.stats(), &gauges),
    )
}
