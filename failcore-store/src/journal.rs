//! The journal: one background thread per run that numbers, chains and commits records.
//!
//! Callers never touch the disk: they hand a record to the journal and, unless the durability is
//! `buffered`, await an [`Ack`] that resolves once the record is as durable as asked. Records that arrive
//! while a write or an fsync is in progress are committed together by the next one, so concurrent callers
//! share one fsync (group commit). A failed write or sync is fatal: every waiting caller and every later
//! one gets the error; nothing is retried.

use crate::seal::Sealer;
use crate::{
    chain, encode_line, time, Body, Durability, Line, RunWriter, StoreError, TraceStore,
    MAX_FIELDS_BYTES,
};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::oneshot;

/// How long the writer waits for more `buffered` records before writing what it has.
const BUFFERED_LINGER: Duration = Duration::from_millis(2);
/// How many bytes the writer gathers at most before it writes, whatever the durability.
const BATCH_BYTES: usize = 256 * 1024;
/// How long the writer polls for the next record before it parks. A call writes two records a few
/// microseconds apart; parking between them would cost a thread wake-up each.
const WRITER_SPIN: Duration = Duration::from_micros(50);
/// How long a waiting caller polls its ack before it registers a waker and yields. The ack of a `flushed`
/// record usually arrives within a few microseconds; yielding would cost a wake-up of the caller's thread.
/// Bounded and small: the executor thread is never held for long, and never for disk I/O.
const ACK_SPIN: Duration = Duration::from_micros(20);
/// Records queued for the writer beyond which a `buffered` caller waits for its record to be written:
/// backpressure, so that a caller faster than the disk cannot grow the queue without bound.
const HIGH_WATER: usize = 8192;

/// What the journal reports back for a committed record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    /// The record's seq in the run.
    pub seq: u64,
}

type AckSender = oneshot::Sender<Result<Committed, StoreError>>;

enum Payload {
    /// A body already encoded as a JSON object (the hot path: encoded on the caller's thread).
    Encoded { kind: &'static str, fields: Vec<u8> },
    /// A body the journal encodes (run_end, whose head only the journal knows).
    Body(Box<Body>),
}

enum Msg {
    Record {
        payload: Payload,
        durability: Durability,
        ack: Option<AckSender>,
    },
    /// Resolves once everything sent before it is as durable as asked.
    Barrier {
        durability: Durability,
        ack: AckSender,
    },
}

struct Shared {
    run: String,
    failed: OnceLock<String>,
    /// Records sent and not yet taken by the writer: past [`HIGH_WATER`], `buffered` callers wait.
    queued: AtomicUsize,
}

impl Shared {
    fn failure(&self) -> Option<StoreError> {
        self.failed.get().map(|reason| StoreError::Failed {
            run: self.run.clone(),
            reason: reason.clone(),
        })
    }
}

/// The writer of one run. Dropping it lets the writer thread commit what is queued and stop.
pub struct Journal {
    tx: mpsc::Sender<Msg>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
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

/// Resolves when a record (or a barrier) is committed. Ready at once for `buffered` records.
#[must_use = "an Ack does nothing unless awaited"]
pub struct Ack(AckState);

enum AckState {
    Ready(Option<Result<Committed, StoreError>>),
    Waiting(
        oneshot::Receiver<Result<Committed, StoreError>>,
        Arc<Shared>,
    ),
}

impl Future for Ack {
    type Output = Result<Committed, StoreError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.0 {
            AckState::Ready(result) => Poll::Ready(result.take().unwrap_or(Err(
                StoreError::Backend("ack polled after completion".into()),
            ))),
            AckState::Waiting(rx, shared) => {
                let started = Instant::now();
                loop {
                    match rx.try_recv() {
                        Ok(result) => return Poll::Ready(result),
                        Err(oneshot::error::TryRecvError::Closed) => break,
                        Err(oneshot::error::TryRecvError::Empty)
                            if started.elapsed() < ACK_SPIN =>
                        {
                            std::hint::spin_loop()
                        }
                        Err(oneshot::error::TryRecvError::Empty) => break,
                    }
                }
                match Pin::new(rx).poll(cx) {
                    Poll::Ready(Ok(result)) => Poll::Ready(result),
                    Poll::Ready(Err(_)) => {
                        Poll::Ready(Err(shared.failure().unwrap_or_else(|| {
                            StoreError::Failed {
                                run: shared.run.clone(),
                                reason: "the writer thread stopped".into(),
                            }
                        })))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
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

    /// Starts a writer that continues a run at `next_seq`, chaining from `prev`.
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
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(Shared {
            run: run.to_owned(),
            failed: OnceLock::new(),
            queued: AtomicUsize::new(0),
        });
        let state = WriterState {
            stamper: time::Stamper::default(),
            ts: String::with_capacity(32),
            writer,
            run: run.to_owned(),
            seq: next_seq,
            prev,
            shared: shared.clone(),
            sealer,
        };
        let thread = std::thread::Builder::new()
            .name(format!("failcore-journal-{run}"))
            .spawn(move || state.run(rx))
            .map_err(|e| StoreError::io("journal thread", e))?;
        Ok(Journal {
            tx,
            shared,
            thread: Some(thread),
            durability,
        })
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
            return Ack(AckState::Ready(Some(Err(StoreError::TooLarge {
                what: format!("a {kind} record"),
                bytes: fields.len(),
                limit: MAX_FIELDS_BYTES,
            }))));
        }
        self.submit(Payload::Encoded { kind, fields }, durability)
    }

    /// Queues an encoded body without waiting for it: it is ordered before anything sent after it, and as
    /// durable as the next record that is waited for.
    pub fn enqueue_encoded(&self, kind: &'static str, fields: Vec<u8>) {
        self.shared.queued.fetch_add(1, Ordering::Relaxed);
        let payload = Payload::Encoded { kind, fields };
        let _ = self.tx.send(Msg::Record {
            payload,
            durability: Durability::Buffered,
            ack: None,
        });
    }

    /// Appends a body.
    pub fn append(&self, body: Body, durability: Durability) -> Ack {
        self.submit(Payload::Body(Box::new(body)), durability)
    }

    /// Appends a body without waiting for it (used from `Drop`, where nothing can be awaited).
    pub fn send(&self, body: Body) {
        self.shared.queued.fetch_add(1, Ordering::Relaxed);
        let _ = self.tx.send(Msg::Record {
            payload: Payload::Body(Box::new(body)),
            durability: self.durability,
            ack: None,
        });
    }

    /// Resolves once every record sent before is as durable as `durability`.
    pub fn barrier(&self, durability: Durability) -> Ack {
        if let Some(e) = self.shared.failure() {
            return Ack(AckState::Ready(Some(Err(e))));
        }
        let (ack, rx) = oneshot::channel();
        if self.tx.send(Msg::Barrier { durability, ack }).is_err() {
            return self.stopped();
        }
        Ack(AckState::Waiting(rx, self.shared.clone()))
    }

    /// Commits everything queued and stops the writer, blocking the calling thread until it has.
    /// Do not call it on an async executor thread; await a [`Journal::barrier`] there instead.
    pub fn close(mut self) -> Result<(), StoreError> {
        let (tx, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.tx, tx));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.shared.failure().map_or(Ok(()), Err)
    }

    fn submit(&self, payload: Payload, durability: Durability) -> Ack {
        if let Some(e) = self.shared.failure() {
            return Ack(AckState::Ready(Some(Err(e))));
        }
        let queued = self.shared.queued.fetch_add(1, Ordering::Relaxed);
        if durability == Durability::Buffered && queued < HIGH_WATER {
            return match self.tx.send(Msg::Record {
                payload,
                durability,
                ack: None,
            }) {
                Ok(()) => Ack(AckState::Ready(Some(Ok(Committed { seq: u64::MAX })))),
                Err(_) => self.stopped(),
            };
        }
        let (ack, rx) = oneshot::channel();
        if self
            .tx
            .send(Msg::Record {
                payload,
                durability,
                ack: Some(ack),
            })
            .is_err()
        {
            return self.stopped();
        }
        Ack(AckState::Waiting(rx, self.shared.clone()))
    }

    fn stopped(&self) -> Ack {
        Ack(AckState::Ready(Some(Err(self
            .shared
            .failure()
            .unwrap_or_else(|| StoreError::Failed {
                run: self.shared.run.clone(),
                reason: "the writer thread stopped".into(),
            })))))
    }
}

/// Polls for a message for [`WRITER_SPIN`], then blocks. `Err(true)` when the channel is closed.
fn spin_then_recv(rx: &mpsc::Receiver<Msg>) -> Result<Msg, bool> {
    let started = Instant::now();
    loop {
        match rx.try_recv() {
            Ok(msg) => return Ok(msg),
            Err(TryRecvError::Disconnected) => return Err(true),
            Err(TryRecvError::Empty) if started.elapsed() < WRITER_SPIN => std::hint::spin_loop(),
            Err(TryRecvError::Empty) => return rx.recv().map_err(|_| true),
        }
    }
}

struct WriterState {
    stamper: time::Stamper,
    ts: String,
    writer: Box<dyn RunWriter>,
    run: String,
    seq: u64,
    prev: String,
    shared: Arc<Shared>,
    sealer: Option<Sealer>,
}

struct Batch {
    lines: Vec<Line>,
    bytes: usize,
    acks: Vec<(AckSender, Committed)>,
    need: Durability,
}

impl WriterState {
    fn run(mut self, rx: mpsc::Receiver<Msg>) {
        let mut batch = Batch {
            lines: Vec::new(),
            bytes: 0,
            acks: Vec::new(),
            need: Durability::Buffered,
        };
        let mut closed = false;
        while !closed {
            let idle = batch.lines.is_empty() && batch.acks.is_empty();
            let next = if idle {
                spin_then_recv(&rx)
            } else {
                rx.try_recv().map_err(|e| e == TryRecvError::Disconnected)
            };
            match next {
                Ok(msg) => {
                    self.take(msg, &mut batch);
                    if batch.bytes < BATCH_BYTES {
                        continue;
                    }
                }
                Err(disconnected) => closed = disconnected,
            }
            // The queue is empty (or the batch is full). Records nobody waits for may wait a little for
            // company, so that a stream of buffered records costs one write per batch, not per record.
            if !closed
                && batch.need == Durability::Buffered
                && batch.acks.is_empty()
                && batch.bytes < BATCH_BYTES
            {
                match rx.recv_timeout(BUFFERED_LINGER) {
                    Ok(msg) => {
                        self.take(msg, &mut batch);
                        continue;
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => closed = true,
                }
            }
            self.commit(&mut batch);
        }
        self.commit(&mut batch);
    }

    fn take(&mut self, msg: Msg, batch: &mut Batch) {
        match msg {
            Msg::Record {
                payload,
                durability,
                ack,
            } => {
                if let Some(e) = self.shared.failure() {
                    if let Some(ack) = ack {
                        let _ = ack.send(Err(e));
                    }
                    return;
                }
                self.stamper.stamp(SystemTime::now(), &mut self.ts);
                let run_end =
                    matches!(&payload, Payload::Body(b) if matches!(**b, Body::RunEnd(_)));
                self.seal_if_due(run_end, batch);
                let ts = &self.ts;
                let line = match payload {
                    Payload::Encoded { kind, fields } => {
                        encode_line(self.seq, ts, &self.run, &self.prev, kind, &fields)
                    }
                    Payload::Body(mut body) => {
                        let ts = ts.as_str();
                        if let Body::RunEnd(end) = body.as_mut() {
                            end.head = Some(self.prev.clone());
                        }
                        match body.encode_fields() {
                            Ok(fields) => {
                                let mut line = encode_line(
                                    self.seq,
                                    ts,
                                    &self.run,
                                    &self.prev,
                                    body.kind(),
                                    &fields,
                                );
                                if matches!(body.as_ref(), Body::RunEnd(_)) {
                                    chain::seal_line(&mut line);
                                }
                                line
                            }
                            Err(e) => {
                                if let Some(ack) = ack {
                                    let _ = ack.send(Err(StoreError::Encode(e.to_string())));
                                }
                                return;
                            }
                        }
                    }
                };
                if line.len() > crate::MAX_LINE_BYTES {
                    if let Some(ack) = ack {
                        let _ = ack.send(Err(StoreError::TooLarge {
                            what: "a record".into(),
                            bytes: line.len(),
                            limit: crate::MAX_LINE_BYTES,
                        }));
                    } else {
                        // Nobody waits for it, and it must not vanish silently: the run stops here.
                        let _ = self.shared.failed.set(format!(
                            "a record of {} bytes exceeds the line limit of {} bytes",
                            line.len(),
                            crate::MAX_LINE_BYTES
                        ));
                    }
                    return;
                }
                let committed = self.push(line, batch);
                if let Some(sealer) = &mut self.sealer {
                    sealer.wrote();
                }
                batch.need = batch.need.max(durability);
                if let Some(ack) = ack {
                    batch.acks.push((ack, committed));
                }
            }
            Msg::Barrier { durability, ack } => {
                batch.need = batch.need.max(durability).max(Durability::Flushed);
                batch.acks.push((
                    ack,
                    Committed {
                        seq: self.seq.saturating_sub(1),
                    },
                ));
            }
        }
    }

    /// Numbers and chains one encoded line into the batch.
    fn push(&mut self, line: Vec<u8>, batch: &mut Batch) -> Committed {
        self.prev.clear();
        self.prev.push_str(blake3::hash(&line).to_hex().as_str());
        let committed = Committed { seq: self.seq };
        self.seq += 1;
        batch.bytes += line.len() + 1;
        batch.lines.push(Line {
            seq: committed.seq,
            bytes: line,
        });
        committed
    }

    /// Writes a signed checkpoint of the chain head first, when the sealer says one is due.
    fn seal_if_due(&mut self, run_end: bool, batch: &mut Batch) {
        let Some(sealer) = self.sealer.as_mut() else {
            return;
        };
        if !sealer.due(self.seq, run_end) {
            return;
        }
        let checkpoint = sealer.checkpoint(&self.run, self.seq, &self.prev);
        match Body::Checkpoint(checkpoint).encode_fields() {
            Ok(fields) => {
                let line = encode_line(
                    self.seq,
                    &self.ts,
                    &self.run,
                    &self.prev,
                    "checkpoint",
                    &fields,
                );
                self.push(line, batch);
            }
            Err(e) => {
                let _ = self
                    .shared
                    .failed
                    .set(format!("could not encode a checkpoint: {e}"));
            }
        }
    }

    fn commit(&mut self, batch: &mut Batch) {
        let mut result = Ok(());
        if self.shared.failure().is_none() {
            if !batch.lines.is_empty() {
                result = self.writer.append(&batch.lines);
            }
            if result.is_ok() && batch.need == Durability::Synced {
                result = self.writer.sync();
            }
            if let Err(e) = &result {
                let _ = self.shared.failed.set(e.to_string());
            }
        }
        let failure = self.shared.failure();
        for (ack, committed) in batch.acks.drain(..) {
            let _ = ack.send(match &failure {
                Some(_) => Err(self
                    .shared
                    .failure()
                    .unwrap_or(StoreError::Backend(String::new()))),
                None => Ok(committed),
            });
        }
        batch.lines.clear();
        batch.bytes = 0;
        batch.need = Durability::Buffered;
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        // The thread sees the channel close, commits what is queued, and exits on its own; joining here
        // could block an async executor thread.
        let _ = self.thread.take();
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
