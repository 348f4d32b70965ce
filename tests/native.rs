//! How a native connector behaves, whatever the service: pagination, retries,
//! rate limits, the circuit breaker, bad answers, OAuth connect and refresh,
//! and no secret anywhere but the wire. Each service's own catalog is driven
//! in `native_<service>.rs`.

#[path = "support/fake_api.rs"]
mod fake_api;
mod support;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use fake_api::{CLIENT_SECRET, FakeApi, Scripted};
use serde_json::{Value, json};
use support::{call, rmcp_connect, text_of};

/// Everything the gateway logs in this test binary, at debug level and up.
fn captured_log() -> Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = buffer.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
            .with_writer(move || LogWriter(writer.clone()))
            .try_init();
        buffer
    })
    .clone()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// An operator catalog for the fake API, loaded from `catalog_dir`.
const ACME_CATALOG: &str = r#"
service: acme
auth: bearer
actions:
  - name: list_items
    description: Items, three per page.
    risk: read
    method: GET
    path: /v1/items
    params:
      page_token: { in: query }
    pagination: { token_param: page_token, next_token: next_page_token, items: items, max_pages: 4 }
  - name: flaky
    description: A read the test scripts.
    risk: read
    method: GET
    path: /v1/flaky
  - name: flaky_write
    description: A write the test scripts.
    risk: write
    method: POST
    path: /v1/flaky
    params:
      note: { in: body }
  - name: slow
    description: Answers after `ms` milliseconds.
    risk: read
    method: GET
    path: /v1/slow
    params:
      ms: { in: query, type: integer }
  - name: big
    description: A 200 KB answer.
    risk: read
    method: GET
    path: /v1/big
    response: { max_bytes: 10000 }
  - name: malformed
    description: Broken JSON.
    risk: read
    method: GET
    path: /v1/malformed
  - name: html_error
    description: A proxy's HTML error page.
    risk: read
    method: GET
    path: /v1/html-error
"#;

async fn acme_gateway(api: &FakeApi, extra: &str) -> support::TestGateway {
    let catalogs = tempfile::tempdir().unwrap();
    std::fs::write(catalogs.path().join("acme.yaml"), ACME_CATALOG).unwrap();
    let catalog_dir = catalogs.keep();
    support::TestGateway::start(&format!(
        "public_url: http://gateway.example.com\ncatalog_dir: {}\nservices:\n  acme:\n    kind: native\n    catalog: acme\n    base_url: \"{}\"\n{extra}users:\n  - email: alice@example.com\n    access: {{ \"*\": write }}\n",
        catalog_dir.display(),
        api.base_url
    ))
    .await
}

async fn health(gw: &support::TestGateway) -> Value {
    reqwest::get(format!("{}/health", gw.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retries_rate_limits_breaker_and_bad_answers() {
    let log = captured_log();
    let api = FakeApi::start().await;
    api.allow_token("acme-token-5ecr3t");
    let gw = acme_gateway(
        &api,
        "    retries: 2\n    max_retry_wait: 3s\n    breaker: { failures: 3, cool_down: 1s }\n",
    )
    .await;
    support::store_credential(
        &gw,
        "alice@example.com",
        "acme",
        mcpgate::vault::CredentialKind::Token,
        "acme-token-5ecr3t",
    )
    .await;
    let alice = rmcp_connect(&gw.url, &gw.token("alice@example.com").await).await;
    let read = |action: &'static str| json!({ "action": action });

    // Pagination: two pages joined, and the token for the third.
    let answer = call(
        &alice,
        "acme_read_actions",
        json!({"action": "list_items", "pages": 2}),
    )
    .await
    .unwrap();
    let page = answer.structured_content.clone().unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 6, "{page}");
    assert_eq!(page["next_page_token"], "6");
    let last = call(
        &alice,
        "acme_read_actions",
        json!({"action": "list_items", "pages": 4, "page_token": "6"}),
    )
    .await
    .unwrap()
    .structured_content
    .unwrap();
    assert_eq!(last["items"].as_array().unwrap().len(), 4);
    assert!(last.get("next_page_token").is_none());

    // An idempotent read is retried through two 503s.
    api.script(vec![Scripted::status(503), Scripted::status(503)]);
    let answer = call(&alice, "acme_read_actions", read("flaky"))
        .await
        .unwrap();
    assert_ne!(answer.is_error, Some(true), "{}", text_of(&answer));
    assert_eq!(api.hits("/v1/flaky"), 3);

    // A write is not retried: the 503 comes back as a clear error.
    api.script(vec![Scripted::status(503)]);
    let answer = call(
        &alice,
        "acme_write_actions",
        json!({"action": "flaky_write", "note": "once"}),
    )
    .await
    .unwrap();
    assert_eq!(answer.is_error, Some(true));
    assert!(
        text_of(&answer).contains("HTTP 503"),
        "{}",
        text_of(&answer)
    );
    assert_eq!(api.hits("POST /v1/flaky"), 1);

    // 429 with a short Retry-After is waited out; a long one is reported.
    api.script(vec![Scripted::rate_limited(1)]);
    let started = Instant::now();
    let answer = call(&alice, "acme_read_actions", read("flaky"))
        .await
        .unwrap();
    assert_ne!(answer.is_error, Some(true), "{}", text_of(&answer));
    assert!(started.elapsed() >= Duration::from_secs(1));
    api.script(vec![Scripted::rate_limited(120)]);
    let started = Instant::now();
    let answer = call(&alice, "acme_read_actions", read("flaky"))
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    let limited = answer.structured_content.clone().unwrap();
    assert_eq!(limited["error"], "rate_limited");
    assert_eq!(limited["retry_after"], 120);

    // Malformed JSON, an HTML error page, an oversize answer: clear results.
    let answer = call(&alice, "acme_read_actions", read("malformed"))
        .await
        .unwrap();
    assert_eq!(answer.is_error, Some(true));
    assert!(
        text_of(&answer).contains("malformed JSON"),
        "{}",
        text_of(&answer)
    );
    let answer = call(&alice, "acme_read_actions", read("html_error"))
        .await
        .unwrap();
    let text = text_of(&answer);
    assert!(
        text.contains("HTTP 502") && text.contains("HTML error page"),
        "{text}"
    );
    assert!(
        !text.contains("<html") && !text.contains("Proxy.java"),
        "{text}"
    );
    let answer = call(&alice, "acme_read_actions", read("big"))
        .await
        .unwrap();
    let text = text_of(&answer);
    assert!(text.len() < 10_200, "{}", text.len());
    assert!(
        text.contains("[truncated by mcpgate: "),
        "{}",
        &text[9_000..]
    );

    // Repeated 5xx open the breaker: calls stop reaching the service and
    // /health says so; after the cool-down one trial closes it again.
    // Three calls, each tried three times (a read): nine 500s.
    api.script(vec![Scripted::status(500); 9]);
    for _ in 0..3 {
        let answer = call(&alice, "acme_read_actions", read("flaky"))
            .await
            .unwrap();
        assert_eq!(answer.is_error, Some(true));
    }
    let hits = api.hits("/v1/flaky");
    let refused = call(&alice, "acme_read_actions", read("flaky"))
        .await
        .unwrap();
    assert_eq!(
        refused.structured_content.clone().unwrap()["error"],
        "circuit_open"
    );
    assert!(text_of(&refused).contains("circuit_open"));
    assert_eq!(api.hits("/v1/flaky"), hits, "an open breaker sends nothing");
    let h = health(&gw).await;
    assert_eq!(h["status"], "degraded");
    assert!(
        h["connectors"]["acme"]["breaker"]
            .as_str()
            .unwrap()
            .starts_with("open"),
        "{h}"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Each failed call was a read tried three times: the script is spent,
    // so the trial succeeds.
    let trial = call(&alice, "acme_read_actions", read("flaky"))
        .await
        .unwrap();
    assert_ne!(trial.is_error, Some(true), "{}", text_of(&trial));
    let h = health(&gw).await;
    assert_eq!(h["connectors"]["acme"]["breaker"], "closed", "{h}");
    assert_eq!(h["status"], "ok");

    // The token never reaches the caller, the audit log or the logs.
    for row in gw.audit_rows().await {
        assert!(!format!("{row:?}").contains("acme-token-5ecr3t"));
    }
    let logged = String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
    assert!(!logged.is_empty());
    assert!(!logged.contains("acme-token-5ecr3t"));
    alice.cancel().await.unwrap();
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_service_slower_than_its_timeout_gets_a_clear_error() {
    let api = FakeApi::start().await;
    api.allow_token("acme-token");
    let gw = acme_gateway(&api, "    call_timeout: 1s\n    retries: 0\n").await;
    support::store_credential(
        &gw,
        "alice@example.com",
        "acme",
        mcpgate::vault::CredentialKind::Token,
        "acme-token",
    )
    .await;
    let alice = rmcp_connect(&gw.url, &gw.token("alice@example.com").await).await;
    let started = Instant::now();
    let outcome = call(
        &alice,
        "acme_read_actions",
        json!({"action": "slow", "ms": 5000}),
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let error = outcome.unwrap_err();
    assert!(
        ["upstream_transport", "upstream_timeout"].contains(&support::reason_of(&error).as_str()),
        "{error}"
    );
    assert!(
        error.to_string().contains("timed out") || support::reason_of(&error) == "upstream_timeout",
        "{error}"
    );
    // A fast call on the same service still works.
    let answer = call(
        &alice,
        "acme_read_actions",
        json!({"action": "slow", "ms": 1}),
    )
    .await
    .unwrap();
    assert_ne!(answer.is_error, Some(true), "{}", text_of(&answer));
    let rows = gw.audit_rows().await;
    assert!(
        rows.iter()
            .any(|r| r.action.as_deref() == Some("slow") && r.decision == "failed"),
        "{rows:#?}"
    );
    alice.cancel().await.unwrap();
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delegated_flow_calls_a_native_service_with_its_owners_credential() {
    let api = FakeApi::start().await;
    api.allow_token("alice-acme-token");
    let wm = support::fake_windmill::FakeWindmill::start("finance").await;
    wm.add_user("alice", "alice@example.com");
    wm.add_user("bob", "bob@example.com");
    let catalogs = tempfile::tempdir().unwrap();
    std::fs::write(catalogs.path().join("acme.yaml"), ACME_CATALOG).unwrap();
    let gw = support::TestGateway::start(&format!(
        "catalog_dir: {}\nservices:\n  acme: {{ kind: native, catalog: acme, base_url: \"{}\", oauth: {{ authorize_url: \"https://id.example/authorize\", token_url: \"https://id.example/token\", client_id: gw }} }}\nusers:\n  - email: alice@example.com\n    access: {{ acme: read }}\n  - email: bob@example.com\n    access: {{ acme: read }}\n  - email: windmill-sa@example.com\n    service_account: true\n    access: {{ acme: read }}\n  - email: root@example.com\n    admin: true\n",
        catalogs.path().display(),
        api.base_url
    ))
    .await;
    support::store_credential(
        &gw,
        "alice@example.com",
        "acme",
        mcpgate::vault::CredentialKind::Token,
        "alice-acme-token",
    )
    .await;
    let admin = gw.token("root@example.com").await;
    let sa = gw.token("windmill-sa@example.com").await;
    let http = reqwest::Client::new();
    for (method, path, body) in [
        ("PUT", "/admin/api/delegation", json!({"enabled": true})),
        (
            "POST",
            "/admin/api/windmill/instances",
            json!({"name": "prod", "base_url": wm.base_url, "workspace": "finance"}),
        ),
    ] {
        let request = match method {
            "PUT" => http.put(format!("{}{path}", gw.base)),
            _ => http.post(format!("{}{path}", gw.base)),
        };
        let response = request
            .bearer_auth(&admin)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
    }

    // The service account alone has no acme credential of its own.
    let sa_client = rmcp_connect(&gw.url, &sa).await;
    let own = call(&sa_client, "acme_read_actions", json!({"action": "flaky"}))
        .await
        .unwrap();
    assert_eq!(
        own.structured_content.clone().unwrap()["auth_required"],
        true
    );
    // The gateway's own instruction names the caller in clear: their own
    // identity is not third-party data for the PII pass.
    assert!(
        text_of(&own).contains("windmill-sa@example.com connects it")
            && !text_of(&own).contains("pseudonym.invalid"),
        "{}",
        text_of(&own)
    );

    // A flow exchanges its job token and acts as its owner.
    let exchange = |owner: &str, flow: &str| {
        let step = wm.start_flow(owner, flow);
        let http = http.clone();
        let sa = sa.clone();
        let base = gw.base.clone();
        async move {
            let mut form = reqwest::Url::parse("http://form/").unwrap();
            form.query_pairs_mut().extend_pairs([
                (
                    "grant_type",
                    "urn:ietf:params:oauth:grant-type:token-exchange",
                ),
                ("subject_token", step.token.as_str()),
                (
                    "subject_token_type",
                    "urn:mcpgate:params:oauth:token-type:windmill-job-token",
                ),
                ("actor_token", sa.as_str()),
                (
                    "actor_token_type",
                    "urn:ietf:params:oauth:token-type:access_token",
                ),
                ("workspace", "finance"),
                ("job_id", step.job_id.as_str()),
                ("flow_job_id", step.flow_job_id.as_str()),
                ("gateway_services", r#"[{"acme": ["read"]}]"#),
            ]);
            let exchanged: Value = http
                .post(format!("{base}/oauth/token"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form.query().unwrap().to_owned())
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            exchanged["access_token"]
                .as_str()
                .unwrap_or_else(|| panic!("{exchanged}"))
                .to_owned()
        }
    };
    // Bob's flow: Bob has no credential. auth_required, but without a
    // connect link: a ticket is for the person, never for a workflow.
    let bobs = rmcp_connect(&gw.url, &exchange("bob", "f/finance/weekly").await).await;
    let answer = call(&bobs, "acme_read_actions", json!({"action": "flaky"}))
        .await
        .unwrap();
    let needed = answer.structured_content.clone().unwrap();
    assert_eq!(needed["auth_required"], true);
    assert!(needed["connect_url"].is_null(), "{needed}");
    assert!(
        !text_of(&answer).contains("ticket="),
        "{}",
        text_of(&answer)
    );
    bobs.cancel().await.unwrap();
    // Alice's flow uses her credential.
    let flow = rmcp_connect(&gw.url, &exchange("alice", "f/finance/nightly").await).await;
    let answer = call(&flow, "acme_read_actions", json!({"action": "flaky"}))
        .await
        .unwrap();
    assert_ne!(answer.is_error, Some(true), "{}", text_of(&answer));
    assert_eq!(api.tokens_seen().last().unwrap(), "alice-acme-token");
    let row = gw
        .audit_rows()
        .await
        .into_iter()
        .rev()
        .find(|r| r.action.as_deref() == Some("flaky") && r.decision == "allowed")
        .unwrap();
    // Subject: the owner; actor: the flow that drove it.
    assert_eq!(
        (row.subject.as_str(), row.actor.as_str()),
        (
            "alice@example.com",
            "windmill:prod/finance/f/finance/nightly"
        )
    );
    flow.cancel().await.unwrap();
    sa_client.cancel().await.unwrap();
    gw.stop().await;
}

/// Turn a gateway URL built from `public_url` into one on the test's port.
fn on(gw: &support::TestGateway, url: &str) -> String {
    let parsed = reqwest::Url::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
    format!(
        "{}{}?{}",
        gw.base,
        parsed.path(),
        parsed.query().unwrap_or("")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn users_connect_with_oauth_and_tokens_refresh_before_expiry() {
    let log = captured_log();
    let api = FakeApi::start().await;
    // SAFETY: set once, before any gateway reads it; no other test reads it.
    unsafe { std::env::set_var("MCPGATE_TEST_ACME_SECRET", CLIENT_SECRET) };
    let gw = acme_gateway(
        &api,
        &format!(
            "    oauth:\n      authorize_url: \"{0}/oauth/authorize\"\n      token_url: \"{0}/oauth/token\"\n      client_id: {1}\n      client_secret_env: MCPGATE_TEST_ACME_SECRET\n      scopes: [items.read, items.write]\n",
            api.base_url,
            fake_api::CLIENT_ID
        ),
    )
    .await;
    let alice = rmcp_connect(&gw.url, &gw.token("alice@example.com").await).await;

    // No credential yet: auth_required, with a link that connects her account.
    let answer = call(&alice, "acme_read_actions", json!({"action": "list_items"}))
        .await
        .unwrap();
    let needed = answer.structured_content.clone().unwrap();
    assert_eq!(needed["auth_required"], true);
    let link = needed["connect_url"].as_str().unwrap().to_owned();
    assert!(link.contains("/connect/acme?ticket="), "{link}");

    // The browser: gateway → provider (PKCE) → gateway callback.
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let to_provider = browser.get(on(&gw, &link)).send().await.unwrap();
    assert_eq!(to_provider.status(), 303);
    let authorize = to_provider.headers()["location"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        authorize.contains("code_challenge_method=S256")
            && authorize.contains("scope=items.read+items.write"),
        "{authorize}"
    );
    let back = browser.get(&authorize).send().await.unwrap();
    assert_eq!(back.status(), 303);
    let callback = back.headers()["location"].to_str().unwrap().to_owned();
    let done = browser.get(on(&gw, &callback)).send().await.unwrap();
    assert_eq!(done.status(), 200);
    assert!(done.text().await.unwrap().contains("connected"));
    // The same callback again: the state is spent.
    let again = browser.get(on(&gw, &callback)).send().await.unwrap();
    assert_eq!(again.status(), 400);
    // A forged ticket is refused and audited.
    let forged = link.replace("ticket=", "ticket=x");
    let refused = browser.get(on(&gw, &forged)).send().await.unwrap();
    assert_eq!(refused.status(), 401);

    let answer = call(&alice, "acme_read_actions", json!({"action": "list_items"}))
        .await
        .unwrap();
    assert_ne!(answer.is_error, Some(true), "{}", text_of(&answer));
    let first = api.tokens_seen().last().unwrap().clone();
    assert!(first.starts_with("access-1-"));

    // A token within a minute of expiry is refreshed before the call.
    api.set_expires_in(30);
    let credential = mcpgate::vault::get(
        gw.gw.pool(),
        gw.gw.master_key(),
        "alice@example.com",
        "acme",
    )
    .await
    .unwrap()
    .unwrap();
    let mut set: Value = serde_json::from_str(credential.secret()).unwrap();
    set["expires_at"] = json!(time_now() + 30);
    mcpgate::vault::set(
        gw.gw.pool(),
        gw.gw.master_key(),
        "alice@example.com",
        "acme",
        mcpgate::vault::CredentialKind::Oauth,
        &set.to_string(),
    )
    .await
    .unwrap();
    api.set_expires_in(3600);
    let answer = call(&alice, "acme_read_actions", json!({"action": "list_items"}))
        .await
        .unwrap();
    assert_ne!(answer.is_error, Some(true), "{}", text_of(&answer));
    assert_eq!(api.refresh_grants(), 1);
    let second = api.tokens_seen().last().unwrap().clone();
    assert!(second.starts_with("access-2-"), "{second}");

    // The provider revokes the grant: the 401 triggers one refresh, which
    // fails, and Alice is asked to consent again.
    api.revoke_everything();
    let answer = call(&alice, "acme_read_actions", json!({"action": "list_items"}))
        .await
        .unwrap();
    let again = answer.structured_content.clone().unwrap();
    assert_eq!(again["auth_required"], true, "{again}");
    assert!(
        text_of(&answer).contains("consent again"),
        "{}",
        text_of(&answer)
    );
    assert!(again["connect_url"].as_str().unwrap().contains("ticket="));

    // Audit: the connection and the refused ticket; no token anywhere.
    let rows = gw.audit_rows().await;
    assert!(
        rows.iter()
            .any(|r| r.tool == "connect:acme" && r.decision == "allowed")
    );
    assert!(
        rows.iter()
            .any(|r| r.tool == "connect:acme" && r.decision == "refused")
    );
    let logged = String::from_utf8_lossy(&log.lock().unwrap()).into_owned();
    for secret in [
        first.as_str(),
        second.as_str(),
        CLIENT_SECRET,
        "refresh-1-",
        "refresh-2-",
    ] {
        assert!(!logged.contains(secret), "{secret} was logged");
        for row in &rows {
            assert!(!format!("{row:?}").contains(secret));
        }
        assert!(!text_of(&answer).contains(secret));
    }
    alice.cancel().await.unwrap();
    gw.stop().await;
}

fn time_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}
