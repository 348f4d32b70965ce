//! Counters shown on `/health` and `/metrics`.
//!
//! [`CallMetrics`] counts every tool call once, by its labels, with its
//! duration in a histogram: one `DashMap` entry of atomic cells per label
//! set, so recording takes one shard's lock for a lookup and then only
//! atomic adds — no lock is shared by all calls.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;

#[derive(Debug, Default)]
pub struct Stats {
    pub allowed: AtomicU64,
    pub refused: AtomicU64,
    pub failed: AtomicU64,
    pub actor_restarts: AtomicU64,
    pub actor_failures: AtomicU64,
    /// Every tool call, by service, action, decision and reason.
    pub calls: CallMetrics,
}

/// Upper bounds (seconds) of the call duration histogram's buckets.
pub const DURATION_BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The labels of one call series. `service` and `action` come from the
/// configuration and the catalogs (never from unchecked input, which would
/// let a caller create series at will); `reason` is a refusal reason's
/// stable code, empty for an allowed call.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallLabels {
    pub service: String,
    pub action: String,
    pub decision: &'static str,
    pub reason: &'static str,
}

/// The atomic cells of one label set.
#[derive(Debug, Default)]
struct CallCell {
    /// Calls per bucket (not cumulative); the last slot is above every bound.
    buckets: [AtomicU64; DURATION_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

/// What one label set counted, read at a scrape.
#[derive(Debug, Clone, PartialEq)]
pub struct CallCounts {
    pub count: u64,
    /// Cumulative counts: calls that took at most `DURATION_BUCKETS[i]`.
    pub cumulative: [u64; DURATION_BUCKETS.len()],
    pub sum_seconds: f64,
}

impl CallCounts {
    /// Add `other`'s counts (another label set merged into one series).
    pub fn add(&mut self, other: &CallCounts) {
        self.count += other.count;
        for (sum, add) in self.cumulative.iter_mut().zip(other.cumulative) {
            *sum += add;
        }
        self.sum_seconds += other.sum_seconds;
    }
}

#[derive(Debug, Default)]
pub struct CallMetrics {
    cells: DashMap<CallLabels, CallCell>,
}

impl CallMetrics {
    /// Count one call that ended as `labels` say after `took`.
    pub fn record(&self, labels: CallLabels, took: Duration) {
        let seconds = took.as_secs_f64();
        let slot = DURATION_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(DURATION_BUCKETS.len());
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let add = |cell: &CallCell| {
            cell.buckets[slot].fetch_add(1, Ordering::Relaxed);
            cell.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        };
        // The common case, a label set seen before, takes a read lock only.
        if let Some(cell) = self.cells.get(&labels) {
            add(&cell);
            return;
        }
        add(&self.cells.entry(labels).or_default());
    }

    /// Every label set and its counts, sorted by labels.
    pub fn snapshot(&self) -> Vec<(CallLabels, CallCounts)> {
        let mut out: Vec<(CallLabels, CallCounts)> = self
            .cells
            .iter()
            .map(|entry| {
                let cell = entry.value();
                let mut cumulative = [0; DURATION_BUCKETS.len()];
                let mut count = 0;
                for (i, bucket) in cell.buckets.iter().enumerate() {
                    count += bucket.load(Ordering::Relaxed);
                    if let Some(slot) = cumulative.get_mut(i) {
                        *slot = count;
                    }
                }
                let counts = CallCounts {
                    count,
                    cumulative,
                    sum_seconds: cell.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
                };
                (entry.key().clone(), counts)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(decision: &'static str, reason: &'static str) -> CallLabels {
        CallLabels {
            service: "jira".into(),
            action: "search".into(),
            decision,
            reason,
        }
    }

    #[test]
    fn a_call_lands_in_its_bucket_and_every_bucket_above() {
        let metrics = CallMetrics::default();
        metrics.record(labels("allowed", ""), Duration::from_millis(30));
        metrics.record(labels("allowed", ""), Duration::from_secs(60));
        metrics.record(
            labels("refused", "risk_not_granted"),
            Duration::from_micros(10),
        );
        let snapshot = metrics.snapshot();
        assert_eq!(snapshot.len(), 2);
        let (_, allowed) = &snapshot[0];
        assert_eq!(allowed.count, 2);
        // 30 ms: above 0.025, within 0.05; 60 s: above every bound.
        assert_eq!(allowed.cumulative, [0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1]);
        assert!((allowed.sum_seconds - 60.03).abs() < 1e-9);
        let (refused_labels, refused) = &snapshot[1];
        assert_eq!(refused_labels.reason, "risk_not_granted");
        assert_eq!(refused.cumulative, [1; 12]);
    }
}
