//! The `pii:` section: pseudonymization modes per service and field.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    Pseudonymize,
    Mask,
    Pass,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScopeKind {
    /// Pseudonyms are per person acted for (default).
    #[default]
    Subject,
    /// One scope for the whole gateway (`pii.tenant`).
    Tenant,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServicePii {
    #[serde(default)]
    pub mode: Mode,
    /// Per field (dotted path glob, e.g. `fields.description`): its own mode.
    #[serde(default)]
    pub fields: BTreeMap<String, Mode>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomPatternConfig {
    pub label: String,
    pub regex: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PiiConfig {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub scope: ScopeKind,
    #[serde(default = "default_tenant")]
    pub tenant: String,
    #[serde(default = "default_ttl", deserialize_with = "super::duration_de")]
    pub ttl: std::time::Duration,
    /// Extra keys whose string values are person names.
    #[serde(default)]
    pub name_keys: Vec<String>,
    #[serde(default)]
    pub patterns: Vec<CustomPatternConfig>,
    #[serde(default)]
    pub services: BTreeMap<String, ServicePii>,
}

fn yes() -> bool {
    true
}
fn default_tenant() -> String {
    "default".into()
}
fn default_ttl() -> std::time::Duration {
    std::time::Duration::from_secs(24 * 3600)
}

impl Default for PiiConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            scope: ScopeKind::Subject,
            tenant: default_tenant(),
            ttl: default_ttl(),
            name_keys: Vec::new(),
            patterns: Vec::new(),
            services: BTreeMap::new(),
        }
    }
}
