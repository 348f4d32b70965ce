//! A circuit breaker per native service: after `failures` consecutive
//! failures (5xx, unreachable) calls are refused at once for `cool_down`,
//! then one trial call decides whether the service is back.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open { retry_in: Duration },
    HalfOpen,
}

#[derive(Debug)]
struct Inner {
    consecutive_failures: u32,
    opened_at: Option<Instant>,
    trial_in_flight: bool,
}

#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cool_down: Duration,
    inner: Mutex<Inner>,
}

/// The breaker refused a call: it is open for this long still.
#[derive(Debug, Clone, Copy)]
pub struct Refused {
    pub retry_in: Duration,
}

impl Breaker {
    pub fn new(threshold: u32, cool_down: Duration) -> Breaker {
        Breaker {
            threshold: threshold.max(1),
            cool_down,
            inner: Mutex::new(Inner {
                consecutive_failures: 0,
                opened_at: None,
                trial_in_flight: false,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic elsewhere cannot leave this state inconsistent: recover it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// May a call go out now? After the cool-down exactly one trial does.
    pub fn admit(&self) -> Result<(), Refused> {
        let mut inner = self.lock();
        let Some(opened_at) = inner.opened_at else {
            return Ok(());
        };
        let elapsed = opened_at.elapsed();
        if elapsed < self.cool_down {
            return Err(Refused {
                retry_in: self.cool_down - elapsed,
            });
        }
        if inner.trial_in_flight {
            return Err(Refused {
                retry_in: Duration::from_secs(1),
            });
        }
        inner.trial_in_flight = true;
        Ok(())
    }

    /// The outcome of an admitted call. Returns true when this changed the
    /// breaker's state (so the caller republishes it).
    pub fn record(&self, success: bool) -> bool {
        let mut inner = self.lock();
        let was_open = inner.opened_at.is_some();
        inner.trial_in_flight = false;
        if success {
            inner.consecutive_failures = 0;
            inner.opened_at = None;
            return was_open;
        }
        inner.consecutive_failures = inner.consecutive_failures.saturating_add(1);
        if was_open || inner.consecutive_failures >= self.threshold {
            // A failed trial opens it for another full cool-down.
            inner.opened_at = Some(Instant::now());
            return true;
        }
        false
    }

    pub fn state(&self) -> BreakerState {
        let inner = self.lock();
        match inner.opened_at {
            None => BreakerState::Closed,
            Some(at) if at.elapsed() < self.cool_down => BreakerState::Open {
                retry_in: self.cool_down - at.elapsed(),
            },
            Some(_) => BreakerState::HalfOpen,
        }
    }

    /// How `/health` shows it: `None` while closed.
    pub fn describe(&self) -> Option<String> {
        let failures = self.lock().consecutive_failures;
        match self.state() {
            BreakerState::Closed => None,
            BreakerState::Open { retry_in } => Some(format!(
                "open after {failures} consecutive failures; next trial in {}s",
                retry_in.as_secs().max(1)
            )),
            BreakerState::HalfOpen => Some("half_open: the next call is a trial".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_and_one_trial_closes_it() {
        let breaker = Breaker::new(3, Duration::from_millis(50));
        for _ in 0..2 {
            breaker.admit().unwrap();
            assert!(!breaker.record(false));
        }
        breaker.admit().unwrap();
        assert!(breaker.record(false));
        assert!(matches!(breaker.state(), BreakerState::Open { .. }));
        assert!(breaker.admit().is_err());
        assert!(
            breaker
                .describe()
                .unwrap()
                .contains("3 consecutive failures")
        );
        std::thread::sleep(Duration::from_millis(60));
        breaker.admit().unwrap();
        // Only one trial at a time.
        assert!(breaker.admit().is_err());
        assert!(breaker.record(true));
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert!(breaker.describe().is_none());
    }

    #[test]
    fn a_failed_trial_reopens_for_a_full_cool_down() {
        let breaker = Breaker::new(1, Duration::from_millis(40));
        breaker.admit().unwrap();
        breaker.record(false);
        std::thread::sleep(Duration::from_millis(50));
        breaker.admit().unwrap();
        breaker.record(false);
        assert!(matches!(breaker.state(), BreakerState::Open { .. }));
        // Success before the threshold resets the count.
        let breaker = Breaker::new(2, Duration::from_secs(5));
        breaker.record(false);
        breaker.record(true);
        breaker.record(false);
        assert_eq!(breaker.state(), BreakerState::Closed);
    }
}
