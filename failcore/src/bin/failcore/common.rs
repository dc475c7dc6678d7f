//! What the commands share: opening the store, colour, durations.

use failcore::store::TraceStore;
use std::io::IsTerminal;
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

/// Whether to colour stdout: a terminal, and no `NO_COLOR`.
pub fn colour() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

#[derive(Clone, Copy)]
pub struct Paint(pub bool);

impl Paint {
    pub fn paint(self, code: &str, text: &str) -> String {
        if self.0 {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
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
