//! A remote MCP server over the Streamable HTTP transport (`--url`), in place of a child's stdio: each
//! message for the server is POSTed to its URL; each answer, as `application/json` or in an SSE stream,
//! goes where a line from a child's stdout would. The server's `Mcp-Session-Id` and the negotiated
//! `MCP-Protocol-Version` are sent back on every later request, and the session is ended (`DELETE`) when
//! the proxy's session ends. A request that fails (the server unreachable, a certificate refused, an HTTP
//! error) is answered with a JSON-RPC error that says why. Messages the server would send on a stream of
//! its own (`GET`) are not asked for.

use super::catalog::SharedCatalog;
use super::framing::MAX_LINE;
use super::message::{cut, rpc_error};
use super::upstream::{Failure, Server, Upstream};
use super::{Diagnostics, GRACE};
use crate::model::SseSplitter;
use crate::proxy_common::http::{self, describe};
use crate::{Error, Landed};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How long connecting to the server may take (TCP, a proxy, TLS).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// A remote server, and how to reach it.
pub(super) struct Remote {
    pub(super) url: reqwest::Url,
    /// The headers given with `--header` and `--header-env` (credentials among them): never recorded.
    headers: HeaderMap,
    client: reqwest::Client,
    /// The `Authorization` of the HTTP client in front (`--listen` without a token of its own), passed on
    /// to the server and never recorded; the latest one it sent.
    pub(super) authorization: Mutex<Option<HeaderValue>>,
}

impl Remote {
    /// Checks the URL and the headers, and builds the client (the platform's roots, `SSL_CERT_FILE`,
    /// the CAs of `upstream_ca`, `HTTPS_PROXY`; no redirect to another origin).
    pub(super) fn new(
        url: &str,
        headers: &[(String, String)],
        upstream_ca: &[PathBuf],
        read_timeout: Duration,
    ) -> Result<Remote, Error> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| Error::Config(format!("--url {url}: not a URL: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Error::Config(format!(
                "--url {url}: give an http:// or https:// URL"
            )));
        }
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            let name = HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| Error::Config(format!("--header: `{name}` is not a header name")))?;
            let mut value = HeaderValue::from_str(value.trim()).map_err(|_| {
                Error::Config(format!("--header {name}: the value is not a header value"))
            })?;
            value.set_sensitive(true);
            map.append(name, value);
        }
        let client = http::client(&http::ClientOptions {
            upstream_ca,
            connect_timeout: CONNECT_TIMEOUT,
            read_timeout,
        })?;
        Ok(Remote {
            url: parsed,
            headers: map,
            client,
            authorization: Mutex::new(None),
        })
    }

    /// The identity of the server, for the trace: its URL (without credentials in it).
    pub(super) fn identity(&self) -> String {
        let mut url = self.url.clone();
        let _ = url.set_username("");
        let _ = url.set_password(None);
        url.set_query(None);
        url.set_fragment(None);
        url.to_string()
    }
}

/// What the server told this session: its session id, the protocol version agreed.
#[derive(Default)]
struct Negotiated {
    session: Option<HeaderValue>,
    version: Option<HeaderValue>,
}

/// Connects a session to the remote server: messages from the relay are POSTed, requests concurrently
/// (except `initialize`, whose answer names the session), notifications and responses in order.
pub(super) fn connect(
    remote: Arc<Remote>,
    to_client: mpsc::UnboundedSender<String>,
    catalog: SharedCatalog,
    timeout: Duration,
    diagnostics: Diagnostics,
) -> Server {
    let (upstream, mut from_relay, gone_tx) = Upstream::new(to_client, timeout, diagnostics);
    let (close, mut close_rx) = oneshot::channel::<()>();
    let link = Arc::new(Link {
        remote,
        upstream: upstream.clone(),
        catalog,
        negotiated: Mutex::default(),
    });
    let task = tokio::spawn(async move {
        // Kept for as long as the server is reachable at all: a remote server is never "gone".
        let _gone = gone_tx;
        let mut requests = tokio::task::JoinSet::new();
        loop {
            let line = tokio::select! {
                biased;
                line = from_relay.recv() => line,
                _ = &mut close_rx => from_relay.try_recv().ok(),
                Some(_) = requests.join_next(), if !requests.is_empty() => continue,
            };
            let Some(line) = line else { break };
            let Ok(message) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            let id = message
                .get("id")
                .filter(|id| !id.is_null() && message.get("method").is_some())
                .cloned();
            let initialize = message.get("method").and_then(Value::as_str) == Some("initialize");
            if id.is_some() && !initialize {
                let link = link.clone();
                requests.spawn(async move { link.post(line, id, false).await });
            } else {
                link.post(line, id, initialize).await;
            }
        }
        requests.abort_all();
        link.end().await;
    });
    Server::remote(upstream, task, close)
}

/// One session with the remote server.
struct Link {
    remote: Arc<Remote>,
    upstream: Upstream,
    catalog: SharedCatalog,
    negotiated: Mutex<Negotiated>,
}

impl Link {
    fn request(&self, method: reqwest::Method) -> reqwest::RequestBuilder {
        let mut headers = self.remote.headers.clone();
        if !headers.contains_key(AUTHORIZATION) {
            if let Some(a) = self
                .remote
                .authorization
                .lock()
                .ok()
                .and_then(|a| a.clone())
            {
                headers.insert(AUTHORIZATION, a);
            }
        }
        if let Ok(n) = self.negotiated.lock() {
            if let Some(s) = &n.session {
                headers.insert("mcp-session-id", s.clone());
            }
            if let Some(v) = &n.version {
                headers.insert("mcp-protocol-version", v.clone());
            }
        }
        self.remote
            .client
            .request(method, self.remote.url.clone())
            .headers(headers)
    }

    /// Answers the request `id` (if it is one) with an error naming why it failed.
    fn fail(&self, id: &Option<Value>, why: &str, landed: Landed) {
        match id {
            Some(id) => {
                if self.upstream.fail_proxied(id, Failure::new(why, landed)) {
                    return;
                }
                let answer = rpc_error(id, -32000, &format!("failcore proxy: {why}"));
                self.upstream
                    .route_from_server(&self.catalog, answer.to_string().into_bytes());
            }
            None => self.upstream.diagnostics().report(why),
        }
    }

    /// Routes one message of the server's; true when it answers `id`.
    fn route(&self, text: &str, id: &Option<Value>, initialize: bool) -> bool {
        let Ok(message) = serde_json::from_str::<Value>(text) else {
            self.upstream.diagnostics().report(&format!(
                "dropped a message from the MCP server that is not JSON: {}",
                cut(&text.escape_debug().to_string())
            ));
            return false;
        };
        let answers =
            id.is_some() && message.get("method").is_none() && message.get("id") == id.as_ref();
        if answers && initialize {
            let version = message
                .pointer("/result/protocolVersion")
                .and_then(Value::as_str)
                .and_then(|v| HeaderValue::from_str(v).ok());
            if let (Some(v), Ok(mut n)) = (version, self.negotiated.lock()) {
                n.version = Some(v);
            }
        }
        self.upstream
            .route_from_server(&self.catalog, text.as_bytes().to_vec());
        answers
    }

    /// POSTs one message; the answers it gets are routed.
    async fn post(&self, line: String, id: Option<Value>, initialize: bool) {
        let request = self
            .request(reqwest::Method::POST)
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json, text/event-stream")
            .body(line);
        let url = self.remote.identity();
        let mut response = match request.send().await {
            Ok(r) => r,
            Err(e) => {
                // Never connected: the server did not get it.
                let landed = if e.is_connect() {
                    Landed::No
                } else {
                    Landed::Unknown
                };
                return self.fail(
                    &id,
                    &format!("the MCP server at {url}: {}", describe(&e)),
                    landed,
                );
            }
        };
        if initialize {
            if let (Some(s), Ok(mut n)) = (
                response.headers().get("mcp-session-id").cloned(),
                self.negotiated.lock(),
            ) {
                n.session = Some(s);
            }
        }
        let status = response.status();
        if !status.is_success() {
            let body = read_capped(&mut response, 512).await.unwrap_or_default();
            let body = String::from_utf8_lossy(&body);
            let hint = match status.as_u16() {
                401 | 403 => " (give its credentials with --header or --header-env)",
                404 if !initialize => " (its session may have ended)",
                _ => "",
            };
            // A client error (4xx) is a refusal; a server error may come after the server acted.
            let landed = if status.is_client_error() {
                Landed::No
            } else {
                Landed::Unknown
            };
            return self.fail(
                &id,
                &format!(
                    "the MCP server at {url} answered HTTP {status}{hint}: {}",
                    cut(body.trim())
                ),
                landed,
            );
        }
        if id.is_none() {
            return;
        }
        let streamed = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.trim_start().starts_with("text/event-stream"));
        let mut answered = false;
        if streamed {
            let mut events = SseSplitter::new();
            let mut pending = 0usize;
            loop {
                let chunk = match response.chunk().await {
                    Ok(Some(c)) => c,
                    Ok(None) => break,
                    Err(e) => {
                        if !answered {
                            self.fail(
                                &id,
                                &format!("the MCP server's stream: {}", describe(&e)),
                                Landed::Unknown,
                            );
                        }
                        return;
                    }
                };
                pending += chunk.len();
                for data in events.push(&chunk) {
                    pending = 0;
                    answered |= self.route(&data, &id, initialize);
                }
                if pending > MAX_LINE {
                    break;
                }
            }
            if let Some(data) = events.finish() {
                answered |= self.route(&data, &id, initialize);
            }
        } else {
            match read_capped(&mut response, MAX_LINE).await {
                Ok(body) if body.len() > MAX_LINE => {
                    return self.fail(
                        &id,
                        &format!("the MCP server's answer is over {MAX_LINE} bytes"),
                        Landed::Unknown,
                    );
                }
                Ok(body) => {
                    let text = String::from_utf8_lossy(&body);
                    match serde_json::from_str::<Value>(&text) {
                        Ok(Value::Array(messages)) => {
                            for m in messages {
                                answered |= self.route(&m.to_string(), &id, initialize);
                            }
                        }
                        Ok(_) => answered = self.route(&text, &id, initialize),
                        Err(_) => {
                            return self.fail(
                                &id,
                                &format!(
                                    "the MCP server's answer is not JSON: {}",
                                    cut(text.trim())
                                ),
                                Landed::Unknown,
                            )
                        }
                    }
                }
                Err(e) => return self.fail(&id, &e, Landed::Unknown),
            }
        }
        if !answered {
            self.fail(
                &id,
                "the MCP server's reply held no answer to the request",
                Landed::Unknown,
            );
        }
    }

    /// Ends the server's session, if it gave one (best effort, bounded).
    async fn end(&self) {
        let has_session = self
            .negotiated
            .lock()
            .map(|n| n.session.is_some())
            .unwrap_or(false);
        if has_session {
            let request = self.request(reqwest::Method::DELETE).send();
            let _ = tokio::time::timeout(GRACE / 2, request).await;
        }
    }
}

/// Reads a body up to `max` bytes (one more tells the caller it was larger).
async fn read_capped(response: &mut reqwest::Response, max: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| describe(&e))? {
        let room = max.saturating_add(1).saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() > max {
            break;
        }
    }
    Ok(out)
}
