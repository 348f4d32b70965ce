//! An in-process upstream MCP server (Streamable HTTP) that counts the calls
//! that reach it: `query` (read-only), `post_message` (a write) and
//! `drop_table` (destructive → high_risk), and `get_issue` (read-only, a
//! Jira-shaped issue with personal data in it).
#![allow(dead_code)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rmcp::model::*;
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};

/// Every call that reached the upstream: (tool, arguments).
pub type Received = Arc<std::sync::Mutex<Vec<(String, serde_json::Value)>>>;

#[derive(Clone)]
pub struct Recorder {
    pub calls: Arc<AtomicUsize>,
    pub received: Received,
    pub url: String,
}

#[derive(Clone)]
struct Handler {
    calls: Arc<AtomicUsize>,
    received: Received,
}

fn schema(properties: serde_json::Value) -> Arc<JsonObject> {
    let serde_json::Value::Object(map) = serde_json::json!({
        "type": "object",
        "properties": properties,
    }) else {
        unreachable!()
    };
    Arc::new(map)
}

impl ServerHandler for Handler {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(vec![
            Tool::new(
                "query",
                "Run a query",
                schema(serde_json::json!({"sql": {"type": "string"}})),
            )
            .with_annotations(ToolAnnotations::new().read_only(true)),
            Tool::new(
                "post_message",
                "Post a message",
                schema(serde_json::json!({"text": {"type": "string"}})),
            ),
            Tool::new(
                "drop_table",
                "Drop a table",
                schema(serde_json::json!({"table": {"type": "string"}})),
            )
            .with_annotations(ToolAnnotations::new().destructive(true)),
            Tool::new(
                "get_issue",
                "A Jira-shaped issue with personal data in it",
                schema(serde_json::json!({"key": {"type": "string"}})),
            )
            .with_annotations(ToolAnnotations::new().read_only(true)),
        ]))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if request.name == "get_issue" {
            let issue = serde_json::json!({
                "key": "PROJ-12",
                "fields": {
                    "summary": "Printer on fire in room 4.12",
                    "reporter": {
                        "displayName": "Marie Curie",
                        "emailAddress": "marie.curie@example.com",
                        "accountId": "5b10a2844c20165700ede21g"
                    },
                    "assignee": {"displayName": "Pierre Curie", "accountId": "5b10ac8d82e05b22cc7d4ef5"},
                    "description": "Call me at +44 20 7946 0958 or write to marie.curie@example.com; host 10.2.3.4. Order 88231 is unrelated.",
                    "created": "2026-11-24T09:15:00.000+0000"
                }
            });
            return Ok(CallToolResult::success(vec![ContentBlock::text(issue.to_string())]).into());
        }
        let args = serde_json::Value::Object(request.arguments.unwrap_or_default());
        self.received
            .lock()
            .unwrap()
            .push((request.name.to_string(), args.clone()));
        Ok(CallToolResult::success(vec![ContentBlock::text(format!(
            "{} #{n} {args}",
            request.name
        ))])
        .into())
    }
}

impl Recorder {
    pub async fn start() -> Recorder {
        let calls = Arc::new(AtomicUsize::new(0));
        let received = Received::default();
        let handler_calls = calls.clone();
        let handler_received = received.clone();
        let service = StreamableHttpService::new(
            move || {
                Ok(Handler {
                    calls: handler_calls.clone(),
                    received: handler_received.clone(),
                })
            },
            Arc::new(LocalSessionManager::default()),
            StreamableHttpServerConfig::default()
                .with_sse_keep_alive(None)
                .with_legacy_session_mode(false)
                .with_json_response(true),
        );
        let router = axum::Router::new().route_service("/mcp", service);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Recorder {
            calls,
            received,
            url: format!("http://{addr}/mcp"),
        }
    }

    pub fn received(&self) -> Vec<(String, serde_json::Value)> {
        self.received.lock().unwrap().clone()
    }

    /// How many of the calls that reached the upstream match `which`
    /// (without copying what was received).
    pub fn count_matching(&self, which: impl Fn(&str, &serde_json::Value) -> bool) -> usize {
        let received = self.received.lock().unwrap();
        received
            .iter()
            .filter(|(tool, args)| which(tool, args))
            .count()
    }

    pub fn count(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}
