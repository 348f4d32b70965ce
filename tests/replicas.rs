//! Several gateways on one PostgreSQL store, as replicas behind a load
//! balancer: a call may land on any of them, and a revocation made on one
//! reaches every one. Needs the test PostgreSQL (`scripts/test.sh` starts it).

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::world::{DECLARATION, world_on};
use support::{SharedStore, TestGateway, ask_confirmation, call, rmcp_connect, with_confirm};

fn revoked(error: &rmcp::service::ServiceError) -> bool {
    format!("{error:?}").contains("revoked by root@example.com")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_grant_minted_on_one_replica_is_served_by_any_and_revoked_on_all() {
    let store = SharedStore::create().await;
    let w = world_on(Some(&store)).await;
    let b = w.replica(&store).await;
    // C polls once an hour: only PostgreSQL's notification can stop it in time.
    let c = w.replica_that_never_polls(&store).await;

    let step = w.wm.start_flow("alice", "f/finance/nightly_pnl");
    let (token, grant_id) = w.grant_token(&step, DECLARATION).await;
    let read = |i: u32| json!({"action": "query", "sql": format!("select {i}")});
    let on_b = rmcp_connect(&b.url, &token).await;
    let on_c = rmcp_connect(&c.url, &token).await;
    call(&on_b, "bigquery_read_actions", read(1)).await.unwrap();
    call(&on_c, "bigquery_read_actions", read(2)).await.unwrap();
    // The grant's scope holds on the replicas that adopted it.
    let outside = call(&on_c, "warehouse_read_actions", json!({"action": "query"})).await;
    assert!(outside.is_err(), "warehouse was never granted");
    let held =
        c.gw.delegation()
            .grants
            .get(&grant_id)
            .expect("C adopted it");
    assert_eq!(held.scope.subject, "alice@example.com");
    assert!(
        held.scope.actor.contains("f/finance/nightly_pnl"),
        "{}",
        held.scope.actor
    );
    assert_eq!(w.bigquery.count(), 2);

    // A wrong secret for the same grant id is refused, not adopted.
    let forged = format!("{}0", &token[..token.len() - 1]);
    let forged = if forged == token {
        format!("{}1", &token[..token.len() - 1])
    } else {
        forged
    };
    assert_eq!(ping_status(&b, &forged).await, 401);

    // Revoked through B's admin API.
    let revoked_at = Instant::now();
    let (status, body) = w.revoke_at(&b, &grant_id).await;
    assert_eq!(status, 200, "{body}");
    // Acknowledged only once every holder stopped it: A (the minter) and C (an
    // adopter, which never polls) hold it no more the moment B answers.
    assert_eq!(body["confirmed"], true, "{body}");
    for (name, replica) in [("A", &w.gw), ("B", &b), ("C", &c)] {
        assert!(
            replica.gw.delegation().grants.get(&grant_id).is_none(),
            "replica {name} still holds the revoked grant after the acknowledgement"
        );
    }
    let reached = revoked_at.elapsed();
    println!("revocation acknowledged by every replica in {reached:?}");
    for (client, i) in [(&on_b, 3), (&on_c, 4)] {
        let error = call(client, "bigquery_read_actions", read(i))
            .await
            .unwrap_err();
        assert!(revoked(&error), "{error:?}");
    }
    assert_eq!(ping_status(&w.gw, &token).await, 401);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        w.bigquery.count(),
        2,
        "nothing reached the service after the revoke"
    );

    // One audit log for the fleet: the calls served by B and C, and the refusals.
    let rows = w.gw.audit_rows().await;
    let served = rows
        .iter()
        .filter(|r| r.grant_id.as_deref() == Some(&grant_id))
        .filter(|r| r.upstream_status.as_deref() == Some("ok"))
        .count();
    assert_eq!(served, 2);
    assert!(
        rows.iter()
            .any(|r| r.reason_code.as_deref() == Some("grant_revoked"))
    );
    let (_, listed) = w
        .admin("GET", "/admin/api/grants?all=true", Value::Null)
        .await;
    assert_eq!(
        listed["grants"][0]["end_reason"],
        "revoked by root@example.com"
    );
    w.gw.stop().await;
    b.stop().await;
    c.stop().await;
}

/// The HTTP status of a bare MCP request with `token` on `gw`.
async fn ping_status(gw: &TestGateway, token: &str) -> u16 {
    reqwest::Client::new()
        .post(&gw.url)
        .bearer_auth(token)
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tokens_confirmations_and_audit_are_shared_by_every_replica() {
    let store = SharedStore::create().await;
    let w = world_on(Some(&store)).await;
    let b = w.replica(&store).await;

    // A token minted on A works on B; revoked on A, B refuses its next request.
    let token = w.gw.token("alice@example.com").await;
    let on_b = rmcp_connect(&b.url, &token).await;
    call(
        &on_b,
        "bigquery_read_actions",
        json!({"action": "query", "sql": "select 1"}),
    )
    .await
    .unwrap();

    // A confirmation asked on A is redeemed once, on B; never again anywhere.
    let on_a = rmcp_connect(&w.gw.url, &token).await;
    let args = json!({"action": "drop_table", "table": "tmp"});
    let preview = ask_confirmation(&on_a, "warehouse_write_actions", args.clone()).await;
    let confirmed = with_confirm(args, &preview);
    let done = call(&on_b, "warehouse_write_actions", confirmed.clone())
        .await
        .unwrap();
    assert_ne!(done.is_error, Some(true));
    assert_eq!(w.warehouse.count(), 1);
    let again = call(&on_a, "warehouse_write_actions", confirmed)
        .await
        .unwrap_err();
    assert_eq!(support::reason_of(&again), "confirmation_reused");
    assert_eq!(w.warehouse.count(), 1);

    let listed = mcpgate::tokens::list(w.gw.gw.pool()).await.unwrap();
    let alices = listed
        .iter()
        .find(|t| t.user_email == "alice@example.com")
        .expect("alice's token is listed");
    assert!(
        mcpgate::tokens::revoke(w.gw.gw.pool(), &alices.id)
            .await
            .unwrap()
    );
    assert_eq!(
        ping_status(&b, &token).await,
        401,
        "B still accepts a token revoked on A"
    );

    // A risk override set through B's admin API holds on A at once.
    let bob = w.gw.token("bob@example.com").await;
    let bob_on_a = rmcp_connect(&w.gw.url, &bob).await;
    let query = json!({"action": "query", "sql": "select 1"});
    call(&bob_on_a, "bigquery_read_actions", query.clone())
        .await
        .unwrap();
    let (status, body) = w
        .admin_at(
            &b,
            "PUT",
            "/admin/api/policy/risk",
            json!({"pattern": "bigquery.q*", "risk": "high_risk"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let set_at = Instant::now();
    loop {
        match call(&bob_on_a, "bigquery_read_actions", query.clone()).await {
            Err(e) => {
                assert_eq!(support::reason_of(&e), "wrong_tool");
                break;
            }
            Ok(_) => assert!(
                set_at.elapsed() < Duration::from_secs(5),
                "A never saw the override set on B"
            ),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Both replicas write to, and read, one audit log.
    let from_a = w.gw.audit_rows().await;
    let from_b = b.audit_rows().await;
    assert_eq!(from_a.len(), from_b.len());
    assert!(
        from_a
            .iter()
            .any(|r| r.decision == "allowed" && r.action.as_deref() == Some("query"))
    );
    assert!(
        from_a
            .iter()
            .any(|r| r.reason_code.as_deref() == Some("confirmation_reused"))
    );
    w.gw.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_replica_without_the_shared_key_refuses_to_start() {
    let store = SharedStore::create().await;
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "database: {}\ndata_dir: {}\n",
        store.url,
        dir.path().join("data").display()
    );
    let config = mcpgate::config::Config::parse(&text, "replica.yaml").unwrap();
    let pool = mcpgate::storage::connect(&config).await.unwrap();
    let error = mcpgate::gateway::Gateway::start(config, pool)
        .await
        .err()
        .expect("no key: no start");
    assert!(error.to_string().contains("MCPGATE_SECRET_KEY"), "{error}");
    // And a database URL that is not PostgreSQL is a config error with its line.
    let bad =
        mcpgate::config::Config::parse("listen: 127.0.0.1:0\ndatabase: mysql://x/y\n", "bad.yaml")
            .expect_err("refused");
    assert!(bad.to_string().starts_with("bad.yaml:2"), "{bad}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_finished_job_ends_its_grant_on_the_replicas_that_adopted_it() {
    let store = SharedStore::create().await;
    let w = world_on(Some(&store)).await;
    // B never polls: only the minting replica's probe and the notification
    // can end the grant there.
    let b = w.replica_that_never_polls(&store).await;
    let step = w.wm.start_flow("alice", "f/finance/nightly_pnl");
    let (token, grant_id) = w.grant_token(&step, DECLARATION).await;
    let on_b = rmcp_connect(&b.url, &token).await;
    let query = json!({"action": "query", "sql": "select 1"});
    call(&on_b, "bigquery_read_actions", query.clone())
        .await
        .unwrap();
    assert!(b.gw.delegation().grants.get(&grant_id).is_some());

    w.wm.finish(&step.job_id);
    let finished = Instant::now();
    while b.gw.delegation().grants.get(&grant_id).is_some() {
        assert!(
            finished.elapsed() < Duration::from_secs(10),
            "B kept serving a grant whose job finished"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(call(&on_b, "bigquery_read_actions", query).await.is_err());
    assert_eq!(w.bigquery.count(), 1);
    assert_eq!(ping_status(&b, &token).await, 401);
    let rows = b.audit_rows().await;
    assert!(
        rows.iter()
            .any(|r| r.reason_code.as_deref() == Some("job_finished"))
    );
    w.gw.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revoke_names_the_replicas_that_did_not_confirm_it() {
    let store = SharedStore::create().await;
    let w = world_on(Some(&store)).await;
    let step = w.wm.start_flow("alice", "f/finance/nightly_pnl");
    let (token, grant_id) = w.grant_token(&step, DECLARATION).await;
    // A replica that held the grant and died without a word.
    sqlx::query("INSERT INTO grant_holders (grant_id, replica, since) VALUES ($1, 'gw_gone', 'x')")
        .bind(&grant_id)
        .execute(w.gw.gw.pool())
        .await
        .unwrap();
    let (status, body) = w.revoke_at(&w.gw, &grant_id).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["confirmed"], false, "{body}");
    assert_eq!(body["unconfirmed_replicas"], json!(["gw_gone"]));
    // Everyone else refuses it all the same, a fresh replica included.
    assert!(w.gw.gw.delegation().grants.get(&grant_id).is_none());
    let late = w.replica(&store).await;
    assert_eq!(ping_status(&late, &token).await, 401);
    w.gw.stop().await;
    late.stop().await;
}
