use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How a supervisor restarts failed children and when it gives up.
#[derive(Debug, Clone)]
pub struct RestartPolicy {
    /// Delay before the first restart of a child that just failed.
    pub initial_backoff: Duration,
    /// Upper bound of the exponentially growing delay.
    pub max_backoff: Duration,
    /// More than this many restarts inside `window` escalates the failure.
    pub max_restarts: u32,
    pub window: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            max_restarts: 10,
            window: Duration::from_secs(60),
        }
    }
}

impl RestartPolicy {
    /// Delay before restart number `consecutive_failures` (1-based) of one child.
    pub fn backoff(&self, consecutive_failures: u32) -> Duration {
        let exponent = consecutive_failures.saturating_sub(1).min(20);
        self.initial_backoff
            .saturating_mul(1u32 << exponent)
            .min(self.max_backoff)
    }
}

/// Sliding window of restart instants, shared by all children of one supervisor.
#[derive(Debug, Default)]
pub(crate) struct Intensity {
    restarts: VecDeque<Instant>,
}

impl Intensity {
    /// Records one restart; returns false when the limit is exceeded.
    pub(crate) fn admit(&mut self, policy: &RestartPolicy, now: Instant) -> bool {
        while let Some(first) = self.restarts.front() {
            if now.duration_since(*first) > policy.window {
                self.restarts.pop_front();
            } else {
                break;
            }
        }
        self.restarts.push_back(now);
        self.restarts.len() as u32 <= policy.max_restarts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let policy = RestartPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(700),
            ..Default::default()
        };
        assert_eq!(policy.backoff(1), Duration::from_millis(100));
        assert_eq!(policy.backoff(2), Duration::from_millis(200));
        assert_eq!(policy.backoff(3), Duration::from_millis(400));
        assert_eq!(policy.backoff(4), Duration::from_millis(700));
        assert_eq!(policy.backoff(60), Duration::from_millis(700));
    }

    #[test]
    fn intensity_limit_counts_only_inside_window() {
        let policy = RestartPolicy {
            max_restarts: 2,
            window: Duration::from_secs(10),
            ..Default::default()
        };
        let mut intensity = Intensity::default();
        let t0 = Instant::now();
        assert!(intensity.admit(&policy, t0));
        assert!(intensity.admit(&policy, t0 + Duration::from_secs(1)));
        assert!(!intensity.admit(&policy, t0 + Duration::from_secs(2)));
        // Far later, the old restarts have left the window.
        let mut fresh = Intensity::default();
        assert!(fresh.admit(&policy, t0));
        assert!(fresh.admit(&policy, t0 + Duration::from_secs(20)));
        assert!(fresh.admit(&policy, t0 + Duration::from_secs(40)));
    }
}
