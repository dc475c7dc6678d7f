//! What `failcore llm-proxy` adds to a non-streamed Chat Completions request: the same request sent to the
//! scripted upstream directly and through the proxy (request parse, identity, fingerprint, policy, intent
//! and outcome records in a JSONL trace, `flushed`), over keep-alive connections on 127.0.0.1, in one run.
//! The proxy runs as `failcore llm-proxy` runs it, on a runtime of its own with one thread (there, in a
//! process of its own); the client and the upstream share another runtime.
//!
//! The same again with the upstream over HTTPS (a private CA made here): the proxy's pooled TLS connection
//! against a client's own pooled TLS connection to the upstream.
//!
//! `cargo bench --bench llm_proxy`. Figures: docs/BENCHMARKS.md.

#[path = "../tests/support/private_ca.rs"]
mod private_ca;
#[path = "../tests/support/scripted_llm.rs"]
mod scripted_llm;

use criterion::{criterion_group, criterion_main, Criterion};
use failcore::llm_proxy::{LlmProxy, Options};
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
    let proxy_url = spawn_proxy(session.clone(), server.url(), Options::default());
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

    // HTTPS: the scripted upstream over TLS, its CA trusted by the client and by the proxy. Both keep
    // their TLS connection across requests (reqwest's pool), so a request costs no handshake.
    let ca = private_ca::Ca::new(dir.path());
    let config = ca.server(&["127.0.0.1"], false);
    let tls_server = rt.block_on(scripted_llm::Scripted::start_with(move |stream| {
        let acceptor = tokio_rustls::TlsAcceptor::from(config.clone());
        async move { acceptor.accept(stream).await }
    }));
    let tls_proxy_url = spawn_proxy(
        session.clone(),
        tls_server.url_as("https"),
        Options::default().upstream_ca(&ca.pem),
    );
    let pem = std::fs::read(&ca.pem).expect("ca");
    let tls_client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&pem).expect("pem")])
        .build()
        .expect("client");
    let direct_tls = tls_server.url_as("https");
    g.bench_function("direct_tls", |b| {
        b.iter(|| {
            rt.block_on(async {
                let r = tls_client
                    .post(format!("{direct_tls}/chat/completions"))
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .expect("send");
                assert!(r.status().is_success(), "{}", r.status());
                r.bytes().await.expect("body")
            })
        })
    });
    g.bench_function("through_proxy_tls", |b| {
        b.iter(|| rt.block_on(post(tls_proxy_url.clone())))
    });
    g.finish();
    // Keep-alive: a handful of TLS connections for all those requests (a request may race the previous
    // one's connection back to the pool, and open another).
    eprintln!(
        "HTTPS upstream: {} TLS connections for {} requests",
        tls_server.connections(),
        tls_server.requests()
    );
    rt.block_on(async { session.finish().await.expect("finish") });
}

/// Runs an `LlmProxy` in front of `upstream` as `failcore llm-proxy` runs it (a runtime of its own, one
/// thread) and returns its base URL.
fn spawn_proxy(session: Session, upstream: String, options: Options) -> String {
    let (ready, address) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let proxy_rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("proxy runtime");
        proxy_rt.block_on(async move {
            let proxy = LlmProxy::bind_with(
                "127.0.0.1:0".parse().expect("addr"),
                session,
                Models::new(),
                Some(upstream),
                options,
            )
            .await
            .expect("proxy");
            ready
                .send(proxy.local_addr().expect("addr"))
                .expect("ready");
            proxy.serve(std::future::pending()).await;
        });
    });
    format!("http://{}/v1", address.recv().expect("proxy address"))
}

criterion_group!(benches, proxy);
criterion_main!(benches);
