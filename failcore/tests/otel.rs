//! The tool-call spans exported as OpenTelemetry spans, named and attributed per the GenAI conventions.
#![cfg(feature = "otel")]

use failcore::otel::opentelemetry::Value as OtelValue;
use failcore::otel::opentelemetry_sdk::error::OTelSdkResult;
use failcore::otel::opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use failcore::store::MemoryStore;
use failcore::{Error, Session};
use std::sync::{Arc, Mutex};
use tracing_subscriber::layer::SubscriberExt;

#[derive(Debug)]
struct ToolError(String);
impl std::fmt::Display for ToolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl From<Error> for ToolError {
    fn from(e: Error) -> Self {
        ToolError(e.to_string())
    }
}

#[failcore::tool]
async fn otel_half(n: i64) -> Result<i64, ToolError> {
    if n % 2 == 0 {
        Ok(n / 2)
    } else {
        Err(ToolError("odd".into()))
    }
}

#[derive(Debug, Clone, Default)]
struct Collect(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Collect {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0.lock().unwrap().extend(batch);
        Ok(())
    }
}

fn attr(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| match &kv.value {
            OtelValue::String(s) => s.as_str().to_owned(),
            other => other.to_string(),
        })
}

#[tokio::test]
async fn spans_export_with_gen_ai_attributes() {
    let exporter = Collect::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry().with(failcore::otel::layer(&provider));
    let _default = tracing::subscriber::set_default(subscriber);
    // Other tests in this binary run in parallel without a subscriber; a callsite they hit first may have
    // cached "no interest". Recompute it now that this thread has one.
    tracing::callsite::rebuild_interest_cache();

    let session = Session::builder()
        .store(Arc::new(MemoryStore::new()))
        .open()
        .unwrap();
    assert_eq!(session.scope(otel_half(8)).await.unwrap(), 4);
    assert!(session.scope(otel_half(3)).await.is_err());
    let run = session.run_id().to_owned();
    session.finish().await.unwrap();
    provider.force_flush().unwrap();

    let spans = exporter.0.lock().unwrap().clone();
    let calls: Vec<&SpanData> = spans
        .iter()
        .filter(|s| s.name == "execute_tool otel_half")
        .collect();
    assert_eq!(
        calls.len(),
        2,
        "{:?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    for (i, span) in calls.iter().enumerate() {
        assert_eq!(
            attr(span, "gen_ai.operation.name").as_deref(),
            Some("execute_tool")
        );
        assert_eq!(attr(span, "gen_ai.tool.name").as_deref(), Some("otel_half"));
        assert_eq!(
            attr(span, "gen_ai.tool.call.id"),
            Some(format!("{run}:{i}"))
        );
    }
    assert_eq!(attr(calls[0], "error.type"), None);
    assert_eq!(attr(calls[1], "error.type").as_deref(), Some("tool"));
    assert!(matches!(
        calls[1].status,
        failcore::otel::opentelemetry::trace::Status::Error { .. }
    ));
}
