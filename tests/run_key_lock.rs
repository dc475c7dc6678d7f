//! One writer per run key on the SQL stores, across processes: a session of a run key holds the key until
//! it ends; a second process with the same key is refused, naming the holder, while the first holds it;
//! once the first is killed with SIGKILL, the second takes the key and continues the run the first left
//! open.
//!
//! SQLite runs with `--features sqlite`; Postgres with `--features postgres` and `FAILCORE_PG_URL`
//! (`postgres://postgres@127.0.0.1:5432/test`), and says it skipped without them. The processes are this
//! test binary run again with `FAILCORE_RUN_KEY_PHASE` set; they share the store only through its spec.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const PHASE: &str = "FAILCORE_RUN_KEY_PHASE";
const STORE: &str = "FAILCORE_RUN_KEY_STORE";
const READY: &str = "FAILCORE_RUN_KEY_READY";
const WAIT_MS: &str = "FAILCORE_RUN_KEY_WAIT_MS";
const KEY: &str = "agent-7";

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

#[failcore::tool(effect = "read")]
async fn run_key_step(n: u64) -> Result<u64, ToolError> {
    Ok(n + 1)
}

/// A child: opens a session of the run key, records one step, then holds the key for good (`hold`) or
/// ends the run (`join`). A refused open exits with code 3.
fn child(phase: &str) {
    let spec = std::env::var(STORE).expect("store spec");
    let wait: u64 = std::env::var(WAIT_MS)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let store = failcore::store_from_spec(&spec).expect("store");
        let opened = failcore::Session::builder()
            .store(store)
            .run_key(KEY)
            .run_key_wait(Duration::from_millis(wait))
            .open();
        let session = match opened {
            Ok(s) => s,
            Err(e) => {
                eprintln!("refused: {e}");
                std::process::exit(3);
            }
        };
        let n = session
            .scope(run_key_step(phase.len() as u64))
            .await
            .expect("step");
        assert_eq!(n, phase.len() as u64 + 1);
        let ready = std::env::var(READY).expect("ready file");
        std::fs::write(ready, session.run_id()).expect("write the ready file");
        if phase == "hold" {
            loop {
                std::thread::park();
            }
        }
        session.finish().await.expect("finish");
    });
}

#[test]
fn run_key_lock_child() {
    // The entry point of the child processes; does nothing in a normal test run.
    if let Ok(phase) = std::env::var(PHASE) {
        child(&phase);
    }
}

fn command(spec: &str, phase: &str, ready: &Path, wait: Duration) -> Command {
    let mut cmd = Command::new(std::env::current_exe().expect("test binary"));
    cmd.args([
        "--exact",
        "run_key_lock_child",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(PHASE, phase)
    .env(STORE, spec)
    .env(READY, ready)
    .env(WAIT_MS, wait.as_millis().to_string())
    .env_remove("FAILCORE_DIR")
    .env_remove("FAILCORE_STORE")
    .env_remove("FAILCORE_RESUME")
    .env_remove("FAILCORE_OFFLINE");
    cmd
}

/// The run id a child wrote once it had recorded its step.
fn run_of(ready: &Path) -> Option<String> {
    std::fs::read_to_string(ready)
        .ok()
        .filter(|r| !r.is_empty())
}

/// The whole scenario against the store at `spec`.
fn one_writer_per_key(spec: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let ready: PathBuf = dir.path().join("ready");

    // The first process takes the key, records a step, and holds the key.
    let mut first = command(spec, "hold", &ready, Duration::ZERO)
        .spawn()
        .expect("spawn the holder");
    let deadline = Instant::now() + Duration::from_secs(120);
    let run = loop {
        if let Some(run) = run_of(&ready) {
            break run;
        }
        if let Ok(Some(status)) = first.try_wait() {
            panic!("the holder ended before it held the key: {status}");
        }
        assert!(Instant::now() < deadline, "the holder never took the key");
        std::thread::sleep(Duration::from_millis(20));
    };

    // A second process of the same key is refused while the first holds it, and told by whom.
    let second = dir.path().join("second");
    let refused = command(spec, "join", &second, Duration::from_millis(200))
        .output()
        .expect("run the second process");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(3), "{stderr}");
    let holder = format!("run key \"{KEY}\" is held by pid {} on ", first.id());
    assert!(stderr.contains(&holder), "expected {holder:?} in: {stderr}");
    assert!(
        stderr.contains("one session writes a run key's run at a time"),
        "{stderr}"
    );
    assert_eq!(
        run_of(&second),
        None,
        "the refused process recorded nothing"
    );

    // SIGKILL: no destructor, no unlock, no goodbye to the database.
    let pid = first.id() as i32;
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    assert!(!first.wait().expect("wait").success());

    // Now the key is free (the holder's death released it): the next process takes it and continues
    // the run the holder left open. It may wait for the server to notice the death.
    let third = dir.path().join("third");
    let joined = command(spec, "join", &third, Duration::from_secs(60))
        .output()
        .expect("run the third process");
    assert!(
        joined.status.success(),
        "{}",
        String::from_utf8_lossy(&joined.stderr)
    );
    assert_eq!(run_of(&third).as_deref(), Some(run.as_str()));

    // One run, both sessions' steps in it, numbered on, its chain whole to its end.
    let store = failcore::store_from_spec(spec).expect("store");
    assert_eq!(store.runs().expect("runs"), vec![run.clone()]);
    let reader = failcore::store::RunReader::open(store.as_ref(), &run).expect("open the run");
    let mut steps = Vec::new();
    for rec in reader {
        if let Some(start) = rec.expect("record").record.body.start() {
            steps.push((start.step, start.tool.clone()));
        }
    }
    assert_eq!(
        steps,
        vec![
            (0, "run_key_step".to_owned()),
            (1, "run_key_step".to_owned())
        ]
    );
    let report = failcore::store::verify_with(
        failcore::store::RunReader::open(store.as_ref(), &run).expect("open the run"),
        &failcore::store::VerifyOptions {
            run: Some(run.clone()),
            ..Default::default()
        },
    );
    assert!(report.is_ok(), "{:?}", report.fault);
}

#[test]
fn sqlite_one_writer_per_run_key_across_processes() {
    if std::env::var(PHASE).is_ok() {
        return;
    }
    if !cfg!(feature = "sqlite") {
        eprintln!("skipping the SQLite run key test: build with --features sqlite");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = format!("sqlite:{}", dir.path().join("traces.db").display());
    one_writer_per_key(&spec);
}

#[test]
fn postgres_one_writer_per_run_key_across_processes() {
    if std::env::var(PHASE).is_ok() {
        return;
    }
    let url = match std::env::var("FAILCORE_PG_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => {
            eprintln!(
                "skipping the Postgres run key test: set FAILCORE_PG_URL=postgres://user@host:port/db \
                 and build with --features postgres to run it"
            );
            return;
        }
    };
    if !cfg!(feature = "postgres") {
        eprintln!("skipping the Postgres run key test: build with --features postgres");
        return;
    }
    let schema = format!("fc_run_key_{}", std::process::id());
    drop_schema(&url, &schema);
    let sep = if url.contains('?') { '&' } else { '?' };
    one_writer_per_key(&format!("{url}{sep}failcore_schema={schema}"));
    drop_schema(&url, &schema);
}

#[cfg(feature = "postgres")]
fn drop_schema(url: &str, schema: &str) {
    let mut c = postgres::Client::connect(url, postgres::NoTls).expect("connect");
    c.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .expect("drop the schema");
}

#[cfg(not(feature = "postgres"))]
fn drop_schema(_: &str, _: &str) {}
