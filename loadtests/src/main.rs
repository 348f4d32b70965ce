//! Measures `tools/call` latency and throughput through mcpgate against the
//! same upstream called directly, at several concurrencies.
//!
//! The upstream is a minimal rmcp echo server over Streamable HTTP, in this
//! process, so the difference between the two paths is the gateway: HTTP,
//! auth, session actor, pipeline, write-ahead audit (SQLite, synchronous=FULL,
//! group commit), connector actor, upstream client. The gateway runs as its
//! own process (the release binary), as in production.
//!
//! cargo build --release && cargo run --release -p loadtests -- [--concurrency 1,16,256] [--seconds 10]
//!
//! With `--contextforge <venv>` IBM ContextForge (PyPI `mcp-contextforge-gateway`,
//! installed in that virtualenv) is measured as a third target on the same
//! upstream with the same client, after mcpgate has been stopped: see
//! `loadtests/contextforge.sh` and docs/benchmarks.md.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use rmcp::model::ProtocolVersion;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, JsonObject,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
    ToolAnnotations,
};
use rmcp::service::{
    ClientLifecycleMode, ClientServiceExt, RequestContext, RoleClient, RunningService,
};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt};

#[derive(Parser, Debug)]
struct Args {
    /// Comma-separated concurrency levels (concurrent MCP sessions).
    #[arg(long, default_value = "1,16,256", value_delimiter = ',')]
    concurrency: Vec<usize>,
    /// Measured seconds per run (after a one-second warm-up).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// The gateway binary.
    #[arg(long, default_value = "target/release/mcpgate")]
    gateway_bin: PathBuf,
    /// The gateway's `limits.audit_sync`: full (fsync per group commit) or normal.
    #[arg(long, default_value = "full")]
    audit_sync: String,
    /// Client protocol era: `modern` (2026-07-28, stateless) or `legacy`
    /// (initialize handshake and an Mcp-Session-Id session).
    #[arg(long, default_value = "modern")]
    protocol: String,
    /// A quick pass (c=1,16 for 2 s each) that checks the harness works.
    #[arg(long)]
    smoke: bool,
    /// Run the gateway on this PostgreSQL database instead of the embedded
    /// SQLite file (e.g. the one `scripts/postgres.sh` starts).
    #[arg(long)]
    database: Option<String>,
    /// Clients keep their HTTP connections alive between calls, as aiohttp and
    /// Node's fetch (the TypeScript SDK) do; rmcp's default client opens one
    /// per request, which hides Nagle/delayed-ACK stalls.
    #[arg(long)]
    keep_alive: bool,
    /// Fail (exit 1) if the gateway's p50 overhead exceeds this at any
    /// concurrency: a regression guard for stalls (a 40 ms delayed-ACK wait
    /// dwarfs any real overhead), not a speed target.
    #[arg(long)]
    max_p50_overhead_ms: Option<f64>,
    /// The gateway credential the clients present: `gateway` (an API token)
    /// or `oauth` (an access token of the gateway's own authorization
    /// server, obtained through the whole sign-in flow first).
    #[arg(long, default_value = "gateway")]
    credential: String,
    /// Also measure IBM ContextForge, installed in this virtualenv (PyPI
    /// `mcp-contextforge-gateway`): gunicorn with uvicorn workers, SQLite,
    /// auth on, plugins and its rate limiter off, the upstream registered as
    /// a gateway and called through a virtual server's `/servers/<id>/mcp`.
    /// It speaks 2025-era MCP only: needs `--protocol legacy`.
    #[arg(long)]
    contextforge: Option<PathBuf>,
    /// ContextForge's gunicorn workers.
    #[arg(long, default_value_t = 5)]
    contextforge_workers: usize,
    /// Write the results as JSON here (what `chart` renders).
    #[arg(long)]
    json: Option<PathBuf>,
    /// The governance the gateway applies: `full` (every feature on: the
    /// 50-hook policy set of the `hooks` bench, and PII in every answer,
    /// which the gateway pseudonymizes) or `lean` (no hooks, PII off). The
    /// write-ahead audit and authentication are always on.
    #[arg(long, default_value = "full")]
    governance: String,
    /// A call that takes longer than this many seconds counts as an error.
    #[arg(long, default_value_t = 30)]
    call_timeout: u64,
}

#[derive(Clone)]
struct Echo;

impl ServerHandler for Echo {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let schema = serde_json::json!({
            "type": "object",
            "properties": { "message": { "type": "string" } },
            "required": ["message"]
        });
        let serde_json::Value::Object(schema) = schema else {
            unreachable!()
        };
        Ok(ListToolsResult::with_all_items(vec![
            Tool::new("echo", "Echo the message", Arc::new(schema))
                .with_annotations(ToolAnnotations::new().read_only(true)),
        ]))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let message = request
            .arguments
            .as_ref()
            .and_then(|a| a.get("message"))
            .and_then(|m| m.as_str())
            .unwrap_or("")
            .to_owned();
        Ok(CallToolResult::success(vec![ContentBlock::text(message)]).into())
    }
}

async fn start_upstream() -> anyhow::Result<String> {
    let service = StreamableHttpService::new(
        || Ok(Echo),
        Arc::new(LocalSessionManager::default()),
        // Stateless with plain JSON answers.
        StreamableHttpServerConfig::default()
            .with_sse_keep_alive(None)
            .with_legacy_session_mode(false)
            .with_json_response(true),
    );
    let router = axum::Router::new().route_service("/mcp", service);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    // As a well-configured server does (and mcpgate does): no Nagle delay on
    // answers, or a pooled client waits out the peer's delayed ACK.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok(format!("http://{addr}/mcp"))
}

struct Gateway {
    child: tokio::process::Child,
    url: String,
    token: String,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

async fn start_gateway(
    bin: &PathBuf,
    upstream: &str,
    audit_sync: &str,
    database: Option<&str>,
    governance: &str,
) -> anyhow::Result<Gateway> {
    if !bin.exists() {
        bail!(
            "{} not found: run `cargo build --release` first",
            bin.display()
        );
    }
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("config.yaml");
    let data = dir.path().join("data");
    let store = match database {
        Some(url) => {
            // A shared store never gets a generated key: give it one.
            std::fs::create_dir_all(&data)?;
            std::fs::write(
                data.join("gateway.key"),
                hex::encode(rand::random::<[u8; 32]>()),
            )?;
            format!("database: {url}\n")
        }
        None => String::new(),
    };
    // Hooks live in files under `hooks/company/` beside the config.
    let governance = match governance {
        "full" => {
            let company = dir.path().join("hooks").join("company");
            std::fs::create_dir_all(&company)?;
            std::fs::write(company.join("bench.yaml"), loadtests::policy_hooks_yaml())?;
            format!("hooks: {{ dir: {} }}\n", dir.path().join("hooks").display())
        }
        "lean" => "pii: { enabled: false }\n".to_owned(),
        other => bail!("--governance must be full or lean, not {other}"),
    };
    // A fixed port, not `:0`: the gateway's public URL (the OAuth issuer and
    // resource of `--credential oauth`) defaults to its `listen` address.
    let write_config = |port: u16| {
        std::fs::write(
            &config,
            format!(
                "listen: 127.0.0.1:{port}\n{store}data_dir: {}\nlimits: {{ audit_sync: {audit_sync} }}\nservices:\n  bench:\n    kind: mcp\n    url: {upstream}\nusers:\n  - email: bench@example.com\n    access: {{ bench: read }}\n{governance}",
                data.display()
            ),
        )
    };
    write_config(0)?;
    let out = tokio::process::Command::new(bin)
        .args([
            "--config",
            config.to_str().unwrap(),
            "token",
            "create",
            "--user",
            "bench@example.com",
        ])
        .output()
        .await?;
    if !out.status.success() {
        bail!(
            "token create failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let token = String::from_utf8(out.stdout)?.trim().to_owned();
    // A port below the kernel's ephemeral range (where no outgoing connection
    // takes one), drawn again if the gateway finds it taken; the gateway's
    // "mcpgate listening" line confirms it. Its other lines pass through.
    let mut started = None;
    for _ in 0..5 {
        let port = port_below_ephemeral();
        write_config(port)?;
        let mut child = tokio::process::Command::new(bin)
            .args(["--config", config.to_str().unwrap(), "serve"])
            .env("RUST_LOG", "warn,mcpgate::cli=info")
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(
            child.stderr.take().unwrap(),
        ));
        let listening = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(json) = serde_json::from_str::<serde_json::Value>(&line)
                    && json["fields"]["message"] == "mcpgate listening"
                {
                    return true;
                }
                eprintln!("{line}");
            }
            false
        })
        .await
        .unwrap_or(false);
        if listening {
            tokio::spawn(async move {
                while let Ok(Some(line)) = lines.next_line().await {
                    eprintln!("{line}");
                }
            });
            started = Some((child, port));
            break;
        }
    }
    let (child, port) = started.context("the gateway could not listen on any of 5 ports")?;
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            drop(stream);
            // Wait for the connector to be up as well.
            let client = connect(&format!("{base}/mcp"), Some(&token)).await?;
            let tools = client.peer().list_all_tools().await?;
            let _ = client.cancel().await;
            if !tools.is_empty() {
                break;
            }
        }
        if Instant::now() > deadline {
            bail!("gateway did not start");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(Gateway {
        child,
        url: format!("{base}/mcp"),
        token,
        config,
        _dir: dir,
    })
}

/// An OAuth access token for bench@example.com, the way an AI client gets
/// one: registration, PKCE, a one-time sign-in link, consent, the code
/// exchanged at the token endpoint.
async fn oauth_token(bin: &PathBuf, gateway: &Gateway) -> anyhow::Result<String> {
    use base64::Engine;
    use sha2::Digest;
    let base = gateway.url.trim_end_matches("/mcp").to_owned();
    let encode = |pairs: &[(&str, &str)]| {
        reqwest::Url::parse_with_params("http://x/", pairs)
            .map(|u| u.query().unwrap_or_default().to_owned())
    };
    let out = tokio::process::Command::new(bin)
        .arg("--config")
        .arg(&gateway.config)
        .args(["oauth", "signin-link", "bench@example.com"])
        .output()
        .await?;
    let link_url = String::from_utf8(out.stdout)?.trim().to_owned();
    let link = link_url
        .split_once("link=")
        .map(|(_, l)| l.to_owned())
        .context("no sign-in link printed")?;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let redirect = "http://127.0.0.1:53682/callback";
    let registered: serde_json::Value = http
        .post(format!("{base}/oauth/register"))
        .json(&serde_json::json!({"client_name": "loadtests", "redirect_uris": [redirect]}))
        .send()
        .await?
        .json()
        .await?;
    let client_id = registered["client_id"].as_str().context("no client_id")?;
    let verifier =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(sha2::Sha256::digest(verifier.as_bytes()));
    let resource = gateway.url.as_str();
    let query = encode(&[
        ("client_id", client_id),
        ("response_type", "code"),
        ("redirect_uri", redirect),
        ("code_challenge", &challenge),
        ("code_challenge_method", "S256"),
        ("resource", resource),
    ])?;
    let cookies = |r: &reqwest::Response| -> Vec<String> {
        r.headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok()?.split(';').next().map(str::to_owned))
            .collect()
    };
    let pending = http
        .get(format!("{base}/oauth/authorize?{query}"))
        .send()
        .await?;
    let mut jar = cookies(&pending);
    let signed_in = http
        .post(format!("{base}/oauth/signin"))
        .header("cookie", jar.join("; "))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(encode(&[("link", &link)])?)
        .send()
        .await?;
    jar.extend(cookies(&signed_in));
    let page = signed_in.text().await?;
    let ticket = page
        .split("name=ticket value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .context("no consent page")?
        .to_owned();
    let consented = http
        .post(format!("{base}/oauth/consent"))
        .header("cookie", jar.join("; "))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(encode(&[("ticket", &ticket), ("decision", "approve")])?)
        .send()
        .await?;
    let location = consented
        .headers()
        .get("location")
        .context("consent did not redirect")?
        .to_str()?
        .to_owned();
    let code = reqwest::Url::parse(&location)?
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .context("no code")?;
    let tokens: serde_json::Value = http
        .post(format!("{base}/oauth/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(encode(&[
            ("grant_type", "authorization_code"),
            ("client_id", client_id),
            ("code", &code),
            ("code_verifier", &verifier),
            ("redirect_uri", redirect),
            ("resource", resource),
        ])?)
        .send()
        .await?
        .json()
        .await?;
    Ok(tokens["access_token"]
        .as_str()
        .with_context(|| format!("no access token: {tokens}"))?
        .to_owned())
}

static MODERN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
static KEEP_ALIVE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
/// `--governance full`: calls carry what the hooks read and an email in
/// the message, so every answer holds PII.
static FULL_GOVERNANCE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();

async fn connect(url: &str, token: Option<&str>) -> anyhow::Result<RunningService<RoleClient, ()>> {
    let mut config = StreamableHttpClientTransportConfig::with_uri(url);
    if let Some(token) = token {
        config = config.auth_header(token);
    }
    let transport = if *KEEP_ALIVE.get().unwrap_or(&false) {
        StreamableHttpClientTransport::with_client(reqwest::Client::new(), config)
    } else {
        StreamableHttpClientTransport::from_config(config)
    };
    if *MODERN.get().unwrap_or(&true) {
        let lifecycle = ClientLifecycleMode::Discover {
            preferred_versions: vec![ProtocolVersion::V_2026_07_28],
        };
        Ok(().serve_with_lifecycle(transport, lifecycle).await?)
    } else {
        Ok(().serve(transport).await?)
    }
}

struct Run {
    calls: usize,
    errors: usize,
    seconds: f64,
    latencies_us: Vec<u64>,
    /// Peak resident set of the watched gateway (all its processes) while
    /// measuring, KiB.
    peak_rss_kib: Option<u64>,
    peak_pss_kib: Option<u64>,
    /// CPU the watched gateway spent over the measured window, ms per call.
    cpu_ms_per_call: Option<f64>,
}

impl Run {
    fn percentile(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        let idx = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        self.latencies_us[idx] as f64 / 1000.0
    }
    fn throughput(&self) -> f64 {
        self.calls as f64 / self.seconds
    }
    fn json(&self, target: &str, concurrency: usize) -> serde_json::Value {
        serde_json::json!({
            "target": target,
            "concurrency": concurrency,
            "calls": self.calls,
            "errors": self.errors,
            "seconds": self.seconds,
            "calls_per_s": self.throughput(),
            "p50_ms": self.percentile(0.50),
            "p99_ms": self.percentile(0.99),
            "peak_rss_kib": self.peak_rss_kib,
            "peak_pss_kib": self.peak_pss_kib,
            "gateway_cpu_ms_per_call": self.cpu_ms_per_call,
        })
    }
}

/// What one target is measured with.
struct Target<'a> {
    url: &'a str,
    token: Option<&'a str>,
    tool: &'a str,
    action: Option<&'static str>,
    /// The gateway's (root) process, for its memory and CPU.
    watch: Option<u32>,
    /// The target pseudonymizes PII in answers (mcpgate with `--governance full`).
    pseudonymizes: bool,
}

/// `concurrency` sessions, each calling in a loop, measured for `seconds`.
/// A failed, wrong or timed-out call counts as an error and the session
/// carries on.
async fn measure(
    target: &Target<'_>,
    concurrency: usize,
    seconds: u64,
    call_timeout: Duration,
) -> anyhow::Result<Run> {
    let mut clients = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        clients.push(
            connect(target.url, target.token)
                .await
                .context("connecting a session")?,
        );
    }
    let warmup = Duration::from_secs(1);
    let start = Instant::now() + warmup;
    let end = start + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for (i, client) in clients.into_iter().enumerate() {
        let tool = target.tool.to_owned();
        let action = target.action;
        let pseudonymizes = target.pseudonymizes;
        let governed = FULL_GOVERNANCE.get().copied().unwrap_or(false);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0usize;
            let mut n = 0u64;
            loop {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                let mut arguments = JsonObject::new();
                if let Some(action) = action {
                    arguments.insert("action".into(), action.into());
                }
                let call = n;
                n += 1;
                let message = if governed {
                    arguments.insert("text".into(), format!("Hello from session {i}").into());
                    arguments.insert("channel".into(), "#eng-bench".into());
                    format!("s{i}-{call} reach person{i}@example.com")
                } else {
                    format!("s{i}-{call}")
                };
                arguments.insert("message".into(), message.clone().into());
                let t0 = Instant::now();
                let result = tokio::time::timeout(
                    call_timeout,
                    client.peer().call_tool(
                        CallToolRequestParams::new(tool.clone()).with_arguments(arguments),
                    ),
                )
                .await;
                let took = t0.elapsed();
                let ok = match &result {
                    Ok(Ok(r)) => {
                        let text = r
                            .content
                            .first()
                            .and_then(|c| c.as_text())
                            .map(|t| t.text.as_str());
                        match text {
                            // The email is replaced by a pseudonym; the rest stays.
                            Some(text) if pseudonymizes => text
                                .strip_prefix(&format!("s{i}-{call} reach "))
                                .is_some_and(|pseudonym| {
                                    !pseudonym.is_empty() && !pseudonym.contains("@example.com")
                                }),
                            text => text == Some(message.as_str()),
                        }
                    }
                    _ => false,
                };
                if t0 < start {
                    continue;
                }
                if ok {
                    latencies.push(took.as_micros() as u64);
                } else {
                    if errors == 0 {
                        match result {
                            Ok(Ok(r)) => eprintln!("session {i}: wrong answer: {r:?}"),
                            Ok(Err(e)) => eprintln!("session {i}: call failed: {e}"),
                            Err(_) => eprintln!("session {i}: call timed out"),
                        }
                    }
                    errors += 1;
                }
            }
            let _ = client.cancel().await;
            (latencies, errors)
        }));
    }
    let sampler = target.watch.map(|pid| {
        tokio::spawn(async move {
            tokio::time::sleep_until(tokio::time::Instant::from_std(start)).await;
            let cpu0 = tree_cpu_ticks(pid);
            let (mut rss, mut pss) = (0u64, 0u64);
            while Instant::now() < end {
                let (r, p) = tree_mem_kib(pid);
                rss = rss.max(r);
                pss = pss.max(p);
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            (rss, pss, tree_cpu_ticks(pid).saturating_sub(cpu0))
        })
    });
    let mut latencies_us = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (latencies, e) = task.await?;
        latencies_us.extend(latencies);
        errors += e;
    }
    latencies_us.sort_unstable();
    let (peak_rss_kib, peak_pss_kib, cpu_ticks) = match sampler {
        Some(s) => {
            let (rss, pss, ticks) = s.await?;
            (Some(rss), Some(pss), Some(ticks))
        }
        None => (None, None, None),
    };
    let calls = latencies_us.len();
    Ok(Run {
        calls,
        errors,
        seconds: seconds as f64,
        latencies_us,
        peak_rss_kib,
        peak_pss_kib,
        cpu_ms_per_call: cpu_ticks
            .map(|t| t as f64 * 1000.0 / clock_ticks_per_second() / calls.max(1) as f64),
    })
}

/// The process and all its descendants (Linux `/proc`).
fn process_tree(root: u32) -> Vec<u32> {
    let mut children: std::collections::HashMap<u32, Vec<u32>> = Default::default();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // pid (comm) state ppid …; comm may contain spaces and parentheses.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse().ok());
            if let Some(ppid) = ppid {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        if let Some(c) = children.get(&tree[i]) {
            tree.extend(c);
        }
        i += 1;
    }
    tree
}

/// Resident set of a process and its descendants, KiB: (RSS summed, PSS
/// summed). The plain sum counts pages shared between a forking server's
/// master and workers once per process; PSS splits them.
fn tree_mem_kib(root: u32) -> (u64, u64) {
    let field = |text: &str, key: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    process_tree(root)
        .into_iter()
        .map(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let smaps =
                std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
            (field(&status, "VmRSS:"), field(&smaps, "Pss:"))
        })
        .fold((0, 0), |(r, p), (r2, p2)| (r + r2, p + p2))
}

/// User + system CPU of a process and its live descendants, clock ticks.
fn tree_cpu_ticks(root: u32) -> u64 {
    process_tree(root)
        .into_iter()
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (_, rest) = stat.rsplit_once(')')?;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            // After the comm: state(0) ppid(1) … utime(11) stime(12).
            Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
        })
        .sum()
}

fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// IBM ContextForge run as its docs recommend for one host: gunicorn with
/// uvicorn workers (`--preload`, access log off, as its `run-gunicorn.sh`),
/// SQLite, JWT auth on; plugins, its per-user rate limiter and the admin UI
/// off; loopback upstreams allowed (its SSRF guard refuses them by default).
struct ContextForge {
    child: tokio::process::Child,
    url: String,
    token: String,
    tool: String,
    dir: tempfile::TempDir,
}

async fn start_contextforge(
    venv: &std::path::Path,
    workers: usize,
    upstream: &str,
) -> anyhow::Result<ContextForge> {
    let gunicorn = venv.join("bin/gunicorn");
    if !gunicorn.exists() {
        bail!(
            "{} not found: python3 -m venv {0} && {0}/bin/pip install mcp-contextforge-gateway==1.0.7",
            gunicorn.display(),
        );
    }
    let dir = tempfile::tempdir()?;
    let secret = hex::encode(rand::random::<[u8; 32]>());
    let port = port_below_ephemeral();
    let log = std::fs::File::create(dir.path().join("contextforge.log"))?;
    let env = [
        ("JWT_SECRET_KEY", secret.clone()),
        (
            "AUTH_ENCRYPTION_SECRET",
            hex::encode(rand::random::<[u8; 32]>()),
        ),
        (
            "DATABASE_URL",
            format!("sqlite:///{}", dir.path().join("mcp.db").display()),
        ),
        ("AUTH_REQUIRED", "true".into()),
        ("MCP_CLIENT_AUTH_ENABLED", "true".into()),
        ("PLATFORM_ADMIN_EMAIL", "admin@example.com".into()),
        (
            "PLATFORM_ADMIN_PASSWORD",
            hex::encode(rand::random::<[u8; 16]>()),
        ),
        ("PLUGINS_ENABLED", "false".into()),
        ("RATE_LIMITING_ENABLED", "false".into()),
        ("SSRF_ALLOW_LOCALHOST", "true".into()),
        ("SSRF_ALLOW_PRIVATE_NETWORKS", "true".into()),
        ("MCPGATEWAY_UI_ENABLED", "false".into()),
        ("MCPGATEWAY_ADMIN_API_ENABLED", "true".into()),
        ("LOG_LEVEL", "ERROR".into()),
    ];
    let child = tokio::process::Command::new(&gunicorn)
        .args(["-k", "uvicorn.workers.UvicornWorker", "--workers"])
        .arg(workers.to_string())
        .args([
            "--timeout",
            "600",
            "--preload",
            "--access-logfile",
            "/dev/null",
        ])
        .args(["--error-logfile", "-", "--bind"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("mcpgateway.main:app")
        .current_dir(dir.path())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("starting gunicorn")?;
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if let Ok(r) = http.get(format!("{base}/health")).send().await
            && r.status().is_success()
        {
            break;
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.path().join("contextforge.log"))?;
            bail!("ContextForge did not start:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let out = tokio::process::Command::new(venv.join("bin/python"))
        .args(["-m", "mcpgateway.utils.create_jwt_token"])
        .args([
            "--username",
            "admin@example.com",
            "--exp",
            "10080",
            "--secret",
        ])
        .arg(&secret)
        .current_dir(dir.path())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .await?;
    let token = String::from_utf8(out.stdout)?
        .lines()
        .last()
        .context("create_jwt_token printed nothing")?
        .trim()
        .to_owned();
    let api = |req: reqwest::RequestBuilder| req.bearer_auth(&token);
    let json = |r: reqwest::Response| async move {
        let status = r.status();
        let body = r.text().await?;
        if !status.is_success() {
            bail!("ContextForge answered {status}: {body}");
        }
        Ok::<serde_json::Value, anyhow::Error>(serde_json::from_str(&body)?)
    };
    let gateway = json(
        api(http.post(format!("{base}/gateways")))
            .json(&serde_json::json!({"name": "bench", "url": upstream, "transport": "STREAMABLEHTTP"}))
            .send()
            .await?,
    )
    .await
    .context("registering the upstream")?;
    let gateway_id = gateway["id"].as_str().context("no gateway id")?.to_owned();
    let tools = json(api(http.get(format!("{base}/tools"))).send().await?).await?;
    let tools = tools
        .as_array()
        .or_else(|| tools["items"].as_array())
        .context("no tool list")?;
    let tool_ids: Vec<&str> = tools
        .iter()
        .filter(|t| t["gatewayId"] == gateway_id.as_str())
        .filter_map(|t| t["id"].as_str())
        .collect();
    if tool_ids.is_empty() {
        bail!("ContextForge found no tools on the upstream: {tools:?}");
    }
    let server = json(
        api(http.post(format!("{base}/servers")))
            .json(&serde_json::json!({
                "server": {"name": "bench", "associated_tools": tool_ids},
                "visibility": "public",
            }))
            .send()
            .await?,
    )
    .await
    .context("creating the virtual server")?;
    let server_id = server["id"].as_str().context("no server id")?;
    let url = format!("{base}/servers/{server_id}/mcp");
    let client = connect(&url, Some(&token)).await?;
    let tool = client
        .peer()
        .list_all_tools()
        .await?
        .into_iter()
        .map(|t| t.name.to_string())
        .find(|n| n.ends_with("echo"))
        .context("the virtual server lists no echo tool")?;
    let _ = client.cancel().await;
    Ok(ContextForge {
        child,
        url,
        token,
        tool,
        dir,
    })
}

impl ContextForge {
    /// SIGTERM to the gunicorn master (it stops its workers), then wait.
    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = tokio::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        if tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
        drop(self.dir);
    }
}

/// Idle (before any load) and loaded (peak while measuring) memory.
fn memory_json<'a>(
    idle: Option<(u64, u64)>,
    runs: impl Iterator<Item = &'a Run> + Clone,
) -> serde_json::Value {
    serde_json::json!({
        "idle_rss_kib": idle.map(|m| m.0),
        "idle_pss_kib": idle.map(|m| m.1),
        "loaded_rss_kib": runs.clone().filter_map(|r| r.peak_rss_kib).max(),
        "loaded_pss_kib": runs.filter_map(|r| r.peak_pss_kib).max(),
    })
}

fn print_row(c: usize, name: &str, run: &Run) {
    println!(
        "| {c} | {name} | {:.0} | {:.3} | {:.3} | {} | {} | {} |",
        run.throughput(),
        run.percentile(0.50),
        run.percentile(0.99),
        run.errors,
        run.cpu_ms_per_call
            .map_or("".into(), |ms| format!("{ms:.2}")),
        run.peak_rss_kib
            .map_or("".into(), |k| format!("{:.1}", k as f64 / 1024.0)),
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.smoke {
        args.concurrency = vec![1, 16];
        args.seconds = 2;
    }
    if args.contextforge.is_some() && args.protocol != "legacy" {
        bail!(
            "ContextForge speaks 2025-era MCP (initialize) only: pass --protocol legacy so all three targets are measured the same way"
        );
    }
    MODERN.set(args.protocol != "legacy").ok();
    KEEP_ALIVE.set(args.keep_alive).ok();
    FULL_GOVERNANCE.set(args.governance == "full").ok();
    let call_timeout = Duration::from_secs(args.call_timeout);
    let upstream = start_upstream().await?;
    let mut gateway = start_gateway(
        &args.gateway_bin,
        &upstream,
        &args.audit_sync,
        args.database.as_deref(),
        &args.governance,
    )
    .await?;
    match args.credential.as_str() {
        "gateway" => {}
        "oauth" => gateway.token = oauth_token(&args.gateway_bin, &gateway).await?,
        other => bail!("--credential must be gateway or oauth, not {other}"),
    }
    let mut results = Vec::new();
    let mut rss = serde_json::Map::new();
    let gateway_pid = gateway.child.id();
    let mcpgate_idle = gateway_pid.map(tree_mem_kib);
    println!(
        "| concurrency | path | calls/s | p50 ms | p99 ms | errors | gateway CPU ms/call | gateway peak RSS MiB |"
    );
    println!("|---:|---|---:|---:|---:|---:|---:|---:|");
    let mut summary = Vec::new();
    let mut failed = false;
    for &c in &args.concurrency {
        let direct = Target {
            url: &upstream,
            token: None,
            tool: "echo",
            action: None,
            watch: None,
            pseudonymizes: false,
        };
        let direct = measure(&direct, c, args.seconds, call_timeout).await?;
        let via = Target {
            url: &gateway.url,
            token: Some(&gateway.token),
            tool: "bench_read_actions",
            action: Some("echo"),
            watch: gateway_pid,
            pseudonymizes: args.governance == "full",
        };
        let via = measure(&via, c, args.seconds, call_timeout).await?;
        for (name, run) in [("direct", &direct), ("mcpgate", &via)] {
            print_row(c, name, run);
            results.push(run.json(name, c));
            failed |= run.errors > 0 || run.calls == 0;
        }
        summary.push((c, direct, via));
    }
    rss.insert(
        "mcpgate".into(),
        memory_json(mcpgate_idle, summary.iter().map(|s| &s.2)),
    );
    gateway.child.kill().await.ok();
    let mut contextforge_runs = Vec::new();
    if let Some(venv) = &args.contextforge {
        eprintln!(
            "starting ContextForge ({} workers)",
            args.contextforge_workers
        );
        let cf = start_contextforge(venv, args.contextforge_workers, &upstream).await?;
        let pid = cf.child.id();
        let idle = pid.map(tree_mem_kib);
        for &c in &args.concurrency {
            let target = Target {
                url: &cf.url,
                token: Some(&cf.token),
                tool: &cf.tool,
                action: None,
                watch: pid,
                pseudonymizes: false,
            };
            let run = measure(&target, c, args.seconds, call_timeout).await;
            match run {
                Ok(run) => {
                    print_row(c, "contextforge", &run);
                    results.push(run.json("contextforge", c));
                    contextforge_runs.push(run);
                }
                Err(e) => {
                    println!("| {c} | contextforge | failed: {e:#} | | | | | |");
                    results.push(serde_json::json!({"target": "contextforge", "concurrency": c, "failed": format!("{e:#}")}));
                }
            }
        }
        rss.insert(
            "contextforge".into(),
            memory_json(idle, contextforge_runs.iter()),
        );
        cf.stop().await;
    }
    println!();
    println!(
        "| concurrency | p50 overhead ms | p99 overhead ms | throughput ratio (mcpgate/direct) |"
    );
    println!("|---:|---:|---:|---:|");
    let mut worst_p50_overhead: f64 = 0.0;
    for (c, direct, via) in &summary {
        let p50_overhead = via.percentile(0.50) - direct.percentile(0.50);
        worst_p50_overhead = worst_p50_overhead.max(p50_overhead);
        println!(
            "| {c} | {:.3} | {:.3} | {:.2} |",
            p50_overhead,
            via.percentile(0.99) - direct.percentile(0.99),
            via.throughput() / direct.throughput()
        );
    }
    println!();
    println!(
        "| gateway | idle RSS MiB | loaded RSS MiB (peak while measuring) | idle PSS MiB | loaded PSS MiB |"
    );
    println!("|---|---:|---:|---:|---:|");
    for (name, r) in &rss {
        let mib = |v: &serde_json::Value| {
            v.as_u64()
                .map_or("?".into(), |k| format!("{:.1}", k as f64 / 1024.0))
        };
        println!(
            "| {name} | {} | {} | {} | {} |",
            mib(&r["idle_rss_kib"]),
            mib(&r["loaded_rss_kib"]),
            mib(&r["idle_pss_kib"]),
            mib(&r["loaded_pss_kib"])
        );
    }
    if let Some(path) = &args.json {
        let doc = serde_json::json!({
            "protocol": if args.protocol == "legacy" { "2025 era (initialize, Mcp-Session-Id)" } else { "2026-07-28" },
            "keep_alive": args.keep_alive,
            "governance": args.governance,
            "audit_sync": args.audit_sync,
            "seconds": args.seconds,
            "runs": results,
            "memory": rss,
            "contextforge_workers": args.contextforge.as_ref().map(|_| args.contextforge_workers),
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")?;
    }
    if failed {
        bail!("direct or mcpgate calls failed (see the errors column)");
    }
    if let Some(limit) = args.max_p50_overhead_ms
        && worst_p50_overhead > limit
    {
        bail!("p50 overhead {worst_p50_overhead:.3} ms exceeds {limit} ms (a stall?)");
    }
    Ok(())
}

/// A free loopback port in 20000–32000: below Linux's ephemeral range
/// (32768–60999), so only another server's explicit bind can take it.
fn port_below_ephemeral() -> u16 {
    loop {
        let port = rand::random_range(20_000..32_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}
