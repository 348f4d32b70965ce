//! mcpgate: the binary's edges (config, CLI, HTTP, the rmcp handler, storage)
//! and the governance pipeline that every tool call passes.

pub mod activity;
pub mod adf;
pub mod admin;
pub mod audit;
pub mod authserver;
pub mod catalog;
pub mod classify;
pub mod cli;
pub mod cli_operator;
pub mod config;
pub mod console;
pub mod delegation;
pub mod discovery;
pub mod domain;
pub mod drain;
pub mod federation;
pub mod gateway;
pub mod hooks;
pub mod http;
pub mod keys;
pub mod mcp;
pub mod metrics;
pub mod native;
pub mod oauth;
pub mod pii;
pub mod pipeline;
pub mod policy;
pub mod principal;
pub mod sessions;
pub mod stats;
pub mod storage;
pub mod telemetry;
pub mod tokens;
pub mod vault;
pub mod write_safety;
