//! `verify`: recompute a run's hash chain and check its structure and summary.

use crate::seal::{self, PublicKey};
use crate::{
    chain, Body, Checkpoint, Counts, ReadError, Record, RunReader, Status, StoreError, TraceRecord,
    TraceStore,
};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

/// What kind of fault `verify` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// A line is not a valid record.
    Corrupt,
    /// A record of a newer format version.
    NewerVersion,
    /// `seq` is not the next number (a record deleted, duplicated or moved).
    Seq,
    /// `prev` does not match the hash of the previous line (a record edited, deleted or moved).
    Chain,
    /// The run_end's seal does not match its bytes (the last record was edited).
    Seal,
    /// A record of another run.
    Run,
    /// Records in an impossible order or shape (no run_start first, a step ended twice, ...).
    Structure,
    /// The run_end's counts or head disagree with the records.
    Summary,
    /// The last line was cut off mid-write.
    TornTail,
    /// The run has no run_end: it crashed, is still running, or its tail was removed.
    Incomplete,
    /// The store could not be read.
    Unreadable,
    /// A checkpoint's signature does not verify (a recomputed chain, a forged or foreign checkpoint).
    Signature,
    /// A signing key was given but the run is not signed with it (no checkpoint, or `run_end` unsigned).
    Unsigned,
    /// With a signing key: the run stops after its last checkpoint without a `run_end` (a crash, or a tail
    /// cut off; the records after that checkpoint are unsigned).
    Truncated,
    /// The pinned head (`--expect-head`) is not the hash of any record of the run.
    Head,
    /// A SQL store's indexed column disagrees with the record's bytes.
    Column,
    /// An output stored apart from its record is missing, cut short or changed.
    Blob,
}

impl FaultKind {
    /// The snake_case name of the kind, as in `verify --json`.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Corrupt => "corrupt",
            FaultKind::NewerVersion => "newer_version",
            FaultKind::Seq => "seq",
            FaultKind::Chain => "chain",
            FaultKind::Seal => "seal",
            FaultKind::Run => "run",
            FaultKind::Structure => "structure",
            FaultKind::Summary => "summary",
            FaultKind::TornTail => "torn_tail",
            FaultKind::Incomplete => "incomplete",
            FaultKind::Unreadable => "unreadable",
            FaultKind::Signature => "signature",
            FaultKind::Unsigned => "unsigned",
            FaultKind::Truncated => "truncated",
            FaultKind::Head => "head",
            FaultKind::Column => "column",
            FaultKind::Blob => "blob",
        }
    }
}

/// What `verify` checks beyond the trace itself: the run the records must belong to, a pinned head, and the
/// public key that must have signed the run's checkpoints.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// The run id every record must carry (a run's file replaced by another run's is then detected).
    pub run: Option<String>,
    /// A chain head pinned earlier (64 hex digits): the hash of some record of the run, as `verify --json`
    /// prints it. Detects a recomputed chain and a cut before that record.
    pub head: Option<String>,
    /// The public key the run's checkpoints must be signed with.
    pub key: Option<PublicKey>,
    /// The store that holds the run's outputs stored apart (see [`crate::blob`]): each one a record names
    /// is read back and checked against its hash. `None`: only the records are checked.
    pub blobs: Option<std::sync::Arc<dyn crate::TraceStore>>,
}

/// The last checkpoint of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SealInfo {
    /// How many checkpoints the run holds.
    pub checkpoints: u64,
    /// The seq of the last checkpoint: every record before it is covered by its signature.
    pub signed_through: u64,
    /// The public key that signed it (hex).
    pub key: String,
    /// Whether that key is the one given to `verify` (false when none was given: the signature is then
    /// only checked against the key the checkpoint names, which proves nothing about who wrote it).
    pub trusted: bool,
}

/// One fault, with the 1-based line it was found on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fault {
    pub kind: FaultKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    pub message: String,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// The result of verifying one run.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub source: String,
    pub run: Option<String>,
    /// Records read and checked before the first fault.
    pub records: u64,
    /// Whether the run ends with a valid run_end.
    pub complete: bool,
    /// The first fault found; verification stops there.
    pub fault: Option<Fault>,
    /// The chain head: the hash of the last whole record read (pin it, and check it later with
    /// `--expect-head`).
    pub head: Option<String>,
    /// The run_end's seal, when the run has one.
    pub seal: Option<String>,
    /// The run's signed checkpoints, when it has any.
    pub signed: Option<SealInfo>,
}

impl VerifyReport {
    /// True when the run verified with no fault at all.
    pub fn is_ok(&self) -> bool {
        self.fault.is_none()
    }
}

/// Reads every record of a run and checks the chain, seq density, structure, the run_end summary and any
/// checkpoint signatures (against the keys they name). The run id is taken from the first record: use
/// [`verify_with`] (or [`verify_run`]) to check that the records belong to the run asked for.
pub fn verify(reader: RunReader) -> VerifyReport {
    verify_with(reader, &VerifyOptions::default())
}

/// Opens `run` in `store` and verifies it, requiring every record to belong to `run`.
pub fn verify_run(store: &dyn TraceStore, run: &str) -> Result<VerifyReport, StoreError> {
    let reader = RunReader::open(store, run)?;
    Ok(verify_with(
        reader,
        &VerifyOptions {
            run: Some(run.to_owned()),
            ..VerifyOptions::default()
        },
    ))
}

/// [`verify`], with the expectations of `options`.
/// The fault of a record whose output stored apart cannot be read back as recorded, when a store to read
/// it from is given.
fn check_blob(options: &VerifyOptions, rec: &crate::TraceRecord) -> Option<Fault> {
    let blob = rec.record.body.end()?.output_blob.as_ref()?;
    let store = options.blobs.as_ref()?;
    let e = store.blob(blob).err()?;
    Some(Fault {
        kind: FaultKind::Blob,
        line: Some(rec.line),
        message: e.to_string(),
    })
}

pub fn verify_with(mut reader: RunReader, options: &VerifyOptions) -> VerifyReport {
    let mut report = VerifyReport {
        source: reader.name().to_owned(),
        run: None,
        records: 0,
        complete: false,
        fault: None,
        head: None,
        seal: None,
        signed: None,
    };
    let mut check = Checker::new(options.run.clone(), options.key.clone());
    let pinned = options.head.as_deref().map(str::to_ascii_lowercase);
    let mut pinned_at = None;
    let mut last_line = 0;
    let mut seal = None;
    for item in reader.by_ref() {
        let fault = match item {
            Ok(rec) => {
                last_line = rec.line;
                let result = check
                    .record(&rec.bytes, &View::of(&rec.record), rec.line)
                    .err();
                let result = result.or_else(|| check_blob(options, &rec));
                if result.is_none() {
                    if let Body::RunEnd(end) = &rec.record.body {
                        seal.clone_from(&end.seal);
                    }
                    if pinned_at.is_none() && pinned.as_deref() == Some(check.prev.as_str()) {
                        pinned_at = Some(rec.record.seq);
                    }
                }
                result
            }
            Err(e) => Some(read_fault(e)),
        };
        if let Some(fault) = fault {
            report.fault = Some(fault);
            check.fill(&mut report, options);
            return report;
        }
    }
    check.fill(&mut report, options);
    report.complete = check.ended;
    report.seal = seal;
    report.fault = end_fault(
        &check,
        options,
        &reader,
        last_line,
        pinned.as_deref(),
        pinned_at,
    );
    report
}

/// The fault found once every record has been read, if any.
fn end_fault(
    check: &Checker,
    options: &VerifyOptions,
    reader: &RunReader,
    last_line: u64,
    pinned: Option<&str>,
    pinned_at: Option<u64>,
) -> Option<Fault> {
    let fault = |kind, message: String| {
        Some(Fault {
            kind,
            line: None,
            message,
        })
    };
    if let (Some(head), None) = (pinned, pinned_at) {
        return fault(
            FaultKind::Head,
            format!(
                "the pinned head {head} is not the hash of any record of this run: a record at or before it was \
                 changed and the chain recomputed, or the run was cut before it"
            ),
        );
    }
    if let Some(key) = &options.key {
        if check.checkpoints == 0 {
            return fault(
                FaultKind::Unsigned,
                format!(
                    "no checkpoint of this run is signed by key {}: it was written without that key, or its \
                     checkpoints were removed",
                    key.hex()
                ),
            );
        }
        if check.ended && !check.end_signed {
            return fault(
                FaultKind::Unsigned,
                "run_end does not follow a signed checkpoint: the run's end was rewritten".into(),
            );
        }
    }
    if let Some(bytes) = reader.torn_tail() {
        return Some(Fault {
            kind: FaultKind::TornTail,
            line: Some(last_line + 1),
            message: format!(
                "the last line is torn: {bytes} bytes that are not a whole record (a write cut off by a crash)"
            ),
        });
    }
    if check.seq == 0 {
        return fault(FaultKind::Incomplete, "the trace holds no records".into());
    }
    if check.ended {
        return None;
    }
    match (&options.key, check.last_checkpoint) {
        (Some(_), Some((k, seq))) => fault(
            FaultKind::Truncated,
            format!(
                "truncated after checkpoint {k} (seq {seq}): the records before it are signed; the {} after it \
                 are not, and no run_end follows (the run crashed, or its tail was cut)",
                check.seq - seq - 1
            ),
        ),
        _ => fault(
            FaultKind::Incomplete,
            format!(
                "incomplete: no run_end after {} records (the run crashed, is still running, or its tail was cut)",
                check.seq
            ),
        ),
    }
}

fn read_fault(e: ReadError) -> Fault {
    let kind = match &e {
        ReadError::Corrupt { .. } => FaultKind::Corrupt,
        ReadError::NewerVersion { .. } => FaultKind::NewerVersion,
        ReadError::Store(StoreError::Column { line, detail, .. }) => {
            return Fault {
                kind: FaultKind::Column,
                line: Some(*line),
                message: detail.clone(),
            }
        }
        ReadError::Store(_) => FaultKind::Unreadable,
    };
    Fault {
        kind,
        line: e.line(),
        message: e.to_string(),
    }
}

/// The checks `verify` makes record by record; recovery and resume reuse them.
#[derive(Default)]
pub(crate) struct Checker {
    /// The run the records must belong to, when known.
    expect_run: Option<String>,
    /// The key checkpoints must be signed with, when given.
    key: Option<PublicKey>,
    pub(crate) checkpoints: u64,
    /// (number, seq) of the last checkpoint, numbered from 1.
    pub(crate) last_checkpoint: Option<(u64, u64)>,
    last_key: Option<String>,
    /// Whether the last record was a checkpoint (for `run_end`).
    after_checkpoint: bool,
    pub(crate) end_signed: bool,
    pub(crate) run: Option<String>,
    pub(crate) seq: u64,
    pub(crate) prev: String,
    pub(crate) ended: bool,
    started: HashSet<u64>,
    pub(crate) open: HashSet<u64>,
    counts: Counts,
}

impl Checker {
    pub(crate) fn new(expect_run: Option<String>, key: Option<PublicKey>) -> Checker {
        Checker {
            expect_run,
            key,
            ..Checker::default()
        }
    }

    /// Copies what was checked into a report.
    fn fill(&self, report: &mut VerifyReport, options: &VerifyOptions) {
        report.run.clone_from(&self.run);
        report.records = self.seq;
        report.head = (self.seq > 0).then(|| self.prev.clone());
        report.signed = match (self.last_checkpoint, &self.last_key) {
            (Some((n, seq)), Some(key)) => Some(SealInfo {
                checkpoints: n,
                signed_through: seq,
                key: key.clone(),
                trusted: options.key.is_some(),
            }),
            _ => None,
        };
    }

    pub(crate) fn record(&mut self, bytes: &[u8], rec: &View<'_>, line: u64) -> Result<(), Fault> {
        let fault = |kind, message: String| Fault {
            kind,
            line: Some(line),
            message,
        };
        let missing = |what: &str| {
            fault(
                FaultKind::Structure,
                format!("{} record without {what}", rec.kind),
            )
        };
        if self.seq == 0 {
            if let Some(expected) = self.expect_run.as_deref().filter(|e| *e != rec.run) {
                return Err(fault(
                    FaultKind::Run,
                    format!(
                        "the records belong to run {}, not to run {expected}: the trace was replaced by another run's",
                        rec.run
                    ),
                ));
            }
        }
        let run = self.run.get_or_insert_with(|| rec.run.to_string()).clone();
        if self.seq == 0 {
            self.prev = chain::genesis_hash(&run);
        }
        if rec.run != run {
            return Err(fault(
                FaultKind::Run,
                format!("record of run {} inside run {run}", rec.run),
            ));
        }
        if self.ended {
            return Err(fault(FaultKind::Structure, "a record after run_end".into()));
        }
        if rec.seq != self.seq {
            return Err(fault(
                FaultKind::Seq,
                format!("seq {} where {} was expected", rec.seq, self.seq),
            ));
        }
        if crate::time::parse_rfc3339(&rec.ts).is_none() {
            return Err(fault(
                FaultKind::Structure,
                format!("ts {:?} is not an RFC 3339 UTC timestamp", rec.ts),
            ));
        }
        if rec.prev != self.prev {
            return Err(fault(
                FaultKind::Chain,
                "prev does not match the hash of the previous record: a record was edited, removed or moved".into(),
            ));
        }
        match (&*rec.kind, self.seq) {
            ("run_start", 0) => {}
            (_, 0) => {
                return Err(fault(
                    FaultKind::Structure,
                    "the first record is not run_start".into(),
                ))
            }
            ("run_start", _) => {
                return Err(fault(FaultKind::Structure, "a second run_start".into()))
            }
            ("step_start", _) => {
                let step = rec.step.ok_or_else(|| missing("`step`"))?;
                if !self.started.insert(step) {
                    return Err(fault(
                        FaultKind::Structure,
                        format!("step {step} started twice"),
                    ));
                }
                self.open.insert(step);
            }
            ("step_end", _) => {
                let (Some(step), Some(status)) = (rec.step, rec.status) else {
                    return Err(missing("`step` and `status`"));
                };
                if !self.open.remove(&step) {
                    return Err(fault(
                        FaultKind::Structure,
                        format!("step {step} ends but is not open"),
                    ));
                }
                self.counts.add(status);
            }
            ("call", _) => {
                if rec.v < crate::record::CALL_SINCE {
                    return Err(fault(
                        FaultKind::Structure,
                        format!(
                            "a call record in format {}: call records exist from format {}",
                            rec.v,
                            crate::record::CALL_SINCE
                        ),
                    ));
                }
                let (Some(step), Some(status)) = (rec.step, rec.end.as_ref().map(|e| e.status))
                else {
                    return Err(missing("`step` and `end.status`"));
                };
                if !self.started.insert(step) {
                    return Err(fault(
                        FaultKind::Structure,
                        format!("step {step} started twice"),
                    ));
                }
                self.counts.add(status);
            }
            ("checkpoint", _) => {
                let (Some(key), Some(sig)) = (&rec.key, &rec.sig) else {
                    return Err(missing("`key` and `sig`"));
                };
                let cp = &Checkpoint {
                    key: key.to_string(),
                    sig: sig.to_string(),
                };
                if !seal::self_consistent(&run, rec.seq, &rec.prev, cp) {
                    return Err(fault(
                        FaultKind::Signature,
                        "the checkpoint's signature does not match the chain: a record before it was changed \
                         and the chain recomputed, or the checkpoint was forged"
                            .into(),
                    ));
                }
                if let Some(key) = &self.key {
                    if !key.check(&run, rec.seq, &rec.prev, cp) {
                        return Err(fault(
                            FaultKind::Signature,
                            format!(
                                "checkpoint signed by key {}, not by the key given ({})",
                                cp.key,
                                key.hex()
                            ),
                        ));
                    }
                }
                self.checkpoints += 1;
                self.last_checkpoint = Some((self.checkpoints, rec.seq));
                self.last_key = Some(cp.key.to_ascii_lowercase());
            }
            ("run_end", _) => {
                let (Some(counts), Some(steps)) = (rec.counts, rec.steps) else {
                    return Err(missing("`counts` and `steps`"));
                };
                self.end_signed = self.after_checkpoint;
                match chain::check_seal(bytes) {
                    Some(true) => {}
                    Some(false) => {
                        return Err(fault(
                            FaultKind::Seal,
                            "run_end does not match its seal".into(),
                        ))
                    }
                    None => return Err(fault(FaultKind::Seal, "run_end carries no seal".into())),
                }
                if rec.head.as_deref() != Some(self.prev.as_str()) {
                    return Err(fault(
                        FaultKind::Summary,
                        "run_end's head is not the chain head".into(),
                    ));
                }
                if counts != self.counts {
                    return Err(fault(
                        FaultKind::Summary,
                        format!(
                            "run_end counts {} but the records hold {}",
                            show(&counts),
                            show(&self.counts)
                        ),
                    ));
                }
                if steps != self.started.len() as u64 {
                    return Err(fault(
                        FaultKind::Summary,
                        format!(
                            "run_end counts {steps} steps but {} started",
                            self.started.len()
                        ),
                    ));
                }
                self.ended = true;
            }
            (other, _) => {
                return Err(fault(
                    FaultKind::Structure,
                    format!("a record of unknown kind `{other}`"),
                ))
            }
        }
        self.after_checkpoint = rec.kind == "checkpoint";
        // The buffer is reused: one line's hash replaces the last one's without an allocation.
        self.prev.clear();
        self.prev.push_str(blake3::hash(bytes).to_hex().as_str());
        self.seq += 1;
        Ok(())
    }
}

fn show(c: &Counts) -> String {
    Status::ALL
        .iter()
        .map(|s| format!("{}={}", s.as_str(), c.get(*s)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// What the checks read of a record: its header and the body fields the run's structure depends on.
/// Decoded on its own (borrowed, every other field skipped) by resume, which needs nothing more before it
/// decodes, with types, the fields it serves; or taken from a fully decoded [`Record`] by `verify`.
#[derive(Deserialize)]
pub(crate) struct View<'a> {
    v: u32,
    seq: u64,
    #[serde(borrow)]
    ts: Cow<'a, str>,
    #[serde(borrow)]
    run: Cow<'a, str>,
    #[serde(borrow)]
    prev: Cow<'a, str>,
    #[serde(borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    step: Option<u64>,
    #[serde(default)]
    status: Option<Status>,
    /// A `call` record's outcome.
    #[serde(default)]
    end: Option<EndView>,
    #[serde(default)]
    counts: Option<Counts>,
    #[serde(default)]
    steps: Option<u64>,
    #[serde(default, borrow)]
    head: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    key: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    sig: Option<Cow<'a, str>>,
}

/// What the checks read of a `call` record's outcome.
#[derive(Deserialize)]
pub(crate) struct EndView {
    status: Status,
}

impl<'a> View<'a> {
    /// The view of a decoded record.
    pub(crate) fn of(rec: &'a Record) -> View<'a> {
        let mut view = View {
            v: rec.v,
            seq: rec.seq,
            ts: Cow::Borrowed(&rec.ts),
            run: Cow::Borrowed(&rec.run),
            prev: Cow::Borrowed(&rec.prev),
            kind: Cow::Borrowed(rec.body.kind()),
            step: None,
            status: None,
            end: None,
            counts: None,
            steps: None,
            head: None,
            key: None,
            sig: None,
        };
        match &rec.body {
            Body::RunStart(_) => {}
            Body::StepStart(s) => view.step = Some(s.step),
            Body::StepEnd(e) => (view.step, view.status) = (Some(e.step), Some(e.status)),
            Body::Call(c) => {
                view.step = Some(c.start.step);
                view.end = Some(EndView {
                    status: c.end.status,
                });
            }
            Body::Checkpoint(cp) => {
                (view.key, view.sig) = (
                    Some(Cow::Borrowed(cp.key.as_str())),
                    Some(Cow::Borrowed(cp.sig.as_str())),
                );
            }
            Body::RunEnd(end) => {
                view.counts = Some(end.counts);
                view.steps = Some(end.steps);
                view.head = end.head.as_deref().map(Cow::Borrowed);
            }
        }
        view
    }

    /// Decodes the view of one line, checking its format version as [`RunReader::decode`] does.
    fn decode(name: &str, line: u64, bytes: &'a [u8]) -> Result<View<'a>, ReadError> {
        let corrupt = |reason: String| ReadError::Corrupt {
            file: name.to_owned(),
            line,
            reason,
        };
        if bytes.is_empty() {
            return Err(corrupt("empty line".into()));
        }
        // The skipped fields are not decoded, but a line is text throughout, as the full decoder requires;
        // checked once for the whole line, the fields are then read as text without checking each again.
        let text = match std::str::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => return Err(corrupt(format!("the line is not UTF-8: {e}"))),
        };
        RunReader::versioned(name, line, bytes, serde_json::from_str(text), |v: &View| {
            v.v
        })
    }
}

/// The checker of a verified reader, and the item it holds back until the next record confirms it.
struct Gate<T> {
    check: Checker,
    run: String,
    held: Option<T>,
    serve_prefix: bool,
    fault: Option<Fault>,
    done: bool,
}

impl<T> Gate<T> {
    fn new(run: &str, serve_prefix: bool) -> Gate<T> {
        Gate {
            check: Checker::new(Some(run.to_owned()), None),
            run: run.to_owned(),
            held: None,
            serve_prefix,
            fault: None,
            done: false,
        }
    }

    /// A record that passed the checks: held, and the one held before it released.
    fn pass(&mut self, item: T) -> Option<T> {
        self.held.replace(item)
    }

    /// The end of the records: the held one is released.
    fn end(&mut self) -> Option<Result<T, StoreError>> {
        self.done = true;
        self.held.take().map(Ok)
    }

    /// A store failure: reported as is.
    fn fail(&mut self, e: StoreError) -> Option<Result<T, StoreError>> {
        self.done = true;
        Some(Err(e))
    }

    fn refuse(&mut self, fault: Fault, source: &str) -> Option<Result<T, StoreError>> {
        self.done = true;
        // The held record's bytes were never confirmed by a successor: it is not served either.
        let served = self
            .check
            .seq
            .saturating_sub(u64::from(self.held.is_some()) + 1);
        self.held = None;
        if self.serve_prefix {
            self.fault = Some(fault);
            return None;
        }
        Some(Err(StoreError::Unverified {
            run: self.run.clone(),
            source_name: source.to_owned(),
            line: fault.line,
            kind: fault.kind.as_str(),
            reason: fault.message,
            verified: served,
        }))
    }

    fn complete(&self) -> bool {
        self.check.ended && self.fault.is_none()
    }
}

/// The records of a run that pass every check of [`verify()`], for readers that serve what they read
/// (resume, offline replay). A record is yielded only once the next record's `prev` has confirmed its bytes
/// (or, for the last record, once it is known to be the last); a torn tail and a missing `run_end` are not
/// faults here (that is what a crashed run looks like).
///
/// At the first fault the iterator yields [`StoreError::Unverified`], naming the record, and stops: unless
/// it was opened with `serve_prefix`, in which case it stops without an error after the records verified
/// before the fault, and [`VerifiedRecords::fault`] tells what cut it short.
pub struct VerifiedRecords {
    reader: RunReader,
    gate: Gate<TraceRecord>,
}

/// The lines of a run that pass the checks of [`verify()`] on the chain, the sequence, the run id, the
/// steps' structure, the summary and the signatures, undecoded: for a reader that then decodes, with its
/// own types, only the fields it uses (resume does). It yields as [`VerifiedRecords`] does, without
/// decoding each record's other fields (arguments, outputs, decisions) into values first.
pub struct VerifiedLines {
    reader: RunReader,
    gate: Gate<(u64, Vec<u8>)>,
}

macro_rules! verified_reader_accessors {
    ($t:ty) => {
        impl std::fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($t))
                    .field("run", &self.gate.run)
                    .field("source", &self.reader.name())
                    .finish()
            }
        }

        impl $t {
            /// Reads `run` of `store`, requiring every record to belong to `run`.
            pub fn open(
                store: &dyn TraceStore,
                run: &str,
                serve_prefix: bool,
            ) -> Result<Self, StoreError> {
                Ok(Self::new(RunReader::open(store, run)?, run, serve_prefix))
            }

            /// Reads `run` from `reader`.
            pub fn new(reader: RunReader, run: &str, serve_prefix: bool) -> Self {
                Self {
                    reader,
                    gate: Gate::new(run, serve_prefix),
                }
            }

            /// The name of what is read, for messages.
            pub fn name(&self) -> &str {
                self.reader.name()
            }

            /// The length of a torn (or undecodable) last line that was dropped, once iteration reached it.
            pub fn torn_tail(&self) -> Option<usize> {
                self.reader.torn_tail()
            }

            /// Whether the run ended with a valid `run_end`.
            pub fn complete(&self) -> bool {
                self.gate.complete()
            }

            /// The fault that ended a served prefix, if one did.
            pub fn fault(&self) -> Option<&Fault> {
                self.gate.fault.as_ref()
            }
        }
    };
}

verified_reader_accessors!(VerifiedRecords);
verified_reader_accessors!(VerifiedLines);

impl Iterator for VerifiedRecords {
    type Item = Result<TraceRecord, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.gate.done {
            let verdict = match self.reader.next() {
                None => return self.gate.end(),
                Some(Ok(rec)) => {
                    match self
                        .gate
                        .check
                        .record(&rec.bytes, &View::of(&rec.record), rec.line)
                    {
                        Ok(()) => match self.gate.pass(rec) {
                            Some(previous) => return Some(Ok(previous)),
                            None => continue,
                        },
                        Err(fault) => fault,
                    }
                }
                Some(Err(ReadError::Store(e))) if !matches!(e, StoreError::Column { .. }) => {
                    return self.gate.fail(e)
                }
                Some(Err(e)) => read_fault(e),
            };
            return self.gate.refuse(verdict, self.reader.name());
        }
        None
    }
}

impl Iterator for VerifiedLines {
    type Item = Result<(u64, Vec<u8>), StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.gate.done {
            let verdict = match self.reader.next_line() {
                None => return self.gate.end(),
                Some(Ok((line, bytes))) => {
                    let checked = View::decode(self.reader.name(), line, &bytes)
                        .map(|view| self.gate.check.record(&bytes, &view, line));
                    match checked {
                        Ok(Ok(())) => match self.gate.pass((line, bytes)) {
                            Some(previous) => return Some(Ok(previous)),
                            None => continue,
                        },
                        Ok(Err(fault)) => fault,
                        // An undecodable last line is a torn tail, as `RunReader` reads it.
                        Err(ReadError::Corrupt { .. }) if self.reader.torn_if_last(bytes.len()) => {
                            return self.gate.end()
                        }
                        Err(e) => read_fault(e),
                    }
                }
                Some(Err(ReadError::Store(e))) if !matches!(e, StoreError::Column { .. }) => {
                    return self.gate.fail(e)
                }
                Some(Err(e)) => read_fault(e),
            };
            return self.gate.refuse(verdict, self.reader.name());
        }
        None
    }
}
