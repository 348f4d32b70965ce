//! Delegation under load: N Windmill jobs (a fake Windmill that follows the
//! spec, as in the tests) exchange their job tokens for grants and call a
//! tool through the gateway, all at once. Revocations are timed under that
//! load: the first `--revokes` jobs call without pause until refused, an
//! operator revokes each one's grant through the admin API meanwhile, and the
//! upstream counts every call of a grant that reached it after the
//! revocation was acknowledged (it must be none). After the load, as many
//! revocations through the admin API, and as many written to the store by
//! another process, are timed until the grant's actor stopped.
//!
//! cargo run --release -p loadtests --bin delegation -- [--jobs 1000] [--revokes 100]

#[path = "../../../tests/support/fake_windmill.rs"]
mod fake_windmill;
#[path = "../../../tests/support/recorder.rs"]
mod recorder;

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use fake_windmill::FakeWindmill;
use loadtests::InProcessGateway;
use mcpgate::delegation::store::{self, Instance, RevokeFilter};
use recorder::Recorder;
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;

#[derive(Parser, Debug)]
struct Args {
    /// Jobs exchanging and calling concurrently.
    #[arg(long, default_value_t = 1000)]
    jobs: usize,
    /// Grants revoked one by one under the load (admin API), and as many
    /// after it (written to the store by another process); all timed.
    #[arg(long, default_value_t = 100)]
    revokes: usize,
    /// Tool calls each job makes under its grant; 0: the job only exchanges
    /// (the burst of exchanges alone, without the sessions that follow).
    #[arg(long, default_value_t = 1)]
    calls_per_job: usize,
    /// Start the jobs evenly over this many seconds instead of all at once
    /// (a schedule firing 10,000 jobs within a minute: `--spread-secs 60`).
    #[arg(long, default_value_t = 0.0)]
    spread_secs: f64,
}

/// Revoke grant `id` as an operator; the milliseconds to the acknowledgement,
/// after which its actor must be gone.
async fn revoke_through_admin_api(
    http: &reqwest::Client,
    base: &str,
    admin: &str,
    gw: &mcpgate::gateway::Gateway,
    id: &str,
) -> anyhow::Result<f64> {
    let t0 = Instant::now();
    let response = http
        .delete(format!("{base}/admin/api/grants/{id}"))
        .bearer_auth(admin)
        .send()
        .await?;
    anyhow::ensure!(response.status().is_success(), "revoke failed");
    let took = t0.elapsed().as_secs_f64() * 1000.0;
    anyhow::ensure!(
        gw.delegation().grants.get(id).is_none(),
        "acknowledged but still live"
    );
    Ok(took)
}

/// A call made by job `job` (its query names it).
fn marked(args: &serde_json::Value, job: usize) -> bool {
    args["sql"].as_str() == Some(&format!("select 1 -- job {job}"))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn summary(name: &str, mut samples: Vec<f64>) {
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "{name}: n={} p50={:.2} ms p99={:.2} ms max={:.2} ms",
        samples.len(),
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        samples.last().copied().unwrap_or(f64::NAN)
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let wm = FakeWindmill::start("finance").await;
    let owners = 10;
    let mut users = String::new();
    for i in 0..owners {
        wm.add_user(&format!("owner{i}"), &format!("owner{i}@example.com"));
        users.push_str(&format!(
            "  - email: owner{i}@example.com\n    access: {{ bigquery: read, slack: write }}\n"
        ));
    }
    let bigquery = Recorder::start().await;
    let slack = Recorder::start().await;
    let dir = tempfile::tempdir()?;
    let text = format!(
        "data_dir: {}\nservices:\n  bigquery: {{ kind: mcp, url: \"{}\" }}\n  slack: {{ kind: mcp, url: \"{}\" }}\nusers:\n{users}  - email: sa@example.com\n    service_account: true\n  - email: root@example.com\n    admin: true\ndelegation:\n  revocation_poll: 50ms\n",
        dir.path().join("data").display(),
        bigquery.url,
        slack.url
    );
    let InProcessGateway { gw, pool, base } =
        InProcessGateway::start(&text, "delegation-load.yaml", &["bigquery", "slack"]).await?;
    store::set_delegation(&pool, true, "loadtest").await?;
    store::put_instance(
        &pool,
        &Instance {
            name: "prod".into(),
            base_url: wm.base_url.clone(),
            workspace: "finance".into(),
            allowed_flows: None,
        },
        "loadtest",
    )
    .await?;
    let sa = mcpgate::tokens::create(&pool, "sa@example.com", Some("sa"), None)
        .await?
        .token;
    let admin = mcpgate::tokens::create(&pool, "root@example.com", Some("admin"), None)
        .await?
        .token;

    let http = reqwest::Client::new();
    let steps: Vec<_> = (0..args.jobs)
        .map(|i| {
            wm.start_flow(
                &format!("owner{}", i % owners),
                &format!("f/finance/job{i}"),
            )
        })
        .collect();
    // The operator: revokes each watched job's grant while that job calls.
    let (granted_tx, mut granted_rx) = tokio::sync::mpsc::unbounded_channel::<(usize, String)>();
    let revoker = {
        let (http, base, admin, gw, bigquery) = (
            http.clone(),
            base.clone(),
            admin.clone(),
            gw.clone(),
            bigquery.clone(),
        );
        tokio::spawn(async move {
            let mut acks = Vec::new();
            while let Some((job, id)) = granted_rx.recv().await {
                // Let the job's calls flow first.
                tokio::time::sleep(Duration::from_millis(20)).await;
                let took = revoke_through_admin_api(&http, &base, &admin, &gw, &id).await?;
                let reached = bigquery.count_matching(|_, args| marked(args, job));
                acks.push((job, took, reached));
            }
            Ok::<_, anyhow::Error>(acks)
        })
    };
    let started = Instant::now();
    let (calls_per_job, jobs, watched) = (args.calls_per_job, args.jobs, args.revokes);
    let spread = Duration::from_secs_f64(args.spread_secs);
    let tasks: Vec<_> = steps
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, step)| {
            let http = http.clone();
            let base = base.clone();
            let sa = sa.clone();
            let granted = granted_tx.clone();
            tokio::spawn(async move {
                tokio::time::sleep_until((started + spread.mul_f64(i as f64 / jobs as f64)).into())
                    .await;
                let mut url = reqwest::Url::parse("http://form/").unwrap();
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
                    ("actor_token", sa.as_str()),
                    ("workspace", "finance"),
                    ("job_id", step.job_id.as_str()),
                    ("flow_job_id", step.flow_job_id.as_str()),
                    (
                        "gateway_services",
                        r#"[{"bigquery": ["read"]}, {"slack": ["write"]}]"#,
                    ),
                ]);
                let t0 = Instant::now();
                let response = http
                    .post(format!("{base}/oauth/token"))
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(url.query().unwrap_or("").to_owned())
                    .send()
                    .await?;
                let status = response.status();
                let body: serde_json::Value = response.json().await?;
                anyhow::ensure!(status.is_success(), "exchange failed: {body}");
                let exchange_ms = t0.elapsed().as_secs_f64() * 1000.0;
                let token = body["access_token"].as_str().unwrap_or_default().to_owned();
                let grant = body["grant_id"].as_str().unwrap_or_default().to_owned();
                if calls_per_job == 0 && i >= watched {
                    return Ok((exchange_ms, Vec::new(), grant));
                }
                let config = StreamableHttpClientTransportConfig::with_uri(format!("{base}/mcp"))
                    .auth_header(token);
                // One HTTP client for every job (as one process per job would
                // hold one): building a client loads the system's root
                // certificates, which is the load generator's cost, not the
                // gateway's.
                let transport = StreamableHttpClientTransport::with_client(http.clone(), config);
                let client = ().serve(transport).await?;
                let mut call_ms = Vec::with_capacity(calls_per_job);
                let call = || {
                    let mut arguments = serde_json::Map::new();
                    arguments.insert("action".into(), "query".into());
                    arguments.insert("sql".into(), format!("select 1 -- job {i}").into());
                    client.peer().call_tool(
                        CallToolRequestParams::new("bigquery_read_actions")
                            .with_arguments(arguments),
                    )
                };
                if i < watched {
                    // Call without pause until the revocation refuses it.
                    let _ = granted.send((i, grant.clone()));
                    let deadline = Instant::now() + Duration::from_secs(60);
                    loop {
                        anyhow::ensure!(
                            Instant::now() < deadline,
                            "never refused after revocation"
                        );
                        let t1 = Instant::now();
                        match call().await {
                            Ok(result) if result.is_error != Some(true) => {
                                call_ms.push(t1.elapsed().as_secs_f64() * 1000.0)
                            }
                            _ => break,
                        }
                    }
                } else {
                    for _ in 0..calls_per_job {
                        let t1 = Instant::now();
                        let result = call().await?;
                        anyhow::ensure!(result.is_error != Some(true), "call refused: {result:?}");
                        call_ms.push(t1.elapsed().as_secs_f64() * 1000.0);
                    }
                }
                let _ = client.cancel().await;
                Ok::<_, anyhow::Error>((exchange_ms, call_ms, grant))
            })
        })
        .collect();
    drop(granted_tx);
    let mut exchange = Vec::new();
    let mut first_calls = Vec::new();
    let mut calls = Vec::new();
    let mut grants = Vec::new();
    let mut errors = 0;
    for task in futures::future::join_all(tasks).await {
        match task? {
            Ok((e, c, g)) => {
                exchange.push(e);
                first_calls.extend(c.first().copied());
                calls.extend(c);
                grants.push(g);
            }
            Err(e) => {
                errors += 1;
                if errors <= 3 {
                    eprintln!("job failed: {e:#}");
                }
            }
        }
    }
    let wall = started.elapsed().as_secs_f64();
    println!(
        "{} jobs ({} calls each, started over {:.0} s): done in {:.2} s = {:.0} grants/s; {errors} errors; upstream calls {}; live grants {}",
        args.jobs,
        calls_per_job,
        args.spread_secs,
        wall,
        args.jobs as f64 / wall,
        bigquery.count(),
        gw.delegation().grants.len()
    );
    summary("token exchange latency", exchange);
    summary("first tools/call under the grant", first_calls);
    if calls_per_job > 1 {
        summary("every tools/call under a grant", calls);
    }
    anyhow::ensure!(errors == 0, "{errors} jobs failed");

    // Revocations under the load: acknowledged once the actor stopped, and
    // no call of the grant may reach the upstream after that.
    let acks = revoker.await??;
    let after_ack: usize = acks
        .iter()
        .map(|(job, _, reached)| bigquery.count_matching(|_, args| marked(args, *job)) - reached)
        .sum();
    summary(
        "revoke under load (admin API) request → acknowledged, actor stopped",
        acks.iter().map(|(_, took, _)| *took).collect(),
    );
    println!(
        "calls that reached the upstream after their grant's revocation was acknowledged: {after_ack} (of {} revoked grants)",
        acks.len()
    );
    anyhow::ensure!(
        after_ack == 0,
        "{after_ack} calls reached the upstream after revocation"
    );

    // After the load, with every other grant still live: the admin API...
    let mut idle_revokes = Vec::new();
    for id in grants.iter().skip(watched).take(args.revokes) {
        idle_revokes.push(revoke_through_admin_api(&http, &base, &admin, &gw, id).await?);
    }
    summary(
        &format!(
            "revoke after the load (admin API, {} live grants) → acknowledged",
            gw.delegation().grants.len() + idle_revokes.len()
        ),
        idle_revokes,
    );

    // ...and a revocation written to the store by another process: the
    // watcher stops it.
    let mut store_revokes = Vec::new();
    for id in grants
        .iter()
        .skip(watched + args.revokes)
        .take(args.revokes)
    {
        let t0 = Instant::now();
        let filter = RevokeFilter {
            grant_id: Some(id.clone()),
            ..Default::default()
        };
        store::request_revocation(&pool, &filter, "loadtest").await?;
        let live = gw.delegation().grants.get(id).map(|g| g.actor.clone());
        if let Some(actor) = live {
            while actor.get_status() != ractor::ActorStatus::Stopped {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        store_revokes.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    summary(
        "revoke (store, poll 50 ms) written → actor stopped",
        store_revokes,
    );
    gw.shutdown().await;
    let _ = Arc::strong_count(&gw);
    Ok(())
}
