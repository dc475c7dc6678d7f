//! Agent frameworks beneath FailCore, wired as docs/INTEGRATIONS.md shows: each framework's OpenAI client
//! at `failcore llm-proxy` (in front of a scripted model) and its MCP tools from `failcore proxy` in front of
//! the official filesystem server. The model asks to write a file, then to read `/etc/passwd` (refused by
//! the policy: a tool error for the agent, nothing for the server), then answers.
//!
//! Each test records, SIGKILLs the agent's process tree (and the LLM proxy) once the write has returned,
//! resumes (the recorded model call and the write are served: the upstream and the server do not see them
//! again, the file is left as it is), then replays offline (no request upstream, no `tools/call` at the
//! server, the same tool results and answer). Resume and offline go to the MCP proxy in the server's `env`
//! (FAILCORE_RESUME / FAILCORE_OFFLINE): its arguments, and so the tools' names, never change.
//!
//! `.ci/run` installs the frameworks (pinned) in the e2e venv and sets FAILCORE_E2E_FS_SERVER,
//! FAILCORE_E2E_PYTHON and FAILCORE_REQUIRE_FRAMEWORKS=1; without the first two the tests say they skipped
//! (and fail when FAILCORE_REQUIRE_FRAMEWORKS=1).

#[path = "support/scripted_llm.rs"]
mod scripted_llm;
mod support;

use scripted_llm::{Scripted, MODEL};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::{e2e, failcore_bin, E2e};

const CONTENT: &str = "from the agent";
const EDITED: &str = "edited after the crash";

/// `failcore llm-proxy`, its base URL; stopped when dropped.
struct LlmProxy {
    child: Child,
    base_url: String,
}

impl LlmProxy {
    fn start(traces: &Path, args: &[&str]) -> LlmProxy {
        let mut child = Command::new(failcore_bin())
            .arg("--store")
            .arg(format!("jsonl:{}", traces.display()))
            .args(["llm-proxy", "--listen", "127.0.0.1:0"])
            .args(args)
            .env_remove("FAILCORE_RESUME")
            .env_remove("FAILCORE_OFFLINE")
            .env_remove("FAILCORE_RUN_KEY")
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn the LLM proxy");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let rest = line
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"));
        let (addr, _) = rest.split_once(" (run ").expect("the run id");
        LlmProxy {
            child,
            base_url: format!("{addr}/v1"),
        }
    }

    /// SIGTERM: the run ends.
    fn stop(mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait().unwrap();
        assert!(status.code().is_some(), "the LLM proxy died: {status}");
    }
}

impl Drop for LlmProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `pid` and all its descendants, from /proc.
fn process_tree(pid: u32) -> Vec<i32> {
    let mut parent_of: Vec<(i32, i32)> = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces and parentheses.
        let after = &stat[stat.rfind(')').unwrap_or(0) + 1..];
        if let Some(ppid) = after.split_whitespace().nth(1).and_then(|v| v.parse().ok()) {
            parent_of.push((p, ppid));
        }
    }
    let mut tree = vec![pid as i32];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            parent_of
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    tree
}

struct Fixture {
    dir: PathBuf,
    data: PathBuf,
    home: PathBuf,
    policy: PathBuf,
    received: PathBuf,
    run_key: Option<&'static str>,
    e: E2e,
}

impl Fixture {
    fn new(e: E2e, dir: &Path, run_key: Option<&'static str>) -> Fixture {
        let data = dir.join("data");
        let home = dir.join("home");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::create_dir_all(&home).unwrap();
        let policy = dir.join("failcore.toml");
        let mut text = format!(
            "guard = [\"data\"]\n\n[policy.data]\npreset = \"fs\"\nroot = \"{}\"\n\
             paths = [\"path\", \"paths\", \"source\", \"destination\"]\n\n[proxy]\nstore = \"traces\"\n",
            data.display()
        );
        if let Some(key) = run_key {
            text.push_str(&format!("run_key = \"{key}\"\n"));
        }
        std::fs::write(&policy, text).unwrap();
        Fixture {
            received: dir.join("received.log"),
            dir: dir.to_path_buf(),
            data,
            home,
            policy,
            run_key,
            e,
        }
    }

    fn traces(&self) -> PathBuf {
        self.dir.join("traces")
    }

    fn out(&self) -> PathBuf {
        self.data.join("out.txt")
    }

    fn llm_proxy(&self, mut args: Vec<String>) -> LlmProxy {
        if let Some(key) = self.run_key {
            args.extend(["--run-key".into(), key.into()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        LlmProxy::start(&self.traces(), &args)
    }

    /// The `tools/call` requests that reached the server.
    fn calls_at_server(&self) -> usize {
        std::fs::read_to_string(&self.received)
            .unwrap_or_default()
            .matches("\"tools/call\"")
            .count()
    }

    /// The agent's command: the framework's script, the MCP server entry as a user writes it (fixed
    /// arguments; FAILCORE_* in `env`).
    fn agent(&self, framework: &str, base_url: &str, env: Value) -> Command {
        // The server's input is logged on its way in, to count what reached it.
        let server = format!(
            "tee -a '{}' | exec node '{}' '{}'",
            self.received.display(),
            self.e.server_js,
            self.data.display()
        );
        let config = json!({
            "base_url": base_url,
            "model": MODEL,
            "prompt": "Save the note, then look at the system's users.",
            "command": failcore_bin(),
            "args": ["proxy", "--policy", &self.policy, "--", "sh", "-c", server],
            "env": env,
        });
        let mut cmd = Command::new(&self.e.python);
        cmd.arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/e2e/frameworks.py"
        ))
        .arg(framework)
        .arg(config.to_string())
        .env("HOME", &self.home)
        .env_remove("FAILCORE_RESUME")
        .env_remove("FAILCORE_OFFLINE")
        .env_remove("OPENAI_API_KEY");
        cmd
    }

    fn run_agent(&self, framework: &str, base_url: &str, env: Value) -> Value {
        let out = self.agent(framework, base_url, env).output().unwrap();
        assert!(
            out.status.success(),
            "{framework} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(stdout.lines().last().unwrap_or_default())
            .unwrap_or_else(|e| panic!("{e}: {stdout}"))
    }

    /// Ends the keyed MCP run (`--end-run`), as a user does once the agent is done.
    fn end_mcp_run(&self) {
        let Some(key) = self.run_key else {
            return;
        };
        let out = Command::new(failcore_bin())
            .args(["proxy", "--run-key", key, "--policy"])
            .arg(&self.policy)
            .arg("--end-run")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The Python of a framework that cannot share the e2e venv (`var` names it), or `None` after saying that
/// `test` skipped (failing instead when FAILCORE_REQUIRE_FRAMEWORKS=1).
fn own_python(test: &str, var: &str) -> Option<String> {
    if let Some(python) = std::env::var(var).ok().filter(|v| !v.is_empty()) {
        return Some(python);
    }
    let why = format!(
        "set {var} (bash .ci/run installs the pinned framework in a venv of its own and sets it)"
    );
    assert!(
        std::env::var("FAILCORE_REQUIRE_FRAMEWORKS").as_deref() != Ok("1"),
        "{test}: FAILCORE_REQUIRE_FRAMEWORKS=1 but {why}"
    );
    eprintln!("SKIPPED {test}: {why}");
    None
}

fn framework_records_resumes_after_a_kill_and_replays_offline(
    test: &str,
    framework: &str,
    python_var: Option<&str>,
    run_key: Option<&'static str>,
    offline: bool,
) {
    let Some(mut e) = e2e(test, Some("FAILCORE_REQUIRE_FRAMEWORKS")) else {
        return;
    };
    if let Some(var) = python_var {
        let Some(python) = own_python(test, var) else {
            return;
        };
        e.python = python;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = std::fs::canonicalize(tmp.path()).unwrap();
    let f = Fixture::new(e, &dir, run_key);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let upstream = rt.block_on(Scripted::start());
    upstream.script_files(f.out().to_str().unwrap(), CONTENT);
    // The request after the write's result is held: the agent is killed while it waits for it.
    upstream.hold_turn(1);

    // Record, and crash.
    let llm = f.llm_proxy(vec!["--upstream".into(), upstream.url()]);
    let mut agent = f
        .agent(framework, &llm.base_url, json!({}))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        let held = rt.block_on(async {
            tokio::time::timeout(Duration::from_millis(200), upstream.held()).await
        });
        if held.is_ok() {
            break;
        }
        if agent.try_wait().unwrap().is_some() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut agent.stderr.take().unwrap(), &mut err).unwrap();
            panic!("{framework} ended before its second model call: {err}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{framework} never made its second model call"
        );
    }
    let tree = process_tree(agent.id());
    // A framework holding one MCP session has its proxy running; one with a session per call, none now.
    assert!(
        run_key.is_some() || tree.len() >= 2,
        "the MCP proxy is not running: {tree:?}"
    );
    for pid in &tree {
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    agent.wait().unwrap();
    drop(llm); // SIGKILL
    assert_eq!(std::fs::read_to_string(f.out()).unwrap(), CONTENT);
    assert_eq!(f.calls_at_server(), 1, "only the write reached the server");
    assert_eq!(upstream.requests(), 2);
    // A change made after the crash, which a second write would undo.
    std::fs::write(f.out(), EDITED).unwrap();

    // Resume: the first model call and the write are served from the traces; the rest runs.
    let llm = f.llm_proxy(vec![
        "--upstream".into(),
        upstream.url(),
        "--resume".into(),
        "last".into(),
    ]);
    let resumed = f.run_agent(framework, &llm.base_url, json!({"FAILCORE_RESUME": "last"}));
    llm.stop();
    f.end_mcp_run();
    assert_eq!(
        upstream.requests(),
        4,
        "the recorded model call was sent again: {resumed}"
    );
    assert_eq!(f.calls_at_server(), 1, "a tool call reached the server");
    assert_eq!(std::fs::read_to_string(f.out()).unwrap(), EDITED);
    let results: Vec<&str> = resumed["tool_results"]
        .as_array()
        .unwrap_or_else(|| panic!("{resumed}"))
        .iter()
        .map(|r| r.as_str().unwrap_or_default())
        .collect();
    assert_eq!(results.len(), 2, "{resumed}");
    assert!(results[0].contains("Successfully wrote"), "{resumed}");
    assert!(
        results[1].contains("fs.outside_root") && !results[1].contains("root:"),
        "the refusal: {resumed}"
    );
    let received = std::fs::read_to_string(&f.received).unwrap();
    assert!(
        !received.contains("/etc/passwd"),
        "the refused call reached the server"
    );
    let answer = resumed["final"].as_str().unwrap_or_default();
    assert!(answer.starts_with("Done: "), "{resumed}");

    if !offline {
        return;
    }
    // Offline: nothing reaches the upstream or the server; the same results and answer.
    let llm = f.llm_proxy(vec!["--offline".into(), "last".into()]);
    let offline = f.run_agent(
        framework,
        &llm.base_url,
        json!({"FAILCORE_OFFLINE": "last"}),
    );
    llm.stop();
    f.end_mcp_run();
    assert_eq!(upstream.requests(), 4, "a model call reached the upstream");
    assert_eq!(f.calls_at_server(), 1, "a tool call reached the server");
    assert_eq!(std::fs::read_to_string(f.out()).unwrap(), EDITED);
    assert_eq!(offline, resumed);
}

#[test]
fn openai_agents_sdk_records_resumes_after_a_kill_and_replays_offline() {
    framework_records_resumes_after_a_kill_and_replays_offline(
        "openai_agents_sdk_records_resumes_after_a_kill_and_replays_offline",
        "openai_agents",
        None,
        None,
        true,
    );
}

#[test]
fn pydantic_ai_records_resumes_after_a_kill_and_replays_offline() {
    framework_records_resumes_after_a_kill_and_replays_offline(
        "pydantic_ai_records_resumes_after_a_kill_and_replays_offline",
        "pydantic_ai",
        None,
        None,
        true,
    );
}

#[test]
fn autogen_records_and_resumes_after_a_kill() {
    // mcp_server_tools opens a session per tool call: the run key makes the sessions one run.
    framework_records_resumes_after_a_kill_and_replays_offline(
        "autogen_records_and_resumes_after_a_kill",
        "autogen",
        None,
        Some("autogen-agent"),
        false,
    );
}

#[test]
fn autogen_records_resumes_after_a_kill_and_replays_offline() {
    framework_records_resumes_after_a_kill_and_replays_offline(
        "autogen_records_resumes_after_a_kill_and_replays_offline",
        "autogen",
        None,
        Some("autogen-agent"),
        true,
    );
}

#[test]
fn crewai_records_resumes_after_a_kill_and_replays_offline() {
    // CrewAI requires openai<3 (the other frameworks openai>=3): a venv of its own. It names each MCP tool
    // after the server's whole command line, so the mode goes in the server's env, and opens a session per
    // tool call: the run key makes the sessions one run.
    framework_records_resumes_after_a_kill_and_replays_offline(
        "crewai_records_resumes_after_a_kill_and_replays_offline",
        "crewai",
        Some("FAILCORE_E2E_CREWAI_PYTHON"),
        Some("crewai-agent"),
        true,
    );
}
