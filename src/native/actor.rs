//! One `NativeConnector` actor per native service. Like the MCP connector it
//! only dispatches; each call runs on its own task with the subject's own
//! credential, read from the vault at call time (never cached in the actor).
//! The actor owns what outlives a call: the HTTP client, the circuit breaker
//! and the per-user locks that keep OAuth refreshes from racing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::storage::Db;
use actors::connector::{ConnectorError, ConnectorState, ServiceCall, ServiceDirectory};
use dashmap::DashMap;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use rmcp::model::{CallToolResult, ContentBlock, JsonObject};
use serde_json::{Value, json};

use super::breaker::Breaker;
use super::catalog::Catalog;
use super::executor::{self, Failure, Target};
use super::token_set::{self, TokenSet};
use crate::config::{BreakerConfig, OauthConfig};
use crate::keys::MasterKey;
use crate::vault::{self, Credential, CredentialKind};

#[derive(Clone)]
pub struct NativeArgs {
    pub service: String,
    pub base_url: String,
    pub catalog: Arc<Catalog>,
    pub call_timeout: Duration,
    pub directory: ServiceDirectory,
    pub pool: Db,
    pub master: MasterKey,
    pub defaults: BTreeMap<String, Value>,
    pub retries: u32,
    pub max_retry_wait: Duration,
    pub breaker: BreakerConfig,
    pub oauth: Option<OauthConfig>,
    /// `<public_url>/connect/<service>` when users connect with OAuth.
    pub connect_url: Option<String>,
}

pub struct NativeConnector;

/// What every call on this service shares.
struct Shared {
    args: NativeArgs,
    http: reqwest::Client,
    breaker: Breaker,
    refresh_locks: DashMap<String, Arc<tokio::sync::Mutex<()>>>,
}

pub struct NativeState {
    shared: Arc<Shared>,
}

/// The native connector's own messages: it only runs calls (the rest of
/// its work — credentials, refresh, breaker — happens on each call's task).
pub enum NativeMsg {
    Call(ServiceCall),
}

impl From<ServiceCall> for NativeMsg {
    fn from(call: ServiceCall) -> Self {
        NativeMsg::Call(call)
    }
}

impl TryFrom<NativeMsg> for ServiceCall {
    type Error = ();

    fn try_from(message: NativeMsg) -> Result<Self, ()> {
        let NativeMsg::Call(call) = message;
        Ok(call)
    }
}

impl Actor for NativeConnector {
    type Msg = NativeMsg;
    type State = NativeState;
    type Arguments = NativeArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<NativeMsg>,
        args: NativeArgs,
    ) -> Result<NativeState, ActorProcessingErr> {
        let http = reqwest::Client::builder()
            .timeout(args.call_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let tools = Arc::new(args.catalog.tools(&args.defaults));
        args.directory.update(&args.service, |status| {
            status.state = ConnectorState::Running;
            status.tools = tools;
            status.generation += 1;
            status.starts += 1;
            status.last_error = None;
            status.breaker = None;
        });
        args.directory.register(&args.service, myself.get_derived());
        let breaker = Breaker::new(args.breaker.failures, args.breaker.cool_down);
        Ok(NativeState {
            shared: Arc::new(Shared {
                args,
                http,
                breaker,
                refresh_locks: DashMap::new(),
            }),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<NativeMsg>,
        message: NativeMsg,
        state: &mut NativeState,
    ) -> Result<(), ActorProcessingErr> {
        let NativeMsg::Call(ServiceCall {
            tool,
            arguments,
            subject,
            interactive,
            trace,
            reply,
        }) = message;
        let shared = state.shared.clone();
        tokio::spawn(async move {
            let asker = Asker {
                subject: &subject,
                interactive,
            };
            let answer = shared.call(asker, &tool, arguments, &trace).await;
            let _ = reply.send(answer);
        });
        Ok(())
    }
}

/// An answer the gateway wrote itself (see [`actors::connector::GATEWAY_AUTHORED`]).
fn gateway_authored(mut result: CallToolResult) -> CallToolResult {
    actors::connector::mark_gateway_authored(&mut result);
    result
}

/// Who a call is for, and whether they are the one asking.
#[derive(Clone, Copy)]
struct Asker<'a> {
    subject: &'a str,
    /// A connect link (with its ticket) goes only to the subject in person,
    /// never to a workflow acting for them.
    interactive: bool,
}

fn tool_error(message: String, structured: Value) -> CallToolResult {
    let mut result = CallToolResult::error(vec![ContentBlock::text(message)]);
    result.structured_content = Some(structured);
    result
}

impl Shared {
    fn service(&self) -> &str {
        &self.args.service
    }

    /// The same shape for every service when the subject has no usable credential.
    fn auth_required(&self, asker: Asker<'_>, why: &str) -> CallToolResult {
        let service = self.service();
        let subject = asker.subject;
        let (how, connect_url) = match &self.args.connect_url {
            Some(_) if !asker.interactive => (
                format!("{subject} connects it from their own AI client (this call acts for them)"),
                None,
            ),
            Some(url) => {
                let link = format!(
                    "{url}?ticket={}",
                    super::connect::ticket(&self.args.master, subject, service)
                );
                (
                    format!(
                        "open {link} in a browser (the link is yours alone and lasts 10 minutes)"
                    ),
                    Some(link),
                )
            }
            None => (
                format!(
                    "an operator runs `mcpgate credentials set --user {subject} --service {service}`"
                ),
                None,
            ),
        };
        gateway_authored(tool_error(
            format!("auth_required: {why}. Connect your {service} account: {how}."),
            json!({
                "auth_required": true,
                "service": service,
                "reason": why,
                "connect_url": connect_url,
            }),
        ))
    }

    async fn call(
        &self,
        asker: Asker<'_>,
        tool: &str,
        arguments: Option<JsonObject>,
        trace: &[(String, String)],
    ) -> Result<CallToolResult, ConnectorError> {
        let service = self.service();
        let Some(action) = self.args.catalog.action(tool) else {
            return Err(ConnectorError::Upstream {
                code: -32602,
                message: format!("{service} has no action '{tool}'"),
            });
        };
        let mut credential = match self.credential(asker).await? {
            Ok(credential) => credential,
            Err(refusal) => return Ok(refusal),
        };
        let arguments = arguments.unwrap_or_default();
        let target = Target {
            service,
            base_url: &self.args.base_url,
            defaults: &self.args.defaults,
            retries: self.args.retries,
            max_retry_wait: self.args.max_retry_wait,
            trace,
        };
        let mut refreshed_after_401 = false;
        loop {
            if let Err(refused) = self.breaker.admit() {
                return Ok(tool_error(
                    format!(
                        "circuit_open: {service} failed repeatedly; the gateway is not calling it for {}s",
                        refused.retry_in.as_secs().max(1)
                    ),
                    json!({"error": "circuit_open", "service": service,
                           "retry_in_seconds": refused.retry_in.as_secs().max(1)}),
                ));
            }
            let outcome = executor::execute(
                &self.http,
                &target,
                &self.args.catalog,
                action,
                &arguments,
                &credential,
            )
            .await;
            let service_up = !matches!(
                outcome,
                Err(Failure::Unreachable(_) | Failure::ServerError { .. })
            );
            if self.breaker.record(service_up) {
                let view = self.breaker.describe();
                self.args.directory.update(service, |status| {
                    status.breaker = view;
                });
            }
            return match outcome {
                Ok(result) => Ok(result),
                Err(Failure::Unauthorized(_))
                    if credential.kind == CredentialKind::Oauth && !refreshed_after_401 =>
                {
                    // The provider revoked the access token early: one refresh, one retry.
                    refreshed_after_401 = true;
                    match self.refresh(asker, &credential, true).await? {
                        Ok(fresh) => {
                            credential = fresh;
                            continue;
                        }
                        // The refusal says why: renewal failed, consent again.
                        Err(refusal) => Ok(refusal),
                    }
                }
                Err(Failure::Unauthorized(message)) => {
                    let mut answer = self.auth_required(
                        asker,
                        &format!("{service} refused your credential ({message})"),
                    );
                    // The service's own words are in it: the PII pass reads it.
                    actors::connector::take_gateway_authored(&mut answer);
                    Ok(answer)
                }
                Err(Failure::RateLimited {
                    retry_after,
                    message,
                }) => Ok(tool_error(
                    format!(
                        "rate_limited: {service} asks to wait{} ({message})",
                        retry_after.map(|s| format!(" {s}s")).unwrap_or_default()
                    ),
                    json!({"error": "rate_limited", "service": service, "retry_after": retry_after}),
                )),
                Err(Failure::ServerError { status, message }) => Ok(tool_error(
                    format!("{service} failed: {message}"),
                    json!({"error": message, "status": status}),
                )),
                Err(Failure::Unreachable(message)) => Err(ConnectorError::Transport(message)),
            };
        }
    }

    /// The subject's credential, refreshed if it is an OAuth set about to
    /// expire; `Ok(Err(result))` is the auth_required answer.
    async fn credential(
        &self,
        asker: Asker<'_>,
    ) -> Result<Result<Credential, CallToolResult>, ConnectorError> {
        let subject = asker.subject;
        let credential =
            match vault::get(&self.args.pool, &self.args.master, subject, self.service()).await {
                Ok(Some(credential)) => credential,
                Ok(None) => {
                    return Ok(Err(
                        self.auth_required(asker, "you have no credential for this service")
                    ));
                }
                Err(vault::VaultError::Store(e)) => {
                    return Err(ConnectorError::Transport(format!(
                        "the vault is unavailable: {e}"
                    )));
                }
                Err(e) => return Ok(Err(self.auth_required(asker, &e.to_string()))),
            };
        if credential.kind != CredentialKind::Oauth {
            return Ok(Ok(credential));
        }
        let due = TokenSet::parse(credential.secret())
            .map(|set| set.needs_refresh(token_set::now_unix()))
            .unwrap_or(false);
        if !due {
            return Ok(Ok(credential));
        }
        self.refresh(asker, &credential, false).await
    }

    /// Refresh the subject's OAuth set and store the new one. One refresh per
    /// user at a time: a second caller finds the fresh set in the vault.
    async fn refresh(
        &self,
        asker: Asker<'_>,
        stale: &Credential,
        forced: bool,
    ) -> Result<Result<Credential, CallToolResult>, ConnectorError> {
        let subject = asker.subject;
        let service = self.service();
        let lock = self
            .refresh_locks
            .entry(subject.to_ascii_lowercase())
            .or_default()
            .clone();
        let _held = lock.lock().await;
        let current = match vault::get(&self.args.pool, &self.args.master, subject, service).await {
            Ok(Some(current)) => current,
            Ok(None) => {
                return Ok(Err(self.auth_required(asker, "your connection was removed")));
            }
            Err(vault::VaultError::Store(e)) => {
                return Err(ConnectorError::Transport(format!(
                    "the vault is unavailable: {e}"
                )));
            }
            Err(e) => return Ok(Err(self.auth_required(asker, &e.to_string()))),
        };
        let Some(set) = TokenSet::parse(current.secret()) else {
            return Ok(Err(
                self.auth_required(asker, "the stored OAuth token set is unreadable")
            ));
        };
        // Someone else refreshed while we waited.
        if current.secret() != stale.secret() && !set.needs_refresh(token_set::now_unix()) {
            return Ok(Ok(current));
        }
        if !forced && !set.needs_refresh(token_set::now_unix()) {
            return Ok(Ok(current));
        }
        let Some(oauth) = &self.args.oauth else {
            return Ok(Err(self.auth_required(
                asker,
                "your access token expired and this service has no OAuth settings to renew it",
            )));
        };
        match token_set::refresh(&self.http, oauth, &set).await {
            Ok(fresh) => {
                let stored = vault::set(
                    &self.args.pool,
                    &self.args.master,
                    subject,
                    service,
                    CredentialKind::Oauth,
                    &fresh.to_secret(),
                )
                .await
                .map_err(|e| ConnectorError::Transport(format!("the vault is unavailable: {e}")))?;
                tracing::info!(service, "refreshed a user's OAuth access token");
                Ok(Ok(stored))
            }
            Err(e) => {
                tracing::warn!(service, error = %e, "OAuth refresh failed; the user must reconnect");
                let mut answer = self.auth_required(
                    asker,
                    &format!(
                        "your {service} authorization could not be renewed ({e}); consent again"
                    ),
                );
                // The provider's words are in it: the PII pass reads it.
                actors::connector::take_gateway_authored(&mut answer);
                Ok(Err(answer))
            }
        }
    }
}
