//! Domain-free supervision on ractor.
//!
//! This crate knows nothing about MCP, HTTP or mcpgate's domain. It offers:
//! - [`Supervisor`]: a ractor actor that starts children from [`ChildSpec`]s and
//!   restarts them one-for-one with exponential backoff, up to an intensity limit
//!   (max restarts in a window) after which it fails itself so that the failure
//!   escalates to its own supervisor.
//! - [`Registry`]: find a running actor by key, without going through any mailbox.
//! - [`LifecycleEvents`]: started / stopped / restarted / failed / escalated events,
//!   for the application to turn into logs and metrics.
//! - ordered graceful shutdown: children stop in reverse start order.

mod backoff;
mod events;
mod registry;
mod supervisor;

pub use backoff::RestartPolicy;
pub use events::{LifecycleEvent, LifecycleEvents, LifecycleKind};
pub use registry::Registry;
pub use supervisor::{
    ChildInfo, ChildSpec, Restart, StartError, Supervisor, SupervisorArgs, SupervisorMsg,
    start_child, stop_child,
};
