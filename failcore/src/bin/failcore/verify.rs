//! `failcore verify <run|file>`.

use crate::common::{open_existing, resolve, schema, Result};
use crate::term::{self, safe, Out};
use failcore::store::{verify, Fault, FaultKind, RunReader, VerifyReport};
use std::path::Path;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// A run id (or unique prefix), `last`, or the path of a trace file.
    target: String,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(store: Option<&str>, args: Args) -> Result<ExitCode> {
    let path = Path::new(&args.target);
    let reader = if args.target.ends_with(".jsonl") || path.is_file() {
        RunReader::new(failcore::store::open_file(path)?)
    } else {
        let store = open_existing(store)?;
        let run = resolve(store.as_ref(), &args.target)?;
        RunReader::open(store.as_ref(), &run)?
    };
    let report = verify(reader);
    if args.json {
        let mut v = serde_json::to_value(&report).unwrap_or_default();
        v["schema"] = schema("verify").into();
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        println!("{}", text(&report, &Out::stdout()));
    }
    Ok(if report.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The report as one line: OK in green, FAIL in red, the fault in plain words.
fn text(report: &VerifyReport, out: &Out) -> String {
    let source = safe(&report.source);
    match &report.fault {
        None => format!(
            "{} {source}: {} records, chain intact, run complete",
            out.paint(term::OK, "OK"),
            report.records
        ),
        Some(fault) => format!(
            "{} {source}: {}",
            out.paint(term::BAD_BOLD, "FAIL"),
            safe(&fault_text(report, fault))
        ),
    }
}

fn fault_text(report: &VerifyReport, fault: &Fault) -> String {
    let at = fault
        .line
        .map(|l| format!("line {l}: "))
        .unwrap_or_default();
    // A read error's message names the file and line again: keep only its reason.
    let reason = crate::common::json_reason(
        fault
            .message
            .split_once(" is corrupt: ")
            .map_or(fault.message.as_str(), |(_, r)| r),
    );
    let before = match report.records {
        0 => String::new(),
        n => format!(" ({n} records verified before it)"),
    };
    match fault.kind {
        FaultKind::Corrupt if fault.line == Some(1) => {
            format!("not a FailCore trace (line 1 is not a trace record: {reason})")
        }
        FaultKind::Corrupt => format!("{at}corrupt record: {reason}{before}"),
        FaultKind::Seq => format!("{at}sequence broken: {reason}{before}"),
        FaultKind::Chain => format!("{at}hash chain broken: {reason}{before}"),
        FaultKind::Seal => format!("{at}seal broken: {reason}{before}"),
        FaultKind::Summary => format!("{at}summary wrong: {reason}{before}"),
        FaultKind::TornTail => format!("{reason}{before}"),
        // Its message already counts the records.
        FaultKind::Incomplete => reason,
        _ => format!("{at}{reason}{before}"),
    }
}
