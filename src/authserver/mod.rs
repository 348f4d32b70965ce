//! mcpgate as the OAuth 2.1 authorization server of its own `/mcp` (the MCP
//! authorization spec): metadata (RFC 9728, RFC 8414), clients (pre-registered,
//! RFC 7591 registration, Client ID Metadata Documents), authorization codes
//! with PKCE S256, audience-bound access tokens (RFC 8707) and rotated refresh
//! tokens, and who the person is (a browser session opened through the
//! company's OpenID provider, or by an admin's one-time link).
//!
//! Everything that must agree across replicas — registrations, codes, token
//! families, links, browser sessions — lives in the store; only SHA-256 digests
//! of secrets are kept. The HTTP edge is `oauth/`; this module knows no routes.

pub mod cimd;
pub mod clients;
pub mod idp;
pub mod pkce;
pub mod redirect;
pub mod scope;
pub mod signin;
pub mod tokens;

use std::sync::Arc;

use actors::session::ClientInfo;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::audit::{AuditLog, RowStart};
use crate::config::Config;
use crate::domain::{Reason, Refusal};
use crate::keys::MasterKey;
use crate::storage::Db;

/// The scope a `403 insufficient_scope` challenges for: use of `/mcp` with
/// the person's whole access (`scope.rs`).
pub const SCOPE: &str = scope::Scope::Full.as_str();

/// What the edges need: nothing of the rest of the gateway.
pub struct AuthServer {
    pub config: Arc<Config>,
    pub pool: Db,
    pub audit: AuditLog,
    /// Seals consent tickets and pending authorizations (shared by replicas,
    /// since the master key is).
    ticket_key: [u8; 32],
    pub cimd: cimd::CimdCache,
    /// The company's OpenID provider, when configured.
    pub idp: Option<idp::Idp>,
    /// Access tokens verified since the last revocation, with their expiry.
    access_cache: crate::credential_cache::CredentialCache<(tokens::AccessGrant, String)>,
}

impl AuthServer {
    pub fn new(
        config: Arc<Config>,
        pool: Db,
        audit: AuditLog,
        master: &MasterKey,
        revocations: Arc<crate::credential_cache::RevocationWatch>,
    ) -> Result<Self, String> {
        let cimd = cimd::CimdCache::new(config.oauth.client_metadata_documents.clone())?;
        let idp = config.oauth.oidc.clone().map(idp::Idp::new).transpose()?;
        Ok(Self {
            access_cache: crate::credential_cache::CredentialCache::new(revocations),
            config,
            pool,
            audit,
            ticket_key: master.derive("oauth consent tickets v1"),
            cimd,
            idp,
        })
    }

    /// Every ten minutes, remove expired codes, tokens, families, links and
    /// browser sessions (`tokens::prune`); ends when the gateway drains.
    pub fn spawn_prune(self: &Arc<Self>, drain: Arc<crate::drain::Drain>) {
        let server = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(600));
            loop {
                tick.tick().await;
                let Some(server) = server.upgrade() else {
                    return;
                };
                if drain.is_draining() {
                    return;
                }
                match tokens::prune(&server.pool).await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(rows = n, "oauth: expired rows removed"),
                    Err(e) => tracing::warn!(error = %e, "oauth: could not remove expired rows"),
                }
            }
        });
    }

    /// What a client gets when it names no scope, and what a 401 challenges
    /// for (`oauth.default_scope`).
    pub fn default_scope(&self) -> scope::Scope {
        scope::Scope::default_of(self.config.oauth.default_scope)
    }

    /// Where the company's OpenID provider sends the browser back.
    pub fn idp_redirect_uri(&self) -> String {
        format!("{}/oauth/callback", self.issuer())
    }

    /// The issuer identifier (RFC 8414 / RFC 9207): the gateway's public URL.
    pub fn issuer(&self) -> String {
        self.config.public_url()
    }

    /// The protected resource every token is bound to (RFC 8707).
    pub fn resource(&self) -> String {
        format!("{}/mcp", self.issuer())
    }

    /// Where a client finds out how to get a token for `/mcp` (RFC 9728 §3.1,
    /// path-suffixed form).
    pub fn resource_metadata_url(&self) -> String {
        format!("{}/.well-known/oauth-protected-resource/mcp", self.issuer())
    }

    /// RFC 9728 protected resource metadata for `/mcp`.
    pub fn protected_resource_metadata(&self) -> Value {
        json!({
            "resource": self.resource(),
            "authorization_servers": [self.issuer()],
            "scopes_supported": scope::SUPPORTED,
            "bearer_methods_supported": ["header"],
            "resource_name": "mcpgate",
        })
    }

    /// RFC 8414 authorization server metadata (also served as the OpenID
    /// discovery alias some clients try first).
    pub fn authorization_server_metadata(&self) -> Value {
        let issuer = self.issuer();
        let mut metadata = json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{issuer}/oauth/authorize"),
            "token_endpoint": format!("{issuer}/oauth/token"),
            "revocation_endpoint": format!("{issuer}/oauth/revoke"),
            "response_types_supported": ["code"],
            "response_modes_supported": ["query"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["none"],
            "revocation_endpoint_auth_methods_supported": ["none"],
            "scopes_supported": scope::SUPPORTED,
            "authorization_response_iss_parameter_supported": true,
            "client_id_metadata_document_supported": self.config.oauth.client_metadata_documents.enabled,
        });
        if self.config.oauth.dynamic_registration {
            metadata["registration_endpoint"] = json!(format!("{issuer}/oauth/register"));
        }
        metadata
    }

    /// Seal `value` for a round trip through the browser (a hidden form field
    /// or a cookie): encrypted and authenticated, bound to `purpose`.
    pub fn seal<T: Serialize>(&self, purpose: &str, value: &T) -> String {
        let plain = serde_json::to_vec(value).expect("serializable ticket");
        URL_SAFE_NO_PAD.encode(crate::keys::seal(
            &self.ticket_key,
            &plain,
            purpose.as_bytes(),
        ))
    }

    /// What [`Self::seal`] sealed for `purpose`, unless forged or mangled.
    pub fn open<T: for<'de> Deserialize<'de>>(&self, purpose: &str, sealed: &str) -> Option<T> {
        let bytes = URL_SAFE_NO_PAD.decode(sealed).ok()?;
        let plain = crate::keys::open(&self.ticket_key, &bytes, purpose.as_bytes())?;
        serde_json::from_slice(&plain).ok()
    }

    /// Record a step that succeeded (sign-in, consent, issuance, refresh,
    /// revocation, registration): one complete `allowed` row.
    pub async fn audit_event(
        &self,
        subject: &str,
        client: Option<&str>,
        tool: &str,
        what: String,
    ) -> Result<(), Refusal> {
        let info = ClientInfo {
            name: client.map(str::to_owned),
            version: None,
        };
        let mut row = RowStart {
            subject,
            actor: subject,
            session: None,
            client: &info,
            tool,
            arguments: &serde_json::Map::new(),
        }
        .row();
        row.completed = true;
        row.reason = Some(what);
        self.audit.decision(row).await
    }

    /// Record a refusal with its reason and hand it back.
    pub async fn refuse(
        &self,
        subject: &str,
        client: Option<&str>,
        tool: &str,
        refusal: Refusal,
    ) -> Refusal {
        let info = ClientInfo {
            name: client.map(str::to_owned),
            version: None,
        };
        let row = RowStart {
            subject,
            actor: subject,
            session: None,
            client: &info,
            tool,
            arguments: &serde_json::Map::new(),
        }
        .row();
        self.audit.refusal(row, refusal).await
    }
}

/// A new secret: 32 random bytes, hex.
pub(crate) fn new_secret() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// A new public id: 6 random bytes, hex (12 characters).
pub(crate) fn new_id() -> String {
    hex::encode(rand::random::<[u8; 6]>())
}

pub(crate) fn digest(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// `<prefix><id>_<secret>` split, if it has that shape.
pub(crate) fn split_token<'a>(presented: &'a str, prefix: &str) -> Option<(&'a str, &'a str)> {
    presented
        .strip_prefix(prefix)
        .and_then(|rest| rest.split_once('_'))
        .filter(|(id, secret)| {
            id.len() == 12
                && secret.len() == 64
                && id.bytes().all(|b| b.is_ascii_hexdigit())
                && secret.bytes().all(|b| b.is_ascii_hexdigit())
        })
}

/// Constant-time comparison of a presented secret's digest with the stored one.
pub(crate) fn digest_matches(secret: &str, stored: &[u8]) -> bool {
    bool::from(digest(secret).ct_eq(stored))
}

/// Now plus `ttl`, as the store's RFC 3339 text.
pub(crate) fn after(ttl: std::time::Duration) -> String {
    actors::format_rfc3339(time::OffsetDateTime::now_utc() + ttl)
}

pub(crate) fn storage_refusal(e: sqlx::Error) -> Refusal {
    tracing::error!(error = %e, "authorization server: store");
    Refusal::new(
        Reason::StorageUnavailable,
        "the gateway's store is unavailable",
    )
}
