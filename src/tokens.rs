//! Gateway API tokens: `mgt_<id>_<secret>`. Only SHA-256(secret) is stored;
//! verification compares in constant time. Revocation is a row update that the
//! next request sees: `/mcp` remembers verified tokens only until a revocation
//! is announced (credential_cache.rs), other callers read the store each time.

use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::credential_cache::{self, CredentialCache};
use crate::storage::Db;
use subtle::ConstantTimeEq;

const PREFIX: &str = "mgt_";

#[derive(Debug, Clone)]
pub struct TokenRecord {
    pub id: String,
    pub user_email: String,
    pub name: Option<String>,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenRejection {
    #[error("the token is not a gateway token")]
    Malformed,
    #[error("the token is not known")]
    Unknown,
    /// `id` is the token's: the presenter proved they hold it.
    #[error("the token was revoked")]
    Revoked { id: String, user: String },
    #[error("the token has expired")]
    Expired { id: String, user: String },
    #[error("the token store is unavailable")]
    Store,
}

/// A freshly created token. `secret` is shown once and never stored.
pub struct NewToken {
    pub id: String,
    pub token: String,
}

fn digest(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

pub async fn create(
    pool: &Db,
    user_email: &str,
    name: Option<&str>,
    expires_at: Option<String>,
) -> Result<NewToken, sqlx::Error> {
    let id = hex::encode(rand::random::<[u8; 6]>());
    let secret = hex::encode(rand::random::<[u8; 32]>());
    sqlx::query(
        "INSERT INTO api_tokens (id, user_email, name, secret_sha256, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&id)
    .bind(user_email)
    .bind(name)
    .bind(digest(&secret))
    .bind(actors::now_rfc3339())
    .bind(expires_at)
    .execute(&mut *crate::storage::writer(pool).await?)
    .await?;
    Ok(NewToken {
        token: format!("{PREFIX}{id}_{secret}"),
        id,
    })
}

/// Marks `id` revoked. Returns false when there is no such active token.
pub async fn revoke(pool: &Db, id: &str) -> Result<bool, sqlx::Error> {
    let done =
        sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(actors::now_rfc3339())
            .bind(id)
            .execute(&mut *crate::storage::writer(pool).await?)
            .await?;
    credential_cache::announce_revocation(pool).await?;
    Ok(done.rows_affected() == 1)
}

pub async fn list(pool: &Db) -> Result<Vec<TokenRecord>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, user_email, name, created_at, expires_at, revoked_at FROM api_tokens ORDER BY created_at",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| TokenRecord {
            id: r.get("id"),
            user_email: r.get("user_email"),
            name: r.get("name"),
            created_at: r.get("created_at"),
            expires_at: r.get("expires_at"),
            revoked_at: r.get("revoked_at"),
        })
        .collect())
}

/// The user of token `id` while it is active (not revoked, not expired):
/// a console session made with the token lives only as long as it does.
pub async fn active_user(pool: &Db, id: &str) -> Result<Option<String>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT user_email, expires_at FROM api_tokens WHERE id = $1 AND revoked_at IS NULL",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(row.and_then(|row| {
        let expires_at: Option<String> = row.get("expires_at");
        let live = expires_at.is_none_or(|at| at.as_str() > actors::now_rfc3339().as_str());
        live.then(|| row.get("user_email"))
    }))
}

fn split(presented: &str) -> Result<(&str, &str), TokenRejection> {
    presented
        .strip_prefix(PREFIX)
        .and_then(|rest| rest.split_once('_'))
        .filter(|(id, secret)| id.len() == 12 && secret.len() == 64)
        .ok_or(TokenRejection::Malformed)
}

fn expired(record: &TokenRecord) -> bool {
    record
        .expires_at
        .as_ref()
        .is_some_and(|at| at.as_str() <= actors::now_rfc3339().as_str())
}

/// [`verify`], answered from `cache` when the token was verified since the
/// last revocation; a token the cache does not vouch for goes to the store.
pub async fn verify_cached(
    cache: &CredentialCache<TokenRecord>,
    pool: &Db,
    presented: &str,
) -> Result<TokenRecord, TokenRejection> {
    let (id, secret) = split(presented)?;
    let generation = cache.generation();
    if let Some(record) = cache.get(generation, id, secret)
        && !expired(&record)
    {
        return Ok(record);
    }
    let checked = verify(pool, presented).await;
    match &checked {
        Ok(record) => cache.insert(generation, id, secret, record.clone()),
        Err(_) => cache.forget(id),
    }
    checked
}

/// Check a presented token. Returns the token's record when it is valid now.
pub async fn verify(pool: &Db, presented: &str) -> Result<TokenRecord, TokenRejection> {
    let (id, secret) = split(presented)?;
    let row = sqlx::query(
        "SELECT id, user_email, name, secret_sha256, created_at, expires_at, revoked_at \
         FROM api_tokens WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
    .map_err(|_| TokenRejection::Store)?;
    let presented_digest = digest(secret);
    let Some(row) = row else {
        // Same work as a known id, so timing does not reveal which ids exist.
        let _ = presented_digest.ct_eq(&[0u8; 32]);
        return Err(TokenRejection::Unknown);
    };
    let stored: Vec<u8> = row.get("secret_sha256");
    if !bool::from(presented_digest.ct_eq(&stored)) {
        return Err(TokenRejection::Unknown);
    }
    let record = TokenRecord {
        id: row.get("id"),
        user_email: row.get("user_email"),
        name: row.get("name"),
        created_at: row.get("created_at"),
        expires_at: row.get("expires_at"),
        revoked_at: row.get("revoked_at"),
    };
    if record.revoked_at.is_some() {
        return Err(TokenRejection::Revoked {
            id: record.id,
            user: record.user_email,
        });
    }
    if expired(&record) {
        return Err(TokenRejection::Expired {
            id: record.id,
            user: record.user_email,
        });
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pool() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let pool = crate::storage::open(dir.path()).await.unwrap();
        (dir, pool)
    }

    #[tokio::test]
    async fn tokens_verify_until_revoked_or_expired() {
        let (_dir, pool) = pool().await;
        let fresh = create(&pool, "a@x", Some("n"), None).await.unwrap();
        assert_eq!(verify(&pool, &fresh.token).await.unwrap().user_email, "a@x");

        let expired = create(
            &pool,
            "a@x",
            None,
            Some("2000-01-01T00:00:00.000000Z".into()),
        )
        .await
        .unwrap();
        assert_eq!(
            verify(&pool, &expired.token).await.unwrap_err(),
            TokenRejection::Expired {
                id: expired.id.clone(),
                user: "a@x".into()
            }
        );

        assert!(revoke(&pool, &fresh.id).await.unwrap());
        assert!(
            !revoke(&pool, &fresh.id).await.unwrap(),
            "revoking twice is reported"
        );
        assert_eq!(
            verify(&pool, &fresh.token).await.unwrap_err(),
            TokenRejection::Revoked {
                id: fresh.id.clone(),
                user: "a@x".into()
            }
        );
    }

    #[tokio::test]
    async fn a_remembered_token_is_refused_right_after_another_process_revokes_it() {
        let (dir, gateway_pool) = pool().await;
        let cache = CredentialCache::new(credential_cache::RevocationWatch::start(&gateway_pool));
        let token = create(&gateway_pool, "a@x", None, None).await.unwrap();
        let other = create(&gateway_pool, "b@x", None, None).await.unwrap();
        for _ in 0..2 {
            let record = verify_cached(&cache, &gateway_pool, &token.token).await;
            assert_eq!(record.unwrap().user_email, "a@x");
        }
        // Remembered: answered even while the store cannot be read.
        sqlx::query("ALTER TABLE api_tokens RENAME TO api_tokens_away")
            .execute(&gateway_pool)
            .await
            .unwrap();
        let remembered = verify_cached(&cache, &gateway_pool, &token.token).await;
        assert_eq!(remembered.unwrap().user_email, "a@x");
        let forged = format!("{}{}", &token.token[..token.token.len() - 1], "x");
        assert!(verify_cached(&cache, &gateway_pool, &forged).await.is_err());
        sqlx::query("ALTER TABLE api_tokens_away RENAME TO api_tokens")
            .execute(&gateway_pool)
            .await
            .unwrap();

        // The CLI: another pool (another process) on the same file.
        let cli_pool = crate::storage::open(dir.path()).await.unwrap();
        assert!(revoke(&cli_pool, &token.id).await.unwrap());
        assert!(matches!(
            verify_cached(&cache, &gateway_pool, &token.token).await,
            Err(TokenRejection::Revoked { .. })
        ));
        // Everyone else is read again from the store, and still valid.
        let record = verify_cached(&cache, &gateway_pool, &other.token).await;
        assert_eq!(record.unwrap().user_email, "b@x");
    }

    #[tokio::test]
    async fn malformed_and_forged_tokens_are_rejected() {
        let (_dir, pool) = pool().await;
        let real = create(&pool, "a@x", None, None).await.unwrap();
        for bad in ["", "Bearer", "mgt_", "mgt_abc_def", "xyz_123456789012_00"] {
            assert_eq!(
                verify(&pool, bad).await.unwrap_err(),
                TokenRejection::Malformed,
                "{bad}"
            );
        }
        let forged = format!("mgt_{}_{}", real.id, "0".repeat(64));
        assert_eq!(
            verify(&pool, &forged).await.unwrap_err(),
            TokenRejection::Unknown
        );
        let unknown = format!("mgt_{}_{}", "f".repeat(12), "0".repeat(64));
        assert_eq!(
            verify(&pool, &unknown).await.unwrap_err(),
            TokenRejection::Unknown
        );
        // Only the digest is stored.
        let stored: Vec<u8> = sqlx::query_scalar("SELECT secret_sha256 FROM api_tokens")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(stored.len(), 32);
        assert!(!real.token.contains(&hex::encode(&stored)));
    }
}
