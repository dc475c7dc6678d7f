//! FailCore: a flight recorder and airbag beneath AI agents.
//!
//! Annotate an async tool function with [`#[failcore::tool]`](tool). From then on every call is
//! fingerprinted, checked against its policy (a denied call never runs), served from the trace when the
//! run being resumed already has its output, and otherwise executed and committed to an append-only,
//! tamper-evident trace.
//!
//! ```
//! use failcore::Session;
//!
//! #[derive(Debug)]
//! struct ToolError(String);
//! impl std::fmt::Display for ToolError {
//!     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str(&self.0) }
//! }
//! impl From<failcore::Error> for ToolError {
//!     fn from(e: failcore::Error) -> Self { ToolError(e.to_string()) }
//! }
//!
//! /// Adds two numbers.
//! #[failcore::tool(effect = "pure")]
//! async fn add(a: i64, b: i64) -> Result<i64, ToolError> {
//!     Ok(a + b)
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), failcore::Error> {
//! let store = std::sync::Arc::new(failcore::store::MemoryStore::new());
//! let session = Session::builder().store(store.clone()).open()?;
//! let sum = session.scope(add(2, 3)).await;
//! assert_eq!(sum.unwrap(), 5);
//! session.finish().await?;
//!
//! // Resume that run: the call is served from the trace without running.
//! let resumed = Session::builder().store(store).resume(session.run_id()).open()?;
//! assert_eq!(resumed.scope(add(2, 3)).await.unwrap(), 5);
//! # Ok(()) }
//! ```
//!
//! Sessions ([`Session`]) choose the store, the mode (record, resume, offline), the durability and the
//! policies; a call made outside any session uses the process default session, configured from the
//! environment (`FAILCORE_DIR`, `FAILCORE_RESUME=<run id|last>`, ...). See `docs/ARCHITECTURE.md` and
//! `docs/TRACE_FORMAT.md` in the repository.
//!
//! # Registration
//! Tools register at link time: [`tools()`] lists them and [`call_json`] calls one by name with the
//! arguments an LLM emits. A crate whose items are never referenced is not linked, and its tools are
//! missing: add `use my_tools as _;` where the binary starts, and check with [`expect_tools`].
#![cfg_attr(docsrs, feature(doc_cfg))]

mod by_name;
mod cost;
mod dynamic;
mod error;
mod fingerprint;
pub mod fs;
mod keyed;
mod lifecycle;
#[cfg(feature = "llm-proxy")]
pub mod llm_proxy;
#[cfg(feature = "mcp")]
pub mod mcp;
#[cfg(any(feature = "mcp", feature = "mcp-proxy"))]
mod mcp_framing;
#[cfg(any(feature = "mcp", feature = "mcp-proxy"))]
mod mcp_http;
#[cfg(feature = "mcp-proxy")]
pub mod mcp_proxy;
pub mod model;
pub mod net;
#[cfg(feature = "otel")]
pub mod otel;
pub mod policy;
#[cfg(any(feature = "llm-proxy", feature = "mcp-proxy", feature = "mcp"))]
pub mod proxy_common;
mod recorded;
mod redact_paths;
mod registry;
mod replay;
#[cfg(feature = "rig")]
pub mod rig;
mod runid;
mod sandbox;
#[cfg(feature = "schema")]
pub mod schema;
mod scope;
pub mod secrets;
mod session;
mod tool_error;
mod unique_json;

pub mod exec {
    //! Enforcement at the effect for commands: run a program (an argument vector, never a shell string)
    //! inside a kernel sandbox built from the tool's exec policy, and return what happened as the tool's
    //! output.
    //!
    //! The policy that gated the call describes the walls ([`SandboxSpec`](crate::policy::SandboxSpec)):
    //! Landlock filesystem rules (the filesystem read-only except the writable roots and `/dev/null`,
    //! optionally readable only beneath declared paths), no network unless allowed (Landlock TCP rules, and a
    //! seccomp filter refusing every socket but Unix ones), rlimits on CPU time, address space and file size,
    //! a process limit (a pids cgroup, or `RLIMIT_NPROC`), a clean environment from an allow-list, and a
    //! wall-clock timeout that kills the whole process group. The result, [`ExecOutput`], carries the sandbox
    //! that was applied, the exit status and the bounded output; returned by the tool, it is recorded on the
    //! step and served on replay like any output.
    //!
    //! Where the kernel lacks a mechanism the policy asks for, the command is refused with a rule that names
    //! it (`exec.sandbox.no_landlock`, `exec.sandbox.landlock_abi`, `exec.sandbox.no_tcp_rules`,
    //! `exec.sandbox.no_seccomp`, `exec.sandbox.no_process_limit`), unless the policy accepts a weaker
    //! sandbox; then what was left out is recorded in [`SandboxApplied::missing`].
    //!
    //! ```no_run
    //! use failcore::policy::ExecPolicy;
    //!
    //! # #[derive(Debug)] struct ToolError(String);
    //! # impl std::fmt::Display for ToolError {
    //! #     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str(&self.0) }
    //! # }
    //! # impl From<failcore::Error> for ToolError {
    //! #     fn from(e: failcore::Error) -> Self { ToolError(e.to_string()) }
    //! # }
    //! fn git_policy() -> ExecPolicy {
    //!     ExecPolicy::allow(["git"]).deny_args(["-c", "--upload-pack"]).root("workspace")
    //! }
    //!
    //! /// Runs git in the workspace.
    //! #[failcore::tool(policy = git_policy(), effect = "exec")]
    //! async fn git(program: String, args: Vec<String>) -> Result<failcore::exec::ExecOutput, ToolError> {
    //!     Ok(failcore::exec::run(&git_policy(), &program, &args).await?)
    //! }
    //! ```
    //!
    //! A policy defined in the policy file is found by name with [`policy()`]:
    //! `failcore::exec::run(&failcore::exec::policy("git")?, &program, &args)`.

    pub use crate::sandbox::{
        landlock_abi, run, Captured, Command, ExecOutput, Exit, SandboxApplied,
    };
    pub use crate::session::exec_policy as policy;
}

pub use by_name::call_json;
pub use dynamic::{DynamicBody, DynamicRawBody, DynamicTool};
pub use error::Error;
pub use failcore_store::{Durability, Mode, RunStatus, Status};
pub use fingerprint::{canonical_json, fingerprint, CanonicalError};
pub use keyed::{
    find_run_by_key, find_run_by_key_of, recorder_of, run_key_of, run_start_of, KeyedRun,
};
pub use policy::{CallView, Policy, PolicyError, Verdict};
pub use recorded::{idempotency_key, now, random, report_landed, sleep, uuid, Landed};
pub use tool_error::ToolError;

pub use registry::{
    expect_tools, tool as find_tool, tools, DynamicSpec, Effect, InFlightRecovery, OutputContract,
    ToolInfo, MAX_DYNAMIC_TOOLS,
};
pub use replay::{InFlightStep, ResumeReport};
pub use session::{
    carry, current, default_session, finish, replay_strictly, report_cost, spawn, ApprovalRequest,
    Approver, Carried, InFlight, RunSummary, Session, SessionBuilder, DEFAULT_BLOB_THRESHOLD,
};

/// Trace format and stores (re-exported from `failcore-store`).
pub mod store {
    pub use failcore_store::*;
}

/// Turns an `async fn` returning `Result<T, E>` into a FailCore tool.
///
/// | argument | meaning |
/// | --- | --- |
/// | `policy = "name"` or `policy = <expr>` | a named policy (preset or defined on the session), or any expression yielding a [`Policy`]; evaluated once |
/// | `name = "..."` | tool name in traces and the registry (default: the function's name); unique in a binary |
/// | `version = "..."` | contract version, part of the fingerprint: bump it to stop replaying old outputs |
/// | `effect = "pure" \| "read" \| "write" \| "network" \| "exec"` | what the tool touches |
/// | `skip(a, b)` | arguments left out of the fingerprint and the trace (clients, handles) |
/// | `redact(a, args = "/a/field", output = "/field")` | values fingerprinted in clear but recorded only as a keyed hash: whole arguments, or JSON pointers into the arguments and the output (docs/SECRETS.md) |
/// | `replay = "auto" \| "never"` | `never`: always execute, even when resuming (clock reads, randomness) |
/// | `output = "json" \| "text"` | the output contract; a mismatch is recorded as drift |
/// | `crate = path` | where `failcore` is, if renamed |
///
/// `T` must be `Serialize + DeserializeOwned`, `E: Display + From<failcore::Error>`, and every argument not
/// skipped must be `Serialize`. Arguments typed `PathBuf`/`Path` are the path arguments of fs policies.
pub use failcore_macros::tool;

/// Opens a store from a spec: `jsonl:<dir>` or a bare directory; `sqlite:<file>` (feature `sqlite`);
/// `postgres://user@host:port/db[?failcore_schema=<name>]` (feature `postgres`). A spec for a backend this
/// build lacks is an error that names the feature to enable.
pub fn store_from_spec(spec: &str) -> Result<std::sync::Arc<dyn store::TraceStore>, Error> {
    if let Some(dir) = spec.strip_prefix("jsonl:") {
        return jsonl_store(std::path::Path::new(dir));
    }
    if let Some(path) = spec.strip_prefix("sqlite:") {
        return sqlite_store(path);
    }
    if spec.starts_with("postgres://") || spec.starts_with("postgresql://") {
        return postgres_store(spec);
    }
    if spec.contains("://") {
        return Err(Error::Config(format!(
            "unknown store `{spec}`: expected jsonl:<dir>, sqlite:<file> or postgres://..."
        )));
    }
    jsonl_store(std::path::Path::new(spec))
}

#[cfg(feature = "sqlite")]
fn sqlite_store(path: &str) -> Result<std::sync::Arc<dyn store::TraceStore>, Error> {
    if path.is_empty() {
        return Err(Error::Config(
            "store `sqlite:` needs a file: sqlite:<file>".into(),
        ));
    }
    Ok(std::sync::Arc::new(failcore_store::SqliteStore::open(
        path,
    )?))
}

#[cfg(not(feature = "sqlite"))]
fn sqlite_store(path: &str) -> Result<std::sync::Arc<dyn store::TraceStore>, Error> {
    Err(Error::Config(format!(
        "store `sqlite:{path}` needs the `sqlite` feature of failcore: build with `--features sqlite`"
    )))
}

#[cfg(feature = "postgres")]
fn postgres_store(url: &str) -> Result<std::sync::Arc<dyn store::TraceStore>, Error> {
    Ok(std::sync::Arc::new(failcore_store::PgStore::open(url)?))
}

#[cfg(not(feature = "postgres"))]
fn postgres_store(_: &str) -> Result<std::sync::Arc<dyn store::TraceStore>, Error> {
    Err(Error::Config(
        "a postgres:// store needs the `postgres` feature of failcore: build with `--features postgres`"
            .into(),
    ))
}

#[cfg(feature = "jsonl")]
pub(crate) fn jsonl_store(
    dir: &std::path::Path,
) -> Result<std::sync::Arc<dyn store::TraceStore>, Error> {
    Ok(std::sync::Arc::new(failcore_store::JsonlStore::new(dir)))
}

#[cfg(not(feature = "jsonl"))]
pub(crate) fn jsonl_store(
    _: &std::path::Path,
) -> Result<std::sync::Arc<dyn store::TraceStore>, Error> {
    Err(Error::Config(
        "the JSONL store needs the `jsonl` feature of failcore: enable it, or pass a store".into(),
    ))
}

/// What generated code uses. Not public API: no stability promise.
#[doc(hidden)]
pub mod __private {
    pub use crate::lifecycle::{enter, run, serialize_args, Call, Entered, Prepared};
    pub use crate::lifecycle::{reconciled, reconciling};
    pub use crate::policy::{IntoPolicy, PolicyRef};
    pub use crate::registry::{
        encode_output, DescriptorCache, Effect, InFlightRecovery, Invocation, InvokeLocal,
        InvokeSend, InvokeWrap, Invoker, JsonArgs, OutputContract, Param, ParamRole, PolicySource,
        Registration, ToolDescriptor,
    };
    pub use erased_serde::Serialize as ErasedSerialize;
    pub use inventory;
    pub use serde;
    pub use serde_json;

    pub fn into_policy<P: IntoPolicy>(p: P) -> PolicyRef {
        p.into_policy()
    }

    /// A method tool's receiver, which is part of the call's identity.
    #[diagnostic::on_unimplemented(
        message = "the receiver of a tool method is part of the call's identity, so `{Self}` must implement `Serialize`",
        label = "`{Self}` is not `Serialize`",
        note = "derive `Serialize` for it, or write `skip(self)` in `#[failcore::tool(..)]` to leave the receiver out of the fingerprint (calls on different receivers then share one identity)"
    )]
    pub trait ReceiverIdentity {
        fn erased(&self) -> &dyn ErasedSerialize;
    }

    impl<T: serde::Serialize> ReceiverIdentity for T {
        fn erased(&self) -> &dyn ErasedSerialize {
            self as &dyn ErasedSerialize
        }
    }

    /// The receiver of a method tool, for [`serialize_args`].
    pub fn receiver_identity<R: ReceiverIdentity>(receiver: &R) -> &dyn ErasedSerialize {
        receiver.erased()
    }

    /// `tool_schema!(name: Type = required, ...)`: the argument schema of a tool, or `None` when
    /// failcore is built without its `schema` feature (then no schema code is generated at all).
    pub use crate::__failcore_tool_schema as tool_schema;
    #[cfg(feature = "schema")]
    pub use crate::schema;
}

#[cfg(feature = "schema")]
#[doc(hidden)]
#[macro_export]
macro_rules! __failcore_tool_schema {
    ($($name:literal : $ty:ty = $required:literal),* $(,)?) => {
        ::core::option::Option::Some({
            fn __failcore_schema() -> $crate::__private::serde_json::Value {
                $crate::__private::schema::object(&[$((
                    $name,
                    $crate::__private::schema::property::<$ty> as $crate::__private::schema::PropertyFn,
                    $required,
                )),*])
            }
            __failcore_schema as fn() -> $crate::__private::serde_json::Value
        })
    };
}

#[cfg(not(feature = "schema"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __failcore_tool_schema {
    ($($tt:tt)*) => {
        ::core::option::Option::None
    };
}

#[cfg(test)]
mod store_spec_tests {
    use super::store_from_spec;

    #[test]
    fn a_backend_left_out_of_the_build_names_its_feature() {
        if !cfg!(feature = "sqlite") {
            let e = store_from_spec("sqlite:traces.db").expect_err("no sqlite");
            assert!(e.to_string().contains("--features sqlite"), "{e}");
        }
        if !cfg!(feature = "postgres") {
            let e = store_from_spec("postgres://u@h/db").expect_err("no postgres");
            assert!(e.to_string().contains("--features postgres"), "{e}");
        }
        let e = store_from_spec("mysql://u@h/db").expect_err("unknown");
        assert!(e.to_string().contains("sqlite:<file>"), "{e}");
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn sqlite_spec_opens_a_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = format!("sqlite:{}", dir.path().join("t.db").display());
        let store = store_from_spec(&spec).expect("open");
        assert_eq!(store.location(), spec);
        assert!(store_from_spec("sqlite:").is_err());
    }
}
