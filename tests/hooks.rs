//! Policy hooks through the gateway with a real MCP client: every built-in
//! kind, the layering rule, fail-closed conditions, hot reload.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use support::recorder::Recorder;
use support::{TestGateway, call, reason_of, rmcp_connect, text_of};

struct Setup {
    gw: TestGateway,
    jira: Recorder,
    hooks: tempfile::TempDir,
    alice: String,
    admin: String,
}

async fn setup() -> Setup {
    let jira = Recorder::start().await;
    let hooks = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(hooks.path().join("company")).unwrap();
    let gw = TestGateway::start(&format!(
        r#"services:
  jira: {{ kind: mcp, url: "{}" }}
users:
  - email: alice@example.com
    access: {{ jira: high_risk }}
  - email: bob@example.com
    access: {{ jira: high_risk }}
  - email: root@example.com
    admin: true
hooks:
  dir: {}
  reload_poll: 100ms
"#,
        jira.url,
        hooks.path().display()
    ))
    .await;
    let alice = gw.token("alice@example.com").await;
    let admin = gw.token("root@example.com").await;
    Setup {
        gw,
        jira,
        hooks,
        alice,
        admin,
    }
}

impl Setup {
    fn write(&self, relative: &str, text: &str) {
        let path = self.hooks.path().join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    async fn reload(&self) -> (u16, Value) {
        let response = reqwest::Client::new()
            .post(format!("{}/admin/reload", self.gw.base))
            .bearer_auth(&self.admin)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    async fn company(&self, yaml: &str) {
        self.write("company/rules.yaml", yaml);
        let (status, body) = self.reload().await;
        assert_eq!(status, 200, "{body}");
    }

    fn last_received(&self) -> Value {
        self.jira.received().last().unwrap().1.clone()
    }
}

fn post(text: &str) -> Value {
    json!({"action": "post_message", "text": text})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_built_in_kind_does_what_it_says() {
    let s = setup().await;
    let client = rmcp_connect(&s.gw.url, &s.alice).await;

    // deny, with a CEL condition over the arguments.
    s.company("hooks:\n  - name: no-secrets\n    match: { service: jira, action: post_message }\n    when: 'args.text.contains(\"secret\")'\n    kind: deny\n    message: no secrets in tickets\n").await;
    let e = call(&client, "jira_write_actions", post("the secret is 42"))
        .await
        .unwrap_err();
    assert_eq!(reason_of(&e), "hook_denied");
    call(&client, "jira_write_actions", post("hello"))
        .await
        .unwrap();
    let row =
        s.gw.audit_rows()
            .await
            .into_iter()
            .find(|r| r.reason_code.as_deref() == Some("hook_denied"))
            .unwrap();
    assert!(
        row.reason
            .as_deref()
            .unwrap()
            .contains("hook 'no-secrets' (company)")
    );

    // require_confirmation: the two-step preview instead of running.
    let before = s.jira.count();
    s.company("hooks:\n  - name: confirm-posts\n    match: { action: post_message }\n    kind: require_confirmation\n").await;
    let preview = call(&client, "jira_write_actions", post("hi"))
        .await
        .unwrap();
    assert_eq!(
        preview.structured_content.unwrap()["confirmation_required"],
        true
    );
    assert_eq!(s.jira.count(), before);

    // endpoint_allowlist.
    s.company("hooks:\n  - name: channels\n    kind: endpoint_allowlist\n    field: channel\n    allow: ['#finance', '#ops-*']\n").await;
    let e = call(
        &client,
        "jira_write_actions",
        json!({"action": "post_message", "text": "x", "channel": "#random"}),
    )
    .await
    .unwrap_err();
    assert_eq!(reason_of(&e), "endpoint_not_allowed");
    call(
        &client,
        "jira_write_actions",
        json!({"action": "post_message", "text": "x", "channel": "#ops-alerts"}),
    )
    .await
    .unwrap();

    // validate: required, pattern, enum.
    s.company("hooks:\n  - name: shape\n    match: { action: post_message }\n    kind: validate\n    required: [priority]\n    patterns: { text: '^[A-Z]' }\n    enum: { priority: [low, high] }\n").await;
    for (args, ok) in [
        (
            json!({"action": "post_message", "text": "Up", "priority": "low"}),
            true,
        ),
        (json!({"action": "post_message", "text": "Up"}), false),
        (
            json!({"action": "post_message", "text": "up", "priority": "low"}),
            false,
        ),
        (
            json!({"action": "post_message", "text": "Up", "priority": "urgent"}),
            false,
        ),
    ] {
        let answer = call(&client, "jira_write_actions", args.clone()).await;
        assert_eq!(answer.is_ok(), ok, "{args}");
        if let Err(e) = answer {
            assert_eq!(reason_of(&e), "hook_validation_failed");
        }
    }

    // set_default keeps what the caller sent; inject overrides it.
    s.company("hooks:\n  - name: default-channel\n    kind: set_default\n    values: { channel: '#general', meta.source: mcpgate }\n").await;
    call(&client, "jira_write_actions", post("a"))
        .await
        .unwrap();
    assert_eq!(s.last_received()["channel"], "#general");
    assert_eq!(s.last_received()["meta"]["source"], "mcpgate");
    call(
        &client,
        "jira_write_actions",
        json!({"action": "post_message", "text": "a", "channel": "#mine"}),
    )
    .await
    .unwrap();
    assert_eq!(s.last_received()["channel"], "#mine");
    s.company(
        "hooks:\n  - name: audit-channel\n    kind: inject\n    values: { channel: '#audit' }\n",
    )
    .await;
    call(
        &client,
        "jira_write_actions",
        json!({"action": "post_message", "text": "a", "channel": "#mine"}),
    )
    .await
    .unwrap();
    assert_eq!(s.last_received()["channel"], "#audit");

    // markdown_to_adf and normalize_text rewrite what reaches the service.
    s.company("hooks:\n  - name: adf\n    kind: markdown_to_adf\n    fields: [text]\n")
        .await;
    call(&client, "jira_write_actions", post("**Down** since 9:00"))
        .await
        .unwrap();
    let adf = s.last_received()["text"].clone();
    assert_eq!(adf["type"], "doc");
    assert_eq!(
        adf["content"][0]["content"][0]["marks"][0]["type"],
        "strong"
    );
    s.company("hooks:\n  - name: newlines\n    kind: normalize_text\n    fields: [text]\n")
        .await;
    call(&client, "jira_write_actions", post("line one\\nline two"))
        .await
        .unwrap();
    assert_eq!(s.last_received()["text"], "line one\nline two");

    // warn lets the call run and says so.
    s.company("hooks:\n  - name: careful\n    match: { action: query }\n    kind: warn\n    message: queries are logged\n").await;
    let answer = call(
        &client,
        "jira_read_actions",
        json!({"action": "query", "sql": "select 1"}),
    )
    .await
    .unwrap();
    assert!(text_of(&answer).contains("queries are logged"));

    // cap_response (post) with a visible marker.
    s.company("hooks:\n  - name: small\n    phase: post\n    match: { action: query }\n    kind: cap_response\n    max_bytes: 8\n").await;
    let answer = call(
        &client,
        "jira_read_actions",
        json!({"action": "query", "sql": "select 1"}),
    )
    .await
    .unwrap();
    let text = text_of(&answer);
    assert!(text.starts_with("query #"), "{text}");
    assert!(
        text.contains("[truncated by mcpgate hook 'small'"),
        "{text}"
    );

    // A post-phase deny withholds what the upstream answered.
    s.company("hooks:\n  - name: withhold\n    phase: post\n    when: 'result.content[0].text.contains(\"query\")'\n    kind: deny\n    message: result withheld\n").await;
    let ran = s.jira.count();
    let e = call(
        &client,
        "jira_read_actions",
        json!({"action": "query", "sql": "select 1"}),
    )
    .await
    .unwrap_err();
    assert_eq!(reason_of(&e), "hook_denied");
    assert_eq!(s.jira.count(), ran + 1, "it ran, the answer was withheld");
    client.cancel().await.unwrap();
    s.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn user_hooks_only_narrow_and_only_for_their_user() {
    let s = setup().await;
    s.company(
        "hooks:\n  - name: audit-channel\n    kind: inject\n    values: { channel: '#audit' }\n",
    )
    .await;
    // A user may not loosen: `inject` is refused, the previous set stays.
    s.write(
        "users/alice@example.com/mine.yaml",
        "hooks:\n  - name: my-channel\n    kind: inject\n    values: { channel: '#mine' }\n",
    );
    let (status, body) = s.reload().await;
    assert_eq!(status, 400);
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("mine.yaml:2:") && message.contains("may only narrow"),
        "{message}"
    );
    let alice = rmcp_connect(&s.gw.url, &s.alice).await;
    call(&alice, "jira_write_actions", post("x")).await.unwrap();
    assert_eq!(s.last_received()["channel"], "#audit");

    // Defaults cannot undo company injection; a user deny binds only its user.
    s.write("users/alice@example.com/mine.yaml", "hooks:\n  - name: my-default\n    kind: set_default\n    values: { channel: '#mine' }\n  - name: no-drops\n    match: { action: drop_table }\n    kind: deny\n    message: not me\n");
    assert_eq!(s.reload().await.0, 200);
    call(&alice, "jira_write_actions", post("x")).await.unwrap();
    assert_eq!(s.last_received()["channel"], "#audit");
    let e = call(
        &alice,
        "jira_write_actions",
        json!({"action": "drop_table", "table": "t"}),
    )
    .await
    .unwrap_err();
    assert_eq!(reason_of(&e), "hook_denied");
    let bob = rmcp_connect(&s.gw.url, &s.gw.token("bob@example.com").await).await;
    // Bob is not bound by Alice's hook (his drop asks for confirmation, as high_risk does).
    let answer = call(
        &bob,
        "jira_write_actions",
        json!({"action": "drop_table", "table": "t"}),
    )
    .await
    .unwrap();
    assert_eq!(
        answer.structured_content.unwrap()["confirmation_required"],
        true
    );
    alice.cancel().await.unwrap();
    bob.cancel().await.unwrap();
    s.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failing_conditions_fail_closed_for_the_company_and_are_skipped_for_users() {
    let s = setup().await;
    let client = rmcp_connect(&s.gw.url, &s.alice).await;
    s.write("users/alice@example.com/broken.yaml", "hooks:\n  - name: broken-user\n    when: 'args.nope.deeper == 1'\n    kind: deny\n    message: never\n");
    assert_eq!(s.reload().await.0, 200);
    call(&client, "jira_write_actions", post("x"))
        .await
        .unwrap();
    s.company("hooks:\n  - name: broken-company\n    when: 'args.nope.deeper == 1'\n    kind: warn\n    message: never\n").await;
    let e = call(&client, "jira_write_actions", post("x"))
        .await
        .unwrap_err();
    assert_eq!(reason_of(&e), "hook_failed");
    // A condition that is not CEL is rejected at load, with its line.
    s.write(
        "company/rules.yaml",
        "hooks:\n  - name: bad\n    when: 'args.text ==== 1'\n    kind: deny\n    message: x\n",
    );
    let (status, body) = s.reload().await;
    assert_eq!(status, 400);
    assert!(
        body["message"].as_str().unwrap().contains("rules.yaml:3:"),
        "{body}"
    );
    client.cancel().await.unwrap();
    s.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reloads_under_load_never_show_a_half_loaded_set() {
    let s = setup().await;
    let set = |version: &str| {
        format!(
            "hooks:\n  - name: a\n    kind: inject\n    values: {{ first: {version} }}\n  - name: b\n    kind: inject\n    values: {{ second: {version} }}\n"
        )
    };
    s.company(&set("v1")).await;
    let clients: Vec<_> =
        futures::future::join_all((0..4).map(|_| rmcp_connect(&s.gw.url, &s.alice))).await;
    let clients = std::sync::Arc::new(clients);
    let mut tasks = Vec::new();
    for i in 0..200usize {
        let clients = clients.clone();
        tasks.push(tokio::spawn(async move {
            call(&clients[i % 4], "jira_write_actions", post("x"))
                .await
                .unwrap();
        }));
    }
    for round in 0..20 {
        s.company(&set(if round % 2 == 0 { "v2" } else { "v1" }))
            .await;
    }
    for task in tasks {
        task.await.unwrap();
    }
    let received = s.jira.received();
    assert_eq!(received.len(), 200);
    for (_, args) in received {
        assert_eq!(
            args["first"], args["second"],
            "a call saw two different hook sets: {args}"
        );
    }
    s.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_changed_file_is_picked_up_without_asking() {
    let s = setup().await;
    let client = rmcp_connect(&s.gw.url, &s.alice).await;
    call(&client, "jira_write_actions", post("x"))
        .await
        .unwrap();
    s.write(
        "company/late.yaml",
        "hooks:\n  - name: late\n    kind: deny\n    message: closed for maintenance\n",
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match call(&client, "jira_write_actions", post("x")).await {
            Err(e) => {
                assert_eq!(reason_of(&e), "hook_denied");
                break;
            }
            Ok(_) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the watcher did not reload"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    // A broken edit keeps the last good set.
    std::fs::write(s.hooks.path().join("company/late.yaml"), "hooks: [ {").unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let e = call(&client, "jira_write_actions", post("x"))
        .await
        .unwrap_err();
    assert_eq!(reason_of(&e), "hook_denied");
    assert!(Path::new(&s.hooks.path().join("company/late.yaml")).exists());
    client.cancel().await.unwrap();
    s.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn people_manage_their_own_hooks_from_their_client() {
    let s = setup().await;
    let alice = rmcp_connect(&s.gw.url, &s.alice).await;
    let bob = rmcp_connect(&s.gw.url, &s.gw.token("bob@example.com").await).await;
    let tools: Vec<String> = alice
        .peer()
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    assert!(tools.contains(&"gateway_my_hooks".to_owned()));

    let added = call(
        &alice,
        "gateway_my_hooks",
        json!({"op": "add", "hook": {"name": "no-posts-to-random", "kind": "endpoint_allowlist", "field": "channel", "allow": ["#team-*"]}}),
    )
    .await
    .unwrap();
    assert!(text_of(&added).contains("added"));
    let e = call(
        &alice,
        "jira_write_actions",
        json!({"action": "post_message", "text": "x", "channel": "#random"}),
    )
    .await
    .unwrap_err();
    assert_eq!(reason_of(&e), "endpoint_not_allowed");
    call(
        &bob,
        "jira_write_actions",
        json!({"action": "post_message", "text": "x", "channel": "#random"}),
    )
    .await
    .unwrap();
    let listed = call(&alice, "gateway_my_hooks", json!({"op": "list"}))
        .await
        .unwrap();
    assert_eq!(
        listed.structured_content.unwrap()["hooks"][0]["name"],
        "no-posts-to-random"
    );

    // Loosening is refused, exactly as in a file.
    let e = call(
        &alice,
        "gateway_my_hooks",
        json!({"op": "add", "hook": {"name": "sneaky", "kind": "inject", "values": {"channel": "#x"}}}),
    )
    .await
    .unwrap_err();
    assert_eq!(reason_of(&e), "invalid_hook");

    call(
        &alice,
        "gateway_my_hooks",
        json!({"op": "remove", "name": "no-posts-to-random"}),
    )
    .await
    .unwrap();
    call(
        &alice,
        "jira_write_actions",
        json!({"action": "post_message", "text": "x", "channel": "#random"}),
    )
    .await
    .unwrap();
    let rows = s.gw.audit_rows().await;
    let changes: Vec<String> = rows
        .iter()
        .filter(|r| r.tool == "gateway_my_hooks")
        .map(|r| {
            format!(
                "{}:{}:{}",
                r.subject,
                r.action.as_deref().unwrap_or("-"),
                r.decision
            )
        })
        .collect();
    assert_eq!(
        changes,
        vec![
            "alice@example.com:add:allowed",
            "alice@example.com:list:allowed",
            "alice@example.com:add:refused",
            "alice@example.com:remove:allowed"
        ]
    );
    alice.cancel().await.unwrap();
    bob.cancel().await.unwrap();
    s.gw.stop().await;
}
