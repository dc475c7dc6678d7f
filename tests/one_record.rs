//! Format 2 writes a pure or read call as one `call` record once its body is done, with no intent written
//! ahead. A call made inside one still finds its parent's `step_start` before its own records: the deferred
//! intents of its callers are written first, outermost first. A cut-off pure call leaves nothing; a
//! cancelled one is one `call` record; every shape resumes with nothing run again.

use failcore::store::{verify, Body, JsonlStore, MemoryStore, RunReader, Status, TraceStore};
use failcore::{Error, Session};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

static RAN: AtomicUsize = AtomicUsize::new(0);

/// Held by each test that runs the counted tools: the test that counts them sees only its own calls.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[failcore::tool(effect = "pure")]
async fn or_add(a: i64, b: i64) -> Result<i64, Error> {
    RAN.fetch_add(1, Ordering::SeqCst);
    Ok(a + b)
}

#[failcore::tool(effect = "write")]
async fn or_write(n: i64) -> Result<i64, Error> {
    RAN.fetch_add(1, Ordering::SeqCst);
    Ok(n * 2)
}

/// Pure, calling a pure tool twice.
#[failcore::tool(effect = "pure")]
async fn or_sum3(a: i64, b: i64, c: i64) -> Result<i64, Error> {
    RAN.fetch_add(1, Ordering::SeqCst);
    or_add(or_add(a, b).await?, c).await
}

/// Read, calling a pure tool that calls a write tool: three levels of deferral, written outermost first.
#[failcore::tool(effect = "read")]
async fn or_read_deep(n: i64) -> Result<i64, Error> {
    RAN.fetch_add(1, Ordering::SeqCst);
    or_pure_writes(n).await
}

#[failcore::tool(effect = "pure")]
async fn or_pure_writes(n: i64) -> Result<i64, Error> {
    RAN.fetch_add(1, Ordering::SeqCst);
    or_write(n).await
}

#[failcore::tool(effect = "pure")]
async fn or_hangs(n: i64) -> Result<i64, Error> {
    std::future::pending::<()>().await;
    Ok(n)
}

async fn workload() {
    assert_eq!(or_add(1, 2).await.unwrap(), 3);
    assert_eq!(or_sum3(1, 2, 3).await.unwrap(), 6);
    assert_eq!(or_read_deep(5).await.unwrap(), 10);
}

/// Each record of `run`: (kind, tool, step, parent).
fn shape(store: &dyn TraceStore, run: &str) -> Vec<(&'static str, String, u64, Option<u64>)> {
    let mut tools = std::collections::HashMap::new();
    RunReader::open(store, run)
        .unwrap()
        .filter_map(|r| {
            let body = r.unwrap().record.body;
            if let Some(s) = body.start() {
                tools.insert(s.step, (s.tool.clone(), s.parent));
            }
            let step = body
                .start()
                .map(|s| s.step)
                .or(body.end().map(|e| e.step))?;
            let (tool, parent) = tools[&step].clone();
            Some((body.kind(), tool, step, parent))
        })
        .collect()
}

#[tokio::test]
async fn nested_calls_find_their_callers_intents_written_first() {
    let _serial = SERIAL.lock().await;
    let store = Arc::new(MemoryStore::new());
    let s = Session::builder().store(store.clone()).open().unwrap();
    s.scope(workload()).await;
    s.finish().await.unwrap();
    let t = |k: &'static str, tool: &str, step: u64, parent: Option<u64>| {
        (k, tool.to_owned(), step, parent)
    };
    assert_eq!(
        shape(store.as_ref(), s.run_id()),
        [
            // Alone: one record.
            t("call", "or_add", 0, None),
            // The first nested record writes its caller's intent first; the caller then ends with a
            // step_end.
            t("step_start", "or_sum3", 1, None),
            t("call", "or_add", 2, Some(1)),
            t("call", "or_add", 3, Some(1)),
            t("step_end", "or_sum3", 1, None),
            // A write three levels down: both deferred callers' intents, outermost first, then its own
            // intent ahead of its body.
            t("step_start", "or_read_deep", 4, None),
            t("step_start", "or_pure_writes", 5, Some(4)),
            t("step_start", "or_write", 6, Some(5)),
            t("step_end", "or_write", 6, Some(5)),
            t("step_end", "or_pure_writes", 5, Some(4)),
            t("step_end", "or_read_deep", 4, None),
        ]
    );
    let report = verify(RunReader::open(store.as_ref(), s.run_id()).unwrap());
    assert!(report.is_ok(), "{:?}", report.fault);

    // Resumed, every call is served: nothing runs, and each replay is one record.
    let ran = RAN.load(Ordering::SeqCst);
    let r = Session::builder()
        .store(store.clone())
        .resume(s.run_id())
        .open()
        .unwrap();
    r.scope(async {
        assert_eq!(or_add(1, 2).await.unwrap(), 3);
        assert_eq!(or_sum3(1, 2, 3).await.unwrap(), 6);
        assert_eq!(or_read_deep(5).await.unwrap(), 10);
    })
    .await;
    r.finish().await.unwrap();
    assert_eq!(RAN.load(Ordering::SeqCst), ran, "a recorded call ran again");
    let kinds: Vec<_> = shape(store.as_ref(), r.run_id())
        .into_iter()
        .map(|(k, ..)| k)
        .collect();
    assert_eq!(kinds, ["call", "call", "call"]);
}

#[tokio::test]
async fn a_pure_call_cut_off_leaves_nothing_and_a_cancelled_one_is_one_record() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(JsonlStore::new(dir.path()));
    let s = Session::builder().store(store.clone()).open().unwrap();
    let run = s.run_id().to_owned();
    s.scope(async { assert_eq!(or_add(2, 2).await.unwrap(), 4) })
        .await;
    let hanging = {
        let s = s.clone();
        tokio::spawn(async move { s.scope(or_hangs(1)).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    // What a crash now leaves: the finished call, nothing of the one whose body is running.
    let kinds = |store: &JsonlStore| -> Vec<(String, Option<Status>)> {
        RunReader::open(store, &run)
            .unwrap()
            .map(|r| {
                let body = r.unwrap().record.body;
                (body.kind().to_owned(), body.end().map(|e| e.status))
            })
            .collect()
    };
    assert_eq!(
        kinds(store.as_ref()),
        [
            ("run_start".to_owned(), None),
            ("call".to_owned(), Some(Status::Ok))
        ]
    );
    // Dropped mid-body: one record, cancelled.
    hanging.abort();
    assert!(hanging.await.unwrap_err().is_cancelled());
    s.finish().await.unwrap();
    let all = kinds(store.as_ref());
    assert_eq!(all[2], ("call".to_owned(), Some(Status::Cancelled)));
    assert!(matches!(
        RunReader::open(store.as_ref(), &run)
            .unwrap()
            .last()
            .unwrap()
            .unwrap()
            .record
            .body,
        Body::RunEnd(_)
    ));
    let report = verify(RunReader::open(store.as_ref(), &run).unwrap());
    assert!(report.is_ok(), "{:?}", report.fault);
}

struct AskFirst;
impl failcore::Policy for AskFirst {
    fn name(&self) -> &str {
        "ask_first"
    }
    fn check(
        &self,
        _: &failcore::CallView<'_>,
    ) -> Result<failcore::Verdict, failcore::PolicyError> {
        Ok(failcore::Verdict::Ask {
            reason: "a person decides".into(),
        })
    }
}

/// An approver that never answers.
struct Never;
impl failcore::Approver for Never {
    fn approve<'a>(
        &'a self,
        _: &'a failcore::ApprovalRequest,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + 'a>> {
        Box::pin(std::future::pending())
    }
}

#[tokio::test]
async fn a_call_dropped_while_its_approval_is_pending_is_recorded_and_the_run_verifies() {
    let _serial = SERIAL.lock().await;
    let store = Arc::new(MemoryStore::new());
    let s = Session::builder()
        .store(store.clone())
        .guard(AskFirst)
        .approval(Never)
        .open()
        .unwrap();
    let waited =
        tokio::time::timeout(std::time::Duration::from_millis(50), s.scope(or_write(1))).await;
    assert!(waited.is_err(), "the approval never answers");
    s.finish().await.unwrap();
    let report = verify(RunReader::open(store.as_ref(), s.run_id()).unwrap());
    assert!(report.is_ok(), "{:?}", report.fault);
    let ends: Vec<Status> = RunReader::open(store.as_ref(), s.run_id())
        .unwrap()
        .filter_map(|r| r.unwrap().record.body.end().map(|e| e.status))
        .collect();
    assert_eq!(ends, [Status::Cancelled]);
}

/// Pure, making ten calls at once from tasks of its own.
#[failcore::tool(effect = "pure")]
async fn or_fan_out(n: i64) -> Result<i64, Error> {
    let tasks: Vec<_> = (0..10)
        .map(|i| failcore::spawn(or_write(n * 100 + i)))
        .collect();
    let mut sum = 0;
    for t in tasks {
        sum += t.await.expect("task")?;
    }
    Ok(sum)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_nested_calls_write_their_callers_intent_once_and_first() {
    let _serial = SERIAL.lock().await;
    let store = Arc::new(MemoryStore::new());
    let s = Session::builder().store(store.clone()).open().unwrap();
    let sum = s.scope(or_fan_out(1)).await.unwrap();
    assert_eq!(sum, (0..10).map(|i| (100 + i) * 2).sum::<i64>());
    s.finish().await.unwrap();
    let records = shape(store.as_ref(), s.run_id());
    let outer: Vec<_> = records.iter().filter(|r| r.1 == "or_fan_out").collect();
    assert_eq!(
        outer.iter().map(|r| r.0).collect::<Vec<_>>(),
        ["step_start", "step_end"],
        "{records:?}"
    );
    assert_eq!(
        records[0].0, "step_start",
        "the intent comes first: {records:?}"
    );
    assert_eq!(records.last().unwrap().0, "step_end", "{records:?}");
    assert_eq!(records.len(), 2 + 2 * 10);
    let report = verify(RunReader::open(store.as_ref(), s.run_id()).unwrap());
    assert!(report.is_ok(), "{:?}", report.fault);
}

/// A tool's future holds its arguments, not its body's future: a call three levels deep is no larger a
/// future than a leaf call (in a build without optimizations each level's future is copied on the stack,
/// and nested futures of 60 KiB overflowed a 2 MiB thread at three levels).
#[test]
fn nested_calls_do_not_grow_their_callers_futures() {
    let leaf = std::mem::size_of_val(&or_add(1, 2));
    let deep = std::mem::size_of_val(&or_read_deep(1));
    assert!(
        deep <= leaf + 256,
        "leaf {leaf} bytes, three levels {deep} bytes"
    );
}
