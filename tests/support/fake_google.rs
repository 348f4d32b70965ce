//! A local googleapis root that follows `../shared/specs/google/discovery-subset.json`
//! for what `catalogs/google.yaml` uses: Gmail v1 (`/gmail/v1/users/{userId}/…`),
//! Calendar v3 (`/calendar/v3/…`) and Drive v3 (`/drive/v3/files…`).
//! OAuth bearer tokens (a bad or missing one is the real 401
//! `UNAUTHENTICATED` answer with `WWW-Authenticate`), errors as
//! `{"error": {"code", "message", "status", "errors": [...]}}`,
//! `pageToken`/`nextPageToken` pages, Drive's `fields` partial responses and
//! non-JSON export bodies, and 429 `RESOURCE_EXHAUSTED` with `Retry-After`
//! when told to. State is honest: a sent mail is in the sender's SENT and the
//! recipients' INBOX, inserted events can be read back, deleted ones are
//! `cancelled` (and 410 when deleted again), deleted files are gone.
#![allow(dead_code)]
// Handlers answer early with a whole `Response`, as axum code does.
#![allow(clippy::result_large_err)]

#[path = "fake_http.rs"]
#[allow(clippy::duplicate_mod)] // each fake brings the kernel; a test may use several
mod fake_http;
pub use fake_http::Received;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// `(labels, headers, body)` of a mail as stored.
pub type StoredMail = (Vec<String>, Vec<(String, String)>, String);

struct Mail {
    id: String,
    thread_id: String,
    labels: Vec<String>,
    /// The RFC 2822 source.
    source: String,
    headers: Vec<(String, String)>,
    body: String,
    internal_date: i64,
}

struct Calendar {
    owner: String,
    summary: String,
    time_zone: String,
    events: Vec<Value>,
}

struct DriveFile {
    owner: String,
    meta: Value,
    content: String,
}

#[derive(Default)]
struct World {
    /// access token → account email.
    tokens: HashMap<String, String>,
    /// account → mailbox.
    mail: HashMap<String, Vec<Mail>>,
    calendars: BTreeMap<String, Calendar>,
    files: Vec<DriveFile>,
    received: Vec<Received>,
    rate_limited: Option<(u32, u64)>,
    next_id: u64,
    clock: i64,
}

#[derive(Clone)]
pub struct FakeGoogle {
    pub base_url: String,
    world: Arc<Mutex<World>>,
}

type Q = Query<BTreeMap<String, String>>;

/// Google's error body (`errors[]` is the v1 format most APIs still send).
fn gerror(
    code: u16,
    status: &str,
    message: &str,
    reason: &str,
    location: Option<&str>,
) -> Response {
    let mut item = json!({"message": message, "domain": "global", "reason": reason});
    if let Some(location) = location {
        item["location"] = json!(location);
        item["locationType"] = json!("parameter");
    }
    (
        StatusCode::from_u16(code).unwrap(),
        Json(json!({"error": {"code": code, "message": message, "errors": [item], "status": status}})),
    )
        .into_response()
}

fn not_found(message: &str, location: Option<&str>) -> Response {
    gerror(404, "NOT_FOUND", message, "notFound", location)
}

fn bad_request(message: &str, reason: &str, location: Option<&str>) -> Response {
    gerror(400, "INVALID_ARGUMENT", message, reason, location)
}

fn rfc3339(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .unwrap()
        .format(&Rfc3339)
        .unwrap()
}

fn page_token(offset: usize) -> String {
    URL_SAFE_NO_PAD.encode(format!("offset:{offset}"))
}

fn page_start(query: &BTreeMap<String, String>) -> Result<usize, Response> {
    match query.get("pageToken") {
        None => Ok(0),
        Some(token) => URL_SAFE_NO_PAD
            .decode(token)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.strip_prefix("offset:").and_then(|n| n.parse().ok()))
            .ok_or_else(|| bad_request("Invalid page token", "invalid", Some("pageToken"))),
    }
}

fn page_size(
    query: &BTreeMap<String, String>,
    name: &str,
    default: usize,
    max: usize,
) -> Result<usize, Response> {
    match query.get(name) {
        None => Ok(default),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n >= 1 => Ok(n.min(max)),
            _ => Err(bad_request(
                &format!("Invalid value '{v}'. Values must be within the range: [1, {max}]"),
                "invalid",
                Some(name),
            )),
        },
    }
}

fn parse_time(value: &str) -> Option<i64> {
    if let Ok(t) = OffsetDateTime::parse(value, &Rfc3339) {
        return Some(t.unix_timestamp());
    }
    // An all-day date: midnight UTC.
    OffsetDateTime::parse(&format!("{value}T00:00:00Z"), &Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

/// `start`/`end` of an event as Unix seconds.
fn event_time(when: &Value) -> Option<i64> {
    when.get("dateTime")
        .or_else(|| when.get("date"))
        .and_then(Value::as_str)
        .and_then(parse_time)
}

impl FakeGoogle {
    pub async fn start() -> FakeGoogle {
        let (listener, base_url) = fake_http::listen().await;
        let fake = FakeGoogle {
            base_url,
            world: Arc::new(Mutex::new(World {
                next_id: 0x18c2_a5f0_0000_0000,
                clock: 1_764_590_400, // 2025-12-01T12:00:00Z
                ..Default::default()
            })),
        };
        let app = axum::Router::new()
            .route("/gmail/v1/users/{user_id}/messages", get(gmail_list))
            .route("/gmail/v1/users/{user_id}/messages/send", post(gmail_send))
            .route("/gmail/v1/users/{user_id}/messages/{id}", get(gmail_get))
            .route("/gmail/v1/users/{user_id}/profile", get(gmail_profile))
            .route("/calendar/v3/users/me/calendarList", get(calendar_list))
            .route(
                "/calendar/v3/calendars/{calendar_id}/events",
                get(events_list).post(events_insert),
            )
            .route(
                "/calendar/v3/calendars/{calendar_id}/events/{event_id}",
                get(events_get).delete(events_delete),
            )
            .route("/drive/v3/files", get(files_list))
            .route(
                "/drive/v3/files/{file_id}",
                get(files_get).delete(files_delete),
            )
            .route("/drive/v3/files/{file_id}/export", get(files_export))
            .with_state(fake.clone());
        fake_http::serve(listener, app);
        fake
    }

    /// An account with an OAuth access token, a primary calendar and an empty mailbox.
    pub fn add_account(&self, email: &str, token: &str) {
        let mut world = self.world.lock().unwrap();
        world.tokens.insert(token.into(), email.into());
        world.mail.entry(email.into()).or_default();
        world.calendars.insert(
            email.into(),
            Calendar {
                owner: email.into(),
                summary: email.into(),
                time_zone: "Europe/Paris".into(),
                events: Vec::new(),
            },
        );
    }

    /// A mail delivered to `to`'s inbox (unread).
    pub fn deliver(&self, to: &str, from: &str, subject: &str, body: &str) -> String {
        let source = format!(
            "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nDate: Mon, 1 Dec 2025 09:00:00 +0000\r\n\r\n{body}"
        );
        let mut world = self.world.lock().unwrap();
        store_mail(
            &mut world,
            to,
            &source,
            vec!["INBOX".into(), "UNREAD".into()],
            None,
        )
    }

    /// A Drive file owned by `owner`; returns its id.
    pub fn add_file(&self, owner: &str, name: &str, mime_type: &str, content: &str) -> String {
        let mut world = self.world.lock().unwrap();
        world.next_id += 1;
        world.clock += 60;
        let id = format!("1{}", URL_SAFE_NO_PAD.encode(world.next_id.to_be_bytes()));
        let google_file = mime_type.starts_with("application/vnd.google-apps.");
        let mut meta = json!({
            "kind": "drive#file", "id": id, "name": name, "mimeType": mime_type,
            "description": "", "trashed": false, "parents": ["root"], "starred": false,
            "createdTime": rfc3339(world.clock), "modifiedTime": rfc3339(world.clock),
            "owners": [{"kind": "drive#user", "displayName": owner, "emailAddress": owner, "me": true}],
            "webViewLink": format!("https://docs.google.com/document/d/{id}/edit"),
        });
        if !google_file {
            meta["size"] = json!(content.len().to_string());
        }
        world.files.push(DriveFile {
            owner: owner.into(),
            meta,
            content: content.into(),
        });
        id
    }

    pub fn received(&self) -> Vec<Received> {
        self.world.lock().unwrap().received.clone()
    }

    pub fn last(&self) -> Received {
        self.received().last().cloned().expect("a request")
    }

    /// Requests (429s included) whose path starts with `prefix`.
    pub fn hits(&self, prefix: &str) -> usize {
        self.received()
            .iter()
            .filter(|r| r.path.starts_with(prefix))
            .count()
    }

    /// Each mail in `account`'s mailbox.
    pub fn mailbox(&self, account: &str) -> Vec<StoredMail> {
        self.world.lock().unwrap().mail[account]
            .iter()
            .map(|m| (m.labels.clone(), m.headers.clone(), m.body.clone()))
            .collect()
    }

    pub fn events(&self, calendar: &str) -> Vec<Value> {
        self.world.lock().unwrap().calendars[calendar]
            .events
            .clone()
    }

    pub fn file_exists(&self, id: &str) -> bool {
        self.world
            .lock()
            .unwrap()
            .files
            .iter()
            .any(|f| f.meta["id"] == id)
    }

    /// The next `count` requests answer 429 with `Retry-After: retry_after`.
    pub fn rate_limit(&self, count: u32, retry_after: u64) {
        self.world.lock().unwrap().rate_limited = Some((count, retry_after));
    }

    /// Rate limit, then the bearer token: the account, or Google's answer.
    fn gate(
        &self,
        method: &str,
        path: &str,
        headers: &HeaderMap,
        query: &BTreeMap<String, String>,
        body: Value,
    ) -> Result<String, Response> {
        let mut world = self.world.lock().unwrap();
        let who = fake_http::bearer(headers).and_then(|t| world.tokens.get(t).cloned());
        if let Some((count, retry_after)) = world.rate_limited {
            world.rate_limited = (count > 1).then(|| (count - 1, retry_after));
            world.received.push(Received {
                rate_limited: true,
                ..Received::new(method, path.into(), query, &who.unwrap_or_default(), body)
            });
            let message = "Quota exceeded for quota metric 'Queries' and limit 'Queries per minute per user' of service 'googleapis.com'.";
            let mut response = gerror(
                429,
                "RESOURCE_EXHAUSTED",
                message,
                "rateLimitExceeded",
                None,
            );
            response
                .headers_mut()
                .insert("retry-after", retry_after.to_string().parse().unwrap());
            return Err(response);
        }
        let Some(who) = who else {
            let mut response = (
                StatusCode::UNAUTHORIZED,
                Json(json!({"error": {
                    "code": 401,
                    "message": "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project.",
                    "errors": [{"message": "Invalid Credentials", "domain": "global", "reason": "authError", "location": "Authorization", "locationType": "header"}],
                    "status": "UNAUTHENTICATED"
                }})),
            )
                .into_response();
            response.headers_mut().insert(
                "www-authenticate",
                "Bearer realm=\"https://accounts.google.com/\", error=\"invalid_token\""
                    .parse()
                    .unwrap(),
            );
            return Err(response);
        };
        world
            .received
            .push(Received::new(method, path.into(), query, &who, body));
        Ok(who)
    }
}

// ---------------------------------------------------------------- Gmail

fn parse_rfc2822(source: &str) -> (Vec<(String, String)>, String) {
    let normalized = source.replace("\r\n", "\n");
    let (head, body) = normalized.split_once("\n\n").unwrap_or((&normalized, ""));
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = headers.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }
    (headers, body.to_owned())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Addresses of a header value: `Ana <ana@x>, bob@y` → [ana@x, bob@y].
fn addresses(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(|a| {
            let a = a.trim();
            match (a.find('<'), a.find('>')) {
                (Some(l), Some(r)) if l < r => a[l + 1..r].to_owned(),
                _ => a.to_owned(),
            }
            .to_ascii_lowercase()
        })
        .filter(|a| !a.is_empty())
        .collect()
}

fn store_mail(
    world: &mut World,
    account: &str,
    source: &str,
    labels: Vec<String>,
    thread_id: Option<String>,
) -> String {
    world.next_id += 1;
    world.clock += 60;
    let id = format!("{:016x}", world.next_id);
    let (headers, body) = parse_rfc2822(source);
    let mail = Mail {
        thread_id: thread_id.unwrap_or_else(|| id.clone()),
        id: id.clone(),
        labels,
        source: source.to_owned(),
        headers,
        body,
        internal_date: world.clock * 1000,
    };
    world.mail.entry(account.into()).or_default().push(mail);
    id
}

/// `userId` must be `me` or the token's own address.
fn mailbox_owner(who: &str, user_id: &str) -> Result<(), Response> {
    if user_id == "me" || user_id.eq_ignore_ascii_case(who) {
        Ok(())
    } else {
        Err(gerror(
            403,
            "PERMISSION_DENIED",
            &format!("Delegation denied for {who}"),
            "forbidden",
            None,
        ))
    }
}

fn mail_matches(mail: &Mail, q: &str) -> bool {
    let subject = header(&mail.headers, "Subject")
        .unwrap_or("")
        .to_lowercase();
    let everything = format!(
        "{} {}",
        mail.headers
            .iter()
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
            .join(" "),
        mail.body
    )
    .to_lowercase();
    q.split_whitespace().all(|term| {
        let term = term.to_lowercase();
        let has_label = |l: &str| mail.labels.iter().any(|x| x.eq_ignore_ascii_case(l));
        match term.split_once(':') {
            Some(("from", v)) => {
                header(&mail.headers, "From").is_some_and(|f| f.to_lowercase().contains(v))
            }
            Some(("to", v)) => {
                header(&mail.headers, "To").is_some_and(|f| f.to_lowercase().contains(v))
            }
            Some(("subject", v)) => subject.contains(v),
            Some(("is", "unread")) => has_label("UNREAD"),
            Some(("is", "read")) => !has_label("UNREAD"),
            Some(("in" | "label", v)) => has_label(v),
            _ => everything.contains(&term),
        }
    })
}

fn snippet(body: &str) -> String {
    body.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(100)
        .collect()
}

async fn gmail_list(
    State(f): State<FakeGoogle>,
    headers: HeaderMap,
    Path(user_id): Path<String>,
    Query(q): Q,
) -> Response {
    let path = format!("/gmail/v1/users/{user_id}/messages");
    let who = match f.gate("GET", &path, &headers, &q, Value::Null) {
        Ok(who) => who,
        Err(e) => return e,
    };
    if let Err(e) = mailbox_owner(&who, &user_id) {
        return e;
    }
    let (start, size) = match (page_start(&q), page_size(&q, "maxResults", 100, 500)) {
        (Ok(s), Ok(n)) => (s, n),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    let world = f.world.lock().unwrap();
    let include_spam = q.get("includeSpamTrash").map(String::as_str) == Some("true");
    let mut found: Vec<&Mail> = world.mail[&who]
        .iter()
        .filter(|m| include_spam || !m.labels.iter().any(|l| l == "SPAM" || l == "TRASH"))
        .filter(|m| q.get("labelIds").is_none_or(|l| m.labels.contains(l)))
        .filter(|m| q.get("q").is_none_or(|query| mail_matches(m, query)))
        .collect();
    found.sort_by_key(|m| std::cmp::Reverse(m.internal_date));
    let mut answer = json!({"resultSizeEstimate": found.len()});
    let page: Vec<Value> = found
        .iter()
        .skip(start)
        .take(size)
        .map(|m| json!({"id": m.id, "threadId": m.thread_id}))
        .collect();
    if !page.is_empty() {
        answer["messages"] = json!(page);
    }
    if start + size < found.len() {
        answer["nextPageToken"] = json!(page_token(start + size));
    }
    Json(answer).into_response()
}

async fn gmail_get(
    State(f): State<FakeGoogle>,
    headers: HeaderMap,
    Path((user_id, id)): Path<(String, String)>,
    Query(q): Q,
) -> Response {
    let path = format!("/gmail/v1/users/{user_id}/messages/{id}");
    let who = match f.gate("GET", &path, &headers, &q, Value::Null) {
        Ok(who) => who,
        Err(e) => return e,
    };
    if let Err(e) = mailbox_owner(&who, &user_id) {
        return e;
    }
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_hexdigit()) {
        return bad_request("Invalid id value", "invalidArgument", None);
    }
    let world = f.world.lock().unwrap();
    let Some(mail) = world.mail[&who].iter().find(|m| m.id == id) else {
        return not_found("Requested entity was not found.", None);
    };
    let format = q.get("format").map(String::as_str).unwrap_or("full");
    let mut answer = json!({
        "id": mail.id, "threadId": mail.thread_id, "labelIds": mail.labels,
        "snippet": snippet(&mail.body), "sizeEstimate": mail.source.len(),
        "historyId": (mail.internal_date / 1000).to_string(),
        "internalDate": mail.internal_date.to_string(),
    });
    let headers_json = |only: Option<&String>| -> Vec<Value> {
        mail.headers
            .iter()
            .filter(|(n, _)| only.is_none_or(|o| o.eq_ignore_ascii_case(n)))
            .map(|(n, v)| json!({"name": n, "value": v}))
            .collect()
    };
    match format {
        "minimal" => {}
        "raw" => answer["raw"] = json!(URL_SAFE.encode(mail.source.as_bytes())),
        "metadata" => {
            answer["payload"] =
                json!({"mimeType": "text/plain", "headers": headers_json(q.get("metadataHeaders"))})
        }
        "full" => {
            answer["payload"] = json!({
                "partId": "", "mimeType": "text/plain", "filename": "",
                "headers": headers_json(None),
                "body": {"size": mail.body.len(), "data": URL_SAFE.encode(mail.body.as_bytes())}
            })
        }
        other => {
            return bad_request(
                &format!("Invalid value at 'format' ({other})"),
                "invalidArgument",
                Some("format"),
            );
        }
    }
    Json(answer).into_response()
}

async fn gmail_send(
    State(f): State<FakeGoogle>,
    headers: HeaderMap,
    Path(user_id): Path<String>,
    Query(q): Q,
    body: Bytes,
) -> Response {
    let path = format!("/gmail/v1/users/{user_id}/messages/send");
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let who = match f.gate("POST", &path, &headers, &q, body.clone()) {
        Ok(who) => who,
        Err(e) => return e,
    };
    if let Err(e) = mailbox_owner(&who, &user_id) {
        return e;
    }
    let Some(raw) = body.get("raw").and_then(Value::as_str) else {
        return bad_request(
            "'raw' RFC822 payload message string or uploading message via /upload/* URL required",
            "invalidArgument",
            None,
        );
    };
    let decoded = URL_SAFE_NO_PAD
        .decode(raw.trim_end_matches('='))
        .or_else(|_| STANDARD.decode(raw))
        .ok()
        .and_then(|b| String::from_utf8(b).ok());
    let Some(source) = decoded else {
        return bad_request(
            "Invalid value at 'message.raw' (TYPE_BYTES), Base64 decoding failed",
            "invalid",
            None,
        );
    };
    let (mail_headers, _) = parse_rfc2822(&source);
    let recipients: Vec<String> = ["To", "Cc", "Bcc"]
        .iter()
        .filter_map(|h| header(&mail_headers, h))
        .flat_map(addresses)
        .collect();
    if recipients.is_empty() {
        return bad_request("Recipient address required", "invalidArgument", None);
    }
    // Gmail sets From to the sender when the message has none.
    let source = if header(&mail_headers, "From").is_none() {
        format!("From: {who}\r\n{source}")
    } else {
        source
    };
    let mut world = f.world.lock().unwrap();
    let thread = body
        .get("threadId")
        .and_then(Value::as_str)
        .filter(|t| world.mail[&who].iter().any(|m| m.thread_id == *t))
        .map(str::to_owned);
    let id = store_mail(
        &mut world,
        &who,
        &source,
        vec!["SENT".into()],
        thread.clone(),
    );
    for to in recipients {
        if world.mail.contains_key(&to) && to != who {
            store_mail(
                &mut world,
                &to,
                &source,
                vec!["INBOX".into(), "UNREAD".into()],
                None,
            );
        }
    }
    let sent = world.mail[&who].iter().find(|m| m.id == id).unwrap();
    Json(json!({"id": id, "threadId": sent.thread_id, "labelIds": ["SENT"]})).into_response()
}

async fn gmail_profile(
    State(f): State<FakeGoogle>,
    headers: HeaderMap,
    Path(user_id): Path<String>,
    Query(q): Q,
) -> Response {
    let path = format!("/gmail/v1/users/{user_id}/profile");
    let who = match f.gate("GET", &path, &headers, &q, Value::Null) {
        Ok(who) => who,
        Err(e) => return e,
    };
    if let Err(e) = mailbox_owner(&who, &user_id) {
        return e;
    }
    let world = f.world.lock().unwrap();
    let mails = &world.mail[&who];
    let mut threads: Vec<&str> = mails.iter().map(|m| m.thread_id.as_str()).collect();
    threads.sort();
    threads.dedup();
    Json(json!({
        "emailAddress": who, "messagesTotal": mails.len(), "threadsTotal": threads.len(),
        "historyId": world.clock.to_string()
    }))
    .into_response()
}

// ---------------------------------------------------------------- Calendar

fn calendar_not_found() -> Response {
    not_found("Not Found", None)
}

/// The calendar id a path names (`primary` is the caller's), if the caller owns it.
fn own_calendar(world: &World, who: &str, calendar_id: &str) -> Option<String> {
    let id = if calendar_id == "primary" {
        who.to_owned()
    } else {
        calendar_id.to_owned()
    };
    world
        .calendars
        .get(&id)
        .filter(|c| c.owner == who)
        .map(|_| id)
}

async fn calendar_list(State(f): State<FakeGoogle>, headers: HeaderMap, Query(q): Q) -> Response {
    let who = match f.gate(
        "GET",
        "/calendar/v3/users/me/calendarList",
        &headers,
        &q,
        Value::Null,
    ) {
        Ok(who) => who,
        Err(e) => return e,
    };
    let (start, size) = match (page_start(&q), page_size(&q, "maxResults", 100, 250)) {
        (Ok(s), Ok(n)) => (s, n),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    let world = f.world.lock().unwrap();
    let all: Vec<Value> = world
        .calendars
        .iter()
        .filter(|(_, c)| c.owner == who)
        .map(|(id, c)| {
            json!({
                "kind": "calendar#calendarListEntry", "etag": "\"1\"", "id": id,
                "summary": c.summary, "timeZone": c.time_zone, "accessRole": "owner",
                "primary": *id == who, "selected": true, "backgroundColor": "#9fe1e7"
            })
        })
        .collect();
    let mut answer = json!({
        "kind": "calendar#calendarList", "etag": "\"p1\"",
        "items": all.iter().skip(start).take(size).cloned().collect::<Vec<_>>()
    });
    if start + size < all.len() {
        answer["nextPageToken"] = json!(page_token(start + size));
    } else {
        answer["nextSyncToken"] = json!("CPDAlvWDx70CEPDAlvWDx70CGAU=");
    }
    Json(answer).into_response()
}

async fn events_list(
    State(f): State<FakeGoogle>,
    headers: HeaderMap,
    Path(calendar_id): Path<String>,
    Query(q): Q,
) -> Response {
    let path = format!("/calendar/v3/calendars/{calendar_id}/events");
    let who = match f.gate("GET", &path, &headers, &q, Value::Null) {
        Ok(who) => who,
        Err(e) => return e,
    };
    let (start, size) = match (page_start(&q), page_size(&q, "maxResults", 250, 2500)) {
        (Ok(s), Ok(n)) => (s, n),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    let bound = |name: &str| -> Result<Option<i64>, Response> {
        match q.get(name) {
            None => Ok(None),
            Some(v) => OffsetDateTime::parse(v, &Rfc3339)
                .map(|t| Some(t.unix_timestamp()))
                .map_err(|_| bad_request("Bad Request", "badRequest", None)),
        }
    };
    let (time_min, time_max) = match (bound("timeMin"), bound("timeMax")) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    let single = q.get("singleEvents").map(String::as_str) == Some("true");
    let order = q.get("orderBy").map(String::as_str);
    if order == Some("startTime") && !single {
        return bad_request(
            "The requested ordering is not available for the particular query.",
            "badRequest",
            None,
        );
    }
    let world = f.world.lock().unwrap();
    let Some(id) = own_calendar(&world, &who, &calendar_id) else {
        return calendar_not_found();
    };
    let calendar = &world.calendars[&id];
    let show_deleted = q.get("showDeleted").map(String::as_str) == Some("true");
    let text = q.get("q").map(|t| t.to_lowercase());
    let mut items: Vec<&Value> = calendar
        .events
        .iter()
        .filter(|e| show_deleted || e["status"] != "cancelled")
        .filter(|e| time_min.is_none_or(|min| event_time(&e["end"]).is_some_and(|end| end > min)))
        .filter(|e| time_max.is_none_or(|max| event_time(&e["start"]).is_some_and(|s| s < max)))
        .filter(|e| {
            text.as_ref().is_none_or(|t| {
                ["summary", "description", "location"]
                    .iter()
                    .any(|k| e[k].as_str().is_some_and(|v| v.to_lowercase().contains(t)))
            })
        })
        .collect();
    match order {
        Some("startTime") => items.sort_by_key(|e| event_time(&e["start"])),
        Some("updated") => items.sort_by(|a, b| a["updated"].as_str().cmp(&b["updated"].as_str())),
        _ => {}
    }
    let mut answer = json!({
        "kind": "calendar#events", "etag": "\"e1\"", "summary": calendar.summary,
        "description": "", "updated": rfc3339(world.clock), "timeZone": calendar.time_zone,
        "accessRole": "owner", "defaultReminders": [{"method": "popup", "minutes": 10}],
        "items": items.iter().skip(start).take(size).map(|e| (*e).clone()).collect::<Vec<_>>()
    });
    if start + size < items.len() {
        answer["nextPageToken"] = json!(page_token(start + size));
    } else {
        answer["nextSyncToken"] = json!("CKCbrZ2Dx70CEKCbrZ2Dx70CGAUgvKOv9wI=");
    }
    Json(answer).into_response()
}

async fn events_get(
    State(f): State<FakeGoogle>,
    headers: HeaderMap,
    Path((calendar_id, event_id)): Path<(String, String)>,
    Query(q): Q,
) -> Response {
    let path = format!("/calendar/v3/calendars/{calendar_id}/events/{event_id}");
    let who = match f.gate("GET", &path, &headers, &q, Value::Null) {
        Ok(who) => who,
        Err(e) => return e,
    };
    let world = f.world.lock().unwrap();
    let Some(id) = own_calendar(&world, &who, &calendar_id) else {
        return calendar_not_found();
    };
    match world.calendars[&id]
        .events
        .iter()
        .find(|e| e["id"] == event_id)
    {
        Some(event) => Json(event.clone()).into_response(),
        None => calendar_not_found(),
    }
}

async fn events_insert(
    State(f): State<FakeGoogle>,
    headers: HeaderMap,
    Path(calendar_id): Path<String>,
    Query(q): Q,
    body: Bytes,
) -> Response {
    let path = format!("/calendar/v3/calendars/{calendar_id}/events");
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let who = match f.gate("POST", &path, &headers, &q, body.clone()) {
        Ok(who) => who,
        Err(e) => return e,
    };
    if !body.is_object() {
        return bad_request("Parse Error", "parseError", None);
    }
    for (field, label) in [("end", "end"), ("start", "start")] {
        let when = &body[field];
        if !when.is_object() {
            return bad_request(&format!("Missing {label} time."), "required", None);
        }
        if let Some(dt) = when.get("dateTime").and_then(Value::as_str) {
            let has_offset = OffsetDateTime::parse(dt, &Rfc3339).is_ok();
            if !has_offset && when.get("timeZone").is_none() {
                return bad_request(
                    &format!("Missing time zone definition for {label} time."),
                    "required",
                    None,
                );
            }
        }
        if event_time(when).is_none() {
            return bad_request("Bad Request", "badRequest", None);
        }
    }
    if event_time(&body["end"]) < event_time(&body["start"]) {
        return bad_request("The specified time range is empty.", "timeRangeEmpty", None);
    }
    let mut world = f.world.lock().unwrap();
    let Some(cal) = own_calendar(&world, &who, &calendar_id) else {
        return calendar_not_found();
    };
    world.next_id += 1;
    world.clock += 60;
    let id = format!("ev{:x}", world.next_id);
    let now = rfc3339(world.clock);
    let mut event = body.clone();
    let attendees: Vec<Value> = body["attendees"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|mut a| {
            let me = a["email"]
                .as_str()
                .is_some_and(|e| e.eq_ignore_ascii_case(&who));
            a["responseStatus"] = json!(if me { "accepted" } else { "needsAction" });
            if me {
                a["self"] = json!(true);
                a["organizer"] = json!(true);
            }
            a
        })
        .collect();
    let extra = json!({
        "kind": "calendar#event", "etag": format!("\"{}\"", world.clock), "id": id,
        "status": "confirmed",
        "htmlLink": format!("https://www.google.com/calendar/event?eid={}", URL_SAFE_NO_PAD.encode(format!("{id} {cal}"))),
        "created": now, "updated": now,
        "creator": {"email": who, "self": true}, "organizer": {"email": cal, "self": true},
        "iCalUID": format!("{id}@google.com"), "sequence": 0,
        "reminders": {"useDefault": true}, "eventType": "default",
    });
    for (k, v) in extra.as_object().unwrap() {
        event[k] = v.clone();
    }
    if !attendees.is_empty() {
        event["attendees"] = json!(attendees);
    }
    world
        .calendars
        .get_mut(&cal)
        .unwrap()
        .events
        .push(event.clone());
    Json(event).into_response()
}

async fn events_delete(
    State(f): State<FakeGoogle>,
    headers: HeaderMap,
    Path((calendar_id, event_id)): Path<(String, String)>,
    Query(q): Q,
) -> Response {
    let path = format!("/calendar/v3/calendars/{calendar_id}/events/{event_id}");
    let who = match f.gate("DELETE", &path, &headers, &q, Value::Null) {
        Ok(who) => who,
        Err(e) => return e,
    };
    let mut world = f.world.lock().unwrap();
    let Some(cal) = own_calendar(&world, &who, &calendar_id) else {
        return calendar_not_found();
    };
    world.clock += 60;
    let now = rfc3339(world.clock);
    let events = &mut world.calendars.get_mut(&cal).unwrap().events;
    match events.iter_mut().find(|e| e["id"] == event_id) {
        None => calendar_not_found(),
        Some(event) if event["status"] == "cancelled" => gerror(
            410,
            "FAILED_PRECONDITION",
            "Resource has been deleted",
            "deleted",
            None,
        ),
        Some(event) => {
            event["status"] = json!("cancelled");
            event["updated"] = json!(now);
            StatusCode::NO_CONTENT.into_response()
        }
    }
}

// ---------------------------------------------------------------- Drive

/// A `fields` selector: `nextPageToken,files(id,name)`.
#[derive(Debug)]
enum Selector {
    All,
    Some(Vec<(String, Selector)>),
}

fn parse_fields(text: &str) -> Result<Selector, ()> {
    fn list(chars: &[char], at: &mut usize) -> Result<Vec<(String, Selector)>, ()> {
        let mut out = Vec::new();
        loop {
            let mut name = String::new();
            while *at < chars.len() && !matches!(chars[*at], ',' | '(' | ')') {
                name.push(chars[*at]);
                *at += 1;
            }
            let name = name.trim().to_owned();
            if name.is_empty() {
                return Err(());
            }
            let sub = if *at < chars.len() && chars[*at] == '(' {
                *at += 1;
                let inner = list(chars, at)?;
                if *at >= chars.len() || chars[*at] != ')' {
                    return Err(());
                }
                *at += 1;
                Selector::Some(inner)
            } else {
                Selector::All
            };
            out.push((name, sub));
            if *at < chars.len() && chars[*at] == ',' {
                *at += 1;
                continue;
            }
            return Ok(out);
        }
    }
    if text.trim() == "*" {
        return Ok(Selector::All);
    }
    let chars: Vec<char> = text.chars().collect();
    let mut at = 0;
    let fields = list(&chars, &mut at)?;
    if at != chars.len() {
        return Err(());
    }
    Ok(Selector::Some(fields))
}

fn select(value: &Value, selector: &Selector) -> Value {
    match (selector, value) {
        (Selector::All, v) => v.clone(),
        (Selector::Some(_), Value::Array(items)) => {
            Value::Array(items.iter().map(|i| select(i, selector)).collect())
        }
        (Selector::Some(fields), Value::Object(map)) => {
            let mut out = serde_json::Map::new();
            for (name, sub) in fields {
                if name == "*" {
                    out.extend(map.clone());
                } else if let Some(v) = map.get(name) {
                    out.insert(name.clone(), select(v, sub));
                }
            }
            Value::Object(out)
        }
        (_, v) => v.clone(),
    }
}

fn with_fields(
    answer: Value,
    q: &BTreeMap<String, String>,
    default: &str,
) -> Result<Value, Response> {
    let text = q.get("fields").map(String::as_str).unwrap_or(default);
    let selector = parse_fields(text).map_err(|_| {
        bad_request(
            &format!("Invalid field selection {text}"),
            "invalidParameter",
            Some("fields"),
        )
    })?;
    Ok(select(&answer, &selector))
}

fn q_clause_matches(file: &DriveFile, clause: &str) -> Result<bool, ()> {
    let clause = clause.trim();
    let quoted = |rest: &str| -> Result<String, ()> {
        let rest = rest.trim();
        rest.strip_prefix('\'')
            .and_then(|r| r.strip_suffix('\''))
            .map(|s| s.replace("\\'", "'"))
            .ok_or(())
    };
    let meta = &file.meta;
    let s = |k: &str| meta[k].as_str().unwrap_or("").to_owned();
    if let Some(rest) = clause.strip_prefix("name contains ") {
        return Ok(s("name")
            .to_lowercase()
            .contains(&quoted(rest)?.to_lowercase()));
    }
    if let Some(rest) = clause.strip_prefix("fullText contains ") {
        let needle = quoted(rest)?.to_lowercase();
        return Ok(s("name").to_lowercase().contains(&needle)
            || file.content.to_lowercase().contains(&needle));
    }
    if let Some(rest) = clause.strip_prefix("name = ") {
        return Ok(s("name") == quoted(rest)?);
    }
    if let Some(rest) = clause.strip_prefix("mimeType = ") {
        return Ok(s("mimeType") == quoted(rest)?);
    }
    if let Some(rest) = clause.strip_prefix("mimeType != ") {
        return Ok(s("mimeType") != quoted(rest)?);
    }
    if let Some(rest) = clause.strip_prefix("trashed = ") {
        return match rest.trim() {
            "true" => Ok(meta["trashed"] == true),
            "false" => Ok(meta["trashed"] == false),
            _ => Err(()),
        };
    }
    Err(())
}

fn invalid_q() -> Response {
    bad_request("Invalid Value", "invalid", Some("q"))
}

async fn files_list(State(f): State<FakeGoogle>, headers: HeaderMap, Query(q): Q) -> Response {
    let who = match f.gate("GET", "/drive/v3/files", &headers, &q, Value::Null) {
        Ok(who) => who,
        Err(e) => return e,
    };
    let (start, size) = match (page_start(&q), page_size(&q, "pageSize", 100, 1000)) {
        (Ok(s), Ok(n)) => (s, n),
        (Err(e), _) | (_, Err(e)) => return e,
    };
    let world = f.world.lock().unwrap();
    let mut found = Vec::new();
    for file in world.files.iter().filter(|f| f.owner == who) {
        let keep = match q.get("q") {
            None => true,
            Some(query) => {
                let mut all = true;
                for clause in query.split(" and ") {
                    match q_clause_matches(file, clause) {
                        Ok(m) => all &= m,
                        Err(()) => return invalid_q(),
                    }
                }
                all
            }
        };
        if keep {
            found.push(&file.meta);
        }
    }
    match q.get("orderBy").map(String::as_str) {
        None => {}
        Some(order) => {
            let (key, desc) = match order.split_once(' ') {
                Some((k, "desc")) => (k, true),
                _ => (order, false),
            };
            if !["name", "modifiedTime", "createdTime"].contains(&key) {
                return bad_request("Invalid Value", "invalid", Some("orderBy"));
            }
            found.sort_by(|a, b| a[key].as_str().cmp(&b[key].as_str()));
            if desc {
                found.reverse();
            }
        }
    }
    let mut answer = json!({
        "kind": "drive#fileList", "incompleteSearch": false,
        "files": found.iter().skip(start).take(size).map(|f| (*f).clone()).collect::<Vec<_>>()
    });
    if start + size < found.len() {
        answer["nextPageToken"] = json!(page_token(start + size));
    }
    match with_fields(
        answer,
        &q,
        "kind,nextPageToken,incompleteSearch,files(kind,id,name,mimeType)",
    ) {
        Ok(answer) => Json(answer).into_response(),
        Err(e) => e,
    }
}

fn file_not_found(id: &str) -> Response {
    not_found(&format!("File not found: {id}."), Some("fileId"))
}

async fn files_get(
    State(f): State<FakeGoogle>,
    headers: HeaderMap,
    Path(file_id): Path<String>,
    Query(q): Q,
) -> Response {
    let path = format!("/drive/v3/files/{file_id}");
    let who = match f.gate("GET", &path, &headers, &q, Value::Null) {
        Ok(who) => who,
        Err(e) => return e,
    };
    let world = f.world.lock().unwrap();
    match world
        .files
        .iter()
        .find(|f| f.meta["id"] == file_id && f.owner == who)
    {
        Some(file) => match with_fields(file.meta.clone(), &q, "kind,id,name,mimeType") {
            Ok(meta) => Json(meta).into_response(),
            Err(e) => e,
        },
        None => file_not_found(&file_id),
    }
}

async fn files_export(
    State(f): State<FakeGoogle>,
    headers: HeaderMap,
    Path(file_id): Path<String>,
    Query(q): Q,
) -> Response {
    let path = format!("/drive/v3/files/{file_id}/export");
    let who = match f.gate("GET", &path, &headers, &q, Value::Null) {
        Ok(who) => who,
        Err(e) => return e,
    };
    let Some(mime) = q.get("mimeType") else {
        return bad_request("Required parameter: mimeType", "required", Some("mimeType"));
    };
    let world = f.world.lock().unwrap();
    let Some(file) = world
        .files
        .iter()
        .find(|f| f.meta["id"] == file_id && f.owner == who)
    else {
        return file_not_found(&file_id);
    };
    let kind = file.meta["mimeType"].as_str().unwrap_or("");
    let allowed: &[&str] = match kind {
        "application/vnd.google-apps.document" => &[
            "text/plain",
            "text/markdown",
            "text/html",
            "application/rtf",
            "application/pdf",
        ],
        "application/vnd.google-apps.spreadsheet" => &["text/csv", "application/pdf"],
        "application/vnd.google-apps.presentation" => &["text/plain", "application/pdf"],
        _ => {
            return gerror(
                403,
                "PERMISSION_DENIED",
                "Export only supports Docs Editors files.",
                "fileNotExportable",
                None,
            );
        }
    };
    if !allowed.contains(&mime.as_str()) {
        return bad_request(
            "The requested conversion is not supported.",
            "badRequest",
            Some("convertTo"),
        );
    }
    let content = match mime.as_str() {
        "text/html" => format!("<html><body><p>{}</p></body></html>", file.content),
        "text/markdown" => format!(
            "# {}\n\n{}",
            file.meta["name"].as_str().unwrap_or(""),
            file.content
        ),
        _ => file.content.clone(),
    };
    (
        StatusCode::OK,
        [("content-type", format!("{mime}; charset=utf-8"))],
        content,
    )
        .into_response()
}

async fn files_delete(
    State(f): State<FakeGoogle>,
    headers: HeaderMap,
    Path(file_id): Path<String>,
    Query(q): Q,
) -> Response {
    let path = format!("/drive/v3/files/{file_id}");
    let who = match f.gate("DELETE", &path, &headers, &q, Value::Null) {
        Ok(who) => who,
        Err(e) => return e,
    };
    let mut world = f.world.lock().unwrap();
    match world.files.iter().position(|f| f.meta["id"] == file_id) {
        None => file_not_found(&file_id),
        Some(at) if world.files[at].owner != who => gerror(
            403,
            "PERMISSION_DENIED",
            "The user does not have sufficient permissions for this file.",
            "insufficientFilePermissions",
            None,
        ),
        Some(at) => {
            world.files.remove(at);
            StatusCode::NO_CONTENT.into_response()
        }
    }
}
