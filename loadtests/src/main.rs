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
    // A fixed port, not `:0`: the gateway's public URL (the OAuth issuer and
    // resource of `--credential oauth`) defaults to its `listen` address.
    let write_config = |port: u16| {
        std::fs::write(
            &config,
            format!(
                "listen: 127.0.0.1:{port}\n{store}data_dir: {}\nlimits: {{ audit_sync: {audit_sync} }}\nservices:\n  bench:\n    kind: mcp\n    url: {upstream}\nusers:\n  - email: bench@example.com\n    access: {{ bench: read }}\n",
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
    seconds: f64,
    latencies_us: Vec<u64>,
}

impl Run {
    fn percentile(&self, p: f64) -> f64 {
        let idx = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        self.latencies_us[idx] as f64 / 1000.0
    }
    fn throughput(&self) -> f64 {
        self.calls as f64 / self.seconds
    }
}

/// `concurrency` sessions, each calling in a loop, measured for `seconds`.
async fn measure(
    url: &str,
    token: Option<&str>,
    tool: &'static str,
    action: Option<&'static str>,
    concurrency: usize,
    seconds: u64,
) -> anyhow::Result<Run> {
    let mut clients = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        clients.push(connect(url, token).await.context("connecting a session")?);
    }
    let warmup = Duration::from_secs(1);
    let start = Instant::now() + warmup;
    let end = start + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for (i, client) in clients.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
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
                let message = format!("s{i}-{n}");
                arguments.insert("message".into(), message.clone().into());
                n += 1;
                let t0 = Instant::now();
                let result = client
                    .peer()
                    .call_tool(CallToolRequestParams::new(tool).with_arguments(arguments))
                    .await;
                let took = t0.elapsed();
                match result {
                    Ok(r)
                        if r.content
                            .first()
                            .and_then(|c| c.as_text())
                            .map(|t| t.text.as_str())
                            == Some(message.as_str()) => {}
                    Ok(r) => return Err(anyhow::anyhow!("wrong answer: {r:?}")),
                    Err(e) => return Err(anyhow::anyhow!("call failed: {e}")),
                }
                if t0 >= start {
                    latencies.push(took.as_micros() as u64);
                }
            }
            let _ = client.cancel().await;
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let mut latencies_us = Vec::new();
    for task in tasks {
        latencies_us.extend(task.await??);
    }
    latencies_us.sort_unstable();
    if latencies_us.is_empty() {
        bail!("no calls completed");
    }
    Ok(Run {
        calls: latencies_us.len(),
        seconds: seconds as f64,
        latencies_us,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.smoke {
        args.concurrency = vec![1, 16];
        args.seconds = 2;
    }
    MODERN.set(args.protocol != "legacy").ok();
    KEEP_ALIVE.set(args.keep_alive).ok();
    let upstream = start_upstream().await?;
    let mut gateway = start_gateway(
        &args.gateway_bin,
        &upstream,
        &args.audit_sync,
        args.database.as_deref(),
    )
    .await?;
    match args.credential.as_str() {
        "gateway" => {}
        "oauth" => gateway.token = oauth_token(&args.gateway_bin, &gateway).await?,
        other => bail!("--credential must be gateway or oauth, not {other}"),
    }
    println!("| concurrency | path | calls/s | p50 ms | p99 ms |");
    println!("|---:|---|---:|---:|---:|");
    let mut summary = Vec::new();
    for &c in &args.concurrency {
        let direct = measure(&upstream, None, "echo", None, c, args.seconds).await?;
        let via = measure(
            &gateway.url,
            Some(&gateway.token),
            "bench_read_actions",
            Some("echo"),
            c,
            args.seconds,
        )
        .await?;
        for (name, run) in [("direct", &direct), ("mcpgate", &via)] {
            println!(
                "| {c} | {name} | {:.0} | {:.3} | {:.3} |",
                run.throughput(),
                run.percentile(0.50),
                run.percentile(0.99)
            );
        }
        summary.push((c, direct, via));
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
    gateway.child.kill().await.ok();
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
