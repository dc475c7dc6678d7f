//! Model calls as recorded steps: fingerprinted, policy-checked, replayed on resume, served offline, and
//! attributed in tokens and money.
//!
//! A model call is a step of the run like a tool call. Its tool is `model:<model id>` (effect
//! [`Effect::Model`]), its arguments are the request with the volatile fields removed (its identity, see
//! [`Models::identity`]), and its output holds the reply, the token usage and the cost:
//!
//! ```json
//! {"reply": {"body": {...}}, "usage": {"input": 812, "output": 41, "cached": 512}, "cost": 0.000153}
//! ```
//!
//! A streamed reply is recorded chunk by chunk as `{"chunks": ["<data of event 1>", ...]}`, the `data` of
//! each server-sent event as the provider sent it, so that a replay sends the same events in the same order.
//!
//! Requests and replies are in the provider's wire format (OpenAI Chat Completions, or any JSON API whose
//! request names its `model`): the same trace is written by the rig wrapper ([`crate::rig::Recorded`],
//! feature `rig`) and by `failcore llm-proxy`.
//!
//! [`Models`] holds what applies to the model calls of a run: the identity's exclusion list, the price
//! table, the allow-list and the budgets. Its [`Models::policy`] is the guard that refuses a call before the
//! request is sent, recorded as a block like any other (rules `model.allow`, `model.tokens`, `model.cost`).
//! ```
//! use failcore::model::{Models, Price};
//!
//! let models = Models::new()
//!     .price("gpt-4o-mini", Price::per_million(0.15, 0.60).cached(0.075))
//!     .allow(["gpt-4o-mini"])
//!     .max_tokens(200_000)
//!     .max_cost(1.50);
//! let session = failcore::Session::builder()
//!     .store(std::sync::Arc::new(failcore::store::MemoryStore::new()))
//!     .guard(models.policy())
//!     .open()
//!     .unwrap();
//! # drop(session);
//! ```

use crate::policy::{CallView, Policy, PolicyError, Verdict};
use crate::{DynamicTool, Effect, Error};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex};

/// The prefix of a model step's tool name: `model:gpt-4o-mini`.
pub const TOOL_PREFIX: &str = "model:";

/// Where model steps show in the trace (their module).
const ORIGIN: &str = "model";

/// How many distinct models one process may call: each is a tool whose descriptor lives as long as the
/// process, so a stream of made-up model names must not grow memory without bound (nor crowd out the
/// other dynamic tools, bounded by [`crate::MAX_DYNAMIC_TOOLS`]).
pub const MAX_MODELS: usize = 1024;

/// The tool a call to a model off the allow-list is refused as: one tool for every such name, so that
/// refused names never take a place in the tool table. The model asked for is in the step's arguments.
pub const UNLISTED_TOOL: &str = "model:(not allowed)";

/// The request fields left out of a model call's identity by default: they vary between runs without
/// changing what is asked (`user` and `metadata` tag the caller, `request_id` and `timestamp` are per
/// request). Change the list with [`Models::exclude`] and [`Models::include`].
pub const DEFAULT_EXCLUDE: &[&str] = &["user", "metadata", "request_id", "timestamp"];

/// The model id of a model step's tool name (`model:gpt-4o` gives `gpt-4o`), `None` for any other tool.
pub fn model_of(tool: &str) -> Option<&str> {
    tool.strip_prefix(TOOL_PREFIX)
}

/// Tokens used by one model call. `input` counts every prompt token, `cached` the part of them served from
/// the provider's prompt cache (billed at the cached price).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input: u64,
    pub output: u64,
    #[serde(default)]
    pub cached: u64,
    /// The part of `output` spent on reasoning (OpenAI's `reasoning_tokens`), billed as output.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reasoning: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Usage {
    /// Every token, input and output.
    pub fn total(&self) -> u64 {
        self.input.saturating_add(self.output)
    }

    /// Reads a provider's `usage` object: OpenAI Chat Completions (`prompt_tokens`, `completion_tokens`,
    /// `prompt_tokens_details.cached_tokens`), OpenAI Responses (`input_tokens`, `output_tokens`,
    /// `input_tokens_details.cached_tokens`), Anthropic Messages (`input_tokens`, `output_tokens`,
    /// `cache_read_input_tokens`, `cache_creation_input_tokens`, the cache reads counted in `input`).
    pub fn from_provider(usage: &Value) -> Option<Usage> {
        let n = |path: &str| usage.pointer(path).and_then(Value::as_u64);
        if let Some(input) = n("/prompt_tokens") {
            return Some(Usage {
                input,
                output: n("/completion_tokens").unwrap_or(0),
                cached: n("/prompt_tokens_details/cached_tokens").unwrap_or(0),
                reasoning: n("/completion_tokens_details/reasoning_tokens").unwrap_or(0),
            });
        }
        // Anthropic's `message_delta` may carry the output count alone.
        let (input, output) = match (n("/input_tokens"), n("/output_tokens")) {
            (None, None) => return None,
            (input, output) => (input.unwrap_or(0), output.unwrap_or(0)),
        };
        if let Some(cached) = n("/input_tokens_details/cached_tokens") {
            return Some(Usage {
                input,
                output,
                cached,
                reasoning: n("/output_tokens_details/reasoning_tokens").unwrap_or(0),
            });
        }
        let read = n("/cache_read_input_tokens").unwrap_or(0);
        let written = n("/cache_creation_input_tokens").unwrap_or(0);
        Some(Usage {
            input: input.saturating_add(read).saturating_add(written),
            output,
            cached: read,
            reasoning: 0,
        })
    }

    fn add(&mut self, other: Usage) {
        self.input = self.input.saturating_add(other.input);
        self.output = self.output.saturating_add(other.output);
        self.cached = self.cached.saturating_add(other.cached);
        self.reasoning = self.reasoning.saturating_add(other.reasoning);
    }
}

/// The price of a model, in money per million tokens (the unit is yours: use one currency throughout).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Price {
    pub input: f64,
    pub output: f64,
    /// Cached input tokens; the input price when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached: Option<f64>,
}

impl Price {
    /// Input and output prices per million tokens.
    pub fn per_million(input: f64, output: f64) -> Price {
        Price {
            input,
            output,
            cached: None,
        }
    }

    /// The price per million cached input tokens.
    pub fn cached(mut self, cached: f64) -> Price {
        self.cached = Some(cached);
        self
    }

    /// What `usage` costs.
    pub fn cost(&self, usage: Usage) -> f64 {
        let cached = usage.cached.min(usage.input);
        let fresh = usage.input - cached;
        (fresh as f64 * self.input
            + cached as f64 * self.cached.unwrap_or(self.input)
            + usage.output as f64 * self.output)
            / 1e6
    }

    fn valid(&self) -> bool {
        [self.input, self.output, self.cached.unwrap_or(0.0)]
            .iter()
            .all(|p| p.is_finite() && *p >= 0.0)
    }
}

/// A model's reply, as recorded and served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reply {
    /// A whole reply: its JSON body.
    Body(Value),
    /// A streamed reply: the `data` of each server-sent event, in order (`[DONE]` included).
    Chunks(Vec<String>),
}

impl Reply {
    /// The usage the reply reports: the body's `usage`, or for a stream the last chunk that carries one
    /// (OpenAI sends it when asked with `stream_options.include_usage`, and in the Responses API's
    /// `response.completed` event; Anthropic splits it over `message_start` and `message_delta`, whose
    /// output count wins).
    pub fn usage(&self) -> Option<Usage> {
        match self {
            Reply::Body(body) => body.get("usage").and_then(Usage::from_provider),
            Reply::Chunks(chunks) => {
                let mut found: Option<Usage> = None;
                for chunk in chunks {
                    let Ok(v) = serde_json::from_str::<Value>(chunk) else {
                        continue;
                    };
                    let usage = v
                        .get("usage")
                        .filter(|u| !u.is_null())
                        .or_else(|| v.pointer("/message/usage"))
                        .or_else(|| v.pointer("/response/usage").filter(|u| !u.is_null()));
                    if let Some(u) = usage.and_then(Usage::from_provider) {
                        found = Some(match found {
                            // Anthropic: message_delta carries the final output count only.
                            Some(prev) if u.input == 0 && prev.input > 0 => Usage {
                                output: u.output,
                                ..prev
                            },
                            _ => u,
                        });
                    }
                }
                found
            }
        }
    }
}

/// What a model call gives back: the reply, its usage and cost, and whether it was served from the trace.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelReply {
    pub reply: Reply,
    pub usage: Option<Usage>,
    /// The cost by the price table, when the model has a price and the reply reports its usage.
    pub cost: Option<f64>,
}

/// The recorded output of a model step.
#[derive(Serialize, Deserialize)]
struct Recorded {
    reply: Reply,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    usage: Option<Usage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cost: Option<f64>,
}

impl Recorded {
    /// The recorded output, as serde writes it, with the reply moved in rather than copied: a reply is
    /// the largest part of a model step, and it is not copied on its way to the trace.
    fn into_value(self) -> Value {
        let reply = match self.reply {
            Reply::Body(body) => serde_json::json!({ "body": body }),
            Reply::Chunks(chunks) => serde_json::json!({ "chunks": chunks }),
        };
        let mut out = serde_json::Map::new();
        out.insert("reply".into(), reply);
        if let Some(usage) = self.usage {
            out.insert("usage".into(), serde_json::json!(usage));
        }
        if let Some(cost) = self.cost {
            out.insert("cost".into(), serde_json::json!(cost));
        }
        Value::Object(out)
    }

    /// Reads a recorded output, moving the reply out rather than copying it.
    fn from_value(output: Value) -> Result<Recorded, serde_json::Error> {
        use serde::de::Error as _;
        let Value::Object(mut fields) = output else {
            return Err(serde_json::Error::custom(
                "a model step's output is an object",
            ));
        };
        let reply = match fields.remove("reply") {
            Some(Value::Object(mut reply)) if reply.len() == 1 => {
                match (reply.remove("body"), reply.remove("chunks")) {
                    (Some(body), None) => Reply::Body(body),
                    (None, Some(chunks)) => Reply::Chunks(serde_json::from_value(chunks)?),
                    _ => return Err(serde_json::Error::custom("`reply` is `body` or `chunks`")),
                }
            }
            _ => return Err(serde_json::Error::custom("`reply` is `body` or `chunks`")),
        };
        // As serde reads an `Option`: absent or `null` is `None`.
        let usage = match fields.remove("usage") {
            Some(Value::Null) | None => None,
            Some(usage) => Some(serde_json::from_value(usage)?),
        };
        let cost = match fields.remove("cost") {
            Some(Value::Null) | None => None,
            Some(cost) => Some(serde_json::from_value(cost)?),
        };
        Ok(Recorded { reply, usage, cost })
    }
}

/// The usage and cost a model step records, read from a trace: `None` unless `tool` is a model step's and
/// `output` its recorded output.
pub fn recorded_usage(tool: &str, output: &Value) -> Option<(Usage, Option<f64>)> {
    model_of(tool)?;
    let usage = Usage::deserialize(output.get("usage")?).ok()?;
    let cost = output.get("cost").and_then(Value::as_f64);
    Some((usage, cost))
}

#[derive(Debug, Clone, Default)]
struct Config {
    exclude: Vec<String>,
    prices: BTreeMap<String, Price>,
    allow: Option<BTreeSet<String>>,
    max_tokens: Option<u64>,
    max_cost: Option<f64>,
    upstream_ca: Vec<std::path::PathBuf>,
}

/// What the run has spent on model calls that executed (replayed ones are free).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Spent {
    pub usage: Usage,
    pub cost: f64,
    pub calls: u64,
}

/// The model calls of a run: identity, prices, allow-list, budgets, and what was spent. Clones share the
/// spending, so define one per session (as [`crate::policy::Limits`]).
#[derive(Debug, Clone)]
pub struct Models {
    config: Arc<Config>,
    spent: Arc<Mutex<Spent>>,
}

impl Default for Models {
    fn default() -> Self {
        Self::new()
    }
}

impl Models {
    /// The default exclusion list, no prices, every model allowed, no budget.
    pub fn new() -> Models {
        Models {
            config: Arc::new(Config {
                exclude: DEFAULT_EXCLUDE.iter().map(|s| (*s).to_owned()).collect(),
                ..Config::default()
            }),
            spent: Arc::default(),
        }
    }

    fn config(&mut self) -> &mut Config {
        Arc::make_mut(&mut self.config)
    }

    /// Leaves a request field out of the identity: a top-level key (`user`) or a dotted path
    /// (`messages.*.name`, where `*` is every element of an array or every value of an object).
    pub fn exclude(mut self, path: impl Into<String>) -> Self {
        let path = path.into();
        if !self.config.exclude.contains(&path) {
            self.config().exclude.push(path);
        }
        self
    }

    /// Puts a field of the default exclusion list back into the identity.
    pub fn include(mut self, path: &str) -> Self {
        self.config().exclude.retain(|p| p != path);
        self
    }

    /// The price of `model`.
    pub fn price(mut self, model: impl Into<String>, price: Price) -> Self {
        self.config().prices.insert(model.into(), price);
        self
    }

    /// Only these models may be called (rule `model.allow`); every model when never called.
    pub fn allow<S: Into<String>>(mut self, models: impl IntoIterator<Item = S>) -> Self {
        let allow = self.config().allow.get_or_insert_with(BTreeSet::new);
        allow.extend(models.into_iter().map(Into::into));
        self
    }

    /// No model call once the run's executed calls have used `tokens` (rule `model.tokens`).
    pub fn max_tokens(mut self, tokens: u64) -> Self {
        self.config().max_tokens = Some(tokens);
        self
    }

    /// No model call once the run's executed calls have cost `budget` (rule `model.cost`).
    pub fn max_cost(mut self, budget: f64) -> Self {
        self.config().max_cost = Some(budget);
        self
    }

    /// Reads a model configuration (TOML):
    ///
    /// ```toml
    /// allow = ["gpt-4o-mini"]      # optional: the allow-list
    /// max_tokens = 200000          # optional: the token budget of the run
    /// max_cost = 1.5               # optional: the money budget of the run
    /// exclude = ["seed"]           # optional: more fields left out of the identity
    /// include = ["user"]           # optional: default exclusions put back
    /// upstream_ca = ["corp-ca.pem"] # optional: CAs the LLM proxy trusts for its upstream
    ///
    /// [prices."gpt-4o-mini"]       # per million tokens
    /// input = 0.15
    /// output = 0.60
    /// cached = 0.075               # optional
    /// ```
    pub fn from_toml(text: &str) -> Result<Models, Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            allow: Option<Vec<String>>,
            max_tokens: Option<u64>,
            max_cost: Option<f64>,
            #[serde(default)]
            exclude: Vec<String>,
            #[serde(default)]
            include: Vec<String>,
            #[serde(default)]
            prices: BTreeMap<String, Price>,
            #[serde(default)]
            upstream_ca: Vec<std::path::PathBuf>,
        }
        let file: File =
            toml::from_str(text).map_err(|e| Error::Config(format!("model configuration: {e}")))?;
        let mut models = Models::new();
        if let Some(allow) = file.allow {
            models = models.allow(allow);
        }
        if let Some(n) = file.max_tokens {
            models = models.max_tokens(n);
        }
        if let Some(c) = file.max_cost {
            if !c.is_finite() || c < 0.0 {
                return Err(Error::Config(format!(
                    "model configuration: max_cost must be a non-negative number, not {c}"
                )));
            }
            models = models.max_cost(c);
        }
        for p in file.exclude {
            models = models.exclude(p);
        }
        for p in &file.include {
            models = models.include(p);
        }
        models.config().upstream_ca = file.upstream_ca;
        for (model, price) in file.prices {
            if !price.valid() {
                return Err(Error::Config(format!(
                    "model configuration: the prices of `{model}` must be non-negative numbers"
                )));
            }
            models = models.price(model, price);
        }
        Ok(models)
    }

    /// The CA files the configuration names for the LLM proxy's upstream (`upstream_ca`), as written:
    /// a relative path is relative to the configuration file, which the caller knows.
    pub fn upstream_ca(&self) -> &[std::path::PathBuf] {
        &self.config.upstream_ca
    }

    /// The exclusion list in force.
    pub fn excluded(&self) -> &[String] {
        &self.config.exclude
    }

    /// What the run's executed model calls have used so far.
    pub fn spent(&self) -> Spent {
        *self.spent.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The guard that enforces the allow-list and the budgets on model steps (and lets every other call
    /// through): add it to the session with [`crate::SessionBuilder::guard`].
    pub fn policy(&self) -> ModelPolicy {
        ModelPolicy {
            models: self.clone(),
        }
    }

    /// A request's identity: the request with the excluded fields removed. Its canonical JSON is what is
    /// fingerprinted and recorded as the step's arguments.
    pub fn identity(&self, request: &Value) -> Value {
        let mut id = request.clone();
        for path in &self.config.exclude {
            let parts: Vec<&str> = path.split('.').collect();
            remove_path(&mut id, &parts);
        }
        id
    }

    /// The cost of `usage` on `model` by the price table.
    pub fn cost(&self, model: &str, usage: Usage) -> Option<f64> {
        self.config.prices.get(model).map(|p| p.cost(usage))
    }

    /// Makes one model call through the lifecycle of the current (else the default) session: refuses it
    /// when the session's policies do, serves it from the trace when resuming or offline (then `send` is
    /// dropped unpolled: nothing is sent), and otherwise awaits `send` and records its reply, usage and
    /// cost. `request` is the provider request; it must name its `model`.
    pub async fn call<F>(&self, request: &Value, send: F) -> Result<ModelReply, Error>
    where
        F: Future<Output = Result<Reply, String>> + Send + 'static,
    {
        let model = request
            .get("model")
            .and_then(Value::as_str)
            .filter(|m| !m.is_empty())
            .ok_or_else(|| Error::InvalidArguments {
                tool: "model".into(),
                reason: "the request names no `model`".into(),
            })?
            .to_owned();
        let listed = self
            .config
            .allow
            .as_ref()
            .is_none_or(|allow| allow.contains(&model));
        // The allow-list is consulted before a tool is made for the model, so that names it refuses
        // cannot fill the table: they are all refused (and recorded) as one tool.
        let tool = if listed {
            model_tool(&model)?
        } else {
            DynamicTool::new(UNLISTED_TOOL, ORIGIN, Effect::Model)?
        };
        let identity = self.identity(request);
        let this = self.clone();
        let body = Box::pin(async move {
            let reply = send.await?;
            let usage = reply.usage();
            let cost = usage.and_then(|u| this.cost(&model, u));
            this.charge(usage, cost);
            Ok(Recorded { reply, usage, cost }.into_value())
        });
        let output = tool.call(&identity, body).await?;
        let recorded = Recorded::from_value(output).map_err(|e| Error::Tool {
            tool: tool.info().name().to_owned(),
            message: format!("the recorded model reply is not one FailCore wrote: {e}"),
        })?;
        Ok(ModelReply {
            reply: recorded.reply,
            usage: recorded.usage,
            cost: recorded.cost,
        })
    }

    fn charge(&self, usage: Option<Usage>, cost: Option<f64>) {
        let mut s = self.spent.lock().unwrap_or_else(|e| e.into_inner());
        s.calls += 1;
        if let Some(u) = usage {
            s.usage.add(u);
        }
        let cost = cost.filter(|c| c.is_finite() && *c > 0.0);
        if let Some(c) = cost {
            s.cost += c;
        }
        drop(s);
        // The run's total, which every `Limits` of the run counts (the body runs inside the model step).
        let _ = crate::session::CONTEXT.try_with(|ctx| {
            ctx.session
                .inner
                .ledger
                .spend(cost.unwrap_or(0.0), usage.map_or(0, |u| u.total()));
        });
    }
}

/// The tool of a model's steps, within [`MAX_MODELS`].
fn model_tool(model: &str) -> Result<DynamicTool, Error> {
    static SEEN: std::sync::OnceLock<Mutex<BTreeSet<String>>> = std::sync::OnceLock::new();
    let mut seen = SEEN
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if !seen.contains(model) {
        if seen.len() >= MAX_MODELS {
            return Err(Error::InvalidArguments {
                tool: "model".into(),
                reason: format!(
                    "more than {MAX_MODELS} distinct models called in one process: refusing `{model}`"
                ),
            });
        }
        seen.insert(model.to_owned());
    }
    drop(seen);
    DynamicTool::new(&format!("{TOOL_PREFIX}{model}"), ORIGIN, Effect::Model)
}

fn remove_path(value: &mut Value, path: &[&str]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    match value {
        Value::Object(map) => {
            if rest.is_empty() {
                if *first == "*" {
                    map.clear();
                } else {
                    map.remove(*first);
                }
            } else if *first == "*" {
                map.values_mut().for_each(|v| remove_path(v, rest));
            } else if let Some(v) = map.get_mut(*first) {
                remove_path(v, rest);
            }
        }
        Value::Array(items) if *first == "*" => {
            if rest.is_empty() {
                items.clear();
            } else {
                items.iter_mut().for_each(|v| remove_path(v, rest));
            }
        }
        _ => {}
    }
}

/// The guard of [`Models`]: refuses a model call to a model not on the allow-list, or once the run's budget
/// in tokens or money is used.
#[derive(Debug, Clone)]
pub struct ModelPolicy {
    models: Models,
}

impl Policy for ModelPolicy {
    fn name(&self) -> &str {
        "models"
    }

    fn check(&self, call: &CallView<'_>) -> Result<Verdict, PolicyError> {
        let tool = call.tool();
        if tool.effect() != Effect::Model {
            return Ok(Verdict::Allow);
        }
        let model = if tool.name() == UNLISTED_TOOL {
            call.args()
                .get("model")
                .and_then(Value::as_str)
                .unwrap_or("(unnamed)")
        } else {
            model_of(tool.name()).unwrap_or(tool.name())
        };
        let config = &self.models.config;
        if let Some(allow) = &config.allow {
            if !allow.contains(model) {
                let list: Vec<&str> = allow.iter().map(String::as_str).collect();
                return Ok(Verdict::deny(
                    "model.allow",
                    format!(
                        "model `{model}` is not on the allow-list ({})",
                        list.join(", ")
                    ),
                ));
            }
        }
        let spent = self
            .models
            .spent
            .lock()
            .map_err(|_| PolicyError("the model spending counters are poisoned".into()))?;
        if let Some(max) = config.max_tokens {
            if spent.usage.total() >= max {
                return Ok(Verdict::deny(
                    "model.tokens",
                    format!(
                        "the run has used {} tokens of its budget of {max}",
                        spent.usage.total()
                    ),
                ));
            }
        }
        if let Some(max) = config.max_cost {
            if spent.cost >= max {
                return Ok(Verdict::deny(
                    "model.cost",
                    format!(
                        "the run's model calls have cost {:.6} of its budget of {max}",
                        spent.cost
                    ),
                ));
            }
        }
        Ok(Verdict::Allow)
    }
}

/// Splits server-sent events: feed bytes as they arrive, take the `data` of each complete event.
///
/// Linear in what it is fed: each byte is looked at once (a chunk resumes the scan where the last one
/// stopped), and what is kept is only the event still incomplete. Lines end with CRLF, LF or CR, as the
/// event-stream grammar says, a CRLF split across two chunks included; an event ends at an empty line.
#[derive(Debug, Default)]
pub struct SseSplitter {
    buf: Vec<u8>,
    /// Where the scan goes on.
    pos: usize,
    /// Where the current line began.
    line_start: usize,
    /// The last byte scanned was a CR: an LF right after it belongs to the same line ending.
    cr: bool,
}

impl SseSplitter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds bytes, returns the `data` of each event they complete (events without data are skipped;
    /// multi-line data is joined with `\n`, as the event-stream grammar says).
    pub fn push(&mut self, bytes: &[u8]) -> Vec<String> {
        self.buf.extend_from_slice(bytes);
        let mut events = Vec::new();
        let mut event_start = 0;
        while self.pos < self.buf.len() {
            let b = self.buf[self.pos];
            if std::mem::take(&mut self.cr) && b == b'\n' {
                self.pos += 1;
                if event_start + 1 == self.pos {
                    event_start = self.pos;
                }
                self.line_start = self.pos;
                continue;
            }
            if b != b'\n' && b != b'\r' {
                self.pos += 1;
                continue;
            }
            let blank = self.pos == self.line_start;
            let line_start = self.line_start;
            self.cr = b == b'\r';
            self.pos += 1;
            self.line_start = self.pos;
            if blank {
                if let Some(data) = event_data(&self.buf[event_start..line_start]) {
                    events.push(data);
                }
                event_start = self.pos;
            }
        }
        if event_start > 0 {
            self.buf.drain(..event_start);
            self.pos -= event_start;
            self.line_start -= event_start;
        }
        events
    }

    /// The data of a last event not followed by a blank line, if any.
    pub fn finish(&mut self) -> Option<String> {
        let rest = std::mem::take(&mut self.buf);
        (self.pos, self.line_start, self.cr) = (0, 0, false);
        event_data(&rest)
    }
}

fn event_data(event: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(event);
    let mut data: Option<String> = None;
    for line in text.split(['\n', '\r']) {
        let Some(rest) = line.strip_prefix("data") else {
            continue;
        };
        let value = match rest.strip_prefix(':') {
            Some(v) => v.strip_prefix(' ').unwrap_or(v),
            None if rest.is_empty() => "",
            None => continue,
        };
        match &mut data {
            Some(d) => {
                d.push('\n');
                d.push_str(value);
            }
            None => data = Some(value.to_owned()),
        }
    }
    data.filter(|d| !d.trim().is_empty())
}

/// A request's JSON object, or a clear error. An object that names a key twice, at any depth, is refused:
/// parsers disagree on which of the two counts (serde keeps the last, others the first), so the request
/// a policy decides on and records could differ from the one an upstream reads from the same bytes.
/// Refusing keeps the bytes forwarded exactly as the client sent them, and unambiguous.
pub fn parse_request(body: &[u8]) -> Result<Value, Error> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = serde::de::DeserializeSeed::deserialize(crate::unique_json::Unique, &mut de)
        .and_then(|v| de.end().map(|()| v));
    match parsed {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(Error::InvalidArguments {
            tool: "model".into(),
            reason: "the request body must be a JSON object".into(),
        }),
        Err(e) => Err(Error::InvalidArguments {
            tool: "model".into(),
            reason: format!("the request body is not JSON: {e}"),
        }),
    }
}

/// Whether a request asks for a streamed reply (`"stream": true`).
pub fn is_streaming(request: &Value) -> bool {
    request.get("stream").and_then(Value::as_bool) == Some(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn recorded_outputs_are_written_and_read_as_serde_does() {
        let usage = Usage {
            input: 3,
            output: 2,
            cached: 1,
            ..Usage::default()
        };
        for recorded in [
            Recorded {
                reply: Reply::Body(json!({"z": 1, "a": [true, null]})),
                usage: Some(usage),
                cost: Some(0.5),
            },
            Recorded {
                reply: Reply::Chunks(vec!["{}".into(), "[DONE]".into()]),
                usage: None,
                cost: None,
            },
        ] {
            let derived = serde_json::to_value(&recorded).unwrap();
            let moved = Recorded {
                reply: recorded.reply.clone(),
                ..recorded
            }
            .into_value();
            assert_eq!(moved, derived);
            let back = Recorded::from_value(moved).unwrap();
            assert_eq!(
                serde_json::to_value(&back).unwrap(),
                derived,
                "read back as written"
            );
        }
        let nulls = json!({"reply": {"body": 1}, "usage": null, "cost": null});
        assert_eq!(
            serde_json::to_value(Recorded::from_value(nulls.clone()).unwrap()).unwrap(),
            serde_json::to_value(serde_json::from_value::<Recorded>(nulls).unwrap()).unwrap()
        );
        for bad in [
            json!([]),
            json!({"reply": {"body": 1, "chunks": []}}),
            json!({"reply": {"text": 1}}),
            json!({"reply": {"chunks": [1]}}),
            json!({"reply": {"body": 1}, "usage": "x"}),
        ] {
            assert!(Recorded::from_value(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn identity_leaves_out_the_volatile_fields_and_keeps_the_rest() {
        let models = Models::new().exclude("messages.*.name");
        let a = json!({"model": "m", "user": "u1", "metadata": {"k": 1}, "temperature": 0.2,
            "messages": [{"role": "user", "content": "hi", "name": "alice"}]});
        let b = json!({"model": "m", "user": "u2", "temperature": 0.2,
            "messages": [{"role": "user", "content": "hi", "name": "bob"}]});
        assert_eq!(models.identity(&a), models.identity(&b));
        let c = json!({"model": "m", "temperature": 0.3,
            "messages": [{"role": "user", "content": "hi"}]});
        assert_ne!(models.identity(&a), models.identity(&c));
        let back = Models::new().include("user");
        assert_ne!(back.identity(&a), back.identity(&b));
    }

    #[test]
    fn usage_is_read_from_each_provider_shape() {
        let openai = json!({"prompt_tokens": 100, "completion_tokens": 20,
            "prompt_tokens_details": {"cached_tokens": 60}});
        assert_eq!(
            Usage::from_provider(&openai),
            Some(Usage {
                input: 100,
                output: 20,
                cached: 60,
                ..Usage::default()
            })
        );
        let anthropic = json!({"input_tokens": 10, "output_tokens": 5,
            "cache_read_input_tokens": 90});
        assert_eq!(
            Usage::from_provider(&anthropic),
            Some(Usage {
                input: 100,
                output: 5,
                cached: 90,
                ..Usage::default()
            })
        );
        assert_eq!(Usage::from_provider(&json!({"tokens": 3})), None);
        let stream = Reply::Chunks(vec![
            json!({"choices": [{"delta": {"content": "a"}}], "usage": null}).to_string(),
            json!({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 2}})
                .to_string(),
            "[DONE]".into(),
        ]);
        assert_eq!(
            stream.usage(),
            Some(Usage {
                input: 7,
                output: 2,
                cached: 0,
                ..Usage::default()
            })
        );
    }

    #[test]
    fn cost_bills_cached_tokens_at_the_cached_price() {
        let p = Price::per_million(2.0, 8.0).cached(0.5);
        let u = Usage {
            input: 1_000_000,
            output: 500_000,
            cached: 400_000,
            ..Usage::default()
        };
        // 600k fresh at 2, 400k cached at 0.5, 500k out at 8.
        assert!((p.cost(u) - (1.2 + 0.2 + 4.0)).abs() < 1e-9);
        let no_cache_price = Price::per_million(2.0, 8.0);
        assert!((no_cache_price.cost(u) - (2.0 + 4.0)).abs() < 1e-9);
    }

    #[test]
    fn sse_line_endings_of_every_kind_end_events_even_split_across_chunks() {
        let stream = b"data: a\r\n\r\ndata: b\n\ndata: c\r\rdata: d\n\r\ndata: e\r\n\n: note\n\ndata: f1\ndata: f2\n\n";
        let want = ["a", "b", "c", "d", "e", "f1\nf2"];
        // Whole, and one byte at a time (every CRLF split between two chunks).
        let mut whole = SseSplitter::new();
        assert_eq!(whole.push(stream), want);
        let mut bytewise = SseSplitter::new();
        let got: Vec<String> = stream.iter().flat_map(|b| bytewise.push(&[*b])).collect();
        assert_eq!(got, want);
        assert_eq!(bytewise.finish(), None);
        // A long event fed in small chunks keeps only itself, and comes out whole.
        let big = format!("data: {}\n\n", "x".repeat(100_000));
        let mut s = SseSplitter::new();
        let mut out = Vec::new();
        for chunk in big.as_bytes().chunks(7) {
            out.extend(s.push(chunk));
            assert!(s.buf.len() <= big.len());
        }
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].len(), 100_000);
        assert!(s.buf.is_empty());
    }

    proptest::proptest! {
        /// However a stream is cut into chunks, the same events come out as from the whole of it.
        #[test]
        fn sse_events_do_not_depend_on_how_the_stream_is_cut(
            stream in proptest::collection::vec(
                proptest::sample::select(vec![b'\n', b'\r', b'd', b'a', b't', b':', b' ', b'x']),
                0..300,
            ),
            cuts in proptest::collection::vec(0usize..300, 0..20),
        ) {
            let mut whole = SseSplitter::new();
            let mut want = whole.push(&stream);
            want.extend(whole.finish());
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(stream.len())).collect();
            cuts.sort_unstable();
            let mut chunked = SseSplitter::new();
            let mut got = Vec::new();
            let mut from = 0;
            for cut in cuts.into_iter().chain([stream.len()]) {
                got.extend(chunked.push(&stream[from..cut]));
                from = cut;
            }
            got.extend(chunked.finish());
            proptest::prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn sse_events_split_across_reads() {
        let mut s = SseSplitter::new();
        assert!(s.push(b"data: {\"a\":").is_empty());
        assert_eq!(
            s.push(b"1}\n\n: comment\n\ndata: [DONE]\r\n\r\n"),
            vec!["{\"a\":1}".to_owned(), "[DONE]".to_owned()]
        );
        assert_eq!(s.push(b"event: x\ndata: a\ndata: b"), Vec::<String>::new());
        assert_eq!(s.finish().as_deref(), Some("a\nb"));
    }

    #[test]
    fn the_configuration_file_is_checked() {
        let m = Models::from_toml(
            "allow = [\"a\"]\nmax_tokens = 10\nexclude = [\"seed\"]\n[prices.a]\ninput = 1.0\noutput = 2.0\n",
        )
        .unwrap();
        assert!(m.excluded().iter().any(|p| p == "seed"));
        assert_eq!(
            m.cost(
                "a",
                Usage {
                    input: 1_000_000,
                    output: 0,
                    cached: 0,
                    ..Usage::default()
                }
            ),
            Some(1.0)
        );
        let e = Models::from_toml("[prices.a]\ninput = -1.0\noutput = 2.0\n").unwrap_err();
        assert!(e.to_string().contains("non-negative"), "{e}");
        let e = Models::from_toml("alow = [\"a\"]\n").unwrap_err();
        assert!(e.to_string().contains("alow"), "{e}");
    }

    fn reply(prompt: u64) -> Reply {
        Reply::Body(
            json!({"choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": 10}}),
        )
    }

    /// A `Limits` budget of the run counts the model steps' tokens and money with nothing wired to it.
    #[tokio::test]
    async fn a_limits_budget_counts_model_spending_by_itself() {
        use crate::policy::Limits;
        let models = Models::new().price("m", Price::per_million(1.0, 1.0));
        let session = crate::Session::builder()
            .store(std::sync::Arc::new(crate::store::MemoryStore::new()))
            .guard(models.policy())
            .guard(Limits::new().max_tokens(200))
            .open()
            .unwrap();
        let call = |n: u64| {
            let request =
                json!({"model": "m", "messages": [{"role": "user", "content": n.to_string()}]});
            let models = models.clone();
            let session = session.clone();
            async move {
                session
                    .scope(models.call(&request, async move { Ok(reply(100 + n)) }))
                    .await
            }
        };
        // 111, then 223 tokens: the third call finds the budget spent.
        call(1).await.unwrap();
        call(2).await.unwrap();
        let refused = call(3).await.unwrap_err();
        assert!(
            matches!(&refused, Error::Blocked { rule, .. } if rule == "limits.tokens"),
            "{refused}"
        );
        assert_eq!(session.spent_tokens(), 223);
    }

    #[tokio::test]
    async fn executed_calls_spend_the_budgets_and_replayed_ones_are_free() {
        use crate::store::MemoryStore;
        let store = std::sync::Arc::new(MemoryStore::new());
        let models = Models::new()
            .price("m", Price::per_million(1.0, 1.0))
            .max_tokens(250);
        let session = crate::Session::builder()
            .store(store.clone())
            .guard(models.policy())
            .open()
            .unwrap();
        let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let call = |n: u64| {
            let sent = sent.clone();
            let models = models.clone();
            let session = session.clone();
            async move {
                let request =
                    json!({"model": "m", "messages": [{"role": "user", "content": n.to_string()}]});
                let send = async move {
                    sent.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    Ok(reply(100 + n))
                };
                session.scope(models.call(&request, send)).await
            }
        };
        let first = call(1).await.unwrap();
        assert_eq!(
            first.usage,
            Some(Usage {
                input: 101,
                output: 10,
                cached: 0,
                ..Usage::default()
            })
        );
        assert!((first.cost.unwrap() - 111.0 / 1e6).abs() < 1e-15);
        call(2).await.unwrap();
        // 223 tokens spent: still under 250, so the third call runs and passes the budget.
        call(3).await.unwrap();
        assert_eq!(models.spent().usage.total(), 336);
        assert_eq!(session.spent_tokens(), 336);
        assert!((session.spent_cost() - 336.0 / 1e6).abs() < 1e-15);
        let refused = call(4).await.unwrap_err();
        assert!(
            matches!(&refused, Error::Blocked { rule, .. } if rule == "model.tokens"),
            "{refused}"
        );
        assert_eq!(sent.load(std::sync::atomic::Ordering::SeqCst), 3);
        let run = session.run_id().to_owned();
        session.finish().await.unwrap();

        // Resumed: the three recorded calls are served, not sent, and spend nothing.
        let models = Models::new().max_tokens(250);
        let session = crate::Session::builder()
            .store(store)
            .resume(run)
            .guard(models.policy())
            .open()
            .unwrap();
        for n in 1..=3u64 {
            let request =
                json!({"model": "m", "messages": [{"role": "user", "content": n.to_string()}]});
            let served = session
                .scope(models.call(&request, async {
                    Err::<Reply, _>("must not be sent".into())
                }))
                .await
                .unwrap();
            assert_eq!(served.reply, reply(100 + n));
        }
        assert_eq!(models.spent(), Spent::default());
        session.finish().await.unwrap();
    }
}
