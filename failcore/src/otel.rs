//! OpenTelemetry export of tool-call spans (feature `otel`).
//!
//! Every call is a `tracing` span following the OpenTelemetry GenAI conventions (`execute_tool {tool}`,
//! `gen_ai.operation.name`, `gen_ai.tool.name`, `gen_ai.tool.call.id`, `error.type`), with or without this
//! feature. This feature adds [`layer`], which turns those spans into OpenTelemetry spans through
//! tracing-opentelemetry, and re-exports the exact versions it is built against, so that the tracer
//! provider and the layer agree. FailCore's own trace stays the record of truth.

pub use opentelemetry;
pub use opentelemetry_sdk;
pub use tracing_opentelemetry;
pub use tracing_subscriber;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetryLayer;
use tracing_subscriber::registry::LookupSpan;

/// The tracing-opentelemetry version this feature is built against.
pub const TRACING_OPENTELEMETRY_VERSION: &str = "0.34.0";
/// The opentelemetry and opentelemetry_sdk version this feature is built against.
pub const OPENTELEMETRY_VERSION: &str = "0.33.0";

/// A `tracing` layer exporting spans (FailCore's tool calls among them) through `provider`, with the
/// instrumentation scope `failcore`. The span name is taken from `otel.name`: `execute_tool {tool}`.
pub fn layer<S>(provider: &SdkTracerProvider) -> OpenTelemetryLayer<S, SdkTracer>
where
    S: tracing::Subscriber + for<'span> LookupSpan<'span>,
{
    tracing_opentelemetry::layer().with_tracer(provider.tracer("failcore"))
}
