//! Each tool call is a `tracing` span following the OpenTelemetry GenAI conventions.

use failcore::store::MemoryStore;
use failcore::{Error, Session, Verdict};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

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

#[failcore::tool(effect = "pure")]
async fn tel_add(a: i64, b: i64) -> Result<i64, ToolError> {
    Ok(a + b)
}

#[failcore::tool]
async fn tel_fails(msg: String) -> Result<i64, ToolError> {
    Err(ToolError(msg))
}

struct DenyAll;
impl failcore::Policy for DenyAll {
    fn name(&self) -> &str {
        "deny_all"
    }
    fn check(&self, _: &failcore::CallView<'_>) -> Result<Verdict, failcore::PolicyError> {
        Ok(Verdict::deny("deny_all.always", "nothing passes"))
    }
}

#[failcore::tool(policy = DenyAll)]
async fn tel_denied(n: u8) -> Result<u8, ToolError> {
    Ok(n)
}

/// A span as captured: its metadata name and every field recorded on it.
#[derive(Debug, Clone, Default)]
struct Captured {
    name: String,
    fields: BTreeMap<String, String>,
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<(u64, Captured)>>>);

struct Fields<'a>(&'a mut BTreeMap<String, String>);
impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl<S: tracing::Subscriber> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
        let mut c = Captured {
            name: attrs.metadata().name().to_owned(),
            ..Default::default()
        };
        attrs.record(&mut Fields(&mut c.fields));
        self.0.lock().unwrap().push((id.into_u64(), c));
    }
    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        let mut all = self.0.lock().unwrap();
        if let Some((_, c)) = all.iter_mut().find(|(i, _)| *i == id.into_u64()) {
            values.record(&mut Fields(&mut c.fields));
        }
    }
}

impl Capture {
    fn spans(&self) -> Vec<Captured> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(_, c)| c.clone())
            .collect()
    }
}

/// The tests of this binary run one at a time: tracing caches each callsite's interest process-wide, and a
/// test running without a subscriber on another thread can leave a span callsite disabled for a test that
/// installs one.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.lock().await
}

#[tokio::test]
async fn each_call_is_an_execute_tool_span() {
    let _serial = serial().await;
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry().with(capture.clone());
    let _default = tracing::subscriber::set_default(subscriber);
    // Other tests in this binary run in parallel without a subscriber; a callsite they hit first may have
    // cached "no interest". Recompute it now that this thread has one.
    tracing::callsite::rebuild_interest_cache();

    let store = Arc::new(MemoryStore::new());
    let session = Session::builder().store(store.clone()).open().unwrap();
    let run = session.run_id().to_owned();
    assert_eq!(session.scope(tel_add(2, 3)).await.unwrap(), 5);
    assert!(session.scope(tel_fails("nope".into())).await.is_err());
    assert!(session.scope(tel_denied(1)).await.is_err());
    session.finish().await.unwrap();

    // The resumed run serves the first call from the trace.
    let resumed = Session::builder()
        .store(store)
        .resume(run.clone())
        .open()
        .unwrap();
    assert_eq!(resumed.scope(tel_add(2, 3)).await.unwrap(), 5);
    let resumed_run = resumed.run_id().to_owned();
    resumed.finish().await.unwrap();

    let spans: Vec<Captured> = capture
        .spans()
        .into_iter()
        .filter(|s| s.name == "execute_tool")
        .collect();
    assert_eq!(spans.len(), 4, "{spans:#?}");

    let ok = &spans[0];
    assert_eq!(ok.fields["otel.name"], "execute_tool tel_add");
    assert_eq!(ok.fields["gen_ai.operation.name"], "execute_tool");
    assert_eq!(ok.fields["gen_ai.tool.name"], "tel_add");
    assert_eq!(ok.fields["gen_ai.tool.call.id"], format!("{run}:0"));
    assert!(!ok.fields.contains_key("error.type"), "{ok:#?}");

    let failed = &spans[1];
    assert_eq!(failed.fields["gen_ai.tool.name"], "tel_fails");
    assert_eq!(failed.fields["gen_ai.tool.call.id"], format!("{run}:1"));
    assert_eq!(failed.fields["error.type"], "tool");
    assert_eq!(failed.fields["otel.status_code"], "ERROR");

    let blocked = &spans[2];
    assert_eq!(blocked.fields["otel.name"], "execute_tool tel_denied");
    assert_eq!(blocked.fields["gen_ai.tool.call.id"], format!("{run}:2"));
    assert_eq!(blocked.fields["error.type"], "blocked");

    let replayed = &spans[3];
    assert_eq!(replayed.fields["gen_ai.tool.name"], "tel_add");
    assert_eq!(
        replayed.fields["gen_ai.tool.call.id"],
        format!("{resumed_run}:0")
    );
    assert_eq!(replayed.fields["failcore.replayed"], "true");
    assert!(!replayed.fields.contains_key("error.type"));
}

#[tokio::test]
async fn an_offline_miss_is_a_replay_miss_span() {
    let _serial = serial().await;
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry().with(capture.clone());
    let _default = tracing::subscriber::set_default(subscriber);
    // Other tests in this binary run in parallel without a subscriber; a callsite they hit first may have
    // cached "no interest". Recompute it now that this thread has one.
    tracing::callsite::rebuild_interest_cache();

    let store = Arc::new(MemoryStore::new());
    let first = Session::builder().store(store.clone()).open().unwrap();
    first.finish().await.unwrap();
    let offline = Session::builder()
        .store(store)
        .offline(first.run_id())
        .open()
        .unwrap();
    assert!(offline.scope(tel_add(40, 2)).await.is_err());
    offline.finish().await.unwrap();

    let spans = capture.spans();
    let span = spans.iter().find(|s| s.name == "execute_tool").unwrap();
    assert_eq!(span.fields["error.type"], "replay_miss");
}

#[tokio::test]
async fn a_call_by_name_reports_the_failcore_error_not_its_rendering() {
    let _serial = serial().await;
    let store = Arc::new(MemoryStore::new());
    let session = Session::builder().store(store).open().unwrap();
    let blocked = session
        .scope(failcore::call_json(
            "tel_denied",
            serde_json::json!({"n": 1}),
        ))
        .await
        .unwrap_err();
    match blocked {
        Error::Blocked { policy, rule, .. } => {
            assert_eq!(policy, "deny_all");
            assert_eq!(rule, "deny_all.always");
        }
        other => panic!("expected Blocked, got {other:?}"),
    }
    // The tool's own error stays the tool's.
    let failed = session
        .scope(failcore::call_json(
            "tel_fails",
            serde_json::json!({"msg": "bad"}),
        ))
        .await
        .unwrap_err();
    assert_eq!(failed.kind(), "tool");
    assert!(failed.to_string().contains("bad"));
    session.finish().await.unwrap();
}
