//! Faults: upstreams that crash, hang or talk garbage; actors that panic; an
//! audit store that cannot write; shutdown with calls in flight.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use actors::audit::AuditMsg;
use actors::connector::ConnectorMsg;
use serde_json::json;
use support::*;

fn faulty_config(log: &std::path::Path) -> String {
    format!(
        r#"services:
  faulty:
    kind: mcp
    command: ["{python}", "{script}"]
    env: {{ FAULTY_LOG: "{log}" }}
    call_timeout: 2s
{standard}users:
  - email: alice@example.com
    access: {{ "*": write }}
"#,
        python = python(),
        script = faulty_py(),
        log = log.display(),
        standard = standard_services(),
    )
}

fn starts(log: &std::path::Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| *l == "start")
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crashing_hanging_and_garbage_upstreams_fail_cleanly_and_recover() {
    let log_dir = tempfile::tempdir().unwrap();
    let log = log_dir.path().join("faulty.log");
    let gw = TestGateway::start(&faulty_config(&log)).await;
    let alice = gw.token("alice@example.com").await;
    let client = gw.rmcp_client(&alice).await;

    let ok = call(
        &client,
        "faulty_read_actions",
        json!({"action": "echo", "message": "before"}),
    )
    .await
    .unwrap();
    assert_eq!(text_of(&ok), "before");
    // Calls to a connected upstream run on its direct line.
    let first_line = gw.gw.directory().line("faulty").expect("a direct line");

    let mut generation = 1;
    for (action, reason) in [
        ("crash", "upstream_transport"),
        ("hang", "upstream_timeout"),
        ("garbage", "upstream_timeout"),
    ] {
        let started = Instant::now();
        let err = call(&client, "faulty_write_actions", json!({"action": action}))
            .await
            .unwrap_err();
        let took = started.elapsed();
        assert_eq!(reason_of(&err), reason, "{action}: {err}");
        assert!(
            took < Duration::from_secs(5),
            "{action} answered after {took:?}"
        );

        // Other services are untouched while this one restarts.
        let time = call(
            &client,
            "time_read_actions",
            json!({"action": "get_current_time", "timezone": "UTC"}),
        )
        .await
        .unwrap();
        assert!(text_of(&time).contains("UTC"));

        generation += 1;
        gw.wait_generation("faulty", generation).await;
        let ok = call(
            &client,
            "faulty_read_actions",
            json!({"action": "echo", "message": action}),
        )
        .await
        .unwrap();
        assert_eq!(text_of(&ok), action, "the next call after {action} works");
        // The fault closed the old line; the restarted connector opened its own.
        let line = gw.gw.directory().line("faulty").expect("a new direct line");
        assert!(
            !Arc::ptr_eq(&line, &first_line),
            "{action}: a line of the failed connector is still used"
        );
    }
    assert_eq!(starts(&log), 4, "one start plus one restart per fault");
    let metrics = reqwest::get(format!("{}/metrics", gw.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (action, reason) in [
        ("crash", "upstream_transport"),
        ("hang", "upstream_timeout"),
        ("garbage", "upstream_timeout"),
    ] {
        let series = format!(
            "mcpgate_calls_total{{service=\"faulty\",action=\"{action}\",decision=\"failed\",reason=\"{reason}\"}} 1"
        );
        assert!(metrics.contains(&series), "{series} in {metrics}");
    }
    assert!(
        metrics.contains("mcpgate_connector_starts_total{service=\"faulty\"} 4"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mcpgate_connector_up{service=\"time\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("mcpgate_actor_restarts_total 3"),
        "{metrics}"
    );
    assert_eq!(gw.gw.directory().get("everything").unwrap().starts, 1);
    assert_eq!(gw.gw.directory().get("time").unwrap().starts, 1);

    let rows = gw.audit_rows().await;
    let failed: Vec<_> = rows.iter().filter(|r| r.decision == "failed").collect();
    assert_eq!(failed.len(), 3, "{failed:#?}");
    for row in failed {
        assert!(row.completed_at.is_some());
        assert!(row.reason_code.as_deref().unwrap().starts_with("upstream_"));
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn panics_in_actors_are_caught_and_nothing_acknowledged_is_lost() {
    let log_dir = tempfile::tempdir().unwrap();
    let log = log_dir.path().join("faulty.log");
    let gw = TestGateway::start(&faulty_config(&log)).await;
    let alice = gw.token("alice@example.com").await;

    // Calls stream in while both the audit writer and a connector panic.
    let mut tasks = Vec::new();
    for i in 0..60 {
        let url = gw.url.clone();
        let token = alice.clone();
        tasks.push(tokio::spawn(async move {
            let client = rmcp_connect(&url, &token).await;
            let mut acknowledged = Vec::new();
            for j in 0..5 {
                let message = format!("m-{i}-{j}");
                if let Ok(result) = call(
                    &client,
                    "faulty_read_actions",
                    json!({"action": "echo", "message": message}),
                )
                .await
                {
                    assert_eq!(text_of(&result), message);
                    acknowledged.push(message);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let _ = client.cancel().await;
            acknowledged
        }));
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    let audit: ractor::ActorRef<AuditMsg> = gw.gw.audit().writer().unwrap();
    audit.cast(AuditMsg::InjectPanic).unwrap();
    let connector: ractor::ActorRef<ConnectorMsg> = gw.gw.mcp_connector("faulty").unwrap();
    connector.cast(ConnectorMsg::InjectPanic).unwrap();

    let mut acknowledged = Vec::new();
    for task in tasks {
        acknowledged.extend(task.await.unwrap());
    }
    gw.wait_generation("faulty", 2).await;
    assert!(
        gw.gw
            .stats()
            .actor_restarts
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 2
    );
    assert!(!acknowledged.is_empty());

    // Every answer a client received has a complete audit row.
    let rows = gw.audit_rows().await;
    for message in &acknowledged {
        let digest =
            mcpgate::audit::canonical_digest(&args(json!({"action": "echo", "message": message})));
        let matching: Vec<_> = rows.iter().filter(|r| r.args_sha256 == digest).collect();
        assert_eq!(matching.len(), 1, "{message}");
        assert_eq!(matching[0].decision, "allowed");
        assert!(
            matching[0].completed_at.is_some(),
            "{message} acknowledged but incomplete"
        );
    }
    // And the gateway works afterwards.
    let client = gw.rmcp_client(&alice).await;
    let ok = call(
        &client,
        "faulty_read_actions",
        json!({"action": "echo", "message": "after"}),
    )
    .await
    .unwrap();
    assert_eq!(text_of(&ok), "after");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn when_the_audit_store_cannot_write_calls_are_refused_not_run() {
    let log_dir = tempfile::tempdir().unwrap();
    let log = log_dir.path().join("faulty.log");
    let gw = TestGateway::start(&faulty_config(&log)).await;
    let alice = gw.token("alice@example.com").await;
    let client = gw.rmcp_client(&alice).await;
    call(
        &client,
        "faulty_read_actions",
        json!({"action": "echo", "message": "recorded"}),
    )
    .await
    .unwrap();

    // The store starts failing every write.
    sqlx::query("CREATE TRIGGER audit_down BEFORE INSERT ON audit_events BEGIN SELECT RAISE(FAIL, 'disk full'); END;")
        .execute(gw.gw.pool())
        .await
        .unwrap();
    let err = call(
        &client,
        "faulty_read_actions",
        json!({"action": "echo", "message": "unrecorded"}),
    )
    .await
    .unwrap_err();
    assert_eq!(reason_of(&err), "audit_unavailable");
    let upstream_saw = std::fs::read_to_string(&log).unwrap();
    assert!(upstream_saw.contains("echo recorded"));
    assert!(
        !upstream_saw.contains("echo unrecorded"),
        "the upstream never ran an unrecorded call"
    );

    sqlx::query("DROP TRIGGER audit_down")
        .execute(gw.gw.pool())
        .await
        .unwrap();
    call(
        &client,
        "faulty_read_actions",
        json!({"action": "echo", "message": "recorded again"}),
    )
    .await
    .unwrap();
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_drains_in_flight_calls_and_flushes_the_audit_log() {
    let gw = TestGateway::start(&format!(
        "services:\n{}users:\n  - email: alice@example.com\n    access: {{ everything: read }}\n",
        standard_services()
    ))
    .await;
    let alice = gw.token("alice@example.com").await;
    let client = gw.rmcp_client(&alice).await;
    let slow = tokio::spawn(async move {
        let r = call(
            &client,
            "everything_read_actions",
            json!({"action": "trigger-long-running-operation", "duration": 2, "steps": 2}),
        )
        .await;
        (r, client)
    });
    // Let the call reach the upstream, then shut down.
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.gw.drain().current() == 0 {
        assert!(Instant::now() < deadline, "call never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let pool = gw.gw.pool().clone();
    let stopped = Instant::now();
    gw.stop().await;
    assert!(
        stopped.elapsed() >= Duration::from_millis(500),
        "shutdown waited for the call"
    );
    let (result, _client) = slow.await.unwrap();
    let result = result.expect("the in-flight call completed");
    assert!(
        text_of(&result).contains("completed"),
        "{}",
        text_of(&result)
    );
    let rows = mcpgate::audit::query(
        &pool,
        &mcpgate::audit::AuditFilter {
            limit: 10,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let row = rows
        .iter()
        .find(|r| r.action.as_deref() == Some("trigger-long-running-operation"))
        .unwrap();
    assert_eq!(row.decision, "allowed");
    assert!(row.completed_at.is_some(), "outcome flushed before exit");
}
