//! Fuzzes the trace reader, `verify` and recovery with arbitrary bytes: they must return errors, never
//! panic, never allocate without bound.
//!
//! `cargo +nightly fuzz run reader` from the repository root (the `fuzz/` directory).

#![no_main]

use failcore_store::{bytes_source, verify, RunReader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut reader = RunReader::new(bytes_source("fuzz", data.to_vec()));
    let mut records = 0u64;
    for item in reader.by_ref() {
        match item {
            Ok(rec) => {
                records += 1;
                assert_eq!(rec.line, records);
            }
            Err(e) => {
                let _ = e.to_string();
                break;
            }
        }
    }
    let _ = reader.torn_tail();
    let report = verify(RunReader::new(bytes_source("fuzz", data.to_vec())));
    // A sound trace is never reported with a fault, and a fault never claims a sound trace.
    assert_eq!(report.is_ok(), report.fault.is_none());
    if report.is_ok() {
        assert!(report.complete);
    }
});
