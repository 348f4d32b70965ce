//! The shipped Jira catalog through the gateway, with a real MCP client
//! (rmcp), per-user credentials from the vault and a Jira fake that follows
//! the REST v3 spec (`tests/support/fake_jira.rs`): every action, token
//! pagination of `/search/jql`, ADF comments, the workflow, the service's own
//! errors, auth_required and 429 / Retry-After.

mod support;

use mcpgate::vault::CredentialKind;
use serde_json::{Value, json};
use support::fake_jira::FakeJira;
use support::{
    TestGateway, call, confirmed_answer, failed_text, read, reason_of, refusal_of, rmcp_connect,
    store_credential, structured, text_of, tool_names, write,
};

const ALICE_TOKEN: &str = "alice-api-token";

fn keys(answer: &Value) -> Vec<String> {
    answer["issues"]
        .as_array()
        .unwrap_or_else(|| panic!("no issues in {answer}"))
        .iter()
        .map(|i| i["key"].as_str().unwrap_or("?").to_owned())
        .collect()
}

/// A gateway with Jira, Alice (high_risk, with her credential), Bob (read
/// only) and Carol (high_risk, credential, but no delete permission in Jira).
async fn setup() -> (FakeJira, TestGateway) {
    let jira = FakeJira::start().await;
    jira.add_account_named("alice@example.com", ALICE_TOKEN, "Alice Martin");
    jira.add_account("bob@example.com", "bob-api-token");
    jira.add_account("carol@example.com", "carol-api-token");
    jira.deny_delete("carol@example.com");
    let gw = TestGateway::start(&format!(
        "services:\n  jira: {{ kind: native, catalog: jira, base_url: \"{}\" }}\nusers:\n  - email: alice@example.com\n    access: {{ jira: high_risk }}\n  - email: bob@example.com\n    access: {{ jira: read }}\n  - email: carol@example.com\n    access: {{ jira: high_risk }}\n",
        jira.base_url
    ))
    .await;
    for (user, secret) in [
        (
            "alice@example.com",
            format!("alice@example.com:{ALICE_TOKEN}"),
        ),
        ("bob@example.com", "bob@example.com:bob-api-token".into()),
        (
            "carol@example.com",
            "carol@example.com:carol-api-token".into(),
        ),
    ] {
        store_credential(&gw, user, "jira", CredentialKind::Basic, &secret).await;
    }
    (jira, gw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jira_actions_run_with_the_subjects_own_credential() {
    let jira = FakeJira::start().await;
    jira.add_account("alice@example.com", "alice-api-token");
    let gw = TestGateway::start(&format!(
        "services:\n  jira: {{ kind: native, catalog: jira, base_url: \"{}\" }}\nusers:\n  - email: alice@example.com\n    access: {{ jira: high_risk }}\n  - email: bob@example.com\n    access: {{ jira: read }}\n",
        jira.base_url
    ))
    .await;
    store_credential(
        &gw,
        "alice@example.com",
        "jira",
        CredentialKind::Basic,
        "alice@example.com:alice-api-token",
    )
    .await;
    let alice = rmcp_connect(&gw.url, &gw.token("alice@example.com").await).await;
    let tools = tool_names(&alice).await;
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
    store_credential(
        &gw,
        "bob@example.com",
        "jira",
        CredentialKind::Basic,
        "bob@example.com:wrong-token",
    )
    .await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jira_reads_follow_the_spec_and_search_follows_token_pages() {
    let (jira, gw) = setup().await;
    for n in 1..=5 {
        jira.add_issue("OPS", &format!("Rotate certificate {n}"), "Open");
    }
    let alice = rmcp_connect(&gw.url, &gw.token("alice@example.com").await).await;

    // myself: the account behind Alice's own credential.
    let me = read(&alice, "jira", json!({"action": "myself"})).await;
    assert_eq!(
        me["accountId"],
        jira.account_id("alice@example.com"),
        "{me}"
    );
    assert_eq!(me["timeZone"], "Europe/Paris", "{me}");
    let last = jira.last();
    assert_eq!(
        (last.method.as_str(), last.path.as_str(), last.who.as_str()),
        ("GET", "/rest/api/3/myself", "alice@example.com")
    );

    // get_project: by key and by id; an unknown key is Jira's own 404.
    let project = read(
        &alice,
        "jira",
        json!({"action": "get_project", "projectIdOrKey": "OPS"}),
    )
    .await;
    assert_eq!(
        (project["id"].as_str(), project["name"].as_str()),
        (Some("10001"), Some("Operations")),
        "{project}"
    );
    let types: Vec<&str> = project["issueTypes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(types.contains(&"Sub-task"), "{project}");
    assert!(project.get("avatarUrls").is_none() && project.get("self").is_none());
    let by_id = read(
        &alice,
        "jira",
        json!({"action": "get_project", "projectIdOrKey": "10000"}),
    )
    .await;
    assert_eq!(by_id["key"], "PROJ", "{by_id}");
    let text = failed_text(
        &alice,
        "jira_read_actions",
        json!({"action": "get_project", "projectIdOrKey": "NOPE"}),
    )
    .await;
    assert!(
        text.contains("HTTP 404: No project could be found with key 'NOPE'"),
        "{text}"
    );

    // get_issue with chosen fields: only those come back.
    let issue = read(
        &alice,
        "jira",
        json!({"action": "get_issue", "issueIdOrKey": "OPS-2", "fields": "summary,status"}),
    )
    .await;
    assert_eq!(issue["key"], "OPS-2");
    let fields = issue["fields"].as_object().unwrap();
    let mut names: Vec<&String> = fields.keys().collect();
    names.sort();
    assert_eq!(names, ["status", "summary"], "{issue}");
    assert_eq!(fields["status"]["name"], "Open");
    assert_eq!(jira.last().query["fields"], "summary,status");
    // …by id too, and with the transitions expanded.
    let id = jira.issue("OPS-2").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let issue = read(
        &alice,
        "jira",
        json!({"action": "get_issue", "issueIdOrKey": id, "expand": "transitions"}),
    )
    .await;
    assert_eq!(issue["key"], "OPS-2", "{issue}");
    assert_eq!(issue["transitions"].as_array().unwrap().len(), 2, "{issue}");

    // search, one page: maxResults is sent, the catalog's default fields too,
    // and the answer says how to continue.
    let jql = "project = OPS ORDER BY key ASC";
    let page = read(
        &alice,
        "jira",
        json!({"action": "search", "jql": jql, "maxResults": 2}),
    )
    .await;
    assert_eq!(keys(&page), ["OPS-1", "OPS-2"], "{page}");
    assert_eq!(
        page["issues"][0]["fields"]["summary"],
        "Rotate certificate 1"
    );
    assert_eq!(page["issues"][0]["fields"]["status"]["name"], "Open");
    let token = page["next_page_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no next_page_token in {page}"))
        .to_owned();
    let sent = jira.last();
    assert_eq!(sent.path, "/rest/api/3/search/jql");
    assert_eq!(sent.query["jql"], jql);
    assert_eq!(sent.query["maxResults"], "2");
    assert_eq!(
        sent.query["fields"],
        "summary,status,assignee,issuetype,priority,updated"
    );
    assert!(!sent.query.contains_key("nextPageToken"));

    // pages: 2 joins two pages in two requests; more remain, so a token comes back.
    let before = jira.hits("GET", "/rest/api/3/search/jql");
    let two = read(
        &alice,
        "jira",
        json!({"action": "search", "jql": jql, "maxResults": 2, "pages": 2}),
    )
    .await;
    assert_eq!(keys(&two), ["OPS-1", "OPS-2", "OPS-3", "OPS-4"], "{two}");
    assert!(two["next_page_token"].is_string(), "{two}");
    assert_eq!(jira.hits("GET", "/rest/api/3/search/jql") - before, 2);
    let requests = jira.requests();
    let second = requests.last().unwrap();
    assert_eq!(
        second.query["nextPageToken"], token,
        "the first page's token"
    );
    assert_eq!(second.query["maxResults"], "2");

    // Continuing from a token to the end: the last page has no token.
    let rest = read(
        &alice,
        "jira",
        json!({"action": "search", "jql": jql, "maxResults": 2, "pages": 5,
               "nextPageToken": two["next_page_token"]}),
    )
    .await;
    assert_eq!(keys(&rest), ["OPS-5"], "{rest}");
    assert!(rest.get("next_page_token").is_none(), "{rest}");
    // All pages at once stop at the last one.
    let before = jira.hits("GET", "/rest/api/3/search/jql");
    let all = read(
        &alice,
        "jira",
        json!({"action": "search", "jql": jql, "maxResults": 2, "pages": 5}),
    )
    .await;
    assert_eq!(keys(&all).len(), 5, "{all}");
    assert!(all.get("next_page_token").is_none(), "{all}");
    assert_eq!(jira.hits("GET", "/rest/api/3/search/jql") - before, 3);

    // At most max_pages (5) per call: the gateway refuses more before Jira.
    let before = jira.hits("GET", "/rest/api/3/search/jql");
    let err = call(
        &alice,
        "jira_read_actions",
        json!({"action": "search", "jql": jql, "pages": 6}),
    )
    .await;
    assert_eq!(refusal_of(err), "invalid_arguments");
    assert_eq!(jira.hits("GET", "/rest/api/3/search/jql"), before);

    // JQL with explicit fields, filters and order.
    let found = read(
        &alice,
        "jira",
        json!({"action": "search", "jql": "project = OPS AND summary ~ \"certificate 3\"", "fields": "summary"}),
    )
    .await;
    assert_eq!(keys(&found), ["OPS-3"], "{found}");
    assert_eq!(
        found["issues"][0]["fields"].as_object().unwrap().len(),
        1,
        "{found}"
    );
    let newest = read(&alice, "jira", json!({"action": "search", "jql": "project in (OPS, PROJ) ORDER BY created DESC", "maxResults": 1})).await;
    assert_eq!(keys(&newest), ["OPS-5"], "{newest}");

    // Jira's own refusals, readable.
    let text = failed_text(
        &alice,
        "jira_read_actions",
        json!({"action": "search", "jql": "colour = red"}),
    )
    .await;
    assert!(
        text.contains("HTTP 400: Field 'colour' does not exist"),
        "{text}"
    );
    let text = failed_text(
        &alice,
        "jira_read_actions",
        json!({"action": "search", "jql": "order by created DESC"}),
    )
    .await;
    assert!(
        text.contains("Unbounded JQL queries are not allowed"),
        "{text}"
    );
    let text = failed_text(
        &alice,
        "jira_read_actions",
        json!({"action": "search", "jql": "project = NOPE"}),
    )
    .await;
    assert!(
        text.contains("The value 'NOPE' does not exist for the field 'project'"),
        "{text}"
    );

    // get_comments and get_transitions of an untouched issue.
    let comments = read(
        &alice,
        "jira",
        json!({"action": "get_comments", "issueIdOrKey": "OPS-1"}),
    )
    .await;
    assert_eq!(comments["total"], 0, "{comments}");
    let transitions = read(
        &alice,
        "jira",
        json!({"action": "get_transitions", "issueIdOrKey": "OPS-1"}),
    )
    .await;
    let ids: Vec<&str> = transitions["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["11", "31"], "{transitions}");
    let only = read(
        &alice,
        "jira",
        json!({"action": "get_transitions", "issueIdOrKey": "OPS-1", "transitionId": "41"}),
    )
    .await;
    assert_eq!(
        only["transitions"],
        json!([]),
        "Reopen is not possible from Open"
    );
    assert_eq!(jira.last().query["transitionId"], "41");

    // Every request reached Jira with Alice's own credential.
    assert!(jira.requests().iter().all(|r| r.who == "alice@example.com"));
    alice.cancel().await.unwrap();
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jira_writes_change_the_issue_as_the_subject() {
    let (jira, gw) = setup().await;
    let alice = rmcp_connect(&gw.url, &gw.token("alice@example.com").await).await;
    let alice_id = jira.account_id("alice@example.com");

    // create_issue with an ADF description; it can be read back.
    let description = json!({"type": "doc", "version": 1, "content": [
        {"type": "paragraph", "content": [{"type": "text", "text": "Tray 2 jams every morning."}]}]});
    let created = write(
        &alice,
        "jira",
        json!({"action": "create_issue", "fields": {
            "project": {"key": "OPS"}, "summary": "Paper jam", "issuetype": {"name": "Bug"},
            "description": description, "labels": ["printer"], "assignee": {"accountId": alice_id}}}),
    )
    .await;
    assert_eq!(created["key"], "OPS-1", "{created}");
    let last = jira.last();
    assert_eq!(
        (last.method.as_str(), last.path.as_str(), last.who.as_str()),
        ("POST", "/rest/api/3/issue", "alice@example.com")
    );
    assert_eq!(last.body["fields"]["description"], description);
    let issue = read(
        &alice,
        "jira",
        json!({"action": "get_issue", "issueIdOrKey": "OPS-1"}),
    )
    .await;
    assert_eq!(issue["fields"]["summary"], "Paper jam", "{issue}");
    assert_eq!(issue["fields"]["issuetype"]["name"], "Bug");
    assert_eq!(issue["fields"]["description"], description);
    assert_eq!(issue["fields"]["status"]["name"], "Open");
    // A plain-text description is not ADF: Jira says so, per field.
    let text = failed_text(
        &alice,
        "jira_write_actions",
        json!({"action": "create_issue", "fields": {
            "project": {"key": "OPS"}, "summary": "x", "issuetype": {"name": "Task"}, "description": "plain"}}),
    )
    .await;
    assert!(
        text.contains("HTTP 400: description: Operation value must be an Atlassian Document"),
        "{text}"
    );

    // edit_issue: fields set, update operations applied, 204; the change is there.
    let edited = write(
        &alice,
        "jira",
        json!({"action": "edit_issue", "issueIdOrKey": "OPS-1", "notifyUsers": false,
               "fields": {"summary": "Paper jam in tray 2", "priority": {"name": "High"}},
               "update": {"labels": [{"add": "hardware"}, {"remove": "printer"}]}}),
    )
    .await;
    assert_eq!(edited["status"], 204, "{edited}");
    let last = jira.last();
    assert_eq!(
        (last.method.as_str(), last.path.as_str(), last.who.as_str()),
        ("PUT", "/rest/api/3/issue/OPS-1", "alice@example.com")
    );
    assert_eq!(last.query["notifyUsers"], "false");
    assert_eq!(last.body["update"]["labels"][0]["add"], "hardware");
    let fields = &jira.issue("OPS-1").unwrap()["fields"];
    assert_eq!(fields["summary"], "Paper jam in tray 2");
    assert_eq!(fields["priority"]["name"], "High");
    assert_eq!(fields["labels"], json!(["hardware"]));
    // Status is not editable: transitions move issues.
    let text = failed_text(
        &alice,
        "jira_write_actions",
        json!({"action": "edit_issue", "issueIdOrKey": "OPS-1", "fields": {"status": {"name": "Done"}}}),
    )
    .await;
    assert!(
        text.contains("status: Field 'status' cannot be set"),
        "{text}"
    );
    let text = failed_text(
        &alice,
        "jira_write_actions",
        json!({"action": "edit_issue", "issueIdOrKey": "OPS-404", "fields": {"summary": "x"}}),
    )
    .await;
    assert!(text.contains("HTTP 404: Issue does not exist"), "{text}");

    // add_comment with plain text (Markdown): the gateway sends an ADF document.
    let comment = write(
        &alice,
        "jira",
        json!({"action": "add_comment", "issueIdOrKey": "OPS-1",
               "body": "Still jamming after **cleaning**.\n\n- tray 1 fine\n- tray 2 jams"}),
    )
    .await;
    assert!(comment["id"].is_string(), "{comment}");
    let sent = jira.last();
    assert_eq!(
        (sent.method.as_str(), sent.path.as_str(), sent.who.as_str()),
        (
            "POST",
            "/rest/api/3/issue/OPS-1/comment",
            "alice@example.com"
        )
    );
    let body = &sent.body["body"];
    assert_eq!(
        (&body["type"], &body["version"]),
        (&json!("doc"), &json!(1)),
        "{body}"
    );
    assert_eq!(body["content"][0]["type"], "paragraph", "{body}");
    let paragraph = body["content"][0]["content"].as_array().unwrap();
    assert!(
        paragraph
            .iter()
            .any(|n| n["text"] == "cleaning" && n["marks"] == json!([{"type": "strong"}])),
        "{body}"
    );
    assert_eq!(body["content"][1]["type"], "bulletList", "{body}");
    assert_eq!(body["content"][1]["content"].as_array().unwrap().len(), 2);
    // An ADF document is sent as it is, with its visibility.
    let adf = json!({"type": "doc", "version": 1, "content": [
        {"type": "paragraph", "content": [{"type": "text", "text": "Ordered a new roller."}]}]});
    write(
        &alice,
        "jira",
        json!({"action": "add_comment", "issueIdOrKey": "OPS-1", "body": adf,
               "visibility": {"type": "role", "value": "Administrators"}}),
    )
    .await;
    assert_eq!(jira.last().body["body"], adf);
    assert_eq!(jira.last().body["visibility"]["value"], "Administrators");
    // An object that is not ADF: the fake's 400, readable.
    let text = failed_text(
        &alice,
        "jira_write_actions",
        json!({"action": "add_comment", "issueIdOrKey": "OPS-1", "body": {"text": "hi"}}),
    )
    .await;
    assert!(
        text.contains("HTTP 400: comment: Operation value must be an Atlassian Document"),
        "{text}"
    );
    // get_comments: both, in order, with paging and ordering sent.
    let comments = read(
        &alice,
        "jira",
        json!({"action": "get_comments", "issueIdOrKey": "OPS-1"}),
    )
    .await;
    assert_eq!(comments["total"], 2, "{comments}");
    assert_eq!(comments["comments"][1]["body"], adf);
    assert_eq!(
        comments["comments"][0]["body"]["content"][1]["type"],
        "bulletList"
    );
    let newest = read(
        &alice,
        "jira",
        json!({"action": "get_comments", "issueIdOrKey": "OPS-1", "orderBy": "-created", "maxResults": 1}),
    )
    .await;
    assert_eq!(newest["comments"].as_array().unwrap().len(), 1, "{newest}");
    assert_eq!(newest["comments"][0]["body"], adf, "{newest}");
    assert_eq!(newest["total"], 2);
    assert_eq!(jira.last().query["orderBy"], "-created");

    // transitions: Open → In Progress; the list follows the status.
    let done = write(
        &alice,
        "jira",
        json!({"action": "transition_issue", "issueIdOrKey": "OPS-1", "transition": {"id": "11"}}),
    )
    .await;
    assert_eq!(done["status"], 204, "{done}");
    assert_eq!(jira.last().body, json!({"transition": {"id": "11"}}));
    let issue = read(
        &alice,
        "jira",
        json!({"action": "get_issue", "issueIdOrKey": "OPS-1", "fields": "status"}),
    )
    .await;
    assert_eq!(issue["fields"]["status"]["name"], "In Progress", "{issue}");
    let transitions = read(
        &alice,
        "jira",
        json!({"action": "get_transitions", "issueIdOrKey": "OPS-1"}),
    )
    .await;
    let names: Vec<&str> = transitions["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Stop Progress", "Done"], "{transitions}");
    // A transition not valid in this status: Jira's 400, and nothing moves.
    let text = failed_text(
        &alice,
        "jira_write_actions",
        json!({"action": "transition_issue", "issueIdOrKey": "OPS-1", "transition": {"id": "41"}}),
    )
    .await;
    assert!(
        text.contains("HTTP 400: Transition id '41' is not valid for this issue"),
        "{text}"
    );
    assert_eq!(
        jira.issue("OPS-1").unwrap()["fields"]["status"]["name"],
        "In Progress"
    );
    // The transition's argument is checked by the gateway before Jira.
    let err = call(
        &alice,
        "jira_write_actions",
        json!({"action": "transition_issue", "issueIdOrKey": "OPS-1", "transition": {"name": "Done"}}),
    )
    .await;
    assert_eq!(refusal_of(err), "invalid_arguments");
    // Done, with the screen's resolution and a comment.
    let note = json!({"type": "doc", "version": 1, "content": [
        {"type": "paragraph", "content": [{"type": "text", "text": "Roller replaced."}]}]});
    write(
        &alice,
        "jira",
        json!({"action": "transition_issue", "issueIdOrKey": "OPS-1", "transition": {"id": "31"},
               "fields": {"resolution": {"name": "Won't Do"}},
               "update": {"comment": [{"add": {"body": note}}]}}),
    )
    .await;
    let issue = jira.issue("OPS-1").unwrap();
    assert_eq!(issue["fields"]["status"]["name"], "Done");
    assert_eq!(issue["fields"]["resolution"]["name"], "Won't Do");
    assert_eq!(issue["comments"].as_array().unwrap().len(), 3);

    // delete_issue (high_risk): confirmed, 204, gone.
    let deleted = confirmed_answer(
        &alice,
        "jira_write_actions",
        json!({"action": "delete_issue", "issueIdOrKey": "OPS-1"}),
    )
    .await;
    assert_ne!(deleted.is_error, Some(true), "{}", text_of(&deleted));
    assert_eq!(structured(&deleted)["status"], 204);
    let last = jira.last();
    assert_eq!(
        (last.method.as_str(), last.path.as_str(), last.who.as_str()),
        ("DELETE", "/rest/api/3/issue/OPS-1", "alice@example.com")
    );
    assert!(jira.issue("OPS-1").is_none());
    let text = failed_text(
        &alice,
        "jira_read_actions",
        json!({"action": "get_issue", "issueIdOrKey": "OPS-1"}),
    )
    .await;
    assert!(text.contains("HTTP 404"), "{text}");

    // An issue with a subtask goes only with deleteSubtasks = "true".
    let parent = write(
        &alice,
        "jira",
        json!({"action": "create_issue", "fields": {"project": {"key": "OPS"}, "summary": "Move office", "issuetype": {"name": "Task"}}}),
    )
    .await;
    let parent = parent["key"].as_str().unwrap().to_owned();
    let child = write(
        &alice,
        "jira",
        json!({"action": "create_issue", "fields": {"project": {"key": "OPS"}, "summary": "Pack printers",
               "issuetype": {"name": "Sub-task"}, "parent": {"key": parent}}}),
    )
    .await;
    let child = child["key"].as_str().unwrap().to_owned();
    let first = confirmed_answer(
        &alice,
        "jira_write_actions",
        json!({"action": "delete_issue", "issueIdOrKey": parent}),
    )
    .await;
    assert_eq!(first.is_error, Some(true));
    assert!(
        text_of(&first).contains("has subtasks"),
        "{}",
        text_of(&first)
    );
    assert!(jira.issue(&parent).is_some() && jira.issue(&child).is_some());
    let gone = confirmed_answer(
        &alice,
        "jira_write_actions",
        json!({"action": "delete_issue", "issueIdOrKey": parent, "deleteSubtasks": "true"}),
    )
    .await;
    assert_ne!(gone.is_error, Some(true), "{}", text_of(&gone));
    assert_eq!(jira.last().query["deleteSubtasks"], "true");
    assert!(jira.issue(&parent).is_none() && jira.issue(&child).is_none());

    // Every write reached Jira with Alice's own credential.
    assert!(jira.requests().iter().all(|r| r.who == "alice@example.com"));
    alice.cancel().await.unwrap();
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jira_access_credentials_and_rate_limits() {
    let (jira, gw) = setup().await;
    let bob = rmcp_connect(&gw.url, &gw.token("bob@example.com").await).await;
    let carol = rmcp_connect(&gw.url, &gw.token("carol@example.com").await).await;

    // Bob reads with his own credential; writes are beyond his access.
    let me = read(&bob, "jira", json!({"action": "myself"})).await;
    assert_eq!(me["accountId"], jira.account_id("bob@example.com"));
    assert_eq!(jira.last().who, "bob@example.com");
    let err = call(
        &bob,
        "jira_write_actions",
        json!({"action": "add_comment", "issueIdOrKey": "PROJ-12", "body": "hi"}),
    )
    .await
    .unwrap_err();
    assert!(
        ["risk_not_allowed", "unknown_tool"].contains(&reason_of(&err).as_str()),
        "{err}"
    );
    assert!(jira.requests().iter().all(|r| r.method == "GET"));

    // A credential Jira refuses (a revoked API token): auth_required, for reads and writes.
    store_credential(
        &gw,
        "carol@example.com",
        "jira",
        CredentialKind::Basic,
        "carol@example.com:revoked-token",
    )
    .await;
    let before = jira.hits("POST", "/rest/api/3/issue/PROJ-12/comment");
    let answer = call(
        &carol,
        "jira_write_actions",
        json!({"action": "add_comment", "issueIdOrKey": "PROJ-12", "body": "hi"}),
    )
    .await
    .unwrap();
    assert_eq!(answer.is_error, Some(true));
    let s = answer.structured_content.clone().unwrap();
    assert_eq!(
        (s["auth_required"].clone(), s["service"].clone()),
        (json!(true), json!("jira")),
        "{s}"
    );
    assert!(
        text_of(&answer).contains("You are not authenticated"),
        "{}",
        text_of(&answer)
    );
    assert!(!text_of(&answer).contains("revoked-token"));
    assert_eq!(
        jira.hits("POST", "/rest/api/3/issue/PROJ-12/comment") - before,
        1
    );
    assert!(jira.requests().iter().all(|r| r.who != "carol@example.com"));
    // With her real token back, a delete Jira does not permit her is refused with Jira's reason.
    store_credential(
        &gw,
        "carol@example.com",
        "jira",
        CredentialKind::Basic,
        "carol@example.com:carol-api-token",
    )
    .await;
    let denied = confirmed_answer(
        &carol,
        "jira_write_actions",
        json!({"action": "delete_issue", "issueIdOrKey": "PROJ-12"}),
    )
    .await;
    assert_eq!(denied.is_error, Some(true));
    assert!(
        text_of(&denied).contains("You do not have permission to delete issues"),
        "{}",
        text_of(&denied)
    );
    assert!(jira.issue("PROJ-12").is_some());

    // 429 with a short Retry-After: the gateway waits it out and the read succeeds.
    jira.rate_limit(1, 1);
    let before = jira.hits("GET", "/rest/api/3/myself");
    let me = read(&bob, "jira", json!({"action": "myself"})).await;
    assert_eq!(me["accountId"], jira.account_id("bob@example.com"));
    assert_eq!(
        jira.hits("GET", "/rest/api/3/myself") - before,
        2,
        "one 429, one answer"
    );
    // A long Retry-After comes back to the caller as rate_limited, with the wait.
    jira.rate_limit(5, 120);
    let answer = call(
        &bob,
        "jira_read_actions",
        json!({"action": "get_issue", "issueIdOrKey": "PROJ-12"}),
    )
    .await
    .unwrap();
    assert_eq!(answer.is_error, Some(true));
    let body = answer.structured_content.clone().unwrap();
    assert_eq!(body["error"], "rate_limited", "{body}");
    assert_eq!(body["retry_after"], 120, "{body}");
    assert!(
        text_of(&answer).contains("Rate limit exceeded"),
        "{}",
        text_of(&answer)
    );
    jira.rate_limit(0, 0);
    let issue = read(
        &bob,
        "jira",
        json!({"action": "get_issue", "issueIdOrKey": "PROJ-12"}),
    )
    .await;
    assert_eq!(issue["fields"]["summary"], "Printer on fire");

    // No secret anywhere in the audit.
    for row in gw.audit_rows().await {
        let row = format!("{row:?}");
        for secret in [
            "bob-api-token",
            "carol-api-token",
            "revoked-token",
            ALICE_TOKEN,
        ] {
            assert!(!row.contains(secret), "{row}");
        }
    }
    bob.cancel().await.unwrap();
    carol.cancel().await.unwrap();
    gw.stop().await;
}
