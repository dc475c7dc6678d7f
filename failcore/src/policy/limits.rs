//! The `limits` preset: argument size, calls per tool, rate, and a run budget.

use super::{CallView, Policy, PolicyError, Verdict};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
struct State {
    per_tool: HashMap<String, u64>,
    window: HashMap<String, VecDeque<Instant>>,
    total: u64,
    started: Option<Instant>,
    cost: f64,
    tokens: u64,
}

/// Limits on calls. The counters live in the value (clones share them): define one `Limits` per session,
/// and it counts that run. Every call it checks counts, including calls that a later policy denies.
///
/// The cost and token budgets count what the run spends, automatically: the costs tool bodies attach to
/// their steps ([`crate::report_cost`]) and the model steps' usage and cost (all recorded in the trace),
/// plus whatever is reported to this value directly with [`Limits::report_cost`] and
/// [`Limits::report_tokens`] (spending the trace does not see). Once the total reaches the budget, further
/// calls are denied.
#[derive(Debug, Clone)]
pub struct Limits {
    name: String,
    max_arg_bytes: Option<usize>,
    max_calls_per_tool: Option<u64>,
    rate: Option<(u32, Duration)>,
    max_calls: Option<u64>,
    max_duration: Option<Duration>,
    max_cost: Option<f64>,
    max_tokens: Option<u64>,
    state: Arc<Mutex<State>>,
}

impl Default for Limits {
    fn default() -> Self {
        Self::new()
    }
}

impl Limits {
    /// No limits yet: add them with the builder methods.
    pub fn new() -> Self {
        Limits {
            name: "limits".into(),
            max_arg_bytes: None,
            max_calls_per_tool: None,
            rate: None,
            max_calls: None,
            max_duration: None,
            max_cost: None,
            max_tokens: None,
            state: Arc::default(),
        }
    }
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
    /// The canonical JSON of a call's arguments may hold at most `n` bytes (rule `limits.arg_size`).
    pub fn max_arg_bytes(mut self, n: usize) -> Self {
        self.max_arg_bytes = Some(n);
        self
    }
    /// Each tool may be called at most `n` times (rule `limits.tool_calls`).
    pub fn max_calls_per_tool(mut self, n: u64) -> Self {
        self.max_calls_per_tool = Some(n);
        self
    }
    /// Each tool may be called at most `n` times in any `window` (rule `limits.rate`).
    pub fn rate(mut self, n: u32, window: Duration) -> Self {
        self.rate = Some((n, window));
        self
    }
    /// At most `n` calls in all (rule `limits.run_calls`).
    pub fn max_calls(mut self, n: u64) -> Self {
        self.max_calls = Some(n);
        self
    }
    /// No call later than `d` after the first one checked (rule `limits.run_time`).
    pub fn max_duration(mut self, d: Duration) -> Self {
        self.max_duration = Some(d);
        self
    }
    /// No call once the reported cost reaches `budget` (rule `limits.cost`).
    pub fn max_cost(mut self, budget: f64) -> Self {
        self.max_cost = Some(budget);
        self
    }
    /// Adds to the run's cost (negative or non-finite amounts are ignored).
    pub fn report_cost(&self, amount: f64) {
        if amount.is_finite() && amount > 0.0 {
            let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            s.cost += amount;
        }
    }
    /// No call once the run's tokens reach `budget` (rule `limits.tokens`): the model steps' recorded
    /// usage, and what is reported with [`Limits::report_tokens`].
    pub fn max_tokens(mut self, budget: u64) -> Self {
        self.max_tokens = Some(budget);
        self
    }
    /// Adds to the run's token count.
    pub fn report_tokens(&self, tokens: u64) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.tokens = s.tokens.saturating_add(tokens);
    }
    /// The tokens reported so far.
    pub fn tokens(&self) -> u64 {
        self.state.lock().map(|s| s.tokens).unwrap_or(u64::MAX)
    }
    /// The cost reported so far.
    pub fn cost(&self) -> f64 {
        self.state.lock().map(|s| s.cost).unwrap_or(f64::INFINITY)
    }
}

impl Policy for Limits {
    fn name(&self) -> &str {
        &self.name
    }

    fn check(&self, call: &CallView<'_>) -> Result<Verdict, PolicyError> {
        let tool = call.tool().name();
        if let Some(max) = self.max_arg_bytes {
            let n = call.args_json().len();
            if n > max {
                return Ok(Verdict::deny(
                    "limits.arg_size",
                    format!("the arguments of `{tool}` take {n} bytes; the limit is {max}"),
                ));
            }
        }
        let mut s = self
            .state
            .lock()
            .map_err(|_| PolicyError("the limits counters are poisoned".into()))?;
        let now = Instant::now();
        let started = *s.started.get_or_insert(now);
        if let Some(max) = self.max_duration {
            if now.duration_since(started) > max {
                return Ok(Verdict::deny(
                    "limits.run_time",
                    format!("the run has used its time budget of {max:?}"),
                ));
            }
        }
        if let Some(max) = self.max_cost {
            let cost = s.cost + call.run_cost();
            if cost >= max {
                return Ok(Verdict::deny(
                    "limits.cost",
                    format!("the run has spent {cost} of its budget {max}"),
                ));
            }
        }
        if let Some(max) = self.max_tokens {
            let tokens = s.tokens.saturating_add(call.run_tokens());
            if tokens >= max {
                return Ok(Verdict::deny(
                    "limits.tokens",
                    format!("the run has used {tokens} tokens of its budget {max}"),
                ));
            }
        }
        if let Some(max) = self.max_calls {
            if s.total >= max {
                return Ok(Verdict::deny(
                    "limits.run_calls",
                    format!("the run has made its {max} calls"),
                ));
            }
        }
        let used = s.per_tool.get(tool).copied().unwrap_or(0);
        if let Some(max) = self.max_calls_per_tool {
            if used >= max {
                return Ok(Verdict::deny(
                    "limits.tool_calls",
                    format!("`{tool}` has been called {used} times; the limit is {max} a run"),
                ));
            }
        }
        if let Some((n, window)) = self.rate {
            let q = s.window.entry(tool.to_owned()).or_default();
            while q.front().is_some_and(|t| now.duration_since(*t) >= window) {
                q.pop_front();
            }
            if q.len() >= n as usize {
                return Ok(Verdict::deny(
                    "limits.rate",
                    format!("`{tool}` may be called {n} times per {window:?}; wait and retry"),
                ));
            }
            q.push_back(now);
        }
        s.total += 1;
        *s.per_tool.entry(tool.to_owned()).or_default() += 1;
        Ok(Verdict::Allow)
    }
}
