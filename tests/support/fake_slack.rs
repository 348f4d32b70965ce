//! A local Slack Web API that follows `../shared/specs/slack/openapi-subset.json`
//! for the methods `catalogs/slack.yaml` uses: `/api/<method>` (swagger
//! basePath `/api`), the token as `Authorization: Bearer` (or a `token`
//! argument), GET arguments in the query, POST arguments form-encoded or JSON,
//! every failure HTTP 200 `{"ok": false, "error": …}` (`not_authed`,
//! `invalid_auth`, `channel_not_found`…), cursor pagination through
//! `response_metadata.next_cursor` (empty on the last page), and 429 with
//! `Retry-After` and `{"ok": false, "error": "ratelimited"}` when told to.
//! It keeps honest state (posted messages can be read back, updated,
//! deleted; archived channels refuse posts) and records what it receives.
#![allow(dead_code)]
// Handlers answer early with a whole `Response`, as axum code does.
#![allow(clippy::result_large_err)]

#[path = "fake_http.rs"]
#[allow(clippy::duplicate_mod)] // each fake brings the kernel; a test may use several
mod fake_http;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

pub const TEAM_ID: &str = "T0ACME0001";

/// One request the fake accepted the token of.
#[derive(Debug, Clone)]
pub struct Received {
    pub http_method: String,
    /// The Web API method, e.g. `chat.postMessage`.
    pub method: String,
    /// The user id the token belongs to.
    pub who: String,
    /// The arguments (query and body) as strings, as Slack reads them.
    pub args: BTreeMap<String, String>,
    /// `application/x-www-form-urlencoded`, `application/json` or empty (GET).
    pub content_type: String,
}

#[derive(Default)]
struct World {
    /// token → user id.
    tokens: HashMap<String, String>,
    /// user id → user object.
    users: BTreeMap<String, Value>,
    /// channels in creation order.
    channels: Vec<Value>,
    /// channel id → messages, oldest first.
    messages: HashMap<String, Vec<Value>>,
    reminders: Vec<Value>,
    received: Vec<Received>,
    /// The next `n` requests answer 429 with `Retry-After: secs`.
    rate_limited: Option<(u32, u64)>,
    /// Monotonic message clock (seconds part of `ts`).
    clock: u64,
    next_reminder: u32,
}

#[derive(Clone)]
pub struct FakeSlack {
    /// What a catalog's `base_url` is: the server root plus `/api`.
    pub base_url: String,
    world: Arc<Mutex<World>>,
}

fn ok(mut body: Value) -> Response {
    body["ok"] = json!(true);
    Json(body).into_response()
}

fn fail(error: &str) -> Response {
    Json(json!({"ok": false, "error": error})).into_response()
}

fn cursor_for(prefix: &str, at: usize) -> String {
    STANDARD.encode(format!("{prefix}:{at}"))
}

fn cursor_at(prefix: &str, cursor: Option<&String>) -> Result<usize, ()> {
    match cursor.map(String::as_str) {
        None | Some("") => Ok(0),
        Some(c) => {
            let decoded = STANDARD.decode(c).map_err(|_| ())?;
            let text = String::from_utf8(decoded).map_err(|_| ())?;
            text.strip_prefix(&format!("{prefix}:"))
                .and_then(|n| n.parse().ok())
                .ok_or(())
        }
    }
}

impl FakeSlack {
    pub async fn start() -> FakeSlack {
        let (listener, base_url) = fake_http::listen().await;
        let fake = FakeSlack {
            base_url: format!("{base_url}/api"),
            world: Arc::new(Mutex::new(World {
                clock: 1_764_600_000,
                next_reminder: 1,
                ..Default::default()
            })),
        };
        let app = axum::Router::new()
            .route("/api/{method}", any(dispatch))
            .with_state(fake.clone());
        fake_http::serve(listener, app);
        fake
    }

    /// A workspace member with a user token.
    pub fn add_user(&self, id: &str, name: &str, real_name: &str, email: &str, token: &str) {
        let mut world = self.world.lock().unwrap();
        world.tokens.insert(token.into(), id.into());
        world.users.insert(
            id.into(),
            json!({
                "id": id, "team_id": TEAM_ID, "name": name, "deleted": false,
                "real_name": real_name, "tz": "Europe/Paris", "tz_label": "Central European Time",
                "tz_offset": 3600, "is_admin": false, "is_owner": false, "is_bot": false,
                "is_app_user": false, "updated": 1_700_000_000,
                "profile": {
                    "real_name": real_name, "display_name": name, "email": email,
                    "title": "", "phone": "", "skype": "", "status_text": "", "status_emoji": "",
                    "avatar_hash": "g0000000000", "real_name_normalized": real_name,
                    "display_name_normalized": name, "fields": {}
                }
            }),
        );
    }

    /// A public channel (creator: the first user).
    pub fn add_channel(&self, id: &str, name: &str, general: bool) {
        let mut world = self.world.lock().unwrap();
        let creator = world.users.keys().next().cloned().unwrap_or_default();
        let members = world.users.len();
        world.channels.push(json!({
            "id": id, "name": name, "name_normalized": name, "created": 1_700_000_000,
            "creator": creator, "is_channel": true, "is_group": false, "is_im": false,
            "is_mpim": false, "is_private": false, "is_archived": false, "is_general": general,
            "is_shared": false, "is_org_shared": false, "is_ext_shared": false, "is_member": true,
            "num_members": members,
            "topic": {"value": "", "creator": "", "last_set": 0},
            "purpose": {"value": format!("All about {name}"), "creator": creator, "last_set": 0}
        }));
        world.messages.entry(id.into()).or_default();
    }

    /// A message posted directly into the world (as if by another client).
    pub fn seed_message(&self, channel: &str, user: &str, text: &str) -> String {
        let mut world = self.world.lock().unwrap();
        world.clock += 1;
        let ts = format!("{}.000100", world.clock);
        world
            .messages
            .entry(channel.into())
            .or_default()
            .push(json!({
                "type": "message", "user": user, "text": text, "ts": ts, "team": TEAM_ID
            }));
        ts
    }

    pub fn received(&self) -> Vec<Received> {
        self.world.lock().unwrap().received.clone()
    }

    pub fn last(&self) -> Received {
        self.received().last().cloned().expect("a request")
    }

    /// The messages of a channel as stored (oldest first).
    pub fn messages(&self, channel: &str) -> Vec<Value> {
        self.world
            .lock()
            .unwrap()
            .messages
            .get(channel)
            .cloned()
            .unwrap_or_default()
    }

    pub fn channel(&self, id: &str) -> Option<Value> {
        self.world
            .lock()
            .unwrap()
            .channels
            .iter()
            .find(|c| c["id"] == id)
            .cloned()
    }

    pub fn reminders(&self) -> Vec<Value> {
        self.world.lock().unwrap().reminders.clone()
    }

    /// The next `count` requests answer 429 with `Retry-After: retry_after`.
    pub fn rate_limit(&self, count: u32, retry_after: u64) {
        self.world.lock().unwrap().rate_limited = Some((count, retry_after));
    }

    /// How many requests reached the fake for a Web API method (429s included).
    pub fn hits(&self, method: &str) -> usize {
        self.received()
            .iter()
            .filter(|r| r.method == method)
            .count()
    }
}

/// Arguments as Slack reads them: the query, then a form or JSON body.
fn arguments(
    headers: &HeaderMap,
    query: Option<&str>,
    body: &[u8],
) -> (BTreeMap<String, String>, String) {
    let mut args = BTreeMap::new();
    let pairs = |text: &str, args: &mut BTreeMap<String, String>| {
        if let Ok(url) = reqwest::Url::parse(&format!("http://x/?{text}")) {
            for (k, v) in url.query_pairs() {
                args.insert(k.into_owned(), v.into_owned());
            }
        }
    };
    if let Some(q) = query {
        pairs(q, &mut args);
    }
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_owned();
    if content_type == "application/x-www-form-urlencoded" {
        pairs(&String::from_utf8_lossy(body), &mut args);
    } else if content_type == "application/json"
        && let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body)
    {
        for (k, v) in map {
            let v = match v {
                Value::String(s) => s,
                other => other.to_string(),
            };
            args.insert(k, v);
        }
    }
    (args, content_type)
}

async fn dispatch(
    State(f): State<FakeSlack>,
    Path(method): Path<String>,
    http_method: Method,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let (args, content_type) = arguments(&headers, query.as_deref(), &body);
    // The token: the Authorization header (the only way with a JSON body), or a `token` argument.
    let token = fake_http::bearer(&headers)
        .map(str::to_owned)
        .or_else(|| args.get("token").cloned());
    let mut world = f.world.lock().unwrap();
    if let Some((count, retry_after)) = world.rate_limited {
        world.rate_limited = (count > 1).then(|| (count - 1, retry_after));
        world.received.push(Received {
            http_method: http_method.to_string(),
            method: method.clone(),
            who: String::new(),
            args: args.clone(),
            content_type: content_type.clone(),
        });
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", retry_after.to_string())],
            Json(json!({"ok": false, "error": "ratelimited"})),
        )
            .into_response();
    }
    let Some(token) = token else {
        return fail("not_authed");
    };
    let Some(who) = world.tokens.get(&token).cloned() else {
        return fail("invalid_auth");
    };
    world.received.push(Received {
        http_method: http_method.to_string(),
        method: method.clone(),
        who: who.clone(),
        args: args.clone(),
        content_type: content_type.clone(),
    });
    let writes = [
        "chat.postMessage",
        "chat.update",
        "chat.delete",
        "conversations.archive",
        "reminders.add",
    ];
    if writes.contains(&method.as_str()) && http_method != Method::POST {
        return fail("invalid_post_type");
    }
    if http_method == Method::POST
        && !matches!(
            content_type.as_str(),
            "application/x-www-form-urlencoded" | "application/json"
        )
    {
        return fail("invalid_form_data");
    }
    match method.as_str() {
        "auth.test" => ok(json!({
            "url": "https://acme.slack.com/", "team": "Acme", "team_id": TEAM_ID,
            "user": world.users[&who]["name"], "user_id": who, "is_enterprise_install": false
        })),
        "conversations.list" => conversations_list(&world, &args),
        "conversations.history" => conversations_history(&world, &args),
        "conversations.info" => match find_channel(&world, args.get("channel")) {
            Some(channel) => {
                let mut channel = channel.clone();
                if args.get("include_num_members").map(String::as_str) != Some("true") {
                    channel.as_object_mut().unwrap().remove("num_members");
                }
                ok(json!({"channel": channel}))
            }
            None => fail("channel_not_found"),
        },
        "users.info" => match args.get("user").and_then(|u| world.users.get(u)) {
            Some(user) => ok(json!({"user": user})),
            None => fail("user_not_found"),
        },
        "users.lookupByEmail" => {
            let Some(email) = args.get("email") else {
                return fail("invalid_arguments");
            };
            match world
                .users
                .values()
                .find(|u| u["profile"]["email"].as_str() == Some(email.as_str()))
            {
                Some(user) => ok(json!({"user": user})),
                None => fail("users_not_found"),
            }
        }
        "search.messages" => search_messages(&world, &token, &args),
        "chat.postMessage" => post_message(&mut world, &who, &args),
        "chat.update" => chat_update(&mut world, &who, &args),
        "chat.delete" => chat_delete(&mut world, &who, &args),
        "conversations.archive" => {
            let Some(index) = channel_index(&world, args.get("channel")) else {
                return fail("channel_not_found");
            };
            let channel = &mut world.channels[index];
            if channel["is_general"] == true {
                return fail("cant_archive_general");
            }
            if channel["is_archived"] == true {
                return fail("already_archived");
            }
            channel["is_archived"] = json!(true);
            ok(json!({}))
        }
        "reminders.add" => reminders_add(&mut world, &who, &args),
        _ => fail("unknown_method"),
    }
}

fn channel_index(world: &World, id_or_name: Option<&String>) -> Option<usize> {
    let wanted = id_or_name?.trim_start_matches('#');
    world
        .channels
        .iter()
        .position(|c| c["id"] == wanted || c["name"] == wanted)
}

fn find_channel<'a>(world: &'a World, id_or_name: Option<&String>) -> Option<&'a Value> {
    channel_index(world, id_or_name).map(|i| &world.channels[i])
}

fn limit(args: &BTreeMap<String, String>, default: usize) -> Result<usize, Response> {
    match args.get("limit") {
        None => Ok(default),
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=1000).contains(&n) => Ok(n),
            _ => Err(fail("invalid_limit")),
        },
    }
}

fn conversations_list(world: &World, args: &BTreeMap<String, String>) -> Response {
    let limit = match limit(args, 100) {
        Ok(l) => l,
        Err(e) => return e,
    };
    let Ok(start) = cursor_at("team", args.get("cursor")) else {
        return fail("invalid_cursor");
    };
    let types = args
        .get("types")
        .cloned()
        .unwrap_or_else(|| "public_channel".into());
    let exclude_archived = args.get("exclude_archived").map(String::as_str) == Some("true");
    let all: Vec<&Value> = world
        .channels
        .iter()
        .filter(|c| {
            types.split(',').any(|t| t.trim() == "public_channel") && c["is_private"] == false
        })
        .filter(|c| !(exclude_archived && c["is_archived"] == true))
        .collect();
    let page: Vec<Value> = all
        .iter()
        .skip(start)
        .take(limit)
        .map(|c| (*c).clone())
        .collect();
    let next = if start + limit < all.len() {
        cursor_for("team", start + limit)
    } else {
        String::new()
    };
    ok(json!({"channels": page, "response_metadata": {"next_cursor": next}}))
}

fn visible_in_history(message: &Value) -> bool {
    // Thread replies stay in their thread unless broadcast.
    match message.get("thread_ts") {
        Some(parent) => parent == &message["ts"] || message["subtype"] == "thread_broadcast",
        None => true,
    }
}

fn conversations_history(world: &World, args: &BTreeMap<String, String>) -> Response {
    let Some(channel) = find_channel(world, args.get("channel")) else {
        return fail("channel_not_found");
    };
    let limit = match limit(args, 100) {
        Ok(l) => l,
        Err(e) => return e,
    };
    let Ok(start) = cursor_at("next_ts", args.get("cursor")) else {
        return fail("invalid_cursor");
    };
    let bound = |name: &str| -> Result<Option<f64>, Response> {
        match args.get(name) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| fail(&format!("invalid_ts_{name}"))),
        }
    };
    let (latest, oldest) = match (bound("latest"), bound("oldest")) {
        (Ok(l), Ok(o)) => (l, o),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    let inclusive = args.get("inclusive").map(String::as_str) == Some("true");
    let id = channel["id"].as_str().unwrap();
    let newest_first: Vec<&Value> = world
        .messages
        .get(id)
        .map(|m| m.iter().rev().collect())
        .unwrap_or_default();
    let all: Vec<&Value> = newest_first
        .into_iter()
        .filter(|m| visible_in_history(m))
        .filter(|m| {
            let ts: f64 = m["ts"].as_str().unwrap().parse().unwrap();
            latest.is_none_or(|l| ts < l || (inclusive && ts == l))
                && oldest.is_none_or(|o| ts > o || (inclusive && ts == o))
        })
        .collect();
    let page: Vec<Value> = all
        .iter()
        .skip(start)
        .take(limit)
        .map(|m| (*m).clone())
        .collect();
    let has_more = start + limit < all.len();
    let mut answer = json!({
        "messages": page, "has_more": has_more, "pin_count": 0,
        "channel_actions_ts": null, "channel_actions_count": 0
    });
    if has_more {
        answer["response_metadata"] = json!({"next_cursor": cursor_for("next_ts", start + limit)});
    }
    ok(answer)
}

fn search_messages(world: &World, token: &str, args: &BTreeMap<String, String>) -> Response {
    if !token.starts_with("xoxp-") {
        return fail("not_allowed_token_type");
    }
    let Some(query) = args.get("query").filter(|q| !q.trim().is_empty()) else {
        return fail("no_query");
    };
    let count: usize = args
        .get("count")
        .and_then(|c| c.parse().ok())
        .unwrap_or(20)
        .clamp(1, 100);
    let page: usize = args
        .get("page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(1)
        .max(1);
    let words: Vec<String> = query.split_whitespace().map(str::to_lowercase).collect();
    let mut matches = Vec::new();
    for channel in &world.channels {
        let id = channel["id"].as_str().unwrap();
        for message in world.messages.get(id).into_iter().flatten() {
            let text = message["text"].as_str().unwrap_or("").to_lowercase();
            if words.iter().all(|w| text.contains(w.as_str())) {
                let user = message["user"].as_str().unwrap_or("");
                matches.push(json!({
                    "iid": format!("{id}-{}", message["ts"].as_str().unwrap()),
                    "type": "message", "team": TEAM_ID,
                    "channel": {"id": id, "name": channel["name"], "is_channel": true},
                    "user": user, "username": world.users.get(user).map(|u| u["name"].clone()),
                    "ts": message["ts"], "text": message["text"],
                    "permalink": format!("https://acme.slack.com/archives/{id}/p{}", message["ts"].as_str().unwrap().replace('.', "")),
                }));
            }
        }
    }
    if args.get("sort").map(String::as_str) == Some("timestamp") {
        matches.sort_by(|a, b| a["ts"].as_str().cmp(&b["ts"].as_str()));
        if args.get("sort_dir").map(String::as_str) != Some("asc") {
            matches.reverse();
        }
    }
    let total = matches.len();
    let pages = total.div_ceil(count).max(1);
    let page_matches: Vec<Value> = matches
        .into_iter()
        .skip((page - 1) * count)
        .take(count)
        .collect();
    ok(json!({
        "query": query,
        "messages": {
            "total": total,
            "matches": page_matches,
            "paging": {"count": count, "total": total, "page": page, "pages": pages},
            "pagination": {"total_count": total, "page": page, "per_page": count, "page_count": pages,
                           "first": (page - 1) * count + 1, "last": ((page * count).min(total))}
        }
    }))
}

fn post_message(world: &mut World, who: &str, args: &BTreeMap<String, String>) -> Response {
    let Some(index) = channel_index(world, args.get("channel")) else {
        return fail("channel_not_found");
    };
    if world.channels[index]["is_archived"] == true {
        return fail("is_archived");
    }
    let text = args.get("text").cloned().unwrap_or_default();
    let blocks = match args.get("blocks").map(|b| serde_json::from_str::<Value>(b)) {
        None => None,
        Some(Ok(blocks @ Value::Array(_))) => Some(blocks),
        Some(_) => return fail("invalid_blocks"),
    };
    if text.is_empty() && blocks.is_none() && args.get("attachments").is_none() {
        return fail("no_text");
    }
    if text.len() > 40_000 {
        return fail("msg_too_long");
    }
    let channel = world.channels[index]["id"].as_str().unwrap().to_owned();
    world.clock += 1;
    let ts = format!("{}.000200", world.clock);
    let mut message =
        json!({"type": "message", "user": who, "text": text, "ts": ts, "team": TEAM_ID});
    if let Some(blocks) = blocks {
        message["blocks"] = blocks;
    }
    if let Some(parent_ts) = args.get("thread_ts") {
        let messages = world.messages.get_mut(&channel).unwrap();
        let Some(parent) = messages.iter_mut().find(|m| m["ts"] == parent_ts.as_str()) else {
            return fail("thread_not_found");
        };
        parent["thread_ts"] = json!(parent_ts);
        parent["reply_count"] = json!(parent["reply_count"].as_u64().unwrap_or(0) + 1);
        message["thread_ts"] = json!(parent_ts);
        if args.get("reply_broadcast").map(String::as_str) == Some("true") {
            message["subtype"] = json!("thread_broadcast");
        }
    }
    world
        .messages
        .get_mut(&channel)
        .unwrap()
        .push(message.clone());
    ok(json!({"channel": channel, "ts": ts, "message": message}))
}

fn find_message<'a>(
    world: &'a mut World,
    args: &BTreeMap<String, String>,
) -> Result<(String, &'a mut Vec<Value>, usize), &'static str> {
    let Some(index) = channel_index(world, args.get("channel")) else {
        return Err("channel_not_found");
    };
    let channel = world.channels[index]["id"].as_str().unwrap().to_owned();
    let ts = args.get("ts").cloned().unwrap_or_default();
    let messages = world.messages.get_mut(&channel).unwrap();
    match messages.iter().position(|m| m["ts"] == ts.as_str()) {
        Some(at) => Ok((channel, messages, at)),
        None => Err("message_not_found"),
    }
}

fn chat_update(world: &mut World, who: &str, args: &BTreeMap<String, String>) -> Response {
    let (channel, messages, at) = match find_message(world, args) {
        Ok(found) => found,
        Err(e) => return fail(e),
    };
    if messages[at]["user"] != who {
        return fail("cant_update_message");
    }
    let text = args.get("text").cloned().unwrap_or_default();
    if text.is_empty() && args.get("blocks").is_none() {
        return fail("no_text");
    }
    let message = &mut messages[at];
    message["text"] = json!(text);
    message["edited"] = json!({"user": who, "ts": message["ts"]});
    let ts = message["ts"].clone();
    ok(json!({"channel": channel, "ts": ts, "text": text, "message": {"text": text}}))
}

fn chat_delete(world: &mut World, who: &str, args: &BTreeMap<String, String>) -> Response {
    let (channel, messages, at) = match find_message(world, args) {
        Ok(found) => found,
        Err(e) => return fail(e),
    };
    if messages[at]["user"] != who {
        return fail("cant_delete_message");
    }
    let removed = messages.remove(at);
    ok(json!({"channel": channel, "ts": removed["ts"]}))
}

fn reminders_add(world: &mut World, who: &str, args: &BTreeMap<String, String>) -> Response {
    let Some(text) = args.get("text").filter(|t| !t.is_empty()) else {
        return fail("invalid_arguments");
    };
    let now = world.clock;
    let Some(time) = args.get("time") else {
        return fail("invalid_arguments");
    };
    let when = if let Ok(n) = time.trim().parse::<u64>() {
        // A Unix timestamp, or seconds from now when within 24 hours.
        if n <= 86_400 { now + n } else { n }
    } else {
        let words: Vec<&str> = time.split_whitespace().collect();
        match words.as_slice() {
            ["in", n, unit] => match (n.parse::<u64>(), unit.trim_end_matches('s')) {
                (Ok(n), "minute") => now + n * 60,
                (Ok(n), "hour") => now + n * 3600,
                (Ok(n), "day") => now + n * 86_400,
                _ => return fail("cannot_parse"),
            },
            _ => return fail("cannot_parse"),
        }
    };
    let user = args.get("user").cloned().unwrap_or_else(|| who.to_owned());
    if !world.users.contains_key(&user) {
        return fail("user_not_found");
    }
    if user != who {
        return fail("cannot_add_others");
    }
    let id = format!("Rm{:08}", world.next_reminder);
    world.next_reminder += 1;
    let reminder = json!({
        "id": id, "creator": who, "user": user, "text": text,
        "recurring": false, "time": when, "complete_ts": 0
    });
    world.reminders.push(reminder.clone());
    ok(json!({"reminder": reminder}))
}
