//! `failcore verify <run|file>`.

use crate::common::{open_store, Result};
use failcore::store::{verify, RunReader};
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
        let store = open_store(store)?;
        let run = store.resolve(&args.target)?;
        RunReader::open(store.as_ref(), &run)?
    };
    let report = verify(reader);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else if let Some(fault) = &report.fault {
        println!(
            "FAIL {}: {fault} ({:?}); {} records verified before it",
            report.source, fault.kind, report.records
        );
    } else {
        println!(
            "OK {}: {} records, chain intact, run complete",
            report.source, report.records
        );
    }
    Ok(if report.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
