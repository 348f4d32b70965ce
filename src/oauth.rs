//! `POST /oauth/token`: the RFC 8693 token exchange endpoint (delegation).
//! Form-encoded in, JSON out; errors are RFC 6749 §5.2 objects that also
//! carry mcpgate's machine-readable `reason`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::delegation::exchange::{self, ExchangeError, ExchangeRequest, TOKEN_TYPE_ACCESS_TOKEN};
use crate::gateway::Gateway;

pub async fn token(State(gw): State<Arc<Gateway>>, body: axum::body::Bytes) -> Response {
    // Parsed by hand so that a malformed body is an OAuth error, not axum's text.
    let request: ExchangeRequest = match serde_urlencoded_form(&body) {
        Ok(request) => request,
        Err(description) => {
            return error_response(&ExchangeError {
                error: "invalid_request",
                reason: "invalid_request",
                description,
                status: 400,
            });
        }
    };
    match exchange::exchange(&gw, request).await {
        Ok(issued) => no_store(
            (
                StatusCode::OK,
                Json(json!({
                    "access_token": issued.access_token,
                    "issued_token_type": TOKEN_TYPE_ACCESS_TOKEN,
                    "token_type": "Bearer",
                    "expires_in": issued.expires_in,
                    "scope": issued.scope,
                    "grant_id": issued.grant_id,
                })),
            )
                .into_response(),
        ),
        Err(error) => error_response(&error),
    }
}

fn serde_urlencoded_form(body: &[u8]) -> Result<ExchangeRequest, String> {
    let text = std::str::from_utf8(body).map_err(|_| "the body is not UTF-8".to_string())?;
    let mut fields = serde_json::Map::new();
    for pair in text.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = form_decode(key)?;
        let value = form_decode(value)?;
        if fields.contains_key(&key) {
            // RFC 6749 §3.2: parameters must not be included more than once.
            return Err(format!("parameter '{key}' is repeated"));
        }
        fields.insert(key, serde_json::Value::String(value));
    }
    serde_json::from_value(serde_json::Value::Object(fields)).map_err(|e| e.to_string())
}

/// `application/x-www-form-urlencoded` value decoding (`+` is a space).
fn form_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = text
                    .get(i + 1..i + 3)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| "malformed percent-encoding in the form body".to_string())?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| "the form body is not UTF-8".to_string())
}

fn error_response(error: &ExchangeError) -> Response {
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = (
        status,
        Json(json!({
            "error": error.error,
            "error_description": error.description,
            "reason": error.reason,
        })),
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(r#"Bearer realm="mcpgate""#),
        );
    }
    no_store(response)
}

/// RFC 6749 §5.1: token responses are not cached.
fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_bodies_decode_and_repeats_are_refused() {
        let r =
            serde_urlencoded_form(b"grant_type=a%3Ab&workspace=fin+ance&gateway_services=%5B%5D")
                .unwrap();
        assert_eq!(r.grant_type.as_deref(), Some("a:b"));
        assert_eq!(r.workspace.as_deref(), Some("fin ance"));
        assert_eq!(r.gateway_services.as_deref(), Some("[]"));
        assert!(serde_urlencoded_form(b"job_id=1&job_id=2").is_err());
        assert!(serde_urlencoded_form(b"job_id=%zz").is_err());
    }
}
