//! An MCP server exposing every registered tool (feature `mcp`, built on rmcp, the official Rust SDK).
//!
//! `tools/list` answers with each tool callable by name and its normalised argument schema;
//! `tools/call` goes through [`call_json`](crate::call_json), so policy, replay and the trace apply to
//! every call. A blocked call comes back as an MCP tool error (`isError: true`) whose structured content
//! names the policy and the rule; so does any other failed call, with its `error.type` kind.
//!
//! ```no_run
//! # async fn main_() -> Result<(), failcore::Error> {
//! // Tools are registered with #[failcore::tool]; the session comes from the environment
//! // (FAILCORE_DIR, FAILCORE_RESUME, FAILCORE_OFFLINE, FAILCORE_SANDBOX).
//! failcore::mcp::serve_stdio().await
//! # }
//! ```
//!
//! Over the Streamable HTTP transport instead, at `http://ADDR/mcp` ([`serve_http`], [`HttpServer`]), with
//! the protections of `failcore proxy --listen` (the same listener): loopback unless told otherwise,
//! `Host` and `Origin` checked against DNS rebinding, an optional bearer token, bounded bodies and
//! connections, header and body time limits. Every client session is served by its own MCP session; all
//! of their calls go into one run, finished when the server stops (SIGTERM or SIGINT).
//!
//! ```no_run
//! # async fn main_() -> Result<(), failcore::Error> {
//! failcore::mcp::serve_http("127.0.0.1:8765".parse().unwrap()).await
//! # }
//! ```

use crate::mcp_http::{Guard, Opened, Sessions};
use crate::proxy_common::Signals;
use crate::registry::ToolInfo;
use crate::{Error, Session};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
    ToolAnnotations,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::{ErrorData, ServerHandler, ServiceExt};
use serde_json::{json, Map, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{BufReader, DuplexStream};
use tokio::net::TcpListener;

/// The rmcp version this adapter is built and tested against.
pub const RMCP_VERSION: &str = "3.11.0";

/// An MCP server handler over the tools registered in this binary.
#[derive(Clone)]
pub struct McpServer {
    session: Option<Session>,
    tools: Arc<Vec<Tool>>,
    name: String,
    version: String,
}

impl McpServer {
    /// Serves every tool callable by name, in the current (else the process default) session.
    pub fn new() -> Self {
        let tools = crate::tools()
            .iter()
            .filter_map(mcp_tool)
            .collect::<Vec<_>>();
        McpServer {
            session: None,
            tools: Arc::new(tools),
            name: "failcore".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }

    /// Runs every call in this session.
    pub fn session(mut self, session: Session) -> Self {
        self.session = Some(session);
        self
    }

    /// The server name and version announced at initialization.
    pub fn named(mut self, name: impl Into<String>, version: impl Into<String>) -> Self {
        self.name = name.into();
        self.version = version.into();
        self
    }

    /// The tools as `tools/list` announces them.
    pub fn tools(&self) -> &[Tool] {
        &self.tools
    }

    /// Calls a tool through the lifecycle and shapes the outcome as an MCP tool result.
    pub async fn call(&self, name: &str, arguments: Option<Map<String, Value>>) -> CallToolResult {
        let args = arguments.map_or(Value::Null, Value::Object);
        let outcome = match &self.session {
            Some(s) => s.scope(crate::call_json(name, args)).await,
            None => crate::call_json(name, args).await,
        };
        match outcome {
            Ok(value) => tool_result(value),
            Err(e) => error_result(&e),
        }
    }
}

impl Default for McpServer {
    fn default() -> Self {
        McpServer::new()
    }
}

fn mcp_tool(info: &ToolInfo) -> Option<Tool> {
    let schema = match info.schema()? {
        Value::Object(map) => map,
        _ => return None,
    };
    let description = (!info.description().is_empty()).then(|| info.description().into());
    let mut tool = Tool::new_with_raw(info.name(), description, Arc::new(schema));
    use crate::Effect;
    let mut annotations = ToolAnnotations::new();
    match info.effect() {
        Effect::Pure | Effect::Read => annotations.read_only_hint = Some(true),
        Effect::Write | Effect::Exec => {
            annotations.read_only_hint = Some(false);
            annotations.destructive_hint = Some(true);
        }
        Effect::Network | Effect::Model => annotations.open_world_hint = Some(true),
        Effect::Unspecified => {}
    }
    tool.annotations = Some(annotations);
    Some(tool)
}

/// A successful output: a string as text, anything else as JSON text, an object also as structured content.
pub(crate) fn tool_result(value: Value) -> CallToolResult {
    match value {
        Value::String(s) => CallToolResult::success(vec![ContentBlock::text(s)]),
        Value::Object(_) => CallToolResult::structured(value),
        other => CallToolResult::success(vec![ContentBlock::text(other.to_string())]),
    }
}

/// The structured content of a failed call: `{"error": kind, "message", "policy", "rule", "reason"}`.
pub fn error_details(e: &Error) -> Value {
    let mut details = json!({ "error": e.kind(), "message": e.to_string() });
    if let Error::Blocked {
        policy,
        rule,
        reason,
        ..
    } = e
    {
        details["policy"] = policy.as_str().into();
        details["rule"] = rule.as_str().into();
        details["reason"] = reason.as_str().into();
    }
    details
}

/// A failed call as an MCP tool error: the message as text, the details as structured content.
pub(crate) fn error_result(e: &Error) -> CallToolResult {
    let mut result = CallToolResult::error(vec![ContentBlock::text(e.to_string())]);
    result.structured_content = Some(error_details(e));
    result
}

impl ServerHandler for McpServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(&self.name, &self.version))
            .with_instructions(
                "Tool calls are checked by policy, replayed when the run is resumed, and recorded \
                 in a tamper-evident trace. A blocked call is a tool error naming the rule.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(self.tools.to_vec()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        if !self.tools.iter().any(|t| t.name == request.name) {
            return Err(ErrorData::invalid_params(
                format!("unknown tool `{}`", request.name),
                None,
            ));
        }
        Ok(self.call(&request.name, request.arguments).await.into())
    }
}

/// Serves every registered tool over MCP on stdin/stdout, in the process default session (configured
/// from the environment), until the client disconnects; then finishes the run.
pub async fn serve_stdio() -> Result<(), Error> {
    let result = serve(McpServer::new()).await;
    let finished = crate::finish().await.map(|_| ());
    result.and(finished)
}

/// Serves every registered tool over MCP on stdin/stdout, each call in `session`, until the client
/// disconnects; then finishes the session's run.
pub async fn serve_stdio_in(session: Session) -> Result<(), Error> {
    let result = serve(McpServer::new().session(session.clone())).await;
    let finished = session.finish().await.map(|_| ());
    result.and(finished)
}

async fn serve(server: McpServer) -> Result<(), Error> {
    let running = server
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| Error::Config(format!("MCP initialization failed: {e}")))?;
    running
        .waiting()
        .await
        .map_err(|e| Error::Config(format!("the MCP server stopped abnormally: {e}")))?;
    Ok(())
}

/// Serves every registered tool over MCP Streamable HTTP at `http://<addr>/mcp`, in the process default
/// session (configured from the environment), until SIGTERM or SIGINT; then finishes the run. See
/// [`HttpServer`] for a token, more allowed host names, or a session of your own.
pub async fn serve_http(addr: SocketAddr) -> Result<(), Error> {
    HttpServer::new(addr).serve().await
}

/// Serves every registered tool over MCP Streamable HTTP at `http://<addr>/mcp`, each call in `session`,
/// until SIGTERM or SIGINT; then finishes the session's run.
pub async fn serve_http_in(session: Session, addr: SocketAddr) -> Result<(), Error> {
    HttpServer::new(addr).session(session).serve().await
}

/// FailCore's MCP server over Streamable HTTP, configured: the address, the session, who may connect.
///
/// ```no_run
/// # async fn main_() -> Result<(), failcore::Error> {
/// let token = std::env::var("MCP_TOKEN").expect("a token");
/// failcore::mcp::HttpServer::new("127.0.0.1:0".parse().unwrap())
///     .token(token)
///     .on_bound(|addr| eprintln!("listening on http://{addr}/mcp"))
///     .serve()
///     .await
/// # }
/// ```
pub struct HttpServer {
    addr: SocketAddr,
    server: McpServer,
    session: Option<Session>,
    guard: Guard,
    bound: Option<Box<dyn FnOnce(SocketAddr) + Send>>,
    shutdown: Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>>,
}

impl HttpServer {
    /// Listens on `addr` (a loopback address unless the host names clients use are allowed with
    /// [`allow_host`](Self::allow_host)).
    pub fn new(addr: SocketAddr) -> Self {
        HttpServer {
            addr,
            server: McpServer::new(),
            session: None,
            guard: Guard::default(),
            bound: None,
            shutdown: None,
        }
    }

    /// Runs every call in `session` (finished when the server stops), instead of the process default.
    pub fn session(mut self, session: Session) -> Self {
        self.server = self.server.session(session.clone());
        self.session = Some(session);
        self
    }

    /// Serves this handler (its name and version, say) instead of [`McpServer::new`]'s. Its session, when
    /// it has one, is not finished by the server: use [`session`](Self::session) for that.
    pub fn handler(mut self, server: McpServer) -> Self {
        self.server = match &self.session {
            Some(s) => server.session(s.clone()),
            None => server,
        };
        self
    }

    /// Requires `Authorization: Bearer <token>` on every request (`401` otherwise).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.guard.token = Some(token.into());
        self
    }

    /// Accepts `host` in `Host` and `Origin` besides the loopback names and the listening address (for a
    /// server reached through a name, a proxy or a tunnel).
    pub fn allow_host(mut self, host: impl Into<String>) -> Self {
        self.guard.allowed_hosts.push(host.into());
        self
    }

    /// Bounds the connections served at once and how long a client may take (see
    /// [`ListenLimits`](crate::proxy_common::ListenLimits) for the defaults).
    pub fn limits(mut self, limits: crate::proxy_common::ListenLimits) -> Self {
        self.guard.limits = limits;
        self
    }

    /// Told the address listened on once bound (useful with port 0).
    pub fn on_bound(mut self, bound: impl FnOnce(SocketAddr) + Send + 'static) -> Self {
        self.bound = Some(Box::new(bound));
        self
    }

    /// Stops when `shutdown` completes instead of at SIGTERM or SIGINT.
    pub fn shutdown(
        mut self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Self {
        self.shutdown = Some(Box::pin(shutdown));
        self
    }

    /// Serves until the shutdown (by default SIGTERM or SIGINT), ends every client session, then
    /// finishes the run.
    pub async fn serve(self) -> Result<(), Error> {
        let session = self.session.clone();
        let result = self.listen().await;
        // The run ends here either way: the session's, else the process default's.
        let finished = match session {
            Some(s) => s.finish().await.map(|_| ()),
            None => crate::finish().await.map(|_| ()),
        };
        result.and(finished)
    }

    async fn listen(self) -> Result<(), Error> {
        let listener = TcpListener::bind(self.addr)
            .await
            .map_err(|e| Error::Config(format!("cannot listen on {}: {e}", self.addr)))?;
        let local = listener
            .local_addr()
            .map_err(|e| Error::Config(format!("no local address: {e}")))?;
        let shutdown = match self.shutdown {
            Some(s) => s,
            None => {
                let mut signals = Signals::new()?;
                Box::pin(async move {
                    signals.recv().await;
                })
            }
        };
        if let Some(bound) = self.bound {
            bound(local);
        }
        let sessions = Arc::new(HttpSessions {
            server: self.server,
        });
        crate::mcp_http::serve(&listener, self.guard, sessions, "mcp server", shutdown).await
    }
}

/// Each HTTP client session an MCP session of its own with the handler (over the listener's line streams).
struct HttpSessions {
    server: McpServer,
}

impl Sessions for HttpSessions {
    fn open(&self, input: BufReader<DuplexStream>, output: DuplexStream) -> Result<Opened, String> {
        let server = self.server.clone();
        let task = tokio::spawn(async move {
            match server.serve((input, output)).await {
                Ok(running) => {
                    let _ = running.waiting().await;
                }
                Err(e) => {
                    tracing::warn!(target: "failcore::mcp", "an HTTP client session did not initialize: {e}")
                }
            }
        });
        Ok(Opened {
            task,
            authorization: None,
        })
    }

    fn report(&self, line: &str) {
        tracing::warn!(target: "failcore::mcp", "{line}");
    }
}
