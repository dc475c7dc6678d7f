//! The replay index: the successes of the run being resumed, served to the new run by fingerprint.

use crate::Error;
use failcore_store::{field_diff, Divergence, RunReader, TraceStore};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
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

/// The fields of a record that resume reads; the rest is skipped without being decoded.
#[derive(Deserialize)]
struct Lean<'a> {
    v: u32,
    seq: u64,
    kind: &'a str,
    #[serde(default)]
    step: Option<u64>,
    #[serde(default)]
    fp: Option<&'a str>,
    #[serde(default)]
    occ: Option<u32>,
    #[serde(default, borrow)]
    tool: Option<Cow<'a, str>>,
    #[serde(default)]
    status: Option<&'a str>,
    #[serde(default, borrow)]
    output: Option<&'a RawValue>,
    #[serde(default, borrow)]
    args: Option<&'a RawValue>,
    #[serde(default)]
    latency_ns: Option<u64>,
    #[serde(default)]
    saved_ns: Option<u64>,
}

pub(crate) struct ReplayIndex {
    pub source: String,
    queues: Mutex<HashMap<String, VecDeque<Hit>>>,
    in_flight: Mutex<HashMap<String, u32>>,
    /// Per tool, the source run's calls in order: (seq of the step_start, recorded args as raw JSON,
    /// parsed only when a miss asks for a divergence).
    positions: HashMap<String, Vec<(u64, Box<RawValue>)>>,
    /// Per tool, how many calls the new run has made (its position counter).
    calls: Mutex<HashMap<String, u32>>,
}

/// The most field changes a divergence carries.
const DIVERGENCE_FIELDS: usize = 32;

impl ReplayIndex {
    /// Reads `run` from `store` and indexes its successes by fingerprint, in occurrence order.
    ///
    /// Decodes only the fields resume needs, borrowing from each line (outputs are kept as raw JSON), so a
    /// run of 100,000 steps indexes in a fraction of a second.
    pub fn load(store: &dyn TraceStore, run: &str) -> Result<(ReplayIndex, ResumeReport), Error> {
        let mut reader = RunReader::open(store, run)?;
        let mut starts: HashMap<u64, (String, String, u32)> = HashMap::new();
        let mut hits: HashMap<String, Vec<(u32, Hit)>> = HashMap::new();
        let mut positions: HashMap<String, Vec<(u64, Box<RawValue>)>> = HashMap::new();
        let mut report = ResumeReport {
            source: run.to_owned(),
            ..ResumeReport::default()
        };
        while let Some(item) = reader.next_line() {
            let (line, bytes) = item?;
            let rec: Lean<'_> = match serde_json::from_slice(&bytes) {
                Ok(rec) => rec,
                Err(e) => {
                    reader.stop();
                    // Say precisely what is wrong (newer version, corrupt line) with the full decoder.
                    RunReader::decode(reader.name(), line, &bytes)?;
                    return Err(Error::Corrupt {
                        file: reader.name().to_owned(),
                        line,
                        reason: e.to_string(),
                    });
                }
            };
            if rec.v == 0 || rec.v > failcore_store::FORMAT_VERSION {
                RunReader::decode(reader.name(), line, &bytes)?;
            }
            let corrupt = |what: &str| Error::Corrupt {
                file: reader.name().to_owned(),
                line,
                reason: format!("{} record without {what}", rec.kind),
            };
            match rec.kind {
                "step_start" => {
                    let (Some(step), Some(fp)) = (rec.step, rec.fp) else {
                        return Err(corrupt("step or fp"));
                    };
                    let tool = rec.tool.unwrap_or_default().into_owned();
                    if let Some(args) = rec.args {
                        match positions.get_mut(tool.as_str()) {
                            Some(list) => list.push((rec.seq, args.to_owned())),
                            None => {
                                positions.insert(tool.clone(), vec![(rec.seq, args.to_owned())]);
                            }
                        }
                    }
                    starts.insert(step, (fp.to_owned(), tool, rec.occ.unwrap_or(0)));
                }
                "step_end" => {
                    let Some(step) = rec.step else {
                        return Err(corrupt("step"));
                    };
                    let Some((fp, _tool, occ)) = starts.remove(&step) else {
                        continue;
                    };
                    if !matches!(rec.status, Some("ok" | "replayed")) {
                        continue;
                    }
                    let output = match rec.output {
                        Some(raw) => raw.to_owned(),
                        None => serde_json::value::to_raw_value(&serde_json::Value::Null)
                            .map_err(|e| Error::Config(e.to_string()))?,
                    };
                    let latency = rec.latency_ns.unwrap_or(0);
                    let saved_ns = rec.saved_ns.unwrap_or(latency).max(latency);
                    hits.entry(fp).or_default().push((
                        occ,
                        Hit {
                            seq: rec.seq,
                            output,
                            saved_ns,
                        },
                    ));
                }
                "run_end" => report.complete = true,
                "run_start" => {}
                other => {
                    return Err(Error::Corrupt {
                        file: reader.name().to_owned(),
                        line,
                        reason: format!("unknown record kind `{other}`"),
                    })
                }
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
        let recorded: serde_json::Value = serde_json::from_str(recorded.get()).ok()?;
        let args: serde_json::Value = serde_json::from_slice(args).ok()?;
        let changes = field_diff(&recorded, &args, DIVERGENCE_FIELDS);
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
