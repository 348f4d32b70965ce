//! The code map of docs/architecture.md, checked: which module of the root
//! crate may use which, and no import cycles among them. Read from the
//! sources (every `crate::<module>` path outside comments and unit tests),
//! the way rust-analyzer backs its architecture document with crate edges.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Modules only the edges (HTTP, MCP, CLI) may use.
const EDGES: [&str; 8] = [
    "http",
    "mcp",
    "admin",
    "console",
    "oauth",
    "cli",
    "cli_operator",
    "gateway",
];

/// (module, the modules it must not use). The edges above are forbidden to
/// every core module as well; see `core_modules_do_not_reach_the_edges`.
const RULES: &[(&str, &[&str])] = &[
    // The vocabulary knows nothing of the rest.
    ("domain", &["*"]),
    // Config is parsed at the bottom: only the vocabulary below it.
    ("config", &["*", "!domain"]),
    ("stats", &["*"]),
    // The exposition renders what it is given: the counters, the gauges.
    ("metrics", &["*", "!stats"]),
    // The subscriber and the W3C Trace Context know nothing of the gateway.
    ("telemetry", &["*"]),
    ("adf", &["*"]),
    ("storage", &["*", "!config", "!domain"]),
    ("keys", &["*", "!config", "!domain"]),
    (
        "audit",
        &[
            "*", "!domain", "!stats", "!storage", "!config", "!keys", "!drain",
        ],
    ),
    ("drain", &["*"]),
    ("write_safety", &["*", "!domain", "!keys", "!storage"]),
    ("classify", &["*", "!config", "!domain"]),
    ("catalog", &["*", "!config", "!domain"]),
    // A decision is pure: no store writes, no actors of ours, no transport.
    (
        "policy",
        &[
            "pipeline",
            "sessions",
            "delegation",
            "hooks",
            "pii",
            "native",
            "audit",
            "write_safety",
        ],
    ),
    (
        "principal",
        &[
            "pipeline", "policy", "sessions", "hooks", "pii", "native", "audit",
        ],
    ),
    (
        "delegation",
        &[
            "pipeline",
            "policy",
            "principal",
            "sessions",
            "hooks",
            "pii",
            "native",
            "catalog",
            "discovery",
        ],
    ),
    (
        "hooks",
        &[
            "pipeline",
            "policy",
            "sessions",
            "delegation",
            "pii",
            "native",
            "audit",
        ],
    ),
    (
        "pii",
        &[
            "pipeline",
            "policy",
            "sessions",
            "delegation",
            "hooks",
            "native",
            "principal",
            "audit",
        ],
    ),
    (
        "native",
        &[
            "pipeline",
            "policy",
            "sessions",
            "delegation",
            "hooks",
            "pii",
            "principal",
            "catalog",
        ],
    ),
    (
        "sessions",
        &[
            "pipeline",
            "policy",
            "delegation",
            "hooks",
            "pii",
            "native",
            "audit",
        ],
    ),
    (
        "discovery",
        &[
            "pipeline",
            "sessions",
            "delegation",
            "hooks",
            "pii",
            "native",
            "audit",
        ],
    ),
    (
        "pipeline",
        &[
            "sessions",
            "native",
            "storage",
            "tokens",
            "vault",
            "federation",
        ],
    ),
    // Resources and prompts pass the pipeline's stages, never its edges.
    (
        "federation",
        &["sessions", "native", "storage", "tokens", "vault"],
    ),
    // The authorization server issues and checks credentials; it knows
    // nothing of what a call does with them.
    (
        "authserver",
        &[
            "pipeline",
            "policy",
            "sessions",
            "delegation",
            "hooks",
            "pii",
            "native",
            "catalog",
            "discovery",
            "principal",
            "write_safety",
            "vault",
        ],
    ),
];

/// Files that may use axum (HTTP routing): the edges, and the connect pages.
const AXUM_FILES: [&str; 12] = [
    "http.rs",
    "admin.rs",
    "console/mod.rs",
    "console/pages.rs",
    "console/actions.rs",
    "console/operate.rs",
    "oauth/mod.rs",
    "oauth/server.rs",
    "oauth/pages.rs",
    "oauth/ratelimit.rs",
    "cli.rs",
    "native/connect.rs",
];

fn sources() -> Vec<(String, String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path
                    .strip_prefix(&root)
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/");
                let module = rel.split(['/', '.']).next().unwrap().to_owned();
                if module == "lib" || module == "main" {
                    continue;
                }
                out.push((
                    module,
                    rel,
                    code_of(&std::fs::read_to_string(&path).unwrap()),
                ));
            }
        }
    }
    out
}

/// The file without comments and without its unit tests.
fn code_of(text: &str) -> String {
    let text = text.split("#[cfg(test)]\nmod ").next().unwrap_or("");
    text.lines()
        .map(|line| match line.find("//") {
            Some(i) if !line[..i].contains('"') => &line[..i],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The crate modules `code` names: `crate::x` and `use crate::{x, y::…}`.
fn uses(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            // Top-level names of the group: at nesting depth zero.
            let mut depth = 0;
            let mut start = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if start && depth == 0 && is_ident(c) => {
                        let name: String =
                            group[j..].chars().take_while(|c| is_ident(*c)).collect();
                        found.insert(name);
                        start = false;
                    }
                    _ => {}
                }
            }
        } else {
            let name: String = rest.chars().take_while(|c| is_ident(*c)).collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, _, code) in sources() {
        let entry = graph.entry(module.clone()).or_default();
        entry.extend(uses(&code).into_iter().filter(|m| *m != module));
    }
    graph
}

#[test]
fn modules_keep_to_the_code_map() {
    let graph = graph();
    let mut broken = Vec::new();
    for (module, forbidden) in RULES {
        let used = graph.get(*module).cloned().unwrap_or_default();
        let allowed: BTreeSet<&str> = forbidden
            .iter()
            .filter_map(|f| f.strip_prefix('!'))
            .collect();
        for target in &used {
            let banned = forbidden.contains(&target.as_str())
                || (forbidden.contains(&"*") && !allowed.contains(target.as_str()));
            if banned {
                broken.push(format!("{module} uses {target}"));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "forbidden module edges (docs/architecture.md, code map): {broken:?}"
    );
}

#[test]
fn core_modules_do_not_reach_the_edges() {
    let graph = graph();
    let mut broken = Vec::new();
    for (module, used) in &graph {
        if EDGES.contains(&module.as_str()) {
            continue;
        }
        for edge in EDGES {
            if used.contains(edge) {
                broken.push(format!("{module} uses {edge}"));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "core modules reaching the edges: {broken:?}"
    );
}

#[test]
fn there_are_no_import_cycles() {
    let graph = graph();
    // Depth-first search; a back edge is a cycle, reported as its path.
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(cycle) = visit(node, &graph, &mut Vec::new(), &mut done) {
            panic!(
                "import cycle among the root crate's modules: {}",
                cycle.join(" → ")
            );
        }
    }
}

#[test]
fn only_the_edges_route_http() {
    let offenders: Vec<String> = sources()
        .into_iter()
        .filter(|(_, rel, code)| code.contains("axum::") && !AXUM_FILES.contains(&rel.as_str()))
        .map(|(_, rel, _)| rel)
        .collect();
    assert!(
        offenders.is_empty(),
        "axum outside the HTTP edges: {offenders:?}"
    );
}

#[test]
fn the_checker_sees_edges_and_cycles() {
    // The parser itself: a grouped use, a path, a comment that must not count.
    let code = code_of("use crate::{a::X, b};\n// crate::c\nfn f() { crate::d::g(); }\n");
    assert_eq!(
        uses(&code),
        ["a", "b", "d"].into_iter().map(String::from).collect()
    );
}
