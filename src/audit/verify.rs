//! Verifying the audit log (`mcpgate audit verify`): every chain is walked
//! from its start, each entry's hash recomputed, the result compared with
//! the signed checkpoints and with what later chains' geneses witnessed; and
//! every row is compared with the entries that commit to it. What is found
//! names the row: modified, deleted, inserted, reordered, truncated.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use actors::audit_chain::{self, GenesisEntry, Head, PruneEntry, VerifierKey};
use serde_json::{Map, Value};

use super::records::{COLUMNS, Encoding, Record};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Modified,
    Deleted,
    Inserted,
    Reordered,
    Truncated,
    Forged,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Modified => "modified",
            Kind::Deleted => "deleted",
            Kind::Inserted => "inserted",
            Kind::Reordered => "reordered",
            Kind::Truncated => "truncated",
            Kind::Forged => "forged",
        }
    }
}

/// A place where the log breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub kind: Kind,
    /// Where in the log, by row id: the row concerned, or the last intact
    /// row before a gap (findings are sorted by it).
    pub at: i64,
    /// What is wrong, naming the row(s).
    pub what: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.what)
    }
}

#[derive(Debug, Default)]
pub struct Report {
    pub rows: usize,
    pub chains: usize,
    /// Entries covered by a valid checkpoint (or a later genesis's witness).
    pub signed_entries: i64,
    /// The newest entries, not yet signed (they are signed within
    /// `audit.checkpoint_interval` while the gateway runs).
    pub unsigned_entries: i64,
    /// Breaks, the first (by row) first.
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn intact(&self) -> bool {
        self.findings.is_empty()
    }
}

/// Where an entry is kept.
#[derive(Debug, Clone, Copy)]
enum Place {
    Decision { row: i64 },
    Outcome { row: i64 },
    Mark,
}

struct Leaf<'a> {
    entry: &'a str,
    hash: &'a str,
    place: Place,
    mark_kind: Option<&'a str>,
}

impl Leaf<'_> {
    fn row(&self) -> Option<i64> {
        match self.place {
            Place::Decision { row } | Place::Outcome { row } => Some(row),
            Place::Mark => None,
        }
    }
}

#[derive(Default)]
struct Chain<'a> {
    leaves: BTreeMap<i64, Vec<Leaf<'a>>>,
    /// Signed (size → head hash), from notes that opened.
    checkpoints: BTreeMap<i64, [u8; 32]>,
    /// Where the chain starts (retention or a range export): (seq, hash before it).
    start: Option<(i64, [u8; 32])>,
    /// Heads later geneses witnessed: (size, hash).
    witnessed: Vec<(i64, String)>,
}

/// Check `records` (from the store or an export) with the checkpoint keys
/// `keys` (the current key, and earlier ones after a rotation).
pub fn verify(records: &[Record], keys: &[VerifierKey], encoding: Encoding) -> Report {
    let mut report = Report::default();
    let mut chains: BTreeMap<&str, Chain> = BTreeMap::new();
    let range_export = records
        .iter()
        .any(|r| r.kind == "header" && r.since.is_some());

    for r in records {
        match r.kind.as_str() {
            "row" => {
                report.rows += 1;
                let row = r.id.unwrap_or_default();
                add_leaf(
                    &mut chains,
                    (&r.chain_id, r.chain_seq, &r.chain_entry, &r.chain_hash),
                    Place::Decision { row },
                    None,
                );
                add_leaf(
                    &mut chains,
                    (
                        &r.outcome_chain,
                        r.outcome_seq,
                        &r.outcome_entry,
                        &r.outcome_hash,
                    ),
                    Place::Outcome { row },
                    None,
                );
            }
            "mark" => add_leaf(
                &mut chains,
                (&r.chain_id, r.chain_seq, &r.chain_entry, &r.chain_hash),
                Place::Mark,
                r.mark_kind.as_deref(),
            ),
            "checkpoint" => {
                let (Some(chain), Some(note)) = (&r.chain_id, &r.checkpoint_note) else {
                    continue;
                };
                let opened = keys.iter().find_map(|key| {
                    key.open(note)
                        .filter(|c| c.origin == format!("{}/{chain}", key.name()))
                });
                match opened {
                    Some(checkpoint) => {
                        chains
                            .entry(chain)
                            .or_default()
                            .checkpoints
                            .insert(checkpoint.size, checkpoint.hash);
                    }
                    None => report.findings.push(Finding {
                        kind: Kind::Forged,
                        at: 0,
                        what: format!(
                            "checkpoint of chain {chain} at {} does not check with the key(s) given",
                            r.checkpoint_size.unwrap_or_default()
                        ),
                    }),
                }
            }
            "start" => {
                if let (Some(chain), Some(seq), Some(hash)) = (
                    &r.chain_id,
                    r.chain_seq,
                    r.chain_hash.as_deref().and_then(audit_chain::parse_hash),
                ) {
                    chains.entry(chain).or_default().start = Some((seq, hash));
                }
            }
            _ => {}
        }
    }

    // What the marks say about other chains: where retention made them start,
    // and the heads each genesis witnessed.
    let mut starts: Vec<(String, i64, [u8; 32])> = Vec::new();
    let mut witnesses: Vec<Head> = Vec::new();
    for chain in chains.values() {
        for leaf in chain.leaves.values().flatten() {
            match leaf.mark_kind {
                Some("prune") => {
                    if let Ok(prune) = serde_json::from_str::<PruneEntry>(leaf.entry)
                        && let Some(hash) = audit_chain::parse_hash(&prune.hash)
                    {
                        starts.push((prune.chain, prune.size, hash));
                    }
                }
                Some("genesis") => {
                    if let Ok(genesis) = serde_json::from_str::<GenesisEntry>(leaf.entry) {
                        witnesses.extend(genesis.witness);
                    }
                }
                _ => {}
            }
        }
    }
    for (chain, size, hash) in starts {
        if let Some(c) = chains.get_mut(chain.as_str())
            && c.start.is_none_or(|(at, _)| at < size)
            && !range_export
        {
            c.start = Some((size, hash));
        }
    }
    for head in witnesses {
        match chains.get_mut(head.chain.as_str()) {
            Some(c) => c.witnessed.push((head.size, head.hash)),
            None if range_export => {}
            None => report.findings.push(Finding {
                kind: Kind::Deleted,
                at: 0,
                what: format!(
                    "chain {} ({} entries, witnessed by a later chain) is gone from the log",
                    head.chain, head.size
                ),
            }),
        }
    }

    report.chains = chains.len();
    for (id, chain) in &chains {
        walk(id, chain, &mut report);
    }
    check_rows(records, &chains, encoding, &mut report);
    report.findings.sort_by_key(|f| (f.at, f.kind));
    report.findings.dedup();
    report
}

/// A record's entry, placed in its chain (when the record holds all of
/// chain, sequence number, entry and hash).
type EntryParts<'a> = (
    &'a Option<String>,
    Option<i64>,
    &'a Option<String>,
    &'a Option<String>,
);

fn add_leaf<'a>(
    chains: &mut BTreeMap<&'a str, Chain<'a>>,
    parts: EntryParts<'a>,
    place: Place,
    mark_kind: Option<&'a str>,
) {
    if let (Some(chain), Some(seq), Some(entry), Some(hash)) = parts {
        chains
            .entry(chain)
            .or_default()
            .leaves
            .entry(seq)
            .or_default()
            .push(Leaf {
                entry,
                hash,
                place,
                mark_kind,
            });
    }
}

/// Walk one chain from its start: recompute every hash, find gaps and
/// duplicates, and compare with checkpoints and witnessed heads. Reports the
/// chain's first break.
fn walk(id: &str, chain: &Chain, report: &mut Report) {
    let (start, mut hash) = chain.start.unwrap_or((0, audit_chain::ZERO));
    let present_end = chain
        .leaves
        .keys()
        .next_back()
        .map_or(start, |last| last + 1);
    let signed_end = chain.checkpoints.keys().next_back().copied().unwrap_or(0);
    let witnessed_end = chain
        .witnessed
        .iter()
        .map(|(size, _)| *size)
        .max()
        .unwrap_or(0);
    let end = present_end.max(signed_end).max(witnessed_end);
    let witnessed: HashMap<i64, &str> = chain
        .witnessed
        .iter()
        .map(|(size, hash)| (*size, hash.as_str()))
        .collect();
    // A start named by a prune mark or an export is trusted once the walk
    // from it meets a checkpoint; one signed at the start itself must agree.
    if let Some(signed) = chain.checkpoints.get(&start)
        && start > 0
        && *signed != hash
    {
        report.findings.push(Finding {
            kind: Kind::Modified,
            at: 0,
            what: format!(
                "chain {id} starts at {start} from a hash its checkpoint there does not sign"
            ),
        });
        return;
    }
    // The last row seen, to place a break that has no row of its own.
    let mut last_row: Option<i64> = None;
    let mut last_signed = start;
    for seq in start..end {
        let Some(leaves) = chain.leaves.get(&seq) else {
            let after =
                last_row.map_or("at the chain's start".into(), |r| format!("after row {r}"));
            let what = if seq >= present_end {
                Finding {
                    kind: Kind::Truncated,
                    at: last_row.unwrap_or(0),
                    what: format!(
                        "chain {id} was signed or witnessed up to {end} entries but ends at {present_end}: \
                         the rows {after} are gone"
                    ),
                }
            } else {
                let next_row = chain
                    .leaves
                    .range(seq + 1..)
                    .flat_map(|(_, l)| l)
                    .find_map(Leaf::row)
                    .map_or(String::new(), |r| format!(", before row {r}"));
                Finding {
                    kind: Kind::Deleted,
                    at: last_row.unwrap_or(0),
                    what: format!(
                        "chain {id} has no entry {seq} ({after}{next_row}): a row or mark was removed"
                    ),
                }
            };
            report.findings.push(what);
            return;
        };
        let leaf = match leaves.as_slice() {
            [leaf] => leaf,
            several => {
                // Two entries claim one place: the one that does not chain is inserted.
                let chains_on =
                    |l: &Leaf| hex::encode(audit_chain::next_hash(&hash, l.entry)) == l.hash;
                let genuine: Vec<&Leaf> = several.iter().filter(|l| chains_on(l)).collect();
                let named: Vec<&Leaf> = if genuine.len() == 1 {
                    several.iter().filter(|l| !chains_on(l)).collect()
                } else {
                    several.iter().collect()
                };
                for l in named {
                    report.findings.push(Finding {
                        kind: Kind::Inserted,
                        at: l.row().or(last_row).unwrap_or(0),
                        what: format!(
                            "{} claims chain {id}'s entry {seq}, which another record holds",
                            l.row().map_or("a mark".into(), |r| format!("row {r}"))
                        ),
                    });
                }
                match genuine.as_slice() {
                    [one] => *one,
                    _ => return,
                }
            }
        };
        let computed = audit_chain::next_hash(&hash, leaf.entry);
        if hex::encode(computed) != leaf.hash {
            report.findings.push(Finding {
                kind: Kind::Modified,
                at: leaf.row().or(last_row).unwrap_or(0),
                what: format!(
                    "{}: chain {id}'s entry {seq} ({}) does not hash to what is stored",
                    leaf.row().map_or("a mark".into(), |r| format!("row {r}")),
                    describe(leaf)
                ),
            });
            return;
        }
        hash = computed;
        if let Some(row) = leaf.row() {
            last_row = Some(row);
        }
        let size = seq + 1;
        if let Some(signed) = chain.checkpoints.get(&size)
            && *signed != hash
        {
            report.findings.push(Finding {
                kind: Kind::Modified,
                at: last_row.unwrap_or(0),
                what: format!(
                    "chain {id} differs from its checkpoint at {size}: an entry between {last_signed} \
                     and {size} (up to row {}) was changed and the hashes after it recomputed",
                    last_row.unwrap_or(0)
                ),
            });
            return;
        }
        if let Some(witness) = witnessed.get(&size)
            && *witness != hex::encode(hash)
        {
            report.findings.push(Finding {
                kind: Kind::Modified,
                at: last_row.unwrap_or(0),
                what: format!(
                    "chain {id} differs at {size} (up to row {}) from the head a later chain witnessed",
                    last_row.unwrap_or(0)
                ),
            });
            return;
        }
        if chain.checkpoints.contains_key(&size) || witnessed.contains_key(&size) {
            last_signed = size;
        }
    }
    report.signed_entries += last_signed - start;
    report.unsigned_entries += end - last_signed;
}

fn describe(leaf: &Leaf) -> String {
    match (leaf.place, leaf.mark_kind) {
        (Place::Decision { .. }, _) => "a call's decision".into(),
        (Place::Outcome { .. }, _) => "a call's outcome".into(),
        (Place::Mark, Some(kind)) => format!("a {kind} mark"),
        (Place::Mark, None) => "a mark".into(),
    }
}

/// Every row against its entries: it must have a decision entry, its columns
/// must be what its entries say, and within a chain rows keep entry order.
fn check_rows(
    records: &[Record],
    chains: &BTreeMap<&str, Chain>,
    encoding: Encoding,
    report: &mut Report,
) {
    let mut order: BTreeMap<&str, Vec<(i64, i64)>> = BTreeMap::new();
    for r in records.iter().filter(|r| r.kind == "row") {
        let row = r.id.unwrap_or_default();
        let (Some(chain), Some(seq), Some(entry)) = (&r.chain_id, r.chain_seq, &r.chain_entry)
        else {
            report.findings.push(Finding {
                kind: Kind::Inserted,
                at: row,
                what: format!(
                    "row {row} (call {}) has no chain entry: the gateway did not write it",
                    r.call_id.as_deref().unwrap_or("?")
                ),
            });
            continue;
        };
        // Rows below a chain's start (kept by retention beside pruned ones)
        // are still held to their entries, not to the order.
        if chains
            .get(chain.as_str())
            .and_then(|c| c.start)
            .is_none_or(|(start, _)| seq >= start)
        {
            order.entry(chain).or_default().push((seq, row));
        }
        match fold(entry, r.outcome_entry.as_deref()) {
            Ok(expected) => {
                let stored = r.columns();
                if let Some(field) = COLUMNS
                    .iter()
                    .find(|name| !same(stored.get(**name), expected.get(**name), encoding))
                {
                    report.findings.push(Finding {
                        kind: Kind::Modified,
                        at: row,
                        what: format!(
                            "row {row}: {field} is {}, its chain entries say {}",
                            show(stored.get(*field)),
                            show(expected.get(*field))
                        ),
                    });
                }
            }
            Err(e) => report.findings.push(Finding {
                kind: Kind::Modified,
                at: row,
                what: format!("row {row}: {e}"),
            }),
        }
    }
    for (chain, mut rows) in order {
        rows.sort_unstable();
        for pair in rows.windows(2) {
            let ((seq_a, row_a), (seq_b, row_b)) = (pair[0], pair[1]);
            if row_b < row_a {
                report.findings.push(Finding {
                    kind: Kind::Reordered,
                    at: row_b,
                    what: format!(
                        "row {row_b} holds chain {chain}'s entry {seq_b}, written after row {row_a}'s entry {seq_a}: \
                         rows {row_b} and {row_a} were swapped or moved"
                    ),
                });
            }
        }
    }
}

/// The columns a row must have, from its decision (or adopted) entry and
/// its outcome entry.
fn fold(decision: &str, outcome: Option<&str>) -> Result<Map<String, Value>, String> {
    let Ok(Value::Object(mut row)) = serde_json::from_str::<Value>(decision) else {
        return Err("its decision entry is not an entry".into());
    };
    match row.get("kind").and_then(Value::as_str) {
        Some("decision") => {
            row.insert("upstream_status".into(), Value::Null);
            row.insert("latency_ms".into(), Value::Null);
        }
        Some("adopted") => {}
        _ => return Err("its decision entry is of no known kind".into()),
    }
    if let Some(outcome) = outcome {
        let Ok(Value::Object(outcome)) = serde_json::from_str::<Value>(outcome) else {
            return Err("its outcome entry is not an entry".into());
        };
        if outcome.get("kind").and_then(Value::as_str) != Some("outcome")
            || outcome.get("call_id") != row.get("call_id")
        {
            return Err("its outcome entry belongs to another call".into());
        }
        for (name, value) in outcome {
            match name.as_str() {
                "kind" | "call_id" => {}
                // The row keeps the decision's reason unless the outcome gives one.
                "reason_code" | "reason" if value.is_null() => {}
                _ => {
                    row.insert(name, value);
                }
            }
        }
    }
    Ok(row)
}

fn same(stored: Option<&Value>, expected: Option<&Value>, encoding: Encoding) -> bool {
    let absent = |v: Option<&Value>| match v {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => encoding == Encoding::Csv && s.is_empty(),
        _ => false,
    };
    match (stored, expected) {
        (a, b) if absent(a) && absent(b) => true,
        (Some(Value::Number(a)), Some(Value::Number(b))) => a.as_f64() == b.as_f64(),
        (a, b) => a == b,
    }
}

fn show(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "empty".into(),
        Some(v) => v.to_string(),
    }
}
