//! The MCP server: its process (started, watched, stopped), the requests in flight to it, and why it is
//! gone once it is. Every request waiting for it is answered, by the server or with an error in time.

use super::catalog::{Catalog, SharedCatalog};
use super::framing::{read_frame, Frame, MAX_LINE};
use super::message::{cut, rpc_error};
use super::{Diagnostics, GRACE};
use crate::Landed;
use serde_json::value::RawValue;
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot, watch};

/// Who waits for the server's answer to a request.
pub(super) enum Waiter {
    /// The client: the answer is forwarded to it.
    Client {
        method: Option<String>,
        /// The page a list request asked for.
        cursor: Option<Value>,
    },
    /// A proxied call, or the proxy's own request.
    Proxy(oneshot::Sender<std::result::Result<Reply, Failure>>),
}

/// Why a request got no answer from the server, and whether the server could have acted on it.
#[derive(Debug)]
pub(super) struct Failure {
    pub(super) why: String,
    /// `No` when the request never reached the server (it was gone, or could not be reached);
    /// `Unknown` once it was sent.
    pub(super) landed: Landed,
}

impl Failure {
    pub(super) fn new(why: impl Into<String>, landed: Landed) -> Failure {
        Failure {
            why: why.into(),
            landed,
        }
    }
}

impl From<Failure> for String {
    fn from(f: Failure) -> String {
        f.why
    }
}

/// A server's answer: what it holds, and its text as the server sent it.
pub(super) struct Reply {
    pub(super) message: Value,
    pub(super) text: String,
}

impl Reply {
    /// The text of its `result` as the server sent it, if it has one.
    pub(super) fn raw_result(&self) -> Option<Box<RawValue>> {
        raw_result(&self.text)
    }
}

/// The `result` of a JSON-RPC response, as the text holds it.
pub(super) fn raw_result(text: &str) -> Option<Box<RawValue>> {
    #[derive(serde::Deserialize)]
    struct Parts<'a> {
        #[serde(borrow)]
        result: Option<&'a RawValue>,
    }
    let parts: Parts<'_> = serde_json::from_str(text).ok()?;
    parts.result.map(RawValue::to_owned)
}

/// The list methods whose pages the proxy records (with the cursor each was asked with), so that an
/// offline replay gives the same pages; and the answers that describe the server.
pub(super) fn recorded_method(method: &str) -> bool {
    matches!(
        method,
        "initialize"
            | "server/discover"
            | "tools/list"
            | "resources/list"
            | "resources/templates/list"
            | "prompts/list"
    )
}

/// The request that opens a stream of notifications (2026-07-28), answered only when it ends.
pub(super) const LISTEN: &str = "subscriptions/listen";
/// The `_meta` key naming a request's protocol version (2026-07-28).
const PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
/// The `_meta` keys of a 2026-07-28 request that the proxy's own requests carry as the client's did.
const ERA_META: [&str; 3] = [
    PROTOCOL_VERSION,
    "io.modelcontextprotocol/clientInfo",
    "io.modelcontextprotocol/clientCapabilities",
];

/// The cursor a list request asks for (`params.cursor`), if any.
pub(super) fn cursor_of(message: &Value) -> Option<Value> {
    message
        .pointer("/params/cursor")
        .filter(|c| !c.is_null())
        .cloned()
}

/// The link to the server: requests in flight, and why it is gone once it is.
#[derive(Clone)]
pub(super) struct Upstream {
    pub(super) to_server: mpsc::UnboundedSender<String>,
    to_client: mpsc::UnboundedSender<String>,
    pending: Arc<Mutex<HashMap<String, Waiter>>>,
    /// Requests the client cancelled: their late answers are dropped.
    cancelled: Arc<Mutex<HashSet<String>>>,
    /// `Some(why)` once the server is gone.
    pub(super) gone: watch::Receiver<Option<String>>,
    /// The client's `_meta` of the 2026-07-28 revision, once it sent one: the proxy's own requests carry
    /// it too.
    era: Arc<Mutex<Option<Value>>>,
    timeout: Duration,
    diagnostics: Diagnostics,
}

impl Upstream {
    pub(super) fn gone(&self) -> Option<String> {
        self.gone.borrow().clone()
    }

    /// Sends a request on behalf of the proxy (or a proxied call) and waits for its answer.
    pub(super) async fn request(
        &self,
        id: &Value,
        line: String,
    ) -> std::result::Result<Reply, Failure> {
        if let Some(why) = self.gone() {
            return Err(Failure::new(why, Landed::No));
        }
        let (tx, rx) = oneshot::channel();
        let key = id.to_string();
        self.pending
            .lock()
            .map_err(|_| Failure::new("the proxy's table of requests is poisoned", Landed::No))?
            .insert(key.clone(), Waiter::Proxy(tx));
        // Registered before the check, so that a server that dies now fails it either way.
        if let Some(why) = self.gone() {
            self.forget(&key);
            return Err(Failure::new(why, Landed::No));
        }
        if self.to_server.send(line).is_err() {
            self.forget(&key);
            return Err(Failure::new("the MCP server's input is closed", Landed::No));
        }
        // Sent: from here on the server may have acted on it.
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(Failure::new(
                self.gone()
                    .unwrap_or_else(|| "the MCP server did not answer".into()),
                Landed::Unknown,
            )),
            Err(_) => {
                self.forget(&key);
                Err(Failure::new(
                    format!(
                        "the MCP server did not answer within {} s",
                        self.timeout.as_secs_f64()
                    ),
                    Landed::Unknown,
                ))
            }
        }
    }

    /// Fails the proxy's own request or proxied call `id` (not a client's request: those get the
    /// server's answer or an error from the caller); false when `id` is not one.
    pub(super) fn fail_proxied(&self, id: &Value, failure: Failure) -> bool {
        let key = id.to_string();
        let Ok(mut pending) = self.pending.lock() else {
            return false;
        };
        if !matches!(pending.get(&key), Some(Waiter::Proxy(_))) {
            return false;
        }
        if let Some(Waiter::Proxy(tx)) = pending.remove(&key) {
            let _ = tx.send(Err(failure));
        }
        true
    }

    /// Learns the revision the client speaks from one of its requests: in 2026-07-28 every request says
    /// its protocol version, the client and its capabilities in `params._meta`.
    pub(super) fn learn_era(&self, message: &Value) {
        let Some(meta) = message.pointer("/params/_meta").and_then(Value::as_object) else {
            return;
        };
        if !meta.contains_key(PROTOCOL_VERSION) {
            return;
        }
        let kept: serde_json::Map<String, Value> = meta
            .iter()
            .filter(|(k, _)| ERA_META.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if let Ok(mut era) = self.era.lock() {
            *era = Some(Value::Object(kept));
        }
    }

    /// A request of the proxy's own (`id`, `method`, `params`, an object): in a session of the
    /// 2026-07-28 revision, with the `_meta` that revision requires (the client's version, info and
    /// capabilities).
    pub(super) fn own_request(&self, id: &Value, method: &str, mut params: Value) -> String {
        let era = self.era.lock().ok().and_then(|e| e.clone());
        if let (Some(meta), Some(p)) = (era, params.as_object_mut()) {
            p.insert("_meta".to_owned(), meta);
        }
        serde_json::json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
            .to_string()
    }

    fn forget(&self, key: &str) {
        if let Ok(mut p) = self.pending.lock() {
            p.remove(key);
        }
    }

    /// The client cancelled request `id`: nobody waits for its answer any more, and the server's late
    /// answer, if it comes, is dropped (the client is owed none).
    pub(super) fn cancel(&self, id: &Value) {
        let key = id.to_string();
        let waited = self
            .pending
            .lock()
            .ok()
            .and_then(|mut p| p.remove(&key))
            .is_some();
        if let Ok(mut c) = self.cancelled.lock() {
            // Bounded: a server that never answers cancelled requests cannot grow it without end.
            if c.len() >= 4096 {
                c.clear();
            }
            if waited {
                c.insert(key);
            }
        }
    }

    /// Forwards a client request; its answer goes straight back to the client (or an error, in time).
    pub(super) fn forward_request(&self, id: Value, method: Option<String>, line: String) {
        let key = id.to_string();
        let listening;
        {
            let Ok(mut pending) = self.pending.lock() else {
                return;
            };
            // Checked under the lock of the requests in flight: the server's end is published before its
            // requests are failed under this lock, so a request is either seen gone here or failed
            // there, never left waiting for a server that is no more.
            if let Some(why) = self.gone() {
                drop(pending);
                let _ = self
                    .to_client
                    .send(rpc_error(&id, -32000, &format!("failcore proxy: {why}")).to_string());
                return;
            }
            if pending.contains_key(&key) {
                let answer = rpc_error(
                    &id,
                    -32600,
                    "failcore proxy: a request with this id is already in flight",
                );
                let _ = self.to_client.send(answer.to_string());
                return;
            }
            let cursor = match method.as_deref() {
                Some(m) if recorded_method(m) => serde_json::from_str::<Value>(&line)
                    .ok()
                    .as_ref()
                    .and_then(cursor_of),
                _ => None,
            };
            // A subscription stream (2026-07-28) is answered only when the server ends it: no timeout.
            listening = method.as_deref() == Some(LISTEN);
            pending.insert(key.clone(), Waiter::Client { method, cursor });
        }
        let _ = self.to_server.send(line);
        if listening {
            return;
        }
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
    pub(super) fn route_from_server(&self, catalog: &SharedCatalog, line: Vec<u8>) {
        let Ok(text) = String::from_utf8(line) else {
            self.diagnostics
                .report("dropped a message from the MCP server that is not UTF-8");
            return;
        };
        let Ok(msg) = serde_json::from_str::<Value>(&text) else {
            self.diagnostics.report(&format!(
                "dropped a message from the MCP server that is not JSON: {}",
                cut(&text.escape_debug().to_string())
            ));
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
                let _ = tx.send(Ok(Reply { message: msg, text }));
            }
            Some(Waiter::Client { method, cursor }) => {
                if let (Some(result), Some(method)) = (msg.get("result"), method.as_deref()) {
                    if recorded_method(method) {
                        if let Some(raw) = raw_result(&text) {
                            Catalog::learn_page(catalog, method, cursor, result, raw);
                        }
                    }
                }
                // As the server sent it: the id is the client's own.
                let _ = self.to_client.send(text);
            }
            None => {
                let cancelled = match msg.get("id") {
                    Some(id) if msg.get("method").is_none() => self
                        .cancelled
                        .lock()
                        .map(|mut c| c.remove(&id.to_string()))
                        .unwrap_or(false),
                    _ => false,
                };
                if !cancelled {
                    let _ = self.to_client.send(text);
                }
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
                // Sent before the server went: it may have acted on it.
                Waiter::Proxy(tx) => {
                    let _ = tx.send(Err(Failure::new(why, Landed::Unknown)));
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

/// The server process and the tasks that talk to it.
pub(super) struct Server {
    pub(super) upstream: Upstream,
    exited: Option<oneshot::Receiver<Option<i32>>>,
    writer: tokio::task::JoinHandle<()>,
    /// Closes the server's stdin (after what is queued).
    close: Option<oneshot::Sender<()>>,
    /// Sends the server SIGTERM.
    term: Option<oneshot::Sender<()>>,
    kill: Option<oneshot::Sender<()>>,
}

impl Upstream {
    /// A link to a server yet to be connected: the messages for the server come out of the receiver;
    /// the sender tells why the server is gone, once it is.
    pub(super) fn new(
        to_client: mpsc::UnboundedSender<String>,
        timeout: Duration,
        diagnostics: Diagnostics,
    ) -> (
        Upstream,
        mpsc::UnboundedReceiver<String>,
        watch::Sender<Option<String>>,
    ) {
        let (gone_tx, gone) = watch::channel(None);
        let (to_server, server_rx) = mpsc::unbounded_channel::<String>();
        let upstream = Upstream {
            to_server,
            to_client,
            pending: Arc::default(),
            cancelled: Arc::default(),
            gone,
            era: Arc::default(),
            timeout,
            diagnostics,
        };
        (upstream, server_rx, gone_tx)
    }

    pub(super) fn diagnostics(&self) -> &Diagnostics {
        &self.diagnostics
    }
}

pub(super) fn start_server(
    command: &[String],
    to_client: mpsc::UnboundedSender<String>,
    catalog: SharedCatalog,
    timeout: Duration,
    diagnostics: Diagnostics,
) -> Server {
    let (upstream, mut server_rx, gone_tx) = Upstream::new(to_client, timeout, diagnostics);
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
            upstream.diagnostics.report(&why);
            let _ = gone_tx.send(Some(why));
            return Server {
                upstream,
                exited: None,
                writer: tokio::spawn(async {}),
                close: None,
                term: None,
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
    let (kill, mut kill_rx) = oneshot::channel::<()>();
    let (term, mut term_rx) = oneshot::channel::<()>();
    let pid = child.id();
    let (status_tx, status_rx) = watch::channel::<Option<Option<i32>>>(None);
    tokio::spawn(async move {
        let mut termed = false;
        let status = loop {
            tokio::select! {
                s = child.wait() => break s.ok(),
                asked = &mut term_rx, if !termed => {
                    termed = true;
                    if asked.is_ok() {
                        terminate(pid);
                    }
                }
                _ = &mut kill_rx => {
                    let _ = child.start_kill();
                    break child.wait().await.ok();
                }
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
                    Frame::TooLong(n) => reader_upstream.diagnostics.report(&format!(
                        "dropped a message of {n} bytes from the MCP server (at most {MAX_LINE})"
                    )),
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
        term: Some(term),
        kill: Some(kill),
    }
}

/// Asks process `pid` to end (SIGTERM).
#[cfg(target_os = "linux")]
fn terminate(pid: Option<u32>) {
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
        // SAFETY: kill(2) has no memory effects; the pid is the proxy's own child, not yet reaped (the
        // task that reaps it is the one calling this).
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
}

/// Elsewhere the server is killed once its time is up.
#[cfg(not(target_os = "linux"))]
fn terminate(_: Option<u32>) {}

#[cfg(unix)]
fn signal_of(status: &std::process::ExitStatus) -> i32 {
    std::os::unix::process::ExitStatusExt::signal(status).unwrap_or(0)
}

#[cfg(not(unix))]
fn signal_of(_: &std::process::ExitStatus) -> i32 {
    0
}

impl Server {
    /// A server reached by another transport than a child's stdio: `task` carries the messages, and
    /// ends (after what is queued) once `close` fires; there is no process.
    pub(super) fn remote(
        upstream: Upstream,
        task: tokio::task::JoinHandle<()>,
        close: oneshot::Sender<()>,
    ) -> Server {
        Server {
            upstream,
            exited: None,
            writer: task,
            close: Some(close),
            term: None,
            kill: None,
        }
    }

    /// Closes the server's stdin and gives it [`GRACE`] to exit; then sends it SIGTERM and gives it
    /// [`GRACE`] more; then kills it (SIGKILL). Its exit code when it exited of itself.
    pub(super) async fn stop(mut self) -> Option<i32> {
        drop(self.upstream);
        let deadline = tokio::time::Instant::now() + GRACE;
        if let Some(close) = self.close.take() {
            let _ = close.send(());
        }
        let _ = tokio::time::timeout_at(deadline, &mut self.writer).await;
        self.writer.abort();
        let mut exited = self.exited.take()?;
        if let Ok(code) = tokio::time::timeout_at(deadline, &mut exited).await {
            return code.ok().flatten();
        }
        if let Some(term) = self.term.take() {
            let _ = term.send(());
        }
        // Ended by the proxy: its status says nothing of how the session went.
        if tokio::time::timeout(GRACE, &mut exited).await.is_err() {
            if let Some(kill) = self.kill.take() {
                let _ = kill.send(());
            }
            let _ = exited.await;
        }
        None
    }
}
