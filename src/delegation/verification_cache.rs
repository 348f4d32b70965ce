//! Windmill's recent verdicts on job tokens, so a job that exchanges again
//! within `delegation.verification_cache` is not verified twice.
//!
//! Expired entries are never served; they are swept at most once per
//! `max_age`, not on every miss: a sweep visits every entry, and at 10,000
//! jobs a minute a sweep per exchange was 10,000 visits under the map's
//! shard locks for each of them.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use sha2::{Digest, Sha256};

use super::windmill::VerifiedJob;

pub struct VerificationCache {
    entries: DashMap<[u8; 32], (VerifiedJob, Instant)>,
    last_sweep: Mutex<Instant>,
}

impl Default for VerificationCache {
    fn default() -> Self {
        Self {
            entries: DashMap::new(),
            last_sweep: Mutex::new(Instant::now()),
        }
    }
}

impl VerificationCache {
    /// The key of one claim: every part Windmill's verdict depends on,
    /// the job token among them (only its digest is kept).
    pub fn key(parts: &[&str]) -> [u8; 32] {
        let mut hasher = Sha256::new();
        for part in parts {
            hasher.update(part.as_bytes());
            hasher.update([0]);
        }
        hasher.finalize().into()
    }

    /// A verdict younger than `max_age`, if there is one.
    pub fn get(&self, key: &[u8; 32], max_age: Duration) -> Option<VerifiedJob> {
        let entry = self.entries.get(key)?;
        (entry.1.elapsed() < max_age).then(|| entry.0.clone())
    }

    /// Remember a verdict; sweep out expired ones if the last sweep is
    /// `max_age` old.
    pub fn insert(&self, key: [u8; 32], verified: VerifiedJob, max_age: Duration) {
        self.entries.insert(key, (verified, Instant::now()));
        let due = match self.last_sweep.try_lock() {
            Ok(mut last) if last.elapsed() >= max_age => {
                *last = Instant::now();
                true
            }
            // Not due, or another exchange is sweeping right now.
            _ => false,
        };
        if due {
            self.entries.retain(|_, (_, at)| at.elapsed() < max_age);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str) -> VerifiedJob {
        VerifiedJob {
            owner_email: "alice@example.com".into(),
            owner_username: "alice".into(),
            flow_path: "f/finance/nightly".into(),
            job_id: id.into(),
            flow_job_id: None,
            token_expires_at: 0,
        }
    }

    #[test]
    fn a_verdict_is_served_until_it_expires_and_swept_only_when_a_sweep_is_due() {
        let cache = VerificationCache::default();
        let max_age = Duration::from_millis(200);
        let a = VerificationCache::key(&["dev", "ws", "job-a", "-", "jwt_a"]);
        let b = VerificationCache::key(&["dev", "ws", "job-b", "-", "jwt_b"]);
        assert_ne!(a, b, "the token is part of the key");
        cache.insert(a, job("job-a"), max_age);
        assert_eq!(cache.get(&a, max_age).unwrap().job_id, "job-a");
        assert!(cache.get(&b, max_age).is_none());

        std::thread::sleep(max_age + Duration::from_millis(20));
        // Expired: never served, though it stays until the next sweep.
        assert!(cache.get(&a, max_age).is_none());
        // This insert is the first after `max_age`: it sweeps `a` out.
        cache.insert(b, job("job-b"), max_age);
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.get(&b, max_age).unwrap().job_id, "job-b");

        // The next insert is not due a sweep: nothing else is visited.
        let c = VerificationCache::key(&["dev", "ws", "job-c", "-", "jwt_c"]);
        cache.insert(c, job("job-c"), max_age);
        assert_eq!(cache.len(), 2);
    }
}
