use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr,
    SupervisionEvent,
};

use crate::backoff::{Intensity, RestartPolicy};
use crate::events::{LifecycleEvents, LifecycleKind};
use crate::registry::Registry;

/// When a child is restarted (Erlang/OTP vocabulary).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// Always restarted, whether it failed or stopped.
    Permanent,
    /// Restarted only when it failed.
    Transient,
    /// Never restarted: a session, a grant. Its end is final.
    Temporary,
}

type StartFn =
    Arc<dyn Fn(ActorCell) -> BoxFuture<'static, Result<ActorCell, SpawnErr>> + Send + Sync>;

/// How to (re)start one child: a key, a restart rule and a factory.
#[derive(Clone)]
pub struct ChildSpec {
    pub key: String,
    pub restart: Restart,
    start: StartFn,
}

impl std::fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildSpec")
            .field("key", &self.key)
            .field("restart", &self.restart)
            .finish()
    }
}

impl ChildSpec {
    /// `make` builds a fresh actor value and its arguments for every (re)start.
    pub fn new<A, F>(key: impl Into<String>, restart: Restart, make: F) -> Self
    where
        A: Actor,
        F: Fn() -> (A, A::Arguments) + Send + Sync + 'static,
    {
        let make = Arc::new(make);
        let start: StartFn = Arc::new(move |supervisor: ActorCell| {
            let (actor, args) = make();
            Box::pin(async move {
                let (actor_ref, _join) = A::spawn_linked(None, actor, args, supervisor).await?;
                Ok(actor_ref.get_cell())
            })
        });
        Self {
            key: key.into(),
            restart,
            start,
        }
    }
}

/// A child as seen from outside, for health pages.
#[derive(Debug, Clone)]
pub struct ChildInfo {
    pub key: String,
    pub running: bool,
    pub restarts: u32,
}

pub enum SupervisorMsg {
    /// Start a child (replacing nothing: a duplicate key is an error).
    StartChild(ChildSpec, RpcReplyPort<Result<ActorCell, StartError>>),
    /// Stop a child for good (no restart). Replies whether it existed.
    StopChild(String, RpcReplyPort<bool>),
    /// Internal: a backoff delay elapsed.
    RestartDue {
        key: String,
    },
    /// Stop all children in reverse start order, waiting for each, then stop.
    Shutdown(RpcReplyPort<()>),
    Children(RpcReplyPort<Vec<ChildInfo>>),
}

pub struct SupervisorArgs {
    pub name: String,
    pub policy: RestartPolicy,
    pub events: LifecycleEvents,
    pub registry: Registry,
    /// How long each child gets to stop during an ordered shutdown.
    pub stop_timeout: Duration,
    /// Children started, in order, when the supervisor starts — and again when a
    /// restarted supervisor rebuilds its subtree.
    pub children: Vec<ChildSpec>,
}

/// One-for-one supervisor with exponential backoff and an intensity limit.
pub struct Supervisor;

struct Child {
    spec: ChildSpec,
    cell: Option<ActorCell>,
    started_at: Instant,
    consecutive_failures: u32,
    restarts: u32,
}

/// Children by key (a map: a sessions supervisor holds thousands), and
/// their start order (shutdown walks it backwards).
#[derive(Default)]
struct Children {
    by_key: HashMap<String, (u64, Child)>,
    order: std::collections::BTreeMap<u64, String>,
    next: u64,
}

impl Children {
    fn get_mut(&mut self, key: &str) -> Option<&mut Child> {
        self.by_key.get_mut(key).map(|(_, child)| child)
    }

    fn push(&mut self, child: Child) {
        let seq = self.next;
        self.next += 1;
        self.order.insert(seq, child.spec.key.clone());
        self.by_key.insert(child.spec.key.clone(), (seq, child));
    }

    fn remove(&mut self, key: &str) {
        if let Some((seq, _)) = self.by_key.remove(key) {
            self.order.remove(&seq);
        }
    }

    fn clear(&mut self) {
        self.by_key.clear();
        self.order.clear();
    }

    /// In start order.
    fn in_start_order(&self) -> impl DoubleEndedIterator<Item = &Child> {
        self.order
            .values()
            .filter_map(|key| self.by_key.get(key).map(|(_, child)| child))
    }
}

pub struct SupervisorState {
    name: String,
    policy: RestartPolicy,
    events: LifecycleEvents,
    registry: Registry,
    stop_timeout: Duration,
    children: Children,
    by_actor: HashMap<ActorId, String>,
    intensity: Intensity,
    shutting_down: bool,
    initial: Vec<ChildSpec>,
}

impl SupervisorState {
    fn child_mut(&mut self, key: &str) -> Option<&mut Child> {
        self.children.get_mut(key)
    }

    fn add_child(&mut self, spec: ChildSpec) {
        self.children.push(Child {
            spec,
            cell: None,
            started_at: Instant::now(),
            consecutive_failures: 0,
            restarts: 0,
        });
    }

    fn remove_child(&mut self, key: &str) {
        self.children.remove(key);
    }

    async fn spawn(&mut self, myself: &ActorCell, key: &str) -> Result<ActorCell, SpawnErr> {
        let Some(child) = self.child_mut(key) else {
            return Err(SpawnErr::StartupFailed("unknown child".into()));
        };
        let start = child.spec.start.clone();
        let cell = start(myself.clone()).await?;
        let child = self.child_mut(key).expect("child present: checked above");
        child.cell = Some(cell.clone());
        child.started_at = Instant::now();
        self.by_actor.insert(cell.get_id(), key.to_owned());
        self.registry.insert(key, cell.clone());
        Ok(cell)
    }

    /// Decide what happens after `key` ended. Err = intensity exceeded: escalate.
    fn after_exit(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        key: &str,
        failed: bool,
    ) -> Result<(), ActorProcessingErr> {
        let policy = self.policy.clone();
        let name = self.name.clone();
        let Some(child) = self.child_mut(key) else {
            return Ok(());
        };
        let restart = match child.spec.restart {
            Restart::Permanent => true,
            Restart::Transient => failed,
            Restart::Temporary => false,
        };
        if !restart {
            self.remove_child(key);
            return Ok(());
        }
        // A child that ran well for a whole window starts its backoff afresh.
        if child.started_at.elapsed() > policy.window {
            child.consecutive_failures = 0;
        }
        child.consecutive_failures += 1;
        let attempt = child.consecutive_failures;
        if !self.intensity.admit(&policy, Instant::now()) {
            let error = format!(
                "supervisor '{name}': more than {} restarts in {:?} (last: '{key}')",
                policy.max_restarts, policy.window
            );
            self.events.emit(
                &name,
                key,
                LifecycleKind::Escalated {
                    error: error.clone(),
                },
            );
            // A failing actor skips post_stop, so stop the children here.
            self.stop_all_children();
            return Err(error.into());
        }
        let delay = policy.backoff(attempt);
        let key_owned = key.to_owned();
        myself.send_after(delay, move || SupervisorMsg::RestartDue { key: key_owned });
        Ok(())
    }

    fn stop_all_children(&mut self) {
        self.shutting_down = true;
        for child in self.children.in_start_order().rev() {
            if let Some(cell) = &child.cell {
                cell.stop(Some("supervisor escalated".into()));
            }
        }
    }

    fn forget(&mut self, cell: &ActorCell) -> Option<String> {
        let key = self.by_actor.remove(&cell.get_id())?;
        self.registry.remove_if(&key, cell);
        if let Some(child) = self.child_mut(&key) {
            child.cell = None;
        }
        Some(key)
    }
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: SupervisorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(SupervisorState {
            name: args.name,
            policy: args.policy,
            events: args.events,
            registry: args.registry,
            stop_timeout: args.stop_timeout,
            children: Children::default(),
            by_actor: HashMap::new(),
            intensity: Intensity::default(),
            shutting_down: false,
            initial: args.children,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        for spec in std::mem::take(&mut state.initial) {
            let key = spec.key.clone();
            state.add_child(spec);
            state
                .spawn(&myself.get_cell(), &key)
                .await
                .map_err(|e| format!("starting '{key}': {e}"))?;
            state.events.emit(&state.name, &key, LifecycleKind::Started);
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::StartChild(spec, reply) => {
                if state.shutting_down {
                    let _ = reply.send(Err(StartError::ShuttingDown));
                    return Ok(());
                }
                if state.child_mut(&spec.key).is_some() {
                    let _ = reply.send(Err(StartError::AlreadyExists(spec.key)));
                    return Ok(());
                }
                let key = spec.key.clone();
                state.add_child(spec);
                match state.spawn(&myself.get_cell(), &key).await {
                    Ok(cell) => {
                        state.events.emit(&state.name, &key, LifecycleKind::Started);
                        let _ = reply.send(Ok(cell));
                    }
                    Err(err) => {
                        state.remove_child(&key);
                        let _ = reply.send(Err(StartError::Failed(err.to_string())));
                    }
                }
            }
            SupervisorMsg::StopChild(key, reply) => {
                let cell = state.child_mut(&key).and_then(|c| c.cell.clone());
                let existed = state.child_mut(&key).is_some();
                state.remove_child(&key);
                if let Some(cell) = cell {
                    state.forget(&cell);
                    cell.stop(Some("stopped by supervisor".into()));
                    state.events.emit(
                        &state.name,
                        &key,
                        LifecycleKind::Stopped {
                            reason: Some("stopped by supervisor".into()),
                        },
                    );
                }
                let _ = reply.send(existed);
            }
            SupervisorMsg::RestartDue { key } => {
                if state.shutting_down {
                    return Ok(());
                }
                let Some(child) = state.child_mut(&key) else {
                    return Ok(());
                };
                if child.cell.is_some() {
                    return Ok(());
                }
                let attempt = child.consecutive_failures;
                let after = state.policy.backoff(attempt);
                match state.spawn(&myself.get_cell(), &key).await {
                    Ok(_) => {
                        if let Some(child) = state.child_mut(&key) {
                            child.restarts += 1;
                        }
                        state.events.emit(
                            &state.name,
                            &key,
                            LifecycleKind::Restarted { attempt, after },
                        );
                    }
                    Err(err) => {
                        state.events.emit(
                            &state.name,
                            &key,
                            LifecycleKind::Failed {
                                error: format!("restart failed: {err}"),
                            },
                        );
                        state.after_exit(&myself, &key, true)?;
                    }
                }
            }
            SupervisorMsg::Shutdown(reply) => {
                state.shutting_down = true;
                let cells: Vec<(String, ActorCell)> = state
                    .children
                    .in_start_order()
                    .rev()
                    .filter_map(|c| c.cell.clone().map(|cell| (c.spec.key.clone(), cell)))
                    .collect();
                for (key, cell) in cells {
                    // A nested supervisor gets the same ordered shutdown of its own children.
                    let nested: ActorRef<SupervisorMsg> = ActorRef::from(cell.clone());
                    if cell.is_message_type_of::<SupervisorMsg>() == Some(true) {
                        let _ = nested
                            .call(SupervisorMsg::Shutdown, Some(state.stop_timeout))
                            .await;
                    }
                    let _ = cell
                        .stop_and_wait(Some("shutdown".into()), Some(state.stop_timeout))
                        .await;
                    state.forget(&cell);
                    state.events.emit(
                        &state.name,
                        &key,
                        LifecycleKind::Stopped {
                            reason: Some("shutdown".into()),
                        },
                    );
                }
                state.children.clear();
                let _ = reply.send(());
                myself.stop(Some("shutdown".into()));
            }
            SupervisorMsg::Children(reply) => {
                let info = state
                    .children
                    .in_start_order()
                    .map(|c| ChildInfo {
                        key: c.spec.key.clone(),
                        running: c.cell.is_some(),
                        restarts: c.restarts,
                    })
                    .collect();
                let _ = reply.send(info);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, error) => {
                let Some(key) = state.forget(&cell) else {
                    return Ok(());
                };
                state.events.emit(
                    &state.name,
                    &key,
                    LifecycleKind::Failed {
                        error: error.to_string(),
                    },
                );
                if !state.shutting_down {
                    state.after_exit(&myself, &key, true)?;
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                let Some(key) = state.forget(&cell) else {
                    return Ok(());
                };
                state
                    .events
                    .emit(&state.name, &key, LifecycleKind::Stopped { reason });
                if !state.shutting_down {
                    state.after_exit(&myself, &key, false)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        for child in state.children.in_start_order().rev() {
            if let Some(cell) = &child.cell {
                cell.stop(Some("supervisor stopped".into()));
            }
        }
        Ok(())
    }
}

/// Convenience: ask `supervisor` to start `spec`.
pub async fn start_child(
    supervisor: &ActorRef<SupervisorMsg>,
    spec: ChildSpec,
) -> Result<ActorCell, StartError> {
    match supervisor
        .call(|reply| SupervisorMsg::StartChild(spec, reply), None)
        .await
    {
        Ok(ractor::rpc::CallResult::Success(result)) => result,
        Ok(_) => Err(StartError::Unavailable("it did not answer".into())),
        Err(err) => Err(StartError::Unavailable(err.to_string())),
    }
}

/// Why a supervisor did not start a child.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    #[error("child '{0}' already exists")]
    AlreadyExists(String),
    #[error("supervisor is shutting down")]
    ShuttingDown,
    #[error("the child failed to start: {0}")]
    Failed(String),
    #[error("supervisor unavailable: {0}")]
    Unavailable(String),
}

/// Convenience: ask `supervisor` to stop `key` for good.
pub async fn stop_child(supervisor: &ActorRef<SupervisorMsg>, key: &str) -> bool {
    let key = key.to_owned();
    matches!(
        supervisor
            .call(|reply| SupervisorMsg::StopChild(key, reply), None)
            .await,
        Ok(ractor::rpc::CallResult::Success(true))
    )
}
