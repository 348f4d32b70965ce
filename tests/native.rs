//! A native connector (the shipped Jira catalog) through the gateway, with a
//! real MCP client, per-user credentials from the vault and a Jira fake that
//! follows the spec.

mod support;

use serde_json::json;
use support::fake_jira::FakeJira;
use support::{TestGateway, call, rmcp_connect, text_of};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jira_actions_run_with_the_subjects_own_credential() {
    let jira = FakeJira::start().await;
    jira.add_account("alice@example.com", "alice-api-token");
    let gw = TestGateway::start(&format!(
        "services:\n  jira: {{ kind: native, catalog: jira, base_url: \"{}\" }}\nusers:\n  - email: alice@example.com\n    access: {{ jira: high_risk }}\n  - email: bob@example.com\n    access: {{ jira: read }}\n",
        jira.base_url
    ))
    .await;
    mcpgate::vault::set(
        &gw.gw.pool,
        &gw.gw.master_key,
        "alice@example.com",
        "jira",
        mcpgate::vault::CredentialKind::Basic,
        "alice@example.com:alice-api-token",
    )
    .await
    .unwrap();
    let alice = rmcp_connect(&gw.url, &gw.token("alice@example.com").await).await;
    let tools: Vec<String> = alice
        .peer()
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    assert!(
        tools.contains(&"jira_read_actions".into()) && tools.contains(&"jira_write_actions".into())
    );

    // A read: picked fields, PII pseudonymized on the way out.
    let issue = call(
        &alice,
        "jira_read_actions",
        json!({"action": "get_issue", "issueIdOrKey": "PROJ-12"}),
    )
    .await
    .unwrap();
    let text = text_of(&issue);
    assert!(
        text.contains("Printer on fire") && !text.contains("marie.curie@example.com"),
        "{text}"
    );
    // A write, as Alice, with her own credential.
    let created = call(
        &alice,
        "jira_write_actions",
        json!({"action": "create_issue", "fields": {"project": {"key": "PROJ"}, "summary": "Toner low", "issuetype": {"name": "Task"}}}),
    )
    .await
    .unwrap();
    assert!(
        text_of(&created).contains("PROJ-13"),
        "{}",
        text_of(&created)
    );
    let (method, path, who, body) = jira.received().last().unwrap().clone();
    assert_eq!(
        (method.as_str(), path.as_str(), who.as_str()),
        ("POST", "/rest/api/3/issue", "alice@example.com")
    );
    assert_eq!(body["fields"]["summary"], "Toner low");

    // The service's own errors come back readable, not as an HTML page.
    let missing = call(
        &alice,
        "jira_read_actions",
        json!({"action": "get_issue", "issueIdOrKey": "NOPE-1"}),
    )
    .await
    .unwrap();
    assert_eq!(missing.is_error, Some(true));
    assert!(
        text_of(&missing).contains("HTTP 404: Issue does not exist"),
        "{}",
        text_of(&missing)
    );
    let invalid = call(
        &alice,
        "jira_write_actions",
        json!({"action": "create_issue", "fields": {"summary": ""}}),
    )
    .await
    .unwrap();
    assert!(
        text_of(&invalid).contains("summary: You must specify a summary"),
        "{}",
        text_of(&invalid)
    );

    // Deleting is high_risk: the human confirms first.
    let ask = call(
        &alice,
        "jira_write_actions",
        json!({"action": "delete_issue", "issueIdOrKey": "PROJ-12"}),
    )
    .await
    .unwrap();
    assert_eq!(
        ask.structured_content.unwrap()["confirmation_required"],
        true
    );

    // Bob has no credential: the same auth_required shape for every service.
    let bob = rmcp_connect(&gw.url, &gw.token("bob@example.com").await).await;
    let answer = call(&bob, "jira_read_actions", json!({"action": "myself"}))
        .await
        .unwrap();
    assert_eq!(answer.is_error, Some(true));
    assert_eq!(answer.structured_content.unwrap()["auth_required"], true);
    // A credential Jira refuses is auth_required too, and no secret leaks anywhere.
    mcpgate::vault::set(
        &gw.gw.pool,
        &gw.gw.master_key,
        "bob@example.com",
        "jira",
        mcpgate::vault::CredentialKind::Basic,
        "bob@example.com:wrong-token",
    )
    .await
    .unwrap();
    let answer = call(&bob, "jira_read_actions", json!({"action": "myself"}))
        .await
        .unwrap();
    let text = text_of(&answer);
    assert!(
        text.contains("auth_required") && text.contains("refused your credential"),
        "{text}"
    );
    assert!(!text.contains("wrong-token"));
    for row in gw.audit_rows().await {
        let row = format!("{row:?}");
        assert!(
            !row.contains("alice-api-token") && !row.contains("wrong-token"),
            "{row}"
        );
    }
    alice.cancel().await.unwrap();
    bob.cancel().await.unwrap();
    gw.stop().await;
}
