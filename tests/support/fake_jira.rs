//! A local Jira Cloud that follows `../shared/specs/jira/openapi-subset.json`
//! for the paths the shipped catalog uses: Basic auth (email + API token),
//! `errorMessages`/`errors` error bodies, 201/204 answers. It records what it
//! receives and who sent it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use serde_json::{Value, json};

#[derive(Default)]
struct World {
    /// email → API token.
    accounts: HashMap<String, String>,
    issues: HashMap<String, Value>,
    /// (method, path, who, body) of every authenticated request.
    received: Vec<(String, String, String, Value)>,
    next: u32,
}

#[derive(Clone)]
pub struct FakeJira {
    pub base_url: String,
    world: Arc<Mutex<World>>,
}

fn errors(status: StatusCode, messages: &[&str], fields: Value) -> Response {
    (
        status,
        Json(json!({"errorMessages": messages, "errors": fields})),
    )
        .into_response()
}

impl FakeJira {
    pub async fn start() -> FakeJira {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let fake = FakeJira {
            base_url: format!("http://{}", listener.local_addr().unwrap()),
            world: Arc::new(Mutex::new(World {
                next: 13,
                ..Default::default()
            })),
        };
        fake.world.lock().unwrap().issues.insert(
            "PROJ-12".into(),
            json!({"id": "10012", "key": "PROJ-12", "fields": {
                "summary": "Printer on fire",
                "status": {"name": "Open"},
                "reporter": {"accountId": "5b10a2844c20165700ede21g", "displayName": "Marie Curie", "emailAddress": "marie.curie@example.com"}
            }}),
        );
        let app = axum::Router::new()
            .route("/rest/api/3/myself", get(myself))
            .route("/rest/api/3/search/jql", get(search))
            .route("/rest/api/3/issue", post(create_issue))
            .route(
                "/rest/api/3/issue/{key}",
                get(get_issue).delete(delete_issue),
            )
            .route("/rest/api/3/issue/{key}/comment", post(add_comment))
            .with_state(fake.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        fake
    }

    pub fn add_account(&self, email: &str, token: &str) {
        self.world
            .lock()
            .unwrap()
            .accounts
            .insert(email.into(), token.into());
    }

    pub fn received(&self) -> Vec<(String, String, String, Value)> {
        self.world.lock().unwrap().received.clone()
    }

    fn who(&self, headers: &HeaderMap) -> Option<String> {
        let basic = headers
            .get("authorization")?
            .to_str()
            .ok()?
            .strip_prefix("Basic ")?;
        let decoded = String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(basic)
                .ok()?,
        )
        .ok()?;
        let (email, token) = decoded.split_once(':')?;
        let world = self.world.lock().unwrap();
        (world.accounts.get(email)? == token).then(|| email.to_owned())
    }

    fn record(&self, method: &str, path: &str, who: &str, body: Value) {
        self.world
            .lock()
            .unwrap()
            .received
            .push((method.into(), path.into(), who.into(), body));
    }
}

fn unauthenticated() -> Response {
    errors(
        StatusCode::UNAUTHORIZED,
        &["You are not authenticated. Authentication required to perform this operation."],
        json!({}),
    )
}

async fn myself(State(f): State<FakeJira>, headers: HeaderMap) -> Response {
    let Some(who) = f.who(&headers) else {
        return unauthenticated();
    };
    f.record("GET", "/rest/api/3/myself", &who, Value::Null);
    Json(json!({"accountId": "acc-1", "displayName": who, "emailAddress": who, "timeZone": "UTC", "active": true})).into_response()
}

async fn search(
    State(f): State<FakeJira>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(who) = f.who(&headers) else {
        return unauthenticated();
    };
    let Some(jql) = q.get("jql") else {
        return errors(
            StatusCode::BAD_REQUEST,
            &["The JQL query is required."],
            json!({}),
        );
    };
    f.record("GET", "/rest/api/3/search/jql", &who, json!({"jql": jql}));
    let issues: Vec<Value> = f.world.lock().unwrap().issues.values().cloned().collect();
    Json(json!({"issues": issues, "isLast": true})).into_response()
}

async fn get_issue(
    State(f): State<FakeJira>,
    headers: HeaderMap,
    Path(key): Path<String>,
) -> Response {
    let Some(who) = f.who(&headers) else {
        return unauthenticated();
    };
    f.record(
        "GET",
        &format!("/rest/api/3/issue/{key}"),
        &who,
        Value::Null,
    );
    match f.world.lock().unwrap().issues.get(&key) {
        Some(issue) => Json(issue.clone()).into_response(),
        None => errors(
            StatusCode::NOT_FOUND,
            &["Issue does not exist or you do not have permission to see it."],
            json!({}),
        ),
    }
}

async fn create_issue(
    State(f): State<FakeJira>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let Some(who) = f.who(&headers) else {
        return unauthenticated();
    };
    f.record("POST", "/rest/api/3/issue", &who, body.clone());
    if body["fields"]["summary"].as_str().is_none_or(str::is_empty) {
        return errors(
            StatusCode::BAD_REQUEST,
            &[],
            json!({"summary": "You must specify a summary of the issue."}),
        );
    }
    let mut world = f.world.lock().unwrap();
    let key = format!("PROJ-{}", world.next);
    world.next += 1;
    world.issues.insert(
        key.clone(),
        json!({"id": "10099", "key": key, "fields": body["fields"]}),
    );
    (StatusCode::CREATED, Json(json!({"id": "10099", "key": key, "self": format!("{}/rest/api/3/issue/10099", f.base_url)}))).into_response()
}

async fn add_comment(
    State(f): State<FakeJira>,
    headers: HeaderMap,
    Path(key): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    let Some(who) = f.who(&headers) else {
        return unauthenticated();
    };
    f.record(
        "POST",
        &format!("/rest/api/3/issue/{key}/comment"),
        &who,
        body.clone(),
    );
    (
        StatusCode::CREATED,
        Json(json!({"id": "20001", "body": body["body"], "author": {"emailAddress": who}})),
    )
        .into_response()
}

async fn delete_issue(
    State(f): State<FakeJira>,
    headers: HeaderMap,
    Path(key): Path<String>,
) -> Response {
    let Some(who) = f.who(&headers) else {
        return unauthenticated();
    };
    f.record(
        "DELETE",
        &format!("/rest/api/3/issue/{key}"),
        &who,
        Value::Null,
    );
    match f.world.lock().unwrap().issues.remove(&key) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => errors(
            StatusCode::NOT_FOUND,
            &["Issue does not exist or you do not have permission to see it."],
            json!({}),
        ),
    }
}
