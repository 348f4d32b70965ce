//! One `SessionActor` per MCP session.
//!
//! For the initialize-era protocol the key is the `Mcp-Session-Id`; for
//! stateless (2026-07-28) clients, which have no session id, it is the
//! credential plus the client's declared identity. The actor owns the
//! session's principal, client info and timestamps and ends the session when
//! idle. A call asks it to `BeginCall` (a microsecond-scale touch) and then runs
//! on the caller's own task: calls of one session never wait on each other.

use std::sync::Arc;
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
}

/// Called when the session ends (idle, deleted, shut down), e.g. to close the
/// transport-level session as well.
pub type OnSessionEnd = Arc<dyn Fn(&str) + Send + Sync>;

pub enum SessionMsg {
    /// Admit one call by `credential_id`; refresh last-seen.
    BeginCall {
        credential_id: String,
        client: ClientInfo,
        reply: RpcReplyPort<Result<SessionTicket, SessionRefusal>>,
    },
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
    pub key: String,
    pub owner: SessionOwner,
    pub client: ClientInfo,
    pub idle_timeout: Duration,
    pub on_end: Option<OnSessionEnd>,
}

pub struct SessionActor;

pub struct SessionState {
    key: String,
    owner: SessionOwner,
    client: ClientInfo,
    created: Instant,
    last_seen: Instant,
    idle_timeout: Duration,
    calls: u64,
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
        let period =
            (args.idle_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(30));
        let timer = myself.send_interval(period, || SessionMsg::IdleCheck);
        let now = Instant::now();
        Ok(SessionState {
            key: args.key,
            owner: args.owner,
            client: args.client,
            created: now,
            last_seen: now,
            idle_timeout: args.idle_timeout,
            calls: 0,
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
            SessionMsg::BeginCall {
                credential_id,
                client,
                reply,
            } => {
                if credential_id != state.owner.credential_id {
                    let _ = reply.send(Err(SessionRefusal::WrongCredential));
                    return Ok(());
                }
                state.last_seen = Instant::now();
                state.calls += 1;
                if state.client.name.is_none() && client.name.is_some() {
                    state.client = client;
                }
                let _ = reply.send(Ok(SessionTicket {
                    key: state.key.clone(),
                    client: state.client.clone(),
                    calls: state.calls,
                }));
            }
            SessionMsg::IdleCheck => {
                if state.last_seen.elapsed() >= state.idle_timeout {
                    tracing::info!(session = %state.key, "session idle; ending it");
                    myself.stop(Some("idle timeout".into()));
                }
            }
            SessionMsg::Describe(reply) => {
                let _ = reply.send(SessionSummary {
                    key: state.key.clone(),
                    subject: state.owner.subject.clone(),
                    client: state.client.clone(),
                    age: state.created.elapsed(),
                    idle: state.last_seen.elapsed(),
                    calls: state.calls,
                });
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<SessionMsg>,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(timer) = state.timer.take() {
            timer.abort();
        }
        if let Some(on_end) = &state.on_end {
            on_end(&state.key);
        }
        Ok(())
    }
}
