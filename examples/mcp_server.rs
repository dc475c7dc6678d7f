//! An MCP server over stdio exposing FailCore tools: every call is checked by policy, replayed when the
//! run is resumed, and recorded in the trace.
//!
//! ```sh
//! FAILCORE_SANDBOX=. cargo run --example mcp_server --features mcp
//! ```
//!
//! Point any MCP client at that command. `FAILCORE_OFFLINE=last` answers from the last run's trace
//! without running any tool.
//!
//! Over Streamable HTTP instead, at `http://127.0.0.1:8765/mcp` (loopback only; with `MCP_TOKEN` set,
//! clients must send `Authorization: Bearer <that token>`), until Ctrl-C:
//!
//! ```sh
//! FAILCORE_SANDBOX=. cargo run --example mcp_server --features mcp -- --http 127.0.0.1:8765
//! ```

use std::path::PathBuf;

#[derive(Debug)]
struct ToolError(String);

impl std::fmt::Display for ToolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<failcore::Error> for ToolError {
    fn from(e: failcore::Error) -> Self {
        ToolError(e.to_string())
    }
}

/// Adds two integers.
#[failcore::tool(effect = "pure")]
async fn add(a: i64, b: i64) -> Result<i64, ToolError> {
    a.checked_add(b)
        .ok_or_else(|| ToolError("the sum overflows".into()))
}

/// Writes a note to a file beneath the sandbox and returns the number of bytes written.
///
/// The `fs_safe` policy checks `path` against `FAILCORE_SANDBOX` before the body runs, resolving a
/// relative path against that root; the body opens the file beneath the very same root through
/// [`failcore::fs::Sandbox`], so the check and the effect agree on which file it is, and a path that
/// escapes fails at the syscall even if a check were missed.
#[failcore::tool(effect = "write", policy = "fs_safe")]
async fn write_note(path: PathBuf, text: String) -> Result<usize, ToolError> {
    let root = std::env::var_os("FAILCORE_SANDBOX")
        .ok_or_else(|| ToolError("FAILCORE_SANDBOX is not set".into()))?;
    let sandbox = failcore::fs::Sandbox::open(&root)
        .map_err(|e| ToolError(format!("the sandbox cannot be opened: {e}")))?;
    sandbox
        .write(&path, text.as_bytes())
        .map_err(|e| ToolError(format!("{}: {e}", path.display())))?;
    Ok(text.len())
}

/// Greets someone, optionally in a given style.
#[failcore::tool(effect = "pure")]
async fn greet(name: String, style: Option<String>) -> Result<String, ToolError> {
    Ok(match style.as_deref() {
        Some("loud") => format!("HELLO, {}!", name.to_uppercase()),
        _ => format!("Hello, {name}."),
    })
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let served = match args.as_slice() {
        // stdout carries the protocol: anything else goes to stderr.
        [] => failcore::mcp::serve_stdio().await,
        [flag, addr] if flag == "--http" => match addr.parse() {
            Ok(addr) => {
                let mut server = failcore::mcp::HttpServer::new(addr)
                    .on_bound(|a| eprintln!("mcp_server: listening on http://{a}/mcp"));
                if let Ok(token) = std::env::var("MCP_TOKEN") {
                    server = server.token(token);
                }
                server.serve().await
            }
            Err(e) => Err(failcore::Error::Config(format!(
                "`{addr}` is not an address (host:port): {e}"
            ))),
        },
        _ => Err(failcore::Error::Config(
            "usage: mcp_server [--http HOST:PORT]".into(),
        )),
    };
    match served {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mcp_server: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
