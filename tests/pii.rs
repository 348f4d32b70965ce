//! PII through the gateway: pseudonyms out, real values back in for the same
//! subject only, with a real MCP client and an upstream that records what
//! reaches it.

mod support;

use serde_json::{Value, json};
use support::recorder::Recorder;
use support::{TestGateway, call, reason_of, rmcp_connect, text_of};

async fn setup(extra: &str) -> (TestGateway, Recorder) {
    let jira = Recorder::start().await;
    let gw = TestGateway::start(&format!(
        "services:\n  jira: {{ kind: mcp, url: \"{}\" }}\nusers:\n  - email: alice@example.com\n    access: {{ jira: write }}\n  - email: bob@example.com\n    access: {{ jira: write }}\n  - email: root@example.com\n    admin: true\n{extra}",
        jira.url
    ))
    .await;
    (gw, jira)
}

fn issue_of(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_model_sees_pseudonyms_and_the_service_gets_real_values_back() {
    let (gw, jira) = setup("").await;
    let alice = rmcp_connect(&gw.url, &gw.token("alice@example.com").await).await;
    let read = call(
        &alice,
        "jira_read_actions",
        json!({"action": "get_issue", "key": "PROJ-12"}),
    )
    .await
    .unwrap();
    let text = text_of(&read);
    assert!(
        !text.contains("marie.curie@example.com")
            && !text.contains("Marie Curie")
            && !text.contains("7946"),
        "{text}"
    );
    let issue = issue_of(&text);
    let reporter = &issue["fields"]["reporter"];
    let email = reporter["emailAddress"].as_str().unwrap().to_owned();
    let name = reporter["displayName"].as_str().unwrap().to_owned();
    assert!(
        email.starts_with("person-") && email.ends_with("@pseudonym.invalid"),
        "{email}"
    );
    assert!(name.starts_with("<PERSON_"), "{name}");
    assert_eq!(
        reporter["accountId"], "5b10a2844c20165700ede21g",
        "ids are not personal data"
    );
    let description = issue["fields"]["description"].as_str().unwrap();
    assert!(
        description.contains(&email),
        "the same address, the same pseudonym: {description}"
    );
    assert!(
        description.contains("<PHONE_") && description.contains("<IP_"),
        "{description}"
    );
    assert!(
        description.contains("Order 88231"),
        "hard negatives stay: {description}"
    );
    assert_eq!(issue["fields"]["created"], "2026-11-24T09:15:00.000+0000");
    // Stable: reading again yields the same pseudonyms.
    let again = issue_of(&text_of(
        &call(
            &alice,
            "jira_read_actions",
            json!({"action": "get_issue", "key": "PROJ-12"}),
        )
        .await
        .unwrap(),
    ));
    assert_eq!(again["fields"]["reporter"], issue["fields"]["reporter"]);

    // "Reply to the reporter": the pseudonyms go back in, the real values reach the service.
    call(
        &alice,
        "jira_write_actions",
        json!({"action": "post_message", "text": format!("Dear {name}, we replied to {email}.")}),
    )
    .await
    .unwrap();
    let (_, sent) = jira.received().last().unwrap().clone();
    assert_eq!(
        sent["text"],
        "Dear Marie Curie, we replied to marie.curie@example.com."
    );
    let row = gw
        .audit_rows()
        .await
        .into_iter()
        .rev()
        .find(|r| r.action.as_deref() == Some("post_message"))
        .unwrap();
    assert_eq!(row.pii_rehydrated, Some(2));
    assert_eq!(row.pii_types.as_deref(), Some("EMAIL,PERSON"));

    // Bob cannot use Alice's pseudonym, and nobody can use an invented one.
    let bob = rmcp_connect(&gw.url, &gw.token("bob@example.com").await).await;
    let before = jira.count();
    let e = call(
        &bob,
        "jira_write_actions",
        json!({"action": "post_message", "text": format!("hi {email}")}),
    )
    .await
    .unwrap_err();
    assert_eq!(reason_of(&e), "pseudonym_other_scope");
    let e = call(
        &alice,
        "jira_write_actions",
        json!({"action": "post_message", "text": "call <PHONE_0123456789ab>"}),
    )
    .await
    .unwrap_err();
    assert_eq!(reason_of(&e), "unknown_pseudonym");
    assert_eq!(
        jira.count(),
        before,
        "refused calls never reach the service"
    );
    // Bob's own view of the same issue has other pseudonyms.
    let bobs = issue_of(&text_of(
        &call(
            &bob,
            "jira_read_actions",
            json!({"action": "get_issue", "key": "PROJ-12"}),
        )
        .await
        .unwrap(),
    ));
    assert_ne!(
        bobs["fields"]["reporter"]["emailAddress"],
        issue["fields"]["reporter"]["emailAddress"]
    );

    // The store holds sealed values only.
    let rows: Vec<(Vec<u8>,)> = sqlx::query_as("SELECT sealed FROM pii_mappings")
        .fetch_all(gw.gw.pool())
        .await
        .unwrap();
    assert!(!rows.is_empty());
    for (sealed,) in rows {
        assert!(
            !String::from_utf8_lossy(&sealed).contains("marie"),
            "plaintext at rest"
        );
    }
    alice.cancel().await.unwrap();
    bob.cancel().await.unwrap();
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operators_choose_mask_or_pass_per_service_and_field() {
    let (gw, _jira) = setup("pii:\n  services:\n    jira:\n      mode: mask\n      fields: { \"fields.assignee.*\": pass }\n").await;
    let alice = rmcp_connect(&gw.url, &gw.token("alice@example.com").await).await;
    let issue = issue_of(&text_of(
        &call(
            &alice,
            "jira_read_actions",
            json!({"action": "get_issue", "key": "PROJ-12"}),
        )
        .await
        .unwrap(),
    ));
    assert_eq!(
        issue["fields"]["reporter"]["emailAddress"],
        "ma***@example.com"
    );
    assert_eq!(
        issue["fields"]["assignee"]["displayName"], "Pierre Curie",
        "that field passes"
    );
    // The operator sees what is masked or passed, and what was detected.
    let status: Value = reqwest::Client::new()
        .get(format!("{}/admin/api/pii", gw.base))
        .bearer_auth(gw.token("root@example.com").await)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["services"]["jira"]["mode"], "mask");
    assert_eq!(
        status["services"]["jira"]["fields"]["fields.assignee.*"],
        "pass"
    );
    assert!(
        status["stats"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["entity"] == "EMAIL" && s["detected"].as_u64() >= Some(1)),
        "{status}"
    );
    alice.cancel().await.unwrap();
    gw.stop().await;
}

/// A real Python SDK upstream (`MCPServer`) answers with personal data as a
/// JSON string (text block + `structuredContent: {"result": "<json>"}`), as
/// structured output and inside nested lists: no channel of the result may
/// carry it in clear, and a pseudonym sent back inside a JSON string reaches
/// the upstream as the real value.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn structured_content_and_json_inside_strings_are_pseudonymized_too() {
    let server = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/pii_server.py");
    let gw = TestGateway::start(&format!(
        "services:\n  py: {{ kind: mcp, command: [\"{}\", \"{server}\"] }}\nusers:\n  - email: alice@example.com\n    access: {{ py: write }}\n",
        support::python()
    ))
    .await;
    gw.wait_generation("py", 1).await;
    let alice = rmcp_connect(&gw.url, &gw.token("alice@example.com").await).await;
    let mut pseudonym = String::new();
    for action in ["user_as_json_string", "user_as_dict", "users_nested"] {
        let result = call(&alice, "py_read_actions", json!({ "action": action }))
            .await
            .unwrap();
        let whole = serde_json::to_string(&result).unwrap();
        assert!(
            result.structured_content.is_some(),
            "{action}: the SDK sends structuredContent: {whole}"
        );
        for secret in ["Marie Curie", "marie.curie@example.com", "marie.curie"] {
            assert!(
                !whole.contains(secret),
                "{action} leaked '{secret}': {whole}"
            );
        }
        assert!(whole.contains("<PERSON_"), "{action}: {whole}");
        let at = whole.find("person-").expect("an e-mail pseudonym");
        pseudonym = whole[at..]
            .split(['"', '\\', ' '])
            .next()
            .unwrap()
            .to_owned();
    }
    assert!(pseudonym.ends_with("@pseudonym.invalid"), "{pseudonym}");

    // Only the gateway's own answers skip the PII pass; an upstream cannot
    // claim that mark.
    let spoofed = call(
        &alice,
        "py_read_actions",
        json!({ "action": "spoofed_mark" }),
    )
    .await
    .unwrap();
    let whole = serde_json::to_string(&spoofed).unwrap();
    assert!(
        !whole.contains("Marie Curie") && !whole.contains("marie.curie@"),
        "{whole}"
    );
    assert!(!whole.contains("gateway-authored"), "{whole}");

    // Back in: a pseudonym inside a JSON string is rehydrated as JSON.
    let payload = json!({ "to": pseudonym, "quote": "say \"hi\"" }).to_string();
    let echoed = call(
        &alice,
        "py_read_actions",
        json!({ "action": "echo", "payload": payload }),
    )
    .await
    .unwrap();
    let whole = serde_json::to_string(&echoed).unwrap();
    assert!(!whole.contains("marie.curie@example.com"), "{whole}");
    assert!(
        whole.contains(&pseudonym),
        "the real value came back and became the same pseudonym: {whole}"
    );
    let rows = gw.audit_rows().await;
    let echo_row = rows
        .iter()
        .find(|r| r.action.as_deref() == Some("echo"))
        .unwrap();
    assert_eq!(echo_row.pii_rehydrated, Some(1), "{echo_row:?}");
    gw.stop().await;
}
