//! Policies in the history: the effective policy set a run decided its calls with, recorded in its
//! run_start, and the re-evaluation of recorded calls under another policy file (`failcore policy check`).
//!
//! # The digest of a policy set
//!
//! A session records `versions.policy` in its run_start: `{"digest": HEX, "file": PATH, "sandbox_root":
//! DIR, "changed_from": HEX}` (`file`, `sandbox_root` and `changed_from` only when there is one). `digest`
//! is the hex BLAKE3 of `"failcore/policy-set/v1\n"` followed by the canonical JSON (keys sorted, no
//! whitespace) of:
//!
//! ```text
//! { "file":         the policy file's `policy`, `guard` and `tools` tables as parsed (null without a file),
//!   "sandbox_root": the root of the built-in fs_safe and fs_read_only presets (null without one),
//!   "code":         { "policies": names defined with SessionBuilder::policy, sorted,
//!                     "guards":   names of the guards added with SessionBuilder::guard, in order,
//!                     "tools":    { tool: name } of SessionBuilder::tool_policy },
//!   "tool_attached": { tool: name, or "<expr>" } of the tools linked in that declare a policy }
//! ```
//!
//! So the digest changes when a policy file's definitions, guards or tool mapping change, when the sandbox
//! root moves, or when policies are attached differently in code. What it cannot see: the configuration of
//! a policy defined in code (only its name is known), the body of a `policy = <expr>`, and the directory
//! the file's relative paths resolve against (the file's path is recorded beside the digest). The file's
//! `[proxy]` and `[redact]` tables decide no call and are left out.

use super::{CallView, PolicyRef, PolicySet, Verdict};
use crate::registry::{Effect, ToolDescriptor};
use crate::Error;
use failcore_store::{Decision, DecisionOutcome, RunStart, StepStart};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::Path;

/// The key of the policy fact in a run_start's `versions`.
pub const POLICY_FACT: &str = "policy";

/// What a run_start says about the policies of its session (`versions.policy`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedPolicy {
    /// The digest of the effective policy set (see the module docs).
    pub digest: String,
    /// The policy file, as the session was given it.
    pub file: Option<String>,
    /// The root of the built-in fs presets.
    pub sandbox_root: Option<String>,
    /// A resumed run whose source was recorded under another policy set: the source's digest.
    pub changed_from: Option<String>,
}

/// The policy fact of a run_start, if it has one (runs recorded before it was written have none).
pub fn recorded_policy(start: &RunStart) -> Option<RecordedPolicy> {
    let fact = start.versions.get(POLICY_FACT)?.as_object()?;
    let text = |k: &str| fact.get(k).and_then(Value::as_str).map(str::to_owned);
    Some(RecordedPolicy {
        digest: text("digest")?,
        file: text("file"),
        sandbox_root: text("sandbox_root"),
        changed_from: text("changed_from"),
    })
}

/// What a session's policies are made of, as the digest describes them.
pub(crate) struct EffectiveSet<'a> {
    pub file: Option<(&'a Path, &'a Value)>,
    pub sandbox_root: Option<&'a Path>,
    pub code_policies: Vec<String>,
    pub code_guards: Vec<String>,
    pub code_tools: Vec<(String, String)>,
}

impl EffectiveSet<'_> {
    /// The canonical description the digest is taken of.
    fn description(&self) -> Value {
        let mut policies = self.code_policies.clone();
        policies.sort();
        policies.dedup();
        let code_tools: Map<String, Value> = self
            .code_tools
            .iter()
            .map(|(t, n)| (t.clone(), Value::from(n.as_str())))
            .collect();
        let attached: Map<String, Value> = crate::registry::tools()
            .into_iter()
            .filter_map(|t| Some((t.name().to_owned(), Value::from(t.policy()?))))
            .collect();
        serde_json::json!({
            "file": self.file.map_or(Value::Null, |(_, doc)| doc.clone()),
            "sandbox_root": self.sandbox_root.map(|p| p.display().to_string()),
            "code": {
                "policies": policies,
                "guards": self.code_guards,
                "tools": code_tools,
            },
            "tool_attached": attached,
        })
    }

    pub fn digest(&self) -> String {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"failcore/policy-set/v1\n");
        let mut bytes = Vec::new();
        write_sorted(&self.description(), &mut bytes);
        hasher.update(&bytes);
        hasher.finalize().to_hex().to_string()
    }

    /// The run_start's `versions.policy`; `source` is the digest recorded by the run being resumed.
    pub fn fact(&self, source: Option<&str>) -> Value {
        let digest = self.digest();
        let mut fact = Map::new();
        if let Some(s) = source.filter(|s| *s != digest) {
            fact.insert("changed_from".into(), Value::from(s));
        }
        fact.insert("digest".into(), Value::from(digest));
        if let Some((path, _)) = self.file {
            fact.insert("file".into(), Value::from(path.display().to_string()));
        }
        if let Some(root) = self.sandbox_root {
            fact.insert(
                "sandbox_root".into(),
                Value::from(root.display().to_string()),
            );
        }
        Value::Object(fact)
    }
}

/// JSON with every object's keys sorted, whatever order the map keeps them in.
fn write_sorted(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(Value::from(k.as_str()).to_string().as_bytes());
                out.push(b':');
                write_sorted(&m[k], out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_sorted(item, out);
            }
            out.push(b']');
        }
        other => out.extend_from_slice(other.to_string().as_bytes()),
    }
}

/// A decision in three words: what a policy check can say about a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ruling {
    /// The call may run.
    Allow,
    /// The call is refused.
    Deny,
    /// A person must approve (recorded: approved or refused by the approval handler).
    Ask,
}

impl Ruling {
    pub fn as_str(self) -> &'static str {
        match self {
            Ruling::Allow => "allow",
            Ruling::Deny => "deny",
            Ruling::Ask => "ask",
        }
    }

    /// The ruling of a recorded decision. A call that the policies allowed and resume then refused (it was
    /// in flight when the run died; policy `resume`) was allowed by the policies.
    pub fn of_recorded(d: &Decision) -> Ruling {
        match d.outcome {
            DecisionOutcome::Allow => Ruling::Allow,
            DecisionOutcome::Deny if d.policy.as_deref() == Some("resume") => Ruling::Allow,
            DecisionOutcome::Deny => Ruling::Deny,
            DecisionOutcome::Approved | DecisionOutcome::Refused => Ruling::Ask,
        }
    }
}

/// What a candidate policy set decides about one recorded call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reevaluation {
    /// Decided: the ruling, and the policy, rule and reason of a denial or an ask.
    Decided {
        ruling: Ruling,
        policy: Option<String>,
        rule: Option<String>,
        reason: Option<String>,
    },
    /// The call's arguments were redacted in the trace: what the policies saw is not known.
    Redacted,
}

/// The policies of a policy file, built as a session builds them, to decide recorded calls again outside a
/// session: the file's named policies over the built-in presets, its `guard`s on every call, its `[tools]`
/// by exact tool name, and the own policy of a tool linked into this process (resolved by name in the
/// file). Calls are decided in the order they are given: stateful policies (`limits`) count them as a run
/// would, but see no time pass and no cost.
pub struct Candidate {
    policies: PolicySet,
    guards: Vec<PolicyRef>,
    tools: HashMap<String, PolicyRef>,
}

impl Candidate {
    /// Loads `path`, with the built-in fs presets rooted at `sandbox_root`. Any problem in the file is an
    /// error, as it is for a session.
    pub fn load(path: &Path, sandbox_root: Option<&Path>) -> Result<Candidate, Error> {
        let root = sandbox_root.map(Path::to_path_buf);
        let mut policies = PolicySet::builtin(root.as_ref());
        let file = super::load_policy_file(path, &policies)?;
        for (name, p) in file.policies {
            policies.insert(name, p);
        }
        let named = |name: &str| {
            policies
                .get(name)
                .cloned()
                .ok_or_else(|| Error::Config(format!("policy `{name}` is not defined")))
        };
        let guards = file
            .guards
            .iter()
            .map(|n| named(n))
            .collect::<Result<_, _>>()?;
        let tools = file
            .tools
            .iter()
            .map(|(t, n)| Ok((t.clone(), named(n)?)))
            .collect::<Result<_, Error>>()?;
        Ok(Candidate {
            policies,
            guards,
            tools,
        })
    }

    /// Decides a recorded call (a `step_start`, or a `call` record's start) again: its tool by name, its
    /// recorded arguments. A call recorded with redacted arguments is [`Reevaluation::Redacted`]. A tool
    /// linked into this process whose own policy the file does not define is an error.
    pub fn decide(&self, start: &StepStart) -> Result<Reevaluation, Error> {
        if start.redacted.iter().any(|r| r.at.starts_with("/args")) {
            return Ok(Reevaluation::Redacted);
        }
        let tool = descriptor(&start.tool)?;
        let own = match tool.policy {
            crate::registry::PolicySource::Named(name) if self.policies.get(name).is_none() => {
                return Err(Error::Config(format!(
                    "tool `{}` uses policy `{name}`, which the policy file does not define; defined: {}",
                    tool.name,
                    self.policies.names().collect::<Vec<_>>().join(", ")
                )))
            }
            _ => super::own_policy(&self.policies, tool),
        };
        let args = crate::fingerprint::canonical_json(&start.args)
            .map_err(|e| Error::Config(format!("step {}: arguments: {e}", start.step)))?;
        let view = CallView::new(tool, &args);
        let mut asked: Option<(String, String)> = None;
        let attached = self.tools.get(tool.name);
        for policy in self.guards.iter().chain(attached).chain(own.iter()) {
            match super::verdict_of(policy.as_ref(), &view) {
                Verdict::Allow => {}
                Verdict::Deny { rule, reason } => {
                    return Ok(Reevaluation::Decided {
                        ruling: Ruling::Deny,
                        policy: Some(policy.name().to_owned()),
                        rule: Some(rule),
                        reason: Some(reason),
                    })
                }
                // A person decides an ask: the later policies still run, and a denial among them wins.
                Verdict::Ask { reason } => {
                    asked.get_or_insert((policy.name().to_owned(), reason));
                }
            }
        }
        Ok(match asked {
            Some((policy, reason)) => Reevaluation::Decided {
                ruling: Ruling::Ask,
                policy: Some(policy),
                rule: Some("approval".into()),
                reason: Some(reason),
            },
            None => Reevaluation::Decided {
                ruling: Ruling::Allow,
                policy: None,
                rule: None,
                reason: None,
            },
        })
    }
}

/// The descriptor of the tool named `name`: the linked-in tool of that name, else a dynamic tool known by
/// its name only (effect unspecified), as the MCP proxy knows the tools it relays.
fn descriptor(name: &str) -> Result<&'static ToolDescriptor, Error> {
    if let Some(t) = crate::registry::tools()
        .into_iter()
        .find(|t| t.name() == name)
    {
        return Ok(t.0);
    }
    crate::registry::dynamic_descriptor(
        name,
        "recorded call",
        Effect::Unspecified,
        &crate::registry::DynamicSpec::default(),
    )
}
