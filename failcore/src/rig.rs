//! Registered tools as rig tools (feature `rig`, built on rig-core).
//!
//! Each tool callable by name becomes a `rig_core::tool::DynamicTool` with its normalised argument schema;
//! calling it goes through [`call_json`](crate::call_json), so policy, replay and the trace apply. A
//! blocked call is a rig refusal (`PermissionDenied`) carrying the rule, so the model sees why.

use crate::registry::ToolInfo;
use crate::{Error, Session};
use rig_core::message::ToolName;
use rig_core::tool::{DynamicTool, ToolErrorKind, ToolExecutionError, ToolOutput};
use serde_json::Value;

/// The rig-core version this adapter is built and tested against.
pub const RIG_CORE_VERSION: &str = "0.44.0";

/// Every tool callable by name, as rig tools running in the current (else the default) session.
pub fn tools() -> Vec<DynamicTool> {
    crate::tools()
        .into_iter()
        .filter_map(|t| tool(t, None))
        .collect()
}

/// Every tool callable by name, as rig tools whose calls run in `session`.
pub fn tools_in(session: &Session) -> Vec<DynamicTool> {
    crate::tools()
        .into_iter()
        .filter_map(|t| tool(t, Some(session.clone())))
        .collect()
}

/// One tool as a rig tool, or `None` when it cannot be called by name.
pub fn tool(info: ToolInfo, session: Option<Session>) -> Option<DynamicTool> {
    let schema = info.schema()?;
    let name = ToolName::new(info.name()).ok()?;
    let tool_name = info.name();
    Some(DynamicTool::new(
        name,
        info.description(),
        schema,
        move |arguments: Value| {
            let session = session.clone();
            Box::pin(async move {
                let outcome = match &session {
                    Some(s) => s.scope(crate::call_json(tool_name, arguments)).await,
                    None => crate::call_json(tool_name, arguments).await,
                };
                match outcome {
                    Ok(Value::String(text)) => Ok(ToolOutput::text(text)),
                    Ok(value) => Ok(ToolOutput::json(value)),
                    Err(e) => Err(rig_error(&e)),
                }
            })
        },
    ))
}

fn rig_error(e: &Error) -> ToolExecutionError {
    match e {
        Error::Blocked { .. } => ToolExecutionError::refused(e.to_string()),
        Error::InvalidArguments { .. } => {
            ToolExecutionError::new(ToolErrorKind::InvalidArgs, e.to_string())
        }
        Error::UnknownTool(_) => ToolExecutionError::new(ToolErrorKind::NotFound, e.to_string()),
        _ => ToolExecutionError::new(ToolErrorKind::Other, e.to_string()),
    }
}
