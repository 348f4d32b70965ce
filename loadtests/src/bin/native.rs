//! Native connectors under load: tools/call through mcpgate to a native
//! catalog action (the subject's credential from the vault, the HTTP
//! executor, shaping, PII, audit) against the same HTTP endpoint called
//! directly. Then the mailbox question: 64 calls at once to a service that
//! takes 50 ms each must finish in about 50 ms, not 64 × 50 ms, because the
//! connector actor only dispatches and every call runs on its own task.
//!
//! cargo run --release -p loadtests --bin native -- [--calls 2000] [--concurrency 16]

#[path = "../../../tests/support/fake_api.rs"]
mod fake_api;

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use fake_api::FakeApi;
use loadtests::InProcessGateway;
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;

#[derive(Parser, Debug)]
struct Args {
    /// Calls in the throughput runs.
    #[arg(long, default_value_t = 2000)]
    calls: usize,
    /// Concurrent callers in the throughput runs.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Concurrent calls to the 50 ms endpoint.
    #[arg(long, default_value_t = 64)]
    fan_out: usize,
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
  - name: slow
    description: A read that takes `ms` milliseconds.
    risk: read
    method: GET
    path: /v1/slow
    params:
      ms: { in: query, type: integer }
"#;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn report(name: &str, mut samples: Vec<f64>, wall: Duration) {
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "{name}: n={} p50={:.3} ms p99={:.3} ms  {:.0} calls/s",
        samples.len(),
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        samples.len() as f64 / wall.as_secs_f64()
    );
}

type Client = RunningService<RoleClient, ()>;

/// `concurrency` workers each make `calls / concurrency` calls in turn:
/// every call's latency (ms) and the wall time of the whole run.
async fn measure<F, Fut>(
    calls: usize,
    concurrency: usize,
    call: F,
) -> anyhow::Result<(Vec<f64>, Duration)>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let started = Instant::now();
    let per_worker = calls / concurrency;
    let mut workers = Vec::new();
    for worker in 0..concurrency {
        let call = call.clone();
        workers.push(tokio::spawn(async move {
            let mut samples = Vec::with_capacity(per_worker);
            for _ in 0..per_worker {
                let t = Instant::now();
                call(worker).await?;
                samples.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            Ok::<_, anyhow::Error>(samples)
        }));
    }
    let mut samples = Vec::new();
    for worker in workers {
        samples.extend(worker.await??);
    }
    Ok((samples, started.elapsed()))
}

async fn through_gateway(
    clients: Arc<Vec<Client>>,
    calls: usize,
    concurrency: usize,
    arguments: serde_json::Value,
) -> anyhow::Result<(Vec<f64>, Duration)> {
    let arguments = Arc::new(arguments.as_object().cloned().unwrap_or_default());
    measure(calls, concurrency, move |worker| {
        let clients = clients.clone();
        let arguments = arguments.clone();
        async move {
            let result = clients[worker % clients.len()]
                .peer()
                .call_tool(
                    CallToolRequestParams::new("acme_read_actions")
                        .with_arguments((*arguments).clone()),
                )
                .await?;
            anyhow::ensure!(result.is_error != Some(true), "a call failed: {result:?}");
            Ok(())
        }
    })
    .await
}

async fn direct(
    url: &str,
    token: &str,
    calls: usize,
    concurrency: usize,
) -> anyhow::Result<(Vec<f64>, Duration)> {
    let http = reqwest::Client::new();
    let url: Arc<str> = url.into();
    let token: Arc<str> = token.into();
    measure(calls, concurrency, move |_| {
        let (http, url, token) = (http.clone(), url.clone(), token.clone());
        async move {
            let body: serde_json::Value = http
                .get(&*url)
                .bearer_auth(&*token)
                .send()
                .await?
                .json()
                .await?;
            anyhow::ensure!(body["ok"] == true, "unexpected answer {body}");
            Ok(())
        }
    })
    .await
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let api = FakeApi::start().await;
    let secret = "acme-load-token";
    api.allow_token(secret);
    let dir = tempfile::tempdir()?;
    std::fs::create_dir_all(dir.path().join("catalogs"))?;
    std::fs::write(dir.path().join("catalogs/acme.yaml"), CATALOG)?;
    let text = format!(
        "data_dir: {data}\ncatalog_dir: {catalogs}\nservices:\n  acme: {{ kind: native, catalog: acme, base_url: \"{url}\" }}\nusers:\n  - email: load@example.com\n    access: {{ acme: read }}\n",
        data = dir.path().join("data").display(),
        catalogs = dir.path().join("catalogs").display(),
        url = api.base_url
    );
    // The credential is in the vault before the first call needs it.
    let gateway = InProcessGateway::start(&text, "native-load.yaml", &["acme"]).await?;
    let (gw, pool, base) = (
        gateway.gw.clone(),
        gateway.pool.clone(),
        gateway.base.clone(),
    );
    mcpgate::vault::set(
        &pool,
        gw.master_key(),
        "load@example.com",
        "acme",
        mcpgate::vault::CredentialKind::Token,
        secret,
    )
    .await?;
    let token = gateway.token("load@example.com").await?;
    let mut clients = Vec::new();
    for _ in 0..args.concurrency.clamp(1, 16) {
        let config = StreamableHttpClientTransportConfig::with_uri(format!("{base}/mcp"))
            .auth_header(token.clone());
        clients.push(
            ().serve(StreamableHttpClientTransport::from_config(config))
                .await?,
        );
    }
    let clients = Arc::new(clients);
    let fast = serde_json::json!({"action": "flaky"});

    // Warm up both paths.
    through_gateway(clients.clone(), 100, 4, fast.clone()).await?;
    direct(&format!("{}/v1/flaky", api.base_url), secret, 100, 4).await?;

    for concurrency in [1, args.concurrency] {
        let calls = if concurrency == 1 {
            args.calls / 4
        } else {
            args.calls
        };
        let (samples, wall) = direct(
            &format!("{}/v1/flaky", api.base_url),
            secret,
            calls,
            concurrency,
        )
        .await?;
        report(&format!("direct      c={concurrency:<3}"), samples, wall);
        let (samples, wall) =
            through_gateway(clients.clone(), calls, concurrency, fast.clone()).await?;
        report(&format!("via mcpgate c={concurrency:<3}"), samples, wall);
    }

    // One connector actor, many calls in flight: no serialization.
    let slow = serde_json::json!({"action": "slow", "ms": 50});
    let started = Instant::now();
    let (samples, _) = through_gateway(clients.clone(), args.fan_out, args.fan_out, slow).await?;
    let wall = started.elapsed();
    let mut sorted = samples.clone();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "fan-out: {} calls at once to a 50 ms service through one connector actor: wall {:.0} ms (serialized would be {} ms), p50 {:.1} ms, max {:.1} ms",
        args.fan_out,
        wall.as_secs_f64() * 1000.0,
        args.fan_out * 50,
        percentile(&sorted, 0.5),
        sorted.last().copied().unwrap_or(f64::NAN)
    );
    anyhow::ensure!(
        wall < Duration::from_millis(50 * args.fan_out as u64 / 4),
        "calls were serialized: {} calls took {wall:?}",
        args.fan_out
    );
    Ok(())
}
