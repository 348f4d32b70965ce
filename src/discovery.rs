//! Action discovery for long catalogs: `gateway_search_actions` finds actions
//! by words across every service the caller may use, and
//! `gateway_describe_action` gives one action's full parameter schema — so a
//! model need not read every catalog into its context. Both only show what
//! the caller may call, and both are audited.

use std::sync::Arc;

use rmcp::model::{CallToolResult, ContentBlock, JsonObject, Tool, ToolAnnotations};
use serde_json::{Value, json};

use crate::catalog::{Action, READ_SUFFIX, WRITE_SUFFIX};
use crate::config::Config;
use crate::domain::{Reason, Refusal, Risk};
use crate::policy::Catalogs;
use crate::principal::Principal;

pub const SEARCH: &str = "gateway_search_actions";
pub const DESCRIBE: &str = "gateway_describe_action";
const DEFAULT_LIMIT: usize = 10;
const MAX_LIMIT: usize = 50;

fn object(value: Value) -> Arc<JsonObject> {
    let Value::Object(map) = value else {
        unreachable!("a JSON object literal")
    };
    Arc::new(map)
}

pub fn tools() -> Vec<Tool> {
    vec![
        Tool::new(
            SEARCH,
            "Find actions across every service you may use, by words (e.g. \"create schedule\", \"post message\"). Answers each match's service, action, risk class and the tool to call.",
            object(json!({
                "type": "object",
                "properties": {
                    "query": {"type": "string", "description": "words to look for in action names and descriptions"},
                    "service": {"type": "string", "description": "only this service"},
                    "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}
                },
                "required": ["query"]
            })),
        )
        .with_annotations(ToolAnnotations::new().read_only(true)),
        Tool::new(
            DESCRIBE,
            "One action's full parameter schema, risk class and the tool that runs it.",
            object(json!({
                "type": "object",
                "properties": {
                    "service": {"type": "string"},
                    "action": {"type": "string"}
                },
                "required": ["service", "action"]
            })),
        )
        .with_annotations(ToolAnnotations::new().read_only(true)),
    ]
}

/// What discovery shows of an action.
struct Found {
    service: String,
    name: String,
    description: String,
    risk: Risk,
    input_schema: Arc<JsonObject>,
}

fn tool_for(service: &str, action: &Found) -> String {
    let suffix = if action.risk == Risk::Read {
        READ_SUFFIX
    } else {
        WRITE_SUFFIX
    };
    format!("{service}{suffix}")
}

/// Every action the caller may run, with its service.
fn visible(
    config: &Config,
    catalogs: &Catalogs,
    principal: &Principal,
    only: Option<&str>,
) -> Vec<Found> {
    let mut out = Vec::new();
    for service in config.services.keys() {
        if only.is_some_and(|o| o != service) {
            continue;
        }
        let Some(max) = principal.access_to(service) else {
            continue;
        };
        let Some(catalog) = catalogs.catalog(service) else {
            continue;
        };
        out.extend(
            catalog
                .actions
                .values()
                .filter(|a| a.risk <= max)
                .map(|a: &Action| Found {
                    service: service.clone(),
                    name: a.name.clone(),
                    description: a.description.clone(),
                    risk: a.risk,
                    input_schema: a.input_schema.clone(),
                }),
        );
    }
    out
}

/// How well `words` match an action: name hits weigh double.
fn score(words: &[String], action: &Found) -> usize {
    let name = format!("{} {}", action.service, action.name.replace('_', " ")).to_lowercase();
    let description = action.description.to_lowercase();
    words
        .iter()
        .map(|w| {
            2 * usize::from(name.contains(w.as_str()))
                + usize::from(description.contains(w.as_str()))
        })
        .sum()
}

pub fn run(
    config: &Config,
    catalogs: &Catalogs,
    principal: &Principal,
    tool: &str,
    arguments: &JsonObject,
) -> Result<CallToolResult, Refusal> {
    let text = |key: &str| arguments.get(key).and_then(Value::as_str).map(str::trim);
    match tool {
        SEARCH => {
            let query = text("query").filter(|q| !q.is_empty()).ok_or_else(|| {
                Refusal::new(
                    Reason::InvalidArguments,
                    "query: words to search for are required",
                )
            })?;
            let limit = arguments
                .get("limit")
                .and_then(Value::as_u64)
                .map(|l| (l as usize).clamp(1, MAX_LIMIT))
                .unwrap_or(DEFAULT_LIMIT);
            let words: Vec<String> = query
                .to_lowercase()
                .split(|c: char| !c.is_alphanumeric())
                .filter(|w| w.len() > 1)
                .map(str::to_owned)
                .collect();
            let mut hits: Vec<(usize, Found)> =
                visible(config, catalogs, principal, text("service"))
                    .into_iter()
                    .map(|action| (score(&words, &action), action))
                    .filter(|(s, _)| *s > 0)
                    .collect();
            hits.sort_by(|a, b| {
                b.0.cmp(&a.0)
                    .then_with(|| (&a.1.service, &a.1.name).cmp(&(&b.1.service, &b.1.name)))
            });
            let matches: Vec<Value> = hits
                .iter()
                .take(limit)
                .map(|(_, action)| {
                    json!({
                        "service": action.service,
                        "action": action.name,
                        "risk": action.risk.as_str(),
                        "tool": tool_for(&action.service, action),
                        "summary": action.description.lines().next().unwrap_or(""),
                    })
                })
                .collect();
            let answer = json!({"matches": matches, "total": hits.len()});
            let mut result = CallToolResult::success(vec![ContentBlock::text(answer.to_string())]);
            result.structured_content = Some(answer);
            Ok(result)
        }
        _ => {
            let (Some(service), Some(name)) = (text("service"), text("action")) else {
                return Err(Refusal::new(
                    Reason::InvalidArguments,
                    "service and action are required",
                ));
            };
            let Some(action) = visible(config, catalogs, principal, Some(service))
                .into_iter()
                .find(|a| a.name == name)
            else {
                return Err(Refusal::new(
                    Reason::UnknownAction,
                    format!("{service} has no action '{name}' you may use"),
                ));
            };
            let answer = json!({
                "service": action.service,
                "action": action.name,
                "risk": action.risk.as_str(),
                "tool": tool_for(&action.service, &action),
                "description": action.description,
                "input_schema": Value::Object((*action.input_schema).clone()),
            });
            let mut result = CallToolResult::success(vec![ContentBlock::text(answer.to_string())]);
            result.structured_content = Some(answer);
            Ok(result)
        }
    }
}
