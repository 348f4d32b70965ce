//! A local Windmill that follows `../shared/specs/windmill/openapi-subset.yaml`
//! for the three endpoints the gateway calls back: whoami, jobs_u/get and
//! jobs_u/getupdate (all under `/api`). Job tokens are shaped like Windmill's:
//! `jwt_` + an HS256 JWT with the real claim names, signed with this fake's
//! own secret and checked like Windmill checks them (signature, expiry,
//! workspace). Jobs start, run and finish on the test's command.
#![allow(dead_code)]

#[path = "fake_http.rs"]
#[allow(clippy::duplicate_mod)] // each fake brings the kernel; a test may use several
mod fake_http;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

#[derive(Debug, Clone)]
pub struct FakeUser {
    pub email: String,
    pub username: String,
    pub disabled: bool,
}

#[derive(Debug, Clone)]
pub struct FakeJob {
    pub id: String,
    pub workspace: String,
    pub parent_job: Option<String>,
    pub script_path: String,
    pub job_kind: String,
    pub username: String,
    pub email: String,
    pub running: bool,
    pub completed: bool,
    pub canceled: bool,
    pub is_flow_step: bool,
}

#[derive(Default)]
struct World {
    users: HashMap<String, FakeUser>,
    jobs: HashMap<String, FakeJob>,
    schedules: HashMap<String, Value>,
    calls: HashMap<String, usize>,
}

#[derive(Clone)]
pub struct FakeWindmill {
    pub base_url: String,
    pub workspace: String,
    secret: Arc<Vec<u8>>,
    world: Arc<Mutex<World>>,
}

/// A running flow step and the job token its environment would hold.
#[derive(Debug, Clone)]
pub struct RunningStep {
    pub flow_job_id: String,
    pub job_id: String,
    pub token: String,
    pub flow_path: String,
}

fn new_uuid() -> String {
    let b: [u8; 16] = rand::random();
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

impl FakeWindmill {
    pub async fn start(workspace: &str) -> FakeWindmill {
        let (listener, base_url) = fake_http::listen().await;
        let fake = FakeWindmill {
            base_url,
            workspace: workspace.to_owned(),
            secret: Arc::new(rand::random::<[u8; 32]>().to_vec()),
            world: Arc::new(Mutex::new(World::default())),
        };
        let app = axum::Router::new()
            .route("/api/w/{ws}/users/whoami", get(whoami))
            .route("/api/w/{ws}/jobs_u/get/{id}", get(get_job))
            .route("/api/w/{ws}/jobs_u/getupdate/{id}", get(get_update))
            .route("/api/w/{ws}/schedules/get/{*path}", get(get_schedule))
            .route(
                "/api/w/{ws}/schedules/create",
                axum::routing::post(create_schedule),
            )
            .route(
                "/api/w/{ws}/schedules/update/{*path}",
                axum::routing::post(update_schedule),
            )
            .with_state(fake.clone());
        fake_http::serve(listener, app);
        fake
    }

    pub fn add_user(&self, username: &str, email: &str) {
        self.world.lock().unwrap().users.insert(
            username.to_owned(),
            FakeUser {
                email: email.to_owned(),
                username: username.to_owned(),
                disabled: false,
            },
        );
    }

    pub fn disable_user(&self, username: &str) {
        if let Some(u) = self.world.lock().unwrap().users.get_mut(username) {
            u.disabled = true;
        }
    }

    pub fn calls(&self, endpoint: &str) -> usize {
        self.world
            .lock()
            .unwrap()
            .calls
            .get(endpoint)
            .copied()
            .unwrap_or(0)
    }

    /// A job token as Windmill mints it for `job_id`, run as `username`.
    pub fn mint_token(
        &self,
        username: &str,
        job_id: &str,
        workspace: &str,
        exp_in_secs: i64,
    ) -> String {
        let email = self
            .world
            .lock()
            .unwrap()
            .users
            .get(username)
            .map(|u| u.email.clone())
            .unwrap_or_else(|| format!("{username}@unknown"));
        let claims = json!({
            "email": email,
            "username": username,
            "is_admin": false,
            "is_operator": false,
            "groups": ["all"],
            "folders": [],
            "label": "ephemeral-script",
            "workspace_id": workspace,
            "exp": time_now() + exp_in_secs,
            "job_id": job_id,
            "scopes": null,
            "audit_span": null,
        });
        self.sign(&claims)
    }

    pub fn sign(&self, claims: &Value) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"HS256"}"#);
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signing_input = format!("{header}.{payload}");
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).unwrap();
        mac.update(signing_input.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("jwt_{signing_input}.{signature}")
    }

    pub fn add_job(&self, job: FakeJob) {
        self.world.lock().unwrap().jobs.insert(job.id.clone(), job);
    }

    pub fn job(&self, id: &str) -> FakeJob {
        self.world.lock().unwrap().jobs[id].clone()
    }

    pub fn update_job(&self, id: &str, change: impl FnOnce(&mut FakeJob)) {
        if let Some(job) = self.world.lock().unwrap().jobs.get_mut(id) {
            change(job);
        }
    }

    /// Start a deployed flow `flow_path` as `username`, with one running step.
    pub fn start_flow(&self, username: &str, flow_path: &str) -> RunningStep {
        let email = self.world.lock().unwrap().users[username].email.clone();
        let flow_job_id = new_uuid();
        let job_id = new_uuid();
        self.add_job(FakeJob {
            id: flow_job_id.clone(),
            workspace: self.workspace.clone(),
            parent_job: None,
            script_path: flow_path.to_owned(),
            job_kind: "flow".into(),
            username: username.to_owned(),
            email: email.clone(),
            running: true,
            completed: false,
            canceled: false,
            is_flow_step: false,
        });
        self.add_job(FakeJob {
            id: job_id.clone(),
            workspace: self.workspace.clone(),
            parent_job: Some(flow_job_id.clone()),
            script_path: format!("{flow_path}/step_a"),
            job_kind: "flowscript".into(),
            username: username.to_owned(),
            email,
            running: true,
            completed: false,
            canceled: false,
            is_flow_step: true,
        });
        let token = self.mint_token(username, &job_id, &self.workspace, 7 * 24 * 3600);
        RunningStep {
            flow_job_id,
            job_id,
            token,
            flow_path: flow_path.to_owned(),
        }
    }

    /// The job (and, for a step, its flow) completes.
    pub fn finish(&self, id: &str) {
        self.update_job(id, |job| {
            job.running = false;
            job.completed = true;
        });
    }

    pub fn schedule(&self, path: &str) -> Option<Value> {
        self.world.lock().unwrap().schedules.get(path).cloned()
    }

    /// Windmill's stateless token check: signature, expiry, workspace.
    fn check_token(&self, headers: &HeaderMap, workspace: &str) -> Option<Value> {
        let token = fake_http::bearer(headers)?.strip_prefix("jwt_")?;
        let (signing_input, signature) = token.rsplit_once('.')?;
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).unwrap();
        mac.update(signing_input.as_bytes());
        mac.verify_slice(&URL_SAFE_NO_PAD.decode(signature).ok()?)
            .ok()?;
        let payload = signing_input.split('.').nth(1)?;
        let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
        if claims["exp"].as_i64()? <= time_now() || claims["workspace_id"].as_str()? != workspace {
            return None;
        }
        Some(claims)
    }

    fn count(&self, endpoint: &str) {
        *self
            .world
            .lock()
            .unwrap()
            .calls
            .entry(endpoint.to_owned())
            .or_default() += 1;
    }
}

fn time_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        "Not authorized: Could not validate credentials",
    )
        .into_response()
}

async fn whoami(
    State(fake): State<FakeWindmill>,
    Path(ws): Path<String>,
    headers: HeaderMap,
) -> Response {
    fake.count("whoami");
    let Some(claims) = fake.check_token(&headers, &ws) else {
        return unauthorized();
    };
    let username = claims["username"].as_str().unwrap_or_default().to_owned();
    let world = fake.world.lock().unwrap();
    match world.users.get(&username) {
        Some(user) => Json(json!({
            "email": user.email,
            "username": user.username,
            "is_admin": false,
            "is_super_admin": false,
            "created_at": "2026-01-01T00:00:00Z",
            "operator": false,
            "disabled": user.disabled,
            "groups": ["all"],
            "folders": [],
            "folders_read": [],
            "folders_owners": [],
        }))
        .into_response(),
        // Windmill's answer for a name that is not a workspace user.
        None => Json(json!({
            "email": claims["email"],
            "username": username,
            "is_admin": true,
            "is_super_admin": true,
            "created_at": "2026-01-01T00:00:00Z",
            "operator": false,
            "disabled": false,
            "groups": [],
            "folders": [],
            "folders_read": [],
            "folders_owners": [],
        }))
        .into_response(),
    }
}

async fn get_job(
    State(fake): State<FakeWindmill>,
    Path((ws, id)): Path<(String, String)>,
) -> Response {
    fake.count("jobs_u/get");
    let world = fake.world.lock().unwrap();
    let Some(job) = world.jobs.get(&id).filter(|j| j.workspace == ws) else {
        return (
            StatusCode::NOT_FOUND,
            format!("Not found: job {id} not found"),
        )
            .into_response();
    };
    let mut body = json!({
        "type": if job.completed { "CompletedJob" } else { "QueuedJob" },
        "workspace_id": job.workspace,
        "id": job.id,
        "parent_job": job.parent_job,
        "created_by": format!("schedule-{}", job.username),
        "created_at": "2026-11-24T03:00:00Z",
        "started_at": "2026-11-24T03:00:01Z",
        "script_path": job.script_path,
        "script_hash": "a1b2c3d4e5f60708",
        "job_kind": job.job_kind,
        "permissioned_as": format!("u/{}", job.username),
        "email": job.email,
        "canceled": job.canceled,
        "is_flow_step": job.is_flow_step,
        "visible_to_owner": true,
        "tag": "python3",
    });
    if job.completed {
        body["success"] = json!(!job.canceled);
        body["duration_ms"] = json!(1200);
        body["is_skipped"] = json!(false);
    } else {
        body["running"] = json!(job.running);
    }
    Json(body).into_response()
}

async fn get_update(
    State(fake): State<FakeWindmill>,
    Path((ws, id)): Path<(String, String)>,
) -> Response {
    fake.count("jobs_u/getupdate");
    let world = fake.world.lock().unwrap();
    let Some(job) = world.jobs.get(&id).filter(|j| j.workspace == ws) else {
        return (
            StatusCode::NOT_FOUND,
            format!("Not found: job {id} not found"),
        )
            .into_response();
    };
    Json(json!({ "running": job.running, "completed": job.completed })).into_response()
}

async fn get_schedule(
    State(fake): State<FakeWindmill>,
    Path((ws, path)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if fake.check_token(&headers, &ws).is_none() {
        return unauthorized();
    }
    match fake.world.lock().unwrap().schedules.get(&path) {
        Some(schedule) => Json(schedule.clone()).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            format!("Not found: schedule {path} not found"),
        )
            .into_response(),
    }
}

/// `NewSchedule`: path, schedule (6 fields), timezone, script_path, is_flow, args required.
async fn create_schedule(
    State(fake): State<FakeWindmill>,
    Path(ws): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if fake.check_token(&headers, &ws).is_none() {
        return unauthorized();
    }
    for field in [
        "path",
        "schedule",
        "timezone",
        "script_path",
        "is_flow",
        "args",
    ] {
        if body.get(field).is_none() {
            return (
                StatusCode::BAD_REQUEST,
                format!("Bad request: missing field `{field}`"),
            )
                .into_response();
        }
    }
    if body["schedule"]
        .as_str()
        .map(|s| s.split_whitespace().count())
        != Some(6)
    {
        return (
            StatusCode::BAD_REQUEST,
            "Bad request: cron must have 6 fields",
        )
            .into_response();
    }
    let path = body["path"].as_str().unwrap_or_default().to_owned();
    let mut world = fake.world.lock().unwrap();
    if world.schedules.contains_key(&path) {
        return (
            StatusCode::BAD_REQUEST,
            format!("Bad request: schedule {path} already exists"),
        )
            .into_response();
    }
    world.schedules.insert(path.clone(), body);
    (StatusCode::CREATED, path).into_response()
}

/// `EditSchedule`: schedule, timezone, args required.
async fn update_schedule(
    State(fake): State<FakeWindmill>,
    Path((ws, path)): Path<(String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if fake.check_token(&headers, &ws).is_none() {
        return unauthorized();
    }
    let mut world = fake.world.lock().unwrap();
    let Some(existing) = world.schedules.get_mut(&path) else {
        return (
            StatusCode::NOT_FOUND,
            format!("Not found: schedule {path} not found"),
        )
            .into_response();
    };
    for field in ["schedule", "timezone", "args"] {
        match body.get(field) {
            Some(value) => existing[field] = value.clone(),
            None => {
                return (
                    StatusCode::BAD_REQUEST,
                    format!("Bad request: missing field `{field}`"),
                )
                    .into_response();
            }
        }
    }
    (StatusCode::OK, path).into_response()
}
