//! Write-safety: the human confirms high_risk actions (and the writes the
//! operator lists) before they run.
//!
//! Two-step confirmation: the first call returns, without executing, what
//! would happen and a token; the same call repeated with `confirm: <token>`
//! runs. The token is an HMAC over the exact canonical arguments, the subject,
//! the actor, the tool and action, the policy version and an expiry — nothing
//! about the session, since 2026-07-28 clients have none. It is single use: the
//! nonce is consumed durably before the call proceeds.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::storage::Db;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

const TOKEN_PREFIX: &str = "mgc1";

/// The secret the gateway signs confirmation tokens with. `Debug` never shows it.
#[derive(Clone)]
pub struct ConfirmationKey([u8; 32]);

impl std::fmt::Debug for ConfirmationKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConfirmationKey(***)")
    }
}

impl ConfirmationKey {
    /// The confirmation-token key, derived from the gateway's master key.
    pub fn from_master(master: &crate::keys::MasterKey) -> ConfirmationKey {
        ConfirmationKey(master.derive("confirmation tokens v1"))
    }

    #[cfg(test)]
    fn fixed(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

/// Everything a token is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding<'a> {
    pub subject: &'a str,
    pub actor: &'a str,
    pub tool: &'a str,
    pub action: &'a str,
    pub args_sha256: &'a str,
    pub policy_version: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfirmationRefusal {
    #[error("the confirmation token is malformed")]
    Malformed,
    #[error(
        "the confirmation token does not match this call (other arguments, action, user or policy)"
    )]
    Mismatch,
    #[error("the confirmation token has expired; call again without `confirm` for a new one")]
    Expired,
    #[error("the confirmation token was already used")]
    Reused,
    #[error("confirmations cannot be recorded right now")]
    Store,
}

impl ConfirmationRefusal {
    pub fn code(&self) -> &'static str {
        match self {
            ConfirmationRefusal::Malformed => "confirmation_malformed",
            ConfirmationRefusal::Mismatch => "confirmation_mismatch",
            ConfirmationRefusal::Expired => "confirmation_expired",
            ConfirmationRefusal::Reused => "confirmation_reused",
            ConfirmationRefusal::Store => "confirmation_store_unavailable",
        }
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn mac(key: &ConfirmationKey, nonce: &str, expires: u64, binding: &Binding<'_>) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(&key.0).expect("HMAC takes any key length");
    // Length-prefixed fields: no two different bindings share a byte string.
    for field in [
        nonce,
        &expires.to_string(),
        binding.subject,
        binding.actor,
        binding.tool,
        binding.action,
        binding.args_sha256,
        binding.policy_version,
    ] {
        mac.update(&(field.len() as u64).to_be_bytes());
        mac.update(field.as_bytes());
    }
    mac.finalize().into_bytes().into()
}

/// A new token for `binding`, valid for `ttl_secs`. Returns (token, expiry as unix seconds).
pub fn issue(key: &ConfirmationKey, binding: &Binding<'_>, ttl_secs: u64) -> (String, u64) {
    let nonce = hex::encode(rand::random::<[u8; 16]>());
    let expires = now_unix() + ttl_secs;
    let tag = URL_SAFE_NO_PAD.encode(mac(key, &nonce, expires, binding));
    (format!("{TOKEN_PREFIX}.{nonce}.{expires}.{tag}"), expires)
}

/// Check `token` against `binding` without consuming it.
pub fn check(
    key: &ConfirmationKey,
    token: &str,
    binding: &Binding<'_>,
) -> Result<(String, u64), ConfirmationRefusal> {
    let mut parts = token.split('.');
    let (Some(TOKEN_PREFIX), Some(nonce), Some(expires), Some(tag), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(ConfirmationRefusal::Malformed);
    };
    let expires: u64 = expires
        .parse()
        .map_err(|_| ConfirmationRefusal::Malformed)?;
    let tag = URL_SAFE_NO_PAD
        .decode(tag)
        .map_err(|_| ConfirmationRefusal::Malformed)?;
    if nonce.len() != 32 {
        return Err(ConfirmationRefusal::Malformed);
    }
    let expected = mac(key, nonce, expires, binding);
    if !bool::from(expected.as_slice().ct_eq(&tag)) {
        return Err(ConfirmationRefusal::Mismatch);
    }
    if now_unix() >= expires {
        return Err(ConfirmationRefusal::Expired);
    }
    Ok((nonce.to_owned(), expires))
}

/// Check `token` and consume its nonce durably. Only the first redemption succeeds.
pub async fn redeem(
    pool: &Db,
    key: &ConfirmationKey,
    token: &str,
    binding: &Binding<'_>,
) -> Result<(), ConfirmationRefusal> {
    let (nonce, expires) = check(key, token, binding)?;
    // RETURNING yields a row only if this redemption inserted the nonce.
    let inserted: Option<String> = sqlx::query_scalar(
        "INSERT INTO confirmation_nonces (nonce, subject, used_at, expires_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (nonce) DO NOTHING RETURNING nonce",
    )
    .bind(&nonce)
    .bind(binding.subject)
    .bind(actors::now_rfc3339())
    .bind(expires.to_string())
    .fetch_optional(pool)
    .await
    .map_err(|_| ConfirmationRefusal::Store)?;
    match inserted {
        Some(_) => Ok(()),
        None => Err(ConfirmationRefusal::Reused),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding() -> Binding<'static> {
        Binding {
            subject: "ops@example.com",
            actor: "ops@example.com",
            tool: "jira_write_actions",
            action: "delete_issue",
            args_sha256: "aa",
            policy_version: "p1",
        }
    }

    #[test]
    fn a_token_matches_only_its_exact_binding() {
        let key = ConfirmationKey::fixed([7; 32]);
        let (token, _) = issue(&key, &binding(), 60);
        assert!(check(&key, &token, &binding()).is_ok());
        let changes: [fn(&mut Binding<'static>); 6] = [
            |b| b.subject = "alice@example.com",
            |b| b.actor = "windmill:x",
            |b| b.tool = "jira_read_actions",
            |b| b.action = "edit_issue",
            |b| b.args_sha256 = "bb",
            |b| b.policy_version = "p2",
        ];
        for change in changes {
            let mut other = binding();
            change(&mut other);
            assert_eq!(
                check(&key, &token, &other),
                Err(ConfirmationRefusal::Mismatch),
                "{other:?}"
            );
        }
        let other_key = ConfirmationKey::fixed([8; 32]);
        assert_eq!(
            check(&other_key, &token, &binding()),
            Err(ConfirmationRefusal::Mismatch)
        );
    }

    #[test]
    fn expired_and_malformed_tokens_are_refused() {
        let key = ConfirmationKey::fixed([7; 32]);
        let (token, _) = issue(&key, &binding(), 0);
        assert_eq!(
            check(&key, &token, &binding()),
            Err(ConfirmationRefusal::Expired)
        );
        for bad in [
            "",
            "mgc1",
            "mgc1.a.b.c",
            "xyz.0123456789abcdef0123456789abcdef.1.AA",
            "mgc1.0123456789abcdef0123456789abcdef.1.!!",
        ] {
            assert_eq!(
                check(&key, bad, &binding()),
                Err(ConfirmationRefusal::Malformed),
                "{bad}"
            );
        }
        // Moving the expiry forward breaks the MAC.
        let (token, expires) = issue(&key, &binding(), 60);
        let forged = token.replace(&format!(".{expires}."), &format!(".{}.", expires + 3600));
        assert_eq!(
            check(&key, &forged, &binding()),
            Err(ConfirmationRefusal::Mismatch)
        );
    }

    #[tokio::test]
    async fn a_token_redeems_once() {
        let dir = tempfile::tempdir().unwrap();
        let pool = crate::storage::open(dir.path()).await.unwrap();
        let key = ConfirmationKey::fixed([7; 32]);
        let (token, _) = issue(&key, &binding(), 60);
        assert_eq!(redeem(&pool, &key, &token, &binding()).await, Ok(()));
        assert_eq!(
            redeem(&pool, &key, &token, &binding()).await,
            Err(ConfirmationRefusal::Reused)
        );
    }
}
