//! What FailCore adds to a tool call (DESIGN §10), beside the bare call measured in the same run.
//!
//! `cargo bench --bench overhead`. Figures and the machine they were measured on: docs/BENCHMARKS.md.

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use failcore::store::seal::SealKey;
use failcore::store::{MemoryStore, RunReader, TraceStore};
use failcore::{Durability, Session};
use std::sync::Arc;
use std::time::Duration;

use failcore::ToolError as E;

#[inline(never)]
async fn add_bare(a: i64, b: i64) -> Result<i64, E> {
    Ok(std::hint::black_box(a) + b)
}

#[failcore::tool(effect = "pure")]
async fn add(a: i64, b: i64) -> Result<i64, E> {
    Ok(std::hint::black_box(a) + b)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn calls(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let mut g = c.benchmark_group("call");
    g.measurement_time(Duration::from_secs(4));
    let mut i = 0i64;
    g.bench_function("bare", |b| {
        b.iter(|| {
            i += 1;
            rt.block_on(add_bare(i, 1))
        })
    });
    let memory = Session::builder()
        .store(Arc::new(MemoryStore::new()))
        .open()
        .expect("session");
    g.bench_function("guarded/memory/flushed", |b| {
        b.iter(|| {
            i += 1;
            rt.block_on(memory.scope(add(i, 1)))
        })
    });
    for d in [Durability::Buffered, Durability::Flushed] {
        let s = Session::builder()
            .dir(dir.path().join(d.as_str()))
            .durability(d)
            .open()
            .expect("session");
        g.bench_function(BenchmarkId::new("guarded/jsonl", d.as_str()), |b| {
            b.iter(|| {
                i += 1;
                rt.block_on(s.scope(add(i, 1)))
            })
        });
    }
    g.sample_size(20);
    let synced = Session::builder()
        .dir(dir.path().join("synced"))
        .durability(Durability::Synced)
        .open()
        .expect("session");
    g.bench_function("guarded/jsonl/synced", |b| {
        b.iter(|| {
            i += 1;
            rt.block_on(synced.scope(add(i, 1)))
        })
    });
    g.finish();

    // Replay hits: a run of 200,000 recorded calls, resumed; each iteration is served from the index.
    let store: Arc<dyn TraceStore> = Arc::new(MemoryStore::new());
    let source = Session::builder()
        .store(store.clone())
        .durability(Durability::Buffered)
        .open()
        .expect("session");
    rt.block_on(source.scope(async {
        for k in 0..200_000 {
            let _ = add(k, 1).await;
        }
    }));
    rt.block_on(source.finish()).expect("finish");
    let resumed = Session::builder()
        .store(store)
        .durability(Durability::Buffered)
        .resume(source.run_id())
        .open()
        .expect("resume");
    let mut k = 0i64;
    c.bench_function("call/replay_hit", |b| {
        b.iter(|| {
            k += 1;
            rt.block_on(resumed.scope(add(k % 200_000, 1)))
        })
    });
}

fn fingerprints(c: &mut Criterion) {
    let small = serde_json::json!({"a": 1, "b": 2});
    let big: Vec<String> = (0..1024).map(|i| format!("{i:0>96}")).collect(); // ~100 KiB
    let mut g = c.benchmark_group("fingerprint");
    for (name, value) in [
        ("small", small),
        ("100KiB", serde_json::json!({ "rows": big })),
    ] {
        let bytes = failcore::canonical_json(&value).expect("canonical").len() as u64;
        g.throughput(Throughput::Bytes(bytes));
        g.bench_function(name, |b| {
            b.iter(|| {
                let canonical = failcore::canonical_json(&value).expect("canonical");
                failcore::fingerprint("tool", "1", &canonical)
            })
        });
    }
    g.finish();
}

/// A finished run of 100,000 `add` calls in `dir`, signed with `key` when given.
fn source_run(rt: &tokio::runtime::Runtime, dir: &std::path::Path, key: Option<SealKey>) -> String {
    let mut builder = Session::builder().dir(dir).durability(Durability::Buffered);
    if let Some(key) = key {
        builder = builder.signing_key(key);
    }
    let source = builder.open().expect("session");
    rt.block_on(source.scope(async {
        for k in 0..100_000 {
            let _ = add(k, 1).await;
        }
    }));
    rt.block_on(source.finish()).expect("finish");
    source.run_id().to_owned()
}

/// Resume loads the source run through the verified reader (every check of `verify`: chain, seq, run id,
/// structure, and the checkpoint signatures of a signed run). Beside it, the floor: reading the same
/// file's lines with no decoding at all.
fn resume_index(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let run = source_run(&rt, dir.path(), None);
    let signed_dir = tempfile::tempdir().expect("tempdir");
    let signed = source_run(&rt, signed_dir.path(), Some(SealKey::from_seed([1; 32])));
    let mut g = c.benchmark_group("resume");
    g.sample_size(10);
    g.bench_function("read_lines_100k_steps_baseline", |b| {
        let store = failcore::store::JsonlStore::new(dir.path());
        b.iter(|| {
            let mut reader = RunReader::open(&store, &run).expect("open");
            let mut n = 0u64;
            while let Some(line) = reader.next_line() {
                n += line.expect("line").1.len() as u64;
            }
            std::hint::black_box(n)
        })
    });
    for (name, dir, run) in [
        ("load_and_index_100k_steps", dir.path(), &run),
        (
            "load_and_index_100k_steps_signed",
            signed_dir.path(),
            &signed,
        ),
    ] {
        g.bench_function(name, |b| {
            b.iter_batched(
                || (),
                |()| {
                    Session::builder()
                        .dir(dir)
                        .durability(Durability::Buffered)
                        .resume(run)
                        .open()
                        .expect("resume")
                },
                BatchSize::PerIteration,
            )
        });
    }

    // The same 100,000 successes spread over a chain of 10 runs, each resuming the one before: resuming the
    // last one loads and indexes the whole ancestry.
    let chain_dir = tempfile::tempdir().expect("tempdir");
    let mut last: Option<String> = None;
    for part in 0..10i64 {
        let mut b = Session::builder()
            .dir(chain_dir.path())
            .durability(Durability::Buffered);
        if let Some(run) = &last {
            b = b.resume(run);
        }
        let s = b.open().expect("session");
        rt.block_on(s.scope(async {
            for k in part * 10_000..(part + 1) * 10_000 {
                let _ = add(k, 1).await;
            }
        }));
        rt.block_on(s.finish()).expect("finish");
        last = Some(s.run_id().to_owned());
    }
    let tip = last.expect("ten runs");
    g.bench_function("load_and_index_100k_steps_over_10_runs", |b| {
        b.iter_batched(
            || (),
            |()| {
                let s = Session::builder()
                    .dir(chain_dir.path())
                    .durability(Durability::Buffered)
                    .resume(&tip)
                    .open()
                    .expect("resume");
                assert_eq!(s.resume_report().map(|r| r.successes), Some(100_000));
                s
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, calls, fingerprints, resume_index);
criterion_main!(benches);
