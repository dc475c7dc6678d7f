//! Property tests: the reader and `verify` return errors on random and mutated traces, never panic, and a
//! mutated trace never verifies unless it is byte-for-byte the original.

mod common;

use common::*;
use failcore_store::{
    bytes_source, verify, Durability, Journal, MemoryStore, RunReader, TraceStore, VerifiedLines,
    VerifiedRecords,
};
use proptest::prelude::*;
use std::sync::{Arc, OnceLock};

/// A valid, complete run's bytes, as a JSONL file holds them: steps of two records and of one.
fn sample() -> &'static [u8] {
    static SAMPLE: OnceLock<Vec<u8>> = OnceLock::new();
    SAMPLE.get_or_init(|| {
        let store = Arc::new(MemoryStore::new());
        let journal = Journal::open(store.clone(), "prop-run", Durability::Flushed).unwrap();
        journal.send(run_start());
        write_steps(&journal, 0, 3);
        // Format 2's one-record steps too.
        journal.send(call(3));
        journal.send(call(4));
        journal.send(run_end(5));
        journal.close().unwrap();
        let mut bytes = Vec::new();
        for rec in RunReader::open(store.as_ref(), "prop-run").unwrap() {
            bytes.extend_from_slice(&rec.unwrap().bytes);
            bytes.push(b'\n');
        }
        bytes
    })
}

/// The sample with `muts` applied.
fn bytes_of(muts: &[Mutation]) -> Vec<u8> {
    let mut bytes = sample().to_vec();
    for m in muts {
        bytes = apply(&bytes, m);
    }
    bytes
}

/// Reads everything and verifies; returns whether verify found the trace sound.
fn read_all(bytes: Vec<u8>) -> bool {
    let mut reader = RunReader::new(bytes_source("prop", bytes.clone()));
    for item in reader.by_ref() {
        if let Err(e) = item {
            // Errors are clear and, when about a line, name it.
            assert!(!e.to_string().is_empty());
            break;
        }
    }
    let _ = reader.torn_tail();
    verify(RunReader::new(bytes_source("prop", bytes))).is_ok()
}

#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Truncate(usize),
    SwapLines(usize, usize),
}

fn apply(bytes: &[u8], m: &Mutation) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let n = out.len().max(1);
    match m {
        Mutation::Set(i, b) => {
            if !out.is_empty() {
                out[i % n] = *b;
            }
        }
        Mutation::Insert(i, ins) => {
            let at = i % (out.len() + 1);
            out.splice(at..at, ins.iter().copied());
        }
        Mutation::Delete(i, len) => {
            let at = i % n;
            let end = (at + len).min(out.len());
            out.drain(at.min(out.len())..end);
        }
        Mutation::Truncate(i) => out.truncate(i % n),
        Mutation::SwapLines(a, b) => {
            let mut lines: Vec<&[u8]> = bytes.split_inclusive(|c| *c == b'\n').collect();
            if !lines.is_empty() {
                let (a, b) = (a % lines.len(), b % lines.len());
                lines.swap(a, b);
            }
            out = lines.concat();
        }
    }
    out
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(i, v)| Mutation::Insert(i, v)),
        (any::<usize>(), 1usize..64).prop_map(|(i, l)| Mutation::Delete(i, l)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
    ]
}

/// JSON-ish noise: lines that look like records more often than random bytes do.
fn jsonish() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            Just(b"{\"v\":1,\"seq\":0,\"ts\":\"t\",\"run\":\"r\",\"prev\":\"p\",\"kind\":\"run_start\"".to_vec()),
            Just(b"{\"v\":2}".to_vec()),
            Just(b"{\"v\":99999999999999999999}".to_vec()),
            Just(b"\"kind\":\"run_end\",\"seal\":\"".to_vec()),
            Just(b"\n".to_vec()),
            Just(b"}".to_vec()),
            Just(vec![0xff, 0xfe, 0x00]),
            prop::collection::vec(any::<u8>(), 0..32),
        ],
        0..24,
    )
    .prop_map(|parts| parts.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        read_all(bytes);
    }

    #[test]
    fn jsonish_noise_never_panics(bytes in jsonish()) {
        read_all(bytes);
    }

    #[test]
    fn the_line_decoder_reads_what_the_derived_decoder_reads(muts in prop::collection::vec(mutation(), 0..3)) {
        let mut bytes = sample().to_vec();
        for m in &muts {
            bytes = apply(&bytes, m);
        }
        for line in bytes.split(|b| *b == b'\n') {
            let fast = failcore_store::Record::from_line(line);
            let derived = serde_json::from_slice::<failcore_store::Record>(line);
            match (&fast, &derived) {
                (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
                (Err(_), Err(_)) => {}
                _ => prop_assert!(false, "the decoders disagree on {:?}: {:?} / {:?}", String::from_utf8_lossy(line), fast, derived),
            }
        }
    }

    #[test]
    fn the_lean_verified_reader_serves_and_refuses_what_the_full_one_does(
        muts in prop::collection::vec(mutation(), 0..3),
        serve_prefix in any::<bool>(),
    ) {
        let bytes = bytes_of(&muts);
        let full: Vec<_> = VerifiedRecords::new(RunReader::new(bytes_source("p", bytes.clone())), "prop-run", serve_prefix)
            .map(|r| r.map(|rec| (rec.line, rec.bytes)).map_err(|e| e.to_string()))
            .collect();
        let lean: Vec<_> = VerifiedLines::new(RunReader::new(bytes_source("p", bytes)), "prop-run", serve_prefix)
            .map(|r| r.map_err(|e| e.to_string()))
            .collect();
        let served = |items: &[Result<(u64, Vec<u8>), String>]| items.iter().filter_map(|r| r.as_ref().ok().cloned()).collect::<Vec<_>>();
        let (full_served, lean_served) = (served(&full), served(&lean));
        // A line that is JSON but not a record (a field missing or of the wrong type) is refused by the full
        // reader as it decodes it, and by the lean one when the next record's `prev`, the seal or the
        // structure refuses it, or, last in a run that never ended, by the reader that decodes the field.
        // Where they stop may then differ; what they serve may not. Anything else, they agree on exactly.
        let record_shaped_but_invalid = bytes_of(&muts).split(|b| *b == b'\n').any(|l| {
            serde_json::from_slice::<serde_json::Value>(l).is_ok() && failcore_store::Record::from_line(l).is_err()
        });
        if record_shaped_but_invalid {
            // Whatever either serves was confirmed by its successor's `prev`, but for the last record served
            // (a run that never ended has nothing after it to confirm it): all before it are the original's.
            let original: Vec<&[u8]> = sample().split(|b| *b == b'\n').collect();
            for served in [&full_served, &lean_served] {
                for (line, bytes) in served.iter().rev().skip(1) {
                    prop_assert_eq!(bytes.as_slice(), original[*line as usize - 1], "{:?}", muts);
                }
            }
        } else {
            prop_assert_eq!(full_served, lean_served, "{:?}", muts);
            prop_assert_eq!(full.iter().any(Result::is_err), lean.iter().any(Result::is_err), "{:?}: {:?} / {:?}", muts, full.last(), lean.last());
        }
    }

    #[test]
    fn a_mutated_trace_errors_never_panics_and_never_verifies(muts in prop::collection::vec(mutation(), 1..4)) {
        let original = sample();
        let mut bytes = original.to_vec();
        for m in &muts {
            bytes = apply(&bytes, m);
        }
        let ok = read_all(bytes.clone());
        if bytes != original {
            prop_assert!(!ok, "a mutated trace verified: {:?}", muts);
        }
    }

    #[test]
    fn recovery_never_panics_and_refuses_what_verify_refuses(muts in prop::collection::vec(mutation(), 1..3)) {
        let mut bytes = sample().to_vec();
        for m in &muts {
            bytes = apply(&bytes, m);
        }
        let dir = tempfile::tempdir().unwrap();
        let store = failcore_store::JsonlStore::new(dir.path());
        drop(store.create("prop-run").unwrap());
        std::fs::write(store.run_path("prop-run"), &bytes).unwrap();
        let report = verify(RunReader::open(&store, "prop-run").unwrap());
        match store.open_append("prop-run") {
            Ok((_, recovery)) => {
                // Only a sound prefix, possibly with a torn tail, is reopened.
                let fault = report.fault.expect("an ended run is not reopened");
                prop_assert!(matches!(fault.kind, failcore_store::FaultKind::Incomplete | failcore_store::FaultKind::TornTail), "{fault}");
                prop_assert_eq!(recovery.torn_bytes.is_some(), fault.kind == failcore_store::FaultKind::TornTail);
            }
            Err(_) => prop_assert!(!report.is_ok() || report.complete),
        }
    }
}

#[test]
fn the_sample_itself_verifies() {
    assert!(read_all(sample().to_vec()));
}
