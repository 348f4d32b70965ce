//! The tool surface: an upstream's tools become *actions* with a risk class,
//! presented as `<svc>_read_actions` / `<svc>_write_actions` (or, with
//! `expose: tools`, as `<svc>__<tool>`).

use std::collections::BTreeMap;
use std::sync::Arc;

use actors::grant::Risk;
use rmcp::model::{JsonObject, Tool, ToolAnnotations};
use serde_json::{Value, json};

use crate::config::{Expose, Policy, ServiceConfig};
use crate::domain::glob_match;

pub const READ_SUFFIX: &str = "_read_actions";
pub const WRITE_SUFFIX: &str = "_write_actions";
pub const DIRECT_SEPARATOR: &str = "__";

pub struct Action {
    pub name: String,
    pub description: String,
    pub risk: Risk,
    /// Visible to others (`actors::connector::CONFIRM_META`): a person confirms it first.
    pub confirm: bool,
    pub input_schema: Arc<JsonObject>,
    pub annotations: Option<ToolAnnotations>,
    validator: Option<jsonschema::Validator>,
}

impl Action {
    /// Check `arguments` against the action's own schema; the error names the field.
    pub fn validate(&self, arguments: &JsonObject) -> Result<(), String> {
        let Some(validator) = &self.validator else {
            return Ok(());
        };
        let instance = Value::Object(arguments.clone());
        let problems: Vec<String> = validator
            .iter_errors(&instance)
            .take(5)
            .map(|e| {
                let path = e.instance_path.to_string();
                let field = if path.is_empty() {
                    "(arguments)".to_owned()
                } else {
                    path.trim_start_matches('/').replace('/', ".")
                };
                format!("{field}: {e}")
            })
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

/// Which tool of a service was called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Surface {
    ReadActions,
    WriteActions,
    Direct(String),
}

pub struct ServiceCatalog {
    pub service: String,
    pub generation: u64,
    pub expose: Expose,
    pub actions: BTreeMap<String, Action>,
    /// Operator overrides that name no upstream tool (reported on /health).
    pub unknown_overrides: Vec<String>,
}

/// The operator's classification of `service.action`, if any: the service's own
/// `risk:` (exact name, then the longest matching glob), then the gateway
/// policy's `service.action` globs (longest match).
pub fn classify(
    service: &str,
    action: &str,
    config: &ServiceConfig,
    policy: &Policy,
) -> Option<Risk> {
    if let Some(risk) = config.risk.get(action) {
        return Some(*risk);
    }
    let longest = |candidates: Vec<(&String, Risk)>| {
        candidates
            .into_iter()
            .max_by_key(|(pattern, _)| pattern.len())
            .map(|(_, risk)| risk)
    };
    let own = config
        .risk
        .iter()
        .filter(|(pattern, _)| glob_match(pattern, action))
        .map(|(p, r)| (p, *r))
        .collect();
    if let Some(risk) = longest(own) {
        return Some(risk);
    }
    let qualified = format!("{service}.{action}");
    longest(
        policy
            .risk
            .iter()
            .filter(|(pattern, _)| glob_match(pattern, &qualified))
            .map(|(p, r)| (p, *r))
            .collect(),
    )
}

/// Risk from upstream annotations: readOnlyHint → read, destructiveHint → high_risk, else write.
fn risk_from_annotations(annotations: Option<&ToolAnnotations>) -> Risk {
    match annotations {
        Some(a) if a.read_only_hint == Some(true) => Risk::Read,
        Some(a) if a.destructive_hint == Some(true) => Risk::HighRisk,
        _ => Risk::Write,
    }
}

impl ServiceCatalog {
    pub fn build(
        service: &str,
        config: &ServiceConfig,
        policy: &Policy,
        generation: u64,
        tools: &[Tool],
    ) -> Self {
        let mut actions = BTreeMap::new();
        for tool in tools {
            let name = tool.name.to_string();
            let risk = classify(service, &name, config, policy)
                .unwrap_or_else(|| risk_from_annotations(tool.annotations.as_ref()));
            let schema = Value::Object((*tool.input_schema).clone());
            let validator = match jsonschema::validator_for(&schema) {
                Ok(v) => Some(v),
                Err(error) => {
                    // An upstream with a schema we cannot compile still works;
                    // the upstream validates its own arguments.
                    tracing::warn!(%service, tool = %name, %error, "upstream input schema does not compile");
                    None
                }
            };
            // The operator may let people skip it (`policy.relax_confirm`).
            let qualified = format!("{service}.{name}");
            let confirm = actors::connector::asks_confirmation(tool)
                && !policy
                    .relax_confirm
                    .iter()
                    .any(|p| glob_match(p, &qualified));
            actions.insert(
                name.clone(),
                Action {
                    description: tool.description.as_deref().unwrap_or("").to_owned(),
                    name,
                    risk,
                    confirm,
                    input_schema: tool.input_schema.clone(),
                    annotations: tool.annotations.clone(),
                    validator,
                },
            );
        }
        let unknown_overrides = config
            .risk
            .keys()
            .filter(|k| !actions.keys().any(|name| glob_match(k, name)))
            .cloned()
            .collect();
        Self {
            service: service.to_owned(),
            generation,
            expose: config.expose,
            actions,
            unknown_overrides,
        }
    }

    /// The tools a caller whose access on this service is `max` may see.
    pub fn tools_for(&self, max: Risk) -> Vec<Tool> {
        match self.expose {
            Expose::Actions => {
                let mut tools = Vec::new();
                let reads: Vec<&Action> = self
                    .actions
                    .values()
                    .filter(|a| a.risk == Risk::Read)
                    .collect();
                let writes: Vec<&Action> = self
                    .actions
                    .values()
                    .filter(|a| a.risk != Risk::Read && a.risk <= max)
                    .collect();
                if !reads.is_empty() {
                    tools.push(self.actions_tool(READ_SUFFIX, &reads, true));
                }
                if !writes.is_empty() {
                    tools.push(self.actions_tool(WRITE_SUFFIX, &writes, false));
                }
                tools
            }
            Expose::Tools => self
                .actions
                .values()
                .filter(|a| a.risk <= max)
                .map(|a| {
                    let mut schema = (*a.input_schema).clone();
                    if a.risk != Risk::Read {
                        add_confirm_property(&mut schema);
                    }
                    let annotations = a
                        .annotations
                        .clone()
                        .unwrap_or_default()
                        .read_only(a.risk == Risk::Read)
                        .destructive(a.risk == Risk::HighRisk);
                    Tool::new(
                        format!("{}{DIRECT_SEPARATOR}{}", self.service, a.name),
                        format!(
                            "[{}{}] {}",
                            a.risk,
                            if a.confirm {
                                "; you confirm it first: others see it"
                            } else {
                                ""
                            },
                            a.description
                        ),
                        Arc::new(schema),
                    )
                    .with_annotations(annotations)
                })
                .collect(),
        }
    }

    fn actions_tool(&self, suffix: &str, actions: &[&Action], read_only: bool) -> Tool {
        let mut description = format!(
            "{} actions of service '{}'. Pass `action` and that action's own arguments at the top level.\nActions:\n",
            if read_only { "Read" } else { "Write" },
            self.service
        );
        let mut properties = serde_json::Map::new();
        let names: Vec<Value> = actions
            .iter()
            .map(|a| Value::String(a.name.clone()))
            .collect();
        properties.insert(
            "action".into(),
            json!({ "type": "string", "enum": names, "description": "Which action to run." }),
        );
        for action in actions {
            let summary = action.description.lines().next().unwrap_or("");
            let params: Vec<String> = action
                .input_schema
                .get("properties")
                .and_then(Value::as_object)
                .map(|p| p.keys().cloned().collect())
                .unwrap_or_default();
            description.push_str(&format!(
                "- {} [{}{}]: {} (arguments: {})\n",
                action.name,
                action.risk,
                if action.confirm {
                    "; you confirm it first: others see it"
                } else {
                    ""
                },
                summary,
                if params.is_empty() {
                    "none".into()
                } else {
                    params.join(", ")
                }
            ));
            // Offer each argument at the top level; the action's own schema is
            // what the gateway validates against.
            if let Some(props) = action
                .input_schema
                .get("properties")
                .and_then(Value::as_object)
            {
                for (key, schema) in props {
                    if key != "action" && !properties.contains_key(key) {
                        properties.insert(key.clone(), schema.clone());
                    }
                }
            }
        }
        let schema = json!({
            "type": "object",
            "properties": properties,
            "required": ["action"],
        });
        let Value::Object(mut schema) = schema else {
            unreachable!("json! object literal")
        };
        if !read_only {
            add_confirm_property(&mut schema);
        }
        let annotations = if read_only {
            ToolAnnotations::new().read_only(true)
        } else {
            ToolAnnotations::new().read_only(false).destructive(true)
        };
        Tool::new(
            format!("{}{suffix}", self.service),
            description,
            Arc::new(schema),
        )
        .with_annotations(annotations)
    }
}

/// Write tools accept `confirm`: the token from a previous answer that asked
/// the human to confirm exactly this call.
fn add_confirm_property(schema: &mut JsonObject) {
    if let Some(Value::Object(properties)) = schema.get_mut("properties") {
        properties.entry("confirm").or_insert_with(|| {
            json!({
                "type": "string",
                "description": "Confirmation token from the gateway's previous answer; needed for high_risk actions and writes the operator listed. Ask the user first."
            })
        });
    }
}

/// Split a tool name into (service, surface). Service names never contain `__`.
pub fn parse_tool_name(name: &str) -> Option<(&str, Surface)> {
    if let Some((service, tool)) = name.split_once(DIRECT_SEPARATOR) {
        return Some((service, Surface::Direct(tool.to_owned())));
    }
    if let Some(service) = name.strip_suffix(READ_SUFFIX) {
        return Some((service, Surface::ReadActions));
    }
    if let Some(service) = name.strip_suffix(WRITE_SUFFIX) {
        return Some((service, Surface::WriteActions));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn tool(name: &str, annotations: Option<ToolAnnotations>) -> Tool {
        let schema =
            json!({"type":"object","properties":{"x":{"type":"integer"}},"required":["x"]});
        let Value::Object(schema) = schema else {
            unreachable!()
        };
        let mut t = Tool::new(name.to_owned(), format!("does {name}"), Arc::new(schema));
        t.annotations = annotations;
        t
    }

    fn catalog(expose: &str) -> ServiceCatalog {
        let config = Config::parse(
            &format!("services:\n  svc:\n    kind: mcp\n    command: [x]\n    expose: {expose}\n    risk: {{ plain: read, ghost: write }}\n"),
            "c.yaml",
        )
        .unwrap();
        ServiceCatalog::build(
            "svc",
            &config.services["svc"],
            &config.policy,
            1,
            &[
                tool("look", Some(ToolAnnotations::new().read_only(true))),
                tool("change", None),
                tool("wipe", Some(ToolAnnotations::new().destructive(true))),
                tool("plain", None),
            ],
        )
    }

    #[test]
    fn risk_comes_from_annotations_then_overrides() {
        let c = catalog("actions");
        assert_eq!(c.actions["look"].risk, Risk::Read);
        assert_eq!(c.actions["change"].risk, Risk::Write);
        assert_eq!(c.actions["wipe"].risk, Risk::HighRisk);
        assert_eq!(c.actions["plain"].risk, Risk::Read);
        assert_eq!(c.unknown_overrides, vec!["ghost".to_string()]);
    }

    #[test]
    fn service_overrides_beat_policy_globs_and_longer_globs_win() {
        let config = Config::parse(
            "policy:\n  risk: { \"svc.*\": high_risk, \"svc.look*\": write, \"other.*\": read }\nservices:\n  svc:\n    kind: mcp\n    command: [x]\n    risk: { \"pl*\": read }\n",
            "c.yaml",
        )
        .unwrap();
        let c = ServiceCatalog::build(
            "svc",
            &config.services["svc"],
            &config.policy,
            1,
            &[
                tool("look", Some(ToolAnnotations::new().read_only(true))),
                tool("change", None),
                tool("plain", None),
            ],
        );
        assert_eq!(
            c.actions["look"].risk,
            Risk::Write,
            "svc.look* is longer than svc.*"
        );
        assert_eq!(c.actions["change"].risk, Risk::HighRisk);
        assert_eq!(
            c.actions["plain"].risk,
            Risk::Read,
            "the service's own glob wins"
        );
        assert!(c.unknown_overrides.is_empty());
    }

    #[test]
    fn surface_is_filtered_by_access() {
        let c = catalog("actions");
        let names = |max| {
            c.tools_for(max)
                .into_iter()
                .map(|t| t.name.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(Risk::Read), vec!["svc_read_actions"]);
        assert_eq!(
            names(Risk::Write),
            vec!["svc_read_actions", "svc_write_actions"]
        );
        let write_tool = c.tools_for(Risk::Write).pop().unwrap();
        let actions = write_tool.input_schema["properties"]["action"]["enum"].clone();
        assert_eq!(actions, json!(["change"]));
        let all = c.tools_for(Risk::HighRisk).pop().unwrap();
        assert_eq!(
            all.input_schema["properties"]["action"]["enum"],
            json!(["change", "wipe"])
        );
        assert_eq!(all.annotations.unwrap().destructive_hint, Some(true));
    }

    #[test]
    fn direct_exposure_names_each_tool() {
        let c = catalog("tools");
        let names: Vec<_> = c
            .tools_for(Risk::Write)
            .into_iter()
            .map(|t| t.name.to_string())
            .collect();
        assert_eq!(names, vec!["svc__change", "svc__look", "svc__plain"]);
    }

    #[test]
    fn validation_names_the_field() {
        let c = catalog("actions");
        let mut args = JsonObject::new();
        args.insert("x".into(), json!("not a number"));
        let err = c.actions["look"].validate(&args).unwrap_err();
        assert!(err.starts_with("x:"), "{err}");
        let err = c.actions["look"].validate(&JsonObject::new()).unwrap_err();
        assert!(err.contains("\"x\" is a required property"), "{err}");
    }

    #[test]
    fn tool_names_parse() {
        assert_eq!(
            parse_tool_name("svc_read_actions"),
            Some(("svc", Surface::ReadActions))
        );
        assert_eq!(
            parse_tool_name("my-svc_write_actions"),
            Some(("my-svc", Surface::WriteActions))
        );
        assert_eq!(
            parse_tool_name("svc__echo"),
            Some(("svc", Surface::Direct("echo".into())))
        );
        assert_eq!(parse_tool_name("nothing"), None);
    }
}
