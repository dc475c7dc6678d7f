//! The LLM proxy (feature `llm-proxy`): a local HTTP endpoint speaking the OpenAI Chat Completions API and
//! the Anthropic Messages API that makes each model call a step of a FailCore run.
//! `failcore llm-proxy --upstream <url>` runs it.
//!
//! `POST <any prefix>/chat/completions` and `POST <any prefix>/messages` are model calls
//! ([`crate::model`]): checked by the session's policies (a refused call never reaches the upstream),
//! answered from the trace when resuming or offline, and otherwise forwarded to
//! `<upstream>/chat/completions` or `<upstream>/messages`, the reply recorded. Streamed replies
//! (`"stream": true`) are passed to the client event by event as they arrive, recorded chunk by chunk, and
//! replayed as the same events (for the Messages API with their `event:` names, which are the `type` of
//! their data). The client's credentials (`Authorization`, `x-api-key`) and API headers
//! (`anthropic-version`, `anthropic-beta`, `openai-organization`, `openai-project`) are forwarded and never
//! recorded.
//!
//! Errors are in the shape of the API called (`{"error": {"message", "type", "code"}}`, or
//! `{"type": "error", "error": {"type", "message", "code"}}` for Messages): a refused call is `403` with
//! type `failcore_blocked` and the rule as its code; a call missing from the trace offline is `424`
//! (`failcore_replay_miss`); an upstream error is passed through with its status and body.

use crate::model::{is_streaming, parse_request, Models, Reply, SseSplitter};
use crate::{Error, Session};
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// The largest request body the proxy reads (a long conversation with images fits).
pub const MAX_REQUEST_BYTES: usize = 32 * 1024 * 1024;

type Body = BoxBody<Bytes, Infallible>;

/// An LLM proxy bound to a local address.
pub struct LlmProxy {
    listener: TcpListener,
    state: Arc<State>,
}

struct State {
    session: Session,
    models: Models,
    upstream: Option<String>,
    client: reqwest::Client,
}

/// The request headers forwarded to the upstream (credentials and API versions): never recorded.
const FORWARDED: &[&str] = &[
    "authorization",
    "x-api-key",
    "anthropic-version",
    "anthropic-beta",
    "openai-organization",
    "openai-project",
];

/// The provider API a request speaks, by its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Api {
    /// OpenAI Chat Completions: `.../chat/completions`.
    ChatCompletions,
    /// Anthropic Messages: `.../messages`.
    Messages,
}

impl Api {
    fn of(path: &str) -> Option<Api> {
        if path.ends_with("/chat/completions") {
            Some(Api::ChatCompletions)
        } else if path.ends_with("/messages") {
            Some(Api::Messages)
        } else {
            None
        }
    }

    /// The upstream path of this API, after the upstream's base URL.
    fn endpoint(self) -> &'static str {
        match self {
            Api::ChatCompletions => "/chat/completions",
            Api::Messages => "/messages",
        }
    }

    /// One server-sent event of a streamed reply, as this API frames it. The Messages API names each
    /// event after its data's `type`; the data of a recorded event, which comes from a trace, is framed
    /// line by line so that it can never start an event of its own.
    fn frame(self, data: &str) -> Bytes {
        let mut out = String::with_capacity(data.len() + 32);
        if self == Api::Messages {
            if let Some(name) = event_name(data) {
                out.push_str("event: ");
                out.push_str(&name);
                out.push('\n');
            }
        }
        for line in data.split(['\n', '\r']) {
            out.push_str("data: ");
            out.push_str(line);
            out.push('\n');
        }
        out.push('\n');
        Bytes::from(out)
    }

    fn error(
        self,
        status: StatusCode,
        kind: &str,
        code: Option<&str>,
        message: &str,
    ) -> Response<Body> {
        let body = match self {
            Api::ChatCompletions => {
                json!({"error": {"message": message, "type": kind, "code": code, "param": null}})
            }
            Api::Messages => {
                json!({"type": "error", "error": {"type": kind, "message": message, "code": code}})
            }
        };
        json_response(status, &body)
    }
}

/// The event name of a Messages API event: its data's `type`, when it is a plain name.
fn event_name(data: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Typed {
        #[serde(rename = "type")]
        kind: String,
    }
    let typed: Typed = serde_json::from_str(data).ok()?;
    let plain = !typed.kind.is_empty()
        && typed.kind.len() <= 64
        && typed
            .kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    plain.then_some(typed.kind)
}

/// An upstream error reply, kept to be passed through to the client.
type UpstreamFailure = Arc<Mutex<Option<(StatusCode, Bytes)>>>;

impl LlmProxy {
    /// Binds `addr` (port 0 picks a free port). Calls go to `upstream` (its base URL, such as
    /// `https://api.openai.com/v1`); with `None`, every call must be served from the trace (offline).
    /// `models` gives the identity, the prices and the budgets; add `models.policy()` to the session's
    /// guards for the allow-list and the budgets to apply.
    pub async fn bind(
        addr: SocketAddr,
        session: Session,
        models: Models,
        upstream: Option<String>,
    ) -> Result<LlmProxy, Error> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| Error::Config(format!("cannot listen on {addr}: {e}")))?;
        let upstream = upstream.map(|u| u.trim_end_matches('/').to_owned());
        if let Some(u) = &upstream {
            let parsed = url::Url::parse(u)
                .map_err(|e| Error::Config(format!("upstream `{u}` is not a URL: {e}")))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(Error::Config(format!(
                    "upstream `{u}` must be an http:// or https:// URL"
                )));
            }
        }
        let client = reqwest::Client::builder()
            .build()
            .map_err(|e| Error::Config(format!("cannot build the upstream HTTP client: {e}")))?;
        Ok(LlmProxy {
            listener,
            state: Arc::new(State {
                session,
                models,
                upstream,
                client,
            }),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> Result<SocketAddr, Error> {
        self.listener
            .local_addr()
            .map_err(|e| Error::Config(format!("no local address: {e}")))
    }

    /// Serves until `shutdown` completes. Requests in progress then are abandoned; finish the session
    /// after this returns.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let LlmProxy { listener, state } = self;
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                () = &mut shutdown => return,
                accepted = listener.accept() => accepted,
            };
            let Ok((stream, _)) = accepted else { continue };
            let _ = stream.set_nodelay(true);
            let state = state.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let state = state.clone();
                    async move { Ok::<_, Infallible>(handle(&state, req).await) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    }
}

async fn handle(state: &Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let api = Api::of(req.uri().path());
    let Some(api) = api.filter(|_| req.method() == Method::POST) else {
        return api.unwrap_or(Api::ChatCompletions).error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            None,
            &format!(
                "the FailCore LLM proxy serves POST .../chat/completions and POST .../messages, not {} {}",
                req.method(),
                req.uri().path()
            ),
        );
    };
    let headers = FORWARDED
        .iter()
        .filter_map(|name| Some((*name, req.headers().get(*name)?.clone())))
        .collect();
    let body = match read_body(req.into_body()).await {
        Ok(b) => b,
        Err(message) => {
            return api.error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                None,
                &message,
            )
        }
    };
    let request = match parse_request(&body) {
        Ok(r) => r,
        Err(e) => return failcore_error(api, &e),
    };
    let upstream = Upstream {
        client: state.client.clone(),
        url: state
            .upstream
            .as_ref()
            .map(|u| format!("{u}{}", api.endpoint())),
        headers,
        body,
        failure: UpstreamFailure::default(),
        raw: Arc::default(),
    };
    if is_streaming(&request) {
        streamed(state, api, request, upstream).await
    } else {
        whole(state, api, request, upstream).await
    }
}

/// Reads a request body, up to [`MAX_REQUEST_BYTES`].
async fn read_body(body: Incoming) -> Result<Bytes, String> {
    match http_body_util::Limited::new(body, MAX_REQUEST_BYTES)
        .collect()
        .await
    {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => Err(format!("cannot read the request body: {e}")),
    }
}

struct Upstream {
    client: reqwest::Client,
    url: Option<String>,
    headers: Vec<(&'static str, hyper::header::HeaderValue)>,
    body: Bytes,
    failure: UpstreamFailure,
    /// The upstream's reply as it came, when the call was sent: passed on to the client as is rather than
    /// written again from its parsed form.
    raw: Arc<Mutex<Option<Bytes>>>,
}

impl Upstream {
    async fn open(&self) -> Result<reqwest::Response, String> {
        let Some(url) = &self.url else {
            return Err("no upstream: the proxy runs offline".into());
        };
        let mut request = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(self.body.clone());
        for (name, value) in &self.headers {
            request = request.header(*name, value.as_bytes());
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("upstream {url}: {e}"))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.bytes().await.unwrap_or_default();
        let message = format!(
            "upstream {url} answered {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        );
        if let Ok(mut f) = self.failure.lock() {
            *f = StatusCode::from_u16(status.as_u16())
                .ok()
                .map(|s| (s, body));
        }
        Err(message)
    }

    async fn whole(self) -> Result<Reply, String> {
        let response = self.open().await?;
        let bytes = response
            .bytes()
            .await
            .map_err(|e| format!("reading the upstream reply: {e}"))?;
        let reply = serde_json::from_slice(&bytes)
            .map(Reply::Body)
            .map_err(|e| format!("the upstream reply is not JSON: {e}"))?;
        if let Ok(mut raw) = self.raw.lock() {
            *raw = Some(bytes);
        }
        Ok(reply)
    }

    /// Streams the upstream's events to `tx` as they arrive, and returns them all.
    async fn chunks(self, tx: mpsc::Sender<Piece>, live: Arc<AtomicBool>) -> Result<Reply, String> {
        let response = self.open().await?;
        live.store(true, Ordering::SeqCst);
        let mut stream = response.bytes_stream();
        let mut splitter = SseSplitter::new();
        let mut chunks = Vec::new();
        while let Some(bytes) = stream.next().await {
            let bytes = bytes.map_err(|e| format!("reading the upstream stream: {e}"))?;
            for data in splitter.push(&bytes) {
                // A client that went away does not stop the recording.
                let _ = tx.send(Piece::Chunk(data.clone())).await;
                chunks.push(data);
            }
        }
        if let Some(data) = splitter.finish() {
            let _ = tx.send(Piece::Chunk(data.clone())).await;
            chunks.push(data);
        }
        Ok(Reply::Chunks(chunks))
    }
}

async fn whole(state: &Arc<State>, api: Api, request: Value, upstream: Upstream) -> Response<Body> {
    let failure = upstream.failure.clone();
    let raw = upstream.raw.clone();
    let outcome = state
        .session
        .scope(state.models.call(&request, upstream.whole()))
        .await;
    let sent = raw.lock().ok().and_then(|mut raw| raw.take());
    match outcome {
        Ok(reply) => match (reply.reply, sent) {
            (Reply::Body(_), Some(bytes)) => bytes_response(StatusCode::OK, bytes),
            (Reply::Body(body), None) => json_response(StatusCode::OK, &body),
            (Reply::Chunks(_), _) => api.error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "failcore_replay",
                None,
                "the trace holds a streamed reply for this non-streamed request",
            ),
        },
        Err(e) => passed_through(&failure).unwrap_or_else(|| failcore_error(api, &e)),
    }
}

enum Piece {
    Chunk(String),
    Fail(Response<Body>),
}

async fn streamed(
    state: &Arc<State>,
    api: Api,
    request: Value,
    upstream: Upstream,
) -> Response<Body> {
    let (tx, mut rx) = mpsc::channel::<Piece>(64);
    let live = Arc::new(AtomicBool::new(false));
    let failure = upstream.failure.clone();
    let task_state = state.clone();
    tokio::spawn(async move {
        let send = upstream.chunks(tx.clone(), live.clone());
        let outcome = task_state
            .session
            .scope(task_state.models.call(&request, send))
            .await
            .map(ModelReplyChunks::from);
        if live.load(Ordering::SeqCst) {
            // Its events went to the client as they arrived.
            return;
        }
        let piece = match outcome {
            Ok(ModelReplyChunks(Some(chunks))) => {
                for chunk in chunks {
                    if tx.send(Piece::Chunk(chunk)).await.is_err() {
                        return;
                    }
                }
                return;
            }
            Ok(ModelReplyChunks(None)) => Piece::Fail(api.error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "failcore_replay",
                None,
                "the trace holds a whole reply for this streamed request",
            )),
            Err(e) => {
                Piece::Fail(passed_through(&failure).unwrap_or_else(|| failcore_error(api, &e)))
            }
        };
        let _ = tx.send(piece).await;
    });
    match rx.recv().await {
        None => api.error(
            StatusCode::BAD_GATEWAY,
            "failcore_upstream",
            None,
            "the upstream stream ended before its first event",
        ),
        Some(Piece::Fail(response)) => response,
        Some(Piece::Chunk(first)) => {
            let rest = futures_util::stream::unfold(rx, |mut rx| async move {
                match rx.recv().await {
                    Some(Piece::Chunk(c)) => Some((c, rx)),
                    _ => None,
                }
            });
            let events = futures_util::stream::iter([first])
                .chain(rest)
                .map(move |data| Ok::<_, Infallible>(Frame::data(api.frame(&data))));
            let mut response = Response::new(BodyExt::boxed(StreamBody::new(events)));
            let headers = response.headers_mut();
            headers.insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/event-stream"),
            );
            headers.insert(
                hyper::header::CACHE_CONTROL,
                hyper::header::HeaderValue::from_static("no-cache"),
            );
            response
        }
    }
}

/// The chunks of a model reply, `None` when it is a whole reply.
struct ModelReplyChunks(Option<Vec<String>>);

impl From<crate::model::ModelReply> for ModelReplyChunks {
    fn from(r: crate::model::ModelReply) -> Self {
        match r.reply {
            Reply::Chunks(c) => ModelReplyChunks(Some(c)),
            Reply::Body(_) => ModelReplyChunks(None),
        }
    }
}

fn passed_through(failure: &UpstreamFailure) -> Option<Response<Body>> {
    let (status, body) = failure.lock().ok()?.take()?;
    let mut response = Response::new(BodyExt::boxed(Full::new(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Some(response)
}

fn failcore_error(api: Api, e: &Error) -> Response<Body> {
    match e {
        Error::Blocked { rule, .. } => api.error(
            StatusCode::FORBIDDEN,
            "failcore_blocked",
            Some(rule),
            &e.to_string(),
        ),
        Error::ReplayMiss { .. } => api.error(
            StatusCode::FAILED_DEPENDENCY,
            "failcore_replay_miss",
            None,
            &e.to_string(),
        ),
        Error::InvalidArguments { .. } => api.error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            None,
            &e.to_string(),
        ),
        Error::Tool { .. } => api.error(
            StatusCode::BAD_GATEWAY,
            "failcore_upstream",
            None,
            &e.to_string(),
        ),
        _ => api.error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "failcore_error",
            Some(e.kind()),
            &e.to_string(),
        ),
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response<Body> {
    bytes_response(
        status,
        Bytes::from(serde_json::to_vec(body).unwrap_or_default()),
    )
}

/// A JSON body already encoded.
fn bytes_response(status: StatusCode, bytes: Bytes) -> Response<Body> {
    let mut response = Response::new(BodyExt::boxed(Full::new(bytes)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_by_path() {
        assert_eq!(Api::of("/v1/chat/completions"), Some(Api::ChatCompletions));
        assert_eq!(Api::of("/v1/messages"), Some(Api::Messages));
        assert_eq!(Api::of("/v1/models"), None);
    }

    #[test]
    fn messages_events_are_named_after_their_type_and_recorded_data_cannot_start_an_event() {
        let framed = Api::Messages.frame(r#"{"type":"message_stop"}"#);
        assert_eq!(
            &framed[..],
            b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
        );
        assert_eq!(
            &Api::ChatCompletions.frame("[DONE]")[..],
            b"data: [DONE]\n\n"
        );
        // Data from a trace that holds line breaks stays data: every line of it is a `data:` line.
        let hostile = "{\"type\":\"ping\"}\n\nevent: error\ndata: {\"forged\":true}";
        let framed = String::from_utf8(Api::Messages.frame(hostile).to_vec()).unwrap();
        assert!(
            framed.ends_with("\n\n") && framed.matches("\n\n").count() == 1,
            "{framed:?}"
        );
        assert!(
            framed
                .lines()
                .all(|l| l.is_empty() || l.starts_with("data: ") || l == "event: ping"),
            "{framed:?}"
        );
        // Only plain names become event names.
        assert!(
            !String::from_utf8(Api::Messages.frame(r#"{"type":"a\r\nevent: x"}"#).to_vec())
                .unwrap()
                .starts_with("event:")
        );
    }
}
