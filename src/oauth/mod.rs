//! The OAuth edge. `POST /oauth/token` is one token endpoint for two grants
//! families: the RFC 8693 token exchange (delegation, here) and the
//! authorization server's `authorization_code` / `refresh_token` grants
//! (`server.rs`, with the rest of the AI-client sign-in routes). Form-encoded
//! in, JSON out; errors are RFC 6749 §5.2 objects that also carry mcpgate's
//! machine-readable `reason`.

pub mod pages;
pub mod ratelimit;
pub mod server;

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::delegation::exchange::{self, ExchangeError, ExchangeRequest, TOKEN_TYPE_ACCESS_TOKEN};
use crate::domain::Reason;
use crate::gateway::Gateway;

pub async fn token(
    State(gw): State<Arc<Gateway>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let grant_type = form_urlencoded::parse(&body)
        .find(|(k, _)| k == "grant_type")
        .map(|(_, v)| v.into_owned());
    if matches!(
        grant_type.as_deref(),
        Some("authorization_code") | Some("refresh_token")
    ) && gw.config().oauth.enabled
    {
        return server::token(gw.authserver(), &headers, &body).await;
    }
    let delegation = gw.delegation();
    // Parsed by hand so that a malformed body is an OAuth error, not axum's text.
    let request: ExchangeRequest = match parse_form(&body) {
        Ok(request) => request,
        Err(description) => {
            return error_response(&ExchangeError::new(Reason::InvalidRequest, description));
        }
    };
    match exchange::exchange(delegation, request).await {
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

/// The form body as the exchange's typed request. Parameters must not be
/// repeated (RFC 6749 §3.2), which a plain deserializer would not notice.
pub fn parse_form(body: &[u8]) -> Result<ExchangeRequest, String> {
    std::str::from_utf8(body).map_err(|_| "the body is not UTF-8".to_string())?;
    let mut fields = serde_json::Map::new();
    for (key, value) in form_urlencoded::parse(body) {
        if fields.contains_key(key.as_ref()) {
            return Err(format!("parameter '{key}' is repeated"));
        }
        fields.insert(
            key.into_owned(),
            serde_json::Value::String(value.into_owned()),
        );
    }
    serde_json::from_value(serde_json::Value::Object(fields)).map_err(|e| e.to_string())
}

fn error_response(error: &ExchangeError) -> Response {
    let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = (
        status,
        Json(json!({
            "error": error.error(),
            "error_description": error.description,
            "reason": error.reason.code(),
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
pub(crate) fn no_store(mut response: Response) -> Response {
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
        let r = parse_form(b"grant_type=a%3Ab&workspace=fin+ance&gateway_services=%5B%5D").unwrap();
        assert_eq!(r.grant_type.as_deref(), Some("a:b"));
        assert_eq!(r.workspace.as_deref(), Some("fin ance"));
        assert_eq!(r.gateway_services.as_deref(), Some("[]"));
        assert!(parse_form(b"job_id=1&job_id=2").is_err());
        assert!(parse_form(b"job_id=\xff").is_err());
    }
}
