//! Native service connectors: declarative catalogs run by one HTTP executor,
//! acting with the subject's own credential from the vault.

pub mod actor;
pub mod breaker;
pub mod catalog;
pub mod connect;
pub mod executor;
pub mod openapi_import;
pub mod spec;
pub mod spec_check;
pub mod token_set;
