//! Tokens and money of a run's model steps, and the costs its tools reported: spent by the calls that
//! executed, saved by the ones replayed.

use failcore::model::{recorded_usage, Usage};
use failcore::store::Status;
use serde_json::{json, Value};
use std::collections::BTreeMap;

#[derive(Default, Clone, Copy)]
struct Tally {
    calls: u64,
    usage: Usage,
    cost: f64,
    /// Calls whose model has no price: their tokens count, their money is unknown.
    unpriced: u64,
}

impl Tally {
    fn add(&mut self, usage: Usage, cost: Option<f64>) {
        self.calls += 1;
        self.usage.input += usage.input;
        self.usage.output += usage.output;
        self.usage.cached += usage.cached;
        match cost {
            Some(c) => self.cost += c,
            None => self.unpriced += 1,
        }
    }

    fn json(&self) -> Value {
        json!({
            "calls": self.calls,
            "input_tokens": self.usage.input,
            "output_tokens": self.usage.output,
            "cached_tokens": self.usage.cached,
            "tokens": self.usage.total(),
            "cost": self.cost,
            "unpriced_calls": self.unpriced,
        })
    }

    fn tokens(&self) -> String {
        format!(
            "{} (in {}, out {}, cached {})",
            self.usage.total(),
            self.usage.input,
            self.usage.output,
            self.usage.cached
        )
    }

    fn money(&self) -> String {
        let mut s = format!("{:.6}", self.cost);
        if self.unpriced > 0 {
            s.push_str(&format!(" (+{} call(s) without a price)", self.unpriced));
        }
        s
    }
}

/// The model steps of a run and the tool steps that reported a cost, as `stats` counts them.
#[derive(Default)]
pub struct Spend {
    spent: Tally,
    saved: Tally,
    per_model: BTreeMap<String, (Tally, Tally)>,
}

impl Spend {
    /// Counts one ended step: a model step with recorded usage, or a step that reported a cost.
    pub fn add(&mut self, tool: &str, status: Status, output: Option<&Value>, cost: Option<f64>) {
        let (usage, cost) = match (output.and_then(|o| recorded_usage(tool, o)), cost) {
            (Some(model), _) => model,
            (None, Some(cost)) if cost.is_finite() && cost >= 0.0 => (Usage::default(), Some(cost)),
            _ => return,
        };
        let model = self.per_model.entry(tool.to_owned()).or_default();
        match status {
            Status::Replayed => {
                self.saved.add(usage, cost);
                model.1.add(usage, cost);
            }
            Status::Ok => {
                self.spent.add(usage, cost);
                model.0.add(usage, cost);
            }
            _ => {}
        }
    }

    pub fn is_empty(&self) -> bool {
        self.per_model.is_empty()
    }

    pub fn json(&self) -> Value {
        let per_model: serde_json::Map<String, Value> = self
            .per_model
            .iter()
            .map(|(m, (spent, saved))| {
                (
                    m.clone(),
                    json!({"spent": spent.json(), "saved": saved.json()}),
                )
            })
            .collect();
        json!({"spent": self.spent.json(), "saved": self.saved.json(), "per_model": per_model})
    }

    pub fn print(&self) {
        if self.is_empty() {
            return;
        }
        println!("tokens     spent {}", self.spent.tokens());
        println!("           saved by replay {}", self.saved.tokens());
        println!(
            "money      spent {}, saved by replay {}",
            self.spent.money(),
            self.saved.money()
        );
    }

    /// (id, label, value) of the report's cards: tokens and money, spent and saved.
    pub fn cards(&self) -> Vec<(&'static str, &'static str, String)> {
        if self.is_empty() {
            return Vec::new();
        }
        vec![
            (
                "c-tokens",
                "tokens spent",
                self.spent.usage.total().to_string(),
            ),
            (
                "c-tokens-saved",
                "tokens saved by replay",
                self.saved.usage.total().to_string(),
            ),
            ("c-cost", "money spent", format!("{:.6}", self.spent.cost)),
            (
                "c-cost-saved",
                "money saved by replay",
                format!("{:.6}", self.saved.cost),
            ),
        ]
    }

    pub fn print_table(&self) {
        if self.is_empty() {
            return;
        }
        println!();
        println!(
            "{:<24} {:>7} {:>12} {:>12} {:>12} {:>12}",
            "model or tool", "calls", "tokens", "tokens saved", "cost", "cost saved"
        );
        for (name, (spent, saved)) in &self.per_model {
            println!(
                "{:<24} {:>7} {:>12} {:>12} {:>12.6} {:>12.6}",
                name,
                spent.calls + saved.calls,
                spent.usage.total(),
                saved.usage.total(),
                spent.cost,
                saved.cost
            );
        }
    }
}
