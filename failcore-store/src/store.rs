//! The `TraceStore` trait that every backend implements.

use crate::claim::{Claim, ClaimOptions};
use crate::{KeyLock, StoreError};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// How durable a record must be before the call that wrote it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Durability {
    /// Handed to the background writer; a crash may lose the tail. Fastest.
    Buffered,
    /// Written to the OS before the call returns: survives a crash of the process.
    #[default]
    Flushed,
    /// Synced to stable storage (fsync) before the call returns: survives power loss. Concurrent callers
    /// share one sync (group commit).
    Synced,
}

impl Durability {
    pub fn as_str(self) -> &'static str {
        match self {
            Durability::Buffered => "buffered",
            Durability::Flushed => "flushed",
            Durability::Synced => "synced",
        }
    }
}

impl FromStr for Durability {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "buffered" => Ok(Durability::Buffered),
            "flushed" => Ok(Durability::Flushed),
            "synced" => Ok(Durability::Synced),
            other => Err(format!(
                "unknown durability `{other}`: expected buffered, flushed or synced"
            )),
        }
    }
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One encoded record: its seq and its exact bytes, without the newline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub seq: u64,
    pub bytes: Vec<u8>,
}

/// What a [`LineSource`] yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk {
    /// A whole line (its terminator removed).
    Line(Vec<u8>),
    /// Bytes at the end with no terminator: a write that was cut off.
    Unterminated(Vec<u8>),
}

/// The stored lines of one run, in order.
pub trait LineSource: Send {
    /// The next line, `None` at the end.
    fn next_chunk(&mut self) -> Result<Option<Chunk>, StoreError>;
    /// A name for error messages (a file path, a table and run id).
    fn name(&self) -> &str;
}

/// Called with the outcome of records handed to [`RunWriter::submit`], from any thread.
pub type Done = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// The writer of one run. Only one exists per run at a time: backends refuse a second one.
pub trait RunWriter: Send {
    /// Appends whole records in order and hands them to the OS (or the database) before returning.
    fn append(&mut self, lines: &[Line]) -> Result<(), StoreError>;
    /// Makes everything appended so far durable against power loss.
    fn sync(&mut self) -> Result<(), StoreError>;

    /// Whether this writer commits through a committer its store shares between runs, batching the
    /// records of many runs into one round trip and one commit (the SQL stores). The journal then hands it
    /// records with [`RunWriter::submit`] and the caller awaits the commit; otherwise the journal appends on
    /// the caller's thread.
    fn batched(&self) -> bool {
        false
    }

    /// Hands `lines` over to be committed after everything submitted before (and made durable against
    /// power loss too when `sync`), and calls `done` with the outcome, from any thread. Empty `lines` wait
    /// for everything submitted before. The default commits at once, on the calling thread.
    fn submit(&mut self, lines: Vec<Line>, sync: bool, done: Done) {
        let mut result = if lines.is_empty() {
            Ok(())
        } else {
            self.append(&lines)
        };
        if result.is_ok() && sync {
            result = self.sync();
        }
        done(result)
    }

    /// A handle that syncs what this writer has appended without borrowing it, so that a background
    /// thread can sync while callers keep appending. `None` (the default): the journal calls
    /// [`RunWriter::sync`] under the run's lock.
    fn sync_handle(&mut self) -> Result<Option<Box<dyn SyncHandle>>, StoreError> {
        Ok(None)
    }
}

/// Syncs a run's writes from another thread than the writer's (see [`RunWriter::sync_handle`]).
pub trait SyncHandle: Send {
    /// Makes everything appended by the run's writer so far durable against power loss.
    fn sync(&mut self) -> Result<(), StoreError>;
}

/// A place where traces live.
pub trait TraceStore: Send + Sync + fmt::Debug {
    /// Where this store is, for messages (`jsonl:.failcore`, `memory`, ...).
    fn location(&self) -> String;

    /// Creates a new run and returns its only writer. Fails if the run exists.
    fn create(&self, run: &str) -> Result<Box<dyn RunWriter>, StoreError>;

    /// Reopens an existing run for appending and returns its only writer, with what recovery found.
    ///
    /// The run is checked as by [`crate::verify()`]: a torn last line is dropped (and removed, so that
    /// appending resumes after the last whole record); any other fault is [`StoreError::Damaged`] naming the
    /// line; a run with a run_end is [`StoreError::Ended`]; a run held by another writer is
    /// [`StoreError::Locked`].
    fn open_append(&self, run: &str) -> Result<(Box<dyn RunWriter>, crate::Recovery), StoreError> {
        Err(StoreError::Backend(format!(
            "{} cannot reopen run {run} for appending",
            self.location()
        )))
    }

    /// Claims `run` for resuming: at most one claim of a run is held at a time, across every process (and,
    /// for the SQL stores, every machine) sharing this store. See [`crate::claim`].
    fn claim(&self, run: &str, options: &ClaimOptions) -> Result<Claim, StoreError> {
        crate::claim::in_process(&self.location(), run, options)
    }

    /// Takes the lock of a run key for `holder` (`pid 123 on host-a`): one session writes a run key's run
    /// at a time, across every process (and, for Postgres, every machine) sharing this store. A held key
    /// is waited for up to `wait` (`None`: not at all), then refused with [`StoreError::KeyHeld`] naming
    /// its holder. Dropping the [`KeyLock`] releases it, and so does the death of its process. See
    /// [`crate::key_lock`]; the default holds the key in this process only.
    fn lock_run_key(
        &self,
        key: &str,
        holder: &str,
        wait: Option<Duration>,
    ) -> Result<KeyLock, StoreError> {
        crate::key_lock::in_process(&self.location(), key, holder, wait)
    }

    /// The ids of all runs, oldest first (run ids sort by creation time).
    fn runs(&self) -> Result<Vec<String>, StoreError>;

    /// The lines of one run.
    fn lines(&self, run: &str) -> Result<Box<dyn LineSource>, StoreError>;

    /// Stores a payload apart from the records, once per store by content (see [`crate::blob`]), and
    /// returns the reference a record names it by. It is durable when this returns, so a record written
    /// after it never names a payload a crash lost. A payload already held is not written again. Stores
    /// that keep no payloads apart answer [`StoreError::NoBlobs`] (the default), and the writer inlines.
    fn put_blob(&self, bytes: &[u8]) -> Result<crate::BlobRef, StoreError> {
        let _ = bytes;
        Err(StoreError::NoBlobs {
            store: self.location(),
        })
    }

    /// The payload `blob` names, checked against its hash and length ([`crate::BlobRef::check`]): a
    /// payload that is missing, cut short or changed is an error, never returned.
    fn blob(&self, blob: &crate::BlobRef) -> Result<Vec<u8>, StoreError> {
        Err(blob.missing(&self.location()))
    }

    /// Resolves `last` to the newest run, and checks that any other id exists.
    fn resolve(&self, run_or_last: &str) -> Result<String, StoreError> {
        let runs = self.runs()?;
        if run_or_last == "last" {
            return runs.last().cloned().ok_or_else(|| StoreError::Empty {
                store: self.location(),
            });
        }
        if runs.iter().any(|r| r == run_or_last) {
            return Ok(run_or_last.to_owned());
        }
        // A unique prefix is accepted, as with git revisions.
        let mut matching = runs.iter().filter(|r| r.starts_with(run_or_last));
        match (matching.next(), matching.next()) {
            (Some(one), None) if !run_or_last.is_empty() => Ok(one.clone()),
            _ => Err(StoreError::NotFound {
                run: run_or_last.to_owned(),
                store: self.location(),
            }),
        }
    }
}

/// Whether `run` is a well-formed run id: 1 to 64 ASCII letters, digits, `-` or `_`.
///
/// Stores refuse any other id, so an id can never escape a directory or break a line's JSON.
pub fn check_run_id(run: &str) -> Result<(), StoreError> {
    let ok = !run.is_empty()
        && run.len() <= 64
        && run
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && run != "last";
    if ok {
        Ok(())
    } else {
        Err(StoreError::Backend(format!(
            "invalid run id {run:?}: use 1 to 64 ASCII letters, digits, '-' or '_' (and not `last`)"
        )))
    }
}
