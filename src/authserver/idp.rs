//! Sign-in through the company's OpenID provider: authorization code + PKCE
//! S256, then the ID token checked with `jsonwebtoken` against the provider's
//! published keys (JWKS) — signature, `iss`, `aud`, expiry — and by us for
//! `nonce`, `email_verified` and the allowed domains. The email must then be
//! a configured person (see `signin::may_sign_in`).

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use reqwest::Url;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::RwLock;

use crate::config::oauth::OidcConfig;
use crate::domain::{Reason, Refusal};

/// How long discovery and keys are reused before they are read again (a key
/// not found is looked up again at once: the provider may have rotated).
const CACHE_FOR: Duration = Duration::from_secs(600);
/// Clock skew tolerated on `exp`/`iat`/`nbf`.
const LEEWAY_SECS: u64 = 60;

#[derive(Debug, Clone, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
}

/// What the browser round trip to the provider must bring back (sealed in
/// the pending cookie, never shown to the provider but the challenge).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdpPending {
    pub state: String,
    pub nonce: String,
    pub verifier: String,
}

/// The claims of an ID token this module reads (the rest is ignored).
#[derive(Debug, Deserialize)]
struct Claims {
    #[serde(default)]
    nonce: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    email_verified: Option<serde_json::Value>,
    /// The person's groups, for `oidc.allowed_groups` (the provider must be
    /// asked for them, usually with a `groups` scope).
    #[serde(default)]
    groups: Option<Vec<String>>,
}

/// Who an ID token names: a verified email, and the groups it states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub email: String,
    pub groups: Vec<String>,
}

pub struct Idp {
    config: OidcConfig,
    secret: Option<String>,
    http: reqwest::Client,
    discovery: RwLock<Option<(Instant, Discovery)>>,
    keys: RwLock<Option<(Instant, JwkSet)>>,
}

fn unavailable(message: String) -> Refusal {
    Refusal::new(Reason::IdpUnavailable, message)
}

fn random_text() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

impl Idp {
    pub fn new(config: OidcConfig) -> Result<Self, String> {
        let secret = match &config.client_secret_env {
            Some(var) => Some(std::env::var(var).map_err(|_| {
                format!("oauth.oidc.client_secret_env: the variable {var} is not set")
            })?),
            None => None,
        };
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.timeout)
            .build()
            .map_err(|e| format!("oauth.oidc: http client: {e}"))?;
        Ok(Self {
            config,
            secret,
            http,
            discovery: RwLock::new(None),
            keys: RwLock::new(None),
        })
    }

    async fn discovery(&self) -> Result<Discovery, Refusal> {
        if let Some((at, d)) = self.discovery.read().await.as_ref()
            && at.elapsed() < CACHE_FOR
        {
            return Ok(d.clone());
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.config.issuer.trim_end_matches('/')
        );
        let discovery: Discovery = self
            .get_json(&url)
            .await
            .map_err(|e| unavailable(format!("the sign-in provider's discovery: {e}")))?;
        // OpenID Connect Discovery §4.3: the issuer must be the one asked.
        if discovery.issuer.trim_end_matches('/') != self.config.issuer.trim_end_matches('/') {
            return Err(unavailable(format!(
                "the sign-in provider calls itself {}, not {}",
                discovery.issuer, self.config.issuer
            )));
        }
        *self.discovery.write().await = Some((Instant::now(), discovery.clone()));
        Ok(discovery)
    }

    async fn get_json<T: for<'de> Deserialize<'de>>(&self, url: &str) -> Result<T, String> {
        let response = self.http.get(url).send().await.map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("{url} answered {}", response.status()));
        }
        response.json().await.map_err(|e| e.to_string())
    }

    /// Where to send the browser, and what its return must match.
    pub async fn start(&self, redirect_uri: &str) -> Result<(String, IdpPending), Refusal> {
        let discovery = self.discovery().await?;
        let pending = IdpPending {
            state: random_text(),
            nonce: random_text(),
            verifier: random_text(),
        };
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(pending.verifier.as_bytes()));
        let mut url = Url::parse(&discovery.authorization_endpoint)
            .map_err(|e| unavailable(format!("the provider's authorization endpoint: {e}")))?;
        url.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &self.config.client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", &self.config.scopes.join(" "))
            .append_pair("state", &pending.state)
            .append_pair("nonce", &pending.nonce)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256");
        Ok((url.to_string(), pending))
    }

    /// The provider sent the browser back with `code`: exchange it and
    /// answer the verified email of the person.
    pub async fn finish(
        &self,
        code: &str,
        redirect_uri: &str,
        pending: &IdpPending,
    ) -> Result<String, Refusal> {
        let discovery = self.discovery().await?;
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", pending.verifier.as_str()),
        ];
        let mut request = self.http.post(&discovery.token_endpoint);
        match &self.secret {
            Some(secret) => request = request.basic_auth(&self.config.client_id, Some(secret)),
            None => form.push(("client_id", self.config.client_id.as_str())),
        }
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&form)
            .finish();
        let response = request
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .map_err(|e| unavailable(format!("the provider's token endpoint: {e}")))?;
        let status = response.status();
        let body: serde_json::Value = response
            .json()
            .await
            .map_err(|e| unavailable(format!("the provider's token answer: {e}")))?;
        if !status.is_success() {
            return Err(Refusal::new(
                Reason::IdpDenied,
                format!(
                    "the sign-in provider refused the code: {}",
                    body["error"].as_str().unwrap_or("unknown error")
                ),
            ));
        }
        let id_token = body["id_token"]
            .as_str()
            .ok_or_else(|| Refusal::new(Reason::IdTokenInvalid, "the provider sent no ID token"))?;
        let key = self.key_for(id_token, &discovery).await?;
        let Identity { email, groups } = check_id_token(
            id_token,
            &key,
            &discovery.issuer,
            &self.config.client_id,
            &pending.nonce,
        )?;
        let allowed = &self.config.allowed_groups;
        if !allowed.is_empty() && !groups.iter().any(|g| allowed.contains(g)) {
            return Err(Refusal::new(
                Reason::SigninRefused,
                format!("{email} is in none of the groups allowed to sign in here"),
            ));
        }
        let domain = email.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();
        if !self.config.allowed_domains.is_empty()
            && !self
                .config
                .allowed_domains
                .iter()
                .any(|d| d.eq_ignore_ascii_case(domain))
        {
            return Err(Refusal::new(
                Reason::SigninRefused,
                format!("{email}: the domain {domain} may not sign in here"),
            ));
        }
        Ok(email)
    }

    /// The provider's key that signed `token` (by `kid`); the key set is
    /// read again once if the key is not in the cached one.
    async fn key_for(&self, token: &str, discovery: &Discovery) -> Result<DecodingKey, Refusal> {
        let invalid = |m: String| Refusal::new(Reason::IdTokenInvalid, m);
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| invalid(format!("the ID token is malformed: {e}")))?;
        for fresh in [false, true] {
            let cached = self.keys.read().await.clone();
            let set = match cached {
                Some((at, set)) if !fresh && at.elapsed() < CACHE_FOR => set,
                _ => {
                    let set: JwkSet = self
                        .get_json(&discovery.jwks_uri)
                        .await
                        .map_err(|e| unavailable(format!("the sign-in provider's keys: {e}")))?;
                    *self.keys.write().await = Some((Instant::now(), set.clone()));
                    set
                }
            };
            let jwk = match &header.kid {
                Some(kid) => set.find(kid),
                None if set.keys.len() == 1 => set.keys.first(),
                None => None,
            };
            if let Some(jwk) = jwk {
                return DecodingKey::from_jwk(jwk)
                    .map_err(|e| invalid(format!("the provider's key is unusable: {e}")));
            }
        }
        Err(invalid(
            "the ID token is signed with a key the provider does not publish".into(),
        ))
    }
}

/// Check an ID token signed by `key`: asymmetric algorithm, signature,
/// issuer, audience, expiry (by `jsonwebtoken`), then nonce and a verified
/// email. The email, lower-cased, and the groups on success.
pub fn check_id_token(
    token: &str,
    key: &DecodingKey,
    issuer: &str,
    client_id: &str,
    nonce: &str,
) -> Result<Identity, Refusal> {
    let invalid = |m: String| Refusal::new(Reason::IdTokenInvalid, m);
    let header = jsonwebtoken::decode_header(token)
        .map_err(|e| invalid(format!("the ID token is malformed: {e}")))?;
    // Never a shared-secret algorithm: a public key must not verify an HMAC.
    let allowed = [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ];
    if !allowed.contains(&header.alg) {
        return Err(invalid(format!(
            "the ID token's algorithm {:?} is not accepted",
            header.alg
        )));
    }
    let mut validation = Validation::new(header.alg);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[client_id]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    validation.leeway = LEEWAY_SECS;
    let data = jsonwebtoken::decode::<Claims>(token, key, &validation)
        .map_err(|e| invalid(format!("the ID token does not verify: {e}")))?;
    let claims = data.claims;
    let presented = claims.nonce.unwrap_or_default();
    if !bool::from(presented.as_bytes().ct_eq(nonce.as_bytes())) {
        return Err(Refusal::new(
            Reason::IdTokenNonceMismatch,
            "the ID token's nonce is not this sign-in's",
        ));
    }
    let verified = match claims.email_verified {
        Some(serde_json::Value::Bool(v)) => v,
        Some(serde_json::Value::String(s)) => s == "true",
        _ => false,
    };
    let email = claims
        .email
        .filter(|e| e.contains('@'))
        .ok_or_else(|| invalid("the ID token carries no email".into()))?;
    if !verified {
        return Err(Refusal::new(
            Reason::EmailNotVerified,
            format!("the provider has not verified {email}"),
        ));
    }
    Ok(Identity {
        email: email.to_ascii_lowercase(),
        groups: claims.groups.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
    use jsonwebtoken::{EncodingKey, Header};

    fn now() -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }

    struct Signer {
        encoding: EncodingKey,
        decoding: DecodingKey,
    }

    fn signer() -> Signer {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&aws_lc_rs::rand::SystemRandom::new()).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        Signer {
            encoding: EncodingKey::from_ed_der(pkcs8.as_ref()),
            decoding: DecodingKey::from_ed_der(pair.public_key().as_ref()),
        }
    }

    fn token(s: &Signer, claims: serde_json::Value) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, &s.encoding).unwrap()
    }

    fn claims() -> serde_json::Value {
        serde_json::json!({
            "iss": "https://idp.example", "aud": "mcpgate", "sub": "alice",
            "iat": now(), "exp": now() + 300, "nonce": "n-1",
            "email": "Alice@Example.com", "email_verified": true,
        })
    }

    #[test]
    fn a_good_id_token_names_its_verified_email() {
        let s = signer();
        let t = token(&s, claims());
        assert_eq!(
            check_id_token(&t, &s.decoding, "https://idp.example", "mcpgate", "n-1")
                .unwrap()
                .email,
            "alice@example.com"
        );
    }

    #[test]
    fn bad_id_tokens_are_refused_with_their_reason() {
        let s = signer();
        let other = signer();
        let with = |k: &str, v: serde_json::Value| {
            let mut c = claims();
            c[k] = v;
            c
        };
        let cases = [
            (
                token(&s, with("aud", "someone-else".into())),
                "id_token_invalid",
            ),
            (
                token(&s, with("iss", "https://evil.example".into())),
                "id_token_invalid",
            ),
            (
                token(&s, with("exp", (now() - 3600).into())),
                "id_token_invalid",
            ),
            (
                token(&s, with("nonce", "n-2".into())),
                "id_token_nonce_mismatch",
            ),
            (
                token(&s, with("email_verified", false.into())),
                "email_not_verified",
            ),
            (token(&other, claims()), "id_token_invalid"),
        ];
        for (t, reason) in cases {
            let refused = check_id_token(&t, &s.decoding, "https://idp.example", "mcpgate", "n-1")
                .unwrap_err();
            assert_eq!(refused.reason.code(), reason, "{}", refused.message);
        }
        // An HMAC token "signed" with the public key's bytes is not accepted.
        let hs = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims(),
            &EncodingKey::from_secret(b"public-key-bytes-used-as-an-hmac-secret").unwrap(),
        )
        .unwrap();
        assert_eq!(
            check_id_token(&hs, &s.decoding, "https://idp.example", "mcpgate", "n-1")
                .unwrap_err()
                .reason
                .code(),
            "id_token_invalid"
        );
    }
}
