//! Graceful shutdown: calls in flight are counted, and once draining starts
//! no new call is admitted; shutdown waits for the count to reach zero.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

#[derive(Debug, Default)]
pub struct Drain {
    count: AtomicUsize,
    idle: Notify,
    draining: AtomicBool,
}

/// Held while a request is in flight; dropping it may wake a waiting shutdown.
pub struct InFlightGuard(Arc<Drain>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Drain {
    pub fn enter(self: &Arc<Self>) -> InFlightGuard {
        self.count.fetch_add(1, Ordering::AcqRel);
        InFlightGuard(self.clone())
    }

    pub fn current(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Stop admitting calls.
    pub fn begin(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Wait until no call is in flight, or `limit` passes. Returns what is left.
    pub async fn drained(&self, limit: Duration) -> usize {
        let wait = async {
            loop {
                let notified = self.idle.notified();
                if self.current() == 0 {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(limit, wait).await;
        self.current()
    }
}
