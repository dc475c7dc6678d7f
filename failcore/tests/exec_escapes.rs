//! Ways out of the `failcore::exec` sandbox that a hostile program tried, each judged from outside the
//! sandbox (the real filesystem, a listener counting connections, the process table), as root and as an
//! unprivileged user.
//!
//! When these tests run as root, each runs twice: as root, and again in a copy of this test binary
//! started as the user `nobody` (uid 65534), since the kernel treats the two differently (capabilities,
//! device nodes, owners, user namespaces). Run as another user they run once, as that user.
//!
//! These tests need Landlock. Where the kernel lacks it they say so and skip, unless
//! `FAILCORE_REQUIRE_LANDLOCK=1` (set by CI), which turns the skip into a failure.
#![cfg(target_os = "linux")]

use failcore::exec::{self, Command, ExecOutput};
use failcore::policy::{ExecPolicy, Network};
use failcore::Error;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Set in the copy of this binary that runs a test as an unprivileged user.
const AS_USER: &str = "FAILCORE_ESCAPE_AS_USER";
/// Set in the copy of this binary that hosts a command and is killed mid-call.
const HOST: &str = "FAILCORE_ESCAPE_HOST";
const NOBODY: u32 = 65534;

fn landlock() -> bool {
    let msg = if exec::landlock_abi() == 0 {
        "this kernel has no Landlock: the sandbox escape tests cannot run here"
    } else if find_python().is_none() {
        "no system python3 in /usr/bin or /usr/local/bin: the hostile programs of these tests are Python"
    } else {
        return true;
    };
    if std::env::var("FAILCORE_REQUIRE_LANDLOCK").as_deref() == Ok("1") {
        panic!("{msg}, and FAILCORE_REQUIRE_LANDLOCK=1 requires them");
    }
    eprintln!("SKIPPED: {msg} (set FAILCORE_REQUIRE_LANDLOCK=1 to make this a failure)");
    false
}

fn root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The real Python interpreter, which every user can run.
fn find_python() -> Option<String> {
    ["/usr/bin/python3", "/usr/local/bin/python3"]
        .into_iter()
        .find(|candidate| Path::new(candidate).exists())
        .map(String::from)
}

fn python() -> String {
    find_python().expect("checked by landlock()")
}

/// This test binary, copied where `nobody` can run it (the build directory may not be reachable).
fn binary_for_nobody() -> &'static Path {
    static COPY: OnceLock<PathBuf> = OnceLock::new();
    COPY.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("failcore-escapes-")
            .tempdir()
            .unwrap()
            .keep();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let copy = dir.join("escapes");
        let exe = std::env::current_exe().unwrap();
        if std::fs::hard_link(&exe, &copy).is_err() {
            std::fs::copy(&exe, &copy).unwrap();
        }
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
        copy
    })
}

/// Runs `body` as this user and, when this user is root, again as `nobody` in a copy of this binary
/// (which runs only the test `name`).
fn as_root_and_user(name: &str, body: fn()) {
    if !landlock() {
        return;
    }
    body();
    if !root() || std::env::var_os(AS_USER).is_some() {
        return;
    }
    let out = std::process::Command::new(binary_for_nobody())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(AS_USER, "1")
        .env("FAKE_SECRET", secret())
        .env("TMPDIR", "/tmp")
        .current_dir("/")
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("1 passed"),
        "as nobody:\n{text}"
    );
}

fn secret() -> String {
    format!("failcore-planted-secret-{}", std::process::id())
}

fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("ws")).unwrap();
    std::fs::create_dir(dir.path().join("outside")).unwrap();
    dir
}

fn run(policy: &ExecPolicy, script: &str, args: &[String]) -> ExecOutput {
    Command::new(python())
        .arg("-c")
        .arg(script)
        .args(args.iter().cloned())
        .run_blocking(policy)
        .unwrap_or_else(|e| panic!("the command did not run: {e}"))
}

fn policy(ws: &Path) -> ExecPolicy {
    ExecPolicy::allow([python()]).root(ws)
}

/// Escape 1: The environment of the process that runs the command (and of its watchdog) is out of reach, and the
/// command holds no capability.
#[test]
fn the_parents_environment_and_capabilities_are_out_of_reach() {
    as_root_and_user(
        "the_parents_environment_and_capabilities_are_out_of_reach",
        || {
            // The secret must be in this process's environment from its start, which /proc shows: the copy
            // run as nobody gets it that way; as root, a copy of this binary is the process under attack.
            if std::env::var_os("FAKE_SECRET").is_none() {
                let out = std::process::Command::new(std::env::current_exe().unwrap())
                    .args([
                        "the_parents_environment_and_capabilities_are_out_of_reach",
                        "--exact",
                        "--nocapture",
                    ])
                    .env("FAKE_SECRET", secret())
                    .env(AS_USER, "as-this-user")
                    .output()
                    .unwrap();
                let text = String::from_utf8_lossy(&out.stdout).into_owned()
                    + &String::from_utf8_lossy(&out.stderr);
                assert!(out.status.success() && text.contains("1 passed"), "{text}");
                return;
            }
            let secret = std::env::var("FAKE_SECRET").unwrap();
            let dir = workspace();
            let ws = dir.path().join("ws");
            let script = r#"
import os, sys
for pid in (os.getppid(), int(sys.argv[1])):
    try:
        print("environ", open("/proc/%d/environ" % pid, "rb").read().decode("latin-1"))
    except OSError as e:
        print("environ", e.errno)
for line in open("/proc/self/status"):
    if line.startswith(("CapEff", "CapPrm", "CapBnd", "CapAmb", "CapInh", "NoNewPrivs")):
        print(line.strip())
"#;
            let out = run(&policy(&ws), script, &[std::process::id().to_string()]);
            assert!(out.success(), "{out:#?}");
            assert!(
                !out.stdout.text.contains(&secret),
                "the command read the parent's environment: {out:#?}"
            );
            assert_eq!(out.stdout.text.matches("environ 13").count(), 2, "{out:#?}");
            for set in ["CapEff", "CapPrm", "CapAmb", "CapInh"] {
                assert!(
                    out.stdout
                        .text
                        .contains(&format!("{set}:\t0000000000000000")),
                    "{set} is not empty: {out:#?}"
                );
            }
            assert!(out.stdout.text.contains("NoNewPrivs:\t1"), "{out:#?}");
            if root() {
                assert!(
                    out.stdout.text.contains("CapBnd:\t0000000000000000"),
                    "{out:#?}"
                );
            }
        },
    );
}

const UNIX_CONNECT: &str = r#"
import socket, sys
try:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # "@name" is the abstract socket "name".
    s.connect(sys.argv[1].replace("@", "\0", 1) if sys.argv[1].startswith("@") else sys.argv[1])
    print("connected")
except OSError as e:
    print(e.errno)
"#;

/// Escape 2: A Unix socket at a path (a Docker daemon, an ssh agent, a session bus) is unreachable unless the
/// policy names it, with no network and with a list of ports.
#[test]
fn unix_sockets_at_a_path_are_refused_unless_named() {
    as_root_and_user("unix_sockets_at_a_path_are_refused_unless_named", || {
        let dir = workspace();
        let ws = dir.path().join("ws");
        let path = dir.path().join("outside/agent.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let accepted = || {
            let mut n = 0;
            while listener.accept().is_ok() {
                n += 1;
            }
            n
        };
        let arg = [path.display().to_string()];
        for network in [Network::None, Network::ConnectPorts(vec![443])] {
            let out = run(&policy(&ws).network(network.clone()), UNIX_CONNECT, &arg);
            assert_eq!(out.stdout.text, "13\n", "{network:?}: {out:#?}");
            assert_eq!(accepted(), 0, "{network:?}");
        }
        // The control: named, the same socket is reached, so the refusal above was the sandbox's.
        let named = policy(&ws).unix_sockets([&path]);
        let out = run(&named, UNIX_CONNECT, &arg);
        assert_eq!(out.stdout.text, "connected\n", "{out:#?}");
        assert_eq!(accepted(), 1);
        // Abstract sockets are refused too.
        let out = run(
            &policy(&ws),
            UNIX_CONNECT,
            &["@failcore-abstract".to_owned()],
        );
        assert_eq!(out.stdout.text, "13\n", "{out:#?}");
    });
}

/// Escape 3: No device node can be made in the workspace (a node for the terminal or the kernel log would be a
/// way out), and a terminal the command can open cannot be fed input.
#[test]
fn device_nodes_and_terminal_input_are_refused() {
    as_root_and_user("device_nodes_and_terminal_input_are_refused", || {
        let dir = workspace();
        let ws = dir.path().join("ws");
        let script = r#"
import os, stat
for name, kind, dev in (("kmsg", stat.S_IFCHR, os.makedev(1, 11)),
                        ("tty", stat.S_IFCHR, os.makedev(5, 0)),
                        ("disk", stat.S_IFBLK, os.makedev(8, 0))):
    try:
        os.mknod(name, kind | 0o666, dev)
        print(name, "made")
    except OSError as e:
        print(name, e.errno)
os.mkfifo("fifo")
print("fifo made")
"#;
        let out = run(&policy(&ws), script, &[]);
        assert!(out.success(), "{out:#?}");
        for name in ["kmsg", "tty", "disk"] {
            assert!(
                !out.stdout.text.contains(&format!("{name} made")),
                "{out:#?}"
            );
            assert!(!ws.join(name).exists(), "{name} was made: {out:#?}");
        }
        // What is not a device is still allowed.
        assert!(ws.join("fifo").exists(), "{out:#?}");

        // A terminal the command is given (writable) cannot be pushed input with TIOCSTI.
        let (mut master, mut slave) = (0, 0);
        // SAFETY: valid pointers to locals; no name, termios or window size asked for.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        let tty = std::fs::read_link(format!("/proc/self/fd/{slave}")).unwrap();
        let script = r#"
import fcntl, os, sys, termios
fd = os.open(sys.argv[1], os.O_RDWR | os.O_NOCTTY)
try:
    fcntl.ioctl(fd, termios.TIOCSTI, b"X")
    print("pushed")
except OSError as e:
    print(e.errno)
"#;
        let out = run(
            &policy(&ws).writable([&tty]),
            script,
            &[tty.display().to_string()],
        );
        assert!(out.success(), "{out:#?}");
        assert_ne!(out.stdout.text, "pushed\n", "{out:#?}");
        // Judged at the terminal: nothing waits in its input queue.
        let mut queued: libc::c_int = 0;
        // SAFETY: a valid pointer to a local.
        assert_eq!(
            unsafe { libc::ioctl(slave, libc::FIONREAD, &mut queued) },
            0
        );
        assert_eq!(queued, 0, "input was pushed into the terminal");
        // SAFETY: closes the descriptors opened above.
        unsafe {
            libc::close(master);
            libc::close(slave);
        }
    });
}

/// Escape 4: Modes, times, extended attributes and owners of files outside the writable roots stay as they were.
#[test]
fn metadata_outside_the_writable_roots_is_unchanged() {
    as_root_and_user("metadata_outside_the_writable_roots_is_unchanged", || {
        let dir = workspace();
        let ws = dir.path().join("ws");
        let target = dir.path().join("outside/keep.txt");
        std::fs::write(&target, "precious").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).unwrap();
        let before = std::fs::metadata(&target).unwrap();
        let script = r#"
import os, sys
path = sys.argv[1]
def attempt(name, f):
    try:
        f(); print(name, "changed")
    except OSError as e:
        print(name, e.errno)
attempt("chmod", lambda: os.chmod(path, 0o777))
attempt("utime", lambda: os.utime(path, (1, 1)))
attempt("xattr", lambda: os.setxattr(path, "user.failcore", b"x"))
attempt("chown", lambda: os.chown(path, 1234, 1234))
fd = os.open(path, os.O_RDONLY)
attempt("fchmod", lambda: os.fchmod(fd, 0o777))
attempt("futime", lambda: os.utime(fd, (2, 2)))
attempt("fxattr", lambda: os.setxattr(fd, "user.failcore", b"y"))
attempt("inside", lambda: os.chmod(open("mine", "w").name, 0o700))
"#;
        let out = run(&policy(&ws), script, &[target.display().to_string()]);
        assert!(out.success(), "{out:#?}");
        assert!(
            out.stdout.text.ends_with("inside changed\n"),
            "a file of the workspace keeps its metadata calls: {out:#?}"
        );
        let after = std::fs::metadata(&target).unwrap();
        assert_eq!(after.mode(), before.mode(), "{out:#?}");
        assert_eq!(after.mtime(), before.mtime(), "{out:#?}");
        assert_eq!(after.uid(), before.uid(), "{out:#?}");
        assert_eq!(after.gid(), before.gid(), "{out:#?}");
        let xattr = std::process::Command::new(python())
            .args([
                "-c",
                "import os,sys; print(os.listxattr(sys.argv[1]))",
                &target.display().to_string(),
            ])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&xattr.stdout), "[]\n", "{out:#?}");
    });
}

/// Whether `pid` is gone (or a zombie: it runs no more).
fn dead(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

/// The host of the next test: runs a command that starts a grandchild, then is killed with SIGKILL by the
/// test. Does nothing unless started by it.
#[test]
fn host_a_command_to_be_killed() {
    let Some(pids) = std::env::var_os(HOST) else {
        return;
    };
    let ws = std::env::var_os("FAILCORE_ESCAPE_WS").unwrap();
    let script = r#"
import os, sys, time
child = os.fork()
if child == 0:
    if os.fork() == 0:
        open(sys.argv[1], "w").write(str(os.getpid()))
        time.sleep(120)
        os._exit(0)
    time.sleep(120)
    os._exit(0)
time.sleep(120)
"#;
    let _ = run(
        &policy(Path::new(&ws)).timeout(Duration::from_secs(120)),
        script,
        &[PathBuf::from(pids).display().to_string()],
    );
}

/// Escape 5: Nothing the command started outlives a FailCore process killed mid-call.
#[test]
fn descendants_die_with_a_killed_failcore_process() {
    as_root_and_user("descendants_die_with_a_killed_failcore_process", || {
        let dir = workspace();
        let ws = dir.path().join("ws");
        // Written by the grandchild, in the workspace it may write.
        let pid_file = ws.join("grandchild.pid");
        let mut host = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["host_a_command_to_be_killed", "--exact", "--nocapture"])
            .env(HOST, &pid_file)
            .env("FAILCORE_ESCAPE_WS", &ws)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let started = Instant::now();
        let grandchild: i32 = loop {
            if let Some(pid) = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                break pid;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the command never started"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(!dead(grandchild));
        host.kill().unwrap();
        host.wait().unwrap();
        let killed = Instant::now();
        while !dead(grandchild) {
            assert!(
                killed.elapsed() < Duration::from_secs(30),
                "the grandchild {grandchild} outlived the FailCore process"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    });
}

/// Escape 7: A shell given a command string in any spelling its option parser accepts is refused before anything
/// runs.
#[test]
fn shell_command_strings_are_refused_in_every_spelling() {
    as_root_and_user(
        "shell_command_strings_are_refused_in_every_spelling",
        || {
            let dir = workspace();
            let ws = dir.path().join("ws");
            let sh = ExecPolicy::allow(["sh"]).root(&ws);
            for flags in [
                &["-c"][..],
                &["-ec"],
                &["-xc"],
                &["-lc"],
                &["-e", "-c"],
                &["-o", "errexit", "-c"],
            ] {
                let mut args: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
                args.push("touch escaped".into());
                let refused = Command::new("sh").args(args.clone()).run_blocking(&sh);
                match refused {
                    Err(Error::Exec { rule, .. }) => assert_eq!(rule, "exec.shell", "{args:?}"),
                    other => panic!("{args:?} was not refused: {other:?}"),
                }
                assert!(!ws.join("escaped").exists(), "{args:?}");
            }
            // A script file is not a command string.
            std::fs::write(ws.join("script.sh"), "echo ran\n").unwrap();
            let out = Command::new("sh")
                .args(["-e", "script.sh"])
                .run_blocking(&sh)
                .unwrap();
            assert_eq!(out.stdout.text, "ran\n", "{out:#?}");
        },
    );
}
