//! The configuration of a session: [`Options`] (the command's flags), then the policy file's `[proxy]`
//! table, then the environment; and ending a keyed run.

use super::http_upstream::Remote;
use super::{Options, Replay, DEFAULT_TIMEOUT, RECORDER};
use crate::proxy_common::{env, store_spec, Recorder, MCP_SERVER_ID, MCP_SERVER_PROGRAM};
use crate::store::{Mode, RunReader, TraceStore};
use crate::{Error, RunSummary, Session, SessionBuilder};
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Everything that configures a proxy session, after flags, the policy file and the environment.
pub(super) struct Config {
    pub(super) builder: SessionBuilder,
    pub(super) store: Arc<dyn TraceStore>,
    /// The mode and the resolved run being replayed, if any.
    pub(super) source: Option<(Mode, String)>,
    pub(super) timeout: Duration,
    pub(super) command: Vec<String>,
    /// Sessions with a run key leave their run open for the next one.
    pub(super) keyed: bool,
    pub(super) run_key: Option<String>,
    /// The remote server of `--url`, instead of a command.
    pub(super) remote: Option<Arc<Remote>>,
}

/// Resolves `options` (flags, in the command), then the policy file, then the environment. `ending`: for
/// [`end_run`], which needs no server.
pub(super) fn configure(options: Options, ending: bool) -> Result<Config, Error> {
    let args = options;
    let file = match &args.policy {
        Some(path) => crate::policy::proxy_settings(path)?,
        None => Default::default(),
    };
    let store = crate::store_from_spec(&store_spec(args.store.as_deref(), file.store.as_deref()))?;
    let mut builder = Session::from_env()?.store(store.clone());
    // Flags, then the policy file, then the environment (already in `builder`).
    let requested = match &args.replay {
        Some(Replay::Resume(run)) => Some((Mode::Resume, run.clone())),
        Some(Replay::Offline(run)) => Some((Mode::Offline, run.clone())),
        None => match (&file.resume, &file.offline) {
            (Some(run), _) => Some((Mode::Resume, run.clone())),
            (None, Some(run)) => Some((Mode::Offline, run.clone())),
            (None, None) => match (env("FAILCORE_RESUME"), env("FAILCORE_OFFLINE")) {
                (Some(run), _) => Some((Mode::Resume, run)),
                (None, Some(run)) => Some((Mode::Offline, run)),
                (None, None) => None,
            },
        },
    };
    let run_key = args
        .run_key
        .clone()
        .or(file.run_key.clone())
        .or_else(|| env("FAILCORE_RUN_KEY"));
    let Server {
        timeout,
        remote,
        id: server,
    } = server(&args, file.timeout_seconds)?;
    let me = Recorder {
        name: RECORDER,
        server: server.as_deref(),
        run_key: run_key.as_deref(),
    };
    // `last` is resolved now, to the newest run of this proxy for this server: the run the proxy opens
    // later must not become its own source, nor a run of another recorder (the LLM proxy's) its source.
    let source = match requested {
        Some((mode, run)) => Some((mode, me.resolve(store.as_ref(), &run)?)),
        None => None,
    };
    builder = builder.recorder(RECORDER);
    if let Some(id) = &server {
        let program = match &remote {
            Some(r) => r.url.host_str().unwrap_or_default().to_owned(),
            None => std::path::Path::new(&args.command[0])
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        };
        builder = builder
            .run_fact(MCP_SERVER_ID, json!(id))
            .run_fact(MCP_SERVER_PROGRAM, json!(program));
    }
    match &source {
        Some((Mode::Offline, run)) => builder = builder.offline(run.clone()),
        Some((_, run)) => builder = builder.resume(run.clone()),
        None => {}
    }
    if let Some(path) = &args.policy {
        let sandbox = env("FAILCORE_SANDBOX").map(PathBuf::from);
        crate::policy::check_policy_file(path, sandbox.as_ref())?;
        // The same policy file as every session: named policies, `guard` for every call, `[tools]` to
        // attach a policy to a proxied tool by name.
        builder = builder.policy_file(path);
    }
    if let Some(key) = &run_key {
        builder = builder.run_key(key.clone());
    }
    if let Some(d) = args.durability.or(file.durability) {
        builder = builder.durability(d);
    }
    if let Some(what) = args.on_in_flight.or(file.on_in_flight) {
        builder = builder.on_in_flight(what);
    }
    if let Some(dir) = args.vault.or(file.vault) {
        builder = builder.vault(dir);
    }
    if let Some(key) = args.redact_key_file.or(file.redact_key_file) {
        builder = builder.redact_key_file(key);
    }
    let offline = matches!(source, Some((Mode::Offline, _)));
    if args.command.is_empty() && remote.is_none() && !offline && !ending {
        return Err(Error::Config(
            "no MCP server: give its command after `--`, or its --url (only --offline runs without \
             one)"
                .into(),
        ));
    }
    Ok(Config {
        builder,
        store,
        source,
        timeout,
        command: args.command,
        keyed: run_key.is_some(),
        run_key,
        remote,
    })
}

/// The server proxied, as [`Options`] name it.
pub(super) struct Server {
    pub(super) timeout: Duration,
    /// The remote server of `--url`, instead of a command.
    pub(super) remote: Option<Arc<Remote>>,
    /// Its identity: a hash of its command line or its URL (its arguments may hold secrets), if given.
    pub(super) id: Option<String>,
}

/// The server of `args` (`timeout_seconds` the policy file's, under the flag's): a command or a URL, not
/// both, and the request timeout.
pub(super) fn server(args: &Options, timeout_seconds: Option<f64>) -> Result<Server, Error> {
    if !args.command.is_empty() && args.url.is_some() {
        return Err(Error::Config(
            "give either --url or a server command after `--`, not both".into(),
        ));
    }
    let timeout = args
        .timeout_seconds
        .or(timeout_seconds)
        .map(|s| {
            Duration::try_from_secs_f64(s)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    Error::Config(format!("--timeout {s}: give a number of seconds > 0"))
                })
        })
        .transpose()?
        .unwrap_or(DEFAULT_TIMEOUT);
    let remote = match &args.url {
        Some(url) => Some(Arc::new(Remote::new(
            url,
            &args.headers,
            &args.upstream_ca,
            timeout,
        )?)),
        None => None,
    };
    // The server proxied, known by its command line or its URL (kept as a hash: its arguments may hold
    // secrets).
    let identity: Vec<String> = match &remote {
        Some(r) => vec!["url".into(), r.identity()],
        None => args.command.clone(),
    };
    let id = (!identity.is_empty()).then(|| {
        let mut h = blake3::Hasher::new();
        for part in &identity {
            h.update(part.as_bytes());
            h.update(b"\0");
        }
        h.finalize().to_hex()[..32].to_owned()
    });
    Ok(Server {
        timeout,
        remote,
        id,
    })
}

/// Writes the run_end of the key's open run.
pub(super) async fn end_run(config: Config) -> Result<RunSummary, Error> {
    let Some(key) = config.run_key.clone() else {
        return Err(Error::Config(
            "ending a run needs its run key: --run-key, `run_key` in the policy file's [proxy] \
             table, or FAILCORE_RUN_KEY"
                .into(),
        ));
    };
    let found = crate::find_run_by_key_of(config.store.as_ref(), &key, Some(RECORDER))?
        .ok_or_else(|| Error::Config(format!("no run has the run key {key:?}")))?;
    let report = crate::store::verify(RunReader::open(config.store.as_ref(), &found.run)?);
    if report.complete {
        return Err(Error::Config(format!(
            "run {} of the run key {key:?} has ended already",
            found.run
        )));
    }
    let builder = match (found.mode, found.resumed_from) {
        (Mode::Resume, Some(from)) => config.builder.resume(from),
        (Mode::Offline, Some(from)) => config.builder.offline(from),
        (_, _) => config.builder,
    };
    let session = tokio::task::spawn_blocking(move || builder.open())
        .await
        .map_err(|e| Error::Config(format!("opening the run failed: {e}")))??;
    session.finish().await
}
