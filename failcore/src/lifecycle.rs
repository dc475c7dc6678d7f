//! The lifecycle of one call: resolve, validate, execute, commit.
//!
//! Generated code calls [`serialize_args`] (synchronous, so that no borrowed argument is held across an
//! await), then [`enter`] (non-generic: fingerprint, policy, replay lookup, intent record), then [`run`],
//! the only generic function, which decodes a replayed output or runs the body and hands its outcome back
//! to non-generic commit functions.

use crate::fingerprint::{
    fingerprint_hash, fp_key, has_markers, write_canonical, write_output, CanonicalError, SOME_NULL,
};
use crate::policy::{CallView, PolicyRef, Verdict};
use crate::registry::{
    Effect, InFlightRecovery, OutputContract, ParamRole, ToolDescriptor, ToolInfo,
};
use crate::replay::{instance_key, scoped_key, Recorded};
use crate::scope::{Intent, Recovering};
use crate::secrets::{Masked, Scrubber, Seal};
use crate::session::{in_context, ApprovalRequest, Context, InFlight, Session};
use crate::Error;
use failcore_store::{BlobRef, Decision, DecisionOutcome, Drift, Durability, Mode, Status};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::value::RawValue;
use std::fmt::Display;
use std::future::Future;
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::Instant;

/// The arguments of a call, serialized before anything is awaited.
pub struct Prepared(Result<Args, Error>);

struct Args {
    /// Canonical JSON of the non-skipped arguments, redacted ones in clear: what policies see.
    canonical: Vec<u8>,
    /// What is fingerprinted when it differs from `canonical`: the same with each `Some` that JSON
    /// writes as `null` marked, so that `Some(None)` and `None` are different calls.
    marked: Option<Vec<u8>>,
    /// The same with redacted values replaced by their keyed hash and secrets masked: what is recorded.
    /// `None` if equal.
    stored: Option<Vec<u8>>,
    /// Positions of whole arguments to redact (`redact(a)`), to be hashed once the session (and its key)
    /// is known.
    redacted: Vec<(std::ops::Range<usize>, &'static str)>,
    /// What was masked in `stored`.
    masked: Vec<Masked>,
}

/// Serializes the arguments (in parameter order, skipped ones left out) into canonical JSON.
pub fn serialize_args(
    tool: &'static ToolDescriptor,
    values: &[&dyn erased_serde::Serialize],
) -> Prepared {
    let params = tool.params.iter().filter(|p| p.role != ParamRole::Skipped);
    let mut entries: Vec<(&'static str, bool, &dyn erased_serde::Serialize)> = params
        .zip(values.iter())
        .map(|(p, v)| (p.name, p.role == ParamRole::Redacted, *v))
        .collect();
    entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut canonical = Vec::with_capacity(64);
    let mut redacted = Vec::new();
    canonical.push(b'{');
    for (i, (name, redact, value)) in entries.into_iter().enumerate() {
        if i > 0 {
            canonical.push(b',');
        }
        let _ = serde_json::to_writer(&mut canonical, name);
        canonical.push(b':');
        let start = canonical.len();
        if let Err(e) = write_canonical(value, &mut canonical) {
            return Prepared(Err(Error::Serialize {
                tool: tool.name.to_owned(),
                what: "the arguments",
                reason: format!("argument `{name}`: {}", e.0),
            }));
        }
        if redact {
            redacted.push((start..canonical.len(), name));
        }
    }
    canonical.push(b'}');
    if let Err(e) = within_limit(&canonical) {
        return Prepared(Err(Error::Serialize {
            tool: tool.name.to_owned(),
            what: "the arguments",
            reason: e.0,
        }));
    }
    let marked = if has_markers(&canonical) {
        let marked = canonical;
        let before = |at: usize| marked[..at].iter().filter(|b| **b == SOME_NULL).count();
        for (range, _) in &mut redacted {
            *range = range.start - before(range.start)..range.end - before(range.end);
        }
        canonical = marked.iter().copied().filter(|b| *b != SOME_NULL).collect();
        Some(marked)
    } else {
        None
    };
    Prepared(Ok(Args {
        canonical,
        marked,
        stored: None,
        redacted,
        masked: Vec::new(),
    }))
}

/// Refuses a value too large for a trace line, so that no call is acknowledged that readers would refuse.
fn within_limit(value: &[u8]) -> Result<(), CanonicalError> {
    if value.len() > failcore_store::MAX_VALUE_BYTES {
        return Err(CanonicalError(format!(
            "{} bytes of JSON is over the trace's limit of {} bytes for one value",
            value.len(),
            failcore_store::MAX_VALUE_BYTES
        )));
    }
    Ok(())
}

/// The arguments of a call to a tool known only at run time: a JSON object, fingerprinted whole.
pub(crate) fn prepare_value(tool: &'static ToolDescriptor, args: &serde_json::Value) -> Prepared {
    let mut canonical = Vec::with_capacity(64);
    match write_canonical(args, &mut canonical).and_then(|()| within_limit(&canonical)) {
        Ok(()) => Prepared(Ok(Args {
            canonical,
            marked: None,
            stored: None,
            redacted: Vec::new(),
            masked: Vec::new(),
        })),
        Err(e) => Prepared(Err(Error::Serialize {
            tool: tool.name.to_owned(),
            what: "the arguments",
            reason: e.0,
        })),
    }
}

impl Args {
    /// Builds the recorded form: whole arguments redacted by `redact(a)`, then the tool's paths and the
    /// secret scan.
    fn scrub(&mut self, scrubber: &Scrubber, tool: &'static ToolDescriptor) {
        if !self.redacted.is_empty() {
            let mut stored = Vec::with_capacity(self.canonical.len());
            let mut at = 0;
            for (range, name) in &self.redacted {
                stored.extend_from_slice(&self.canonical[at..range.start]);
                let hash = blake3::keyed_hash(scrubber.key(), &self.canonical[range.clone()]);
                let _ = write!(stored, "\"redacted:{}\"", &hash.to_hex()[..32]);
                at = range.end;
                self.masked.push(Masked {
                    at: format!("/args/{name}"),
                    rule: "path",
                });
            }
            stored.extend_from_slice(&self.canonical[at..]);
            self.stored = Some(stored);
        }
        if let Some(s) = scrubber.args(tool, self.recorded()) {
            self.stored = Some(s.value);
            self.masked.extend(s.masked);
        }
    }

    fn recorded(&self) -> &[u8] {
        self.stored.as_deref().unwrap_or(&self.canonical)
    }

    /// The recorded arguments and what was masked in them, for `encode_start`.
    fn record(&self) -> (&[u8], &[Masked]) {
        (self.recorded(), &self.masked)
    }
}

/// Where a call stands after [`enter`].
pub struct Entered(State);

enum State {
    /// Nothing to run: blocked, a replay miss offline, unserializable arguments, no session.
    Done(Error),
    Replay(ReplayStep),
    Execute(StepGuard),
}

struct ReplayStep {
    session: Session,
    tool: &'static ToolDescriptor,
    step: u64,
    /// Its encoded step_start: written with its outcome as one `call` record.
    start: Vec<u8>,
    /// The deferred intents of the calls it was made from.
    up: Option<Arc<Intent>>,
    /// Whether its record was written; if it is dropped before, the call is recorded as cancelled.
    written: bool,
    /// The run that holds the served record (an index into the replay index's runs).
    source_run: u16,
    source_seq: u64,
    saved_ns: u64,
    /// The source step's cost, saved by serving it.
    cost: Option<f64>,
    output: Box<RawValue>,
    /// The payload the output was read from, when it was stored apart: the served record names it again.
    blob: Option<failcore_store::BlobRef>,
}

/// A call after [`enter`]: where it stands, and its telemetry span.
pub struct Call {
    entered: Entered,
    span: tracing::Span,
}

/// The span of one tool call, following the OpenTelemetry GenAI semantic conventions: named
/// `execute_tool {tool}` (through `otel.name`, which OpenTelemetry layers take as the span name), with
/// `gen_ai.operation.name`, `gen_ai.tool.name`, `gen_ai.tool.call.id` (`{run}:{step}`) and, when the call
/// does not succeed, `error.type` (see [`Error::kind`]).
fn call_span(tool: &'static ToolDescriptor) -> tracing::Span {
    tracing::info_span!(
        target: "failcore",
        "execute_tool",
        otel.name = %format_args!("execute_tool {}", tool.name),
        otel.kind = "internal",
        otel.status_code = tracing::field::Empty,
        gen_ai.operation.name = "execute_tool",
        gen_ai.tool.name = tool.name,
        gen_ai.tool.type = "function",
        gen_ai.tool.call.id = tracing::field::Empty,
        error.type = tracing::field::Empty,
        failcore.replayed = tracing::field::Empty,
    )
}

fn record_error(span: &tracing::Span, kind: &str) {
    span.record("error.type", kind);
    span.record("otel.status_code", "ERROR");
}

/// Resolves and validates a call, and either serves it from the replay index or records its intent,
/// inside the call's span.
pub async fn enter(tool: &'static ToolDescriptor, prepared: Prepared) -> Call {
    use tracing::Instrument;
    let span = call_span(tool);
    let entered = enter_untraced(tool, prepared)
        .instrument(span.clone())
        .await;
    match &entered.0 {
        State::Done(e) => record_error(&span, e.kind()),
        State::Replay(_) => {
            span.record("failcore.replayed", true);
        }
        State::Execute(_) => {}
    }
    Call { entered, span }
}

async fn enter_untraced(tool: &'static ToolDescriptor, prepared: Prepared) -> Entered {
    let ctx = match crate::session::context() {
        Ok(ctx) => ctx,
        Err(e) => return Entered(State::Done(e)),
    };
    let Context {
        session,
        parent,
        scope,
        intent: up,
        ..
    } = ctx;
    let inner = &session.inner;
    let step = inner.next_step();
    tracing::Span::current().record(
        "gen_ai.tool.call.id",
        tracing::field::display(format_args!("{}:{step}", inner.run)),
    );
    let durability = inner.durability_for(tool.name);

    let mut args = match prepared.0 {
        Ok(args) => args,
        Err(e) => {
            let start = encode_start(
                &inner.scrubber,
                tool,
                step,
                "",
                0,
                (b"null", &[]),
                parent,
                &Decision::allow(),
            );
            return Entered(State::Done(
                not_run(
                    &session,
                    (tool, step, up.as_deref()),
                    start,
                    Status::Failed,
                    durability,
                    e,
                )
                .await,
            ));
        }
    };
    args.scrub(&inner.scrubber, tool);
    let hash = fingerprint_hash(
        tool.name,
        tool.version,
        args.marked.as_deref().unwrap_or(&args.canonical),
    );
    // A call's identity is its fingerprint within the call it was made from.
    let scope = scope.map_or(0, |(key, occ)| instance_key(key, occ));
    let key = scoped_key(scope, fp_key(hash.as_bytes()));
    let occ = inner.next_occurrence(key);
    let fp = hash.to_hex().to_string();
    // This call's step_start, under a given decision.
    let start_record = |decision: &Decision| {
        encode_start(
            &inner.scrubber,
            tool,
            step,
            &fp,
            occ,
            args.record(),
            parent,
            decision,
        )
    };

    // validate. A policy may wait (for a person's approval): a call dropped meanwhile is recorded.
    let (mut decision, denied) = {
        let mut unrecorded = Unrecorded::new(&session, (tool, step, up.as_deref()), &start_record);
        unrecorded.under = Under::Undecided;
        let decided = decide(&session, tool, &args.canonical).await;
        unrecorded.disarm();
        decided
    };
    if let Some(blocked) = denied {
        let start = start_record(&decision);
        return Entered(State::Done(
            block(
                &session,
                (tool, step, up.as_deref()),
                start,
                &decision,
                blocked,
            )
            .await,
        ));
    }

    // Offline, no tool body runs: not even one that is never replayed.
    if inner.mode == Mode::Offline && !tool.replay {
        let err = Error::ReplayMiss {
            tool: tool.name.to_owned(),
            run: inner
                .replay
                .as_ref()
                .map(|r| r.source.clone())
                .unwrap_or_default(),
            fingerprint: fp.clone(),
            occurrence: occ,
            detail: "; the tool is `replay = \"never\"`, and offline nothing executes".into(),
        };
        let start = start_record(&decision);
        return Entered(State::Done(
            not_run(
                &session,
                (tool, step, up.as_deref()),
                start,
                Status::Failed,
                durability,
                err,
            )
            .await,
        ));
    }

    // execute: replay first
    let mut pending_divergence = None;
    // A call in flight when the resumed run died: how it is recovered.
    let mut recovering = None;
    if let (Some(index), true) = (&inner.replay, tool.replay) {
        let position = index.next_position(tool.name);
        // A recorded output with a masked part is never served as recorded: its clear value comes from
        // the vault, or the call misses (and executes, or is a ReplayMiss offline).
        let mut sealed_miss = false;
        // A strict replay serves effectful calls only in their recorded order (within the call they are
        // made from): one that comes before a later recorded one already served is a miss.
        let mut order_miss = String::new();
        let taken = match index.take(key) {
            Some(hit)
                if inner.strict
                    && matches!(
                        tool.effect,
                        Effect::Write | Effect::Network | Effect::Exec | Effect::Unspecified
                    ) =>
            {
                match index.effect_in_order(scope, hit.run, hit.seq) {
                    Ok(()) => Some(hit),
                    Err(later) => {
                        order_miss = format!(
                            "; strict replay: this effectful call was recorded (seq {}) before one \
                             already served (seq {later}): the run makes its effectful calls in \
                             another order than the recording",
                            hit.seq
                        );
                        None
                    }
                }
            }
            other => other,
        };
        // A recorded output stored apart that cannot be read back as recorded: the call misses.
        let mut blob_miss = None;
        if let Some(hit) = taken {
            let source_run = hit.run;
            let (recorded, blob) = match hit.output {
                Recorded::Inline(raw) => (Some(raw), None),
                Recorded::Blob(blob) => match read_blob(inner.store.as_ref(), &blob) {
                    Ok(raw) => (Some(raw), Some(blob)),
                    Err(why) => {
                        tracing::warn!(tool = tool.name, "{why}");
                        blob_miss = Some(why);
                        (None, None)
                    }
                },
            };
            let output = match recorded {
                Some(recorded) if hit.redacted => {
                    // Reading the vault waits: a call dropped meanwhile is recorded.
                    let mut unrecorded =
                        Unrecorded::new(&session, (tool, step, up.as_deref()), &start_record);
                    unrecorded.under = Under::Decided(&decision);
                    let clear = inner.scrubber.unseal(recorded.get().as_bytes()).await;
                    unrecorded.disarm();
                    clear
                        .and_then(|clear| String::from_utf8(clear).ok())
                        .and_then(|clear| RawValue::from_string(clear).ok())
                }
                other => other,
            };
            // The payload a served record names again: the one read, unless the vault gave the clear value.
            let blob = blob.filter(|_| !hit.redacted);
            match output {
                Some(output) => {
                    // Written with its outcome, as one record, once the output is decoded.
                    let start = start_record(&decision);
                    return Entered(State::Replay(ReplayStep {
                        session: session.clone(),
                        tool,
                        step,
                        start,
                        up,
                        written: false,
                        source_run,
                        source_seq: hit.seq,
                        saved_ns: hit.saved_ns,
                        cost: hit.cost,
                        output,
                        blob,
                    }));
                }
                None => sealed_miss = blob_miss.is_none(),
            }
        }
        let divergence = index.divergence(tool.name, position, args.recorded());
        if inner.mode == Mode::Offline {
            let detail = divergence
                .as_ref()
                .map(|d| {
                    // The call at its position, or the recorded call nearest to it by content.
                    let which = if d.position == position {
                        "it diverges from"
                    } else {
                        "nearest by content:"
                    };
                    format!(
                        "; {which} call #{} of {} in that run (seq {}): {}",
                        d.position,
                        tool.name,
                        d.seq,
                        failcore_store::describe_changes(&d.changes)
                    )
                })
                .unwrap_or_default();
            let detail = match &blob_miss {
                Some(why) => format!("; {why}{order_miss}{detail}"),
                None => format!("{order_miss}{detail}"),
            };
            let detail = if sealed_miss {
                let why = if inner.scrubber.has_vault() {
                    "the vault does not hold it (or it does not open with this key)"
                } else {
                    "no vault is configured: the redaction key was given as bytes or the vault was \
                     turned off; give one with Session::builder().vault(dir) or FAILCORE_VAULT=dir \
                     (by default it sits beside the redaction key file)"
                };
                format!("; its recorded output was redacted and {why}{detail}")
            } else {
                detail
            };
            let err = Error::ReplayMiss {
                tool: tool.name.to_owned(),
                run: index.source.clone(),
                fingerprint: fp.clone(),
                occurrence: occ,
                detail,
            };
            let start = start_record(&decision);
            let start = with_divergence(start, divergence.as_ref());
            return Entered(State::Done(
                not_run(
                    &session,
                    (tool, step, up.as_deref()),
                    start,
                    Status::Failed,
                    durability,
                    err,
                )
                .await,
            ));
        }
        pending_divergence = divergence;
        let session_blocks = inner.on_in_flight == InFlight::Block
            && matches!(tool.effect, Effect::Write | Effect::Exec);
        let recovery = match tool.recovery {
            InFlightRecovery::Session if session_blocks => InFlightRecovery::Block,
            InFlightRecovery::Session => InFlightRecovery::Retry,
            declared => declared,
        };
        if index.take_in_flight(key) {
            recovering = Some(Arc::new(Recovering::new(recovery)));
        }
        if recovering.is_some() && recovery == InFlightRecovery::Block {
            let remedy = if tool.recovery == InFlightRecovery::Block {
                "its tool declares recovery = \"block\""
            } else {
                "then resume with on_in_flight = rerun"
            };
            decision = Decision {
                outcome: DecisionOutcome::Deny,
                policy: Some("resume".into()),
                rule: Some("resume.in_flight".into()),
                reason: Some(format!(
                    "this `{}` call was in flight when run {} died (or failed there with its effect \
                     unknown) and may have taken effect; check it by hand ({remedy})",
                    tool.effect, index.source
                )),
            };
            let err = blocked_error(tool, &decision);
            let start = start_record(&decision);
            return Entered(State::Done(
                block(&session, (tool, step, up.as_deref()), start, &decision, err).await,
            ));
        }
    }

    let start = with_divergence(start_record(&decision), pending_divergence.as_ref());
    let intent = if matches!(tool.effect, Effect::Pure | Effect::Read) {
        // Nothing to undo if the body never finishes: the intent waits for the outcome, and both are
        // written as one record.
        Some(Arc::new(Intent {
            start: Mutex::new(Some(start)),
            up,
        }))
    } else {
        // Write-ahead intent: durable (per the mode) before the body runs.
        flush(up.as_deref(), &inner.journal);
        if let Err(e) = inner
            .journal
            .append_encoded("step_start", start, durability)
            .await
        {
            return Entered(State::Done(e.into()));
        }
        None
    };
    Entered(State::Execute(StepGuard {
        session: session.clone(),
        tool,
        step,
        identity: (key, occ),
        durability,
        intent,
        recovering,
        done: false,
    }))
}

/// Inside a tool body: whether the tool's `reconcile` function must be asked first (the call was in flight
/// when the resumed run died, and has not been reconciled yet). Called by the code `#[failcore::tool]`
/// generates.
pub fn reconciling() -> bool {
    crate::session::CONTEXT
        .try_with(|ctx| ctx.recovering.as_ref().is_some_and(|r| r.must_reconcile()))
        .unwrap_or(false)
}

/// Inside a tool body: the `reconcile` function's answer, recorded on the step.
pub fn reconciled(landed: bool) {
    let _ = crate::session::CONTEXT.try_with(|ctx| {
        if let Some(r) = &ctx.recovering {
            r.answer(landed);
        }
    });
}

/// A call that has taken its step but written no record yet, across a wait: if its future is dropped during
/// the wait, it is recorded as cancelled (one `call` record), so that every step the run counts is in its
/// trace.
struct Unrecorded<'a> {
    session: &'a Session,
    call: (&'static ToolDescriptor, u64, Option<&'a Intent>),
    start: &'a (dyn Fn(&Decision) -> Vec<u8> + Sync),
    under: Under<'a>,
}

/// The decision an [`Unrecorded`] call is recorded under if it is dropped.
enum Under<'a> {
    /// Disarmed: nothing is recorded.
    Nothing,
    /// Dropped while its policies decided (a person's approval pending).
    Undecided,
    Decided(&'a Decision),
}

impl<'a> Unrecorded<'a> {
    fn new(
        session: &'a Session,
        call: (&'static ToolDescriptor, u64, Option<&'a Intent>),
        start: &'a (dyn Fn(&Decision) -> Vec<u8> + Sync),
    ) -> Self {
        Unrecorded {
            session,
            call,
            start,
            under: Under::Nothing,
        }
    }

    /// The wait is over: whatever follows writes the call's records.
    fn disarm(&mut self) {
        self.under = Under::Nothing;
    }
}

impl Drop for Unrecorded<'_> {
    fn drop(&mut self) {
        let decision = match std::mem::replace(&mut self.under, Under::Nothing) {
            Under::Nothing => return,
            Under::Undecided => Decision {
                outcome: DecisionOutcome::Refused,
                policy: None,
                rule: Some("approval.dropped".into()),
                reason: Some("the call was dropped before its policy decision was made".into()),
            },
            Under::Decided(d) => d.clone(),
        };
        let (tool, step, up) = self.call;
        let inner = &self.session.inner;
        let end = cancelled(&self.session.inner, tool, step, None);
        flush(up, &inner.journal);
        let call = failcore_store::call_fields((self.start)(&decision), &end);
        inner.journal.enqueue_encoded("call", call);
    }
}

/// Writes the deferred `step_start`s of `intent` and of the calls it was made from that no record wrote
/// yet, outermost first: done before any record of a call made inside them. Each is queued while its lock
/// is held, so that the call's own outcome, which takes the lock to learn whether it was written, follows it.
fn flush(intent: Option<&Intent>, journal: &failcore_store::Journal) {
    let Some(intent) = intent else { return };
    let mut start = intent.start.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(bytes) = start.take() {
        flush(intent.up.as_deref(), journal);
        journal.enqueue_encoded("step_start", bytes);
    }
}

/// Records a refused call (its encoded step_start, and a `blocked` outcome) and returns the error to give back.
async fn block(
    session: &Session,
    (tool, step, up): (&'static ToolDescriptor, u64, Option<&Intent>),
    start: Vec<u8>,
    decision: &Decision,
    err: Error,
) -> Error {
    // The reason may quote the arguments: logged as it is recorded.
    let text = err.to_string();
    let text = session
        .inner
        .scrubber
        .text(&text, "")
        .map_or(text, |s| s.value);
    tracing::warn!(
        tool = tool.name,
        rule = decision.rule.as_deref().unwrap_or(""),
        "call blocked: {text}"
    );
    let durability = session.inner.durability_for(tool.name);
    not_run(
        session,
        (tool, step, up),
        start,
        Status::Blocked,
        durability,
        err,
    )
    .await
}

/// Records a step whose body never ran (its intent and an outcome carrying `err`, as one `call` record) and
/// returns the error to give back.
async fn not_run(
    session: &Session,
    (tool, step, up): (&'static ToolDescriptor, u64, Option<&Intent>),
    start: Vec<u8>,
    status: Status,
    durability: Durability,
    err: Error,
) -> Error {
    let (end, _) = encode_end(
        (&session.inner, tool),
        step,
        status,
        None,
        Some(&err.to_string()),
        (0, None),
        None,
        &[],
    );
    let journal = &session.inner.journal;
    flush(up, journal);
    session.inner.count(status);
    let call = failcore_store::call_fields(start, &end);
    match journal.append_encoded("call", call, durability).await {
        Ok(_) => err,
        // The trace could not take the record: the store's failure is the more urgent news.
        Err(store) => Error::Store(store),
    }
}

fn blocked_error(tool: &ToolDescriptor, d: &Decision) -> Error {
    Error::Blocked {
        tool: tool.name.to_owned(),
        policy: d.policy.clone().unwrap_or_default(),
        rule: d.rule.clone().unwrap_or_default(),
        reason: d.reason.clone().unwrap_or_default(),
    }
}

fn tool_policy(session: &Session, tool: &'static ToolDescriptor) -> Option<PolicyRef> {
    crate::policy::own_policy(&session.inner.policies, tool)
}

/// Runs the session's guards, then the tool's policy. The first denial wins; asks go to the approver.
async fn decide(
    session: &Session,
    tool: &'static ToolDescriptor,
    args: &[u8],
) -> (Decision, Option<Error>) {
    let inner = &session.inner;
    let own = tool_policy(session, tool);
    let attached = if inner.tool_policies.is_empty() {
        None
    } else {
        inner.tool_policies.get(tool.name).cloned()
    };
    if inner.guards.is_empty() && own.is_none() && attached.is_none() {
        return (Decision::allow(), None);
    }
    let mut view = CallView::new(tool, args);
    view.spent = Some(&inner.ledger);
    let mut outcome = DecisionOutcome::Allow;
    let mut last_name = None;
    for policy in inner.guards.iter().chain(attached.iter()).chain(own.iter()) {
        let name = policy.name().to_owned();
        let verdict = crate::policy::verdict_of(policy.as_ref(), &view);
        match verdict {
            Verdict::Allow => {}
            Verdict::Deny { rule, reason } => {
                let d = Decision {
                    outcome: DecisionOutcome::Deny,
                    policy: Some(name),
                    rule: Some(rule),
                    reason: Some(reason),
                };
                let err = blocked_error(tool, &d);
                return (d, Some(err));
            }
            Verdict::Ask { reason } => {
                let approved = match &inner.approver {
                    Some(approver) => {
                        let request = ApprovalRequest {
                            tool: ToolInfo(tool),
                            args: view.args().clone(),
                            policy: name.clone(),
                            reason: reason.clone(),
                            run: inner.run.clone(),
                        };
                        approver.approve(&request).await
                    }
                    None => false,
                };
                if !approved {
                    let why = if inner.approver.is_some() {
                        format!("approval refused: {reason}")
                    } else {
                        format!("needs approval and the session has no approval handler: {reason}")
                    };
                    let d = Decision {
                        outcome: DecisionOutcome::Refused,
                        policy: Some(name),
                        rule: Some("approval".into()),
                        reason: Some(why),
                    };
                    let err = blocked_error(tool, &d);
                    return (d, Some(err));
                }
                outcome = DecisionOutcome::Approved;
            }
        }
        last_name = Some(name);
    }
    (
        Decision {
            outcome,
            policy: last_name,
            rule: None,
            reason: None,
        },
        None,
    )
}

/// Records the outcome of an executing step; if dropped first, records it as cancelled.
struct StepGuard {
    session: Session,
    tool: &'static ToolDescriptor,
    step: u64,
    /// This call's identity (key, occurrence): the calls made inside it are scoped by it.
    identity: (u128, u32),
    durability: Durability,
    /// A pure or read call's deferred intent (its `step_start` is written with its outcome).
    intent: Option<Arc<Intent>>,
    /// Set when the call was in flight when the resumed run died.
    recovering: Option<Arc<Recovering>>,
    done: bool,
}

impl StepGuard {
    /// `end` (an encoded `step_end` of `status`) with whether its effect could have landed, as the body
    /// reported it (`report_landed`): kept only on a call that did not succeed.
    fn with_landed(&self, end: Vec<u8>, status: Status) -> Vec<u8> {
        match self.session.inner.landed.take(self.step) {
            Some(landed) if status != Status::Ok => with_field(end, "landed", landed.as_str()),
            _ => end,
        }
    }

    /// The record of this call's outcome `end` (an encoded `step_end`): the `step_end` itself, or, when the
    /// intent was deferred and no nested call wrote it, one `call` record holding both.
    fn outcome_record(&self, end: Vec<u8>, status: Status) -> (&'static str, Vec<u8>) {
        let end = match &self.recovering {
            Some(r) => with_field(end, "recovered", r.recovered().as_str()),
            None => end,
        };
        let end = self.with_landed(end, status);
        let Some(intent) = &self.intent else {
            return ("step_end", end);
        };
        let journal = &self.session.inner.journal;
        flush(intent.up.as_deref(), journal);
        match intent.take() {
            Some(start) => ("call", failcore_store::call_fields(start, &end)),
            None => ("step_end", end),
        }
    }

    async fn end(
        &mut self,
        status: Status,
        output: Option<&[u8]>,
        error: Option<&str>,
        latency_ns: u64,
        drift: &[Drift],
    ) -> Result<(), Error> {
        self.done = true;
        self.session.inner.count(status);
        let (end, seal) = encode_end(
            (&self.session.inner, self.tool),
            self.step,
            status,
            output,
            error,
            (latency_ns, self.session.inner.ledger.take(self.step)),
            None,
            drift,
        );
        if let Some(seal) = seal {
            seal.keep().await;
        }
        let (kind, record) = self.outcome_record(end, status);
        self.session
            .inner
            .journal
            .append_encoded(kind, record, self.durability)
            .await?;
        Ok(())
    }

    /// Commits a successful output, after checking its contract.
    async fn ok(&mut self, output: &[u8], exact: bool, latency_ns: u64) -> Result<(), Error> {
        let mut drift = check_contract(self.tool.output, output);
        if !drift.is_empty()
            && self
                .session
                .inner
                .scrubber
                .output(self.tool, output)
                .is_some()
        {
            // A drift detail quotes the output: not one that holds redacted values.
            for d in &mut drift {
                d.detail = format!(
                    "the output breaks the `{}` contract (not quoted: it holds redacted values)",
                    d.contract
                );
            }
        }
        if let (Some(d), true) = (drift.first(), self.session.inner.strict_contracts) {
            let err = Error::Contract {
                tool: self.tool.name.to_owned(),
                contract: d.contract.clone(),
                detail: d.detail.clone(),
            };
            self.end(
                Status::Failed,
                Some(output),
                Some(&err.to_string()),
                latency_ns,
                &drift,
            )
            .await?;
            return Err(err);
        }
        if let Some(d) = drift.first() {
            tracing::warn!(tool = self.tool.name, contract = %d.contract, "output drift: {}", d.detail);
        }
        if !exact {
            tracing::warn!(
                tool = self.tool.name,
                "the output holds a `Some` that JSON writes as `null`: recorded, never served on resume"
            );
        }
        self.done = true;
        self.session.inner.count(Status::Ok);
        let (end, seal) = encode_end(
            (&self.session.inner, self.tool),
            self.step,
            Status::Ok,
            Some(output),
            None,
            (latency_ns, self.session.inner.ledger.take(self.step)),
            None,
            &drift,
        );
        let end = if exact {
            // Kept before its record is written: a replay that finds the record finds the value.
            if let Some(seal) = seal {
                seal.keep().await;
            }
            end
        } else {
            // Never served: nothing to keep.
            inexact(end)
        };
        let (kind, record) = self.outcome_record(end, Status::Ok);
        self.session
            .inner
            .journal
            .append_encoded(kind, record, self.durability)
            .await?;
        Ok(())
    }
}

impl Drop for StepGuard {
    fn drop(&mut self) {
        if !self.done {
            // The future was dropped mid-call: nothing can be awaited here, so the record is queued.
            let inner = &self.session.inner;
            let end = cancelled(inner, self.tool, self.step, inner.ledger.take(self.step));
            let (kind, record) = self.outcome_record(end, Status::Cancelled);
            self.session.inner.journal.enqueue_encoded(kind, record);
        }
    }
}

fn check_contract(contract: OutputContract, output: &[u8]) -> Vec<Drift> {
    let as_string = || serde_json::from_slice::<String>(output).ok();
    match contract {
        OutputContract::Any => Vec::new(),
        OutputContract::Json => match as_string() {
            Some(s) if serde_json::from_str::<serde::de::IgnoredAny>(&s).is_err() => vec![Drift {
                contract: "json".into(),
                detail: format!("expected JSON, got text: {:?}", preview(&s)),
            }],
            _ => Vec::new(),
        },
        OutputContract::Text => match as_string() {
            Some(_) => Vec::new(),
            None => vec![Drift {
                contract: "text".into(),
                detail: "expected a string output".into(),
            }],
        },
    }
}

fn preview(s: &str) -> String {
    let mut p: String = s.chars().take(60).collect();
    if p.len() < s.len() {
        p.push('…');
    }
    p
}

/// Runs a call entered with [`enter`]: decodes a replayed output, or makes the body (`body()`) and runs it
/// and commits its outcome. The body is made only when it runs, and boxed: a tool's future holds its
/// arguments, not its body's future, so calls nested in calls do not grow each other's futures (which in
/// a build without optimizations are copied on the stack at each level).
pub async fn run<T, E, B, F>(call: Call, body: B) -> Result<T, E>
where
    B: FnOnce() -> F,
    F: Future<Output = Result<T, E>>,
    T: Serialize + DeserializeOwned,
    E: Display + From<Error>,
{
    use tracing::Instrument;
    let Call { entered, span } = call;
    let slot = crate::session::by_name_slot();
    run_untraced(entered, body, &span, &slot)
        .instrument(span.clone())
        .await
}

type Slot = crate::session::ErrorSlot;

/// Records a FailCore error's kind on the call's span, reports it to a by-name caller, and hands it on.
fn traced(span: &tracing::Span, slot: &Slot, e: Error) -> Error {
    record_error(span, e.kind());
    crate::registry::report(slot, &e);
    e
}

async fn run_untraced<T, E, B, F>(
    entered: Entered,
    body: B,
    span: &tracing::Span,
    slot: &Slot,
) -> Result<T, E>
where
    B: FnOnce() -> F,
    F: Future<Output = Result<T, E>>,
    T: Serialize + DeserializeOwned,
    E: Display + From<Error>,
{
    match entered.0 {
        State::Done(e) => {
            // Its kind was recorded on the span by `enter`.
            crate::registry::report(slot, &e);
            Err(E::from(e))
        }
        State::Replay(replay) => match serde_json::from_str::<T>(replay.output.get()) {
            Ok(value) => replay
                .commit()
                .await
                .map(|()| value)
                .map_err(|e| E::from(traced(span, slot, e))),
            Err(e) => Err(E::from(traced(
                span,
                slot,
                replay.undecodable(e.to_string()).await,
            ))),
        },
        State::Execute(mut guard) => {
            let ctx = Context {
                session: guard.session.clone(),
                parent: Some(guard.step),
                scope: Some(guard.identity),
                intent: guard.intent.clone(),
                recovering: guard.recovering.clone(),
                by_name: None,
            };
            let started = Instant::now();
            let outcome = CatchUnwind(in_context(ctx, Box::pin(body()))).await;
            let latency = started.elapsed().as_nanos() as u64;
            match outcome {
                Ok(Ok(value)) => {
                    let mut out = Vec::with_capacity(64);
                    match write_output(&value, &mut out)
                        .and_then(|exact| within_limit(&out).map(|()| exact))
                    {
                        Ok(exact) => guard
                            .ok(&out, exact, latency)
                            .await
                            .map(|()| value)
                            .map_err(|e| E::from(traced(span, slot, e))),
                        Err(e) => Err(E::from(traced(
                            span,
                            slot,
                            unrecordable(&mut guard, e, latency).await,
                        ))),
                    }
                }
                Ok(Err(e)) => {
                    // The tool's own error is what the caller needs; a store failure shows on the next call.
                    let _ = guard
                        .end(Status::Failed, None, Some(&e.to_string()), latency, &[])
                        .await;
                    // The tool's own error: `error.type` is the kind a by-name call reports for it.
                    record_error(span, "tool");
                    Err(e)
                }
                Err(panic) => {
                    let msg = panic_message(&*panic);
                    record_error(span, "panic");
                    let _ = guard
                        .end(Status::Panicked, None, Some(&msg), latency, &[])
                        .await;
                    std::panic::resume_unwind(panic)
                }
            }
        }
    }
}

async fn unrecordable(guard: &mut StepGuard, e: CanonicalError, latency: u64) -> Error {
    let err = Error::Serialize {
        tool: guard.tool.name.to_owned(),
        what: "the output",
        reason: e.0,
    };
    match guard
        .end(Status::Failed, None, Some(&err.to_string()), latency, &[])
        .await
    {
        Ok(()) => err,
        Err(store) => store,
    }
}

impl ReplayStep {
    async fn commit(mut self) -> Result<(), Error> {
        let session = self.session.clone();
        let inner = &session.inner;
        let source = inner
            .replay
            .as_ref()
            .map_or("", |r| r.run_name(self.source_run));
        let (end, seal) = encode_end(
            (inner, self.tool),
            self.step,
            Status::Replayed,
            Some(self.output.get().as_bytes()),
            None,
            (0, self.cost),
            Some((source, self.source_seq, self.saved_ns, self.blob)),
            &[],
        );
        if let Some(seal) = seal {
            // Dropped while this waits, the call is recorded as cancelled (see `Drop`).
            seal.keep().await;
        }
        inner.count(Status::Replayed);
        inner.add_saved(self.saved_ns);
        let call = self.record(&end);
        inner
            .journal
            .append_encoded("call", call, inner.durability_for(self.tool.name))
            .await?;
        Ok(())
    }

    /// Its one `call` record with the outcome `end` (an encoded `step_end`), after the deferred intents of
    /// its callers; from now on it counts as written.
    fn record(&mut self, end: &[u8]) -> Vec<u8> {
        flush(self.up.as_deref(), &self.session.inner.journal);
        self.written = true;
        failcore_store::call_fields(std::mem::take(&mut self.start), end)
    }

    async fn undecodable(mut self, reason: String) -> Error {
        let session = self.session.clone();
        let inner = &session.inner;
        let err = Error::ReplayDecode {
            tool: self.tool.name.to_owned(),
            run: inner
                .replay
                .as_ref()
                .map_or("", |r| r.run_name(self.source_run))
                .to_owned(),
            seq: self.source_seq,
            reason,
        };
        inner.count(Status::Failed);
        let (end, _) = encode_end(
            (inner, self.tool),
            self.step,
            Status::Failed,
            None,
            Some(&err.to_string()),
            (0, None),
            None,
            &[],
        );
        let call = self.record(&end);
        match inner
            .journal
            .append_encoded("call", call, inner.durability_for(self.tool.name))
            .await
        {
            Ok(_) => err,
            Err(store) => store.into(),
        }
    }
}

impl Drop for ReplayStep {
    fn drop(&mut self) {
        if self.written {
            return;
        }
        // Dropped before its record was written (while a redacted output's clear value was being kept):
        // nothing can be awaited here, so the record is queued.
        let session = self.session.clone();
        let end = cancelled(&session.inner, self.tool, self.step, None);
        let call = self.record(&end);
        session.inner.journal.enqueue_encoded("call", call);
    }
}

/// The encoded outcome of a call whose future was dropped before it completed (counted as cancelled), with
/// the cost its body reported, if any.
fn cancelled(
    inner: &crate::session::Inner,
    tool: &'static ToolDescriptor,
    step: u64,
    cost: Option<f64>,
) -> Vec<u8> {
    inner.count(Status::Cancelled);
    encode_end(
        (inner, tool),
        step,
        Status::Cancelled,
        None,
        Some("the call's future was dropped before it completed"),
        (0, cost),
        None,
        &[],
    )
    .0
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic with a non-string payload".into());
    format!("panicked: {text}")
}

/// Catches a panic raised while polling the inner future.
struct CatchUnwind<F>(F);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn std::any::Any + Send>>;
    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        // SAFETY: structural pinning of the only field; it is never moved out.
        let inner = unsafe { self.map_unchecked_mut(|s| &mut s.0) };
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

// Record encoding for the hot path: the arguments and output are already canonical JSON, so they are
// spliced in as they are rather than parsed and serialized again. Golden tests pin that these bytes decode
// into failcore_store's record types.

fn json_str(out: &mut Vec<u8>, s: &str) {
    let _ = serde_json::to_writer(&mut *out, s);
}

fn push_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// The encoded step_start. `args`: the recorded arguments and what was masked in them. A secret in the
/// decision's reason (a policy quoting an argument) is masked here.
#[allow(clippy::too_many_arguments)]
fn encode_start(
    scrubber: &Scrubber,
    tool: &ToolDescriptor,
    step: u64,
    fp: &str,
    occ: u32,
    (args, masked): (&[u8], &[Masked]),
    parent: Option<u64>,
    decision: &Decision,
) -> Vec<u8> {
    let reason = decision
        .reason
        .as_deref()
        .and_then(|r| scrubber.text(r, "/decision/reason"));
    let mut out = Vec::with_capacity(160 + args.len());
    out.extend_from_slice(b"{\"step\":");
    push_u64(&mut out, step);
    out.extend_from_slice(b",\"tool\":");
    json_str(&mut out, tool.name);
    if !tool.version.is_empty() {
        out.extend_from_slice(b",\"tool_version\":");
        json_str(&mut out, tool.version);
    }
    out.extend_from_slice(b",\"fp\":\"");
    out.extend_from_slice(fp.as_bytes());
    out.extend_from_slice(b"\",\"occ\":");
    push_u64(&mut out, u64::from(occ));
    out.extend_from_slice(b",\"args\":");
    out.extend_from_slice(args);
    if let Some(p) = parent {
        out.extend_from_slice(b",\"parent\":");
        push_u64(&mut out, p);
    }
    out.extend_from_slice(b",\"decision\":");
    if *decision == Decision::allow() {
        out.extend_from_slice(b"{\"outcome\":\"allow\"}");
    } else if let Some(reason) = &reason {
        let masked = Decision {
            reason: Some(reason.value.clone()),
            ..decision.clone()
        };
        let _ = serde_json::to_writer(&mut out, &masked);
    } else {
        let _ = serde_json::to_writer(&mut out, decision);
    }
    match &reason {
        Some(r) => crate::secrets::encode_masked(&mut out, &[masked, &r.masked].concat()),
        None => crate::secrets::encode_masked(&mut out, masked),
    }
    out.push(b'}');
    out
}

/// Adds a divergence to an encoded step_start.
fn with_divergence(mut start: Vec<u8>, divergence: Option<&failcore_store::Divergence>) -> Vec<u8> {
    if let Some(d) = divergence {
        if start.last() == Some(&b'}') {
            start.pop();
            start.extend_from_slice(b",\"divergence\":");
            let _ = serde_json::to_writer(&mut start, d);
            start.push(b'}');
        }
    }
    start
}

/// Stores an output longer than the session's blob threshold apart from its record, and returns the
/// reference the record names it by; `None` writes it inline (short enough, or a store that keeps no
/// payloads apart; a store that fails to keep it is warned of, and the output is kept inline, never lost).
fn store_apart(
    inner: &crate::session::Inner,
    tool: &ToolDescriptor,
    output: &[u8],
) -> Option<BlobRef> {
    if output.len() <= inner.blob_threshold {
        return None;
    }
    match inner.store.put_blob(output) {
        Ok(blob) => Some(blob),
        Err(failcore_store::StoreError::NoBlobs { .. }) => None,
        Err(e) => {
            tracing::warn!(
                tool = tool.name,
                "an output of {} bytes is written inline: storing it apart failed: {e}",
                output.len()
            );
            None
        }
    }
}

/// Reads a recorded output stored apart, checked against its hash, as the raw JSON to serve; or why not.
fn read_blob(
    store: &dyn failcore_store::TraceStore,
    blob: &BlobRef,
) -> Result<Box<RawValue>, String> {
    let bytes = store
        .blob(blob)
        .map_err(|e| format!("its recorded output cannot be read back: {e}"))?;
    String::from_utf8(bytes)
        .ok()
        .and_then(|text| RawValue::from_string(text).ok())
        .ok_or_else(|| {
            format!(
                "its recorded output {} is not JSON text, though its hash matches",
                blob.blake3
            )
        })
}

/// Marks an encoded step_end whose output does not read back as the value written (never served).
fn inexact(mut end: Vec<u8>) -> Vec<u8> {
    if end.last() == Some(&b'}') {
        end.pop();
        end.extend_from_slice(b",\"exact\":false}");
    }
    end
}

/// Adds a string field to an encoded record (`value` is a plain word: no escaping needed).
fn with_field(mut record: Vec<u8>, name: &str, value: &str) -> Vec<u8> {
    if record.last() == Some(&b'}') {
        record.pop();
        record.extend_from_slice(b",\"");
        record.extend_from_slice(name.as_bytes());
        record.extend_from_slice(b"\":\"");
        record.extend_from_slice(value.as_bytes());
        record.extend_from_slice(b"\"}");
    }
    record
}

/// The encoded step_end, with its output and error scrubbed by the session's scrubber, and the seal that
/// keeps a redacted output's clear value (when the session has a vault).
#[allow(clippy::too_many_arguments)]
fn encode_end(
    (inner, tool): (&crate::session::Inner, &'static ToolDescriptor),
    step: u64,
    status: Status,
    output: Option<&[u8]>,
    error: Option<&str>,
    (latency_ns, cost): (u64, Option<f64>),
    replayed_from: Option<(&str, u64, u64, Option<BlobRef>)>,
    drift: &[Drift],
) -> (Vec<u8>, Option<Seal>) {
    let scrubber = &inner.scrubber;
    let (scrubbed_output, seal) = match output.and_then(|o| scrubber.output(tool, o)) {
        Some((s, seal)) => (Some(s), seal),
        None => (None, None),
    };
    let mut masked = Vec::new();
    let output = match &scrubbed_output {
        Some(s) => {
            masked.extend(s.masked.iter().cloned());
            Some(s.value.as_slice())
        }
        None => output,
    };
    let scrubbed_error = error.and_then(|e| scrubber.text(e, "/error"));
    let error = match &scrubbed_error {
        Some(s) => Some(s.value.as_str()),
        None => error,
    };
    if let Some(s) = &scrubbed_error {
        masked.extend(s.masked.iter().cloned());
    }
    let mut out = Vec::with_capacity(96 + output.map_or(0, <[u8]>::len));
    out.extend_from_slice(b"{\"step\":");
    push_u64(&mut out, step);
    out.extend_from_slice(b",\"status\":\"");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b'"');
    if let Some(o) = output {
        // A replayed output read from a payload names that payload again (unless scrubbing changed it).
        let known = replayed_from
            .and_then(|(.., blob)| blob)
            .filter(|_| scrubbed_output.is_none());
        match known.or_else(|| store_apart(inner, tool, o)) {
            Some(blob) => {
                out.extend_from_slice(b",\"output_blob\":");
                blob.encode(&mut out);
            }
            None => {
                out.extend_from_slice(b",\"output\":");
                out.extend_from_slice(o);
            }
        }
    }
    if let Some(e) = error {
        out.extend_from_slice(b",\"error\":");
        json_str(&mut out, e);
    }
    out.extend_from_slice(b",\"latency_ns\":");
    push_u64(&mut out, latency_ns);
    if let Some((run, seq, saved, _)) = replayed_from {
        out.extend_from_slice(b",\"replayed_from\":{\"run\":\"");
        out.extend_from_slice(run.as_bytes());
        out.extend_from_slice(b"\",\"seq\":");
        push_u64(&mut out, seq);
        out.extend_from_slice(b"},\"saved_ns\":");
        push_u64(&mut out, saved);
    }
    if let Some(cost) = cost.filter(|c| c.is_finite()) {
        out.extend_from_slice(b",\"cost\":");
        let _ = serde_json::to_writer(&mut out, &cost);
    }
    if !drift.is_empty() {
        out.extend_from_slice(b",\"drift\":");
        let _ = serde_json::to_writer(&mut out, drift);
    }
    crate::secrets::encode_masked(&mut out, &masked);
    out.push(b'}');
    (out, seal)
}
