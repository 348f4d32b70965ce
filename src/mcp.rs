//! The rmcp `ServerHandler`: the MCP face of the gateway. It reads the
//! authenticated principal that the auth layer put on the HTTP request, admits
//! the request into its session actor and hands calls to the pipeline.
//! Resources, templates, prompts and completions of the upstream MCP servers
//! go to `federation.rs`; what upstreams announce is relayed here, to
//! initialize-era sessions on their stream and to 2026-07-28 clients on
//! `subscriptions/listen`.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use actors::connector::DirectoryChange;
use actors::session::{ClientInfo, SessionTicket};
use rmcp::model::{
    CacheScope, CallToolRequestParams, CallToolResponse, CompleteRequestParams, CompleteResult,
    GetPromptRequestParams, GetPromptResponse, Implementation, ListPromptsResult,
    ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, PaginatedRequestParams,
    ProtocolVersion, ReadResourceRequestParams, ReadResourceResponse, ServerCapabilities,
    ServerConfig, SubscribeRequestParams, SubscriptionFilter, UnsubscribeRequestParams,
};
use rmcp::service::{
    ElicitationMode, NotificationContext, RequestContext, SubscriptionContext, SubscriptionSink,
};
use rmcp::{ErrorData as McpError, Peer, RoleServer, ServerHandler};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::audit::RowStart;
use crate::domain::{Reason, Refusal};
use crate::federation::{self, Read};
use crate::pipeline::{CallRequest, Pipeline};
use crate::principal::Principal;
use crate::sessions::{SessionError, Sessions};
use crate::telemetry::RequestSpan;
use crate::write_safety::RoundTrip;

/// How long 2026-07-28 clients may cache `tools/list` (and the resource and
/// prompt lists, which change as rarely).
const TOOL_LIST_TTL_MS: u64 = 5_000;

/// One per initialize-era session (rmcp builds one per session, and one per
/// request for stateless clients).
#[derive(Clone)]
pub struct McpHandler {
    pipeline: Arc<Pipeline>,
    sessions: Arc<Sessions>,
    /// The federated resource URIs this session subscribed to.
    subscriptions: Arc<Mutex<BTreeSet<String>>>,
    /// Cancelled when the last clone of this handler is dropped (the
    /// session ended): its relay stops and its subscriptions are released.
    ended: CancellationToken,
    _end: Arc<DropGuard>,
}

impl McpHandler {
    pub fn new(pipeline: Arc<Pipeline>, sessions: Arc<Sessions>) -> Self {
        let ended = CancellationToken::new();
        Self {
            pipeline,
            sessions,
            subscriptions: Default::default(),
            _end: Arc::new(ended.clone().drop_guard()),
            ended,
        }
    }

    /// The request's span parent (the HTTP request's), or none.
    fn parent_span(context: &RequestContext<RoleServer>) -> tracing::Span {
        context
            .extensions
            .get::<http::request::Parts>()
            .and_then(|p| p.extensions.get::<RequestSpan>())
            .map(|s| s.0.clone())
            .unwrap_or_else(tracing::Span::none)
    }

    /// The principal and session of this request; refusals are audited.
    async fn admit(
        &self,
        context: &RequestContext<RoleServer>,
        tool: &str,
    ) -> Result<(Principal, SessionTicket), Unadmitted> {
        let parts = context.extensions.get::<http::request::Parts>();
        let principal = parts.and_then(|p| p.extensions.get::<Principal>()).cloned();
        // The auth layer always sets it; without it nothing runs (fail closed).
        let Some(principal) = principal else {
            return Err(Unadmitted::Unauthenticated);
        };
        let session_id = parts
            .and_then(|p| p.headers.get("mcp-session-id"))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let client = context
            .client_info()
            .map(|i| ClientInfo {
                name: Some(i.name),
                version: Some(i.version),
            })
            .unwrap_or_default();
        match self
            .sessions
            .begin_call(&principal, session_id.as_deref(), client.clone())
            .await
        {
            Ok(ticket) => Ok((principal, ticket)),
            Err(error) => {
                let reason = match error {
                    SessionError::WrongCredential => Reason::SessionCredentialMismatch,
                    SessionError::Unavailable => Reason::SessionUnavailable,
                };
                let row = RowStart {
                    subject: &principal.subject,
                    actor: &principal.actor,
                    session: session_id.map(|id| format!("mcp:{id}")),
                    client: &client,
                    tool,
                    arguments: &Default::default(),
                }
                .row();
                let refusal = Refusal::new(reason, error.to_string());
                Err(Unadmitted::Refused(
                    self.pipeline.audit.refusal(row, refusal).await,
                ))
            }
        }
    }
}

/// Why a request was not admitted into its session.
enum Unadmitted {
    /// The auth layer put no principal on it (cannot happen behind it).
    Unauthenticated,
    /// The session refused it; the refusal is audited.
    Refused(Refusal),
}

impl Unadmitted {
    fn into_mcp(self) -> McpError {
        match self {
            Unadmitted::Unauthenticated => {
                McpError::internal_error("request is not authenticated", None)
            }
            Unadmitted::Refused(refusal) => refusal.into_mcp(),
        }
    }
}

impl ServerHandler for McpHandler {
    fn get_info(&self) -> ServerConfig {
        // Resources and prompts: those of the upstream MCP servers, federated.
        let capabilities = ServerCapabilities::builder()
            .enable_completions()
            .enable_prompts()
            .enable_resources()
            .enable_tools()
            .enable_prompts_list_changed()
            .enable_resources_list_changed()
            .enable_resources_subscribe()
            .build();
        ServerConfig::new(capabilities)
            .with_server_info(Implementation::new("mcpgate", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "mcpgate exposes each service as <service>_read_actions and <service>_write_actions. \
                 Pass `action` plus that action's own arguments.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let (principal, _session) = self
            .admit(&context, "tools/list")
            .await
            .map_err(Unadmitted::into_mcp)?;
        let mut tools = Vec::new();
        for service in self.pipeline.config.services.keys() {
            let Some(max) = principal.access_to(service) else {
                continue;
            };
            if let Some(catalog) = self.pipeline.catalogs.catalog(service) {
                tools.extend(catalog.tools_for(max));
            }
        }
        tools.extend(crate::discovery::tools());
        if principal.kind().is_interactive() {
            tools.push(crate::activity::tool());
            tools.push(crate::hooks::self_service::tool());
        }
        Ok(ListToolsResult::with_all_items(tools).with_ttl_ms(TOOL_LIST_TTL_MS))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let started = std::time::Instant::now();
        let (principal, session) = match self.admit(&context, &request.name).await {
            Ok(admitted) => admitted,
            Err(unadmitted) => {
                // A call refused before the pipeline is still a call: counted.
                if let Unadmitted::Refused(refusal) = &unadmitted {
                    self.pipeline.count_unadmitted(refusal, started.elapsed());
                }
                return Err(unadmitted.into_mcp());
            }
        };
        // Elicitation is a server-to-client request: only initialize-era
        // clients that declared form elicitation can receive one.
        let modern = context
            .protocol_version()
            .is_some_and(|v| v.as_str() >= ProtocolVersion::V_2026_07_28.as_str());
        let can_elicit = !modern
            && context
                .peer
                .supported_elicitation_modes()
                .contains(&ElicitationMode::Form);
        // 2026-07-28 clients are asked in the answer instead (input_required
        // with an elicitation and a sealed requestState), if they can answer.
        let modern_can_elicit = modern
            && context.client_capabilities().is_some_and(|c| {
                c.elicitation
                    .as_ref()
                    .is_some_and(|e| e.url.is_none() || e.form.is_some())
            });
        let mrtr = modern.then(|| RoundTrip {
            can_ask: modern_can_elicit,
            responses: request.input_responses.clone(),
            request_state: request.request_state.clone(),
        });
        // The HTTP request's span (see http.rs) is the parent of the call's.
        let parent = context
            .extensions
            .get::<http::request::Parts>()
            .and_then(|p| p.extensions.get::<RequestSpan>())
            .map(|s| s.0.clone())
            .unwrap_or_else(tracing::Span::none);
        let call = CallRequest {
            principal: &principal,
            session: &session,
            tool: &request.name,
            arguments: request.arguments.unwrap_or_default(),
            elicitor: can_elicit.then(|| context.peer.clone()),
            round_trip: mrtr,
            parent,
        };
        match self.pipeline.run(call).await {
            Ok(answer) => Ok(answer),
            // Input validation errors are tool execution errors (SEP-1303,
            // MCP 2025-11-25): the model reads them and corrects its call.
            Err(refusal) if refusal.reason == Reason::InvalidArguments => {
                Ok(CallToolResponse::Complete(invalid_arguments(refusal)))
            }
            Err(refusal) => Err(refusal.into_mcp()),
        }
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        let (principal, _session) = self
            .admit(&context, "resources/list")
            .await
            .map_err(Unadmitted::into_mcp)?;
        let resources = federation::resources(&self.pipeline, &principal);
        Ok(ListResourcesResult::with_all_items(resources)
            .with_ttl_ms(TOOL_LIST_TTL_MS)
            .with_cache_scope(CacheScope::Private))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        let (principal, _session) = self
            .admit(&context, "resources/templates/list")
            .await
            .map_err(Unadmitted::into_mcp)?;
        let templates = federation::templates(&self.pipeline, &principal);
        Ok(ListResourceTemplatesResult::with_all_items(templates)
            .with_ttl_ms(TOOL_LIST_TTL_MS)
            .with_cache_scope(CacheScope::Private))
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, McpError> {
        let (principal, _session) = self
            .admit(&context, "prompts/list")
            .await
            .map_err(Unadmitted::into_mcp)?;
        let prompts = federation::prompts(&self.pipeline, &principal);
        Ok(ListPromptsResult::with_all_items(prompts)
            .with_ttl_ms(TOOL_LIST_TTL_MS)
            .with_cache_scope(CacheScope::Private))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let (principal, session) = self
            .admit(&context, "resources/read")
            .await
            .map_err(Unadmitted::into_mcp)?;
        let read = Read {
            principal: &principal,
            session: &session,
            method: "resources/read",
            parent: Self::parent_span(&context),
        };
        let mut result = federation::read_resource(&self.pipeline, read, &request.uri).await?;
        // Pseudonyms are per subject: never a shared cache.
        result.cache_scope = Some(CacheScope::Private);
        Ok(result.into())
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, McpError> {
        let (principal, session) = self
            .admit(&context, "prompts/get")
            .await
            .map_err(Unadmitted::into_mcp)?;
        let read = Read {
            principal: &principal,
            session: &session,
            method: "prompts/get",
            parent: Self::parent_span(&context),
        };
        let result =
            federation::get_prompt(&self.pipeline, read, &request.name, request.arguments).await?;
        Ok(result.into())
    }

    async fn complete(
        &self,
        request: CompleteRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, McpError> {
        let (principal, session) = self
            .admit(&context, "completion/complete")
            .await
            .map_err(Unadmitted::into_mcp)?;
        let read = Read {
            principal: &principal,
            session: &session,
            method: "completion/complete",
            parent: Self::parent_span(&context),
        };
        federation::complete(&self.pipeline, read, request).await
    }

    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        let (principal, session) = self
            .admit(&context, "resources/subscribe")
            .await
            .map_err(Unadmitted::into_mcp)?;
        if self.subscribed(&request.uri) {
            return Ok(());
        }
        let read = Read {
            principal: &principal,
            session: &session,
            method: "resources/subscribe",
            parent: Self::parent_span(&context),
        };
        federation::subscribe(&self.pipeline, read, &request.uri, true).await?;
        let fresh = self
            .subscriptions
            .lock()
            .map(|mut s| s.insert(request.uri.clone()))
            .unwrap_or(false);
        if !fresh {
            // Raced with an identical subscribe: hold the upstream's count once.
            let _ = release_upstream(&self.pipeline, &request.uri).await;
        }
        Ok(())
    }

    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        let (principal, session) = self
            .admit(&context, "resources/unsubscribe")
            .await
            .map_err(Unadmitted::into_mcp)?;
        let held = self
            .subscriptions
            .lock()
            .map(|mut s| s.remove(&request.uri))
            .unwrap_or(false);
        if !held {
            return Ok(());
        }
        let read = Read {
            principal: &principal,
            session: &session,
            method: "resources/unsubscribe",
            parent: Self::parent_span(&context),
        };
        federation::subscribe(&self.pipeline, read, &request.uri, false).await
    }

    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        // Tool lists are not relayed (the gateway's own tools change only
        // with a catalog), so `toolsListChanged` is not accepted. Resource
        // URIs are accepted if they are federated ones; access is checked
        // (and audited) per URI when the stream starts.
        let mut accepted = SubscriptionFilter::new();
        accepted.prompts_list_changed = requested.prompts_list_changed;
        accepted.resources_list_changed = requested.resources_list_changed;
        accepted.resource_subscriptions = requested.resource_subscriptions.as_ref().map(|uris| {
            uris.iter()
                .filter(|uri| federation::parse_resource_uri(uri).is_some())
                .cloned()
                .collect()
        });
        Some(accepted)
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), McpError> {
        let request = context.request_context();
        let (principal, session) = self
            .admit(request, "subscriptions/listen")
            .await
            .map_err(Unadmitted::into_mcp)?;
        // Each resource is subscribed like a read (refusals audited, and
        // then never relayed).
        let mut held = BTreeSet::new();
        for uri in context
            .accepted()
            .resource_subscriptions
            .clone()
            .unwrap_or_default()
        {
            let read = Read {
                principal: &principal,
                session: &session,
                method: "resources/subscribe",
                parent: Self::parent_span(request),
            };
            if federation::subscribe(&self.pipeline, read, &uri, true)
                .await
                .is_ok()
            {
                held.insert(uri);
            }
        }
        let subscriptions = Mutex::new(held);
        let sink = Relay::Listen(context.sink().clone());
        tokio::select! {
            _ = relay(&self.pipeline, &principal, &subscriptions, &sink) => {}
            _ = context.cancelled() => {}
        }
        let held = std::mem::take(&mut *subscriptions.lock().unwrap_or_else(|e| e.into_inner()));
        for uri in held {
            let read = Read {
                principal: &principal,
                session: &session,
                method: "resources/unsubscribe",
                parent: tracing::Span::none(),
            };
            let _ = federation::subscribe(&self.pipeline, read, &uri, false).await;
        }
        Ok(())
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        // An initialize-era session hears what its upstreams announce on its
        // stream until it ends.
        let principal = context
            .extensions
            .get::<http::request::Parts>()
            .and_then(|p| p.extensions.get::<Principal>())
            .cloned();
        let Some(principal) = principal else { return };
        let pipeline = self.pipeline.clone();
        let subscriptions = self.subscriptions.clone();
        let ended = self.ended.clone();
        let sink = Relay::Session(context.peer.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = relay(&pipeline, &principal, &subscriptions, &sink) => {}
                _ = ended.cancelled() => {}
            }
            // The session ended: release what it still holds upstream.
            let held =
                std::mem::take(&mut *subscriptions.lock().unwrap_or_else(|e| e.into_inner()));
            for uri in held {
                let _ = release_upstream(&pipeline, &uri).await;
            }
        });
    }
}

impl McpHandler {
    fn subscribed(&self, uri: &str) -> bool {
        self.subscriptions
            .lock()
            .map(|s| s.contains(uri))
            .unwrap_or(false)
    }
}

/// Drop one hold on an upstream subscription (a session ended, or a
/// duplicate): bookkeeping, not a read, so no row.
async fn release_upstream(pipeline: &Pipeline, uri: &str) -> Result<(), McpError> {
    let Some((service, upstream_uri)) = federation::parse_resource_uri(uri) else {
        return Ok(());
    };
    let Some(upstream) = pipeline.catalogs.directory().upstream(service) else {
        return Ok(());
    };
    actors::connector::ask(
        &upstream,
        service,
        actors::connector::UpstreamAsk::Unsubscribe {
            uri: upstream_uri.to_owned(),
        },
        Vec::new(),
        pipeline.config.limits.call_timeout,
    )
    .await
    .map(|_| ())
    .map_err(|e| McpError::internal_error(e.to_string(), None))
}

/// Where a relay sends: an initialize-era session's stream, or a
/// 2026-07-28 `subscriptions/listen` stream.
enum Relay {
    Session(Peer<RoleServer>),
    Listen(SubscriptionSink),
}

impl Relay {
    /// Send; `false` once the receiver is gone.
    async fn send(&self, change: &DirectoryChange, uri: Option<&str>) -> bool {
        match (self, change) {
            (Relay::Session(peer), DirectoryChange::ResourcesListChanged { .. }) => {
                peer.notify_resource_list_changed().await.is_ok()
            }
            (Relay::Session(peer), DirectoryChange::PromptsListChanged { .. }) => {
                peer.notify_prompt_list_changed().await.is_ok()
            }
            (Relay::Session(peer), DirectoryChange::ResourceUpdated { .. }) => peer
                .notify_resource_updated(rmcp::model::ResourceUpdatedNotificationParam::new(
                    uri.unwrap_or_default(),
                ))
                .await
                .is_ok(),
            // A category the client did not ask for is skipped, not an end.
            (Relay::Listen(sink), DirectoryChange::ResourcesListChanged { .. }) => {
                sink.accepted().resources_list_changed != Some(true)
                    || sink.notify_resource_list_changed().await.is_ok()
            }
            (Relay::Listen(sink), DirectoryChange::PromptsListChanged { .. }) => {
                sink.accepted().prompts_list_changed != Some(true)
                    || sink.notify_prompt_list_changed().await.is_ok()
            }
            (Relay::Listen(sink), DirectoryChange::ResourceUpdated { .. }) => sink
                .notify_resource_updated(uri.unwrap_or_default())
                .await
                .is_ok(),
        }
    }
}

/// Relay what upstreams announce to one client: list changes of services it
/// may read, and updates of resources it subscribed to; until the client is
/// gone or its grant ends.
async fn relay(
    pipeline: &Pipeline,
    principal: &Principal,
    subscriptions: &Mutex<BTreeSet<String>>,
    sink: &Relay,
) {
    let mut changes = pipeline.catalogs.directory().changes();
    loop {
        let change = match changes.recv().await {
            Ok(change) => change,
            Err(RecvError::Lagged(_)) => {
                // Missed some: say every list it may read may have changed.
                for service in pipeline.config.services.keys() {
                    if !federation::may_read(principal, service) {
                        continue;
                    }
                    for change in [
                        DirectoryChange::ResourcesListChanged {
                            service: service.clone(),
                        },
                        DirectoryChange::PromptsListChanged {
                            service: service.clone(),
                        },
                    ] {
                        if !sink.send(&change, None).await {
                            return;
                        }
                    }
                }
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        if principal
            .grant
            .as_ref()
            .is_some_and(|g| g.gate.closed_reason().is_some())
        {
            return;
        }
        if !federation::may_read(principal, change.service()) {
            continue;
        }
        let uri = match &change {
            DirectoryChange::ResourceUpdated { service, uri } => {
                let uri = federation::resource_uri(service, uri);
                let held = subscriptions
                    .lock()
                    .map(|s| s.contains(&uri))
                    .unwrap_or(false);
                if !held {
                    continue;
                }
                Some(uri)
            }
            _ => None,
        };
        if !sink.send(&change, uri.as_deref()).await {
            return;
        }
    }
}

/// A refused call's arguments as a tool error result: the message in the
/// text, the reason code in `_meta` (the refusal is already audited).
fn invalid_arguments(refusal: Refusal) -> rmcp::model::CallToolResult {
    use rmcp::model::{CallToolResult, ContentBlock, MetaObject};
    let mut result = CallToolResult::error(vec![ContentBlock::text(refusal.to_string())]);
    let mut meta = rmcp::model::JsonObject::new();
    meta.insert(
        REASON_META.to_owned(),
        serde_json::Value::String(refusal.reason.code().to_owned()),
    );
    result.meta = Some(MetaObject(meta));
    result
}

/// The `_meta` key naming a gateway refusal's reason on a tool error result.
pub const REASON_META: &str = "io.mcpgate/reason";
