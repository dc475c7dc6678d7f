//! `failcore proxy [--policy failcore.toml] [--listen ADDR] (--url URL | -- <server command...>)`: puts
//! FailCore between any MCP client and any MCP server, over stdio or Streamable HTTP on either side,
//! without changing either. The proxy is `failcore::mcp_proxy`; this is its command line.

use crate::common::Result;
use failcore::mcp_proxy::Options;
use failcore::Error;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
#[command(after_help = "\
Transports:
  towards the client: stdio (default), or Streamable HTTP with --listen (at http://ADDR/mcp)
  towards the server: a child's stdio (its command after `--`), or Streamable HTTP with --url

Examples:
  failcore proxy -- npx -y @modelcontextprotocol/server-filesystem /data
  failcore proxy --listen 127.0.0.1:8931 -- npx -y @modelcontextprotocol/server-filesystem /data
  MCP_AUTH='Bearer <token>' failcore proxy --url https://mcp.example.com/mcp --header-env 'Authorization=MCP_AUTH'
  failcore proxy --listen 127.0.0.1:8931 --listen-token-env PROXY_TOKEN --url https://mcp.example.com/mcp")]
pub struct Args {
    /// The policy file for the proxied tools (TOML; JSON when it ends in `.json`). Its `[proxy]` table may
    /// also set `store`, `resume`, `offline`, `run_key`, `timeout_seconds`, `durability`, `on_in_flight`,
    /// `vault` and `redact_key_file`, for clients that start the proxy with a bare environment.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Resume an earlier run (`last` or a run id): calls it recorded are answered from its trace.
    #[arg(long, value_name = "RUN", conflicts_with = "offline")]
    resume: Option<String>,
    /// Replay an earlier run offline: every answer comes from its trace; no server is started.
    #[arg(long, value_name = "RUN")]
    offline: Option<String>,
    /// How long a request may wait for the server before it is answered with an error (seconds).
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<f64>,
    /// Record consecutive sessions into one run: a session with this key continues the key's open run of
    /// the same mode (one session at a time), and leaves it open when it ends.
    #[arg(long, value_name = "KEY")]
    run_key: Option<String>,
    /// How durable each record is before the call returns: buffered, flushed (default) or synced.
    #[arg(long, value_name = "LEVEL")]
    durability: Option<failcore::Durability>,
    /// On resume, a `write` or `exec` call that was in flight when the run died, or that failed with its
    /// effect unknown (the server died, timed out or failed internally after the call was sent): `rerun`
    /// (the default) or `block` (refused, so that a person can check whether it took effect).
    #[arg(long, value_name = "WHAT")]
    on_in_flight: Option<failcore::InFlight>,
    /// Where redacted outputs are sealed (a directory), so that a resume serves them exactly; without one,
    /// such a call reaches the server again.
    #[arg(long, value_name = "DIR")]
    vault: Option<PathBuf>,
    /// The redaction key file (64 hex digits, or 32 raw bytes; created, mode 0600, if missing): kept out of
    /// the store.
    #[arg(long, value_name = "FILE")]
    redact_key_file: Option<PathBuf>,
    /// Serve MCP clients over Streamable HTTP at http://ADDR/mcp instead of stdio (each client session
    /// its own server and run). Only `Host` and `Origin` naming this address, a loopback name or an
    /// --allow-host are served (403 otherwise).
    #[arg(long, value_name = "ADDR")]
    listen: Option<std::net::SocketAddr>,
    /// With --listen: require `Authorization: Bearer <token>`, the token read from this environment
    /// variable.
    #[arg(long, value_name = "NAME", requires = "listen")]
    listen_token_env: Option<String>,
    /// With --listen: a host name also accepted in `Host` and `Origin` (repeatable).
    #[arg(long, value_name = "HOST", requires = "listen")]
    allow_host: Vec<String>,
    /// With --listen: connections at once and how long a client may take.
    #[command(flatten)]
    limits: crate::common::ListenArgs,
    /// A remote MCP server (Streamable HTTP) instead of a command after `--`. With --listen and no
    /// --listen-token-env, the client's `Authorization` is passed on to it (never recorded).
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// With --url: a header for every request, as `Name: value` (repeatable; never recorded).
    #[arg(long, value_name = "'NAME: VALUE'", requires = "url")]
    header: Vec<String>,
    /// With --url: a header whose value is read from an environment variable, as `Name=VAR`
    /// (repeatable): keeps a credential off the command line.
    #[arg(long, value_name = "NAME=VAR", requires = "url")]
    header_env: Vec<String>,
    /// With --url: a PEM file of CAs to trust for the server, beside the platform's roots (which
    /// SSL_CERT_FILE and SSL_CERT_DIR replace). HTTPS_PROXY, HTTP_PROXY and NO_PROXY apply.
    #[arg(long, value_name = "FILE", requires = "url")]
    upstream_ca: Vec<PathBuf>,
    /// End the open run of the run key (--run-key, `run_key` in the policy file's [proxy] table, or
    /// FAILCORE_RUN_KEY): write its run_end and exit; no server is started.
    #[arg(long)]
    end_run: bool,
    /// The MCP server to run, after `--`: its command and arguments (not needed with --offline).
    #[arg(last = true, value_name = "SERVER")]
    command: Vec<String>,
}

pub fn run(store: Option<&str>, args: Args) -> Result<ExitCode> {
    let ending = args.end_run;
    let listen = args.listen;
    let options = options(store, args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Config(format!("cannot start the async runtime: {e}")))?;
    let outcome = runtime.block_on(async move {
        if let (Some(addr), false) = (listen, ending) {
            return failcore::mcp_proxy::listen(options, addr, |local| {
                eprintln!("failcore proxy: listening on http://{local}/mcp");
            })
            .await;
        }
        if !ending {
            return failcore::mcp_proxy::run(options).await;
        }
        // Not an MCP session: errors go to the terminal.
        let summary = failcore::mcp_proxy::end_run(options).await?;
        println!(
            "run {} ended: {} steps ({} ok, {} replayed, {} failed, {} blocked)",
            summary.run,
            summary.steps,
            summary.counts.ok,
            summary.counts.replayed,
            summary.counts.failed,
            summary.counts.blocked
        );
        Ok(ExitCode::SUCCESS)
    });
    // A read of stdin may still be blocked in its thread (after a signal): do not wait for it.
    runtime.shutdown_background();
    outcome
}

fn options(store: Option<&str>, args: Args) -> Result<Options> {
    let mut options = Options::default()
        .server(args.command)
        .on_diagnostic(|line| eprintln!("failcore proxy: {line}"));
    options.url = args.url;
    options.upstream_ca = args.upstream_ca;
    options.allowed_hosts = args.allow_host;
    options.listen_limits = args.limits.limits();
    for header in &args.header {
        let Some((name, value)) = header.split_once(':') else {
            return Err(Error::Config(format!(
                "--header {header:?}: give it as `Name: value`"
            )));
        };
        options = options.header(name.trim(), value.trim());
    }
    for header in &args.header_env {
        let Some((name, var)) = header.split_once('=') else {
            return Err(Error::Config(format!(
                "--header-env {header:?}: give it as `Name=VARIABLE`"
            )));
        };
        let value = std::env::var(var.trim())
            .ok()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                Error::Config(format!(
                    "--header-env {header:?}: the environment variable {} is not set",
                    var.trim()
                ))
            })?;
        options = options.header(name.trim(), value);
    }
    if let Some(var) = &args.listen_token_env {
        let token = std::env::var(var)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| {
                Error::Config(format!(
                    "--listen-token-env {var}: the environment variable is not set"
                ))
            })?;
        options = options.listen_token(token.trim());
    }
    options.store = store.map(str::to_owned);
    options.policy = args.policy;
    options.timeout_seconds = args.timeout;
    options.run_key = args.run_key;
    options.durability = args.durability;
    options.on_in_flight = args.on_in_flight;
    options.vault = args.vault;
    options.redact_key_file = args.redact_key_file;
    if let Some(run) = args.resume {
        options = options.resume(run);
    } else if let Some(run) = args.offline {
        options = options.offline(run);
    }
    Ok(options)
}
