//! `failcore llm-proxy` as a process between a client and a scripted OpenAI-compatible upstream: it records
//! whole and streamed replies, is killed (SIGKILL) with a call in flight, resumes with the recorded calls
//! served from the trace, and replays offline with no request reaching the upstream (counted on the
//! upstream's side). Once with a Rust HTTP client, then with official Python SDKs: the OpenAI SDK
//! (`pip install openai==3.51.0`) through Chat Completions, and through the Responses API with embeddings and
//! the model list; the OpenAI Agents SDK (`pip install openai-agents==0.24.0`) on its default model; the
//! Anthropic SDK (`pip install anthropic==2.14.0`) through the Messages API. Each SDK test says it skipped
//! when its SDK is missing, and fails instead when `FAILCORE_REQUIRE_OPENAI_SDK=1`,
//! `FAILCORE_REQUIRE_OPENAI_AGENTS_SDK=1` or `FAILCORE_REQUIRE_ANTHROPIC_SDK=1`, as `.ci/run` sets.
//! HTTPS upstreams, proxies and redirects: llm_proxy_tls.rs.

#[path = "support/proxy_cli.rs"]
mod proxy_cli;
#[path = "../../tests/support/scripted_llm.rs"]
mod scripted_llm;

use proxy_cli::{last_run, stats_json, Proxy, BIN};
use scripted_llm::{usage_of_turn, Scripted, MODEL};
use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::time::Duration;

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

const OPENAI_RESPONSES: Sdk = Sdk {
    module: "openai",
    pin: "openai==3.51.0",
    require: "FAILCORE_REQUIRE_OPENAI_SDK",
    script: concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/python/openai_responses.py"
    ),
};

const OPENAI_AGENTS: Sdk = Sdk {
    module: "agents",
    pin: "openai-agents==0.24.0",
    require: "FAILCORE_REQUIRE_OPENAI_AGENTS_SDK",
    script: concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/python/openai_agents_agent.py"
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

/// Records with `sdk`'s agent, which makes `calls` upstream requests, until the proxy is killed during the
/// last of them; resumes (the others served from the trace, the last sent), then replays offline (none
/// sent): returns what the resumed agent saw, equal offline, and the resumed run's stats.
async fn record_kill_resume_offline(sdk: &'static Sdk, calls: usize) -> (Value, Value) {
    let server = Scripted::start().await;
    let dir = tempfile::tempdir().unwrap();
    let traces = dir.path().join("traces");

    // Run 1: the proxy is killed while the SDK's last call (streamed) is in flight.
    server.hold_request(calls);
    let proxy = Proxy::start(&traces, &["--upstream", &server.url()]);
    let url = proxy.url.clone();
    let agent = tokio::task::spawn_blocking(move || sdk.agent(&url));
    tokio::time::timeout(Duration::from_secs(60), server.held())
        .await
        .expect("the SDK's last call never reached the upstream");
    proxy.kill();
    let died = agent.await.unwrap();
    assert!(!died.status.success(), "the SDK saw the proxy die");
    assert_eq!(server.requests(), calls);
    let first = last_run(&traces);

    // Run 2: resumed; the SDK's calls but the last are served from the trace.
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
    assert_eq!(server.requests(), calls + 1);
    let seen: Value = serde_json::from_slice(&resumed.stdout).unwrap();
    let second = last_run(&traces);
    let stats = stats_json(&traces, &second);

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
    assert_eq!(
        server.requests(),
        calls + 1,
        "offline sent nothing upstream"
    );
    let replayed: Value = serde_json::from_slice(&offline.stdout).unwrap();
    assert_eq!(replayed, seen);
    (seen, stats)
}

/// The tokens of the first two turns of the script: what a resumed run that sends the third saved.
fn saved_by_two_turns() -> u64 {
    usage_of_turn(0).0 + usage_of_turn(0).1 + usage_of_turn(1).0 + usage_of_turn(1).1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_python_sdk_records_dies_resumes_and_replays_offline_through_the_proxy() {
    if !OPENAI.present() {
        return;
    }
    let (seen, stats) = record_kill_resume_offline(&OPENAI, 3).await;
    assert_eq!(
        stats["models"]["saved"]["tokens"],
        saved_by_two_turns(),
        "{stats}"
    );
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
    let (seen, stats) = record_kill_resume_offline(&ANTHROPIC, 3).await;
    assert_eq!(
        stats["models"]["saved"]["tokens"],
        saved_by_two_turns(),
        "{stats}"
    );
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

/// The Responses API through the official OpenAI SDK: `models.list`, `models.retrieve`, `embeddings.create`, then
/// `responses.create` whole and with `stream=True` (a function call whose arguments come in deltas, usage
/// with cached and reasoning tokens). Killed during the last call, resumed, replayed offline: the same
/// SDK-visible output each time (the offline run's, compared in the helper), every event type in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_python_sdk_records_resumes_and_replays_the_responses_api_embeddings_and_models()
{
    if !OPENAI_RESPONSES.present() {
        return;
    }
    // Six upstream requests: the model list, one model, embeddings, three responses.
    let (seen, stats) = record_kill_resume_offline(&OPENAI_RESPONSES, 6).await;
    // Served from the trace on resume: the embedding's token and the first two turns.
    assert_eq!(
        stats["models"]["saved"]["tokens"],
        1 + saved_by_two_turns(),
        "{stats}"
    );
    assert_eq!(seen["models"], json!([MODEL]));
    assert_eq!(seen["model"], "scripted");
    assert_eq!(seen["embedding"], json!(scripted_llm::EMBEDDING));
    assert_eq!(seen["embedding_tokens"], 1);
    let turns = &seen["turns"];
    let usage = |turn: u64| {
        let (input, output, cached) = usage_of_turn(turn);
        json!({"input": input, "output": output, "cached": cached,
            "reasoning": scripted_llm::reasoning_of_turn(turn)})
    };
    assert_eq!(turns[0]["id"], "resp_0");
    assert_eq!(turns[0]["tool"], "forecast");
    assert_eq!(turns[0]["arguments"], r#"{"city":"Lisbon"}"#);
    assert_eq!(turns[0]["usage"], usage(0));
    assert_eq!(turns[1]["tool"], "add");
    assert_eq!(turns[1]["arguments"], r#"{"a":21,"b":4}"#);
    assert_eq!(turns[1]["deltas"], json!([r#"{"a":21"#, r#","b":4}"#]));
    assert_eq!(
        turns[1]["events"],
        json!([
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed"
        ])
    );
    assert_eq!(turns[1]["usage"], usage(1));
    assert_eq!(turns[2]["answer"], "Done: Lisbon: 21 C; 25.");
    assert_eq!(turns[2]["output_text"], "Done: Lisbon: 21 C; 25.");
    assert_eq!(turns[2]["pieces"], 3);
}

/// An agent of the OpenAI Agents SDK on its default model (and so the Responses API), with two function
/// tools: killed during its third model call, resumed, replayed offline, the run's result the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_agents_sdk_default_model_records_resumes_and_replays_offline() {
    if !OPENAI_AGENTS.present() {
        return;
    }
    let (seen, stats) = record_kill_resume_offline(&OPENAI_AGENTS, 3).await;
    assert_eq!(
        stats["models"]["saved"]["tokens"],
        saved_by_two_turns(),
        "{stats}"
    );
    // The SDK's default model is what was asked for, and recorded.
    let model = format!("model:{}", seen["model"].as_str().unwrap());
    assert!(
        stats["models"]["per_model"].get(&model).is_some(),
        "{model}: {stats}"
    );
    assert_eq!(seen["answer"], "Done: Lisbon: 21 C; 25.");
    assert_eq!(
        seen["calls"],
        json!([{"tool": "forecast", "arguments": {"city": "Lisbon"}},
            {"tool": "add", "arguments": {"a": 21, "b": 4}}])
    );
    assert_eq!(seen["outputs"], json!(["Lisbon: 21 C", "25"]));
    assert_eq!(seen["requests"], 3);
    let input: u64 = (0..3).map(|t| usage_of_turn(t).0).sum();
    assert_eq!(seen["input_tokens"], input);
}
