//! An OAuth 2.0 token set as the vault holds it (kind `oauth`), and its
//! refresh at the provider's token endpoint before it expires.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::OauthConfig;

/// Refresh this long before the access token expires.
pub const REFRESH_MARGIN_SECS: i64 = 60;

#[derive(Clone, Serialize, Deserialize)]
pub struct TokenSet {
    pub access_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// Unix seconds; `None` when the provider gave no lifetime.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenSet(***, expires_at: {:?})", self.expires_at)
    }
}

pub fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

impl TokenSet {
    pub fn parse(secret: &str) -> Option<TokenSet> {
        serde_json::from_str(secret).ok()
    }

    pub fn to_secret(&self) -> String {
        serde_json::to_string(self).expect("a token set serializes")
    }

    pub fn needs_refresh(&self, now: i64) -> bool {
        self.expires_at
            .is_some_and(|at| at - REFRESH_MARGIN_SECS <= now)
    }

    /// A token endpoint's answer (RFC 6749 §5.1); a refresh answer may omit
    /// the refresh token, in which case the old one stays.
    pub fn from_token_response(
        body: &Value,
        previous_refresh: Option<&str>,
        now: i64,
    ) -> Option<TokenSet> {
        let access_token = body.get("access_token")?.as_str()?.to_owned();
        let refresh_token = body
            .get("refresh_token")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| previous_refresh.map(str::to_owned));
        let expires_at = body
            .get("expires_in")
            .and_then(|v| v.as_i64().or_else(|| v.as_str()?.parse().ok()))
            .map(|secs| now + secs);
        Some(TokenSet {
            access_token,
            refresh_token,
            expires_at,
        })
    }
}

/// Why a token endpoint call failed (never includes a token).
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the provider refused: {0}")]
    Refused(String),
    #[error("the provider could not be reached: {0}")]
    Unreachable(String),
    #[error("the client secret is not set: {0}")]
    NoClientSecret(String),
}

pub fn client_secret(oauth: &OauthConfig) -> Result<Option<String>, TokenError> {
    match &oauth.client_secret_env {
        None => Ok(None),
        Some(var) => std::env::var(var)
            .map(Some)
            .map_err(|_| TokenError::NoClientSecret(format!("environment variable {var}"))),
    }
}

/// POST a form to the token endpoint and read a token set from the answer.
pub async fn token_request(
    http: &reqwest::Client,
    oauth: &OauthConfig,
    form: &[(&str, &str)],
    previous_refresh: Option<&str>,
) -> Result<TokenSet, TokenError> {
    let secret = client_secret(oauth)?;
    let mut fields: Vec<(&str, &str)> = form.to_vec();
    fields.push(("client_id", &oauth.client_id));
    if let Some(secret) = &secret {
        fields.push(("client_secret", secret));
    }
    let mut encoded = reqwest::Url::parse("form:").expect("a constant URL");
    encoded.query_pairs_mut().extend_pairs(fields);
    let response = http
        .post(&oauth.token_url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", "application/json")
        .body(encoded.query().unwrap_or("").to_owned())
        .send()
        .await
        .map_err(|e| TokenError::Unreachable(e.without_url().to_string()))?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        // RFC 6749 §5.2: `error` and maybe `error_description`; nothing else is echoed.
        let error = body.get("error").and_then(Value::as_str).unwrap_or("error");
        let description = body
            .get("error_description")
            .and_then(Value::as_str)
            .map(|d| format!(": {d}"))
            .unwrap_or_default();
        return Err(TokenError::Refused(format!(
            "HTTP {} {error}{description}",
            status.as_u16()
        )));
    }
    TokenSet::from_token_response(&body, previous_refresh, now_unix())
        .ok_or_else(|| TokenError::Refused("the answer has no access_token".into()))
}

/// Trade a refresh token for a fresh set.
pub async fn refresh(
    http: &reqwest::Client,
    oauth: &OauthConfig,
    set: &TokenSet,
) -> Result<TokenSet, TokenError> {
    let Some(refresh_token) = set.refresh_token.as_deref() else {
        return Err(TokenError::Refused(
            "the access token expired and there is no refresh token".into(),
        ));
    };
    token_request(
        http,
        oauth,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ],
        Some(refresh_token),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn token_answers_become_sets_that_know_when_to_refresh() {
        let set = TokenSet::from_token_response(
            &json!({"access_token": "a1", "expires_in": 3600, "token_type": "Bearer"}),
            Some("r0"),
            1000,
        )
        .unwrap();
        assert_eq!(set.refresh_token.as_deref(), Some("r0"));
        assert_eq!(set.expires_at, Some(4600));
        assert!(!set.needs_refresh(4500));
        assert!(set.needs_refresh(4541));
        let round = TokenSet::parse(&set.to_secret()).unwrap();
        assert_eq!(round.access_token, "a1");
        assert!(!format!("{set:?}").contains("a1"));
        assert!(TokenSet::from_token_response(&json!({"error": "x"}), None, 0).is_none());
    }
}
