//! `failcore show [run|--last]`: one run as a timeline.

use crate::common::{between_ns, colour, duration, open_store, Paint, Result};
use failcore::store::{Body, Decision, RunReader, Status, StepEnd};
use std::collections::HashMap;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// A run id (or unique prefix), or `last`.
    run: Option<String>,
    /// Show the newest run.
    #[arg(long, conflicts_with = "run")]
    last: bool,
}

struct Open {
    tool: String,
    ts: String,
    decision: Decision,
    parent: Option<u64>,
}

pub fn run(store: Option<&str>, args: Args) -> Result<ExitCode> {
    let store = open_store(store)?;
    let wanted = if args.last {
        "last".to_owned()
    } else {
        args.run.unwrap_or_else(|| "last".into())
    };
    let run = store.resolve(&wanted)?;
    let paint = Paint(colour());
    let mut reader = RunReader::open(store.as_ref(), &run)?;
    let mut open: HashMap<u64, Open> = HashMap::new();
    let mut start_ts = String::new();
    let mut ended = false;
    let mut failure = None;
    println!("run {run}  ({})", store.location());
    for item in reader.by_ref() {
        let rec = match item {
            Ok(rec) => rec,
            Err(e) => {
                failure = Some(e);
                break;
            }
        };
        match rec.record.body {
            Body::RunStart(s) => {
                start_ts = rec.record.ts.clone();
                let resumed = s
                    .resumed_from
                    .map(|r| format!(", resumed from {r}"))
                    .unwrap_or_default();
                println!(
                    "started {} by {} (pid {}), mode {:?}{resumed}",
                    rec.record.ts, s.program, s.pid, s.mode
                );
                println!();
                println!(
                    "{:>5}  {:>10}  {:<22} {:<10} {:>9}  notes",
                    "step", "at", "tool", "status", "latency"
                );
            }
            Body::StepStart(s) => {
                open.insert(
                    s.step,
                    Open {
                        tool: s.tool,
                        ts: rec.record.ts,
                        decision: s.decision,
                        parent: s.parent,
                    },
                );
            }
            Body::StepEnd(e) => {
                let Some(start) = open.remove(&e.step) else {
                    continue;
                };
                line(paint, &start_ts, e.step, &start, Some(&e));
            }
            Body::RunEnd(end) => {
                let mut pending: Vec<_> = open.drain().collect();
                pending.sort_by_key(|(step, _)| *step);
                for (step, start) in &pending {
                    line(paint, &start_ts, *step, start, None);
                }
                println!();
                let c = end.counts;
                println!(
                    "run {:?}: {} steps: {} ok, {} replayed, {} blocked, {} failed, {} panicked, {} cancelled; total {}, saved by replay {}",
                    end.status, end.steps, c.ok, c.replayed, c.blocked, c.failed, c.panicked, c.cancelled,
                    duration(end.total_ns), duration(end.saved_ns)
                );
                ended = true;
            }
        }
    }
    let mut pending: Vec<_> = open.drain().collect();
    pending.sort_by_key(|(step, _)| *step);
    for (step, start) in &pending {
        line(paint, &start_ts, *step, start, None);
    }
    if let Some(bytes) = reader.torn_tail() {
        println!(
            "{}",
            paint.paint(
                "33",
                &format!("torn last line: {bytes} bytes dropped (the run crashed mid-write)")
            )
        );
    }
    if let Some(e) = failure {
        println!("{}", paint.paint("31", &format!("stopped: {e}")));
        return Ok(ExitCode::from(1));
    }
    if !ended {
        println!(
            "{}",
            paint.paint(
                "33",
                "incomplete: no run_end (the run crashed or is still running)"
            )
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn line(paint: Paint, start_ts: &str, step: u64, start: &Open, end: Option<&StepEnd>) {
    let at = between_ns(start_ts, &start.ts)
        .map(|ns| format!("+{}", duration(ns)))
        .unwrap_or_default();
    let indent = if start.parent.is_some() { "  " } else { "" };
    let tool = format!("{indent}{}", start.tool);
    let (status, colour_code) = match end.map(|e| e.status) {
        Some(Status::Ok) => ("ok", "32"),
        Some(Status::Replayed) => ("replayed", "36"),
        Some(Status::Blocked) => ("BLOCKED", "31;1"),
        Some(Status::Failed) => ("failed", "31"),
        Some(Status::Panicked) => ("panicked", "31"),
        Some(Status::Cancelled) => ("cancelled", "33"),
        None => ("in flight", "33"),
    };
    let mut notes = Vec::new();
    if let Some(e) = end {
        if let Some(src) = &e.replayed_from {
            notes.push(format!(
                "from {}#{} (saved {})",
                src.run,
                src.seq,
                duration(e.saved_ns.unwrap_or(0))
            ));
        }
        if e.status == Status::Blocked {
            notes.push(format!(
                "rule {} ({}): {}",
                start.decision.rule.as_deref().unwrap_or("?"),
                start.decision.policy.as_deref().unwrap_or("?"),
                start.decision.reason.as_deref().unwrap_or("")
            ));
        } else if let Some(err) = &e.error {
            notes.push(err.clone());
        }
        for d in &e.drift {
            notes.push(paint.paint("33", &format!("DRIFT {}: {}", d.contract, d.detail)));
        }
    } else {
        notes.push("started, never ended".into());
    }
    let latency = end
        .filter(|e| e.latency_ns > 0)
        .map(|e| duration(e.latency_ns))
        .unwrap_or_else(|| "-".into());
    let pad = 10usize.saturating_sub(status.len());
    println!(
        "{step:>5}  {at:>10}  {tool:<22} {}{} {latency:>9}  {}",
        paint.paint(colour_code, status),
        " ".repeat(pad),
        notes.join("; ")
    );
}
