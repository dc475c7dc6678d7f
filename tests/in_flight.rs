//! Write-ahead intent and in-flight steps: the step_start is in the file before the body runs; a run that
//! dies mid-body leaves intents with no outcome, which a resumed session reports, re-executes, or refuses
//! for `write`/`exec` tools under `on_in_flight = block`. A `read` (or `pure`) tool's intent is not written
//! ahead: it is written with its outcome as one `call` record, and a run that dies mid-read leaves nothing
//! of the read, which simply runs again.

use failcore::store::{verify, Body, Durability, FaultKind, JsonlStore, RunReader, TraceStore};
use failcore::{Error, InFlight, Session};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

static HANG: AtomicBool = AtomicBool::new(true);
static WRITES: AtomicUsize = AtomicUsize::new(0);
static READS: AtomicUsize = AtomicUsize::new(0);

tokio::task_local! {
    static ENTERED: mpsc::UnboundedSender<&'static str>;
}

async fn maybe_hang(name: &'static str) {
    // Decide before signalling: once the test hears "entered" it may clear HANG, and a body that had not
    // looked yet would run on.
    let hang = HANG.load(Ordering::SeqCst);
    let _ = ENTERED.try_with(|tx| tx.send(name));
    if hang {
        std::future::pending::<()>().await;
    }
}

#[failcore::tool(effect = "write")]
async fn if_write(key: String) -> Result<usize, Error> {
    maybe_hang("write").await;
    WRITES.fetch_add(1, Ordering::SeqCst);
    Ok(key.len())
}

#[failcore::tool(effect = "read")]
async fn if_read(key: String) -> Result<usize, Error> {
    maybe_hang("read").await;
    READS.fetch_add(1, Ordering::SeqCst);
    Ok(key.len())
}

fn resume(store: &Arc<JsonlStore>, run: &str, what: InFlight) -> Session {
    Session::builder()
        .store(store.clone())
        .resume(run)
        .on_in_flight(what)
        .open()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intents_are_written_ahead_and_in_flight_steps_rerun_or_are_blocked_on_resume() {
    for durability in [Durability::Flushed, Durability::Synced] {
        HANG.store(true, Ordering::SeqCst);
        let live_dir = tempfile::tempdir().unwrap();
        let live = Arc::new(JsonlStore::new(live_dir.path()));
        let session = Session::builder()
            .store(live.clone())
            .durability(durability)
            .open()
            .unwrap();
        let run = session.run_id().to_owned();

        // Two calls enter their bodies and hang there.
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut tasks = Vec::new();
        for which in ["write", "read"] {
            let s = session.clone();
            let tx = tx.clone();
            tasks.push(tokio::spawn(ENTERED.scope(tx, async move {
                s.scope(async move {
                    if which == "write" {
                        if_write("k".into()).await
                    } else {
                        if_read("k".into()).await
                    }
                })
                .await
            })));
        }
        let mut entered = vec![rx.recv().await.unwrap(), rx.recv().await.unwrap()];
        entered.sort();
        assert_eq!(entered, ["read", "write"]);

        // The bodies are running: both intents are already in the file, with no outcome. Copy the file
        // now: it is what a crash at this moment leaves behind.
        let bytes = std::fs::read(live.run_path(&run)).unwrap();
        let crashed_dir = tempfile::tempdir().unwrap();
        let crashed = Arc::new(JsonlStore::new(crashed_dir.path()));
        std::fs::create_dir_all(crashed_dir.path().join("runs")).unwrap();
        std::fs::write(crashed.run_path(&run), &bytes).unwrap();
        let mut starts = Vec::new();
        for rec in RunReader::open(crashed.as_ref(), &run).unwrap() {
            let body = rec.unwrap().record.body;
            if let Some(e) = body.end() {
                panic!("no step has ended yet: {e:?}");
            }
            if let Body::StepStart(s) = body {
                starts.push(s.tool);
            }
        }
        assert_eq!(
            starts,
            ["if_write"],
            "{durability}: the write's intent is written before its body runs, the read's is not"
        );
        let report = verify(RunReader::open(crashed.as_ref(), &run).unwrap());
        assert_eq!(report.fault.unwrap().kind, FaultKind::Incomplete);
        for t in &tasks {
            t.abort();
        }
        HANG.store(false, Ordering::SeqCst);

        // Resume with on_in_flight = block: the write is refused, the read runs again.
        let (writes, reads) = (WRITES.load(Ordering::SeqCst), READS.load(Ordering::SeqCst));
        let blocked = resume(&crashed, &run, InFlight::Block);
        let report = blocked.resume_report().unwrap();
        assert_eq!(report.in_flight.len(), 1);
        assert_eq!(report.in_flight[0].tool, "if_write");
        assert!(!report.complete);
        let (w, r) = blocked
            .scope(async { (if_write("k".into()).await, if_read("k".into()).await) })
            .await;
        assert!(matches!(w, Err(Error::Blocked { .. })), "{w:?}");
        assert_eq!(r.unwrap(), 1);
        assert_eq!(WRITES.load(Ordering::SeqCst), writes);
        assert_eq!(READS.load(Ordering::SeqCst), reads + 1);
        // Only the in-flight occurrence is refused: the next identical write runs.
        let again = blocked.scope(if_write("k".into())).await;
        assert_eq!(again.unwrap(), 1);
        blocked.finish().await.unwrap();

        // Resume with rerun (the default): both run again.
        let rerun = resume(&crashed, &run, InFlight::Rerun);
        let (w, r) = rerun
            .scope(async { (if_write("k".into()).await, if_read("k".into()).await) })
            .await;
        assert_eq!((w.unwrap(), r.unwrap()), (1, 1));
        rerun.finish().await.unwrap();
        for s in [blocked.run_id(), rerun.run_id()] {
            let report = verify(RunReader::open(crashed.as_ref(), s).unwrap());
            assert!(report.is_ok(), "{:?}", report.fault);
        }
        assert!(crashed.runs().unwrap().len() == 3);
    }
}

static SENT: AtomicUsize = AtomicUsize::new(0);

/// A write whose provider answers as `how` says: `unknown` (sent, no verdict), `refused` (refused before
/// acting), `ok_after_doubt` (a doubt reported, then a verdict: it succeeded).
#[failcore::tool(effect = "write")]
async fn send_payment(how: String) -> Result<String, Error> {
    SENT.fetch_add(1, Ordering::SeqCst);
    match how.as_str() {
        "unknown" => {
            failcore::report_landed(failcore::Landed::Unknown)?;
            Err(Error::Config("the provider did not answer".into()))
        }
        "refused" => {
            failcore::report_landed(failcore::Landed::No)?;
            Err(Error::Config("the provider refused the request".into()))
        }
        _ => {
            failcore::report_landed(failcore::Landed::Unknown)?;
            Ok("paid".into())
        }
    }
}

/// `(status, landed, recovered, rule)` of a call.
type Outcome = (String, Option<String>, Option<String>, Option<String>);

/// The outcome of each call of `run`, in order.
fn outcomes(store: &JsonlStore, run: &str) -> Vec<Outcome> {
    let mut out = Vec::new();
    let mut rules = std::collections::HashMap::new();
    for r in RunReader::open(store, run).unwrap() {
        let body = r.unwrap().record.body;
        if let Some(s) = body.start() {
            rules.insert(s.step, s.decision.rule.clone());
        }
        if let Some(e) = body.end() {
            let rule = rules.get(&e.step).cloned().flatten();
            out.push((
                e.status.as_str().to_owned(),
                e.landed.map(|l| l.as_str().to_owned()),
                e.recovered.map(|r| r.as_str().to_owned()),
                rule,
            ));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_failed_with_its_effect_unknown_is_recovered_on_resume_as_one_in_flight() {
    let _outside = failcore::report_landed(failcore::Landed::No)
        .expect_err("outside a tool body there is no call to report on");
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(JsonlStore::new(dir.path()));
    let session = Session::builder().store(store.clone()).open().unwrap();
    let first = session.run_id().to_owned();
    session
        .scope(async {
            assert!(send_payment("unknown".into()).await.is_err());
            assert!(send_payment("refused".into()).await.is_err());
            assert_eq!(send_payment("ok_after_doubt".into()).await.unwrap(), "paid");
        })
        .await;
    session.finish().await.unwrap();
    let recorded = outcomes(&store, &first);
    let landed: Vec<_> = recorded
        .iter()
        .map(|o| (o.0.as_str(), o.1.as_deref()))
        .collect();
    assert_eq!(
        landed,
        [
            ("failed", Some("unknown")),
            ("failed", Some("no")),
            ("ok", None)
        ],
        "a doubt is recorded on failures only"
    );

    // Under `block`, the call whose effect is unknown is held back; the refused one runs again; the
    // success is served.
    SENT.store(0, Ordering::SeqCst);
    let blocked = resume(&store, &first, InFlight::Block);
    let doubts = blocked.resume_report().unwrap().in_flight.clone();
    assert_eq!(doubts.len(), 1, "{doubts:?}");
    assert!(doubts[0].effect_unknown);
    assert_eq!(doubts[0].tool, "send_payment");
    let second = blocked.run_id().to_owned();
    blocked
        .scope(async {
            let err = send_payment("unknown".into()).await.unwrap_err();
            assert!(err.to_string().contains("effect"), "{err}");
            assert!(send_payment("refused".into()).await.is_err());
            assert_eq!(send_payment("ok_after_doubt".into()).await.unwrap(), "paid");
        })
        .await;
    blocked.finish().await.unwrap();
    assert_eq!(
        SENT.load(Ordering::SeqCst),
        1,
        "only the refused call ran again"
    );
    let rules: Vec<_> = outcomes(&store, &second)
        .into_iter()
        .map(|o| (o.0, o.3))
        .collect();
    assert_eq!(
        rules[0],
        ("blocked".to_owned(), Some("resume.in_flight".to_owned()))
    );
    assert_eq!(rules[2].0, "replayed");

    // Under `rerun` (the default), it runs again and says it was recovered so.
    SENT.store(0, Ordering::SeqCst);
    let rerun = resume(&store, &first, InFlight::Rerun);
    let third = rerun.run_id().to_owned();
    rerun
        .scope(async {
            assert!(send_payment("unknown".into()).await.is_err());
        })
        .await;
    rerun.finish().await.unwrap();
    assert_eq!(SENT.load(Ordering::SeqCst), 1);
    let again = outcomes(&store, &third);
    assert_eq!(again[0].2.as_deref(), Some("retried"), "{again:?}");
    assert_eq!(
        again[0].1.as_deref(),
        Some("unknown"),
        "still unknown: {again:?}"
    );
}
