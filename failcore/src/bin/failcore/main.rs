//! The `failcore` command: run the sample; list, show, verify, compare and report on traces.

pub(crate) mod common;
pub(crate) mod diff;
pub(crate) mod list;
pub(crate) mod llm_proxy;
pub(crate) mod policy;
pub(crate) mod proxy;
pub(crate) mod report;
pub(crate) mod resume;
pub(crate) mod sample;
pub(crate) mod scan;
pub(crate) mod show;
pub(crate) mod spend;
pub(crate) mod stats;
pub(crate) mod term;
pub(crate) mod transfer;
pub(crate) mod verify;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "failcore",
    version,
    about = "Inspect, verify and replay FailCore traces"
)]
struct Cli {
    /// The trace store: a directory, `jsonl:<dir>`, ... (default: $FAILCORE_STORE, $FAILCORE_DIR or .failcore)
    #[arg(long, global = true, value_name = "STORE")]
    store: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the built-in demo: a ten-step agent workflow that is blocked, drifts, crashes and resumes.
    Sample {
        /// Print only a JSON summary of the demo (see docs/CLI.md).
        #[arg(long)]
        json: bool,
    },
    /// List runs, newest first.
    List(list::Args),
    /// Show one run as a timeline.
    Show(show::Args),
    /// Check a run's hash chain, sequence, run id, summary, and its signed checkpoints or a pinned head.
    Verify(verify::Args),
    /// Make a signing key for checkpoints: writes the secret to a new file and prints the public key.
    Keygen(verify::KeygenArgs),
    #[command(flatten)]
    Transfer(transfer::Command),
    /// Put FailCore between an MCP client and an MCP server (stdio or Streamable HTTP on either side):
    /// each tools/call is policy-checked, replayed, traced.
    Proxy(proxy::Args),
    /// Serve the OpenAI Chat Completions and Anthropic Messages APIs locally; each model call is recorded,
    /// resumed, replayed offline.
    LlmProxy(llm_proxy::Args),
    /// Executed vs replayed, time saved, blocked by rule, failures and latency per tool.
    Stats(stats::Args),
    /// Compare two runs step by step; exits 1 when they differ.
    Diff(diff::Args),
    /// Write a self-contained HTML report of a run.
    Report(report::Args),
    /// Run a command with FAILCORE_RESUME set to a run, so it resumes from it.
    Resume(resume::Args),
    /// Policies against the history: `policy check --policy FILE` lists the recorded calls a candidate
    /// policy file would decide otherwise.
    Policy {
        #[command(subcommand)]
        command: policy::Command,
    },
}

fn main() -> ExitCode {
    main_with_args(std::env::args_os())
}

/// The command with these arguments (the first is the program's name). The Python package calls it
/// with `sys.argv`: it compiles this file as a module and reaches the modules above through it, hence
/// their `pub(crate)`.
pub(crate) fn main_with_args<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    if sample::is_child() {
        return sample::run();
    }
    let cli = Cli::parse_from(args);
    if !matches!(
        cli.command,
        Command::Proxy(_) | Command::LlmProxy(_) | Command::Resume(_)
    ) {
        common::end_on_closed_stdout();
    }
    let result = match cli.command {
        Command::Sample { json } => return sample::run_with(json),
        Command::List(args) => list::run(cli.store.as_deref(), args),
        Command::Show(args) => show::run(cli.store.as_deref(), args),
        Command::Verify(args) => verify::run(cli.store.as_deref(), args),
        Command::Keygen(args) => verify::keygen(args),
        Command::Transfer(command) => transfer::run(cli.store.as_deref(), command),
        Command::Proxy(args) => proxy::run(cli.store.as_deref(), args),
        Command::LlmProxy(args) => llm_proxy::run(cli.store.as_deref(), args),
        Command::Stats(args) => stats::run(cli.store.as_deref(), args),
        Command::Diff(args) => diff::run(cli.store.as_deref(), args),
        Command::Report(args) => report::run(cli.store.as_deref(), args),
        Command::Resume(args) => resume::run(cli.store.as_deref(), args),
        Command::Policy { command } => policy::run(cli.store.as_deref(), command),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("failcore: {}", term::safe(&common::message(&e)));
            ExitCode::from(2)
        }
    }
}
