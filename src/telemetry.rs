//! Logs and traces: the `tracing` subscriber the binary installs, and the
//! W3C Trace Context in and out of the gateway.
//!
//! - **Logs**: JSON lines on stderr, filtered by `RUST_LOG` (default
//!   `info,rmcp=warn`).
//! - **Traces**: OpenTelemetry spans over OTLP/HTTP (protobuf), only when
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`)
//!   is set — the standard variables, read by the exporter itself, as are
//!   `OTEL_EXPORTER_OTLP_HEADERS` and `_TIMEOUT`; `OTEL_SERVICE_NAME` names
//!   the service (default `mcpgate`); `OTEL_SDK_DISABLED=true` or
//!   `OTEL_TRACES_EXPORTER=none` turn them off. Only the gateway's own spans
//!   are exported (target `mcpgate`), never log events: a span carries only
//!   the attributes the gateway sets on it, never argument values.
//!
//! Spans of one tool call (docs/operations.md has the attributes):
//!
//! ```text
//! POST /mcp                server; continues an incoming `traceparent`   http.rs
//! ├── mcp.authenticate                                                    http.rs
//! └── mcp.call             subject, actor, service, action, risk, decision, reason, grant
//!     ├── mcp.decide       classification, policy, access               pipeline.rs
//!     ├── mcp.grant        the grant's actor (delegated calls)
//!     ├── mcp.hooks.pre / mcp.hooks.post
//!     ├── mcp.confirm      write-safety (when a confirmation is needed)
//!     ├── mcp.pii.rehydrate / mcp.pii.pseudonymize
//!     ├── mcp.audit.write  (entry: decision, outcome, refusal)
//!     └── mcp.upstream     client; its context goes upstream as `traceparent`
//! ```

use std::collections::HashMap;

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::FilterExt as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// The span of the HTTP request a call arrived on, as the auth layer puts
/// it on the request: the MCP handler makes it the call's parent.
#[derive(Clone, Debug)]
pub struct RequestSpan(pub tracing::Span);

/// The installed subscriber; [`Telemetry::shutdown`] flushes the traces.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

/// Install the subscriber: JSON logs, and the OTLP exporter when configured.
/// A misconfigured exporter is reported and leaves traces off; it never
/// stops the gateway.
pub fn init() -> Telemetry {
    let logs = tracing_subscriber::fmt::layer()
        .json()
        .with_current_span(false)
        .with_span_list(false)
        .with_writer(std::io::stderr)
        // Events only: the logs never show span fields, so with traces off
        // no span is even created (the stages' spans cost nothing).
        .with_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rmcp=warn"))
                .and(tracing_subscriber::filter::filter_fn(|meta| {
                    meta.is_event()
                })),
        );
    let (provider, problem) = match traces_configured() {
        false => (None, None),
        true => match provider() {
            Ok(provider) => (Some(provider), None),
            Err(e) => (None, Some(e)),
        },
    };
    let traces = provider.as_ref().map(traces_layer);
    tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .init();
    if let Some(problem) = problem {
        tracing::error!(error = %problem, "OpenTelemetry traces are off: the OTLP exporter could not be built");
    } else if provider.is_some() {
        if let Some(protocol) = [
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ]
        .iter()
        .find_map(|name| env(name))
        .filter(|p| p != "http/protobuf")
        {
            tracing::warn!(%protocol, "only OTLP over http/protobuf is supported; exporting with it");
        }
        tracing::info!(service_name = %service_name(), "OpenTelemetry traces exported over OTLP/HTTP");
    }
    Telemetry { provider }
}

/// The layer that makes the gateway's spans OpenTelemetry spans of
/// `provider`: its own spans only (target `mcpgate`), never log events, and
/// only the attributes the gateway sets (no code locations, threads or
/// timings of its own).
pub fn traces_layer<S>(provider: &SdkTracerProvider) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("mcpgate"))
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_level(false)
        .with_target(false)
        .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
            meta.is_span() && meta.target().starts_with("mcpgate")
        }))
}

impl Telemetry {
    /// Export every span still buffered, then stop the exporter.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown()
        {
            eprintln!("mcpgate: flushing traces on shutdown failed: {e}");
        }
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// Traces are on when an OTLP endpoint is configured, unless turned off.
fn traces_configured() -> bool {
    if env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return false;
    }
    if env("OTEL_TRACES_EXPORTER").is_some_and(|v| !v.eq_ignore_ascii_case("otlp")) {
        return false;
    }
    env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
        || env("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
}

fn service_name() -> String {
    env("OTEL_SERVICE_NAME").unwrap_or_else(|| "mcpgate".to_owned())
}

fn provider() -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    use opentelemetry_otlp::{Protocol, WithExportConfig as _};
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .build()?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service_name())
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// Make `span` continue the trace of an incoming request's `traceparent`
/// (and `tracestate`). Without a valid one, `span` starts a trace.
pub fn continue_trace(span: &tracing::Span, headers: &http::HeaderMap) {
    if !headers.contains_key("traceparent") {
        return;
    }
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

/// `span`'s W3C Trace Context, for the upstream request it stands for:
/// `traceparent`, and `tracestate` when there is one. Empty when traces
/// are off.
pub fn trace_context(span: &tracing::Span) -> Vec<(String, String)> {
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return Vec::new();
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    // An empty `tracestate` is not sent at all.
    let mut out: Vec<(String, String)> = carrier
        .into_iter()
        .filter(|(_, value)| !value.is_empty())
        .collect();
    out.sort();
    out
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}
