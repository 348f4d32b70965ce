//! A local Windmill REST API that follows `../shared/specs/windmill/openapi-subset.yaml`
//! (all paths under `/api`) for the operations `catalogs/windmill.yaml` uses:
//! scripts (list, get by path, create/new version with `parent_hash`, archive),
//! flows (list, get, create, update — the `value` checked against the OpenFlow
//! shapes of `openflow.yaml`), jobs (run script/flow by path with the body as
//! the args object, list, get, completed result), schedules (list, get,
//! create, update, setenabled, delete — 6-field cron, IANA timezone, an
//! existing target). Windmill's conventions: bearer API tokens, plain-text
//! errors (`Not found: …`, `Bad request: …`), text/plain answers for
//! creations and runs (a hash, a path, a job id), `page`/`per_page` paging.
//! Jobs are queued by runs and finish on the test's command (no code runs
//! here). It records every authenticated request (method, raw path, query,
//! who, body), and can be told to answer 429 with `Retry-After`.
#![allow(dead_code)]

#[path = "fake_http.rs"]
#[allow(clippy::duplicate_mod)] // each fake brings the kernel; a test may use several
mod fake_http;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    /// The path as it arrived (not percent-decoded).
    pub path: String,
    pub query: String,
    /// The username the bearer token belongs to.
    pub who: String,
    pub body: Value,
}

#[derive(Debug, Clone)]
struct User {
    username: String,
    email: String,
}

#[derive(Default)]
struct World {
    /// API token → user.
    tokens: HashMap<String, User>,
    /// path → versions, oldest first (the last is the deployed one).
    scripts: BTreeMap<String, Vec<Value>>,
    flows: BTreeMap<String, Value>,
    schedules: BTreeMap<String, Value>,
    /// Jobs in the order they were pushed.
    jobs: Vec<Value>,
    received: Vec<Received>,
    /// (requests still to refuse, Retry-After seconds).
    throttle: Option<(u32, u64)>,
    /// How many requests were answered 429.
    throttled: u32,
    next_version: u64,
}

#[derive(Clone)]
pub struct FakeWindmillApi {
    /// `http://127.0.0.1:port` (the API is under `/api`).
    pub base_url: String,
    pub workspace: String,
    world: Arc<Mutex<World>>,
}

fn text(status: StatusCode, message: impl Into<String>) -> Response {
    (status, message.into()).into_response()
}

fn bad_request(message: impl std::fmt::Display) -> Response {
    text(StatusCode::BAD_REQUEST, format!("Bad request: {message}"))
}

fn not_found(message: impl std::fmt::Display) -> Response {
    text(StatusCode::NOT_FOUND, format!("Not found: {message}"))
}

fn unauthorized() -> Response {
    text(
        StatusCode::UNAUTHORIZED,
        "Not authorized: Could not validate credentials",
    )
}

fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

fn new_uuid() -> String {
    let h = hex::encode(rand::random::<[u8; 16]>());
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

const SCRIPT_LANGS: &[&str] = &[
    "python3",
    "deno",
    "go",
    "bash",
    "powershell",
    "postgresql",
    "mysql",
    "bigquery",
    "snowflake",
    "mssql",
    "oracledb",
    "graphql",
    "nativets",
    "bun",
    "php",
    "rust",
    "ansible",
    "csharp",
    "nu",
    "java",
    "ruby",
    "rlang",
    "duckdb",
    "bunnative",
];

/// RawScript.language (openflow.yaml): the script languages without bunnative.
const RAWSCRIPT_LANGS: &[&str] = &[
    "deno",
    "bun",
    "python3",
    "go",
    "bash",
    "powershell",
    "postgresql",
    "mysql",
    "bigquery",
    "snowflake",
    "mssql",
    "oracledb",
    "graphql",
    "nativets",
    "php",
    "rust",
    "ansible",
    "csharp",
    "nu",
    "java",
    "ruby",
    "rlang",
    "duckdb",
];

/// A Windmill item path: `u/<user>/<name…>` or `f/<folder>/<name…>`.
fn check_item_path(path: &str) -> Result<(), String> {
    let parts: Vec<&str> = path.split('/').collect();
    let ok = parts.len() >= 3
        && matches!(parts[0], "u" | "f")
        && parts[1..].iter().all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid path '{path}': it must be u/<user>/<name> or f/<folder>/<name>"
        ))
    }
}

/// Windmill cron: exactly 6 fields, seconds first.
fn check_cron(expression: &str) -> Result<(), String> {
    let fields = expression.split_whitespace().count();
    if fields != 6 {
        return Err(format!(
            "invalid cron '{expression}': expected 6 fields (seconds minutes hours day-of-month month day-of-week), got {fields}"
        ));
    }
    expression
        .parse::<croner::Cron>()
        .map(|_| ())
        .map_err(|e| format!("invalid cron '{expression}': {e}"))
}

/// IANA timezone names: `UTC`, `Etc/…`, or `<Area>/<Location>`.
fn check_timezone(tz: &str) -> Result<(), String> {
    const AREAS: &[&str] = &[
        "Africa",
        "America",
        "Antarctica",
        "Arctic",
        "Asia",
        "Atlantic",
        "Australia",
        "Europe",
        "Indian",
        "Pacific",
        "Etc",
    ];
    let valid = tz == "UTC"
        || tz.split_once('/').is_some_and(|(area, rest)| {
            AREAS.contains(&area)
                && !rest.is_empty()
                && rest
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+' | '/'))
                && rest.chars().next().is_some_and(|c| c.is_ascii_uppercase())
        });
    if valid {
        Ok(())
    } else {
        Err(format!("invalid timezone '{tz}': not an IANA timezone"))
    }
}

fn str_field<'a>(body: &'a Value, field: &str) -> Result<&'a str, String> {
    match body.get(field) {
        None | Some(Value::Null) => Err(format!("missing field `{field}`")),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(format!("field `{field}` must be a string")),
    }
}

// ---- OpenFlow ----------------------------------------------------------------

/// `InputTransform`: static (value), javascript (expr) or ai.
fn check_transform(t: &Value, at: &str) -> Result<(), String> {
    match t.get("type").and_then(Value::as_str) {
        Some("static") | Some("ai") => Ok(()),
        Some("javascript") => match t.get("expr") {
            Some(Value::String(_)) => Ok(()),
            _ => Err(format!("{at}: a javascript transform needs `expr`")),
        },
        Some(other) => Err(format!(
            "{at}: unknown input transform type '{other}' (static, javascript, ai)"
        )),
        None => Err(format!("{at}: an input transform needs `type`")),
    }
}

fn check_input_transforms(v: &Value, at: &str) -> Result<(), String> {
    let Some(map) = v.get("input_transforms") else {
        return Err(format!("{at}: missing `input_transforms`"));
    };
    let Some(map) = map.as_object() else {
        return Err(format!("{at}: `input_transforms` must be an object"));
    };
    for (name, t) in map {
        check_transform(t, &format!("{at}.input_transforms.{name}"))?;
    }
    Ok(())
}

fn check_modules(
    modules: Option<&Value>,
    at: &str,
    ids: &mut HashSet<String>,
) -> Result<(), String> {
    let Some(modules) = modules else {
        return Err(format!("{at}: missing `modules`"));
    };
    let Some(modules) = modules.as_array() else {
        return Err(format!("{at}: `modules` must be an array"));
    };
    for (i, module) in modules.iter().enumerate() {
        check_module(module, &format!("{at}.modules[{i}]"), ids)?;
    }
    Ok(())
}

/// `FlowModule`: `id` (unique identifier) and `value` (`FlowModuleValue`,
/// discriminated by `type`), with each type's required fields.
fn check_module(module: &Value, at: &str, ids: &mut HashSet<String>) -> Result<(), String> {
    let Some(id) = module.get("id").and_then(Value::as_str) else {
        return Err(format!("{at}: a module needs a string `id`"));
    };
    if id.is_empty()
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
    {
        return Err(format!(
            "{at}: module id '{id}' must be alphanumeric, underscore or hyphen"
        ));
    }
    if !ids.insert(id.to_owned()) {
        return Err(format!("{at}: module id '{id}' is used twice"));
    }
    let at = format!("{at} ({id})");
    let Some(value) = module.get("value").filter(|v| v.is_object()) else {
        return Err(format!("{at}: a module needs an object `value`"));
    };
    let kind = value.get("type").and_then(Value::as_str).unwrap_or("");
    match kind {
        "rawscript" => {
            str_field(value, "content").map_err(|e| format!("{at}: {e}"))?;
            let language = str_field(value, "language").map_err(|e| format!("{at}: {e}"))?;
            if !RAWSCRIPT_LANGS.contains(&language) {
                return Err(format!("{at}: unknown language '{language}'"));
            }
            check_input_transforms(value, &at)
        }
        "script" | "flow" => {
            str_field(value, "path").map_err(|e| format!("{at}: {e}"))?;
            check_input_transforms(value, &at)
        }
        "forloopflow" => {
            match value.get("iterator") {
                Some(t) => check_transform(t, &format!("{at}.iterator"))?,
                None => return Err(format!("{at}: a forloopflow needs `iterator`")),
            }
            if !value.get("skip_failures").is_some_and(Value::is_boolean) {
                return Err(format!("{at}: a forloopflow needs boolean `skip_failures`"));
            }
            check_modules(value.get("modules"), &at, ids)
        }
        "whileloopflow" => {
            if !value.get("skip_failures").is_some_and(Value::is_boolean) {
                return Err(format!(
                    "{at}: a whileloopflow needs boolean `skip_failures`"
                ));
            }
            check_modules(value.get("modules"), &at, ids)
        }
        "branchone" => {
            let Some(branches) = value.get("branches").and_then(Value::as_array) else {
                return Err(format!("{at}: a branchone needs `branches`"));
            };
            for (i, branch) in branches.iter().enumerate() {
                let bat = format!("{at}.branches[{i}]");
                if !branch.get("expr").is_some_and(Value::is_string) {
                    return Err(format!("{bat}: a branch needs `expr`"));
                }
                check_modules(branch.get("modules"), &bat, ids)?;
            }
            let Some(default) = value.get("default") else {
                return Err(format!("{at}: a branchone needs `default`"));
            };
            check_modules(Some(default), &format!("{at}.default"), ids)
        }
        "branchall" => {
            let Some(branches) = value.get("branches").and_then(Value::as_array) else {
                return Err(format!("{at}: a branchall needs `branches`"));
            };
            for (i, branch) in branches.iter().enumerate() {
                check_modules(branch.get("modules"), &format!("{at}.branches[{i}]"), ids)?;
            }
            Ok(())
        }
        "identity" => Ok(()),
        "aiagent" => {
            if !value.get("tools").is_some_and(Value::is_array) {
                return Err(format!("{at}: an aiagent needs `tools`"));
            }
            let Some(inputs) = value.get("input_transforms").and_then(Value::as_object) else {
                return Err(format!("{at}: an aiagent needs `input_transforms`"));
            };
            for field in ["provider", "user_message", "output_type"] {
                if !inputs.contains_key(field) {
                    return Err(format!("{at}: an aiagent needs input_transforms.{field}"));
                }
            }
            Ok(())
        }
        "" => Err(format!("{at}: a module value needs `type`")),
        other => Err(format!(
            "{at}: unknown module type '{other}' (rawscript, script, flow, forloopflow, whileloopflow, branchone, branchall, identity, aiagent)"
        )),
    }
}

/// `OpenFlowWPath`: path, summary, value (`FlowValue`) required; schema an object.
pub fn check_openflow(body: &Value) -> Result<(), String> {
    let path = str_field(body, "path")?;
    check_item_path(path)?;
    str_field(body, "summary")?;
    if let Some(schema) = body.get("schema")
        && !schema.is_object()
        && !schema.is_null()
    {
        return Err("`schema` must be a JSON Schema object".into());
    }
    let Some(value) = body.get("value").filter(|v| v.is_object()) else {
        return Err("missing field `value` (a FlowValue object with `modules`)".into());
    };
    let mut ids = HashSet::new();
    check_modules(value.get("modules"), "value", &mut ids)?;
    for (field, id) in [
        ("failure_module", "failure"),
        ("preprocessor_module", "preprocessor"),
    ] {
        if let Some(special) = value.get(field).filter(|v| !v.is_null()) {
            check_module(special, &format!("value.{field}"), &mut ids)?;
            if special["id"] != id {
                return Err(format!("value.{field}: its id must be '{id}'"));
            }
            if !matches!(
                special["value"]["type"].as_str(),
                Some("script" | "rawscript")
            ) {
                return Err(format!("value.{field}: only script or rawscript"));
            }
        }
    }
    Ok(())
}

/// The OpenFlow schema of `openflow.yaml` (refs resolved within it), compiled once.
fn openflow_validator() -> &'static jsonschema::Validator {
    static VALIDATOR: std::sync::OnceLock<jsonschema::Validator> = std::sync::OnceLock::new();
    VALIDATOR.get_or_init(|| {
        let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/specs/windmill/openflow.yaml");
        let text =
            std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let doc: Value = serde_yaml::from_str(&text).unwrap();
        let schema = json!({
            "$ref": "#/components/schemas/OpenFlow",
            "components": doc["components"],
        });
        jsonschema::validator_for(&schema).expect("openflow.yaml compiles")
    })
}

/// A flow body as Windmill takes it: the readable checks above first, then
/// the whole OpenFlow schema as the final word.
fn check_flow_body(body: &Value) -> Result<(), String> {
    check_openflow(body)?;
    let problems: Vec<String> = openflow_validator()
        .iter_errors(body)
        .take(3)
        .map(|e| format!("{}: {e}", e.instance_path))
        .collect();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the flow does not follow OpenFlow: {}",
            problems.join("; ")
        ))
    }
}

// ---- the fake ----------------------------------------------------------------

impl FakeWindmillApi {
    pub async fn start(workspace: &str) -> FakeWindmillApi {
        let (listener, base_url) = fake_http::listen().await;
        let fake = FakeWindmillApi {
            base_url,
            workspace: workspace.to_owned(),
            world: Arc::new(Mutex::new(World::default())),
        };
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(fake.clone());
        fake_http::serve(listener, app);
        fake
    }

    /// The base URL a catalog uses (the spec's server URL, `/api`).
    pub fn api_url(&self) -> String {
        format!("{}/api", self.base_url)
    }

    pub fn add_user(&self, username: &str, email: &str, token: &str) {
        self.world.lock().unwrap().tokens.insert(
            token.to_owned(),
            User {
                username: username.to_owned(),
                email: email.to_owned(),
            },
        );
    }

    pub fn received(&self) -> Vec<Received> {
        self.world.lock().unwrap().received.clone()
    }

    pub fn last(&self) -> Received {
        self.received().last().cloned().expect("a request")
    }

    /// The next `count` requests are answered 429 with `Retry-After: secs`.
    pub fn throttle(&self, count: u32, secs: u64) {
        self.world.lock().unwrap().throttle = Some((count, secs));
    }

    /// How many requests were answered 429 so far.
    pub fn throttled(&self) -> u32 {
        self.world.lock().unwrap().throttled
    }

    pub fn flow(&self, path: &str) -> Option<Value> {
        self.world.lock().unwrap().flows.get(path).cloned()
    }

    pub fn schedule(&self, path: &str) -> Option<Value> {
        self.world.lock().unwrap().schedules.get(path).cloned()
    }

    /// The deployed version of a script.
    pub fn script(&self, path: &str) -> Option<Value> {
        self.world
            .lock()
            .unwrap()
            .scripts
            .get(path)
            .and_then(|v| v.last().cloned())
    }

    pub fn script_versions(&self, path: &str) -> Vec<Value> {
        self.world
            .lock()
            .unwrap()
            .scripts
            .get(path)
            .cloned()
            .unwrap_or_default()
    }

    pub fn job(&self, id: &str) -> Option<Value> {
        self.world
            .lock()
            .unwrap()
            .jobs
            .iter()
            .find(|j| j["id"] == id)
            .cloned()
    }

    /// A worker picks the job up.
    pub fn start_job(&self, id: &str) {
        let mut world = self.world.lock().unwrap();
        if let Some(job) = world.jobs.iter_mut().find(|j| j["id"] == id) {
            job["running"] = json!(true);
            job["started_at"] = json!(now());
        }
    }

    /// The job finishes with `result` (a CompletedJob from now on).
    pub fn complete_job(&self, id: &str, success: bool, result: Value) {
        let mut world = self.world.lock().unwrap();
        if let Some(job) = world.jobs.iter_mut().find(|j| j["id"] == id) {
            let Value::Object(map) = job else { return };
            map.remove("running");
            map.remove("scheduled_for");
            map.insert("type".into(), json!("CompletedJob"));
            map.entry("started_at").or_insert_with(|| json!(now()));
            map.insert("completed_at".into(), json!(now()));
            map.insert("duration_ms".into(), json!(1200));
            map.insert("success".into(), json!(success));
            map.insert("is_skipped".into(), json!(false));
            map.insert("result".into(), result);
        }
    }

    fn who(&self, headers: &HeaderMap) -> Option<User> {
        let token = fake_http::bearer(headers)?;
        self.world.lock().unwrap().tokens.get(token).cloned()
    }
}

fn page_of(items: Vec<Value>, query: &HashMap<String, String>) -> Result<Vec<Value>, String> {
    let page = match query.get("page") {
        Some(p) => match p.parse::<usize>() {
            Ok(p) if p >= 1 => p,
            _ => return Err(format!("invalid page '{p}'")),
        },
        None => 1,
    };
    let per_page = match query.get("per_page") {
        Some(p) => match p.parse::<usize>() {
            Ok(p) if p >= 1 => p.min(100),
            _ => return Err(format!("invalid per_page '{p}'")),
        },
        None => 30,
    };
    Ok(items
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .collect())
}

fn bool_query(query: &HashMap<String, String>, name: &str) -> Result<Option<bool>, String> {
    match query.get(name).map(String::as_str) {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(other) => Err(format!(
            "query parameter `{name}`: '{other}' is not a boolean"
        )),
    }
}

fn json_answer(value: Value) -> Response {
    axum::Json(value).into_response()
}

async fn handle(
    State(fake): State<FakeWindmillApi>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let raw_path = uri.path().to_owned();
    let Some(rest) = raw_path.strip_prefix("/api/w/") else {
        return text(StatusCode::NOT_FOUND, "Not Found");
    };
    let Some((ws, route)) = rest.split_once('/') else {
        return text(StatusCode::NOT_FOUND, "Not Found");
    };
    let ws = percent_decode(ws);
    let route = route.to_owned();
    {
        let mut world = fake.world.lock().unwrap();
        if let Some((left, secs)) = world.throttle
            && left > 0
        {
            world.throttled += 1;
            world.throttle = if left > 1 {
                Some((left - 1, secs))
            } else {
                None
            };
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", secs.to_string())],
                "Too many requests",
            )
                .into_response();
        }
    }
    let Some(user) = fake.who(&headers) else {
        return unauthorized();
    };
    let parsed_body: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                return bad_request(format!("the body is not JSON: {e}"));
            }
        }
    };
    let query_string = uri.query().unwrap_or("").to_owned();
    let query: HashMap<String, String> = reqwest::Url::parse(&format!("http://x/?{query_string}"))
        .map(|u| u.query_pairs().into_owned().collect())
        .unwrap_or_default();
    fake.world.lock().unwrap().received.push(Received {
        method: method.to_string(),
        path: raw_path.clone(),
        query: query_string,
        who: user.username.clone(),
        body: parsed_body.clone(),
    });
    if ws != fake.workspace {
        return text(
            StatusCode::UNAUTHORIZED,
            format!(
                "Not authorized: {} is not a member of workspace {ws}",
                user.username
            ),
        );
    }
    let ctx = Ctx {
        fake: &fake,
        user: &user,
        query: &query,
        body: parsed_body,
    };
    let is = |m: &Method| method == *m;
    if let Some(p) = route
        .strip_prefix("scripts/get/p/")
        .filter(|_| is(&Method::GET))
    {
        return get_script(&ctx, &percent_decode(p));
    }
    if let Some(p) = route
        .strip_prefix("scripts/archive/p/")
        .filter(|_| is(&Method::POST))
    {
        return archive_script(&ctx, &percent_decode(p));
    }
    if let Some(p) = route
        .strip_prefix("flows/get/")
        .filter(|_| is(&Method::GET))
    {
        return get_flow(&ctx, &percent_decode(p));
    }
    if let Some(p) = route
        .strip_prefix("flows/update/")
        .filter(|_| is(&Method::POST))
    {
        return update_flow(&ctx, &percent_decode(p));
    }
    if let Some(p) = route
        .strip_prefix("jobs/run/p/")
        .filter(|_| is(&Method::POST))
    {
        return run(&ctx, &percent_decode(p), false);
    }
    if let Some(p) = route
        .strip_prefix("jobs/run/f/")
        .filter(|_| is(&Method::POST))
    {
        return run(&ctx, &percent_decode(p), true);
    }
    if let Some(id) = route
        .strip_prefix("jobs_u/get/")
        .filter(|_| is(&Method::GET))
    {
        return get_job(&ctx, &percent_decode(id));
    }
    if let Some(id) = route
        .strip_prefix("jobs_u/completed/get_result/")
        .filter(|_| is(&Method::GET))
    {
        return get_result(&ctx, &percent_decode(id));
    }
    if let Some(p) = route
        .strip_prefix("schedules/get/")
        .filter(|_| is(&Method::GET))
    {
        return get_schedule(&ctx, &percent_decode(p));
    }
    if let Some(p) = route
        .strip_prefix("schedules/update/")
        .filter(|_| is(&Method::POST))
    {
        return update_schedule(&ctx, &percent_decode(p));
    }
    if let Some(p) = route
        .strip_prefix("schedules/setenabled/")
        .filter(|_| is(&Method::POST))
    {
        return set_enabled(&ctx, &percent_decode(p));
    }
    if let Some(p) = route
        .strip_prefix("schedules/delete/")
        .filter(|_| is(&Method::DELETE))
    {
        return delete_schedule(&ctx, &percent_decode(p));
    }
    match (method.as_str(), route.as_str()) {
        ("GET", "scripts/list") => list_scripts(&ctx),
        ("POST", "scripts/create") => create_script(&ctx),
        ("GET", "flows/list") => list_flows(&ctx),
        ("POST", "flows/create") => create_flow(&ctx),
        ("GET", "jobs/list") => list_jobs(&ctx),
        ("GET", "schedules/list") => list_schedules(&ctx),
        ("POST", "schedules/create") => create_schedule(&ctx),
        _ => text(StatusCode::NOT_FOUND, "Not Found"),
    }
}

struct Ctx<'a> {
    fake: &'a FakeWindmillApi,
    user: &'a User,
    query: &'a HashMap<String, String>,
    body: Value,
}

impl Ctx<'_> {
    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.fake.world.lock().unwrap()
    }
}

// ---- scripts -----------------------------------------------------------------

fn list_scripts(ctx: &Ctx) -> Response {
    let q = ctx.query;
    let show_archived = match bool_query(q, "show_archived") {
        Ok(v) => v.unwrap_or(false),
        Err(e) => return bad_request(e),
    };
    let languages: Option<Vec<&str>> = q.get("languages").map(|l| l.split(',').collect());
    let mut items: Vec<Value> = ctx
        .world()
        .scripts
        .values()
        .filter_map(|versions| versions.last().cloned())
        .filter(|s| s["archived"] == show_archived)
        .filter(|s| {
            let path = s["path"].as_str().unwrap_or_default();
            q.get("path_start").is_none_or(|p| path.starts_with(p))
                && q.get("path_exact").is_none_or(|p| path == p)
                && q.get("created_by").is_none_or(|c| s["created_by"] == **c)
                && languages
                    .as_ref()
                    .is_none_or(|l| l.contains(&s["language"].as_str().unwrap_or_default()))
        })
        .collect();
    // Newest first (order_desc defaults to true).
    items.sort_by(|a, b| b["created_at"].as_str().cmp(&a["created_at"].as_str()));
    if q.get("order_desc").map(String::as_str) == Some("false") {
        items.reverse();
    }
    match page_of(items, q) {
        Ok(page) => json_answer(Value::Array(page)),
        Err(e) => bad_request(e),
    }
}

fn get_script(ctx: &Ctx, path: &str) -> Response {
    match ctx.world().scripts.get(path).and_then(|v| v.last()) {
        Some(script) => json_answer(script.clone()),
        None => not_found(format!("script not found at name {path}")),
    }
}

/// `NewScript`: path, summary, content, language required; a path that exists
/// takes a new version only with its current hash as `parent_hash`.
fn create_script(ctx: &Ctx) -> Response {
    let body = &ctx.body;
    if !body.is_object() {
        return bad_request("the body must be a NewScript object");
    }
    for field in ["path", "summary", "content", "language"] {
        if let Err(e) = str_field(body, field) {
            return bad_request(e);
        }
    }
    let path = body["path"].as_str().unwrap_or_default().to_owned();
    if let Err(e) = check_item_path(&path) {
        return bad_request(e);
    }
    let language = body["language"].as_str().unwrap_or_default();
    if !SCRIPT_LANGS.contains(&language) {
        return bad_request(format!("unknown language '{language}'"));
    }
    if let Some(kind) = body.get("kind").and_then(Value::as_str)
        && ![
            "script",
            "failure",
            "trigger",
            "command",
            "approval",
            "preprocessor",
        ]
        .contains(&kind)
    {
        return bad_request(format!("unknown kind '{kind}'"));
    }
    let mut world = ctx.world();
    let current = world.scripts.get(&path).and_then(|v| v.last()).cloned();
    let parent = body.get("parent_hash").and_then(Value::as_str);
    let parent_hashes = match (&current, parent) {
        (Some(current), None) if current["archived"] == false => {
            return bad_request(format!(
                "Path conflict for {path} with non-archived hash {}",
                current["hash"].as_str().unwrap_or_default()
            ));
        }
        (Some(current), Some(parent)) if current["hash"] != parent => {
            return bad_request(format!(
                "The lineage must be linear: {parent} is not the current version of {path} ({})",
                current["hash"].as_str().unwrap_or_default()
            ));
        }
        (None, Some(parent)) => {
            return bad_request(format!("parent hash {parent} does not exist"));
        }
        (Some(current), _) => {
            let mut hashes = vec![current["hash"].clone()];
            hashes.extend(
                current["parent_hashes"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default(),
            );
            hashes
        }
        (None, None) => vec![],
    };
    world.next_version += 1;
    let hash = format!("{:016x}", rand::random::<u64>());
    let script = json!({
        "workspace_id": ctx.fake.workspace,
        "hash": hash,
        "path": path,
        "parent_hashes": parent_hashes,
        "summary": body["summary"],
        "description": body.get("description").cloned().unwrap_or(json!("")),
        "content": body["content"],
        "created_by": ctx.user.username,
        "created_at": now(),
        "archived": false,
        "schema": body.get("schema").cloned().unwrap_or(json!({})),
        "deleted": false,
        "is_template": false,
        "extra_perms": {},
        "language": language,
        "kind": body.get("kind").cloned().unwrap_or(json!("script")),
        "starred": false,
        "tag": body.get("tag").cloned().unwrap_or(Value::Null),
        "has_preprocessor": false,
    });
    world.scripts.entry(path).or_default().push(script);
    text(StatusCode::CREATED, hash)
}

fn archive_script(ctx: &Ctx, path: &str) -> Response {
    let mut world = ctx.world();
    match world.scripts.get_mut(path).and_then(|v| v.last_mut()) {
        Some(script) if script["archived"] == false => {
            script["archived"] = json!(true);
            text(
                StatusCode::OK,
                script["hash"].as_str().unwrap_or_default().to_owned(),
            )
        }
        _ => not_found(format!("script not found at name {path}")),
    }
}

// ---- flows -------------------------------------------------------------------

fn list_flows(ctx: &Ctx) -> Response {
    let q = ctx.query;
    let items: Vec<Value> = ctx
        .world()
        .flows
        .values()
        .filter(|f| {
            let path = f["path"].as_str().unwrap_or_default();
            f["archived"] == false
                && q.get("path_start").is_none_or(|p| path.starts_with(p))
                && q.get("path_exact").is_none_or(|p| path == p)
                && q.get("created_by").is_none_or(|c| f["edited_by"] == **c)
        })
        .cloned()
        .collect();
    match page_of(items, q) {
        Ok(page) => json_answer(Value::Array(page)),
        Err(e) => bad_request(e),
    }
}

fn get_flow(ctx: &Ctx, path: &str) -> Response {
    match ctx.world().flows.get(path) {
        Some(flow) => json_answer(flow.clone()),
        None => not_found(format!("flow not found at path {path}")),
    }
}

fn flow_record(ctx: &Ctx, version: u64) -> Value {
    let body = &ctx.body;
    json!({
        "workspace_id": ctx.fake.workspace,
        "path": body["path"],
        "summary": body["summary"],
        "description": body.get("description").cloned().unwrap_or(json!("")),
        "value": body["value"],
        "schema": body.get("schema").cloned().unwrap_or(json!({})),
        "edited_by": ctx.user.username,
        "edited_at": now(),
        "archived": false,
        "extra_perms": {},
        "starred": false,
        "tag": body.get("tag").cloned().unwrap_or(Value::Null),
        "version_id": version,
    })
}

fn create_flow(ctx: &Ctx) -> Response {
    if let Err(e) = check_flow_body(&ctx.body) {
        return bad_request(e);
    }
    let path = ctx.body["path"].as_str().unwrap_or_default().to_owned();
    let version = {
        let mut world = ctx.world();
        if world.flows.contains_key(&path) {
            return bad_request(format!("Flow {path} already exists"));
        }
        world.next_version += 1;
        world.next_version
    };
    let flow = flow_record(ctx, version);
    ctx.world().flows.insert(path.clone(), flow);
    text(StatusCode::CREATED, path)
}

fn update_flow(ctx: &Ctx, path: &str) -> Response {
    if let Err(e) = check_flow_body(&ctx.body) {
        return bad_request(e);
    }
    let new_path = ctx.body["path"].as_str().unwrap_or_default().to_owned();
    let version = {
        let mut world = ctx.world();
        if !world.flows.contains_key(path) {
            return not_found(format!("flow not found at path {path}"));
        }
        if new_path != path && world.flows.contains_key(&new_path) {
            return bad_request(format!("Flow {new_path} already exists"));
        }
        world.next_version += 1;
        world.next_version
    };
    let flow = flow_record(ctx, version);
    let mut world = ctx.world();
    world.flows.remove(path);
    world.flows.insert(new_path.clone(), flow);
    text(StatusCode::OK, new_path)
}

// ---- jobs --------------------------------------------------------------------

/// runScriptByPath / runFlowByPath: the body is the args object; answers the
/// new job's id (201, text/plain).
fn run(ctx: &Ctx, path: &str, is_flow: bool) -> Response {
    let args = match &ctx.body {
        Value::Null => json!({}),
        Value::Object(_) => ctx.body.clone(),
        _ => return bad_request("the body must be the args object"),
    };
    let q = ctx.query;
    let delay = match q.get("scheduled_in_secs").map(|s| s.parse::<i64>()) {
        None => 0,
        Some(Ok(s)) if s >= 0 => s,
        Some(_) => return bad_request("scheduled_in_secs must be a non-negative integer"),
    };
    let mut world = ctx.world();
    let (hash, tag) = if is_flow {
        match world.flows.get(path).filter(|f| f["archived"] == false) {
            Some(_) => (Value::Null, json!("flow")),
            None => return not_found(format!("flow not found at path {path}")),
        }
    } else {
        match world
            .scripts
            .get(path)
            .and_then(|v| v.last())
            .filter(|s| s["archived"] == false)
        {
            Some(s) => (s["hash"].clone(), s["language"].clone()),
            None => return not_found(format!("script not found at name {path}")),
        }
    };
    let scheduled_for = q.get("scheduled_for").cloned().unwrap_or_else(|| {
        let at = time::OffsetDateTime::now_utc() + time::Duration::seconds(delay);
        at.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    });
    let id = new_uuid();
    world.jobs.push(json!({
        "type": "QueuedJob",
        "workspace_id": ctx.fake.workspace,
        "id": id,
        "parent_job": null,
        "created_by": ctx.user.username,
        "created_at": now(),
        "scheduled_for": scheduled_for,
        "running": false,
        "script_path": path,
        "script_hash": hash,
        "args": args,
        "canceled": false,
        "job_kind": if is_flow { "flow" } else { "script" },
        "schedule_path": null,
        "permissioned_as": format!("u/{}", ctx.user.username),
        "is_flow_step": false,
        "email": ctx.user.email,
        "visible_to_owner": true,
        "tag": tag,
    }));
    text(StatusCode::CREATED, id)
}

fn list_jobs(ctx: &Ctx) -> Response {
    let q = ctx.query;
    let running = match bool_query(q, "running") {
        Ok(v) => v,
        Err(e) => return bad_request(e),
    };
    let success = match bool_query(q, "success") {
        Ok(v) => v,
        Err(e) => return bad_request(e),
    };
    let kinds: Option<Vec<&str>> = q.get("job_kinds").map(|k| k.split(',').collect());
    let per_page = match q.get("per_page").map(|p| p.parse::<usize>()) {
        None => 30,
        Some(Ok(p)) if p >= 1 => p.min(100),
        Some(_) => return bad_request("invalid per_page"),
    };
    let items: Vec<Value> = ctx
        .world()
        .jobs
        .iter()
        .rev()
        .filter(|j| {
            let path = j["script_path"].as_str().unwrap_or_default();
            q.get("script_path_exact").is_none_or(|p| path == p)
                && q.get("script_path_start")
                    .is_none_or(|p| path.starts_with(p))
                && q.get("schedule_path")
                    .is_none_or(|p| j["schedule_path"] == **p)
                && q.get("created_by").is_none_or(|c| j["created_by"] == **c)
                && running.is_none_or(|r| j["running"] == r)
                && success.is_none_or(|s| j["type"] == "CompletedJob" && j["success"] == s)
                && kinds
                    .as_ref()
                    .is_none_or(|k| k.contains(&j["job_kind"].as_str().unwrap_or_default()))
        })
        .take(per_page)
        .cloned()
        .collect();
    json_answer(Value::Array(items))
}

fn get_job(ctx: &Ctx, id: &str) -> Response {
    let Some(mut job) = ctx.fake.job(id) else {
        return not_found(format!("Job {id} not found"));
    };
    if ctx.query.get("no_logs").map(String::as_str) != Some("true") {
        job["logs"] = json!("");
    }
    json_answer(job)
}

fn get_result(ctx: &Ctx, id: &str) -> Response {
    match ctx.fake.job(id) {
        Some(job) if job["type"] == "CompletedJob" => json_answer(job["result"].clone()),
        _ => not_found(format!("Job {id} not found or not completed")),
    }
}

// ---- schedules ---------------------------------------------------------------

fn list_schedules(ctx: &Ctx) -> Response {
    let q = ctx.query;
    let is_flow = match bool_query(q, "is_flow") {
        Ok(v) => v,
        Err(e) => return bad_request(e),
    };
    let items: Vec<Value> = ctx
        .world()
        .schedules
        .values()
        .filter(|s| {
            let own = s["path"].as_str().unwrap_or_default();
            q.get("path").is_none_or(|p| s["script_path"] == **p)
                && q.get("path_start").is_none_or(|p| own.starts_with(p))
                && q.get("schedule_path").is_none_or(|p| own == p)
                && is_flow.is_none_or(|f| s["is_flow"] == f)
        })
        .cloned()
        .collect();
    match page_of(items, q) {
        Ok(page) => json_answer(Value::Array(page)),
        Err(e) => bad_request(e),
    }
}

fn get_schedule(ctx: &Ctx, path: &str) -> Response {
    match ctx.world().schedules.get(path) {
        Some(s) => json_answer(s.clone()),
        None => not_found(format!("schedule {path} not found")),
    }
}

/// Fields common to NewSchedule and EditSchedule: schedule, timezone, args.
fn check_timing(body: &Value) -> Result<(), String> {
    check_cron(str_field(body, "schedule")?)?;
    check_timezone(str_field(body, "timezone")?)?;
    match body.get("args") {
        None => Err("missing field `args`".into()),
        Some(Value::Object(_)) | Some(Value::Null) => Ok(()),
        Some(_) => Err("`args` must be an object".into()),
    }
}

const SCHEDULE_OPTIONAL: &[&str] = &[
    "summary",
    "description",
    "no_flow_overlap",
    "on_failure",
    "on_failure_times",
    "on_failure_exact",
    "on_recovery",
    "on_recovery_times",
    "on_success",
    "tag",
    "paused_until",
    "cron_version",
    "ws_error_handler_muted",
    "retry",
];

/// `NewSchedule`: path, schedule (6-field cron), timezone (IANA), script_path
/// (an existing script, or flow when `is_flow`), is_flow, args.
fn create_schedule(ctx: &Ctx) -> Response {
    let body = &ctx.body;
    if !body.is_object() {
        return bad_request("the body must be a NewSchedule object");
    }
    let checked = (|| -> Result<(String, String, bool), String> {
        let path = str_field(body, "path")?;
        check_item_path(path)?;
        let script_path = str_field(body, "script_path")?;
        let Some(is_flow) = body.get("is_flow").and_then(Value::as_bool) else {
            return Err("missing boolean field `is_flow`".into());
        };
        check_timing(body)?;
        if let Some(enabled) = body.get("enabled")
            && !enabled.is_boolean()
        {
            return Err("`enabled` must be a boolean".into());
        }
        Ok((path.to_owned(), script_path.to_owned(), is_flow))
    })();
    let (path, script_path, is_flow) = match checked {
        Ok(c) => c,
        Err(e) => return bad_request(e),
    };
    let mut world = ctx.world();
    let target_exists = if is_flow {
        world
            .flows
            .get(&script_path)
            .is_some_and(|f| f["archived"] == false)
    } else {
        world
            .scripts
            .get(&script_path)
            .and_then(|v| v.last())
            .is_some_and(|s| s["archived"] == false)
    };
    if !target_exists {
        return bad_request(format!(
            "{} {script_path} does not exist",
            if is_flow { "flow" } else { "script" }
        ));
    }
    if world.schedules.contains_key(&path) {
        return bad_request(format!("schedule {path} already exists"));
    }
    let mut schedule = json!({
        "path": path,
        "edited_by": ctx.user.username,
        "edited_at": now(),
        "schedule": body["schedule"],
        "timezone": body["timezone"],
        "enabled": body.get("enabled").cloned().unwrap_or(json!(true)),
        "script_path": script_path,
        "is_flow": is_flow,
        "args": body["args"],
        "extra_perms": {},
        "email": ctx.user.email,
        "permissioned_as": format!("u/{}", ctx.user.username),
        "error": null,
        "summary": null,
        "description": null,
        "no_flow_overlap": false,
        "paused_until": null,
    });
    for field in SCHEDULE_OPTIONAL {
        if let Some(v) = body.get(*field) {
            schedule[*field] = v.clone();
        }
    }
    world.schedules.insert(path.clone(), schedule);
    text(StatusCode::CREATED, path)
}

/// `EditSchedule`: schedule, timezone, args required; the target stays.
fn update_schedule(ctx: &Ctx, path: &str) -> Response {
    let body = &ctx.body;
    if let Err(e) = check_timing(body) {
        return bad_request(e);
    }
    let mut world = ctx.world();
    let Some(existing) = world.schedules.get_mut(path) else {
        return not_found(format!("schedule {path} not found"));
    };
    for field in ["schedule", "timezone", "args"] {
        existing[field] = body[field].clone();
    }
    for field in SCHEDULE_OPTIONAL {
        if let Some(v) = body.get(*field) {
            existing[*field] = v.clone();
        }
    }
    existing["edited_by"] = json!(ctx.user.username);
    existing["edited_at"] = json!(now());
    text(StatusCode::OK, path.to_owned())
}

fn set_enabled(ctx: &Ctx, path: &str) -> Response {
    let Some(enabled) = ctx.body.get("enabled").and_then(Value::as_bool) else {
        return bad_request("missing boolean field `enabled`");
    };
    let mut world = ctx.world();
    let Some(existing) = world.schedules.get_mut(path) else {
        return not_found(format!("schedule {path} not found"));
    };
    existing["enabled"] = json!(enabled);
    existing["edited_by"] = json!(ctx.user.username);
    existing["edited_at"] = json!(now());
    text(
        StatusCode::OK,
        format!("succesfully updated schedule at path {path} to status {enabled}"),
    )
}

fn delete_schedule(ctx: &Ctx, path: &str) -> Response {
    match ctx.world().schedules.remove(path) {
        Some(_) => text(StatusCode::OK, format!("schedule {path} deleted")),
        None => not_found(format!("schedule {path} not found")),
    }
}
