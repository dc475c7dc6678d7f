//! What the commands share: opening the store, naming runs, messages, durations, JSON.

use failcore::store::{ReadError, StoreError, TraceStore};
use std::sync::Arc;

pub type Result<T> = std::result::Result<T, failcore::Error>;

/// The store named by `--store`, else `$FAILCORE_STORE`, else `$FAILCORE_DIR`, else `.failcore`.
pub fn open_store(spec: Option<&str>) -> Result<Arc<dyn TraceStore>> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let spec = spec
        .map(str::to_owned)
        .or_else(|| env("FAILCORE_STORE"))
        .or_else(|| env("FAILCORE_DIR"));
    failcore::store_from_spec(spec.as_deref().unwrap_or(".failcore"))
}

/// Like [`open_store`], for commands that only read: a store that does not exist is an error, not an
/// empty list of runs.
pub fn open_existing(spec: Option<&str>) -> Result<Arc<dyn TraceStore>> {
    let store = open_store(spec)?;
    let location = store.location();
    let path = location
        .strip_prefix("jsonl:")
        .or_else(|| location.strip_prefix("sqlite:"));
    if let Some(path) = path {
        if !std::path::Path::new(path).exists() {
            return Err(failcore::Error::Config(format!(
                "there is no trace store at {path}: name one with --store, or set FAILCORE_STORE or FAILCORE_DIR"
            )));
        }
    }
    Ok(store)
}

/// The run named by `spec` (an id, a unique prefix, or `last`), with an error that helps: an
/// ambiguous prefix lists the runs it matches.
pub fn resolve(store: &dyn TraceStore, spec: &str) -> Result<String> {
    let runs = store.runs()?;
    if spec == "last" {
        return runs.last().cloned().ok_or_else(|| {
            failcore::Error::Config(format!("there are no runs in {}", store.location()))
        });
    }
    if runs.iter().any(|r| r == spec) {
        return Ok(spec.to_owned());
    }
    let matching: Vec<&String> = runs.iter().filter(|r| r.starts_with(spec)).collect();
    match matching.as_slice() {
        [one] if !spec.is_empty() => Ok((*one).clone()),
        [] => Err(failcore::Error::Config(format!(
            "no run {} in {}: `failcore list` shows the runs there",
            crate::term::safe(spec),
            store.location()
        ))),
        many => {
            const SHOWN: usize = 10;
            let mut names: Vec<&str> = many.iter().rev().take(SHOWN).map(|r| r.as_str()).collect();
            if many.len() > SHOWN {
                names.push("...");
            }
            Err(failcore::Error::Config(format!(
                "{} matches {} runs: {}; give more of the id",
                crate::term::safe(spec),
                many.len(),
                names.join(", ")
            )))
        }
    }
}

/// An error as one line for a person: what went wrong and where, without the library's category
/// prefixes and without saying the same thing twice.
pub fn message(e: &failcore::Error) -> String {
    match e {
        failcore::Error::Store(s) => store_message(s),
        failcore::Error::Config(m) => m.clone(),
        failcore::Error::Corrupt { file, line, reason } => corrupt_message(file, *line, reason),
        other => other.to_string(),
    }
}

fn store_message(e: &StoreError) -> String {
    match e {
        StoreError::Io { target, source } => format!("cannot read or write {target}: {source}"),
        StoreError::NotFound { run, store } => {
            format!("no run {run} in {store}: `failcore list` shows the runs there")
        }
        StoreError::Empty { store } => format!("there are no runs in {store}"),
        other => other.to_string(),
    }
}

/// A read error in plain words; a file whose first line is not a record is "not a trace".
pub fn read_message(e: &ReadError) -> String {
    match e {
        ReadError::Corrupt { file, line, reason } => corrupt_message(file, *line, reason),
        ReadError::Store(s) => store_message(s),
        other => other.to_string(),
    }
}

/// A decoding error's reason; serde_json's positions count within the one line, so only the
/// column is kept.
pub fn json_reason(reason: &str) -> String {
    match reason.rfind(" at line 1 column ") {
        Some(i) => format!("{} at column {}", &reason[..i], &reason[i + 18..]),
        None => reason.to_owned(),
    }
}

fn corrupt_message(file: &str, line: u64, reason: &str) -> String {
    let reason = json_reason(reason);
    if line == 1 {
        format!("{file} is not a FailCore trace (line 1 is not a trace record: {reason})")
    } else {
        format!("{file}: line {line} is corrupt: {reason}")
    }
}

/// A duration in ns, shown with a unit that keeps three significant figures.
pub fn duration(ns: u64) -> String {
    let ns = ns as f64;
    if ns < 1e3 {
        format!("{ns:.0} ns")
    } else if ns < 1e6 {
        format!("{:.1} µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.1} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

/// Milliseconds between two RFC 3339 timestamps, when both parse.
pub fn between_ns(from: &str, to: &str) -> Option<u64> {
    let a = failcore::store::time::parse_rfc3339(from)?;
    let b = failcore::store::time::parse_rfc3339(to)?;
    b.duration_since(a).ok().map(|d| d.as_nanos() as u64)
}

/// Prints one JSON value on one line.
pub fn print_json(v: &serde_json::Value) {
    println!("{}", serde_json::to_string(v).unwrap_or_default());
}

/// The version of every command's `--json` output (docs/CLI.md): additions keep it, any change that
/// could break a reader raises it.
pub const JSON_VERSION: u64 = 1;

/// The `schema` field of a command's JSON output: `failcore.<command>/<version>`.
pub fn schema(command: &str) -> String {
    format!("failcore.{command}/{JSON_VERSION}")
}

/// Makes a closed stdout (`failcore show | head`) end the command quietly instead of with a panic
/// message, as other command-line tools do.
pub fn quiet_on_closed_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.starts_with("failed printing to stdout") {
            std::process::exit(141);
        }
        default(info);
    }));
}

/// A proxy as a recorder of runs: which of a store's runs are its own, for `--resume` and `--offline`.
pub struct Recorder<'a> {
    /// The name its runs carry in `versions.recorder` (`llm-proxy`, `mcp-proxy`).
    pub name: &'a str,
    /// The MCP server it proxies (`mcp_server_id`), when it knows it.
    pub server: Option<&'a str>,
    /// Its run key, when it has one: its `last` is the newest run with the same key.
    pub run_key: Option<&'a str>,
}

/// The key of the proxied MCP server's identity (a hash of its command line) in a run_start's `versions`.
pub const MCP_SERVER_ID: &str = "mcp_server_id";

/// How a recorder is named in messages.
pub fn recorder_label(name: Option<&str>) -> String {
    match name {
        Some("llm-proxy") => "the LLM proxy (`failcore llm-proxy`)".into(),
        Some("mcp-proxy") => "the MCP proxy (`failcore proxy`)".into(),
        Some(other) => format!("`{}`", crate::term::safe(other)),
        None => "an application's own session".into(),
    }
}

impl Recorder<'_> {
    fn server_of(start: &failcore::store::RunStart) -> Option<&str> {
        start.versions.get(MCP_SERVER_ID).and_then(|v| v.as_str())
    }

    /// Whether a run that `start` begins is one of this recorder's (a run recorded before runs named
    /// their server is taken to be of any server).
    fn owns(&self, start: &failcore::store::RunStart) -> bool {
        failcore::recorder_of(start) == Some(self.name)
            && match (self.server, Self::server_of(start)) {
                (Some(mine), Some(theirs)) => mine == theirs,
                _ => true,
            }
    }

    /// The run named by `spec` for this recorder: `last` is the newest run it recorded (with its run key,
    /// if it has one), never a run of another recorder; an id (or prefix) of a run that another recorder
    /// made, or that the MCP proxy made for another server, is refused.
    pub fn resolve(&self, store: &dyn TraceStore, spec: &str) -> Result<String> {
        if spec == "last" {
            for run in store.runs()?.into_iter().rev() {
                let Some(start) = failcore::run_start_of(store, &run) else {
                    continue;
                };
                if self.owns(&start)
                    && self
                        .run_key
                        .is_none_or(|k| failcore::run_key_of(&start) == Some(k))
                {
                    return Ok(run);
                }
            }
            return Err(failcore::Error::Config(format!(
                "`last`: no run of {}{}{} in {} (runs of other recorders are never picked; `failcore \
                 list` shows which recorder made each run: name the run by its id)",
                recorder_label(Some(self.name)),
                if self.server.is_some() {
                    " for this MCP server"
                } else {
                    ""
                },
                self.run_key
                    .map(|k| format!(" with the run key {:?}", crate::term::safe(k)))
                    .unwrap_or_default(),
                store.location()
            )));
        }
        let run = resolve(store, spec)?;
        let Some(start) = failcore::run_start_of(store, &run) else {
            return Ok(run);
        };
        let made_by = failcore::recorder_of(&start);
        if made_by.is_some_and(|r| r != self.name) {
            return Err(failcore::Error::Config(format!(
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
                .get("mcp_server_program")
                .and_then(|v| v.as_str())
                .unwrap_or("another server");
            return Err(failcore::Error::Config(format!(
                "run {run} was recorded by the MCP proxy for another MCP server ({}), not the one \
                 given after `--`: resume it with that server's command",
                crate::term::safe(program)
            )));
        }
        Ok(run)
    }
}
