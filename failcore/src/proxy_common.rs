//! What the two proxies share (features `llm-proxy` and `mcp-proxy`; with `mcp`, the HTTP listener and the
//! signals serve FailCore's own MCP server too): where their runs go, which earlier
//! run `--resume` and `--offline` name, how they end on a signal, and how they notice that the process that
//! started them has died.
//!
//! The proxies themselves are sibling modules: `failcore::llm_proxy` (model calls over HTTP) and
//! `failcore::mcp_proxy` (tool calls of an MCP server). Each keeps what is its own protocol's; what any
//! proxy needs around a [`Session`](crate::Session) is here, public so that a program embedding a proxy
//! behaves as `failcore proxy` and `failcore llm-proxy` do.
//!
//! Configuration precedence is the same everywhere: a value given explicitly (a flag, an option) wins,
//! then the policy file's `[proxy]` table (MCP proxy), then the environment (`FAILCORE_STORE`,
//! `FAILCORE_DIR`, `FAILCORE_RESUME`, `FAILCORE_OFFLINE`, `FAILCORE_RUN_KEY`), then the defaults.

/// HTTP: the bounded listener and the upstream client that both proxies use.
pub(crate) mod http;

use crate::store::{RunStart, TraceStore};
use crate::Error;
use std::borrow::Cow;
use std::fmt::Write as _;
use std::time::Duration;

/// The bounds of a listener for clients (the MCP proxy's `--listen`, FailCore's MCP server over HTTP): how
/// many connections it serves at once and how long a client may take, so that slow or idle clients cannot
/// exhaust it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenLimits {
    /// Client connections served at once; more wait in the kernel's backlog. `None`: half the
    /// open-file limit, within 16 to 4096.
    pub max_connections: Option<usize>,
    /// How long a client may take to send a request's headers (and a kept-alive connection may wait for
    /// its next request) before it is disconnected (30 s).
    pub header_timeout: Duration,
    /// How long a client may take to send a request's body; then it gets a 408 (60 s).
    pub body_timeout: Duration,
    /// How long a connection with no request in progress stays open with nothing sent or received
    /// (120 s).
    pub idle_timeout: Duration,
}

impl Default for ListenLimits {
    fn default() -> Self {
        ListenLimits {
            max_connections: None,
            header_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(120),
        }
    }
}

impl ListenLimits {
    /// The accept loop's limits.
    pub(crate) fn http(&self) -> http::Limits {
        http::Limits {
            max_connections: self
                .max_connections
                .unwrap_or_else(http::default_max_connections)
                .max(1),
            header_timeout: self.header_timeout,
            idle_timeout: self.idle_timeout,
        }
    }
}

/// The recorder name (`versions.recorder`) of the LLM proxy's runs.
pub const LLM_PROXY_RECORDER: &str = "llm-proxy";
/// The recorder name (`versions.recorder`) of the MCP proxy's runs.
pub const MCP_PROXY_RECORDER: &str = "mcp-proxy";
/// The key of the proxied MCP server's identity (a hash of its command line) in a run_start's `versions`.
pub const MCP_SERVER_ID: &str = "mcp_server_id";
/// The key of the proxied MCP server's program name in a run_start's `versions`.
pub const MCP_SERVER_PROGRAM: &str = "mcp_server_program";

/// An environment variable, when it is set and not empty.
pub(crate) fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The store spec to open: `explicit` (a flag), else `file` (a policy file's `[proxy] store`), else
/// `$FAILCORE_STORE`, else `$FAILCORE_DIR`, else `.failcore`.
pub fn store_spec(explicit: Option<&str>, file: Option<&str>) -> String {
    explicit
        .or(file)
        .map(str::to_owned)
        .or_else(|| env("FAILCORE_STORE"))
        .or_else(|| env("FAILCORE_DIR"))
        .unwrap_or_else(|| ".failcore".to_owned())
}

/// `s` with every control character written out as an escape (`\n`, `\t`, `\u{1b}`), and the
/// bidirectional overrides too, so that text from a trace or a peer shows as text on one line and never
/// acts on a terminal.
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(acts_on_terminal) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if acts_on_terminal(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Whether `c` would act on a terminal instead of showing: C0 and C1 controls, DEL, and the
/// bidirectional overrides and isolates that reorder what a reader sees.
fn acts_on_terminal(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{061c}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// The run named by `spec` (an id, a unique prefix, or `last`), with an error that helps: an ambiguous
/// prefix lists the runs it matches.
pub fn resolve_run(store: &dyn TraceStore, spec: &str) -> Result<String, Error> {
    let runs = store.runs()?;
    if spec == "last" {
        return runs
            .last()
            .cloned()
            .ok_or_else(|| Error::Config(format!("there are no runs in {}", store.location())));
    }
    if runs.iter().any(|r| r == spec) {
        return Ok(spec.to_owned());
    }
    let matching: Vec<&String> = runs.iter().filter(|r| r.starts_with(spec)).collect();
    match matching.as_slice() {
        [one] if !spec.is_empty() => Ok((*one).clone()),
        [] => Err(Error::Config(format!(
            "no run {} in {}: `failcore list` shows the runs there",
            printable(spec),
            store.location()
        ))),
        many => {
            const SHOWN: usize = 10;
            let mut names: Vec<&str> = many.iter().rev().take(SHOWN).map(|r| r.as_str()).collect();
            if many.len() > SHOWN {
                names.push("...");
            }
            Err(Error::Config(format!(
                "{} matches {} runs: {}; give more of the id",
                printable(spec),
                many.len(),
                names.join(", ")
            )))
        }
    }
}

/// How a recorder is named in messages.
pub fn recorder_label(name: Option<&str>) -> String {
    match name {
        Some(LLM_PROXY_RECORDER) => "the LLM proxy (`failcore llm-proxy`)".into(),
        Some(MCP_PROXY_RECORDER) => "the MCP proxy (`failcore proxy`)".into(),
        Some(other) => format!("`{}`", printable(other)),
        None => "an application's own session".into(),
    }
}

/// A proxy as a recorder of runs: which of a store's runs are its own, for `--resume` and `--offline`.
#[derive(Debug, Clone, Copy)]
pub struct Recorder<'a> {
    /// The name its runs carry in `versions.recorder` ([`LLM_PROXY_RECORDER`], [`MCP_PROXY_RECORDER`]).
    pub name: &'a str,
    /// The MCP server it proxies ([`MCP_SERVER_ID`]), when it knows it.
    pub server: Option<&'a str>,
    /// Its run key, when it has one: its `last` is the newest run with the same key.
    pub run_key: Option<&'a str>,
}

impl Recorder<'_> {
    fn server_of(start: &RunStart) -> Option<&str> {
        start.versions.get(MCP_SERVER_ID).and_then(|v| v.as_str())
    }

    /// Whether a run that `start` begins is one of this recorder's (a run recorded before runs named
    /// their server is taken to be of any server).
    fn owns(&self, start: &RunStart) -> bool {
        crate::recorder_of(start) == Some(self.name)
            && match (self.server, Self::server_of(start)) {
                (Some(mine), Some(theirs)) => mine == theirs,
                _ => true,
            }
    }

    /// The run named by `spec` for this recorder: `last` is the newest run it recorded (with its run key,
    /// if it has one), never a run of another recorder; an id (or prefix) of a run that another recorder
    /// made, or that the MCP proxy made for another server, is refused.
    pub fn resolve(&self, store: &dyn TraceStore, spec: &str) -> Result<String, Error> {
        if spec == "last" {
            for run in store.runs()?.into_iter().rev() {
                let Some(start) = crate::run_start_of(store, &run) else {
                    continue;
                };
                if self.owns(&start)
                    && self
                        .run_key
                        .is_none_or(|k| crate::run_key_of(&start) == Some(k))
                {
                    return Ok(run);
                }
            }
            return Err(Error::Config(format!(
                "`last`: no run of {}{}{} in {} (runs of other recorders are never picked; `failcore \
                 list` shows which recorder made each run: name the run by its id)",
                recorder_label(Some(self.name)),
                if self.server.is_some() {
                    " for this MCP server"
                } else {
                    ""
                },
                self.run_key
                    .map(|k| format!(" with the run key {:?}", printable(k)))
                    .unwrap_or_default(),
                store.location()
            )));
        }
        let run = resolve_run(store, spec)?;
        let Some(start) = crate::run_start_of(store, &run) else {
            return Ok(run);
        };
        let made_by = crate::recorder_of(&start);
        if made_by.is_some_and(|r| r != self.name) {
            return Err(Error::Config(format!(
                "run {run} was recorded by {}, not by {}: its calls are not this proxy's to serve. \
                 Resume it with the recorder that made it, or name a run of this one (`failcore list` \
                 shows which recorder made each run)",
                recorder_label(made_by),
                recorder_label(Some(self.name)),
            )));
        }
        if made_by.is_some() && !self.owns(&start) {
            let program = start
                .versions
                .get(MCP_SERVER_PROGRAM)
                .and_then(|v| v.as_str())
                .unwrap_or("another server");
            return Err(Error::Config(format!(
                "run {run} was recorded by the MCP proxy for another MCP server ({}), not the one \
                 given after `--`: resume it with that server's command",
                printable(program)
            )));
        }
        Ok(run)
    }
}

/// SIGTERM and SIGINT (Ctrl-C elsewhere than on Unix), the signals that end a proxy cleanly.
pub struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    /// Starts listening for the signals (within a Tokio runtime).
    pub fn new() -> Result<Signals, Error> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let io = |e: std::io::Error| Error::Config(format!("cannot handle signals: {e}"));
            Ok(Signals {
                term: signal(SignalKind::terminate()).map_err(io)?,
                int: signal(SignalKind::interrupt()).map_err(io)?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    /// The next signal's number (15 for SIGTERM, 2 for SIGINT).
    pub async fn recv(&mut self) -> u8 {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.term.recv() => 15,
                _ = self.int.recv() => 2,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            2
        }
    }
}

/// Completes at the first SIGTERM or SIGINT (Ctrl-C): the `shutdown` future to give
/// `failcore::llm_proxy::LlmProxy::serve`. Should SIGTERM not be available, Ctrl-C alone.
pub async fn shutdown_signal() {
    match Signals::new() {
        Ok(mut signals) => {
            signals.recv().await;
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// The id of the process that started this one, on Unix, unless it is already init (the process was
/// re-parented, or started by init).
pub fn parent_id() -> Option<u32> {
    #[cfg(unix)]
    {
        Some(std::os::unix::process::parent_id()).filter(|p| *p > 1)
    }
    #[cfg(not(unix))]
    None
}

/// Whether the process [`parent_id`] gave has died since (this process was handed to another parent).
/// The kernel closes a dying process's pipes before it re-parents its children, so a proxy that sees its
/// input close asks this, which looks a little while (about 300 ms) before it answers no.
pub async fn parent_died(parent: Option<u32>) -> bool {
    let Some(parent) = parent else { return false };
    for _ in 0..10 {
        if parent_id() != Some(parent) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_text_never_acts_on_a_terminal() {
        assert_eq!(printable("plain"), "plain");
        assert_eq!(printable("a\nb\t\u{1b}[2J"), "a\\nb\\t\\u{1b}[2J");
        assert!(!printable("\u{7}\u{8}\u{202e}x\u{2066}")
            .chars()
            .any(acts_on_terminal));
    }

    #[test]
    fn store_spec_prefers_the_explicit_then_the_file() {
        assert_eq!(store_spec(Some("a"), Some("b")), "a");
        assert_eq!(store_spec(None, Some("b")), "b");
    }
}
