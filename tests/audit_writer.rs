//! The audit writer on its own: group commit, per-write results, fail closed.

use actors::audit::{
    self, AuditDecision, AuditError, AuditOutcome, AuditWrite, AuditWriter, AuditWriterArgs,
    Decision,
};
use ractor::Actor;

fn decision(call_id: &str) -> AuditWrite {
    AuditWrite::Decision(Box::new(AuditDecision {
        call_id: call_id.into(),
        at: actors::now_rfc3339(),
        subject: "s@example.com".into(),
        actor: "a@example.com".into(),
        session: None,
        client_name: None,
        client_version: None,
        service: Some("svc".into()),
        tool: "svc_read_actions".into(),
        action: Some("x".into()),
        risk: Some(actors::risk::Risk::Read),
        decision: Decision::Allowed,
        reason_code: None,
        reason: None,
        args_sha256: "0".repeat(64),
        grant_id: None,
        job_id: None,
        pii_rehydrated: None,
        pii_types: None,
        completed: false,
    }))
}

fn outcome(call_id: &str) -> AuditWrite {
    AuditWrite::Outcome(AuditOutcome {
        call_id: call_id.into(),
        at: actors::now_rfc3339(),
        decision: Decision::Allowed,
        reason_code: None,
        reason: None,
        upstream_status: "ok".into(),
        latency_ms: Some(1.5),
    })
}

/// How the writer under test signs its chain.
fn chain_settings() -> audit::ChainSettings {
    audit::ChainSettings {
        key: actors::audit_chain::CheckpointKey::from_seed("test/audit", [3; 32]),
        origin: "test/audit".into(),
        checkpoint_every: 100,
        checkpoint_interval: std::time::Duration::from_millis(200),
    }
}

/// A fresh database and an audit writer on it.
async fn writer() -> (
    tempfile::TempDir,
    mcpgate::storage::Db,
    ractor::ActorRef<actors::audit::AuditMsg>,
) {
    let dir = tempfile::tempdir().unwrap();
    let pool = mcpgate::storage::open(dir.path()).await.unwrap();
    let (writer, _) = Actor::spawn(
        None,
        AuditWriter,
        AuditWriterArgs {
            pool: pool.clone(),
            max_batch: 64,
            chain: chain_settings(),
        },
    )
    .await
    .unwrap();
    (dir, pool, writer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writes_are_group_committed_with_per_write_results() {
    let (_dir, pool, writer) = writer().await;

    // 300 decisions at once: they arrive together and share commits.
    let writes = (0..300).map(|i| {
        let writer = writer.clone();
        tokio::spawn(async move { audit::write(&writer, decision(&format!("c{i}"))).await })
    });
    for w in futures::future::join_all(writes).await {
        w.unwrap().unwrap();
    }
    // Their outcomes, plus one for a call that was never recorded.
    let mut writes: Vec<_> = (0..300)
        .map(|i| {
            let writer = writer.clone();
            tokio::spawn(async move { audit::write(&writer, outcome(&format!("c{i}"))).await })
        })
        .collect();
    let ghost = {
        let writer = writer.clone();
        tokio::spawn(async move { audit::write(&writer, outcome("ghost")).await })
    };
    for w in writes.drain(..) {
        w.await.unwrap().unwrap();
    }
    assert!(matches!(ghost.await.unwrap(), Err(AuditError::MissingRow(id)) if id == "ghost"));

    let (complete, open): (i64, i64) = sqlx::query_as(
        "SELECT SUM(completed_at IS NOT NULL), SUM(completed_at IS NULL) FROM audit_events",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((complete, open), (300, 0));
    let latency: f64 =
        sqlx::query_scalar("SELECT latency_ms FROM audit_events WHERE call_id = 'c7'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(latency, 1.5);

    // An outcome cannot complete a row twice.
    assert!(matches!(
        audit::write(&writer, outcome("c7")).await,
        Err(AuditError::MissingRow(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_store_that_cannot_write_fails_every_write_of_the_batch() {
    let (_dir, pool, writer) = writer().await;
    audit::write(&writer, decision("kept")).await.unwrap();
    sqlx::query("CREATE TRIGGER down BEFORE UPDATE ON audit_events BEGIN SELECT RAISE(FAIL, 'disk full'); END;")
        .execute(&pool)
        .await
        .unwrap();
    // A decision and an outcome in one batch: the transaction is all or nothing.
    let (a, b) = tokio::join!(
        audit::write(&writer, decision("lost")),
        audit::write(&writer, outcome("kept"))
    );
    assert!(matches!(b, Err(AuditError::Store(_))), "{b:?}");
    if a.is_err() {
        let lost: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM audit_events WHERE call_id = 'lost'")
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(lost, 0, "a failed batch leaves nothing behind");
    }
}

/// A call written ahead whose gateway died before the outcome (kill -9) is
/// completed as interrupted when the gateway starts again; completed rows
/// are left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_a_crash_left_incomplete_are_marked_interrupted_at_the_next_start() {
    let (dir, pool, writer) = writer().await;
    audit::write(&writer, decision("done")).await.unwrap();
    audit::write(&writer, outcome("done")).await.unwrap();
    audit::write(&writer, decision("cut-short")).await.unwrap();
    writer.stop(None);
    drop(pool);

    let mut config = mcpgate::config::Config::default();
    config.data_dir = dir.path().to_owned();
    let pool = mcpgate::storage::open(dir.path()).await.unwrap();
    let gw = mcpgate::gateway::Gateway::start(config, pool.clone())
        .await
        .unwrap();
    let rows = mcpgate::audit::query(
        &pool,
        &mcpgate::audit::AuditFilter {
            limit: 10,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let row = |id: &str| rows.iter().find(|r| r.call_id == id).unwrap();
    assert_eq!(row("done").upstream_status.as_deref(), Some("ok"));
    let cut = row("cut-short");
    assert_eq!(cut.upstream_status.as_deref(), Some("interrupted"));
    assert_eq!(cut.decision, "failed");
    assert_eq!(cut.reason_code.as_deref(), Some("gateway_interrupted"));
    assert!(cut.completed_at.is_some());
    gw.shutdown().await;
}
