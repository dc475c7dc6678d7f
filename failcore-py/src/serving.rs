//! The proxies served in process for sessions (the LLM proxy of [`crate::llm`], the MCP proxies of
//! [`crate::mcp`]): each runs on the module's runtime until its session finishes, and is stopped before
//! the run's `run_end` is written, so that no call through it is in progress then.

use crate::{block_here, runtime};
use failcore::Error;
use std::future::Future;
use std::sync::Mutex;

/// A proxy being served for a run.
pub(crate) struct Serving {
    pub(crate) run_id: String,
    /// Whether the run is the process default session's.
    pub(crate) default: bool,
    /// What it is (`LLM proxy`, `MCP proxy`).
    kind: &'static str,
    /// What it relays to, as the caller names it (`None`: offline, nothing).
    key: Option<String>,
    url: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

static SERVING: Mutex<Vec<Serving>> = Mutex::new(Vec::new());

fn serving() -> std::sync::MutexGuard<'static, Vec<Serving>> {
    SERVING.lock().unwrap_or_else(|e| e.into_inner())
}

/// A proxy started: its URL, and its task, which ends once the sender is used (or dropped).
pub(crate) struct Started {
    pub(crate) url: String,
    pub(crate) stop: tokio::sync::oneshot::Sender<()>,
    pub(crate) task: tokio::task::JoinHandle<()>,
}

impl Started {
    /// Starts serving at `url` on the module's runtime: `serve` is given the future that completes when
    /// the proxy is to stop.
    pub(crate) fn spawn<F>(url: String, serve: impl FnOnce(Stopped) -> F) -> Started
    where
        F: Future + Send + 'static,
    {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let stopped: Stopped = Box::pin(async move {
            let _ = stopped.await;
        });
        let served = serve(stopped);
        let task = runtime().spawn(async move {
            served.await;
        });
        Started { url, stop, task }
    }
}

/// The future that completes when a proxy is to stop.
pub(crate) type Stopped = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// The URL of the `kind` proxy run `run_id` serves for `key`, started with `start` when there is none.
/// `one_per_run`: a run has at most one proxy of this kind, and asking it for another `key` is an error;
/// otherwise each `key` gets its own.
pub(crate) fn serve_once(
    (run_id, default): (&str, bool),
    kind: &'static str,
    key: Option<String>,
    one_per_run: bool,
    start: impl FnOnce() -> Result<Started, Error>,
) -> Result<String, Error> {
    let mut all = serving();
    let same = |s: &&Serving| s.run_id == run_id && s.kind == kind;
    if let Some(s) = all.iter().find(|s| same(s) && s.key == key) {
        return Ok(s.url.clone());
    }
    if let Some(s) = all.iter().find(same).filter(|_| one_per_run) {
        return Err(Error::Config(format!(
            "run {} already serves an {kind} at {} for {}; one run has one",
            s.run_id,
            s.url,
            s.key.as_deref().unwrap_or("none (offline)")
        )));
    }
    let Started { url, stop, task } = start()?;
    all.push(Serving {
        run_id: run_id.to_owned(),
        default,
        kind,
        key,
        url: url.clone(),
        stop,
        task,
    });
    Ok(url)
}

/// Stops the proxies `which` selects and waits until they no longer serve.
pub(crate) fn stop(which: impl Fn(&Serving) -> bool) {
    let stopping: Vec<Serving> = {
        let mut all = serving();
        let (chosen, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut *all)
            .into_iter()
            .partition(|s| which(s));
        *all = kept;
        chosen
    };
    for s in stopping {
        let _ = s.stop.send(());
        let _ = block_here(s.task);
    }
}
