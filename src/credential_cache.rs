//! Verified credentials kept in memory, so `/mcp` checks a known token
//! without a store round trip, and a revoked one is still refused on the
//! very next request.
//!
//! Every revocation of a token or sign-in — by this gateway, the CLI, or any
//! other process on the store — ends with [`announce_revocation`]; each
//! gateway's [`RevocationWatch`] turns announcements into a new generation,
//! and a cache trusts only entries verified in the current one.
//!
//! - SQLite: the announcement replaces a marker file beside the database
//!   (`mcpgate.db-revocations`); each check `stat`s it (a microsecond, no
//!   store round trip).
//! - PostgreSQL: the announcement bumps a store-wide epoch and notifies
//!   every replica (`mcpgate_credentials`); each replica forgets what it
//!   held, then acknowledges the epoch in `credential_caches`. The revocation
//!   returns only once every replica that may be trusting its cache has
//!   acknowledged (a stopping gateway leaves the table; one that died is
//!   waited for at most [`TRUST`] plus a margin, after which it trusts nothing). A replica trusts its cache only for [`TRUST`] after its
//!   last acknowledgement reached the store, so one cut off from the store
//!   (and so from notifications) falls back to reading it — or refusing.
//!
//! An entry read from the store is kept only if no revocation was announced
//! while it was being read, and never longer than [`MAX_AGE`]: the bound on a
//! revocation whose process died between its commit and its announcement.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::storage::{self, Backend, Db};

/// The longest a remembered credential is trusted without reading the store.
pub const MAX_AGE: Duration = Duration::from_secs(30);
/// Past this many entries nothing new is remembered until the next
/// revocation or restart: memory stays bounded under a flood of tokens.
pub const MAX_ENTRIES: usize = 100_000;
/// PostgreSQL: how long after its last acknowledgement a replica trusts its
/// cache, how often it acknowledges, and how long a revocation waits for a
/// replica whose last acknowledgement is recent (older ones trust nothing).
pub const TRUST: Duration = Duration::from_secs(6);
const HEARTBEAT: Duration = Duration::from_secs(2);
/// A replica trusts its cache until `TRUST` after reading the epoch it then
/// acknowledged (`seen_at`, in the store's clock, is later than that read),
/// so one silent for longer than this trusts nothing; 2 s of margin.
const FRESH_SECS: i64 = 8;
/// The channel on which PostgreSQL tells every replica that a credential ended.
pub const CREDENTIALS_CHANNEL: &str = "mcpgate_credentials";

/// What the marker looked like: any revocation changes at least the inode.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Stamp {
    inode: u64,
    modified_ns: i128,
    len: u64,
}

/// How this gateway learns that a credential ended somewhere.
pub struct RevocationWatch {
    how: Watch,
}

enum Watch {
    /// No cache: every check reads the store.
    Off,
    /// SQLite: the marker as last seen, and the generation it started.
    Marker {
        path: PathBuf,
        seen: Mutex<(Option<Stamp>, u64)>,
    },
    /// PostgreSQL: the epoch last acknowledged, the generation it started,
    /// and until when (ms since `since`) the cache may be trusted.
    Epoch {
        seen: Mutex<(i64, u64)>,
        trusted_until_ms: AtomicU64,
        since: Instant,
        replica: Arc<str>,
        pool: Db,
        left: std::sync::atomic::AtomicBool,
    },
}

impl RevocationWatch {
    /// The watch for `pool`'s store; on PostgreSQL it registers this replica
    /// and keeps acknowledging until it is dropped.
    pub fn start(pool: &Db) -> Arc<Self> {
        match storage::backend(pool) {
            Backend::Sqlite => Arc::new(Self::marker(revocation_marker(pool))),
            Backend::Postgres => {
                let replica: Arc<str> =
                    format!("gw_{}", hex::encode(rand::random::<[u8; 6]>())).into();
                let watch = Arc::new(Self {
                    how: Watch::Epoch {
                        seen: Mutex::new((-1, 0)),
                        trusted_until_ms: AtomicU64::new(0),
                        since: Instant::now(),
                        replica: replica.clone(),
                        pool: pool.clone(),
                        left: std::sync::atomic::AtomicBool::new(false),
                    },
                });
                spawn_acknowledger(Arc::downgrade(&watch), pool.clone(), replica);
                watch
            }
        }
    }

    /// PostgreSQL: this gateway is stopping. It stops trusting its cache
    /// and leaves `credential_caches`, so no revocation waits for it.
    pub async fn leave(&self) {
        if let Watch::Epoch {
            replica,
            pool,
            left,
            ..
        } = &self.how
        {
            left.store(true, Ordering::Release);
            self.distrust();
            let gone = sqlx::query("DELETE FROM credential_caches WHERE replica = $1")
                .bind(&**replica)
                .execute(pool)
                .await;
            if let Err(e) = gone {
                tracing::warn!(error = %e, "credential cache: could not leave the store");
            }
        }
    }

    fn has_left(&self) -> bool {
        matches!(&self.how, Watch::Epoch { left, .. } if left.load(Ordering::Acquire))
    }

    /// Caching off: every check reads the store.
    pub fn off() -> Arc<Self> {
        Arc::new(Self { how: Watch::Off })
    }

    fn marker(path: Option<PathBuf>) -> Self {
        let Some(path) = path else {
            return Self { how: Watch::Off };
        };
        let stamp = stamp(&path).ok().flatten();
        Self {
            how: Watch::Marker {
                path,
                seen: Mutex::new((stamp, 0)),
            },
        }
    }

    /// The generation a check may trust, after looking for announcements;
    /// `None` when nothing may be trusted now.
    fn look(&self) -> Option<u64> {
        match &self.how {
            Watch::Off => None,
            Watch::Marker { path, seen } => {
                let now = match stamp(path) {
                    Ok(now) => now,
                    Err(e) => {
                        // Cannot tell whether anything was revoked: use the store.
                        tracing::warn!(error = %e, path = %path.display(), "revocation marker unreadable");
                        return None;
                    }
                };
                let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
                if seen.0 != now {
                    *seen = (now, seen.1 + 1);
                }
                Some(seen.1)
            }
            Watch::Epoch { .. } => self.current(),
        }
    }

    /// The generation as last looked at, without looking again.
    fn current(&self) -> Option<u64> {
        match &self.how {
            Watch::Off => None,
            Watch::Marker { seen, .. } => Some(seen.lock().unwrap_or_else(|p| p.into_inner()).1),
            Watch::Epoch {
                seen,
                trusted_until_ms,
                since,
                ..
            } => {
                let now_ms = since.elapsed().as_millis() as u64;
                (now_ms < trusted_until_ms.load(Ordering::Acquire))
                    .then(|| seen.lock().unwrap_or_else(|p| p.into_inner()).1)
            }
        }
    }

    /// PostgreSQL: the store's epoch as just read; a change starts a new
    /// generation (forgetting everything) before it is acknowledged.
    fn observe_epoch(&self, epoch: i64) {
        if let Watch::Epoch { seen, .. } = &self.how {
            let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
            if seen.0 != epoch {
                *seen = (epoch, seen.1 + 1);
            }
        }
    }

    /// PostgreSQL: the acknowledgement of an epoch read at `read_at` is in
    /// the store; trust the cache until `read_at + TRUST`.
    fn acknowledged(&self, read_at: Instant) {
        if let Watch::Epoch {
            trusted_until_ms,
            since,
            ..
        } = &self.how
        {
            let until = (read_at + TRUST).saturating_duration_since(*since);
            trusted_until_ms.fetch_max(until.as_millis() as u64, Ordering::AcqRel);
        }
    }

    /// PostgreSQL: stop trusting the cache (an acknowledgement failed).
    fn distrust(&self) {
        if let Watch::Epoch {
            trusted_until_ms, ..
        } = &self.how
        {
            trusted_until_ms.store(0, Ordering::Release);
        }
    }
}

/// PostgreSQL: acknowledge the epoch on every notification, after every
/// reconnect, and every [`HEARTBEAT`] (a notification can be lost while the
/// listener reconnects). Ends when the watch is dropped.
fn spawn_acknowledger(watch: Weak<RevocationWatch>, pool: Db, replica: Arc<str>) {
    let (listener_watch, listener_pool, listener_replica) =
        (watch.clone(), pool.clone(), replica.clone());
    storage::spawn_notification_listener(&pool, CREDENTIALS_CHANNEL, move || {
        let (watch, pool, replica) = (
            listener_watch.clone(),
            listener_pool.clone(),
            listener_replica.clone(),
        );
        async move {
            let Some(watch) = watch.upgrade() else {
                return Ok(false);
            };
            acknowledge(&watch, &pool, &replica).await;
            Ok(true)
        }
    });
    tokio::spawn(async move {
        loop {
            let Some(watch) = watch.upgrade() else {
                let _ = sqlx::query("DELETE FROM credential_caches WHERE replica = $1")
                    .bind(&*replica)
                    .execute(&pool)
                    .await;
                return;
            };
            acknowledge(&watch, &pool, &replica).await;
            drop(watch);
            tokio::time::sleep(HEARTBEAT).await;
        }
    });
}

async fn acknowledge(watch: &RevocationWatch, pool: &Db, replica: &str) {
    if watch.has_left() {
        return;
    }
    let read_at = Instant::now();
    let acknowledged = async {
        let epoch: i64 = sqlx::query_scalar("SELECT epoch FROM credential_epoch WHERE id = 1")
            .fetch_one(pool)
            .await?;
        // Forget first, acknowledge after: a revoker that sees the
        // acknowledgement may rely on this replica having forgotten.
        watch.observe_epoch(epoch);
        sqlx::query(
            "INSERT INTO credential_caches (replica, epoch, seen_at) VALUES ($1, $2, now()) \
             ON CONFLICT (replica) DO UPDATE SET epoch = excluded.epoch, seen_at = excluded.seen_at",
        )
        .bind(replica)
        .bind(epoch)
        .execute(&mut *crate::storage::writer(pool).await?)
        .await?;
        Ok::<_, sqlx::Error>(())
    }
    .await;
    match acknowledged {
        // A gateway that left while this ran must not trust (or stay listed).
        Ok(()) if watch.has_left() => watch.leave().await,
        Ok(()) => watch.acknowledged(read_at),
        Err(e) => {
            watch.distrust();
            tracing::warn!(error = %e, "credential cache: cannot acknowledge revocations; reading the store");
        }
    }
}

struct Entry<V> {
    secret_sha256: [u8; 32],
    generation: u64,
    verified_at: Instant,
    value: V,
}

/// Credentials of one kind (`V`) verified from the store, by token id.
pub struct CredentialCache<V> {
    watch: Arc<RevocationWatch>,
    /// The generation whose entries the map holds (older ones are dropped).
    holding: AtomicU64,
    entries: DashMap<String, Entry<V>>,
}

/// A check's view of the cache: entries of its generation only.
#[derive(Clone, Copy, Debug)]
pub struct Generation(Option<u64>);

impl<V: Clone> CredentialCache<V> {
    pub fn new(watch: Arc<RevocationWatch>) -> Self {
        Self {
            watch,
            holding: AtomicU64::new(0),
            entries: DashMap::new(),
        }
    }

    /// Look for announcements; a new generation forgets every entry. Call
    /// once per check, before [`get`](Self::get) and the store read.
    pub fn generation(&self) -> Generation {
        let generation = self.watch.look();
        if let Some(generation) = generation
            && self.holding.swap(generation, Ordering::AcqRel) != generation
        {
            self.entries.clear();
        }
        Generation(generation)
    }

    /// The remembered value for token `id`, if `secret` is its secret and it
    /// was verified in this generation, less than [`MAX_AGE`] ago.
    pub fn get(&self, generation: Generation, id: &str, secret: &str) -> Option<V> {
        let generation = generation.0?;
        let entry = self.entries.get(id)?;
        let fresh = entry.generation == generation && entry.verified_at.elapsed() < MAX_AGE;
        let matches = bool::from(digest(secret).ct_eq(&entry.secret_sha256));
        (fresh && matches).then(|| entry.value.clone())
    }

    /// Remember `value`, verified from the store under `generation`, unless a
    /// revocation was announced since (the read may predate it).
    pub fn insert(&self, generation: Generation, id: &str, secret: &str, value: V) {
        let Some(generation) = generation.0 else {
            return;
        };
        if self.watch.current() != Some(generation) || self.entries.len() >= MAX_ENTRIES {
            return;
        }
        self.entries.insert(
            id.to_owned(),
            Entry {
                secret_sha256: digest(secret),
                generation,
                verified_at: Instant::now(),
                value,
            },
        );
    }

    /// Forget token `id` (its check just failed in the store).
    pub fn forget(&self, id: &str) {
        self.entries.remove(id);
    }
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

fn stamp(path: &std::path::Path) -> std::io::Result<Option<Stamp>> {
    match std::fs::metadata(path) {
        Ok(meta) => Ok(Some(Stamp {
            inode: meta.ino(),
            modified_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            len: meta.len(),
        })),
        // No revocation was ever announced on this store.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The marker of a SQLite store: beside its database file.
fn revocation_marker(pool: &Db) -> Option<PathBuf> {
    let mut path = storage::sqlite_file(pool)?.into_os_string();
    path.push("-revocations");
    Some(path.into())
}

/// Why an announcement did not complete. The revocation itself is committed
/// either way; the caller reports it as not confirmed.
#[derive(Debug, thiserror::Error)]
pub enum AnnounceError {
    #[error("the revocation marker could not be written: {0}")]
    Marker(#[from] std::io::Error),
    #[error("the store: {0}")]
    Store(#[from] sqlx::Error),
    #[error("replicas did not confirm within {0:?}: {1}")]
    Unconfirmed(Duration, String),
}

impl From<AnnounceError> for sqlx::Error {
    fn from(e: AnnounceError) -> Self {
        match e {
            AnnounceError::Store(e) => e,
            AnnounceError::Marker(e) => sqlx::Error::Io(e),
            other => sqlx::Error::Protocol(other.to_string()),
        }
    }
}

/// Tell every verifier on this store that a credential ended. Call after the
/// revocation committed; when it returns, no gateway on the store trusts
/// anything it remembered from before.
pub async fn announce_revocation(pool: &Db) -> Result<(), AnnounceError> {
    match storage::backend(pool) {
        Backend::Sqlite => {
            let Some(marker) = revocation_marker(pool) else {
                return Ok(());
            };
            // Replaced by a rename: a reader never sees it half written and
            // always sees a new inode.
            let mut temporary = marker.clone().into_os_string();
            temporary.push(format!(".{}.{}", std::process::id(), rand::random::<u64>()));
            let temporary = PathBuf::from(temporary);
            std::fs::write(&temporary, actors::now_rfc3339())?;
            std::fs::rename(&temporary, &marker).inspect_err(|_| {
                let _ = std::fs::remove_file(&temporary);
            })?;
            Ok(())
        }
        Backend::Postgres => {
            let epoch: i64 = sqlx::query_scalar(
                "UPDATE credential_epoch SET epoch = epoch + 1 WHERE id = 1 RETURNING epoch",
            )
            .fetch_one(&mut *crate::storage::writer(pool).await?)
            .await?;
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CREDENTIALS_CHANNEL)
                .bind(epoch.to_string())
                .execute(pool)
                .await?;
            // A replica acknowledges within a heartbeat; one whose last
            // acknowledgement is older than FRESH_SECS trusts nothing.
            let limit = Duration::from_secs(FRESH_SECS as u64 + 2);
            let deadline = Instant::now() + limit;
            loop {
                let lagging: Vec<String> = sqlx::query_scalar(
                    "SELECT replica FROM credential_caches WHERE epoch < $1 \
                     AND seen_at > now() - make_interval(secs => $2)",
                )
                .bind(epoch)
                .bind(FRESH_SECS as f64)
                .fetch_all(pool)
                .await?;
                if lagging.is_empty() {
                    return Ok(());
                }
                if Instant::now() > deadline {
                    return Err(AnnounceError::Unconfirmed(limit, lagging.join(", ")));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let pool = crate::storage::open(&dir.path().join("with space?#"))
            .await
            .unwrap();
        (dir, pool)
    }

    #[tokio::test]
    async fn the_marker_sits_beside_the_database_file() {
        let (dir, pool) = store().await;
        assert_eq!(
            revocation_marker(&pool).unwrap(),
            dir.path()
                .join("with space?#")
                .join("mcpgate.db-revocations")
        );
    }

    #[tokio::test]
    async fn a_revocation_forgets_every_entry() {
        let (_dir, pool) = store().await;
        let cache = CredentialCache::new(RevocationWatch::start(&pool));
        let generation = cache.generation();
        cache.insert(generation, "id1", "secret", "alice".to_owned());
        assert_eq!(
            cache.get(cache.generation(), "id1", "secret").as_deref(),
            Some("alice")
        );
        assert_eq!(
            cache.get(cache.generation(), "id1", "other"),
            None,
            "wrong secret"
        );
        assert_eq!(cache.get(cache.generation(), "id2", "secret"), None);

        announce_revocation(&pool).await.unwrap();
        assert_eq!(cache.get(cache.generation(), "id1", "secret"), None);
        // A second announcement, even within the same clock tick, is seen.
        let generation = cache.generation();
        cache.insert(generation, "id1", "secret", "alice".to_owned());
        announce_revocation(&pool).await.unwrap();
        assert_eq!(cache.get(cache.generation(), "id1", "secret"), None);
    }

    #[tokio::test]
    async fn a_read_that_raced_a_revocation_is_not_remembered() {
        let (_dir, pool) = store().await;
        let cache = CredentialCache::new(RevocationWatch::start(&pool));
        let before_the_read = cache.generation();
        announce_revocation(&pool).await.unwrap();
        // Another check notices the revocation while the first still reads.
        let after = cache.generation();
        cache.insert(before_the_read, "id1", "secret", "alice".to_owned());
        assert_eq!(cache.get(after, "id1", "secret"), None);
    }

    #[tokio::test]
    async fn postgres_pools_and_unreadable_markers_use_the_store() {
        let cache: CredentialCache<String> = CredentialCache::new(RevocationWatch::off());
        let generation = cache.generation();
        cache.insert(generation, "id1", "secret", "alice".to_owned());
        assert_eq!(cache.get(cache.generation(), "id1", "secret"), None);

        let dir = tempfile::tempdir().unwrap();
        // The marker's "directory" is a file: stat fails with ENOTDIR.
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        let cache: CredentialCache<String> =
            CredentialCache::new(Arc::new(RevocationWatch::marker(Some(file.join("m")))));
        let generation = cache.generation();
        cache.insert(generation, "id1", "secret", "alice".to_owned());
        assert_eq!(cache.get(cache.generation(), "id1", "secret"), None);
    }
}
