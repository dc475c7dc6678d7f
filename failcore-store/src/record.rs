//! The record model of trace format v2 (which reads format 1 too).
//!
//! A line is `{"v":2,"seq":N,"ts":"…","run":"…","prev":"…","kind":"…", <body fields>}`. The header is written
//! by [`encode_line`]; the body fields by serde from [`RunStart`], [`StepStart`], [`StepEnd`], [`Call`],
//! [`RunEnd`] or [`Checkpoint`].
//!
//! Format 2 adds one kind, `call`: a whole step in one record (its intent and its outcome), written for
//! calls whose intent need not be durable before their body runs (replay hits, refusals, calls that never
//! ran, and pure or read tools). Everything else is as in format 1.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;

/// The format version this crate writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 2;

/// The first format version with `call` records.
pub const CALL_SINCE: u32 = 2;

/// One decoded record: the header every record carries, and its body.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Record {
    pub v: u32,
    pub seq: u64,
    pub ts: String,
    pub run: String,
    pub prev: String,
    #[serde(flatten)]
    pub body: Body,
}

impl Record {
    /// Decodes one line: its header, then its body by `kind`, each straight from the bytes. (The derived
    /// form, a flattened internally tagged body, first buffers every field of the line in an intermediate
    /// tree; this reads the same fields with the same rules at about half the cost.)
    pub fn from_line(bytes: &[u8]) -> Result<Record, serde_json::Error> {
        #[derive(Deserialize)]
        struct Header<'a> {
            v: u32,
            seq: u64,
            ts: String,
            run: String,
            prev: String,
            #[serde(borrow)]
            kind: std::borrow::Cow<'a, str>,
        }
        let header: Header<'_> = serde_json::from_slice(bytes)?;
        let body = match &*header.kind {
            "run_start" => Body::RunStart(serde_json::from_slice(bytes)?),
            "step_start" => Body::StepStart(serde_json::from_slice(bytes)?),
            "step_end" => Body::StepEnd(serde_json::from_slice(bytes)?),
            "call" => Body::Call(serde_json::from_slice(bytes)?),
            "run_end" => Body::RunEnd(serde_json::from_slice(bytes)?),
            "checkpoint" => Body::Checkpoint(serde_json::from_slice(bytes)?),
            other => {
                return Err(serde::de::Error::unknown_variant(
                    other,
                    &[
                        "run_start",
                        "step_start",
                        "step_end",
                        "call",
                        "run_end",
                        "checkpoint",
                    ],
                ))
            }
        };
        Ok(Record {
            v: header.v,
            seq: header.seq,
            ts: header.ts,
            run: header.run,
            prev: header.prev,
            body,
        })
    }
}

/// What a record says, by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Body {
    RunStart(RunStart),
    StepStart(StepStart),
    StepEnd(StepEnd),
    /// A whole step in one record (format 2).
    Call(Box<Call>),
    RunEnd(RunEnd),
    /// A signed checkpoint of the chain head (runs written with a signing key only).
    Checkpoint(Checkpoint),
}

impl Body {
    /// The `kind` string of this body.
    pub fn kind(&self) -> &'static str {
        match self {
            Body::RunStart(_) => "run_start",
            Body::StepStart(_) => "step_start",
            Body::StepEnd(_) => "step_end",
            Body::Call(_) => "call",
            Body::RunEnd(_) => "run_end",
            Body::Checkpoint(_) => "checkpoint",
        }
    }

    /// The intent this record holds: a `step_start`'s, or a `call`'s.
    pub fn start(&self) -> Option<&StepStart> {
        match self {
            Body::StepStart(s) => Some(s),
            Body::Call(c) => Some(&c.start),
            _ => None,
        }
    }

    /// The outcome this record holds: a `step_end`'s, or a `call`'s.
    pub fn end(&self) -> Option<&StepEnd> {
        match self {
            Body::StepEnd(e) => Some(e),
            Body::Call(c) => Some(&c.end),
            _ => None,
        }
    }

    /// A `run_end` with zero counts, for runs that made no calls.
    pub fn run_end_empty(status: RunStatus) -> Body {
        Body::RunEnd(RunEnd {
            status,
            counts: Counts::default(),
            steps: 0,
            total_ns: 0,
            saved_ns: 0,
            head: None,
            seal: None,
        })
    }

    /// The fields of this body as a JSON object, without `kind` (the header carries it).
    pub fn encode_fields(&self) -> Result<Vec<u8>, serde_json::Error> {
        match self {
            Body::RunStart(b) => serde_json::to_vec(b),
            Body::StepStart(b) => serde_json::to_vec(b),
            Body::StepEnd(b) => serde_json::to_vec(b),
            Body::Call(b) => b.encode_fields(),
            Body::RunEnd(b) => serde_json::to_vec(b),
            Body::Checkpoint(b) => serde_json::to_vec(b),
        }
    }
}

/// The mode a run was made in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// A new run: every call executes.
    Record,
    /// A new run linked to an earlier one; recorded successes are served without executing.
    Resume,
    /// Like resume, but a call with no recorded success is an error and nothing executes.
    Offline,
}

/// The first record of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunStart {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed_from: Option<String>,
    pub mode: Mode,
    pub program: String,
    pub host: String,
    pub pid: u32,
    /// Versions of the writer: `{"failcore": "0.1.0", ...}`.
    #[serde(default)]
    pub versions: serde_json::Map<String, Value>,
}

/// A call's intent, written before its body runs (write-ahead).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepStart {
    /// The step id, dense from 0 per run; `step_end` refers to it.
    pub step: u64,
    pub tool: String,
    /// The tool's contract version (part of the fingerprint).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tool_version: String,
    /// BLAKE3 fingerprint of (tool, version, canonical args), hex.
    pub fp: String,
    /// Which call of this fingerprint in the run this is, from 0.
    pub occ: u32,
    /// The canonical arguments with skips and redactions applied.
    pub args: Value,
    /// The step of the tool call this one was made from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<u64>,
    pub decision: Decision,
    /// What was masked before this record was written (arguments, the decision's reason).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redacted: Vec<Redaction>,
    /// Set when this call missed the replay index while the source run made a call of the same tool
    /// at the same position with other arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub divergence: Option<crate::Divergence>,
}

/// A whole step in one record (format 2): the fields of its `step_start`, then its outcome under `end`,
/// which holds the fields of a `step_end` but `step`. Written for calls whose intent need not be durable
/// before their body runs; a crash before the record is written leaves no trace of the call, which then
/// runs again on resume. The `redacted` pointers of the outcome point into `end`'s object as they would into
/// a `step_end` (`/output/...`, `/error`).
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub start: StepStart,
    /// Its `step` is the start's.
    pub end: StepEnd,
}

impl Call {
    /// The fields of this record as a JSON object: the `step_start`'s, then `"end"` with the `step_end`'s
    /// but `step` (the order the runtime writes them in).
    pub fn encode_fields(&self) -> Result<Vec<u8>, serde_json::Error> {
        let start = serde_json::to_vec(&self.start)?;
        let end = serde_json::to_vec(&self.end)?;
        Ok(call_fields(start, &end))
    }
}

/// The fields of a `call` record from those of its `step_start` and its `step_end` (both JSON objects,
/// the `step_end`'s beginning with its `step`, as every encoder of this crate and the runtime writes it):
/// the start's fields, then `"end"` with the end's but `step`.
pub fn call_fields(mut start: Vec<u8>, end: &[u8]) -> Vec<u8> {
    let outcome = outcome_fields(end);
    if start.last() == Some(&b'}') {
        start.pop();
    }
    start.reserve(outcome.len() + 9);
    start.extend_from_slice(b",\"end\":{");
    start.extend_from_slice(outcome);
    start.push(b'}');
    start
}

/// The fields of an encoded `step_end` after its `step`, with the closing brace: `{"step":N,<rest>` gives
/// `<rest>`.
fn outcome_fields(end: &[u8]) -> &[u8] {
    end.strip_prefix(b"{\"step\":")
        .map(|rest| {
            let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
            &rest[digits..]
        })
        .and_then(|rest| rest.strip_prefix(b","))
        .unwrap_or(end.get(1..).unwrap_or_default())
}

impl Serialize for Call {
    /// The fields of [`Call::encode_fields`], in that order (the outcome is spliced in as JSON text, so this
    /// serializes to JSON only).
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Wire<'a> {
            #[serde(flatten)]
            start: &'a StepStart,
            end: Box<serde_json::value::RawValue>,
        }
        let end = serde_json::to_vec(&self.end).map_err(serde::ser::Error::custom)?;
        let mut outcome = b"{".to_vec();
        outcome.extend_from_slice(outcome_fields(&end));
        let end = String::from_utf8(outcome)
            .map_err(serde::ser::Error::custom)
            .and_then(|o| {
                serde_json::value::RawValue::from_string(o).map_err(serde::ser::Error::custom)
            })?;
        Wire {
            start: &self.start,
            end,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Call {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let mut fields = serde_json::Map::<String, Value>::deserialize(deserializer)?;
        let Some(Value::Object(mut end)) = fields.remove("end") else {
            return Err(D::Error::custom("a call record without its `end` object"));
        };
        if end.contains_key("step") {
            return Err(D::Error::custom(
                "a call record's `end` names a step of its own",
            ));
        }
        let start: StepStart =
            serde_json::from_value(Value::Object(fields)).map_err(D::Error::custom)?;
        end.insert("step".into(), start.step.into());
        let end: StepEnd = serde_json::from_value(Value::Object(end)).map_err(D::Error::custom)?;
        Ok(Call { start, end })
    }
}

/// What the policy decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub outcome: DecisionOutcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Decision {
    /// An allow with no policy attached.
    pub fn allow() -> Decision {
        Decision {
            outcome: DecisionOutcome::Allow,
            policy: None,
            rule: None,
            reason: None,
        }
    }
}

/// The outcome of a policy decision, after approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionOutcome {
    Allow,
    Deny,
    /// The policy asked and the approval handler approved.
    Approved,
    /// The policy asked and the handler refused (or there was none).
    Refused,
}

/// The outcome of a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepEnd {
    pub step: u64,
    pub status: Status,
    /// The output as written: `Some(Value::Null)` for an output written as `null`, `None` when the record
    /// has no output field.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub output: Option<Value>,
    /// An output larger than the session's blob threshold, stored apart by content (see [`crate::blob`]):
    /// its hash and length, in place of `output`. Read it with [`crate::TraceStore::blob`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_blob: Option<crate::BlobRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Wall time of the body (0 for steps that did not execute).
    pub latency_ns: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replayed_from: Option<Source>,
    /// For replayed steps: the latency of the source step, saved by not executing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saved_ns: Option<u64>,
    /// What the call cost, as its body reported it (`failcore::report_cost`), in the unit of the run's
    /// price table. On a replayed step, the source step's cost: saved by not executing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<f64>,
    /// Output-contract checks that failed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drift: Vec<Drift>,
    /// What was masked before this record was written (the output, the error). A replay never serves an
    /// output with a masked part: it takes the clear value from the sealed-output store, or executes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redacted: Vec<Redaction>,
    /// `Some(false)` when the output's JSON does not decode back into the value the tool returned (a
    /// `Some` of a value written as `null`, such as `Some(None)`): resume never serves it. `None` (the
    /// field omitted) otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<bool>,
    /// How a call that was in flight when an earlier run died was recovered by this one; omitted for
    /// every other call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered: Option<Recovered>,
    /// For a call that failed or was cancelled: whether its effect could have taken place, as its body
    /// reported it (`failcore::report_landed`; the MCP proxy maps the server's errors). Omitted when
    /// nothing was reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub landed: Option<Landed>,
}

/// Whether the effect of a call that did not succeed could have taken place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Landed {
    /// It did not: the provider refused the call before acting on it (a malformed request, an unknown
    /// tool, a connection never made). Safe to run again.
    No,
    /// It may have: the request was sent and no verdict came back (a timeout, a dropped connection, a
    /// server that died or failed internally). A resume treats the call as in flight at a crash.
    Unknown,
}

impl Landed {
    pub fn as_str(self) -> &'static str {
        match self {
            Landed::No => "no",
            Landed::Unknown => "unknown",
        }
    }
}

/// How a call in flight at a crash was recovered on resume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Recovered {
    /// It ran again.
    Retried,
    /// Its tool's `reconcile` function said the effect had landed: its answer is the output, and the body
    /// did not run again.
    Reconciled,
    /// Its tool's `reconcile` function said the effect had not landed: it ran again.
    NotLanded,
}

impl Recovered {
    pub fn as_str(self) -> &'static str {
        match self {
            Recovered::Retried => "retried",
            Recovered::Reconciled => "reconciled",
            Recovered::NotLanded => "not_landed",
        }
    }
}

/// A field that is present, `null` included: `Some` of its value (a missing field is the `default`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// A value masked before it was recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redaction {
    /// A JSON pointer into the record: `/args/config/password`, `/output/token`, `/error`.
    pub at: String,
    /// The rule that masked it: `path` for a declared path, else the scanner's rule id (`jwt`, ...).
    pub rule: String,
}

/// Where a replayed output came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    pub run: String,
    pub seq: u64,
}

/// An output that broke its contract.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drift {
    /// The contract: `json`, `text`, ...
    pub contract: String,
    pub detail: String,
}

/// The status of a finished step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Failed,
    Blocked,
    Replayed,
    Cancelled,
    Panicked,
}

impl Status {
    pub const ALL: [Status; 6] = [
        Status::Ok,
        Status::Failed,
        Status::Blocked,
        Status::Replayed,
        Status::Cancelled,
        Status::Panicked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Failed => "failed",
            Status::Blocked => "blocked",
            Status::Replayed => "replayed",
            Status::Cancelled => "cancelled",
            Status::Panicked => "panicked",
        }
    }

    /// Whether a resumed run may serve this step's output instead of executing.
    pub fn is_success(self) -> bool {
        matches!(self, Status::Ok | Status::Replayed)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The last record of a run that ended (a crashed run has none).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunEnd {
    pub status: RunStatus,
    pub counts: Counts,
    /// Number of steps started.
    pub steps: u64,
    pub total_ns: u64,
    pub saved_ns: u64,
    /// The chain head: hash of the record before this one. Filled by the journal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<String>,
    /// BLAKE3 of this line without the seal: the last record has no successor to chain it, so it
    /// seals itself. Filled by the journal; always the last field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal: Option<String>,
}

/// A signed checkpoint: the Ed25519 signature, by `key`, of "record `seq - 1` of this run hashes to
/// `prev`" (see `seal::message`). Written only by a journal configured with a signing key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The signer's public key, 64 hex digits.
    pub key: String,
    /// The signature, 128 hex digits.
    pub sig: String,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Every step ended ok, replayed or blocked.
    Ok,
    /// At least one step failed, panicked or was cancelled.
    Failed,
}

/// Steps per status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    #[serde(default)]
    pub ok: u64,
    #[serde(default)]
    pub failed: u64,
    #[serde(default)]
    pub blocked: u64,
    #[serde(default)]
    pub replayed: u64,
    #[serde(default)]
    pub cancelled: u64,
    #[serde(default)]
    pub panicked: u64,
}

impl Counts {
    pub fn get(&self, s: Status) -> u64 {
        match s {
            Status::Ok => self.ok,
            Status::Failed => self.failed,
            Status::Blocked => self.blocked,
            Status::Replayed => self.replayed,
            Status::Cancelled => self.cancelled,
            Status::Panicked => self.panicked,
        }
    }

    pub fn add(&mut self, s: Status) {
        *match s {
            Status::Ok => &mut self.ok,
            Status::Failed => &mut self.failed,
            Status::Blocked => &mut self.blocked,
            Status::Replayed => &mut self.replayed,
            Status::Cancelled => &mut self.cancelled,
            Status::Panicked => &mut self.panicked,
        } += 1;
    }

    pub fn total(&self) -> u64 {
        Status::ALL.iter().map(|s| self.get(*s)).sum()
    }
}

/// Encodes one line (without its newline): the header, then the body's fields.
///
/// `fields` is the body serialized as a JSON object (`{...}`), as [`Body::encode_fields`] makes it.
pub fn encode_line(
    seq: u64,
    ts: &str,
    run: &str,
    prev: &str,
    kind: &str,
    fields: &[u8],
) -> Vec<u8> {
    let mut line = Vec::with_capacity(160 + run.len() + fields.len());
    // Run ids and kinds are ASCII without quotes (checked where runs are created); ts and prev are ours.
    let mut num = itoa::Buffer::new();
    line.extend_from_slice(b"{\"v\":");
    line.extend_from_slice(num.format(FORMAT_VERSION).as_bytes());
    line.extend_from_slice(b",\"seq\":");
    line.extend_from_slice(num.format(seq).as_bytes());
    for (key, value) in [
        (&b",\"ts\":\""[..], ts),
        (b"\",\"run\":\"", run),
        (b"\",\"prev\":\"", prev),
        (b"\",\"kind\":\"", kind),
    ] {
        line.extend_from_slice(key);
        line.extend_from_slice(value.as_bytes());
    }
    line.push(b'"');
    match fields {
        [b'{', b'}'] | [] => line.push(b'}'),
        [b'{', rest @ ..] => {
            line.push(b',');
            line.extend_from_slice(rest);
        }
        _ => line.push(b'}'),
    }
    line
}
