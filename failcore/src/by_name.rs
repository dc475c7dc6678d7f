//! Calls by name: the entry point of a tool call an LLM emits, above the session whose context it runs in.

use crate::registry::{tool, InvokeError, Invoker, JsonArgs};
use crate::Error;
use serde_json::{Map, Value};
use std::sync::{Arc, Mutex};

/// Calls a tool by name with the `arguments` object an LLM emits, through the full lifecycle (policy,
/// replay, trace), in the current session.
///
/// Accepts the arguments as a JSON object, or as a string holding one (as some providers send them).
pub async fn call_json(name: &str, arguments: Value) -> Result<Value, Error> {
    let tool = tool(name)?;
    let Invoker::Callable(invoke) = tool.0.invoker else {
        return Err(Error::NotCallable {
            tool: name.to_owned(),
            reason: tool.callable().err().unwrap_or("").into(),
        });
    };
    let arguments = match arguments {
        Value::String(s) => serde_json::from_str(&s).map_err(|e| Error::InvalidArguments {
            tool: name.to_owned(),
            reason: format!("not JSON: {e}"),
        })?,
        other => other,
    };
    let args = match arguments {
        Value::Object(map) => JsonArgs { map },
        Value::Null => JsonArgs { map: Map::new() },
        other => {
            return Err(Error::InvalidArguments {
                tool: name.to_owned(),
                reason: format!("arguments must be a JSON object, not {}", json_type(&other)),
            })
        }
    };
    let slot = Arc::new(Mutex::new(None));
    let mut ctx = crate::session::context()?;
    ctx.by_name = Some(slot.clone());
    let outcome = crate::session::in_context(ctx, invoke(args)).await;
    let reported = slot.lock().ok().and_then(|mut s| s.take());
    match outcome {
        Ok(v) => Ok(v),
        Err(InvokeError::Arguments(reason)) => Err(Error::InvalidArguments {
            tool: name.to_owned(),
            reason,
        }),
        // Blocked, replay miss, ...: the error itself rather than the tool's rendering of it.
        Err(InvokeError::Tool(message)) => Err(reported.unwrap_or(Error::Tool {
            tool: name.to_owned(),
            message,
        })),
        Err(InvokeError::NotSend) => Err(Error::NotCallable {
            tool: name.to_owned(),
            reason: "its future is not Send, and calls by name run on any thread".into(),
        }),
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
