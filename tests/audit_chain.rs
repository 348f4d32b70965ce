//! The audit log's tamper evidence: each kind of quiet rewrite — an edited
//! decision, a deleted row, a forged row, two rows swapped, a cut tail, a
//! forged checkpoint — is caught by `verify` at the right row; exports verify
//! offline with the public key alone; retention keeps what remains
//! verifiable; and a `kill -9` under load leaves a log that verifies with
//! every acknowledged call in it.

use std::process::{Command, Stdio};
use std::time::Duration;

use actors::audit::{
    self, AuditDecision, AuditMsg, AuditOutcome, AuditWrite, AuditWriter, AuditWriterArgs,
    ChainSettings, Decision,
};
use actors::audit_chain::{CheckpointKey, VerifierKey};
use mcpgate::audit::records::{self, Encoding};
use mcpgate::audit::verify::{self, Kind, Report};
use ractor::{Actor, ActorRef};

mod support;

const BIN: &str = env!("CARGO_BIN_EXE_mcpgate");

fn key() -> CheckpointKey {
    CheckpointKey::from_seed("test/audit", [5; 32])
}

fn decision_at(call_id: &str, at: &str, completed: bool) -> AuditWrite {
    AuditWrite::Decision(Box::new(AuditDecision {
        call_id: call_id.into(),
        at: at.into(),
        subject: "s@example.com".into(),
        actor: "a@example.com".into(),
        session: None,
        client_name: Some("test".into()),
        client_version: None,
        service: Some("svc".into()),
        tool: "svc_act".into(),
        action: Some("act".into()),
        risk: Some(actors::risk::Risk::Write),
        decision: if completed {
            Decision::Refused
        } else {
            Decision::Allowed
        },
        reason_code: completed.then(|| "access_denied".into()),
        reason: completed.then(|| "no access".into()),
        args_sha256: "0".repeat(64),
        grant_id: None,
        job_id: None,
        pii_rehydrated: None,
        pii_types: None,
        completed,
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
        latency_ms: Some(2.25),
    })
}

async fn start_writer(pool: &mcpgate::storage::Db) -> ActorRef<AuditMsg> {
    let (writer, _) = Actor::spawn(
        None,
        AuditWriter,
        AuditWriterArgs {
            pool: pool.clone(),
            max_batch: 64,
            chain: ChainSettings {
                key: key(),
                origin: "test/audit".into(),
                checkpoint_every: 1000,
                checkpoint_interval: Duration::from_secs(3600),
            },
        },
    )
    .await
    .unwrap();
    writer
}

/// Ten calls (rows 1–10; row 5 a refusal written complete), one at a time,
/// and the writer stopped gracefully, which signs the head.
async fn ten_calls() -> (tempfile::TempDir, mcpgate::storage::Db) {
    let dir = tempfile::tempdir().unwrap();
    let pool = mcpgate::storage::open(dir.path()).await.unwrap();
    let writer = start_writer(&pool).await;
    for i in 1..=10 {
        let id = format!("c{i}");
        let refused = i == 5;
        audit::write(&writer, decision_at(&id, &actors::now_rfc3339(), refused))
            .await
            .unwrap();
        if !refused {
            audit::write(&writer, outcome(&id)).await.unwrap();
        }
    }
    writer.stop_and_wait(None, None).await.unwrap();
    (dir, pool)
}

async fn check(pool: &mcpgate::storage::Db) -> Report {
    let records = records::load(pool).await.unwrap();
    verify::verify(&records, &[key().verifier()], Encoding::Jsonl)
}

async fn exec(pool: &mcpgate::storage::Db, sql: &str) {
    sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// The first finding, which must be of `kind` and mention every one of `words`.
fn first_break(report: &Report, kind: Kind, words: &[&str]) {
    let first = report
        .findings
        .first()
        .unwrap_or_else(|| panic!("the tampering went unnoticed: {report:?}"));
    let text = first.to_string();
    assert_eq!(first.kind, kind, "{text}\nall: {:#?}", report.findings);
    for word in words {
        assert!(text.contains(word), "{text:?} lacks {word:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untouched_log_verifies_and_is_fully_signed() {
    let (_dir, pool) = ten_calls().await;
    let report = check(&pool).await;
    assert!(report.intact(), "{:#?}", report.findings);
    assert_eq!(report.rows, 10);
    // A genesis, 10 decisions, 9 outcomes: all signed at the graceful stop.
    assert_eq!((report.signed_entries, report.unsigned_entries), (20, 0));
    // Another key does not vouch for it.
    let other = CheckpointKey::from_seed("test/audit", [6; 32]).verifier();
    let records = records::load(&pool).await.unwrap();
    let report = verify::verify(&records, &[other], Encoding::Jsonl);
    assert!(
        report.findings.iter().any(|f| f.kind == Kind::Forged),
        "{report:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_decision_is_caught_at_its_row() {
    let (_dir, pool) = ten_calls().await;
    exec(
        &pool,
        "UPDATE audit_events SET decision = 'allowed' WHERE id = 5",
    )
    .await;
    first_break(&check(&pool).await, Kind::Modified, &["row 5", "decision"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_with_its_entry_and_every_hash_after_it_rewritten_is_caught_by_the_checkpoint() {
    let (_dir, pool) = ten_calls().await;
    // The careful forger: row 4's subject, its entry, and the stored hash
    // chain from there on, all made consistent — only the signature is out
    // of reach.
    let records = records::load(&pool).await.unwrap();
    let mut rows: Vec<_> = records
        .iter()
        .filter(|r| r.kind == "row")
        .cloned()
        .collect();
    let row4 = rows.iter_mut().find(|r| r.id == Some(4)).unwrap();
    let forged_entry = row4
        .chain_entry
        .clone()
        .unwrap()
        .replace("s@example.com", "someone-else@example.com");
    let seq4 = row4.chain_seq.unwrap();
    let mut hash = actors::audit_chain::parse_hash(&hash_at(&records, seq4 - 1)).unwrap_or([0; 32]);
    let mut by_seq: Vec<(i64, String, bool, i64)> = Vec::new(); // (seq, entry, is_outcome, row id)
    for r in &rows {
        by_seq.push((
            r.chain_seq.unwrap(),
            r.chain_entry.clone().unwrap(),
            false,
            r.id.unwrap(),
        ));
        if let Some(seq) = r.outcome_seq {
            by_seq.push((seq, r.outcome_entry.clone().unwrap(), true, r.id.unwrap()));
        }
    }
    by_seq.sort();
    for (seq, entry, is_outcome, id) in by_seq.into_iter().filter(|(s, ..)| *s >= seq4) {
        let entry = if seq == seq4 {
            forged_entry.clone()
        } else {
            entry
        };
        hash = actors::audit_chain::next_hash(&hash, &entry);
        let (entry_col, hash_col) = if is_outcome {
            ("outcome_entry", "outcome_hash")
        } else {
            ("chain_entry", "chain_hash")
        };
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE audit_events SET {entry_col} = $1, {hash_col} = $2 WHERE id = $3"
        )))
        .bind(&entry)
        .bind(hex::encode(hash))
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
    }
    exec(
        &pool,
        "UPDATE audit_events SET subject = 'someone-else@example.com' WHERE id = 4",
    )
    .await;
    first_break(
        &check(&pool).await,
        Kind::Modified,
        &["checkpoint", "row 10"],
    );
}

fn hash_at(records: &[records::Record], seq: i64) -> String {
    records
        .iter()
        .find_map(|r| {
            if r.chain_seq == Some(seq) && r.kind != "checkpoint" {
                r.chain_hash.clone()
            } else if r.outcome_seq == Some(seq) {
                r.outcome_hash.clone()
            } else {
                None
            }
        })
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_row_is_caught_between_its_neighbours() {
    let (_dir, pool) = ten_calls().await;
    exec(&pool, "DELETE FROM audit_events WHERE id = 6").await;
    first_break(
        &check(&pool).await,
        Kind::Deleted,
        &["after row 5", "before row 7"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_rows_are_caught_with_or_without_copied_chain_columns() {
    let (_dir, pool) = ten_calls().await;
    // A row typed in by hand: no chain entry at all.
    exec(
        &pool,
        "INSERT INTO audit_events (call_id, started_at, subject, actor, tool, decision, args_sha256) \
         VALUES ('forged', '2026-01-01T00:00:00Z', 's@example.com', 'a@example.com', 'svc_act', 'allowed', 'x')",
    )
    .await;
    first_break(&check(&pool).await, Kind::Inserted, &["row 11", "forged"]);

    // A copy of row 3 under another call id, chain columns and all.
    exec(&pool, "DELETE FROM audit_events WHERE call_id = 'forged'").await;
    exec(
        &pool,
        "INSERT INTO audit_events (call_id, started_at, completed_at, subject, actor, session, client_name, \
         client_version, service, tool, action, risk, decision, reason_code, reason, args_sha256, grant_id, \
         job_id, pii_rehydrated, pii_types, upstream_status, latency_ms, chain_id, chain_seq, chain_hash, \
         chain_entry, outcome_chain, outcome_seq, outcome_hash, outcome_entry) \
         SELECT 'copy', started_at, completed_at, subject, actor, session, client_name, client_version, \
         service, tool, action, risk, decision, reason_code, reason, args_sha256, grant_id, job_id, \
         pii_rehydrated, pii_types, upstream_status, latency_ms, chain_id, chain_seq, chain_hash, \
         chain_entry, outcome_chain, outcome_seq, outcome_hash, outcome_entry FROM audit_events WHERE id = 3",
    )
    .await;
    let report = check(&pool).await;
    assert!(
        report
            .findings
            .iter()
            .any(|f| f.kind == Kind::Inserted && f.to_string().contains("row 12")),
        "{:#?}",
        report.findings
    );
    // Its columns do not match its (copied) entries either: the call id differs.
    assert!(
        report
            .findings
            .iter()
            .any(|f| f.kind == Kind::Modified && f.to_string().contains("row 12: call_id")),
        "{:#?}",
        report.findings
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_swapped_rows_are_caught() {
    let (_dir, pool) = ten_calls().await;
    // Swap rows 7 and 8 whole (their places in the table, entries and all).
    exec(&pool, "UPDATE audit_events SET id = 1007 WHERE id = 7").await;
    exec(&pool, "UPDATE audit_events SET id = 7 WHERE id = 8").await;
    exec(&pool, "UPDATE audit_events SET id = 8 WHERE id = 1007").await;
    first_break(&check(&pool).await, Kind::Reordered, &["row 7", "row 8"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_tail_is_caught_by_the_checkpoint_of_the_graceful_stop() {
    let (_dir, pool) = ten_calls().await;
    exec(&pool, "DELETE FROM audit_events WHERE id >= 9").await;
    first_break(&check(&pool).await, Kind::Truncated, &["after row 8"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_checkpoint_is_caught() {
    let (_dir, pool) = ten_calls().await;
    exec(
        &pool,
        "UPDATE audit_checkpoints SET note = replace(note, char(10) || '20' || char(10), char(10) || '21' || char(10))",
    )
    .await;
    first_break(&check(&pool).await, Kind::Forged, &["checkpoint"]);
}

/// A later chain witnesses where the earlier one ended, so the tail of a
/// chain that never got its last checkpoint (a crash) cannot be cut either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_chain_witnesses_the_unsigned_tail_of_a_crashed_one() {
    witness_after_a_crash(false).await;
}

/// The heads table is a convenience kept by triggers: without its row, the
/// next chain finds the crashed chain's head by reading the log itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_head_row_is_found_again_in_the_log() {
    witness_after_a_crash(true).await;
}

async fn witness_after_a_crash(lose_the_head_row: bool) {
    let dir = tempfile::tempdir().unwrap();
    let pool = mcpgate::storage::open(dir.path()).await.unwrap();
    let first = start_writer(&pool).await;
    for i in 1..=4 {
        let id = format!("c{i}");
        audit::write(&first, decision_at(&id, &actors::now_rfc3339(), false))
            .await
            .unwrap();
        audit::write(&first, outcome(&id)).await.unwrap();
    }
    // Killed, not stopped: no final checkpoint.
    first.kill_and_wait(None).await.unwrap();
    // The triggers kept the head where the log ends: genesis, 4 rows, 4 outcomes.
    let heads: Vec<(String, i64)> = sqlx::query_as("SELECT chain_id, size FROM audit_chain_heads")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert_eq!(heads[0].1, 9, "{heads:?}");
    if lose_the_head_row {
        exec(&pool, "DELETE FROM audit_chain_heads").await;
    }
    let second = start_writer(&pool).await;
    audit::write(&second, decision_at("c5", &actors::now_rfc3339(), true))
        .await
        .unwrap();
    second.stop_and_wait(None, None).await.unwrap();
    let report = check(&pool).await;
    assert!(report.intact(), "{:#?}", report.findings);
    assert_eq!(report.unsigned_entries, 0, "{report:?}");

    exec(&pool, "DELETE FROM audit_events WHERE id = 4").await;
    first_break(&check(&pool).await, Kind::Truncated, &["after row 3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_verify_offline_with_the_public_key_alone() {
    let (dir, pool) = ten_calls().await;
    let vkey = key().verifier().to_vkey();
    let mut all = records::load(&pool).await.unwrap();
    all.insert(0, records::header(None));
    for encoding in [Encoding::Jsonl, Encoding::Csv] {
        let mut bytes = Vec::new();
        match encoding {
            Encoding::Jsonl => records::write_jsonl(&mut bytes, &all).unwrap(),
            Encoding::Csv => records::write_csv(&mut bytes, &all).unwrap(),
        }
        let path = dir.path().join(format!("export-{encoding:?}"));
        std::fs::write(&path, &bytes).unwrap();
        // The command line, with nothing but the file and the key.
        let verified = Command::new(BIN)
            .args([
                "audit",
                "verify",
                "--file",
                path.to_str().unwrap(),
                "--public-key",
                &vkey,
            ])
            .env("MCPGATE_DATA_DIR", dir.path().join("elsewhere"))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&verified.stdout);
        assert!(verified.status.success(), "{encoding:?}: {stdout}");
        assert!(stdout.contains("audit log intact: 10 row(s)"), "{stdout}");

        // The same export with row 2's subject changed fails, naming row 2.
        let text = String::from_utf8(bytes).unwrap();
        let tampered = text.replacen("s@example.com", "x@example.com", 1);
        std::fs::write(&path, tampered).unwrap();
        let verified = Command::new(BIN)
            .args([
                "audit",
                "verify",
                "--file",
                path.to_str().unwrap(),
                "--public-key",
                &vkey,
            ])
            .env("MCPGATE_DATA_DIR", dir.path().join("elsewhere"))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&verified.stdout);
        assert!(!verified.status.success(), "{encoding:?}: {stdout}");
        assert!(
            stdout.contains("first break: modified: row 1"),
            "{encoding:?}: {stdout}"
        );
    }
    // A key that is not the log's is refused for a file (no silent pass).
    let parsed = VerifierKey::parse(&vkey).unwrap();
    assert_eq!(parsed.to_vkey(), vkey);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_verifies_on_its_own_and_still_catches_edits_inside_it() {
    let (_dir, pool) = ten_calls().await;
    let since: String = sqlx::query_scalar("SELECT started_at FROM audit_events WHERE id = 6")
        .fetch_one(&pool)
        .await
        .unwrap();
    let range = |records: Vec<records::Record>| {
        let mut part = records::since(records, &since);
        part.insert(0, records::header(Some(&since)));
        part
    };
    let part = range(records::load(&pool).await.unwrap());
    assert!(
        part.iter().any(|r| r.kind == "start"),
        "a range names where it starts"
    );
    let report = verify::verify(&part, &[key().verifier()], Encoding::Jsonl);
    assert!(report.intact(), "{:#?}", report.findings);
    assert!(report.rows >= 5 && report.rows < 10, "{report:?}");

    exec(&pool, "UPDATE audit_events SET tool = 'other' WHERE id = 8").await;
    let part = range(records::load(&pool).await.unwrap());
    let report = verify::verify(&part, &[key().verifier()], Encoding::Jsonl);
    first_break(&report, Kind::Modified, &["row 8", "tool"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_prunes_at_a_checkpoint_and_what_remains_verifies() {
    let dir = tempfile::tempdir().unwrap();
    retention_on(mcpgate::storage::open(dir.path()).await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_on_postgres() {
    let store = support::SharedStore::create().await;
    let config =
        mcpgate::config::Config::parse(&format!("database: {}\n", store.url), "t.yaml").unwrap();
    retention_on(mcpgate::storage::connect(&config).await.unwrap()).await;
}

async fn retention_on(pool: mcpgate::storage::Db) {
    let writer = start_writer(&pool).await;
    let old = actors::format_rfc3339(time::OffsetDateTime::now_utc() - time::Duration::days(40));
    for i in 1..=6 {
        let id = format!("old{i}");
        audit::write(&writer, decision_at(&id, &old, false))
            .await
            .unwrap();
        audit::write(&writer, outcome(&id)).await.unwrap();
    }
    assert!(matches!(
        writer.call(AuditMsg::Sign, None).await.unwrap(),
        ractor::rpc::CallResult::Success(true)
    ));
    // One old call still open (its outcome not yet written) stays.
    audit::write(&writer, decision_at("old-open", &old, false))
        .await
        .unwrap();
    for i in 1..=3 {
        let id = format!("new{i}");
        audit::write(&writer, decision_at(&id, &actors::now_rfc3339(), false))
            .await
            .unwrap();
        audit::write(&writer, outcome(&id)).await.unwrap();
    }
    let pruned = mcpgate::audit::retention::prune(&pool, &writer, Duration::from_secs(30 * 86400))
        .await
        .unwrap();
    assert_eq!(pruned.rows, 6, "{pruned:?}");
    audit::write(&writer, outcome("old-open")).await.unwrap();
    writer.stop_and_wait(None, None).await.unwrap();

    let left: Vec<String> = sqlx::query_scalar("SELECT call_id FROM audit_events ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(left, ["old-open", "new1", "new2", "new3"]);
    let report = check(&pool).await;
    assert!(report.intact(), "{:#?}", report.findings);

    // A second run has nothing more to take and changes nothing.
    let writer = start_writer(&pool).await;
    let again = mcpgate::audit::retention::prune(&pool, &writer, Duration::from_secs(30 * 86400))
        .await
        .unwrap();
    assert_eq!(again.rows, 0);
    writer.stop_and_wait(None, None).await.unwrap();
    assert!(check(&pool).await.intact());

    // And what remains is still guarded.
    exec(&pool, "DELETE FROM audit_events WHERE call_id = 'new2'").await;
    let report = check(&pool).await;
    assert_eq!(
        report.findings.first().map(|f| f.kind),
        Some(Kind::Deleted),
        "{report:?}"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_http(url: &str) {
    for _ in 0..300 {
        if reqwest::get(url)
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} never answered");
}

fn terminate(child: &mut std::process::Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    child.wait().unwrap();
}

/// The real binary under load, killed with SIGKILL, then started again:
/// `mcpgate audit verify` passes and every acknowledged call has its row.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_under_load_then_restart_verifies_with_every_acknowledged_call() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mcpgate.yaml");
    std::fs::write(
        &config,
        "users:\n  - email: you@example.com\n    access: {}\naudit:\n  checkpoint_every: 50\n  checkpoint_interval: 200ms\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let cli = |args: &[&str]| {
        Command::new(BIN)
            .arg("--config")
            .arg(&config)
            .args(args)
            .env("MCPGATE_DATA_DIR", &data)
            .output()
            .unwrap()
    };
    let token = cli(&[
        "token",
        "create",
        "--user",
        "you@example.com",
        "--name",
        "load",
    ]);
    assert!(
        token.status.success(),
        "{}",
        String::from_utf8_lossy(&token.stderr)
    );
    let token = String::from_utf8_lossy(&token.stdout).trim().to_owned();

    let serve = |port: u16| {
        Command::new(BIN)
            .arg("--config")
            .arg(&config)
            .arg("serve")
            .env("MCPGATE_DATA_DIR", &data)
            .env("MCPGATE_LISTEN", format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let port = free_port();
    let mut child = serve(port);
    let url = format!("http://127.0.0.1:{port}/mcp");
    wait_http(&format!("http://127.0.0.1:{port}/health")).await;

    // Eight clients call as fast as they can; each keeps the arguments of
    // the calls the gateway answered (rows hold their digest).
    let acknowledged = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut clients = Vec::new();
    for client_no in 0..8 {
        let (url, token, acknowledged) = (url.clone(), token.clone(), acknowledged.clone());
        clients.push(tokio::spawn(async move {
            let client = support::rmcp_connect(&url, &token).await;
            for n in 0.. {
                let service = format!("load-{client_no}-{n}");
                let args = serde_json::json!({"service": service, "limit": 1});
                // A client whose gateway died may wait for it: give up then.
                let call = support::call(&client, "gateway_my_activity", args);
                match tokio::time::timeout(Duration::from_secs(5), call).await {
                    Ok(Ok(result)) if result.is_error != Some(true) => {
                        acknowledged.lock().unwrap().push(service)
                    }
                    Ok(Ok(result)) => panic!("refused: {result:?}"),
                    Ok(Err(_)) | Err(_) => return,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    for c in clients {
        let _ = c.await;
    }
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() > 20,
        "load too light: {}",
        acknowledged.len()
    );

    // Started again: interrupted rows are completed through the new chain.
    let mut child = serve(port);
    wait_http(&format!("http://127.0.0.1:{port}/health")).await;
    let verified = cli(&["audit", "verify"]);
    let stdout = String::from_utf8_lossy(&verified.stdout);
    assert!(
        verified.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&verified.stderr)
    );
    assert!(stdout.contains("audit log intact"), "{stdout}");
    terminate(&mut child);

    let pool = mcpgate::storage::open(&data).await.unwrap();
    let completed: std::collections::HashSet<String> = sqlx::query_scalar(
        "SELECT args_sha256 FROM audit_events WHERE completed_at IS NOT NULL AND decision = 'allowed'",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    let lost: Vec<&String> = acknowledged
        .iter()
        .filter(|service| {
            let args = support::args(serde_json::json!({"service": service, "limit": 1}));
            !completed.contains(&mcpgate::audit::canonical_digest(&args))
        })
        .collect();
    assert!(
        lost.is_empty(),
        "acknowledged calls without a complete row: {lost:?}"
    );
}

/// Two replicas on one PostgreSQL each append to a chain of their own; the
/// log verifies as a whole, and an edit on the shared store is caught.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_on_postgres_each_keep_a_chain_and_the_log_verifies() {
    let store = support::SharedStore::create().await;
    let body = "users:\n  - email: you@example.com\n    access: {}\n";
    let a = support::TestGateway::start_on(body, Some(&store)).await;
    let b = support::TestGateway::start_on(body, Some(&store)).await;
    let token = a.token("you@example.com").await;
    let mut calls = 0;
    for gw in [&a, &b] {
        let client = gw.rmcp_client(&token).await;
        for n in 0..5 {
            let result = support::call(
                &client,
                "gateway_my_activity",
                serde_json::json!({"service": format!("s{n}")}),
            )
            .await
            .unwrap();
            assert_ne!(result.is_error, Some(true), "{result:?}");
            calls += 1;
        }
    }
    a.stop().await;
    b.stop().await;

    let config =
        mcpgate::config::Config::parse(&format!("database: {}\n", store.url), "t.yaml").unwrap();
    let pool = mcpgate::storage::connect(&config).await.unwrap();
    let master = mcpgate::keys::MasterKey::from_hex(&store.key_hex).unwrap();
    let verifier = mcpgate::audit::checkpoint_key(&master, &config.audit).verifier();
    let records = records::load(&pool).await.unwrap();
    let report = verify::verify(&records, std::slice::from_ref(&verifier), Encoding::Jsonl);
    assert!(report.intact(), "{:#?}", report.findings);
    assert_eq!(report.rows, calls);
    assert!(report.chains >= 2, "{report:?}");
    assert_eq!(
        report.unsigned_entries, 0,
        "both stopped gracefully: {report:?}"
    );

    let third: i64 = sqlx::query_scalar("SELECT id FROM audit_events ORDER BY id LIMIT 1 OFFSET 2")
        .fetch_one(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE audit_events SET subject = 'someone@example.com' WHERE id = $1")
        .bind(third)
        .execute(&pool)
        .await
        .unwrap();
    let records = records::load(&pool).await.unwrap();
    let report = verify::verify(&records, &[verifier], Encoding::Jsonl);
    first_break(
        &report,
        Kind::Modified,
        &[&format!("row {third}"), "subject"],
    );
}

/// On PostgreSQL an interrupted call's outcome (no latency) and a normal
/// one (a latency) share one cached statement: both must be accepted, in
/// either order, and the log must verify (the soak caught a NULL typing the
/// statement's latency column as text).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcomes_with_and_without_latency_share_a_statement_on_postgres() {
    let store = support::SharedStore::create().await;
    let config =
        mcpgate::config::Config::parse(&format!("database: {}\n", store.url), "t.yaml").unwrap();
    let pool = mcpgate::storage::connect(&config).await.unwrap();
    let writer = start_writer(&pool).await;
    for round in 0..4 {
        let cut = format!("cut{round}");
        audit::write(&writer, decision_at(&cut, &actors::now_rfc3339(), false))
            .await
            .unwrap();
        let completed = writer
            .call(|reply| AuditMsg::CompleteInterrupted(None, reply), None)
            .await
            .unwrap();
        assert!(
            matches!(completed, ractor::rpc::CallResult::Success(Ok(1))),
            "{completed:?}"
        );
        let ok = format!("ok{round}");
        audit::write(&writer, decision_at(&ok, &actors::now_rfc3339(), false))
            .await
            .unwrap();
        audit::write(&writer, outcome(&ok)).await.unwrap();
    }
    writer.stop_and_wait(None, None).await.unwrap();
    let report = check(&pool).await;
    assert!(report.intact(), "{:#?}", report.findings);
    assert_eq!(report.rows, 8);
}
