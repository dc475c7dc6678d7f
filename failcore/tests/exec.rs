//! `failcore::exec` against the real kernel: each wall of the sandbox is tried by a real program that
//! attempts to get past it.
//!
//! These tests need Landlock. Where the kernel lacks it they say so and skip, unless
//! `FAILCORE_REQUIRE_LANDLOCK=1` (set by CI), which turns the skip into a failure.
#![cfg(target_os = "linux")]

use failcore::exec::{self, Command, ExecOutput};
use failcore::policy::{ExecPolicy, Network};
use failcore::store::{DecisionOutcome, MemoryStore, RunReader, Status};
use failcore::{Error, Session};
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Whether the kernel has Landlock; `false` means the calling test skips (after saying why).
fn landlock() -> bool {
    let abi = exec::landlock_abi();
    if abi > 0 {
        return true;
    }
    let msg = "this kernel has no Landlock: the sandbox tests cannot run here";
    if std::env::var("FAILCORE_REQUIRE_LANDLOCK").as_deref() == Ok("1") {
        panic!("{msg}, and FAILCORE_REQUIRE_LANDLOCK=1 requires them");
    }
    eprintln!("SKIPPED: {msg} (set FAILCORE_REQUIRE_LANDLOCK=1 to make this a failure)");
    false
}

/// The real Python interpreter (not a shim script that needs its own environment).
fn python() -> String {
    if Path::new("/usr/bin/python3").exists() {
        return "/usr/bin/python3".into();
    }
    let out = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 is needed by these tests");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn policy() -> ExecPolicy {
    ExecPolicy::allow([python()])
}

fn run(policy: &ExecPolicy, script: &str) -> ExecOutput {
    Command::new(python())
        .args(["-c", script])
        .run_blocking(policy)
        .unwrap_or_else(|e| panic!("the command did not run: {e}"))
}

/// Whether `pid` is gone (or a zombie waiting for a reaper: it runs no more).
fn dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

#[test]
fn writes_outside_the_roots_fail_and_leave_nothing() {
    if !landlock() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (ws, outside) = (dir.path().join("ws"), dir.path().join("outside"));
    std::fs::create_dir_all(&ws).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("keep.txt"), "precious").unwrap();
    let script = format!(
        r#"
import os
def attempt(name, f):
    try:
        f(); print(name, "ok")
    except OSError as e:
        print(name, e.errno)
attempt("inside", lambda: open("inside.txt", "w").write("fine"))
attempt("create", lambda: open({escape:?}, "w").write("escaped"))
attempt("truncate", lambda: open({keep:?}, "r+").truncate(0))
attempt("mkdir", lambda: os.mkdir({newdir:?}))
attempt("devnull", lambda: open("/dev/null", "w").write("x"))
"#,
        escape = outside.join("escape.txt").display().to_string(),
        keep = outside.join("keep.txt").display().to_string(),
        newdir = outside.join("newdir").display().to_string(),
    );
    let out = run(&policy().root(&ws), &script);
    // EROFS: outside the writable roots every mount is read-only, which the kernel checks before asking
    // Landlock (EACCES, where no mount namespace could be made and a weaker sandbox was accepted).
    assert_eq!(
        out.stdout.text, "inside ok\ncreate 30\ntruncate 30\nmkdir 30\ndevnull ok\n",
        "{out:#?}"
    );
    assert!(out.success(), "{out:#?}");
    assert_eq!(
        std::fs::read_to_string(ws.join("inside.txt")).unwrap(),
        "fine"
    );
    assert!(!outside.join("escape.txt").exists());
    assert!(!outside.join("newdir").exists());
    assert_eq!(
        std::fs::read_to_string(outside.join("keep.txt")).unwrap(),
        "precious"
    );
    // The record says which walls were up.
    let sandbox = &out.sandbox;
    assert!(sandbox.landlock_abi >= 3, "{sandbox:?}");
    assert_eq!(
        sandbox.write,
        [
            std::fs::canonicalize(&ws).unwrap().display().to_string(),
            "/dev/null".into()
        ]
    );
    assert_eq!(sandbox.read, ["/"]);
    assert!(sandbox.missing.is_empty(), "{sandbox:?}");
}

#[test]
fn secrets_outside_the_read_roots_are_refused() {
    if !landlock() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (ws, home) = (dir.path().join("ws"), dir.path().join("home"));
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    std::fs::create_dir_all(&ws).unwrap();
    std::fs::write(home.join(".ssh/id_ed25519"), "PRIVATE KEY").unwrap();
    std::fs::write(ws.join("notes.txt"), "public").unwrap();
    let script = format!(
        r#"
def attempt(name, f):
    try:
        print(name, f())
    except OSError as e:
        print(name, e.errno)
attempt("notes", lambda: open("notes.txt").read())
attempt("key", lambda: open({key:?}).read())
attempt("list", lambda: len(__import__("os").listdir({ssh:?})))
"#,
        key = home.join(".ssh/id_ed25519").display().to_string(),
        ssh = home.join(".ssh").display().to_string(),
    );
    // The program's own directories are readable; the home directory is not among them.
    let system: Vec<&str> = ["/usr", "/lib", "/lib64", "/bin", "/etc", "/dev", "/proc"]
        .into_iter()
        .filter(|p| Path::new(p).exists())
        .collect();
    let confined = policy().root(&ws).readable(system.clone());
    let out = run(&confined, &script);
    assert_eq!(
        out.stdout.text, "notes public\nkey 13\nlist 13\n",
        "{out:#?}"
    );
    assert_eq!(
        out.sandbox.read.len(),
        system.len() + 1,
        "{:?}",
        out.sandbox
    );

    // Without read roots the same script reads the key: the walls above are what stopped it.
    let open = run(&policy().root(&ws), &script);
    assert_eq!(
        open.stdout.text, "notes public\nkey PRIVATE KEY\nlist 1\n",
        "{open:#?}"
    );
}

const CONNECT: &str = r#"
import socket, sys
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5).close()
    print("connected")
except OSError as e:
    print(e.errno)
"#;

fn connect(policy: &ExecPolicy, port: u16) -> ExecOutput {
    Command::new(python())
        .args(["-c", CONNECT, &port.to_string()])
        .run_blocking(policy)
        .unwrap()
}

fn accepted(listener: &TcpListener) -> usize {
    let mut n = 0;
    while let Ok((mut s, _)) = listener.accept() {
        let _ = s.read(&mut [0u8; 1]);
        n += 1;
    }
    n
}

#[test]
fn the_network_is_closed_unless_the_policy_opens_it() {
    if !landlock() {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();

    let off = connect(&policy(), port);
    assert_eq!(off.stdout.text, "13\n", "{off:#?}");
    assert_eq!(accepted(&listener), 0);
    assert_eq!(off.sandbox.network, "none");
    assert!(off
        .sandbox
        .network_enforced_by
        .contains(&"seccomp".to_string()));

    let on = connect(&policy().network(Network::All), port);
    assert_eq!(on.stdout.text, "connected\n", "{on:#?}");
    assert_eq!(accepted(&listener), 1);

    // Landlock TCP rules: this port only.
    let this_port = connect(&policy().network(Network::ConnectPorts(vec![port])), port);
    assert_eq!(this_port.stdout.text, "connected\n", "{this_port:#?}");
    assert_eq!(accepted(&listener), 1);
    assert_eq!(this_port.sandbox.network, format!("tcp:{port}"));
    // Landlock for TCP, seccomp for the Unix sockets the policy does not name.
    assert_eq!(
        this_port.sandbox.network_enforced_by,
        ["landlock", "seccomp"]
    );
    let other = port.wrapping_add(1).max(1);
    let other_port = connect(&policy().network(Network::ConnectPorts(vec![other])), port);
    assert_eq!(other_port.stdout.text, "13\n", "{other_port:#?}");
    assert_eq!(accepted(&listener), 0);
}

#[test]
fn a_fork_bomb_is_stopped_by_the_process_limit() {
    if !landlock() {
        return;
    }
    let script = r#"
import os, time
pids = []
try:
    while len(pids) < 10000:
        pid = os.fork()
        if pid == 0:
            time.sleep(60)
            os._exit(0)
        pids.append(pid)
    print(len(pids), 0, pids[0])
except OSError as e:
    print(len(pids), e.errno, pids[0] if pids else 0)
"#;
    let started = Instant::now();
    let out = run(&policy().processes(16), script);
    let fields: Vec<u32> = out
        .stdout
        .text
        .split_whitespace()
        .map(|f| f.parse().unwrap())
        .collect();
    assert_eq!(fields.len(), 3, "{out:#?}");
    let (forked, errno, first) = (fields[0], fields[1], fields[2]);
    assert!(forked < 16, "{forked} forks got through a limit of 16");
    assert_eq!(errno, 11, "fork failed with EAGAIN: {out:#?}");
    assert!(!out.sandbox.processes_enforced_by.is_empty());
    // The sleeping children were killed with the group when the command exited.
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(dead(first), "child {first} outlived the command");
}

#[test]
fn the_timeout_kills_the_whole_process_group() {
    if !landlock() {
        return;
    }
    // A child (not a group leader, so `setsid` would succeed) tries to leave the process group, then
    // sleeps past the timeout.
    let script = r#"
import os, time
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    try:
        os.setsid()
        msg = "left"
    except OSError as e:
        msg = str(e.errno)
    os.write(w, msg.encode())
    time.sleep(60)
    os._exit(0)
print(pid, os.read(r, 100).decode(), flush=True)
time.sleep(60)
"#;
    let started = Instant::now();
    let out = run(&policy().timeout(Duration::from_millis(1500)), script);
    let elapsed = started.elapsed();
    assert!(out.exit.timed_out, "{out:#?}");
    assert_eq!(out.exit.signal, Some(9));
    assert!(!out.success());
    assert!(elapsed >= Duration::from_millis(1500), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(20), "{elapsed:?}");
    let mut fields = out.stdout.text.split_whitespace();
    let grandchild: u32 = fields.next().and_then(|p| p.parse().ok()).expect("pid");
    assert_eq!(
        fields.next(),
        Some("1"),
        "setsid must fail with EPERM: {out:#?}"
    );
    assert!(
        dead(grandchild),
        "the grandchild {grandchild} outlived the timeout"
    );
    assert_eq!(out.sandbox.timeout_ms, 1500);
}

#[test]
fn the_environment_is_an_allow_list() {
    if !landlock() {
        return;
    }
    // Only this test reads or writes this variable.
    std::env::set_var("FAILCORE_TEST_SECRET_TOKEN", "hunter2");
    let script = "import os; print(sorted(os.environ))";
    let out = Command::new(python())
        .args(["-c", script])
        .env("TOOL_CHOSEN", "yes")
        .run_blocking(&policy())
        .unwrap();
    assert!(
        !out.stdout.text.contains("FAILCORE_TEST_SECRET"),
        "{out:#?}"
    );
    assert!(out.stdout.text.contains("'PATH'"), "{out:#?}");
    assert!(out.stdout.text.contains("'TOOL_CHOSEN'"), "{out:#?}");
    assert!(out.sandbox.env.contains(&"PATH".to_string()));
    assert!(!out.sandbox.env.iter().any(|n| n.contains("SECRET")));
}

#[test]
fn output_is_bounded_and_marked_when_cut() {
    if !landlock() {
        return;
    }
    let out = run(
        &policy().max_output(10),
        "import sys; print('x' * 100); sys.stderr.write('oops')",
    );
    assert_eq!(out.stdout.text, "x".repeat(10));
    assert_eq!(out.stdout.bytes, 101);
    assert!(out.stdout.truncated);
    assert_eq!(out.stderr.text, "oops");
    assert!(!out.stderr.truncated);

    let echoed = Command::new(python())
        .args(["-c", "import sys; print(sys.stdin.read().upper())"])
        .stdin("from the tool")
        .run_blocking(&policy())
        .unwrap();
    assert_eq!(echoed.stdout.text, "FROM THE TOOL\n", "{echoed:#?}");
}

#[test]
fn limits_on_cpu_and_file_size_are_applied() {
    if !landlock() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let big = run(
        &policy().root(dir.path()).file_size(1000),
        "import os\nfd = os.open('big', os.O_WRONLY | os.O_CREAT)\nprint(os.write(fd, b'x' * 5000), flush=True)\nos.write(fd, b'x')",
    );
    // SIGXFSZ kills a program that keeps its default action; Python ignores it and gets EFBIG.
    assert!(
        big.exit.signal == Some(25)
            || (big.stdout.text == "1000\n" && big.stderr.text.contains("File too large")),
        "{big:#?}"
    );
    assert!(!big.success());
    assert!(std::fs::metadata(dir.path().join("big")).unwrap().len() <= 1000);

    let spin = run(&policy().cpu_seconds(1), "while True: pass");
    assert!(
        matches!(spin.exit.signal, Some(9) | Some(24)),
        "CPU limit: {spin:#?}"
    );
    assert!(!spin.exit.timed_out);
}

#[test]
fn the_effect_refuses_what_the_policy_refuses() {
    let e = Command::new("bash")
        .args(["-c", "id"])
        .run_blocking(&policy())
        .unwrap_err();
    assert!(
        matches!(&e, Error::Exec { rule, .. } if rule == "exec.not_allowed"),
        "{e}"
    );
    let e = Command::new(python())
        .run_blocking(&policy().root("/no/such/failcore/dir"))
        .unwrap_err();
    assert!(
        matches!(&e, Error::Exec { rule, .. } if rule == "exec.sandbox.path"),
        "{e}"
    );
}

#[test]
fn a_program_that_cannot_start_is_an_error_and_leaves_no_cgroup() {
    if !landlock() {
        return;
    }
    let missing = "/no/such/failcore-program";
    let e = Command::new(missing)
        .run_blocking(&ExecPolicy::allow([missing]))
        .unwrap_err();
    assert!(
        matches!(&e, Error::Exec { rule, .. } if rule == "exec.spawn"),
        "{e}"
    );
    let ours = format!("failcore-{}-", std::process::id());
    let leftovers = std::fs::read_dir("/sys/fs/cgroup/pids")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with(&ours))
                .count()
        })
        .unwrap_or(0);
    // Other tests of this binary may hold a cgroup right now, but not one per finished command.
    assert!(leftovers <= 8, "{leftovers} cgroups of this process remain");
}

// ---- through a tool: gated, recorded, replayed ----

use failcore::ToolError;

static RAN: AtomicUsize = AtomicUsize::new(0);

fn workspace() -> PathBuf {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap())
        .path()
        .to_path_buf()
}

fn tool_policy() -> ExecPolicy {
    policy().root(workspace())
}

/// Runs Python in the workspace.
#[failcore::tool(policy = tool_policy(), effect = "exec")]
async fn exec_python(program: String, args: Vec<String>) -> Result<ExecOutput, ToolError> {
    RAN.fetch_add(1, Ordering::SeqCst);
    Ok(exec::run(&tool_policy(), &program, &args).await?)
}

/// A tool whose sandbox names a root that does not exist: refused at the gate.
#[failcore::tool(policy = ExecPolicy::allow([python()]).root("/no/such/failcore/dir"), effect = "exec")]
async fn exec_nowhere(program: String, args: Vec<String>) -> Result<ExecOutput, ToolError> {
    Ok(exec::run(&ExecPolicy::allow([program.clone()]), &program, &args).await?)
}

#[tokio::test]
async fn an_escape_attempt_is_recorded_with_its_sandbox_and_replayed() {
    if !landlock() {
        return;
    }
    let store = Arc::new(MemoryStore::new());
    let session = Session::builder().store(store.clone()).open().unwrap();
    // Outside the workspace, in its parent directory.
    let target = workspace()
        .parent()
        .unwrap()
        .join(format!("failcore-escape-{}", std::process::id()));
    let args = vec![
        "-c".to_string(),
        format!("open({:?}, 'w')", target.display().to_string()),
    ];
    let out = session
        .scope(exec_python(python(), args.clone()))
        .await
        .unwrap();
    assert_eq!(out.exit.code, Some(1));
    assert!(
        out.stderr.text.contains("Read-only file system"),
        "{out:#?}"
    );
    assert!(!target.exists());
    let blocked = session
        .scope(exec_nowhere(python(), vec!["-V".into()]))
        .await
        .unwrap_err();
    assert!(
        blocked.to_string().contains("exec.sandbox.path"),
        "{blocked}"
    );
    let run_id = session.run_id().to_owned();
    session.finish().await.unwrap();

    let ends: Vec<_> = RunReader::open(store.as_ref(), &run_id)
        .unwrap()
        .filter_map(|r| r.unwrap().record.body.end().cloned())
        .collect();
    assert_eq!(ends[0].status, Status::Ok);
    let recorded: ExecOutput =
        serde_json::from_value(ends[0].output.clone().expect("output")).unwrap();
    assert_eq!(recorded, out);
    assert_eq!(recorded.sandbox.network, "none");
    assert_eq!(ends[1].status, Status::Blocked);
    let starts: Vec<_> = RunReader::open(store.as_ref(), &run_id)
        .unwrap()
        .filter_map(|r| r.unwrap().record.body.start().map(|s| s.decision.clone()))
        .collect();
    assert_eq!(starts[1].outcome, DecisionOutcome::Deny);
    assert_eq!(starts[1].rule.as_deref(), Some("exec.sandbox.path"));

    // Resumed, the command does not run again: the recorded output, sandbox and all, is served.
    let before = RAN.load(Ordering::SeqCst);
    let resumed = Session::builder()
        .store(store)
        .resume(run_id)
        .open()
        .unwrap();
    let replayed = resumed.scope(exec_python(python(), args)).await.unwrap();
    assert_eq!(replayed, out);
    assert_eq!(RAN.load(Ordering::SeqCst), before);
    resumed.finish().await.unwrap();
}

#[tokio::test]
async fn the_policy_file_sets_the_sandbox() {
    if !landlock() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("ws")).unwrap();
    let file = dir.path().join("failcore.toml");
    std::fs::write(
        &file,
        format!(
            r#"
[policy.py]
preset = "exec"
allow = [{python:?}]
root = "ws"
network = [8443]
cpu_seconds = 5
address_space_mib = 2048
file_size_mib = 16
max_processes = 8
timeout_seconds = 2.5
env = ["PATH", "LANG"]
max_output_bytes = 4096
"#,
            python = python()
        ),
    )
    .unwrap();
    let session = Session::builder()
        .store(Arc::new(MemoryStore::new()))
        .policy_file(&file)
        .open()
        .unwrap();
    let out = session
        .scope(async {
            let py = exec::policy("py")?;
            exec::run(&py, &python(), &["-c".into(), "open('made', 'w')".into()]).await
        })
        .await
        .unwrap();
    assert!(out.success(), "{out:#?}");
    assert!(dir.path().join("ws/made").exists());
    let s = &out.sandbox;
    let ws = std::fs::canonicalize(dir.path().join("ws")).unwrap();
    assert_eq!(s.write, [ws.display().to_string(), "/dev/null".into()]);
    assert_eq!(s.network, "tcp:8443");
    assert_eq!(
        (s.cpu_seconds, s.address_space_bytes, s.file_size_bytes),
        (5, 2048 << 20, 16 << 20)
    );
    assert_eq!((s.processes, s.timeout_ms), (8, 2500));
    assert!(s.env.iter().all(|n| n == "PATH" || n == "LANG"), "{s:?}");
    let not_exec = session.scope(async { exec::policy("fs_safe") }).await;
    assert!(not_exec.is_err());
    session.finish().await.unwrap();

    for (bad, says) in [
        ("network = \"some\"", "`network` must be"),
        ("root = \"nowhere\"", "does not exist"),
        ("max_processes = 0", "at least 1"),
        ("timeout = 3", "unknown key `timeout`"),
    ] {
        std::fs::write(
            &file,
            format!("[policy.py]\npreset = \"exec\"\nallow = [\"git\"]\n{bad}\n"),
        )
        .unwrap();
        let e = Session::builder()
            .store(Arc::new(MemoryStore::new()))
            .policy_file(&file)
            .open()
            .err()
            .unwrap_or_else(|| panic!("{bad} was accepted"));
        assert!(e.to_string().contains(says), "{bad}: {e}");
    }
}

/// The examples for common tools in docs/POLICY.md, kept in step with it.
const TOOL_EXAMPLES: &str = r#"
# git in a checkout: no hooks or helpers escape the checkout; HTTPS to the forge only.
[policy.git]
preset = "exec"
allow = ["git"]
deny_args = ["--upload-pack", "--receive-pack", "-c", "--exec", "--config"]
root = "workspace/repo"
network = [443]
env = ["PATH", "HOME", "LANG"]      # HOME for ~/.gitconfig (readable, not writable)
timeout_seconds = 120

# python running an agent's script: no network, nothing readable but the interpreter and the workspace.
[policy.python]
preset = "exec"
allow = ["/usr/bin/python3"]
root = "workspace"
readable = ["/usr", "/lib", "/lib64", "/etc", "/dev", "/proc"]
network = "none"
cpu_seconds = 30
address_space_mib = 2048
max_processes = 16
timeout_seconds = 30

# a build tool: many processes and threads, a writable cache, registry downloads over HTTPS.
[policy.cargo]
preset = "exec"
allow = ["cargo"]
deny_args = ["--config", "-Z"]
root = "workspace/crate"
writable = ["cache/cargo-home"]
network = [443]
env = ["PATH", "CARGO_HOME", "RUSTUP_HOME", "HOME", "LANG"]
cpu_seconds = 1800
file_size_mib = 4096
max_processes = 512
timeout_seconds = 900
"#;

#[tokio::test]
async fn the_documented_tool_examples_load() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/POLICY.md")).unwrap();
    assert!(
        doc.contains(TOOL_EXAMPLES.trim()),
        "docs/POLICY.md and this example differ"
    );
    let dir = tempfile::tempdir().unwrap();
    for d in ["workspace/repo", "workspace/crate", "cache/cargo-home"] {
        std::fs::create_dir_all(dir.path().join(d)).unwrap();
    }
    let file = dir.path().join("failcore.toml");
    std::fs::write(&file, TOOL_EXAMPLES).unwrap();
    let session = Session::builder()
        .store(Arc::new(MemoryStore::new()))
        .policy_file(&file)
        .open()
        .unwrap();
    let git = session.scope(async { exec::policy("git") }).await.unwrap();
    assert_eq!(git.sandbox().network(), &Network::ConnectPorts(vec![443]));
    assert_eq!(git.sandbox().timeout(), Duration::from_secs(120));
}
