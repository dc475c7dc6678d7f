//! `cargo run --release --example overhead`: what a guarded call costs, the way users meet it.
//!
//! Every figure is printed next to the bare call measured the same way in the same run:
//! - **loop**: calls back to back, median per call over rounds;
//! - **isolated**: one call every 2 ms, the way an agent calls, median of single calls;
//! - both **quiet** and **under load**: two threads spinning on arithmetic for the whole section (on a
//!   2-core machine, they compete with the caller and the journal for both cores);
//! - **CPU** time per call (the process's, less the load threads'), next to the wall time;
//! - trace bytes per call;
//! - **10,000 open runs** in one process: threads, memory per open run, calls per second.
//!
//! docs/BENCHMARKS.md has figures and the machine.

use failcore::store::{JsonlStore, MemoryStore, TraceStore};
use failcore::{Durability, Session};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use failcore::ToolError as E;

#[path = "common/process.rs"]
mod process;
use process::{heap, rss, threads};

#[inline(never)]
async fn add_bare(a: i64, b: i64) -> Result<i64, E> {
    Ok(std::hint::black_box(a) + b)
}

/// Pure: one `call` record per call, written once the body is done.
#[failcore::tool(effect = "pure")]
async fn add(a: i64, b: i64) -> Result<i64, E> {
    Ok(std::hint::black_box(a) + b)
}

/// The same with no declared effect: its intent is written ahead of its body, then its outcome (two records
/// per call).
#[failcore::tool]
async fn add_ahead(a: i64, b: i64) -> Result<i64, E> {
    Ok(std::hint::black_box(a) + b)
}

/// One guarded call: `add`, or `add_ahead` when `ahead`.
async fn guarded(ahead: bool, a: i64, b: i64) {
    let _ = if ahead {
        add_ahead(a, b).await
    } else {
        add(a, b).await
    };
}

fn cpu_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Two threads of busy arithmetic, with their CPU clocks so that their time can be taken out.
struct Load {
    stop: Arc<AtomicBool>,
    clocks: Vec<libc::clockid_t>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start() -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let threads = (0..2)
            .map(|_| {
                let stop = stop.clone();
                let tx = tx.clone();
                std::thread::spawn(move || {
                    let mut clock: libc::clockid_t = 0;
                    // SAFETY: asks for this thread's own CPU clock.
                    unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut clock) };
                    tx.send(clock).expect("clock");
                    let mut x = 1u64;
                    while !stop.load(Ordering::Relaxed) {
                        for _ in 0..10_000 {
                            x = std::hint::black_box(
                                x.wrapping_mul(6364136223846793005).wrapping_add(1),
                            );
                        }
                    }
                })
            })
            .collect();
        let clocks = (0..2).map(|_| rx.recv().expect("clock")).collect();
        Load {
            stop,
            clocks,
            threads,
        }
    }

    fn cpu(&self) -> u64 {
        self.clocks.iter().map(|&c| cpu_ns(c)).sum()
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().expect("load thread");
        }
    }
}

/// The process's CPU time, less the load's.
fn our_cpu(load: Option<&Load>) -> u64 {
    cpu_ns(libc::CLOCK_PROCESS_CPUTIME_ID) - load.map_or(0, Load::cpu)
}

#[derive(Clone, Copy)]
struct Figure {
    wall_ns: f64,
    cpu_ns: f64,
}

/// Median wall time per call over `rounds` rounds of `n` calls, and CPU per call over all of them.
fn in_loop(
    rt: &tokio::runtime::Runtime,
    load: Option<&Load>,
    rounds: usize,
    n: u64,
    mut round: impl FnMut(u64) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>,
) -> Figure {
    let cpu0 = our_cpu(load);
    let mut samples: Vec<f64> = (0..rounds)
        .map(|r| {
            let t = Instant::now();
            rt.block_on(round(r as u64 * n));
            t.elapsed().as_nanos() as f64 / n as f64
        })
        .collect();
    let cpu = (our_cpu(load) - cpu0) as f64 / (rounds as f64 * n as f64);
    samples.sort_by(f64::total_cmp);
    Figure {
        wall_ns: samples[samples.len() / 2],
        cpu_ns: cpu,
    }
}

/// Median wall time of single calls made every 2 ms, and CPU per call.
fn isolated(
    rt: &tokio::runtime::Runtime,
    load: Option<&Load>,
    n: u64,
    mut call: impl FnMut(u64) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>,
) -> Figure {
    let mut samples = Vec::with_capacity(n as usize);
    // CPU over the whole section (the sleeps cost the same for the bare call), so that the clocks' read
    // errors average out.
    let c0 = our_cpu(load);
    for i in 0..n {
        std::thread::sleep(Duration::from_millis(2));
        let t = Instant::now();
        rt.block_on(call(i));
        samples.push(t.elapsed().as_nanos() as f64);
    }
    let cpu = our_cpu(load).saturating_sub(c0);
    samples.sort_by(f64::total_cmp);
    Figure {
        wall_ns: samples[samples.len() / 2],
        cpu_ns: cpu as f64 / n as f64,
    }
}

fn print_row(label: &str, f: Figure, bare: Figure, bytes: Option<f64>) {
    println!(
        "{label:<44} {:>9.2} µs {:>9.2} µs {:>9.2} µs {:>8}",
        f.wall_ns / 1000.0,
        (f.wall_ns - bare.wall_ns) / 1000.0,
        f.cpu_ns / 1000.0,
        bytes.map(|b| format!("{b:.0}")).unwrap_or_default()
    );
}

fn header(title: &str) {
    println!("\n## {title}");
    println!(
        "{:<44} {:>12} {:>12} {:>12} {:>8}",
        "call", "wall/call", "added", "CPU/call", "B/call"
    );
}

fn session(dir: &std::path::Path, d: Durability) -> (Session, std::path::PathBuf) {
    let session = Session::builder()
        .dir(dir)
        .durability(d)
        .open()
        .expect("session");
    let path = dir.join("runs").join(format!("{}.jsonl", session.run_id()));
    (session, path)
}

fn section(rt: &tokio::runtime::Runtime, dir: &std::path::Path, load: Option<&Load>) {
    let (rounds, n) = (15, 2_000u64);
    let tag = if load.is_some() {
        "under load"
    } else {
        "quiet"
    };
    header(&format!("loop of calls, {tag}"));
    let bare = in_loop(rt, load, rounds, n, |base| {
        Box::pin(async move {
            for i in 0..n {
                let _ = add_bare((base + i) as i64, 1).await;
            }
        })
    });
    print_row("bare async fn (baseline)", bare, bare, None);
    let tool_loop = |s: Session, ahead: bool| {
        in_loop(rt, load, rounds, n, move |base| {
            let s = s.clone();
            Box::pin(async move {
                s.scope(async {
                    for i in 0..n {
                        guarded(ahead, (base + i) as i64, 1).await;
                    }
                })
                .await
            })
        })
    };
    let guarded_loop = |s: Session| tool_loop(s, false);
    let mem = Session::builder()
        .store(Arc::new(MemoryStore::new()))
        .open()
        .expect("session");
    print_row(
        "guarded, memory store, flushed",
        guarded_loop(mem.clone()),
        bare,
        None,
    );
    rt.block_on(mem.finish()).expect("finish");
    let mut flushed_run = None;
    for (ahead, d) in [
        (false, Durability::Buffered),
        (false, Durability::Flushed),
        (true, Durability::Buffered),
        (true, Durability::Flushed),
    ] {
        let sub = dir.join(format!("{tag}-loop-{d}-{ahead}").replace(' ', "-"));
        let (s, path) = session(&sub, d);
        let f = tool_loop(s.clone(), ahead);
        rt.block_on(s.finish()).expect("finish");
        let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0) as f64
            / (rounds as f64 * n as f64);
        let label = if ahead {
            format!("guarded, JSONL, {d}, intent ahead")
        } else {
            format!("guarded, JSONL, {d}")
        };
        print_row(&label, f, bare, Some(bytes));
        if d == Durability::Flushed && !ahead {
            flushed_run = Some((sub, s.run_id().to_owned()));
        }
    }
    if let Some((sub, run)) = &flushed_run {
        let store: Arc<dyn TraceStore> = Arc::new(JsonlStore::new(sub));
        let resumed = Session::builder()
            .store(store)
            .durability(Durability::Buffered)
            .resume(run.as_str())
            .open()
            .expect("resume");
        print_row(
            "replay hit (resume, buffered)",
            guarded_loop(resumed.clone()),
            bare,
            None,
        );
        rt.block_on(resumed.finish()).expect("finish");
    }
    {
        let sub = dir.join(format!("{tag}-loop-synced").replace(' ', "-"));
        let (s, _) = session(&sub, Durability::Synced);
        let s2 = s.clone();
        let f = in_loop(rt, load, 3, 50, move |base| {
            let s = s2.clone();
            Box::pin(async move {
                s.scope(async {
                    for i in 0..50 {
                        let _ = add((base + i) as i64, 7).await;
                    }
                })
                .await
            })
        });
        rt.block_on(s.finish()).expect("finish");
        print_row("guarded, JSONL, synced", f, bare, None);
    }

    header(&format!("isolated calls (one every 2 ms), {tag}"));
    let calls = 400;
    let bare = isolated(rt, load, calls, |i| {
        Box::pin(async move {
            let _ = add_bare(i as i64, 1).await;
        })
    });
    print_row("bare async fn (baseline)", bare, bare, None);
    for (ahead, d) in [
        (false, Durability::Buffered),
        (false, Durability::Flushed),
        (true, Durability::Flushed),
    ] {
        let sub = dir.join(format!("{tag}-isolated-{d}-{ahead}").replace(' ', "-"));
        let (s, _) = session(&sub, d);
        let s2 = s.clone();
        let f = isolated(rt, load, calls, move |i| {
            let s = s2.clone();
            Box::pin(async move {
                s.scope(guarded(ahead, i as i64, 2)).await;
            })
        });
        rt.block_on(s.finish()).expect("finish");
        let label = if ahead {
            format!("guarded, JSONL, {d}, intent ahead")
        } else {
            format!("guarded, JSONL, {d}")
        };
        print_row(&label, f, bare, None);
    }
}

/// Raises the limit of open files to the hard limit: each open JSONL run holds its file open.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct they are given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// 10,000 runs open at once, each making calls from its own task.
fn many_runs(dir: &std::path::Path) {
    raise_fd_limit();
    const RUNS: usize = 10_000;
    const CALLS: u64 = 10;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let store: Arc<dyn TraceStore> = Arc::new(JsonlStore::new(dir.join("many")));
    // Warm up what every process pays once (the journal's thread, the registry), then measure.
    let warm = Session::builder()
        .store(store.clone())
        .open()
        .expect("open");
    rt.block_on(warm.finish()).expect("finish");
    let (heap0, rss0, threads0) = (heap(), rss(), threads());
    let sessions: Vec<Session> = (0..RUNS)
        .map(|_| {
            Session::builder()
                .store(store.clone())
                .open()
                .expect("open a run")
        })
        .collect();
    let (heap1, rss1, threads1) = (heap(), rss(), threads());
    let done = Arc::new(AtomicU64::new(0));
    let t = Instant::now();
    rt.block_on(async {
        let tasks: Vec<_> = sessions
            .iter()
            .cloned()
            .enumerate()
            .map(|(r, s)| {
                let done = done.clone();
                tokio::spawn(async move {
                    s.scope(async {
                        for i in 0..CALLS {
                            let _ = add(r as i64, i as i64).await;
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                    })
                    .await
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("task");
        }
    });
    let elapsed = t.elapsed();
    let (heap2, rss2, threads2) = (heap(), rss(), threads());
    rt.block_on(async {
        for s in &sessions {
            s.finish().await.expect("finish");
        }
    });
    println!("\n## {RUNS} open runs in one process (JSONL, flushed, runtime of 2 worker threads)");
    println!("threads: {threads0} before opening, {threads1} with the runs open, {threads2} after their calls");
    let per = |a: u64, b: u64| b.saturating_sub(a) as f64 / RUNS as f64 / 1024.0;
    println!(
        "heap per open run: {:.1} KiB idle (before any call), {:.1} KiB after {CALLS} calls each",
        per(heap0, heap1),
        per(heap0, heap2)
    );
    println!(
        "resident memory per open run: {:.1} KiB idle, {:.1} KiB after the calls",
        per(rss0, rss1),
        per(rss0, rss2)
    );
    println!(
        "calls: {} in {:.2} s = {:.0} calls/s",
        done.load(Ordering::Relaxed),
        elapsed.as_secs_f64(),
        done.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64()
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = std::env::temp_dir().join(format!("failcore-overhead-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    // First, while the allocator holds nothing freed that the runs could reuse unseen.
    many_runs(&dir);
    section(&rt, &dir, None);
    let load = Load::start();
    section(&rt, &dir, Some(&load));
    load.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
