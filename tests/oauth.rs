//! Sign-in for AI clients: mcpgate as the OAuth 2.1 authorization server of
//! its `/mcp`. A browser stand-in (an HTTP client that keeps cookies and
//! never follows redirects) walks the pages a person sees; every attack is
//! refused with its reason, and audited.

mod support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use support::TestGateway;
use support::browser::{Browser, form_body, pkce, query_of, ticket_of};
use support::recorder::Recorder;

const REDIRECT: &str = "http://127.0.0.1:53682/callback";

fn config(base: &str, upstream: &str, extra: &str) -> String {
    format!(
        r#"public_url: {base}
services:
  warehouse: {{ kind: mcp, url: "{upstream}" }}
users:
  - email: alice@example.com
    access: {{ warehouse: read }}
  - email: carol@example.com
    access: {{ warehouse: write }}
  - email: robot@example.com
    service_account: true
    access: {{ warehouse: read }}
oauth:
  clients:
    - client_id: inspector
      name: MCP Inspector
      redirect_uris: ["http://localhost:6274/oauth/callback"]
{extra}"#
    )
}

async fn gateway(extra: &str) -> (TestGateway, Recorder) {
    let upstream = Recorder::start().await;
    let url = upstream.url.clone();
    let extra = extra.to_owned();
    let store = support::default_store().await;
    let gw = TestGateway::start_at(|base| config(base, &url, &extra), store.as_ref()).await;
    (gw, upstream)
}

fn authorize_url(gw: &TestGateway, client_id: &str, params: &[(&str, &str)]) -> String {
    let mut url = reqwest::Url::parse(&format!("{}/oauth/authorize", gw.base)).unwrap();
    url.query_pairs_mut().append_pair("client_id", client_id);
    for (k, v) in params {
        url.query_pairs_mut().append_pair(k, v);
    }
    url.to_string()
}

async fn register(gw: &TestGateway, redirect: &str) -> String {
    let resp = reqwest::Client::new()
        .post(format!("{}/oauth/register", gw.base))
        .json(&json!({"client_name": "Test Client", "redirect_uris": [redirect]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["token_endpoint_auth_method"], "none");
    body["client_id"].as_str().unwrap().to_owned()
}

async fn link_for(gw: &TestGateway, user: &str) -> String {
    mcpgate::authserver::signin::mint_link(gw.gw.pool(), user, Duration::from_secs(600))
        .await
        .unwrap()
}

/// A signed-in browser and a code for `client_id`: (browser, code, verifier).
async fn code_for(gw: &TestGateway, client_id: &str, redirect: &str) -> (Browser, String, String) {
    let mut browser = Browser::new();
    let link = link_for(gw, "alice@example.com").await;
    let (verifier, challenge) = pkce();
    let url = authorize_url(
        gw,
        client_id,
        &[
            ("response_type", "code"),
            ("redirect_uri", redirect),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
            ("state", "st-1"),
            ("resource", &gw.url),
        ],
    );
    let first = browser.get(&url).await;
    assert_eq!(first.status, 401, "not signed in yet: {}", first.body);
    assert!(first.body.contains("Sign in first"));
    let consent = browser.sign_in(&gw.base, &link).await;
    assert_eq!(consent.status, 200, "{}", consent.body);
    let answered = browser.approve(&gw.base, &consent).await;
    assert_eq!(answered.status, 303, "{}", answered.body);
    let location = answered.location.unwrap();
    assert!(location.starts_with(redirect), "{location}");
    let params = query_of(&location);
    assert_eq!(params["state"], "st-1");
    assert_eq!(
        params["iss"], gw.base,
        "RFC 9207: the issuer is in the response"
    );
    (browser, params["code"].clone(), verifier)
}

async fn token(gw: &TestGateway, form: &[(&str, &str)]) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}/oauth/token", gw.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form_body(form))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    assert_eq!(resp.headers()["cache-control"], "no-store");
    (status, resp.json().await.unwrap())
}

async fn exchange(
    gw: &TestGateway,
    client_id: &str,
    code: &str,
    verifier: &str,
    redirect: &str,
) -> (u16, Value) {
    token(
        gw,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", client_id),
            ("code", code),
            ("code_verifier", verifier),
            ("redirect_uri", redirect),
            ("resource", &gw.url),
        ],
    )
    .await
}

/// The tokens `client_id` gets for a sign-in of alice at `REDIRECT`.
async fn tokens_for(gw: &TestGateway, client_id: &str) -> Value {
    let (_, code, verifier) = code_for(gw, client_id, REDIRECT).await;
    exchange(gw, client_id, &code, &verifier, REDIRECT).await.1
}

async fn refresh(gw: &TestGateway, client_id: &str, refresh_token: &str) -> (u16, Value) {
    token(
        gw,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", client_id),
            ("refresh_token", refresh_token),
        ],
    )
    .await
}

/// The token endpoint's answer is a 400 refusal with `reason`.
fn assert_refused((status, body): (u16, Value), reason: &str) {
    assert_eq!(
        (status, body["reason"].as_str()),
        (400, Some(reason)),
        "{body}"
    );
}

/// `tools/list` on `/mcp` (2026-07-28, stateless) with `access`: status and body.
async fn list_tools(gw: &TestGateway, access: &str) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(&gw.url)
        .bearer_auth(access)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/list")
        .json(
            &json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {},
                "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"}}}}),
        )
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn refusal_codes(rows: &[mcpgate::audit::AuditRow]) -> Vec<String> {
    rows.iter().filter_map(|r| r.reason_code.clone()).collect()
}

fn assert_audited(rows: &[mcpgate::audit::AuditRow], tool: &str, code: &str) {
    assert!(
        rows.iter()
            .any(|r| r.tool == tool && r.reason_code.as_deref() == Some(code)),
        "no audit row {tool} / {code}; refusals: {:?}",
        rows.iter()
            .filter_map(|r| r.reason_code.as_ref().map(|c| format!("{} {c}", r.tool)))
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_401_from_mcp_leads_to_both_metadata_documents() {
    let (gw, _upstream) = gateway("").await;
    let http = reqwest::Client::new();
    let resp = http
        .post(&gw.url)
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let challenge = resp.headers()["www-authenticate"].to_str().unwrap();
    let prm_url = format!("{}/.well-known/oauth-protected-resource/mcp", gw.base);
    assert!(
        challenge.contains(&format!(r#"resource_metadata="{prm_url}""#)),
        "{challenge}"
    );
    let prm: Value = http
        .get(&prm_url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(prm["resource"], gw.url);
    assert_eq!(prm["authorization_servers"], json!([gw.base]));
    let root: Value = http
        .get(format!("{}/.well-known/oauth-protected-resource", gw.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(root, prm);
    for path in [
        "/.well-known/oauth-authorization-server",
        "/.well-known/openid-configuration",
    ] {
        let meta: Value = http
            .get(format!("{}{path}", gw.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(meta["issuer"], gw.base, "{path}");
        assert_eq!(meta["code_challenge_methods_supported"], json!(["S256"]));
        assert_eq!(meta["response_types_supported"], json!(["code"]));
        assert_eq!(meta["authorization_response_iss_parameter_supported"], true);
        assert_eq!(meta["client_id_metadata_document_supported"], true);
        assert_eq!(
            meta["registration_endpoint"],
            format!("{}/oauth/register", gw.base)
        );
    }
    // Gateway tokens keep working unchanged.
    let token = gw.token("alice@example.com").await;
    assert_eq!(list_tools(&gw, &token).await.0, 200);
    gw.stop().await;
}

#[tokio::test]
async fn a_person_signs_in_consents_calls_refreshes_and_revokes() {
    let (gw, _upstream) = gateway("").await;
    let client_id = register(&gw, REDIRECT).await;
    let (mut browser, code, verifier) = code_for(&gw, &client_id, REDIRECT).await;
    let (status, tokens) = exchange(&gw, &client_id, &code, &verifier, REDIRECT).await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["scope"], "mcp");
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let refresh_1 = tokens["refresh_token"].as_str().unwrap().to_owned();

    let (status, listed) = list_tools(&gw, &access).await;
    assert_eq!(status, 200, "{listed}");
    let names: Vec<&str> = listed["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    // Alice's access (warehouse: read) applies exactly as for her gateway token.
    let with_token = list_tools(&gw, &gw.token("alice@example.com").await)
        .await
        .1;
    let token_names: Vec<&str> = with_token["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, token_names);
    assert!(names.contains(&"warehouse_read_actions"), "{names:?}");
    assert!(!names.contains(&"warehouse_write_actions"), "{names:?}");

    // Rotation: a refresh gives new tokens; both work.
    let (status, rotated) = refresh(&gw, &client_id, &refresh_1).await;
    assert_eq!(status, 200, "{rotated}");
    let access_2 = rotated["access_token"].as_str().unwrap().to_owned();
    let refresh_2 = rotated["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(refresh_1, refresh_2);
    assert_eq!(list_tools(&gw, &access_2).await.0, 200);

    // The person sees the client and revokes it: the next request is refused.
    let http = reqwest::Client::new();
    let mine: Value = http
        .get(format!("{}/oauth/clients", gw.base))
        .bearer_auth(&access_2)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(mine["user"], "alice@example.com");
    assert_eq!(mine["clients"][0]["client_id"], client_id);
    assert_eq!(mine["clients"][0]["client_name"], "Test Client");
    let sessions_before = gw.gw.sessions().count();
    let revoked = http
        .delete(format!(
            "{}/oauth/clients?{}",
            gw.base,
            form_body(&[("client_id", &client_id)])
        ))
        .bearer_auth(gw.token("alice@example.com").await)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    assert_eq!(list_tools(&gw, &access_2).await.0, 401);
    assert_eq!(list_tools(&gw, &access).await.0, 401);
    // The family's MCP session (its credential) ends with it.
    tokio::time::sleep(mcpgate::sessions::RETIRE_GRACE + Duration::from_millis(500)).await;
    assert_eq!(gw.gw.sessions().count(), sessions_before - 1);
    let (status, after) = refresh(&gw, &client_id, &refresh_2).await;
    assert_eq!(status, 400, "{after}");

    // A second consent in the same browser needs no new sign-in.
    let (_, challenge) = pkce();
    let again = browser
        .get(&authorize_url(
            &gw,
            &client_id,
            &[
                ("response_type", "code"),
                ("redirect_uri", REDIRECT),
                ("code_challenge", &challenge),
                ("code_challenge_method", "S256"),
            ],
        ))
        .await;
    assert_eq!(again.status, 200);
    assert!(again.body.contains("Test Client") && again.body.contains("127.0.0.1:53682"));

    let rows = gw.audit_rows().await;
    let tools: Vec<&str> = rows.iter().map(|r| r.tool.as_str()).collect();
    for step in [
        "oauth:register",
        "oauth:signin",
        "oauth:consent",
        "oauth:token",
        "oauth:refresh",
        "oauth:clients",
    ] {
        assert!(tools.contains(&step), "{step} not audited: {tools:?}");
    }
    assert!(
        rows.iter()
            .filter(|r| r.tool == "oauth:token")
            .all(|r| r.subject == "alice@example.com"),
    );
    let rendered = format!("{rows:?}");
    for secret in [&access, &refresh_1, &code] {
        assert!(
            !rendered.contains(secret.as_str()),
            "a secret reached the audit log"
        );
    }
    gw.stop().await;
}

#[tokio::test]
async fn refresh_reuse_revokes_the_whole_family() {
    let (gw, _upstream) = gateway("").await;
    let client_id = register(&gw, REDIRECT).await;
    let tokens = tokens_for(&gw, &client_id).await;
    let refresh_1 = tokens["refresh_token"].as_str().unwrap().to_owned();
    let rotated = refresh(&gw, &client_id, &refresh_1).await.1;
    let access_2 = rotated["access_token"].as_str().unwrap().to_owned();
    let refresh_2 = rotated["refresh_token"].as_str().unwrap().to_owned();

    let (status, reused) = refresh(&gw, &client_id, &refresh_1).await;
    assert_eq!(status, 400);
    assert_eq!(reused["error"], "invalid_grant");
    assert_eq!(reused["reason"], "refresh_reused");
    // The whole family: the newest tokens too.
    assert_eq!(list_tools(&gw, &access_2).await.0, 401);
    assert_eq!(refresh(&gw, &client_id, &refresh_2).await.0, 400);
    // A refresh token presented by another client is refused.
    let other = register(&gw, REDIRECT).await;
    let (_, code, verifier) = code_for(&gw, &client_id, REDIRECT).await;
    let fresh = exchange(&gw, &client_id, &code, &verifier, REDIRECT)
        .await
        .1;
    let (status, foreign) = refresh(&gw, &other, fresh["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 400);
    assert_eq!(foreign["reason"], "invalid_refresh_token");
    assert_audited(&gw.audit_rows().await, "oauth:refresh", "refresh_reused");
    gw.stop().await;
}

#[tokio::test]
async fn authorization_attacks_are_refused_and_audited() {
    let (gw, _upstream) = gateway("").await;
    let client_id = register(&gw, REDIRECT).await;
    let mut browser = Browser::new();
    browser
        .sign_in(&gw.base, &link_for(&gw, "alice@example.com").await)
        .await;
    let (_, challenge) = pkce();
    let base_params = |extra: &[(&'static str, String)]| {
        let mut p: Vec<(&str, String)> = vec![
            ("response_type", "code".into()),
            ("redirect_uri", REDIRECT.into()),
            ("state", "s".into()),
        ];
        p.extend(extra.iter().cloned());
        p
    };
    // Refused back at the client: (parameters, OAuth error, reason).
    type Case<'a> = (Vec<(&'a str, String)>, &'a str, &'a str);
    let to_client: Vec<Case> = vec![
        (base_params(&[]), "invalid_request", "pkce_required"),
        (
            base_params(&[
                ("code_challenge", challenge.clone()),
                ("code_challenge_method", "plain".into()),
            ]),
            "invalid_request",
            "pkce_plain_refused",
        ),
        (
            base_params(&[("code_challenge", challenge.clone())]),
            "invalid_request",
            "pkce_plain_refused",
        ),
        (
            base_params(&[
                ("code_challenge", challenge.clone()),
                ("code_challenge_method", "S256".into()),
                ("resource", "https://other.example/mcp".into()),
            ]),
            "invalid_target",
            "invalid_target",
        ),
        // RFC 6749 §4.1.2.1: a scope this server does not grant.
        (
            base_params(&[
                ("code_challenge", challenge.clone()),
                ("code_challenge_method", "S256".into()),
                ("scope", "mcp:read admin".into()),
            ]),
            "invalid_scope",
            "invalid_scope",
        ),
    ];
    for (params, error, reason) in to_client {
        let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let page = browser.get(&authorize_url(&gw, &client_id, &params)).await;
        assert_eq!(page.status, 303, "{reason}: {}", page.body);
        let back = query_of(page.location.as_deref().unwrap());
        assert_eq!(back["error"], error, "{reason}");
        assert_eq!(back["state"], "s");
        assert_eq!(back["iss"], gw.base);
        assert_audited(&gw.audit_rows().await, "oauth:authorize", reason);
    }
    // Never redirected: unknown client, unregistered or open-redirect URIs.
    let s256 = [
        ("response_type", "code"),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];
    for (client, redirect, reason) in [
        ("mgc_nobody", REDIRECT, "invalid_client"),
        (
            client_id.as_str(),
            "https://evil.example/callback",
            "invalid_redirect_uri",
        ),
        (
            client_id.as_str(),
            "http://127.0.0.1:53682/callback/../../evil",
            "invalid_redirect_uri",
        ),
        (
            client_id.as_str(),
            "http://127.0.0.1.evil.example:53682/callback",
            "invalid_redirect_uri",
        ),
    ] {
        let mut params = s256.to_vec();
        params.push(("redirect_uri", redirect));
        let page = browser.get(&authorize_url(&gw, client, &params)).await;
        assert!(page.status.is_client_error(), "{reason}: {}", page.status);
        assert!(
            page.location.is_none(),
            "{redirect} must not be redirected to"
        );
        assert!(page.body.contains(reason), "{}", page.body);
        assert_audited(&gw.audit_rows().await, "oauth:authorize", reason);
    }
    // A loopback redirect on another port is the same native app (RFC 8252).
    let mut params = s256.to_vec();
    params.push(("redirect_uri", "http://127.0.0.1:40001/callback"));
    assert_eq!(
        browser
            .get(&authorize_url(&gw, &client_id, &params))
            .await
            .status,
        200
    );

    // A forged consent ticket, and a genuine one from another browser.
    let mut params = s256.to_vec();
    params.push(("redirect_uri", REDIRECT));
    let consent = browser.get(&authorize_url(&gw, &client_id, &params)).await;
    let ticket = ticket_of(&consent);
    // One character changed (to another one, whatever it was).
    let first = if ticket.starts_with('A') { "B" } else { "A" };
    let forged_ticket = format!("{first}{}", &ticket[1..]);
    let forged = browser
        .post(
            &format!("{}/oauth/consent", gw.base),
            &[("ticket", &forged_ticket), ("decision", "approve")],
        )
        .await;
    assert_eq!(forged.status, 403);
    let mut mallory = Browser::new();
    mallory
        .sign_in(&gw.base, &link_for(&gw, "alice@example.com").await)
        .await;
    let elsewhere = mallory
        .post(
            &format!("{}/oauth/consent", gw.base),
            &[("ticket", &ticket), ("decision", "approve")],
        )
        .await;
    assert_eq!(elsewhere.status, 403);
    assert!(elsewhere.location.is_none());
    // A consent form is answered once (the browser's cookies, a second tab).
    let once = browser.get(&authorize_url(&gw, &client_id, &params)).await;
    let once = ticket_of(&once);
    for (status, what) in [(303, "answered"), (403, "already answered")] {
        let page = browser
            .post(
                &format!("{}/oauth/consent", gw.base),
                &[("ticket", &once), ("decision", "approve")],
            )
            .await;
        assert_eq!(page.status, status, "{what}: {}", page.body);
    }
    // Deny: the client hears access_denied.
    let denied = browser
        .post(
            &format!("{}/oauth/consent", gw.base),
            &[("ticket", &ticket), ("decision", "deny")],
        )
        .await;
    assert_eq!(
        query_of(&denied.location.unwrap())["error"],
        "access_denied"
    );

    let rows = gw.audit_rows().await;
    assert_audited(&rows, "oauth:consent", "invalid_consent");
    assert_audited(&rows, "oauth:consent", "consent_denied");
    gw.stop().await;
}

#[tokio::test]
async fn token_endpoint_attacks_are_refused_and_audited() {
    let (gw, _upstream) = gateway("").await;
    let client_id = register(&gw, REDIRECT).await;

    // Wrong verifier: refused, and the code is spent.
    let (_, code, verifier) = code_for(&gw, &client_id, REDIRECT).await;
    let (wrong, _) = pkce();
    assert_refused(
        exchange(&gw, &client_id, &code, &wrong, REDIRECT).await,
        "pkce_mismatch",
    );
    assert_refused(
        exchange(&gw, &client_id, &code, &verifier, REDIRECT).await,
        "code_replayed",
    );

    // Missing verifier.
    let (_, code, _) = code_for(&gw, &client_id, REDIRECT).await;
    assert_refused(
        token(
            &gw,
            &[
                ("grant_type", "authorization_code"),
                ("client_id", &client_id),
                ("code", &code),
                ("redirect_uri", REDIRECT),
            ],
        )
        .await,
        "pkce_required",
    );

    // Redirect URI differing from the authorization request's.
    let (_, code, verifier) = code_for(&gw, &client_id, REDIRECT).await;
    assert_refused(
        exchange(
            &gw,
            &client_id,
            &code,
            &verifier,
            "http://127.0.0.1:53682/other",
        )
        .await,
        "invalid_code",
    );

    // Code replay: the tokens minted from the code are revoked.
    let (_, code, verifier) = code_for(&gw, &client_id, REDIRECT).await;
    let (status, first) = exchange(&gw, &client_id, &code, &verifier, REDIRECT).await;
    assert_eq!(status, 200);
    let access = first["access_token"].as_str().unwrap();
    assert_eq!(list_tools(&gw, access).await.0, 200);
    assert_refused(
        exchange(&gw, &client_id, &code, &verifier, REDIRECT).await,
        "code_replayed",
    );
    assert_eq!(list_tools(&gw, access).await.0, 401);

    // Another client's code.
    let other = register(&gw, REDIRECT).await;
    let (_, code, verifier) = code_for(&gw, &client_id, REDIRECT).await;
    assert_refused(
        exchange(&gw, &other, &code, &verifier, REDIRECT).await,
        "invalid_code",
    );

    // A resource other than this /mcp at the token endpoint.
    let (_, code, verifier) = code_for(&gw, &client_id, REDIRECT).await;
    let (status, body) = token(
        &gw,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", &client_id),
            ("code", &code),
            ("code_verifier", &verifier),
            ("redirect_uri", REDIRECT),
            ("resource", "https://other.example/mcp"),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_target"))
    );

    // HTTP Basic client authentication naming the client (no secret exists)…
    let basic = |id: &str| {
        use base64::Engine;
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{id}:"))
        )
    };
    let (_, code, verifier) = code_for(&gw, &client_id, REDIRECT).await;
    let body = form_body(&[
        ("grant_type", "authorization_code"),
        ("code", &code),
        ("code_verifier", &verifier),
        ("redirect_uri", REDIRECT),
    ]);
    let http = reqwest::Client::new();
    let post = |authorization: String, body: String| {
        http.post(format!("{}/oauth/token", gw.base))
            .header("authorization", authorization)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };
    assert_eq!(post(basic(&client_id), body).await.unwrap().status(), 200);
    // …and one that contradicts the form's client_id.
    let (_, code, verifier) = code_for(&gw, &client_id, REDIRECT).await;
    let body = form_body(&[
        ("grant_type", "authorization_code"),
        ("client_id", &client_id),
        ("code", &code),
        ("code_verifier", &verifier),
        ("redirect_uri", REDIRECT),
    ]);
    let resp = post(basic("mgc_other"), body).await.unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"],
        "invalid_client"
    );

    // Repeated parameters.
    let (status, body) = token(
        &gw,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", &client_id),
            ("client_id", "x"),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request"))
    );

    // RFC 7009: revoking a refresh token ends its family; unknown tokens are 200.
    let tokens = tokens_for(&gw, &client_id).await;
    let http = reqwest::Client::new();
    for revoked in [
        tokens["refresh_token"].as_str().unwrap(),
        "mgr_000000000000_0000000000000000000000000000000000000000000000000000000000000000",
    ] {
        let resp = http
            .post(format!("{}/oauth/revoke", gw.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form_body(&[
                ("token", revoked),
                ("client_id", client_id.as_str()),
            ]))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(
        list_tools(&gw, tokens["access_token"].as_str().unwrap())
            .await
            .0,
        401
    );

    let rows = gw.audit_rows().await;
    for reason in [
        "pkce_mismatch",
        "code_replayed",
        "pkce_required",
        "invalid_code",
        "invalid_target",
        "invalid_request",
    ] {
        assert_audited(&rows, "oauth:token", reason);
    }
    assert!(rows.iter().any(|r| r.tool == "oauth:revoke"));
    // And the 401s at /mcp.
    assert!(refusal_codes(&rows).contains(&"invalid_token".to_owned()));
    gw.stop().await;
}

#[tokio::test]
async fn a_token_for_another_audience_is_refused() {
    let (gw, _upstream) = gateway("").await;
    let client_id = register(&gw, REDIRECT).await;
    let tokens = tokens_for(&gw, &client_id).await;
    let access = tokens["access_token"].as_str().unwrap();
    // The same store seen by a gateway published at another URL (another
    // resource): the token is bound to the first one's /mcp.
    let mut other = (**gw.gw.config()).clone();
    other.public_url = Some("https://other-gateway.example".into());
    let elsewhere = mcpgate::authserver::AuthServer::new(
        Arc::new(other),
        gw.gw.pool().clone(),
        gw.gw.audit().clone(),
        gw.gw.master_key(),
        mcpgate::credential_cache::RevocationWatch::start(gw.gw.pool()),
    )
    .unwrap();
    let rejection = elsewhere.verify_access(access).await.unwrap_err();
    assert_eq!(rejection.refusal.reason.code(), "wrong_audience");
    assert!(gw.gw.authserver().verify_access(access).await.is_ok());
    gw.stop().await;
}

#[tokio::test]
async fn sign_in_refuses_unknown_people_service_accounts_and_spent_links() {
    let (gw, _upstream) = gateway("").await;
    let mut browser = Browser::new();
    for user in ["mallory@example.com", "robot@example.com"] {
        let page = browser.sign_in(&gw.base, &link_for(&gw, user).await).await;
        assert_eq!(page.status, 403, "{user}");
        assert!(page.body.contains("signin_refused"));
    }
    let link = link_for(&gw, "alice@example.com").await;
    assert_eq!(browser.sign_in(&gw.base, &link).await.status, 200);
    let again = browser.sign_in(&gw.base, &link).await;
    assert_eq!(again.status, 400);
    assert!(again.body.contains("already used"));
    let rows = gw.audit_rows().await;
    assert_audited(&rows, "oauth:signin", "signin_refused");
    assert_audited(&rows, "oauth:signin", "signin_link_invalid");
    gw.stop().await;
}

/// Client ID Metadata Documents served on loopback (allowed for this test
/// gateway only), each path a different document.
async fn document_server() -> String {
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let me = base.clone();
    let app = axum::Router::new()
        .route(
            "/good.json",
            get({
                let me = me.clone();
                move || async move {
                    axum::Json(json!({"client_id": format!("{me}/good.json"),
                        "client_name": "Doc Client", "redirect_uris": [REDIRECT]}))
                }
            }),
        )
        .route(
            "/mismatch.json",
            get(|| async {
                axum::Json(json!({"client_id": "https://evil.example/client.json",
                    "redirect_uris": [REDIRECT]}))
            }),
        )
        .route(
            "/big.json",
            get({
                let me = me.clone();
                move || async move {
                    axum::Json(json!({"client_id": format!("{me}/big.json"),
                        "client_name": "x".repeat(20_000), "redirect_uris": [REDIRECT]}))
                }
            }),
        )
        .route(
            "/slow.json",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "{}"
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

#[tokio::test]
async fn client_metadata_documents_are_fetched_within_bounds() {
    let docs = document_server().await;
    let (gw, _upstream) = gateway(
        "  client_metadata_documents: { allow_private_addresses: true, allow_http: true, timeout: 1s }\n",
    )
    .await;
    let mut browser = Browser::new();
    browser
        .sign_in(&gw.base, &link_for(&gw, "alice@example.com").await)
        .await;
    let (verifier, challenge) = pkce();
    let params = [
        ("response_type", "code"),
        ("redirect_uri", REDIRECT),
        ("code_challenge", challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];
    for (path, reason) in [
        ("/mismatch.json", "client_metadata_mismatch"),
        ("/big.json", "client_metadata_too_large"),
        ("/slow.json", "client_metadata_unavailable"),
        ("/missing.json", "client_metadata_unavailable"),
    ] {
        let page = browser
            .get(&authorize_url(&gw, &format!("{docs}{path}"), &params))
            .await;
        assert_eq!(page.status, 400, "{path}: {}", page.body);
        assert!(page.body.contains(reason), "{path}: {}", page.body);
        assert!(page.location.is_none());
        assert_audited(&gw.audit_rows().await, "oauth:authorize", reason);
    }
    // A good document: its name on the consent page, and the whole flow.
    let client_id = format!("{docs}/good.json");
    let consent = browser.get(&authorize_url(&gw, &client_id, &params)).await;
    assert_eq!(consent.status, 200, "{}", consent.body);
    assert!(consent.body.contains("Doc Client"));
    let answered = browser.approve(&gw.base, &consent).await;
    let code = query_of(&answered.location.unwrap())["code"].clone();
    let (status, tokens) = exchange(&gw, &client_id, &code, &verifier, REDIRECT).await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(
        list_tools(&gw, tokens["access_token"].as_str().unwrap())
            .await
            .0,
        200
    );
    gw.stop().await;
}

#[tokio::test]
async fn client_metadata_on_a_private_address_is_refused_by_default() {
    let docs = document_server().await;
    let (gw, _upstream) = gateway("  client_metadata_documents: { allow_http: true }\n").await;
    let (_, challenge) = pkce();
    let page = Browser::new()
        .get(&authorize_url(
            &gw,
            &format!("{docs}/good.json"),
            &[
                ("response_type", "code"),
                ("redirect_uri", REDIRECT),
                ("code_challenge", challenge.as_str()),
                ("code_challenge_method", "S256"),
            ],
        ))
        .await;
    assert_eq!(page.status, 400);
    assert!(page.body.contains("client_metadata_forbidden_address"));
    assert!(page.location.is_none());
    assert_audited(
        &gw.audit_rows().await,
        "oauth:authorize",
        "client_metadata_forbidden_address",
    );
    gw.stop().await;
}

#[tokio::test]
async fn the_python_sdk_signs_in_lists_tools_and_refreshes() {
    // Access tokens live 2 s here, so the client's second call needs a refresh.
    let (gw, _upstream) = gateway("  access_token_ttl: 2s\n").await;
    let link = sign_in_url(&gw).await;
    let result = client_result(
        tokio::process::Command::new(support::python())
            .arg(support::repo().join("tests/clients/py_oauth.py"))
            .arg(&gw.url)
            .arg(&link)
            .arg("3"),
        "python OAuth client",
    )
    .await;
    let tools = result["tools"].as_array().unwrap();
    assert!(tools.contains(&json!("warehouse_read_actions")), "{result}");
    assert_registered_signed_in_and_refreshed(&result);
    let rows = gw.audit_rows().await;
    assert!(
        rows.iter()
            .any(|r| r.tool == "oauth:refresh" && r.reason_code.is_none())
    );
    gw.stop().await;
}

/// A one-time sign-in link for alice, as the URL a client opens.
async fn sign_in_url(gw: &TestGateway) -> String {
    format!(
        "{}/oauth/signin?link={}",
        gw.base,
        link_for(gw, "alice@example.com").await
    )
}

/// Runs an SDK client to its end: what it saw, the JSON of its last line.
async fn client_result(command: &mut tokio::process::Command, client: &str) -> Value {
    let out = command.output().await.unwrap();
    assert!(
        out.status.success(),
        "{client} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// What an SDK client saw when it registered (DCR), signed in through the
/// gateway's pages once and refreshed once, its calls still answered.
fn assert_registered_signed_in_and_refreshed(result: &Value) {
    assert_eq!(result["call_after_refresh_is_error"], false, "{result}");
    assert!(
        result["client_id"].as_str().unwrap().starts_with("mgc_"),
        "registered through DCR: {result}"
    );
    assert_eq!(
        result["token_sets"], 2,
        "one sign-in and one refresh: {result}"
    );
    assert_ne!(result["first_access"], result["last_access"]);
    assert_eq!(
        result["pages"],
        json!([
            "authorize:401",
            "signin-page:200",
            "signin:200",
            "consent:303"
        ])
    );
}

/// A CA and a certificate for 127.0.0.1 it signed, made with openssl:
/// (CA certificate, leaf certificate, leaf key) paths.
fn loopback_certificate(dir: &std::path::Path) -> (String, String, String) {
    let path = |name: &str| dir.join(name).display().to_string();
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .output()
            .expect("openssl is installed");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    std::fs::write(
        dir.join("leaf.ext"),
        "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\n",
    )
    .unwrap();
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        "/CN=test CA",
        "-days",
        "1",
        "-keyout",
        &path("ca.key"),
        "-out",
        &path("ca.pem"),
    ]);
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        &path("leaf.key"),
        "-out",
        &path("leaf.csr"),
    ]);
    openssl(&[
        "x509",
        "-req",
        "-in",
        &path("leaf.csr"),
        "-CA",
        &path("ca.pem"),
        "-CAkey",
        &path("ca.key"),
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        &path("leaf.ext"),
        "-out",
        &path("leaf.pem"),
    ]);
    (path("ca.pem"), path("leaf.pem"), path("leaf.key"))
}

#[tokio::test]
async fn the_python_sdk_registers_by_client_metadata_document() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = loopback_certificate(certs.path());
    // The document is served on loopback over HTTPS by a CA only this
    // gateway trusts (a lab's setup; never allow private addresses outside one).
    let (gw, _upstream) = gateway(&format!(
        "  client_metadata_documents: {{ allow_private_addresses: true, extra_ca_file: \"{ca}\" }}\n"
    ))
    .await;
    let link = sign_in_url(&gw).await;
    let result = client_result(
        tokio::process::Command::new(support::python())
            .arg(support::repo().join("tests/clients/py_oauth.py"))
            .args([
                gw.url.as_str(),
                link.as_str(),
                "0",
                cert.as_str(),
                key.as_str(),
            ]),
        "python OAuth client",
    )
    .await;
    let document = result["metadata_url"].as_str().unwrap();
    assert!(document.starts_with("https://127.0.0.1:"), "{result}");
    assert_eq!(
        result["client_id"], document,
        "the URL is the client_id: {result}"
    );
    assert!(
        result["tools"]
            .as_array()
            .unwrap()
            .contains(&json!("warehouse_read_actions"))
    );
    let rows = gw.audit_rows().await;
    assert!(
        !rows.iter().any(|r| r.tool == "oauth:register"),
        "no DCR happened"
    );
    assert!(rows.iter().any(|r| r.tool == "oauth:token"
        && r.client_name.as_deref() == Some(document)
        && r.reason_code.is_none()));
    gw.stop().await;
}

#[tokio::test]
async fn the_typescript_sdk_signs_in_lists_tools_and_refreshes() {
    let (gw, _upstream) = gateway("  access_token_ttl: 2s\n").await;
    let link = sign_in_url(&gw).await;
    let result = client_result(
        tokio::process::Command::new("node")
            .arg(support::repo().join("tests/clients/ts_oauth.mjs"))
            .arg(&gw.url)
            .arg(&link)
            .arg("3")
            .env("MCPGATE_PEERS", support::peers()),
        "TypeScript OAuth client",
    )
    .await;
    assert!(
        result["tools"]
            .as_array()
            .unwrap()
            .contains(&json!("warehouse_read_actions")),
        "{result}"
    );
    assert_eq!(result["iss"], gw.base);
    assert_registered_signed_in_and_refreshed(&result);
    gw.stop().await;
}

#[tokio::test]
async fn a_sign_in_is_served_by_every_replica_and_revoked_on_all_at_once() {
    // Two gateways behind one load balancer: one config (one public URL), one store.
    let store = support::SharedStore::create().await;
    let upstream = Recorder::start().await;
    let body = config("https://mcp.example.test", &upstream.url, "");
    let a = TestGateway::start_on(&body, Some(&store)).await;
    let b = TestGateway::start_on(&body, Some(&store)).await;
    let client_id = register(&a, REDIRECT).await;
    let (verifier, challenge) = pkce();
    // Consent given on replica A…
    let code =
        a.gw.authserver()
            .issue_code(
                &mcpgate::authserver::tokens::Authorization {
                    client_id: client_id.clone(),
                    client_name: "Test Client".into(),
                    redirect_uri: REDIRECT.into(),
                    state: None,
                    code_challenge: challenge,
                    resource: "https://mcp.example.test/mcp".into(),
                    scope: "mcp".into(),
                },
                "alice@example.com",
                "consent-1",
            )
            .await
            .unwrap();
    // …the code exchanged on replica B (a client registered on A is known there)…
    let (status, tokens) = exchange_at(&b, &client_id, &code, &verifier).await;
    assert_eq!(status, 200, "{tokens}");
    let access = tokens["access_token"].as_str().unwrap();
    // …and the token good on both.
    assert_eq!(list_tools(&a, access).await.0, 200);
    assert_eq!(list_tools(&b, access).await.0, 200);
    // The person revokes on A: the very next request on B is refused.
    let revoked = reqwest::Client::new()
        .delete(format!(
            "{}/oauth/clients?{}",
            a.base,
            form_body(&[("client_id", &client_id)])
        ))
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    assert_eq!(list_tools(&b, access).await.0, 401);
    assert_eq!(list_tools(&a, access).await.0, 401);
    let (status, refused) =
        refresh(&b, &client_id, tokens["refresh_token"].as_str().unwrap()).await;
    assert_eq!(
        (status, refused["reason"].as_str()),
        (400, Some("invalid_refresh_token"))
    );
    a.stop().await;
    b.stop().await;
}

/// The code exchange with the load balancer's resource (both replicas' `/mcp`).
async fn exchange_at(
    gw: &TestGateway,
    client_id: &str,
    code: &str,
    verifier: &str,
) -> (u16, Value) {
    token(
        gw,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", client_id),
            ("code", code),
            ("code_verifier", verifier),
            ("redirect_uri", REDIRECT),
            ("resource", "https://mcp.example.test/mcp"),
        ],
    )
    .await
}

/// In `browser`, `user` authorizes `client_id` for `scope` (signing in with
/// a one-time link if the browser is not yet): (consent page, code, verifier).
async fn authorize_as(
    gw: &TestGateway,
    browser: &mut Browser,
    client_id: &str,
    user: &str,
    scope: &str,
) -> (support::browser::Page, String, String) {
    let (verifier, challenge) = pkce();
    let url = authorize_url(
        gw,
        client_id,
        &[
            ("response_type", "code"),
            ("redirect_uri", REDIRECT),
            ("code_challenge", &challenge),
            ("code_challenge_method", "S256"),
            ("scope", scope),
            ("resource", &gw.url),
        ],
    );
    let mut consent = browser.get(&url).await;
    if consent.status == 401 {
        let link = link_for(gw, user).await;
        consent = browser.sign_in(&gw.base, &link).await;
    }
    assert_eq!(consent.status, 200, "{}", consent.body);
    let answered = browser.approve(&gw.base, &consent).await;
    assert_eq!(answered.status, 303, "{}", answered.body);
    let code = query_of(&answered.location.unwrap())["code"].clone();
    (consent, code, verifier)
}

/// `tools/call` on `/mcp` (2026-07-28, stateless): status, the
/// `WWW-Authenticate` header, body.
async fn call_tool(
    gw: &TestGateway,
    access: &str,
    tool: &str,
    arguments: Value,
) -> (u16, Option<String>, Value) {
    let resp = reqwest::Client::new()
        .post(&gw.url)
        .bearer_auth(access)
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", tool)
        .json(
            &json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
            "name": tool,
            "arguments": arguments,
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {},
                "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"}}}}),
        )
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = resp.text().await.unwrap();
    (
        status,
        challenge,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn tool_names(listed: &Value) -> Vec<String> {
    listed["result"]["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("no tools: {listed}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_read_only_scope_hides_writes_challenges_them_and_steps_up() {
    let (gw, upstream) = gateway("").await;
    let http = reqwest::Client::new();
    for path in [
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-authorization-server",
    ] {
        let meta: Value = http
            .get(format!("{}{path}", gw.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(
            meta["scopes_supported"],
            json!(["mcp", "mcp:read"]),
            "{path}"
        );
    }
    let client_id = register(&gw, REDIRECT).await;
    let mut browser = Browser::new();

    // Carol may write to the warehouse, but lets this client only read.
    let (consent, code, verifier) = authorize_as(
        &gw,
        &mut browser,
        &client_id,
        "carol@example.com",
        "mcp:read",
    )
    .await;
    assert!(
        consent.body.contains("mcp:read") && consent.body.contains("read only"),
        "{}",
        consent.body
    );
    assert!(
        consent.body.contains("warehouse: up to read"),
        "{}",
        consent.body
    );
    let (status, tokens) = exchange(&gw, &client_id, &code, &verifier, REDIRECT).await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["scope"], "mcp:read");
    let read = tokens["access_token"].as_str().unwrap().to_owned();
    let read_refresh = tokens["refresh_token"].as_str().unwrap().to_owned();

    // Her read-only token lists no write tool; her gateway token does.
    let names = tool_names(&list_tools(&gw, &read).await.1);
    assert!(
        names.contains(&"warehouse_read_actions".to_owned()),
        "{names:?}"
    );
    assert!(
        !names.contains(&"warehouse_write_actions".to_owned()),
        "{names:?}"
    );
    let carol_token = gw.token("carol@example.com").await;
    let all = tool_names(&list_tools(&gw, &carol_token).await.1);
    assert!(
        all.contains(&"warehouse_write_actions".to_owned()),
        "{all:?}"
    );

    // Reads run.
    let (status, _, answer) = call_tool(
        &gw,
        &read,
        "warehouse_read_actions",
        json!({"action": "query", "sql": "select 1"}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer["error"].is_null(), "{answer}");
    let before = upstream.calls.load(std::sync::atomic::Ordering::SeqCst);

    // A write she may make but the token may not: 403 with a scope challenge.
    let post = json!({"action": "post_message", "text": "hi"});
    let (status, challenge, body) =
        call_tool(&gw, &read, "warehouse_write_actions", post.clone()).await;
    assert_eq!(status, 403, "{body}");
    let challenge = challenge.expect("a 403 scope challenge");
    assert!(challenge.starts_with("Bearer "), "{challenge}");
    for part in [
        r#"error="insufficient_scope""#.to_owned(),
        r#"scope="mcp""#.to_owned(),
        format!(
            r#"resource_metadata="{}/.well-known/oauth-protected-resource/mcp""#,
            gw.base
        ),
    ] {
        assert!(challenge.contains(&part), "{part} missing: {challenge}");
    }
    assert_eq!(body["reason"], "insufficient_scope");
    // Changing her own hooks is a write too; listing them is a read.
    let (status, _, _) = call_tool(
        &gw,
        &read,
        "gateway_my_hooks",
        json!({"op": "remove", "name": "x"}),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _, listed) =
        call_tool(&gw, &read, "gateway_my_hooks", json!({"op": "list"})).await;
    assert_eq!(status, 200, "{listed}");
    // A high-risk action is beyond her access: a wider scope would not
    // help, so no challenge — the usual refusal.
    let (status, challenge, refused) = call_tool(
        &gw,
        &read,
        "warehouse_write_actions",
        json!({"action": "drop_table", "table": "t"}),
    )
    .await;
    assert_eq!((status, challenge), (200, None), "{refused}");
    assert_eq!(refused["error"]["data"]["reason"], "risk_not_allowed");
    assert_eq!(
        upstream.calls.load(std::sync::atomic::Ordering::SeqCst),
        before,
        "nothing refused reached the upstream"
    );

    // Refresh keeps the scope and never widens it; the refused widening
    // does not spend the refresh token.
    let widen = token(
        &gw,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", &client_id),
            ("refresh_token", &read_refresh),
            ("scope", "mcp"),
        ],
    )
    .await;
    assert_refused(widen, "invalid_scope");
    let (status, kept) = refresh(&gw, &client_id, &read_refresh).await;
    assert_eq!(status, 200, "{kept}");
    assert_eq!(kept["scope"], "mcp:read");
    let (status, _, _) = call_tool(
        &gw,
        kept["access_token"].as_str().unwrap(),
        "warehouse_write_actions",
        post.clone(),
    )
    .await;
    assert_eq!(status, 403);

    // Step-up: the client asks again with scope mcp (the browser is still
    // signed in, so straight to consent), and the write runs.
    let (consent, code, verifier) =
        authorize_as(&gw, &mut browser, &client_id, "carol@example.com", "mcp").await;
    assert!(consent.body.contains("writes included"), "{}", consent.body);
    let (status, full) = exchange(&gw, &client_id, &code, &verifier, REDIRECT).await;
    assert_eq!(status, 200, "{full}");
    assert_eq!(full["scope"], "mcp");
    let full_access = full["access_token"].as_str().unwrap().to_owned();
    let names = tool_names(&list_tools(&gw, &full_access).await.1);
    assert!(
        names.contains(&"warehouse_write_actions".to_owned()),
        "{names:?}"
    );
    let (status, _, answer) =
        call_tool(&gw, &full_access, "warehouse_write_actions", post.clone()).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer["error"].is_null(), "{answer}");
    assert_eq!(
        upstream.calls.load(std::sync::atomic::Ordering::SeqCst),
        before + 1
    );

    // A refresh may narrow the new access token (RFC 6749 §6).
    let narrowed = token(
        &gw,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", &client_id),
            ("refresh_token", full["refresh_token"].as_str().unwrap()),
            ("scope", "mcp:read"),
        ],
    )
    .await;
    assert_eq!(narrowed.0, 200, "{}", narrowed.1);
    assert_eq!(narrowed.1["scope"], "mcp:read");
    let narrow_access = narrowed.1["access_token"].as_str().unwrap();
    let (status, _, _) =
        call_tool(&gw, narrow_access, "warehouse_write_actions", post.clone()).await;
    assert_eq!(status, 403);

    let rows = gw.audit_rows().await;
    assert!(
        rows.iter().any(|r| r.tool == "warehouse_write_actions"
            && r.subject == "carol@example.com"
            && r.reason_code.as_deref() == Some("insufficient_scope")
            && r.action.as_deref() == Some("post_message")),
        "the scope refusal is audited with what was asked: {:?}",
        refusal_codes(&rows)
    );
    assert_audited(&rows, "gateway_my_hooks", "insufficient_scope");
    assert_audited(&rows, "oauth:refresh", "invalid_scope");
    assert!(rows.iter().any(|r| {
        r.tool == "oauth:consent"
            && r.reason
                .as_deref()
                .is_some_and(|w| w.contains("with scope mcp:read"))
    }));
    gw.stop().await;
}

#[tokio::test]
async fn oauth_endpoints_are_rate_limited_per_address_with_retry_after() {
    let (gw, _upstream) = gateway(
        "  rate_limits:\n    register: { per_minute: 1, burst: 2 }\n    token: { per_minute: 1, burst: 3 }\n",
    )
    .await;
    let http = reqwest::Client::new();
    let registration = json!({"client_name": "Flood", "redirect_uris": [REDIRECT]});
    for _ in 0..2 {
        let resp = http
            .post(format!("{}/oauth/register", gw.base))
            .json(&registration)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
    }
    let mut retry_afters = Vec::new();
    for _ in 0..3 {
        let resp = http
            .post(format!("{}/oauth/register", gw.base))
            .json(&registration)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 429);
        let retry: u64 = resp.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&retry), "{retry}");
        retry_afters.push(retry);
        assert_eq!(resp.headers()["cache-control"], "no-store");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "temporarily_unavailable", "{body}");
        assert_eq!(body["reason"], "rate_limited", "{body}");
    }

    // The token endpoint has its own bucket: three bad codes are answered
    // as bad codes, the fourth request is not looked at.
    let bad_code = [
        ("grant_type", "authorization_code"),
        ("client_id", "mgc_nobody"),
        ("code", "nope"),
        ("code_verifier", "v"),
        ("redirect_uri", REDIRECT),
    ];
    for _ in 0..3 {
        assert_refused(token(&gw, &bad_code).await, "invalid_code");
    }
    let (status, body) = token(&gw, &bad_code).await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (429, Some("rate_limited"))
    );
    // The delegation token exchange is not limited by it: a workflow engine
    // exchanges many job tokens from one address. (Delegation is off here,
    // so it answers its own refusal, not 429.)
    let (status, body) = token(
        &gw,
        &[(
            "grant_type",
            "urn:ietf:params:oauth:grant-type:token-exchange",
        )],
    )
    .await;
    assert_ne!(status, 429, "{body}");

    // Refusals are audited, but a flood writes one row per address and
    // endpoint per interval, counting the refusals it stands for.
    let rows = gw.audit_rows().await;
    let limited: Vec<_> = rows
        .iter()
        .filter(|r| r.reason_code.as_deref() == Some("rate_limited"))
        .collect();
    let mut tools: Vec<&str> = limited.iter().map(|r| r.tool.as_str()).collect();
    tools.sort();
    assert_eq!(tools, ["oauth:register", "oauth:token"], "{limited:?}");
    let register_row = limited.iter().find(|r| r.tool == "oauth:register").unwrap();
    assert!(
        register_row
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("127.0.0.1") && r.contains("over the rate limit")),
        "{register_row:?}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn the_python_sdk_steps_up_from_read_only_to_mcp_on_a_403() {
    // Least privilege first: the 401 challenges for mcp:read.
    let (gw, upstream) = gateway("  default_scope: mcp:read\n").await;
    let link = format!(
        "{}/oauth/signin?link={}",
        gw.base,
        link_for(&gw, "carol@example.com").await
    );
    let step_up = json!({
        "tool": "warehouse_write_actions",
        "arguments": {"action": "post_message", "text": "hi"},
    });
    let result = client_result(
        tokio::process::Command::new(support::python())
            .arg(support::repo().join("tests/clients/py_oauth.py"))
            .arg(&gw.url)
            .arg(&link)
            .arg("0")
            .env("PY_OAUTH_STEP_UP", step_up.to_string()),
        "python OAuth client (step-up)",
    )
    .await;
    // Signed in read-only, as the 401 asked: the write tool was not listed.
    let tools = result["tools"].as_array().unwrap();
    assert!(tools.contains(&json!("warehouse_read_actions")), "{result}");
    assert!(
        !tools.contains(&json!("warehouse_write_actions")),
        "{result}"
    );
    // The write answered 403; the SDK authorized again for `mcp` (the same
    // browser session: no second sign-in) and its retried call ran.
    assert_eq!(result["step_up_is_error"], false, "{result}");
    assert_eq!(result["scopes"], json!(["mcp:read", "mcp"]), "{result}");
    assert_eq!(
        result["pages"],
        json!([
            "authorize:401",
            "signin-page:200",
            "signin:200",
            "consent:303",
            "authorize:200",
            "consent:303"
        ]),
        "{result}"
    );
    assert_eq!(result["call_after_refresh_is_error"], false, "{result}");
    let received = upstream.received.lock().unwrap().clone();
    assert_eq!(
        received
            .iter()
            .filter(|(tool, _)| tool == "post_message")
            .count(),
        1,
        "{received:?}"
    );
    let rows = gw.audit_rows().await;
    assert_audited(&rows, "warehouse_write_actions", "insufficient_scope");
    gw.stop().await;
}

#[tokio::test]
async fn an_initialize_era_session_follows_its_client_through_a_step_up() {
    let (gw, upstream) = gateway("").await;
    let client_id = register(&gw, REDIRECT).await;
    let mut browser = Browser::new();
    let (_, code, verifier) = authorize_as(
        &gw,
        &mut browser,
        &client_id,
        "carol@example.com",
        "mcp:read",
    )
    .await;
    let read = exchange(&gw, &client_id, &code, &verifier, REDIRECT)
        .await
        .1;
    let read = read["access_token"].as_str().unwrap().to_owned();
    let session = gw.raw_initialize(&read).await;
    let post = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
        "name": "warehouse_write_actions", "arguments": {"action": "post_message", "text": "hi"}}});
    let refused = gw.raw_post(&read, &session, post.clone()).await;
    assert_eq!(refused.status(), 403);
    assert!(
        refused.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains(r#"error="insufficient_scope""#)
    );

    // The client steps up: a new sign-in family, the same session.
    let (_, code, verifier) =
        authorize_as(&gw, &mut browser, &client_id, "carol@example.com", "mcp").await;
    let full = exchange(&gw, &client_id, &code, &verifier, REDIRECT)
        .await
        .1;
    let full = full["access_token"].as_str().unwrap().to_owned();
    let answered = gw.raw_post(&full, &session, post.clone()).await;
    assert_eq!(answered.status(), 200);
    let text = answered.text().await.unwrap();
    assert!(
        text.contains("\"result\"") && !text.contains("\"error\""),
        "{text}"
    );
    assert_eq!(upstream.calls.load(std::sync::atomic::Ordering::SeqCst), 1);

    // Not another client's sign-in of hers, nor her gateway token.
    let other_client = register(&gw, REDIRECT).await;
    let (_, code, verifier) =
        authorize_as(&gw, &mut browser, &other_client, "carol@example.com", "mcp").await;
    let other = exchange(&gw, &other_client, &code, &verifier, REDIRECT)
        .await
        .1;
    for token in [
        other["access_token"].as_str().unwrap().to_owned(),
        gw.token("carol@example.com").await,
    ] {
        let refused = gw.raw_post(&token, &session, post.clone()).await;
        assert_eq!(refused.status(), 403);
        let body: Value = refused.json().await.unwrap();
        assert_eq!(body["reason"], "session_credential_mismatch");
    }
    gw.stop().await;
}
