//! Per-step commit cost of each trace store backend.
//!
//! A step is what a tool call writes: a `step_start` before the body runs (write-ahead) and a `step_end`
//! after, each acknowledged at the durability asked for. Backends: memory, JSONL, SQLite (feature `sqlite`)
//! and Postgres (feature `postgres`, with `FAILCORE_PG_URL` set; the bench works in a schema of its own and
//! drops it at the end).
//!
//! `FAILCORE_PG_URL=postgres://postgres@127.0.0.1:5432/test cargo bench --features sqlite,postgres --bench stores`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use failcore::store::{Durability, Journal, MemoryStore, TraceStore};
use std::sync::Arc;
use std::time::Duration;

fn backends(dir: &std::path::Path) -> Vec<(&'static str, Arc<dyn TraceStore>)> {
    let mut out: Vec<(&'static str, Arc<dyn TraceStore>)> = vec![
        ("memory", Arc::new(MemoryStore::new())),
        (
            "jsonl",
            failcore::store_from_spec(&format!("jsonl:{}", dir.join("jsonl").display()))
                .expect("jsonl store"),
        ),
    ];
    if cfg!(feature = "sqlite") {
        let spec = format!("sqlite:{}", dir.join("bench.db").display());
        out.push((
            "sqlite",
            failcore::store_from_spec(&spec).expect("sqlite store"),
        ));
    }
    if cfg!(feature = "postgres") {
        match std::env::var("FAILCORE_PG_URL") {
            Ok(url) if !url.is_empty() => {
                let sep = if url.contains('?') { '&' } else { '?' };
                let spec = format!("{url}{sep}failcore_schema={}", pg_schema());
                drop_pg_schema(&url);
                out.push((
                    "postgres",
                    failcore::store_from_spec(&spec).expect("postgres store"),
                ));
            }
            _ => eprintln!("postgres left out: set FAILCORE_PG_URL to bench it"),
        }
    }
    out
}

fn pg_schema() -> String {
    format!("fc_bench_{}", std::process::id())
}

#[cfg(feature = "postgres")]
fn drop_pg_schema(url: &str) {
    if let Ok(mut c) = postgres::Client::connect(url, postgres::NoTls) {
        let _ = c.batch_execute(&format!(
            "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
            pg_schema()
        ));
    }
}

#[cfg(not(feature = "postgres"))]
fn drop_pg_schema(_: &str) {}

fn step_commit(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let start = br#"{"step":0,"tool":"fetch","fp":"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08","occ":0,"args":{"url":"https://example.com/a"},"decision":{"outcome":"allow"}}"#;
    let end =
        br#"{"step":0,"status":"ok","output":{"status":200,"bytes":5120},"latency_ns":1200000}"#;
    let mut group = c.benchmark_group("step_commit");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for durability in [Durability::Flushed, Durability::Synced] {
        for (name, store) in backends(dir.path()) {
            let run = format!("bench-{name}-{durability}");
            let journal = Journal::open(store.clone(), &run, durability).expect("journal");
            group.bench_function(BenchmarkId::new(durability.as_str(), name), |b| {
                b.iter(|| {
                    rt.block_on(async {
                        journal
                            .append_encoded("step_start", start.to_vec(), durability)
                            .await
                            .expect("step_start");
                        journal
                            .append_encoded("step_end", end.to_vec(), durability)
                            .await
                            .expect("step_end");
                    })
                })
            });
            journal.close().expect("close");
        }
    }
    group.finish();
    if let Ok(url) = std::env::var("FAILCORE_PG_URL") {
        drop_pg_schema(&url);
    }
}

criterion_group!(benches, step_commit);
criterion_main!(benches);
