//! Live grants: one `GrantActor` each under the `grants` supervisor, found by
//! the delegated access token that names them. The table is only an index;
//! the actor (and its gate) is the grant. Revocation closes the gate, stops
//! the actor, then records the end — in that order, before it is acknowledged.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::storage::Db;
pub use actors::grant::EndReason;
use actors::grant::{
    GrantActor, GrantArgs, GrantGate, GrantMsg, GrantScope, LivenessProbe, OnGrantEnd, Risk,
};
use dashmap::DashMap;
use ractor::ActorRef;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use supervision::{ChildSpec, Restart, SupervisorMsg};

use crate::config::UserConfig;
use crate::domain::Reason;

pub const ACCESS_TOKEN_PREFIX: &str = "mgd_";

pub fn grant_key(id: &str) -> String {
    format!("grant/{id}")
}

/// A grant as the call path sees it.
pub struct LiveGrant {
    pub scope: GrantScope,
    pub instance: String,
    pub workspace: String,
    pub flow_path: String,
    /// The owner's configuration: whose services the grant acts on.
    pub owner: Arc<UserConfig>,
    pub gate: GrantGate,
    pub actor: ActorRef<GrantMsg>,
    pub expires_at_unix: i64,
    secret_sha256: [u8; 32],
}

impl std::fmt::Debug for LiveGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveGrant")
            .field("id", &self.scope.grant_id)
            .field("subject", &self.scope.subject)
            .field("actor", &self.scope.actor)
            .finish_non_exhaustive()
    }
}

/// Why a delegated access token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantTokenRejection {
    pub reason: Reason,
    pub message: String,
    /// The person the grant acted for, when the gateway knows it.
    pub subject: Option<String>,
}

/// Told the id of each grant that ends on this gateway, once its end is on
/// record (the gateway ends the grant's MCP sessions with it).
pub type GrantEndListener = Arc<dyn Fn(&str) + Send + Sync>;

#[derive(Clone)]
pub struct GrantTable {
    live: Arc<DashMap<String, Arc<LiveGrant>>>,
    listeners: Arc<std::sync::RwLock<Vec<GrantEndListener>>>,
    /// Adoption is rare and cold: one at a time, so a grant is started once.
    adopting: Arc<tokio::sync::Mutex<()>>,
    /// This process among the gateways on the store (`grant_holders.replica`).
    replica: Arc<str>,
}

impl Default for GrantTable {
    fn default() -> Self {
        Self {
            live: Default::default(),
            listeners: Default::default(),
            adopting: Default::default(),
            replica: format!("gw_{}", hex::encode(rand::random::<[u8; 6]>())).into(),
        }
    }
}

/// Everything needed to start a grant's actor.
pub struct NewGrant {
    pub scope: GrantScope,
    pub instance: String,
    pub workspace: String,
    pub flow_path: String,
    pub owner: Arc<UserConfig>,
    pub ttl: Duration,
    pub probe: Option<(LivenessProbe, Duration)>,
    /// SHA-256 of the token's secret part (see [`mint_token`]).
    pub secret_sha256: [u8; 32],
    /// This replica was recorded as its holder with the grant itself
    /// (`store::insert_grant`); otherwise `start` registers it.
    pub holder_recorded: bool,
}

/// A fresh delegated access token for grant `id`, and the SHA-256 of its
/// secret part: the only form in which the secret is kept.
pub fn mint_token(id: &str) -> (String, [u8; 32]) {
    let secret = hex::encode(rand::random::<[u8; 32]>());
    let token = format!(
        "{ACCESS_TOKEN_PREFIX}{}_{secret}",
        id.trim_start_matches("grt_")
    );
    (token, Sha256::digest(secret.as_bytes()).into())
}

/// How a gateway that did not mint a grant finds the owner it acts for.
pub type OwnerLookup<'a> = &'a (dyn Fn(&str) -> Option<Arc<UserConfig>> + Sync);

impl GrantTable {
    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    pub fn get(&self, id: &str) -> Option<Arc<LiveGrant>> {
        self.live.get(id).map(|g| g.value().clone())
    }

    pub fn on_end(&self, listener: GrantEndListener) {
        self.listeners
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(listener);
    }

    /// The ids of the grants this gateway holds.
    pub fn ids(&self) -> Vec<String> {
        self.live.iter().map(|g| g.key().clone()).collect()
    }

    /// Start the grant's actor; its token is the one [`mint_token`] gave.
    pub async fn start(
        &self,
        grants_supervisor: &ActorRef<SupervisorMsg>,
        pool: &Db,
        new: NewGrant,
    ) -> Result<Arc<LiveGrant>, String> {
        let id = new.scope.grant_id.clone();
        let gate = GrantGate::default();
        let table = self.live.clone();
        let end_pool = pool.clone();
        let replica = self.replica.clone();
        let listeners = self.listeners.clone();
        let on_end: OnGrantEnd = Arc::new(move |scope: &GrantScope, reason: &EndReason| {
            let table = table.clone();
            let listeners = listeners.clone();
            let pool = end_pool.clone();
            let replica = replica.clone();
            let id = scope.grant_id.clone();
            let reason = reason.to_string();
            // The gate is already closed; the grant leaves the table only once
            // its end is on record, so whoever sees it gone can read why, and
            // this replica stops holding it only once it left the table.
            tokio::spawn(async move {
                if let Err(e) = super::store::mark_ended(&pool, &id, &reason).await {
                    tracing::error!(grant = %id, error = %e, "could not record the end of a grant");
                }
                table.remove(&id);
                release(&pool, &id, &replica).await;
                let listeners = listeners
                    .read()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .clone();
                for listener in listeners {
                    listener(&id);
                }
            });
        });
        let args_scope = new.scope.clone();
        let args_gate = gate.clone();
        let ttl = new.ttl;
        let probe = new.probe.clone();
        // Temporary: a grant that ends is never restarted (that would revive it).
        let spec = ChildSpec::new(grant_key(&id), Restart::Temporary, move || {
            (
                GrantActor,
                GrantArgs {
                    scope: args_scope.clone(),
                    ttl,
                    gate: args_gate.clone(),
                    probe: probe.clone(),
                    on_end: Some(on_end.clone()),
                },
            )
        });
        let actor: ActorRef<GrantMsg> = supervision::start_child(grants_supervisor, spec)
            .await
            .map_err(|e| e.to_string())?
            .into();
        let expires_at_unix =
            time::OffsetDateTime::now_utc().unix_timestamp() + ttl.as_secs() as i64;
        let live = Arc::new(LiveGrant {
            scope: new.scope,
            instance: new.instance,
            workspace: new.workspace,
            flow_path: new.flow_path,
            owner: new.owner,
            gate,
            actor,
            expires_at_unix,
            secret_sha256: new.secret_sha256,
        });
        self.live.insert(id.clone(), live.clone());
        // Registered as a holder, then checked: a revocation that raced the
        // start is carried out here before the grant serves anything.
        let holder_recorded = new.holder_recorded;
        let registered = if holder_recorded {
            super::store::is_live(pool, &id).await
        } else {
            super::store::add_holder(pool, &id, &self.replica).await
        };
        match registered {
            Ok(true) => Ok(live),
            Ok(false) => {
                let reason = super::store::ended_elsewhere(pool, std::slice::from_ref(&id))
                    .await
                    .ok()
                    .and_then(|ended| ended.into_iter().next())
                    .map(|(_, reason)| end_from_store(&reason))
                    .unwrap_or_else(|| EndReason::Other("the grant is no longer active".into()));
                self.revoke(Some(grants_supervisor), pool, &id, &reason)
                    .await;
                Err(format!("grant {id} was revoked or ended as it started"))
            }
            Err(e) => {
                let reason = EndReason::Other("store unavailable".into());
                self.revoke(Some(grants_supervisor), pool, &id, &reason)
                    .await;
                Err(format!("grant {id} could not be registered: {e}"))
            }
        }
    }

    /// The id under which this process holds grants in the store.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// The live grant a delegated access token names, or why there is none.
    /// A live grant minted by another gateway on the same store is adopted:
    /// started here as its own actor, so this gateway can serve and stop it.
    pub async fn authenticate(
        &self,
        grants_supervisor: Option<&ActorRef<SupervisorMsg>>,
        pool: &Db,
        owner_of: OwnerLookup<'_>,
        presented: &str,
    ) -> Result<Arc<LiveGrant>, GrantTokenRejection> {
        let malformed = || GrantTokenRejection {
            reason: Reason::InvalidToken,
            message: "malformed delegated access token".into(),
            subject: None,
        };
        let invalid = || GrantTokenRejection {
            reason: Reason::InvalidToken,
            message: "the delegated access token is not valid".into(),
            subject: None,
        };
        let rest = presented
            .strip_prefix(ACCESS_TOKEN_PREFIX)
            .ok_or_else(malformed)?;
        let (id_hex, secret) = rest.split_once('_').ok_or_else(malformed)?;
        if id_hex.len() != 16 || !id_hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(malformed());
        }
        let id = format!("grt_{id_hex}");
        let presented_digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
        if let Some(grant) = self.get(&id) {
            if bool::from(grant.secret_sha256.ct_eq(&presented_digest)) {
                return Ok(grant);
            }
            return Err(invalid());
        }
        // Cold path: adopt a live grant, or say precisely why it is gone.
        let stored = match super::store::adoptable(pool, &id).await {
            Ok(Some(stored)) => stored,
            Ok(None) => return Err(invalid()),
            Err(e) => {
                tracing::error!(grant = %id, error = %e, "grant store unavailable");
                return Err(GrantTokenRejection {
                    reason: Reason::TemporarilyUnavailable,
                    message: "the gateway's store is unavailable".into(),
                    subject: None,
                });
            }
        };
        // A row minted before token hashes were stored has none: it can say
        // why it ended, but never be adopted.
        let matches = bool::from(stored.secret_sha256.as_slice().ct_eq(&presented_digest));
        if !matches && !stored.secret_sha256.is_empty() {
            return Err(invalid());
        }
        let record = &stored.record;
        let left = time::OffsetDateTime::parse(
            &record.expires_at,
            &time::format_description::well_known::Rfc3339,
        )
        .map(|at| at.unix_timestamp() - time::OffsetDateTime::now_utc().unix_timestamp())
        .unwrap_or(0);
        let ended = match (&record.end_reason, stored.revoke_requested) {
            (Some(reason), _) => Some(end_from_store(reason)),
            (None, true) => Some(EndReason::revoked_by(
                stored.revoked_by.as_deref().unwrap_or("an operator"),
            )),
            (None, false) if record.ended_at.is_some() || left <= 0 => Some(EndReason::Expired),
            (None, false) => None,
        };
        if let Some(reason) = ended {
            return Err(GrantTokenRejection {
                reason: end_refusal_reason(&reason),
                message: format!("grant {id} has ended: {reason}"),
                subject: Some(record.subject.clone()),
            });
        }
        if !matches {
            return Err(invalid());
        }
        let unavailable = |message: String| GrantTokenRejection {
            reason: Reason::GrantUnavailable,
            message,
            subject: Some(record.subject.clone()),
        };
        let (Some(supervisor), Some(owner)) = (grants_supervisor, owner_of(&record.subject)) else {
            return Err(unavailable(format!(
                "grant {id} cannot be served by this gateway"
            )));
        };
        let _one_at_a_time = self.adopting.lock().await;
        if let Some(grant) = self.get(&id) {
            return Ok(grant);
        }
        let adopted = self
            .start(
                supervisor,
                pool,
                adoption(&stored, owner, Duration::from_secs(left as u64)),
            )
            .await
            .map_err(|e| {
                tracing::error!(grant = %id, error = %e, "could not adopt a grant");
                unavailable(format!("grant {id} could not be started here"))
            })?;
        tracing::info!(grant = %id, "adopted a grant minted by another gateway");
        Ok(adopted)
    }

    /// Revoke one live grant: close its gate (in-flight hand-offs finish,
    /// later ones are refused), stop its actor, record the end. Returns false
    /// if this gateway holds no such live grant.
    pub async fn revoke(
        &self,
        grants_supervisor: Option<&ActorRef<SupervisorMsg>>,
        pool: &Db,
        id: &str,
        reason: &EndReason,
    ) -> bool {
        if !self.close(grants_supervisor, id, reason).await {
            return false;
        }
        self.record_end(pool, id, reason).await;
        true
    }

    /// The first half of [`Self::revoke`], with no store round trip: close
    /// the gate (waiting for the calls already at the upstream) and stop the
    /// actor. The grant stays in the table until [`Self::record_end`].
    /// Returns false if this gateway holds no such live grant.
    pub async fn close(
        &self,
        grants_supervisor: Option<&ActorRef<SupervisorMsg>>,
        id: &str,
        reason: &EndReason,
    ) -> bool {
        let Some(grant) = self.get(id) else {
            return false;
        };
        let closed = grant
            .actor
            .call(
                |reply| GrantMsg::Revoke {
                    reason: reason.clone(),
                    reply,
                },
                Some(Duration::from_secs(10)),
            )
            .await;
        if !matches!(closed, Ok(ractor::rpc::CallResult::Success(()))) {
            // The actor is already gone; its gate closed with it.
            grant.gate.close(reason).await;
        }
        if let Some(supervisor) = grants_supervisor {
            supervision::stop_child(supervisor, &grant_key(id)).await;
        }
        true
    }

    /// The second half of [`Self::revoke`], once the gate is closed: the end
    /// and this replica's release go in one commit, then the grant leaves
    /// the table (so whoever sees it gone can read why).
    pub async fn record_end(&self, pool: &Db, id: &str, reason: &EndReason) {
        if let Err(e) =
            super::store::end_and_release(pool, id, &reason.to_string(), &self.replica).await
        {
            tracing::error!(grant = %id, error = %e, "could not record a revocation");
        }
        self.live.remove(id);
    }
}

/// Tell the store this replica no longer holds grant `id` (it already left
/// the table): a revocation waiting for every holder may be acknowledged.
async fn release(pool: &Db, id: &str, replica: &str) {
    if let Err(e) = super::store::release_holder(pool, id, replica).await {
        tracing::error!(grant = %id, error = %e, "could not release a grant holder");
    }
}

/// What starts a grant minted elsewhere here: its stored scope, no liveness
/// probe (the job token stays with the gateway that verified the job; its
/// probe ends the grant for every replica), the rest of its lifetime.
fn adoption(stored: &super::store::Adoptable, owner: Arc<UserConfig>, ttl: Duration) -> NewGrant {
    let risks = |m: &BTreeMap<String, String>| {
        m.iter()
            .filter_map(|(s, r)| Some((s.clone(), Risk::parse(r)?)))
            .collect::<BTreeMap<_, _>>()
    };
    let record = &stored.record;
    // It matched the presented digest, so it is 32 bytes.
    let mut secret_sha256 = [0u8; 32];
    secret_sha256.copy_from_slice(&stored.secret_sha256);
    NewGrant {
        holder_recorded: false,
        scope: GrantScope {
            grant_id: record.id.clone(),
            subject: record.subject.clone(),
            actor: record.actor.clone(),
            job_id: Some(record.job_id.clone()),
            declared: risks(&stored.declared),
            services: risks(&record.services),
        },
        instance: record.instance.clone(),
        workspace: record.workspace.clone(),
        flow_path: record.flow_path.clone(),
        owner,
        ttl,
        probe: None,
        secret_sha256,
    }
}

/// A grant's end as the store recorded it (another replica, an earlier
/// run): the only place its text is read back into an [`EndReason`].
pub fn end_from_store(text: &str) -> EndReason {
    if text.starts_with("revoked") {
        EndReason::Revoked(text.to_owned())
    } else if text == "expired" {
        EndReason::Expired
    } else if text.contains("job") {
        EndReason::JobEnded(text.to_owned())
    } else {
        EndReason::Other(text.to_owned())
    }
}

/// The refusal reason of a call that arrives after the end.
pub fn end_refusal_reason(end: &EndReason) -> Reason {
    match end {
        EndReason::Revoked(_) => Reason::GrantRevoked,
        EndReason::Expired => Reason::GrantExpired,
        EndReason::JobEnded(_) => Reason::JobFinished,
        EndReason::Other(_) => Reason::GrantEnded,
    }
}

/// The reason a grant's actor refused a call with.
pub fn grant_refusal_reason(refusal: &actors::grant::GrantRefusal) -> Reason {
    use actors::grant::GrantRefusal;
    match refusal {
        GrantRefusal::ServiceNotDeclared(_) => Reason::ServiceNotDeclared,
        GrantRefusal::RiskNotDeclared { .. } => Reason::RiskNotGranted,
        GrantRefusal::OutsideSubjectScope { .. } => Reason::OutsideOwnerScope,
        GrantRefusal::Expired => Reason::GrantExpired,
    }
}
