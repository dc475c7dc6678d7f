//! Streaming a run as steps: each `step_start` paired with its `step_end`, in the order steps started.
//!
//! A step that has ended waits only until every step started before it has ended too; at most
//! [`REORDER`] steps wait, so memory is bounded whatever the run's length (past that bound, or when a
//! step never ends, steps are yielded in the order they ended).

use failcore::store::{
    Chunk, Decision, Divergence, LineSource, ReadError, RunEnd, RunReader, RunStart, Status,
    StepEnd, StoreError, TraceStore,
};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

/// The most ended steps held back to yield steps in the order they started.
pub const REORDER: usize = 4096;

/// One step: its intent and, unless it never ended, its outcome.
#[derive(Debug, Clone)]
pub struct Step {
    pub step: u64,
    /// The seq of its step_start.
    pub seq: u64,
    pub ts: String,
    pub tool: String,
    pub fp: String,
    pub occ: u32,
    pub args: Value,
    pub parent: Option<u64>,
    pub decision: Decision,
    pub divergence: Option<Divergence>,
    pub end: Option<StepEnd>,
    pub end_ts: Option<String>,
}

impl Step {
    /// The status name, `in_flight` for a step that never ended.
    pub fn status_name(&self) -> &'static str {
        self.end.as_ref().map_or("in_flight", |e| e.status.as_str())
    }

    pub fn status(&self) -> Option<Status> {
        self.end.as_ref().map(|e| e.status)
    }

    pub fn latency_ns(&self) -> u64 {
        self.end.as_ref().map_or(0, |e| e.latency_ns)
    }

    /// The step as JSON, for `--json` output (see docs/CLI.md).
    pub fn to_json(&self, start_ts: &str) -> Value {
        let end = self.end.as_ref();
        serde_json::json!({
            "step": self.step,
            "seq": self.seq,
            "ts": self.ts,
            "offset_ns": crate::common::between_ns(start_ts, &self.ts),
            "tool": self.tool,
            "status": self.status_name(),
            "latency_ns": end.map(|e| e.latency_ns),
            "fingerprint": self.fp,
            "occurrence": self.occ,
            "parent": self.parent,
            "args": self.args,
            "decision": self.decision,
            "output": end.and_then(|e| e.output.clone()),
            "output_blob": end.and_then(|e| e.output_blob),
            "error": end.and_then(|e| e.error.clone()),
            "replayed_from": end.and_then(|e| e.replayed_from.clone()),
            "saved_ns": end.and_then(|e| e.saved_ns),
            "drift": end.map(|e| e.drift.clone()).unwrap_or_default(),
            "divergence": self.divergence,
        })
    }
}

/// What a scan yields, in trace order.
// Each event is built once and moved straight to the caller: boxing the step would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Event {
    Start { ts: String, start: RunStart },
    Step(Step),
    End { ts: String, end: RunEnd },
}

/// How a scan ended.
#[derive(Default)]
pub struct Outcome {
    /// Bytes of a torn last line, dropped.
    pub torn: Option<usize>,
    /// The error that stopped reading (a corrupt line, ...).
    pub error: Option<ReadError>,
    /// Whether a run_end was read.
    pub ended: bool,
    /// The last timestamp read.
    pub last_ts: String,
}

struct Open {
    seq: u64,
    ts: String,
    s: failcore::store::StepStart,
}

/// Streams `run`, calling `f` for each event; steps never ended are yielded (without an end) when the
/// run_end is read or reading stops. `f` returns false to stop early.
pub fn scan(
    store: &dyn TraceStore,
    run: &str,
    f: impl FnMut(Event) -> bool,
) -> Result<Outcome, failcore::Error> {
    let reader = RunReader::open(store, run)?;
    Ok(scan_reader(reader, f))
}

pub fn scan_reader(mut reader: RunReader, mut f: impl FnMut(Event) -> bool) -> Outcome {
    let mut open: HashMap<u64, Open> = HashMap::new();
    let mut ready: BTreeMap<u64, Step> = BTreeMap::new();
    let mut out = Outcome::default();
    // Yields the ended steps no open step precedes (and the oldest ones past the bound).
    let release = |open: &HashMap<u64, Open>,
                   ready: &mut BTreeMap<u64, Step>,
                   f: &mut dyn FnMut(Event) -> bool| {
        let first_open = open.keys().min().copied().unwrap_or(u64::MAX);
        while let Some(first) = ready.keys().next().copied() {
            if first >= first_open && ready.len() <= REORDER {
                break;
            }
            if let Some(s) = ready.remove(&first) {
                if !f(Event::Step(s)) {
                    return false;
                }
            }
        }
        true
    };
    let flush = |open: &mut HashMap<u64, Open>,
                 ready: &mut BTreeMap<u64, Step>,
                 f: &mut dyn FnMut(Event) -> bool| {
        for (_, o) in open.drain() {
            ready.insert(o.s.step, make(o, None, None));
        }
        while let Some((_, s)) = ready.pop_first() {
            if !f(Event::Step(s)) {
                return false;
            }
        }
        true
    };
    for item in reader.by_ref() {
        let rec = match item {
            Ok(rec) => rec,
            Err(e) => {
                out.error = Some(e);
                break;
            }
        };
        let r = rec.record;
        out.last_ts.clone_from(&r.ts);
        let go = match r.body {
            failcore::store::Body::RunStart(start) => f(Event::Start { ts: r.ts, start }),
            failcore::store::Body::StepStart(s) => {
                open.insert(
                    s.step,
                    Open {
                        seq: r.seq,
                        ts: r.ts,
                        s,
                    },
                );
                true
            }
            failcore::store::Body::Checkpoint(_) => true,
            failcore::store::Body::Call(c) => {
                let c = *c;
                let o = Open {
                    seq: r.seq,
                    ts: r.ts.clone(),
                    s: c.start,
                };
                ready.insert(o.s.step, make(o, Some(c.end), Some(r.ts)));
                release(&open, &mut ready, &mut f)
            }
            failcore::store::Body::StepEnd(e) => match open.remove(&e.step) {
                Some(o) => {
                    ready.insert(o.s.step, make(o, Some(e), Some(r.ts)));
                    release(&open, &mut ready, &mut f)
                }
                None => true,
            },
            failcore::store::Body::RunEnd(end) => {
                out.ended = true;
                flush(&mut open, &mut ready, &mut f) && f(Event::End { ts: r.ts, end })
            }
        };
        if !go {
            return out;
        }
    }
    flush(&mut open, &mut ready, &mut f);
    out.torn = reader.torn_tail();
    out
}

fn make(o: Open, end: Option<StepEnd>, end_ts: Option<String>) -> Step {
    Step {
        step: o.s.step,
        seq: o.seq,
        ts: o.ts,
        tool: o.s.tool,
        fp: o.s.fp,
        occ: o.s.occ,
        args: o.s.args,
        parent: o.s.parent,
        decision: o.s.decision,
        divergence: o.s.divergence,
        end,
        end_ts,
    }
}

/// The text for a scan's problems, if any: a torn tail, a read error.
pub fn problems(out: &Outcome) -> Vec<String> {
    let mut v = Vec::new();
    if let Some(bytes) = out.torn {
        if out.last_ts.is_empty() {
            // Not one record before it: the file is no trace, not a trace cut short.
            v.push("not a FailCore trace (line 1 is not a trace record)".into());
        } else {
            v.push(format!(
                "torn last line: {bytes} bytes dropped (the run crashed mid-write)"
            ));
        }
    }
    if let Some(e) = &out.error {
        v.push(format!(
            "stopped reading: {}",
            crate::common::read_message(e)
        ));
    }
    v
}

/// What a run being replayed says of one of its steps.
#[derive(Clone, Default)]
pub struct SourceStep {
    pub step: u64,
    /// Drift recorded on the step (or on the step it replayed in turn).
    pub drift: Vec<failcore::store::Drift>,
}

/// The runs that replayed steps came from, read when first needed: a record number (seq) of theirs
/// becomes the step it belongs to, and the drift that step recorded.
pub struct Sources<'a> {
    store: &'a dyn TraceStore,
    runs: HashMap<String, Option<SourceRun>>,
}

#[derive(Default)]
struct SourceRun {
    /// seq of a step_start or step_end -> step.
    steps: HashMap<u64, u64>,
    drift: HashMap<u64, Vec<failcore::store::Drift>>,
    /// step -> where its own replayed output came from.
    replayed: HashMap<u64, failcore::store::Source>,
}

/// How many runs back a replayed output's drift is followed.
const SOURCE_DEPTH: usize = 8;

impl<'a> Sources<'a> {
    pub fn new(store: &'a dyn TraceStore) -> Self {
        Sources {
            store,
            runs: HashMap::new(),
        }
    }

    fn load(&mut self, run: &str) -> Option<&SourceRun> {
        if !self.runs.contains_key(run) {
            let loaded = RunReader::open(self.store, run).ok().map(|reader| {
                let mut r = SourceRun::default();
                for rec in reader.map_while(Result::ok) {
                    let body = rec.record.body;
                    if let Some(s) = body.start() {
                        r.steps.insert(rec.record.seq, s.step);
                    }
                    if let Some(e) = body.end() {
                        r.steps.insert(rec.record.seq, e.step);
                        if !e.drift.is_empty() {
                            r.drift.insert(e.step, e.drift.clone());
                        }
                        if let Some(src) = &e.replayed_from {
                            r.replayed.insert(e.step, src.clone());
                        }
                    }
                }
                r
            });
            self.runs.insert(run.to_owned(), loaded);
        }
        self.runs.get(run).and_then(Option::as_ref)
    }

    /// The step of `run` that record `seq` belongs to, with the drift it recorded, following a
    /// replayed step back to where its output was first recorded.
    pub fn step(&mut self, run: &str, seq: u64) -> Option<SourceStep> {
        let r = self.load(run)?;
        let step = *r.steps.get(&seq)?;
        let mut found = SourceStep {
            step,
            drift: r.drift.get(&step).cloned().unwrap_or_default(),
        };
        let mut next = r.replayed.get(&step).cloned();
        for _ in 0..SOURCE_DEPTH {
            if !found.drift.is_empty() {
                break;
            }
            let Some(src) = next.take() else { break };
            let Some(r) = self.load(&src.run) else { break };
            let Some(step) = r.steps.get(&src.seq).copied() else {
                break;
            };
            found.drift = r.drift.get(&step).cloned().unwrap_or_default();
            next = r.replayed.get(&step).cloned();
        }
        Some(found)
    }
}

/// Reads a run that may still be written: at the end of what is there it waits for more, until the
/// run's end has been read (`ended`) or the writer's process is gone and nothing more comes.
pub struct Follow {
    store: std::sync::Arc<dyn TraceStore>,
    run: String,
    inner: Box<dyn LineSource>,
    name: String,
    ended: std::sync::Arc<std::sync::atomic::AtomicBool>,
    partial: Vec<u8>,
    delivered: u64,
    /// Whether the store's line source must be opened again to see new lines (a database); a file
    /// is read on from where it stopped.
    reopen: bool,
    poll: std::time::Duration,
    /// Whether the writer is known to be gone (so nothing more will come).
    gone: Box<dyn Fn() -> bool + Send>,
}

impl Follow {
    pub fn new(
        store: std::sync::Arc<dyn TraceStore>,
        run: &str,
        ended: std::sync::Arc<std::sync::atomic::AtomicBool>,
        gone: Box<dyn Fn() -> bool + Send>,
    ) -> Result<Follow, failcore::Error> {
        let inner = store.lines(run)?;
        let name = inner.name().to_owned();
        let reopen = !store.location().starts_with("jsonl:");
        Ok(Follow {
            store,
            run: run.to_owned(),
            inner,
            name,
            ended,
            partial: Vec::new(),
            delivered: 0,
            reopen,
            poll: std::time::Duration::from_millis(200),
            gone,
        })
    }
}

impl LineSource for Follow {
    fn next_chunk(&mut self) -> Result<Option<Chunk>, StoreError> {
        use std::sync::atomic::Ordering;
        loop {
            if self.ended.load(Ordering::SeqCst) {
                return Ok(None);
            }
            match self.inner.next_chunk()? {
                Some(Chunk::Line(mut line)) => {
                    if !self.partial.is_empty() {
                        let mut whole = std::mem::take(&mut self.partial);
                        whole.append(&mut line);
                        line = whole;
                    }
                    self.delivered += 1;
                    return Ok(Some(Chunk::Line(line)));
                }
                // The writer is mid-line: keep what is there and wait for the rest.
                Some(Chunk::Unterminated(mut bytes)) => {
                    self.partial.append(&mut bytes);
                    std::thread::sleep(self.poll);
                }
                None => {
                    if (self.gone)() {
                        if self.partial.is_empty() {
                            return Ok(None);
                        }
                        return Ok(Some(Chunk::Unterminated(std::mem::take(&mut self.partial))));
                    }
                    std::thread::sleep(self.poll);
                    if self.reopen {
                        self.partial.clear();
                        self.inner = self.store.lines(&self.run)?;
                        let mut skip = self.delivered;
                        while skip > 0 {
                            match self.inner.next_chunk()? {
                                Some(Chunk::Line(_)) => skip -= 1,
                                _ => break,
                            }
                        }
                    }
                }
            }
        }
    }

    fn name(&self) -> &str {
        &self.name
    }
}
