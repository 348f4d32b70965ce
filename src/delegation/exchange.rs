//! RFC 8693 token exchange: a Windmill job's token (subject) and its flow's
//! gateway credential (actor) become a short-lived delegated access token
//! bound to a grant actor. Every refusal is an RFC 6749 §5.2 error with
//! mcpgate's reason code, and an audit row.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actors::audit::{AuditWrite, Decision};
use actors::grant::{GrantScope, LivenessProbe, Risk};
use actors::session::ClientInfo;
use dashmap::DashMap;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use supervision::SupervisorMsg;

use super::declaration::parse_declaration;
use super::grants::{GrantTable, NewGrant, mint_token};
use super::store::{self, GrantRecord, Instance};
use super::windmill::{JobClaim, Refusal, VerifiedJob, WindmillClient};
use crate::gateway::Gateway;
use crate::pipeline::{self, RowStart};
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

/// An RFC 6749 §5.2 error with mcpgate's reason code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeError {
    /// `invalid_request`, `invalid_grant`, `unauthorized_client`, …
    pub error: &'static str,
    pub reason: &'static str,
    pub description: String,
    pub status: u16,
}

fn oauth(
    error: &'static str,
    reason: &'static str,
    description: impl Into<String>,
) -> ExchangeError {
    let status = match error {
        "unauthorized_client" | "invalid_client" => 401,
        "temporarily_unavailable" => 503,
        "server_error" => 500,
        _ => 400,
    };
    ExchangeError {
        error,
        reason,
        description: description.into(),
        status,
    }
}

fn from_refusal(refusal: Refusal) -> ExchangeError {
    match refusal.code {
        "windmill_unavailable" => oauth("temporarily_unavailable", refusal.code, refusal.message),
        "invalid_request" => oauth("invalid_request", "invalid_request", refusal.message),
        "workspace_not_registered" => oauth("unauthorized_client", refusal.code, refusal.message),
        code => oauth("invalid_grant", code, refusal.message),
    }
}

#[derive(Debug, Clone)]
pub struct Issued {
    pub access_token: String,
    pub expires_in: u64,
    pub grant_id: String,
    /// `service:risk` pairs granted, space separated (the OAuth `scope`).
    pub scope: String,
}

/// Delegation state of one gateway: the Windmill client, the verification
/// cache and the live grants.
pub struct Delegation {
    pub client: WindmillClient,
    pub grants: GrantTable,
    cache: DashMap<[u8; 32], (VerifiedJob, Instant)>,
}

impl Delegation {
    pub fn new(windmill_timeout: Duration) -> Self {
        Self {
            client: WindmillClient::new(windmill_timeout),
            grants: GrantTable::default(),
            cache: DashMap::new(),
        }
    }
}

/// Who the row names before verification says otherwise.
struct Parties {
    subject: String,
    actor: String,
}

/// Run one exchange and audit its outcome.
pub async fn exchange(gw: &Gateway, request: ExchangeRequest) -> Result<Issued, ExchangeError> {
    let mut parties = Parties {
        subject: "anonymous".into(),
        actor: "anonymous".into(),
    };
    let job_id = request.job_id.clone();
    let outcome = run(gw, &request, &mut parties).await;
    let mut row = pipeline::audit_row(RowStart {
        subject: &parties.subject,
        actor: &parties.actor,
        session: None,
        client: &ClientInfo::default(),
        tool: "oauth/token-exchange",
        arguments: &serde_json::Map::new(),
    });
    row.completed = true;
    row.job_id = job_id;
    match &outcome {
        Ok(issued) => {
            row.grant_id = Some(issued.grant_id.clone());
            row.reason = Some(format!("grant minted: {}", issued.scope));
        }
        Err(error) => {
            row.decision = Decision::Refused;
            row.reason_code = Some(error.reason.into());
            row.reason = Some(error.description.clone());
        }
    }
    if let Err(e) = pipeline::record(gw, AuditWrite::Decision(Box::new(row))).await {
        // Fail closed: a grant that cannot be audited is not handed out.
        if let Ok(issued) = &outcome {
            gw.delegation
                .grants
                .revoke(
                    gw.grants_supervisor().as_ref(),
                    &gw.pool,
                    &issued.grant_id,
                    "revoked: audit unavailable",
                )
                .await;
        }
        return Err(oauth(
            "temporarily_unavailable",
            "audit_unavailable",
            format!("the audit log cannot be written: {e}"),
        ));
    }
    outcome
}

async fn run(
    gw: &Gateway,
    request: &ExchangeRequest,
    parties: &mut Parties,
) -> Result<Issued, ExchangeError> {
    match request.grant_type.as_deref() {
        Some(GRANT_TYPE_TOKEN_EXCHANGE) => {}
        Some(other) => {
            return Err(oauth(
                "unsupported_grant_type",
                "unsupported_grant_type",
                format!("grant_type '{other}' is not supported; use {GRANT_TYPE_TOKEN_EXCHANGE}"),
            ));
        }
        None => {
            return Err(oauth(
                "invalid_request",
                "invalid_request",
                "grant_type is required",
            ));
        }
    }
    let required = |value: &Option<String>, name: &str| {
        value
            .as_deref()
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| {
                oauth(
                    "invalid_request",
                    "invalid_request",
                    format!("{name} is required"),
                )
            })
    };
    let actor_token = required(&request.actor_token, "actor_token")?;
    if let Some(kind) = request.actor_token_type.as_deref()
        && kind != TOKEN_TYPE_ACCESS_TOKEN
    {
        return Err(oauth(
            "invalid_request",
            "invalid_request",
            format!("actor_token_type must be {TOKEN_TYPE_ACCESS_TOKEN}"),
        ));
    }
    // The actor: the flow's own gateway credential, a service account.
    let record = tokens::verify(&gw.pool, &actor_token).await.map_err(|e| {
        oauth(
            "unauthorized_client",
            "invalid_actor_token",
            format!("actor_token: {e}"),
        )
    })?;
    let service_account = gw
        .config
        .user(&record.user_email)
        .filter(|u| u.service_account)
        .ok_or_else(|| {
            oauth(
                "unauthorized_client",
                "actor_not_service_account",
                format!(
                    "actor_token belongs to {}, which is not a configured service account",
                    record.user_email
                ),
            )
        })?;
    parties.subject = service_account.email.clone();
    parties.actor = service_account.email.clone();

    let subject_token = required(&request.subject_token, "subject_token")?;
    if request.subject_token_type.as_deref() != Some(SUBJECT_TOKEN_TYPE_WINDMILL_JOB) {
        return Err(oauth(
            "invalid_request",
            "invalid_request",
            format!("subject_token_type must be {SUBJECT_TOKEN_TYPE_WINDMILL_JOB}"),
        ));
    }
    let workspace = required(&request.workspace, "workspace")?;
    let job_id = required(&request.job_id, "job_id")?;

    if !store::delegation_enabled(&gw.pool)
        .await
        .map_err(storage_error)?
    {
        return Err(oauth(
            "unauthorized_client",
            "delegation_disabled",
            "Delegated Access is turned off on this gateway",
        ));
    }
    let instance = pick_instance(gw, &workspace, request.instance.as_deref()).await?;
    parties.actor = format!("windmill:{}/{}", instance.name, instance.workspace);

    let Some(declared_text) = request
        .gateway_services
        .as_deref()
        .filter(|t| !t.trim().is_empty())
    else {
        return Err(oauth(
            "invalid_request",
            "no_declaration",
            "gateway_services is required: a flow without a gateway-services declaration acts as its service account with its own credential",
        ));
    };
    let known: HashSet<String> = gw.config.services.keys().cloned().collect();
    let declaration = parse_declaration(declared_text, &known).map_err(|e| {
        oauth(
            "invalid_request",
            "invalid_declaration",
            format!("gateway_services: {e}"),
        )
    })?;

    let claim = JobClaim {
        workspace: workspace.clone(),
        job_id: job_id.clone(),
        flow_job_id: request.flow_job_id.clone().filter(|f| !f.is_empty()),
        job_token: subject_token,
    };
    let verified = verify_cached(gw, &instance, &claim)
        .await
        .map_err(from_refusal)?;
    parties.subject = verified.owner_email.clone();
    parties.actor = format!(
        "windmill:{}/{}/{}",
        instance.name, instance.workspace, verified.flow_path
    );
    if !instance.allows_flow(&verified.flow_path) {
        return Err(oauth(
            "unauthorized_client",
            "flow_not_allowed",
            format!(
                "flow '{}' is not allowed to delegate on instance '{}'",
                verified.flow_path, instance.name
            ),
        ));
    }
    let owner = gw.config.user(&verified.owner_email).ok_or_else(|| {
        oauth(
            "invalid_grant",
            "owner_unknown",
            format!(
                "the job's owner {} is not a gateway user",
                verified.owner_email
            ),
        )
    })?;

    // The grant: declaration ∩ the owner's own access; high_risk only if approved.
    let declared = declaration.highest();
    let approved = store::approved_high_risk(
        &gw.pool,
        &instance.name,
        &instance.workspace,
        &verified.flow_path,
        &verified.owner_email,
    )
    .await
    .map_err(storage_error)?;
    let mut granted = BTreeMap::new();
    for (service, asked) in &declared {
        if *asked == Risk::HighRisk && !approved.contains(service) {
            return Err(oauth(
                "invalid_scope",
                "high_risk_not_approved",
                format!(
                    "'{service}: [high_risk]' needs an admin's approval for flow '{}' of {} on instance '{}'",
                    verified.flow_path, verified.owner_email, instance.name
                ),
            ));
        }
        if let Some(own) = owner.access_to(service) {
            granted.insert(service.clone(), (*asked).min(own));
        }
    }
    if granted.is_empty() {
        return Err(oauth(
            "invalid_scope",
            "outside_owner_scope",
            format!(
                "{} has no access to any declared service ({})",
                verified.owner_email,
                declared.keys().cloned().collect::<Vec<_>>().join(", ")
            ),
        ));
    }

    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let token_left = Duration::from_secs((verified.token_expires_at - now).max(1) as u64);
    let ttl = gw.config.delegation.max_grant_ttl.min(token_left);
    let grant_id = format!("grt_{}", hex::encode(rand::random::<[u8; 8]>()));
    let scope = GrantScope {
        grant_id: grant_id.clone(),
        subject: verified.owner_email.clone(),
        actor: parties.actor.clone(),
        job_id: Some(verified.job_id.clone()),
        declared,
        services: granted.clone(),
    };
    let probe = liveness_probe(
        &gw.delegation.client,
        &instance,
        &verified.job_id,
        &claim.job_token,
    );
    let created_at = actors::now_rfc3339();
    let expires_at = time::OffsetDateTime::now_utc() + ttl;
    let (access_token, secret_sha256) = mint_token(&grant_id);
    store::insert_grant(
        &gw.pool,
        &GrantRecord {
            id: grant_id.clone(),
            subject: scope.subject.clone(),
            actor: scope.actor.clone(),
            instance: instance.name.clone(),
            workspace: instance.workspace.clone(),
            flow_path: verified.flow_path.clone(),
            job_id: verified.job_id.clone(),
            flow_job_id: verified.flow_job_id.clone(),
            services: store::scope_text(&granted),
            created_at,
            expires_at: actors::format_rfc3339(expires_at),
            ended_at: None,
            end_reason: None,
        },
        &secret_sha256,
        &store::scope_text(&scope.declared),
    )
    .await
    .map_err(storage_error)?;
    let supervisor: ractor::ActorRef<SupervisorMsg> = gw.grants_supervisor().ok_or_else(|| {
        oauth(
            "temporarily_unavailable",
            "grants_unavailable",
            "the grant supervisor is restarting",
        )
    })?;
    gw.delegation
        .grants
        .start(
            &supervisor,
            &gw.pool,
            NewGrant {
                scope,
                instance: instance.name.clone(),
                workspace: instance.workspace.clone(),
                flow_path: verified.flow_path.clone(),
                owner: Arc::new(owner.clone()),
                ttl,
                probe: Some((probe, gw.config.delegation.liveness_interval)),
                secret_sha256,
            },
        )
        .await
        .map_err(|e| {
            oauth(
                "temporarily_unavailable",
                "grants_unavailable",
                format!("the grant could not start: {e}"),
            )
        })?;
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

async fn pick_instance(
    gw: &Gateway,
    workspace: &str,
    name: Option<&str>,
) -> Result<Instance, ExchangeError> {
    let mut found = store::instances_for(&gw.pool, workspace, name)
        .await
        .map_err(storage_error)?;
    match found.len() {
        0 => Err(oauth(
            "unauthorized_client",
            "workspace_not_registered",
            format!("Windmill workspace '{workspace}' is not registered on this gateway"),
        )),
        1 => Ok(found.remove(0)),
        _ => Err(oauth(
            "invalid_request",
            "invalid_request",
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
    gw: &Gateway,
    instance: &Instance,
    claim: &JobClaim,
) -> Result<VerifiedJob, Refusal> {
    let mut hasher = Sha256::new();
    for part in [
        instance.name.as_str(),
        claim.workspace.as_str(),
        claim.job_id.as_str(),
        claim.flow_job_id.as_deref().unwrap_or("-"),
        claim.job_token.as_str(),
    ] {
        hasher.update(part.as_bytes());
        hasher.update([0]);
    }
    let key: [u8; 32] = hasher.finalize().into();
    let max_age = gw.config.delegation.verification_cache;
    if let Some(entry) = gw.delegation.cache.get(&key)
        && entry.1.elapsed() < max_age
    {
        return Ok(entry.0.clone());
    }
    let verified = gw.delegation.client.verify(instance, claim).await?;
    let cache = &gw.delegation.cache;
    cache.retain(|_, (_, at)| at.elapsed() < max_age);
    cache.insert(key, (verified.clone(), Instant::now()));
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

fn storage_error(e: sqlx::Error) -> ExchangeError {
    tracing::error!(error = %e, "delegation store");
    oauth(
        "temporarily_unavailable",
        "storage_unavailable",
        "the gateway's store is unavailable",
    )
}
