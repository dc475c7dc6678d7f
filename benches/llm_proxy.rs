//! What `failcore llm-proxy` adds to a non-streamed Chat Completions request: the same request sent to the
//! scripted upstream directly and through the proxy (request parse, identity, fingerprint, policy, intent
//! and outcome records in a JSONL trace, `flushed`), over keep-alive connections on 127.0.0.1, in one run.
//! The proxy runs as `failcore llm-proxy` runs it, on a runtime of its own with one thread (there, in a
//! process of its own); the client and the upstream share another runtime.
//!
//! `cargo bench --bench llm_proxy`. Figures: docs/BENCHMARKS.md.

#[path = "../tests/support/scripted_llm.rs"]
mod scripted_llm;

use criterion::{criterion_group, criterion_main, Criterion};
use failcore::llm_proxy::LlmProxy;
use failcore::model::Models;
use failcore::Session;
use serde_json::json;
use std::time::Duration;

fn proxy(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let server = rt.block_on(scripted_llm::Scripted::start());
    let session = Session::builder()
        .dir(dir.path())
        .guard(Models::new().policy())
        .open()
        .expect("session");
    let (ready, address) = std::sync::mpsc::channel();
    let proxy_session = session.clone();
    let upstream = server.url();
    std::thread::spawn(move || {
        let proxy_rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("proxy runtime");
        proxy_rt.block_on(async move {
            let proxy = LlmProxy::bind(
                "127.0.0.1:0".parse().expect("addr"),
                proxy_session,
                Models::new(),
                Some(upstream),
            )
            .await
            .expect("proxy");
            ready
                .send(proxy.local_addr().expect("addr"))
                .expect("ready");
            proxy.serve(std::future::pending()).await;
        });
    });
    let proxy_url = format!("http://{}/v1", address.recv().expect("proxy address"));
    let body = serde_json::to_vec(&json!({
        "model": scripted_llm::MODEL,
        "messages": [
            {"role": "system", "content": "You plan with tools."},
            {"role": "user", "content": "Forecast for Lisbon, plus four?"}
        ],
        "temperature": 0.2,
        "tools": [{"type": "function", "function": {"name": "forecast", "description": "Looks up the forecast of a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    }))
    .expect("json");
    let client = reqwest::Client::new();
    let post = |url: String| {
        let client = client.clone();
        let body = body.clone();
        async move {
            let r = client
                .post(format!("{url}/chat/completions"))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .expect("send");
            assert!(r.status().is_success(), "{}", r.status());
            r.bytes().await.expect("body")
        }
    };
    let mut g = c.benchmark_group("llm_proxy");
    g.measurement_time(Duration::from_secs(8));
    let direct = server.url();
    g.bench_function("direct", |b| b.iter(|| rt.block_on(post(direct.clone()))));
    g.bench_function("through_proxy", |b| {
        b.iter(|| rt.block_on(post(proxy_url.clone())))
    });
    // The FailCore part alone: one model step (identity, fingerprint, policy, both records) around a reply
    // that is already there, no HTTP.
    let request: serde_json::Value = serde_json::from_slice(&body).expect("json");
    let reply: serde_json::Value =
        serde_json::from_slice(&rt.block_on(post(server.url()))).expect("json");
    let models = Models::new();
    g.bench_function("model_step_only", |b| {
        b.iter(|| {
            let reply = failcore::model::Reply::Body(reply.clone());
            rt.block_on(session.scope(models.call(&request, async move { Ok(reply) })))
                .expect("step")
        })
    });
    // The same lifecycle for a small tool call known at run time, in the same run: what a step costs here
    // whatever it records.
    let tool =
        failcore::DynamicTool::new("bench_tool", "bench", failcore::Effect::Pure).expect("tool");
    let args = json!({"a": 1, "b": 2});
    g.bench_function("tool_step_reference", |b| {
        b.iter(|| {
            rt.block_on(session.scope(tool.call(&args, Box::pin(async { Ok(json!(3)) }))))
                .expect("step")
        })
    });
    g.finish();
    rt.block_on(async { session.finish().await.expect("finish") });
}

criterion_group!(benches, proxy);
criterion_main!(benches);
