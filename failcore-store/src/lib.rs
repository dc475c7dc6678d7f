//! FailCore's trace format (v2, reading v1 too) and the stores that hold it.
//!
//! A trace is one run of an agent: an append-only sequence of JSON records (`run_start`, then per step a
//! `step_start` and a `step_end` or one `call`, then `run_end`), each holding the BLAKE3 hash of the
//! previous record's exact bytes, so that any edit, reordering or deletion is detected by [`verify()`]. The normative specification is
//! `docs/TRACE_FORMAT.md` in the repository.
//!
//! This crate depends on nothing else of FailCore's. It owns:
//! - the record model ([`Record`], [`Body`]) and the line encoding ([`encode_line`]);
//! - the [`TraceStore`] trait and its backends ([`MemoryStore`], and [`JsonlStore`] behind the `jsonl`
//!   feature);
//! - the [`Journal`]: numbers, chains and commits records on the caller's thread with the durability each
//!   caller asks for ([`Durability`]), sharing one fsync between concurrent callers;
//! - the [`RunReader`], which never panics on what it reads, and [`verify()`].
//!
//! ```
//! use failcore_store::{Body, Durability, Journal, MemoryStore, RunReader, RunStatus, TraceStore};
//! use std::sync::Arc;
//!
//! let store: Arc<dyn TraceStore> = Arc::new(MemoryStore::new());
//! let journal = Journal::open(store.clone(), "run-1", Durability::Flushed).unwrap();
//! journal.send(Body::run_end_empty(RunStatus::Ok));
//! journal.close().unwrap();
//! let records: Vec<_> = RunReader::open(store.as_ref(), "run-1").unwrap().collect();
//! assert_eq!(records.len(), 1);
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod batch;
pub mod blob;
mod chain;
pub mod claim;
#[cfg(feature = "conformance")]
pub mod conformance;
mod diff;
mod error;
mod journal;
#[cfg(feature = "jsonl")]
mod jsonl;
pub mod key_lock;
mod memory;
#[cfg(feature = "postgres")]
mod pg_pool;
#[cfg(feature = "postgres")]
mod postgres;
mod reader;
mod record;
mod recover;
pub mod seal;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;
#[cfg(feature = "sqlite")]
mod sqlite;
mod store;
pub mod time;
mod verify;

pub use blob::{BlobHash, BlobRef, MAX_BLOB_BYTES};
pub use chain::{check_seal, genesis_hash, line_hash, seal_line};
pub use claim::{Claim, ClaimOptions};
pub use diff::{describe_changes, field_diff, Divergence, FieldChange};
pub use error::StoreError;
pub use journal::{
    Ack, Committed, HookRecord, Journal, RecordHook, BUFFERED_LINGER, HIGH_WATER_BYTES,
};
#[cfg(feature = "jsonl")]
pub use jsonl::{bytes_source, open_file, JsonlStore};
pub use key_lock::{KeyHold, KeyLock};
pub use memory::MemoryStore;
#[cfg(feature = "postgres")]
pub use postgres::{PgStore, PgStoreBuilder};
pub use reader::{
    ReadError, RunReader, TraceRecord, MAX_FIELDS_BYTES, MAX_LINE_BYTES, MAX_VALUE_BYTES,
};
pub use record::{
    call_fields, encode_line, Body, Call, Checkpoint, Counts, Decision, DecisionOutcome, Drift,
    Landed, Mode, Record, Recovered, Redaction, RunEnd, RunStart, RunStatus, Source, Status,
    StepEnd, StepStart, CALL_SINCE, FORMAT_VERSION,
};
pub use recover::Recovery;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;
pub use store::{
    check_run_id, Chunk, Done, Durability, Line, LineSource, RunWriter, SyncHandle, TraceStore,
};
pub use verify::{
    verify, verify_run, verify_with, Fault, FaultKind, SealInfo, VerifiedLines, VerifiedRecords,
    VerifyOptions, VerifyReport,
};
