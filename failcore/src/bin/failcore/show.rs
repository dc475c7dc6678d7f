//! `failcore show [run|--last] [--follow]`: one run as a timeline, or one step in full.

use crate::common::{between_ns, duration, open_existing, print_json, resolve, schema, Result};
use crate::scan::{problems, scan, scan_reader, Event, Follow, Sources, Step};
use crate::term::{
    self, fit_widths, line, mode_words, outcome_word, safe, status_word, Cell, Col, Out,
};
use failcore::store::{RunReader, Status};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

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
    #[arg(long, value_name = "N", conflicts_with = "follow")]
    step: Option<u64>,
    /// Keep reading as the run is written, like `tail -f`, until it ends (Ctrl-C to stop).
    #[arg(long, short = 'f')]
    follow: bool,
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

/// The timeline's columns. The tool and notes columns give way (with an ellipsis) to fit the
/// terminal; the others keep their width.
const COLS: [Col; 6] = [
    Col::right("step"),
    Col::right("at"),
    Col::left("tool").shrink(8),
    Col::left("status"),
    Col::right("latency"),
    Col::left("notes").shrink_at(0, 10),
];

/// Widths for a timeline whose lines are printed as they are read.
fn widths(out: &Out) -> Vec<usize> {
    // Notes take what is left of the line; without a width they are never cut.
    let notes = out.width.unwrap_or(usize::MAX / 4);
    fit_widths(&[5, 9, 18, 9, 8, notes], &COLS, term::GAP, out.width)
}

pub fn run(store: Option<&str>, args: Args) -> Result<ExitCode> {
    let store = open_existing(store)?;
    let wanted = if args.last {
        "last".to_owned()
    } else {
        args.run.clone().unwrap_or_else(|| "last".into())
    };
    let run = resolve(store.as_ref(), &wanted)?;
    let out = Out::stdout();
    if let Some(n) = args.step {
        return show_step(store.as_ref(), &run, n, args.json, &out);
    }
    let widths = widths(&out);
    let mut sources = Sources::new(store.as_ref());
    let mut start_ts = String::new();
    let mut resumed_from: Option<String> = None;
    let mut shown = 0u64;
    if !args.json {
        let location = out.fit(run.len() + 7, &store.location());
        println!("run {run}  ({})", out.paint(term::DIM, &location));
    }
    let ended = Arc::new(AtomicBool::new(false));
    let writer_pid = Arc::new(AtomicU32::new(0));
    let reader = if args.follow {
        let pid = writer_pid.clone();
        let gone = Box::new(move || writer_gone(pid.load(Ordering::SeqCst)));
        RunReader::new(Box::new(Follow::new(
            store.clone(),
            &run,
            ended.clone(),
            gone,
        )?))
    } else {
        RunReader::open(store.as_ref(), &run)?
    };
    let outcome = scan_reader(reader, |ev| {
        match ev {
            Event::Start { ts, start } => {
                start_ts.clone_from(&ts);
                resumed_from.clone_from(&start.resumed_from);
                if start.host == this_host() {
                    writer_pid.store(start.pid, Ordering::SeqCst);
                }
                let policy = failcore::policy::recorded_policy(&start);
                let changed = policy
                    .as_ref()
                    .and_then(|p| Some((p.changed_from.as_deref()?, p.digest.as_str())));
                if args.json {
                    let mut v = serde_json::json!({
                        "schema": schema("show"),
                        "type": "run", "run": run, "started": ts, "resumed_from": start.resumed_from,
                        "mode": start.mode, "program": start.program, "pid": start.pid,
                        "recorder": failcore::recorder_of(&start),
                        "run_key": failcore::run_key_of(&start),
                    });
                    if let (Some((from, to)), Some(map)) = (changed, v.as_object_mut()) {
                        map.insert(
                            "policy_changed".into(),
                            serde_json::json!({"from": from, "to": to}),
                        );
                    }
                    print_json(&v);
                } else {
                    let started = format!(
                        "started {} by {} (pid {}), {}",
                        ts,
                        start.program,
                        start.pid,
                        mode_words(start.mode, start.resumed_from.as_deref())
                    );
                    println!("{}", out.fit(0, &started));
                    let (recorder, key) =
                        (failcore::recorder_of(&start), failcore::run_key_of(&start));
                    if recorder.is_some() || key.is_some() {
                        let by = format!(
                            "recorded by {}{}",
                            crate::common::recorder_label(recorder),
                            key.map(|k| format!(", run key {}", safe(k)))
                                .unwrap_or_default()
                        );
                        println!("{}", out.fit(0, &by));
                    }
                    if let Some((from, to)) = changed {
                        let line = format!(
                            "policies changed since run {}: its policy set was {}, this run's is {}",
                            safe(start.resumed_from.as_deref().unwrap_or("?")),
                            short(from),
                            short(to)
                        );
                        println!("{}", out.paint(term::WARN, &out.fit(0, &line)));
                    }
                    println!();
                    let header: Vec<Cell> = COLS
                        .iter()
                        .map(|c| Cell::styled(c.header, term::HEAD))
                        .collect();
                    println!("{}", line(&out, &COLS, &widths, &header));
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
                        let cells = cells(&start_ts, &s, &mut sources, resumed_from.as_deref());
                        println!("{}", line(&out, &COLS, &widths, &cells));
                    }
                }
            }
            Event::End { ts, end } => {
                ended.store(true, Ordering::SeqCst);
                if args.json {
                    print_json(&serde_json::json!({
                        "type": "end", "ts": ts, "status": end.status, "counts": end.counts,
                        "steps": end.steps, "total_ns": end.total_ns, "saved_ns": end.saved_ns,
                    }));
                } else {
                    println!();
                    let c = end.counts;
                    let (word, style) = term::run_status_word(Some(end.status));
                    let in_flight = end.steps.saturating_sub(c.total());
                    let counts = [
                        (c.ok, "ok"),
                        (c.replayed, "replayed"),
                        (c.blocked, "blocked"),
                        (c.failed, "failed"),
                        (c.panicked, "panicked"),
                        (c.cancelled, "cancelled"),
                        (in_flight, "in flight"),
                    ]
                    .iter()
                    .filter(|(n, _)| *n > 0)
                    .map(|(n, w)| format!("{n} {w}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                    println!(
                        "run ended {} after {}",
                        out.paint(style, word),
                        duration(end.total_ns)
                    );
                    println!(
                        "{} steps: {}",
                        end.steps,
                        out.fit(end.steps.to_string().len() + 8, &counts)
                    );
                    if end.saved_ns > 0 {
                        println!(
                            "replay saved {}",
                            out.paint(term::OK, &duration(end.saved_ns))
                        );
                    }
                }
            }
        }
        true
    });
    finish(&outcome, args.json, &out, shown, &args)
}

/// This machine's name, to tell whether a run's writer could be a process here.
fn this_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

/// Whether the process that writes a run (on this machine) has exited.
fn writer_gone(pid: u32) -> bool {
    pid != 0
        && std::path::Path::new("/proc/self").exists()
        && !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

fn finish(
    out: &crate::scan::Outcome,
    json: bool,
    term: &Out,
    shown: u64,
    args: &Args,
) -> Result<ExitCode> {
    let filtered = args.errors || args.blocked || args.tool.is_some();
    let mut notes = problems(out);
    if !out.ended && out.error.is_none() && !out.last_ts.is_empty() {
        notes.push(if args.follow {
            "incomplete: the run's process exited without ending the run".into()
        } else {
            "incomplete: no run end yet (the run crashed or is still running; --follow waits for it)"
                .into()
        });
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
            let style = if n.starts_with("stopped") {
                term::BAD
            } else {
                term::WARN
            };
            println!("{}", term.paint(style, &term.fit(0, n)));
        }
    }
    Ok(if out.error.is_some() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Where a replayed output came from: the source step when the source run can be read, else its
/// record number; the run being resumed (the header names it) is called "source".
fn source_text(sources: &mut Sources, run: &str, seq: u64, resumed_from: Option<&str>) -> String {
    let of_run = if resumed_from == Some(run) {
        "source ".to_owned()
    } else {
        format!("{run} ")
    };
    match sources.step(run, seq) {
        Some(s) => format!("{of_run}step {}", s.step),
        None => format!("{of_run}record {seq}"),
    }
}

fn cells(start_ts: &str, s: &Step, sources: &mut Sources, resumed_from: Option<&str>) -> Vec<Cell> {
    let at = between_ns(start_ts, &s.ts)
        .map(|ns| format!("+{}", duration(ns)))
        .unwrap_or_default();
    let indent = if s.parent.is_some() { "  " } else { "" };
    let mut notes = Vec::new();
    let mut style = term::PLAIN;
    if let Some(e) = &s.end {
        if let Some(src) = &e.replayed_from {
            notes.push(format!(
                "from {}, saved {}",
                source_text(sources, &src.run, src.seq, resumed_from),
                duration(e.saved_ns.unwrap_or(0))
            ));
            if let Some(d) = sources.step(&src.run, src.seq).map(|s| s.drift) {
                for d in d {
                    notes.push(format!("DRIFT when recorded, {}: {}", d.contract, d.detail));
                    style = term::WARN;
                }
            }
        }
        if e.status == Status::Blocked {
            // The policy's name is in `--step`; the rule says enough here.
            notes.push(format!(
                "by {}: {}",
                s.decision
                    .rule
                    .as_deref()
                    .or(s.decision.policy.as_deref())
                    .unwrap_or("policy"),
                s.decision.reason.as_deref().unwrap_or("")
            ));
        } else if let Some(err) = &e.error {
            notes.push(err.clone());
        }
        for d in &e.drift {
            notes.push(format!("DRIFT {}: {}", d.contract, d.detail));
            style = term::WARN;
        }
        if e.exact == Some(false) {
            notes.push("INEXACT output: its JSON does not read back as the value returned; never served on resume".into());
            style = term::WARN;
        }
        if let Some(r) = e.recovered {
            notes.push(match r {
                failcore::store::Recovered::Retried => {
                    "RECOVERED: in flight when an earlier run died; ran again".to_owned()
                }
                failcore::store::Recovered::Reconciled => {
                    "RECOVERED: in flight when an earlier run died; reconciled: it had landed, not run again"
                        .to_owned()
                }
                failcore::store::Recovered::NotLanded => {
                    "RECOVERED: in flight when an earlier run died; reconciled: it had not landed, ran again"
                        .to_owned()
                }
            });
        }
        match e.landed {
            Some(failcore::store::Landed::Unknown) => {
                notes.push(
                    "EFFECT UNKNOWN: sent, no verdict came back; a resume treats it as in flight"
                        .into(),
                );
                style = term::WARN;
            }
            Some(failcore::store::Landed::No) => {
                notes.push("did not land: refused before it could act".into());
            }
            _ => {}
        }
    } else {
        notes.push("started, never ended".into());
    }
    if let Some(dv) = &s.divergence {
        let from = source_text(sources, &dv.run, dv.seq, resumed_from);
        notes.push(format!(
            "DIVERGED from {from}: {}",
            failcore::store::describe_changes(&dv.changes)
        ));
        style = term::DIVERGED;
    }
    let latency = s
        .end
        .as_ref()
        .filter(|e| e.latency_ns > 0)
        .map(|e| duration(e.latency_ns))
        .unwrap_or_else(|| "-".into());
    let (status, st_style) = status_word(s.status());
    vec![
        Cell::new(s.step.to_string()),
        Cell::new(at),
        // The indent is ours; the name is escaped when the line is drawn.
        Cell::new(format!("{indent}{}", s.tool)),
        Cell::styled(status, st_style),
        Cell::new(latency),
        Cell::styled(notes.join("; "), style),
    ]
}

fn show_step(
    store: &dyn failcore::store::TraceStore,
    run: &str,
    n: u64,
    json: bool,
    out: &Out,
) -> Result<ExitCode> {
    let mut start_ts = String::new();
    let mut found = None;
    let outcome = scan(store, run, |ev| match ev {
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
        for p in problems(&outcome) {
            eprintln!("failcore: {}", safe(&p));
        }
        eprintln!("failcore: run {run} has no step {n} (`failcore show {run}` lists its steps)");
        return Ok(ExitCode::from(1));
    };
    if json {
        let mut v = s.to_json(&start_ts);
        v["schema"] = schema("show.step").into();
        print_json(&v);
        return Ok(ExitCode::SUCCESS);
    }
    // Multi-line JSON, each line escaped and indented.
    let pretty = |v: &serde_json::Value| {
        serde_json::to_string_pretty(v)
            .unwrap_or_default()
            .lines()
            .map(|l| safe(l).into_owned())
            .collect::<Vec<_>>()
            .join("\n    ")
    };
    let mut sources = Sources::new(store);
    let end = s.end.as_ref();
    let field = |name: &str, value: &str| println!("  {name:<12} {value}");
    println!("run {run}, step {}", s.step);
    field("tool", &safe(&s.tool));
    let (word, style) = status_word(s.status());
    field("status", &out.paint(style, word));
    field("started", &format!("{} (record {})", safe(&s.ts), s.seq));
    if let Some(e) = end {
        field("latency", &duration(e.latency_ns));
    }
    field(
        "fingerprint",
        &format!("{} (its call #{})", safe(&s.fp), s.occ + 1),
    );
    field(
        "parent",
        &s.parent.map_or("-".into(), |p| format!("step {p}")),
    );
    let d = &s.decision;
    let mut decision = outcome_word(d.outcome).to_owned();
    if let Some(p) = &d.policy {
        decision.push_str(&format!(" by policy {}", safe(p)));
    }
    if let Some(r) = &d.rule {
        decision.push_str(&format!(", rule {}", safe(r)));
    }
    if let Some(r) = &d.reason {
        decision.push_str(&format!(": {}", safe(r)));
    }
    field("decision", &decision);
    println!("  args\n    {}", pretty(&s.args));
    match end {
        Some(e) => {
            if let Some(o) = &e.output {
                println!("  output\n    {}", pretty(o));
            }
            if let Some(b) = &e.output_blob {
                field(
                    "output",
                    &format!("{} bytes, stored apart as {}", b.len, b.blake3),
                );
            }
            if let Some(err) = &e.error {
                field("error", &out.paint(term::BAD, err));
            }
            if let Some(src) = &e.replayed_from {
                field(
                    "replayed",
                    &format!(
                        "from {}, saved {}",
                        safe(&source_text(&mut sources, &src.run, src.seq, None)),
                        duration(e.saved_ns.unwrap_or(0))
                    ),
                );
                if let Some(found) = sources.step(&src.run, src.seq) {
                    for dr in found.drift {
                        field(
                            "drift",
                            &out.paint(
                                term::WARN,
                                &format!("when recorded, {}: {}", dr.contract, dr.detail),
                            ),
                        );
                    }
                }
            }
            for dr in &e.drift {
                field(
                    "drift",
                    &out.paint(term::WARN, &format!("{}: {}", dr.contract, dr.detail)),
                );
            }
            if e.exact == Some(false) {
                field(
                    "exact",
                    &out.paint(
                        term::WARN,
                        "no: the output's JSON does not read back as the value the tool returned \
                         (a `Some` written as `null`); a resume never serves it",
                    ),
                );
            }
        }
        None => println!("  never ended (in flight when the run stopped)"),
    }
    if let Some(dv) = &s.divergence {
        let from = match sources.step(&dv.run, dv.seq) {
            Some(src) => format!("step {} of run {}", src.step, dv.run),
            None => format!("record {} of run {}", dv.seq, dv.run),
        };
        field(
            "divergence",
            &out.paint(
                term::DIVERGED,
                &format!(
                    "from {from} (call #{} of {}): {}",
                    dv.position + 1,
                    s.tool,
                    failcore::store::describe_changes(&dv.changes)
                ),
            ),
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The first 12 hex digits of a digest, as the header shows it.
fn short(digest: &str) -> String {
    safe(digest.get(..12).unwrap_or(digest)).into_owned()
}
