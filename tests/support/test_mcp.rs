//! A configurable MCP server over stdio for the proxy's protocol tests. Every answer is written from fixed
//! text (never re-serialized), so a test can compare the bytes a client gets with the bytes sent here.
//!
//! Tools: `numbers` (a result with big integers, `1e2`, unicode escapes and unsorted keys), `sleep`
//! (answers after `seconds`, from a thread: the server keeps reading meanwhile), `ask` (asks for input
//! with an `input_required` result until it is retried with `inputResponses`), and `tool_1`...`tool_N`
//! (N = `TEST_MCP_TOOLS`, default 0); with `TEST_MCP_CHARGE=1`, the `destructiveHint` tool `charge`, which
//! refuses (`how: "refuse"`, -32602), fails internally (`"internal"`, -32603), dies before answering
//! (`"die"`) or succeeds. `tools/list` gives pages of `TEST_MCP_PAGE` tools (default: all).
//! A session that starts with `server/discover` is one of the 2026-07-28 revision: every later request
//! without the protocol version in its `_meta` is refused (-32602), as that revision says, and
//! `subscriptions/listen` is acknowledged and left open. The unlisted tool `job` answers with a task of
//! the 2026-07-28 tasks extension (`resultType: "task"`), which `tasks/get` gives completed, its result
//! inline.
//!
//! Files named by the environment, when set: `TEST_MCP_SENT` gets each line written, `TEST_MCP_LOG` each
//! line received, `TEST_MCP_PID` the process id. `TEST_MCP_LINGER=1` keeps running after the input ends. (A server that ignores SIGTERM: start it from a shell that
//! ignores it, `trap '' TERM; exec ...`.)

use serde_json::Value;
use std::io::{BufRead, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The `numbers` tool's result, exactly.
const NUMBERS: &str = r#"{"structuredContent":{"zeta":123456789012345678901234567890,"alpha":1e2,"mid":-0.0,"small":1.0E-7},"content":[{"type":"text","text":"caf\u00e9 \ud83d\ude00 \"quoted\""}],"isError":false}"#;
const INITIALIZE: &str = r#"{"serverInfo":{"version":"1.0.0","name":"test-mcp"},"protocolVersion":"2025-06-18","capabilities":{"tools":{"listChanged":false}}}"#;
/// The `job` tool's task, created and completed.
const JOB_CREATED: &str = r#"{"resultType":"task","taskId":"job-1","status":"working","createdAt":"2026-07-28T00:00:00Z","lastUpdatedAt":"2026-07-28T00:00:00Z","ttlMs":null,"pollIntervalMs":50}"#;
const JOB_DONE: &str = r#"{"resultType":"complete","taskId":"job-1","status":"completed","createdAt":"2026-07-28T00:00:00Z","lastUpdatedAt":"2026-07-28T00:00:01Z","ttlMs":null,"result":{"content":[{"type":"text","text":"job done"}],"structuredContent":{"big":123456789012345678901234567890}}}"#;
const DISCOVER: &str = r#"{"supportedVersions":["2026-07-28"],"serverInfo":{"version":"1.0.0","name":"test-mcp"},"capabilities":{"tools":{}},"resultType":"complete"}"#;

fn append(var: &str, line: &str) {
    if let Ok(path) = std::env::var(var) {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{line}");
        }
    }
}

fn tools() -> Vec<String> {
    let mut tools = vec![
        r#"{"name":"numbers","inputSchema":{"type":"object","properties":{}},"annotations":{"readOnlyHint":true}}"#.to_owned(),
        r#"{"name":"sleep","inputSchema":{"type":"object","properties":{"seconds":{"type":"number"}}}}"#.to_owned(),
        r#"{"name":"ask","inputSchema":{"type":"object","properties":{}}}"#.to_owned(),
    ];
    if std::env::var("TEST_MCP_CHARGE").as_deref() == Ok("1") {
        tools.push(r#"{"name":"charge","inputSchema":{"type":"object","properties":{"how":{"type":"string"}}},"annotations":{"destructiveHint":true}}"#.to_owned());
    }
    let extra: usize = std::env::var("TEST_MCP_TOOLS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    for i in 1..=extra {
        // Properties in an order that is not sorted; `required` lists them in that order.
        tools.push(format!(
            r#"{{"name":"tool_{i}","description":"Tool {i}.","inputSchema":{{"type":"object","properties":{{"zeta":{{"type":"string"}},"alpha":{{"type":"number","default":1e2}},"mid":{{"type":"integer","maximum":123456789012345678901234567890}}}},"required":["zeta","alpha","mid"]}}}}"#
        ));
    }
    tools
}

fn list_page(cursor: Option<&str>) -> String {
    let tools = tools();
    let page: usize = std::env::var("TEST_MCP_PAGE")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(tools.len());
    let start: usize = cursor
        .and_then(|c| c.strip_prefix("after-"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let end = (start + page).min(tools.len());
    let next = if end < tools.len() {
        format!(r#","nextCursor":"after-{end}""#)
    } else {
        String::new()
    };
    format!(r#"{{"tools":[{}]{next}}}"#, tools[start..end].join(","))
}

type Out = Arc<Mutex<std::io::Stdout>>;

fn send(out: &Out, line: &str) {
    append("TEST_MCP_SENT", line);
    if let Ok(mut o) = out.lock() {
        let _ = writeln!(o, "{line}");
        let _ = o.flush();
    }
}

fn result(id: &Value, result: &str) -> String {
    format!(r#"{{"id":{id},"jsonrpc":"2.0","result":{result}}}"#)
}

fn main() {
    if let Ok(path) = std::env::var("TEST_MCP_PID") {
        let _ = std::fs::write(path, std::process::id().to_string());
    }
    let out: Out = Arc::new(Mutex::new(std::io::stdout()));
    let stdin = std::io::stdin();
    let mut discovered = false;
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        append("TEST_MCP_LOG", &line);
        let Ok(msg) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let Some(id) = msg.get("id").cloned() else {
            continue; // a notification
        };
        let method = msg.get("method").and_then(Value::as_str);
        discovered |= method == Some("server/discover");
        let version = msg.pointer("/params/_meta/io.modelcontextprotocol~1protocolVersion");
        if discovered && version.is_none() && method.is_some() {
            send(
                &out,
                &format!(
                    r#"{{"jsonrpc":"2.0","id":{id},"error":{{"code":-32602,"message":"_meta must name the protocol version"}}}}"#
                ),
            );
            continue;
        }
        let answer = match method {
            Some("initialize") => result(&id, INITIALIZE),
            Some("server/discover") => result(&id, DISCOVER),
            Some("subscriptions/listen") => format!(
                r#"{{"jsonrpc":"2.0","method":"notifications/subscriptions/acknowledged","params":{{"notifications":{{}},"_meta":{{"io.modelcontextprotocol/subscriptionId":{id}}}}}}}"#
            ),
            Some("tools/list") => result(
                &id,
                &list_page(msg.pointer("/params/cursor").and_then(Value::as_str)),
            ),
            Some("ping") => result(&id, "{}"),
            Some("tasks/get") if msg.pointer("/params/taskId") == Some(&Value::from("job-1")) => {
                result(&id, JOB_DONE)
            }
            Some("tools/call") => match msg.pointer("/params/name").and_then(Value::as_str) {
                Some("numbers") => result(&id, NUMBERS),
                Some("job") => result(&id, JOB_CREATED),
                // A write whose fate the proxy must judge from how the server answers.
                Some("charge") => {
                    match msg.pointer("/params/arguments/how").and_then(Value::as_str) {
                        Some("refuse") => format!(
                            r#"{{"jsonrpc":"2.0","id":{id},"error":{{"code":-32602,"message":"no such account"}}}}"#
                        ),
                        Some("internal") => format!(
                            r#"{{"jsonrpc":"2.0","id":{id},"error":{{"code":-32603,"message":"the ledger failed mid-way"}}}}"#
                        ),
                        // Dies mid-call, before answering.
                        Some("die") => std::process::exit(9),
                        _ => result(&id, r#"{"content":[{"type":"text","text":"charged"}]}"#),
                    }
                }
                Some("sleep") => {
                    let seconds = msg
                        .pointer("/params/arguments/seconds")
                        .and_then(Value::as_f64)
                        .unwrap_or(1.0);
                    let out = out.clone();
                    std::thread::spawn(move || {
                        std::thread::sleep(Duration::from_secs_f64(seconds));
                        let text = format!(
                            r#"{{"content":[{{"type":"text","text":"slept {seconds}"}}]}}"#
                        );
                        send(&out, &result(&id, &text));
                    });
                    continue;
                }
                Some("ask") => match msg.pointer("/params/inputResponses/name/content/name") {
                    Some(name) => result(
                        &id,
                        &format!(
                            r#"{{"content":[{{"type":"text","text":"hello {}"}}]}}"#,
                            name.as_str().unwrap_or("?")
                        ),
                    ),
                    None => result(
                        &id,
                        r#"{"resultType":"input_required","inputRequests":{"name":{"method":"elicitation/create","params":{"message":"Your name?","requestedSchema":{"type":"object","properties":{"name":{"type":"string"}}}}}}}"#,
                    ),
                },
                _ => format!(
                    r#"{{"jsonrpc":"2.0","id":{id},"error":{{"code":-32602,"message":"unknown tool"}}}}"#
                ),
            },
            _ => format!(
                r#"{{"jsonrpc":"2.0","id":{id},"error":{{"code":-32601,"message":"method not found"}}}}"#
            ),
        };
        send(&out, &answer);
    }
    // A server that does not end when its input does (`TEST_MCP_LINGER=1`): only a signal ends it.
    if std::env::var("TEST_MCP_LINGER").as_deref() == Ok("1") {
        loop {
            std::thread::sleep(Duration::from_secs(60));
        }
    }
}
