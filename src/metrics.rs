//! The Prometheus text exposition of `/metrics` (format 0.0.4), following
//! Prometheus' naming conventions: the `mcpgate_` prefix, base units in the
//! name (`_seconds`), `_total` on counters, one `# HELP` and `# TYPE` per
//! family, label values escaped.
//!
//! | family | type | labels |
//! |---|---|---|
//! | `mcpgate_calls_total` | counter | `service`, `action`, `decision`, `reason` |
//! | `mcpgate_call_duration_seconds` | histogram | `service`, `action`, `decision` |
//! | `mcpgate_actor_failures_total`, `mcpgate_actor_restarts_total` | counter | — |
//! | `mcpgate_sessions` | gauge | — |
//! | `mcpgate_in_flight_requests` | gauge | — |
//! | `mcpgate_connector_up` | gauge | `service` |
//! | `mcpgate_connector_starts_total` | counter | `service` |
//! | `mcpgate_build_info` | gauge (always 1) | `version` |

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::Ordering;

use crate::stats::{CallCounts, DURATION_BUCKETS, Stats};

/// The `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What the gateway knows at a scrape beside [`Stats`]: the gauges.
pub struct Gauges {
    pub sessions: usize,
    pub in_flight: usize,
    /// Each configured service: whether its upstream is connected, and how
    /// many times its connector started.
    pub connectors: Vec<Connector>,
}

pub struct Connector {
    pub service: String,
    pub up: bool,
    pub starts: u64,
}

/// Render every family.
pub fn render(stats: &Stats, gauges: &Gauges) -> String {
    let mut out = Exposition::default();
    let calls = stats.calls.snapshot();

    out.family(
        "mcpgate_calls_total",
        "counter",
        "Tool calls by service, action, decision (allowed, refused, failed) and reason code (empty when allowed).",
    );
    for (labels, counts) in &calls {
        out.sample(
            "mcpgate_calls_total",
            &[
                ("service", &labels.service),
                ("action", &labels.action),
                ("decision", labels.decision),
                ("reason", labels.reason),
            ],
            counts.count as f64,
        );
    }

    // The histogram's series leave the reason out: summed over reasons.
    let mut durations: BTreeMap<(&str, &str, &str), CallCounts> = BTreeMap::new();
    for (labels, counts) in &calls {
        durations
            .entry((&labels.service, &labels.action, labels.decision))
            .and_modify(|sum| sum.add(counts))
            .or_insert_with(|| counts.clone());
    }
    out.family(
        "mcpgate_call_duration_seconds",
        "histogram",
        "Time from a tool call's arrival in the pipeline to its answer, refusals included.",
    );
    for ((service, action, decision), counts) in &durations {
        let labels = [
            ("service", *service),
            ("action", *action),
            ("decision", *decision),
        ];
        for (bound, value) in DURATION_BUCKETS.iter().zip(counts.cumulative) {
            let le = bound.to_string();
            out.sample(
                "mcpgate_call_duration_seconds_bucket",
                &[&labels[..], &[("le", &le)]].concat(),
                value as f64,
            );
        }
        out.sample(
            "mcpgate_call_duration_seconds_bucket",
            &[&labels[..], &[("le", "+Inf")]].concat(),
            counts.count as f64,
        );
        out.sample(
            "mcpgate_call_duration_seconds_sum",
            &labels,
            counts.sum_seconds,
        );
        out.sample(
            "mcpgate_call_duration_seconds_count",
            &labels,
            counts.count as f64,
        );
    }

    out.family(
        "mcpgate_actor_failures_total",
        "counter",
        "Supervised actors that failed (errors and panics).",
    );
    out.sample(
        "mcpgate_actor_failures_total",
        &[],
        stats.actor_failures.load(Ordering::Relaxed) as f64,
    );
    out.family(
        "mcpgate_actor_restarts_total",
        "counter",
        "Restarts performed by supervisors.",
    );
    out.sample(
        "mcpgate_actor_restarts_total",
        &[],
        stats.actor_restarts.load(Ordering::Relaxed) as f64,
    );
    out.family("mcpgate_sessions", "gauge", "Live MCP session actors.");
    out.sample("mcpgate_sessions", &[], gauges.sessions as f64);
    out.family(
        "mcpgate_in_flight_requests",
        "gauge",
        "MCP requests whose answer is not sent yet.",
    );
    out.sample("mcpgate_in_flight_requests", &[], gauges.in_flight as f64);
    out.family(
        "mcpgate_connector_up",
        "gauge",
        "1 when the service's upstream is connected.",
    );
    for c in &gauges.connectors {
        out.sample(
            "mcpgate_connector_up",
            &[("service", &c.service)],
            f64::from(u8::from(c.up)),
        );
    }
    out.family(
        "mcpgate_connector_starts_total",
        "counter",
        "Connections started to the service's upstream.",
    );
    for c in &gauges.connectors {
        out.sample(
            "mcpgate_connector_starts_total",
            &[("service", &c.service)],
            c.starts as f64,
        );
    }
    out.family(
        "mcpgate_build_info",
        "gauge",
        "Always 1; the running version is its label.",
    );
    out.sample(
        "mcpgate_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1.0,
    );
    out.text
}

#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (label, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{label}=\"{}\"", escape_label(value));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }
}

/// A label value in the text format: backslash, double quote and line feed
/// escaped.
pub fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// `# HELP` text: backslash and line feed escaped.
fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("line\nbreak"), "line\\nbreak");
        assert_eq!(escape_label("plain"), "plain");
    }

    #[test]
    fn each_family_has_help_and_type_once() {
        let stats = Stats::default();
        stats.calls.record(
            crate::stats::CallLabels {
                service: "a\"b".into(),
                action: "x".into(),
                decision: "allowed",
                reason: "",
            },
            std::time::Duration::from_millis(2),
        );
        let text = render(
            &stats,
            &Gauges {
                sessions: 1,
                in_flight: 0,
                connectors: vec![],
            },
        );
        assert_eq!(
            text.matches("# TYPE mcpgate_calls_total counter").count(),
            1
        );
        assert!(text.contains(
            r#"mcpgate_calls_total{service="a\"b",action="x",decision="allowed",reason=""} 1"#
        ));
        assert!(text.contains(
            r#"mcpgate_call_duration_seconds_bucket{service="a\"b",action="x",decision="allowed",le="0.001"} 0"#
        ));
        assert!(text.contains(
            r#"mcpgate_call_duration_seconds_bucket{service="a\"b",action="x",decision="allowed",le="0.005"} 1"#
        ));
        assert!(text.contains(
            r#"mcpgate_call_duration_seconds_count{service="a\"b",action="x",decision="allowed"} 1"#
        ));
    }
}
