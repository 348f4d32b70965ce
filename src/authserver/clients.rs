//! Which clients exist: the operator's (config), those that registered
//! themselves (RFC 7591, in the store so every replica knows them), and those
//! whose `client_id` is the URL of their metadata document (fetched, cached).

use serde::Deserialize;
use serde_json::{Value, json};
use sqlx::Row;

use super::{AuthServer, cimd, redirect, storage_refusal};
use crate::domain::{Reason, Refusal};

/// How a client came to be known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    Preregistered,
    Registered,
    MetadataDocument,
}

#[derive(Debug, Clone)]
pub struct Client {
    pub client_id: String,
    pub name: String,
    pub redirect_uris: Vec<String>,
    pub kind: ClientKind,
}

/// An RFC 7591 registration request: only what this server uses is read;
/// other metadata is accepted and ignored (§2: the server may ignore it).
#[derive(Debug, Deserialize)]
pub struct RegistrationRequest {
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    #[serde(default)]
    pub client_name: Option<String>,
    #[serde(default)]
    pub grant_types: Option<Vec<String>>,
    #[serde(default)]
    pub response_types: Option<Vec<String>>,
    #[serde(default)]
    pub token_endpoint_auth_method: Option<String>,
}

/// Registered clients kept at most; registration is open, so it is bounded.
const MAX_REGISTERED: i64 = 100_000;

impl AuthServer {
    /// The client `client_id` names, or why there is none.
    pub async fn client(&self, client_id: &str) -> Result<Client, Refusal> {
        if let Some(c) = self
            .config
            .oauth
            .clients
            .iter()
            .find(|c| c.client_id == client_id)
        {
            return Ok(Client {
                client_id: c.client_id.clone(),
                name: c.name.clone(),
                redirect_uris: c.redirect_uris.clone(),
                kind: ClientKind::Preregistered,
            });
        }
        if cimd::is_document_id(client_id) {
            let document = self.cimd.get(client_id).await?;
            return Ok(Client {
                client_id: document.client_id,
                name: document.client_name,
                redirect_uris: document.redirect_uris,
                kind: ClientKind::MetadataDocument,
            });
        }
        let row = sqlx::query(
            "SELECT client_name, redirect_uris FROM oauth_clients WHERE client_id = $1",
        )
        .bind(client_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(storage_refusal)?;
        let Some(row) = row else {
            return Err(Refusal::new(
                Reason::InvalidClient,
                format!("no client is registered as '{client_id}'"),
            ));
        };
        let uris: String = row.get("redirect_uris");
        Ok(Client {
            client_id: client_id.to_owned(),
            name: row.get("client_name"),
            redirect_uris: serde_json::from_str(&uris).unwrap_or_default(),
            kind: ClientKind::Registered,
        })
    }

    /// Register a client (RFC 7591 §3.1); the answer is §3.2.1's.
    pub async fn register(&self, request: RegistrationRequest) -> Result<Value, Refusal> {
        let invalid = |m: String| Refusal::new(Reason::InvalidClientMetadata, m);
        if request.redirect_uris.is_empty() {
            return Err(Refusal::new(
                Reason::InvalidRedirectUri,
                "redirect_uris is required",
            ));
        }
        for uri in &request.redirect_uris {
            redirect::acceptable(uri).map_err(|e| Refusal::new(Reason::InvalidRedirectUri, e))?;
        }
        if let Some(grants) = &request.grant_types
            && let Some(other) = grants
                .iter()
                .find(|g| *g != "authorization_code" && *g != "refresh_token")
        {
            return Err(invalid(format!("grant type '{other}' is not supported")));
        }
        if let Some(types) = &request.response_types
            && types.iter().any(|t| t != "code")
        {
            return Err(invalid("only the 'code' response type is supported".into()));
        }
        // Public clients only: a confidential method is answered with `none`
        // (§3.2.1 lets the server replace requested values), and PKCE binds
        // the code to the client that asked for it.
        let name = request
            .client_name
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(|n| n.chars().take(100).collect::<String>())
            .unwrap_or_else(|| redirect::shown_host(&request.redirect_uris[0]));
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM oauth_clients")
            .fetch_one(&self.pool)
            .await
            .map_err(storage_refusal)?;
        if count >= MAX_REGISTERED {
            return Err(invalid(
                "this gateway holds as many registered clients as it will; ask the operator".into(),
            ));
        }
        let client_id = format!("mgc_{}", hex::encode(rand::random::<[u8; 16]>()));
        let now = time::OffsetDateTime::now_utc();
        sqlx::query(
            "INSERT INTO oauth_clients (client_id, client_name, redirect_uris, created_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(&client_id)
        .bind(&name)
        .bind(serde_json::to_string(&request.redirect_uris).expect("strings serialize"))
        .bind(actors::format_rfc3339(now))
        .execute(
            &mut *crate::storage::writer(&self.pool)
                .await
                .map_err(storage_refusal)?,
        )
        .await
        .map_err(storage_refusal)?;
        Ok(json!({
            "client_id": client_id,
            "client_id_issued_at": now.unix_timestamp(),
            "client_name": name,
            "redirect_uris": request.redirect_uris,
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "none",
        }))
    }
}
