//! MCP sessions: one `SessionActor` per session under the `sessions`
//! supervisor, rmcp's session manager, and which credential opened which
//! `Mcp-Session-Id` (a session presented by another credential is refused).

use std::sync::Arc;
use std::time::Duration;

use actors::session::{
    ClientInfo, OnSessionEnd, SessionActor, SessionArgs, SessionLedger, SessionOwner,
    SessionRefusal, SessionTicket,
};
use dashmap::{DashMap, DashSet};
use ractor::ActorRef;
use rmcp::transport::streamable_http_server::session::SessionManager;
use rmcp::transport::streamable_http_server::session::local::{LocalSessionManager, SessionConfig};
use supervision::{ChildSpec, Registry, Restart, StartError, SupervisorMsg, start_child};

use crate::principal::Principal;

/// The sessions supervisor's key in the registry.
pub const SUPERVISOR_KEY: &str = "sessions";

pub fn session_key(key: &str) -> String {
    format!("session/{key}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("this MCP session belongs to another credential")]
    WrongCredential,
    #[error("the session could not be started")]
    Unavailable,
}

pub struct Sessions {
    registry: Registry,
    manager: Arc<LocalSessionManager>,
    /// Each running session's ledger, by session key: where calls are
    /// admitted. The registry says whether the session's actor runs.
    ledgers: Arc<DashMap<String, Arc<SessionLedger>>>,
    /// `Mcp-Session-Id` → id of the credential that opened it.
    bindings: Arc<DashMap<String, String>>,
    /// Credentials whose sessions are about to be ended.
    retiring: DashSet<String>,
    idle_timeout: Duration,
}

/// How long the sessions of a credential that ended stay open.
pub const RETIRE_GRACE: Duration = Duration::from_secs(2);

impl Sessions {
    pub fn new(registry: Registry, idle_timeout: Duration) -> Self {
        let mut manager = LocalSessionManager::default();
        let mut config = SessionConfig::default();
        config.keep_alive = Some(idle_timeout);
        manager.session_config = config;
        Self {
            registry,
            manager: Arc::new(manager),
            ledgers: Arc::new(DashMap::new()),
            bindings: Arc::new(DashMap::new()),
            retiring: DashSet::new(),
            idle_timeout,
        }
    }

    /// rmcp's session manager (the transport's view of the same sessions).
    pub fn manager(&self) -> Arc<LocalSessionManager> {
        self.manager.clone()
    }

    /// Remember that `credential_id` opened `session_id`.
    pub fn bind(&self, session_id: &str, credential_id: String) {
        self.bindings.insert(session_id.to_owned(), credential_id);
    }

    /// The credential that opened `session_id`, if it is known.
    pub fn owner(&self, session_id: &str) -> Option<String> {
        self.bindings.get(session_id).map(|o| o.value().clone())
    }

    pub fn is_bound(&self, session_id: &str) -> bool {
        self.bindings.contains_key(session_id)
    }

    pub fn count(&self) -> usize {
        self.registry.count_with_prefix("session/")
    }

    /// Admit a call into its session, creating the session actor on first use.
    pub async fn begin_call(
        &self,
        principal: &Principal,
        mcp_session_id: Option<&str>,
        client: ClientInfo,
    ) -> Result<SessionTicket, SessionError> {
        let key = match mcp_session_id {
            Some(id) => format!("mcp:{id}"),
            None => format!(
                "cred:{}:{}/{}",
                principal.credential_id,
                client.name.as_deref().unwrap_or("-"),
                client.version.as_deref().unwrap_or("-")
            ),
        };
        let registry_key = session_key(&key);
        for _ in 0..3 {
            let ledger = self
                .ledgers
                .get(&key)
                .map(|l| l.value().clone())
                .filter(|_| self.registry.contains(&registry_key));
            let Some(ledger) = ledger else {
                self.start(&key, principal, client.clone()).await?;
                continue;
            };
            match ledger.begin_call(&principal.credential_id, &client) {
                Ok(ticket) => return Ok(ticket),
                Err(SessionRefusal::WrongCredential) => return Err(SessionError::WrongCredential),
                // The session ended between lookup and call: start afresh.
                Err(SessionRefusal::Ended) => continue,
            }
        }
        Err(SessionError::Unavailable)
    }

    async fn start(
        &self,
        key: &str,
        principal: &Principal,
        client: ClientInfo,
    ) -> Result<(), SessionError> {
        let sessions: ActorRef<SupervisorMsg> = self
            .registry
            .get(SUPERVISOR_KEY)
            .ok_or(SessionError::Unavailable)?;
        let manager = self.manager.clone();
        let bindings = self.bindings.clone();
        let ledgers = self.ledgers.clone();
        let spec_ledgers = self.ledgers.clone();
        let on_end: OnSessionEnd = Arc::new(move |key: &str| {
            // A new session under the same key has a ledger that is not ended.
            ledgers.remove_if(key, |_, l| l.is_ended());
            if let Some(id) = key.strip_prefix("mcp:") {
                bindings.remove(id);
                let manager = manager.clone();
                let id: Arc<str> = Arc::from(id);
                tokio::spawn(async move {
                    let _ = manager.close_session(&id).await;
                });
            }
        });
        let args_key = key.to_owned();
        let owner = SessionOwner {
            credential_id: principal.credential_id.clone(),
            subject: principal.subject.clone(),
        };
        let idle_timeout = self.idle_timeout;
        // The supervisor calls this only for the call that wins the start, so
        // the ledger in the map is always the running actor's.
        let spec = ChildSpec::new(session_key(key), Restart::Temporary, move || {
            let ledger = SessionLedger::new(
                args_key.clone(),
                owner.clone(),
                client.clone(),
                idle_timeout,
            );
            spec_ledgers.insert(args_key.clone(), ledger.clone());
            (
                SessionActor,
                SessionArgs {
                    ledger,
                    on_end: Some(on_end.clone()),
                },
            )
        });
        match start_child(&sessions, spec).await {
            // Another call of the same session won the race; use its actor.
            Ok(_) | Err(StartError::AlreadyExists(_)) => Ok(()),
            Err(_) => Err(SessionError::Unavailable),
        }
    }

    /// End, after [`RETIRE_GRACE`], every session opened with `credential_id`
    /// (a revoked or expired token, an ended grant): they can never be used
    /// again, and a client cannot close them itself, since even its DELETE is
    /// refused. The grace lets answers already on their way reach the client.
    pub fn retire_credential(self: &Arc<Self>, credential_id: &str) {
        if !self.retiring.insert(credential_id.to_owned()) {
            return;
        }
        let sessions = self.clone();
        let credential_id = credential_id.to_owned();
        tokio::spawn(async move {
            tokio::time::sleep(RETIRE_GRACE).await;
            sessions.end_credential(&credential_id).await;
            sessions.retiring.remove(&credential_id);
        });
    }

    async fn end_credential(&self, credential_id: &str) {
        let bound: Vec<String> = self
            .bindings
            .iter()
            .filter(|b| b.value() == credential_id)
            .map(|b| b.key().clone())
            .collect();
        for id in &bound {
            self.end(id).await;
        }
        // Sessionless (2026-07-28 era) callers are keyed by credential.
        let Some(sessions) = self.registry.get::<SupervisorMsg>(SUPERVISOR_KEY) else {
            return;
        };
        for key in self
            .registry
            .keys_with_prefix(&session_key(&format!("cred:{credential_id}:")))
        {
            supervision::stop_child(&sessions, &key).await;
        }
    }

    /// End a session (DELETE /mcp).
    pub async fn end(&self, mcp_session_id: &str) {
        self.bindings.remove(mcp_session_id);
        if let Some(sessions) = self.registry.get::<SupervisorMsg>(SUPERVISOR_KEY) {
            supervision::stop_child(&sessions, &session_key(&format!("mcp:{mcp_session_id}")))
                .await;
        }
    }
}
