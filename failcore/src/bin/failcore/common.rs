//! What the commands share: opening the store, naming runs, messages, durations, JSON.

use failcore::store::{ReadError, StoreError, TraceStore};
use std::sync::Arc;

pub type Result<T> = std::result::Result<T, failcore::Error>;

/// The store named by `--store`, else `$FAILCORE_STORE`, else `$FAILCORE_DIR`, else `.failcore`.
pub fn open_store(spec: Option<&str>) -> Result<Arc<dyn TraceStore>> {
    failcore::store_from_spec(&failcore::proxy_common::store_spec(spec, None))
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
    failcore::proxy_common::resolve_run(store, spec)
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

/// Makes a closed stdout (`failcore show | head`) end the command quietly, as other command-line tools do:
/// the next write kills it with SIGPIPE (the signal's default action, which Rust programs start with
/// ignored) instead of failing, so nothing is printed about it. Only for commands that print: the proxies
/// must see a closed connection as an error on that connection, never die of it.
pub fn end_on_closed_stdout() {
    #[cfg(unix)]
    // SAFETY: called once at start-up, before any other thread exists; SIG_DFL is a valid disposition
    // for SIGPIPE, and no signal handler of this program is replaced.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// How a recorder is named in messages.
pub use failcore::proxy_common::recorder_label;

/// The bounds of a proxy's listener (`--max-connections`, `--header-timeout`, `--body-timeout`,
/// `--idle-timeout`), for `llm-proxy` and `proxy --listen`.
#[derive(clap::Args, Debug)]
pub struct ListenArgs {
    /// Client connections served at once; more wait in the kernel's backlog (default: half the
    /// open-file limit, within 16 to 4096).
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// Seconds a client may take to send a request's headers (also how long a kept-alive connection
    /// may wait for its next request) before it is disconnected.
    #[arg(long, value_name = "SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    header_timeout: u64,
    /// Seconds a client may take to send a request's body; then it gets a 408 and is disconnected.
    #[arg(long, value_name = "SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    body_timeout: u64,
    /// Seconds a client connection with no request in progress stays open with nothing sent or
    /// received.
    #[arg(long, value_name = "SECONDS", default_value_t = 120, value_parser = clap::value_parser!(u64).range(1..))]
    idle_timeout: u64,
}

impl ListenArgs {
    pub fn limits(&self) -> failcore::proxy_common::ListenLimits {
        let seconds = std::time::Duration::from_secs;
        failcore::proxy_common::ListenLimits {
            max_connections: self.max_connections,
            header_timeout: seconds(self.header_timeout),
            body_timeout: seconds(self.body_timeout),
            idle_timeout: seconds(self.idle_timeout),
        }
    }
}
