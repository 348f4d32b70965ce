//! The audit log as records an auditor can hold: rows with their chain
//! entries, marks, checkpoints — read from the store, or written to and read
//! from an export (JSONL or CSV) that verifies offline with the public key.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sqlx::Row;

use crate::storage::Db;

/// The export format's name, in its first line (JSONL) or first record (CSV).
pub const FORMAT: &str = "mcpgate-audit-export/1";

/// One record of the log, flat so that it is also one CSV line. `type` says
/// which fields apply:
/// - `header`: `format`, `exported_at`, `since` (a range export);
/// - `row`: `id`, the row's columns, its decision entry (`chain_*`) and
///   outcome entry (`outcome_*`);
/// - `mark`: `chain_id`, `chain_seq`, `chain_hash`, `chain_entry`, `mark_kind`;
/// - `checkpoint`: `chain_id`, `checkpoint_size`, `chain_hash`, `checkpoint_note`;
/// - `start` (range exports): chain `chain_id` is exported from entry
///   `chain_seq`, which follows hash `chain_hash`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Record {
    #[serde(rename = "type")]
    pub kind: String,
    pub format: Option<String>,
    pub exported_at: Option<String>,
    pub since: Option<String>,
    pub id: Option<i64>,
    pub call_id: Option<String>,
    pub started_at: Option<String>,
    pub completed_at: Option<String>,
    pub subject: Option<String>,
    pub actor: Option<String>,
    pub session: Option<String>,
    pub client_name: Option<String>,
    pub client_version: Option<String>,
    pub service: Option<String>,
    pub tool: Option<String>,
    pub action: Option<String>,
    pub risk: Option<String>,
    pub decision: Option<String>,
    pub reason_code: Option<String>,
    pub reason: Option<String>,
    pub args_sha256: Option<String>,
    pub grant_id: Option<String>,
    pub job_id: Option<String>,
    pub pii_rehydrated: Option<i64>,
    pub pii_types: Option<String>,
    pub upstream_status: Option<String>,
    pub latency_ms: Option<f64>,
    pub chain_id: Option<String>,
    pub chain_seq: Option<i64>,
    pub chain_hash: Option<String>,
    pub chain_entry: Option<String>,
    pub outcome_chain: Option<String>,
    pub outcome_seq: Option<i64>,
    pub outcome_hash: Option<String>,
    pub outcome_entry: Option<String>,
    pub mark_kind: Option<String>,
    pub checkpoint_size: Option<i64>,
    pub checkpoint_note: Option<String>,
}

/// A row's columns that its chain entries commit to, by name.
pub const COLUMNS: [&str; 22] = [
    "call_id",
    "started_at",
    "completed_at",
    "subject",
    "actor",
    "session",
    "client_name",
    "client_version",
    "service",
    "tool",
    "action",
    "risk",
    "decision",
    "reason_code",
    "reason",
    "args_sha256",
    "grant_id",
    "job_id",
    "pii_rehydrated",
    "pii_types",
    "upstream_status",
    "latency_ms",
];

impl Record {
    /// A row's committed columns as JSON values, by name.
    pub fn columns(&self) -> Map<String, Value> {
        let Value::Object(all) = serde_json::to_value(self).expect("records serialize") else {
            unreachable!("a struct serializes to an object")
        };
        all.into_iter()
            .filter(|(name, _)| COLUMNS.contains(&name.as_str()))
            .collect()
    }
}

/// The whole log as stored, rows in id order.
pub async fn load(pool: &Db) -> Result<Vec<Record>, sqlx::Error> {
    let mut records = Vec::new();
    let rows = sqlx::query(
        "SELECT id, call_id, started_at, completed_at, subject, actor, session, client_name, \
         client_version, service, tool, action, risk, decision, reason_code, reason, args_sha256, \
         grant_id, job_id, pii_rehydrated, pii_types, upstream_status, latency_ms, chain_id, \
         chain_seq, chain_hash, chain_entry, outcome_chain, outcome_seq, outcome_hash, outcome_entry \
         FROM audit_events ORDER BY id",
    )
    .fetch_all(pool)
    .await?;
    for r in rows {
        records.push(Record {
            kind: "row".into(),
            id: Some(r.try_get("id")?),
            call_id: r.try_get("call_id")?,
            started_at: r.try_get("started_at")?,
            completed_at: r.try_get("completed_at")?,
            subject: r.try_get("subject")?,
            actor: r.try_get("actor")?,
            session: r.try_get("session")?,
            client_name: r.try_get("client_name")?,
            client_version: r.try_get("client_version")?,
            service: r.try_get("service")?,
            tool: r.try_get("tool")?,
            action: r.try_get("action")?,
            risk: r.try_get("risk")?,
            decision: r.try_get("decision")?,
            reason_code: r.try_get("reason_code")?,
            reason: r.try_get("reason")?,
            args_sha256: r.try_get("args_sha256")?,
            grant_id: r.try_get("grant_id")?,
            job_id: r.try_get("job_id")?,
            pii_rehydrated: r.try_get("pii_rehydrated")?,
            pii_types: r.try_get("pii_types")?,
            upstream_status: r.try_get("upstream_status")?,
            latency_ms: r.try_get("latency_ms")?,
            chain_id: r.try_get("chain_id")?,
            chain_seq: r.try_get("chain_seq")?,
            chain_hash: r.try_get("chain_hash")?,
            chain_entry: r.try_get("chain_entry")?,
            outcome_chain: r.try_get("outcome_chain")?,
            outcome_seq: r.try_get("outcome_seq")?,
            outcome_hash: r.try_get("outcome_hash")?,
            outcome_entry: r.try_get("outcome_entry")?,
            ..Default::default()
        });
    }
    let marks = sqlx::query(
        "SELECT chain_id, seq, kind, entry, hash FROM audit_chain_marks ORDER BY chain_id, seq",
    )
    .fetch_all(pool)
    .await?;
    for r in marks {
        records.push(Record {
            kind: "mark".into(),
            chain_id: Some(r.try_get("chain_id")?),
            chain_seq: Some(r.try_get("seq")?),
            mark_kind: Some(r.try_get("kind")?),
            chain_entry: Some(r.try_get("entry")?),
            chain_hash: Some(r.try_get("hash")?),
            ..Default::default()
        });
    }
    let checkpoints = sqlx::query(
        "SELECT chain_id, size, hash, note FROM audit_checkpoints ORDER BY chain_id, size",
    )
    .fetch_all(pool)
    .await?;
    for r in checkpoints {
        records.push(Record {
            kind: "checkpoint".into(),
            chain_id: Some(r.try_get("chain_id")?),
            checkpoint_size: Some(r.try_get("size")?),
            chain_hash: Some(r.try_get("hash")?),
            checkpoint_note: Some(r.try_get("note")?),
            ..Default::default()
        });
    }
    Ok(records)
}

/// The part of the log from `since` on: rows started or completed since
/// then, and in every chain, everything from the first entry they hold —
/// with a `start` record naming the hash before it, so the segment still
/// verifies against the checkpoints that follow.
pub fn since(records: Vec<Record>, since: &str) -> Vec<Record> {
    let in_range = |r: &Record| {
        r.kind == "row"
            && (r.started_at.as_deref() >= Some(since) || r.completed_at.as_deref() >= Some(since))
    };
    // Where each chain's exported segment starts.
    let mut first: HashMap<String, i64> = HashMap::new();
    let mut lower = |chain: &Option<String>, seq: Option<i64>| {
        if let (Some(chain), Some(seq)) = (chain, seq) {
            let at = first.entry(chain.clone()).or_insert(seq);
            *at = (*at).min(seq);
        }
    };
    for r in records.iter().filter(|r| in_range(r)) {
        lower(&r.chain_id, r.chain_seq);
        lower(&r.outcome_chain, r.outcome_seq);
    }
    let from = |chain: &Option<String>, seq: Option<i64>| match (chain, seq) {
        (Some(chain), Some(seq)) => first.get(chain).is_some_and(|start| seq >= *start),
        _ => false,
    };
    // The hash each segment follows: the stored hash of the entry before it.
    let mut hashes: HashMap<(String, i64), String> = HashMap::new();
    for r in &records {
        for (chain, seq, hash) in [
            (&r.chain_id, r.chain_seq, &r.chain_hash),
            (&r.outcome_chain, r.outcome_seq, &r.outcome_hash),
        ] {
            if let (Some(chain), Some(seq), Some(hash)) = (chain, seq, hash)
                && r.kind != "checkpoint"
            {
                hashes.insert((chain.clone(), seq), hash.clone());
            }
        }
    }
    let mut starts: BTreeMap<String, Record> = BTreeMap::new();
    for (chain, seq) in &first {
        let hash = if *seq == 0 {
            hex::encode(actors::audit_chain::ZERO)
        } else {
            match hashes.get(&(chain.clone(), seq - 1)) {
                Some(hash) => hash.clone(),
                // The entry before is gone (pruned, or deleted): the verifier
                // will report the segment as not reaching a known hash.
                None => continue,
            }
        };
        starts.insert(
            chain.clone(),
            Record {
                kind: "start".into(),
                chain_id: Some(chain.clone()),
                chain_seq: Some(*seq),
                chain_hash: Some(hash),
                ..Default::default()
            },
        );
    }
    let mut out: Vec<Record> = starts.into_values().collect();
    out.extend(records.into_iter().filter(|r| match r.kind.as_str() {
        "row" => from(&r.chain_id, r.chain_seq) || from(&r.outcome_chain, r.outcome_seq),
        "mark" => from(&r.chain_id, r.chain_seq),
        "checkpoint" => from(&r.chain_id, r.checkpoint_size.map(|s| s - 1)),
        _ => false,
    }));
    out
}

/// The header record of an export.
pub fn header(since: Option<&str>) -> Record {
    Record {
        kind: "header".into(),
        format: Some(FORMAT.into()),
        exported_at: Some(actors::now_rfc3339()),
        since: since.map(str::to_owned),
        ..Default::default()
    }
}

/// JSONL: one object per line, absent fields left out.
pub fn write_jsonl(out: &mut impl Write, records: &[Record]) -> std::io::Result<()> {
    for record in records {
        let Value::Object(fields) = serde_json::to_value(record)? else {
            unreachable!("a struct serializes to an object")
        };
        let fields: Map<String, Value> = fields.into_iter().filter(|(_, v)| !v.is_null()).collect();
        serde_json::to_writer(&mut *out, &fields)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// CSV: one column per field. An empty cell is an absent value (so an
/// empty text and no text read back alike; the verifier allows for it).
pub fn write_csv(out: impl Write, records: &[Record]) -> Result<(), csv::Error> {
    let mut writer = csv::Writer::from_writer(out);
    for record in records {
        writer.serialize(record)?;
    }
    writer.flush()?;
    Ok(())
}

/// How an export was written: CSV's empty cells lose the difference between
/// empty and absent text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Jsonl,
    Csv,
}

/// Read an export, JSONL or CSV (told apart by its first byte).
pub fn read(input: impl BufRead) -> Result<(Vec<Record>, Encoding), String> {
    let mut input = input;
    let starts_with_brace = input
        .fill_buf()
        .map_err(|e| e.to_string())?
        .first()
        .is_some_and(|b| *b == b'{');
    let (records, encoding) = if starts_with_brace {
        let mut records = Vec::new();
        for (n, line) in input.lines().enumerate() {
            let line = line.map_err(|e| format!("line {}: {e}", n + 1))?;
            if line.trim().is_empty() {
                continue;
            }
            let record: Record =
                serde_json::from_str(&line).map_err(|e| format!("line {}: {e}", n + 1))?;
            records.push(record);
        }
        (records, Encoding::Jsonl)
    } else {
        let mut reader = csv::Reader::from_reader(input);
        let mut records = Vec::new();
        for (n, record) in reader.deserialize().enumerate() {
            records.push(record.map_err(|e| format!("record {}: {e}", n + 1))?);
        }
        (records, Encoding::Csv)
    };
    match records.first() {
        Some(first) if first.kind == "header" && first.format.as_deref() == Some(FORMAT) => {
            Ok((records, encoding))
        }
        _ => Err(format!(
            "not an mcpgate audit export: the first record must be a header of format {FORMAT}"
        )),
    }
}
