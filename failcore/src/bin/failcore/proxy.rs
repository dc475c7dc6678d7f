//! `failcore proxy [--policy failcore.toml] -- <server command...>`: puts FailCore between any MCP client
//! and any MCP server over stdio, without changing either.
//!
//! Every message passes through unchanged, except `tools/call` requests: each is a step of the run (a
//! dynamic tool named after the server's tool), checked against the policy file, answered from the trace
//! when resuming or offline, and otherwise forwarded to the server, its result recorded. A refused call
//! never reaches the server; the client gets an MCP tool error (`isError: true`) whose structured content
//! names the policy and the rule. Every `tools/call` the proxy answers is in the trace, malformed ones
//! included (as failed, with the reason).
//!
//! Liveness: every request gets an answer. When the server exits (at start-up or later) or does not answer
//! within the timeout, every pending and later request gets a JSON-RPC error naming why, and the proxy
//! exits non-zero once the client is gone. Bytes that are not a JSON-RPC message (invalid UTF-8, an
//! oversized line, malformed JSON) get a JSON-RPC error and the session goes on. SIGTERM and SIGINT end
//! the run cleanly (its run_end written); a client that vanished without closing (its process died)
//! leaves the run without a run_end, as a crash.
//!
//! The run is opened at the first `tools/call`, so a session that only lists tools creates no run. It
//! records the server's description (its `initialize` answer and tool list) in the run_start, so an
//! offline replay answers `initialize` and `tools/list` itself and starts no server at all.

use crate::common::Result;
use failcore::store::{Body, RunReader, TraceStore};
use failcore::{DynamicBody, DynamicTool, Effect, Error, Session, SessionBuilder};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot, watch, OnceCell};

#[derive(clap::Args)]
pub struct Args {
    /// The policy file for the proxied tools (TOML; JSON when it ends in `.json`). Its `[proxy]` table may
    /// also set `store`, `resume`, `offline`, `run_key`, `timeout_seconds`, `durability`, `vault` and
    /// `redact_key_file`, for clients that start the proxy with a bare environment.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Resume an earlier run (`last` or a run id): calls it recorded are answered from its trace.
    #[arg(long, value_name = "RUN", conflicts_with = "offline")]
    resume: Option<String>,
    /// Replay an earlier run offline: every answer comes from its trace; no server is started.
    #[arg(long, value_name = "RUN")]
    offline: Option<String>,
    /// How long a request may wait for the server before it is answered with an error (seconds).
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<f64>,
    /// Record consecutive sessions into one run: a session with this key continues the key's open run of
    /// the same mode (one session at a time), and leaves it open when it ends.
    #[arg(long, value_name = "KEY")]
    run_key: Option<String>,
    /// How durable each record is before the call returns: buffered, flushed (default) or synced.
    #[arg(long, value_name = "LEVEL")]
    durability: Option<failcore::Durability>,
    /// Where redacted outputs are sealed (a directory), so that a resume serves them exactly; without one,
    /// such a call reaches the server again.
    #[arg(long, value_name = "DIR")]
    vault: Option<PathBuf>,
    /// The redaction key file (64 hex digits, or 32 raw bytes; created, mode 0600, if missing): kept out of
    /// the store.
    #[arg(long, value_name = "FILE")]
    redact_key_file: Option<PathBuf>,
    /// End the open run of --run-key (write its run_end) and exit; no server is started.
    #[arg(long, requires = "run_key")]
    end_run: bool,
    /// The MCP server to run, after `--`: its command and arguments (not needed with --offline).
    #[arg(last = true, value_name = "SERVER")]
    command: Vec<String>,
}

/// The recorder this proxy's runs name (`versions.recorder`).
const RECORDER: &str = "mcp-proxy";
/// Where the proxied tools show in the trace (their module).
const ORIGIN: &str = "mcp proxy";
/// The key of the server's description in the run_start's `versions`.
const DESCRIPTION: &str = "mcp_server";
/// The longest line accepted from either side; a longer one is refused and skipped.
const MAX_LINE: usize = 16 * 1024 * 1024;
/// The longest message text the proxy puts in an answer; longer texts are cut and marked.
const MAX_MESSAGE: usize = 1024;
/// How long a request may wait for the server by default.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the server has to exit after its stdin closes, and calls in flight to end on a signal.
const GRACE: Duration = Duration::from_secs(1);

/// Everything that configures a proxy session, after flags, the policy file and the environment.
struct Config {
    builder: SessionBuilder,
    store: Arc<dyn TraceStore>,
    /// The mode and the resolved run being replayed, if any.
    source: Option<(failcore::store::Mode, String)>,
    timeout: Duration,
    command: Vec<String>,
    /// Sessions with a run key leave their run open for the next one.
    keyed: bool,
    run_key: Option<String>,
    end_run: bool,
}

pub fn run(store: Option<&str>, args: Args) -> Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Config(format!("cannot start the async runtime: {e}")))?;
    let ending = args.end_run;
    let outcome = runtime.block_on(async move {
        match configure(store, args) {
            Ok(config) if config.end_run => end_run(config).await,
            Ok(config) => serve(config).await,
            // Not an MCP session: the error goes to the terminal.
            Err(e) if ending => Err(e),
            // The client still gets an answer that says why, instead of a closed connection.
            Err(e) => Ok(refuse_everything(&e.to_string()).await),
        }
    });
    // A read of stdin may still be blocked in its thread (after a signal): do not wait for it.
    runtime.shutdown_background();
    outcome
}

fn configure(store: Option<&str>, args: Args) -> Result<Config> {
    let file = match &args.policy {
        Some(path) => failcore::policy::proxy_settings(path)?,
        None => Default::default(),
    };
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let store_spec = store
        .map(str::to_owned)
        .or(file.store.clone())
        .or_else(|| env("FAILCORE_STORE"))
        .or_else(|| env("FAILCORE_DIR"));
    let store = failcore::store_from_spec(store_spec.as_deref().unwrap_or(".failcore"))?;
    let mut builder = Session::from_env()?.store(store.clone());
    // Flags, then the policy file, then the environment (already in `builder`).
    let requested = match (&args.resume, &args.offline) {
        (Some(run), _) => Some((failcore::store::Mode::Resume, run.clone())),
        (None, Some(run)) => Some((failcore::store::Mode::Offline, run.clone())),
        (None, None) => match (&file.resume, &file.offline) {
            (Some(run), _) => Some((failcore::store::Mode::Resume, run.clone())),
            (None, Some(run)) => Some((failcore::store::Mode::Offline, run.clone())),
            (None, None) => match (env("FAILCORE_RESUME"), env("FAILCORE_OFFLINE")) {
                (Some(run), _) => Some((failcore::store::Mode::Resume, run)),
                (None, Some(run)) => Some((failcore::store::Mode::Offline, run)),
                (None, None) => None,
            },
        },
    };
    let run_key = args
        .run_key
        .clone()
        .or(file.run_key.clone())
        .or_else(|| env("FAILCORE_RUN_KEY"));
    // The server proxied, known by its command line (kept as a hash: its arguments may hold secrets).
    let server = (!args.command.is_empty()).then(|| {
        let mut h = blake3::Hasher::new();
        for part in &args.command {
            h.update(part.as_bytes());
            h.update(b"\0");
        }
        h.finalize().to_hex()[..32].to_owned()
    });
    let me = crate::common::Recorder {
        name: RECORDER,
        server: server.as_deref(),
        run_key: run_key.as_deref(),
    };
    // `last` is resolved now, to the newest run of this proxy for this server: the run the proxy opens
    // later must not become its own source, nor a run of another recorder (the LLM proxy's) its source.
    let source = match requested {
        Some((mode, run)) => Some((mode, me.resolve(store.as_ref(), &run)?)),
        None => None,
    };
    builder = builder.recorder(RECORDER);
    if let Some(id) = &server {
        let program = std::path::Path::new(&args.command[0])
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        builder = builder
            .run_fact(crate::common::MCP_SERVER_ID, json!(id))
            .run_fact("mcp_server_program", json!(program));
    }
    match &source {
        Some((failcore::store::Mode::Offline, run)) => builder = builder.offline(run.clone()),
        Some((_, run)) => builder = builder.resume(run.clone()),
        None => {}
    }
    if let Some(path) = &args.policy {
        let sandbox = env("FAILCORE_SANDBOX").map(PathBuf::from);
        failcore::policy::check_policy_file(path, sandbox.as_ref())?;
        // The same policy file as every session: named policies, `guard` for every call, `[tools]` to
        // attach a policy to a proxied tool by name.
        builder = builder.policy_file(path);
    }
    let timeout = args
        .timeout
        .or(file.timeout_seconds)
        .map(|s| {
            Duration::try_from_secs_f64(s)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    Error::Config(format!("--timeout {s}: give a number of seconds > 0"))
                })
        })
        .transpose()?
        .unwrap_or(DEFAULT_TIMEOUT);
    if let Some(key) = &run_key {
        builder = builder.run_key(key.clone());
    }
    if let Some(d) = args.durability.or(file.durability) {
        builder = builder.durability(d);
    }
    if let Some(dir) = args.vault.or(file.vault) {
        builder = builder.vault(dir);
    }
    if let Some(key) = args.redact_key_file.or(file.redact_key_file) {
        builder = builder.redact_key_file(key);
    }
    let offline = matches!(source, Some((failcore::store::Mode::Offline, _)));
    if args.command.is_empty() && !offline && !args.end_run {
        return Err(Error::Config(
            "no MCP server command after `--` (only --offline runs without one)".into(),
        ));
    }
    Ok(Config {
        builder,
        store,
        source,
        timeout,
        command: args.command,
        keyed: run_key.is_some(),
        run_key,
        end_run: args.end_run,
    })
}

/// `--end-run`: writes the run_end of the key's open run.
async fn end_run(config: Config) -> Result<ExitCode> {
    let key = config.run_key.clone().unwrap_or_default();
    let found = failcore::find_run_by_key_of(config.store.as_ref(), &key, Some(RECORDER))?
        .ok_or_else(|| Error::Config(format!("no run has the run key {key:?}")))?;
    let report = failcore::store::verify(RunReader::open(config.store.as_ref(), &found.run)?);
    if report.complete {
        return Err(Error::Config(format!(
            "run {} of the run key {key:?} has ended already",
            found.run
        )));
    }
    let builder = match (found.mode, found.resumed_from) {
        (failcore::store::Mode::Resume, Some(from)) => config.builder.resume(from),
        (failcore::store::Mode::Offline, Some(from)) => config.builder.offline(from),
        (_, _) => config.builder,
    };
    let session = tokio::task::spawn_blocking(move || builder.open())
        .await
        .map_err(|e| Error::Config(format!("opening the run failed: {e}")))??;
    let summary = session.finish().await?;
    println!(
        "run {} ended: {} steps ({} ok, {} replayed, {} failed, {} blocked)",
        summary.run,
        summary.steps,
        summary.counts.ok,
        summary.counts.replayed,
        summary.counts.failed,
        summary.counts.blocked
    );
    Ok(ExitCode::SUCCESS)
}

/// When the proxy cannot start: every request is answered with the reason, and it exits 2 once the client
/// is gone.
async fn refuse_everything(why: &str) -> ExitCode {
    eprintln!("failcore proxy: {why}");
    let message = format!("failcore proxy could not start: {}", cut(why));
    let mut input = BufReader::new(tokio::io::stdin());
    let mut out = tokio::io::stdout();
    let mut buf = Vec::new();
    loop {
        match read_frame(&mut input, &mut buf).await {
            Frame::Eof => break,
            Frame::Line(line) => {
                let id = serde_json::from_slice::<Value>(&line)
                    .ok()
                    .and_then(|m| m.get("id").cloned());
                if let Some(id) = id.filter(|id| !id.is_null()) {
                    let answer = rpc_error(&id, -32002, &message);
                    let _ = out.write_all(format!("{answer}\n").as_bytes()).await;
                    let _ = out.flush().await;
                }
            }
            Frame::TooLong(_) | Frame::Error(_) => {}
        }
    }
    ExitCode::from(2)
}

/// One line from a peer.
enum Frame {
    Line(Vec<u8>),
    /// A line longer than [`MAX_LINE`] (skipped up to its end); its length so far.
    TooLong(usize),
    Error(std::io::Error),
    Eof,
}

/// Reads one line of at most [`MAX_LINE`] bytes, without buffering more than that.
async fn read_frame<R: AsyncBufRead + Unpin>(input: &mut R, buf: &mut Vec<u8>) -> Frame {
    buf.clear();
    let mut too_long = 0usize;
    loop {
        let chunk = match input.fill_buf().await {
            Ok(c) => c,
            Err(e) => return Frame::Error(e),
        };
        if chunk.is_empty() {
            return match (too_long, buf.is_empty()) {
                (0, true) => Frame::Eof,
                (0, false) => Frame::Line(std::mem::take(buf)),
                (n, _) => Frame::TooLong(n),
            };
        }
        let (part, done) = match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => (&chunk[..i], Some(i + 1)),
            None => (chunk, None),
        };
        if too_long > 0 || buf.len() + part.len() > MAX_LINE {
            too_long += buf.len() + part.len();
            buf.clear();
        } else {
            buf.extend_from_slice(part);
        }
        let consumed = done.unwrap_or(chunk.len());
        input.consume(consumed);
        if done.is_some() {
            if too_long > 0 {
                return Frame::TooLong(too_long);
            }
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
            return Frame::Line(std::mem::take(buf));
        }
    }
}

/// `s`, cut to [`MAX_MESSAGE`] bytes at a character boundary and marked as cut.
fn cut(s: &str) -> String {
    if s.len() <= MAX_MESSAGE {
        return s.to_owned();
    }
    let mut end = MAX_MESSAGE;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… (cut: {} bytes in all)", &s[..end], s.len())
}

/// A JSON value for the trace, replaced by a cut text when its JSON is longer than [`MAX_MESSAGE`].
fn bounded(v: &Value) -> Value {
    let text = v.to_string();
    if text.len() <= MAX_MESSAGE {
        v.clone()
    } else {
        Value::String(cut(&text))
    }
}

fn rpc_error(id: &Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": cut(message)}})
}

fn rpc_result(id: &Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// A failed call as an MCP tool result: the message as text, the details as structured content.
fn tool_error(e: &Error) -> Value {
    let message = cut(&e.to_string());
    let mut details = json!({"error": e.kind(), "message": message});
    if let Error::Blocked {
        policy,
        rule,
        reason,
        ..
    } = e
    {
        details["policy"] = policy.as_str().into();
        details["rule"] = rule.as_str().into();
        details["reason"] = cut(reason).into();
    }
    json!({
        "content": [{"type": "text", "text": message}],
        "structuredContent": details,
        "isError": true,
    })
}

/// What the proxy learns from the server: each tool's effect (from its hints), and its description.
#[derive(Default)]
struct Catalog {
    effects: HashMap<String, Effect>,
    /// The server's answer to `initialize`.
    initialize: Option<Value>,
    /// The server's tools, as `tools/list` gave them.
    tools: Option<Vec<Value>>,
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

    /// Learns the tools (and their effects) from a `tools/list` result.
    fn learn_tools(catalog: &SharedCatalog, result: &Value) {
        let Ok(mut c) = catalog.lock() else { return };
        let tools = result
            .get("tools")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for tool in &tools {
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
        c.tools = Some(tools);
    }

    /// The description recorded in the run_start, and answered from offline.
    fn description(catalog: &SharedCatalog) -> Value {
        let c = catalog.lock().unwrap_or_else(|e| e.into_inner());
        json!({"initialize": c.initialize, "tools": c.tools})
    }
}

/// What to do with one message from the client.
#[derive(Debug)]
enum FromClient {
    /// Forward it; `Some(id)` when it is a request that the server must answer.
    Forward(Option<Value>, Option<String>),
    Call {
        id: Value,
        name: String,
        arguments: Value,
    },
    /// A `tools/call` the proxy refuses before it reaches the server (recorded, then answered).
    BadCall {
        id: Option<Value>,
        name: String,
        arguments: Value,
        why: String,
        code: i64,
    },
    /// Answer the client directly; `None`: nothing to answer (a notification).
    Answer(Option<Value>),
    /// Several of the above (a batch holding calls).
    Batch(Vec<FromClient>),
}

fn classify(line: &[u8]) -> FromClient {
    let Ok(text) = std::str::from_utf8(line) else {
        return FromClient::Answer(Some(rpc_error(
            &Value::Null,
            -32700,
            "failcore proxy: the message is not valid UTF-8",
        )));
    };
    let Ok(msg) = serde_json::from_str::<Value>(text) else {
        // Unchecked bytes never reach the server: they could hold a call.
        return FromClient::Answer(Some(rpc_error(
            &Value::Null,
            -32700,
            "failcore proxy: not a JSON-RPC message",
        )));
    };
    match &msg {
        Value::Array(batch) if batch.iter().any(is_tools_call) => {
            // A tools/call inside a batch is refused, with the rest of the batch; each call is recorded.
            let why = "tools/call cannot be batched; send it alone";
            let parts = batch
                .iter()
                .filter_map(|m| {
                    let id = m.get("id").filter(|id| !id.is_null()).cloned();
                    if is_tools_call(m) {
                        let (name, arguments) = call_parts(m);
                        Some(FromClient::BadCall {
                            id,
                            name,
                            arguments,
                            why: why.into(),
                            code: -32600,
                        })
                    } else {
                        id.map(|id| {
                            FromClient::Answer(Some(rpc_error(
                                &id,
                                -32600,
                                &format!("failcore proxy: {why}"),
                            )))
                        })
                    }
                })
                .collect();
            FromClient::Batch(parts)
        }
        Value::Array(_) => FromClient::Forward(None, None),
        Value::Object(_) if is_tools_call(&msg) => {
            let id = msg.get("id").filter(|id| !id.is_null()).cloned();
            let (name, arguments) = call_parts(&msg);
            let params = msg.get("params");
            let bad = |why: &str| FromClient::BadCall {
                id: id.clone(),
                name: name.clone(),
                arguments: arguments.clone(),
                why: why.into(),
                code: -32602,
            };
            if id.is_none() {
                return bad("tools/call sent as a notification cannot be answered");
            }
            if params.and_then(|p| p.get("name")).and_then(Value::as_str) != Some(name.as_str()) {
                return bad("tools/call needs params.name, a string");
            }
            match params.and_then(|p| p.get("arguments")) {
                None | Some(Value::Null) | Some(Value::Object(_)) => FromClient::Call {
                    id: id.unwrap_or(Value::Null),
                    name,
                    arguments,
                },
                Some(_) => bad("tools/call arguments must be an object"),
            }
        }
        Value::Object(m) => {
            let id = m.get("id").filter(|id| !id.is_null()).cloned();
            let method = m.get("method").and_then(Value::as_str).map(str::to_owned);
            match (&id, &method) {
                // A response from the client (to a server request) or a notification: no answer due.
                (_, None) | (None, _) => FromClient::Forward(None, method),
                (Some(_), Some(_)) => FromClient::Forward(id, method),
            }
        }
        _ => FromClient::Answer(Some(rpc_error(
            &Value::Null,
            -32600,
            "failcore proxy: a JSON-RPC message is an object",
        ))),
    }
}

/// The tool name and the arguments of a `tools/call` as the trace records them: a missing or non-string
/// name is recorded as `tools/call`, arguments that are not an object under `invalid_arguments`.
fn call_parts(m: &Value) -> (String, Value) {
    let params = m.get("params");
    let name = params
        .and_then(|p| p.get("name"))
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .unwrap_or("tools/call")
        .to_owned();
    let arguments = match params.and_then(|p| p.get("arguments")) {
        None | Some(Value::Null) => json!({}),
        Some(a @ Value::Object(_)) => a.clone(),
        Some(other) => json!({ "invalid_arguments": bounded(other) }),
    };
    (name, arguments)
}

fn is_tools_call(m: &Value) -> bool {
    m.get("method").and_then(Value::as_str) == Some("tools/call")
}

/// Who waits for the server's answer to a request.
enum Waiter {
    /// The client: the answer is forwarded to it.
    Client { method: Option<String> },
    /// A proxied call, or the proxy's own request.
    Proxy(oneshot::Sender<std::result::Result<Value, String>>),
}

/// The link to the server: requests in flight, and why it is gone once it is.
#[derive(Clone)]
struct Upstream {
    to_server: mpsc::UnboundedSender<String>,
    to_client: mpsc::UnboundedSender<String>,
    pending: Arc<Mutex<HashMap<String, Waiter>>>,
    /// `Some(why)` once the server is gone.
    gone: watch::Receiver<Option<String>>,
    timeout: Duration,
}

impl Upstream {
    fn gone(&self) -> Option<String> {
        self.gone.borrow().clone()
    }

    /// Sends a request on behalf of the proxy (or a proxied call) and waits for its answer.
    async fn request(&self, id: &Value, line: String) -> std::result::Result<Value, String> {
        if let Some(why) = self.gone() {
            return Err(why);
        }
        let (tx, rx) = oneshot::channel();
        let key = id.to_string();
        self.pending
            .lock()
            .map_err(|_| "the proxy's table of requests is poisoned".to_owned())?
            .insert(key.clone(), Waiter::Proxy(tx));
        // Registered before the check, so that a server that dies now fails it either way.
        if let Some(why) = self.gone() {
            self.forget(&key);
            return Err(why);
        }
        if self.to_server.send(line).is_err() {
            self.forget(&key);
            return Err("the MCP server's input is closed".into());
        }
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(self
                .gone()
                .unwrap_or_else(|| "the MCP server did not answer".into())),
            Err(_) => {
                self.forget(&key);
                Err(format!(
                    "the MCP server did not answer within {} s",
                    self.timeout.as_secs_f64()
                ))
            }
        }
    }

    fn forget(&self, key: &str) {
        if let Ok(mut p) = self.pending.lock() {
            p.remove(key);
        }
    }

    /// Forwards a client request; its answer goes straight back to the client (or an error, in time).
    fn forward_request(&self, id: Value, method: Option<String>, line: String) {
        if let Some(why) = self.gone() {
            let _ = self
                .to_client
                .send(rpc_error(&id, -32000, &format!("failcore proxy: {why}")).to_string());
            return;
        }
        let key = id.to_string();
        {
            let Ok(mut pending) = self.pending.lock() else {
                return;
            };
            if pending.contains_key(&key) {
                let answer = rpc_error(
                    &id,
                    -32600,
                    "failcore proxy: a request with this id is already in flight",
                );
                let _ = self.to_client.send(answer.to_string());
                return;
            }
            pending.insert(key.clone(), Waiter::Client { method });
        }
        let _ = self.to_server.send(line);
        let this = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(this.timeout).await;
            let waited = this.pending.lock().ok().and_then(|mut p| p.remove(&key));
            if waited.is_some() {
                let why = format!(
                    "failcore proxy: the MCP server did not answer within {} s",
                    this.timeout.as_secs_f64()
                );
                let _ = this
                    .to_client
                    .send(rpc_error(&id, -32001, &why).to_string());
            }
        });
    }

    /// Routes one message from the server: an answer to its waiter, anything else to the client.
    fn route_from_server(&self, catalog: &SharedCatalog, line: Vec<u8>) {
        let Ok(text) = String::from_utf8(line) else {
            eprintln!("failcore proxy: dropped a message from the MCP server that is not UTF-8");
            return;
        };
        let Ok(msg) = serde_json::from_str::<Value>(&text) else {
            eprintln!(
                "failcore proxy: dropped a message from the MCP server that is not JSON: {}",
                cut(&text.escape_debug().to_string())
            );
            return;
        };
        let waiter = match msg.get("id") {
            Some(id) if msg.get("method").is_none() => self
                .pending
                .lock()
                .ok()
                .and_then(|mut p| p.remove(&id.to_string())),
            _ => None,
        };
        match waiter {
            Some(Waiter::Proxy(tx)) => {
                let _ = tx.send(Ok(msg));
            }
            Some(Waiter::Client { method }) => {
                if let Some(result) = msg.get("result") {
                    match method.as_deref() {
                        Some("initialize") => {
                            if let Ok(mut c) = catalog.lock() {
                                c.initialize = Some(result.clone());
                            }
                        }
                        Some("tools/list") if msg.pointer("/result/nextCursor").is_none() => {
                            Catalog::learn_tools(catalog, result)
                        }
                        _ => {}
                    }
                }
                let _ = self.to_client.send(text);
            }
            None => {
                let _ = self.to_client.send(text);
            }
        }
    }

    /// The server is gone: every request waiting for it is answered now.
    fn fail_pending(&self, why: &str) {
        let drained: Vec<(String, Waiter)> = match self.pending.lock() {
            Ok(mut p) => p.drain().collect(),
            Err(_) => return,
        };
        for (key, waiter) in drained {
            match waiter {
                Waiter::Proxy(tx) => {
                    let _ = tx.send(Err(why.to_owned()));
                }
                Waiter::Client { .. } => {
                    let id: Value = serde_json::from_str(&key).unwrap_or(Value::Null);
                    let answer = rpc_error(&id, -32000, &format!("failcore proxy: {why}"));
                    let _ = self.to_client.send(answer.to_string());
                }
            }
        }
    }
}

/// The run, opened at the first call.
struct LazyRun {
    builder: Mutex<Option<SessionBuilder>>,
    session: OnceCell<std::result::Result<Session, String>>,
    catalog: SharedCatalog,
    upstream: Option<Upstream>,
}

impl LazyRun {
    async fn session(&self) -> std::result::Result<Session, String> {
        self.session
            .get_or_init(|| async {
                self.describe_server().await;
                let builder = self
                    .builder
                    .lock()
                    .ok()
                    .and_then(|mut b| b.take())
                    .ok_or_else(|| "the run could not be opened".to_owned())?;
                let builder = builder.run_fact(DESCRIPTION, Catalog::description(&self.catalog));
                tokio::task::spawn_blocking(move || builder.open())
                    .await
                    .map_err(|e| format!("opening the run failed: {e}"))?
                    .map_err(|e| format!("the run could not be opened: {e}"))
            })
            .await
            .clone()
    }

    /// Makes sure the server's tool list is known before the run records it (the client may never have
    /// asked for it).
    async fn describe_server(&self) {
        let known = self
            .catalog
            .lock()
            .map(|c| c.tools.is_some())
            .unwrap_or(true);
        let Some(upstream) = self.upstream.as_ref().filter(|_| !known) else {
            return;
        };
        let mut tools = Vec::new();
        let mut cursor: Option<Value> = None;
        // A bounded number of pages: a server that pages forever cannot hold the call.
        for page in 0..64 {
            let id = json!(format!("failcore-proxy-list-{page}"));
            let params = match &cursor {
                Some(c) => json!({ "cursor": c }),
                None => json!({}),
            };
            let request =
                json!({"jsonrpc": "2.0", "id": id, "method": "tools/list", "params": params});
            let Ok(answer) = upstream.request(&id, request.to_string()).await else {
                return;
            };
            let Some(result) = answer.get("result") else {
                return;
            };
            tools.extend(
                result
                    .get("tools")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default(),
            );
            match result.get("nextCursor").filter(|c| !c.is_null()) {
                Some(next) => cursor = Some(next.clone()),
                None => break,
            }
        }
        Catalog::learn_tools(&self.catalog, &json!({ "tools": tools }));
    }
}

/// The server's description recorded in `run`'s run_start, if it has one.
fn recorded_description(store: &dyn TraceStore, run: &str) -> Result<Option<Value>> {
    let mut reader = RunReader::open(store, run)?;
    let first = reader
        .next()
        .transpose()
        .map_err(|e| Error::Config(format!("run {run} cannot be read: {e}")))?;
    Ok(match first.map(|r| r.record.body) {
        Some(Body::RunStart(start)) => start
            .versions
            .get(DESCRIPTION)
            .filter(|d| d.get("initialize").is_some_and(|i| !i.is_null()))
            .cloned(),
        _ => None,
    })
}

async fn serve(config: Config) -> Result<ExitCode> {
    let Config {
        builder,
        store,
        source,
        timeout,
        command,
        keyed,
        ..
    } = config;
    let (to_client, mut client_rx) = mpsc::unbounded_channel::<String>();
    let (close_client, mut closing) = oneshot::channel::<()>();
    let client_writer = tokio::spawn(async move {
        let mut out = tokio::io::stdout();
        loop {
            let line = tokio::select! {
                biased;
                line = client_rx.recv() => line,
                // Closing: what is queued still goes.
                _ = &mut closing => client_rx.try_recv().ok(),
            };
            let Some(line) = line else { break };
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

    let catalog = SharedCatalog::default();
    // Offline with a recorded description: no server at all.
    let offline_description = match &source {
        Some((failcore::store::Mode::Offline, run)) => recorded_description(store.as_ref(), run)?,
        _ => None,
    };
    if let Some(d) = &offline_description {
        if let Ok(mut c) = catalog.lock() {
            c.initialize = d.get("initialize").cloned();
        }
        if let Some(tools) = d.get("tools").filter(|t| t.is_array()) {
            Catalog::learn_tools(&catalog, &json!({ "tools": tools }));
        }
    } else if command.is_empty() {
        return Err(Error::Config(format!(
            "run {} has no recorded server description (it was recorded without one): start the \
             server, after `--`",
            source.as_ref().map(|(_, r)| r.as_str()).unwrap_or("?")
        )));
    }

    let mut server = if offline_description.is_none() {
        Some(start_server(
            &command,
            to_client.clone(),
            catalog.clone(),
            timeout,
        ))
    } else {
        None
    };
    let upstream = server.as_ref().map(|s| s.upstream.clone());
    let run = Arc::new(LazyRun {
        builder: Mutex::new(Some(builder)),
        session: OnceCell::new(),
        catalog: catalog.clone(),
        upstream: upstream.clone(),
    });

    let parent = parent_id();
    let mut signals = Signals::new()?;
    let mut calls = tokio::task::JoinSet::new();
    let mut input = BufReader::new(tokio::io::stdin());
    let mut buf = Vec::new();
    let mut gone = upstream.as_ref().map(|u| u.gone.clone());
    let mut signalled = None;
    let ended = loop {
        let frame = tokio::select! {
            frame = read_frame(&mut input, &mut buf) => frame,
            sig = signals.recv() => { signalled = Some(sig); break Ended::Signal; }
            // Reap finished calls as they end, so the set stays small.
            Some(_) = calls.join_next(), if !calls.is_empty() => continue,
            // The server is gone: pending requests were answered; later ones are answered at once.
            Ok(()) = async { match gone.as_mut() { Some(g) => g.changed().await, None => std::future::pending().await } } => {
                gone = None;
                continue;
            }
        };
        let line = match frame {
            Frame::Eof => break Ended::ClientClosed,
            Frame::Error(e) => {
                eprintln!("failcore proxy: cannot read from the client: {e}");
                break Ended::ClientClosed;
            }
            Frame::TooLong(n) => {
                let why = format!(
                    "failcore proxy: message of {n} bytes refused (at most {MAX_LINE} bytes)"
                );
                let _ = to_client.send(rpc_error(&Value::Null, -32600, &why).to_string());
                continue;
            }
            Frame::Line(line) => line,
        };
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let action = classify(&line);
        handle(
            action,
            line,
            &run,
            &catalog,
            upstream.as_ref(),
            &to_client,
            &mut calls,
        );
    };

    // Calls in flight end first (answered, recorded): on a signal within a bounded time.
    let drain = async { while calls.join_next().await.is_some() {} };
    match ended {
        Ended::Signal => {
            if tokio::time::timeout(GRACE, drain).await.is_err() {
                calls.abort_all();
                while calls.join_next().await.is_some() {}
            }
        }
        Ended::ClientClosed => drain.await,
    }
    // A client whose process died closed nothing on purpose: the run is left as a crash leaves it.
    let crashed = matches!(ended, Ended::ClientClosed) && parent_died(parent).await;
    let mut finish_error = None;
    if let Some(Ok(session)) = run.session.get() {
        if crashed {
            eprintln!(
                "failcore proxy: the client's process ended without closing the session; run {} \
                 is left without a run_end, as after a crash",
                session.run_id()
            );
        } else {
            // A keyed run goes on in the next session: this one ends without the run_end.
            let ended = if keyed {
                session.close_open().await
            } else {
                session.finish().await.map(|_| ())
            };
            if let Err(e) = ended {
                finish_error = Some(e);
            }
        }
    }
    let upstream_failure = upstream.as_ref().and_then(Upstream::gone);
    drop(upstream);
    let status = match server.take() {
        Some(s) => s.stop().await,
        None => None,
    };
    drop(run);
    drop(to_client);
    // Answers already queued are written; timers of requests that can no longer be answered may hold
    // the channel open, so the writer is told to stop after them.
    let _ = close_client.send(());
    let _ = tokio::time::timeout(GRACE, client_writer).await;
    if let Some(e) = finish_error {
        return Err(e);
    }
    Ok(match (signalled, upstream_failure) {
        (Some(sig), _) => ExitCode::from(128u8.saturating_add(sig)),
        (None, Some(why)) if !crashed => {
            eprintln!("failcore proxy: {why}");
            ExitCode::from(3)
        }
        _ => match status {
            Some(code) if code != 0 => ExitCode::from(u8::try_from(code).unwrap_or(1)),
            _ => ExitCode::SUCCESS,
        },
    })
}

enum Ended {
    ClientClosed,
    Signal,
}

fn handle(
    action: FromClient,
    line: Vec<u8>,
    run: &Arc<LazyRun>,
    catalog: &SharedCatalog,
    upstream: Option<&Upstream>,
    to_client: &mpsc::UnboundedSender<String>,
    calls: &mut tokio::task::JoinSet<()>,
) {
    match action {
        FromClient::Forward(id, method) => {
            let text = String::from_utf8(line).unwrap_or_default();
            match upstream {
                Some(up) => match id {
                    Some(id) => up.forward_request(id, method, text),
                    None => {
                        let _ = up.to_server.send(text);
                    }
                },
                // Offline, no server: answered from the recorded description.
                None => {
                    if let Some(id) = id {
                        let answer = offline_answer(catalog, &id, method.as_deref());
                        let _ = to_client.send(answer.to_string());
                    }
                }
            }
        }
        FromClient::Answer(Some(answer)) => {
            let _ = to_client.send(answer.to_string());
        }
        FromClient::Answer(None) => {}
        FromClient::Batch(parts) => {
            for part in parts {
                handle(part, Vec::new(), run, catalog, upstream, to_client, calls);
            }
        }
        FromClient::BadCall {
            id,
            name,
            arguments,
            why,
            code,
        } => {
            let run = run.clone();
            let to_client = to_client.clone();
            calls.spawn(async move {
                // Recorded like any call (policies first, then the refusal), so that the trace is the
                // complete record of what the client asked.
                if let Ok(session) = run.session().await {
                    let refusal = why.clone();
                    let body: DynamicBody = Box::pin(async move { Err(refusal) });
                    if let Ok(tool) = DynamicTool::new(&name, ORIGIN, Effect::Unspecified) {
                        let _ = session.scope(tool.call(&arguments, body)).await;
                    }
                }
                if let Some(id) = id {
                    let answer = rpc_error(&id, code, &format!("failcore proxy: {why}"));
                    let _ = to_client.send(answer.to_string());
                }
            });
        }
        FromClient::Call {
            id,
            name,
            arguments,
        } => {
            let call = ProxiedCall {
                effect: Catalog::effect(catalog, &name),
                id,
                name,
                arguments,
                raw: String::from_utf8(line).unwrap_or_default(),
                upstream: upstream.cloned(),
            };
            let run = run.clone();
            let to_client = to_client.clone();
            calls.spawn(async move {
                let answer = match run.session().await {
                    Ok(session) => session.scope(call.run()).await,
                    Err(why) => rpc_error(&call.id, -32002, &format!("failcore proxy: {why}")),
                };
                let _ = to_client.send(answer.to_string());
            });
        }
    }
}

/// Offline without a server: `initialize`, `tools/list` and `ping` from the recorded run.
fn offline_answer(catalog: &SharedCatalog, id: &Value, method: Option<&str>) -> Value {
    let c = catalog.lock().unwrap_or_else(|e| e.into_inner());
    match method {
        Some("initialize") => match &c.initialize {
            Some(init) => rpc_result(id, init.clone()),
            None => rpc_error(id, -32002, "failcore proxy: the run recorded no initialize"),
        },
        Some("tools/list") => {
            rpc_result(id, json!({ "tools": c.tools.clone().unwrap_or_default() }))
        }
        Some("ping") => rpc_result(id, json!({})),
        Some(other) => rpc_error(
            id,
            -32601,
            &format!("failcore proxy (offline, no server): `{other}` is not replayed"),
        ),
        None => rpc_error(id, -32600, "failcore proxy: a request needs a method"),
    }
}

/// The server process and the tasks that talk to it.
struct Server {
    upstream: Upstream,
    exited: Option<oneshot::Receiver<Option<i32>>>,
    writer: tokio::task::JoinHandle<()>,
    /// Closes the server's stdin (after what is queued).
    close: Option<oneshot::Sender<()>>,
    kill: Option<oneshot::Sender<()>>,
}

fn start_server(
    command: &[String],
    to_client: mpsc::UnboundedSender<String>,
    catalog: SharedCatalog,
    timeout: Duration,
) -> Server {
    let (gone_tx, gone) = watch::channel(None);
    let (to_server, mut server_rx) = mpsc::unbounded_channel::<String>();
    let upstream = Upstream {
        to_server,
        to_client,
        pending: Arc::default(),
        gone,
        timeout,
    };
    let none = String::new();
    let (program, argv) = command.split_first().unwrap_or((&none, &[]));
    let spawned = tokio::process::Command::new(program)
        .args(argv)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            let why = format!("the MCP server `{program}` could not be started: {e}");
            eprintln!("failcore proxy: {why}");
            let _ = gone_tx.send(Some(why));
            return Server {
                upstream,
                exited: None,
                writer: tokio::spawn(async {}),
                close: None,
                kill: None,
            };
        }
    };
    let (server_in, server_out) = (child.stdin.take(), child.stdout.take());
    let (close, mut close_rx) = oneshot::channel::<()>();
    let writer = tokio::spawn(async move {
        let Some(mut server_in) = server_in else {
            return;
        };
        loop {
            let line = tokio::select! {
                biased;
                line = server_rx.recv() => line,
                // Closing: what is queued still goes, then stdin closes.
                _ = &mut close_rx => server_rx.try_recv().ok(),
            };
            let Some(line) = line else { break };
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
    // The child is watched by one task: it reports the exit status, or kills the child when asked.
    let (exit_tx, exited) = oneshot::channel();
    let (kill, kill_rx) = oneshot::channel::<()>();
    let (status_tx, status_rx) = watch::channel::<Option<Option<i32>>>(None);
    tokio::spawn(async move {
        let status = tokio::select! {
            s = child.wait() => s.ok(),
            _ = kill_rx => {
                let _ = child.start_kill();
                child.wait().await.ok()
            }
        };
        let code = status.map(|s| s.code().unwrap_or(128 + signal_of(&s)));
        let _ = status_tx.send(Some(code));
        let _ = exit_tx.send(code);
    });
    let reader_upstream = upstream.clone();
    tokio::spawn(async move {
        if let Some(out) = server_out {
            let mut out = BufReader::new(out);
            let mut buf = Vec::new();
            loop {
                match read_frame(&mut out, &mut buf).await {
                    Frame::Line(line) => reader_upstream.route_from_server(&catalog, line),
                    Frame::TooLong(n) => eprintln!(
                        "failcore proxy: dropped a message of {n} bytes from the MCP server (at most {MAX_LINE})"
                    ),
                    Frame::Eof | Frame::Error(_) => break,
                }
            }
        }
        // The server's output is closed: it is gone. Its exit status names why, if it comes soon.
        let mut status_rx = status_rx;
        let code = tokio::time::timeout(GRACE, async {
            loop {
                if let Some(code) = *status_rx.borrow() {
                    return code;
                }
                if status_rx.changed().await.is_err() {
                    return None;
                }
            }
        })
        .await
        .ok()
        .flatten();
        let why = match code {
            Some(code) => format!("the MCP server exited with status {code}"),
            None => "the MCP server closed its output".to_owned(),
        };
        let _ = gone_tx.send(Some(why.clone()));
        reader_upstream.fail_pending(&why);
    });
    Server {
        upstream,
        exited: Some(exited),
        writer,
        close: Some(close),
        kill: Some(kill),
    }
}

#[cfg(unix)]
fn signal_of(status: &std::process::ExitStatus) -> i32 {
    std::os::unix::process::ExitStatusExt::signal(status).unwrap_or(0)
}

#[cfg(not(unix))]
fn signal_of(_: &std::process::ExitStatus) -> i32 {
    0
}

impl Server {
    /// Closes the server's stdin, gives it [`GRACE`] to exit, then kills it. Its exit code, if any.
    async fn stop(mut self) -> Option<i32> {
        drop(self.upstream);
        if let Some(close) = self.close.take() {
            let _ = close.send(());
        }
        let _ = tokio::time::timeout(GRACE, &mut self.writer).await;
        self.writer.abort();
        let mut exited = self.exited.take()?;
        match tokio::time::timeout(GRACE, &mut exited).await {
            Ok(code) => code.ok().flatten(),
            Err(_) => {
                if let Some(kill) = self.kill.take() {
                    let _ = kill.send(());
                }
                let _ = exited.await;
                None
            }
        }
    }
}

/// SIGTERM and SIGINT.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let io = |e: std::io::Error| Error::Config(format!("cannot handle signals: {e}"));
            Ok(Signals {
                term: signal(SignalKind::terminate()).map_err(io)?,
                int: signal(SignalKind::interrupt()).map_err(io)?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    /// The next signal's number.
    async fn recv(&mut self) -> u8 {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => 15,
                _ = self.int.recv() => 2,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            2
        }
    }
}

fn parent_id() -> Option<u32> {
    #[cfg(unix)]
    {
        Some(std::os::unix::process::parent_id()).filter(|p| *p > 1)
    }
    #[cfg(not(unix))]
    None
}

/// Whether the process that started the proxy has died (the proxy was handed to another parent). The
/// kernel closes a dying process's pipes before it re-parents its children, so this looks a little while.
async fn parent_died(parent: Option<u32>) -> bool {
    let Some(parent) = parent else { return false };
    for _ in 0..10 {
        if parent_id() != Some(parent) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    false
}

struct ProxiedCall {
    /// From the server's hints in `tools/list`, when it listed the tool.
    effect: Effect,
    id: Value,
    name: String,
    arguments: Value,
    raw: String,
    /// `None` offline: no server.
    upstream: Option<Upstream>,
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
            upstream,
        } = self;
        let tool = match DynamicTool::new(&name, ORIGIN, effect) {
            Ok(tool) => tool,
            Err(e) => return rpc_result(&id, tool_error(&e)),
        };
        // The server's own answer when it is not a success, given to the client as it was.
        let unsuccessful: Arc<Mutex<Option<Value>>> = Arc::default();
        let body: DynamicBody = {
            let id = id.clone();
            let unsuccessful = unsuccessful.clone();
            Box::pin(async move {
                let Some(upstream) = upstream else {
                    return Err("offline: no MCP server to run the tool".to_owned());
                };
                let response = upstream.request(&id, raw).await?;
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
            Ok(result) => rpc_result(&id, result),
            Err(e) => match unsuccessful.lock().ok().and_then(|mut u| u.take()) {
                Some(original) => original,
                None => rpc_result(&id, tool_error(&e)),
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
        match classify(line.as_bytes()) {
            FromClient::Answer(a) => a,
            other => panic!("not answered directly: {line}: {other:?}"),
        }
    }

    #[test]
    fn calls_are_routed_and_everything_else_forwarded() {
        let call = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"add","arguments":{"a":1}}}"#;
        match classify(call.as_bytes()) {
            FromClient::Call {
                id,
                name,
                arguments,
            } => {
                assert_eq!(id, json!(7));
                assert_eq!(name, "add");
                assert_eq!(arguments, json!({"a": 1}));
            }
            other => panic!("not routed: {other:?}"),
        }
        let no_args = r#"{"jsonrpc":"2.0","id":"x","method":"tools/call","params":{"name":"now"}}"#;
        assert!(matches!(
            classify(no_args.as_bytes()),
            FromClient::Call { arguments, .. } if arguments == json!({})
        ));
        let list = classify(br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#);
        assert!(
            matches!(&list, FromClient::Forward(Some(id), Some(m)) if *id == json!(1) && m == "tools/list"),
            "{list:?}"
        );
        for line in [
            r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#,
            r#"{"jsonrpc":"2.0","id":5,"result":{}}"#,
        ] {
            assert!(
                matches!(classify(line.as_bytes()), FromClient::Forward(None, _)),
                "{line}"
            );
        }
    }

    #[test]
    fn what_could_hide_a_call_is_refused_and_calls_are_recorded() {
        let parse = answer("{not json").unwrap();
        assert_eq!(parse["error"]["code"], -32700);
        let utf8 = classify(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"\xff\"}");
        assert!(
            matches!(&utf8, FromClient::Answer(Some(a)) if a["error"]["code"] == -32700),
            "{utf8:?}"
        );
        assert_eq!(answer("42").unwrap()["error"]["code"], -32600);
        let batch = classify(
            br#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"rm"}},{"jsonrpc":"2.0","id":2,"method":"ping"}]"#,
        );
        let FromClient::Batch(parts) = batch else {
            panic!("{batch:?}")
        };
        assert!(matches!(&parts[0], FromClient::BadCall { name, id: Some(_), .. } if name == "rm"));
        assert!(matches!(&parts[1], FromClient::Answer(Some(a)) if a["error"]["code"] == -32600));
        // A call sent as a notification cannot be answered, and is not forwarded either: it is recorded.
        let note = classify(br#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"rm"}}"#);
        assert!(
            matches!(note, FromClient::BadCall { id: None, .. }),
            "{note:?}"
        );
        let bad_args = classify(
            br#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"rm","arguments":[1]}}"#,
        );
        assert!(
            matches!(&bad_args, FromClient::BadCall { arguments, code: -32602, .. }
                if *arguments == json!({"invalid_arguments": [1]})),
            "{bad_args:?}"
        );
        let no_name = classify(br#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{}}"#);
        assert!(
            matches!(&no_name, FromClient::BadCall { name, .. } if name == "tools/call"),
            "{no_name:?}"
        );
    }

    #[test]
    fn effects_are_learned_from_the_servers_tool_hints() {
        let catalog = SharedCatalog::default();
        Catalog::learn_tools(
            &catalog,
            &json!({"tools":[
                {"name":"rm","annotations":{"destructiveHint":true}},
                {"name":"ls","annotations":{"readOnlyHint":true}},
                {"name":"fetch","annotations":{"openWorldHint":true}},
                {"name":"misc"}]}),
        );
        assert_eq!(Catalog::effect(&catalog, "rm"), Effect::Write);
        assert_eq!(Catalog::effect(&catalog, "ls"), Effect::Read);
        assert_eq!(Catalog::effect(&catalog, "fetch"), Effect::Network);
        assert_eq!(Catalog::effect(&catalog, "misc"), Effect::Unspecified);
        assert_eq!(Catalog::effect(&catalog, "unknown"), Effect::Unspecified);
    }

    #[tokio::test]
    async fn frames_are_bounded_and_the_reader_goes_on() {
        let mut big = vec![b'x'; MAX_LINE + 10];
        big.extend_from_slice(b"\n{\"a\":1}\r\nlast");
        let mut input = BufReader::new(&big[..]);
        let mut buf = Vec::new();
        assert!(
            matches!(read_frame(&mut input, &mut buf).await, Frame::TooLong(n) if n == MAX_LINE + 10)
        );
        assert!(
            matches!(read_frame(&mut input, &mut buf).await, Frame::Line(l) if l == b"{\"a\":1}")
        );
        assert!(matches!(read_frame(&mut input, &mut buf).await, Frame::Line(l) if l == b"last"));
        assert!(matches!(read_frame(&mut input, &mut buf).await, Frame::Eof));
    }

    #[test]
    fn echoes_are_cut() {
        let long = "p".repeat(100_000);
        let e = Error::Blocked {
            tool: "read".into(),
            policy: "data".into(),
            rule: "fs.too_long".into(),
            reason: format!("path {long:?} is too long"),
        };
        let answer = tool_error(&e).to_string();
        assert!(answer.len() < 4 * MAX_MESSAGE, "{} bytes", answer.len());
        assert!(answer.contains("cut: "), "{answer}");
    }
}
