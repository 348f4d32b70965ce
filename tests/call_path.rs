//! The whole path of one tool call, with real MCP peers on both sides.

mod support;

use std::collections::HashMap;

use serde_json::{Value, json};
use support::*;

fn users() -> &'static str {
    r#"users:
  - email: alice@example.com
    access: { everything: write, time: read }
  - email: bob@example.com
    access: { time: read }
  - email: ops@example.com
    admin: true
    access: { "*": high_risk }
"#
}

async fn standard() -> TestGateway {
    TestGateway::start(&format!("services:\n{}{}", standard_services(), users())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn python_client_sees_only_what_access_allows_in_both_protocol_eras() {
    let gw = standard().await;
    let alice = gw.token("alice@example.com").await;
    let bob = gw.token("bob@example.com").await;
    let ops = gw.token("ops@example.com").await;
    for mode in ["auto", "legacy"] {
        let out = gw.py_client(&alice, mode, json!([{"op": "list"}])).await;
        let expected_protocol = if mode == "auto" {
            "2026-07-28"
        } else {
            "2025-11-25"
        };
        assert_eq!(out["protocol"], expected_protocol);
        assert_eq!(
            out["results"][0]["tools"],
            json!([
                "everything_read_actions",
                "everything_write_actions",
                "gateway_describe_action",
                "gateway_my_activity",
                "gateway_my_hooks",
                "gateway_search_actions",
                "time_read_actions"
            ]),
            "alice ({mode})"
        );
        let out = gw.py_client(&bob, mode, json!([{"op": "list"}])).await;
        assert_eq!(
            out["results"][0]["tools"],
            json!([
                "gateway_describe_action",
                "gateway_my_activity",
                "gateway_my_hooks",
                "gateway_search_actions",
                "time_read_actions"
            ]),
            "bob ({mode})"
        );
        let out = gw.py_client(&ops, mode, json!([{"op": "list"}])).await;

        assert_eq!(
            out["results"][0]["tools"],
            json!([
                "everything_read_actions",
                "everything_write_actions",
                "gateway_describe_action",
                "gateway_my_activity",
                "gateway_my_hooks",
                "gateway_search_actions",
                "time_read_actions",
                "time_write_actions"
            ]),
            "ops ({mode})"
        );
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_and_write_actions_reach_the_upstream_and_are_audited() {
    let gw = standard().await;
    let alice = gw.token("alice@example.com").await;
    let out = gw
        .py_client(
            &alice,
            "auto",
            json!([
                {"op": "call", "tool": "everything_read_actions", "args": {"action": "echo", "message": "hello upstream"}},
                {"op": "call", "tool": "everything_read_actions", "args": {"action": "get-sum", "a": 2, "b": 40}},
                {"op": "call", "tool": "everything_write_actions", "args": {"action": "toggle-simulated-logging"}},
                {"op": "call", "tool": "time_read_actions", "args": {"action": "get_current_time", "timezone": "UTC"}},
            ]),
        )
        .await;
    let results = &out["results"];
    assert_eq!(results[0]["content"], json!(["Echo: hello upstream"]));
    assert!(
        results[1]["content"][0].as_str().unwrap().contains("42"),
        "{results}"
    );
    assert_eq!(results[2]["is_error"], json!(false), "{results}");
    assert!(
        results[3]["content"][0]
            .as_str()
            .unwrap()
            .contains("\"timezone\": \"UTC\""),
        "{results}"
    );

    let rows = gw.audit_rows().await;
    let calls: Vec<_> = rows.iter().filter(|r| r.service.is_some()).collect();
    assert_eq!(calls.len(), 4, "{calls:#?}");
    for row in &calls {
        assert_eq!(row.subject, "alice@example.com");
        assert_eq!(row.actor, "alice@example.com");
        assert_eq!(row.decision, "allowed");
        assert_eq!(row.upstream_status.as_deref(), Some("ok"));
        assert!(row.completed_at.is_some() && row.latency_ms.is_some());
        assert_eq!(row.client_name.as_deref(), Some("py-test-client"));
        assert_eq!(row.args_sha256.len(), 64);
    }
    // A stateless (2026-07-28) client's session is keyed by credential and client identity.
    let token_id = alice.split('_').nth(1).unwrap();
    assert_eq!(
        calls[0].session.as_deref(),
        Some(format!("cred:{token_id}:py-test-client/1.0").as_str())
    );
    assert_eq!(calls[2].action.as_deref(), Some("toggle-simulated-logging"));
    assert_eq!(calls[2].risk.map(|r| r.as_str()), Some("write"));
    assert_eq!(calls[3].risk.map(|r| r.as_str()), Some("read"));
    // The digest is of the canonical arguments.
    let digest =
        mcpgate::audit::canonical_digest(&args(json!({"action": "get-sum", "b": 40, "a": 2})));
    assert_eq!(calls[1].args_sha256, digest);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refusals_are_clean_errors_with_an_audit_row_naming_the_reason() {
    let gw = standard().await;
    let alice = gw.token("alice@example.com").await;
    let bob = gw.token("bob@example.com").await;
    let client = gw.rmcp_client(&alice).await;
    let bob_client = gw.rmcp_client(&bob).await;
    let cases = [
        (
            &client,
            "time_write_actions",
            json!({"action": "convert_time", "source_timezone": "UTC", "time": "10:00", "target_timezone": "Europe/Berlin"}),
            "risk_not_allowed",
        ),
        (
            &bob_client,
            "everything_read_actions",
            json!({"action": "echo", "message": "x"}),
            "service_not_allowed",
        ),
        (
            &client,
            "everything_read_actions",
            json!({"action": "echo", "message": 7}),
            "invalid_arguments",
        ),
        (
            &client,
            "everything_read_actions",
            json!({"action": "nope"}),
            "unknown_action",
        ),
        (
            &client,
            "everything_read_actions",
            json!({"message": "no action"}),
            "invalid_arguments",
        ),
        (
            &client,
            "everything_read_actions",
            json!({"action": "toggle-simulated-logging"}),
            "wrong_tool",
        ),
        (&client, "nothing_here", json!({}), "unknown_tool"),
    ];
    for (who, tool, arguments, reason) in &cases {
        let outcome = call(who, tool, arguments.clone()).await;
        assert_eq!(refusal_of(outcome), *reason, "{tool} {arguments}");
    }
    // Argument validation answers with a tool error the model can read and
    // correct (SEP-1303), naming the field.
    let result = call(
        &client,
        "everything_read_actions",
        json!({"action": "echo", "message": 7}),
    )
    .await
    .unwrap();
    assert_eq!(result.is_error, Some(true));
    assert!(
        text_of(&result).contains("message:"),
        "the error names the field: {result:?}"
    );

    let rows = gw.audit_rows().await;
    for (_, tool, _, reason) in &cases {
        let row = rows
            .iter()
            .find(|r| r.tool == *tool && r.reason_code.as_deref() == Some(reason))
            .unwrap_or_else(|| panic!("no audit row for {tool} / {reason}"));
        assert_eq!(row.decision, "refused");
        assert!(row.reason.as_deref().is_some_and(|r| !r.is_empty()));
        assert!(row.completed_at.is_some());
    }
    let risk_row = rows
        .iter()
        .find(|r| r.reason_code.as_deref() == Some("risk_not_allowed"))
        .unwrap();
    assert_eq!(
        risk_row.risk.map(|r| r.as_str()),
        Some("write"),
        "operator override makes convert_time a write"
    );
    // Nothing refused reached an upstream: the only rows are refusals.
    assert!(rows.iter().all(|r| r.decision == "refused"));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sessions_of_a_revoked_token_end_at_its_next_use() {
    // A client cannot close a session whose token was revoked (even its
    // DELETE gets 401), so the gateway must, or it lingers until idle timeout.
    let gw = standard().await;
    let alice = gw.token("alice@example.com").await;
    let bob = gw.token("bob@example.com").await;
    let echo = |n: u64| {
        json!({"jsonrpc": "2.0", "id": n, "method": "tools/call", "params": {
            "name": "everything_read_actions", "arguments": {"action": "echo", "message": "hi"}}})
    };
    let mut opened = Vec::new();
    for token in [&alice, &alice, &bob] {
        let session = gw.raw_initialize(token).await;
        let answer = gw.raw_post(token, &session, echo(2)).await;
        assert_eq!(answer.status(), 200);
        answer.text().await.unwrap();
        opened.push(session);
    }
    let sessions = gw.gw.sessions();
    assert_eq!(sessions.count(), 3);

    let id = alice.split('_').nth(1).unwrap();
    assert!(mcpgate::tokens::revoke(gw.gw.pool(), id).await.unwrap());
    // Revoked by another process (the CLI): this gateway learns it when the
    // token is next presented, and ends every session it opened.
    let refused = gw.raw_post(&alice, &opened[0], echo(3)).await;
    assert_eq!(refused.status(), 401);
    // After a grace for answers already on their way.
    tokio::time::sleep(mcpgate::sessions::RETIRE_GRACE + std::time::Duration::from_millis(500))
        .await;
    assert_eq!(sessions.count(), 1, "only bob's session is left");
    assert!(!sessions.is_bound(&opened[0]) && !sessions.is_bound(&opened[1]));
    assert!(sessions.is_bound(&opened[2]));
    // Someone else's revoked token cannot end bob's session.
    let refused = gw.raw_post(&alice, &opened[2], echo(4)).await;
    assert_eq!(refused.status(), 401);
    tokio::time::sleep(mcpgate::sessions::RETIRE_GRACE + std::time::Duration::from_millis(500))
        .await;
    assert!(sessions.is_bound(&opened[2]));
    let answer = gw.raw_post(&bob, &opened[2], echo(5)).await;
    assert_eq!(answer.status(), 200);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn missing_bad_and_revoked_tokens_get_401_with_a_bearer_challenge() {
    let gw = standard().await;
    let alice = gw.token("alice@example.com").await;
    let http = reqwest::Client::new();
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}});
    let post = |token: Option<String>| {
        let mut req = http
            .post(&gw.url)
            .header("accept", "application/json, text/event-stream")
            .json(&init);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        req.send()
    };
    let none = post(None).await.unwrap();
    assert_eq!(none.status(), 401);
    // RFC 9728 §5.1: the challenge names the protected resource metadata.
    let challenge = none.headers()["www-authenticate"].to_str().unwrap();
    assert!(
        challenge.starts_with(r#"Bearer realm="mcpgate", resource_metadata="http"#)
            && challenge.contains(r#"/.well-known/oauth-protected-resource/mcp", scope="mcp""#)
            && !challenge.contains("error="),
        "{challenge}"
    );

    let last = if alice.ends_with('0') { '1' } else { '0' };
    let forged = format!("{}{last}", &alice[..alice.len() - 1]);
    for bad in ["nonsense".to_string(), forged] {
        let resp = post(Some(bad)).await.unwrap();
        assert_eq!(resp.status(), 401);
        let challenge = resp.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            challenge.contains(r#"error="invalid_token""#),
            "{challenge}"
        );
    }
    assert_eq!(post(Some(alice.clone())).await.unwrap().status(), 200);

    let id = alice.split('_').nth(1).unwrap();
    assert!(mcpgate::tokens::revoke(gw.gw.pool(), id).await.unwrap());
    let revoked = post(Some(alice.clone())).await.unwrap();
    assert_eq!(revoked.status(), 401);
    assert!(
        revoked.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("revoked")
    );

    let rows = gw.audit_rows().await;
    let codes: Vec<_> = rows.iter().filter_map(|r| r.reason_code.clone()).collect();
    assert_eq!(
        codes,
        vec![
            "unauthenticated",
            "invalid_token",
            "invalid_token",
            "invalid_token"
        ]
    );
    assert_eq!(
        rows.last().unwrap().subject,
        "alice@example.com",
        "a revoked token is attributed"
    );
    let text = serde_json::to_string(&rows).unwrap();
    assert!(
        !text.contains(&alice[16..]),
        "the audit log never holds a token secret"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_session_presented_with_another_token_is_refused() {
    let gw = standard().await;
    let alice = gw.token("alice@example.com").await;
    let mallory = gw.token("alice@example.com").await;
    let session = gw.raw_initialize(&alice).await;
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}});
    let hijack = gw.raw_post(&mallory, &session, list).await;
    assert_eq!(hijack.status(), 403);
    let body: serde_json::Value = hijack.json().await.unwrap();
    assert_eq!(body["reason"], "session_credential_mismatch");
    let rows = gw.audit_rows().await;
    assert!(rows.iter().any(
        |r| r.reason_code.as_deref() == Some("session_credential_mismatch")
            && r.session.as_deref() == Some(&format!("mcp:{session}"))
    ));

    // DELETE ends the session and its actor.
    let del = reqwest::Client::new()
        .delete(&gw.url)
        .bearer_auth(&alice)
        .header("mcp-session-id", &session)
        .send()
        .await
        .unwrap();
    assert!(del.status().is_success(), "{}", del.status());
    assert!(!gw.gw.sessions().is_bound(&session));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_sessions_each_get_their_own_answer_and_one_audit_row() {
    let gw = standard().await;
    let alice = gw.token("alice@example.com").await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let url = gw.url.clone();
        let token = alice.clone();
        tasks.push(tokio::spawn(async move {
            let client = rmcp_connect(&url, &token).await;
            let message = format!("message number {i}");
            let result = call(
                &client,
                "everything_read_actions",
                json!({"action": "echo", "message": message}),
            )
            .await
            .unwrap();
            let _ = client.cancel().await;
            (message, text_of(&result))
        }));
    }
    let mut digests = HashMap::new();
    for task in tasks {
        let (message, answer) = task.await.unwrap();
        assert_eq!(answer, format!("Echo: {message}"));
        digests.insert(
            mcpgate::audit::canonical_digest(&args(json!({"action": "echo", "message": message}))),
            0usize,
        );
    }
    let rows = gw.audit_rows().await;
    for row in rows.iter().filter(|r| r.service.is_some()) {
        assert_eq!(row.decision, "allowed");
        assert!(row.completed_at.is_some());
        *digests
            .get_mut(&row.args_sha256)
            .expect("row for a call we made") += 1;
    }
    assert!(
        digests.values().all(|n| *n == 1),
        "exactly one audit row per call"
    );
    assert_eq!(digests.len(), 200);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upstream_over_streamable_http_works_like_a_local_one() {
    let (mut upstream, port) = everything_over_http().await;
    let gw = TestGateway::start(&format!(
        "services:\n  remote:\n    kind: mcp\n    url: http://127.0.0.1:{port}/mcp\n    risk: {{ get-sum: high_risk }}\nusers:\n  - email: alice@example.com\n    access: {{ remote: write }}\n"
    ))
    .await;
    let alice = gw.token("alice@example.com").await;
    let client = gw.rmcp_client(&alice).await;
    let result = call(
        &client,
        "remote_read_actions",
        json!({"action": "echo", "message": "over http"}),
    )
    .await
    .unwrap();
    assert_eq!(text_of(&result), "Echo: over http");
    let err = call(
        &client,
        "remote_write_actions",
        json!({"action": "get-sum", "a": 1, "b": 2}),
    )
    .await
    .unwrap_err();
    assert_eq!(
        reason_of(&err),
        "risk_not_allowed",
        "config override made get-sum high_risk"
    );
    gw.stop().await;
    upstream.kill().await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn direct_exposure_presents_each_upstream_tool_under_the_same_governance() {
    let gw = TestGateway::start(&format!(
        "services:\n  time:\n    kind: mcp\n    command: [\"{}\", \"-m\", \"mcp_server_time\"]\n    expose: tools\n    risk: {{ convert_time: write }}\nusers:\n  - email: bob@example.com\n    access: {{ time: read }}\n",
        python()
    ))
    .await;
    let bob = gw.token("bob@example.com").await;
    let client = gw.rmcp_client(&bob).await;
    let tools = client.peer().list_all_tools().await.unwrap();
    let names: Vec<_> = tools.iter().map(|t| t.name.to_string()).collect();
    assert_eq!(
        names,
        vec![
            "time__get_current_time",
            "gateway_search_actions",
            "gateway_describe_action",
            "gateway_my_activity",
            "gateway_my_hooks"
        ]
    );
    let result = call(
        &client,
        "time__get_current_time",
        json!({"timezone": "UTC"}),
    )
    .await
    .unwrap();
    assert!(text_of(&result).contains("UTC"));
    let err = call(
        &client,
        "time__convert_time",
        json!({"source_timezone": "UTC", "time": "10:00", "target_timezone": "UTC"}),
    )
    .await
    .unwrap_err();
    assert_eq!(reason_of(&err), "risk_not_allowed");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_sessions_end_and_their_session_id_stops_working() {
    let gw = TestGateway::start(&format!(
        "limits: {{ session_idle_timeout: 400ms }}\nservices:\n{}{}",
        standard_services(),
        users()
    ))
    .await;
    let alice = gw.token("alice@example.com").await;
    let session = gw.raw_initialize(&alice).await;
    let list = |id: u64| {
        gw.raw_post(
            &alice,
            &session,
            json!({"jsonrpc": "2.0", "id": id, "method": "tools/list", "params": {}}),
        )
    };
    let first = list(2).await;
    assert_eq!(first.status(), 200);
    let _ = first.text().await;
    assert_eq!(gw.gw.sessions().count(), 1);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while gw.gw.sessions().count() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "idle session never ended"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // The transport-level session is closed with it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let status = list(3).await.status();
        if status == 404 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "session id still accepted: {status}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_configured_hosts_reach_the_mcp_endpoint() {
    let gw = TestGateway::start(&format!(
        "allowed_hosts: [gateway.example.com]\nservices:\n{}{}",
        standard_services(),
        users()
    ))
    .await;
    let alice = gw.token("alice@example.com").await;
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}});
    let post = |host: &'static str| {
        reqwest::Client::new()
            .post(&gw.url)
            .bearer_auth(&alice)
            .header("host", host)
            .header("accept", "application/json, text/event-stream")
            .json(&init)
            .send()
    };
    assert_eq!(post("gateway.example.com").await.unwrap().status(), 200);
    assert_eq!(post("localhost").await.unwrap().status(), 200);
    assert_eq!(post("evil.example.com").await.unwrap().status(), 403);
    gw.stop().await;
}

/// Right after a start, a call to a service whose upstream is still
/// connecting waits for it within the call's budget instead of being
/// refused; `/health/ready` says `starting` (503) until every connector
/// has connected, then 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_wait_for_an_upstream_that_is_still_starting_and_readiness_says_so() {
    let server = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/pii_server.py");
    let gw = TestGateway::launch(
        &format!(
            "services:\n  slow: {{ kind: mcp, command: [\"{}\", \"{server}\"], env: {{ START_DELAY_SECONDS: \"1.5\" }} }}\nusers:\n  - email: alice@example.com\n    access: {{ slow: read }}\n",
            support::python()
        ),
        None,
    )
    .await;
    let http = reqwest::Client::new();
    let ready = http
        .get(format!("{}/health/ready", gw.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "starting");

    let alice = rmcp_connect(&gw.url, &gw.token("alice@example.com").await).await;
    let answer = call(
        &alice,
        "slow_read_actions",
        json!({"action": "user_as_dict"}),
    )
    .await
    .expect("the call waited for the upstream");
    assert!(answer.structured_content.is_some());

    let ready = http
        .get(format!("{}/health/ready", gw.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    gw.stop().await;
}

/// server-everything over Streamable HTTP, on a port it says it bound. It
/// cannot be asked for a kernel-picked port (it reports `PORT=0` as 0), so
/// the port is drawn below the ephemeral range (where no outgoing connection
/// takes one) and drawn again if the server finds it taken.
async fn everything_over_http() -> (tokio::process::Child, u16) {
    use tokio::io::AsyncBufReadExt;
    for _ in 0..5 {
        let port = port_below_ephemeral();
        let mut child = tokio::process::Command::new("node")
            .arg(everything_js())
            .arg("streamableHttp")
            .env("PORT", port.to_string())
            .kill_on_drop(true)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let listening = tokio::time::timeout(std::time::Duration::from_secs(30), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("listening on port") {
                    return true;
                }
            }
            false
        })
        .await;
        if listening == Ok(true) {
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            return (child, port);
        }
        child.kill().await.ok();
    }
    panic!("server-everything could not listen on any of 5 ports");
}

/// A free loopback port in 20000–32000: below Linux's ephemeral range
/// (32768–60999), so only another server's explicit bind can take it.
fn port_below_ephemeral() -> u16 {
    loop {
        let port = rand::random_range(20_000..32_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_request_leaves_its_keep_alive_connection_usable() {
    // A client that gets 401, signs in and sends the next request on the same
    // connection must not meet a socket the gateway closed.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gw = standard().await;
    let token = gw.token("alice@example.com").await;
    let addr = gw.base.trim_start_matches("http://").to_owned();
    let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}})
    .to_string();
    let request = |auth: &str| {
        format!(
            "POST /mcp HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
             accept: application/json, text/event-stream\r\n{auth}content-length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    // The body arrives a moment after the headers, as over a real network.
    let first = request("");
    let (head, rest) = first.split_at(first.len() - body.len());
    socket.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    socket.write_all(rest.as_bytes()).await.unwrap();
    let answer = read_response(&mut socket).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(
        !answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );

    socket
        .write_all(request(&format!("authorization: Bearer {token}\r\n")).as_bytes())
        .await
        .unwrap();
    let answer = read_response(&mut socket).await;
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "the connection was dropped: {answer:?}"
    );

    async fn read_response(socket: &mut tokio::net::TcpStream) -> String {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        // Headers, then as much body as arrives within a short quiet spell.
        loop {
            match tokio::time::timeout(std::time::Duration::from_millis(500), socket.read(&mut buf))
                .await
            {
                Ok(Ok(0)) | Err(_) => break,
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
                Ok(Err(_)) => break,
            }
        }
        String::from_utf8_lossy(&got).into_owned()
    }
    gw.stop().await;
}
