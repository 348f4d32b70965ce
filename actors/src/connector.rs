//! One `ConnectorActor` per configured upstream MCP service.
//!
//! The actor owns the upstream connection (a stdio child process or a
//! Streamable HTTP client) and publishes the upstream's tools and its own state
//! in the [`ServiceDirectory`], which readers consult without a mailbox hop.
//! A call is dispatched from the mailbox to a spawned task, so one slow call
//! never queues the next. A transport failure or a timeout makes the actor fail
//! on purpose: its supervisor restarts it with backoff and the child process is
//! replaced, while other services are untouched.
//!
//! Beyond tools, an upstream's resources, resource templates and prompts are
//! listed at connect (and again when it announces a change) and published the
//! same way; reads, prompt gets, completions and resource subscriptions go
//! through the mailbox as an [`UpstreamRequest`], and what the upstream
//! announces (`list_changed`, `resources/updated`) goes out on the
//! directory's change channel for the gateway to relay to its clients.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use futures::stream::BoxStream;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, CallToolResult, JsonObject, RequestParamsMeta, Tool};
use rmcp::model::{ClientJsonRpcMessage, ClientRequest, JsonRpcMessage, JsonRpcRequest};
use rmcp::model::{
    CompleteRequestParams, CompleteResult, GetPromptRequestParams, GetPromptResult, Prompt,
    ReadResourceRequestParams, ReadResourceResult, Resource, ResourceTemplate,
    SubscribeRequestParams, UnsubscribeRequestParams,
};
use rmcp::service::{RoleClient, RunningService, ServiceError};
use rmcp::transport::streamable_http_client::{
    SseError, StreamableHttpClient, StreamableHttpClientTransportConfig, StreamableHttpError,
    StreamableHttpPostResponse, StreamableHttpResponseLimits,
};
use rmcp::transport::{StreamableHttpClientTransport, TokioChildProcess};

/// Where the upstream MCP server is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamSpec {
    Stdio {
        command: Vec<String>,
        env: BTreeMap<String, String>,
        cwd: Option<PathBuf>,
    },
    Http {
        url: String,
        /// Static headers the gateway holds for this upstream (its own credential,
        /// never the caller's token).
        headers: BTreeMap<String, String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectorState {
    Starting,
    Running,
    /// Failed and waiting for its supervisor to restart it.
    Down {
        error: String,
    },
}

impl ConnectorState {
    pub fn as_str(&self) -> &'static str {
        match self {
            ConnectorState::Starting => "starting",
            ConnectorState::Running => "running",
            ConnectorState::Down { .. } => "down",
        }
    }
}

/// What a connector publishes about itself.
#[derive(Debug, Clone)]
pub struct ConnectorStatus {
    pub state: ConnectorState,
    /// The upstream's tools as of the current connection.
    pub tools: Arc<Vec<Tool>>,
    /// Its resources, resource templates and prompts (empty if it has none).
    pub surface: Arc<Surface>,
    /// Increases with every successful connection; lets readers cache derived views.
    pub generation: u64,
    pub starts: u64,
    pub last_error: Option<String>,
    /// A native service's circuit breaker when it is not closed
    /// (`open: …`, `half_open: …`); `None` when calls flow.
    pub breaker: Option<String>,
}

/// What an MCP upstream offers besides tools, as of its current connection.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Surface {
    pub resources: Vec<Resource>,
    pub templates: Vec<ResourceTemplate>,
    pub prompts: Vec<Prompt>,
    pub features: UpstreamFeatures,
}

/// What the upstream declared in its capabilities.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpstreamFeatures {
    pub resources: bool,
    pub subscribe: bool,
    pub prompts: bool,
    pub completions: bool,
}

/// A change an upstream announced, for the gateway to relay to its clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirectoryChange {
    ResourcesListChanged {
        service: String,
    },
    PromptsListChanged {
        service: String,
    },
    /// A resource the gateway subscribed to changed (`uri` is the upstream's).
    ResourceUpdated {
        service: String,
        uri: String,
    },
}

impl DirectoryChange {
    pub fn service(&self) -> &str {
        match self {
            DirectoryChange::ResourcesListChanged { service }
            | DirectoryChange::PromptsListChanged { service }
            | DirectoryChange::ResourceUpdated { service, .. } => service,
        }
    }
}

/// Shared, lock-striped view of every connector's state and tools.
#[derive(Debug, Clone)]
pub struct ServiceDirectory {
    services: Arc<DashMap<String, ConnectorStatus>>,
    /// Each service's current connector, registered by the actor as it starts.
    connectors: Arc<DashMap<String, ConnectorRef>>,
    /// The MCP connectors' requests beyond tools (native services have none).
    upstreams: Arc<DashMap<String, UpstreamRef>>,
    /// Each connected MCP upstream's line for calls that skip the mailbox.
    lines: Arc<DashMap<String, Arc<DirectLine>>>,
    /// What upstreams announce; a slow listener misses changes (and is told).
    changes: tokio::sync::broadcast::Sender<DirectoryChange>,
}

impl Default for ServiceDirectory {
    fn default() -> Self {
        Self {
            services: Default::default(),
            connectors: Default::default(),
            upstreams: Default::default(),
            lines: Default::default(),
            changes: tokio::sync::broadcast::channel(256).0,
        }
    }
}

impl ServiceDirectory {
    /// Called by a connector actor as it starts (and restarts).
    pub fn register(&self, service: &str, connector: ConnectorRef) {
        self.connectors.insert(service.to_owned(), connector);
    }

    /// Called by an MCP connector as it starts: where its resources, prompts
    /// and completions are asked for.
    pub fn register_upstream(&self, service: &str, upstream: UpstreamRef) {
        self.upstreams.insert(service.to_owned(), upstream);
    }

    /// The MCP connector serving `service`, if it is an MCP upstream that started.
    pub fn upstream(&self, service: &str) -> Option<UpstreamRef> {
        self.upstreams.get(service).map(|c| c.value().clone())
    }

    /// Listen to what upstreams announce from now on.
    pub fn changes(&self) -> tokio::sync::broadcast::Receiver<DirectoryChange> {
        self.changes.subscribe()
    }

    /// Tell every listener (none listening is fine).
    pub fn announce(&self, change: DirectoryChange) {
        let _ = self.changes.send(change);
    }

    /// The direct line to `service`'s upstream, while its connector is
    /// connected and running.
    pub fn line(&self, service: &str) -> Option<Arc<DirectLine>> {
        self.lines
            .get(service)
            .map(|l| l.value().clone())
            .filter(|l| l.connector.get_status() == ractor::ActorStatus::Running)
    }

    fn open_line(&self, service: &str, line: DirectLine) {
        self.lines.insert(service.to_owned(), Arc::new(line));
    }

    /// Close `service`'s line (only the one of `connection`, if given).
    fn close_line(&self, service: &str, connection: Option<u64>) {
        self.lines
            .remove_if(service, |_, l| connection.is_none_or(|c| c == l.connection));
    }

    /// The connector serving `service`, if one has started.
    pub fn connector(&self, service: &str) -> Option<ConnectorRef> {
        self.connectors.get(service).map(|c| c.value().clone())
    }

    pub fn get(&self, service: &str) -> Option<ConnectorStatus> {
        self.services.get(service).map(|s| s.value().clone())
    }

    pub fn snapshot(&self) -> BTreeMap<String, ConnectorStatus> {
        self.services
            .iter()
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect()
    }

    pub fn update(&self, service: &str, change: impl FnOnce(&mut ConnectorStatus)) {
        let mut entry =
            self.services
                .entry(service.to_owned())
                .or_insert_with(|| ConnectorStatus {
                    state: ConnectorState::Starting,
                    tools: Arc::new(Vec::new()),
                    surface: Arc::new(Surface::default()),
                    generation: 0,
                    starts: 0,
                    last_error: None,
                    breaker: None,
                });
        change(entry.value_mut());
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ConnectorError {
    #[error("service '{0}' is not connected (starting or restarting)")]
    Unavailable(String),
    #[error("upstream did not answer within {0:?}")]
    Timeout(Duration),
    #[error("upstream connection failed: {0}")]
    Transport(String),
    /// The upstream answered with a JSON-RPC error.
    #[error("upstream error {code}: {message}")]
    Upstream { code: i32, message: String },
}

impl ConnectorError {
    /// Stable machine-readable code for audit rows.
    pub fn code(&self) -> &'static str {
        match self {
            ConnectorError::Unavailable(_) => "upstream_unavailable",
            ConnectorError::Timeout(_) => "upstream_timeout",
            ConnectorError::Transport(_) => "upstream_transport",
            ConnectorError::Upstream { .. } => "upstream_error",
        }
    }
}

pub enum ConnectorMsg {
    /// Sent to itself after start: connect and list tools.
    Connect,
    Call(ServiceCall),
    /// A read, prompt, completion or subscription for the upstream.
    Upstream(UpstreamRequest),
    /// The upstream announced a new tool list: fetch it (off the mailbox).
    RefreshTools,
    /// The upstream announced new resources or prompts: list them again.
    RefreshSurface,
    /// Internal: the relisted surface for connection `generation`.
    SurfaceRefreshed {
        generation: u64,
        surface: Surface,
    },
    /// Internal: an upstream subscription that failed is forgotten.
    SubscriptionFailed {
        uri: String,
    },
    /// Internal: the refreshed list for connection `generation`.
    ToolsRefreshed {
        generation: u64,
        tools: Vec<Tool>,
    },
    /// A call found the connection broken or hung; fail so the supervisor restarts us.
    UpstreamFault {
        connection: u64,
        reason: String,
    },
    #[cfg(feature = "fault-injection")]
    InjectPanic,
}

/// The one thing every connector does for its callers: run a call. Each
/// connector actor keeps its own private messages; callers hold a
/// [`ConnectorRef`], which sends only this.
pub struct ServiceCall {
    pub tool: String,
    pub arguments: Option<JsonObject>,
    /// The person acted for: a connector that holds per-user credentials
    /// (native services) acts with theirs. MCP upstreams ignore it.
    pub subject: String,
    /// The subject is asking in person (not a workflow or a delegated
    /// flow): only then may an answer carry links meant for them.
    pub interactive: bool,
    /// The W3C Trace Context of the gateway's span for this upstream call.
    pub trace: TraceContext,
    pub reply: RpcReplyPort<Result<CallToolResult, ConnectorError>>,
}

/// What the gateway asks an MCP upstream besides tools.
#[derive(Debug, Clone)]
pub enum UpstreamAsk {
    ReadResource {
        uri: String,
    },
    GetPrompt {
        name: String,
        arguments: Option<JsonObject>,
    },
    Complete(Box<CompleteRequestParams>),
    /// Counted: the upstream is subscribed once, however many clients ask.
    Subscribe {
        uri: String,
    },
    Unsubscribe {
        uri: String,
    },
}

/// The upstream's answer to an [`UpstreamAsk`].
#[derive(Debug, Clone)]
pub enum UpstreamAnswer {
    Resource(ReadResourceResult),
    Prompt(GetPromptResult),
    Completion(CompleteResult),
    Done,
}

/// An [`UpstreamAsk`] with its reply port; MCP connectors only.
pub struct UpstreamRequest {
    pub ask: UpstreamAsk,
    pub trace: TraceContext,
    pub reply: RpcReplyPort<Result<UpstreamAnswer, ConnectorError>>,
}

/// An MCP connector as the gateway's resource and prompt federation sees it.
pub type UpstreamRef = ractor::DerivedActorRef<UpstreamRequest>;

impl From<UpstreamRequest> for ConnectorMsg {
    fn from(request: UpstreamRequest) -> Self {
        ConnectorMsg::Upstream(request)
    }
}

impl TryFrom<ConnectorMsg> for UpstreamRequest {
    type Error = ConnectorMsg;

    fn try_from(message: ConnectorMsg) -> Result<Self, ConnectorMsg> {
        match message {
            ConnectorMsg::Upstream(request) => Ok(request),
            other => Err(other),
        }
    }
}

/// Ask `service`'s MCP connector; `deadline` bounds the whole exchange.
pub async fn ask(
    upstream: &UpstreamRef,
    service: &str,
    ask: UpstreamAsk,
    trace: TraceContext,
    deadline: Duration,
) -> Result<UpstreamAnswer, ConnectorError> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    upstream
        .send_message(UpstreamRequest {
            ask,
            trace,
            reply: reply.into(),
        })
        .map_err(|_| ConnectorError::Unavailable(service.to_owned()))?;
    match tokio::time::timeout(deadline, answer).await {
        Ok(Ok(result)) => result,
        Err(_) => Err(ConnectorError::Timeout(deadline)),
        Ok(Err(_)) => Err(ConnectorError::Unavailable(service.to_owned())),
    }
}

/// The W3C Trace Context of a call's upstream span, as `(key, value)` pairs:
/// `traceparent`, and `tracestate` when there is one; empty when traces are
/// off. An MCP upstream gets them in the request's `_meta` (SEP-414: the
/// keys `traceparent` and `tracestate`), an HTTP API as headers.
pub type TraceContext = Vec<(String, String)>;

/// A connector as its callers see it, whichever actor serves the service.
pub type ConnectorRef = ractor::DerivedActorRef<ServiceCall>;

impl From<ServiceCall> for ConnectorMsg {
    fn from(call: ServiceCall) -> Self {
        ConnectorMsg::Call(call)
    }
}

impl TryFrom<ConnectorMsg> for ServiceCall {
    type Error = ConnectorMsg;

    fn try_from(message: ConnectorMsg) -> Result<Self, ConnectorMsg> {
        match message {
            ConnectorMsg::Call(call) => Ok(call),
            other => Err(other),
        }
    }
}

pub struct ConnectorArgs {
    pub service: String,
    pub upstream: UpstreamSpec,
    pub call_timeout: Duration,
    pub connect_timeout: Duration,
    pub directory: ServiceDirectory,
}

pub struct ConnectorActor;

pub struct ConnectorActorState {
    service: String,
    upstream: UpstreamSpec,
    call_timeout: Duration,
    connect_timeout: Duration,
    directory: ServiceDirectory,
    client: Option<RunningService<RoleClient, UpstreamClient>>,
    /// Counts connections; a fault names the connection it saw.
    connection: u64,
    /// The directory generation this actor last published.
    generation: u64,
    /// Upstream resource subscriptions: URI → how many clients hold one.
    subscriptions: HashMap<String, usize>,
}

impl Actor for ConnectorActor {
    type Msg = ConnectorMsg;
    type State = ConnectorActorState;
    type Arguments = ConnectorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ConnectorMsg>,
        args: ConnectorArgs,
    ) -> Result<ConnectorActorState, ActorProcessingErr> {
        args.directory.update(&args.service, |s| {
            s.state = ConnectorState::Starting;
            s.starts += 1;
        });
        // Connecting may take seconds (npx, a remote host): do it as a message so
        // the supervisor that started us is not blocked meanwhile.
        myself.send_message(ConnectorMsg::Connect)?;
        // A predecessor that failed did not run its post_stop.
        args.directory.close_line(&args.service, None);
        args.directory.register(&args.service, myself.get_derived());
        args.directory
            .register_upstream(&args.service, myself.get_derived());
        Ok(ConnectorActorState {
            service: args.service,
            upstream: args.upstream,
            call_timeout: args.call_timeout,
            connect_timeout: args.connect_timeout,
            directory: args.directory,
            client: None,
            connection: 0,
            generation: 0,
            subscriptions: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<ConnectorMsg>,
        message: ConnectorMsg,
        state: &mut ConnectorActorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ConnectorMsg::Connect => {
                let handler = UpstreamClient {
                    connector: myself.clone(),
                    service: state.service.clone(),
                    directory: state.directory.clone(),
                };
                let connected =
                    tokio::time::timeout(state.connect_timeout, connect(&state.upstream, handler))
                        .await
                        .map_err(|_| format!("no answer within {:?}", state.connect_timeout))
                        .and_then(|r| r);
                let (client, tools, surface) = match connected {
                    Ok(ok) => ok,
                    Err(error) => {
                        let error = format!("connecting to upstream: {error}");
                        state.directory.update(&state.service, |s| {
                            s.state = ConnectorState::Down {
                                error: error.clone(),
                            };
                            s.last_error = Some(error.clone());
                        });
                        return Err(error.into());
                    }
                };
                state.connection += 1;
                state.directory.open_line(
                    &state.service,
                    DirectLine {
                        peer: client.peer().clone(),
                        connection: state.connection,
                        timeout: state.call_timeout,
                        connector: myself.clone(),
                    },
                );
                state.client = Some(client);
                state.directory.update(&state.service, |s| {
                    s.generation += 1;
                    state.generation = s.generation;
                    s.tools = Arc::new(tools);
                    s.surface = Arc::new(surface);
                    s.state = ConnectorState::Running;
                });
                tracing::info!(service = %state.service, generation = state.generation, "connector running");
            }
            ConnectorMsg::Call(ServiceCall {
                tool,
                arguments,
                trace,
                reply,
                ..
            }) => {
                let Some(client) = state.client.as_ref() else {
                    let _ = reply.send(Err(ConnectorError::Unavailable(state.service.clone())));
                    return Ok(());
                };
                let peer = client.peer().clone();
                let timeout = state.call_timeout;
                let connection = state.connection;
                let myself = myself.clone();
                tokio::spawn(async move {
                    let outcome =
                        call_upstream(&peer, timeout, connection, &myself, tool, arguments, &trace)
                            .await;
                    let _ = reply.send(outcome);
                });
            }
            ConnectorMsg::Upstream(request) => self.upstream(&myself, request, state),
            ConnectorMsg::RefreshSurface => {
                if let Some(client) = state.client.as_ref() {
                    let peer = client.peer().clone();
                    let generation = state.generation;
                    let myself = myself.clone();
                    let timeout = state.call_timeout;
                    tokio::spawn(async move {
                        let surface = tokio::time::timeout(timeout, list_surface(&peer)).await;
                        if let Ok(surface) = surface {
                            let _ = myself.cast(ConnectorMsg::SurfaceRefreshed {
                                generation,
                                surface,
                            });
                        }
                    });
                }
            }
            ConnectorMsg::SurfaceRefreshed {
                generation,
                surface,
            } => {
                if generation == state.generation {
                    let before = state.directory.get(&state.service).map(|s| s.surface);
                    let resources_changed = before.as_ref().is_none_or(|b| {
                        b.resources != surface.resources || b.templates != surface.templates
                    });
                    let prompts_changed =
                        before.as_ref().is_none_or(|b| b.prompts != surface.prompts);
                    state.directory.update(&state.service, |s| {
                        s.generation += 1;
                        state.generation = s.generation;
                        s.surface = Arc::new(surface);
                    });
                    let service = state.service.clone();
                    if resources_changed {
                        state
                            .directory
                            .announce(DirectoryChange::ResourcesListChanged {
                                service: service.clone(),
                            });
                    }
                    if prompts_changed {
                        state
                            .directory
                            .announce(DirectoryChange::PromptsListChanged { service });
                    }
                }
            }
            ConnectorMsg::SubscriptionFailed { uri } => {
                if let Some(count) = state.subscriptions.get_mut(&uri) {
                    *count = count.saturating_sub(1);
                    if *count == 0 {
                        state.subscriptions.remove(&uri);
                    }
                }
            }
            ConnectorMsg::RefreshTools => {
                if let Some(client) = state.client.as_ref() {
                    let peer = client.peer().clone();
                    let generation = state.generation;
                    let connection = state.connection;
                    let myself = myself.clone();
                    let timeout = state.call_timeout;
                    tokio::spawn(async move {
                        match tokio::time::timeout(timeout, peer.list_all_tools()).await {
                            Ok(Ok(tools)) => {
                                let _ =
                                    myself.cast(ConnectorMsg::ToolsRefreshed { generation, tools });
                            }
                            _ => {
                                let _ = myself.cast(ConnectorMsg::UpstreamFault {
                                    connection,
                                    reason: "listing tools after tools/list_changed failed".into(),
                                });
                            }
                        }
                    });
                }
            }
            ConnectorMsg::ToolsRefreshed { generation, tools } => {
                if generation == state.generation {
                    // A new generation makes readers rebuild their action catalogs.
                    state.directory.update(&state.service, |s| {
                        s.generation += 1;
                        state.generation = s.generation;
                        s.tools = Arc::new(tools);
                    });
                    tracing::info!(service = %state.service, "upstream tool list changed; catalog refreshed");
                }
            }
            ConnectorMsg::UpstreamFault { connection, reason } => {
                // A fault reported against an older connection is already handled.
                if connection == state.connection && state.client.is_some() {
                    state.directory.close_line(&state.service, Some(connection));
                    state.directory.update(&state.service, |s| {
                        s.state = ConnectorState::Down {
                            error: reason.clone(),
                        };
                        s.last_error = Some(reason.clone());
                    });
                    return Err(format!("upstream fault: {reason}").into());
                }
            }
            #[cfg(feature = "fault-injection")]
            ConnectorMsg::InjectPanic => panic!("injected connector panic"),
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<ConnectorMsg>,
        state: &mut ConnectorActorState,
    ) -> Result<(), ActorProcessingErr> {
        state.directory.close_line(&state.service, None);
        if let Some(client) = state.client.take() {
            let _ = client.cancel().await;
        }
        Ok(())
    }
}

impl ConnectorActor {
    /// A read, prompt, completion or subscription: run on its own task, like
    /// a call; a broken or hung transport is a fault of the connection.
    fn upstream(
        &self,
        myself: &ActorRef<ConnectorMsg>,
        request: UpstreamRequest,
        state: &mut ConnectorActorState,
    ) {
        let UpstreamRequest { ask, trace, reply } = request;
        let Some(client) = state.client.as_ref() else {
            let _ = reply.send(Err(ConnectorError::Unavailable(state.service.clone())));
            return;
        };
        // Subscriptions are shared: the upstream hears the first and the last.
        let ask = match ask {
            UpstreamAsk::Subscribe { uri } => {
                let count = state.subscriptions.entry(uri.clone()).or_default();
                *count += 1;
                if *count > 1 {
                    let _ = reply.send(Ok(UpstreamAnswer::Done));
                    return;
                }
                UpstreamAsk::Subscribe { uri }
            }
            UpstreamAsk::Unsubscribe { uri } => {
                match state.subscriptions.get_mut(&uri) {
                    Some(count) if *count > 1 => {
                        *count -= 1;
                        let _ = reply.send(Ok(UpstreamAnswer::Done));
                        return;
                    }
                    Some(_) => {
                        state.subscriptions.remove(&uri);
                    }
                    None => {
                        let _ = reply.send(Ok(UpstreamAnswer::Done));
                        return;
                    }
                }
                UpstreamAsk::Unsubscribe { uri }
            }
            other => other,
        };
        let peer = client.peer().clone();
        let timeout = state.call_timeout;
        let connection = state.connection;
        let myself = myself.clone();
        tokio::spawn(async move {
            let subscribed = match &ask {
                UpstreamAsk::Subscribe { uri } => Some(uri.clone()),
                _ => None,
            };
            let outcome = match tokio::time::timeout(timeout, run_ask(&peer, ask, &trace)).await {
                Ok(Ok(answer)) => Ok(answer),
                Ok(Err(ServiceError::McpError(e))) => Err(ConnectorError::Upstream {
                    code: e.code.0,
                    message: e.message.to_string(),
                }),
                Ok(Err(other)) => Err(ConnectorError::Transport(other.to_string())),
                Err(_) => Err(ConnectorError::Timeout(timeout)),
            };
            if let (Err(_), Some(uri)) = (&outcome, subscribed) {
                let _ = myself.cast(ConnectorMsg::SubscriptionFailed { uri });
            }
            if let Err(err @ (ConnectorError::Timeout(_) | ConnectorError::Transport(_))) = &outcome
            {
                let _ = myself.cast(ConnectorMsg::UpstreamFault {
                    connection,
                    reason: err.to_string(),
                });
            }
            let _ = reply.send(outcome);
        });
    }
}

/// Send `ask` to the upstream, with the trace context in its `_meta`.
#[allow(deprecated)] // resources/subscribe: the upstream may be initialize-era
async fn run_ask(
    peer: &rmcp::Peer<RoleClient>,
    ask: UpstreamAsk,
    trace: &TraceContext,
) -> Result<UpstreamAnswer, ServiceError> {
    fn traced<P: RequestParamsMeta>(mut params: P, trace: &TraceContext) -> P {
        for (key, value) in trace {
            match key.as_str() {
                "traceparent" => params.set_traceparent(value),
                "tracestate" => params.set_tracestate(value),
                _ => {}
            }
        }
        params
    }
    // An upstream that asks for input (2026-07-28 `input_required`) is
    // answered as an error of that upstream, not a broken connection: the
    // gateway does not relay such questions for resources and prompts.
    let asks_input = || {
        ServiceError::McpError(rmcp::ErrorData::invalid_request(
            "the upstream asked for input (input_required), which the gateway does not relay for resources and prompts",
            None,
        ))
    };
    Ok(match ask {
        UpstreamAsk::ReadResource { uri } => {
            let params = traced(ReadResourceRequestParams::new(uri), trace);
            match peer.read_resource_once(params).await? {
                rmcp::model::ReadResourceResponse::Complete(result) => {
                    UpstreamAnswer::Resource(result)
                }
                _ => return Err(asks_input()),
            }
        }
        UpstreamAsk::GetPrompt { name, arguments } => {
            let mut params = GetPromptRequestParams::new(name);
            params.arguments = arguments;
            match peer.get_prompt_once(traced(params, trace)).await? {
                rmcp::model::GetPromptResponse::Complete(result) => UpstreamAnswer::Prompt(result),
                _ => return Err(asks_input()),
            }
        }
        UpstreamAsk::Complete(params) => {
            UpstreamAnswer::Completion(peer.complete(traced(*params, trace)).await?)
        }
        UpstreamAsk::Subscribe { uri } => {
            peer.subscribe(SubscribeRequestParams::new(uri)).await?;
            UpstreamAnswer::Done
        }
        UpstreamAsk::Unsubscribe { uri } => {
            peer.unsubscribe(UnsubscribeRequestParams::new(uri)).await?;
            UpstreamAnswer::Done
        }
    })
}

/// The upstream's resources, templates and prompts, as far as it declares
/// them. A list that fails stays empty: the tools still serve.
async fn list_surface(peer: &rmcp::Peer<RoleClient>) -> Surface {
    let capabilities = peer.peer_info().map(|i| i.capabilities.clone());
    let features = capabilities
        .map(|c| UpstreamFeatures {
            resources: c.resources.is_some(),
            subscribe: c
                .resources
                .as_ref()
                .and_then(|r| r.subscribe)
                .unwrap_or(false),
            prompts: c.prompts.is_some(),
            completions: c.completions.is_some(),
        })
        .unwrap_or_default();
    let mut surface = Surface {
        features,
        ..Surface::default()
    };
    if features.resources {
        match peer.list_all_resources().await {
            Ok(resources) => surface.resources = resources,
            Err(e) => tracing::warn!(error = %e, "listing the upstream's resources failed"),
        }
        match peer.list_all_resource_templates().await {
            Ok(templates) => surface.templates = templates,
            Err(e) => {
                tracing::warn!(error = %e, "listing the upstream's resource templates failed")
            }
        }
    }
    if features.prompts {
        match peer.list_all_prompts().await {
            Ok(prompts) => surface.prompts = prompts,
            Err(e) => tracing::warn!(error = %e, "listing the upstream's prompts failed"),
        }
    }
    surface
}

/// The gateway's side of an upstream connection: it notices when the
/// upstream's tools, resources or prompts change and asks the connector to
/// list them again; resource updates go straight to the directory.
pub struct UpstreamClient {
    connector: ActorRef<ConnectorMsg>,
    service: String,
    directory: ServiceDirectory,
}

impl rmcp::ClientHandler for UpstreamClient {
    async fn on_tool_list_changed(&self, _context: rmcp::service::NotificationContext<RoleClient>) {
        let _ = self.connector.cast(ConnectorMsg::RefreshTools);
    }

    async fn on_resource_list_changed(
        &self,
        _context: rmcp::service::NotificationContext<RoleClient>,
    ) {
        let _ = self.connector.cast(ConnectorMsg::RefreshSurface);
    }

    async fn on_prompt_list_changed(
        &self,
        _context: rmcp::service::NotificationContext<RoleClient>,
    ) {
        let _ = self.connector.cast(ConnectorMsg::RefreshSurface);
    }

    async fn on_resource_updated(
        &self,
        params: rmcp::model::ResourceUpdatedNotificationParam,
        _context: rmcp::service::NotificationContext<RoleClient>,
    ) {
        self.directory.announce(DirectoryChange::ResourceUpdated {
            service: self.service.clone(),
            uri: params.uri,
        });
    }

    fn get_info(&self) -> rmcp::model::ClientConfig {
        let mut info = rmcp::model::ClientConfig::default();
        info.client_info = rmcp::model::Implementation::new("mcpgate", env!("CARGO_PKG_VERSION"));
        info
    }
}

/// Variables a stdio upstream inherits from the gateway; everything else must be
/// configured per service.
const INHERITED_ENV: &[&str] = &["PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ", "USER"];

async fn connect(
    upstream: &UpstreamSpec,
    handler: UpstreamClient,
) -> Result<
    (
        RunningService<RoleClient, UpstreamClient>,
        Vec<Tool>,
        Surface,
    ),
    String,
> {
    let client = match upstream {
        UpstreamSpec::Stdio { command, env, cwd } => {
            let (program, args) = command
                .split_first()
                .ok_or_else(|| "empty command".to_string())?;
            let mut cmd = tokio::process::Command::new(program);
            // The child gets a minimal environment plus what the operator
            // configured: the gateway's own secrets never leak into upstreams.
            cmd.env_clear();
            for name in INHERITED_ENV {
                if let Ok(value) = std::env::var(name) {
                    cmd.env(name, value);
                }
            }
            cmd.args(args).envs(env).kill_on_drop(true);
            if let Some(cwd) = cwd {
                cmd.current_dir(cwd);
            }
            let (transport, _stderr) = TokioChildProcess::builder(cmd)
                .stderr(std::process::Stdio::null())
                .spawn()
                .map_err(|e| format!("spawning {program}: {e}"))?;
            handler.serve(transport).await.map_err(|e| e.to_string())?
        }
        UpstreamSpec::Http { url, headers } => {
            let mut config = StreamableHttpClientTransportConfig::with_uri(url.as_str());
            // One connection serves every caller of this service: allow as many
            // concurrent requests as a busy gateway has callers.
            config.max_concurrent_requests = 256;
            config.channel_buffer_capacity = 256;
            for (name, value) in headers {
                let name = http::HeaderName::try_from(name.as_str())
                    .map_err(|e| format!("header {name}: {e}"))?;
                let value = http::HeaderValue::try_from(value.as_str())
                    .map_err(|e| format!("header {name}: {e}"))?;
                config.custom_headers.insert(name, value);
            }
            let transport = StreamableHttpClientTransport::with_client(
                TracingHttpClient(upstream_http_client()?),
                config,
            );
            handler.serve(transport).await.map_err(|e| e.to_string())?
        }
    };
    let tools = client
        .peer()
        .list_all_tools()
        .await
        .map_err(|e| format!("listing tools: {e}"))?;
    let surface = list_surface(client.peer()).await;
    Ok((client, tools, surface))
}

/// The HTTP client of a Streamable HTTP upstream. Connections are kept and
/// reused (rmcp's default client opens a new one per request, which doubles
/// the upstream's CPU per call); requests leave without Nagle delay; and no
/// redirect is followed, so the headers the operator configured for this
/// upstream (its credential) go to the configured URL only.
fn upstream_http_client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("HTTP client: {e}"))
}

/// The Streamable HTTP client of an MCP upstream: reqwest's, plus the trace
/// context of each `tools/call` as W3C headers. The call's `_meta` carries
/// `traceparent`/`tracestate` (SEP-414); the POST that carries the call gets
/// the same values as headers, so the upstream's HTTP layer continues the
/// trace too. Everything else is reqwest's, limits included.
#[derive(Clone)]
struct TracingHttpClient(reqwest::Client);

/// `headers`, plus the `traceparent`/`tracestate` of `message` if it is a
/// `tools/call` that carries them.
fn trace_headers(
    message: &ClientJsonRpcMessage,
    mut headers: HashMap<http::HeaderName, http::HeaderValue>,
) -> HashMap<http::HeaderName, http::HeaderValue> {
    if let JsonRpcMessage::Request(JsonRpcRequest {
        request: ClientRequest::CallToolRequest(call),
        ..
    }) = message
        && let Some(meta) = &call.params.meta
    {
        for (name, value) in [
            ("traceparent", meta.get_traceparent()),
            ("tracestate", meta.get_tracestate()),
        ] {
            if let Some(value) = value.and_then(|v| http::HeaderValue::from_str(v).ok()) {
                headers.insert(http::HeaderName::from_static(name), value);
            }
        }
    }
    headers
}

type HttpResult<T> = Result<T, StreamableHttpError<reqwest::Error>>;
type SseStream = BoxStream<'static, Result<sse_stream::Sse, SseError>>;

impl StreamableHttpClient for TracingHttpClient {
    type Error = reqwest::Error;

    async fn post_message(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<http::HeaderName, http::HeaderValue>,
    ) -> HttpResult<StreamableHttpPostResponse> {
        let headers = trace_headers(&message, custom_headers);
        self.0
            .post_message(uri, message, session_id, auth_header, headers)
            .await
    }

    async fn post_message_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<http::HeaderName, http::HeaderValue>,
        max_sse_event_size: usize,
    ) -> HttpResult<StreamableHttpPostResponse> {
        let headers = trace_headers(&message, custom_headers);
        self.0
            .post_message_with_max_sse_event_size(
                uri,
                message,
                session_id,
                auth_header,
                headers,
                max_sse_event_size,
            )
            .await
    }

    async fn post_message_with_response_limits(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<http::HeaderName, http::HeaderValue>,
        limits: StreamableHttpResponseLimits,
    ) -> HttpResult<StreamableHttpPostResponse> {
        let headers = trace_headers(&message, custom_headers);
        self.0
            .post_message_with_response_limits(
                uri,
                message,
                session_id,
                auth_header,
                headers,
                limits,
            )
            .await
    }

    async fn delete_session(
        &self,
        uri: Arc<str>,
        session_id: Arc<str>,
        auth_header: Option<String>,
        custom_headers: HashMap<http::HeaderName, http::HeaderValue>,
    ) -> HttpResult<()> {
        self.0
            .delete_session(uri, session_id, auth_header, custom_headers)
            .await
    }

    async fn get_stream(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<http::HeaderName, http::HeaderValue>,
    ) -> HttpResult<SseStream> {
        self.0
            .get_stream(uri, session_id, last_event_id, auth_header, custom_headers)
            .await
    }

    async fn get_stream_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<http::HeaderName, http::HeaderValue>,
        max_sse_event_size: usize,
    ) -> HttpResult<SseStream> {
        self.0
            .get_stream_with_max_sse_event_size(
                uri,
                session_id,
                last_event_id,
                auth_header,
                custom_headers,
                max_sse_event_size,
            )
            .await
    }
}

/// A connected MCP upstream's client, published by its connector actor so a
/// call runs on the caller's own task: one mailbox per upstream would queue
/// every call to it, and a mailbox hop plus a spawned task per call is most
/// of what dispatching cost. The actor still owns the connection: it opens
/// the line once connected, closes it on a fault (a call on the line reports
/// one to it) and when it stops, and a restarted actor closes a line its
/// failed predecessor left.
pub struct DirectLine {
    peer: rmcp::service::Peer<RoleClient>,
    connection: u64,
    timeout: Duration,
    connector: ActorRef<ConnectorMsg>,
}

impl std::fmt::Debug for DirectLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectLine")
            .field("connection", &self.connection)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Run one `tools/call` on an upstream connection; a broken or hung transport
/// is reported to the connector as a fault of that connection.
async fn call_upstream(
    peer: &rmcp::service::Peer<RoleClient>,
    timeout: Duration,
    connection: u64,
    connector: &ActorRef<ConnectorMsg>,
    tool: String,
    arguments: Option<JsonObject>,
    trace: &TraceContext,
) -> Result<CallToolResult, ConnectorError> {
    let mut params = CallToolRequestParams::new(tool);
    if let Some(arguments) = arguments {
        params = params.with_arguments(arguments);
    }
    for (key, value) in trace {
        match key.as_str() {
            "traceparent" => params.set_traceparent(value),
            "tracestate" => params.set_tracestate(value),
            _ => {}
        }
    }
    let outcome = match tokio::time::timeout(timeout, peer.call_tool(params)).await {
        Ok(Ok(mut result)) => {
            // An upstream cannot claim the gateway's own mark.
            take_gateway_authored(&mut result);
            Ok(result)
        }
        Ok(Err(ServiceError::McpError(e))) => Err(ConnectorError::Upstream {
            code: e.code.0,
            message: e.message.to_string(),
        }),
        Ok(Err(other)) => Err(ConnectorError::Transport(other.to_string())),
        Err(_) => Err(ConnectorError::Timeout(timeout)),
    };
    if let Err(err @ (ConnectorError::Timeout(_) | ConnectorError::Transport(_))) = &outcome {
        let _ = connector.cast(ConnectorMsg::UpstreamFault {
            connection,
            reason: err.to_string(),
        });
    }
    outcome
}

/// A call on its way: handed to a connector's mailbox, or about to run on a
/// direct line.
pub struct PendingCall {
    route: Route,
    service: String,
    deadline: Duration,
}

enum Route {
    Mailbox(tokio::sync::oneshot::Receiver<Result<CallToolResult, ConnectorError>>),
    Direct {
        line: Arc<DirectLine>,
        tool: String,
        arguments: Option<JsonObject>,
        trace: TraceContext,
    },
}

/// The `_meta` key a connector of the gateway's own sets on an answer it
/// wrote itself, with no upstream data in it (a connect instruction, a
/// breaker or rate-limit notice): the PII pass leaves such text alone, since
/// the caller's own identity in it is not third-party data. An MCP
/// upstream's result never carries it: [`ConnectorActor`] removes it.
pub const GATEWAY_AUTHORED: &str = "io.mcpgate/gateway-authored";

/// Mark `result` as written by the gateway itself.
pub fn mark_gateway_authored(result: &mut CallToolResult) {
    result
        .meta
        .get_or_insert_with(|| rmcp::model::MetaObject(JsonObject::new()))
        .0
        .insert(GATEWAY_AUTHORED.into(), serde_json::Value::Bool(true));
}

/// Whether `result` was written by the gateway; the mark is removed either way.
pub fn take_gateway_authored(result: &mut CallToolResult) -> bool {
    let Some(meta) = result.meta.as_mut() else {
        return false;
    };
    let marked = meta.0.remove(GATEWAY_AUTHORED) == Some(serde_json::Value::Bool(true));
    if meta.0.is_empty() {
        result.meta = None;
    }
    marked
}

/// A tool's `_meta` key saying its effect is visible to others (a message
/// sent, a schedule created, a job run): a person confirms it first. Native
/// catalogs set it (`confirm: true`); an MCP upstream may ask for it too —
/// it can only add a confirmation, never remove one.
pub const CONFIRM_META: &str = "io.mcpgate/confirm";

/// Mark `tool` as an effect a person confirms.
pub fn mark_confirm(tool: &mut Tool) {
    tool.meta
        .get_or_insert_with(|| rmcp::model::MetaObject(JsonObject::new()))
        .0
        .insert(CONFIRM_META.into(), serde_json::Value::Bool(true));
}

/// Whether `tool` asks a person to confirm it.
pub fn asks_confirmation(tool: &Tool) -> bool {
    tool.meta
        .as_ref()
        .and_then(|m| m.0.get(CONFIRM_META))
        .and_then(serde_json::Value::as_bool)
        == Some(true)
}

/// The registry key of `service`'s connector (whatever actor serves it).
pub fn registry_key(service: &str) -> String {
    format!("connector/{service}")
}

/// Hand `tool` to `service`'s connector. Once this returns `Ok` the call has
/// reached the connector; the answer is awaited separately, so a caller can
/// hold a short guard (a grant's gate) across the hand-off only.
#[allow(clippy::too_many_arguments)]
pub fn dispatch(
    connector: &ConnectorRef,
    line: Option<Arc<DirectLine>>,
    service: &str,
    subject: &str,
    interactive: bool,
    tool: String,
    arguments: Option<JsonObject>,
    trace: TraceContext,
    deadline: Duration,
) -> Result<PendingCall, ConnectorError> {
    let route = match line {
        Some(line) => Route::Direct {
            line,
            tool,
            arguments,
            trace,
        },
        None => {
            let (reply, answer) = tokio::sync::oneshot::channel();
            connector
                .send_message(ServiceCall {
                    tool,
                    arguments,
                    subject: subject.to_owned(),
                    interactive,
                    trace,
                    reply: reply.into(),
                })
                .map_err(|_| ConnectorError::Unavailable(service.to_owned()))?;
            Route::Mailbox(answer)
        }
    };
    Ok(PendingCall {
        route,
        service: service.to_owned(),
        deadline,
    })
}

impl PendingCall {
    pub async fn answer(self) -> Result<CallToolResult, ConnectorError> {
        match self.route {
            Route::Mailbox(answer) => match tokio::time::timeout(self.deadline, answer).await {
                Ok(Ok(result)) => result,
                Err(_) => Err(ConnectorError::Timeout(self.deadline)),
                // The actor failed or stopped with our request in its mailbox.
                Ok(Err(_)) => Err(ConnectorError::Unavailable(self.service)),
            },
            // The line's own timeout (the connector's) answers first.
            Route::Direct {
                line,
                tool,
                arguments,
                trace,
            } => {
                call_upstream(
                    &line.peer,
                    line.timeout,
                    line.connection,
                    &line.connector,
                    tool,
                    arguments,
                    &trace,
                )
                .await
            }
        }
    }
}

/// Call `tool` on `service`'s connector. `deadline` bounds the whole exchange,
/// including a mailbox that is busy connecting.
pub async fn call(
    connector: &ConnectorRef,
    service: &str,
    tool: String,
    arguments: Option<JsonObject>,
    deadline: Duration,
) -> Result<CallToolResult, ConnectorError> {
    dispatch(
        connector,
        None,
        service,
        "",
        false,
        tool,
        arguments,
        TraceContext::new(),
        deadline,
    )?
    .answer()
    .await
}
