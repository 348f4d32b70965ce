//! A native service is a catalog: one YAML file describing its HTTP actions.
//! One generic executor runs every catalog (`executor.rs`); the format is
//! documented in `docs/connectors.md`.
//!
//! ```yaml
//! service: jira
//! auth: basic               # basic (user:secret), bearer or api_key (+ auth_header)
//! errors: jira              # jira, slack, google, metabase or generic
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

use crate::config::locate_after;
use crate::domain::Risk;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthScheme {
    /// `Authorization: Basic base64(user:secret)` (Jira Cloud: email + API token).
    Basic,
    /// `Authorization: Bearer <token>`.
    Bearer,
    /// The secret in the header named by `auth_header` (Metabase: `x-api-key`).
    ApiKey,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorShape {
    /// `{"errorMessages": [...], "errors": {...}}`.
    Jira,
    /// HTTP 200 with `{"ok": false, "error": "..."}` is a failure.
    Slack,
    /// `{"error": {"code", "message", "status", "errors": [...]}}`.
    Google,
    /// Plain-text 401s; a 2xx query answer with `"status": "failed"` is a failure.
    Metabase,
    #[default]
    Generic,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Location {
    Path,
    Query,
    /// A request header.
    Header,
    /// A field of the body (JSON, or a form field with `encoding: form`).
    Body,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    #[default]
    Json,
    /// `application/x-www-form-urlencoded` (Slack).
    Form,
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
    /// The name on the wire when it differs from the argument's; for a body
    /// field a dotted name nests (`native.query`).
    #[serde(default)]
    pub wire: Option<String>,
    /// Sent when the caller omits the argument (operators override it with the
    /// service's `defaults:`).
    #[serde(default)]
    pub default: Option<Value>,
    /// A body object whose keys become the body's own (Windmill job args).
    #[serde(default)]
    pub spread: bool,
    /// A path value whose `/` stay (Windmill paths such as `f/reports/daily`).
    #[serde(default)]
    pub keep_slashes: bool,
    /// A plain string becomes an Atlassian Document Format doc (Jira comments).
    #[serde(default)]
    pub adf: bool,
    /// The caller writes plain text; the wire gets it encoded (Gmail's `raw`
    /// is base64url). Pseudonyms in the text are restored before encoding.
    #[serde(default)]
    pub encode: Option<TextEncoding>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextEncoding {
    Base64url,
}

impl ParamSpec {
    pub fn wire_name<'a>(&'a self, name: &'a str) -> &'a str {
        self.wire.as_deref().unwrap_or(name)
    }
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
    /// Dotted paths of base64url fields decoded to text before the answer is
    /// shaped, so personal data inside them is seen (and pseudonymized); an
    /// array on the way is walked (`payload.parts.body.data`).
    #[serde(default)]
    pub decode_base64url: Vec<String>,
}

/// Token pagination: the executor follows up to `pages` pages (the caller's
/// argument, at most `max_pages`), concatenating `items`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaginationSpec {
    /// The param (query or body) that carries the token to the next request.
    pub token_param: String,
    /// Dotted path of the next page's token in an answer.
    pub next_token: String,
    /// Dotted path of the array concatenated across pages.
    pub items: String,
    #[serde(default = "default_max_pages")]
    pub max_pages: u32,
}

fn default_max_pages() -> u32 {
    5
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActionSpec {
    pub name: String,
    pub description: String,
    pub risk: Risk,
    pub method: String,
    pub path: String,
    #[serde(default)]
    pub params: BTreeMap<String, ParamSpec>,
    #[serde(default)]
    pub response: ResponseSpec,
    #[serde(default)]
    pub encoding: Encoding,
    /// The argument holding SQL: the statement, not the endpoint, sets the risk.
    #[serde(default)]
    pub classify_sql: Option<String>,
    #[serde(default)]
    pub pagination: Option<PaginationSpec>,
    /// An effect others see (a message or mail sent, a schedule created or
    /// enabled, a job run, a file shared): a person confirms it first.
    #[serde(default)]
    pub confirm: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    pub service: String,
    pub auth: AuthScheme,
    /// The header carrying the secret for `auth: api_key`.
    #[serde(default)]
    pub auth_header: Option<String>,
    #[serde(default)]
    pub errors: ErrorShape,

    pub actions: Vec<ActionSpec>,
}

/// A service's catalog: `<catalog_dir>/<name>.yaml` if the operator has one,
/// else the shipped one of that name, else `source` as a file path.
pub fn load(source: &str, catalog_dir: Option<&std::path::Path>) -> Result<Catalog, String> {
    if let Some(dir) = catalog_dir {
        let file = dir.join(format!("{source}.yaml"));
        if file.is_file() {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| format!("catalog {}: {e}", file.display()))?;
            return Catalog::parse(&text, &file.display().to_string()).map_err(|e| e.to_string());
        }
    }
    if let Some((file, text)) = shipped(source) {
        return Catalog::parse(text, file).map_err(|e| e.to_string());
    }
    let text = std::fs::read_to_string(source).map_err(|e| {
        format!(
            "catalog '{source}' is not shipped ({}) and cannot be read as a file: {e}",
            SHIPPED.join(", ")
        )
    })?;
    Catalog::parse(&text, source).map_err(|e| e.to_string())
}

/// Names of the shipped catalogs.
pub const SHIPPED: &[&str] = &[
    "jira", "slack", "google", "bigquery", "metabase", "windmill",
];

/// The catalogs shipped in the binary, by name.
pub fn shipped(name: &str) -> Option<(&'static str, &'static str)> {
    match name {
        "jira" => Some((
            "catalogs/jira.yaml",
            include_str!("../../catalogs/jira.yaml"),
        )),
        "slack" => Some((
            "catalogs/slack.yaml",
            include_str!("../../catalogs/slack.yaml"),
        )),
        "google" => Some((
            "catalogs/google.yaml",
            include_str!("../../catalogs/google.yaml"),
        )),
        "bigquery" => Some((
            "catalogs/bigquery.yaml",
            include_str!("../../catalogs/bigquery.yaml"),
        )),
        "metabase" => Some((
            "catalogs/metabase.yaml",
            include_str!("../../catalogs/metabase.yaml"),
        )),
        "windmill" => Some((
            "catalogs/windmill.yaml",
            include_str!("../../catalogs/windmill.yaml"),
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
        if catalog.auth == AuthScheme::ApiKey && catalog.auth_header.is_none() {
            return Err(CatalogError {
                location: locate_after(text, file, "auth:", "auth:"),
                message: "`auth: api_key` needs `auth_header` (e.g. x-api-key)".into(),
            });
        }
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
                "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE"
            ) {
                return Err(at(
                    "method:",
                    format!(
                        "method '{}' is not GET, HEAD, POST, PUT, PATCH or DELETE",
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
                let misplaced = if param.spread
                    && (param.location != Location::Body || param.kind != "object")
                {
                    Some("`spread` needs `in: body` and `type: object`")
                } else if param.keep_slashes && param.location != Location::Path {
                    Some("`keep_slashes` needs `in: path`")
                } else if param.adf && param.location != Location::Body {
                    Some("`adf` needs `in: body`")
                } else if param.encode.is_some() && param.location != Location::Body {
                    Some("`encode` needs `in: body`")
                } else if param.wire.is_some() && param.location == Location::Path {
                    Some("a path param is named by its placeholder; `wire` does not apply")
                } else {
                    None
                };
                if let Some(why) = misplaced {
                    return Err(at(name, format!("param '{name}': {why}")));
                }
                if param.location == Location::Path && !action.path.contains(&format!("{{{name}}}"))
                {
                    return Err(at(
                        name,
                        format!("param '{name}' is `in: path` but the path has no '{{{name}}}'"),
                    ));
                }
            }
            if let Some(sql) = &action.classify_sql
                && !action.params.contains_key(sql)
            {
                return Err(at(
                    "classify_sql:",
                    format!("classify_sql names '{sql}', which is not a param"),
                ));
            }
            if let Some(pages) = &action.pagination {
                let carrier = action.params.get(&pages.token_param);
                if !carrier.is_some_and(|p| matches!(p.location, Location::Query | Location::Body))
                {
                    return Err(at(
                        "token_param:",
                        format!(
                            "pagination token_param '{}' needs a query or body param of that name",
                            pages.token_param
                        ),
                    ));
                }
                if pages.max_pages == 0 {
                    return Err(at("max_pages:", "max_pages must be at least 1".into()));
                }
            }
        }
        Ok(catalog)
    }

    /// The argument rules this catalog declares (`classify_sql`), as the
    /// classifier's own rules for `<service>.<action>`.
    pub fn classify_rules(&self, service: &str) -> Vec<crate::classify::ClassifyRule> {
        self.actions
            .iter()
            .filter_map(|a| {
                let sql = a.classify_sql.clone()?;
                Some(crate::classify::ClassifyRule::sql(
                    format!("{service}.{}", a.name),
                    sql,
                ))
            })
            .collect()
    }

    pub fn action(&self, name: &str) -> Option<&ActionSpec> {
        self.actions.iter().find(|a| a.name == name)
    }

    /// The actions as MCP tools: the gateway's catalog layer turns them into
    /// `<svc>_read_actions` / `<svc>_write_actions` like any upstream's.
    /// `defaults` are the operator's (`services.<svc>.defaults`): a param they
    /// fill is not required of the caller.
    pub fn tools(&self, defaults: &BTreeMap<String, Value>) -> Vec<Tool> {
        self.actions
            .iter()
            .map(|action| {
                let mut properties = serde_json::Map::new();
                let mut required = Vec::new();
                for (name, param) in &action.params {
                    // `any`: a JSON value of whatever type the service takes.
                    let mut schema = if param.kind == "any" {
                        json!({})
                    } else {
                        json!({ "type": param.kind })
                    };
                    if let Some(description) = &param.description {
                        schema["description"] = json!(description);
                    }
                    if let Some(Value::Object(extra)) = &param.schema {
                        for (k, v) in extra {
                            schema[k] = v.clone();
                        }
                    }
                    if let Some(default) = defaults.get(name).or(param.default.as_ref()) {
                        schema["default"] = default.clone();
                    }
                    properties.insert(name.clone(), schema);
                    if param.required && param.default.is_none() && !defaults.contains_key(name) {
                        required.push(name.clone());
                    }
                }
                if let Some(pages) = &action.pagination {
                    properties.insert(
                        "pages".into(),
                        json!({
                            "type": "integer",
                            "minimum": 1,
                            "maximum": pages.max_pages,
                            "description": format!("pages to fetch and join (default 1, at most {}); the answer's next_page_token continues", pages.max_pages),
                        }),
                    );
                }
                let Value::Object(schema) = json!({
                    "type": "object",
                    "properties": properties,
                    "required": required,
                }) else {
                    unreachable!("a JSON object literal")
                };
                let annotations = match action.risk {
                    Risk::Read => ToolAnnotations::new().read_only(true),
                    Risk::Write => ToolAnnotations::new().read_only(false).destructive(false),
                    Risk::HighRisk => ToolAnnotations::new().read_only(false).destructive(true),
                };
                let mut tool = Tool::new(
                    action.name.clone(),
                    action.description.clone(),
                    Arc::new(schema),
                )
                .with_annotations(annotations);
                if action.confirm {
                    actors::connector::mark_confirm(&mut tool);
                }
                tool
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
    fn every_shipped_catalog_loads() {
        for name in SHIPPED {
            let (file, text) = shipped(name).unwrap();
            let catalog = Catalog::parse(text, file).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(&catalog.service, name);
        }
    }

    #[test]
    fn the_shipped_jira_catalog_loads() {
        let (file, text) = shipped("jira").unwrap();
        let catalog = Catalog::parse(text, file).unwrap();
        assert!(catalog.action("get_issue").is_some());
        assert_eq!(catalog.action("delete_issue").unwrap().risk, Risk::HighRisk);
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
