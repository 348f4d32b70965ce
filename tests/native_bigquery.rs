//! The shipped BigQuery catalog through the gateway, with a real MCP client
//! (rmcp), the subject's own OAuth bearer token from the vault and a BigQuery
//! fake that follows `../shared/specs/bigquery/discovery-subset.json`.

mod support;

#[path = "support/fake_bigquery.rs"]
mod fake_bigquery;

use std::time::{Duration, Instant};

use fake_bigquery::FakeBigQuery;
use mcpgate::vault::CredentialKind;
use serde_json::{Value, json};
use support::{
    TestGateway, answered, call, ok_structured, reason_of, rmcp_connect, store_credential,
    structured_answer, text_of,
};

const PROJECT: &str = "acme-analytics";
const READ: &str = "bigquery_read_actions";
const QUERIES: &str = "/bigquery/v2/projects/acme-analytics/queries";

async fn world() -> (FakeBigQuery, TestGateway) {
    let bq = FakeBigQuery::start().await;
    bq.add_account("alice@example.com", "ya29.alice-access-token");
    bq.add_account("bob@example.com", "ya29.bob-access-token");
    bq.add_dataset(PROJECT, "sales", "EU", &[("team", "finance")]);
    bq.add_dataset(PROJECT, "web", "US", &[("team", "growth")]);
    bq.add_dataset(PROJECT, "marketing", "US", &[]);
    bq.add_dataset(PROJECT, "ops", "EU", &[("team", "finance")]);
    bq.add_dataset(PROJECT, "_scratch", "US", &[]);
    let orders = |id: i64, region: &str, amount: f64| vec![json!(id), json!(region), json!(amount)];
    bq.add_table(
        PROJECT,
        "sales",
        "orders",
        &[("id", "INTEGER"), ("region", "STRING"), ("amount", "FLOAT")],
        vec![
            orders(1, "EU", 120.5),
            orders(2, "US", 80.0),
            orders(3, "EU", 42.0),
            orders(4, "APAC", 13.25),
            orders(5, "EU", 7.0),
        ],
    );
    bq.add_table(
        PROJECT,
        "sales",
        "ledger",
        &[("entry", "INTEGER"), ("account", "STRING")],
        vec![vec![json!(1), json!("cash")], vec![json!(2), json!("bank")]],
    );
    bq.add_table(
        PROJECT,
        "sales",
        "refunds",
        &[("id", "INTEGER"), ("order_id", "INTEGER")],
        vec![vec![json!(1), json!(2)]],
    );
    // Finance data: Alice may read it, Bob may not (BigQuery's own ACL).
    bq.restrict_dataset(PROJECT, "sales", &["alice@example.com"]);
    let gw = TestGateway::start(&format!(
        "services:\n  bigquery: {{ kind: native, catalog: bigquery, base_url: \"{}\", defaults: {{ maximumBytesBilled: \"1000000000\", projectId: {PROJECT} }} }}\nusers:\n  - email: alice@example.com\n    access: {{ bigquery: high_risk }}\n  - email: bob@example.com\n    access: {{ bigquery: read }}\n",
        bq.base_url
    ))
    .await;
    store_credential(
        &gw,
        "alice@example.com",
        "bigquery",
        CredentialKind::Token,
        "ya29.alice-access-token",
    )
    .await;
    (bq, gw)
}

/// The values of one column of BigQuery `{"f": [{"v": …}]}` rows.
fn column(rows: &Value, index: usize) -> Vec<String> {
    rows.as_array()
        .unwrap_or_else(|| panic!("rows: {rows}"))
        .iter()
        .map(|row| row["f"][index]["v"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bigquery_reads_run_with_the_subjects_own_token_and_follow_pages() {
    let (bq, gw) = world().await;
    let alice = rmcp_connect(&gw.url, &gw.token("alice@example.com").await).await;
    let tools = alice.peer().list_all_tools().await.unwrap();
    let read_tool = tools
        .iter()
        .find(|t| t.name == "bigquery_read_actions")
        .expect("bigquery_read_actions listed");
    assert!(tools.iter().any(|t| t.name == "bigquery_write_actions"));
    let description = read_tool.description.as_deref().unwrap_or_default();
    for action in [
        "query",
        "get_query_results",
        "list_datasets",
        "list_tables",
        "get_table",
    ] {
        assert!(description.contains(action), "{action} in {description}");
    }

    // jobs.query: GoogleSQL by default (the API's own default is legacy SQL,
    // which refuses backtick-quoted names), rows in BigQuery's f/v encoding.
    let sql = "SELECT id, amount FROM `acme-analytics.sales.orders` WHERE region = 'EU'";
    let answer = structured_answer(
        &alice,
        READ,
        json!({"action": "query", "projectId": PROJECT, "query": sql}),
    )
    .await;
    assert_eq!(answer["jobComplete"], true, "{answer}");
    assert_eq!(column(&answer["rows"], 0), ["1", "3", "5"]);
    assert_eq!(answer["totalRows"], "3");
    assert_eq!(answer["schema"]["fields"][1]["name"], "amount");
    assert_eq!(answer["statementType"], "SELECT");
    let last = bq.received().last().unwrap().clone();
    assert_eq!(
        (last.method.as_str(), last.path.as_str(), last.who.as_str()),
        ("POST", QUERIES, "alice@example.com")
    );
    // useLegacySql from the catalog's default, the cost cap from the operator's.
    assert_eq!(
        last.body,
        json!({"query": sql, "useLegacySql": false, "maximumBytesBilled": "1000000000"})
    );
    // The caller's own cap wins over the operator's; BigQuery enforces it.
    let capped = answered(
        &alice,
        READ,
        json!({"action": "query", "projectId": PROJECT, "query": sql, "maximumBytesBilled": "1000"}),
    )
    .await;
    assert_eq!(capped.is_error, Some(true));
    assert_eq!(
        text_of(&capped),
        "HTTP 400: Query exceeded limit for bytes billed: 1000. 10485760 or higher required. (INVALID_ARGUMENT)"
    );
    assert_eq!(
        bq.received().last().unwrap().body["maximumBytesBilled"],
        "1000"
    );
    // The caller may still ask for legacy SQL, and gets BigQuery's own refusal.
    let legacy = answered(
        &alice,
        READ,
        json!({"action": "query", "projectId": PROJECT, "query": sql, "useLegacySql": true}),
    )
    .await;
    assert_eq!(legacy.is_error, Some(true));
    assert!(
        text_of(&legacy).contains("HTTP 400: Invalid table name")
            && text_of(&legacy).contains("(INVALID_ARGUMENT)"),
        "{}",
        text_of(&legacy)
    );

    // A slow query: jobComplete false, then getQueryResults until complete.
    bq.slow_next_query(2);
    let started = structured_answer(
        &alice,
        READ,
        json!({"action": "query", "projectId": PROJECT, "query": "SELECT COUNT(*) FROM sales.orders", "timeoutMs": 10}),
    )
    .await;
    assert_eq!(started["jobComplete"], false, "{started}");
    assert!(started.get("rows").is_none());
    assert_eq!(bq.received().last().unwrap().body["timeoutMs"], 10);
    let job = started["jobReference"]["jobId"]
        .as_str()
        .unwrap()
        .to_owned();
    let location = started["jobReference"]["location"]
        .as_str()
        .unwrap()
        .to_owned();
    let poll = json!({"action": "get_query_results", "projectId": PROJECT, "jobId": job, "location": location});
    let still = structured_answer(&alice, READ, poll.clone()).await;
    assert_eq!(still["jobComplete"], false, "{still}");
    let done = structured_answer(&alice, READ, poll.clone()).await;
    assert_eq!(done["jobComplete"], true, "{done}");
    assert_eq!(column(&done["rows"], 0), ["5"]);
    let last = bq.received().last().unwrap().clone();
    assert_eq!(
        (last.method.as_str(), last.path),
        ("GET", format!("{QUERIES}/{job}"))
    );
    assert_eq!(last.query.get("location").map(String::as_str), Some("US"));
    // Another location is another job: BigQuery's 404 in Google's shape.
    let mut elsewhere = poll.clone();
    elsewhere["location"] = json!("asia-northeast1");
    let missing = answered(&alice, READ, elsewhere).await;
    assert_eq!(missing.is_error, Some(true));
    assert!(
        text_of(&missing).contains(&format!(
            "HTTP 404: Not found: Job acme-analytics:asia-northeast1.{job} (NOT_FOUND)"
        )),
        "{}",
        text_of(&missing)
    );

    // Result pages: maxResults rows per page; `pages` follows pageToken.
    let paged = structured_answer(
        &alice,
        READ,
        json!({"action": "query", "projectId": PROJECT, "query": "SELECT id FROM sales.orders", "maxResults": 2}),
    )
    .await;
    assert_eq!(column(&paged["rows"], 0), ["1", "2"]);
    let token = paged["pageToken"].as_str().expect("a pageToken").to_owned();
    let job = paged["jobReference"]["jobId"].as_str().unwrap().to_owned();
    let before = bq.received().len();
    let rest = structured_answer(
        &alice,
        READ,
        json!({"action": "get_query_results", "projectId": PROJECT, "jobId": job, "pageToken": token, "maxResults": 1, "pages": 3}),
    )
    .await;
    assert_eq!(column(&rest["rows"], 0), ["3", "4", "5"], "{rest}");
    assert!(rest.get("next_page_token").is_none(), "{rest}");
    assert!(rest.get("pageToken").is_none(), "no stale token: {rest}");
    let polls: Vec<_> = bq.received()[before..].to_vec();
    assert_eq!(polls.len(), 3, "{polls:?}");
    assert_eq!(polls[0].query.get("pageToken"), Some(&token));
    assert!(
        polls[1].query.get("pageToken").is_some_and(|t| *t != token),
        "{polls:?}"
    );
    let one_page = structured_answer(
        &alice,
        READ,
        json!({"action": "get_query_results", "projectId": PROJECT, "jobId": job, "maxResults": 2}),
    )
    .await;
    assert_eq!(column(&one_page["rows"], 0), ["1", "2"]);
    let next = one_page["next_page_token"]
        .as_str()
        .expect("next_page_token when more remain");
    let continued = structured_answer(
        &alice,
        READ,
        json!({"action": "get_query_results", "projectId": PROJECT, "jobId": job, "maxResults": 2, "pageToken": next}),
    )
    .await;
    assert_eq!(column(&continued["rows"], 0), ["3", "4"]);

    // datasets.list: hidden datasets only with `all`, label filters, pages.
    // The project comes from the operator's `defaults:` when the caller omits it.
    let before = bq.received().len();
    let datasets = structured_answer(
        &alice,
        READ,
        json!({"action": "list_datasets", "maxResults": 2, "pages": 5}),
    )
    .await;
    let ids = |v: &Value, key: &str, field: &str| -> Vec<String> {
        v[key]
            .as_array()
            .unwrap_or_else(|| panic!("{key}: {v}"))
            .iter()
            .map(|d| {
                d[field][field.replace("Reference", "Id")]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    assert_eq!(
        ids(&datasets, "datasets", "datasetReference"),
        ["marketing", "ops", "sales", "web"]
    );
    assert_eq!(bq.received().len() - before, 2, "two pages of two");
    assert!(
        datasets.get("nextPageToken").is_none() && datasets.get("next_page_token").is_none(),
        "joined to the end: {datasets}"
    );
    let all = structured_answer(
        &alice,
        READ,
        json!({"action": "list_datasets", "projectId": PROJECT, "all": true, "pages": 10}),
    )
    .await;
    assert!(ids(&all, "datasets", "datasetReference").contains(&"_scratch".to_owned()));
    assert_eq!(bq.received().last().unwrap().query["all"], "true");
    let finance = structured_answer(
        &alice,
        READ,
        json!({"action": "list_datasets", "projectId": PROJECT, "filter": "labels.team:finance"}),
    )
    .await;
    assert_eq!(
        ids(&finance, "datasets", "datasetReference"),
        ["ops", "sales"]
    );

    // tables.list with a page left over, continued by its token.
    let tables = structured_answer(
        &alice,
        READ,
        json!({"action": "list_tables", "projectId": PROJECT, "datasetId": "sales", "maxResults": 1, "pages": 2}),
    )
    .await;
    assert_eq!(
        ids(&tables, "tables", "tableReference"),
        ["ledger", "orders"]
    );
    assert_eq!(tables["totalItems"], 3);
    let next = tables["next_page_token"].as_str().expect("one table left");
    let last_page = structured_answer(
        &alice,
        READ,
        json!({"action": "list_tables", "projectId": PROJECT, "datasetId": "sales", "maxResults": 1, "pageToken": next}),
    )
    .await;
    assert_eq!(ids(&last_page, "tables", "tableReference"), ["refunds"]);

    // tables.get: schema, not rows; selectedFields and view on the wire.
    let table = structured_answer(
        &alice,
        READ,
        json!({"action": "get_table", "projectId": PROJECT, "datasetId": "sales", "tableId": "orders"}),
    )
    .await;
    assert_eq!(table["numRows"], "5");
    assert_eq!(table["tableReference"]["tableId"], "orders");
    assert_eq!(table["schema"]["fields"].as_array().unwrap().len(), 3);
    let basic = structured_answer(
        &alice,
        READ,
        json!({"action": "get_table", "projectId": PROJECT, "datasetId": "sales", "tableId": "orders", "selectedFields": "id,amount", "view": "BASIC"}),
    )
    .await;
    assert!(basic.get("numRows").is_none(), "{basic}");
    let fields: Vec<&str> = basic["schema"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["id", "amount"]);
    let last = bq.received().last().unwrap().clone();
    assert_eq!(
        last.path,
        "/bigquery/v2/projects/acme-analytics/datasets/sales/tables/orders"
    );
    assert_eq!(last.query["selectedFields"], "id,amount");
    assert_eq!(last.query["view"], "BASIC");

    // Google's error shape comes back readable.
    let missing = answered(
        &alice,
        READ,
        json!({"action": "get_table", "projectId": PROJECT, "datasetId": "sales", "tableId": "nope"}),
    )
    .await;
    assert_eq!(missing.is_error, Some(true));
    assert_eq!(
        text_of(&missing),
        "HTTP 404: Not found: Table acme-analytics:sales.nope (NOT_FOUND)"
    );
    let bad_sql = answered(
        &alice,
        READ,
        json!({"action": "query", "projectId": PROJECT, "query": "SELECT nope FROM sales.orders"}),
    )
    .await;
    assert!(
        text_of(&bad_sql).contains("HTTP 400: Unrecognized name: nope (INVALID_ARGUMENT)"),
        "{}",
        text_of(&bad_sql)
    );

    // 429 with a short Retry-After: the gateway waits and tries again.
    bq.rate_limit_next(1, 1);
    let before = bq.received().len();
    let clock = Instant::now();
    let datasets = structured_answer(
        &alice,
        READ,
        json!({"action": "list_datasets", "projectId": PROJECT}),
    )
    .await;
    assert_eq!(datasets["datasets"].as_array().unwrap().len(), 4);
    assert!(
        clock.elapsed() >= Duration::from_millis(900),
        "Retry-After honoured"
    );
    let attempts: Vec<bool> = bq.received()[before..]
        .iter()
        .map(|r| r.rate_limited)
        .collect();
    assert_eq!(attempts, [true, false]);
    // A wait longer than the gateway takes: a clear rate_limited result, no retry.
    bq.rate_limit_next(3, 600);
    let before = bq.received().len();
    let limited = answered(
        &alice,
        READ,
        json!({"action": "list_datasets", "projectId": PROJECT}),
    )
    .await;
    assert_eq!(limited.is_error, Some(true));
    let detail = limited.structured_content.clone().unwrap_or_default();
    assert_eq!(
        (detail["error"].clone(), detail["retry_after"].clone()),
        (json!("rate_limited"), json!(600)),
        "{}",
        text_of(&limited)
    );
    assert!(
        text_of(&limited).contains("RESOURCE_EXHAUSTED"),
        "{}",
        text_of(&limited)
    );
    assert_eq!(bq.received().len() - before, 1);
    bq.rate_limit_next(0, 0);
    // BigQuery's other rate limit: 403 rateLimitExceeded, no Retry-After.
    // A rate limit, not a refused credential: waited out and tried again.
    bq.quota_403_next(1);
    let before = bq.received().len();
    let tables = structured_answer(
        &alice,
        READ,
        json!({"action": "list_tables", "projectId": PROJECT, "datasetId": "sales"}),
    )
    .await;
    assert_eq!(tables["totalItems"], 3);
    let attempts: Vec<bool> = bq.received()[before..]
        .iter()
        .map(|r| r.rate_limited)
        .collect();
    assert_eq!(attempts, [true, false]);

    // Bob has no credential, then one BigQuery refuses: auth_required both times.
    let bob = rmcp_connect(&gw.url, &gw.token("bob@example.com").await).await;
    let before = bq.received().len();
    let answer = answered(
        &bob,
        READ,
        json!({"action": "list_datasets", "projectId": PROJECT}),
    )
    .await;
    assert_eq!(answer.is_error, Some(true));
    assert_eq!(answer.structured_content.unwrap()["auth_required"], true);
    store_credential(
        &gw,
        "bob@example.com",
        "bigquery",
        CredentialKind::Token,
        "ya29.revoked-token",
    )
    .await;
    let answer = answered(
        &bob,
        READ,
        json!({"action": "list_datasets", "projectId": PROJECT}),
    )
    .await;
    let text = text_of(&answer);
    assert_eq!(
        answer.structured_content.clone().unwrap()["auth_required"],
        true,
        "{text}"
    );
    assert!(
        text.contains("refused your credential") && text.contains("UNAUTHENTICATED"),
        "{text}"
    );
    assert!(!text.contains("ya29.revoked-token"));
    assert_eq!(
        bq.received().len(),
        before,
        "the fake saw no valid credential"
    );
    // With his own token, Bob acts as Bob.
    store_credential(
        &gw,
        "bob@example.com",
        "bigquery",
        CredentialKind::Token,
        "ya29.bob-access-token",
    )
    .await;
    structured_answer(
        &bob,
        READ,
        json!({"action": "list_tables", "projectId": PROJECT, "datasetId": "web"}),
    )
    .await;
    assert_eq!(bq.received().last().unwrap().who, "bob@example.com");
    // BigQuery's own ACL: a permission error for Bob, not a credential problem.
    for denied in [
        json!({"action": "list_tables", "projectId": PROJECT, "datasetId": "sales"}),
        json!({"action": "query", "projectId": PROJECT, "query": "SELECT id FROM sales.orders"}),
    ] {
        let answer = answered(&bob, READ, denied).await;
        assert_eq!(answer.is_error, Some(true));
        let text = text_of(&answer);
        assert!(
            text.starts_with("HTTP 403: Access Denied:") && text.contains("(PERMISSION_DENIED)"),
            "{text}"
        );
        assert!(
            answer
                .structured_content
                .as_ref()
                .is_none_or(|s| s.get("auth_required").is_none()),
            "{text}"
        );
        assert_eq!(bq.received().last().unwrap().who, "bob@example.com");
    }
    for row in gw.audit_rows().await {
        let row = format!("{row:?}");
        assert!(
            !row.contains("alice-access-token") && !row.contains("ya29."),
            "{row}"
        );
    }
    alice.cancel().await.unwrap();
    bob.cancel().await.unwrap();
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bigquery_sql_sets_the_risk_and_destruction_waits_for_the_human() {
    let (bq, gw) = world().await;
    store_credential(
        &gw,
        "bob@example.com",
        "bigquery",
        CredentialKind::Token,
        "ya29.bob-access-token",
    )
    .await;
    let alice = rmcp_connect(&gw.url, &gw.token("alice@example.com").await).await;
    let bob = rmcp_connect(&gw.url, &gw.token("bob@example.com").await).await;
    let query = |sql: &str| json!({"action": "query", "projectId": PROJECT, "query": sql});
    let queries_sent =
        |bq: &FakeBigQuery| bq.received().iter().filter(|r| r.path == QUERIES).count();

    // DML/DDL never runs as a read: not for Bob (read access), not for Alice.
    for (client, sql) in [
        (&bob, "DROP TABLE sales.ledger"),
        (&bob, "DELETE FROM sales.orders WHERE region = 'EU'"),
        (&alice, "DROP TABLE sales.ledger"),
        (&alice, "DELETE FROM sales.orders WHERE true"),
        (&alice, "INSERT INTO sales.ledger VALUES (3, 'petty cash')"),
    ] {
        let e = call(client, "bigquery_read_actions", query(sql))
            .await
            .expect_err(sql);
        assert!(
            ["wrong_tool", "risk_not_allowed"].contains(&reason_of(&e).as_str()),
            "{sql}: {e}"
        );
    }
    assert_eq!(queries_sent(&bq), 0, "nothing reached BigQuery");
    assert!(bq.table_exists(PROJECT, "sales", "ledger"));
    assert_eq!(bq.table_rows(PROJECT, "sales", "orders"), Some(5));
    let refusals: Vec<_> = gw
        .audit_rows()
        .await
        .into_iter()
        .filter(|r| r.action.as_deref() == Some("query"))
        .collect();
    assert_eq!(refusals.len(), 5);
    assert!(
        refusals
            .iter()
            .any(|r| r.risk.map(|r| r.as_str()) == Some("high_risk")),
        "{refusals:?}"
    );
    // Bob may not write at all.
    let e = call(
        &bob,
        "bigquery_write_actions",
        query("INSERT INTO sales.ledger VALUES (3, 'petty cash')"),
    )
    .await
    .unwrap_err();
    assert!(
        ["risk_not_allowed", "unknown_tool"].contains(&reason_of(&e).as_str()),
        "{e}"
    );

    // A write (INSERT) runs through the write tool without confirmation.
    let inserted = call(
        &alice,
        "bigquery_write_actions",
        query("INSERT INTO sales.ledger VALUES (3, 'petty cash')"),
    )
    .await
    .unwrap();
    let inserted = ok_structured(&inserted);
    assert_eq!(inserted["numDmlAffectedRows"], "1", "{inserted}");
    assert_eq!(bq.table_rows(PROJECT, "sales", "ledger"), Some(3));
    assert_eq!(bq.received().last().unwrap().who, "alice@example.com");
    // A SELECT belongs on the read tool.
    let e = call(
        &alice,
        "bigquery_write_actions",
        query("SELECT 1 FROM sales.orders"),
    )
    .await
    .unwrap_err();
    assert_eq!(reason_of(&e), "wrong_tool");

    // DROP TABLE through the write tool: the human confirms first.
    let drop = query("DROP TABLE sales.ledger");
    let ask = call(&alice, "bigquery_write_actions", drop.clone())
        .await
        .unwrap();
    let preview = ask.structured_content.clone().unwrap();
    assert_eq!(preview["confirmation_required"], true, "{preview}");
    assert_eq!(preview["risk"], "high_risk", "{preview}");
    assert!(
        bq.table_exists(PROJECT, "sales", "ledger"),
        "not before the human says so"
    );
    let mut confirmed = drop.clone();
    confirmed["confirm"] = preview["confirm"].clone();
    let dropped = ok_structured(
        &call(&alice, "bigquery_write_actions", confirmed)
            .await
            .unwrap(),
    );
    assert_eq!(dropped["statementType"], "DROP_TABLE");
    assert!(!bq.table_exists(PROJECT, "sales", "ledger"));
    let gone = call(
        &alice,
        "bigquery_read_actions",
        json!({"action": "get_table", "projectId": PROJECT, "datasetId": "sales", "tableId": "ledger"}),
    )
    .await
    .unwrap();
    assert!(text_of(&gone).contains("HTTP 404"), "{}", text_of(&gone));

    // tables.delete is high_risk: never from the read tool, confirmed on the write tool.
    let delete = json!({"action": "delete_table", "projectId": PROJECT, "datasetId": "sales", "tableId": "refunds"});
    let e = call(&alice, "bigquery_read_actions", delete.clone())
        .await
        .unwrap_err();
    assert_eq!(reason_of(&e), "wrong_tool");
    let ask = call(&alice, "bigquery_write_actions", delete.clone())
        .await
        .unwrap();
    let preview = ask.structured_content.clone().unwrap();
    assert_eq!(preview["confirmation_required"], true, "{preview}");
    assert!(bq.received().iter().all(|r| r.method != "DELETE"));
    let mut confirmed = delete.clone();
    confirmed["confirm"] = preview["confirm"].clone();
    let deleted = call(&alice, "bigquery_write_actions", confirmed)
        .await
        .unwrap();
    assert_ne!(deleted.is_error, Some(true), "{}", text_of(&deleted));
    assert!(!bq.table_exists(PROJECT, "sales", "refunds"));
    let last = bq.received().last().unwrap().clone();
    assert_eq!(
        (last.method.as_str(), last.path.as_str(), last.who.as_str()),
        (
            "DELETE",
            "/bigquery/v2/projects/acme-analytics/datasets/sales/tables/refunds",
            "alice@example.com"
        )
    );
    // Deleting it again: BigQuery's own 404, readable.
    let ask = call(&alice, "bigquery_write_actions", delete.clone())
        .await
        .unwrap();
    let mut again = delete.clone();
    again["confirm"] = ask.structured_content.unwrap()["confirm"].clone();
    let again = call(&alice, "bigquery_write_actions", again).await.unwrap();
    assert_eq!(again.is_error, Some(true));
    assert!(
        text_of(&again).contains("Not found: Table acme-analytics:sales.refunds"),
        "{}",
        text_of(&again)
    );
    alice.cancel().await.unwrap();
    bob.cancel().await.unwrap();
    gw.stop().await;
}
