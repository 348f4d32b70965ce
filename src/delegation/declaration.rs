//! The `gateway-services:` declaration and the `.windmill/job.yml` file that
//! carries it. The same rules apply to `mcpgate job validate` and to the
//! declaration sent with a token exchange.
//!
//! ```yaml
//! name: nightly-pnl-rollup
//! schedule: "0 3 * * *"      # cron, UTC (5 fields, or 6 with seconds)
//! gateway-services:
//!   - bigquery: [read]
//!   - slack: [write]
//! script: |
//!   ...
//! ```

use std::collections::{BTreeMap, HashSet};

use actors::grant::Risk;
use serde::Deserialize;

use crate::config::{locate, locate_after};

/// A validated declaration: the highest risk class asked for, per service,
/// in the order written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declaration {
    pub services: Vec<(String, Vec<Risk>)>,
}

impl Declaration {
    /// Highest declared class per service (`[read, write]` → write).
    pub fn highest(&self) -> BTreeMap<String, Risk> {
        self.services
            .iter()
            .filter_map(|(svc, risks)| risks.iter().max().map(|r| (svc.clone(), *r)))
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFile {
    pub name: String,
    pub schedule: Option<String>,
    pub timezone: Option<String>,
    pub declaration: Option<Declaration>,
    pub script: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{location}: {message}")]
pub struct DeclarationError {
    pub location: String,
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJobFile {
    name: String,
    #[serde(default)]
    schedule: Option<String>,
    #[serde(default)]
    timezone: Option<String>,
    #[serde(default, rename = "gateway-services")]
    gateway_services: Option<Vec<BTreeMap<String, Vec<String>>>>,
    script: String,
}

fn yaml_error(file: &str, error: serde_yaml::Error) -> DeclarationError {
    DeclarationError {
        location: match error.location() {
            Some(l) => format!("{file}:{}:{}", l.line(), l.column()),
            None => file.to_owned(),
        },
        message: error.to_string(),
    }
}

/// Parse and validate a `job.yml`. `known_services` are the gateway's services.
pub fn parse_job_file(
    text: &str,
    file: &str,
    known_services: &HashSet<String>,
) -> Result<JobFile, DeclarationError> {
    let raw: RawJobFile = serde_yaml::from_str(text).map_err(|e| yaml_error(file, e))?;
    let at = |needle: &str, message: String| DeclarationError {
        location: locate(text, file, needle),
        message,
    };
    if raw.name.trim().is_empty()
        || !raw
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(DeclarationError {
            location: locate_after(text, file, "name:", &raw.name),
            message: format!(
                "name '{}' must be non-empty and use only letters, digits, '-' or '_'",
                raw.name
            ),
        });
    }
    if let Some(schedule) = &raw.schedule {
        validate_cron(schedule).map_err(|message| at(schedule, message))?;
    }
    if let Some(tz) = &raw.timezone
        && !looks_like_timezone(tz)
    {
        return Err(at(
            tz,
            format!("timezone '{tz}' is not an IANA name such as 'UTC' or 'Europe/Paris'"),
        ));
    }
    if raw.script.trim().is_empty() {
        return Err(at("script:", "script is empty".into()));
    }
    let declaration = match raw.gateway_services {
        None => None,
        Some(entries) => Some(validate_entries(
            entries,
            text,
            file,
            "gateway-services:",
            known_services,
        )?),
    };
    Ok(JobFile {
        name: raw.name,
        schedule: raw.schedule,
        timezone: raw.timezone,
        declaration,
        script: raw.script,
    })
}

/// Parse a bare declaration (the `gateway_services` parameter of a token
/// exchange): YAML or JSON, a list of single-key maps.
pub fn parse_declaration(
    text: &str,
    known_services: &HashSet<String>,
) -> Result<Declaration, DeclarationError> {
    let file = "gateway_services";
    let entries: Vec<BTreeMap<String, Vec<String>>> =
        serde_yaml::from_str(text).map_err(|e| yaml_error(file, e))?;
    validate_entries(entries, text, file, "", known_services)
}

fn validate_entries(
    entries: Vec<BTreeMap<String, Vec<String>>>,
    text: &str,
    file: &str,
    anchor: &str,
    known_services: &HashSet<String>,
) -> Result<Declaration, DeclarationError> {
    let at = |needle: &str, message: String| DeclarationError {
        location: locate_after(text, file, anchor, needle),
        message,
    };
    if entries.is_empty() {
        return Err(at(
            anchor,
            "gateway-services is empty: list at least one service, or remove the block to run as the service account".into(),
        ));
    }
    let mut seen = HashSet::new();
    let mut services = Vec::new();
    for entry in entries {
        if entry.len() != 1 {
            let first = entry.keys().next().cloned().unwrap_or_default();
            return Err(at(
                &first,
                format!(
                    "each gateway-services entry names exactly one service (`- {first}: [read]`), found {}",
                    entry.len()
                ),
            ));
        }
        let (service, classes) = entry.into_iter().next().expect("one entry");
        if !known_services.contains(&service) {
            let mut known: Vec<&String> = known_services.iter().collect();
            known.sort();
            return Err(at(
                &service,
                format!(
                    "unknown service '{service}' (the gateway has: {})",
                    known
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        if !seen.insert(service.clone()) {
            return Err(DeclarationError {
                location: locate_second(text, file, &format!("{service}:")),
                message: format!("service '{service}' is declared twice"),
            });
        }
        if classes.is_empty() {
            return Err(at(
                &service,
                format!(
                    "service '{service}': list at least one risk class (read, write, high_risk)"
                ),
            ));
        }
        let mut risks = Vec::new();
        for class in classes {
            let risk = Risk::parse(&class).ok_or_else(|| {
                at(
                    &class,
                    format!(
                        "service '{service}': unknown risk class '{class}', expected read, write or high_risk"
                    ),
                )
            })?;
            if risks.contains(&risk) {
                return Err(at(
                    &service,
                    format!("service '{service}': risk class '{class}' is listed twice"),
                ));
            }
            risks.push(risk);
        }
        services.push((service, risks));
    }
    Ok(Declaration { services })
}

/// Cron in UTC: 5 fields (minute first) or 6 (seconds first, Windmill's form).
pub fn validate_cron(expression: &str) -> Result<(), String> {
    let fields = expression.split_whitespace().count();
    if !(5..=6).contains(&fields) {
        return Err(format!(
            "schedule '{expression}' has {fields} fields; expected 5 (min hour day month weekday) or 6 (with seconds first)"
        ));
    }
    expression
        .parse::<croner::Cron>()
        .map(|_| ())
        .map_err(|e| format!("schedule '{expression}' is not a valid cron expression: {e}"))
}

/// Windmill schedules take 6 fields (seconds first).
pub fn windmill_cron(expression: &str) -> String {
    if expression.split_whitespace().count() == 5 {
        format!("0 {expression}")
    } else {
        expression.to_owned()
    }
}

fn looks_like_timezone(tz: &str) -> bool {
    !tz.is_empty()
        && tz
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-' | '+'))
}

/// Location of the second occurrence of `needle` (a duplicate's position).
fn locate_second(text: &str, file: &str, needle: &str) -> String {
    match text.find(needle) {
        Some(first) => {
            let rest = first + needle.len();
            match text[rest..].find(needle) {
                Some(offset) => {
                    let index = rest + offset;
                    let line = text[..index].matches('\n').count() + 1;
                    let column = index - text[..index].rfind('\n').map_or(0, |i| i + 1) + 1;
                    format!("{file}:{line}:{column}")
                }
                None => file.to_owned(),
            }
        }
        None => file.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> HashSet<String> {
        ["bigquery", "slack", "metabase"]
            .into_iter()
            .map(String::from)
            .collect()
    }

    const GOOD: &str = "name: nightly-pnl-rollup\nschedule: \"0 3 * * *\"\ngateway-services:\n  - bigquery: [read]\n  - slack: [read, write]\nscript: |\n  print('hi')\n";

    #[test]
    fn a_good_file_parses_with_its_highest_classes() {
        let job = parse_job_file(GOOD, "job.yml", &known()).unwrap();
        assert_eq!(job.name, "nightly-pnl-rollup");
        let highest = job.declaration.unwrap().highest();
        assert_eq!(highest["bigquery"], Risk::Read);
        assert_eq!(highest["slack"], Risk::Write);
        assert_eq!(
            windmill_cron(job.schedule.as_deref().unwrap()),
            "0 0 3 * * *"
        );
    }

    #[test]
    fn errors_point_at_file_line_and_column() {
        let bad = GOOD.replace("slack: [read, write]", "slak: [write]");
        let e = parse_job_file(&bad, "job.yml", &known()).unwrap_err();
        assert_eq!(e.location, "job.yml:5:5");
        assert!(e.message.contains("unknown service 'slak'"), "{e}");

        let bad = GOOD.replace("[read, write]", "[read, delete]");
        let e = parse_job_file(&bad, "job.yml", &known()).unwrap_err();
        assert_eq!(e.location, "job.yml:5:19");
        assert!(e.message.contains("unknown risk class 'delete'"), "{e}");

        let bad = GOOD.replace("0 3 * * *", "0 25 * * *");
        let e = parse_job_file(&bad, "job.yml", &known()).unwrap_err();
        assert_eq!(e.location, "job.yml:2:12");

        let bad = GOOD.replace("  - slack: [read, write]", "  - bigquery: [write]");
        let e = parse_job_file(&bad, "job.yml", &known()).unwrap_err();
        assert_eq!(e.location, "job.yml:5:5");
        assert!(e.message.contains("declared twice"), "{e}");

        let bad = GOOD.replace("schedule:", "schedul:");
        let e = parse_job_file(&bad, "job.yml", &known()).unwrap_err();
        assert!(e.location.starts_with("job.yml:2:"), "{e}");
    }

    #[test]
    fn the_exchange_declaration_takes_json_or_yaml() {
        let d = parse_declaration(
            r#"[{"bigquery": ["read"]}, {"slack": ["write"]}]"#,
            &known(),
        )
        .unwrap();
        assert_eq!(d.highest().len(), 2);
        let e = parse_declaration(r#"[{"bigquery": ["read"], "slack": ["write"]}]"#, &known())
            .unwrap_err();
        assert!(e.message.contains("exactly one service"), "{e}");
        assert!(parse_declaration("[]", &known()).is_err());
    }
}
