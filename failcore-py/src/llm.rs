//! The LLM proxy served in process: a session's `llm_proxy()` binds `127.0.0.1:0` with that session, so
//! the agent's model calls (through its OpenAI or Anthropic client pointed at the returned base URL) are
//! steps of the same run as its tools: served on resume and offline from the same replay index. The proxy
//! runs on the module's runtime until its session finishes; it is stopped before the run's `run_end`
//! is written, so no model call is in progress then.

use crate::{block_here, cli::llm_proxy::load_models, runtime};
use failcore::llm_proxy::{LlmProxy, Options};
use failcore::model::Models;
use failcore::{Error, Mode, Session};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// A session's model configuration: the table (its guard is the session's) and the CAs it names.
#[derive(Clone, Default)]
pub(crate) struct ModelTable {
    pub(crate) models: Models,
    upstream_ca: Vec<PathBuf>,
}

impl ModelTable {
    /// The table in the TOML file `path` (as `failcore llm-proxy --models`), or the default one.
    pub(crate) fn load(path: Option<&str>) -> Result<ModelTable, Error> {
        let (models, upstream_ca) = load_models(path.map(Path::new))?;
        Ok(ModelTable {
            models,
            upstream_ca,
        })
    }
}

/// A proxy being served for a run.
pub(crate) struct Serving {
    pub(crate) run_id: String,
    /// Whether the run is the process default session's.
    pub(crate) default: bool,
    upstream: Option<String>,
    url: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

static SERVING: Mutex<Vec<Serving>> = Mutex::new(Vec::new());

fn serving() -> std::sync::MutexGuard<'static, Vec<Serving>> {
    SERVING.lock().unwrap_or_else(|e| e.into_inner())
}

/// Serves the LLM proxy for `session` (once: a second call with the same upstream returns the same
/// URL); returns its base URL, `http://127.0.0.1:PORT/v1`. Offline, every call is served from the trace
/// and `upstream` is not used; otherwise it is required.
pub(crate) fn serve(
    session: Session,
    table: ModelTable,
    upstream: Option<String>,
    default: bool,
) -> Result<String, Error> {
    let upstream = match session.mode() {
        Mode::Offline => None,
        Mode::Record | Mode::Resume => Some(upstream.ok_or_else(|| {
            Error::Config(
                "llm_proxy needs upstream= (the API's base URL, such as https://api.openai.com/v1) \
                 unless the session is offline"
                    .into(),
            )
        })?),
    };
    let mut all = serving();
    if let Some(s) = all.iter().find(|s| s.run_id == session.run_id()) {
        if s.upstream != upstream {
            return Err(Error::Config(format!(
                "run {} already serves an LLM proxy at {} for upstream {}; one run has one",
                s.run_id,
                s.url,
                s.upstream.as_deref().unwrap_or("none (offline)")
            )));
        }
        return Ok(s.url.clone());
    }
    let mut options = Options::default();
    for ca in table.upstream_ca {
        options = options.upstream_ca(ca);
    }
    let run_id = session.run_id().to_owned();
    let proxy = block_here(LlmProxy::bind_with(
        ([127, 0, 0, 1], 0).into(),
        session,
        table.models,
        upstream.clone(),
        options,
    ))?;
    let url = format!("http://{}/v1", proxy.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = runtime().spawn(proxy.serve(async move {
        let _ = stopped.await;
    }));
    all.push(Serving {
        run_id,
        default,
        upstream,
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
