//! Codes and tokens. A consent starts a *family* (client, person, resource);
//! its code, access tokens and refresh tokens all hang on it, so revoking it
//! — by the person, on refresh-token reuse, on code replay — refuses every
//! token of it on the next request, on every replica.
//!
//! Formats: access `mgo_<id>_<secret>`, refresh `mgr_<id>_<secret>`, code 64
//! hex characters. Access tokens are opaque and checked with one primary-key
//! read joined to their family: the same single store round trip as a
//! gateway token.

use serde::{Deserialize, Serialize};
use sqlx::Row;

use super::scope::Scope;
use super::{
    AuthServer, after, digest, digest_matches, new_id, new_secret, pkce, split_token,
    storage_refusal,
};
use crate::domain::{Reason, Refusal};
use crate::storage::Db;

pub const ACCESS_PREFIX: &str = "mgo_";
pub const REFRESH_PREFIX: &str = "mgr_";

/// An authorization request that passed every check of `/oauth/authorize`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Authorization {
    pub client_id: String,
    pub client_name: String,
    pub redirect_uri: String,
    pub state: Option<String>,
    pub code_challenge: String,
    pub resource: String,
    pub scope: String,
}

/// What the token endpoint hands out.
#[derive(Debug, Clone)]
pub struct Issued {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: u64,
    pub scope: String,
    pub family_id: String,
    pub user: String,
    pub client_id: String,
}

/// Who an access token speaks for.
#[derive(Debug, Clone)]
pub struct AccessGrant {
    pub token_id: String,
    pub family_id: String,
    pub user: String,
    pub client_id: String,
    pub client_name: String,
    /// What the token may do (its own scope, else its family's).
    pub scope: Scope,
}

/// Why an access token is refused at `/mcp`, with the user when known.
#[derive(Debug, Clone)]
pub struct AccessRejection {
    pub user: Option<String>,
    pub refusal: Refusal,
    /// The token's family, when the presenter proved the token and the whole
    /// family has ended: its MCP sessions can end too.
    pub ended_family: Option<String>,
}

/// A client a person authorized, as they see it.
#[derive(Debug, Clone, Serialize)]
pub struct Authorized {
    pub family_id: String,
    pub client_id: String,
    pub client_name: String,
    pub scope: String,
    pub created_at: String,
    pub expires_at: String,
}

/// A token-endpoint failure: the refusal and, when known, whose it was.
#[derive(Debug)]
pub struct TokenFailure {
    pub user: Option<String>,
    pub refusal: Refusal,
}

fn fail(user: Option<String>, reason: Reason, message: impl Into<String>) -> TokenFailure {
    TokenFailure {
        user,
        refusal: Refusal::new(reason, message),
    }
}

fn store(e: sqlx::Error) -> TokenFailure {
    TokenFailure {
        user: None,
        refusal: storage_refusal(e),
    }
}

fn now() -> String {
    actors::now_rfc3339()
}

impl AuthServer {
    /// The person consented (on the form `consent_id`, answered once): start
    /// the family and hand out its code.
    pub async fn issue_code(
        &self,
        auth: &Authorization,
        user: &str,
        consent_id: &str,
    ) -> Result<String, Refusal> {
        let family_id = new_id();
        let code = new_secret();
        let oauth = &self.config.oauth;
        let mut tx = crate::storage::begin_write(&self.pool)
            .await
            .map_err(storage_refusal)?;
        sqlx::query(
            "INSERT INTO oauth_families (id, client_id, client_name, user_email, resource, scope, created_at, expires_at, consent_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&family_id)
        .bind(&auth.client_id)
        .bind(&auth.client_name)
        .bind(user)
        .bind(&auth.resource)
        .bind(&auth.scope)
        .bind(now())
        .bind(after(oauth.refresh_token_ttl))
        .bind(consent_id)
        .execute(&mut *tx)
        .await
        .map_err(|e| match e.as_database_error() {
            Some(db) if db.is_unique_violation() => Refusal::new(
                Reason::InvalidConsent,
                "this consent form was already answered: start again from your client",
            ),
            _ => storage_refusal(e),
        })?;
        sqlx::query(
            "INSERT INTO oauth_codes (code_sha256, family_id, client_id, redirect_uri, code_challenge, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(hex::encode(digest(&code)))
        .bind(&family_id)
        .bind(&auth.client_id)
        .bind(&auth.redirect_uri)
        .bind(&auth.code_challenge)
        .bind(after(oauth.code_ttl))
        .execute(&mut *tx)
        .await
        .map_err(storage_refusal)?;
        tx.commit().await.map_err(storage_refusal)?;
        Ok(code)
    }

    /// `grant_type=authorization_code`: one use per code; a replay revokes
    /// what the code minted.
    pub async fn exchange_code(
        &self,
        code: &str,
        client_id: &str,
        redirect_uri: &str,
        verifier: Option<&str>,
        resource: Option<&str>,
    ) -> Result<Issued, TokenFailure> {
        let key = hex::encode(digest(code));
        let row = sqlx::query(
            "SELECT c.family_id, c.client_id, c.redirect_uri, c.code_challenge, c.expires_at, c.used_at, \
                    f.user_email, f.resource, f.scope \
             FROM oauth_codes c JOIN oauth_families f ON f.id = c.family_id WHERE c.code_sha256 = $1",
        )
        .bind(&key)
        .fetch_optional(&self.pool)
        .await
        .map_err(store)?;
        let Some(row) = row else {
            return Err(fail(None, Reason::InvalidCode, "the code is not known"));
        };
        let family_id: String = row.get("family_id");
        let user: String = row.get("user_email");
        let who = Some(user.clone());
        // Single use, decided by the store: of two racing exchanges one wins.
        let won = sqlx::query(
            "UPDATE oauth_codes SET used_at = $1 WHERE code_sha256 = $2 AND used_at IS NULL",
        )
        .bind(now())
        .bind(&key)
        .execute(&mut *crate::storage::writer(&self.pool).await.map_err(store)?)
        .await
        .map_err(store)?
        .rows_affected()
            == 1;
        if !won {
            return Err(self
                .revoke_and_refuse(
                    &family_id,
                    "authorization code replayed",
                    who,
                    Reason::CodeReplayed,
                    "the code was already used; the tokens minted from it are revoked",
                )
                .await);
        }
        let expires_at: String = row.get("expires_at");
        if expires_at.as_str() <= now().as_str() {
            return Err(fail(who, Reason::InvalidCode, "the code has expired"));
        }
        let code_client: String = row.get("client_id");
        if code_client != client_id {
            return Err(fail(
                who,
                Reason::InvalidCode,
                "the code was issued to another client",
            ));
        }
        let code_redirect: String = row.get("redirect_uri");
        if code_redirect != redirect_uri {
            return Err(fail(
                who,
                Reason::InvalidCode,
                "redirect_uri differs from the authorization request's",
            ));
        }
        let Some(verifier) = verifier else {
            return Err(fail(
                who,
                Reason::PkceRequired,
                "code_verifier is required (PKCE)",
            ));
        };
        let challenge: String = row.get("code_challenge");
        if !pkce::verify_s256(verifier, &challenge) {
            return Err(self
                .revoke_and_refuse(
                    &family_id,
                    "wrong PKCE verifier",
                    who,
                    Reason::PkceMismatch,
                    "code_verifier does not match the code_challenge",
                )
                .await);
        }
        let bound: String = row.get("resource");
        let scope = Scope::stored(row.get::<String, _>("scope").as_str());
        self.mint_bound(&family_id, &user, client_id, resource, &bound, scope)
            .await
    }

    /// `grant_type=refresh_token`: each refresh token works once and is
    /// replaced; one presented again revokes its whole family. A `scope`
    /// may narrow the new access token, never widen it (RFC 6749 §6); the
    /// refresh token keeps the sign-in's scope.
    pub async fn refresh(
        &self,
        presented: &str,
        client_id: &str,
        resource: Option<&str>,
        requested_scope: Option<&str>,
    ) -> Result<Issued, TokenFailure> {
        let Some((id, secret)) = split_token(presented, REFRESH_PREFIX) else {
            return Err(fail(
                None,
                Reason::InvalidRefreshToken,
                "not a refresh token of this gateway",
            ));
        };
        let row = sqlx::query(
            "SELECT r.family_id, r.secret_sha256, r.used_at, f.user_email, f.client_id, f.resource, \
                    f.scope, f.expires_at, f.revoked_at \
             FROM oauth_refresh_tokens r JOIN oauth_families f ON f.id = r.family_id WHERE r.id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(store)?;
        let Some(row) = row else {
            return Err(fail(
                None,
                Reason::InvalidRefreshToken,
                "the refresh token is not known",
            ));
        };
        let stored: Vec<u8> = row.get("secret_sha256");
        if !digest_matches(secret, &stored) {
            return Err(fail(
                None,
                Reason::InvalidRefreshToken,
                "the refresh token is not known",
            ));
        }
        let family_id: String = row.get("family_id");
        let user: String = row.get("user_email");
        let who = Some(user.clone());
        let family_client: String = row.get("client_id");
        if family_client != client_id {
            return Err(fail(
                who,
                Reason::InvalidRefreshToken,
                "the refresh token was issued to another client",
            ));
        }
        // Checked before the token is spent: a client that asked too much
        // can ask again with the same refresh token.
        let granted = Scope::stored(row.get::<String, _>("scope").as_str());
        let scope = match requested_scope {
            None => granted,
            Some(asked) => match Scope::parse(Some(asked), granted) {
                Ok(asked) if asked <= granted => asked,
                Ok(asked) => {
                    return Err(fail(
                        who,
                        Reason::InvalidScope,
                        format!(
                            "scope '{}' is wider than this sign-in's '{}': sign in again for it",
                            asked.as_str(),
                            granted.as_str()
                        ),
                    ));
                }
                Err(message) => return Err(fail(who, Reason::InvalidScope, message)),
            },
        };
        let used: Option<String> = row.get("used_at");
        let won = used.is_none()
            && sqlx::query(
                "UPDATE oauth_refresh_tokens SET used_at = $1 WHERE id = $2 AND used_at IS NULL",
            )
            .bind(now())
            .bind(id)
            .execute(&mut *crate::storage::writer(&self.pool).await.map_err(store)?)
            .await
            .map_err(store)?
            .rows_affected()
                == 1;
        if !won {
            return Err(self
                .revoke_and_refuse(
                    &family_id,
                    "refresh token reused",
                    who,
                    Reason::RefreshReused,
                    "the refresh token was already used; every token of this sign-in is revoked",
                )
                .await);
        }
        let revoked: Option<String> = row.get("revoked_at");
        if revoked.is_some() {
            return Err(fail(
                who,
                Reason::InvalidRefreshToken,
                "the authorization was revoked",
            ));
        }
        let expires_at: String = row.get("expires_at");
        if expires_at.as_str() <= now().as_str() {
            return Err(fail(
                who,
                Reason::InvalidRefreshToken,
                "the authorization has expired: sign in again",
            ));
        }
        let bound: String = row.get("resource");
        self.mint_bound(&family_id, &user, client_id, resource, &bound, scope)
            .await
    }

    /// The next tokens of `family_id`, unless the client asks for a
    /// `resource` other than the one the sign-in is `bound` to.
    async fn mint_bound(
        &self,
        family_id: &str,
        user: &str,
        client_id: &str,
        resource: Option<&str>,
        bound: &str,
        scope: Scope,
    ) -> Result<Issued, TokenFailure> {
        if let Some(resource) = resource
            && resource != bound
        {
            return Err(fail(
                Some(user.to_owned()),
                Reason::InvalidTarget,
                format!("resource must be {bound}"),
            ));
        }
        self.mint(family_id, user, client_id, scope)
            .await
            .map_err(store)
    }

    /// Revokes `family_id` (a replay or a wrong verifier means a secret may
    /// have leaked), then the refusal; a store error wins over the refusal.
    async fn revoke_and_refuse(
        &self,
        family_id: &str,
        why: &str,
        who: Option<String>,
        reason: Reason,
        message: &str,
    ) -> TokenFailure {
        match self.revoke_family(family_id, why).await {
            Ok(_) => fail(who, reason, message),
            Err(error) => store(error),
        }
    }

    /// A new access token and refresh token in `family_id`.
    async fn mint(
        &self,
        family_id: &str,
        user: &str,
        client_id: &str,
        scope: Scope,
    ) -> Result<Issued, sqlx::Error> {
        let ttl = self.config.oauth.access_token_ttl;
        let (access_id, access_secret) = (new_id(), new_secret());
        let (refresh_id, refresh_secret) = (new_id(), new_secret());
        let mut tx = crate::storage::begin_write(&self.pool).await?;
        sqlx::query(
            "INSERT INTO oauth_access_tokens (id, family_id, secret_sha256, expires_at, scope) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&access_id)
        .bind(family_id)
        .bind(digest(&access_secret))
        .bind(after(ttl))
        .bind(scope.as_str())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO oauth_refresh_tokens (id, family_id, secret_sha256) VALUES ($1, $2, $3)",
        )
        .bind(&refresh_id)
        .bind(family_id)
        .bind(digest(&refresh_secret))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Issued {
            access_token: format!("{ACCESS_PREFIX}{access_id}_{access_secret}"),
            refresh_token: format!("{REFRESH_PREFIX}{refresh_id}_{refresh_secret}"),
            expires_in: ttl.as_secs(),
            scope: scope.as_str().to_owned(),
            family_id: family_id.to_owned(),
            user: user.to_owned(),
            client_id: client_id.to_owned(),
        })
    }

    /// Check an access token presented at `/mcp`: from memory when it was
    /// verified since the last revocation (credential_cache.rs), else one
    /// read (token joined to its family), digest compared in constant time,
    /// then revocation, expiry and audience.
    pub async fn verify_access(&self, presented: &str) -> Result<AccessGrant, AccessRejection> {
        let Some((id, secret)) = split_token(presented, ACCESS_PREFIX) else {
            return self
                .verify_access_in_store(presented)
                .await
                .map(|(grant, _)| grant);
        };
        let generation = self.access_cache.generation();
        if let Some((grant, expires_at)) = self.access_cache.get(generation, id, secret)
            && expires_at.as_str() > now().as_str()
        {
            return Ok(grant);
        }
        let checked = self.verify_access_in_store(presented).await;
        match &checked {
            Ok((grant, expires_at)) => self.access_cache.insert(
                generation,
                id,
                secret,
                (grant.clone(), expires_at.clone()),
            ),
            Err(_) => self.access_cache.forget(id),
        }
        checked.map(|(grant, _)| grant)
    }

    /// The store's answer for an access token, with its expiry.
    async fn verify_access_in_store(
        &self,
        presented: &str,
    ) -> Result<(AccessGrant, String), AccessRejection> {
        let reject = |user: Option<String>, reason: Reason, message: &str| AccessRejection {
            user,
            refusal: Refusal::new(reason, message),
            ended_family: None,
        };
        let Some((id, secret)) = split_token(presented, ACCESS_PREFIX) else {
            return Err(reject(
                None,
                Reason::InvalidToken,
                "the token is not an access token of this gateway",
            ));
        };
        let row = sqlx::query(
            "SELECT t.family_id, t.secret_sha256, t.expires_at, t.revoked_at, \
                    f.user_email, f.client_id, f.client_name, f.resource, f.revoked_at AS family_revoked_at, \
                    COALESCE(t.scope, f.scope) AS scope \
             FROM oauth_access_tokens t JOIN oauth_families f ON f.id = t.family_id WHERE t.id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "access token check: store");
            reject(
                None,
                Reason::TemporarilyUnavailable,
                "the token store is unavailable",
            )
        })?;
        let Some(row) = row else {
            let _ = digest_matches(secret, &[0u8; 32]);
            return Err(reject(None, Reason::InvalidToken, "the token is not known"));
        };
        let stored: Vec<u8> = row.get("secret_sha256");
        if !digest_matches(secret, &stored) {
            return Err(reject(None, Reason::InvalidToken, "the token is not known"));
        }
        let user: String = row.get("user_email");
        let revoked: Option<String> = row.get("revoked_at");
        let family_revoked: Option<String> = row.get("family_revoked_at");
        if revoked.is_some() || family_revoked.is_some() {
            let mut rejection = reject(Some(user), Reason::InvalidToken, "the token was revoked");
            if family_revoked.is_some() {
                rejection.ended_family = Some(row.get("family_id"));
            }
            return Err(rejection);
        }
        let expires_at: String = row.get("expires_at");
        if expires_at.as_str() <= now().as_str() {
            return Err(reject(
                Some(user),
                Reason::InvalidToken,
                "the token has expired",
            ));
        }
        let resource: String = row.get("resource");
        if resource != self.resource() {
            return Err(reject(
                Some(user),
                Reason::WrongAudience,
                "the token was issued for another resource",
            ));
        }
        let grant = AccessGrant {
            token_id: id.to_owned(),
            family_id: row.get("family_id"),
            user,
            client_id: row.get("client_id"),
            client_name: row.get("client_name"),
            scope: Scope::stored(row.get::<String, _>("scope").as_str()),
        };
        Ok((grant, expires_at))
    }

    /// Whether the families `a` and `b` are sign-ins of the same person in
    /// the same client (a step-up, or a new sign-in): one read, made only
    /// when a session meets a token of another family.
    pub async fn same_holder(&self, a: &str, b: &str) -> bool {
        let rows = sqlx::query(
            "SELECT user_email, client_id FROM oauth_families WHERE id = $1 OR id = $2",
        )
        .bind(a)
        .bind(b)
        .fetch_all(&self.pool)
        .await;
        match rows {
            Ok(rows) if rows.len() == 2 => {
                let holder = |r: &sqlx::any::AnyRow| {
                    (
                        r.get::<String, _>("user_email"),
                        r.get::<String, _>("client_id"),
                    )
                };
                holder(&rows[0]) == holder(&rows[1])
            }
            Ok(_) => false,
            Err(e) => {
                tracing::error!(error = %e, "session holder check: store");
                false
            }
        }
    }

    /// End a family: every token of it is refused from the next request on.
    pub async fn revoke_family(&self, family_id: &str, why: &str) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(
            "UPDATE oauth_families SET revoked_at = $1, revoked_reason = $2 WHERE id = $3 AND revoked_at IS NULL",
        )
        .bind(now())
        .bind(why)
        .bind(family_id)
        .execute(&mut *crate::storage::writer(&self.pool).await?)
        .await?;
        crate::credential_cache::announce_revocation(&self.pool).await?;
        Ok(done.rows_affected() == 1)
    }

    /// The row `sql` finds for the token `id`, if `secret` is its secret and
    /// `client_id` (when named) the client it was issued to: to RFC 7009
    /// anything else is an unknown token.
    async fn revocable(
        &self,
        sql: &'static str,
        id: &str,
        secret: &str,
        client_id: Option<&str>,
    ) -> Result<Option<sqlx::any::AnyRow>, Refusal> {
        let row = sqlx::query(sql)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(storage_refusal)?;
        Ok(row.filter(|row| {
            let stored: Vec<u8> = row.get("secret_sha256");
            let owner: String = row.get("client_id");
            digest_matches(secret, &stored) && client_id.is_none_or(|c| c == owner)
        }))
    }

    /// RFC 7009: revoke `presented` (a refresh token ends its family, an
    /// access token only itself). Unknown tokens are not an error (§2.2);
    /// the answer is whose token it was and what ended, if anything.
    pub async fn revoke_token(
        &self,
        presented: &str,
        client_id: Option<&str>,
    ) -> Result<Option<(String, String)>, Refusal> {
        if let Some((id, secret)) = split_token(presented, REFRESH_PREFIX) {
            let sql = "SELECT r.family_id, r.secret_sha256, f.user_email, f.client_id \
                 FROM oauth_refresh_tokens r JOIN oauth_families f ON f.id = r.family_id WHERE r.id = $1";
            let Some(row) = self.revocable(sql, id, secret, client_id).await? else {
                return Ok(None);
            };
            let family: String = row.get("family_id");
            self.revoke_family(&family, "revoked by the client")
                .await
                .map_err(storage_refusal)?;
            return Ok(Some((
                row.get("user_email"),
                format!("refresh token family {family}"),
            )));
        } else if let Some((id, secret)) = split_token(presented, ACCESS_PREFIX) {
            let sql = "SELECT t.secret_sha256, f.user_email, f.client_id \
                 FROM oauth_access_tokens t JOIN oauth_families f ON f.id = t.family_id WHERE t.id = $1";
            let Some(row) = self.revocable(sql, id, secret, client_id).await? else {
                return Ok(None);
            };
            sqlx::query(
                "UPDATE oauth_access_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
            )
            .bind(now())
            .bind(id)
            .execute(&mut *crate::storage::writer(&self.pool).await.map_err(storage_refusal)?)
            .await
            .map_err(storage_refusal)?;
            crate::credential_cache::announce_revocation(&self.pool)
                .await
                .map_err(|e| storage_refusal(e.into()))?;
            return Ok(Some((row.get("user_email"), format!("access token {id}"))));
        }
        Ok(None)
    }
}

/// The clients `user` authorized that still hold a live family.
pub async fn authorized_clients(pool: &Db, user: &str) -> Result<Vec<Authorized>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT id, client_id, client_name, scope, created_at, expires_at FROM oauth_families \
         WHERE user_email = $1 AND revoked_at IS NULL AND expires_at > $2 ORDER BY created_at",
    )
    .bind(user)
    .bind(now())
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| Authorized {
            family_id: r.get("id"),
            client_id: r.get("client_id"),
            client_name: r.get("client_name"),
            scope: r.get("scope"),
            created_at: r.get("created_at"),
            expires_at: r.get("expires_at"),
        })
        .collect())
}

/// `user` withdraws `client_id`: every family of theirs for it ends.
pub async fn revoke_client(pool: &Db, user: &str, client_id: &str) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE oauth_families SET revoked_at = $1, revoked_reason = $2 \
         WHERE user_email = $3 AND client_id = $4 AND revoked_at IS NULL",
    )
    .bind(now())
    .bind("revoked by the person")
    .bind(user)
    .bind(client_id)
    .execute(&mut *crate::storage::writer(pool).await?)
    .await?;
    crate::credential_cache::announce_revocation(pool).await?;
    Ok(done.rows_affected())
}

/// Remove what can no longer be used: expired codes and access tokens, and
/// families (with their refresh tokens) past their lifetime. A revoked
/// family stays until then, so a late reuse of its refresh token is still
/// recognized. Answers how many rows went.
pub async fn prune(pool: &Db) -> Result<u64, sqlx::Error> {
    let now = now();
    let mut removed = 0;
    for statement in [
        "DELETE FROM oauth_codes WHERE expires_at < $1",
        "DELETE FROM oauth_access_tokens WHERE expires_at < $1",
        "DELETE FROM oauth_refresh_tokens WHERE family_id IN \
         (SELECT id FROM oauth_families WHERE expires_at < $1)",
        "DELETE FROM oauth_families WHERE expires_at < $1",
        "DELETE FROM oauth_signin_links WHERE expires_at < $1",
        "DELETE FROM oauth_browser_sessions WHERE expires_at < $1",
    ] {
        removed += sqlx::query(statement)
            .bind(&now)
            .execute(&mut *crate::storage::writer(pool).await?)
            .await?
            .rows_affected();
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pruning_removes_only_what_has_expired() {
        let dir = tempfile::tempdir().unwrap();
        let pool = crate::storage::open(dir.path()).await.unwrap();
        let past = "2000-01-01T00:00:00.000000Z";
        let future = "2999-01-01T00:00:00.000000Z";
        for (id, expires) in [("old", past), ("new", future)] {
            sqlx::query(
                "INSERT INTO oauth_families (id, client_id, client_name, user_email, resource, scope, created_at, expires_at) \
                 VALUES ($1, 'c', 'C', 'a@x', 'r', 'mcp', $2, $3)",
            )
            .bind(id)
            .bind(past)
            .bind(expires)
            .execute(&pool)
            .await
            .unwrap();
            sqlx::query(
                "INSERT INTO oauth_refresh_tokens (id, family_id, secret_sha256) VALUES ($1, $2, $3)",
            )
            .bind(format!("r-{id}"))
            .bind(id)
            .bind(vec![0u8; 32])
            .execute(&pool)
            .await
            .unwrap();
            sqlx::query(
                "INSERT INTO oauth_access_tokens (id, family_id, secret_sha256, expires_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(format!("a-{id}"))
            .bind(id)
            .bind(vec![0u8; 32])
            .bind(expires)
            .execute(&pool)
            .await
            .unwrap();
        }
        assert_eq!(prune(&pool).await.unwrap(), 3);
        for table in [
            "oauth_families",
            "oauth_refresh_tokens",
            "oauth_access_tokens",
        ] {
            let left: i64 =
                sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            assert_eq!(left, 1, "{table}");
        }
    }
}
