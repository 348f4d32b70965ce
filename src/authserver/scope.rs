//! The scopes this server grants for `/mcp`, and what each lets a token do.
//!
//! | scope | a token with it may |
//! |---|---|
//! | `mcp:read` | read actions only (and read its person's own activity and hooks) |
//! | `mcp` | everything the person's `access` allows; implies `mcp:read` |
//!
//! A scope never widens a person's access: it caps it. A call the person
//! may make but the token's scope does not cover is answered `403
//! insufficient_scope` with a challenge naming `mcp`, so the client can ask
//! the person again for more (MCP authorization, "Scope Challenge Handling").

use crate::config::oauth::DefaultScope;
use crate::domain::Risk;

/// One of the scopes above. Ordered: a greater scope covers a lesser one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    Read,
    Full,
}

/// Every scope, as advertised in `scopes_supported`.
pub const SUPPORTED: [&str; 2] = [Scope::Full.as_str(), Scope::Read.as_str()];

impl Scope {
    pub const fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "mcp:read",
            Scope::Full => "mcp",
        }
    }

    /// The most a token of this scope lets a call do; `None`: no cap beyond
    /// the person's own access.
    pub const fn risk_cap(self) -> Option<Risk> {
        match self {
            Scope::Read => Some(Risk::Read),
            Scope::Full => None,
        }
    }

    /// What the consent page says the client gets.
    pub const fn describe(self) -> &'static str {
        match self {
            Scope::Read => {
                "read only: it can look things up, never create, change or delete anything"
            }
            Scope::Full => "everything your access below allows, writes included",
        }
    }

    /// The operator's `oauth.default_scope`.
    pub const fn default_of(configured: DefaultScope) -> Scope {
        match configured {
            DefaultScope::Mcp => Scope::Full,
            DefaultScope::McpRead => Scope::Read,
        }
    }

    /// A requested `scope` parameter (space-separated, RFC 6749 §3.3): the
    /// widest scope it names; absent or empty means `default` (what the
    /// 401 challenges for). An unknown scope is an error naming it
    /// (`invalid_scope`).
    pub fn parse(requested: Option<&str>, default: Scope) -> Result<Scope, String> {
        let mut widest = None;
        for name in requested.unwrap_or_default().split(' ') {
            let scope = match name {
                "" => continue,
                "mcp" => Scope::Full,
                "mcp:read" => Scope::Read,
                other => {
                    return Err(format!(
                        "scope '{other}' is not granted here; ask for mcp:read or mcp"
                    ));
                }
            };
            widest = widest.max(Some(scope));
        }
        Ok(widest.unwrap_or(default))
    }

    /// A stored scope (a family's or a token's). Anything else reads as the
    /// narrowest, so a damaged row can never widen a token.
    pub fn stored(text: &str) -> Scope {
        match text {
            "mcp" => Scope::Full,
            _ => Scope::Read,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requested_scopes_parse_to_the_widest_and_unknown_ones_are_refused() {
        let full = Scope::Full;
        assert_eq!(Scope::parse(None, full), Ok(Scope::Full));
        assert_eq!(Scope::parse(None, Scope::Read), Ok(Scope::Read));
        assert_eq!(Scope::parse(Some(""), Scope::Read), Ok(Scope::Read));
        assert_eq!(Scope::parse(Some("mcp:read"), full), Ok(Scope::Read));
        assert_eq!(Scope::parse(Some("mcp:read mcp"), full), Ok(Scope::Full));
        assert_eq!(Scope::parse(Some("mcp  mcp:read"), full), Ok(Scope::Full));
        let refused = Scope::parse(Some("mcp:read admin"), full).unwrap_err();
        assert!(refused.contains("'admin'"), "{refused}");
        assert!(Scope::parse(Some("MCP"), full).is_err());
    }

    #[test]
    fn read_caps_risk_and_full_implies_read() {
        assert_eq!(Scope::Read.risk_cap(), Some(Risk::Read));
        assert_eq!(Scope::Full.risk_cap(), None);
        assert!(Scope::Full > Scope::Read);
        assert_eq!(Scope::stored("mcp"), Scope::Full);
        assert_eq!(Scope::stored("mcp:read"), Scope::Read);
        assert_eq!(Scope::stored("garbage"), Scope::Read);
    }
}
