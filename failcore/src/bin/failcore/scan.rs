//! Streaming a run as steps: each `step_start` paired with its `step_end`, in the order steps started.
//!
//! A step that has ended waits only until every step started before it has ended too; at most
//! [`REORDER`] steps wait, so memory is bounded whatever the run's length (past that bound, or when a
//! step never ends, steps are yielded in the order they ended).

use failcore::store::{
    Decision, Divergence, ReadError, RunEnd, RunReader, RunStart, Status, StepEnd, TraceStore,
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
        v.push(format!(
            "torn last line: {bytes} bytes dropped (the run crashed mid-write)"
        ));
    }
    if let Some(e) = &out.error {
        v.push(format!("stopped reading: {e}"));
    }
    v
}
