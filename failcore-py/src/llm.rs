//! The LLM proxy served in process: a session's `llm_proxy()` binds `127.0.0.1:0` with that session, so
//! the agent's model calls (through its OpenAI or Anthropic client pointed at the returned base URL) are
//! steps of the same run as its tools: served on resume and offline from the same replay index. The proxy
//! runs until its session finishes ([`crate::serving`]).

use crate::serving::{serve_once, Started};
use crate::{block_here, cli::llm_proxy::load_models};
use failcore::llm_proxy::{LlmProxy, Options};
use failcore::model::Models;
use failcore::{Error, Mode, Session};
use std::path::{Path, PathBuf};

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
    let mut options = Options::default();
    for ca in table.upstream_ca {
        options = options.upstream_ca(ca);
    }
    let run = (session.run_id().to_owned(), default);
    let key = upstream.clone().map(|u| format!("upstream {u}"));
    serve_once((&run.0, run.1), "LLM proxy", key, true, || {
        let proxy = block_here(LlmProxy::bind_with(
            ([127, 0, 0, 1], 0).into(),
            session,
            table.models,
            upstream,
            options,
        ))?;
        let url = format!("http://{}/v1", proxy.local_addr()?);
        Ok(Started::spawn(url, |stopped| proxy.serve(stopped)))
    })
}
