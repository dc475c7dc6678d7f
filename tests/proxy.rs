//! `failcore proxy` end to end: a real MCP client (this test) and a real MCP server (the mcp_server
//! example, a child of the proxy): a blocked call, an allowed call recorded, and an offline replay that
//! answers without running the server's tool.

mod support;

use failcore::store::{Body, JsonlStore, RunReader, TraceStore};
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use support::{example, failcore_bin, text, McpClient};

/// The session policy file, as for any FailCore session: a guard for every call, and a policy attached to
/// one proxied tool by name.
const POLICY: &str = r#"
guard = ["no_greet"]

[policy.no_greet]
preset = "deny_tools"
tools = ["greet"]

[policy.notes]
preset = "fs"
root = "."
base = "."          # the server resolves relative paths against its sandbox, this directory
paths = ["path"]

[tools]
write_note = "notes"
"#;

fn proxy(dir: &Path, extra: &[&str]) -> McpClient {
    let mut cmd = Command::new(failcore_bin());
    cmd.current_dir(dir)
        .env_remove("FAILCORE_RESUME")
        .env_remove("FAILCORE_OFFLINE")
        .env_remove("FAILCORE_STORE")
        // The server's own trace (the proxy's goes to --store).
        .env("FAILCORE_DIR", dir.join("server-trace"))
        .env("FAILCORE_SANDBOX", dir)
        .arg("--store")
        .arg(format!("jsonl:{}", dir.join("proxy-trace").display()))
        .arg("proxy")
        .arg("--policy")
        .arg(dir.join("failcore.toml"))
        .args(extra)
        .arg("--")
        .arg(example("mcp_server"));
    McpClient::start(cmd)
}

/// `[tool, status, output]` of each step of the last run in `store`.
fn steps(store: &Path) -> Vec<Value> {
    let store = JsonlStore::new(store);
    let last = store.resolve("last").unwrap();
    let mut tools = std::collections::HashMap::new();
    let mut out = Vec::new();
    for r in RunReader::open(&store, &last).unwrap() {
        match r.unwrap().record.body {
            Body::StepStart(s) => {
                tools.insert(s.step, s.tool.clone());
            }
            Body::StepEnd(e) => out.push(json!([
                tools[&e.step],
                e.status.as_str(),
                e.output.unwrap_or(Value::Null)
            ])),
            _ => {}
        }
    }
    out
}

fn head(step: &Value) -> (&str, &str) {
    (
        step[0].as_str().unwrap_or_default(),
        step[1].as_str().unwrap_or_default(),
    )
}

#[test]
fn proxy_blocks_records_and_replays_offline() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    std::fs::write(dir.join("failcore.toml"), POLICY).unwrap();

    let mut client = proxy(dir, &[]);
    // Everything but tools/call passes through unchanged.
    let names: Vec<String> = client
        .list_tools()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["add", "greet", "write_note"]);

    let denied = client.call("greet", json!({"name": "ada"}));
    assert_eq!(denied["isError"], true, "{denied}");
    assert_eq!(denied["structuredContent"]["rule"], "deny_tools");
    assert_eq!(denied["structuredContent"]["policy"], "no_greet");

    let escaped = client.call("write_note", json!({"path": "../out.txt", "text": "x"}));
    assert_eq!(escaped["isError"], true, "{escaped}");
    assert_eq!(escaped["structuredContent"]["rule"], "fs.escape");
    assert!(!dir.parent().unwrap().join("out.txt").exists());

    let wrote = client.call("write_note", json!({"path": "note.txt", "text": "hello"}));
    assert_eq!(text(&wrote), "5", "{wrote}");
    assert_eq!(
        std::fs::read_to_string(dir.join("note.txt")).unwrap(),
        "hello"
    );

    let sum = client.call("add", json!({"a": 2, "b": 3}));
    assert_eq!(text(&sum), "5");
    assert!(client.close().success());

    let recorded = steps(&dir.join("proxy-trace"));
    assert_eq!(recorded.len(), 4, "{recorded:#?}");
    assert_eq!(head(&recorded[0]), ("greet", "blocked"));
    assert_eq!(head(&recorded[1]), ("write_note", "blocked"));
    assert_eq!(head(&recorded[2]), ("write_note", "ok"));
    assert_eq!(recorded[2][2]["content"][0]["text"], "5");
    assert_eq!(head(&recorded[3]), ("add", "ok"));
    // The blocked calls never reached the server: its trace has only the two allowed ones.
    let server: Vec<Value> = steps(&dir.join("server-trace"))
        .into_iter()
        .map(|s| s[0].clone())
        .collect();
    assert_eq!(server, [json!("write_note"), json!("add")]);

    // Offline: answered from the proxy's trace; the server's tool does not run.
    std::fs::remove_file(dir.join("note.txt")).unwrap();
    let mut offline = proxy(dir, &["--offline", "last"]);
    let wrote = offline.call("write_note", json!({"path": "note.txt", "text": "hello"}));
    assert_eq!(text(&wrote), "5", "{wrote}");
    assert!(!dir.join("note.txt").exists(), "the tool ran");
    let miss = offline.call("add", json!({"a": 40, "b": 2}));
    assert_eq!(miss["isError"], true);
    assert_eq!(miss["structuredContent"]["error"], "replay_miss");
    assert!(offline.close().success());

    let replayed = steps(&dir.join("proxy-trace"));
    assert_eq!(head(&replayed[0]), ("write_note", "replayed"));
    assert_eq!(head(&replayed[1]), ("add", "failed"));
    // The server opened no run of its own: no tool of it was called.
    let store = JsonlStore::new(dir.join("server-trace"));
    assert_eq!(store.runs().unwrap().len(), 1);
}
