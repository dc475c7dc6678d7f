//! The replay index: the successes of the run being resumed, served to the new run by fingerprint.

use crate::Error;
use failcore_store::{field_diff, Body, Divergence, RunReader, TraceStore};
use serde_json::value::RawValue;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// A recorded success, ready to serve.
pub(crate) struct Hit {
    pub seq: u64,
    pub output: Box<RawValue>,
    pub saved_ns: u64,
}

/// A step that had started and not ended when the resumed run stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InFlightStep {
    pub step: u64,
    pub tool: String,
    pub fingerprint: String,
}

/// What was found in the run being resumed.
#[derive(Debug, Clone, Default)]
pub struct ResumeReport {
    /// The run resumed from.
    pub source: String,
    /// Recorded successes available to serve.
    pub successes: usize,
    /// Steps in flight when that run died: they execute again (or are blocked, see `on_in_flight`).
    pub in_flight: Vec<InFlightStep>,
    /// Bytes of a torn last line that was dropped.
    pub torn_tail: Option<usize>,
    /// Whether that run ended with a run_end.
    pub complete: bool,
}

pub(crate) struct ReplayIndex {
    pub source: String,
    queues: Mutex<HashMap<String, VecDeque<Hit>>>,
    in_flight: Mutex<HashMap<String, u32>>,
    /// Per tool, the source run's calls in order: (seq of the step_start, recorded args).
    positions: HashMap<String, Vec<(u64, serde_json::Value)>>,
    /// Per tool, how many calls the new run has made (its position counter).
    calls: Mutex<HashMap<String, u32>>,
}

/// The most field changes a divergence carries.
const DIVERGENCE_FIELDS: usize = 32;

impl ReplayIndex {
    /// Reads `run` from `store` and indexes its successes by fingerprint, in occurrence order.
    pub fn load(store: &dyn TraceStore, run: &str) -> Result<(ReplayIndex, ResumeReport), Error> {
        let mut reader = RunReader::open(store, run)?;
        let mut starts: HashMap<u64, (String, String, u32)> = HashMap::new();
        let mut hits: HashMap<String, Vec<(u32, Hit)>> = HashMap::new();
        let mut positions: HashMap<String, Vec<(u64, serde_json::Value)>> = HashMap::new();
        let mut report = ResumeReport {
            source: run.to_owned(),
            ..ResumeReport::default()
        };
        for item in reader.by_ref() {
            let rec = item?;
            match rec.record.body {
                Body::StepStart(s) => {
                    positions
                        .entry(s.tool.clone())
                        .or_default()
                        .push((rec.record.seq, s.args));
                    starts.insert(s.step, (s.fp, s.tool, s.occ));
                }
                Body::StepEnd(e) => {
                    let Some((fp, _tool, occ)) = starts.remove(&e.step) else {
                        continue;
                    };
                    if !e.status.is_success() {
                        continue;
                    }
                    let output = e.output.unwrap_or(serde_json::Value::Null);
                    let raw = serde_json::value::to_raw_value(&output).map_err(|err| {
                        Error::Config(format!("run {run}: unreadable output: {err}"))
                    })?;
                    let saved_ns = e.saved_ns.unwrap_or(e.latency_ns).max(e.latency_ns);
                    hits.entry(fp).or_default().push((
                        occ,
                        Hit {
                            seq: rec.record.seq,
                            output: raw,
                            saved_ns,
                        },
                    ));
                }
                Body::RunEnd(_) => report.complete = true,
                Body::RunStart(_) => {}
            }
        }
        report.torn_tail = reader.torn_tail();
        let mut in_flight: HashMap<String, u32> = HashMap::new();
        let mut open: Vec<_> = starts.into_iter().collect();
        open.sort_by_key(|(step, _)| *step);
        for (step, (fp, tool, _)) in open {
            *in_flight.entry(fp.clone()).or_default() += 1;
            report.in_flight.push(InFlightStep {
                step,
                tool,
                fingerprint: fp,
            });
        }
        let mut queues = HashMap::with_capacity(hits.len());
        for (fp, mut list) in hits {
            list.sort_by_key(|(occ, _)| *occ);
            report.successes += list.len();
            queues.insert(
                fp,
                list.into_iter().map(|(_, h)| h).collect::<VecDeque<_>>(),
            );
        }
        let index = ReplayIndex {
            source: run.to_owned(),
            queues: Mutex::new(queues),
            in_flight: Mutex::new(in_flight),
            positions,
            calls: Mutex::new(HashMap::new()),
        };
        Ok((index, report))
    }

    /// The next recorded success of `fp`, if one is left.
    pub fn take(&self, fp: &str) -> Option<Hit> {
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        queues.get_mut(fp).and_then(VecDeque::pop_front)
    }

    /// This call's position among the new run's calls of `tool` (from 0); call once per call.
    pub fn next_position(&self, tool: &str) -> u32 {
        let mut map = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(tool.to_owned()).or_default();
        *n += 1;
        *n - 1
    }

    /// For a call that missed: the source run's call of `tool` at `position`, if it had other args.
    pub fn divergence(&self, tool: &str, position: u32, args: &[u8]) -> Option<Divergence> {
        let (seq, recorded) = self.positions.get(tool)?.get(position as usize)?;
        let args: serde_json::Value = serde_json::from_slice(args).ok()?;
        let changes = field_diff(recorded, &args, DIVERGENCE_FIELDS);
        (!changes.is_empty()).then(|| Divergence {
            run: self.source.clone(),
            seq: *seq,
            position,
            changes,
        })
    }

    /// Whether a step of `fp` was in flight when the source run died (consumed once per such step).
    pub fn take_in_flight(&self, fp: &str) -> bool {
        let mut map = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        match map.get_mut(fp) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        }
    }
}
