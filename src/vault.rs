//! The credential vault: the services' secrets stay at the gateway. Sealed
//! at rest (AES-256-GCM, key derived from the gateway key, user + service +
//! kind as associated data), never returned by any API, never logged; the
//! key id beside each secret lets `mcpgate secrets rotate` re-seal them.

use sqlx::Row;

use crate::storage::Db;

use crate::keys::{self, MasterKey};

const PURPOSE: &str = "credential vault v1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    /// An API token sent as a Bearer token.
    Token,
    /// `user:secret` for HTTP basic auth (Jira: email + API token).
    Basic,
    /// An OAuth token set (JSON: access, refresh, expiry).
    Oauth,
}

impl CredentialKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::Token => "token",
            CredentialKind::Basic => "basic",
            CredentialKind::Oauth => "oauth",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "token" => Some(CredentialKind::Token),
            "basic" => Some(CredentialKind::Basic),
            "oauth" => Some(CredentialKind::Oauth),
            _ => None,
        }
    }
}

/// A secret in memory. `Debug` never shows it.
pub struct Credential {
    pub kind: CredentialKind,
    secret: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credential({}, ***)", self.kind.as_str())
    }
}

impl Credential {
    pub fn secret(&self) -> &str {
        &self.secret
    }
}

/// What may be shown about a credential: everything but the secret.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CredentialInfo {
    pub user: String,
    pub service: String,
    pub kind: String,
    pub key_id: String,
    pub updated_at: String,
}

fn aad(user: &str, service: &str, kind: CredentialKind) -> Vec<u8> {
    format!("{}|{service}|{}", user.to_ascii_lowercase(), kind.as_str()).into_bytes()
}

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("the secret is empty")]
    Empty,
    #[error("a basic credential is `user:secret`")]
    NotBasic,
    #[error(
        "an oauth credential is a JSON token set: {{\"access_token\", \"refresh_token\", \"expires_at\"}}"
    )]
    NotTokenSet,
    #[error(
        "the credential was sealed under key {0}, not the current one: run `mcpgate secrets rotate`"
    )]
    OtherKey(String),
    #[error("the credential cannot be opened (corrupt or tampered)")]
    Corrupt,
    #[error(transparent)]
    Store(#[from] sqlx::Error),
}

/// Seal and store a credential; returns it as stored.
pub async fn set(
    pool: &Db,
    master: &MasterKey,
    user: &str,
    service: &str,
    kind: CredentialKind,
    secret: &str,
) -> Result<Credential, VaultError> {
    if secret.is_empty() {
        return Err(VaultError::Empty);
    }
    if kind == CredentialKind::Basic && !secret.contains(':') {
        return Err(VaultError::NotBasic);
    }
    if kind == CredentialKind::Oauth
        && serde_json::from_str::<serde_json::Value>(secret)
            .ok()
            .and_then(|set| set.get("access_token")?.as_str().map(|_| ()))
            .is_none()
    {
        return Err(VaultError::NotTokenSet);
    }
    let sealed = keys::seal(
        &master.derive(PURPOSE),
        secret.as_bytes(),
        &aad(user, service, kind),
    );
    let now = actors::now_rfc3339();
    sqlx::query(
        "INSERT INTO credentials (user_email, service, kind, sealed, key_id, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (user_email, service) DO UPDATE SET \
         kind = excluded.kind, sealed = excluded.sealed, key_id = excluded.key_id, updated_at = excluded.updated_at",
    )
    .bind(user.to_ascii_lowercase())
    .bind(service)
    .bind(kind.as_str())
    .bind(sealed)
    .bind(master.id())
    .bind(&now)
    .bind(&now)
    .execute(&mut *crate::storage::writer(pool).await?)
    .await?;
    Ok(Credential {
        kind,
        secret: secret.to_owned(),
    })
}

/// The user's credential for `service`, opened; `None` if there is none.
pub async fn get(
    pool: &Db,
    master: &MasterKey,
    user: &str,
    service: &str,
) -> Result<Option<Credential>, VaultError> {
    let row = sqlx::query(
        "SELECT kind, sealed, key_id FROM credentials WHERE user_email = $1 AND service = $2",
    )
    .bind(user.to_ascii_lowercase())
    .bind(service)
    .fetch_optional(pool)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let key_id: String = row.get("key_id");
    if key_id != master.id() {
        return Err(VaultError::OtherKey(key_id));
    }
    let kind =
        CredentialKind::parse(row.get::<String, _>("kind").as_str()).ok_or(VaultError::Corrupt)?;
    let sealed: Vec<u8> = row.get("sealed");
    let secret = keys::open(&master.derive(PURPOSE), &sealed, &aad(user, service, kind))
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or(VaultError::Corrupt)?;
    Ok(Some(Credential { kind, secret }))
}

pub async fn list(pool: &Db) -> Result<Vec<CredentialInfo>, sqlx::Error> {
    let rows = sqlx::query("SELECT user_email, service, kind, key_id, updated_at FROM credentials ORDER BY user_email, service")
        .fetch_all(pool)
        .await?;
    Ok(rows
        .iter()
        .map(|r| CredentialInfo {
            user: r.get("user_email"),
            service: r.get("service"),
            kind: r.get("kind"),
            key_id: r.get("key_id"),
            updated_at: r.get("updated_at"),
        })
        .collect())
}

pub async fn delete(pool: &Db, user: &str, service: &str) -> Result<bool, sqlx::Error> {
    Ok(
        sqlx::query("DELETE FROM credentials WHERE user_email = $1 AND service = $2")
            .bind(user.to_ascii_lowercase())
            .bind(service)
            .execute(&mut *crate::storage::writer(pool).await?)
            .await?
            .rows_affected()
            > 0,
    )
}

/// Re-seal every credential sealed under `previous` with `current`.
/// Returns how many were re-sealed; one that opens under neither is an error.
pub async fn rotate(
    pool: &Db,
    previous: &MasterKey,
    current: &MasterKey,
) -> Result<u64, VaultError> {
    let rows =
        sqlx::query("SELECT user_email, service, kind, sealed FROM credentials WHERE key_id = $1")
            .bind(previous.id())
            .fetch_all(pool)
            .await?;
    let mut done = 0;
    let mut tx = crate::storage::begin_write(pool).await?;
    for row in rows {
        let user: String = row.get("user_email");
        let service: String = row.get("service");
        let kind = CredentialKind::parse(row.get::<String, _>("kind").as_str())
            .ok_or(VaultError::Corrupt)?;
        let sealed: Vec<u8> = row.get("sealed");
        let associated = aad(&user, &service, kind);
        let secret = keys::open(&previous.derive(PURPOSE), &sealed, &associated)
            .ok_or(VaultError::Corrupt)?;
        let resealed = keys::seal(&current.derive(PURPOSE), &secret, &associated);
        sqlx::query("UPDATE credentials SET sealed = $1, key_id = $2, updated_at = $3 WHERE user_email = $4 AND service = $5")
            .bind(resealed)
            .bind(current.id())
            .bind(actors::now_rfc3339())
            .bind(&user)
            .bind(&service)
            .execute(&mut *tx)
            .await?;
        done += 1;
    }
    tx.commit().await?;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn secrets_are_sealed_bound_and_rotatable() {
        let dir = tempfile::tempdir().unwrap();
        let pool = crate::storage::open(dir.path()).await.unwrap();
        let old = MasterKey::from_bytes([1; 32]);
        let new = MasterKey::from_bytes([2; 32]);
        set(
            &pool,
            &old,
            "Alice@example.com",
            "jira",
            CredentialKind::Basic,
            "alice@example.com:s3cr3t-token",
        )
        .await
        .unwrap();
        let opened = get(&pool, &old, "alice@example.com", "jira")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(opened.secret(), "alice@example.com:s3cr3t-token");
        assert!(!format!("{opened:?}").contains("s3cr3t"));
        let raw: Vec<u8> = sqlx::query_scalar("SELECT sealed FROM credentials")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert!(
            !String::from_utf8_lossy(&raw).contains("s3cr3t"),
            "plaintext at rest"
        );
        assert!(
            get(&pool, &old, "bob@example.com", "jira")
                .await
                .unwrap()
                .is_none()
        );
        assert!(matches!(
            get(&pool, &new, "alice@example.com", "jira").await,
            Err(VaultError::OtherKey(_))
        ));
        // Moving a sealed secret to another user does not open it (bound by AAD).
        sqlx::query("UPDATE credentials SET user_email = 'bob@example.com'")
            .execute(&pool)
            .await
            .unwrap();
        assert!(matches!(
            get(&pool, &old, "bob@example.com", "jira").await,
            Err(VaultError::Corrupt)
        ));
        sqlx::query("UPDATE credentials SET user_email = 'alice@example.com'")
            .execute(&pool)
            .await
            .unwrap();
        assert_eq!(rotate(&pool, &old, &new).await.unwrap(), 1);
        assert_eq!(
            get(&pool, &new, "alice@example.com", "jira")
                .await
                .unwrap()
                .unwrap()
                .secret(),
            "alice@example.com:s3cr3t-token"
        );
        assert!(matches!(
            set(
                &pool,
                &new,
                "a@x",
                "jira",
                CredentialKind::Basic,
                "no-colon"
            )
            .await,
            Err(VaultError::NotBasic)
        ));
        assert!(delete(&pool, "alice@example.com", "jira").await.unwrap());
        assert!(list(&pool).await.unwrap().is_empty());
    }
}
