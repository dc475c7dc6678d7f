//! `failcore proxy` over the MCP Streamable HTTP transport, end to end, with the real binary: the official
//! Python MCP SDK connecting by URL to `failcore proxy --listen` in front of the official filesystem
//! server; the listener's DNS-rebinding protection and bearer token; and `failcore proxy --url` in front
//! of a remote server that needs a bearer token, recording, killed, resumed and replayed offline.
//!
//! Needs what tests/proxy.rs's end-to-end tests need (`.ci/run` installs them, pinned):
//!   FAILCORE_E2E_FS_SERVER  the filesystem server's entry point
//!   FAILCORE_E2E_PYTHON     a python with the `mcp` package

mod support;

use failcore::store::{JsonlStore, RunReader, TraceStore};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use support::{e2e, failcore_bin, mcp_clients, E2e, McpClient};

/// A data directory with a file, and a policy confining the server's paths to it.
fn fixture(dir: &Path) -> (PathBuf, PathBuf) {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("hello.txt"), "hello").unwrap();
    std::fs::write(data.join("other.txt"), "other").unwrap();
    let policy = dir.join("failcore.toml");
    std::fs::write(
        &policy,
        format!(
            "guard = [\"data\"]\n\n[policy.data]\npreset = \"fs\"\nroot = \"{}\"\npaths = [\"path\", \
             \"paths\", \"source\", \"destination\"]\n",
            data.display()
        ),
    )
    .unwrap();
    (data, policy)
}

/// The filesystem server as a shell command whose input is logged to `received` (to count what reached
/// it).
fn fs_server(e: &E2e, data: &Path, received: &Path) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        format!(
            "tee -a '{}' | exec node '{}' '{}'",
            received.display(),
            e.server_js,
            data.display()
        ),
    ]
}

fn tool_calls_received(received: &Path) -> usize {
    std::fs::read_to_string(received)
        .unwrap_or_default()
        .matches("\"tools/call\"")
        .count()
}

/// A `failcore proxy --listen 127.0.0.1:0` process, its URL read from its stderr.
struct Listening {
    child: Child,
    url: String,
    port: u16,
    stderr: Arc<Mutex<String>>,
}

impl Listening {
    fn start(store: &Path, args: &[&str], env: &[(&str, &str)]) -> Listening {
        let mut cmd = Command::new(failcore_bin());
        cmd.env_remove("FAILCORE_RESUME")
            .env_remove("FAILCORE_OFFLINE")
            .env_remove("FAILCORE_STORE")
            .env_remove("FAILCORE_DIR")
            .envs(env.iter().copied())
            .arg("--store")
            .arg(format!("jsonl:{}", store.display()))
            .arg("proxy")
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        let url = loop {
            line.clear();
            assert!(
                lines.read_line(&mut line).unwrap() > 0,
                "the proxy exited before listening"
            );
            if let Some(at) = line.find("http://") {
                break line[at..].trim().to_owned();
            }
        };
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut rest = String::new();
            while lines.read_line(&mut rest).unwrap_or(0) > 0 {
                sink.lock().unwrap().push_str(&rest);
                rest.clear();
            }
        });
        let port = url
            .trim_start_matches("http://127.0.0.1:")
            .trim_end_matches("/mcp")
            .parse()
            .unwrap();
        Listening {
            child,
            url,
            port,
            stderr,
        }
    }

    /// SIGTERM, then its exit code.
    fn terminate(mut self) -> Option<i32> {
        // SAFETY: kill(2) on the id of a child this test started and has not reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        status.code().or(status.signal().map(|s| 128 + s))
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Python SDK's client over HTTP (tests/e2e/mcp_clients.py `http`); its JSON result.
fn http_client(e: &E2e, url: &str, headers: Value, calls: Value) -> Value {
    let config = json!({"url": url, "headers": headers, "calls": calls});
    mcp_clients(e, "http", &config, None)
}

/// One raw HTTP/1.0 POST to the proxy (its body ends with the connection); its status code and body.
fn raw_post(port: u16, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut request = "POST /mcp HTTP/1.0\r\nContent-Type: application/json\r\n\
                       Accept: application/json, text/event-stream\r\n"
        .to_owned();
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"0"}}}"#;

/// Each run of `store`: its steps' `[tool, status]`, and whether it ended.
fn runs(store: &Path) -> Vec<(Vec<(String, String)>, bool)> {
    let store = JsonlStore::new(store);
    let mut out = Vec::new();
    for run in store.runs().unwrap() {
        let mut tools = std::collections::HashMap::new();
        let mut steps = Vec::new();
        let mut ended = false;
        for r in RunReader::open(&store, &run).unwrap() {
            let body = r.unwrap().record.body;
            if let Some(s) = body.start() {
                tools.insert(s.step, s.tool.clone());
            }
            if let Some(e) = body.end() {
                let tool = tools.get(&e.step).cloned().unwrap_or_default();
                steps.push((tool, e.status.as_str().to_owned()));
            }
            if body.kind() == "run_end" {
                ended = true;
            }
        }
        out.push((steps, ended));
    }
    out
}

#[test]
fn the_python_sdk_over_http_through_the_proxy_to_the_filesystem_server() {
    let Some(e) = e2e(
        "the_python_sdk_over_http_through_the_proxy_to_the_filesystem_server",
        None,
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let dir = std::fs::canonicalize(dir.path()).unwrap();
    let (data, policy) = fixture(&dir);
    let received = dir.join("received.log");
    let store = dir.join("traces");
    let server = fs_server(&e, &data, &received);
    let mut args = vec!["--policy", policy.to_str().unwrap(), "--"];
    args.extend(server.iter().map(String::as_str));
    let proxy = Listening::start(&store, &args, &[]);

    let out = http_client(
        &e,
        &proxy.url,
        json!({}),
        json!([
            ["read_text_file", {"path": data.join("hello.txt")}],
            ["read_text_file", {"path": "/etc/passwd"}],
        ]),
    );
    assert!(out.get("error").is_none(), "{out}");
    let tools: Vec<&str> = out["tools"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        tools.contains(&"read_text_file") && tools.contains(&"list_directory"),
        "{tools:?}"
    );
    assert_eq!(out["calls"][0]["text"], "hello", "{out}");
    assert_eq!(out["calls"][0]["is_error"], false, "{out}");
    assert_eq!(out["calls"][1]["is_error"], true, "{out}");
    assert_eq!(
        out["calls"][1]["structured"]["rule"], "fs.outside_root",
        "{out}"
    );
    // The refused call never reached the server; the allowed one did.
    let log = std::fs::read_to_string(&received).unwrap();
    assert!(!log.contains("/etc/passwd"), "{log}");
    assert_eq!(tool_calls_received(&received), 1, "{log}");

    // DNS rebinding: another Host, or another Origin, is refused before anything else.
    let (status, _) = raw_post(proxy.port, &[("Host", "evil.example")], INITIALIZE);
    assert_eq!(status, 403);
    let host = format!("127.0.0.1:{}", proxy.port);
    let (status, _) = raw_post(
        proxy.port,
        &[("Host", &host), ("Origin", "http://evil.example")],
        INITIALIZE,
    );
    assert_eq!(status, 403);
    // The same request from this host is served: a session id, and the server's answer.
    let (status, body) = raw_post(
        proxy.port,
        &[("Host", &host), ("Origin", &format!("http://{host}"))],
        INITIALIZE,
    );
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert!(
        answer["result"]["serverInfo"]["name"].is_string(),
        "{answer}"
    );
    // Without a session id, a request after initialize is refused.
    let (status, _) = raw_post(
        proxy.port,
        &[("Host", &host)],
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
    );
    assert_eq!(status, 400);
    let (status, _) = raw_post(
        proxy.port,
        &[("Host", &host), ("Mcp-Session-Id", "no-such-session")],
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#,
    );
    assert_eq!(status, 404);

    let stderr = proxy.stderr.clone();
    assert_eq!(
        proxy.terminate(),
        Some(128 + 15),
        "{}",
        stderr.lock().unwrap()
    );
    // The SDK's session was ended by its DELETE: its run is complete, with both calls.
    let all = runs(&store);
    let (steps, ended) = all
        .iter()
        .find(|(steps, _)| !steps.is_empty())
        .expect("a run with the calls");
    assert!(ended, "{all:?}");
    assert_eq!(steps.len(), 2, "{steps:?}");
    assert_eq!(steps[0], ("read_text_file".into(), "ok".into()));
    assert_eq!(steps[1], ("read_text_file".into(), "blocked".into()));
}

#[test]
fn a_listener_with_a_token_refuses_requests_without_it() {
    let Some(e) = e2e("a_listener_with_a_token_refuses_requests_without_it", None) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let dir = std::fs::canonicalize(dir.path()).unwrap();
    let (data, _) = fixture(&dir);
    let received = dir.join("received.log");
    let server = fs_server(&e, &data, &received);
    let mut args = vec!["--listen-token-env", "PROXY_TOKEN", "--"];
    args.extend(server.iter().map(String::as_str));
    let token = "proxy-token-0123456789";
    let proxy = Listening::start(&dir.join("traces"), &args, &[("PROXY_TOKEN", token)]);
    let host = format!("127.0.0.1:{}", proxy.port);

    let (status, _) = raw_post(proxy.port, &[("Host", &host)], INITIALIZE);
    assert_eq!(status, 401);
    let (status, _) = raw_post(
        proxy.port,
        &[
            ("Host", &host),
            ("Authorization", "Bearer wrong-token-0000"),
        ],
        INITIALIZE,
    );
    assert_eq!(status, 401);
    let refused = http_client(
        &e,
        &proxy.url,
        json!({}),
        json!([["read_text_file", {"path": data.join("hello.txt")}]]),
    );
    assert!(
        refused["error"]
            .as_str()
            .unwrap_or_default()
            .contains("401"),
        "{refused}"
    );
    let served = http_client(
        &e,
        &proxy.url,
        json!({"Authorization": format!("Bearer {token}")}),
        json!([["read_text_file", {"path": data.join("hello.txt")}]]),
    );
    assert_eq!(served["calls"][0]["text"], "hello", "{served}");
    assert_eq!(tool_calls_received(&received), 1);
}

/// `failcore proxy --url` (stdio towards the client) in front of a remote server that needs a bearer
/// token: here `failcore proxy --listen --listen-token-env` in front of the filesystem server.
#[test]
fn a_remote_server_by_url_records_resumes_after_a_kill_and_replays_offline() {
    let Some(e) = e2e(
        "a_remote_server_by_url_records_resumes_after_a_kill_and_replays_offline",
        None,
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let dir = std::fs::canonicalize(dir.path()).unwrap();
    let (data, _) = fixture(&dir);
    let received = dir.join("received.log");
    let server = fs_server(&e, &data, &received);
    let mut args = vec!["--listen-token-env", "REMOTE_TOKEN", "--"];
    args.extend(server.iter().map(String::as_str));
    let token = "remote-token-0123456789";
    let remote = Listening::start(
        &dir.join("remote-traces"),
        &args,
        &[("REMOTE_TOKEN", token)],
    );
    let store = dir.join("traces");
    let front = |extra: &[&str], url: &str| {
        let mut cmd = Command::new(failcore_bin());
        cmd.env_remove("FAILCORE_RESUME")
            .env_remove("FAILCORE_OFFLINE")
            .env_remove("FAILCORE_STORE")
            .env_remove("FAILCORE_DIR")
            .env("REMOTE_AUTH", format!("Bearer {token}"))
            .arg("--store")
            .arg(format!("jsonl:{}", store.display()))
            .arg("proxy")
            .args(extra);
        if !url.is_empty() {
            cmd.args(["--url", url, "--header-env", "Authorization=REMOTE_AUTH"]);
        }
        McpClient::start(cmd)
    };
    let hello = json!({"path": data.join("hello.txt")});
    let other = json!({"path": data.join("other.txt")});

    // Without the token, the remote refuses, and the client is told why.
    let mut untrusted = Command::new(failcore_bin())
        .env_remove("FAILCORE_STORE")
        .env_remove("FAILCORE_DIR")
        .arg("--store")
        .arg(format!("jsonl:{}", dir.join("untrusted").display()))
        .args(["proxy", "--url", &remote.url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = untrusted.stdin.take().unwrap();
    writeln!(stdin, "{INITIALIZE}").unwrap();
    let mut answer = String::new();
    BufReader::new(untrusted.stdout.take().unwrap())
        .read_line(&mut answer)
        .unwrap();
    assert!(
        answer.contains("\"error\"") && answer.contains("401"),
        "the remote's refusal is named: {answer}"
    );
    drop(stdin);
    assert!(untrusted.wait().unwrap().success());
    assert_eq!(tool_calls_received(&received), 0);

    // Recorded, then the proxy is killed (SIGKILL): its run has no run_end.
    let mut first = front(&[], &remote.url);
    assert_eq!(
        first.call("read_text_file", hello.clone())["content"][0]["text"],
        "hello"
    );
    assert_eq!(
        first.call("read_text_file", other.clone())["content"][0]["text"],
        "other"
    );
    first.kill();
    // The session with the remote is not ended by a killed proxy: it stays open there, harmless.
    assert_eq!(tool_calls_received(&received), 2);
    let recorded = runs(&store);
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert!(!recorded[0].1, "a killed run has no run_end: {recorded:?}");

    // Resumed: the recorded calls are served from the trace, a new one reaches the server.
    let mut resumed = front(&["--resume", "last"], &remote.url);
    assert_eq!(
        resumed.call("read_text_file", hello.clone())["content"][0]["text"],
        "hello"
    );
    assert_eq!(
        resumed.call("read_text_file", other.clone())["content"][0]["text"],
        "other"
    );
    assert_eq!(tool_calls_received(&received), 2, "served from the trace");
    let listed = resumed.call("list_directory", json!({"path": &data}));
    assert!(listed.to_string().contains("hello.txt"), "{listed}");
    assert_eq!(tool_calls_received(&received), 3);
    assert!(resumed.close().success());

    // Offline: no server at all (the remote is gone).
    drop(remote);
    let mut offline = front(&["--offline", "last"], "");
    let tools = offline.list_tools();
    assert!(
        tools.iter().any(|t| t["name"] == "read_text_file"),
        "{tools:?}"
    );
    assert_eq!(
        offline.call("read_text_file", hello)["content"][0]["text"],
        "hello"
    );
    let listed = offline.call("list_directory", json!({"path": &data}));
    assert!(listed.to_string().contains("hello.txt"), "{listed}");
    assert!(offline.close().success());
    assert_eq!(tool_calls_received(&received), 3);
    let all = runs(&store);
    assert_eq!(all.len(), 3, "{all:?}");
    let statuses: Vec<&str> = all[2].0.iter().map(|(_, s)| s.as_str()).collect();
    assert_eq!(statuses, ["replayed", "replayed"], "{all:?}");
}

/// Sends `head` and then `body_len` bytes of body (what the proxy lets through: it may answer and close
/// before the body is all sent), then reads the answer; its status code.
fn raw_request(port: u16, head: &str, body_len: usize) -> u16 {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(120)))
        .unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    let chunk = vec![b' '; 64 << 10];
    let mut sent = 0;
    while sent < body_len {
        let n = chunk.len().min(body_len - sent);
        if stream.write_all(&chunk[..n]).is_err() {
            break; // answered and closed early: what the test wants to see
        }
        sent += n;
    }
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    String::from_utf8_lossy(&response)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The MCP listener under hostile clients and a server that never answers: an oversized body is refused
/// (413) without being held whole, a request smuggled with both `Content-Length` and
/// `Transfer-Encoding` is refused (400), a hung server's request is answered with an error once the
/// timeout passes, and after each the listener goes on serving other clients. Needs no outside server.
#[test]
fn the_listener_refuses_oversized_and_smuggled_requests_and_answers_for_a_hung_server() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("trace");
    let echo = env!("CARGO_BIN_EXE_echo_mcp");
    let proxy = Listening::start(&store, &["--", echo], &[]);
    let host = format!("127.0.0.1:{}", proxy.port);
    let serving = || {
        let (status, body) = raw_post(proxy.port, &[("Host", &host)], INITIALIZE);
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("\"result\""), "{body}");
    };
    serving();

    // 17 MiB, over the 16 MiB a message may have.
    let size = 17 << 20;
    let head = format!(
        "POST /mcp HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nContent-Length: {size}\r\n\r\n"
    );
    assert_eq!(raw_request(proxy.port, &head, size), 413);
    serving();

    // Smuggling: two lengths that two parsers could read differently.
    let smuggled = format!(
        "POST /mcp HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n\
         POST /mcp HTTP/1.1\r\nHost: {host}\r\nContent-Length: 2\r\n\r\n{{}}"
    );
    assert_eq!(raw_request(proxy.port, &smuggled, 0), 400);
    serving();
    drop(proxy);

    // A server that reads its input and never answers: the client gets an error, not a hang.
    let hung = Listening::start(
        &dir.path().join("hung-trace"),
        &["--timeout", "2", "--", "sh", "-c", "cat > /dev/null"],
        &[],
    );
    let host = format!("127.0.0.1:{}", hung.port);
    let (status, body) = raw_post(hung.port, &[("Host", &host)], INITIALIZE);
    assert!(
        body.contains("\"error\"") && !body.contains("\"result\""),
        "{status} {body}"
    );
}
