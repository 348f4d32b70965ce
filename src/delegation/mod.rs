//! Delegation: a Windmill job acts as its owner through a verified,
//! revocable grant (see docs/delegation.md).

pub mod declaration;
pub mod exchange;
pub mod grants;
pub mod store;
pub mod windmill;
