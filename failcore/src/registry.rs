//! Tool descriptors, link-time registration (inventory), and the lookup of a tool by name (the call itself
//! is `by_name.rs`).

use crate::policy::PolicyRef;
use crate::Error;
use serde_json::{Map, Value};
use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};

/// What to do on resume with a step that was in flight (started, never ended) when the run died.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InFlight {
    /// Run it again (at-least-once).
    #[default]
    Rerun,
    /// Refuse it if its tool's effect is `write` or `exec` (it may have happened already).
    Block,
}

impl std::str::FromStr for InFlight {
    type Err = String;

    /// `rerun` or `block`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "rerun" => Ok(InFlight::Rerun),
            "block" => Ok(InFlight::Block),
            other => Err(format!("expected `rerun` or `block`, got {other:?}")),
        }
    }
}

/// What a resume does with a call of this tool that was in flight (started, never ended) when its run
/// died: `#[failcore::tool(recovery = "retry" | "block")]`, or `reconcile = f`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum InFlightRecovery {
    /// As the session says ([`crate::InFlight`]): run it again, or block a `write` or `exec` call.
    #[default]
    Session,
    /// Run it again (at-least-once): the tool passes [`crate::idempotency_key`] to a provider that
    /// deduplicates by it, or its effect is harmless to repeat.
    Retry,
    /// Refuse it on resume: it may have taken effect, and a person checks.
    Block,
    /// Ask the tool's `reconcile` function whether the effect landed (with the call's arguments, and the
    /// same [`crate::idempotency_key`] the interrupted call had): its answer is served as the output if
    /// it did, and the body runs if it did not.
    Reconcile,
}

/// What a tool touches. Policies and replay use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Effect {
    /// Not declared.
    Unspecified,
    Pure,
    Read,
    Write,
    Network,
    Exec,
    /// A call to a language model (see [`crate::model`]).
    Model,
}

impl Effect {
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Unspecified => "unspecified",
            Effect::Pure => "pure",
            Effect::Read => "read",
            Effect::Write => "write",
            Effect::Network => "network",
            Effect::Exec => "exec",
            Effect::Model => "model",
        }
    }
}

impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A tool's output contract (`output = "json" | "text"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputContract {
    Any,
    /// A `String` output must hold JSON.
    Json,
    /// The output must be a string.
    Text,
}

/// How an argument is treated.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamRole {
    Fingerprinted,
    Redacted,
    Skipped,
}

#[doc(hidden)]
#[derive(Debug)]
pub struct Param {
    pub name: &'static str,
    pub role: ParamRole,
    /// Typed `PathBuf`/`Path`: a path for fs policies.
    pub path: bool,
}

#[doc(hidden)]
pub enum PolicySource {
    None,
    Named(&'static str),
    Expr(fn() -> PolicyRef),
}

/// The future of a by-name call: the output as JSON, or the tool's error as text.
pub type Invocation = Pin<Box<dyn Future<Output = Result<Value, InvokeError>> + Send>>;

/// Why a by-name call did not produce an output.
#[doc(hidden)]
#[derive(Debug)]
pub enum InvokeError {
    Arguments(String),
    Tool(String),
    NotSend,
}

#[doc(hidden)]
pub enum Invoker {
    Callable(fn(JsonArgs) -> Invocation),
    NotCallable(&'static str),
}

/// Per-tool state computed once (the tool's `policy = <expr>`).
#[doc(hidden)]
pub struct DescriptorCache {
    pub(crate) policy: OnceLock<PolicyRef>,
    pub(crate) redact: OnceLock<crate::redact_paths::RedactPaths>,
}

impl DescriptorCache {
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        DescriptorCache {
            policy: OnceLock::new(),
            redact: OnceLock::new(),
        }
    }
}

/// The static descriptor each `#[failcore::tool]` generates.
#[doc(hidden)]
pub struct ToolDescriptor {
    pub name: &'static str,
    pub version: &'static str,
    pub module: &'static str,
    pub description: &'static str,
    pub effect: Effect,
    pub policy: PolicySource,
    pub params: &'static [Param],
    /// `redact(args = "/a/b", output = "/c")`: JSON pointers into the arguments and the output.
    pub redact_args: &'static [&'static str],
    pub redact_output: &'static [&'static str],
    pub replay: bool,
    pub output: OutputContract,
    /// What a resume does with a call of it that was in flight at a crash.
    pub recovery: InFlightRecovery,
    pub invoker: Invoker,
    /// The argument schema (feature `schema`, tools callable by name).
    pub schema: Option<fn() -> Value>,
    pub file: &'static str,
    pub line: u32,
    pub cache: DescriptorCache,
}

#[doc(hidden)]
pub struct Registration(pub &'static ToolDescriptor);

inventory::collect!(Registration);

/// A registered tool, as [`tools()`] lists it.
#[derive(Clone, Copy)]
pub struct ToolInfo(pub(crate) &'static ToolDescriptor);

impl ToolInfo {
    pub fn name(&self) -> &'static str {
        self.0.name
    }
    /// The contract version (`version = "..."`), empty when not set.
    pub fn version(&self) -> &'static str {
        self.0.version
    }
    /// The module that defines it.
    pub fn module(&self) -> &'static str {
        self.0.module
    }
    /// The doc comment.
    pub fn description(&self) -> &'static str {
        self.0.description
    }
    pub fn effect(&self) -> Effect {
        self.0.effect
    }
    /// `Some(name)` for a named policy; `Some("<expr>")` for a policy given as an expression.
    pub fn policy(&self) -> Option<&'static str> {
        match self.0.policy {
            PolicySource::None => None,
            PolicySource::Named(n) => Some(n),
            PolicySource::Expr(_) => Some("<expr>"),
        }
    }
    /// The argument names, in order (skipped ones included).
    pub fn params(&self) -> impl Iterator<Item = &'static str> {
        self.0.params.iter().map(|p| p.name)
    }
    /// Whether `replay = "auto"` (the default).
    pub fn replays(&self) -> bool {
        self.0.replay
    }
    pub fn output(&self) -> OutputContract {
        self.0.output
    }
    /// `Err(reason)` when the tool cannot be called by name (methods, skipped arguments).
    pub fn callable(&self) -> Result<(), &'static str> {
        match self.0.invoker {
            Invoker::Callable(_) => Ok(()),
            Invoker::NotCallable(why) => Err(why),
        }
    }
    /// Where it is defined: `file:line`.
    pub fn location(&self) -> String {
        format!("{}:{}", self.0.file, self.0.line)
    }
}

impl fmt::Debug for ToolInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ToolInfo")
            .field("name", &self.name())
            .field("module", &self.module())
            .field("effect", &self.effect())
            .field("policy", &self.policy())
            .finish()
    }
}

/// Every tool linked into this binary, sorted by name.
///
/// A crate whose items are never referenced is not linked, and its tools are missing: reference it
/// (`use my_tools as _;`) and check at startup with [`expect_tools`].
pub fn tools() -> Vec<ToolInfo> {
    let mut all: Vec<ToolInfo> = inventory::iter::<Registration>
        .into_iter()
        .map(|r| ToolInfo(r.0))
        .collect();
    all.sort_by(|a, b| a.name().cmp(b.name()).then(a.module().cmp(b.module())));
    all
}

/// The first pair of tools that share a name, if any.
pub(crate) fn check_unique() -> Result<(), Error> {
    let all = tools();
    for pair in all.windows(2) {
        if pair[0].name() == pair[1].name() {
            return Err(Error::DuplicateTool {
                name: pair[0].name().to_owned(),
                first: format!("{} ({})", pair[0].module(), pair[0].location()),
                second: format!("{} ({})", pair[1].module(), pair[1].location()),
            });
        }
    }
    Ok(())
}

fn by_name() -> &'static HashMap<&'static str, Result<ToolInfo, Error>> {
    static INDEX: OnceLock<HashMap<&'static str, Result<ToolInfo, Error>>> = OnceLock::new();
    INDEX.get_or_init(|| {
        let mut index: HashMap<&'static str, Result<ToolInfo, Error>> = HashMap::new();
        for tool in tools() {
            let entry = match index.remove(tool.name()) {
                None => Ok(tool),
                Some(Ok(first)) => Err(Error::DuplicateTool {
                    name: tool.name().to_owned(),
                    first: format!("{} ({})", first.module(), first.location()),
                    second: format!("{} ({})", tool.module(), tool.location()),
                }),
                Some(Err(e)) => Err(e),
            };
            index.insert(tool.name(), entry);
        }
        index
    })
}

/// Checks that each named tool is linked into the binary, so that a registration lost to the linker is
/// found at startup rather than when an agent first calls it.
pub fn expect_tools(names: &[&str]) -> Result<(), Error> {
    for name in names {
        match by_name().get(name) {
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(clone_dup(e)),
            None => return Err(Error::UnknownTool((*name).to_owned())),
        }
    }
    Ok(())
}

fn clone_dup(e: &Error) -> Error {
    match e {
        Error::DuplicateTool {
            name,
            first,
            second,
        } => Error::DuplicateTool {
            name: name.clone(),
            first: first.clone(),
            second: second.clone(),
        },
        other => Error::Config(other.to_string()),
    }
}

/// Finds a tool by name.
pub fn tool(name: &str) -> Result<ToolInfo, Error> {
    match by_name().get(name) {
        Some(Ok(t)) => Ok(*t),
        Some(Err(e)) => Err(clone_dup(e)),
        None => Err(Error::UnknownTool(name.to_owned())),
    }
}

/// Reports a FailCore error of the call to its by-name caller, if there is one.
pub(crate) fn report(slot: &Option<Arc<Mutex<Option<Error>>>>, e: &Error) {
    if let Some(slot) = slot {
        if let Ok(mut s) = slot.lock() {
            *s = Some(e.duplicate());
        }
    }
}

/// The arguments of a by-name call, taken one parameter at a time by the generated code.
#[doc(hidden)]
pub struct JsonArgs {
    pub(crate) map: Map<String, Value>,
}

impl JsonArgs {
    pub fn take<T: serde::de::DeserializeOwned>(&mut self, name: &str) -> Result<T, InvokeError> {
        let present = self.map.contains_key(name);
        let value = self.map.remove(name).unwrap_or(Value::Null);
        serde_json::from_value(value).map_err(|e| {
            InvokeError::Arguments(if present {
                format!("argument `{name}`: {e}")
            } else {
                format!("missing argument `{name}`")
            })
        })
    }

    pub fn finish(&self) -> Result<(), InvokeError> {
        match self.map.keys().next() {
            None => Ok(()),
            Some(k) => Err(InvokeError::Arguments(format!("unknown argument `{k}`"))),
        }
    }
}

#[doc(hidden)]
pub fn encode_output<T: serde::Serialize, E: fmt::Display>(
    out: Result<T, E>,
) -> Result<Value, InvokeError> {
    match out {
        Ok(v) => serde_json::to_value(&v)
            .map_err(|e| InvokeError::Tool(format!("output not serializable: {e}"))),
        Err(e) => Err(InvokeError::Tool(e.to_string())),
    }
}

/// Boxes a by-name call's future when it is `Send`, and reports it otherwise, without requiring `Send`
/// of every tool: on `(&&wrap).__failcore_invocation()`, method resolution picks [`InvokeSend`] (receiver
/// `&&InvokeWrap`) when its bound holds, else derefs once and picks [`InvokeLocal`].
#[doc(hidden)]
pub struct InvokeWrap<F>(Cell<Option<F>>);

impl<F> InvokeWrap<F> {
    pub fn new(f: F) -> Self {
        InvokeWrap(Cell::new(Some(f)))
    }
}

#[doc(hidden)]
pub trait InvokeSend {
    fn __failcore_invocation(&self) -> Invocation;
}

impl<F> InvokeSend for &InvokeWrap<F>
where
    F: Future<Output = Result<Value, InvokeError>> + Send + 'static,
{
    fn __failcore_invocation(&self) -> Invocation {
        match self.0.take() {
            Some(f) => Box::pin(f),
            None => {
                Box::pin(async { Err(InvokeError::Arguments("invocation taken twice".into())) })
            }
        }
    }
}

#[doc(hidden)]
pub trait InvokeLocal {
    fn __failcore_invocation(&self) -> Invocation;
}

impl<F> InvokeLocal for InvokeWrap<F> {
    fn __failcore_invocation(&self) -> Invocation {
        Box::pin(async { Err(InvokeError::NotSend) })
    }
}

// The descriptors of dynamic tools (`DynamicTool`), kept here so that a module below `dynamic` (policy
// history, which knows a recorded tool by its name) can have one.

/// How many distinct dynamic tools a process may define: each keeps a descriptor for the life of the
/// process, so that a stream of made-up names cannot grow memory without bound.
pub const MAX_DYNAMIC_TOOLS: usize = 4096;

type Key = (String, &'static str, Effect, DynamicSpec);

/// What a dynamic tool declares beyond its name, origin and effect, as the attribute of a
/// `#[failcore::tool]` does: the Python package's `@failcore.tool` gives all of it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct DynamicSpec {
    /// The tool's contract version, part of the fingerprint.
    pub version: String,
    /// A named policy (a preset, or one defined in the session's policy file), checked before the body
    /// runs, after the session's guards.
    pub policy: Option<String>,
    /// The tool's description (shown by `failcore::tools()`-style listings).
    pub description: String,
    /// JSON pointers into the arguments (`/password`) stored in the trace only as a keyed hash.
    pub redact_args: Vec<String>,
    /// `true`: always execute live, even when resuming (clock reads, random).
    pub never_replay: bool,
    /// Arguments (by name) that are paths, for fs policies: what a parameter typed `PathBuf` declares.
    pub path_args: Vec<String>,
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_owned().into_boxed_str())
}

fn interned() -> &'static Mutex<HashMap<Key, &'static ToolDescriptor>> {
    static TOOLS: OnceLock<Mutex<HashMap<Key, &'static ToolDescriptor>>> = OnceLock::new();
    TOOLS.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The descriptor of the dynamic tool `name` from `origin`, made once for the same arguments and kept for
/// the life of the process (at most [`MAX_DYNAMIC_TOOLS`] of them).
pub(crate) fn dynamic_descriptor(
    name: &str,
    origin: &'static str,
    effect: Effect,
    spec: &DynamicSpec,
) -> Result<&'static ToolDescriptor, Error> {
    crate::redact_paths::RedactPaths::parse(&spec.redact_args, &[] as &[&str])
        .map_err(|e| Error::Config(format!("tool `{name}`: redact: {e}")))?;
    let mut tools = interned()
        .lock()
        .map_err(|_| Error::Config("the dynamic tool table is poisoned".into()))?;
    let key = (name.to_owned(), origin, effect, spec.clone());
    if let Some(d) = tools.get(&key) {
        return Ok(d);
    }
    if tools.len() >= MAX_DYNAMIC_TOOLS {
        return Err(Error::Config(format!(
            "more than {MAX_DYNAMIC_TOOLS} distinct dynamic tools: refusing `{name}`"
        )));
    }
    let descriptor: &'static ToolDescriptor = Box::leak(Box::new(ToolDescriptor {
        name: leak(name),
        version: leak(&spec.version),
        module: origin,
        description: leak(&spec.description),
        effect,
        policy: spec
            .policy
            .as_deref()
            .map_or(PolicySource::None, |p| PolicySource::Named(leak(p))),
        params: Box::leak(
            spec.path_args
                .iter()
                .map(|p| Param {
                    name: leak(p),
                    role: ParamRole::Fingerprinted,
                    path: true,
                })
                .collect::<Vec<_>>()
                .into_boxed_slice(),
        ),
        // Proxied tools get theirs from the session (`[redact.<tool>]` in the policy file).
        redact_args: Box::leak(
            spec.redact_args
                .iter()
                .map(|p| leak(p))
                .collect::<Vec<_>>()
                .into_boxed_slice(),
        ),
        redact_output: &[],
        replay: !spec.never_replay,
        output: OutputContract::Any,
        recovery: InFlightRecovery::Session,
        invoker: Invoker::NotCallable("it is a dynamic tool: call it with DynamicTool::call"),
        schema: None,
        file: "",
        line: 0,
        cache: DescriptorCache::new(),
    }));
    tools.insert(key, descriptor);
    Ok(descriptor)
}
