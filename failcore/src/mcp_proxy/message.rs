//! The client's messages: what each one is (a call to record, a request to forward, bytes to refuse), and
//! the JSON-RPC answers the proxy gives itself.

use crate::Error;
use serde_json::{json, Value};

/// The longest message text the proxy puts in an answer; longer texts are cut and marked.
pub(super) const MAX_MESSAGE: usize = 1024;

/// `s`, cut to [`MAX_MESSAGE`] bytes at a character boundary and marked as cut.
pub(super) fn cut(s: &str) -> String {
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

pub(super) fn rpc_error(id: &Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": cut(message)}})
}

pub(super) fn rpc_result(id: &Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// A JSON-RPC response whose result is `result`, JSON text put in as it is.
pub(super) fn spliced_result(id: &Value, result: &str) -> String {
    format!("{{\"jsonrpc\":\"2.0\",\"id\":{id},\"result\":{result}}}")
}

/// A failed call as an MCP tool result: the message as text, the details as structured content.
pub(super) fn tool_error(e: &Error) -> Value {
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

/// Where a call's `inputResponses` go in the arguments the trace records (and fingerprints).
pub(super) const INPUT_RESPONSES: &str = "$inputResponses";

/// What to do with one message from the client.
#[derive(Debug)]
pub(super) enum FromClient {
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

pub(super) fn classify(line: &[u8]) -> FromClient {
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
    let mut arguments = match params.and_then(|p| p.get("arguments")) {
        None | Some(Value::Null) => json!({}),
        Some(a @ Value::Object(_)) => a.clone(),
        Some(other) => json!({ "invalid_arguments": bounded(other) }),
    };
    // A call retried with the user's input (`inputResponses`) is another call than the first one, and
    // than one answered with other input: its identity holds that input.
    if let Some(input) = params
        .and_then(|p| p.get("inputResponses"))
        .filter(|i| !i.is_null())
    {
        arguments[INPUT_RESPONSES] = input.clone();
    }
    (name, arguments)
}

fn is_tools_call(m: &Value) -> bool {
    m.get("method").and_then(Value::as_str) == Some("tools/call")
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
