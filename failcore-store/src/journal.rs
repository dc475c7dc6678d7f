//! The journal: numbers, chains and commits the records of one run.
//!
//! A record is committed on the caller's thread, under the run's lock: its line is encoded, chained to the
//! previous one and handed to the store before the call returns (`flushed`), or kept in the run's buffer
//! (`buffered`). Nothing spins and no run has a thread of its own. A few background threads per process
//! ([`BACKGROUND_THREADS`]), shared by every run of every store, do the two jobs that must not hold a
//! caller:
//! - the periodic flush of `buffered` records ([`BUFFERED_LINGER`] after the first one of a batch), and
//! - the fsync of `synced` records: callers that ask for one while another is in progress share the next
//!   one (group commit), and await it without blocking their thread.
//!
//! Stores whose commits are round trips to a server (the SQL stores) commit through a committer of their
//! own, shared by all their runs, that batches the records of many runs into one transaction (see
//! [`RunWriter::batched`]): there the journal hands records over under the run's lock and the caller awaits
//! the commit.
//!
//! A failed write or sync is fatal: every waiting caller and every later one gets the error; nothing is
//! retried.
//!
//! A [`RecordHook`] set on a journal sees every record under the run's lock, with the chain head after it,
//! and may append records of its own (signed checkpoints of the head).

use crate::seal::Sealer;
use crate::{
    chain, encode_line, time, Body, Durability, Line, RunWriter, StoreError, TraceStore,
    MAX_FIELDS_BYTES, MAX_LINE_BYTES,
};
use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::oneshot;

/// How long `buffered` records wait in the run's buffer for company before they are written.
pub const BUFFERED_LINGER: Duration = Duration::from_millis(2);
/// The high-water mark of a run's buffer: a `buffered` call that brings it past this many bytes writes the
/// buffer itself (backpressure: a caller faster than the disk cannot grow it without bound). Below the mark
/// a `buffered` call never waits for a write.
pub const HIGH_WATER_BYTES: usize = 256 * 1024;

/// What the journal reports back for a committed record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// The record's seq in the run (for a barrier: the seq of the last record before it).
    pub seq: u64,
}

type AckSender = oneshot::Sender<Result<Committed, StoreError>>;

/// A record a [`RecordHook`] asks the journal to append: its kind and its fields as a JSON object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookRecord {
    pub kind: &'static str,
    pub fields: Vec<u8>,
}

/// Sees every record of a run as the journal commits it, in order, under the run's lock.
///
/// This is the place for what must follow the chain itself, such as signed checkpoints of the head. Keep it
/// quick: callers of the run wait while it runs. Records it returns are chained and committed right after
/// the record that caused them, with the same durability, and are not shown to the hook again.
pub trait RecordHook: Send {
    /// Called after record `seq` (of `kind`, encoded as `line`) is chained; `head` is the chain head after
    /// it (the hex BLAKE3 of `line`, which the next record's `prev` will be).
    fn after_record(&mut self, seq: u64, kind: &str, line: &[u8], head: &str)
        -> Option<HookRecord>;

    /// Called before the run's `run_end` is chained (its seq will be `next_seq`, its `prev` `head`): a record
    /// returned here comes just before it.
    fn before_run_end(&mut self, next_seq: u64, head: &str) -> Option<HookRecord> {
        let _ = (next_seq, head);
        None
    }
}

/// What the run's lock guards.
struct RunState {
    /// `None` once closed.
    writer: Option<Box<dyn RunWriter>>,
    stamper: time::Stamper,
    ts: String,
    seq: u64,
    prev: String,
    /// Records chained but not yet handed to the writer (`buffered` ones).
    pending: Vec<Line>,
    pending_bytes: usize,
    /// Whether the background thread has a flush of `pending` scheduled.
    flush_scheduled: bool,
    /// Whether the background thread has a checkpoint of an idle signed run scheduled.
    seal_scheduled: bool,
    /// Whether the journal's durability is `synced` (a checkpoint the background writes is synced too).
    synced: bool,
    hook: Option<Box<dyn RecordHook>>,
    /// Writes signed checkpoints of the chain head, when the run has a signing key.
    sealer: Option<Sealer>,
}

struct RunShared {
    run: String,
    failed: OnceLock<String>,
    /// Whether the writer commits through its store's batching committer.
    batched: bool,
    state: Mutex<RunState>,
    /// The writer's detached sync, taken from the writer on the run's first sync (a run that never syncs
    /// holds no second descriptor): the background threads sync with it without taking the run's lock,
    /// so that callers keep appending during an fsync. `Some(None)`: the writer has none.
    syncer: Mutex<Option<Option<Box<dyn crate::SyncHandle>>>>,
}

impl RunShared {
    fn failure(&self) -> Option<StoreError> {
        self.failed.get().map(|reason| StoreError::Failed {
            run: self.run.clone(),
            reason: reason.clone(),
        })
    }

    fn fail(&self, e: &StoreError) -> StoreError {
        let reason = match e {
            StoreError::Failed { reason, .. } => reason.clone(),
            other => other.to_string(),
        };
        let _ = self.failed.set(reason);
        self.failure().unwrap_or(StoreError::Backend(String::new()))
    }

    fn lock(&self) -> MutexGuard<'_, RunState> {
        // A panic under the lock (in a hook or a writer) leaves whole records behind: go on with them.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands the buffered records to the writer. Batched writers get them with `done`; others write them
    /// now, on this thread, and the outcome is returned.
    fn flush_locked(
        &self,
        state: &mut RunState,
        sync: bool,
        done: Option<crate::Done>,
    ) -> Result<(), StoreError> {
        let lines = std::mem::take(&mut state.pending);
        state.pending_bytes = 0;
        if let Some(e) = self.failure() {
            if let Some(done) = done {
                done(Err(e));
                return Ok(());
            }
            return Err(e);
        }
        let Some(writer) = state.writer.as_mut() else {
            let e = self.fail(&StoreError::Backend("the journal is closed".into()));
            if let Some(done) = done {
                done(Err(e));
                return Ok(());
            }
            return Err(e);
        };
        if self.batched {
            let done = done.unwrap_or_else(|| Box::new(|_| {}));
            writer.submit(lines, sync, done);
            return Ok(());
        }
        let mut result = if lines.is_empty() {
            Ok(())
        } else {
            writer.append(&lines)
        };
        if result.is_ok() && sync {
            result = writer.sync();
        }
        let result = result.map_err(|e| self.fail(&e));
        if let Some(done) = done {
            done(result);
            return Ok(());
        }
        result
    }

    /// Syncs everything written so far (on the background thread), with the detached syncer if there is
    /// one, else under the run's lock.
    fn sync_now(&self) -> Result<(), StoreError> {
        // Syncs of one run never overlap, and each checks for an earlier failure once it has the run: a
        // failed sync is never followed by another.
        let mut syncer = self.syncer.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = self.failure() {
            return Err(e);
        }
        if syncer.is_none() {
            let handle = match self.lock().writer.as_mut() {
                Some(writer) => writer.sync_handle().map_err(|e| self.fail(&e))?,
                None => None,
            };
            *syncer = Some(handle);
        }
        match syncer.as_mut() {
            Some(Some(handle)) => handle.sync().map_err(|e| self.fail(&e)),
            _ => {
                let mut state = self.lock();
                match state.writer.as_mut() {
                    Some(writer) => writer.sync().map_err(|e| self.fail(&e)),
                    None => Ok(()),
                }
            }
        }
    }
}

/// The writer of one run. Dropping it writes what is buffered; the store's writer is released once the
/// background thread has no more work for it.
pub struct Journal {
    shared: Arc<RunShared>,
    durability: Durability,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("run", &self.shared.run)
            .field("durability", &self.durability)
            .finish()
    }
}

/// Resolves when a record (or a barrier) is committed. Ready at once for `buffered` records, and for
/// `flushed` records of stores written on the caller's thread.
#[must_use = "an Ack does nothing unless awaited"]
pub struct Ack(AckState);

enum AckState {
    Ready(Option<Result<Committed, StoreError>>),
    Waiting(
        oneshot::Receiver<Result<Committed, StoreError>>,
        Arc<RunShared>,
    ),
}

impl Ack {
    fn ready(result: Result<Committed, StoreError>) -> Ack {
        Ack(AckState::Ready(Some(result)))
    }

    /// Whether the ack is resolved without waiting for any write.
    pub fn is_ready(&self) -> bool {
        matches!(self.0, AckState::Ready(_))
    }
}

impl Future for Ack {
    type Output = Result<Committed, StoreError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.0 {
            AckState::Ready(result) => Poll::Ready(result.take().unwrap_or(Err(
                StoreError::Backend("ack polled after completion".into()),
            ))),
            AckState::Waiting(rx, shared) => match Pin::new(rx).poll(cx) {
                Poll::Ready(Ok(result)) => Poll::Ready(result),
                Poll::Ready(Err(_)) => Poll::Ready(Err(shared.failure().unwrap_or_else(|| {
                    StoreError::Failed {
                        run: shared.run.clone(),
                        reason: "the record was dropped before it was committed".into(),
                    }
                }))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

/// What the journal encodes.
enum Payload<'a> {
    /// A body already encoded as a JSON object (the hot path: encoded by the caller before the lock).
    Encoded {
        kind: &'static str,
        fields: &'a [u8],
    },
    /// A body the journal encodes (run_end, whose head only the journal knows).
    Body(Box<Body>),
}

impl Journal {
    /// Creates `run` in `store` and starts its writer.
    pub fn open(
        store: Arc<dyn TraceStore>,
        run: &str,
        durability: Durability,
    ) -> Result<Journal, StoreError> {
        let writer = store.create(run)?;
        Journal::start(writer, run, 0, chain::genesis_hash(run), durability)
    }

    /// Creates `run` in `store` and starts its writer, which writes signed checkpoints with `sealer`.
    pub fn open_sealed(
        store: Arc<dyn TraceStore>,
        run: &str,
        durability: Durability,
        sealer: Option<Sealer>,
    ) -> Result<Journal, StoreError> {
        let writer = store.create(run)?;
        Journal::start_sealed(writer, run, 0, chain::genesis_hash(run), durability, sealer)
    }

    /// Reopens an existing run of `store` for appending (see [`TraceStore::open_append`]) and starts a
    /// writer that continues it at the next seq, chained to its last whole record.
    pub fn reopen(
        store: Arc<dyn TraceStore>,
        run: &str,
        durability: Durability,
    ) -> Result<(Journal, crate::Recovery), StoreError> {
        let (writer, recovery) = store.open_append(run)?;
        let journal = Journal::start(
            writer,
            run,
            recovery.next_seq,
            recovery.prev.clone(),
            durability,
        )?;
        Ok((journal, recovery))
    }

    /// Starts a journal that continues a run at `next_seq`, chaining from `prev`.
    pub fn start(
        writer: Box<dyn RunWriter>,
        run: &str,
        next_seq: u64,
        prev: String,
        durability: Durability,
    ) -> Result<Journal, StoreError> {
        Journal::start_sealed(writer, run, next_seq, prev, durability, None)
    }

    /// [`Journal::start`], writing signed checkpoints with `sealer` when there is one.
    pub fn start_sealed(
        writer: Box<dyn RunWriter>,
        run: &str,
        next_seq: u64,
        prev: String,
        durability: Durability,
        sealer: Option<Sealer>,
    ) -> Result<Journal, StoreError> {
        let batched = writer.batched();
        let shared = Arc::new(RunShared {
            run: run.to_owned(),
            failed: OnceLock::new(),
            batched,
            state: Mutex::new(RunState {
                writer: Some(writer),
                stamper: time::Stamper::default(),
                ts: String::new(),
                seq: next_seq,
                prev,
                pending: Vec::new(),
                pending_bytes: 0,
                flush_scheduled: false,
                seal_scheduled: false,
                synced: durability == Durability::Synced,
                hook: None,
                sealer,
            }),
            syncer: Mutex::new(None),
        });
        Ok(Journal { shared, durability })
    }

    /// Sets the hook that sees every record from now on (replacing any earlier one).
    pub fn set_hook(&self, hook: Box<dyn RecordHook>) {
        self.shared.lock().hook = Some(hook);
    }

    /// The run this journal writes.
    pub fn run(&self) -> &str {
        &self.shared.run
    }

    /// The durability used when a caller does not ask for one.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// Why the journal failed, if it did.
    pub fn failure(&self) -> Option<StoreError> {
        self.shared.failure()
    }

    /// Appends a body already encoded as a JSON object (see [`Body::encode_fields`]).
    pub fn append_encoded(
        &self,
        kind: &'static str,
        fields: Vec<u8>,
        durability: Durability,
    ) -> Ack {
        // A record its readers would refuse is refused here, before anything is acknowledged.
        if fields.len() > MAX_FIELDS_BYTES {
            return Ack::ready(Err(StoreError::TooLarge {
                what: format!("a {kind} record"),
                bytes: fields.len(),
                limit: MAX_FIELDS_BYTES,
            }));
        }
        self.record(
            Payload::Encoded {
                kind,
                fields: &fields,
            },
            durability,
        )
    }

    /// Appends an encoded body without waiting for it: it is ordered before anything sent after it, and as
    /// durable as the next record that is waited for.
    pub fn enqueue_encoded(&self, kind: &'static str, fields: Vec<u8>) {
        self.unwaited(self.record(
            Payload::Encoded {
                kind,
                fields: &fields,
            },
            Durability::Buffered,
        ));
    }

    /// Appends a body.
    pub fn append(&self, body: Body, durability: Durability) -> Ack {
        self.record(Payload::Body(Box::new(body)), durability)
    }

    /// Appends a body without waiting for it (used from `Drop`, where nothing can be awaited). It is
    /// committed as durable as the journal's durability asks, in the background where that takes a sync.
    pub fn send(&self, body: Body) {
        self.unwaited(self.record(Payload::Body(Box::new(body)), self.durability));
    }

    /// A record nobody waits for must not vanish silently: one the store refused stops the run here.
    fn unwaited(&self, ack: Ack) {
        if let AckState::Ready(Some(Err(e @ StoreError::TooLarge { .. }))) = &ack.0 {
            self.shared.fail(e);
        }
    }

    /// Resolves once every record appended before is as durable as `durability` (at least `flushed`).
    pub fn barrier(&self, durability: Durability) -> Ack {
        let shared = &self.shared;
        let mut state = shared.lock();
        let last = Committed {
            seq: state.seq.saturating_sub(1),
        };
        self.commit_locked(&mut state, last, durability.max(Durability::Flushed))
    }

    /// Commits everything buffered (and syncs it, if the journal's durability is `synced`), releases the
    /// store's writer, and reports the run's failure if it had one. Blocks the calling thread until the
    /// store has committed; on an async executor thread, await a [`Journal::barrier`] first.
    pub fn close(self) -> Result<(), StoreError> {
        let shared = self.shared.clone();
        let durability = self.durability.max(Durability::Flushed);
        let (tx, rx) = std::sync::mpsc::channel();
        let writer = {
            let mut state = shared.lock();
            if shared.failure().is_none() {
                let sync = durability == Durability::Synced;
                let done: crate::Done = Box::new(move |r| {
                    let _ = tx.send(r);
                });
                shared.flush_locked(&mut state, sync, Some(done))?;
            }
            state.writer.take()
        };
        if shared.failure().is_none() {
            if let Ok(Err(e)) = rx.recv() {
                drop(writer);
                return Err(shared.fail(&e));
            }
        }
        // Released here (a SQL writer gives its run back to the store).
        drop(writer);
        shared.failure().map_or(Ok(()), Err)
    }

    fn record(&self, payload: Payload<'_>, durability: Durability) -> Ack {
        let shared = &self.shared;
        let mut state = shared.lock();
        if let Some(e) = shared.failure() {
            return Ack::ready(Err(e));
        }
        let seq = match chain_record(&mut state, &shared.run, payload) {
            Ok(seq) => seq,
            Err(e) => return Ack::ready(Err(e)),
        };
        schedule_idle_seal(shared, &mut state);
        let committed = Committed { seq };
        if durability == Durability::Buffered {
            if state.pending_bytes < HIGH_WATER_BYTES {
                if !state.flush_scheduled {
                    state.flush_scheduled = true;
                    background().schedule_flush(Arc::downgrade(shared));
                }
                return Ack::ready(Ok(committed));
            }
            // Past the mark: this caller writes the buffer (a batched store takes it without waiting).
            return Ack::ready(
                shared
                    .flush_locked(&mut state, false, None)
                    .map(|()| committed),
            );
        }
        self.commit_locked(&mut state, committed, durability)
    }

    /// Commits the buffer as durable as `durability` (`flushed` or `synced`); the ack resolves to `committed`.
    fn commit_locked(
        &self,
        state: &mut RunState,
        committed: Committed,
        durability: Durability,
    ) -> Ack {
        let shared = &self.shared;
        if let Some(e) = shared.failure() {
            return Ack::ready(Err(e));
        }
        let sync = durability == Durability::Synced;
        if shared.batched {
            let (ack, rx) = oneshot::channel();
            let done: crate::Done = Box::new(move |r| {
                let _ = ack.send(r.map(|()| committed));
            });
            let result = shared.flush_locked(state, sync, Some(done));
            return match result {
                Ok(()) => Ack(AckState::Waiting(rx, shared.clone())),
                Err(e) => Ack::ready(Err(e)),
            };
        }
        if let Err(e) = shared.flush_locked(state, false, None) {
            return Ack::ready(Err(e));
        }
        if !sync {
            return Ack::ready(Ok(committed));
        }
        let (ack, rx) = oneshot::channel();
        background().schedule_sync(shared.clone(), Some((ack, committed)));
        Ack(AckState::Waiting(rx, shared.clone()))
    }
}

/// Encodes, numbers and chains one record into the run's buffer, with what the hook adds. Returns its seq.
fn chain_record(state: &mut RunState, run: &str, payload: Payload<'_>) -> Result<u64, StoreError> {
    let mut extra = None;
    let run_end = matches!(&payload, Payload::Body(b) if matches!(**b, Body::RunEnd(_)));
    if state
        .sealer
        .as_ref()
        .is_some_and(|s| s.due(state.seq, run_end))
    {
        // A signed checkpoint of the head comes first.
        push_checkpoint(state, run)?;
    }
    let line = match payload {
        Payload::Encoded { kind, fields } => {
            stamp(state);
            let line = encode_line(state.seq, &state.ts, run, &state.prev, kind, fields);
            (line, kind)
        }
        Payload::Body(mut body) => {
            if let Body::RunEnd(end) = body.as_mut() {
                if let Some(hook) = state.hook.as_mut() {
                    if let Some(before) = hook.before_run_end(state.seq, &state.prev) {
                        push_line(state, run, before.kind, &before.fields);
                    }
                }
                end.head = Some(state.prev.clone());
            }
            let fields = body
                .encode_fields()
                .map_err(|e| StoreError::Encode(e.to_string()))?;
            stamp(state);
            let mut line =
                encode_line(state.seq, &state.ts, run, &state.prev, body.kind(), &fields);
            if matches!(*body, Body::RunEnd(_)) {
                chain::seal_line(&mut line);
            }
            (line, body.kind())
        }
    };
    let (line, kind) = line;
    if line.len() > MAX_LINE_BYTES {
        return Err(StoreError::TooLarge {
            what: "a record".into(),
            bytes: line.len(),
            limit: MAX_LINE_BYTES,
        });
    }
    if let Some(sealer) = state.sealer.as_mut() {
        sealer.wrote();
    }
    let seq = state.seq;
    let head = blake3::hash(&line).to_hex();
    if let Some(hook) = state.hook.as_mut() {
        extra = hook.after_record(seq, kind, &line, head.as_str());
    }
    push_chained(state, line, head.as_str());
    if let Some(extra) = extra {
        push_line(state, run, extra.kind, &extra.fields);
    }
    if run_end {
        // Nothing follows a run's end: no checkpoint either.
        state.sealer = None;
    }
    Ok(seq)
}

/// Chains a signed checkpoint of the head (the run has a sealer).
fn push_checkpoint(state: &mut RunState, run: &str) -> Result<(), StoreError> {
    let RunState {
        sealer, seq, prev, ..
    } = state;
    let Some(sealer) = sealer.as_mut() else {
        return Ok(());
    };
    let fields = Body::Checkpoint(sealer.checkpoint(run, *seq, prev))
        .encode_fields()
        .map_err(|e| StoreError::Encode(format!("a checkpoint: {e}")))?;
    push_line(state, run, "checkpoint", &fields);
    Ok(())
}

/// A signed run whose last records no checkpoint covers gets one when its interval has passed, also if no
/// record comes to trigger it: a background thread writes it then.
fn schedule_idle_seal(shared: &Arc<RunShared>, state: &mut RunState) {
    if state.seal_scheduled {
        return;
    }
    if let Some(at) = state.sealer.as_ref().and_then(Sealer::idle_deadline) {
        state.seal_scheduled = true;
        background().schedule(Due {
            at,
            run: Arc::downgrade(shared),
            work: Work::Seal,
        });
    }
}

/// The idle checkpoint of `run`, when it is still due (see [`schedule_idle_seal`]).
fn seal_idle(run: &Arc<RunShared>) {
    let mut state = run.lock();
    state.seal_scheduled = false;
    if state.writer.is_none() || run.failure().is_some() {
        return;
    }
    match state.sealer.as_ref().and_then(Sealer::idle_deadline) {
        None => {}
        Some(at) if at > Instant::now() => schedule_idle_seal(run, &mut state),
        Some(_) => {
            let name = run.run.clone();
            if push_checkpoint(&mut state, &name).is_err() {
                return;
            }
            let sync = state.synced;
            if run.batched {
                let _ = run.flush_locked(&mut state, sync, None);
            } else if run.flush_locked(&mut state, false, None).is_ok() && sync {
                drop(state);
                background().schedule_sync(run.clone(), None);
            }
        }
    }
}

fn stamp(state: &mut RunState) {
    let RunState { stamper, ts, .. } = state;
    stamper.stamp(SystemTime::now(), ts);
}

/// Encodes and chains a record the journal itself adds (a hook's), without showing it to the hook.
fn push_line(state: &mut RunState, run: &str, kind: &'static str, fields: &[u8]) {
    stamp(state);
    let line = encode_line(state.seq, &state.ts, run, &state.prev, kind, fields);
    let head = blake3::hash(&line).to_hex();
    push_chained(state, line, head.as_str());
}

fn push_chained(state: &mut RunState, line: Vec<u8>, head: &str) {
    state.prev.clear();
    state.prev.push_str(head);
    state.pending_bytes += line.len() + 1;
    state.pending.push(Line {
        seq: state.seq,
        bytes: line,
    });
    state.seq += 1;
}

impl Drop for Journal {
    fn drop(&mut self) {
        // What is buffered is handed to the store now; a `synced` journal's last records are synced in the
        // background, which keeps the writer alive until then.
        let shared = &self.shared;
        let mut state = shared.lock();
        if state.writer.is_none() || shared.failure().is_some() {
            return;
        }
        let sync = self.durability == Durability::Synced;
        if shared.batched {
            let _ = shared.flush_locked(&mut state, sync, None);
            return;
        }
        if shared.flush_locked(&mut state, false, None).is_ok() && sync {
            drop(state);
            background().schedule_sync(shared.clone(), None);
        }
    }
}

/// The threads the journals of a process share for flushes and syncs, whatever the number of runs: the
/// fsyncs of different runs overlap on them.
const BACKGROUND_THREADS: usize = 4;

/// The background threads of the process's journals: periodic flushes of buffered records and group
/// fsyncs. Started on first use.
struct Background {
    queue: Mutex<Queue>,
    wake: Condvar,
}

#[derive(Default)]
struct Queue {
    /// Runs with work due (a buffer to write, a checkpoint to sign), by deadline.
    flushes: BinaryHeap<Due>,
    /// Sync requests, in arrival order.
    syncs: Vec<SyncRequest>,
}

struct Due {
    at: Instant,
    run: Weak<RunShared>,
    work: Work,
}

/// What a background thread does for a run when its time comes.
enum Work {
    /// Writes the run's buffered records.
    Flush,
    /// Signs the run's unsigned records with a checkpoint ([`seal_idle`]).
    Seal,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    // The earliest deadline first out of the max-heap.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other.at.cmp(&self.at)
    }
}

struct SyncRequest {
    run: Arc<RunShared>,
    ack: Option<(AckSender, Committed)>,
}

fn background() -> &'static Background {
    static BACKGROUND: OnceLock<&'static Background> = OnceLock::new();
    BACKGROUND.get_or_init(|| {
        let bg: &'static Background = Box::leak(Box::new(Background {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
        }));
        for i in 0..BACKGROUND_THREADS {
            let spawned = std::thread::Builder::new()
                .name(format!("failcore-journal-{i}"))
                .spawn(move || bg.run());
            if let Err(e) = spawned {
                // Without them nothing would ever flush or sync: that cannot be carried on from.
                panic!("failcore: cannot start the journal's background threads: {e}");
            }
        }
        bg
    })
}

impl Background {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn schedule_flush(&self, run: Weak<RunShared>) {
        self.schedule(Due {
            at: Instant::now() + BUFFERED_LINGER,
            run,
            work: Work::Flush,
        });
    }

    fn schedule(&self, due: Due) {
        let mut queue = self.lock();
        let first = queue.flushes.peek().is_none_or(|d| d.at > due.at);
        queue.flushes.push(due);
        drop(queue);
        if first {
            self.wake.notify_one();
        }
    }

    fn schedule_sync(&self, run: Arc<RunShared>, ack: Option<(AckSender, Committed)>) {
        self.lock().syncs.push(SyncRequest { run, ack });
        self.wake.notify_one();
    }

    fn run(&self) {
        let mut queue = self.lock();
        loop {
            if let Some(first) = queue.syncs.first() {
                // This thread takes one run's requests; the others are left to the other threads, so
                // that the fsyncs of different runs overlap.
                let run = first.run.clone();
                let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut queue.syncs)
                    .into_iter()
                    .partition(|r| Arc::ptr_eq(&r.run, &run));
                queue.syncs = rest;
                let more = !queue.syncs.is_empty();
                drop(queue);
                if more {
                    self.wake.notify_one();
                }
                sync_all(mine);
                queue = self.lock();
                continue;
            }
            let now = Instant::now();
            match queue.flushes.peek().map(|d| d.at) {
                Some(at) if at <= now => {
                    let due = queue.flushes.pop();
                    drop(queue);
                    if let Some((run, work)) = due.and_then(|d| Some((d.run.upgrade()?, d.work))) {
                        match work {
                            Work::Flush => {
                                let mut state = run.lock();
                                state.flush_scheduled = false;
                                if !state.pending.is_empty() {
                                    let _ = run.flush_locked(&mut state, false, None);
                                }
                            }
                            Work::Seal => seal_idle(&run),
                        }
                    }
                    queue = self.lock();
                }
                Some(at) => {
                    queue = self
                        .wake
                        .wait_timeout(queue, at - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                None => {
                    queue = self.wake.wait(queue).unwrap_or_else(|e| e.into_inner());
                }
            }
        }
    }
}

/// One sync per run for all the requests gathered: every record written before a request was made is
/// covered by the sync that follows it.
fn sync_all(mut syncs: Vec<SyncRequest>) {
    while let Some(first) = syncs.first() {
        let run = first.run.clone();
        let result = run.sync_now();
        let (this, rest): (Vec<_>, Vec<_>) =
            syncs.into_iter().partition(|r| Arc::ptr_eq(&r.run, &run));
        for request in this {
            if let Some((ack, committed)) = request.ack {
                let _ = ack.send(match &result {
                    Ok(()) => Ok(committed),
                    Err(_) => Err(run.failure().unwrap_or(StoreError::Backend(String::new()))),
                });
            }
        }
        syncs = rest;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{MemoryStore, RunReader, RunStatus};

    #[test]
    fn numbers_and_chains_records_in_order() {
        let store = Arc::new(MemoryStore::new());
        let journal = Journal::open(store.clone(), "r1", Durability::Flushed).unwrap();
        for _ in 0..3 {
            journal.send(Body::run_end_empty(RunStatus::Ok));
        }
        journal.close().unwrap();
        let records: Vec<_> = RunReader::open(store.as_ref(), "r1")
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            records.iter().map(|r| r.record.seq).collect::<Vec<_>>(),
            [0, 1, 2]
        );
        assert_eq!(records[0].record.prev, chain::genesis_hash("r1"));
        assert_eq!(records[1].record.prev, chain::line_hash(&records[0].bytes));
        assert_eq!(records[2].record.prev, chain::line_hash(&records[1].bytes));
    }

    /// Records where each append happens: on which thread, with how many bytes, inside a barrier or not.
    struct WatchingWriter {
        caller: std::thread::ThreadId,
        in_barrier: Arc<std::sync::atomic::AtomicBool>,
        /// Appends made on the caller's thread outside a barrier, with their bytes.
        caller_writes: Arc<Mutex<Vec<usize>>>,
        lines: Arc<std::sync::atomic::AtomicUsize>,
    }
    impl RunWriter for WatchingWriter {
        fn append(&mut self, lines: &[Line]) -> Result<(), StoreError> {
            use std::sync::atomic::Ordering::SeqCst;
            self.lines.fetch_add(lines.len(), SeqCst);
            if std::thread::current().id() == self.caller && !self.in_barrier.load(SeqCst) {
                let bytes = lines.iter().map(|l| l.bytes.len() + 1).sum();
                self.caller_writes.lock().unwrap().push(bytes);
            }
            Ok(())
        }
        fn sync(&mut self) -> Result<(), StoreError> {
            Ok(())
        }
    }

    /// A `buffered` call never waits for a write while the run's buffer is below the mark, however many
    /// records the run has taken in all (the counter of the earlier design only ever went up).
    #[test]
    fn buffered_calls_never_wait_below_the_high_water_mark() {
        use std::sync::atomic::Ordering::SeqCst;
        let in_barrier = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let caller_writes = Arc::new(Mutex::new(Vec::new()));
        let lines = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let writer = WatchingWriter {
            caller: std::thread::current().id(),
            in_barrier: in_barrier.clone(),
            caller_writes: caller_writes.clone(),
            lines: lines.clone(),
        };
        let journal =
            Journal::start(Box::new(writer), "r", 0, "x".into(), Durability::Buffered).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for i in 0..100_000u32 {
            let ack = journal.append_encoded(
                "step_start",
                format!("{{\"step\":{i}}}").into_bytes(),
                Durability::Buffered,
            );
            assert!(
                ack.is_ready(),
                "buffered call {i} waited for the writer below the mark"
            );
            // Every thousand calls the buffer is drained: it never holds more than a thousand records.
            if i % 1000 == 999 {
                in_barrier.store(true, SeqCst);
                rt.block_on(journal.barrier(Durability::Flushed)).unwrap();
                in_barrier.store(false, SeqCst);
            }
        }
        // A thousand records of about 150 bytes never reach the mark: no call wrote on its own.
        assert_eq!(*caller_writes.lock().unwrap(), Vec::<usize>::new());
        journal.close().unwrap();
        assert_eq!(lines.load(SeqCst), 100_000);
    }

    /// Past the mark, the call that crosses it writes the buffer itself: memory stays bounded.
    #[test]
    fn a_buffered_burst_is_written_by_the_caller_past_the_mark() {
        let caller_writes = Arc::new(Mutex::new(Vec::new()));
        let lines = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let writer = WatchingWriter {
            caller: std::thread::current().id(),
            in_barrier: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            caller_writes: caller_writes.clone(),
            lines: lines.clone(),
        };
        let journal =
            Journal::start(Box::new(writer), "r", 0, "x".into(), Durability::Buffered).unwrap();
        let fields = format!("{{\"pad\":\"{}\"}}", "x".repeat(1000)).into_bytes();
        let started = Instant::now();
        for _ in 0..1000 {
            assert!(journal
                .append_encoded("step_start", fields.clone(), Durability::Buffered)
                .is_ready());
        }
        let writes = caller_writes.lock().unwrap().clone();
        // The caller only ever wrote a full buffer...
        assert!(writes.iter().all(|&b| b >= HIGH_WATER_BYTES), "{writes:?}");
        // ...and, when the 1.1 MB came faster than the background flush, it did so each time it passed.
        if started.elapsed() < BUFFERED_LINGER {
            assert!(writes.len() >= 3, "{writes:?}");
        }
        journal.close().unwrap();
        assert_eq!(lines.load(std::sync::atomic::Ordering::SeqCst), 1000);
    }

    /// Adds a record after every second record and one before the run_end, naming the head it saw.
    struct Checkpoints {
        seen: Arc<Mutex<Vec<(u64, String)>>>,
    }
    impl RecordHook for Checkpoints {
        fn after_record(
            &mut self,
            seq: u64,
            _: &str,
            line: &[u8],
            head: &str,
        ) -> Option<HookRecord> {
            assert_eq!(chain::line_hash(line), head);
            self.seen.lock().unwrap().push((seq, head.to_owned()));
            (seq % 2 == 1).then(|| HookRecord {
                kind: "step_start",
                fields: format!("{{\"checkpoint\":\"{head}\"}}").into_bytes(),
            })
        }
        fn before_run_end(&mut self, next_seq: u64, head: &str) -> Option<HookRecord> {
            self.seen
                .lock()
                .unwrap()
                .push((next_seq, format!("end:{head}")));
            Some(HookRecord {
                kind: "step_start",
                fields: format!("{{\"checkpoint\":\"{head}\"}}").into_bytes(),
            })
        }
    }

    /// A signed run that goes quiet has its last records signed when the interval has passed, without
    /// waiting for a record to come; a checkpoint never follows the run's end.
    #[test]
    fn an_idle_signed_run_is_signed_when_its_interval_passes() {
        let store = Arc::new(MemoryStore::new());
        let key = crate::seal::SealKey::from_seed([3; 32]);
        let sealer = Sealer::with_interval(key.clone(), 1_000, Duration::from_millis(40));
        let journal =
            Journal::open_sealed(store.clone(), "idle", Durability::Flushed, Some(sealer)).unwrap();
        let kinds = || {
            let mut reader = crate::RunReader::open(store.as_ref(), "idle").unwrap();
            let mut kinds = Vec::new();
            while let Some(line) = reader.next_line() {
                let v: serde_json::Value = serde_json::from_slice(&line.unwrap().1).unwrap();
                kinds.push(v["kind"].as_str().unwrap().to_owned());
            }
            kinds
        };
        journal.send(Body::RunStart(crate::RunStart {
            resumed_from: None,
            mode: crate::Mode::Record,
            program: "t".into(),
            host: "h".into(),
            pid: 1,
            versions: Default::default(),
        }));
        // `flushed`: written now. The first record after run_start is preceded by a checkpoint.
        let start = format!(
            "{{\"step\":0,\"tool\":\"t\",\"fp\":\"{}\",\"occ\":0,\"args\":{{}},\"decision\":{{\"outcome\":\"allow\"}}}}",
            "0".repeat(64)
        );
        drop(journal.append_encoded("step_start", start.into_bytes(), Durability::Flushed));
        // Then nothing more is written, and the idle run's last record is signed all the same.
        let deadline = Instant::now() + Duration::from_secs(10);
        while kinds().len() < 4 {
            assert!(
                Instant::now() < deadline,
                "no checkpoint came: {:?}",
                kinds()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(
            kinds(),
            ["run_start", "checkpoint", "step_start", "checkpoint"]
        );
        drop(journal.append_encoded(
            "step_end",
            b"{\"step\":0,\"status\":\"ok\",\"latency_ns\":0}".to_vec(),
            Durability::Flushed,
        ));
        journal.send(Body::RunEnd(crate::RunEnd {
            status: RunStatus::Ok,
            counts: crate::Counts {
                ok: 1,
                ..Default::default()
            },
            steps: 1,
            total_ns: 0,
            saved_ns: 0,
            head: None,
            seal: None,
        }));
        // The interval passes again after the end: nothing is added after it.
        std::thread::sleep(Duration::from_millis(120));
        journal.close().unwrap();
        assert_eq!(
            kinds().last().map(String::as_str),
            Some("run_end"),
            "{:?}",
            kinds()
        );
        let public = crate::seal::PublicKey::parse(key.public_hex()).unwrap();
        let report = crate::verify_with(
            crate::RunReader::open(store.as_ref(), "idle").unwrap(),
            &crate::VerifyOptions {
                key: Some(public),
                ..Default::default()
            },
        );
        assert!(report.fault.is_none(), "{:?}", report.fault);
    }

    #[test]
    fn a_hook_sees_each_record_with_the_head_and_its_records_are_chained_in_place() {
        let store = Arc::new(MemoryStore::new());
        let journal = Journal::open(store.clone(), "h", Durability::Flushed).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        journal.set_hook(Box::new(Checkpoints { seen: seen.clone() }));
        for i in 0..4 {
            journal.enqueue_encoded("step_start", format!("{{\"step\":{i}}}").into_bytes());
        }
        journal.send(Body::run_end_empty(RunStatus::Ok));
        journal.close().unwrap();
        let mut source = store.lines("h").unwrap();
        let mut lines = Vec::new();
        while let Some(crate::Chunk::Line(l)) = source.next_chunk().unwrap() {
            lines.push(String::from_utf8(l).unwrap());
        }
        // A checkpoint after each record of odd seq (1, 3, 5: the checkpoints take seqs too), one before
        // the run_end, the run_end: 9 lines, numbered and chained in order.
        assert_eq!(lines.len(), 9, "{lines:#?}");
        for (seq, line) in lines.iter().enumerate() {
            assert!(line.contains(&format!("\"seq\":{seq},")), "{line}");
            if seq > 0 {
                let prev = chain::line_hash(lines[seq - 1].as_bytes());
                assert!(line.contains(&format!("\"prev\":\"{prev}\"")), "{line}");
            }
        }
        // Each checkpoint names the head it follows.
        for at in [2, 4, 6, 7] {
            let head = chain::line_hash(lines[at - 1].as_bytes());
            assert!(
                lines[at].contains(&format!("\"checkpoint\":\"{head}\"")),
                "{}",
                lines[at]
            );
        }
        assert!(lines[8].contains("\"kind\":\"run_end\""));
        // The hook saw the records it was shown and the run_end, never its own records.
        let seen: Vec<u64> = seen.lock().unwrap().iter().map(|(s, _)| *s).collect();
        assert_eq!(seen, [0, 1, 3, 5, 7, 8]);
    }

    struct FailingWriter;
    impl RunWriter for FailingWriter {
        fn append(&mut self, _: &[Line]) -> Result<(), StoreError> {
            Ok(())
        }
        fn sync(&mut self) -> Result<(), StoreError> {
            Err(StoreError::io("disk", std::io::Error::other("EIO")))
        }
    }

    #[tokio::test]
    async fn a_failed_sync_is_fatal_and_reported_to_every_caller() {
        let journal = Journal::start(
            Box::new(FailingWriter),
            "r",
            0,
            "x".into(),
            Durability::Synced,
        )
        .unwrap();
        let first = journal
            .append(Body::run_end_empty(RunStatus::Ok), Durability::Synced)
            .await;
        assert!(matches!(first, Err(StoreError::Failed { .. })), "{first:?}");
        // Later calls fail at once, even ones that would not sync: the run is broken.
        let later = journal
            .append(Body::run_end_empty(RunStatus::Ok), Durability::Flushed)
            .await;
        assert!(matches!(later, Err(StoreError::Failed { .. })), "{later:?}");
    }

    /// Counts its calls; fails every sync (or every append) after the first `ok_appends` appends.
    struct CountingWriter {
        appends: Arc<std::sync::atomic::AtomicUsize>,
        syncs: Arc<std::sync::atomic::AtomicUsize>,
        fail_append: bool,
    }
    impl RunWriter for CountingWriter {
        fn append(&mut self, _: &[Line]) -> Result<(), StoreError> {
            self.appends
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if self.fail_append {
                return Err(StoreError::io("disk", std::io::Error::other("ENOSPC")));
            }
            Ok(())
        }
        fn sync(&mut self) -> Result<(), StoreError> {
            self.syncs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Err(StoreError::io("disk", std::io::Error::other("EIO")))
        }
    }

    fn counting(
        fail_append: bool,
    ) -> (
        Journal,
        Arc<std::sync::atomic::AtomicUsize>,
        Arc<std::sync::atomic::AtomicUsize>,
    ) {
        let appends = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let syncs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let journal = Journal::start(
            Box::new(CountingWriter {
                appends: appends.clone(),
                syncs: syncs.clone(),
                fail_append,
            }),
            "r",
            0,
            "x".into(),
            Durability::Synced,
        )
        .unwrap();
        (journal, appends, syncs)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_sync_fails_every_concurrent_waiter_and_is_never_retried() {
        let (journal, _, syncs) = counting(false);
        let journal = Arc::new(journal);
        let waiters: Vec<_> = (0..32)
            .map(|_| {
                let j = journal.clone();
                tokio::spawn(async move {
                    j.append(Body::run_end_empty(RunStatus::Ok), Durability::Synced)
                        .await
                })
            })
            .collect();
        for w in waiters {
            let result = w.await.unwrap();
            assert!(
                matches!(result, Err(StoreError::Failed { .. })),
                "{result:?}"
            );
        }
        // Later records, barriers and close all report the failure; no second sync was attempted.
        let barrier = journal.barrier(Durability::Synced).await;
        assert!(
            matches!(barrier, Err(StoreError::Failed { .. })),
            "{barrier:?}"
        );
        assert!(journal.failure().unwrap().to_string().contains("EIO"));
        assert_eq!(syncs.load(std::sync::atomic::Ordering::SeqCst), 1);
        let journal = Arc::try_unwrap(journal).unwrap();
        assert!(matches!(journal.close(), Err(StoreError::Failed { .. })));
    }

    #[tokio::test]
    async fn a_failed_write_is_fatal_too() {
        let (journal, appends, syncs) = counting(true);
        let first = journal
            .append(Body::run_end_empty(RunStatus::Ok), Durability::Flushed)
            .await;
        assert!(matches!(first, Err(StoreError::Failed { .. })), "{first:?}");
        assert!(first.unwrap_err().to_string().contains("ENOSPC"));
        // A buffered record is refused at once: nobody is told it was taken.
        journal.send(Body::run_end_empty(RunStatus::Ok));
        let later = journal
            .append(Body::run_end_empty(RunStatus::Ok), Durability::Buffered)
            .await;
        assert!(matches!(later, Err(StoreError::Failed { .. })), "{later:?}");
        assert!(journal.close().is_err());
        assert_eq!(appends.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(syncs.load(std::sync::atomic::Ordering::SeqCst), 0);
    }
}
