//! One `GrantActor` per delegation grant (a Windmill job acting as its owner).
//!
//! The actor *is* the grant: it holds the verified identity and the scope, and
//! answers `Authorize` for every call made under it. It ends when it is
//! revoked, when its TTL passes, or when its liveness probe says the job is
//! over; a call that cannot reach it is refused.
//!
//! The [`GrantGate`] closes the race between "authorized" and "reached the
//! connector": a call holds the gate's read side while it hands its request to
//! the connector, and the grant closes it (write side) before it acknowledges
//! a revocation. After the acknowledgement no call of this grant can start.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

pub use crate::risk::Risk;
use futures::future::BoxFuture;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::{OwnedRwLockReadGuard, RwLock};

#[derive(Debug, Clone)]
pub struct GrantScope {
    pub grant_id: String,
    /// The person acted for.
    pub subject: String,
    /// The workflow that drives the calls.
    pub actor: String,
    /// The job the grant was minted for, if any.
    pub job_id: Option<String>,
    /// Highest risk class the workflow declared, per service.
    pub declared: BTreeMap<String, Risk>,
    /// Highest risk class granted per service: the declaration narrowed to
    /// what the subject may do (and to admin approvals for high_risk).
    pub services: BTreeMap<String, Risk>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantRefusal {
    #[error("service '{0}' was not declared by the workflow")]
    ServiceNotDeclared(String),
    #[error("risk class {asked} was not declared for '{service}' (declared: {declared})")]
    RiskNotDeclared {
        service: String,
        asked: Risk,
        declared: Risk,
    },
    #[error("{subject} may not use '{service}' at {asked} (their own access: {owner})")]
    OutsideSubjectScope {
        subject: String,
        service: String,
        asked: Risk,
        owner: String,
    },
    #[error("the grant has expired")]
    Expired,
}

impl GrantRefusal {
    /// Stable, machine-readable reason code.
    pub fn code(&self) -> &'static str {
        match self {
            GrantRefusal::ServiceNotDeclared(_) => "service_not_declared",
            GrantRefusal::RiskNotDeclared { .. } => "risk_not_granted",
            GrantRefusal::OutsideSubjectScope { .. } => "outside_owner_scope",
            GrantRefusal::Expired => "grant_expired",
        }
    }
}

/// Why a grant ended. Its text (`Display`) is what the store records and
/// people read; the variant is what code decides on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// An operator, another process or a failed audit revoked it; the text
    /// says who or why (`revoked by admin:…`).
    Revoked(String),
    Expired,
    /// The job behind it is over, or could no longer be verified (the
    /// probe's words).
    JobEnded(String),
    /// Stopped for another reason (shutdown, a failed start).
    Other(String),
}

impl EndReason {
    pub fn revoked_by(by: &str) -> EndReason {
        EndReason::Revoked(format!("revoked by {by}"))
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndReason::Expired => f.write_str("expired"),
            EndReason::Revoked(text) | EndReason::JobEnded(text) | EndReason::Other(text) => {
                f.write_str(text)
            }
        }
    }
}

/// Open until the grant ends; then it carries the reason.
#[derive(Clone, Default)]
pub struct GrantGate(Arc<GateState>);

#[derive(Default)]
struct GateState {
    /// Read side held by admitted calls; the write side closes the gate.
    admissions: Arc<RwLock<Option<EndReason>>>,
    /// The end reason once closed, readable without the lock: a close (or a
    /// second close by `post_stop`) holding the write side must not make a
    /// refused call forget why.
    ended: OnceLock<EndReason>,
}

/// Held while a call runs at the upstream, until it is answered.
pub type GateAdmission = OwnedRwLockReadGuard<Option<EndReason>>;

impl GrantGate {
    /// Admit a call, or say why the grant is over.
    pub async fn admit(&self) -> Result<GateAdmission, EndReason> {
        if let Some(reason) = self.0.ended.get() {
            return Err(reason.clone());
        }
        let guard = self.0.admissions.clone().read_owned().await;
        match guard.as_ref() {
            None => Ok(guard),
            Some(reason) => Err(reason.clone()),
        }
    }

    /// Close the gate; waits for admitted calls to be answered upstream.
    /// The first reason wins.
    pub async fn close(&self, reason: &EndReason) {
        if self.0.ended.get().is_some() {
            return;
        }
        let mut state = self.0.admissions.write().await;
        if state.is_none() {
            *state = Some(reason.clone());
            let _ = self.0.ended.set(reason.clone());
        }
    }

    /// Why the gate closed, if it has (never waits).
    pub fn closed_reason(&self) -> Option<EndReason> {
        self.0.ended.get().cloned()
    }

    /// Why the gate closed, waiting for a close already under way (it waits
    /// for admitted calls); `None` if nobody is closing it.
    pub async fn settled_reason(&self) -> Option<EndReason> {
        if let Some(reason) = self.0.ended.get() {
            return Some(reason.clone());
        }
        // The lock is fair: a read queued behind a waiting close returns
        // after it.
        self.0.admissions.read().await.clone()
    }
}

/// What a liveness probe found out about the job behind a grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    Alive,
    /// The job is over; the grant ends with this reason.
    Ended(String),
    /// The probe could not tell (the job's host did not answer).
    Unknown(String),
}

pub type LivenessProbe = Arc<dyn Fn() -> BoxFuture<'static, Liveness> + Send + Sync>;
/// Called once when the grant's actor stops, with the end reason.
pub type OnGrantEnd = Arc<dyn Fn(&GrantScope, &EndReason) + Send + Sync>;

/// Consecutive probe failures after which the grant ends (fail closed).
const MAX_UNKNOWN_PROBES: u32 = 2;

pub enum GrantMsg {
    Authorize {
        service: String,
        risk: Risk,
        reply: RpcReplyPort<Result<GrantScope, GrantRefusal>>,
    },
    /// Close the gate, then stop. The reply comes once the gate is closed.
    Revoke {
        reason: EndReason,
        reply: RpcReplyPort<()>,
    },
    Expire,
    /// Time to ask the probe again.
    Probe,
    Probed(Liveness),
}

pub struct GrantArgs {
    pub scope: GrantScope,
    pub ttl: Duration,
    pub gate: GrantGate,
    /// Checked every `probe_every`; `None` for grants without a job.
    pub probe: Option<(LivenessProbe, Duration)>,
    pub on_end: Option<OnGrantEnd>,
}

pub struct GrantActor;

pub struct GrantState {
    scope: GrantScope,
    expires_at: Instant,
    gate: GrantGate,
    probe: Option<(LivenessProbe, Duration)>,
    unknown_probes: u32,
    on_end: Option<OnGrantEnd>,
    end_reason: Option<EndReason>,
    timer: Option<tokio::task::JoinHandle<Result<(), ractor::MessagingErr<GrantMsg>>>>,
}

impl GrantState {
    async fn end(&mut self, myself: &ActorRef<GrantMsg>, reason: EndReason) {
        self.gate.close(&reason).await;
        let text = reason.to_string();
        self.end_reason.get_or_insert(reason);
        myself.stop(Some(text));
    }
}

impl Actor for GrantActor {
    type Msg = GrantMsg;
    type State = GrantState;
    type Arguments = GrantArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<GrantMsg>,
        args: GrantArgs,
    ) -> Result<GrantState, ActorProcessingErr> {
        let timer = myself.send_after(args.ttl, || GrantMsg::Expire);
        if let Some((_, every)) = &args.probe {
            myself.send_after(*every, || GrantMsg::Probe);
        }
        Ok(GrantState {
            scope: args.scope,
            expires_at: Instant::now() + args.ttl,
            gate: args.gate,
            probe: args.probe,
            unknown_probes: 0,
            on_end: args.on_end,
            end_reason: None,
            timer: Some(timer),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<GrantMsg>,
        message: GrantMsg,
        state: &mut GrantState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            GrantMsg::Authorize {
                service,
                risk,
                reply,
            } => {
                let answer = if Instant::now() >= state.expires_at {
                    Err(GrantRefusal::Expired)
                } else {
                    authorize(&state.scope, service, risk)
                };
                let _ = reply.send(answer);
            }
            GrantMsg::Revoke { reason, reply } => {
                state.end(&myself, reason).await;
                let _ = reply.send(());
            }
            GrantMsg::Expire => state.end(&myself, EndReason::Expired).await,
            GrantMsg::Probe => {
                if let Some((probe, _)) = &state.probe {
                    // The probe runs off the mailbox: Authorize keeps flowing.
                    let probe = probe.clone();
                    let me = myself.clone();
                    tokio::spawn(async move {
                        let _ = me.send_message(GrantMsg::Probed(probe().await));
                    });
                }
            }
            GrantMsg::Probed(liveness) => match liveness {
                Liveness::Alive => {
                    state.unknown_probes = 0;
                    schedule_probe(&myself, state);
                }
                Liveness::Ended(reason) => state.end(&myself, EndReason::JobEnded(reason)).await,
                Liveness::Unknown(why) => {
                    state.unknown_probes += 1;
                    if state.unknown_probes >= MAX_UNKNOWN_PROBES {
                        let reason = format!("job liveness could not be verified: {why}");
                        state.end(&myself, EndReason::JobEnded(reason)).await;
                    } else {
                        schedule_probe(&myself, state);
                    }
                }
            },
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<GrantMsg>,
        state: &mut GrantState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(timer) = state.timer.take() {
            timer.abort();
        }
        // Stopped from outside (a supervisor's stop, shutdown): still closed.
        let reason = state
            .end_reason
            .clone()
            .unwrap_or_else(|| EndReason::Other("stopped".to_owned()));
        state.gate.close(&reason).await;
        if let Some(on_end) = &state.on_end {
            on_end(&state.scope, &reason);
        }
        Ok(())
    }
}

fn schedule_probe(myself: &ActorRef<GrantMsg>, state: &GrantState) {
    if let Some((_, every)) = &state.probe {
        myself.send_after(*every, || GrantMsg::Probe);
    }
}

/// The scope check: declared, then within the subject's own access.
fn authorize(scope: &GrantScope, service: String, risk: Risk) -> Result<GrantScope, GrantRefusal> {
    let Some(declared) = scope.declared.get(&service) else {
        return Err(GrantRefusal::ServiceNotDeclared(service));
    };
    if risk > *declared {
        return Err(GrantRefusal::RiskNotDeclared {
            service,
            asked: risk,
            declared: *declared,
        });
    }
    match scope.services.get(&service) {
        Some(granted) if risk <= *granted => Ok(scope.clone()),
        granted => Err(GrantRefusal::OutsideSubjectScope {
            subject: scope.subject.clone(),
            owner: granted.map_or("none".to_owned(), |r| r.to_string()),
            service,
            asked: risk,
        }),
    }
}
