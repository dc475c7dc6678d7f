//! `failcore show [run|--last]`: one run as a timeline, or one step in full.

use crate::common::{between_ns, colour, duration, open_store, print_json, Paint, Result};
use crate::scan::{problems, scan, Event, Step};
use failcore::store::Status;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// A run id (or unique prefix), or `last`.
    run: Option<String>,
    /// Show the newest run.
    #[arg(long, conflicts_with = "run")]
    last: bool,
    /// Only steps that failed, panicked, were cancelled or never ended.
    #[arg(long)]
    errors: bool,
    /// Only blocked steps.
    #[arg(long)]
    blocked: bool,
    /// Only steps of this tool.
    #[arg(long, value_name = "NAME")]
    tool: Option<String>,
    /// Show one step in full: args, output, error, decision, fingerprint, parent.
    #[arg(long, value_name = "N")]
    step: Option<u64>,
    /// Print JSON Lines instead of text (see docs/CLI.md).
    #[arg(long)]
    json: bool,
}

impl Args {
    fn keep(&self, s: &Step) -> bool {
        if let Some(t) = &self.tool {
            if &s.tool != t {
                return false;
            }
        }
        if self.errors || self.blocked {
            let st = s.status();
            let err = matches!(
                st,
                None | Some(Status::Failed | Status::Panicked | Status::Cancelled)
            );
            let blk = st == Some(Status::Blocked);
            return (self.errors && err) || (self.blocked && blk);
        }
        true
    }
}

pub fn run(store: Option<&str>, args: Args) -> Result<ExitCode> {
    let store = open_store(store)?;
    let wanted = if args.last {
        "last".to_owned()
    } else {
        args.run.clone().unwrap_or_else(|| "last".into())
    };
    let run = store.resolve(&wanted)?;
    let paint = Paint(colour());
    if let Some(n) = args.step {
        return show_step(store.as_ref(), &run, n, args.json, paint);
    }
    let mut start_ts = String::new();
    let mut shown = 0u64;
    if !args.json {
        println!("run {run}  ({})", store.location());
    }
    let out = scan(store.as_ref(), &run, |ev| {
        match ev {
            Event::Start { ts, start } => {
                start_ts.clone_from(&ts);
                if args.json {
                    print_json(&serde_json::json!({
                        "type": "run", "run": run, "started": ts, "resumed_from": start.resumed_from,
                        "mode": start.mode, "program": start.program, "pid": start.pid,
                    }));
                } else {
                    let resumed = start
                        .resumed_from
                        .map(|r| format!(", resumed from {r}"))
                        .unwrap_or_default();
                    println!(
                        "started {ts} by {} (pid {}), mode {:?}{resumed}",
                        start.program, start.pid, start.mode
                    );
                    println!();
                    println!(
                        "{:>5}  {:>10}  {:<22} {:<10} {:>9}  notes",
                        "step", "at", "tool", "status", "latency"
                    );
                }
            }
            Event::Step(s) => {
                if args.keep(&s) {
                    shown += 1;
                    if args.json {
                        let mut v = s.to_json(&start_ts);
                        v["type"] = "step".into();
                        print_json(&v);
                    } else {
                        line(paint, &start_ts, &s);
                    }
                }
            }
            Event::End { ts, end } => {
                if args.json {
                    print_json(&serde_json::json!({
                        "type": "end", "ts": ts, "status": end.status, "counts": end.counts,
                        "steps": end.steps, "total_ns": end.total_ns, "saved_ns": end.saved_ns,
                    }));
                } else {
                    println!();
                    let c = end.counts;
                    println!(
                        "run {:?}: {} steps: {} ok, {} replayed, {} blocked, {} failed, {} panicked, {} cancelled; total {}, saved by replay {}",
                        end.status, end.steps, c.ok, c.replayed, c.blocked, c.failed, c.panicked, c.cancelled,
                        duration(end.total_ns), duration(end.saved_ns)
                    );
                }
            }
        }
        true
    })?;
    finish(&out, args.json, paint, shown, &args)
}

fn finish(
    out: &crate::scan::Outcome,
    json: bool,
    paint: Paint,
    shown: u64,
    args: &Args,
) -> Result<ExitCode> {
    let filtered = args.errors || args.blocked || args.tool.is_some();
    let mut notes = problems(out);
    if !out.ended && out.error.is_none() {
        notes.push("incomplete: no run_end (the run crashed or is still running)".into());
    }
    if json {
        for n in &notes {
            print_json(&serde_json::json!({"type": "problem", "message": n}));
        }
    } else {
        if filtered {
            println!("{shown} step(s) matched the filter");
        }
        for n in &notes {
            let code = if n.starts_with("stopped") { "31" } else { "33" };
            println!("{}", paint.paint(code, n));
        }
    }
    Ok(if out.error.is_some() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn show_step(
    store: &dyn failcore::store::TraceStore,
    run: &str,
    n: u64,
    json: bool,
    paint: Paint,
) -> Result<ExitCode> {
    let mut start_ts = String::new();
    let mut found = None;
    let out = scan(store, run, |ev| match ev {
        Event::Start { ts, .. } => {
            start_ts = ts;
            true
        }
        Event::Step(s) if s.step == n => {
            found = Some(s);
            false
        }
        _ => true,
    })?;
    let Some(s) = found else {
        for p in problems(&out) {
            eprintln!("failcore: {p}");
        }
        eprintln!("failcore: run {run} has no step {n}");
        return Ok(ExitCode::from(1));
    };
    if json {
        print_json(&s.to_json(&start_ts));
        return Ok(ExitCode::SUCCESS);
    }
    let pretty = |v: &serde_json::Value| {
        serde_json::to_string_pretty(v)
            .unwrap_or_default()
            .replace('\n', "\n    ")
    };
    let end = s.end.as_ref();
    println!("run {run}, step {}", s.step);
    println!("  tool         {}", s.tool);
    println!(
        "  status       {}",
        status_paint(paint, s.status()).trim_end()
    );
    println!("  started      {} (seq {})", s.ts, s.seq);
    if let Some(e) = end {
        println!("  latency      {}", duration(e.latency_ns));
    }
    println!("  fingerprint  {} (call #{} of it)", s.fp, s.occ);
    println!(
        "  parent       {}",
        s.parent.map_or("-".into(), |p| p.to_string())
    );
    let d = &s.decision;
    println!(
        "  decision     {:?}{}{}{}",
        d.outcome,
        d.policy
            .as_ref()
            .map(|p| format!(", policy {p}"))
            .unwrap_or_default(),
        d.rule
            .as_ref()
            .map(|r| format!(", rule {r}"))
            .unwrap_or_default(),
        d.reason
            .as_ref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default()
    );
    println!("  args\n    {}", pretty(&s.args));
    match end {
        Some(e) => {
            if let Some(o) = &e.output {
                println!("  output\n    {}", pretty(o));
            }
            if let Some(err) = &e.error {
                println!("  error        {err}");
            }
            if let Some(src) = &e.replayed_from {
                println!(
                    "  replayed     from {}#{}, saved {}",
                    src.run,
                    src.seq,
                    duration(e.saved_ns.unwrap_or(0))
                );
            }
            for dr in &e.drift {
                println!("  drift        {}: {}", dr.contract, dr.detail);
            }
        }
        None => println!("  never ended (in flight when the run stopped)"),
    }
    if let Some(dv) = &s.divergence {
        println!(
            "  divergence   from call #{} of {} in run {} (seq {}): {}",
            dv.position,
            s.tool,
            dv.run,
            dv.seq,
            failcore::store::describe_changes(&dv.changes)
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn status_paint(paint: Paint, st: Option<Status>) -> String {
    let (status, code) = match st {
        Some(Status::Ok) => ("ok", "32"),
        Some(Status::Replayed) => ("replayed", "36"),
        Some(Status::Blocked) => ("BLOCKED", "31;1"),
        Some(Status::Failed) => ("failed", "31"),
        Some(Status::Panicked) => ("panicked", "31"),
        Some(Status::Cancelled) => ("cancelled", "33"),
        None => ("in flight", "33"),
    };
    let pad = 10usize.saturating_sub(status.len());
    format!("{}{}", paint.paint(code, status), " ".repeat(pad))
}

fn line(paint: Paint, start_ts: &str, s: &Step) {
    let at = between_ns(start_ts, &s.ts)
        .map(|ns| format!("+{}", duration(ns)))
        .unwrap_or_default();
    let indent = if s.parent.is_some() { "  " } else { "" };
    let tool = format!("{indent}{}", s.tool);
    let mut notes = Vec::new();
    if let Some(e) = &s.end {
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
                s.decision.rule.as_deref().unwrap_or("?"),
                s.decision.policy.as_deref().unwrap_or("?"),
                s.decision.reason.as_deref().unwrap_or("")
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
    if let Some(dv) = &s.divergence {
        notes.push(paint.paint(
            "35",
            &format!(
                "DIVERGED from {}#{}: {}",
                dv.run,
                dv.seq,
                failcore::store::describe_changes(&dv.changes)
            ),
        ));
    }
    let latency = s
        .end
        .as_ref()
        .filter(|e| e.latency_ns > 0)
        .map(|e| duration(e.latency_ns))
        .unwrap_or_else(|| "-".into());
    println!(
        "{:>5}  {at:>10}  {tool:<22} {} {latency:>9}  {}",
        s.step,
        status_paint(paint, s.status()),
        notes.join("; ")
    );
}
