//! The web console in a real browser: Debian's Chromium driven by Playwright
//! (tests/console/browser.py), against a gateway with the fake Windmill.
//! Each journey is the guide's, a step in the browser then a step of the
//! workflow here, and what each side sees is checked.
//!
//! `MCPGATE_CONSOLE_SHOTS=docs/console` also saves a screenshot of each page.

mod support;

use serde_json::{Value, json};
use support::world::{DECLARATION, FlowRun, World, world};
use support::{call, python, rmcp_connect};

/// Run one browser step; its JSON answer.
fn browser(w: &World, step: &str, token: &str, extra: &[&str]) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/console/browser.py");
    let mut command = std::process::Command::new(python());
    command
        .arg(script)
        .arg(step)
        .args(["--url", &w.gw.base, "--token", token]);
    command.args(extra);
    if let Ok(dir) = std::env::var("MCPGATE_CONSOLE_SHOTS") {
        command.args(["--shots", &dir]);
    }
    let out = command.output().expect("python runs");
    assert!(
        out.status.success(),
        "browser step {step} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// Each of `actions` is in the audit log under the admin's name.
async fn assert_audited_as_admin(w: &World, actions: &[&str]) {
    let seen: Vec<String> =
        w.gw.audit_rows()
            .await
            .into_iter()
            .filter(|r| r.tool.starts_with("console:") && r.subject == "root@example.com")
            .map(|r| r.tool.clone())
            .collect();
    for expected in actions {
        assert!(
            seen.iter().any(|a| a == expected),
            "{expected} not audited: {seen:?}"
        );
    }
}

/// The world without what the operator sets up from the console.
async fn bare_world() -> World {
    let w = world().await;
    let (status, _) = w
        .admin("PUT", "/admin/api/delegation", json!({"enabled": false}))
        .await;
    assert_eq!(status, 200);
    let (status, _) = w
        .admin("DELETE", "/admin/api/windmill/instances/prod", Value::Null)
        .await;
    assert_eq!(status, 204);
    w
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_operator_journey_of_the_guide() {
    let w = bare_world().await;
    let flow = "f/finance/nightly_pnl";
    // Before the operator's set-up, a flow cannot delegate.
    let step = w.wm.start_flow("alice", flow);
    let (status, body) = w.exchange(&step, DECLARATION).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["reason"], "delegation_disabled");

    // General → Clients: Delegated Access on, the instance registered.
    let seen = browser(&w, "setup", &w.admin_token, &["--windmill", &w.wm.base_url]);
    assert_eq!(seen["before"], "off");
    assert_eq!(seen["after"], "on");
    assert!(
        seen["instances"][0].as_str().unwrap().contains("finance"),
        "{seen}"
    );

    // A delegated job of `flow` (the nightly P&L) runs and reads once.
    let FlowRun {
        token,
        grant_id,
        client,
        ..
    } = w.a_flow_makes_one_read().await;

    // Workflow Callers: its grant is listed; the operator revokes it.
    let seen = browser(&w, "revoke", &w.admin_token, &["--flow", flow]);
    assert_eq!(seen["grant"], grant_id.as_str());
    assert_eq!(seen["calls"], "1", "calls so far under the grant: {seen}");
    assert!(
        seen["result"]
            .as_str()
            .unwrap()
            .contains("Every gateway replica has stopped it"),
        "{seen}"
    );
    // The job's next call is refused.
    let refused = call(
        &client,
        "bigquery_read_actions",
        json!({"action": "query", "sql": "select 2"}),
    )
    .await;
    match refused {
        Err(rmcp::service::ServiceError::McpError(e)) => {
            assert_eq!(e.data.unwrap()["reason"], "grant_revoked")
        }
        Err(other) => assert!(format!("{other:?}").contains("revoked"), "{other:?}"),
        Ok(result) => panic!("a call under a revoked grant ran: {result:?}"),
    }
    // A fresh request with the token: refused and audited as grant_revoked.
    let response = w.fresh_tools_list(&token).await;
    assert_eq!(response.status(), 401);
    assert_eq!(w.bigquery.count(), 1);

    // Audit: the refusal is there.
    let seen = browser(&w, "audit", &w.admin_token, &["--reason", "grant_revoked"]);
    let rows = seen["rows"].as_array().unwrap();
    assert!(!rows.is_empty(), "{seen}");
    assert!(
        rows.iter()
            .all(|r| r.as_str().unwrap().contains("grant_revoked")),
        "{seen}"
    );
    assert!(
        rows.iter()
            .any(|r| r.as_str().unwrap().contains("alice@example.com")),
        "{seen}"
    );

    // Every console action is in the audit log under the admin's name.
    assert_audited_as_admin(
        &w,
        &[
            "console:delegation",
            "console:put_instance",
            "console:revoke_grant",
        ],
    )
    .await;
    client.cancel().await.ok();
    w.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_high_risk_attempt_is_approved_from_the_console() {
    let w = world().await;
    let flow = "f/finance/cleanup";
    let declaration = r#"[{"warehouse": ["high_risk"]}]"#;
    let step = w.wm.start_flow("alice", flow);
    let (status, body) = w.exchange(&step, declaration).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["reason"], "high_risk_not_approved");

    let seen = browser(&w, "approve", &w.admin_token, &["--flow", flow]);
    assert_eq!(seen["offered"], 1, "{seen}");
    let approvals = seen["approvals"]
        .as_array()
        .unwrap_or_else(|| panic!("{seen}"));
    assert_eq!(approvals.len(), 1, "{seen}");
    assert!(
        approvals[0].as_str().unwrap().contains("warehouse"),
        "{seen}"
    );

    // The next run gets its grant.
    let again = w.wm.start_flow("alice", flow);
    let (status, body) = w.exchange(&again, declaration).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scope"], "warehouse:high_risk");
    w.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_person_sees_what_was_done_in_their_name_and_no_one_else_does() {
    let w = world().await;
    let FlowRun { client, .. } = w.a_flow_makes_one_read().await;
    client.cancel().await.ok();

    let alice = w.gw.token("alice@example.com").await;
    let seen = browser(&w, "me", &alice, &[]);
    let rows: Vec<&str> = seen["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        rows.iter().any(|r| r.contains("windmill:prod/finance")
            && r.contains("query")
            && r.contains("allowed")),
        "the delegated call, with the flow's instance as actor: {rows:?}"
    );

    let bob = w.gw.token("bob@example.com").await;
    let seen = browser(&w, "me", &bob, &[]);
    let rows: Vec<&str> = seen["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        rows.iter().all(|r| !r.contains("alice@example.com")),
        "{rows:?}"
    );
    w.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_non_admin_is_refused_on_every_admin_page_and_a_forged_csrf_token_too() {
    let w = world().await;
    let bob = w.gw.token("bob@example.com").await;
    let seen = browser(&w, "forbidden", &bob, &[]);
    for (path, status) in seen["statuses"].as_object().unwrap() {
        assert_eq!(status, 403, "{path}: {seen}");
    }
    assert_eq!(seen["forged_csrf"], 403, "{seen}");
    assert_eq!(seen["cross_site"], 403, "{seen}");
    let refusals: Vec<_> =
        w.gw.audit_rows()
            .await
            .into_iter()
            .filter(|r| r.subject == "bob@example.com" && r.tool.starts_with("console:"))
            .filter_map(|r| r.reason_code.clone())
            .collect();
    assert_eq!(
        refusals.iter().filter(|c| *c == "not_admin").count(),
        8,
        "{refusals:?}"
    );
    assert_eq!(
        refusals.iter().filter(|c| *c == "csrf_mismatch").count(),
        2,
        "{refusals:?}"
    );
    w.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revoked_token_signs_its_console_session_out() {
    let w = world().await;
    let alice = w.gw.token("alice@example.com").await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let base = w.gw.base.clone();
    let login = http
        .post(format!("{base}/console/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={alice}"))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 303);
    let cookie = login.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    assert!(
        !cookie.contains(&alice[4..]),
        "the token itself is never in the cookie"
    );
    let session = cookie.split(';').next().unwrap().to_owned();
    let me = http
        .get(format!("{base}/console/me"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    let csp = me.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("default-src 'none'"), "{csp}");

    let id = alice.split('_').nth(1).unwrap();
    assert!(mcpgate::tokens::revoke(w.gw.gw.pool(), id).await.unwrap());
    let me = http
        .get(format!("{base}/console/me"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 303, "back to sign-in");
    assert_eq!(me.headers()["location"], "/console/login");
    w.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_operators_other_panels_change_what_they_show() {
    let w = world().await;
    let FlowRun { client, .. } = w.a_flow_makes_one_read().await;

    let seen = browser(&w, "operate", &w.admin_token, &[]);
    // Services: the override is listed and the action's class and source follow it.
    assert!(
        seen["overrides"][0]
            .as_str()
            .unwrap()
            .contains("bigquery.query"),
        "{seen}"
    );
    let action = seen["action_row"].as_str().unwrap();
    assert!(
        action.contains("high_risk") && action.contains("override"),
        "{seen}"
    );
    assert_eq!(
        w.gw.gw
            .catalogs()
            .overrides()
            .get("bigquery.query")
            .map(|r| r.as_str()),
        Some("high_risk")
    );
    // Users: the token created for bob works on /mcp.
    let new_token = seen["new_token"].as_str().unwrap();
    assert!(new_token.starts_with("mgt_"), "{seen}");
    assert!(
        seen["token_rows"][0]
            .as_str()
            .unwrap()
            .contains("bob@example.com"),
        "{seen}"
    );
    let bob = rmcp_connect(&w.gw.url, new_token).await;
    assert!(bob.peer().list_all_tools().await.is_ok());
    bob.cancel().await.ok();
    // Hooks and PII: reloaded (no hook directory: none active).
    assert_eq!(seen["hooks_heading"], "Active hooks (0)");
    // Dashboard: the charts are drawn from the call just made.
    assert_eq!(seen["charts"], 4, "{seen}");
    assert!(seen["bars"].as_u64().unwrap() >= 3, "{seen}");
    assert_eq!(seen["live_grants"], "1");
    assert_ne!(seen["live_sessions"], "0");

    assert_audited_as_admin(
        &w,
        &[
            "console:set_override",
            "console:create_token",
            "console:reload_hooks",
        ],
    )
    .await;
    client.cancel().await.ok();
    w.gw.stop().await;
}

/// A native service people connect with their own account, and nothing else.
const NOTES_CATALOG: &str = r#"
service: notes
auth: bearer
actions:
  - name: list_notes
    description: The person's notes.
    risk: read
    method: GET
    path: /v1/notes
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_person_sees_and_disconnects_their_connected_service() {
    let catalogs = tempfile::tempdir().unwrap();
    std::fs::write(catalogs.path().join("notes.yaml"), NOTES_CATALOG).unwrap();
    let gw = support::TestGateway::start(&format!(
        "catalog_dir: {}\nservices:\n  notes: {{ kind: native, catalog: notes, base_url: \"http://127.0.0.1:9\", oauth: {{ authorize_url: \"https://id.example/authorize\", token_url: \"https://id.example/token\", client_id: gw }} }}\nusers:\n  - email: alice@example.com\n    access: {{ notes: read }}\n  - email: bob@example.com\n    access: {{ notes: read }}\n",
        catalogs.path().display()
    ))
    .await;
    support::store_credential(
        &gw,
        "alice@example.com",
        "notes",
        mcpgate::vault::CredentialKind::Token,
        "alice-notes-token",
    )
    .await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let sign_in = |token: String| {
        let http = http.clone();
        let base = gw.base.clone();
        async move {
            let login = http
                .post(format!("{base}/console/login"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!("token={token}"))
                .send()
                .await
                .unwrap();
            assert_eq!(login.status(), 303);
            login.headers()["set-cookie"]
                .to_str()
                .unwrap()
                .split(';')
                .next()
                .unwrap()
                .to_owned()
        }
    };
    let me = |cookie: String| {
        let http = http.clone();
        let base = gw.base.clone();
        async move {
            http.get(format!("{base}/console/me"))
                .header("cookie", cookie)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    let alice = sign_in(gw.token("alice@example.com").await).await;
    let page = me(alice.clone()).await;
    assert!(
        page.contains("Reconnect") && page.contains("Disconnect"),
        "{page}"
    );
    assert!(page.contains("/connect/notes?ticket="), "{page}");
    let bob = sign_in(gw.token("bob@example.com").await).await;
    let page_of_bob = me(bob).await;
    assert!(page_of_bob.contains("not connected") && !page_of_bob.contains("Disconnect"));

    // Disconnect, with the CSRF token of alice's page.
    let csrf = page
        .split(r#"name="csrf" value=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    let disconnect = |csrf: String| {
        let http = http.clone();
        let base = gw.base.clone();
        let alice = alice.clone();
        async move {
            http.post(format!("{base}/console/me/disconnect"))
                .header("cookie", alice)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!("csrf={csrf}&service=notes"))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(disconnect("forged".into()).await, 403);
    assert_eq!(mcpgate::vault::list(gw.gw.pool()).await.unwrap().len(), 1);
    assert_eq!(disconnect(csrf).await, 303);
    assert!(mcpgate::vault::list(gw.gw.pool()).await.unwrap().is_empty());
    assert!(me(alice).await.contains("not connected"));
    let rows = gw.audit_rows().await;
    assert!(
        rows.iter()
            .any(|r| r.tool == "console:disconnect" && r.subject == "alice@example.com")
    );
    assert!(
        rows.iter()
            .any(|r| r.reason_code.as_deref() == Some("csrf_mismatch"))
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_audit_live_tail_shows_a_new_row_without_a_click() {
    use tokio::io::AsyncBufReadExt;
    let w = world().await;
    let marker = format!("no_such_tool_{}", hex::encode(rand::random::<[u8; 4]>()));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/console/browser.py");
    let mut browser = tokio::process::Command::new(python())
        .arg(script)
        .arg("tail")
        .args([
            "--url",
            &w.gw.base,
            "--token",
            &w.admin_token,
            "--reason",
            &marker,
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(browser.stdout.take().unwrap()).lines();
    let ready = lines.next_line().await.unwrap();
    assert_eq!(
        ready.as_deref(),
        Some("ready"),
        "the browser did not open the tail"
    );
    // A refused call, written after the page was loaded.
    let alice = rmcp_connect(&w.gw.url, &w.gw.token("alice@example.com").await).await;
    assert!(call(&alice, &marker, json!({})).await.is_err());
    let seen: Value = serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
    let status = browser.wait().await.unwrap();
    assert!(status.success(), "the row never appeared in the live tail");
    assert_eq!(seen["refresh"], "3");
    assert!(seen["live"].as_str().unwrap().starts_with("Live"), "{seen}");
    alice.cancel().await.ok();
    w.gw.stop().await;
}
