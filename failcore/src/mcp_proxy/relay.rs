//! The relay: reads the client's messages, forwards what is not a call, makes each `tools/call` a step of
//! the run (opened at the first one), and ends the session when the client goes or a signal comes.

use super::bound::Bound;
use super::catalog::{Catalog, SharedCatalog};
use super::config::Config;
use super::framing::{read_frame, Frame, MAX_LINE};
use super::http_upstream::Remote;
use super::message::{
    classify, cut, rpc_error, rpc_result, spliced_result, tool_error, FromClient,
};
use super::offline::{offline_answer, recorded_description};
use super::tasks::{follow, outcome, receipt, SharedTasks, Tasks};
use super::upstream::{cursor_of, start_server, Upstream, LISTEN};
use super::{Diagnostics, CALLS_GRACE, DESCRIPTION, ORIGIN};
use crate::proxy_common::{parent_died, parent_id, Signals};
use crate::store::Mode;
use crate::{DynamicBody, DynamicRawBody, DynamicTool, Effect, Error, Session, SessionBuilder};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot, OnceCell};

/// When the proxy cannot start: every request is answered with the reason, and it exits 2 once the client
/// is gone.
pub(super) async fn refuse_everything(why: &str, diagnostics: &Diagnostics) -> ExitCode {
    diagnostics.report(why);
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

/// Whose run a session's calls are steps of.
pub(super) enum RunOf {
    /// The proxy's own, opened at the first call (the server's description in its run_start) and ended
    /// with the session, or left open for the next session of its run key (`keyed`).
    Own {
        builder: Box<SessionBuilder>,
        keyed: bool,
    },
    /// A session the proxy did not open, shared by every client session and ended by its owner.
    Bound(Arc<Bound>),
}

/// What a client session is relayed with.
pub(super) struct Relay {
    pub(super) run: RunOf,
    pub(super) timeout: Duration,
    pub(super) command: Vec<String>,
    /// The remote server of `--url`, instead of a command.
    pub(super) remote: Option<Arc<Remote>>,
    /// Offline: the server's description recorded in the run replayed, if it has one; then no server
    /// is started.
    pub(super) description: Option<Value>,
    /// The run replayed, if any (named in errors).
    pub(super) source: Option<String>,
}

impl Relay {
    /// A session of the proxy's own run, as `config` has it.
    pub(super) fn own(config: Config) -> Result<Relay, Error> {
        let description = match &config.source {
            Some((Mode::Offline, run)) => recorded_description(config.store.as_ref(), run)?,
            _ => None,
        };
        Ok(Relay {
            run: RunOf::Own {
                builder: Box::new(config.builder),
                keyed: config.keyed,
            },
            timeout: config.timeout,
            command: config.command,
            remote: config.remote,
            description,
            source: config.source.map(|(_, run)| run),
        })
    }
}

/// How the run is come by at the first call.
enum Opening {
    /// Opened then, from this builder.
    Own(Mutex<Option<Box<SessionBuilder>>>),
    /// A session's, given.
    Bound(Arc<Bound>),
}

/// The run, opened (or, bound, described) at the first call.
struct LazyRun {
    opening: Opening,
    session: OnceCell<std::result::Result<Session, String>>,
    catalog: SharedCatalog,
    upstream: Option<Upstream>,
}

impl LazyRun {
    async fn session(&self) -> std::result::Result<Session, String> {
        self.session
            .get_or_init(|| async {
                let builder = match &self.opening {
                    Opening::Bound(bound) => {
                        if !bound.described() {
                            self.describe_server().await;
                        }
                        bound.describe(&self.catalog).await;
                        return Ok(bound.session.clone());
                    }
                    Opening::Own(builder) => builder,
                };
                self.describe_server().await;
                let builder = builder
                    .lock()
                    .ok()
                    .and_then(|mut b| b.take())
                    .ok_or_else(|| "the run could not be opened".to_owned())?;
                let builder = (*builder).run_fact(DESCRIPTION, Catalog::description(&self.catalog));
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
            .map(|c| c.tools_complete)
            .unwrap_or(true);
        let Some(upstream) = self.upstream.as_ref().filter(|_| !known) else {
            return;
        };
        let mut cursor: Option<Value> = None;
        // A bounded number of pages: a server that pages forever cannot hold the call.
        for page in 0..64 {
            let id = json!(format!("failcore-proxy-list-{page}"));
            let params = match &cursor {
                Some(c) => json!({ "cursor": c }),
                None => json!({}),
            };
            let request = upstream.own_request(&id, "tools/list", params);
            let Ok(answer) = upstream.request(&id, request).await else {
                return;
            };
            let (Some(result), Some(raw)) = (answer.message.get("result"), answer.raw_result())
            else {
                return;
            };
            // Each page as a client asking for it would get it, so that offline gives it again.
            Catalog::learn_page(&self.catalog, "tools/list", cursor.clone(), result, raw);
            match result.get("nextCursor").filter(|c| !c.is_null()) {
                Some(next) => cursor = Some(next.clone()),
                None => break,
            }
        }
    }
}

/// The client's side of a session: where its messages come from (one a line) and where the answers go.
pub(super) struct ClientSide {
    pub(super) input: Box<dyn AsyncBufRead + Send + Unpin>,
    pub(super) output: Box<dyn AsyncWrite + Send + Unpin>,
    /// The process that started the proxy, watched to tell a client that died from one that closed.
    pub(super) parent: Option<u32>,
    /// Whether SIGTERM and SIGINT end this session (else whoever serves it ends it).
    pub(super) signals: bool,
}

impl ClientSide {
    /// This process's stdin and stdout.
    pub(super) fn stdio() -> ClientSide {
        ClientSide {
            input: Box::new(BufReader::new(tokio::io::stdin())),
            output: Box::new(tokio::io::stdout()),
            parent: parent_id(),
            signals: true,
        }
    }
}

pub(super) async fn serve(
    relay: Relay,
    diagnostics: Diagnostics,
    client: ClientSide,
) -> Result<ExitCode, Error> {
    let Relay {
        run,
        timeout,
        command,
        remote,
        description: offline_description,
        source,
    } = relay;
    let ClientSide {
        mut input,
        output: mut out,
        parent,
        signals,
    } = client;
    let (to_client, mut client_rx) = mpsc::unbounded_channel::<String>();
    let (close_client, mut closing) = oneshot::channel::<()>();
    let client_writer = tokio::spawn(async move {
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
    if let Some(d) = &offline_description {
        Catalog::learn_description(&catalog, d);
        if let Some(tools) = d.get("tools").filter(|t| t.is_array()) {
            Catalog::learn_tools(&catalog, &json!({ "tools": tools }));
        }
    } else if command.is_empty() && remote.is_none() {
        return Err(Error::Config(format!(
            "run {} has no recorded server description (it was recorded without one): start the \
             server, after `--`",
            source.as_deref().unwrap_or("?")
        )));
    }

    let mut server = if offline_description.is_none() {
        Some(match &remote {
            Some(remote) => super::http_upstream::connect(
                remote.clone(),
                to_client.clone(),
                catalog.clone(),
                timeout,
                diagnostics.clone(),
            ),
            None => start_server(
                &command,
                to_client.clone(),
                catalog.clone(),
                timeout,
                diagnostics.clone(),
            ),
        })
    } else {
        None
    };
    let upstream = server.as_ref().map(|s| s.upstream.clone());
    let (opening, keyed) = match run {
        RunOf::Own { builder, keyed } => (Opening::Own(Mutex::new(Some(builder))), keyed),
        RunOf::Bound(bound) => (Opening::Bound(bound), false),
    };
    let run = Arc::new(LazyRun {
        opening,
        session: OnceCell::new(),
        catalog: catalog.clone(),
        upstream: upstream.clone(),
    });

    let mut signals = if signals { Some(Signals::new()?) } else { None };
    let mut calls = tokio::task::JoinSet::new();
    let in_flight = InFlight::default();
    let tasks = SharedTasks::default();
    let mut buf = Vec::new();
    let mut gone = upstream.as_ref().map(|u| u.gone.clone());
    let mut signalled = None;
    let ended = loop {
        let frame = tokio::select! {
            frame = read_frame(&mut input, &mut buf) => frame,
            sig = async { match signals.as_mut() { Some(s) => s.recv().await, None => std::future::pending().await } } => { signalled = Some(sig); break Ended::Signal; }
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
                diagnostics.report(&format!("cannot read from the client: {e}"));
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
        if let Some(up) = upstream.as_ref() {
            if line.windows(ERA_MARK.len()).any(|w| w == ERA_MARK) {
                if let Ok(message) = serde_json::from_slice::<Value>(&line) {
                    up.learn_era(&message);
                }
            }
        }
        let action = classify(&line);
        let session = SessionParts {
            run: &run,
            catalog: &catalog,
            upstream: upstream.as_ref(),
            to_client: &to_client,
            in_flight: &in_flight,
            tasks: &tasks,
        };
        handle(action, line, &session, &mut calls);
    };

    // Calls in flight get a bounded time to end (answered, recorded); those still running then are
    // recorded as cancelled. A signal meanwhile (MCP SDKs send SIGTERM after closing stdin) cuts it short.
    let drain = async { while calls.join_next().await.is_some() {} };
    let cut = tokio::select! {
        drained = tokio::time::timeout(CALLS_GRACE, drain) => drained.is_err(),
        sig = async { match signals.as_mut() { Some(s) => s.recv().await, None => std::future::pending().await } }, if signalled.is_none() => {
            signalled = Some(sig);
            true
        }
    };
    if cut {
        calls.abort_all();
        while calls.join_next().await.is_some() {}
    }
    // A client whose process died closed nothing on purpose: the run is left as a crash leaves it.
    let crashed = matches!(ended, Ended::ClientClosed) && parent_died(parent).await;
    let mut finish_error = None;
    let own = matches!(run.opening, Opening::Own(_));
    // A session's run is its owner's to end.
    if let Some(Ok(session)) = run.session.get().filter(|_| own) {
        if crashed {
            diagnostics.report(&format!(
                "the client's process ended without closing the session; run {} is left without a \
                 run_end, as after a crash",
                session.run_id()
            ));
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
    let _ = tokio::time::timeout(super::GRACE, client_writer).await;
    if let Some(e) = finish_error {
        return Err(e);
    }
    Ok(match (signalled, upstream_failure) {
        (Some(sig), _) => ExitCode::from(128u8.saturating_add(sig)),
        (None, Some(why)) if !crashed => {
            diagnostics.report(&why);
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

/// The `tools/call`s in flight, by the client's id (its JSON text), so that a cancellation ends one.
type InFlight = Arc<Mutex<HashMap<String, tokio::task::AbortHandle>>>;

/// The request a `notifications/cancelled` cancels (`params.requestId`).
fn cancelled_request(line: &[u8]) -> Option<Value> {
    let message: Value = serde_json::from_slice(line).ok()?;
    message
        .pointer("/params/requestId")
        .filter(|id| !id.is_null())
        .cloned()
}

/// What handling a client's message needs of its session.
struct SessionParts<'a> {
    run: &'a Arc<LazyRun>,
    catalog: &'a SharedCatalog,
    /// `None` offline: no server.
    upstream: Option<&'a Upstream>,
    to_client: &'a mpsc::UnboundedSender<String>,
    in_flight: &'a InFlight,
    tasks: &'a SharedTasks,
}

/// Bytes a message of the 2026-07-28 revision holds (its protocol version in `_meta`).
const ERA_MARK: &[u8] = b"io.modelcontextprotocol/protocolVersion";

/// Ends the call in flight for the client's request `key`, if there is one: it is recorded as cancelled.
fn abort_call(in_flight: &InFlight, key: &str) {
    if let Some(call) = in_flight.lock().ok().and_then(|mut f| f.remove(key)) {
        call.abort();
    }
}

fn handle(
    action: FromClient,
    line: Vec<u8>,
    s: &SessionParts<'_>,
    calls: &mut tokio::task::JoinSet<()>,
) {
    let SessionParts {
        run,
        catalog,
        upstream,
        to_client,
        in_flight,
        tasks,
    } = *s;
    match action {
        FromClient::Forward(None, Some(method)) if method == "notifications/cancelled" => {
            // The server is told; the proxy stops waiting for the request, its call (if it is one) is
            // recorded as cancelled, and the client gets no answer to it.
            let cancelled = cancelled_request(&line);
            // The call is aborted before its wait for the server is dropped: woken by the dropped wait
            // first, it would end as failed and answer the client.
            if let Some(id) = &cancelled {
                abort_call(in_flight, &id.to_string());
            }
            if let Some(up) = upstream {
                let _ = up
                    .to_server
                    .send(String::from_utf8(line).unwrap_or_default());
                if let Some(id) = &cancelled {
                    up.cancel(id);
                }
            }
        }
        FromClient::Forward(Some(id), Some(method)) if method.starts_with("tasks/") => {
            let message = serde_json::from_slice::<Value>(&line).ok();
            let params = message.as_ref().and_then(|m| m.get("params"));
            // A task the proxy serves (or, offline, any task) is answered here.
            if let Some(answer) = Tasks::answer(tasks, &id, &method, params, upstream.is_none()) {
                let _ = to_client.send(answer);
                return;
            }
            // A task the proxy follows, cancelled by the client: the server is asked (and answers the
            // client), and the call's step ends as cancelled.
            if method == "tasks/cancel" {
                let task_id = params.and_then(|p| p.get("taskId")).and_then(Value::as_str);
                if let Some(key) = task_id.and_then(|t| Tasks::follower(tasks, t)) {
                    abort_call(in_flight, &key);
                }
            }
            forward(Some(id), Some(method), line, s);
        }
        FromClient::Forward(Some(id), Some(method)) if method == LISTEN && upstream.is_none() => {
            // Offline nothing changes: the subscription is acknowledged with nothing to send, and stays
            // open until the session ends.
            let ack = json!({
                "jsonrpc": "2.0",
                "method": "notifications/subscriptions/acknowledged",
                "params": {
                    "notifications": {},
                    "_meta": {"io.modelcontextprotocol/subscriptionId": id},
                },
            });
            let _ = to_client.send(ack.to_string());
        }
        FromClient::Forward(id, method) => forward(id, method, line, s),
        FromClient::Answer(Some(answer)) => {
            let _ = to_client.send(answer.to_string());
        }
        FromClient::Answer(None) => {}
        FromClient::Batch(parts) => {
            for part in parts {
                handle(part, Vec::new(), s, calls);
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
            let key = id.to_string();
            let call = ProxiedCall {
                effect: Catalog::effect(catalog, &name),
                id,
                name,
                arguments,
                raw: String::from_utf8(line).unwrap_or_default(),
                upstream: upstream.cloned(),
                to_client: to_client.clone(),
                tasks: tasks.clone(),
                key: key.clone(),
            };
            let run = run.clone();
            let to_client = to_client.clone();
            // Held while the task starts, so that it cannot remove itself before it is entered.
            let mut entered = in_flight.lock().ok();
            let call_key = key.clone();
            let in_flight_now = in_flight.clone();
            let task = calls.spawn(async move {
                let id = call.id.clone();
                let answer = match run.session().await {
                    Ok(session) => session.scope(call.run()).await,
                    Err(why) => {
                        Some(rpc_error(&id, -32002, &format!("failcore proxy: {why}")).to_string())
                    }
                };
                if let Ok(mut f) = in_flight_now.lock() {
                    f.remove(&key);
                }
                if let Some(answer) = answer {
                    let _ = to_client.send(answer);
                }
            });
            if let Some(f) = entered.as_mut() {
                f.insert(call_key, task);
            }
        }
    }
}

/// Forwards a message to the server; offline, answers a request from the recorded description.
fn forward(id: Option<Value>, method: Option<String>, line: Vec<u8>, s: &SessionParts<'_>) {
    let text = String::from_utf8(line).unwrap_or_default();
    match s.upstream {
        Some(up) => match id {
            Some(id) => up.forward_request(id, method, text),
            None => {
                let _ = up.to_server.send(text);
            }
        },
        // Offline, no server: answered from the recorded description.
        None => {
            if let Some(id) = id {
                let cursor = serde_json::from_str::<Value>(&text)
                    .ok()
                    .as_ref()
                    .and_then(cursor_of);
                let answer = offline_answer(s.catalog, &id, method.as_deref(), cursor.as_ref());
                let _ = s.to_client.send(answer);
            }
        }
    }
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
    /// Where a task's receipt goes at once, before the task ends.
    to_client: mpsc::UnboundedSender<String>,
    tasks: SharedTasks,
    /// The client's request id, as the table of calls in flight keys it.
    key: String,
}

impl ProxiedCall {
    /// The JSON-RPC response to give the client: the server's own text when it answered, else the
    /// recorded result (as the server sent it) with this client's id, else the proxy's error. `None`
    /// when the client already has its answer: the receipt of the task the call became.
    async fn run(self) -> Option<String> {
        let ProxiedCall {
            effect,
            id,
            name,
            arguments,
            raw,
            upstream,
            to_client,
            tasks,
            key,
        } = self;
        let tool = match DynamicTool::new(&name, ORIGIN, effect) {
            Ok(tool) => tool,
            Err(e) => return Some(rpc_result(&id, tool_error(&e)).to_string()),
        };
        // A client of 2025-11-25 asking for a task gets one, even when the call is served.
        let wants_task = serde_json::from_str::<Value>(&raw)
            .ok()
            .and_then(|m| m.pointer("/params/task").cloned())
            .is_some_and(|t| t.is_object());
        // The server's own answer, given to the client as it was (or already given: a task's receipt).
        let answered: Arc<Mutex<Option<Option<String>>>> = Arc::default();
        let body: DynamicRawBody = {
            let answered = answered.clone();
            let id = id.clone();
            let tasks = tasks.clone();
            Box::pin(async move {
                let Some(upstream) = upstream else {
                    return Err("offline: no MCP server to run the tool".to_owned());
                };
                let response = match upstream.request(&id, raw).await {
                    Ok(response) => response,
                    Err(failure) => {
                        let _ = crate::report_landed(failure.landed);
                        return Err(failure.why);
                    }
                };
                let result = response.message.get("result");
                // A task: the client has its receipt now; the step's output is the task's result.
                if let Some(task) = result.and_then(receipt) {
                    if let Ok(mut a) = answered.lock() {
                        *a = Some(None);
                    }
                    let _ = to_client.send(response.text);
                    Tasks::following(&tasks, &task.task_id, &key);
                    let ended = follow(&upstream, &task).await;
                    Tasks::followed(&tasks, &task.task_id);
                    return ended;
                }
                let outcome = match result.and_then(unfinished) {
                    Some(why) => Err(why),
                    None => outcome(&response),
                };
                if let Ok(mut a) = answered.lock() {
                    *a = Some(Some(response.text));
                }
                outcome
            })
        };
        let outcome = tool.call_raw(&arguments, body).await;
        let live = answered.lock().ok().and_then(|mut a| a.take());
        match (outcome, live) {
            (_, Some(text)) => text,
            (Ok(result), None) if wants_task => Some(Tasks::serve(&tasks, &id, result)),
            (Ok(result), None) => Some(spliced_result(&id, result.get())),
            (Err(e), None) => Some(rpc_result(&id, tool_error(&e)).to_string()),
        }
    }
}

/// Why a result is not the call's final answer, when it is not: the server asks the client for input
/// first (`resultType: "input_required"`), or answers with a result type the proxy does not know. Such
/// a result is given to the client but never recorded as the call's outcome, so that a resume asks the
/// server again. (A task's receipt is followed to the task's result instead.)
fn unfinished(result: &Value) -> Option<String> {
    match result.get("resultType").and_then(Value::as_str) {
        Some("complete") | None => None,
        Some(other) => Some(format!(
            "the MCP server answered `{other}`, not a final result: not served again"
        )),
    }
}
