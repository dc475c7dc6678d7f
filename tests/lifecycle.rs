//! The lifecycle through the public API: record, resume, offline, block, panic, cancel, nesting, drift.

use failcore::store::{MemoryStore, RunReader, Status, TraceStore};
use failcore::{Error, Session, Verdict};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

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

static ADDS: AtomicUsize = AtomicUsize::new(0);

/// Adds two numbers.
#[failcore::tool(effect = "pure")]
async fn lc_add(a: i64, b: i64) -> Result<i64, ToolError> {
    ADDS.fetch_add(1, Ordering::SeqCst);
    Ok(a + b)
}

#[failcore::tool(output = "json")]
async fn lc_report(text: &str) -> Result<String, ToolError> {
    Ok(text.to_owned())
}

#[failcore::tool(policy = "fs_safe", effect = "write")]
async fn lc_write(path: PathBuf, content: String) -> Result<usize, ToolError> {
    Ok(content.len() + path.as_os_str().len())
}

#[failcore::tool]
async fn lc_panics(flag: bool) -> Result<u8, ToolError> {
    if flag {
        panic!("boom");
    }
    Ok(1)
}

#[failcore::tool]
async fn lc_sleepy(ms: u64) -> Result<u64, ToolError> {
    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    Ok(ms)
}

#[failcore::tool(name = "lc_outer")]
async fn outer(x: i64) -> Result<i64, ToolError> {
    lc_add(x, 1).await
}

struct Panicky;
impl failcore::Policy for Panicky {
    fn name(&self) -> &str {
        "panicky"
    }
    fn check(&self, _: &failcore::CallView<'_>) -> Result<Verdict, failcore::PolicyError> {
        panic!("policy bug")
    }
}

#[failcore::tool(policy = Panicky)]
async fn lc_guarded(n: u8) -> Result<u8, ToolError> {
    Ok(n)
}

fn records(store: &MemoryStore, run: &str) -> Vec<failcore::store::Record> {
    RunReader::open(store, run)
        .unwrap()
        .map(|r| r.unwrap().record)
        .collect()
}

fn ends(store: &MemoryStore, run: &str) -> Vec<(Status, Option<serde_json::Value>)> {
    records(store, run)
        .into_iter()
        .filter_map(|r| r.body.end().map(|e| (e.status, e.output.clone())))
        .collect()
}

#[tokio::test]
async fn record_then_resume_serves_successes_without_executing() {
    let store = Arc::new(MemoryStore::new());
    let s1 = Session::builder().store(store.clone()).open().unwrap();
    let before = ADDS.load(Ordering::SeqCst);
    s1.scope(async {
        assert_eq!(lc_add(1, 2).await.unwrap(), 3);
        assert_eq!(lc_add(1, 2).await.unwrap(), 3);
        assert_eq!(lc_add(5, 5).await.unwrap(), 10);
    })
    .await;
    s1.finish().await.unwrap();
    assert_eq!(ADDS.load(Ordering::SeqCst) - before, 3);

    let s2 = Session::builder()
        .store(store.clone())
        .resume(s1.run_id())
        .open()
        .unwrap();
    let before = ADDS.load(Ordering::SeqCst);
    s2.scope(async {
        assert_eq!(lc_add(1, 2).await.unwrap(), 3);
        assert_eq!(lc_add(1, 2).await.unwrap(), 3);
        // A third (1, 2) has no recorded success: it executes.
        assert_eq!(lc_add(1, 2).await.unwrap(), 3);
        assert_eq!(lc_add(5, 5).await.unwrap(), 10);
    })
    .await;
    let summary = s2.finish().await.unwrap();
    assert_eq!(ADDS.load(Ordering::SeqCst) - before, 1);
    assert_eq!(summary.counts.replayed, 3);
    assert_eq!(summary.counts.ok, 1);
    let statuses: Vec<_> = ends(&store, s2.run_id())
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(
        statuses,
        [
            Status::Replayed,
            Status::Replayed,
            Status::Ok,
            Status::Replayed
        ]
    );
    let report = failcore::store::verify(RunReader::open(store.as_ref(), s2.run_id()).unwrap());
    assert!(report.is_ok(), "{report:?}");
}

#[tokio::test]
async fn offline_miss_is_an_error_and_nothing_runs() {
    let store = Arc::new(MemoryStore::new());
    let s1 = Session::builder().store(store.clone()).open().unwrap();
    s1.scope(lc_add(7, 7)).await.unwrap();
    s1.finish().await.unwrap();
    let off = Session::builder()
        .store(store.clone())
        .offline("last")
        .open()
        .unwrap();
    let before = ADDS.load(Ordering::SeqCst);
    assert_eq!(off.scope(lc_add(7, 7)).await.unwrap(), 14);
    let miss = off.scope(lc_add(8, 8)).await.unwrap_err();
    assert!(miss.0.contains("no recorded success"), "{miss}");
    assert_eq!(ADDS.load(Ordering::SeqCst), before);
}

#[tokio::test]
async fn unsafe_paths_are_blocked_before_the_body_runs() {
    let root = tempfile::tempdir().unwrap();
    let store = Arc::new(MemoryStore::new());
    let s = Session::builder()
        .store(store.clone())
        .sandbox_root(root.path())
        .open()
        .unwrap();
    let ok = s.scope(lc_write("notes/a.txt".into(), "hi".into())).await;
    assert!(ok.is_ok(), "{ok:?}");
    let err = s
        .scope(lc_write("../../etc/passwd".into(), "x".into()))
        .await
        .unwrap_err();
    assert!(err.0.contains("fs.escape"), "{err}");
    s.finish().await.unwrap();
    let recs = records(&store, s.run_id());
    let blocked = recs.iter().find_map(|r| match r.body.start() {
        Some(st) if st.decision.rule.is_some() => Some(st.decision.clone()),
        _ => None,
    });
    let d = blocked.expect("the denial is recorded on the step");
    assert_eq!(d.policy.as_deref(), Some("fs_safe"));
    assert_eq!(d.rule.as_deref(), Some("fs.escape"));
}

#[tokio::test]
async fn a_panicking_policy_denies() {
    let s = Session::builder()
        .store(Arc::new(MemoryStore::new()))
        .open()
        .unwrap();
    let err = s.scope(lc_guarded(1)).await.unwrap_err();
    assert!(err.0.contains("policy.panic"), "{err}");
}

#[tokio::test]
async fn panics_are_recorded_then_resumed() {
    let store = Arc::new(MemoryStore::new());
    let s = Session::builder().store(store.clone()).open().unwrap();
    let handle = tokio::spawn({
        let s = s.clone();
        async move { s.scope(lc_panics(true)).await }
    });
    assert!(handle.await.unwrap_err().is_panic());
    assert_eq!(ends(&store, s.run_id())[0].0, Status::Panicked);
}

#[tokio::test]
async fn dropped_futures_are_recorded_as_cancelled() {
    let store = Arc::new(MemoryStore::new());
    let s = Session::builder().store(store.clone()).open().unwrap();
    let r = tokio::time::timeout(
        std::time::Duration::from_millis(20),
        s.scope(lc_sleepy(5_000)),
    )
    .await;
    assert!(r.is_err());
    s.finish().await.unwrap();
    assert_eq!(ends(&store, s.run_id())[0].0, Status::Cancelled);
}

#[tokio::test]
async fn nested_calls_record_their_parent_step() {
    let store = Arc::new(MemoryStore::new());
    let s = Session::builder().store(store.clone()).open().unwrap();
    assert_eq!(s.scope(outer(41)).await.unwrap(), 42);
    s.finish().await.unwrap();
    let starts: Vec<_> = records(&store, s.run_id())
        .into_iter()
        .filter_map(|r| {
            r.body
                .start()
                .map(|st| (st.tool.clone(), st.step, st.parent))
        })
        .collect();
    assert_eq!(
        starts,
        [
            ("lc_outer".to_owned(), 0, None),
            ("lc_add".to_owned(), 1, Some(0))
        ]
    );
}

#[tokio::test]
async fn text_where_json_was_promised_is_drift_or_an_error_when_strict() {
    let store = Arc::new(MemoryStore::new());
    let s = Session::builder().store(store.clone()).open().unwrap();
    assert!(s.scope(lc_report(r#"{"ok":true}"#)).await.is_ok());
    assert!(s.scope(lc_report("all good!")).await.is_ok());
    s.finish().await.unwrap();
    let drift: Vec<_> = records(&store, s.run_id())
        .into_iter()
        .filter_map(|r| r.body.end().map(|e| e.drift.len()))
        .collect();
    assert_eq!(drift, [0, 1]);

    let strict = Session::builder()
        .store(store.clone())
        .strict_contracts(true)
        .open()
        .unwrap();
    let err = strict.scope(lc_report("not json")).await.unwrap_err();
    assert!(err.0.contains("contract `json`"), "{err}");
}

#[tokio::test]
async fn call_json_runs_a_tool_by_name_through_the_lifecycle() {
    let store = Arc::new(MemoryStore::new());
    let s = Session::builder().store(store.clone()).open().unwrap();
    let out = s
        .scope(failcore::call_json(
            "lc_add",
            serde_json::json!({"a": 2, "b": 40}),
        ))
        .await
        .unwrap();
    assert_eq!(out, serde_json::json!(42));
    let out = s
        .scope(failcore::call_json(
            "lc_report",
            serde_json::json!({"text": "[1]"}),
        ))
        .await
        .unwrap();
    assert_eq!(out, serde_json::json!("[1]"));
    let err = s
        .scope(failcore::call_json("lc_add", serde_json::json!({"a": 2})))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidArguments { .. }), "{err}");
    let err = s
        .scope(failcore::call_json(
            "lc_add",
            serde_json::json!({"a": 1, "b": 2, "c": 3}),
        ))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("unknown argument `c`"), "{err}");
    assert!(matches!(
        failcore::call_json("nope", serde_json::json!({})).await,
        Err(Error::UnknownTool(_))
    ));
    s.finish().await.unwrap();
    assert_eq!(
        ends(&store, s.run_id()).len(),
        2,
        "invalid calls never reach the lifecycle"
    );
    let names: Vec<_> = failcore::tools().iter().map(|t| t.name()).collect();
    assert!(names.contains(&"lc_add") && names.contains(&"lc_outer"));
    let add = failcore::find_tool("lc_add").unwrap();
    assert_eq!(add.description(), "Adds two numbers.");
    let _ = store.runs();
}

#[failcore::tool(policy = failcore::policy::DenyTools::new(["lc_refused"]))]
async fn lc_refused(n: u8) -> Result<u8, failcore::ToolError> {
    Ok(n)
}

#[tokio::test]
async fn the_ready_made_error_keeps_the_failcore_error_of_a_blocked_call() {
    let s = Session::builder()
        .store(Arc::new(MemoryStore::new()))
        .open()
        .unwrap();
    let err = s.scope(lc_refused(1)).await.unwrap_err();
    assert!(
        matches!(err.failcore(), Some(Error::Blocked { rule, .. }) if rule == "deny_tools"),
        "{err:?}"
    );
    assert!(err.to_string().contains("deny list"), "{err}");
    let source = std::error::Error::source(&err).expect("the FailCore error is its source");
    assert!(source.to_string().contains("blocked"));
}

#[test]
fn resuming_a_trace_with_a_forged_fingerprint_is_an_error_naming_the_line() {
    let store = Arc::new(MemoryStore::new());
    // A sound chain (resume verifies it first) around a step whose fingerprint is not one.
    let start = format!(
        r#"{{"v":1,"seq":0,"ts":"2026-01-01T00:00:00.000000Z","run":"forged","prev":"{}","kind":"run_start","mode":"record","program":"p","host":"h","pid":1}}"#,
        failcore::store::genesis_hash("forged")
    );
    let step = format!(
        r#"{{"v":1,"seq":1,"ts":"2026-01-01T00:00:00.000000Z","run":"forged","prev":"{}","kind":"step_start","step":0,"tool":"lc_add","fp":"not-a-fingerprint","occ":0,"args":{{}},"decision":{{"outcome":"allow"}}}}"#,
        failcore::store::line_hash(start.as_bytes())
    );
    store.insert_raw("forged", vec![start.into(), step.into()]);
    let err = Session::builder()
        .store(store)
        .resume("forged")
        .open()
        .unwrap_err();
    match err {
        Error::Corrupt { line, reason, .. } => {
            assert_eq!(line, 2);
            assert!(reason.contains("fp"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other}"),
    }
}

/// A tool that calls a tool its policy blocks, and fails with that error.
#[failcore::tool]
async fn lc_calls_refused(n: u8) -> Result<u8, failcore::ToolError> {
    lc_refused(n).await
}

#[tokio::test]
async fn a_call_by_name_reports_its_own_failcore_error_not_one_of_its_nested_calls() {
    let s = Session::builder()
        .store(Arc::new(MemoryStore::new()))
        .open()
        .unwrap();
    let own = s
        .scope(failcore::call_json(
            "lc_refused",
            serde_json::json!({"n": 1}),
        ))
        .await
        .unwrap_err();
    assert!(matches!(own, Error::Blocked { .. }), "{own}");
    // The outer call was not blocked: it ran and failed with its own (rendered) error.
    let nested = s
        .scope(failcore::call_json(
            "lc_calls_refused",
            serde_json::json!({"n": 1}),
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(nested, Error::Tool { ref message, .. } if message.contains("deny list")),
        "{nested}"
    );
}
