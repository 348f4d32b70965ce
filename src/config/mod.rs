//! Configuration: YAML parsed into typed values at the edge.
//!
//! Unknown keys and bad values stop the gateway with `file:line:column`.
//! Checks that need more than one field run after parsing and still point at
//! the offending line.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use actors::connector::UpstreamSpec;
use actors::grant::Risk;
use serde::{Deserialize, Deserializer};

pub mod audit;
pub mod classify;
pub mod oauth;
pub mod pii;

pub use classify::ClassifyRule;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8642";
pub const DEFAULT_DATA_DIR: &str = "./mcpgate-data";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// A PostgreSQL URL (`postgres://user:pass@host/db`) shared by several
    /// gateways. Unset: the embedded SQLite file in `data_dir`.
    #[serde(default)]
    pub database: Option<String>,
    /// Host names (or host:port) accepted in the `Host` header of `/mcp`.
    /// Empty means loopback only, which is what a local gateway wants.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// The gateway's address as users' browsers reach it (OAuth redirect
    /// URIs and connect links); `http://<listen>` when unset.
    #[serde(default)]
    pub public_url: Option<String>,
    /// A directory of operator catalogs (`<name>.yaml`); a service's
    /// `catalog: <name>` is looked up there before the shipped ones.
    #[serde(default)]
    pub catalog_dir: Option<PathBuf>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub policy: Policy,
    /// The services as the YAML gives them; [`Config::parse`] turns each into
    /// a typed [`ServiceConfig`] (or an error with file:line).
    #[serde(default, rename = "services")]
    service_specs: BTreeMap<String, ServiceSpec>,
    /// Every configured service, typed: an MCP upstream (stdio or HTTP) or a
    /// native catalog, never a mix.
    #[serde(skip)]
    pub services: BTreeMap<String, ServiceConfig>,
    #[serde(default)]
    pub users: Vec<UserConfig>,
    #[serde(default)]
    pub delegation: DelegationConfig,
    #[serde(default)]
    pub hooks: HooksConfig,
    /// PII pseudonymization (on by default).
    #[serde(default)]
    pub pii: pii::PiiConfig,
    /// Audit log signing and retention.
    #[serde(default)]
    pub audit: audit::AuditConfig,
    /// Sign-in for AI clients: mcpgate as the OAuth 2.1 authorization server of `/mcp`.
    #[serde(default)]
    pub oauth: oauth::OauthServerConfig,
    /// Digest of the config text: confirmation tokens are bound to it, so a
    /// policy change voids tokens issued under the old one.
    #[serde(skip)]
    pub policy_version: String,
}

/// Gateway-wide rules every call is held to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Refuse every action that is not a read.
    #[serde(default)]
    pub read_only: bool,
    /// Risk overrides by `service.action` glob (`*` any run, `?` one character),
    /// e.g. `"jira.delete_*": high_risk`. A service's own `risk:` wins over these;
    /// among these the longest matching pattern wins.
    #[serde(default)]
    pub risk: BTreeMap<String, Risk>,
    /// Write actions (`service.action` globs) that need the human's confirmation.
    /// high_risk actions always do.
    #[serde(default)]
    pub confirm: Vec<String>,
    /// Actions (`service.action` globs) whose catalog marks them as seen by
    /// others (`confirm: true`: messages, mail, schedules, runs) that people
    /// may run without confirming.
    #[serde(default)]
    pub relax_confirm: Vec<String>,
    /// How long a confirmation token stays valid.
    #[serde(default = "default_confirmation_ttl", deserialize_with = "duration")]
    pub confirmation_ttl: Duration,
    /// Argument-aware rules that raise an action's class (see `classify.rs`).
    #[serde(default)]
    pub classify: Vec<ClassifyRule>,
    /// Headless callers (service accounts, delegated grants) cannot confirm:
    /// `refuse` (default) the writes that need confirmation, or `allow` them.
    #[serde(default)]
    pub headless_confirm: HeadlessConfirm,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeadlessConfirm {
    #[default]
    Refuse,
    Allow,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            read_only: false,
            risk: BTreeMap::new(),
            confirm: Vec::new(),
            relax_confirm: Vec::new(),
            confirmation_ttl: default_confirmation_ttl(),
            classify: Vec::new(),
            headless_confirm: HeadlessConfirm::default(),
        }
    }
}

/// Where policy hooks live and how long one may take.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HooksConfig {
    /// `company/*.yaml` and `users/<email>/*.yaml` under it. Relative to the
    /// config file; a missing directory means no hooks.
    #[serde(default = "default_hooks_dir")]
    pub dir: PathBuf,
    /// Longest a hook's `when:` may take before it counts as failed.
    #[serde(default = "default_hook_budget", deserialize_with = "duration")]
    pub budget: Duration,
    /// How often the directory is checked for changed files.
    #[serde(default = "default_hook_poll", deserialize_with = "duration")]
    pub reload_poll: Duration,
}

impl Default for HooksConfig {
    fn default() -> Self {
        Self {
            dir: default_hooks_dir(),
            budget: default_hook_budget(),
            reload_poll: default_hook_poll(),
        }
    }
}

/// Timing of delegation grants. Instances, approvals and the feature flag
/// are operator data (admin API / CLI), not config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DelegationConfig {
    /// Longest life of a grant, whatever its job does.
    #[serde(default = "default_max_grant_ttl", deserialize_with = "duration")]
    pub max_grant_ttl: Duration,
    /// How often a grant asks Windmill whether its job still runs.
    #[serde(default = "default_liveness_interval", deserialize_with = "duration")]
    pub liveness_interval: Duration,
    /// How long a successful verification is reused (at most 60 s).
    #[serde(default = "default_verification_cache", deserialize_with = "duration")]
    pub verification_cache: Duration,
    /// How often revocations written by another process are picked up.
    #[serde(default = "default_revocation_poll", deserialize_with = "duration")]
    pub revocation_poll: Duration,
    /// Timeout of each call back to Windmill.
    #[serde(default = "default_windmill_timeout", deserialize_with = "duration")]
    pub windmill_timeout: Duration,
    /// Requests in flight to one Windmill instance at most (verifications
    /// and liveness probes); the next wait for a slot.
    #[serde(default = "default_windmill_max_in_flight")]
    pub windmill_max_in_flight: usize,
}

impl Default for DelegationConfig {
    fn default() -> Self {
        Self {
            max_grant_ttl: default_max_grant_ttl(),
            liveness_interval: default_liveness_interval(),
            verification_cache: default_verification_cache(),
            revocation_poll: default_revocation_poll(),
            windmill_timeout: default_windmill_timeout(),
            windmill_max_in_flight: default_windmill_max_in_flight(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Longest wait for an upstream answer before the call fails.
    #[serde(default = "default_call_timeout", deserialize_with = "duration")]
    pub call_timeout: Duration,
    /// Longest wait for an upstream to start and list its tools.
    #[serde(default = "default_connect_timeout", deserialize_with = "duration")]
    pub connect_timeout: Duration,
    #[serde(default = "default_session_idle", deserialize_with = "duration")]
    pub session_idle_timeout: Duration,
    /// How long shutdown waits for in-flight calls.
    #[serde(default = "default_drain", deserialize_with = "duration")]
    pub drain_timeout: Duration,
    /// Writes per audit transaction at most.
    #[serde(default = "default_audit_batch")]
    pub audit_max_batch: usize,
    /// `full` (default): an audit row survives power loss before the call
    /// proceeds (one fsync per group commit). `normal`: it survives a crash of
    /// the gateway process but not of the machine; much cheaper.
    #[serde(default)]
    pub audit_sync: AuditSync,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditSync {
    #[default]
    Full,
    Normal,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            call_timeout: default_call_timeout(),
            connect_timeout: default_connect_timeout(),
            session_idle_timeout: default_session_idle(),
            drain_timeout: default_drain(),
            audit_max_batch: default_audit_batch(),
            audit_sync: AuditSync::Full,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceKind {
    /// An upstream MCP server (stdio child process or Streamable HTTP).
    Mcp,
    /// A native service: a catalog run by the gateway's HTTP executor.
    Native,
}

/// How an upstream MCP service is presented to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expose {
    /// `<svc>_read_actions` and `<svc>_write_actions`.
    #[default]
    Actions,
    /// One `<svc>__<tool>` per upstream tool.
    Tools,
}

/// A configured service.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Operator override of an upstream tool's risk class.
    pub risk: BTreeMap<String, Risk>,
    pub expose: Expose,
    pub call_timeout: Option<Duration>,
    pub upstream: Upstream,
}

/// What serves a service: exactly one of these.
#[derive(Debug, Clone)]
pub enum Upstream {
    /// An MCP server: a child process (stdio) or Streamable HTTP.
    Mcp(UpstreamSpec),
    /// A native service: a catalog run by the gateway's HTTP executor.
    Native(NativeService),
}

#[derive(Debug, Clone)]
pub struct NativeService {
    /// A shipped catalog's name (`jira`) or a catalog file.
    pub catalog: String,
    /// The API's base URL (`https://acme.atlassian.net`).
    pub base_url: String,
    /// Values for catalog params the caller omits.
    pub defaults: BTreeMap<String, serde_json::Value>,
    /// Extra attempts for idempotent reads and for 429s.
    pub retries: u32,
    /// The longest `Retry-After` the gateway waits out itself.
    pub max_retry_wait: Duration,
    pub breaker: BreakerConfig,
    /// OAuth 2.0 (authorization code + PKCE) for users to connect their own
    /// account at `/connect/<service>`.
    pub oauth: Option<OauthConfig>,
}

impl ServiceConfig {
    /// The native part, if this is a native service.
    pub fn native(&self) -> Option<&NativeService> {
        match &self.upstream {
            Upstream::Native(native) => Some(native),
            _ => None,
        }
    }
}

/// A service as written in YAML (every field of every kind); checked and
/// turned into a [`ServiceConfig`] by [`Config::parse`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceSpec {
    kind: ServiceKind,
    /// Command line of a stdio MCP server.
    #[serde(default)]
    command: Option<Vec<String>>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    cwd: Option<PathBuf>,
    /// URL of a Streamable HTTP MCP server.
    #[serde(default)]
    url: Option<String>,
    /// Headers the gateway sends to an HTTP upstream (its own credential).
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// Operator override of an upstream tool's risk class.
    #[serde(default)]
    risk: BTreeMap<String, Risk>,
    #[serde(default)]
    expose: Expose,
    #[serde(default, deserialize_with = "optional_duration")]
    call_timeout: Option<Duration>,
    /// Native services: a shipped catalog's name (`jira`) or a catalog file.
    #[serde(default)]
    catalog: Option<String>,
    /// Native services: the API's base URL (`https://acme.atlassian.net`).
    #[serde(default)]
    base_url: Option<String>,
    /// Native services: values for catalog params the caller omits
    /// (`workspace: demo`, `projectId: acme-analytics`).
    #[serde(default)]
    defaults: BTreeMap<String, serde_json::Value>,
    /// Native services: extra attempts for idempotent reads and for 429s.
    #[serde(default = "default_retries")]
    retries: u32,
    /// Native services: the longest `Retry-After` the gateway waits out itself.
    #[serde(default = "default_max_retry_wait", deserialize_with = "duration")]
    max_retry_wait: Duration,
    #[serde(default)]
    breaker: BreakerConfig,
    /// Native services: OAuth 2.0 (authorization code + PKCE) for users to
    /// connect their own account at `/connect/<service>`.
    #[serde(default)]
    oauth: Option<OauthConfig>,
}

fn default_retries() -> u32 {
    2
}

fn default_max_retry_wait() -> Duration {
    Duration::from_secs(10)
}

/// Opens after `failures` consecutive failures (5xx, unreachable); after
/// `cool_down` one trial call decides whether it closes again.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    #[serde(default = "default_breaker_failures")]
    pub failures: u32,
    #[serde(default = "default_cool_down", deserialize_with = "duration")]
    pub cool_down: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failures: default_breaker_failures(),
            cool_down: default_cool_down(),
        }
    }
}

fn default_breaker_failures() -> u32 {
    5
}

fn default_cool_down() -> Duration {
    Duration::from_secs(30)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OauthConfig {
    pub authorize_url: String,
    pub token_url: String,
    pub client_id: String,
    /// The environment variable holding the client secret (never the secret itself).
    #[serde(default)]
    pub client_secret_env: Option<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Extra authorize-URL parameters (`access_type: offline`, `audience: api.atlassian.com`).
    #[serde(default)]
    pub extra: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub email: String,
    #[serde(default)]
    pub admin: bool,
    /// A workflow engine's identity rather than a person's.
    #[serde(default)]
    pub service_account: bool,
    /// Highest risk class per service; `"*"` covers every service.
    #[serde(default)]
    pub access: BTreeMap<String, Risk>,
}

impl UserConfig {
    /// The highest risk class this user may use on `service`, if any.
    pub fn access_to(&self, service: &str) -> Option<Risk> {
        self.access
            .get(service)
            .or_else(|| self.access.get("*"))
            .copied()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{location}: {message}")]
pub struct ConfigError {
    pub location: String,
    pub message: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            data_dir: default_data_dir(),
            database: None,
            allowed_hosts: Vec::new(),
            public_url: None,
            catalog_dir: None,
            limits: Limits::default(),
            policy: Policy::default(),
            service_specs: BTreeMap::new(),
            services: BTreeMap::new(),
            users: Vec::new(),
            delegation: DelegationConfig::default(),
            hooks: HooksConfig::default(),
            pii: pii::PiiConfig::default(),
            audit: audit::AuditConfig::default(),
            oauth: oauth::OauthServerConfig::default(),
            policy_version: policy_version(""),
        }
    }
}

impl Config {
    /// Load `path`, or the built-in defaults when there is none.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            location: path.display().to_string(),
            message: format!("cannot read config: {e}"),
        })?;
        let mut config = Self::parse(&text, &path.display().to_string())?;
        // Relative paths in a config file are relative to that file.
        if let Some(dir) = path.parent() {
            if config.data_dir.is_relative() {
                config.data_dir = dir.join(&config.data_dir);
            }
            if config.hooks.dir.is_relative() {
                config.hooks.dir = dir.join(&config.hooks.dir);
            }
            if let Some(ca) = &config.oauth.client_metadata_documents.extra_ca_file
                && ca.is_relative()
            {
                config.oauth.client_metadata_documents.extra_ca_file = Some(dir.join(ca));
            }
            if let Some(catalogs) = &config.catalog_dir
                && catalogs.is_relative()
            {
                config.catalog_dir = Some(dir.join(catalogs));
            }
            // A native service's catalog given as a file path.
            for service in config.services.values_mut() {
                if let Upstream::Native(native) = &mut service.upstream
                    && (native.catalog.ends_with(".yaml") || native.catalog.ends_with(".yml"))
                    && Path::new(&native.catalog).is_relative()
                {
                    native.catalog = dir.join(&native.catalog).display().to_string();
                }
            }
        }
        Ok(config)
    }

    /// The gateway's address as browsers reach it, without a trailing slash.
    pub fn public_url(&self) -> String {
        self.public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.listen))
            .trim_end_matches('/')
            .to_owned()
    }

    pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
        let config: Config = if text.trim().is_empty() {
            Config::default()
        } else {
            serde_yaml::from_str(text).map_err(|e| ConfigError {
                location: match e.location() {
                    Some(l) => format!("{file}:{}:{}", l.line(), l.column()),
                    None => file.to_owned(),
                },
                message: e.to_string(),
            })?
        };
        let mut config = config;
        config.policy_version = policy_version(text);
        config.services = config.typed_services(text, file)?;
        config.validate(text, file)?;
        Ok(config)
    }

    /// Apply `MCPGATE_LISTEN` / `MCPGATE_DATA_DIR` / `MCPGATE_DATABASE_URL` style overrides.
    pub fn apply_overrides(
        &mut self,
        listen: Option<&str>,
        data_dir: Option<&Path>,
        database: Option<&str>,
    ) -> Result<(), ConfigError> {
        if let Some(url) = database {
            if !is_postgres_url(url) {
                return Err(ConfigError {
                    location: "MCPGATE_DATABASE_URL".into(),
                    message: "must be a postgres:// or postgresql:// URL".into(),
                });
            }
            self.database = Some(url.to_owned());
        }
        if let Some(listen) = listen {
            self.listen = listen.parse().map_err(|e| ConfigError {
                location: "MCPGATE_LISTEN".into(),
                message: format!("'{listen}' is not an address:port: {e}"),
            })?;
        }
        if let Some(dir) = data_dir {
            self.data_dir = dir.to_owned();
        }
        Ok(())
    }

    pub fn user(&self, email: &str) -> Option<&UserConfig> {
        self.users
            .iter()
            .find(|u| u.email.eq_ignore_ascii_case(email))
    }

    /// Check each service as written and type it: an MCP upstream (stdio or
    /// HTTP) or a native catalog. Errors point at the line.
    fn typed_services(
        &self,
        text: &str,
        file: &str,
    ) -> Result<BTreeMap<String, ServiceConfig>, ConfigError> {
        let at = |needle: &str, message: String| ConfigError {
            location: locate(text, file, needle),
            message,
        };
        let mut typed = BTreeMap::new();
        for (name, service) in &self.service_specs {
            if !valid_service_name(name) {
                return Err(at(
                    &format!("{name}:"),
                    format!(
                        "service name '{name}' must start with a letter and use only a-z, 0-9, '_' or '-'"
                    ),
                ));
            }
            let upstream = match service.kind {
                ServiceKind::Native => match (&service.catalog, &service.base_url) {
                    (Some(catalog), Some(url))
                        if url.starts_with("http://") || url.starts_with("https://") =>
                    {
                        Upstream::Native(NativeService {
                            catalog: catalog.clone(),
                            base_url: url.clone(),
                            defaults: service.defaults.clone(),
                            retries: service.retries,
                            max_retry_wait: service.max_retry_wait,
                            breaker: service.breaker.clone(),
                            oauth: service.oauth.clone(),
                        })
                    }
                    (None, _) => {
                        return Err(at(
                            &format!("{name}:"),
                            format!(
                                "service '{name}': a native service needs `catalog` (e.g. jira)"
                            ),
                        ));
                    }
                    _ => {
                        return Err(at(
                            &format!("{name}:"),
                            format!(
                                "service '{name}': a native service needs an http(s) `base_url`"
                            ),
                        ));
                    }
                },
                ServiceKind::Mcp => match (&service.command, &service.url) {
                    (Some(_), Some(_)) => {
                        return Err(at(
                            &format!("{name}:"),
                            format!("service '{name}': give either `command` or `url`, not both"),
                        ));
                    }
                    (None, None) => {
                        return Err(at(
                            &format!("{name}:"),
                            format!(
                                "service '{name}': an mcp service needs `command` (stdio) or `url` (Streamable HTTP)"
                            ),
                        ));
                    }
                    (Some(command), None) if command.is_empty() || command[0].is_empty() => {
                        return Err(at(
                            "command:",
                            format!("service '{name}': `command` is empty"),
                        ));
                    }
                    (Some(command), None) => Upstream::Mcp(UpstreamSpec::Stdio {
                        command: command.clone(),
                        env: service.env.clone(),
                        cwd: service.cwd.clone(),
                    }),
                    (None, Some(url))
                        if !(url.starts_with("http://") || url.starts_with("https://")) =>
                    {
                        return Err(at(
                            url,
                            format!(
                                "service '{name}': `url` must be http:// or https://, got '{url}'"
                            ),
                        ));
                    }
                    (None, Some(url)) => Upstream::Mcp(UpstreamSpec::Http {
                        url: url.clone(),
                        headers: service.headers.clone(),
                    }),
                },
            };
            typed.insert(
                name.clone(),
                ServiceConfig {
                    risk: service.risk.clone(),
                    expose: service.expose,
                    call_timeout: service.call_timeout,
                    upstream,
                },
            );
        }
        Ok(typed)
    }

    fn validate(&self, text: &str, file: &str) -> Result<(), ConfigError> {
        let at = |needle: &str, message: String| ConfigError {
            location: locate(text, file, needle),
            message,
        };
        if let Some(url) = &self.database
            && !is_postgres_url(url)
        {
            return Err(at(
                "database:",
                "`database` must be a postgres:// or postgresql:// URL (unset: SQLite in data_dir)"
                    .into(),
            ));
        }
        for pattern in self
            .policy
            .risk
            .keys()
            .chain(self.policy.confirm.iter())
            .chain(self.policy.relax_confirm.iter())
        {
            if !pattern.contains('.') {
                return Err(at(
                    pattern,
                    format!(
                        "policy pattern '{pattern}' must have the form service.action (globs allowed)"
                    ),
                ));
            }
        }
        if self.audit.checkpoint_every < 1 {
            return Err(at(
                "checkpoint_every",
                "audit.checkpoint_every must be at least 1".into(),
            ));
        }
        if self.audit.origin.is_empty()
            || self
                .audit
                .origin
                .contains(|c: char| c.is_whitespace() || c == '+')
        {
            return Err(at(
                "origin",
                "audit.origin must be non-empty, without spaces or '+' (a host name is a good choice)"
                    .into(),
            ));
        }
        if self.delegation.verification_cache > Duration::from_secs(60) {
            return Err(at(
                "verification_cache",
                "delegation.verification_cache must be at most 60s".into(),
            ));
        }
        if !(1..=4096).contains(&self.delegation.windmill_max_in_flight) {
            return Err(at(
                "windmill_max_in_flight",
                "delegation.windmill_max_in_flight must be between 1 and 4096".into(),
            ));
        }
        self.validate_oauth(text, file)?;
        let mut seen = HashSet::new();
        for user in &self.users {
            if !user.email.contains('@') {
                return Err(at(
                    &user.email,
                    format!("user '{}': email must contain '@'", user.email),
                ));
            }
            if !seen.insert(user.email.to_ascii_lowercase()) {
                return Err(at(
                    &user.email,
                    format!("user '{}' is listed twice", user.email),
                ));
            }
            for service in user.access.keys() {
                if service != "*" && !self.services.contains_key(service) {
                    return Err(ConfigError {
                        location: locate_after(text, file, &user.email, service),
                        message: format!(
                            "user '{}': access names unknown service '{service}'",
                            user.email
                        ),
                    });
                }
            }
        }
        Ok(())
    }
}

impl Config {
    /// The `oauth:` section's checks that span fields: pre-registered clients
    /// have distinct ids and redirect URIs.
    fn validate_oauth(&self, text: &str, file: &str) -> Result<(), ConfigError> {
        let at = |needle: &str, message: String| ConfigError {
            location: locate(text, file, needle),
            message,
        };
        let mut ids = HashSet::new();
        for client in &self.oauth.clients {
            if client.client_id.is_empty() || !ids.insert(client.client_id.clone()) {
                return Err(at(
                    &client.client_id,
                    format!(
                        "oauth client '{}': client_id must be non-empty and unique",
                        client.client_id
                    ),
                ));
            }
            if client.redirect_uris.is_empty() {
                return Err(at(
                    &client.client_id,
                    format!("oauth client '{}': needs redirect_uris", client.client_id),
                ));
            }
        }
        if let Some(oidc) = &self.oauth.oidc
            && !(oidc.issuer.starts_with("https://") || oidc.issuer.starts_with("http://"))
        {
            return Err(at(
                "issuer:",
                "oauth.oidc.issuer must be an http(s) URL".into(),
            ));
        }
        Ok(())
    }
}

fn valid_service_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// `file:line:column` of the first occurrence of `needle` (1-based).
pub(crate) fn locate(text: &str, file: &str, needle: &str) -> String {
    locate_from(text, file, 0, needle)
}

/// Like [`locate`], searching only after the first occurrence of `anchor`.
pub(crate) fn locate_after(text: &str, file: &str, anchor: &str, needle: &str) -> String {
    let start = text.find(anchor).unwrap_or(0);
    locate_from(text, file, start, needle)
}

fn locate_from(text: &str, file: &str, start: usize, needle: &str) -> String {
    match text[start..].find(needle) {
        Some(offset) => {
            let index = start + offset;
            let line = text[..index].matches('\n').count() + 1;
            let column = index - text[..index].rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
            format!("{file}:{line}:{column}")
        }
        None => file.to_owned(),
    }
}

fn default_listen() -> SocketAddr {
    DEFAULT_LISTEN.parse().expect("valid default address")
}
fn default_data_dir() -> PathBuf {
    PathBuf::from(DEFAULT_DATA_DIR)
}
fn default_call_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(120)
}
fn default_session_idle() -> Duration {
    Duration::from_secs(30 * 60)
}
fn default_drain() -> Duration {
    Duration::from_secs(30)
}
fn default_hooks_dir() -> PathBuf {
    PathBuf::from("hooks")
}
fn default_hook_budget() -> Duration {
    // Generous: a condition is bounded by its input; this catches pathological
    // ones, not a thread that was descheduled for a moment.
    Duration::from_millis(100)
}
fn default_hook_poll() -> Duration {
    Duration::from_secs(1)
}
fn default_max_grant_ttl() -> Duration {
    Duration::from_secs(3600)
}
fn default_liveness_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_windmill_max_in_flight() -> usize {
    64
}
fn default_verification_cache() -> Duration {
    Duration::from_secs(60)
}
fn default_revocation_poll() -> Duration {
    Duration::from_millis(250)
}
fn default_windmill_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_confirmation_ttl() -> Duration {
    Duration::from_secs(5 * 60)
}

fn policy_version(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))[..16].to_owned()
}

/// Whether `database:` names a PostgreSQL server (else: a SQLite file).
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

fn default_audit_batch() -> usize {
    256
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text)
        .map_err(|e| serde::de::Error::custom(format!("bad duration '{text}': {e} (e.g. 30s, 5m)")))
}

/// `duration` for other modules' config sections.
pub(crate) fn duration_de<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    duration(d)
}

fn optional_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"listen: 127.0.0.1:8642
data_dir: ./mcpgate-data
services:
  everything:
    kind: mcp
    command: ["npx", "-y", "@modelcontextprotocol/server-everything"]
  time:
    kind: mcp
    command: ["python3", "-m", "mcp_server_time"]
  remote:
    kind: mcp
    url: http://127.0.0.1:9000/mcp
    risk: { some_tool: high_risk }
users:
  - email: alice@example.com
    access: { everything: write, time: read }
  - email: ops@example.com
    admin: true
    access: { "*": high_risk }
"#;

    #[test]
    fn the_documented_example_parses() {
        let config = Config::parse(EXAMPLE, "c.yaml").unwrap();
        assert_eq!(config.services.len(), 3);
        assert_eq!(config.services["remote"].risk["some_tool"], Risk::HighRisk);
        let alice = config.user("alice@example.com").unwrap();
        assert_eq!(alice.access_to("everything"), Some(Risk::Write));
        assert_eq!(alice.access_to("remote"), None);
        let ops = config.user("ops@example.com").unwrap();
        assert_eq!(ops.access_to("remote"), Some(Risk::HighRisk));
    }

    #[test]
    fn policy_patterns_need_a_service_and_an_action() {
        let err = Config::parse("policy:\n  confirm: [post_message]\n", "c.yaml").unwrap_err();
        assert!(err.to_string().starts_with("c.yaml:2:13"), "{err}");
    }

    #[test]
    fn empty_file_means_defaults() {
        let config = Config::parse("", "c.yaml").unwrap();
        assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
    }

    #[test]
    fn errors_name_file_line_and_column() {
        let cases = [
            (
                "listen: 1.2.3.4:80\nbogus: 1\n",
                "c.yaml:2:1",
                "unknown field `bogus`",
            ),
            ("listen: nope\n", "c.yaml:1:9", "invalid socket address"),
            (
                "services:\n  a:\n    kind: mcp\n    command: [x]\n    risk: { t: dangerous }\n",
                "c.yaml:5:",
                "unknown risk class 'dangerous'",
            ),
            (
                "services:\n  a:\n    kind: mcp\n    url: ftp://x\n",
                "c.yaml:4:10",
                "must be http",
            ),
            (
                "services:\n  a:\n    kind: mcp\n",
                "c.yaml:2:3",
                "needs `command`",
            ),
            (
                "users:\n  - email: a@x\n    access: { jira: read }\n",
                "c.yaml:3:15",
                "unknown service 'jira'",
            ),
            (
                "limits:\n  call_timeout: soon\n",
                "c.yaml:2:",
                "bad duration",
            ),
            (
                "delegation:\n  windmill_max_in_flight: 0\n",
                "c.yaml:2:3",
                "must be between 1 and 4096",
            ),
        ];
        for (text, location, message) in cases {
            let err = Config::parse(text, "c.yaml").unwrap_err();
            let shown = err.to_string();
            assert!(shown.starts_with(location), "{text:?}: got {shown}");
            assert!(shown.contains(message), "{text:?}: got {shown}");
        }
    }
}
