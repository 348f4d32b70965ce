//! Resources, resource templates and prompts of upstream MCP servers through
//! the gateway: namespaced per service, governed like reads, PII
//! pseudonymized, in both protocol eras, with real peers on both sides
//! (server-everything and a Python SDK server behind, the Python SDK and
//! rmcp clients in front).

mod support;

use std::time::Duration;

use rmcp::ServiceExt;
use rmcp::model::{ResourceUpdatedNotificationParam, SubscribeRequestParams};
use rmcp::service::{NotificationContext, RoleClient};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};
use support::*;

const ERAS: [(&str, &str); 2] = [("auto", "2026-07-28"), ("legacy", "2025-11-25")];

fn pii_py() -> String {
    repo()
        .join("tests/peers/pii_server.py")
        .display()
        .to_string()
}

/// server-everything and a Python SDK server with personal data, behind the
/// gateway; alice reads both, bob neither.
async fn gateway() -> TestGateway {
    gateway_with("").await
}

/// [`gateway`], with `extra` YAML at the end of its config.
async fn gateway_with(extra: &str) -> TestGateway {
    TestGateway::start(&format!(
        r#"services:
  everything:
    kind: mcp
    command: ["node", "{everything}", "stdio"]
  people:
    kind: mcp
    command: ["{python}", "{pii}"]
  time:
    kind: mcp
    command: ["{python}", "-m", "mcp_server_time"]
users:
  - email: alice@example.com
    access: {{ everything: write, people: write }}
  - email: bob@example.com
    access: {{ time: read }}
{extra}"#,
        everything = everything_js(),
        python = python(),
        pii = pii_py(),
    ))
    .await
}

const TEXT_TEMPLATE: &str = "mcpgate://everything/demo://resource/dynamic/text/{resourceId}";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resources_and_prompts_are_namespaced_per_service_and_read_in_both_eras() {
    let gw = gateway().await;
    let alice = gw.token("alice@example.com").await;
    for (mode, protocol) in ERAS {
        let out = gw
            .py_client(
                &alice,
                mode,
                json!([
                    {"op": "resources"},
                    {"op": "templates"},
                    {"op": "prompts"},
                    {"op": "read", "uri": "mcpgate://everything/demo://resource/dynamic/text/7"},
                    {"op": "prompt", "name": "everything.args-prompt", "args": {"city": "Paris", "state": "TX"}},
                    {"op": "complete", "ref": {"type": "ref/prompt", "name": "everything.completable-prompt"},
                     "argument": {"name": "department", "value": "Eng"}},
                    {"op": "complete", "ref": {"type": "ref/prompt", "name": "everything.completable-prompt"},
                     "argument": {"name": "name", "value": "A"}, "context": {"department": "Engineering"}},
                    {"op": "complete", "ref": {"type": "ref/resource", "uri": TEXT_TEMPLATE},
                     "argument": {"name": "resourceId", "value": "5"}},
                    {"op": "read", "uri": "mcpgate://everything/demo://resource/dynamic/text/0"},
                    {"op": "prompt", "name": "everything.no-such-prompt"},
                    {"op": "read", "uri": "demo://resource/dynamic/text/7"},
                ]),
            )
            .await;
        assert_eq!(out["protocol"], protocol);
        let r = &out["results"];
        let resources: Vec<&str> = r[0]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(
            resources.contains(&"mcpgate://people/people://marie")
                && resources
                    .iter()
                    .any(|u| u.starts_with("mcpgate://everything/demo://resource/static/document/")),
            "{mode}: {resources:?}"
        );
        assert!(
            resources
                .iter()
                .all(|u| u.starts_with("mcpgate://everything/")
                    || u.starts_with("mcpgate://people/")),
            "{mode}: {resources:?}"
        );
        let templates = r[1]["templates"].as_array().unwrap();
        assert!(
            templates.contains(&json!(TEXT_TEMPLATE)),
            "{mode}: {templates:?}"
        );
        assert!(
            templates.contains(&json!("mcpgate://people/people://by-mail/{address}")),
            "{mode}: {templates:?}"
        );
        let prompts = r[2]["prompts"].as_array().unwrap();
        for name in [
            "everything.simple-prompt",
            "everything.args-prompt",
            "everything.completable-prompt",
            "people.write_to",
        ] {
            assert!(
                prompts.contains(&json!(name)),
                "{mode}: {name} in {prompts:?}"
            );
        }
        // A template's expansion reads the upstream's resource; its contents
        // name the URI the client asked for.
        let contents = &r[3]["contents"][0];
        assert_eq!(
            contents["uri"], "mcpgate://everything/demo://resource/dynamic/text/7",
            "{mode}: {r}"
        );
        assert!(
            contents["text"]
                .as_str()
                .unwrap()
                .starts_with("Resource 7: This is a plaintext resource"),
            "{mode}: {contents}"
        );
        assert_eq!(
            r[4]["messages"][0]["text"], "What's weather in Paris, TX?",
            "{mode}: {r}"
        );
        assert_eq!(r[5]["values"], json!(["Engineering"]), "{mode}");
        assert_eq!(
            r[6]["values"],
            json!(["Alice"]),
            "{mode}: the context reached the upstream"
        );
        assert_eq!(r[7]["values"], json!(["5"]), "{mode}");
        // The upstream's own error for a missing resource reaches the client.
        assert!(r[8]["error"]["message"].is_string(), "{mode}: {}", r[8]);
        assert_eq!(r[9]["error"]["data"]["reason"], "unknown_prompt", "{mode}");
        assert_eq!(
            r[10]["error"]["data"]["reason"], "unknown_resource",
            "{mode}"
        );
    }
    // Each read, get and completion is one row: a read of the service, for
    // alice, by alice; refusals name their reason.
    let rows = gw.audit_rows().await;
    let of = |tool: &str| -> Vec<_> { rows.iter().filter(|r| r.tool == tool).collect() };
    let reads = of("resources/read");
    let allowed: Vec<_> = reads.iter().filter(|r| r.decision == "allowed").collect();
    assert_eq!(allowed.len(), 2, "{reads:#?}");
    for row in &allowed {
        assert_eq!(row.service.as_deref(), Some("everything"));
        assert_eq!(
            row.action.as_deref(),
            Some("demo://resource/dynamic/text/7")
        );
        assert_eq!(row.risk.map(|r| r.as_str()), Some("read"));
        assert_eq!(
            (row.subject.as_str(), row.actor.as_str()),
            ("alice@example.com", "alice@example.com")
        );
        assert_eq!(row.upstream_status.as_deref(), Some("ok"));
        assert!(row.completed_at.is_some());
    }
    assert_eq!(
        reads.iter().filter(|r| r.decision == "failed").count(),
        2,
        "the upstream's missing resource: {reads:#?}"
    );
    assert_eq!(
        reads
            .iter()
            .filter(|r| r.reason_code.as_deref() == Some("unknown_resource"))
            .count(),
        2
    );
    let gets = of("prompts/get");
    assert_eq!(gets.iter().filter(|r| r.decision == "allowed").count(), 2);
    assert_eq!(
        gets.iter()
            .filter(|r| r.reason_code.as_deref() == Some("unknown_prompt"))
            .count(),
        2
    );
    assert_eq!(
        of("completion/complete")
            .iter()
            .filter(|r| r.decision == "allowed" && r.service.as_deref() == Some("everything"))
            .count(),
        6
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_user_without_access_sees_no_resources_or_prompts_and_is_refused_with_a_row() {
    let gw = gateway().await;
    let bob = gw.token("bob@example.com").await;
    for (mode, _) in ERAS {
        let out = gw
            .py_client(
                &bob,
                mode,
                json!([
                    {"op": "resources"},
                    {"op": "templates"},
                    {"op": "prompts"},
                    {"op": "read", "uri": "mcpgate://people/people://marie"},
                    {"op": "prompt", "name": "everything.simple-prompt"},
                    {"op": "complete", "ref": {"type": "ref/prompt", "name": "everything.completable-prompt"},
                     "argument": {"name": "department", "value": "E"}},
                ]),
            )
            .await;
        let r = &out["results"];
        assert_eq!(r[0]["resources"], json!([]), "{mode}");
        assert_eq!(r[1]["templates"], json!([]), "{mode}");
        assert_eq!(r[2]["prompts"], json!([]), "{mode}");
        for i in 3..6 {
            assert_eq!(
                r[i]["error"]["data"]["reason"], "service_not_allowed",
                "{mode}: {}",
                r[i]
            );
        }
    }
    let rows = gw.audit_rows().await;
    let refused: Vec<_> = rows
        .iter()
        .filter(|r| r.reason_code.as_deref() == Some("service_not_allowed"))
        .collect();
    assert_eq!(refused.len(), 6, "{rows:#?}");
    for row in refused {
        assert_eq!(row.decision, "refused");
        assert_eq!(row.subject, "bob@example.com");
        assert!(
            row.reason.as_deref().unwrap().contains("no access"),
            "{row:?}"
        );
        assert!(
            ["resources/read", "prompts/get", "completion/complete"].contains(&row.tool.as_str()),
            "{row:?}"
        );
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn personal_data_in_resources_and_prompts_is_pseudonymized_and_rehydrated() {
    let gw = gateway().await;
    let alice = gw.token("alice@example.com").await;
    for (mode, _) in ERAS {
        let out = gw
            .py_client(
                &alice,
                mode,
                json!([
                    {"op": "read", "uri": "mcpgate://people/people://marie"},
                    {"op": "prompt", "name": "people.write_to", "args": {"recipient": "pierre.curie@example.com"}},
                ]),
            )
            .await;
        let r = &out["results"];
        let text = r[0]["contents"][0]["text"].as_str().unwrap();
        assert!(
            !text.contains("marie.curie@example.com") && !text.contains("Marie Curie"),
            "{mode}: {text}"
        );
        let doc: Value = serde_json::from_str(text).unwrap();
        let email = doc["user"]["emailAddress"].as_str().unwrap().to_owned();
        assert!(email.ends_with("@pseudonym.invalid"), "{email}");
        assert!(
            doc["user"]["displayName"]
                .as_str()
                .unwrap()
                .starts_with("<PERSON_")
        );
        assert!(
            doc["note"].as_str().unwrap().contains(&email),
            "the same pseudonym: {doc}"
        );
        let prompt = r[1]["messages"][0]["text"].as_str().unwrap();
        assert!(
            !prompt.contains("pierre.curie@example.com") && !prompt.contains("marie.curie@"),
            "{mode}: {prompt}"
        );
        assert!(prompt.contains(&email), "{mode}: {prompt}");
        let pierre = prompt
            .split_whitespace()
            .find(|w| w.contains("@pseudonym.invalid") && !w.contains(&email))
            .unwrap()
            .trim_end_matches(',')
            .to_owned();

        // The pseudonyms go back in: the upstream gets the real address (and
        // its answer, which repeats it, is pseudonymized again).
        let uri = format!("mcpgate://people/people://by-mail/{pierre}");
        let out = gw
            .py_client(
                &alice,
                mode,
                json!([
                    {"op": "prompt", "name": "people.write_to", "args": {"recipient": pierre}},
                    {"op": "read", "uri": uri},
                    {"op": "complete", "ref": {"type": "ref/prompt", "name": "people.write_to"},
                     "argument": {"name": "recipient", "value": pierre}, "context": {"cc": pierre}},
                ]),
            )
            .await;
        let r = &out["results"];
        assert_eq!(
            r[0]["messages"][0]["text"].as_str().unwrap(),
            format!("Write a note to {pierre}, copying {email}."),
            "{mode}"
        );
        let received: Value =
            serde_json::from_str(r[1]["contents"][0]["text"].as_str().unwrap()).unwrap();
        assert_eq!(received["received"], pierre, "{mode}: {r}");
        assert_eq!(
            r[1]["contents"][0]["uri"], uri,
            "{mode}: no real value in the URI"
        );
        // The completion's value and context went up real and came back as
        // the same pseudonyms; the upstream's own suggestion is one too.
        assert_eq!(
            r[2]["values"],
            json!([pierre, pierre, email]),
            "{mode}: {r}"
        );
    }
    let rows = gw.audit_rows().await;
    let rehydrated: Vec<_> = rows
        .iter()
        .filter(|r| {
            r.pii_rehydrated == Some(1)
                && r.service.as_deref() == Some("people")
                && r.tool != "completion/complete"
        })
        .collect();
    assert_eq!(rehydrated.len(), 4, "{rows:#?}");
    let completions = rows
        .iter()
        .filter(|r| r.tool == "completion/complete" && r.pii_rehydrated == Some(1))
        .count();
    assert_eq!(
        completions, 2,
        "one pseudonym (in value and context), in each era"
    );
    // A pseudonym the gateway never issued is refused, never sent on.
    let out = gw
        .py_client(
            &alice,
            "auto",
            json!([{"op": "prompt", "name": "people.write_to",
                    "args": {"recipient": "person-000000000000@pseudonym.invalid"}}]),
        )
        .await;
    assert_eq!(
        out["results"][0]["error"]["data"]["reason"],
        "unknown_pseudonym"
    );
    gw.stop().await;
}

/// An rmcp client that hands every resource update (its URI) and list
/// change (`prompts`, `resources`) to a channel.
struct Updates(tokio::sync::mpsc::UnboundedSender<String>);

impl rmcp::ClientHandler for Updates {
    async fn on_resource_updated(
        &self,
        params: ResourceUpdatedNotificationParam,
        _context: NotificationContext<RoleClient>,
    ) {
        let _ = self.0.send(params.uri);
    }

    async fn on_prompt_list_changed(&self, _context: NotificationContext<RoleClient>) {
        let _ = self.0.send("prompts".into());
    }

    async fn on_resource_list_changed(&self, _context: NotificationContext<RoleClient>) {
        let _ = self.0.send("resources".into());
    }
}

/// An initialize-era rmcp client of `gw` whose notifications arrive on the receiver.
async fn listening_client(
    gw: &TestGateway,
    token: &str,
) -> (
    rmcp::service::RunningService<RoleClient, Updates>,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let config = StreamableHttpClientTransportConfig::with_uri(gw.url.as_str()).auth_header(token);
    let client = Updates(tx)
        .serve(StreamableHttpClientTransport::from_config(config))
        .await
        .unwrap();
    (client, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn changed_prompt_and_resource_lists_are_relayed_to_those_who_may_read_them_in_both_eras() {
    let gw = gateway().await;
    let alice = gw.token("alice@example.com").await;
    let (alice_client, mut alice_hears) = listening_client(&gw, &alice).await;
    let (bob_client, mut bob_hears) =
        listening_client(&gw, &gw.token("bob@example.com").await).await;
    ok(
        &rmcp_connect(&gw.url, &alice).await,
        "people_write_actions",
        json!({"action": "add_prompt", "name": "fresh"}),
    )
    .await;
    let mut heard = Vec::new();
    for _ in 0..2 {
        let one = tokio::time::timeout(Duration::from_secs(15), alice_hears.recv())
            .await
            .expect("list_changed within 15 s");
        heard.extend(one);
    }
    heard.sort();
    assert_eq!(heard, ["prompts", "resources"]);
    // The relisted prompts and resources are published when the change is told.
    let prompts = alice_client.peer().list_all_prompts().await.unwrap();
    assert!(
        prompts.iter().any(|p| p.name == "people.fresh"),
        "{prompts:?}"
    );
    let resources = alice_client.peer().list_all_resources().await.unwrap();
    assert!(
        resources
            .iter()
            .any(|r| r.uri == "mcpgate://people/notes://fresh"),
        "{resources:?}"
    );
    // 2026-07-28: on a subscriptions/listen stream.
    let out = gw
        .py_client(
            &alice,
            "auto",
            json!([{"op": "listen", "prompts": true,
                    "call": {"tool": "people_write_actions", "args": {"action": "add_prompt", "name": "fresher"}}},
                   {"op": "prompts"}]),
        )
        .await;
    assert_eq!(out["results"][0]["event"], "PromptsListChanged", "{out}");
    assert!(
        out["results"][1]["prompts"]
            .as_array()
            .unwrap()
            .contains(&json!("people.fresher")),
        "{out}"
    );
    // Bob may not read the service: he was told nothing (his relay saw the
    // same change as alice's, which has long been delivered).
    assert!(bob_hears.try_recv().is_err());
    alice_client.cancel().await.unwrap();
    bob_client.cancel().await.unwrap();
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[allow(deprecated)] // resources/subscribe: the initialize era's way
async fn resource_updates_reach_the_subscribers_in_both_eras() {
    let gw = gateway().await;
    let token = gw.token("alice@example.com").await;
    let uri = "mcpgate://everything/demo://resource/static/document/architecture.md";
    // Initialize era: resources/subscribe, updates on the session's stream.
    let (client, mut rx) = listening_client(&gw, &token).await;
    client
        .peer()
        .subscribe(SubscribeRequestParams::new(uri))
        .await
        .unwrap();
    ok(
        &rmcp_connect(&gw.url, &token).await,
        "everything_write_actions",
        json!({"action": "toggle-subscriber-updates"}),
    )
    .await;
    let updated = tokio::time::timeout(Duration::from_secs(15), rx.recv())
        .await
        .expect("an update within 15 s")
        .unwrap();
    assert_eq!(updated, uri);

    // 2026-07-28: subscriptions/listen names the resource; the upstream keeps
    // sending updates every 5 s while anyone holds the subscription.
    let out = gw
        .py_client(&token, "auto", json!([{"op": "listen", "uris": [uri]}]))
        .await;
    assert_eq!(out["results"][0]["updated"], uri, "{out}");

    // Someone without access subscribes to nothing, and the refusal is a row.
    let bob = gw.token("bob@example.com").await;
    let bob_client = rmcp_connect(&gw.url, &bob).await;
    let error = bob_client
        .peer()
        .subscribe(SubscribeRequestParams::new(uri))
        .await
        .unwrap_err();
    assert_eq!(reason_of(&error), "service_not_allowed");
    let rows = gw.audit_rows().await;
    assert!(rows.iter().any(|r| r.tool == "resources/subscribe"
        && r.subject == "bob@example.com"
        && r.decision == "refused"));
    assert!(rows.iter().any(|r| r.tool == "resources/subscribe"
        && r.subject == "alice@example.com"
        && r.decision == "allowed"));
    client.cancel().await.unwrap();
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn company_hooks_govern_reads_of_resources_and_prompts_too() {
    let hooks = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(hooks.path().join("company")).unwrap();
    std::fs::write(
        hooks.path().join("company/people.yaml"),
        r#"hooks:
  - name: no-people-documents
    match: { service: people, tool: "resources/read" }
    kind: deny
    message: People documents stay in the HR system
  - name: prompts-name-recipients
    match: { service: people, tool: "prompts/get" }
    kind: validate
    required: [recipient]
"#,
    )
    .unwrap();
    let gw = gateway_with(&format!("hooks:\n  dir: {}\n", hooks.path().display())).await;
    let alice = gw.token("alice@example.com").await;
    let out = gw
        .py_client(
            &alice,
            "auto",
            json!([
                {"op": "read", "uri": "mcpgate://people/people://marie"},
                {"op": "prompt", "name": "people.write_to", "args": {}},
                {"op": "prompt", "name": "people.write_to", "args": {"recipient": "the team"}},
                {"op": "read", "uri": "mcpgate://everything/demo://resource/dynamic/text/1"},
            ]),
        )
        .await;
    let r = &out["results"];
    assert_eq!(r[0]["error"]["data"]["reason"], "hook_denied", "{r}");
    assert!(
        r[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("People documents stay in the HR system")
    );
    assert_eq!(
        r[1]["error"]["data"]["reason"], "hook_validation_failed",
        "{r}"
    );
    assert!(
        r[2]["messages"][0]["text"]
            .as_str()
            .unwrap()
            .contains("the team"),
        "{r}"
    );
    assert!(
        r[3]["contents"].is_array(),
        "other services are untouched: {r}"
    );
    let rows = gw.audit_rows().await;
    assert!(rows.iter().any(|row| row.tool == "resources/read"
        && row.reason_code.as_deref() == Some("hook_denied")
        && row.service.as_deref() == Some("people")));
    gw.stop().await;
}
