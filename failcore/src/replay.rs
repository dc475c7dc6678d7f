//! The replay index: the successes of the run being resumed (and of the runs it resumed, back to the first),
//! served to the new run by call identity.
//!
//! A call's identity is its fingerprint within its parent: a top-level call is keyed by its fingerprint, a
//! nested call by its fingerprint mixed with the identity of the parent call it was made from (the parent's
//! key and occurrence). Occurrences count per identity. docs/REPLAY.md states the rules for users.

use crate::fingerprint::{fp_key_hex, PrehashedKey};
use crate::Error;
use failcore_store::{field_diff, Divergence, Landed, TraceStore, VerifiedLines};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::BuildHasherDefault;
use std::sync::Mutex;

/// The most runs a resume follows back through `resumed_from` (a longer chain is refused as hostile).
pub const MAX_ANCESTRY: usize = 1024;

/// The key of a call made inside the call whose instance key is `scope` (0: a top-level call).
pub(crate) fn scoped_key(scope: u128, fp_key: u128) -> u128 {
    if scope == 0 {
        return fp_key;
    }
    let mut buf = [0u8; 48];
    buf[..16].copy_from_slice(b"failcore/nested\0");
    buf[16..32].copy_from_slice(&scope.to_le_bytes());
    buf[32..].copy_from_slice(&fp_key.to_le_bytes());
    first_128(blake3::hash(&buf).as_bytes())
}

/// The identity of one call (its key and occurrence), which the calls made inside it are scoped by.
pub(crate) fn instance_key(key: u128, occ: u32) -> u128 {
    let mut buf = [0u8; 36];
    buf[..16].copy_from_slice(b"failcore/parent\0");
    buf[16..32].copy_from_slice(&key.to_le_bytes());
    buf[32..].copy_from_slice(&occ.to_le_bytes());
    first_128(blake3::hash(&buf).as_bytes()).max(1)
}

fn first_128(hash: &[u8; 32]) -> u128 {
    let mut first = [0u8; 16];
    first.copy_from_slice(&hash[..16]);
    u128::from_le_bytes(first)
}

/// A recorded success, ready to serve.
pub(crate) struct Hit {
    /// The occurrence of the source call: a run's queue is served in this order.
    occ: u32,
    /// Index of the run that holds the record in [`ReplayIndex::runs`].
    pub run: u16,
    pub seq: u64,
    pub output: Recorded,
    pub saved_ns: u64,
    /// The cost the source step reported, saved by serving it.
    pub cost: Option<f64>,
    /// Part of the recorded output was masked: it is never served as recorded.
    pub redacted: bool,
    /// The tool, for a strict replay's report of what was never reached.
    tool: Box<str>,
}

/// A recorded output: inline, or stored apart and read from the store only when it is served (so that the
/// index of a run with large outputs holds a few bytes per output, not the outputs).
pub(crate) enum Recorded {
    Inline(Box<RawValue>),
    Blob(failcore_store::BlobRef),
}

/// A step that had started and not ended when the resumed run stopped, or that ended failing with its
/// effect unknown (`landed: "unknown"`): either may have taken effect.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct InFlightStep {
    /// The run it was in flight in (the source run, or an earlier run of its ancestry).
    pub run: String,
    pub step: u64,
    pub tool: String,
    pub fingerprint: String,
    /// It ended, failing, with its effect unknown (rather than never ending).
    pub effect_unknown: bool,
}

/// What was found in the run being resumed.
#[derive(Debug, Clone, Default)]
pub struct ResumeReport {
    /// The run resumed from.
    pub source: String,
    /// The runs whose records were loaded: the source first, then the run it resumed, and so on.
    pub ancestry: Vec<String>,
    /// Recorded successes available to serve, along the whole ancestry.
    pub successes: usize,
    /// Steps in flight when a run of the ancestry died and not settled since: they execute again (or are
    /// blocked, see `on_in_flight`).
    pub in_flight: Vec<InFlightStep>,
    /// Bytes of a torn last line of the source run that was dropped.
    pub torn_tail: Option<usize>,
    /// Whether the source run ended with a run_end.
    pub complete: bool,
    /// When only a verified prefix was served (`FAILCORE_RESUME_PREFIX=1`): the faults that ended the
    /// prefixes, one per run of the ancestry that had one.
    pub unverified: Vec<String>,
}

#[derive(Deserialize)]
struct LeanSource<'a> {
    #[serde(borrow)]
    run: Cow<'a, str>,
    seq: u64,
}

#[derive(Deserialize)]
struct LeanDecision<'a> {
    #[serde(borrow)]
    outcome: Cow<'a, str>,
    #[serde(default, borrow)]
    rule: Option<Cow<'a, str>>,
}

/// The fields of a record that resume reads; the rest is skipped without being decoded.
#[derive(Deserialize)]
struct Lean<'a> {
    seq: u64,
    kind: &'a str,
    #[serde(default)]
    step: Option<u64>,
    #[serde(default)]
    parent: Option<u64>,
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
    #[serde(default)]
    output_blob: Option<failcore_store::BlobRef>,
    #[serde(default, borrow)]
    args: Option<&'a RawValue>,
    #[serde(default)]
    latency_ns: Option<u64>,
    #[serde(default)]
    saved_ns: Option<u64>,
    #[serde(default)]
    cost: Option<f64>,
    #[serde(default)]
    exact: Option<bool>,
    #[serde(default, borrow)]
    landed: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    replayed_from: Option<LeanSource<'a>>,
    #[serde(default, borrow)]
    resumed_from: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    decision: Option<LeanDecision<'a>>,
    #[serde(default, borrow)]
    redacted: Option<&'a RawValue>,
    /// A `call` record's outcome (a `step_end`'s carries the same fields at the top).
    #[serde(default, borrow)]
    end: Option<LeanEnd<'a>>,
}

/// The fields of a step's outcome that resume reads.
#[derive(Deserialize)]
struct LeanEnd<'a> {
    #[serde(default)]
    status: Option<&'a str>,
    #[serde(default, borrow)]
    output: Option<&'a RawValue>,
    #[serde(default)]
    output_blob: Option<failcore_store::BlobRef>,
    #[serde(default)]
    latency_ns: Option<u64>,
    #[serde(default)]
    saved_ns: Option<u64>,
    #[serde(default)]
    cost: Option<f64>,
    #[serde(default)]
    exact: Option<bool>,
    #[serde(default, borrow)]
    landed: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    replayed_from: Option<LeanSource<'a>>,
    #[serde(default, borrow)]
    redacted: Option<&'a RawValue>,
}

impl<'a> Lean<'a> {
    /// A `step_end`'s outcome: its top-level fields.
    fn outcome(&mut self) -> LeanEnd<'a> {
        LeanEnd {
            status: self.status,
            output: self.output,
            output_blob: self.output_blob,
            latency_ns: self.latency_ns,
            saved_ns: self.saved_ns,
            cost: self.cost,
            exact: self.exact,
            landed: self.landed.take(),
            replayed_from: self.replayed_from.take(),
            redacted: self.redacted,
        }
    }
}

type KeyMap<V> = HashMap<u128, V, BuildHasherDefault<PrehashedKey>>;

/// The successes of one identity. Most identities have one: it is kept inline.
enum Queue {
    One(Hit),
    Many(VecDeque<Hit>),
}

impl Queue {
    /// Adds a hit at the back.
    fn add(&mut self, hit: Hit) {
        let many = match std::mem::replace(self, Queue::Many(VecDeque::new())) {
            Queue::One(first) => VecDeque::from([first, hit]),
            Queue::Many(mut q) => {
                q.push_back(hit);
                q
            }
        };
        *self = Queue::Many(many);
    }

    /// The hits of this queue, mutably.
    fn hits_mut(&mut self) -> impl Iterator<Item = &mut Hit> {
        let (one, many) = match self {
            Queue::One(hit) => (Some(hit), None),
            Queue::Many(q) => (None, Some(q.iter_mut())),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }

    /// Keeps the hits `keep` accepts; whether any is left.
    fn retain(&mut self, keep: impl Fn(&Hit) -> bool) -> bool {
        match self {
            Queue::One(hit) => keep(hit),
            Queue::Many(q) => {
                q.retain(|h| keep(h));
                !q.is_empty()
            }
        }
    }

    /// This queue, then `older`'s hits.
    fn then(self, older: Queue) -> Queue {
        let mut q = match self {
            Queue::One(hit) => VecDeque::from([hit]),
            Queue::Many(q) => q,
        };
        match older {
            Queue::One(hit) => q.push_back(hit),
            Queue::Many(older) => q.extend(older),
        }
        Queue::Many(q)
    }

    /// Sorts the hits by occurrence.
    fn sort(&mut self) {
        if let Queue::Many(q) = self {
            q.make_contiguous().sort_by_key(|h| h.occ);
        }
    }

    fn len(&self) -> usize {
        match self {
            Queue::One(_) => 1,
            Queue::Many(q) => q.len(),
        }
    }
}

/// A step of a run, as loading sees it.
struct Started {
    key: u128,
    occ: u32,
    fp: String,
    tool: String,
    /// Its decision was a policy's refusal (so it never consulted the replay index).
    refused: bool,
    /// Blocked because it was in flight in an earlier run: the doubt carries on.
    in_flight_block: bool,
}

/// One run of the ancestry, read.
struct Loaded {
    resumed_from: Option<String>,
    /// Successes by key, in occurrence order.
    hits: KeyMap<Queue>,
    /// Records of earlier runs this run was served: (run id, seq).
    consumed: HashSet<(String, u64)>,
    /// Per key, the calls that were not served from the trace (each consulted the in-flight markers).
    misses: Vec<u128>,
    /// Steps started and never ended, and steps blocked as in flight: (key, step).
    doubts: Vec<(u128, InFlightStep)>,
    positions: HashMap<String, Vec<(u64, Box<RawValue>)>>,
    torn_tail: Option<usize>,
    complete: bool,
    /// When only a verified prefix was loaded: the fault that ended it.
    unverified: Option<String>,
}

pub(crate) struct ReplayIndex {
    pub source: String,
    /// The runs hits come from (index 0 is the source run).
    runs: Vec<String>,
    /// Per identity key, its recorded successes in the order they are served.
    queues: Mutex<KeyMap<Queue>>,
    in_flight: Mutex<KeyMap<u32>>,
    /// Per tool, the source run's calls in order: (seq of the step_start, recorded args as raw JSON,
    /// parsed only when a miss asks for a divergence).
    positions: HashMap<String, Vec<(u64, Box<RawValue>)>>,
    /// Per tool, how many calls the new run has made (its position counter).
    calls: Mutex<HashMap<Box<str>, u32>>,
    /// Per scope (the call a call is made from; 0 at the top level), the record of the source run last
    /// served to an effectful call: effectful calls must be served in their recorded order.
    effect_order: Mutex<KeyMap<(u16, u64)>>,
}

/// The most field changes a divergence carries.
const DIVERGENCE_FIELDS: usize = 32;
/// How many recorded calls of a tool a missed call is compared with, to find the nearest by content.
const NEAREST_CANDIDATES: usize = 64;

impl ReplayIndex {
    /// The first run of the resume chain this index was loaded from (the source itself when it resumed
    /// nothing): what stays the same across every resume of one workflow.
    pub fn first_run(&self) -> &str {
        self.runs
            .last()
            .map_or(self.source.as_str(), String::as_str)
    }

    /// Reads `run` and the runs it resumed (through `resumed_from`, back to the first) from `store`, and
    /// indexes every success not already served along that chain, by identity, in occurrence order.
    ///
    /// Decodes only the fields resume needs, borrowing from each line (outputs are kept as raw JSON), so a
    /// run of 100,000 steps indexes in a fraction of a second.
    ///
    /// Every run of the chain is read through the verified reader (see `load_one`).
    pub fn load(
        store: &dyn TraceStore,
        run: &str,
        serve_prefix: bool,
    ) -> Result<(ReplayIndex, ResumeReport), Error> {
        let mut chain: Vec<(String, Loaded)> = Vec::new();
        let mut next = Some(run.to_owned());
        while let Some(id) = next.take() {
            if chain.iter().any(|(r, _)| *r == id) {
                return Err(Error::Config(format!(
                    "run {run} cannot be resumed: its ancestry loops back to run {id}"
                )));
            }
            if chain.len() == MAX_ANCESTRY {
                return Err(Error::Config(format!(
                    "run {run} cannot be resumed: it has more than {MAX_ANCESTRY} runs of ancestry"
                )));
            }
            let loaded = load_one(store, &id, serve_prefix)?;
            next = loaded.resumed_from.clone();
            chain.push((id, loaded));
        }
        let runs: Vec<String> = chain.iter().map(|(r, _)| r.clone()).collect();
        if runs.len() > usize::from(u16::MAX) {
            return Err(Error::Config("ancestry too long".into()));
        }

        // From the oldest run to the newest: each run is served first what it recorded itself, then what
        // older runs recorded and it did not consume.
        let mut queues: KeyMap<Queue> = HashMap::default();
        let mut marks: KeyMap<Vec<InFlightStep>> = HashMap::default();
        let mut source_positions = HashMap::new();
        let mut torn_tail = None;
        let mut complete = false;
        let mut unverified = Vec::new();
        for (index, (_, loaded)) in chain.into_iter().enumerate().rev() {
            let Loaded {
                hits,
                consumed,
                misses,
                doubts,
                positions,
                torn_tail: torn,
                complete: done,
                unverified: cut,
                ..
            } = loaded;
            unverified.extend(cut);
            if !consumed.is_empty() {
                let consumed: HashSet<(u16, u64)> = consumed
                    .into_iter()
                    .filter_map(|(r, seq)| {
                        let at = runs.iter().position(|id| *id == r)?;
                        Some((at as u16, seq))
                    })
                    .collect();
                queues.retain(|_, queue| queue.retain(|h| !consumed.contains(&(h.run, h.seq))));
            }
            if !marks.is_empty() {
                for key in misses {
                    if let Some(m) = marks.get_mut(&key) {
                        if !m.is_empty() {
                            m.remove(0);
                        }
                    }
                }
            }
            for (key, doubt) in doubts {
                marks.entry(key).or_default().push(doubt);
            }
            let mut hits = hits;
            for queue in hits.values_mut() {
                for hit in queue.hits_mut() {
                    hit.run = index as u16;
                }
            }
            if queues.is_empty() {
                queues = hits;
            } else {
                for (key, own) in hits {
                    let queue = match queues.remove(&key) {
                        Some(older) => own.then(older),
                        None => own,
                    };
                    queues.insert(key, queue);
                }
            }
            if index == 0 {
                source_positions = positions;
                torn_tail = torn;
                complete = done;
            }
        }

        let mut report = ResumeReport {
            source: run.to_owned(),
            ancestry: runs.clone(),
            torn_tail,
            complete,
            unverified,
            ..ResumeReport::default()
        };
        report.successes = queues.values().map(Queue::len).sum();
        let index_queues = queues;
        let mut in_flight: KeyMap<u32> = HashMap::default();
        for (key, steps) in marks {
            if !steps.is_empty() {
                in_flight.insert(key, steps.len() as u32);
                report.in_flight.extend(steps);
            }
        }
        report
            .in_flight
            .sort_by(|a, b| (&a.run, a.step).cmp(&(&b.run, b.step)));
        let index = ReplayIndex {
            source: run.to_owned(),
            runs,
            queues: Mutex::new(index_queues),
            in_flight: Mutex::new(in_flight),
            positions: source_positions,
            calls: Mutex::new(HashMap::new()),
            effect_order: Mutex::new(KeyMap::default()),
        };
        Ok((index, report))
    }

    /// The run at `index` of the ancestry (0: the source run).
    pub fn run_name(&self, index: u16) -> &str {
        self.runs.get(usize::from(index)).map_or("", String::as_str)
    }

    /// Whether serving the record `(run, seq)` to an effectful call made in `scope` keeps the recorded order
    /// of effectful calls there: `Err` holds the seq of the later record already served. Records are
    /// compared within one run of the ancestry.
    pub fn effect_in_order(&self, scope: u128, run: u16, seq: u64) -> Result<(), u64> {
        let mut order = self.effect_order.lock().unwrap_or_else(|e| e.into_inner());
        match order.get(&scope) {
            Some(&(last_run, last_seq)) if last_run == run && last_seq > seq => Err(last_seq),
            _ => {
                order.insert(scope, (run, seq));
                Ok(())
            }
        }
    }

    /// The recorded successes no call asked for: (run, seq, tool), in the order they were recorded.
    pub fn unreached(&self) -> Vec<(String, u64, String)> {
        let queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        let mut left: Vec<(u16, u64, &str)> = Vec::new();
        for queue in queues.values() {
            match queue {
                Queue::One(hit) => left.push((hit.run, hit.seq, &hit.tool)),
                Queue::Many(q) => left.extend(q.iter().map(|h| (h.run, h.seq, &*h.tool))),
            }
        }
        // The oldest run of the ancestry first, each in record order.
        left.sort_unstable_by_key(|&(run, seq, _)| (std::cmp::Reverse(run), seq));
        left.into_iter()
            .map(|(run, seq, tool)| (self.run_name(run).to_owned(), seq, tool.to_owned()))
            .collect()
    }

    /// The next recorded success of the identity `key`, if one is left.
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
    pub fn next_position(&self, tool: &str) -> u32 {
        let mut map = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        // The name is copied once per tool, on its first call.
        let n = match map.get_mut(tool) {
            Some(n) => n,
            None => map.entry(tool.into()).or_default(),
        };
        *n += 1;
        *n - 1
    }

    /// For a call that missed: the source run's call of `tool` nearest to it by content, and what differs.
    /// That is the call at the same `position` unless another recorded call of the tool differs in fewer
    /// argument fields (on a tie, the nearest position wins): a request that gained a message differs from
    /// the call at its position in one field, from the others in many. `None` when the call at its position
    /// had the same args (the miss is not a difference of content) or the tool has no recorded call.
    pub fn divergence(&self, tool: &str, position: u32, args: &[u8]) -> Option<Divergence> {
        let calls = self.positions.get(tool)?;
        let args: serde_json::Value = serde_json::from_slice(args).ok()?;
        let changes_at = |i: usize| {
            let (seq, recorded) = calls.get(i)?;
            let recorded: serde_json::Value = serde_json::from_str(recorded.get()).ok()?;
            Some((*seq, field_diff(&recorded, &args, DIVERGENCE_FIELDS)))
        };
        let here = position as usize;
        let mut best = match changes_at(here) {
            Some((_, changes)) if changes.is_empty() => return None,
            Some((seq, changes)) => Some((here, seq, changes)),
            None => None,
        };
        // The recorded calls nearest in position first, a bounded number: this runs on every call a
        // resume does not serve.
        let mut order: Vec<usize> = (0..calls.len()).filter(|&i| i != here).collect();
        order.sort_unstable_by_key(|&i| i.abs_diff(here));
        for i in order.into_iter().take(NEAREST_CANDIDATES) {
            let Some((seq, changes)) = changes_at(i) else {
                continue;
            };
            // A recorded call with the same args says nothing about what differs.
            let fewer = best
                .as_ref()
                .is_none_or(|(_, _, b)| changes.len() < b.len());
            if !changes.is_empty() && fewer {
                best = Some((i, seq, changes));
            }
        }
        let (position, seq, changes) = best?;
        Some(Divergence {
            run: self.source.clone(),
            seq,
            position: u32::try_from(position).unwrap_or(u32::MAX),
            changes,
        })
    }

    /// Whether a step of identity `key` was in flight when a run of the ancestry died (consumed once per
    /// such step).
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

/// A step's intent, read (from a `step_start` or a `call`): its step and what resume keeps of it. Its call
/// is added to the positions of its tool. `identities` holds the steps started before it, for its scope.
fn started(
    rec: &Lean<'_>,
    loaded: &mut Loaded,
    identities: &HashMap<u64, (u128, u32)>,
) -> Result<(u64, Started), &'static str> {
    let (Some(step), Some(fp)) = (rec.step, rec.fp) else {
        return Err("without step or fp");
    };
    let Some(tool) = &rec.tool else {
        return Err("without tool");
    };
    let tool = tool.to_string();
    if let Some(args) = rec.args {
        match loaded.positions.get_mut(tool.as_str()) {
            Some(list) => list.push((rec.seq, args.to_owned())),
            None => {
                loaded
                    .positions
                    .insert(tool.clone(), vec![(rec.seq, args.to_owned())]);
            }
        }
    }
    let Some(fp_key) = fp_key_hex(fp) else {
        return Err("without a fingerprint (`fp` is not hex)");
    };
    let scope = match rec.parent {
        None => 0,
        Some(parent) => match identities.get(&parent) {
            Some(&(key, occ)) => instance_key(key, occ),
            None => return Err("names a parent step that never started"),
        },
    };
    let key = scoped_key(scope, fp_key);
    let occ = rec.occ.unwrap_or(0);
    let (refused, in_flight_block) = match &rec.decision {
        Some(d) if d.outcome != "allow" && d.outcome != "approved" => {
            let in_flight = d.rule.as_deref() == Some("resume.in_flight");
            (!in_flight, in_flight)
        }
        _ => (false, false),
    };
    let started = Started {
        key,
        occ,
        fp: fp.to_owned(),
        tool,
        refused,
        in_flight_block,
    };
    Ok((step, started))
}

/// A step's outcome, read (from a `step_end` or a `call`, record `seq` of `run`): a success becomes a hit
/// of its identity; a call that was not served is a miss; a refusal as in flight stays a doubt.
fn ended(
    loaded: &mut Loaded,
    run: &str,
    step: u64,
    start: Started,
    seq: u64,
    rec: LeanEnd<'_>,
) -> Result<(), Error> {
    let replayed = rec.status == Some("replayed");
    if let Some(src) = &rec.replayed_from {
        loaded
            .consumed
            .insert((src.run.clone().into_owned(), src.seq));
    }
    if !replayed && !start.refused {
        loaded.misses.push(start.key);
    }
    // Failed with its effect unknown (the request went out, no verdict came back): as in flight.
    let unknown = rec.landed.as_deref() == Some(Landed::Unknown.as_str())
        && !matches!(rec.status, Some("ok" | "replayed"));
    if start.in_flight_block || unknown {
        loaded.doubts.push((
            start.key,
            InFlightStep {
                run: run.to_owned(),
                step,
                tool: start.tool,
                fingerprint: start.fp,
                effect_unknown: unknown,
            },
        ));
        return Ok(());
    }
    if !matches!(rec.status, Some("ok" | "replayed")) || rec.exact == Some(false) {
        return Ok(());
    }
    let output = match (rec.output, rec.output_blob) {
        (None, Some(blob)) => Recorded::Blob(blob),
        (Some(raw), None) => Recorded::Inline(raw.to_owned()),
        (None, None) => Recorded::Inline(
            serde_json::value::to_raw_value(&serde_json::Value::Null)
                .map_err(|e| Error::Config(e.to_string()))?,
        ),
        (Some(_), Some(_)) => {
            return Err(Error::Corrupt {
                file: run.to_owned(),
                line: seq + 1,
                reason: "a step's outcome has both `output` and `output_blob`".into(),
            })
        }
    };
    let latency = rec.latency_ns.unwrap_or(0);
    let saved_ns = rec.saved_ns.unwrap_or(latency).max(latency);
    let hit = Hit {
        occ: start.occ,
        run: 0,
        seq,
        output,
        saved_ns,
        cost: rec.cost,
        redacted: rec.redacted.is_some_and(|r| r.get().contains("\"/output")),
        tool: start.tool.into_boxed_str(),
    };
    match loaded.hits.entry(start.key) {
        Entry::Occupied(mut queue) => queue.get_mut().add(hit),
        Entry::Vacant(slot) => {
            slot.insert(Queue::One(hit));
        }
    }
    Ok(())
}

/// Loads one run through the verified reader: every record passes the checks of `verify` (chain, seq, run
/// id, structure) before it is indexed; a run that fails is refused naming the first bad record, unless
/// `serve_prefix` asks for the records verified before it.
fn load_one(store: &dyn TraceStore, run: &str, serve_prefix: bool) -> Result<Loaded, Error> {
    let mut reader = VerifiedLines::open(store, run, serve_prefix)?;
    let mut starts: HashMap<u64, Started> = HashMap::new();
    // Every step's identity (key, occurrence), for the calls made inside it.
    let mut identities: HashMap<u64, (u128, u32)> = HashMap::new();
    let mut loaded = Loaded {
        resumed_from: None,
        hits: HashMap::default(),
        consumed: HashSet::new(),
        misses: Vec::new(),
        doubts: Vec::new(),
        positions: HashMap::new(),
        torn_tail: None,
        complete: false,
        unverified: None,
    };
    while let Some(item) = reader.next() {
        let (line, bytes) = item?;
        // Checked as text once for the whole line, then read as text (serde_json's text reader does not
        // check each string again).
        let rec: Lean<'_> = std::str::from_utf8(&bytes)
            .map_err(|e| e.to_string())
            .and_then(|text| serde_json::from_str(text).map_err(|e| e.to_string()))
            .map_err(|reason| Error::Corrupt {
                file: reader.name().to_owned(),
                line,
                reason,
            })?;
        let kind = rec.kind;
        let mut rec = rec;
        let corrupt = |what: &str| Error::Corrupt {
            file: reader.name().to_owned(),
            line,
            reason: format!("{kind} record {what}"),
        };
        match rec.kind {
            "step_start" => {
                let (step, started) = started(&rec, &mut loaded, &identities).map_err(corrupt)?;
                if identities
                    .insert(step, (started.key, started.occ))
                    .is_some()
                {
                    return Err(corrupt("starts a step that already started"));
                }
                starts.insert(step, started);
            }
            "step_end" => {
                let Some(step) = rec.step else {
                    return Err(corrupt("without step"));
                };
                let Some(start) = starts.remove(&step) else {
                    continue;
                };
                let outcome = rec.outcome();
                ended(&mut loaded, run, step, start, rec.seq, outcome)?;
            }
            "call" => {
                let (step, started) = started(&rec, &mut loaded, &identities).map_err(corrupt)?;
                if identities
                    .insert(step, (started.key, started.occ))
                    .is_some()
                {
                    return Err(corrupt("starts a step that already started"));
                }
                let Some(outcome) = rec.end.take() else {
                    return Err(corrupt("without its `end`"));
                };
                ended(&mut loaded, run, step, started, rec.seq, outcome)?;
            }
            "run_end" => loaded.complete = true,
            "run_start" => loaded.resumed_from = rec.resumed_from.map(Cow::into_owned),
            "checkpoint" => {}
            other => {
                return Err(Error::Corrupt {
                    file: reader.name().to_owned(),
                    line,
                    reason: format!("unknown record kind `{other}`"),
                })
            }
        }
    }
    loaded.torn_tail = reader.torn_tail();
    loaded.unverified = reader.fault().map(|f| format!("{}: {f}", reader.name()));
    let mut open: Vec<_> = starts.into_iter().collect();
    open.sort_by_key(|(step, _)| *step);
    for (step, start) in open {
        // Started and never ended: in flight when the run died (it consulted the markers, too).
        if !start.refused {
            loaded.misses.push(start.key);
        }
        loaded.doubts.push((
            start.key,
            InFlightStep {
                run: run.to_owned(),
                step,
                tool: start.tool,
                fingerprint: start.fp,
                effect_unknown: false,
            },
        ));
    }
    // Concurrent calls of one identity may have ended out of order: serve them by occurrence.
    for hits in loaded.hits.values_mut() {
        hits.sort();
    }
    Ok(loaded)
}
