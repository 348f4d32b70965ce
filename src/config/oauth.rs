//! The `oauth:` section: mcpgate as the OAuth 2.1 authorization server of its
//! own `/mcp` (AI clients sign people in through a browser), and how people
//! prove who they are (the company's OIDC provider, or an admin's one-time link).

use std::time::Duration;

use serde::{Deserialize, Deserializer};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OauthServerConfig {
    /// Off: no metadata, no `/oauth/authorize`; `/mcp` takes gateway tokens only.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Life of an access token (short: revocation is immediate anyway, but a
    /// stolen token should not live long).
    #[serde(default = "default_access_ttl", deserialize_with = "duration")]
    pub access_token_ttl: Duration,
    /// Life of a refresh-token family from its sign-in; each refresh rotates
    /// the token, never extends the family.
    #[serde(default = "default_refresh_ttl", deserialize_with = "duration")]
    pub refresh_token_ttl: Duration,
    /// Life of an authorization code.
    #[serde(default = "default_code_ttl", deserialize_with = "duration")]
    pub code_ttl: Duration,
    /// How long a browser stays signed in at the gateway (consent pages).
    #[serde(default = "default_session_ttl", deserialize_with = "duration")]
    pub session_ttl: Duration,
    /// Dynamic Client Registration (RFC 7591) for clients without a metadata document.
    #[serde(default = "yes")]
    pub dynamic_registration: bool,
    /// Clients the operator registered: their `client_id` and redirect URIs.
    #[serde(default)]
    pub clients: Vec<PreregisteredClient>,
    #[serde(default)]
    pub client_metadata_documents: CimdConfig,
    /// The company's OpenID provider people sign in with. Unset: one-time
    /// sign-in links (`mcpgate oauth signin-link`) only.
    #[serde(default)]
    pub oidc: Option<OidcConfig>,
    /// The scope a `401` from `/mcp` challenges for, and what an
    /// authorization request without `scope` gets: `mcp` (everything the
    /// person's access allows), or `mcp:read` for least privilege — clients
    /// that handle step-up then ask again for `mcp` at their first write.
    #[serde(default)]
    pub default_scope: DefaultScope,
    /// Per-address request limits of the public OAuth endpoints.
    #[serde(default)]
    pub rate_limits: RateLimits,
}

impl Default for OauthServerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            access_token_ttl: default_access_ttl(),
            refresh_token_ttl: default_refresh_ttl(),
            code_ttl: default_code_ttl(),
            session_ttl: default_session_ttl(),
            dynamic_registration: true,
            clients: Vec::new(),
            client_metadata_documents: CimdConfig::default(),
            oidc: None,
            default_scope: DefaultScope::default(),
            rate_limits: RateLimits::default(),
        }
    }
}

/// See [`OauthServerConfig::default_scope`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum DefaultScope {
    #[default]
    #[serde(rename = "mcp")]
    Mcp,
    #[serde(rename = "mcp:read")]
    McpRead,
}

/// Token buckets per client address (IPv6: per /64), in memory on each
/// replica. They keep one address from flooding the store and the audit log
/// through endpoints anyone can reach; the delegation token exchange is not
/// limited (a workflow engine fires thousands of jobs from one address).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimits {
    /// `POST /oauth/register`: a client registers once per install.
    #[serde(default = "default_register_limit")]
    pub register: RateLimit,
    /// `POST /oauth/token` (code and refresh grants).
    #[serde(default = "default_token_limit")]
    pub token: RateLimit,
    /// `GET /oauth/authorize`.
    #[serde(default = "default_authorize_limit")]
    pub authorize: RateLimit,
    /// Take the client address from the last `X-Forwarded-For` entry (the
    /// one the proxy in front appended). Only behind a proxy that every
    /// request passes; otherwise a client could name any address.
    #[serde(default)]
    pub trust_forwarded_for: bool,
    /// Addresses tracked at most; past it, new addresses share one bucket.
    #[serde(default = "default_tracked_addresses")]
    pub tracked_addresses: usize,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            register: default_register_limit(),
            token: default_token_limit(),
            authorize: default_authorize_limit(),
            trust_forwarded_for: false,
            tracked_addresses: default_tracked_addresses(),
        }
    }
}

/// `burst` requests at once, refilled at `per_minute`; `per_minute: 0`
/// turns the limit off.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub per_minute: u32,
    pub burst: u32,
}

// Sized for an office behind one NAT address: dozens of people connecting
// at once stay under them; a script hammering an endpoint does not.
fn default_register_limit() -> RateLimit {
    RateLimit {
        per_minute: 10,
        burst: 20,
    }
}
fn default_token_limit() -> RateLimit {
    RateLimit {
        per_minute: 60,
        burst: 60,
    }
}
fn default_authorize_limit() -> RateLimit {
    RateLimit {
        per_minute: 60,
        burst: 60,
    }
}
fn default_tracked_addresses() -> usize {
    100_000
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreregisteredClient {
    pub client_id: String,
    /// Shown on the consent page.
    pub name: String,
    pub redirect_uris: Vec<String>,
}

/// Client ID Metadata Documents: a `client_id` that is an HTTPS URL is
/// fetched, within these bounds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CimdConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Fetch documents from private, loopback and link-local addresses
    /// (a lab or a test; never on a gateway reachable from outside).
    #[serde(default)]
    pub allow_private_addresses: bool,
    /// Accept `http://` client ids (tests only; the spec requires HTTPS).
    #[serde(default)]
    pub allow_http: bool,
    #[serde(default = "default_cimd_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// Largest document accepted.
    #[serde(default = "default_cimd_max_bytes")]
    pub max_bytes: usize,
    #[serde(default = "default_cimd_cache_ttl", deserialize_with = "duration")]
    pub cache_ttl: Duration,
    /// Documents kept in memory at most.
    #[serde(default = "default_cimd_cache_entries")]
    pub cache_entries: usize,
    /// A PEM CA certificate trusted for these fetches besides the system's
    /// roots (a lab's own CA). Relative to the config file.
    #[serde(default)]
    pub extra_ca_file: Option<std::path::PathBuf>,
}

impl Default for CimdConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            allow_private_addresses: false,
            allow_http: false,
            timeout: default_cimd_timeout(),
            max_bytes: default_cimd_max_bytes(),
            cache_ttl: default_cimd_cache_ttl(),
            cache_entries: default_cimd_cache_entries(),
            extra_ca_file: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The provider's issuer; its discovery document is
    /// `<issuer>/.well-known/openid-configuration`.
    pub issuer: String,
    pub client_id: String,
    /// The environment variable holding the client secret (never the secret itself).
    #[serde(default)]
    pub client_secret_env: Option<String>,
    /// Email domains allowed to sign in (empty: any domain; the email must
    /// be a configured user in any case).
    #[serde(default)]
    pub allowed_domains: Vec<String>,
    /// Groups allowed to sign in, read from the ID token's `groups` claim
    /// (empty: any group; ask the provider for it, e.g. scope `groups`).
    #[serde(default)]
    pub allowed_groups: Vec<String>,
    #[serde(default = "default_oidc_scopes")]
    pub scopes: Vec<String>,
    /// Timeout of each call to the provider (discovery, keys, token).
    #[serde(default = "default_cimd_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
}

fn default_oidc_scopes() -> Vec<String> {
    vec!["openid".into(), "email".into(), "profile".into()]
}

fn yes() -> bool {
    true
}
fn default_access_ttl() -> Duration {
    Duration::from_secs(15 * 60)
}
fn default_refresh_ttl() -> Duration {
    Duration::from_secs(30 * 24 * 3600)
}
fn default_code_ttl() -> Duration {
    Duration::from_secs(60)
}
fn default_session_ttl() -> Duration {
    Duration::from_secs(12 * 3600)
}
fn default_cimd_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_cimd_max_bytes() -> usize {
    5 * 1024
}
fn default_cimd_cache_ttl() -> Duration {
    Duration::from_secs(600)
}
fn default_cimd_cache_entries() -> usize {
    1000
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    super::duration_de(d)
}
