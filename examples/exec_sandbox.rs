//! `cargo run --example exec_sandbox`: an agent's command tool whose escape attempt is stopped by the kernel
//! and recorded.
//!
//! The tool runs `touch` through `failcore::exec`, inside the sandbox its exec policy describes: the
//! workspace is the only writable directory. The argument check lets `touch ../escaped.txt` through (it
//! is an allowed program with plain arguments); Landlock refuses the write at the syscall, and the step in
//! the trace records the exit status, the error the program printed, and the sandbox it ran inside.

use failcore::exec::ExecOutput;
use failcore::policy::ExecPolicy;
use failcore::store::RunReader;
use failcore::{Session, ToolError};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::OnceLock;

static WORKSPACE: OnceLock<PathBuf> = OnceLock::new();

/// Programs the agent may run, and the sandbox they run in: the workspace is their working directory and
/// the only place they may write; no network; the default limits and timeout.
fn commands() -> ExecPolicy {
    let workspace = WORKSPACE.get().expect("the workspace is set first");
    ExecPolicy::allow(["touch", "ls"]).root(workspace)
}

/// Runs a program in the workspace.
#[failcore::tool(policy = commands(), effect = "exec")]
async fn run_command(program: String, args: Vec<String>) -> Result<ExecOutput, ToolError> {
    Ok(failcore::exec::run(&commands(), &program, &args).await?)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match demo().await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn demo() -> Result<ExitCode, Box<dyn std::error::Error>> {
    let scratch = tempfile::tempdir()?;
    let workspace = scratch.path().join("workspace");
    std::fs::create_dir(&workspace)?;
    WORKSPACE.get_or_init(|| workspace.clone());
    let session = Session::from_env()?.open()?;

    let made = session
        .scope(run_command("touch".into(), vec!["notes.md".into()]))
        .await;
    // What a prompt injection would ask for: a file outside the workspace.
    let escape = session
        .scope(run_command("touch".into(), vec!["../escaped.txt".into()]))
        .await;
    let run = session.run_id().to_owned();
    let store = session.store();
    session.finish().await?;

    let escape = match (made, escape) {
        (Ok(_), Ok(escape)) => escape,
        (Err(e), _) | (_, Err(e)) => {
            // The policy refuses where this kernel cannot build the sandbox (no Landlock, ...).
            println!("the command was refused: {e}");
            let required = std::env::var("FAILCORE_REQUIRE_LANDLOCK").as_deref() == Ok("1");
            return Ok(if required {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            });
        }
    };
    println!(
        "touch notes.md        -> {}",
        if workspace.join("notes.md").exists() {
            "created in the workspace"
        } else {
            "NOT created"
        }
    );
    println!(
        "touch ../escaped.txt  -> exit {:?}: {}",
        escape.exit.code,
        escape.stderr.text.trim()
    );

    println!("\nthe trace of run {run}:");
    for line in RunReader::open(store.as_ref(), &run)? {
        if let Some(end) = line?.record.body.end() {
            let Some(output) = end.output.clone() else {
                continue;
            };
            let out: ExecOutput = serde_json::from_value(output)?;
            println!(
                "  step {}: {} {} -> exit {:?}, stderr {:?}",
                end.step,
                out.program,
                out.args.join(" "),
                out.exit.code,
                out.stderr.text.trim()
            );
            let s = &out.sandbox;
            println!(
                "          sandbox: Landlock ABI {}, writable {:?}, network {} ({}), {} processes by {}, timeout {} ms, env {:?}",
                s.landlock_abi,
                s.write,
                s.network,
                s.network_enforced_by.join(" + "),
                s.processes,
                s.processes_enforced_by,
                s.timeout_ms,
                s.env
            );
        }
    }

    let escaped = scratch.path().join("escaped.txt").exists();
    if escaped || escape.success() {
        eprintln!("the escape was NOT stopped");
        return Ok(ExitCode::FAILURE);
    }
    println!("\nthe kernel refused the write outside the workspace; nothing was created there");
    Ok(ExitCode::SUCCESS)
}
