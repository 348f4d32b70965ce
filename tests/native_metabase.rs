//! The shipped Metabase catalog through the gateway, with a real MCP client
//! (rmcp), the subject's own API key from the vault (`x-api-key`) and a
//! Metabase fake that follows `../shared/specs/metabase/`.

mod support;

#[path = "support/fake_metabase.rs"]
mod fake_metabase;

use fake_metabase::FakeMetabase;
use mcpgate::vault::CredentialKind;
use rmcp::model::CallToolResult;
use serde_json::{Value, json};
use support::{
    Client, TestGateway, answered, ask_confirmation, call, json_of, ok_structured, reason_of,
    rmcp_connect, store_credential, structured_answer, text_of, with_confirm,
};

const READ: &str = "metabase_read_actions";
const WRITE: &str = "metabase_write_actions";

struct World {
    mb: FakeMetabase,
    gw: TestGateway,
    db: u64,
    /// alice's "Paid orders", bob's "Cities", an archived one.
    paid: u64,
    cities: u64,
    /// bob's card with a {{status}} variable.
    by_status: u64,
    archived: u64,
    dashboard: u64,
}

async fn world() -> World {
    let mb = FakeMetabase::start().await;
    let alice_id = mb.add_user(
        "alice@example.com",
        "Alice",
        "Martin",
        "mb_alice_key",
        false,
    );
    let bob_id = mb.add_user("bob@example.com", "Bob", "Stone", "mb_bob_key", false);
    let db = mb.add_database("Warehouse", "postgres");
    mb.add_table(
        db,
        "orders",
        &[
            ("ID", "type/BigInteger"),
            ("TOTAL", "type/Float"),
            ("STATUS", "type/Text"),
        ],
        vec![
            vec![json!(1), json!(120.5), json!("paid")],
            vec![json!(2), json!(80.0), json!("refunded")],
            vec![json!(3), json!(42.0), json!("paid")],
            vec![json!(4), json!(13.25), json!("open")],
        ],
    );
    mb.add_table(
        db,
        "people",
        &[("ID", "type/BigInteger"), ("CITY", "type/Text")],
        vec![
            vec![json!(1), json!("Lyon")],
            vec![json!(2), json!("Porto")],
        ],
    );
    // A database only superusers may query (neither Alice nor Bob is one).
    let hr = mb.add_database("HR", "postgres");
    mb.add_table(
        hr,
        "salaries",
        &[("ID", "type/BigInteger"), ("AMOUNT", "type/Float")],
        vec![vec![json!(1), json!(5000.0)]],
    );
    mb.restrict_database(hr);
    let paid = mb.add_card(
        "Paid orders",
        db,
        "SELECT ID, TOTAL FROM ORDERS WHERE STATUS = 'paid'",
        alice_id,
    );
    let cities = mb.add_card("Cities", db, "SELECT CITY FROM PEOPLE", bob_id);
    let by_status = mb.add_card(
        "Orders by status",
        db,
        "SELECT ID FROM ORDERS WHERE STATUS = {{status}}",
        bob_id,
    );
    let archived = mb.add_card("Old report", db, "SELECT ID FROM ORDERS", alice_id);
    mb.archive_card(archived);
    let dashboard = mb.add_dashboard("Sales", &[paid, cities], alice_id);
    let gw = TestGateway::start(&format!(
        "services:\n  metabase: {{ kind: native, catalog: metabase, base_url: \"{}\" }}\nusers:\n  - email: alice@example.com\n    access: {{ metabase: high_risk }}\n  - email: bob@example.com\n    access: {{ metabase: read }}\n",
        mb.base_url
    ))
    .await;
    store_credential(
        &gw,
        "alice@example.com",
        "metabase",
        CredentialKind::Token,
        "mb_alice_key",
    )
    .await;
    World {
        mb,
        gw,
        db,
        paid,
        cities,
        by_status,
        archived,
        dashboard,
    }
}

/// A high_risk call: the first answer asks for confirmation (and runs
/// nothing), the same call with the token runs.
async fn confirmed(client: &Client, mb: &FakeMetabase, arguments: Value) -> CallToolResult {
    let before = mb.received().len();
    let preview = ask_confirmation(client, WRITE, arguments.clone()).await;
    assert_eq!(preview["risk"], "high_risk", "{preview}");
    assert_eq!(
        mb.received().len(),
        before,
        "nothing runs before the human says so"
    );
    answered(client, WRITE, with_confirm(arguments, &preview)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metabase_reads_run_with_the_subjects_own_api_key() {
    let World {
        mb,
        gw,
        db,
        paid,
        cities,
        by_status,
        archived,
        dashboard,
    } = world().await;
    let alice = rmcp_connect(&gw.url, &gw.token("alice@example.com").await).await;
    let tools = alice.peer().list_all_tools().await.unwrap();
    let read_tool = tools
        .iter()
        .find(|t| t.name == "metabase_read_actions")
        .expect("metabase_read_actions listed");
    let description = read_tool.description.as_deref().unwrap_or_default();
    for action in [
        "native_query",
        "get_card",
        "query_card",
        "list_cards",
        "get_dashboard",
        "list_databases",
        "current_user",
    ] {
        assert!(description.contains(action), "{action} in {description}");
    }

    // A native query: the SQL nests under native.query, type defaults to native.
    let sql = "SELECT ID, TOTAL FROM ORDERS WHERE STATUS = 'paid'";
    let answer = structured_answer(
        &alice,
        READ,
        json!({"action": "native_query", "database": db, "query": sql}),
    )
    .await;
    assert_eq!(answer["status"], "completed", "{answer}");
    assert_eq!(answer["row_count"], 2);
    assert_eq!(answer["data.rows"], json!([[1, 120.5], [3, 42.0]]));
    let names: Vec<&str> = answer["data.cols"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ID", "TOTAL"]);
    let last = mb.received().last().unwrap().clone();
    assert_eq!(
        (last.method.as_str(), last.path.as_str(), last.who.as_str()),
        ("POST", "/api/dataset/", "alice@example.com")
    );
    assert_eq!(
        last.body,
        json!({"database": db, "type": "native", "native": {"query": sql}})
    );
    // A failed query answers 202 with status failed: a tool error, readable.
    let failed = answered(
        &alice,
        READ,
        json!({"action": "native_query", "database": db, "query": "SELECT * FROM NOPE"}),
    )
    .await;
    assert_eq!(failed.is_error, Some(true), "{}", text_of(&failed));
    assert!(
        text_of(&failed).contains("Table \"NOPE\" not found"),
        "{}",
        text_of(&failed)
    );

    // Metabase's 403 is a permission error, not a refused credential.
    let denied = answered(
        &alice,
        READ,
        json!({"action": "native_query", "database": 2, "query": "SELECT * FROM SALARIES"}),
    )
    .await;
    assert_eq!(denied.is_error, Some(true));
    assert_eq!(
        text_of(&denied),
        "HTTP 403: You don't have permissions to do that."
    );
    assert!(
        denied
            .structured_content
            .as_ref()
            .is_none_or(|s| s.get("auth_required").is_none())
    );

    // Cards: MBQL 5 by default, legacy MBQL on request (legacy-mbql on the wire).
    let card = structured_answer(&alice, READ, json!({"action": "get_card", "id": paid})).await;
    assert_eq!(card["name"], "Paid orders");
    assert_eq!(card["dataset_query"]["stages"][0]["native"], sql, "{card}");
    let legacy = structured_answer(
        &alice,
        READ,
        json!({"action": "get_card", "id": paid, "legacy_mbql": true}),
    )
    .await;
    assert_eq!(legacy["dataset_query"]["native"]["query"], sql, "{legacy}");
    let last = mb.received().last().unwrap().clone();
    assert_eq!(last.path, format!("/api/card/{paid}"));
    assert_eq!(last.query["legacy-mbql"], "true");
    let missing = answered(&alice, READ, json!({"action": "get_card", "id": 999})).await;
    assert_eq!(missing.is_error, Some(true));
    assert_eq!(text_of(&missing), "HTTP 404: Not found.");
    let invalid = answered(&alice, READ, json!({"action": "get_card", "id": 0})).await;
    assert_eq!(invalid.is_error, Some(true));
    assert!(
        text_of(&invalid).contains("HTTP 400: id: value must be an integer greater than zero"),
        "{}",
        text_of(&invalid)
    );

    // Running a card (alone, then as on its dashboard).
    let ran = structured_answer(
        &alice,
        READ,
        json!({"action": "query_card", "card-id": paid}),
    )
    .await;
    assert_eq!(ran["data.rows"], json!([[1, 120.5], [3, 42.0]]), "{ran}");
    let last = mb.received().last().unwrap().clone();
    assert_eq!(
        (last.method.as_str(), last.path),
        ("POST", format!("/api/card/{paid}/query"))
    );
    assert_eq!(last.body, json!({"ignore_cache": false}));
    let on_dashboard = structured_answer(
        &alice,
        READ,
        json!({"action": "query_card", "card-id": cities, "dashboard_id": dashboard, "ignore_cache": true}),
    )
    .await;
    assert_eq!(on_dashboard["data.rows"], json!([["Lyon"], ["Porto"]]));
    assert_eq!(
        mb.received().last().unwrap().body,
        json!({"ignore_cache": true, "dashboard_id": dashboard})
    );

    // A card's variables get their values from `parameters`.
    let refunded = structured_answer(
        &alice,
        READ,
        json!({
            "action": "query_card",
            "card-id": by_status,
            "parameters": [{"type": "category", "target": ["variable", ["template-tag", "status"]], "value": "refunded"}],
        }),
    )
    .await;
    assert_eq!(refunded["data.rows"], json!([[2]]), "{refunded}");
    assert_eq!(
        mb.received().last().unwrap().body["parameters"][0]["value"],
        "refunded"
    );
    let unanswered = answered(
        &alice,
        READ,
        json!({"action": "query_card", "card-id": by_status}),
    )
    .await;
    assert_eq!(unanswered.is_error, Some(true));
    assert!(
        text_of(&unanswered).contains("You'll need to pick a value for 'status'"),
        "{}",
        text_of(&unanswered)
    );

    // Card lists: the default hides archived cards; f filters.
    let ids = |v: &Value| -> Vec<u64> {
        v.as_array()
            .unwrap_or_else(|| panic!("{v}"))
            .iter()
            .map(|c| c["id"].as_u64().unwrap())
            .collect()
    };
    let all = json_of(&answered(&alice, READ, json!({"action": "list_cards"})).await);
    assert_eq!(ids(&all), [paid, cities, by_status]);
    let mine = json_of(&answered(&alice, READ, json!({"action": "list_cards", "f": "mine"})).await);
    assert_eq!(ids(&mine), [paid]);
    assert_eq!(mb.received().last().unwrap().query["f"], "mine");
    let old = json_of(
        &answered(
            &alice,
            READ,
            json!({"action": "list_cards", "f": "archived"}),
        )
        .await,
    );
    assert_eq!(ids(&old), [archived]);

    // A dashboard and its cards.
    let board = structured_answer(
        &alice,
        READ,
        json!({"action": "get_dashboard", "id": dashboard}),
    )
    .await;
    assert_eq!(board["name"], "Sales");
    let on_board: Vec<u64> = board["dashcards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["card_id"].as_u64().unwrap())
        .collect();
    assert_eq!(on_board, [paid, cities]);

    // Databases, with tables on request.
    let dbs = structured_answer(&alice, READ, json!({"action": "list_databases"})).await;
    assert_eq!(dbs["total"], 1, "HR is not listed for Alice: {dbs}");
    assert_eq!(dbs["data"][0]["name"], "Warehouse");
    assert!(dbs["data"][0].get("tables").is_none());
    let with_tables = structured_answer(
        &alice,
        READ,
        json!({"action": "list_databases", "include": "tables", "saved": true}),
    )
    .await;
    let tables: Vec<&str> = with_tables["data"][0]["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(tables, ["ORDERS", "PEOPLE"]);
    assert_eq!(with_tables["total"], 2, "the saved-questions database too");
    let last = mb.received().last().unwrap().clone();
    assert_eq!(last.query["include"], "tables");
    assert_eq!(last.query["saved"], "true");

    // The user the key acts as.
    let me = structured_answer(&alice, READ, json!({"action": "current_user"})).await;
    assert_eq!(me["id"], 1);
    assert_eq!(me["is_superuser"], false);
    assert!(
        !text_of(&answered(&alice, READ, json!({"action": "current_user"})).await)
            .contains("alice@example.com")
    );
    assert_eq!(mb.received().last().unwrap().path, "/api/user/current");

    // A proxy's 429 with a short Retry-After: waited out, then done.
    mb.rate_limit_next(1, 1);
    let before = mb.received().len();
    structured_answer(&alice, READ, json!({"action": "list_databases"})).await;
    let attempts: Vec<bool> = mb.received()[before..]
        .iter()
        .map(|r| r.rate_limited)
        .collect();
    assert_eq!(attempts, [true, false]);

    // Bob: no key, then a key Metabase refuses (plain-text 401): auth_required.
    let bob = rmcp_connect(&gw.url, &gw.token("bob@example.com").await).await;
    let answer = answered(&bob, READ, json!({"action": "current_user"})).await;
    assert_eq!(answer.is_error, Some(true));
    assert_eq!(answer.structured_content.unwrap()["auth_required"], true);
    store_credential(
        &gw,
        "bob@example.com",
        "metabase",
        CredentialKind::Token,
        "mb_stale_key",
    )
    .await;
    let before = mb.received().len();
    let answer = answered(&bob, READ, json!({"action": "current_user"})).await;
    let text = text_of(&answer);
    assert_eq!(
        answer.structured_content.clone().unwrap()["auth_required"],
        true,
        "{text}"
    );
    assert!(
        text.contains("refused your credential") && text.contains("Unauthenticated"),
        "{text}"
    );
    assert!(!text.contains("mb_stale_key"));
    assert_eq!(mb.received().len(), before);
    store_credential(
        &gw,
        "bob@example.com",
        "metabase",
        CredentialKind::Token,
        "mb_bob_key",
    )
    .await;
    let mine = json_of(&answered(&bob, READ, json!({"action": "list_cards", "f": "mine"})).await);
    assert_eq!(ids(&mine), [cities, by_status]);
    assert_eq!(mb.received().last().unwrap().who, "bob@example.com");
    for row in gw.audit_rows().await {
        let row = format!("{row:?}");
        assert!(
            !row.contains("mb_alice_key") && !row.contains("mb_stale_key"),
            "{row}"
        );
    }
    alice.cancel().await.unwrap();
    bob.cancel().await.unwrap();
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metabase_sql_sets_the_risk_and_destruction_waits_for_the_human() {
    let World {
        mb,
        gw,
        db,
        paid,
        cities,
        dashboard,
        ..
    } = world().await;
    store_credential(
        &gw,
        "bob@example.com",
        "metabase",
        CredentialKind::Token,
        "mb_bob_key",
    )
    .await;
    let alice = rmcp_connect(&gw.url, &gw.token("alice@example.com").await).await;
    let bob = rmcp_connect(&gw.url, &gw.token("bob@example.com").await).await;
    let native = |sql: &str| json!({"action": "native_query", "database": db, "query": sql});

    // DML/DDL through the read tool never runs.
    for (client, sql) in [
        (&bob, "DROP TABLE ORDERS"),
        (&alice, "DROP TABLE ORDERS"),
        (&alice, "DELETE FROM ORDERS"),
        (&alice, "INSERT INTO ORDERS VALUES (9, 1.0, 'paid')"),
    ] {
        let e = call(client, "metabase_read_actions", native(sql))
            .await
            .expect_err(sql);
        assert!(
            ["wrong_tool", "risk_not_allowed"].contains(&reason_of(&e).as_str()),
            "{sql}: {e}"
        );
    }
    assert!(mb.received().is_empty(), "nothing reached Metabase");
    assert!(mb.table_exists(db, "ORDERS"));

    // An INSERT is a write: it runs without confirmation. Metabase runs the
    // statement, then reports the missing result set as a failed query (202).
    let inserted = call(
        &alice,
        "metabase_write_actions",
        native("INSERT INTO ORDERS VALUES (9, 1.0, 'paid')"),
    )
    .await
    .unwrap();
    assert_eq!(inserted.is_error, Some(true));
    assert!(
        text_of(&inserted).contains("No results were returned by the query."),
        "{}",
        text_of(&inserted)
    );
    let count = structured_answer(
        &alice,
        READ,
        native("SELECT COUNT(*) FROM ORDERS WHERE STATUS = 'paid'"),
    )
    .await;
    assert_eq!(count["data.rows"], json!([[3]]), "the insert ran");

    // DROP TABLE: the human confirms, then it runs with Alice's key.
    confirmed(&alice, &mb, native("DROP TABLE PEOPLE")).await;
    assert!(!mb.table_exists(db, "PEOPLE"));
    let last = mb.received().last().unwrap().clone();
    assert_eq!(
        (last.path.as_str(), last.who.as_str()),
        ("/api/dataset/", "alice@example.com")
    );
    let broken = answered(
        &alice,
        READ,
        json!({"action": "query_card", "card-id": cities}),
    )
    .await;
    assert_eq!(broken.is_error, Some(true));
    assert!(
        text_of(&broken).contains("Table \"PEOPLE\" not found"),
        "{}",
        text_of(&broken)
    );

    // Updating a dashboard replaces its cards wholesale: high_risk.
    let board = structured_answer(
        &alice,
        READ,
        json!({"action": "get_dashboard", "id": dashboard}),
    )
    .await;
    let keep = board["dashcards"][0].clone();
    assert_eq!(keep["card_id"], paid);
    let layout =
        json!([{"id": keep["id"], "card_id": paid, "row": 0, "col": 0, "size_x": 24, "size_y": 8}]);
    let e = call(
        &bob,
        "metabase_write_actions",
        json!({"action": "update_dashboard", "id": dashboard, "name": "Mine now"}),
    )
    .await
    .unwrap_err();
    assert!(
        ["risk_not_allowed", "unknown_tool"].contains(&reason_of(&e).as_str()),
        "{e}"
    );
    let updated = confirmed(
        &alice,
        &mb,
        json!({"action": "update_dashboard", "id": dashboard, "name": "Sales (paid)", "dashcards": layout}),
    )
    .await;
    let updated = ok_structured(&updated);
    assert_eq!(updated["name"], "Sales (paid)");
    let last = mb.received().last().unwrap().clone();
    assert_eq!(
        (last.method.as_str(), last.path),
        ("PUT", format!("/api/dashboard/{dashboard}"))
    );
    assert_eq!(
        last.body,
        json!({"name": "Sales (paid)", "dashcards": layout})
    );
    let stored = mb.dashboard(dashboard).unwrap();
    assert_eq!(stored["dashcards"].as_array().unwrap().len(), 1);
    assert_eq!(stored["dashcards"][0]["size_x"], 24);
    // Metabase's own validation error, readable.
    let refused = confirmed(
        &alice,
        &mb,
        json!({"action": "update_dashboard", "id": dashboard, "name": " "}),
    )
    .await;
    assert_eq!(refused.is_error, Some(true));
    assert!(
        text_of(&refused).contains("HTTP 400: name: nullable value must be a non-blank string."),
        "{}",
        text_of(&refused)
    );

    // Deleting a card: confirmed, gone, and gone from the dashboard.
    let e = call(
        &alice,
        "metabase_read_actions",
        json!({"action": "delete_card", "id": paid}),
    )
    .await
    .unwrap_err();
    assert_eq!(reason_of(&e), "wrong_tool");
    let deleted = confirmed(&alice, &mb, json!({"action": "delete_card", "id": paid})).await;
    assert_ne!(deleted.is_error, Some(true), "{}", text_of(&deleted));
    assert!(!mb.card_exists(paid));
    let last = mb.received().last().unwrap().clone();
    assert_eq!(
        (last.method.as_str(), last.path, last.who.as_str()),
        ("DELETE", format!("/api/card/{paid}"), "alice@example.com")
    );
    let gone = answered(&alice, READ, json!({"action": "get_card", "id": paid})).await;
    assert_eq!(text_of(&gone), "HTTP 404: Not found.");
    let board = structured_answer(
        &alice,
        READ,
        json!({"action": "get_dashboard", "id": dashboard}),
    )
    .await;
    assert_eq!(board["dashcards"], json!([]), "{board}");

    // Deleting the dashboard: confirmed, then 404.
    let deleted = confirmed(
        &alice,
        &mb,
        json!({"action": "delete_dashboard", "id": dashboard}),
    )
    .await;
    assert_ne!(deleted.is_error, Some(true), "{}", text_of(&deleted));
    assert_eq!(mb.received().last().unwrap().method, "DELETE");
    let gone = answered(
        &alice,
        READ,
        json!({"action": "get_dashboard", "id": dashboard}),
    )
    .await;
    assert_eq!(text_of(&gone), "HTTP 404: Not found.");
    let again = confirmed(
        &alice,
        &mb,
        json!({"action": "delete_dashboard", "id": dashboard}),
    )
    .await;
    assert_eq!(again.is_error, Some(true));
    assert_eq!(text_of(&again), "HTTP 404: Not found.");
    alice.cancel().await.unwrap();
    bob.cancel().await.unwrap();
    gw.stop().await;
}
