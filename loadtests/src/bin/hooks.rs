//! What policy hooks add to a call: 50 active hooks (every built-in pre kind,
//! about half with CEL `when:` conditions) run over a realistic call, as the
//! pipeline runs them (`HookSet::run_pre`, then `run_post`).
//!
//! cargo run --release -p loadtests --bin hooks -- [--calls 100000]

use std::time::{Duration, Instant};

use clap::Parser;
use mcpgate::hooks::load::parse;
use mcpgate::hooks::{CallFacts, HookSet, Layer};
use rmcp::model::{CallToolResult, ContentBlock};

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value_t = 100_000)]
    calls: usize,
}

fn hooks_yaml() -> String {
    let mut yaml = String::from("hooks:\n");
    for i in 0..50 {
        let body = match i % 10 {
            0 => "    when: 'args.text.contains(\"forbidden\") && risk == \"write\"'\n    kind: deny\n    message: no\n".to_owned(),
            1 => "    kind: endpoint_allowlist\n    field: channel\n    allow: ['#finance', '#ops-*', '#eng-*']\n".to_owned(),
            2 => "    kind: validate\n    required: [text]\n    patterns: { text: '^[A-Za-z]' }\n".to_owned(),
            3 => format!("    kind: set_default\n    values: {{ field{i}: x }}\n"),
            4 => "    when: 'subject.endsWith(\"@example.com\") && size(args.text) < 10000'\n    kind: warn\n    message: careful\n".to_owned(),
            5 => "    match: { action: 'delete_*' }\n    kind: deny\n    message: no deletes\n".to_owned(),
            6 => "    when: 'actor.startsWith(\"windmill:\") || service == \"slack\"'\n    kind: normalize_text\n    fields: [text]\n".to_owned(),
            7 => "    when: 'has(args.priority) && args.priority == \"urgent\"'\n    kind: require_confirmation\n".to_owned(),
            8 => "    when: 'args.channel in [\"#finance\", \"#ops-alerts\"]'\n    kind: set_default\n    values: { thread: none }\n".to_owned(),
            _ => "    match: { service: slack, risk: [write, high_risk] }\n    when: 'action == \"post_message\"'\n    kind: validate\n    required: [channel]\n".to_owned(),
        };
        yaml.push_str(&format!("  - name: hook{i}\n    order: {i}\n{body}"));
    }
    yaml
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let compiled =
        parse(&hooks_yaml(), "bench.yaml", Layer::Company).map_err(|e| anyhow::anyhow!("{e}"))?;
    let set = HookSet::new(compiled);
    let facts = CallFacts {
        tool: "slack_write_actions",
        service: "slack",
        action: "post_message",
        risk: "write",
        subject: "alice@example.com",
        actor: "windmill:prod/finance/f/finance/nightly_pnl",
    };
    let serde_json::Value::Object(arguments) = serde_json::json!({
        "channel": "#finance",
        "text": "Nightly P&L: revenue 1,204,332.10 EUR, costs 903,211.00 EUR, margin 25.0%\\nDetails in the dashboard.",
        "priority": "normal",
    }) else {
        unreachable!()
    };
    let budget = Duration::from_millis(100);
    let mut samples = Vec::with_capacity(args.calls);
    for _ in 0..args.calls {
        let mut call_args = arguments.clone();
        let mut result = CallToolResult::success(vec![ContentBlock::text("ok")]);
        let started = Instant::now();
        let pre = set
            .run_pre(&facts, &mut call_args, budget)
            .map_err(|r| anyhow::anyhow!("{}: {}", r.code(), r.message))?;
        set.run_post(&facts, &call_args, &mut result, budget)
            .map_err(|r| anyhow::anyhow!("{}: {}", r.code(), r.message))?;
        samples.push(started.elapsed());
        assert!(pre.confirm.is_none());
    }
    samples.sort();
    println!(
        "{} hooks ({} with CEL), {} calls: p50 {:?}, p99 {:?}, max {:?}",
        set.len(),
        set.hooks().iter().filter(|h| h.when.is_some()).count(),
        args.calls,
        percentile(&samples, 0.5),
        percentile(&samples, 0.99),
        samples.last().unwrap()
    );
    Ok(())
}
