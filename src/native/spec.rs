//! Published API descriptions read into one shape — OpenAPI 3, Swagger 2 and
//! Google discovery documents — so catalogs can be checked against them
//! (`mcpgate catalog check`) and generated from them (`catalog import-openapi`).

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

/// One operation of a spec.
#[derive(Debug, Clone)]
pub struct SpecOperation {
    pub method: String,
    /// The full path from the API's host, `{+x}` written `{x}`.
    pub path: String,
    /// Other spellings the path may be written with (relative to a base path).
    pub relative_paths: Vec<String>,
    pub operation_id: Option<String>,
    pub summary: Option<String>,
    /// `(name, location, required, type)` of path/query/header/formData params.
    pub params: Vec<SpecParam>,
    /// Top-level JSON body properties; `None` when the body is free-form.
    pub body: Option<BTreeSet<String>>,
    pub required_body: BTreeSet<String>,
    pub has_body: bool,
}

#[derive(Debug, Clone)]
pub struct SpecParam {
    pub name: String,
    /// path, query, header, formData or cookie.
    pub location: String,
    pub required: bool,
    pub kind: String,
    pub description: Option<String>,
}

pub fn read_document(file: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    if file.extension().is_some_and(|e| e == "json") {
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))
    } else {
        serde_yaml::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))
    }
}

/// `{+x}` → `{x}`, no trailing slash.
pub fn normalize(path: &str) -> String {
    let path = path.replace("{+", "{");
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".into()
    } else if trimmed.starts_with('/') {
        trimmed.to_owned()
    } else {
        format!("/{trimmed}")
    }
}

/// A path with every placeholder written `{}`: names may differ, positions may not.
pub fn shape(path: &str) -> String {
    let mut out = String::new();
    let mut depth = 0;
    for c in normalize(path).chars() {
        match c {
            '{' => {
                depth += 1;
                if depth == 1 {
                    out.push_str("{}");
                }
            }
            '}' => depth -= 1,
            _ if depth > 0 => {}
            c => out.push(c),
        }
    }
    out
}

/// Every operation of a document, whatever its kind.
pub fn operations(doc: &Value) -> Vec<SpecOperation> {
    if doc.get("endpoints").is_some() && doc.get("base").is_some() {
        return summary_operations(doc);
    }
    if let Some(apis) = doc.get("apis").and_then(Value::as_object) {
        // Several discovery documents bundled (Gmail, Calendar, Drive).
        return apis.values().flat_map(discovery_operations).collect();
    }
    if doc.get("discoveryVersion").is_some() || doc.get("servicePath").is_some() {
        return discovery_operations(doc);
    }
    openapi_operations(doc)
}

fn resolve<'v>(doc: &'v Value, value: &'v Value) -> &'v Value {
    let mut value = value;
    for _ in 0..16 {
        let Some(reference) = value.get("$ref").and_then(Value::as_str) else {
            return value;
        };
        let Some(pointer) = reference.strip_prefix('#') else {
            return value;
        };
        match doc.pointer(pointer) {
            Some(target) => value = target,
            None => return value,
        }
    }
    value
}

/// Top-level properties of a schema (through `$ref` and `allOf`); `None` if free-form.
fn schema_properties(doc: &Value, schema: &Value) -> Option<(BTreeSet<String>, BTreeSet<String>)> {
    let schema = resolve(doc, schema);
    let mut names = BTreeSet::new();
    let mut required = BTreeSet::new();
    if let Some(parts) = schema.get("allOf").and_then(Value::as_array) {
        for part in parts {
            let (n, r) = schema_properties(doc, part)?;
            names.extend(n);
            required.extend(r);
        }
    }
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        names.extend(props.keys().cloned());
    }
    if let Some(r) = schema.get("required").and_then(Value::as_array) {
        required.extend(r.iter().filter_map(Value::as_str).map(str::to_owned));
    }
    if names.is_empty() {
        return None;
    }
    Some((names, required))
}

fn openapi_operations(doc: &Value) -> Vec<SpecOperation> {
    // Where the paths hang from: Swagger's basePath or the first server's path.
    let base = doc
        .get("basePath")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| {
            let url = doc.pointer("/servers/0/url")?.as_str()?;
            let path = match url.find("://") {
                Some(i) => url[i + 3..]
                    .find('/')
                    .map(|j| &url[i + 3 + j..])
                    .unwrap_or(""),
                None => url,
            };
            Some(path.to_owned())
        })
        .unwrap_or_default();
    let base = base.trim_end_matches('/').to_owned();
    let mut out = Vec::new();
    let Some(paths) = doc.get("paths").and_then(Value::as_object) else {
        return out;
    };
    for (path, item) in paths {
        let shared: Vec<Value> = item
            .get("parameters")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for method in ["get", "head", "post", "put", "patch", "delete"] {
            let Some(op) = item.get(method) else { continue };
            let mut params = Vec::new();
            let mut body = None;
            let mut required_body = BTreeSet::new();
            let mut has_body = false;
            let own: Vec<Value> = op
                .get("parameters")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for p in shared.iter().chain(own.iter()) {
                let p = resolve(doc, p);
                let (Some(name), Some(location)) = (
                    p.get("name").and_then(Value::as_str),
                    p.get("in").and_then(Value::as_str),
                ) else {
                    continue;
                };
                if location == "body" {
                    has_body = true;
                    if let Some((n, r)) = p.get("schema").and_then(|s| schema_properties(doc, s)) {
                        body = Some(n);
                        required_body = r;
                    }
                    continue;
                }
                let kind = p
                    .get("type")
                    .or_else(|| resolve(doc, p.get("schema").unwrap_or(&Value::Null)).get("type"))
                    .and_then(Value::as_str)
                    .unwrap_or("string")
                    .to_owned();
                params.push(SpecParam {
                    name: name.to_owned(),
                    location: location.to_owned(),
                    required: p.get("required").and_then(Value::as_bool).unwrap_or(false),
                    kind,
                    description: p
                        .get("description")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                });
            }
            if let Some(request) = op.get("requestBody") {
                has_body = true;
                let request = resolve(doc, request);
                let schema = request
                    .get("content")
                    .and_then(Value::as_object)
                    .and_then(|c| {
                        c.get("application/json")
                            .or_else(|| c.values().next())
                            .and_then(|m| m.get("schema"))
                    });
                if let Some((n, r)) = schema.and_then(|s| schema_properties(doc, s)) {
                    body = Some(n);
                    required_body = r;
                }
            }
            out.push(SpecOperation {
                method: method.to_ascii_uppercase(),
                path: normalize(&format!("{base}{path}")),
                relative_paths: vec![normalize(path)],
                operation_id: op
                    .get("operationId")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                summary: op
                    .get("summary")
                    .or_else(|| op.get("description"))
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                params,
                body,
                required_body,
                has_body,
            });
        }
    }
    out
}

fn discovery_operations(doc: &Value) -> Vec<SpecOperation> {
    let service_path = doc.get("servicePath").and_then(Value::as_str).unwrap_or("");
    let mut out = Vec::new();
    let mut methods: Vec<&Value> = Vec::new();
    collect_methods(doc, &mut methods);
    for m in methods {
        let (Some(method), Some(path)) = (
            m.get("httpMethod").and_then(Value::as_str),
            m.get("path").and_then(Value::as_str),
        ) else {
            continue;
        };
        let mut params = Vec::new();
        for (name, p) in m
            .get("parameters")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            params.push(SpecParam {
                name: name.clone(),
                location: p
                    .get("location")
                    .and_then(Value::as_str)
                    .unwrap_or("query")
                    .to_owned(),
                required: p.get("required").and_then(Value::as_bool).unwrap_or(false),
                kind: p
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("string")
                    .to_owned(),
                description: p
                    .get("description")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            });
        }
        // Parameters every method of the API takes (`fields`, `alt`, `prettyPrint`…).
        for (name, p) in doc
            .get("parameters")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            params.push(SpecParam {
                name: name.clone(),
                location: "query".into(),
                required: false,
                kind: p
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("string")
                    .to_owned(),
                description: None,
            });
        }
        let request = m
            .get("request")
            .and_then(|r| r.get("$ref"))
            .and_then(Value::as_str);
        let body = request.and_then(|name| {
            doc.pointer(&format!("/schemas/{name}/properties"))
                .and_then(Value::as_object)
                .map(|p| p.keys().cloned().collect())
        });
        out.push(SpecOperation {
            method: method.to_owned(),
            path: normalize(&format!("{service_path}{path}")),
            relative_paths: vec![normalize(path)],
            operation_id: m.get("id").and_then(Value::as_str).map(str::to_owned),
            summary: m
                .get("description")
                .and_then(Value::as_str)
                .map(str::to_owned),
            params,
            body,
            required_body: BTreeSet::new(),
            has_body: request.is_some(),
        });
    }
    out
}

/// A written summary of endpoints (Metabase's `summary.yaml`):
/// `base: "{url}/api"`, `endpoints: [{method, path: /card/:id, params: {..}, body: {..}}]`.
fn summary_operations(doc: &Value) -> Vec<SpecOperation> {
    let base = doc.get("base").and_then(Value::as_str).unwrap_or("");
    let prefix = base.rsplit_once('}').map(|(_, rest)| rest).unwrap_or(base);
    let mut out = Vec::new();
    for endpoint in doc
        .get("endpoints")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let (Some(method), Some(path)) = (
            endpoint.get("method").and_then(Value::as_str),
            endpoint.get("path").and_then(Value::as_str),
        ) else {
            continue;
        };
        // `:card-id` segments are placeholders.
        let path: String = path
            .split('/')
            .map(|seg| match seg.strip_prefix(':') {
                Some(name) => format!("{{{name}}}"),
                None => seg.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("/");
        let placeholders: BTreeSet<String> = path
            .split('{')
            .skip(1)
            .filter_map(|r| r.split_once('}').map(|(n, _)| n.to_owned()))
            .collect();
        let mut params = Vec::new();
        let mut body: Option<BTreeSet<String>> = None;
        for (name, _) in endpoint
            .get("params")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let location = if placeholders.contains(name) {
                "path"
            } else if method == "GET" || method == "DELETE" {
                "query"
            } else {
                body.get_or_insert_with(BTreeSet::new).insert(name.clone());
                continue;
            };
            params.push(SpecParam {
                name: name.clone(),
                location: location.into(),
                required: location == "path",
                kind: "string".into(),
                description: None,
            });
        }
        let has_body = match endpoint.get("body") {
            Some(Value::Object(fields)) => {
                body.get_or_insert_with(BTreeSet::new)
                    .extend(fields.keys().cloned());
                true
            }
            // A body described in words: any field.
            Some(_) => {
                body = None;
                true
            }
            None => body.is_some(),
        };
        out.push(SpecOperation {
            method: method.to_ascii_uppercase(),
            path: normalize(&format!("{prefix}{path}")),
            relative_paths: vec![normalize(&path)],
            operation_id: None,
            summary: endpoint
                .get("note")
                .and_then(Value::as_str)
                .map(str::to_owned),
            params,
            body,
            required_body: BTreeSet::new(),
            has_body,
        });
    }
    out
}

fn collect_methods<'v>(node: &'v Value, out: &mut Vec<&'v Value>) {
    if let Some(methods) = node.get("methods").and_then(Value::as_object) {
        out.extend(methods.values());
    }
    if let Some(resources) = node.get("resources").and_then(Value::as_object) {
        for resource in resources.values() {
            collect_methods(resource, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_compare_by_shape() {
        assert_eq!(
            normalize("projects/{+projectId}/queries"),
            "/projects/{projectId}/queries"
        );
        assert_eq!(normalize("/api/dataset/"), "/api/dataset");
        assert_eq!(shape("/api/card/{card-id}/query"), "/api/card/{}/query");
        assert_eq!(shape("/api/card/{id}/query/"), "/api/card/{}/query");
    }

    #[test]
    fn openapi_and_discovery_documents_read_alike() {
        let openapi = json!({
            "servers": [{"url": "https://x.example/api"}],
            "components": {"schemas": {"New": {"type": "object", "required": ["name"], "properties": {"name": {}, "size": {}}}}},
            "paths": {"/things/{id}": {
                "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}],
                "put": {"operationId": "putThing", "requestBody": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/New"}}}}}
            }}
        });
        let ops = operations(&openapi);
        assert_eq!(ops.len(), 1);
        assert_eq!(ops[0].path, "/api/things/{id}");
        assert_eq!(ops[0].params[0].name, "id");
        assert!(ops[0].body.as_ref().unwrap().contains("size"));
        assert!(ops[0].required_body.contains("name"));
        let discovery = json!({
            "servicePath": "bigquery/v2/",
            "parameters": {"fields": {"type": "string", "location": "query"}},
            "resources": {"tables": {"methods": {"delete": {"httpMethod": "DELETE", "path": "projects/{+projectId}/tables/{+tableId}", "id": "bigquery.tables.delete", "parameters": {"projectId": {"location": "path", "required": true, "type": "string"}}}}}}
        });
        let ops = operations(&discovery);
        assert_eq!(
            ops[0].path,
            "/bigquery/v2/projects/{projectId}/tables/{tableId}"
        );
        assert!(ops[0].params.iter().any(|p| p.name == "fields"));
    }
}
