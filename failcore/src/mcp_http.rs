//! The MCP Streamable HTTP transport towards clients, revisions 2025-06-18 and 2025-11-25, at the path
//! `/mcp`, in front of any MCP server that speaks one JSON-RPC message a line (the MCP proxy's relay for
//! `failcore proxy --listen`, FailCore's own server for [`crate::mcp::HttpServer`]):
//!
//! - `POST` carries one JSON-RPC message. A request is answered with its response as `application/json`;
//!   a notification or a response is accepted with `202`. The `initialize` request opens a session: its
//!   answer carries an `Mcp-Session-Id`, required on every later request (`400` without it, `404` for a
//!   session that is not, or no longer, open). Each session is a server of its own, started by the
//!   [`Sessions`] given.
//! - `GET` opens the session's stream of server-initiated messages (requests and notifications that
//!   answer no request of the client's), as `text/event-stream`; one at a time (`409` for a second).
//! - `DELETE` ends the session: its server's input is closed, and its end awaited (bounded).
//!
//! Every request is checked first: `Host` (and `Origin`, when sent) must name the listening address, a
//! loopback name, or an allowed host, else `403` (a web page cannot reach the server through DNS
//! rebinding); with a token, `Authorization: Bearer <token>` is required (`401`). Bounds: connections at
//! once, header and idle time, accept backoff (those of the proxies' listener), the time and size of a
//! request body, the number of sessions open at once.

use crate::mcp_framing::{read_frame, Frame, MAX_LINE};
use crate::proxy_common::http::{self, Body};
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame as BodyFrame, Incoming};
use hyper::header::{HeaderValue, ALLOW, AUTHORIZATION, CONTENT_TYPE, HOST, ORIGIN};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncWriteExt, BufReader, DuplexStream};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

/// The path the transport is served at.
const PATH: &str = "/mcp";
/// Sessions open at once (each has a server of its own).
const MAX_SESSIONS: usize = 64;
/// A session with no request for this long is ended.
const SESSION_IDLE: Duration = Duration::from_secs(30 * 60);
/// How long a session's server has to end when the session is closed (`DELETE`, shutdown).
const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// Where a session's server comes from.
pub(crate) trait Sessions: Send + Sync + 'static {
    /// Starts one session's server, reading one JSON-RPC message a line from `input` and writing its own
    /// to `output`; the task ends when the server has (its input closed). `Err` is a message for the
    /// client, in the answer to its `initialize`.
    fn open(&self, input: BufReader<DuplexStream>, output: DuplexStream) -> Result<Opened, String>;

    /// Where a line of diagnostics goes.
    fn report(&self, line: &str);
}

/// A session's server, started.
pub(crate) struct Opened {
    pub(crate) task: tokio::task::JoinHandle<()>,
    /// Given each client `Authorization` header when the listener has no token of its own (the MCP proxy
    /// passes it on to a `--url` server).
    pub(crate) authorization: Option<Box<dyn Fn(HeaderValue) + Send + Sync>>,
}

/// Who may reach the listener.
#[derive(Clone, Default)]
pub(crate) struct Guard {
    /// The token every request must bring as `Authorization: Bearer <token>`.
    pub(crate) token: Option<String>,
    /// Host names accepted in `Host` and `Origin` beside the loopback names and the listening address.
    pub(crate) allowed_hosts: Vec<String>,
    /// Connections at once, and how long a client may take.
    pub(crate) limits: crate::proxy_common::ListenLimits,
}

/// Serves the transport on `listener` until `shutdown` completes; then ends every open session (each
/// server's input closed, its end awaited, bounded).
pub(crate) async fn serve(
    listener: &TcpListener,
    guard: Guard,
    sessions: Arc<dyn Sessions>,
    label: &'static str,
    shutdown: impl Future<Output = ()>,
) -> Result<(), crate::Error> {
    let local: SocketAddr = listener
        .local_addr()
        .map_err(|e| crate::Error::Config(format!("no local address: {e}")))?;
    let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "::1"]
        .iter()
        .map(|h| h.to_string())
        .collect();
    if !local.ip().is_unspecified() {
        hosts.push(local.ip().to_string());
    }
    hosts.extend(guard.allowed_hosts.iter().map(|h| h.to_ascii_lowercase()));
    let token = guard.token.as_deref().map(|t| blake3::hash(t.as_bytes()));
    let state = Arc::new(Listener {
        backend: sessions,
        token,
        hosts,
        body_timeout: guard.limits.body_timeout,
        sessions: Mutex::default(),
    });
    let limits = guard.limits.http();
    let sweeper = tokio::spawn({
        let state = state.clone();
        async move {
            loop {
                tokio::time::sleep(Duration::from_secs(30)).await;
                let idle: Vec<Arc<HttpSession>> = {
                    let Ok(mut sessions) = state.sessions.lock() else {
                        return;
                    };
                    let ids: Vec<String> = sessions
                        .iter()
                        .filter(|(_, s)| s.idle())
                        .map(|(id, _)| id.clone())
                        .collect();
                    ids.iter().filter_map(|id| sessions.remove(id)).collect()
                };
                for session in idle {
                    session.close().await;
                }
            }
        }
    });
    let handler = {
        let state = state.clone();
        move |req| {
            let state = state.clone();
            async move { state.handle(req).await }
        }
    };
    http::serve(listener, limits, label, handler, shutdown).await;
    sweeper.abort();
    // Every session ends as a client's closing ends it.
    let open: Vec<Arc<HttpSession>> = match state.sessions.lock() {
        Ok(mut s) => s.drain().map(|(_, s)| s).collect(),
        Err(_) => Vec::new(),
    };
    futures_util::future::join_all(open.iter().map(|s| s.close())).await;
    Ok(())
}

struct Listener {
    backend: Arc<dyn Sessions>,
    token: Option<blake3::Hash>,
    hosts: Vec<String>,
    body_timeout: Duration,
    sessions: Mutex<HashMap<String, Arc<HttpSession>>>,
}

/// One client session: its server's two sides, and who waits for which answer.
struct HttpSession {
    /// The server's input (one message a line); `None` once closed.
    input: tokio::sync::Mutex<Option<DuplexStream>>,
    /// The HTTP requests waiting for the answer to their JSON-RPC request, by id.
    waiters: Mutex<HashMap<String, oneshot::Sender<String>>>,
    /// The client's stream of server-initiated messages, when it opened one.
    stream: Mutex<Option<mpsc::Sender<String>>>,
    /// Given the client's `Authorization` (see [`Opened::authorization`]).
    authorization: Option<Box<dyn Fn(HeaderValue) + Send + Sync>>,
    last_used: Mutex<Instant>,
    /// Ends when the server has ended.
    ended: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl HttpSession {
    fn idle(&self) -> bool {
        let waiting = self.waiters.lock().map(|w| !w.is_empty()).unwrap_or(false);
        let streaming = self.stream.lock().map(|s| s.is_some()).unwrap_or(false);
        let last = self
            .last_used
            .lock()
            .map(|l| l.elapsed())
            .unwrap_or_default();
        !waiting && !streaming && last >= SESSION_IDLE
    }

    fn touch(&self) {
        if let Ok(mut l) = self.last_used.lock() {
            *l = Instant::now();
        }
    }

    /// Ends the session as a stdio client's closing ends one, and waits (bounded) for its server to end.
    async fn close(&self) {
        self.input.lock().await.take();
        if let Some(handle) = self.ended.lock().await.take() {
            let _ = tokio::time::timeout(CLOSE_WAIT, handle).await;
        }
    }

    /// Gives one message to the server.
    async fn send(&self, line: &[u8]) -> bool {
        let mut input = self.input.lock().await;
        let Some(input) = input.as_mut() else {
            return false;
        };
        let written = async {
            input.write_all(line).await?;
            input.write_all(b"\n").await?;
            input.flush().await
        };
        written.await.is_ok()
    }
}

/// The server's answers, each to the HTTP request waiting for it, or to the client's stream.
async fn route_answers(
    session: Arc<HttpSession>,
    output: DuplexStream,
    backend: Arc<dyn Sessions>,
) {
    let mut output = BufReader::new(output);
    let mut buf = Vec::new();
    loop {
        let line = match read_frame(&mut output, &mut buf).await {
            Frame::Line(line) => line,
            Frame::TooLong(n) => {
                backend.report(&format!(
                    "skipped a message of {n} bytes from the MCP server (at most {MAX_LINE})"
                ));
                continue;
            }
            Frame::Error(e) => {
                backend.report(&format!("the MCP server's output could not be read: {e}"));
                break;
            }
            Frame::Eof => break,
        };
        let Ok(text) = String::from_utf8(line) else {
            continue;
        };
        let message: Option<Value> = serde_json::from_str(&text).ok();
        let waiter = message
            .as_ref()
            .filter(|m| m.get("method").is_none())
            .and_then(|m| m.get("id"))
            .and_then(|id| {
                session
                    .waiters
                    .lock()
                    .ok()
                    .and_then(|mut w| w.remove(&id.to_string()))
            });
        match waiter {
            Some(w) => {
                let _ = w.send(text);
            }
            None => {
                let stream = session.stream.lock().ok().and_then(|s| s.clone());
                let delivered = match stream {
                    Some(tx) => tx.send(text).await.is_ok(),
                    None => false,
                };
                if !delivered {
                    backend.report(
                        "dropped a message from the MCP server: the HTTP client has no stream open \
                         for it (GET /mcp)",
                    );
                }
            }
        }
    }
    // The server is gone: whoever still waits is told so by the end of its channel.
    if let Ok(mut w) = session.waiters.lock() {
        w.clear();
    }
}

impl Listener {
    async fn handle(self: &Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        if req.uri().path() != PATH {
            return text(StatusCode::NOT_FOUND, "the MCP endpoint is /mcp");
        }
        if let Err(why) = self.check_origin(&req) {
            return text(StatusCode::FORBIDDEN, &why);
        }
        if !self.authorized(&req) {
            let mut r = text(
                StatusCode::UNAUTHORIZED,
                "this proxy needs `Authorization: Bearer <token>`",
            );
            r.headers_mut()
                .insert("www-authenticate", HeaderValue::from_static("Bearer"));
            return r;
        }
        match *req.method() {
            Method::POST => self.post(req).await,
            Method::GET => self.get(req),
            Method::DELETE => self.delete(req).await,
            _ => {
                let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "use POST, GET or DELETE");
                r.headers_mut()
                    .insert(ALLOW, HeaderValue::from_static("GET, POST, DELETE"));
                r
            }
        }
    }

    /// `Host`, and `Origin` when sent, name this proxy (DNS rebinding protection).
    fn check_origin(&self, req: &Request<Incoming>) -> Result<(), String> {
        let host = req
            .headers()
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .map(host_name)
            .ok_or_else(|| "a Host header is required".to_owned())?;
        if !self.hosts.contains(&host) {
            return Err(format!("Host `{host}` is not this proxy's"));
        }
        if let Some(origin) = req.headers().get(ORIGIN) {
            let origin = origin.to_str().unwrap_or("");
            let name = url::Url::parse(origin)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https"))
                .and_then(|u| u.host_str().map(host_name));
            if !name.is_some_and(|n| self.hosts.contains(&n)) {
                return Err(format!("Origin `{origin}` is not allowed"));
            }
        }
        Ok(())
    }

    fn authorized(&self, req: &Request<Incoming>) -> bool {
        let Some(expected) = self.token else {
            return true;
        };
        let given = req
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(|t| blake3::hash(t.trim().as_bytes()));
        // Hashes compare in constant time.
        given == Some(expected)
    }

    fn session_of(&self, req: &Request<Incoming>) -> Result<Arc<HttpSession>, Box<Response<Body>>> {
        let Some(id) = req
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
        else {
            return Err(Box::new(rpc_response(
                StatusCode::BAD_REQUEST,
                &rpc_error(&Value::Null, -32600, "an Mcp-Session-Id header is required"),
            )));
        };
        match self.sessions.lock().ok().and_then(|s| s.get(id).cloned()) {
            Some(s) => {
                s.touch();
                Ok(s)
            }
            None => Err(Box::new(rpc_response(
                StatusCode::NOT_FOUND,
                &rpc_error(&Value::Null, -32001, "no such session (it may have ended)"),
            ))),
        }
    }

    async fn post(self: &Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let has_session = req.headers().contains_key("mcp-session-id");
        let authorization = req.headers().get(AUTHORIZATION).cloned();
        let existing = if has_session {
            match self.session_of(&req) {
                Ok(s) => Some(s),
                Err(r) => return *r,
            }
        } else {
            None
        };
        let limited = http_body_util::Limited::new(req.into_body(), MAX_LINE);
        let body = match tokio::time::timeout(self.body_timeout, limited.collect()).await {
            Ok(Ok(b)) => b.to_bytes(),
            Ok(Err(e)) => {
                return text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    &format!("cannot read the request body (at most {MAX_LINE} bytes): {e}"),
                )
            }
            Err(_) => {
                return text(
                    StatusCode::REQUEST_TIMEOUT,
                    "the request body took too long to arrive",
                )
            }
        };
        let message: Value = match serde_json::from_slice(&body) {
            Ok(m) => m,
            Err(e) => {
                return rpc_response(
                    StatusCode::BAD_REQUEST,
                    &rpc_error(&Value::Null, -32700, &format!("parse error: {e}")),
                )
            }
        };
        if !message.is_object() {
            return rpc_response(
                StatusCode::BAD_REQUEST,
                &rpc_error(
                    &Value::Null,
                    -32600,
                    "one JSON-RPC message per request (batches are not part of this transport)",
                ),
            );
        }
        // One message a line for the server: a body over several lines is written on one.
        let line: Vec<u8> = if body.contains(&b'\n') || body.contains(&b'\r') {
            message.to_string().into_bytes()
        } else {
            body.to_vec()
        };
        let method = message.get("method").and_then(Value::as_str);
        let id = message
            .get("id")
            .filter(|id| !id.is_null() && method.is_some())
            .cloned();
        let (session, session_id) = match existing {
            Some(s) => (s, None),
            None if method == Some("initialize") => match self.open_session() {
                Ok((s, id)) => (s, Some(id)),
                Err(r) => return *r,
            },
            None => {
                return rpc_response(
                    StatusCode::BAD_REQUEST,
                    &rpc_error(
                        message.get("id").unwrap_or(&Value::Null),
                        -32600,
                        "an Mcp-Session-Id header is required (initialize opens a session)",
                    ),
                )
            }
        };
        if self.token.is_none() {
            if let (Some(pass), Some(a)) = (&session.authorization, authorization) {
                pass(a);
            }
        }
        let Some(id) = id else {
            return if session.send(&line).await {
                empty(StatusCode::ACCEPTED)
            } else {
                text(StatusCode::NOT_FOUND, "the session has ended")
            };
        };
        let key = id.to_string();
        let (tx, rx) = oneshot::channel();
        {
            let Ok(mut waiters) = session.waiters.lock() else {
                return text(StatusCode::INTERNAL_SERVER_ERROR, "poisoned");
            };
            if waiters.contains_key(&key) {
                return rpc_response(
                    StatusCode::OK,
                    &rpc_error(&id, -32600, "a request with this id is already in flight"),
                );
            }
            waiters.insert(key.clone(), tx);
        }
        // A client that leaves stops waiting; its request still runs to its end (and is recorded).
        struct Forget(Arc<HttpSession>, String);
        impl Drop for Forget {
            fn drop(&mut self) {
                if let Ok(mut w) = self.0.waiters.lock() {
                    w.remove(&self.1);
                }
            }
        }
        let _forget = Forget(session.clone(), key);
        if !session.send(&line).await {
            return text(StatusCode::NOT_FOUND, "the session has ended");
        }
        let Ok(answer) = rx.await else {
            return rpc_response(StatusCode::OK, &rpc_error(&id, -32000, "the session ended"));
        };
        let mut response = bytes_response(StatusCode::OK, Bytes::from(answer));
        if let Some(sid) = session_id.and_then(|s| HeaderValue::from_str(&s).ok()) {
            response.headers_mut().insert("mcp-session-id", sid);
        }
        response
    }

    /// A new session, its server started.
    fn open_session(self: &Arc<Self>) -> Result<(Arc<HttpSession>, String), Box<Response<Body>>> {
        let open = self
            .sessions
            .lock()
            .map(|s| s.len())
            .unwrap_or(MAX_SESSIONS);
        if open >= MAX_SESSIONS {
            return Err(Box::new(text(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("{MAX_SESSIONS} sessions are open already: end one (DELETE) first"),
            )));
        }
        let mut bytes = [0u8; 16];
        if getrandom::fill(&mut bytes).is_err() {
            return Err(Box::new(text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "no randomness for a session id",
            )));
        }
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let (input, server_input) = tokio::io::duplex(64 * 1024);
        let (server_output, output) = tokio::io::duplex(64 * 1024);
        let opened = match self
            .backend
            .open(BufReader::new(server_input), server_output)
        {
            Ok(o) => o,
            Err(why) => {
                self.backend.report(&why);
                return Err(Box::new(rpc_response(
                    StatusCode::OK,
                    &rpc_error(&Value::Null, -32002, &why),
                )));
            }
        };
        let session = Arc::new(HttpSession {
            input: tokio::sync::Mutex::new(Some(input)),
            waiters: Mutex::default(),
            stream: Mutex::default(),
            authorization: opened.authorization,
            last_used: Mutex::new(Instant::now()),
            ended: tokio::sync::Mutex::new(None),
        });
        let router = tokio::spawn(route_answers(session.clone(), output, self.backend.clone()));
        let server = opened.task;
        let ended = tokio::spawn(async move {
            let _ = server.await;
            let _ = router.await;
        });
        if let Ok(mut slot) = session.ended.try_lock() {
            *slot = Some(ended);
        }
        if let Ok(mut sessions) = self.sessions.lock() {
            sessions.insert(id.clone(), session.clone());
        }
        Ok((session, id))
    }

    fn get(&self, req: Request<Incoming>) -> Response<Body> {
        let session = match self.session_of(&req) {
            Ok(s) => s,
            Err(r) => return *r,
        };
        let accepts = req
            .headers()
            .get_all(hyper::header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.contains("text/event-stream"));
        if !accepts {
            return text(
                StatusCode::NOT_ACCEPTABLE,
                "GET /mcp opens an event stream: accept text/event-stream",
            );
        }
        let (tx, rx) = mpsc::channel::<String>(64);
        {
            let Ok(mut stream) = session.stream.lock() else {
                return text(StatusCode::INTERNAL_SERVER_ERROR, "poisoned");
            };
            if stream.as_ref().is_some_and(|s| !s.is_closed()) {
                return text(
                    StatusCode::CONFLICT,
                    "this session's event stream is open already",
                );
            }
            *stream = Some(tx);
        }
        let events = tokio_stream(rx).map(|message| {
            Ok::<_, Infallible>(BodyFrame::data(Bytes::from(format!(
                "event: message\ndata: {message}\n\n"
            ))))
        });
        let mut response = Response::new(BodyExt::boxed(StreamBody::new(events)));
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        response
            .headers_mut()
            .insert("cache-control", HeaderValue::from_static("no-cache"));
        response
    }

    async fn delete(&self, req: Request<Incoming>) -> Response<Body> {
        let session = match self.session_of(&req) {
            Ok(s) => s,
            Err(r) => return *r,
        };
        let id = req
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        if let Ok(mut sessions) = self.sessions.lock() {
            sessions.remove(&id);
        }
        session.close().await;
        empty(StatusCode::OK)
    }
}

/// A host name without its port, lower case (`[::1]:8080` is `::1`).
fn host_name(host: &str) -> String {
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name.to_ascii_lowercase()
}

/// The messages of a channel as a stream.
fn tokio_stream(
    rx: mpsc::Receiver<String>,
) -> impl futures_util::Stream<Item = String> + Send + 'static {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) })
}

fn empty(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(BodyExt::boxed(Full::new(Bytes::new())));
    *r.status_mut() = status;
    r
}

fn text(status: StatusCode, message: &str) -> Response<Body> {
    let mut r = Response::new(BodyExt::boxed(Full::new(Bytes::from(format!(
        "{message}\n"
    )))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn bytes_response(status: StatusCode, bytes: Bytes) -> Response<Body> {
    let mut r = Response::new(BodyExt::boxed(Full::new(bytes)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

fn rpc_error(id: &Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

fn rpc_response(status: StatusCode, message: &Value) -> Response<Body> {
    bytes_response(status, Bytes::from(message.to_string()))
}

#[cfg(test)]
mod tests {
    use super::host_name;

    #[test]
    fn host_names_lose_their_port() {
        assert_eq!(host_name("LocalHost:8080"), "localhost");
        assert_eq!(host_name("[::1]:80"), "::1");
        assert_eq!(host_name("127.0.0.1"), "127.0.0.1");
        assert_eq!(host_name("evil.example:3000"), "evil.example");
    }
}
