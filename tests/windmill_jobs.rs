//! The `.windmill/job.yml` path end to end: the shared reader flow's step
//! script runs as a process with a Windmill-shaped environment, clones a
//! sample repository, exchanges its job token at the gateway and runs the
//! declared script with the Python client library (`clients/python`).

mod support;

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};
use support::fake_windmill::{FakeWindmill, RunningStep};
use support::recorder::Recorder;
use support::{TestGateway, python, repo};

const PNL_JOB: &str = r##"name: nightly-pnl-rollup
schedule: "0 3 * * *"
gateway-services:
  - bigquery: [read]
  - slack: [write]
script: |
  rows = mcpgate.bigquery_read_actions(action="query", sql="select sum(pnl) from ledger")
  mcpgate.slack_write_actions(action="post_message", text=f"#finance P&L ready: {rows}")
  result = {"posted": True}
"##;

struct Setup {
    gw: TestGateway,
    wm: FakeWindmill,
    bigquery: Recorder,
    slack: Recorder,
    sa_token: String,
}

async fn setup() -> Setup {
    let wm = FakeWindmill::start("finance").await;
    wm.add_user("alice", "alice@example.com");
    let bigquery = Recorder::start().await;
    let slack = Recorder::start().await;
    let gw = TestGateway::start(&format!(
        r#"services:
  bigquery: {{ kind: mcp, url: "{}" }}
  slack: {{ kind: mcp, url: "{}" }}
users:
  - email: alice@example.com
    access: {{ bigquery: read, slack: high_risk }}
  - email: windmill-sa@example.com
    service_account: true
    access: {{ bigquery: read }}
"#,
        bigquery.url, slack.url
    ))
    .await;
    mcpgate::delegation::store::set_delegation(gw.gw.pool(), true, "test")
        .await
        .unwrap();
    mcpgate::delegation::store::put_instance(
        gw.gw.pool(),
        &mcpgate::delegation::store::Instance {
            name: "prod".into(),
            base_url: wm.base_url.clone(),
            workspace: "finance".into(),
            allowed_flows: None,
        },
        "test",
    )
    .await
    .unwrap();
    let sa_token = gw.token("windmill-sa@example.com").await;
    Setup {
        gw,
        wm,
        bigquery,
        slack,
        sa_token,
    }
}

/// A local git repository with `.windmill/job.yml` on branch main.
fn sample_repo(dir: &Path, job: &str) -> String {
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .args(["-c", "user.email=dev@example.com", "-c", "user.name=dev"])
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    git(&["init", "--quiet", "-b", "main"]);
    std::fs::create_dir_all(dir.join(".windmill")).unwrap();
    std::fs::write(dir.join(".windmill/job.yml"), job).unwrap();
    git(&["add", "."]);
    git(&["commit", "--quiet", "-m", "job"]);
    format!("file://{}", dir.display())
}

/// Run the reader flow's step as Windmill would, for `step`; returns (exit code, JSON).
async fn run_reader(s: &Setup, step: &RunningStep, repo_url: &str) -> (i32, Value) {
    let mut cmd = tokio::process::Command::new(python());
    cmd.arg(repo().join("windmill/reader/run_job.py"))
        .args(["--repo", repo_url, "--ref", "main"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", std::env::temp_dir())
        .env("WM_WORKSPACE", "finance")
        .env("WM_TOKEN", &step.token)
        .env("WM_JOB_ID", &step.job_id)
        .env("WM_FLOW_JOB_ID", &step.flow_job_id)
        .env("WM_ROOT_FLOW_JOB_ID", &step.flow_job_id)
        .env("WM_FLOW_PATH", &step.flow_path)
        .env("WM_PERMISSIONED_AS", "u/alice")
        .env("WM_EMAIL", "alice@example.com")
        .env("WM_USERNAME", "schedule-nightly")
        .env("WM_BASE_URL", &s.wm.base_url)
        .env("MCPGATE_URL", &s.gw.base)
        .env("MCPGATE_TOKEN", &s.sa_token);
    let out = cmd.output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or("");
    let value = serde_json::from_str(last).unwrap_or_else(|_| {
        panic!(
            "no JSON from run_job.py: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_nightly_pnl_job_runs_as_the_flows_owner() {
    let s = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let repo_url = sample_repo(dir.path(), PNL_JOB);
    let step = s.wm.start_flow("alice", "f/mcpgate/run_job");
    let (code, out) = run_reader(&s, &step, &repo_url).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(out["job"], "nightly-pnl-rollup");
    assert_eq!(out["result"], json!({"posted": true}));
    assert_eq!(out["scope"], "bigquery:read slack:write");

    // The Slack upstream received the message built from the BigQuery answer.
    let posted = s.slack.received();
    assert_eq!(posted.len(), 1);
    assert_eq!(posted[0].0, "post_message");
    let text = posted[0].1["text"].as_str().unwrap();
    assert!(text.starts_with("#finance P&L ready: query #1"), "{text}");
    assert_eq!(s.bigquery.count(), 1);

    let rows = s.gw.audit_rows().await;
    let post = rows
        .iter()
        .find(|r| r.action.as_deref() == Some("post_message"))
        .unwrap();
    assert_eq!(post.subject, "alice@example.com");
    assert_eq!(post.actor, "windmill:prod/finance/f/mcpgate/run_job");
    assert_eq!(post.job_id.as_deref(), Some(step.job_id.as_str()));
    assert_eq!(post.grant_id.as_deref(), out["grant_id"].as_str());
    s.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn high_risk_without_approval_is_refused_with_the_gateways_reason() {
    let s = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let job = PNL_JOB.replace("slack: [write]", "slack: [write, high_risk]");
    let repo_url = sample_repo(dir.path(), &job);
    let step = s.wm.start_flow("alice", "f/mcpgate/run_job");
    let (code, out) = run_reader(&s, &step, &repo_url).await;
    assert_eq!(code, 2, "{out}");
    assert_eq!(out["error"], "high_risk_not_approved");
    assert!(
        out["message"]
            .as_str()
            .unwrap()
            .contains("f/mcpgate/run_job")
    );
    assert_eq!(s.slack.count() + s.bigquery.count(), 0);
    s.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_declaration_the_job_is_its_service_account() {
    let s = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let job = "name: plain\nscript: |\n  result = mcpgate.bigquery_read_actions(action=\"query\", sql=\"select 1\")\n";
    let repo_url = sample_repo(dir.path(), job);
    let step = s.wm.start_flow("alice", "f/mcpgate/run_job");
    let (code, out) = run_reader(&s, &step, &repo_url).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(out["grant_id"], Value::Null);
    let rows = s.gw.audit_rows().await;
    let query = rows
        .iter()
        .find(|r| r.action.as_deref() == Some("query"))
        .unwrap();
    assert_eq!(
        (query.subject.as_str(), query.actor.as_str()),
        ("windmill-sa@example.com", "windmill-sa@example.com")
    );
    // A bad job file stops before any exchange, with file:line:column.
    let bad_dir = tempfile::tempdir().unwrap();
    let bad = sample_repo(bad_dir.path(), &PNL_JOB.replace("[read]", "[reed]"));
    let (code, out) = run_reader(&s, &step, &bad).await;
    assert_eq!(code, 1);
    assert!(
        out["message"]
            .as_str()
            .unwrap()
            .contains(".windmill/job.yml:4:16"),
        "{out}"
    );
    s.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_schedule_helper_creates_then_updates_the_windmill_schedule() {
    let wm = FakeWindmill::start("finance").await;
    wm.add_user("ops", "ops@example.com");
    let token = wm.mint_token(
        "ops",
        "00000000-0000-0000-0000-000000000000",
        "finance",
        3600,
    );
    let dir = tempfile::tempdir().unwrap();
    let job_file = dir.path().join("job.yml");
    let run = |job: &str| {
        std::fs::write(&job_file, job).unwrap();
        Command::new(python())
            .arg(repo().join("windmill/reader/schedule.py"))
            .args(["--windmill", &wm.base_url, "--workspace", "finance"])
            .args([
                "--repo",
                "https://git.example.com/finance/pnl.git",
                "--job-file",
            ])
            .arg(&job_file)
            .env("WINDMILL_TOKEN", &token)
            .output()
            .unwrap()
    };
    let out = tokio::task::block_in_place(|| run(PNL_JOB));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["outcome"], "created");
    let schedule = wm.schedule("f/mcpgate_jobs/nightly_pnl_rollup").unwrap();
    assert_eq!(schedule["schedule"], "0 0 3 * * *");
    assert_eq!(schedule["script_path"], "f/mcpgate/run_job");
    assert_eq!(schedule["is_flow"], true);
    assert_eq!(
        schedule["args"]["repo_url"],
        "https://git.example.com/finance/pnl.git"
    );

    let out = tokio::task::block_in_place(|| {
        run(&PNL_JOB
            .replace("0 3 * * *", "0 9 * * 1-5")
            .replace("script:", "timezone: Europe/Paris\nscript:"))
    });
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let schedule = wm.schedule("f/mcpgate_jobs/nightly_pnl_rollup").unwrap();
    assert_eq!(schedule["schedule"], "0 0 9 * * 1-5");
    assert_eq!(schedule["timezone"], "Europe/Paris");
}

#[test]
fn the_python_rules_agree_with_mcpgate_job_validate() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "services:\n  bigquery: { kind: mcp, command: [\"true\"] }\n  slack: { kind: mcp, command: [\"true\"] }\n",
    )
    .unwrap();
    let cases = [
        PNL_JOB.to_owned(),
        PNL_JOB.replace("slack: [write]", "slak: [write]"),
        PNL_JOB.replace("[read]", "[read, delete]"),
        PNL_JOB.replace("0 3 * * *", "0 25 * * *"),
        PNL_JOB.replace("0 3 * * *", "0 3 * *"),
        PNL_JOB.replace("  - slack: [write]", "  - bigquery: [write]"),
        PNL_JOB.replace("nightly-pnl-rollup", "nightly pnl"),
        PNL_JOB.replace("0 3 * * *", "*/15 9-17 * * MON-FRI"),
    ];
    for (i, text) in cases.iter().enumerate() {
        let file = dir.path().join(format!("job{i}.yml"));
        std::fs::write(&file, text).unwrap();
        let rust = Command::new(env!("CARGO_BIN_EXE_mcpgate"))
            .args([
                "--config",
                config.to_str().unwrap(),
                "job",
                "validate",
                file.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        let script = "import sys, mcpgate\ntry:\n    mcpgate.parse_job_file(open(sys.argv[1]).read(), sys.argv[1], {'bigquery', 'slack'})\n    print('ok')\nexcept mcpgate.JobFileError as e:\n    print(e.location)\n";
        let py = Command::new(python())
            .args(["-c", script])
            .arg(&file)
            .output()
            .unwrap();
        let py_says = String::from_utf8_lossy(&py.stdout).trim().to_owned();
        let rust_err = String::from_utf8_lossy(&rust.stderr).to_string();
        if rust.status.success() {
            assert_eq!(
                py_says, "ok",
                "case {i}: Rust accepts, Python says {py_says}"
            );
        } else {
            assert!(
                rust_err.contains(&py_says),
                "case {i}: Rust says {rust_err}, Python points at {py_says}"
            );
        }
    }
}

#[test]
fn the_python_client_passes_its_own_tests() {
    let out = Command::new(python())
        .args(["-m", "unittest", "discover", "-s"])
        .arg(repo().join("clients/python/tests"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
