//! `mcpgate catalog import-openapi SPEC --service NAME`: a first catalog from
//! an OpenAPI 3 (or Swagger 2) document. GET/HEAD are reads, POST/PUT/PATCH
//! writes, DELETE high_risk; the operator reviews names, risks and picks after.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use super::catalog::Catalog;
use super::spec::{self, SpecOperation};

fn snake_case(text: &str) -> String {
    let mut out = String::new();
    let mut previous_lower = false;
    for c in text.chars() {
        if c.is_ascii_uppercase() {
            if previous_lower {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
            previous_lower = false;
        } else if c.is_ascii_alphanumeric() {
            out.push(c);
            previous_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        } else {
            if !out.ends_with('_') && !out.is_empty() {
                out.push('_');
            }
            previous_lower = false;
        }
    }
    out.trim_matches('_').to_owned()
}

fn risk_of(method: &str) -> &'static str {
    match method {
        "GET" | "HEAD" => "read",
        "DELETE" => "high_risk",
        _ => "write",
    }
}

fn one_line(text: &str) -> String {
    let line = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    let mut line: String = line.chars().take(200).collect();
    if line.is_empty() {
        line = "(no summary in the spec)".into();
    }
    line
}

fn json_type(kind: &str) -> &'static str {
    match kind {
        "integer" => "integer",
        "number" => "number",
        "boolean" => "boolean",
        "array" => "array",
        "object" => "object",
        _ => "string",
    }
}

/// `auth` (and `auth_header`) from the document's security schemes.
fn auth_of(doc: &Value) -> (String, Option<String>) {
    let schemes = doc
        .pointer("/components/securitySchemes")
        .or_else(|| doc.get("securityDefinitions"))
        .and_then(Value::as_object);
    for scheme in schemes.into_iter().flat_map(|s| s.values()) {
        let kind = scheme.get("type").and_then(Value::as_str).unwrap_or("");
        let http_scheme = scheme
            .get("scheme")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_ascii_lowercase();
        match kind {
            "basic" => return ("basic".into(), None),
            "http" if http_scheme == "basic" => return ("basic".into(), None),
            "apiKey" if scheme.get("in").and_then(Value::as_str) == Some("header") => {
                let header = scheme
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("x-api-key");
                if !header.eq_ignore_ascii_case("authorization") {
                    return ("api_key".into(), Some(header.to_owned()));
                }
            }
            _ => {}
        }
    }
    ("bearer".into(), None)
}

fn action_of(op: &SpecOperation, name: String) -> Value {
    let mut params = Map::new();
    let mut form = false;
    for p in &op.params {
        let location = match p.location.as_str() {
            "path" => "path",
            "query" => "query",
            "header" => {
                let lower = p.name.to_ascii_lowercase();
                if lower == "authorization" || lower == "content-type" || lower == "accept" {
                    continue;
                }
                "header"
            }
            "formData" => {
                form = true;
                "body"
            }
            _ => continue,
        };
        if params.contains_key(&p.name) {
            continue;
        }
        let mut spec = json!({"in": location, "type": json_type(&p.kind)});
        if p.required || location == "path" {
            spec["required"] = json!(true);
        }
        if let Some(d) = &p.description {
            spec["description"] = json!(one_line(d));
        }
        params.insert(p.name.clone(), spec);
    }
    match &op.body {
        Some(fields) => {
            for field in fields {
                let mut spec = json!({"in": "body", "type": "any"});
                if op.required_body.contains(field) {
                    spec["required"] = json!(true);
                }
                if params.contains_key(field) {
                    // Same name elsewhere: the argument gets a prefix, the wire keeps it.
                    spec["wire"] = json!(field);
                    params.insert(format!("body_{field}"), spec);
                } else {
                    params.insert(field.clone(), spec);
                }
            }
        }
        None if op.has_body && !form => {
            params.insert(
                "body".into(),
                json!({"in": "body", "type": "object", "spread": true,
                       "description": "the request body (the spec leaves it free-form)"}),
            );
        }
        None => {}
    }
    let mut action = json!({
        "name": name,
        "description": one_line(op.summary.as_deref().unwrap_or("")),
        "risk": risk_of(&op.method),
        "method": op.method,
        "path": op.path,
    });
    if form {
        action["encoding"] = json!("form");
    }
    if !params.is_empty() {
        action["params"] = Value::Object(params);
    }
    action
}

/// The catalog YAML for `doc`, checked to load before it is returned.
pub fn import(doc: &Value, service: &str, source: &str) -> Result<String, String> {
    let ops = spec::operations(doc);
    if ops.is_empty() {
        return Err(format!(
            "{source}: no operations found (is it an OpenAPI document?)"
        ));
    }
    let mut seen = BTreeSet::new();
    let mut actions = Vec::new();
    for op in &ops {
        let base = op
            .operation_id
            .as_deref()
            .map(snake_case)
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| snake_case(&format!("{} {}", op.method, op.path)));
        let mut name = base.clone();
        let mut n = 2;
        while !seen.insert(name.clone()) {
            name = format!("{base}_{n}");
            n += 1;
        }
        actions.push(action_of(op, name));
    }
    let (auth, auth_header) = auth_of(doc);
    let mut catalog = BTreeMap::new();
    catalog.insert("service", json!(service));
    catalog.insert("auth", json!(auth));
    if let Some(header) = auth_header {
        catalog.insert("auth_header", json!(header));
    }
    catalog.insert("actions", Value::Array(actions));
    let body = serde_yaml::to_string(&catalog).map_err(|e| e.to_string())?;
    let text = format!(
        "# Generated by `mcpgate catalog import-openapi` from {source}.\n\
         # Review before use: action names, risk classes (by HTTP method here),\n\
         # descriptions, `response.pick` and `max_bytes`.\n{body}"
    );
    Catalog::parse(&text, "generated catalog")
        .map_err(|e| format!("the generated catalog does not load: {e}"))?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_become_actions_classified_by_method() {
        let doc = json!({
            "openapi": "3.0.0",
            "servers": [{"url": "https://api.example.com/v1"}],
            "components": {"securitySchemes": {"key": {"type": "apiKey", "in": "header", "name": "X-Api-Key"}}},
            "paths": {
                "/things": {
                    "get": {"operationId": "listThings", "summary": "List things.\nMore.", "parameters": [{"name": "limit", "in": "query", "schema": {"type": "integer"}}]},
                    "post": {"operationId": "createThing", "requestBody": {"content": {"application/json": {"schema": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}, "limit": {}}}}}}}
                },
                "/things/{id}": {"delete": {"parameters": [{"name": "id", "in": "path", "required": true}]}},
                "/run/{id}": {"post": {"operationId": "run", "parameters": [{"name": "id", "in": "path", "required": true}], "requestBody": {"content": {"application/json": {"schema": {"type": "object"}}}}}}
            }
        });
        let text = import(&doc, "things", "things.json").unwrap();
        let catalog = Catalog::parse(&text, "t.yaml").unwrap();
        assert_eq!(catalog.auth_header.as_deref(), Some("X-Api-Key"));
        let list = catalog.action("list_things").unwrap();
        assert_eq!(list.risk, actors::grant::Risk::Read);
        assert_eq!(list.description, "List things.");
        assert_eq!(list.path, "/v1/things");
        let create = catalog.action("create_thing").unwrap();
        assert_eq!(create.risk, actors::grant::Risk::Write);
        assert!(create.params["name"].required);
        let delete = catalog.action("delete_v1_things_id").unwrap();
        assert_eq!(delete.risk, actors::grant::Risk::HighRisk);
        assert!(catalog.action("run").unwrap().params["body"].spread);
        assert!(import(&json!({"paths": {}}), "x", "x.json").is_err());
    }
}
