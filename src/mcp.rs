//! The rmcp `ServerHandler`: the MCP face of the gateway. It reads the
//! authenticated principal that the auth layer put on the HTTP request, admits
//! the request into its session actor and hands calls to the pipeline.

use std::sync::Arc;

use actors::session::{ClientInfo, SessionTicket};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, Implementation, ListToolsResult,
    PaginatedRequestParams, ProtocolVersion, ServerCapabilities, ServerConfig,
};
use rmcp::service::{ElicitationMode, RequestContext};
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};

use crate::audit::RowStart;
use crate::domain::{Reason, Refusal};
use crate::pipeline::{CallRequest, Pipeline};
use crate::principal::Principal;
use crate::sessions::{SessionError, Sessions};
use crate::telemetry::RequestSpan;
use crate::write_safety::RoundTrip;

/// How long 2026-07-28 clients may cache `tools/list`.
const TOOL_LIST_TTL_MS: u64 = 5_000;

#[derive(Clone)]
pub struct McpHandler {
    pipeline: Arc<Pipeline>,
    sessions: Arc<Sessions>,
}

impl McpHandler {
    pub fn new(pipeline: Arc<Pipeline>, sessions: Arc<Sessions>) -> Self {
        Self { pipeline, sessions }
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
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
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
        self.pipeline.run(call).await.map_err(Refusal::into_mcp)
    }
}
