//! Verifying a Windmill job by calling its workspace back with the job's own
//! token, as `../shared/brief/windmill-verification.md` lays out. Every failed
//! step is a [`Refusal`] with a stable code; nothing falls back to another
//! identity. The job token is sent only to the registered base URL, never
//! logged, and redirects are not followed (they would carry it elsewhere).

use std::sync::Arc;
use std::time::Duration;

use actors::grant::Liveness;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use dashmap::DashMap;
use serde::Deserialize;
use tokio::sync::Semaphore;

use super::store::Instance;

/// How deep a chain of subflows may be before the gateway stops walking it.
const MAX_FLOW_DEPTH: usize = 8;

use crate::domain::Reason;
pub use crate::domain::Refusal;

fn refuse(reason: Reason, message: impl Into<String>) -> Refusal {
    Refusal::new(reason, message)
}

/// What the caller claims about its job.
#[derive(Debug, Clone)]
pub struct JobClaim {
    pub workspace: String,
    pub job_id: String,
    pub flow_job_id: Option<String>,
    pub job_token: String,
}

/// A job Windmill vouched for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedJob {
    /// The owner: the user the job is permissioned as.
    pub owner_email: String,
    pub owner_username: String,
    /// The flow (or standalone script) the actor is named after.
    pub flow_path: String,
    pub job_id: String,
    pub flow_job_id: Option<String>,
    /// The job token's own expiry (Unix seconds).
    pub token_expires_at: i64,
}

#[derive(Debug, Deserialize)]
struct WhoAmI {
    email: String,
    username: String,
    #[serde(default)]
    disabled: bool,
    #[serde(default)]
    is_super_admin: bool,
}

#[derive(Debug, Deserialize)]
struct JobTokenClaims {
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    job_id: Option<String>,
    #[serde(default)]
    workspace_id: Option<String>,
    #[serde(default)]
    exp: Option<i64>,
    #[serde(default)]
    scopes: Option<serde_json::Value>,
    #[serde(default)]
    label: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Job {
    #[serde(rename = "type")]
    kind: String,
    id: String,
    #[serde(default)]
    workspace_id: Option<String>,
    #[serde(default)]
    parent_job: Option<String>,
    #[serde(default)]
    script_path: Option<String>,
    job_kind: String,
    permissioned_as: String,
    email: String,
    #[serde(default)]
    running: bool,
    #[serde(default)]
    canceled: bool,
    #[serde(default)]
    is_flow_step: bool,
}

#[derive(Debug, Deserialize)]
struct JobUpdate {
    #[serde(default)]
    running: Option<bool>,
    #[serde(default)]
    completed: Option<bool>,
}

#[derive(Clone)]
pub struct WindmillClient {
    http: reqwest::Client,
    timeout: Duration,
    /// Requests in flight to one instance at most. A burst of jobs exchanging
    /// at once then reuses this many connections instead of opening one per
    /// job, and the instance is not flooded by the gateway.
    max_in_flight: usize,
    /// One set of slots per instance (by name).
    in_flight: Arc<DashMap<String, Arc<Semaphore>>>,
}

impl WindmillClient {
    pub fn new(timeout: Duration, max_in_flight: usize) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("a reqwest client with rustls builds");
        Self {
            http,
            timeout,
            max_in_flight,
            in_flight: Arc::default(),
        }
    }

    fn slots(&self, instance: &Instance) -> Arc<Semaphore> {
        if let Some(slots) = self.in_flight.get(&instance.name) {
            return slots.clone();
        }
        self.in_flight
            .entry(instance.name.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(self.max_in_flight)))
            .clone()
    }

    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        instance: &Instance,
        path: &str,
        token: &str,
    ) -> Result<Result<T, reqwest::StatusCode>, String> {
        let url = format!(
            "{}/api/w/{}/{path}",
            instance.base_url.trim_end_matches('/'),
            instance.workspace
        );
        // Waiting for a slot is bounded by the same timeout as the answer.
        let slots = self.slots(instance);
        let _slot = match tokio::time::timeout(self.timeout, slots.acquire()).await {
            Ok(Ok(slot)) => slot,
            _ => {
                return Err(format!(
                    "Windmill instance '{}' did not answer: {} requests to it were still \
                     in flight after {:?} (delegation.windmill_max_in_flight)",
                    instance.name, self.max_in_flight, self.timeout
                ));
            }
        };
        let response = self
            .http
            .get(&url)
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "Windmill instance '{}' did not answer: {}",
                    instance.name,
                    without_url(&e)
                )
            })?;
        let status = response.status();
        if !status.is_success() {
            return Ok(Err(status));
        }
        let unexpected = |why: String| {
            format!(
                "Windmill instance '{}' sent an unexpected answer to {path}: {why}",
                instance.name
            )
        };
        let body = response
            .bytes()
            .await
            .map_err(|e| unexpected(without_url(&e)))?;
        // Strict: JSON is UTF-8 throughout, including fields the gateway does
        // not read (serde skips those without checking). A broken answer
        // verifies nothing. Found by `loadtests/src/bin/fuzz.rs`.
        let text = std::str::from_utf8(&body).map_err(|e| unexpected(e.to_string()))?;
        serde_json::from_str::<T>(text)
            .map(Ok)
            .map_err(|e| unexpected(e.to_string()))
    }

    /// The whole verification protocol; `Ok` only if every step passed.
    pub async fn verify(
        &self,
        instance: &Instance,
        claim: &JobClaim,
    ) -> Result<VerifiedJob, Refusal> {
        // 1. Shape of the token and the registered workspace.
        let Some(jwt) = claim.job_token.strip_prefix("jwt_") else {
            return Err(refuse(
                Reason::InvalidJobToken,
                "the subject token is not a Windmill job token (no jwt_ prefix)",
            ));
        };
        if claim.workspace != instance.workspace {
            return Err(refuse(
                Reason::WorkspaceNotRegistered,
                format!("workspace '{}' is not registered", claim.workspace),
            ));
        }
        // 2. Authenticity: Windmill itself accepts the token for this workspace.
        let whoami: WhoAmI = match self.get(instance, "users/whoami", &claim.job_token).await {
            Ok(Ok(user)) => user,
            Ok(Err(status))
                if status == reqwest::StatusCode::UNAUTHORIZED
                    || status == reqwest::StatusCode::FORBIDDEN =>
            {
                return Err(refuse(
                    Reason::JobTokenRejected,
                    format!(
                        "Windmill rejected the job token for workspace '{}' (HTTP {}): bad, expired or of another workspace",
                        claim.workspace,
                        status.as_u16()
                    ),
                ));
            }
            Ok(Err(status)) => {
                return Err(refuse(
                    Reason::WindmillUnavailable,
                    format!("Windmill whoami answered HTTP {}", status.as_u16()),
                ));
            }
            Err(message) => return Err(refuse(Reason::WindmillUnavailable, message)),
        };
        if whoami.disabled {
            return Err(refuse(
                Reason::OwnerDisabled,
                format!("the job's user {} is disabled in Windmill", whoami.email),
            ));
        }
        if whoami.is_super_admin {
            // Windmill's answer for a name that is not a workspace member.
            return Err(refuse(
                Reason::OwnerNotWorkspaceUser,
                format!(
                    "the job's user '{}' is not a member of workspace '{}'",
                    whoami.username, claim.workspace
                ),
            ));
        }
        // 3. Bind the token to the job: its payload (Windmill just accepted this exact string).
        let claims = decode_claims(jwt)?;
        if claims.job_id.as_deref() != Some(claim.job_id.as_str()) {
            return Err(refuse(
                Reason::JobTokenMismatch,
                format!(
                    "the job token was minted for another job than '{}'",
                    claim.job_id
                ),
            ));
        }
        if claims.workspace_id.as_deref() != Some(claim.workspace.as_str()) {
            return Err(refuse(
                Reason::JobTokenMismatch,
                "the job token belongs to another workspace",
            ));
        }
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let exp = claims.exp.unwrap_or(0);
        if exp <= now {
            return Err(refuse(Reason::JobTokenExpired, "the job token has expired"));
        }
        if claims
            .scopes
            .as_ref()
            .is_some_and(|s| !s.is_null() && s.as_array().is_none_or(|a| !a.is_empty()))
        {
            return Err(refuse(
                Reason::NotAJobToken,
                "the token carries scopes: it is a scoped API token, not a job token",
            ));
        }
        match claims.label.as_deref() {
            Some("ephemeral-script") => {}
            Some(label) if label.starts_with("ephemeral-script-end-user-") => {}
            _ => {
                return Err(refuse(
                    Reason::NotAJobToken,
                    "the token is not an ephemeral job token",
                ));
            }
        }
        if claims
            .email
            .as_deref()
            .is_some_and(|e| !e.eq_ignore_ascii_case(&whoami.email))
        {
            return Err(refuse(
                Reason::JobIdentityMismatch,
                "the token's email differs from Windmill's whoami",
            ));
        }
        let permissioned_as = format!("u/{}", whoami.username);
        // 4. The job itself: running, not a preview, run as that user.
        let job = self.job(instance, &claim.job_id, &claim.job_token).await?;
        check_running(&job, &whoami.email, &permissioned_as, "job")?;
        if matches!(job.job_kind.as_str(), "preview" | "flowpreview") {
            return Err(refuse(
                Reason::PreviewJob,
                "preview jobs (run from the editor) cannot act for their owner",
            ));
        }
        // 5. The enclosing flow, checked up the chain of subflows.
        let (flow_path, flow_job_id) = if job.is_flow_step {
            let Some(flow_job_id) = claim.flow_job_id.clone() else {
                return Err(refuse(
                    Reason::InvalidRequest,
                    "this job is a flow step: flow_job_id is required",
                ));
            };
            if job.parent_job.as_deref() != Some(flow_job_id.as_str()) {
                return Err(refuse(
                    Reason::JobMismatch,
                    format!(
                        "job '{}' is not a step of flow job '{flow_job_id}'",
                        claim.job_id
                    ),
                ));
            }
            let flow = self.job(instance, &flow_job_id, &claim.job_token).await?;
            check_running(&flow, &whoami.email, &permissioned_as, "flow job")?;
            if flow.job_kind != "flow" {
                return Err(refuse(
                    if flow.job_kind == "flowpreview" {
                        Reason::PreviewJob
                    } else {
                        Reason::JobMismatch
                    },
                    format!(
                        "the parent job '{flow_job_id}' is a '{}' job, not a deployed flow",
                        flow.job_kind
                    ),
                ));
            }
            let path = flow
                .script_path
                .clone()
                .filter(|p| !p.is_empty())
                .ok_or_else(|| {
                    refuse(
                        Reason::JobMismatch,
                        "the flow job has no path (only deployed flows can delegate)",
                    )
                })?;
            let mut parent = flow;
            for _ in 0..MAX_FLOW_DEPTH {
                if !parent.is_flow_step {
                    break;
                }
                let Some(up) = parent.parent_job.clone() else {
                    return Err(refuse(Reason::JobMismatch, "a subflow job has no parent"));
                };
                parent = self.job(instance, &up, &claim.job_token).await?;
                check_running(&parent, &whoami.email, &permissioned_as, "parent flow job")?;
                if parent.job_kind != "flow" {
                    return Err(refuse(
                        Reason::JobMismatch,
                        "a parent of the flow is not a deployed flow",
                    ));
                }
            }
            if parent.is_flow_step {
                return Err(refuse(
                    Reason::JobMismatch,
                    "the chain of subflows is too deep",
                ));
            }
            (path, Some(flow_job_id))
        } else {
            if claim
                .flow_job_id
                .as_deref()
                .is_some_and(|f| f != claim.job_id)
            {
                return Err(refuse(
                    Reason::JobMismatch,
                    format!(
                        "job '{}' is not a flow step, so it has no flow job",
                        claim.job_id
                    ),
                ));
            }
            let path = job
                .script_path
                .clone()
                .filter(|p| !p.is_empty())
                .ok_or_else(|| {
                    refuse(
                        Reason::JobMismatch,
                        "the job has no script path (only deployed scripts and flows can delegate)",
                    )
                })?;
            (path, None)
        };
        if job
            .workspace_id
            .as_deref()
            .is_some_and(|w| w != claim.workspace)
        {
            return Err(refuse(
                Reason::JobMismatch,
                "the job belongs to another workspace",
            ));
        }
        Ok(VerifiedJob {
            owner_email: whoami.email.to_ascii_lowercase(),
            owner_username: whoami.username,
            flow_path,
            job_id: job.id,
            flow_job_id,
            token_expires_at: exp,
        })
    }

    async fn job(&self, instance: &Instance, id: &str, token: &str) -> Result<Job, Refusal> {
        if !id.chars().all(|c| c.is_ascii_hexdigit() || c == '-') || id.is_empty() {
            return Err(refuse(
                Reason::InvalidRequest,
                format!("'{id}' is not a job id"),
            ));
        }
        match self
            .get::<Job>(
                instance,
                &format!("jobs_u/get/{id}?no_logs=true&no_code=true"),
                token,
            )
            .await
        {
            Ok(Ok(job)) if job.id == id => Ok(job),
            Ok(Ok(_)) => Err(refuse(
                Reason::JobMismatch,
                format!("Windmill answered for another job than '{id}'"),
            )),
            Ok(Err(status)) if status == reqwest::StatusCode::NOT_FOUND => Err(refuse(
                Reason::JobNotFound,
                format!("job '{id}' does not exist in the workspace"),
            )),
            Ok(Err(status)) => Err(refuse(
                Reason::WindmillUnavailable,
                format!("Windmill answered HTTP {} for job '{id}'", status.as_u16()),
            )),
            Err(message) => Err(refuse(Reason::WindmillUnavailable, message)),
        }
    }

    /// Is the job still running? For a grant's periodic liveness probe.
    pub async fn liveness(&self, instance: &Instance, job_id: &str, token: &str) -> Liveness {
        match self
            .get::<JobUpdate>(
                instance,
                &format!("jobs_u/getupdate/{job_id}?no_logs=true"),
                token,
            )
            .await
        {
            Ok(Ok(update)) if update.completed == Some(true) => {
                Liveness::Ended("the job finished".into())
            }
            Ok(Ok(update)) if update.running == Some(false) && update.completed.is_none() => {
                Liveness::Ended("the job is no longer running".into())
            }
            Ok(Ok(_)) => Liveness::Alive,
            Ok(Err(status)) if status == reqwest::StatusCode::NOT_FOUND => {
                Liveness::Ended("the job no longer exists".into())
            }
            Ok(Err(status)) => {
                Liveness::Unknown(format!("Windmill answered HTTP {}", status.as_u16()))
            }
            Err(message) => Liveness::Unknown(message),
        }
    }
}

fn check_running(job: &Job, email: &str, permissioned_as: &str, what: &str) -> Result<(), Refusal> {
    if job.kind == "CompletedJob" {
        return Err(refuse(
            Reason::JobFinished,
            format!("the {what} '{}' has already finished", job.id),
        ));
    }
    if job.kind != "QueuedJob" {
        return Err(refuse(
            Reason::JobMismatch,
            format!("the {what} '{}' has an unknown type '{}'", job.id, job.kind),
        ));
    }
    if job.canceled {
        return Err(refuse(
            Reason::JobNotRunning,
            format!("the {what} '{}' was canceled", job.id),
        ));
    }
    if !job.running {
        return Err(refuse(
            Reason::JobNotRunning,
            format!("the {what} '{}' is not running", job.id),
        ));
    }
    if !job.email.eq_ignore_ascii_case(email) || job.permissioned_as != permissioned_as {
        return Err(refuse(
            Reason::JobIdentityMismatch,
            format!(
                "the {what} '{}' runs as {} ({}), not as the token's user",
                job.id, job.permissioned_as, job.email
            ),
        ));
    }
    Ok(())
}

fn decode_claims(jwt: &str) -> Result<JobTokenClaims, Refusal> {
    let bad = || {
        refuse(
            Reason::InvalidJobToken,
            "the job token is not a well-formed JWT",
        )
    };
    let mut parts = jwt.split('.');
    let (Some(_header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| bad())?;
    serde_json::from_slice(&bytes).map_err(|_| bad())
}

/// A reqwest error's text without its URL (the URL is ours, but keep logs lean).
fn without_url(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    if let Some(url) = error.url() {
        text = text.replace(url.as_str(), "<windmill>");
    }
    text
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    const CAP: usize = 32;

    /// A Windmill stand-in whose `whoami` takes `delay` and counts the
    /// requests it is serving at once.
    async fn slow_instance(delay: Duration) -> (Instance, Arc<(AtomicUsize, AtomicUsize)>) {
        let counts = Arc::new((AtomicUsize::new(0), AtomicUsize::new(0)));
        let seen = counts.clone();
        let app = axum::Router::new().route(
            "/api/w/ws/users/whoami",
            axum::routing::get(move || {
                let seen = seen.clone();
                async move {
                    let now = seen.0.fetch_add(1, Ordering::SeqCst) + 1;
                    seen.1.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(delay).await;
                    seen.0.fetch_sub(1, Ordering::SeqCst);
                    axum::Json(serde_json::json!({"email": "a@example.com"}))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let instance = Instance {
            name: "dev".into(),
            base_url,
            workspace: "ws".into(),
            allowed_flows: None,
        };
        (instance, counts)
    }

    #[tokio::test]
    async fn a_burst_keeps_at_most_the_cap_in_flight_to_one_instance() {
        let (instance, counts) = slow_instance(Duration::from_millis(30)).await;
        let client = WindmillClient::new(Duration::from_secs(10), CAP);
        let calls =
            (0..100).map(|_| client.get::<serde_json::Value>(&instance, "users/whoami", "t"));
        for answer in futures::future::join_all(calls).await {
            assert!(matches!(answer, Ok(Ok(_))), "{answer:?}");
        }
        let most = counts.1.load(Ordering::SeqCst);
        assert!(
            most <= CAP && most > 1,
            "{most} requests were in flight at once"
        );
    }

    #[tokio::test]
    async fn waiting_for_a_slot_past_the_timeout_is_a_clear_refusal() {
        // Three times the cap at once against an instance that never answers
        // in time: the first cap's worth times out at the upstream; of the
        // rest, at least a cap's worth is still queued when the timeout ends.
        let (instance, _) = slow_instance(Duration::from_secs(5)).await;
        let client = WindmillClient::new(Duration::from_millis(300), CAP);
        let calls =
            (0..3 * CAP).map(|_| client.get::<serde_json::Value>(&instance, "users/whoami", "t"));
        let answers = futures::future::join_all(calls).await;
        assert!(answers.iter().all(|a| a.is_err()), "{answers:?}");
        let queued = answers
            .iter()
            .filter_map(|a| a.as_ref().err())
            .filter(|e| {
                e.contains(
                    "'dev' did not answer: 32 requests to it were still in flight after 300ms",
                )
            })
            .count();
        assert!(queued >= CAP, "{answers:?}");
    }
}
