//! What every case shares: the case table, the timing and byte measurements, the command line, and the
//! `all` command that runs every case (wall time in a process of its own, instructions under callgrind) and
//! prints the table. Used by both binaries of this bench (`peers` and `peers-durare-sqlite`).

use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

/// Repeats of a case for its wall figures; each uses a fresh store, and every call of every repeat is a
/// sample.
const REPEATS: usize = 5;

/// What a case needs from its surroundings.
pub struct Env {
    /// A directory of this process's own; each store lives in a fresh subdirectory.
    pub dir: PathBuf,
    /// `PEERS_PG_URL`, when set and not empty: the Postgres cases run.
    pub pg_url: Option<String>,
    pub rt: tokio::runtime::Runtime,
}

impl Env {
    /// The fresh directory of one store.
    pub fn store_dir(&self, tag: &str) -> Res<PathBuf> {
        let dir = self.dir.join(tag);
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    pub fn pg_url(&self) -> Res<&str> {
        self.pg_url
            .as_deref()
            .ok_or_else(|| "set PEERS_PG_URL for the Postgres cases".into())
    }
}

/// The per-call durations of one loop, and the time of the whole of it (opening the run or the replay,
/// every call, finishing).
#[derive(Default)]
pub struct Timings {
    pub per_call: Vec<Duration>,
    pub total: Duration,
}

/// Per-call samples, shared with a peer's workflow or skill, which runs the loop itself.
#[derive(Clone, Debug, Default)]
pub struct Samples(Arc<Mutex<Vec<Duration>>>);

impl Samples {
    /// Runs `f`, recording how long it took.
    pub async fn time<T>(&self, f: impl std::future::Future<Output = T>) -> T {
        let started = Instant::now();
        let out = f.await;
        self.push(started.elapsed());
        out
    }

    fn push(&self, took: Duration) {
        self.0.lock().expect("samples").push(took);
    }

    /// Runs `f`, recording how long it took.
    #[allow(dead_code)] // the floor's; the durare binary has no floor
    pub fn record<T>(&self, f: impl FnOnce() -> T) -> T {
        let started = Instant::now();
        let out = f();
        self.push(started.elapsed());
        out
    }

    /// Takes the samples recorded since the last call.
    pub fn take(&self) -> Vec<Duration> {
        std::mem::take(&mut *self.0.lock().expect("samples"))
    }
}

/// One system on one store, opened fresh.
pub trait Bench {
    /// `calls` calls of `add(i, 1)`, live, in one run.
    fn live(&mut self, env: &Env, calls: usize) -> Res<Timings>;
    /// The run of [`Bench::live`] again, every call served from the store. `None`: no replay (the floor).
    fn replay(&mut self, env: &Env) -> Res<Option<Timings>>;
    /// Closes the store; returns the bytes it holds once closed, when that can be measured.
    fn close(self: Box<Self>, env: &Env) -> Res<Option<u64>>;
}

/// Measures the bytes a store holds once it is closed (`None`: a store in memory).
pub type Size = Box<dyn FnOnce() -> Res<Option<u64>>>;

pub type Make = fn(&Env, &str) -> Res<Box<dyn Bench>>;

pub struct Case {
    /// Its name on the command line.
    pub name: &'static str,
    /// System, store and mode, as the table shows them.
    pub label: &'static str,
    /// Calls per run for the wall figures (half of it for instructions: N and 2N).
    pub calls: usize,
    pub make: Make,
}

/// Runs `f`, timing the whole of it and taking the per-call samples it recorded.
pub fn timed(samples: &Samples, f: impl FnOnce() -> Res<()>) -> Res<Timings> {
    let started = Instant::now();
    f()?;
    let total = started.elapsed();
    Ok(Timings {
        per_call: samples.take(),
        total,
    })
}

/// The bytes of the files under `dir`.
pub fn dir_size(dir: &Path) -> Res<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_size(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

/// The entry point of both binaries.
pub fn main(cases: &[Case]) {
    if let Err(e) = run(cases) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

const USAGE: &str =
    "usage: peers list | peers wall <case> | peers count <case> <live|replay> <calls> \
                     | peers all [<other binary>...]";

fn run(cases: &[Case]) -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let find = |name: &str| -> Res<&Case> {
        cases
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| format!("no case {name:?}; `peers list` names them").into())
    };
    match args.as_slice() {
        ["list"] => {
            for case in cases {
                println!("{}\t{}\t{}", case.name, case.calls, case.label);
            }
            Ok(())
        }
        ["wall", name] => with_env(|env| wall(env, find(name)?)),
        ["count", name, mode, calls] => {
            let replay = match *mode {
                "live" => false,
                "replay" => true,
                _ => return Err(USAGE.into()),
            };
            let calls: usize = calls.parse().map_err(|_| USAGE)?;
            with_env(|env| count(env, find(name)?, replay, calls))
        }
        ["all", others @ ..] => all(others),
        _ => Err(USAGE.into()),
    }
}

fn with_env(f: impl FnOnce(&Env) -> Res<()>) -> Res<()> {
    let dir = std::env::temp_dir().join(format!("failcore-peers-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let env = Env {
        dir,
        pg_url: std::env::var("PEERS_PG_URL").ok().filter(|u| !u.is_empty()),
        rt: tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?,
    };
    let out = f(&env);
    let _ = std::fs::remove_dir_all(&env.dir);
    out
}

/// One run of a case, for an instruction counter: nothing is timed or printed.
fn count(env: &Env, case: &Case, replay: bool, calls: usize) -> Res<()> {
    let mut bench = (case.make)(env, "count")?;
    bench.live(env, calls)?;
    if replay {
        bench.replay(env)?;
    }
    bench.close(env)?;
    Ok(())
}

/// The wall figures of one case, as one line of `key=value` (nanoseconds, bytes) for `all` to read.
fn wall(env: &Env, case: &Case) -> Res<()> {
    let (mut live, mut replay) = (Vec::new(), Vec::new());
    let (mut live_total, mut replay_total) = (Vec::new(), Vec::new());
    for i in 0..REPEATS {
        let mut bench = (case.make)(env, &format!("wall{i}"))?;
        let t = bench.live(env, case.calls)?;
        live.extend(t.per_call);
        live_total.push(t.total / case.calls as u32);
        if let Some(t) = bench.replay(env)? {
            replay.extend(t.per_call);
            replay_total.push(t.total / case.calls as u32);
        }
        bench.close(env)?;
    }
    // Bytes per call: the store after 2N calls less the store after N, over N (what every run writes
    // once cancels out).
    let mut sizes = Vec::new();
    for (tag, calls) in [("bytes1", case.calls), ("bytes2", 2 * case.calls)] {
        let mut bench = (case.make)(env, tag)?;
        bench.live(env, calls)?;
        sizes.push(bench.close(env)?);
    }
    let mut line = String::new();
    for (key, samples) in [
        ("live", &mut live),
        ("live_total", &mut live_total),
        ("replay", &mut replay),
        ("replay_total", &mut replay_total),
    ] {
        if let Some([p10, p50, p90]) = percentiles(samples) {
            line += &format!(
                "{key}={}/{}/{} ",
                p10.as_nanos(),
                p50.as_nanos(),
                p90.as_nanos()
            );
        }
    }
    if let [Some(one), Some(two)] = sizes[..] {
        let per_call = (two as f64 - one as f64) / case.calls as f64;
        line += &format!("bytes={per_call:.0}");
    }
    println!("{}", line.trim_end());
    Ok(())
}

/// The 10th, 50th and 90th percentiles.
fn percentiles(samples: &mut [Duration]) -> Option<[Duration; 3]> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    let at = |p: usize| samples[(samples.len() - 1) * p / 100];
    Some([at(10), at(50), at(90)])
}

/// Every case of this binary and of the `others` (binaries with the same command line): wall figures,
/// then instructions per call under callgrind, printed as the Markdown table of docs/BENCHMARKS.md.
fn all(others: &[&str]) -> Res<()> {
    let me = std::env::current_exe()?;
    let mut binaries = vec![me.to_string_lossy().into_owned()];
    binaries.extend(others.iter().map(|s| s.to_string()));
    let mut rows = Vec::new();
    for exe in &binaries {
        let listed = output(Command::new(exe).arg("list"))?;
        for line in listed.lines() {
            let mut fields = line.splitn(3, '\t');
            let (Some(name), Some(calls), Some(label)) =
                (fields.next(), fields.next(), fields.next())
            else {
                return Err(format!("{exe} list: unexpected line {line:?}").into());
            };
            rows.push((
                exe.clone(),
                name.to_owned(),
                calls.parse::<usize>()?,
                label.to_owned(),
            ));
        }
    }
    println!("| case | instructions/call live | replay | wall/call live, median (p10 to p90) | replay | whole run/N live (mean) | replay | bytes/call |");
    println!("| --- | ---: | ---: | --- | --- | ---: | ---: | ---: |");
    let mut line_bytes = None;
    for (exe, name, calls, label) in rows {
        eprintln!("{name}: wall");
        let figures = match output(&mut command(&exe, &["wall", &name], &line_bytes)) {
            Ok(out) => out,
            Err(e) => {
                eprintln!("{name}: skipped: {e}");
                continue;
            }
        };
        let get = |key: &str| {
            figures
                .split_whitespace()
                .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
                .map(str::to_owned)
        };
        let bytes = get("bytes");
        if name == "failcore-jsonl-flushed" {
            line_bytes = bytes.clone();
        }
        eprintln!("{name}: instructions");
        // Runs of N and 2N calls: the difference over N is the work of one call (set-up cancels out).
        let n = calls / 2;
        let count = |mode: &str, calls: usize| -> Res<i64> {
            let mut cmd = command(
                "valgrind",
                &["--tool=callgrind", "--callgrind-out-file=/dev/null"],
                &line_bytes,
            );
            cmd.arg(&exe)
                .args(["count", &name, mode, &calls.to_string()]);
            collected(&cmd.output()?)
        };
        let (live_n, live_2n) = (count("live", n)?, count("live", 2 * n)?);
        let live = (live_2n - live_n) as f64 / n as f64;
        let replay = if get("replay").is_some() {
            // A replay run is a live run and its replay: less the live run's count.
            let extra_n = count("replay", n)? - live_n;
            let extra_2n = count("replay", 2 * n)? - live_2n;
            format!("{:.0}", (extra_2n - extra_n) as f64 / n as f64)
        } else {
            "-".to_owned()
        };
        println!(
            "| {label} | {live:.0} | {replay} | {} | {} | {} | {} | {} |",
            spread(get("live")),
            spread(get("replay")),
            median(get("live_total")),
            median(get("replay_total")),
            bytes.unwrap_or_else(|| "-".into()),
        );
    }
    Ok(())
}

/// `program args`, passing on the size of FailCore's line to the floor cases once it is known.
fn command(program: &str, args: &[&str], line_bytes: &Option<String>) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(args);
    if let Some(bytes) = line_bytes {
        cmd.env("PEERS_LINE", bytes);
    }
    cmd
}

fn output(cmd: &mut Command) -> Res<String> {
    let out = cmd.output()?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr)
            .trim()
            .to_owned()
            .into());
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// The total of callgrind's summary line, `==pid== Collected : N`.
fn collected(out: &std::process::Output) -> Res<i64> {
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("under callgrind: {}", stderr.trim()).into());
    }
    stderr
        .lines()
        .find_map(|l| l.split("Collected :").nth(1)?.trim().parse().ok())
        .ok_or_else(|| format!("no instruction total in callgrind's output: {stderr}").into())
}

fn micros(ns: &str) -> String {
    let ns: f64 = ns.parse().unwrap_or(f64::NAN);
    let us = ns / 1000.0;
    if us >= 100.0 {
        format!("{us:.0} µs")
    } else if us >= 10.0 {
        format!("{us:.1} µs")
    } else {
        format!("{us:.2} µs")
    }
}

/// `p10/p50/p90` in nanoseconds as "median (p10 to p90)".
fn spread(v: Option<String>) -> String {
    match v.as_deref().map(|v| v.split('/').collect::<Vec<_>>()) {
        Some(p) if p.len() == 3 => {
            format!("{} ({} to {})", micros(p[1]), micros(p[0]), micros(p[2]))
        }
        _ => "-".into(),
    }
}

fn median(v: Option<String>) -> String {
    match v.as_deref().and_then(|v| v.split('/').nth(1)) {
        Some(p50) => micros(p50),
        None => "-".into(),
    }
}

/// A schema of this process's own, so that runs never meet.
pub fn pg_schema(system: &str, tag: &str) -> String {
    format!("peers_{system}_{tag}_{}", std::process::id())
}

/// The bytes of a schema's tables, indexes and TOAST; then the schema is dropped.
pub fn pg_size(url: &str, schema: &str) -> Res<u64> {
    let mut client = postgres::Client::connect(url, postgres::NoTls)?;
    let row = client.query_one(
        "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relkind = 'r'",
        &[&schema],
    )?;
    let bytes: i64 = row.get(0);
    client.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))?;
    Ok(bytes as u64)
}
