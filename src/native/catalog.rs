//! A native service is a catalog: one YAML file describing its HTTP actions.
//! One generic executor runs every catalog (`executor.rs`).
//!
//! ```yaml
//! service: jira
//! auth: basic               # basic (user:secret) or bearer
//! errors: jira              # how the API reports errors: jira, slack or generic
//! actions:
//!   - name: get_issue
//!     description: Get one issue.
//!     risk: read            # read, write or high_risk
//!     method: GET
//!     path: /rest/api/3/issue/{issueIdOrKey}
//!     params:
//!       issueIdOrKey: { in: path, type: string, required: true }
//!       fields: { in: query, type: string, description: "comma-separated" }
//!     response: { pick: [key, fields.summary, fields.status.name], max_bytes: 20000 }
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use rmcp::model::{Tool, ToolAnnotations};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::{RiskClass, locate_after};
use actors::grant::Risk;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthScheme {
    /// `Authorization: Basic base64(user:secret)` (Jira Cloud: email + API token).
    Basic,
    /// `Authorization: Bearer <token>`.
    Bearer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorShape {
    /// `{"errorMessages": [...], "errors": {...}}`.
    Jira,
    /// HTTP 200 with `{"ok": false, "error": "..."}` is a failure.
    Slack,
    #[default]
    Generic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Location {
    Path,
    Query,
    /// A field of the JSON body.
    Body,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamSpec {
    #[serde(rename = "in")]
    pub location: Location,
    #[serde(rename = "type", default = "default_type")]
    pub kind: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub required: bool,
    /// Extra JSON Schema (items, enum, properties…) merged into the parameter's.
    #[serde(default)]
    pub schema: Option<Value>,
}

fn default_type() -> String {
    "string".into()
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseSpec {
    /// Dotted paths kept from the answer (`fields.summary`, `issues`); all if empty.
    #[serde(default)]
    pub pick: Vec<String>,
    /// Larger answers are cut, with a marker saying so.
    #[serde(default)]
    pub max_bytes: Option<usize>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionSpec {
    pub name: String,
    pub description: String,
    pub risk: RiskClass,
    pub method: String,
    pub path: String,
    #[serde(default)]
    pub params: BTreeMap<String, ParamSpec>,
    #[serde(default)]
    pub response: ResponseSpec,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    pub service: String,
    pub auth: AuthScheme,
    #[serde(default)]
    pub errors: ErrorShape,
    pub actions: Vec<ActionSpec>,
}

/// The catalogs shipped in the binary, by name.
pub fn shipped(name: &str) -> Option<(&'static str, &'static str)> {
    match name {
        "jira" => Some((
            "catalogs/jira.yaml",
            include_str!("../../catalogs/jira.yaml"),
        )),
        _ => None,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {message}")]
pub struct CatalogError {
    pub location: String,
    pub message: String,
}

impl Catalog {
    /// Parse and check a catalog; errors name `file:line:column` and the action.
    pub fn parse(text: &str, file: &str) -> Result<Catalog, CatalogError> {
        let catalog: Catalog = serde_yaml::from_str(text).map_err(|e| CatalogError {
            location: match e.location() {
                Some(l) => format!("{file}:{}:{}", l.line(), l.column()),
                None => file.to_owned(),
            },
            message: e.to_string(),
        })?;
        let mut seen = std::collections::HashSet::new();
        for action in &catalog.actions {
            let at = |needle: &str, message: String| CatalogError {
                location: locate_after(text, file, &format!("name: {}", action.name), needle),
                message: format!("action '{}': {message}", action.name),
            };
            if !seen.insert(action.name.as_str()) {
                return Err(at("name:", "is defined twice".into()));
            }
            if !matches!(
                action.method.as_str(),
                "GET" | "POST" | "PUT" | "PATCH" | "DELETE"
            ) {
                return Err(at(
                    "method:",
                    format!(
                        "method '{}' is not GET, POST, PUT, PATCH or DELETE",
                        action.method
                    ),
                ));
            }
            if !action.path.starts_with('/') {
                return Err(at(
                    "path:",
                    format!("path '{}' must start with '/'", action.path),
                ));
            }
            for placeholder in placeholders(&action.path) {
                match action.params.get(placeholder) {
                    Some(p) if p.location == Location::Path && p.required => {}
                    _ => {
                        return Err(at(
                            "path:",
                            format!(
                                "path parameter '{{{placeholder}}}' needs a required `in: path` param"
                            ),
                        ));
                    }
                }
            }
            for (name, param) in &action.params {
                if param.location == Location::Path && !action.path.contains(&format!("{{{name}}}"))
                {
                    return Err(at(
                        name,
                        format!("param '{name}' is `in: path` but the path has no '{{{name}}}'"),
                    ));
                }
            }
        }
        Ok(catalog)
    }

    pub fn action(&self, name: &str) -> Option<&ActionSpec> {
        self.actions.iter().find(|a| a.name == name)
    }

    /// The actions as MCP tools: the gateway's catalog layer turns them into
    /// `<svc>_read_actions` / `<svc>_write_actions` like any upstream's.
    pub fn tools(&self) -> Vec<Tool> {
        self.actions
            .iter()
            .map(|action| {
                let mut properties = serde_json::Map::new();
                let mut required = Vec::new();
                for (name, param) in &action.params {
                    let mut schema = json!({ "type": param.kind });
                    if let Some(description) = &param.description {
                        schema["description"] = json!(description);
                    }
                    if let Some(Value::Object(extra)) = &param.schema {
                        for (k, v) in extra {
                            schema[k] = v.clone();
                        }
                    }
                    properties.insert(name.clone(), schema);
                    if param.required {
                        required.push(name.clone());
                    }
                }
                let Value::Object(schema) = json!({
                    "type": "object",
                    "properties": properties,
                    "required": required,
                }) else {
                    unreachable!("a JSON object literal")
                };
                let annotations = match action.risk.0 {
                    Risk::Read => ToolAnnotations::new().read_only(true),
                    Risk::Write => ToolAnnotations::new().read_only(false).destructive(false),
                    Risk::HighRisk => ToolAnnotations::new().read_only(false).destructive(true),
                };
                Tool::new(
                    action.name.clone(),
                    action.description.clone(),
                    Arc::new(schema),
                )
                .with_annotations(annotations)
            })
            .collect()
    }
}

/// `{name}` placeholders of a path template.
pub fn placeholders(path: &str) -> Vec<&str> {
    path.split('{')
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| name))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_jira_catalog_loads() {
        let (file, text) = shipped("jira").unwrap();
        let catalog = Catalog::parse(text, file).unwrap();
        assert!(catalog.action("get_issue").is_some());
        assert_eq!(
            catalog.action("delete_issue").unwrap().risk.0,
            Risk::HighRisk
        );
    }

    #[test]
    fn bad_catalogs_name_file_line_and_action() {
        let text = "service: x\nauth: bearer\nactions:\n  - name: a\n    description: d\n    risk: read\n    method: GET\n    path: /a/{id}\n";
        let e = Catalog::parse(text, "x.yaml").unwrap_err();
        assert_eq!(e.location, "x.yaml:8:5");
        assert!(
            e.message.contains("action 'a'") && e.message.contains("{id}"),
            "{e}"
        );
        let e = Catalog::parse(&text.replace("GET", "FETCH"), "x.yaml").unwrap_err();
        assert!(e.message.contains("FETCH"), "{e}");
        let e = Catalog::parse(&text.replace("risk: read", "risk: severe"), "x.yaml").unwrap_err();
        assert!(e.location.starts_with("x.yaml:"), "{e}");
    }
}
