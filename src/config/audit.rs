//! The `audit:` section: how the log is signed and how long it is kept.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Names this log in its signed checkpoints (`<origin>/audit/<chain>`)
    /// and its key (`<origin>/audit`); a host name is a good choice.
    #[serde(default = "default_origin")]
    pub origin: String,
    /// Sign the chain's head at least every this many entries…
    #[serde(default = "default_every")]
    pub checkpoint_every: i64,
    /// …and within this long of the first unsigned one.
    #[serde(default = "default_interval", deserialize_with = "super::duration_de")]
    pub checkpoint_interval: Duration,
    /// Remove rows older than this (at a checkpoint, so what remains still
    /// verifies). Unset: keep everything.
    #[serde(default, deserialize_with = "optional_duration")]
    pub retention: Option<Duration>,
    /// How often retention looks for rows to remove.
    #[serde(
        default = "default_retention_check",
        deserialize_with = "super::duration_de"
    )]
    pub retention_check: Duration,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            origin: default_origin(),
            checkpoint_every: default_every(),
            checkpoint_interval: default_interval(),
            retention: None,
            retention_check: default_retention_check(),
        }
    }
}

impl AuditConfig {
    /// The name of the checkpoint signing key.
    pub fn key_name(&self) -> String {
        format!("{}/audit", self.origin)
    }
}

fn default_origin() -> String {
    "mcpgate".into()
}

fn default_every() -> i64 {
    1024
}

fn default_interval() -> Duration {
    Duration::from_secs(5)
}

fn default_retention_check() -> Duration {
    Duration::from_secs(3600)
}

fn optional_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    super::duration_de(d).map(Some)
}
