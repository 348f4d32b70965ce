//! Argument-aware classification and the headless write policy, through the
//! gateway with a real MCP client.

mod support;

use serde_json::json;
use support::recorder::Recorder;
use support::{TestGateway, call, reason_of, rmcp_connect};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_arguments_decide_where_the_endpoint_lies() {
    let bigquery = Recorder::start().await;
    let slack = Recorder::start().await;
    let gw = TestGateway::start(&format!(
        r##"services:
  bigquery: {{ kind: mcp, url: "{}" }}
  slack: {{ kind: mcp, url: "{}" }}
policy:
  confirm: ["slack.post_message"]
  headless_confirm: allow
  classify:
    - {{ match: "bigquery.query", sql: sql }}
    - {{ match: "slack.post_message", field: channel, allow: ["#finance", "#ops-*"], otherwise: high_risk }}
users:
  - email: alice@example.com
    access: {{ bigquery: high_risk, slack: high_risk }}
  - email: bob@example.com
    access: {{ bigquery: read }}
  - email: flows@example.com
    service_account: true
    access: {{ slack: high_risk }}
"##,
        bigquery.url, slack.url
    ))
    .await;
    let bob = rmcp_connect(&gw.url, &gw.token("bob@example.com").await).await;
    let alice = rmcp_connect(&gw.url, &gw.token("alice@example.com").await).await;
    let flows = rmcp_connect(&gw.url, &gw.token("flows@example.com").await).await;
    let query = |sql: &str| json!({"action": "query", "sql": sql});

    // A read is a read; DML through the same endpoint is not.
    call(&bob, "bigquery_read_actions", query("select 1"))
        .await
        .unwrap();
    let e = call(
        &bob,
        "bigquery_read_actions",
        query("delete from ledger where true"),
    )
    .await
    .unwrap_err();
    assert_eq!(reason_of(&e), "risk_not_allowed");
    let row = gw
        .audit_rows()
        .await
        .into_iter()
        .find(|r| r.reason_code.as_deref() == Some("risk_not_allowed"))
        .unwrap();
    assert_eq!(row.risk.map(|r| r.as_str()), Some("high_risk"));
    assert!(
        row.reason
            .as_deref()
            .unwrap()
            .contains("sql: the SQL is destructive")
    );

    call(
        &alice,
        "bigquery_read_actions",
        query("insert into t values (1)"),
    )
    .await
    .unwrap();
    let answer = call(
        &alice,
        "bigquery_read_actions",
        query("select 1; drop table ledger"),
    )
    .await
    .unwrap();
    assert_eq!(
        answer.structured_content.unwrap()["confirmation_required"],
        true
    );
    assert_eq!(bigquery.count(), 2, "the DROP waits for the human");

    // A post outside the channel allow-list becomes high_risk.
    let post = |channel: &str| json!({"action": "post_message", "text": "x", "channel": channel});
    let answer = call(&alice, "slack_write_actions", post("#random"))
        .await
        .unwrap();
    let preview = answer.structured_content.unwrap();
    assert_eq!(
        (
            preview["confirmation_required"].clone(),
            preview["risk"].clone()
        ),
        (json!(true), json!("high_risk"))
    );

    // Headless: the listed write runs under `headless_confirm: allow`; high_risk never does.
    call(&flows, "slack_write_actions", post("#finance"))
        .await
        .unwrap();
    let e = call(&flows, "slack_write_actions", post("#random"))
        .await
        .unwrap_err();
    assert_eq!(reason_of(&e), "headless_cannot_confirm");
    assert_eq!(slack.count(), 1);
    for client in [bob, alice, flows] {
        client.cancel().await.unwrap();
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_admin_override_reclassifies_an_action_at_once() {
    let bigquery = Recorder::start().await;
    let gw = TestGateway::start(&format!(
        "services:\n  bigquery: {{ kind: mcp, url: \"{}\" }}\nusers:\n  - email: bob@example.com\n    access: {{ bigquery: write }}\n  - email: root@example.com\n    admin: true\n",
        bigquery.url
    ))
    .await;
    let admin = gw.token("root@example.com").await;
    let bob = rmcp_connect(&gw.url, &gw.token("bob@example.com").await).await;
    call(
        &bob,
        "bigquery_read_actions",
        json!({"action": "query", "sql": "select 1"}),
    )
    .await
    .unwrap();

    let http = reqwest::Client::new();
    let url = format!("{}/admin/api/policy/risk", gw.base);
    let response = http
        .put(&url)
        .bearer_auth(&admin)
        .json(&json!({"pattern": "bigquery.q*", "risk": "high_risk"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let e = call(
        &bob,
        "bigquery_read_actions",
        json!({"action": "query", "sql": "select 1"}),
    )
    .await
    .unwrap_err();
    assert_eq!(reason_of(&e), "wrong_tool");
    let e = call(
        &bob,
        "bigquery_write_actions",
        json!({"action": "query", "sql": "select 1"}),
    )
    .await
    .unwrap_err();
    assert_eq!(reason_of(&e), "risk_not_allowed");
    let listed: serde_json::Value = http
        .get(&url)
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["overrides"]["bigquery.q*"], "high_risk");
    let bad = http
        .put(&url)
        .bearer_auth(&admin)
        .json(&json!({"pattern": "nodot", "risk": "read"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let bad = http
        .put(&url)
        .bearer_auth(&admin)
        .json(&json!({"pattern": "a.b", "risk": "severe"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    let removed = http
        .delete(format!("{url}?pattern=bigquery.q*"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 204);
    call(
        &bob,
        "bigquery_read_actions",
        json!({"action": "query", "sql": "select 1"}),
    )
    .await
    .unwrap();
    bob.cancel().await.unwrap();
    gw.stop().await;
}
