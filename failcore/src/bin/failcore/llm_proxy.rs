//! `failcore llm-proxy --upstream <url>`: a local OpenAI Chat Completions, Responses and Anthropic Messages
//! endpoint whose model calls are steps of a run: recorded, resumed and replayed offline (see
//! docs/AGENTS.md).

use crate::common::Result;
use failcore::llm_proxy::{LlmProxy, Options};
use failcore::model::Models;
use failcore::proxy_common::{shutdown_signal, Recorder, LLM_PROXY_RECORDER as RECORDER};
use failcore::{Error, Session};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// The upstream API's base URL, such as https://api.openai.com/v1 or https://api.anthropic.com/v1
    /// (requests go to <url>/chat/completions, <url>/responses, <url>/messages, <url>/embeddings or
    /// <url>/models[/<id>], as the client called). HTTPS trusts the platform's roots (or SSL_CERT_FILE /
    /// SSL_CERT_DIR, which replace them) and --upstream-ca, and goes through HTTPS_PROXY unless NO_PROXY
    /// names the host; a redirect to another origin is not followed.
    #[arg(long, value_name = "URL", required_unless_present = "offline")]
    upstream: Option<String>,
    /// The address to listen on (port 0: any free port; the address is printed on stdout).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8788")]
    listen: SocketAddr,
    /// The model configuration (TOML): prices, allow-list, token and money budgets, identity exclusions.
    #[arg(long, value_name = "FILE")]
    models: Option<PathBuf>,
    /// A policy file, as for every session (its guards apply to model calls too).
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Resume an earlier run (`last` or a run id): calls it recorded are answered from its trace.
    #[arg(long, value_name = "RUN", conflicts_with = "offline")]
    resume: Option<String>,
    /// Replay an earlier run offline: calls are answered from its trace and never reach the upstream.
    #[arg(long, value_name = "RUN")]
    offline: Option<String>,
    /// A run key: consecutive proxy sessions with it record into one run (one session at a time), and
    /// `last` names the newest run of the LLM proxy with it. Give the MCP proxy the same key to name one
    /// agent's model calls and tool calls together.
    #[arg(long, value_name = "KEY")]
    run_key: Option<String>,
    /// A PEM file of CAs to trust for the upstream (a corporate or private CA), beside the platform's
    /// roots; may be repeated (`upstream_ca` in the model configuration does the same).
    #[arg(long, value_name = "FILE")]
    upstream_ca: Vec<PathBuf>,
    /// The largest reply relayed and recorded, in bytes (a whole reply, or a stream in all); a larger
    /// one fails the call (502, or an error event ending a stream), recorded as failed.
    #[arg(long, value_name = "BYTES", default_value_t = 64 * 1024 * 1024)]
    max_reply_bytes: usize,
    #[command(flatten)]
    limits: crate::common::ListenArgs,
    /// Seconds connecting to the upstream may take (TCP, an HTTPS proxy, TLS); then the call fails (502).
    #[arg(long, value_name = "SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..))]
    connect_timeout: u64,
    /// Seconds to wait for the next bytes of the upstream's reply (a model may think for minutes
    /// before its first token); then the call fails (502), recorded as failed.
    #[arg(long, value_name = "SECONDS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    read_timeout: u64,
}

/// The model configuration in `path` (the default table without one), with the paths of the CAs it
/// names for the upstream (relative to its folder).
pub fn load_models(path: Option<&std::path::Path>) -> Result<(Models, Vec<PathBuf>)> {
    let Some(path) = path else {
        return Ok((Models::new(), Vec::new()));
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::Config(format!(
            "cannot read the model configuration {}: {e}",
            path.display()
        ))
    })?;
    let models = Models::from_toml(&text)?;
    let base = path.parent().unwrap_or(std::path::Path::new(""));
    let cas = models
        .upstream_ca()
        .iter()
        .map(|ca| base.join(ca))
        .collect();
    Ok((models, cas))
}

pub fn run(store: Option<&str>, args: Args) -> Result<ExitCode> {
    let seconds = std::time::Duration::from_secs;
    let mut options = Options::default()
        .max_reply_bytes(args.max_reply_bytes)
        .connect_timeout(seconds(args.connect_timeout))
        .read_timeout(seconds(args.read_timeout));
    options.listen = args.limits.limits();
    let (models, cas) = load_models(args.models.as_deref())?;
    for ca in cas {
        options = options.upstream_ca(ca);
    }
    for ca in &args.upstream_ca {
        options = options.upstream_ca(ca);
    }
    let mut builder = Session::from_env()?
        .guard(models.policy())
        .recorder(RECORDER);
    if let Some(spec) = store {
        builder = builder.store(failcore::store_from_spec(spec)?);
    }
    if let Some(key) = &args.run_key {
        builder = builder.run_key(key.clone());
    }
    if args.resume.is_some() || args.offline.is_some() {
        // `last` is the newest run of this proxy (with its run key, if it has one), never a run of the
        // MCP proxy recording the same agent's tools into the same store; an id of such a run is refused.
        let me = Recorder {
            name: RECORDER,
            server: None,
            run_key: args.run_key.as_deref(),
        };
        let runs = crate::common::open_store(store)?;
        if let Some(run) = &args.resume {
            builder = builder.resume(me.resolve(runs.as_ref(), run)?);
        }
        if let Some(run) = &args.offline {
            builder = builder.offline(me.resolve(runs.as_ref(), run)?);
        }
    }
    if let Some(file) = &args.policy {
        builder = builder.policy_file(file);
    }
    let upstream = if args.offline.is_some() {
        None
    } else {
        args.upstream.clone()
    };
    // One thread: a request's steps hand nothing to another thread (a worker pool would wake one for each
    // hop of a request), and a model call waits on its upstream far longer than the proxy works on it.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Config(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(async move {
        let session = builder.open()?;
        let proxy = match LlmProxy::bind_with(
            args.listen,
            session.clone(),
            models,
            upstream,
            options,
        )
        .await
        {
            Ok(p) => p,
            Err(e) => {
                let _ = session.finish().await;
                return Err(e);
            }
        };
        let addr = proxy.local_addr()?;
        {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "listening on http://{addr} (run {})", session.run_id());
            let _ = out.flush();
        }
        proxy.serve(shutdown_signal()).await;
        session.finish().await?;
        Ok(ExitCode::SUCCESS)
    })
}
