//! Tamper evidence: every single-byte change, every deleted, duplicated or reordered record and every
//! truncation at a record boundary of a sample run is detected by `verify`.

use failcore::store::{bytes_source, verify, JsonlStore, RunReader, VerifyReport};
use failcore::{Error, Session};
use std::sync::Arc;

#[failcore::tool(effect = "pure")]
async fn tamper_add(a: i64, b: i64) -> Result<i64, Error> {
    Ok(a + b)
}

#[failcore::tool]
async fn tamper_fail(why: String) -> Result<i64, Error> {
    Err(Error::Config(why))
}

/// A small, complete run: three calls of a pure tool that succeed (one `call` record each), one call that
/// fails (a `step_start` and a `step_end`), a run_end.
fn sample_run() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(JsonlStore::new(dir.path()));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let run = rt.block_on(async {
        let session = Session::builder().store(store.clone()).open().unwrap();
        session
            .scope(async {
                for i in 0..3 {
                    tamper_add(i, 1).await.unwrap();
                }
                assert!(tamper_fail("no".into()).await.is_err());
            })
            .await;
        session.finish().await.unwrap();
        session.run_id().to_owned()
    });
    std::fs::read(store.run_path(&run)).unwrap()
}

fn check(bytes: Vec<u8>) -> VerifyReport {
    verify(RunReader::new(bytes_source("tampered", bytes)))
}

fn lines(bytes: &[u8]) -> Vec<Vec<u8>> {
    bytes
        .split_inclusive(|b| *b == b'\n')
        .map(<[u8]>::to_vec)
        .collect()
}

fn detected(what: &str, bytes: Vec<u8>) {
    let report = check(bytes);
    assert!(
        report.fault.is_some(),
        "{what}: not detected (verify says OK, {} records)",
        report.records
    );
}

#[test]
fn the_sample_run_verifies() {
    let report = check(sample_run());
    assert!(report.is_ok(), "{:?}", report.fault);
    assert!(report.complete);
    assert_eq!(report.records, 1 + 3 + 2 + 1);
}

#[test]
fn every_single_byte_change_is_detected() {
    let original = sample_run();
    let mut checked = 0;
    for pos in 0..original.len() {
        // A low bit, a case bit, every bit, and a digit or quote swap: edits that keep JSON valid and
        // edits that do not.
        for mask in [0x01u8, 0x20, 0xff] {
            let mut bytes = original.clone();
            bytes[pos] ^= mask;
            detected(&format!("byte {pos} ^ {mask:#04x}"), bytes);
            checked += 1;
        }
        for value in [b'0', b'1', b'"', b' '] {
            if original[pos] != value {
                let mut bytes = original.clone();
                bytes[pos] = value;
                detected(&format!("byte {pos} := {:?}", value as char), bytes);
                checked += 1;
            }
        }
    }
    assert!(checked > 7 * original.len() - original.len());
}

#[test]
fn deleting_any_record_is_detected() {
    let original = lines(&sample_run());
    for i in 0..original.len() {
        let mut l = original.clone();
        l.remove(i);
        detected(&format!("record {i} deleted"), l.concat());
    }
}

#[test]
fn duplicating_any_record_is_detected() {
    let original = lines(&sample_run());
    for i in 0..original.len() {
        let mut l = original.clone();
        l.insert(i, original[i].clone());
        detected(&format!("record {i} duplicated"), l.concat());
        // And a copy placed at the end.
        let mut l = original.clone();
        l.push(original[i].clone());
        detected(&format!("record {i} repeated at the end"), l.concat());
    }
}

#[test]
fn reordering_any_two_records_is_detected() {
    let original = lines(&sample_run());
    for i in 0..original.len() {
        for j in i + 1..original.len() {
            let mut l = original.clone();
            l.swap(i, j);
            detected(&format!("records {i} and {j} swapped"), l.concat());
        }
    }
}

#[test]
fn truncating_at_any_record_boundary_is_detected() {
    let original = lines(&sample_run());
    for keep in 0..original.len() {
        let report = check(original[..keep].concat());
        let fault = report
            .fault
            .unwrap_or_else(|| panic!("truncated to {keep} records: not detected"));
        assert_eq!(
            fault.kind,
            failcore::store::FaultKind::Incomplete,
            "truncated to {keep} records: {fault}"
        );
    }
}

#[test]
fn truncating_inside_a_record_is_detected() {
    let original = sample_run();
    for len in 0..original.len() {
        detected(
            &format!("truncated to {len} bytes"),
            original[..len].to_vec(),
        );
    }
}
