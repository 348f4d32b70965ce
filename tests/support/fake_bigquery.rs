//! A local BigQuery (API v2) that follows
//! `../shared/specs/bigquery/discovery-subset.json` for the methods the shipped
//! catalog uses: jobs.query, jobs.getQueryResults, datasets.list, tables.list,
//! tables.get and tables.delete, under `/bigquery/v2/` like the real API root.
//!
//! - OAuth bearer tokens (one per account); a missing or unknown token gets
//!   Google's 401 (`UNAUTHENTICATED`, `WWW-Authenticate: Bearer`).
//! - Google's error shape `{"error": {"code", "message", "errors", "status"}}`;
//!   an unknown URL gets Google's HTML 404 page.
//! - Honest state: datasets and tables with schemas and rows; a tiny SQL engine
//!   (SELECT/INSERT/DELETE/DROP TABLE) runs queries against them, so a dropped
//!   table is gone afterwards. `useLegacySql` defaults to true as in the real
//!   API, and legacy SQL refuses backtick-quoted names.
//! - Query results in BigQuery's `{"f": [{"v": "…"}]}` rows, every value a
//!   string; `maxResults` pages with opaque `pageToken`s; a "slow" job answers
//!   `jobComplete: false` until it has been polled enough.
//! - `rate_limit_next(n, secs)`: the next n requests get 429
//!   `RESOURCE_EXHAUSTED` with `Retry-After`; `quota_403_next(n)`: BigQuery's
//!   other rate-limit answer, 403 `rateLimitExceeded` (no `Retry-After`).
//! - `restrict_dataset`: only the named accounts may read a dataset; others
//!   get 403 `accessDenied` (a permission error, not a bad credential).
//! - `maximumBytesBilled` is enforced like BigQuery does (at least 10 MiB is
//!   billed per query): a lower cap fails with `bytesBilledLimitExceeded`.
#![allow(dead_code, clippy::result_large_err)]

#[path = "fake_http.rs"]
#[allow(clippy::duplicate_mod)] // each fake brings the kernel; a test may use several
mod fake_http;
pub use fake_http::Received;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    /// STRING, INT64, FLOAT64, BOOL, TIMESTAMP…
    pub kind: String,
}

#[derive(Debug, Clone)]
struct Table {
    columns: Vec<Column>,
    rows: Vec<Vec<Value>>,
    created_ms: u64,
    modified_ms: u64,
    description: Option<String>,
}

#[derive(Debug, Clone, Default)]
struct Dataset {
    location: String,
    labels: BTreeMap<String, String>,
    tables: BTreeMap<String, Table>,
    /// Only these accounts may use it (everyone when None).
    readers: Option<Vec<String>>,
}

#[derive(Debug, Clone)]
struct Job {
    project: String,
    location: String,
    owner: String,
    statement_type: String,
    columns: Vec<Column>,
    rows: Vec<Vec<Value>>,
    dml_affected: Option<usize>,
    bytes: usize,
    /// Answers still to say `jobComplete: false`.
    incomplete_answers: u32,
    page_size: Option<usize>,
}

#[derive(Default)]
struct World {
    /// bearer token → account email.
    accounts: HashMap<String, String>,
    /// project → dataset id → dataset.
    projects: BTreeMap<String, BTreeMap<String, Dataset>>,
    jobs: HashMap<String, Job>,
    /// opaque page token → (what it pages, offset).
    page_tokens: HashMap<String, (String, usize)>,
    next_id: u64,
    clock_ms: u64,
    /// The next query job needs this many polls before it completes.
    slow_next: u32,
    /// (requests left to refuse, Retry-After seconds).
    rate_limit: fake_http::RateLimit,
    /// Requests left to refuse with 403 rateLimitExceeded.
    quota_403: u32,
    received: Vec<Received>,
}

impl World {
    fn token(&mut self, what: String, offset: usize) -> String {
        self.next_id += 1;
        let token = format!(
            "BH{:08X}{:04X}",
            self.next_id.wrapping_mul(2_654_435_761) % 4_294_967_291,
            offset
        );
        self.page_tokens.insert(token.clone(), (what, offset));
        token
    }

    fn tick(&mut self) -> u64 {
        self.clock_ms += 1000;
        self.clock_ms
    }
}

#[derive(Clone)]
pub struct FakeBigQuery {
    pub base_url: String,
    world: Arc<Mutex<World>>,
}

fn status_name(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ALREADY_EXISTS",
        429 => "RESOURCE_EXHAUSTED",
        _ => "INTERNAL",
    }
}

/// Google's JSON error body.
pub fn google_error(status: StatusCode, message: &str, reason: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": {
            "code": status.as_u16(),
            "message": message,
            "errors": [{"message": message, "domain": "global", "reason": reason}],
            "status": status_name(status),
        }})),
    )
        .into_response()
}

fn unauthenticated() -> Response {
    let mut response = google_error(
        StatusCode::UNAUTHORIZED,
        "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.",
        "authError",
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        "Bearer realm=\"https://accounts.google.com/\", error=\"invalid_token\""
            .parse()
            .unwrap(),
    );
    response
}

/// The fields of QueryRequest in the discovery document: anything else is
/// refused like Google refuses unknown JSON names.
const QUERY_REQUEST_FIELDS: &[&str] = &[
    "arrowSerializationOptions",
    "connectionProperties",
    "continuous",
    "createSession",
    "defaultDataset",
    "destinationEncryptionConfiguration",
    "dryRun",
    "formatOptions",
    "jobCreationMode",
    "jobTimeoutMs",
    "kind",
    "labels",
    "location",
    "maxResults",
    "maxSlots",
    "maximumBytesBilled",
    "parameterMode",
    "preserveNulls",
    "query",
    "queryParameters",
    "queryResultsFormat",
    "requestId",
    "reservation",
    "secureContext",
    "timeoutMs",
    "useLegacySql",
    "useQueryCache",
    "writeIncrementalResults",
];

impl FakeBigQuery {
    pub async fn start() -> FakeBigQuery {
        let (listener, base_url) = fake_http::listen().await;
        let fake = FakeBigQuery {
            base_url,
            world: Arc::new(Mutex::new(World {
                clock_ms: 1_767_225_600_000,
                ..Default::default()
            })),
        };
        let app = axum::Router::new()
            .route("/bigquery/v2/projects/{project}/queries", post(jobs_query))
            .route(
                "/bigquery/v2/projects/{project}/queries/{job}",
                get(get_query_results),
            )
            .route(
                "/bigquery/v2/projects/{project}/datasets",
                get(list_datasets),
            )
            .route(
                "/bigquery/v2/projects/{project}/datasets/{dataset}/tables",
                get(list_tables),
            )
            .route(
                "/bigquery/v2/projects/{project}/datasets/{dataset}/tables/{table}",
                get(get_table).delete(delete_table),
            )
            .fallback(not_found_page)
            .with_state(fake.clone());
        fake_http::serve(listener, app);
        fake
    }

    pub fn add_account(&self, email: &str, token: &str) {
        self.world
            .lock()
            .unwrap()
            .accounts
            .insert(token.into(), email.into());
    }

    pub fn add_dataset(
        &self,
        project: &str,
        dataset: &str,
        location: &str,
        labels: &[(&str, &str)],
    ) {
        self.world
            .lock()
            .unwrap()
            .projects
            .entry(project.into())
            .or_default()
            .insert(
                dataset.into(),
                Dataset {
                    location: location.into(),
                    labels: labels
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                    tables: BTreeMap::new(),
                    readers: None,
                },
            );
    }

    /// A table with `columns` (name, type) and rows of JSON values.
    pub fn add_table(
        &self,
        project: &str,
        dataset: &str,
        table: &str,
        columns: &[(&str, &str)],
        rows: Vec<Vec<Value>>,
    ) {
        let mut world = self.world.lock().unwrap();
        let now = world.tick();
        let dataset = world
            .projects
            .get_mut(project)
            .and_then(|p| p.get_mut(dataset))
            .expect("add_dataset first");
        dataset.tables.insert(
            table.into(),
            Table {
                columns: columns
                    .iter()
                    .map(|(n, k)| Column {
                        name: (*n).into(),
                        kind: (*k).into(),
                    })
                    .collect(),
                rows,
                created_ms: now,
                modified_ms: now,
                description: None,
            },
        );
    }

    pub fn table_exists(&self, project: &str, dataset: &str, table: &str) -> bool {
        self.world
            .lock()
            .unwrap()
            .projects
            .get(project)
            .and_then(|p| p.get(dataset))
            .is_some_and(|d| d.tables.contains_key(table))
    }

    pub fn table_rows(&self, project: &str, dataset: &str, table: &str) -> Option<usize> {
        self.world
            .lock()
            .unwrap()
            .projects
            .get(project)?
            .get(dataset)?
            .tables
            .get(table)
            .map(|t| t.rows.len())
    }

    /// The next query job answers `jobComplete: false` this many times
    /// (jobs.query first, then each getQueryResults poll) before completing.
    pub fn slow_next_query(&self, incomplete_answers: u32) {
        self.world.lock().unwrap().slow_next = incomplete_answers;
    }

    /// The next `n` authenticated requests answer 429 with `Retry-After: secs`.
    pub fn rate_limit_next(&self, n: u32, retry_after_secs: u64) {
        self.world
            .lock()
            .unwrap()
            .rate_limit
            .next(n, retry_after_secs);
    }

    /// The next `n` authenticated requests answer 403 `rateLimitExceeded`.
    pub fn quota_403_next(&self, n: u32) {
        self.world.lock().unwrap().quota_403 = n;
    }

    /// Only `readers` may use the dataset from now on.
    pub fn restrict_dataset(&self, project: &str, dataset: &str, readers: &[&str]) {
        let mut world = self.world.lock().unwrap();
        let ds = world
            .projects
            .get_mut(project)
            .and_then(|p| p.get_mut(dataset))
            .expect("add_dataset first");
        ds.readers = Some(readers.iter().map(|r| (*r).to_owned()).collect());
    }

    pub fn received(&self) -> Vec<Received> {
        self.world.lock().unwrap().received.clone()
    }

    /// Authenticate, record, and apply the rate limit: the account's email, or
    /// the answer to send instead.
    fn begin(
        &self,
        headers: &HeaderMap,
        method: &str,
        path: String,
        query: &HashMap<String, String>,
        body: Value,
    ) -> Result<String, Response> {
        let token = fake_http::bearer(headers);
        let mut world = self.world.lock().unwrap();
        let Some(who) = token.and_then(|t| world.accounts.get(t)).cloned() else {
            return Err(unauthenticated());
        };
        let limited = world.rate_limit.take();
        let quota_403 = limited.is_none() && world.quota_403 > 0;
        if quota_403 {
            world.quota_403 -= 1;
        }
        world.received.push(Received {
            rate_limited: limited.is_some() || quota_403,
            ..Received::new(method, path, query, &who, body)
        });
        if quota_403 {
            return Err(google_error(
                StatusCode::FORBIDDEN,
                "Exceeded rate limits: too many concurrent queries for this project_and_region. For more information, see https://cloud.google.com/bigquery/docs/troubleshoot-quotas",
                "rateLimitExceeded",
            ));
        }
        if let Some(secs) = limited {
            let mut response = google_error(
                StatusCode::TOO_MANY_REQUESTS,
                "Exceeded rate limits: too many api requests per user per method for this user_method. For more information, see https://cloud.google.com/bigquery/docs/troubleshoot-quotas",
                "rateLimitExceeded",
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, secs.to_string().parse().unwrap());
            return Err(response);
        }
        Ok(who)
    }
}

async fn not_found_page() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/html; charset=UTF-8")],
        "<!DOCTYPE html>\n<html lang=en><meta charset=utf-8><title>Error 404 (Not Found)!!1</title><p><b>404.</b> <ins>That’s an error.</ins><p>The requested URL was not found on this server. <ins>That’s all we know.</ins>",
    )
        .into_response()
}

/// BigQuery's 403 when `who` may not use the dataset.
fn access_denied(
    ds: &Dataset,
    who: &str,
    project: &str,
    dataset: &str,
    permission: &str,
) -> Option<Response> {
    ds.readers
        .as_ref()
        .is_some_and(|r| !r.iter().any(|w| w == who))
        .then(|| {
            google_error(
                StatusCode::FORBIDDEN,
                &format!(
                    "Access Denied: Dataset {project}:{dataset}: Permission {permission} denied on dataset {project}:{dataset} (or it may not exist)."
                ),
                "accessDenied",
            )
        })
}

fn json_ok(value: Value) -> Response {
    (StatusCode::OK, axum::Json(value)).into_response()
}

fn parse_uint(q: &HashMap<String, String>, name: &str) -> Result<Option<usize>, Response> {
    match q.get(name) {
        None => Ok(None),
        Some(v) => v.parse::<usize>().map(Some).map_err(|_| {
            google_error(
                StatusCode::BAD_REQUEST,
                &format!("Invalid value at '{name}' (TYPE_UINT32), \"{v}\""),
                "invalid",
            )
        }),
    }
}

// ---------------------------------------------------------------- SQL engine

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    /// A backtick-quoted name.
    Quoted(String),
    Str(String),
    Num(String),
    Sym(char),
}

fn tokenize(sql: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = sql.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '`' {
            let end = chars[i + 1..]
                .iter()
                .position(|&x| x == '`')
                .ok_or("Syntax error: Unclosed identifier literal")?;
            out.push(Tok::Quoted(chars[i + 1..i + 1 + end].iter().collect()));
            i += end + 2;
        } else if c == '\'' || c == '"' {
            let end = chars[i + 1..]
                .iter()
                .position(|&x| x == c)
                .ok_or("Syntax error: Unclosed string literal")?;
            out.push(Tok::Str(chars[i + 1..i + 1 + end].iter().collect()));
            i += end + 2;
        } else if c.is_ascii_digit()
            || (c == '-' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            let start = i;
            i += 1;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            out.push(Tok::Num(chars[start..i].iter().collect()));
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_alphanumeric() || matches!(chars[i], '_' | '.' | '-'))
            {
                i += 1;
            }
            out.push(Tok::Word(chars[start..i].iter().collect()));
        } else if "(),*=;.".contains(c) {
            out.push(Tok::Sym(c));
            i += 1;
        } else {
            return Err(format!("Syntax error: Illegal input character \"{c}\""));
        }
    }
    Ok(out)
}

fn is_kw(tok: Option<&Tok>, kw: &str) -> bool {
    matches!(tok, Some(Tok::Word(w)) if w.eq_ignore_ascii_case(kw))
}

fn literal(tok: &Tok) -> Option<Value> {
    match tok {
        Tok::Str(s) => Some(json!(s)),
        Tok::Num(n) => n
            .parse::<i64>()
            .map(|i| json!(i))
            .ok()
            .or_else(|| n.parse::<f64>().ok().map(|f| json!(f))),
        Tok::Word(w) if w.eq_ignore_ascii_case("true") => Some(json!(true)),
        Tok::Word(w) if w.eq_ignore_ascii_case("false") => Some(json!(false)),
        Tok::Word(w) if w.eq_ignore_ascii_case("null") => Some(Value::Null),
        _ => None,
    }
}

/// What a statement did.
struct Outcome {
    statement_type: String,
    columns: Vec<Column>,
    rows: Vec<Vec<Value>>,
    dml_affected: Option<usize>,
    /// Bytes the statement read.
    bytes: usize,
}

/// A WHERE clause: always true, or `column = literal`.
enum Filter {
    All,
    Eq(usize, Value),
}

impl Filter {
    fn matches(&self, row: &[Value]) -> bool {
        match self {
            Filter::All => true,
            Filter::Eq(i, v) => loose_eq(&row[*i], v),
        }
    }
}

fn loose_eq(a: &Value, b: &Value) -> bool {
    a == b || (a.as_f64().is_some() && a.as_f64() == b.as_f64())
}

struct Ctx<'a> {
    who: &'a str,
    project: &'a str,
    default_dataset: Option<(String, String)>,
    legacy: bool,
    /// `maximumBytesBilled`.
    max_billed: Option<u64>,
}

/// At least 10 MiB is billed per query that reads data, in whole MiB.
const MIN_BILLED: u64 = 10 * 1024 * 1024;

impl Ctx<'_> {
    /// Refuse before running when the cap is below what the query bills.
    fn bill(&self, bytes: usize) -> Result<(), (StatusCode, String, &'static str)> {
        let billed = (bytes as u64).div_ceil(1 << 20).max(1) * (1 << 20);
        let billed = billed.max(MIN_BILLED);
        match self.max_billed {
            Some(cap) if cap < billed => Err((
                StatusCode::BAD_REQUEST,
                format!(
                    "Query exceeded limit for bytes billed: {cap}. {billed} or higher required."
                ),
                "bytesBilledLimitExceeded",
            )),
            _ => Ok(()),
        }
    }
}

impl World {
    /// `[project.]dataset.table` (backtick-quoted as a whole or not).
    fn resolve(
        &self,
        ctx: &Ctx,
        tok: Option<&Tok>,
    ) -> Result<(String, String, String), (StatusCode, String, &'static str)> {
        let invalid = |m: String| (StatusCode::BAD_REQUEST, m, "invalidQuery");
        let name = match tok {
            Some(Tok::Quoted(q)) if ctx.legacy => {
                return Err(invalid(format!(
                    "Invalid table name: `{q}` [Try using standard SQL (https://cloud.google.com/bigquery/docs/reference/standard-sql/enabling-standard-sql)]."
                )));
            }
            Some(Tok::Quoted(q)) | Some(Tok::Word(q)) => q.clone(),
            _ => return Err(invalid("Syntax error: Expected a table name".into())),
        };
        let parts: Vec<&str> = name.split('.').collect();
        let (project, dataset, table) = match parts.as_slice() {
            [p, d, t] => ((*p).to_owned(), (*d).to_owned(), (*t).to_owned()),
            [d, t] => (ctx.project.to_owned(), (*d).to_owned(), (*t).to_owned()),
            [t] => match &ctx.default_dataset {
                Some((p, d)) => (p.clone(), d.clone(), (*t).to_owned()),
                None => {
                    return Err(invalid(format!(
                        "Table \"{t}\" must be qualified with a dataset (e.g. dataset.table)."
                    )));
                }
            },
            _ => return Err(invalid(format!("Invalid table name: {name}"))),
        };
        let Some(ds) = self.projects.get(&project).and_then(|p| p.get(&dataset)) else {
            return Err((
                StatusCode::NOT_FOUND,
                format!("Not found: Dataset {project}:{dataset} was not found in location US"),
                "notFound",
            ));
        };
        if ds
            .readers
            .as_ref()
            .is_some_and(|r| !r.iter().any(|w| w == ctx.who))
        {
            return Err((
                StatusCode::FORBIDDEN,
                format!(
                    "Access Denied: Table {project}:{dataset}.{table}: User does not have permission to query table {project}:{dataset}.{table}, or perhaps it does not exist."
                ),
                "accessDenied",
            ));
        }
        if !ds.tables.contains_key(&table) {
            return Err((
                StatusCode::NOT_FOUND,
                format!(
                    "Not found: Table {project}:{dataset}.{table} was not found in location {}",
                    ds.location
                ),
                "notFound",
            ));
        }
        Ok((project, dataset, table))
    }

    fn table_mut(&mut self, r: &(String, String, String)) -> &mut Table {
        self.projects
            .get_mut(&r.0)
            .and_then(|p| p.get_mut(&r.1))
            .and_then(|d| d.tables.get_mut(&r.2))
            .expect("resolved")
    }

    fn filter(table: &Table, toks: &[Tok]) -> Result<Filter, String> {
        if toks.is_empty() {
            return Ok(Filter::All);
        }
        if toks.len() == 1 && is_kw(toks.first(), "true") {
            return Ok(Filter::All);
        }
        match toks {
            [Tok::Word(col), Tok::Sym('='), value] => {
                let index = table
                    .columns
                    .iter()
                    .position(|c| c.name.eq_ignore_ascii_case(col))
                    .ok_or_else(|| format!("Unrecognized name: {col}"))?;
                let value = literal(value).ok_or("Syntax error: Expected a literal")?;
                Ok(Filter::Eq(index, value))
            }
            _ => Err("Syntax error: this WHERE clause is not supported by the fake".into()),
        }
    }

    fn run(&mut self, ctx: &Ctx, sql: &str) -> Result<Outcome, (StatusCode, String, &'static str)> {
        let invalid = |m: String| (StatusCode::BAD_REQUEST, m, "invalidQuery");
        let mut toks = tokenize(sql).map_err(invalid)?;
        while toks.last() == Some(&Tok::Sym(';')) {
            toks.pop();
        }
        if toks.contains(&Tok::Sym(';')) {
            return Err(invalid(
                "Syntax error: the fake runs one statement per query".into(),
            ));
        }
        let first = match toks.first() {
            Some(Tok::Word(w)) => w.to_ascii_uppercase(),
            _ => {
                return Err(invalid(
                    "Syntax error: Unexpected end of script at [1:1]".into(),
                ));
            }
        };
        match first.as_str() {
            "SELECT" => {
                let from = toks
                    .iter()
                    .position(|t| is_kw(Some(t), "FROM"))
                    .ok_or_else(|| invalid("Syntax error: Expected keyword FROM".into()))?;
                let r = self.resolve(ctx, toks.get(from + 1))?;
                let table = self.table_mut(&r).clone();
                let bytes = table.rows.len() * 64;
                ctx.bill(bytes)?;
                let rest = &toks[from + 2..];
                let where_at = rest.iter().position(|t| is_kw(Some(t), "WHERE"));
                let limit_at = rest.iter().position(|t| is_kw(Some(t), "LIMIT"));
                let where_toks = match where_at {
                    Some(w) => &rest[w + 1..limit_at.unwrap_or(rest.len())],
                    None => &[][..],
                };
                let filter = Self::filter(&table, where_toks).map_err(invalid)?;
                let limit = match limit_at {
                    Some(l) => match rest.get(l + 1) {
                        Some(Tok::Num(n)) => n.parse::<usize>().ok(),
                        _ => None,
                    }
                    .ok_or_else(|| invalid("Syntax error: LIMIT expects an integer".into()))?,
                    None => usize::MAX,
                };
                let selected = &toks[1..from];
                let rows: Vec<&Vec<Value>> = table
                    .rows
                    .iter()
                    .filter(|row| filter.matches(row))
                    .take(limit)
                    .collect();
                if selected.len() == 4
                    && is_kw(selected.first(), "COUNT")
                    && selected[1..] == [Tok::Sym('('), Tok::Sym('*'), Tok::Sym(')')]
                {
                    return Ok(Outcome {
                        statement_type: "SELECT".into(),
                        columns: vec![Column {
                            name: "f0_".into(),
                            kind: "INTEGER".into(),
                        }],
                        rows: vec![vec![json!(rows.len())]],
                        dml_affected: None,
                        bytes,
                    });
                }
                let indexes: Vec<usize> = if selected == [Tok::Sym('*')] {
                    (0..table.columns.len()).collect()
                } else {
                    selected
                        .iter()
                        .filter(|t| **t != Tok::Sym(','))
                        .map(|t| match t {
                            Tok::Word(name) => table
                                .columns
                                .iter()
                                .position(|c| c.name.eq_ignore_ascii_case(name))
                                .ok_or_else(|| invalid(format!("Unrecognized name: {name}"))),
                            _ => Err(invalid("Syntax error: Unexpected select list".into())),
                        })
                        .collect::<Result<_, _>>()?
                };
                Ok(Outcome {
                    statement_type: "SELECT".into(),
                    columns: indexes.iter().map(|&i| table.columns[i].clone()).collect(),
                    rows: rows
                        .iter()
                        .map(|row| indexes.iter().map(|&i| row[i].clone()).collect())
                        .collect(),
                    dml_affected: None,
                    bytes,
                })
            }
            "INSERT" => {
                if !is_kw(toks.get(1), "INTO") {
                    return Err(invalid("Syntax error: Expected keyword INTO".into()));
                }
                let r = self.resolve(ctx, toks.get(2))?;
                let values_at = toks
                    .iter()
                    .position(|t| is_kw(Some(t), "VALUES"))
                    .ok_or_else(|| invalid("Syntax error: Expected keyword VALUES".into()))?;
                let width = self.table_mut(&r).columns.len();
                let mut new_rows = Vec::new();
                let mut current: Option<Vec<Value>> = None;
                for tok in &toks[values_at + 1..] {
                    match (tok, current.as_mut()) {
                        (Tok::Sym('('), None) => current = Some(Vec::new()),
                        (Tok::Sym(')'), Some(_)) => {
                            let row = current.take().unwrap();
                            if row.len() != width {
                                return Err(invalid(format!(
                                    "Inserted row has wrong column count; Has {}, expected {width}",
                                    row.len()
                                )));
                            }
                            new_rows.push(row);
                        }
                        (Tok::Sym(','), _) => {}
                        (other, Some(row)) => {
                            row.push(literal(other).ok_or_else(|| {
                                invalid("Syntax error: Expected a literal".into())
                            })?)
                        }
                        _ => return Err(invalid("Syntax error: Expected \"(\"".into())),
                    }
                }
                let now = self.tick();
                let table = self.table_mut(&r);
                let n = new_rows.len();
                table.rows.extend(new_rows);
                table.modified_ms = now;
                Ok(Outcome {
                    statement_type: "INSERT".into(),
                    columns: vec![],
                    rows: vec![],
                    dml_affected: Some(n),
                    bytes: 0,
                })
            }
            "DELETE" => {
                let at = if is_kw(toks.get(1), "FROM") { 2 } else { 1 };
                let r = self.resolve(ctx, toks.get(at))?;
                if !is_kw(toks.get(at + 1), "WHERE") {
                    return Err(invalid("DELETE must have a WHERE clause at [1:1]".into()));
                }
                let filter = Self::filter(self.table_mut(&r), &toks[at + 2..]).map_err(invalid)?;
                let bytes = self.table_mut(&r).rows.len() * 64;
                ctx.bill(bytes)?;
                let now = self.tick();
                let table = self.table_mut(&r);
                let before = table.rows.len();
                table.rows.retain(|row| !filter.matches(row));
                table.modified_ms = now;
                Ok(Outcome {
                    statement_type: "DELETE".into(),
                    columns: vec![],
                    rows: vec![],
                    dml_affected: Some(before - table.rows.len()),
                    bytes,
                })
            }
            "DROP" => {
                if !is_kw(toks.get(1), "TABLE") {
                    return Err(invalid("Syntax error: Expected keyword TABLE".into()));
                }
                let r = self.resolve(ctx, toks.get(2))?;
                self.projects
                    .get_mut(&r.0)
                    .and_then(|p| p.get_mut(&r.1))
                    .and_then(|d| d.tables.remove(&r.2));
                Ok(Outcome {
                    statement_type: "DROP_TABLE".into(),
                    columns: vec![],
                    rows: vec![],
                    dml_affected: None,
                    bytes: 0,
                })
            }
            other => Err(invalid(format!(
                "Syntax error: Unexpected keyword {other} at [1:1]"
            ))),
        }
    }
}

/// BigQuery's REST row encoding: every value a string (or null).
fn encode_rows(rows: &[Vec<Value>]) -> Value {
    Value::Array(
        rows.iter()
            .map(|row| {
                json!({"f": row.iter().map(|v| match v {
                    Value::Null => json!({"v": null}),
                    Value::String(s) => json!({"v": s}),
                    other => json!({"v": other.to_string()}),
                }).collect::<Vec<_>>()})
            })
            .collect(),
    )
}

fn schema_of(columns: &[Column]) -> Value {
    json!({"fields": columns.iter().map(|c| json!({"name": c.name, "type": c.kind, "mode": "NULLABLE"})).collect::<Vec<_>>()})
}

/// A query job's answer (QueryResponse or GetQueryResultsResponse shape).
fn job_answer(
    world: &mut World,
    job_id: &str,
    kind: &str,
    offset: usize,
    page: Option<usize>,
) -> Value {
    let job = world.jobs.get(job_id).unwrap().clone();
    let reference = json!({"projectId": job.project, "jobId": job_id, "location": job.location});
    if job.incomplete_answers > 0 {
        world.jobs.get_mut(job_id).unwrap().incomplete_answers -= 1;
        return json!({"kind": kind, "jobReference": reference, "jobComplete": false});
    }
    let mut answer = json!({
        "kind": kind,
        "jobReference": reference,
        "jobComplete": true,
        "cacheHit": false,
        "totalBytesProcessed": job.bytes.to_string(),
    });
    if let Some(n) = job.dml_affected {
        answer["numDmlAffectedRows"] = json!(n.to_string());
    }
    if job.statement_type == "SELECT" {
        let size = page.or(job.page_size).unwrap_or(usize::MAX);
        let end = offset.saturating_add(size).min(job.rows.len());
        let start = offset.min(end);
        answer["schema"] = schema_of(&job.columns);
        answer["totalRows"] = json!(job.rows.len().to_string());
        answer["rows"] = encode_rows(&job.rows[start..end]);
        if end < job.rows.len() {
            let token = world.token(format!("job:{job_id}"), end);
            answer["pageToken"] = json!(token);
        }
    }
    if kind == "bigquery#queryResponse" {
        answer["statementType"] = json!(job.statement_type);
        answer["queryId"] = json!(format!("{job_id}-q"));
    }
    answer
}

async fn jobs_query(
    State(f): State<FakeBigQuery>,
    headers: HeaderMap,
    uri: Uri,
    Path(project): Path<String>,
    body: Bytes,
) -> Response {
    let parsed: Result<Value, _> = serde_json::from_slice(&body);
    let who = match f.begin(
        &headers,
        "POST",
        uri.path().to_owned(),
        &HashMap::new(),
        parsed.as_ref().cloned().unwrap_or(Value::Null),
    ) {
        Ok(who) => who,
        Err(response) => return response,
    };
    let Ok(Value::Object(request)) = parsed else {
        return google_error(
            StatusCode::BAD_REQUEST,
            "Invalid JSON payload received. Expected an object.",
            "invalid",
        );
    };
    if let Some(unknown) = request
        .keys()
        .find(|k| !QUERY_REQUEST_FIELDS.contains(&k.as_str()))
    {
        return google_error(
            StatusCode::BAD_REQUEST,
            &format!(
                "Invalid JSON payload received. Unknown name \"{unknown}\": Cannot find field."
            ),
            "invalid",
        );
    }
    let Some(sql) = request
        .get("query")
        .and_then(Value::as_str)
        .filter(|q| !q.is_empty())
    else {
        return google_error(
            StatusCode::BAD_REQUEST,
            "Required parameter is missing: query",
            "required",
        );
    };
    let mut world = f.world.lock().unwrap();
    if !world.projects.contains_key(&project) {
        return google_error(
            StatusCode::NOT_FOUND,
            &format!("Not found: Project {project}"),
            "notFound",
        );
    }
    let max_billed = match request.get("maximumBytesBilled") {
        None | Some(Value::Null) => None,
        Some(Value::String(v)) => match v.parse::<u64>() {
            Ok(v) => Some(v),
            Err(_) => {
                return google_error(
                    StatusCode::BAD_REQUEST,
                    &format!("Invalid value at 'maximum_bytes_billed' (TYPE_INT64), \"{v}\""),
                    "invalid",
                );
            }
        },
        Some(other) => other.as_u64(),
    };
    let ctx = Ctx {
        who: &who,
        max_billed,
        project: &project,
        default_dataset: request.get("defaultDataset").and_then(|d| {
            Some((
                d.get("projectId")
                    .and_then(Value::as_str)
                    .unwrap_or(&project)
                    .to_owned(),
                d.get("datasetId")?.as_str()?.to_owned(),
            ))
        }),
        legacy: request
            .get("useLegacySql")
            .and_then(Value::as_bool)
            .unwrap_or(true),
    };
    let dry_run = request.get("dryRun").and_then(Value::as_bool) == Some(true);
    let outcome = if dry_run {
        // Validate only: run against a copy.
        let mut copy = World {
            projects: world.projects.clone(),
            ..Default::default()
        };
        copy.run(&ctx, sql)
    } else {
        world.run(&ctx, sql)
    };
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err((status, message, reason)) => return google_error(status, &message, reason),
    };
    let location = request
        .get("location")
        .and_then(Value::as_str)
        .unwrap_or("US")
        .to_owned();
    if dry_run {
        return json_ok(json!({
            "kind": "bigquery#queryResponse",
            "jobComplete": true,
            "schema": schema_of(&outcome.columns),
            "totalBytesProcessed": outcome.bytes.to_string(),
            "statementType": outcome.statement_type,
        }));
    }
    world.next_id += 1;
    let job_id = format!(
        "job_{:016x}",
        world.next_id.wrapping_mul(0x9E37_79B9_7F4A_7C15) % 0xFFFF_FFFF_FFFB
    );
    let incomplete_answers = std::mem::take(&mut world.slow_next);
    world.jobs.insert(
        job_id.clone(),
        Job {
            project,
            location,
            owner: who,
            statement_type: outcome.statement_type,
            columns: outcome.columns,
            rows: outcome.rows,
            dml_affected: outcome.dml_affected,
            bytes: outcome.bytes,
            incomplete_answers,
            page_size: request
                .get("maxResults")
                .and_then(Value::as_u64)
                .map(|n| n as usize),
        },
    );
    json_ok(job_answer(
        &mut world,
        &job_id,
        "bigquery#queryResponse",
        0,
        None,
    ))
}

async fn get_query_results(
    State(f): State<FakeBigQuery>,
    headers: HeaderMap,
    uri: Uri,
    Path((project, job_id)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Err(response) = f.begin(&headers, "GET", uri.path().to_owned(), &q, Value::Null) {
        return response;
    }
    let max_results = match parse_uint(&q, "maxResults") {
        Ok(v) => v,
        Err(response) => return response,
    };
    let start_index = match parse_uint(&q, "startIndex") {
        Ok(v) => v,
        Err(response) => return response,
    };
    let mut world = f.world.lock().unwrap();
    let known = world.jobs.get(&job_id).filter(|j| {
        j.project == project
            && q.get("location")
                .is_none_or(|l| l.eq_ignore_ascii_case(&j.location))
    });
    let Some(job) = known else {
        let location = q.get("location").map(String::as_str).unwrap_or("US");
        return google_error(
            StatusCode::NOT_FOUND,
            &format!("Not found: Job {project}:{location}.{job_id}"),
            "notFound",
        );
    };
    let _ = job;
    let offset = match q.get("pageToken") {
        Some(token) => match world.page_tokens.get(token) {
            Some((what, offset)) if *what == format!("job:{job_id}") => *offset,
            _ => {
                return google_error(StatusCode::BAD_REQUEST, "Invalid page token", "invalid");
            }
        },
        None => start_index.unwrap_or(0),
    };
    json_ok(job_answer(
        &mut world,
        &job_id,
        "bigquery#getQueryResultsResponse",
        offset,
        max_results,
    ))
}

/// One page of `items` from `offset`, with the next page's token.
fn page<T: Clone>(
    world: &mut World,
    what: &str,
    items: &[T],
    q: &HashMap<String, String>,
    default: usize,
) -> Result<(Vec<T>, Option<String>), Response> {
    let size = parse_uint(q, "maxResults")?.unwrap_or(default).max(1);
    let offset = match q.get("pageToken") {
        Some(token) => match world.page_tokens.get(token) {
            Some((w, offset)) if w == what => *offset,
            _ => {
                return Err(google_error(
                    StatusCode::BAD_REQUEST,
                    "Invalid page token",
                    "invalid",
                ));
            }
        },
        None => 0,
    };
    let end = offset.saturating_add(size).min(items.len());
    let start = offset.min(end);
    let next = (end < items.len()).then(|| world.token(what.to_owned(), end));
    Ok((items[start..end].to_vec(), next))
}

async fn list_datasets(
    State(f): State<FakeBigQuery>,
    headers: HeaderMap,
    uri: Uri,
    Path(project): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Err(response) = f.begin(&headers, "GET", uri.path().to_owned(), &q, Value::Null) {
        return response;
    }
    let mut world = f.world.lock().unwrap();
    let Some(datasets) = world.projects.get(&project) else {
        return google_error(
            StatusCode::NOT_FOUND,
            &format!("Not found: Project {project}"),
            "notFound",
        );
    };
    let all = q.get("all").is_some_and(|v| v == "true");
    // `labels.key:value` or `labels.key`, AND-ed with spaces.
    let filters: Vec<(String, Option<String>)> = q
        .get("filter")
        .map(|f| {
            f.split_whitespace()
                .filter_map(|term| term.strip_prefix("labels."))
                .map(|term| match term.split_once(':') {
                    Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                    None => (term.to_owned(), None),
                })
                .collect()
        })
        .unwrap_or_default();
    let listed: Vec<Value> = datasets
        .iter()
        .filter(|(id, _)| all || !id.starts_with('_'))
        .filter(|(_, d)| {
            filters.iter().all(|(k, v)| match (d.labels.get(k), v) {
                (Some(have), Some(want)) => have == want,
                (Some(_), None) => true,
                (None, _) => false,
            })
        })
        .map(|(id, d)| {
            json!({
                "kind": "bigquery#dataset",
                "id": format!("{project}:{id}"),
                "datasetReference": {"datasetId": id, "projectId": project},
                "labels": d.labels,
                "location": d.location,
                "type": "DEFAULT",
            })
        })
        .collect();
    let (items, next) = match page(&mut world, &format!("datasets:{project}"), &listed, &q, 50) {
        Ok(page) => page,
        Err(response) => return response,
    };
    let mut answer = json!({"kind": "bigquery#datasetList", "etag": format!("\"{}\"", listed.len()), "datasets": items});
    if let Some(next) = next {
        answer["nextPageToken"] = json!(next);
    }
    json_ok(answer)
}

async fn list_tables(
    State(f): State<FakeBigQuery>,
    headers: HeaderMap,
    uri: Uri,
    Path((project, dataset)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let who = match f.begin(&headers, "GET", uri.path().to_owned(), &q, Value::Null) {
        Ok(who) => who,
        Err(response) => return response,
    };
    let mut world = f.world.lock().unwrap();
    let Some(ds) = world.projects.get(&project).and_then(|p| p.get(&dataset)) else {
        return google_error(
            StatusCode::NOT_FOUND,
            &format!("Not found: Dataset {project}:{dataset}"),
            "notFound",
        );
    };
    if let Some(denied) = access_denied(ds, &who, &project, &dataset, "bigquery.tables.list") {
        return denied;
    }
    let listed: Vec<Value> = ds
        .tables
        .iter()
        .map(|(id, t)| {
            json!({
                "kind": "bigquery#table",
                "id": format!("{project}:{dataset}.{id}"),
                "tableReference": {"projectId": project, "datasetId": dataset, "tableId": id},
                "type": "TABLE",
                "creationTime": t.created_ms.to_string(),
            })
        })
        .collect();
    let total = listed.len();
    let (items, next) = match page(
        &mut world,
        &format!("tables:{project}:{dataset}"),
        &listed,
        &q,
        50,
    ) {
        Ok(page) => page,
        Err(response) => return response,
    };
    let mut answer = json!({"kind": "bigquery#tableList", "etag": format!("\"{total}\""), "tables": items, "totalItems": total});
    if let Some(next) = next {
        answer["nextPageToken"] = json!(next);
    }
    json_ok(answer)
}

async fn get_table(
    State(f): State<FakeBigQuery>,
    headers: HeaderMap,
    uri: Uri,
    Path((project, dataset, table)): Path<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let who = match f.begin(&headers, "GET", uri.path().to_owned(), &q, Value::Null) {
        Ok(who) => who,
        Err(response) => return response,
    };
    let world = f.world.lock().unwrap();
    let Some(ds) = world.projects.get(&project).and_then(|p| p.get(&dataset)) else {
        return google_error(
            StatusCode::NOT_FOUND,
            &format!("Not found: Dataset {project}:{dataset}"),
            "notFound",
        );
    };
    if let Some(denied) = access_denied(ds, &who, &project, &dataset, "bigquery.tables.get") {
        return denied;
    }
    let Some(t) = ds.tables.get(&table) else {
        return google_error(
            StatusCode::NOT_FOUND,
            &format!("Not found: Table {project}:{dataset}.{table}"),
            "notFound",
        );
    };
    let columns: Vec<Column> = match q.get("selectedFields") {
        Some(fields) => {
            let wanted: Vec<&str> = fields.split(',').map(str::trim).collect();
            t.columns
                .iter()
                .filter(|c| wanted.contains(&c.name.as_str()))
                .cloned()
                .collect()
        }
        None => t.columns.clone(),
    };
    let mut answer = json!({
        "kind": "bigquery#table",
        "etag": format!("\"{}\"", t.modified_ms),
        "id": format!("{project}:{dataset}.{table}"),
        "selfLink": format!("{}/bigquery/v2/projects/{project}/datasets/{dataset}/tables/{table}", f.base_url),
        "tableReference": {"projectId": project, "datasetId": dataset, "tableId": table},
        "schema": schema_of(&columns),
        "creationTime": t.created_ms.to_string(),
        "lastModifiedTime": t.modified_ms.to_string(),
        "type": "TABLE",
        "location": ds.location,
    });
    if let Some(description) = &t.description {
        answer["description"] = json!(description);
    }
    if q.get("view").map(String::as_str) != Some("BASIC") {
        answer["numRows"] = json!(t.rows.len().to_string());
        answer["numBytes"] = json!((t.rows.len() * 64).to_string());
    }
    json_ok(answer)
}

async fn delete_table(
    State(f): State<FakeBigQuery>,
    headers: HeaderMap,
    uri: Uri,
    Path((project, dataset, table)): Path<(String, String, String)>,
) -> Response {
    let who = match f.begin(
        &headers,
        "DELETE",
        uri.path().to_owned(),
        &HashMap::new(),
        Value::Null,
    ) {
        Ok(who) => who,
        Err(response) => return response,
    };
    let mut world = f.world.lock().unwrap();
    if let Some(ds) = world.projects.get(&project).and_then(|p| p.get(&dataset))
        && let Some(denied) = access_denied(ds, &who, &project, &dataset, "bigquery.tables.delete")
    {
        return denied;
    }
    let removed = world
        .projects
        .get_mut(&project)
        .and_then(|p| p.get_mut(&dataset))
        .and_then(|d| d.tables.remove(&table));
    match removed {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => google_error(
            StatusCode::NOT_FOUND,
            &format!("Not found: Table {project}:{dataset}.{table}"),
            "notFound",
        ),
    }
}
