//! The `exec` preset: an allow-list of programs, run with an argument vector, never a shell string, inside
//! the kernel sandbox that [`crate::exec`] builds from the policy's [`SandboxSpec`].

use super::{CallView, Policy, PolicyError, Verdict};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

const SHELL_CHARS: &[char] = &[
    ';', '|', '&', '$', '`', '<', '>', '(', ')', '{', '}', '[', ']', '*', '?', '!', '~', '\'', '"',
    '\\', '#', '=', '%', '^', ',',
];

const SHELLS: &[&str] = &[
    "sh",
    "bash",
    "zsh",
    "dash",
    "ksh",
    "csh",
    "tcsh",
    "fish",
    "ash",
    "busybox",
    "cmd",
    "cmd.exe",
    "powershell",
    "powershell.exe",
    "pwsh",
    "env",
    "xargs",
    "eval",
];

/// Whether `arg`, given to the shell or launcher `base`, makes it run a command string, read as that
/// program reads its options: a POSIX shell takes `c` anywhere in a cluster of short options (`-c`, `-ec`,
/// `-xc`, `-lc`); fish also `-C` and `--command`/`--init-command`; `env` splits a string into a command
/// with `-S`; PowerShell takes any prefix of `-Command`, `-EncodedCommand` or `-CommandWithArgs` (and
/// `/` for `-`); cmd takes `/c` or `/k`, also joined to other switches or to the command.
fn runs_a_command_string(base: &str, arg: &str) -> bool {
    let base = base.to_ascii_lowercase();
    let base = base.strip_suffix(".exe").unwrap_or(&base);
    let lower = arg.to_ascii_lowercase();
    match base {
        "cmd" => lower
            .split('/')
            .skip(1)
            .any(|switch| switch.starts_with('c') || switch.starts_with('k')),
        "powershell" | "pwsh" => {
            let Some(name) = lower.strip_prefix('-').or_else(|| lower.strip_prefix('/')) else {
                return false;
            };
            let name = name.trim_start_matches('-');
            let name = name.split(':').next().unwrap_or(name);
            !name.is_empty()
                && (["command", "encodedcommand", "commandwithargs"]
                    .iter()
                    .any(|full| full.starts_with(name))
                    || matches!(name, "ec" | "cwa"))
        }
        "env" => {
            arg == "-S"
                || lower.starts_with("--split-string")
                || arg
                    .strip_prefix('-')
                    .is_some_and(|c| !c.starts_with('-') && c.contains('S'))
                || posix_command_flag(arg)
        }
        "fish" => {
            posix_command_flag(arg)
                || arg
                    .strip_prefix('-')
                    .is_some_and(|c| !c.starts_with('-') && c.contains('C'))
                || ["--command", "--init-command"]
                    .iter()
                    .any(|long| lower == *long || lower.starts_with(&format!("{long}=")))
        }
        _ => posix_command_flag(arg) || lower == "--command" || lower.starts_with("--command="),
    }
}

/// A cluster of short options (`-` then letters) that holds `c`.
fn posix_command_flag(arg: &str) -> bool {
    arg.strip_prefix('-').is_some_and(|cluster| {
        !cluster.is_empty()
            && cluster.bytes().all(|b| b.is_ascii_alphabetic())
            && cluster.contains('c')
    })
}

/// What a sandboxed command may reach over the network.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Network {
    /// No network: TCP bind and connect denied by Landlock (ABI 4 and later), and every socket other than a
    /// Unix one refused at creation by a seccomp filter. The default.
    #[default]
    None,
    /// TCP connections to these ports only (Landlock ABI 4 and later); no TCP bind. Other socket kinds
    /// (UDP, for name lookups) are not restricted.
    ConnectPorts(Vec<u16>),
    /// Unrestricted.
    All,
}

/// The walls a command runs inside when a tool runs it through [`crate::exec`]: built from the tool's exec
/// policy, applied by the kernel in the child between `fork` and `exec`, and recorded on the step.
///
/// The defaults are the strict ones: the filesystem is read-only except the root (when one is set) and
/// `/dev/null`; no network; 60 s of CPU, 4 GiB of address space, files of at most 1 GiB, 128 processes
/// and threads; killed with its whole process group after 60 s; an environment of `PATH`, `LANG`,
/// `LC_ALL`, `LC_CTYPE`, `TZ` and `TERM` only; 64 KiB of each of stdout and stderr kept.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxSpec {
    pub(crate) root: Option<PathBuf>,
    pub(crate) writable: Vec<PathBuf>,
    pub(crate) readable: Option<Vec<PathBuf>>,
    pub(crate) network: Network,
    pub(crate) cpu_seconds: u64,
    pub(crate) address_space: u64,
    pub(crate) file_size: u64,
    pub(crate) processes: u64,
    pub(crate) timeout: Duration,
    pub(crate) env: Vec<String>,
    pub(crate) max_output: usize,
    pub(crate) unix_sockets: Vec<PathBuf>,
    pub(crate) accept_weaker: bool,
}

impl Default for SandboxSpec {
    fn default() -> Self {
        SandboxSpec {
            root: None,
            writable: Vec::new(),
            readable: None,
            network: Network::None,
            cpu_seconds: 60,
            address_space: 4 << 30,
            file_size: 1 << 30,
            processes: 128,
            timeout: Duration::from_secs(60),
            env: ["PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TERM"]
                .into_iter()
                .map(String::from)
                .collect(),
            max_output: 64 << 10,
            unix_sockets: Vec::new(),
            accept_weaker: false,
        }
    }
}

impl SandboxSpec {
    /// The working directory of the command, writable (none by default: the command runs in the current
    /// directory, which it may only read).
    pub fn root(&self) -> Option<&PathBuf> {
        self.root.as_ref()
    }

    /// Every directory the command may write beneath: the root, then the declared writable roots.
    pub fn writable_roots(&self) -> impl Iterator<Item = &PathBuf> {
        self.root.iter().chain(&self.writable)
    }

    /// The directories the command may read (`None`: the whole filesystem).
    pub fn readable(&self) -> Option<&[PathBuf]> {
        self.readable.as_deref()
    }

    /// What the command may reach over the network.
    pub fn network(&self) -> &Network {
        &self.network
    }

    /// The wall-clock time after which the command and its process group are killed.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The Unix sockets (by path) the command may connect to while the network is not `All`; with none
    /// named, creating a Unix socket is refused.
    pub fn unix_sockets(&self) -> &[PathBuf] {
        &self.unix_sockets
    }

    /// Whether a weaker sandbox than asked is accepted where the kernel lacks a mechanism.
    pub fn accepts_weaker(&self) -> bool {
        self.accept_weaker
    }
}

/// The program argument must name an allowed binary, and arguments must come as a list of strings (argv).
///
/// A program string with spaces or shell metacharacters (`ls; rm -rf /`, `` `id` ``, `$(id)`) is a command
/// line that needs a shell to split: refused (rule `exec.shell_string`), whatever the allow-list says. Shells
/// and launchers (`sh`, `bash`, `env`, `xargs`, `cmd`, `powershell`, ...) are refused unless listed
/// explicitly, and even then never with `-c` (rule `exec.shell`).
///
/// The policy also describes the sandbox ([`SandboxSpec`]) that [`crate::exec`] runs an allowed command in.
/// A call is refused before it runs when this kernel cannot build that sandbox (rules `exec.sandbox.*`,
/// naming what is missing), unless the policy accepts a weaker one ([`ExecPolicy::accept_weaker`]).
///
/// ```no_run
/// use failcore::policy::{ExecPolicy, Network};
/// use std::time::Duration;
///
/// let git = ExecPolicy::allow(["git"])
///     .deny_args(["--upload-pack", "-c", "--exec"])
///     .root("/srv/agent/workspace") // the working directory, writable
///     .network(Network::ConnectPorts(vec![443]))
///     .timeout(Duration::from_secs(120))
///     .env(["PATH", "HOME", "LANG"]);
/// # let _ = git;
/// ```
#[derive(Debug, Clone)]
pub struct ExecPolicy {
    name: String,
    allow: Vec<String>,
    program_arg: String,
    argv_arg: Option<String>,
    deny_args: Vec<String>,
    sandbox: SandboxSpec,
}

impl ExecPolicy {
    /// Allows the listed programs: a bare name (`git`) matches that bare name only; an absolute path
    /// (`/usr/bin/git`) matches exactly that path.
    pub fn allow<I: IntoIterator<Item = S>, S: Into<String>>(programs: I) -> Self {
        ExecPolicy {
            name: "exec".into(),
            allow: programs.into_iter().map(Into::into).collect(),
            program_arg: "program".into(),
            argv_arg: Some("args".into()),
            deny_args: Vec::new(),
            sandbox: SandboxSpec::default(),
        }
    }

    /// The sandbox commands run in.
    pub fn sandbox(&self) -> &SandboxSpec {
        &self.sandbox
    }

    /// The working directory of commands; writable.
    pub fn root(mut self, dir: impl Into<PathBuf>) -> Self {
        self.sandbox.root = Some(dir.into());
        self
    }

    /// More directories (or files) commands may write beneath, besides the root and `/dev/null`.
    pub fn writable<I: IntoIterator<Item = P>, P: Into<PathBuf>>(mut self, paths: I) -> Self {
        self.sandbox
            .writable
            .extend(paths.into_iter().map(Into::into));
        self
    }

    /// Restricts reading (and executing) to beneath these paths, plus the writable roots. By default the
    /// whole filesystem is readable; list the program's own directories (`/usr`, `/lib`, `/etc`, ...) when
    /// secrets such as `~/.ssh` must stay out of reach.
    pub fn readable<I: IntoIterator<Item = P>, P: Into<PathBuf>>(mut self, paths: I) -> Self {
        self.sandbox.readable = Some(paths.into_iter().map(Into::into).collect());
        self
    }

    /// What commands may reach over the network (default [`Network::None`]).
    pub fn network(mut self, network: Network) -> Self {
        self.sandbox.network = network;
        self
    }

    /// CPU time a command may use, in whole seconds (`RLIMIT_CPU`; default 60).
    pub fn cpu_seconds(mut self, seconds: u64) -> Self {
        self.sandbox.cpu_seconds = seconds;
        self
    }

    /// Address space of each process, in bytes (`RLIMIT_AS`; default 4 GiB).
    pub fn address_space(mut self, bytes: u64) -> Self {
        self.sandbox.address_space = bytes;
        self
    }

    /// Largest file a command may write, in bytes (`RLIMIT_FSIZE`; default 1 GiB).
    pub fn file_size(mut self, bytes: u64) -> Self {
        self.sandbox.file_size = bytes;
        self
    }

    /// Processes and threads a command may have at once, itself included (default 128): a pids cgroup where
    /// one can be created, else `RLIMIT_NPROC` above the user's current count.
    pub fn processes(mut self, n: u64) -> Self {
        self.sandbox.processes = n;
        self
    }

    /// Wall-clock time after which the command and its whole process group are killed (default 60 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.sandbox.timeout = timeout;
        self
    }

    /// The environment variables passed through from this process (an allow-list replacing the default);
    /// every other variable is left out.
    pub fn env<I: IntoIterator<Item = S>, S: Into<String>>(mut self, names: I) -> Self {
        self.sandbox.env = names.into_iter().map(Into::into).collect();
        self
    }

    /// Bytes kept of each of stdout and stderr (default 64 KiB); what is cut is marked.
    pub fn max_output(mut self, bytes: usize) -> Self {
        self.sandbox.max_output = bytes;
        self
    }

    /// Lets commands create Unix sockets, to reach the sockets at these paths (a local database, say), while
    /// the network is `None` or a list of ports. Without it a Unix socket cannot be created at all, since
    /// `connect` to a socket path is not a right Landlock controls on the kernels it supports: naming one
    /// socket opens every socket the command can see (listed in the step's sandbox).
    pub fn unix_sockets<I: IntoIterator<Item = P>, P: Into<PathBuf>>(mut self, paths: I) -> Self {
        self.sandbox
            .unix_sockets
            .extend(paths.into_iter().map(Into::into));
        self
    }

    /// Accepts a weaker sandbox where this kernel lacks a mechanism the policy asks for, instead of
    /// refusing the call. What was left out is recorded on the step with the sandbox applied.
    pub fn accept_weaker(mut self, yes: bool) -> Self {
        self.sandbox.accept_weaker = yes;
        self
    }

    /// The name recorded with decisions (default `exec`).
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The argument holding the program (default `program`).
    pub fn program_arg(mut self, name: impl Into<String>) -> Self {
        self.program_arg = name.into();
        self
    }

    /// The argument holding the argument vector (default `args`; `None`: the tool takes none).
    pub fn argv_arg(mut self, name: Option<String>) -> Self {
        self.argv_arg = name;
        self
    }

    /// Refuses arguments equal to, or starting with, any of these patterns (rule `exec.arg_denied`): options
    /// that make an allowed program run something else, such as git's `--upload-pack` or `-c`.
    pub fn deny_args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, patterns: I) -> Self {
        self.deny_args.extend(patterns.into_iter().map(Into::into));
        self
    }

    /// Checks a program and its argument vector.
    pub fn check_command(&self, program: &str, argv: &[&str]) -> Result<(), Verdict> {
        if program.is_empty() {
            return Err(Verdict::deny("exec.empty", "the program is empty"));
        }
        if program.chars().any(|c| c.is_control()) {
            return Err(Verdict::deny(
                "exec.control_char",
                format!("program {program:?} contains a control character"),
            ));
        }
        if program
            .chars()
            .any(|c| c.is_whitespace() || SHELL_CHARS.contains(&c))
        {
            return Err(Verdict::deny(
                "exec.shell_string",
                format!(
                    "program {program:?} is a command line that needs a shell; pass the program name \
                     and its arguments as a list instead"
                ),
            ));
        }
        if !self.allow.iter().any(|a| a == program) {
            return Err(Verdict::deny(
                "exec.not_allowed",
                format!(
                    "program {program:?} is not on the allow-list ({})",
                    self.allow.join(", ")
                ),
            ));
        }
        let base = program.rsplit(['/', '\\']).next().unwrap_or(program);
        let is_shell = SHELLS.contains(&base.to_ascii_lowercase().as_str());
        for arg in argv {
            if arg.contains('\0') {
                return Err(Verdict::deny(
                    "exec.control_char",
                    format!("argument {arg:?} contains a NUL byte"),
                ));
            }
            if let Some(p) = self
                .deny_args
                .iter()
                .find(|p| !p.is_empty() && arg.starts_with(p.as_str()))
            {
                return Err(Verdict::deny(
                    "exec.arg_denied",
                    format!("argument {arg:?} matches the denied pattern {p:?}"),
                ));
            }
            if is_shell && runs_a_command_string(base, arg) {
                return Err(Verdict::deny(
                    "exec.shell",
                    format!("`{program} {arg}` runs a shell command string"),
                ));
            }
        }
        Ok(())
    }
}

impl Policy for ExecPolicy {
    fn name(&self) -> &str {
        &self.name
    }

    fn as_exec(&self) -> Option<&ExecPolicy> {
        Some(self)
    }

    fn check(&self, call: &CallView<'_>) -> Result<Verdict, PolicyError> {
        let program = match call.arg(&self.program_arg) {
            Some(Value::String(s)) => s.as_str(),
            Some(Value::Array(_)) => {
                return Ok(Verdict::deny(
                    "exec.program_not_string",
                    format!(
                        "argument `{}` must be the program name alone",
                        self.program_arg
                    ),
                ))
            }
            _ => {
                return Ok(Verdict::deny(
                    "exec.no_program",
                    format!(
                        "tool `{}` has no string argument `{}` naming the program",
                        call.tool().name(),
                        self.program_arg
                    ),
                ))
            }
        };
        let mut argv: Vec<&str> = Vec::new();
        if let Some(name) = &self.argv_arg {
            match call.arg(name) {
                None | Some(Value::Null) => {}
                Some(Value::Array(items)) => {
                    for item in items {
                        match item {
                            Value::String(s) => argv.push(s),
                            _ => {
                                return Ok(Verdict::deny(
                                    "exec.argv_not_list",
                                    format!("argument `{name}` must be a list of strings"),
                                ))
                            }
                        }
                    }
                }
                Some(_) => {
                    return Ok(Verdict::deny(
                        "exec.argv_not_list",
                        format!(
                            "argument `{name}` must be a list of strings (argv); a single string would need a shell to split"
                        ),
                    ))
                }
            }
        }
        if let Err(v) = self.check_command(program, &argv) {
            return Ok(v);
        }
        // The command is allowed; refuse it here, before anything runs, if this kernel cannot build the
        // sandbox it would run in.
        Ok(match crate::sandbox::assess(&self.sandbox) {
            Ok(_) => Verdict::Allow,
            Err(refused) => Verdict::deny(refused.rule, refused.reason),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_strings_are_found_as_each_shell_parses_its_options() {
        let runs = [
            ("sh", "-c"),
            ("sh", "-ec"),
            ("bash", "-xc"),
            ("bash", "-lc"),
            ("dash", "-ce"),
            ("zsh", "-fc"),
            ("bash", "--command"),
            ("fish", "-C"),
            ("fish", "--init-command=id"),
            ("env", "-S"),
            ("env", "-iS"),
            ("env", "--split-string=sh -c id"),
            ("pwsh", "-c"),
            ("pwsh", "-Com"),
            ("powershell.exe", "/Command"),
            ("pwsh", "-e"),
            ("pwsh", "-enc"),
            ("pwsh", "-EncodedCommand"),
            ("pwsh", "-ec"),
            ("pwsh", "-cwa"),
            ("cmd", "/c"),
            ("cmd.exe", "/Q/C"),
            ("cmd", "/kdir"),
        ];
        for (shell, arg) in runs {
            assert!(runs_a_command_string(shell, arg), "{shell} {arg}");
        }
        let harmless = [
            ("sh", "-e"),
            ("sh", "-x"),
            ("sh", "script.sh"),
            ("bash", "--norc"),
            ("bash", "-"),
            ("sh", "--"),
            ("bash", "-o"),
            ("fish", "--private"),
            ("env", "-i"),
            ("pwsh", "-File"),
            ("pwsh", "-NoProfile"),
            ("cmd", "dir"),
        ];
        for (shell, arg) in harmless {
            assert!(!runs_a_command_string(shell, arg), "{shell} {arg}");
        }
    }

    #[test]
    fn the_policy_refuses_a_clustered_c_for_a_listed_shell() {
        let policy = ExecPolicy::allow(["sh"]);
        for arg in ["-c", "-ec", "-xc", "-lc"] {
            let refused = policy
                .check_command("sh", &[arg, "id"])
                .expect_err("refused");
            assert!(
                matches!(&refused, Verdict::Deny { rule, .. } if rule == "exec.shell"),
                "{arg}: {refused:?}"
            );
        }
        assert!(policy.check_command("sh", &["-e", "script.sh"]).is_ok());
    }
}
