//! Write-safety: confirmation of high_risk and listed writes, the read-only
//! switch, and headless callers.

mod support;

use serde_json::{Value, json};
use support::*;

fn config(log: &std::path::Path, extra_policy: &str) -> String {
    format!(
        r#"policy:
  risk: {{ "faulty.echo": high_risk }}
  confirm: ["time.convert_*"]
{extra_policy}services:
  faulty:
    kind: mcp
    command: ["{python}", "{script}"]
    env: {{ FAULTY_LOG: "{log}" }}
  time:
    kind: mcp
    command: ["{python}", "-m", "mcp_server_time"]
    risk: {{ convert_time: write }}
users:
  - email: ops@example.com
    admin: true
    access: {{ "*": high_risk }}
  - email: alice@example.com
    access: {{ "*": high_risk }}
  - email: flows@example.com
    service_account: true
    access: {{ "*": high_risk }}
"#,
        python = python(),
        script = faulty_py(),
        log = log.display(),
    )
}

fn echoes(log: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("echo ").map(str::to_owned))
        .collect()
}

fn token_of(result: &rmcp::model::CallToolResult) -> String {
    let structured = result
        .structured_content
        .as_ref()
        .expect("a confirmation request");
    assert_eq!(structured["confirmation_required"], json!(true));
    structured["confirm"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn high_risk_runs_only_with_a_single_use_token_bound_to_the_exact_call() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("faulty.log");
    let gw = TestGateway::start(&config(&log, "")).await;
    let ops = gw.rmcp_client(&gw.token("ops@example.com").await).await;
    let alice = gw.rmcp_client(&gw.token("alice@example.com").await).await;
    let call_args = json!({"action": "echo", "message": "drop the table"});

    // The write tool advertises `confirm`.
    let tools = ops.peer().list_all_tools().await.unwrap();
    let write_tool = tools
        .iter()
        .find(|t| t.name == "faulty_write_actions")
        .unwrap();
    assert!(write_tool.input_schema["properties"]["confirm"].is_object());

    // First call: nothing runs; the answer says what would happen.
    let first = call(&ops, "faulty_write_actions", call_args.clone())
        .await
        .unwrap();
    assert!(
        text_of(&first).contains("faulty.echo (high_risk) as ops@example.com"),
        "{}",
        text_of(&first)
    );
    assert!(echoes(&log).is_empty(), "the upstream was not called");
    let token = token_of(&first);

    // The token does not fit other arguments, another user, or a forgery.
    let mut other = call_args.clone();
    other["message"] = json!("something else");
    other["confirm"] = json!(token);
    let err = call(&ops, "faulty_write_actions", other).await.unwrap_err();
    assert_eq!(reason_of(&err), "confirmation_mismatch");
    let mut as_alice = call_args.clone();
    as_alice["confirm"] = json!(token);
    let err = call(&alice, "faulty_write_actions", as_alice)
        .await
        .unwrap_err();
    assert_eq!(reason_of(&err), "confirmation_mismatch");
    let mut forged = call_args.clone();
    // Change the tag's last character (to a different one).
    let last = if token.ends_with('A') { 'Q' } else { 'A' };
    forged["confirm"] = json!(format!("{}{last}", &token[..token.len() - 1]));
    let err = call(&ops, "faulty_write_actions", forged)
        .await
        .unwrap_err();
    assert!(
        ["confirmation_mismatch", "confirmation_malformed"].contains(&reason_of(&err).as_str())
    );
    assert!(echoes(&log).is_empty());

    // The same call with the token runs, once.
    let mut confirmed = call_args.clone();
    confirmed["confirm"] = json!(token);
    let done = call(&ops, "faulty_write_actions", confirmed.clone())
        .await
        .unwrap();
    assert_eq!(text_of(&done), "drop the table");
    assert_eq!(echoes(&log), vec!["drop the table"]);
    let err = call(&ops, "faulty_write_actions", confirmed)
        .await
        .unwrap_err();
    assert_eq!(reason_of(&err), "confirmation_reused");
    assert_eq!(echoes(&log).len(), 1);

    // Audit: the request for confirmation, then the run, share the argument digest.
    let rows = gw.audit_rows().await;
    let rows: Vec<_> = rows
        .iter()
        .filter(|r| r.action.as_deref() == Some("echo"))
        .collect();
    let codes: Vec<_> = rows
        .iter()
        .map(|r| format!("{}:{}", r.decision, r.reason_code.as_deref().unwrap_or("-")))
        .collect();
    assert_eq!(codes.len(), 6, "{codes:?}");
    assert_eq!(codes[0], "refused:confirmation_required");
    assert_eq!(codes[1], "refused:confirmation_mismatch");
    assert_eq!(codes[2], "refused:confirmation_mismatch");
    assert!(
        codes[3] == "refused:confirmation_mismatch" || codes[3] == "refused:confirmation_malformed",
        "{codes:?}"
    );
    assert_eq!(codes[4], "allowed:-");
    assert_eq!(codes[5], "refused:confirmation_reused");
    assert_eq!(
        rows[0].args_sha256, rows[4].args_sha256,
        "digest excludes the token"
    );
    assert_eq!(rows[4].risk.map(|r| r.as_str()), Some("high_risk"));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn listed_writes_need_confirmation_and_expired_tokens_do_not_work() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("faulty.log");
    let gw = TestGateway::start(&config(&log, "  confirmation_ttl: 1s\n")).await;
    let alice = gw.rmcp_client(&gw.token("alice@example.com").await).await;
    let args = json!({"action": "convert_time", "source_timezone": "UTC", "time": "10:00", "target_timezone": "Europe/Berlin"});
    let first = call(&alice, "time_write_actions", args.clone())
        .await
        .unwrap();
    let token = token_of(&first);
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let mut late = args.clone();
    late["confirm"] = json!(token);
    let err = call(&alice, "time_write_actions", late).await.unwrap_err();
    assert_eq!(reason_of(&err), "confirmation_expired");

    // A fresh token works. The TTL is 1 s so the test can outwait it; on a
    // machine loaded enough to take longer between two calls, ask again.
    let mut done = None;
    for _ in 0..5 {
        let fresh = token_of(
            &call(&alice, "time_write_actions", args.clone())
                .await
                .unwrap(),
        );
        let mut confirmed = args.clone();
        confirmed["confirm"] = json!(fresh);
        match call(&alice, "time_write_actions", confirmed).await {
            Ok(answer) => {
                done = Some(answer);
                break;
            }
            Err(e) => assert_eq!(reason_of(&e), "confirmation_expired"),
        }
    }
    let done = done.expect("a fresh confirmation token was accepted");
    assert!(
        text_of(&done).contains("Europe/Berlin"),
        "{}",
        text_of(&done)
    );

    // Reads never ask.
    let read = call(
        &alice,
        "time_read_actions",
        json!({"action": "get_current_time", "timezone": "UTC"}),
    )
    .await
    .unwrap();
    assert!(
        read.structured_content
            .as_ref()
            .map(|s| s.get("confirmation_required").is_none())
            .unwrap_or(true)
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn service_accounts_cannot_confirm_and_read_only_refuses_every_write() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("faulty.log");
    let gw = TestGateway::start(&config(&log, "")).await;
    let flows = gw.rmcp_client(&gw.token("flows@example.com").await).await;
    let err = call(
        &flows,
        "faulty_write_actions",
        json!({"action": "echo", "message": "x"}),
    )
    .await
    .unwrap_err();
    assert_eq!(reason_of(&err), "headless_cannot_confirm");
    gw.stop().await;

    let gw = TestGateway::start(&config(&log, "  read_only: true\n")).await;
    let ops = gw.rmcp_client(&gw.token("ops@example.com").await).await;
    let err = call(&ops, "faulty_write_actions", json!({"action": "crash"}))
        .await
        .unwrap_err();
    assert_eq!(reason_of(&err), "read_only_mode");
    let err = call(&ops, "time_write_actions", json!({"action": "convert_time", "source_timezone": "UTC", "time": "10:00", "target_timezone": "UTC"})).await.unwrap_err();
    assert_eq!(reason_of(&err), "read_only_mode");
    let ok: Value = serde_json::to_value(
        call(
            &ops,
            "time_read_actions",
            json!({"action": "get_current_time", "timezone": "UTC"}),
        )
        .await
        .unwrap(),
    )
    .unwrap();
    assert_eq!(ok["isError"], json!(false));
    assert!(echoes(&log).is_empty());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_that_support_elicitation_are_asked_in_the_call() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("faulty.log");
    let gw = TestGateway::start(&config(&log, "")).await;
    let ops = gw.token("ops@example.com").await;
    let step = |message: &str| json!([{"op": "call", "tool": "faulty_write_actions", "args": {"action": "echo", "message": message}}]);

    // Initialize-era client with form elicitation: asked, approves, it runs.
    let out = gw
        .py_client_answering(&ops, "legacy", step("approved"), Some("approve"))
        .await;
    assert_eq!(out["results"][0]["content"], json!(["approved"]), "{out}");
    let asked = out["asked"][0].as_str().unwrap();
    assert!(
        asked.contains("faulty.echo (high_risk) as ops@example.com"),
        "{asked}"
    );
    assert!(
        asked.contains("\"message\":\"approved\""),
        "the summary shows the arguments: {asked}"
    );

    // Declines: refused, nothing runs.
    let out = gw
        .py_client_answering(&ops, "legacy", step("declined"), Some("decline"))
        .await;
    assert_eq!(
        out["results"][0]["error"]["data"]["reason"], "confirmation_declined",
        "{out}"
    );
    assert_eq!(echoes(&log), vec!["approved"]);

    // A 2026-07-28 client is asked in the answer (input_required with an
    // elicitation and a sealed requestState); its SDK asks the human and retries.
    let out = gw
        .py_client_answering(&ops, "auto", step("modern"), Some("approve"))
        .await;
    assert_eq!(out["protocol"], "2026-07-28", "{out}");
    assert_eq!(out["results"][0]["content"], json!(["modern"]), "{out}");
    assert!(
        out["asked"][0]
            .as_str()
            .unwrap()
            .contains("faulty.echo (high_risk)")
    );
    assert_eq!(echoes(&log), vec!["approved", "modern"]);
    let out = gw
        .py_client_answering(&ops, "auto", step("modern-declined"), Some("decline"))
        .await;
    assert_eq!(
        out["results"][0]["error"]["data"]["reason"], "confirmation_declined",
        "{out}"
    );
    // A 2026-07-28 client that cannot answer elicitations: two-step instead.
    let out = gw.py_client(&ops, "auto", step("modern-two-step")).await;
    assert_eq!(
        out["results"][0]["structured"]["confirmation_required"],
        json!(true),
        "{out}"
    );
    assert_eq!(echoes(&log), vec!["approved", "modern"]);

    let rows = gw.audit_rows().await;
    let codes: Vec<_> = rows
        .iter()
        .filter(|r| r.action.as_deref() == Some("echo"))
        .map(|r| format!("{}:{}", r.decision, r.reason_code.as_deref().unwrap_or("-")))
        .collect();
    assert_eq!(
        codes,
        vec![
            "allowed:-",
            "refused:confirmation_declined",
            "refused:confirmation_required",
            "allowed:-",
            "refused:confirmation_required",
            "refused:confirmation_declined",
            "refused:confirmation_required"
        ]
    );
    gw.stop().await;
}
