//! The YAML shape of a hook file. One file holds a list of hooks:
//!
//! ```yaml
//! hooks:
//!   - name: no-prod-deletes
//!     phase: pre                 # pre (default) | post
//!     order: 10                  # lower runs first (default 100)
//!     enabled: true
//!     match: { tool: "jira_*", service: jira, action: "delete_*", risk: [high_risk],
//!              subject: "*@example.com", actor: "windmill:*" }
//!     when: 'args.project == "PROD"'   # CEL over subject, actor, service, action, risk, args, result
//!     kind: deny
//!     message: "Deleting in PROD is not allowed"
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookFile {
    pub hooks: Vec<HookSpec>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    #[default]
    Pre,
    Post,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchSpec {
    /// Glob over the MCP tool name (`jira_write_actions`, `everything__echo`).
    #[serde(default)]
    pub tool: Option<String>,
    #[serde(default)]
    pub service: Option<String>,
    /// Glob over the action name.
    #[serde(default)]
    pub action: Option<String>,
    /// Any of these risk classes.
    #[serde(default)]
    pub risk: Vec<String>,
    /// Glob over the subject (the person acted for).
    #[serde(default)]
    pub subject: Option<String>,
    /// Glob over the actor (the client or workflow).
    #[serde(default)]
    pub actor: Option<String>,
}

/// One hook. Deserialized by hand: the kind's own keys sit beside the common
/// ones, and unknown keys must still be errors (serde's `flatten` cannot
/// deny them).
#[derive(Debug, Clone)]
pub struct HookSpec {
    pub name: String,
    pub phase: Phase,
    pub order: i64,
    pub enabled: bool,
    pub matches: MatchSpec,
    pub when: Option<String>,
    pub kind: KindSpec,
}

impl<'de> Deserialize<'de> for HookSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut map = serde_yaml::Mapping::deserialize(d)?;
        let mut take = |key: &str| map.remove(serde_yaml::Value::String(key.to_owned()));
        fn parse<T: serde::de::DeserializeOwned, E: Error>(
            key: &str,
            v: serde_yaml::Value,
        ) -> Result<T, E> {
            serde_yaml::from_value(v).map_err(|e| E::custom(format!("{key}: {e}")))
        }
        let name: String = match take("name") {
            Some(v) => parse("name", v)?,
            None => return Err(D::Error::missing_field("name")),
        };
        let phase = take("phase")
            .map(|v| parse("phase", v))
            .transpose()?
            .unwrap_or_default();
        let order = take("order")
            .map(|v| parse("order", v))
            .transpose()?
            .unwrap_or_else(default_order);
        let enabled = take("enabled")
            .map(|v| parse("enabled", v))
            .transpose()?
            .unwrap_or_else(yes);
        let matches = take("match")
            .map(|v| parse("match", v))
            .transpose()?
            .unwrap_or_default();
        let when = take("when").map(|v| parse("when", v)).transpose()?;
        let kind: KindSpec = serde_yaml::from_value(serde_yaml::Value::Mapping(map))
            .map_err(|e| D::Error::custom(format!("hook '{name}': {e}")))?;
        Ok(HookSpec {
            name,
            phase,
            order,
            enabled,
            matches,
            when,
            kind,
        })
    }
}

fn default_order() -> i64 {
    100
}
fn yes() -> bool {
    true
}

/// The built-in kinds. Field names are the YAML keys beside `kind:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum KindSpec {
    /// Refuse the call.
    Deny { message: String },
    /// The human confirms first (elicitation or the two-step token).
    RequireConfirmation {
        #[serde(default)]
        message: Option<String>,
    },
    /// An argument must match one of these globs (e.g. Slack channels, URLs).
    EndpointAllowlist { field: String, allow: Vec<String> },
    /// Required fields, regex patterns, enumerations.
    Validate {
        #[serde(default)]
        required: Vec<String>,
        #[serde(default)]
        patterns: BTreeMap<String, String>,
        #[serde(default, rename = "enum")]
        one_of: BTreeMap<String, Vec<Value>>,
    },
    /// Set arguments the caller left out.
    SetDefault { values: BTreeMap<String, Value> },
    /// Set arguments whatever the caller sent (company layer only).
    Inject { values: BTreeMap<String, Value> },
    /// Cap the result: at most `max_items` per array, `max_bytes` of text.
    CapResponse {
        #[serde(default)]
        max_bytes: Option<usize>,
        #[serde(default)]
        max_items: Option<usize>,
    },
    /// Turn Markdown in these string arguments into Atlassian Document Format.
    MarkdownToAdf { fields: Vec<String> },
    /// Turn literal `\n` / `\t` sequences (a common AI-client slip) into real ones.
    NormalizeText { fields: Vec<String> },
    /// Let the call run, with a warning in the answer and the audit log.
    Warn { message: String },
}

impl KindSpec {
    pub fn name(&self) -> &'static str {
        match self {
            KindSpec::Deny { .. } => "deny",
            KindSpec::RequireConfirmation { .. } => "require_confirmation",
            KindSpec::EndpointAllowlist { .. } => "endpoint_allowlist",
            KindSpec::Validate { .. } => "validate",
            KindSpec::SetDefault { .. } => "set_default",
            KindSpec::Inject { .. } => "inject",
            KindSpec::CapResponse { .. } => "cap_response",
            KindSpec::MarkdownToAdf { .. } => "markdown_to_adf",
            KindSpec::NormalizeText { .. } => "normalize_text",
            KindSpec::Warn { .. } => "warn",
        }
    }

    /// Kinds a user hook may use: they only add checks, warnings, defaults
    /// (and caps), never loosen or rewrite what the company layer decided.
    pub fn allowed_for_users(&self) -> bool {
        matches!(
            self,
            KindSpec::Deny { .. }
                | KindSpec::RequireConfirmation { .. }
                | KindSpec::EndpointAllowlist { .. }
                | KindSpec::Validate { .. }
                | KindSpec::SetDefault { .. }
                | KindSpec::CapResponse { .. }
                | KindSpec::Warn { .. }
        )
    }

    /// The phase a kind works in.
    pub fn phase(&self) -> Phase {
        match self {
            KindSpec::CapResponse { .. } => Phase::Post,
            _ => Phase::Pre,
        }
    }
}
