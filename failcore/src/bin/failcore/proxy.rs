//! `failcore proxy [--policy failcore.toml] -- <server command...>`: puts FailCore between any MCP client
//! and any MCP server over stdio, without changing either. The proxy is `failcore::mcp_proxy`; this is its
//! command line.

use crate::common::Result;
use failcore::mcp_proxy::Options;
use failcore::Error;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// The policy file for the proxied tools (TOML; JSON when it ends in `.json`). Its `[proxy]` table may
    /// also set `store`, `resume`, `offline`, `run_key`, `timeout_seconds`, `durability`, `vault` and
    /// `redact_key_file`, for clients that start the proxy with a bare environment.
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
    /// Where redacted outputs are sealed (a directory), so that a resume serves them exactly; without one,
    /// such a call reaches the server again.
    #[arg(long, value_name = "DIR")]
    vault: Option<PathBuf>,
    /// The redaction key file (64 hex digits, or 32 raw bytes; created, mode 0600, if missing): kept out of
    /// the store.
    #[arg(long, value_name = "FILE")]
    redact_key_file: Option<PathBuf>,
    /// End the open run of --run-key (write its run_end) and exit; no server is started.
    #[arg(long, requires = "run_key")]
    end_run: bool,
    /// The MCP server to run, after `--`: its command and arguments (not needed with --offline).
    #[arg(last = true, value_name = "SERVER")]
    command: Vec<String>,
}

pub fn run(store: Option<&str>, args: Args) -> Result<ExitCode> {
    let ending = args.end_run;
    let options = options(store, args);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Config(format!("cannot start the async runtime: {e}")))?;
    let outcome = runtime.block_on(async move {
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

fn options(store: Option<&str>, args: Args) -> Options {
    let mut options = Options::default()
        .server(args.command)
        .on_diagnostic(|line| eprintln!("failcore proxy: {line}"));
    options.store = store.map(str::to_owned);
    options.policy = args.policy;
    options.timeout_seconds = args.timeout;
    options.run_key = args.run_key;
    options.durability = args.durability;
    options.vault = args.vault;
    options.redact_key_file = args.redact_key_file;
    if let Some(run) = args.resume {
        options = options.resume(run);
    } else if let Some(run) = args.offline {
        options = options.offline(run);
    }
    options
}
