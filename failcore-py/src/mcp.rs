//! The MCP proxy served in process: a session's `mcp_proxy()` binds `127.0.0.1:0` with that session
//! ([`failcore::mcp_proxy::McpProxy`]), so the calls the agent's MCP client makes (over Streamable HTTP,
//! at the returned URL) are steps of the same run as its Python tools and model calls: served on resume
//! and offline from the same replay index. Each server (command or URL) gets one proxy per run; it runs
//! until its session finishes ([`crate::serving`]).

use crate::block_here;
use crate::serving::{serve_once, Started};
use failcore::mcp_proxy::{McpProxy, Options};
use failcore::{Error, Session};

/// The server an MCP proxy relays to, and how.
pub(crate) struct Server {
    /// The program that starts it, and its arguments.
    pub(crate) command: Vec<String>,
    /// A remote server's URL (Streamable HTTP), instead of a command.
    pub(crate) url: Option<String>,
    /// Headers sent with every request to the remote server (never recorded).
    pub(crate) headers: Vec<(String, String)>,
    /// How long a request may wait for the server, in seconds.
    pub(crate) timeout: Option<f64>,
}

/// Serves the MCP proxy for `session` and `server` (once: a second call for the same server returns the
/// same URL); returns its URL, `http://127.0.0.1:PORT/mcp`.
pub(crate) fn serve(session: Session, server: Server, default: bool) -> Result<String, Error> {
    let Server {
        command,
        url,
        headers,
        timeout,
    } = server;
    let key = match (&url, command.is_empty()) {
        (Some(url), true) => format!("url {url}"),
        (None, false) => format!("command {command:?}"),
        _ => return Err(Error::Config(
            "mcp_proxy needs its server: command=[program, args...] or url=, not both (offline, \
                 the server is not started when the run recorded its description)"
                .into(),
        )),
    };
    // What the proxy cannot tell its client (a server that would not start, a call it could not record)
    // goes to stderr, as `failcore proxy` has it.
    let mut options = Options::default()
        .server(command)
        .on_diagnostic(|line| eprintln!("failcore mcp proxy: {line}"));
    if let Some(url) = url {
        options = options.remote(url);
    }
    for (name, value) in headers {
        options = options.header(name, value);
    }
    if let Some(seconds) = timeout {
        options = options.timeout_seconds(seconds);
    }
    let run = (session.run_id().to_owned(), default);
    serve_once((&run.0, run.1), "MCP proxy", Some(key), false, || {
        let proxy = block_here(McpProxy::bind(([127, 0, 0, 1], 0).into(), session, options))?;
        let url = format!("http://{}/mcp", proxy.local_addr()?);
        Ok(Started::spawn(url, |stopped| proxy.serve(stopped)))
    })
}
