//! Resume across machines: a worker writing to Postgres is killed with SIGKILL mid-run, and a second,
//! separate process resumes the run from Postgres and executes only what was not recorded as a success.
//!
//! Runs when `FAILCORE_PG_URL` names a database and the `postgres` feature is on:
//! `FAILCORE_PG_URL=postgres://postgres@127.0.0.1:5432/test cargo test --features postgres --test pg_resume`.
//! The two processes are this test binary run again with `FAILCORE_PG_RESUME_PHASE` set; they share the
//! store only through `FAILCORE_STORE`, as two machines would.

use std::io::Write;
use std::path::PathBuf;

const PHASE: &str = "FAILCORE_PG_RESUME_PHASE";
const EFFECTS: &str = "FAILCORE_PG_RESUME_EFFECTS";
const STEPS: u64 = 8;
/// The step at which the first worker hangs (after its side effect), to be killed there.
const HANG_AT: u64 = 5;

#[derive(Debug)]
struct ToolError(String);
impl std::fmt::Display for ToolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl From<failcore::Error> for ToolError {
    fn from(e: failcore::Error) -> Self {
        ToolError(e.to_string())
    }
}

/// One step of work whose side effect is a line in the effects file: the count of executions.
#[failcore::tool(effect = "write")]
async fn pg_resume_step(step: u64) -> Result<u64, ToolError> {
    let path = std::env::var(EFFECTS).map_err(|e| ToolError(e.to_string()))?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| ToolError(e.to_string()))?;
    writeln!(f, "{step}").map_err(|e| ToolError(e.to_string()))?;
    f.sync_all().map_err(|e| ToolError(e.to_string()))?;
    if step == HANG_AT && std::env::var(PHASE).as_deref() == Ok("first") {
        // In flight when the worker dies: started, never ended.
        loop {
            std::thread::park();
        }
    }
    Ok(step * 10)
}

/// The worker: the run of `STEPS` steps, through `Session::from_env` (FAILCORE_STORE, FAILCORE_RESUME).
fn worker() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let session = failcore::Session::from_env()
            .expect("config")
            .open()
            .expect("open session");
        session
            .scope(async {
                for step in 0..STEPS {
                    assert_eq!(pg_resume_step(step).await.expect("step"), step * 10);
                }
            })
            .await;
        session.finish().await.expect("finish");
    });
}

#[test]
fn pg_resume_child() {
    // The entry point of the child processes; does nothing in a normal test run.
    if std::env::var(PHASE).is_ok() {
        worker();
    }
}

fn effects(path: &PathBuf) -> Vec<u64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect()
}

#[test]
fn a_run_killed_on_one_machine_resumes_on_another() {
    if std::env::var(PHASE).is_ok() {
        return;
    }
    let url = match std::env::var("FAILCORE_PG_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => {
            eprintln!(
                "skipping the cross-machine resume test: set FAILCORE_PG_URL=postgres://user@host:port/db \
                 and build with --features postgres to run it"
            );
            return;
        }
    };
    if !cfg!(feature = "postgres") {
        eprintln!("skipping the cross-machine resume test: build with --features postgres");
        return;
    }
    let schema = format!("fc_resume_{}", std::process::id());
    let sep = if url.contains('?') { '&' } else { '?' };
    let store_spec = format!("{url}{sep}failcore_schema={schema}");
    {
        let mut c = postgres_client(&url);
        c(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let effects_path = dir.path().join("effects");
    let exe = std::env::current_exe().expect("test binary");
    let child = |phase: &str| {
        let mut cmd = std::process::Command::new(&exe);
        cmd.args([
            "--exact",
            "pg_resume_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(PHASE, phase)
        .env(EFFECTS, &effects_path)
        .env("FAILCORE_STORE", &store_spec)
        .env_remove("FAILCORE_DIR")
        .env_remove("FAILCORE_OFFLINE")
        .env_remove("FAILCORE_RESUME");
        cmd
    };

    // The first worker runs until it is inside step HANG_AT, then is killed.
    let mut first = child("first").spawn().expect("spawn the first worker");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while effects(&effects_path).len() <= HANG_AT as usize {
        if let Ok(Some(status)) = first.try_wait() {
            panic!("the first worker ended before it was killed: {status}");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the first worker never reached step {HANG_AT}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // SIGKILL: no destructor, no flush, no goodbye to the database.
    let pid = first.id() as i32;
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let status = first.wait().expect("wait");
    assert!(!status.success());
    assert_eq!(effects(&effects_path), (0..=HANG_AT).collect::<Vec<_>>());

    // A second, separate process resumes the last run from Postgres.
    let out = child("second")
        .env("FAILCORE_RESUME", "last")
        .output()
        .expect("run the second worker");
    assert!(
        out.status.success(),
        "the resuming worker failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Steps recorded as successes ran once in all; the step in flight and the ones after it ran again.
    let ran = effects(&effects_path);
    let mut expected: Vec<u64> = (0..=HANG_AT).collect();
    expected.extend(HANG_AT..STEPS);
    assert_eq!(ran, expected);

    // Both runs are in Postgres; the resumed one links to the killed one and verifies.
    let store = failcore::store_from_spec(&store_spec).expect("store");
    let runs = store.runs().expect("runs");
    assert_eq!(runs.len(), 2, "{runs:?}");
    let report = |run: &str| {
        failcore::store::verify(
            failcore::store::RunReader::open(store.as_ref(), run).expect("reader"),
        )
    };
    // The killed run's chain is intact up to the step in flight: only its end is missing.
    let killed = report(&runs[0]);
    assert_eq!(
        killed.fault.as_ref().map(|f| f.kind),
        Some(failcore::store::FaultKind::Incomplete),
        "{killed:?}"
    );
    assert_eq!(killed.records, 1 + 2 * HANG_AT + 1);
    let resumed_report = report(&runs[1]);
    assert!(resumed_report.is_ok(), "{resumed_report:?}");
    let resumed = failcore::store::RunReader::open(store.as_ref(), &runs[1])
        .expect("reader")
        .filter_map(Result::ok)
        .filter(|r| {
            matches!(
                r.record.body.end(),
                Some(e) if e.status == failcore::store::Status::Replayed
            )
        })
        .count();
    assert_eq!(resumed, HANG_AT as usize);
    drop(store);
    let mut c = postgres_client(&url);
    c(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"));
}

/// Runs SQL on a fresh connection (for the test's own set-up and clean-up).
#[cfg(feature = "postgres")]
fn postgres_client(url: &str) -> impl FnMut(&str) {
    let url = url.to_owned();
    move |sql: &str| {
        let mut c = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
        c.batch_execute(sql).expect("sql");
    }
}

#[cfg(not(feature = "postgres"))]
fn postgres_client(_: &str) -> impl FnMut(&str) {
    |_: &str| {}
}
