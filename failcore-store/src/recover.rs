//! Recovery: reopening an existing run for appending.
//!
//! A run is scanned from its first line with the same checks as [`crate::verify()`]. A torn last line (a
//! write cut off by a crash) is reported and cut away, and writing resumes after the last whole record, at
//! the next seq and chained to it, as a write-ahead log does in its tolerate-torn-tail mode. Any other fault
//! (a corrupt line, a broken chain, a gap in seq, a newer format) is an error that names the line: nothing
//! is skipped, and nothing is written after a damaged record.

use crate::verify::{Checker, View};
use crate::{chain, LineSource, ReadError, RunReader, StoreError};

/// What reopening a run found, and where writing resumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// The run reopened.
    pub run: String,
    /// Whole records kept.
    pub records: u64,
    /// The seq of the next record written.
    pub next_seq: u64,
    /// The `prev` of the next record: the hash of the last whole record (or of the run id if none).
    pub prev: String,
    /// Bytes of a torn last line that were dropped (and removed from the store), if there was one.
    pub torn_bytes: Option<usize>,
    /// Length in bytes of the whole records kept (where appending resumes).
    pub kept_bytes: u64,
    /// Steps that started and never ended: in flight when the writer stopped.
    pub in_flight: Vec<u64>,
}

/// Scans the lines of `run` and works out where appending resumes. Refuses damaged and ended runs.
pub(crate) fn scan(run: &str, source: Box<dyn LineSource>) -> Result<Recovery, StoreError> {
    let mut reader = RunReader::new(source);
    let name = reader.name().to_owned();
    let damaged = |line: Option<u64>, reason: String| StoreError::Damaged {
        run: run.to_owned(),
        source_name: name.clone(),
        line,
        reason,
    };
    let mut check = Checker::default();
    let mut kept_bytes = 0u64;
    for item in reader.by_ref() {
        let rec = match item {
            Ok(rec) => rec,
            Err(ReadError::Store(e)) => return Err(e),
            Err(e) => return Err(damaged(e.line(), e.to_string())),
        };
        if rec.record.run != run {
            return Err(damaged(
                Some(rec.line),
                format!("record of run {} inside run {run}", rec.record.run),
            ));
        }
        check
            .record(&rec.bytes, &View::of(&rec.record), rec.line)
            .map_err(|f| damaged(f.line, f.message))?;
        kept_bytes += rec.bytes.len() as u64 + 1;
    }
    if check.ended {
        return Err(StoreError::Ended {
            run: run.to_owned(),
        });
    }
    let mut in_flight: Vec<u64> = check.open.iter().copied().collect();
    in_flight.sort_unstable();
    Ok(Recovery {
        run: run.to_owned(),
        records: check.seq,
        next_seq: check.seq,
        prev: if check.seq == 0 {
            chain::genesis_hash(run)
        } else {
            check.prev
        },
        torn_bytes: reader.torn_tail(),
        kept_bytes,
        in_flight,
    })
}
