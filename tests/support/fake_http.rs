//! The kernel every service fake shares. Each fake keeps what is honest to
//! its service (paths, fields, error shapes, auth scheme, from ../shared/specs);
//! what is not service-specific lives here once: a router served on a free
//! loopback port, the bearer token of a request, the record of what a fake
//! received, and a scripted rate limit.
//!
//! A fake includes it as its own submodule:
//! `#[path = "fake_http.rs"] mod fake_http;`
#![allow(dead_code)]

use std::collections::BTreeMap;

use axum::Router;
use axum::http::{HeaderMap, header};
use serde_json::Value;

/// A listener on a free loopback port and the base URL that reaches it.
pub async fn listen() -> (tokio::net::TcpListener, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}", listener.local_addr().unwrap());
    (listener, base_url)
}

/// Serve `app` on `listener` until the test ends.
pub fn serve(listener: tokio::net::TcpListener, app: Router) {
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
}

/// The token of an `Authorization: Bearer …` header, if there is one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// One request a fake received with a valid credential.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub query: BTreeMap<String, String>,
    /// Whom the credential belongs to, as the service names them.
    pub who: String,
    pub body: Value,
    /// Answered 429 (rate limited) instead of running.
    pub rate_limited: bool,
}

impl Received {
    pub fn new<'a>(
        method: &str,
        path: String,
        query: impl IntoIterator<Item = (&'a String, &'a String)>,
        who: &str,
        body: Value,
    ) -> Received {
        Received {
            method: method.into(),
            path,
            query: query
                .into_iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            who: who.into(),
            body,
            rate_limited: false,
        }
    }
}

/// A scripted rate limit: the next `left` requests are answered 429 with
/// `Retry-After: secs`.
#[derive(Debug, Default)]
pub struct RateLimit(Option<(u32, u64)>);

impl RateLimit {
    pub fn next(&mut self, left: u32, secs: u64) {
        self.0 = Some((left, secs));
    }

    /// The `Retry-After` this request gets, if it is limited.
    pub fn take(&mut self) -> Option<u64> {
        match &mut self.0 {
            Some((left, secs)) if *left > 0 => {
                *left -= 1;
                Some(*secs)
            }
            _ => None,
        }
    }
}
