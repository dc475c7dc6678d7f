//! The replay index: the successes of the run being resumed, served to the new run by fingerprint.

use crate::fingerprint::fp_key_hex;
use crate::session::PrehashedKey;
use crate::Error;
use failcore_store::{field_diff, Divergence, RunReader, TraceStore};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasherDefault;
use std::sync::Mutex;

/// A recorded success, ready to serve.
pub(crate) struct Hit {
    /// The occurrence of the source call: a queue is served in this order.
    occ: u32,
    pub seq: u64,
    pub output: Box<RawValue>,
    pub saved_ns: u64,
    /// Part of the recorded output was masked: it is never served as recorded.
    pub redacted: bool,
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
    #[serde(default, borrow)]
    redacted: Option<&'a RawValue>,
}

/// The successes of one fingerprint. Most fingerprints have one: it is kept inline.
enum Queue {
    One(Hit),
    Many(VecDeque<Hit>),
}

pub(crate) struct ReplayIndex {
    pub source: String,
    /// Per fingerprint (keyed by its first 128 bits), its recorded successes in occurrence order.
    queues: Mutex<HashMap<u128, Queue, BuildHasherDefault<PrehashedKey>>>,
    in_flight: Mutex<HashMap<u128, u32, BuildHasherDefault<PrehashedKey>>>,
    /// Per tool, the source run's calls in order: (seq of the step_start, recorded args as raw JSON,
    /// parsed only when a miss asks for a divergence).
    positions: HashMap<String, Vec<(u64, Box<RawValue>)>>,
    /// Per tool, how many calls the new run has made (its position counter).
    calls: Mutex<HashMap<&'static str, u32>>,
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
        let mut queues: HashMap<u128, Queue, BuildHasherDefault<PrehashedKey>> = HashMap::default();
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
                    if fp_key_hex(fp).is_none() {
                        return Err(corrupt("a fingerprint (`fp` is not hex)"));
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
                    let Some(key) = fp_key_hex(&fp) else {
                        continue; // checked when its step_start was read
                    };
                    let hit = Hit {
                        occ,
                        seq: rec.seq,
                        output,
                        saved_ns,
                        redacted: rec.redacted.is_some_and(|r| r.get().contains("\"/output")),
                    };
                    report.successes += 1;
                    match queues.remove(&key) {
                        None => queues.insert(key, Queue::One(hit)),
                        Some(Queue::One(first)) => {
                            queues.insert(key, Queue::Many(VecDeque::from([first, hit])))
                        }
                        Some(Queue::Many(mut q)) => {
                            q.push_back(hit);
                            queues.insert(key, Queue::Many(q))
                        }
                    };
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
        let mut in_flight: HashMap<u128, u32, BuildHasherDefault<PrehashedKey>> =
            HashMap::default();
        let mut open: Vec<_> = starts.into_iter().collect();
        open.sort_by_key(|(step, _)| *step);
        for (step, (fp, tool, _)) in open {
            if let Some(key) = fp_key_hex(&fp) {
                *in_flight.entry(key).or_default() += 1;
            }
            report.in_flight.push(InFlightStep {
                step,
                tool,
                fingerprint: fp,
            });
        }
        // Concurrent calls of one fingerprint may have ended out of order: serve them by occurrence.
        for queue in queues.values_mut() {
            if let Queue::Many(q) = queue {
                q.make_contiguous().sort_by_key(|h| h.occ);
            }
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
    pub fn take(&self, key: u128) -> Option<Hit> {
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        match queues.get_mut(&key)? {
            Queue::Many(q) => q.pop_front(),
            Queue::One(_) => match queues.remove(&key) {
                Some(Queue::One(hit)) => Some(hit),
                _ => None,
            },
        }
    }

    /// This call's position among the new run's calls of `tool` (from 0); call once per call.
    pub fn next_position(&self, tool: &'static str) -> u32 {
        let mut map = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(tool).or_default();
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
    pub fn take_in_flight(&self, key: u128) -> bool {
        let mut map = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        match map.get_mut(&key) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        }
    }
}
