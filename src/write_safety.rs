//! Write-safety: the human confirms high_risk actions (and the writes the
//! operator lists) before they run.
//!
//! Two-step confirmation: the first call returns, without executing, what
//! would happen and a token; the same call repeated with `confirm: <token>`
//! runs. The token is an HMAC over the exact canonical arguments, the subject,
//! the actor, the tool and action, the policy version and an expiry — nothing
//! about the session, since 2026-07-28 clients have none. It is single use: the
//! nonce is consumed durably before the call proceeds.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rmcp::model::{CallToolResult, ContentBlock, InputRequiredResult, JsonObject};
use serde_json::{Value, json};

use crate::domain::{Reason, Refusal, Risk};
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
    pub fn reason(&self) -> Reason {
        match self {
            ConfirmationRefusal::Malformed => Reason::ConfirmationMalformed,
            ConfirmationRefusal::Mismatch => Reason::ConfirmationMismatch,
            ConfirmationRefusal::Expired => Reason::ConfirmationExpired,
            ConfirmationRefusal::Reused => Reason::ConfirmationReused,
            ConfirmationRefusal::Store => Reason::ConfirmationStoreUnavailable,
        }
    }

    pub fn code(&self) -> &'static str {
        self.reason().code()
    }
}

impl From<ConfirmationRefusal> for Refusal {
    fn from(refusal: ConfirmationRefusal) -> Refusal {
        Refusal::new(refusal.reason(), refusal.to_string())
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
    .fetch_optional(&mut *crate::storage::writer(pool).await.map_err(|_| ConfirmationRefusal::Store)?)
    .await
    .map_err(|_| ConfirmationRefusal::Store)?;
    match inserted {
        Some(_) => Ok(()),
        None => Err(ConfirmationRefusal::Reused),
    }
}

/// The prefix of a gateway confirmation token in a `confirm` argument. Only
/// such a value is taken as ours; an upstream's own `confirm` argument passes.
pub const CONFIRM_ARG: &str = "confirm";
const CONFIRM_TOKEN_PREFIX: &str = "mgc1.";

/// The key of the confirmation question in `inputRequests`.
const CONFIRM_INPUT: &str = "confirm";

/// How long the gateway waits for the human to answer an elicitation.
const ELICITATION_TIMEOUT: Duration = Duration::from_secs(300);

/// Take the gateway's confirmation token out of a call's arguments, if any.
pub fn take_token(arguments: &mut JsonObject) -> Option<String> {
    match arguments.get(CONFIRM_ARG) {
        Some(Value::String(token)) if token.starts_with(CONFIRM_TOKEN_PREFIX) => {
            let token = token.clone();
            arguments.remove(CONFIRM_ARG);
            Some(token)
        }
        _ => None,
    }
}

/// A 2026-07-28 call's round trip: whether the client can answer an
/// elicitation, and what it sent back from the previous round.
#[derive(Debug, Clone, Default)]
pub struct RoundTrip {
    pub can_ask: bool,
    pub responses: Option<rmcp::model::InputResponses>,
    pub request_state: Option<String>,
}

/// How this call can reach the human.
pub struct Channel<'a> {
    /// A token the client sent back (the two-step form).
    pub token: Option<&'a str>,
    /// The client, when it can be asked through MCP elicitation (form mode,
    /// initialize-era protocol).
    pub elicitor: Option<&'a rmcp::Peer<rmcp::RoleServer>>,
    /// For 2026-07-28 clients: the multi-round-trip state of this call.
    pub round_trip: Option<&'a RoundTrip>,
}

/// What the human is asked to confirm.
pub struct Question<'a> {
    pub binding: Binding<'a>,
    pub service: &'a str,
    pub risk: Risk,
    pub arguments: &'a JsonObject,
    /// The hook that asks, if one does.
    pub hook: Option<&'a str>,
}

pub enum Confirmed {
    Proceed,
    /// Not run: this answer tells the human what would happen, with a token.
    AskFirst(CallToolResult),
    /// Not run: a 2026-07-28 client is asked in the answer; its retry carries
    /// the human's answer and the sealed state.
    InputRequired(Box<InputRequiredResult>),
}

/// Confirmation of one call that needs it, in whichever form the client
/// supports: a token it brought back, the 2026-07-28 round trip, an
/// elicitation, or the two-step preview.
#[derive(Clone)]
pub struct Confirmations {
    key: ConfirmationKey,
    pool: Db,
    ttl: Duration,
}

impl Confirmations {
    pub fn new(key: ConfirmationKey, pool: Db, ttl: Duration) -> Self {
        Self { key, pool, ttl }
    }

    pub async fn confirm(
        &self,
        question: &Question<'_>,
        channel: &Channel<'_>,
    ) -> Result<Confirmed, Refusal> {
        let binding = &question.binding;
        if let Some(token) = channel.token {
            redeem(&self.pool, &self.key, token, binding).await?;
            return Ok(Confirmed::Proceed);
        }
        let qualified = format!("{}.{}", question.service, binding.action);
        let arguments = serde_json::to_string(question.arguments).unwrap_or_default();
        let summary = format!(
            "mcpgate will run {qualified} ({risk}) as {subject} with arguments {arguments}.",
            risk = question.risk,
            subject = binding.subject,
        );
        let ttl = self.ttl.as_secs();
        if let Some(round_trip) = channel.round_trip {
            // The retry: the state is our confirmation token, bound to this
            // exact call and single use; the answer must be the human's approval.
            if let Some(state) = &round_trip.request_state {
                redeem(&self.pool, &self.key, state, binding).await?;
                let answer = round_trip
                    .responses
                    .as_ref()
                    .and_then(|r| r.get(CONFIRM_INPUT))
                    .cloned()
                    .unwrap_or(Value::Null);
                let approved = answer.get("action").and_then(Value::as_str) == Some("accept")
                    && answer.pointer("/content/approve").and_then(Value::as_bool) == Some(true);
                return if approved {
                    Ok(Confirmed::Proceed)
                } else {
                    Err(declined())
                };
            }
            if round_trip.can_ask {
                let (state, _) = issue(&self.key, binding, ttl);
                return input_required(&summary, question.hook, state);
            }
        }
        if let Some(peer) = channel.elicitor {
            return ask_through_elicitation(peer, &summary).await;
        }
        let (token, expires) = issue(&self.key, binding, ttl);
        let text = format!(
            "Confirmation required — nothing was done.\n\
             If you run it, {summary}\n\
             Ask the user. If they agree, repeat exactly the same call with \"confirm\": \"{token}\" \
             (valid for {ttl} s, once).",
        );
        let mut preview = CallToolResult::success(vec![ContentBlock::text(text)]);
        preview.structured_content = Some(json!({
            "confirmation_required": true,
            "service": question.service,
            "action": binding.action,
            "risk": question.risk.as_str(),
            "confirm": token,
            "expires_at_unix": expires,
        }));
        Ok(Confirmed::AskFirst(preview))
    }
}

fn declined() -> Refusal {
    Refusal::new(
        Reason::ConfirmationDeclined,
        "the user did not approve this call",
    )
}

fn approval_schema() -> Result<rmcp::model::ElicitationSchema, Refusal> {
    rmcp::model::ElicitationSchema::builder()
        .required_bool("approve")
        .build()
        .map_err(|e| Refusal::new(Reason::ConfirmationUnavailable, e.to_string()))
}

/// The 2026-07-28 form of the question: `input_required` with one form
/// elicitation and the confirmation token as the (sealed) `requestState`.
fn input_required(summary: &str, hook: Option<&str>, state: String) -> Result<Confirmed, Refusal> {
    use rmcp::model::{ElicitRequest, ElicitRequestParams, InputRequest};
    let reason = hook.map(|h| format!(" ({h})")).unwrap_or_default();
    let question = ElicitRequest::new(ElicitRequestParams::FormElicitationParams {
        meta: None,
        message: format!("Confirm{reason}: {summary} Approve?"),
        requested_schema: approval_schema()?,
    });
    let requests = std::collections::BTreeMap::from([(
        CONFIRM_INPUT.to_owned(),
        InputRequest::Elicitation(question),
    )]);
    Ok(Confirmed::InputRequired(Box::new(
        InputRequiredResult::new(Some(requests), Some(state)),
    )))
}

/// Ask the human through the client (MCP elicitation): accept → run; decline,
/// cancel, no answer or an unchecked box → refused.
async fn ask_through_elicitation(
    peer: &rmcp::Peer<rmcp::RoleServer>,
    summary: &str,
) -> Result<Confirmed, Refusal> {
    use rmcp::model::{ElicitRequestParams, ElicitationAction};
    let asked = peer
        .create_elicitation_with_timeout(
            ElicitRequestParams::FormElicitationParams {
                meta: None,
                message: format!("Confirm: {summary} Approve?"),
                requested_schema: approval_schema()?,
            },
            Some(ELICITATION_TIMEOUT),
        )
        .await;
    match asked {
        Ok(answer) => {
            let approved = answer.action == ElicitationAction::Accept
                && answer
                    .content
                    .as_ref()
                    .and_then(|c| c.get("approve"))
                    .and_then(Value::as_bool)
                    == Some(true);
            if approved {
                Ok(Confirmed::Proceed)
            } else {
                Err(declined())
            }
        }
        Err(e) => Err(Refusal::new(
            Reason::ConfirmationUnanswered,
            format!("the user could not be asked or did not answer: {e}"),
        )),
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
