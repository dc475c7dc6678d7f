//! Sessions: one run each, with its store, mode, replay index and policies.

use crate::fingerprint::PrehashedKey;
use crate::policy::{PolicyRef, PolicySet};
use crate::registry::{self, PolicySource};
use crate::replay::{ReplayIndex, ResumeReport};
use crate::runid::new_run_id;
use crate::{Error, ToolInfo};
use failcore_store::{
    Body, Counts, Durability, Journal, Mode, RunEnd, RunStart, RunStatus, Status, TraceStore,
};
use std::collections::HashMap;
use std::future::Future;
use std::hash::BuildHasherDefault;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

tokio::task_local! {
    pub(crate) static CONTEXT: Context;
}

/// The session a call runs in, and the step it was made from (for nested tool calls).
#[derive(Clone)]
pub(crate) struct Context {
    pub session: Session,
    pub parent: Option<u64>,
    /// The identity (key, occurrence) of the call this one is made from, `None` at the top level: nested
    /// calls are matched within it. Hashed into a scope only when a nested call is made.
    pub scope: Option<(u128, u32)>,
    /// The deferred intent of the call this one is made from (a pure or read tool's), which must be
    /// written before any record of this call.
    pub intent: Option<Arc<crate::scope::Intent>>,
    /// Inside the body of a call being recovered after a crash: where its `reconcile` function's answer
    /// is reported (see [`crate::lifecycle::reconciling`]).
    pub recovering: Option<Arc<crate::scope::Recovering>>,
    /// Set by a by-name call (`call_json`): where the lifecycle reports a FailCore error of that call,
    /// which the tool's own error type would otherwise reduce to text. Tool bodies run without it, so the
    /// calls they make report nothing to the outer by-name call.
    pub by_name: ErrorSlot,
}

/// Where a by-name call's FailCore error is reported.
pub(crate) type ErrorSlot = Option<Arc<Mutex<Option<Error>>>>;

pub use crate::registry::InFlight;

/// A person's answer to a policy that asked.
pub trait Approver: Send + Sync {
    fn approve<'a>(
        &'a self,
        request: &'a ApprovalRequest,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>>;
}

impl<F: Fn(&ApprovalRequest) -> bool + Send + Sync> Approver for F {
    fn approve<'a>(
        &'a self,
        request: &'a ApprovalRequest,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>> {
        let answer = self(request);
        Box::pin(async move { answer })
    }
}

/// A call waiting for approval.
#[derive(Debug)]
pub struct ApprovalRequest {
    pub tool: ToolInfo,
    pub args: serde_json::Value,
    pub policy: String,
    pub reason: String,
    pub run: String,
}

/// The result of [`Session::finish`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSummary {
    pub run: String,
    pub status: RunStatus,
    pub counts: Counts,
    pub steps: u64,
    pub total_ns: u64,
    pub saved_ns: u64,
}

/// One run of an agent: every tool call made inside [`Session::scope`] is checked, replayed or executed,
/// and recorded here. Cloning is cheap and shares the run.
///
/// ```no_run
/// # async fn demo() -> Result<(), failcore::Error> {
/// let session = failcore::Session::builder().dir(".failcore").resume("last").open()?;
/// session.scope(async { /* call tools */ }).await;
/// session.finish().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Session {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub run: String,
    pub mode: Mode,
    pub journal: Journal,
    pub store: Arc<dyn TraceStore>,
    pub durability: Durability,
    pub tool_durability: HashMap<String, Durability>,
    pub replay: Option<ReplayIndex>,
    pub resume_report: Option<ResumeReport>,
    /// The claim on the run being resumed: held until `finish`, or until the session is dropped.
    claim: Mutex<Option<failcore_store::Claim>>,
    /// Calls per fingerprint so far, keyed by the fingerprint's first 128 bits (already uniformly
    /// distributed, so not hashed again): about 32 bytes per distinct fingerprint.
    occurrences: Mutex<HashMap<u128, u32, BuildHasherDefault<PrehashedKey>>>,
    pub policies: PolicySet,
    pub guards: Vec<PolicyRef>,
    /// Policies attached to tools by exact name (`[tools]` in the policy file, or `tool_policy`).
    pub tool_policies: HashMap<String, PolicyRef>,
    pub approver: Option<Arc<dyn Approver>>,
    pub strict_contracts: bool,
    /// Strict replay: effectful calls served only in their recorded order, and `finish` fails when a
    /// recorded success was never reached.
    pub strict: bool,
    pub on_in_flight: InFlight,
    /// Masks secrets and redacted values before anything is recorded.
    pub scrubber: crate::secrets::Scrubber,
    /// Outputs longer than this many bytes are stored apart from their records, by content
    /// ([`SessionBuilder::blob_threshold`]); `usize::MAX`: never.
    pub blob_threshold: usize,
    /// What the run's executed calls have spent, and the costs of bodies still running.
    pub ledger: crate::cost::Ledger,
    /// Whether the effect of a failing call could have landed, as its body reported it.
    pub landed: crate::cost::StepNotes<failcore_store::Landed>,
    next_step: AtomicU64,
    counts: [AtomicU64; 6],
    saved_ns: AtomicU64,
    started: Instant,
    finished: AtomicBool,
    /// Held while this session writes a keyed run: one session of a run key at a time.
    _key_lock: Option<failcore_store::KeyLock>,
}

impl Inner {
    pub fn next_step(&self) -> u64 {
        self.next_step.fetch_add(1, Ordering::Relaxed)
    }

    pub fn next_occurrence(&self, key: u128) -> u32 {
        let mut map = self.occurrences.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(key).or_insert(0);
        *n += 1;
        *n - 1
    }

    pub fn count(&self, status: Status) {
        let i = Status::ALL.iter().position(|s| *s == status).unwrap_or(0);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
    }

    pub fn add_saved(&self, ns: u64) {
        self.saved_ns.fetch_add(ns, Ordering::Relaxed);
    }

    pub fn durability_for(&self, tool: &str) -> Durability {
        if self.tool_durability.is_empty() {
            return self.durability;
        }
        self.tool_durability
            .get(tool)
            .copied()
            .unwrap_or(self.durability)
    }

    fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for (i, s) in Status::ALL.iter().enumerate() {
            let n = self.counts[i].load(Ordering::Relaxed);
            match s {
                Status::Ok => c.ok = n,
                Status::Failed => c.failed = n,
                Status::Blocked => c.blocked = n,
                Status::Replayed => c.replayed = n,
                Status::Cancelled => c.cancelled = n,
                Status::Panicked => c.panicked = n,
            }
        }
        c
    }
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("run", &self.inner.run)
            .field("mode", &self.inner.mode)
            .field("store", &self.inner.store.location())
            .finish()
    }
}

impl Session {
    /// A builder with defaults: JSONL store in `./.failcore`, record mode, `flushed` durability.
    pub fn builder() -> SessionBuilder {
        SessionBuilder::default()
    }

    /// A builder configured from the environment: `FAILCORE_DIR`, `FAILCORE_STORE` (`jsonl:<dir>`,
    /// `sqlite:<file>`, `postgres://...`, the last two with their cargo features),
    /// `FAILCORE_RESUME` (`<run id>` or `last`), `FAILCORE_OFFLINE` (same), `FAILCORE_DURABILITY`,
    /// `FAILCORE_SANDBOX` (the root of the `fs_safe` policy), `FAILCORE_POLICY` (a policy file),
    /// `FAILCORE_VAULT` (the sealed-output store, see [`vault`](SessionBuilder::vault)). The redaction key
    /// is read at [`open`](SessionBuilder::open) from `FAILCORE_REDACT_KEY`, `FAILCORE_REDACT_KEY_FILE` or
    /// the per-user key file (see docs/SECRETS.md).
    pub fn from_env() -> Result<SessionBuilder, Error> {
        let mut b = SessionBuilder::default();
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        if let Some(dir) = var("FAILCORE_DIR") {
            b = b.dir(dir);
        }
        if let Some(spec) = var("FAILCORE_STORE") {
            b = b.store(crate::store_from_spec(&spec)?);
        }
        match (var("FAILCORE_RESUME"), var("FAILCORE_OFFLINE")) {
            (Some(_), Some(_)) => {
                return Err(Error::Config(
                    "set FAILCORE_RESUME or FAILCORE_OFFLINE, not both".into(),
                ));
            }
            (Some(run), None) => b = b.resume(run),
            (None, Some(run)) => b = b.offline(run),
            (None, None) => {}
        }
        if let Some(v) = var("FAILCORE_OFFLINE_STRICT") {
            b = b.strict(matches!(v.as_str(), "1" | "true" | "yes" | "on"));
        }
        if let Some(v) = var("FAILCORE_ON_IN_FLIGHT") {
            b = b.on_in_flight(
                v.parse()
                    .map_err(|e: String| Error::Config(format!("FAILCORE_ON_IN_FLIGHT: {e}")))?,
            );
        }
        if let Some(d) = var("FAILCORE_DURABILITY") {
            b = b.durability(
                d.parse()
                    .map_err(|e: String| Error::Config(format!("FAILCORE_DURABILITY: {e}")))?,
            );
        }
        if let Some(root) = var("FAILCORE_SANDBOX") {
            b = b.sandbox_root(root);
        }
        if let Some(file) = var("FAILCORE_POLICY") {
            b = b.policy_file(file);
        }
        b.resume_prefix = var("FAILCORE_RESUME_PREFIX").is_some_and(|v| v != "0");
        b.signing_key = failcore_store::seal::SealKey::from_env()?;
        for (name, slot) in [
            ("FAILCORE_CLAIM_WAIT", &mut b.claim_wait),
            ("FAILCORE_CLAIM_LEASE", &mut b.claim_lease),
        ] {
            if let Some(secs) = var(name) {
                let secs: f64 = secs
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && *s >= 0.0)
                    .ok_or_else(|| {
                        Error::Config(format!("{name}: expected seconds, got {secs:?}"))
                    })?;
                *slot = Some(std::time::Duration::from_secs_f64(secs));
            }
        }
        if let Some(v) = var("FAILCORE_BLOB_THRESHOLD") {
            let bytes = match v.as_str() {
                "off" => None,
                n => Some(n.parse::<usize>().map_err(|_| {
                    Error::Config(format!(
                        "FAILCORE_BLOB_THRESHOLD: expected a number of bytes or `off`, got {v:?}"
                    ))
                })?),
            };
            b = b.blob_threshold(bytes);
        }
        if let Some(dir) = var("FAILCORE_VAULT") {
            b = if dir == "off" {
                b.no_vault()
            } else {
                b.vault(dir)
            };
        }
        Ok(b)
    }

    /// This run's id.
    pub fn run_id(&self) -> &str {
        &self.inner.run
    }

    /// What the run's executed calls have cost so far: the costs tool bodies reported
    /// ([`crate::report_cost`]) and the model steps' costs by the price table. Replayed steps cost nothing.
    pub fn spent_cost(&self) -> f64 {
        self.inner.ledger.cost()
    }

    /// The tokens the run's executed model steps have used so far.
    pub fn spent_tokens(&self) -> u64 {
        self.inner.ledger.tokens()
    }

    /// The mode this run was opened in.
    pub fn mode(&self) -> Mode {
        self.inner.mode
    }

    /// The store this run is written to.
    pub fn store(&self) -> Arc<dyn TraceStore> {
        self.inner.store.clone()
    }

    /// What was found in the run being resumed (resume and offline modes).
    pub fn resume_report(&self) -> Option<&ResumeReport> {
        self.inner.resume_report.as_ref()
    }

    /// Runs `fut` with this session as the current one: tool calls inside it are recorded here.
    ///
    /// The scope is task-local: a task started with `tokio::spawn` inside it does not inherit it, and while
    /// any scope is active in the process, a tool called from outside every scope fails with an error
    /// that names [`failcore::spawn`](crate::spawn) instead of going silently to another run.
    pub async fn scope<F: Future>(&self, fut: F) -> F::Output {
        let _active = ActiveScope::enter();
        CONTEXT
            .scope(
                Context {
                    session: self.clone(),
                    parent: None,
                    scope: None,
                    intent: None,
                    recovering: None,
                    by_name: None,
                },
                fut,
            )
            .await
    }

    /// Ends this session without ending its run: everything recorded is made durable (as `finish` would),
    /// and no run_end is written, so that a later session with the same run key continues the run
    /// ([`SessionBuilder::run_key`]). Like `finish`, once.
    pub async fn close_open(&self) -> Result<(), Error> {
        let inner = &self.inner;
        if inner.finished.swap(true, Ordering::SeqCst) {
            return Err(Error::Config(format!(
                "run {} is already finished",
                inner.run
            )));
        }
        inner
            .journal
            .barrier(inner.durability.max(Durability::Flushed))
            .await?;
        Ok(())
    }

    /// Writes the run_end record (counts, time saved, chain head) and waits until it is durable.
    /// Calls made after it are still checked and executed, but a second `finish` is refused.
    pub async fn finish(&self) -> Result<RunSummary, Error> {
        let inner = &self.inner;
        if inner.finished.swap(true, Ordering::SeqCst) {
            return Err(Error::Config(format!(
                "run {} is already finished",
                inner.run
            )));
        }
        let counts = inner.counts();
        let failed = counts.failed + counts.panicked + counts.cancelled > 0;
        let summary = RunSummary {
            run: inner.run.clone(),
            status: if failed {
                RunStatus::Failed
            } else {
                RunStatus::Ok
            },
            counts,
            steps: inner.next_step.load(Ordering::Relaxed),
            total_ns: inner.started.elapsed().as_nanos() as u64,
            saved_ns: inner.saved_ns.load(Ordering::Relaxed),
        };
        let end = RunEnd {
            status: summary.status,
            counts,
            steps: summary.steps,
            total_ns: summary.total_ns,
            saved_ns: summary.saved_ns,
            head: None,
            seal: None,
        };
        inner
            .journal
            .append(Body::RunEnd(end), inner.durability.max(Durability::Flushed))
            .await?;
        // The run is over: another resumer may now take the run it resumed.
        let claim = inner.claim.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(claim) = claim {
            claim.release()?;
        }
        if let (true, Some(index)) = (inner.strict, &inner.replay) {
            let unreached = index.unreached();
            if !unreached.is_empty() {
                return Err(Error::ReplayDiverged {
                    run: inner.run.clone(),
                    recording: index.source.clone(),
                    unreached: unreached
                        .into_iter()
                        .map(|(run, seq, tool)| format!("{tool} (run {run}, seq {seq})"))
                        .collect(),
                });
            }
        }
        Ok(summary)
    }
}

/// Where the sealed outputs go.
#[derive(Debug, Default)]
enum VaultChoice {
    /// Beside the redaction key file, when the key came from one.
    #[default]
    BesideKey,
    At(PathBuf),
    Off,
}

/// The output length above which a session stores an output apart from its record (256 KiB).
pub const DEFAULT_BLOB_THRESHOLD: usize = 256 << 10;

/// Configures and opens a [`Session`].
#[derive(Default)]
#[must_use]
pub struct SessionBuilder {
    store: Option<Arc<dyn TraceStore>>,
    dir: Option<PathBuf>,
    source: Option<(Mode, String)>,
    durability: Durability,
    tool_durability: HashMap<String, Durability>,
    sandbox_root: Option<PathBuf>,
    policy_file: Option<PathBuf>,
    policies: Vec<(String, PolicyRef)>,
    guards: Vec<PolicyRef>,
    tool_policies: HashMap<String, PolicyRef>,
    approver: Option<Arc<dyn Approver>>,
    strict_contracts: bool,
    strict: bool,
    on_in_flight: InFlight,
    redact_key: Option<crate::secrets::KeySource>,
    vault: VaultChoice,
    redact_paths: HashMap<String, crate::secrets::RedactPaths>,
    redact_errors: Vec<String>,
    resume_prefix: bool,
    signing_key: Option<failcore_store::seal::SealKey>,
    claim_wait: Option<std::time::Duration>,
    claim_lease: Option<std::time::Duration>,
    /// Entries added to the run_start's `versions` (what the run was made with).
    run_facts: Vec<(String, serde_json::Value)>,
    /// Sessions with this key record into one run (see [`SessionBuilder::run_key`]).
    run_key: Option<String>,
    run_key_wait: Option<std::time::Duration>,
    /// What records the run, when not the application itself (see [`SessionBuilder::recorder`]).
    recorder: Option<String>,
    blob_threshold: Option<usize>,
}

impl SessionBuilder {
    /// One logical run across sessions: a session with a run key continues the newest run opened with the
    /// same key when that run is still open (no run_end) and of the same mode (record, resume, offline),
    /// and otherwise creates a run that carries the key. One session writes a key's run at a time: another
    /// waits (see [`run_key_wait`](Self::run_key_wait)). A continued run keeps its step numbers, its
    /// occurrences and its replay source; [`Session::finish`] ends it for good, so sessions that mean to
    /// be continued end without it ([`Session::close_open`]).
    pub fn run_key(mut self, key: impl Into<String>) -> Self {
        self.run_key = Some(key.into());
        self
    }

    /// Names what records the run (`llm-proxy`, `mcp-proxy`), in the run_start's `versions.recorder`. A
    /// run key is then the recorder's own: the session continues only a run of the key that the same
    /// recorder made, and waits only for sessions of the same recorder, so that one key can name one
    /// agent's runs of several recorders (its model calls and its tool calls) side by side.
    pub fn recorder(mut self, name: impl Into<String>) -> Self {
        self.recorder = Some(name.into());
        self
    }

    /// How long [`open`](Self::open) waits for another session of the same run key to end (default 60 s).
    pub fn run_key_wait(mut self, wait: std::time::Duration) -> Self {
        self.run_key_wait = Some(wait);
        self
    }

    /// Records `value` under `key` in the run_start's `versions` map, beside the failcore and format
    /// versions: what the run was made with (the proxied MCP server's description, say), for tools that
    /// replay it later. `failcore`, `format` and `policy` (the digest of the session's policies) are
    /// reserved.
    pub fn run_fact(mut self, key: impl Into<String>, value: serde_json::Value) -> Self {
        let key = key.into();
        if key != "failcore" && key != "format" && key != crate::policy::POLICY_FACT {
            self.run_facts.push((key, value));
        }
        self
    }

    /// Traces go to a JSONL store in `dir` (default `./.failcore`).
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// Traces go to this store.
    pub fn store(mut self, store: Arc<dyn TraceStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// Resume an earlier run (`"last"` for the newest): its recorded successes are served, the rest runs.
    pub fn resume(mut self, run: impl Into<String>) -> Self {
        self.source = Some((Mode::Resume, run.into()));
        self
    }

    /// Replay an earlier run offline: a call with no recorded success is an error, nothing executes.
    pub fn offline(mut self, run: impl Into<String>) -> Self {
        self.source = Some((Mode::Offline, run.into()));
        self
    }

    /// The durability of every record (default `flushed`).
    pub fn durability(mut self, d: Durability) -> Self {
        self.durability = d;
        self
    }

    /// Outputs whose JSON is longer than `bytes` (default [`DEFAULT_BLOB_THRESHOLD`], 256 KiB; also
    /// `FAILCORE_BLOB_THRESHOLD`, in bytes, or `off`) are stored apart from their records, once per store by
    /// content: the record keeps their BLAKE3 hash and length, which the chain covers, and a resume reads
    /// each one only when it serves it, so a run's size does not become a resume's memory. `None`: every
    /// output is written inline. A store that keeps no payloads apart writes them inline too.
    pub fn blob_threshold(mut self, bytes: Option<usize>) -> Self {
        self.blob_threshold = Some(bytes.unwrap_or(usize::MAX));
        self
    }

    /// The durability of one tool's records.
    pub fn tool_durability(mut self, tool: impl Into<String>, d: Durability) -> Self {
        self.tool_durability.insert(tool.into(), d);
        self
    }

    /// The root of the `fs_safe` and `fs_read_only` presets.
    pub fn sandbox_root(mut self, root: impl Into<PathBuf>) -> Self {
        self.sandbox_root = Some(root.into());
        self
    }

    /// Defines a named policy that tools refer to with `policy = "name"` (overrides a preset).
    pub fn policy(
        mut self,
        name: impl Into<String>,
        policy: impl crate::policy::IntoPolicy,
    ) -> Self {
        self.policies.push((name.into(), policy.into_policy()));
        self
    }

    /// Loads named policies from a policy file (`failcore.toml`, or JSON when the name ends in `.json`) at
    /// [`open`](Self::open); a malformed file or an unknown name in it stops the session from opening.
    /// Policies defined with [`policy`](Self::policy) take precedence over the file's.
    pub fn policy_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.policy_file = Some(path.into());
        self
    }

    /// A policy checked on every call of this session, before the tool's own.
    pub fn guard(mut self, policy: impl crate::policy::IntoPolicy) -> Self {
        self.guards.push(policy.into_policy());
        self
    }

    /// A policy checked on every call of the tool named `tool` (exact name), after the session's guards and
    /// before the tool's own policy. This is how tools known only at run time (proxied MCP tools) get one.
    pub fn tool_policy(
        mut self,
        tool: impl Into<String>,
        policy: impl crate::policy::IntoPolicy,
    ) -> Self {
        self.tool_policies.insert(tool.into(), policy.into_policy());
        self
    }

    /// Who answers when a policy asks. Without one, asking means denied.
    pub fn approval(mut self, approver: impl Approver + 'static) -> Self {
        self.approver = Some(Arc::new(approver));
        self
    }

    /// Turns output-contract drift into an error (the step fails) instead of a note on the step.
    pub fn strict_contracts(mut self, yes: bool) -> Self {
        self.strict_contracts = yes;
        self
    }

    /// Strict replay (also `FAILCORE_OFFLINE_STRICT=1`), for tests that must do exactly what a recording
    /// did: effectful calls (`write`, `network`, `exec`, undeclared) are served only in their recorded
    /// order within the call they are made from (reads and pure calls may interleave), one out of order is
    /// a miss (a `ReplayMiss` offline, naming both records); and [`Session::finish`] fails with
    /// [`Error::ReplayDiverged`] naming every recorded success that no call reached. An extra call is a
    /// `ReplayMiss` offline, strict or not.
    pub fn strict(mut self, yes: bool) -> Self {
        self.strict = yes;
        self
    }

    /// What to do with steps in flight when the resumed run died (default: run them again).
    pub fn on_in_flight(mut self, what: InFlight) -> Self {
        self.on_in_flight = what;
        self
    }

    /// The redaction key: of the keyed hashes that stand in for redacted values and secrets, and of the
    /// vault. Without one, `FAILCORE_REDACT_KEY` (64 hex digits), `FAILCORE_REDACT_KEY_FILE`, else the
    /// per-user key file ([`crate::secrets::default_key_file`]), created on first use. Never a file in the
    /// store: a store never holds its own key.
    pub fn redact_key(mut self, key: [u8; 32]) -> Self {
        self.redact_key = Some(crate::secrets::KeySource::Bytes(key));
        self
    }

    /// The redaction key from this file (64 hex digits, or 32 raw bytes), created (mode 0600) if missing.
    /// It must not be inside the trace store.
    pub fn redact_key_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.redact_key = Some(crate::secrets::KeySource::File(path.into()));
        self
    }

    /// Keeps the clear outputs of calls whose recorded output was redacted in `dir`, encrypted with the
    /// redaction key (XChaCha20-Poly1305), so that resume and offline replay serve their exact values.
    /// Without a vault such a call executes again on resume (and is a `ReplayMiss` offline): a replay never
    /// serves a masked value.
    ///
    /// By default the vault is the directory `vault` beside the redaction key file (the per-user
    /// configuration directory, or the directory of `FAILCORE_REDACT_KEY_FILE`), outside the store as the
    /// key is; a key given as bytes ([`redact_key`](SessionBuilder::redact_key)) has no default vault.
    pub fn vault(mut self, dir: impl Into<PathBuf>) -> Self {
        self.vault = VaultChoice::At(dir.into());
        self
    }

    /// No vault (also `FAILCORE_VAULT=off`): a call whose recorded output was redacted executes again on
    /// resume, and is a `ReplayMiss` offline.
    pub fn no_vault(mut self) -> Self {
        self.vault = VaultChoice::Off;
        self
    }

    /// Redacts values at these JSON pointers in the arguments and the output of the tool named `tool`
    /// (exact name): for tools this program does not own, such as proxied MCP tools. `*` stands for any
    /// key or index. An invalid pointer stops the session from opening.
    pub fn redact_paths<A: AsRef<str>, O: AsRef<str>>(
        mut self,
        tool: impl Into<String>,
        args: &[A],
        output: &[O],
    ) -> Self {
        let tool = tool.into();
        match crate::secrets::RedactPaths::parse(args, output) {
            Ok(paths) => {
                self.redact_paths.insert(tool, paths);
            }
            Err(e) => {
                self.redact_errors
                    .push(format!("redact_paths(`{tool}`): {e}"));
            }
        }
        self
    }

    /// Resume and offline serve a run only if it verifies (chain, seq, run id, structure); with `true`, a run
    /// that fails is served up to the records verified before its first fault (`FAILCORE_RESUME_PREFIX=1`).
    pub fn resume_prefix(mut self, yes: bool) -> Self {
        self.resume_prefix = yes;
        self
    }

    /// Signs the run's chain head with `key` every 1,000 records or second and before `run_end`
    /// (`FAILCORE_SIGNING_KEY`, `FAILCORE_SIGNING_KEY_FILE`); `failcore verify --key` checks it.
    pub fn signing_key(mut self, key: failcore_store::seal::SealKey) -> Self {
        self.signing_key = Some(key);
        self
    }

    /// When the run to resume is claimed by another resumer, wait up to `wait` for it instead of failing
    /// at once (`FAILCORE_CLAIM_WAIT`, seconds).
    pub fn claim_wait(mut self, wait: std::time::Duration) -> Self {
        self.claim_wait = Some(wait);
        self
    }

    /// SQL stores: how long this session's claim outlives it if it dies without releasing it (default 30
    /// s, `FAILCORE_CLAIM_LEASE`).
    pub fn claim_lease(mut self, lease: std::time::Duration) -> Self {
        self.claim_lease = Some(lease);
        self
    }

    /// Opens the run: checks the registry and the policies, loads the run being resumed, creates the new
    /// run and writes its run_start. Does blocking I/O: call it before or outside async hot paths.
    pub fn open(self) -> Result<Session, Error> {
        registry::check_unique()?;
        if let Some(e) = self.redact_errors.first() {
            return Err(Error::Config(e.clone()));
        }
        let dir = self
            .dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(".failcore"));
        let dir_store = self.store.is_none();
        let store: Arc<dyn TraceStore> = match self.store {
            Some(s) => s,
            None => crate::jsonl_store(&dir)?,
        };

        let mut policies = PolicySet::builtin(self.sandbox_root.as_ref());
        // What the digest of the policy set is taken of, besides the file: the names given in code.
        let code_policies: Vec<String> = self.policies.iter().map(|(n, _)| n.clone()).collect();
        let code_guards: Vec<String> = self.guards.iter().map(|g| g.name().to_owned()).collect();
        let code_tools: Vec<(String, String)> = self
            .tool_policies
            .iter()
            .map(|(t, p)| (t.clone(), p.name().to_owned()))
            .collect();
        let mut file_document = None;
        let mut guards = self.guards;
        let mut tool_policies: HashMap<String, PolicyRef> = HashMap::new();
        let mut file_refs = (Vec::new(), Vec::new());
        let mut redact_paths = HashMap::new();
        if let Some(file) = &self.policy_file {
            let mut visible = policies.clone();
            for (name, p) in &self.policies {
                visible.insert(name.clone(), p.clone());
            }
            let loaded = crate::policy::load_policy_file(file, &visible)?;
            for (name, p) in loaded.policies {
                policies.insert(name, p);
            }
            file_refs = (loaded.guards, loaded.tools);
            redact_paths = loaded.redact;
            file_document = Some(loaded.document);
        }
        for (name, p) in self.policies {
            policies.insert(name, p);
        }
        // Names in the file resolve after code-defined policies are in, so code takes precedence.
        let named = |name: &str| {
            policies
                .get(name)
                .cloned()
                .ok_or_else(|| Error::Config(format!("policy `{name}` is not defined")))
        };
        for name in &file_refs.0 {
            guards.push(named(name)?);
        }
        for (tool, name) in &file_refs.1 {
            tool_policies.insert(tool.clone(), named(name)?);
        }
        tool_policies.extend(self.tool_policies);
        for tool in registry::tools() {
            if let PolicySource::Named(name) = tool.0.policy {
                if policies.get(name).is_none() {
                    return Err(Error::Config(format!(
                        "tool `{}` ({}) uses policy `{name}`, which is not defined; defined: {}",
                        tool.name(),
                        tool.location(),
                        policies.names().collect::<Vec<_>>().join(", ")
                    )));
                }
            }
        }

        let mut claim = None;
        // A run key: wait for the key, then continue its open run of the same mode, if there is one.
        let key_lock = match &self.run_key {
            Some(key) => Some(crate::keyed::lock_key(
                store.as_ref(),
                &match &self.recorder {
                    Some(r) => format!("{key} ({r})"),
                    None => key.clone(),
                },
                &format!("pid {} on {}", std::process::id(), hostname()),
                self.run_key_wait,
            )?),
            None => None,
        };
        let mut prior = match &self.run_key {
            Some(key) => crate::keyed::continuable(
                store.as_ref(),
                key,
                self.recorder.as_deref(),
                self.source.as_ref().map_or(Mode::Record, |(m, _)| *m),
            )?,
            None => None,
        };
        let source = match &prior {
            Some((_, p)) => p.resumed_from.clone().map(|run| (p.mode, run)),
            None => self.source.clone(),
        };
        let (mode, replay, resume_report) = match &source {
            None => (
                prior.as_ref().map_or(Mode::Record, |(_, p)| p.mode),
                None,
                None,
            ),
            Some((mode, run)) => {
                let source = store.resolve(run)?;
                if *mode == Mode::Resume {
                    // One resumer per run: claimed before anything of it is read.
                    let mut options = failcore_store::ClaimOptions::new(format!(
                        "pid {} on {}",
                        std::process::id(),
                        hostname()
                    ));
                    options.wait = self.claim_wait;
                    options.lease = self.claim_lease.unwrap_or(options.lease);
                    claim = Some(store.claim(&source, &options)?);
                }
                let (index, report) =
                    ReplayIndex::load(store.as_ref(), &source, self.resume_prefix)?;
                for step in &report.in_flight {
                    let what = if step.effect_unknown {
                        "step failed with its effect unknown"
                    } else {
                        "step was in flight when the run died"
                    };
                    tracing::warn!(run = %step.run, step = step.step, tool = %step.tool, "{what}");
                }
                if let Some(bytes) = report.torn_tail {
                    tracing::warn!(run = %source, bytes, "dropped a torn last line");
                }
                (*mode, Some(index), Some(report))
            }
        };
        // Recorded absolute, so that `failcore policy check` finds them from any directory.
        let absolute = |p: &PathBuf| std::path::absolute(p).unwrap_or_else(|_| p.clone());
        let policy_file = self.policy_file.as_ref().map(absolute);
        let sandbox_root = self.sandbox_root.as_ref().map(absolute);
        let policy_fact = crate::policy::EffectiveSet {
            file: policy_file.as_deref().zip(file_document.as_ref()),
            sandbox_root: sandbox_root.as_deref(),
            code_policies,
            code_guards,
            code_tools,
        }
        .fact(
            replay
                .as_ref()
                .and_then(|r| crate::keyed::run_start_of(store.as_ref(), &r.source))
                .and_then(|start| crate::policy::recorded_policy(&start))
                .map(|p| p.digest)
                .as_deref(),
        );

        let (redact_key, key_file) =
            crate::secrets::resolve_key(self.redact_key, dir_store.then_some(&*dir))?;
        // Paths given in code add to the file's.
        for (tool, paths) in self.redact_paths {
            let entry: &mut crate::secrets::RedactPaths = redact_paths.entry(tool).or_default();
            entry.args.extend(paths.args);
            entry.output.extend(paths.output);
        }
        // By default the vault sits beside the key file (outside the store, as the key is), so that an
        // output that had a secret masked replays exactly. A key given as bytes names no place for it.
        let vault = match self.vault {
            VaultChoice::At(dir) => Some(dir),
            VaultChoice::Off => None,
            VaultChoice::BesideKey => key_file
                .as_deref()
                .and_then(Path::parent)
                .map(|dir| dir.join(crate::secrets::VAULT_DIR)),
        }
        .map(|d| crate::secrets::Vault::new(d, &redact_key));
        let scrubber = crate::secrets::Scrubber::new(redact_key, redact_paths, vault);

        if let (Some((_, p)), Some(index)) = (&prior, &replay) {
            p.prime(index);
        }
        let sealer = self.signing_key.map(failcore_store::seal::Sealer::new);
        let (run, journal) = match &mut prior {
            Some((run, p)) => {
                let journal = crate::keyed::reopen(store.clone(), run, self.durability, sealer, p)?;
                tracing::info!(run = %run, store = %store.location(), "failcore run continued");
                (run.clone(), journal)
            }
            None => {
                let run = new_run_id();
                let journal = Journal::open_sealed(store.clone(), &run, self.durability, sealer)?;
                let key = self
                    .run_key
                    .clone()
                    .map(|k| (crate::keyed::RUN_KEY.to_owned(), serde_json::Value::from(k)))
                    .into_iter()
                    .chain(self.recorder.clone().map(|r| {
                        (
                            crate::keyed::RECORDER.to_owned(),
                            serde_json::Value::from(r),
                        )
                    }))
                    .chain([(crate::policy::POLICY_FACT.to_owned(), policy_fact)]);
                journal.send(Body::RunStart(run_start(
                    &self.run_facts,
                    replay.as_ref(),
                    mode,
                    key,
                )));
                tracing::info!(run = %run, store = %store.location(), mode = ?mode, "failcore run started");
                (run, journal)
            }
        };
        let prior = prior.map(|(_, p)| p);
        let counts: [AtomicU64; 6] = Default::default();
        if let Some(p) = &prior {
            for (i, s) in Status::ALL.iter().enumerate() {
                counts[i].store(p.counts.get(*s), Ordering::Relaxed);
            }
        }

        Ok(Session {
            inner: Arc::new(Inner {
                run,
                mode,
                journal,
                store,
                durability: self.durability,
                tool_durability: self.tool_durability,
                replay,
                resume_report,
                claim: Mutex::new(claim),
                occurrences: Mutex::new(
                    prior
                        .as_ref()
                        .map(|p| p.occurrences.clone())
                        .unwrap_or_default(),
                ),
                policies,
                guards,
                tool_policies,
                approver: self.approver,
                strict_contracts: self.strict_contracts,
                strict: self.strict,
                on_in_flight: self.on_in_flight,
                scrubber,
                blob_threshold: self.blob_threshold.unwrap_or(DEFAULT_BLOB_THRESHOLD),
                ledger: Default::default(),
                landed: Default::default(),
                next_step: AtomicU64::new(prior.as_ref().map_or(0, |p| p.next_step)),
                counts,
                saved_ns: AtomicU64::new(prior.as_ref().map_or(0, |p| p.saved_ns)),
                started: prior.as_ref().map_or_else(Instant::now, |p| p.started),
                finished: AtomicBool::new(false),
                _key_lock: key_lock,
            }),
        })
    }
}

/// The first record of a new run.
fn run_start(
    facts: &[(String, serde_json::Value)],
    replay: Option<&ReplayIndex>,
    mode: Mode,
    extra: impl Iterator<Item = (String, serde_json::Value)>,
) -> RunStart {
    RunStart {
        resumed_from: replay.map(|r| r.source.clone()),
        mode,
        program: std::env::args().next().unwrap_or_default(),
        host: hostname(),
        pid: std::process::id(),
        versions: [
            (
                "failcore".to_owned(),
                serde_json::Value::from(env!("CARGO_PKG_VERSION")),
            ),
            (
                "format".to_owned(),
                serde_json::Value::from(failcore_store::FORMAT_VERSION),
            ),
        ]
        .into_iter()
        .chain(facts.iter().cloned())
        .chain(extra)
        .collect(),
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_default()
}

/// How many [`Session::scope`]s are running in the process.
static ACTIVE_SCOPES: AtomicUsize = AtomicUsize::new(0);

/// Counts a running scope for as long as it lives (completed or dropped).
struct ActiveScope;

impl ActiveScope {
    fn enter() -> ActiveScope {
        ACTIVE_SCOPES.fetch_add(1, Ordering::SeqCst);
        ActiveScope
    }
}

impl Drop for ActiveScope {
    fn drop(&mut self) {
        ACTIVE_SCOPES.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The session of the current scope, else the process default session.
///
/// A call from outside every scope while some scope is running is almost always a task that was spawned
/// with `tokio::spawn` from inside one (task-locals do not cross `tokio::spawn`): it fails rather than go
/// to another run that resume would not see.
pub(crate) fn context() -> Result<Context, Error> {
    if let Ok(ctx) = CONTEXT.try_with(Clone::clone) {
        return Ok(ctx);
    }
    let active = ACTIVE_SCOPES.load(Ordering::SeqCst);
    if active > 0 {
        return Err(Error::OutsideScope { active });
    }
    Ok(Context {
        session: default_session()?,
        parent: None,
        scope: None,
        intent: None,
        recovering: None,
        by_name: None,
    })
}

/// `failcore::exec::policy`: the exec policy named `name` in the current session (built in code or in
/// the policy file), to run commands in its sandbox. A name that is undefined, or names a policy that is not an `exec` preset, is
/// an error.
pub fn exec_policy(name: &str) -> Result<crate::policy::ExecPolicy, Error> {
    let ctx = context()?;
    let found = ctx.session.inner.policies.get(name).ok_or_else(|| {
        Error::Config(format!(
            "no policy named `{name}` is defined in this session"
        ))
    })?;
    found.as_exec().cloned().ok_or_else(|| {
        Error::Config(format!(
            "policy `{name}` is not an exec policy (`preset = \"exec\"`), so it describes no sandbox"
        ))
    })
}

/// The error slot of the by-name call being entered, if any.
pub(crate) fn by_name_slot() -> ErrorSlot {
    CONTEXT.try_with(|c| c.by_name.clone()).ok().flatten()
}

pub(crate) async fn in_context<F: Future>(ctx: Context, fut: F) -> F::Output {
    CONTEXT.scope(ctx, fut).await
}

/// The session of the current scope, if any.
pub fn current() -> Option<Session> {
    CONTEXT.try_with(|c| c.session.clone()).ok()
}

/// The current scope (the session and, inside a tool's body, the step), captured to run futures in it
/// later on any task or thread: what [`spawn`] does for a task, for callers that drive futures some
/// other way (the Python package runs a tool's body on the caller's thread or its event loop).
#[derive(Clone)]
pub struct Carried(Context);

impl Carried {
    /// The session of the captured scope.
    pub fn session(&self) -> &Session {
        &self.0.session
    }

    /// Runs `fut` in the captured scope: its tool calls are recorded in that session, nested under the
    /// captured step if there is one.
    pub async fn scope<F: Future>(&self, fut: F) -> F::Output {
        in_context(self.0.clone(), fut).await
    }
}

/// Captures the current scope, if any (see [`Carried`]).
pub fn carry() -> Option<Carried> {
    CONTEXT.try_with(|c| Carried(c.clone())).ok()
}

static DEFAULT: OnceLock<Result<Session, String>> = OnceLock::new();

/// The process default session, created on first use from the environment ([`Session::from_env`]).
pub fn default_session() -> Result<Session, Error> {
    DEFAULT
        .get_or_init(|| {
            Session::from_env()
                .and_then(SessionBuilder::open)
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(|e| Error::Config(format!("the default session could not be opened: {e}")))
}

/// Finishes the process default session, if one was opened (writes its run_end).
pub async fn finish() -> Result<Option<RunSummary>, Error> {
    match DEFAULT.get() {
        Some(Ok(session)) => session.finish().await.map(Some),
        _ => Ok(None),
    }
}

/// Replays the recording `run` strictly, in one line of a test: opens `builder` offline on `run` with
/// [`strict`](SessionBuilder::strict) replay, runs `fut` in it, and finishes the run. `Ok` holds what
/// `fut` returned when it did exactly what the recording did; a call the recording lacks, or an effectful
/// call out of its recorded order, is a [`Error::ReplayMiss`] inside `fut` (the test sees it where the
/// call returns it), and a recorded call that `fut` never made is the [`Error::ReplayDiverged`] returned
/// here.
///
/// ```no_run
/// # async fn workflow() {}
/// # async fn demo(run: &str) -> Result<(), failcore::Error> {
/// failcore::replay_strictly(failcore::Session::builder().dir(".failcore"), run, workflow()).await?;
/// # Ok(()) }
/// ```
pub async fn replay_strictly<F: Future>(
    builder: SessionBuilder,
    run: &str,
    fut: F,
) -> Result<F::Output, Error> {
    let session = builder.offline(run).strict(true).open()?;
    let out = session.scope(fut).await;
    session.finish().await?;
    Ok(out)
}

/// Spawns a task on the tokio runtime that runs in the current session (and under the current step, for
/// nested calls). Use it instead of `tokio::spawn` for tasks that call tools: a plain `tokio::spawn` does
/// not carry the session, and its tool calls fail with [`Error::OutsideScope`].
pub fn spawn<F>(fut: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match CONTEXT.try_with(Clone::clone) {
        Ok(ctx) => tokio::spawn(CONTEXT.scope(ctx, fut)),
        Err(_) => tokio::spawn(fut),
    }
}

/// Reports what the running tool call costs: the amount goes on the call's `step_end` (several reports
/// add up) and counts at once against the run's budgets (`Limits::max_cost`). Call it from inside a tool's
/// body (a `#[failcore::tool]` function, or a dynamic tool), in the unit of the run's price table.
///
/// ```no_run
/// #[failcore::tool(effect = "network")]
/// async fn geocode(address: String) -> Result<(f64, f64), failcore::ToolError> {
///     let place = (48.85, 2.35); // a paid API call
///     failcore::report_cost(0.005)?;
///     Ok(place)
/// }
/// ```
///
/// # Errors
/// [`Error::Cost`] if no tool body is running on this task, or if `amount` is negative or not finite.
pub fn report_cost(amount: f64) -> Result<(), Error> {
    if !(amount.is_finite() && amount >= 0.0) {
        return Err(Error::Cost(format!(
            "a cost must be a finite number ≥ 0, not {amount}"
        )));
    }
    let attached = CONTEXT.try_with(|ctx| match ctx.parent {
        Some(step) => {
            ctx.session.inner.ledger.attach(step, amount);
            true
        }
        None => false,
    });
    match attached {
        Ok(true) => Ok(()),
        _ => Err(Error::Cost(
            "`failcore::report_cost` was called outside a tool's body: there is no step to attach the cost to"
                .into(),
        )),
    }
}
