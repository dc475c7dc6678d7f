//! One agent, two recorders, one store: its model calls go through `failcore llm-proxy` and its tool calls
//! through `failcore proxy` (the MCP proxy), both recording into one FAILCORE_DIR under one run key. Both
//! are killed; the MCP proxy's run started later. Then each proxy's `--resume last` picks its own run: the
//! LLM proxy serves its recorded model calls (no request reaches the upstream) and the MCP proxy its
//! recorded tool calls (none reaches the server). A run of the other recorder, named by its id, is refused
//! with an error that says whose it is; `failcore list` and `show` name each run's recorder and key.

#[path = "support/scripted_llm.rs"]
mod scripted_llm;
mod support;

use scripted_llm::{Scripted, MODEL};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use support::{failcore_bin, text, McpClient};

const KEY: &str = "agent-1";

fn failcore(traces: &Path) -> Command {
    let mut cmd = Command::new(failcore_bin());
    cmd.arg("--store")
        .arg(format!("jsonl:{}", traces.display()))
        .env_remove("FAILCORE_RESUME")
        .env_remove("FAILCORE_OFFLINE")
        .env_remove("FAILCORE_STORE")
        .env_remove("FAILCORE_DIR")
        .env_remove("FAILCORE_RUN_KEY");
    cmd
}

/// A running LLM proxy and the run it records into.
struct LlmProxy {
    child: Child,
    url: String,
    run: String,
}

impl Drop for LlmProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl LlmProxy {
    fn start(traces: &Path, upstream: &str, extra: &[&str]) -> LlmProxy {
        let mut child = failcore(traces)
            .args([
                "llm-proxy",
                "--listen",
                "127.0.0.1:0",
                "--upstream",
                upstream,
            ])
            .args(["--run-key", KEY])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the LLM proxy");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the proxy's first line");
        // `listening on http://127.0.0.1:PORT (run ID)`
        let rest = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"));
        let (addr, run) = rest.split_once(" (run ").expect("the run id");
        LlmProxy {
            child,
            url: format!("{addr}/v1"),
            run: run.trim().trim_end_matches(')').to_owned(),
        }
    }

    /// SIGKILL: no run_end, as a crash.
    fn kill(mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("wait");
    }
}

/// The agent's two model calls (a tool call asked for, then the next turn), their reply bodies.
async fn model_calls(url: &str) -> Vec<Value> {
    let client = reqwest::Client::new();
    let mut replies = Vec::new();
    let mut messages = vec![json!({"role": "user", "content": "Forecast for Lisbon, plus four?"})];
    for turn in 0..2 {
        if turn == 1 {
            messages.push(json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_forecast",
                "type": "function", "function": {"name": "forecast", "arguments": "{\"city\":\"Lisbon\"}"}}]}));
            messages.push(
                json!({"role": "tool", "tool_call_id": "call_forecast", "content": "Lisbon: 21 C"}),
            );
        }
        let body = json!({"model": MODEL, "messages": messages});
        let response = client
            .post(format!("{url}/chat/completions"))
            .header("authorization", "Bearer no-key")
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("send");
        assert!(response.status().is_success(), "{}", response.status());
        replies.push(serde_json::from_str(&response.text().await.expect("body")).expect("json"));
    }
    replies
}

fn mcp_proxy(traces: &Path, echo_log: &Path, extra: &[&str]) -> McpClient {
    let mut cmd = failcore(traces);
    cmd.arg("proxy")
        .args(["--run-key", KEY])
        .args(extra)
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_echo_mcp"))
        .env("ECHO_MCP_LOG", echo_log);
    McpClient::start(cmd)
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

/// The run ids of the store, oldest first, and the `resumed_from` and `recorder` of each.
fn runs(traces: &Path) -> Vec<(String, Option<String>, Option<String>)> {
    let store = failcore::store::JsonlStore::new(traces);
    failcore::store::TraceStore::runs(&store)
        .expect("runs")
        .into_iter()
        .map(|run| {
            let start = failcore::run_start_of(&store, &run).expect("a run_start");
            let recorder = failcore::recorder_of(&start).map(str::to_owned);
            (run, start.resumed_from, recorder)
        })
        .collect()
}

fn stdout_of(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run failcore");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_proxy_resumes_its_own_run_of_one_agent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let traces: PathBuf = dir.path().join("traces");
    let echo_log = dir.path().join("echo.log");
    let upstream = Scripted::start().await;

    // The agent's model calls, recorded by the LLM proxy.
    let llm = LlmProxy::start(&traces, &upstream.url(), &[]);
    let llm_run = llm.run.clone();
    let recorded = model_calls(&llm.url).await;
    assert_eq!(upstream.requests(), 2);

    // Its tool calls, recorded by the MCP proxy: this run starts later, at the first call.
    let mut mcp = mcp_proxy(&traces, &echo_log, &[]);
    let first = mcp.call("echo", json!({"text": "one"}));
    let second = mcp.call("echo", json!({"text": "two"}));
    assert_eq!((text(&first), text(&second)), ("one".into(), "two".into()));
    assert_eq!(lines(&echo_log), 2);

    // Both die.
    llm.kill();
    drop(mcp);
    let before = runs(&traces);
    assert_eq!(before.len(), 2, "{before:?}");
    assert_eq!(before[0].0, llm_run);
    assert_eq!(before[0].2.as_deref(), Some("llm-proxy"));
    assert_eq!(before[1].2.as_deref(), Some("mcp-proxy"));
    let mcp_run = before[1].0.clone();
    assert!(mcp_run > llm_run, "the MCP proxy's run is the newer one");

    // `llm-proxy --resume last` resumes the LLM proxy's run, not the newer MCP one: its recorded model
    // calls are served from the trace, and no request reaches the upstream.
    let llm = LlmProxy::start(&traces, &upstream.url(), &["--resume", "last"]);
    let served = model_calls(&llm.url).await;
    assert_eq!(served, recorded);
    assert_eq!(
        upstream.requests(),
        2,
        "a recorded model call went upstream"
    );
    let llm_resumed = llm.run.clone();
    llm.kill();

    // `proxy --resume last` resumes the MCP proxy's run, not the newer LLM proxy resume: its recorded tool
    // calls are served, and none reaches the server.
    let mut mcp = mcp_proxy(&traces, &echo_log, &["--resume", "last"]);
    let again = (
        mcp.call("echo", json!({"text": "one"})),
        mcp.call("echo", json!({"text": "two"})),
    );
    assert_eq!(again, (first, second));
    assert_eq!(
        lines(&echo_log),
        2,
        "a recorded tool call reached the server"
    );
    drop(mcp);

    // Each resume is a run of its own recorder, resumed from that recorder's crashed run.
    let after = runs(&traces);
    let resumed: Vec<_> = after
        .iter()
        .filter_map(|(run, from, recorder)| {
            Some((run.as_str(), from.as_deref()?, recorder.as_deref()?))
        })
        .collect();
    assert_eq!(resumed.len(), 2, "{after:?}");
    assert_eq!(
        resumed[0],
        (llm_resumed.as_str(), llm_run.as_str(), "llm-proxy")
    );
    assert_eq!(
        (resumed[1].1, resumed[1].2),
        (mcp_run.as_str(), "mcp-proxy")
    );

    // A run of the other recorder, named by its id, is refused with whose it is.
    let out = failcore(&traces)
        .args([
            "llm-proxy",
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &upstream.url(),
        ])
        .args(["--resume", &mcp_run])
        .output()
        .expect("run the LLM proxy");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!(
            "run {mcp_run} was recorded by the MCP proxy (`failcore proxy`), not by the LLM proxy"
        )),
        "{stderr}"
    );
    assert_eq!(upstream.requests(), 2);

    // `list` and `show` name each run's recorder and key.
    let list = stdout_of(failcore(&traces).args(["list", "--json"]));
    let list: Value = serde_json::from_str(&list).expect("list json");
    let of = |run: &str| {
        list["runs"]
            .as_array()
            .expect("runs")
            .iter()
            .find(|r| r["run"] == run)
            .map(|r| (r["recorder"].clone(), r["run_key"].clone()))
    };
    assert_eq!(of(&llm_run), Some((json!("llm-proxy"), json!(KEY))));
    assert_eq!(of(&mcp_run), Some((json!("mcp-proxy"), json!(KEY))));
    let table = stdout_of(failcore(&traces).args(["list"]));
    assert!(table.contains("recorded by"), "{table}");
    assert!(table.contains("llm-proxy, key agent-1"), "{table}");
    assert!(table.contains("mcp-proxy, key agent-1"), "{table}");
    let show = stdout_of(failcore(&traces).args(["show", &mcp_run]));
    assert!(
        show.contains("recorded by the MCP proxy (`failcore proxy`), run key agent-1"),
        "{show}"
    );
}
