//! Who the person at the browser is. A browser signs in once and keeps a
//! session cookie for the consent pages; it gets one by a one-time sign-in
//! link an admin minted on the CLI (`mcpgate oauth signin-link`): an install
//! without a company IdP still has a way in that needs no password store of
//! our own, and each link works once, for a short time, for one person.

use std::time::Duration;

use sqlx::Row;

use super::{after, digest, digest_matches, new_id, new_secret, split_token};
use crate::config::Config;
use crate::domain::{Reason, Refusal};
use crate::storage::Db;

pub const LINK_PREFIX: &str = "mgl_";
pub const SESSION_PREFIX: &str = "mgs_";

/// A signed-in browser.
#[derive(Debug, Clone)]
pub struct BrowserSession {
    pub id: String,
    pub user: String,
}

/// Whether `email` may sign in interactively: a configured person, not a
/// service account (those use gateway tokens).
pub fn may_sign_in(config: &Config, email: &str) -> Result<String, Refusal> {
    match config.user(email) {
        Some(user) if user.service_account => Err(Refusal::new(
            Reason::SigninRefused,
            format!("{email} is a service account; it uses gateway tokens, not sign-in"),
        )),
        Some(user) => Ok(user.email.clone()),
        None => Err(Refusal::new(
            Reason::SigninRefused,
            format!("{email} is not a user of this gateway"),
        )),
    }
}

/// Mint a one-time link token for `user`, valid for `ttl`.
pub async fn mint_link(pool: &Db, user: &str, ttl: Duration) -> Result<String, sqlx::Error> {
    let (id, secret) = (new_id(), new_secret());
    sqlx::query(
        "INSERT INTO oauth_signin_links (id, user_email, secret_sha256, expires_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(&id)
    .bind(user)
    .bind(digest(&secret))
    .bind(after(ttl))
    .execute(&mut *crate::storage::writer(pool).await?)
    .await?;
    Ok(format!("{LINK_PREFIX}{id}_{secret}"))
}

/// Use a link: the person it was minted for, once.
pub async fn redeem_link(pool: &Db, presented: &str) -> Result<String, Refusal> {
    let invalid = |m: &str| Refusal::new(Reason::SigninLinkInvalid, m);
    let (id, secret) = split_token(presented, LINK_PREFIX)
        .ok_or_else(|| invalid("the sign-in link is malformed"))?;
    let row = sqlx::query(
        "SELECT user_email, secret_sha256, expires_at, used_at FROM oauth_signin_links WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
    .map_err(super::storage_refusal)?
    .ok_or_else(|| invalid("the sign-in link is not known"))?;
    let stored: Vec<u8> = row.get("secret_sha256");
    if !digest_matches(secret, &stored) {
        return Err(invalid("the sign-in link is not known"));
    }
    let expires_at: String = row.get("expires_at");
    if expires_at.as_str() <= actors::now_rfc3339().as_str() {
        return Err(invalid("the sign-in link has expired: ask for a new one"));
    }
    let won =
        sqlx::query("UPDATE oauth_signin_links SET used_at = $1 WHERE id = $2 AND used_at IS NULL")
            .bind(actors::now_rfc3339())
            .bind(id)
            .execute(
                &mut *crate::storage::writer(pool)
                    .await
                    .map_err(super::storage_refusal)?,
            )
            .await
            .map_err(super::storage_refusal)?
            .rows_affected()
            == 1;
    if !won {
        return Err(invalid("the sign-in link was already used"));
    }
    Ok(row.get("user_email"))
}

/// Open a browser session for `user`: the session and its cookie's value.
pub async fn open_session(
    pool: &Db,
    user: &str,
    via: &str,
    ttl: Duration,
) -> Result<(BrowserSession, String), sqlx::Error> {
    let (id, secret) = (new_id(), new_secret());
    sqlx::query(
        "INSERT INTO oauth_browser_sessions (id, user_email, secret_sha256, via, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&id)
    .bind(user)
    .bind(digest(&secret))
    .bind(via)
    .bind(actors::now_rfc3339())
    .bind(after(ttl))
    .execute(&mut *crate::storage::writer(pool).await?)
    .await?;
    let cookie = format!("{SESSION_PREFIX}{id}_{secret}");
    Ok((
        BrowserSession {
            id,
            user: user.to_owned(),
        },
        cookie,
    ))
}

/// The person of browser session `id` while it is live (not revoked, not
/// expired): a console session opened from it lives only as long.
pub async fn session_user(pool: &Db, id: &str) -> Result<Option<String>, sqlx::Error> {
    let row = sqlx::query(
        "SELECT user_email, expires_at FROM oauth_browser_sessions WHERE id = $1 AND revoked_at IS NULL",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(row.and_then(|row| {
        let expires_at: String = row.get("expires_at");
        (expires_at.as_str() > actors::now_rfc3339().as_str()).then(|| row.get("user_email"))
    }))
}

/// The session a cookie value names, if it is live.
pub async fn session(pool: &Db, cookie: &str) -> Option<BrowserSession> {
    let (id, secret) = split_token(cookie, SESSION_PREFIX)?;
    let row = sqlx::query(
        "SELECT user_email, secret_sha256, expires_at, revoked_at FROM oauth_browser_sessions WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
    .ok()??;
    let stored: Vec<u8> = row.get("secret_sha256");
    let expires_at: String = row.get("expires_at");
    let revoked: Option<String> = row.get("revoked_at");
    (digest_matches(secret, &stored)
        && revoked.is_none()
        && expires_at.as_str() > actors::now_rfc3339().as_str())
    .then(|| BrowserSession {
        id: id.to_owned(),
        user: row.get("user_email"),
    })
}
