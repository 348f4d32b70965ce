//! A local Jira Cloud that follows `../shared/specs/jira/openapi-subset.json`
//! (REST v3) for the paths the shipped catalog uses, with honest state:
//!
//! - Basic auth (account email + API token); a missing or wrong credential
//!   gets 401 with the spec's `ErrorCollection` (`errorMessages`/`errors`).
//! - `GET /search/jql`: a small JQL engine (AND of `=`, `!=`, `~`, `in`,
//!   `is empty` over project, key, status, issuetype, assignee, reporter,
//!   labels, priority, parent, summary, text; `ORDER BY`), unbounded queries
//!   refused, `fields` (only `id` unless asked), `maxResults`, opaque
//!   `nextPageToken` and `isLast` (no token on the last page). The
//!   deprecated `GET /search` answers 410.
//! - Issues: create (201; summary, project, issuetype checked; ADF-only
//!   description), get (by key or id; `fields`, `expand=transitions`), edit
//!   (204; `fields` and `update` operations, non-editable fields refused),
//!   delete (204; subtasks only with `deleteSubtasks=true`; 403 for an
//!   account without the delete permission).
//! - Comments: list (`startAt`, `maxResults`, `orderBy`) and add (201; the
//!   body must be an ADF document, otherwise 400).
//! - Transitions: a small workflow (Open → In Progress → Done, Reopen); the
//!   list depends on the issue's status; performing one answers 204 and moves
//!   the issue; an id not valid in that status answers 400.
//! - Projects: get by key or id, 404 `No project could be found…`.
//! - 429 with `Retry-After` for the next requests when told to.
//!
//! It records every request that passed authentication (method, path, who,
//! query, body) and counts every request that reached it.
#![allow(dead_code)]

#[path = "fake_http.rs"]
#[allow(clippy::duplicate_mod)] // each fake brings the kernel; a test may use several
mod fake_http;

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Map, Value, json};

/// One request that passed authentication.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// The account email whose credential was sent.
    pub who: String,
    pub query: BTreeMap<String, String>,
    /// The JSON body (`Null` when there was none).
    pub body: Value,
}

#[derive(Debug, Clone)]
struct Account {
    email: String,
    token: String,
    account_id: String,
    display_name: String,
    can_delete: bool,
}

#[derive(Debug, Clone)]
struct Issue {
    id: u64,
    key: String,
    /// Creation order (the fake's clock).
    seq: u64,
    fields: Map<String, Value>,
    comments: Vec<Value>,
}

#[derive(Default)]
struct World {
    /// email → account.
    accounts: BTreeMap<String, Account>,
    /// key → project.
    projects: BTreeMap<String, Value>,
    /// key → issue.
    issues: BTreeMap<String, Issue>,
    /// project key → the next issue number.
    counters: HashMap<String, u64>,
    next_issue_id: u64,
    next_comment_id: u64,
    clock: u64,
    received: Vec<Request>,
    /// (method, path) of every request, refused ones included.
    hits: Vec<(String, String)>,
    /// The next `n` requests answer 429 with `Retry-After: secs`.
    rate_limited: Option<(u32, u64)>,
}

#[derive(Clone)]
pub struct FakeJira {
    pub base_url: String,
    world: Arc<Mutex<World>>,
}

const ADF_ONLY: &str =
    "Operation value must be an Atlassian Document (see the Atlassian Document Format)";

/// The spec's `ErrorCollection`.
fn errors(status: StatusCode, messages: &[&str], fields: Value) -> Response {
    (
        status,
        Json(json!({"errorMessages": messages, "errors": fields})),
    )
        .into_response()
}

fn bad_request(message: &str) -> Response {
    errors(StatusCode::BAD_REQUEST, &[message], json!({}))
}

fn field_errors(fields: Map<String, Value>) -> Response {
    errors(StatusCode::BAD_REQUEST, &[], Value::Object(fields))
}

fn issue_not_found() -> Response {
    errors(
        StatusCode::NOT_FOUND,
        &["Issue does not exist or you do not have permission to see it."],
        json!({}),
    )
}

fn unauthenticated() -> Response {
    errors(
        StatusCode::UNAUTHORIZED,
        &["You are not authenticated. Authentication required to perform this operation."],
        json!({}),
    )
}

/// The workflow: (status id, name, category key, category name).
const STATUSES: &[(&str, &str, &str, &str)] = &[
    ("1", "Open", "new", "To Do"),
    ("3", "In Progress", "indeterminate", "In Progress"),
    ("10001", "Done", "done", "Done"),
];

/// (transition id, name, from status, to status, has a screen with `resolution`).
const TRANSITIONS: &[(&str, &str, &str, &str, bool)] = &[
    ("11", "Start Progress", "Open", "In Progress", false),
    ("21", "Stop Progress", "In Progress", "Open", false),
    ("31", "Done", "Open", "Done", true),
    ("31", "Done", "In Progress", "Done", true),
    ("41", "Reopen", "Done", "Open", false),
];

const ISSUE_TYPES: &[(&str, &str, bool)] = &[
    ("10001", "Task", false),
    ("10002", "Bug", false),
    ("10003", "Story", false),
    ("10004", "Sub-task", true),
];

const PRIORITIES: &[(&str, &str)] = &[
    ("1", "Highest"),
    ("2", "High"),
    ("3", "Medium"),
    ("4", "Low"),
    ("5", "Lowest"),
];

const RESOLUTIONS: &[(&str, &str)] = &[
    ("10000", "Done"),
    ("10001", "Won't Do"),
    ("10002", "Duplicate"),
];

/// Fields `PUT /issue/{key}` may set.
const EDITABLE: &[&str] = &[
    "summary",
    "description",
    "environment",
    "labels",
    "assignee",
    "priority",
    "duedate",
];

fn status_json(name: &str) -> Value {
    let (id, name, key, category) = STATUSES
        .iter()
        .find(|s| s.1 == name)
        .copied()
        .expect("a status of the workflow");
    json!({"id": id, "name": name, "statusCategory": {"key": key, "name": category}})
}

fn timestamp(seq: u64) -> String {
    let s = 9 * 3600 + seq;
    format!(
        "2026-12-01T{:02}:{:02}:{:02}.000+0000",
        (s / 3600) % 24,
        (s / 60) % 60,
        s % 60
    )
}

/// An ADF document: `{"type": "doc", "version": 1, "content": [nodes]}`,
/// every node typed, every text node with its text.
fn is_adf(value: &Value) -> bool {
    fn node(value: &Value) -> bool {
        let Some(kind) = value.get("type").and_then(Value::as_str) else {
            return false;
        };
        if kind == "text" && value.get("text").and_then(Value::as_str).is_none() {
            return false;
        }
        match value.get("content") {
            None => true,
            Some(Value::Array(children)) => children.iter().all(node),
            Some(_) => false,
        }
    }
    value.get("type").and_then(Value::as_str) == Some("doc")
        && value.get("version").and_then(Value::as_u64) == Some(1)
        && value
            .get("content")
            .and_then(Value::as_array)
            .is_some_and(|c| c.iter().all(node))
}

/// The plain text of an ADF document (for `text ~`).
fn adf_text(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let own = map
                .get("text")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            let children = map.get("content").map(adf_text).unwrap_or_default();
            format!("{own} {children}")
        }
        Value::Array(items) => items.iter().map(adf_text).collect::<Vec<_>>().join(" "),
        _ => String::new(),
    }
}

fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl FakeJira {
    pub async fn start() -> FakeJira {
        let (listener, base_url) = fake_http::listen().await;
        let fake = FakeJira {
            base_url,
            world: Arc::new(Mutex::new(World {
                next_issue_id: 10012,
                next_comment_id: 20000,
                ..Default::default()
            })),
        };
        fake.add_account_named("marie.curie@example.com", "marie-api-token", "Marie Curie");
        fake.add_project(
            "PROJ",
            "10000",
            "Printing Platform",
            "marie.curie@example.com",
        );
        fake.add_project("OPS", "10001", "Operations", "marie.curie@example.com");
        {
            let mut world = fake.world.lock().unwrap();
            world.counters.insert("PROJ".into(), 12);
        }
        let key = fake.add_issue("PROJ", "Printer on fire", "Open");
        assert_eq!(key, "PROJ-12");
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(fake.clone());
        fake_http::serve(listener, app);
        fake
    }

    /// An account whose display name is made from its email.
    pub fn add_account(&self, email: &str, token: &str) -> String {
        let local = email.split('@').next().unwrap_or(email);
        let display = local
            .split(['.', '_', '-'])
            .map(|w| {
                let mut c = w.chars();
                c.next()
                    .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join(" ");
        self.add_account_named(email, token, &display)
    }

    /// Adds an account; returns its accountId.
    pub fn add_account_named(&self, email: &str, token: &str, display_name: &str) -> String {
        let mut world = self.world.lock().unwrap();
        let account_id = format!("5b10a2844c20165700ede{:03}", world.accounts.len() + 1);
        world.accounts.insert(
            email.into(),
            Account {
                email: email.into(),
                token: token.into(),
                account_id: account_id.clone(),
                display_name: display_name.into(),
                can_delete: true,
            },
        );
        account_id
    }

    /// The account no longer holds the *Delete issues* permission.
    pub fn deny_delete(&self, email: &str) {
        if let Some(a) = self.world.lock().unwrap().accounts.get_mut(email) {
            a.can_delete = false;
        }
    }

    pub fn account_id(&self, email: &str) -> String {
        self.world.lock().unwrap().accounts[email]
            .account_id
            .clone()
    }

    pub fn add_project(&self, key: &str, id: &str, name: &str, lead: &str) {
        let mut world = self.world.lock().unwrap();
        let lead = world.user_ref(lead);
        let base = &self.base_url;
        let issue_types: Vec<Value> = ISSUE_TYPES
            .iter()
            .map(|(id, name, subtask)| json!({"id": id, "name": name, "subtask": subtask}))
            .collect();
        world.projects.insert(
            key.into(),
            json!({
                "self": format!("{base}/rest/api/3/project/{id}"),
                "id": id, "key": key, "name": name,
                "description": format!("{name} work"),
                "projectTypeKey": "software", "style": "classic", "simplified": false,
                "isPrivate": false, "assigneeType": "PROJECT_LEAD",
                "lead": lead, "issueTypes": issue_types,
            }),
        );
        world.counters.entry(key.into()).or_insert(1);
    }

    /// Files an issue (reported by the project lead) straight into the
    /// fake's state; returns its key.
    pub fn add_issue(&self, project: &str, summary: &str, status: &str) -> String {
        let mut world = self.world.lock().unwrap();
        let lead = world.projects[project]["lead"].clone();
        let mut fields = Map::new();
        fields.insert("summary".into(), json!(summary));
        fields.insert(
            "issuetype".into(),
            json!({"id": "10001", "name": "Task", "subtask": false}),
        );
        fields.insert("status".into(), status_json(status));
        fields.insert("reporter".into(), lead);
        world.file_issue(&self.base_url, project, fields)
    }

    /// Every authenticated request, as `(method, path, who, body)`; a GET's
    /// or DELETE's "body" is its query as an object.
    pub fn received(&self) -> Vec<(String, String, String, Value)> {
        self.requests()
            .into_iter()
            .map(|r| {
                let body = if r.body.is_null() && !r.query.is_empty() {
                    json!(r.query)
                } else {
                    r.body
                };
                (r.method, r.path, r.who, body)
            })
            .collect()
    }

    pub fn requests(&self) -> Vec<Request> {
        self.world.lock().unwrap().received.clone()
    }

    pub fn last(&self) -> Request {
        self.requests().last().cloned().expect("a request")
    }

    /// Requests (refused ones included) for `method path`.
    pub fn hits(&self, method: &str, path: &str) -> usize {
        self.world
            .lock()
            .unwrap()
            .hits
            .iter()
            .filter(|(m, p)| m == method && p == path)
            .count()
    }

    /// The next `count` requests answer 429 with `Retry-After: retry_after`
    /// (`count` 0: no more).
    pub fn rate_limit(&self, count: u32, retry_after: u64) {
        self.world.lock().unwrap().rate_limited = (count > 0).then_some((count, retry_after));
    }

    /// The issue as the fake holds it (`None` once deleted).
    pub fn issue(&self, key: &str) -> Option<Value> {
        let world = self.world.lock().unwrap();
        world
            .issues
            .get(key)
            .map(|i| json!({"id": i.id.to_string(), "key": i.key, "fields": i.fields, "comments": i.comments}))
    }
}

impl World {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    fn user_ref(&self, email: &str) -> Value {
        let a = &self.accounts[email];
        json!({"accountId": a.account_id, "displayName": a.display_name, "emailAddress": a.email, "active": true, "accountType": "atlassian"})
    }

    fn account_by_id(&self, id: &str) -> Option<&Account> {
        self.accounts.values().find(|a| a.account_id == id)
    }

    fn file_issue(&mut self, base: &str, project: &str, mut fields: Map<String, Value>) -> String {
        let number = {
            let counter = self.counters.entry(project.into()).or_insert(1);
            let n = *counter;
            *counter += 1;
            n
        };
        let key = format!("{project}-{number}");
        let id = self.next_issue_id;
        self.next_issue_id += 1;
        let seq = self.tick();
        let p = &self.projects[project];
        fields.insert(
            "project".into(),
            json!({"id": p["id"], "key": p["key"], "name": p["name"]}),
        );
        fields
            .entry("status")
            .or_insert_with(|| status_json("Open"));
        fields
            .entry("priority")
            .or_insert_with(|| json!({"id": "3", "name": "Medium"}));
        for absent in [
            "description",
            "assignee",
            "resolution",
            "environment",
            "duedate",
        ] {
            fields.entry(absent).or_insert(Value::Null);
        }
        fields.entry("labels").or_insert_with(|| json!([]));
        fields.insert("created".into(), json!(timestamp(seq)));
        fields.insert("updated".into(), json!(timestamp(seq)));
        let _ = base;
        self.issues.insert(
            key.clone(),
            Issue {
                id,
                key: key.clone(),
                seq,
                fields,
                comments: Vec::new(),
            },
        );
        key
    }

    fn find_issue(&self, id_or_key: &str) -> Option<String> {
        if self.issues.contains_key(id_or_key) {
            return Some(id_or_key.to_owned());
        }
        self.issues
            .values()
            .find(|i| i.id.to_string() == id_or_key)
            .map(|i| i.key.clone())
    }

    fn find_project(&self, id_or_key: &str) -> Option<&Value> {
        self.projects
            .get(id_or_key)
            .or_else(|| self.projects.values().find(|p| p["id"] == id_or_key))
    }

    fn subtasks(&self, key: &str) -> Vec<String> {
        self.issues
            .values()
            .filter(|i| i.fields.get("parent").and_then(|p| p.get("key")) == Some(&json!(key)))
            .map(|i| i.key.clone())
            .collect()
    }

    /// An issue as the API shows it, with `fields` chosen as the `fields`
    /// parameter says (`None`: all).
    fn render(&self, base: &str, issue: &Issue, wanted: Option<&str>) -> Value {
        let mut all = issue.fields.clone();
        let subtasks: Vec<Value> = self
            .subtasks(&issue.key)
            .iter()
            .map(|k| json!({"key": k, "fields": {"summary": self.issues[k].fields["summary"], "status": self.issues[k].fields["status"]}}))
            .collect();
        all.insert("subtasks".into(), json!(subtasks));
        all.insert(
            "comment".into(),
            json!({"comments": issue.comments, "maxResults": issue.comments.len(), "total": issue.comments.len(), "startAt": 0}),
        );
        let mut out = json!({
            "expand": "renderedFields,names,schema,operations,editmeta,changelog,versionedRepresentations",
            "id": issue.id.to_string(),
            "key": issue.key,
            "self": format!("{base}/rest/api/3/issue/{}", issue.id),
        });
        let names: Vec<&str> = wanted
            .unwrap_or("*all")
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .collect();
        if names == ["id"] {
            return json!({"id": issue.id.to_string()});
        }
        let everything = names.iter().any(|n| *n == "*all" || *n == "*navigable");
        let mut fields = Map::new();
        for (name, value) in &all {
            let chosen = if everything {
                !names.contains(&format!("-{name}").as_str())
            } else {
                names.contains(&name.as_str())
            };
            if chosen {
                fields.insert(name.clone(), value.clone());
            }
        }
        out["fields"] = Value::Object(fields);
        out
    }

    fn transitions_for(&self, status: &str) -> Vec<Value> {
        TRANSITIONS
            .iter()
            .filter(|t| t.2 == status)
            .map(|(id, name, _, to, screen)| {
                let mut t = json!({
                    "id": id, "name": name, "to": status_json(to),
                    "hasScreen": screen, "isGlobal": false, "isInitial": false,
                    "isAvailable": true, "isConditional": false, "isLooped": false,
                });
                if *screen {
                    let allowed: Vec<Value> = RESOLUTIONS
                        .iter()
                        .map(|(id, name)| json!({"id": id, "name": name}))
                        .collect();
                    t["fields"] = json!({"resolution": {"required": false, "name": "Resolution", "key": "resolution",
                        "operations": ["set"], "allowedValues": allowed, "schema": {"type": "resolution", "system": "resolution"}}});
                }
                t
            })
            .collect()
    }

    /// Checks one field value for create/edit; `Err` is the message.
    fn field_value(&self, name: &str, value: &Value) -> Result<Value, String> {
        match name {
            "summary" => match value.as_str() {
                Some(s) if !s.trim().is_empty() => Ok(json!(s)),
                _ => Err("You must specify a summary of the issue.".into()),
            },
            "description" | "environment" => {
                if value.is_null() || is_adf(value) {
                    Ok(value.clone())
                } else {
                    Err(ADF_ONLY.into())
                }
            }
            "labels" => match value.as_array() {
                Some(labels)
                    if labels.iter().all(|l| {
                        l.as_str()
                            .is_some_and(|s| !s.is_empty() && !s.contains(' '))
                    }) =>
                {
                    Ok(value.clone())
                }
                _ => Err("Labels must be a list of words without spaces.".into()),
            },
            "assignee" => {
                if value.is_null() {
                    return Ok(Value::Null);
                }
                let id = value
                    .get("accountId")
                    .or_else(|| value.get("id"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                match self.account_by_id(id) {
                    Some(a) => Ok(self.user_ref(&a.email.clone())),
                    None => Err(format!("The user with accountId '{id}' does not exist.")),
                }
            }
            "priority" => {
                let wanted_id = value.get("id").and_then(Value::as_str);
                let wanted_name = value.get("name").and_then(Value::as_str);
                PRIORITIES
                    .iter()
                    .find(|(id, name)| Some(*id) == wanted_id || Some(*name) == wanted_name)
                    .map(|(id, name)| json!({"id": id, "name": name}))
                    .ok_or_else(|| "Specify a valid priority.".to_owned())
            }
            "duedate" => match value.as_str() {
                Some(d) if d.len() == 10 && d.as_bytes()[4] == b'-' && d.as_bytes()[7] == b'-' => {
                    Ok(json!(d))
                }
                None if value.is_null() => Ok(Value::Null),
                _ => Err("Error parsing date string: use yyyy-MM-dd.".into()),
            },
            other => Err(format!(
                "Field '{other}' cannot be set. It is not on the appropriate screen, or unknown."
            )),
        }
    }

    fn new_comment(
        &mut self,
        base: &str,
        issue_id: u64,
        who: &str,
        body: &Value,
        visibility: Option<&Value>,
    ) -> Value {
        let id = self.next_comment_id;
        self.next_comment_id += 1;
        let seq = self.tick();
        let author = self.user_ref(who);
        let mut comment = json!({
            "self": format!("{base}/rest/api/3/issue/{issue_id}/comment/{id}"),
            "id": id.to_string(),
            "author": author, "updateAuthor": author,
            "body": body,
            "created": timestamp(seq), "updated": timestamp(seq),
            "jsdPublic": true,
        });
        if let Some(v) = visibility {
            comment["visibility"] = v.clone();
        }
        comment
    }

    /// Validates a comment body (and visibility); `Some` is the 400 answer.
    fn check_comment(body: Option<&Value>, visibility: Option<&Value>) -> Option<Response> {
        let mut problems = Map::new();
        match body {
            None | Some(Value::Null) => {
                problems.insert("comment".into(), json!("Comment body can not be empty!"));
            }
            Some(b) if !is_adf(b) => {
                problems.insert("comment".into(), json!(ADF_ONLY));
            }
            Some(b) if b["content"].as_array().is_some_and(Vec::is_empty) => {
                problems.insert("comment".into(), json!("Comment body can not be empty!"));
            }
            _ => {}
        }
        if let Some(v) = visibility
            && !matches!(
                v.get("type").and_then(Value::as_str),
                Some("role" | "group")
            )
        {
            problems.insert(
                "visibility".into(),
                json!("Visibility type must be 'role' or 'group'."),
            );
        }
        (!problems.is_empty()).then(|| field_errors(problems))
    }
}

async fn handle(
    State(f): State<FakeJira>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let query: BTreeMap<String, String> = reqwest::Url::parse(&format!("http://fake{uri}"))
        .map(|u| u.query_pairs().into_owned().collect())
        .unwrap_or_default();
    let mut world = f.world.lock().unwrap();
    world.hits.push((method.to_string(), path.clone()));
    if let Some((count, secs)) = world.rate_limited {
        world.rate_limited = (count > 1).then_some((count - 1, secs));
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", secs.to_string())],
            Json(json!({"errorMessages": ["Rate limit exceeded."], "errors": {}})),
        )
            .into_response();
    }
    let Some(who) = who(&world, &headers) else {
        return unauthenticated();
    };
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                return bad_request(&format!("Unexpected character in the request body: {e}"));
            }
        }
    };
    world.received.push(Request {
        method: method.to_string(),
        path: path.clone(),
        who: who.clone(),
        query: query.clone(),
        body: body.clone(),
    });
    let segments: Vec<String> = path
        .trim_start_matches("/rest/api/3/")
        .split('/')
        .map(percent_decode)
        .collect();
    let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
    if !path.starts_with("/rest/api/3/") {
        return errors(
            StatusCode::NOT_FOUND,
            &[&format!("null for uri: {}{path}", f.base_url)],
            json!({}),
        );
    }
    let base = f.base_url.clone();
    let w = &mut *world;
    match (method.as_str(), segments.as_slice()) {
        ("GET", ["myself"]) => {
            let a = &w.accounts[&who];
            Json(json!({
                "self": format!("{base}/rest/api/3/user?accountId={}", a.account_id),
                "accountId": a.account_id, "accountType": "atlassian",
                "emailAddress": a.email, "displayName": a.display_name,
                "active": true, "timeZone": "Europe/Paris", "locale": "en_US",
            }))
            .into_response()
        }
        ("GET", ["search"]) => errors(
            StatusCode::GONE,
            &[
                "The requested API has been removed. Please migrate to the /rest/api/3/search/jql API.",
            ],
            json!({}),
        ),
        ("GET", ["search", "jql"]) => search(w, &base, &who, &query),
        ("POST", ["issue"]) => create_issue(w, &base, &body),
        ("GET", ["issue", key]) => match w.find_issue(key) {
            Some(key) => {
                let issue = &w.issues[&key];
                let mut out = w.render(&base, issue, query.get("fields").map(String::as_str));
                if query
                    .get("expand")
                    .is_some_and(|e| e.split(',').any(|x| x.trim() == "transitions"))
                {
                    out["transitions"] =
                        json!(w.transitions_for(issue.fields["status"]["name"].as_str().unwrap()));
                }
                Json(out).into_response()
            }
            None => issue_not_found(),
        },
        ("PUT", ["issue", key]) => edit_issue(w, &base, key, &query, &body),
        ("DELETE", ["issue", key]) => delete_issue(w, &who, key, &query),
        ("GET", ["issue", key, "comment"]) => get_comments(w, key, &query),
        ("POST", ["issue", key, "comment"]) => {
            let Some(key) = w.find_issue(key) else {
                return issue_not_found();
            };
            if let Some(refused) = World::check_comment(body.get("body"), body.get("visibility")) {
                return refused;
            }
            let issue_id = w.issues[&key].id;
            let comment =
                w.new_comment(&base, issue_id, &who, &body["body"], body.get("visibility"));
            let issue = w.issues.get_mut(&key).unwrap();
            issue
                .fields
                .insert("updated".into(), comment["created"].clone());
            issue.comments.push(comment.clone());
            (StatusCode::CREATED, Json(comment)).into_response()
        }
        ("GET", ["issue", key, "transitions"]) => match w.find_issue(key) {
            Some(key) => {
                let status = w.issues[&key].fields["status"]["name"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                let mut list = w.transitions_for(&status);
                if let Some(only) = query.get("transitionId") {
                    list.retain(|t| t["id"] == only.as_str());
                }
                Json(json!({"expand": "transitions", "transitions": list})).into_response()
            }
            None => issue_not_found(),
        },
        ("POST", ["issue", key, "transitions"]) => transition_issue(w, &base, &who, key, &body),
        ("GET", ["project", key]) => match w.find_project(key) {
            Some(project) => Json(project.clone()).into_response(),
            None => errors(
                StatusCode::NOT_FOUND,
                &[&format!("No project could be found with key '{key}'.")],
                json!({}),
            ),
        },
        _ => errors(
            StatusCode::NOT_FOUND,
            &[&format!("null for uri: {base}{path}")],
            json!({}),
        ),
    }
}

/// The account whose Basic credential (email:token) was sent.
fn who(world: &World, headers: &HeaderMap) -> Option<String> {
    let basic = headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Basic ")?;
    let decoded = String::from_utf8(STANDARD.decode(basic).ok()?).ok()?;
    let (email, token) = decoded.split_once(':')?;
    let account = world.accounts.get(email)?;
    (account.token == token).then(|| email.to_owned())
}

// ---------------------------------------------------------------- search

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Text(String),
    Op(String),
    Open,
    Close,
    Comma,
}

fn tokenize(jql: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = jql.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' | '\n' => i += 1,
            '(' => {
                out.push(Token::Open);
                i += 1;
            }
            ')' => {
                out.push(Token::Close);
                i += 1;
            }
            ',' => {
                out.push(Token::Comma);
                i += 1;
            }
            '"' | '\'' => {
                let end = chars[i + 1..]
                    .iter()
                    .position(|x| *x == c)
                    .ok_or_else(|| format!("Error in the JQL Query: The quoted string starting at character {i} is not terminated."))?;
                out.push(Token::Text(chars[i + 1..i + 1 + end].iter().collect()));
                i += end + 2;
            }
            '=' | '~' => {
                out.push(Token::Op(c.to_string()));
                i += 1;
            }
            '!' if chars.get(i + 1).is_some_and(|n| *n == '=' || *n == '~') => {
                out.push(Token::Op(format!("!{}", chars[i + 1])));
                i += 2;
            }
            _ => {
                let start = i;
                while i < chars.len() && !" \t\n(),=~!\"'".contains(chars[i]) {
                    i += 1;
                }
                if i == start {
                    return Err(format!(
                        "Error in the JQL Query: The character '{c}' is a reserved JQL character."
                    ));
                }
                let mut word: String = chars[start..i].iter().collect();
                // currentUser()
                if chars.get(i) == Some(&'(') && chars.get(i + 1) == Some(&')') {
                    word.push_str("()");
                    i += 2;
                }
                out.push(Token::Word(word));
            }
        }
    }
    Ok(out)
}

#[derive(Debug)]
enum Clause {
    /// field, operator (=, !=, ~, !~, in, not in, is, is not), values
    Compare(String, String, Vec<String>),
}

struct Query {
    clauses: Vec<Clause>,
    order: Option<(String, bool)>,
}

const JQL_FIELDS: &[&str] = &[
    "project",
    "key",
    "issuekey",
    "id",
    "status",
    "issuetype",
    "type",
    "assignee",
    "reporter",
    "labels",
    "priority",
    "parent",
    "summary",
    "text",
];

fn parse_jql(jql: &str) -> Result<Query, String> {
    let tokens = tokenize(jql)?;
    let is_word =
        |t: Option<&Token>, w: &str| matches!(t, Some(Token::Word(x)) if x.eq_ignore_ascii_case(w));
    let value = |t: Option<&Token>| match t {
        Some(Token::Word(w)) | Some(Token::Text(w)) => Some(w.clone()),
        _ => None,
    };
    let mut clauses = Vec::new();
    let mut order = None;
    let mut i = 0;
    let expected = |at: usize| {
        format!(
            "Error in the JQL Query: Expecting a field name, an operator or a value at token {at}."
        )
    };
    while i < tokens.len() {
        if is_word(tokens.get(i), "order") && is_word(tokens.get(i + 1), "by") {
            let field = value(tokens.get(i + 2)).ok_or_else(|| expected(i + 2))?;
            let descending = is_word(tokens.get(i + 3), "desc");
            let consumed = if descending || is_word(tokens.get(i + 3), "asc") {
                4
            } else {
                3
            };
            if i + consumed != tokens.len() {
                return Err(expected(i + consumed));
            }
            order = Some((field.to_ascii_lowercase(), descending));
            break;
        }
        if !clauses.is_empty() {
            if is_word(tokens.get(i), "or") {
                return Err("Error in the JQL Query: this fake Jira supports AND only.".into());
            }
            if !is_word(tokens.get(i), "and") {
                return Err(expected(i));
            }
            i += 1;
        }
        let field = match tokens.get(i) {
            Some(Token::Word(w)) | Some(Token::Text(w)) => w.to_ascii_lowercase(),
            _ => return Err(expected(i)),
        };
        if !JQL_FIELDS.contains(&field.as_str()) {
            let original = value(tokens.get(i)).unwrap_or_default();
            return Err(format!(
                "Field '{original}' does not exist or you do not have permission to view it."
            ));
        }
        i += 1;
        let (op, values) = match tokens.get(i) {
            Some(Token::Op(op)) => {
                let v = value(tokens.get(i + 1)).ok_or_else(|| expected(i + 1))?;
                i += 2;
                (op.clone(), vec![v])
            }
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("is") => {
                let not = is_word(tokens.get(i + 1), "not");
                let at = if not { i + 2 } else { i + 1 };
                if !(is_word(tokens.get(at), "empty") || is_word(tokens.get(at), "null")) {
                    return Err(expected(at));
                }
                i = at + 1;
                ((if not { "is not" } else { "is" }).to_owned(), vec![])
            }
            Some(Token::Word(w))
                if w.eq_ignore_ascii_case("in") || w.eq_ignore_ascii_case("not") =>
            {
                let not = w.eq_ignore_ascii_case("not");
                if not && !is_word(tokens.get(i + 1), "in") {
                    return Err(expected(i + 1));
                }
                i += if not { 2 } else { 1 };
                if tokens.get(i) != Some(&Token::Open) {
                    return Err(expected(i));
                }
                i += 1;
                let mut values = Vec::new();
                loop {
                    values.push(value(tokens.get(i)).ok_or_else(|| expected(i))?);
                    i += 1;
                    match tokens.get(i) {
                        Some(Token::Comma) => i += 1,
                        Some(Token::Close) => {
                            i += 1;
                            break;
                        }
                        _ => return Err(expected(i)),
                    }
                }
                ((if not { "not in" } else { "in" }).to_owned(), values)
            }
            _ => return Err(expected(i)),
        };
        clauses.push(Clause::Compare(field, op, values));
    }
    Ok(Query { clauses, order })
}

impl World {
    /// The strings an issue's field matches against.
    fn jql_values(&self, issue: &Issue, field: &str, who: &str) -> Vec<String> {
        let f = &issue.fields;
        let user = |v: &Value| -> Vec<String> {
            match v.get("accountId").and_then(Value::as_str) {
                Some(id) => {
                    let mut out = vec![id.to_owned()];
                    if let Some(e) = v.get("emailAddress").and_then(Value::as_str) {
                        out.push(e.to_owned());
                        if e == who {
                            out.push("currentuser()".into());
                        }
                    }
                    out
                }
                None => vec![],
            }
        };
        match field {
            "project" => vec![
                f["project"]["key"].as_str().unwrap_or("").to_owned(),
                f["project"]["id"].as_str().unwrap_or("").to_owned(),
                f["project"]["name"].as_str().unwrap_or("").to_owned(),
            ],
            "key" | "issuekey" | "id" => vec![issue.key.clone(), issue.id.to_string()],
            "status" => vec![f["status"]["name"].as_str().unwrap_or("").to_owned()],
            "issuetype" | "type" => vec![f["issuetype"]["name"].as_str().unwrap_or("").to_owned()],
            "assignee" => user(&f["assignee"]),
            "reporter" => user(&f["reporter"]),
            "labels" => f["labels"]
                .as_array()
                .map(|l| {
                    l.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            "priority" => vec![f["priority"]["name"].as_str().unwrap_or("").to_owned()],
            "parent" => f
                .get("parent")
                .and_then(|p| p.get("key"))
                .and_then(Value::as_str)
                .map(|k| vec![k.to_owned()])
                .unwrap_or_default(),
            "summary" => vec![f["summary"].as_str().unwrap_or("").to_owned()],
            "text" => vec![format!(
                "{} {} {}",
                f["summary"].as_str().unwrap_or(""),
                adf_text(&f["description"]),
                issue
                    .comments
                    .iter()
                    .map(|c| adf_text(&c["body"]))
                    .collect::<Vec<_>>()
                    .join(" ")
            )],
            _ => vec![],
        }
    }

    fn matches(&self, issue: &Issue, clause: &Clause, who: &str) -> bool {
        let Clause::Compare(field, op, values) = clause;
        let have = self.jql_values(issue, field, who);
        let eq = |v: &String| have.iter().any(|h| h.eq_ignore_ascii_case(v));
        let contains = |v: &String| {
            have.iter()
                .any(|h| h.to_lowercase().contains(&v.to_lowercase()))
        };
        match op.as_str() {
            "=" => values.iter().any(eq),
            "!=" => !values.iter().any(eq),
            "~" => values.iter().any(contains),
            "!~" => !values.iter().any(contains),
            "in" => values.iter().any(eq),
            "not in" => !values.iter().any(eq),
            "is" => have.iter().all(String::is_empty),
            "is not" => have.iter().any(|h| !h.is_empty()),
            _ => false,
        }
    }
}

fn issue_order(a: &Issue, b: &Issue, field: &str) -> Ordering {
    let key_parts = |i: &Issue| {
        let (p, n) = i.key.rsplit_once('-').unwrap_or((&i.key, "0"));
        (p.to_owned(), n.parse::<u64>().unwrap_or(0))
    };
    match field {
        "key" | "issuekey" | "id" => key_parts(a).cmp(&key_parts(b)),
        "summary" => a.fields["summary"]
            .as_str()
            .cmp(&b.fields["summary"].as_str()),
        "updated" => a.fields["updated"]
            .as_str()
            .cmp(&b.fields["updated"].as_str())
            .then(a.seq.cmp(&b.seq)),
        _ => a.seq.cmp(&b.seq),
    }
}

/// Page tokens are opaque to the caller: the query and the offset.
fn page_token(jql: &str, at: usize) -> String {
    URL_SAFE_NO_PAD.encode(json!({"jql": jql, "at": at}).to_string())
}

fn read_page_token(token: &str, jql: &str) -> Option<usize> {
    let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    (v["jql"] == jql)
        .then(|| v["at"].as_u64())?
        .map(|n| n as usize)
}

fn search(w: &World, base: &str, who: &str, query: &BTreeMap<String, String>) -> Response {
    let jql = query.get("jql").cloned().unwrap_or_default();
    let parsed = match parse_jql(&jql) {
        Ok(q) => q,
        Err(message) => return bad_request(&message),
    };
    if parsed.clauses.is_empty() {
        return bad_request(
            "Unbounded JQL queries are not allowed here. Please add a search restriction to your query.",
        );
    }
    for clause in &parsed.clauses {
        let Clause::Compare(field, op, values) = clause;
        if field == "project" && matches!(op.as_str(), "=" | "in") {
            for v in values {
                if w.find_project(v).is_none()
                    && !w.projects.values().any(|p| p["name"].as_str() == Some(v))
                {
                    return bad_request(&format!(
                        "The value '{v}' does not exist for the field 'project'."
                    ));
                }
            }
        }
    }
    let max_results = match query.get("maxResults").map(|m| m.parse::<usize>()) {
        None => 50,
        Some(Ok(n)) => n.clamp(1, 5000),
        Some(Err(_)) => {
            return bad_request("The maxResults parameter must be a number.");
        }
    };
    let start = match query.get("nextPageToken") {
        None => 0,
        Some(token) => match read_page_token(token, &jql) {
            Some(at) => at,
            None => return bad_request("The provided next page token is invalid or expired."),
        },
    };
    let mut found: Vec<&Issue> = w
        .issues
        .values()
        .filter(|i| parsed.clauses.iter().all(|c| w.matches(i, c, who)))
        .collect();
    let (field, descending) = parsed
        .order
        .clone()
        .unwrap_or_else(|| ("created".into(), true));
    found.sort_by(|a, b| {
        let o = issue_order(a, b, &field);
        if descending { o.reverse() } else { o }
    });
    let page: Vec<Value> = found
        .iter()
        .skip(start)
        .take(max_results)
        .map(|i| {
            w.render(
                base,
                i,
                Some(query.get("fields").map(String::as_str).unwrap_or("id")),
            )
        })
        .collect();
    let end = start + page.len();
    let mut answer = json!({"issues": page, "isLast": end >= found.len()});
    if end < found.len() {
        answer["nextPageToken"] = json!(page_token(&jql, end));
    }
    Json(answer).into_response()
}

// ---------------------------------------------------------------- issues

fn create_issue(w: &mut World, base: &str, body: &Value) -> Response {
    let Some(fields) = body.get("fields").and_then(Value::as_object) else {
        return bad_request("Issue fields are required (fields).");
    };
    let mut problems = Map::new();
    let project = fields
        .get("project")
        .and_then(|p| p.get("key").or_else(|| p.get("id")))
        .and_then(Value::as_str)
        .and_then(|k| w.find_project(k))
        .map(|p| p["key"].as_str().unwrap().to_owned());
    if project.is_none() {
        problems.insert("project".into(), json!("Specify a valid project ID or key"));
    }
    let issuetype = fields.get("issuetype").and_then(|t| {
        let id = t.get("id").and_then(Value::as_str);
        let name = t.get("name").and_then(Value::as_str);
        ISSUE_TYPES
            .iter()
            .find(|(i, n, _)| Some(*i) == id || Some(*n) == name)
    });
    if issuetype.is_none() {
        problems.insert("issuetype".into(), json!("Specify an issue type"));
    }
    let mut stored = Map::new();
    for (name, value) in fields {
        match name.as_str() {
            "project" | "issuetype" => {}
            "parent" => {
                let key = value
                    .get("key")
                    .or_else(|| value.get("id"))
                    .and_then(Value::as_str)
                    .and_then(|k| w.find_issue(k));
                match key {
                    Some(k) => {
                        stored.insert(
                            "parent".into(),
                            json!({"key": k, "id": w.issues[&k].id.to_string()}),
                        );
                    }
                    None => {
                        problems
                            .insert("parent".into(), json!("Could not find issue by id or key."));
                    }
                }
            }
            _ => match w.field_value(name, value) {
                Ok(v) => {
                    stored.insert(name.clone(), v);
                }
                Err(m) => {
                    problems.insert(name.clone(), json!(m));
                }
            },
        }
    }
    if !fields.contains_key("summary") {
        problems.insert(
            "summary".into(),
            json!("You must specify a summary of the issue."),
        );
    }
    if let Some((_, _, true)) = issuetype
        && !stored.contains_key("parent")
        && !problems.contains_key("parent")
    {
        problems.insert("parent".into(), json!("A sub-task needs a parent issue."));
    }
    if let Some(update) = body.get("update").and_then(Value::as_object)
        && !update.is_empty()
    {
        for name in update.keys() {
            problems.insert(
                name.clone(),
                json!(format!(
                    "Field '{name}' cannot be set. It is not on the appropriate screen, or unknown."
                )),
            );
        }
    }
    if !problems.is_empty() {
        return field_errors(problems);
    }
    let (type_id, type_name, subtask) = issuetype.copied().unwrap();
    stored.insert(
        "issuetype".into(),
        json!({"id": type_id, "name": type_name, "subtask": subtask}),
    );
    let project = project.unwrap();
    let lead = w.projects[&project]["lead"].clone();
    stored.entry("reporter").or_insert(lead);
    let key = w.file_issue(base, &project, stored);
    let id = w.issues[&key].id;
    (
        StatusCode::CREATED,
        Json(json!({"id": id.to_string(), "key": key, "self": format!("{base}/rest/api/3/issue/{id}")})),
    )
        .into_response()
}

fn edit_issue(
    w: &mut World,
    base: &str,
    key: &str,
    query: &BTreeMap<String, String>,
    body: &Value,
) -> Response {
    let Some(key) = w.find_issue(key) else {
        return issue_not_found();
    };
    let fields = body
        .get("fields")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let update = body
        .get("update")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if fields.is_empty() && update.is_empty() {
        return bad_request("The request body is missing: give fields or update.");
    }
    let mut problems = Map::new();
    let mut changes: Vec<(String, Value)> = Vec::new();
    for (name, value) in &fields {
        if update.contains_key(name) {
            problems.insert(
                name.clone(),
                json!(format!(
                    "Field '{name}' cannot be set in both fields and update."
                )),
            );
            continue;
        }
        if !EDITABLE.contains(&name.as_str()) {
            problems.insert(
                name.clone(),
                json!(format!(
                    "Field '{name}' cannot be set. It is not on the appropriate screen, or unknown."
                )),
            );
            continue;
        }
        match w.field_value(name, value) {
            Ok(v) => changes.push((name.clone(), v)),
            Err(m) => {
                problems.insert(name.clone(), json!(m));
            }
        }
    }
    let current = w.issues[&key].fields.clone();
    for (name, operations) in &update {
        if !EDITABLE.contains(&name.as_str()) {
            problems.insert(
                name.clone(),
                json!(format!(
                    "Field '{name}' cannot be set. It is not on the appropriate screen, or unknown."
                )),
            );
            continue;
        }
        let Some(operations) = operations.as_array() else {
            problems.insert(name.clone(), json!("Operations must be a list."));
            continue;
        };
        let mut value = changes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| current.get(name).cloned().unwrap_or(Value::Null));
        for op in operations {
            let Some((verb, operand)) = op.as_object().and_then(|o| o.iter().next()) else {
                problems.insert(
                    name.clone(),
                    json!("Each operation is {\"set\"|\"add\"|\"remove\": value}."),
                );
                continue;
            };
            match (verb.as_str(), name.as_str()) {
                ("set", _) => match w.field_value(name, operand) {
                    Ok(v) => value = v,
                    Err(m) => {
                        problems.insert(name.clone(), json!(m));
                    }
                },
                ("add", "labels") => {
                    let mut labels = value.as_array().cloned().unwrap_or_default();
                    if !labels.contains(operand) {
                        labels.push(operand.clone());
                    }
                    match w.field_value(name, &json!(labels)) {
                        Ok(v) => value = v,
                        Err(m) => {
                            problems.insert(name.clone(), json!(m));
                        }
                    }
                }
                ("remove", "labels") => {
                    let mut labels = value.as_array().cloned().unwrap_or_default();
                    labels.retain(|l| l != operand);
                    value = json!(labels);
                }
                (verb, _) => {
                    problems.insert(
                        name.clone(),
                        json!(format!(
                            "Operation '{verb}' is not supported for field '{name}'."
                        )),
                    );
                }
            }
        }
        changes.retain(|(n, _)| n != name);
        changes.push((name.clone(), value));
    }
    if !problems.is_empty() {
        return field_errors(problems);
    }
    let seq = w.tick();
    let issue = w.issues.get_mut(&key).unwrap();
    for (name, value) in changes {
        issue.fields.insert(name, value);
    }
    issue.fields.insert("updated".into(), json!(timestamp(seq)));
    if query.get("returnIssue").map(String::as_str) == Some("true") {
        let issue = w.issues[&key].clone();
        return Json(w.render(base, &issue, None)).into_response();
    }
    StatusCode::NO_CONTENT.into_response()
}

fn delete_issue(w: &mut World, who: &str, key: &str, query: &BTreeMap<String, String>) -> Response {
    let Some(key) = w.find_issue(key) else {
        return issue_not_found();
    };
    if !w.accounts[who].can_delete {
        return errors(
            StatusCode::FORBIDDEN,
            &["You do not have permission to delete issues in this project."],
            json!({}),
        );
    }
    let with_subtasks = match query.get("deleteSubtasks").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return bad_request(&format!(
                "deleteSubtasks must be 'true' or 'false', not '{other}'."
            ));
        }
    };
    let subtasks = w.subtasks(&key);
    if !subtasks.is_empty() && !with_subtasks {
        return bad_request(&format!(
            "The issue '{key}' has subtasks ({}). To delete it, set deleteSubtasks to true.",
            subtasks.join(", ")
        ));
    }
    for subtask in subtasks {
        w.issues.remove(&subtask);
    }
    w.issues.remove(&key);
    StatusCode::NO_CONTENT.into_response()
}

fn get_comments(w: &World, key: &str, query: &BTreeMap<String, String>) -> Response {
    let Some(key) = w.find_issue(key) else {
        return issue_not_found();
    };
    let number = |name: &str, default: usize| match query.get(name) {
        None => Ok(default),
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| format!("The {name} parameter must be a number.")),
    };
    let start_at = match number("startAt", 0) {
        Ok(n) => n,
        Err(m) => return bad_request(&m),
    };
    let max_results = match number("maxResults", 100) {
        Ok(n) => n.max(1),
        Err(m) => return bad_request(&m),
    };
    let mut comments = w.issues[&key].comments.clone();
    match query.get("orderBy").map(String::as_str) {
        None | Some("created") | Some("+created") => {}
        Some("-created") => comments.reverse(),
        Some(other) => {
            return bad_request(&format!(
                "orderBy '{other}' is not supported: use created, +created or -created."
            ));
        }
    }
    let total = comments.len();
    let page: Vec<Value> = comments
        .into_iter()
        .skip(start_at)
        .take(max_results)
        .collect();
    Json(json!({"comments": page, "startAt": start_at, "maxResults": max_results, "total": total}))
        .into_response()
}

fn transition_issue(w: &mut World, base: &str, who: &str, key: &str, body: &Value) -> Response {
    let Some(key) = w.find_issue(key) else {
        return issue_not_found();
    };
    let Some(id) = body
        .get("transition")
        .and_then(|t| t.get("id"))
        .and_then(|i| {
            i.as_str()
                .map(str::to_owned)
                .or_else(|| i.as_u64().map(|n| n.to_string()))
        })
    else {
        return bad_request("Missing 'transition' identifier");
    };
    let status = w.issues[&key].fields["status"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let Some(&(_, _, _, to, screen)) = TRANSITIONS.iter().find(|t| t.0 == id && t.2 == status)
    else {
        return bad_request(&format!(
            "Transition id '{id}' is not valid for this issue."
        ));
    };
    let mut problems = Map::new();
    let mut resolution = None;
    if let Some(fields) = body.get("fields").and_then(Value::as_object) {
        for (name, value) in fields {
            if name == "resolution" && screen {
                let wanted_id = value.get("id").and_then(Value::as_str);
                let wanted_name = value.get("name").and_then(Value::as_str);
                match RESOLUTIONS
                    .iter()
                    .find(|(i, n)| Some(*i) == wanted_id || Some(*n) == wanted_name)
                {
                    Some((i, n)) => resolution = Some(json!({"id": i, "name": n})),
                    None => {
                        problems.insert(name.clone(), json!("Specify a valid resolution."));
                    }
                }
            } else {
                problems.insert(
                    name.clone(),
                    json!(format!("Field '{name}' cannot be set. It is not on the appropriate screen, or unknown.")),
                );
            }
        }
    }
    let mut comments = Vec::new();
    if let Some(update) = body.get("update").and_then(Value::as_object) {
        for (name, operations) in update {
            if name != "comment" {
                problems.insert(
                    name.clone(),
                    json!(format!("Field '{name}' cannot be set. It is not on the appropriate screen, or unknown.")),
                );
                continue;
            }
            for op in operations.as_array().into_iter().flatten() {
                match op.get("add") {
                    Some(add) => match World::check_comment(add.get("body"), add.get("visibility"))
                    {
                        None => comments.push(add.clone()),
                        Some(refused) => return refused,
                    },
                    None => {
                        problems
                            .insert("comment".into(), json!("Comments can only be added here."));
                    }
                }
            }
        }
    }
    if !problems.is_empty() {
        return field_errors(problems);
    }
    let issue_id = w.issues[&key].id;
    let made: Vec<Value> = comments
        .iter()
        .map(|c| w.new_comment(base, issue_id, who, &c["body"], c.get("visibility")))
        .collect();
    let seq = w.tick();
    let issue = w.issues.get_mut(&key).unwrap();
    issue.fields.insert("status".into(), status_json(to));
    if to == "Done" {
        issue.fields.insert(
            "resolution".into(),
            resolution.unwrap_or_else(|| json!({"id": "10000", "name": "Done"})),
        );
    } else {
        issue.fields.insert("resolution".into(), Value::Null);
    }
    issue.comments.extend(made);
    issue.fields.insert("updated".into(), json!(timestamp(seq)));
    StatusCode::NO_CONTENT.into_response()
}
