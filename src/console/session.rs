//! Console sign-in: a cookie that names what it was opened with — a gateway
//! token, or a browser session of the company sign-in — never the secret
//! itself, signed with a key derived from the master key. It lives only as
//! long as that credential: every request checks it is still active, so
//! revoking it signs the browser out on every replica.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::keys::MasterKey;

pub const COOKIE: &str = "mcpgate_console";
/// A console session ends after this long even if its token lives on.
pub const LIFETIME_SECS: i64 = 8 * 3600;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// `token:<api_tokens.id>` or `signin:<oauth_browser_sessions.id>`.
    pub credential: String,
    pub email: String,
    pub expires_unix: i64,
    /// Random per sign-in: the CSRF token is derived from it.
    pub nonce: String,
}

pub struct SessionKey([u8; 32]);

impl SessionKey {
    pub fn new(master: &MasterKey) -> Self {
        Self(master.derive("console-session"))
    }

    fn mac(&self, purpose: &[u8], data: &[u8]) -> Hmac<Sha256> {
        let mut mac =
            <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(purpose);
        mac.update(data);
        mac
    }

    /// The cookie value for `claims`.
    pub fn seal(&self, claims: &Claims) -> String {
        let payload = B64.encode(serde_json::to_vec(claims).unwrap_or_default());
        let tag = B64.encode(
            self.mac(b"cookie:", payload.as_bytes())
                .finalize()
                .into_bytes(),
        );
        format!("{payload}.{tag}")
    }

    /// The claims of a cookie this key sealed and that has not expired.
    pub fn open(&self, value: &str, now_unix: i64) -> Option<Claims> {
        let (payload, tag) = value.split_once('.')?;
        let tag = B64.decode(tag).ok()?;
        // Constant time: `verify_slice` compares the tags with `subtle`.
        self.mac(b"cookie:", payload.as_bytes())
            .verify_slice(&tag)
            .ok()?;
        let claims: Claims = serde_json::from_slice(&B64.decode(payload).ok()?).ok()?;
        (claims.expires_unix > now_unix).then_some(claims)
    }

    /// The CSRF token every form of this session carries.
    pub fn csrf(&self, claims: &Claims) -> String {
        hex::encode(
            self.mac(b"csrf:", claims.nonce.as_bytes())
                .finalize()
                .into_bytes(),
        )
    }

    pub fn csrf_matches(&self, claims: &Claims, presented: &str) -> bool {
        bool::from(self.csrf(claims).as_bytes().ct_eq(presented.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(expires_unix: i64) -> Claims {
        Claims {
            credential: "token:abc".into(),
            email: "a@x".into(),
            expires_unix,
            nonce: "n1".into(),
        }
    }

    #[test]
    fn a_cookie_opens_with_its_key_only_and_not_after_it_expires() {
        let key = SessionKey::new(&MasterKey::from_bytes([1; 32]));
        let other = SessionKey::new(&MasterKey::from_bytes([2; 32]));
        let sealed = key.seal(&claims(100));
        assert_eq!(key.open(&sealed, 99), Some(claims(100)));
        assert_eq!(key.open(&sealed, 100), None);
        assert_eq!(other.open(&sealed, 99), None);
        // A payload edited to another user no longer matches its tag.
        let forged = key.seal(&Claims {
            email: "root@x".into(),
            ..claims(100)
        });
        let spliced = format!(
            "{}.{}",
            forged.split_once('.').unwrap().0,
            sealed.split_once('.').unwrap().1
        );
        assert_eq!(key.open(&spliced, 99), None);
        assert_eq!(key.open("garbage", 0), None);
    }

    #[test]
    fn the_csrf_token_is_bound_to_the_sign_in() {
        let key = SessionKey::new(&MasterKey::from_bytes([1; 32]));
        let mine = claims(100);
        let token = key.csrf(&mine);
        assert!(key.csrf_matches(&mine, &token));
        let theirs = Claims {
            nonce: "n2".into(),
            ..claims(100)
        };
        assert!(!key.csrf_matches(&theirs, &token));
        assert!(!key.csrf_matches(&mine, ""));
    }
}
