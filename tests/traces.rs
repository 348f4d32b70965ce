//! OpenTelemetry traces, end to end: the `mcpgate` binary, configured only by
//! the standard `OTEL_*` variables, exports over OTLP/HTTP to a real receiver
//! (`tests/peers/otlp_receiver.py`, which decodes the protobuf with the
//! official `opentelemetry-proto` definitions). A call that arrives with a
//! W3C `traceparent` continues that trace through the gateway's stages and
//! out to the upstream: in `_meta` for an MCP server, as a header for a
//! native service's HTTP API. Spans carry who and what, never argument
//! values, and the buffered spans are flushed when the gateway stops. A
//! delegated call, in process with the binary's own trace layer, names its
//! grant and the flow acting.

mod support;

use support::world::{DECLARATION, world};

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_mcpgate");
/// An argument value that must appear nowhere in the exported spans.
const SECRET_ARGUMENT: &str = "argument-value-that-never-leaves-4471";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The receiver, on a free port; spans land in `out`, one JSON per line.
fn start_receiver(out: &std::path::Path) -> (Killed, u16) {
    start_python(&[
        repo()
            .join("tests/peers/otlp_receiver.py")
            .display()
            .to_string(),
        out.display().to_string(),
    ])
}

/// A Python peer that prints `port <n>` once it listens.
fn start_python(args: &[String]) -> (Killed, u16) {
    let mut child = Command::new(python())
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .strip_prefix("port ")
        .unwrap_or_else(|| panic!("{args:?} said {line:?} (the receiver needs opentelemetry-proto and protobuf: scripts/install-peers.sh)"))
        .parse()
        .unwrap();
    (Killed(child), port)
}

/// A native service's API: answers `GET /v1/items` and keeps the headers of
/// every request it got.
async fn start_api() -> (String, Arc<Mutex<Vec<http::HeaderMap>>>) {
    let seen: Arc<Mutex<Vec<http::HeaderMap>>> = Arc::default();
    let record = seen.clone();
    let app = axum::Router::new().route(
        "/v1/items",
        axum::routing::get(move |headers: http::HeaderMap| {
            let record = record.clone();
            async move {
                record.lock().unwrap().push(headers);
                axum::Json(json!({"items": [{"id": 1, "name": "first"}]}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, seen)
}

const ACME_CATALOG: &str = r#"
service: acme
auth: bearer
actions:
  - name: list_items
    description: Items matching a query.
    risk: read
    method: GET
    path: /v1/items
    params:
      q: { in: query }
"#;

fn cli(config: &std::path::Path, args: &[&str], stdin: &str) -> String {
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "mcpgate {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The JSON-RPC answer in a response body, JSON or SSE.
fn answer_of(body: &str) -> Value {
    if let Ok(value) = serde_json::from_str::<Value>(body) {
        return value;
    }
    body.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .find(|v| v.get("id").is_some())
        .unwrap_or_else(|| panic!("no JSON-RPC answer in {body}"))
}

struct Session {
    http: reqwest::Client,
    url: String,
    token: String,
    id: String,
}

impl Session {
    async fn open(url: &str, token: &str) -> Session {
        let http = reqwest::Client::new();
        let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "traces-test", "version": "1"}}});
        let resp = http
            .post(url)
            .bearer_auth(token)
            .header("accept", "application/json, text/event-stream")
            .json(&init)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let id = resp.headers()["mcp-session-id"]
            .to_str()
            .unwrap()
            .to_owned();
        let session = Session {
            http,
            url: url.to_owned(),
            token: token.to_owned(),
            id,
        };
        let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        session.post(&initialized, None).await;
        session
    }

    async fn post(&self, message: &Value, traceparent: Option<&str>) -> String {
        let mut request = self
            .http
            .post(&self.url)
            .bearer_auth(&self.token)
            .header("accept", "application/json, text/event-stream")
            .header("mcp-session-id", &self.id)
            .header("mcp-protocol-version", "2025-06-18")
            .json(message);
        if let Some(traceparent) = traceparent {
            request = request.header("traceparent", traceparent);
        }
        let resp = request.send().await.unwrap();
        assert!(resp.status().is_success(), "{}", resp.status());
        resp.text().await.unwrap()
    }

    async fn call(&self, id: u64, tool: &str, arguments: Value, traceparent: &str) -> Value {
        let message = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
            "params": {"name": tool, "arguments": arguments}});
        answer_of(&self.post(&message, Some(traceparent)).await)
    }
}

fn traceparent(trace_id: &str) -> String {
    format!("00-{trace_id}-{CALLER_SPAN}-01")
}

fn stop(gateway: &mut Child) {
    let pid = gateway.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while gateway.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "gateway did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The spans of one trace, by name (a name may occur more than once).
struct Trace {
    spans: Vec<Value>,
}

impl Trace {
    fn named(&self, name: &str) -> Vec<&Value> {
        self.spans.iter().filter(|s| s["name"] == name).collect()
    }

    fn one(&self, name: &str) -> &Value {
        let found = self.named(name);
        assert_eq!(found.len(), 1, "{name}: {:#?}", self.spans);
        found[0]
    }

    fn children_of(&self, parent: &Value) -> Vec<&Value> {
        self.spans
            .iter()
            .filter(|s| s["parent_span_id"] == parent["span_id"])
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_call_continues_the_callers_trace_through_the_stages_to_the_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let spans_file = dir.path().join("spans.jsonl");
    let (_receiver, receiver_port) = start_receiver(&spans_file);
    let (api_base, api_seen) = start_api().await;
    let (_http_upstream, http_upstream_port) = start_python(&[
        repo()
            .join("tests/peers/meta_server.py")
            .display()
            .to_string(),
        "http".to_owned(),
    ]);
    let catalogs = dir.path().join("catalogs");
    std::fs::create_dir_all(&catalogs).unwrap();
    std::fs::write(catalogs.join("acme.yaml"), ACME_CATALOG).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("mcpgate.yaml");
    std::fs::write(
        &config,
        format!(
            r#"listen: 127.0.0.1:{port}
data_dir: {data}
catalog_dir: {catalogs}
services:
  meta:
    kind: mcp
    command: ["{python}", "{server}"]
  remote:
    kind: mcp
    url: http://127.0.0.1:{http_upstream_port}/mcp
  acme:
    kind: native
    catalog: acme
    base_url: "{api_base}"
users:
  - email: alice@example.com
    access: {{ "*": read }}
"#,
            data = dir.path().join("data").display(),
            catalogs = catalogs.display(),
            python = python(),
            server = repo().join("tests/peers/meta_server.py").display(),
        ),
    )
    .unwrap();
    let token = cli(
        &config,
        &["token", "create", "--user", "alice@example.com"],
        "",
    );
    cli(
        &config,
        &[
            "credentials",
            "set",
            "--user",
            "alice@example.com",
            "--service",
            "acme",
        ],
        "acme-api-token",
    );

    // Only the standard variables configure traces; RUST_LOG silences the
    // logs, which does not silence the traces. The export interval is long
    // on purpose: spans reach the receiver only by the flush at shutdown.
    let gateway = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{receiver_port}"),
        )
        .env("OTEL_SERVICE_NAME", "mcpgate-traces-test")
        .env("OTEL_BSP_SCHEDULE_DELAY", "600000")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut gateway = Killed(gateway);
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(resp) = reqwest::get(format!("{base}/health/ready")).await
            && resp.status() == 200
        {
            break;
        }
        assert!(Instant::now() < deadline, "gateway did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let session = Session::open(&format!("{base}/mcp"), &token).await;
    // An MCP upstream: the trace context arrives in `_meta`.
    let mcp_answer = session
        .call(
            2,
            "meta_read_actions",
            json!({"action": "lookup", "query": SECRET_ARGUMENT}),
            &traceparent(TRACE_ID),
        )
        .await;
    let seen_upstream = |answer: &Value| -> Value {
        serde_json::from_str(
            answer["result"]["content"][0]["text"]
                .as_str()
                .unwrap_or_else(|| panic!("{answer}")),
        )
        .unwrap()
    };
    let upstream_meta = seen_upstream(&mcp_answer)["meta"].clone();
    // An MCP upstream over Streamable HTTP: in `_meta`, and as a header.
    let http_trace = "5ce0e9a56015fec5aadfa328ae398115";
    let http_answer = session
        .call(
            5,
            "remote_read_actions",
            json!({"action": "lookup", "query": SECRET_ARGUMENT}),
            &traceparent(http_trace),
        )
        .await;
    let seen_over_http = seen_upstream(&http_answer);
    // A native service: the trace context goes out as HTTP headers.
    let native_trace = "0af7651916cd43dd8448eb211c80319c";
    let native_answer = session
        .call(
            3,
            "acme_read_actions",
            json!({"action": "list_items", "q": SECRET_ARGUMENT}),
            &traceparent(native_trace),
        )
        .await;
    assert!(native_answer["result"].is_object(), "{native_answer}");
    // A refused call is traced too, with its reason.
    let refused_trace = "11111111111111111111111111111111";
    let refused = session
        .call(
            4,
            "meta_write_actions",
            json!({"action": "lookup", "query": SECRET_ARGUMENT}),
            &traceparent(refused_trace),
        )
        .await;
    assert!(refused["error"].is_object(), "{refused}");

    stop(&mut gateway.0);
    let text = std::fs::read_to_string(&spans_file).unwrap_or_default();
    if std::env::var_os("MCPGATE_SHOW_SPANS").is_some() {
        eprintln!("{text}");
    }
    assert!(
        !text.contains(SECRET_ARGUMENT),
        "an argument value was exported: {text}"
    );
    let spans: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!spans.is_empty(), "no span reached the receiver");
    assert!(
        spans.iter().all(|s| s["service"] == "mcpgate-traces-test"),
        "{spans:#?}"
    );
    let trace_of = |id: &str| Trace {
        spans: spans
            .iter()
            .filter(|s| s["trace_id"] == id)
            .cloned()
            .collect(),
    };

    // The MCP call: the tree under the caller's span.
    let trace = trace_of(TRACE_ID);
    let request = trace.one("POST /mcp");
    assert_eq!(request["parent_span_id"], CALLER_SPAN);
    assert_eq!(request["kind"], "SPAN_KIND_SERVER");
    assert_eq!(request["attributes"]["http.response.status_code"], 200);
    let call = trace.one("mcp.call");
    assert_eq!(call["parent_span_id"], request["span_id"]);
    assert_eq!(
        trace.one("mcp.authenticate")["parent_span_id"],
        request["span_id"]
    );
    let attributes = &call["attributes"];
    for (key, value) in [
        ("mcpgate.subject", "alice@example.com"),
        ("mcpgate.actor", "alice@example.com"),
        ("mcpgate.service", "meta"),
        ("mcpgate.action", "lookup"),
        ("mcpgate.risk", "read"),
        ("mcpgate.decision", "allowed"),
        ("mcp.method.name", "tools/call"),
        ("gen_ai.tool.name", "meta_read_actions"),
    ] {
        assert_eq!(attributes[key], value, "{key}: {call:#}");
    }
    assert!(attributes.get("mcpgate.reason").is_none(), "{call:#}");
    assert!(attributes.get("mcpgate.grant_id").is_none(), "{call:#}");
    let stages: BTreeMap<String, usize> =
        trace
            .children_of(call)
            .iter()
            .fold(BTreeMap::new(), |mut names, span| {
                *names
                    .entry(span["name"].as_str().unwrap().to_owned())
                    .or_default() += 1;
                names
            });
    let expected: BTreeMap<String, usize> = [
        ("mcp.decide", 1),
        ("mcp.hooks.pre", 1),
        ("mcp.pii.rehydrate", 1),
        ("mcp.audit.write", 2),
        ("mcp.upstream", 1),
        ("mcp.hooks.post", 1),
        ("mcp.pii.pseudonymize", 1),
    ]
    .into_iter()
    .map(|(name, n)| (name.to_owned(), n))
    .collect();
    assert_eq!(stages, expected, "{:#?}", trace.spans);
    let entries: Vec<&Value> = trace
        .named("mcp.audit.write")
        .iter()
        .map(|s| &s["attributes"]["mcpgate.audit.entry"])
        .collect();
    assert_eq!(entries, [&json!("decision"), &json!("outcome")]);
    let upstream = trace.one("mcp.upstream");
    assert_eq!(upstream["kind"], "SPAN_KIND_CLIENT");
    assert_eq!(
        upstream_meta["traceparent"],
        format!("00-{TRACE_ID}-{}-01", upstream["span_id"].as_str().unwrap()),
        "the upstream's _meta: {upstream_meta}"
    );

    // The Streamable HTTP upstream: the same context in `_meta` and the header.
    let trace = trace_of(http_trace);
    let upstream = trace.one("mcp.upstream");
    assert_eq!(upstream["attributes"]["mcpgate.service"], "remote");
    let expected = format!(
        "00-{http_trace}-{}-01",
        upstream["span_id"].as_str().unwrap()
    );
    assert_eq!(seen_over_http["meta"]["traceparent"], expected);
    assert!(
        seen_over_http["meta"].get("tracestate").is_none(),
        "no empty tracestate: {seen_over_http}"
    );
    assert_eq!(seen_over_http["traceparent"], expected);

    // The native call: traceparent as an HTTP header, from its upstream span.
    let trace = trace_of(native_trace);
    let upstream = trace.one("mcp.upstream");
    assert_eq!(upstream["attributes"]["mcpgate.service"], "acme");
    let headers = api_seen.lock().unwrap().clone();
    assert_eq!(headers.len(), 1);
    assert_eq!(
        headers[0]["traceparent"].to_str().unwrap(),
        format!(
            "00-{native_trace}-{}-01",
            upstream["span_id"].as_str().unwrap()
        )
    );

    // The refused call: its reason on the call's span, the refusal row's write.
    let trace = trace_of(refused_trace);
    let call = trace.one("mcp.call");
    assert_eq!(call["attributes"]["mcpgate.decision"], "refused");
    assert_eq!(call["attributes"]["mcpgate.reason"], "wrong_tool");
    assert_eq!(
        trace.one("mcp.audit.write")["attributes"]["mcpgate.audit.entry"],
        "refusal"
    );
    assert!(trace.named("mcp.upstream").is_empty());
}

/// Spans as the SDK hands them to an exporter, kept for the test.
#[derive(Debug, Clone, Default)]
struct Collected(Arc<Mutex<Vec<opentelemetry_sdk::trace::SpanData>>>);

impl opentelemetry_sdk::trace::SpanExporter for Collected {
    async fn export(
        &self,
        batch: Vec<opentelemetry_sdk::trace::SpanData>,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.lock().unwrap().extend(batch);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delegated_call_names_its_grant_and_the_flow_acting() {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    // In process, with the binary's own trace layer and an exporter that keeps
    // what it gets.
    let collected = Collected::default();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_simple_exporter(collected.clone())
        .build();
    tracing_subscriber::registry()
        .with(mcpgate::telemetry::traces_layer(&provider))
        .init();

    let w = world().await;
    let step = w.wm.start_flow("alice", "f/finance/report");
    let (token, grant_id) = w.grant_token(&step, DECLARATION).await;
    let client = rmcp_connect(&w.gw.url, &token).await;
    call(
        &client,
        "bigquery_read_actions",
        json!({"action": "query", "sql": SECRET_ARGUMENT}),
    )
    .await
    .unwrap();
    let refused = call(
        &client,
        "warehouse_read_actions",
        json!({"action": "query", "sql": SECRET_ARGUMENT}),
    )
    .await
    .unwrap_err();
    assert_eq!(reason_of(&refused), "service_not_declared");

    let spans = collected.0.lock().unwrap().clone();
    let attribute = |span: &opentelemetry_sdk::trace::SpanData, key: &str| {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.to_string())
    };
    for span in &spans {
        for kv in &span.attributes {
            assert!(
                !kv.value.to_string().contains(SECRET_ARGUMENT),
                "{}: {kv:?}",
                span.name
            );
        }
    }
    let calls: Vec<_> = spans.iter().filter(|s| s.name == "mcp.call").collect();
    assert_eq!(calls.len(), 2, "{spans:#?}");
    for call in &calls {
        assert_eq!(
            attribute(call, "mcpgate.grant_id").as_deref(),
            Some(grant_id.as_str())
        );
        assert_eq!(
            attribute(call, "mcpgate.subject").as_deref(),
            Some("alice@example.com")
        );
        assert_eq!(
            attribute(call, "mcpgate.actor").as_deref(),
            Some("windmill:prod/finance/f/finance/report")
        );
    }
    let allowed = calls
        .iter()
        .find(|c| attribute(c, "mcpgate.decision").as_deref() == Some("allowed"))
        .unwrap();
    // The grant's actor authorized it: its own span, under the call's.
    let children: Vec<&str> = spans
        .iter()
        .filter(|s| s.parent_span_id == allowed.span_context.span_id())
        .map(|s| s.name.as_ref())
        .collect();
    assert!(children.contains(&"mcp.grant"), "{children:?}");
    assert!(children.contains(&"mcp.upstream"), "{children:?}");
    let refused = calls
        .iter()
        .find(|c| attribute(c, "mcpgate.decision").as_deref() == Some("refused"))
        .unwrap();
    assert_eq!(
        attribute(refused, "mcpgate.reason").as_deref(),
        Some("service_not_declared")
    );
    let _ = provider.shutdown();
}
