//! The shipped Google catalog (Gmail, Calendar, Drive) through the gateway,
//! with a real MCP client (rmcp), per-user OAuth access tokens from the vault
//! and a googleapis fake that follows the discovery documents.

#[path = "support/fake_google.rs"]
mod fake_google;
mod support;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use fake_google::FakeGoogle;
use mcpgate::vault::CredentialKind;
use serde_json::json;
use support::{
    TestGateway, call, confirmed, failed_text, ok, read, rmcp_connect, store_credential,
    structured, text_of,
};

const ALICE: &str = "alice@example.com";
const ALICE_TOKEN: &str = "ya29.a0-alice-access-token";

async fn setup() -> (FakeGoogle, TestGateway) {
    let google = FakeGoogle::start().await;
    google.add_account(ALICE, ALICE_TOKEN);
    google.add_account("bob@example.com", "ya29.a0-bob-access-token");
    let gw = TestGateway::start(&format!(
        "policy:\n  relax_confirm: [\"google.gmail_send\", \"google.calendar_insert_event\"]\nservices:\n  google: {{ kind: native, catalog: google, base_url: \"{}\" }}\nusers:\n  - email: alice@example.com\n    access: {{ google: high_risk }}\n  - email: bob@example.com\n    access: {{ google: read }}\n",
        google.base_url
    ))
    .await;
    // Google credentials are OAuth token sets; this one is good for an hour (no refresh).
    let expires_at = time::OffsetDateTime::now_utc().unix_timestamp() + 3600;
    let token_set = json!({"access_token": ALICE_TOKEN, "refresh_token": "1//alice-refresh", "expires_at": expires_at});
    store_credential(
        &gw,
        ALICE,
        "google",
        CredentialKind::Oauth,
        &token_set.to_string(),
    )
    .await;
    (google, gw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gmail_reads_and_sends_as_the_subject() {
    let (google, gw) = setup().await;
    let alice = rmcp_connect(&gw.url, &gw.token(ALICE).await).await;
    for i in 0..5 {
        google.deliver(
            ALICE,
            "Marie <marie@example.org>",
            &format!("Invoice {i}"),
            &format!("Please find invoice number {i} attached."),
        );
    }
    google.deliver(ALICE, "news@example.org", "Weekly digest", "Nothing new.");

    let profile = read(&alice, "google", json!({"action": "gmail_get_profile"})).await;
    assert_eq!(profile["messagesTotal"], 6, "{profile}");
    let last = google.last();
    assert_eq!(
        (last.method.as_str(), last.path.as_str(), last.who.as_str()),
        ("GET", "/gmail/v1/users/me/profile", ALICE),
        "userId defaults to me"
    );

    // One page of 2 carries nextPageToken; pages: 3 joins three pages.
    let first = read(
        &alice,
        "google",
        json!({"action": "gmail_list_messages", "q": "subject:invoice", "maxResults": 2}),
    )
    .await;
    assert_eq!(first["messages"].as_array().unwrap().len(), 2, "{first}");
    assert_eq!(first["resultSizeEstimate"], 5);
    let token = first["next_page_token"]
        .as_str()
        .expect("a next page")
        .to_owned();
    assert!(first.get("nextPageToken").is_none(), "{first}");
    let before = google.hits("/gmail/v1/users/me/messages");
    let all = read(
        &alice,
        "google",
        json!({"action": "gmail_list_messages", "q": "subject:invoice", "maxResults": 2, "pages": 3}),
    )
    .await;
    let ids: Vec<String> = all["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 5, "{all}");
    assert!(
        all.get("next_page_token").is_none() && all.get("nextPageToken").is_none(),
        "no stale token of page 1: {all}"
    );
    assert_eq!(google.hits("/gmail/v1/users/me/messages") - before, 3);
    let page_tokens: Vec<Option<String>> = google
        .received()
        .iter()
        .filter(|r| r.path == "/gmail/v1/users/me/messages")
        .skip(before)
        .map(|r| r.query.get("pageToken").cloned())
        .collect();
    assert!(
        page_tokens[0].is_none() && page_tokens[1].as_deref() == Some(token.as_str()),
        "{page_tokens:?}"
    );
    // The caller can continue from a token too.
    let rest = read(
        &alice,
        "google",
        json!({"action": "gmail_list_messages", "q": "subject:invoice", "maxResults": 2, "pageToken": token}),
    )
    .await;
    assert_eq!(rest["messages"][0]["id"], ids[2].as_str());

    // messages.get (newest first: invoice 4); the sender's address is pseudonymized.
    let message = read(
        &alice,
        "google",
        json!({"action": "gmail_get_message", "id": ids[0]}),
    )
    .await;
    let text = message.to_string();
    assert!(
        text.contains("Invoice 4") && text.contains("invoice number 4"),
        "{text}"
    );
    assert!(!text.contains("marie@example.org"), "{text}");
    assert_eq!(
        google.last().path,
        format!("/gmail/v1/users/me/messages/{}", ids[0])
    );
    let raw = read(
        &alice,
        "google",
        json!({"action": "gmail_get_message", "id": ids[0], "format": "raw"}),
    )
    .await;
    // The source arrives decoded, so the sender's address in it is pseudonymized too.
    let source_text = raw["raw"].as_str().unwrap_or_default();
    assert!(source_text.contains("Subject: Invoice 4"), "{raw}");
    assert!(!source_text.contains("marie@example.org"), "{raw}");
    assert_eq!(google.last().query["format"], "raw");

    // send: the caller writes the RFC 2822 message as text; the gateway
    // base64url-encodes it and sends it as Alice; Bob receives it.
    let source = "To: Bob <bob@example.com>\r\nSubject: Lunch on Friday?\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nShall we try the new place at 12:30?\r\n";
    let raw = URL_SAFE_NO_PAD.encode(source);
    let sent = ok(
        &alice,
        "google_write_actions",
        json!({"action": "gmail_send", "raw": source}),
    )
    .await;
    let sent = structured(&sent);
    assert_eq!(sent["labelIds"], json!(["SENT"]), "{sent}");
    let last = google.last();
    assert_eq!(
        (last.method.as_str(), last.path.as_str(), last.who.as_str()),
        ("POST", "/gmail/v1/users/me/messages/send", ALICE)
    );
    assert_eq!(last.body, json!({"raw": raw}));
    let bob_box = google.mailbox("bob@example.com");
    assert_eq!(bob_box.len(), 1);
    assert!(bob_box[0].0.contains(&"INBOX".to_owned()));
    assert!(bob_box[0].2.contains("new place at 12:30"));
    // Alice finds it in her sent mail by its subject.
    let found = read(
        &alice,
        "google",
        json!({"action": "gmail_list_messages", "q": "in:sent lunch"}),
    )
    .await;
    assert_eq!(found["messages"][0]["id"], sent["id"], "{found}");

    // Google's own errors are readable tool errors.
    let missing = failed_text(
        &alice,
        "google_read_actions",
        json!({"action": "gmail_get_message", "id": "ffffffffffffffff"}),
    )
    .await;
    assert!(
        missing.contains("HTTP 404: Requested entity was not found. (NOT_FOUND)"),
        "{missing}"
    );
    let no_recipient = failed_text(
        &alice,
        "google_write_actions",
        json!({"action": "gmail_send", "raw": "Subject: hi\r\n\r\nbody"}),
    )
    .await;
    assert!(
        no_recipient.contains("HTTP 400: Recipient address required (INVALID_ARGUMENT)"),
        "{no_recipient}"
    );

    alice.cancel().await.unwrap();
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calendar_events_are_created_read_and_deleted_as_the_subject() {
    let (google, gw) = setup().await;
    let alice = rmcp_connect(&gw.url, &gw.token(ALICE).await).await;

    let calendars = read(
        &alice,
        "google",
        json!({"action": "calendar_list_calendars"}),
    )
    .await;
    assert_eq!(calendars["items"][0]["primary"], true, "{calendars}");
    assert_eq!(google.last().path, "/calendar/v3/users/me/calendarList");

    // insert (write): into the primary calendar by default.
    let created = ok(
        &alice,
        "google_write_actions",
        json!({
            "action": "calendar_insert_event",
            "summary": "Quarterly review",
            "description": "Numbers and next steps",
            "start": {"dateTime": "2026-12-03T10:00:00+01:00"},
            "end": {"dateTime": "2026-12-03T11:00:00+01:00"},
            "attendees": [{"email": "bob@example.com"}],
            "sendUpdates": "all"
        }),
    )
    .await;
    let created = structured(&created);
    let event_id = created["id"].as_str().expect("an id").to_owned();
    assert_eq!(created["status"], "confirmed", "{created}");
    let last = google.last();
    assert_eq!(
        (last.method.as_str(), last.path.as_str(), last.who.as_str()),
        ("POST", "/calendar/v3/calendars/primary/events", ALICE)
    );
    assert_eq!(last.query["sendUpdates"], "all");
    assert_eq!(last.body["summary"], "Quarterly review");
    assert_eq!(last.body["start"]["dateTime"], "2026-12-03T10:00:00+01:00");
    assert_eq!(last.body["attendees"][0]["email"], "bob@example.com");
    assert!(
        last.body.get("sendUpdates").is_none(),
        "a query param, not a body field"
    );
    for day in 4..=8 {
        ok(
            &alice,
            "google_write_actions",
            json!({
                "action": "calendar_insert_event",
                "summary": format!("Standup {day}"),
                "start": {"dateTime": format!("2026-12-0{day}T09:00:00Z")},
                "end": {"dateTime": format!("2026-12-0{day}T09:15:00Z")}
            }),
        )
        .await;
    }
    assert_eq!(google.events(ALICE).len(), 6);

    // get reads back what was created.
    let event = read(
        &alice,
        "google",
        json!({"action": "calendar_get_event", "eventId": event_id}),
    )
    .await;
    assert_eq!(event["summary"], "Quarterly review");
    assert_eq!(event["description"], "Numbers and next steps");
    // Attendees come back pseudonymized; a pseudonym passed back reaches Google as the real address.
    let bob = event["attendees"][0]["email"].as_str().unwrap().to_owned();
    assert!(bob.ends_with("@pseudonym.invalid"), "{event}");
    let follow_up = ok(
        &alice,
        "google_write_actions",
        json!({"action": "calendar_insert_event", "summary": "Kick-off follow-up",
               "start": {"date": "2026-12-01"}, "end": {"date": "2026-12-02"},
               "attendees": [{"email": bob}]}),
    )
    .await;
    assert_eq!(
        google.last().body["attendees"][0]["email"],
        "bob@example.com"
    );
    let follow_up = structured(&follow_up);
    assert_eq!(follow_up["start"]["date"], "2026-12-01", "{follow_up}");

    // list: a time window, ordered, paged (maxResults 2, pages 3 → 5 standups).
    let agenda = read(
        &alice,
        "google",
        json!({"action": "calendar_list_events", "timeMin": "2026-12-04T00:00:00Z",
               "singleEvents": true, "orderBy": "startTime", "maxResults": 2, "pages": 3}),
    )
    .await;
    let titles: Vec<&str> = agenda["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["summary"].as_str().unwrap())
        .collect();
    assert_eq!(
        titles,
        [
            "Standup 4",
            "Standup 5",
            "Standup 6",
            "Standup 7",
            "Standup 8"
        ],
        "{agenda}"
    );
    assert!(agenda.get("next_page_token").is_none(), "{agenda}");
    let last = google.last();
    assert_eq!(last.path, "/calendar/v3/calendars/primary/events");
    assert_eq!(last.query["singleEvents"], "true");
    assert_eq!(last.query["timeMin"], "2026-12-04T00:00:00Z");
    assert!(last.query.contains_key("pageToken"));
    let one = read(
        &alice,
        "google",
        json!({"action": "calendar_list_events", "q": "standup", "maxResults": 4}),
    )
    .await;
    assert_eq!(one["items"].as_array().unwrap().len(), 4);
    assert!(one["next_page_token"].is_string(), "{one}");

    // Calendar's own errors.
    let bad = failed_text(
        &alice,
        "google_write_actions",
        json!({"action": "calendar_insert_event", "summary": "Backwards",
               "start": {"dateTime": "2026-12-03T11:00:00Z"}, "end": {"dateTime": "2026-12-03T10:00:00Z"}}),
    )
    .await;
    assert!(
        bad.contains("HTTP 400: The specified time range is empty."),
        "{bad}"
    );
    let unordered = failed_text(
        &alice,
        "google_read_actions",
        json!({"action": "calendar_list_events", "orderBy": "startTime"}),
    )
    .await;
    assert!(
        unordered.contains("The requested ordering is not available"),
        "{unordered}"
    );

    // delete is high_risk: nothing reaches Google before the confirmation.
    let before = google.received().len();
    let ask = ok(
        &alice,
        "google_write_actions",
        json!({"action": "calendar_delete_event", "eventId": event_id}),
    )
    .await;
    assert_eq!(
        ask.structured_content.unwrap()["confirmation_required"],
        true
    );
    assert_eq!(google.received().len(), before);
    confirmed(
        &alice,
        "google_write_actions",
        json!({"action": "calendar_delete_event", "eventId": event_id, "sendUpdates": "none"}),
    )
    .await;
    let last = google.last();
    assert_eq!(
        (last.method.as_str(), last.path.as_str(), last.who.as_str()),
        (
            "DELETE",
            format!("/calendar/v3/calendars/primary/events/{event_id}").as_str(),
            ALICE
        )
    );
    let event = read(
        &alice,
        "google",
        json!({"action": "calendar_get_event", "eventId": event_id}),
    )
    .await;
    assert_eq!(event["status"], "cancelled");
    let listed = read(&alice, "google", json!({"action": "calendar_list_events"})).await;
    assert!(
        listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["id"] != event_id.as_str()),
        "{listed}"
    );
    // Deleting it again: Google's 410.
    let again = ok(
        &alice,
        "google_write_actions",
        json!({"action": "calendar_delete_event", "eventId": event_id}),
    )
    .await;
    let token = again.structured_content.unwrap()["confirm"].clone();
    let gone = call(
        &alice,
        "google_write_actions",
        json!({"action": "calendar_delete_event", "eventId": event_id, "confirm": token}),
    )
    .await
    .unwrap();
    assert_eq!(gone.is_error, Some(true));
    assert!(
        text_of(&gone).contains("HTTP 410: Resource has been deleted"),
        "{}",
        text_of(&gone)
    );

    alice.cancel().await.unwrap();
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drive_files_are_listed_exported_and_deleted_as_the_subject() {
    let (google, gw) = setup().await;
    let alice = rmcp_connect(&gw.url, &gw.token(ALICE).await).await;
    let doc = google.add_file(
        ALICE,
        "Budget 2027 notes",
        "application/vnd.google-apps.document",
        "Travel budget: 12 000 EUR. Hiring: two engineers.",
    );
    let sheet = google.add_file(
        ALICE,
        "Budget 2027",
        "application/vnd.google-apps.spreadsheet",
        "item,amount\ntravel,12000\nhiring,240000\n",
    );
    let pdf = google.add_file(ALICE, "Budget 2026.pdf", "application/pdf", "%PDF-1.7 …");
    google.add_file(ALICE, "Holiday photo.jpg", "image/jpeg", "\u{FFD8}");
    google.add_file(
        "bob@example.com",
        "Bob's budget",
        "application/vnd.google-apps.document",
        "secret",
    );

    // list: a query, the catalog's default field selection, pages.
    let page = read(
        &alice,
        "google",
        json!({"action": "drive_list_files", "q": "name contains 'budget' and trashed = false", "pageSize": 2}),
    )
    .await;
    assert_eq!(page["files"].as_array().unwrap().len(), 2, "{page}");
    assert!(page["next_page_token"].is_string(), "{page}");
    let last = google.last();
    assert_eq!(
        (last.path.as_str(), last.who.as_str()),
        ("/drive/v3/files", ALICE)
    );
    assert_eq!(
        last.query["q"],
        "name contains 'budget' and trashed = false"
    );
    assert!(last.query["fields"].contains("files(id,name,mimeType,modifiedTime"));
    assert!(
        page["files"][0]["modifiedTime"].is_string(),
        "the default fields ask for more than Drive's minimum: {page}"
    );
    let all = read(
        &alice,
        "google",
        json!({"action": "drive_list_files", "q": "name contains 'budget'", "pageSize": 2, "pages": 5, "orderBy": "name"}),
    )
    .await;
    let names: Vec<&str> = all["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["Budget 2026.pdf", "Budget 2027", "Budget 2027 notes"],
        "{all}"
    );
    // A caller's own field selection is passed through.
    let slim = read(
        &alice,
        "google",
        json!({"action": "drive_list_files", "fields": "files(id)", "q": "mimeType = 'image/jpeg'"}),
    )
    .await;
    assert_eq!(slim["files"][0].as_object().unwrap().len(), 1, "{slim}");

    // get: metadata with the default fields.
    let meta = read(
        &alice,
        "google",
        json!({"action": "drive_get_file", "fileId": sheet}),
    )
    .await;
    assert_eq!(meta["name"], "Budget 2027");
    assert_eq!(meta["mimeType"], "application/vnd.google-apps.spreadsheet");
    assert_eq!(meta["trashed"], false, "{meta}");
    assert_eq!(google.last().path, format!("/drive/v3/files/{sheet}"));

    // export: the text itself, not JSON.
    let text = text_of(
        &ok(
            &alice,
            "google_read_actions",
            json!({"action": "drive_export_file", "fileId": doc}),
        )
        .await,
    );
    assert!(text.contains("Hiring: two engineers."), "{text}");
    assert_eq!(
        google.last().query["mimeType"],
        "text/plain",
        "the catalog default"
    );
    let csv = text_of(
        &ok(
            &alice,
            "google_read_actions",
            json!({"action": "drive_export_file", "fileId": sheet, "mimeType": "text/csv"}),
        )
        .await,
    );
    assert!(csv.starts_with("item,amount\ntravel,12000"), "{csv}");
    let wrong = failed_text(
        &alice,
        "google_read_actions",
        json!({"action": "drive_export_file", "fileId": sheet, "mimeType": "text/plain"}),
    )
    .await;
    assert!(
        wrong.contains("HTTP 400: The requested conversion is not supported. (INVALID_ARGUMENT)"),
        "{wrong}"
    );
    // A binary file cannot be exported: Google's 403 is a permission error, not a credential refusal.
    let pdf_export = call(
        &alice,
        "google_read_actions",
        json!({"action": "drive_export_file", "fileId": pdf}),
    )
    .await
    .unwrap();
    assert_eq!(pdf_export.is_error, Some(true));
    let text = text_of(&pdf_export);
    assert!(
        text.contains("Export only supports Docs Editors files.")
            && !text.contains("auth_required"),
        "{text}"
    );

    // delete is high_risk; then the file is gone (Google's 404 shape).
    let before = google.received().len();
    let ask = ok(
        &alice,
        "google_write_actions",
        json!({"action": "drive_delete_file", "fileId": pdf}),
    )
    .await;
    assert_eq!(
        ask.structured_content.unwrap()["confirmation_required"],
        true
    );
    assert_eq!(google.received().len(), before);
    confirmed(
        &alice,
        "google_write_actions",
        json!({"action": "drive_delete_file", "fileId": pdf}),
    )
    .await;
    let last = google.last();
    assert_eq!(
        (last.method.as_str(), last.path.as_str(), last.who.as_str()),
        ("DELETE", format!("/drive/v3/files/{pdf}").as_str(), ALICE)
    );
    assert!(!google.file_exists(&pdf));
    let missing = failed_text(
        &alice,
        "google_read_actions",
        json!({"action": "drive_get_file", "fileId": pdf}),
    )
    .await;
    assert!(
        missing.contains(&format!("HTTP 404: File not found: {pdf}. (NOT_FOUND)")),
        "{missing}"
    );
    // Bob's file is not Alice's to see.
    let others = read(
        &alice,
        "google",
        json!({"action": "drive_list_files", "q": "fullText contains 'secret'"}),
    )
    .await;
    assert_eq!(others["files"], json!([]), "{others}");

    alice.cancel().await.unwrap();
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn google_refusals_are_auth_required_and_rate_limits_are_waited_out() {
    let (google, gw) = setup().await;
    // No credential: auth_required, Google never called.
    let bob = rmcp_connect(&gw.url, &gw.token("bob@example.com").await).await;
    let answer = call(
        &bob,
        "google_read_actions",
        json!({"action": "gmail_get_profile"}),
    )
    .await
    .unwrap();
    assert_eq!(answer.is_error, Some(true));
    assert_eq!(answer.structured_content.unwrap()["auth_required"], true);
    assert_eq!(google.received().len(), 0);
    // An access token Google refuses (401 UNAUTHENTICATED): auth_required, secret not leaked.
    store_credential(
        &gw,
        "bob@example.com",
        "google",
        CredentialKind::Token,
        "ya29.expired-bob-token",
    )
    .await;
    let answer = call(
        &bob,
        "google_read_actions",
        json!({"action": "drive_list_files"}),
    )
    .await
    .unwrap();
    let text = text_of(&answer);
    assert_eq!(answer.is_error, Some(true));
    assert_eq!(
        answer.structured_content.clone().unwrap()["auth_required"],
        true,
        "{text}"
    );
    assert!(
        text.contains("refused your credential") && text.contains("UNAUTHENTICATED"),
        "{text}"
    );
    assert!(!text.contains("ya29.expired-bob-token"));
    for row in gw.audit_rows().await {
        let row = format!("{row:?}");
        assert!(
            !row.contains("ya29.expired-bob-token")
                && !row.contains(ALICE_TOKEN)
                && !row.contains("1//alice-refresh"),
            "{row}"
        );
    }

    // 429 RESOURCE_EXHAUSTED with a short Retry-After: waited out.
    let alice = rmcp_connect(&gw.url, &gw.token(ALICE).await).await;
    google.rate_limit(1, 1);
    let started = std::time::Instant::now();
    let profile = read(&alice, "google", json!({"action": "gmail_get_profile"})).await;
    assert!(profile["messagesTotal"].is_number(), "{profile}");
    assert!(started.elapsed() >= std::time::Duration::from_secs(1));
    assert_eq!(
        google.hits("/gmail/v1/users/me/profile"),
        2,
        "one 429, one answer"
    );
    // A long one comes back as rate_limited, and nothing was created.
    google.rate_limit(10, 300);
    let limited = call(
        &alice,
        "google_write_actions",
        json!({"action": "calendar_insert_event", "summary": "x",
               "start": {"date": "2026-12-10"}, "end": {"date": "2026-12-11"}}),
    )
    .await
    .unwrap();
    assert_eq!(limited.is_error, Some(true));
    let body = limited.structured_content.clone().unwrap();
    assert_eq!(body["error"], "rate_limited", "{body}");
    assert_eq!(body["retry_after"], 300, "{body}");
    assert!(
        text_of(&limited).contains("RESOURCE_EXHAUSTED"),
        "{}",
        text_of(&limited)
    );
    assert!(google.events(ALICE).is_empty());

    alice.cancel().await.unwrap();
    bob.cancel().await.unwrap();
    gw.stop().await;
}
