//! The committer the SQL stores share between their runs: one thread per store that takes every record
//! ready to commit, of every run, and commits them together (one statement and one commit on Postgres, one
//! transaction on SQLite).
//!
//! Per-run order holds because there is one committer per store and it takes jobs in the order they were
//! submitted (a run's jobs are submitted under the run's lock). A run whose commit failed is broken: its
//! jobs still queued fail without being committed, so nothing is ever stored after a hole.

use crate::{Done, Line, StoreError};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// A batch takes at most this many lines...
const MAX_BATCH_LINES: usize = 8192;
/// ...and about this many bytes (a job is never split; the first job of a batch always goes in).
const MAX_BATCH_BYTES: usize = 8 << 20;

/// What a job asks of the store.
pub(crate) enum JobKind {
    /// Create the run's row, naming this writer.
    Create { created_ns: i64 },
    /// Append `lines` at positions from `first_pos` (possibly none: a barrier), fenced by the writer's
    /// token; with `synced_seq`, make everything durable against power loss and record that seq.
    Append {
        first_pos: i64,
        lines: Vec<Line>,
        synced_seq: Option<Option<i64>>,
    },
    /// Give the run back (its writer closed).
    Release,
    /// Make this writer the run's only one, fencing off any earlier writer (reopening the run for
    /// appending). Committed after every job submitted before it; fails with `NotFound` for no such run.
    TakeOver,
}

/// One writer's request.
pub(crate) struct Job {
    pub run: Arc<str>,
    pub token: Arc<str>,
    pub kind: JobKind,
    pub done: Option<Done>,
    /// Set once a commit of this writer failed.
    pub broken: Arc<AtomicBool>,
}

impl Job {
    fn lines(&self) -> (usize, usize) {
        match &self.kind {
            JobKind::Append { lines, .. } => {
                (lines.len(), lines.iter().map(|l| l.bytes.len() + 64).sum())
            }
            _ => (1, 64),
        }
    }
}

/// A store's way of committing a batch.
pub(crate) trait BatchBackend: Send + 'static {
    /// Commits `jobs` (creates, then appends in order, then releases) and returns each job's outcome.
    /// Appends of one run commit all or nothing within the batch.
    fn commit(&mut self, jobs: &[Job]) -> Vec<Result<(), StoreError>>;
}

#[derive(Default)]
struct QueueState {
    jobs: Vec<Job>,
    closed: bool,
}

struct Queue {
    state: Mutex<QueueState>,
    wake: Condvar,
    /// Batches committed, and the jobs they held.
    batches: AtomicU64,
    jobs: AtomicU64,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The handle on a store's committer thread; the thread commits what is queued and stops when the last
/// handle is dropped.
pub(crate) struct Committer {
    queue: Arc<Queue>,
}

impl std::fmt::Debug for Committer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Committer")
    }
}

impl Committer {
    pub(crate) fn start(
        name: &str,
        mut backend: impl BatchBackend,
    ) -> Result<Arc<Committer>, StoreError> {
        let queue = Arc::new(Queue {
            state: Mutex::new(QueueState::default()),
            wake: Condvar::new(),
            batches: AtomicU64::new(0),
            jobs: AtomicU64::new(0),
        });
        let q = queue.clone();
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || run(&q, &mut backend))
            .map_err(|e| StoreError::io("the store's committer thread", e))?;
        Ok(Arc::new(Committer { queue }))
    }

    /// Batches committed so far, and the jobs (appends, creates, releases) they held.
    pub(crate) fn stats(&self) -> (u64, u64) {
        (
            self.queue.batches.load(Ordering::Relaxed),
            self.queue.jobs.load(Ordering::Relaxed),
        )
    }

    /// Queues a job; its `done` is called once it is committed or has failed.
    pub(crate) fn submit(&self, job: Job) {
        let mut state = self.queue.lock();
        state.jobs.push(job);
        drop(state);
        self.queue.wake.notify_one();
    }

    /// Queues a job and blocks the calling thread until it is committed.
    pub(crate) fn wait(&self, mut job: Job) -> Result<(), StoreError> {
        let (tx, rx) = std::sync::mpsc::channel();
        job.done = Some(Box::new(move |r| {
            let _ = tx.send(r);
        }));
        self.submit(job);
        rx.recv().unwrap_or_else(|_| {
            Err(StoreError::Backend(
                "the store's committer stopped before committing".into(),
            ))
        })
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.queue.lock().closed = true;
        self.queue.wake.notify_one();
    }
}

fn run(queue: &Queue, backend: &mut impl BatchBackend) {
    loop {
        let batch = {
            let mut state = queue.lock();
            while state.jobs.is_empty() && !state.closed {
                state = queue.wake.wait(state).unwrap_or_else(|e| e.into_inner());
            }
            if state.jobs.is_empty() {
                return;
            }
            let (mut lines, mut bytes, mut n) = (0, 0, 0);
            for job in &state.jobs {
                let (l, b) = job.lines();
                if n > 0 && (lines + l > MAX_BATCH_LINES || bytes + b > MAX_BATCH_BYTES) {
                    break;
                }
                lines += l;
                bytes += b;
                n += 1;
            }
            state.jobs.drain(..n).collect::<Vec<_>>()
        };
        // Jobs of runs already broken are not committed.
        let (mut live, dead): (Vec<Job>, Vec<Job>) = batch
            .into_iter()
            .partition(|j| !j.broken.load(Ordering::Acquire) || matches!(j.kind, JobKind::Release));
        for job in dead {
            if let Some(done) = job.done {
                done(Err(StoreError::Failed {
                    run: job.run.to_string(),
                    reason: "an earlier commit of the run failed".into(),
                }));
            }
        }
        if live.is_empty() {
            continue;
        }
        let results = backend.commit(&live);
        queue.batches.fetch_add(1, Ordering::Relaxed);
        queue.jobs.fetch_add(live.len() as u64, Ordering::Relaxed);
        for (job, result) in live.iter_mut().zip(results) {
            if result.is_err() {
                job.broken.store(true, Ordering::Release);
            }
            if let Some(done) = job.done.take() {
                done(result);
            }
        }
    }
}

/// The same error again, for each job of a batch that failed as a whole.
pub(crate) fn dup(e: &StoreError) -> StoreError {
    match e {
        StoreError::Database {
            store,
            sqlstate,
            message,
            hint,
        } => StoreError::Database {
            store: store.clone(),
            sqlstate: sqlstate.clone(),
            message: message.clone(),
            hint: hint.clone(),
        },
        StoreError::Locked { run, detail } => StoreError::Locked {
            run: run.clone(),
            detail: detail.clone(),
        },
        StoreError::Exists { run } => StoreError::Exists { run: run.clone() },
        other => StoreError::Backend(other.to_string()),
    }
}

/// The writer-side state a SQL run writer keeps: where its next line goes and how to reach the committer.
pub(crate) struct BatchWriter {
    pub committer: Arc<Committer>,
    pub run: Arc<str>,
    pub token: Arc<str>,
    pub next_pos: i64,
    pub last_seq: Option<i64>,
    pub broken: Arc<AtomicBool>,
}

impl BatchWriter {
    /// A writer of `run` through `committer`, with a token of its own (what fences off other writers).
    pub fn new(committer: Arc<Committer>, run: &str) -> BatchWriter {
        BatchWriter {
            committer,
            run: Arc::from(run),
            token: Arc::from(crate::sql::writer_token(run)),
            next_pos: 0,
            last_seq: None,
            broken: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        }
    }

    /// Takes `run` over from any earlier writer (whose process may have died holding it), then scans it
    /// as `verify` does and goes on after its last line. A SQL line is whole or absent: there is no torn
    /// tail to drop. On an error the writer is dropped, which gives the run back.
    pub fn reopen(
        committer: Arc<Committer>,
        run: &str,
        lines: impl FnOnce() -> Result<Box<dyn crate::LineSource>, StoreError>,
    ) -> Result<(BatchWriter, crate::Recovery), StoreError> {
        let mut writer = BatchWriter::new(committer, run);
        writer.take_over()?;
        let recovery = crate::recover::scan(run, lines()?)?;
        crate::sql::resume_at(&mut writer, &recovery);
        Ok((writer, recovery))
    }

    fn job(&self, kind: JobKind, done: Option<Done>) -> Job {
        Job {
            run: self.run.clone(),
            token: self.token.clone(),
            kind,
            done,
            broken: self.broken.clone(),
        }
    }

    fn append_job(&mut self, lines: Vec<Line>, sync: bool, done: Option<Done>) -> Job {
        let first_pos = self.next_pos;
        self.next_pos += lines.len() as i64;
        if let Some(last) = lines.last() {
            self.last_seq = Some(i64::try_from(last.seq).unwrap_or(i64::MAX));
        }
        let synced_seq = sync.then_some(self.last_seq);
        self.job(
            JobKind::Append {
                first_pos,
                lines,
                synced_seq,
            },
            done,
        )
    }

    /// Creates the run's row (blocking until committed).
    pub(crate) fn create(&self, created_ns: i64) -> Result<(), StoreError> {
        self.committer
            .wait(self.job(JobKind::Create { created_ns }, None))
    }

    pub(crate) fn submit(&mut self, lines: Vec<Line>, sync: bool, done: Done) {
        let job = self.append_job(lines, sync, Some(done));
        self.committer.submit(job);
    }

    pub(crate) fn append_wait(&mut self, lines: &[Line], sync: bool) -> Result<(), StoreError> {
        let job = self.append_job(lines.to_vec(), sync, None);
        self.committer.wait(job)
    }

    /// Makes this writer the run's only one (blocking until committed): an earlier writer's later commits
    /// are fenced off.
    pub(crate) fn take_over(&self) -> Result<(), StoreError> {
        self.committer.wait(self.job(JobKind::TakeOver, None))
    }

    /// Gives the run back without waiting.
    pub(crate) fn release(&self) {
        self.committer.submit(self.job(JobKind::Release, None));
    }
}
