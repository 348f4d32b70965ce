//! The shipped Slack catalog through the gateway, with a real MCP client
//! (rmcp), per-user tokens from the vault and a Slack fake that follows the
//! Web API spec (form-encoded POSTs, HTTP 200 `ok: false` failures, cursor
//! pagination, 429 with Retry-After).

#[path = "support/fake_slack.rs"]
mod fake_slack;
mod support;

use fake_slack::FakeSlack;
use mcpgate::vault::CredentialKind;
use serde_json::json;
use support::{
    TestGateway, call, confirmed, ok, rmcp_connect, store_credential, structured, text_of,
    tool_names,
};

const ALICE: &str = "U0ALICE001";
const CAROL: &str = "U0CAROL001";
const ALICE_TOKEN: &str = "xoxp-1111-alice-secret";

async fn setup(extra: &str) -> (FakeSlack, TestGateway) {
    let slack = FakeSlack::start().await;
    slack.add_user(
        ALICE,
        "alice",
        "Alice Martin",
        "alice@example.com",
        ALICE_TOKEN,
    );
    slack.add_user(
        CAROL,
        "carol",
        "Carol Diaz",
        "carol@example.com",
        "xoxp-3333-carol",
    );
    slack.add_channel("C0GENERAL1", "general", true);
    slack.add_channel("C0RANDOM01", "random", false);
    slack.add_channel("C0DEPLOY01", "deploys", false);
    slack.add_channel("C0BILLING1", "billing", false);
    slack.add_channel("C0OLDPROJ1", "old-project", false);
    let gw = TestGateway::start(&format!(
        "policy:\n  relax_confirm: [\"slack.post_message\"]\nservices:\n  slack: {{ kind: native, catalog: slack, base_url: \"{}\"{extra} }}\nusers:\n  - email: alice@example.com\n    access: {{ slack: high_risk }}\n  - email: bob@example.com\n    access: {{ slack: read }}\n",
        slack.base_url
    ))
    .await;
    store_credential(
        &gw,
        "alice@example.com",
        "slack",
        CredentialKind::Token,
        ALICE_TOKEN,
    )
    .await;
    (slack, gw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slack_actions_run_with_the_subjects_own_token() {
    let (slack, gw) = setup("").await;
    let alice = rmcp_connect(&gw.url, &gw.token("alice@example.com").await).await;
    let tools = tool_names(&alice).await;
    assert!(
        tools.contains(&"slack_read_actions".into())
            && tools.contains(&"slack_write_actions".into()),
        "{tools:?}"
    );

    // auth.test: the token sent is Alice's own (the fake resolves it to her id).
    let me = ok(&alice, "slack_read_actions", json!({"action": "auth_test"})).await;
    assert_eq!(structured(&me)["user_id"], ALICE, "{}", text_of(&me));
    let last = slack.last();
    assert_eq!(
        (
            last.http_method.as_str(),
            last.method.as_str(),
            last.who.as_str()
        ),
        ("GET", "auth.test", ALICE)
    );

    // conversations.list: one page of 2 says where the next starts…
    let page = ok(
        &alice,
        "slack_read_actions",
        json!({"action": "conversations_list", "limit": 2}),
    )
    .await;
    let page = structured(&page);
    assert_eq!(page["channels"].as_array().unwrap().len(), 2, "{page}");
    assert!(
        page["next_page_token"]
            .as_str()
            .is_some_and(|t| !t.is_empty()),
        "{page}"
    );
    // …and `pages` follows next_cursor until the last (empty) one: 5 channels in 3 requests.
    let before = slack.hits("conversations.list");
    let all = ok(
        &alice,
        "slack_read_actions",
        json!({"action": "conversations_list", "limit": 2, "pages": 5}),
    )
    .await;
    let all = structured(&all);
    let names: Vec<&str> = all["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["general", "random", "deploys", "billing", "old-project"],
        "{all}"
    );
    assert!(all.get("next_page_token").is_none(), "{all}");
    assert_eq!(
        all.as_object().unwrap().len(),
        1,
        "no stale cursor of page 1: {all}"
    );
    assert_eq!(slack.hits("conversations.list") - before, 3);
    let cursors: Vec<Option<String>> = slack
        .received()
        .iter()
        .filter(|r| r.method == "conversations.list")
        .skip(before)
        .map(|r| r.args.get("cursor").cloned())
        .collect();
    assert!(
        cursors[0].is_none() && cursors[1].is_some() && cursors[2].is_some(),
        "{cursors:?}"
    );
    assert_eq!(slack.last().args["limit"], "2");

    // conversations.info
    let info = ok(
        &alice,
        "slack_read_actions",
        json!({"action": "conversations_info", "channel": "C0DEPLOY01", "include_num_members": true}),
    )
    .await;
    let info = structured(&info);
    assert_eq!(info["channel"]["name"], "deploys", "{info}");
    assert_eq!(info["channel"]["num_members"], 2, "{info}");
    assert_eq!(slack.last().args["include_num_members"], "true");

    // chat.postMessage, form-encoded, as Alice.
    let posted = ok(
        &alice,
        "slack_write_actions",
        json!({"action": "post_message", "channel": "C0DEPLOY01", "text": "Deploy of v2.3 at 17:00 & no later"}),
    )
    .await;
    let posted = structured(&posted);
    let ts = posted["ts"].as_str().expect("ts").to_owned();
    assert_eq!(posted["channel"], "C0DEPLOY01", "{posted}");
    let last = slack.last();
    assert_eq!(
        (
            last.http_method.as_str(),
            last.method.as_str(),
            last.who.as_str()
        ),
        ("POST", "chat.postMessage", ALICE)
    );
    assert_eq!(last.content_type, "application/x-www-form-urlencoded");
    assert_eq!(last.args["text"], "Deploy of v2.3 at 17:00 & no later");
    assert_eq!(last.args["channel"], "C0DEPLOY01");
    // A thread reply with Block Kit blocks (a JSON string in the form).
    let blocks = r#"[{"type":"section","text":{"type":"mrkdwn","text":"*rollback plan* ready"}}]"#;
    ok(
        &alice,
        "slack_write_actions",
        json!({"action": "post_message", "channel": "C0DEPLOY01", "text": "rollback plan ready", "thread_ts": ts, "blocks": blocks}),
    )
    .await;
    let stored = slack.messages("C0DEPLOY01");
    assert_eq!(stored[0]["reply_count"], 1, "{stored:?}");
    assert_eq!(
        stored[1]["blocks"][0]["text"]["text"],
        "*rollback plan* ready"
    );

    // chat.update changes what is stored; history reads it back.
    let updated = ok(
        &alice,
        "slack_write_actions",
        json!({"action": "chat_update", "channel": "C0DEPLOY01", "ts": ts, "text": "Deploy of v2.3 moved to 18:00"}),
    )
    .await;
    assert_eq!(
        structured(&updated)["text"],
        "Deploy of v2.3 moved to 18:00"
    );
    assert_eq!(slack.last().args["ts"], ts);
    for i in 0..3 {
        slack.seed_message("C0DEPLOY01", CAROL, &format!("build {i} green"));
    }
    let history = ok(
        &alice,
        "slack_read_actions",
        json!({"action": "conversations_history", "channel": "C0DEPLOY01", "limit": 2, "pages": 3}),
    )
    .await;
    let history = structured(&history);
    let texts: Vec<&str> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    // Newest first; the thread reply stays in its thread.
    assert_eq!(
        texts,
        [
            "build 2 green",
            "build 1 green",
            "build 0 green",
            "Deploy of v2.3 moved to 18:00"
        ],
        "{history}"
    );
    let one_page = ok(
        &alice,
        "slack_read_actions",
        json!({"action": "conversations_history", "channel": "C0DEPLOY01", "limit": 3}),
    )
    .await;
    let one_page = structured(&one_page);
    assert!(
        one_page.get("has_more").is_none()
            && one_page.get("response_metadata.next_cursor").is_none(),
        "only the gateway's next_page_token says where to go on: {one_page}"
    );
    let token = one_page["next_page_token"].as_str().unwrap().to_owned();
    let rest = ok(
        &alice,
        "slack_read_actions",
        json!({"action": "conversations_history", "channel": "C0DEPLOY01", "limit": 3, "cursor": token}),
    )
    .await;
    assert_eq!(
        structured(&rest)["messages"][0]["text"],
        "Deploy of v2.3 moved to 18:00"
    );

    // users.info and users.lookupByEmail: the address goes out as given, comes back pseudonymized.
    let carol = ok(
        &alice,
        "slack_read_actions",
        json!({"action": "users_info", "user": CAROL}),
    )
    .await;
    assert_eq!(
        structured(&carol)["user"]["id"],
        CAROL,
        "{}",
        text_of(&carol)
    );
    assert_eq!(slack.last().args["user"], CAROL);
    let found = ok(
        &alice,
        "slack_read_actions",
        json!({"action": "users_lookup_by_email", "email": "carol@example.com"}),
    )
    .await;
    let text = text_of(&found);
    assert!(
        text.contains(CAROL) && !text.contains("carol@example.com"),
        "{text}"
    );
    assert_eq!(slack.last().args["email"], "carol@example.com");
    assert_eq!(slack.last().method, "users.lookupByEmail");
    // The model only saw a pseudonym: passed back, Slack gets the real address.
    let pseudonym = structured(&found)["user"]["profile"]["email"]
        .as_str()
        .expect("an address-shaped pseudonym")
        .to_owned();
    assert!(pseudonym.ends_with("@pseudonym.invalid"), "{pseudonym}");
    let again = ok(
        &alice,
        "slack_read_actions",
        json!({"action": "users_lookup_by_email", "email": pseudonym}),
    )
    .await;
    assert_eq!(structured(&again)["user"]["id"], CAROL);
    assert_eq!(slack.last().args["email"], "carol@example.com");
    let unknown = call(
        &alice,
        "slack_read_actions",
        json!({"action": "users_lookup_by_email", "email": "nobody@example.com"}),
    )
    .await
    .unwrap();
    assert!(
        text_of(&unknown).contains("users_not_found"),
        "{}",
        text_of(&unknown)
    );

    // search.messages (a user token may search).
    let search = ok(
        &alice,
        "slack_read_actions",
        json!({"action": "search_messages", "query": "deploy 18:00", "sort": "timestamp"}),
    )
    .await;
    let search = structured(&search);
    assert_eq!(search["messages.total"], 1, "{search}");
    assert_eq!(
        search["messages.matches"][0]["channel"]["name"], "deploys",
        "{search}"
    );
    assert_eq!(slack.last().args["query"], "deploy 18:00");

    // reminders.add
    let reminder = ok(
        &alice,
        "slack_write_actions",
        json!({"action": "reminders_add", "text": "check the deploy", "time": "in 15 minutes"}),
    )
    .await;
    let reminder = structured(&reminder);
    assert_eq!(
        reminder["reminder"]["text"], "check the deploy",
        "{reminder}"
    );
    assert_eq!(slack.reminders()[0]["user"], ALICE);
    assert_eq!(
        slack.last().content_type,
        "application/x-www-form-urlencoded"
    );

    // chat.delete is high_risk: nothing reaches Slack before the confirmation.
    let before = slack.received().len();
    let ask = ok(
        &alice,
        "slack_write_actions",
        json!({"action": "chat_delete", "channel": "C0DEPLOY01", "ts": ts}),
    )
    .await;
    assert_eq!(
        ask.structured_content.unwrap()["confirmation_required"],
        true
    );
    assert_eq!(slack.received().len(), before);
    let deleted = confirmed(
        &alice,
        "slack_write_actions",
        json!({"action": "chat_delete", "channel": "C0DEPLOY01", "ts": ts}),
    )
    .await;
    assert_eq!(structured(&deleted)["ts"], ts.as_str());
    assert!(
        slack
            .messages("C0DEPLOY01")
            .iter()
            .all(|m| m["ts"] != ts.as_str())
    );
    assert_eq!(slack.last().method, "chat.delete");
    assert_eq!(slack.last().who, ALICE);

    // conversations.archive (high_risk); an archived channel refuses posts.
    confirmed(
        &alice,
        "slack_write_actions",
        json!({"action": "conversations_archive", "channel": "C0OLDPROJ1"}),
    )
    .await;
    assert_eq!(slack.channel("C0OLDPROJ1").unwrap()["is_archived"], true);
    assert_eq!(slack.last().args["channel"], "C0OLDPROJ1");
    let refused = call(
        &alice,
        "slack_write_actions",
        json!({"action": "post_message", "channel": "C0OLDPROJ1", "text": "anyone?"}),
    )
    .await
    .unwrap();
    assert_eq!(refused.is_error, Some(true));
    assert!(
        text_of(&refused).contains("is_archived"),
        "{}",
        text_of(&refused)
    );

    // Slack's HTTP 200 `ok: false` is a readable tool error.
    let missing = call(
        &alice,
        "slack_read_actions",
        json!({"action": "conversations_info", "channel": "C0NOPE0000"}),
    )
    .await
    .unwrap();
    assert_eq!(missing.is_error, Some(true));
    assert!(
        text_of(&missing).contains("channel_not_found"),
        "{}",
        text_of(&missing)
    );
    let deleted_again = call(
        &alice,
        "slack_write_actions",
        json!({"action": "chat_update", "channel": "C0DEPLOY01", "ts": ts, "text": "x"}),
    )
    .await
    .unwrap();
    assert!(
        text_of(&deleted_again).contains("message_not_found"),
        "{}",
        text_of(&deleted_again)
    );

    alice.cancel().await.unwrap();
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slack_refusals_are_auth_required_and_rate_limits_are_waited_out() {
    let (slack, gw) = setup("").await;
    // Bob has no token: auth_required, and Slack is never called.
    let bob = rmcp_connect(&gw.url, &gw.token("bob@example.com").await).await;
    let before = slack.received().len();
    let answer = call(&bob, "slack_read_actions", json!({"action": "auth_test"}))
        .await
        .unwrap();
    assert_eq!(answer.is_error, Some(true));
    assert_eq!(answer.structured_content.unwrap()["auth_required"], true);
    assert_eq!(slack.received().len(), before);
    // A token Slack does not know: HTTP 200 `invalid_auth`, which is auth_required too.
    store_credential(
        &gw,
        "bob@example.com",
        "slack",
        CredentialKind::Token,
        "xoxp-9999-revoked",
    )
    .await;
    let answer = call(
        &bob,
        "slack_read_actions",
        json!({"action": "conversations_list"}),
    )
    .await
    .unwrap();
    assert_eq!(answer.is_error, Some(true));
    let text = text_of(&answer);
    assert_eq!(
        answer.structured_content.clone().unwrap()["auth_required"],
        true,
        "{text}"
    );
    assert!(text.contains("invalid_auth"), "{text}");
    assert!(!text.contains("xoxp-9999-revoked"), "{text}");
    for row in gw.audit_rows().await {
        let row = format!("{row:?}");
        assert!(
            !row.contains("xoxp-9999-revoked") && !row.contains(ALICE_TOKEN),
            "{row}"
        );
    }

    // 429 with a short Retry-After: the gateway waits it out and the call succeeds.
    let alice = rmcp_connect(&gw.url, &gw.token("alice@example.com").await).await;
    slack.rate_limit(1, 1);
    let started = std::time::Instant::now();
    let me = ok(&alice, "slack_read_actions", json!({"action": "auth_test"})).await;
    assert_eq!(structured(&me)["user_id"], ALICE);
    assert!(started.elapsed() >= std::time::Duration::from_secs(1));
    assert_eq!(slack.hits("auth.test"), 2, "one 429, one answer");
    // A long Retry-After comes back to the caller as rate_limited, with the wait.
    slack.rate_limit(10, 120);
    let limited = call(
        &alice,
        "slack_write_actions",
        json!({"action": "post_message", "channel": "C0RANDOM01", "text": "hi"}),
    )
    .await
    .unwrap();
    assert_eq!(limited.is_error, Some(true));
    let body = limited.structured_content.clone().unwrap();
    assert_eq!(body["error"], "rate_limited", "{body}");
    assert_eq!(body["retry_after"], 120, "{body}");
    assert!(slack.messages("C0RANDOM01").is_empty());

    alice.cancel().await.unwrap();
    bob.cancel().await.unwrap();
    gw.stop().await;
}
