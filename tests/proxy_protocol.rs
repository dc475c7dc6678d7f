//! The MCP proxy speaks the protocol as clients speak it, through the binary users build (a release build
//! of `failcore` with the `cli` feature, made once per test run in its own target directory, so that no
//! feature a test build turns on can change what is tested): results and server descriptions reach the
//! client byte for byte (live, resumed and offline), every page of a list is replayed, cancellation and
//! shutdown end calls in flight as cancelled, and an `input_required` result is never served as final.
//!
//! The server is `test_mcp` (tests/support/test_mcp.rs), which writes its answers from fixed text and logs
//! each line it sends and receives; for tasks (SEP-1686) and for a survey of every kind of request compared
//! directly, through the proxy and offline, the official "everything" server, driven by the official
//! Python SDK's client (both pinned, found through `FAILCORE_E2E_EVERYTHING_SERVER` and
//! `FAILCORE_E2E_PYTHON`, which `.ci/run` sets).

mod support;

use failcore::store::{JsonlStore, RunReader, TraceStore};
use serde_json::value::RawValue;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};
use support::{everything, mcp_clients, users_failcore, E2e};

/// How long any one answer may take before the test fails (a bound on "it came at all").
const PATIENCE: Duration = Duration::from_secs(60);

fn server() -> &'static str {
    env!("CARGO_BIN_EXE_test_mcp")
}

/// A proxy session driven line by line, as a client writes and reads them.
struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl Session {
    /// `failcore --store jsonl:<dir>/trace proxy <extra>`, the test server after `--` when `server`
    /// (with `env` set for it).
    fn start(
        dir: &Path,
        extra: &[&str],
        server_cmd: Option<Vec<String>>,
        env: &[(&str, String)],
    ) -> Self {
        let mut cmd = Command::new(users_failcore());
        cmd.current_dir(dir)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .arg("--store")
            .arg(format!("jsonl:{}", dir.join("trace").display()))
            .arg("proxy")
            .args(extra);
        for (k, v) in env {
            cmd.env(k, v);
        }
        if let Some(server_cmd) = server_cmd {
            cmd.arg("--").args(server_cmd);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("failcore proxy starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Session {
            stdin: child.stdin.take(),
            child,
            lines,
        }
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("input open");
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// The next line from the proxy.
    fn recv(&mut self) -> String {
        match self.lines.recv_timeout(PATIENCE) {
            Ok(line) => line,
            Err(e) => panic!("no answer from the proxy: {e}"),
        }
    }

    /// Sends a request and returns the line answering it.
    fn request(&mut self, id: Value, method: &str, params: Value) -> String {
        let line = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        self.send(&line.to_string());
        let answer = self.recv();
        let parsed: Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(parsed["id"], id, "{answer}");
        answer
    }

    /// Closes the proxy's input; the lines it still wrote, and how it ended.
    fn close(mut self) -> (Vec<String>, ExitStatus) {
        drop(self.stdin.take());
        let status = wait(&mut self.child);
        (self.lines.try_iter().collect(), status)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits for `child` to end, failing the test if it has not within [`PATIENCE`].
fn wait(child: &mut Child) -> ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(started.elapsed() < PATIENCE, "the proxy did not end");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The `result` of a JSON-RPC response, as its text holds it.
fn raw_result(line: &str) -> String {
    #[derive(serde::Deserialize)]
    struct Parts<'a> {
        #[serde(borrow)]
        result: &'a RawValue,
    }
    let parts: Parts<'_> = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    parts.result.get().to_owned()
}

fn lines_of(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The test server's logs in `dir`, as its environment.
fn server_env(dir: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("TEST_MCP_SENT", dir.join("sent.log").display().to_string()),
        (
            "TEST_MCP_LOG",
            dir.join("received.log").display().to_string(),
        ),
        ("TEST_MCP_PID", dir.join("server.pid").display().to_string()),
    ]
}

fn plain_server() -> Option<Vec<String>> {
    Some(vec![server().to_owned()])
}

fn initialize_params() -> Value {
    json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}})
}

/// `[tool, status]` of each step of the last run, and the kind of its last record.
fn trace(dir: &Path) -> (Vec<(String, String)>, String) {
    let store = JsonlStore::new(dir.join("trace"));
    let last = store.resolve("last").unwrap();
    let mut tools = std::collections::HashMap::new();
    let mut steps = Vec::new();
    let mut kind = String::new();
    for r in RunReader::open(&store, &last).unwrap() {
        let body = r.unwrap().record.body;
        kind = body.kind().to_owned();
        if let Some(s) = body.start() {
            tools.insert(s.step, s.tool.clone());
        }
        if let Some(e) = body.end() {
            steps.push((tools[&e.step].clone(), e.status.as_str().to_owned()));
        }
    }
    (steps, kind)
}

fn pairs(steps: &[(String, String)]) -> Vec<(&str, &str)> {
    steps
        .iter()
        .map(|(t, s)| (t.as_str(), s.as_str()))
        .collect()
}

/// Waits until the server has received a line containing `what`.
fn until_received(dir: &Path, what: &str) {
    let started = Instant::now();
    while !lines_of(&dir.join("received.log"))
        .iter()
        .any(|l| l.contains(what))
    {
        assert!(started.elapsed() < PATIENCE, "the server never got {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn results_and_descriptions_reach_the_client_byte_for_byte_live_resumed_and_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut env = server_env(dir);
    env.push(("TEST_MCP_TOOLS", "2".into()));
    let sent = |n: usize| lines_of(&dir.join("sent.log"))[n].clone();

    let mut live = Session::start(dir, &[], plain_server(), &env);
    let init = live.request(json!(1), "initialize", initialize_params());
    assert_eq!(init, sent(0), "initialize, live");
    let list = live.request(json!(2), "tools/list", json!({}));
    assert_eq!(list, sent(1), "tools/list, live");
    let schema = list
        .find(r#""properties":{"zeta""#)
        .expect("the server's property order");
    assert!(list[schema..].find("\"alpha\"") < list[schema..].find("\"mid\""));
    let numbers = live.request(
        json!(3),
        "tools/call",
        json!({"name": "numbers", "arguments": {}}),
    );
    assert_eq!(numbers, sent(2), "tools/call, live");
    for literal in [
        "123456789012345678901234567890",
        "1e2",
        "-0.0",
        "1.0E-7",
        r"caf\u00e9",
        r"\ud83d\ude00",
    ] {
        assert!(numbers.contains(literal), "{literal} in {numbers}");
    }
    let (_, status) = live.close();
    assert!(status.success(), "{status}");
    assert_eq!(pairs(&trace(dir).0), [("numbers", "ok")]);

    // Resumed: the call is served from the trace, the same bytes with this client's id.
    let mut resumed = Session::start(dir, &["--resume", "last"], plain_server(), &env);
    resumed.request(json!(1), "initialize", initialize_params());
    let again = resumed.request(
        json!("r-3"),
        "tools/call",
        json!({"name": "numbers", "arguments": {}}),
    );
    assert_eq!(
        raw_result(&again),
        raw_result(&numbers),
        "tools/call, resumed"
    );
    assert!(again.contains(r#""id":"r-3""#), "{again}");
    let (_, status) = resumed.close();
    assert!(status.success(), "{status}");
    assert_eq!(pairs(&trace(dir).0), [("numbers", "replayed")]);
    let calls_sent = lines_of(&dir.join("sent.log"))
        .iter()
        .filter(|l| l.contains("structuredContent"))
        .count();
    assert_eq!(calls_sent, 1, "the server ran the tool again");

    // Offline, no server: the description and the result as the server sent them.
    let mut offline = Session::start(dir, &["--offline", "last"], None, &[]);
    let init_off = offline.request(json!(7), "initialize", initialize_params());
    assert_eq!(
        raw_result(&init_off),
        raw_result(&init),
        "initialize, offline"
    );
    let list_off = offline.request(json!(8), "tools/list", json!({}));
    assert_eq!(
        raw_result(&list_off),
        raw_result(&list),
        "tools/list, offline"
    );
    let numbers_off = offline.request(
        json!(9),
        "tools/call",
        json!({"name": "numbers", "arguments": {}}),
    );
    assert_eq!(
        raw_result(&numbers_off),
        raw_result(&numbers),
        "tools/call, offline"
    );
    let (_, status) = offline.close();
    assert!(status.success(), "{status}");
}

#[test]
fn every_page_of_the_tool_list_is_recorded_and_replayed_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut env = server_env(dir);
    // 3 + 11 = 14 tools, in pages of 5.
    env.push(("TEST_MCP_TOOLS", "11".into()));
    env.push(("TEST_MCP_PAGE", "5".into()));
    let mut live = Session::start(dir, &[], plain_server(), &env);
    live.request(json!(0), "initialize", initialize_params());
    let mut pages = Vec::new();
    let mut cursor = Value::Null;
    loop {
        let params = if cursor.is_null() {
            json!({})
        } else {
            json!({"cursor": cursor})
        };
        let page = live.request(json!(pages.len() + 1), "tools/list", params);
        let parsed: Value = serde_json::from_str(&page).unwrap();
        cursor = parsed["result"]["nextCursor"].clone();
        pages.push((page, parsed));
        if cursor.is_null() {
            break;
        }
    }
    let sizes: Vec<usize> = pages
        .iter()
        .map(|(_, p)| p["result"]["tools"].as_array().unwrap().len())
        .collect();
    assert_eq!(sizes, [5, 5, 4]);
    live.request(
        json!(10),
        "tools/call",
        json!({"name": "numbers", "arguments": {}}),
    );
    assert!(live.close().1.success());

    let mut offline = Session::start(dir, &["--offline", "last"], None, &[]);
    offline.request(json!(0), "initialize", initialize_params());
    let mut cursor = Value::Null;
    let mut names = Vec::new();
    for (i, (page, _)) in pages.iter().enumerate() {
        let params = if cursor.is_null() {
            json!({})
        } else {
            json!({"cursor": cursor})
        };
        let again = offline.request(json!(20 + i), "tools/list", params);
        assert_eq!(raw_result(&again), raw_result(page), "page {i}");
        let parsed: Value = serde_json::from_str(&again).unwrap();
        cursor = parsed["result"]["nextCursor"].clone();
        for t in parsed["result"]["tools"].as_array().unwrap() {
            names.push(t["name"].as_str().unwrap().to_owned());
        }
    }
    assert!(
        cursor.is_null(),
        "the last page offline has a next cursor: {cursor}"
    );
    assert_eq!(names.len(), 14, "{names:?}");
    // A cursor the server never gave is refused, not answered with some other page.
    let unknown =
        offline.send_and_recv_error(json!(40), "tools/list", json!({"cursor": "nowhere"}));
    assert_eq!(unknown["error"]["code"], -32602, "{unknown}");
    assert!(offline.close().1.success());
}

impl Session {
    fn send_and_recv_error(&mut self, id: Value, method: &str, params: Value) -> Value {
        serde_json::from_str(&self.request(id, method, params)).unwrap()
    }
}

#[test]
fn a_cancelled_call_ends_at_once_recorded_as_cancelled_and_unanswered() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut live = Session::start(dir, &[], plain_server(), &server_env(dir));
    live.request(json!(0), "initialize", initialize_params());
    live.send(&json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "sleep", "arguments": {"seconds": 30}}}).to_string());
    until_received(dir, r#""name":"sleep""#);
    live.send(&json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 5, "reason": "the user stopped it"}}).to_string());
    until_received(dir, "notifications/cancelled");
    // The next answer is the ping's: the cancelled call gets none.
    let ping = live.request(json!(6), "ping", json!({}));
    assert!(ping.contains(r#""result":{}"#), "{ping}");
    // The call was ended without waiting for the server: its step is already written as cancelled.
    let started = Instant::now();
    while trace(dir).0.is_empty() {
        assert!(
            started.elapsed() < PATIENCE,
            "the cancelled call was never recorded"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(pairs(&trace(dir).0), [("sleep", "cancelled")]);
    let (rest, status) = live.close();
    assert!(status.success(), "{status}");
    assert!(
        rest.iter().all(|l| !l.contains(r#""id":5"#)),
        "an answer to the cancelled call: {rest:?}"
    );
    let (steps, last) = trace(dir);
    assert_eq!(pairs(&steps), [("sleep", "cancelled")]);
    assert_eq!(last, "run_end");
}

fn alive(pid: &str) -> bool {
    Command::new("kill")
        .args(["-0", pid])
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// A server that ignores SIGTERM and outlives its input: only SIGKILL ends it.
fn stubborn_server() -> Option<Vec<String>> {
    Some(vec![
        "sh".into(),
        "-c".into(),
        format!("trap '' TERM; exec '{}'", server()),
    ])
}

#[test]
fn the_end_of_input_cancels_calls_in_flight_and_stops_a_stubborn_server() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut env = server_env(dir);
    env.push(("TEST_MCP_LINGER", "1".into()));
    let mut live = Session::start(dir, &[], stubborn_server(), &env);
    live.request(json!(0), "initialize", initialize_params());
    live.send(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "sleep", "arguments": {"seconds": 600}}}).to_string());
    until_received(dir, r#""name":"sleep""#);
    let pid = std::fs::read_to_string(dir.join("server.pid")).unwrap();
    assert!(alive(&pid));
    let (_, status) = live.close();
    assert!(status.success(), "{status}");
    let (steps, last) = trace(dir);
    assert_eq!(pairs(&steps), [("sleep", "cancelled")]);
    assert_eq!(last, "run_end");
    // The server, which ignored its input's end and SIGTERM, was killed.
    assert!(!alive(&pid), "the server {pid} outlived the proxy");
}

#[test]
fn sigterm_cancels_calls_in_flight_and_ends_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut live = Session::start(dir, &[], plain_server(), &server_env(dir));
    live.request(json!(0), "initialize", initialize_params());
    live.send(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "sleep", "arguments": {"seconds": 600}}}).to_string());
    until_received(dir, r#""name":"sleep""#);
    let pid = live.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = wait(&mut live.child);
    assert_eq!(status.code(), Some(143));
    let (steps, last) = trace(dir);
    assert_eq!(pairs(&steps), [("sleep", "cancelled")]);
    assert_eq!(last, "run_end");
    let server_pid = std::fs::read_to_string(dir.join("server.pid")).unwrap();
    assert!(
        !alive(&server_pid),
        "the server {server_pid} outlived the proxy"
    );
}

#[test]
fn an_input_required_result_is_never_served_as_the_answer_and_retries_differ_by_their_input() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let env = server_env(dir);
    let ask = |input: Option<&str>| match input {
        Some(name) => {
            json!({"name": "ask", "arguments": {}, "inputResponses": {"name": {"action": "accept", "content": {"name": name}}}})
        }
        None => json!({"name": "ask", "arguments": {}}),
    };
    let mut live = Session::start(dir, &[], plain_server(), &env);
    live.request(json!(0), "initialize", initialize_params());
    let first = live.request(json!(1), "tools/call", ask(None));
    assert!(
        first.contains(r#""resultType":"input_required""#),
        "{first}"
    );
    let sent = lines_of(&dir.join("sent.log"));
    let asked = sent.iter().find(|l| l.contains("input_required")).unwrap();
    assert_eq!(&first, asked, "relayed as sent");
    let ada = live.request(json!(2), "tools/call", ask(Some("ada")));
    assert!(ada.contains("hello ada"), "{ada}");
    assert!(live.close().1.success());
    assert_eq!(pairs(&trace(dir).0), [("ask", "failed"), ("ask", "ok")]);

    let server_calls = || {
        lines_of(&dir.join("received.log"))
            .iter()
            .filter(|l| l.contains("tools/call"))
            .count()
    };
    assert_eq!(server_calls(), 2);
    let mut resumed = Session::start(dir, &["--resume", "last"], plain_server(), &env);
    resumed.request(json!(0), "initialize", initialize_params());
    // The question again: asked of the server, never answered from the trace.
    let first = resumed.request(json!(1), "tools/call", ask(None));
    assert!(first.contains("input_required"), "{first}");
    // Other input: the server answers it, not the trace's answer to "ada".
    let bob = resumed.request(json!(2), "tools/call", ask(Some("bob")));
    assert!(bob.contains("hello bob"), "{bob}");
    // The same input as recorded: served from the trace.
    let ada = resumed.request(json!(3), "tools/call", ask(Some("ada")));
    assert!(ada.contains("hello ada"), "{ada}");
    assert!(resumed.close().1.success());
    assert_eq!(server_calls(), 4);
    assert_eq!(
        pairs(&trace(dir).0),
        [("ask", "failed"), ("ask", "ok"), ("ask", "replayed")]
    );
}

/// The `_meta` a client of the 2026-07-28 revision puts on every request.
fn meta_2026() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "0"},
        "io.modelcontextprotocol/clientCapabilities": {},
    })
}

#[test]
fn a_session_of_the_2026_revision_is_recorded_and_replayed_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut live = Session::start(dir, &["--timeout", "0.5"], plain_server(), &server_env(dir));
    let discover = live.request(json!(1), "server/discover", json!({"_meta": meta_2026()}));
    assert_eq!(discover, lines_of(&dir.join("sent.log"))[0]);
    // A subscription stream: relayed, acknowledged by the server, and never timed out by the proxy.
    live.send(&json!({"jsonrpc": "2.0", "id": "listen", "method": "subscriptions/listen", "params": {"notifications": {"toolsListChanged": true}, "_meta": meta_2026()}}).to_string());
    let ack = live.recv();
    assert!(
        ack.contains("notifications/subscriptions/acknowledged"),
        "{ack}"
    );
    let numbers = live.request(
        json!(2),
        "tools/call",
        json!({"name": "numbers", "arguments": {}, "_meta": meta_2026()}),
    );
    assert!(numbers.contains("structuredContent"), "{numbers}");
    // The proxy's own tools/list (to record the server's description) says the revision, as required.
    let own = lines_of(&dir.join("received.log"))
        .into_iter()
        .find(|l| l.contains("failcore-proxy-list-0"))
        .expect("the proxy's own tools/list");
    let own: Value = serde_json::from_str(&own).unwrap();
    assert_eq!(own["params"]["_meta"], meta_2026(), "{own}");
    // A task of the tasks extension: the client gets the receipt; the step is the task's result, which
    // the proxy polled for itself (with the revision's `_meta`).
    let job = live.request(
        json!(4),
        "tools/call",
        json!({"name": "job", "arguments": {}, "_meta": meta_2026()}),
    );
    assert!(job.contains(r#""resultType":"task""#), "{job}");
    let started = Instant::now();
    while trace(dir).0.len() < 2 {
        assert!(started.elapsed() < PATIENCE, "the task was never recorded");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(pairs(&trace(dir).0), [("numbers", "ok"), ("job", "ok")]);
    let polls: Vec<Value> = lines_of(&dir.join("received.log"))
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|m| m["method"] == "tasks/get")
        .collect();
    assert!(!polls.is_empty());
    assert!(
        polls.iter().all(|p| p["params"]["_meta"] == meta_2026()),
        "{polls:?}"
    );
    // A request that waits longer than the timeout is answered with an error; the subscription, open
    // since before it, is not.
    live.send(&json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "sleep", "arguments": {"seconds": 3}, "_meta": meta_2026()}}).to_string());
    let timed_out = live.recv();
    assert!(timed_out.contains(r#""id":3"#), "{timed_out}");
    // (The server's end, when the input closes, ends the subscription: that answer may come.)
    let (rest, status) = live.close();
    assert!(status.success(), "{status}");
    assert!(
        rest.iter().all(|l| !l.contains("did not answer within")),
        "{rest:?}"
    );
    // The run recorded the server's description, its tools included.
    let store = JsonlStore::new(dir.join("trace"));
    let run = store.resolve("last").unwrap();
    let first = RunReader::open(&store, &run)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let failcore::store::Body::RunStart(start) = first.record.body else {
        panic!("no run_start")
    };
    let tools = &start.versions["mcp_server"]["tools"];
    assert_eq!(tools.as_array().map(Vec::len), Some(3), "{tools}");

    let mut offline = Session::start(dir, &["--offline", "last"], None, &[]);
    let again = offline.request(json!("d"), "server/discover", json!({"_meta": meta_2026()}));
    assert_eq!(raw_result(&again), raw_result(&discover));
    let list = offline.request(json!("l"), "tools/list", json!({"_meta": meta_2026()}));
    let listed: Value = serde_json::from_str(&list).unwrap();
    assert_eq!(listed["result"]["tools"], *tools, "{list}");
    let numbers_off = offline.request(
        json!(3),
        "tools/call",
        json!({"name": "numbers", "arguments": {}, "_meta": meta_2026()}),
    );
    assert_eq!(raw_result(&numbers_off), raw_result(&numbers));
    // The task's result itself, as the server sent it within the task.
    let job_off = offline.request(
        json!(5),
        "tools/call",
        json!({"name": "job", "arguments": {}, "_meta": meta_2026()}),
    );
    assert_eq!(
        raw_result(&job_off),
        r#"{"content":[{"type":"text","text":"job done"}],"structuredContent":{"big":123456789012345678901234567890}}"#
    );
    offline.send(&json!({"jsonrpc": "2.0", "id": "listen", "method": "subscriptions/listen", "params": {"notifications": {}, "_meta": meta_2026()}}).to_string());
    let ack = offline.recv();
    assert!(
        ack.contains("notifications/subscriptions/acknowledged"),
        "{ack}"
    );
    assert!(offline.close().1.success());
}

/// A message line that answers request `id` (notifications in between skipped).
fn answer_to(session: &mut Session, id: &Value) -> Value {
    loop {
        let line = session.recv();
        let message: Value = serde_json::from_str(&line).unwrap();
        if message.get("method").is_none() && message["id"] == *id {
            return message;
        }
    }
}

/// Runs tests/e2e/mcp_clients.py `tasks` against `failcore <proxy args>`; its JSON result.
fn sdk_tasks(e: &E2e, dir: &Path, proxy: &[&str], ask: Value) -> Value {
    let mut args = vec![
        "--store".to_owned(),
        format!("jsonl:{}", dir.join("trace").display()),
        "proxy".to_owned(),
    ];
    args.extend(proxy.iter().map(|a| a.to_string()));
    let mut config = json!({"command": users_failcore(), "args": args});
    config
        .as_object_mut()
        .unwrap()
        .extend(ask.as_object().unwrap().clone());
    mcp_clients(e, "tasks", &config, None)
}

#[test]
fn a_task_is_one_step_recorded_as_its_result_and_served_as_a_completed_task() {
    let Some(e) = everything(
        "a_task_is_one_step_recorded_as_its_result_and_served_as_a_completed_task",
        Some("FAILCORE_REQUIRE_FRAMEWORKS"),
    ) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let server = vec!["node".to_owned(), e.server_js.clone(), "stdio".to_owned()];
    let research = json!({"name": "simulate-research-query", "arguments": {"topic": "tasks"}, "task": {"ttl": 60000}});

    // Recorded: the client gets the receipt at once, follows the task itself; the step is the result.
    let mut live = Session::start(dir, &[], Some(server.clone()), &[]);
    live.request(
        json!(0),
        "initialize",
        json!({"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}),
    );
    live.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string());
    live.send(
        &json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": research}).to_string(),
    );
    let receipt = answer_to(&mut live, &json!(1));
    assert_eq!(receipt["result"]["task"]["status"], "working", "{receipt}");
    let task_id = receipt["result"]["task"]["taskId"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut n = 2;
    loop {
        live.send(&json!({"jsonrpc": "2.0", "id": n, "method": "tasks/get", "params": {"taskId": task_id}}).to_string());
        let state = answer_to(&mut live, &json!(n));
        n += 1;
        if state["result"]["status"] == "completed" {
            break;
        }
        assert_eq!(state["result"]["status"], "working", "{state}");
        std::thread::sleep(Duration::from_millis(200));
    }
    live.send(&json!({"jsonrpc": "2.0", "id": n, "method": "tasks/result", "params": {"taskId": task_id}}).to_string());
    let result = answer_to(&mut live, &json!(n));
    let report = result["result"]["content"][0]["text"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(report.starts_with("# Research Report: tasks"), "{result}");
    // The step is written once the proxy has followed the task to its end; then the proxy is killed.
    let started = Instant::now();
    while trace(dir).0.is_empty() {
        assert!(started.elapsed() < PATIENCE, "the task was never recorded");
        std::thread::sleep(Duration::from_millis(20));
    }
    live.child.kill().unwrap();
    live.child.wait().unwrap();
    let (steps, last) = trace(dir);
    assert_eq!(pairs(&steps), [("simulate-research-query", "ok")]);
    assert_ne!(last, "run_end", "killed: the run has no end");
    let store = JsonlStore::new(dir.join("trace"));
    let run = store.resolve("last").unwrap();
    let output = RunReader::open(&store, &run)
        .unwrap()
        .filter_map(|r| r.unwrap().record.body.end().and_then(|e| e.output.clone()))
        .next()
        .expect("the step's output");
    let output = output.to_string();
    assert!(output.contains("Research Report: tasks"), "{output}");
    assert!(
        !output.contains("\"working\""),
        "the receipt was recorded: {output}"
    );

    // Resumed, through the official SDK client: the task is served completed, with the recorded task id
    // and result; the server never runs it again (a run would be a new task, working).
    let resumed = sdk_tasks(
        &e,
        dir,
        &["--resume", "last", "--", "node", &e.server_js, "stdio"],
        json!({"tool": "simulate-research-query", "arguments": {"topic": "tasks"}}),
    );
    assert_eq!(resumed["created"], "completed", "{resumed}");
    assert_eq!(resumed["task_id"], task_id.as_str(), "{resumed}");
    assert_eq!(resumed["statuses"], json!(["completed"]), "{resumed}");
    assert_eq!(resumed["result"]["text"], report.as_str());
    assert_eq!(
        pairs(&trace(dir).0),
        [("simulate-research-query", "replayed")]
    );

    // Offline, no server: the same, and tasks/list names the served task.
    let offline = sdk_tasks(
        &e,
        dir,
        &["--offline", "last"],
        json!({"tool": "simulate-research-query", "arguments": {"topic": "tasks"}}),
    );
    assert_eq!(offline["created"], "completed", "{offline}");
    assert_eq!(offline["task_id"], task_id.as_str(), "{offline}");
    assert_eq!(offline["result"]["text"], report.as_str());
    assert_eq!(offline["listed"], json!([task_id]), "{offline}");

    // Live, a task cancelled by the client: the server is asked, and the step is recorded as cancelled.
    let cancelled = sdk_tasks(
        &e,
        dir,
        &["--", "node", &e.server_js, "stdio"],
        json!({"tool": "simulate-research-query", "arguments": {"topic": "stop"}, "cancel": true}),
    );
    assert_eq!(cancelled["created"], "working", "{cancelled}");
    assert_eq!(cancelled["cancelled"], "cancelled", "{cancelled}");
    assert_eq!(
        pairs(&trace(dir).0),
        [("simulate-research-query", "cancelled")]
    );
}

/// Every tool of the everything server that ends of itself: progress, sampling, elicitation and roots
/// among them.
fn survey_calls() -> Value {
    json!([
        ["echo", {"message": "hi"}],
        ["get-sum", {"a": 1, "b": 2}],
        ["get-annotated-message", {"messageType": "error", "includeImage": true}],
        ["get-tiny-image", {}],
        ["get-structured-content", {"location": "New York"}],
        ["get-resource-links", {"count": 2}],
        ["get-resource-reference", {"resourceType": "Text", "resourceId": 2}],
        ["trigger-long-running-operation", {"duration": 0.2, "steps": 2}],
        ["trigger-sampling-request", {"prompt": "hello", "maxTokens": 10}],
        ["trigger-elicitation-request", {}],
        ["get-roots-list", {}],
    ])
}

/// An SDK client's survey of the everything server (`survey(command, args, tools_only)`, see
/// tests/e2e): directly, through the proxy (recording), and offline from that recording, compared.
fn surveys_compare(e: &E2e, survey: impl Fn(Value, Vec<String>, bool) -> Value) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let store = format!("jsonl:{}", dir.join("trace").display());
    let node = |mut args: Vec<String>| {
        args.extend(["node".to_owned(), e.server_js.clone(), "stdio".to_owned()]);
        args
    };
    let proxy = |extra: &[&str]| {
        let mut args = vec!["--store".to_owned(), store.clone(), "proxy".to_owned()];
        args.extend(extra.iter().map(|a| a.to_string()));
        args
    };
    let direct = survey(
        json!("node"),
        vec![e.server_js.clone(), "stdio".to_owned()],
        false,
    );
    let through = survey(json!(users_failcore()), node(proxy(&["--"])), false);
    assert_eq!(through, direct, "through the proxy");
    let (steps, last) = trace(dir);
    assert_eq!(steps.len(), 11, "{steps:?}");
    assert!(steps.iter().all(|(_, s)| s == "ok"), "{steps:?}");
    assert_eq!(last, "run_end");

    // Offline, no server: the same tools and results (progress, sampling, elicitation and roots are not
    // asked again: the results are the recorded ones).
    let offline = survey(json!(users_failcore()), proxy(&["--offline", "last"]), true);
    assert_eq!(offline["tools"], direct["tools"]);
    let results = |s: &Value| -> Vec<Value> {
        s["calls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["result"].clone())
            .collect()
    };
    assert_eq!(results(&offline), results(&direct), "offline");
}

#[test]
fn the_python_sdk_sees_the_everything_server_alike_through_the_proxy_and_offline() {
    let Some(e) = everything(
        "the_python_sdk_sees_the_everything_server_alike_through_the_proxy_and_offline",
        Some("FAILCORE_REQUIRE_FRAMEWORKS"),
    ) else {
        return;
    };
    let calls = survey_calls();
    surveys_compare(&e, |command, args, tools_only| {
        let config =
            json!({"command": command, "args": args, "calls": calls, "tools_only": tools_only});
        let out = mcp_clients(&e, "survey", &config, None);
        if !tools_only {
            let progress = &out["calls"][7]["progress"];
            assert_eq!(progress, &json!([[1.0, 2.0], [2.0, 2.0]]), "{out}");
        }
        out
    });
}

/// The same survey with the official TypeScript SDK's client (tests/e2e/ts_survey.cjs), which needs the
/// SDK `.ci/run` installs for the conformance suite (`FAILCORE_E2E_CONFORMANCE`).
#[test]
fn the_typescript_sdk_sees_the_everything_server_alike_through_the_proxy_and_offline() {
    let test = "the_typescript_sdk_sees_the_everything_server_alike_through_the_proxy_and_offline";
    let Some(e) = everything(test, Some("FAILCORE_REQUIRE_CONFORMANCE")) else {
        return;
    };
    let Some(modules) = std::env::var_os("FAILCORE_E2E_CONFORMANCE")
        .map(|p| Path::new(&p).join("node_modules"))
        .filter(|m| m.join("@modelcontextprotocol/sdk").is_dir())
    else {
        assert!(
            std::env::var("FAILCORE_REQUIRE_CONFORMANCE").as_deref() != Ok("1"),
            "{test}: FAILCORE_E2E_CONFORMANCE holds no @modelcontextprotocol/sdk"
        );
        eprintln!(
            "skipping {test}: set FAILCORE_E2E_CONFORMANCE to an npm prefix holding \
             @modelcontextprotocol/sdk (bash .ci/run installs it)"
        );
        return;
    };
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/ts_survey.cjs");
    let calls = survey_calls();
    surveys_compare(&e, |command, args, tools_only| {
        let config =
            json!({"command": command, "args": args, "calls": calls, "tools_only": tools_only});
        let out = Command::new("node")
            .arg(script)
            .arg(&modules)
            .arg(config.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "the TypeScript client failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut survey: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
        // This client drops a progress notification it handles after the call's response (the last
        // one of the long operation, now and then, talking to the server directly): whether progress
        // came is compared, not how many notifications.
        for call in survey["calls"].as_array_mut().into_iter().flatten() {
            let came = call["progress"].as_array().is_some_and(|p| !p.is_empty());
            call["progress"] = json!(came);
        }
        survey
    });
}

/// `(status, landed)` of each step of the last run.
fn landed(dir: &Path) -> Vec<(String, Option<&'static str>)> {
    let store = JsonlStore::new(dir.join("trace"));
    let last = store.resolve("last").unwrap();
    RunReader::open(&store, &last)
        .unwrap()
        .filter_map(|r| {
            let body = r.unwrap().record.body;
            body.end()
                .map(|e| (e.status.as_str().to_owned(), e.landed.map(|l| l.as_str())))
        })
        .collect()
}

/// How many `charge` calls with `how` the server received.
fn charges(dir: &Path, how: &str) -> usize {
    lines_of(&dir.join("received.log"))
        .iter()
        .filter(|l| l.contains("\"charge\"") && l.contains(&format!("\"how\":\"{how}\"")))
        .count()
}

#[test]
fn a_call_the_server_refused_runs_again_on_resume_and_one_it_may_have_applied_is_held_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut env = server_env(dir);
    env.push(("TEST_MCP_CHARGE", "1".into()));
    let charge = |how: &str| json!({"name": "charge", "arguments": {"how": how}});

    let mut live = Session::start(dir, &[], plain_server(), &env);
    live.request(json!(1), "initialize", initialize_params());
    live.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string());
    live.request(json!(2), "tools/list", json!({}));
    // Refused before acting (-32602), failed mid-way (-32603), and the server dying with the call sent.
    for (id, how) in [(3, "refuse"), (4, "internal"), (5, "die")] {
        let answer = live.request(json!(id), "tools/call", charge(how));
        assert!(
            answer.contains("\"error\"") || answer.contains("\"isError\":true"),
            "{how}: {answer}"
        );
    }
    live.close();
    assert_eq!(
        landed(dir),
        [
            ("failed".to_owned(), Some("no")),
            ("failed".to_owned(), Some("unknown")),
            ("failed".to_owned(), Some("unknown")),
        ],
        "each failure says whether the server could have acted on it"
    );

    // Resumed with `--on-in-flight block`: the refused call reaches the server again; the two whose
    // effect is unknown are refused by the proxy and never reach it.
    std::fs::remove_file(dir.join("received.log")).unwrap();
    let mut resumed = Session::start(
        dir,
        &["--resume", "last", "--on-in-flight", "block"],
        plain_server(),
        &env,
    );
    resumed.request(json!(1), "initialize", initialize_params());
    resumed.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string());
    let again = resumed.request(json!(3), "tools/call", charge("refuse"));
    assert!(again.contains("no such account"), "{again}");
    for (id, how) in [(4, "internal"), (5, "die")] {
        let held = resumed.request(json!(id), "tools/call", charge(how));
        assert!(
            held.contains("\"isError\":true") && held.contains("resume.in_flight"),
            "{how} is held back: {held}"
        );
    }
    resumed.close();
    assert_eq!(charges(dir, "refuse"), 1, "the refused call ran again");
    assert_eq!(charges(dir, "internal"), 0, "held back");
    assert_eq!(charges(dir, "die"), 0, "held back");
    let statuses: Vec<String> = landed(dir).into_iter().map(|(s, _)| s).collect();
    assert_eq!(statuses, ["failed", "blocked", "blocked"]);
}
