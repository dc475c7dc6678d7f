//! FailCore's tool-call spans exported with OpenTelemetry (stdout exporter): each call is a span named
//! `execute_tool {tool}` with the GenAI attributes.
//!
//! ```sh
//! cargo run --example otel_export --features otel
//! ```

use failcore::otel::opentelemetry_sdk::trace::SdkTracerProvider;
use failcore::otel::tracing_subscriber::layer::SubscriberExt;
use failcore::otel::tracing_subscriber::util::SubscriberInitExt;

#[derive(Debug)]
struct ToolError(String);

impl std::error::Error for ToolError {}

impl std::fmt::Display for ToolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<failcore::Error> for ToolError {
    fn from(e: failcore::Error) -> Self {
        ToolError(e.to_string())
    }
}

/// Reverses a string.
#[failcore::tool(effect = "pure")]
async fn reverse(text: String) -> Result<String, ToolError> {
    Ok(text.chars().rev().collect())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(opentelemetry_stdout::SpanExporter::default())
        .build();
    let subscriber =
        failcore::otel::tracing_subscriber::registry().with(failcore::otel::layer(&provider));
    subscriber.try_init()?;

    let session = failcore::Session::builder()
        .store(std::sync::Arc::new(failcore::store::MemoryStore::new()))
        .open()?;
    let out = session.scope(reverse("stressed".into())).await?;
    println!("reverse(\"stressed\") = {out}");
    session.finish().await?;
    provider.shutdown()?;
    Ok(())
}
