//! `verify` checks the header of chain-valid records too: a well-chained record with a malformed `ts` is a
//! structure fault.

mod common;

use common::*;
use failcore_store::{
    bytes_source, encode_line, genesis_hash, line_hash, verify, FaultKind, RunReader,
};

fn chained(ts: &[&str]) -> Vec<u8> {
    let bodies = [run_start(), step_start(0), step_end(0)];
    let mut prev = genesis_hash("hdr");
    let mut out = Vec::new();
    for (seq, (body, ts)) in bodies.iter().zip(ts).enumerate() {
        let line = encode_line(
            seq as u64,
            ts,
            "hdr",
            &prev,
            body.kind(),
            &body.encode_fields().unwrap(),
        );
        prev = line_hash(&line);
        out.extend_from_slice(&line);
        out.push(b'\n');
    }
    out
}

#[test]
fn a_well_chained_trace_with_good_timestamps_is_only_incomplete() {
    let ts = "2026-01-02T03:04:05.000006Z";
    let report = verify(RunReader::new(bytes_source("t", chained(&[ts, ts, ts]))));
    assert_eq!(report.records, 3);
    assert_eq!(report.fault.unwrap().kind, FaultKind::Incomplete);
}

#[test]
fn a_malformed_timestamp_is_a_structure_fault_even_when_the_chain_holds() {
    let ok = "2026-01-02T03:04:05.000006Z";
    for bad in [
        "yesterday",
        "2026-13-02T03:04:05Z",
        "2026-01-02 03:04:05Z",
        "",
    ] {
        let report = verify(RunReader::new(bytes_source("t", chained(&[ok, bad, ok]))));
        let fault = report.fault.unwrap();
        assert_eq!(fault.kind, FaultKind::Structure, "{bad}: {fault}");
        assert_eq!(fault.line, Some(2));
    }
}

#[test]
fn unknown_fields_of_a_v1_record_are_ignored_by_the_reader_but_covered_by_the_chain() {
    let ts = "2026-01-02T03:04:05.000006Z";
    let mut bytes = chained(&[ts, ts, ts]);
    // Insert an unknown field into line 2; the reader accepts it, the chain catches the edit.
    let line2 = bytes.iter().position(|b| *b == b'\n').unwrap() + 1;
    // Just before the closing brace of line 2's object.
    let at = line2 + bytes[line2..].iter().position(|b| *b == b'\n').unwrap() - 1;
    assert_eq!(bytes[at], b'}');
    bytes.splice(at..at, br#","extra":{"x":[1,2]}"#.iter().copied());
    let records: Vec<_> = RunReader::new(bytes_source("t", bytes.clone()))
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(records.len(), 3);
    let fault = verify(RunReader::new(bytes_source("t", bytes)))
        .fault
        .unwrap();
    assert_eq!((fault.kind, fault.line), (FaultKind::Chain, Some(3)));
}
