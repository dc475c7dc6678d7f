//! What the SQL backends share: the columns extracted from a line for the indexes, and writer tokens.

use serde::Deserialize;

/// The schema version this build writes. Stores refuse a newer one (written by a newer FailCore).
pub(crate) const SCHEMA_VERSION: i64 = 1;

/// A run is read in pages of at most this many lines...
pub(crate) const PAGE_LINES: i64 = 1000;
/// ...and about this many bytes, so that a large run is never held in memory whole.
pub(crate) const PAGE_BYTES: i64 = 8 << 20;

/// The indexed fields of one line. The line's bytes stay the source of truth; these only serve queries
/// ("the successes of fingerprint F in run R"). A line that does not parse is stored with no fields.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Indexed {
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub fp: Option<String>,
    #[serde(default)]
    pub step: Option<i64>,
    #[serde(default)]
    pub status: Option<String>,
    /// A `call` record's outcome, whose status is the step's.
    #[serde(default)]
    end: Option<EndStatus>,
}

#[derive(Debug, Default, Deserialize)]
struct EndStatus {
    #[serde(default)]
    status: Option<String>,
}

impl Indexed {
    pub(crate) fn of(line: &[u8]) -> Indexed {
        let mut ix = serde_json::from_slice::<Indexed>(line).unwrap_or_default();
        if let Some(end) = ix.end.take().filter(|_| ix.kind.as_deref() == Some("call")) {
            ix.status = end.status;
        }
        ix
    }
}

/// The columns stored beside a line's bytes, as read back.
#[derive(Debug, Default)]
pub(crate) struct Columns {
    pub seq: i64,
    pub kind: Option<String>,
    pub fp: Option<String>,
    pub step: Option<i64>,
    pub status: Option<String>,
}

/// Checks the columns stored beside a line against the line's own bytes: they live outside the chain, so
/// an edit of one (say `status`, which queries filter on) would otherwise go unnoticed.
pub(crate) fn cross_check(
    name: &str,
    pos: i64,
    line: &[u8],
    columns: &Columns,
) -> Result<(), crate::StoreError> {
    #[derive(Deserialize)]
    struct Seq {
        #[serde(default)]
        seq: Option<i64>,
    }
    let ix = Indexed::of(line);
    let seq = serde_json::from_slice::<Seq>(line).ok().and_then(|s| s.seq);
    let mismatch = |column: &str, stored: String, in_line: String| {
        Err(crate::StoreError::Column {
            source_name: name.to_owned(),
            line: u64::try_from(pos).unwrap_or(0) + 1,
            detail: format!(
                "column `{column}` holds {stored} but the record holds {in_line}: the row was edited outside the chain"
            ),
        })
    };
    let show = |v: &Option<String>| v.as_deref().map_or("NULL".to_owned(), |s| format!("{s:?}"));
    let show_int = |v: &Option<i64>| v.map_or("NULL".to_owned(), |n| n.to_string());
    // A line that does not parse is stored with no fields; the reader reports the line itself.
    if seq.is_some() && seq != Some(columns.seq) {
        return mismatch("seq", columns.seq.to_string(), show_int(&seq));
    }
    if seq.is_none() {
        return Ok(());
    }
    if ix.kind != columns.kind {
        return mismatch("kind", show(&columns.kind), show(&ix.kind));
    }
    if ix.fp != columns.fp {
        return mismatch("fp", show(&columns.fp), show(&ix.fp));
    }
    if ix.step != columns.step {
        return mismatch("step", show_int(&columns.step), show_int(&ix.step));
    }
    if ix.status != columns.status {
        return mismatch("status", show(&columns.status), show(&ix.status));
    }
    Ok(())
}

/// A token that names one writer of one run: the fencing token checked by every commit.
pub(crate) fn writer_token(run: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut h = blake3::Hasher::new();
    h.update(run.as_bytes());
    h.update(&std::process::id().to_le_bytes());
    h.update(&now.to_le_bytes());
    h.update(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    let host = std::env::var("HOSTNAME").unwrap_or_default();
    h.update(host.as_bytes());
    h.finalize().to_hex()[..32].to_owned()
}

/// Nanoseconds since the epoch, for the `created_ns` column.
pub(crate) fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The error for a writer whose token no longer owns the run.
pub(crate) fn fenced(run: &str, location: &str) -> crate::StoreError {
    crate::StoreError::Locked {
        run: run.to_owned(),
        detail: format!(
            "this writer was fenced off: {location} records another writer for the run"
        ),
    }
}

/// Where a reopened run's writer resumes: after the `recovery.records` lines kept (a SQL run's lines sit
/// at positions 0, 1, ... with no gap), its last seq the last record's.
pub(crate) fn resume_at(writer: &mut crate::batch::BatchWriter, recovery: &crate::Recovery) {
    writer.next_pos = i64::try_from(recovery.records).unwrap_or(i64::MAX);
    writer.last_seq = recovery
        .next_seq
        .checked_sub(1)
        .map(|s| i64::try_from(s).unwrap_or(i64::MAX));
}
