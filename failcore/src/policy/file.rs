//! The policy file (`failcore.toml` or JSON): named policies that `policy = "name"` resolves to.

use super::{
    All, Any, DenyTools, ExecPolicy, FsPolicy, Limits, NetPolicy, Network, Not, PolicyRef,
    PolicySet,
};
use crate::secrets::{NoSecrets, RedactPaths};
use crate::Error;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// What a policy file defines.
pub(crate) struct PolicyFile {
    /// `[policy.<name>]`: named policies.
    pub policies: Vec<(String, PolicyRef)>,
    /// `guard = ["name", ...]`: policies checked on every call of the session.
    pub guards: Vec<String>,
    /// `[tools]`: `tool = "name"`, a policy attached to one tool by its exact name.
    pub tools: Vec<(String, String)>,
    /// `[redact.<tool>]`: `args = [...]`, `output = [...]`, JSON pointers redacted for one tool by its
    /// exact name.
    pub redact: HashMap<String, RedactPaths>,
    /// The file's `policy`, `guard` and `tools` tables as parsed: what decides calls, for the digest of
    /// the session's policy set.
    pub document: Value,
}

/// Reads a policy file and builds its named policies. Composite policies may refer to each other and to the
/// session's policies in `existing`; `guard` and `[tools]` may name either. Any problem is an error: the
/// session does not start.
pub(crate) fn load_policy_file(path: &Path, existing: &PolicySet) -> Result<PolicyFile, Error> {
    let err = |why: String| Error::Config(format!("policy file {}: {why}", path.display()));
    let doc = read_document(path)?;
    let top = doc
        .as_object()
        .ok_or_else(|| err("must be a table with a `policy` table".into()))?;
    if let Some(k) = top.keys().find(|k| {
        !matches!(
            k.as_str(),
            "policy" | "guard" | "tools" | "proxy" | "redact"
        )
    }) {
        return Err(err(format!(
            "unknown top-level key `{k}`; policies go under `policy.<name>`, and only `guard` and \
             `[tools]` may refer to them (`[proxy]` configures `failcore proxy`, `[redact.<tool>]` \
             names paths to redact)"
        )));
    }
    let redact = redactions(top.get("redact")).map_err(&err)?;
    let specs = match top.get("policy") {
        Some(Value::Object(m)) => m,
        Some(_) => return Err(err("`policy` must be a table of named policies".into())),
        None => return Err(err("defines no policy (`[policy.<name>]`)".into())),
    };
    let base = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let mut builder = Builder {
        specs,
        existing,
        base,
        built: BTreeMap::new(),
        visiting: HashSet::new(),
    };
    for name in specs.keys() {
        builder.build(name).map_err(&err)?;
    }
    let defined = |name: &str| builder.built.contains_key(name) || existing.get(name).is_some();
    let guards = match top.get("guard") {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v.as_str() {
                Some(name) if defined(name) => Ok(name.to_owned()),
                Some(name) => Err(err(format!("`guard` names `{name}`, which is not defined"))),
                None => Err(err("`guard` must be a list of policy names".into())),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(err("`guard` must be a list of policy names".into())),
    };
    let tools = match top.get("tools") {
        None => Vec::new(),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(tool, v)| match v.as_str() {
                Some(name) if defined(name) => Ok((tool.clone(), name.to_owned())),
                Some(name) => Err(err(format!(
                    "`tools.{tool}` names `{name}`, which is not defined"
                ))),
                None => Err(err(format!("`tools.{tool}` must be a policy name"))),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(err("`tools` must be a table of `tool = \"policy\"`".into())),
    };
    let document = ["policy", "guard", "tools"]
        .into_iter()
        .filter_map(|k| Some((k.to_owned(), top.get(k)?.clone())))
        .collect::<Map<String, Value>>();
    Ok(PolicyFile {
        policies: builder.built.into_iter().collect(),
        guards,
        tools,
        redact,
        document: Value::Object(document),
    })
}

/// A policy file as a JSON document (TOML, or JSON when the name ends in `.json`).
fn read_document(path: &Path) -> Result<Value, Error> {
    let err = |why: String| Error::Config(format!("policy file {}: {why}", path.display()));
    let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot be read: {e}")))?;
    let is_json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    if is_json {
        serde_json::from_str(&text).map_err(|e| err(format!("is not valid JSON: {e}")))
    } else {
        let t: toml::Table =
            toml::from_str(&text).map_err(|e| err(format!("is not valid TOML: {e}")))?;
        serde_json::to_value(t).map_err(|e| err(format!("cannot be read: {e}")))
    }
}

/// Checks a policy file as a session would load it (every policy built, every name defined), without
/// opening a session: for commands that must report a bad file before they start.
pub fn check_policy_file(path: &Path, sandbox_root: Option<&PathBuf>) -> Result<(), Error> {
    load_policy_file(path, &PolicySet::builtin(sandbox_root)).map(|_| ())
}

/// The `[proxy]` table of a policy file: how `failcore proxy` runs, for MCP clients that start it with a
/// bare environment (where `FAILCORE_*` variables never arrive).
///
/// ```toml
/// [proxy]
/// store = "traces"        # a directory (relative to this file), jsonl:, sqlite: or postgres://
/// run_key = "my-agent"    # consecutive sessions record into one run
/// resume = "last"         # or offline = "last"
/// timeout_seconds = 120   # how long a request may wait for the server
/// durability = "synced"   # buffered, flushed (default) or synced
/// vault = "vault"         # where redacted outputs are sealed, to be replayed exactly
/// redact_key_file = "/etc/failcore/redact.key"   # the redaction key (kept out of the store)
/// ```
///
/// Relative paths (`store`, `vault`, `redact_key_file`) are relative to the policy file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProxySettings {
    pub store: Option<String>,
    pub resume: Option<String>,
    pub offline: Option<String>,
    pub run_key: Option<String>,
    pub timeout_seconds: Option<f64>,
    pub durability: Option<crate::Durability>,
    pub vault: Option<PathBuf>,
    pub redact_key_file: Option<PathBuf>,
    pub on_in_flight: Option<crate::session::InFlight>,
}

/// Reads the `[proxy]` table of a policy file (all settings absent when it has none).
pub fn proxy_settings(path: &Path) -> Result<ProxySettings, Error> {
    let err = |why: String| Error::Config(format!("policy file {}: {why}", path.display()));
    let doc = read_document(path)?;
    let Some(table) = doc.get("proxy") else {
        return Ok(ProxySettings::default());
    };
    let table = table
        .as_object()
        .ok_or_else(|| err("`proxy` must be a table".into()))?;
    const KEYS: &[&str] = &[
        "store",
        "resume",
        "offline",
        "run_key",
        "timeout_seconds",
        "durability",
        "vault",
        "redact_key_file",
        "on_in_flight",
    ];
    only_keys("proxy", table, KEYS).map_err(&err)?;
    let text = |key: &str| string("proxy", table, key).map_err(&err);
    let base = path.parent().unwrap_or(Path::new("."));
    let store = text("store")?.map(|spec| relative_store(base, &spec));
    let settings = ProxySettings {
        store,
        resume: text("resume")?,
        offline: text("offline")?,
        run_key: text("run_key")?,
        vault: text("vault")?.map(|p| base.join(p)),
        redact_key_file: text("redact_key_file")?.map(|p| base.join(p)),
        durability: text("durability")?
            .map(|d| {
                d.parse()
                    .map_err(|e: String| err(format!("`proxy.durability`: {e}")))
            })
            .transpose()?,
        on_in_flight: text("on_in_flight")?
            .map(|d| {
                d.parse()
                    .map_err(|e: String| err(format!("`proxy.on_in_flight`: {e}")))
            })
            .transpose()?,
        timeout_seconds: match table.get("timeout_seconds") {
            None => None,
            Some(v) => Some(
                v.as_f64()
                    .filter(|s| s.is_finite() && *s > 0.0)
                    .ok_or_else(|| err("`proxy.timeout_seconds` must be a number > 0".into()))?,
            ),
        },
    };
    if settings.resume.is_some() && settings.offline.is_some() {
        return Err(err("`proxy` sets both `resume` and `offline`".into()));
    }
    Ok(settings)
}

/// A store spec whose directory or file is relative to the policy file.
fn relative_store(base: &Path, spec: &str) -> String {
    let join = |p: &str| base.join(p).display().to_string();
    if let Some(dir) = spec.strip_prefix("jsonl:") {
        format!("jsonl:{}", join(dir))
    } else if let Some(file) = spec.strip_prefix("sqlite:") {
        format!("sqlite:{}", join(file))
    } else if spec.contains("://") {
        spec.to_owned()
    } else {
        join(spec)
    }
}

/// `[redact.<tool>]` tables: `args` and `output`, lists of JSON pointers.
fn redactions(v: Option<&Value>) -> Result<HashMap<String, RedactPaths>, String> {
    let mut out = HashMap::new();
    let Some(v) = v else { return Ok(out) };
    let tools = v
        .as_object()
        .ok_or("`redact` must be a table of `[redact.<tool>]` tables")?;
    for (tool, spec) in tools {
        let spec = spec.as_object().ok_or_else(|| {
            format!("`redact.{tool}` must be a table with `args` and/or `output`")
        })?;
        let at = format!("redact.{tool}");
        only_keys(&at, spec, &["args", "output"])?;
        let args = strings(&at, spec, "args")?.unwrap_or_default();
        let output = strings(&at, spec, "output")?.unwrap_or_default();
        if args.is_empty() && output.is_empty() {
            return Err(format!(
                "`{at}` names no path (`args = [..]`, `output = [..]`)"
            ));
        }
        let paths = RedactPaths::parse(&args, &output).map_err(|e| format!("`{at}`: {e}"))?;
        out.insert(tool.clone(), paths);
    }
    Ok(out)
}

struct Builder<'a> {
    specs: &'a Map<String, Value>,
    existing: &'a PolicySet,
    base: PathBuf,
    built: BTreeMap<String, PolicyRef>,
    visiting: HashSet<String>,
}

const FS_KEYS: &[&str] = &[
    "preset",
    "root",
    "paths",
    "read_only",
    "decodes_percent",
    "allow_hidden",
    "base",
    "expand_home",
];
const NET_KEYS: &[&str] = &["preset", "urls", "schemes", "hosts", "ports", "resolve"];
const EXEC_KEYS: &[&str] = &[
    "preset",
    "allow",
    "program_arg",
    "argv_arg",
    "deny_args",
    "root",
    "writable",
    "readable",
    "network",
    "cpu_seconds",
    "address_space_mib",
    "file_size_mib",
    "max_processes",
    "timeout_seconds",
    "env",
    "max_output_bytes",
    "unix_sockets",
    "accept_weaker",
];
const LIMITS_KEYS: &[&str] = &[
    "preset",
    "max_arg_bytes",
    "max_calls_per_tool",
    "rate",
    "max_calls",
    "max_seconds",
    "max_cost",
];
const DENY_KEYS: &[&str] = &["preset", "tools"];
const NO_SECRETS_KEYS: &[&str] = &["preset"];

impl Builder<'_> {
    fn resolve(&mut self, from: &str, name: &str) -> Result<PolicyRef, String> {
        if self.specs.contains_key(name) {
            return self.build(name);
        }
        self.existing
            .get(name)
            .cloned()
            .ok_or_else(|| format!("policy `{from}` refers to `{name}`, which is not defined"))
    }

    fn build(&mut self, name: &str) -> Result<PolicyRef, String> {
        if let Some(p) = self.built.get(name) {
            return Ok(p.clone());
        }
        if !self.visiting.insert(name.to_owned()) {
            return Err(format!("policy `{name}` refers to itself"));
        }
        let spec = self
            .specs
            .get(name)
            .and_then(Value::as_object)
            .ok_or_else(|| format!("policy `{name}` must be a table"))?;
        let kinds: Vec<&str> = ["preset", "all", "any", "not"]
            .into_iter()
            .filter(|k| spec.contains_key(*k))
            .collect();
        if kinds.len() != 1 {
            return Err(format!(
                "policy `{name}` must have exactly one of `preset`, `all`, `any`, `not`"
            ));
        }
        let policy: PolicyRef = match kinds[0] {
            "all" | "any" => {
                only_keys(name, spec, &[kinds[0]])?;
                let parts = strings(name, spec, kinds[0])?.unwrap_or_default();
                if parts.is_empty() {
                    return Err(format!("policy `{name}`: `{}` lists no policy", kinds[0]));
                }
                let mut refs = Vec::new();
                for part in &parts {
                    refs.push(self.resolve(name, part)?);
                }
                if kinds[0] == "all" {
                    Arc::new(All::new(name, refs))
                } else {
                    Arc::new(Any::new(name, refs))
                }
            }
            "not" => {
                only_keys(name, spec, &["not"])?;
                let inner = spec
                    .get("not")
                    .and_then(Value::as_str)
                    .ok_or_else(|| format!("policy `{name}`: `not` must name one policy"))?;
                let inner = self.resolve(name, inner)?;
                Arc::new(Not::new(name, inner))
            }
            _ => self.preset(name, spec)?,
        };
        self.visiting.remove(name);
        self.built.insert(name.to_owned(), policy.clone());
        Ok(policy)
    }

    fn preset(&self, name: &str, spec: &Map<String, Value>) -> Result<PolicyRef, String> {
        let preset = spec
            .get("preset")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("policy `{name}`: `preset` must be a string"))?;
        Ok(match preset {
            "fs" => {
                only_keys(name, spec, FS_KEYS)?;
                let root = string(name, spec, "root")?
                    .ok_or_else(|| format!("policy `{name}`: preset `fs` needs `root`"))?;
                let root = self.base.join(root);
                if !root.is_dir() {
                    return Err(format!(
                        "policy `{name}`: root {} is not a directory",
                        root.display()
                    ));
                }
                let mut p = FsPolicy::new(root)
                    .named(name)
                    .paths(strings(name, spec, "paths")?.unwrap_or_default())
                    .read_only(boolean(name, spec, "read_only")?.unwrap_or(false))
                    .decodes_percent(boolean(name, spec, "decodes_percent")?.unwrap_or(false))
                    .allow_hidden(boolean(name, spec, "allow_hidden")?.unwrap_or(false));
                // The file describes tools FailCore cannot see: where they resolve a relative path is
                // not known unless declared, so by default such a path is refused.
                p = match string(name, spec, "base")? {
                    Some(base) => p.base(self.base.join(base)),
                    None => p.refuse_relative(),
                };
                p = match spec.get("expand_home") {
                    None | Some(Value::Bool(false)) => p,
                    Some(Value::Bool(true)) => match std::env::var_os("HOME") {
                        Some(home) if !home.is_empty() => p.expands_home(PathBuf::from(home)),
                        _ => {
                            return Err(format!(
                            "policy `{name}`: `expand_home = true` but HOME is not set; give the \
                                 directory instead (`expand_home = \"/home/me\"`)"
                        ))
                        }
                    },
                    Some(Value::String(dir)) => p.expands_home(self.base.join(dir)),
                    Some(_) => {
                        return Err(format!(
                            "policy `{name}`: `expand_home` must be true, false or a directory"
                        ))
                    }
                };
                Arc::new(p)
            }
            "net" => {
                only_keys(name, spec, NET_KEYS)?;
                let mut p = NetPolicy::new()
                    .named(name)
                    .urls(strings(name, spec, "urls")?.unwrap_or_default());
                if let Some(s) = strings(name, spec, "schemes")? {
                    p = p.schemes(s);
                }
                if let Some(h) = strings(name, spec, "hosts")? {
                    p = p.hosts(h);
                }
                if let Some(ports) = numbers(name, spec, "ports")? {
                    let ports = ports
                        .into_iter()
                        .map(|n| {
                            u16::try_from(n)
                                .map_err(|_| format!("policy `{name}`: port {n} is out of range"))
                        })
                        .collect::<Result<Vec<u16>, String>>()?;
                    p = p.ports(ports);
                }
                if boolean(name, spec, "resolve")? == Some(false) {
                    p = p.no_resolve();
                }
                Arc::new(p)
            }
            "exec" => {
                only_keys(name, spec, EXEC_KEYS)?;
                let mut p = ExecPolicy::allow(strings(name, spec, "allow")?.unwrap_or_default())
                    .named(name);
                if let Some(a) = string(name, spec, "program_arg")? {
                    p = p.program_arg(a);
                }
                if let Some(a) = string(name, spec, "argv_arg")? {
                    p = p.argv_arg(Some(a));
                }
                if let Some(d) = strings(name, spec, "deny_args")? {
                    p = p.deny_args(d);
                }
                Arc::new(self.exec_sandbox(name, spec, p)?)
            }
            "limits" => {
                only_keys(name, spec, LIMITS_KEYS)?;
                let mut p = Limits::new().named(name);
                if let Some(n) = number(name, spec, "max_arg_bytes")? {
                    p = p.max_arg_bytes(usize::try_from(n).unwrap_or(usize::MAX));
                }
                if let Some(n) = number(name, spec, "max_calls_per_tool")? {
                    p = p.max_calls_per_tool(n);
                }
                if let Some(n) = number(name, spec, "max_calls")? {
                    p = p.max_calls(n);
                }
                if let Some(s) = seconds(name, spec.get("max_seconds"), "max_seconds")? {
                    p = p.max_duration(s);
                }
                if let Some(v) = spec.get("max_cost") {
                    let c = v
                        .as_f64()
                        .filter(|c| c.is_finite() && *c >= 0.0)
                        .ok_or_else(|| {
                            format!("policy `{name}`: `max_cost` must be a number ≥ 0")
                        })?;
                    p = p.max_cost(c);
                }
                if let Some(rate) = spec.get("rate") {
                    let r = rate.as_object().ok_or_else(|| {
                        format!("policy `{name}`: `rate` must be {{ calls = N, per_seconds = S }}")
                    })?;
                    only_keys(name, r, &["calls", "per_seconds"])?;
                    let calls = number(name, r, "calls")?
                        .ok_or_else(|| format!("policy `{name}`: `rate` needs `calls`"))?;
                    let per = seconds(name, r.get("per_seconds"), "per_seconds")?
                        .ok_or_else(|| format!("policy `{name}`: `rate` needs `per_seconds`"))?;
                    p = p.rate(u32::try_from(calls).unwrap_or(u32::MAX), per);
                }
                Arc::new(p)
            }
            "deny_tools" => {
                only_keys(name, spec, DENY_KEYS)?;
                Arc::new(
                    DenyTools::new(strings(name, spec, "tools")?.unwrap_or_default()).named(name),
                )
            }
            "no_secrets" => {
                only_keys(name, spec, NO_SECRETS_KEYS)?;
                Arc::new(NoSecrets::new().named(name))
            }
            other => {
                return Err(format!(
                    "policy `{name}`: unknown preset `{other}` (fs, net, exec, limits, deny_tools, \
                     no_secrets)"
                ))
            }
        })
    }
}

impl Builder<'_> {
    /// The sandbox settings of an `exec` preset. Paths are relative to the policy file and must exist now.
    fn exec_sandbox(
        &self,
        name: &str,
        spec: &Map<String, Value>,
        mut p: ExecPolicy,
    ) -> Result<ExecPolicy, String> {
        let existing = |key: &str, path: String| -> Result<PathBuf, String> {
            let path = self.base.join(path);
            if path.exists() {
                Ok(path)
            } else {
                Err(format!(
                    "policy `{name}`: `{key}` names {}, which does not exist",
                    path.display()
                ))
            }
        };
        if let Some(root) = string(name, spec, "root")? {
            let root = existing("root", root)?;
            if !root.is_dir() {
                return Err(format!(
                    "policy `{name}`: root {} is not a directory",
                    root.display()
                ));
            }
            p = p.root(root);
        }
        if let Some(paths) = strings(name, spec, "writable")? {
            let paths = paths
                .into_iter()
                .map(|w| existing("writable", w))
                .collect::<Result<Vec<_>, _>>()?;
            p = p.writable(paths);
        }
        if let Some(paths) = strings(name, spec, "readable")? {
            let paths = paths
                .into_iter()
                .map(|r| existing("readable", r))
                .collect::<Result<Vec<_>, _>>()?;
            p = p.readable(paths);
        }
        match spec.get("network") {
            None => {}
            Some(Value::String(s)) if s == "none" => p = p.network(Network::None),
            Some(Value::String(s)) if s == "all" => p = p.network(Network::All),
            Some(Value::Array(_)) => {
                let ports = numbers(name, spec, "network")?
                    .unwrap_or_default()
                    .into_iter()
                    .map(|n| {
                        u16::try_from(n)
                            .map_err(|_| format!("policy `{name}`: port {n} is out of range"))
                    })
                    .collect::<Result<Vec<u16>, String>>()?;
                p = p.network(Network::ConnectPorts(ports));
            }
            Some(_) => {
                return Err(format!(
                    "policy `{name}`: `network` must be \"none\", \"all\" or a list of TCP ports"
                ))
            }
        }
        if let Some(n) = number(name, spec, "cpu_seconds")? {
            p = p.cpu_seconds(n);
        }
        let mib = |key: &str| -> Result<Option<u64>, String> {
            number(name, spec, key)?
                .map(|n| {
                    n.checked_mul(1 << 20)
                        .ok_or_else(|| format!("policy `{name}`: `{key}` is too large"))
                })
                .transpose()
        };
        if let Some(bytes) = mib("address_space_mib")? {
            p = p.address_space(bytes);
        }
        if let Some(bytes) = mib("file_size_mib")? {
            p = p.file_size(bytes);
        }
        if let Some(n) = number(name, spec, "max_processes")? {
            if n == 0 {
                return Err(format!(
                    "policy `{name}`: `max_processes` must be at least 1 (the command itself)"
                ));
            }
            p = p.processes(n);
        }
        if let Some(t) = seconds(name, spec.get("timeout_seconds"), "timeout_seconds")? {
            p = p.timeout(t);
        }
        if let Some(env) = strings(name, spec, "env")? {
            p = p.env(env);
        }
        if let Some(n) = number(name, spec, "max_output_bytes")? {
            p = p.max_output(usize::try_from(n).unwrap_or(usize::MAX));
        }
        if let Some(paths) = strings(name, spec, "unix_sockets")? {
            p = p.unix_sockets(paths.into_iter().map(std::path::PathBuf::from));
        }
        if let Some(yes) = boolean(name, spec, "accept_weaker")? {
            p = p.accept_weaker(yes);
        }
        Ok(p)
    }
}

fn only_keys(name: &str, spec: &Map<String, Value>, allowed: &[&str]) -> Result<(), String> {
    match spec.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(format!(
            "policy `{name}`: unknown key `{k}` (allowed here: {})",
            allowed.join(", ")
        )),
        None => Ok(()),
    }
}

fn string(name: &str, spec: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match spec.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("policy `{name}`: `{key}` must be a string")),
    }
}

fn strings(
    name: &str,
    spec: &Map<String, Value>,
    key: &str,
) -> Result<Option<Vec<String>>, String> {
    match spec.get(key) {
        None => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("policy `{name}`: `{key}` must be a list of strings"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(format!(
            "policy `{name}`: `{key}` must be a list of strings"
        )),
    }
}

fn boolean(name: &str, spec: &Map<String, Value>, key: &str) -> Result<Option<bool>, String> {
    match spec.get(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(format!("policy `{name}`: `{key}` must be true or false")),
    }
}

fn number(name: &str, spec: &Map<String, Value>, key: &str) -> Result<Option<u64>, String> {
    match spec.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| format!("policy `{name}`: `{key}` must be a whole number ≥ 0")),
    }
}

fn numbers(name: &str, spec: &Map<String, Value>, key: &str) -> Result<Option<Vec<u64>>, String> {
    match spec.get(key) {
        None => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_u64().ok_or_else(|| {
                    format!("policy `{name}`: `{key}` must be a list of whole numbers")
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(format!(
            "policy `{name}`: `{key}` must be a list of whole numbers"
        )),
    }
}

fn seconds(name: &str, v: Option<&Value>, key: &str) -> Result<Option<Duration>, String> {
    match v {
        None => Ok(None),
        Some(v) => v
            .as_f64()
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
            .map(Some)
            .ok_or_else(|| format!("policy `{name}`: `{key}` must be a number of seconds ≥ 0")),
    }
}
