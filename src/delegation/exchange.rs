//! RFC 8693 token exchange: a Windmill job's token (subject) and its flow's
//! gateway credential (actor) become a short-lived delegated access token
//! bound to a grant actor, in three steps: [`verify`] (who is asking, and for
//! which job), [`scope`] (declaration ∩ the owner's access, high_risk only if
//! approved), [`mint`] (record, actor, token). Every refusal is an RFC 6749
//! §5.2 error with mcpgate's reason code, and an audit row.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use actors::grant::{GrantScope, LivenessProbe};
use actors::session::ClientInfo;
use serde::Deserialize;

use super::Delegation;
use super::declaration::{Declaration, parse_declaration};
use super::grants::{NewGrant, mint_token};
use super::store::{self, GrantRecord, Instance};
use super::verification_cache::VerificationCache;
use super::windmill::{JobClaim, Refusal, VerifiedJob, WindmillClient};
use crate::audit::RowStart;
use crate::config::UserConfig;
use crate::domain::{Reason, Risk};
use crate::tokens;

pub const GRANT_TYPE_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// mcpgate's own token type for a Windmill job token (`WM_TOKEN`).
pub const SUBJECT_TOKEN_TYPE_WINDMILL_JOB: &str =
    "urn:mcpgate:params:oauth:token-type:windmill-job-token";
pub const TOKEN_TYPE_ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";

/// The form fields of a token exchange (all optional here; checked below).
#[derive(Debug, Default, Deserialize)]
pub struct ExchangeRequest {
    pub grant_type: Option<String>,
    pub subject_token: Option<String>,
    pub subject_token_type: Option<String>,
    pub actor_token: Option<String>,
    pub actor_token_type: Option<String>,
    pub workspace: Option<String>,
    pub job_id: Option<String>,
    pub flow_job_id: Option<String>,
    /// The `gateway-services` declaration, JSON or YAML.
    pub gateway_services: Option<String>,
    /// The registered instance, when several register the same workspace.
    pub instance: Option<String>,
}

/// An RFC 6749 §5.2 error: its `error` and HTTP status follow from the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeError {
    pub reason: Reason,
    pub description: String,
}

impl ExchangeError {
    pub fn new(reason: Reason, description: impl Into<String>) -> Self {
        Self {
            reason,
            description: description.into(),
        }
    }

    /// `invalid_request`, `invalid_grant`, `unauthorized_client`, …
    pub fn error(&self) -> &'static str {
        self.reason.oauth_error()
    }

    pub fn status(&self) -> u16 {
        self.reason.oauth_status()
    }
}

fn oauth(reason: Reason, description: impl Into<String>) -> ExchangeError {
    ExchangeError::new(reason, description)
}

fn from_refusal(refusal: Refusal) -> ExchangeError {
    ExchangeError::new(refusal.reason, refusal.message)
}

#[derive(Debug, Clone)]
pub struct Issued {
    pub access_token: String,
    pub expires_in: u64,
    pub grant_id: String,
    /// `service:risk` pairs granted, space separated (the OAuth `scope`).
    pub scope: String,
}

/// Who the audit row names: as far as verification got.
struct Parties {
    subject: String,
    actor: String,
}

/// What verification established.
pub struct Verified {
    instance: Instance,
    job: VerifiedJob,
    claim: JobClaim,
    declaration: Declaration,
    owner: UserConfig,
    actor: String,
}

/// Run one exchange and audit its outcome.
pub async fn exchange(d: &Delegation, request: ExchangeRequest) -> Result<Issued, ExchangeError> {
    let job_id = request.job_id.clone();
    let (parties, outcome) = match verify(d, &request).await {
        Err((parties, error)) => (parties, Err(error)),
        Ok(verified) => {
            let parties = Parties {
                subject: verified.job.owner_email.clone(),
                actor: verified.actor.clone(),
            };
            let outcome = match scope(d, &verified).await {
                Ok(granted) => mint(d, verified, granted).await,
                Err(error) => Err(error),
            };
            (parties, outcome)
        }
    };
    let mut row = RowStart {
        subject: &parties.subject,
        actor: &parties.actor,
        session: None,
        client: &ClientInfo::default(),
        tool: "oauth/token-exchange",
        arguments: &serde_json::Map::new(),
    }
    .row();
    row.completed = true;
    row.job_id = job_id;
    let recorded = match &outcome {
        Ok(issued) => {
            row.grant_id = Some(issued.grant_id.clone());
            row.reason = Some(format!("grant minted: {}", issued.scope));
            d.audit.decision(row).await
        }
        Err(error) => {
            let refusal = crate::domain::Refusal::new(error.reason, error.description.clone());
            d.audit.record_refusal(row, &refusal).await
        }
    };
    if let Err(e) = recorded {
        // Fail closed: a grant that cannot be audited is not handed out.
        if let Ok(issued) = &outcome {
            d.grants
                .revoke(
                    d.supervisor().as_ref(),
                    &d.pool,
                    &issued.grant_id,
                    &super::grants::EndReason::Revoked("revoked: audit unavailable".into()),
                )
                .await;
        }
        return Err(oauth(
            Reason::AuditUnavailable,
            format!("the audit log cannot be written: {}", e.message),
        ));
    }
    outcome
}

type Rejected = (Parties, ExchangeError);

/// Who is asking and for which job: the actor token names a service
/// account, the declaration parses, Windmill confirms the job and its owner.
async fn verify(d: &Delegation, request: &ExchangeRequest) -> Result<Verified, Rejected> {
    let mut parties = Parties {
        subject: "anonymous".into(),
        actor: "anonymous".into(),
    };
    macro_rules! check {
        ($result:expr) => {
            match $result {
                Ok(value) => value,
                Err(error) => return Err((parties, error)),
            }
        };
    }
    check!(check_grant_type(request));
    let actor_token = check!(required(&request.actor_token, "actor_token"));
    if let Some(kind) = request.actor_token_type.as_deref()
        && kind != TOKEN_TYPE_ACCESS_TOKEN
    {
        return Err((
            parties,
            oauth(
                Reason::InvalidRequest,
                format!("actor_token_type must be {TOKEN_TYPE_ACCESS_TOKEN}"),
            ),
        ));
    }
    // The actor: the flow's own gateway credential, a service account.
    let record = check!(
        tokens::verify_cached(&d.actor_tokens, &d.pool, &actor_token)
            .await
            .map_err(|e| { oauth(Reason::InvalidActorToken, format!("actor_token: {e}")) })
    );
    let service_account = check!(
        d.config
            .user(&record.user_email)
            .filter(|u| u.service_account)
            .ok_or_else(|| {
                oauth(
                    Reason::ActorNotServiceAccount,
                    format!(
                        "actor_token belongs to {}, which is not a configured service account",
                        record.user_email
                    ),
                )
            })
    );
    parties.subject = service_account.email.clone();
    parties.actor = service_account.email.clone();

    let subject_token = check!(required(&request.subject_token, "subject_token"));
    if request.subject_token_type.as_deref() != Some(SUBJECT_TOKEN_TYPE_WINDMILL_JOB) {
        return Err((
            parties,
            oauth(
                Reason::InvalidRequest,
                format!("subject_token_type must be {SUBJECT_TOKEN_TYPE_WINDMILL_JOB}"),
            ),
        ));
    }
    let workspace = check!(required(&request.workspace, "workspace"));
    let job_id = check!(required(&request.job_id, "job_id"));
    let (enabled, instances) = check!(
        store::exchange_context(&d.pool, &workspace, request.instance.as_deref())
            .await
            .map_err(storage_error)
    );
    if !enabled {
        return Err((
            parties,
            oauth(
                Reason::DelegationDisabled,
                "Delegated Access is turned off on this gateway",
            ),
        ));
    }
    let instance = check!(pick_instance(&workspace, instances));
    parties.actor = format!("windmill:{}/{}", instance.name, instance.workspace);

    let Some(declared_text) = request
        .gateway_services
        .as_deref()
        .filter(|t| !t.trim().is_empty())
    else {
        return Err((
            parties,
            oauth(
                Reason::NoDeclaration,
                "gateway_services is required: a flow without a gateway-services declaration acts as its service account with its own credential",
            ),
        ));
    };
    let known: HashSet<String> = d.config.services.keys().cloned().collect();
    let declaration = check!(
        parse_declaration(declared_text, &known)
            .map_err(|e| { oauth(Reason::InvalidDeclaration, format!("gateway_services: {e}"),) })
    );

    let claim = JobClaim {
        workspace: workspace.clone(),
        job_id: job_id.clone(),
        flow_job_id: request.flow_job_id.clone().filter(|f| !f.is_empty()),
        job_token: subject_token,
    };
    let job = check!(
        verify_cached(d, &instance, &claim)
            .await
            .map_err(from_refusal)
    );
    parties.subject = job.owner_email.clone();
    parties.actor = format!(
        "windmill:{}/{}/{}",
        instance.name, instance.workspace, job.flow_path
    );
    if !instance.allows_flow(&job.flow_path) {
        let error = oauth(
            Reason::FlowNotAllowed,
            format!(
                "flow '{}' is not allowed to delegate on instance '{}'",
                job.flow_path, instance.name
            ),
        );
        return Err((parties, error));
    }
    let owner = check!(d.config.user(&job.owner_email).cloned().ok_or_else(|| {
        oauth(
            Reason::OwnerUnknown,
            format!("the job's owner {} is not a gateway user", job.owner_email),
        )
    }));
    Ok(Verified {
        instance,
        actor: parties.actor,
        job,
        claim,
        declaration,
        owner,
    })
}

fn check_grant_type(request: &ExchangeRequest) -> Result<(), ExchangeError> {
    match request.grant_type.as_deref() {
        Some(GRANT_TYPE_TOKEN_EXCHANGE) => Ok(()),
        Some(other) => Err(oauth(
            Reason::UnsupportedGrantType,
            format!("grant_type '{other}' is not supported; use {GRANT_TYPE_TOKEN_EXCHANGE}"),
        )),
        None => Err(oauth(Reason::InvalidRequest, "grant_type is required")),
    }
}

fn required(value: &Option<String>, name: &str) -> Result<String, ExchangeError> {
    value
        .as_deref()
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| oauth(Reason::InvalidRequest, format!("{name} is required")))
}

/// The grant: declaration ∩ the owner's own access; high_risk only if an
/// admin approved it for this flow and owner.
async fn scope(
    d: &Delegation,
    verified: &Verified,
) -> Result<BTreeMap<String, Risk>, ExchangeError> {
    let (instance, job) = (&verified.instance, &verified.job);
    let declared = verified.declaration.highest();
    // Approvals matter only to a declaration that asks for high_risk.
    let approved = if declared.values().any(|risk| *risk == Risk::HighRisk) {
        store::approved_high_risk(
            &d.pool,
            &instance.name,
            &instance.workspace,
            &job.flow_path,
            &job.owner_email,
        )
        .await
        .map_err(storage_error)?
    } else {
        Default::default()
    };
    let mut granted = BTreeMap::new();
    for (service, asked) in &declared {
        if *asked == Risk::HighRisk && !approved.contains(service) {
            return Err(oauth(
                Reason::HighRiskNotApproved,
                high_risk_refusal(service, &job.flow_path, &job.owner_email, &instance.name),
            ));
        }
        if let Some(own) = verified.owner.access_to(service) {
            granted.insert(service.clone(), (*asked).min(own));
        }
    }
    if granted.is_empty() {
        return Err(oauth(
            Reason::OutsideOwnerScope,
            format!(
                "{} has no access to any declared service ({})",
                job.owner_email,
                declared.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    Ok(granted)
}

/// Record the grant, start its actor, hand out the token.
async fn mint(
    d: &Delegation,
    verified: Verified,
    granted: BTreeMap<String, Risk>,
) -> Result<Issued, ExchangeError> {
    let Verified {
        instance,
        job,
        claim,
        declaration,
        owner,
        actor,
    } = verified;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let token_left = Duration::from_secs((job.token_expires_at - now).max(1) as u64);
    let ttl = d.config.delegation.max_grant_ttl.min(token_left);
    let grant_id = format!("grt_{}", hex::encode(rand::random::<[u8; 8]>()));
    let scope = GrantScope {
        grant_id: grant_id.clone(),
        subject: job.owner_email.clone(),
        actor,
        job_id: Some(job.job_id.clone()),
        declared: declaration.highest(),
        services: granted.clone(),
    };
    let probe = liveness_probe(&d.client, &instance, &job.job_id, &claim.job_token);
    let created_at = actors::now_rfc3339();
    let expires_at = time::OffsetDateTime::now_utc() + ttl;
    let (access_token, secret_sha256) = mint_token(&grant_id);
    store::insert_grant(
        &d.pool,
        &GrantRecord {
            id: grant_id.clone(),
            subject: scope.subject.clone(),
            actor: scope.actor.clone(),
            instance: instance.name.clone(),
            workspace: instance.workspace.clone(),
            flow_path: job.flow_path.clone(),
            job_id: job.job_id.clone(),
            flow_job_id: job.flow_job_id.clone(),
            services: store::scope_text(&granted),
            created_at,
            expires_at: actors::format_rfc3339(expires_at),
            ended_at: None,
            end_reason: None,
        },
        &secret_sha256,
        &store::scope_text(&scope.declared),
        d.grants.replica(),
    )
    .await
    .map_err(storage_error)?;
    let Some(supervisor) = d.supervisor() else {
        abandon(d, &grant_id, "the grant supervisor is restarting").await;
        return Err(oauth(
            Reason::GrantsUnavailable,
            "the grant supervisor is restarting",
        ));
    };
    let started = d
        .grants
        .start(
            &supervisor,
            &d.pool,
            NewGrant {
                holder_recorded: true,
                scope,
                instance: instance.name.clone(),
                workspace: instance.workspace.clone(),
                flow_path: job.flow_path.clone(),
                owner: Arc::new(owner),
                ttl,
                probe: Some((probe, d.config.delegation.liveness_interval)),
                secret_sha256,
            },
        )
        .await;
    if let Err(e) = started {
        abandon(d, &grant_id, "the grant could not start").await;
        return Err(oauth(
            Reason::GrantsUnavailable,
            format!("the grant could not start: {e}"),
        ));
    }
    Ok(Issued {
        access_token,
        expires_in: ttl.as_secs(),
        grant_id,
        scope: granted
            .iter()
            .map(|(s, r)| format!("{s}:{r}"))
            .collect::<Vec<_>>()
            .join(" "),
    })
}

/// A grant recorded but never started is ended in the store, and this
/// replica no longer holds it, so no revocation waits for it.
async fn abandon(d: &Delegation, grant_id: &str, why: &str) {
    if let Err(e) = store::end_and_release(&d.pool, grant_id, why, d.grants.replica()).await {
        tracing::error!(grant = %grant_id, error = %e, "could not end an unstarted grant");
    }
}

/// The one instance registered for the workspace (or named by the request).
fn pick_instance(workspace: &str, mut found: Vec<Instance>) -> Result<Instance, ExchangeError> {
    match found.len() {
        0 => Err(oauth(
            Reason::WorkspaceNotRegistered,
            format!("Windmill workspace '{workspace}' is not registered on this gateway"),
        )),
        1 => Ok(found.remove(0)),
        _ => Err(oauth(
            Reason::InvalidRequest,
            format!(
                "several instances register workspace '{workspace}': name one with `instance` ({})",
                found
                    .iter()
                    .map(|i| i.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

/// A successful verification is reused for at most the configured time
/// (≤ 60 s); the grant's liveness probe keeps checking afterwards.
async fn verify_cached(
    d: &Delegation,
    instance: &Instance,
    claim: &JobClaim,
) -> Result<VerifiedJob, Refusal> {
    let key = VerificationCache::key(&[
        instance.name.as_str(),
        claim.workspace.as_str(),
        claim.job_id.as_str(),
        claim.flow_job_id.as_deref().unwrap_or("-"),
        claim.job_token.as_str(),
    ]);
    let max_age = d.config.delegation.verification_cache;
    if let Some(verified) = d.cache.get(&key, max_age) {
        return Ok(verified);
    }
    let verified = d.client.verify(instance, claim).await?;
    d.cache.insert(key, verified.clone(), max_age);
    Ok(verified)
}

fn liveness_probe(
    client: &WindmillClient,
    instance: &Instance,
    job_id: &str,
    job_token: &str,
) -> LivenessProbe {
    let client = client.clone();
    let instance = instance.clone();
    let job_id = job_id.to_owned();
    // The job token stays in this closure only: never stored, never logged.
    let job_token = job_token.to_owned();
    Arc::new(move || {
        let client = client.clone();
        let instance = instance.clone();
        let job_id = job_id.clone();
        let job_token = job_token.clone();
        Box::pin(async move { client.liveness(&instance, &job_id, &job_token).await })
    })
}

fn storage_error(e: impl std::fmt::Display) -> ExchangeError {
    tracing::error!(error = %e, "delegation store");
    oauth(
        Reason::StorageUnavailable,
        "the gateway's store is unavailable",
    )
}

/// The reason text of a `high_risk_not_approved` refusal; the console reads
/// the service and flow back from it ([`parse_high_risk_refusal`]) to offer
/// the approval pre-filled.
fn high_risk_refusal(service: &str, flow_path: &str, owner: &str, instance: &str) -> String {
    format!(
        "'{service}: [high_risk]' needs an admin's approval for flow '{flow_path}' of {owner} on instance '{instance}'"
    )
}

/// (service, flow path) of a [`high_risk_refusal`] text.
pub fn parse_high_risk_refusal(text: &str) -> Option<(String, String)> {
    let rest = text.strip_prefix('\'')?;
    let (service, rest) = rest.split_once(": [high_risk]' needs an admin's approval for flow '")?;
    let (flow_path, _) = rest.rsplit_once("' of ")?;
    Some((service.to_owned(), flow_path.to_owned()))
}

#[cfg(test)]
mod refusal_text {
    #[test]
    fn a_high_risk_refusal_reads_back() {
        let text = super::high_risk_refusal("jira", "f/ops/it's", "a@x", "prod");
        assert_eq!(
            super::parse_high_risk_refusal(&text),
            Some(("jira".into(), "f/ops/it's".into()))
        );
        assert_eq!(super::parse_high_risk_refusal("something else"), None);
    }
}
