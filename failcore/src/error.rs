//! `failcore::Error`: one enum, a stable set of variants, each with a message a user can act on.

use failcore_store::{ReadError, StoreError};

/// Everything that can go wrong in FailCore. Tool functions return it through their own error type
/// (`E: From<failcore::Error>`), so a blocked call is an ordinary `Err`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The policy refused the call; the tool body did not run.
    #[error("{tool}: blocked by policy `{policy}` (rule `{rule}`): {reason}")]
    Blocked {
        tool: String,
        policy: String,
        rule: String,
        reason: String,
    },

    /// Offline mode: the run being replayed has no recorded success for this call, so nothing ran.
    #[error("{tool}: no recorded success to replay in run {run} (fingerprint {fingerprint}, call #{occurrence} of it){detail}")]
    ReplayMiss {
        tool: String,
        run: String,
        fingerprint: String,
        occurrence: u32,
        detail: String,
    },

    /// A strict replay ended with recorded successes that no call reached (see
    /// [`SessionBuilder::strict`](crate::SessionBuilder::strict)). The run itself is finished and recorded.
    #[error(
        "strict replay of {recording}: run {run} never reached {} recorded call(s): {}",
        unreached.len(),
        unreached.join(", ")
    )]
    ReplayDiverged {
        run: String,
        /// The run replayed.
        recording: String,
        unreached: Vec<String>,
    },

    /// The arguments or the output have no canonical JSON form (a NaN, a non-string map key, ...).
    #[error("{tool}: {what} cannot be recorded: {reason}")]
    Serialize {
        tool: String,
        what: &'static str,
        reason: String,
    },

    /// A recorded output no longer decodes into the tool's output type.
    #[error("{tool}: the recorded output of run {run} seq {seq} does not decode into the output type ({reason}); bump the tool's `version` when its output type changes")]
    ReplayDecode {
        tool: String,
        run: String,
        seq: u64,
        reason: String,
    },

    /// The output broke the tool's `output` contract, and the session is strict.
    #[error("{tool}: output contract `{contract}` broken: {detail}")]
    Contract {
        tool: String,
        contract: String,
        detail: String,
    },

    /// A tool was called from outside every session scope while scopes are running in this process:
    /// typically from a task started with `tokio::spawn` inside `Session::scope`, which does not carry
    /// the session. Nothing ran.
    #[error("a tool was called outside any session scope while {active} scope(s) are running in this process: a task started with `tokio::spawn` does not carry the session; start it with `failcore::spawn` (or call the tool inside `session.scope(..)`)")]
    OutsideScope { active: usize },

    /// A cost could not be reported (`failcore::report_cost`): outside a tool's body, or not a valid amount.
    #[error("cost: {0}")]
    Cost(String),

    /// The trace store failed; the run cannot record, so calls fail rather than run unrecorded.
    #[error("trace store: {0}")]
    Store(#[from] StoreError),

    /// A trace could not be read.
    #[error("{file}: line {line}: {reason}")]
    Corrupt {
        file: String,
        line: u64,
        reason: String,
    },

    /// A session or policy configuration error, found at startup.
    #[error("configuration: {0}")]
    Config(String),

    /// Two tools linked into the binary share one name.
    #[error("two tools are named `{name}`: one in {first}, one in {second}; give one of them `name = \"...\"`")]
    DuplicateTool {
        name: String,
        first: String,
        second: String,
    },

    /// `call_json` named a tool that is not registered.
    #[error("no tool named `{0}` is linked into this binary (see failcore::tools(); a crate whose items are never used is not linked: add `use that_crate as _;`)")]
    UnknownTool(String),

    /// The tool exists but cannot be called by name.
    #[error("tool `{tool}` cannot be called by name: {reason}")]
    NotCallable { tool: String, reason: String },

    /// `call_json` arguments did not fit the tool's parameters.
    #[error("tool `{tool}`: invalid arguments: {reason}")]
    InvalidArguments { tool: String, reason: String },

    /// `failcore::exec` did not run a command: its policy refuses it, this kernel cannot build the sandbox
    /// the policy asks for (`rule` names what is missing), or the program could not be started.
    #[error("exec `{program}`: {reason} (rule `{rule}`)")]
    Exec {
        program: String,
        rule: String,
        reason: String,
    },

    /// The tool ran (or was replayed) and returned its own error, shown here as text (`call_json`).
    #[error("tool `{tool}` failed: {message}")]
    Tool { tool: String, message: String },
}

impl Error {
    /// A short machine-readable name of the variant (`blocked`, `replay_miss`, ...), used as the
    /// `error.type` of telemetry spans.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Blocked { .. } => "blocked",
            Error::ReplayMiss { .. } => "replay_miss",
            Error::ReplayDiverged { .. } => "replay_diverged",
            Error::Serialize { .. } => "serialize",
            Error::ReplayDecode { .. } => "replay_decode",
            Error::Contract { .. } => "contract",
            Error::Store(_) => "store",
            Error::Corrupt { .. } => "corrupt",
            Error::Config(_) => "config",
            Error::Cost(_) => "cost",
            Error::DuplicateTool { .. } => "duplicate_tool",
            Error::UnknownTool(_) => "unknown_tool",
            Error::NotCallable { .. } => "not_callable",
            Error::InvalidArguments { .. } => "invalid_arguments",
            Error::Exec { .. } => "exec",
            Error::Tool { .. } => "tool",
            Error::OutsideScope { .. } => "outside_scope",
        }
    }
}

impl Error {
    /// A copy of this error, for a by-name call to report what happened beneath the tool's own error
    /// type. A store error, which cannot be copied, keeps its kind and message as a `Config` error.
    pub(crate) fn duplicate(&self) -> Error {
        match self {
            Error::Blocked {
                tool,
                policy,
                rule,
                reason,
            } => Error::Blocked {
                tool: tool.clone(),
                policy: policy.clone(),
                rule: rule.clone(),
                reason: reason.clone(),
            },
            Error::ReplayDiverged {
                run,
                recording,
                unreached,
            } => Error::ReplayDiverged {
                run: run.clone(),
                recording: recording.clone(),
                unreached: unreached.clone(),
            },
            Error::ReplayMiss {
                tool,
                run,
                fingerprint,
                occurrence,
                detail,
            } => Error::ReplayMiss {
                tool: tool.clone(),
                run: run.clone(),
                fingerprint: fingerprint.clone(),
                occurrence: *occurrence,
                detail: detail.clone(),
            },
            Error::Serialize { tool, what, reason } => Error::Serialize {
                tool: tool.clone(),
                what,
                reason: reason.clone(),
            },
            Error::ReplayDecode {
                tool,
                run,
                seq,
                reason,
            } => Error::ReplayDecode {
                tool: tool.clone(),
                run: run.clone(),
                seq: *seq,
                reason: reason.clone(),
            },
            Error::Contract {
                tool,
                contract,
                detail,
            } => Error::Contract {
                tool: tool.clone(),
                contract: contract.clone(),
                detail: detail.clone(),
            },
            Error::Corrupt { file, line, reason } => Error::Corrupt {
                file: file.clone(),
                line: *line,
                reason: reason.clone(),
            },
            Error::DuplicateTool {
                name,
                first,
                second,
            } => Error::DuplicateTool {
                name: name.clone(),
                first: first.clone(),
                second: second.clone(),
            },
            Error::UnknownTool(name) => Error::UnknownTool(name.clone()),
            Error::OutsideScope { active } => Error::OutsideScope { active: *active },
            Error::NotCallable { tool, reason } => Error::NotCallable {
                tool: tool.clone(),
                reason: reason.clone(),
            },
            Error::InvalidArguments { tool, reason } => Error::InvalidArguments {
                tool: tool.clone(),
                reason: reason.clone(),
            },
            Error::Exec {
                program,
                rule,
                reason,
            } => Error::Exec {
                program: program.clone(),
                rule: rule.clone(),
                reason: reason.clone(),
            },
            Error::Tool { tool, message } => Error::Tool {
                tool: tool.clone(),
                message: message.clone(),
            },
            Error::Config(m) => Error::Config(m.clone()),
            Error::Cost(m) => Error::Cost(m.clone()),
            Error::Store(e) => Error::Config(format!("trace store: {e}")),
        }
    }
}

impl From<ReadError> for Error {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Corrupt { file, line, reason } => Error::Corrupt { file, line, reason },
            ReadError::NewerVersion { file, line, found } => Error::Corrupt {
                file,
                line,
                reason: format!(
                    "trace format v{found} is newer than this FailCore reads (v{}); upgrade FailCore",
                    failcore_store::FORMAT_VERSION
                ),
            },
            ReadError::Store(s) => Error::Store(s),
        }
    }
}
