//! The MCP server example over real stdio: tools/list with the normalised schemas, tools/call through
//! the lifecycle (policy, trace, offline replay); and over Streamable HTTP (`failcore::mcp::HttpServer`),
//! reached by URL with the official Python SDK (`FAILCORE_E2E_PYTHON`, see tests/support), with its
//! DNS-rebinding protection and its bearer token.

mod support;

use failcore::store::{JsonlStore, RunReader, Status, TraceStore};
use serde_json::{json, Value};
use std::process::Command;
use support::{e2e, example, python_http_client, raw_post, text, Listening, McpClient, INITIALIZE};

fn server(dir: &std::path::Path, env: &[(&str, &str)]) -> McpClient {
    let mut cmd = Command::new(example("mcp_server"));
    cmd.current_dir(dir)
        .env_remove("FAILCORE_RESUME")
        .env_remove("FAILCORE_OFFLINE")
        .env_remove("FAILCORE_STORE")
        .env("FAILCORE_DIR", dir.join(".failcore"))
        .env("FAILCORE_SANDBOX", dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    McpClient::start(cmd)
}

/// The (tool, status) of each step of the last run.
fn steps(dir: &std::path::Path) -> Vec<(String, Status)> {
    let store = JsonlStore::new(dir.join(".failcore"));
    let last = store.resolve("last").unwrap();
    let mut tools = std::collections::HashMap::new();
    let mut out = Vec::new();
    for r in RunReader::open(&store, &last).unwrap() {
        let body = r.unwrap().record.body;
        if let Some(s) = body.start() {
            tools.insert(s.step, s.tool.clone());
        }
        if let Some(e) = body.end() {
            out.push((tools[&e.step].clone(), e.status));
        }
    }
    out
}

#[test]
fn tools_list_and_call_over_stdio() {
    let dir = tempfile::tempdir().unwrap();
    let mut client = server(dir.path(), &[]);

    let tools = client.list_tools();
    let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["add", "greet", "write_note"]);
    let greet = &tools[1];
    assert_eq!(
        greet["description"],
        "Greets someone, optionally in a given style."
    );
    assert_eq!(
        greet["inputSchema"],
        json!({
            "type": "object",
            "properties": {"name": {"type": "string"}, "style": {"type": ["string", "null"]}},
            "required": ["name"],
            "additionalProperties": false
        })
    );
    assert_eq!(tools[0]["annotations"]["readOnlyHint"], true);
    assert_eq!(tools[2]["annotations"]["destructiveHint"], true);

    let sum = client.call("add", json!({"a": 2, "b": 40}));
    assert_eq!(text(&sum), "42");
    assert_ne!(sum["isError"], true);

    let hello = client.call("greet", json!({"name": "ada", "style": "loud"}));
    assert_eq!(text(&hello), "HELLO, ADA!");

    let wrote = client.call("write_note", json!({"path": "note.txt", "text": "hi"}));
    assert_eq!(text(&wrote), "2");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("note.txt")).unwrap(),
        "hi"
    );

    // Blocked by the fs policy: a tool error carrying the rule; nothing is written.
    let blocked = client.call(
        "write_note",
        json!({"path": "../escaped.txt", "text": "nope"}),
    );
    assert_eq!(blocked["isError"], true, "{blocked}");
    assert_eq!(blocked["structuredContent"]["error"], "blocked");
    assert_eq!(blocked["structuredContent"]["rule"], "fs.escape");
    assert!(text(&blocked).contains("fs.escape"), "{blocked}");
    assert!(!dir.path().parent().unwrap().join("escaped.txt").exists());

    // Bad arguments are a tool error too, never a crash.
    let bad = client.call("add", json!({"a": "two"}));
    assert_eq!(bad["isError"], true);
    assert_eq!(bad["structuredContent"]["error"], "invalid_arguments");

    // An unknown tool is a protocol error.
    let unknown = client.request("tools/call", json!({"name": "nope", "arguments": {}}));
    assert!(unknown.get("error").is_some(), "{unknown}");

    assert!(client.close().success());

    let recorded: Vec<Value> = steps(dir.path())
        .into_iter()
        .map(|(t, s)| json!([t, s.as_str()]))
        .collect();
    assert_eq!(
        recorded,
        [
            json!(["add", "ok"]),
            json!(["greet", "ok"]),
            json!(["write_note", "ok"]),
            json!(["write_note", "blocked"]),
        ]
    );

    // Offline: the same calls are answered from the trace; nothing runs, so nothing is written.
    std::fs::remove_file(dir.path().join("note.txt")).unwrap();
    let mut offline = server(dir.path(), &[("FAILCORE_OFFLINE", "last")]);
    let wrote = offline.call("write_note", json!({"path": "note.txt", "text": "hi"}));
    assert_eq!(text(&wrote), "2", "{wrote}");
    assert!(!dir.path().join("note.txt").exists());
    let miss = offline.call("add", json!({"a": 1, "b": 1}));
    assert_eq!(miss["isError"], true);
    assert_eq!(miss["structuredContent"]["error"], "replay_miss");
    assert!(offline.close().success());
    let replayed: Vec<Value> = steps(dir.path())
        .into_iter()
        .map(|(t, s)| json!([t, s.as_str()]))
        .collect();
    assert_eq!(
        replayed,
        [json!(["write_note", "replayed"]), json!(["add", "failed"])]
    );
}

/// The example served over Streamable HTTP (`mcp_server --http 127.0.0.1:0`), in `dir`.
fn http_server(dir: &std::path::Path, env: &[(&str, &str)]) -> Listening {
    let mut cmd = Command::new(example("mcp_server"));
    cmd.current_dir(dir)
        .env_remove("FAILCORE_RESUME")
        .env_remove("FAILCORE_OFFLINE")
        .env_remove("FAILCORE_STORE")
        .env_remove("MCP_TOKEN")
        .env("FAILCORE_DIR", dir.join(".failcore"))
        .env("FAILCORE_SANDBOX", dir)
        .envs(env.iter().copied())
        .args(["--http", "127.0.0.1:0"]);
    Listening::start(cmd)
}

#[test]
fn the_python_sdk_over_http_lists_calls_and_is_refused_by_policy() {
    let test = "the_python_sdk_over_http_lists_calls_and_is_refused_by_policy";
    let Some(e) = e2e(test, Some("FAILCORE_REQUIRE_FRAMEWORKS")) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = http_server(dir.path(), &[]);

    let out = python_http_client(
        &e,
        &server.url,
        json!({}),
        json!([
            ["greet", {"name": "Ada", "style": "loud"}],
            ["write_note", {"path": "note.txt", "text": "over http"}],
            ["write_note", {"path": "../escaped.txt", "text": "nope"}],
        ]),
    );
    assert!(out.get("error").is_none(), "{out}\n{}", server.log());
    assert_eq!(out["tools"], json!(["add", "greet", "write_note"]), "{out}");
    assert_eq!(out["calls"][0]["text"], "HELLO, ADA!", "{out}");
    assert_eq!(out["calls"][1]["is_error"], false, "{out}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("note.txt")).unwrap(),
        "over http"
    );
    // Refused by the fs policy before the body ran: a tool error naming the rule, nothing written.
    assert_eq!(out["calls"][2]["is_error"], true, "{out}");
    assert_eq!(out["calls"][2]["structured"]["rule"], "fs.escape", "{out}");
    assert!(!dir.path().parent().unwrap().join("escaped.txt").exists());

    // DNS rebinding: another Host, or another Origin, is refused before anything else.
    let port = server.port();
    let host = format!("127.0.0.1:{port}");
    let (status, _) = raw_post(port, &[("Host", "evil.example")], INITIALIZE);
    assert_eq!(status, 403);
    let (status, _) = raw_post(
        port,
        &[("Host", &host), ("Origin", "http://evil.example:80")],
        INITIALIZE,
    );
    assert_eq!(status, 403);
    let (status, body) = raw_post(
        port,
        &[("Host", &host), ("Origin", &format!("http://{host}"))],
        INITIALIZE,
    );
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        answer["result"]["serverInfo"]["name"], "failcore",
        "{answer}"
    );

    // SIGTERM ends the server and its run, with every call of every client session in it.
    let stderr = server.stderr.clone();
    assert_eq!(server.terminate(), Some(0), "{}", stderr.lock().unwrap());
    assert_eq!(
        steps(dir.path()),
        [
            ("greet".to_owned(), Status::Ok),
            ("write_note".to_owned(), Status::Ok),
            ("write_note".to_owned(), Status::Blocked),
        ]
    );
}

#[test]
fn the_http_server_with_a_token_refuses_clients_without_it() {
    let test = "the_http_server_with_a_token_refuses_clients_without_it";
    let Some(e) = e2e(test, Some("FAILCORE_REQUIRE_FRAMEWORKS")) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = http_server(dir.path(), &[("MCP_TOKEN", "s3cret-token")]);
    let port = server.port();
    let host = format!("127.0.0.1:{port}");
    let (status, _) = raw_post(port, &[("Host", &host)], INITIALIZE);
    assert_eq!(status, 401);
    let (status, _) = raw_post(
        port,
        &[("Host", &host), ("Authorization", "Bearer wrong")],
        INITIALIZE,
    );
    assert_eq!(status, 401);

    let refused = python_http_client(&e, &server.url, json!({}), json!([]));
    assert!(refused.get("error").is_some(), "{refused}");
    assert!(refused.get("tools").is_none(), "{refused}");
    let out = python_http_client(
        &e,
        &server.url,
        json!({"Authorization": "Bearer s3cret-token"}),
        json!([["add", {"a": 2, "b": 3}]]),
    );
    assert!(out.get("error").is_none(), "{out}\n{}", server.log());
    assert_eq!(out["calls"][0]["text"], "5", "{out}");
}
