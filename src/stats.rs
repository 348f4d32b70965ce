//! Counters shown on `/health` and `/metrics`.

use std::sync::atomic::AtomicU64;

#[derive(Debug, Default)]
pub struct Stats {
    pub allowed: AtomicU64,
    pub refused: AtomicU64,
    pub failed: AtomicU64,
    pub actor_restarts: AtomicU64,
    pub actor_failures: AtomicU64,
}
