//! Idle MCP sessions: how much memory the gateway holds per session that a
//! client opened, used once and left open (an AI client left running, a
//! Windmill worker between jobs).
//!
//! In process: the gateway (SQLite store, one upstream MCP service) and a
//! plain HTTP client. Each session is an initialize-era session —
//! `initialize`, `notifications/initialized`, one `tools/call` (which starts
//! its `SessionActor`) — and is then held, idle. The process's RSS is read
//! before and after; the difference, per session, is what an idle session
//! costs: rmcp's session state, the session actor, the credential binding,
//! plus the client's few bytes of session id (reported separately: the
//! client holds nothing else).
//!
//! cargo run --release -p loadtests --bin sessions -- [--sessions 10000]

#[path = "../../../tests/support/recorder.rs"]
mod recorder;

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use futures::StreamExt;
use loadtests::InProcessGateway;
use recorder::Recorder;
use serde_json::{Value, json};

#[derive(Parser, Debug)]
struct Args {
    /// Sessions opened and held.
    #[arg(long, default_value_t = 10_000)]
    sessions: usize,
    /// Sessions being opened at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Only `initialize` each session, no call: no session actor starts, so
    /// the difference to a full run is the actor's share.
    #[arg(long)]
    no_call: bool,
    /// Seconds the sessions are left idle before the second reading (rmcp
    /// keeps each finished request's stream for 60 s, for resumption).
    #[arg(long, default_value_t = 0)]
    idle_secs: u64,
    /// Fail (exit 1) if an idle session costs more than this many KiB.
    #[arg(long)]
    max_kib_per_session: Option<f64>,
}

/// This process's resident set, in KiB.
fn rss_kib() -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/self/status")
}

/// The JSON-RPC message of an answer that came as JSON or as an SSE stream.
fn message_of(body: &str) -> anyhow::Result<Value> {
    if let Ok(value) = serde_json::from_str(body) {
        return Ok(value);
    }
    body.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .find(|v| v.get("id").is_some())
        .with_context(|| format!("no JSON-RPC answer in {body:.200}"))
}

/// Open one session and make one call in it; returns its `Mcp-Session-Id`.
async fn open_session(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    call: bool,
) -> anyhow::Result<String> {
    let post = |session: Option<&str>, body: Value| {
        let mut request = http
            .post(url)
            .bearer_auth(token)
            .header("accept", "application/json, text/event-stream")
            .json(&body);
        if let Some(session) = session {
            request = request
                .header("mcp-session-id", session)
                .header("mcp-protocol-version", "2025-11-25");
        }
        request.send()
    };
    let answer = post(
        None,
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "idle-sessions", "version": "1"}}}),
    )
    .await?;
    let session = answer
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .context("no Mcp-Session-Id")?
        .to_owned();
    answer.text().await?;
    let initialized = post(
        Some(&session),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
    )
    .await?;
    if !initialized.status().is_success() {
        bail!("notifications/initialized: {}", initialized.status());
    }
    if !call {
        return Ok(session);
    }
    let called = post(
        Some(&session),
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
            "name": "bench_read_actions", "arguments": {"action": "query", "sql": "select 1"}}}),
    )
    .await?;
    let message = message_of(&called.text().await?)?;
    if message["result"]["isError"] != json!(false) {
        bail!("tools/call failed: {message}");
    }
    Ok(session)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let upstream = Recorder::start().await;
    let dir = tempfile::tempdir()?;
    let text = format!(
        "data_dir: {}\nlimits: {{ session_idle_timeout: 1h }}\nservices:\n  bench: {{ kind: mcp, url: \"{}\" }}\nusers:\n  - email: bench@example.com\n    access: {{ bench: read }}\n",
        dir.path().join("data").display(),
        upstream.url
    );
    let gateway = InProcessGateway::start(&text, "sessions-load.yaml", &["bench"]).await?;
    let url = format!("{}/mcp", gateway.base);
    let token = gateway.token("bench@example.com").await?;
    let gw = gateway.gw.clone();
    let http = reqwest::Client::new();
    // Warm up every path (allocator arenas, catalogs, pools) before the baseline.
    let mut held = Vec::with_capacity(args.sessions);
    for _ in 0..args.concurrency {
        held.push(open_session(&http, &url, &token, true).await?);
    }
    let baseline_sessions = gw.sessions().count();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib()?;

    let started = Instant::now();
    let opened: Vec<anyhow::Result<String>> = futures::stream::iter(0..args.sessions)
        .map(|_| open_session(&http, &url, &token, !args.no_call))
        .buffer_unordered(args.concurrency)
        .collect()
        .await;
    let elapsed = started.elapsed();
    let mut errors = 0;
    for session in opened {
        match session {
            Ok(id) => held.push(id),
            Err(e) => {
                errors += 1;
                if errors <= 3 {
                    eprintln!("session failed: {e:#}");
                }
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(500) + Duration::from_secs(args.idle_secs)).await;
    let after = rss_kib()?;
    let actors = gw.sessions().count() - baseline_sessions;
    let client_bytes: usize = held.iter().map(|id| id.capacity() + 24).sum();
    let per_session = (after.saturating_sub(before)) as f64 / args.sessions as f64;
    println!(
        "| sessions | session actors | errors | opened in | RSS before | RSS after | per idle session |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {} | {actors} | {errors} | {:.1} s ({:.0}/s) | {:.1} MiB | {:.1} MiB | {per_session:.1} KiB |",
        args.sessions,
        elapsed.as_secs_f64(),
        args.sessions as f64 / elapsed.as_secs_f64(),
        before as f64 / 1024.0,
        after as f64 / 1024.0,
    );
    println!(
        "(the client's share: {:.2} KiB per session of session ids; upstream calls recorded: {})",
        client_bytes as f64 / 1024.0 / held.len().max(1) as f64,
        upstream.count()
    );
    if errors > 0 {
        bail!("{errors} sessions failed");
    }
    if actors < args.sessions && !args.no_call {
        bail!(
            "only {actors} of {} session actors are alive",
            args.sessions
        );
    }
    if let Some(limit) = args.max_kib_per_session
        && per_session > limit
    {
        bail!("an idle session costs {per_session:.1} KiB, over {limit} KiB");
    }
    Ok(())
}
