//! Tasks: a task-augmented `tools/call` (SEP-1686 in 2025-11-25, where the client asks with
//! `params.task` and the server answers `{"task": {...}}`; the tasks extension of 2026-07-28, where the
//! server answers `resultType: "task"` with the task's fields) is one step whose output is the task's
//! final result, never its receipt. Live, the client gets the receipt at once and the proxy follows the
//! task itself (`tasks/get` until a terminal status, then `tasks/result` where the result is not inline);
//! a `tasks/cancel` from the client ends the step as cancelled. A call served from the trace is given to a
//! client that asked for a task as a completed task, and its `tasks/get`, `tasks/result` and
//! `tasks/cancel` are answered from the step.

use super::message::{rpc_error, rpc_result, spliced_result};
use super::upstream::{raw_result, Reply, Upstream};
use crate::Landed;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// The key of the task a message relates to, in its `_meta` (2025-11-25).
const RELATED_TASK: &str = "io.modelcontextprotocol/related-task";
/// The slowest and the fastest the proxy polls a task, whatever its `pollInterval` says.
const POLL_AT_MOST: Duration = Duration::from_secs(5);
const POLL_AT_LEAST: Duration = Duration::from_millis(50);

/// The two shapes of a task receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shape {
    /// 2025-11-25: `{"task": {"taskId", "status", "ttl", "pollInterval", ...}}`; the result comes from
    /// `tasks/result`.
    Augmented,
    /// The 2026-07-28 extension: `{"resultType": "task", "taskId", "status", "ttlMs", "pollIntervalMs",
    /// ...}`; a completed `tasks/get` holds the result.
    Extension,
}

/// A task a server created for a call: its id, its shape, and how often to poll it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Receipt {
    pub(super) task_id: String,
    pub(super) shape: Shape,
    poll: Option<Duration>,
}

/// The task a `tools/call` result is the receipt of, if it is one.
pub(super) fn receipt(result: &Value) -> Option<Receipt> {
    let millis = |v: Option<&Value>| v.and_then(Value::as_u64).map(Duration::from_millis);
    if result.get("resultType").and_then(Value::as_str) == Some("task") {
        return Some(Receipt {
            task_id: result.get("taskId")?.as_str()?.to_owned(),
            shape: Shape::Extension,
            poll: millis(result.get("pollIntervalMs")),
        });
    }
    let task = result.get("task").filter(|t| t.is_object())?;
    if result.get("content").is_some() {
        return None;
    }
    Some(Receipt {
        task_id: task.get("taskId")?.as_str()?.to_owned(),
        shape: Shape::Augmented,
        poll: millis(task.get("pollInterval")),
    })
}

/// What the server says of a call's outcome: its result as it sent it, or why the call failed.
pub(super) fn outcome(reply: &Reply) -> Result<Box<RawValue>, String> {
    match (reply.message.get("result"), reply.message.get("error")) {
        (Some(result), None) if result.get("isError") == Some(&Value::Bool(true)) => {
            Err(text_of(result))
        }
        (Some(_), None) => reply
            .raw_result()
            .ok_or_else(|| "the MCP server's result cannot be read".to_owned()),
        (Some(result), _) => Err(text_of(result)),
        (None, Some(error)) => {
            // Inside a proxied call's body: whether the server could have acted on it.
            let _ = crate::report_landed(landed_of(error));
            Err(format!(
                "MCP error {}: {}",
                error.get("code").unwrap_or(&Value::Null),
                error.get("message").and_then(Value::as_str).unwrap_or("")
            ))
        }
        (None, None) => Err("the MCP server sent a response with no result".to_owned()),
    }
}

/// Whether the server could have acted on a request it answered with the JSON-RPC error `error`: not when
/// it refused the request as unparsable, invalid, of an unknown method or with invalid parameters (an
/// unknown tool, bad arguments: the codes JSON-RPC reserves for refusals), maybe otherwise (an internal
/// error, or a code of the server's own, may come after it acted).
pub(super) fn landed_of(error: &Value) -> Landed {
    match error.get("code").and_then(Value::as_i64) {
        Some(-32700 | -32600 | -32601 | -32602) => Landed::No,
        _ => Landed::Unknown,
    }
}

/// A failure while a task the server started is followed: the task's effect is unknown.
fn unknown(why: impl Into<String>) -> String {
    let _ = crate::report_landed(Landed::Unknown);
    why.into()
}

/// The text of a tool result's content, for the trace.
pub(super) fn text_of(result: &Value) -> String {
    let texts: Vec<&str> = result
        .get("content")
        .and_then(Value::as_array)
        .map(|c| {
            c.iter()
                .filter_map(|b| b.get("text").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    if texts.is_empty() {
        "the tool reported an error".to_owned()
    } else {
        texts.join("\n")
    }
}

/// Ids of the proxy's own requests about tasks.
static OWN_IDS: AtomicU64 = AtomicU64::new(0);

fn own_id() -> Value {
    json!(format!(
        "failcore-proxy-task-{}",
        OWN_IDS.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Follows a task to its end: its final result as the server sent it, or why it did not complete.
pub(super) async fn follow(
    upstream: &Upstream,
    receipt: &Receipt,
) -> Result<Box<RawValue>, String> {
    let params = json!({ "taskId": receipt.task_id });
    let mut poll = receipt.poll;
    loop {
        let id = own_id();
        let reply = upstream
            .request(&id, upstream.own_request(&id, "tasks/get", params.clone()))
            .await
            .map_err(|f| unknown(f.why))?;
        let task = outcome(&reply).map_err(unknown)?;
        let state: Value = serde_json::from_str(task.get())
            .map_err(|e| unknown(format!("the MCP server's task cannot be read: {e}")))?;
        let said = |what: &str| match state.get("statusMessage").and_then(Value::as_str) {
            Some(m) => format!("the task {what}: {m}"),
            None => format!("the task {what}"),
        };
        match state.get("status").and_then(Value::as_str) {
            Some("completed") => {
                // Inline in a completed task (2026-07-28), else asked for (2025-11-25).
                if let Some(result) = raw_result(task.get()) {
                    let value: Value = serde_json::from_str(result.get()).unwrap_or(Value::Null);
                    if value.get("isError") == Some(&Value::Bool(true)) {
                        return Err(text_of(&value));
                    }
                    return Ok(result);
                }
                let id = own_id();
                let reply = upstream
                    .request(&id, upstream.own_request(&id, "tasks/result", params))
                    .await
                    .map_err(|f| unknown(f.why))?;
                return match (outcome(&reply), reply.message.get("error")) {
                    // The completed task's result could not be had: what it did is unknown.
                    (Err(why), Some(_)) => Err(unknown(why)),
                    (answer, _) => answer,
                };
            }
            Some("failed") => {
                let error = state.pointer("/error/message").and_then(Value::as_str);
                return Err(match error {
                    Some(e) => format!("the task failed: {e}"),
                    None => said("failed"),
                });
            }
            Some("cancelled") => return Err(said("was cancelled by the MCP server")),
            _ => {}
        }
        let hint = state
            .get(match receipt.shape {
                Shape::Augmented => "pollInterval",
                Shape::Extension => "pollIntervalMs",
            })
            .and_then(Value::as_u64)
            .map(Duration::from_millis);
        poll = hint.or(poll);
        let wait = poll
            .unwrap_or(Duration::from_secs(1))
            .clamp(POLL_AT_LEAST, POLL_AT_MOST);
        tokio::time::sleep(wait).await;
    }
}

/// A task the proxy answers for itself: a call served from the trace to a client that asked for a task.
struct ServedTask {
    result: Box<RawValue>,
    created: String,
}

/// The session's tasks: those the proxy follows live (by task id, the client's request id of their
/// call, so that `tasks/cancel` ends it), and those it serves.
#[derive(Default)]
pub(super) struct Tasks {
    live: HashMap<String, String>,
    served: HashMap<String, ServedTask>,
    made_up: u64,
}

pub(super) type SharedTasks = Arc<Mutex<Tasks>>;

impl Tasks {
    /// The call of request `key` follows task `task_id`.
    pub(super) fn following(tasks: &SharedTasks, task_id: &str, key: &str) {
        if let Ok(mut t) = tasks.lock() {
            t.live.insert(task_id.to_owned(), key.to_owned());
        }
    }

    /// The call following `task_id` ended.
    pub(super) fn followed(tasks: &SharedTasks, task_id: &str) {
        if let Ok(mut t) = tasks.lock() {
            t.live.remove(task_id);
        }
    }

    /// The request key of the call following `task_id`, if one does.
    pub(super) fn follower(tasks: &SharedTasks, task_id: &str) -> Option<String> {
        tasks.lock().ok()?.live.get(task_id).cloned()
    }

    /// A call served from the trace, for a client that asked for a task (2025-11-25): the receipt of a
    /// completed task (its id kept from the recorded result when it names one), answered with `id`.
    pub(super) fn serve(tasks: &SharedTasks, id: &Value, result: Box<RawValue>) -> String {
        let Ok(mut t) = tasks.lock() else {
            return rpc_error(id, -32603, "failcore proxy: the table of tasks is poisoned")
                .to_string();
        };
        let recorded = serde_json::from_str::<Value>(result.get())
            .ok()
            .and_then(|r| {
                r.get("_meta")?
                    .get(RELATED_TASK)?
                    .get("taskId")?
                    .as_str()
                    .map(str::to_owned)
            });
        let task_id = match recorded {
            Some(task_id) => task_id,
            None => {
                t.made_up += 1;
                format!("failcore-served-{}", t.made_up)
            }
        };
        let served = ServedTask {
            result,
            created: crate::store::time::format_rfc3339(SystemTime::now()),
        };
        let receipt = json!({ "task": served.state(&task_id) });
        t.served.insert(task_id, served);
        rpc_result(id, receipt).to_string()
    }

    /// The answer to a client's `tasks/...` request about a task the proxy serves, if it is one.
    /// Offline (`offline`), a task the proxy does not serve is unknown, and `tasks/list` lists those it
    /// serves.
    pub(super) fn answer(
        tasks: &SharedTasks,
        id: &Value,
        method: &str,
        params: Option<&Value>,
        offline: bool,
    ) -> Option<String> {
        if !method.starts_with("tasks/") {
            return None;
        }
        let t = tasks.lock().ok()?;
        if method == "tasks/list" {
            if !offline {
                return None;
            }
            let mut listed: Vec<(&String, &ServedTask)> = t.served.iter().collect();
            listed.sort_by(|a, b| a.0.cmp(b.0));
            let states: Vec<Value> = listed.iter().map(|(k, s)| s.state(k)).collect();
            return Some(rpc_result(id, json!({ "tasks": states })).to_string());
        }
        let task_id = params?.get("taskId")?.as_str()?;
        let Some(served) = t.served.get(task_id) else {
            if !offline {
                return None;
            }
            let why = format!("failcore proxy (offline): no task `{task_id}` in this session");
            return Some(rpc_error(id, -32602, &why).to_string());
        };
        Some(match method {
            "tasks/get" => rpc_result(id, served.state(task_id)).to_string(),
            "tasks/result" => spliced_result(id, served.result.get()),
            // A completed task cannot be cancelled (2025-11-25: -32602).
            "tasks/cancel" => rpc_error(
                id,
                -32602,
                &format!("failcore proxy: task `{task_id}` is already completed"),
            )
            .to_string(),
            other => rpc_error(
                id,
                -32601,
                &format!("failcore proxy: `{other}` is not answered for a served task"),
            )
            .to_string(),
        })
    }
}

impl ServedTask {
    /// The task's state (2025-11-25): completed, created when it was served, kept without limit.
    fn state(&self, task_id: &str) -> Value {
        json!({
            "taskId": task_id,
            "status": "completed",
            "createdAt": self.created,
            "lastUpdatedAt": self.created,
            "ttl": null,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipts_of_both_revisions_are_told_from_results() {
        let augmented = json!({"task": {"taskId": "t1", "status": "working", "ttl": 60000, "pollInterval": 250}});
        assert_eq!(
            receipt(&augmented),
            Some(Receipt {
                task_id: "t1".into(),
                shape: Shape::Augmented,
                poll: Some(Duration::from_millis(250))
            })
        );
        let extension = json!({"resultType": "task", "taskId": "t2", "status": "working", "ttlMs": null, "pollIntervalMs": 100});
        assert_eq!(
            receipt(&extension),
            Some(Receipt {
                task_id: "t2".into(),
                shape: Shape::Extension,
                poll: Some(Duration::from_millis(100))
            })
        );
        // A tool result that happens to hold a `task` field is a result.
        let result = json!({"content": [], "task": {"taskId": "t3"}});
        assert_eq!(receipt(&result), None);
        assert_eq!(receipt(&json!({"content": []})), None);
        // A receipt without a task id cannot be followed: it is no receipt.
        assert_eq!(receipt(&json!({"resultType": "task"})), None);
    }

    #[test]
    fn a_served_task_is_completed_and_answered_from_its_result() {
        let tasks = SharedTasks::default();
        let ask = |n: u64, method: &str, task: &str, offline: bool| {
            Tasks::answer(
                &tasks,
                &json!(n),
                method,
                Some(&json!({ "taskId": task })),
                offline,
            )
        };
        let result = RawValue::from_string(
            r#"{"content":[{"type":"text","text":"done"}],"_meta":{"io.modelcontextprotocol/related-task":{"taskId":"kept"}}}"#.to_owned(),
        )
        .unwrap();
        let receipt: Value =
            serde_json::from_str(&Tasks::serve(&tasks, &json!(4), result)).unwrap();
        assert_eq!(receipt["id"], 4);
        assert_eq!(receipt["result"]["task"]["taskId"], "kept");
        assert_eq!(receipt["result"]["task"]["status"], "completed");
        let get = ask(5, "tasks/get", "kept", false).unwrap();
        let get: Value = serde_json::from_str(&get).unwrap();
        assert_eq!(get["result"]["status"], "completed");
        let got = ask(6, "tasks/result", "kept", false).unwrap();
        assert_eq!(
            got,
            r#"{"jsonrpc":"2.0","id":6,"result":{"content":[{"type":"text","text":"done"}],"_meta":{"io.modelcontextprotocol/related-task":{"taskId":"kept"}}}}"#
        );
        let cancel = ask(7, "tasks/cancel", "kept", false).unwrap();
        assert!(cancel.contains("-32602"), "{cancel}");
        // Other tasks are the server's, live; offline they are unknown.
        assert_eq!(ask(8, "tasks/get", "other", false), None);
        let unknown = ask(8, "tasks/get", "other", true).unwrap();
        assert!(unknown.contains("-32602"), "{unknown}");
        let made_up = RawValue::from_string(r#"{"content":[]}"#.to_owned()).unwrap();
        let receipt: Value =
            serde_json::from_str(&Tasks::serve(&tasks, &json!(9), made_up)).unwrap();
        assert_eq!(receipt["result"]["task"]["taskId"], "failcore-served-1");
        let list = Tasks::answer(&tasks, &json!(10), "tasks/list", None, true).unwrap();
        let list: Value = serde_json::from_str(&list).unwrap();
        assert_eq!(list["result"]["tasks"].as_array().unwrap().len(), 2);
    }
}
