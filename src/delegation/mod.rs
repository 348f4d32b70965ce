//! Delegation: a Windmill job acts as its owner through a verified,
//! revocable grant (see docs/delegation.md).

pub mod declaration;
