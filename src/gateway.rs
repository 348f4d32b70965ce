//! The running gateway: the supervision tree, shared directories, and the
//! small amount of state the edges need (session bindings, drain tracking).
//!
//! ```text
//! root (one-for-one)
//! ├── audit                 AuditWriter        permanent   started first, stopped last
//! ├── connectors            Supervisor
//! │   └── connector/<svc>   ConnectorActor     permanent   one per configured service
//! ├── grants                Supervisor
//! │   └── grant/<id>        GrantActor         temporary   stopping it is revocation
//! └── sessions              Supervisor
//!     └── session/<key>     SessionActor       temporary   ends on idle or DELETE
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use crate::storage::Db;
use actors::audit::{AuditMsg, AuditWriter, AuditWriterArgs};
use actors::connector::{
    ConnectorActor, ConnectorArgs, ConnectorMsg, ServiceDirectory, UpstreamSpec,
};
use actors::session::{
    ClientInfo, OnSessionEnd, SessionActor, SessionArgs, SessionMsg, SessionOwner, SessionRefusal,
    SessionTicket,
};
use dashmap::DashMap;
use ractor::{Actor, ActorRef};
use rmcp::transport::streamable_http_server::session::SessionManager;
use rmcp::transport::streamable_http_server::session::local::{LocalSessionManager, SessionConfig};
use supervision::{
    ChildSpec, LifecycleEvents, LifecycleKind, Registry, Restart, RestartPolicy, Supervisor,
    SupervisorArgs, SupervisorMsg, start_child,
};
use tokio::sync::Notify;

use crate::catalog::ServiceCatalog;
use crate::config::{Config, ServiceConfig};
use crate::principal::Principal;

pub const AUDIT_KEY: &str = "audit";
pub const SESSIONS_KEY: &str = "sessions";
pub const CONNECTORS_KEY: &str = "connectors";
pub const GRANTS_KEY: &str = "grants";

async fn load_risk_overrides(
    pool: &Db,
) -> Result<BTreeMap<String, crate::config::RiskClass>, sqlx::Error> {
    let rows: Vec<(String, String)> = sqlx::query_as("SELECT pattern, risk FROM risk_overrides")
        .fetch_all(pool)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(pattern, risk)| {
            actors::grant::Risk::parse(&risk).map(|r| (pattern, crate::config::RiskClass(r)))
        })
        .collect())
}

pub fn connector_key(service: &str) -> String {
    format!("connector/{service}")
}

pub fn session_key(key: &str) -> String {
    format!("session/{key}")
}

/// Counters shown on `/health`.
#[derive(Debug, Default)]
pub struct Stats {
    pub allowed: AtomicU64,
    pub refused: AtomicU64,
    pub failed: AtomicU64,
    pub actor_restarts: AtomicU64,
    pub actor_failures: AtomicU64,
}

/// Counts calls in flight so shutdown can wait for them.
#[derive(Debug, Default)]
pub struct InFlight {
    count: AtomicUsize,
    idle: Notify,
}

/// Held while a request is in flight; dropping it may wake a waiting shutdown.
pub struct InFlightGuard(Arc<InFlight>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl InFlight {
    pub fn enter(self: &Arc<Self>) -> InFlightGuard {
        self.count.fetch_add(1, Ordering::AcqRel);
        InFlightGuard(self.clone())
    }

    pub fn current(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Wait until no call is in flight, or `limit` passes. Returns what is left.
    pub async fn drained(&self, limit: Duration) -> usize {
        let wait = async {
            loop {
                let notified = self.idle.notified();
                if self.current() == 0 {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(limit, wait).await;
        self.current()
    }
}

pub struct Gateway {
    pub config: Arc<Config>,
    pub pool: Db,
    pub registry: Registry,
    pub directory: ServiceDirectory,
    pub events: LifecycleEvents,
    pub stats: Arc<Stats>,
    /// MCP POSTs whose response has not been fully sent yet.
    pub inflight: Arc<InFlight>,
    pub session_manager: Arc<LocalSessionManager>,
    /// `Mcp-Session-Id` → id of the credential that opened it.
    pub session_bindings: Arc<DashMap<String, String>>,
    /// The master key; every purpose derives its own key from it.
    pub master_key: crate::keys::MasterKey,
    /// PII pseudonymization and rehydration.
    pub pii: Arc<crate::pii::Pii>,
    /// Policy hooks (reloaded whole on change).
    pub hooks: Arc<crate::hooks::Hooks>,
    /// Windmill verification and the live delegation grants.
    pub delegation: crate::delegation::exchange::Delegation,
    /// Signs write-safety confirmation tokens.
    pub confirmation_key: crate::write_safety::ConfirmationKey,
    /// Argument rules native catalogs declare (`classify_sql`): applied
    /// before the tool check, since they say what an action really is.
    pub catalog_rules: Vec<crate::classify::ClassifyRule>,
    /// OAuth connect flows started at `/connect/<svc>` and not yet finished.
    pub connect_flows: crate::native::connect::PendingFlows,
    catalogs: DashMap<String, Arc<ServiceCatalog>>,
    /// Risk overrides from the admin API, merged into the config's policy.
    risk_overrides: std::sync::RwLock<Arc<BTreeMap<String, crate::config::RiskClass>>>,
    draining: AtomicBool,
    root: ActorRef<SupervisorMsg>,
}

fn connector_spec(
    name: &str,
    service: &ServiceConfig,
    config: &Config,
    directory: &ServiceDirectory,
) -> ChildSpec {
    let upstream = match (&service.command, &service.url) {
        (Some(command), _) => UpstreamSpec::Stdio {
            command: command.clone(),
            env: service.env.clone(),
            cwd: service.cwd.clone(),
        },
        (None, Some(url)) => UpstreamSpec::Http {
            url: url.clone(),
            headers: service.headers.clone(),
        },
        (None, None) => unreachable!("config validation requires command or url"),
    };
    let service_name = name.to_owned();
    let call_timeout = service.call_timeout.unwrap_or(config.limits.call_timeout);
    let connect_timeout = config.limits.connect_timeout;
    let directory = directory.clone();
    ChildSpec::new(connector_key(name), Restart::Permanent, move || {
        (
            ConnectorActor,
            ConnectorArgs {
                service: service_name.clone(),
                upstream: upstream.clone(),
                call_timeout,
                connect_timeout,
                directory: directory.clone(),
            },
        )
    })
}

/// A native service's connector: its catalog is loaded (and checked) here,
/// so a bad catalog stops the start with file:line and the action's name.
fn native_spec(
    name: &str,
    service: &ServiceConfig,
    config: &Config,
    directory: &ServiceDirectory,
    pool: &Db,
    master: &crate::keys::MasterKey,
    catalog_rules: &mut Vec<crate::classify::ClassifyRule>,
) -> anyhow::Result<ChildSpec> {
    let source = service.catalog.clone().unwrap_or_default();
    let catalog = crate::native::catalog::load(&source, config.catalog_dir.as_deref())
        .map_err(|e| anyhow::anyhow!("service '{name}': {e}"))?;
    let connect_url = service
        .oauth
        .as_ref()
        .map(|_| format!("{}/connect/{name}", config.public_url()));
    catalog_rules.extend(catalog.classify_rules(name));
    let catalog = Arc::new(catalog);
    let args = crate::native::actor::NativeArgs {
        service: name.to_owned(),
        base_url: service.base_url.clone().unwrap_or_default(),
        catalog,
        call_timeout: service.call_timeout.unwrap_or(config.limits.call_timeout),
        directory: directory.clone(),
        pool: pool.clone(),
        master: master.clone(),
        defaults: service.defaults.clone(),
        retries: service.retries,
        max_retry_wait: service.max_retry_wait,
        breaker: service.breaker.clone(),
        oauth: service.oauth.clone(),
        connect_url,
    };
    let make = move || (crate::native::actor::NativeConnector, args.clone());
    Ok(ChildSpec::new(
        connector_key(name),
        Restart::Permanent,
        make,
    ))
}

fn supervisor_spec(
    key: &str,
    policy: RestartPolicy,
    events: &LifecycleEvents,
    registry: &Registry,
    children: Vec<ChildSpec>,
) -> ChildSpec {
    let name = key.to_owned();
    let events = events.clone();
    let registry = registry.clone();
    ChildSpec::new(key, Restart::Permanent, move || {
        (
            Supervisor,
            SupervisorArgs {
                name: name.clone(),
                policy: policy.clone(),
                events: events.clone(),
                registry: registry.clone(),
                stop_timeout: Duration::from_secs(10),
                children: children.clone(),
            },
        )
    })
}

impl Gateway {
    /// Build the supervision tree and start every configured connector.
    pub async fn start(config: Config, pool: Db) -> anyhow::Result<Arc<Gateway>> {
        let master_key = crate::keys::MasterKey::for_config(&config)
            .map_err(|e| anyhow::anyhow!("gateway key: {e}"))?;
        let confirmation_key = crate::write_safety::ConfirmationKey::from_master(&master_key);
        let config = Arc::new(config);
        let registry = Registry::new();
        let events = LifecycleEvents::default();
        let directory = ServiceDirectory::default();
        let stats = Arc::new(Stats::default());
        spawn_lifecycle_logger(&events, stats.clone());

        let audit_pool = pool.clone();
        let max_batch = config.limits.audit_max_batch;
        let audit = ChildSpec::new(AUDIT_KEY, Restart::Permanent, move || {
            (
                AuditWriter,
                AuditWriterArgs {
                    pool: audit_pool.clone(),
                    max_batch,
                },
            )
        });
        let mut connectors = Vec::new();
        let mut catalog_rules = Vec::new();
        for (name, service) in &config.services {
            connectors.push(match service.kind {
                crate::config::ServiceKind::Mcp => {
                    connector_spec(name, service, &config, &directory)
                }
                crate::config::ServiceKind::Native => native_spec(
                    name,
                    service,
                    &config,
                    &directory,
                    &pool,
                    &master_key,
                    &mut catalog_rules,
                )?,
            });
        }
        let connector_policy = RestartPolicy {
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
            // Connectors fail when upstreams do; give them room before escalating.
            max_restarts: 50,
            window: Duration::from_secs(60),
        };
        let temporary_policy = RestartPolicy::default();
        let children = vec![
            audit,
            supervisor_spec(
                CONNECTORS_KEY,
                connector_policy,
                &events,
                &registry,
                connectors,
            ),
            supervisor_spec(
                GRANTS_KEY,
                temporary_policy.clone(),
                &events,
                &registry,
                Vec::new(),
            ),
            supervisor_spec(
                SESSIONS_KEY,
                temporary_policy,
                &events,
                &registry,
                Vec::new(),
            ),
        ];
        let (root, _) = Actor::spawn(
            None,
            Supervisor,
            SupervisorArgs {
                name: "root".into(),
                policy: RestartPolicy::default(),
                events: events.clone(),
                registry: registry.clone(),
                stop_timeout: Duration::from_secs(30),
                children,
            },
        )
        .await?;

        // Grants of a previous run died with its actors; say so in their records.
        let orphans = crate::delegation::store::end_orphans(&pool).await?;
        if orphans > 0 {
            tracing::info!(
                grants = orphans,
                "ended grants left live by the previous run"
            );
        }
        let delegation =
            crate::delegation::exchange::Delegation::new(config.delegation.windmill_timeout);
        let risk_overrides = load_risk_overrides(&pool).await?;
        let pii = Arc::new(
            crate::pii::Pii::new(config.pii.clone(), &master_key, pool.clone())
                .map_err(|e| anyhow::anyhow!("{e}"))?,
        );
        let hooks = Arc::new(
            crate::hooks::Hooks::load(&config.hooks.dir, config.hooks.budget)
                .map_err(|e| anyhow::anyhow!("hooks: {e}"))?,
        );

        let mut session_manager = LocalSessionManager::default();
        let mut session_config = SessionConfig::default();
        session_config.keep_alive = Some(config.limits.session_idle_timeout);
        session_manager.session_config = session_config;

        let gw = Arc::new(Gateway {
            config,
            pool,
            registry,
            directory,
            events,
            stats,
            inflight: Arc::new(InFlight::default()),
            session_manager: Arc::new(session_manager),
            session_bindings: Arc::new(DashMap::new()),
            master_key,
            pii,
            hooks,
            delegation,
            confirmation_key,
            connect_flows: Default::default(),
            catalog_rules,
            catalogs: DashMap::new(),
            risk_overrides: std::sync::RwLock::new(Arc::new(risk_overrides)),
            draining: AtomicBool::new(false),
            root,
        });
        gw.spawn_revocation_watcher();
        gw.spawn_hook_watcher();
        gw.spawn_expiry();
        Ok(gw)
    }

    pub fn audit_writer(&self) -> Option<ActorRef<AuditMsg>> {
        self.registry.get(AUDIT_KEY)
    }

    pub fn grants_supervisor(&self) -> Option<ActorRef<SupervisorMsg>> {
        self.registry.get(GRANTS_KEY)
    }

    /// Revoke the grants `filter` names: recorded first (so every gateway
    /// sharing the store sees it), carried out here, then confirmed by every
    /// other gateway holding one (each stops its actor and releases its
    /// holder row). Returns the ids, and the replicas that did not confirm
    /// within [`REVOCATION_ACK_WAIT`] (a dead one cannot: the store already
    /// refuses its grants to everyone else).
    pub async fn revoke_grants(
        &self,
        filter: &crate::delegation::store::RevokeFilter,
        by: &str,
    ) -> Result<(Vec<String>, Vec<String>), sqlx::Error> {
        use crate::delegation::store;
        let ids = store::request_revocation(&self.pool, filter, by).await?;
        let reason = format!("revoked by {by}");
        for id in &ids {
            self.delegation
                .grants
                .revoke(self.grants_supervisor().as_ref(), &self.pool, id, &reason)
                .await;
        }
        let deadline = tokio::time::Instant::now() + REVOCATION_ACK_WAIT;
        loop {
            let holding = store::holders(&self.pool, &ids).await?;
            if holding.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok((ids, holding));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Stop the grants held here that another process (the CLI, another
    /// replica) revoked or ended: at once on PostgreSQL's notification, and
    /// every `revocation_poll` in any case (SQLite, or a lost notification).
    pub fn spawn_revocation_watcher(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let gw = Arc::downgrade(self);
        let every = self.config.delegation.revocation_poll;
        let wake = Arc::new(tokio::sync::Notify::new());
        if crate::storage::backend(&self.pool) == crate::storage::Backend::Postgres {
            self.spawn_store_listener(Arc::downgrade(&wake));
        }
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = wake.notified() => {}
                }
                let Some(gw) = gw.upgrade() else { return };
                if gw.is_draining() {
                    return;
                }
                let held = gw.delegation.grants.ids();
                if held.is_empty() {
                    continue;
                }
                match crate::delegation::store::ended_elsewhere(&gw.pool, &held).await {
                    Ok(ended) => {
                        for (id, reason) in ended {
                            gw.delegation
                                .grants
                                .revoke(gw.grants_supervisor().as_ref(), &gw.pool, &id, &reason)
                                .await;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "revocation watcher: store unavailable"),
                }
            }
        })
    }

    /// Every ten minutes: drop expired pseudonym mappings, and record the end
    /// of expired grants no gateway holds any more (their minting replica
    /// went away; a holder ends its own when its actor's lifetime runs out).
    pub fn spawn_expiry(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let gw = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(600));
            loop {
                tick.tick().await;
                let Some(gw) = gw.upgrade() else { return };
                if gw.is_draining() {
                    return;
                }
                if let Err(e) = gw.pii.expire().await {
                    tracing::warn!(error = %e, "could not expire pseudonym mappings");
                }
                if let Err(e) = crate::delegation::store::end_expired(&gw.pool).await {
                    tracing::warn!(error = %e, "could not end expired grants");
                }
            }
        })
    }

    /// Reload hooks when their files change (a bad file keeps the old set).
    pub fn spawn_hook_watcher(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let gw = Arc::downgrade(self);
        let every = self.config.hooks.reload_poll;
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                let Some(gw) = gw.upgrade() else { return };
                if gw.is_draining() {
                    return;
                }
                if gw.hooks.changed_on_disk() {
                    let _ = gw.hooks.reload();
                }
            }
        })
    }

    pub fn connector(&self, service: &str) -> Option<ActorRef<ConnectorMsg>> {
        self.registry.get(&connector_key(service))
    }

    /// The action catalog of `service` for its current connection, rebuilt
    /// only when the connector reconnects.
    pub fn catalog(&self, service: &str) -> Option<Arc<ServiceCatalog>> {
        let config = self.config.services.get(service)?;
        let status = self.directory.get(service)?;
        if status.generation == 0 {
            return None;
        }
        if let Some(cached) = self.catalogs.get(service)
            && cached.generation == status.generation
        {
            return Some(cached.clone());
        }
        let overrides = self.risk_overrides();
        let policy = if overrides.is_empty() {
            std::borrow::Cow::Borrowed(&self.config.policy)
        } else {
            let mut merged = self.config.policy.clone();
            merged
                .risk
                .extend(overrides.iter().map(|(k, v)| (k.clone(), *v)));
            std::borrow::Cow::Owned(merged)
        };
        let built = Arc::new(ServiceCatalog::build(
            service,
            config,
            &policy,
            status.generation,
            &status.tools,
        ));
        self.catalogs.insert(service.to_owned(), built.clone());
        Some(built)
    }

    pub fn risk_overrides(&self) -> Arc<BTreeMap<String, crate::config::RiskClass>> {
        self.risk_overrides.read().expect("overrides lock").clone()
    }

    /// Set (or with `None` remove) an admin risk override; catalogs rebuild.
    pub async fn set_risk_override(
        &self,
        pattern: &str,
        risk: Option<actors::grant::Risk>,
        by: &str,
    ) -> Result<bool, sqlx::Error> {
        let changed = match risk {
            Some(risk) => {
                sqlx::query(
                    "INSERT INTO risk_overrides (pattern, risk, set_by, set_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (pattern) DO UPDATE SET risk = excluded.risk, set_by = excluded.set_by, set_at = excluded.set_at",
                )
                .bind(pattern)
                .bind(risk.as_str())
                .bind(by)
                .bind(actors::now_rfc3339())
                .execute(&self.pool)
                .await?
                .rows_affected()
                    > 0
            }
            None => {
                sqlx::query("DELETE FROM risk_overrides WHERE pattern = $1")
                    .bind(pattern)
                    .execute(&self.pool)
                    .await?
                    .rows_affected()
                    > 0
            }
        };
        self.reload_risk_overrides().await?;
        if crate::storage::backend(&self.pool) == crate::storage::Backend::Postgres {
            // Every other replica reloads on this (see `spawn_store_listener`).
            sqlx::query("SELECT pg_notify($1, '')")
                .bind(POLICY_CHANNEL)
                .execute(&self.pool)
                .await?;
        }
        Ok(changed)
    }

    /// Read the admin risk overrides from the store; catalogs rebuild on next use.
    pub async fn reload_risk_overrides(&self) -> Result<(), sqlx::Error> {
        let fresh = load_risk_overrides(&self.pool).await?;
        *self.risk_overrides.write().expect("overrides lock") = Arc::new(fresh);
        self.catalogs.clear();
        Ok(())
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
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
            let session: Option<ActorRef<SessionMsg>> = self.registry.get(&registry_key);
            let session = match session {
                Some(s) => s,
                None => {
                    self.start_session(&key, principal, client.clone()).await?;
                    continue;
                }
            };
            let credential_id = principal.credential_id.clone();
            let client = client.clone();
            match session
                .call(
                    |reply| SessionMsg::BeginCall {
                        credential_id,
                        client,
                        reply,
                    },
                    Some(Duration::from_secs(10)),
                )
                .await
            {
                Ok(ractor::rpc::CallResult::Success(Ok(ticket))) => return Ok(ticket),
                Ok(ractor::rpc::CallResult::Success(Err(SessionRefusal::WrongCredential))) => {
                    return Err(SessionError::WrongCredential);
                }
                // The session ended between lookup and call: start afresh.
                _ => continue,
            }
        }
        Err(SessionError::Unavailable)
    }

    async fn start_session(
        &self,
        key: &str,
        principal: &Principal,
        client: ClientInfo,
    ) -> Result<(), SessionError> {
        let sessions: ActorRef<SupervisorMsg> = self
            .registry
            .get(SESSIONS_KEY)
            .ok_or(SessionError::Unavailable)?;
        let manager = self.session_manager.clone();
        let bindings = self.session_bindings.clone();
        let on_end: OnSessionEnd = Arc::new(move |key: &str| {
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
        let idle_timeout = self.config.limits.session_idle_timeout;
        let spec = ChildSpec::new(session_key(key), Restart::Temporary, move || {
            (
                SessionActor,
                SessionArgs {
                    key: args_key.clone(),
                    owner: owner.clone(),
                    client: client.clone(),
                    idle_timeout,
                    on_end: Some(on_end.clone()),
                },
            )
        });
        match start_child(&sessions, spec).await {
            Ok(_) => Ok(()),
            // Another call of the same session won the race; use its actor.
            Err(e) if e.contains("already exists") => Ok(()),
            Err(_) => Err(SessionError::Unavailable),
        }
    }

    /// End a session (DELETE /mcp).
    pub async fn end_session(&self, mcp_session_id: &str) {
        self.session_bindings.remove(mcp_session_id);
        if let Some(sessions) = self.registry.get::<SupervisorMsg>(SESSIONS_KEY) {
            supervision::stop_child(&sessions, &session_key(&format!("mcp:{mcp_session_id}")))
                .await;
        }
    }

    pub fn session_count(&self) -> usize {
        self.registry.count_with_prefix("session/")
    }

    /// Stop admitting calls, wait for in-flight ones, then stop the tree in order
    /// (sessions, grants, connectors, and the audit writer last, which flushes).
    pub async fn shutdown(&self) {
        self.draining.store(true, Ordering::Release);
        let left = self
            .inflight
            .drained(self.config.limits.drain_timeout)
            .await;
        if left > 0 {
            tracing::warn!(in_flight = left, "drain timeout reached; stopping anyway");
        }
        let _ = self
            .root
            .call(SupervisorMsg::Shutdown, Some(Duration::from_secs(60)))
            .await;
    }

    pub fn begin_drain(&self) {
        self.draining.store(true, Ordering::Release);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("this MCP session belongs to another credential")]
    WrongCredential,
    #[error("the session could not be started")]
    Unavailable,
}

/// Lifecycle events become structured logs and counters.
fn spawn_lifecycle_logger(events: &LifecycleEvents, stats: Arc<Stats>) {
    let mut rx = events.subscribe();
    tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(event) => match &event.kind {
                    LifecycleKind::Started => {
                        tracing::debug!(supervisor = %event.supervisor, child = %event.child, "actor started")
                    }
                    LifecycleKind::Stopped { reason } => {
                        tracing::debug!(supervisor = %event.supervisor, child = %event.child, reason = reason.as_deref().unwrap_or(""), "actor stopped")
                    }
                    LifecycleKind::Failed { error } => {
                        stats.actor_failures.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(supervisor = %event.supervisor, child = %event.child, %error, "actor failed")
                    }
                    LifecycleKind::Restarted { attempt, after } => {
                        stats.actor_restarts.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(supervisor = %event.supervisor, child = %event.child, attempt, backoff_ms = after.as_millis() as u64, "actor restarted")
                    }
                    LifecycleKind::Escalated { error } => {
                        tracing::error!(supervisor = %event.supervisor, child = %event.child, %error, "supervisor escalated")
                    }
                },
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "lifecycle log lagged")
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            }
        }
    });
}

/// How long a revocation waits for the other replicas holding the grant.
pub const REVOCATION_ACK_WAIT: Duration = Duration::from_secs(5);

/// Where a replica tells the others that the admin risk overrides changed.
const POLICY_CHANNEL: &str = "mcpgate_policy";

impl Gateway {
    /// On PostgreSQL, LISTEN for what other replicas changed: grants (wake
    /// the revocation watcher) and risk overrides (reload them). Reconnects on
    /// its own, and reloads after a reconnect in case it missed one; ends with
    /// the gateway.
    fn spawn_store_listener(self: &Arc<Self>, revocations: std::sync::Weak<tokio::sync::Notify>) {
        let url = self.pool.connect_options().database_url.to_string();
        let gw = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut reconnected = false;
            loop {
                let session = async {
                    let mut listener = sqlx::postgres::PgListener::connect(&url).await?;
                    listener
                        .listen_all([crate::delegation::store::GRANTS_CHANNEL, POLICY_CHANNEL])
                        .await?;
                    if reconnected && let Some(gw) = gw.upgrade() {
                        gw.reload_risk_overrides().await?;
                        if let Some(revocations) = revocations.upgrade() {
                            revocations.notify_one();
                        }
                    }
                    loop {
                        let note = listener.recv().await?;
                        let (Some(gw), Some(revocations)) = (gw.upgrade(), revocations.upgrade())
                        else {
                            return Ok::<(), sqlx::Error>(());
                        };
                        if note.channel() == POLICY_CHANNEL {
                            gw.reload_risk_overrides().await?;
                        } else {
                            revocations.notify_one();
                        }
                    }
                };
                match session.await {
                    Ok(()) => return,
                    Err(e) => {
                        if gw.strong_count() == 0 {
                            return;
                        }
                        tracing::warn!(error = %e, "store notifications: reconnecting");
                        reconnected = true;
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
    }
}
