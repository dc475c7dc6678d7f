//! The provider APIs the proxy speaks: which request is which, how a streamed reply is framed, and the
//! shape of an error in each.

use super::Body;
use hyper::{Response, StatusCode};
use serde_json::{json, Value};

/// A provider API, by the last segment of the request's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Api {
    /// OpenAI Chat Completions: `POST .../chat/completions`.
    ChatCompletions,
    /// OpenAI Responses: `POST .../responses`.
    Responses,
    /// Anthropic Messages: `POST .../messages`.
    Messages,
    /// OpenAI embeddings: `POST .../embeddings` (never streamed).
    Embeddings,
}

impl Api {
    pub(crate) fn of(path: &str) -> Option<Api> {
        if path.ends_with("/chat/completions") {
            Some(Api::ChatCompletions)
        } else if path.ends_with("/responses") {
            Some(Api::Responses)
        } else if path.ends_with("/messages") {
            Some(Api::Messages)
        } else if path.ends_with("/embeddings") {
            Some(Api::Embeddings)
        } else {
            None
        }
    }

    /// The upstream path of this API, after the upstream's base URL.
    pub(crate) fn endpoint(self) -> &'static str {
        match self {
            Api::ChatCompletions => "/chat/completions",
            Api::Responses => "/responses",
            Api::Messages => "/messages",
            Api::Embeddings => "/embeddings",
        }
    }

    /// Whether its streamed events carry an `event:` name (the `type` of their data).
    fn named_events(self) -> bool {
        matches!(self, Api::Messages | Api::Responses)
    }

    /// One server-sent event of a streamed reply, as this API frames it. The Messages and Responses APIs
    /// name each event after its data's `type`; the data of a recorded event, which comes from a trace, is
    /// framed line by line so that it can never start an event of its own.
    pub(crate) fn frame(self, data: &str) -> bytes::Bytes {
        let mut out = String::with_capacity(data.len() + 48);
        if self.named_events() {
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
        bytes::Bytes::from(out)
    }

    /// An error in the shape this API's clients read.
    pub(crate) fn error(
        self,
        status: StatusCode,
        kind: &str,
        code: Option<&str>,
        message: &str,
    ) -> Response<Body> {
        super::json_response(status, &self.error_body(kind, code, message))
    }

    /// The body of an error in this API's shape: also the data of the error event that ends a stream
    /// which failed after its first events went to the client.
    pub(crate) fn error_body(self, kind: &str, code: Option<&str>, message: &str) -> Value {
        match self {
            Api::ChatCompletions | Api::Responses | Api::Embeddings => {
                json!({"error": {"message": message, "type": kind, "code": code, "param": null}})
            }
            Api::Messages => {
                json!({"type": "error", "error": {"type": kind, "message": message, "code": code}})
            }
        }
    }
}

/// The event name of a typed event: its data's `type`, when it is a plain name (lowercase letters, digits,
/// `_` and `.`, as in `message_stop` or `response.output_text.delta`).
fn event_name(data: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Typed {
        #[serde(rename = "type")]
        kind: String,
    }
    let typed: Typed = serde_json::from_str(data).ok()?;
    let plain = !typed.kind.is_empty()
        && typed.kind.len() <= 96
        && typed
            .kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.');
    plain.then_some(typed.kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_by_path() {
        assert_eq!(Api::of("/v1/chat/completions"), Some(Api::ChatCompletions));
        assert_eq!(Api::of("/v1/messages"), Some(Api::Messages));
        assert_eq!(Api::of("/v1/responses"), Some(Api::Responses));
        assert_eq!(Api::of("/openai/v1/embeddings"), Some(Api::Embeddings));
        assert_eq!(Api::of("/v1/models"), None);
    }

    #[test]
    fn typed_events_are_named_after_their_type_and_recorded_data_cannot_start_an_event() {
        let framed = Api::Messages.frame(r#"{"type":"message_stop"}"#);
        assert_eq!(
            &framed[..],
            b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
        );
        let framed = Api::Responses.frame(r#"{"type":"response.output_text.delta","delta":"a"}"#);
        assert!(framed.starts_with(b"event: response.output_text.delta\ndata: "));
        assert_eq!(
            &Api::ChatCompletions.frame("[DONE]")[..],
            b"data: [DONE]\n\n"
        );
        // Chat Completions events are never named, whatever their data says.
        assert!(!Api::ChatCompletions
            .frame(r#"{"type":"x"}"#)
            .starts_with(b"event:"));
        // Data from a trace that holds line breaks stays data: every line of it is a `data:` line.
        let hostile = "{\"type\":\"ping\"}\n\nevent: error\ndata: {\"forged\":true}";
        for api in [Api::Messages, Api::Responses] {
            let framed = String::from_utf8(api.frame(hostile).to_vec()).unwrap();
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
        }
        // Only plain names become event names.
        assert!(
            !String::from_utf8(Api::Messages.frame(r#"{"type":"a\r\nevent: x"}"#).to_vec())
                .unwrap()
                .starts_with("event:")
        );
    }
}
