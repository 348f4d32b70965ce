//! Test harness: an in-process gateway on a random port with real peers.
#![allow(dead_code)]

pub mod auth_proxy;
pub mod browser;
pub mod fake_jira;
pub mod fake_windmill;
pub mod recorder;
pub mod world;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mcpgate::config::Config;
use mcpgate::gateway::Gateway;
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, CallToolResult, JsonObject};
use rmcp::service::{RoleClient, RunningService, ServiceError};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::Value;
use tokio::sync::oneshot;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where `scripts/install-peers.sh` put the real MCP peers.
pub fn peers() -> PathBuf {
    let dir = std::env::var_os("MCPGATE_PEERS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".peers"));
    assert!(
        dir.join("venv/bin/python").exists() && dir.join("node/node_modules").exists(),
        "real MCP peers missing in {}: run scripts/install-peers.sh",
        dir.display()
    );
    dir
}

pub fn python() -> String {
    peers().join("venv/bin/python").display().to_string()
}

pub fn everything_js() -> String {
    peers()
        .join("node/node_modules/@modelcontextprotocol/server-everything/dist/index.js")
        .display()
        .to_string()
}

pub fn faulty_py() -> String {
    repo()
        .join("tests/peers/faulty_server.py")
        .display()
        .to_string()
}

/// YAML for the standard services: everything (stdio), time (stdio).
pub fn standard_services() -> String {
    format!(
        r#"  everything:
    kind: mcp
    command: ["node", "{everything}", "stdio"]
  time:
    kind: mcp
    command: ["{python}", "-m", "mcp_server_time"]
    risk: {{ convert_time: write }}
"#,
        everything = everything_js(),
        python = python()
    )
}

pub struct TestGateway {
    pub gw: Arc<Gateway>,
    pub url: String,
    pub base: String,
    pub dir: tempfile::TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

/// A PostgreSQL database and gateway key that several gateways share, as
/// replicas behind one load balancer do.
#[derive(Clone)]
pub struct SharedStore {
    pub url: String,
    pub key_hex: String,
}

impl SharedStore {
    /// A fresh, empty database on the test server (`scripts/postgres.sh`,
    /// which `scripts/test.sh` starts) and a fresh key.
    pub async fn create() -> SharedStore {
        use sqlx::Connection;
        let server = std::env::var("MCPGATE_TEST_POSTGRES").unwrap_or_else(|_| {
            panic!(
                "MCPGATE_TEST_POSTGRES is not set: run the tests with ./scripts/test.sh, \
                 which starts a throwaway PostgreSQL (scripts/postgres.sh)"
            )
        });
        let name = format!("mcpgate_test_{}", hex::encode(rand::random::<[u8; 8]>()));
        let mut admin = sqlx::PgConnection::connect(&server)
            .await
            .unwrap_or_else(|e| panic!("cannot reach the test PostgreSQL at {server}: {e}"));
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .unwrap();
        let (prefix, _) = server.rsplit_once('/').expect("a URL with a database");
        SharedStore {
            url: format!("{prefix}/{name}"),
            key_hex: hex::encode(rand::random::<[u8; 32]>()),
        }
    }
}

/// `MCPGATE_TEST_BACKEND=postgres` runs a suite's gateways on PostgreSQL.
pub async fn default_store() -> Option<SharedStore> {
    match std::env::var("MCPGATE_TEST_BACKEND").as_deref() {
        Ok("postgres") => Some(SharedStore::create().await),
        _ => None,
    }
}

impl TestGateway {
    /// `body` is the YAML after `data_dir`/`listen` (services, users, limits).
    pub async fn start(body: &str) -> TestGateway {
        let store = default_store().await;
        Self::start_on(body, store.as_ref()).await
    }

    /// Start on `store` (PostgreSQL, shared key) or the embedded SQLite, and
    /// wait until every connector has connected.
    pub async fn start_on(body: &str, store: Option<&SharedStore>) -> TestGateway {
        let t = Self::launch(body, store).await;
        t.wait_all_running().await;
        t
    }

    /// Start serving without waiting for the upstreams to connect.
    pub async fn launch(body: &str, store: Option<&SharedStore>) -> TestGateway {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::launch_on(listener, body, store).await
    }

    /// Start on a listener already bound: a config that names the gateway's
    /// own address (`public_url`) is written once the port is known.
    pub async fn start_at(
        body: impl FnOnce(&str) -> String,
        store: Option<&SharedStore>,
    ) -> TestGateway {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let t = Self::launch_on(listener, &body(&base), store).await;
        t.wait_all_running().await;
        t
    }

    /// Start on `listener` (bound earlier, so a peer could be told the
    /// gateway's address first) and wait for every connector.
    pub async fn start_on_listener(
        listener: tokio::net::TcpListener,
        body: &str,
        store: Option<&SharedStore>,
    ) -> TestGateway {
        let t = Self::launch_on(listener, body, store).await;
        t.wait_all_running().await;
        t
    }

    async fn launch_on(
        listener: tokio::net::TcpListener,
        body: &str,
        store: Option<&SharedStore>,
    ) -> TestGateway {
        if std::env::var_os("MCPGATE_TEST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_env("MCPGATE_TEST_LOG"))
                .try_init();
        }
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let mut text = body.to_owned();
        if let Some(store) = store {
            std::fs::create_dir_all(&data).unwrap();
            std::fs::write(data.join("gateway.key"), &store.key_hex).unwrap();
            text = format!("database: {}\n{text}", store.url);
        }
        // Replicas run one config file; each has its own data directory, set
        // the way MCPGATE_DATA_DIR does (the config text, and so the policy
        // version, stays the same).
        let mut config =
            Config::parse(&text, "test.yaml").unwrap_or_else(|e| panic!("{e}\n{text}"));
        config.data_dir = data;
        let pool = mcpgate::storage::connect(&config).await.unwrap();
        let gw = Gateway::start(config, pool).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let server_gw = gw.clone();
        let server = tokio::spawn(async move {
            mcpgate::http::serve(server_gw, listener, async move {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        TestGateway {
            gw,
            url: format!("http://{addr}/mcp"),
            base: format!("http://{addr}"),
            dir,
            shutdown: Some(tx),
            server: Some(server),
        }
    }

    pub async fn token(&self, user: &str) -> String {
        mcpgate::tokens::create(self.gw.pool(), user, Some("test"), None)
            .await
            .unwrap()
            .token
    }

    /// Wait until every configured connector has connected at least `generation` times.
    pub async fn wait_generation(&self, service: &str, generation: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            if let Some(s) = self.gw.directory().get(service)
                && s.generation >= generation
                && s.state == actors::connector::ConnectorState::Running
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "connector {service} did not reach generation {generation}: {:?}",
                self.gw.directory().get(service)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn wait_all_running(&self) {
        let services: Vec<String> = self.gw.config().services.keys().cloned().collect();
        for service in services {
            self.wait_generation(&service, 1).await;
        }
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap();
        }
    }

    pub async fn audit_rows(&self) -> Vec<mcpgate::audit::AuditRow> {
        mcpgate::audit::query(
            self.gw.pool(),
            &mcpgate::audit::AuditFilter {
                limit: 1_000_000,
                ..Default::default()
            },
        )
        .await
        .unwrap()
    }

    /// A real rmcp client (initialize-era session) authenticated with `token`.
    pub async fn rmcp_client(&self, token: &str) -> RunningService<RoleClient, ()> {
        rmcp_connect(&self.url, token).await
    }

    /// Run the official Python SDK client (see tests/clients/py_client.py).
    pub async fn py_client(&self, token: &str, mode: &str, steps: Value) -> Value {
        self.py_client_answering(token, mode, steps, None).await
    }

    /// Like [`Self::py_client`], declaring form elicitation and answering each
    /// request with `answer` (`approve` or `decline`).
    pub async fn py_client_answering(
        &self,
        token: &str,
        mode: &str,
        steps: Value,
        answer: Option<&str>,
    ) -> Value {
        let mut cmd = tokio::process::Command::new(python());
        cmd.arg(repo().join("tests/clients/py_client.py"))
            .arg(&self.url)
            .arg(token)
            .arg(mode)
            .arg(steps.to_string());
        if let Some(answer) = answer {
            cmd.arg(answer);
        }
        let out = cmd.output().await.unwrap();
        assert!(
            out.status.success(),
            "python client failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(stdout.lines().last().unwrap_or(""))
            .unwrap_or_else(|e| panic!("{e}: {stdout}"))
    }
}

impl TestGateway {
    /// Open an initialize-era session over raw HTTP; returns its `Mcp-Session-Id`.
    pub async fn raw_initialize(&self, token: &str) -> String {
        let init = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "1"}}});
        let resp = reqwest::Client::new()
            .post(&self.url)
            .bearer_auth(token)
            .header("accept", "application/json, text/event-stream")
            .json(&init)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.headers()["mcp-session-id"]
            .to_str()
            .unwrap()
            .to_owned()
    }

    /// POST a JSON-RPC message within an initialize-era session.
    pub async fn raw_post(&self, token: &str, session: &str, message: Value) -> reqwest::Response {
        reqwest::Client::new()
            .post(&self.url)
            .bearer_auth(token)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-session-id", session)
            .header("mcp-protocol-version", "2025-06-18")
            .json(&message)
            .send()
            .await
            .unwrap()
    }
}

/// A real rmcp client (initialize-era session) to `url`, authenticated with
/// `token`. A free function so spawned tasks can open their own sessions.
pub async fn rmcp_connect(url: &str, token: &str) -> RunningService<RoleClient, ()> {
    let config = StreamableHttpClientTransportConfig::with_uri(url).auth_header(token);
    ().serve(StreamableHttpClientTransport::from_config(config))
        .await
        .expect("rmcp client connects")
}

pub fn args(value: Value) -> JsonObject {
    match value {
        Value::Object(map) => map,
        other => panic!("arguments must be an object, got {other}"),
    }
}

pub async fn call(
    client: &RunningService<RoleClient, ()>,
    tool: &str,
    arguments: Value,
) -> Result<CallToolResult, ServiceError> {
    client
        .peer()
        .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(args(arguments)))
        .await
}

pub fn text_of(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("")
}

/// The gateway's reason code on a JSON-RPC error.
pub fn reason_of(error: &ServiceError) -> String {
    match error {
        ServiceError::McpError(e) => e
            .data
            .as_ref()
            .and_then(|d| d.get("reason"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
        other => panic!("expected a JSON-RPC error, got {other}"),
    }
}

/// The gateway's reason code of a refused call, whichever way it came back:
/// a JSON-RPC error, or (argument validation, SEP-1303) a tool error result.
pub fn refusal_of(outcome: Result<CallToolResult, ServiceError>) -> String {
    match outcome {
        Err(error) => reason_of(&error),
        Ok(result) => {
            assert_eq!(
                result.is_error,
                Some(true),
                "the call was not refused: {result:?}"
            );
            result
                .meta
                .as_ref()
                .and_then(|m| m.0.get(mcpgate::mcp::REASON_META))
                .and_then(Value::as_str)
                .unwrap_or_else(|| panic!("a tool error without the gateway's reason: {result:?}"))
                .to_owned()
        }
    }
}

pub fn path_str(p: &Path) -> String {
    p.display().to_string()
}

// Helpers for the per-service native connector tests (`tests/native_*.rs`).

/// An rmcp client session, as the tests hold it.
pub type Client = RunningService<RoleClient, ()>;

/// The names of the tools `client` sees.
pub async fn tool_names(client: &Client) -> Vec<String> {
    client
        .peer()
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect()
}

/// Call `tool`; the call must reach it (no JSON-RPC error). The answer may be
/// a tool error.
pub async fn answered(client: &Client, tool: &str, args: Value) -> CallToolResult {
    call(client, tool, args.clone())
        .await
        .unwrap_or_else(|e| panic!("{tool} {args}: {e}"))
}

/// Call `tool`; the answer must not be a tool error.
pub async fn ok(client: &Client, tool: &str, args: Value) -> CallToolResult {
    let result = answered(client, tool, args.clone()).await;
    assert_ne!(
        result.is_error,
        Some(true),
        "{tool} {args}: {}",
        text_of(&result)
    );
    result
}

/// Call `tool`; the answer must be a tool error (the service refused). Its text.
pub async fn failed_text(client: &Client, tool: &str, args: Value) -> String {
    let result = answered(client, tool, args.clone()).await;
    assert_eq!(
        result.is_error,
        Some(true),
        "{tool} {args} should fail: {}",
        text_of(&result)
    );
    text_of(&result)
}

/// The structured content, or else the text parsed as JSON (`Null` if it is not).
pub fn structured(result: &CallToolResult) -> Value {
    result
        .structured_content
        .clone()
        .unwrap_or_else(|| serde_json::from_str(&text_of(result)).unwrap_or(Value::Null))
}

/// A successful answer's structured content, which must be there.
pub fn ok_structured(result: &CallToolResult) -> Value {
    assert_ne!(result.is_error, Some(true), "{}", text_of(result));
    result
        .structured_content
        .clone()
        .unwrap_or_else(|| panic!("no structured content: {}", text_of(result)))
}

/// Call `tool`; it must succeed with structured content: [`ok_structured`] of its answer.
pub async fn structured_answer(client: &Client, tool: &str, args: Value) -> Value {
    ok_structured(&answered(client, tool, args).await)
}

/// A successful answer's text, parsed as JSON (arrays have no structured content).
pub fn json_of(result: &CallToolResult) -> Value {
    assert_ne!(result.is_error, Some(true), "{}", text_of(result));
    serde_json::from_str(&text_of(result)).unwrap_or_else(|e| panic!("{e}: {}", text_of(result)))
}

/// `{service}_read_actions`, which must succeed: [`structured`] of its answer.
pub async fn read(client: &Client, service: &str, args: Value) -> Value {
    structured(&ok(client, &format!("{service}_read_actions"), args).await)
}

/// `{service}_write_actions`, which must succeed: [`structured`] of its answer.
pub async fn write(client: &Client, service: &str, args: Value) -> Value {
    structured(&ok(client, &format!("{service}_write_actions"), args).await)
}

/// The first call of a high_risk action: it only asks. Its structured content
/// (`confirmation_required`, `risk`, the `confirm` token).
pub async fn ask_confirmation(client: &Client, tool: &str, args: Value) -> Value {
    let ask = ok(client, tool, args).await;
    let preview = ask.structured_content.expect("a confirmation request");
    assert_eq!(preview["confirmation_required"], true, "{preview}");
    preview
}

/// `args` with the `confirm` token of `preview` (from [`ask_confirmation`]).
pub fn with_confirm(args: Value, preview: &Value) -> Value {
    let mut again = args;
    again["confirm"] = preview["confirm"].clone();
    again
}

/// A high_risk action: the first call asks, the same call with the token runs.
/// Its answer, which may be a tool error (the service refused).
pub async fn confirmed_answer(client: &Client, tool: &str, args: Value) -> CallToolResult {
    let preview = ask_confirmation(client, tool, args.clone()).await;
    answered(client, tool, with_confirm(args, &preview)).await
}

/// Like [`confirmed_answer`]; the confirmed call must succeed.
pub async fn confirmed(client: &Client, tool: &str, args: Value) -> CallToolResult {
    let preview = ask_confirmation(client, tool, args.clone()).await;
    ok(client, tool, with_confirm(args, &preview)).await
}

/// Store `user`'s credential for `service` in the vault.
pub async fn store_credential(
    gw: &TestGateway,
    user: &str,
    service: &str,
    kind: mcpgate::vault::CredentialKind,
    secret: &str,
) {
    mcpgate::vault::set(
        gw.gw.pool(),
        gw.gw.master_key(),
        user,
        service,
        kind,
        secret,
    )
    .await
    .unwrap();
}
