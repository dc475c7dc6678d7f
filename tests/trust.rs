//! A trace you can trust, end to end: resume serves only what verifies, a run's file replaced by another's
//! is refused, two processes never resume one run at once, an output too large for a trace line fails its
//! call instead of being acknowledged, and a session with a signing key writes checkpoints `verify --key`
//! accepts.

use failcore::store::seal::{PublicKey, SealKey};
use failcore::store::{verify_run, verify_with, JsonlStore, RunReader, VerifyOptions};
use failcore::{Error, Session};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

static EXECUTED: AtomicU32 = AtomicU32::new(0);

#[failcore::tool(effect = "write")]
async fn trust_value(k: i64) -> Result<i64, Error> {
    EXECUTED.fetch_add(1, Ordering::SeqCst);
    Ok(k * 10)
}

static BIG_EXECUTED: AtomicU32 = AtomicU32::new(0);

#[failcore::tool(effect = "write")]
async fn trust_big(k: u32, bytes: usize) -> Result<String, Error> {
    BIG_EXECUTED.fetch_add(1, Ordering::SeqCst);
    Ok(format!("{k}:{}", "x".repeat(bytes)))
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A finished run of `trust_value(0..n)`.
fn record(store: &Arc<JsonlStore>, n: i64) -> String {
    rt().block_on(async {
        let session = Session::builder().store(store.clone()).open().unwrap();
        session
            .scope(async {
                for k in 0..n {
                    trust_value(k).await.unwrap();
                }
            })
            .await;
        session.finish().await.unwrap();
        session.run_id().to_owned()
    })
}

/// Resumes `source`, calls `trust_value(0..n)`, and returns what each call got and how many bodies ran.
fn resume(
    store: &Arc<JsonlStore>,
    source: &str,
    n: i64,
    prefix: bool,
) -> Result<(Vec<i64>, u32), Error> {
    rt().block_on(async {
        let session = Session::builder()
            .store(store.clone())
            .resume(source)
            .resume_prefix(prefix)
            .open()?;
        let before = EXECUTED.load(Ordering::SeqCst);
        let got = session
            .scope(async {
                let mut got = Vec::new();
                for k in 0..n {
                    got.push(trust_value(k).await.unwrap());
                }
                got
            })
            .await;
        session.finish().await?;
        Ok((got, EXECUTED.load(Ordering::SeqCst) - before))
    })
}

// Tests share EXECUTED: they run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn resume_refuses_an_edited_output_and_serves_the_verified_prefix_only_when_asked() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(JsonlStore::new(dir.path()));
    let source = record(&store, 5);
    let path = store.run_path(&source);
    let text = std::fs::read_to_string(&path).unwrap();
    // The recorded output of trust_value(3) is 30: the adversary wants 999 served instead.
    let edited = text.replacen("\"output\":30,", "\"output\":999,", 1);
    assert_ne!(edited, text);
    std::fs::write(&path, edited).unwrap();

    let err = resume(&store, &source, 5, false).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("failed verification"), "{message}");
    assert!(message.contains(" line "), "names the record: {message}");

    // Asked for explicitly: the calls recorded before the edit are served, the rest run again; 999 never.
    let (got, executed) = resume(&store, &source, 5, true).unwrap();
    assert_eq!(got, [0, 10, 20, 30, 40]);
    assert_eq!(executed, 2, "trust_value(3) and (4) run again");
}

#[test]
fn resume_refuses_a_run_whose_file_was_replaced_by_another_runs() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(JsonlStore::new(dir.path()));
    let a = record(&store, 2);
    let b = record(&store, 4);
    std::fs::copy(store.run_path(&b), store.run_path(&a)).unwrap();
    let err = resume(&store, &a, 4, false).unwrap_err().to_string();
    assert!(
        err.contains(&format!("belong to run {b}, not to run {a}")),
        "{err}"
    );
    let report = verify_run(store.as_ref(), &a).unwrap();
    assert!(!report.is_ok());
}

#[test]
fn an_output_over_the_line_limit_fails_its_call_and_every_acknowledged_call_resumes() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(JsonlStore::new(dir.path()));
    let big = 70 * 1024 * 1024;
    let source = rt().block_on(async {
        let session = Session::builder().store(store.clone()).open().unwrap();
        session
            .scope(async {
                for k in 0..3 {
                    trust_big(k, 10).await.unwrap();
                }
                let err = trust_big(3, big).await.unwrap_err().to_string();
                assert!(err.contains("over the trace's limit"), "{err}");
            })
            .await;
        session.finish().await.unwrap();
        session.run_id().to_owned()
    });
    assert!(verify_run(store.as_ref(), &source).unwrap().is_ok());
    let before = BIG_EXECUTED.load(Ordering::SeqCst);
    rt().block_on(async {
        let session = Session::builder()
            .store(store.clone())
            .resume(&source)
            .open()
            .unwrap();
        session
            .scope(async {
                for k in 0..3 {
                    assert_eq!(trust_big(k, 10).await.unwrap(), format!("{k}:xxxxxxxxxx"));
                }
            })
            .await;
        session.finish().await.unwrap();
    });
    assert_eq!(
        BIG_EXECUTED.load(Ordering::SeqCst),
        before,
        "all three served"
    );
}

#[test]
fn a_session_with_a_signing_key_writes_checkpoints_that_verify_with_its_public_key() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(JsonlStore::new(dir.path()));
    let key = SealKey::from_seed([3; 32]);
    let run = rt().block_on(async {
        let session = Session::builder()
            .store(store.clone())
            .signing_key(key.clone())
            .open()
            .unwrap();
        session
            .scope(async {
                for k in 0..3 {
                    trust_value(k).await.unwrap();
                }
            })
            .await;
        session.finish().await.unwrap();
        session.run_id().to_owned()
    });
    let report = verify_with(
        RunReader::open(store.as_ref(), &run).unwrap(),
        &VerifyOptions {
            run: Some(run.clone()),
            key: Some(PublicKey::parse(key.public_hex()).unwrap()),
            ..VerifyOptions::default()
        },
    );
    assert!(report.is_ok(), "{report:?}");
    assert!(report.signed.unwrap().checkpoints >= 2);
    // A signed run resumes like any other.
    let (got, executed) = resume(&store, &run, 3, false).unwrap();
    assert_eq!((got, executed), (vec![0, 10, 20], 0));
}

/// Two processes resume the same run at once: the run's unrecorded calls execute once, not twice.
#[test]
fn two_processes_resuming_one_run_execute_its_unrecorded_calls_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(JsonlStore::new(dir.path().join("store")));
    // The source: a run that died having recorded nothing (opened, never finished).
    let source = {
        let session = Session::builder().store(store.clone()).open().unwrap();
        let id = session.run_id().to_owned();
        drop(session);
        id
    };
    let log = dir.path().join("executions");
    let child = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_resume_child"))
            .env("FAILCORE_DIR", dir.path().join("store"))
            .env("FAILCORE_RESUME", &source)
            .env("RESUME_CHILD_LOG", &log)
            .env_remove("FAILCORE_STORE")
            .env_remove("FAILCORE_OFFLINE")
            .env_remove("FAILCORE_CLAIM_WAIT")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (child(), child());
    let outputs = [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()];
    let executions = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .count();
    assert_eq!(executions, 20, "each of the 20 calls ran once");
    let refused: Vec<_> = outputs.iter().filter(|o| !o.status.success()).collect();
    assert_eq!(refused.len(), 1, "one resumer won, one was refused");
    let stderr = String::from_utf8_lossy(&refused[0].stderr);
    assert!(
        stderr.contains(&format!("run {source} is being resumed by pid ")),
        "{stderr}"
    );
}
