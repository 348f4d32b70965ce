//! PII pseudonymization with rehydration: personal data in tool results is
//! replaced by stable pseudonyms before the model sees it, and pseudonyms in
//! later arguments are replaced by the real values before the service does —
//! only within the same scope. A failure to scan withholds the result.

pub mod detect;
pub mod pseudonym;
pub mod store;

use std::collections::BTreeMap;
use std::sync::Arc;

use dashmap::DashMap;
use rmcp::model::{
    CallToolResult, CompleteResult, ContentBlock, GetPromptResult, JsonObject, ReadResourceResult,
    ResourceContents,
};
use serde_json::Value;

use crate::domain::{Reason, Refusal, glob_match};
use crate::keys::MasterKey;
use detect::{CustomPattern, Entity};
use pseudonym::{PSEUDONYM, ScopeKeys, mask};
use store::{Lookup, MappingStore};

pub use crate::config::pii::{CustomPatternConfig, Mode, PiiConfig, ScopeKind, ServicePii};

/// Keys whose string value is a person's name wherever they appear.
const NAME_KEYS: [&str; 7] = [
    "displayName",
    "real_name",
    "realName",
    "fullName",
    "full_name",
    "author",
    "assignee",
];
/// Parents whose `name` is a person's.
const PERSON_PARENTS: [&str; 14] = [
    "assignee",
    "reporter",
    "author",
    "creator",
    "user",
    "owner",
    "sender",
    "from",
    "to",
    "profile",
    "member",
    "members",
    "watcher",
    "participants",
];
/// Siblings that make an object a person.
const PERSON_SIBLINGS: [&str; 6] = [
    "email",
    "emailAddress",
    "accountId",
    "real_name",
    "avatarUrls",
    "phone",
];

/// Why a scan or a rehydration refused.
pub type PiiRefusal = Refusal;

/// What a scan found (counts per entity label; never values).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts(pub BTreeMap<String, u64>);

impl Counts {
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }
    pub fn types(&self) -> String {
        self.0.keys().cloned().collect::<Vec<_>>().join(",")
    }
}

pub struct Pii {
    pub config: PiiConfig,
    master: MasterKey,
    store: MappingStore,
    custom: Vec<CustomPattern>,
    /// (service, entity) → (detected, rehydrated), for the operator.
    pub stats: DashMap<(String, String), (u64, u64)>,
    /// Each scope's keys, derived once (three HMAC-SHA256 derivations that
    /// every call otherwise repeated). They sit beside the master key they
    /// come from, so keeping them adds no exposure; at most
    /// [`SCOPE_KEYS_KEPT`], then the set starts over.
    scopes: DashMap<String, Arc<ScopeKeys>>,
}

/// How many scopes' keys [`Pii`] keeps derived.
const SCOPE_KEYS_KEPT: usize = 10_000;

struct Walk<'a> {
    pii: &'a Pii,
    scope: &'a ScopeKeys,
    service: &'a str,
    service_mode: Mode,
    remember: Vec<(String, &'static str, String)>,
    counts: Counts,
}

impl Pii {
    pub fn new(
        config: PiiConfig,
        master: &MasterKey,
        pool: crate::storage::Db,
    ) -> Result<Pii, String> {
        let custom = config
            .patterns
            .iter()
            .map(|p| {
                regex::Regex::new(&p.regex)
                    .map(|regex| CustomPattern {
                        label: p.label.clone(),
                        regex,
                    })
                    .map_err(|e| format!("pii.patterns '{}': {e}", p.label))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let ttl = config.ttl.as_secs() as i64;
        Ok(Pii {
            config,
            master: master.clone(),
            store: MappingStore::new(pool, master, ttl),
            custom,
            stats: DashMap::new(),
            scopes: DashMap::new(),
        })
    }

    pub fn scope(&self, subject: &str) -> Arc<ScopeKeys> {
        let scope = match self.config.scope {
            ScopeKind::Subject => subject.to_ascii_lowercase(),
            ScopeKind::Tenant => format!("tenant:{}", self.config.tenant).to_ascii_lowercase(),
        };
        if let Some(keys) = self.scopes.get(&scope) {
            return keys.clone();
        }
        let keys = Arc::new(ScopeKeys::new(&self.master, &scope));
        if self.scopes.len() >= SCOPE_KEYS_KEPT {
            self.scopes.clear();
        }
        self.scopes.insert(scope, keys.clone());
        keys
    }

    pub fn service_mode(&self, service: &str) -> Mode {
        if !self.config.enabled {
            return Mode::Pass;
        }
        self.config
            .services
            .get(service)
            .map(|s| s.mode)
            .unwrap_or_default()
    }

    fn field_mode(&self, service: &str, path: &str, inherited: Mode) -> Mode {
        self.config
            .services
            .get(service)
            .and_then(|s| {
                s.fields
                    .iter()
                    .find(|(glob, _)| glob_match(glob, path))
                    .map(|(_, m)| *m)
            })
            .unwrap_or(inherited)
    }

    /// Drop expired mappings.
    pub async fn expire(&self) -> Result<u64, sqlx::Error> {
        self.store.expire().await
    }

    /// Every ten minutes, drop expired mappings; until the PII state is
    /// dropped or the gateway drains.
    pub fn spawn_expiry(self: &std::sync::Arc<Self>, drain: std::sync::Arc<crate::drain::Drain>) {
        let pii = std::sync::Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(600));
            loop {
                tick.tick().await;
                let Some(pii) = pii.upgrade() else { return };
                if drain.is_draining() {
                    return;
                }
                if let Err(e) = pii.expire().await {
                    tracing::warn!(error = %e, "could not expire pseudonym mappings");
                }
            }
        });
    }

    /// Replace personal data in `result` before it reaches the model.
    pub async fn pseudonymize(
        &self,
        subject: &str,
        service: &str,
        result: &mut CallToolResult,
    ) -> Result<Counts, PiiRefusal> {
        self.pseudonymize_with(subject, service, |walk, mode| {
            if let Some(structured) = result.structured_content.as_mut() {
                walk.value(structured, "", None, mode);
            }
            // Every block that can carry text passes the same JSON-aware walk.
            for block in result.content.iter_mut() {
                walk.block(block, mode);
            }
        })
        .await
    }

    /// The same for a resource read: every text content (JSON walked as JSON).
    pub async fn pseudonymize_resource(
        &self,
        subject: &str,
        service: &str,
        result: &mut ReadResourceResult,
    ) -> Result<Counts, PiiRefusal> {
        self.pseudonymize_with(subject, service, |walk, mode| {
            for contents in result.contents.iter_mut() {
                walk.contents(contents, mode);
            }
        })
        .await
    }

    /// The same for a prompt: its description and every message's content.
    pub async fn pseudonymize_prompt(
        &self,
        subject: &str,
        service: &str,
        result: &mut GetPromptResult,
    ) -> Result<Counts, PiiRefusal> {
        self.pseudonymize_with(subject, service, |walk, mode| {
            if let Some(description) = result.description.as_mut()
                && let Some(replaced) = walk.text_or_json(description, mode)
            {
                *description = replaced;
            }
            for message in result.messages.iter_mut() {
                walk.block(&mut message.content, mode);
            }
        })
        .await
    }

    /// The same for completion values (a name suggested is a name).
    pub async fn pseudonymize_completion(
        &self,
        subject: &str,
        service: &str,
        result: &mut CompleteResult,
    ) -> Result<Counts, PiiRefusal> {
        self.pseudonymize_with(subject, service, |walk, mode| {
            for value in result.completion.values.iter_mut() {
                if let Some(replaced) = walk.text_or_json(value, mode) {
                    *value = replaced;
                }
            }
        })
        .await
    }

    /// Walk what `visit` hands the walker, then store the pseudonyms it
    /// issued; if they cannot be stored, the answer is withheld.
    async fn pseudonymize_with(
        &self,
        subject: &str,
        service: &str,
        visit: impl FnOnce(&mut Walk<'_>, Mode),
    ) -> Result<Counts, PiiRefusal> {
        let service_mode = self.service_mode(service);
        let has_field_rules = self
            .config
            .services
            .get(service)
            .is_some_and(|s| !s.fields.is_empty());
        if service_mode == Mode::Pass && !has_field_rules {
            return Ok(Counts::default());
        }
        let scope = self.scope(subject);
        let mut walk = Walk {
            pii: self,
            scope: &scope,
            service,
            service_mode,
            remember: Vec::new(),
            counts: Counts::default(),
        };
        visit(&mut walk, service_mode);
        let Walk {
            remember, counts, ..
        } = walk;
        for (pseudonym, entity, value) in &remember {
            self.store
                .remember(&scope.scope_id, pseudonym, entity, value)
                .await
                .map_err(|e| PiiRefusal {
                    reason: Reason::PiiStoreUnavailable,
                    message: format!(
                        "pseudonyms could not be stored, so the result is withheld: {e}"
                    ),
                })?;
        }
        for (entity, n) in &counts.0 {
            self.stats
                .entry((service.to_owned(), entity.clone()))
                .or_default()
                .0 += n;
        }
        Ok(counts)
    }

    /// Put the real values back into `arguments`; refuse pseudonyms of
    /// another scope or that the gateway never issued.
    pub async fn rehydrate(
        &self,
        subject: &str,
        service: &str,
        arguments: &mut JsonObject,
    ) -> Result<Counts, PiiRefusal> {
        if !self.config.enabled {
            return Ok(Counts::default());
        }
        let scope = self.scope(subject);
        let mut found = Vec::new();
        collect_pseudonyms(&Value::Object(arguments.clone()), &mut found);
        if found.is_empty() {
            return Ok(Counts::default());
        }
        let mut real = BTreeMap::new();
        let mut counts = Counts::default();
        for pseudonym in found {
            if real.contains_key(&pseudonym) {
                continue;
            }
            match self.store.lookup(&scope.scope_id, &pseudonym).await {
                Ok(Lookup::Found(value)) => {
                    *counts.0.entry(label_of(&pseudonym).to_owned()).or_default() += 1;
                    real.insert(pseudonym, value);
                }
                Ok(Lookup::OtherScope) => {
                    return Err(PiiRefusal {
                        reason: Reason::PseudonymOtherScope,
                        message: format!("{pseudonym} was issued to someone else; it stays opaque"),
                    });
                }
                Ok(Lookup::Unknown) => {
                    return Err(PiiRefusal {
                        reason: Reason::UnknownPseudonym,
                        message: format!(
                            "{pseudonym} was never issued by this gateway (or has expired)"
                        ),
                    });
                }
                Err(e) => {
                    return Err(PiiRefusal {
                        reason: Reason::PiiStoreUnavailable,
                        message: format!("pseudonyms could not be looked up: {e}"),
                    });
                }
            }
        }
        for value in arguments.values_mut() {
            replace_pseudonyms(value, &real);
        }
        for (entity, n) in &counts.0 {
            self.stats
                .entry((service.to_owned(), entity.clone()))
                .or_default()
                .1 += n;
        }
        Ok(counts)
    }
}

fn label_of(pseudonym: &str) -> &str {
    if pseudonym.starts_with("person-") {
        "EMAIL"
    } else {
        pseudonym
            .trim_start_matches('<')
            .split('_')
            .next()
            .unwrap_or("CUSTOM")
    }
}

fn collect_pseudonyms(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => out.extend(PSEUDONYM.find_iter(s).map(|m| m.as_str().to_owned())),
        Value::Array(items) => items.iter().for_each(|v| collect_pseudonyms(v, out)),
        Value::Object(map) => map.values().for_each(|v| collect_pseudonyms(v, out)),
        _ => {}
    }
}

fn replace_pseudonyms(value: &mut Value, real: &BTreeMap<String, String>) {
    match value {
        Value::String(s) if PSEUDONYM.is_match(s) => {
            // JSON inside a string is rehydrated as JSON, so a real value with
            // a quote or backslash does not break the document it lands in.
            let trimmed = s.trim_start();
            if (trimmed.starts_with('{') || trimmed.starts_with('['))
                && let Ok(mut json) = serde_json::from_str::<Value>(s)
            {
                replace_pseudonyms(&mut json, real);
                *s = serde_json::to_string(&json).unwrap_or_default();
                return;
            }
            *s = PSEUDONYM
                .replace_all(s, |c: &regex::Captures<'_>| {
                    real.get(&c[0]).cloned().unwrap_or_else(|| c[0].to_owned())
                })
                .into_owned();
        }
        Value::Array(items) => items.iter_mut().for_each(|v| replace_pseudonyms(v, real)),
        Value::Object(map) => map.values_mut().for_each(|v| replace_pseudonyms(v, real)),
        _ => {}
    }
}

impl Walk<'_> {
    /// A content block: text, an embedded resource's text, a resource
    /// link's title and description.
    fn block(&mut self, block: &mut ContentBlock, mode: Mode) {
        match block {
            ContentBlock::Text(text) => {
                if let Some(replaced) = self.text_or_json(&text.text, mode) {
                    text.text = replaced;
                }
            }
            ContentBlock::Resource(embedded) => self.contents(&mut embedded.resource, mode),
            ContentBlock::ResourceLink(link) => {
                for field in [&mut link.title, &mut link.description]
                    .into_iter()
                    .flatten()
                {
                    if let Some(replaced) = self.text_or_json(field, mode) {
                        *field = replaced;
                    }
                }
            }
            _ => {}
        }
    }

    /// A resource's contents: text is walked; a blob is opaque bytes. Its
    /// URI can carry what a template was expanded with (an address).
    fn contents(&mut self, contents: &mut ResourceContents, mode: Mode) {
        if let ResourceContents::TextResourceContents { uri, .. }
        | ResourceContents::BlobResourceContents { uri, .. } = contents
        {
            *uri = self.text(uri, mode);
        }
        if let ResourceContents::TextResourceContents { text, .. } = contents
            && let Some(replaced) = self.text_or_json(text, mode)
        {
            *text = replaced;
        }
    }

    fn replacement(&mut self, entity: Entity, value: &str, mode: Mode) -> String {
        let label = match entity {
            Entity::Custom(i) => self
                .pii
                .custom
                .get(i as usize)
                .map_or("CUSTOM", |c| c.label.as_str()),
            other => other.label(),
        };
        *self.counts.0.entry(label.to_owned()).or_default() += 1;
        match mode {
            Mode::Mask => mask(entity, value),
            Mode::Pass => value.to_owned(),
            Mode::Pseudonymize => {
                let pseudonym = self.scope.pseudonym(entity, value);
                self.remember
                    .push((pseudonym.clone(), entity.label(), value.to_owned()));
                pseudonym
            }
        }
    }

    fn text(&mut self, text: &str, mode: Mode) -> String {
        if mode == Mode::Pass {
            return text.to_owned();
        }
        let finds = detect::scan(text, &self.pii.custom);
        if finds.is_empty() {
            return text.to_owned();
        }
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for find in finds {
            out.push_str(&text[at..find.start]);
            let replaced = self.replacement(find.entity, &text[find.start..find.end], mode);
            out.push_str(&replaced);
            at = find.end;
        }
        out.push_str(&text[at..]);
        out
    }

    fn is_name_key(&self, key: &str, person_object: bool) -> bool {
        NAME_KEYS.contains(&key)
            || self.pii.config.name_keys.iter().any(|k| k == key)
            // `display_name` also names columns and tables (Metabase): a
            // person's only inside a person.
            || (person_object
                && matches!(key, "name" | "fullname" | "username_display" | "display_name"))
    }

    fn value(&mut self, value: &mut Value, path: &str, parent_key: Option<&str>, inherited: Mode) {
        match value {
            Value::Object(map) => {
                let person_object = parent_key.is_some_and(|p| PERSON_PARENTS.contains(&p))
                    || map.keys().any(|k| PERSON_SIBLINGS.contains(&k.as_str()));
                for (key, child) in map.iter_mut() {
                    let child_path = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    let mode = self.pii.field_mode(self.service, &child_path, inherited);
                    match child {
                        Value::String(s)
                            if mode != Mode::Pass
                                && self.is_name_key(key, person_object)
                                && !s.is_empty() =>
                        {
                            // A name is a name: the whole value, not a pattern inside it.
                            if !PSEUDONYM.is_match(s) {
                                *s = self.replacement(Entity::Person, &s.clone(), mode);
                            }
                        }
                        other => self.value(other, &child_path, Some(key), mode),
                    }
                }
            }
            Value::Array(items) => {
                for item in items.iter_mut() {
                    self.value(item, path, parent_key, inherited);
                }
            }
            Value::String(s) => {
                // JSON encoded in a string (FastMCP's `{"result": "<json>"}`)
                // is walked as JSON, at any depth.
                if let Some(replaced) = self.json_in_string(s, path, parent_key, inherited) {
                    *s = replaced;
                } else {
                    let replaced = self.text(s, inherited);
                    *s = replaced;
                }
            }
            _ => {}
        }
        let _ = self.service_mode;
    }

    /// `text` as JSON (an object or array) walked and written back, if it
    /// is JSON; `None` if it is not.
    fn json_in_string(
        &mut self,
        text: &str,
        path: &str,
        parent_key: Option<&str>,
        mode: Mode,
    ) -> Option<String> {
        let trimmed = text.trim_start();
        if !(trimmed.starts_with('{') || trimmed.starts_with('[')) {
            return None;
        }
        let mut json: Value = serde_json::from_str(text).ok()?;
        let before = self.counts.total();
        self.value(&mut json, path, parent_key, mode);
        if self.counts.total() == before {
            // Untouched JSON keeps its exact bytes (and formatting).
            return Some(text.to_owned());
        }
        // Serializing a `Value` cannot fail (its keys are strings).
        Some(serde_json::to_string(&json).unwrap_or_default())
    }

    /// Free text or JSON text, pseudonymized; `None` if nothing changed
    /// (the block keeps its exact bytes).
    fn text_or_json(&mut self, text: &str, mode: Mode) -> Option<String> {
        let before = self.counts.total();
        let replaced = match self.json_in_string(text, "", None, mode) {
            Some(replaced) => replaced,
            None => self.text(text, mode),
        };
        (self.counts.total() != before).then_some(replaced)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_scopes_keys_are_derived_once_and_equal_fresh_ones() {
        let dir = tempfile::tempdir().unwrap();
        let pool = crate::storage::open(dir.path()).await.unwrap();
        let master = MasterKey::from_bytes([3; 32]);
        let pii = Pii::new(PiiConfig::default(), &master, pool).unwrap();
        let first = pii.scope("Alice@Example.com");
        // The same scope however the subject is written: the same keys, kept.
        let again = pii.scope("alice@example.com");
        assert!(Arc::ptr_eq(&first, &again));
        let fresh = ScopeKeys::new(&master, "alice@example.com");
        assert_eq!(first.scope_id, fresh.scope_id);
        assert_eq!(
            first.pseudonym(Entity::Email, "bob@corp.example"),
            fresh.pseudonym(Entity::Email, "bob@corp.example")
        );
        assert_ne!(pii.scope("carol@example.com").scope_id, first.scope_id);
        // Bounded: past the limit the set starts over, and keys stay right.
        for i in 0..SCOPE_KEYS_KEPT {
            pii.scope(&format!("user{i}@example.com"));
        }
        assert!(pii.scopes.len() <= SCOPE_KEYS_KEPT);
        assert_eq!(pii.scope("alice@example.com").scope_id, fresh.scope_id);
    }
}
