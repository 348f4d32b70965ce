//! A local Metabase that follows `../shared/specs/metabase/openapi-subset.yaml`
//! and `summary.yaml` for the endpoints the shipped catalog uses (all under
//! `/api`, served with and without the trailing `/` like Metabase does):
//! POST /api/dataset, GET/DELETE /api/card/{id}, POST /api/card/{card-id}/query,
//! GET /api/card/, GET/PUT/DELETE /api/dashboard/{id}, GET /api/database/,
//! GET /api/user/current.
//!
//! - API keys in `x-api-key` (or a session id in `X-Metabase-Session`); a
//!   missing or unknown one gets 401 with the plain-text body `Unauthenticated`.
//! - `Not found.` (plain text 404); 400 `{"errors": {param: message}}` for a
//!   parameter that fails validation.
//! - Query endpoints answer 202 Accepted, also when the query fails
//!   (`"status": "failed"` with `error`, H2-style messages).
//! - Honest state: databases with tables and rows, cards, dashboards. A tiny
//!   SQL engine (SELECT/INSERT/DELETE/DROP TABLE, `{{tag}}` template tags) runs
//!   native queries and cards. Like Metabase over a JDBC connection with
//!   autocommit, a statement that returns no result set still runs — and then
//!   the query is reported failed ("No results were returned by the query.").
//! - `restrict_database`: only superusers may query a database (others get
//!   403 `You don't have permissions to do that.`, and do not see it listed).
//! - `rate_limit_next(n, secs)`: the next n requests answer 429 with
//!   `Retry-After` (what a reverse proxy in front of Metabase does; Metabase
//!   itself has no rate-limit headers).
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
struct User {
    id: u64,
    email: String,
    first_name: String,
    last_name: String,
    is_superuser: bool,
}

#[derive(Debug, Clone)]
struct Table {
    id: u64,
    /// (NAME, base_type) e.g. ("TOTAL", "type/Float").
    columns: Vec<(String, String)>,
    rows: Vec<Vec<Value>>,
}

#[derive(Debug, Clone)]
struct Database {
    name: String,
    engine: String,
    /// Upper-cased table name → table.
    tables: BTreeMap<String, Table>,
    superusers_only: bool,
}

#[derive(Default)]
struct World {
    /// API key → user.
    keys: HashMap<String, User>,
    databases: BTreeMap<u64, Database>,
    cards: BTreeMap<u64, Value>,
    dashboards: BTreeMap<u64, Value>,
    next_id: u64,
    clock: u64,
    rate_limit: fake_http::RateLimit,
    received: Vec<Received>,
}

impl World {
    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn now(&mut self) -> String {
        self.clock += 1;
        format!(
            "2026-12-01T10:{:02}:{:02}.000Z",
            (self.clock / 60) % 60,
            self.clock % 60
        )
    }
}

#[derive(Clone)]
pub struct FakeMetabase {
    pub base_url: String,
    world: Arc<Mutex<World>>,
}

fn text(status: StatusCode, body: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.to_owned(),
    )
        .into_response()
}

fn forbidden() -> Response {
    text(
        StatusCode::FORBIDDEN,
        "You don't have permissions to do that.",
    )
}

fn not_found() -> Response {
    text(StatusCode::NOT_FOUND, "Not found.")
}

/// Metabase's 400 for a parameter that fails validation.
fn invalid(param: &str, message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({"errors": {param: message}, "specific-errors": {param: [message]}})),
    )
        .into_response()
}

fn json_status(status: StatusCode, value: Value) -> Response {
    (status, axum::Json(value)).into_response()
}

/// A positive integer id (Metabase also takes 21-character NanoIDs: cards
/// and dashboards here have none, so such an id is simply not found).
fn parse_id(param: &str, raw: &str) -> Result<Option<u64>, Response> {
    match raw.parse::<u64>() {
        Ok(0) | Err(_)
            if !(raw.len() == 21
                && raw
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')) =>
        {
            Err(invalid(
                param,
                "value must be an integer greater than zero., or String must be a valid 21-character NanoID string.",
            ))
        }
        Ok(id) => Ok(Some(id)),
        Err(_) => Ok(None),
    }
}

impl FakeMetabase {
    pub async fn start() -> FakeMetabase {
        let (listener, base_url) = fake_http::listen().await;
        let fake = FakeMetabase {
            base_url,
            world: Arc::new(Mutex::new(World {
                next_id: 100,
                ..Default::default()
            })),
        };
        let app = axum::Router::new()
            .route("/api/user/current", get(current_user))
            .route("/api/dataset", post(dataset))
            .route("/api/dataset/", post(dataset))
            .route("/api/database", get(databases))
            .route("/api/database/", get(databases))
            .route("/api/card", get(list_cards))
            .route("/api/card/", get(list_cards))
            .route("/api/card/{id}", get(get_card).delete(delete_card))
            .route("/api/card/{id}/query", post(query_card))
            .route(
                "/api/dashboard/{id}",
                get(get_dashboard)
                    .put(put_dashboard)
                    .delete(delete_dashboard),
            )
            .fallback(|| async { not_found() })
            .with_state(fake.clone());
        fake_http::serve(listener, app);
        fake
    }

    /// A user acting through `api_key`; returns the user's id.
    pub fn add_user(
        &self,
        email: &str,
        first: &str,
        last: &str,
        api_key: &str,
        superuser: bool,
    ) -> u64 {
        let mut world = self.world.lock().unwrap();
        let id = world.keys.len() as u64 + 1;
        world.keys.insert(
            api_key.into(),
            User {
                id,
                email: email.into(),
                first_name: first.into(),
                last_name: last.into(),
                is_superuser: superuser,
            },
        );
        id
    }

    /// A database; returns its id.
    pub fn add_database(&self, name: &str, engine: &str) -> u64 {
        let mut world = self.world.lock().unwrap();
        let id = world.databases.len() as u64 + 1;
        world.databases.insert(
            id,
            Database {
                name: name.into(),
                engine: engine.into(),
                tables: BTreeMap::new(),
                superusers_only: false,
            },
        );
        id
    }

    /// A table of `database` with (NAME, base_type) columns.
    pub fn add_table(
        &self,
        database: u64,
        name: &str,
        columns: &[(&str, &str)],
        rows: Vec<Vec<Value>>,
    ) {
        let mut world = self.world.lock().unwrap();
        let id = world.id();
        world.databases.get_mut(&database).unwrap().tables.insert(
            name.to_ascii_uppercase(),
            Table {
                id,
                columns: columns
                    .iter()
                    .map(|(n, t)| (n.to_ascii_uppercase(), (*t).to_owned()))
                    .collect(),
                rows,
            },
        );
    }

    /// A saved native question; returns its id.
    pub fn add_card(&self, name: &str, database: u64, sql: &str, creator: u64) -> u64 {
        let mut world = self.world.lock().unwrap();
        let id = world.id();
        let now = world.now();
        world.cards.insert(
            id,
            json!({
                "id": id,
                "name": name,
                "description": null,
                "display": "table",
                "type": "question",
                "database_id": database,
                "collection_id": null,
                "archived": false,
                "creator_id": creator,
                "query_type": "native",
                "legacy_query": {"database": database, "type": "native", "native": {"query": sql, "template-tags": {}}},
                "visualization_settings": {},
                "created_at": now,
                "updated_at": now,
            }),
        );
        id
    }

    pub fn archive_card(&self, id: u64) {
        self.world.lock().unwrap().cards.get_mut(&id).unwrap()["archived"] = json!(true);
    }

    /// A dashboard showing `cards` side by side; returns its id.
    pub fn add_dashboard(&self, name: &str, cards: &[u64], creator: u64) -> u64 {
        let mut world = self.world.lock().unwrap();
        let id = world.id();
        let now = world.now();
        let mut dashcards = Vec::new();
        for (i, card) in cards.iter().enumerate() {
            let dashcard = world.id();
            dashcards.push(json!({"id": dashcard, "card_id": card, "row": 0, "col": i * 12, "size_x": 12, "size_y": 6, "dashboard_tab_id": null, "parameter_mappings": [], "series": []}));
        }
        world.dashboards.insert(
            id,
            json!({
                "id": id,
                "name": name,
                "description": null,
                "dashcards": dashcards,
                "parameters": [],
                "tabs": [],
                "collection_id": null,
                "archived": false,
                "width": "fixed",
                "creator_id": creator,
                "created_at": now,
                "updated_at": now,
            }),
        );
        id
    }

    pub fn card_exists(&self, id: u64) -> bool {
        self.world.lock().unwrap().cards.contains_key(&id)
    }

    pub fn dashboard(&self, id: u64) -> Option<Value> {
        self.world.lock().unwrap().dashboards.get(&id).cloned()
    }

    pub fn table_exists(&self, database: u64, name: &str) -> bool {
        self.world.lock().unwrap().databases[&database]
            .tables
            .contains_key(&name.to_ascii_uppercase())
    }

    /// Only superusers may use `database` from now on.
    pub fn restrict_database(&self, database: u64) {
        self.world
            .lock()
            .unwrap()
            .databases
            .get_mut(&database)
            .unwrap()
            .superusers_only = true;
    }

    pub fn rate_limit_next(&self, n: u32, retry_after_secs: u64) {
        self.world
            .lock()
            .unwrap()
            .rate_limit
            .next(n, retry_after_secs);
    }

    pub fn received(&self) -> Vec<Received> {
        self.world.lock().unwrap().received.clone()
    }

    fn begin(
        &self,
        headers: &HeaderMap,
        method: &str,
        path: String,
        query: &HashMap<String, String>,
        body: Value,
    ) -> Result<User, Response> {
        let key = headers
            .get("x-api-key")
            .or_else(|| headers.get("x-metabase-session"))
            .and_then(|v| v.to_str().ok());
        let mut world = self.world.lock().unwrap();
        let Some(user) = key.and_then(|k| world.keys.get(k)).cloned() else {
            return Err(text(StatusCode::UNAUTHORIZED, "Unauthenticated"));
        };
        let limited = world.rate_limit.take();
        world.received.push(Received {
            rate_limited: limited.is_some(),
            ..Received::new(method, path, query, &user.email, body)
        });
        if let Some(secs) = limited {
            let mut response = text(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests");
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, secs.to_string().parse().unwrap());
            return Err(response);
        }
        Ok(user)
    }
}

// ---------------------------------------------------------------- SQL engine

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    Num(String),
    Sym(char),
}

fn tokenize(sql: &str) -> Option<Vec<Tok>> {
    let mut out = Vec::new();
    let chars: Vec<char> = sql.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '\'' {
            let end = chars[i + 1..].iter().position(|&x| x == '\'')?;
            out.push(Tok::Str(chars[i + 1..i + 1 + end].iter().collect()));
            i += end + 2;
        } else if c == '"' {
            let end = chars[i + 1..].iter().position(|&x| x == '"')?;
            out.push(Tok::Word(chars[i + 1..i + 1 + end].iter().collect()));
            i += end + 2;
        } else if c.is_ascii_digit() {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            out.push(Tok::Num(chars[start..i].iter().collect()));
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || matches!(chars[i], '_' | '.')) {
                i += 1;
            }
            out.push(Tok::Word(chars[start..i].iter().collect()));
        } else if "(),*=;".contains(c) {
            out.push(Tok::Sym(c));
            i += 1;
        } else {
            return None;
        }
    }
    Some(out)
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

fn loose_eq(a: &Value, b: &Value) -> bool {
    a == b || (a.as_f64().is_some() && a.as_f64() == b.as_f64())
}

/// What a statement produced: a result set, or nothing (DML/DDL ran).
enum Ran {
    Rows {
        cols: Vec<(String, String)>,
        rows: Vec<Vec<Value>>,
    },
    NoResultSet,
}

/// H2's message for a failing statement.
fn h2_error(message: &str, sql: &str, code: u32) -> String {
    format!("{message}; SQL statement:\n{sql} [{code}-214]")
}

fn table_name(tok: Option<&Tok>) -> Option<String> {
    match tok {
        Some(Tok::Word(w)) => Some(
            w.rsplit('.')
                .next()
                .unwrap_or(w)
                .trim_matches('"')
                .to_ascii_uppercase(),
        ),
        _ => None,
    }
}

/// Where-clause: `col = literal` or nothing.
fn filter(table: &Table, toks: &[Tok], sql: &str) -> Result<Option<(usize, Value)>, String> {
    match toks {
        [] => Ok(None),
        [Tok::Word(col), Tok::Sym('='), value] => {
            let index = table
                .columns
                .iter()
                .position(|(n, _)| n.eq_ignore_ascii_case(col))
                .ok_or_else(|| {
                    h2_error(
                        &format!("Column \"{}\" not found", col.to_ascii_uppercase()),
                        sql,
                        42122,
                    )
                })?;
            let value = literal(value)
                .ok_or_else(|| h2_error("Syntax error in SQL statement", sql, 42000))?;
            Ok(Some((index, value)))
        }
        _ => Err(h2_error("Syntax error in SQL statement", sql, 42000)),
    }
}

fn run_sql(db: &mut Database, sql: &str) -> Result<Ran, String> {
    let syntax = || h2_error("Syntax error in SQL statement", sql, 42000);
    let mut toks = tokenize(sql).ok_or_else(syntax)?;
    while toks.last() == Some(&Tok::Sym(';')) {
        toks.pop();
    }
    let first = match toks.first() {
        Some(Tok::Word(w)) => w.to_ascii_uppercase(),
        _ => return Err(syntax()),
    };
    let missing = |name: &str| h2_error(&format!("Table \"{name}\" not found"), sql, 42102);
    match first.as_str() {
        "SELECT" => {
            let from = toks
                .iter()
                .position(|t| is_kw(Some(t), "FROM"))
                .ok_or_else(syntax)?;
            let name = table_name(toks.get(from + 1)).ok_or_else(syntax)?;
            let table = db.tables.get(&name).ok_or_else(|| missing(&name))?;
            let rest = &toks[from + 2..];
            let where_at = rest.iter().position(|t| is_kw(Some(t), "WHERE"));
            let limit_at = rest.iter().position(|t| is_kw(Some(t), "LIMIT"));
            let where_toks = match where_at {
                Some(w) => &rest[w + 1..limit_at.unwrap_or(rest.len())],
                None => &[][..],
            };
            let cond = filter(table, where_toks, sql)?;
            let limit = match limit_at {
                Some(l) => match rest.get(l + 1) {
                    Some(Tok::Num(n)) => n.parse::<usize>().map_err(|_| syntax())?,
                    _ => return Err(syntax()),
                },
                None => usize::MAX,
            };
            let rows: Vec<&Vec<Value>> = table
                .rows
                .iter()
                .filter(|row| cond.as_ref().is_none_or(|(i, v)| loose_eq(&row[*i], v)))
                .take(limit)
                .collect();
            let selected = &toks[1..from];
            if selected.len() == 4
                && is_kw(selected.first(), "COUNT")
                && selected[1..] == [Tok::Sym('('), Tok::Sym('*'), Tok::Sym(')')]
            {
                return Ok(Ran::Rows {
                    cols: vec![("COUNT(*)".into(), "type/BigInteger".into())],
                    rows: vec![vec![json!(rows.len())]],
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
                            .position(|(n, _)| n.eq_ignore_ascii_case(name))
                            .ok_or_else(|| {
                                h2_error(
                                    &format!("Column \"{}\" not found", name.to_ascii_uppercase()),
                                    sql,
                                    42122,
                                )
                            }),
                        _ => Err(syntax()),
                    })
                    .collect::<Result<_, _>>()?
            };
            Ok(Ran::Rows {
                cols: indexes.iter().map(|&i| table.columns[i].clone()).collect(),
                rows: rows
                    .iter()
                    .map(|row| indexes.iter().map(|&i| row[i].clone()).collect())
                    .collect(),
            })
        }
        "INSERT" => {
            if !is_kw(toks.get(1), "INTO") {
                return Err(syntax());
            }
            let name = table_name(toks.get(2)).ok_or_else(syntax)?;
            let table = db.tables.get_mut(&name).ok_or_else(|| missing(&name))?;
            let values_at = toks
                .iter()
                .position(|t| is_kw(Some(t), "VALUES"))
                .ok_or_else(syntax)?;
            let mut current: Option<Vec<Value>> = None;
            let mut new_rows = Vec::new();
            for tok in &toks[values_at + 1..] {
                match (tok, current.as_mut()) {
                    (Tok::Sym('('), None) => current = Some(Vec::new()),
                    (Tok::Sym(')'), Some(_)) => new_rows.push(current.take().unwrap()),
                    (Tok::Sym(','), _) => {}
                    (other, Some(row)) => row.push(literal(other).ok_or_else(syntax)?),
                    _ => return Err(syntax()),
                }
            }
            if new_rows.iter().any(|r| r.len() != table.columns.len()) {
                return Err(h2_error("Column count does not match", sql, 21002));
            }
            table.rows.extend(new_rows);
            Ok(Ran::NoResultSet)
        }
        "DELETE" => {
            if !is_kw(toks.get(1), "FROM") {
                return Err(syntax());
            }
            let name = table_name(toks.get(2)).ok_or_else(syntax)?;
            let table = db.tables.get_mut(&name).ok_or_else(|| missing(&name))?;
            let cond = if is_kw(toks.get(3), "WHERE") {
                filter(table, &toks[4..], sql)?
            } else if toks.len() == 3 {
                None
            } else {
                return Err(syntax());
            };
            table
                .rows
                .retain(|row| !cond.as_ref().is_none_or(|(i, v)| loose_eq(&row[*i], v)));
            Ok(Ran::NoResultSet)
        }
        "DROP" => {
            if !is_kw(toks.get(1), "TABLE") {
                return Err(syntax());
            }
            let name = table_name(toks.get(2)).ok_or_else(syntax)?;
            db.tables.remove(&name).ok_or_else(|| missing(&name))?;
            Ok(Ran::NoResultSet)
        }
        _ => Err(syntax()),
    }
}

/// `{{tag}}` replaced by the matching parameter's value (quoted if a string).
fn substitute(sql: &str, parameters: &[Value]) -> Result<String, String> {
    let mut out = sql.to_owned();
    while let Some(start) = out.find("{{") {
        let end = out[start..]
            .find("}}")
            .map(|e| start + e)
            .ok_or("Invalid template tag")?;
        let tag = out[start + 2..end].trim().to_owned();
        let value = parameters
            .iter()
            .find(|p| {
                p["target"]
                    .get(1)
                    .and_then(|t| t.get(1))
                    .and_then(Value::as_str)
                    == Some(tag.as_str())
            })
            .map(|p| p["value"].clone())
            .ok_or_else(|| {
                format!("You'll need to pick a value for '{tag}' before this query can run.")
            })?;
        let rendered = match value {
            Value::String(s) => format!("'{s}'"),
            Value::Array(a) if a.len() == 1 => match &a[0] {
                Value::String(s) => format!("'{s}'"),
                other => other.to_string(),
            },
            other => other.to_string(),
        };
        out.replace_range(start..end + 2, &rendered);
    }
    Ok(out)
}

/// The 202 answer of a query endpoint (completed or failed).
fn query_answer(
    world: &mut World,
    database: u64,
    sql: &str,
    parameters: &[Value],
    context: &str,
    card_id: Option<u64>,
) -> Response {
    let started_at = world.now();
    let mut answer = json!({
        "database_id": database,
        "started_at": started_at,
        "json_query": {"database": database, "type": "native", "native": {"query": sql}, "parameters": parameters},
        "context": context,
        "running_time": 7,
    });
    if let Some(card) = card_id {
        answer["card_id"] = json!(card);
    }
    let outcome = substitute(sql, parameters).and_then(|rendered| {
        let db = world.databases.get_mut(&database).expect("checked");
        run_sql(db, &rendered).map(|ran| (rendered, ran))
    });
    match outcome {
        Ok((rendered, Ran::Rows { cols, rows })) => {
            answer["status"] = json!("completed");
            answer["row_count"] = json!(rows.len());
            answer["data"] = json!({
                "rows": rows,
                "cols": cols.iter().map(|(n, t)| json!({"name": n, "display_name": n, "base_type": t, "source": "native"})).collect::<Vec<_>>(),
                "native_form": {"query": rendered},
                "results_timezone": "UTC",
            });
        }
        Ok((_, Ran::NoResultSet)) => {
            answer["status"] = json!("failed");
            answer["error"] = json!("No results were returned by the query.");
            answer["row_count"] = json!(0);
            answer["data"] = json!({"rows": [], "cols": []});
        }
        Err(error) => {
            answer["status"] = json!("failed");
            answer["error"] = json!(error);
            answer["error_type"] = json!("invalid-query");
            answer["row_count"] = json!(0);
            answer["data"] = json!({"rows": [], "cols": []});
        }
    }
    json_status(StatusCode::ACCEPTED, answer)
}

// ---------------------------------------------------------------- handlers

async fn current_user(State(f): State<FakeMetabase>, headers: HeaderMap, uri: Uri) -> Response {
    let user = match f.begin(
        &headers,
        "GET",
        uri.path().to_owned(),
        &HashMap::new(),
        Value::Null,
    ) {
        Ok(user) => user,
        Err(response) => return response,
    };
    json_status(
        StatusCode::OK,
        json!({
            "id": user.id,
            "email": user.email,
            "first_name": user.first_name,
            "last_name": user.last_name,
            "common_name": format!("{} {}", user.first_name, user.last_name),
            "is_superuser": user.is_superuser,
            "is_active": true,
            "is_qbnewb": false,
            "locale": null,
            "date_joined": "2026-01-05T09:00:00.000Z",
            "last_login": "2026-12-01T08:00:00.000Z",
        }),
    )
}

async fn dataset(
    State(f): State<FakeMetabase>,
    headers: HeaderMap,
    uri: Uri,
    body: Bytes,
) -> Response {
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    let user = match f.begin(
        &headers,
        "POST",
        uri.path().to_owned(),
        &HashMap::new(),
        parsed.clone().unwrap_or(Value::Null),
    ) {
        Ok(user) => user,
        Err(response) => return response,
    };
    let Some(Value::Object(request)) = parsed else {
        return invalid("body", "value must be a map");
    };
    let Some(database) = request
        .get("database")
        .and_then(Value::as_u64)
        .filter(|d| *d > 0)
    else {
        return invalid("database", "value must be an integer greater than zero.");
    };
    let mut world = f.world.lock().unwrap();
    match world.databases.get(&database) {
        None => return not_found(),
        Some(db) if db.superusers_only && !user.is_superuser => return forbidden(),
        Some(_) => {}
    }
    match request.get("type").and_then(Value::as_str) {
        Some("native") => {}
        Some("query") => {
            return json_status(
                StatusCode::ACCEPTED,
                json!({"status": "failed", "error": "MBQL queries are not supported by this fake", "database_id": database, "row_count": 0, "data": {"rows": [], "cols": []}}),
            );
        }
        _ => return invalid("type", "enum of native, query"),
    }
    let Some(sql) = request
        .get("native")
        .and_then(|n| n.get("query"))
        .and_then(Value::as_str)
    else {
        return json_status(
            StatusCode::ACCEPTED,
            json!({"status": "failed", "error": "Invalid query: missing native.query", "database_id": database, "row_count": 0, "data": {"rows": [], "cols": []}}),
        );
    };
    let parameters = request
        .get("parameters")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    query_answer(&mut world, database, sql, &parameters, "ad-hoc", None)
}

async fn databases(
    State(f): State<FakeMetabase>,
    headers: HeaderMap,
    uri: Uri,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let user = match f.begin(&headers, "GET", uri.path().to_owned(), &q, Value::Null) {
        Ok(user) => user,
        Err(response) => return response,
    };
    let include_tables = match q.get("include").map(String::as_str) {
        None | Some("") => false,
        Some("tables") => true,
        Some(_) => {
            return invalid(
                "include",
                "include must be either empty or the value 'tables'",
            );
        }
    };
    let world = f.world.lock().unwrap();
    let mut data: Vec<Value> = world
        .databases
        .iter()
        .filter(|(_, db)| user.is_superuser || !db.superusers_only)
        .map(|(id, db)| {
            let mut entry = json!({"id": id, "name": db.name, "engine": db.engine, "is_sample": false, "is_saved_questions": false, "native_permissions": "write"});
            if include_tables {
                entry["tables"] = db
                    .tables
                    .iter()
                    .map(|(name, t)| json!({"id": t.id, "db_id": id, "name": name, "schema": "PUBLIC", "display_name": name.to_lowercase()}))
                    .collect();
            }
            entry
        })
        .collect();
    if q.get("saved").is_some_and(|v| v == "true") {
        data.push(json!({"id": -1337, "name": "Saved Questions", "is_saved_questions": true}));
    }
    let total = data.len();
    json_status(StatusCode::OK, json!({"data": data, "total": total}))
}

/// The card as GET /api/card/:id shows it (MBQL 5 unless legacy).
fn card_view(card: &Value, legacy: bool) -> Value {
    let mut view = card.clone();
    let legacy_query = view
        .as_object_mut()
        .unwrap()
        .remove("legacy_query")
        .unwrap();
    view["dataset_query"] = if legacy {
        legacy_query
    } else {
        json!({
            "lib/type": "mbql/query",
            "database": legacy_query["database"],
            "stages": [{"lib/type": "mbql.stage/native", "native": legacy_query["native"]["query"], "template-tags": legacy_query["native"]["template-tags"]}],
        })
    };
    view
}

async fn list_cards(
    State(f): State<FakeMetabase>,
    headers: HeaderMap,
    uri: Uri,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let user = match f.begin(&headers, "GET", uri.path().to_owned(), &q, Value::Null) {
        Ok(user) => user,
        Err(response) => return response,
    };
    let filter = q.get("f").map(String::as_str).unwrap_or("all");
    if ![
        "all",
        "mine",
        "bookmarked",
        "database",
        "table",
        "using_model",
        "using_metric",
        "using_segment",
        "archived",
    ]
    .contains(&filter)
    {
        return invalid(
            "f",
            "nullable enum of all, mine, bookmarked, database, table, using_model, using_metric, using_segment, archived",
        );
    }
    let world = f.world.lock().unwrap();
    let cards: Vec<Value> = world
        .cards
        .values()
        .filter(|c| match filter {
            "archived" => c["archived"] == json!(true),
            "mine" => c["archived"] == json!(false) && c["creator_id"] == json!(user.id),
            "bookmarked" => false,
            _ => c["archived"] == json!(false),
        })
        .map(|c| card_view(c, true))
        .collect();
    json_status(StatusCode::OK, Value::Array(cards))
}

async fn get_card(
    State(f): State<FakeMetabase>,
    headers: HeaderMap,
    uri: Uri,
    Path(raw): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Err(response) = f.begin(&headers, "GET", uri.path().to_owned(), &q, Value::Null) {
        return response;
    }
    let id = match parse_id("id", &raw) {
        Ok(Some(id)) => id,
        Ok(None) => return not_found(),
        Err(response) => return response,
    };
    let legacy = match q.get("legacy-mbql").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return invalid("legacy-mbql", "nullable boolean"),
    };
    let world = f.world.lock().unwrap();
    match world.cards.get(&id) {
        Some(card) => json_status(StatusCode::OK, card_view(card, legacy)),
        None => not_found(),
    }
}

async fn query_card(
    State(f): State<FakeMetabase>,
    headers: HeaderMap,
    uri: Uri,
    Path(raw): Path<String>,
    body: Bytes,
) -> Response {
    let parsed: Value = if body.is_empty() {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(_) => return invalid("body", "value must be a map"),
        }
    };
    let user = match f.begin(
        &headers,
        "POST",
        uri.path().to_owned(),
        &HashMap::new(),
        parsed.clone(),
    ) {
        Ok(user) => user,
        Err(response) => return response,
    };
    let id = match parse_id("card-id", &raw) {
        Ok(Some(id)) => id,
        Ok(None) => return not_found(),
        Err(response) => return response,
    };
    if parsed.get("ignore_cache").is_some_and(|v| !v.is_boolean()) {
        return invalid("ignore_cache", "boolean");
    }
    let mut world = f.world.lock().unwrap();
    let Some(card) = world.cards.get(&id).cloned() else {
        return not_found();
    };
    let restricted = card["database_id"]
        .as_u64()
        .and_then(|d| world.databases.get(&d))
        .is_some_and(|d| d.superusers_only);
    if restricted && !user.is_superuser {
        return forbidden();
    }
    if let Some(dashboard) = parsed.get("dashboard_id").filter(|v| !v.is_null()) {
        let on_it = dashboard
            .as_u64()
            .and_then(|d| world.dashboards.get(&d))
            .is_some_and(|d| {
                d["dashcards"]
                    .as_array()
                    .is_some_and(|cards| cards.iter().any(|c| c["card_id"] == json!(id)))
            });
        if !on_it {
            return not_found();
        }
    }
    let database = card["database_id"].as_u64().unwrap();
    let sql = card["legacy_query"]["native"]["query"]
        .as_str()
        .unwrap()
        .to_owned();
    let parameters = parsed
        .get("parameters")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    query_answer(
        &mut world,
        database,
        &sql,
        &parameters,
        "question",
        Some(id),
    )
}

async fn delete_card(
    State(f): State<FakeMetabase>,
    headers: HeaderMap,
    uri: Uri,
    Path(raw): Path<String>,
) -> Response {
    if let Err(response) = f.begin(
        &headers,
        "DELETE",
        uri.path().to_owned(),
        &HashMap::new(),
        Value::Null,
    ) {
        return response;
    }
    let id = match raw.parse::<u64>() {
        Ok(id) if id > 0 => id,
        _ => return invalid("id", "value must be an integer greater than zero."),
    };
    let mut world = f.world.lock().unwrap();
    if world.cards.remove(&id).is_none() {
        return not_found();
    }
    // The card leaves every dashboard too.
    for dashboard in world.dashboards.values_mut() {
        if let Some(cards) = dashboard["dashcards"].as_array_mut() {
            cards.retain(|c| c["card_id"] != json!(id));
        }
    }
    StatusCode::NO_CONTENT.into_response()
}

/// The dashboard as GET shows it: each dashcard with its card.
fn dashboard_view(world: &World, dashboard: &Value) -> Value {
    let mut view = dashboard.clone();
    if let Some(cards) = view["dashcards"].as_array_mut() {
        for dashcard in cards {
            let card = dashcard["card_id"]
                .as_u64()
                .and_then(|id| world.cards.get(&id))
                .map(|c| json!({"id": c["id"], "name": c["name"], "display": c["display"], "database_id": c["database_id"]}))
                .unwrap_or(Value::Null);
            dashcard["card"] = card;
        }
    }
    view
}

async fn get_dashboard(
    State(f): State<FakeMetabase>,
    headers: HeaderMap,
    uri: Uri,
    Path(raw): Path<String>,
) -> Response {
    if let Err(response) = f.begin(
        &headers,
        "GET",
        uri.path().to_owned(),
        &HashMap::new(),
        Value::Null,
    ) {
        return response;
    }
    let id = match parse_id("id", &raw) {
        Ok(Some(id)) => id,
        Ok(None) => return not_found(),
        Err(response) => return response,
    };
    let world = f.world.lock().unwrap();
    match world.dashboards.get(&id) {
        Some(d) => json_status(StatusCode::OK, dashboard_view(&world, d)),
        None => not_found(),
    }
}

async fn put_dashboard(
    State(f): State<FakeMetabase>,
    headers: HeaderMap,
    uri: Uri,
    Path(raw): Path<String>,
    body: Bytes,
) -> Response {
    let parsed: Option<Value> = serde_json::from_slice(&body).ok();
    if let Err(response) = f.begin(
        &headers,
        "PUT",
        uri.path().to_owned(),
        &HashMap::new(),
        parsed.clone().unwrap_or(Value::Null),
    ) {
        return response;
    }
    let id = match raw.parse::<u64>() {
        Ok(id) if id > 0 => id,
        _ => return invalid("id", "value must be an integer greater than zero."),
    };
    let Some(Value::Object(changes)) = parsed else {
        return invalid("body", "value must be a map");
    };
    if let Some(name) = changes.get("name")
        && !name.is_null()
        && name.as_str().is_none_or(|n| n.trim().is_empty())
    {
        return invalid("name", "nullable value must be a non-blank string.");
    }
    if let Some(width) = changes.get("width")
        && !matches!(width.as_str(), Some("fixed" | "full"))
    {
        return invalid("width", "enum of fixed, full");
    }
    let mut world = f.world.lock().unwrap();
    if !world.dashboards.contains_key(&id) {
        return not_found();
    }
    let mut new_dashcards = None;
    if let Some(cards) = changes.get("dashcards").filter(|v| !v.is_null()) {
        let message = "nullable value must be seq of maps in which ids are unique";
        let Some(cards) = cards.as_array() else {
            return invalid("dashcards", message);
        };
        let mut ids = std::collections::HashSet::new();
        let mut out = Vec::new();
        for card in cards {
            let complete = ["id", "size_x", "size_y", "row", "col"]
                .iter()
                .all(|k| card.get(k).is_some_and(Value::is_i64));
            if !complete || !ids.insert(card["id"].as_i64()) {
                return invalid("dashcards", message);
            }
            if let Some(card_id) = card.get("card_id").and_then(Value::as_u64)
                && !world.cards.contains_key(&card_id)
            {
                return not_found();
            }
            let mut card = card.clone();
            if card["id"].as_i64().is_some_and(|i| i < 0) {
                card["id"] = json!(world.id());
            }
            card.as_object_mut().unwrap().remove("card");
            out.push(card);
        }
        new_dashcards = Some(Value::Array(out));
    }
    let now = world.now();
    let dashboard = world.dashboards.get_mut(&id).unwrap();
    for key in [
        "name",
        "description",
        "archived",
        "collection_id",
        "parameters",
        "tabs",
        "width",
        "points_of_interest",
        "caveats",
        "enable_embedding",
        "embedding_params",
        "position",
        "collection_position",
        "cache_ttl",
        "show_in_getting_started",
        "embedding_type",
    ] {
        if let Some(value) = changes.get(key) {
            dashboard[key] = value.clone();
        }
    }
    if let Some(cards) = new_dashcards {
        dashboard["dashcards"] = cards;
    }
    dashboard["updated_at"] = json!(now);
    let dashboard = dashboard.clone();
    json_status(StatusCode::OK, dashboard_view(&world, &dashboard))
}

async fn delete_dashboard(
    State(f): State<FakeMetabase>,
    headers: HeaderMap,
    uri: Uri,
    Path(raw): Path<String>,
) -> Response {
    if let Err(response) = f.begin(
        &headers,
        "DELETE",
        uri.path().to_owned(),
        &HashMap::new(),
        Value::Null,
    ) {
        return response;
    }
    let id = match raw.parse::<u64>() {
        Ok(id) if id > 0 => id,
        _ => return invalid("id", "value must be an integer greater than zero."),
    };
    match f.world.lock().unwrap().dashboards.remove(&id) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => not_found(),
    }
}
