//! A fleet on one Postgres: four worker processes with 500 concurrent runs each, 20 calls a run, against the
//! server's default `max_connections`. One worker is killed with SIGKILL midway; the other three resume its
//! runs. Every acknowledged call is in its run once and ran once; every resumed run verifies.
//!
//! Runs when `FAILCORE_PG_URL` names a database and the `postgres` feature is on:
//! `FAILCORE_PG_URL=postgres://postgres@127.0.0.1:5432/test cargo test --features postgres --test pg_fleet`.
//! The workers are this test binary run again with `FAILCORE_FLEET_WORKER` set; they share the store only
//! through its URL, as machines would.
//!
//! The test hands each dead run to exactly one resumer. Resuming also claims the dead run (an exclusive
//! claim with a fencing token and a lease, see the trusted-resume tests), which is what keeps two resumers
//! that pick dead runs up on their own from running the same calls twice; this test does not race them.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const WORKER: &str = "FAILCORE_FLEET_WORKER";
const DIR: &str = "FAILCORE_FLEET_DIR";
const STORE: &str = "FAILCORE_FLEET_STORE";
const WORKERS: usize = 4;
const RUNS: usize = 500;
const CALLS: u32 = 20;
/// The worker that is killed.
const VICTIM: usize = 0;

use failcore::ToolError;

/// Appends one line to a file in one write(2), so that lines of concurrent writers never interleave.
fn append_line(path: &Path, line: &str) -> Result<(), ToolError> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(ToolError::msg)?;
    f.write_all(format!("{line}\n").as_bytes())
        .map_err(ToolError::msg)
}

fn fleet_dir() -> Result<PathBuf, ToolError> {
    std::env::var(DIR)
        .map(PathBuf::from)
        .map_err(ToolError::msg)
}

/// The side effect: a line per execution in the worker's effects file.
#[failcore::tool(effect = "write")]
async fn fleet_step(task: String, call: u32) -> Result<u32, ToolError> {
    let worker = std::env::var(WORKER).map_err(ToolError::msg)?;
    append_line(
        &fleet_dir()?.join(format!("effects-{worker}")),
        &format!("{task} {call}"),
    )?;
    Ok(call * 3)
}

/// Makes a task's calls in `session`, logging each acknowledged one.
async fn calls(session: &failcore::Session, task: &str, acks: &Path) {
    session
        .scope(async {
            for call in 0..CALLS {
                let got = fleet_step(task.to_owned(), call).await.expect("call");
                assert_eq!(got, call * 3);
                append_line(acks, &format!("{task} {call}")).expect("ack log");
                // Spread the calls out, so that the kill lands while every run is open.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
    session.finish().await.expect("finish");
}

/// The threads of this process, from /proc.
fn threads() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:").map(|n| n.trim().parse().ok()))
        })
        .flatten()
        .unwrap_or(0)
}

fn worker(me: usize) {
    let dir = fleet_dir().expect("dir");
    let store = failcore::store_from_spec(&std::env::var(STORE).expect("store")).expect("store");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let acks = dir.join(format!("acks-{me}"));
    rt.block_on(async {
        // All the worker's runs open at once.
        let sessions: Vec<_> = (0..RUNS)
            .map(|t| {
                let session = failcore::Session::builder()
                    .store(store.clone())
                    .open()
                    .expect("open a run");
                let task = format!("w{me}-t{t}");
                append_line(
                    &dir.join(format!("runs-{me}")),
                    &format!("{task} {}", session.run_id()),
                )
                .expect("run log");
                (task, session)
            })
            .collect();
        append_line(&dir.join(format!("threads-{me}")), &threads().to_string())
            .expect("threads log");
        let tasks: Vec<_> = sessions
            .into_iter()
            .map(|(task, session)| {
                let acks = acks.clone();
                tokio::spawn(async move { calls(&session, &task, &acks).await })
            })
            .collect();
        for t in tasks {
            t.await.expect("task");
        }
        append_line(&dir.join(format!("done-{me}")), "done").expect("done");

        // Then resume what the test hands this worker: runs of the dead one.
        let order = dir.join(format!("resume-{me}"));
        let deadline = Instant::now() + Duration::from_secs(600);
        while !order.exists() {
            assert!(Instant::now() < deadline, "no resume order came");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The order is written whole and then renamed into place.
        let order = std::fs::read_to_string(&order).expect("resume order");
        let resumed: Vec<_> = order
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(task, run)| {
                let session = failcore::Session::builder()
                    .store(store.clone())
                    .resume(run)
                    .open()
                    .expect("resume a run");
                append_line(
                    &dir.join(format!("resumed-{me}")),
                    &format!("{task} {}", session.run_id()),
                )
                .expect("resumed log");
                let acks = dir.join(format!("resume-acks-{me}"));
                let task = task.to_owned();
                tokio::spawn(async move { calls(&session, &task, &acks).await })
            })
            .collect();
        for t in resumed {
            t.await.expect("resumed task");
        }
        append_line(&dir.join(format!("finished-{me}")), "done").expect("finished");
    });
}

#[test]
fn pg_fleet_worker() {
    // The entry point of the worker processes; does nothing in a normal test run.
    if let Ok(me) = std::env::var(WORKER) {
        worker(me.parse().expect("worker number"));
    }
}

fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn pairs(path: &Path) -> Vec<(String, String)> {
    read_lines(path)
        .into_iter()
        .filter_map(|l| l.split_once(' ').map(|(a, b)| (a.to_owned(), b.to_owned())))
        .collect()
}

#[test]
fn a_fleet_of_four_workers_survives_one_killed_and_resumed_by_the_others() {
    if std::env::var(WORKER).is_ok() {
        return;
    }
    let url = match std::env::var("FAILCORE_PG_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => {
            eprintln!(
                "skipping the fleet test: set FAILCORE_PG_URL=postgres://user@host:port/db and build \
                 with --features postgres to run it"
            );
            return;
        }
    };
    if !cfg!(feature = "postgres") {
        eprintln!("skipping the fleet test: build with --features postgres");
        return;
    }
    let schema = format!("fc_fleet_{}", std::process::id());
    let sep = if url.contains('?') { '&' } else { '?' };
    let spec = format!("{url}{sep}failcore_schema={schema}");
    sql(&url, &format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"));
    let max_connections = sql_value(&url, "SHOW max_connections");
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary");
    let spawn = |me: usize| {
        std::process::Command::new(&exe)
            .args([
                "--exact",
                "pg_fleet_worker",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(WORKER, me.to_string())
            .env(DIR, dir.path())
            .env(STORE, &spec)
            .env_remove("FAILCORE_DIR")
            .env_remove("FAILCORE_STORE")
            .env_remove("FAILCORE_RESUME")
            .env_remove("FAILCORE_OFFLINE")
            .spawn()
            .expect("spawn a worker")
    };
    let mut workers: Vec<_> = (0..WORKERS).map(spawn).collect();

    // Kill the victim once half of its calls are acknowledged.
    let half = RUNS * CALLS as usize / 2;
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut peak_connections = 0;
    while read_lines(&dir.path().join(format!("acks-{VICTIM}"))).len() < half {
        if let Ok(Some(status)) = workers[VICTIM].try_wait() {
            panic!("the victim ended before it was killed: {status}");
        }
        assert!(Instant::now() < deadline, "the victim never got halfway");
        peak_connections = peak_connections.max(connections(&url));
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = workers[VICTIM].id() as i32;
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    assert!(!workers[VICTIM].wait().expect("wait").success());
    assert!(
        !dir.path().join(format!("done-{VICTIM}")).exists(),
        "the victim finished before it was killed"
    );

    // Hand the victim's runs to the others, a share each.
    let dead = pairs(&dir.path().join(format!("runs-{VICTIM}")));
    assert_eq!(dead.len(), RUNS);
    let others: Vec<usize> = (0..WORKERS).filter(|&w| w != VICTIM).collect();
    for (i, &w) in others.iter().enumerate() {
        let share: String = dead
            .iter()
            .skip(i)
            .step_by(others.len())
            .map(|(task, run)| format!("{task} {run}\n"))
            .collect();
        let tmp = dir.path().join(format!("resume-{w}.tmp"));
        std::fs::write(&tmp, share).expect("write an order");
        std::fs::rename(&tmp, dir.path().join(format!("resume-{w}"))).expect("place an order");
    }
    for &w in &others {
        while workers[w].try_wait().expect("wait").is_none() {
            assert!(Instant::now() < deadline, "worker {w} never finished");
            peak_connections = peak_connections.max(connections(&url));
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            workers[w].wait().expect("wait").success(),
            "worker {w} failed"
        );
    }

    // Every acknowledged call ran exactly once; every call of every task ran at least once; only calls in
    // flight at the kill (started, never acknowledged) may have run twice.
    let mut ran: BTreeMap<(String, String), usize> = BTreeMap::new();
    for w in 0..WORKERS {
        for key in pairs(&dir.path().join(format!("effects-{w}"))) {
            *ran.entry(key).or_default() += 1;
        }
    }
    let mut acked = Vec::new();
    for w in 0..WORKERS {
        acked.extend(pairs(&dir.path().join(format!("acks-{w}"))));
    }
    let victim_acked: Vec<_> = pairs(&dir.path().join(format!("acks-{VICTIM}")));
    assert!(victim_acked.len() >= half);
    for key in &acked {
        assert_eq!(
            ran.get(key),
            Some(&1),
            "acknowledged call {key:?} ran {:?} times",
            ran.get(key)
        );
    }
    let mut twice = 0;
    for w in 0..WORKERS {
        for t in 0..RUNS {
            for c in 0..CALLS {
                let key = (format!("w{w}-t{t}"), c.to_string());
                let n = ran.get(&key).copied().unwrap_or(0);
                assert!(n >= 1, "call {key:?} never ran");
                if n > 1 {
                    assert_eq!(w, VICTIM, "{key:?} of a live worker ran twice");
                    twice += 1;
                }
            }
        }
    }
    // At most the call each run had in flight.
    assert!(twice <= RUNS, "{twice} calls ran twice");

    // The traces: every acknowledged call of the victim is in its run once, as a success; every resumed
    // run verifies and served those calls from the trace.
    let store = failcore::store_from_spec(&spec).expect("store");
    let runs = store.runs().expect("runs");
    assert_eq!(runs.len(), WORKERS * RUNS + RUNS);
    let records = |run: &str| -> Vec<failcore::store::TraceRecord> {
        failcore::store::RunReader::open(store.as_ref(), run)
            .expect("reader")
            .map(|r| r.expect("record"))
            .collect()
    };
    let successes = |run: &str, status: failcore::store::Status| -> usize {
        records(run)
            .iter()
            .filter(|r| matches!(r.record.body.end(), Some(e) if e.status == status))
            .count()
    };
    let acked_by_task: BTreeMap<String, usize> =
        victim_acked.iter().fold(BTreeMap::new(), |mut m, (t, _)| {
            *m.entry(t.clone()).or_default() += 1;
            m
        });
    let mut resumed = BTreeMap::new();
    for &w in &others {
        resumed.extend(pairs(&dir.path().join(format!("resumed-{w}"))));
    }
    assert_eq!(resumed.len(), RUNS);
    for (task, run) in &dead {
        let acks = acked_by_task.get(task).copied().unwrap_or(0);
        let report = failcore::store::verify(
            failcore::store::RunReader::open(store.as_ref(), run).expect("reader"),
        );
        assert_eq!(
            report.fault.as_ref().map(|f| f.kind),
            Some(failcore::store::FaultKind::Incomplete),
            "{run}: {report:?}"
        );
        // Recorded successes: every acknowledged one (and possibly the one whose ack the kill cut off).
        let ok = successes(run, failcore::store::Status::Ok);
        assert!(
            ok == acks || ok == acks + 1,
            "{task} {run}: {ok} successes, {acks} acked"
        );
        let again = &resumed[task];
        let report = failcore::store::verify(
            failcore::store::RunReader::open(store.as_ref(), again).expect("reader"),
        );
        assert!(report.is_ok(), "{again}: {report:?}");
        assert_eq!(
            successes(again, failcore::store::Status::Replayed),
            ok,
            "{task}"
        );
        assert_eq!(
            successes(again, failcore::store::Status::Ok) + ok,
            CALLS as usize,
            "{task}"
        );
    }
    for w in others {
        let threads: usize = read_lines(&dir.path().join(format!("threads-{w}")))[0]
            .parse()
            .expect("threads");
        // A runtime of 2 workers, the journal's thread, the store's committer: no thread per run.
        eprintln!("fleet: worker {w} held {threads} threads with {RUNS} runs open");
        assert!(
            threads <= 12,
            "worker {w} held {threads} threads with {RUNS} runs open"
        );
    }
    let max_connections: usize = max_connections.parse().expect("max_connections");
    eprintln!(
        "fleet: {} runs, {} calls acknowledged ({} by the killed worker), {twice} calls in flight at \
         the kill ran again, peak {peak_connections} client connections to the server \
         (max_connections {max_connections})",
        WORKERS * RUNS,
        acked.len(),
        victim_acked.len(),
    );
    // Each worker within its pool (the test's own probe adds one).
    assert!(peak_connections <= WORKERS * pool_size() + 1);
    assert!(peak_connections < max_connections);
    drop(store);
    sql(&url, &format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"));
}

/// The connections open to the server now, from any client.
fn connections(url: &str) -> usize {
    sql_value(
        url,
        "SELECT count(*)::text FROM pg_stat_activity WHERE backend_type = 'client backend'",
    )
    .parse()
    .unwrap_or(0)
}

#[cfg(feature = "postgres")]
fn sql(url: &str, sql: &str) {
    let mut c = postgres::Client::connect(url, postgres::NoTls).expect("connect");
    c.batch_execute(sql).expect("sql");
}

#[cfg(feature = "postgres")]
fn sql_value(url: &str, sql: &str) -> String {
    let mut c = postgres::Client::connect(url, postgres::NoTls).expect("connect");
    c.query_one(sql, &[]).expect("sql").get(0)
}

#[cfg(feature = "postgres")]
fn pool_size() -> usize {
    failcore::store::PgStore::DEFAULT_POOL_SIZE
}

#[cfg(not(feature = "postgres"))]
fn pool_size() -> usize {
    0
}

#[cfg(not(feature = "postgres"))]
fn sql(_: &str, _: &str) {}

#[cfg(not(feature = "postgres"))]
fn sql_value(_: &str, _: &str) -> String {
    "0".into()
}
