//! mcpgate: the binary's edges (config, CLI, HTTP, the rmcp handler, storage)
//! and the governance pipeline that every tool call passes.

pub mod admin;
pub mod audit_log;
pub mod catalog;
pub mod classify;
pub mod cli;
pub mod cli_operator;
pub mod config;
pub mod delegation;
pub mod discovery;
pub mod gateway;
pub mod hooks;
pub mod http;
pub mod keys;
pub mod mcp;
pub mod native;
pub mod oauth;
pub mod pii;
pub mod pipeline;
pub mod principal;
pub mod storage;
pub mod tokens;
pub mod vault;
pub mod write_safety;
