//! A soak under faults: three real `mcpgate serve` processes (replicas A, B
//! and C on one throwaway PostgreSQL) carry a steady mix of traffic for a
//! bounded time while faults are injected in a repeating cycle; afterwards
//! the invariants the gateway's security rests on are checked.
//!
//! Traffic: interactive MCP sessions calling tools (an MCP upstream in this
//! process, a stdio upstream, a native HTTP upstream); Windmill jobs (the fake
//! Windmill of the tests) that exchange their job token for a grant and call;
//! grant revocations through the admin API; hook reloads; confirmations of a
//! high_risk action (the write-safety flow).
//!
//! Faults, once per cycle: the stdio upstream killed (the gateway restarts
//! it), an upstream call that hangs, one answered with garbage, a 429 storm
//! from the native upstream, the store unavailable for a few seconds
//! (connections refused and terminated: calls must fail closed), replica C
//! killed (SIGKILL) and started again.
//!
//! Afterwards (exit 1 if any fails): every acknowledged call has its audit
//! row; every call that reached an upstream has its audit row; no call
//! reached an upstream after its grant's revocation was acknowledged; RSS and
//! open fds of A and B are flat after warm-up; `/health` is ok on every
//! replica; `mcpgate audit verify` passes.
//!
//! cargo build --release -p mcpgate -p loadtests --bin soak
//! target/release/soak [--minutes 10] [--smoke]

#[path = "../../../tests/support/fake_api.rs"]
mod fake_api;
#[path = "../../../tests/support/fake_windmill.rs"]
mod fake_windmill;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use fake_api::{FakeApi, Scripted};
use fake_windmill::FakeWindmill;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, JsonObject,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
    ToolAnnotations,
};
use rmcp::service::{RequestContext, RoleClient, RunningService, ServiceError};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt};
use serde_json::{Value, json};

#[derive(Parser, Debug)]
struct Args {
    /// How long traffic runs, in minutes.
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// A one-minute pass with every fault once (a compressed cycle).
    #[arg(long)]
    smoke: bool,
    /// The gateway binary (a release build).
    #[arg(long, default_value = "target/release/mcpgate")]
    gateway_bin: PathBuf,
    /// The repository (for `scripts/postgres.sh` and `tests/peers/faulty_server.py`).
    #[arg(long, default_value = ".")]
    repo: PathBuf,
    /// Python for the stdio upstream (the standard library is enough).
    #[arg(long, default_value = "python3")]
    python: String,
    /// Where the RSS/fd series (CSV), the chart and the summary are written.
    #[arg(long, default_value = "target/soak")]
    out: PathBuf,
    /// Concurrent interactive sessions (spread over the three replicas).
    #[arg(long, default_value_t = 6)]
    sessions: usize,
}

// ---------------------------------------------------------------------------
// The MCP upstream: records every call that reaches it, and when.

#[derive(Clone)]
struct Reached {
    tag: String,
    at: Instant,
}

#[derive(Clone, Default)]
struct Upstream {
    reached: Arc<Mutex<Vec<Reached>>>,
}

fn schema(properties: Value) -> Arc<JsonObject> {
    let Value::Object(map) = json!({"type": "object", "properties": properties}) else {
        unreachable!()
    };
    Arc::new(map)
}

impl ServerHandler for Upstream {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(vec![
            Tool::new(
                "query",
                "Run a query",
                schema(json!({"sql": {"type": "string"}})),
            )
            .with_annotations(ToolAnnotations::new().read_only(true)),
            Tool::new(
                "drop_table",
                "Drop a table",
                schema(json!({"table": {"type": "string"}})),
            )
            .with_annotations(ToolAnnotations::new().destructive(true)),
        ]))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let args = request.arguments.unwrap_or_default();
        let tag = ["sql", "table"]
            .iter()
            .find_map(|k| args.get(*k).and_then(Value::as_str))
            .unwrap_or("")
            .to_owned();
        self.reached.lock().unwrap().push(Reached {
            tag: tag.clone(),
            at: Instant::now(),
        });
        Ok(
            CallToolResult::success(vec![ContentBlock::text(format!("{} {tag}", request.name))])
                .into(),
        )
    }
}

async fn start_upstream(upstream: Upstream) -> anyhow::Result<String> {
    let service = StreamableHttpService::new(
        move || Ok(upstream.clone()),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default()
            .with_sse_keep_alive(None)
            .with_legacy_session_mode(false)
            .with_json_response(true),
    );
    let router = axum::Router::new().route_service("/mcp", service);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok(format!("http://{addr}/mcp"))
}

const CATALOG: &str = r#"
service: acme
auth: bearer
actions:
  - name: flaky
    description: A fast read.
    risk: read
    method: GET
    path: /v1/flaky
    params:
      tag: { in: query, type: string }
"#;

// ---------------------------------------------------------------------------
// What happened, as the clients saw it.

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Kind {
    Interactive,
    Stdio,
    Native,
    Job,
    AfterRevoke,
    ConfirmAsk,
    Confirmed,
    HookProbe,
    Fault,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Outcome {
    Answered,
    ToolError,
    ConfirmationAsked,
    Refused(String),
    /// No JSON-RPC answer: a connection error, or an HTTP-level refusal
    /// (401 for a revoked grant's token) — nothing was acknowledged.
    Transport,
}

struct CallRec {
    kind: Kind,
    gateway: usize,
    tag: String,
    digest: String,
    outcome: Outcome,
    started: Instant,
}

#[derive(Default)]
struct Log {
    calls: Mutex<Vec<CallRec>>,
    revokes: Mutex<Vec<Revoke>>,
    faults: Mutex<Vec<String>>,
    counters: Mutex<BTreeMap<String, u64>>,
    violations: Mutex<Vec<String>>,
}

struct Revoke {
    grant: String,
    acknowledged: Instant,
    confirmed: bool,
}

impl Log {
    fn count(&self, what: &str) {
        *self
            .counters
            .lock()
            .unwrap()
            .entry(what.to_owned())
            .or_default() += 1;
    }
    fn fault(&self, t0: Instant, what: String) {
        let line = format!("{:>6.1}s  {what}", t0.elapsed().as_secs_f64());
        println!("fault  {line}");
        self.faults.lock().unwrap().push(line);
    }
    fn violation(&self, what: String) {
        eprintln!("VIOLATION: {what}");
        self.violations.lock().unwrap().push(what);
    }
}

type Client = RunningService<RoleClient, ()>;

async fn connect(url: &str, token: &str) -> anyhow::Result<Client> {
    let config = StreamableHttpClientTransportConfig::with_uri(url).auth_header(token.to_owned());
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let transport = StreamableHttpClientTransport::with_client(http, config);
    Ok(().serve(transport).await?)
}

fn object(value: Value) -> JsonObject {
    match value {
        Value::Object(map) => map,
        _ => JsonObject::new(),
    }
}

/// One `tools/call`, recorded. The digest is of the arguments without any
/// `confirm` token, as the audit row's is.
#[allow(clippy::too_many_arguments)]
async fn call(
    log: &Log,
    client: &Client,
    gateway: usize,
    kind: Kind,
    tool: &str,
    args: Value,
    tag: &str,
) -> (Outcome, Option<CallToolResult>) {
    let args = object(args);
    let mut digest_args = args.clone();
    digest_args.remove("confirm");
    let digest = mcpgate::audit::canonical_digest(&digest_args);
    let started = Instant::now();
    let result = tokio::time::timeout(
        Duration::from_secs(40),
        client
            .peer()
            .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(args)),
    )
    .await;
    let (outcome, answer) = match result {
        Ok(Ok(r)) => {
            let asked = r
                .structured_content
                .as_ref()
                .is_some_and(|s| s["confirmation_required"] == json!(true));
            let outcome = if asked {
                Outcome::ConfirmationAsked
            } else if r.is_error == Some(true) {
                Outcome::ToolError
            } else {
                Outcome::Answered
            };
            (outcome, Some(r))
        }
        Ok(Err(ServiceError::McpError(e))) => (
            Outcome::Refused(
                e.data
                    .as_ref()
                    .and_then(|d| d.get("reason"))
                    .and_then(Value::as_str)
                    .unwrap_or("no_reason")
                    .to_owned(),
            ),
            None,
        ),
        Ok(Err(_)) | Err(_) => (Outcome::Transport, None),
    };
    log.calls.lock().unwrap().push(CallRec {
        kind,
        gateway,
        tag: tag.to_owned(),
        digest,
        outcome: outcome.clone(),
        started,
    });
    (outcome, answer)
}

// ---------------------------------------------------------------------------
// Gateways: real `mcpgate serve` processes.

struct Gw {
    name: &'static str,
    port: u16,
    config: PathBuf,
    child: Option<tokio::process::Child>,
    pid: Arc<Mutex<Option<u32>>>,
    faulty_log: PathBuf,
}

impl Gw {
    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

struct Setup<'a> {
    dir: &'a Path,
    database: &'a str,
    key_hex: &'a str,
    bq_url: &'a str,
    api_url: &'a str,
    python: &'a str,
    faulty_py: &'a Path,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn write_gateway(name: &'static str, setup: &Setup) -> anyhow::Result<Gw> {
    let port = free_port()?;
    let data = setup.dir.join(format!("data-{name}"));
    std::fs::create_dir_all(&data)?;
    std::fs::write(data.join("gateway.key"), setup.key_hex)?;
    let faulty_log = setup.dir.join(format!("faulty-{name}.log"));
    let config = setup.dir.join(format!("{name}.yaml"));
    let owners: String = (0..4)
        .map(|i| format!("  - email: owner{i}@example.com\n    access: {{ bq: read }}\n"))
        .collect();
    std::fs::write(
        &config,
        format!(
            r#"listen: 127.0.0.1:{port}
database: "{database}"
data_dir: "{data}"
catalog_dir: "{catalogs}"
hooks: {{ dir: "{hooks}", reload_poll: 2s }}
delegation: {{ revocation_poll: 200ms }}
services:
  bq: {{ kind: mcp, url: "{bq}" }}
  acme: {{ kind: native, catalog: acme, base_url: "{api}" }}
  faulty:
    kind: mcp
    command: ["{python}", "{faulty}"]
    env: {{ FAULTY_LOG: "{faulty_log}" }}
    call_timeout: 2s
users:
  - email: alice@example.com
    access: {{ "*": high_risk }}
{owners}  - email: sa@example.com
    service_account: true
  - email: root@example.com
    admin: true
"#,
            database = setup.database,
            data = data.display(),
            catalogs = setup.dir.join("catalogs").display(),
            hooks = setup.dir.join("hooks").display(),
            bq = setup.bq_url,
            api = setup.api_url,
            python = setup.python,
            faulty = setup.faulty_py.display(),
            faulty_log = faulty_log.display(),
        ),
    )?;
    Ok(Gw {
        name,
        port,
        config,
        child: None,
        pid: Arc::new(Mutex::new(None)),
        faulty_log,
    })
}

async fn cli(
    bin: &Path,
    config: &Path,
    args: &[&str],
    stdin: Option<&str>,
) -> anyhow::Result<String> {
    use tokio::io::AsyncWriteExt;
    let mut command = tokio::process::Command::new(bin);
    command
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn()?;
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).await?;
    }
    drop(input);
    let out = child.wait_with_output().await?;
    if !out.status.success() {
        bail!(
            "mcpgate {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

/// Start `gw` and wait until it serves its tools.
async fn start(bin: &Path, gw: &mut Gw, token: &str, dir: &Path) -> anyhow::Result<()> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("gateway-{}.log", gw.name)))?;
    let child = tokio::process::Command::new(bin)
        .arg("--config")
        .arg(&gw.config)
        .arg("serve")
        .env("RUST_LOG", "warn")
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()?;
    *gw.pid.lock().unwrap() = child.id();
    gw.child = Some(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(client) = connect(&format!("{}/mcp", gw.base()), token).await {
            let tools = client.peer().list_all_tools().await.unwrap_or_default();
            let _ = client.cancel().await;
            let names: HashSet<_> = tools.iter().map(|t| t.name.to_string()).collect();
            if [
                "bq_read_actions",
                "faulty_read_actions",
                "acme_read_actions",
            ]
            .iter()
            .all(|n| names.contains(*n))
            {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!(
                "gateway {} did not start (see its log in {})",
                gw.name,
                dir.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

// ---------------------------------------------------------------------------
// PostgreSQL (scripts/postgres.sh) and its faults.

struct Postgres {
    server_url: String,
    rundir: String,
    repo: PathBuf,
    psql: PathBuf,
}

impl Postgres {
    async fn start(repo: &Path) -> anyhow::Result<Postgres> {
        let out = tokio::process::Command::new(repo.join("scripts/postgres.sh"))
            .stderr(std::process::Stdio::inherit())
            .output()
            .await
            .context("running scripts/postgres.sh")?;
        if !out.status.success() {
            bail!("scripts/postgres.sh could not start PostgreSQL (its reasons above)");
        }
        let text = String::from_utf8(out.stdout)?;
        let value = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("export {name}=")))
                .map(|v| v.trim_matches('\'').to_owned())
        };
        let server_url = value("MCPGATE_TEST_POSTGRES").context("no URL from postgres.sh")?;
        let rundir = value("MCPGATE_TEST_PG_RUNDIR").context("no directory from postgres.sh")?;
        let bin = std::fs::read_to_string(Path::new(&rundir).join(".mcpgate-throwaway"))?;
        let psql = Path::new(bin.trim()).join("psql");
        Ok(Postgres {
            server_url,
            rundir,
            repo: repo.to_owned(),
            psql,
        })
    }

    async fn sql(&self, statement: &str) -> anyhow::Result<String> {
        let out = tokio::process::Command::new(&self.psql)
            .arg(&self.server_url)
            .args([
                "-X",
                "-A",
                "-t",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                statement,
            ])
            .output()
            .await?;
        if !out.status.success() {
            bail!("psql: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    fn database_url(&self, name: &str) -> String {
        let (prefix, _) = self.server_url.rsplit_once('/').unwrap();
        format!("{prefix}/{name}")
    }

    async fn stop(&self) {
        let _ = tokio::process::Command::new(self.repo.join("scripts/postgres.sh"))
            .args(["stop", &self.rundir])
            .status()
            .await;
    }
}

// ---------------------------------------------------------------------------
// Resource samples.

#[derive(Clone)]
struct Sample {
    secs: f64,
    gateway: &'static str,
    pid: u32,
    rss_kb: u64,
    fds: usize,
    /// Live MCP sessions as the replica's `/health` counts them (-1: no answer).
    sessions: i64,
}

fn sample(pid: u32) -> Option<(u64, usize)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    Some((rss, fds))
}

fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    values[values.len() / 2]
}

/// An ASCII chart of one series (time on x, value on y).
fn chart(title: &str, points: &[(f64, f64)], width: usize, height: usize) -> String {
    let mut out = format!("{title}\n");
    if points.is_empty() {
        return out;
    }
    let t_max = points.iter().map(|p| p.0).fold(0.0, f64::max).max(1.0);
    let lo = points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let hi = points.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
    let (lo, hi) = if hi - lo < 1e-9 {
        (lo - 1.0, hi + 1.0)
    } else {
        (lo, hi)
    };
    let mut grid = vec![vec![' '; width]; height];
    for &(t, v) in points {
        let x = ((t / t_max) * (width - 1) as f64).round() as usize;
        let y = (((v - lo) / (hi - lo)) * (height - 1) as f64).round() as usize;
        grid[height - 1 - y][x] = '*';
    }
    for (i, row) in grid.iter().enumerate() {
        let label = if i == 0 {
            format!("{hi:>9.1}")
        } else if i == height - 1 {
            format!("{lo:>9.1}")
        } else {
            " ".repeat(9)
        };
        out.push_str(&format!("{label} |{}\n", row.iter().collect::<String>()));
    }
    out.push_str(&format!(
        "{} +{}\n{} 0 s{}{t_max:.0} s\n",
        " ".repeat(9),
        "-".repeat(width),
        " ".repeat(9),
        " ".repeat(width.saturating_sub(8))
    ));
    out
}

// ---------------------------------------------------------------------------

struct Shared {
    log: Log,
    stop: AtomicBool,
    t0: Instant,
    bases: Vec<String>,
    /// Replica C is down (killed) while set.
    c_down: AtomicBool,
    alice: String,
    sa: String,
    root: String,
    jobs_started: AtomicUsize,
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
    fn mcp(&self, gateway: usize) -> String {
        format!("{}/mcp", self.bases[gateway])
    }
}

async fn interactive(shared: Arc<Shared>, worker: usize) {
    let gateway = worker % 3;
    let mut client: Option<Client> = None;
    let mut n = 0u64;
    while !shared.stopping() {
        let Some(c) = client.as_ref() else {
            match connect(&shared.mcp(gateway), &shared.alice).await {
                Ok(c) => client = Some(c),
                Err(_) => {
                    shared.log.count("interactive: session could not open");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
            continue;
        };
        n += 1;
        let tag = format!("i{worker}-{n}");
        let (kind, tool, args) = match n % 10 {
            3 => (
                Kind::Stdio,
                "faulty_read_actions",
                json!({"action": "echo", "message": tag}),
            ),
            7 => (
                Kind::Native,
                "acme_read_actions",
                json!({"action": "flaky", "tag": tag}),
            ),
            _ => (
                Kind::Interactive,
                "bq_read_actions",
                json!({"action": "query", "sql": tag}),
            ),
        };
        let (outcome, _) = call(&shared.log, c, gateway, kind, tool, args, &tag).await;
        if outcome == Outcome::Transport {
            if let Some(c) = client.take() {
                let _ = c.cancel().await;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        } else {
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
    if let Some(c) = client {
        let _ = c.cancel().await;
    }
}

async fn exchange(
    http: &reqwest::Client,
    base: &str,
    sa: &str,
    step: &fake_windmill::RunningStep,
) -> anyhow::Result<(String, String)> {
    let mut url = reqwest::Url::parse("http://form/")?;
    url.query_pairs_mut().extend_pairs([
        (
            "grant_type",
            "urn:ietf:params:oauth:grant-type:token-exchange",
        ),
        ("subject_token", step.token.as_str()),
        (
            "subject_token_type",
            "urn:mcpgate:params:oauth:token-type:windmill-job-token",
        ),
        ("actor_token", sa),
        ("workspace", "finance"),
        ("job_id", step.job_id.as_str()),
        ("flow_job_id", step.flow_job_id.as_str()),
        ("gateway_services", r#"[{"bq": ["read"]}]"#),
    ]);
    let response = http
        .post(format!("{base}/oauth/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(url.query().unwrap_or("").to_owned())
        .send()
        .await?;
    let status = response.status();
    let body: Value = response.json().await?;
    anyhow::ensure!(status.is_success(), "exchange refused: {body}");
    Ok((
        body["access_token"].as_str().unwrap_or_default().to_owned(),
        body["grant_id"].as_str().unwrap_or_default().to_owned(),
    ))
}

/// One Windmill job: exchange at a replica, call a few times; every third
/// job's grant is revoked (at another replica) while it runs, and called once more.
async fn job(shared: Arc<Shared>, wm: FakeWindmill, http: reqwest::Client, j: usize) {
    let gateway = j % 3;
    let step = wm.start_flow(&format!("owner{}", j % 4), &format!("f/finance/job{j}"));
    let (token, grant) = match exchange(&http, &shared.bases[gateway], &shared.sa, &step).await {
        Ok(t) => t,
        Err(_) => {
            shared.log.count("jobs: exchange failed");
            wm.finish(&step.job_id);
            return;
        }
    };
    shared.log.count("jobs: exchanged");
    let Ok(client) = connect(&shared.mcp(gateway), &token).await else {
        shared.log.count("jobs: session could not open");
        wm.finish(&step.job_id);
        return;
    };
    for k in 0..3 {
        let tag = format!("job-{grant}-{k}");
        call(
            &shared.log,
            &client,
            gateway,
            Kind::Job,
            "bq_read_actions",
            json!({"action": "query", "sql": tag}),
            &tag,
        )
        .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if j.is_multiple_of(3) {
        // Revoke at another replica while calls continue on this one.
        let at = (gateway + 1 + j % 2) % 3;
        let racing = {
            let shared = shared.clone();
            let grant = grant.clone();
            let client_url = shared.mcp(gateway);
            let token = token.clone();
            tokio::spawn(async move {
                let Ok(c) = connect(&client_url, &token).await else {
                    return;
                };
                for k in 0..5 {
                    let tag = format!("job-{grant}-race{k}");
                    call(
                        &shared.log,
                        &c,
                        gateway,
                        Kind::Job,
                        "bq_read_actions",
                        json!({"action": "query", "sql": tag}),
                        &tag,
                    )
                    .await;
                }
                let _ = c.cancel().await;
            })
        };
        let response = http
            .delete(format!("{}/admin/api/grants/{grant}", shared.bases[at]))
            .bearer_auth(&shared.root)
            .send()
            .await;
        let acknowledged = Instant::now();
        match response {
            Ok(r) if r.status().is_success() => {
                let body: Value = r.json().await.unwrap_or_default();
                let confirmed = body["confirmed"] == json!(true);
                shared.log.count(if confirmed {
                    "revocations: acknowledged, confirmed by every replica"
                } else {
                    "revocations: acknowledged, some replica unconfirmed"
                });
                shared.log.revokes.lock().unwrap().push(Revoke {
                    grant: grant.clone(),
                    acknowledged,
                    confirmed,
                });
                let tag = format!("job-{grant}-after");
                let (outcome, _) = call(
                    &shared.log,
                    &client,
                    gateway,
                    Kind::AfterRevoke,
                    "bq_read_actions",
                    json!({"action": "query", "sql": tag}),
                    &tag,
                )
                .await;
                if matches!(outcome, Outcome::Answered | Outcome::ToolError) {
                    shared.log.violation(format!(
                        "grant {grant}: a call was answered after its revocation was acknowledged"
                    ));
                }
            }
            Ok(r) => shared
                .log
                .count(&format!("revocations: refused ({})", r.status())),
            Err(_) => shared.log.count("revocations: transport error"),
        }
        let _ = racing.await;
    }
    let _ = client.cancel().await;
    wm.finish(&step.job_id);
}

async fn jobs(shared: Arc<Shared>, wm: FakeWindmill) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut running = tokio::task::JoinSet::new();
    let mut j = 0;
    while !shared.stopping() {
        while running.len() >= 12 {
            running.join_next().await;
        }
        j += 1;
        shared.jobs_started.fetch_add(1, Ordering::Relaxed);
        running.spawn(job(shared.clone(), wm.clone(), http.clone(), j));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    while running.join_next().await.is_some() {}
}

async fn confirmations(shared: Arc<Shared>) {
    let mut n = 0;
    while !shared.stopping() {
        n += 1;
        let gateway = n % 2; // A and B: C may be down
        let Ok(client) = connect(&shared.mcp(gateway), &shared.alice).await else {
            shared.log.count("confirmations: session could not open");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        let tag = format!("confirm-{n}");
        let args = json!({"action": "drop_table", "table": tag});
        let (outcome, answer) = call(
            &shared.log,
            &client,
            gateway,
            Kind::ConfirmAsk,
            "bq_write_actions",
            args.clone(),
            &tag,
        )
        .await;
        if outcome == Outcome::ConfirmationAsked {
            let token = answer
                .and_then(|a| a.structured_content)
                .map(|s| s["confirm"].clone())
                .unwrap_or_default();
            let mut confirmed = args.clone();
            confirmed["confirm"] = token;
            call(
                &shared.log,
                &client,
                gateway,
                Kind::Confirmed,
                "bq_write_actions",
                confirmed,
                &tag,
            )
            .await;
        }
        let _ = client.cancel().await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
}

const HOOKS_DENY: &str = "hooks:\n  - name: soak-deny\n    order: 1\n    when: 'has(args.sql) && args.sql.startsWith(\"hookdeny\")'\n    kind: deny\n    message: denied by the soak's hook\n  - name: soak-warn\n    order: 2\n    match: { service: bq }\n    kind: warn\n    message: soak\n";
const HOOKS_ALLOW: &str = "hooks:\n  - name: soak-warn\n    order: 2\n    match: { service: bq }\n    kind: warn\n    message: soak\n";

async fn hook_reloads(shared: Arc<Shared>, hooks_file: PathBuf, every: Duration) {
    let http = reqwest::Client::new();
    let mut n = 0usize;
    while !shared.stopping() {
        tokio::time::sleep(every).await;
        n += 1;
        let deny = n % 2 == 1;
        let _ = std::fs::write(&hooks_file, if deny { HOOKS_DENY } else { HOOKS_ALLOW });
        for (i, base) in shared.bases.iter().enumerate() {
            if i == 2 && shared.c_down.load(Ordering::Relaxed) {
                continue;
            }
            let ok = http
                .post(format!("{base}/admin/reload"))
                .bearer_auth(&shared.root)
                .send()
                .await
                .map(|r| r.status().is_success())
                .unwrap_or(false);
            shared.log.count(if ok {
                "hook reloads: ok"
            } else {
                "hook reloads: failed"
            });
        }
        // The reloaded set is the one in force: probe on A.
        let Ok(client) = connect(&shared.mcp(0), &shared.alice).await else {
            continue;
        };
        let tag = format!("hookdeny-{n}");
        let (outcome, _) = call(
            &shared.log,
            &client,
            0,
            Kind::HookProbe,
            "bq_read_actions",
            json!({"action": "query", "sql": tag}),
            &tag,
        )
        .await;
        let _ = client.cancel().await;
        match (deny, &outcome) {
            (true, Outcome::Refused(_)) | (false, Outcome::Answered) => {
                shared.log.count("hook reloads: probe as expected")
            }
            (_, Outcome::Refused(r)) if r == "audit_unavailable" => {
                shared.log.count("hook reloads: probe during store outage")
            }
            _ => shared.log.violation(format!(
                "hook probe {tag}: deny hook {} but the call was {outcome:?}",
                if deny { "loaded" } else { "removed" }
            )),
        }
    }
}

async fn sampler(
    shared: Arc<Shared>,
    pids: Vec<(&'static str, Arc<Mutex<Option<u32>>>)>,
    every: Duration,
    out: Arc<Mutex<Vec<Sample>>>,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    while !shared.stopping() {
        for (i, (name, pid)) in pids.iter().enumerate() {
            let Some(pid) = *pid.lock().unwrap() else {
                continue;
            };
            let Some((rss_kb, fds)) = sample(pid) else {
                continue;
            };
            let secs = shared.t0.elapsed().as_secs_f64();
            let sessions = match http.get(format!("{}/health", shared.bases[i])).send().await {
                Ok(r) => r
                    .json::<Value>()
                    .await
                    .ok()
                    .and_then(|h| h["sessions"].as_i64()),
                Err(_) => None,
            };
            out.lock().unwrap().push(Sample {
                secs,
                gateway: name,
                pid,
                rss_kb,
                fds,
                sessions: sessions.unwrap_or(-1),
            });
        }
        tokio::time::sleep(every).await;
    }
}

/// Children of `parent` whose command line mentions `needle`.
fn children_matching(parent: u32, needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let ppid = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if ppid == Some(parent) && String::from_utf8_lossy(&cmdline).contains(needle) {
            found.push(pid);
        }
    }
    found
}

fn starts(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| *l == "start")
        .count()
}

/// Wait until `check` holds, up to `limit`; how long it took.
async fn wait_for<F, Fut>(limit: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while started.elapsed() < limit {
        if check().await {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// A fresh session on `gateway` answers a plain read.
async fn answers(shared: &Shared, gateway: usize, tool: &str, args: Value) -> bool {
    let Ok(client) = connect(&shared.mcp(gateway), &shared.alice).await else {
        return false;
    };
    let tag = args
        .get("sql")
        .or(args.get("message"))
        .or(args.get("tag"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let (outcome, _) = call(&shared.log, &client, gateway, Kind::Fault, tool, args, &tag).await;
    let _ = client.cancel().await;
    outcome == Outcome::Answered
}

#[allow(clippy::too_many_arguments)]
async fn faults(
    shared: Arc<Shared>,
    gws: Arc<tokio::sync::Mutex<Vec<Gw>>>,
    api: FakeApi,
    pg: Arc<Postgres>,
    bin: PathBuf,
    dir: PathBuf,
    cycle: Duration,
    cycles: usize,
) {
    let log = &shared.log;
    let t0 = shared.t0;
    let probe = AtomicUsize::new(0);
    let next_tag = |what: &str| format!("fault-{what}-{}", probe.fetch_add(1, Ordering::Relaxed));
    for c in 0..cycles {
        let cycle_start = t0 + cycle * c as u32;
        let at = |fraction: f64| async move {
            tokio::time::sleep_until((cycle_start + cycle.mul_f64(fraction)).into()).await;
        };

        // 1. The stdio upstream killed on every replica; the gateway restarts it.
        at(0.08).await;
        for i in 0..3 {
            let (pid, flog) = {
                let g = gws.lock().await;
                (*g[i].pid.lock().unwrap(), g[i].faulty_log.clone())
            };
            let Some(pid) = pid else { continue };
            let before = starts(&flog);
            let victims = children_matching(pid, "faulty_server.py");
            for v in &victims {
                let _ = tokio::process::Command::new("kill")
                    .args(["-KILL", &v.to_string()])
                    .status()
                    .await;
            }
            let took = wait_for(Duration::from_secs(30), || {
                let shared = shared.clone();
                let tag = next_tag("after-kill");
                let flog = flog.clone();
                async move {
                    answers(
                        &shared,
                        i,
                        "faulty_read_actions",
                        json!({"action": "echo", "message": tag}),
                    )
                    .await
                        && starts(&flog) > before
                }
            })
            .await;
            log.count("faults: upstream killed");
            match took {
                Some(d) => log.fault(t0, format!("stdio upstream of {} killed (pids {victims:?}); restarted, answering again after {:.1} s", ["A", "B", "C"][i], d.as_secs_f64())),
                None => log.violation(format!("stdio upstream of replica {i} killed: not answering 30 s later")),
            }
        }

        // 2. A call that hangs (call_timeout 2 s), 3. one answered with garbage.
        for (frac, action) in [(0.18, "hang"), (0.28, "garbage")] {
            at(frac).await;
            let gateway = c % 2;
            if let Ok(client) = connect(&shared.mcp(gateway), &shared.alice).await {
                let tag = next_tag(action);
                let started = Instant::now();
                let (outcome, _) = call(
                    log,
                    &client,
                    gateway,
                    Kind::Fault,
                    "faulty_write_actions",
                    json!({"action": action, "note": tag}),
                    &tag,
                )
                .await;
                let took = started.elapsed();
                let _ = client.cancel().await;
                log.count(&format!("faults: upstream {action}"));
                if !matches!(&outcome, Outcome::Refused(r) if r.starts_with("upstream_"))
                    || took > Duration::from_secs(10)
                {
                    log.violation(format!("{action}: expected an upstream_* refusal within 10 s, got {outcome:?} after {took:?}"));
                }
                let recovered = wait_for(Duration::from_secs(30), || {
                    let shared = shared.clone();
                    let tag = next_tag("after");
                    async move {
                        answers(
                            &shared,
                            gateway,
                            "faulty_read_actions",
                            json!({"action": "echo", "message": tag}),
                        )
                        .await
                    }
                })
                .await;
                match recovered {
                    Some(d) => log.fault(t0, format!("upstream {action} on {}: {outcome:?} after {:.2} s; answering again after {:.1} s", ["A", "B"][gateway], took.as_secs_f64(), d.as_secs_f64())),
                    None => log.violation(format!("after {action}: the stdio upstream did not answer within 30 s")),
                }
            }
        }

        // 4. A 429 storm from the native upstream.
        at(0.38).await;
        api.script(vec![Scripted::rate_limited(1); 60]);
        log.count("faults: 429 storm");
        let recovered = wait_for(Duration::from_secs(60), || {
            let shared = shared.clone();
            let tag = next_tag("after-429");
            let api = api.clone();
            async move {
                api.hits("/v1/flaky") > 0
                    && answers(
                        &shared,
                        0,
                        "acme_read_actions",
                        json!({"action": "flaky", "tag": tag}),
                    )
                    .await
            }
        })
        .await;
        match recovered {
            Some(d) => log.fault(t0, format!("429 storm (60 scripted answers, Retry-After 1 s): native calls answered again after {:.1} s", d.as_secs_f64())),
            None => log.violation("429 storm: native calls not answered 60 s later".into()),
        }

        // 5. The store unavailable: new connections refused, open ones terminated.
        at(0.52).await;
        let outage = Duration::from_secs(3);
        let down = pg
            .sql("ALTER DATABASE soak ALLOW_CONNECTIONS false")
            .await
            .and(
                pg.sql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = 'soak' AND pid <> pg_backend_pid()")
                    .await,
            );
        let began = Instant::now();
        tokio::time::sleep(outage).await;
        let up = pg.sql("ALTER DATABASE soak ALLOW_CONNECTIONS true").await;
        let ended = Instant::now();
        log.count("faults: store outage");
        match (down, up) {
            (Ok(killed), Ok(_)) => {
                let refused: BTreeMap<String, usize> = {
                    let calls = log.calls.lock().unwrap();
                    let mut m = BTreeMap::new();
                    for r in calls
                        .iter()
                        .filter(|r| r.started >= began && r.started < ended)
                    {
                        *m.entry(format!("{:?}", r.outcome)).or_default() += 1;
                    }
                    m
                };
                let recovered = wait_for(Duration::from_secs(60), || {
                    let shared = shared.clone();
                    let tag = next_tag("after-outage");
                    async move {
                        answers(
                            &shared,
                            0,
                            "bq_read_actions",
                            json!({"action": "query", "sql": tag}),
                        )
                        .await
                    }
                })
                .await;
                match recovered {
                    Some(d) => log.fault(t0, format!("store unavailable for {} s ({killed} connections terminated); calls started in the window: {refused:?}; answering again {:.1} s after", outage.as_secs(), d.as_secs_f64())),
                    None => log.violation("store outage: no call answered 60 s after the store came back".into()),
                }
            }
            (d, u) => log.violation(format!("store outage could not be injected: {d:?} {u:?}")),
        }

        // 6. Replica C killed (SIGKILL) and started again 5 s later.
        at(0.72).await;
        {
            let mut g = gws.lock().await;
            let c_gw = &mut g[2];
            shared.c_down.store(true, Ordering::Relaxed);
            if let Some(mut child) = c_gw.child.take() {
                let _ = child.start_kill();
                let _ = child.wait().await;
            }
            *c_gw.pid.lock().unwrap() = None;
        }
        log.count("faults: replica killed");
        tokio::time::sleep(Duration::from_secs(5)).await;
        let restarted = Instant::now();
        let result = {
            let mut g = gws.lock().await;
            start(&bin, &mut g[2], &shared.alice, &dir).await
        };
        shared.c_down.store(false, Ordering::Relaxed);
        match result {
            Ok(()) => log.fault(
                t0,
                format!(
                    "replica C killed (SIGKILL), started again 5 s later, serving after {:.1} s",
                    restarted.elapsed().as_secs_f64()
                ),
            ),
            Err(e) => log.violation(format!("replica C did not come back: {e}")),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.smoke {
        args.minutes = 1.0;
    }
    let duration = Duration::from_secs_f64(args.minutes * 60.0);
    let (cycle, sample_every, hook_every) = if args.smoke {
        (
            Duration::from_secs(55),
            Duration::from_secs(2),
            Duration::from_secs(6),
        )
    } else {
        (
            Duration::from_secs(100),
            Duration::from_secs(5),
            Duration::from_secs(15),
        )
    };
    let cycles = ((duration.as_secs_f64() / cycle.as_secs_f64()).floor() as usize).max(1);
    let bin = std::fs::canonicalize(&args.gateway_bin).with_context(|| {
        format!(
            "{}: build it with cargo build --release -p mcpgate",
            args.gateway_bin.display()
        )
    })?;
    let repo = std::fs::canonicalize(&args.repo)?;
    let faulty_py = repo.join("tests/peers/faulty_server.py");
    anyhow::ensure!(
        faulty_py.exists(),
        "{} not found: run from the repository or pass --repo",
        faulty_py.display()
    );
    std::fs::create_dir_all(&args.out)?;
    let dir = tempfile::tempdir()?;
    let wall_started = Instant::now();

    // The store: a throwaway PostgreSQL with one database for the replicas.
    let pg = Arc::new(Postgres::start(&repo).await?);
    println!(
        "PostgreSQL started in {:.1} s",
        wall_started.elapsed().as_secs_f64()
    );
    let result = run(
        &args,
        &bin,
        &repo,
        &faulty_py,
        dir.path(),
        pg.clone(),
        duration,
        cycle,
        cycles,
        sample_every,
        hook_every,
    )
    .await;
    if matches!(result, Ok(false)) {
        // Keep the store for a look at the audit rows.
        eprintln!(
            "PostgreSQL kept: {} (stop: scripts/postgres.sh stop {})",
            pg.database_url("soak"),
            pg.rundir
        );
    } else {
        pg.stop().await;
    }
    let passed = result?;
    println!("wall time {:.1} s", wall_started.elapsed().as_secs_f64());
    if !passed {
        // Keep the gateways' logs for a look.
        let kept = dir.keep();
        eprintln!("logs kept in {}", kept.display());
        std::process::exit(1);
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn run(
    args: &Args,
    bin: &Path,
    repo: &Path,
    faulty_py: &Path,
    dir: &Path,
    pg: Arc<Postgres>,
    duration: Duration,
    cycle: Duration,
    cycles: usize,
    sample_every: Duration,
    hook_every: Duration,
) -> anyhow::Result<bool> {
    let _ = repo;
    pg.sql("CREATE DATABASE soak").await?;
    let database = pg.database_url("soak");

    // Upstreams and the fake Windmill, in this process.
    let upstream = Upstream::default();
    let bq_url = start_upstream(upstream.clone()).await?;
    let api = FakeApi::start().await;
    let secret = "acme-soak-token";
    api.allow_token(secret);
    let wm = FakeWindmill::start("finance").await;
    for i in 0..4 {
        wm.add_user(&format!("owner{i}"), &format!("owner{i}@example.com"));
    }
    std::fs::create_dir_all(dir.join("catalogs"))?;
    std::fs::write(dir.join("catalogs/acme.yaml"), CATALOG)?;
    std::fs::create_dir_all(dir.join("hooks/company"))?;
    let hooks_file = dir.join("hooks/company/soak.yaml");
    std::fs::write(&hooks_file, HOOKS_ALLOW)?;

    let key_hex = hex::encode(rand::random::<[u8; 32]>());
    let setup = Setup {
        dir,
        database: &database,
        key_hex: &key_hex,
        bq_url: &bq_url,
        api_url: &api.base_url,
        python: &args.python,
        faulty_py,
    };
    let mut gws = [
        write_gateway("A", &setup)?,
        write_gateway("B", &setup)?,
        write_gateway("C", &setup)?,
    ];

    // Operator setup through the CLI, on the shared store (the first command
    // migrates it; the rest at once).
    let setup_started = Instant::now();
    let a_config = gws[0].config.clone();
    cli(bin, &a_config, &["delegation", "enable"], None).await?;
    let windmill = [
        "windmill",
        "add",
        "prod",
        "--url",
        &wm.base_url,
        "--workspace",
        "finance",
    ];
    let credential = [
        "credentials",
        "set",
        "--user",
        "alice@example.com",
        "--service",
        "acme",
    ];
    let token = |user: &'static str| ["token", "create", "--user", user];
    let (for_alice, for_sa, for_root) = (
        token("alice@example.com"),
        token("sa@example.com"),
        token("root@example.com"),
    );
    let (_, _, alice, sa, root) = tokio::try_join!(
        cli(bin, &a_config, &windmill, None),
        cli(bin, &a_config, &credential, Some(secret)),
        cli(bin, &a_config, &for_alice, None),
        cli(bin, &a_config, &for_sa, None),
        cli(bin, &a_config, &for_root, None),
    )?;
    {
        let [a, b, c] = &mut gws;
        tokio::try_join!(
            start(bin, a, &alice, dir),
            start(bin, b, &alice, dir),
            start(bin, c, &alice, dir),
        )?;
    }
    let gws = Vec::from(gws);
    println!(
        "set-up (CLI, three gateways started): {:.1} s",
        setup_started.elapsed().as_secs_f64()
    );
    println!(
        "soak: 3 replicas (A :{}, B :{}, C :{}) on PostgreSQL, {:.1} min, {cycles} fault cycle(s) of {} s",
        gws[0].port,
        gws[1].port,
        gws[2].port,
        duration.as_secs_f64() / 60.0,
        cycle.as_secs()
    );

    let shared = Arc::new(Shared {
        log: Log::default(),
        stop: AtomicBool::new(false),
        t0: Instant::now(),
        bases: gws.iter().map(Gw::base).collect(),
        c_down: AtomicBool::new(false),
        alice,
        sa,
        root,
        jobs_started: AtomicUsize::new(0),
    });
    let samples = Arc::new(Mutex::new(Vec::new()));
    let pids: Vec<_> = gws.iter().map(|g| (g.name, g.pid.clone())).collect();
    let gws = Arc::new(tokio::sync::Mutex::new(gws));

    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(sampler(shared.clone(), pids, sample_every, samples.clone()));
    for w in 0..args.sessions {
        tasks.spawn(interactive(shared.clone(), w));
    }
    tasks.spawn(jobs(shared.clone(), wm.clone()));
    tasks.spawn(confirmations(shared.clone()));
    tasks.spawn(hook_reloads(shared.clone(), hooks_file, hook_every));
    let fault_task = tokio::spawn(faults(
        shared.clone(),
        gws.clone(),
        api.clone(),
        pg.clone(),
        bin.to_owned(),
        dir.to_owned(),
        cycle,
        cycles,
    ));

    // Progress, then the end of traffic.
    let end = shared.t0 + duration;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_secs(30).min(end - Instant::now())).await;
        let n = shared.log.calls.lock().unwrap().len();
        println!(
            "{:>6.0}s  {n} calls so far",
            shared.t0.elapsed().as_secs_f64()
        );
    }
    fault_task.await?;
    shared.stop.store(true, Ordering::Relaxed);
    while tasks.join_next().await.is_some() {}
    let traffic_secs = shared.t0.elapsed().as_secs_f64();
    let log = &shared.log;

    // ---- Checks --------------------------------------------------------
    let checks_started = Instant::now();
    let mut report = String::new();
    macro_rules! say {
        ($($t:tt)*) => {{ let line = format!($($t)*); println!("{line}"); report.push_str(&line); report.push('\n'); }};
    }

    // /health on every replica.
    let http = reqwest::Client::new();
    for (i, base) in shared.bases.iter().enumerate() {
        let health: Value = match http.get(format!("{base}/health")).send().await {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => Value::Null,
        };
        let status = health["status"].as_str().unwrap_or("no answer").to_owned();
        if status != "ok" {
            log.violation(format!(
                "replica {}: /health says {status}: {health}",
                ["A", "B", "C"][i]
            ));
        }
        say!("- /health on {}: {status}", ["A", "B", "C"][i]);
    }

    // The audit log, as the store holds it.
    let a_text = std::fs::read_to_string(&gws.lock().await[0].config)?;
    let config = mcpgate::config::Config::parse(&a_text, "A.yaml")?;
    let pool = mcpgate::storage::connect(&config).await?;
    let rows = mcpgate::audit::query(
        &pool,
        &mcpgate::audit::AuditFilter {
            limit: 100_000_000,
            ..Default::default()
        },
    )
    .await?;
    pool.close().await;
    let mut audited: HashMap<String, Vec<(String, bool)>> = HashMap::new();
    for row in &rows {
        audited
            .entry(row.args_sha256.clone())
            .or_default()
            .push((row.decision.as_str().to_owned(), row.completed_at.is_some()));
    }
    let calls = std::mem::take(&mut *log.calls.lock().unwrap());
    let mut acknowledged = 0;
    let mut store_down = 0;
    let mut missing = 0;
    for r in &calls {
        let rows = audited.get(&r.digest);
        match r.outcome {
            Outcome::Answered => {
                acknowledged += 1;
                if !rows.is_some_and(|rs| rs.iter().any(|(d, done)| d == "allowed" && *done)) {
                    missing += 1;
                    if missing <= 10 {
                        log.violation(format!(
                            "{:?} call {} answered without a complete `allowed` audit row",
                            r.kind, r.tag
                        ));
                    }
                }
            }
            // Refused because the store is down: that refusal cannot be
            // recorded (the call did not run; checked above and below).
            Outcome::Refused(ref reason) if reason == "audit_unavailable" => store_down += 1,
            Outcome::ToolError | Outcome::ConfirmationAsked | Outcome::Refused(_) => {
                acknowledged += 1;
                if rows.is_none() {
                    missing += 1;
                    if missing <= 10 {
                        log.violation(format!(
                            "{:?} call {} ({:?}) has no audit row",
                            r.kind, r.tag, r.outcome
                        ));
                    }
                }
            }
            Outcome::Transport => {}
        }
    }
    if missing > 10 {
        log.violation(format!(
            "… {missing} acknowledged calls without their audit row in all"
        ));
    }
    say!(
        "- audit rows in the store: {}; acknowledged calls (any JSON-RPC answer): {acknowledged}; without their audit row: {missing}; refused `audit_unavailable` (no row possible, never run): {store_down}",
        rows.len()
    );

    // Every call that reached the MCP upstream was audited (allowed) first.
    let by_tag: HashMap<&str, &CallRec> = calls.iter().map(|r| (r.tag.as_str(), r)).collect();
    let reached = upstream.reached.lock().unwrap().clone();
    let mut unaudited = 0;
    // What the client saw and which rows its digest has, for each miss.
    let mut misses: BTreeMap<String, usize> = BTreeMap::new();
    let mut check_reached = |tag: &str, what: &str| {
        let record = by_tag.get(tag);
        let rows = record.and_then(|r| audited.get(&r.digest));
        // The row is written before the call runs (`allowed`); its outcome
        // may turn it into `failed` (the upstream failed, or the outcome could
        // not be recorded and the result was withheld). A `refused` row, or
        // none, means the gateway says it did not run the call.
        if rows.is_some_and(|rs| rs.iter().any(|(d, _)| d == "allowed" || d == "failed")) {
            return;
        }
        unaudited += 1;
        let seen = match record {
            Some(r) => format!(
                "client saw {:?} from {}; rows: {:?}",
                r.outcome,
                ["A", "B", "C"][r.gateway],
                rows.cloned().unwrap_or_default()
            ),
            None => "no client record".to_owned(),
        };
        if unaudited <= 10 {
            log.violation(format!(
                "{what} call {tag} ran without an audit row that let it run ({seen})"
            ));
        }
        let gateway = record.map_or("?", |r| ["A", "B", "C"][r.gateway]);
        let key = format!(
            "{gateway}: client saw {:?}, rows {:?}",
            record.map(|r| &r.outcome),
            rows.cloned().unwrap_or_default()
        );
        *misses.entry(key).or_default() += 1;
    };
    for hit in &reached {
        check_reached(&hit.tag, "upstream");
    }
    // The stdio upstreams' own logs (one per replica incarnation).
    let mut stdio_reached = 0;
    for g in gws.lock().await.iter() {
        for line in std::fs::read_to_string(&g.faulty_log)
            .unwrap_or_default()
            .lines()
        {
            if let Some(tag) = line.strip_prefix("echo ") {
                stdio_reached += 1;
                check_reached(tag, "stdio upstream");
            }
        }
    }
    for (what, n) in &misses {
        say!("  - reached an upstream without an `allowed`/`failed` row: {n} × {what}");
    }
    say!(
        "- calls that reached an upstream: {} (MCP) + {stdio_reached} (stdio) + {} (native, counted by the fake); without an `allowed`/`failed` audit row: {unaudited}",
        reached.len(),
        api.hits("/v1/flaky")
    );

    // No call reached the upstream after its grant's revocation was acknowledged.
    let revokes = std::mem::take(&mut *log.revokes.lock().unwrap());
    let mut late = 0;
    for rv in &revokes {
        let prefix = format!("job-{}-", rv.grant);
        for hit in reached.iter().filter(|h| h.tag.starts_with(&prefix)) {
            if hit.at > rv.acknowledged {
                late += 1;
                log.violation(format!(
                    "{} reached the upstream {:?} after grant {}'s revocation was acknowledged (confirmed: {})",
                    hit.tag,
                    hit.at - rv.acknowledged,
                    rv.grant,
                    rv.confirmed
                ));
            }
        }
    }
    let after: BTreeMap<String, usize> =
        calls
            .iter()
            .filter(|r| r.kind == Kind::AfterRevoke)
            .fold(BTreeMap::new(), |mut m, r| {
                *m.entry(format!("{:?}", r.outcome)).or_default() += 1;
                m
            });
    say!(
        "- revocations acknowledged: {}; upstream calls after an acknowledged revocation: {late}; calls made after it: {after:?}",
        revokes.len()
    );

    // Resources: flat after warm-up (A and B; C is killed every cycle).
    let samples = samples.lock().unwrap().clone();
    let mut csv = String::from("secs,gateway,pid,rss_kb,fds,sessions\n");
    for s in &samples {
        csv.push_str(&format!(
            "{:.1},{},{},{},{},{}\n",
            s.secs, s.gateway, s.pid, s.rss_kb, s.fds, s.sessions
        ));
    }
    std::fs::write(args.out.join("soak-resources.csv"), &csv)?;
    let long_enough = traffic_secs >= 300.0;
    let mut charts = String::new();
    for name in ["A", "B", "C"] {
        let series: Vec<&Sample> = samples.iter().filter(|s| s.gateway == name).collect();
        let rss: Vec<(f64, f64)> = series
            .iter()
            .map(|s| (s.secs, s.rss_kb as f64 / 1024.0))
            .collect();
        let fds: Vec<(f64, f64)> = series.iter().map(|s| (s.secs, s.fds as f64)).collect();
        charts.push_str(&chart(
            &format!("replica {name}: RSS (MiB) over time"),
            &rss,
            72,
            10,
        ));
        charts.push('\n');
        charts.push_str(&chart(
            &format!("replica {name}: open fds over time"),
            &fds,
            72,
            8,
        ));
        charts.push('\n');
        let sessions: Vec<(f64, f64)> = series
            .iter()
            .filter(|s| s.sessions >= 0)
            .map(|s| (s.secs, s.sessions as f64))
            .collect();
        charts.push_str(&chart(
            &format!("replica {name}: live MCP sessions (/health) over time"),
            &sessions,
            72,
            6,
        ));
        charts.push('\n');
        say!(
            "- replica {name}: live MCP sessions at the end: {}",
            sessions.last().map_or(-1.0, |p| p.1)
        );
        if name == "C" {
            say!(
                "- replica C (killed each cycle; not checked): RSS {:.1}–{:.1} MiB, fds {}–{}",
                rss.iter().map(|p| p.1).fold(f64::INFINITY, f64::min),
                rss.iter().map(|p| p.1).fold(0.0, f64::max),
                fds.iter().map(|p| p.1).fold(f64::INFINITY, f64::min),
                fds.iter().map(|p| p.1).fold(0.0, f64::max)
            );
            continue;
        }
        // Warm-up: from 10 % to 33 % of the run; final: the last third.
        let in_range = |lo: f64, hi: f64| {
            series
                .iter()
                .filter(move |s| s.secs >= lo * traffic_secs && s.secs < hi * traffic_secs)
        };
        let warm_rss = median(
            in_range(0.10, 0.34)
                .map(|s| s.rss_kb as f64 / 1024.0)
                .collect(),
        );
        let last_rss = median(
            in_range(0.67, 1.01)
                .map(|s| s.rss_kb as f64 / 1024.0)
                .collect(),
        );
        let warm_fds = median(in_range(0.10, 0.34).map(|s| s.fds as f64).collect());
        let last_fds = median(in_range(0.67, 1.01).map(|s| s.fds as f64).collect());
        let max_rss = rss.iter().map(|p| p.1).fold(0.0, f64::max);
        let max_fds = fds.iter().map(|p| p.1).fold(0.0, f64::max);
        let rss_ok = last_rss <= warm_rss * 1.2;
        let fds_ok = last_fds <= warm_fds + 10.0;
        say!(
            "- replica {name}: RSS median {warm_rss:.1} MiB (warm-up, 10–33 %) → {last_rss:.1} MiB (last third), max {max_rss:.1}; fds {warm_fds:.0} → {last_fds:.0}, max {max_fds:.0}; bound: RSS ≤ +20 %, fds ≤ +10: {}",
            if !long_enough {
                "not checked (run under 5 min)"
            } else if rss_ok && fds_ok {
                "flat"
            } else {
                "NOT FLAT"
            }
        );
        if long_enough && !(rss_ok && fds_ok) {
            log.violation(format!("replica {name}: resources grew: RSS {warm_rss:.1} → {last_rss:.1} MiB, fds {warm_fds:.0} → {last_fds:.0}"));
        }
    }
    std::fs::write(args.out.join("soak-chart.txt"), &charts)?;
    println!("{charts}");

    // The audit chain verifies.
    let verify = tokio::process::Command::new(bin)
        .arg("--config")
        .arg(&a_config)
        .args(["audit", "verify"])
        .env("RUST_LOG", "warn")
        .output()
        .await?;
    let verify_text = format!(
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    say!(
        "- mcpgate audit verify: {} — {}",
        if verify.status.success() {
            "passed"
        } else {
            "FAILED"
        },
        verify_text.trim().lines().last().unwrap_or("")
    );
    if !verify.status.success() {
        log.violation(format!("audit verify failed: {verify_text}"));
    }

    // Counts.
    say!("\ntraffic ({traffic_secs:.0} s):");
    let mut per: BTreeMap<(Kind, String), usize> = BTreeMap::new();
    for r in &calls {
        let outcome = match &r.outcome {
            Outcome::Refused(reason) => format!("refused:{reason}"),
            o => format!("{o:?}"),
        };
        *per.entry((r.kind, outcome)).or_default() += 1;
    }
    let mut by_gateway = [0usize; 3];
    for r in &calls {
        by_gateway[r.gateway] += 1;
    }
    say!("| kind | outcome | calls |\n|---|---|---:|");
    for ((kind, outcome), n) in &per {
        say!("| {kind:?} | {outcome} | {n} |");
    }
    say!(
        "calls per replica: A {}, B {}, C {}; jobs started: {}",
        by_gateway[0],
        by_gateway[1],
        by_gateway[2],
        shared.jobs_started.load(Ordering::Relaxed)
    );
    say!("\ncounters:");
    for (what, n) in log.counters.lock().unwrap().iter() {
        say!("- {what}: {n}");
    }
    say!("\nfaults:");
    for line in log.faults.lock().unwrap().iter() {
        say!("- {line}");
    }
    let violations = log.violations.lock().unwrap().clone();
    say!("\nviolations: {}", violations.len());
    for v in &violations {
        say!("- {v}");
    }
    println!(
        "checks took {:.1} s",
        checks_started.elapsed().as_secs_f64()
    );
    std::fs::write(args.out.join("soak-summary.md"), &report)?;
    // Stop the gateways.
    for g in gws.lock().await.iter_mut() {
        if let Some(mut child) = g.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }
    Ok(violations.is_empty())
}
