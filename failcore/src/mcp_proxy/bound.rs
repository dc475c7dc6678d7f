//! The proxy for a session it did not open ([`McpProxy`]): served over Streamable HTTP (`http_listen.rs`,
//! the listener of `failcore proxy --listen`), each client session relayed as `relay.rs` relays any, but
//! every `tools/call` a step of the given session's run: checked by its policies, served from its replay
//! index on resume and offline, recorded in its trace.
//!
//! The run_start of that run was written when the session opened, before the proxy knew its server, so
//! the server's description (its `initialize` answer and tool lists, what an offline replay answers
//! without a server) cannot be a fact of the run_start. It is a step instead: at the first `tools/call`,
//! the read-only step `failcore:mcp_server` (a name no MCP tool can have: `:` is outside the names MCP
//! allows) with the arguments `{"server": <the server's identity hash>}` and the description as output.
//! A step is what the replay index serves, on resume and offline alike, so nothing new reads it: offline,
//! the proxy asks the session for that step when it is bound; served, no server is started; missed (the
//! run made no MCP call), the server is started for the description, the calls still served from the
//! trace. Each server's description is a step of its own, so one run may proxy several servers.

use super::catalog::{Catalog, SharedCatalog};
use super::config::server;
use super::http_listen::{bind, ProxySessions};
use super::relay::{Relay, RunOf};
use super::{Diagnostics, Options, ORIGIN};
use crate::mcp_http::{self, Guard, Sessions};
use crate::store::Mode;
use crate::{DynamicBody, DynamicTool, Effect, Error, Session};
use serde_json::{json, Value};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::OnceCell;

/// The step that records the server's description in a session's run.
pub(super) const DESCRIPTION_STEP: &str = "failcore:mcp_server";

/// The session the proxy records into, and whether its server's description is recorded yet.
pub(super) struct Bound {
    pub(super) session: Session,
    /// The server's identity (a hash of its command line or its URL): the description step's argument.
    server: String,
    described: OnceCell<()>,
    diagnostics: Diagnostics,
}

impl Bound {
    /// Whether the description step has been taken (recorded, served, or missed offline).
    pub(super) fn described(&self) -> bool {
        self.described.initialized()
    }

    /// Records what `catalog` knows of the server as the description step, once for the proxy.
    pub(super) async fn describe(&self, catalog: &SharedCatalog) {
        self.described
            .get_or_init(|| async {
                let description = Catalog::description(catalog);
                if let Err(e) = self.step(Ok(description)).await {
                    self.diagnostics.report(&format!(
                        "the MCP server's description could not be recorded (an offline replay of \
                         run {} will start the server): {e}",
                        self.session.run_id()
                    ));
                }
            })
            .await;
    }

    /// The description step, whose body gives `outcome`: served from the trace when the session has
    /// it (on resume and offline), else executed (offline: a miss).
    async fn step(&self, outcome: Result<Value, String>) -> Result<Value, Error> {
        let tool = DynamicTool::new(DESCRIPTION_STEP, ORIGIN, Effect::Read)?;
        let body: DynamicBody = Box::pin(async move { outcome });
        let arguments = json!({ "server": self.server });
        self.session.scope(tool.call(&arguments, body)).await
    }
}

/// The MCP proxy served over Streamable HTTP at `http://ADDR/mcp` for an existing [`Session`]: the
/// calls of every client session are steps of that session's run, checked by its policies and served
/// from its replay index on resume and offline, so that an agent's MCP tools join the run of its own
/// tools and model calls. Each client session gets its own server (a child of [`Options::command`], or
/// a session with the remote server of [`Options::url`]), as with [`listen`](super::listen).
///
/// Offline, when the run recorded the server's description (at its first `tools/call`), no server is
/// started: `initialize`, the lists and the calls are answered from the trace. The command or URL is
/// still required, as the server's identity.
///
/// The session's run is the owner's to end: stop the proxy ([`McpProxy::serve`] returns once its
/// shutdown future completes and every client session has ended), then finish the session.
pub struct McpProxy {
    listener: TcpListener,
    guard: Guard,
    sessions: Arc<ProxySessions>,
}

impl McpProxy {
    /// Binds `addr` (port 0 picks a free port) for `session`. Of `options`, the server
    /// ([`command`](Options::command) or [`url`](Options::url), with its headers and CAs), the timeout,
    /// the listener's token, hosts and limits, and the diagnostics apply; the store, the policy file,
    /// the replay, the run key, the durability, the vault and the redaction key are the session's, and
    /// setting any of them here is an error.
    pub async fn bind(
        addr: SocketAddr,
        session: Session,
        options: Options,
    ) -> Result<McpProxy, Error> {
        let theirs = [
            ("a store", options.store.is_some()),
            ("a policy file", options.policy.is_some()),
            ("a run to resume or replay", options.replay.is_some()),
            ("a run key", options.run_key.is_some()),
            ("a durability", options.durability.is_some()),
            ("a vault", options.vault.is_some()),
            ("a redaction key", options.redact_key_file.is_some()),
        ];
        if let Some((what, _)) = theirs.iter().find(|(_, set)| *set) {
            return Err(Error::Config(format!(
                "the MCP proxy of run {} records into that session: {what} is the session's to set, \
                 not the proxy's",
                session.run_id()
            )));
        }
        let Some(id) = server(&options, None)?.id else {
            return Err(Error::Config(
                "the MCP proxy needs its server: a command to start, or a URL (offline, the server is \
                 not started when the run recorded its description, but it names the server)"
                    .into(),
            ));
        };
        let bound = Arc::new(Bound {
            session,
            server: id,
            described: OnceCell::new(),
            diagnostics: options.diagnostics.clone(),
        });
        let offline = bound.session.mode() == Mode::Offline;
        let description = if offline {
            let missed = Err("offline: the run recorded no description of this MCP server".into());
            let served = bound.step(missed).await;
            let _ = bound.described.set(());
            served.ok()
        } else {
            None
        };
        let source = bound.session.resume_report().map(|r| r.source.clone());
        let (listener, guard) = bind(&options, addr).await?;
        let diagnostics = options.diagnostics.clone();
        let relay = move || {
            // Each client session its own connection to a remote server (its own `Authorization`).
            let server = server(&options, None)?;
            Ok(Relay {
                run: RunOf::Bound(bound.clone()),
                timeout: server.timeout,
                command: options.command.clone(),
                remote: server.remote,
                description: description.clone(),
                source: source.clone(),
            })
        };
        Ok(McpProxy {
            listener,
            guard,
            sessions: ProxySessions::new(Box::new(relay), diagnostics),
        })
    }

    /// The address it listens on; its clients reach `http://<address>/mcp`.
    pub fn local_addr(&self) -> Result<SocketAddr, Error> {
        self.listener
            .local_addr()
            .map_err(|e| Error::Config(format!("no local address: {e}")))
    }

    /// Serves until `shutdown` completes, then ends every client session as its closing would: calls in
    /// flight get a moment to end (then they are recorded as cancelled), each server is stopped. Finish
    /// the session after this returns.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
        let sessions: Arc<dyn Sessions> = self.sessions;
        mcp_http::serve(&self.listener, self.guard, sessions, "mcp proxy", shutdown).await
    }
}
