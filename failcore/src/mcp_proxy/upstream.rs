//! The MCP server: its process (started, watched, stopped), the requests in flight to it, and why it is
//! gone once it is. Every request waiting for it is answered, by the server or with an error in time.

use super::catalog::{Catalog, SharedCatalog};
use super::framing::{read_frame, Frame, MAX_LINE};
use super::message::{cut, rpc_error};
use super::{Diagnostics, GRACE};
use serde_json::Value;
use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot, watch};

/// Who waits for the server's answer to a request.
pub(super) enum Waiter {
    /// The client: the answer is forwarded to it.
    Client { method: Option<String> },
    /// A proxied call, or the proxy's own request.
    Proxy(oneshot::Sender<std::result::Result<Value, String>>),
}

/// The link to the server: requests in flight, and why it is gone once it is.
#[derive(Clone)]
pub(super) struct Upstream {
    pub(super) to_server: mpsc::UnboundedSender<String>,
    to_client: mpsc::UnboundedSender<String>,
    pending: Arc<Mutex<HashMap<String, Waiter>>>,
    /// `Some(why)` once the server is gone.
    pub(super) gone: watch::Receiver<Option<String>>,
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
    ) -> std::result::Result<Value, String> {
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
    pub(super) fn forward_request(&self, id: Value, method: Option<String>, line: String) {
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

/// The server process and the tasks that talk to it.
pub(super) struct Server {
    pub(super) upstream: Upstream,
    exited: Option<oneshot::Receiver<Option<i32>>>,
    writer: tokio::task::JoinHandle<()>,
    /// Closes the server's stdin (after what is queued).
    close: Option<oneshot::Sender<()>>,
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
            gone,
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
            kill: None,
        }
    }

    /// Closes the server's stdin, gives it [`GRACE`] to exit, then kills it. Its exit code, if any.
    pub(super) async fn stop(mut self) -> Option<i32> {
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
