//! One logical run across sessions: consecutive sessions of one agent (each MCP tool call in a process of
//! its own, say) record into one run, named by a run key.
//!
//! The first session creates the run and records the key in its run_start (`versions.run_key`); a later
//! session with the same key finds the newest run that carries it and, when that run is still open (no
//! run_end) and of the same mode, continues it: the run is reopened for appending (its chain verified, a
//! torn tail dropped, one writer at a time: the store's run-key lock, [`TraceStore::lock_run_key`]), its step numbers, occurrences and
//! counts carry on, and its replay source is consumed exactly as far as the earlier sessions consumed it.
//! Steps that an earlier session left in flight are ended as cancelled.

use crate::fingerprint::{fp_key_hex, PrehashedKey};
use crate::replay::{instance_key, scoped_key, ReplayIndex};
use crate::Error;
use failcore_store::{
    Body, Counts, DecisionOutcome, Durability, Journal, Mode, RunReader, RunStart, Status, StepEnd,
    StoreError, TraceStore,
};
use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

/// The key of the run key in a run_start's `versions`.
pub const RUN_KEY: &str = "run_key";

/// The key of the recorder in a run_start's `versions`: what made the run when it was not an application's
/// own session (`llm-proxy`, `mcp-proxy`; see [`SessionBuilder::recorder`](crate::SessionBuilder::recorder)).
pub const RECORDER: &str = "recorder";

/// Which recorder made the run that `start` begins: its `versions.recorder`; a run of the MCP proxy from
/// before runs named their recorder is known by the server description it holds (`mcp-proxy`). `None`: an
/// application's own session (or an older LLM proxy run).
pub fn recorder_of(start: &RunStart) -> Option<&str> {
    match start.versions.get(RECORDER).and_then(|v| v.as_str()) {
        Some(r) => Some(r),
        None if start.versions.contains_key("mcp_server") => Some("mcp-proxy"),
        None => None,
    }
}

/// The run key a run_start carries, if any.
pub fn run_key_of(start: &RunStart) -> Option<&str> {
    start.versions.get(RUN_KEY).and_then(|v| v.as_str())
}

/// A run that carries a run key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyedRun {
    pub run: String,
    pub mode: Mode,
    pub resumed_from: Option<String>,
    /// What recorded it ([`recorder_of`]).
    pub recorder: Option<String>,
}

/// The run_start of `run`, if its first record is one (unreadable runs: `None`).
pub fn run_start_of(store: &dyn TraceStore, run: &str) -> Option<RunStart> {
    let mut reader = RunReader::open(store, run).ok()?;
    match reader.next()?.ok()?.record.body {
        Body::RunStart(start) => Some(start),
        _ => None,
    }
}

/// The newest run of `store` whose run_start carries `key`, whatever recorded it (reads the first record
/// of runs, newest first).
pub fn find_run_by_key(store: &dyn TraceStore, key: &str) -> Result<Option<KeyedRun>, Error> {
    find_keyed(store, key, None)
}

/// The newest run of `store` whose run_start carries `key` and was made by `recorder` (`None`: by an
/// application's own session): a run key shared by the LLM proxy and the MCP proxy names one run of each.
pub fn find_run_by_key_of(
    store: &dyn TraceStore,
    key: &str,
    recorder: Option<&str>,
) -> Result<Option<KeyedRun>, Error> {
    find_keyed(store, key, Some(recorder))
}

fn find_keyed(
    store: &dyn TraceStore,
    key: &str,
    recorder: Option<Option<&str>>,
) -> Result<Option<KeyedRun>, Error> {
    for run in store.runs()?.into_iter().rev() {
        let Some(start) = run_start_of(store, &run) else {
            continue;
        };
        if run_key_of(&start) != Some(key) {
            continue;
        }
        let made_by = recorder_of(&start).map(str::to_owned);
        if recorder.is_some_and(|r| r != made_by.as_deref()) {
            continue;
        }
        return Ok(Some(KeyedRun {
            run,
            mode: start.mode,
            resumed_from: start.resumed_from,
            recorder: made_by,
        }));
    }
    Ok(None)
}

/// A step an earlier session recorded, as far as continuing needs it.
struct PriorStep {
    key: u128,
    tool: String,
    /// Whether the call went to the replay index (allowed, or refused as in flight on resume).
    consulted_index: bool,
}

/// What the earlier sessions of a run left: where the next session carries on.
pub(crate) struct Prior {
    pub mode: Mode,
    pub resumed_from: Option<String>,
    pub next_step: u64,
    pub occurrences: HashMap<u128, u32, BuildHasherDefault<PrehashedKey>>,
    pub counts: Counts,
    pub saved_ns: u64,
    /// When the run started, as an instant of this process (for the run's total time).
    pub started: Instant,
    steps: Vec<PriorStep>,
}

/// Reads `run` as its earlier sessions left it. Refuses a run that has ended.
pub(crate) fn read_prior(store: &dyn TraceStore, run: &str) -> Result<Prior, Error> {
    let mut prior = Prior {
        mode: Mode::Record,
        resumed_from: None,
        next_step: 0,
        occurrences: HashMap::default(),
        counts: Counts::default(),
        saved_ns: 0,
        started: Instant::now(),
        steps: Vec::new(),
    };
    // step -> (its key, its occurrence), for the scope of the calls made inside it.
    let mut instances: HashMap<u64, (u128, u32)> = HashMap::new();
    for item in RunReader::open(store, run)? {
        let Ok(rec) = item else {
            // A torn tail is dropped when the run is reopened; anything worse is refused there.
            break;
        };
        let body = rec.record.body;
        match &body {
            Body::RunStart(start) => {
                prior.mode = start.mode;
                prior.resumed_from.clone_from(&start.resumed_from);
                if let Some(at) = failcore_store::time::parse_rfc3339(&rec.record.ts) {
                    let age = SystemTime::now().duration_since(at).unwrap_or_default();
                    prior.started = Instant::now().checked_sub(age).unwrap_or(prior.started);
                }
            }
            Body::RunEnd(_) => {
                return Err(Error::Store(StoreError::Ended {
                    run: run.to_owned(),
                }))
            }
            // A signed checkpoint seals the chain; it is no step. Steps are read below, by what they hold.
            Body::Checkpoint(_) | Body::StepStart(_) | Body::StepEnd(_) | Body::Call(_) => {}
        }
        if let Some(s) = body.start() {
            prior.next_step = prior.next_step.max(s.step + 1);
            if let Some(fp) = fp_key_hex(&s.fp) {
                let scope = s
                    .parent
                    .and_then(|p| instances.get(&p))
                    .map_or(0, |(key, occ)| instance_key(*key, *occ));
                let key = scoped_key(scope, fp);
                let occ = prior.occurrences.entry(key).or_insert(0);
                *occ = (*occ).max(s.occ + 1);
                instances.insert(s.step, (key, s.occ));
                let consulted_index = match s.decision.outcome {
                    DecisionOutcome::Deny | DecisionOutcome::Refused => {
                        s.decision.rule.as_deref() == Some("resume.in_flight")
                    }
                    _ => true,
                };
                prior.steps.push(PriorStep {
                    key,
                    tool: s.tool.clone(),
                    consulted_index,
                });
            }
        }
        if let Some(e) = body.end() {
            count(&mut prior.counts, e.status);
            prior.saved_ns += e.saved_ns.unwrap_or(0);
        }
    }
    Ok(prior)
}

fn count(counts: &mut Counts, status: Status) {
    match status {
        Status::Ok => counts.ok += 1,
        Status::Failed => counts.failed += 1,
        Status::Blocked => counts.blocked += 1,
        Status::Replayed => counts.replayed += 1,
        Status::Cancelled => counts.cancelled += 1,
        Status::Panicked => counts.panicked += 1,
    }
}

impl Prior {
    /// Consumes from a freshly loaded index what the earlier sessions consumed, call by call, so that the
    /// next call is served (or not) exactly as it would have been in one session.
    pub(crate) fn prime(&self, index: &ReplayIndex) {
        for step in &self.steps {
            index.next_position(&step.tool);
            if step.consulted_index && index.take(step.key).is_none() {
                index.take_in_flight(step.key);
            }
        }
    }
}

/// Reopens `run` for appending (one writer at a time, signing checkpoints with `sealer` when there is one)
/// and ends the steps an earlier session left in flight as cancelled.
pub(crate) fn reopen(
    store: Arc<dyn TraceStore>,
    run: &str,
    durability: Durability,
    sealer: Option<failcore_store::seal::Sealer>,
    prior: &mut Prior,
) -> Result<Journal, Error> {
    // The key is held; a writer still open is the previous session's, stopping (in this process, its
    // journal thread finishing): wait for it, a bounded time.
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    let (writer, recovery) = loop {
        match store.open_append(run) {
            Err(StoreError::Locked { .. }) if Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => break other?,
        }
    };
    let journal = Journal::start_sealed(
        writer,
        run,
        recovery.next_seq,
        recovery.prev.clone(),
        durability,
        sealer,
    )?;
    for step in recovery.in_flight {
        journal.send(Body::StepEnd(StepEnd {
            step,
            status: Status::Cancelled,
            output: None,
            output_blob: None,
            error: Some(
                "the session that made this call ended before the call did (run continued by a \
                 later session)"
                    .into(),
            ),
            latency_ns: 0,
            replayed_from: None,
            saved_ns: None,
            cost: None,
            drift: Vec::new(),
            redacted: Vec::new(),
            exact: None,
            recovered: None,
            landed: None,
        }));
        prior.counts.cancelled += 1;
    }
    Ok(journal)
}

/// The run of `key` that a session of `recorder` in `mode` continues: the newest run with the key made
/// by the same recorder, if it is open and of that mode.
pub(crate) fn continuable(
    store: &dyn TraceStore,
    key: &str,
    recorder: Option<&str>,
    mode: Mode,
) -> Result<Option<(String, Prior)>, Error> {
    let Some(found) = find_run_by_key_of(store, key, recorder)? else {
        return Ok(None);
    };
    if found.mode != mode {
        return Ok(None);
    }
    match read_prior(store, &found.run) {
        Ok(prior) => Ok(Some((found.run, prior))),
        Err(Error::Store(StoreError::Ended { .. })) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Takes the lock of a run key for this process, waiting up to `wait` (default 60 s) for the session
/// that holds it: the store's own lock ([`TraceStore::lock_run_key`]), so that one session writes a key's
/// run at a time on every store, across processes and, for Postgres, machines.
pub(crate) fn lock_key(
    store: &dyn TraceStore,
    key: &str,
    holder: &str,
    wait: Option<std::time::Duration>,
) -> Result<failcore_store::KeyLock, Error> {
    let wait = wait.unwrap_or(std::time::Duration::from_secs(60));
    Ok(store.lock_run_key(key, holder, Some(wait))?)
}

#[cfg(test)]
mod tests {
    use crate::{DynamicBody, DynamicTool, Effect, Session};
    use failcore_store::{MemoryStore, RunReader, TraceStore};
    use serde_json::{json, Value};
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    /// How often the tool body of the replay test ran (the signing test counts on its own, so that the
    /// two can run at once).
    static RAN: AtomicU32 = AtomicU32::new(0);
    static RAN_SIGNED: AtomicU32 = AtomicU32::new(0);

    async fn call(session: &Session, n: i64) -> Value {
        counted(session, n, &RAN).await
    }

    async fn counted(session: &Session, n: i64, ran: &'static AtomicU32) -> Value {
        let tool = DynamicTool::new("keyed_echo", "keyed test", Effect::Read).unwrap();
        let body: DynamicBody = Box::pin(async move {
            ran.fetch_add(1, Ordering::SeqCst);
            Ok(json!(n * 10 + i64::from(ran.load(Ordering::SeqCst))))
        });
        session
            .scope(tool.call(&json!({ "n": n }), body))
            .await
            .unwrap()
    }

    fn statuses(store: &MemoryStore, run: &str) -> Vec<(String, u32)> {
        let mut out = Vec::new();
        for r in RunReader::open(store, run).unwrap() {
            let body = r.unwrap().record.body;
            if let Some(s) = body.start() {
                out.push((format!("start {}", s.step), s.occ));
            }
            if let Some(e) = body.end() {
                out.push((e.status.as_str().to_owned(), 0));
            }
        }
        out
    }

    /// A keyed run continued by a later session is signed by it too: its checkpoints cover what the later
    /// session wrote, and the run's end follows one.
    #[tokio::test]
    async fn a_continued_keyed_run_is_signed_to_its_end() {
        let store = Arc::new(MemoryStore::new());
        let key = || failcore_store::seal::SealKey::from_seed([7; 32]);
        let open = || {
            Session::builder()
                .store(store.clone())
                .run_key("signed")
                .signing_key(key())
                .open()
                .unwrap()
        };
        let a = open();
        counted(&a, 1, &RAN_SIGNED).await;
        a.close_open().await.unwrap();
        let run = a.run_id().to_owned();
        drop(a);
        let first_session = RunReader::open(store.as_ref(), &run).unwrap().count() as u64;
        let b = open();
        assert_eq!(b.run_id(), run);
        counted(&b, 2, &RAN_SIGNED).await;
        b.finish().await.unwrap();
        drop(b);
        let public = failcore_store::seal::PublicKey::parse(key().public_hex()).unwrap();
        let report = failcore_store::verify_with(
            RunReader::open(store.as_ref(), &run).unwrap(),
            &failcore_store::VerifyOptions {
                run: Some(run.clone()),
                key: Some(public),
                ..Default::default()
            },
        );
        assert!(report.is_ok(), "{:?}", report.fault);
        let signed = report.signed.expect("signed");
        assert!(
            signed.signed_through >= first_session,
            "the later session's records are signed: {signed:?}"
        );
    }

    /// Sessions of one key make one run whose occurrences carry on, and a resumed keyed run serves each
    /// recorded success once across its sessions: never twice, never skipped.
    #[tokio::test]
    async fn a_keyed_run_carries_steps_occurrences_and_replay_across_sessions() {
        let store = Arc::new(MemoryStore::new());
        let open = |b: crate::SessionBuilder| b.store(store.clone()).run_key("k").open().unwrap();
        let a = open(Session::builder());
        let first = call(&a, 1).await;
        let second = call(&a, 1).await;
        a.close_open().await.unwrap();
        let run = a.run_id().to_owned();
        drop(a);
        let b = open(Session::builder());
        assert_eq!(b.run_id(), run, "the second session continues the run");
        let third = call(&b, 1).await;
        b.close_open().await.unwrap();
        drop(b);
        assert_eq!(store.runs().unwrap(), std::slice::from_ref(&run));
        let recorded = statuses(&store, &run);
        assert_eq!(recorded[4], ("start 2".to_owned(), 2), "{recorded:?}");

        // Resume, one call per session: each recorded success is served once, in order.
        let ran = RAN.load(Ordering::SeqCst);
        let mut served = Vec::new();
        let mut resumed_run = None;
        for _ in 0..3 {
            let s = open(Session::builder().resume(run.clone()));
            served.push(call(&s, 1).await);
            resumed_run.get_or_insert_with(|| s.run_id().to_owned());
            assert_eq!(Some(s.run_id()), resumed_run.as_deref());
            s.close_open().await.unwrap();
            drop(s);
        }
        assert_eq!(served, [first, second, third]);
        assert_eq!(RAN.load(Ordering::SeqCst), ran, "a recorded call ran again");
        let s = open(Session::builder().resume(run.clone()));
        call(&s, 1).await;
        assert_eq!(
            RAN.load(Ordering::SeqCst),
            ran + 1,
            "the fourth call has no record"
        );
        let summary = s.finish().await.unwrap();
        assert_eq!((summary.counts.replayed, summary.counts.ok), (3, 1));
        assert_eq!(summary.steps, 4);
        drop(s);
        // Ended: the next session of the key starts a new run.
        let next = open(Session::builder().resume(run.clone()));
        assert_ne!(Some(next.run_id()), resumed_run.as_deref());
    }
}
