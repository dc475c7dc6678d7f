//! The LLM proxy (feature `llm-proxy`): a local HTTP endpoint speaking the OpenAI Chat Completions and
//! Responses APIs and the Anthropic Messages API that makes each model call a step of a FailCore run.
//! `failcore llm-proxy --upstream <url>` runs it.
//!
//! `POST <any prefix>/chat/completions`, `.../responses`, `.../messages` and `.../embeddings` are model
//! calls ([`crate::model`]): checked by the session's policies (a refused call never reaches the upstream),
//! answered from the trace when resuming or offline, and otherwise forwarded to the same path under the
//! upstream's base URL, the reply recorded. Streamed replies (`"stream": true`) are passed to the client
//! event by event as they arrive, recorded chunk by chunk, and replayed as the same events (for the
//! Messages and Responses APIs with their `event:` names, which are the `type` of their data).
//! `GET .../models` and `GET .../models/<id>` are steps too (tool `llm:models`), so an offline client can
//! list models and look one up. The
//! client's credentials (`Authorization`, `x-api-key`, `api-key`) and API headers (`anthropic-version`,
//! `anthropic-beta`, `openai-organization`, `openai-project`, `openai-beta`) are forwarded and never
//! recorded: wherever a credential the client sent appears in a reply or an error, what is recorded has
//! it masked.
//!
//! Upstreams are reached over HTTP or HTTPS (rustls; the platform's roots, `SSL_CERT_FILE` and
//! `SSL_CERT_DIR`, a private CA with [`Options::upstream_ca`]; `HTTPS_PROXY`, `HTTP_PROXY` and `NO_PROXY`
//! as usual), over pooled keep-alive connections. A redirect to another origin is never followed. A
//! request is parsed once, and one that names a key twice is refused (`400`), so that the request the
//! policy decides on and the trace records is the one the upstream reads.
//!
//! Everything is bounded ([`Options`]): connections, header and body read time, idle connections, the
//! upstream's connect and read time, the size of a reply. A client that leaves a streamed call cancels it
//! upstream, and the step is recorded as cancelled. A stream that fails once its first events have gone to
//! the client (over the reply cap, the upstream cut off or too slow) ends with an error event, whose data
//! is the API's error shape, rather than as if it were whole.
//!
//! Errors are in the shape of the API called (`{"error": {"message", "type", "code"}}`, or
//! `{"type": "error", "error": {"type", "message", "code"}}` for Messages): a refused call is `403` with
//! type `failcore_blocked` and the rule as its code; a call missing from the trace offline is `424`
//! (`failcore_replay_miss`); an upstream error is passed through with its status and body; an upstream
//! that cannot be reached (a certificate refused, with its reason; a timeout; a redirect elsewhere) is
//! `502` (`failcore_upstream`).

mod api;
mod upstream;

use crate::model::{is_streaming, parse_request, Models, Reply};
use crate::{DynamicTool, Effect, Error, Session};
use api::Api;
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use upstream::{Credentials, Piece, Upstream, UpstreamFailure};

/// The largest request body the proxy reads (a long conversation with images fits).
pub const MAX_REQUEST_BYTES: usize = 32 * 1024 * 1024;

use crate::proxy_common::http::{self, Body};
use crate::proxy_common::ListenLimits;

/// The proxy's bounds and its way to the upstream. Every field has a default fit for a local proxy in
/// front of a hosted provider; change them with the setters.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Options {
    /// PEM files of CAs trusted for the upstream, beside the platform's roots.
    pub upstream_ca: Vec<PathBuf>,
    /// The listener's bounds: connections at once (by default half the process's file descriptor
    /// limit, each connection may hold one to the upstream, within 16 to 4096) and how long a client may
    /// take; the same as the MCP proxy's listener.
    pub listen: ListenLimits,
    /// How long connecting to the upstream may take (TCP, a proxy, TLS).
    pub connect_timeout: Duration,
    /// The longest wait for the next bytes of the upstream's reply (a model may think for minutes
    /// before its first token).
    pub read_timeout: Duration,
    /// The largest reply (whole, or a stream in all) the proxy relays and records; a larger one fails
    /// the call, recorded as failed (a stream already under way ends with an error event).
    pub max_reply_bytes: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            upstream_ca: Vec::new(),
            listen: ListenLimits::default(),
            connect_timeout: Duration::from_secs(15),
            read_timeout: Duration::from_secs(600),
            max_reply_bytes: 64 * 1024 * 1024,
        }
    }
}

impl Options {
    /// Trusts the CAs in a PEM file for the upstream, beside the platform's roots.
    pub fn upstream_ca(mut self, pem: impl Into<PathBuf>) -> Self {
        self.upstream_ca.push(pem.into());
        self
    }

    /// See [`ListenLimits::max_connections`].
    pub fn max_connections(mut self, n: usize) -> Self {
        self.listen.max_connections = Some(n.max(1));
        self
    }

    /// See [`ListenLimits::header_timeout`].
    pub fn header_timeout(mut self, d: Duration) -> Self {
        self.listen.header_timeout = d;
        self
    }

    /// See [`ListenLimits::body_timeout`].
    pub fn body_timeout(mut self, d: Duration) -> Self {
        self.listen.body_timeout = d;
        self
    }

    /// See [`ListenLimits::idle_timeout`].
    pub fn idle_timeout(mut self, d: Duration) -> Self {
        self.listen.idle_timeout = d;
        self
    }

    /// See [`Options::connect_timeout`].
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// See [`Options::read_timeout`].
    pub fn read_timeout(mut self, d: Duration) -> Self {
        self.read_timeout = d;
        self
    }

    /// See [`Options::max_reply_bytes`].
    pub fn max_reply_bytes(mut self, n: usize) -> Self {
        self.max_reply_bytes = n;
        self
    }
}

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
    options: Options,
}

/// The request headers forwarded to the upstream (credentials and API versions): never recorded.
const FORWARDED: &[&str] = &[
    "authorization",
    "x-api-key",
    "api-key",
    "anthropic-version",
    "anthropic-beta",
    "openai-organization",
    "openai-project",
    "openai-beta",
];

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
        Self::bind_with(addr, session, models, upstream, Options::default()).await
    }

    /// [`LlmProxy::bind`] with other [`Options`].
    pub async fn bind_with(
        addr: SocketAddr,
        session: Session,
        models: Models,
        upstream: Option<String>,
        options: Options,
    ) -> Result<LlmProxy, Error> {
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
        let client = http::client(&http::ClientOptions {
            upstream_ca: &options.upstream_ca,
            connect_timeout: options.connect_timeout,
            read_timeout: options.read_timeout,
        })?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| Error::Config(format!("cannot listen on {addr}: {e}")))?;
        Ok(LlmProxy {
            listener,
            state: Arc::new(State {
                session,
                models,
                upstream,
                client,
                options,
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
        let limits = state.options.listen.http();
        let handler = move |req| {
            let state = state.clone();
            async move { handle(&state, req).await }
        };
        http::serve(&listener, limits, "llm proxy", handler, shutdown).await;
    }
}

async fn handle(state: &Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    if req.method() == Method::GET {
        if path.ends_with("/models") {
            return models_list(state, &req, "/models".into()).await;
        }
        if let Some(id) = model_id(&path) {
            return models_list(state, &req, format!("/models/{id}")).await;
        }
    }
    let api = Api::of(&path);
    let Some(api) = api.filter(|_| req.method() == Method::POST) else {
        return api.unwrap_or(Api::ChatCompletions).error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            None,
            &format!(
                "the FailCore LLM proxy serves POST .../chat/completions, .../responses, .../messages and \
                 .../embeddings, and GET .../models and .../models/<id>, not {} {}",
                req.method(),
                req.uri().path()
            ),
        );
    };
    let headers = forwarded(&req);
    let body = match tokio::time::timeout(
        state.options.listen.body_timeout,
        read_body(req.into_body()),
    )
    .await
    {
        Ok(Ok(b)) => b,
        Ok(Err(message)) => {
            return api.error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                None,
                &message,
            )
        }
        Err(_) => {
            return api.error(
                StatusCode::REQUEST_TIMEOUT,
                "invalid_request_error",
                None,
                &format!(
                    "the request body took longer than {} s to arrive",
                    state.options.listen.body_timeout.as_secs()
                ),
            )
        }
    };
    let request = match parse_request(&body) {
        Ok(r) => r,
        Err(e) => return failcore_error(api, &e),
    };
    if api == Api::Embeddings && is_streaming(&request) {
        return api.error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            None,
            "embeddings are never streamed",
        );
    }
    let upstream = state.upstream(reqwest::Method::POST, api.endpoint(), headers, body);
    if is_streaming(&request) {
        streamed(state, api, request, upstream).await
    } else {
        whole(state, api, request, upstream).await
    }
}

fn forwarded(req: &Request<Incoming>) -> Vec<(&'static str, hyper::header::HeaderValue)> {
    FORWARDED
        .iter()
        .filter_map(|name| Some((*name, req.headers().get(*name)?.clone())))
        .collect()
}

impl State {
    fn upstream(
        &self,
        method: reqwest::Method,
        endpoint: &str,
        headers: Vec<(&'static str, hyper::header::HeaderValue)>,
        body: Bytes,
    ) -> Upstream {
        Upstream {
            client: self.client.clone(),
            url: self.upstream.as_ref().map(|u| format!("{u}{endpoint}")),
            method,
            credentials: Credentials::from_headers(&headers),
            headers,
            body,
            max_reply: self.options.max_reply_bytes,
            failure: UpstreamFailure::default(),
            raw: Arc::default(),
        }
    }
}

/// The model id of `GET .../models/<id>`: one path segment (as sent, percent-encoded).
fn model_id(path: &str) -> Option<&str> {
    let (_, id) = path.rsplit_once("/models/")?;
    (!id.is_empty() && !id.contains('/') && id != "." && id != "..").then_some(id)
}

/// `GET .../models` and `GET .../models/<id>`: the upstream's list, or one model, recorded as a step
/// (tool `llm:models`, the upstream path its argument) so that resume and
/// offline answer it from the trace.
async fn models_list(
    state: &Arc<State>,
    req: &Request<Incoming>,
    endpoint: String,
) -> Response<Body> {
    let api = Api::ChatCompletions;
    let tool = match DynamicTool::new("llm:models", "model", Effect::Read) {
        Ok(t) => t,
        Err(e) => return failcore_error(api, &e),
    };
    let upstream = state.upstream(
        reqwest::Method::GET,
        &endpoint,
        forwarded(req),
        Bytes::new(),
    );
    let failure = upstream.failure.clone();
    let body: crate::DynamicBody = Box::pin(async move {
        match upstream.whole().await? {
            Reply::Body(v) => Ok(v),
            Reply::Chunks(_) => Err("the upstream streamed its model list".into()),
        }
    });
    let outcome = state
        .session
        .scope(tool.call(&json!({ "path": endpoint }), body))
        .await;
    match outcome {
        Ok(list) => json_response(StatusCode::OK, &list),
        Err(e) => passed_through(&failure).unwrap_or_else(|| failcore_error(api, &e)),
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
        let call = task_state
            .session
            .scope(task_state.models.call(&request, send));
        // The client leaving (its end of the channel dropped) drops the call: the upstream request is
        // abandoned and the step recorded as cancelled.
        let outcome = tokio::select! {
            outcome = call => outcome.map(ModelReplyChunks::from),
            () = tx.closed() => return,
        };
        if live.load(Ordering::SeqCst) {
            // Its events went to the client as they arrived. A stream that failed on the way (over the
            // reply cap, the upstream cut off) ends with an error event, never as if it were whole.
            if let Err(e) = outcome {
                let event = api.error_body("failcore_upstream", None, &e.to_string());
                let _ = tx.send(Piece::Chunk(event.to_string())).await;
            }
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
    use super::model_id;

    #[test]
    fn a_model_is_looked_up_by_one_path_segment() {
        assert_eq!(model_id("/v1/models/gpt-4o"), Some("gpt-4o"));
        assert_eq!(
            model_id("/v1/models/ft:gpt-4o:org::abc"),
            Some("ft:gpt-4o:org::abc")
        );
        assert_eq!(model_id("/v1/models"), None);
        assert_eq!(model_id("/v1/models/"), None);
        assert_eq!(model_id("/v1/models/a/b"), None);
        assert_eq!(model_id("/v1/models/.."), None);
    }
}
