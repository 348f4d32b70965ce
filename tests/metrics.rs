//! `/metrics`: every tool call is counted once by service, action, decision
//! and reason, its duration lands in a histogram, and the exposition passes
//! `promtool check metrics` (Prometheus' own linter).

mod support;

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::json;
use support::*;

fn config() -> String {
    format!(
        r#"services:
  time:
    kind: mcp
    command: ["{python}", "-m", "mcp_server_time"]
    risk: {{ convert_time: write }}
users:
  - email: alice@example.com
    access: {{ time: read }}
"#,
        python = python()
    )
}

async fn scrape(gw: &TestGateway) -> String {
    let response = reqwest::get(format!("{}/metrics", gw.base)).await.unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    response.text().await.unwrap()
}

/// The value of the sample `series` (name and labels, exactly as exposed).
fn value(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?.strip_prefix(' ')?;
        rest.parse().ok()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_are_counted_by_labels_with_their_duration() {
    let gw = TestGateway::start(&config()).await;
    let alice = gw.token("alice@example.com").await;
    let client = gw.rmcp_client(&alice).await;

    let ok = call(
        &client,
        "time_read_actions",
        json!({"action": "get_current_time", "timezone": "UTC"}),
    )
    .await
    .unwrap();
    assert_ne!(ok.is_error, Some(true));
    let refused = call(
        &client,
        "time_write_actions",
        json!({"action": "convert_time", "source_timezone": "UTC", "time": "12:00", "target_timezone": "Europe/Paris"}),
    )
    .await
    .unwrap_err();
    assert_eq!(reason_of(&refused), "risk_not_allowed");
    // A made-up action name never becomes a label value.
    let unknown = call(
        &client,
        "time_read_actions",
        json!({"action": "made_up_action_4711"}),
    )
    .await
    .unwrap_err();
    assert_eq!(reason_of(&unknown), "unknown_action");

    let metrics = scrape(&gw).await;
    let allowed = r#"{service="time",action="get_current_time",decision="allowed"#;
    assert_eq!(
        value(
            &metrics,
            &format!("mcpgate_calls_total{allowed}\",reason=\"\"}}")
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        value(
            &metrics,
            r#"mcpgate_calls_total{service="time",action="convert_time",decision="refused",reason="risk_not_allowed"}"#
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        value(
            &metrics,
            r#"mcpgate_calls_total{service="time",action="",decision="refused",reason="unknown_action"}"#
        ),
        Some(1.0),
        "{metrics}"
    );
    assert!(!metrics.contains("made_up_action_4711"), "{metrics}");

    // The histogram: one allowed call, cumulative buckets, +Inf = count.
    assert_eq!(
        value(
            &metrics,
            &format!("mcpgate_call_duration_seconds_count{allowed}\"}}")
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        value(
            &metrics,
            &format!("mcpgate_call_duration_seconds_bucket{allowed}\",le=\"+Inf\"}}")
        ),
        Some(1.0)
    );
    let sum = value(
        &metrics,
        &format!("mcpgate_call_duration_seconds_sum{allowed}\"}}"),
    )
    .unwrap();
    assert!(sum > 0.0 && sum < 10.0, "{sum}");
    let buckets: Vec<f64> = metrics
        .lines()
        .filter(|l| l.starts_with(&format!("mcpgate_call_duration_seconds_bucket{allowed}")))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(buckets.len(), 13, "12 bounds and +Inf: {metrics}");
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    // The refused call has its own duration series, without the reason.
    assert_eq!(
        value(
            &metrics,
            r#"mcpgate_call_duration_seconds_count{service="time",action="convert_time",decision="refused"}"#
        ),
        Some(1.0),
        "{metrics}"
    );

    // The gauges and counters beside the calls, under their conventional names.
    assert_eq!(
        value(&metrics, r#"mcpgate_connector_up{service="time"}"#),
        Some(1.0)
    );
    assert_eq!(
        value(
            &metrics,
            r#"mcpgate_connector_starts_total{service="time"}"#
        ),
        Some(1.0)
    );
    assert_eq!(value(&metrics, "mcpgate_in_flight_requests"), Some(0.0));
    assert_eq!(value(&metrics, "mcpgate_sessions"), Some(1.0));
    assert_eq!(value(&metrics, "mcpgate_actor_restarts_total"), Some(0.0));
    for family in [
        "mcpgate_calls_total counter",
        "mcpgate_call_duration_seconds histogram",
        "mcpgate_in_flight_requests gauge",
    ] {
        assert_eq!(
            metrics.matches(&format!("# TYPE {family}\n")).count(),
            1,
            "{family}: {metrics}"
        );
    }

    promtool_check(&metrics);
    gw.stop().await;
}

/// `promtool check metrics` lints the exposition (names, units, suffixes,
/// HELP). Skipped when promtool is not installed, unless
/// `MCPGATE_REQUIRE_PROMTOOL=1` (scripts/test.sh sets it).
fn promtool_check(metrics: &str) {
    let required = std::env::var("MCPGATE_REQUIRE_PROMTOOL").as_deref() == Ok("1");
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
            eprintln!("promtool not installed: `promtool check metrics` skipped");
            return;
        }
        Err(e) => panic!("promtool: {e} (apt-get install prometheus, or scripts/install-peers.sh)"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}\n{metrics}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
