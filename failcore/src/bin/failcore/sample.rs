//! The FailCore sample: a ten-step agent workflow that shows the three things FailCore is for.
//!
//! 1. A call that tries to write outside the sandbox is blocked before it runs, with the rule that did it.
//! 2. A tool that promised JSON returns text, and the drift is recorded on its step.
//! 3. The workflow crashes at step 9 (a real process abort, mid-call). Resumed, steps 1 to 8 are served
//!    from the trace without running; only the steps that never finished execute.
//!
//! Run it with `cargo run --example sample` (or `failcore sample`). The first run happens in a child
//! process, which dies; this process then resumes it.

use failcore::store::{RunReader, Status};
use failcore::Session;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

const PHASE: &str = "FAILCORE_SAMPLE_PHASE";

/// With `--json`, the story is not told: only the summary is printed, as JSON.
static JSON: AtomicBool = AtomicBool::new(false);

/// Prints a line of the story (not with `--json`). Every text the trace gave it is passed through
/// [`printable`] first.
macro_rules! say {
    ($($arg:tt)*) => {
        if !JSON.load(Ordering::SeqCst) {
            println!($($arg)*);
        }
    };
}

/// `s` with control characters written out, so no text can act on the terminal.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// The error type of the sample's tools. `From<failcore::Error>` lets a blocked call come back as an `Err`.
#[derive(Debug)]
pub struct AgentError(String);

impl std::fmt::Display for AgentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<failcore::Error> for AgentError {
    fn from(e: failcore::Error) -> Self {
        AgentError(e.to_string())
    }
}

/// Set by each tool body when it really runs, so the sample can tell executed from replayed.
static EXECUTED: AtomicUsize = AtomicUsize::new(0);
/// In the first run, `publish` kills the process mid-call.
static CRASH_IN_PUBLISH: AtomicBool = AtomicBool::new(false);

/// Stands in for the latency of an LLM or a remote API.
async fn work(ms: u64) {
    EXECUTED.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// Breaks a goal into steps (an LLM call in a real agent).
#[failcore::tool(effect = "pure")]
async fn plan(goal: String) -> Result<Vec<String>, AgentError> {
    work(150).await;
    Ok(vec![
        format!("research {goal}"),
        "write it up".into(),
        "publish".into(),
    ])
}

/// Searches the web.
#[failcore::tool(effect = "network")]
async fn search(query: String) -> Result<Vec<String>, AgentError> {
    work(120).await;
    Ok(vec![format!(
        "https://example.com/{}",
        query.replace(' ', "-")
    )])
}

/// Fetches a page.
#[failcore::tool(effect = "network")]
async fn fetch_page(url: String) -> Result<String, AgentError> {
    work(100).await;
    Ok(format!(
        "<html>Facts about {url}: flight recorders survive crashes.</html>"
    ))
}

/// Extracts facts as JSON. This one drifts: it answers in prose.
#[failcore::tool(effect = "pure", output = "json")]
async fn extract_facts(page: String) -> Result<String, AgentError> {
    work(130).await;
    Ok(format!(
        "Sure! Here are the facts from {} characters of page: recorders survive.",
        page.len()
    ))
}

/// Writes a file inside the sandbox (the `fs_safe` policy checks `path` before the body runs; `root` is a
/// handle, left out of the fingerprint and the trace).
#[failcore::tool(policy = "fs_safe", effect = "write", skip(root))]
async fn write_file(path: PathBuf, content: String, root: PathBuf) -> Result<u64, AgentError> {
    work(20).await;
    // The policy checked the path string; the sandbox enforces the root again at the syscall.
    let sandbox = failcore::fs::Sandbox::open(&root).map_err(|e| AgentError(e.to_string()))?;
    sandbox
        .write(&path, &content)
        .map_err(|e| AgentError(e.to_string()))?;
    Ok(content.len() as u64)
}

/// Drafts the report.
#[failcore::tool(effect = "pure")]
async fn draft_report(facts: String) -> Result<String, AgentError> {
    work(160).await;
    Ok(format!("# Report\n\n{facts}\n"))
}

/// Reviews the draft.
#[failcore::tool(effect = "pure")]
async fn review(draft: String) -> Result<bool, AgentError> {
    work(110).await;
    Ok(draft.starts_with("# Report"))
}

/// Publishes the report. In the first run the process dies here, mid-call.
#[failcore::tool(effect = "network")]
async fn publish(report: String) -> Result<String, AgentError> {
    work(90).await;
    if CRASH_IN_PUBLISH.load(Ordering::SeqCst) {
        say!("  9  publish          -- the process dies here (abort mid-call) --");
        std::process::abort();
    }
    Ok(format!("https://example.com/reports/{}", report.len()))
}

/// Tells the team.
#[failcore::tool(effect = "network")]
async fn notify(channel: String, message: String) -> Result<(), AgentError> {
    work(80).await;
    let _ = (channel, message);
    Ok(())
}

/// The workflow. Each step prints what the trace says happened to it.
async fn workflow(session: &Session, root: &Path) -> Result<(), AgentError> {
    let mut seen = 0usize;
    let mut report = |step: u32, name: &str, before: usize| {
        let ran = EXECUTED.load(Ordering::SeqCst) - before;
        for line in steps_since(session, &mut seen) {
            say!("{step:>3}  {name:<16} {line}");
        }
        ran
    };
    let root_buf = root.to_path_buf();

    let b = EXECUTED.load(Ordering::SeqCst);
    let steps = plan("flight recorders".into()).await?;
    report(1, "plan", b);

    let b = EXECUTED.load(Ordering::SeqCst);
    let urls = search(steps[0].clone()).await?;
    report(2, "search", b);

    let b = EXECUTED.load(Ordering::SeqCst);
    let page = fetch_page(urls[0].clone()).await?;
    report(3, "fetch_page", b);

    let b = EXECUTED.load(Ordering::SeqCst);
    let facts = extract_facts(page).await?;
    report(4, "extract_facts", b);

    // The page told the agent to add a key to ~/.ssh: the policy refuses, and the agent carries on.
    let b = EXECUTED.load(Ordering::SeqCst);
    let injected = write_file(
        "../../.ssh/authorized_keys".into(),
        "ssh-ed25519 AAAA attacker".into(),
        root_buf.clone(),
    )
    .await;
    assert!(injected.is_err(), "the sandbox must refuse this");
    write_file("notes/facts.md".into(), facts.clone(), root_buf.clone()).await?;
    report(5, "write_file", b);

    let b = EXECUTED.load(Ordering::SeqCst);
    let draft = draft_report(facts).await?;
    report(6, "draft_report", b);

    let b = EXECUTED.load(Ordering::SeqCst);
    review(draft.clone()).await?;
    report(7, "review", b);

    let b = EXECUTED.load(Ordering::SeqCst);
    write_file("report.md".into(), draft.clone(), root_buf).await?;
    report(8, "write_file", b);

    let b = EXECUTED.load(Ordering::SeqCst);
    let url = publish(draft).await?;
    report(9, "publish", b);

    let b = EXECUTED.load(Ordering::SeqCst);
    notify("#agents".into(), format!("published {url}")).await?;
    report(10, "notify", b);
    Ok(())
}

/// Describes the steps the trace gained since the last call, from the trace itself.
fn steps_since(session: &Session, seen: &mut usize) -> Vec<String> {
    let store = session.store();
    let Ok(reader) = RunReader::open(store.as_ref(), session.run_id()) else {
        return Vec::new();
    };
    let mut rules = std::collections::HashMap::new();
    let mut lines = Vec::new();
    let first_new = *seen;
    // The runs served from, newest first: the demo's runs are numbered from the oldest.
    let ancestry = session
        .resume_report()
        .map(|r| r.ancestry.clone())
        .unwrap_or_default();
    for (i, rec) in reader.filter_map(Result::ok).enumerate() {
        let body = rec.record.body;
        if let Some(s) = body.start() {
            rules.insert(s.step, s.decision.clone());
        }
        match body.end().cloned() {
            Some(e) if i >= first_new => {
                let mut line = match e.status {
                    Status::Ok => format!("executed   {:>6.1} ms", e.latency_ns as f64 / 1e6),
                    Status::Replayed => format!(
                        "replayed   from run {}, without running (saved {:.1} ms)",
                        e.replayed_from
                            .as_ref()
                            .and_then(|src| ancestry.iter().position(|r| *r == src.run))
                            .map_or(1, |p| ancestry.len() - p),
                        e.saved_ns.unwrap_or(0) as f64 / 1e6
                    ),
                    Status::Blocked => {
                        let d = rules.get(&e.step);
                        format!(
                            "BLOCKED    before it ran: rule {} of policy {}: {}",
                            printable(d.and_then(|d| d.rule.as_deref()).unwrap_or("?")),
                            printable(d.and_then(|d| d.policy.as_deref()).unwrap_or("?")),
                            printable(d.and_then(|d| d.reason.as_deref()).unwrap_or(""))
                        )
                    }
                    other => format!("{other}: {}", printable(&e.error.unwrap_or_default())),
                };
                for d in &e.drift {
                    line.push_str(&format!(
                        "\n{:>22}DRIFT: output contract {} broken: {}",
                        "",
                        printable(&d.contract),
                        printable(&d.detail)
                    ));
                }
                lines.push(line);
            }
            _ => {}
        }
        *seen = i + 1;
    }
    lines
}

/// The command that starts this program again for run 1, when it is not `current_exe()` with no
/// arguments: in the Python package, the executable is the interpreter.
pub static SELF_COMMAND: std::sync::OnceLock<(std::ffi::OsString, Vec<std::ffi::OsString>)> =
    std::sync::OnceLock::new();

pub fn is_child() -> bool {
    std::env::var(PHASE).is_ok_and(|p| p == "crash")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a tokio runtime")
}

/// Runs the sample (or, in the child process, the run that crashes).
pub fn run() -> ExitCode {
    run_with(false)
}

/// Runs the sample; with `json`, prints only a summary of what happened, as one JSON object.
pub fn run_with(json: bool) -> ExitCode {
    JSON.store(json, Ordering::SeqCst);
    let dir = std::env::var("FAILCORE_DIR")
        .ok()
        .filter(|d| !d.is_empty())
        .map_or_else(|| PathBuf::from(".failcore"), PathBuf::from);
    let root = dir.join("sample-workspace");
    if let Err(e) = std::fs::create_dir_all(&root) {
        eprintln!(
            "cannot create the sandbox {}: {e}",
            printable(&root.display().to_string())
        );
        return ExitCode::from(2);
    }
    match if is_child() {
        crashing_run(&dir, &root)
    } else {
        demo(&dir, &root)
    } {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sample failed: {}", printable(&e.to_string()));
            ExitCode::from(1)
        }
    }
}

fn crashing_run(dir: &Path, root: &Path) -> Result<(), AgentError> {
    CRASH_IN_PUBLISH.store(true, Ordering::SeqCst);
    let session = Session::builder().dir(dir).sandbox_root(root).open()?;
    runtime().block_on(session.scope(workflow(&session, root)))
}

fn demo(dir: &Path, root: &Path) -> Result<(), AgentError> {
    say!(
        "FailCore sample: a ten-step agent workflow. Traces go to {}\n",
        printable(&dir.display().to_string())
    );
    say!("== Run 1: records every call; the process will die at step 9 ==");
    let mut child = match SELF_COMMAND.get() {
        Some((program, args)) => {
            let mut c = std::process::Command::new(program);
            c.args(args);
            c
        }
        None => std::process::Command::new(
            std::env::current_exe().map_err(|e| AgentError(e.to_string()))?,
        ),
    };
    child.env(PHASE, "crash").env("FAILCORE_DIR", dir);
    if JSON.load(Ordering::SeqCst) {
        child.stdout(std::process::Stdio::null());
    }
    let status = child
        .status()
        .map_err(|e| AgentError(format!("could not start run 1: {e}")))?;
    say!("     run 1 ended abnormally ({status}): the workflow died at step 9\n");

    say!("== Run 2: resumes run 1 from its trace ==");
    let session = Session::builder()
        .dir(dir)
        .sandbox_root(root)
        .resume("last")
        .open()?;
    if let Some(r) = session.resume_report() {
        for s in &r.in_flight {
            say!(
                "     step of `{}` was in flight when run 1 died: it will run again",
                s.tool
            );
        }
    }
    let before = EXECUTED.load(Ordering::SeqCst);
    let rt = runtime();
    rt.block_on(session.scope(workflow(&session, root)))?;
    let summary = rt.block_on(session.finish())?;
    let executed = EXECUTED.load(Ordering::SeqCst) - before;

    say!();
    say!(
        "Resume: {} calls replayed from the trace, {} executed, {} blocked again by policy; time saved by replay: {:.0} ms",
        summary.counts.replayed,
        executed,
        summary.counts.blocked,
        summary.saved_ns as f64 / 1e6
    );
    say!();
    say!("== Run 3: replays run 2 offline and strictly: nothing executes ==");
    let replay = Session::builder()
        .dir(dir)
        .sandbox_root(root)
        .offline(session.run_id())
        .strict(true)
        .open()?;
    let before = EXECUTED.load(Ordering::SeqCst);
    rt.block_on(replay.scope(workflow(&replay, root)))?;
    // Strict: `finish` fails if a recorded success was never reached, or came out of order.
    let replayed = rt.block_on(replay.finish())?;
    let offline_executed = EXECUTED.load(Ordering::SeqCst) - before;
    say!(
        "Offline: {} calls served, {} executed; every recorded call reached, in its order",
        replayed.counts.replayed,
        offline_executed
    );
    if offline_executed != 0 {
        return Err(AgentError(format!(
            "the offline replay executed {offline_executed} calls"
        )));
    }
    say!();
    let trace = dir.join("runs").join(format!("{}.jsonl", session.run_id()));
    say!("Trace: {}", printable(&trace.display().to_string()));
    say!(
        "Show it: cargo failcore show {}   (or `cargo failcore list`)",
        session.run_id()
    );
    if JSON.load(Ordering::SeqCst) {
        let v = serde_json::json!({
            "schema": "failcore.sample/1",
            "store": dir.display().to_string(),
            "first_run": session.resume_report().map(|r| r.source.clone()),
            "run": session.run_id(),
            "executed": executed,
            "replayed": summary.counts.replayed,
            "blocked": summary.counts.blocked,
            "saved_ns": summary.saved_ns,
            "offline_run": replay.run_id(),
            "offline_replayed": replayed.counts.replayed,
            "offline_executed": offline_executed,
            "trace": trace.display().to_string(),
        });
        println!("{v}");
    }
    Ok(())
}
