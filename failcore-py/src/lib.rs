//! `failcore._native`: the Rust side of the Python package. The Python modules beside it
//! (`python/failcore/`) bind arguments, check that values round-trip through JSON and keep the current
//! scope in a context variable; this module runs FailCore's lifecycle on them.
//!
//! How calls are driven:
//! - a synchronous tool runs the whole lifecycle on the calling thread, with the GIL released, polling
//!   the future in place ([`block_here`]); the body future takes the GIL back and calls the Python
//!   function on that same thread, inside the poll, so thread-locals and the call stack are the
//!   caller's;
//! - an `async def` tool runs the lifecycle as a task of the module's tokio runtime; when the lifecycle
//!   reaches the body, the body future asks the caller's event loop (thread-safely) to start the
//!   coroutine as an asyncio task and waits for its outcome; the lifecycle's result settles an asyncio
//!   future the caller awaits. The event loop is never blocked by the runtime's writes.

#[allow(dead_code, unreachable_pub)]
#[path = "../../failcore/src/bin/failcore/main.rs"]
mod cli;

// The command's modules name each other `crate::common`, `crate::term`, ...: as they do in the binary,
// where they sit at the crate root.
#[allow(unused_imports)]
use cli::*;

mod llm;
mod mcp;
mod serving;

use failcore::{Carried, DynamicSpec, DynamicTool, Effect, Error, Session};
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use serde_json::Value;
use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Wake, Waker};

/// The runtime that runs the lifecycles of `async def` tools and whatever the library spawns.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("failcore")
            .enable_all()
            .build()
            .expect("a tokio runtime")
    })
}

struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Polls `fut` to completion on this thread, inside the runtime's context (for its timers and spawns).
/// Not tokio's `block_on`: a synchronous tool called from the body of another one polls a future inside
/// the poll of the outer one, which tokio's `block_on` refuses.
fn block_here<F: Future>(fut: F) -> F::Output {
    let _context = runtime().enter();
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = pin!(fut);
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}

/// A session (one run), opened from the environment and the arguments of `failcore.session(...)`.
#[pyclass(module = "failcore._native", name = "Session", frozen)]
struct PySession {
    session: Session,
    /// The model table of `models=`: its guard is the session's, and its LLM proxy uses it.
    models: llm::ModelTable,
    /// Whether this is the process default session (its LLM proxy is stopped by `finish_default`).
    default: bool,
}

#[pymethods]
impl PySession {
    /// Opens a session. Unset arguments come from the environment as the Rust side reads it
    /// (`FAILCORE_DIR`, `FAILCORE_STORE`, `FAILCORE_RESUME`, `FAILCORE_OFFLINE`, `FAILCORE_POLICY`, ...).
    #[new]
    #[pyo3(signature = (*, dir=None, store=None, resume=None, offline=None, policy=None, run_key=None, sandbox=None, models=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        dir: Option<String>,
        store: Option<String>,
        resume: Option<String>,
        offline: Option<String>,
        policy: Option<String>,
        run_key: Option<String>,
        sandbox: Option<String>,
        models: Option<String>,
    ) -> PyResult<Self> {
        if resume.is_some() && offline.is_some() {
            return Err(PyValueError::new_err(
                "give resume or offline, not both: offline replays a run with nothing executed",
            ));
        }
        let (session, models) = py
            .detach(move || {
                let _context = runtime().enter();
                let models = llm::ModelTable::load(models.as_deref())?;
                let mut b = Session::from_env()?.guard(models.models.policy());
                if let Some(dir) = dir {
                    b = b.dir(dir);
                }
                if let Some(spec) = store {
                    b = b.store(failcore::store_from_spec(&spec)?);
                }
                if let Some(run) = resume {
                    b = b.resume(run);
                }
                if let Some(run) = offline {
                    b = b.offline(run);
                }
                if let Some(file) = policy {
                    b = b.policy_file(file);
                }
                if let Some(key) = run_key {
                    b = b.run_key(key);
                }
                if let Some(root) = sandbox {
                    b = b.sandbox_root(root);
                }
                Ok::<_, Error>((b.open()?, models))
            })
            .map_err(|e| to_pyerr(py, e, None))?;
        Ok(PySession {
            session,
            models,
            default: false,
        })
    }

    /// The default session of the process, opened from the environment on first use.
    #[staticmethod]
    fn default(py: Python<'_>) -> PyResult<Self> {
        let session = py
            .detach(|| {
                let _context = runtime().enter();
                failcore::default_session()
            })
            .map_err(|e| to_pyerr(py, e, None))?;
        Ok(PySession {
            session,
            models: llm::ModelTable::default(),
            default: true,
        })
    }

    #[getter]
    fn run_id(&self) -> String {
        self.session.run_id().to_owned()
    }

    #[getter]
    fn mode(&self) -> String {
        format!("{:?}", self.session.mode()).to_lowercase()
    }

    /// The run this one resumes or replays, if any.
    #[getter]
    fn resumed_from(&self) -> Option<String> {
        self.session.resume_report().map(|r| r.source.clone())
    }

    /// Serves the LLM proxy in process for this run (see [`llm`]); returns its base URL.
    #[pyo3(signature = (upstream=None))]
    fn llm_proxy(&self, py: Python<'_>, upstream: Option<String>) -> PyResult<String> {
        let (session, models, default) = (self.session.clone(), self.models.clone(), self.default);
        py.detach(move || llm::serve(session, models, upstream, default))
            .map_err(|e| to_pyerr(py, e, None))
    }

    /// Serves the MCP proxy in process for this run (see [`mcp`]); returns its URL.
    #[pyo3(signature = (command=None, url=None, headers=None, timeout=None))]
    fn mcp_proxy(
        &self,
        py: Python<'_>,
        command: Option<Vec<String>>,
        url: Option<String>,
        headers: Option<Vec<(String, String)>>,
        timeout: Option<f64>,
    ) -> PyResult<String> {
        let server = mcp::Server {
            command: command.unwrap_or_default(),
            url,
            headers: headers.unwrap_or_default(),
            timeout,
        };
        let (session, default) = (self.session.clone(), self.default);
        py.detach(move || mcp::serve(session, server, default))
            .map_err(|e| to_pyerr(py, e, None))
    }

    /// Writes the run_end record and waits until it is durable; returns the run's summary. The run's
    /// proxies (LLM, MCP), if it serves any, are stopped first.
    fn finish<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let session = self.session.clone();
        let summary = py
            .detach(move || {
                serving::stop(|s| s.run_id == session.run_id());
                block_here(session.finish())
            })
            .map_err(|e| to_pyerr(py, e, None))?;
        let d = PyDict::new(py);
        d.set_item("run", summary.run)?;
        d.set_item(
            "status",
            format!("{:?}", summary.status).to_lowercase().as_str(),
        )?;
        let c = summary.counts;
        let counts = PyDict::new(py);
        counts.set_item("ok", c.ok)?;
        counts.set_item("failed", c.failed)?;
        counts.set_item("blocked", c.blocked)?;
        counts.set_item("replayed", c.replayed)?;
        counts.set_item("panicked", c.panicked)?;
        counts.set_item("cancelled", c.cancelled)?;
        d.set_item("counts", counts)?;
        d.set_item("steps", summary.steps)?;
        d.set_item("total_ns", summary.total_ns)?;
        d.set_item("saved_ns", summary.saved_ns)?;
        Ok(d)
    }

    /// Makes everything recorded durable without ending the run (for run keys).
    fn close_open(&self, py: Python<'_>) -> PyResult<()> {
        let session = self.session.clone();
        py.detach(move || block_here(session.close_open()))
            .map_err(|e| to_pyerr(py, e, None))
    }
}

/// The scope of a tool body that is running: calls made from it are nested under its step.
#[pyclass(module = "failcore._native", name = "Scope", frozen)]
struct PyScope {
    carried: Carried,
}

#[pymethods]
impl PyScope {
    #[getter]
    fn run_id(&self) -> String {
        self.carried.session().run_id().to_owned()
    }
}

/// Where a call runs: a session, the scope of the tool body it is made from, or the default session.
enum Target {
    Session(Session),
    Scope(Carried),
}

impl Target {
    fn from_py(py: Python<'_>, scope: Option<&Bound<'_, PyAny>>) -> PyResult<Target> {
        match scope {
            None => Ok(Target::Session(PySession::default(py)?.session)),
            Some(s) => {
                if let Ok(s) = s.cast::<PySession>() {
                    Ok(Target::Session(s.get().session.clone()))
                } else if let Ok(s) = s.cast::<PyScope>() {
                    Ok(Target::Scope(s.get().carried.clone()))
                } else {
                    Err(PyTypeError::new_err(
                        "scope must be a failcore session or a tool's scope",
                    ))
                }
            }
        }
    }

    async fn run<F: Future>(self, fut: F) -> F::Output {
        match self {
            Target::Session(s) => s.scope(fut).await,
            Target::Scope(c) => c.scope(fut).await,
        }
    }
}

/// The Python exception a tool body raised, kept to be raised again as it was.
type Raised = Arc<Mutex<Option<PyErr>>>;

/// The current scope inside a body, for the Python side to put in its context variable.
fn body_scope(py: Python<'_>) -> PyResult<Py<PyAny>> {
    match failcore::carry() {
        Some(carried) => Ok(Py::new(py, PyScope { carried })?.into_any()),
        None => Ok(py.None()),
    }
}

/// The outcome of a body as the lifecycle wants it: the output JSON text, or the exception (kept) as text.
fn body_outcome(
    py: Python<'_>,
    raised: &Raised,
    out: PyResult<Bound<'_, PyAny>>,
) -> Result<Value, String> {
    let err = match out.and_then(|o| o.extract::<String>()) {
        Ok(text) => match serde_json::from_str::<Value>(&text) {
            Ok(v) => return Ok(v),
            Err(e) => PyTypeError::new_err(format!("the output is not JSON: {e}")),
        },
        Err(e) => e,
    };
    let text = describe(py, &err);
    *raised.lock().unwrap_or_else(|e| e.into_inner()) = Some(err);
    Err(text)
}

/// `TypeName: message`, as the error of a failed step.
fn describe(py: Python<'_>, err: &PyErr) -> String {
    let name = err
        .get_type(py)
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "Exception".into());
    let value = err
        .value(py)
        .str()
        .map(|s| s.to_string())
        .unwrap_or_default();
    if value.is_empty() {
        name
    } else {
        format!("{name}: {value}")
    }
}

/// A tool as the Python decorator declares it.
#[pyclass(module = "failcore._native", name = "Tool", frozen)]
struct PyTool {
    tool: DynamicTool,
}

fn effect_from(s: Option<&str>) -> PyResult<Effect> {
    Ok(match s.unwrap_or("unspecified") {
        "unspecified" => Effect::Unspecified,
        "pure" => Effect::Pure,
        "read" => Effect::Read,
        "write" => Effect::Write,
        "network" => Effect::Network,
        "exec" => Effect::Exec,
        other => {
            return Err(PyValueError::new_err(format!(
                "effect {other:?}: expected \"pure\", \"read\", \"write\", \"network\" or \"exec\""
            )))
        }
    })
}

#[pymethods]
impl PyTool {
    #[new]
    #[pyo3(signature = (name, *, effect=None, version=String::new(), policy=None, description=String::new(), redact=Vec::new(), never_replay=false, paths=Vec::new()))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        name: &str,
        effect: Option<&str>,
        version: String,
        policy: Option<String>,
        description: String,
        redact: Vec<String>,
        never_replay: bool,
        paths: Vec<String>,
    ) -> PyResult<Self> {
        let spec = DynamicSpec {
            version,
            policy,
            description,
            redact_args: redact,
            never_replay,
            path_args: paths,
        };
        let tool = DynamicTool::with_spec(name, "python", effect_from(effect)?, &spec)
            .map_err(|e| PyValueError::new_err(e.to_string()))?;
        Ok(PyTool { tool })
    }

    #[getter]
    fn name(&self) -> &'static str {
        self.tool.info().name()
    }

    /// Calls the tool on this thread: `body(scope)` runs the Python function (on this thread) and
    /// returns its output as JSON text. Returns the output (executed or replayed) as JSON text.
    fn call_sync(
        &self,
        py: Python<'_>,
        scope: Option<&Bound<'_, PyAny>>,
        arguments: &str,
        body: Py<PyAny>,
    ) -> PyResult<String> {
        let arguments: Value = serde_json::from_str(arguments)
            .map_err(|e| PyTypeError::new_err(format!("the arguments are not JSON: {e}")))?;
        let target = Target::from_py(py, scope)?;
        let raised: Raised = Arc::default();
        let tool = self.tool;
        let slot = raised.clone();
        let body: failcore::DynamicBody = Box::pin(async move {
            Python::attach(|py| {
                let scope = body_scope(py).map_err(|e| e.to_string())?;
                let out = body.bind(py).call1((scope,));
                body_outcome(py, &slot, out)
            })
        });
        let result = py.detach(move || block_here(target.run(tool.call(&arguments, body))));
        finish_call(py, result, &raised)
    }

    /// Calls the tool from an event loop. The lifecycle runs on the module's runtime; at the body,
    /// `start(scope, done)` is called (with the GIL, from a runtime thread) and must start the coroutine
    /// on the caller's loop and call `done(task)` when it is finished. At the end, `settle(output, error)`
    /// is called the same way: the output as JSON text, or the exception to raise. Returns a handle
    /// whose `cancel()` drops the call (recorded as cancelled if its body had started).
    fn call_async(
        &self,
        py: Python<'_>,
        scope: Option<&Bound<'_, PyAny>>,
        arguments: &str,
        start: Py<PyAny>,
        settle: Py<PyAny>,
    ) -> PyResult<CallHandle> {
        let arguments: Value = serde_json::from_str(arguments)
            .map_err(|e| PyTypeError::new_err(format!("the arguments are not JSON: {e}")))?;
        let target = Target::from_py(py, scope)?;
        let raised: Raised = Arc::default();
        let tool = self.tool;
        let slot = raised.clone();
        let body: failcore::DynamicBody = Box::pin(async move {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let done = Done {
                tx: Mutex::new(Some(tx)),
                raised: slot,
            };
            Python::attach(|py| -> Result<(), String> {
                let scope = body_scope(py).map_err(|e| e.to_string())?;
                let done = Py::new(py, done).map_err(|e| e.to_string())?;
                start
                    .bind(py)
                    .call1((scope, done))
                    .map(drop)
                    .map_err(|e| describe(py, &e))
            })?;
            rx.await
                .unwrap_or_else(|_| Err("the coroutine was dropped unfinished".into()))
        });
        let task = runtime().spawn(async move {
            let result = target.run(tool.call(&arguments, body)).await;
            Python::attach(|py| {
                let (output, error) = match finish_call(py, result, &raised) {
                    Ok(text) => (Some(text), None),
                    Err(e) => (None, Some(e.into_value(py))),
                };
                if let Err(e) = settle.bind(py).call1((output, error)) {
                    e.write_unraisable(py, None);
                }
            });
        });
        Ok(CallHandle {
            abort: task.abort_handle(),
        })
    }
}

/// Given to the Python side with an `async def` tool's coroutine: called with the finished asyncio task.
#[pyclass(module = "failcore._native", frozen)]
struct Done {
    tx: Mutex<Option<tokio::sync::oneshot::Sender<Result<Value, String>>>>,
    raised: Raised,
}

#[pymethods]
impl Done {
    fn __call__(&self, py: Python<'_>, task: &Bound<'_, PyAny>) -> PyResult<()> {
        let out = if task.call_method0("cancelled")?.is_truthy()? {
            Err("the coroutine was cancelled".to_owned())
        } else {
            let exc = task.call_method0("exception")?;
            if exc.is_none() {
                body_outcome(py, &self.raised, task.call_method0("result"))
            } else {
                body_outcome(py, &self.raised, Err(PyErr::from_value(exc)))
            }
        };
        if let Some(tx) = self.tx.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = tx.send(out);
        }
        Ok(())
    }
}

/// The running call of an `async def` tool.
#[pyclass(module = "failcore._native", frozen)]
struct CallHandle {
    abort: tokio::task::AbortHandle,
}

#[pymethods]
impl CallHandle {
    fn cancel(&self) {
        self.abort.abort();
    }
}

fn finish_call(py: Python<'_>, result: Result<Value, Error>, raised: &Raised) -> PyResult<String> {
    match result {
        Ok(v) => Ok(v.to_string()),
        Err(e) => {
            let original = raised.lock().unwrap_or_else(|e| e.into_inner()).take();
            Err(to_pyerr(py, e, original))
        }
    }
}

/// A FailCore error as the Python exception of `failcore._errors`; the exception a tool raised is
/// raised again as it was.
fn to_pyerr(py: Python<'_>, e: Error, raised: Option<PyErr>) -> PyErr {
    if let (Error::Tool { .. }, Some(original)) = (&e, raised) {
        return original;
    }
    let build = || -> PyResult<PyErr> {
        let errors = py.import("failcore._errors")?;
        let message = e.to_string();
        let (class, attrs): (&str, Vec<(&str, String)>) = match &e {
            Error::Blocked {
                tool,
                policy,
                rule,
                reason,
            } => (
                "Blocked",
                vec![
                    ("tool", tool.clone()),
                    ("policy", policy.clone()),
                    ("rule", rule.clone()),
                    ("reason", reason.clone()),
                ],
            ),
            Error::ReplayMiss {
                tool,
                run,
                fingerprint,
                ..
            } => (
                "ReplayMiss",
                vec![
                    ("tool", tool.clone()),
                    ("run", run.clone()),
                    ("fingerprint", fingerprint.clone()),
                ],
            ),
            Error::Serialize { .. } => return Ok(PyTypeError::new_err(message)),
            Error::OutsideScope { .. } => ("OutsideSession", vec![]),
            _ => ("FailcoreError", vec![]),
        };
        let exc = errors.getattr(class)?.call1(PyTuple::new(py, [message])?)?;
        exc.setattr("kind", e.kind())?;
        for (k, v) in attrs {
            exc.setattr(k, v)?;
        }
        Ok(PyErr::from_value(exc))
    };
    build().unwrap_or_else(|err| err)
}

/// Runs the `failcore` command with these arguments (`sys.argv`); returns its exit status.
/// `self_command` is how to start this program again (the sample's run 1).
#[pyfunction]
fn cli_main(py: Python<'_>, argv: Vec<String>, self_command: Vec<String>) -> PyResult<u8> {
    if let Some((program, args)) = self_command.split_first() {
        let _ = sample::SELF_COMMAND.set((program.into(), args.iter().map(Into::into).collect()));
    }
    let code = py.detach(move || {
        let code = cli::main_with_args(argv);
        use std::io::Write;
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        code
    });
    (0..=u8::MAX)
        .find(|&c| std::process::ExitCode::from(c) == code)
        .ok_or_else(|| PyRuntimeError::new_err("the command's exit status is not a byte"))
}

/// Writes the run_end of the default session, if one was opened.
#[pyfunction]
fn finish_default(py: Python<'_>) -> PyResult<bool> {
    py.detach(|| {
        serving::stop(|s| s.default);
        block_here(failcore::finish())
    })
    .map(|s| s.is_some())
    .map_err(|e| to_pyerr(py, e, None))
}

/// The version of the Rust crate this module was built from.
#[pyfunction]
fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PySession>()?;
    m.add_class::<PyScope>()?;
    m.add_class::<PyTool>()?;
    m.add_class::<Done>()?;
    m.add_class::<CallHandle>()?;
    m.add_function(wrap_pyfunction!(cli_main, m)?)?;
    m.add_function(wrap_pyfunction!(finish_default, m)?)?;
    m.add_function(wrap_pyfunction!(version, m)?)?;
    Ok(())
}
