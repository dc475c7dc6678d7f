//! `failcore llm-proxy` in front of an HTTPS upstream: the scripted upstream served over TLS with a private
//! CA made here, trusted through `SSL_CERT_FILE` or `--upstream-ca`, reached directly or through a CONNECT
//! proxy named by `HTTPS_PROXY`. Every API (Chat Completions, Messages, Responses, whole and streamed;
//! embeddings; the model list) is recorded through it and replayed offline byte for byte, over one pooled
//! TLS connection. Certificates the proxy must refuse (an unknown issuer, an expired one, one for another
//! host) fail the call with their reason named, in the error shape of the API called, and are recorded as
//! failed steps. A redirect to another origin is not followed.

#[path = "../../tests/support/private_ca.rs"]
mod private_ca;
#[path = "support/proxy_cli.rs"]
mod proxy_cli;
#[path = "../../tests/support/scripted_llm.rs"]
mod scripted_llm;

use private_ca::Ca;
use proxy_cli::{last_run, stats_json, steps, Proxy};
use scripted_llm::{Scripted, MODEL};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The scripted upstream over TLS.
async fn tls_upstream(config: Arc<rustls::ServerConfig>) -> Scripted {
    Scripted::start_with(move |stream| {
        let acceptor = tokio_rustls::TlsAcceptor::from(config.clone());
        async move { acceptor.accept(stream).await }
    })
    .await
}

/// Waits (up to a minute) until `done` holds.
async fn eventually(done: impl Fn() -> bool) {
    for _ in 0..600 {
        if done() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("it never happened");
}

/// A reply as the client read it.
#[derive(Debug)]
struct Answer {
    status: u16,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

async fn post(url: &str, path: &str, body: Value) -> Answer {
    let response = client()
        .post(format!("{url}{path}"))
        .header("authorization", "Bearer sk-test-0123456789abcdef")
        .header("x-api-key", "sk-ant-test-0123456789abcdef")
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    Answer {
        status,
        text: response.text().await.unwrap(),
    }
}

const QUESTION: &str = "Forecast for Lisbon, plus four?";

/// One call of each API, whole and streamed: `(path, request)`.
fn every_call() -> Vec<(&'static str, Value)> {
    let user = json!([{"role": "user", "content": QUESTION}]);
    vec![
        (
            "/chat/completions",
            json!({"model": MODEL, "messages": user}),
        ),
        (
            "/chat/completions",
            json!({"model": MODEL, "messages": user, "stream": true,
                "stream_options": {"include_usage": true}}),
        ),
        (
            "/messages",
            json!({"model": MODEL, "max_tokens": 64, "messages": user}),
        ),
        (
            "/messages",
            json!({"model": MODEL, "max_tokens": 64, "messages": user, "stream": true}),
        ),
        (
            "/responses",
            json!({"model": MODEL, "input": user, "store": false}),
        ),
        (
            "/responses",
            json!({"model": MODEL, "input": user, "store": false, "stream": true}),
        ),
        ("/embeddings", json!({"model": MODEL, "input": ["Lisbon"]})),
    ]
}

/// Every call, then the model list; all must succeed.
async fn call_everything(url: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (path, body) in every_call() {
        let answer = post(url, path, body).await;
        assert_eq!(answer.status, 200, "{path}: {}", answer.text);
        out.push(answer.text);
    }
    let models = client()
        .get(format!("{url}/models"))
        .header("authorization", "Bearer sk-test-0123456789abcdef")
        .send()
        .await
        .unwrap();
    assert_eq!(models.status(), 200);
    out.push(models.text().await.unwrap());
    out
}

/// What each reply must hold: the upstream's answer in each API's shape, streams with their events.
fn check_replies(replies: &[String]) {
    let chat: Value = serde_json::from_str(&replies[0]).unwrap();
    assert_eq!(
        chat["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "forecast"
    );
    assert!(replies[1].starts_with("data: {"), "{}", replies[1]);
    assert!(replies[1].contains("\"usage\":{"), "{}", replies[1]);
    assert!(replies[1].ends_with("data: [DONE]\n\n"), "{}", replies[1]);
    let message: Value = serde_json::from_str(&replies[2]).unwrap();
    assert_eq!(message["content"][0]["name"], "forecast");
    assert!(
        replies[3].starts_with("event: message_start\ndata: {"),
        "{}",
        replies[3]
    );
    assert!(
        replies[3].contains("event: message_stop\n"),
        "{}",
        replies[3]
    );
    let response: Value = serde_json::from_str(&replies[4]).unwrap();
    assert_eq!(response["output"][0]["type"], "function_call");
    assert_eq!(
        response["usage"]["output_tokens_details"]["reasoning_tokens"],
        2
    );
    assert!(
        replies[5].starts_with("event: response.created\ndata: {"),
        "{}",
        replies[5]
    );
    assert_eq!(
        replies[5]
            .matches("event: response.function_call_arguments.delta\ndata: {")
            .count(),
        2,
        "{}",
        replies[5]
    );
    assert!(
        replies[5].contains("event: response.completed\ndata: {"),
        "{}",
        replies[5]
    );
    let embedding: Value = serde_json::from_str(&replies[6]).unwrap();
    assert_eq!(
        embedding["data"][0]["embedding"],
        json!(scripted_llm::EMBEDDING)
    );
    let models: Value = serde_json::from_str(&replies[7]).unwrap();
    assert_eq!(models["data"][0]["id"], MODEL);
}

/// How the proxy is told to trust the private CA.
enum Trust {
    SslCertFile,
    SslCertDir,
    UpstreamCa,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_upstream_trusted_by_ssl_cert_file_or_upstream_ca_records_every_api_over_one_connection(
) {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path());
    let ca_dir = dir.path().join("certs");
    std::fs::create_dir(&ca_dir).unwrap();
    std::fs::copy(&ca.pem, ca_dir.join("private-ca.pem")).unwrap();
    for trust in [Trust::SslCertFile, Trust::SslCertDir, Trust::UpstreamCa] {
        let server = tls_upstream(ca.server(&["127.0.0.1"], false)).await;
        let traces = dir.path().join(match trust {
            Trust::SslCertFile => "file",
            Trust::SslCertDir => "dir",
            Trust::UpstreamCa => "flag",
        });
        let upstream = server.url_as("https");
        let (args, env): (Vec<&str>, Vec<(&str, &str)>) = match trust {
            Trust::SslCertFile => (
                vec!["--upstream", &upstream],
                vec![("SSL_CERT_FILE", ca.pem())],
            ),
            Trust::SslCertDir => (
                vec!["--upstream", &upstream],
                vec![("SSL_CERT_DIR", ca_dir.to_str().unwrap())],
            ),
            Trust::UpstreamCa => (
                vec!["--upstream", &upstream, "--upstream-ca", ca.pem()],
                vec![],
            ),
        };
        let proxy = Proxy::start_with_env(&traces, &args, &env);
        let live = call_everything(&proxy.url).await;
        proxy.stop();
        check_replies(&live);
        let calls = every_call().len() + 1;
        assert_eq!(server.requests(), calls);
        // The client is pooled: one TLS handshake serves the calls. (A call may race the previous
        // one's connection back to the pool and open a second; never one per call.)
        assert!(
            (1..=2).contains(&server.connections()),
            "{} connections for {calls} calls",
            server.connections()
        );
        assert_eq!(server.refused(), 0);
        let run = last_run(&traces);
        let stats = stats_json(&traces, &run);
        assert_eq!(stats["executed"], calls, "{stats}");
        assert_eq!(stats["counts"]["ok"], calls, "{stats}");
        // The usage recorded: the Responses calls', whole and streamed (from `response.completed`), with
        // the reasoning tokens kept apart; the embedding's input tokens.
        let recorded = steps(&traces, &run);
        let usage_of = |args: &dyn Fn(&Value) -> bool| -> Vec<Value> {
            recorded
                .iter()
                .filter(|s| args(&s["args"]))
                .map(|s| s["output"]["usage"].clone())
                .collect()
        };
        let usage = json!({"input": 100, "output": 10, "cached": 0, "reasoning": 2});
        assert_eq!(
            usage_of(&|a| a.get("store").is_some()),
            vec![usage.clone(), usage]
        );
        assert_eq!(
            usage_of(&|a| a["input"] == json!(["Lisbon"])),
            vec![json!({"input": 1, "output": 0, "cached": 0})]
        );

        // Offline: the same bytes, nothing sent.
        let proxy = Proxy::start(&traces, &["--offline", &run]);
        let offline = call_everything(&proxy.url).await;
        proxy.stop();
        assert_eq!(server.requests(), calls, "offline sent nothing upstream");
        assert_eq!(offline, live);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_certificates_name_their_reason_in_the_apis_error_shape_and_fail_the_step() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path());
    let cases = [
        // No CA given: the platform's roots do not know the private CA.
        ("unknown issuer", ca.server(&["127.0.0.1"], false), false),
        ("expired", ca.server(&["127.0.0.1"], true), true),
        (
            "not valid for its host name",
            ca.server(&["upstream.failcore.invalid"], false),
            true,
        ),
    ];
    for (i, (reason, config, trusted)) in cases.into_iter().enumerate() {
        let server = tls_upstream(config).await;
        let traces = dir.path().join(format!("refused-{i}"));
        let upstream = server.url_as("https");
        let mut args = vec!["--upstream", upstream.as_str()];
        if trusted {
            args.extend(["--upstream-ca", ca.pem()]);
        }
        let proxy = Proxy::start(&traces, &args);
        let user = json!([{"role": "user", "content": QUESTION}]);
        let chat = post(
            &proxy.url,
            "/chat/completions",
            json!({"model": MODEL, "messages": user}),
        )
        .await;
        let messages = post(
            &proxy.url,
            "/messages",
            json!({"model": MODEL, "max_tokens": 64, "messages": user, "stream": true}),
        )
        .await;
        let responses = post(
            &proxy.url,
            "/responses",
            json!({"model": MODEL, "input": user, "stream": true}),
        )
        .await;
        proxy.stop();
        assert_eq!(server.requests(), 0, "{reason}");
        // The proxy answered after its side of the handshake failed; the upstream's side follows.
        eventually(|| server.refused() >= 1).await;
        // Chat Completions and Responses: `{"error": {"message", "type", "code"}}`.
        for answer in [&chat, &responses] {
            assert_eq!(answer.status, 502, "{reason}: {}", answer.text);
            let body = answer.json();
            assert_eq!(body["error"]["type"], "failcore_upstream", "{body}");
            let message = body["error"]["message"].as_str().unwrap();
            assert!(message.contains(reason), "{reason}: {message}");
            assert!(!message.contains("0123456789abcdef"), "{message}");
        }
        // Messages: `{"type": "error", "error": {...}}`.
        assert_eq!(messages.status, 502, "{reason}: {}", messages.text);
        let body = messages.json();
        assert_eq!(body["type"], "error", "{body}");
        assert_eq!(body["error"]["type"], "failcore_upstream", "{body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(reason),
            "{reason}: {body}"
        );
        // Recorded: three failed model steps, each with the reason.
        let run = last_run(&traces);
        let stats = stats_json(&traces, &run);
        assert_eq!(
            stats["failures_by_tool"][format!("model:{MODEL}")],
            3,
            "{stats}"
        );
        assert_eq!(stats["counts"]["ok"], 0, "{stats}");
        let failed: Vec<Value> = steps(&traces, &run)
            .into_iter()
            .filter(|s| s["tool"] == format!("model:{MODEL}"))
            .collect();
        assert_eq!(failed.len(), 3, "{failed:?}");
        for step in &failed {
            assert_eq!(step["status"], "failed", "{step}");
            assert!(step.to_string().contains(reason), "{reason}: {step}");
        }
    }
}

/// A CONNECT proxy on 127.0.0.1 that counts its tunnels and the targets asked for.
struct ConnectProxy {
    addr: std::net::SocketAddr,
    tunnels: Arc<AtomicUsize>,
    targets: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ConnectProxy {
    async fn start() -> ConnectProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tunnels = Arc::new(AtomicUsize::new(0));
        let targets = Arc::new(Mutex::new(Vec::new()));
        let (count, seen) = (tunnels.clone(), targets.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                let (count, seen) = (count.clone(), seen.clone());
                tokio::spawn(async move {
                    // The request head: `CONNECT host:port HTTP/1.1`, headers, a blank line.
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if client.read_exact(&mut byte).await.is_err() || head.len() > 8192 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let head = String::from_utf8_lossy(&head).into_owned();
                    let mut words = head.split_whitespace();
                    let (Some("CONNECT"), Some(target)) = (words.next(), words.next()) else {
                        let _ = client
                            .write_all(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
                            .await;
                        return;
                    };
                    seen.lock().unwrap().push(target.to_owned());
                    let Ok(mut upstream) = tokio::net::TcpStream::connect(target).await else {
                        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
                        return;
                    };
                    count.fetch_add(1, Ordering::SeqCst);
                    if client
                        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                        .await
                        .is_err()
                    {
                        return;
                    }
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                });
            }
        });
        ConnectProxy {
            addr,
            tunnels,
            targets,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn tunnels(&self) -> usize {
        self.tunnels.load(Ordering::SeqCst)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_proxy_tunnels_to_the_upstream_unless_no_proxy_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path());
    let server = tls_upstream(ca.server(&["127.0.0.1"], false)).await;
    let tunnel = ConnectProxy::start().await;
    let upstream = server.url_as("https");
    let traces = dir.path().join("traces");
    let proxy_url = tunnel.url();
    let user = json!([{"role": "user", "content": QUESTION}]);
    let two_calls = |url: String| {
        let user = user.clone();
        async move {
            let whole = post(
                &url,
                "/chat/completions",
                json!({"model": MODEL, "messages": user}),
            )
            .await;
            let streamed = post(
                &url,
                "/responses",
                json!({"model": MODEL, "input": user, "stream": true}),
            )
            .await;
            assert_eq!(whole.status, 200, "{}", whole.text);
            assert_eq!(streamed.status, 200, "{}", streamed.text);
        }
    };

    // HTTPS_PROXY: the TLS connection to the upstream goes through a tunnel, reused by both calls.
    let proxy = Proxy::start_with_env(
        &traces,
        &["--upstream", &upstream],
        &[("SSL_CERT_FILE", ca.pem()), ("HTTPS_PROXY", &proxy_url)],
    );
    two_calls(proxy.url.clone()).await;
    proxy.stop();
    assert_eq!(server.requests(), 2);
    let tunnels = tunnel.tunnels();
    assert!(
        tunnels >= 1 && tunnels == server.connections(),
        "every connection to the upstream went through the tunnel: {tunnels}"
    );
    let targets = tunnel.targets.lock().unwrap().clone();
    assert!(
        targets.iter().all(|t| *t == server.addr.to_string()),
        "{targets:?}"
    );

    // NO_PROXY naming the upstream's host: straight to it, the tunnel unused.
    let proxy = Proxy::start_with_env(
        &traces,
        &["--upstream", &upstream],
        &[
            ("SSL_CERT_FILE", ca.pem()),
            ("HTTPS_PROXY", &proxy_url),
            ("NO_PROXY", "localhost,127.0.0.1"),
        ],
    );
    two_calls(proxy.url.clone()).await;
    proxy.stop();
    assert_eq!(server.requests(), 4);
    assert_eq!(tunnel.tunnels(), tunnels, "NO_PROXY bypassed the tunnel");

    // HTTP_PROXY is for http:// upstreams only: an https:// one does not use it.
    let proxy = Proxy::start_with_env(
        &traces,
        &["--upstream", &upstream],
        &[("SSL_CERT_FILE", ca.pem()), ("HTTP_PROXY", &proxy_url)],
    );
    two_calls(proxy.url.clone()).await;
    proxy.stop();
    assert_eq!(server.requests(), 6);
    assert_eq!(tunnel.tunnels(), tunnels, "HTTP_PROXY is not for https://");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_to_another_origin_is_not_followed_and_the_step_fails() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path());
    // The other origin: same host, another port.
    let elsewhere = tls_upstream(ca.server(&["127.0.0.1"], false)).await;
    let server = tls_upstream(ca.server(&["127.0.0.1"], false)).await;
    let traces = dir.path().join("traces");
    let upstream = server.url_as("https");
    let proxy = Proxy::start(
        &traces,
        &["--upstream", &upstream, "--upstream-ca", ca.pem()],
    );
    let user = json!([{"role": "user", "content": QUESTION}]);
    let mut answers = Vec::new();
    for (path, body) in [
        (
            "/chat/completions",
            json!({"model": MODEL, "messages": user}),
        ),
        (
            "/responses",
            json!({"model": MODEL, "input": user, "stream": true}),
        ),
    ] {
        server.redirect_to(&format!("{}{path}", elsewhere.url_as("https")));
        answers.push(post(&proxy.url, path, body).await);
    }
    proxy.stop();
    assert_eq!(server.requests(), 2);
    assert_eq!(
        elsewhere.requests(),
        0,
        "the other origin received nothing, so no key"
    );
    assert_eq!(elsewhere.connections(), 0);
    for answer in &answers {
        assert_eq!(answer.status, 502, "{}", answer.text);
        let body = answer.json();
        assert_eq!(body["error"]["type"], "failcore_upstream", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("redirected to another origin"),
            "{message}"
        );
        assert!(message.contains(&elsewhere.addr.to_string()), "{message}");
    }
    let run = last_run(&traces);
    let stats = stats_json(&traces, &run);
    assert_eq!(
        stats["failures_by_tool"][format!("model:{MODEL}")],
        2,
        "{stats}"
    );
    assert_eq!(stats["counts"]["ok"], 0, "{stats}");

    // Offline from that run: the model list was never recorded, so it is a replay miss, in the API's shape.
    let proxy = Proxy::start(&traces, &["--offline", &run]);
    let models = client()
        .get(format!("{}/models", proxy.url))
        .send()
        .await
        .unwrap();
    let status = models.status();
    let body: Value = serde_json::from_str(&models.text().await.unwrap()).unwrap();
    proxy.stop();
    assert_eq!(status, 424, "{body}");
    assert_eq!(body["error"]["type"], "failcore_replay_miss", "{body}");
}
