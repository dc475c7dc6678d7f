//! A scripted OpenAI-compatible Chat Completions server on 127.0.0.1, for tests, the agent example and the
//! LLM-proxy bench: no key, no network. It also speaks the Anthropic Messages API (`POST .../messages`),
//! with the same script in that API's shapes.
//!
//! It answers from the conversation it is sent, so a resumed agent gets the same answers as the first run:
//! with no tool result yet, it asks for `forecast {"city": "Lisbon"}`; after one, for `add {"a": 21, "b": 4}`;
//! after two, it answers with the tool results it was given. Streamed requests (`"stream": true`) get the same
//! answers as server-sent events, usage last when `stream_options.include_usage` asks for it. Each turn
//! reports a fixed usage ([`usage_of_turn`]). It counts the requests that reach it, and can hold the
//! `n`-th one unanswered (to kill a client while a model call is in flight).
#![allow(dead_code)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
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
    /// Hold the request with this 1-based number unanswered (0: none).
    hold: AtomicUsize,
    held: Notify,
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Scripted {
    /// Starts the server on a free port of 127.0.0.1.
    pub async fn start() -> Scripted {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            requests: AtomicUsize::new(0),
            hold: AtomicUsize::new(0),
            held: Notify::new(),
        });
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let state = shared.clone();
                tokio::spawn(async move {
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

    /// How many requests have reached it.
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Holds the `n`-th request (counting from 1, all requests so far included) unanswered.
    pub fn hold_request(&self, n: usize) {
        self.state.hold.store(n, Ordering::SeqCst);
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
    if path.ends_with("/messages") {
        return anthropic(body.ok().as_deref());
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
    let messages = request["messages"].as_array().cloned().unwrap_or_default();
    let results: Vec<String> = messages
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| match &m["content"] {
            Value::String(s) => s.clone(),
            Value::Array(parts) => parts
                .iter()
                .filter_map(|p| p["text"].as_str())
                .collect::<Vec<_>>()
                .join(""),
            other => other.to_string(),
        })
        .collect();
    let turn = results.len() as u64;
    let (message, finish) = match turn {
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
