//! Native service connectors: declarative catalogs run by one HTTP executor,
//! acting with the subject's own credential from the vault.

pub mod actor;
pub mod catalog;
pub mod executor;
