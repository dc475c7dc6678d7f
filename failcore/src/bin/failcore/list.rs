//! `failcore list`: runs, newest first.

use crate::common::{between_ns, colour, duration, open_store, Paint, Result};
use failcore::store::{Body, Counts, Status, TraceStore, VerifiedRecords};
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// Show at most this many runs.
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// Print a JSON array instead of text (see docs/CLI.md).
    #[arg(long)]
    json: bool,
}

/// What one pass over a run tells about it.
pub struct Digest {
    pub run: String,
    pub started: String,
    pub duration_ns: Option<u64>,
    pub status: &'static str,
    pub counts: Counts,
    pub resumed_from: Option<String>,
    pub problem: Option<String>,
}

pub fn digest(store: &dyn TraceStore, run: &str) -> Digest {
    let mut d = Digest {
        run: run.to_owned(),
        started: String::new(),
        duration_ns: None,
        status: "incomplete",
        counts: Counts::default(),
        resumed_from: None,
        problem: None,
    };
    // Every record is checked as `verify` checks it (chain, seq, run id, structure): a run is listed ok
    // only if it verifies.
    let mut reader = match VerifiedRecords::open(store, run, true) {
        Ok(r) => r,
        Err(e) => {
            d.status = "unreadable";
            d.problem = Some(e.to_string());
            return d;
        }
    };
    let mut last_ts = String::new();
    let mut ended = None;
    for item in reader.by_ref() {
        match item {
            Ok(rec) => {
                if d.started.is_empty() {
                    d.started = rec.record.ts.clone();
                }
                match rec.record.body {
                    Body::RunStart(s) => d.resumed_from = s.resumed_from,
                    Body::StepEnd(e) => d.counts.add(e.status),
                    Body::RunEnd(e) => ended = Some(e.status),
                    Body::StepStart(_) | Body::Checkpoint(_) => {}
                }
                last_ts = rec.record.ts;
            }
            Err(e) => {
                d.status = "corrupt";
                d.problem = Some(e.to_string());
                break;
            }
        }
    }
    if let Some(fault) = reader.fault() {
        d.status = "corrupt";
        d.problem = Some(format!("{}: {fault}", reader.name()));
    }
    if let Some(bytes) = reader.torn_tail() {
        d.problem = Some(format!("torn last line ({bytes} bytes dropped)"));
    }
    d.duration_ns = between_ns(&d.started, &last_ts);
    if d.problem.is_none() || d.status == "incomplete" {
        d.status = match ended {
            Some(failcore::RunStatus::Ok) => "ok",
            Some(failcore::RunStatus::Failed) => "failed",
            None if d.problem.is_some() => "crashed",
            None => "incomplete",
        };
    }
    d
}

pub fn run(store: Option<&str>, args: Args) -> Result<ExitCode> {
    let store = open_store(store)?;
    let runs = store.runs()?;
    if args.json {
        let list: Vec<_> = runs
            .iter()
            .rev()
            .take(args.limit)
            .map(|run| {
                let d = digest(store.as_ref(), run);
                serde_json::json!({
                    "run": d.run, "started": d.started, "duration_ns": d.duration_ns,
                    "status": d.status, "counts": d.counts, "resumed_from": d.resumed_from,
                    "problem": d.problem,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&list).unwrap_or_default()
        );
        return Ok(ExitCode::SUCCESS);
    }
    if runs.is_empty() {
        println!("no runs in {}", store.location());
        return Ok(ExitCode::SUCCESS);
    }
    let paint = Paint(colour());
    println!(
        "{:<26}  {:<27}  {:>9}  {:<10}  {:<40}  resumed from",
        "run", "started", "duration", "status", "steps"
    );
    for run in runs.iter().rev().take(args.limit) {
        let d = digest(store.as_ref(), run);
        let counts = Status::ALL
            .iter()
            .filter(|s| d.counts.get(**s) > 0)
            .map(|s| format!("{} {}", d.counts.get(*s), s))
            .collect::<Vec<_>>()
            .join(", ");
        let status = match d.status {
            "ok" => paint.paint("32", d.status),
            "failed" | "corrupt" | "unreadable" => paint.paint("31", d.status),
            _ => paint.paint("33", d.status),
        };
        let pad = 10usize.saturating_sub(d.status.chars().count());
        println!(
            "{:<26}  {:<27}  {:>9}  {status}{}  {:<40}  {}",
            d.run,
            d.started,
            d.duration_ns.map(duration).unwrap_or_default(),
            " ".repeat(pad),
            if counts.is_empty() {
                "no steps".to_owned()
            } else {
                counts
            },
            d.resumed_from.as_deref().unwrap_or("-"),
        );
        if let Some(p) = &d.problem {
            println!("    {}", paint.paint("33", p));
        }
    }
    Ok(ExitCode::SUCCESS)
}
