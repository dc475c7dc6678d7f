//! `failcore policy check`: decides recorded calls again under a candidate policy file and lists the ones it
//! would decide otherwise.

use crate::common::{open_existing, print_json, resolve, schema, Result};
use crate::term::safe;
use failcore::policy::{recorded_policy, Candidate, Reevaluation, Ruling};
use failcore::store::{Body, RunReader, TraceStore};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Subcommand)]
pub enum Command {
    /// Decide every recorded call of runs again under a candidate policy file; list the calls it would
    /// decide otherwise. Exits 1 when there are any, 0 when there are none, 2 on errors.
    Check(CheckArgs),
}

#[derive(clap::Args)]
pub struct CheckArgs {
    /// The candidate policy file (TOML, or JSON when the name ends in `.json`).
    #[arg(long, value_name = "FILE")]
    policy: PathBuf,
    /// The runs to check (ids, unique prefixes, or `last`); default: the runs started since `--since`.
    runs: Vec<String>,
    /// Without runs named: check the runs started since then (default 7d).
    #[arg(long, value_name = "WHEN", conflicts_with = "runs")]
    since: Option<String>,
    /// The root of the built-in fs_safe and fs_read_only presets (default: the one each run recorded).
    #[arg(long, value_name = "DIR")]
    sandbox: Option<PathBuf>,
    /// Print a JSON object instead of text (see docs/CLI.md).
    #[arg(long)]
    json: bool,
}

/// A call the candidate decides otherwise than the run did.
struct Change {
    run: String,
    step: u64,
    tool: String,
    old: (Ruling, Option<String>, Option<String>),
    new: (Ruling, Option<String>, Option<String>, Option<String>),
}

/// A call whose arguments were redacted in the trace.
struct Unknown {
    run: String,
    step: u64,
    tool: String,
}

pub fn run(store: Option<&str>, command: Command) -> Result<ExitCode> {
    let Command::Check(args) = command;
    let store = open_existing(store)?;
    // The file is checked before any run is read: a bad file is an error even with no runs to check.
    Candidate::load(&args.policy, args.sandbox.as_deref())?;
    let runs = match args.runs.is_empty() {
        false => args
            .runs
            .iter()
            .map(|r| resolve(store.as_ref(), r))
            .collect::<Result<Vec<_>>>()?,
        true => {
            let since = crate::list::parse_since(args.since.as_deref().unwrap_or("7d"))
                .map_err(failcore::Error::Config)?;
            recent(store.as_ref(), since)?
        }
    };
    let mut calls = 0u64;
    let mut changes = Vec::new();
    let mut unknown = Vec::new();
    for run in &runs {
        check_run(
            store.as_ref(),
            run,
            &args,
            &mut calls,
            &mut changes,
            &mut unknown,
        )?;
    }
    if args.json {
        let changed: Vec<_> = changes
            .iter()
            .map(|c| {
                serde_json::json!({
                    "run": c.run, "step": c.step, "tool": c.tool,
                    "old": {"decision": c.old.0.as_str(), "policy": c.old.1, "rule": c.old.2},
                    "new": {"decision": c.new.0.as_str(), "policy": c.new.1, "rule": c.new.2,
                            "reason": c.new.3},
                })
            })
            .collect();
        let redacted: Vec<_> = unknown
            .iter()
            .map(|u| serde_json::json!({"run": u.run, "step": u.step, "tool": u.tool}))
            .collect();
        print_json(&serde_json::json!({
            "schema": schema("policy-check"), "policy": args.policy.display().to_string(),
            "runs": runs, "calls": calls, "changed": changed, "unknown_redacted": redacted,
        }));
    } else {
        println!(
            "policy {}: {} in {} decided again",
            safe(&args.policy.display().to_string()),
            plural(calls, "call"),
            plural(runs.len() as u64, "run")
        );
        for c in &changes {
            println!(
                "run {}  step {}  {}  {} -> {}",
                safe(&c.run),
                c.step,
                safe(&c.tool),
                describe(c.old.0, c.old.1.as_deref(), c.old.2.as_deref()),
                describe(c.new.0, c.new.1.as_deref(), c.new.2.as_deref()),
            );
            if let Some(reason) = &c.new.3 {
                println!("    {}", safe(reason));
            }
        }
        for u in &unknown {
            println!(
                "run {}  step {}  {}  unknown (redacted): its arguments were redacted in the trace",
                safe(&u.run),
                u.step,
                safe(&u.tool)
            );
        }
        match changes.len() {
            0 => println!("no call would be decided otherwise"),
            1 => println!("1 call would be decided otherwise"),
            n => println!("{n} calls would be decided otherwise"),
        }
    }
    Ok(if changes.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `1 call`, `2 calls`.
fn plural(n: u64, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// `deny (fs_safe: fs.escape)`, `allow`.
fn describe(ruling: Ruling, policy: Option<&str>, rule: Option<&str>) -> String {
    match (ruling, policy, rule) {
        (Ruling::Allow, ..) => "allow".into(),
        (r, Some(p), Some(rule)) => format!("{} ({}: {})", r.as_str(), safe(p), safe(rule)),
        (r, Some(p), None) => format!("{} ({})", r.as_str(), safe(p)),
        (r, None, Some(rule)) => format!("{} ({})", r.as_str(), safe(rule)),
        (r, None, None) => r.as_str().into(),
    }
}

/// The runs of `store` started at or after `since`, oldest first.
fn recent(store: &dyn TraceStore, since: std::time::SystemTime) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for run in store.runs()? {
        let started = RunReader::open(store, &run)?
            .next()
            .transpose()?
            .and_then(|r| failcore::store::time::parse_rfc3339(&r.record.ts));
        if started.is_some_and(|t| t >= since) {
            out.push(run);
        }
    }
    Ok(out)
}

/// Decides the calls of one run again, in their recorded order, with a candidate of its own (stateful
/// policies count the calls of one run).
fn check_run(
    store: &dyn TraceStore,
    run: &str,
    args: &CheckArgs,
    calls: &mut u64,
    changes: &mut Vec<Change>,
    unknown: &mut Vec<Unknown>,
) -> Result<()> {
    let mut candidate: Option<Candidate> = None;
    for rec in RunReader::open(store, run)? {
        let rec = rec?;
        if let Body::RunStart(start) = &rec.record.body {
            let recorded_root = recorded_policy(start).and_then(|p| p.sandbox_root);
            let root = args
                .sandbox
                .clone()
                .or_else(|| recorded_root.map(PathBuf::from));
            candidate = Some(Candidate::load(&args.policy, root.as_deref())?);
            continue;
        }
        let Some(start) = rec.record.body.start() else {
            continue;
        };
        if candidate.is_none() {
            candidate = Some(Candidate::load(&args.policy, args.sandbox.as_deref())?);
        }
        let Some(candidate) = &candidate else {
            continue;
        };
        *calls += 1;
        match candidate.decide(start)? {
            Reevaluation::Redacted => unknown.push(Unknown {
                run: run.to_owned(),
                step: start.step,
                tool: start.tool.clone(),
            }),
            Reevaluation::Decided {
                ruling,
                policy,
                rule,
                reason,
            } => {
                let old = Ruling::of_recorded(&start.decision);
                if old != ruling {
                    changes.push(Change {
                        run: run.to_owned(),
                        step: start.step,
                        tool: start.tool.clone(),
                        old: (
                            old,
                            start.decision.policy.clone(),
                            start.decision.rule.clone(),
                        ),
                        new: (ruling, policy, rule, reason),
                    });
                }
            }
        }
    }
    Ok(())
}
