//! Reopening a run for appending: torn tails, damage before the tail, ended runs, the writer lock.

mod common;

use common::*;
use failcore_store::{
    verify, Durability, FaultKind, Journal, JsonlStore, MemoryStore, RunReader, StoreError,
    TraceStore,
};
use std::io::Write;
use std::sync::Arc;

fn crashed_run(dir: &std::path::Path, run: &str, steps: u64) -> Arc<JsonlStore> {
    let store = Arc::new(JsonlStore::new(dir));
    let journal = Journal::open(store.clone(), run, Durability::Flushed).unwrap();
    journal.send(run_start());
    write_steps(&journal, 0, steps);
    journal.send(step_start(steps)); // in flight when the "crash" came
    journal.close().unwrap();
    store
}

#[test]
fn a_torn_tail_is_reported_cut_away_and_appending_resumes_after_the_last_whole_record() {
    let dir = tempfile::tempdir().unwrap();
    let store = crashed_run(dir.path(), "r1", 3);
    let path = store.run_path("r1");
    let whole = std::fs::read(&path).unwrap();
    let torn = br#"{"v":1,"seq":9,"ts":"2026-01-01T00:00:00.000000Z","run":"r1","prev":"ab"#;
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(torn)
        .unwrap();

    let (journal, recovery) = Journal::reopen(store.clone(), "r1", Durability::Synced).unwrap();
    assert_eq!(recovery.torn_bytes, Some(torn.len()));
    assert_eq!(recovery.records, 8);
    assert_eq!(recovery.next_seq, 8);
    assert_eq!(recovery.kept_bytes, whole.len() as u64);
    assert_eq!(recovery.in_flight, vec![3]);
    // The torn bytes are gone from the file before anything new is written.
    assert_eq!(std::fs::read(&path).unwrap(), whole);

    journal.send(step_end(3));
    write_steps(&journal, 4, 2);
    journal.send(run_end(6));
    journal.close().unwrap();

    let report = verify(RunReader::open(store.as_ref(), "r1").unwrap());
    assert!(report.is_ok(), "{:?}", report.fault);
    assert!(report.complete);
    assert_eq!(report.records, 8 + 1 + 4 + 1);
}

#[test]
fn an_intact_run_resumes_with_nothing_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let store = crashed_run(dir.path(), "r2", 2);
    let (journal, recovery) = Journal::reopen(store.clone(), "r2", Durability::Flushed).unwrap();
    assert_eq!(recovery.torn_bytes, None);
    assert_eq!(recovery.next_seq, 6);
    let last = RunReader::open(store.as_ref(), "r2")
        .unwrap()
        .last()
        .unwrap()
        .unwrap();
    assert_eq!(recovery.prev, failcore_store::line_hash(&last.bytes));
    journal.send(step_end(2));
    journal.send(run_end(3));
    journal.close().unwrap();
    assert!(verify(RunReader::open(store.as_ref(), "r2").unwrap()).is_ok());
}

#[test]
fn an_empty_run_file_resumes_at_seq_zero() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(JsonlStore::new(dir.path()));
    drop(store.create("r0").unwrap());
    let (journal, recovery) = Journal::reopen(store.clone(), "r0", Durability::Flushed).unwrap();
    assert_eq!(recovery.next_seq, 0);
    assert_eq!(recovery.prev, failcore_store::genesis_hash("r0"));
    journal.send(run_start());
    journal.send(run_end(0));
    journal.close().unwrap();
    assert!(verify(RunReader::open(store.as_ref(), "r0").unwrap()).is_ok());
}

#[test]
fn corruption_before_the_tail_is_an_error_naming_the_line_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = crashed_run(dir.path(), "r3", 3);
    let path = store.run_path("r3");
    let mut bytes = std::fs::read(&path).unwrap();
    // Damage line 3 (a byte inside its JSON).
    let line3 = bytes
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .nth(1)
        .unwrap()
        .0
        + 10;
    bytes[line3] = b'#';
    std::fs::write(&path, &bytes).unwrap();
    let err = store
        .open_append("r3")
        .err()
        .expect("a damaged run must be refused");
    match &err {
        StoreError::Damaged { line, .. } => assert_eq!(*line, Some(3), "{err}"),
        other => panic!("expected Damaged, got {other:?}"),
    }
    assert!(err.to_string().contains("line 3"), "{err}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        bytes,
        "a refused run is left as it is"
    );
}

#[test]
fn an_edited_record_breaks_the_chain_and_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = crashed_run(dir.path(), "r4", 3);
    let path = store.run_path("r4");
    let text = std::fs::read_to_string(&path).unwrap();
    // A valid-looking edit: the output of step 0 changed from 1 to 7.
    let edited = text.replacen("\"output\":1", "\"output\":7", 1);
    assert_ne!(edited, text);
    std::fs::write(&path, edited).unwrap();
    match store.open_append("r4") {
        Err(StoreError::Damaged { line, reason, .. }) => {
            assert_eq!(line, Some(4), "{reason}");
            assert!(reason.contains("prev"), "{reason}");
        }
        other => panic!("expected Damaged, got {:?}", other.map(|(_, r)| r)),
    }
}

#[test]
fn an_ended_run_is_not_appended_to() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(JsonlStore::new(dir.path()));
    let journal = Journal::open(store.clone(), "r5", Durability::Flushed).unwrap();
    journal.send(run_start());
    journal.send(run_end(0));
    journal.close().unwrap();
    assert!(matches!(
        store.open_append("r5"),
        Err(StoreError::Ended { .. })
    ));
}

#[test]
fn a_second_writer_is_refused_while_the_first_holds_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let store = crashed_run(dir.path(), "r6", 1);
    let (journal, _) = Journal::reopen(store.clone(), "r6", Durability::Flushed).unwrap();
    let second = store.open_append("r6");
    match second {
        Err(StoreError::Locked { run, .. }) => assert_eq!(run, "r6"),
        other => panic!("expected Locked, got {:?}", other.map(|(_, r)| r)),
    }
    journal.close().unwrap();
    // Once the first writer is gone, the run can be reopened.
    assert!(store.open_append("r6").is_ok());
}

#[test]
fn a_missing_run_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let store = JsonlStore::new(dir.path());
    assert!(matches!(
        store.open_append("nope"),
        Err(StoreError::NotFound { .. })
    ));
}

#[test]
fn the_memory_store_reopens_runs_too() {
    let store = Arc::new(MemoryStore::new());
    let journal = Journal::open(store.clone(), "m1", Durability::Flushed).unwrap();
    journal.send(run_start());
    write_steps(&journal, 0, 2);
    // Still open: refused.
    assert!(matches!(
        store.open_append("m1"),
        Err(StoreError::Locked { .. })
    ));
    journal.close().unwrap();
    let (journal, recovery) = Journal::reopen(store.clone(), "m1", Durability::Flushed).unwrap();
    assert_eq!(recovery.next_seq, 5);
    journal.send(run_end(2));
    journal.close().unwrap();
    let report = verify(RunReader::open(store.as_ref(), "m1").unwrap());
    assert!(report.is_ok(), "{:?}", report.fault);
}

#[test]
fn verify_reports_the_torn_tail_that_recovery_drops() {
    let dir = tempfile::tempdir().unwrap();
    let store = crashed_run(dir.path(), "r7", 1);
    let path = store.run_path("r7");
    std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(b"{\"v\":1,\"se")
        .unwrap();
    let report = verify(RunReader::open(store.as_ref(), "r7").unwrap());
    let fault = report.fault.expect("a torn tail is a fault");
    assert_eq!(fault.kind, FaultKind::TornTail);
    assert_eq!(fault.line, Some(5));
}
