//! `FAILCORE_PG_URL=postgres://postgres@127.0.0.1:5432/test cargo run --release --features sqlite,postgres
//! --example fleet`: many concurrent runs in one process, on each store.
//!
//! For 1, 64 and 2,000 concurrent runs, each making guarded calls back to back from its own task for a
//! fixed time, on a runtime of 2 worker threads: aggregate steps (calls) per second, p50 and p99 step
//! latency, threads, memory per open run, and for Postgres the connections the store holds. Each store in
//! `flushed` and `synced`. Without `FAILCORE_PG_URL` the Postgres rows are skipped. docs/BENCHMARKS.md has
//! figures.

use failcore::store::{JsonlStore, PgStore, SqliteStore, TraceStore};
use failcore::{Durability, Session};
use std::sync::Arc;
use std::time::{Duration, Instant};

use failcore::ToolError as E;

#[path = "common/process.rs"]
mod process;
use process::{heap, threads};

#[failcore::tool(effect = "pure")]
async fn fleet_add(a: i64, b: i64) -> Result<i64, E> {
    Ok(std::hint::black_box(a) + b)
}

#[inline(never)]
async fn bare_add(a: i64, b: i64) -> Result<i64, E> {
    Ok(std::hint::black_box(a) + b)
}

/// The Postgres store itself, to ask it how many connections it holds.
type PgHandle = Option<Arc<PgStore>>;

/// How long each configuration makes calls.
const SECONDS: f64 = 2.0;

struct Outcome {
    steps_per_s: f64,
    p50_us: f64,
    p99_us: f64,
    threads: usize,
    kib_per_run: f64,
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p) as usize).min(sorted.len() - 1);
    sorted[i] as f64 / 1000.0
}

/// `runs` runs open at once, each calling back to back for [`SECONDS`]; `None` store: the bare call.
fn measure(
    rt: &tokio::runtime::Runtime,
    store: Option<&Arc<dyn TraceStore>>,
    runs: usize,
    durability: Durability,
) -> Outcome {
    let heap0 = heap();
    let sessions: Vec<Option<Session>> = (0..runs)
        .map(|_| {
            store.map(|store| {
                Session::builder()
                    .store(store.clone())
                    .durability(durability)
                    .open()
                    .expect("open a run")
            })
        })
        .collect();
    let kib_per_run = heap().saturating_sub(heap0) as f64 / runs as f64 / 1024.0;
    let threads = threads();
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(SECONDS);
    let latencies: Vec<u64> = rt.block_on(async {
        let tasks: Vec<_> = sessions
            .iter()
            .cloned()
            .enumerate()
            .map(|(r, s)| {
                tokio::spawn(async move {
                    let mut lat = Vec::new();
                    let mut i = 0i64;
                    let calls = async {
                        while Instant::now() < deadline {
                            let t = Instant::now();
                            match &s {
                                Some(_) => {
                                    fleet_add(r as i64, i).await.expect("call");
                                }
                                None => {
                                    bare_add(r as i64, i).await.expect("call");
                                    // The bare call never yields; let the other runs have a turn.
                                    tokio::task::yield_now().await;
                                }
                            }
                            lat.push(t.elapsed().as_nanos() as u64);
                            i += 1;
                        }
                    };
                    match &s {
                        Some(s) => s.scope(calls).await,
                        None => calls.await,
                    }
                    lat
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.expect("task"));
        }
        all
    });
    let elapsed = started.elapsed().as_secs_f64();
    rt.block_on(async {
        for s in sessions.iter().flatten() {
            s.finish().await.expect("finish");
        }
    });
    let mut sorted = latencies;
    sorted.sort_unstable();
    Outcome {
        steps_per_s: sorted.len() as f64 / elapsed,
        p50_us: percentile(&sorted, 0.5),
        p99_us: percentile(&sorted, 0.99),
        threads,
        kib_per_run,
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = std::env::temp_dir().join(format!("failcore-fleet-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let mut stores: Vec<(&str, Arc<dyn TraceStore>, PgHandle)> = vec![
        ("JSONL", Arc::new(JsonlStore::new(dir.join("jsonl"))), None),
        (
            "SQLite",
            Arc::new(SqliteStore::open(dir.join("fleet.db")).expect("sqlite")),
            None,
        ),
    ];
    let schema = format!("fc_fleet_bench_{}", std::process::id());
    match std::env::var("FAILCORE_PG_URL") {
        Ok(url) if !url.is_empty() => {
            let pg = Arc::new(PgStore::open_in_schema(&url, &schema).expect("postgres"));
            stores.push(("Postgres", pg.clone(), Some(pg)));
        }
        _ => eprintln!("Postgres skipped: set FAILCORE_PG_URL to include it"),
    }
    println!(
        "{:<9} {:<8} {:>6} {:>12} {:>10} {:>10} {:>8} {:>13} {:>6}",
        "store", "mode", "runs", "steps/s", "p50 µs", "p99 µs", "threads", "heap KiB/run", "conns"
    );
    for runs in [1, 64, 2000] {
        let o = measure(&rt, None, runs, Durability::Flushed);
        println!(
            "{:<9} {:<8} {runs:>6} {:>12.0} {:>10.2} {:>10.2} {:>8} {:>10} {:>6}",
            "bare", "-", o.steps_per_s, o.p50_us, o.p99_us, o.threads, "-", "-"
        );
    }
    for (name, store, pg) in &stores {
        for durability in [Durability::Flushed, Durability::Synced] {
            for runs in [1, 64, 2000] {
                let o = measure(&rt, Some(store), runs, durability);
                let conns = pg
                    .as_ref()
                    .map(|pg| pg.connections().to_string())
                    .unwrap_or_else(|| "-".into());
                println!(
                    "{name:<9} {:<8} {runs:>6} {:>12.0} {:>10.1} {:>10.1} {:>8} {:>10.1} {conns:>6}",
                    durability.as_str(),
                    o.steps_per_s,
                    o.p50_us,
                    o.p99_us,
                    o.threads,
                    o.kib_per_run
                );
            }
        }
    }
    if let Some((_, _, Some(_))) = stores.last() {
        stores.clear();
        if let Ok(url) = std::env::var("FAILCORE_PG_URL") {
            std::thread::spawn(move || {
                if let Ok(mut c) = postgres::Client::connect(&url, postgres::NoTls) {
                    let _ = c.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"));
                }
            })
            .join()
            .expect("clean-up");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
