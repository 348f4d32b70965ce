//! Argument-aware classification: where an endpoint's own class lies, the
//! arguments decide. Rules are operator policy (`policy.classify`), matched by
//! `service.action` glob, and can only raise a class, never lower it:
//!
//! ```yaml
//! policy:
//!   classify:
//!     - match: "bigquery.query"        # classify by the SQL statement(s)
//!       sql: sql                       # the argument holding the SQL
//!     - match: "metabase.api_*"        # a passthrough: classify by HTTP method
//!       method: method
//!     - match: "slack.post_message"    # outside the allow-list → high_risk
//!       field: channel
//!       allow: ["#finance", "#ops-*"]
//!       otherwise: high_risk
//! ```

use rmcp::model::JsonObject;
use serde_json::Value;

use crate::domain::Risk;
use crate::domain::glob_match;

pub use crate::config::classify::ClassifyRule;

/// The class `arguments` call for under `rules` (at least `base`), with the
/// rule that raised it.
pub fn classify(
    rules: &[ClassifyRule],
    service: &str,
    action: &str,
    arguments: &JsonObject,
    base: Risk,
) -> (Risk, Option<String>) {
    let qualified = format!("{service}.{action}");
    let mut risk = base;
    let mut why = None;
    for rule in rules.iter().filter(|r| glob_match(&r.pattern, &qualified)) {
        let mut raise = |to: Risk, reason: String| {
            if to > risk {
                risk = to;
                why = Some(reason);
            }
        };
        if let Some(field) = &rule.sql {
            let sql = arguments.get(field).and_then(Value::as_str).unwrap_or("");
            let class = sql_risk(sql);
            raise(class, format!("{field}: the SQL is {}", describe(class)));
        }
        if let Some(field) = &rule.method {
            let method = arguments
                .get(field)
                .and_then(Value::as_str)
                .unwrap_or("GET");
            let class = method_risk(method);
            raise(
                class,
                format!("{field}: HTTP {} is {class}", method.to_ascii_uppercase()),
            );
        }
        if let (Some(field), Some(to)) = (&rule.field, rule.otherwise) {
            match arguments.get(field).and_then(Value::as_str) {
                Some(value) if rule.allow.iter().any(|g| glob_match(g, value)) => {}
                Some(value) => raise(to, format!("{field} '{value}' is outside the allow-list")),
                None => {}
            }
        }
    }
    (risk, why)
}

fn describe(risk: Risk) -> &'static str {
    match risk {
        Risk::Read => "a read",
        Risk::Write => "a write (DML/DDL)",
        Risk::HighRisk => "destructive",
    }
}

pub fn method_risk(method: &str) -> Risk {
    match method.to_ascii_uppercase().as_str() {
        "GET" | "HEAD" | "OPTIONS" => Risk::Read,
        "DELETE" => Risk::HighRisk,
        _ => Risk::Write,
    }
}

/// The class of a SQL text: the highest over its statements. What cannot be
/// recognised as a read is not a read (fail closed).
pub fn sql_risk(sql: &str) -> Risk {
    statements(&strip_comments(sql))
        .iter()
        .map(|s| statement_risk(s))
        .max()
        .unwrap_or(Risk::Read)
}

fn statement_risk(statement: &str) -> Risk {
    let words: Vec<String> = statement
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .map(|w| w.to_ascii_uppercase())
        .collect();
    let Some(first) = words.first() else {
        return Risk::Read;
    };
    match first.as_str() {
        "SELECT" | "WITH" | "VALUES" | "EXPLAIN" | "SHOW" | "DESCRIBE" => {
            // A CTE can still end in DML (`WITH x AS (...) DELETE ...`).
            let dml = words.iter().skip(1).any(|w| {
                matches!(
                    w.as_str(),
                    "INSERT" | "UPDATE" | "DELETE" | "MERGE" | "TRUNCATE" | "DROP"
                )
            });
            if first == "WITH" && dml {
                if words
                    .iter()
                    .any(|w| matches!(w.as_str(), "DELETE" | "TRUNCATE" | "DROP"))
                {
                    Risk::HighRisk
                } else {
                    Risk::Write
                }
            } else {
                Risk::Read
            }
        }
        "DELETE" | "TRUNCATE" | "DROP" => Risk::HighRisk,
        "ALTER" if words.iter().any(|w| w == "DROP") => Risk::HighRisk,
        "MERGE" if words.iter().any(|w| w == "DELETE") => Risk::HighRisk,
        _ => Risk::Write,
    }
}

/// Remove `-- …`, `# …` and `/* … */` comments outside string literals.
fn strip_comments(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        if let Some(q) = quote {
            out.push(c);
            if c == '\\' {
                if let Some(next) = chars.next() {
                    out.push(next);
                }
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '\'' | '"' | '`' => {
                quote = Some(c);
                out.push(c);
            }
            '-' if chars.peek() == Some(&'-') => {
                for n in chars.by_ref() {
                    if n == '\n' {
                        break;
                    }
                }
                out.push(' ');
            }
            '#' => {
                for n in chars.by_ref() {
                    if n == '\n' {
                        break;
                    }
                }
                out.push(' ');
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut last = ' ';
                for n in chars.by_ref() {
                    if last == '*' && n == '/' {
                        break;
                    }
                    last = n;
                }
                out.push(' ');
            }
            _ => out.push(c),
        }
    }
    out
}

/// Split on `;` outside string literals; string contents are blanked so that
/// keywords inside literals do not count.
fn statements(sql: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in sql.chars() {
        let current = out.last_mut().expect("at least one statement");
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                    current.push(c);
                    continue;
                }
                current.push(' ');
            }
            None if c == ';' => out.push(String::new()),
            None => {
                if matches!(c, '\'' | '"' | '`') {
                    quote = Some(c);
                }
                current.push(c);
            }
        }
    }
    out.retain(|s| !s.trim().is_empty());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_is_classified_by_statement() {
        let cases = [
            ("select sum(pnl) from ledger", Risk::Read),
            ("  -- comment\n SELECT 1", Risk::Read),
            ("with t as (select 1) select * from t", Risk::Read),
            ("select 'delete from x' as s", Risk::Read),
            ("INSERT INTO t VALUES (1)", Risk::Write),
            ("update t set a = 1 where b", Risk::Write),
            ("create table x as select 1", Risk::Write),
            (
                "merge t using s on t.id = s.id when matched then update set a = 1",
                Risk::Write,
            ),
            ("delete from t where true", Risk::HighRisk),
            ("DROP TABLE finance.ledger", Risk::HighRisk),
            ("truncate table t", Risk::HighRisk),
            ("alter table t drop column c", Risk::HighRisk),
            ("select 1; drop table t", Risk::HighRisk),
            ("/* select */ delete from t", Risk::HighRisk),
            (
                "with x as (select 1) insert into t select * from x",
                Risk::Write,
            ),
            ("grant select on t to bob", Risk::Write),
            ("", Risk::Read),
        ];
        for (sql, risk) in cases {
            assert_eq!(sql_risk(sql), risk, "{sql}");
        }
    }

    #[test]
    fn rules_only_raise() {
        let rules: Vec<ClassifyRule> = serde_yaml::from_str(
            "- { match: 'bigquery.query', sql: sql }\n- { match: 'metabase.api_*', method: method }\n- { match: 'slack.post_message', field: channel, allow: ['#finance', '#ops-*'], otherwise: high_risk }\n",
        )
        .unwrap();
        let args = |v: serde_json::Value| v.as_object().unwrap().clone();
        let (risk, why) = classify(
            &rules,
            "bigquery",
            "query",
            &args(serde_json::json!({"sql": "drop table t"})),
            Risk::Read,
        );
        assert_eq!(risk, Risk::HighRisk);
        assert!(why.unwrap().contains("destructive"));
        assert_eq!(
            classify(
                &rules,
                "bigquery",
                "query",
                &args(serde_json::json!({"sql": "select 1"})),
                Risk::Read
            )
            .0,
            Risk::Read
        );
        assert_eq!(
            classify(
                &rules,
                "metabase",
                "api_call",
                &args(serde_json::json!({"method": "put"})),
                Risk::Read
            )
            .0,
            Risk::Write
        );
        assert_eq!(
            classify(
                &rules,
                "slack",
                "post_message",
                &args(serde_json::json!({"channel": "#random"})),
                Risk::Write
            )
            .0,
            Risk::HighRisk
        );
        assert_eq!(
            classify(
                &rules,
                "slack",
                "post_message",
                &args(serde_json::json!({"channel": "#ops-alerts"})),
                Risk::Write
            )
            .0,
            Risk::Write
        );
        // Never lowered: a high_risk endpoint stays high_risk with a SELECT.
        assert_eq!(
            classify(
                &rules,
                "bigquery",
                "query",
                &args(serde_json::json!({"sql": "select 1"})),
                Risk::HighRisk
            )
            .0,
            Risk::HighRisk
        );
    }
}
