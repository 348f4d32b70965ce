//! Risk classes: what an action can do, ordered so that a grant of `Write`
//! covers `Read`. Shared by the grant actor and the root crate's policy.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Risk classes, ordered: a grant of `Write` covers `Read`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Risk {
    Read,
    Write,
    HighRisk,
}

impl Risk {
    pub fn as_str(self) -> &'static str {
        match self {
            Risk::Read => "read",
            Risk::Write => "write",
            Risk::HighRisk => "high_risk",
        }
    }

    pub fn parse(text: &str) -> Option<Risk> {
        match text {
            "read" => Some(Risk::Read),
            "write" => Some(Risk::Write),
            "high_risk" => Some(Risk::HighRisk),
            _ => None,
        }
    }
}

impl std::fmt::Display for Risk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Risk {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// `read`, `write` or `high_risk` in YAML and JSON.
impl<'de> Deserialize<'de> for Risk {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Risk::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown risk class '{text}', expected read, write or high_risk"
            ))
        })
    }
}
