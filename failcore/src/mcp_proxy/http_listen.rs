//! `failcore proxy --listen`: the MCP Streamable HTTP transport towards clients (`crate::mcp_http`, which
//! has the protocol, the DNS-rebinding protection, the bearer token and the bounds), each client session a
//! session of the stdio proxy: its own server (a child, or a session with the `--url` server) and its own
//! run (or the run of `--run-key`), or, for [`McpProxy`](super::McpProxy), steps of a session's run.
//! `DELETE` ends the session's calls in flight, its run (when it is the proxy's own) and its server.
//! Without a token of the proxy's own, the client's `Authorization` is passed on to a `--url` server
//! (never recorded).

use super::config::configure;
use super::relay::{serve, ClientSide, Relay};
use super::{Diagnostics, Options, Replay};
use crate::mcp_http::{self, Guard, Opened, Sessions};
use crate::proxy_common::Signals;
use crate::store::Mode;
use crate::Error;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use tokio::io::{BufReader, DuplexStream};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// How each client session's relay is made: its configuration (and server, and run).
type MakeRelay = Box<dyn Fn() -> Result<Relay, Error> + Send + Sync>;

/// Each client session a session of the stdio proxy, with the relay `relay` makes for it.
pub(super) struct ProxySessions {
    relay: MakeRelay,
    diagnostics: Diagnostics,
}

impl ProxySessions {
    pub(super) fn new(relay: MakeRelay, diagnostics: Diagnostics) -> Arc<ProxySessions> {
        Arc::new(ProxySessions { relay, diagnostics })
    }
}

impl Sessions for ProxySessions {
    fn open(&self, input: BufReader<DuplexStream>, output: DuplexStream) -> Result<Opened, String> {
        let relay = (self.relay)().map_err(|e| format!("failcore proxy could not start: {e}"))?;
        let remote = relay.remote.clone();
        let client = ClientSide {
            input: Box::new(input),
            output: Box::new(output),
            parent: None,
            signals: false,
        };
        let diagnostics = self.diagnostics.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = serve(relay, diagnostics.clone(), client).await {
                diagnostics.report(&format!("the session's run could not end: {e}"));
            }
        });
        // Passed on to a `--url` server (never recorded).
        let authorization = remote.map(|remote| {
            Box::new(move |a| {
                if let Ok(mut cell) = remote.authorization.lock() {
                    *cell = Some(a);
                }
            }) as Box<dyn Fn(_) + Send + Sync>
        });
        Ok(Opened {
            task,
            authorization,
        })
    }

    fn report(&self, line: &str) {
        self.diagnostics.report(line);
    }
}

/// Binds `addr`; returns the listener and who may reach it.
pub(super) async fn bind(
    options: &Options,
    addr: SocketAddr,
) -> Result<(TcpListener, Guard), Error> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| Error::Config(format!("cannot listen on {addr}: {e}")))?;
    let guard = Guard {
        token: options.listen_token.clone(),
        allowed_hosts: options.allowed_hosts.clone(),
        limits: options.listen_limits,
    };
    Ok((listener, guard))
}

pub(super) async fn listen(
    mut options: Options,
    addr: SocketAddr,
    bound: impl FnOnce(SocketAddr),
) -> Result<ExitCode, Error> {
    let diagnostics = options.diagnostics.clone();
    // `last` is resolved once, now: the runs this listener's sessions open must not become the source
    // of the next session's.
    let probe = configure(options.clone(), false)?;
    if let Some((mode, run)) = probe.source {
        options.replay = Some(match mode {
            Mode::Offline => Replay::Offline(run),
            _ => Replay::Resume(run),
        });
    }
    let (listener, guard) = bind(&options, addr).await?;
    let local = listener
        .local_addr()
        .map_err(|e| Error::Config(format!("no local address: {e}")))?;
    let sessions = ProxySessions::new(
        Box::new(move || Relay::own(configure(options.clone(), false)?)),
        diagnostics,
    );
    let mut signals = Signals::new()?;
    let (signalled_tx, signalled_rx) = oneshot::channel::<u8>();
    let shutdown = async move {
        let sig = signals.recv().await;
        let _ = signalled_tx.send(sig);
    };
    bound(local);
    // Every session ends as a client's closing ends it: calls in flight answered, runs ended.
    mcp_http::serve(&listener, guard, sessions, "mcp proxy", shutdown).await?;
    let sig = signalled_rx.await.unwrap_or(15);
    Ok(ExitCode::from(128u8.saturating_add(sig)))
}
