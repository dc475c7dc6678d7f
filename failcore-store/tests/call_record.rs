//! Format 2's `call` record: a whole step in one record. It verifies like a `step_start` and a `step_end`
//! together, it exists only from format 2, and it round-trips through the record model byte for byte.

mod common;

use common::*;
use failcore_store::{
    bytes_source, encode_line, genesis_hash, line_hash, verify, Body, FaultKind, Record, RunReader,
    Status,
};

/// Chains `bodies` into a trace of run `cr`; `edit` may change each line before it is chained.
fn chained(bodies: &[Body], edit: impl Fn(u64, Vec<u8>) -> Vec<u8>) -> Vec<u8> {
    let mut prev = genesis_hash("cr");
    let mut out = Vec::new();
    for (seq, body) in bodies.iter().enumerate() {
        let line = encode_line(
            seq as u64,
            "2026-01-01T00:00:00Z",
            "cr",
            &prev,
            body.kind(),
            &body.encode_fields().unwrap(),
        );
        let line = edit(seq as u64, line);
        prev = line_hash(&line);
        out.extend_from_slice(&line);
        out.push(b'\n');
    }
    out
}

fn check(bytes: Vec<u8>) -> failcore_store::VerifyReport {
    verify(RunReader::new(bytes_source("cr", bytes)))
}

#[test]
fn a_run_of_call_records_and_step_pairs_verifies_and_counts_both() {
    let bodies = [run_start(), call(0), step_start(1), step_end(1), call(2)];
    let report = check(chained(&bodies, |_, l| l));
    assert_eq!(report.fault.unwrap().kind, FaultKind::Incomplete);
    assert_eq!(report.records, 5);
    // Read back: each call record holds its intent and its outcome, the outcome with the intent's step.
    let records: Vec<Record> = RunReader::new(bytes_source("cr", chained(&bodies, |_, l| l)))
        .map(|r| r.unwrap().record)
        .collect();
    let steps: Vec<(u64, Status)> = records
        .iter()
        .filter_map(|r| r.body.end().map(|e| (e.step, e.status)))
        .collect();
    assert_eq!(steps, [(0, Status::Ok), (1, Status::Ok), (2, Status::Ok)]);
    assert_eq!(
        records.iter().filter_map(|r| r.body.start()).count(),
        3,
        "every step has its intent"
    );
}

#[test]
fn a_call_record_reencodes_to_its_own_bytes() {
    let bytes = chained(&[run_start(), call(7)], |_, l| l);
    let line = bytes.split(|b| *b == b'\n').nth(1).unwrap();
    let text = std::str::from_utf8(line).unwrap();
    assert!(
        text.contains(r#""kind":"call","step":7,"tool":"add""#)
            && text.contains(r#","end":{"status":"ok","output":8,"latency_ns":1000}}"#),
        "{text}"
    );
    let rec = RunReader::decode("cr", 2, line).unwrap();
    let again = encode_line(
        rec.seq,
        &rec.ts,
        &rec.run,
        &rec.prev,
        rec.body.kind(),
        &rec.body.encode_fields().unwrap(),
    );
    assert_eq!(String::from_utf8(again).unwrap(), text);
    // The derived decoder of the record model reads it the same.
    let derived: Record = serde_json::from_slice(line).unwrap();
    assert_eq!(derived, rec);
}

#[test]
fn a_call_record_in_a_format_1_line_is_a_structure_fault() {
    let bytes = chained(&[run_start(), call(0)], |seq, line| {
        if seq == 1 {
            let text = String::from_utf8(line).unwrap();
            text.replacen(r#"{"v":2,"#, r#"{"v":1,"#, 1).into_bytes()
        } else {
            line
        }
    });
    let fault = check(bytes).fault.unwrap();
    assert_eq!(
        (fault.kind, fault.line),
        (FaultKind::Structure, Some(2)),
        "{fault}"
    );
    assert!(fault.message.contains("from format 2"), "{fault}");
}

#[test]
fn a_call_record_is_a_whole_step_it_is_not_ended_or_started_again() {
    for (bodies, says) in [
        (
            vec![run_start(), call(0), step_end(0)],
            "step 0 ends but is not open",
        ),
        (vec![run_start(), call(0), call(0)], "step 0 started twice"),
        (
            vec![run_start(), step_start(0), call(0)],
            "step 0 started twice",
        ),
    ] {
        let fault = check(chained(&bodies, |_, l| l)).fault.unwrap();
        assert_eq!(fault.kind, FaultKind::Structure, "{fault}");
        assert!(fault.message.contains(says), "{fault}");
    }
}

#[test]
fn a_call_record_without_its_outcome_or_with_a_second_step_is_refused() {
    for (from, to, says) in [
        (r#","end":{"#, r#","nend":{"#, "without its `end`"),
        (
            r#","end":{"#,
            r#","end":{"step":9,"#,
            "names a step of its own",
        ),
    ] {
        // A record follows, so that the bad line is not taken for a torn last line.
        let bytes = chained(&[run_start(), call(0), step_start(1)], |seq, line| {
            if seq == 1 {
                let text = String::from_utf8(line).unwrap();
                assert!(text.contains(from));
                text.replacen(from, to, 1).into_bytes()
            } else {
                line
            }
        });
        let fault = check(bytes).fault.unwrap();
        assert_eq!(fault.line, Some(2), "{fault}");
        assert!(fault.message.contains(says), "{says}: {fault}");
    }
}

#[test]
fn a_call_body_serializes_with_serde_in_the_order_it_is_written() {
    let body = call(3);
    let text = serde_json::to_string(&body).unwrap();
    let fields = String::from_utf8(body.encode_fields().unwrap()).unwrap();
    assert_eq!(text, format!("{{\"kind\":\"call\",{}", &fields[1..]));
    let back: Body = serde_json::from_str(&text).unwrap();
    assert_eq!(back, body);
}
