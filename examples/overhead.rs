//! `cargo run --release --example overhead`: what a guarded call costs, in a few seconds.
//!
//! Prints the median cost per call of a bare async function and of the same function under
//! `#[failcore::tool]` with each store and durability, a replay hit, and the trace bytes per call. The
//! criterion benches (`cargo bench`) measure the same things more carefully; docs/BENCHMARKS.md has figures.

use failcore::store::{MemoryStore, TraceStore};
use failcore::{Durability, Session};
use std::sync::Arc;
use std::time::Instant;

use failcore::ToolError as E;

#[inline(never)]
async fn add_bare(a: i64, b: i64) -> Result<i64, E> {
    Ok(std::hint::black_box(a) + b)
}

#[failcore::tool(effect = "pure")]
async fn add(a: i64, b: i64) -> Result<i64, E> {
    Ok(std::hint::black_box(a) + b)
}

/// Median nanoseconds per call over `rounds` rounds of `n` calls.
fn per_call<F: FnMut(u64) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>>(
    rt: &tokio::runtime::Runtime,
    rounds: usize,
    n: u64,
    mut round: F,
) -> f64 {
    let mut samples: Vec<f64> = (0..rounds)
        .map(|r| {
            let t = Instant::now();
            rt.block_on(round(r as u64 * n));
            t.elapsed().as_nanos() as f64 / n as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile_dir();
    let (rounds, n) = (15, 2_000u64);
    let bare = per_call(&rt, rounds, n, |base| {
        Box::pin(async move {
            for i in 0..n {
                let _ = add_bare((base + i) as i64, 1).await;
            }
        })
    });
    println!(
        "{:<40} {:>12} {:>12} {:>12}",
        "call", "median/call", "added", "trace B/call"
    );
    println!(
        "{:<40} {:>9.0} ns {:>12} {:>12}",
        "bare async fn (baseline)", bare, "-", "-"
    );

    let row = |label: &str, session: Session, bytes: Option<Box<dyn Fn() -> u64>>| {
        let s = session.clone();
        let t = per_call(&rt, rounds, n, |base| {
            let s = s.clone();
            Box::pin(async move {
                s.scope(async {
                    for i in 0..n {
                        let _ = add((base + i) as i64, 1).await;
                    }
                })
                .await
            })
        });
        rt.block_on(session.finish()).expect("finish");
        let per = bytes
            .map(|b| format!("{:.0}", b() as f64 / (rounds as f64 * n as f64)))
            .unwrap_or_default();
        println!("{label:<40} {t:>9.0} ns {:>9.0} ns {per:>12}", t - bare);
        session
    };

    let mem = Arc::new(MemoryStore::new());
    row(
        "guarded, memory store",
        Session::builder()
            .store(mem.clone())
            .open()
            .expect("session"),
        None,
    );
    for d in [
        Durability::Buffered,
        Durability::Flushed,
        Durability::Synced,
    ] {
        let sub = dir.join(d.as_str());
        let session = Session::builder()
            .dir(&sub)
            .durability(d)
            .open()
            .expect("session");
        let run = session.run_id().to_owned();
        let path = sub.join("runs").join(format!("{run}.jsonl"));
        if d == Durability::Synced {
            // An fsync per call: a few rounds are enough to see its cost.
            let s = session.clone();
            let t = per_call(&rt, 3, 50, |base| {
                let s = s.clone();
                Box::pin(async move {
                    s.scope(async {
                        for i in 0..50 {
                            let _ = add((base + i) as i64, 7).await;
                        }
                    })
                    .await
                })
            });
            println!(
                "{:<40} {t:>9.0} ns {:>9.0} ns {:>12}",
                "guarded, JSONL, synced",
                t - bare,
                ""
            );
            continue;
        }
        let label = format!("guarded, JSONL, {d}");
        let session = row(
            &label,
            session,
            Some(Box::new(move || {
                std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0)
            })),
        );
        if d == Durability::Flushed {
            // Replay hits: resume the run just made; every call is served from the index.
            let store: Arc<dyn TraceStore> =
                failcore::store_from_spec(&format!("jsonl:{}", sub.display())).expect("store");
            let resumed = Session::builder()
                .store(store)
                .durability(Durability::Buffered)
                .resume(session.run_id())
                .open()
                .expect("resume");
            row("replay hit (resume, buffered)", resumed, None);
        }
    }
    // Bursts below the backpressure mark, with pauses that let the writer drain: the caller's own cost.
    let burst_dir = dir.join("burst");
    let session = Session::builder()
        .dir(&burst_dir)
        .durability(Durability::Buffered)
        .open()
        .expect("session");
    let mut samples = Vec::new();
    for round in 0..30i64 {
        let s = session.clone();
        let t = Instant::now();
        rt.block_on(s.scope(async {
            for i in 0..1_000 {
                let _ = add(round * 1_000 + i, 3).await;
            }
        }));
        samples.push(t.elapsed().as_nanos() as f64 / 1_000.0);
        std::thread::sleep(std::time::Duration::from_millis(30));
    }
    samples.sort_by(f64::total_cmp);
    let t = samples[samples.len() / 2];
    println!(
        "{:<40} {t:>9.0} ns {:>9.0} ns {:>12}",
        "guarded, JSONL, buffered, bursts of 1,000",
        t - bare,
        ""
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("failcore-overhead-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    dir
}
