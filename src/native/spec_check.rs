//! `mcpgate catalog check`: every action of a catalog must exist in the
//! service's published spec — its method and path, and each parameter as a
//! path/query/header parameter or a request-body property there.

use std::path::Path;

use super::catalog::{ActionSpec, Catalog, Location, SHIPPED, shipped};
use super::spec::{self, SpecOperation};

/// The spec files each shipped catalog follows, relative to the specs
/// directory (Metabase's OpenAPI leaves bodies loose; its summary names them).
pub fn spec_of(service: &str) -> Option<&'static [&'static str]> {
    Some(match service {
        "jira" => &["jira/openapi-subset.json"],
        "slack" => &["slack/openapi-subset.json"],
        "google" => &["google/discovery-subset.json"],
        "bigquery" => &["bigquery/discovery-subset.json"],
        "metabase" => &["metabase/openapi-subset.yaml", "metabase/summary.yaml"],
        "windmill" => &["windmill/openapi-subset.yaml"],
        _ => return None,
    })
}

/// The spec operations an action calls (one per spec file that has it).
fn find<'o>(action: &ActionSpec, ops: &'o [SpecOperation]) -> Vec<&'o SpecOperation> {
    let wanted = spec::shape(&action.path);
    ops.iter()
        .filter(|op| {
            op.method == action.method
                && (spec::shape(&op.path) == wanted
                    || op.relative_paths.iter().any(|p| spec::shape(p) == wanted))
        })
        .collect()
}

/// Problems with one catalog against one spec's operations (empty: it conforms).
pub fn check(catalog: &Catalog, file: &str, ops: &[SpecOperation]) -> Vec<String> {
    let mut problems = Vec::new();
    for action in &catalog.actions {
        let mut problem = |message: String| {
            problems.push(format!("{file}: action '{}': {message}", action.name));
        };
        let found = find(action, ops);
        let Some(op) = found.first() else {
            problem(format!(
                "{} {} is not an operation of the spec",
                action.method, action.path
            ));
            continue;
        };
        for (name, param) in &action.params {
            let wire = param.wire_name(name);
            match param.location {
                Location::Path => {}
                Location::Query | Location::Header => {
                    let location = if param.location == Location::Query {
                        "query"
                    } else {
                        "header"
                    };
                    if !found
                        .iter()
                        .flat_map(|op| &op.params)
                        .any(|p| p.name == wire && p.location == location)
                    {
                        problem(format!(
                            "param '{name}': the spec's {} has no {location} parameter '{wire}'",
                            op.operation_id.as_deref().unwrap_or(&op.path)
                        ));
                    }
                }
                Location::Body => {
                    let top = wire.split('.').next().unwrap_or(wire);
                    let form_field = found
                        .iter()
                        .flat_map(|op| &op.params)
                        .any(|p| p.name == top && p.location == "formData");
                    let known = found.iter().any(|op| match &op.body {
                        Some(props) => props.contains(top),
                        // A free-form body takes any field (Windmill job args).
                        None => op.has_body,
                    });
                    let has_body = found.iter().any(|op| op.has_body);
                    if param.spread && !has_body {
                        problem(format!(
                            "param '{name}': the spec's operation takes no body"
                        ));
                    } else if !param.spread && !known && !form_field {
                        problem(format!(
                            "param '{name}': '{top}' is not a body field of the spec's {}",
                            op.operation_id.as_deref().unwrap_or(&op.path)
                        ));
                    }
                }
            }
        }
    }
    problems
}

/// Check every shipped catalog against its spec under `specs_dir`.
/// Returns the number of actions checked and the problems found.
pub fn check_shipped(specs_dir: &Path) -> Result<(usize, Vec<String>), String> {
    let mut checked = 0;
    let mut problems = Vec::new();
    for name in SHIPPED {
        let (file, text) = shipped(name).ok_or_else(|| format!("{name} is not shipped"))?;
        let catalog = Catalog::parse(text, file).map_err(|e| e.to_string())?;
        let spec_files = spec_of(name).ok_or_else(|| format!("no spec is known for {name}"))?;
        let mut ops = Vec::new();
        for spec_file in spec_files {
            let doc = spec::read_document(&specs_dir.join(spec_file))?;
            ops.extend(spec::operations(&doc));
        }
        checked += catalog.actions.len();
        problems.extend(check(&catalog, file, &ops));
    }
    Ok((checked, problems))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ops() -> Vec<SpecOperation> {
        spec::operations(&json!({
            "basePath": "/api",
            "paths": {
                "/chat.postMessage": {"post": {"operationId": "chat_postMessage", "parameters": [
                    {"name": "channel", "in": "formData"}, {"name": "text", "in": "formData"}]}},
                "/conversations.history": {"get": {"operationId": "conversations_history", "parameters": [
                    {"name": "channel", "in": "query"}, {"name": "cursor", "in": "query"}]}}
            }
        }))
    }

    fn catalog(actions: &str) -> Catalog {
        Catalog::parse(
            &format!("service: slack\nauth: bearer\nactions:\n{actions}"),
            "slack.yaml",
        )
        .unwrap()
    }

    #[test]
    fn a_faithful_catalog_passes_and_an_invented_one_does_not() {
        let good = catalog(
            "  - {name: post, description: d, risk: write, method: POST, path: /api/chat.postMessage, encoding: form, params: {channel: {in: body}, text: {in: body}}}\n  - {name: history, description: d, risk: read, method: GET, path: /conversations.history, params: {channel: {in: query}, cursor: {in: query}}}\n",
        );
        assert!(check(&good, "slack.yaml", &ops()).is_empty());
        let bad = catalog(
            "  - {name: post, description: d, risk: write, method: PUT, path: /api/chat.postMessage}\n  - {name: history, description: d, risk: read, method: GET, path: /conversations.history, params: {since: {in: query}, blocks: {in: body}}}\n",
        );
        let problems = check(&bad, "slack.yaml", &ops());
        assert_eq!(problems.len(), 3, "{problems:#?}");
        assert!(problems[0].contains("PUT /api/chat.postMessage is not an operation"));
        assert!(
            problems
                .iter()
                .any(|p| p.contains("no query parameter 'since'"))
        );
        assert!(
            problems
                .iter()
                .any(|p| p.contains("'blocks' is not a body field"))
        );
    }

    #[test]
    fn shipped_catalogs_match_the_specs_beside_the_repo() {
        let specs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/specs");
        if !specs.is_dir() {
            panic!("the specs are missing at {}", specs.display());
        }
        let (checked, problems) = check_shipped(&specs).unwrap();
        assert!(checked >= 50, "only {checked} actions");
        assert!(problems.is_empty(), "{problems:#?}");
    }
}
