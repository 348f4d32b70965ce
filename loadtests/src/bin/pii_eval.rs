//! PII detection measured on labelled data: entity-level precision and recall
//! per type on `../shared/data/pii/synth_dataset_v2.json` (Presidio's research
//! set), scan throughput on one core, and the scan latency of a 4 KB result.
//!
//! cargo run --release -p loadtests --bin pii_eval -- [--dataset PATH]
//!
//! A find counts as a true positive when it overlaps a labelled span of the
//! same type; a labelled span is recalled when some find of its type overlaps it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use mcpgate::pii::detect::{Entity, scan};
use serde::Deserialize;

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value = "../shared/data/pii/synth_dataset_v2.json")]
    dataset: PathBuf,
    /// Fail (exit 1) if an F-type falls below these (for CI): recall, precision.
    #[arg(long)]
    min_recall: Option<f64>,
    #[arg(long)]
    min_precision: Option<f64>,
}

#[derive(Deserialize)]
struct Sample {
    full_text: String,
    spans: Vec<Span>,
}

#[derive(Deserialize)]
struct Span {
    entity_type: String,
    start_position: usize,
    end_position: usize,
}

fn dataset_type(entity: Entity) -> Option<&'static str> {
    match entity {
        Entity::Email => Some("EMAIL_ADDRESS"),
        Entity::Phone => Some("PHONE_NUMBER"),
        Entity::Iban => Some("IBAN_CODE"),
        Entity::Card => Some("CREDIT_CARD"),
        Entity::Ip => Some("IP_ADDRESS"),
        _ => None,
    }
}

/// Character offsets (the dataset's) to byte offsets (ours).
fn byte_offset(text: &str, chars: usize) -> usize {
    text.char_indices()
        .nth(chars)
        .map_or(text.len(), |(i, _)| i)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let samples: Vec<Sample> = serde_json::from_slice(&std::fs::read(&args.dataset)?)?;
    let types = [
        "EMAIL_ADDRESS",
        "PHONE_NUMBER",
        "IBAN_CODE",
        "CREDIT_CARD",
        "IP_ADDRESS",
    ];
    // type → (gold, recalled, predicted, true positives)
    let mut tally: BTreeMap<&str, (u64, u64, u64, u64)> =
        types.iter().map(|t| (*t, (0, 0, 0, 0))).collect();
    let mut misses: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut false_finds: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for sample in &samples {
        let text = &sample.full_text;
        let finds = scan(text, &[]);
        let gold: Vec<(&str, usize, usize)> = sample
            .spans
            .iter()
            .filter(|s| types.contains(&s.entity_type.as_str()))
            .map(|s| {
                (
                    s.entity_type.as_str(),
                    byte_offset(text, s.start_position),
                    byte_offset(text, s.end_position),
                )
            })
            .collect();
        let overlaps = |a: (usize, usize), b: (usize, usize)| a.0 < b.1 && b.0 < a.1;
        for (kind, start, end) in &gold {
            let entry = tally.get_mut(kind).expect("known type");
            entry.0 += 1;
            if finds.iter().any(|f| {
                dataset_type(f.entity) == Some(kind) && overlaps((f.start, f.end), (*start, *end))
            }) {
                entry.1 += 1;
            } else {
                misses
                    .entry(kind)
                    .or_default()
                    .push(text[*start..*end].to_owned());
            }
        }
        for find in &finds {
            let Some(kind) = dataset_type(find.entity) else {
                continue;
            };
            let entry = tally.get_mut(kind).expect("known type");
            entry.2 += 1;
            if gold
                .iter()
                .any(|(k, s, e)| *k == kind && overlaps((find.start, find.end), (*s, *e)))
            {
                entry.3 += 1;
            } else {
                false_finds
                    .entry(kind)
                    .or_default()
                    .push(text[find.start..find.end].to_owned());
            }
        }
    }
    println!("| type | labelled | recall | precision |");
    println!("|---|---|---|---|");
    let mut failed = false;
    for (kind, (gold, recalled, predicted, tp)) in &tally {
        let recall = *recalled as f64 / (*gold).max(1) as f64;
        let precision = if *predicted == 0 {
            1.0
        } else {
            *tp as f64 / *predicted as f64
        };
        println!(
            "| {kind} | {gold} | {:.1} % | {:.1} % |",
            recall * 100.0,
            precision * 100.0
        );
        failed |= args.min_recall.is_some_and(|m| recall < m)
            || args.min_precision.is_some_and(|m| precision < m);
    }
    for (kind, missed) in &misses {
        println!(
            "missed {kind} ({}): {:?}",
            missed.len(),
            &missed[..missed.len().min(8)]
        );
    }
    for (kind, wrong) in &false_finds {
        println!(
            "false {kind} ({}): {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(8)]
        );
    }

    // Throughput: the whole corpus, scanned repeatedly on this thread.
    let corpus: String = samples
        .iter()
        .map(|s| s.full_text.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    let started = Instant::now();
    let mut bytes = 0usize;
    while started.elapsed() < Duration::from_secs(2) {
        std::hint::black_box(scan(&corpus, &[]));
        bytes += corpus.len();
    }
    let mb_s = bytes as f64 / started.elapsed().as_secs_f64() / 1e6;
    // Latency of one 4 KB result.
    let four_kb: String = corpus.chars().take(4096).collect();
    let mut samples_ns = Vec::new();
    for _ in 0..5000 {
        let t = Instant::now();
        std::hint::black_box(scan(&four_kb, &[]));
        samples_ns.push(t.elapsed());
    }
    samples_ns.sort();
    println!(
        "scan throughput {:.1} MB/s (one core); 4 KB result: p50 {:?}, p99 {:?}",
        mb_s,
        samples_ns[samples_ns.len() / 2],
        samples_ns[samples_ns.len() * 99 / 100]
    );
    if failed {
        anyhow::bail!("below the required precision/recall");
    }
    Ok(())
}
