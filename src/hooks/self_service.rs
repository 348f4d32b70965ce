//! `gateway_my_hooks`: a person manages their own (user-layer) hooks from
//! their AI client — list, add, remove. The same rules as files: a user hook
//! may only narrow. Every change is audited; workflows cannot use it.

use std::sync::Arc;

use rmcp::model::{CallToolResult, ContentBlock, JsonObject, Tool, ToolAnnotations};
use serde_json::{Value, json};

use super::Hooks;
use super::Layer;
use super::load::parse;
use crate::domain::{Reason, Refusal};
use crate::principal::Principal;

pub const TOOL: &str = "gateway_my_hooks";

pub fn tool() -> Tool {
    let schema = json!({
        "type": "object",
        "properties": {
            "op": {"type": "string", "enum": ["list", "add", "remove"]},
            "hook": {"type": "object", "description": "for add: one hook, as in a hook file (name, match, when, kind, …)"},
            "name": {"type": "string", "description": "for remove: the hook's name"}
        },
        "required": ["op"]
    });
    let Value::Object(schema) = schema else {
        unreachable!("a JSON object literal")
    };
    Tool::new(
        TOOL,
        "List, add or remove your own policy hooks (they can only narrow what you may do: deny, require_confirmation, endpoint_allowlist, validate, set_default, cap_response, warn).",
        Arc::new(schema),
    )
    .with_annotations(ToolAnnotations::new().destructive(false))
}

fn file_name(hook: &str) -> Option<String> {
    let ok = !hook.is_empty()
        && hook.len() <= 64
        && hook
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    ok.then(|| format!("{hook}.yaml"))
}

fn refused(reason: Reason, message: String) -> Refusal {
    Refusal::new(reason, message)
}

/// One `gateway_my_hooks` call (the pipeline audits it).
pub fn run(
    hooks: &Hooks,
    principal: &Principal,
    op: &str,
    arguments: &JsonObject,
) -> Result<CallToolResult, Refusal> {
    if !principal.kind().is_interactive() {
        return Err(refused(
            Reason::HooksNotForWorkflows,
            "only a person manages their own hooks".into(),
        ));
    }
    let dir = hooks
        .dir()
        .join("users")
        .join(principal.subject.to_ascii_lowercase());
    match op {
        "list" => {
            let set = hooks.current();
            let mine: Vec<Value> = set
                .hooks()
                .iter()
                .filter(|h| h.layer == Layer::User(principal.subject.to_ascii_lowercase()))
                .map(|h| json!({"name": h.spec.name, "kind": h.spec.kind.name(), "enabled": h.spec.enabled, "when": h.spec.when}))
                .collect();
            let mut result = CallToolResult::success(vec![ContentBlock::text(
                serde_json::to_string(&mine).unwrap_or_default(),
            )]);
            result.structured_content = Some(json!({ "hooks": mine }));
            Ok(result)
        }
        "add" => {
            let hook = arguments.get("hook").cloned().ok_or_else(|| {
                refused(Reason::InvalidArguments, "hook: required for add".into())
            })?;
            let name = hook
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let file = file_name(&name).ok_or_else(|| {
                refused(
                    Reason::InvalidHook,
                    "hook.name: use 1-64 letters, digits, '-' or '_'".into(),
                )
            })?;
            let text = serde_yaml::to_string(&json!({ "hooks": [hook] }))
                .map_err(|e| refused(Reason::InvalidHook, e.to_string()))?;
            // The same checks as a file, before anything is written.
            parse(
                &text,
                &file,
                Layer::User(principal.subject.to_ascii_lowercase()),
            )
            .map_err(|e| refused(Reason::InvalidHook, e.message))?;
            std::fs::create_dir_all(&dir)
                .and_then(|()| std::fs::write(dir.join(&file), &text))
                .map_err(|e| {
                    Refusal::new(
                        Reason::HooksUnavailable,
                        format!("cannot save the hook: {e}"),
                    )
                })?;
            hooks.reload().map_err(|e| {
                let _ = std::fs::remove_file(dir.join(&file));
                refused(Reason::InvalidHook, e.to_string())
            })?;
            Ok(CallToolResult::success(vec![ContentBlock::text(format!(
                "hook '{name}' added"
            ))]))
        }
        "remove" => {
            let name = arguments
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let file = file_name(name)
                .filter(|f| dir.join(f).is_file())
                .ok_or_else(|| {
                    refused(Reason::UnknownHook, format!("you have no hook '{name}'"))
                })?;
            std::fs::remove_file(dir.join(file)).map_err(|e| {
                Refusal::new(
                    Reason::HooksUnavailable,
                    format!("cannot remove the hook: {e}"),
                )
            })?;
            hooks
                .reload()
                .map_err(|e| Refusal::new(Reason::HooksUnavailable, e.to_string()))?;
            Ok(CallToolResult::success(vec![ContentBlock::text(format!(
                "hook '{name}' removed"
            ))]))
        }
        other => Err(refused(
            Reason::InvalidArguments,
            format!("op: '{other}' is not list, add or remove"),
        )),
    }
}
