//! `failcore proxy [--policy failcore.toml] -- <server command...>`: puts FailCore between any MCP client
//! and any MCP server over stdio, without changing either.
//!
//! Every message passes through unchanged, except `tools/call` requests: each is a step of the run (a
//! dynamic tool named after the server's tool), checked against the policy file, answered from the trace
//! when resuming or offline, and otherwise forwarded to the server, its result recorded. A refused call
//! never reaches the server; the client gets an MCP tool error (`isError: true`) whose structured content
//! names the policy and the rule. Batched or unparseable messages that could hide a `tools/call` are
//! refused rather than forwarded unchecked.

use crate::common::Result;
use failcore::{DynamicBody, DynamicTool, Effect, Error, Session};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};

#[derive(clap::Args)]
pub struct Args {
    /// The policy file for the proxied tools (TOML; JSON when it ends in `.json`).
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Resume an earlier run (`last` or a run id): calls it recorded are answered from its trace.
    #[arg(long, value_name = "RUN", conflicts_with = "offline")]
    resume: Option<String>,
    /// Replay an earlier run offline: calls are answered from its trace and never reach the server's tools.
    #[arg(long, value_name = "RUN")]
    offline: Option<String>,
    /// The MCP server to run, after `--`: its command and arguments.
    #[arg(last = true, required = true, value_name = "SERVER")]
    command: Vec<String>,
}

/// Where the proxied tools show in the trace (their module).
const ORIGIN: &str = "mcp proxy";

pub fn run(store: Option<&str>, args: Args) -> Result<ExitCode> {
    let mut builder = Session::from_env()?;
    if let Some(spec) = store {
        builder = builder.store(failcore::store_from_spec(spec)?);
    }
    if let Some(run) = &args.resume {
        builder = builder.resume(run.clone());
    }
    if let Some(run) = &args.offline {
        builder = builder.offline(run.clone());
    }
    if let Some(file) = &args.policy {
        // The same policy file as every session: named policies, `guard` for every call, `[tools]` to
        // attach a policy to a proxied tool by name.
        builder = builder.policy_file(file);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Config(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(async move {
        let session = builder.open()?;
        let outcome = proxy(&session, &args.command).await;
        let finished = session.finish().await;
        let code = outcome?;
        finished?;
        Ok(code)
    })
}

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Value>>>>;

/// What the proxy learns from the server's `tools/list` answers: each tool's effect, from its hints.
#[derive(Default)]
struct Catalog {
    /// Ids of `tools/list` requests in flight.
    listing: std::collections::HashSet<String>,
    effects: HashMap<String, Effect>,
}

type SharedCatalog = Arc<Mutex<Catalog>>;

impl Catalog {
    fn effect(catalog: &SharedCatalog, tool: &str) -> Effect {
        catalog
            .lock()
            .ok()
            .and_then(|c| c.effects.get(tool).copied())
            .unwrap_or(Effect::Unspecified)
    }

    /// Notes a `tools/list` request from the client.
    fn note_request(catalog: &SharedCatalog, line: &str) {
        let Ok(msg) = serde_json::from_str::<Value>(line) else {
            return;
        };
        if msg.get("method").and_then(Value::as_str) == Some("tools/list") {
            if let (Some(id), Ok(mut c)) = (msg.get("id"), catalog.lock()) {
                c.listing.insert(id.to_string());
            }
        }
    }

    /// Learns the effects from a server message, if it answers a `tools/list`.
    fn note_response(catalog: &SharedCatalog, line: &str) {
        let Ok(msg) = serde_json::from_str::<Value>(line) else {
            return;
        };
        let Some(id) = msg.get("id").filter(|_| msg.get("method").is_none()) else {
            return;
        };
        let Ok(mut c) = catalog.lock() else { return };
        if !c.listing.remove(&id.to_string()) {
            return;
        }
        let tools = msg
            .pointer("/result/tools")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for tool in tools {
            let Some(name) = tool.get("name").and_then(Value::as_str) else {
                continue;
            };
            let hint =
                |k: &str| tool.pointer(&format!("/annotations/{k}")) == Some(&Value::Bool(true));
            let effect = if hint("destructiveHint") {
                Effect::Write
            } else if hint("openWorldHint") {
                Effect::Network
            } else if hint("readOnlyHint") {
                Effect::Read
            } else {
                Effect::Unspecified
            };
            c.effects.insert(name.to_owned(), effect);
        }
    }
}

/// What to do with one line from the client.
enum FromClient {
    Forward,
    Call {
        id: Value,
        name: String,
        arguments: Value,
    },
    /// Answer the client directly (a refused message); `None`: drop it silently (a notification).
    Answer(Option<Value>),
}

fn classify(line: &str) -> FromClient {
    let Ok(msg) = serde_json::from_str::<Value>(line) else {
        // Unchecked bytes never reach the server: they could hold a call.
        return FromClient::Answer(Some(rpc_error(
            &Value::Null,
            -32700,
            "failcore proxy: not a JSON-RPC message",
        )));
    };
    match &msg {
        Value::Array(batch) => {
            let calls: Vec<&Value> = batch.iter().filter(|m| is_tools_call(m)).collect();
            if calls.is_empty() {
                FromClient::Forward
            } else {
                // A tools/call inside a batch is refused, with the rest of the batch.
                let answers: Vec<Value> = batch
                    .iter()
                    .filter_map(|m| m.get("id").filter(|id| !id.is_null()))
                    .map(|id| {
                        rpc_error(
                            id,
                            -32600,
                            "failcore proxy: tools/call cannot be batched; send it alone",
                        )
                    })
                    .collect();
                FromClient::Answer((!answers.is_empty()).then_some(Value::Array(answers)))
            }
        }
        m if is_tools_call(m) => {
            let id = m.get("id").cloned().unwrap_or(Value::Null);
            if id.is_null() {
                return FromClient::Answer(None);
            }
            let params = m.get("params");
            let Some(name) = params.and_then(|p| p.get("name")).and_then(Value::as_str) else {
                return FromClient::Answer(Some(rpc_error(
                    &id,
                    -32602,
                    "tools/call needs params.name",
                )));
            };
            let arguments = match params.and_then(|p| p.get("arguments")) {
                None | Some(Value::Null) => json!({}),
                Some(a @ Value::Object(_)) => a.clone(),
                Some(_) => {
                    return FromClient::Answer(Some(rpc_error(
                        &id,
                        -32602,
                        "tools/call arguments must be an object",
                    )))
                }
            };
            FromClient::Call {
                id,
                name: name.to_owned(),
                arguments,
            }
        }
        _ => FromClient::Forward,
    }
}

fn is_tools_call(m: &Value) -> bool {
    m.get("method").and_then(Value::as_str) == Some("tools/call")
}

fn rpc_error(id: &Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

/// A failed call as an MCP tool result: the message as text, the details as structured content.
fn tool_error(e: &Error) -> Value {
    let mut details = json!({"error": e.kind(), "message": e.to_string()});
    if let Error::Blocked {
        policy,
        rule,
        reason,
        ..
    } = e
    {
        details["policy"] = policy.as_str().into();
        details["rule"] = rule.as_str().into();
        details["reason"] = reason.as_str().into();
    }
    json!({
        "content": [{"type": "text", "text": e.to_string()}],
        "structuredContent": details,
        "isError": true,
    })
}

async fn proxy(session: &Session, command: &[String]) -> Result<ExitCode> {
    let Some((program, argv)) = command.split_first() else {
        return Err(Error::Config("no MCP server command after `--`".into()));
    };
    let mut child = tokio::process::Command::new(program)
        .args(argv)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Error::Config(format!("cannot start the MCP server `{program}`: {e}")))?;
    let (Some(mut server_in), Some(server_out)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(Error::Config("the MCP server's stdio is not piped".into()));
    };

    let pending: Pending = Arc::default();
    let catalog: SharedCatalog = Arc::default();
    let (to_server, mut server_rx) = mpsc::unbounded_channel::<String>();
    let (to_client, mut client_rx) = mpsc::unbounded_channel::<String>();

    let server_writer = tokio::spawn(async move {
        while let Some(line) = server_rx.recv().await {
            let sent = async {
                server_in.write_all(line.as_bytes()).await?;
                server_in.write_all(b"\n").await?;
                server_in.flush().await
            };
            if sent.await.is_err() {
                break;
            }
        }
        // Dropping stdin tells the server the client is gone.
    });
    let client_writer = tokio::spawn(async move {
        let mut out = tokio::io::stdout();
        while let Some(line) = client_rx.recv().await {
            let sent = async {
                out.write_all(line.as_bytes()).await?;
                out.write_all(b"\n").await?;
                out.flush().await
            };
            if sent.await.is_err() {
                break;
            }
        }
    });
    let server_reader = {
        let pending = pending.clone();
        let catalog = catalog.clone();
        let to_client = to_client.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(server_out).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some((tx, msg)) = intercepted(&line, &pending) {
                    let _ = tx.send(msg);
                    continue;
                }
                Catalog::note_response(&catalog, &line);
                if to_client.send(line).is_err() {
                    break;
                }
            }
            // The server is gone: calls waiting for it fail.
            if let Ok(mut p) = pending.lock() {
                p.clear();
            }
        })
    };

    let mut calls = tokio::task::JoinSet::new();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.trim().is_empty() {
            continue;
        }
        match classify(&line) {
            FromClient::Forward => {
                Catalog::note_request(&catalog, &line);
                let _ = to_server.send(line);
            }
            FromClient::Answer(Some(answer)) => {
                let _ = to_client.send(answer.to_string());
            }
            FromClient::Answer(None) => {}
            FromClient::Call {
                id,
                name,
                arguments,
            } => {
                let effect = Catalog::effect(&catalog, &name);
                let call = ProxiedCall {
                    effect,
                    id,
                    name,
                    arguments,
                    raw: line,
                    to_server: to_server.clone(),
                    pending: pending.clone(),
                };
                let to_client = to_client.clone();
                let session = session.clone();
                calls.spawn(async move {
                    let answer = session.scope(call.run()).await;
                    let _ = to_client.send(answer.to_string());
                });
            }
        }
    }

    // The client is gone: let the calls in flight finish, then close the server's stdin.
    while calls.join_next().await.is_some() {}
    drop(to_server);
    let _ = server_writer.await;
    let status = match tokio::time::timeout(Duration::from_secs(10), child.wait()).await {
        Ok(status) => status.ok(),
        Err(_) => {
            let _ = child.kill().await;
            None
        }
    };
    let _ = server_reader.await;
    drop(to_client);
    let _ = client_writer.await;
    Ok(match status.and_then(|s| s.code()) {
        Some(0) | None => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
    })
}

/// A response from the server to a call the proxy routed through the lifecycle.
fn intercepted(line: &str, pending: &Pending) -> Option<(oneshot::Sender<Value>, Value)> {
    let msg: Value = serde_json::from_str(line).ok()?;
    if msg.get("method").is_some() {
        return None;
    }
    let key = msg.get("id")?.to_string();
    let tx = pending.lock().ok()?.remove(&key)?;
    Some((tx, msg))
}

struct ProxiedCall {
    /// From the server's hints in `tools/list`, when it listed the tool.
    effect: Effect,
    id: Value,
    name: String,
    arguments: Value,
    raw: String,
    to_server: mpsc::UnboundedSender<String>,
    pending: Pending,
}

impl ProxiedCall {
    /// The JSON-RPC response to give the client.
    async fn run(self) -> Value {
        let ProxiedCall {
            effect,
            id,
            name,
            arguments,
            raw,
            to_server,
            pending,
        } = self;
        let tool = match DynamicTool::new(&name, ORIGIN, effect) {
            Ok(tool) => tool,
            Err(e) => return json!({"jsonrpc": "2.0", "id": id, "result": tool_error(&e)}),
        };
        // The server's own answer when it is not a success, given to the client as it was.
        let unsuccessful: Arc<Mutex<Option<Value>>> = Arc::default();
        let body: DynamicBody = {
            let key = id.to_string();
            let unsuccessful = unsuccessful.clone();
            Box::pin(async move {
                let (tx, rx) = oneshot::channel();
                pending
                    .lock()
                    .map_err(|_| "the proxy's table of calls is poisoned".to_owned())?
                    .insert(key, tx);
                to_server
                    .send(raw)
                    .map_err(|_| "the MCP server is gone".to_owned())?;
                let response = rx
                    .await
                    .map_err(|_| "the MCP server exited before answering".to_owned())?;
                let failure = match (response.get("result"), response.get("error")) {
                    (Some(result), None) if result.get("isError") != Some(&Value::Bool(true)) => {
                        return Ok(result.clone());
                    }
                    (Some(result), _) => text_of(result),
                    (None, Some(error)) => format!(
                        "MCP error {}: {}",
                        error.get("code").unwrap_or(&Value::Null),
                        error.get("message").and_then(Value::as_str).unwrap_or("")
                    ),
                    (None, None) => "the MCP server sent a response with no result".to_owned(),
                };
                if let Ok(mut u) = unsuccessful.lock() {
                    *u = Some(response);
                }
                Err(failure)
            })
        };
        match tool.call(&arguments, body).await {
            Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
            Err(e) => match unsuccessful.lock().ok().and_then(|mut u| u.take()) {
                Some(original) => original,
                None => json!({"jsonrpc": "2.0", "id": id, "result": tool_error(&e)}),
            },
        }
    }
}

/// The text of a tool result's content, for the trace.
fn text_of(result: &Value) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(line: &str) -> Option<Value> {
        match classify(line) {
            FromClient::Answer(a) => a,
            FromClient::Forward => panic!("forwarded: {line}"),
            FromClient::Call { .. } => panic!("routed as a call: {line}"),
        }
    }

    #[test]
    fn calls_are_routed_and_everything_else_forwarded() {
        let call = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"add","arguments":{"a":1}}}"#;
        match classify(call) {
            FromClient::Call {
                id,
                name,
                arguments,
            } => {
                assert_eq!(id, json!(7));
                assert_eq!(name, "add");
                assert_eq!(arguments, json!({"a": 1}));
            }
            _ => panic!("not routed"),
        }
        let no_args = r#"{"jsonrpc":"2.0","id":"x","method":"tools/call","params":{"name":"now"}}"#;
        assert!(
            matches!(classify(no_args), FromClient::Call { arguments, .. } if arguments == json!({}))
        );
        for line in [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#,
        ] {
            assert!(matches!(classify(line), FromClient::Forward), "{line}");
        }
    }

    #[test]
    fn what_could_hide_a_call_is_refused_not_forwarded() {
        let parse = answer("{not json").unwrap();
        assert_eq!(parse["error"]["code"], -32700);
        let batch = answer(
            r#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"rm"}},{"jsonrpc":"2.0","id":2,"method":"ping"}]"#,
        )
        .unwrap();
        assert_eq!(batch.as_array().unwrap().len(), 2);
        assert_eq!(batch[0]["error"]["code"], -32600);
        // A call sent as a notification cannot be answered, and is not forwarded either.
        assert!(
            answer(r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"rm"}}"#).is_none()
        );
        let bad_args = answer(
            r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"rm","arguments":[1]}}"#,
        )
        .unwrap();
        assert_eq!(bad_args["error"]["code"], -32602);
        let no_name =
            answer(r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{}}"#).unwrap();
        assert_eq!(no_name["id"], 4);
    }

    #[test]
    fn effects_are_learned_from_the_servers_tool_hints() {
        let catalog = SharedCatalog::default();
        Catalog::note_request(
            &catalog,
            r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
        );
        // A response to another request teaches nothing.
        Catalog::note_response(
            &catalog,
            r#"{"jsonrpc":"2.0","id":3,"result":{"tools":[{"name":"rm","annotations":{"readOnlyHint":true}}]}}"#,
        );
        assert_eq!(Catalog::effect(&catalog, "rm"), Effect::Unspecified);
        Catalog::note_response(
            &catalog,
            r#"{"jsonrpc":"2.0","id":2,"result":{"tools":[
                {"name":"rm","annotations":{"destructiveHint":true}},
                {"name":"ls","annotations":{"readOnlyHint":true}},
                {"name":"fetch","annotations":{"openWorldHint":true}},
                {"name":"misc"}]}}"#,
        );
        assert_eq!(Catalog::effect(&catalog, "rm"), Effect::Write);
        assert_eq!(Catalog::effect(&catalog, "ls"), Effect::Read);
        assert_eq!(Catalog::effect(&catalog, "fetch"), Effect::Network);
        assert_eq!(Catalog::effect(&catalog, "misc"), Effect::Unspecified);
        assert_eq!(Catalog::effect(&catalog, "unknown"), Effect::Unspecified);
    }
}
