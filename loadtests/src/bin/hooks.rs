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

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let compiled = parse(
        &loadtests::policy_hooks_yaml(),
        "bench.yaml",
        Layer::Company,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
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
