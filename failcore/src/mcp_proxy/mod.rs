//! The MCP proxy (feature `mcp-proxy`): puts FailCore between any MCP client and any MCP server, without
//! changing either. `failcore proxy [--policy failcore.toml] -- <server command...>` runs it over stdio;
//! [`run`] is the same from a program. Either side may speak Streamable HTTP instead: [`listen`] serves
//! clients at `http://ADDR/mcp` (`--listen`; `http_listen.rs`), and [`Options::url`] reaches a remote
//! server instead of starting one (`--url`; `http_upstream.rs`).
//!
//! Every message passes through unchanged, except `tools/call` requests: each is a step of the run (a
//! dynamic tool named after the server's tool), checked against the policy file, answered from the trace
//! when resuming or offline, and otherwise forwarded to the server, its result recorded. A refused call
//! never reaches the server; the client gets an MCP tool error (`isError: true`) whose structured content
//! names the policy and the rule. Every `tools/call` the proxy answers is in the trace, malformed ones
//! included (as failed, with the reason).
//!
//! Liveness: every request gets an answer. When the server exits (at start-up or later) or does not answer
//! within the timeout, every pending and later request gets a JSON-RPC error naming why, and the proxy
//! exits non-zero once the client is gone. Bytes that are not a JSON-RPC message (invalid UTF-8, an
//! oversized line, malformed JSON) get a JSON-RPC error and the session goes on. SIGTERM and SIGINT end
//! the run cleanly (its run_end written); a client that vanished without closing (its process died)
//! leaves the run without a run_end, as a crash.
//!
//! Byte for byte: what the server sends reaches the client as it was sent (key order, number literals,
//! string escapes), and a call's result is recorded as those bytes, so that a resume or an offline replay
//! gives the client the same bytes with its own id. The server's answers to `initialize`,
//! `server/discover` and every page of `tools/list`, `resources/list`, `resources/templates/list` and
//! `prompts/list` (each with the cursor it was asked with) are recorded the same way.
//!
//! Cancellation and shutdown: a `notifications/cancelled` for a call in flight is forwarded to the server,
//! the call is recorded as cancelled and the client gets no answer to it. When the client's input ends,
//! or on SIGTERM or SIGINT, calls in flight have 2 s to end (then they are recorded as cancelled), the
//! run ends, and the server has 1 s to exit after its stdin closes, then 1 s after SIGTERM, then it is
//! killed: the proxy is gone within about 4 s plus the time its store takes.
//!
//! Tasks: a `tools/call` the server turns into a task (SEP-1686, or the tasks extension of 2026-07-28) is
//! one step whose output is the task's final result; the client gets the receipt at once and the proxy
//! follows the task itself. Served from the trace, such a call is a task already completed, whose
//! `tasks/get`, `tasks/result` and `tasks/cancel` the proxy answers (`tasks.rs`). In a session of the
//! 2026-07-28 revision the proxy's own requests carry the client's `_meta`, and `subscriptions/listen` is
//! relayed without a timeout.
//!
//! The run is opened at the first `tools/call`, so a session that only lists tools creates no run. It
//! records the server's description (its `initialize` answer and tool list) in the run_start, so an
//! offline replay answers `initialize` and `tools/list` itself and starts no server at all.
//! [`McpProxy`] serves the proxy for a [`Session`](crate::Session) it did not open instead (every client
//! session's calls steps of that session's run); the description is then a step of the run
//! (`bound.rs`).
//!
//! The module's parts: [`Options`] and the configuration they resolve to (`config.rs`: flags, then the
//! policy file's `[proxy]` table, then the environment); the client's side, one JSON-RPC message a line
//! (`framing.rs`) and what each message is (`message.rs`); the server process, its requests in flight and
//! its end (`upstream.rs`); what the proxy learns of the server (`catalog.rs`); the relay and the recording
//! of calls (`relay.rs`); tasks (`tasks.rs`); the answers given offline without a server (`offline.rs`).
//! Run names, signals and the client's liveness are shared with the LLM proxy, in
//! [`crate::proxy_common`].

mod bound;
mod catalog;
mod config;
use crate::mcp_framing as framing;
mod http_listen;
mod http_upstream;
mod message;
mod offline;
mod relay;
mod tasks;
mod upstream;

pub use bound::McpProxy;

use crate::{Durability, Error, RunSummary};
use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// The recorder this proxy's runs name (`versions.recorder`).
const RECORDER: &str = crate::proxy_common::MCP_PROXY_RECORDER;
/// Where the proxied tools show in the trace (their module).
const ORIGIN: &str = "mcp proxy";
/// The key of the server's description in the run_start's `versions`.
const DESCRIPTION: &str = "mcp_server";
/// How long a request may wait for the server by default.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the server has to exit after its stdin closes, and again after SIGTERM (then SIGKILL).
const GRACE: Duration = Duration::from_secs(1);
/// How long calls in flight have to end once the client's input ends or a signal comes; those still
/// running then are recorded as cancelled.
const CALLS_GRACE: Duration = Duration::from_secs(2);

/// The earlier run a session serves calls from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replay {
    /// Resume it (`last` or a run id): calls it recorded are answered from its trace, others reach the
    /// server.
    Resume(String),
    /// Replay it offline: every answer comes from its trace; no server is started when it recorded the
    /// server's description.
    Offline(String),
}

/// A receiver of the proxy's diagnostics.
type Sink = Arc<dyn Fn(&str) + Send + Sync>;

/// Where the proxy's diagnostics go (a line each, without a prefix): a sink, else `tracing` warnings.
#[derive(Clone, Default)]
pub(crate) struct Diagnostics(Option<Sink>);

impl Diagnostics {
    pub(crate) fn report(&self, line: &str) {
        match &self.0 {
            Some(f) => f(line),
            None => tracing::warn!(target: "failcore::mcp_proxy", "{line}"),
        }
    }
}

/// What a proxy session is given. Anything left unset is taken from the policy file's `[proxy]` table,
/// then from the environment (`FAILCORE_STORE`, `FAILCORE_DIR`, `FAILCORE_RESUME`, `FAILCORE_OFFLINE`,
/// `FAILCORE_RUN_KEY`, and what [`Session::from_env`](crate::Session::from_env) reads), then defaults.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct Options {
    /// The trace store's spec (see [`store_from_spec`](crate::store_from_spec)); default `.failcore`.
    pub store: Option<String>,
    /// The policy file for the proxied tools (TOML; JSON when it ends in `.json`), whose `[proxy]` table
    /// may also set `store`, `resume`, `offline`, `run_key`, `timeout_seconds`, `durability`, `vault` and
    /// `redact_key_file`.
    pub policy: Option<PathBuf>,
    /// The earlier run to resume or replay offline.
    pub replay: Option<Replay>,
    /// How long a request may wait for the server before it is answered with an error, in seconds
    /// (checked when the proxy starts: a number > 0). Default: 300.
    pub timeout_seconds: Option<f64>,
    /// Records consecutive sessions into one run: a session with this key continues the key's open run
    /// of the same mode (one session at a time), and leaves it open when it ends.
    pub run_key: Option<String>,
    /// How durable each record is before the call returns.
    pub durability: Option<Durability>,
    /// What a resume does with a `write` or `exec` call that was in flight when the run died, or that
    /// failed with its effect unknown (the server died, timed out or failed internally after the call
    /// was sent): run it again (the default) or refuse it, so that a person can check it first.
    pub on_in_flight: Option<crate::InFlight>,
    /// Where redacted outputs are sealed, so that a resume serves them exactly.
    pub vault: Option<PathBuf>,
    /// The redaction key file (kept out of the store).
    pub redact_key_file: Option<PathBuf>,
    /// The MCP server to run: its program and arguments (not needed offline, when the run recorded the
    /// server's description).
    pub command: Vec<String>,
    /// A remote MCP server's URL (Streamable HTTP), instead of a [`command`](Options::command).
    pub url: Option<String>,
    /// Headers sent with every request to the remote server (`Name`, `value`): credentials, never
    /// recorded.
    pub headers: Vec<(String, String)>,
    /// PEM files of CAs trusted for the remote server, beside the platform's roots.
    pub upstream_ca: Vec<PathBuf>,
    /// With [`listen`]: the token every HTTP request must bring as `Authorization: Bearer <token>`.
    pub listen_token: Option<String>,
    /// With [`listen`]: host names accepted in `Host` and `Origin` beside the loopback names and the
    /// listening address.
    pub allowed_hosts: Vec<String>,
    /// With [`listen`]: connections at once, and how long a client may take.
    pub listen_limits: crate::proxy_common::ListenLimits,
    diagnostics: Diagnostics,
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("store", &self.store)
            .field("policy", &self.policy)
            .field("replay", &self.replay)
            .field("timeout_seconds", &self.timeout_seconds)
            .field("run_key", &self.run_key)
            .field("durability", &self.durability)
            .field("on_in_flight", &self.on_in_flight)
            .field("vault", &self.vault)
            .field("redact_key_file", &self.redact_key_file)
            .field("command", &self.command)
            .field("url", &self.url)
            .field(
                "headers",
                &self.headers.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("upstream_ca", &self.upstream_ca)
            .field("listen_token", &self.listen_token.as_ref().map(|_| "…"))
            .field("allowed_hosts", &self.allowed_hosts)
            .field("listen_limits", &self.listen_limits)
            .finish_non_exhaustive()
    }
}

impl Options {
    /// Options for proxying the server that `command` (a program and its arguments) starts.
    pub fn server<I, S>(mut self, command: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.command = command.into_iter().map(Into::into).collect();
        self
    }

    /// Options for proxying the remote MCP server at `url` (Streamable HTTP).
    pub fn remote(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }

    /// Sends a header with every request to the remote server. See [`Options::headers`].
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Trusts the CAs in a PEM file for the remote server. See [`Options::upstream_ca`].
    pub fn upstream_ca(mut self, pem: impl Into<PathBuf>) -> Self {
        self.upstream_ca.push(pem.into());
        self
    }

    /// See [`Options::listen_token`].
    pub fn listen_token(mut self, token: impl Into<String>) -> Self {
        self.listen_token = Some(token.into());
        self
    }

    /// See [`Options::allowed_hosts`].
    pub fn allow_host(mut self, host: impl Into<String>) -> Self {
        self.allowed_hosts.push(host.into());
        self
    }

    /// See [`Options::store`].
    pub fn store(mut self, spec: impl Into<String>) -> Self {
        self.store = Some(spec.into());
        self
    }

    /// See [`Options::policy`].
    pub fn policy(mut self, file: impl Into<PathBuf>) -> Self {
        self.policy = Some(file.into());
        self
    }

    /// Resumes `run` (`last` or a run id). See [`Replay::Resume`].
    pub fn resume(mut self, run: impl Into<String>) -> Self {
        self.replay = Some(Replay::Resume(run.into()));
        self
    }

    /// Replays `run` (`last` or a run id) offline. See [`Replay::Offline`].
    pub fn offline(mut self, run: impl Into<String>) -> Self {
        self.replay = Some(Replay::Offline(run.into()));
        self
    }

    /// See [`Options::timeout_seconds`].
    pub fn timeout_seconds(mut self, seconds: f64) -> Self {
        self.timeout_seconds = Some(seconds);
        self
    }

    /// See [`Options::run_key`].
    pub fn run_key(mut self, key: impl Into<String>) -> Self {
        self.run_key = Some(key.into());
        self
    }

    /// See [`Options::durability`].
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = Some(durability);
        self
    }

    /// What a resume does with a `write` or `exec` call in flight at a crash, or failed with its effect
    /// unknown (see [`Options::on_in_flight`]).
    pub fn on_in_flight(mut self, what: crate::InFlight) -> Self {
        self.on_in_flight = Some(what);
        self
    }

    /// See [`Options::vault`].
    pub fn vault(mut self, dir: impl Into<PathBuf>) -> Self {
        self.vault = Some(dir.into());
        self
    }

    /// See [`Options::redact_key_file`].
    pub fn redact_key_file(mut self, file: impl Into<PathBuf>) -> Self {
        self.redact_key_file = Some(file.into());
        self
    }

    /// Where the proxy's diagnostics go, one line each (a server that could not start, a message dropped,
    /// why the proxy exits non-zero): by default they are `tracing` warnings. `failcore proxy` writes them
    /// to stderr.
    pub fn on_diagnostic(mut self, f: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.diagnostics = Diagnostics(Some(Arc::new(f)));
        self
    }
}

/// Runs a proxy session: serves the MCP client on this process's stdin and stdout, relaying to the server
/// of [`Options::command`] (started here, its stderr inherited), until the client closes its side or a
/// SIGTERM or SIGINT arrives. Call it on a multi-thread Tokio runtime, and shut that runtime down without
/// waiting for its blocking threads (`shutdown_background`): a read of stdin may still be blocked in one.
///
/// A configuration that cannot start a session (a bad policy file, an unknown run) is not returned as an
/// error: the client is told why in an answer to each of its requests, and the exit code is 2. The exit
/// code otherwise is 0; 128 + the signal's number after a signal; 3 when the server went away or stopped
/// answering while the client was still there; the server's own exit status when it ended non-zero. An
/// error is returned when the run could not be ended properly (its store failing).
pub async fn run(options: Options) -> Result<ExitCode, Error> {
    let diagnostics = options.diagnostics.clone();
    match config::configure(options, false) {
        Ok(config) => {
            let relay = relay::Relay::own(config)?;
            relay::serve(relay, diagnostics, relay::ClientSide::stdio()).await
        }
        // The client still gets an answer that says why, instead of a closed connection.
        Err(e) => Ok(relay::refuse_everything(&e.to_string(), &diagnostics).await),
    }
}

/// Serves MCP clients over the Streamable HTTP transport at `http://<addr>/mcp` (see `http_listen`):
/// each client session gets its own server (a child of [`Options::command`], or a session with the remote
/// server of [`Options::url`]) and its own run, or continues the run of [`Options::run_key`]. Runs until a
/// SIGTERM or SIGINT, which ends every session (their runs ended properly); the exit code is then 128 +
/// the signal's number. `bound` is told the address listened on (useful with port 0).
pub async fn listen(
    options: Options,
    addr: std::net::SocketAddr,
    bound: impl FnOnce(std::net::SocketAddr),
) -> Result<ExitCode, Error> {
    http_listen::listen(options, addr, bound).await
}

/// Ends the open run of [`Options::run_key`] (writes its run_end) without starting a server or serving a
/// client, and returns its summary.
pub async fn end_run(options: Options) -> Result<RunSummary, Error> {
    config::end_run(config::configure(options, true)?).await
}
