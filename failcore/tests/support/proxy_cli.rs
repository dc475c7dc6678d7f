//! `failcore llm-proxy` as a child process for the tests, and the `failcore` commands they read a trace
//! with.
#![allow(dead_code)]

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

pub const BIN: &str = env!("CARGO_BIN_EXE_failcore");

/// The variables that change how the proxy reaches its upstream: each test sets the ones it means.
const OUTSIDE: &[&str] = &[
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "FAILCORE_RESUME",
];

pub struct Proxy {
    child: Child,
    pub url: String,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proxy {
    pub fn start(traces: &Path, args: &[&str]) -> Proxy {
        Self::start_with_env(traces, args, &[])
    }

    /// Starts it with these environment variables (and none of the proxy and certificate ones the test
    /// process may have).
    pub fn start_with_env(traces: &Path, args: &[&str], env: &[(&str, &str)]) -> Proxy {
        let mut command = Command::new(BIN);
        command
            .arg("--store")
            .arg(traces)
            .arg("llm-proxy")
            .args(["--listen", "127.0.0.1:0"])
            .args(args);
        for name in OUTSIDE {
            command.env_remove(name);
        }
        command.envs(env.iter().copied());
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .strip_prefix("listening on ")
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_owned();
        Proxy {
            child,
            url: format!("{addr}/v1"),
        }
    }

    /// Stops it as Ctrl-C would: the run is finished.
    pub fn stop(mut self) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{status}");
    }

    /// Kills it without a chance to finish anything.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

pub fn stats_json(traces: &Path, run: &str) -> Value {
    let out = Command::new(BIN)
        .arg("--store")
        .arg(traces)
        .args(["stats", run, "--json"])
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

pub fn last_run(traces: &Path) -> String {
    stats_json(traces, "last")["run"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The steps of a run, as `failcore show --json` prints them (its first line, the run, left out).
pub fn steps(traces: &Path, run: &str) -> Vec<Value> {
    let out = Command::new(BIN)
        .arg("--store")
        .arg(traces)
        .args(["show", run, "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}
