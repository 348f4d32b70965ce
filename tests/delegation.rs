//! Delegation end to end: a fake Windmill (following the spec), real rmcp
//! clients, in-process upstream MCP servers that count what reaches them.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::fake_windmill::{FakeJob, RunningStep};
use support::world::{DECLARATION, FlowRun, World, world};
use support::{call, reason_of, refusal_of, rmcp_connect, text_of};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flow_acts_as_its_owner_within_the_declared_scope() {
    let w = world().await;
    let step = w.wm.start_flow("alice", "f/finance/nightly_pnl");
    let (status, body) = w.exchange(&step, DECLARATION).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["issued_token_type"],
        "urn:ietf:params:oauth:token-type:access_token"
    );
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "bigquery:read slack:write");
    assert!(body["expires_in"].as_u64().unwrap() > 0);
    let token = body["access_token"].as_str().unwrap();
    let grant_id = body["grant_id"].as_str().unwrap();

    let client = rmcp_connect(&w.gw.url, token).await;
    let mut tools: Vec<String> = client
        .peer()
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    tools.sort();
    // Only what was granted: no warehouse, no bigquery writes.
    assert_eq!(
        tools,
        vec![
            "bigquery_read_actions",
            "gateway_describe_action",
            "gateway_search_actions",
            "slack_read_actions",
            "slack_write_actions"
        ]
    );
    // Discovery shows only what the grant allows.
    let found = call(
        &client,
        "gateway_search_actions",
        json!({"query": "query message drop table"}),
    )
    .await
    .unwrap()
    .structured_content
    .unwrap();
    let found: Vec<String> = found["matches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{}.{}",
                m["service"].as_str().unwrap(),
                m["action"].as_str().unwrap()
            )
        })
        .collect();
    assert!(
        found.contains(&"bigquery.query".to_owned())
            && found.contains(&"slack.post_message".to_owned()),
        "{found:?}"
    );
    assert!(
        !found.iter().any(|a| a.ends_with("drop_table")),
        "{found:?}"
    );
    let hidden = call(
        &client,
        "gateway_describe_action",
        json!({"service": "bigquery", "action": "drop_table"}),
    )
    .await
    .unwrap_err();
    assert_eq!(reason_of(&hidden), "unknown_action");
    let described = call(
        &client,
        "gateway_describe_action",
        json!({"service": "slack", "action": "post_message"}),
    )
    .await
    .unwrap()
    .structured_content
    .unwrap();
    assert_eq!(described["tool"], "slack_write_actions");
    assert!(described["input_schema"]["properties"].is_object());

    let result = call(
        &client,
        "bigquery_read_actions",
        json!({"action": "query", "sql": "select 1"}),
    )
    .await
    .unwrap();
    assert!(
        text_of(&result).starts_with("query #1"),
        "{}",
        text_of(&result)
    );
    call(
        &client,
        "slack_write_actions",
        json!({"action": "post_message", "text": "P&L ready"}),
    )
    .await
    .unwrap();
    assert_eq!((w.bigquery.count(), w.slack.count()), (1, 1));

    let rows = w.gw.audit_rows().await;
    let query_row = rows
        .iter()
        .find(|r| r.action.as_deref() == Some("query"))
        .unwrap();
    assert_eq!(query_row.subject, "alice@example.com");
    assert_eq!(
        query_row.actor,
        "windmill:prod/finance/f/finance/nightly_pnl"
    );
    assert_eq!(query_row.grant_id.as_deref(), Some(grant_id));
    assert_eq!(query_row.job_id.as_deref(), Some(step.job_id.as_str()));
    let minted = rows
        .iter()
        .find(|r| r.tool == "oauth/token-exchange")
        .unwrap();
    assert_eq!(minted.decision, "allowed");
    assert_eq!(minted.grant_id.as_deref(), Some(grant_id));

    // Listed for the operator with who, for whom, what and until when.
    let (status, listed) = w.admin("GET", "/admin/api/grants", Value::Null).await;
    assert_eq!(status, 200);
    let grant = &listed["grants"][0];
    assert_eq!(grant["subject"], "alice@example.com");
    assert_eq!(
        grant["actor"],
        "windmill:prod/finance/f/finance/nightly_pnl"
    );
    assert_eq!(
        grant["services"],
        json!({"bigquery": "read", "slack": "write"})
    );
    assert_eq!(grant["job_id"], step.job_id.as_str());
    assert!(grant["expires_at"].as_str().is_some());
    client.cancel().await.unwrap();

    // Alice asks her own client what was done in her name: the flow's
    // calls, with the flow as actor. Bob sees none of them; the flow itself
    // cannot read its owner's history.
    let alice = rmcp_connect(&w.gw.url, &w.gw.token("alice@example.com").await).await;
    let mine = call(&alice, "gateway_my_activity", json!({"since": "1h"}))
        .await
        .unwrap()
        .structured_content
        .unwrap();
    let calls = mine["calls"].as_array().unwrap();
    let delegated: Vec<&Value> = calls
        .iter()
        .filter(|c| c["actor"] == "windmill:prod/finance/f/finance/nightly_pnl")
        .collect();
    assert!(
        delegated
            .iter()
            .any(|c| c["action"] == "query" && c["delegated"] == true),
        "{mine}"
    );
    assert!(
        delegated.iter().any(|c| c["action"] == "post_message"),
        "{mine}"
    );
    assert!(calls.iter().all(|c| c.get("arguments").is_none()), "{mine}");
    let only_slack = call(
        &alice,
        "gateway_my_activity",
        json!({"service": "slack", "actor": "windmill:prod/finance/f/finance/nightly_pnl"}),
    )
    .await
    .unwrap()
    .structured_content
    .unwrap();
    assert!(
        only_slack["calls"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["service"] == "slack"),
        "{only_slack}"
    );
    let bob = rmcp_connect(&w.gw.url, &w.gw.token("bob@example.com").await).await;
    let theirs = call(&bob, "gateway_my_activity", json!({}))
        .await
        .unwrap()
        .structured_content
        .unwrap();
    assert!(
        theirs["calls"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["actor"] != "windmill:prod/finance/f/finance/nightly_pnl"),
        "{theirs}"
    );
    assert_eq!(theirs["subject"], "bob@example.com");
    let flow = rmcp_connect(&w.gw.url, token).await;
    let refused = call(&flow, "gateway_my_activity", json!({}))
        .await
        .unwrap_err();
    assert_eq!(reason_of(&refused), "activity_not_for_workflows");
    let bad = call(
        &alice,
        "gateway_my_activity",
        json!({"since": "yesterday-ish"}),
    )
    .await;
    assert_eq!(refusal_of(bad), "invalid_arguments");
    w.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_outside_the_grant_are_refused_with_precise_reasons() {
    let w = world().await;
    let step = w.wm.start_flow("bob", "f/finance/report");
    // Bob may only read Slack: the declared write is narrowed to read.
    let (token, _) = w.grant_token(&step, DECLARATION).await;
    let client = rmcp_connect(&w.gw.url, &token).await;
    let cases = [
        (
            "warehouse_read_actions",
            json!({"action": "query", "sql": "x"}),
            "service_not_declared",
        ),
        (
            "bigquery_write_actions",
            json!({"action": "post_message", "text": "x"}),
            "risk_not_granted",
        ),
        (
            "slack_write_actions",
            json!({"action": "post_message", "text": "x"}),
            "outside_owner_scope",
        ),
    ];
    for (tool, arguments, reason) in cases {
        let error = call(&client, tool, arguments).await.unwrap_err();
        assert_eq!(reason_of(&error), reason, "{tool}");
        let row = w.refusal_row(reason).await;
        assert_eq!(row.subject, "bob@example.com");
        assert_eq!(row.actor, "windmill:prod/finance/f/finance/report");
        assert!(row.reason.as_deref().unwrap().len() > 10);
    }
    assert_eq!(
        w.warehouse.count() + w.slack.count() + w.bigquery.count(),
        0
    );
    client.cancel().await.unwrap();
    w.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_grant_reads_no_resources_or_prompts_of_a_service_outside_it() {
    let w = world().await;
    let step = w.wm.start_flow("alice", "f/finance/nightly_pnl");
    let (token, grant_id) = w.grant_token(&step, DECLARATION).await;
    let client = rmcp_connect(&w.gw.url, &token).await;
    // The warehouse is alice's to read, but not the grant's.
    let read = client
        .peer()
        .read_resource(rmcp::model::ReadResourceRequestParams::new(
            "mcpgate://warehouse/db://tables/orders",
        ))
        .await
        .unwrap_err();
    assert_eq!(reason_of(&read), "service_not_declared");
    let prompt = client
        .peer()
        .get_prompt(rmcp::model::GetPromptRequestParams::new("warehouse.report"))
        .await
        .unwrap_err();
    assert_eq!(reason_of(&prompt), "service_not_declared");
    let rows = w.gw.audit_rows().await;
    let refused: Vec<_> = rows
        .iter()
        .filter(|r| r.reason_code.as_deref() == Some("service_not_declared"))
        .collect();
    assert_eq!(refused.len(), 2, "{rows:#?}");
    for row in refused {
        assert_eq!(row.subject, "alice@example.com");
        assert_eq!(row.actor, "windmill:prod/finance/f/finance/nightly_pnl");
        assert_eq!(row.grant_id.as_deref(), Some(grant_id.as_str()));
        assert_eq!(row.service.as_deref(), Some("warehouse"));
    }
    // A declared service passes the grant and reaches its upstream (which
    // has no resources, and says so).
    let declared = client
        .peer()
        .read_resource(rmcp::model::ReadResourceRequestParams::new(
            "mcpgate://bigquery/db://tables/orders",
        ))
        .await
        .unwrap_err();
    assert_eq!(reason_of(&declared), "upstream_error");
    assert_eq!(w.warehouse.count(), 0);
    client.cancel().await.unwrap();
    w.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revoked_service_account_token_exchanges_no_more() {
    let w = world().await;
    // Vouched for by the cache after this first exchange…
    let (status, body) = w
        .exchange(
            &w.wm.start_flow("alice", "f/finance/nightly_pnl"),
            DECLARATION,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let id = w.sa_token.split('_').nth(1).unwrap();
    assert!(mcpgate::tokens::revoke(w.gw.gw.pool(), id).await.unwrap());
    // …and refused on the very next one.
    let (status, body) = w
        .exchange(
            &w.wm.start_flow("alice", "f/finance/nightly_pnl"),
            DECLARATION,
        )
        .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["reason"], "invalid_actor_token", "{body}");
    w.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_unverifiable_exchange_is_refused_and_audited() {
    let w = world().await;
    let alice = w.wm.start_flow("alice", "f/finance/nightly_pnl");
    let base = |step: &RunningStep| -> Vec<(String, String)> {
        vec![
            (
                "grant_type".into(),
                "urn:ietf:params:oauth:grant-type:token-exchange".into(),
            ),
            ("subject_token".into(), step.token.clone()),
            (
                "subject_token_type".into(),
                "urn:mcpgate:params:oauth:token-type:windmill-job-token".into(),
            ),
            ("actor_token".into(), w.sa_token.clone()),
            ("workspace".into(), "finance".into()),
            ("job_id".into(), step.job_id.clone()),
            ("flow_job_id".into(), step.flow_job_id.clone()),
            ("gateway_services".into(), DECLARATION.into()),
        ]
    };
    let with = |step: &RunningStep, key: &str, value: &str| -> Vec<(String, String)> {
        let mut fields = base(step);
        fields.retain(|(k, _)| k != key);
        if !value.is_empty() {
            fields.push((key.into(), value.into()));
        }
        fields
    };
    async fn run(w: &World, fields: Vec<(String, String)>) -> (u16, Value) {
        let pairs: Vec<(&str, &str)> = fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        w.exchange_with(&pairs).await
    }

    // Token problems.
    let forged = format!("{}x", &alice.token[..alice.token.len() - 1]);
    let other_ws = w.wm.mint_token("alice", &alice.job_id, "marketing", 3600);
    let expired = w.wm.mint_token("alice", &alice.job_id, "finance", -10);
    let bob_token = w.wm.mint_token("bob", &alice.job_id, "finance", 3600);
    let other_job = w.wm.start_flow("alice", "f/finance/other");
    let ghost = w.wm.mint_token("mallory", &alice.job_id, "finance", 3600);
    let service_user = w.gw.token("alice@example.com").await;
    type Fields = Vec<(String, String)>;
    let cases: Vec<(Fields, u16, &str, &str)> = vec![
        (
            with(&alice, "subject_token", "not-a-jwt"),
            400,
            "invalid_grant",
            "invalid_job_token",
        ),
        (
            with(&alice, "subject_token", &forged),
            400,
            "invalid_grant",
            "job_token_rejected",
        ),
        (
            with(&alice, "subject_token", &other_ws),
            400,
            "invalid_grant",
            "job_token_rejected",
        ),
        (
            with(&alice, "subject_token", &expired),
            400,
            "invalid_grant",
            "job_token_rejected",
        ),
        (
            with(&alice, "subject_token", &bob_token),
            400,
            "invalid_grant",
            "job_identity_mismatch",
        ),
        (
            with(&alice, "subject_token", &ghost),
            400,
            "invalid_grant",
            "owner_not_workspace_user",
        ),
        (
            with(&alice, "job_id", &other_job.job_id),
            400,
            "invalid_grant",
            "job_token_mismatch",
        ),
        (
            with(&alice, "workspace", "marketing"),
            401,
            "unauthorized_client",
            "workspace_not_registered",
        ),
        (
            with(&alice, "actor_token", &service_user),
            401,
            "unauthorized_client",
            "actor_not_service_account",
        ),
        (
            with(&alice, "actor_token", "mgt_000000000000_00"),
            401,
            "unauthorized_client",
            "invalid_actor_token",
        ),
        (
            with(&alice, "gateway_services", ""),
            400,
            "invalid_request",
            "no_declaration",
        ),
        (
            with(&alice, "gateway_services", r#"[{"jira": ["read"]}]"#),
            400,
            "invalid_request",
            "invalid_declaration",
        ),
        (
            with(&alice, "grant_type", "client_credentials"),
            400,
            "unsupported_grant_type",
            "unsupported_grant_type",
        ),
        (
            with(&alice, "subject_token_type", "urn:x"),
            400,
            "invalid_request",
            "invalid_request",
        ),
        (
            with(
                &alice,
                "gateway_services",
                r#"[{"warehouse": ["high_risk"]}]"#,
            ),
            400,
            "invalid_scope",
            "high_risk_not_approved",
        ),
    ];
    for (fields, status, error, reason) in cases {
        let (got_status, body) = run(&w, fields).await;
        assert_eq!(
            (
                got_status,
                body["error"].as_str().unwrap(),
                body["reason"].as_str().unwrap()
            ),
            (status, error, reason),
            "{body}"
        );
        assert!(!body["error_description"].as_str().unwrap().is_empty());
        let row = w.refusal_row(reason).await;
        assert_eq!(row.decision, "refused");
        assert_eq!(row.tool, "oauth/token-exchange");
    }

    // Jobs that are not running, finished, previews, or not the flow's step.
    let finished = w.wm.start_flow("alice", "f/finance/done");
    w.wm.finish(&finished.job_id);
    let (_, body) = run(&w, base(&finished)).await;
    assert_eq!(body["reason"], "job_finished");

    let queued = w.wm.start_flow("alice", "f/finance/queued");
    w.wm.update_job(&queued.job_id, |j| j.running = false);
    let (_, body) = run(&w, base(&queued)).await;
    assert_eq!(body["reason"], "job_not_running");

    let preview = w.wm.start_flow("alice", "f/finance/draft");
    w.wm.update_job(&preview.flow_job_id, |j| j.job_kind = "flowpreview".into());
    let (_, body) = run(&w, base(&preview)).await;
    assert_eq!(body["reason"], "preview_job");

    let script_preview_id = "0190aaaa-0000-0000-0000-000000000001";
    w.wm.add_job(FakeJob {
        id: script_preview_id.into(),
        workspace: "finance".into(),
        parent_job: None,
        script_path: String::new(),
        job_kind: "preview".into(),
        username: "alice".into(),
        email: "alice@example.com".into(),
        running: true,
        completed: false,
        canceled: false,
        is_flow_step: false,
    });
    let token = w.wm.mint_token("alice", script_preview_id, "finance", 3600);
    let mut fields = with(&alice, "subject_token", &token);
    fields.retain(|(k, _)| k != "job_id" && k != "flow_job_id");
    fields.push(("job_id".into(), script_preview_id.into()));
    let (_, body) = run(&w, fields).await;
    assert_eq!(body["reason"], "preview_job");

    // A step claiming another flow as its parent.
    let (_, body) = run(&w, with(&alice, "flow_job_id", &other_job.flow_job_id)).await;
    assert_eq!(body["reason"], "job_mismatch");

    // The flag off refuses everything, before Windmill is even called.
    let whoami_before = w.wm.calls("whoami");
    w.admin("PUT", "/admin/api/delegation", json!({"enabled": false}))
        .await;
    let (status, body) = run(&w, base(&alice)).await;
    assert_eq!(
        (status, body["reason"].as_str().unwrap()),
        (401, "delegation_disabled")
    );
    assert_eq!(w.wm.calls("whoami"), whoami_before);
    w.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn high_risk_runs_only_with_an_admins_approval_and_without_asking() {
    let w = world().await;
    let step = w.wm.start_flow("alice", "f/ops/cleanup");
    let declaration = r#"[{"warehouse": ["read", "high_risk"]}]"#;
    let (_, body) = w.exchange(&step, declaration).await;
    assert_eq!(body["reason"], "high_risk_not_approved");

    let (status, approval) = w
        .admin(
            "POST",
            "/admin/api/approvals",
            json!({"instance": "prod", "workspace": "finance", "flow_path": "f/ops/cleanup",
                   "owner": "alice@example.com", "services": ["warehouse"]}),
        )
        .await;
    assert_eq!(status, 201, "{approval}");
    assert_eq!(approval["approved_by"], "root@example.com");
    // An approval for another flow does not count.
    let other = w.wm.start_flow("alice", "f/ops/other");
    let (_, body) = w.exchange(&other, declaration).await;
    assert_eq!(body["reason"], "high_risk_not_approved");

    let (token, _) = w.grant_token(&step, declaration).await;
    let client = rmcp_connect(&w.gw.url, &token).await;
    let result = call(
        &client,
        "warehouse_write_actions",
        json!({"action": "drop_table", "table": "tmp"}),
    )
    .await
    .unwrap();
    assert!(
        text_of(&result).starts_with("drop_table #1"),
        "{}",
        text_of(&result)
    );
    let row =
        w.gw.audit_rows()
            .await
            .into_iter()
            .find(|r| r.action.as_deref() == Some("drop_table"))
            .unwrap();
    assert_eq!(
        (row.risk.map(|r| r.as_str()), row.decision.as_str()),
        (Some("high_risk"), "allowed")
    );

    // Withdrawn: the next exchange is refused again.
    let id = approval["id"].as_str().unwrap();
    let (status, _) = w
        .admin("DELETE", &format!("/admin/api/approvals/{id}"), Value::Null)
        .await;
    assert_eq!(status, 204);
    let again = w.wm.start_flow("alice", "f/ops/cleanup");
    let (_, body) = w.exchange(&again, declaration).await;
    assert_eq!(body["reason"], "high_risk_not_approved");
    client.cancel().await.unwrap();
    w.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_grant_ends_when_its_job_finishes() {
    let w = world().await;
    let FlowRun {
        step,
        token,
        grant_id,
        client,
    } = w.a_flow_makes_one_read().await;
    w.wm.finish(&step.job_id);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while w.gw.gw.delegation().grants.get(&grant_id).is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "grant outlived its job"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        call(
            &client,
            "bigquery_read_actions",
            json!({"action": "query", "sql": "select 2"})
        )
        .await
        .is_err()
    );
    assert_eq!(w.bigquery.count(), 1);
    // A fresh connection with the token says why.
    let response = w.fresh_tools_list(&token).await;
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("job finished"),
        "{body}"
    );
    let row = w.refusal_row("job_finished").await;
    assert_eq!(row.subject, "alice@example.com");
    w.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_a_revoke_is_acknowledged_no_call_reaches_the_connector() {
    let w = world().await;
    let step = w.wm.start_flow("alice", "f/finance/nightly_pnl");
    let (token, grant_id) = w.grant_token(&step, DECLARATION).await;
    let clients: Vec<_> =
        futures::future::join_all((0..4).map(|_| rmcp_connect(&w.gw.url, &token))).await;
    let clients = std::sync::Arc::new(clients);
    // Eight workers keep calling until the revoke refuses them, so the revoke
    // always lands mid-stream however fast or slow the machine is.
    let workers: Vec<_> = (0..8usize)
        .map(|worker| {
            let clients = clients.clone();
            tokio::spawn(async move {
                let mut succeeded = 0usize;
                for i in 0..5_000 {
                    let sql = format!("select {worker}, {i}");
                    match call(
                        &clients[worker % 4],
                        "bigquery_read_actions",
                        json!({"action": "query", "sql": sql}),
                    )
                    .await
                    {
                        Ok(_) => succeeded += 1,
                        Err(error) => return (succeeded, Some(error)),
                    }
                }
                (succeeded, None)
            })
        })
        .collect();
    while w.bigquery.count() < 20 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(w.gw.gw.sessions().count() > 0);
    let (status, body) = w.revoke_at(&w.gw, &grant_id).await;
    assert_eq!(status, 200, "{body}");
    let at_ack = w.bigquery.count();
    assert_eq!(body["revoked"], json!([grant_id]), "{body}");
    assert_eq!(body["confirmed"], true, "{body}");
    assert!(w.gw.gw.delegation().grants.get(&grant_id).is_none());

    let mut succeeded = 0;
    for worker in workers {
        let (ok, refusal) = worker.await.unwrap();
        succeeded += ok;
        match refusal {
            Some(rmcp::service::ServiceError::McpError(e)) => {
                assert_eq!(e.data.as_ref().unwrap()["reason"], "grant_revoked", "{e:?}")
            }
            // Refused at the HTTP layer: 401 naming the revoke.
            Some(other) => assert!(
                format!("{other:?}").contains("has ended: revoked by root@example.com"),
                "a call failed for another reason: {other:?}"
            ),
            None => panic!("a worker made 5,000 calls and none was refused"),
        }
    }
    // Every call that reached the upstream was answered; every worker was refused.
    assert_eq!(w.bigquery.count(), succeeded);
    // And nothing reaches it afterwards.
    assert!(
        call(
            &clients[0],
            "bigquery_read_actions",
            json!({"action": "query", "sql": "late"})
        )
        .await
        .is_err()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(w.bigquery.count(), succeeded);
    // The calls under way when the revoke came were answered before its
    // acknowledgement; none reached the upstream after it.
    assert_eq!(
        at_ack, succeeded,
        "a call reached the upstream after the ack"
    );
    // The grant's sessions ended with it (their clients could not close them:
    // every request with the token, DELETE included, now gets 401).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while w.gw.gw.sessions().count() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "a revoked grant's sessions outlived it"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rows = w.gw.audit_rows().await;
    let refused_at_gate = rows
        .iter()
        .filter(|r| r.reason_code.as_deref() == Some("grant_revoked"))
        .count();
    assert!(refused_at_gate > 0);
    let ok_rows = rows
        .iter()
        .filter(|r| r.upstream_status.as_deref() == Some("ok"))
        .count();
    assert_eq!(ok_rows, succeeded);
    let (_, listed) = w
        .admin("GET", "/admin/api/grants?all=true", Value::Null)
        .await;
    assert!(
        listed["grants"][0]["end_reason"]
            .as_str()
            .unwrap()
            .starts_with("revoked by root@example.com")
    );
    w.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_owners_flows_at_once_never_see_each_others_scope() {
    let w = world().await;
    let alice = w.wm.start_flow("alice", "f/finance/a");
    let bob = w.wm.start_flow("bob", "f/finance/b");
    let (alice_token, _) = w.grant_token(&alice, DECLARATION).await;
    let (bob_token, _) = w.grant_token(&bob, DECLARATION).await;
    let (a, b) = tokio::join!(
        rmcp_connect(&w.gw.url, &alice_token),
        rmcp_connect(&w.gw.url, &bob_token)
    );
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (a, b) = (a.peer().clone(), b.peer().clone());
        tasks.push(tokio::spawn(async move {
            let post = |text: String| {
                rmcp::model::CallToolRequestParams::new("slack_write_actions").with_arguments(
                    support::args(json!({"action": "post_message", "text": text})),
                )
            };
            let (ra, rb) = tokio::join!(
                a.call_tool(post(format!("a{i}"))),
                b.call_tool(post(format!("b{i}")))
            );
            (ra.is_ok(), rb.map_err(|e| reason_of(&e)))
        }));
    }
    for task in tasks {
        let (alice_ok, bob) = task.await.unwrap();
        assert!(alice_ok);
        assert_eq!(bob.unwrap_err(), "outside_owner_scope");
    }
    let rows = w.gw.audit_rows().await;
    for row in rows
        .iter()
        .filter(|r| r.action.as_deref() == Some("post_message"))
    {
        match row.subject.as_str() {
            "alice@example.com" => {
                assert_eq!(row.actor, "windmill:prod/finance/f/finance/a");
                assert_eq!(row.decision, "allowed");
            }
            "bob@example.com" => {
                assert_eq!(row.actor, "windmill:prod/finance/f/finance/b");
                assert_eq!(row.decision, "refused");
            }
            other => panic!("unexpected subject {other}"),
        }
    }
    assert_eq!(w.slack.count(), 20);
    a.cancel().await.unwrap();
    b.cancel().await.unwrap();
    w.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revocations_by_subject_or_flow_and_from_another_process() {
    let w = world().await;
    let s1 = w.wm.start_flow("alice", "f/finance/a");
    let s2 = w.wm.start_flow("alice", "f/finance/b");
    let s3 = w.wm.start_flow("bob", "f/finance/b");
    let (_, g1) = w.grant_token(&s1, DECLARATION).await;
    let (_, g2) = w.grant_token(&s2, DECLARATION).await;
    let (_, g3) = w.grant_token(&s3, DECLARATION).await;
    let (status, body) = w
        .admin(
            "POST",
            "/admin/api/grants/revoke",
            json!({"flow_path": "f/finance/b"}),
        )
        .await;
    assert_eq!(status, 200);
    let mut revoked: Vec<String> = serde_json::from_value(body["revoked"].clone()).unwrap();
    revoked.sort();
    let mut expected = vec![g2.clone(), g3.clone()];
    expected.sort();
    assert_eq!(revoked, expected);
    assert!(w.gw.gw.delegation().grants.get(&g1).is_some());

    // Written to the store by another process (the CLI): the watcher acts.
    let filter = mcpgate::delegation::store::RevokeFilter {
        subject: Some("alice@example.com".into()),
        ..Default::default()
    };
    let ids = mcpgate::delegation::store::request_revocation(w.gw.gw.pool(), &filter, "cli:ops")
        .await
        .unwrap();
    assert_eq!(ids, vec![g1.clone()]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while w.gw.gw.delegation().grants.get(&g1).is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the watcher did not revoke"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let record = mcpgate::delegation::store::grant(w.gw.gw.pool(), &g1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.end_reason.as_deref(), Some("revoked by cli:ops"));
    // Non-admins cannot use the admin API, and that refusal is audited.
    let user = w.gw.token("bob@example.com").await;
    let response = reqwest::Client::new()
        .get(format!("{}/admin/api/grants", w.gw.base))
        .bearer_auth(user)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(w.refusal_row("not_admin").await.subject, "bob@example.com");
    // The admin API remembers verified tokens, yet an admin's token revoked
    // by another process (the CLI) is refused on its very next use.
    let admin = w.gw.token("root@example.com").await;
    let list = |token: String| {
        reqwest::Client::new()
            .get(format!("{}/admin/api/grants", w.gw.base))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(list(admin.clone()).await.unwrap().status(), 200);
    assert_eq!(list(admin.clone()).await.unwrap().status(), 200);
    let id = admin.split('_').nth(1).unwrap();
    assert!(mcpgate::tokens::revoke(w.gw.gw.pool(), id).await.unwrap());
    assert_eq!(list(admin).await.unwrap().status(), 401);
    w.gw.stop().await;
}
