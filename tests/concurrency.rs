//! Concurrency: 1,000 tool calls from 100 tasks on a multi-threaded runtime, into one run.

use failcore::store::{verify, Durability, JsonlStore, RunReader, Status};
use failcore::{Error, Session};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

static EXECUTED: AtomicUsize = AtomicUsize::new(0);

#[failcore::tool(effect = "pure")]
async fn conc_square(task: u64, k: u64) -> Result<u64, Error> {
    EXECUTED.fetch_add(1, Ordering::SeqCst);
    tokio::task::yield_now().await;
    Ok((task * 10 + k) * (task * 10 + k))
}

async fn calls(session: &Session) -> BTreeSet<u64> {
    session
        .scope(async {
            let tasks: Vec<_> = (0..100u64)
                .map(|task| {
                    failcore::spawn(async move {
                        let mut got = Vec::new();
                        for k in 0..10u64 {
                            got.push(conc_square(task, k).await.unwrap());
                        }
                        got
                    })
                })
                .collect();
            let mut all = BTreeSet::new();
            for t in tasks {
                all.extend(t.await.unwrap());
            }
            all
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_calls_from_a_hundred_tasks_are_all_recorded_and_all_served_on_resume() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(JsonlStore::new(dir.path()));
    let expected: BTreeSet<u64> = (0..1000u64).map(|n| n * n).collect();

    for durability in [
        Durability::Synced,
        Durability::Flushed,
        Durability::Buffered,
    ] {
        let before = EXECUTED.load(Ordering::SeqCst);
        let session = Session::builder()
            .store(store.clone())
            .durability(durability)
            .open()
            .unwrap();
        assert_eq!(calls(&session).await, expected);
        session.finish().await.unwrap();
        assert_eq!(EXECUTED.load(Ordering::SeqCst) - before, 1000);
        let run = session.run_id().to_owned();

        // All recorded, seq dense, chain valid, run_end consistent.
        let report = verify(RunReader::open(store.as_ref(), &run).unwrap());
        assert!(report.is_ok(), "{durability}: {:?}", report.fault);
        // The tool is pure: one `call` record per call.
        assert_eq!(report.records, 1 + 1000 + 1);
        let mut outputs = BTreeSet::new();
        for rec in RunReader::open(store.as_ref(), &run).unwrap() {
            if let Some(e) = rec.unwrap().record.body.end() {
                assert_eq!(e.status, Status::Ok);
                outputs.insert(e.output.as_ref().unwrap().as_u64().unwrap());
            }
        }
        assert_eq!(outputs, expected);

        // Resume serves every one of them: nothing executes.
        let before = EXECUTED.load(Ordering::SeqCst);
        let resumed = Session::builder()
            .store(store.clone())
            .durability(durability)
            .resume(run.clone())
            .open()
            .unwrap();
        assert_eq!(resumed.resume_report().unwrap().successes, 1000);
        assert_eq!(calls(&resumed).await, expected);
        let summary = resumed.finish().await.unwrap();
        assert_eq!(EXECUTED.load(Ordering::SeqCst), before, "{durability}");
        assert_eq!(summary.counts.replayed, 1000);
        let report = verify(RunReader::open(store.as_ref(), resumed.run_id()).unwrap());
        assert!(report.is_ok(), "{durability}: {:?}", report.fault);
    }
}
