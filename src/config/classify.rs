//! `policy.classify` rules: argument-aware classification (applied by the classify module).

use serde::Deserialize;

use crate::domain::Risk;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifyRule {
    /// `service.action` glob.
    #[serde(rename = "match")]
    pub pattern: String,
    /// Argument holding SQL: SELECT → read, DML/DDL → write, destructive → high_risk.
    #[serde(default)]
    pub sql: Option<String>,
    /// Argument holding an HTTP method: GET/HEAD → read, POST/PUT/PATCH → write,
    /// DELETE → high_risk.
    #[serde(default)]
    pub method: Option<String>,
    /// Argument checked against `allow` globs.
    #[serde(default)]
    pub field: Option<String>,
    #[serde(default)]
    pub allow: Vec<String>,
    /// The class when `field` is outside `allow`.
    #[serde(default)]
    pub otherwise: Option<Risk>,
}

impl ClassifyRule {
    /// Classify `service.action` by the SQL in argument `field`.
    pub fn sql(pattern: String, field: String) -> ClassifyRule {
        ClassifyRule {
            pattern,
            sql: Some(field),
            method: None,
            field: None,
            allow: Vec::new(),
            otherwise: None,
        }
    }
}
