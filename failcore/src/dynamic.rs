//! Tools known only at run time (the tools of a proxied MCP server, say): the same lifecycle as a
//! `#[failcore::tool]` (policy, replay, trace), with the arguments and the output as JSON.

use crate::registry::{DynamicSpec, Effect, ToolDescriptor, ToolInfo};
use crate::Error;
use serde_json::value::RawValue;
use serde_json::Value;
use std::future::Future;
use std::pin::Pin;

/// A tool known only at run time. Calls go through [`DynamicTool::call`].
#[derive(Clone, Copy)]
pub struct DynamicTool(&'static ToolDescriptor);

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
        crate::registry::dynamic_descriptor(name, origin, effect, spec).map(DynamicTool)
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
