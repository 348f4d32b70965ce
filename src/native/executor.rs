//! The one HTTP executor for every catalog: path, query, header and body
//! (JSON or form) from the action's parameters; the subject's credential;
//! retries for idempotent reads; 429 / `Retry-After`; pagination; response
//! shaping; upstream errors turned into clear tool errors (never an HTML page).

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use rmcp::model::{CallToolResult, ContentBlock, JsonObject};
use serde_json::{Value, json};

use super::catalog::{ActionSpec, AuthScheme, Catalog, Encoding, ErrorShape, Location};
use crate::vault::{Credential, CredentialKind};
use actors::grant::Risk;

/// Largest answer read from a service, whatever the catalog says.
const READ_LIMIT: usize = 8 * 1024 * 1024;
/// Answers are capped here when the action names no `max_bytes`.
const DEFAULT_MAX_BYTES: usize = 100_000;

/// Where and how one service is called.
pub struct Target<'a> {
    pub service: &'a str,
    pub base_url: &'a str,
    /// Operator defaults for params (`services.<svc>.defaults`).
    pub defaults: &'a BTreeMap<String, Value>,
    /// Extra attempts for idempotent reads (5xx, unreachable) and 429s.
    pub retries: u32,
    /// The longest `Retry-After` the gateway waits out itself.
    pub max_retry_wait: Duration,
    /// W3C Trace Context headers (`traceparent`, `tracestate`) of the
    /// gateway's span for this call; empty when traces are off.
    pub trace: &'a [(String, String)],
}

/// Why the service did not answer with a result.
#[derive(Debug)]
pub enum Failure {
    /// Transport-level: the service could not be reached (counts against the breaker).
    Unreachable(String),
    /// The service failed (5xx) after any retries (counts against the breaker).
    ServerError { status: u16, message: String },
    /// The service refused the credential (401, or 403 when not a permission error).
    Unauthorized(String),
    /// 429 (or Google's `rateLimitExceeded`) with a wait longer than the gateway takes.
    RateLimited {
        retry_after: Option<u64>,
        message: String,
    },
}

/// One answer from the service, before shaping.
enum Answer {
    Json(Value),
    Text(String),
}

fn encode_segment(value: &str, keep_slashes: bool) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            b'/' if keep_slashes => "/".to_owned(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(scalar).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// A form field: strings as they are, anything structured as JSON text
/// (Slack's `blocks` and `attachments` are JSON strings in a form).
fn form_value(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Bool(_) | Value::Number(_) => value.to_string(),
        other => other.to_string(),
    }
}

/// `a.b.c` of a JSON value.
pub fn get_path<'v>(value: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.').try_fold(value, |v, part| v.get(part))
}

/// Put `value` at a dotted path; an object meeting an object merges, so
/// `fields` and `fields.description` can both be given.
fn set_path(body: &mut serde_json::Map<String, Value>, path: &str, value: Value) {
    let mut parts = path.split('.').peekable();
    let mut at = body;
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            match (at.get_mut(part), value) {
                (Some(Value::Object(existing)), Value::Object(new)) => existing.extend(new),
                (_, value) => {
                    at.insert(part.to_owned(), value);
                }
            }
            return;
        }
        let next = at
            .entry(part.to_owned())
            .or_insert_with(|| Value::Object(Default::default()));
        if !next.is_object() {
            *next = Value::Object(Default::default());
        }
        let Value::Object(map) = next else {
            unreachable!("made an object above")
        };
        at = map;
    }
}

/// The arguments a request is built from: the caller's, else the operator's
/// defaults, else the catalog's.
fn effective_arguments(
    action: &ActionSpec,
    arguments: &JsonObject,
    defaults: &BTreeMap<String, Value>,
) -> JsonObject {
    let mut out = JsonObject::new();
    for (name, param) in &action.params {
        let given = arguments.get(name).filter(|v| !v.is_null());
        if let Some(value) = given
            .or_else(|| defaults.get(name))
            .or(param.default.as_ref())
        {
            out.insert(name.clone(), value.clone());
        }
    }
    out
}

/// The secret as the wire needs it.
struct WireSecret {
    value: String,
    /// An OAuth access token (sent as Bearer whatever the catalog's scheme).
    oauth: bool,
}

/// An OAuth set sends its access token; other kinds their secret.
fn secret_for_wire(credential: &Credential) -> Result<WireSecret, Failure> {
    if credential.kind != CredentialKind::Oauth {
        return Ok(WireSecret {
            value: credential.secret().to_owned(),
            oauth: false,
        });
    }
    serde_json::from_str::<Value>(credential.secret())
        .ok()
        .and_then(|set| {
            set.get("access_token")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .map(|value| WireSecret { value, oauth: true })
        .ok_or_else(|| {
            Failure::Unauthorized("the stored OAuth token set has no access token".into())
        })
}

fn build_request(
    http: &reqwest::Client,
    target: &Target<'_>,
    catalog: &Catalog,
    action: &ActionSpec,
    arguments: &JsonObject,
    secret: &WireSecret,
) -> Result<reqwest::RequestBuilder, Failure> {
    let mut path = action.path.clone();
    let mut query = Vec::new();
    let mut headers = Vec::new();
    let mut body = serde_json::Map::new();
    // Shallow body fields first, so nested ones (`fields.description`) land inside.
    let mut params: Vec<_> = action.params.iter().collect();
    params.sort_by_key(|(name, param)| param.wire_name(name).matches('.').count());
    for (name, param) in params {
        let Some(value) = arguments.get(name) else {
            continue;
        };
        let wire = param.wire_name(name);
        match param.location {
            Location::Path => {
                path = path.replace(
                    &format!("{{{name}}}"),
                    &encode_segment(&scalar(value), param.keep_slashes),
                )
            }
            Location::Query => query.push((wire.to_owned(), scalar(value))),
            Location::Header => headers.push((wire.to_owned(), scalar(value))),
            Location::Body if param.spread => {
                if let Value::Object(fields) = value {
                    body.extend(fields.clone());
                }
            }
            Location::Body if param.encode.is_some() => {
                let encoded = match value {
                    Value::String(text) => Value::String(URL_SAFE_NO_PAD.encode(text.as_bytes())),
                    other => other.clone(),
                };
                set_path(&mut body, wire, encoded);
            }
            Location::Body if param.adf => {
                let value = match value {
                    Value::String(text) => crate::adf::markdown_to_adf(text),
                    other => other.clone(),
                };
                set_path(&mut body, wire, value);
            }
            Location::Body => set_path(&mut body, wire, value.clone()),
        }
    }
    let mut url = reqwest::Url::parse(&format!("{}{path}", target.base_url.trim_end_matches('/')))
        .map_err(|e| Failure::Unreachable(format!("bad URL for {}: {e}", catalog.service)))?;
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(&query);
    }
    let method = reqwest::Method::from_bytes(action.method.as_bytes())
        .map_err(|e| Failure::Unreachable(format!("bad method: {e}")))?;
    let mut request = http
        .request(method, url)
        .header("accept", "application/json");
    for (name, value) in headers {
        request = request.header(name, value);
    }
    for (name, value) in target.trace {
        request = request.header(name.as_str(), value.as_str());
    }
    // An OAuth access token is always a Bearer token (Jira 3LO next to basic auth).
    request = match catalog.auth {
        _ if secret.oauth => request.bearer_auth(&secret.value),
        AuthScheme::Bearer => request.bearer_auth(&secret.value),
        AuthScheme::Basic => request.header(
            "authorization",
            format!("Basic {}", STANDARD.encode(secret.value.as_bytes())),
        ),
        AuthScheme::ApiKey => request.header(
            catalog.auth_header.as_deref().unwrap_or("x-api-key"),
            &secret.value,
        ),
    };
    match action.encoding {
        Encoding::Json => {
            // An action with a body sends one even when every field is omitted.
            let has_body = action.params.values().any(|p| p.location == Location::Body);
            if !body.is_empty() || (has_body && action.method != "GET") {
                request = request.json(&Value::Object(body));
            }
        }
        Encoding::Form => {
            let mut form = reqwest::Url::parse("form:")
                .map_err(|e| Failure::Unreachable(format!("form encoding: {e}")))?;
            form.query_pairs_mut()
                .extend_pairs(body.iter().map(|(k, v)| (k.clone(), form_value(v))));
            request = request
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form.query().unwrap_or("").to_owned());
        }
    }
    Ok(request)
}

/// Seconds from a `Retry-After` header (delta-seconds; a date counts as unknown).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<u64> {
    headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(100u64 << attempt.min(5))
}

/// Send one page's request, with retries where they are safe.
async fn fetch(
    http: &reqwest::Client,
    target: &Target<'_>,
    catalog: &Catalog,
    action: &ActionSpec,
    arguments: &JsonObject,
    secret: &WireSecret,
) -> Result<Answer, Stop> {
    let idempotent_read = action.risk == Risk::Read && action.method == "GET";
    let service = target.service;
    let mut attempt = 0u32;
    loop {
        let request = build_request(http, target, catalog, action, arguments, secret)?;
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => {
                if idempotent_read && attempt < target.retries {
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                    continue;
                }
                let why = if e.is_timeout() {
                    "timed out".to_owned()
                } else {
                    e.without_url().to_string()
                };
                return Err(Stop::Failed(Failure::Unreachable(format!(
                    "{service} did not answer: {why}"
                ))));
            }
        };
        let status = response.status();
        let wait = retry_after(response.headers());
        // Jira's way of saying a 403 is about the login, not a permission.
        let login_denied = response
            .headers()
            .get("x-seraph-loginreason")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("AUTHENTICATION_DENIED"));
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let bytes = read_capped(response, service).await?;
        let parsed: Option<Value> = serde_json::from_slice(&bytes).ok();
        if status.is_success() {
            return answer(service, status, &content_type, parsed, bytes);
        }
        // An error from here on. A short plain-text body (Metabase's
        // `Unauthenticated`) is the reason.
        let reason = parsed.or_else(|| {
            content_type.starts_with("text/plain").then(|| {
                Value::String(
                    String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
                        .trim()
                        .to_owned(),
                )
            })
        });
        let google_rate_limited = catalog.errors == ErrorShape::Google
            && status == reqwest::StatusCode::FORBIDDEN
            && reason.as_ref().is_some_and(|b| {
                let text = b.to_string();
                text.contains("rateLimitExceeded") || text.contains("RESOURCE_EXHAUSTED")
            });
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS || google_rate_limited {
            let seconds = wait.unwrap_or(1);
            if attempt < target.retries && Duration::from_secs(seconds) <= target.max_retry_wait {
                tracing::info!(
                    service,
                    seconds,
                    "rate limited: waiting as Retry-After asks"
                );
                tokio::time::sleep(Duration::from_secs(seconds)).await;
                attempt += 1;
                continue;
            }
            return Err(Stop::Failed(Failure::RateLimited {
                retry_after: wait,
                message: error_message(catalog.errors, status, reason.as_ref(), &content_type),
            }));
        }
        if status.is_server_error() {
            if idempotent_read && attempt < target.retries {
                tokio::time::sleep(backoff(attempt)).await;
                attempt += 1;
                continue;
            }
            return Err(Stop::Failed(Failure::ServerError {
                status: status.as_u16(),
                message: error_message(catalog.errors, status, reason.as_ref(), &content_type),
            }));
        }
        // A 403 is a permission the subject lacks (their credential works).
        let permission_error = status == reqwest::StatusCode::FORBIDDEN && !login_denied;
        if (status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN)
            && !permission_error
        {
            return Err(Stop::Failed(Failure::Unauthorized(error_message(
                catalog.errors,
                status,
                reason.as_ref(),
                &content_type,
            ))));
        }
        let message = error_message(catalog.errors, status, reason.as_ref(), &content_type);
        let mut result = CallToolResult::error(vec![ContentBlock::text(message.clone())]);
        result.structured_content = Some(json!({"error": message, "status": status.as_u16()}));
        return Err(Stop::Tool(result));
    }
}

/// A 2xx answer: JSON, or text where the service sent text (Drive export).
fn answer(
    service: &str,
    status: reqwest::StatusCode,
    content_type: &str,
    parsed: Option<Value>,
    bytes: Vec<u8>,
) -> Result<Answer, Stop> {
    match parsed {
        Some(value) => Ok(Answer::Json(value)),
        None if bytes.is_empty() => Ok(Answer::Json(json!({"status": status.as_u16()}))),
        None if content_type.contains("json") => Err(Stop::Tool(tool_error(format!(
            "{service} answered HTTP {} with malformed JSON ({} bytes)",
            status.as_u16(),
            bytes.len()
        )))),
        None if content_type.starts_with("text/") && !content_type.contains("html") => {
            Ok(Answer::Text(String::from_utf8(bytes).unwrap_or_else(|e| {
                String::from_utf8_lossy(e.as_bytes()).into_owned()
            })))
        }
        None => Err(Stop::Tool(tool_error(format!(
            "{service} answered HTTP {} with a body that is not JSON ({})",
            status.as_u16(),
            if content_type.is_empty() {
                "no content type"
            } else {
                content_type
            }
        )))),
    }
}

/// Why `fetch` stopped without an answer to shape.
enum Stop {
    /// The actor decides: breaker, auth_required, rate_limited.
    Failed(Failure),
    /// A tool error for the caller (the service's own 4xx, a bad body).
    Tool(CallToolResult),
}

impl From<Failure> for Stop {
    fn from(failure: Failure) -> Stop {
        Stop::Failed(failure)
    }
}

fn tool_error(message: String) -> CallToolResult {
    CallToolResult::error(vec![ContentBlock::text(message)])
}

async fn read_capped(mut response: reqwest::Response, service: &str) -> Result<Vec<u8>, Failure> {
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| {
        Failure::Unreachable(format!("{service} answer was cut: {}", e.without_url()))
    })? {
        if bytes.len() + chunk.len() > READ_LIMIT {
            return Err(Failure::ServerError {
                status: 502,
                message: format!(
                    "{service} answered with more than the gateway reads ({READ_LIMIT} bytes)"
                ),
            });
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// Build and send one action's request (following pages when asked); shape
/// the answer. `Err` is for the actor (breaker, auth, rate limit); the
/// service's own refusals come back as tool errors.
pub async fn execute(
    http: &reqwest::Client,
    target: &Target<'_>,
    catalog: &Catalog,
    action: &ActionSpec,
    arguments: &JsonObject,
    credential: &Credential,
) -> Result<CallToolResult, Failure> {
    let secret = secret_for_wire(credential)?;
    let pages_wanted = match &action.pagination {
        Some(pages) => arguments
            .get("pages")
            .and_then(Value::as_u64)
            .unwrap_or(1)
            .clamp(1, u64::from(pages.max_pages)),
        None => 1,
    };
    let mut arguments = effective_arguments(action, arguments, target.defaults);
    let mut combined: Option<Value> = None;
    let mut next_token: Option<String> = None;
    for page in 0..pages_wanted {
        if page > 0 {
            let (Some(pages), Some(token)) = (&action.pagination, next_token.take()) else {
                break;
            };
            arguments.insert(pages.token_param.clone(), Value::String(token));
        }
        let answer = match fetch(http, target, catalog, action, &arguments, &secret).await {
            Ok(answer) => answer,
            Err(Stop::Failed(failure)) => return Err(failure),
            Err(Stop::Tool(result)) => return Ok(result),
        };
        let value = match answer {
            Answer::Json(value) => value,
            Answer::Text(text) => return Ok(capped_text(text, action.response.max_bytes)),
        };
        if let Some(message) = failure_in_body(catalog.errors, &value) {
            // Slack refuses a token with HTTP 200: that is a credential problem.
            if catalog.errors == ErrorShape::Slack
                && matches!(
                    message.as_str(),
                    "not_authed"
                        | "invalid_auth"
                        | "account_inactive"
                        | "token_revoked"
                        | "token_expired"
                )
            {
                return Err(Failure::Unauthorized(format!("slack: {message}")));
            }
            let mut result = tool_error(format!("{}: {message}", target.service));
            result.structured_content = Some(json!({"error": message}));
            return Ok(result);
        }
        if let Some(pages) = &action.pagination {
            next_token = get_path(&value, &pages.next_token)
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
                .map(str::to_owned);
        }
        combined = Some(match (combined, &action.pagination) {
            (Some(mut first), Some(pages)) => {
                let more = get_path(&value, &pages.items)
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                if let Some(Value::Array(items)) = get_path_mut(&mut first, &pages.items) {
                    items.extend(more);
                }
                first
            }
            _ => value,
        });
        if next_token.is_none() {
            break;
        }
    }
    let mut answer = combined.unwrap_or(Value::Null);
    // The joined answer's own token field is the last page's, not the first's.
    if let Some(pages) = &action.pagination
        && pages_wanted > 1
    {
        let (parent, field) = match pages.next_token.rsplit_once('.') {
            Some((parent, field)) => (get_path_mut(&mut answer, parent), field),
            None => (Some(&mut answer), pages.next_token.as_str()),
        };
        if let Some(Value::Object(parent)) = parent {
            match &next_token {
                Some(token) => {
                    parent.insert(field.to_owned(), json!(token));
                }
                None => {
                    parent.remove(field);
                }
            }
        }
    }
    for path in &action.response.decode_base64url {
        decode_at(&mut answer, &path.split('.').collect::<Vec<_>>());
    }
    let mut shaped = pick(&answer, &action.response.pick);
    if let (Some(token), Value::Object(map)) = (&next_token, &mut shaped) {
        map.insert("next_page_token".into(), json!(token));
    }
    let text = shaped.to_string();
    let limit = action.response.max_bytes.unwrap_or(DEFAULT_MAX_BYTES);
    if text.len() > limit {
        return Ok(capped_text(text, Some(limit)));
    }
    let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
    if shaped.is_object() {
        result.structured_content = Some(shaped);
    }
    Ok(result)
}

/// Decode the base64url text at `path` (walking arrays) in place; a value
/// that is not valid base64url or UTF-8 text stays as it is.
fn decode_at(value: &mut Value, path: &[&str]) {
    match (value, path.split_first()) {
        (Value::Array(items), _) => {
            for item in items {
                decode_at(item, path);
            }
        }
        (Value::Object(map), Some((first, rest))) => {
            if let Some(next) = map.get_mut(*first) {
                decode_at(next, rest);
            }
        }
        (value @ Value::String(_), None) => {
            let Value::String(text) = &*value else {
                return;
            };
            let trimmed = text.trim_end_matches('=');
            let decoded = URL_SAFE_NO_PAD
                .decode(trimmed)
                .or_else(|_| URL_SAFE.decode(text))
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok());
            if let Some(decoded) = decoded {
                *value = Value::String(decoded);
            }
        }
        _ => {}
    }
}

fn get_path_mut<'v>(value: &'v mut Value, path: &str) -> Option<&'v mut Value> {
    path.split('.').try_fold(value, |v, part| v.get_mut(part))
}

/// A text answer cut at `limit` bytes with a marker saying so.
fn capped_text(mut text: String, limit: Option<usize>) -> CallToolResult {
    let limit = limit.unwrap_or(DEFAULT_MAX_BYTES);
    if text.len() > limit {
        let mut end = limit;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let total = text.len();
        text.truncate(end);
        text.push_str(&format!("… [truncated by mcpgate: {end} of {total} bytes]"));
    }
    CallToolResult::success(vec![ContentBlock::text(text)])
}

/// A 2xx answer that reports a failure in its body.
fn failure_in_body(shape: ErrorShape, answer: &Value) -> Option<String> {
    match shape {
        ErrorShape::Slack if answer.get("ok") == Some(&Value::Bool(false)) => Some(
            answer
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("unknown_error")
                .to_owned(),
        ),
        ErrorShape::Metabase if answer.get("status").and_then(Value::as_str) == Some("failed") => {
            Some(format!(
                "the query failed: {}",
                answer
                    .get("error")
                    .map(scalar)
                    .unwrap_or_else(|| "no reason given".into())
            ))
        }
        _ => None,
    }
}

/// Keep only `paths` (dotted) of an answer; everything when empty.
fn pick(answer: &Value, paths: &[String]) -> Value {
    if paths.is_empty() || !answer.is_object() {
        return answer.clone();
    }
    let mut out = serde_json::Map::new();
    for path in paths {
        if let Some(value) = get_path(answer, path) {
            out.insert(path.clone(), value.clone());
        }
    }
    Value::Object(out)
}

fn error_message(
    shape: ErrorShape,
    status: reqwest::StatusCode,
    body: Option<&Value>,
    content_type: &str,
) -> String {
    let code = status.as_u16();
    if content_type.contains("html") {
        return format!("HTTP {code} (the service sent an HTML error page)");
    }
    let detail = match (shape, body) {
        (_, Some(Value::String(text))) => text.clone(),
        (ErrorShape::Jira, Some(body)) => {
            let mut parts: Vec<String> = body
                .get("errorMessages")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            if let Some(errors) = body.get("errors").and_then(Value::as_object) {
                parts.extend(errors.iter().map(|(k, v)| format!("{k}: {}", scalar(v))));
            }
            parts.join("; ")
        }
        (ErrorShape::Slack, Some(body)) => body.get("error").map(scalar).unwrap_or_default(),
        (ErrorShape::Google, Some(body)) => match body.get("error") {
            Some(Value::Object(error)) => {
                let message = error.get("message").map(scalar).unwrap_or_default();
                match error.get("status").and_then(Value::as_str) {
                    Some(status) => format!("{message} ({status})"),
                    None => message,
                }
            }
            Some(other) => scalar(other),
            None => String::new(),
        },
        (ErrorShape::Metabase, Some(body)) => match body.get("errors") {
            Some(Value::Object(errors)) => errors
                .iter()
                .map(|(k, v)| format!("{k}: {}", scalar(v)))
                .collect::<Vec<_>>()
                .join("; "),
            _ => body
                .get("message")
                .or_else(|| body.get("error"))
                .map(scalar)
                .unwrap_or_else(|| scalar(body)),
        },
        (_, Some(body)) => body
            .get("message")
            .or_else(|| body.get("error"))
            .map(scalar)
            .unwrap_or_default(),
        (_, None) => String::new(),
    };
    if detail.is_empty() {
        format!("HTTP {code}")
    } else {
        format!("HTTP {code}: {detail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_body_names_nest_and_slashes_stay_where_asked() {
        let mut body = serde_json::Map::new();
        set_path(&mut body, "native.query", json!("SELECT 1"));
        set_path(&mut body, "native.template-tags", json!({}));
        set_path(&mut body, "database", json!(1));
        assert_eq!(
            Value::Object(body),
            json!({"native": {"query": "SELECT 1", "template-tags": {}}, "database": 1})
        );
        // A whole object and a field inside it, in either order of declaration.
        let mut body = serde_json::Map::new();
        set_path(&mut body, "fields", json!({"summary": "s"}));
        set_path(&mut body, "fields.description", json!({"type": "doc"}));
        assert_eq!(
            Value::Object(body),
            json!({"fields": {"summary": "s", "description": {"type": "doc"}}})
        );
        assert_eq!(encode_segment("f/a b/c", true), "f/a%20b/c");
        assert_eq!(encode_segment("f/a b/c", false), "f%2Fa%20b%2Fc");
    }

    #[test]
    fn base64url_fields_decode_through_arrays() {
        let mut message = json!({"raw": URL_SAFE_NO_PAD.encode("To: a@b.example\r\n\r\nhi"),
            "payload": {"parts": [{"body": {"data": URL_SAFE_NO_PAD.encode("héllo")}}, {"body": {"data": "%%not base64"}}]}});
        decode_at(&mut message, &["raw"]);
        decode_at(&mut message, &["payload", "parts", "body", "data"]);
        assert_eq!(message["raw"], "To: a@b.example\r\n\r\nhi");
        assert_eq!(message["payload"]["parts"][0]["body"]["data"], "héllo");
        assert_eq!(
            message["payload"]["parts"][1]["body"]["data"],
            "%%not base64"
        );
    }

    #[test]
    fn service_error_shapes_read_plainly() {
        let google = json!({"error": {"code": 404, "message": "Not found: Table p:d.t", "status": "NOT_FOUND"}});
        assert_eq!(
            error_message(
                ErrorShape::Google,
                reqwest::StatusCode::NOT_FOUND,
                Some(&google),
                "application/json"
            ),
            "HTTP 404: Not found: Table p:d.t (NOT_FOUND)"
        );
        assert_eq!(
            error_message(
                ErrorShape::Metabase,
                reqwest::StatusCode::UNAUTHORIZED,
                Some(&json!("Unauthenticated")),
                "text/plain"
            ),
            "HTTP 401: Unauthenticated"
        );
        assert_eq!(
            failure_in_body(
                ErrorShape::Metabase,
                &json!({"status": "failed", "error": "Table not found"})
            )
            .unwrap(),
            "the query failed: Table not found"
        );
        assert!(failure_in_body(ErrorShape::Slack, &json!({"ok": true})).is_none());
        assert_eq!(
            error_message(
                ErrorShape::Jira,
                reqwest::StatusCode::BAD_GATEWAY,
                None,
                "text/html; charset=utf-8"
            ),
            "HTTP 502 (the service sent an HTML error page)"
        );
    }
}
