//! `failcore llm-proxy` under hostile clients and upstreams, run as a process from outside: a descriptor
//! limit flooded with idle connections, slow headers and bodies, redirects to another origin, requests
//! naming a key twice, credentials echoed back, replies larger than the cap, clients leaving a stream,
//! floods of refused model names, and an upstream that never answers. Each test names what it guards.
//!
//! The upstreams here are raw TCP servers that write exactly the bytes a test scripts, so that each can
//! misbehave in the one way its test needs.
#![cfg(target_os = "linux")]

use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

const BIN: &str = env!("CARGO_BIN_EXE_failcore");
const MODEL: &str = "scripted-1";
/// The bound on "it ended at all": far above every timeout the tests configure.
const ENDS_WITHIN: Duration = Duration::from_secs(30);

struct Proxy {
    child: Child,
    url: String,
    addr: String,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proxy {
    fn start(traces: &Path, args: &[&str]) -> Proxy {
        Self::start_limited(traces, args, None)
    }

    /// Starts it, with its soft and hard limits of open files set to `nofile` when given.
    fn start_limited(traces: &Path, args: &[&str], nofile: Option<u64>) -> Proxy {
        let mut command = Command::new(BIN);
        command
            .arg("--store")
            .arg(traces)
            .arg("llm-proxy")
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env_remove("FAILCORE_RESUME")
            .env_remove("FAILCORE_OFFLINE")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some(n) = nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe, and the closure touches nothing else.
            unsafe {
                command.pre_exec(move || {
                    let limit = libc::rlimit {
                        rlim_cur: n as libc::rlim_t,
                        rlim_max: n as libc::rlim_t,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = command.spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .strip_prefix("listening on http://")
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_owned();
        Proxy {
            child,
            url: format!("http://{addr}/v1"),
            addr,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops it as Ctrl-C would: the run is finished and every record written.
    fn stop(mut self) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{status}");
    }
}

/// The CPU time (user and system) a process has used.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name and the state.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf reads a constant of the system.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / per_second)
}

/// The peak resident memory of a process (VmHWM), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .unwrap()
        .to_owned();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// The steps of the last run, from `failcore show --json`.
fn steps(traces: &Path) -> Vec<Value> {
    let out = Command::new(BIN)
        .arg("--store")
        .arg(traces)
        .args(["show", "last", "--json"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["type"] == "step")
        .collect()
}

/// Every byte of every file under `dir`.
fn all_bytes(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else {
                out.extend(std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn chat(model: &str, user: &str) -> Value {
    json!({"model": model, "user": user, "messages": [{"role": "user", "content": "hi"}]})
}

/// Posts a JSON body to the proxy's `path`: the status and the body, parsed when it is JSON.
async fn post(url: &str, path: &str, body: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{url}{path}"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = tokio::time::timeout(ENDS_WITHIN, request.send())
        .await
        .expect("the proxy answered")
        .unwrap();
    let status = response.status().as_u16();
    let bytes = tokio::time::timeout(ENDS_WITHIN, response.bytes())
        .await
        .expect("the proxy's answer ended")
        .unwrap_or_default();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, value)
}

fn completion(content: &str) -> String {
    json!({"id": "chatcmpl-1", "object": "chat.completion", "model": MODEL,
        "choices": [{"index": 0, "finish_reason": "stop",
            "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}})
    .to_string()
}

fn http_reply(status: &str, content_type: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A request as the upstream read it.
#[derive(Clone, Debug)]
struct Seen {
    head: String,
    body: Vec<u8>,
}

impl Seen {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// What a scripted upstream does with a request.
enum Act {
    /// Writes these bytes (a whole response with its length), and reads the next request.
    Reply(Vec<u8>),
    /// Never answers; notes when the proxy closes the connection.
    Hang,
    /// Answers 200 with one server-sent event, then sends nothing more; notes when the proxy closes
    /// the connection.
    StreamThenStall,
    /// Answers 200 with a JSON body of `len` bytes, with a `content-length` or chunked, or as
    /// server-sent events (chunked), written until the proxy stops reading.
    Big { len: usize, shape: Shape },
}

#[derive(Clone, Copy)]
enum Shape {
    Length,
    Chunked,
    Events,
}

type Script = Arc<dyn Fn(&Seen) -> Act + Send + Sync>;

/// A count that can be waited for.
#[derive(Default)]
struct Count {
    n: AtomicUsize,
    note: Notify,
}

impl Count {
    fn bump(&self) {
        self.n.fetch_add(1, Ordering::SeqCst);
        self.note.notify_waiters();
    }

    /// Waits until the count has reached `n`.
    async fn reached(&self, n: usize) {
        loop {
            let notified = self.note.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.n.load(Ordering::SeqCst) >= n {
                return;
            }
            notified.await;
        }
    }
}

/// A raw HTTP/1.1 upstream on 127.0.0.1 that acts as its script says.
struct Upstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<AtomicUsize>,
    /// Requests that reached a `Hang` or `StreamThenStall`.
    stalled: Arc<Count>,
    /// Connections of `Hang` and `StreamThenStall` requests that the proxy closed.
    closed: Arc<Count>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    async fn start(script: impl Fn(&Seen) -> Act + Send + Sync + 'static) -> Upstream {
        let script: Script = Arc::new(script);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let stalled = Arc::new(Count::default());
        let closed = Arc::new(Count::default());
        let (s, c, st, cl) = (
            seen.clone(),
            connections.clone(),
            stalled.clone(),
            closed.clone(),
        );
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                c.fetch_add(1, Ordering::SeqCst);
                let (script, s, st, cl) = (script.clone(), s.clone(), st.clone(), cl.clone());
                tokio::spawn(async move {
                    serve(stream, script, s, st, cl).await;
                });
            }
        });
        Upstream {
            addr,
            seen,
            connections,
            stalled,
            closed,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// Reads one request (headers, then a body of its `content-length`); `None` at the end of the stream.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Seen> {
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 8192];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let len = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    while buf.len() < end + len {
        let mut chunk = [0u8; 65536];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf[end..end + len].to_vec();
    buf.drain(..end + len);
    Some(Seen { head, body })
}

async fn serve(
    mut stream: TcpStream,
    script: Script,
    seen: Arc<Mutex<Vec<Seen>>>,
    stalled: Arc<Count>,
    closed: Arc<Count>,
) {
    let mut buf = Vec::new();
    while let Some(request) = read_request(&mut stream, &mut buf).await {
        seen.lock().unwrap().push(request.clone());
        match script(&request) {
            Act::Reply(bytes) => {
                if stream.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            act @ (Act::Hang | Act::StreamThenStall) => {
                if matches!(act, Act::StreamThenStall) {
                    let event = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n";
                    let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
                    let bytes = format!("{head}{:x}\r\n{event}\r\n", event.len());
                    if stream.write_all(bytes.as_bytes()).await.is_err() {
                        return;
                    }
                }
                stalled.bump();
                // Nothing more is sent; the proxy closing its end is read as the end of the stream.
                let mut sink = [0u8; 1024];
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
                closed.bump();
                return;
            }
            Act::Big { len, shape } => {
                big(&mut stream, len, shape).await;
                return;
            }
        }
    }
}

/// Writes a 200 reply of `len` bytes, until done or the proxy stops reading.
async fn big(stream: &mut TcpStream, len: usize, shape: Shape) {
    let head = match shape {
        Shape::Length => format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len}\r\n\r\n"
        ),
        Shape::Chunked => "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n".to_owned(),
        Shape::Events => "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n".to_owned(),
    };
    if stream.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    const PIECE: usize = 64 * 1024;
    let filler = vec![b'a'; PIECE];
    let event = {
        let mut e = b"data: {\"x\":\"".to_vec();
        e.extend(std::iter::repeat_n(b'a', PIECE - 16));
        e.extend_from_slice(b"\"}\n\n");
        e
    };
    let mut written = 0;
    // The JSON shapes: `{"x":"aaaa…"}`, the filler cut to the length.
    let open = b"{\"x\":\"";
    let close = b"\"}";
    while written < len {
        let piece: Vec<u8> = match shape {
            Shape::Events => event.clone(),
            _ => {
                let room = len - written;
                let mut p = Vec::with_capacity(PIECE.min(room));
                if written == 0 {
                    p.extend_from_slice(open);
                }
                let fill = PIECE
                    .min(room)
                    .saturating_sub(p.len())
                    .saturating_sub(if room <= PIECE { close.len() } else { 0 });
                p.extend_from_slice(&filler[..fill]);
                if room <= PIECE {
                    p.extend_from_slice(close);
                }
                p
            }
        };
        written += piece.len();
        let framed = match shape {
            Shape::Length => piece,
            Shape::Chunked | Shape::Events => {
                let mut f = format!("{:x}\r\n", piece.len()).into_bytes();
                f.extend_from_slice(&piece);
                f.extend_from_slice(b"\r\n");
                f
            }
        };
        if stream.write_all(&framed).await.is_err() {
            return;
        }
    }
    if !matches!(shape, Shape::Length) {
        let _ = stream.write_all(b"0\r\n\r\n").await;
    }
    let mut sink = [0u8; 1024];
    while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
}

/// Replies with a small completion to every request.
fn ok_reply(_: &Seen) -> Act {
    Act::Reply(http_reply(
        "200 OK",
        "application/json",
        &completion("fine"),
    ))
}

/// Reads from `stream` until the proxy closes it: what it sent.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(ENDS_WITHIN, async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
    .expect("the proxy closed the connection");
    out
}

fn tempdir() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let traces = dir.path().join("traces");
    (dir, traces)
}

/// Finding 1: with few file descriptors and more idle connections than they allow, the proxy does not
/// spin on its accept loop (before, every failed `accept` was retried at once, burning a core), and once
/// idle connections are closed (by its header timeout, or by their clients) a new client is served.
/// Twice: with the connection limit derived from the descriptor limit (the proxy never runs out), and
/// with a limit far above it (accept fails with EMFILE, and backs off).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_over_the_descriptor_limit_neither_spin_the_proxy_nor_stop_it_for_good() {
    let upstream = Upstream::start(ok_reply).await;
    for derived in [true, false] {
        let (_dir, traces) = tempdir();
        let upstream_url = upstream.url();
        let mut args = vec!["--upstream", upstream_url.as_str()];
        // With the derived limit, the proxy's header timeout frees the connections; with the high one,
        // the clients close them (the proxy, out of descriptors, could not reach the upstream anyway).
        if derived {
            args.extend(["--header-timeout", "3", "--idle-timeout", "3"]);
        } else {
            args.extend(["--max-connections", "1000", "--header-timeout", "60"]);
        }
        let proxy = Proxy::start_limited(&traces, &args, Some(64));
        let mut idle = Vec::new();
        for _ in 0..if derived { 40 } else { 120 } {
            idle.push(TcpStream::connect(&proxy.addr).await.unwrap());
        }
        // Saturated: what the proxy could accept it has, the rest waits in the backlog.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = cpu_time(proxy.pid());
        tokio::time::sleep(Duration::from_secs(2)).await;
        let used = cpu_time(proxy.pid()) - before;
        let open = std::fs::read_dir(format!("/proc/{}/fd", proxy.pid()))
            .unwrap()
            .count();
        if derived {
            assert!(
                open < 60,
                "{open} descriptors open: the limit is not derived from them"
            );
        } else {
            assert!(
                open >= 60,
                "{open} descriptors open: the proxy never ran out of them"
            );
        }
        assert!(
            used < Duration::from_millis(500),
            "the proxy used {used:?} of CPU in 2 s while saturated (derived limit: {derived})"
        );
        if !derived {
            drop(idle.drain(..));
        }
        let body = chat(MODEL, "late").to_string();
        let (status, reply) = post(&proxy.url, "/chat/completions", &body, &[]).await;
        assert_eq!(status, 200, "{reply}");
        assert_eq!(reply["choices"][0]["message"]["content"], "fine");
        drop(idle);
        proxy.stop();
    }
}

/// Finding 2 (slowloris): a client that sends half its headers and stalls, or trickles them a byte at a
/// time, is disconnected after the header timeout; one that stalls or trickles its body gets a 408 and is
/// disconnected after the body timeout. Before, such a connection stayed open for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_and_slow_bodies_are_cut_off_by_their_timeouts() {
    let upstream = Upstream::start(ok_reply).await;
    let (_dir, traces) = tempdir();
    let proxy = Proxy::start(
        &traces,
        &[
            "--upstream",
            &upstream.url(),
            "--header-timeout",
            "1",
            "--body-timeout",
            "1",
            "--idle-timeout",
            "600",
        ],
    );
    let head =
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n";
    let body = chat(MODEL, "slow").to_string();

    let stalled_head = {
        let addr = proxy.addr.clone();
        tokio::spawn(async move {
            let mut s = TcpStream::connect(&addr).await.unwrap();
            s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-le")
                .await
                .unwrap();
            read_until_closed(&mut s).await
        })
    };
    let trickled_head = {
        let addr = proxy.addr.clone();
        tokio::spawn(async move {
            let mut s = TcpStream::connect(&addr).await.unwrap();
            let trickle = async {
                for byte in head.bytes().cycle() {
                    if s.write_all(&[byte]).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            };
            // The trickle ends when the proxy has closed the connection (a write then fails).
            tokio::time::timeout(ENDS_WITHIN, trickle)
                .await
                .expect("the proxy closed the connection");
        })
    };
    let slow_body = |trickle: bool| {
        let addr = proxy.addr.clone();
        let body = body.clone();
        tokio::spawn(async move {
            let mut s = TcpStream::connect(&addr).await.unwrap();
            let request = format!("{head}content-length: {}\r\n\r\n", body.len());
            s.write_all(request.as_bytes()).await.unwrap();
            s.write_all(&body.as_bytes()[..10]).await.unwrap();
            if trickle {
                let (mut r, mut w) = s.into_split();
                let writer = tokio::spawn(async move {
                    for byte in body.as_bytes()[10..body.len() - 1].iter() {
                        if w.write_all(&[*byte]).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    // Never the last byte.
                    std::future::pending::<()>().await;
                });
                let mut out = Vec::new();
                tokio::time::timeout(ENDS_WITHIN, r.read_to_end(&mut out))
                    .await
                    .expect("the proxy closed the connection")
                    .ok();
                writer.abort();
                out
            } else {
                read_until_closed(&mut s).await
            }
        })
    };
    let stalled_body = slow_body(false);
    let trickled_body = slow_body(true);

    assert!(stalled_head.await.unwrap().is_empty());
    trickled_head.await.unwrap();
    for answered in [stalled_body.await.unwrap(), trickled_body.await.unwrap()] {
        let text = String::from_utf8_lossy(&answered);
        assert!(text.starts_with("HTTP/1.1 408"), "{text}");
        assert!(text.contains("to arrive"), "{text}");
    }
    // None of them reached the upstream, and the proxy still serves.
    assert!(upstream.seen().is_empty());
    let (status, _) = post(&proxy.url, "/chat/completions", &body, &[]).await;
    assert_eq!(status, 200);
    proxy.stop();
}

/// Finding 2, the idle timeout: with a long header timeout, a connection that sends nothing, and one kept
/// alive after its request, are closed by the idle timeout; a connection whose request is in progress
/// (its upstream slower than the idle timeout) is not: its client gets the upstream's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_connections_are_closed_after_the_idle_timeout_but_not_while_a_request_is_in_progress(
) {
    let upstream = Upstream::start(|seen| {
        if seen.json()["user"] == "slow" {
            Act::Hang
        } else {
            ok_reply(seen)
        }
    })
    .await;
    let (_dir, traces) = tempdir();
    let proxy = Proxy::start(
        &traces,
        &[
            "--upstream",
            &upstream.url(),
            "--header-timeout",
            "600",
            "--idle-timeout",
            "1",
            "--read-timeout",
            "3",
        ],
    );
    let request = |user: &str| {
        let body = chat(MODEL, user).to_string();
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let mut silent = TcpStream::connect(&proxy.addr).await.unwrap();
    let mut kept = TcpStream::connect(&proxy.addr).await.unwrap();
    kept.write_all(request("kept").as_bytes()).await.unwrap();
    let mut slow = TcpStream::connect(&proxy.addr).await.unwrap();
    slow.write_all(request("slow").as_bytes()).await.unwrap();
    assert!(read_until_closed(&mut silent).await.is_empty());
    let kept = String::from_utf8(read_until_closed(&mut kept).await).unwrap();
    assert!(kept.starts_with("HTTP/1.1 200"), "{kept}");
    assert!(kept.contains("\"fine\""), "{kept}");
    // The slow call ends with the read timeout's 502, well after the idle timeout.
    let slow = String::from_utf8(read_until_closed(&mut slow).await).unwrap();
    assert!(slow.starts_with("HTTP/1.1 502"), "{slow}");
    assert!(slow.contains("did not answer in time"), "{slow}");
    proxy.stop();
}

/// Finding 3: an upstream that redirects (307, which keeps the method and body, and 302) to another
/// origin: the redirect is not followed, so that origin receives nothing (no connection, so no
/// `x-api-key`, `authorization` or body), the client gets a 502 saying why, and the step is failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_to_another_origin_is_not_followed_and_the_step_fails() {
    let elsewhere = Upstream::start(ok_reply).await;
    let target = format!("http://{}/v1/chat/completions", elsewhere.addr);
    let upstream = Upstream::start(move |seen| {
        let status = if seen.json()["user"] == "307" {
            "307 Temporary Redirect"
        } else {
            "302 Found"
        };
        Act::Reply(
            format!("HTTP/1.1 {status}\r\nlocation: {target}\r\ncontent-length: 0\r\n\r\n")
                .into_bytes(),
        )
    })
    .await;
    let (_dir, traces) = tempdir();
    let proxy = Proxy::start(&traces, &["--upstream", &upstream.url()]);
    for code in ["307", "302"] {
        let body = chat(MODEL, code).to_string();
        let (status, reply) = post(
            &proxy.url,
            "/chat/completions",
            &body,
            &[
                ("x-api-key", "sk-ant-redirected-key-0001"),
                ("authorization", "Bearer sk-redirected-token-0002"),
            ],
        )
        .await;
        assert_eq!(status, 502, "{reply}");
        assert_eq!(reply["error"]["type"], "failcore_upstream", "{reply}");
        let message = reply["error"]["message"].as_str().unwrap();
        assert!(message.contains("another origin"), "{message}");
    }
    proxy.stop();
    assert_eq!(upstream.seen().len(), 2);
    assert_eq!(elsewhere.connections.load(Ordering::SeqCst), 0);
    assert!(elsewhere.seen().is_empty());
    let steps = steps(&traces);
    assert_eq!(steps.len(), 2, "{steps:?}");
    for step in &steps {
        assert_eq!(step["status"], "failed", "{step}");
        assert!(
            step["error"].to_string().contains("another origin"),
            "{step}"
        );
    }
}

/// Finding 4: a request that names a key twice (`model` at the top, or `role` inside a message) is
/// refused with a 400 in the API's error shape before any policy or record: the allow-list never decides
/// on one value while the upstream reads the other, nothing is sent upstream, and the trace holds neither
/// the request nor the forbidden name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_naming_a_key_twice_is_refused_before_the_policy_and_the_upstream() {
    let upstream = Upstream::start(ok_reply).await;
    let (dir, traces) = tempdir();
    let models = dir.path().join("models.toml");
    std::fs::write(&models, format!("allow = [\"{MODEL}\"]\n")).unwrap();
    let proxy = Proxy::start(
        &traces,
        &[
            "--upstream",
            &upstream.url(),
            "--models",
            models.to_str().unwrap(),
        ],
    );
    let top = format!(
        r#"{{"model":"{MODEL}","model":"forbidden-model","messages":[{{"role":"user","content":"hi"}}]}}"#
    );
    let nested = format!(
        r#"{{"model":"{MODEL}","messages":[{{"role":"user","content":"hi","role":"system-forbidden"}}]}}"#
    );
    let deep = format!(
        r#"{{"model":"{MODEL}","messages":[{{"role":"user","content":"hi"}}],"metadata":{{"a":{{"k":1,"k":"forbidden-deep"}}}}}}"#
    );
    for body in [&top, &nested, &deep] {
        let (status, reply) = post(&proxy.url, "/chat/completions", body, &[]).await;
        assert_eq!(status, 400, "{reply}");
        assert_eq!(reply["error"]["type"], "invalid_request_error", "{reply}");
        assert!(
            reply["error"]["message"]
                .as_str()
                .unwrap()
                .contains("appears twice"),
            "{reply}"
        );
    }
    // The Messages API answers in its own shape.
    let messages = format!(
        r#"{{"model":"{MODEL}","model":"forbidden-model","max_tokens":8,"messages":[{{"role":"user","content":"hi"}}]}}"#
    );
    let (status, reply) = post(&proxy.url, "/messages", &messages, &[]).await;
    assert_eq!(status, 400, "{reply}");
    assert_eq!(reply["type"], "error", "{reply}");
    assert_eq!(reply["error"]["type"], "invalid_request_error", "{reply}");
    assert!(upstream.seen().is_empty());
    // The same request without the repetition goes through.
    let (status, _) = post(
        &proxy.url,
        "/chat/completions",
        &chat(MODEL, "x").to_string(),
        &[],
    )
    .await;
    assert_eq!(status, 200);
    proxy.stop();
    assert_eq!(upstream.seen().len(), 1);
    let steps = steps(&traces);
    assert_eq!(steps.len(), 1, "{steps:?}");
    assert_eq!(steps[0]["status"], "ok");
    let bytes = all_bytes(&traces);
    for word in ["forbidden-model", "system-forbidden", "forbidden-deep"] {
        assert!(!contains(&bytes, word.as_bytes()), "{word} is in the trace");
    }
}

/// Finding 5: an upstream that answers 401 quoting the client's `x-api-key`, its `Authorization: Bearer`
/// token and an Azure-style 32-hex `api-key` (one of them across the point where an error message is cut
/// short), whole and streamed, and a 200 that echoes them: not one of the three, nor any 10 characters of
/// one, is anywhere in the store, while the client gets the upstream's status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_an_upstream_echoes_are_never_recorded() {
    let anthropic_key = "sk-ant-api03-Zq7Xw2Lp9Vb4Nk8Rt6Ys1Hd3Jf5Gm0Qa";
    let bearer = "sk-proj-Mn4Bv6Cx8Za1Sd3Fg5Hj7Kl9Po2Iu0Yt";
    let azure = "3f9a1c7e5b2d4f6a8c0e1b3d5f7a9c2e";
    let upstream = Upstream::start(move |seen| {
        let headers = seen.head.to_ascii_lowercase();
        let header = |name: &str| {
            headers
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name}: ")))
                .unwrap_or("")
                .to_owned()
        };
        // What the upstream was sent, quoted back; the Azure key placed across byte 300.
        let prefix = format!(
            "{{\"error\":{{\"message\":\"invalid x-api-key {} and authorization {}; api-key ",
            header("x-api-key"),
            header("authorization")
        );
        let pad = 300usize.saturating_sub(prefix.len() + 12);
        let message = format!("{prefix}{}{}\"}}}}", ".".repeat(pad), header("api-key"));
        if seen.json()["user"] == "echo-ok" {
            let body = completion(&format!(
                "keys: {} {} {}",
                header("x-api-key"),
                header("authorization"),
                header("api-key")
            ));
            return Act::Reply(http_reply("200 OK", "application/json", &body));
        }
        Act::Reply(http_reply("401 Unauthorized", "application/json", &message))
    })
    .await;
    let (_dir, traces) = tempdir();
    let proxy = Proxy::start(&traces, &["--upstream", &upstream.url()]);
    let bearer_header = format!("Bearer {bearer}");
    let headers = [
        ("x-api-key", anthropic_key),
        ("authorization", bearer_header.as_str()),
        ("api-key", azure),
    ];
    let mut streamed = chat(MODEL, "stream");
    streamed["stream"] = json!(true);
    for body in [chat(MODEL, "whole"), streamed] {
        let (status, reply) =
            post(&proxy.url, "/chat/completions", &body.to_string(), &headers).await;
        assert_eq!(status, 401, "{reply}");
        // The client, which sent them, gets the upstream's body as it was.
        assert!(reply.to_string().contains(azure), "{reply}");
    }
    let (status, reply) = post(
        &proxy.url,
        "/chat/completions",
        &chat(MODEL, "echo-ok").to_string(),
        &headers,
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    proxy.stop();
    let seen = upstream.seen();
    assert_eq!(seen.len(), 3);
    assert!(seen[0].head.contains(azure), "the key was forwarded");
    let steps = steps(&traces);
    assert_eq!(steps.len(), 3, "{steps:?}");
    assert_eq!(steps[0]["status"], "failed");
    assert!(
        steps[0]["error"].to_string().contains("401"),
        "{}",
        steps[0]
    );
    let bytes = all_bytes(&traces);
    for secret in [anthropic_key, bearer, azure] {
        for window in secret.as_bytes().windows(10) {
            assert!(
                !contains(&bytes, window),
                "{:?} of a credential is in the store",
                String::from_utf8_lossy(window)
            );
        }
    }
}

/// Finding 6: replies larger than the cap (`--max-reply-bytes`, 1 MiB here) fail the call cleanly
/// with a 502 naming the limit, recorded as failed with that reason, whether the reply declares its
/// length (5 MiB), is chunked without one (256 MiB), or is a stream of events (5 MiB); the proxy never
/// holds such a reply (its peak resident memory stays far below it) and serves the next client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_over_the_cap_fails_the_call_without_being_held_in_memory() {
    const MIB: usize = 1024 * 1024;
    let upstream = Upstream::start(|seen| match seen.json()["user"].as_str() {
        Some("length") => Act::Big {
            len: 5 * MIB,
            shape: Shape::Length,
        },
        Some("chunked") => Act::Big {
            len: 256 * MIB,
            shape: Shape::Chunked,
        },
        Some("events") => Act::Big {
            len: 5 * MIB,
            shape: Shape::Events,
        },
        _ => ok_reply(seen),
    })
    .await;
    let (_dir, traces) = tempdir();
    let proxy = Proxy::start(
        &traces,
        &[
            "--upstream",
            &upstream.url(),
            "--max-reply-bytes",
            "1048576",
        ],
    );
    for user in ["length", "chunked"] {
        let (status, reply) = post(
            &proxy.url,
            "/chat/completions",
            &chat(MODEL, user).to_string(),
            &[],
        )
        .await;
        assert_eq!(status, 502, "{user}: {reply}");
        assert_eq!(reply["error"]["type"], "failcore_upstream", "{reply}");
        assert!(
            reply["error"]["message"]
                .as_str()
                .unwrap()
                .contains("limit of 1048576 bytes"),
            "{reply}"
        );
    }
    // A stream goes to the client as it comes, until the cap: then it ends with an error event.
    let mut events = chat(MODEL, "events");
    events["stream"] = json!(true);
    let (status, reply) = post(&proxy.url, "/chat/completions", &events.to_string(), &[]).await;
    assert_eq!(status, 200);
    let text = reply.as_str().unwrap();
    assert!(text.len() < 2 * MIB, "{}", text.len());
    assert!(!text.contains("[DONE]"));
    let last = text
        .trim_end()
        .rsplit("\n\n")
        .next()
        .unwrap()
        .strip_prefix("data: ")
        .unwrap();
    let last: Value = serde_json::from_str(last).unwrap();
    assert!(
        last["error"]["message"]
            .as_str()
            .unwrap()
            .contains("limit of 1048576 bytes"),
        "{last}"
    );
    let (status, _) = post(
        &proxy.url,
        "/chat/completions",
        &chat(MODEL, "next").to_string(),
        &[],
    )
    .await;
    assert_eq!(status, 200);
    let peak = peak_rss(proxy.pid());
    assert!(
        peak < 128 * MIB as u64,
        "the proxy's peak resident memory was {} MiB",
        peak / MIB as u64
    );
    proxy.stop();
    let steps = steps(&traces);
    let statuses: Vec<&str> = steps
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["failed", "failed", "failed", "ok"], "{steps:?}");
    for step in &steps[..3] {
        assert!(
            step["error"].to_string().contains("limit of 1048576 bytes"),
            "{step}"
        );
    }
}

/// Finding 7: a client that leaves a streamed call cancels it: the proxy closes its connection to the
/// upstream, and the step is recorded as cancelled, not ok. Whether it leaves after the first event, or
/// before any (the model still thinking), and likewise for a call that is not streamed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_leaving_a_stream_cancels_it_upstream() {
    let upstream = Upstream::start(|seen| {
        if seen.json()["user"] == "after-first-event" {
            Act::StreamThenStall
        } else {
            Act::Hang
        }
    })
    .await;
    let (_dir, traces) = tempdir();
    let proxy = Proxy::start(&traces, &["--upstream", &upstream.url()]);
    let mut body = chat(MODEL, "after-first-event");
    body["stream"] = json!(true);
    let client = reqwest::Client::new();
    let mut response = client
        .post(format!("{}/chat/completions", proxy.url))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let first = tokio::time::timeout(ENDS_WITHIN, response.chunk())
        .await
        .expect("the first event arrived")
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&first).contains("Hel"));
    // The client leaves: its connection is closed.
    drop(response);
    drop(client);
    tokio::time::timeout(ENDS_WITHIN, upstream.closed.reached(1))
        .await
        .expect("the proxy closed its upstream connection");

    // Before any event, streamed or not: the client sends its request, and leaves once it is upstream.
    for (n, stream) in [(2, true), (3, false)] {
        let mut body = chat(MODEL, "before-any-event");
        body["stream"] = json!(stream);
        let body = body.to_string();
        let mut s = TcpStream::connect(&proxy.addr).await.unwrap();
        let request = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(request.as_bytes()).await.unwrap();
        tokio::time::timeout(ENDS_WITHIN, upstream.stalled.reached(n))
            .await
            .expect("the call reached the upstream");
        drop(s);
        tokio::time::timeout(ENDS_WITHIN, upstream.closed.reached(n))
            .await
            .expect("the proxy closed its upstream connection");
    }
    proxy.stop();
    let steps = steps(&traces);
    let statuses: Vec<&str> = steps
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["cancelled"; 3], "{steps:?}");
}

/// Finding 8: more refused model names than the dynamic tool table holds (4,096) do not fill it: they
/// are all refused as one tool, and an allowed model called for the first time afterwards still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_model_names_do_not_fill_the_tool_table() {
    let upstream = Upstream::start(ok_reply).await;
    let (dir, traces) = tempdir();
    let models = dir.path().join("models.toml");
    std::fs::write(&models, format!("allow = [\"{MODEL}\"]\n")).unwrap();
    let proxy = Proxy::start(
        &traces,
        &[
            "--upstream",
            &upstream.url(),
            "--models",
            models.to_str().unwrap(),
        ],
    );
    const REFUSED: usize = 4100;
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (next, url) = (next.clone(), proxy.url.clone());
        workers.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= REFUSED {
                    return;
                }
                let response = client
                    .post(format!("{url}/chat/completions"))
                    .header("content-type", "application/json")
                    .body(chat(&format!("made-up-{i}"), "x").to_string())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 403, "{i}");
                let reply: Value =
                    serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
                assert_eq!(reply["error"]["code"], "model.allow", "{reply}");
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    let (status, reply) = post(
        &proxy.url,
        "/chat/completions",
        &chat(MODEL, "x").to_string(),
        &[],
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    proxy.stop();
    assert_eq!(upstream.seen().len(), 1);
    let steps = steps(&traces);
    assert_eq!(steps.len(), REFUSED + 1);
    assert_eq!(steps[REFUSED]["status"], "ok");
    assert!(steps[..REFUSED].iter().all(|s| s["status"] == "blocked"));
}

/// Finding 9: an upstream that accepts a call and never answers fails it after the read timeout
/// (`--read-timeout`), with a 502 saying so and the step recorded as failed; meanwhile other clients are
/// served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_never_answers_fails_the_call_after_the_read_timeout() {
    let upstream = Upstream::start(|seen| {
        if seen.json()["user"] == "hang" {
            Act::Hang
        } else {
            ok_reply(seen)
        }
    })
    .await;
    let (_dir, traces) = tempdir();
    let proxy = Proxy::start(
        &traces,
        &["--upstream", &upstream.url(), "--read-timeout", "5"],
    );
    let url = proxy.url.clone();
    let hung = tokio::spawn(async move {
        post(
            &url,
            "/chat/completions",
            &chat(MODEL, "hang").to_string(),
            &[],
        )
        .await
    });
    tokio::time::timeout(ENDS_WITHIN, upstream.stalled.reached(1))
        .await
        .expect("the call reached the upstream");
    let (status, reply) = post(
        &proxy.url,
        "/chat/completions",
        &chat(MODEL, "other").to_string(),
        &[],
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert!(!hung.is_finished(), "the other client was served meanwhile");
    let (status, reply) = hung.await.unwrap();
    assert_eq!(status, 502, "{reply}");
    assert_eq!(reply["error"]["type"], "failcore_upstream", "{reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("did not answer in time"),
        "{reply}"
    );
    tokio::time::timeout(ENDS_WITHIN, upstream.closed.reached(1))
        .await
        .expect("the proxy closed the hung connection");
    proxy.stop();
    let steps = steps(&traces);
    let statuses: Vec<&str> = steps
        .iter()
        .map(|s| s["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["failed", "ok"], "{steps:?}");
    assert!(steps[0]["error"]
        .to_string()
        .contains("did not answer in time"));
}
