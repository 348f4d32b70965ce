//! A small bearer-token JSON API whose failures a test scripts (5xx, 429 with
//! `Retry-After`, malformed JSON, HTML error pages, oversize answers), and an
//! OAuth 2.0 provider beside it (authorization code + PKCE S256, refresh
//! tokens) — for the executor's and connector's behaviour, service-agnostic.
#![allow(dead_code)]

#[path = "fake_http.rs"]
#[allow(clippy::duplicate_mod)] // each fake brings the kernel; a test may use several
mod fake_http;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// One scripted answer: status, `Retry-After`, content type, body.
#[derive(Clone, Debug)]
pub struct Scripted {
    pub status: u16,
    pub retry_after: Option<u64>,
    pub content_type: &'static str,
    pub body: String,
}

impl Scripted {
    pub fn status(status: u16) -> Scripted {
        Scripted {
            status,
            retry_after: None,
            content_type: "application/json",
            body: json!({"message": format!("scripted {status}")}).to_string(),
        }
    }
    pub fn rate_limited(seconds: u64) -> Scripted {
        Scripted {
            retry_after: Some(seconds),
            ..Scripted::status(429)
        }
    }
}

struct AuthCode {
    challenge: String,
    redirect_uri: String,
}

#[derive(Default)]
struct World {
    access_tokens: HashSet<String>,
    refresh_tokens: HashSet<String>,
    /// The next answers of `/flaky`, in order; 200 `{"ok": true}` when empty.
    script: VecDeque<Scripted>,
    /// Requests per path.
    hits: HashMap<String, u32>,
    /// Bearer tokens seen, in order.
    tokens_seen: Vec<String>,
    codes: HashMap<String, AuthCode>,
    issued: u32,
    expires_in: i64,
    refusing_refresh: bool,
    refresh_grants: u32,
    bodies: Vec<Value>,
}

#[derive(Clone)]
pub struct FakeApi {
    pub base_url: String,
    world: Arc<Mutex<World>>,
}

pub const CLIENT_ID: &str = "mcpgate-test-client";
pub const CLIENT_SECRET: &str = "client-secret-d3adb33f";

impl FakeApi {
    pub async fn start() -> FakeApi {
        let (listener, base_url) = fake_http::listen().await;
        let fake = FakeApi {
            base_url,
            world: Arc::new(Mutex::new(World {
                expires_in: 3600,
                ..Default::default()
            })),
        };
        let app = axum::Router::new()
            .route("/v1/items", get(items))
            .route("/v1/flaky", get(flaky).post(flaky_write))
            .route("/v1/big", get(big))
            .route("/v1/slow", get(slow))
            .route("/v1/malformed", get(malformed))
            .route("/v1/html-error", get(html_error))
            .route("/oauth/authorize", get(authorize))
            .route("/oauth/token", post(token))
            .with_state(fake.clone());
        fake_http::serve(listener, app);
        fake
    }

    pub fn allow_token(&self, token: &str) {
        self.world
            .lock()
            .unwrap()
            .access_tokens
            .insert(token.into());
    }
    pub fn script(&self, answers: Vec<Scripted>) {
        self.world.lock().unwrap().script.extend(answers);
    }
    pub fn hits(&self, path: &str) -> u32 {
        *self.world.lock().unwrap().hits.get(path).unwrap_or(&0)
    }
    pub fn tokens_seen(&self) -> Vec<String> {
        self.world.lock().unwrap().tokens_seen.clone()
    }
    pub fn set_expires_in(&self, seconds: i64) {
        self.world.lock().unwrap().expires_in = seconds;
    }
    /// Every access token stops working and refreshes are refused (a revoked grant).
    pub fn revoke_everything(&self) {
        let mut world = self.world.lock().unwrap();
        world.access_tokens.clear();
        world.refusing_refresh = true;
    }
    pub fn refresh_grants(&self) -> u32 {
        self.world.lock().unwrap().refresh_grants
    }
    pub fn bodies(&self) -> Vec<Value> {
        self.world.lock().unwrap().bodies.clone()
    }

    /// The 401 answer unless the bearer token is valid; records the request either way.
    fn refuse(&self, headers: &HeaderMap, path: &str) -> Option<Response> {
        let mut world = self.world.lock().unwrap();
        *world.hits.entry(path.to_owned()).or_default() += 1;
        let token = fake_http::bearer(headers).unwrap_or("").to_owned();
        world.tokens_seen.push(token.clone());
        if world.access_tokens.contains(&token) {
            None
        } else {
            Some(
                (
                    StatusCode::UNAUTHORIZED,
                    [("www-authenticate", "Bearer error=\"invalid_token\"")],
                    Json(json!({"message": "invalid or expired token"})),
                )
                    .into_response(),
            )
        }
    }
}

fn scripted(answer: Scripted) -> Response {
    let mut response = (
        StatusCode::from_u16(answer.status).unwrap(),
        [(header::CONTENT_TYPE, answer.content_type)],
        answer.body,
    )
        .into_response();
    if let Some(seconds) = answer.retry_after {
        response
            .headers_mut()
            .insert("retry-after", seconds.to_string().parse().unwrap());
    }
    response
}

async fn items(
    State(f): State<FakeApi>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Some(refused) = f.refuse(&headers, "/v1/items") {
        return refused;
    }
    // Ten items, three per page; the token is the next offset.
    let start: usize = q
        .get("page_token")
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let end = (start + 3).min(10);
    let page: Vec<Value> = (start..end).map(|i| json!({"id": i})).collect();
    let mut body = json!({"items": page});
    if end < 10 {
        body["next_page_token"] = json!(end.to_string());
    }
    Json(body).into_response()
}

async fn flaky(State(f): State<FakeApi>, headers: HeaderMap) -> Response {
    if let Some(refused) = f.refuse(&headers, "/v1/flaky") {
        return refused;
    }
    let next = f.world.lock().unwrap().script.pop_front();
    match next {
        Some(answer) => scripted(answer),
        None => Json(json!({"ok": true})).into_response(),
    }
}

async fn flaky_write(
    State(f): State<FakeApi>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Some(refused) = f.refuse(&headers, "POST /v1/flaky") {
        return refused;
    }
    f.world.lock().unwrap().bodies.push(body);
    let next = f.world.lock().unwrap().script.pop_front();
    match next {
        Some(answer) => scripted(answer),
        None => (StatusCode::CREATED, Json(json!({"created": true}))).into_response(),
    }
}

/// Answers after `ms` milliseconds (default 50): a service with latency.
async fn slow(
    State(f): State<FakeApi>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Some(refused) = f.refuse(&headers, "/v1/slow") {
        return refused;
    }
    let ms: u64 = q.get("ms").and_then(|m| m.parse().ok()).unwrap_or(50);
    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    Json(json!({"ok": true, "waited_ms": ms})).into_response()
}

async fn big(State(f): State<FakeApi>, headers: HeaderMap) -> Response {
    if let Some(refused) = f.refuse(&headers, "/v1/big") {
        return refused;
    }
    let rows: Vec<Value> = (0..5000)
        .map(|i| json!({"row": i, "text": "lorem ipsum dolor sit amet"}))
        .collect();
    Json(json!({"rows": rows})).into_response()
}

async fn malformed(State(f): State<FakeApi>, headers: HeaderMap) -> Response {
    if let Some(refused) = f.refuse(&headers, "/v1/malformed") {
        return refused;
    }
    (
        [(header::CONTENT_TYPE, "application/json")],
        "{\"rows\": [1, 2,",
    )
        .into_response()
}

async fn html_error(State(f): State<FakeApi>, headers: HeaderMap) -> Response {
    if let Some(refused) = f.refuse(&headers, "/v1/html-error") {
        return refused;
    }
    (
        StatusCode::BAD_GATEWAY,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        "<html><body><h1>502 Bad Gateway</h1><pre>at com.acme.Proxy.handle(Proxy.java:42)</pre></body></html>",
    )
        .into_response()
}

async fn authorize(State(f): State<FakeApi>, Query(q): Query<HashMap<String, String>>) -> Response {
    let bad = |why: &str| (StatusCode::BAD_REQUEST, why.to_owned()).into_response();
    if q.get("client_id").map(String::as_str) != Some(CLIENT_ID) {
        return bad("unknown client");
    }
    if q.get("response_type").map(String::as_str) != Some("code")
        || q.get("code_challenge_method").map(String::as_str) != Some("S256")
    {
        return bad("PKCE S256 and response_type=code are required");
    }
    let (Some(challenge), Some(redirect), Some(state)) = (
        q.get("code_challenge"),
        q.get("redirect_uri"),
        q.get("state"),
    ) else {
        return bad("code_challenge, redirect_uri and state are required");
    };
    let code = format!("code-{}", rand::random::<u64>());
    f.world.lock().unwrap().codes.insert(
        code.clone(),
        AuthCode {
            challenge: challenge.clone(),
            redirect_uri: redirect.clone(),
        },
    );
    // The user consents at once.
    Redirect::to(&format!("{redirect}?code={code}&state={state}")).into_response()
}

fn token_error(error: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": error, "error_description": format!("{error} (fake provider)")})),
    )
        .into_response()
}

async fn token(State(f): State<FakeApi>, body: String) -> Response {
    let form: HashMap<String, String> = url_decode(&body);
    if form.get("client_id").map(String::as_str) != Some(CLIENT_ID)
        || form.get("client_secret").map(String::as_str) != Some(CLIENT_SECRET)
    {
        return token_error("invalid_client");
    }
    let mut world = f.world.lock().unwrap();
    match form.get("grant_type").map(String::as_str) {
        Some("authorization_code") => {
            let Some(code) = form.get("code").and_then(|c| world.codes.remove(c)) else {
                return token_error("invalid_grant");
            };
            let verifier = form.get("code_verifier").cloned().unwrap_or_default();
            let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
            if challenge != code.challenge || form.get("redirect_uri") != Some(&code.redirect_uri) {
                return token_error("invalid_grant");
            }
        }
        Some("refresh_token") => {
            world.refresh_grants += 1;
            let known = form
                .get("refresh_token")
                .is_some_and(|r| world.refresh_tokens.contains(r));
            if !known || world.refusing_refresh {
                return token_error("invalid_grant");
            }
            // Refresh tokens rotate: the old one is spent.
            let spent = form.get("refresh_token").unwrap().clone();
            world.refresh_tokens.remove(&spent);
        }
        _ => return token_error("unsupported_grant_type"),
    }
    world.issued += 1;
    let access = format!("access-{}-{}", world.issued, rand::random::<u32>());
    let refresh = format!("refresh-{}-{}", world.issued, rand::random::<u32>());
    world.access_tokens.insert(access.clone());
    world.refresh_tokens.insert(refresh.clone());
    Json(json!({
        "access_token": access,
        "refresh_token": refresh,
        "token_type": "Bearer",
        "expires_in": world.expires_in,
    }))
    .into_response()
}

fn url_decode(body: &str) -> HashMap<String, String> {
    reqwest::Url::parse(&format!("form:?{body}"))
        .unwrap()
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}
