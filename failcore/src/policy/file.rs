//! The policy file (`failcore.toml` or JSON): named policies that `policy = "name"` resolves to.

use super::{
    All, Any, DenyTools, ExecPolicy, FsPolicy, Limits, NetPolicy, Network, Not, PolicyRef,
    PolicySet,
};
use crate::redact_paths::RedactPaths;
use crate::secrets::NoSecrets;
use crate::Error;
use serde::Deserialize;
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
/// session does not start. The file is read into typed tables (serde, each table closed to unknown keys),
/// so that an error in a TOML file names the line and column to change.
pub(crate) fn load_policy_file(path: &Path, existing: &PolicySet) -> Result<PolicyFile, Error> {
    let source = Source::read(path)?;
    let err = |why: String| Error::Config(format!("policy file {}: {why}", path.display()));
    let file = source.typed()?;
    let redact =
        redactions(&file.redact).map_err(|(tool, why)| err(source.at(&["redact", &tool], why)))?;
    if file.policy.is_empty() {
        return Err(err("defines no policy (`[policy.<name>]`)".into()));
    }
    let base = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let mut builder = Builder {
        specs: &file.policy,
        existing,
        base,
        built: BTreeMap::new(),
        visiting: HashSet::new(),
    };
    for name in file.policy.keys() {
        builder.build(name).map_err(|(at, why)| {
            let path: Vec<&str> = std::iter::once("policy")
                .chain(at.iter().map(String::as_str))
                .collect();
            err(source.at(&path, why))
        })?;
    }
    let defined = |name: &str| builder.built.contains_key(name) || existing.get(name).is_some();
    let guards = file
        .guard
        .iter()
        .map(|name| {
            if defined(name) {
                Ok(name.clone())
            } else {
                let why = format!("`guard` names `{name}`, which is not defined");
                Err(err(source.at(&["guard"], why)))
            }
        })
        .collect::<Result<_, _>>()?;
    let tools = file
        .tools
        .iter()
        .map(|(tool, name)| {
            if defined(name) {
                Ok((tool.clone(), name.clone()))
            } else {
                let why = format!("`tools.{tool}` names `{name}`, which is not defined");
                Err(err(source.at(&["tools", tool], why)))
            }
        })
        .collect::<Result<_, _>>()?;
    let top = source.document.as_object();
    let document = ["policy", "guard", "tools"]
        .into_iter()
        .filter_map(|k| Some((k.to_owned(), top?.get(k)?.clone())))
        .collect::<Map<String, Value>>();
    Ok(PolicyFile {
        policies: builder.built.into_iter().collect(),
        guards,
        tools,
        redact,
        document: Value::Object(document),
    })
}

/// A policy file's text, as read.
struct Source {
    path: PathBuf,
    text: String,
    toml: bool,
    /// The file as a JSON document: what decides calls is hashed from it (the digest of the policy set).
    document: Value,
}

impl Source {
    /// Reads a policy file: TOML, or JSON when the name ends in `.json`.
    fn read(path: &Path) -> Result<Source, Error> {
        let err = |why: String| Error::Config(format!("policy file {}: {why}", path.display()));
        let text =
            std::fs::read_to_string(path).map_err(|e| err(format!("cannot be read: {e}")))?;
        let toml = !path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"));
        let document = if toml {
            let t: toml::Table =
                toml::from_str(&text).map_err(|e| err(format!("is not valid TOML: {e}")))?;
            serde_json::to_value(t).map_err(|e| err(format!("cannot be read: {e}")))?
        } else {
            serde_json::from_str(&text).map_err(|e| err(format!("is not valid JSON: {e}")))?
        };
        Ok(Source {
            path: path.to_owned(),
            text,
            toml,
            document,
        })
    }

    /// The file's typed tables. A key that is not known, or a value of the wrong kind, is an error that
    /// names where it is (TOML: line and column, and the line itself; JSON: line and column).
    fn typed(&self) -> Result<FileTables, Error> {
        let err =
            |why: String| Error::Config(format!("policy file {}: {why}", self.path.display()));
        if !self.document.is_object() {
            return Err(err("must be a table with a `policy` table".into()));
        }
        let parsed = if self.toml {
            toml::from_str::<FileTables>(&self.text).map_err(|e| e.to_string())
        } else {
            serde_json::from_str::<FileTables>(&self.text).map_err(|e| e.to_string())
        };
        parsed.map_err(|e| err(e.trim_end().to_owned()))
    }

    /// `why`, with the line and column of the table or key at `path` when the file is TOML.
    fn at(&self, path: &[&str], why: String) -> String {
        match self.toml.then(|| locate(&self.text, path)).flatten() {
            Some((line, column)) => format!("{why} (line {line}, column {column})"),
            None => why,
        }
    }
}

/// The line and column (from 1) of the key that defines the TOML table or value at `path`.
fn locate(text: &str, path: &[&str]) -> Option<(usize, usize)> {
    let doc = toml::de::DeTable::parse(text).ok()?;
    let mut table = doc.get_ref();
    let mut at = None;
    for (i, part) in path.iter().enumerate() {
        let (key, value) = table.iter().find(|(k, _)| k.get_ref() == part)?;
        at = Some(key.span().start);
        if i + 1 < path.len() {
            table = value.get_ref().as_table()?;
        }
    }
    let before = text.get(..at?)?;
    let line = before.matches('\n').count() + 1;
    let column = before[before.rfind('\n').map_or(0, |n| n + 1)..]
        .chars()
        .count()
        + 1;
    Some((line, column))
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
    pub on_in_flight: Option<crate::registry::InFlight>,
}

/// Reads the `[proxy]` table of a policy file (all settings absent when it has none).
pub fn proxy_settings(path: &Path) -> Result<ProxySettings, Error> {
    let err = |why: String| Error::Config(format!("policy file {}: {why}", path.display()));
    let source = Source::read(path)?;
    let Some(table) = source.typed()?.proxy else {
        return Ok(ProxySettings::default());
    };
    let at = |key: &str, why: String| err(source.at(&["proxy", key], why));
    let base = path.parent().unwrap_or(Path::new("."));
    if let Some(s) = table
        .timeout_seconds
        .filter(|s| !(s.is_finite() && *s > 0.0))
    {
        return Err(at(
            "timeout_seconds",
            format!("`proxy.timeout_seconds` must be a number > 0, not {s}"),
        ));
    }
    if table.resume.is_some() && table.offline.is_some() {
        return Err(at(
            "offline",
            "`proxy` sets both `resume` and `offline`".into(),
        ));
    }
    Ok(ProxySettings {
        store: table.store.map(|spec| relative_store(base, &spec)),
        resume: table.resume,
        offline: table.offline,
        run_key: table.run_key,
        timeout_seconds: table.timeout_seconds,
        durability: table.durability.map(|d| d.0),
        vault: table.vault.map(|p| base.join(p)),
        redact_key_file: table.redact_key_file.map(|p| base.join(p)),
        on_in_flight: table.on_in_flight.map(|w| w.0),
    })
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

/// `[redact.<tool>]` tables as paths to redact; an error names its tool.
fn redactions(
    tables: &BTreeMap<String, RedactTable>,
) -> Result<HashMap<String, RedactPaths>, (String, String)> {
    let mut out = HashMap::new();
    for (tool, spec) in tables {
        let fail = |why: String| (tool.clone(), why);
        if spec.args.is_empty() && spec.output.is_empty() {
            return Err(fail(format!(
                "`redact.{tool}` names no path (`args = [..]`, `output = [..]`)"
            )));
        }
        let paths = RedactPaths::parse(&spec.args, &spec.output)
            .map_err(|e| fail(format!("`redact.{tool}`: {e}")))?;
        out.insert(tool.clone(), paths);
    }
    Ok(out)
}

/// The tables of a policy file, as serde reads them: no key goes unnoticed.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTables {
    /// `[policy.<name>]`.
    #[serde(default)]
    policy: BTreeMap<String, PolicySpec>,
    #[serde(default)]
    guard: Vec<String>,
    #[serde(default)]
    tools: BTreeMap<String, String>,
    #[serde(default)]
    proxy: Option<ProxyTable>,
    #[serde(default)]
    redact: BTreeMap<String, RedactTable>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProxyTable {
    store: Option<String>,
    resume: Option<String>,
    offline: Option<String>,
    run_key: Option<String>,
    timeout_seconds: Option<f64>,
    durability: Option<Parsed<crate::Durability>>,
    vault: Option<String>,
    redact_key_file: Option<String>,
    on_in_flight: Option<Parsed<crate::registry::InFlight>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RedactTable {
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    output: Vec<String>,
}

/// A value written as a string and parsed with `FromStr`: a bad one is an error where it is written.
struct Parsed<T>(T);

impl<'de, T: std::str::FromStr<Err = String>> Deserialize<'de> for Parsed<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map(Parsed).map_err(serde::de::Error::custom)
    }
}

/// A number of seconds ≥ 0 (whole or not).
#[derive(Clone, Copy)]
struct Seconds(Duration);

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = f64::deserialize(d)?;
        Duration::try_from_secs_f64(s)
            .map(Seconds)
            .map_err(|_| serde::de::Error::custom(format!("{s} is not a number of seconds ≥ 0")))
    }
}

/// `expand_home`: true, false, or the directory to expand `~` to.
#[derive(Deserialize)]
#[serde(untagged, expecting = "true, false or a directory")]
enum ExpandHome {
    Yes(bool),
    Dir(String),
}

/// The `network` of an exec sandbox: "none", "all" or a list of TCP ports.
#[derive(Deserialize)]
#[serde(untagged, expecting = "\"none\", \"all\" or a list of TCP ports")]
enum NetworkSpec {
    Named(String),
    Ports(Vec<u16>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rate {
    calls: u32,
    per_seconds: Seconds,
}

/// One `[policy.<name>]` table: every key any kind of policy takes. Which kind it is (`preset`, `all`,
/// `any`, `not`) decides which of them it may set, checked when it is built, so that a key that is not
/// known is reported with the keys allowed there.
#[derive(Deserialize, Default)]
struct PolicySpec {
    preset: Option<String>,
    all: Option<Vec<String>>,
    any: Option<Vec<String>>,
    not: Option<String>,
    // fs (and exec: root)
    root: Option<String>,
    paths: Option<Vec<String>>,
    read_only: Option<bool>,
    decodes_percent: Option<bool>,
    allow_hidden: Option<bool>,
    base: Option<String>,
    expand_home: Option<ExpandHome>,
    // net
    urls: Option<Vec<String>>,
    schemes: Option<Vec<String>>,
    hosts: Option<Vec<String>>,
    ports: Option<Vec<u16>>,
    resolve: Option<bool>,
    // exec
    allow: Option<Vec<String>>,
    program_arg: Option<String>,
    argv_arg: Option<String>,
    deny_args: Option<Vec<String>>,
    writable: Option<Vec<String>>,
    readable: Option<Vec<String>>,
    network: Option<NetworkSpec>,
    cpu_seconds: Option<u64>,
    address_space_mib: Option<u64>,
    file_size_mib: Option<u64>,
    max_processes: Option<u64>,
    timeout_seconds: Option<Seconds>,
    env: Option<Vec<String>>,
    max_output_bytes: Option<u64>,
    unix_sockets: Option<Vec<String>>,
    accept_weaker: Option<bool>,
    // limits
    max_arg_bytes: Option<u64>,
    max_calls_per_tool: Option<u64>,
    rate: Option<Rate>,
    max_calls: Option<u64>,
    max_seconds: Option<Seconds>,
    max_cost: Option<f64>,
    // deny_tools
    tools: Option<Vec<String>>,
    /// Keys no kind of policy takes.
    #[serde(flatten)]
    unknown: BTreeMap<String, serde::de::IgnoredAny>,
}

impl PolicySpec {
    /// The keys this table sets, by name.
    fn keys(&self) -> Vec<&'static str> {
        macro_rules! set {
            ($($field:ident),* $(,)?) => {{
                let mut keys = Vec::new();
                $(if self.$field.is_some() { keys.push(stringify!($field)); })*
                keys
            }};
        }
        set!(
            preset,
            all,
            any,
            not,
            root,
            paths,
            read_only,
            decodes_percent,
            allow_hidden,
            base,
            expand_home,
            urls,
            schemes,
            hosts,
            ports,
            resolve,
            allow,
            program_arg,
            argv_arg,
            deny_args,
            writable,
            readable,
            network,
            cpu_seconds,
            address_space_mib,
            file_size_mib,
            max_processes,
            timeout_seconds,
            env,
            max_output_bytes,
            unix_sockets,
            accept_weaker,
            max_arg_bytes,
            max_calls_per_tool,
            rate,
            max_calls,
            max_seconds,
            max_cost,
            tools,
        )
    }

    /// The keys a policy of this kind may set: `None` for an unknown preset (an error of its own).
    fn allowed(&self) -> Option<&'static [&'static str]> {
        Some(match (self.preset.as_deref(), &self.all, &self.any) {
            (Some(preset), ..) => match preset {
                "fs" => FS_KEYS,
                "net" => NET_KEYS,
                "exec" => EXEC_KEYS,
                "limits" => LIMITS_KEYS,
                "deny_tools" => DENY_KEYS,
                "no_secrets" => NO_SECRETS_KEYS,
                _ => return None,
            },
            (None, Some(_), _) => &["all"],
            (None, None, Some(_)) => &["any"],
            (None, None, None) => &["not"],
        })
    }

    /// The first key the table sets that its kind does not take.
    fn stray(&self) -> Option<(&str, &'static [&'static str])> {
        let allowed = self.allowed()?;
        self.keys()
            .into_iter()
            .find(|k| !allowed.contains(k))
            .or_else(|| self.unknown.keys().next().map(String::as_str))
            .map(|k| (k, allowed))
    }
}

struct Builder<'a> {
    specs: &'a BTreeMap<String, PolicySpec>,
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

/// A policy's error, with where it is: the policy's name, and the key at fault when there is one.
type BuildError = (Vec<String>, String);

impl Builder<'_> {
    fn resolve(&mut self, from: &str, name: &str) -> Result<PolicyRef, BuildError> {
        if self.specs.contains_key(name) {
            return self.build(name);
        }
        self.existing.get(name).cloned().ok_or_else(|| {
            (
                vec![from.to_owned()],
                format!("policy `{from}` refers to `{name}`, which is not defined"),
            )
        })
    }

    fn build(&mut self, name: &str) -> Result<PolicyRef, BuildError> {
        if let Some(p) = self.built.get(name) {
            return Ok(p.clone());
        }
        let fail = |why: String| (vec![name.to_owned()], why);
        if !self.visiting.insert(name.to_owned()) {
            return Err(fail(format!("policy `{name}` refers to itself")));
        }
        let specs = self.specs;
        let Some(spec) = specs.get(name) else {
            return Err(fail(format!("policy `{name}` is not defined")));
        };
        let kinds = [
            spec.preset.is_some(),
            spec.all.is_some(),
            spec.any.is_some(),
            spec.not.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() != 1 {
            return Err(fail(format!(
                "policy `{name}` must have exactly one of `preset`, `all`, `any`, `not`"
            )));
        }
        if let Some((key, allowed)) = spec.stray() {
            return Err((
                vec![name.to_owned(), key.to_owned()],
                format!(
                    "policy `{name}`: unknown key `{key}` (allowed here: {})",
                    allowed.join(", ")
                ),
            ));
        }
        let policy: PolicyRef = match (&spec.preset, &spec.all, &spec.any, &spec.not) {
            (None, Some(parts), None, None) | (None, None, Some(parts), None) => {
                let all = spec.all.is_some();
                let kind = if all { "all" } else { "any" };
                if parts.is_empty() {
                    return Err(fail(format!("policy `{name}`: `{kind}` lists no policy")));
                }
                let mut refs = Vec::new();
                for part in parts {
                    refs.push(self.resolve(name, part)?);
                }
                if all {
                    Arc::new(All::new(name, refs))
                } else {
                    Arc::new(Any::new(name, refs))
                }
            }
            (None, None, None, Some(inner)) => {
                let inner = self.resolve(name, inner)?;
                Arc::new(Not::new(name, inner))
            }
            (Some(preset), None, None, None) => self.preset(name, preset, spec).map_err(fail)?,
            _ => {
                return Err(fail(format!(
                    "policy `{name}` must have exactly one of `preset`, `all`, `any`, `not`"
                )))
            }
        };
        self.visiting.remove(name);
        self.built.insert(name.to_owned(), policy.clone());
        Ok(policy)
    }

    fn preset(&self, name: &str, preset: &str, spec: &PolicySpec) -> Result<PolicyRef, String> {
        let strings = |v: &Option<Vec<String>>| v.clone().unwrap_or_default();
        Ok(match preset {
            "fs" => {
                let root = spec
                    .root
                    .as_ref()
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
                    .paths(strings(&spec.paths))
                    .read_only(spec.read_only.unwrap_or(false))
                    .decodes_percent(spec.decodes_percent.unwrap_or(false))
                    .allow_hidden(spec.allow_hidden.unwrap_or(false));
                // The file describes tools FailCore cannot see: where they resolve a relative path is
                // not known unless declared, so by default such a path is refused.
                p = match &spec.base {
                    Some(base) => p.base(self.base.join(base)),
                    None => p.refuse_relative(),
                };
                p = match &spec.expand_home {
                    None | Some(ExpandHome::Yes(false)) => p,
                    Some(ExpandHome::Yes(true)) => match std::env::var_os("HOME") {
                        Some(home) if !home.is_empty() => p.expands_home(PathBuf::from(home)),
                        _ => {
                            return Err(format!(
                                "policy `{name}`: `expand_home = true` but HOME is not set; give \
                                 the directory instead (`expand_home = \"/home/me\"`)"
                            ))
                        }
                    },
                    Some(ExpandHome::Dir(dir)) => p.expands_home(self.base.join(dir)),
                };
                Arc::new(p)
            }
            "net" => {
                let mut p = NetPolicy::new().named(name).urls(strings(&spec.urls));
                if let Some(s) = &spec.schemes {
                    p = p.schemes(s.clone());
                }
                if let Some(h) = &spec.hosts {
                    p = p.hosts(h.clone());
                }
                if let Some(ports) = &spec.ports {
                    p = p.ports(ports.clone());
                }
                if spec.resolve == Some(false) {
                    p = p.no_resolve();
                }
                Arc::new(p)
            }
            "exec" => {
                let mut p = ExecPolicy::allow(strings(&spec.allow)).named(name);
                if let Some(a) = &spec.program_arg {
                    p = p.program_arg(a.clone());
                }
                if let Some(a) = &spec.argv_arg {
                    p = p.argv_arg(Some(a.clone()));
                }
                if let Some(d) = &spec.deny_args {
                    p = p.deny_args(d.clone());
                }
                Arc::new(self.exec_sandbox(name, spec, p)?)
            }
            "limits" => {
                let mut p = Limits::new().named(name);
                if let Some(n) = spec.max_arg_bytes {
                    p = p.max_arg_bytes(usize::try_from(n).unwrap_or(usize::MAX));
                }
                if let Some(n) = spec.max_calls_per_tool {
                    p = p.max_calls_per_tool(n);
                }
                if let Some(n) = spec.max_calls {
                    p = p.max_calls(n);
                }
                if let Some(Seconds(s)) = spec.max_seconds {
                    p = p.max_duration(s);
                }
                if let Some(c) = spec.max_cost {
                    if !(c.is_finite() && c >= 0.0) {
                        return Err(format!("policy `{name}`: `max_cost` must be a number ≥ 0"));
                    }
                    p = p.max_cost(c);
                }
                if let Some(rate) = &spec.rate {
                    p = p.rate(rate.calls, rate.per_seconds.0);
                }
                Arc::new(p)
            }
            "deny_tools" => Arc::new(DenyTools::new(strings(&spec.tools)).named(name)),
            "no_secrets" => Arc::new(NoSecrets::new().named(name)),
            other => {
                return Err(format!(
                    "policy `{name}`: unknown preset `{other}` (fs, net, exec, limits, deny_tools, \
                     no_secrets)"
                ))
            }
        })
    }

    /// The sandbox settings of an `exec` preset. Paths are relative to the policy file and must exist now.
    fn exec_sandbox(
        &self,
        name: &str,
        spec: &PolicySpec,
        mut p: ExecPolicy,
    ) -> Result<ExecPolicy, String> {
        let existing = |key: &str, path: &String| -> Result<PathBuf, String> {
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
        let all_existing = |key: &str, paths: &[String]| -> Result<Vec<PathBuf>, String> {
            paths.iter().map(|p| existing(key, p)).collect()
        };
        if let Some(root) = &spec.root {
            let root = existing("root", root)?;
            if !root.is_dir() {
                return Err(format!(
                    "policy `{name}`: root {} is not a directory",
                    root.display()
                ));
            }
            p = p.root(root);
        }
        if let Some(paths) = &spec.writable {
            p = p.writable(all_existing("writable", paths)?);
        }
        if let Some(paths) = &spec.readable {
            p = p.readable(all_existing("readable", paths)?);
        }
        match &spec.network {
            None => {}
            Some(NetworkSpec::Named(s)) if s == "none" => p = p.network(Network::None),
            Some(NetworkSpec::Named(s)) if s == "all" => p = p.network(Network::All),
            Some(NetworkSpec::Ports(ports)) => p = p.network(Network::ConnectPorts(ports.clone())),
            Some(NetworkSpec::Named(_)) => {
                return Err(format!(
                    "policy `{name}`: `network` must be \"none\", \"all\" or a list of TCP ports"
                ))
            }
        }
        if let Some(n) = spec.cpu_seconds {
            p = p.cpu_seconds(n);
        }
        let mib = |key: &str, n: Option<u64>| -> Result<Option<u64>, String> {
            n.map(|n| {
                n.checked_mul(1 << 20)
                    .ok_or_else(|| format!("policy `{name}`: `{key}` is too large"))
            })
            .transpose()
        };
        if let Some(bytes) = mib("address_space_mib", spec.address_space_mib)? {
            p = p.address_space(bytes);
        }
        if let Some(bytes) = mib("file_size_mib", spec.file_size_mib)? {
            p = p.file_size(bytes);
        }
        if let Some(n) = spec.max_processes {
            if n == 0 {
                return Err(format!(
                    "policy `{name}`: `max_processes` must be at least 1 (the command itself)"
                ));
            }
            p = p.processes(n);
        }
        if let Some(Seconds(t)) = spec.timeout_seconds {
            p = p.timeout(t);
        }
        if let Some(env) = &spec.env {
            p = p.env(env.clone());
        }
        if let Some(n) = spec.max_output_bytes {
            p = p.max_output(usize::try_from(n).unwrap_or(usize::MAX));
        }
        if let Some(paths) = &spec.unix_sockets {
            p = p.unix_sockets(paths.iter().map(PathBuf::from));
        }
        if let Some(yes) = spec.accept_weaker {
            p = p.accept_weaker(yes);
        }
        Ok(p)
    }
}
