//! `failcore llm-proxy` as a process between a client and a scripted OpenAI-compatible upstream: it records
//! whole and streamed replies, is killed (SIGKILL) with a call in flight, resumes with the recorded calls
//! served from the trace, and replays offline with no request reaching the upstream (counted on the
//! upstream's side). Once with a Rust HTTP client, once with the official OpenAI Python SDK
//! (`pip install openai==3.51.0`) and once with the official Anthropic Python SDK through the Messages API
//! (`pip install anthropic==2.14.0`); each SDK test says it skipped when its SDK is missing, and fails
//! instead when `FAILCORE_REQUIRE_OPENAI_SDK=1` or `FAILCORE_REQUIRE_ANTHROPIC_SDK=1`, as `.ci/run` sets.

#[path = "../../tests/support/scripted_llm.rs"]
mod scripted_llm;

use scripted_llm::{usage_of_turn, Scripted, MODEL};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_failcore");

struct Proxy {
    child: Child,
    url: String,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proxy {
    fn start(traces: &Path, args: &[&str]) -> Proxy {
        let mut child = Command::new(BIN)
            .arg("--store")
            .arg(traces)
            .arg("llm-proxy")
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env_remove("FAILCORE_RESUME")
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
    fn stop(mut self) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{status}");
    }

    /// Kills it without a chance to finish anything.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

fn conversation(turn: u64) -> Value {
    let mut messages = vec![json!({"role": "user", "content": "Forecast for Lisbon, plus four?"})];
    let calls = [
        (
            "call_forecast",
            "forecast",
            "{\"city\":\"Lisbon\"}",
            "Lisbon: 21 C",
        ),
        ("call_add", "add", "{\"a\":21,\"b\":4}", "25"),
    ];
    for (id, name, args, result) in calls.iter().take(turn as usize) {
        messages.push(json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": id, "type": "function", "function": {"name": name, "arguments": args}}]}));
        messages.push(json!({"role": "tool", "tool_call_id": id, "content": result}));
    }
    json!(messages)
}

/// Three calls: whole, streamed with usage, streamed. The `user` field differs per client run.
async fn client_calls(url: &str, user: &str) -> Result<Vec<String>, String> {
    let client = reqwest::Client::new();
    let mut out = Vec::new();
    for turn in 0..3u64 {
        let stream = turn > 0;
        let mut body = json!({"model": MODEL, "messages": conversation(turn), "user": user});
        if stream {
            body["stream"] = json!(true);
            body["stream_options"] = json!({"include_usage": true});
        }
        let response = client
            .post(format!("{url}/chat/completions"))
            .header("authorization", "Bearer no-key")
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let text = response.text().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("{status}: {text}"));
        }
        out.push(text);
    }
    Ok(out)
}

fn stats_json(traces: &Path, run: &str) -> Value {
    let out = Command::new(BIN)
        .arg("--store")
        .arg(traces)
        .args(["stats", run, "--json"])
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

fn last_run(traces: &Path) -> String {
    let out = Command::new(BIN)
        .arg("--store")
        .arg(traces)
        .args(["stats", "last", "--json"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["run"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_records_dies_resumes_and_replays_offline_streamed_and_not() {
    let server = Scripted::start().await;
    let dir = tempfile::tempdir().unwrap();
    let traces = dir.path().join("traces");
    let models = dir.path().join("models.toml");
    std::fs::write(
        &models,
        format!("[prices.\"{MODEL}\"]\ninput = 2.0\noutput = 8.0\ncached = 0.5\n"),
    )
    .unwrap();
    let models = models.to_str().unwrap();

    // Run 1: killed while the third call is in flight.
    server.hold_request(3);
    let proxy = Proxy::start(&traces, &["--upstream", &server.url(), "--models", models]);
    let url = proxy.url.clone();
    let client = tokio::spawn(async move { client_calls(&url, "alice").await });
    tokio::time::timeout(Duration::from_secs(30), server.held())
        .await
        .expect("the third call never reached the upstream");
    proxy.kill();
    assert!(
        client.await.unwrap().is_err(),
        "the client saw the proxy die"
    );
    assert_eq!(server.requests(), 3);
    let first = last_run(&traces);

    // Run 2: resumed. The two recorded calls are served; only the third is sent.
    let proxy = Proxy::start(
        &traces,
        &[
            "--upstream",
            &server.url(),
            "--models",
            models,
            "--resume",
            &first,
        ],
    );
    let resumed = client_calls(&proxy.url, "bob").await.unwrap();
    proxy.stop();
    assert_eq!(server.requests(), 4);
    let second = last_run(&traces);
    assert_ne!(first, second);

    // The replies are the upstream's: the streamed ones event by event.
    let whole: Value = serde_json::from_str(&resumed[0]).unwrap();
    assert_eq!(
        whole["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "forecast"
    );
    assert!(resumed[1].starts_with("data: {"), "{}", resumed[1]);
    assert!(resumed[1].contains("\"usage\":{"), "{}", resumed[1]);
    assert!(resumed[2].contains("Done: "), "{}", resumed[2]);
    assert!(resumed[2].ends_with("data: [DONE]\n\n"));

    // Run 3: offline from the resumed run, with no upstream at all. Byte for byte the same replies.
    let proxy = Proxy::start(&traces, &["--offline", &second]);
    let offline = client_calls(&proxy.url, "carol").await.unwrap();
    proxy.stop();
    assert_eq!(server.requests(), 4, "offline sent nothing upstream");
    assert_eq!(offline[1], resumed[1]);
    assert_eq!(offline[2], resumed[2]);
    let a: Value = serde_json::from_str(&offline[0]).unwrap();
    assert_eq!(a, whole);

    // `stats` on the resumed run: the tokens and money the replayed calls saved, as the script reported.
    let stats = stats_json(&traces, &second);
    let saved = &stats["models"]["saved"];
    let (p0, c0, k0) = usage_of_turn(0);
    let (p1, c1, k1) = usage_of_turn(1);
    assert_eq!(saved["calls"], 2);
    assert_eq!(saved["input_tokens"], p0 + p1);
    assert_eq!(saved["output_tokens"], c0 + c1);
    assert_eq!(saved["cached_tokens"], k0 + k1);
    let cost =
        |p: u64, c: u64, k: u64| ((p - k) as f64 * 2.0 + k as f64 * 0.5 + c as f64 * 8.0) / 1e6;
    let expected = cost(p0, c0, k0) + cost(p1, c1, k1);
    assert!(
        (saved["cost"].as_f64().unwrap() - expected).abs() < 1e-12,
        "{saved}"
    );
    let (p2, c2, k2) = usage_of_turn(2);
    assert_eq!(stats["models"]["spent"]["tokens"], p2 + c2);
    assert!((stats["models"]["spent"]["cost"].as_f64().unwrap() - cost(p2, c2, k2)).abs() < 1e-12);

    let text = Command::new(BIN)
        .arg("--store")
        .arg(&traces)
        .args(["stats", &second])
        .output()
        .unwrap();
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.contains(&format!("saved by replay {}", p0 + p1 + c0 + c1)),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_model_never_reaches_the_upstream() {
    let server = Scripted::start().await;
    let dir = tempfile::tempdir().unwrap();
    let traces = dir.path().join("traces");
    let models = dir.path().join("models.toml");
    std::fs::write(&models, "allow = [\"other-model\"]\n").unwrap();
    let proxy = Proxy::start(
        &traces,
        &[
            "--upstream",
            &server.url(),
            "--models",
            models.to_str().unwrap(),
        ],
    );
    let err = client_calls(&proxy.url, "x").await.unwrap_err();
    // The same refusal through the Messages API, in that API's error shape.
    let refused = reqwest::Client::new()
        .post(format!("{}/messages", proxy.url))
        .header("x-api-key", "no-key")
        .header("anthropic-version", "2023-06-01")
        .body(json!({"model": MODEL, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}).to_string())
        .send()
        .await
        .unwrap();
    let status = refused.status();
    let body: Value = serde_json::from_slice(&refused.bytes().await.unwrap()).unwrap();
    proxy.stop();
    assert!(err.starts_with("403"), "{err}");
    assert!(
        err.contains("failcore_blocked") && err.contains("model.allow"),
        "{err}"
    );
    assert_eq!(status, 403);
    assert_eq!(body["type"], "error", "{body}");
    assert_eq!(body["error"]["type"], "failcore_blocked", "{body}");
    assert_eq!(body["error"]["code"], "model.allow", "{body}");
    assert_eq!(server.requests(), 0);
    let stats = stats_json(&traces, "last");
    assert_eq!(stats["blocked_by_rule"]["model.allow"], 2);
}

/// A provider's official Python SDK and the agent script written with it.
struct Sdk {
    module: &'static str,
    pin: &'static str,
    require: &'static str,
    script: &'static str,
}

const OPENAI: Sdk = Sdk {
    module: "openai",
    pin: "openai==3.51.0",
    require: "FAILCORE_REQUIRE_OPENAI_SDK",
    script: concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/python/openai_agent.py"
    ),
};

const ANTHROPIC: Sdk = Sdk {
    module: "anthropic",
    pin: "anthropic==2.14.0",
    require: "FAILCORE_REQUIRE_ANTHROPIC_SDK",
    script: concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/python/anthropic_agent.py"
    ),
};

impl Sdk {
    /// Whether the SDK is installed; a clear skip when it is not, a failure when it is required.
    fn present(&self) -> bool {
        let ok = Command::new("python3")
            .args(["-c", &format!("import {}", self.module)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            assert!(
                std::env::var_os(self.require).is_none(),
                "{} is set and the {} Python SDK is missing",
                self.require,
                self.module
            );
            eprintln!(
                "skipped: the {} Python SDK is missing (pip install {})",
                self.module, self.pin
            );
        }
        ok
    }

    fn agent(&self, url: &str) -> std::process::Output {
        Command::new("python3")
            .arg(self.script)
            .arg(url)
            .stderr(Stdio::piped())
            .output()
            .unwrap()
    }
}

/// Records with `sdk`'s agent until the proxy is killed during its third call, resumes (two calls served,
/// one sent), then replays offline (none sent): returns what the resumed agent saw, equal offline.
async fn record_kill_resume_offline(sdk: &'static Sdk) -> Value {
    let server = Scripted::start().await;
    let dir = tempfile::tempdir().unwrap();
    let traces = dir.path().join("traces");

    // Run 1: the proxy is killed while the SDK's third call (streamed) is in flight.
    server.hold_request(3);
    let proxy = Proxy::start(&traces, &["--upstream", &server.url()]);
    let url = proxy.url.clone();
    let agent = tokio::task::spawn_blocking(move || sdk.agent(&url));
    tokio::time::timeout(Duration::from_secs(60), server.held())
        .await
        .expect("the SDK's third call never reached the upstream");
    proxy.kill();
    let died = agent.await.unwrap();
    assert!(!died.status.success(), "the SDK saw the proxy die");
    assert_eq!(server.requests(), 3);
    let first = last_run(&traces);

    // Run 2: resumed; the SDK's first two calls are served from the trace.
    let proxy = Proxy::start(&traces, &["--upstream", &server.url(), "--resume", &first]);
    let url = proxy.url.clone();
    let resumed = tokio::task::spawn_blocking(move || sdk.agent(&url))
        .await
        .unwrap();
    proxy.stop();
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert_eq!(server.requests(), 4);
    let seen: Value = serde_json::from_slice(&resumed.stdout).unwrap();
    let second = last_run(&traces);
    let stats = stats_json(&traces, &second);
    let saved = usage_of_turn(0).0 + usage_of_turn(0).1 + usage_of_turn(1).0 + usage_of_turn(1).1;
    assert_eq!(stats["models"]["saved"]["tokens"], saved, "{stats}");

    // Run 3: offline. The same path, not one request upstream.
    let proxy = Proxy::start(&traces, &["--offline", &second]);
    let url = proxy.url.clone();
    let offline = tokio::task::spawn_blocking(move || sdk.agent(&url))
        .await
        .unwrap();
    proxy.stop();
    assert!(
        offline.status.success(),
        "{}",
        String::from_utf8_lossy(&offline.stderr)
    );
    assert_eq!(server.requests(), 4, "offline sent nothing upstream");
    let replayed: Value = serde_json::from_slice(&offline.stdout).unwrap();
    assert_eq!(replayed, seen);
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_python_sdk_records_dies_resumes_and_replays_offline_through_the_proxy() {
    if !OPENAI.present() {
        return;
    }
    let seen = record_kill_resume_offline(&OPENAI).await;
    assert_eq!(seen[0]["tool"], "forecast");
    assert_eq!(seen[1]["tool"], "add");
    assert_eq!(seen[1]["prompt_tokens"], usage_of_turn(1).0);
    assert_eq!(seen[2]["answer"], "Done: Lisbon: 21 C; 25.");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_anthropic_python_sdk_records_dies_resumes_and_replays_offline_through_the_messages_api(
) {
    if !ANTHROPIC.present() {
        return;
    }
    let seen = record_kill_resume_offline(&ANTHROPIC).await;
    assert_eq!(seen[0]["tool"], "forecast");
    assert_eq!(seen[0]["input"], json!({"city": "Lisbon"}));
    assert_eq!(seen[0]["stop"], "tool_use");
    let (prompt, _, cached) = usage_of_turn(0);
    assert_eq!(seen[0]["input_tokens"], prompt - cached);
    // The streamed turn is replayed event by event, with its event names: the SDK saw every event the
    // upstream sent but `ping`, which it does not yield (the offline run saw the same, checked above).
    assert_eq!(seen[1]["tool"], "add");
    assert_eq!(seen[1]["input"], json!({"a": 21, "b": 4}));
    assert_eq!(seen[1]["events"], 7);
    assert_eq!(seen[1]["output_tokens"], usage_of_turn(1).1);
    assert_eq!(seen[2]["answer"], "Done: Lisbon: 21 C; 25.");
}
