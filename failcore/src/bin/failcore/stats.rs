//! `failcore stats [run]`: what ran, what replay saved, what was blocked, what failed, how long tools took.

use crate::common::{duration, open_existing, resolve, schema, Result};
use crate::scan::{problems, scan, Event};
use crate::term::{self, Cell, Col, Out, Table};
use failcore::store::Status;
use std::collections::BTreeMap;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// A run id (or unique prefix), or `last` (the default).
    run: Option<String>,
    /// Print a JSON object instead of text (see docs/CLI.md).
    #[arg(long)]
    json: bool,
}

/// Latencies in log-spaced buckets (32 per power of two, so a quantile is within about 2%), so that
/// a tool called a million times costs a few kilobytes.
#[derive(Default)]
struct Histogram {
    buckets: BTreeMap<u32, u64>,
    count: u64,
    min: u64,
    max: u64,
}

const SUB: u32 = 32;

impl Histogram {
    fn bucket(ns: u64) -> u32 {
        if ns < u64::from(SUB) {
            return ns as u32;
        }
        let exp = 63 - ns.leading_zeros();
        let shift = exp - 5; // 2^5 == SUB
        let mantissa = ((ns >> shift) as u32) - SUB;
        (exp - 4) * SUB + mantissa
    }

    fn lower(b: u32) -> u64 {
        if b < SUB {
            return u64::from(b);
        }
        let exp = b / SUB + 4;
        let mantissa = u64::from(b % SUB + SUB);
        mantissa << (exp - 5)
    }

    fn add(&mut self, ns: u64) {
        if self.count == 0 || ns < self.min {
            self.min = ns;
        }
        self.max = self.max.max(ns);
        self.count += 1;
        *self.buckets.entry(Self::bucket(ns)).or_default() += 1;
    }

    fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (b, n) in &self.buckets {
            seen += n;
            if seen >= rank {
                return Self::lower(*b).clamp(self.min, self.max);
            }
        }
        self.max
    }
}

#[derive(Default)]
struct Tool {
    calls: u64,
    counts: failcore::store::Counts,
    latency: Histogram,
    saved_ns: u64,
}

pub fn run(store: Option<&str>, args: Args) -> Result<ExitCode> {
    let store = open_existing(store)?;
    let run = resolve(store.as_ref(), args.run.as_deref().unwrap_or("last"))?;
    let mut tools: BTreeMap<String, Tool> = BTreeMap::new();
    let mut rules: BTreeMap<String, u64> = BTreeMap::new();
    let mut counts = failcore::store::Counts::default();
    let mut spend = crate::spend::Spend::default();
    let (mut in_flight, mut saved_ns, mut exec_ns, mut drift, mut diverged) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let out = scan(store.as_ref(), &run, |ev| {
        if let Event::Step(s) = ev {
            let t = tools.entry(s.tool.clone()).or_default();
            t.calls += 1;
            if s.divergence.is_some() {
                diverged += 1;
            }
            match &s.end {
                None => in_flight += 1,
                Some(e) => {
                    counts.add(e.status);
                    t.counts.add(e.status);
                    spend.add(&s.tool, e.status, e.output.as_ref(), e.cost);
                    drift += u64::from(!e.drift.is_empty());
                    match e.status {
                        Status::Replayed => {
                            let saved = e.saved_ns.unwrap_or(0);
                            t.saved_ns = t.saved_ns.saturating_add(saved);
                            saved_ns = saved_ns.saturating_add(saved);
                        }
                        Status::Blocked => {
                            *rules
                                .entry(
                                    s.decision
                                        .rule
                                        .clone()
                                        .unwrap_or_else(|| "(no rule)".into()),
                                )
                                .or_default() += 1;
                        }
                        _ => {}
                    }
                    if !matches!(e.status, Status::Replayed | Status::Blocked) {
                        t.latency.add(e.latency_ns);
                        exec_ns = exec_ns.saturating_add(e.latency_ns);
                    }
                }
            }
        }
        true
    })?;
    let executed = counts.ok + counts.failed + counts.panicked + counts.cancelled;
    if args.json {
        let per_tool: serde_json::Map<String, serde_json::Value> = tools
            .iter()
            .map(|(name, t)| {
                (
                    name.clone(),
                    serde_json::json!({
                        "calls": t.calls,
                        "counts": t.counts,
                        "executed": t.latency.count,
                        "p50_ns": t.latency.quantile(0.5),
                        "p99_ns": t.latency.quantile(0.99),
                        "max_ns": t.latency.max,
                        "saved_ns": t.saved_ns,
                    }),
                )
            })
            .collect();
        let failures: BTreeMap<&String, u64> = tools
            .iter()
            .map(|(n, t)| (n, t.counts.failed + t.counts.panicked + t.counts.cancelled))
            .filter(|(_, n)| *n > 0)
            .collect();
        let mut json = serde_json::json!({
            "schema": schema("stats"),
            "run": run,
            "steps": counts.total() + in_flight,
            "executed": executed,
            "replayed": counts.replayed,
            "blocked": counts.blocked,
            "in_flight": in_flight,
            "counts": counts,
            "executed_ns": exec_ns,
            "saved_ns": saved_ns,
            "blocked_by_rule": rules,
            "failures_by_tool": failures,
            "drift": drift,
            "divergences": diverged,
            "tools": per_tool,
            "complete": out.ended,
            "problems": problems(&out),
        });
        // Runs with model steps only (docs/AGENTS.md).
        if let (false, Some(map)) = (spend.is_empty(), json.as_object_mut()) {
            map.insert("models".into(), spend.json());
        }
        crate::common::print_json(&json);
    } else {
        let t = Out::stdout();
        // One line: a bold label, then the value (escaped, cut to the width) in its style.
        let say = |name: &str, value: &str, style: anstyle::Style| {
            println!(
                "{} {}",
                t.paint(term::HEAD, &format!("{name:<10}")),
                t.paint(style, &t.fit(11, value))
            );
        };
        let item = |n: u64, what: &str| println!("  {n:>6}  {}", t.fit(10, what));
        say("run", &run, term::PLAIN);
        say(
            "steps",
            &format!(
                "{} ({} executed, {} replayed, {} blocked{})",
                counts.total() + in_flight,
                executed,
                counts.replayed,
                counts.blocked,
                if in_flight > 0 {
                    format!(", {in_flight} never ended")
                } else {
                    String::new()
                }
            ),
            if in_flight > 0 {
                term::WARN
            } else {
                term::PLAIN
            },
        );
        say("executing", &duration(exec_ns), term::PLAIN);
        say(
            "replay",
            &format!(
                "saved {} call(s) and {}",
                counts.replayed,
                duration(saved_ns)
            ),
            if saved_ns > 0 { term::OK } else { term::PLAIN },
        );
        spend.print();
        if rules.is_empty() {
            say("blocked", "none", term::PLAIN);
        } else {
            say(
                "blocked",
                &format!("{} call(s), by rule:", counts.blocked),
                term::BAD,
            );
            for (rule, n) in &rules {
                item(*n, rule);
            }
        }
        let failing: Vec<_> = tools
            .iter()
            .filter(|(_, t)| t.counts.failed + t.counts.panicked + t.counts.cancelled > 0)
            .collect();
        if failing.is_empty() {
            say("failures", "none", term::PLAIN);
        } else {
            say("failures", "by tool:", term::BAD);
            for (name, tool) in failing {
                let c = tool.counts;
                let parts = [
                    (c.failed, "failed"),
                    (c.panicked, "panicked"),
                    (c.cancelled, "cancelled"),
                ]
                .iter()
                .filter(|(n, _)| *n > 0)
                .map(|(n, w)| format!("{n} {w}"))
                .collect::<Vec<_>>()
                .join(", ");
                item(
                    c.failed + c.panicked + c.cancelled,
                    &format!("{name} ({parts})"),
                );
            }
        }
        if drift > 0 {
            say(
                "drift",
                &format!("{drift} step(s) broke an output contract"),
                term::WARN,
            );
        }
        if diverged > 0 {
            say(
                "diverged",
                &format!("{diverged} step(s) differ in arguments from the run replayed"),
                term::DIVERGED,
            );
        }
        println!();
        let mut table = Table::new(&[
            Col::left("tool").shrink(8),
            Col::right("calls").hide_at(4),
            Col::right("executed"),
            Col::right("replayed"),
            // Below the table's full width: the summary above already counts blocks and failures.
            Col::right("blocked").hide_at(1),
            Col::right("failed").hide_at(2),
            Col::right("p50").hide_at(3),
            Col::right("p99").hide_at(0),
            Col::right("saved"),
        ]);
        for (name, tool) in &tools {
            let q = |x: f64| {
                if tool.latency.count == 0 {
                    "-".to_owned()
                } else {
                    duration(tool.latency.quantile(x))
                }
            };
            let failed = tool.counts.failed + tool.counts.panicked + tool.counts.cancelled;
            let n = |v: u64, style| {
                if v == 0 {
                    Cell::new("0")
                } else {
                    Cell::styled(v.to_string(), style)
                }
            };
            table.row(vec![
                Cell::new(name.clone()),
                Cell::new(tool.calls.to_string()),
                Cell::new(tool.latency.count.to_string()),
                n(tool.counts.replayed, term::INFO),
                n(tool.counts.blocked, term::BAD),
                n(failed, term::BAD),
                Cell::new(q(0.5)),
                Cell::new(q(0.99)),
                if tool.saved_ns > 0 {
                    Cell::styled(duration(tool.saved_ns), term::OK)
                } else {
                    Cell::new("-")
                },
            ]);
        }
        table.print(&t);
        spend.print_table();
        for p in problems(&out) {
            println!("{}", t.paint(term::BAD, &t.fit(0, &p)));
        }
        if !out.ended && out.error.is_none() {
            let msg = "incomplete: no run end yet (the run crashed or is still running)";
            println!("{}", t.paint(term::WARN, &t.fit(0, msg)));
        }
    }
    Ok(if out.error.is_some() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::Histogram;

    #[test]
    fn quantiles_are_close() {
        let mut h = Histogram::default();
        for ns in 1..=100_000u64 {
            h.add(ns * 1000);
        }
        let p50 = h.quantile(0.5) as f64;
        let p99 = h.quantile(0.99) as f64;
        assert!((p50 / 50_000_000.0 - 1.0).abs() < 0.04, "{p50}");
        assert!((p99 / 99_000_000.0 - 1.0).abs() < 0.04, "{p99}");
        for ns in [0, 1, 31, 32, 33, 1000, u64::MAX] {
            assert!(Histogram::lower(Histogram::bucket(ns)) <= ns);
        }
    }
}
