//! Tools known only at run time (the tools of a proxied MCP server, say): the same lifecycle as a
//! `#[failcore::tool]` (policy, replay, trace), with the arguments and the output as JSON.

use crate::registry::{
    DescriptorCache, Effect, Invoker, OutputContract, Param, ParamRole, PolicySource,
    ToolDescriptor, ToolInfo,
};
use crate::Error;
use serde_json::value::RawValue;
use serde_json::Value;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, OnceLock};

/// How many distinct dynamic tools a process may define: each keeps a descriptor for the life of the
/// process, so that a stream of made-up names cannot grow memory without bound.
pub const MAX_DYNAMIC_TOOLS: usize = 4096;

/// A tool known only at run time. Calls go through [`DynamicTool::call`].
#[derive(Clone, Copy)]
pub struct DynamicTool(&'static ToolDescriptor);

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

/// The future of a dynamic tool's body: its output as JSON, or its error as text.
pub type DynamicBody = Pin<Box<dyn Future<Output = Result<Value, String>> + Send>>;

/// The future of a dynamic tool's body whose output is JSON text, recorded and replayed byte for byte
/// (key order, number literals and string escapes as they were).
pub type DynamicRawBody = Pin<Box<dyn Future<Output = Result<Box<RawValue>, String>> + Send>>;

impl DynamicTool {
    /// The dynamic tool `name` from `origin` (e.g. `"mcp proxy"`, shown as its module), with an effect.
    /// The same arguments give the same tool.
    pub fn new(name: &str, origin: &'static str, effect: Effect) -> Result<DynamicTool, Error> {
        DynamicTool::with_spec(name, origin, effect, &DynamicSpec::default())
    }

    /// Like [`DynamicTool::new`], with a version, a policy, a description, redacted arguments and a
    /// replay rule. A redaction path that is not a JSON pointer is an error here, not at the first call.
    pub fn with_spec(
        name: &str,
        origin: &'static str,
        effect: Effect,
        spec: &DynamicSpec,
    ) -> Result<DynamicTool, Error> {
        crate::secrets::RedactPaths::parse(&spec.redact_args, &[] as &[&str])
            .map_err(|e| Error::Config(format!("tool `{name}`: redact: {e}")))?;
        let mut tools = interned()
            .lock()
            .map_err(|_| Error::Config("the dynamic tool table is poisoned".into()))?;
        let key = (name.to_owned(), origin, effect, spec.clone());
        if let Some(d) = tools.get(&key) {
            return Ok(DynamicTool(d));
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
            recovery: crate::registry::InFlightRecovery::Session,
            invoker: Invoker::NotCallable("it is a dynamic tool: call it with DynamicTool::call"),
            schema: None,
            file: "",
            line: 0,
            cache: DescriptorCache::new(),
        }));
        tools.insert(key, descriptor);
        Ok(DynamicTool(descriptor))
    }

    pub fn info(&self) -> ToolInfo {
        ToolInfo(self.0)
    }

    /// Calls the tool through the lifecycle, in the current (else the default) session: fingerprints
    /// `arguments`, checks the session's policies, serves a replayed output when resuming (then `body` is
    /// dropped unpolled, so it never starts), else runs `body` and records its outcome.
    pub async fn call(&self, arguments: &Value, body: DynamicBody) -> Result<Value, Error> {
        let tool = self.0;
        let prepared = crate::lifecycle::prepare_value(tool, arguments);
        let entered = crate::lifecycle::enter(tool, prepared).await;
        crate::lifecycle::run(entered, move || async move {
            body.await.map_err(|message| Error::Tool {
                tool: tool.name.to_owned(),
                message,
            })
        })
        .await
    }
}

impl DynamicTool {
    /// [`DynamicTool::call`] for an output that is JSON text: the trace records those bytes (a text on
    /// several lines made one line), and a resume or an offline replay gives them back unchanged.
    /// Policies, redaction and fingerprints see the JSON they hold.
    pub async fn call_raw(
        &self,
        arguments: &Value,
        body: DynamicRawBody,
    ) -> Result<Box<RawValue>, Error> {
        let tool = self.0;
        let prepared = crate::lifecycle::prepare_value(tool, arguments);
        let entered = crate::lifecycle::enter(tool, prepared).await;
        crate::lifecycle::run(entered, move || async move {
            body.await.map_err(|message| Error::Tool {
                tool: tool.name.to_owned(),
                message,
            })
        })
        .await
    }
}

impl std::fmt::Debug for DynamicTool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("DynamicTool").field(&self.0.name).finish()
    }
}
