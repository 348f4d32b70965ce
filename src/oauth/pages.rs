//! The few HTML pages of sign-in: consent, sign-in by link, and errors.
//! Plain, escaped, no script; framing forbidden so a consent button cannot
//! be clickjacked.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// A page: `title` and `body` (already HTML; escape what goes into it).
pub fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=en><meta charset=utf-8>\
         <meta name=viewport content=\"width=device-width\">\
         <title>{t} · mcpgate</title>\
         <style>body{{font:16px/1.5 system-ui,sans-serif;max-width:36em;margin:3em auto;padding:0 1em}}\
         button{{font-size:1em;padding:.4em 1.2em;margin-right:.6em}}dt{{font-weight:bold}}</style>\
         <h1>{t}</h1>{body}</html>",
        t = escape(title)
    );
    let mut response = (status, Html(html)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// An error page: the request cannot be sent back to the client.
pub fn error(status: StatusCode, title: &str, message: &str, code: &str) -> Response {
    page(
        status,
        title,
        &format!(
            "<p>{}</p><p><small>reason: <code>{}</code></small></p>",
            escape(message),
            escape(code)
        ),
    )
}

pub struct Consent<'a> {
    pub client_name: &'a str,
    pub client_id: &'a str,
    pub redirect_host: &'a str,
    pub user: &'a str,
    /// The scope asked for (`mcp` or `mcp:read`) and what it gives.
    pub scope: &'a str,
    pub scope_means: &'a str,
    /// `service: class` lines of the person's access, capped by the scope.
    pub access: Vec<String>,
    pub access_ttl: String,
    pub refresh_ttl: String,
    pub ticket: &'a str,
}

pub fn consent(c: &Consent) -> Response {
    let access = if c.access.is_empty() {
        "<li>no service (your access is empty)</li>".to_owned()
    } else {
        c.access
            .iter()
            .map(|a| format!("<li>{}</li>", escape(a)))
            .collect()
    };
    page(
        StatusCode::OK,
        "Allow access to mcpgate?",
        &format!(
            "<p><strong>{name}</strong> asks to use mcpgate's tools as <strong>{user}</strong>.</p>\
             <dl><dt>Client</dt><dd>{name} <small>({id})</small></dd>\
             <dt>You will be sent back to</dt><dd><code>{host}</code></dd>\
             <dt>What it gets</dt><dd>scope <code>{scope}</code>: {scope_means}. \
             The tools of these services, within your access \
             (every call is checked and audited as yours):<ul>{access}</ul>\
             Access tokens last {access_ttl}; it may renew them for up to {refresh_ttl} \
             until you revoke it.</dd></dl>\
             <form method=post action=\"/oauth/consent\">\
             <input type=hidden name=ticket value=\"{ticket}\">\
             <button name=decision value=approve>Allow</button>\
             <button name=decision value=deny>Deny</button></form>",
            name = escape(c.client_name),
            id = escape(c.client_id),
            user = escape(c.user),
            host = escape(c.redirect_host),
            scope = escape(c.scope),
            scope_means = escape(c.scope_means),
            access_ttl = escape(&c.access_ttl),
            refresh_ttl = escape(&c.refresh_ttl),
            ticket = escape(c.ticket),
        ),
    )
}

/// The confirmation step of a sign-in link (a GET never uses the link up,
/// so a chat app's link preview cannot spend it).
pub fn signin_confirm(link: &str) -> Response {
    page(
        StatusCode::OK,
        "Sign in to mcpgate",
        &format!(
            "<p>This one-time link signs this browser in to mcpgate.</p>\
             <form method=post action=\"/oauth/signin\">\
             <input type=hidden name=link value=\"{}\">\
             <button>Sign in</button></form>",
            escape(link)
        ),
    )
}

pub fn not_signed_in(client_name: &str) -> Response {
    page(
        StatusCode::UNAUTHORIZED,
        "Sign in first",
        &format!(
            "<p><strong>{}</strong> wants to connect to mcpgate, but this browser is not signed in.</p>\
             <p>Open the one-time sign-in link your administrator gave you \
             (<code>mcpgate oauth signin-link &lt;your email&gt;</code>) in this browser: \
             you will come back to this request.</p>",
            escape(client_name)
        ),
    )
}
