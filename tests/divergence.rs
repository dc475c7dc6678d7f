//! Divergence: a call that misses the replay index while the source run made a call of the same tool
//! at the same position with other arguments is recorded with the field-level difference.

use failcore::store::{MemoryStore, RunReader, Status, TraceStore};
use failcore::{Error, Session};
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

#[failcore::tool(effect = "read")]
async fn dv_fetch(url: String, timeout: u32) -> Result<String, ToolError> {
    if url == "fail" {
        return Err(ToolError("unreachable".into()));
    }
    Ok(format!("{url}:{timeout}"))
}

#[failcore::tool(effect = "pure")]
async fn dv_other(n: u32) -> Result<u32, ToolError> {
    Ok(n)
}

/// The step_starts of a run: (tool, divergence).
fn starts(
    store: &Arc<MemoryStore>,
    run: &str,
) -> Vec<(String, Option<failcore::store::Divergence>)> {
    RunReader::open(store.as_ref() as &dyn TraceStore, run)
        .unwrap()
        .filter_map(|r| {
            r.unwrap()
                .record
                .body
                .start()
                .map(|s| (s.tool.clone(), s.divergence.clone()))
        })
        .collect()
}

async fn source(store: &Arc<MemoryStore>) -> String {
    let s = Session::builder().store(store.clone()).open().unwrap();
    s.scope(async {
        dv_fetch("a".into(), 10).await.unwrap();
        dv_other(1).await.unwrap();
        dv_fetch("b".into(), 10).await.unwrap();
        let _ = dv_fetch("fail".into(), 1).await;
    })
    .await;
    s.finish().await.unwrap();
    s.run_id().to_owned()
}

#[tokio::test]
async fn resume_records_the_argument_diff_on_the_step() {
    let store = Arc::new(MemoryStore::new());
    let src = source(&store).await;
    let s = Session::builder()
        .store(store.clone())
        .resume(&src)
        .open()
        .unwrap();
    s.scope(async {
        assert_eq!(dv_fetch("a".into(), 10).await.unwrap(), "a:10");
        // Another tool's calls do not move dv_fetch's position.
        assert_eq!(dv_other(2).await.unwrap(), 2);
        assert_eq!(dv_fetch("c".into(), 20).await.unwrap(), "c:20");
        // Same args as the source's failed call: a miss, but no divergence.
        let _ = dv_fetch("fail".into(), 1).await;
        // No call at this position in the source run: the nearest by content is named.
        dv_fetch("d".into(), 1).await.unwrap();
    })
    .await;
    let summary = s.finish().await.unwrap();
    assert_eq!(summary.counts.replayed, 1);
    let starts = starts(&store, s.run_id());
    assert_eq!(starts.len(), 5);
    let (tool, other) = &starts[1];
    assert_eq!(tool, "dv_other");
    let d = other
        .as_ref()
        .expect("dv_other(2) diverges from dv_other(1)");
    assert_eq!(d.changes[0].path, "/n");
    let d = starts[2].1.as_ref().expect("dv_fetch #1 diverges");
    assert_eq!(d.run, src);
    assert_eq!(d.position, 1);
    let paths: Vec<_> = d.changes.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(paths, ["/timeout", "/url"]);
    assert_eq!(d.changes[1].a, Some("b".into()));
    assert_eq!(d.changes[1].b, Some("c".into()));
    // The source's record of the call at that position (its step_start, or its one `call` record) is the
    // one named.
    let rec = RunReader::open(store.as_ref() as &dyn TraceStore, &src)
        .unwrap()
        .map(|r| r.unwrap())
        .find(|r| r.record.seq == d.seq)
        .unwrap();
    assert!(matches!(rec.record.body.start(), Some(s) if s.args["url"] == "b"));
    assert!(starts[3].1.is_none(), "same args: no divergence");
    let d = starts[4]
        .1
        .as_ref()
        .expect("nothing at that position: the nearest call by content");
    assert_eq!(d.position, 2, "dv_fetch(fail, 1) differs in one field");
    let paths: Vec<_> = d.changes.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(paths, ["/url"]);
}

#[tokio::test]
async fn offline_miss_names_the_recorded_call_nearest_by_content() {
    let store = Arc::new(MemoryStore::new());
    let src = source(&store).await;
    let s = Session::builder()
        .store(store.clone())
        .offline(&src)
        .open()
        .unwrap();
    // The first call was skipped: this one is the source's second with another timeout. The source's call
    // at its position (a, 10) differs in two fields, its second (b, 10) in one: that one is named.
    let err = s
        .scope(async { dv_fetch("b".into(), 11).await })
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("nearest by content: call #1 of dv_fetch")
            && msg.contains("/timeout: 10 -> 11"),
        "{msg}"
    );
    assert!(!msg.contains("/url"), "{msg}");
    s.finish().await.unwrap();
    let d = starts(&store, s.run_id())[0]
        .1
        .clone()
        .expect("the divergence is recorded");
    assert_eq!((d.run.as_str(), d.position), (src.as_str(), 1));
}

#[tokio::test]
async fn offline_miss_carries_the_diff() {
    let store = Arc::new(MemoryStore::new());
    let src = source(&store).await;
    let s = Session::builder()
        .store(store.clone())
        .offline(&src)
        .open()
        .unwrap();
    let err = s
        .scope(async {
            dv_fetch("a".into(), 10).await.unwrap();
            dv_fetch("b".into(), 99).await
        })
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("no recorded success"), "{msg}");
    assert!(
        msg.contains("diverges from call #1 of dv_fetch") && msg.contains("/timeout: 10 -> 99"),
        "{msg}"
    );
    assert!(!msg.contains("/url"), "only changed fields: {msg}");
    s.finish().await.unwrap();
    let starts = starts(&store, s.run_id());
    assert!(
        starts[1].1.is_some(),
        "the failed step records the divergence too"
    );
    let ends: Vec<_> = RunReader::open(store.as_ref() as &dyn TraceStore, s.run_id())
        .unwrap()
        .filter_map(|r| r.unwrap().record.body.end().map(|e| e.status))
        .collect();
    assert_eq!(ends, [Status::Replayed, Status::Failed]);
}
