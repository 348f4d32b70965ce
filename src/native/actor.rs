//! One `NativeConnector` actor per native service. Like the MCP connector it
//! only dispatches; each call runs on its own task with the subject's own
//! credential, read from the vault at call time (never cached in the actor).

use std::sync::Arc;
use std::time::Duration;

use actors::connector::{ConnectorError, ConnectorMsg, ConnectorState, ServiceDirectory};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use rmcp::model::{CallToolResult, ContentBlock};
use serde_json::json;
use sqlx::SqlitePool;

use super::catalog::Catalog;
use super::executor::{self, Failure};
use crate::keys::MasterKey;
use crate::vault;

pub struct NativeArgs {
    pub service: String,
    pub base_url: String,
    pub catalog: Arc<Catalog>,
    pub call_timeout: Duration,
    pub directory: ServiceDirectory,
    pub pool: SqlitePool,
    pub master: MasterKey,
}

pub struct NativeConnector;

pub struct NativeState {
    args: NativeArgs,
    http: reqwest::Client,
}

impl Actor for NativeConnector {
    type Msg = ConnectorMsg;
    type State = NativeState;
    type Arguments = NativeArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<ConnectorMsg>,
        args: NativeArgs,
    ) -> Result<NativeState, ActorProcessingErr> {
        let http = reqwest::Client::builder()
            .timeout(args.call_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let tools = Arc::new(args.catalog.tools());
        args.directory.update(&args.service, |status| {
            status.state = ConnectorState::Running;
            status.tools = tools;
            status.generation += 1;
            status.starts += 1;
            status.last_error = None;
        });
        Ok(NativeState { args, http })
    }

    async fn handle(
        &self,
        _myself: ActorRef<ConnectorMsg>,
        message: ConnectorMsg,
        state: &mut NativeState,
    ) -> Result<(), ActorProcessingErr> {
        if let ConnectorMsg::Call {
            tool,
            arguments,
            subject,
            reply,
        } = message
        {
            let http = state.http.clone();
            let service = state.args.service.clone();
            let base_url = state.args.base_url.clone();
            let catalog = state.args.catalog.clone();
            let pool = state.args.pool.clone();
            let master = state.args.master.clone();
            tokio::spawn(async move {
                let answer = call(
                    &http, &service, &base_url, &catalog, &pool, &master, &subject, &tool,
                    arguments,
                )
                .await;
                let _ = reply.send(answer);
            });
        }
        Ok(())
    }
}

/// The same shape for every service when the subject has no usable credential.
fn auth_required(service: &str, subject: &str, why: &str) -> CallToolResult {
    let mut result = CallToolResult::error(vec![ContentBlock::text(format!(
        "auth_required: {why}. Connect your {service} account: an operator runs \
         `mcpgate credentials set --user {subject} --service {service}`."
    ))]);
    result.structured_content = Some(json!({
        "auth_required": true,
        "service": service,
        "reason": why,
    }));
    result
}

#[allow(clippy::too_many_arguments)]
async fn call(
    http: &reqwest::Client,
    service: &str,
    base_url: &str,
    catalog: &Catalog,
    pool: &SqlitePool,
    master: &MasterKey,
    subject: &str,
    tool: &str,
    arguments: Option<rmcp::model::JsonObject>,
) -> Result<CallToolResult, ConnectorError> {
    let Some(action) = catalog.action(tool) else {
        return Err(ConnectorError::Upstream {
            code: -32602,
            message: format!("{service} has no action '{tool}'"),
        });
    };
    let credential = match vault::get(pool, master, subject, service).await {
        Ok(Some(credential)) => credential,
        Ok(None) => {
            return Ok(auth_required(
                service,
                subject,
                "you have no credential for this service",
            ));
        }
        Err(vault::VaultError::Store(e)) => {
            return Err(ConnectorError::Transport(format!(
                "the vault is unavailable: {e}"
            )));
        }
        Err(e) => return Ok(auth_required(service, subject, &e.to_string())),
    };
    match executor::execute(
        http,
        base_url,
        catalog,
        action,
        &arguments.unwrap_or_default(),
        &credential,
    )
    .await
    {
        Ok(result) => Ok(result),
        Err(Failure::Unauthorized(message)) => Ok(auth_required(
            service,
            subject,
            &format!("{service} refused your credential ({message})"),
        )),
        Err(Failure::Unreachable(message)) => Err(ConnectorError::Transport(message)),
    }
}
