//! Policies: what decides whether a call may run.
//!
//! A [`Policy`] sees the call ([`CallView`]: the tool, its effect, its canonical arguments) and returns a
//! [`Verdict`]. Policies fail closed: an `Err` from `check`, or a panic inside it, is a denial. Every
//! decision is recorded in the trace with the policy's name, the rule and the reason.
//!
//! Policies attach to tools explicitly (`#[failcore::tool(policy = ...)]`) or to every tool of a
//! session ([`crate::SessionBuilder::guard`]); they are never matched by tool-name patterns.

mod compose;
mod exec;
mod file;
mod fs;
mod history;
mod limits;
mod net;

pub use compose::{All, Any, Not};
pub use exec::{ExecPolicy, Network, SandboxSpec};
pub(crate) use file::load_policy_file;
pub use file::{check_policy_file, proxy_settings, ProxySettings};
pub use fs::FsPolicy;
pub(crate) use history::EffectiveSet;
pub use history::{recorded_policy, Candidate, RecordedPolicy, Reevaluation, Ruling, POLICY_FACT};
pub use limits::Limits;
pub use net::{check_ip, NetPolicy, Resolver, StaticResolver, SystemResolver, VettedUrl};

use crate::registry::{ParamRole, PolicySource, ToolDescriptor, ToolInfo};
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

/// What a policy decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The call may run.
    Allow,
    /// The call must not run. `rule` is a stable id (`fs.escape`), `reason` says what to change.
    Deny { rule: String, reason: String },
    /// A person must approve: the session's approval handler decides; with none, the call is denied.
    Ask { reason: String },
}

impl Verdict {
    /// A denial by `rule`, with a reason a person can act on.
    pub fn deny(rule: impl Into<String>, reason: impl Into<String>) -> Verdict {
        Verdict::Deny {
            rule: rule.into(),
            reason: reason.into(),
        }
    }
}

/// Why a policy could not decide. The call is denied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError(pub String);

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PolicyError {}

/// A rule set that decides calls.
pub trait Policy: Send + Sync + 'static {
    /// The name recorded with each decision.
    fn name(&self) -> &str;
    /// Decides one call. An `Err` denies it (rule `policy.error`).
    fn check(&self, call: &CallView<'_>) -> Result<Verdict, PolicyError>;

    /// This policy as an exec policy, if it is one: how [`crate::exec::policy`] finds the sandbox of a
    /// named policy.
    #[doc(hidden)]
    fn as_exec(&self) -> Option<&ExecPolicy> {
        None
    }
}

/// A shared policy.
pub type PolicyRef = Arc<dyn Policy>;

/// Anything usable as `policy = <expr>`: a policy value or an already shared one.
pub trait IntoPolicy {
    fn into_policy(self) -> PolicyRef;
}

impl<P: Policy> IntoPolicy for P {
    fn into_policy(self) -> PolicyRef {
        Arc::new(self)
    }
}

impl IntoPolicy for PolicyRef {
    fn into_policy(self) -> PolicyRef {
        self
    }
}

/// The call a policy decides on.
pub struct CallView<'a> {
    pub(crate) tool: &'static ToolDescriptor,
    pub(crate) args: &'a [u8],
    pub(crate) parsed: OnceLock<Value>,
    /// What the run has spent so far, when the call is made in a session.
    pub(crate) spent: Option<&'a crate::cost::Ledger>,
}

impl<'a> CallView<'a> {
    pub(crate) fn new(tool: &'static ToolDescriptor, args: &'a [u8]) -> Self {
        CallView {
            tool,
            args,
            parsed: OnceLock::new(),
            spent: None,
        }
    }

    /// A view of a call to `tool` with `args_json` (canonical JSON): to check a policy outside a session,
    /// in tests and benchmarks.
    pub fn from_parts(tool: ToolInfo, args_json: &'a [u8]) -> Self {
        CallView::new(tool.0, args_json)
    }

    /// The tool being called.
    pub fn tool(&self) -> ToolInfo {
        ToolInfo(self.tool)
    }

    /// The canonical JSON of the arguments (skipped ones left out; redacted ones in clear).
    pub fn args_json(&self) -> &'a [u8] {
        self.args
    }

    /// The arguments as a JSON object (parsed on first use).
    pub fn args(&self) -> &Value {
        self.parsed
            .get_or_init(|| serde_json::from_slice(self.args).unwrap_or(Value::Null))
    }

    /// One argument by name.
    pub fn arg(&self, name: &str) -> Option<&Value> {
        self.args().get(name)
    }

    /// What the run's executed calls have cost so far: the costs tool bodies reported with
    /// [`crate::report_cost`] and the model steps' costs by the price table (0 outside a session).
    pub fn run_cost(&self) -> f64 {
        self.spent.map_or(0.0, crate::cost::Ledger::cost)
    }

    /// The tokens the run's executed model steps have used so far (0 outside a session).
    pub fn run_tokens(&self) -> u64 {
        self.spent.map_or(0, crate::cost::Ledger::tokens)
    }

    /// The names of the arguments declared as paths by their type (`PathBuf`, `&Path`, ...).
    pub fn typed_path_args(&self) -> impl Iterator<Item = &'static str> {
        self.tool
            .params
            .iter()
            .filter(|p| p.path && p.role != ParamRole::Skipped)
            .map(|p| p.name)
    }
}

/// Refuses every call to the named tools (rule `deny_tools`).
#[derive(Debug, Clone)]
pub struct DenyTools {
    name: String,
    names: HashSet<String>,
}

impl DenyTools {
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(names: I) -> Self {
        DenyTools {
            name: "deny_tools".into(),
            names: names.into_iter().map(Into::into).collect(),
        }
    }

    /// The name recorded with decisions (default `deny_tools`).
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
}

impl Policy for DenyTools {
    fn name(&self) -> &str {
        &self.name
    }
    fn check(&self, call: &CallView<'_>) -> Result<Verdict, PolicyError> {
        let tool = call.tool().name();
        Ok(if self.names.contains(tool) {
            Verdict::deny(
                "deny_tools",
                format!("tool `{tool}` is on the session's deny list"),
            )
        } else {
            Verdict::Allow
        })
    }
}

/// Refuses everything, with a reason: what a named policy that cannot be built becomes.
#[derive(Debug, Clone)]
pub(crate) struct Refuse {
    pub name: String,
    pub rule: &'static str,
    pub reason: String,
}

impl Policy for Refuse {
    fn name(&self) -> &str {
        &self.name
    }
    fn check(&self, _: &CallView<'_>) -> Result<Verdict, PolicyError> {
        Ok(Verdict::deny(self.rule, self.reason.clone()))
    }
}

/// The named policies of a session: built-in presets plus the ones the session defines.
#[derive(Clone, Default)]
pub(crate) struct PolicySet {
    named: BTreeMap<String, PolicyRef>,
}

impl PolicySet {
    /// The built-in presets, configured from the session.
    pub fn builtin(sandbox_root: Option<&PathBuf>) -> PolicySet {
        let mut set = PolicySet::default();
        for (name, read_only) in [("fs_safe", false), ("fs_read_only", true)] {
            let policy: PolicyRef = match sandbox_root {
                Some(root) => Arc::new(FsPolicy::new(root).named(name).read_only(read_only)),
                None => Arc::new(Refuse {
                    name: name.into(),
                    rule: "fs.no_root",
                    reason:
                        "no sandbox root is configured: set Session::builder().sandbox_root(dir) \
                             or FAILCORE_SANDBOX"
                            .into(),
                }),
            };
            set.named.insert(name.into(), policy);
        }
        set
    }

    pub fn insert(&mut self, name: String, policy: PolicyRef) {
        self.named.insert(name, policy);
    }

    pub fn get(&self, name: &str) -> Option<&PolicyRef> {
        self.named.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.named.keys().map(String::as_str)
    }
}

/// The policy a tool declares (`policy = "name"` or `policy = <expr>`), resolved in `policies`. A name the
/// set does not define refuses every call (rule `policy.unknown`); an expression that panics, too.
pub(crate) fn own_policy(policies: &PolicySet, tool: &'static ToolDescriptor) -> Option<PolicyRef> {
    match tool.policy {
        PolicySource::None => None,
        PolicySource::Named(name) => Some(policies.get(name).cloned().unwrap_or_else(|| {
            Arc::new(Refuse {
                name: name.to_owned(),
                rule: "policy.unknown",
                reason: format!("policy `{name}` is not defined in this session"),
            })
        })),
        PolicySource::Expr(make) => Some(
            tool.cache
                .policy
                .get_or_init(|| {
                    catch_unwind(make).unwrap_or_else(|_| {
                        Arc::new(Refuse {
                            name: "<expr>".into(),
                            rule: "policy.panic",
                            reason: format!(
                                "the policy expression of tool `{}` panicked",
                                tool.name
                            ),
                        })
                    })
                })
                .clone(),
        ),
    }
}

/// What `policy` decides on `view`, failing closed: an `Err` denies (rule `policy.error`), and so does a
/// panic (`policy.panic`).
pub(crate) fn verdict_of(policy: &dyn Policy, view: &CallView<'_>) -> Verdict {
    let name = policy.name();
    match catch_unwind(AssertUnwindSafe(|| policy.check(view))) {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => Verdict::deny(
            "policy.error",
            format!("policy `{name}` failed to decide: {e}"),
        ),
        Err(_) => Verdict::deny(
            "policy.panic",
            format!("policy `{name}` panicked while deciding"),
        ),
    }
}
