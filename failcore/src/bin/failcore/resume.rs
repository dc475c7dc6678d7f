//! `failcore resume <run|last> -- <command...>`: runs a command that resumes from a run.

use crate::common::{open_existing, resolve, schema, Result};
use std::process::{Command, ExitCode};

#[derive(clap::Args)]
pub struct Args {
    /// The run to resume from: an id, a unique prefix, or `last`.
    run: String,
    /// Print what would be run as JSON instead of running it.
    #[arg(long)]
    json: bool,
    /// The command and its arguments (after `--`).
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
}

pub fn run(store_spec: Option<&str>, args: Args) -> Result<ExitCode> {
    let store = open_existing(store_spec)?;
    let run = resolve(store.as_ref(), &args.run)?;
    if args.json {
        crate::common::print_json(&serde_json::json!({
            "schema": schema("resume"),
            "resume": run, "store": store.location(), "command": args.command,
        }));
        return Ok(ExitCode::SUCCESS);
    }
    let Some((program, rest)) = args.command.split_first() else {
        return Err(failcore::Error::Config("no command given after --".into()));
    };
    let mut cmd = Command::new(program);
    cmd.args(rest)
        .env("FAILCORE_RESUME", &run)
        .env_remove("FAILCORE_OFFLINE");
    if let Some(spec) = store_spec {
        cmd.env("FAILCORE_STORE", spec);
    }
    eprintln!(
        "failcore: resuming from {run}: {}",
        crate::term::safe(&args.command.join(" "))
    );
    let status = cmd
        .status()
        .map_err(|e| failcore::Error::Config(format!("cannot run {program}: {e}")))?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(c) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
        None => ExitCode::from(1),
    })
}
