//! HTTP for the proxies: the listener that serves clients (bounded: connections at once, the time to send
//! a request's headers, idle connections, with a backoff when accepting fails), and the client that
//! reaches upstreams (rustls with the platform's roots, `SSL_CERT_FILE` and `SSL_CERT_DIR`, private CAs;
//! `HTTPS_PROXY`, `HTTP_PROXY` and `NO_PROXY`; no redirect to another origin; errors that name their
//! cause). The LLM proxy and the MCP proxy's Streamable HTTP transport both use them.

#[cfg(any(feature = "llm-proxy", feature = "mcp-proxy"))]
use crate::Error;
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt};
use hyper::body::Incoming;
use hyper::{Request, Response};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// A response body.
pub(crate) type Body = BoxBody<Bytes, Infallible>;

/// The bounds of a listener.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) max_connections: usize,
    pub(crate) header_timeout: Duration,
    pub(crate) idle_timeout: Duration,
}

/// How the upstream client is built.
#[cfg(any(feature = "llm-proxy", feature = "mcp-proxy"))]
pub(crate) struct ClientOptions<'a> {
    /// PEM files of CAs trusted beside the platform's roots.
    pub(crate) upstream_ca: &'a [std::path::PathBuf],
    pub(crate) connect_timeout: Duration,
    pub(crate) read_timeout: Duration,
}

/// Accepts connections on `listener` until `shutdown` completes, serving each with `handler`, at most
/// `limits.max_connections` at once. Requests in progress then are abandoned.
pub(crate) async fn serve<H, F>(
    listener: &TcpListener,
    limits: Limits,
    label: &'static str,
    handler: H,
    shutdown: impl Future<Output = ()>,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut backoff = Duration::ZERO;
    tokio::pin!(shutdown);
    loop {
        // A connection over the limit waits in the kernel's backlog, never costing a descriptor here.
        let permit = tokio::select! {
            () = &mut shutdown => return,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let accepted = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => {
                backoff = Duration::ZERO;
                stream
            }
            Err(e) if transient_accept_error(&e) => continue,
            Err(e) => {
                // Out of descriptors or memory: accepting again at once would spin. Wait, longer
                // each time, for connections to close.
                backoff = (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                tracing::warn!(error = %e, wait_ms = backoff.as_millis() as u64, "{label}: cannot accept");
                tokio::select! {
                    () = &mut shutdown => return,
                    () = tokio::time::sleep(backoff) => continue,
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        tokio::spawn(async move {
            connection(limits, handler, stream).await;
            drop(permit);
        });
    }
}

/// Accept errors that concern one connection only (it was reset before it was accepted).
fn transient_accept_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | WouldBlock
    )
}

/// What a connection has done lately, for the idle timeout.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn touch(&self) {
        let now = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(now, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let now = self.start.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// A request in progress, for as long as its response is being sent.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(activity: &Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.touch();
    }
}

/// A TCP stream that notes when it last moved bytes.
struct Watched {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Serves one client connection until it closes, or stays idle (no request in progress) too long.
async fn connection<H, F>(limits: Limits, handler: H, stream: TcpStream)
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Body>> + Send + 'static,
{
    let activity = Arc::new(Activity {
        start: Instant::now(),
        last_ms: AtomicU64::new(0),
        in_flight: AtomicUsize::new(0),
    });
    let io = hyper_util::rt::TokioIo::new(Watched {
        stream,
        activity: activity.clone(),
    });
    let (header_timeout, idle) = (limits.header_timeout, limits.idle_timeout);
    let service_activity = activity.clone();
    let service = hyper::service::service_fn(move |req| {
        let response = handler(req);
        let in_flight = InFlight::new(&service_activity);
        async move {
            let response = response.await;
            // The request counts as in progress until its response body is gone.
            Ok::<_, Infallible>(response.map(|body| {
                BodyExt::boxed(body.map_frame(move |frame| {
                    let _ = &in_flight;
                    frame
                }))
            }))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let tick = (idle / 4).max(Duration::from_millis(50));
    loop {
        tokio::select! {
            _ = &mut conn => return,
            () = tokio::time::sleep(tick) => {
                if activity.in_flight.load(Ordering::SeqCst) == 0 && activity.idle_for() >= idle {
                    return;
                }
            }
        }
    }
}

pub(crate) fn default_max_connections() -> usize {
    #[cfg(target_os = "linux")]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the limit into the struct it is given, which lives for the call.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
            let soft = usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX);
            return (soft.saturating_sub(32) / 2).clamp(16, 4096);
        }
    }
    1024
}

/// The client every upstream request goes through: one per proxy, so connections (and their TLS
/// sessions) are pooled and reused across calls.
#[cfg(any(feature = "llm-proxy", feature = "mcp-proxy"))]
pub(crate) fn client(options: &ClientOptions<'_>) -> Result<reqwest::Client, Error> {
    let tls = tls_config(options.upstream_ca)?;
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .http1_only()
        .connect_timeout(options.connect_timeout)
        .read_timeout(options.read_timeout)
        .pool_idle_timeout(std::time::Duration::from_secs(90))
        .redirect(reqwest::redirect::Policy::custom(same_origin_only))
        .build()
        .map_err(|e| {
            Error::Config(format!(
                "cannot build the upstream HTTP client: {}",
                chain(&e)
            ))
        })
}

/// Redirects are followed within the upstream's origin only: the request carries the client's
/// credentials (`Authorization`, `x-api-key`...), which must never reach another host.
#[cfg(any(feature = "llm-proxy", feature = "mcp-proxy"))]
fn same_origin_only(attempt: reqwest::redirect::Attempt<'_>) -> reqwest::redirect::Action {
    let Some(first) = attempt.previous().first() else {
        return attempt.stop();
    };
    if attempt.previous().len() > 5 {
        return attempt.error("more than 5 redirects");
    }
    if attempt.url().origin() == first.origin() {
        return attempt.follow();
    }
    let to = attempt.url().origin().ascii_serialization();
    attempt.error(format!(
        "the upstream redirected to another origin ({to}); not followed, so that the client's \
         credentials stay with the upstream"
    ))
}

/// The TLS configuration: the platform's roots (`SSL_CERT_FILE` and `SSL_CERT_DIR` replace them, as for
/// OpenSSL), the bundled Mozilla roots when the platform has none, and every CA of `--upstream-ca`.
#[cfg(any(feature = "llm-proxy", feature = "mcp-proxy"))]
fn tls_config(upstream_ca: &[std::path::PathBuf]) -> Result<rustls::ClientConfig, Error> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (added, _) = roots.add_parsable_certificates(native.certs);
    if added == 0 {
        if !native.errors.is_empty() {
            tracing::warn!(
                errors = ?native.errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "no platform root certificate could be read; using the bundled roots"
            );
        }
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    for path in upstream_ca {
        let pem = std::fs::read(path).map_err(|e| {
            Error::Config(format!(
                "cannot read the upstream CA {}: {e}",
                path.display()
            ))
        })?;
        let mut found = 0;
        use rustls::pki_types::pem::PemObject;
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| {
                Error::Config(format!(
                    "the upstream CA {} is not PEM: {e}",
                    path.display()
                ))
            })?;
            roots.add(cert).map_err(|e| {
                Error::Config(format!(
                    "the upstream CA {} holds a certificate that cannot be a root: {e}",
                    path.display()
                ))
            })?;
            found += 1;
        }
        if found == 0 {
            return Err(Error::Config(format!(
                "the upstream CA {} holds no PEM certificate",
                path.display()
            )));
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// An error and its sources, one sentence: a certificate problem deep in the chain (`invalid peer
/// certificate: UnknownIssuer`) is what the user must read.
#[cfg(any(feature = "llm-proxy", feature = "mcp-proxy"))]
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// A reqwest error, with what a user must act on named first. A certificate refused is told by the TLS
/// error found under it, never by the words of the message (which holds the URL, whose host could say
/// `expired`).
#[cfg(any(feature = "llm-proxy", feature = "mcp-proxy"))]
pub(crate) fn describe(e: &reqwest::Error) -> String {
    let text = chain(e);
    let cause = if let Some(tls) = tls_error(e) {
        Some(tls_cause(tls))
    } else if e.is_redirect() {
        None
    } else if e.is_timeout() {
        Some("the upstream did not answer in time")
    } else if e.is_connect() {
        Some("cannot connect to the upstream")
    } else {
        None
    };
    match cause {
        Some(cause) => format!("{cause} ({text})"),
        None => text,
    }
}

/// The TLS error a request failed on, searched through the error's sources and the errors that I/O
/// errors wrap (an I/O error's `source` skips the error it wraps).
#[cfg(any(feature = "llm-proxy", feature = "mcp-proxy"))]
fn tls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(e);
    while let Some(error) = next {
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(inner) = error
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            if let Some(tls) = tls_error(inner) {
                return Some(tls);
            }
        }
        next = error.source();
    }
    None
}

/// What a TLS failure means to the user, and what to do about it.
#[cfg(any(feature = "llm-proxy", feature = "mcp-proxy"))]
fn tls_cause(e: &rustls::Error) -> &'static str {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            C::UnknownIssuer => {
                "the upstream's certificate is from an issuer this machine does not trust (unknown \
                 issuer; trust its CA with --upstream-ca FILE or SSL_CERT_FILE)"
            }
            C::Expired | C::ExpiredContext { .. } => "the upstream's certificate has expired",
            C::NotValidYet | C::NotValidYetContext { .. } => {
                "the upstream's certificate is not valid yet (is this machine's clock right?)"
            }
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                "the upstream's certificate is not valid for its host name (wrong host)"
            }
            C::Revoked => "the upstream's certificate was revoked",
            _ => "the upstream's certificate was refused",
        },
        _ => "the TLS handshake with the upstream failed",
    }
}

#[cfg(all(test, any(feature = "llm-proxy", feature = "mcp-proxy")))]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrapped(std::io::Error);

    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("error sending request for url (https://expired.example/v1)")
        }
    }

    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn the_tls_error_is_found_under_the_io_error_that_wraps_it() {
        let refused = |c: rustls::CertificateError| {
            Wrapped(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                rustls::Error::InvalidCertificate(c),
            ))
        };
        let e = refused(rustls::CertificateError::UnknownIssuer);
        let tls = tls_error(&e).expect("found");
        assert!(tls_cause(tls).contains("unknown issuer"));
        let e = refused(rustls::CertificateError::NotValidForName);
        assert!(tls_cause(tls_error(&e).unwrap()).contains("wrong host"));
        // A host named `expired` in the URL of a failure that is not TLS does not make it one.
        let e = Wrapped(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "connection refused",
        ));
        assert!(tls_error(&e).is_none());
    }
}
