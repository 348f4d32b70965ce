//! One `GrantActor` per delegation grant (a Windmill job acting as its owner).
//!
//! The actor *is* the grant: it holds the verified identity and the scope, and
//! answers `Authorize` for every call made under it. Revocation stops the actor;
//! a call that cannot reach it is refused. Expiry stops it too. Verification of
//! the job and the token exchange that mints grants arrive with delegation; the
//! lifecycle, the scope check and the refusal on absence are here now.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

/// Risk classes, ordered: a grant of `Write` covers `Read`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Risk {
    Read,
    Write,
    HighRisk,
}

impl Risk {
    pub fn as_str(self) -> &'static str {
        match self {
            Risk::Read => "read",
            Risk::Write => "write",
            Risk::HighRisk => "high_risk",
        }
    }

    pub fn parse(text: &str) -> Option<Risk> {
        match text {
            "read" => Some(Risk::Read),
            "write" => Some(Risk::Write),
            "high_risk" => Some(Risk::HighRisk),
            _ => None,
        }
    }
}

impl std::fmt::Display for Risk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone)]
pub struct GrantScope {
    pub grant_id: String,
    /// The person acted for.
    pub subject: String,
    /// The workflow that drives the calls.
    pub actor: String,
    /// Highest risk class granted per service.
    pub services: BTreeMap<String, Risk>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantRefusal {
    #[error("service '{0}' is not in this grant")]
    ServiceNotGranted(String),
    #[error("risk class {asked} is not granted for '{service}' (granted: {granted})")]
    RiskNotGranted {
        service: String,
        asked: Risk,
        granted: Risk,
    },
    #[error("the grant has expired")]
    Expired,
}

pub enum GrantMsg {
    Authorize {
        service: String,
        risk: Risk,
        reply: RpcReplyPort<Result<GrantScope, GrantRefusal>>,
    },
    Expire,
}

pub struct GrantArgs {
    pub scope: GrantScope,
    pub ttl: Duration,
}

pub struct GrantActor;

pub struct GrantState {
    scope: GrantScope,
    expires_at: Instant,
    timer: Option<tokio::task::JoinHandle<Result<(), ractor::MessagingErr<GrantMsg>>>>,
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
        Ok(GrantState {
            scope: args.scope,
            expires_at: Instant::now() + args.ttl,
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
                    match state.scope.services.get(&service) {
                        None => Err(GrantRefusal::ServiceNotGranted(service)),
                        Some(granted) if risk > *granted => Err(GrantRefusal::RiskNotGranted {
                            service,
                            asked: risk,
                            granted: *granted,
                        }),
                        Some(_) => Ok(state.scope.clone()),
                    }
                };
                let _ = reply.send(answer);
            }
            GrantMsg::Expire => myself.stop(Some("expired".into())),
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
        Ok(())
    }
}
