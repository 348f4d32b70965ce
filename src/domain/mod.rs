//! The gateway's vocabulary, at the bottom of the crate: risk classes,
//! `service.action` globs, refusal reasons, kinds of caller. Pure values: no
//! I/O, and no other module of this crate (`tests/architecture.rs`).

pub mod glob;
pub mod reason;

pub use actors::risk::Risk;
pub use glob::glob_match;
pub use reason::{Class, Reason, Refusal};

/// Who drives a call, as far as governance cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalKind {
    /// A person in their own client: can be asked to confirm.
    Person,
    /// A configured service account (a workflow engine's own identity).
    ServiceAccount,
    /// A workflow acting for its owner under a delegation grant.
    Delegated,
}

impl PrincipalKind {
    /// Only a person at a client can answer a confirmation.
    pub fn is_interactive(self) -> bool {
        self == PrincipalKind::Person
    }
}
