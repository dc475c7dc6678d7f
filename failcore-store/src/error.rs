use std::io;

/// An error from a trace store or the journal.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not read or write.
    #[error("trace store I/O error on {target}: {source}")]
    Io {
        target: String,
        #[source]
        source: io::Error,
    },
    /// Another writer holds the run.
    #[error("run {run} is already open for writing by another writer ({detail})")]
    Locked { run: String, detail: String },
    /// Another resumer holds the run's claim.
    #[error("run {run} is being resumed by {holder} ({detail}); one resumer per run: wait for it to finish, or ask to wait for the claim")]
    Claimed {
        run: String,
        holder: String,
        detail: String,
    },
    /// Another session holds the run key (see [`crate::key_lock`]).
    #[error("run key {key:?} is held by {holder} ({detail}); one session writes a run key's run at a time: wait for that session to end, or wait longer for the key")]
    KeyHeld {
        key: String,
        holder: String,
        detail: String,
    },
    /// A run was created twice.
    #[error("run {run} already exists")]
    Exists { run: String },
    /// The run does not exist in the store.
    #[error("no run {run} in {store}")]
    NotFound { run: String, store: String },
    /// The store holds no runs at all (asked for `last`).
    #[error("no runs in {store}")]
    Empty { store: String },
    /// The journal failed earlier (a failed write or fsync is fatal to a run, never retried).
    #[error("the trace journal of run {run} failed earlier and accepts no more records: {reason}")]
    Failed { run: String, reason: String },
    /// A run cannot be reopened for appending: a record before its tail is damaged (never skipped).
    #[error("cannot reopen run {run} for appending: {source_name}{}: {reason}", line.map(|l| format!(" line {l}")).unwrap_or_default())]
    Damaged {
        run: String,
        source_name: String,
        line: Option<u64>,
        reason: String,
    },
    /// A run that ended (it has a run_end) cannot be appended to.
    #[error("run {run} has ended (it has a run_end); an ended run is never appended to")]
    Ended { run: String },
    /// A run read to be served (resumed, replayed) failed verification: nothing of it is served.
    #[error("run {run} failed verification at {source_name}{}: {reason} ({kind}); it is not served. {verified} records verified before it: set FAILCORE_RESUME_PREFIX=1 (or SessionBuilder::resume_prefix(true)) to serve only those", line.map(|l| format!(" line {l}")).unwrap_or_default())]
    Unverified {
        run: String,
        source_name: String,
        line: Option<u64>,
        kind: &'static str,
        reason: String,
        verified: u64,
    },
    /// A record would make a line longer than the format allows: refused before it was acknowledged.
    #[error("{what} of {bytes} bytes is over the trace format's limit of {limit} bytes: it was not recorded")]
    TooLarge {
        what: String,
        bytes: usize,
        limit: usize,
    },
    /// A SQL store's indexed column disagrees with the line it indexes.
    #[error("{source_name} line {line}: {detail}")]
    Column {
        source_name: String,
        line: u64,
        detail: String,
    },
    /// A record could not be encoded.
    #[error("could not encode a trace record: {0}")]
    Encode(String),
    /// The database server refused or failed an operation: its message, its SQLSTATE code when it sent
    /// one, and what to do about it when that is known (connection exhaustion).
    #[error("{store}: {message}{}{}", sqlstate.as_ref().map(|c| format!(" (SQLSTATE {c})")).unwrap_or_default(), hint.as_ref().map(|h| format!("; hint: {h}")).unwrap_or_default())]
    Database {
        store: String,
        sqlstate: Option<String>,
        message: String,
        hint: Option<String>,
    },
    /// A payload stored apart from its record (see [`crate::blob`]) could not be read back as recorded.
    #[error("{store}: the payload {blob} that a record names cannot be served: {reason}")]
    Blob {
        store: String,
        blob: crate::BlobHash,
        reason: String,
    },
    /// The store keeps no payloads apart from their records: large outputs are written inline.
    #[error("{store} keeps no payloads apart from their records")]
    NoBlobs { store: String },
    /// SQLite failed an operation on the store's database file.
    #[cfg(feature = "sqlite")]
    #[error("sqlite:{file}: {source}")]
    Sqlite {
        file: String,
        #[source]
        source: rusqlite::Error,
    },
    /// The backend refused the operation for another reason.
    #[error("{0}")]
    Backend(String),
}

impl StoreError {
    pub(crate) fn io(target: impl Into<String>, source: io::Error) -> Self {
        StoreError::Io {
            target: target.into(),
            source,
        }
    }
}
