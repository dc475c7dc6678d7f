//! `failcore proxy` end to end: a real MCP client (this test) and a real MCP server (the mcp_server
//! example, a child of the proxy): a blocked call, an allowed call recorded, and an offline replay that
//! answers without running the server's tool.

mod support;

use failcore::store::{JsonlStore, RunReader, TraceStore};
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;
use support::{e2e, example, failcore_bin, mcp_clients, text, E2e, McpClient};

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
        let body = r.unwrap().record.body;
        if let Some(s) = body.start() {
            tools.insert(s.step, s.tool.clone());
        }
        if let Some(e) = body.end() {
            out.push(json!([
                tools[&e.step],
                e.status.as_str(),
                e.output.clone().unwrap_or(Value::Null)
            ]));
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

/// A bare JSON-RPC peer over a child's stdio, for the sessions that `McpClient` cannot start (a server
/// that never initializes) or that send bytes no client library would.
struct Raw {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Raw {
    fn start(mut cmd: Command) -> Raw {
        use std::io::BufRead;
        let mut child = cmd
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Raw {
            stdin: child.stdin.take(),
            child,
            lines,
        }
    }

    fn send_bytes(&mut self, bytes: &[u8]) {
        use std::io::Write;
        let stdin = self.stdin.as_mut().unwrap();
        stdin.write_all(bytes).unwrap();
        stdin.write_all(b"\n").unwrap();
        stdin.flush().unwrap();
    }

    /// The answer to request `id`, within 10 s (a hang fails the test).
    fn request(&mut self, id: u64, method: &str, params: Value) -> Value {
        let msg = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        self.send_bytes(msg.to_string().as_bytes());
        self.answer(json!(id))
    }

    fn answer(&mut self, id: Value) -> Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no answer to request {id} within 10 s"));
            let msg: Value = serde_json::from_str(&line).unwrap();
            if msg["id"] == id {
                return msg;
            }
        }
    }

    fn initialize(&mut self) -> Value {
        self.request(
            0,
            "initialize",
            json!({"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "raw", "version": "0"}}),
        )
    }

    /// Closes stdin and waits (10 s at most) for the exit; returns the status and stderr.
    fn close(mut self) -> (std::process::ExitStatus, String) {
        use std::io::Read;
        drop(self.stdin.take());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the proxy did not exit within 10 s of stdin closing"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        let mut err = String::new();
        let _ = self.child.stderr.take().unwrap().read_to_string(&mut err);
        (status, err)
    }
}

impl Drop for Raw {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `failcore proxy` with a store in `dir`, a bare environment as MCP SDKs give, and `extra` arguments.
fn bare_proxy(dir: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(failcore_bin());
    cmd.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("FAILCORE_SANDBOX", dir)
        .env("FAILCORE_DIR", dir.join("server-trace"))
        .arg("--store")
        .arg(format!("jsonl:{}", dir.join("proxy-trace").display()))
        .arg("proxy")
        .args(extra);
    cmd
}

fn with_server(mut cmd: Command) -> Command {
    cmd.arg("--").arg(example("mcp_server"));
    cmd
}

/// Every record kind of the last run in `store`, in order.
fn kinds(store: &Path) -> Vec<String> {
    let store = JsonlStore::new(store);
    let last = store.resolve("last").unwrap();
    RunReader::open(&store, &last)
        .unwrap()
        .map(|r| r.unwrap().record.body.kind().to_owned())
        .collect()
}

#[test]
fn a_server_that_dies_at_start_gets_the_client_an_error_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = bare_proxy(dir.path(), &[]);
    cmd.args(["--", "/bin/false"]);
    let mut raw = Raw::start(cmd);
    let init = raw.initialize();
    assert_eq!(init["error"]["code"], -32000, "{init}");
    let message = init["error"]["message"].as_str().unwrap();
    assert!(message.contains("exited with status 1"), "{message}");
    // Every later request too, at once: ping, tools/list, and a call (recorded as failed).
    assert_eq!(raw.request(1, "ping", json!({}))["error"]["code"], -32000);
    assert_eq!(
        raw.request(2, "tools/list", json!({}))["error"]["code"],
        -32000
    );
    let call = raw.request(
        3,
        "tools/call",
        json!({"name": "add", "arguments": {"a": 1}}),
    );
    assert_eq!(call["result"]["isError"], true, "{call}");
    let (status, err) = raw.close();
    assert!(!status.success(), "exit {status}");
    assert!(err.contains("exited with status 1"), "{err}");
}

#[test]
fn a_server_killed_mid_session_fails_pending_and_later_requests_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut raw = Raw::start(with_server(bare_proxy(dir.path(), &[])));
    assert!(raw.initialize().get("result").is_some());
    let listed = raw.request(1, "tools/list", json!({}));
    assert_eq!(listed["result"]["tools"].as_array().unwrap().len(), 3);
    let sum = raw.request(
        2,
        "tools/call",
        json!({"name": "add", "arguments": {"a": 1, "b": 2}}),
    );
    assert_eq!(sum["result"]["content"][0]["text"], "3", "{sum}");
    // Kill the server (the proxy's only child).
    let proxy_pid = raw.child.id();
    let status = Command::new("pkill")
        .args(["-KILL", "-P", &proxy_pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    std::thread::sleep(std::time::Duration::from_millis(300));
    for (id, method) in [(3, "ping"), (4, "tools/list")] {
        let answer = raw.request(id, method, json!({}));
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("exited with status 137"), "{answer}");
    }
    let late = raw.request(
        5,
        "tools/call",
        json!({"name": "add", "arguments": {"a": 2, "b": 2}}),
    );
    assert_eq!(late["result"]["isError"], true, "{late}");
    let (status, err) = raw.close();
    assert_eq!(status.code(), Some(3), "{err}");
    assert!(err.contains("exited with status 137"), "{err}");
    // Both calls are in the trace; the late one failed with the reason; the run ended.
    let recorded = steps(&dir.path().join("proxy-trace"));
    assert_eq!(head(&recorded[0]), ("add", "ok"));
    assert_eq!(head(&recorded[1]), ("add", "failed"));
    assert_eq!(
        kinds(&dir.path().join("proxy-trace")).last().unwrap(),
        "run_end"
    );
}

#[test]
fn bad_bytes_from_the_client_get_errors_and_the_session_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut raw = Raw::start(with_server(bare_proxy(dir.path(), &[])));
    assert!(raw.initialize().get("result").is_some());
    raw.send_bytes(b"{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"ping\xff\"}");
    let bad = raw.answer(Value::Null);
    assert_eq!(bad["error"]["code"], -32700, "{bad}");
    raw.send_bytes(b"[1, 2");
    assert_eq!(raw.answer(Value::Null)["error"]["code"], -32700);
    let big = vec![b'x'; 17 * 1024 * 1024];
    raw.send_bytes(&big);
    let too_long = raw.answer(Value::Null);
    assert!(
        too_long["error"]["message"]
            .as_str()
            .unwrap()
            .contains("refused"),
        "{too_long}"
    );
    let sum = raw.request(
        1,
        "tools/call",
        json!({"name": "add", "arguments": {"a": 2, "b": 5}}),
    );
    assert_eq!(sum["result"]["content"][0]["text"], "7", "{sum}");
    let (status, err) = raw.close();
    assert!(status.success(), "{status}: {err}");
}

#[test]
fn every_call_answered_is_in_the_trace_and_echoes_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    // The policy without a declared base: only absolute paths are checked here.
    let policy = POLICY.replace("base = \".\"", "");
    std::fs::write(dir.path().join("failcore.toml"), policy).unwrap();
    let policy = dir.path().join("failcore.toml");
    let mut raw = Raw::start(with_server(bare_proxy(
        dir.path(),
        &["--policy", policy.to_str().unwrap()],
    )));
    assert!(raw.initialize().get("result").is_some());
    let bad_args = raw.request(1, "tools/call", json!({"name": "add", "arguments": [1, 2]}));
    assert_eq!(bad_args["error"]["code"], -32602, "{bad_args}");
    let no_name = raw.request(2, "tools/call", json!({"arguments": {}}));
    assert_eq!(no_name["error"]["code"], -32602, "{no_name}");
    let long = format!("/{}", "p".repeat(100_000));
    let refused = raw.request(
        3,
        "tools/call",
        json!({"name": "write_note", "arguments": {"path": long, "text": "x"}}),
    );
    assert_eq!(refused["result"]["isError"], true);
    let size = refused.to_string().len();
    assert!(size < 4096, "a refusal of a 100 KB path is {size} bytes");
    raw.send_bytes(br#"[{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"add","arguments":{"a":1,"b":1}}}]"#);
    let batch = raw.answer(json!(4));
    assert_eq!(batch["error"]["code"], -32600, "{batch}");
    let (status, _) = raw.close();
    assert!(status.success());
    let recorded = steps(&dir.path().join("proxy-trace"));
    let heads: Vec<(&str, &str)> = recorded.iter().map(head).collect();
    assert_eq!(
        heads,
        [
            ("add", "failed"),
            ("tools/call", "failed"),
            ("write_note", "blocked"),
            ("add", "failed")
        ],
        "{recorded:#?}"
    );
}

#[test]
fn a_session_that_only_lists_tools_creates_no_run() {
    let dir = tempfile::tempdir().unwrap();
    let mut raw = Raw::start(with_server(bare_proxy(dir.path(), &[])));
    assert!(raw.initialize().get("result").is_some());
    assert!(raw
        .request(1, "tools/list", json!({}))
        .get("result")
        .is_some());
    let (status, _) = raw.close();
    assert!(status.success());
    let store = JsonlStore::new(dir.path().join("proxy-trace"));
    assert_eq!(store.runs().unwrap_or_default(), Vec::<String>::new());
}

#[test]
fn sigterm_ends_the_run_cleanly_and_soon() {
    let dir = tempfile::tempdir().unwrap();
    let mut raw = Raw::start(with_server(bare_proxy(dir.path(), &[])));
    assert!(raw.initialize().get("result").is_some());
    let sum = raw.request(
        1,
        "tools/call",
        json!({"name": "add", "arguments": {"a": 1, "b": 1}}),
    );
    assert_eq!(sum["result"]["content"][0]["text"], "2");
    let started = std::time::Instant::now();
    let pid = raw.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = loop {
        if let Some(s) = raw.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed().as_secs() < 5,
            "still running 5 s after SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(143));
    assert_eq!(
        kinds(&dir.path().join("proxy-trace")).last().unwrap(),
        "run_end"
    );
}

#[test]
fn a_client_that_dies_leaves_the_run_unfinished_not_ok() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.txt");
    let init = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"sh","version":"0"}}}"#;
    let call = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add","arguments":{"a":1,"b":2}}}"#;
    // The "agent" is a shell whose proxy reads a pipe that stays open 2 s after the shell is killed.
    let script = format!(
        "(echo '{init}'; echo '{call}'; sleep 3) | '{bin}' --store 'jsonl:{store}' proxy -- '{server}' > '{out}' & wait",
        bin = failcore_bin().display(),
        store = dir.path().join("proxy-trace").display(),
        server = example("mcp_server").display(),
        out = out.display(),
    );
    let mut agent = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir.path())
        .env("FAILCORE_SANDBOX", dir.path())
        .env("FAILCORE_DIR", dir.path().join("server-trace"))
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while !std::fs::read_to_string(&out)
        .unwrap_or_default()
        .contains("\"id\":1")
    {
        assert!(started.elapsed().as_secs() < 20, "no answer to the call");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    agent.kill().unwrap();
    agent.wait().unwrap();
    // The pipe closes when the sleep ends; the proxy then finds its client gone.
    let store = dir.path().join("proxy-trace");
    std::thread::sleep(std::time::Duration::from_secs(5));
    let kinds = kinds(&store);
    assert_eq!(kinds, ["run_start", "step_start", "step_end"], "{kinds:?}");
}

#[test]
fn offline_replays_without_a_server_and_settings_come_from_the_policy_file() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path().join("elsewhere");
    std::fs::create_dir(&cwd).unwrap();
    // Everything in the policy file: MCP SDKs start the proxy with a bare environment.
    let policy = dir.path().join("failcore.toml");
    std::fs::write(
        &policy,
        format!("{POLICY}\n[proxy]\nstore = \"traces\"\ndurability = \"synced\"\n"),
    )
    .unwrap();
    let proxy = |extra: &[&str], server: bool| {
        let mut cmd = Command::new(failcore_bin());
        cmd.current_dir(&cwd)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("FAILCORE_SANDBOX", dir.path())
            .env("FAILCORE_DIR", dir.path().join("server-trace"))
            .args(["proxy", "--policy", policy.to_str().unwrap()])
            .args(extra);
        if server {
            cmd.arg("--").arg(example("mcp_server"));
        }
        Raw::start(cmd)
    };
    let mut rec = proxy(&[], true);
    rec.initialize();
    let sum = rec.request(
        1,
        "tools/call",
        json!({"name": "add", "arguments": {"a": 20, "b": 22}}),
    );
    assert_eq!(sum["result"]["content"][0]["text"], "42");
    assert!(rec.close().0.success());
    assert!(
        !cwd.join(".failcore").exists(),
        "the trace went to the working directory"
    );
    let traces = dir.path().join("traces");
    assert_eq!(steps(&traces).len(), 1);

    // Offline, from the policy file's store, and no server command at all.
    let mut off = proxy(&["--offline", "last"], false);
    let init = off.initialize();
    assert_eq!(init["result"]["serverInfo"]["name"], "failcore", "{init}");
    let tools = off.request(1, "tools/list", json!({}));
    assert_eq!(
        tools["result"]["tools"].as_array().unwrap().len(),
        3,
        "{tools}"
    );
    assert_eq!(off.request(2, "ping", json!({}))["result"], json!({}));
    let served = off.request(
        3,
        "tools/call",
        json!({"name": "add", "arguments": {"a": 20, "b": 22}}),
    );
    assert_eq!(served["result"]["content"][0]["text"], "42", "{served}");
    let miss = off.request(
        4,
        "tools/call",
        json!({"name": "add", "arguments": {"a": 1, "b": 1}}),
    );
    assert_eq!(miss["result"]["structuredContent"]["error"], "replay_miss");
    assert!(off.close().0.success());
    let replayed = steps(&traces);
    assert_eq!(head(&replayed[0]), ("add", "replayed"));
}

#[test]
fn startup_errors_reach_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let mut raw = Raw::start(with_server(bare_proxy(dir.path(), &["--resume", "last"])));
    let init = raw.initialize();
    let message = init["error"]["message"].as_str().unwrap_or_default();
    // The store is empty: `last` names no run of this proxy for this server.
    assert!(
        message.contains("`last`: no run of the MCP proxy"),
        "{init}"
    );
    let (status, _) = raw.close();
    assert_eq!(status.code(), Some(2));
}

/// The example's tool writes beneath the same root its policy checks, even when the working directory is
/// elsewhere: `outside/evil.txt` lands in the sandbox, never beside it.
#[test]
fn the_example_writes_where_its_policy_checks() {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = dir.path().join("sandbox");
    std::fs::create_dir(&sandbox).unwrap();
    std::fs::create_dir(dir.path().join("outside")).unwrap();
    let mut cmd = Command::new(example("mcp_server"));
    cmd.current_dir(dir.path())
        .env("FAILCORE_SANDBOX", &sandbox)
        .env("FAILCORE_DIR", dir.path().join("trace"));
    let mut client = McpClient::start(cmd);
    let wrote = client.call(
        "write_note",
        json!({"path": "outside/evil.txt", "text": "x"}),
    );
    assert_eq!(text(&wrote), "1", "{wrote}");
    assert!(
        !dir.path().join("outside/evil.txt").exists(),
        "written outside the sandbox"
    );
    assert!(sandbox.join("outside/evil.txt").exists());
    let escape = client.call("write_note", json!({"path": "../evil.txt", "text": "x"}));
    assert_eq!(escape["isError"], true);
    assert!(!dir.path().join("evil.txt").exists());
    assert!(client.close().success());
}

// ------------------------------------------------------------------------------------ end to end, real
// The official filesystem server (npm) behind the proxy, driven by the official Python MCP SDK and by a
// LangGraph agent over langchain-mcp-adapters. `.ci/run` installs them (pinned) and sets:
//   FAILCORE_E2E_FS_SERVER  the server's entry point (…/@modelcontextprotocol/server-filesystem/dist/index.js)
//   FAILCORE_E2E_PYTHON     a python with `mcp`, `langchain-mcp-adapters` and `langgraph`

/// Runs tests/e2e/mcp_clients.py in `mode` with `config`; its JSON result.
fn python_client(e: &E2e, home: &Path, mode: &str, config: &Value) -> Value {
    mcp_clients(e, mode, config, Some(home))
}

/// A data root, a home with a secret beside it, a policy for the server's path arguments.
fn fs_fixture(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let data = dir.join("data");
    let home = dir.join("home");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(data.join("hello.txt"), "hello").unwrap();
    std::fs::write(home.join("secret.txt"), "SECRET").unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(&home, data.join("link")).unwrap();
    let policy = dir.join("failcore.toml");
    std::fs::write(
        &policy,
        format!(
            r#"
guard = ["data"]

[policy.data]
preset = "fs"
root = "{}"
paths = ["path", "paths", "source", "destination"]

[proxy]
store = "traces"
"#,
            data.display()
        ),
    )
    .unwrap();
    (data, home, policy)
}

#[test]
fn e2e_python_sdk_and_the_official_filesystem_server() {
    let Some(e) = e2e("e2e_python_sdk_and_the_official_filesystem_server", None) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let dir = std::fs::canonicalize(dir.path()).unwrap();
    let (data, home, policy) = fs_fixture(&dir);
    // The store as a flag here; the policy file holds only the policies.
    let text = std::fs::read_to_string(&policy).unwrap();
    std::fs::write(&policy, &text[..text.find("[proxy]").unwrap()]).unwrap();
    let store = format!("jsonl:{}", dir.join("traces").display());
    let received = dir.join("received.log");
    let escapes = [
        ("~/secret.txt", "fs.home"),
        ("secret.txt", "fs.relative"),
        ("/etc/passwd", "fs.outside_root"),
        ("$HOME/secret.txt", "fs.variable"),
        ("file:///etc/passwd", "fs.url"),
    ];
    // Without the proxy, the server itself reads the home and relative forms as the home's secret: the
    // differential the policy must not have.
    let direct = python_client(
        &e,
        &home,
        "sdk",
        &json!({"command": "node", "args": [&e.server_js, &home, &data],
                "calls": [["read_text_file", {"path": "~/secret.txt"}],
                          ["read_text_file", {"path": "secret.txt"}]]}),
    );
    assert_eq!(direct["calls"][0]["text"], "SECRET", "{direct}");
    assert_eq!(direct["calls"][1]["text"], "SECRET", "{direct}");

    // Through the proxy; the server's input is logged, to check what reached it.
    let server = format!(
        "tee -a '{}' | exec node '{}' '{}' '{}'",
        received.display(),
        e.server_js,
        home.display(),
        data.display()
    );
    let mut calls = vec![
        json!(["read_text_file", {"path": data.join("hello.txt")}]),
        json!(["write_file", {"path": data.join("new.txt"), "content": "new"}]),
        json!(["list_directory", {"path": &data}]),
        json!(["read_text_file", {"path": data.join("../home/secret.txt")}]),
        json!(["read_text_file", {"path": data.join("link/secret.txt")}]),
        json!(["write_file", {"path": home.join("evil.txt"), "content": "x"}]),
    ];
    calls.extend(
        escapes
            .iter()
            .map(|(p, _)| json!(["read_text_file", {"path": p}])),
    );
    let bin = failcore_bin();
    let through = python_client(
        &e,
        &home,
        "sdk",
        &json!({"command": bin,
                "args": ["--store", store, "proxy", "--policy", &policy, "--", "sh", "-c", server],
                "calls": calls}),
    );
    let tools: Vec<&str> = through["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        tools.len() >= 10 && tools.contains(&"read_text_file"),
        "{tools:?}"
    );
    let results = through["calls"].as_array().unwrap();
    assert_eq!(results[0]["text"], "hello", "{}", results[0]);
    assert_eq!(results[1]["is_error"], false, "{}", results[1]);
    assert_eq!(
        std::fs::read_to_string(data.join("new.txt")).unwrap(),
        "new"
    );
    assert!(results[2]["text"].as_str().unwrap().contains("hello.txt"));
    let rule = |i: usize| {
        results[i]["structured"]["rule"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(rule(3), "fs.escape");
    assert_eq!(rule(4), "fs.symlink_escape");
    assert_eq!(rule(5), "fs.outside_root");
    for (i, (path, expected)) in escapes.iter().enumerate() {
        assert_eq!(rule(6 + i), *expected, "{path}: {}", results[6 + i]);
        let text = results[6 + i]["text"].as_str().unwrap();
        assert!(
            !text.contains("SECRET") && !text.contains(data.to_str().unwrap()),
            "{text}"
        );
    }
    assert!(!home.join("evil.txt").exists());
    // What the server received: the allowed calls, none of the refused ones.
    let log = std::fs::read_to_string(&received).unwrap();
    assert!(log.contains("hello.txt") && log.contains("new.txt"));
    for never in ["secret", "passwd", "evil"] {
        assert!(!log.contains(never), "the server received {never:?}");
    }
    // Every call is in the trace.
    let recorded = steps(&dir.join("traces"));
    assert_eq!(recorded.len(), results.len(), "{recorded:#?}");
    assert_eq!(
        recorded.iter().filter(|s| head(s).1 == "blocked").count(),
        results.len() - 3
    );
}

#[test]
fn e2e_the_official_server_killed_and_bad_bytes() {
    let Some(e) = e2e("e2e_the_official_server_killed_and_bad_bytes", None) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (data, _home, policy) = fs_fixture(dir.path());
    let mut cmd = bare_proxy(dir.path(), &["--policy", policy.to_str().unwrap()]);
    cmd.args(["--", "node", &e.server_js]).arg(&data);
    let mut raw = Raw::start(cmd);
    assert!(raw.initialize().get("result").is_some());
    raw.send_bytes(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/list\xc3\x28\"}");
    assert_eq!(raw.answer(Value::Null)["error"]["code"], -32700);
    let listed = raw.request(
        2,
        "tools/call",
        json!({"name": "list_allowed_directories", "arguments": {}}),
    );
    assert!(
        listed["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("data"),
        "{listed}"
    );
    let pid = raw.child.id().to_string();
    assert!(Command::new("pkill")
        .args(["-KILL", "-P", &pid])
        .status()
        .unwrap()
        .success());
    std::thread::sleep(std::time::Duration::from_millis(300));
    for (id, method) in [(3, "ping"), (4, "tools/list")] {
        let answer = raw.request(id, method, json!({}));
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("exited with status 137"),
            "{answer}"
        );
    }
    let (status, err) = raw.close();
    assert_eq!(status.code(), Some(3), "{err}");
}

#[test]
fn e2e_langgraph_agent_records_and_replays_offline_without_the_server() {
    let Some(e) = e2e(
        "e2e_langgraph_agent_records_and_replays_offline_without_the_server",
        None,
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let dir = std::fs::canonicalize(dir.path()).unwrap();
    let (data, home, policy) = fs_fixture(&dir);
    let bin = failcore_bin();
    let script = json!([
        ["list_directory", {"path": &data}],
        ["read_text_file", {"path": data.join("hello.txt")}],
        ["write_file", {"path": data.join("out.txt"), "content": "from the agent"}],
        ["read_text_file", {"path": "/etc/passwd"}],
    ]);
    let record = python_client(
        &e,
        &home,
        "langchain",
        &json!({"command": bin, "args": ["proxy", "--policy", &policy, "--", "node", &e.server_js, &data],
                "calls": script, "held": true}),
    );
    let messages = record["tool_messages"].as_array().unwrap();
    assert_eq!(messages.len(), 4, "{record}");
    assert!(messages[1]["text"].as_str().unwrap().contains("hello"));
    let refusal = messages[3]["text"].as_str().unwrap();
    assert!(
        refusal.contains("fs.outside_root") && !refusal.contains(data.to_str().unwrap()),
        "{refusal}"
    );
    assert_eq!(
        std::fs::read_to_string(data.join("out.txt")).unwrap(),
        "from the agent"
    );
    let store = JsonlStore::new(dir.join("traces"));
    assert_eq!(store.runs().unwrap().len(), 1);
    assert_eq!(kinds(&dir.join("traces")).last().unwrap(), "run_end");

    // Offline: no server command, no node; identical tool results, nothing written.
    std::fs::remove_file(data.join("out.txt")).unwrap();
    let offline = python_client(
        &e,
        &home,
        "langchain",
        &json!({"command": bin, "args": ["proxy", "--policy", &policy, "--offline", "last"],
                "calls": script, "held": true}),
    );
    assert_eq!(offline["tools"], record["tools"]);
    assert_eq!(offline["tool_messages"], record["tool_messages"]);
    assert!(!data.join("out.txt").exists(), "the write ran offline");

    // The adapter's default client opens a session per call and one to list: listing creates no run.
    let before = store.runs().unwrap().len();
    let per_call = python_client(
        &e,
        &home,
        "langchain",
        &json!({"command": bin, "args": ["proxy", "--policy", &policy, "--", "node", &e.server_js, &data],
                "calls": script}),
    );
    assert_eq!(
        per_call["tool_messages"].as_array().unwrap().len(),
        4,
        "{per_call}"
    );
    assert_eq!(
        store.runs().unwrap().len() - before,
        4,
        "one run per call, none for listing"
    );
}

/// One call in a session of its own, as per-call MCP clients make them.
fn one_call_session(dir: &Path, extra: &[&str], server: bool, call: Value) -> Value {
    let mut cmd = bare_proxy(dir, extra);
    if server {
        cmd.arg("--").arg(example("mcp_server"));
    }
    let mut raw = Raw::start(cmd);
    assert!(raw.initialize().get("result").is_some());
    let answer = raw.request(1, "tools/call", call);
    let (status, err) = raw.close();
    assert!(status.success(), "{status}: {err}");
    answer["result"].clone()
}

fn server_runs(dir: &Path) -> usize {
    JsonlStore::new(dir.join("server-trace"))
        .runs()
        .map(|r| r.len())
        .unwrap_or(0)
}

#[test]
fn sessions_with_a_run_key_record_resume_and_replay_as_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let key = ["--run-key", "agent-1"];
    let add = |a: i64| json!({"name": "add", "arguments": {"a": a, "b": 1}});
    // A listing-only session first: no run.
    let mut lister = Raw::start(with_server(bare_proxy(dir, &key)));
    lister.initialize();
    lister.request(1, "tools/list", json!({}));
    assert!(lister.close().0.success());
    for a in 1..=3 {
        let r = one_call_session(dir, &key, true, add(a));
        assert_eq!(r["content"][0]["text"], (a + 1).to_string(), "{r}");
    }
    let store = JsonlStore::new(dir.join("proxy-trace"));
    assert_eq!(
        store.runs().unwrap().len(),
        1,
        "one run for the three sessions"
    );
    let recorded = steps(&dir.join("proxy-trace"));
    assert_eq!(recorded.len(), 3);
    assert!(recorded.iter().all(|s| head(s) == ("add", "ok")));
    let executed = server_runs(dir);
    assert_eq!(executed, 3);

    // Resume, one call per session again: every recorded call is served, none reaches the server.
    let resume = ["--run-key", "agent-1", "--resume", "last"];
    for a in 1..=3 {
        let r = one_call_session(dir, &resume, true, add(a));
        assert_eq!(r["content"][0]["text"], (a + 1).to_string(), "{r}");
    }
    let fresh = one_call_session(dir, &resume, true, add(10));
    assert_eq!(fresh["content"][0]["text"], "11");
    assert_eq!(store.runs().unwrap().len(), 2, "the resume is one run too");
    let resumed = steps(&dir.join("proxy-trace"));
    let heads: Vec<_> = resumed.iter().map(head).collect();
    assert_eq!(
        heads,
        [
            ("add", "replayed"),
            ("add", "replayed"),
            ("add", "replayed"),
            ("add", "ok")
        ]
    );
    assert_eq!(server_runs(dir), executed + 1, "only the new call ran");

    // Offline, no server at all, one call per session.
    let offline = ["--run-key", "agent-1", "--offline", "last"];
    for a in [1, 2, 3, 10] {
        let r = one_call_session(dir, &offline, false, add(a));
        assert_eq!(r["content"][0]["text"], (a + 1).to_string(), "{r}");
    }
    assert_eq!(store.runs().unwrap().len(), 3);
    assert!(steps(&dir.join("proxy-trace"))
        .iter()
        .all(|s| head(s) == ("add", "replayed")));

    // The key's run ends on request: its run_end counts every session's calls. The key may come from the
    // environment (or the policy file) rather than the flag, as every setting of the proxy may.
    let out = bare_proxy(dir, &["--offline", "last", "--end-run"])
        .env("FAILCORE_RUN_KEY", "agent-1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("4 steps"));
    let last = store.resolve("last").unwrap();
    let report = failcore::store::verify(RunReader::open(&store, &last).unwrap());
    assert!(report.is_ok() && report.complete, "{report:?}");
    // A new session with the key now starts a new run.
    one_call_session(dir, &offline, false, add(1));
    assert_eq!(store.runs().unwrap().len(), 4);
}

#[test]
fn two_sessions_of_one_run_key_take_turns() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let key = ["--run-key", "shared"];
    let mut first = Raw::start(with_server(bare_proxy(dir, &key)));
    first.initialize();
    let one = first.request(
        1,
        "tools/call",
        json!({"name": "add", "arguments": {"a": 1, "b": 1}}),
    );
    assert_eq!(one["result"]["content"][0]["text"], "2");
    // The second session's call waits for the first session to end, then continues the same run.
    let dir2 = dir.to_path_buf();
    let second = std::thread::spawn(move || {
        one_call_session(
            &dir2,
            &["--run-key", "shared"],
            true,
            json!({"name": "add", "arguments": {"a": 2, "b": 2}}),
        )
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(!second.is_finished(), "the second session did not wait");
    assert!(first.close().0.success());
    let two = second.join().unwrap();
    assert_eq!(two["content"][0]["text"], "4");
    let store = JsonlStore::new(dir.join("proxy-trace"));
    assert_eq!(store.runs().unwrap().len(), 1);
    assert_eq!(steps(&dir.join("proxy-trace")).len(), 2);
}

#[test]
fn e2e_langgraph_per_call_client_records_one_run_resumes_after_a_kill_and_replays_offline() {
    let Some(e) = e2e(
        "e2e_langgraph_per_call_client_records_one_run_resumes_after_a_kill_and_replays_offline",
        None,
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let dir = std::fs::canonicalize(dir.path()).unwrap();
    let (data, home, policy) = fs_fixture(&dir);
    // The run key in the policy file: the adapter starts each session with a bare environment.
    let mut text = std::fs::read_to_string(&policy).unwrap();
    text.push_str("run_key = \"langgraph-agent\"\n");
    std::fs::write(&policy, text).unwrap();
    let received = dir.join("received.log");
    let bin = failcore_bin();
    let server = format!(
        "tee -a '{}' | exec node '{}' '{}'",
        received.display(),
        e.server_js,
        data.display()
    );
    let script = json!([
        ["list_directory", {"path": &data}],
        ["read_text_file", {"path": data.join("hello.txt")}],
        ["write_file", {"path": data.join("out.txt"), "content": "from the agent"}],
        ["read_text_file", {"path": data.join("out.txt")}],
    ]);
    let live = json!(["proxy", "--policy", &policy, "--", "sh", "-c", &server]);
    let store = JsonlStore::new(dir.join("traces"));
    let step_ends = || {
        store
            .resolve("last")
            .map(|run| {
                RunReader::open(&store, &run)
                    .unwrap()
                    .filter(|r| r.as_ref().is_ok_and(|r| r.record.body.end().is_some()))
                    .count()
            })
            .unwrap_or(0)
    };

    // The agent stalls before its third model turn and is killed there: two calls done.
    let config = json!({"command": bin, "args": live, "calls": script, "pause_before": 2});
    let mut agent = Command::new(&e.python)
        .args([
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/mcp_clients.py"),
            "langchain",
        ])
        .arg(config.to_string())
        .env("HOME", &home)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while step_ends() < 2 {
        assert!(started.elapsed().as_secs() < 60, "the agent made no calls");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    agent.kill().unwrap();
    agent.wait().unwrap();
    assert_eq!(
        store.runs().unwrap().len(),
        1,
        "one run for the per-call sessions"
    );
    assert_eq!(step_ends(), 2);
    let calls_received = |log: &str| log.matches("\"tools/call\"").count();
    assert_eq!(
        calls_received(&std::fs::read_to_string(&received).unwrap()),
        2
    );

    // Resume (the flag, beside the file's run key): the two recorded calls are served, the rest runs.
    let resume =
        json!(["proxy", "--policy", &policy, "--resume", "last", "--", "sh", "-c", &server]);
    let resumed = python_client(
        &e,
        &home,
        "langchain",
        &json!({"command": bin, "args": resume, "calls": script}),
    );
    let messages = resumed["tool_messages"].as_array().unwrap();
    assert_eq!(messages.len(), 4, "{resumed}");
    assert!(messages[1]["text"].as_str().unwrap().contains("hello"));
    assert_eq!(messages[3]["text"], "from the agent");
    assert_eq!(store.runs().unwrap().len(), 2);
    let heads: Vec<(String, String)> = steps(&dir.join("traces"))
        .iter()
        .map(|s| {
            let (t, st) = head(s);
            (t.to_owned(), st.to_owned())
        })
        .collect();
    let statuses: Vec<&str> = heads.iter().map(|(_, s)| s.as_str()).collect();
    assert_eq!(statuses, ["replayed", "replayed", "ok", "ok"], "{heads:?}");
    assert_eq!(
        calls_received(&std::fs::read_to_string(&received).unwrap()),
        4,
        "the server received the recorded calls again"
    );

    // Offline, per call, with no server and no node: identical tool results, nothing written.
    std::fs::remove_file(data.join("out.txt")).unwrap();
    let offline = python_client(
        &e,
        &home,
        "langchain",
        &json!({"command": bin, "args": ["proxy", "--policy", &policy, "--offline", "last"],
                "calls": script}),
    );
    assert_eq!(offline["tool_messages"], resumed["tool_messages"]);
    assert!(!data.join("out.txt").exists(), "the write ran offline");
    assert_eq!(store.runs().unwrap().len(), 3);
    assert_eq!(
        calls_received(&std::fs::read_to_string(&received).unwrap()),
        4
    );
}

/// The filesystem-server policy of docs/INTEGRATIONS.md loads, and refuses what the docs say it refuses.
#[test]
fn the_documented_filesystem_policy_loads_and_refuses_the_listed_forms() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/INTEGRATIONS.md"))
        .unwrap();
    let section = &doc[doc
        .find("### A policy for the official filesystem server")
        .unwrap()..];
    let toml = &section[section.find("```toml\n").unwrap() + 8..];
    let toml = &toml[..toml.find("```").unwrap()];
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("data")).unwrap();
    std::fs::write(dir.path().join("failcore.toml"), toml).unwrap();
    let mut raw = Raw::start(with_server(bare_proxy(
        dir.path(),
        &[
            "--policy",
            dir.path().join("failcore.toml").to_str().unwrap(),
        ],
    )));
    assert!(raw.initialize().get("result").is_some());
    for (i, (path, rule)) in [
        ("~/notes.txt", "fs.home"),
        ("$HOME/notes.txt", "fs.variable"),
        ("file:///etc/passwd", "fs.url"),
        ("C:/x", "fs.drive_letter"),
        ("notes.txt", "fs.relative"),
        ("/etc/passwd", "fs.outside_root"),
    ]
    .into_iter()
    .enumerate()
    {
        let answer = raw.request(
            i as u64 + 1,
            "tools/call",
            json!({"name": "write_note", "arguments": {"path": path, "text": "x"}}),
        );
        assert_eq!(
            answer["result"]["structuredContent"]["rule"], rule,
            "{path}: {answer}"
        );
    }
    assert!(raw.close().0.success());
    // `--store` wins over the file's `[proxy] store`.
    let recorded = steps(&dir.path().join("proxy-trace"));
    assert_eq!(recorded.len(), 6);
    assert!(!dir.path().join("traces").exists());
}
