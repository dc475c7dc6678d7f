//! A real process is killed with SIGKILL in the middle of a run; a second process resumes it with
//! `FAILCORE_RESUME=last`. Exactly the steps without a recorded success execute again, counted through a
//! side effect (a log file the tool appends to each time its body really runs).

use failcore::store::{verify, Body, JsonlStore, RunReader, Status, TraceStore};
use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHILD: &str = env!("CARGO_BIN_EXE_resume_child");

fn logged(path: &std::path::Path) -> Vec<u32> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

#[test]
fn a_killed_run_resumes_executing_only_the_steps_without_a_recorded_success() {
    let dir = tempfile::tempdir().unwrap();
    let traces = dir.path().join("traces");
    let log1 = dir.path().join("run1.log");
    let log2 = dir.path().join("run2.log");

    let mut child = Command::new(CHILD)
        .env("FAILCORE_DIR", &traces)
        .env("RESUME_CHILD_LOG", &log1)
        .env_remove("FAILCORE_RESUME")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while logged(&log1).len() < 8 {
        assert!(Instant::now() < deadline, "the child made no progress");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the child ended before it was killed"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let executed_first: Vec<u32> = logged(&log1);
    assert!(executed_first.len() < 20, "killed mid-run");

    let store = JsonlStore::new(&traces);
    let first = store.resolve("last").unwrap();
    let mut succeeded = BTreeSet::new();
    let mut starts = std::collections::HashMap::new();
    let mut reader = RunReader::open(&store, &first).unwrap();
    for rec in reader.by_ref() {
        let body = rec.unwrap().record.body;
        if let Some(s) = body.start() {
            starts.insert(s.step, s.args["n"].as_u64().unwrap() as u32);
        }
        match body.end() {
            Some(e) if e.status == Status::Ok => {
                succeeded.insert(starts[&e.step]);
            }
            _ => {}
        }
    }
    assert!(!succeeded.is_empty());

    let status = Command::new(CHILD)
        .env("FAILCORE_DIR", &traces)
        .env("FAILCORE_RESUME", "last")
        .env("RESUME_CHILD_LOG", &log2)
        .status()
        .unwrap();
    assert!(status.success());

    let executed_again: BTreeSet<u32> = logged(&log2).into_iter().collect();
    let expected: BTreeSet<u32> = (0..20).filter(|n| !succeeded.contains(n)).collect();
    assert_eq!(
        executed_again, expected,
        "only steps without a recorded success run again"
    );
    assert_eq!(
        logged(&log2).len(),
        expected.len(),
        "each of them exactly once"
    );

    let second = store.resolve("last").unwrap();
    assert_ne!(first, second);
    let report = verify(RunReader::open(&store, &second).unwrap());
    assert!(report.is_ok(), "{report:?}");
    let resumed_from =
        RunReader::open(&store, &second)
            .unwrap()
            .find_map(|r| match r.unwrap().record.body {
                Body::RunStart(s) => s.resumed_from,
                _ => None,
            });
    assert_eq!(resumed_from.as_deref(), Some(first.as_str()));

    // Offline, from the environment alone: the whole workflow is answered from the resumed run's trace and
    // no step body runs at all.
    let log3 = dir.path().join("run3.log");
    let status = Command::new(CHILD)
        .env("FAILCORE_DIR", &traces)
        .env("FAILCORE_OFFLINE", "last")
        .env_remove("FAILCORE_RESUME")
        .env("RESUME_CHILD_LOG", &log3)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "every step had a recorded success to replay"
    );
    assert!(
        logged(&log3).is_empty(),
        "offline, nothing executes: {:?}",
        logged(&log3)
    );
    let third = store.resolve("last").unwrap();
    let replayed = RunReader::open(&store, &third)
        .unwrap()
        .filter(|r| matches!(r.as_ref().unwrap().record.body.end(), Some(e) if e.status == Status::Replayed))
        .count();
    assert_eq!(replayed, 20);
}
