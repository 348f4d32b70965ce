//! One `SessionActor` per MCP session: the lifecycle of a 2025-era
//! `Mcp-Session-Id` session, or, for stateless (2026-07-28) clients, which
//! have no session id, of the credential plus the client's declared identity.
//!
//! The session's record (owner, client, timestamps, call count) is a
//! [`SessionLedger`] that the actor and the calls share. A call is admitted by
//! touching the ledger under a short lock on its own task, not by a mailbox
//! round trip: every call of a stateless client lands in one session, and a
//! mailbox there would put all of that client's traffic in one queue. The
//! actor owns the lifecycle: it ends the ledger (under the same lock) before
//! it stops, so once a session is ending no call is admitted into it.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

/// Who the session belongs to, as far as the session actor needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionOwner {
    /// The id of the gateway credential that opened the session.
    pub credential_id: String,
    pub subject: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientInfo {
    pub name: Option<String>,
    pub version: Option<String>,
}

/// A snapshot handed to a call that the session admitted.
#[derive(Debug, Clone)]
pub struct SessionTicket {
    pub key: String,
    pub client: ClientInfo,
    pub calls: u64,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SessionRefusal {
    #[error("this session belongs to another credential")]
    WrongCredential,
    /// The session ended (idle, deleted, shut down); a new one may start.
    #[error("this session has ended")]
    Ended,
}

/// Called when the session ends (idle, deleted, shut down), e.g. to close the
/// transport-level session as well.
pub type OnSessionEnd = Arc<dyn Fn(&str) + Send + Sync>;

/// A session's record, shared by its actor and the calls it admits.
pub struct SessionLedger {
    key: String,
    owner: SessionOwner,
    created: Instant,
    idle_timeout: Duration,
    live: Mutex<Live>,
}

struct Live {
    client: ClientInfo,
    last_seen: Instant,
    calls: u64,
    ended: bool,
}

impl SessionLedger {
    pub fn new(
        key: String,
        owner: SessionOwner,
        client: ClientInfo,
        idle_timeout: Duration,
    ) -> Arc<Self> {
        let now = Instant::now();
        Arc::new(Self {
            key,
            owner,
            created: now,
            idle_timeout,
            live: Mutex::new(Live {
                client,
                last_seen: now,
                calls: 0,
                ended: false,
            }),
        })
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// Admit one call by `credential_id`; refresh last-seen.
    pub fn begin_call(
        &self,
        credential_id: &str,
        client: &ClientInfo,
    ) -> Result<SessionTicket, SessionRefusal> {
        if credential_id != self.owner.credential_id {
            return Err(SessionRefusal::WrongCredential);
        }
        let mut live = self.live();
        if live.ended {
            return Err(SessionRefusal::Ended);
        }
        live.last_seen = Instant::now();
        live.calls += 1;
        if live.client.name.is_none() && client.name.is_some() {
            live.client = client.clone();
        }
        Ok(SessionTicket {
            key: self.key.clone(),
            client: live.client.clone(),
            calls: live.calls,
        })
    }

    pub fn is_ended(&self) -> bool {
        self.live().ended
    }

    pub fn summary(&self) -> SessionSummary {
        let live = self.live();
        SessionSummary {
            key: self.key.clone(),
            subject: self.owner.subject.clone(),
            client: live.client.clone(),
            age: self.created.elapsed(),
            idle: live.last_seen.elapsed(),
            calls: live.calls,
        }
    }

    /// End the session if it has been idle for its timeout; true if it ended.
    fn end_if_idle(&self) -> bool {
        let mut live = self.live();
        if !live.ended && live.last_seen.elapsed() >= self.idle_timeout {
            live.ended = true;
        }
        live.ended
    }

    fn end(&self) {
        self.live().ended = true;
    }

    /// The lock is only held for a few field updates, never across an await;
    /// a panic while holding it cannot leave the record half-written.
    fn live(&self) -> MutexGuard<'_, Live> {
        self.live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

pub enum SessionMsg {
    /// Periodic idle check (sent by a timer).
    IdleCheck,
    Describe(RpcReplyPort<SessionSummary>),
}

#[derive(Debug, Clone)]
pub struct SessionSummary {
    pub key: String,
    pub subject: String,
    pub client: ClientInfo,
    pub age: Duration,
    pub idle: Duration,
    pub calls: u64,
}

pub struct SessionArgs {
    pub ledger: Arc<SessionLedger>,
    pub on_end: Option<OnSessionEnd>,
}

pub struct SessionActor;

pub struct SessionState {
    ledger: Arc<SessionLedger>,
    on_end: Option<OnSessionEnd>,
    timer: Option<tokio::task::JoinHandle<()>>,
}

impl Actor for SessionActor {
    type Msg = SessionMsg;
    type State = SessionState;
    type Arguments = SessionArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SessionMsg>,
        args: SessionArgs,
    ) -> Result<SessionState, ActorProcessingErr> {
        let period = (args.ledger.idle_timeout / 4)
            .clamp(Duration::from_millis(50), Duration::from_secs(30));
        let timer = myself.send_interval(period, || SessionMsg::IdleCheck);
        Ok(SessionState {
            ledger: args.ledger,
            on_end: args.on_end,
            timer: Some(timer),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<SessionMsg>,
        message: SessionMsg,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SessionMsg::IdleCheck => {
                if state.ledger.end_if_idle() {
                    tracing::info!(session = %state.ledger.key, "session idle; ending it");
                    myself.stop(Some("idle timeout".into()));
                }
            }
            SessionMsg::Describe(reply) => {
                let _ = reply.send(state.ledger.summary());
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<SessionMsg>,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        // However the actor stops (idle, DELETE, shutdown), no call is
        // admitted into the session after this.
        state.ledger.end();
        if let Some(timer) = state.timer.take() {
            timer.abort();
        }
        if let Some(on_end) = &state.on_end {
            on_end(&state.ledger.key);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn ledger(idle: Duration) -> Arc<SessionLedger> {
        SessionLedger::new(
            "cred:c1:-/-".into(),
            SessionOwner {
                credential_id: "c1".into(),
                subject: "ann@example.com".into(),
            },
            ClientInfo::default(),
            idle,
        )
    }

    #[test]
    fn calls_are_admitted_counted_and_named_by_the_first_client_that_says_who_it_is() {
        let ledger = ledger(Duration::from_secs(60));
        let named = ClientInfo {
            name: Some("claude".into()),
            version: Some("1".into()),
        };
        assert_eq!(
            ledger
                .begin_call("c1", &ClientInfo::default())
                .unwrap()
                .calls,
            1
        );
        let ticket = ledger.begin_call("c1", &named).unwrap();
        assert_eq!((ticket.calls, ticket.client.clone()), (2, named));
        assert_eq!(
            ledger.begin_call("c2", &ClientInfo::default()).unwrap_err(),
            SessionRefusal::WrongCredential
        );
        assert_eq!(ledger.summary().calls, 2, "a refused call is not counted");
    }

    #[tokio::test]
    async fn an_idle_session_ends_and_admits_no_call_after() {
        let ledger = ledger(Duration::from_millis(100));
        let ended = Arc::new(AtomicUsize::new(0));
        let on_end: OnSessionEnd = {
            let ended = ended.clone();
            Arc::new(move |_| {
                ended.fetch_add(1, Ordering::SeqCst);
            })
        };
        let (actor, handle) = Actor::spawn(
            None,
            SessionActor,
            SessionArgs {
                ledger: ledger.clone(),
                on_end: Some(on_end),
            },
        )
        .await
        .unwrap();
        // Calls keep it alive past its timeout.
        for _ in 0..6 {
            tokio::time::sleep(Duration::from_millis(40)).await;
            ledger.begin_call("c1", &ClientInfo::default()).unwrap();
        }
        assert_eq!(ended.load(Ordering::SeqCst), 0);
        let summary = actor.call(SessionMsg::Describe, None).await.unwrap();
        assert_eq!(summary.unwrap().calls, 6);
        tokio::time::timeout(Duration::from_secs(5), handle)
            .await
            .expect("the idle session ended")
            .unwrap();
        assert_eq!(ended.load(Ordering::SeqCst), 1);
        assert_eq!(
            ledger.begin_call("c1", &ClientInfo::default()).unwrap_err(),
            SessionRefusal::Ended
        );
    }
}
