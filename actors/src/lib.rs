//! mcpgate's actors and their messages. One module per actor, its message enum beside it.
//!
//! - [`session::SessionActor`]: one per MCP session (or per stateless client identity).
//! - [`connector::ConnectorActor`]: one per configured service; owns the upstream connection.
//! - [`grant::GrantActor`]: one per delegation grant; stopping it is revocation.
//! - [`audit::AuditWriter`]: the one durable, group-committing audit writer.
//!
//! Actors own state and lifecycle. None of them runs a remote call inside its
//! mailbox loop: work that waits on the network is spawned, so a mailbox is a
//! dispatch point of microseconds, never a queue behind an upstream.

pub mod audit;
pub mod audit_chain;
pub mod connector;
pub mod grant;
pub mod risk;
#[cfg(test)]
mod scratch;
pub mod session;
pub mod sqlite_writer;
pub mod write_plan;
pub mod write_turn;

/// RFC 3339 UTC timestamp with microseconds; sorts lexically in time order.
pub fn now_rfc3339() -> String {
    format_rfc3339(time::OffsetDateTime::now_utc())
}

pub fn format_rfc3339(at: time::OffsetDateTime) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    at.to_offset(time::UtcOffset::UTC)
        .format(&format)
        .unwrap_or_else(|_| "1970-01-01T00:00:00.000000Z".into())
}
