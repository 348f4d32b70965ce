//! The running gateway: the composition root. It builds the supervision
//! tree and the handles the edges use (the pipeline, sessions, delegation,
//! catalogs, the audit log), and stops them in order. Nothing below the HTTP
//! edges takes a `Gateway`: each part receives only the state it needs.
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

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use actors::audit::{AuditWriter, AuditWriterArgs, ChainSettings};
use actors::connector::{
    ConnectorActor, ConnectorArgs, ConnectorMsg, ConnectorRef, ServiceDirectory, UpstreamSpec,
};
use ractor::{Actor, ActorRef};
use supervision::{
    ChildSpec, LifecycleEvents, LifecycleKind, Registry, Restart, RestartPolicy, Supervisor,
    SupervisorArgs, SupervisorMsg,
};

use crate::audit::{self, AuditLog};
use crate::authserver::AuthServer;
use crate::config::{Config, NativeService, ServiceConfig, Upstream};
use crate::credential_cache::{CredentialCache, RevocationWatch};
use crate::delegation::Delegation;
use crate::drain::Drain;
use crate::hooks::Hooks;
use crate::keys::MasterKey;
use crate::native::connect::ConnectState;
use crate::pii::Pii;
use crate::pipeline::Pipeline;
use crate::policy::Catalogs;
use crate::sessions::Sessions;
use crate::stats::Stats;
use crate::storage::Db;
use crate::tokens::TokenRecord;
use crate::write_safety::{ConfirmationKey, Confirmations};

pub const CONNECTORS_KEY: &str = "connectors";

pub use actors::connector::registry_key as connector_key;

pub struct Gateway {
    config: Arc<Config>,
    pool: Db,
    registry: Registry,
    directory: ServiceDirectory,
    stats: Arc<Stats>,
    drain: Arc<Drain>,
    audit: AuditLog,
    sessions: Arc<Sessions>,
    catalogs: Arc<Catalogs>,
    delegation: Arc<Delegation>,
    pipeline: Arc<Pipeline>,
    connect: Arc<ConnectState>,
    authserver: Arc<AuthServer>,
    /// Gateway tokens verified since the last revocation (credential_cache.rs).
    token_cache: CredentialCache<TokenRecord>,
    /// How every credential cache here learns of revocations.
    revocations: Arc<RevocationWatch>,
    master_key: MasterKey,
    pii: Arc<Pii>,
    hooks: Arc<Hooks>,
    root: ActorRef<SupervisorMsg>,
    /// Keeps the SQLite file's writer thread running while the gateway
    /// lives (others find it by the pool; `None` on PostgreSQL).
    _sqlite_writer: Option<Arc<actors::sqlite_writer::SqliteWriter>>,
}

/// An MCP service's connector: the upstream it starts or reaches.
fn connector_spec(
    name: &str,
    service: &ServiceConfig,
    upstream: UpstreamSpec,
    config: &Config,
    directory: &ServiceDirectory,
) -> ChildSpec {
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
#[allow(clippy::too_many_arguments)]
fn native_spec(
    name: &str,
    service: &ServiceConfig,
    native: &NativeService,
    config: &Config,
    directory: &ServiceDirectory,
    pool: &Db,
    master: &MasterKey,
    catalog_rules: &mut Vec<crate::classify::ClassifyRule>,
) -> anyhow::Result<ChildSpec> {
    let catalog = crate::native::catalog::load(&native.catalog, config.catalog_dir.as_deref())
        .map_err(|e| anyhow::anyhow!("service '{name}': {e}"))?;
    let connect_url = native
        .oauth
        .as_ref()
        .map(|_| format!("{}/connect/{name}", config.public_url()));
    catalog_rules.extend(catalog.classify_rules(name));
    let args = crate::native::actor::NativeArgs {
        service: name.to_owned(),
        base_url: native.base_url.clone(),
        catalog: Arc::new(catalog),
        call_timeout: service.call_timeout.unwrap_or(config.limits.call_timeout),
        directory: directory.clone(),
        pool: pool.clone(),
        master: master.clone(),
        defaults: native.defaults.clone(),
        retries: native.retries,
        max_retry_wait: native.max_retry_wait,
        breaker: native.breaker.clone(),
        oauth: native.oauth.clone(),
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

impl Gateway {
    /// Build the supervision tree and start every configured connector.
    pub async fn start(config: Config, pool: Db) -> anyhow::Result<Arc<Gateway>> {
        let master_key =
            MasterKey::for_config(&config).map_err(|e| anyhow::anyhow!("gateway key: {e}"))?;
        let config = Arc::new(config);
        let registry = Registry::new();
        let events = LifecycleEvents::default();
        let directory = ServiceDirectory::default();
        let stats = Arc::new(Stats::default());
        spawn_lifecycle_logger(&events, stats.clone());

        let sqlite_writer = actors::sqlite_writer::SqliteWriter::of(&pool)
            .await
            .map_err(|e| anyhow::anyhow!("SQLite writer: {e}"))?;
        let audit_pool = pool.clone();
        let max_batch = config.limits.audit_max_batch;
        let chain = ChainSettings {
            key: audit::checkpoint_key(&master_key, &config.audit),
            origin: config.audit.key_name(),
            checkpoint_every: config.audit.checkpoint_every,
            checkpoint_interval: config.audit.checkpoint_interval,
        };
        let audit_writer = ChildSpec::new(audit::WRITER_KEY, Restart::Permanent, move || {
            (
                AuditWriter,
                AuditWriterArgs {
                    pool: audit_pool.clone(),
                    max_batch,
                    chain: chain.clone(),
                },
            )
        });
        let mut connectors = Vec::new();
        let mut catalog_rules = Vec::new();
        for (name, service) in &config.services {
            connectors.push(match &service.upstream {
                Upstream::Mcp(upstream) => {
                    connector_spec(name, service, upstream.clone(), &config, &directory)
                }
                Upstream::Native(native) => native_spec(
                    name,
                    service,
                    native,
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
            audit_writer,
            supervisor_spec(
                CONNECTORS_KEY,
                connector_policy,
                &events,
                &registry,
                connectors,
            ),
            supervisor_spec(
                crate::delegation::SUPERVISOR_KEY,
                temporary_policy.clone(),
                &events,
                &registry,
                Vec::new(),
            ),
            supervisor_spec(
                crate::sessions::SUPERVISOR_KEY,
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
        // Calls a previous run wrote ahead and never completed (it crashed):
        // say so in their rows. On a shared store only those too old to be
        // running on another gateway.
        let horizon = config
            .services
            .values()
            .filter_map(|s| s.call_timeout)
            .chain([config.limits.call_timeout])
            .max()
            .unwrap_or_default()
            + config.limits.drain_timeout
            + Duration::from_secs(60);
        let started_before = match crate::storage::backend(&pool) {
            crate::storage::Backend::Sqlite => None,
            crate::storage::Backend::Postgres => Some(actors::format_rfc3339(
                time::OffsetDateTime::now_utc() - horizon,
            )),
        };
        // The writer registers once its chain is open (a store round trip or two).
        let mut writer = registry.get(audit::WRITER_KEY);
        for _ in 0..1000 {
            if writer.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            writer = registry.get(audit::WRITER_KEY);
        }
        let writer = writer.ok_or_else(|| {
            anyhow::anyhow!("the audit writer did not start within 10 s (its chain could not be opened; see the log)")
        })?;
        let interrupted = audit::mark_interrupted(&writer, started_before)
            .await
            .map_err(|e| anyhow::anyhow!("completing interrupted audit rows: {e}"))?;
        if interrupted > 0 {
            tracing::warn!(
                calls = interrupted,
                "audit rows of calls interrupted by a previous stop were completed as interrupted"
            );
        }
        let orphans = crate::delegation::store::end_orphans(&pool).await?;
        if orphans > 0 {
            tracing::info!(
                grants = orphans,
                "ended grants left live by the previous run"
            );
        }
        let drain = Arc::new(Drain::default());
        let audit = AuditLog::new(registry.clone(), stats.clone(), pool.clone());
        let catalogs = Catalogs::start(
            config.clone(),
            pool.clone(),
            directory.clone(),
            catalog_rules,
        )
        .await?;
        let pii = Arc::new(
            Pii::new(config.pii.clone(), &master_key, pool.clone())
                .map_err(|e| anyhow::anyhow!("{e}"))?,
        );
        let hooks = Arc::new(
            Hooks::load(&config.hooks.dir, config.hooks.budget)
                .map_err(|e| anyhow::anyhow!("hooks: {e}"))?,
        );
        // One watch for every credential cache of this gateway.
        let revocations = RevocationWatch::start(&pool);
        let delegation = Delegation::start(
            config.clone(),
            pool.clone(),
            registry.clone(),
            audit.clone(),
            drain.clone(),
            revocations.clone(),
        );
        let confirmations = Confirmations::new(
            ConfirmationKey::from_master(&master_key),
            pool.clone(),
            config.policy.confirmation_ttl,
        );
        let pipeline = Arc::new(Pipeline {
            config: config.clone(),
            catalogs: catalogs.clone(),
            hooks: hooks.clone(),
            pii: pii.clone(),
            audit: audit.clone(),
            confirmations,
            drain: drain.clone(),
        });
        let connect = Arc::new(ConnectState {
            config: config.clone(),
            pool: pool.clone(),
            master_key: master_key.clone(),
            flows: Default::default(),
            audit: audit.clone(),
        });
        if config.oauth.enabled && config.public_url.is_none() && !config.listen.ip().is_loopback()
        {
            tracing::warn!(
                "oauth: public_url is not set; AI clients will be told the issuer is http://{}, \
                 which they may not reach: set public_url to the address they use",
                config.listen
            );
        }
        let authserver = Arc::new(
            AuthServer::new(
                config.clone(),
                pool.clone(),
                audit.clone(),
                &master_key,
                revocations.clone(),
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?,
        );
        let sessions = Arc::new(Sessions::new(
            registry.clone(),
            config.limits.session_idle_timeout,
        ));
        let grant_sessions = sessions.clone();
        delegation.grants.on_end(Arc::new(move |grant_id: &str| {
            grant_sessions.retire_credential(grant_id)
        }));
        hooks.spawn_watcher(config.hooks.reload_poll, drain.clone());
        pii.spawn_expiry(drain.clone());
        authserver.spawn_prune(drain.clone());
        if let Some(older_than) = config.audit.retention {
            audit::retention::spawn(
                pool.clone(),
                registry.clone(),
                older_than,
                config.audit.retention_check,
                drain.clone(),
            );
        }
        Ok(Arc::new(Gateway {
            token_cache: CredentialCache::new(revocations.clone()),
            revocations,
            config,
            pool,
            registry,
            directory,
            stats,
            drain,
            audit,
            sessions,
            catalogs,
            delegation,
            pipeline,
            connect,
            authserver,
            master_key,
            pii,
            hooks,
            root,
            _sqlite_writer: sqlite_writer,
        }))
    }

    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    pub fn pool(&self) -> &Db {
        &self.pool
    }

    pub fn token_cache(&self) -> &CredentialCache<TokenRecord> {
        &self.token_cache
    }

    pub fn master_key(&self) -> &MasterKey {
        &self.master_key
    }

    pub fn directory(&self) -> &ServiceDirectory {
        &self.directory
    }

    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    pub fn drain(&self) -> &Arc<Drain> {
        &self.drain
    }

    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    pub fn sessions(&self) -> &Arc<Sessions> {
        &self.sessions
    }

    pub fn catalogs(&self) -> &Arc<Catalogs> {
        &self.catalogs
    }

    pub fn delegation(&self) -> &Arc<Delegation> {
        &self.delegation
    }

    pub fn pipeline(&self) -> &Arc<Pipeline> {
        &self.pipeline
    }

    pub fn connect(&self) -> &Arc<ConnectState> {
        &self.connect
    }

    /// The OAuth 2.1 authorization server of `/mcp` (AI-client sign-in).
    pub fn authserver(&self) -> &Arc<AuthServer> {
        &self.authserver
    }

    pub fn pii(&self) -> &Arc<Pii> {
        &self.pii
    }

    pub fn hooks(&self) -> &Arc<Hooks> {
        &self.hooks
    }

    /// `service`'s connector, as callers see it.
    pub fn connector(&self, service: &str) -> Option<ConnectorRef> {
        self.directory.connector(service)
    }

    /// An MCP connector's own actor (its full message set: tests inject faults).
    pub fn mcp_connector(&self, service: &str) -> Option<ActorRef<ConnectorMsg>> {
        self.registry.get(&connector_key(service))
    }

    pub fn is_draining(&self) -> bool {
        self.drain.is_draining()
    }

    pub fn begin_drain(&self) {
        self.drain.begin();
    }

    /// Stop admitting calls, wait for in-flight ones, then stop the tree in order
    /// (sessions, grants, connectors, and the audit writer last, which flushes).
    pub async fn shutdown(&self) {
        self.drain.begin();
        let left = self.drain.drained(self.config.limits.drain_timeout).await;
        if left > 0 {
            tracing::warn!(in_flight = left, "drain timeout reached; stopping anyway");
        }
        let _ = self
            .root
            .call(SupervisorMsg::Shutdown, Some(Duration::from_secs(60)))
            .await;
        self.revocations.leave().await;
    }
}
