//! The way to the upstream: the HTTP client (TLS with the platform's roots, a private CA, the standard
//! proxy variables, no redirect to another origin, timeouts), one request with its caps, and the masking
//! of the client's credentials in whatever is recorded of the reply.

use crate::model::{Reply, SseSplitter};
use crate::proxy_common::http::describe;
use bytes::{Bytes, BytesMut};
use hyper::header::HeaderValue;
use hyper::StatusCode;
use std::borrow::Cow;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// How much of an upstream error body is kept (passed through to the client and recorded, masked).
const MAX_ERROR_BODY: usize = 64 * 1024;

/// The credentials a client sent, to be masked wherever they would be recorded.
#[derive(Debug, Default, Clone)]
pub(crate) struct Credentials(Vec<String>);

/// Headers whose values are credentials.
const CREDENTIAL_HEADERS: &[&str] = &[
    "authorization",
    "x-api-key",
    "api-key",
    "proxy-authorization",
];

/// Shorter values are not masked: they would match ordinary text, and are no secret worth the name.
const MIN_SECRET: usize = 8;

/// What replaces a credential in what is recorded.
const MASK: &str = "[redacted:credential]";

impl Credentials {
    pub(crate) fn from_headers(headers: &[(&'static str, HeaderValue)]) -> Credentials {
        let mut secrets = Vec::new();
        for (name, value) in headers {
            if !CREDENTIAL_HEADERS.contains(name) {
                continue;
            }
            let Ok(value) = value.to_str() else { continue };
            let value = value.trim();
            // `Bearer <token>`: the token alone is what an echo would show.
            if let Some((_, token)) = value.split_once(' ') {
                secrets.push(token.trim().to_owned());
            }
            secrets.push(value.to_owned());
        }
        secrets.retain(|s| s.len() >= MIN_SECRET);
        // The longest first, so that a whole header value is masked before the token inside it.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Credentials(secrets)
    }

    /// `text` with every credential replaced.
    pub(crate) fn mask<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for secret in &self.0 {
            if out.contains(secret.as_str()) {
                out = Cow::Owned(out.replace(secret.as_str(), MASK));
            }
        }
        out
    }

    /// A JSON value with every credential replaced in its strings and keys.
    pub(crate) fn mask_value(&self, value: &mut serde_json::Value) {
        use serde_json::Value;
        if self.0.is_empty() {
            return;
        }
        match value {
            Value::String(s) => {
                if let Cow::Owned(masked) = self.mask(s) {
                    *s = masked;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.mask_value(v)),
            Value::Object(map) => {
                let keys: Vec<String> = map
                    .keys()
                    .filter(|k| matches!(self.mask(k), Cow::Owned(_)))
                    .cloned()
                    .collect();
                for key in keys {
                    if let Some(v) = map.remove(&key) {
                        map.insert(self.mask(&key).into_owned(), v);
                    }
                }
                map.values_mut().for_each(|v| self.mask_value(v));
            }
            _ => {}
        }
    }
}

/// An upstream error reply, kept to be passed through to the client.
pub(crate) type UpstreamFailure = Arc<Mutex<Option<(StatusCode, Bytes)>>>;

/// One request to the upstream.
pub(crate) struct Upstream {
    pub(crate) client: reqwest::Client,
    pub(crate) url: Option<String>,
    pub(crate) method: reqwest::Method,
    pub(crate) headers: Vec<(&'static str, HeaderValue)>,
    pub(crate) body: Bytes,
    pub(crate) credentials: Credentials,
    pub(crate) max_reply: usize,
    pub(crate) failure: UpstreamFailure,
    /// The upstream's reply as it came, when the call was sent: passed on to the client as is rather than
    /// written again from its parsed form.
    pub(crate) raw: Arc<Mutex<Option<Bytes>>>,
}

/// A piece of a streamed reply on its way to the client.
pub(crate) enum Piece {
    Chunk(String),
    Fail(hyper::Response<super::Body>),
}

impl Upstream {
    async fn open(&self) -> Result<reqwest::Response, String> {
        let Some(url) = &self.url else {
            return Err("no upstream: the proxy runs offline".into());
        };
        let mut request = self.client.request(self.method.clone(), url);
        if !self.body.is_empty() {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(self.body.clone());
        }
        for (name, value) in &self.headers {
            request = request.header(*name, value.as_bytes());
        }
        let response = request
            .send()
            .await
            .map_err(|e| self.masked(format!("upstream {url}: {}", describe(&e))))?;
        let status = response.status();
        if status.is_success() {
            if let Some(len) = response.content_length() {
                if len > self.max_reply as u64 {
                    return Err(self.too_large(url));
                }
            }
            return Ok(response);
        }
        let body = read_capped(response, MAX_ERROR_BODY)
            .await
            .unwrap_or_default();
        // Masked whole before it is cut short: a credential across the cut would leave a part of it.
        let text = String::from_utf8_lossy(&body);
        let shown: String = self.credentials.mask(&text).chars().take(300).collect();
        let message = self.masked(format!("upstream {url} answered {status}: {shown}"));
        if let Ok(mut f) = self.failure.lock() {
            *f = StatusCode::from_u16(status.as_u16())
                .ok()
                .map(|s| (s, body));
        }
        Err(message)
    }

    fn masked(&self, text: String) -> String {
        match self.credentials.mask(&text) {
            Cow::Borrowed(_) => text,
            Cow::Owned(masked) => masked,
        }
    }

    fn too_large(&self, url: &str) -> String {
        format!(
            "upstream {url}: the reply exceeds the proxy's limit of {} bytes (--max-reply-bytes)",
            self.max_reply
        )
    }

    /// A whole reply, read up to the cap; what is recorded has the credentials masked.
    pub(crate) async fn whole(self) -> Result<Reply, String> {
        let response = self.open().await?;
        let url = self.url.clone().unwrap_or_default();
        let bytes = match read_capped(response, self.max_reply).await {
            Ok(b) if b.len() <= self.max_reply => b,
            Ok(_) => return Err(self.too_large(&url)),
            Err(e) => return Err(self.masked(format!("reading the upstream reply: {e}"))),
        };
        let mut body: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| format!("the upstream reply is not JSON: {e}"))?;
        self.credentials.mask_value(&mut body);
        if let Ok(mut raw) = self.raw.lock() {
            *raw = Some(bytes);
        }
        Ok(Reply::Body(body))
    }

    /// Streams the upstream's events to `tx` as they arrive, and returns them all (masked). Fails when
    /// the reply grows past the cap, and stops (the upstream connection dropped) when the client left:
    /// the caller then drops this future, and the step is recorded as cancelled.
    pub(crate) async fn chunks(
        self,
        tx: mpsc::Sender<Piece>,
        live: Arc<std::sync::atomic::AtomicBool>,
    ) -> Result<Reply, String> {
        let mut response = self.open().await?;
        live.store(true, std::sync::atomic::Ordering::SeqCst);
        let url = self.url.clone().unwrap_or_default();
        let mut splitter = SseSplitter::new();
        let mut chunks = Vec::new();
        let mut read = 0usize;
        loop {
            let bytes = match response.chunk().await {
                Ok(Some(b)) => b,
                Ok(None) => break,
                Err(e) => {
                    return Err(
                        self.masked(format!("reading the upstream stream: {}", describe(&e)))
                    )
                }
            };
            read = read.saturating_add(bytes.len());
            if read > self.max_reply {
                return Err(self.too_large(&url));
            }
            for data in splitter.push(&bytes) {
                self.forward(&tx, data, &mut chunks).await;
            }
        }
        if let Some(data) = splitter.finish() {
            self.forward(&tx, data, &mut chunks).await;
        }
        Ok(Reply::Chunks(chunks))
    }

    async fn forward(&self, tx: &mpsc::Sender<Piece>, data: String, chunks: &mut Vec<String>) {
        let recorded = self.credentials.mask(&data).into_owned();
        // A client that left is noticed by the caller (the channel closed), which drops this future.
        let _ = tx.send(Piece::Chunk(data)).await;
        chunks.push(recorded);
    }
}

/// Reads a reply's body up to `max` bytes (one byte more tells the caller it was larger).
async fn read_capped(mut response: reqwest::Response, max: usize) -> Result<Bytes, String> {
    let mut out = BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| describe(&e))? {
        let room = max.saturating_add(1).saturating_sub(out.len());
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() > max {
            break;
        }
    }
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, HeaderValue)> {
        pairs
            .iter()
            .map(|(n, v)| (*n, HeaderValue::from_str(v).unwrap()))
            .collect()
    }

    #[test]
    fn every_credential_is_masked_whatever_its_shape() {
        let key = "0123456789abcdef0123456789abcdef"; // an Azure-style key no scanner rule knows
        let c = Credentials::from_headers(&headers(&[
            ("authorization", "Bearer sk-test-ABCDEFGH12345678"),
            ("api-key", key),
            ("anthropic-version", "2023-06-01"),
        ]));
        let echoed = format!(
            "{{\"error\":\"bad key {key} for Bearer sk-test-ABCDEFGH12345678; token sk-test-ABCDEFGH12345678\"}}"
        );
        let masked = c.mask(&echoed);
        assert!(!masked.contains(key), "{masked}");
        assert!(!masked.contains("sk-test-ABCDEFGH12345678"), "{masked}");
        assert_eq!(masked.matches(MASK).count(), 3, "{masked}");
        // API versions are not credentials.
        assert_eq!(c.mask("2023-06-01"), "2023-06-01");
        let mut v = serde_json::json!({"a": [key], key: 1});
        c.mask_value(&mut v);
        assert!(!v.to_string().contains(key), "{v}");
    }

    /// An error with a source, as a client library wraps the I/O error of a failed handshake.
    #[test]
    fn short_values_are_not_masked() {
        let c = Credentials::from_headers(&headers(&[("x-api-key", "abc")]));
        assert_eq!(c.mask("abc abc"), "abc abc");
    }
}
