//! The one HTTP executor for every catalog: path, query and JSON body from the
//! action's parameters; the subject's credential; response shaping; upstream
//! errors turned into clear tool errors (never an HTML page).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rmcp::model::{CallToolResult, ContentBlock, JsonObject};
use serde_json::{Value, json};

use super::catalog::{ActionSpec, AuthScheme, Catalog, ErrorShape, Location};
use crate::vault::Credential;

/// Largest answer read from a service, whatever the catalog says.
const READ_LIMIT: usize = 8 * 1024 * 1024;

/// Why the service did not answer with a result.
#[derive(Debug)]
pub enum Failure {
    /// Transport-level: the service could not be reached.
    Unreachable(String),
    /// The service refused the credential (401/403).
    Unauthorized(String),
}

fn encode_segment(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
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

/// Build and send one action's request; shape the answer.
pub async fn execute(
    http: &reqwest::Client,
    base_url: &str,
    catalog: &Catalog,
    action: &ActionSpec,
    arguments: &JsonObject,
    credential: &Credential,
) -> Result<CallToolResult, Failure> {
    let mut path = action.path.clone();
    let mut query = Vec::new();
    let mut body = serde_json::Map::new();
    for (name, param) in &action.params {
        let Some(value) = arguments.get(name).filter(|v| !v.is_null()) else {
            continue;
        };
        match param.location {
            Location::Path => {
                path = path.replace(&format!("{{{name}}}"), &encode_segment(&scalar(value)))
            }
            Location::Query => query.push((name.clone(), scalar(value))),
            Location::Body => {
                body.insert(name.clone(), value.clone());
            }
        }
    }
    let mut url = reqwest::Url::parse(&format!("{}{path}", base_url.trim_end_matches('/')))
        .map_err(|e| Failure::Unreachable(format!("bad URL for {}: {e}", catalog.service)))?;
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(&query);
    }
    let method = reqwest::Method::from_bytes(action.method.as_bytes())
        .map_err(|e| Failure::Unreachable(format!("bad method: {e}")))?;
    let mut request = http
        .request(method, url)
        .header("accept", "application/json");
    request = match catalog.auth {
        AuthScheme::Bearer => request.bearer_auth(credential.secret()),
        AuthScheme::Basic => request.header(
            "authorization",
            format!("Basic {}", STANDARD.encode(credential.secret().as_bytes())),
        ),
    };
    if !body.is_empty() {
        request = request.json(&Value::Object(body));
    }
    let response = request.send().await.map_err(|e| {
        Failure::Unreachable(format!(
            "{} did not answer: {}",
            catalog.service,
            e.without_url()
        ))
    })?;
    let status = response.status();
    let is_html = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.contains("html"));
    let bytes = response.bytes().await.map_err(|e| {
        Failure::Unreachable(format!(
            "{} answer was cut: {}",
            catalog.service,
            e.without_url()
        ))
    })?;
    if bytes.len() > READ_LIMIT {
        return Ok(CallToolResult::error(vec![ContentBlock::text(format!(
            "{} answered with {} bytes, more than the gateway reads ({READ_LIMIT})",
            catalog.service,
            bytes.len()
        ))]));
    }
    let parsed: Option<Value> = if bytes.is_empty() {
        None
    } else {
        serde_json::from_slice(&bytes).ok()
    };
    if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
        return Err(Failure::Unauthorized(error_message(
            catalog.errors,
            status,
            parsed.as_ref(),
            is_html,
        )));
    }
    if !status.is_success() {
        let message = error_message(catalog.errors, status, parsed.as_ref(), is_html);
        let mut result = CallToolResult::error(vec![ContentBlock::text(message.clone())]);
        result.structured_content = Some(json!({"error": message, "status": status.as_u16()}));
        return Ok(result);
    }
    let answer = match parsed {
        Some(value) => value,
        None if bytes.is_empty() => json!({"status": status.as_u16()}),
        None => {
            return Ok(CallToolResult::error(vec![ContentBlock::text(format!(
                "{} answered HTTP {} with a body that is not JSON",
                catalog.service,
                status.as_u16()
            ))]));
        }
    };
    if catalog.errors == ErrorShape::Slack && answer.get("ok") == Some(&Value::Bool(false)) {
        let error = answer
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("unknown_error");
        return Ok(CallToolResult::error(vec![ContentBlock::text(format!(
            "slack: {error}"
        ))]));
    }
    let shaped = pick(&answer, &action.response.pick);
    let mut text = shaped.to_string();
    if let Some(limit) = action.response.max_bytes
        && text.len() > limit
    {
        let mut end = limit;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let total = text.len();
        text.truncate(end);
        text.push_str(&format!("… [truncated by mcpgate: {end} of {total} bytes]"));
        return Ok(CallToolResult::success(vec![ContentBlock::text(text)]));
    }
    let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
    if shaped.is_object() {
        result.structured_content = Some(shaped);
    }
    Ok(result)
}

/// Keep only `paths` (dotted) of an answer; everything when empty.
fn pick(answer: &Value, paths: &[String]) -> Value {
    if paths.is_empty() || !answer.is_object() {
        return answer.clone();
    }
    let mut out = serde_json::Map::new();
    for path in paths {
        let mut value = answer;
        let mut found = true;
        for part in path.split('.') {
            match value.get(part) {
                Some(v) => value = v,
                None => {
                    found = false;
                    break;
                }
            }
        }
        if found {
            out.insert(path.clone(), value.clone());
        }
    }
    Value::Object(out)
}

fn error_message(
    shape: ErrorShape,
    status: reqwest::StatusCode,
    body: Option<&Value>,
    is_html: bool,
) -> String {
    let code = status.as_u16();
    if is_html {
        return format!("HTTP {code} (the service sent an HTML error page)");
    }
    let detail = match (shape, body) {
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
