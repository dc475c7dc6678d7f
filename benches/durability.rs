//! The cost of committing a trace record in each durability mode, and `synced` throughput (group commit)
//! at 1, 8 and 64 concurrent callers, on the JSONL store.
//!
//! `cargo bench --bench durability`. The store lives in a temporary directory under `FAILCORE_BENCH_DIR`
//! (default: the system temporary directory); put it on the disk you want to measure.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use failcore::store::{Body, Durability, Journal, JsonlStore, Status, StepEnd, TraceStore};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A typical step_end body, encoded once.
fn fields() -> Vec<u8> {
    Body::StepEnd(StepEnd {
        step: 7,
        status: Status::Ok,
        output: Some(serde_json::json!({"path": "/tmp/report.txt", "bytes": 4096})),
        output_blob: None,
        error: None,
        latency_ns: 1_234_567,
        replayed_from: None,
        saved_ns: None,
        cost: None,
        drift: Vec::new(),
        redacted: Vec::new(),
        exact: None,
        recovered: None,
        landed: None,
    })
    .encode_fields()
    .unwrap()
}

fn tempdir() -> tempfile::TempDir {
    match std::env::var_os("FAILCORE_BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(dir).unwrap(),
        None => tempfile::tempdir().unwrap(),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn commit_per_mode(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempdir();
    let store: Arc<dyn TraceStore> = Arc::new(JsonlStore::new(dir.path()));
    let fields = fields();
    let mut group = c.benchmark_group("commit");
    group.throughput(Throughput::Elements(1));
    for (i, mode) in [
        Durability::Buffered,
        Durability::Flushed,
        Durability::Synced,
    ]
    .into_iter()
    .enumerate()
    {
        let journal = Journal::open(store.clone(), &format!("commit-{i}"), mode).unwrap();
        group.bench_function(BenchmarkId::from_parameter(mode), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        journal
                            .append_encoded("step_end", fields.clone(), mode)
                            .await
                            .unwrap();
                    }
                    start.elapsed()
                })
            })
        });
        journal.close().unwrap();
    }
    group.finish();
}

fn synced_throughput(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempdir();
    let store: Arc<dyn TraceStore> = Arc::new(JsonlStore::new(dir.path()));
    let fields = fields();
    let mut group = c.benchmark_group("synced_callers");
    for callers in [1u64, 8, 64] {
        let journal = Arc::new(
            Journal::open(
                store.clone(),
                &format!("sync-{callers}"),
                Durability::Synced,
            )
            .unwrap(),
        );
        // One iteration: every caller commits one record; they wait together.
        group.throughput(Throughput::Elements(callers));
        group.bench_function(BenchmarkId::from_parameter(callers), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    let tasks: Vec<_> = (0..callers)
                        .map(|_| {
                            let journal = journal.clone();
                            let fields = fields.clone();
                            tokio::spawn(async move {
                                for _ in 0..iters {
                                    journal
                                        .append_encoded(
                                            "step_end",
                                            fields.clone(),
                                            Durability::Synced,
                                        )
                                        .await
                                        .unwrap();
                                }
                            })
                        })
                        .collect();
                    for t in tasks {
                        t.await.unwrap();
                    }
                    start.elapsed()
                })
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .sample_size(20);
    targets = commit_per_mode, synced_throughput
}
criterion_main!(benches);
