//! The command sandbox behind the public [`crate::exec`] module (which documents it): the command, its
//! recorded output, the kernel check of a policy's sandbox (`assess`, also called at the exec preset's
//! gate) and, on Linux, the sandbox itself (`linux.rs`). `exec::policy`, which reads the current session,
//! lives in `session.rs`.

#[cfg(target_os = "linux")]
mod linux;

use crate::policy::{ExecPolicy, Network, SandboxSpec};
use crate::Error;
use serde::{Deserialize, Serialize};

/// What a sandboxed command did: the tool's output, recorded on the step and served on replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecOutput {
    pub program: String,
    pub args: Vec<String>,
    pub exit: Exit,
    pub stdout: Captured,
    pub stderr: Captured,
    /// Wall-clock time from spawn to exit, in milliseconds.
    pub elapsed_ms: u64,
    /// The walls the command ran inside.
    pub sandbox: SandboxApplied,
}

impl ExecOutput {
    /// Whether the command exited with status 0 before its timeout.
    pub fn success(&self) -> bool {
        self.exit.code == Some(0) && !self.exit.timed_out
    }
}

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    /// The exit status, if it exited.
    pub code: Option<i32>,
    /// The signal that killed it, if one did (9 for a timeout or the hard CPU limit, 24 for the soft CPU
    /// limit, 25 for the file size limit).
    pub signal: Option<i32>,
    /// It was killed, with its process group, at the wall-clock timeout.
    pub timed_out: bool,
}

/// One output stream, bounded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Captured {
    /// The first bytes of the stream (at most the policy's `max_output`), decoded as UTF-8 with invalid
    /// sequences replaced.
    pub text: String,
    /// How many bytes the command wrote to the stream in all.
    pub bytes: u64,
    /// The stream was cut: `text` holds only its beginning.
    pub truncated: bool,
}

/// The sandbox a command ran inside, as applied on this kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxApplied {
    /// The Landlock ABI of the kernel (0: none).
    pub landlock_abi: u32,
    /// Where the command could read and execute (`["/"]`: anywhere).
    pub read: Vec<String>,
    /// Where the command could write (the writable roots and `/dev/null`; `["/"]` when no filesystem
    /// rules were applied).
    pub write: Vec<String>,
    /// `none`, `all`, or `tcp:<port>,<port>` (connections to those ports only).
    pub network: String,
    /// The mechanisms that enforced the network setting (`landlock`, `seccomp`).
    pub network_enforced_by: Vec<String>,
    /// CPU seconds per process (`RLIMIT_CPU`).
    pub cpu_seconds: u64,
    /// Bytes of address space per process (`RLIMIT_AS`).
    pub address_space_bytes: u64,
    /// Largest file the command could write (`RLIMIT_FSIZE`).
    pub file_size_bytes: u64,
    /// Processes and threads at once.
    pub processes: u64,
    /// How the process limit was enforced: `cgroup` (a pids cgroup of its own) or `rlimit` (`RLIMIT_NPROC`
    /// above the user's count when the command started); empty when it was not.
    pub processes_enforced_by: String,
    /// The wall-clock timeout, in milliseconds.
    pub timeout_ms: u64,
    /// The environment variables the command received (names only).
    pub env: Vec<String>,
    /// What the policy asked for and this kernel could not apply; empty unless the policy accepts a weaker
    /// sandbox.
    pub missing: Vec<String>,
}

/// A command to run in the sandbox of an exec policy.
#[derive(Debug, Clone)]
pub struct Command {
    program: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    stdin: Option<Vec<u8>>,
}

impl Command {
    /// A command running `program` (a bare name looked up on the sandbox's `PATH`, or a path).
    pub fn new(program: impl Into<String>) -> Command {
        Command {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            stdin: None,
        }
    }

    /// Adds one argument.
    pub fn arg(mut self, arg: impl Into<String>) -> Command {
        self.args.push(arg.into());
        self
    }

    /// Adds arguments.
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Command {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable to a value the tool chooses (besides those the policy passes
    /// through). Its name, not its value, is recorded.
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Command {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Bytes written to the command's standard input (by default it reads `/dev/null`).
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Command {
        self.stdin = Some(bytes.into());
        self
    }

    /// Checks the command against `policy` and runs it in the policy's sandbox, on a blocking thread of
    /// the tokio runtime. A non-zero exit or a timeout is an `Ok` output (look at [`ExecOutput::exit`]);
    /// `Err` means nothing ran: the policy refused the command, the kernel cannot build its sandbox
    /// ([`Error::Exec`] with the rule), or the program could not be started.
    pub async fn run(self, policy: &ExecPolicy) -> Result<ExecOutput, Error> {
        let policy = policy.clone();
        if tokio::runtime::Handle::try_current().is_err() {
            return self.run_blocking(&policy);
        }
        let program = self.program.clone();
        tokio::task::spawn_blocking(move || self.run_blocking(&policy))
            .await
            .map_err(|e| Error::Exec {
                program,
                rule: "exec.spawn".into(),
                reason: format!("the thread running the command failed: {e}"),
            })?
    }

    /// Like [`Command::run`], on the calling thread.
    pub fn run_blocking(self, policy: &ExecPolicy) -> Result<ExecOutput, Error> {
        let refuse = |rule: String, reason: String| Error::Exec {
            program: self.program.clone(),
            rule,
            reason,
        };
        // The same check as at the gate, on the values the command will really run with.
        let argv: Vec<&str> = self.args.iter().map(String::as_str).collect();
        if let Err(verdict) = policy.check_command(&self.program, &argv) {
            return Err(match verdict {
                crate::Verdict::Deny { rule, reason } => refuse(rule, reason),
                other => refuse(
                    "exec.not_allowed".into(),
                    format!("the policy did not allow the command: {other:?}"),
                ),
            });
        }
        let plan = assess(policy.sandbox()).map_err(|r| refuse(r.rule, r.reason))?;
        spawn(self, policy.sandbox(), plan)
    }
}

/// Runs `program` with `args` in the sandbox of `policy` (see [`Command::run`]).
pub async fn run(policy: &ExecPolicy, program: &str, args: &[String]) -> Result<ExecOutput, Error> {
    Command::new(program)
        .args(args.iter().cloned())
        .run(policy)
        .await
}

/// The Landlock ABI of this kernel as the sandbox uses it (0: no Landlock, or not Linux).
pub fn landlock_abi() -> u32 {
    #[cfg(target_os = "linux")]
    {
        linux::kernel().landlock_abi
    }
    #[cfg(not(target_os = "linux"))]
    {
        0
    }
}

/// Why a sandbox cannot be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refused {
    pub rule: String,
    pub reason: String,
}

/// What this kernel offers a sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Kernel {
    /// The Landlock ABI (0: none).
    pub landlock_abi: u32,
    /// seccomp filters can be installed.
    pub seccomp: bool,
    /// A pids cgroup can be created beneath this directory.
    pub pids_cgroup: Option<std::path::PathBuf>,
    /// The kernel does not apply `RLIMIT_NPROC` to this user (root, or `CAP_SYS_RESOURCE`/`CAP_SYS_ADMIN`).
    pub privileged: bool,
    /// A command can be given a mount namespace of its own (directly, or inside a user namespace for an
    /// unprivileged user) in which every mount but the writable roots is read-only.
    pub mount_namespace: bool,
}

/// How the process limit is enforced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ProcessLimit {
    Cgroup(std::path::PathBuf),
    Rlimit,
    None,
}

/// The mechanisms a command will run under, decided before anything is spawned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    pub landlock_abi: u32,
    /// Landlock filesystem rules.
    pub filesystem: bool,
    /// Landlock TCP rules.
    pub landlock_net: bool,
    /// Landlock scopes (abstract Unix sockets, signals: ABI 6).
    pub scopes: bool,
    /// The seccomp filter refusing sockets the network setting does not allow (and io_uring, which can
    /// open them).
    pub seccomp_net: bool,
    /// The seccomp filter refusing `setsid`/`setpgid` (so that the group kill reaches every descendant),
    /// device nodes and the terminal ioctls that push input into another program.
    pub seccomp_group: bool,
    /// A mount namespace in which everything but the writable roots is mounted read-only: the walls for
    /// what Landlock has no right for (modes, owners, times and extended attributes of files).
    pub mount_namespace: bool,
    pub processes: ProcessLimit,
    pub missing: Vec<String>,
}

/// Decides how `spec` can be enforced on this kernel, or refuses.
pub(crate) fn assess(spec: &SandboxSpec) -> Result<Plan, Refused> {
    #[cfg(target_os = "linux")]
    {
        assess_with(spec, linux::kernel())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = spec;
        Err(Refused {
            rule: "exec.sandbox.unsupported".into(),
            reason: "sandboxed commands need Linux (Landlock, seccomp); this system has neither"
                .into(),
        })
    }
}

/// [`assess`] against a given kernel.
pub(crate) fn assess_with(spec: &SandboxSpec, kernel: &Kernel) -> Result<Plan, Refused> {
    for path in spec
        .writable_roots()
        .chain(spec.readable().unwrap_or_default())
    {
        if !path.exists() {
            return Err(Refused {
                rule: "exec.sandbox.path".into(),
                reason: format!(
                    "{} is named by the sandbox but does not exist",
                    path.display()
                ),
            });
        }
    }
    // Each gap: (rule, what is missing).
    let mut gaps: Vec<(&str, String)> = Vec::new();
    let abi = kernel.landlock_abi;
    // Landlock controls truncation from ABI 3 on; before it, a file outside the writable roots could
    // still be emptied, so the filesystem walls need ABI 3.
    let filesystem = abi >= 1;
    if abi == 0 {
        gaps.push((
            "exec.sandbox.no_landlock",
            "Landlock (filesystem rules): the command could write anywhere the user can".into(),
        ));
    } else if abi < 3 {
        gaps.push((
            "exec.sandbox.landlock_abi",
            format!("Landlock ABI 3 (truncation control; this kernel has ABI {abi}): files outside the writable roots could be truncated"),
        ));
    }
    if filesystem && abi < 5 {
        gaps.push((
            "exec.sandbox.landlock_abi",
            format!("Landlock ABI 5 (ioctl on devices; this kernel has ABI {abi}): a device the command can open could be driven with any ioctl"),
        ));
    }
    if filesystem && abi < 6 {
        gaps.push((
            "exec.sandbox.landlock_abi",
            format!("Landlock ABI 6 (scopes; this kernel has ABI {abi}): the command could signal other processes of the user, this one included"),
        ));
    }
    let mount_namespace = filesystem && kernel.mount_namespace;
    if filesystem && !kernel.mount_namespace {
        gaps.push((
            "exec.sandbox.no_mount_namespace",
            "a mount namespace (read-only mounts outside the writable roots): modes, owners, times and extended attributes of files outside them could be changed".into(),
        ));
    }
    let mut landlock_net = false;
    let seccomp_net = *spec.network() != Network::All && kernel.seccomp;
    match spec.network() {
        Network::All => {}
        Network::None => {
            landlock_net = abi >= 4;
            if !kernel.seccomp {
                gaps.push((
                    "exec.sandbox.no_seccomp",
                    if landlock_net {
                        "seccomp (refusing sockets): UDP, raw and Unix sockets would stay open"
                            .into()
                    } else {
                        "seccomp or Landlock ABI 4 (network isolation): the network would stay open"
                            .into()
                    },
                ));
            }
        }
        Network::ConnectPorts(_) => {
            landlock_net = abi >= 4;
            if !landlock_net {
                gaps.push((
                    "exec.sandbox.no_tcp_rules",
                    format!("Landlock ABI 4 (TCP port rules; this kernel has ABI {abi}): the network would be unrestricted"),
                ));
            }
            if !kernel.seccomp {
                gaps.push((
                    "exec.sandbox.no_seccomp",
                    "seccomp (refusing Unix sockets): sockets at a path (docker.sock, an ssh agent) would be reachable".into(),
                ));
            }
        }
    }
    let seccomp_group = kernel.seccomp;
    if !kernel.seccomp && !gaps.iter().any(|(r, _)| *r == "exec.sandbox.no_seccomp") {
        gaps.push((
            "exec.sandbox.no_seccomp",
            "seccomp (refusing setsid/setpgid): a process could leave the group that is killed at the timeout".into(),
        ));
    }
    let processes = match (&kernel.pids_cgroup, kernel.privileged) {
        (Some(dir), _) => ProcessLimit::Cgroup(dir.clone()),
        (None, false) => ProcessLimit::Rlimit,
        (None, true) => {
            gaps.push((
                "exec.sandbox.no_process_limit",
                "a process limit: no pids cgroup can be created here, and the kernel does not apply RLIMIT_NPROC to a privileged user".into(),
            ));
            ProcessLimit::None
        }
    };
    if let Some((rule, _)) = gaps.first() {
        if !spec.accepts_weaker() {
            let what: Vec<&str> = gaps.iter().map(|(_, w)| w.as_str()).collect();
            return Err(Refused {
                rule: (*rule).to_owned(),
                reason: format!(
                    "this kernel cannot build the sandbox the policy asks for; missing: {}. Set \
                     `accept_weaker` on the policy to run with less",
                    what.join("; ")
                ),
            });
        }
    }
    Ok(Plan {
        landlock_abi: abi,
        filesystem,
        landlock_net,
        scopes: abi >= 6,
        seccomp_net,
        seccomp_group,
        mount_namespace,
        processes,
        missing: gaps.into_iter().map(|(_, w)| w).collect(),
    })
}

#[cfg(target_os = "linux")]
fn spawn(command: Command, spec: &SandboxSpec, plan: Plan) -> Result<ExecOutput, Error> {
    linux::spawn(command, spec, plan)
}

#[cfg(not(target_os = "linux"))]
fn spawn(command: Command, _: &SandboxSpec, _: Plan) -> Result<ExecOutput, Error> {
    Err(Error::Exec {
        program: command.program,
        rule: "exec.sandbox.unsupported".into(),
        reason: "sandboxed commands need Linux".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::ExecPolicy;

    fn kernel(abi: u32) -> Kernel {
        Kernel {
            landlock_abi: abi,
            seccomp: true,
            pids_cgroup: Some("/sys/fs/cgroup/pids".into()),
            privileged: true,
            mount_namespace: true,
        }
    }

    #[test]
    fn a_kernel_without_landlock_is_refused_with_the_rule_naming_it() {
        let policy = ExecPolicy::allow(["true"]);
        let refused = assess_with(policy.sandbox(), &kernel(0)).expect_err("refused");
        assert_eq!(refused.rule, "exec.sandbox.no_landlock");
        assert!(refused.reason.contains("Landlock"), "{}", refused.reason);
    }

    #[test]
    fn an_old_landlock_abi_is_refused_unless_weaker_is_accepted_and_then_recorded() {
        let policy = ExecPolicy::allow(["true"]);
        let refused = assess_with(policy.sandbox(), &kernel(2)).expect_err("refused");
        assert_eq!(refused.rule, "exec.sandbox.landlock_abi");

        let ports = ExecPolicy::allow(["true"]).network(Network::ConnectPorts(vec![443]));
        let refused = assess_with(ports.sandbox(), &kernel(3)).expect_err("refused");
        // The first gap names the rule (ABI 5); the reason lists every one.
        assert_eq!(refused.rule, "exec.sandbox.landlock_abi");
        assert!(
            refused.reason.contains("TCP port rules"),
            "{}",
            refused.reason
        );

        let weaker = ports.accept_weaker(true);
        let plan = assess_with(weaker.sandbox(), &kernel(3)).expect("accepted");
        assert!(!plan.landlock_net);
        assert_eq!(plan.missing.len(), 3, "{:?}", plan.missing);
        assert!(plan.missing[2].contains("TCP port rules"));
    }

    #[test]
    fn no_seccomp_and_no_process_limit_are_named() {
        let mut k = kernel(7);
        k.seccomp = false;
        k.pids_cgroup = None;
        let policy = ExecPolicy::allow(["true"]);
        let refused = assess_with(policy.sandbox(), &k).expect_err("refused");
        assert_eq!(refused.rule, "exec.sandbox.no_seccomp");
        assert!(
            refused.reason.contains("process limit"),
            "{}",
            refused.reason
        );
        // An unprivileged user falls back to RLIMIT_NPROC.
        k.seccomp = true;
        k.privileged = false;
        let plan = assess_with(policy.sandbox(), &k).expect("plan");
        assert_eq!(plan.processes, ProcessLimit::Rlimit);
        assert!(plan.missing.is_empty());
    }

    /// Every kernel from no Landlock to ABI 7, with and without seccomp, a pids cgroup and mount
    /// namespaces: each protection the kernel lacks is named, refused by default, and recorded when a
    /// weaker sandbox is accepted; nothing the kernel has is reported missing.
    #[test]
    fn the_kernel_feature_matrix_names_every_missing_protection() {
        for abi in 0..=7u32 {
            for seccomp in [true, false] {
                for cgroup in [true, false] {
                    for mount_namespace in [true, false] {
                        let k = Kernel {
                            landlock_abi: abi,
                            seccomp,
                            pids_cgroup: cgroup.then(|| "/sys/fs/cgroup/pids".into()),
                            privileged: true,
                            mount_namespace,
                        };
                        let mut expected: Vec<&str> = Vec::new();
                        if abi == 0 {
                            expected.push("Landlock (filesystem rules)");
                        } else {
                            if abi < 3 {
                                expected.push("Landlock ABI 3");
                            }
                            if abi < 5 {
                                expected.push("Landlock ABI 5");
                            }
                            if abi < 6 {
                                expected.push("Landlock ABI 6");
                            }
                            if !mount_namespace {
                                expected.push("a mount namespace");
                            }
                        }
                        if !seccomp {
                            expected.push("seccomp");
                        }
                        if !cgroup {
                            expected.push("a process limit");
                        }
                        let case = format!(
                            "abi {abi}, seccomp {seccomp}, cgroup {cgroup}, mount namespace {mount_namespace}"
                        );
                        let strict = ExecPolicy::allow(["true"]);
                        match assess_with(strict.sandbox(), &k) {
                            Ok(plan) => assert!(expected.is_empty(), "{case}: {plan:?}"),
                            Err(refused) => {
                                assert!(!expected.is_empty(), "{case}: {refused:?}");
                                for what in &expected {
                                    assert!(
                                        refused.reason.contains(what),
                                        "{case}: {what} not in {}",
                                        refused.reason
                                    );
                                }
                            }
                        }
                        let weaker = ExecPolicy::allow(["true"]).accept_weaker(true);
                        let plan = assess_with(weaker.sandbox(), &k).expect("accepted");
                        assert_eq!(
                            plan.missing.len(),
                            expected.len(),
                            "{case}: {:?}",
                            plan.missing
                        );
                        for (missing, what) in plan.missing.iter().zip(&expected) {
                            assert!(missing.starts_with(what), "{case}: {missing} is not {what}");
                        }
                        assert_eq!(plan.scopes, abi >= 6, "{case}");
                        assert_eq!(plan.mount_namespace, abi >= 1 && mount_namespace, "{case}");
                        assert_eq!(plan.seccomp_net && plan.seccomp_group, seccomp, "{case}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_missing_root_is_refused() {
        let policy = ExecPolicy::allow(["true"]).root("/no/such/failcore/root");
        let refused = assess_with(policy.sandbox(), &kernel(7)).expect_err("refused");
        assert_eq!(refused.rule, "exec.sandbox.path");
    }
}
