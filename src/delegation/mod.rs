//! Delegation: a Windmill job acts as its owner through a verified,
//! revocable grant (see docs/delegation.md). [`Delegation`] is one gateway's
//! part of it: the Windmill client and verification cache, the live grants,
//! their revocation (here and on every replica) and the watcher that stops
//! grants another process ended.

pub mod declaration;
pub mod exchange;
pub mod grants;
pub mod store;
pub mod verification_cache;
pub mod windmill;

use std::sync::{Arc, Weak};
use std::time::Duration;

use ractor::ActorRef;
use supervision::{Registry, SupervisorMsg};

use crate::audit::AuditLog;
use crate::config::Config;
use crate::credential_cache::{CredentialCache, RevocationWatch};
use crate::drain::Drain;
use crate::storage::{self, Backend, Db};
use crate::tokens::TokenRecord;
use grants::GrantTable;
use verification_cache::VerificationCache;
use windmill::WindmillClient;

/// The grants supervisor's key in the registry.
pub const SUPERVISOR_KEY: &str = "grants";

/// How long a revocation waits for the other replicas holding the grant.
pub const REVOCATION_ACK_WAIT: Duration = Duration::from_secs(5);

/// How far back each revocation poll reads ends: replicas' clocks may
/// differ a little, and an end is stamped before its commit is visible.
const ENDED_LOOKBACK: time::Duration = time::Duration::seconds(10);

pub struct Delegation {
    pub client: WindmillClient,
    pub grants: GrantTable,
    cache: VerificationCache,
    /// Service-account tokens presented as `actor_token`, vouched for until
    /// the next token revocation (as for requests to `/mcp`).
    actor_tokens: CredentialCache<TokenRecord>,
    config: Arc<Config>,
    pool: Db,
    registry: Registry,
    audit: AuditLog,
    drain: Arc<Drain>,
}

impl Delegation {
    /// Start delegation for one gateway: its revocation watcher runs as long
    /// as the returned value lives (and the gateway is not draining).
    pub fn start(
        config: Arc<Config>,
        pool: Db,
        registry: Registry,
        audit: AuditLog,
        drain: Arc<Drain>,
        revocations: Arc<RevocationWatch>,
    ) -> Arc<Delegation> {
        let delegation = Arc::new(Delegation {
            client: WindmillClient::new(
                config.delegation.windmill_timeout,
                config.delegation.windmill_max_in_flight,
            ),
            grants: GrantTable::default(),
            cache: VerificationCache::default(),
            actor_tokens: CredentialCache::new(revocations),
            config,
            pool,
            registry,
            audit,
            drain,
        });
        spawn_revocation_watcher(&delegation);
        spawn_expiry(&delegation);
        delegation
    }

    pub fn supervisor(&self) -> Option<ActorRef<SupervisorMsg>> {
        self.registry.get(SUPERVISOR_KEY)
    }

    pub fn pool(&self) -> &Db {
        &self.pool
    }

    /// The live grant a delegated access token names (adopting one another
    /// replica minted), or why there is none.
    pub async fn authenticate(
        &self,
        presented: &str,
    ) -> Result<Arc<grants::LiveGrant>, grants::GrantTokenRejection> {
        let owner_of = |email: &str| self.config.user(email).cloned().map(Arc::new);
        self.grants
            .authenticate(self.supervisor().as_ref(), &self.pool, &owner_of, presented)
            .await
    }

    /// Revoke the grants `filter` names: recorded in the store (so every
    /// gateway sharing it sees it), carried out here, then confirmed by every
    /// other gateway holding one (each stops its actor and releases its
    /// holder row). Returns the ids, and the replicas that did not confirm
    /// within [`REVOCATION_ACK_WAIT`] (a dead one cannot: the store already
    /// refuses its grants to everyone else).
    pub async fn revoke(
        &self,
        filter: &store::RevokeFilter,
        by: &str,
    ) -> Result<(Vec<String>, Vec<String>), sqlx::Error> {
        let reason = grants::EndReason::revoked_by(by);
        let supervisor = self.supervisor();
        // One grant named by id and held here (the console's and the admin
        // API's usual case): its gate closes while the request is recorded.
        // Both finish before the acknowledgement, so their order does not
        // matter, and the wait for its calls at the upstream no longer
        // follows a durable commit.
        let here = filter
            .only_grant_id()
            .filter(|id| self.grants.get(id).is_some());
        let (requested, closed_here) =
            tokio::join!(store::request_revocation(&self.pool, filter, by), async {
                match here {
                    Some(id) => self.grants.close(supervisor.as_ref(), id, &reason).await,
                    None => false,
                }
            });
        // On a store error a grant closed here stays closed (failing
        // closed): its actor's stop records the end.
        let mut ids = requested?;
        let closed = here.filter(|_| closed_here);
        if let Some(id) = closed {
            self.grants.record_end(&self.pool, id, &reason).await;
            // The actor's own record of its end may have committed first, so
            // the request found the grant already ended: it was revoked here.
            if !ids.iter().any(|known| known == id) {
                ids.push(id.to_owned());
            }
        }
        for id in ids.iter().filter(|id| closed != Some(id.as_str())) {
            self.grants
                .revoke(supervisor.as_ref(), &self.pool, id, &reason)
                .await;
        }
        let deadline = tokio::time::Instant::now() + REVOCATION_ACK_WAIT;
        loop {
            let holding = store::holders(&self.pool, &ids).await?;
            if holding.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok((ids, holding));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Stop the grants held here that another process revoked or ended (a
    /// revocation still pending, or an end at or after `since`). Returns
    /// whether the store answered.
    async fn stop_ended_elsewhere(&self, since: &str) -> bool {
        match store::ended_since(&self.pool, since).await {
            Ok(ended) => {
                for (id, reason) in ended {
                    if self.grants.get(&id).is_none() {
                        continue;
                    }
                    let reason = grants::end_from_store(&reason);
                    self.grants
                        .revoke(self.supervisor().as_ref(), &self.pool, &id, &reason)
                        .await;
                }
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "revocation watcher: store unavailable");
                false
            }
        }
    }

    /// Record the end of expired grants no gateway holds any more (their
    /// minting replica went away; a holder ends its own when its actor's
    /// lifetime runs out).
    pub async fn end_expired(&self) {
        if let Err(e) = store::end_expired(&self.pool).await {
            tracing::warn!(error = %e, "could not end expired grants");
        }
    }
}

/// Every ten minutes, record the end of expired grants nobody holds.
fn spawn_expiry(delegation: &Arc<Delegation>) {
    let weak = Arc::downgrade(delegation);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(600));
        loop {
            tick.tick().await;
            let Some(delegation) = weak.upgrade() else {
                return;
            };
            if delegation.drain.is_draining() {
                return;
            }
            delegation.end_expired().await;
        }
    });
}

/// Stop the grants held here that another process (the CLI, another
/// replica) revoked or ended: at once on PostgreSQL's notification, and
/// every `revocation_poll` in any case (SQLite, or a lost notification).
fn spawn_revocation_watcher(delegation: &Arc<Delegation>) {
    let weak = Arc::downgrade(delegation);
    let every = delegation.config.delegation.revocation_poll;
    let wake = Arc::new(tokio::sync::Notify::new());
    if storage::backend(&delegation.pool) == Backend::Postgres {
        spawn_grant_listener(&delegation.pool, Arc::downgrade(&wake));
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        // Nothing is held before the watcher starts; after that, each poll
        // reads the ends since the last poll that answered, less a margin
        // for the clocks of other replicas and for commits in flight.
        let started = time::OffsetDateTime::now_utc();
        let mut since = started;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = wake.notified() => {}
            }
            let Some(delegation) = weak.upgrade() else {
                return;
            };
            if delegation.drain.is_draining() {
                return;
            }
            let polled_at = time::OffsetDateTime::now_utc();
            if delegation
                .stop_ended_elsewhere(&actors::format_rfc3339(since))
                .await
            {
                since = (polled_at - ENDED_LOOKBACK).max(started);
            }
        }
    });
}

/// Wake the watcher whenever another replica revoked or ended a grant (and
/// after each reconnect, in case one was missed); ends with the watcher.
fn spawn_grant_listener(pool: &Db, wake: Weak<tokio::sync::Notify>) {
    storage::spawn_notification_listener(pool, store::GRANTS_CHANNEL, move || {
        let wake = wake.upgrade();
        async move {
            Ok(match wake {
                Some(wake) => {
                    wake.notify_one();
                    true
                }
                None => false,
            })
        }
    });
}
