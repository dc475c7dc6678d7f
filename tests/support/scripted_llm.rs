//! A scripted OpenAI-compatible Chat Completions server on 127.0.0.1, for tests, the agent example and the
//! LLM-proxy bench: no key, no network. It also speaks the Anthropic Messages API (`POST .../messages`) and
//! the OpenAI Responses API (`POST .../responses`), with the same script in those APIs' shapes, answers
//! `POST .../embeddings`, `GET .../models` and `GET .../models/<id>`, and can be served over TLS ([`Scripted::start_with`]).
//!
//! It answers from the conversation it is sent, so a resumed agent gets the same answers as the first run:
//! with no tool result yet, it asks for `forecast {"city": "Lisbon"}`; after one, for `add {"a": 21, "b": 4}`;
//! after two, it answers with the tool results it was given. Streamed requests (`"stream": true`) get the same
//! answers as server-sent events, usage last when `stream_options.include_usage` asks for it. Each turn
//! reports a fixed usage ([`usage_of_turn`]). It counts the requests that reach it, and can hold the
//! `n`-th one unanswered (to kill a client while a model call is in flight), and the connections it
//! accepted (to see that a client reuses them).
//!
//! [`Scripted::script_files`] switches it to a second script, for agents over the official MCP filesystem
//! server: with no tool result yet, it asks to write a file with the offered tool whose name ends in
//! `write_file`; after one, to read `/etc/passwd` with the one ending in `read_text_file`; after two, it
//! answers with the tool results it was given. [`Scripted::hold_turn`] holds the first request of a turn.
#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// The model id the script answers as.
pub const MODEL: &str = "scripted-1";

/// The scripted server, running until dropped.
pub struct Scripted {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

struct State {
    requests: AtomicUsize,
    /// Connections accepted and set up (for TLS: handshakes completed).
    connections: AtomicUsize,
    /// Connections whose set-up failed (for TLS: handshakes the client refused).
    refused: AtomicUsize,
    /// When set, every request is answered `307` to this URL.
    redirect: Mutex<Option<String>>,
    /// Hold the request with this 1-based number unanswered (0: none).
    hold: AtomicUsize,
    held: Notify,
    files: Mutex<Option<FileScript>>,
}

/// The filesystem script: the file to write and its content, and the turn whose request is held.
#[derive(Clone)]
struct FileScript {
    path: String,
    content: String,
    hold_turn: Option<u64>,
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Scripted {
    /// Starts the server on a free port of 127.0.0.1.
    pub async fn start() -> Scripted {
        Self::start_with(|stream| async move { Ok(stream) }).await
    }

    /// Starts the server with every accepted connection first set up by `wrap` (a TLS handshake): a
    /// connection it fails is counted as refused and closed.
    pub async fn start_with<W, F, S>(wrap: W) -> Scripted
    where
        W: Fn(TcpStream) -> F + Send + Sync + 'static,
        F: Future<Output = std::io::Result<S>> + Send + 'static,
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            requests: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
            redirect: Mutex::new(None),
            hold: AtomicUsize::new(0),
            held: Notify::new(),
            files: Mutex::new(None),
        });
        let shared = state.clone();
        let wrap = Arc::new(wrap);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let state = shared.clone();
                let wrap = wrap.clone();
                tokio::spawn(async move {
                    let stream = match wrap(stream).await {
                        Ok(s) => s,
                        Err(_) => {
                            state.refused.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                    };
                    state.connections.fetch_add(1, Ordering::SeqCst);
                    let service = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(answer(&state, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Scripted { addr, state, task }
    }

    /// The base URL of its API: `http://127.0.0.1:<port>/v1`.
    pub fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The base URL of its API under another scheme: `https://127.0.0.1:<port>/v1`.
    pub fn url_as(&self, scheme: &str) -> String {
        format!("{scheme}://{}/v1", self.addr)
    }

    /// How many requests have reached it.
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// How many connections it accepted and set up.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// How many connections failed their set-up (a TLS handshake the client refused).
    pub fn refused(&self) -> usize {
        self.state.refused.load(Ordering::SeqCst)
    }

    /// Answers every request from now on with `307 Temporary Redirect` to `location`.
    pub fn redirect_to(&self, location: &str) {
        *self.state.redirect.lock().unwrap() = Some(location.to_owned());
    }

    /// Holds the `n`-th request (counting from 1, all requests so far included) unanswered.
    pub fn hold_request(&self, n: usize) {
        self.state.hold.store(n, Ordering::SeqCst);
    }

    /// Plays the filesystem script from now on: write `content` to `path`, read `/etc/passwd`, answer.
    pub fn script_files(&self, path: &str, content: &str) {
        *self.state.files.lock().unwrap() = Some(FileScript {
            path: path.to_owned(),
            content: content.to_owned(),
            hold_turn: None,
        });
    }

    /// With the filesystem script: holds the first request of `turn` (the number of tool results it
    /// carries) unanswered; later requests of that turn are answered.
    pub fn hold_turn(&self, turn: u64) {
        if let Some(f) = self.state.files.lock().unwrap().as_mut() {
            f.hold_turn = Some(turn);
        }
    }

    /// Waits until a held request has arrived.
    pub async fn held(&self) {
        self.state.held.notified().await;
    }
}

/// The usage the script reports for a turn (0-based): `(prompt, completion, cached)` tokens.
pub fn usage_of_turn(turn: u64) -> (u64, u64, u64) {
    (100 + 50 * turn, 10 + turn, 40 * turn)
}

async fn answer(state: &State, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let n = state.requests.fetch_add(1, Ordering::SeqCst) + 1;
    let path = req.uri().path().to_owned();
    let body = req.into_body().collect().await.map(|b| b.to_bytes());
    if state.hold.load(Ordering::SeqCst) == n {
        state.held.notify_one();
        std::future::pending::<()>().await;
    }
    let files = state.files.lock().unwrap().clone();
    if let (Some(f), Ok(b)) = (&files, &body) {
        let request = serde_json::from_slice::<Value>(b).unwrap_or(Value::Null);
        let turn = tool_results(&request).len() as u64;
        if f.hold_turn == Some(turn) {
            if let Some(f) = state.files.lock().unwrap().as_mut() {
                f.hold_turn = None;
            }
            state.held.notify_one();
            std::future::pending::<()>().await;
        }
    }
    if let Some(location) = state.redirect.lock().unwrap().clone() {
        return Response::builder()
            .status(307)
            .header("location", location)
            .body(Full::new(Bytes::new()))
            .unwrap();
    }
    if path.ends_with("/messages") {
        return anthropic(body.ok().as_deref());
    }
    if path.ends_with("/responses") {
        return responses(body.ok().as_deref(), files.as_ref());
    }
    if path.ends_with("/embeddings") {
        return embeddings(body.ok().as_deref());
    }
    if let Some((_, id)) = path.rsplit_once("/models/") {
        return reply(
            200,
            "application/json",
            json!({"id": id, "object": "model", "created": 1_700_000_000u64, "owned_by": "scripted"})
                .to_string(),
        );
    }
    if path.ends_with("/models") {
        return reply(
            200,
            "application/json",
            json!({"object": "list", "data": [
                {"id": MODEL, "object": "model", "created": 1_700_000_000u64, "owned_by": "scripted"}]})
            .to_string(),
        );
    }
    if !path.ends_with("/chat/completions") {
        return reply(
            404,
            "application/json",
            json!({"error": {"message": "not found"}}).to_string(),
        );
    }
    let Ok(request) = body
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .ok_or(())
    else {
        return reply(
            400,
            "application/json",
            json!({"error": {"message": "bad json"}}).to_string(),
        );
    };
    let results = tool_results(&request);
    let turn = results.len() as u64;
    let (message, finish) = match files.as_ref().map(|f| f.step(&request, &results)) {
        Some(Step::Call(id, name, args)) => (tool_call(&id, &name, args), "tool_calls"),
        Some(Step::Answer(text)) => (json!({"role": "assistant", "content": text}), "stop"),
        None => match turn {
            0 => (
                tool_call("call_forecast", "forecast", json!({"city": "Lisbon"})),
                "tool_calls",
            ),
            1 => (
                tool_call("call_add", "add", json!({"a": 21, "b": 4})),
                "tool_calls",
            ),
            _ => (
                json!({"role": "assistant", "content": format!("Done: {}.", results.join("; "))}),
                "stop",
            ),
        },
    };
    let (prompt, completion, cached) = usage_of_turn(turn);
    let usage = json!({"prompt_tokens": prompt, "completion_tokens": completion,
        "total_tokens": prompt + completion, "prompt_tokens_details": {"cached_tokens": cached}});
    let id = format!("chatcmpl-{turn}");
    if request["stream"] == true {
        let include_usage = request["stream_options"]["include_usage"] == true;
        return reply(
            200,
            "text/event-stream",
            stream(&id, &message, finish, include_usage.then_some(usage)),
        );
    }
    let body = json!({
        "id": id, "object": "chat.completion", "created": 1_700_000_000u64, "model": MODEL,
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": null}],
        "usage": usage,
    });
    reply(200, "application/json", body.to_string())
}

/// The tool results a request carries, in order: Chat Completions `tool` messages, Responses
/// `function_call_output` items.
fn tool_results(request: &Value) -> Vec<String> {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(""),
        other => other.to_string(),
    };
    let chat = request["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["role"] == "tool")
        .map(|m| text(&m["content"]));
    let responses = request["input"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|item| item["type"] == "function_call_output")
        .map(|item| text(&item["output"]));
    chat.chain(responses).collect()
}

/// A turn of the filesystem script: a tool call (its id, the tool's name, the arguments) or the answer.
enum Step {
    Call(String, String, Value),
    Answer(String),
}

impl FileScript {
    fn step(&self, request: &Value, results: &[String]) -> Step {
        // The tools offered (name, description), in either API's shape: a framework may prefix or rename
        // them, even beyond recognition (CrewAI cuts a long name and ends it with a hash): a tool is found
        // by the end of its name, else by the start of its description, as the filesystem server words it.
        let offered: Vec<(String, String)> = request["tools"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| {
                let f = if t["function"].is_object() {
                    &t["function"]
                } else {
                    t
                };
                let name = f["name"].as_str()?.to_owned();
                Some((
                    name,
                    f["description"].as_str().unwrap_or_default().to_owned(),
                ))
            })
            .collect();
        let tool = |suffix: &str, described: &str| {
            offered
                .iter()
                .find(|(n, _)| n.ends_with(suffix))
                .or_else(|| offered.iter().find(|(_, d)| d.starts_with(described)))
                .map(|(n, _)| n.clone())
                .unwrap_or_else(|| suffix.to_owned())
        };
        match results.len() {
            0 => Step::Call(
                "call_write".into(),
                tool("write_file", "Create a new file or completely overwrite"),
                json!({"path": self.path, "content": self.content}),
            ),
            1 => Step::Call(
                "call_read".into(),
                tool(
                    "read_text_file",
                    "Read the complete contents of a file from the file system",
                ),
                json!({"path": "/etc/passwd"}),
            ),
            _ => Step::Answer(format!("Done: {}.", results.join("; "))),
        }
    }
}

fn tool_call(id: &str, name: &str, args: Value) -> Value {
    json!({"role": "assistant", "content": null, "tool_calls": [{
        "id": id, "type": "function",
        "function": {"name": name, "arguments": args.to_string()}
    }]})
}

fn stream(id: &str, message: &Value, finish: &str, usage: Option<Value>) -> String {
    let chunk = |delta: Value, finish: Value| {
        json!({"id": id, "object": "chat.completion.chunk", "created": 1_700_000_000u64,
            "model": MODEL, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let mut events = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    if let Some(text) = message["content"].as_str() {
        // A few pieces, to be replayed one by one.
        let words: Vec<&str> = text.split_inclusive(' ').collect();
        for piece in words.chunks(2) {
            events.push(chunk(json!({"content": piece.concat()}), Value::Null));
        }
    }
    if let Some(calls) = message["tool_calls"].as_array() {
        for (i, call) in calls.iter().enumerate() {
            events.push(chunk(
                json!({"tool_calls": [{"index": i, "id": call["id"], "type": "function",
                    "function": {"name": call["function"]["name"], "arguments": ""}}]}),
                Value::Null,
            ));
            events.push(chunk(
                json!({"tool_calls": [{"index": i,
                    "function": {"arguments": call["function"]["arguments"]}}]}),
                Value::Null,
            ));
        }
    }
    events.push(chunk(json!({}), json!(finish)));
    if let Some(usage) = usage {
        events.push(
            json!({"id": id, "object": "chat.completion.chunk", "created": 1_700_000_000u64,
            "model": MODEL, "choices": [], "usage": usage}),
        );
    }
    let mut out = String::new();
    for e in events {
        out.push_str(&format!("data: {e}\n\n"));
    }
    out.push_str("data: [DONE]\n\n");
    out
}

fn reply(status: u16, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

/// The Anthropic Messages API: the same script, its turn counted from the `tool_result` blocks sent.
fn anthropic(body: Option<&[u8]>) -> Response<Full<Bytes>> {
    let Some(request) = body.and_then(|b| serde_json::from_slice::<Value>(b).ok()) else {
        return reply(
            400,
            "application/json",
            json!({"type": "error", "error": {"type": "invalid_request_error", "message": "bad json"}})
                .to_string(),
        );
    };
    let results: Vec<String> = request["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["content"].as_array())
        .flatten()
        .filter(|block| block["type"] == "tool_result")
        .map(|block| match &block["content"] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect();
    let turn = results.len() as u64;
    let (block, stop) = match turn {
        0 => (
            json!({"type": "tool_use", "id": "toolu_forecast", "name": "forecast", "input": {"city": "Lisbon"}}),
            "tool_use",
        ),
        1 => (
            json!({"type": "tool_use", "id": "toolu_add", "name": "add", "input": {"a": 21, "b": 4}}),
            "tool_use",
        ),
        _ => (
            json!({"type": "text", "text": format!("Done: {}.", results.join("; "))}),
            "end_turn",
        ),
    };
    let (prompt, completion, cached) = usage_of_turn(turn);
    // Anthropic counts cache reads apart from the other input tokens.
    let usage = json!({"input_tokens": prompt - cached, "output_tokens": completion,
        "cache_read_input_tokens": cached, "cache_creation_input_tokens": 0});
    let message = |content: Value, stop: Value, usage: Value| {
        json!({"id": format!("msg_{turn}"), "type": "message", "role": "assistant", "model": MODEL,
            "content": content, "stop_reason": stop, "stop_sequence": null, "usage": usage})
    };
    if request["stream"] != true {
        return reply(
            200,
            "application/json",
            message(json!([block]), json!(stop), usage).to_string(),
        );
    }
    let mut start_usage = usage.clone();
    start_usage["output_tokens"] = json!(1);
    let (empty, deltas) = if block["type"] == "text" {
        let words: Vec<String> = block["text"]
            .as_str()
            .unwrap_or_default()
            .split_inclusive(' ')
            .map(str::to_owned)
            .collect();
        let deltas = words
            .chunks(2)
            .map(|piece| json!({"type": "text_delta", "text": piece.concat()}))
            .collect::<Vec<_>>();
        (json!({"type": "text", "text": ""}), deltas)
    } else {
        let input = block["input"].to_string();
        let (a, b) = input.split_at(input.len() / 2);
        let deltas = [a, b]
            .iter()
            .map(|part| json!({"type": "input_json_delta", "partial_json": part}))
            .collect::<Vec<_>>();
        (
            json!({"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}),
            deltas,
        )
    };
    let mut events = vec![
        json!({"type": "message_start", "message": message(json!([]), Value::Null, start_usage)}),
        json!({"type": "content_block_start", "index": 0, "content_block": empty}),
        json!({"type": "ping"}),
    ];
    events.extend(
        deltas
            .into_iter()
            .map(|delta| json!({"type": "content_block_delta", "index": 0, "delta": delta})),
    );
    events.push(json!({"type": "content_block_stop", "index": 0}));
    events.push(
        json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null},
        "usage": {"output_tokens": completion}}),
    );
    events.push(json!({"type": "message_stop"}));
    let mut out = String::new();
    for e in events {
        out.push_str(&format!(
            "event: {}\ndata: {e}\n\n",
            e["type"].as_str().unwrap_or("")
        ));
    }
    reply(200, "text/event-stream", out)
}

/// The reasoning tokens the Responses API reports for a turn (0-based), part of its output tokens.
pub fn reasoning_of_turn(turn: u64) -> u64 {
    2 + turn
}

/// The vector every embedding request gets for each of its inputs.
pub const EMBEDDING: [f64; 4] = [0.25, -0.5, 0.125, 1.0];

/// `POST .../embeddings`: [`EMBEDDING`] for each input, and one token counted per input.
fn embeddings(body: Option<&[u8]>) -> Response<Full<Bytes>> {
    let request = body
        .and_then(|b| serde_json::from_slice::<Value>(b).ok())
        .unwrap_or(Value::Null);
    let inputs = match &request["input"] {
        Value::Array(items) => items.len(),
        Value::Null => 0,
        _ => 1,
    };
    let data: Vec<Value> = (0..inputs)
        .map(|i| json!({"object": "embedding", "index": i, "embedding": EMBEDDING}))
        .collect();
    reply(
        200,
        "application/json",
        json!({"object": "list", "data": data, "model": MODEL,
            "usage": {"prompt_tokens": inputs, "total_tokens": inputs}})
        .to_string(),
    )
}

/// The OpenAI Responses API: the same script, its turn counted from the `function_call_output` items of
/// the input. Function calls are output items of type `function_call`; a streamed reply sends their
/// arguments in two `response.function_call_arguments.delta` events, and the usage (with cached and
/// reasoning tokens) in `response.completed`.
fn responses(body: Option<&[u8]>, files: Option<&FileScript>) -> Response<Full<Bytes>> {
    let Some(request) = body.and_then(|b| serde_json::from_slice::<Value>(b).ok()) else {
        return reply(
            400,
            "application/json",
            json!({"error": {"message": "bad json", "type": "invalid_request_error"}}).to_string(),
        );
    };
    let results = tool_results(&request);
    let turn = results.len() as u64;
    let item = match files.map(|f| f.step(&request, &results)) {
        Some(Step::Call(id, name, args)) => {
            json!({"type": "function_call", "id": format!("fc_{turn}"),
            "call_id": id, "name": name, "arguments": args.to_string(), "status": "completed"})
        }
        Some(Step::Answer(text)) => {
            json!({"type": "message", "id": format!("msg_{turn}"), "role": "assistant",
            "status": "completed", "content": [{"type": "output_text", "annotations": [], "text": text}]})
        }
        None => match turn {
            0 => json!({"type": "function_call", "id": "fc_0", "call_id": "call_forecast",
            "name": "forecast", "arguments": json!({"city": "Lisbon"}).to_string(), "status": "completed"}),
            1 => json!({"type": "function_call", "id": "fc_1", "call_id": "call_add",
            "name": "add", "arguments": json!({"a": 21, "b": 4}).to_string(), "status": "completed"}),
            _ => {
                json!({"type": "message", "id": "msg_2", "role": "assistant", "status": "completed",
            "content": [{"type": "output_text", "annotations": [],
                "text": format!("Done: {}.", results.join("; "))}]})
            }
        },
    };
    let (prompt, completion, cached) = usage_of_turn(turn);
    let usage = json!({"input_tokens": prompt, "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": reasoning_of_turn(turn)},
        "total_tokens": prompt + completion});
    let response = |status: &str, output: Value, usage: Value| {
        json!({"id": format!("resp_{turn}"), "object": "response", "created_at": 1_700_000_000u64,
            "status": status, "model": MODEL, "output": output, "usage": usage,
            "error": null, "incomplete_details": null, "instructions": null,
            "parallel_tool_calls": true, "tool_choice": "auto",
            "tools": request.get("tools").cloned().unwrap_or(json!([])),
            "store": request.get("store").cloned().unwrap_or(json!(true))})
    };
    if request["stream"] != true {
        return reply(
            200,
            "application/json",
            response("completed", json!([item]), usage).to_string(),
        );
    }
    let item_id = item["id"].clone();
    let mut events = vec![
        json!({"type": "response.created", "response": response("in_progress", json!([]), Value::Null)}),
        json!({"type": "response.in_progress", "response": response("in_progress", json!([]), Value::Null)}),
    ];
    if item["type"] == "function_call" {
        let mut started = item.clone();
        started["arguments"] = json!("");
        started["status"] = json!("in_progress");
        events.push(
            json!({"type": "response.output_item.added", "output_index": 0, "item": started}),
        );
        let arguments = item["arguments"].as_str().unwrap_or_default();
        let (a, b) = arguments.split_at(arguments.len() / 2);
        for delta in [a, b] {
            events.push(json!({"type": "response.function_call_arguments.delta",
                "item_id": item_id, "output_index": 0, "delta": delta}));
        }
        events.push(json!({"type": "response.function_call_arguments.done",
            "item_id": item_id, "output_index": 0, "arguments": arguments}));
    } else {
        let text = item["content"][0]["text"].as_str().unwrap_or_default();
        let mut started = item.clone();
        started["content"] = json!([]);
        started["status"] = json!("in_progress");
        events.push(
            json!({"type": "response.output_item.added", "output_index": 0, "item": started}),
        );
        let part = |text: &str| json!({"type": "output_text", "text": text, "annotations": []});
        events.push(
            json!({"type": "response.content_part.added", "item_id": item_id,
            "output_index": 0, "content_index": 0, "part": part("")}),
        );
        let words: Vec<&str> = text.split_inclusive(' ').collect();
        for piece in words.chunks(2) {
            events.push(
                json!({"type": "response.output_text.delta", "item_id": item_id,
                "output_index": 0, "content_index": 0, "delta": piece.concat(), "logprobs": []}),
            );
        }
        events.push(
            json!({"type": "response.output_text.done", "item_id": item_id,
            "output_index": 0, "content_index": 0, "text": text, "logprobs": []}),
        );
        events.push(
            json!({"type": "response.content_part.done", "item_id": item_id,
            "output_index": 0, "content_index": 0, "part": part(text)}),
        );
    }
    events.push(json!({"type": "response.output_item.done", "output_index": 0, "item": item}));
    events.push(
        json!({"type": "response.completed", "response": response("completed", json!([item]), usage)}),
    );
    let mut out = String::new();
    for (n, mut e) in events.into_iter().enumerate() {
        e["sequence_number"] = json!(n);
        out.push_str(&format!(
            "event: {}\ndata: {e}\n\n",
            e["type"].as_str().unwrap_or("")
        ));
    }
    reply(200, "text/event-stream", out)
}
