//! Policy hooks: YAML rules run on every call, company layer first (it
//! enforces: block, rewrite arguments, cap answers), then the subject's own
//! layer (it may only narrow). `when:` conditions are CEL. The set is swapped
//! whole on reload, so a call sees either the old set or the new one.
//!
//! A company hook that fails (its condition errors or overruns its time
//! budget) fails the call closed; a user hook that fails is skipped, logged.

pub mod load;
pub mod self_service;
pub mod spec;
mod when;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use rmcp::model::{CallToolResult, ContentBlock, JsonObject};
use serde_json::Value;

use crate::domain::{Reason, Refusal, glob_match};
use load::HookError;
use spec::{HookSpec, KindSpec, Phase};
use when::WhenScope;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layer {
    Company,
    /// A user's own hooks: they apply to calls where that user is the subject.
    User(String),
}

impl std::fmt::Display for Layer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Layer::Company => f.write_str("company"),
            Layer::User(email) => write!(f, "user {email}"),
        }
    }
}

pub struct CompiledHook {
    pub layer: Layer,
    pub source: Arc<str>,
    pub spec: HookSpec,
    pub when: Option<cel::Program>,
    pub patterns: Vec<(String, regex::Regex)>,
}

/// What a call is, for matching and for `when:`.
#[derive(Debug, Clone, Copy)]
pub struct CallFacts<'a> {
    pub tool: &'a str,
    pub service: &'a str,
    pub action: &'a str,
    pub risk: &'a str,
    pub subject: &'a str,
    pub actor: &'a str,
}

/// A hook stopped the call.
pub type HookRefusal = Refusal;

#[derive(Debug, Default)]
pub struct PreOutcome {
    /// The hook that asks for the human's confirmation, if any.
    pub confirm: Option<String>,
    pub warnings: Vec<String>,
}

/// An immutable, ordered set of hooks.
#[derive(Default)]
pub struct HookSet {
    hooks: Vec<CompiledHook>,
}

impl HookSet {
    pub fn new(mut hooks: Vec<CompiledHook>) -> Self {
        // Company first, then users; within a layer by `order`, then name.
        hooks.sort_by(|a, b| {
            let layer = |h: &CompiledHook| matches!(h.layer, Layer::User(_)) as u8;
            (layer(a), a.spec.order, &a.spec.name).cmp(&(layer(b), b.spec.order, &b.spec.name))
        });
        Self { hooks }
    }

    pub fn len(&self) -> usize {
        self.hooks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hooks.is_empty()
    }

    pub fn hooks(&self) -> &[CompiledHook] {
        &self.hooks
    }

    fn active<'s>(
        &'s self,
        phase: Phase,
        facts: &'s CallFacts<'_>,
    ) -> impl Iterator<Item = &'s CompiledHook> + 's {
        self.hooks
            .iter()
            .filter(move |h| h.spec.enabled && h.spec.phase == phase && h.applies_to(facts))
    }

    /// Run the pre hooks; they may rewrite `arguments`.
    pub fn run_pre(
        &self,
        facts: &CallFacts<'_>,
        arguments: &mut JsonObject,
        budget: Duration,
    ) -> Result<PreOutcome, HookRefusal> {
        let mut outcome = PreOutcome::default();
        // One scope per call; after a rewrite only the fields it touched
        // are converted again, before the next condition reads them.
        let mut scope: Option<Result<WhenScope<'_>, String>> = None;
        let mut rewritten: Vec<&str> = Vec::new();
        for hook in self.active(Phase::Pre, facts) {
            if hook.when.is_some() {
                match &mut scope {
                    None => scope = Some(WhenScope::new(facts, arguments, None)),
                    Some(Ok(current)) if !rewritten.is_empty() => {
                        if let Err(e) = current.refresh_args(arguments, &rewritten) {
                            scope = Some(Err(e));
                        }
                    }
                    Some(_) => {}
                }
                rewritten.clear();
            }
            match hook.condition(scope.as_ref(), budget) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(problem) => {
                    hook.failed(&problem)?;
                    continue;
                }
            }
            rewritten.extend(hook.apply_pre(arguments, &mut outcome)?);
        }
        Ok(outcome)
    }

    /// Run the post hooks over an answer.
    pub fn run_post(
        &self,
        facts: &CallFacts<'_>,
        arguments: &JsonObject,
        result: &mut CallToolResult,
        budget: Duration,
    ) -> Result<(), HookRefusal> {
        let mut scope: Option<Result<WhenScope<'_>, String>> = None;
        for hook in self.active(Phase::Post, facts) {
            if hook.when.is_some() && scope.is_none() {
                let result_json = serde_json::to_value(&*result).unwrap_or(Value::Null);
                scope = Some(WhenScope::new(facts, arguments, Some(&result_json)));
            }
            match hook.condition(scope.as_ref(), budget) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(problem) => {
                    hook.failed(&problem)?;
                    continue;
                }
            }
            hook.apply_post(result)?;
            scope = None;
        }
        Ok(())
    }
}

impl CompiledHook {
    fn label(&self) -> String {
        format!("hook '{}' ({})", self.spec.name, self.layer)
    }

    fn applies_to(&self, facts: &CallFacts<'_>) -> bool {
        if let Layer::User(email) = &self.layer
            && !email.eq_ignore_ascii_case(facts.subject)
        {
            return false;
        }
        let m = &self.spec.matches;
        let glob = |pattern: &Option<String>, text: &str| {
            pattern.as_deref().is_none_or(|p| glob_match(p, text))
        };
        glob(&m.tool, facts.tool)
            && m.service.as_deref().is_none_or(|s| s == facts.service)
            && glob(&m.action, facts.action)
            && (m.risk.is_empty() || m.risk.iter().any(|r| r == facts.risk))
            && glob(&m.subject, facts.subject)
            && glob(&m.actor, facts.actor)
    }

    /// Evaluate `when:` (true without one) in the call's scope.
    fn condition(
        &self,
        scope: Option<&Result<WhenScope<'_>, String>>,
        budget: Duration,
    ) -> Result<bool, String> {
        let Some(program) = &self.when else {
            return Ok(true);
        };
        let scope = match scope {
            Some(Ok(scope)) => scope,
            Some(Err(problem)) => return Err(problem.clone()),
            None => return Err("no scope to evaluate `when`".into()),
        };
        let started = Instant::now();
        let value = scope
            .evaluate(program)
            .map_err(|e| format!("`when` failed: {e}"))?;
        if started.elapsed() > budget {
            return Err(format!(
                "`when` took {:?}, over the {budget:?} budget",
                started.elapsed()
            ));
        }
        match value {
            cel::Value::Bool(b) => Ok(b),
            other => Err(format!("`when` must be true or false, got {other:?}")),
        }
    }

    /// A failing company hook refuses; a failing user hook is skipped.
    fn failed(&self, problem: &str) -> Result<(), HookRefusal> {
        match self.layer {
            Layer::Company => {
                tracing::error!(hook = %self.spec.name, file = %self.source, problem, "company hook failed: call refused");
                Err(HookRefusal {
                    reason: Reason::HookFailed,
                    message: format!("{} failed, so the call is refused: {problem}", self.label()),
                })
            }
            Layer::User(_) => {
                tracing::warn!(hook = %self.spec.name, file = %self.source, problem, "user hook failed: skipped");
                Ok(())
            }
        }
    }

    /// Apply a pre hook; the top-level argument fields it rewrote.
    fn apply_pre(
        &self,
        arguments: &mut JsonObject,
        outcome: &mut PreOutcome,
    ) -> Result<Vec<&str>, HookRefusal> {
        let mut rewritten = Vec::new();
        let refuse = |reason: Reason, message: String| HookRefusal {
            reason,
            message: format!("{}: {message}", self.label()),
        };
        match &self.spec.kind {
            KindSpec::Deny { message } => return Err(refuse(Reason::HookDenied, message.clone())),
            KindSpec::RequireConfirmation { message } => {
                outcome
                    .confirm
                    .get_or_insert_with(|| message.clone().unwrap_or_else(|| self.label()));
            }
            KindSpec::EndpointAllowlist { field, allow } => match lookup(arguments, field) {
                None => {}
                Some(Value::String(endpoint))
                    if !allow.iter().any(|glob| glob_match(glob, endpoint)) =>
                {
                    return Err(refuse(
                        Reason::EndpointNotAllowed,
                        format!("{field} '{endpoint}' is not in the allow-list"),
                    ));
                }
                Some(Value::String(_)) => {}
                Some(_) => {
                    return Err(refuse(
                        Reason::EndpointNotAllowed,
                        format!("{field} must be a string"),
                    ));
                }
            },
            KindSpec::Validate {
                required, one_of, ..
            } => {
                for field in required {
                    if lookup(arguments, field).is_none_or(Value::is_null) {
                        return Err(refuse(
                            Reason::HookValidationFailed,
                            format!("{field} is required"),
                        ));
                    }
                }
                for (field, pattern) in &self.patterns {
                    if let Some(value) = lookup(arguments, field) {
                        let text = value
                            .as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| value.to_string());
                        if !pattern.is_match(&text) {
                            return Err(refuse(
                                Reason::HookValidationFailed,
                                format!("{field} must match /{}/", pattern.as_str()),
                            ));
                        }
                    }
                }
                for (field, allowed) in one_of {
                    if let Some(value) = lookup(arguments, field)
                        && !allowed.contains(value)
                    {
                        return Err(refuse(
                            Reason::HookValidationFailed,
                            format!("{field} must be one of {}", Value::Array(allowed.clone())),
                        ));
                    }
                }
            }
            KindSpec::SetDefault { values } => {
                for (field, value) in values {
                    if lookup(arguments, field).is_none() {
                        set(arguments, field, value.clone());
                        rewritten.push(top_level(field));
                    }
                }
            }
            KindSpec::Inject { values } => {
                for (field, value) in values {
                    set(arguments, field, value.clone());
                    rewritten.push(top_level(field));
                }
            }
            KindSpec::MarkdownToAdf { fields } => {
                for field in fields {
                    if let Some(Value::String(markdown)) = lookup(arguments, field) {
                        let adf = crate::adf::markdown_to_adf(markdown);
                        set(arguments, field, adf);
                        rewritten.push(top_level(field));
                    }
                }
            }
            KindSpec::NormalizeText { fields } => {
                for field in fields {
                    if let Some(Value::String(text)) = lookup(arguments, field)
                        && text.contains('\\')
                    {
                        let fixed = text
                            .replace("\\r\\n", "\n")
                            .replace("\\n", "\n")
                            .replace("\\t", "\t");
                        set(arguments, field, Value::String(fixed));
                        rewritten.push(top_level(field));
                    }
                }
            }
            KindSpec::Warn { message } => outcome
                .warnings
                .push(format!("{}: {message}", self.label())),
            KindSpec::CapResponse { .. } => {}
        }
        Ok(rewritten)
    }

    fn apply_post(&self, result: &mut CallToolResult) -> Result<(), HookRefusal> {
        match &self.spec.kind {
            KindSpec::Deny { message } => Err(HookRefusal {
                reason: Reason::HookDenied,
                message: format!("{}: the answer is withheld: {message}", self.label()),
            }),
            KindSpec::Warn { message } => {
                result.content.push(ContentBlock::text(format!(
                    "Warning from {}: {message}",
                    self.label()
                )));
                Ok(())
            }
            KindSpec::CapResponse {
                max_bytes,
                max_items,
            } => {
                cap(result, *max_bytes, *max_items, &self.spec.name);
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// The top-level field a dotted path is under (`fields` for `fields.description`).
fn top_level(path: &str) -> &str {
    path.split('.').next().unwrap_or(path)
}

/// A dotted path into the arguments (`fields.description`).
fn lookup<'a>(arguments: &'a JsonObject, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let mut value = arguments.get(parts.next()?)?;
    for part in parts {
        value = value.get(part)?;
    }
    Some(value)
}

fn set(arguments: &mut JsonObject, path: &str, new: Value) {
    let mut parts: Vec<&str> = path.split('.').collect();
    let last = parts.pop().unwrap_or(path);
    let mut map = arguments;
    for part in parts {
        let entry = map
            .entry(part.to_owned())
            .or_insert_with(|| Value::Object(Default::default()));
        if !entry.is_object() {
            *entry = Value::Object(Default::default());
        }
        map = entry.as_object_mut().expect("made an object above");
    }
    map.insert(last.to_owned(), new);
}

/// Cap arrays in the structured result and the text, with a visible marker.
fn cap(
    result: &mut CallToolResult,
    max_bytes: Option<usize>,
    max_items: Option<usize>,
    hook: &str,
) {
    let mut notes = Vec::new();
    if let (Some(limit), Some(structured)) = (max_items, result.structured_content.as_mut()) {
        let cut = cap_arrays(structured, limit);
        if cut > 0 {
            notes.push(format!(
                "{cut} list items dropped (at most {limit} per list)"
            ));
        }
    }
    if let Some(limit) = max_bytes {
        let mut used = 0usize;
        let mut dropped = 0usize;
        for block in result.content.iter_mut() {
            if let Some(text) = block.as_text().map(|t| t.text.clone()) {
                let room = limit.saturating_sub(used);
                if text.len() > room {
                    let mut end = room;
                    while !text.is_char_boundary(end) {
                        end -= 1;
                    }
                    dropped += text.len() - end;
                    *block = ContentBlock::text(text[..end].to_owned());
                    used = limit;
                } else {
                    used += text.len();
                }
            }
        }
        if dropped > 0 {
            notes.push(format!("{dropped} bytes of text dropped (at most {limit})"));
        }
    }
    if !notes.is_empty() {
        result.content.push(ContentBlock::text(format!(
            "[truncated by mcpgate hook '{hook}': {}]",
            notes.join("; ")
        )));
    }
}

fn cap_arrays(value: &mut Value, limit: usize) -> usize {
    match value {
        Value::Array(items) => {
            let mut cut = items.len().saturating_sub(limit);
            items.truncate(limit);
            for item in items.iter_mut() {
                cut += cap_arrays(item, limit);
            }
            cut
        }
        Value::Object(map) => map.values_mut().map(|v| cap_arrays(v, limit)).sum(),
        _ => 0,
    }
}

/// The live hook set of a gateway, reloaded whole from its directory.
pub struct Hooks {
    dir: PathBuf,
    current: RwLock<Arc<HookSet>>,
    /// Newest modification seen under `dir` (for the file watcher).
    seen: RwLock<Option<SystemTime>>,
    /// Why the last reload failed (cleared by a good one): the console shows it.
    last_error: RwLock<Option<String>>,
    pub budget: Duration,
}

impl Hooks {
    /// Load `dir` (a missing directory means no hooks).
    pub fn load(dir: &Path, budget: Duration) -> Result<Hooks, HookError> {
        let set = load::load_dir(dir)?;
        Ok(Hooks {
            dir: dir.to_owned(),
            current: RwLock::new(Arc::new(set)),
            seen: RwLock::new(newest_change(dir)),
            last_error: RwLock::new(None),
            budget,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn current(&self) -> Arc<HookSet> {
        self.current.read().expect("hook set lock").clone()
    }

    /// Reload from disk; on error the previous set stays active.
    pub fn reload(&self) -> Result<usize, HookError> {
        let stamp = newest_change(&self.dir);
        match load::load_dir(&self.dir) {
            Ok(set) => {
                let count = set.len();
                *self.current.write().expect("hook set lock") = Arc::new(set);
                *self.seen.write().expect("hook stamp lock") = stamp;
                *self.last_error.write().expect("hook error lock") = None;
                tracing::info!(hooks = count, dir = %self.dir.display(), "hooks reloaded");
                Ok(count)
            }
            Err(e) => {
                *self.seen.write().expect("hook stamp lock") = stamp;
                *self.last_error.write().expect("hook error lock") = Some(e.to_string());
                tracing::error!(error = %e, "hooks not reloaded; the previous set stays active");
                Err(e)
            }
        }
    }

    /// True if a file under the directory changed since the last load.
    /// Reload whenever the files change (a bad file keeps the old set),
    /// until the hooks are dropped or the gateway drains.
    pub fn spawn_watcher(self: &Arc<Self>, every: Duration, drain: Arc<crate::drain::Drain>) {
        let hooks = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                let Some(hooks) = hooks.upgrade() else { return };
                if drain.is_draining() {
                    return;
                }
                if hooks.changed_on_disk() {
                    let _ = hooks.reload();
                }
            }
        });
    }

    /// Why the last reload failed, if it did.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.read().expect("hook error lock").clone()
    }

    pub fn changed_on_disk(&self) -> bool {
        newest_change(&self.dir) != *self.seen.read().expect("hook stamp lock")
    }
}

/// The newest modification time (and count, via the sum of nanos) of the
/// hook files: a cheap fingerprint for polling.
fn newest_change(dir: &Path) -> Option<SystemTime> {
    fn walk(dir: &Path, newest: &mut Option<SystemTime>, depth: usize) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        if let Ok(meta) = std::fs::metadata(dir)
            && let Ok(modified) = meta.modified()
        {
            *newest = (*newest).max(Some(modified));
        }
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() && depth < 3 {
                walk(&path, newest, depth + 1);
            } else if let Ok(modified) = entry.metadata().and_then(|m| m.modified()) {
                *newest = (*newest).max(Some(modified));
            }
        }
    }
    let mut newest = None;
    walk(dir, &mut newest, 0);
    newest
}

/// A write call to Slack by a Windmill flow, for the tests of this module.
#[cfg(test)]
fn test_facts() -> CallFacts<'static> {
    CallFacts {
        tool: "slack_write_actions",
        service: "slack",
        action: "post_message",
        risk: "write",
        subject: "alice@example.com",
        actor: "windmill:prod/f/nightly",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_condition_sees_the_rewrites_of_the_hooks_before_it() {
        let yaml = r##"hooks:
  - name: default-channel
    order: 1
    kind: set_default
    values: { channel: '#general', meta.source: mcpgate }
  - name: sees-the-default
    order: 2
    when: 'args.channel == "#general" && args.meta.source == "mcpgate"'
    kind: set_default
    values: { thread: general }
  - name: sees-both
    order: 3
    when: 'has(args.thread) && args.thread == "general" && args.text == "hi"'
    kind: deny
    message: not in general
"##;
        let set = HookSet::new(load::parse(yaml, "test.yaml", Layer::Company).unwrap());
        let budget = Duration::from_secs(1);

        let mut args = serde_json::json!({"text": "hi"})
            .as_object()
            .unwrap()
            .clone();
        let refused = set.run_pre(&test_facts(), &mut args, budget).unwrap_err();
        assert_eq!(refused.reason, Reason::HookDenied, "{}", refused.message);

        let mut args = serde_json::json!({"text": "hi", "channel": "#mine"})
            .as_object()
            .unwrap()
            .clone();
        set.run_pre(&test_facts(), &mut args, budget).unwrap();
        assert_eq!(args["channel"], "#mine");
        assert_eq!(args["meta"]["source"], "mcpgate");
        assert!(args.get("thread").is_none(), "the second hook saw #mine");
    }
}
