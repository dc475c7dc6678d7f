//! A minimal MCP client over the stdio of a child process, for end-to-end tests.
#![allow(dead_code)]

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::sync::OnceLock;
use std::time::Duration;

/// The path of an example binary of this package, built on demand.
pub fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory")
        .to_path_buf();
    let path = dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--quiet", "--example", name, "--features", "mcp"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo build of the example");
    assert!(status.success(), "building example {name} failed");
    assert!(path.exists(), "{} is missing", path.display());
    path
}

pub struct McpClient {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    next_id: u64,
}

impl McpClient {
    /// Starts `command` and performs the MCP handshake.
    pub fn start(mut command: Command) -> McpClient {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the MCP server");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        let mut client = McpClient {
            child,
            stdin,
            lines: rx,
            next_id: 1,
        };
        let init = client.request(
            "initialize",
            json!({
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "failcore-test", "version": "0"}
            }),
        );
        assert!(init.get("result").is_some(), "initialize failed: {init}");
        client.notify("notifications/initialized", json!({}));
        client
    }

    pub fn send(&mut self, message: &Value) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{message}").expect("write to the server");
        stdin.flush().expect("flush");
    }

    pub fn notify(&mut self, method: &str, params: Value) {
        self.send(&json!({"jsonrpc": "2.0", "method": method, "params": params}));
    }

    /// Sends a request and returns the response with its id (skipping notifications in between).
    pub fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(60))
                .expect("no response from the MCP server within 60 s");
            let msg: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not JSON-RPC on stdout ({e}): {line}"));
            if msg.get("id") == Some(&json!(id)) {
                return msg;
            }
        }
    }

    pub fn list_tools(&mut self) -> Vec<Value> {
        let r = self.request("tools/list", json!({}));
        r["result"]["tools"]
            .as_array()
            .unwrap_or_else(|| panic!("tools/list: {r}"))
            .clone()
    }

    /// `tools/call`: the result object (a protocol error panics).
    pub fn call(&mut self, name: &str, arguments: Value) -> Value {
        let r = self.request("tools/call", json!({"name": name, "arguments": arguments}));
        r.get("result")
            .unwrap_or_else(|| panic!("tools/call {name}: {r}"))
            .clone()
    }

    /// Kills the process (SIGKILL) and reaps it: nothing of it runs after this.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Closes stdin and waits for the server to exit.
    pub fn close(mut self) -> std::process::ExitStatus {
        drop(self.stdin.take());
        for _ in 0..600 {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        panic!("the MCP server did not exit after stdin closed");
    }
}

impl Drop for McpClient {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The text of a tool result's first content block.
pub fn text(result: &Value) -> String {
    result["content"][0]["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The path of the `failcore` command, built on demand.
pub fn failcore_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory")
        .to_path_buf();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "-p",
            "failcore",
            "--features",
            "cli",
            "--bin",
            "failcore",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo build of failcore");
    assert!(status.success(), "building failcore failed");
    dir.join(format!("failcore{}", std::env::consts::EXE_SUFFIX))
}

/// `failcore`, built as users build it: `cargo build --release -p failcore --features cli`, in its own
/// target directory beside this test's. Built once per test run (the lock is this process's; cargo locks
/// the directory against other runs).
pub fn users_failcore() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable path");
        // <target>/<profile>/deps/<test>
        let target = exe
            .ancestors()
            .nth(3)
            .expect("target directory")
            .to_path_buf();
        let dir = target.join("e2e-release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "--release",
                "-p",
                "failcore",
                "--features",
                "cli",
            ])
            .arg("--target-dir")
            .arg(&dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("cargo build of failcore");
        assert!(status.success(), "the release build of failcore failed");
        let bin = dir
            .join("release")
            .join(format!("failcore{}", std::env::consts::EXE_SUFFIX));
        assert!(bin.exists(), "{} is missing", bin.display());
        bin
    })
    .clone()
}

/// The outside programs of the end-to-end tests: the official MCP filesystem server (npm) and a Python
/// with the official SDKs and frameworks. `.ci/run` installs them (pinned) and sets
/// `FAILCORE_E2E_FS_SERVER` (the server's entry point, …/server-filesystem/dist/index.js) and
/// `FAILCORE_E2E_PYTHON`.
pub struct E2e {
    pub server_js: String,
    pub python: String,
}

/// Runs the official SDK clients of tests/e2e/mcp_clients.py in `mode` with `config` (with `HOME` set to
/// `home`, when given); the JSON object it prints last.
pub fn mcp_clients(e: &E2e, mode: &str, config: &Value, home: Option<&Path>) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/mcp_clients.py");
    let mut command = Command::new(&e.python);
    command.args([script, mode, &config.to_string()]);
    if let Some(home) = home {
        command.env("HOME", home);
    }
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "the {mode} client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// The end-to-end programs, or `None` after saying that `test` skipped; with `require` (a variable such
/// as `FAILCORE_REQUIRE_FRAMEWORKS`) set to `1`, a missing program fails the test instead.
pub fn e2e(test: &str, require: Option<&str>) -> Option<E2e> {
    programs(test, require, "FAILCORE_E2E_FS_SERVER", "filesystem")
}

/// As [`e2e`], with the official "everything" server (`FAILCORE_E2E_EVERYTHING_SERVER`, its
/// …/server-everything/dist/index.js) as `server_js`.
pub fn everything(test: &str, require: Option<&str>) -> Option<E2e> {
    programs(
        test,
        require,
        "FAILCORE_E2E_EVERYTHING_SERVER",
        "everything",
    )
}

fn programs(test: &str, require: Option<&str>, server_var: &str, server: &str) -> Option<E2e> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    match (var(server_var), var("FAILCORE_E2E_PYTHON")) {
        (Some(server_js), Some(python)) => Some(E2e { server_js, python }),
        _ => {
            let why = format!(
                "set {server_var} and FAILCORE_E2E_PYTHON (bash .ci/run installs the pinned {server} \
                 server and the Python clients and sets them)"
            );
            if let Some(require) = require {
                assert!(
                    var(require).as_deref() != Some("1"),
                    "{test}: {require}=1 but {why}"
                );
            }
            eprintln!("SKIPPED {test}: {why}");
            None
        }
    }
}

/// One raw HTTP/1.0 POST to `/mcp` on 127.0.0.1:`port` (its body ends with the connection); its status code and body.
pub fn raw_post(port: u16, headers: &[(&str, &str)], body: &str) -> (u16, String) {
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

/// An `initialize` request, as a client sends it first.
pub const INITIALIZE: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"0"}}}"#;

/// A process listening on loopback, its URL read from the first `http://` on its stderr, the rest of
/// its stderr kept for the report.
pub struct Listening {
    pub child: Child,
    pub url: String,
    /// Its stderr after the URL, as it comes.
    pub stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Listening {
    pub fn start(mut cmd: Command) -> Listening {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the server starts");
        let mut lines = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        let url = loop {
            line.clear();
            assert!(
                lines.read_line(&mut line).unwrap() > 0,
                "the server exited before listening"
            );
            if let Some(at) = line.find("http://") {
                break line[at..].trim().to_owned();
            }
        };
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut rest = String::new();
            while lines.read_line(&mut rest).unwrap_or(0) > 0 {
                sink.lock().unwrap().push_str(&rest);
                rest.clear();
            }
        });
        Listening {
            child,
            url,
            stderr: log,
        }
    }

    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The port of its URL.
    pub fn port(&self) -> u16 {
        let authority = self.url.trim_start_matches("http://");
        let authority = authority.split('/').next().unwrap_or_default();
        authority
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {}", self.url))
    }

    /// SIGTERM, then its exit code (128 + the signal's number when a signal ended it).
    pub fn terminate(mut self) -> Option<i32> {
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

/// The official Python SDK's client by URL (tests/e2e/mcp_clients.py `http`): its JSON result.
pub fn python_http_client(e: &E2e, url: &str, headers: Value, calls: Value) -> Value {
    let config = json!({"url": url, "headers": headers, "calls": calls});
    mcp_clients(e, "http", &config, None)
}
